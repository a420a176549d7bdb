//! `testfleet tls init DIR`: a private CA and one certificate per role for mutual TLS.
//!
//! See [`crate::auth::tls`] for the scheme.

use std::path::{Path, PathBuf};

use crate::auth::tls::{self, TlsError};
use crate::cli::CliError;

/// Arguments of `testfleet tls init`.
#[derive(Clone, Debug, clap::Args)]
pub struct TlsInitArgs {
    /// Directory to write ca.pem, ca.key and peer/operator/worker .pem and .key into
    /// (created with mode 0700 if missing).
    pub dir: PathBuf,
    /// Another name (DNS name or IP address) for the peer certificate, besides localhost,
    /// 127.0.0.1 and ::1; repeat for more.
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// How many days the role certificates stay valid (the CA: ten years).
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub days: u32,
    /// Replace existing files: a new CA, so every certificate of the old one stops working.
    #[arg(long)]
    pub force: bool,
}

/// Writes the CA and the role certificates, then says which file goes where.
pub fn init(args: &TlsInitArgs) -> Result<(), CliError> {
    let written = tls::init(&args.dir, &args.hosts, args.days, args.force).map_err(cli_error)?;
    for path in &written {
        println!("wrote {}", path.display());
    }
    println!();
    print!("{}", usage(&args.dir));
    Ok(())
}

/// Bad input is a usage error; a file that cannot be written is anything else.
fn cli_error(error: TlsError) -> CliError {
    match error {
        TlsError::Exists { .. } | TlsError::BadHost { .. } | TlsError::BadDays { .. } => {
            CliError::Usage(error.to_string())
        }
        _ => CliError::Other(error.to_string()),
    }
}

/// How to use the files in `dir`.
fn usage(dir: &Path) -> String {
    let file = |name: &str| dir.join(name).display().to_string();
    let flags = |role: &str| {
        format!(
            "--tls-cert {} --tls-key {} --tls-ca {}",
            file(&format!("{role}.pem")),
            file(&format!("{role}.key")),
            file("ca.pem")
        )
    };
    format!(
        "Coordinators (only the peer certificate can serve: clients check that the server's \
         certificate names peer.testfleet):\n  testfleet coordinator ... {}\n\
         Workers:\n  testfleet worker ... {}\n\
         Operators (the client commands):\n  testfleet status ... {}\n\
         Copy each role's .pem and .key, and ca.pem, to the machines of that role only.\n\
         Keep {} offline: it is needed only to issue new certificates.\n",
        flags("peer"),
        flags("worker"),
        flags("operator"),
        file("ca.key"),
    )
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: TlsInitArgs,
    }

    #[test]
    fn arguments_parse_with_defaults_and_limits() {
        let cli =
            Cli::try_parse_from(["t", "dir", "--host", "a.example", "--host", "10.0.0.1"]).unwrap();
        assert_eq!(cli.args.dir, PathBuf::from("dir"));
        assert_eq!(cli.args.hosts, ["a.example", "10.0.0.1"]);
        assert_eq!(cli.args.days, 365);
        assert!(!cli.args.force);
        assert!(Cli::try_parse_from(["t", "dir", "--days", "0"]).is_err());
        assert!(Cli::try_parse_from(["t", "dir", "--days", "3651"]).is_err());
    }

    #[test]
    fn usage_names_each_role_file() {
        let text = usage(Path::new("/etc/testfleet/tls"));
        for name in [
            "peer.pem",
            "peer.key",
            "worker.pem",
            "operator.key",
            "ca.pem",
            "ca.key",
        ] {
            assert!(
                text.contains(&format!("/etc/testfleet/tls/{name}")),
                "{name}"
            );
        }
    }

    #[test]
    fn an_existing_directory_is_a_usage_error() {
        let tmp = tempfile::tempdir().unwrap();
        let args = TlsInitArgs {
            dir: tmp.path().to_path_buf(),
            hosts: vec![],
            days: 365,
            force: false,
        };
        init(&args).unwrap();
        assert!(matches!(init(&args), Err(CliError::Usage(_))));
    }
}
