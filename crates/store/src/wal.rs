//! The Raft log's entries as append-only segment files.
//!
//! Why not sled: a durable append through sled cost three `pwrite`s, three
//! `sync_file_range`s, an `fdatasync` and a listing of its blob directory,
//! and sled's I/O pool woke all seven of its threads for every log buffer;
//! on two cores that was most of a write's CPU (docs/benchmarks.md). Here an
//! append is one `pwrite` of every record in the batch, and the group commit
//! in `log_store` makes any number of appends durable with one `fdatasync`
//! of the segment being written.
//!
//! Layout: `wal/NNNNNNNNNNNNNNNNNNNN.wal`, numbered from 1, oldest first. A
//! segment takes appends until it holds [`SEGMENT_BYTES`]; it is synced
//! before the next one is created, so only the newest segment can end in a
//! torn record. Past its last record a segment may hold zeros that a
//! background thread wrote and synced ahead of the appends
//! ([`Wal::start_preallocating`]): an `fdatasync` after a write into blocks
//! the file already has flushes just the data, while one after a write that
//! grows the file also commits the new size through the file system's
//! journal, which the three servers of a cluster on one disk queue for. A
//! record is
//!
//! ```text
//! length u32 LE | crc32 u32 LE (of the payload) | payload
//! payload: kind u8 | term u64 LE | node u64 LE | index u64 LE | data
//! ```
//!
//! with kind 1 an entry (data: the encoded `Entry`) and kind 2 a truncation
//! (every entry at or above `index` is gone; no data). Replaying the
//! segments in order gives the log. A purge deletes whole segments from the
//! oldest while all their entries are purged; the purge mark itself lives
//! in sled with the vote, and replay drops entries at or below it.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use openraft::CommittedLeaderId;

use crate::{LogId, StoreError};

/// A segment takes appends until it is this long: large enough that
/// rotation (one extra fsync of the old file and of the directory) is rare,
/// small enough that a purge frees disk soon after a snapshot.
pub(crate) const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

const HEADER: usize = 8;
const FIXED: usize = 1 + 8 + 8 + 8;
const KIND_ENTRY: u8 = 1;
const KIND_TRUNCATE: u8 = 2;

/// Where one entry's encoded bytes are.
#[derive(Clone, Copy, Debug)]
struct Location {
    segment: u64,
    offset: u64,
    len: u32,
    log_id: LogId,
}

struct Segment {
    number: u64,
    file: Arc<File>,
    len: u64,
    /// The highest entry index ever written into it (`None`: no entry).
    max_index: Option<u64>,
    /// Bytes `len..zeroed` of the file are zeros written ahead of the
    /// appends (nothing when `zeroed <= len`).
    zeroed: u64,
    /// Writing or syncing zeros into it failed (a full disk): appends grow
    /// the file as they would without preallocation.
    zeroing_failed: bool,
}

impl Segment {
    fn new(number: u64, file: File) -> Self {
        Self {
            number,
            file: Arc::new(file),
            len: 0,
            max_index: None,
            zeroed: 0,
            zeroing_failed: false,
        }
    }

    fn note_entry(&mut self, index: u64) {
        self.max_index = Some(self.max_index.map_or(index, |m| m.max(index)));
    }
}

struct Inner {
    /// Oldest first; the last one takes appends.
    segments: VecDeque<Segment>,
    /// Entry `first_index + i` is at `entries[i]`: the log is contiguous.
    entries: VecDeque<Location>,
    first_index: u64,
    segment_bytes: u64,
    /// What the zeroing thread keeps ahead of the appends (`None`: no
    /// thread, the files grow with each append).
    preallocation: Option<Preallocation>,
    /// The segment being written has held a chunk of zeros' worth of
    /// records (since this process opened the log): a server that writes
    /// less (a test cluster, a quiet one) never writes zeros.
    busy: bool,
    stopping: bool,
}

impl Inner {
    fn next_index(&self) -> u64 {
        self.first_index + self.entries.len() as u64
    }

    /// The zeros to write next into the active segment, if it needs more:
    /// its number and the byte range, always past its last record.
    fn next_zeros(&self) -> Option<(u64, u64, u64)> {
        let plan = self.preallocation?;
        let active = self.segments.back()?;
        if !self.busy || active.zeroing_failed {
            return None;
        }
        let start = active.zeroed.max(active.len);
        let chunk = plan.chunk.min(ZEROS.len() as u64);
        let end = (start + chunk).min(self.segment_bytes);
        let goal = (active.len + plan.ahead).min(self.segment_bytes);
        (start < end && end <= goal).then_some((active.number, start, end))
    }

    fn active(&mut self) -> &mut Segment {
        // `open` always leaves at least one segment, and nothing removes
        // the last one.
        self.segments
            .back_mut()
            .unwrap_or_else(|| unreachable!("the log always has a segment"))
    }

    fn truncate_from(&mut self, index: u64) {
        let keep = index.saturating_sub(self.first_index) as usize;
        self.entries.truncate(keep);
    }

    fn purge_to(&mut self, index: u64) {
        while self.first_index <= index && !self.entries.is_empty() {
            self.entries.pop_front();
            self.first_index += 1;
        }
        if self.entries.is_empty() && self.first_index <= index {
            self.first_index = index + 1;
        }
    }

