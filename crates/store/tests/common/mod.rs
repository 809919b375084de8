//! What the store's integration tests share: a network for one-server
//! clusters, and reopening a data dir once the previous handles let go.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use berth_store::rpc::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotError, InstallSnapshotRequest,
    InstallSnapshotResponse, RaftError, VoteRequest, VoteResponse,
};
use berth_store::{Node, NodeId, Raft, TypeConfig};
use openraft::error::{NetworkError, RPCError};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};

/// A single server never calls its peers; any call is a test failure.
pub struct NoPeers;

fn no_peer<E: std::error::Error>() -> RPCError<NodeId, Node, E> {
    RPCError::Network(NetworkError::new(&std::io::Error::other(
        "a single-server cluster has no peers",
    )))
}

impl RaftNetwork<TypeConfig> for NoPeers {
    async fn append_entries(
        &mut self,
        _: AppendEntriesRequest,
        _: RPCOption,
    ) -> Result<AppendEntriesResponse, RPCError<NodeId, Node, RaftError>> {
        Err(no_peer())
    }

    async fn install_snapshot(
        &mut self,
        _: InstallSnapshotRequest,
        _: RPCOption,
    ) -> Result<InstallSnapshotResponse, RPCError<NodeId, Node, RaftError<InstallSnapshotError>>>
    {
        Err(no_peer())
    }

    async fn vote(
        &mut self,
        _: VoteRequest,
        _: RPCOption,
    ) -> Result<VoteResponse, RPCError<NodeId, Node, RaftError>> {
        Err(no_peer())
    }
}

impl RaftNetworkFactory<TypeConfig> for NoPeers {
    type Network = NoPeers;
    async fn new_client(&mut self, _: NodeId, _: &Node) -> NoPeers {
        NoPeers
    }
}

/// Retries while the previous incarnation's tasks, which openraft ends
/// after `shutdown` returns, still hold sled's lock on the directory.
pub async fn retry_locked<T, E: std::fmt::Debug>(mut open: impl FnMut() -> Result<T, E>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match open() {
            Ok(v) => return v,
            Err(e)
                if std::time::Instant::now() < deadline && format!("{e:?}").contains("Locked") =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("open: {e:?}"),
        }
    }
}

/// Starts node `id` on the data dir as it is (no `initialize`), with a
/// short election timeout, and waits until it leads.
pub async fn start_as(dir: &std::path::Path, id: NodeId) -> (Raft, berth_store::StateReader) {
    let (log, sm) = retry_locked(|| berth_store::open(dir)).await;
    let reader = sm.reader();
    let raft = Raft::new(id, Arc::new(config()), NoPeers, log, sm)
        .await
        .expect("start raft");
    raft.wait(Some(Duration::from_secs(10)))
        .state(openraft::ServerState::Leader, "leader")
        .await
        .expect("becomes leader");
    (raft, reader)
}

pub fn config() -> openraft::Config {
    openraft::Config {
        heartbeat_interval: 50,
        election_timeout_min: 150,
        election_timeout_max: 300,
        // Only the snapshot the test asks for.
        snapshot_policy: openraft::SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: 0,
        ..Default::default()
    }
    .validate()
    .expect("config")
}
