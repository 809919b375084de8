//! The state machine: `berth_types::State` in memory for fast reads and
//! scheduling decisions, made durable by the Raft log and snapshots.
//!
//! Applying an entry only changes memory. What is applied is always a prefix
//! of the (durable) log, so after a restart the state is the newest snapshot
//! plus the committed entries after it, which openraft applies again from the
//! log; the log is never purged past the snapshot on disk. Writing every
//! applied record through to sled as well cost each write two more sled
//! inserts on every server for nothing the log did not already guarantee.
//!
//! A snapshot starts with the data format it was written in
//! (`crate::DATA_FORMAT`), so one from a build that lays out the state
//! differently (a follower on another version receiving it, an old file) is
//! refused with an error that says so, never decoded into garbage.

use std::io::Cursor;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};

use berth_types::journal::{Actor, Cursor as JournalCursor};
use berth_types::{State, StateEvent};

use crate::codec::{decode, encode};
use crate::dedup::{refill, Dedup};
use crate::snapshot_file::SnapshotFile;
use crate::{
    BatchOutcome, Entry, LogId, Response, SnapshotMeta, StorageError, StoreError, StoredMembership,
    TypeConfig,
};

/// Everything a snapshot carries.
#[derive(Serialize, Deserialize)]
struct SnapshotPayload {
    /// First, so that it decodes whatever follows it.
    format: u32,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    state: State,
    dedup: Dedup,
}

#[derive(Debug, Default)]
pub struct Applied {
    pub last_applied: Option<LogId>,
    pub last_membership: StoredMembership,
    pub state: State,
    /// Which retried batches were applied already, with their results.
    pub dedup: Dedup,
}

/// Every subscriber's channel; one that was dropped is removed on the next send.
type EventSink = Arc<Mutex<Vec<UnboundedSender<Arc<[StateEvent]>>>>>;

/// A cheap, cloneable handle for reading the applied state.
#[derive(Clone)]
pub struct StateReader {
    inner: Arc<RwLock<Applied>>,
    events: EventSink,
    journal: tokio::sync::watch::Sender<Option<JournalCursor>>,
}

impl StateReader {
    /// Read access to the applied state. Hold it briefly: applying entries
    /// waits for it.
    pub fn read(&self) -> RwLockReadGuard<'_, Applied> {
        self.inner
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// State events of every entry applied from now on, in apply order (one
    /// message per applied run of entries). Any number of subscribers each
    /// get every message; unbounded, because the applier must never wait for
    /// a slow subscriber (each drains its channel in its own task).
    /// The newest journal cursor, changing whenever an applied entry
    /// journals something (events of every kind, audit records).
    pub fn watch_journal(&self) -> tokio::sync::watch::Receiver<Option<JournalCursor>> {
        self.journal.subscribe()
    }

    pub fn subscribe_events(&self) -> UnboundedReceiver<Arc<[StateEvent]>> {
        let (tx, rx) = unbounded_channel();
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(tx);
        rx
    }
}

#[derive(Clone)]
pub struct StateMachineStore {
    applied: Arc<RwLock<Applied>>,
    events: EventSink,
    observer: crate::Observer,
    journal: tokio::sync::watch::Sender<Option<JournalCursor>>,
    snapshot: Arc<SnapshotFile>,
}

pub(crate) fn decode_payload(data: &[u8]) -> Result<Applied, StoreError> {
    let format: u32 = decode("snapshot format", data.get(..4).unwrap_or_default())?;
    if format != crate::DATA_FORMAT {
        return Err(StoreError::Format {
            what: "snapshot".into(),
            found: format,
            reads: crate::DATA_FORMAT,
        });
    }
    let payload: SnapshotPayload = decode("snapshot", data)?;
    let mut state = payload.state;
    state.rebuild_indexes();
    Ok(Applied {
        last_applied: payload.last_applied,
        last_membership: payload.last_membership,
        state,
        dedup: payload.dedup,
    })
}

/// A consistent cut of the applied state, as a snapshot's payload and
/// metadata. Cheap under the read lock (task definitions are shared, not
/// copied); the caller encodes it after the lock is released, so applying
/// entries is not held up for the length of the encoding.
fn cut(applied: &RwLock<Applied>) -> (SnapshotPayload, SnapshotMeta) {
    let applied = applied.read().unwrap_or_else(|p| p.into_inner());
    let payload = SnapshotPayload {
        format: crate::DATA_FORMAT,
        last_applied: applied.last_applied,
        last_membership: applied.last_membership.clone(),
        state: applied.state.clone(),
        dedup: applied.dedup.clone(),
    };
    let snapshot_id = match applied.last_applied {
        Some(id) => format!(
            "{}-{}-{}",
            id.leader_id.term, id.leader_id.node_id, id.index
        ),
        None => "empty".to_string(),
    };
    let meta = SnapshotMeta {
        last_log_id: applied.last_applied,
        last_membership: applied.last_membership.clone(),
        snapshot_id,
    };
    (payload, meta)
}

