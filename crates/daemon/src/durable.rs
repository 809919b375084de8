//! Makes a sled 0.34 database durable after `Db::flush`.
//!
//! sled's flush is not enough on its own. On Linux it ends each write with
//! `sync_file_range`, which starts and waits for the page writes but neither
//! writes the file's metadata (its size, which grows as segments are added)
//! nor flushes the drive's write cache; its periodic `sync_all` is off when
//! `flush_every_ms` is `None`; and values too large for a segment go to files
//! under `blobs/` that it never syncs at all. After `flush` returns, a power
//! cut can still lose what it wrote.
//!
//! [`SledFiles::sync`], called after `flush`, closes those gaps: every blob
//! file not synced before is `fdatasync`ed, the `blobs/` directory and the
//! database directory are `fsync`ed whenever the names in them changed, and
//! last the data file (`<dir>/db`) is `fdatasync`ed. Blobs go first so that
//! the data file never becomes durable pointing at a blob that is not.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum DurableError {
    #[error("cannot sync {path} to disk: {source}")]
    Sync {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl DurableError {
    fn at(path: &Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| Self::Sync {
            path: path.to_path_buf(),
            source,
        }
    }

    /// The I/O error behind it (for `ENOSPC` and the like).
    pub fn io(&self) -> &std::io::Error {
        match self {
            Self::Sync { source, .. } | Self::Write { source, .. } => source,
        }
    }
}

/// Replaces `path` with `bytes` so that it survives a power cut whole: a
/// crash leaves the old file or the new one, never a part. The new file is
/// created with `mode` (before any byte is in it), written and synced
/// beside `path`, renamed over it, and the directory synced.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), DurableError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".partial");
    let tmp = path.with_file_name(tmp_name);
    let write = |source| DurableError::Write {
        path: tmp.clone(),
        source,
    };
    // A leftover from an interrupted run keeps its own mode if reused.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(write(e)),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(write)?;
    file.write_all(bytes).map_err(write)?;
    file.sync_all().map_err(DurableError::at(&tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(|source| DurableError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    sync_dir(dir)
}

/// What a caught panic said (sled 0.34 panics on some damage while it
/// recovers, which both daemons report as corruption).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("a panic")
}

/// The files of one sled database directory, kept open for syncing.
pub struct SledFiles {
    dir: PathBuf,
    blobs: PathBuf,
    /// sled's data file, opened once: every sync is one `fdatasync` on it.
    data: File,
    synced: Mutex<Synced>,
}

/// Names already durable in each directory.
#[derive(Default)]
struct Synced {
    dir: BTreeSet<OsString>,
    blobs: BTreeSet<OsString>,
}

impl std::fmt::Debug for SledFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledFiles")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl SledFiles {
    /// Opens the files of the sled database in `dir` (which sled has
    /// already opened, so they exist) and syncs everything in it once,
    /// including the entry of `dir` itself in its parent.
    pub fn open(dir: &Path) -> Result<Self, DurableError> {
        let data_path = dir.join("db");
        // Read-only is enough: Linux syncs through any descriptor.
        let data = File::open(&data_path).map_err(DurableError::at(&data_path))?;
        let files = Self {
            dir: dir.to_path_buf(),
            blobs: dir.join("blobs"),
            data,
            synced: Mutex::default(),
        };
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        files.sync()?;
        Ok(files)
    }

    /// The data file's path (what a test tracing syscalls looks for).
    pub fn data_path(&self) -> PathBuf {
        self.dir.join("db")
    }

    /// Makes everything sled has flushed so far durable. Blocking: call it
    /// right after `Db::flush`, off the async runtime.
    pub fn sync(&self) -> Result<(), DurableError> {
        let mut synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        let blobs = names(&self.blobs)?;
        for name in blobs.difference(&synced.blobs) {
            let path = self.blobs.join(name);
            match File::open(&path) {
                Ok(file) => file.sync_data().map_err(DurableError::at(&path))?,
                // Collected by sled between the listing and here.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(DurableError::at(&path)(e)),
            }
        }
        if blobs != synced.blobs {
            sync_dir(&self.blobs)?;
            synced.blobs = blobs;
        }
        let top = names(&self.dir)?;
        if top != synced.dir {
            sync_dir(&self.dir)?;
            synced.dir = top;
        }
        self.data
            .sync_data()
            .map_err(DurableError::at(&self.dir.join("db")))
    }
}

fn names(dir: &Path) -> Result<BTreeSet<OsString>, DurableError> {
    let mut names = BTreeSet::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        // sled creates blobs/ at open; a database without it has no blobs.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
        Err(e) => return Err(DurableError::at(dir)(e)),
    };
    for entry in entries {
        names.insert(entry.map_err(DurableError::at(dir))?.file_name());
    }
    Ok(names)
}

fn sync_dir(dir: &Path) -> Result<(), DurableError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(DurableError::at(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_blobs_are_tracked_and_vanished_ones_tolerated() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("db"), b"data").expect("data file");
        std::fs::create_dir(dir.path().join("blobs")).expect("blobs dir");
        let files = SledFiles::open(dir.path()).expect("open");
        assert!(files.synced.lock().expect("lock").blobs.is_empty());

        std::fs::write(dir.path().join("blobs/17"), b"blob").expect("blob");
        files.sync().expect("sync");
        let synced: Vec<_> = files
            .synced
            .lock()
            .expect("lock")
            .blobs
            .clone()
            .into_iter()
            .collect();
        assert_eq!(synced, vec![OsString::from("17")]);

        std::fs::remove_file(dir.path().join("blobs/17")).expect("remove");
        files.sync().expect("sync after a blob was collected");
        assert!(files.synced.lock().expect("lock").blobs.is_empty());
    }

    #[test]
    fn a_file_is_replaced_whole_with_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("backup.snap");
        std::fs::write(&path, b"old").expect("old file");
        write_file(&path, b"new contents", 0o600).expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), b"new contents");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!dir.path().join("backup.snap.partial").exists());
        let err =
            write_file(&dir.path().join("no/such/dir/f"), b"x", 0o600).expect_err("no directory");
        assert!(err.to_string().contains("no/such/dir/f.partial"), "{err}");
    }

    #[test]
    fn a_missing_data_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let err = SledFiles::open(dir.path()).expect_err("no data file");
        assert!(err.to_string().contains("/db"), "{err}");
    }
}
