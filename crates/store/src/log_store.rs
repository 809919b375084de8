//! The Raft log: entries in append-only segment files (`wal`), the vote
//! and the purge mark in sled.
//!
//! Durability rules: a vote, a truncation and a purge are durable before
//! the call returns; appended entries are readable when `append` returns
//! and the flush callback fires only once they are on disk. For entries
//! that is an `fdatasync` of the segment they were written to; for the
//! vote and the purge mark, sled's flush followed by [`SledFiles::sync`]
//! (sled's flush alone ends in `sync_file_range`, which leaves the file's
//! size and the drive's cache unsynced). A failed sync is reported to
//! openraft as a storage error and never as durable; openraft then stops
//! the Raft node. Appends are synced by one flusher at a time on tokio's
//! blocking pool, which coalesces every append queued while the previous
//! sync ran into one `fdatasync` (group commit): that is what lets the log
//! keep up with many concurrent writers although openraft 0.9 appends one
//! entry batch at a time. The blocking pool rather than a thread of our
//! own, because tokio then knows a flush is under way and a test runtime on
//! paused time does not jump its clock past election timeouts while the
//! disk works.
//!
//! The newest entries are also kept in memory, decoded: openraft reads each
//! entry back right after appending it, once to apply it and once per
//! follower to replicate it, and decoding a batch of task definitions
//! three times was a tenth of the leader's CPU.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

use berth_daemon::SledFiles;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader, StorageIOError};

use crate::codec::{decode, encode};
use crate::keys;
use crate::wal::{Wal, PREALLOCATION};
use crate::{Entry, LogId, StorageError, StoreError, TypeConfig, Vote};

/// Bounds of the in-memory tail: enough for every entry still being
/// applied or replicated to a follower that keeps up; a follower further
/// behind reads from the segment files. Decoded, an entry takes one and a
/// half to four times its encoded size (a string per id), so the byte
/// bound is what the tail costs every server after a bulk run: at 16 MiB
/// it held about 70 MiB of the leader's resident memory after 100,000
/// tasks started (docs/benchmarks.md, "Task records on every server").
const RECENT_MAX_ENTRIES: usize = 1024;
const RECENT_MAX_BYTES: usize = 2 * 1024 * 1024;

/// The last entries of the log, decoded. Invariant: always a suffix of the
/// log on disk (possibly empty), so an index at or above the first cached
/// one is either cached or not in the log at all.
#[derive(Default)]
struct RecentEntries {
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
}

