//! The Raft log and vote in sled.
//!
//! Durability rules: a vote, a truncation and a purge are flushed before the
//! call returns; appended entries are readable when `append` returns and the
//! flush callback fires only once they are on disk. Appends are flushed by a
//! dedicated thread that coalesces every append queued while the previous
//! flush ran into one fsync (group commit), which is what lets the log keep
//! up with many concurrent writers although openraft 0.9 appends one entry
//! batch at a time. Flushing happens on plain threads, never via sled's
//! `flush_async`, which can deadlock when awaited concurrently.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::mpsc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader, StorageIOError};

use crate::codec::{decode, encode};
use crate::keys::{self, log_index, log_key};
use crate::{Entry, LogId, StorageError, StoreError, TypeConfig, Vote};

#[derive(Clone)]
pub struct LogStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    flusher: mpsc::Sender<LogFlushed<TypeConfig>>,
}

impl LogStore {
    pub(crate) fn open(db: &sled::Db) -> Result<Self, StoreError> {
        let log = db.open_tree(keys::LOG_TREE)?;
        let meta = db.open_tree(keys::RAFT_META_TREE)?;
        let (tx, rx) = mpsc::channel::<LogFlushed<TypeConfig>>();
        let flush_db = db.clone();
        std::thread::Builder::new()
            .name("raft-log-flush".into())
            .spawn(move || group_commit_loop(flush_db, rx))
            .map_err(|e| StoreError::Sled(sled::Error::Io(e)))?;
        Ok(Self {
            db: db.clone(),
            log,
            meta,
            flusher: tx,
        })
    }

    /// Makes everything written so far durable (used at shutdown too).
    pub async fn flush(&self) -> Result<(), std::io::Error> {
        let db = self.db.clone();
        match tokio::task::spawn_blocking(move || db.flush()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(std::io::Error::other(e)),
            Err(join) => Err(std::io::Error::other(join)),
        }
    }

    fn read_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        match self.meta.get(key)? {
            Some(bytes) => Ok(Some(decode(
                std::str::from_utf8(key).unwrap_or("meta"),
                &bytes,
            )?)),
            None => Ok(None),
        }
    }

    fn last_entry_log_id(&self) -> Result<Option<LogId>, StoreError> {
        match self.log.last()? {
            Some((_, bytes)) => {
                let entry: Entry = decode("last log entry", &bytes)?;
                Ok(Some(entry.log_id))
            }
            None => Ok(None),
        }
    }
}

/// Waits for appends, flushes once for all that are queued, then reports
/// them durable in the order they were appended.
fn group_commit_loop(db: sled::Db, rx: mpsc::Receiver<LogFlushed<TypeConfig>>) {
    while let Ok(first) = rx.recv() {
        let mut waiting = vec![first];
        while let Ok(next) = rx.try_recv() {
            waiting.push(next);
        }
        let result = db.flush().map(|_| ()).map_err(std::io::Error::other);
        if let Err(e) = &result {
            tracing::error!(error = %e, "flushing the raft log failed");
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
            Bound::Included(i) => log_key(*i),
            Bound::Excluded(i) => log_key(i.saturating_add(1)),
            Bound::Unbounded => log_key(0),
        };
        let iter = match range.end_bound() {
            Bound::Included(i) => self.log.range(start..=log_key(*i)),
            Bound::Excluded(i) => self.log.range(start..log_key(*i)),
            Bound::Unbounded => self.log.range(start..),
        };
        let mut entries = Vec::new();
        for item in iter {
            let (_, bytes) = item.map_err(|e| read_err(e.into()))?;
            entries.push(decode::<Entry>("log entry", &bytes).map_err(read_err)?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> =
            self.read_meta(keys::LAST_PURGED).map_err(read_err)?;
        let last_log_id = self
            .last_entry_log_id()
            .map_err(read_err)?
            .or(last_purged_log_id);
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
        self.flush()
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
        let mut batch = sled::Batch::default();
        for entry in entries {
            batch.insert(&log_key(entry.log_id.index), encode(&entry));
        }
        self.log.apply_batch(batch).map_err(write_err)?;
        if let Err(mpsc::SendError(callback)) = self.flusher.send(callback) {
            // The flush thread only ends if it panicked; report the entries as
            // not durable rather than pretending.
            callback.log_io_completed(Err(std::io::Error::other("raft log flush thread is gone")));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "truncating raft log");
        let mut batch = sled::Batch::default();
        for item in self.log.range(log_key(log_id.index)..) {
            let (key, _) = item.map_err(write_err)?;
            batch.remove(key);
        }
        self.log.apply_batch(batch).map_err(write_err)?;
        self.flush().await.map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "purging raft log");
        // The purge marker is written first: should the removal be cut short,
        // the log still reads as purged up to `log_id`, never as having a hole.
        self.meta
            .insert(keys::LAST_PURGED, encode(&log_id))
            .map_err(write_err)?;
        let mut batch = sled::Batch::default();
        for item in self.log.range(..=log_key(log_id.index)) {
            let (key, _) = item.map_err(write_err)?;
            debug_assert!(log_index(&key).is_some());
            batch.remove(key);
        }
        self.log.apply_batch(batch).map_err(write_err)?;
        self.flush().await.map_err(write_err)
    }
}