    /// Makes `location` the log's only entry: what follows a gap that a
    /// snapshot spans.
    fn restart_at(&mut self, location: Location) {
        self.entries.clear();
        self.first_index = location.log_id.index;
        self.entries.push_back(location);
    }

    /// Records `location` as entry `index`: the next one, or one that
    /// replaces the entries from `index` on (openraft truncates first, but
    /// an overwrite must never leave a stale tail behind either way).
    fn place(&mut self, index: u64, location: Location) -> Result<(), u64> {
        if self.entries.is_empty() {
            self.first_index = index;
        } else if index < self.first_index || index > self.next_index() {
            return Err(self.next_index());
        } else {
            self.truncate_from(index);
        }
        self.entries.push_back(location);
        Ok(())
    }
}

/// How far ahead of the appends the zeroing thread keeps a segment
/// written with zeros and synced, and in what steps.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Preallocation {
    /// Bytes written (under the log's lock) and synced at a time.
    pub(crate) chunk: u64,
    /// Zeros are added while fewer than this many bytes past the last
    /// record are zeros.
    pub(crate) ahead: u64,
}

/// At 20,000 writes a second a leader's log grows by about 25 MiB a
/// second: 4 MiB ahead lasts 150 ms, and one chunk takes the thread a few.
pub(crate) const PREALLOCATION: Preallocation = Preallocation {
    chunk: 1024 * 1024,
    ahead: 4 * 1024 * 1024,
};

/// Where the zeros come from: no allocation per chunk.
static ZEROS: [u8; 1024 * 1024] = [0; 1024 * 1024];

struct Shared {
    inner: Mutex<Inner>,
    /// Wakes the zeroing thread: an append left too few zeros ahead, a new
    /// segment began, or the log is being dropped.
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub(crate) struct Wal {
    dir: PathBuf,
    shared: Arc<Shared>,
    zeroing: Option<JoinHandle<()>>,
    /// `wal/LOCK`, locked with `flock` while this log is open (released
    /// when it is dropped, after its zeroing thread has stopped): a second
    /// opening of the same log, whose appends the first one's zeros could
    /// overwrite, waits or fails instead.
    _lock: File,
}

/// What replaying the segments found wrong, for `StoreError::LogCorrupt`.
#[derive(Debug)]
pub(crate) enum OpenError {
    Io(PathBuf, std::io::Error),
    Corrupt(String),
    /// Another open log (in this process or another) holds `wal/LOCK`.
    Locked(PathBuf),
}

impl OpenError {
    /// The store's error for the log in `dir`.
    pub(crate) fn into_store(self, dir: &Path) -> StoreError {
        match self {
            OpenError::Io(path, source) => StoreError::Wal {
                path: path.display().to_string(),
                source,
            },
            OpenError::Corrupt(reason) => StoreError::LogCorrupt {
                path: dir.display().to_string(),
                reason,
            },
            OpenError::Locked(path) => StoreError::Locked {
                path: path.display().to_string(),
            },
        }
    }
}

/// Held locked while the log is open; not a segment name.
const LOCK_FILE: &str = "LOCK";

fn segment_name(number: u64) -> String {
    format!("{number:020}.wal")
}

fn segment_number(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".wal")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

fn log_id(term: u64, node: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, node), index)
}