impl RecentEntries {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.log_id.index)
    }

    fn push(&mut self, entry: Entry, encoded_len: usize) {
        let follows = self
            .entries
            .back()
            .is_none_or(|(last, _)| last.log_id.index + 1 == entry.log_id.index);
        if !follows {
            // Not contiguous with what is cached (cannot happen while the
            // suffix invariant holds, but a gap must never be served).
            self.clear();
        }
        self.bytes += encoded_len;
        self.entries.push_back((entry, encoded_len));
        while self.entries.len() > RECENT_MAX_ENTRIES || self.bytes > RECENT_MAX_BYTES {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some((_, len)) = self.entries.pop_front() {
            self.bytes -= len;
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Drops every entry at or above `index`.
    fn truncate(&mut self, index: u64) {
        while let Some((last, len)) = self.entries.back() {
            if last.log_id.index < index {
                break;
            }
            self.bytes -= *len;
            self.entries.pop_back();
        }
    }

    /// Drops every entry at or below `index`.
    fn purge(&mut self, index: u64) {
        while self.first_index().is_some_and(|first| first <= index) {
            self.pop_front();
        }
    }

    /// Cached entries with index in `start..end`.
    fn range(&self, start: u64, end: u64) -> impl Iterator<Item = Entry> + '_ {
        let skip = self
            .first_index()
            .map_or(0, |first| start.saturating_sub(first) as usize);
        self.entries
            .iter()
            .skip(skip)
            .map(|(e, _)| e)
            .take_while(move |e| e.log_id.index < end)
            .cloned()
    }
}

#[derive(Clone)]
pub struct LogStore {
    db: sled::Db,
    files: Arc<SledFiles>,
    meta: sled::Tree,
    wal: Arc<Wal>,
    group_commit: Arc<GroupCommit>,
    recent: Arc<Mutex<RecentEntries>>,
}

impl LogStore {
    /// Opens the log whose vote and purge mark are in `db` and whose
    /// entries are in `wal_dir`; `covered` is the last index the snapshot
    /// on disk holds (a gap below it is a purge not yet done).
    pub(crate) fn open(
        db: &sled::Db,
        files: SledFiles,
        wal_dir: &std::path::Path,
        covered: u64,
    ) -> Result<Self, StoreError> {
        let meta = db.open_tree(keys::RAFT_META_TREE)?;
        let purged: Option<LogId> = read_meta(&meta, keys::LAST_PURGED)?;
        let mut wal = Wal::open(wal_dir, purged.map(|p| p.index), covered)
            .map_err(|e| e.into_store(wal_dir))?;
        wal.start_preallocating(PREALLOCATION)
            .map_err(|source| StoreError::Wal {
                path: wal_dir.display().to_string(),
                source,
            })?;
        let wal = Arc::new(wal);
        Ok(Self {
            db: db.clone(),
            group_commit: Arc::new(GroupCommit {
                wal: wal.clone(),
                queue: Mutex::default(),
                observer: crate::Observer::default(),
            }),
            files: Arc::new(files),
            meta,
            wal,
            recent: Arc::default(),
        })
    }

    /// Reports flushes to `observer` from now on (the first one set stays).
    pub fn set_observer(&self, observer: Arc<dyn crate::StoreObserver>) {
        let _ = self.group_commit.observer.set(observer);
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, RecentEntries> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read_from_disk(
        &self,
        start: u64,
        end: Option<u64>,
        into: &mut Vec<Entry>,
    ) -> Result<(), StorageError> {
        let bytes = self
            .wal
            .read(start, end.unwrap_or(u64::MAX))
            .map_err(|e| StorageError::from(StorageIOError::read_logs(&e)))?;
        for entry in bytes {
            into.push(decode::<Entry>("log entry", &entry).map_err(read_err)?);
        }
        Ok(())
    }

    /// Makes everything written so far durable (used at shutdown too).
    pub async fn flush(&self) -> Result<(), std::io::Error> {
        let (db, files, wal) = (self.db.clone(), self.files.clone(), self.wal.clone());
        blocking(move || {
            wal.sync()?;
            durable_flush(&db, &files)
        })
        .await
    }

    /// Makes the vote and the purge mark durable.
    async fn flush_meta(&self) -> Result<(), std::io::Error> {
        let (db, files) = (self.db.clone(), self.files.clone());
        blocking(move || durable_flush(&db, &files)).await
    }

    /// Makes the segment files durable.
    async fn sync_wal(&self) -> Result<(), std::io::Error> {
        let wal = self.wal.clone();
        blocking(move || wal.sync()).await
    }

    fn read_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        read_meta(&self.meta, key)
    }

    /// Refuses a log that lost its tail: entries up to the saved commit
    /// index were in the log or the snapshot before it was saved. (Holes
    /// and damage inside the segments are refused when they are replayed.)
    pub(crate) fn check_complete(&self, snapshot_last: Option<u64>) -> Result<(), StoreError> {
        let covered = snapshot_last.unwrap_or(0);
        let committed: Option<Option<LogId>> = self.read_meta(keys::COMMITTED)?;
        if let Some(committed) = committed.flatten() {
            let last = self.wal.last_log_id().map_or(0, |id| id.index).max(covered);
            if last < committed.index {
                return Err(StoreError::LogCorrupt {
                    path: String::new(),
                    reason: format!(
                        "it ends at entry {last}, but entries up to {} were committed",
                        committed.index
                    ),
                });
            }
        }
        Ok(())
    }
}

/// Runs a sync on tokio's blocking pool, off the Raft core's thread.
async fn blocking(
    sync: impl FnOnce() -> Result<(), std::io::Error> + Send + 'static,
) -> Result<(), std::io::Error> {
    match tokio::task::spawn_blocking(sync).await {
        Ok(result) => result,
        Err(join) => Err(std::io::Error::other(join)),
    }
}

fn read_meta<T: serde::de::DeserializeOwned>(
    meta: &sled::Tree,
    key: &[u8],
) -> Result<Option<T>, StoreError> {
    match meta.get(key)? {
        Some(bytes) => Ok(Some(decode(
            std::str::from_utf8(key).unwrap_or("meta"),
            &bytes,
        )?)),
        None => Ok(None),
    }
}

/// sled's flush, then the syncs that make it survive a power cut. The
/// error keeps its I/O kind (`ENOSPC` reads as "No space left on device").
fn durable_flush(db: &sled::Db, files: &SledFiles) -> Result<(), std::io::Error> {
    db.flush().map_err(|e| match e {
        sled::Error::Io(io) => io,
        other => std::io::Error::other(other),
    })?;
    files
        .sync()
        .map_err(|e| std::io::Error::new(e.io().kind(), e.to_string()))
}

/// Waits for appends, flushes once for all that are queued, then reports
/// them durable in the order they were appended.
/// Appends waiting for their fsync, and whether a flusher is running.
#[derive(Default)]
struct FlushQueue {
    waiting: Vec<LogFlushed<TypeConfig>>,
    flushing: bool,
}

struct GroupCommit {
    wal: Arc<Wal>,
    queue: Mutex<FlushQueue>,
    observer: crate::Observer,
}

impl GroupCommit {
    fn queue(&self) -> std::sync::MutexGuard<'_, FlushQueue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues an append's callback (its entries are already written) and
    /// starts a flusher unless one is running: that one picks it up.
    fn enqueue(this: &Arc<Self>, callback: LogFlushed<TypeConfig>) {
        {
            let mut queue = this.queue();
            queue.waiting.push(callback);
            if queue.flushing {
                return;
            }
            queue.flushing = true;
        }
        let flusher = this.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(move || flusher.flush_until_empty());
            }
            // openraft always calls from its runtime; outside one, flush here.
            Err(_) => flusher.flush_until_empty(),
        }
    }

    fn flush_until_empty(&self) {
        loop {
            let waiting = {
                let mut queue = self.queue();
                if queue.waiting.is_empty() {
                    queue.flushing = false;
                    return;
                }
                std::mem::take(&mut queue.waiting)
            };
            let started = std::time::Instant::now();
            // Taken after the queue: every queued append's records are in
            // the segment synced here or in an older one, synced when it
            // filled.
            let result = self.wal.sync();
            if let Some(observer) = self.observer.get() {
                observer.log_flushed(waiting.len(), started.elapsed().as_secs_f64());
            }
            if let Err(e) = &result {
                tracing::error!(error = %e, entries = waiting.len(), "flushing the raft log failed; the entries are not acknowledged");
            }
            for callback in waiting {
                let result = match &result {
                    Ok(()) => Ok(()),
                    Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
                };
                callback.log_io_completed(result);
            }
        }
    }
}

