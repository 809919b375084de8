//! Raft storage for Berth: the openraft type configuration and every alias
//! the rest of the server uses, the Raft log (entries in append-only
//! segment files, see `wal`; vote and purge mark in sled), and the state
//! machine, in memory and persisted as a snapshot file (see
//! `state_machine`).
//!
//! Every write openraft waits for (an append, a vote, a truncation, a purge)
//! is acknowledged only after an `fdatasync`: of the segment file for
//! entries, and for what is in sled, of sled's data file and any new blob
//! files after sled's flush ([`berth_daemon::SledFiles`]): sled's own flush
//! on Linux stops at `sync_file_range`, which survives a process crash but
//! not a power cut.

mod codec;
pub mod dedup;
mod keys;
mod log_store;
pub mod recovery;
mod snapshot_file;
mod state_machine;
mod wal;

use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use berth_types::Command;

pub use dedup::{ActorRun, Batch, BatchId, BatchOutcome, BatchResults, CommandResult, Origin};
pub use log_store::LogStore;
pub use state_machine::{Backup, StateMachineStore, StateReader};

/// The payload of one Raft entry: every batch a proposer put together.
/// Batching amortises one fsync and one replication round over many writes;
/// each batch keeps its own id so that a retried one is applied once (see
/// [`dedup`]).
///
/// The batches are shared, not owned: openraft reads every entry back once
/// to apply it and once per follower to replicate it, and a proposer keeps
/// them for a retry, so cloning an entry must not copy its commands.
///
/// On disk and on the wire an entry is an envelope: the command level it
/// needs (the highest of its commands', see `berth_types::COMMAND_LEVEL`),
/// then the batches. A server reading an entry of a level it does not know
/// refuses it by name instead of misreading a variant it has never seen.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub batches: Arc<Vec<Batch>>,
}

impl Request {
    /// One batch without an id (applied however often it is proposed).
    pub fn new(commands: Vec<Command>) -> Self {
        Self::batches(vec![Batch {
            id: None,
            origin: Origin::default(),
            commands,
        }])
    }

    pub fn batches(batches: Vec<Batch>) -> Self {
        Self {
            batches: Arc::new(batches),
        }
    }

    /// The command level a server needs to apply this entry.
    pub fn level(&self) -> u32 {
        self.batches
            .iter()
            .flat_map(|b| b.commands.iter())
            .map(Command::level)
            .max()
            .unwrap_or(1)
    }
}

impl Serialize for Request {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut envelope = serializer.serialize_tuple(2)?;
        envelope.serialize_element(&self.level())?;
        envelope.serialize_element(self.batches.as_ref())?;
        envelope.end()
    }
}

impl<'de> Deserialize<'de> for Request {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Envelope;
        impl<'de> serde::de::Visitor<'de> for Envelope {
            type Value = Request;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a command level followed by the batches")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Request, A::Error> {
                use serde::de::Error;
                let level: u32 = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(0, &self))?;
                if level > berth_types::COMMAND_LEVEL {
                    return Err(A::Error::custom(format!(
                        "the entry needs command level {level} and this berthd applies up to level {}; upgrade this server to the version the leader runs",
                        berth_types::COMMAND_LEVEL
                    )));
                }
                let batches: Vec<Batch> = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(1, &self))?;
                Ok(Request::batches(batches))
            }
        }
        deserializer.deserialize_tuple(2, Envelope)
    }
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let commands: usize = self.batches.iter().map(|b| b.commands.len()).sum();
        write!(
            f,
            "Request({} batches, {commands} commands)",
            self.batches.len()
        )
    }
}

/// What the storage layer tells about its work, for metrics. Every method
/// does nothing unless implemented.
pub trait StoreObserver: Send + Sync {
    /// One fsync of the Raft log made `appends` appends durable.
    fn log_flushed(&self, _appends: usize, _seconds: f64) {}
    /// `entries` log entries were applied to the state machine.
    fn applied(&self, _entries: usize, _seconds: f64) {}
    /// A snapshot of `bytes` was built and written.
    fn snapshot_built(&self, _bytes: usize, _seconds: f64) {}
}

