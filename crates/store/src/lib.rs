//! Raft storage for Berth: the openraft type configuration and every alias
//! the rest of the server uses, the Raft log and vote in sled, and the state
//! machine, also persisted in sled.
//!
//! One sled database per server holds everything, so a single flush makes
//! log, vote and state machine durable together.

mod codec;
mod keys;
mod log_store;
mod snapshot_file;
mod state_machine;

use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use berth_types::{Command, CommandOutput, StateError};

pub use log_store::LogStore;
pub use state_machine::{StateMachineStore, StateReader};

/// The payload of one Raft entry: every command a proposer batched together.
/// Batching amortises one fsync and one replication round over many writes.
///
/// The commands are shared, not owned: openraft reads every entry back once
/// to apply it and once per follower to replicate it, and a proposer keeps
/// them for a retry, so cloning an entry must not copy its commands. On disk
/// and on the wire this is the same as a plain `Vec<Command>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub commands: Arc<Vec<Command>>,
}

impl Request {
    pub fn new(commands: Vec<Command>) -> Self {
        Self {
            commands: Arc::new(commands),
        }
    }
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Request({} commands)", self.commands.len())
    }
}

/// One result per command of the entry, in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub results: Vec<Result<CommandOutput, StateError>>,
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
    #[error("database error: {0}")]
    Sled(#[from] sled::Error),
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
}

/// Opens (or creates) a server's storage under `dir`: the sled database
/// (Raft log, vote, and the state of older versions) in `dir/db`, the newest
/// state machine snapshot in `dir/snapshots`.
pub fn open(dir: &Path) -> Result<(LogStore, StateMachineStore), StoreError> {
    let db_dir = dir.join("db");
    let db = sled::Config::new()
        .path(&db_dir)
        // Durability comes from explicit flushes at the points Raft needs
        // them; the periodic background flush only adds fsyncs.
        .flush_every_ms(None)
        .open()
        .map_err(|source| StoreError::Open {
            path: db_dir.display().to_string(),
            source,
        })?;
    let log = LogStore::open(&db)?;
    let sm = StateMachineStore::open(&db, &dir.join("snapshots"))?;
    Ok((log, sm))
}
