//! The newest snapshot, kept as one file that is replaced atomically: the
//! new one is written beside it, synced, renamed over it, and the directory
//! synced, so a crash leaves either the old snapshot or the new one, whole.
//!
//! Layout: magic, metadata length (u64 LE), metadata (bincode), data length
//! (u64 LE), data, CRC-32 of everything before it (u32 LE).

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::codec::{decode, encode};
use crate::{LogId, SnapshotMeta, StoreError};

const MAGIC: &[u8; 8] = b"BERTHSN1";
const CURRENT: &str = "current";
const WRITING: &str = "current.writing";

/// A snapshot as stored: its metadata and its encoded state.
pub(crate) type Stored = (SnapshotMeta, Vec<u8>);

pub(crate) struct SnapshotFile {
    dir: PathBuf,
    /// Held while replacing the file; also the last id written, so that a
    /// slower writer never replaces a newer snapshot with an older one.
    written: Mutex<Option<LogId>>,
}

fn io_error(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::SnapshotFile {
        path: path.display().to_string(),
        source,
    }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> StoreError {
    StoreError::SnapshotCorrupt {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

impl SnapshotFile {
    /// Opens the directory and returns the snapshot in it, if any (read
    /// once here: it can be large).
    pub(crate) fn open(dir: &Path) -> Result<(Self, Option<Stored>), StoreError> {
        fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        // The directory's own entry, so that a snapshot written into a
        // newly made directory is not lost with it.
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_error(parent, e))?;
        }
        // Left by a crash mid-write; the previous snapshot is intact.
        let writing = dir.join(WRITING);
        match fs::remove_file(&writing) {
            Ok(()) => {
                tracing::info!(path = %writing.display(), "removed a partly written snapshot")
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&writing, e)),
        }
        let file = Self {
            dir: dir.to_path_buf(),
            written: Mutex::new(None),
        };
        let current = file.read()?;
        if let Some((meta, _)) = &current {
            *file.lock() = meta.last_log_id;
        }
        Ok((file, current))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<LogId>> {
        self.written.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The newest snapshot, or `None` before the first one.
    pub(crate) fn read(&self) -> Result<Option<Stored>, StoreError> {
        let path = self.dir.join(CURRENT);
        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(mut f) => f.read_to_end(&mut bytes).map_err(|e| io_error(&path, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(&path, e)),
        };
        decode_file(&path, &bytes).map(Some)
    }

    /// Durably replaces the snapshot, unless a newer one is already there.
    /// Blocking: call it off the async runtime.
    pub(crate) fn write(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StoreError> {
        let mut written = self.lock();
        if written.is_some() && *written > meta.last_log_id {
            tracing::debug!(snapshot = %meta.snapshot_id, "a newer snapshot is already on disk");
            return Ok(());
        }
        let path = self.dir.join(WRITING);
        let meta_bytes = encode(meta);
        let mut hasher = crc32fast::Hasher::new();
        let mut file = File::create(&path).map_err(|e| io_error(&path, e))?;
        // Header and data apart rather than through `encode_file`: a large
        // state is not copied once more just to be written.
        for part in [header(&meta_bytes, data.len()).as_slice(), data] {
            hasher.update(part);
            file.write_all(part).map_err(|e| io_error(&path, e))?;
        }
        file.write_all(&hasher.finalize().to_le_bytes())
            .map_err(|e| io_error(&path, e))?;
        file.sync_all().map_err(|e| io_error(&path, e))?;
        drop(file);
        let current = self.dir.join(CURRENT);
        fs::rename(&path, &current).map_err(|e| io_error(&current, e))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error(&self.dir, e))?;
        *written = meta.last_log_id;
        Ok(())
    }
}

/// Everything before the data: magic, metadata length, metadata, data
/// length (small; the data is written after it as it is).
fn header(meta_bytes: &[u8], data_len: usize) -> Vec<u8> {
    let mut header = Vec::with_capacity(MAGIC.len() + 16 + meta_bytes.len());
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&(meta_bytes.len() as u64).to_le_bytes());
    header.extend_from_slice(meta_bytes);
    header.extend_from_slice(&(data_len as u64).to_le_bytes());
    header
}

/// A whole snapshot file in memory: what an online backup hands out, in
/// the same layout as `current`, so either can be restored.
pub(crate) fn encode_file(meta: &SnapshotMeta, data: &[u8]) -> Vec<u8> {
    let meta_bytes = encode(meta);
    let mut bytes = header(&meta_bytes, data.len());
    bytes.reserve(data.len() + 4);
    bytes.extend_from_slice(data);
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

/// Checks and splits a snapshot file's bytes; `path` names it in errors.
pub(crate) fn decode_file(path: &Path, bytes: &[u8]) -> Result<Stored, StoreError> {
    let Some((body, crc)) = bytes.split_last_chunk::<4>() else {
        return Err(corrupt(path, "shorter than its header"));
    };
    if crc32fast::hash(body) != u32::from_le_bytes(*crc) {
        return Err(corrupt(path, "checksum mismatch"));
    }
    let rest = body
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| corrupt(path, "not a Berth snapshot file"))?;
    let (meta_bytes, rest) =
        take_sized(rest).ok_or_else(|| corrupt(path, "bad metadata length"))?;
    let (data, rest) = take_sized(rest).ok_or_else(|| corrupt(path, "bad data length"))?;
    if !rest.is_empty() {
        return Err(corrupt(path, "trailing bytes"));
    }
    let meta: SnapshotMeta = decode("snapshot metadata", meta_bytes)?;
    Ok((meta, data.to_vec()))
}

/// Splits a u64-LE-length-prefixed slice off the front.
fn take_sized(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = bytes.split_first_chunk::<8>()?;
    let len = usize::try_from(u64::from_le_bytes(*len)).ok()?;
    (rest.len() >= len).then(|| rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoredMembership;
    use openraft::CommittedLeaderId;

    fn meta(index: u64) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(1, 1), index)),
            last_membership: StoredMembership::default(),
            snapshot_id: format!("s{index}"),
        }
    }

    #[test]
    fn round_trips_and_never_goes_back() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let (file, current) = SnapshotFile::open(dir.path()).expect("open");
        assert!(current.is_none());
        file.write(&meta(10), b"ten").expect("write");
        file.write(&meta(5), b"five")
            .expect("older write is ignored");
        let (m, data) = file.read().expect("read").expect("a snapshot");
        assert_eq!(m.snapshot_id, "s10");
        assert_eq!(data, b"ten");

        // Reopening remembers what is on disk.
        let (reopened, current) = SnapshotFile::open(dir.path()).expect("reopen");
        assert_eq!(current.expect("snapshot").1, b"ten");
        reopened
            .write(&meta(7), b"seven")
            .expect("older write is ignored");
        assert_eq!(reopened.read().expect("read").expect("snapshot").1, b"ten");
        reopened.write(&meta(11), b"eleven").expect("write");
        assert_eq!(
            reopened.read().expect("read").expect("snapshot").1,
            b"eleven"
        );
    }

    /// A backup is restored by the same code that reads `current`.
    #[test]
    fn a_file_in_memory_is_the_file_on_disk() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let (file, _) = SnapshotFile::open(dir.path()).expect("open");
        file.write(&meta(4), b"four").expect("write");
        let on_disk = fs::read(dir.path().join(CURRENT)).expect("read file");
        assert_eq!(encode_file(&meta(4), b"four"), on_disk);
        let (m, data) = decode_file(Path::new("backup"), &on_disk).expect("decode");
        assert_eq!(
            (m.snapshot_id.as_str(), data.as_slice()),
            ("s4", b"four".as_slice())
        );
    }

    #[test]
    fn a_damaged_file_is_refused_and_a_partial_write_ignored() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let (file, _) = SnapshotFile::open(dir.path()).expect("open");
        file.write(&meta(3), b"three").expect("write");
        fs::write(dir.path().join(WRITING), b"half a snapshot").expect("write partial");
        let (reopened, _) = SnapshotFile::open(dir.path()).expect("reopen");
        assert!(!dir.path().join(WRITING).exists());
        assert_eq!(
            reopened.read().expect("read").expect("snapshot").1,
            b"three"
        );

        let path = dir.path().join(CURRENT);
        let mut bytes = fs::read(&path).expect("read file");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        fs::write(&path, &bytes).expect("damage");
        let err = reopened.read().expect_err("damaged file must be refused");
        assert!(err.to_string().contains("checksum"), "{err}");
    }
}