/// An online backup: the applied state at one log index, as the bytes of
/// a snapshot file (the layout of `DATA_DIR/snapshots/current`).
#[derive(Debug)]
pub struct Backup {
    /// The last log entry the state includes.
    pub last_applied: Option<LogId>,
    pub bytes: Vec<u8>,
}

impl StateReader {
    /// A consistent copy of the applied state. Blocking (it encodes the
    /// whole state): call it off the async runtime. It includes whatever
    /// this server has applied; pass a read barrier first for every write
    /// acknowledged anywhere.
    pub fn backup(&self) -> Backup {
        let (payload, meta) = cut(&self.inner);
        let data = encode(&payload);
        Backup {
            last_applied: meta.last_log_id,
            bytes: crate::snapshot_file::encode_file(&meta, &data),
        }
    }
}

impl StateMachineStore {
    pub(crate) fn open(snapshot_dir: &std::path::Path) -> Result<Self, StoreError> {
        let (snapshot, current) = SnapshotFile::open(snapshot_dir)?;
        let applied = match current {
            Some((_, data)) => decode_payload(&data)?,
            None => Applied::default(),
        };
        let (journal, _) = tokio::sync::watch::channel(applied.state.journal().newest());
        Ok(Self {
            applied: Arc::new(RwLock::new(applied)),
            events: Arc::default(),
            observer: crate::Observer::default(),
            journal,
            snapshot: Arc::new(snapshot),
        })
    }

    /// The log index the loaded state (the snapshot, at open) includes.
    pub(crate) fn last_applied_index(&self) -> Option<u64> {
        self.applied
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .last_applied
            .map(|id| id.index)
    }

    /// Reports applies and snapshots to `observer` from now on.
    pub fn set_observer(&self, observer: Arc<dyn crate::StoreObserver>) {
        let _ = self.observer.set(observer);
    }

    pub fn reader(&self) -> StateReader {
        StateReader {
            inner: self.applied.clone(),
            events: self.events.clone(),
            journal: self.journal.clone(),
        }
    }

    fn write_lock(&self) -> std::sync::RwLockWriteGuard<'_, Applied> {
        self.applied
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn current_snapshot(&self) -> Result<Option<Snapshot<TypeConfig>>, StoreError> {
        if let Some((meta, data)) = self.snapshot.read()? {
            return Ok(Some(Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(data)),
            }));
        }
        Ok(None)
    }

    /// Makes a snapshot durable (off the async runtime) before openraft may
    /// purge the log up to it.
    async fn persist_snapshot(
        &self,
        meta: &SnapshotMeta,
        data: Vec<u8>,
    ) -> Result<Vec<u8>, StorageError> {
        let file = self.snapshot.clone();
        let meta_copy = meta.clone();
        let signature = meta.signature();
        tokio::task::spawn_blocking(move || {
            file.write(&meta_copy, &data)?;
            Ok::<_, StoreError>(data)
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(Some(signature.clone()), &e))?
        .map_err(|e| StorageIOError::write_snapshot(Some(signature), &e).into())
    }
}

/// How much less CPU priority (in nice steps) a snapshot's encoding and
/// writing get than the server's other threads.
///
/// A snapshot of a large state takes each server about a second of CPU
/// (62-103 MB in 0.5-1.7 s on each of three servers sharing 2 cores, in
/// `berth-bench raft`), and all servers build theirs at about the same log
/// index. At the same priority that took a quarter of the machine or more
/// from the writes, replication and heartbeats meanwhile. Nothing waits for a
/// snapshot to finish (the log stays until it is on disk), so it gives way.
const SNAPSHOT_NICENESS: i32 = 10;

/// Runs `work` on a thread of its own at `SNAPSHOT_NICENESS` below the
/// caller's priority (Linux keeps a nice value per thread, so nothing
/// else in the process slows down), and waits for it without blocking
/// the async runtime.
async fn in_background<T: Send + 'static>(
    name: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<T> {
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            lower_own_priority();
            let _ = done.send(work());
        })?;
    result
        .await
        .map_err(|_| std::io::Error::other("the background thread ended without a result"))
}

