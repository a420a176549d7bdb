//! Bearer tokens: one secret per role, made by `testfleet auth init DIR`.
//!
//! A token is `testfleet-<role>-<64 hex digits>` (256 random bits from the operating system).
//! The role in its text is only a hint for people; what counts is which file the coordinator
//! found it in. A coordinator started with `--auth-dir DIR` loads all three files into a
//! [`Keyring`] and keeps only their SHA-256 digests; a presented token is hashed and compared
//! with each digest in constant time. Token files must not be readable by group or others
//! (as ssh insists for keys); a loose file is refused with the `chmod` that fixes it.

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Role;

/// What went wrong with token files.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} already exists: pass --force to replace every token (all coordinators, workers \
         and operators then need the new files)"
    )]
    Exists { path: PathBuf },
    #[error(
        "{path} is readable by other users (mode {mode:o}): run `chmod 600 {path}`, then start \
         again"
    )]
    Loose { path: PathBuf, mode: u32 },
    #[error(
        "{path} holds no token: make the files with `testfleet auth init DIR` (a token is one \
         line of text)"
    )]
    Empty { path: PathBuf },
    #[error(
        "the token in {origin} has spaces or characters other than printable ASCII: copy the \
         token file made by `testfleet auth init` as it is"
    )]
    Invalid { origin: String },
    #[error("the operating system's random source failed: {0}")]
    Random(String),
}

/// A secret that never shows itself in logs, `Debug` output or errors.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// A new random token for `role`.
    pub fn generate(role: Role) -> Result<Token, TokenError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| TokenError::Random(e.to_string()))?;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Token(format!("testfleet-{role}-{hex}")))
    }

    /// A token as given (from a file or `TESTFLEET_TOKEN`), surrounding whitespace removed:
    /// `None` when nothing is left, an error when it holds a character a header cannot carry.
    pub fn parse(text: &str, source: &str) -> Result<Option<Token>, TokenError> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::Invalid {
                origin: source.to_string(),
            });
        }
        Ok(Some(Token(text.to_string())))
    }

    /// Reads a token file; its permissions must keep others out.
    pub fn read(path: &Path) -> Result<Token, TokenError> {
        let io = |source| TokenError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(TokenError::Loose {
                path: path.to_path_buf(),
                mode,
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        Token::parse(&text, &path.display().to_string())?.ok_or_else(|| TokenError::Empty {
            path: path.to_path_buf(),
        })
    }

    /// The secret itself, for the `authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// The file that holds `role`'s token in an auth directory.
pub fn token_path(dir: &Path, role: Role) -> PathBuf {
    dir.join(format!("{role}.token"))
}

/// Writes a fresh token per role into `dir` (created 0700 if missing), each file 0600 from the
/// moment it exists. Refuses to replace existing tokens unless `force`. Returns the files.
pub fn init(dir: &Path, force: bool) -> Result<Vec<PathBuf>, TokenError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TokenError::Io { path, source }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))?;
    if !force
        && let Some(path) = Role::ALL
            .into_iter()
            .map(|role| token_path(dir, role))
            .find(|path| path.exists())
    {
        return Err(TokenError::Exists { path });
    }
    let mut written = Vec::new();
    for role in Role::ALL {
        let path = token_path(dir, role);
        let token = Token::generate(role)?;
        // A replaced file is written beside and renamed over, so that a coordinator reading it
        // meanwhile sees the old token or the new one, never half of one.
        let fresh = dir.join(format!(".{role}.token.new"));
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&fresh)
            .map_err(io(&fresh))?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io(&fresh))?;
        writeln!(file, "{}", token.expose()).map_err(io(&fresh))?;
        file.sync_all().map_err(io(&fresh))?;
        std::fs::rename(&fresh, &path).map_err(io(&path))?;
        written.push(path);
    }
    Ok(written)
}

/// The tokens a coordinator accepts, by role (digests only).
#[derive(Clone)]
pub struct Keyring {
    digests: Vec<(Role, [u8; 32])>,
    /// This node's own credential towards its peers.
    peer: Token,
}

impl Keyring {
    /// Loads the three token files of `dir`.
    pub fn load(dir: &Path) -> Result<Keyring, TokenError> {
        let mut digests = Vec::new();
        let mut peer = None;
        for role in Role::ALL {
            let token = Token::read(&token_path(dir, role))?;
            digests.push((role, token.digest()));
            if role == Role::Peer {
                peer = Some(token);
            }
        }
        let peer = peer.expect("Role::ALL holds Peer");
        Ok(Keyring { digests, peer })
    }

    /// The role a presented token grants, if any. Every digest is compared, whatever matches.
    pub fn role_of(&self, presented: &str) -> Option<Role> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for (role, known) in &self.digests {
            if bool::from(known.ct_eq(&digest)) {
                found = Some(*role);
            }
        }
        found
    }

    /// The peer token, which this node presents when it calls other coordinators.
    pub fn peer_token(&self) -> &Token {
        &self.peer
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keyring(<3 tokens>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn init_writes_one_private_token_per_role_and_keeps_them_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        let auth = dir.path().join("auth");
        let written = init(&auth, false).unwrap();
        assert_eq!(written.len(), 3);
        assert_eq!(mode(&auth), 0o700);
        for path in &written {
            assert_eq!(mode(path), 0o600, "{}", path.display());
        }
        let keyring = Keyring::load(&auth).unwrap();
        for role in Role::ALL {
            let token = Token::read(&token_path(&auth, role)).unwrap();
            assert!(token.expose().starts_with(&format!("testfleet-{role}-")));
            assert_eq!(
                token.expose().len(),
                "testfleet--".len() + role.name().len() + 64
            );
            assert_eq!(keyring.role_of(token.expose()), Some(role));
        }
        let again = init(&auth, false).unwrap_err();
        assert!(again.to_string().contains("--force"), "{again}");
        let before = Token::read(&token_path(&auth, Role::Peer)).unwrap();
        init(&auth, true).unwrap();
        let after = Token::read(&token_path(&auth, Role::Peer)).unwrap();
        assert_ne!(before, after, "--force makes new tokens");
        assert_eq!(
            keyring.role_of(after.expose()),
            None,
            "old keyring, new token"
        );
    }

    #[test]
    fn unknown_and_near_miss_tokens_grant_nothing() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), false).unwrap();
        let keyring = Keyring::load(dir.path()).unwrap();
        let operator = Token::read(&token_path(dir.path(), Role::Operator)).unwrap();
        let mut near = operator.expose().to_string();
        near.pop();
        near.push('x');
        assert_eq!(keyring.role_of(&near), None);
        assert_eq!(keyring.role_of(""), None);
        assert_eq!(keyring.role_of("testfleet-operator-"), None);
    }

    #[test]
    fn a_token_file_others_can_read_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), false).unwrap();
        let path = token_path(dir.path(), Role::Worker);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Keyring::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("chmod 600") && e.contains("worker.token"), "{e}");
        std::fs::write(token_path(dir.path(), Role::Peer), "").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = Keyring::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("holds no token"), "{e}");
    }

    #[test]
    fn tokens_never_show_in_debug_output() {
        let token = Token::generate(Role::Peer).unwrap();
        assert!(!format!("{token:?}").contains(token.expose()));
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), false).unwrap();
        let keyring = Keyring::load(dir.path()).unwrap();
        assert!(!format!("{keyring:?}").contains("testfleet-"));
    }
}
