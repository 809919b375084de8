//! The PKI directory a server reads at start: `ca.crt` (the root),
//! `signing.crt` and `signing.key` (this server's signing CA, for agents'
//! certificates), `server.crt` (with the root appended), `server.key`, and
//! `admin.token` (the bootstrap admin token). Keys and tokens are 0600. The
//! root's `ca.key` stays in the directory `pki init` made; a server dir that
//! still holds one (issued before signing CAs) signs with the root. During
//! a CA rotation `ca.crt` holds both roots, the new one first.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::PkiError;

pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const SIGNING_CERT: &str = "signing.crt";
pub const SIGNING_KEY: &str = "signing.key";
pub const SERVER_CERT: &str = "server.crt";
pub const SERVER_KEY: &str = "server.key";
pub const ADMIN_TOKEN: &str = "admin.token";
/// During a CA rotation, in the CA dir: the new root's certificate issued
/// by the old root, appended to the chains of what is issued meanwhile.
pub const CA_CROSS_CERT: &str = "ca-cross.crt";
/// During a CA rotation, in the CA dir: the old root's key, removed by
/// `rotate-ca finish`.
pub const CA_PREVIOUS_KEY: &str = "ca-previous.key";

pub fn read(dir: &Path, name: &str) -> Result<String, PkiError> {
    let path = dir.join(name);
    fs::read_to_string(&path).map_err(|source| PkiError::File {
        path: path.display().to_string(),
        source,
    })
}

/// Writes a file atomically; `secret` files get mode 0600 from creation.
pub fn write(dir: &Path, name: &str, contents: &str, secret: bool) -> Result<PathBuf, PkiError> {
    let path = dir.join(name);
    let err = |source| PkiError::File {
        path: path.display().to_string(),
        source,
    };
    fs::create_dir_all(dir).map_err(err)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    options.mode(if secret { 0o600 } else { 0o644 });
    let mut file = options.open(&tmp).map_err(err)?;
    file.write_all(contents.as_bytes()).map_err(err)?;
    file.sync_all().map_err(err)?;
    fs::rename(&tmp, &path).map_err(err)?;
    Ok(path)
}

/// Refuses a secret file that others can read.
pub fn check_private(dir: &Path, name: &str) -> Result<(), PkiError> {
    let path = dir.join(name);
    let meta = fs::metadata(&path).map_err(|source| PkiError::File {
        path: path.display().to_string(),
        source,
    })?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(PkiError::Invalid(format!(
            "{} is readable by other users; run chmod 600 on it",
            path.display()
        )));
    }
    Ok(())
}