fn lower_own_priority() {
    // `None`: the calling thread (Linux applies a nice value per thread).
    let lowered = rustix::process::getpriority_process(None).and_then(|nice| {
        rustix::process::setpriority_process(None, (nice + SNAPSHOT_NICENESS).min(19))
    });
    if let Err(error) = lowered {
        // Only slower to give way; the snapshot itself is unaffected.
        tracing::debug!(%error, "cannot lower the snapshot thread's priority");
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let started = std::time::Instant::now();
        let (payload, meta) = cut(&self.applied);
        let file = self.snapshot.clone();
        let meta_copy = meta.clone();
        let data = in_background("berthd-snapshot", move || {
            let data = encode(&payload);
            // Durable before openraft may purge the log up to it.
            file.write(&meta_copy, &data)?;
            Ok::<_, StoreError>(data)
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?
        .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        if let Some(observer) = self.observer.get() {
            observer.snapshot_built(data.len(), started.elapsed().as_secs_f64());
        }
        tracing::info!(
            last_log_id = ?meta.last_log_id,
            bytes = data.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "built snapshot"
        );
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied = self.applied.read().unwrap_or_else(|p| p.into_inner());
        Ok((applied.last_applied, applied.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let started = std::time::Instant::now();
        let mut responses = Vec::new();
        let events;
        let newest;
        {
            let mut guard = self.write_lock();
            let applied = &mut *guard;
            for entry in entries {
                applied.last_applied = Some(entry.log_id);
                let response = match entry.payload {
                    EntryPayload::Blank => Response::default(),
                    EntryPayload::Normal(request) => {
                        // Shared with the log's cache of recent entries
                        // (and on the leader with the proposer) unless this
                        // is the last reference.
                        let batches = Arc::try_unwrap(request.batches)
                            .unwrap_or_else(|shared| shared.as_ref().clone());
                        let Applied { state, dedup, .. } = applied;
                        let index = entry.log_id.index;
                        Response {
                            outcomes: batches
                                .into_iter()
                                .map(|batch| {
                                    state.begin_entry(index, batch.origin.at_ms);
                                    match dedup
                                        .apply(index, batch, |c, actor| state.apply_by(c, actor))
                                    {
                                        BatchOutcome::Repeated(kept) => {
                                            BatchOutcome::Repeated(refill(kept, state))
                                        }
                                        outcome => outcome,
                                    }
                                })
                                .collect(),
                        }
                    }
                    EntryPayload::Membership(membership) => {
                        let voters: Vec<u64> = membership.voter_ids().collect();
                        let learners: Vec<u64> = membership.learner_ids().collect();
                        let state = &mut applied.state;
                        state.begin_untimed_entry(entry.log_id.index);
                        // The leader that appended the change made it.
                        state.record_membership(
                            &Actor::server(entry.log_id.leader_id.node_id),
                            voters,
                            learners,
                        );
                        applied.last_membership =
                            StoredMembership::new(Some(entry.log_id), membership);
                        Response::default()
                    }
                };
                responses.push(response);
            }
            events = applied.state.take_events();
            newest = applied.state.journal().newest();
        }
        if let Some(observer) = self.observer.get() {
            observer.applied(responses.len(), started.elapsed().as_secs_f64());
        }
        self.journal.send_if_modified(|known| {
            let moved = *known != newest;
            *known = newest;
            moved
        });
        if !events.is_empty() {
            let events: Arc<[StateEvent]> = events.into();
            self.events
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|tx| tx.send(events.clone()).is_ok());
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        // Decoded (and its indexes rebuilt) before anything is replaced, so
        // a bad snapshot leaves both the file and the state as they were.
        let installed = decode_payload(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        tracing::info!(last_log_id = ?meta.last_log_id, bytes = data.len(), "installing snapshot");
        self.persist_snapshot(meta, data).await?;
        let mut applied = self.write_lock();
        applied.last_applied = meta.last_log_id;
        applied.last_membership = meta.last_membership.clone();
        applied.state = installed.state;
        applied.dedup = installed.dedup;
        let newest = applied.state.journal().newest();
        drop(applied);
        self.journal.send_replace(newest);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        self.current_snapshot()
            .map_err(|e| StorageIOError::read_snapshot(None, &e).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn background_work_runs_below_the_callers_priority_and_returns_its_result() {
        let caller = rustix::process::getpriority_process(None).unwrap();
        let (nice, answer) = in_background("test-background", || {
            (rustix::process::getpriority_process(None).unwrap(), 42)
        })
        .await
        .unwrap();
        assert_eq!(answer, 42);
        assert_eq!(nice, (caller + SNAPSHOT_NICENESS).min(19));
        // Only the background thread gave way, not the one that asked.
        assert_eq!(rustix::process::getpriority_process(None).unwrap(), caller);
    }

    #[tokio::test]
    async fn a_built_snapshot_is_on_disk_and_reads_back_as_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateMachineStore::open(dir.path()).unwrap();
        {
            let mut applied = store.write_lock();
            applied.last_applied = Some(LogId::new(openraft::CommittedLeaderId::new(1, 1), 7));
        }
        let built = store.build_snapshot().await.unwrap();
        let reopened = StateMachineStore::open(dir.path()).unwrap();
        assert_eq!(reopened.last_applied_index(), Some(7));
        let on_disk = reopened.current_snapshot().unwrap().unwrap();
        assert_eq!(on_disk.meta, built.meta);
        assert_eq!(on_disk.snapshot.into_inner(), built.snapshot.into_inner());
    }
}
