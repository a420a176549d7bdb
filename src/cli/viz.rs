//! `testfleet viz`: the pictures of [`crate::viz`] on demand, read through the cluster.
//!
//! `testfleet viz cluster|health|leaders|recovery [--format text|svg|png] [--out FILE]` prints
//! one picture to stdout (text by default), or writes it to FILE. A PNG goes to stdout only
//! when stdout is not a terminal. `testfleet viz all --out-dir DIR` writes all four as SVG and
//! PNG into DIR under the names the leader's periodic writer uses
//! (`cluster_status_<UTC time>.svg`, …) and prints their paths.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use super::args::ClientAuth;
use super::{CliError, Remote};
use crate::viz::load::{self, Source};
use crate::viz::{Format, Kind, VizError};

/// What to draw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum What {
    /// Coordinators with their roles and the leader; workers grouped by status
    Cluster,
    /// Health metrics over time, per coordinator
    Health,
    /// Leader transitions: terms, leaders, failover gaps
    Leaders,
    /// Worker, task and system recovery attempts over time
    Recovery,
    /// All four as SVG and PNG files in --out-dir
    All,
}

/// The flags of `testfleet viz`.
#[derive(clap::Args)]
pub struct VizArgs {
    /// Which picture
    #[arg(value_enum)]
    pub what: What,
    /// How to render it
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Write the picture to FILE instead of stdout
    #[arg(long, value_name = "FILE", conflicts_with = "out_dir")]
    pub out: Option<PathBuf>,
    /// With `all`: the directory for the eight files (created if missing)
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
    /// Coordinator addresses, HOST:PORT[,HOST:PORT...]; any member works
    #[arg(long, env = "TESTFLEET_COORDINATOR", default_value = "127.0.0.1:8080")]
    pub coordinator: String,
    #[command(flatten)]
    pub auth: ClientAuth,
}

/// A picture's failure as the command line reports it: a cluster error keeps its exit code.
fn cli_error(e: VizError) -> CliError {
    match e {
        VizError::Cluster(e) => e,
        other => CliError::Other(other.to_string()),
    }
}

/// Runs `testfleet viz`.
pub async fn run(args: VizArgs) -> Result<(), CliError> {
    let kind = match args.what {
        What::Cluster => Kind::Cluster,
        What::Health => Kind::Health,
        What::Leaders => Kind::Leaders,
        What::Recovery => Kind::Recovery,
        What::All => {
            let Some(dir) = &args.out_dir else {
                return Err(CliError::Usage(
                    "`testfleet viz all` writes eight files: give the directory with --out-dir DIR"
                        .into(),
                ));
            };
            let source = Source::Remote(remote(&args)?);
            for path in load::write_all(&source, dir).await.map_err(cli_error)? {
                println!("{}", path.display());
            }
            return Ok(());
        }
    };
    if args.out_dir.is_some() {
        return Err(CliError::Usage(
            "--out-dir is for `testfleet viz all`; write one picture with --out FILE".into(),
        ));
    }
    // Refuse before reading anything.
    if args.format == Format::Png && args.out.is_none() && std::io::stdout().is_terminal() {
        return Err(CliError::Usage(
            "a PNG is binary and stdout is a terminal: write it with --out FILE, or redirect \
             stdout to a file"
                .into(),
        ));
    }
    let source = Source::Remote(remote(&args)?);
    let picture = load::picture(&source, kind).await.map_err(cli_error)?;
    let format = args.format;
    let bytes = tokio::task::spawn_blocking(move || picture.render(format))
        .await
        .map_err(|e| CliError::Other(format!("the render task failed: {e}")))?
        .map_err(cli_error)?;
    match &args.out {
        Some(path) => {
            std::fs::write(path, &bytes)
                .map_err(|e| CliError::Other(format!("cannot write {}: {e}", path.display())))?;
            println!("wrote {} ({} bytes)", path.display(), bytes.len());
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(&bytes)
                .and_then(|()| stdout.flush())
                .map_err(|e| CliError::Other(format!("cannot write to stdout: {e}")))?;
        }
    }
    Ok(())
}

fn remote(args: &VizArgs) -> Result<Remote, CliError> {
    Ok(Remote::new(
        super::parse_addresses(&args.coordinator)?,
        args.auth.credentials()?,
    ))
}
