//! The admin token when `[http] admin_token` is left out: generated at first start, kept in the
//! data directory, never a well-known default.
//!
//! The file `admin_token` in `[storage] dir` is created with mode 0600 (owner only) and holds
//! the token as 64 hex digits. `iotpipe serve` prints a generated token once, on the start that
//! created it, on stdout; it never goes to the log.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Name of the token file in the data directory.
pub const FILE: &str = "admin_token";

/// Where the admin token came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `[http] admin_token`.
    Configured,
    /// Read from this file, written at an earlier start.
    Stored(PathBuf),
    /// Generated now and written to this file: show it to the operator once.
    Generated(PathBuf),
}

/// The token file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("admin token file {}: {source} (set [http] admin_token, or fix the file)", path.display())]
pub struct TokenError {
    path: PathBuf,
    source: std::io::Error,
}

/// The configured token, or the stored one, or a new one stored in `data_dir`.
///
/// # Errors
/// When the token file cannot be read or created, or is empty.
pub fn resolve(configured: Option<&str>, data_dir: &Path) -> Result<(String, TokenSource), TokenError> {
    if let Some(token) = configured {
        return Ok((token.to_string(), TokenSource::Configured));
    }
    let path = data_dir.join(FILE);
    let err = |source| TokenError { path: path.clone(), source };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let token = text.trim();
            if token.is_empty() {
                let empty = std::io::Error::new(std::io::ErrorKind::InvalidData, "the file is empty");
                return Err(err(empty));
            }
            return Ok((token.to_string(), TokenSource::Stored(path)));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    // 256 random bits: guessing is out of the question, and hex survives any shell.
    let token: String = rand::random::<[u8; 32]>().iter().map(|b| format!("{b:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path).map_err(err)?;
    file.write_all(format!("{token}\n").as_bytes()).and_then(|()| file.sync_all()).map_err(err)?;
    Ok((token, TokenSource::Generated(path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_stored_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let (first, source) = resolve(None, dir.path()).unwrap();
        assert_eq!(source, TokenSource::Generated(dir.path().join(FILE)));
        assert_eq!(first.len(), 64);
        assert_ne!(first, "change-me");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (again, source) = resolve(None, dir.path()).unwrap();
        assert_eq!((again, source), (first.clone(), TokenSource::Stored(dir.path().join(FILE))));
        let other = tempfile::tempdir().unwrap();
        assert_ne!(resolve(None, other.path()).unwrap().0, first, "random per installation");
        assert_eq!(resolve(Some("mine"), dir.path()).unwrap(), ("mine".into(), TokenSource::Configured));
    }

    #[test]
    fn an_empty_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), "\n").unwrap();
        assert!(resolve(None, dir.path()).unwrap_err().to_string().contains("empty"));
    }
}
