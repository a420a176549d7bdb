//! Finding the installed browsers and their versions.
//!
//! [`select`] looks for each family's executables ([`Kind::executables`]) in every directory
//! of `PATH`, then in [`WELL_KNOWN_DIRS`], and keeps the first path of each real file per
//! family: `/usr/bin/chromium-browser` linking to `/usr/bin/chromium` is one browser, found as
//! the first, while `/snap/bin/chromium` and `/snap/bin/firefox`, both links to `/usr/bin/snap`
//! (which starts the snap it is called as), are two. It only looks at the file system, so a test gives it a `PATH` of its own.
//! [`version`] runs `BROWSER --version` (bounded, in a process group of its own) and
//! [`parse_version`] takes the version out of what it prints.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

use super::process::{Group, last_line, tail};
use super::{Kind, Selection, Wanted};

/// Where browsers are installed outside `PATH`: Linux packages' and vendors' directories,
/// snaps.
pub const WELL_KNOWN_DIRS: &[&str] = &[
    "/usr/bin",
    "/usr/local/bin",
    "/snap/bin",
    "/opt/google/chrome",
    "/opt/microsoft/msedge",
    "/usr/lib/firefox",
    "/opt/firefox",
];

/// A browser to check: its family, where it was found and the real file behind it.
#[derive(Clone, Debug, PartialEq)]
pub struct Found {
    pub kind: Kind,
    pub path: PathBuf,
    /// The path with symlinks resolved: two finds of one file are one browser.
    pub canonical: PathBuf,
}

/// The browsers `selection` names that are installed, in the order of the selection (or of
/// [`Kind::ALL`] and their executables), each file once; and the names looked for, for the
/// message that none was found. A path named in the selection is kept even when it does not
/// exist, so that its check says why it cannot start.
pub fn select(selection: &Selection, path_var: &OsStr, dirs: &[&str]) -> (Vec<Found>, String) {
    let wanted: Vec<Wanted> = match selection {
        Selection::None => Vec::new(),
        Selection::Auto => Kind::ALL.into_iter().map(Wanted::Kind).collect(),
        Selection::Only(wanted) => wanted.clone(),
    };
    let search: Vec<PathBuf> = std::env::split_paths(path_var)
        .filter(|d| d.is_absolute())
        .chain(dirs.iter().map(PathBuf::from))
        .collect();
    let mut seen = HashSet::new();
    let mut found = Vec::new();
    let mut looked_for = Vec::new();
    for wanted in wanted {
        match wanted {
            Wanted::Kind(kind) => {
                for exe in kind.executables() {
                    looked_for.push(exe.to_string());
                    for dir in &search {
                        let path = dir.join(exe);
                        if !is_executable(&path) {
                            continue;
                        }
                        let canonical = std::fs::canonicalize(&path).unwrap_or(path.clone());
                        if seen.insert((kind, canonical.clone())) {
                            found.push(Found {
                                kind,
                                path,
                                canonical,
                            });
                        }
                    }
                }
            }
            Wanted::Path(kind, path) => {
                looked_for.push(path.display().to_string());
                let canonical = std::fs::canonicalize(&path).unwrap_or(path.clone());
                if seen.insert((kind, canonical.clone())) {
                    found.push(Found {
                        kind,
                        path,
                        canonical,
                    });
                }
            }
        }
    }
    (found, looked_for.join(", "))
}

/// A regular file (after symlinks) that someone may execute.
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The version in a browser's `--version` line: its first word that starts with a digit and
/// has a dot. `Chromium 156.0.8078.129 built on Debian GNU/Linux 12 (bookworm)` gives
/// `156.0.8078.129`, `Mozilla Firefox 128.5.0esr` gives `128.5.0esr`.
pub fn parse_version(text: &str) -> Option<String> {
    text.split_whitespace()
        .map(|word| word.trim_end_matches([',', ';', ')']))
        .find(|word| word.starts_with(|c: char| c.is_ascii_digit()) && word.contains('.'))
        .map(str::to_string)
}

/// Bytes of `--version` output read at most.
const VERSION_OUTPUT: usize = 4096;

/// Runs `path --version` and parses its output, within `limit`; the group is killed after.
pub async fn version(path: &Path, limit: Duration) -> Result<String, String> {
    let mut command = Command::new(path);
    command.arg("--version");
    let mut group = Group::spawn(command).map_err(|e| format!("cannot start: {e}"))?;
    let stdout = group.child().stdout.take();
    let stderr = group.child().stderr.take();
    let run = async {
        let (out, err, status) = tokio::join!(
            tail(stdout, VERSION_OUTPUT),
            tail(stderr, VERSION_OUTPUT),
            group.wait()
        );
        (out, err, status)
    };
    let outcome = tokio::time::timeout(limit, run).await;
    group.stop().await;
    let (out, err, status) = outcome.map_err(|_| {
        format!(
            "--version did not answer within {}",
            super::check::seconds(limit)
        )
    })?;
    let text = String::from_utf8_lossy(&out);
    if let Some(version) = parse_version(&text) {
        return Ok(version);
    }
    let said = last_line(&out, 120)
        .or_else(|| last_line(&err, 120))
        .unwrap_or_else(|| "nothing".into());
    match status {
        Ok(s) if s.success() => Err(format!("--version printed no version: {said}")),
        Ok(s) => Err(format!("--version failed ({s}): {said}")),
        Err(e) => Err(format!("--version: {e}")),
    }
}
