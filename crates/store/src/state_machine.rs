//! The state machine: `berth_types::State` in memory for fast reads and
//! scheduling decisions, written through to sled on every apply so that a
//! restart resumes from disk rather than replaying the whole log.
//!
//! Applying a run of entries is one sled batch (records touched plus the new
//! applied log id), so the persisted state is always some applied prefix of
//! the log. It is not flushed on apply: the next log flush covers it, and an
//! unflushed tail is re-applied from the (durable) log after a crash.

use std::io::Cursor;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};

use berth_types::{Record, State, TaskEvent};

use crate::codec::{decode, encode};
use crate::keys;
use crate::{
    Entry, LogId, Response, SnapshotMeta, StorageError, StoreError, StoredMembership, TypeConfig,
};

const LAST_APPLIED: &str = "last_applied";
const LAST_MEMBERSHIP: &str = "last_membership";

/// Everything a snapshot carries.
#[derive(Serialize, Deserialize)]
struct SnapshotPayload {
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    state: State,
}

#[derive(Debug, Default)]
pub struct Applied {
    pub last_applied: Option<LogId>,
    pub last_membership: StoredMembership,
    pub state: State,
}

type EventSink = Arc<Mutex<Option<UnboundedSender<Vec<TaskEvent>>>>>;

/// A cheap, cloneable handle for reading the applied state.
#[derive(Clone)]
pub struct StateReader {
    inner: Arc<RwLock<Applied>>,
    events: EventSink,
}

impl StateReader {
    /// Read access to the applied state. Hold it briefly: applying entries
    /// waits for it.
    pub fn read(&self) -> RwLockReadGuard<'_, Applied> {
        self.inner
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Task events of every entry applied from now on, in apply order (one
    /// message per applied run of entries). There is one subscriber: a new
    /// call replaces the previous one.
    pub fn subscribe_task_events(&self) -> UnboundedReceiver<Vec<TaskEvent>> {
        let (tx, rx) = unbounded_channel();
        *self.events.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        rx
    }
}

#[derive(Clone)]
pub struct StateMachineStore {
    applied: Arc<RwLock<Applied>>,
    events: EventSink,
    tree: sled::Tree,
    snapshots: sled::Tree,
    db: sled::Db,
}

fn sm_read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_state_machine(&e).into()
}

fn sm_write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

impl StateMachineStore {
    pub(crate) fn open(db: &sled::Db) -> Result<Self, StoreError> {
        let tree = db.open_tree(keys::STATE_TREE)?;
        let snapshots = db.open_tree(keys::SNAPSHOT_TREE)?;
        let mut applied = Applied::default();
        if let Some(bytes) = tree.get(keys::sm_meta(LAST_APPLIED))? {
            applied.last_applied = decode("last applied log id", &bytes)?;
        }
        if let Some(bytes) = tree.get(keys::sm_meta(LAST_MEMBERSHIP))? {
            applied.last_membership = decode("last membership", &bytes)?;
        }
        for item in tree.scan_prefix(keys::record_prefix()) {
            let (_, bytes) = item?;
            let record: Record = decode("state record", &bytes)?;
            applied.state.load_record(record);
        }
        Ok(Self {
            applied: Arc::new(RwLock::new(applied)),
            events: Arc::default(),
            tree,
            snapshots,
            db: db.clone(),
        })
    }

    pub fn reader(&self) -> StateReader {
        StateReader {
            inner: self.applied.clone(),
            events: self.events.clone(),
        }
    }

    fn write_lock(&self) -> std::sync::RwLockWriteGuard<'_, Applied> {
        self.applied
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn current_snapshot(&self) -> Result<Option<Snapshot<TypeConfig>>, StoreError> {
        let (Some(meta), Some(data)) = (
            self.snapshots.get(keys::SNAPSHOT_META)?,
            self.snapshots.get(keys::SNAPSHOT_DATA)?,
        ) else {
            return Ok(None);
        };
        Ok(Some(Snapshot {
            meta: decode("snapshot meta", &meta)?,
            snapshot: Box::new(Cursor::new(data.to_vec())),
        }))
    }