/// Appends one record to `into`, built in place (no copy of `data` but
/// this one).
fn record(kind: u8, log_id: LogId, data: &[u8], into: &mut Vec<u8>) -> std::io::Result<()> {
    let len = u32::try_from(FIXED + data.len()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "raft entry {} is {} bytes; a log record holds at most 4 GiB",
                log_id.index,
                data.len()
            ),
        )
    })?;
    let start = into.len();
    into.extend_from_slice(&len.to_le_bytes());
    into.extend_from_slice(&[0; 4]);
    into.push(kind);
    into.extend_from_slice(&log_id.leader_id.term.to_le_bytes());
    into.extend_from_slice(&log_id.leader_id.node_id.to_le_bytes());
    into.extend_from_slice(&log_id.index.to_le_bytes());
    into.extend_from_slice(data);
    let crc = crc32fast::hash(&into[start + HEADER..]);
    into[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Syncs the directory entry of a file created or removed in `dir`.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

impl Wal {
    /// Opens (or creates) the log in `dir` and replays it. Entries at or
    /// below `purged` are dropped; a gap is accepted only where the
    /// snapshot (`covered`, the last index it holds) spans it, as on a
    /// follower that installed a snapshot and appended after it before the
    /// older entries were purged. A torn record at the end of the newest
    /// segment was never acknowledged and is cut off; damage anywhere else
    /// is refused.
    pub(crate) fn open(dir: &Path, purged: Option<u64>, covered: u64) -> Result<Self, OpenError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |e| OpenError::Io(path, e)
        };
        let created = !dir.exists();
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        if created {
            if let Some(parent) = dir.parent() {
                sync_dir(parent).map_err(io(parent))?;
            }
        }
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => return Err(OpenError::Locked(lock_path)),
            Err(e) => return Err(OpenError::Io(lock_path, e.into())),
        }
        let mut numbers = Vec::new();
        for item in std::fs::read_dir(dir).map_err(io(dir))? {
            let item = item.map_err(io(dir))?;
            if let Some(number) = item.file_name().to_str().and_then(segment_number) {
                numbers.push(number);
            }
        }
        numbers.sort_unstable();
        let mut inner = Inner {
            segments: VecDeque::new(),
            entries: VecDeque::new(),
            first_index: 0,
            segment_bytes: SEGMENT_BYTES,
            preallocation: None,
            busy: false,
            stopping: false,
        };
        let allowed_gap = purged.unwrap_or(0).max(covered);
        let newest = numbers.last().copied();
        for number in numbers {
            let path = dir.join(segment_name(number));
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io(&path))?;
            let bytes = std::fs::read(&path).map_err(io(&path))?;
            let mut segment = Segment::new(number, file);
            let mut at = 0usize;
            while at < bytes.len() {
                let parsed = parse(&bytes[at..]);
                let Some((kind, log_id, data_len, record_len)) = parsed else {
                    if Some(number) == newest && bytes[at..].iter().all(|&b| b == 0) {
                        // Zeros written ahead of the appends, never a
                        // record: they stay for the next appends. Older
                        // segments filled up before the next began, past
                        // any zeros, so an all-zero tail there is damage.
                        segment.zeroed = bytes.len() as u64;
                        break;
                    }
                    // A torn write leaves nothing valid after it, unless the
                    // crash kept a later page of unsynced records and lost
                    // an earlier one; otherwise a valid record further on
                    // means records in between were lost.
                    let limit = inner.next_index().saturating_add(1 << 20);
                    let next = valid_record_after(&bytes, at, limit);
                    if Some(number) != newest
                        || next.is_some_and(|next| !never_written(&bytes, at, next))
                    {
                        return Err(OpenError::Corrupt(format!(
                            "segment {} is damaged at byte {at} of {}",
                            path.display(),
                            bytes.len()
                        )));
                    }
                    tracing::warn!(
                        segment = %path.display(),
                        offset = at,
                        dropped_bytes = bytes.len() - at,
                        "cutting off a torn record and what follows it at the end of the raft log (never synced, so never acknowledged)"
                    );
                    segment.file.set_len(at as u64).map_err(io(&path))?;
                    segment.file.sync_all().map_err(io(&path))?;
                    break;
                };
                let index = log_id.index;
                match kind {
                    KIND_ENTRY => {
                        segment.note_entry(index);
                        let location = Location {
                            segment: number,
                            offset: (at + HEADER + FIXED) as u64,
                            len: data_len as u32,
                            log_id,
                        };
                        if let Err(expected) = inner.place(index, location) {
                            if index > expected && index - 1 <= allowed_gap {
                                inner.restart_at(location);
                            } else {
                                return Err(OpenError::Corrupt(format!(
                                    "entry {expected} is missing (the next one stored is {index}, the snapshot ends at {covered})"
                                )));
                            }
                        }
                    }
                    _ => inner.truncate_from(index),
                }
                at += record_len;
            }
            segment.len = at as u64;
            inner.segments.push_back(segment);
        }
        if let Some(purged) = purged {
            inner.purge_to(purged);
        }
        let wal = Self {
            dir: dir.to_path_buf(),
            shared: Arc::new(Shared {
                inner: Mutex::new(inner),
                wake: Condvar::new(),
            }),
            zeroing: None,
            _lock: lock,
        };
        if wal.lock().segments.is_empty() {
            wal.add_segment(1).map_err(io(dir))?;
        }
        Ok(wal)
    }

    /// Starts the thread that keeps between `plan.ahead - plan.chunk` and
    /// `plan.ahead` bytes past the last record written with zeros and
    /// synced, once the segment being written holds a chunk's worth of
    /// records. It stops when the log is dropped.
    pub(crate) fn start_preallocating(&mut self, plan: Preallocation) -> std::io::Result<()> {
        if self.zeroing.is_some() {
            return Ok(());
        }
        {
            let mut inner = self.lock();
            inner.preallocation = Some(plan);
            inner.busy = inner.busy || inner.segments.back().is_some_and(|s| s.len >= plan.chunk);
        }
        let shared = self.shared.clone();
        let dir = self.dir.clone();
        self.zeroing = Some(
            std::thread::Builder::new()
                .name("raft-log-zeros".into())
                .spawn(move || write_zeros_ahead(&shared, &dir))?,
        );
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.shared.lock()
    }

    /// Creates segment `number` and makes its name durable.
    fn add_segment(&self, number: u64) -> std::io::Result<()> {
        let path = self.dir.join(segment_name(number));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        sync_dir(&self.dir)?;
        let mut inner = self.lock();
        inner.segments.push_back(Segment::new(number, file));
        if inner.next_zeros().is_some() {
            self.shared.wake.notify_one();
        }
        Ok(())
    }

    /// Writes `entries` (log id and encoded entry, in index order) to the
    /// page cache; they are durable after the next [`Wal::sync`].
    pub(crate) fn append(&self, entries: &[(LogId, Vec<u8>)]) -> std::io::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        self.rotate_if_full()?;
        let mut buf =
            Vec::with_capacity(entries.iter().map(|(_, b)| HEADER + FIXED + b.len()).sum());
        let mut offsets = Vec::with_capacity(entries.len());
        for (log_id, bytes) in entries {
            offsets.push(buf.len());
            record(KIND_ENTRY, *log_id, bytes, &mut buf)?;
        }
        let mut inner = self.lock();
        let active = inner.active();
        let (number, start) = (active.number, active.len);
        active.file.write_all_at(&buf, start)?;
        active.len += buf.len() as u64;
        if let Some(plan) = inner.preallocation {
            inner.busy = inner.busy || inner.active().len >= plan.chunk;
            if inner.next_zeros().is_some() {
                self.shared.wake.notify_one();
            }
        }
        for ((log_id, bytes), offset) in entries.iter().zip(offsets) {
            inner.active().note_entry(log_id.index);
            let location = Location {
                segment: number,
                offset: start + (offset + HEADER + FIXED) as u64,
                len: bytes.len() as u32,
                log_id: *log_id,
            };
            if let Err(expected) = inner.place(log_id.index, location) {
                if log_id.index < inner.first_index {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!(
                            "appending entry {} below the log's first entry {}",
                            log_id.index, inner.first_index
                        ),
                    ));
                }
                // A follower that installed a snapshot appends after it
                // before openraft purges what the snapshot covers; replay
                // accepts that gap because the snapshot spans it.
                tracing::debug!(
                    index = log_id.index,
                    expected,
                    "the raft log restarts after a snapshot"
                );
                inner.restart_at(location);
            }
        }
        Ok(())
    }

    /// Starts a new segment once the active one is full, after syncing it:
    /// only the newest segment ever holds unsynced records.
    fn rotate_if_full(&self) -> std::io::Result<()> {
        let (full, number) = {
            let mut inner = self.lock();
            let segment_bytes = inner.segment_bytes;
            let active = inner.active();
            (
                (active.len >= segment_bytes).then(|| active.file.clone()),
                active.number,
            )
        };
        if let Some(file) = full {
            file.sync_data()?;
            self.add_segment(number + 1)?;
        }
        Ok(())
    }

    /// Drops every entry at or above `index` (written to the page cache;
    /// durable after the next [`Wal::sync`]).
    pub(crate) fn truncate(&self, index: u64) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(HEADER + FIXED);
        record(KIND_TRUNCATE, log_id(0, 0, index), &[], &mut buf)?;
        let mut inner = self.lock();
        let active = inner.active();
        active.file.write_all_at(&buf, active.len)?;
        active.len += buf.len() as u64;
        inner.truncate_from(index);
        Ok(())
    }

    /// Forgets entries at or below `index` and deletes the oldest segments
    /// while everything in them is purged. The caller has already made the
    /// purge mark durable, so a deletion lost in a crash only leaves
    /// entries that replay drops.
    pub(crate) fn purge(&self, index: u64) -> std::io::Result<()> {
        let doomed: Vec<u64> = {
            let mut inner = self.lock();
            inner.purge_to(index);
            let mut doomed = Vec::new();
            while inner.segments.len() > 1
                && inner.segments[0].max_index.is_none_or(|max| max <= index)
            {
                if let Some(segment) = inner.segments.pop_front() {
                    doomed.push(segment.number);
                }
            }
            doomed
        };
        for number in doomed {
            match std::fs::remove_file(self.dir.join(segment_name(number))) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Makes every record written so far durable: one `fdatasync` of the
    /// newest segment (older ones were synced when they filled).
    pub(crate) fn sync(&self) -> std::io::Result<()> {
        let file = self.lock().active().file.clone();
        file.sync_data()
    }

    pub(crate) fn last_log_id(&self) -> Option<LogId> {
        self.lock().entries.back().map(|l| l.log_id)
    }

    /// The index of the oldest entry held, if any.
    #[cfg(test)]
    fn first_index(&self) -> Option<u64> {
        let inner = self.lock();
        (!inner.entries.is_empty()).then_some(inner.first_index)
    }

    /// The encoded entries with index in `start..end` that the log holds.
    pub(crate) fn read(&self, start: u64, end: u64) -> std::io::Result<Vec<Vec<u8>>> {
        let wanted: Vec<(Arc<File>, Location)> = {
            let inner = self.lock();
            let from = start.max(inner.first_index);
            let to = end.min(inner.next_index());
            (from..to)
                .filter_map(|index| {
                    let location = inner.entries[(index - inner.first_index) as usize];
                    inner
                        .segments
                        .iter()
                        .find(|s| s.number == location.segment)
                        .map(|s| (s.file.clone(), location))
                })
                .collect()
        };
        wanted
            .into_iter()
            .map(|(file, location)| {
                let mut bytes = vec![0u8; location.len as usize];
                file.read_exact_at(&mut bytes, location.offset)?;
                Ok(bytes)
            })
            .collect()
    }

    /// How many segment files the log has (for tests and metrics).
    #[cfg(test)]
    fn segment_count(&self) -> usize {
        self.lock().segments.len()
    }
}

impl Drop for Wal {
    /// Stops the zeroing thread and waits for it, so that no zeros can land
    /// in a segment that a log opened after this one appends to.
    fn drop(&mut self) {
        if let Some(thread) = self.zeroing.take() {
            self.lock().stopping = true;
            self.shared.wake.notify_one();
            let _ = thread.join();
        }
    }
}

/// The zeroing thread: writes zeros past the active segment's last record
/// while the log holds fewer than `ahead` of them, one synced chunk at a
/// time. The zeros are written under the log's lock, so no append can land
/// in the same bytes, and synced outside it through a file description of
/// the thread's own: the appends' `fdatasync` still sees any write-back
/// error, which a shared one would report only once.
fn write_zeros_ahead(shared: &Shared, dir: &Path) {
    // The thread's own description of the segment it is zeroing.
    let mut own: Option<(u64, File)> = None;
    let mut inner = shared.lock();
    loop {
        if inner.stopping {
            return;
        }
        let Some((number, start, end)) = inner.next_zeros() else {
            inner = shared.wake.wait(inner).unwrap_or_else(|p| p.into_inner());
            continue;
        };
        let mut result = write_zeros(&mut own, dir, number, start, end);
        if result.is_ok() {
            if let Some(active) = inner.segments.back_mut() {
                active.zeroed = end;
            }
            drop(inner);
            result = own.as_ref().map_or(Ok(()), |(_, file)| file.sync_data());
            inner = shared.lock();
        }
        if let Err(error) = result {
            // A failed write of zeros (a full disk) costs nothing: appends
            // grow the file, and fail and say so when they cannot. A failed
            // sync is a failed write-back, which the appends' own
            // `fdatasync` reports as well, stopping Raft.
            tracing::warn!(
                segment = number,
                %error,
                "cannot write zeros ahead of the raft log's appends; its file grows with each append"
            );
            if let Some(active) = inner.segments.back_mut().filter(|s| s.number == number) {
                active.zeroing_failed = true;
            }
        }
    }
}

/// Where the first record after `from` that parses starts, if any. Only
/// offsets whose kind byte and index look like a record are checksummed,
/// so a segment full of garbage is scanned in linear time.
fn valid_record_after(bytes: &[u8], from: usize, max_index: u64) -> Option<usize> {
    (from + 1..bytes.len().saturating_sub(HEADER + FIXED - 1)).find(|&at| {
        let kind = bytes[at + HEADER];
        (kind == KIND_ENTRY || kind == KIND_TRUNCATE)
            && u64_at(bytes, at + HEADER + 17) <= max_index
            && parse(&bytes[at..]).is_some()
    })
}

/// The unit in which a disk writes: a write that never reached it leaves
/// whole sectors as they were, zeros in a segment's zeroed tail.
const SECTOR: usize = 512;

/// Writes zeros over `start..end` of segment `number` through `own`,
/// opening the segment first if `own` holds another one (or none).
fn write_zeros(
    own: &mut Option<(u64, File)>,
    dir: &Path,
    number: u64,
    start: u64,
    end: u64,
) -> std::io::Result<()> {
    let file = match own.take() {
        Some((n, file)) if n == number => file,
        _ => OpenOptions::new()
            .write(true)
            .open(dir.join(segment_name(number)))?,
    };
    let written = file.write_all_at(&ZEROS[..(end - start) as usize], start);
    *own = Some((number, file));
    written
}

/// Whether bytes `from..to` (a record that does not parse, up to the next
/// one that does) hold what a write that never reached the disk leaves: a
/// record header of zeros (a real one never has length 0), or a whole
/// sector of zeros. The page cache writes a file's pages back in any
/// order, so a crash can keep a later page of unsynced records and lose
/// an earlier one. Records are appended in order and an `fdatasync` makes
/// every one written before it durable, so no record at or after such a
/// gap was ever synced, let alone acknowledged.
fn never_written(bytes: &[u8], from: usize, to: usize) -> bool {
    if from + HEADER <= to && bytes[from..from + HEADER].iter().all(|&b| b == 0) {
        return true;
    }
    let first = from.div_ceil(SECTOR) * SECTOR;
    (first..to)
        .step_by(SECTOR)
        .take_while(|sector| sector + SECTOR <= to)
        .any(|sector| bytes[sector..sector + SECTOR].iter().all(|&b| b == 0))
}

/// Rewrites the segments in `dir` without the entries whose index is in
/// `indexes`, as damage that lost whole records would leave them.
#[cfg(test)]
pub(crate) fn drop_entries(dir: &Path, indexes: std::ops::RangeInclusive<u64>) {
    for item in std::fs::read_dir(dir).expect("wal dir") {
        let path = item.expect("entry").path();
        let bytes = std::fs::read(&path).expect("read segment");
        let mut kept = Vec::new();
        let mut at = 0;
        while let Some((kind, id, _, len)) = parse(&bytes[at..]) {
            if kind != KIND_ENTRY || !indexes.contains(&id.index) {
                kept.extend_from_slice(&bytes[at..at + len]);
            }
            at += len;
        }
        std::fs::write(&path, kept).expect("write segment");
    }
}

/// One record at the start of `bytes`: kind, log id, data length and the
/// whole record's length; `None` if it is torn, damaged or not a record.
fn parse(bytes: &[u8]) -> Option<(u8, LogId, usize, usize)> {
    if bytes.len() < HEADER + FIXED {
        return None;
    }
    let len = u32::from_le_bytes(bytes[0..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(bytes[4..8].try_into().ok()?);
    if len < FIXED || bytes.len() < HEADER + len {
        return None;
    }
    let payload = &bytes[HEADER..HEADER + len];
    if crc32fast::hash(payload) != crc {
        return None;
    }
    let kind = payload[0];
    if kind != KIND_ENTRY && kind != KIND_TRUNCATE {
        return None;
    }
    let id = log_id(u64_at(payload, 1), u64_at(payload, 9), u64_at(payload, 17));
    Some((kind, id, len - FIXED, HEADER + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(index: u64) -> LogId {
        log_id(1, 1, index)
    }

    fn data(index: u64) -> Vec<u8> {
        format!("entry-{index}").into_bytes()
    }

    fn append(wal: &Wal, indexes: std::ops::RangeInclusive<u64>) {
        let batch: Vec<_> = indexes.map(|i| (id(i), data(i))).collect();
        wal.append(&batch).expect("append");
    }

    fn read_all(wal: &Wal) -> Vec<String> {
        wal.read(0, u64::MAX)
            .expect("read")
            .into_iter()
            .map(|b| String::from_utf8(b).expect("utf8"))
            .collect()
    }

    fn names(range: std::ops::RangeInclusive<u64>) -> Vec<String> {
        range.map(|i| format!("entry-{i}")).collect()
    }

    /// Why opening the log in `path` is refused as corrupt.
    fn refused(path: &Path, covered: u64, why: &str) -> String {
        match Wal::open(path, None, covered) {
            Err(OpenError::Corrupt(reason)) => reason,
            Err(e) => panic!("unexpected error {e:?}"),
            Ok(_) => panic!("{why} must be refused"),
        }
    }

    /// Opening the log in `path` is refused, naming the damage.
    fn assert_damaged(path: &Path, why: &str) {
        let reason = refused(path, 0, why);
        assert!(reason.contains("damaged"), "{why}: {reason}");
    }

    #[test]
    fn appends_truncations_and_purges_replay_as_they_were() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let path = dir.path().join("wal");
        {
            let wal = Wal::open(&path, None, 0).expect("open");
            append(&wal, 1..=5);
            append(&wal, 6..=9);
            wal.truncate(7).expect("truncate");
            let mut replaced = (id(7), b"entry-7b".to_vec());
            replaced.0.leader_id.term = 2;
            wal.append(&[replaced]).expect("append");
            wal.sync().expect("sync");
        }
        let wal = Wal::open(&path, None, 0).expect("reopen");
        let mut want = names(1..=6);
        want.push("entry-7b".into());
        assert_eq!(read_all(&wal), want);
        assert_eq!(
            wal.last_log_id().map(|l| (l.leader_id.term, l.index)),
            Some((2, 7))
        );
        assert_eq!(read_all(&wal)[2..4], names(3..=4)[..]);
        assert_eq!(wal.read(3, 5).expect("read").len(), 2);
        drop(wal);

        // The purge mark (kept in sled) hides what it covers on replay.
        let wal = Wal::open(&path, Some(4), 4).expect("reopen");
        assert_eq!(wal.first_index(), Some(5));
        assert_eq!(read_all(&wal)[0], "entry-5");
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_damage_elsewhere_is_refused() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let path = dir.path().join("wal");
        {
            let wal = Wal::open(&path, None, 0).expect("open");
            append(&wal, 1..=3);
            wal.sync().expect("sync");
        }
        let segment = path.join(segment_name(1));
        let whole = std::fs::read(&segment).expect("read");
        // Half of a fourth record, as a crash during its write leaves it.
        let mut torn = Vec::new();
        record(KIND_ENTRY, id(4), &data(4), &mut torn).expect("record");
        let mut bytes = whole.clone();
        bytes.extend_from_slice(&torn[..torn.len() / 2]);
        bytes.extend_from_slice(&[0u8; 100]);
        std::fs::write(&segment, &bytes).expect("write");
        let wal = Wal::open(&path, None, 0).expect("a torn tail opens");
        assert_eq!(read_all(&wal), names(1..=3));
        assert_eq!(
            std::fs::metadata(&segment).expect("stat").len() as usize,
            whole.len()
        );
        append(&wal, 4..=4);
        drop(wal);
        assert_eq!(
            read_all(&Wal::open(&path, None, 0).expect("reopen")),
            names(1..=4)
        );

        // A damaged record with valid ones after it, even in the newest
        // segment: records that may have been acknowledged are lost.
        let mut bytes = std::fs::read(&segment).expect("read");
        bytes[HEADER + FIXED] ^= 0x5a;
        std::fs::write(&segment, &bytes).expect("write");
        assert_damaged(&path, "damage before valid records");
        assert_eq!(
            std::fs::read(&segment).expect("read"),
            bytes,
            "a refused log is left as it was"
        );

        // Damage to the last record of a segment that is not the newest.
        let last = bytes.len() - 1;
        bytes[HEADER + FIXED] ^= 0x5a;
        bytes[last] ^= 0x5a;
        std::fs::write(&segment, &bytes).expect("write");
        std::fs::write(path.join(segment_name(2)), b"").expect("newer segment");
        assert_damaged(&path, "damage in an older segment");
    }

    /// A power cut keeps any prefix of what was written after the last
    /// sync: wherever the cut falls, replay gives every record that was
    /// whole on disk, in order, and the log takes appends after it.
    #[test]
    fn a_cut_anywhere_in_the_unsynced_tail_replays_the_whole_records_before_it() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let path = dir.path().join("wal");
        {
            let wal = Wal::open(&path, None, 0).expect("open");
            append(&wal, 1..=4);
            wal.sync().expect("sync");
            append(&wal, 5..=9);
        }
        let segment = path.join(segment_name(1));
        let whole = std::fs::read(&segment).expect("read");
        let record_len = |i: u64| HEADER + FIXED + data(i).len();
        let synced: usize = (1..=4).map(record_len).sum();
        for cut in synced..=whole.len() {
            std::fs::write(&segment, &whole[..cut]).expect("write");
            let complete = (5..=9)
                .scan(synced, |end, i| {
                    *end += record_len(i);
                    Some((i, *end))
                })
                .filter(|(_, end)| *end <= cut)
                .count() as u64;
            let wal = Wal::open(&path, None, 0).expect("a cut tail opens");
            assert_eq!(read_all(&wal), names(1..=4 + complete), "cut at byte {cut}");
            append(&wal, 5 + complete..=5 + complete);
            drop(wal);
            let wal = Wal::open(&path, None, 0).expect("reopen");
            assert_eq!(
                read_all(&wal),
                names(1..=5 + complete),
                "append after a cut at {cut}"
            );
        }
    }

    #[test]
    fn a_gap_is_refused_unless_the_snapshot_covers_it() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let path = dir.path().join("wal");
        {
            let wal = Wal::open(&path, None, 0).expect("open");
            append(&wal, 1..=3);
            // What a follower writes after installing a snapshot up to 9.
            append(&wal, 10..=11);
            assert_eq!(read_all(&wal), names(10..=11));
            wal.sync().expect("sync");
        }
        let reason = refused(&path, 5, "a gap past the snapshot");
        assert!(reason.contains("entry 4 is missing"), "{reason}");
        let wal = Wal::open(&path, None, 9).expect("the snapshot covers the gap");
        assert_eq!(read_all(&wal), names(10..=11));
    }

    fn file_len(path: &Path) -> u64 {
        std::fs::metadata(path).expect("stat").len()
    }

    /// The active segment's last record ends here.
    fn logical_len(wal: &Wal) -> u64 {
        wal.lock().active().len
    }

    #[test]
    fn zeros_written_ahead_stay_free_for_the_next_appends_across_a_restart() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let path = dir.path().join("wal");
        let segment = path.join(segment_name(1));
        let plan = Preallocation {
            chunk: 4096,
            ahead: 16384,
        };
        let mut wal = Wal::open(&path, None, 0).expect("open");
        wal.start_preallocating(plan).expect("start");
        // Below one chunk the log stays as written: a quiet server pays
        // for no zeros.
        append(&wal, 1..=2);
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(file_len(&segment), logical_len(&wal));
        let big: Vec<_> = (3..=8).map(|i| (id(i), vec![b'x'; 1000])).collect();
        wal.append(&big).expect("append");
        let written = logical_len(&wal);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while file_len(&segment) <= written + plan.ahead - plan.chunk {
            assert!(
                std::time::Instant::now() < deadline,
                "no zeros ahead: the file is {} bytes, its records {written}",
                file_len(&segment)
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        wal.sync().expect("sync");
        drop(wal);
        let zeroed = file_len(&segment);
        assert!(zeroed <= written + plan.ahead, "{zeroed} bytes");
        let bytes = std::fs::read(&segment).expect("read");
        assert!(bytes[written as usize..].iter().all(|&b| b == 0));
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(file_len(&segment), zeroed, "zeros written after the drop");

        // Replay ends at the last record and keeps the zeros; the next
        // append overwrites them.
        let wal = Wal::open(&path, None, 0).expect("reopen");
        assert_eq!(read_all(&wal).len(), 8);
        assert_eq!(file_len(&segment), zeroed, "the zeros were cut off");
        append(&wal, 9..=9);
        wal.sync().expect("sync");
        assert_eq!(file_len(&segment), zeroed, "the append grew the file");
        drop(wal);
        let wal = Wal::open(&path, None, 0).expect("reopen");
        let all = read_all(&wal);
        assert_eq!(all.len(), 9);
        assert_eq!(all[8], "entry-9");

        // A record torn inside the zeros is cut off with them.
        let mut torn = Vec::new();
        record(KIND_ENTRY, id(10), &data(10), &mut torn).expect("record");
        let end = logical_len(&wal) as usize;
        drop(wal);
        let mut bytes = std::fs::read(&segment).expect("read");
        bytes[end..end + torn.len() / 2].copy_from_slice(&torn[..torn.len() / 2]);
        std::fs::write(&segment, &bytes).expect("write");
        let wal = Wal::open(&path, None, 0).expect("a torn record in the zeros opens");
        assert_eq!(read_all(&wal).len(), 9);
        assert_eq!(file_len(&segment), end as u64);
        drop(wal);

        // Only the newest segment may end in zeros: an older one filled up
        // before the next began, so zeros there stand where records were.
        let mut bytes = std::fs::read(&segment).expect("read");
        bytes.extend_from_slice(&[0u8; 4096]);
        std::fs::write(&segment, &bytes).expect("write");
        std::fs::write(path.join(segment_name(2)), b"").expect("newer segment");
        assert_damaged(&path, "zeros ending an older segment");
    }

    /// A crash can keep a later page of unsynced records and lose an
    /// earlier one (the page cache writes pages back in any order): a gap
    /// of zeros followed by valid records. None of them was synced, so
    /// they are cut off; other damage before valid records still refuses.
    #[test]
    fn records_after_a_gap_that_never_reached_the_disk_are_cut_off() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let path = dir.path().join("wal");
        let segment = path.join(segment_name(1));
        // Records of about 1.6 KiB, each spanning whole sectors.
        let big = |i: u64| data(i).repeat(200);
        {
            let wal = Wal::open(&path, None, 0).expect("open");
            let batch: Vec<_> = (1..=40).map(|i| (id(i), big(i))).collect();
            wal.append(&batch).expect("append");
            wal.sync().expect("sync");
        }
        let whole = std::fs::read(&segment).expect("read");
        let big_start = |i: u64| (1..i).map(|j| HEADER + FIXED + big(j).len()).sum::<usize>();

        // A whole sector of zeros inside record 10, records 11.. intact.
        let mut bytes = whole.clone();
        let sector = big_start(10).div_ceil(SECTOR) * SECTOR;
        assert!(
            sector + SECTOR <= big_start(11),
            "record 10 spans a whole sector"
        );
        bytes[sector..sector + SECTOR].fill(0);
        std::fs::write(&segment, &bytes).expect("write");
        let wal = Wal::open(&path, None, 0).expect("a gap of zeros is cut off");
        assert_eq!(read_all(&wal).len(), 9);
        assert_eq!(file_len(&segment), big_start(10) as u64);
        append(&wal, 10..=10);
        drop(wal);
        assert_eq!(
            read_all(&Wal::open(&path, None, 0).expect("reopen")).len(),
            10
        );

        // Record 5's header never written (zeros), 6.. intact.
        let mut bytes = whole.clone();
        bytes[big_start(5)..big_start(5) + HEADER].fill(0);
        std::fs::write(&segment, &bytes).expect("write");
        let wal = Wal::open(&path, None, 0).expect("a header of zeros is cut off");
        assert_eq!(read_all(&wal).len(), 4);
        drop(wal);

        // The same sector damaged rather than lost: refused.
        let mut bytes = whole.clone();
        for b in &mut bytes[sector..sector + SECTOR] {
            *b ^= 0x5a;
        }
        std::fs::write(&segment, &bytes).expect("write");
        assert_damaged(&path, "a damaged sector before valid records");
    }

    #[test]
    fn appends_racing_the_zeroing_thread_are_never_overwritten() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let path = dir.path().join("wal");
        let mut wal = Wal::open(&path, None, 0).expect("open");
        wal.lock().segment_bytes = 64 * 1024;
        wal.start_preallocating(Preallocation {
            chunk: 512,
            ahead: 2048,
        })
        .expect("start");
        let payload = |i: u64| format!("entry-{i}-{}", "y".repeat((i % 300) as usize));
        for i in 1..=3000u64 {
            wal.append(&[(id(i), payload(i).into_bytes())])
                .expect("append");
            if i % 97 == 0 {
                wal.sync().expect("sync");
            }
        }
        wal.sync().expect("sync");
        let active = path.join(segment_name(wal.lock().active().number));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while file_len(&active) <= logical_len(&wal) {
            assert!(
                std::time::Instant::now() < deadline,
                "no zeros were written"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let want: Vec<String> = (1..=3000).map(payload).collect();
        assert_eq!(read_all(&wal), want, "read back before the restart");
        let segments = wal.segment_count();
        assert!(segments > 3, "only {segments} segments: no rotation tested");
        drop(wal);
        let wal = Wal::open(&path, None, 0).expect("reopen");
        assert_eq!(read_all(&wal), want, "replayed");
    }

    /// The first opening's zeroing thread writes ahead of where a second
    /// one would append: the second waits until the first is dropped.
    #[test]
    fn a_log_opened_twice_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let path = dir.path().join("wal");
        let first = Wal::open(&path, None, 0).expect("open");
        match Wal::open(&path, None, 0) {
            Err(OpenError::Locked(lock)) => assert_eq!(lock, path.join(LOCK_FILE)),
            Err(e) => panic!("unexpected error {e:?}"),
            Ok(_) => panic!("a second opening of an open log must be refused"),
        }
        append(&first, 1..=2);
        drop(first);
        let second = Wal::open(&path, None, 0).expect("open after the drop");
        assert_eq!(read_all(&second), names(1..=2));
    }

    #[test]
    fn full_segments_rotate_and_purges_delete_them() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let path = dir.path().join("wal");
        let wal = Wal::open(&path, None, 0).expect("open");
        wal.lock().segment_bytes = 4096;
        let big = vec![7u8; 2048];
        for index in 1..=5 {
            wal.append(&[(id(index), big.clone())]).expect("append");
        }
        // Two entries fill a segment; the third write starts the next one.
        assert_eq!(wal.segment_count(), 3);
        wal.purge(3).expect("purge");
        assert_eq!(
            wal.segment_count(),
            2,
            "the segment with 1 and 2 is deleted"
        );
        assert!(!path.join(segment_name(1)).exists());
        wal.purge(5).expect("purge");
        assert_eq!(wal.segment_count(), 1, "the newest segment is always kept");
        wal.sync().expect("sync");
        drop(wal);
        let wal = Wal::open(&path, Some(5), 5).expect("reopen");
        assert_eq!(wal.first_index(), None);
        wal.append(&[(id(6), data(6))])
            .expect("append after a full purge");
        assert_eq!(read_all(&wal), names(6..=6));
    }
}