fn read_err(e: StoreError) -> StorageError {
    StorageIOError::read_logs(&e).into()
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_logs(&e).into()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        // Exclusive; `None` is the end of the log.
        let end = match range.end_bound() {
            Bound::Included(i) => Some(i.saturating_add(1)),
            Bound::Excluded(i) => Some(*i),
            Bound::Unbounded => None,
        };
        let mut entries = Vec::new();
        if end.is_some_and(|end| end <= start) {
            return Ok(entries);
        }
        // The part below the cached tail comes from disk, the rest from the
        // cache; whatever the cache does not hold (evicted meanwhile, or an
        // append still between its write and its cache push) from disk
        // again. The cache is read under one lock, so it never leaves a gap.
        let mut next = start;
        let first_cached = self.recent().first_index();
        if let Some(first) = first_cached.filter(|first| *first > start) {
            let below = end.map_or(first, |end| end.min(first));
            self.read_from_disk(start, Some(below), &mut entries)?;
            next = entries.last().map_or(start, |e| e.log_id.index + 1);
        }
        if end.is_none_or(|end| next < end) {
            {
                let recent = self.recent();
                if recent.first_index().is_some_and(|first| first <= next) {
                    entries.extend(recent.range(next, end.unwrap_or(u64::MAX)));
                }
            }
            let after = entries
                .last()
                .map_or(next, |e| e.log_id.index + 1)
                .max(next);
            if end.is_none_or(|end| after < end) {
                self.read_from_disk(after, end, &mut entries)?;
            }
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> =
            self.read_meta(keys::LAST_PURGED).map_err(read_err)?;
        let last_log_id = self.wal.last_log_id().or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.meta
            .insert(keys::VOTE, encode(vote))
            .map_err(|e| StorageError::from(StorageIOError::write_vote(&e)))?;
        self.flush_meta()
            .await
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.read_meta(keys::VOTE)
            .map_err(|e| StorageIOError::read_vote(&e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not flushed: it is a hint that lets a restarted server apply
        // committed entries sooner; losing it only delays that.
        self.meta
            .insert(keys::COMMITTED, encode(&committed))
            .map_err(write_err)?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self
            .read_meta::<Option<LogId>>(keys::COMMITTED)
            .map_err(read_err)?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let (entries, encoded): (Vec<Entry>, Vec<(LogId, Vec<u8>)>) = entries
            .into_iter()
            .map(|entry| {
                let bytes = encode(&entry);
                let log_id = entry.log_id;
                (entry, (log_id, bytes))
            })
            .unzip();
        self.wal.append(&encoded).map_err(write_err)?;
        {
            let mut recent = self.recent();
            for (entry, (_, bytes)) in entries.into_iter().zip(&encoded) {
                recent.push(entry, bytes.len());
            }
        }
        GroupCommit::enqueue(&self.group_commit, callback);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "truncating raft log");
        self.recent().truncate(log_id.index);
        self.wal.truncate(log_id.index).map_err(write_err)?;
        self.sync_wal().await.map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "purging raft log");
        // The purge mark is made durable first: should the segments'
        // removal be cut short, replay still drops what the mark covers.
        self.meta
            .insert(keys::LAST_PURGED, encode(&log_id))
            .map_err(write_err)?;
        self.flush_meta().await.map_err(write_err)?;
        self.recent().purge(log_id.index);
        self.wal.purge(log_id.index).map_err(write_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_types::Command;
    use openraft::storage::RaftLogStorageExt;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(crate::Request::new(vec![Command::DeleteCluster {
                name: format!("c{index}"),
            }])),
        }
    }

    fn indexes(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.log_id.index).collect()
    }

    /// What a store with nothing cached (a restarted server) reads: the
    /// segment files' entries. A second store cannot open the log while
    /// this one has it open (`wal/LOCK`).
    fn uncached(store: &LogStore, range: std::ops::Range<u64>) -> Vec<Entry> {
        store
            .wal
            .read(range.start, range.end)
            .expect("read")
            .iter()
            .map(|bytes| decode::<Entry>("log entry", bytes).expect("decode"))
            .collect()
    }

    #[tokio::test]
    async fn reads_across_the_cached_tail_match_the_disk() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let db = sled::open(dir.path()).expect("open sled");
        let files = SledFiles::open(dir.path()).expect("sled files");
        let mut store = LogStore::open(&db, files, &dir.path().join("wal"), 0).expect("open");
        store
            .blocking_append((1..=10).map(entry))
            .await
            .expect("append");
        // Pretend only the last four are cached, as after eviction.
        store.recent().purge(6);
        assert_eq!(store.recent().first_index(), Some(7));

        for (start, end) in [
            (1, 11),
            (1, 7),
            (3, 9),
            (7, 11),
            (8, 9),
            (10, 20),
            (5, 5),
            (11, 15),
        ] {
            let got = store.try_get_log_entries(start..end).await.expect("read");
            let want = uncached(&store, start..end);
            assert_eq!(indexes(&got), indexes(&want), "range {start}..{end}");
            assert_eq!(got, want, "range {start}..{end}");
        }
        let all = store.try_get_log_entries(..).await.expect("read");
        assert_eq!(indexes(&all), (1..=10).collect::<Vec<_>>());

        // A truncation drops the cached tail too; appends after it are
        // served from the cache again, never the truncated entries.
        store
            .truncate(LogId::new(CommittedLeaderId::new(1, 1), 9))
            .await
            .expect("truncate");
        let mut replacement = entry(9);
        replacement.log_id = LogId::new(CommittedLeaderId::new(2, 1), 9);
        store
            .blocking_append([replacement.clone()])
            .await
            .expect("append");
        let tail = store.try_get_log_entries(7..20).await.expect("read");
        assert_eq!(indexes(&tail), vec![7, 8, 9]);
        assert_eq!(tail[2], replacement);
        assert_eq!(tail, uncached(&store, 7..20));

        // A purge past the cached range leaves reads from disk only.
        store
            .purge(LogId::new(CommittedLeaderId::new(2, 1), 8))
            .await
            .expect("purge");
        assert_eq!(store.recent().first_index(), Some(9));
        let rest = store.try_get_log_entries(..).await.expect("read");
        assert_eq!(indexes(&rest), vec![9]);
    }

    #[test]
    fn the_cache_stays_within_its_bounds() {
        let mut recent = RecentEntries::default();
        for index in 1..=(RECENT_MAX_ENTRIES as u64 + 10) {
            recent.push(entry(index), 100);
        }
        assert_eq!(recent.entries.len(), RECENT_MAX_ENTRIES);
        assert_eq!(recent.first_index(), Some(11));
        recent.push(entry(RECENT_MAX_ENTRIES as u64 + 11), RECENT_MAX_BYTES);
        assert_eq!(
            recent.entries.len(),
            1,
            "one oversized entry evicts the rest"
        );
        // A gap is never served: the cache restarts at the new entry.
        recent.push(entry(RECENT_MAX_ENTRIES as u64 + 50), 10);
        assert_eq!(recent.first_index(), Some(RECENT_MAX_ENTRIES as u64 + 50));
        assert_eq!(recent.bytes, 10);
    }
}