    fn save_snapshot(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), sled::Error> {
        let mut batch = sled::Batch::default();
        batch.insert(keys::SNAPSHOT_META, encode(meta));
        batch.insert(keys::SNAPSHOT_DATA, data);
        self.snapshots.apply_batch(batch)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        // A consistent cut under the read lock (cheap: the large records are
        // shared, not copied), encoded after the lock is released so that
        // applying entries is not held up for the length of the encoding.
        let started = std::time::Instant::now();
        let (payload, meta) = {
            let applied = self.applied.read().unwrap_or_else(|p| p.into_inner());
            let payload = SnapshotPayload {
                last_applied: applied.last_applied,
                last_membership: applied.last_membership.clone(),
                state: applied.state.clone(),
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
        };
        let data = encode(&payload);
        drop(payload);
        self.save_snapshot(&meta, &data)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
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
        let mut responses = Vec::new();
        let mut batch = sled::Batch::default();
        let events;
        {
            let mut guard = self.write_lock();
            let applied = &mut *guard;
            let mut membership_changed = false;
            for entry in entries {
                applied.last_applied = Some(entry.log_id);
                let response = match entry.payload {
                    EntryPayload::Blank => Response::default(),
                    EntryPayload::Normal(request) => Response {
                        // Shared with the log's cache of recent entries
                        // (and on the leader with the proposer) unless this
                        // is the last reference.
                        results: Arc::try_unwrap(request.commands)
                            .unwrap_or_else(|shared| shared.as_ref().clone())
                            .into_iter()
                            .map(|command| applied.state.apply(command))
                            .collect(),
                    },
                    EntryPayload::Membership(membership) => {
                        applied.last_membership =
                            StoredMembership::new(Some(entry.log_id), membership);
                        membership_changed = true;
                        Response::default()
                    }
                };
                responses.push(response);
            }
            for key in applied.state.take_changes() {
                let db_key = keys::record_key(&key);
                match applied.state.record(&key) {
                    Some(record) => batch.insert(db_key, encode(&record)),
                    None => batch.remove(db_key),
                }
            }
            events = applied.state.take_task_events();
            batch.insert(keys::sm_meta(LAST_APPLIED), encode(&applied.last_applied));
            if membership_changed {
                batch.insert(
                    keys::sm_meta(LAST_MEMBERSHIP),
                    encode(&applied.last_membership),
                );
            }
        }
        self.tree.apply_batch(batch).map_err(sm_write_err)?;
        if !events.is_empty() {
            let mut sink = self.events.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(tx) = sink.as_ref() {
                if tx.send(events).is_err() {
                    *sink = None;
                }
            }
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
        let payload: SnapshotPayload = decode("snapshot", &data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        tracing::info!(last_log_id = ?meta.last_log_id, bytes = data.len(), "installing snapshot");

        // Replace the persisted state in one batch: every old record removed,
        // every new one written, with the new applied id.
        let mut batch = sled::Batch::default();
        for item in self.tree.iter() {
            let (key, _) = item.map_err(sm_read_err)?;
            if keys::is_record(&key) {
                batch.remove(key);
            }
        }
        for record in payload.state.records() {
            batch.insert(keys::record_key(&record.key()), encode(&record));
        }
        batch.insert(keys::sm_meta(LAST_APPLIED), encode(&meta.last_log_id));
        batch.insert(
            keys::sm_meta(LAST_MEMBERSHIP),
            encode(&meta.last_membership),
        );
        self.tree.apply_batch(batch).map_err(sm_write_err)?;
        self.save_snapshot(meta, &data)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(sm_write_err)?
            .map_err(sm_write_err)?;

        let mut applied = self.write_lock();
        applied.last_applied = meta.last_log_id;
        applied.last_membership = meta.last_membership.clone();
        applied.state = payload.state;
        applied.state.rebuild_indexes();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        self.current_snapshot()
            .map_err(|e| StorageIOError::read_snapshot(None, &e).into())
    }
}