/// Set once, after opening; shared by every clone of a store.
pub(crate) type Observer = Arc<std::sync::OnceLock<Arc<dyn StoreObserver>>>;

/// One outcome per batch of the entry, in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub outcomes: Vec<BatchOutcome>,
}

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type NodeId = u64;
pub type Node = openraft::BasicNode;
pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Node>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type RaftMetrics = openraft::RaftMetrics<NodeId, Node>;

pub mod rpc {
    //! Raft RPC types, named once for the transport.
    use super::{Node, NodeId, TypeConfig};
    pub type AppendEntriesRequest = openraft::raft::AppendEntriesRequest<TypeConfig>;
    pub type AppendEntriesResponse = openraft::raft::AppendEntriesResponse<NodeId>;
    pub type VoteRequest = openraft::raft::VoteRequest<NodeId>;
    pub type VoteResponse = openraft::raft::VoteResponse<NodeId>;
    pub type InstallSnapshotRequest = openraft::raft::InstallSnapshotRequest<TypeConfig>;
    pub type InstallSnapshotResponse = openraft::raft::InstallSnapshotResponse<NodeId>;
    pub type RaftError<E = openraft::error::Infallible> = openraft::error::RaftError<NodeId, E>;
    pub type ClientWriteError = openraft::error::ClientWriteError<NodeId, Node>;
    pub type CheckIsLeaderError = openraft::error::CheckIsLeaderError<NodeId, Node>;
    pub type InstallSnapshotError = openraft::error::InstallSnapshotError;
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database in {path}: {source}")]
    Open { path: String, source: sled::Error },
    #[error("the database in {path} is in use by another process: is berthd still running on this data dir? Stop it first (systemctl stop berthd)")]
    Locked { path: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("data dir {path} holds no cluster: this server never formed or joined one, so there is nothing to recover from it")]
    NoCluster { path: String },
    #[error("node {node_id} is not a member of the cluster in data dir {path} (voters {voters:?}, learners {learners:?}); recover on a server that is, with its own --node-id")]
    NotAMember {
        path: String,
        node_id: NodeId,
        voters: Vec<NodeId>,
        learners: Vec<NodeId>,
    },
    #[error("data dir {path} already holds {found}/; restore into a new, empty data dir (only pki/ may be there)")]
    NotEmpty { path: String, found: String },
    #[error("{path} holds an empty state (a snapshot of a cluster that never applied an entry); there is nothing to restore")]
    BackupEmpty { path: String },
    #[error("the backup's cluster has no server {node_id}, so its address is unknown; give it with --advertise HOST:PORT")]
    AddressNeeded { node_id: NodeId },
    #[error("database error: {0}")]
    Sled(#[from] sled::Error),
    #[error(transparent)]
    Sync(#[from] berth_daemon::DurableError),
    #[error("the Raft log in {path} is corrupt ({reason}); this server's copy cannot be trusted: move its data dir aside and re-add the server to the cluster (berth server remove, then add it again) so that it receives a fresh snapshot")]
    LogCorrupt { path: String, reason: String },
    #[error("corrupt record {what}: {source}")]
    Corrupt {
        what: String,
        source: bincode::Error,
    },
    #[error("snapshot file {path}: {source}")]
    SnapshotFile {
        path: String,
        source: std::io::Error,
    },
    #[error("snapshot file {path} is damaged ({reason}); remove this server's data dir and re-add it to the cluster so that it receives a fresh snapshot")]
    SnapshotCorrupt { path: String, reason: String },
    #[error("{what} is in Berth data format {found}, and this berthd reads format {reads} only (format 1 came from builds before services, format 2 from builds before command levels and de-duplicated forwarded writes, format 3 from builds before instance keys were recorded, format 4 from builds before load balancers, task IPs and blue/green deployments, format 5 from builds before the event journal and audit log, format 6 from builds before tags on clusters, tasks and instances, account settings and AWS access keys; data dirs of format 7 kept the Raft log in sled and are converted on start); run the version that wrote it, or move this server's data dir aside and re-add the server to the cluster (berth server add) so it receives a snapshot")]
    Format {
        what: String,
        found: u32,
        reads: u32,
    },
    #[error("the Raft log in {path}: {source}")]
    Wal {
        path: String,
        source: std::io::Error,
    },
}

/// The layout of every command in the log and of the state in snapshots.
/// bincode is positional, so any change to a stored type is a new format:
/// bump this, and the golden-bytes test in `berth-types` will insist.
/// Format 1 (no marker) had no services; format 2 stored bare command
/// lists in log entries, with no command level, no batch ids and no
/// de-duplication window; format 3 recorded no instance keys
/// (`Instance::public_key_sha256`) and mixed agent-reported attributes into
/// the operator's (`Instance::agent_attributes`); format 4 had no task
/// addresses or DEACTIVATING tasks (`Task::ip`, `deactivating_until_ms`),
/// no service load balancers, and no blue/green deployments (deployment
/// controllers, traffic shares); format 5 had no journal (events and audit
/// records in the state, callers and times in each batch's `Origin`);
/// format 6 had no tags on clusters, tasks and instances
/// (`Cluster::tags`, `Task::tags`, `Instance::tags`) and no account
/// settings (`State::account_settings`).
pub const DATA_FORMAT: u32 = 7;

/// The format marker of a data dir: [`DATA_FORMAT`] for what is stored,
/// plus where. Format 8 keeps the Raft log's entries in `wal/`; a data dir
/// of format 7 had them in sled and is converted when it is opened. Old
/// builds refuse a converted data dir by its marker instead of reading an
/// empty log.
pub const DATA_DIR_FORMAT: u32 = 8;

/// Refuses a data dir written in another format and marks a new one.
/// Returns whether the data dir is of format 7 (its log still in sled).
fn check_format(db: &sled::Db, db_dir: &Path) -> Result<bool, StoreError> {
    let meta = db.open_tree(keys::RAFT_META_TREE)?;
    let what = || format!("data dir {}", db_dir.display());
    match meta.get(keys::FORMAT)? {
        Some(bytes) => {
            let found = <[u8; 4]>::try_from(bytes.as_ref())
                .map(u32::from_be_bytes)
                .unwrap_or(0);
            if found == DATA_FORMAT {
                return Ok(true);
            }
            if found != DATA_DIR_FORMAT {
                return Err(StoreError::Format {
                    what: what(),
                    found,
                    reads: DATA_DIR_FORMAT,
                });
            }
        }
        None => {
            if holds_format_1(db)? {
                return Err(StoreError::Format {
                    what: what(),
                    found: 1,
                    reads: DATA_DIR_FORMAT,
                });
            }
            meta.insert(keys::FORMAT, &DATA_DIR_FORMAT.to_be_bytes())?;
            // Made durable with the first sync in `open`.
            db.flush()?;
        }
    }
    Ok(false)
}

/// Moves the entries of a format-7 data dir from sled into `wal_dir`, then
/// marks it format 8. Safe to repeat after a crash at any point: the
/// segments are rewritten from sled until sled's copy is gone, which
/// happens only after they are durable.
fn convert_format_7(
    db: &sled::Db,
    files: &berth_daemon::SledFiles,
    wal_dir: &Path,
) -> Result<(), StoreError> {
    let wal_err = |source: std::io::Error| StoreError::Wal {
        path: wal_dir.display().to_string(),
        source,
    };
    let old = db.open_tree(keys::LOG_TREE)?;
    if wal_dir.exists() {
        std::fs::remove_dir_all(wal_dir).map_err(wal_err)?;
    }
    let wal = wal::Wal::open(wal_dir, None, u64::MAX).map_err(|e| e.into_store(wal_dir))?;
    let mut batch = Vec::new();
    let mut moved = 0usize;
    for item in old.iter() {
        let (_, bytes) = item?;
        let entry: Entry = codec::decode("log entry", &bytes)?;
        batch.push((entry.log_id, bytes.to_vec()));
        if batch.len() == 1024 {
            moved += batch.len();
            wal.append(&std::mem::take(&mut batch)).map_err(wal_err)?;
        }
    }
    moved += batch.len();
    wal.append(&batch).map_err(wal_err)?;
    wal.sync().map_err(wal_err)?;
    drop(wal);
    old.clear()?;
    db.open_tree(keys::RAFT_META_TREE)?
        .insert(keys::FORMAT, &DATA_DIR_FORMAT.to_be_bytes())?;
    db.flush()?;
    files.sync()?;
    tracing::info!(entries = moved, wal = %wal_dir.display(), "moved the raft log out of sled (data dir format 7 to 8)");
    Ok(())
}

/// Data written before the format marker existed (format 1).
fn holds_format_1(db: &sled::Db) -> Result<bool, StoreError> {
    let names = db.tree_names();
    let has = |name: &str| names.iter().any(|n| n.as_ref() == name.as_bytes());
    let log_used = has(keys::LOG_TREE) && !db.open_tree(keys::LOG_TREE)?.is_empty();
    let voted = db
        .open_tree(keys::RAFT_META_TREE)?
        .get(keys::VOTE)?
        .is_some();
    Ok(log_used || voted || keys::FORMAT_1_TREES.iter().any(|t| has(t)))
}

/// Opens (or creates) a server's storage under `dir`: the sled database
/// (vote, purge mark, commit hint, format marker) in `dir/db`, the Raft
/// log's entries in `dir/wal`, the newest state machine snapshot in
/// `dir/snapshots`. A data dir of another data format is refused; one of
/// format 7 is converted.
pub fn open(dir: &Path) -> Result<(LogStore, StateMachineStore), StoreError> {
    let db_dir = dir.join("db");
    let corrupt = |reason: String| StoreError::LogCorrupt {
        path: db_dir.display().to_string(),
        reason,
    };
    // The snapshot first: what it covers, the log need not hold.
    let sm = StateMachineStore::open(&dir.join("snapshots"))?;
    let snapshot_last = sm.last_applied_index();
    // sled 0.34 does not reliably report a damaged file: depending on where
    // the damage is, it panics while recovering, or opens a database that
    // lacks what was in it. A panic is caught here, and a database that was
    // in use but opens without Berth's format marker is refused.
    let existed = std::fs::metadata(db_dir.join("db")).is_ok_and(|m| m.len() > 0);
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let db = sled::Config::new()
            .path(&db_dir)
            // Durability comes from explicit flushes at the points Raft
            // needs them; the periodic background flush only adds fsyncs.
            .flush_every_ms(None)
            .open()
            .map_err(|source| match source {
                sled::Error::Corruption { .. } => StoreError::Sled(source),
                // Another process (a running berthd) holds sled's lock.
                source if source.to_string().contains("could not acquire lock") => {
                    StoreError::Locked {
                        path: db_dir.display().to_string(),
                    }
                }
                source => StoreError::Open {
                    path: db_dir.display().to_string(),
                    source,
                },
            })?;
        let marked = db
            .open_tree(keys::RAFT_META_TREE)?
            .contains_key(keys::FORMAT)?;
        if existed && !marked && !holds_format_1(&db)? {
            return Err(corrupt(
                "the database file is there but holds no Berth data format marker".into(),
            ));
        }
        let format_7 = check_format(&db, &db_dir)?;
        let files = berth_daemon::SledFiles::open(&db_dir)?;
        let wal_dir = dir.join("wal");
        if format_7 {
            convert_format_7(&db, &files, &wal_dir)?;
        }
        let log = LogStore::open(&db, files, &wal_dir, snapshot_last.unwrap_or(0))?;
        log.check_complete(snapshot_last).map_err(|e| match e {
            StoreError::LogCorrupt { reason, .. } => corrupt(reason),
            other => other,
        })?;
        Ok(log)
    }));
    let log = match opened {
        Ok(Err(StoreError::Sled(sled::Error::Corruption { at, .. }))) => {
            return Err(corrupt(format!("sled found damage at {at:?}")))
        }
        Ok(result) => result?,
        Err(panic) => {
            return Err(corrupt(format!(
                "reading it failed: {}",
                berth_daemon::panic_message(panic.as_ref())
            )));
        }
    };
    Ok((log, sm))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::storage::{RaftLogReader, RaftLogStorage, RaftLogStorageExt};
    use openraft::{CommittedLeaderId, EntryPayload};

    /// A data dir whose log holds entries 1..=n, closed again.
    async fn written(n: u64) -> tempfile::TempDir {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let (mut log, _sm) = open(dir.path()).expect("open");
        log.blocking_append((1..=n).map(|index| Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Request::new(vec![Command::DeleteCluster {
                name: format!("cluster-{index}-{}", "x".repeat(900)),
            }])),
        }))
        .await
        .expect("append");
        log.save_committed(Some(LogId::new(CommittedLeaderId::new(1, 1), n)))
            .await
            .expect("save committed");
        // The commit index is saved without a flush of its own; a vote
        // flushes it, as the next one a running server saves would.
        log.save_vote(&Vote::new(1, 1)).await.expect("save vote");
        drop(log);
        dir
    }

    /// `open` once the previous handles' flush thread has let go of sled's lock.
    fn reopen(dir: &Path) -> Result<(LogStore, StateMachineStore), StoreError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match open(dir) {
                Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => return other,
            }
        }
    }

    fn garble(dir: &Path, pick: impl Fn(usize) -> std::ops::Range<usize>) {
        let path = dir.join("wal").join(format!("{:020}.wal", 1));
        let mut bytes = std::fs::read(&path).expect("read db");
        // Past the records the segment may hold zeros written ahead of
        // the appends; `pick` places damage among the records.
        let records = bytes
            .iter()
            .rposition(|&b| b != 0)
            .map_or(0, |last| last + 1);
        let range = pick(records);
        for b in &mut bytes[range] {
            *b ^= 0x5a;
        }
        std::fs::write(&path, &bytes).expect("write db");
    }

    fn assert_corrupt(result: Result<(LogStore, StateMachineStore), StoreError>) {
        let err = match result {
            Ok(_) => panic!("a damaged log must be refused"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("is corrupt"), "{err}");
        assert!(err.contains("move its data dir aside and re-add"), "{err}");
    }

    /// Damage in the middle of the log is refused as corrupt: never a log
    /// that silently lost entries (a torn record is cut off only at the
    /// very end, where no valid record follows it).
    #[tokio::test]
    async fn a_log_damaged_in_the_middle_is_refused() {
        let n = 2000;
        let dir = written(n).await;
        {
            let (mut log, _sm) = reopen(dir.path()).expect("an intact log opens");
            let entries = log.try_get_log_entries(1..=n).await.expect("read");
            assert_eq!(entries.len() as u64, n);
        }
        garble(dir.path(), |len| len / 2..len / 2 + 4096);
        assert_corrupt(reopen(dir.path()));
        assert_corrupt(reopen(dir.path()));
    }

    /// A data dir of format 7 kept its entries in sled; opening it moves
    /// them into segment files and marks it format 8.
    #[tokio::test]
    async fn a_format_7_data_dir_is_converted() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let entry = |index: u64| Entry {
            log_id: LogId::new(CommittedLeaderId::new(3, 2), index),
            payload: EntryPayload::Normal(Request::new(vec![Command::DeleteCluster {
                name: format!("cluster-{index}"),
            }])),
        };
        {
            let db = sled::open(dir.path().join("db")).expect("sled");
            let meta = db.open_tree(keys::RAFT_META_TREE).expect("tree");
            meta.insert(keys::FORMAT, &7u32.to_be_bytes())
                .expect("marker");
            meta.insert(keys::VOTE, codec::encode(&Vote::new(3, 2)))
                .expect("vote");
            let log = db.open_tree(keys::LOG_TREE).expect("tree");
            for index in 1..=50 {
                log.insert(keys::log_key(index), codec::encode(&entry(index)))
                    .expect("insert");
            }
            db.flush().expect("flush");
        }
        for _ in 0..2 {
            let (mut log, _sm) = reopen(dir.path()).expect("a format 7 data dir opens");
            let entries = log.try_get_log_entries(1..=50).await.expect("read");
            assert_eq!(entries, (1..=50).map(entry).collect::<Vec<_>>());
            assert_eq!(log.read_vote().await.expect("vote"), Some(Vote::new(3, 2)));
            let state = log.get_log_state().await.expect("state");
            assert_eq!(state.last_log_id, Some(entry(50).log_id));
        }
        let db = sled::open(dir.path().join("db")).expect("sled");
        let meta = db.open_tree(keys::RAFT_META_TREE).expect("tree");
        assert_eq!(
            meta.get(keys::FORMAT).expect("get").as_deref(),
            Some(&DATA_DIR_FORMAT.to_be_bytes()[..])
        );
        assert!(db.open_tree(keys::LOG_TREE).expect("tree").is_empty());
    }

    #[tokio::test]
    async fn a_log_damaged_throughout_is_refused_not_taken_for_new() {
        let dir = written(200).await;
        garble(dir.path(), |len| 0..len);
        assert_corrupt(reopen(dir.path()));
        // And it stays refused: nothing was written into it.
        assert_corrupt(reopen(dir.path()));
    }

    /// Removes log entries behind the store's back, as damage would.
    fn remove_entries(dir: &Path, indexes: std::ops::RangeInclusive<u64>) {
        wal::drop_entries(&dir.join("wal"), indexes);
    }

    #[tokio::test]
    async fn a_log_with_a_hole_is_refused() {
        let dir = written(20).await;
        remove_entries(dir.path(), 7..=7);
        assert_corrupt(reopen(dir.path()));
    }

    /// A follower that installed a snapshot and appended after it before
    /// openraft purged the older entries has a gap the snapshot covers,
    /// and may have committed past its log's end: neither is damage. A gap
    /// or a commit index past both is.
    #[tokio::test]
    async fn what_the_snapshot_covers_the_log_need_not_hold() {
        use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
        let dir = written(20).await;
        {
            let (mut log, mut sm) = reopen(dir.path()).expect("open");
            let entries = log.try_get_log_entries(1..=12).await.expect("read");
            sm.apply(entries).await.expect("apply");
            sm.build_snapshot().await.expect("snapshot");
            log.save_committed(Some(LogId::new(CommittedLeaderId::new(1, 1), 20)))
                .await
                .expect("save committed");
            log.flush().await.expect("flush");
        }
        remove_entries(dir.path(), 3..=12);
        let (log, sm) = reopen(dir.path()).expect("a gap inside the snapshot is not damage");
        drop((log, sm));
        remove_entries(dir.path(), 16..=20);
        assert_corrupt(reopen(dir.path()));
    }

    fn entry() -> Request {
        Request::new(vec![Command::DeleteCluster {
            name: "prod".into(),
        }])
    }

    #[test]
    fn an_entry_is_its_command_level_then_its_batches() {
        let bytes = codec::encode(&entry());
        assert_eq!(bytes[..4], 1u32.to_le_bytes());
        assert_eq!(bytes[4..], codec::encode(&*entry().batches));
        let back: Request = codec::decode("entry", &bytes).unwrap();
        assert_eq!(back, entry());
    }

    #[test]
    fn an_entry_of_a_newer_level_is_refused_by_name() {
        let mut bytes = codec::encode(&entry());
        bytes[..4].copy_from_slice(&(berth_types::COMMAND_LEVEL + 1).to_le_bytes());
        let message = codec::decode::<Request>("entry", &bytes)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains(&format!(
                "needs command level {}",
                berth_types::COMMAND_LEVEL + 1
            )),
            "{message}"
        );
        assert!(message.contains("upgrade this server"), "{message}");
    }
}
