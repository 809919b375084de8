//! One control-plane server's Raft node and the two paths everything else
//! goes through: `write` (batched proposals, forwarded to the leader from a
//! follower) and `read_barrier` (linearizable reads on any server).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use berth_proto::pb;
use berth_store::rpc::{CheckIsLeaderError, ClientWriteError};
use berth_store::{LogStore, NodeId, Raft, RaftMetrics, Request, StateMachineStore, StateReader};
use berth_types::{Command, CommandOutput, ServerRole, StateError};
use openraft::error::RaftError;
use openraft::{BasicNode, ChangeMembers, ServerState};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;

use crate::error::ServerError;
use crate::network::{decode, encode, is_connect_failure, Network, Peers};

/// Commands per Raft entry at most; keeps entries well under the message
/// size limit while amortising fsync and replication over many writes.
const MAX_BATCH: usize = 256;
/// Entries proposed concurrently by one server's batcher.
const MAX_BATCHES_IN_FLIGHT: usize = 4;
const LEADER_POLL: Duration = Duration::from_millis(50);

pub type CommandResult = Result<CommandOutput, StateError>;

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_id: NodeId,
    pub advertise: String,
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub snapshot_threshold: u64,
    pub keep_logs_after_snapshot: u64,
    pub request_timeout: Duration,
}

impl NodeConfig {
    fn raft_config(&self) -> Result<openraft::Config, ServerError> {
        let config = openraft::Config {
            cluster_name: "berth".to_string(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_threshold),
            max_in_snapshot_log_to_keep: self.keep_logs_after_snapshot,
            // Entries are batches (up to 256 commands, or a thousand tasks);
            // openraft gives an AppendEntries one heartbeat interval, so a
            // few entries per payload keep it well inside that.
            max_payload_entries: 8,
            // Chunks stay far below the transport's message size limit.
            snapshot_max_chunk_size: 1024 * 1024,
            install_snapshot_timeout: 2000,
            ..Default::default()
        };
        config
            .validate()
            .map_err(|e| ServerError::FailedPrecondition(format!("raft settings: {e}")))
    }
}

/// A forwarded write's outcome as the leader reports it.
#[derive(Debug, Serialize, Deserialize)]
pub enum ForwardReply {
    Applied(Vec<CommandResult>),
    /// The receiver is not the leader: nothing was proposed.
    NotLeader,
    Failed(String),
}

type BarrierWaiter = oneshot::Sender<Result<(), ServerError>>;

/// Commands that must land in the same Raft entry: one API write, or a
/// batch a follower forwarded (all of it applied, or none).
struct Proposal {
    commands: Vec<Command>,
    reply: oneshot::Sender<Result<Vec<CommandResult>, ServerError>>,
}

#[derive(Clone)]
pub struct BerthNode {
    inner: Arc<Inner>,
}

struct Inner {
    id: NodeId,
    advertise: String,
    raft: Raft,
    state: StateReader,
    peers: Arc<Peers>,
    proposals: mpsc::Sender<Proposal>,
    barriers: mpsc::UnboundedSender<BarrierWaiter>,
    request_timeout: Duration,
}

impl BerthNode {
    pub async fn start(
        config: &NodeConfig,
        log: LogStore,
        sm: StateMachineStore,
        peers: Arc<Peers>,
    ) -> Result<Self, ServerError> {
        let raft_config = Arc::new(config.raft_config()?);
        let state = sm.reader();
        let network = Network {
            peers: peers.clone(),
        };
        let raft = Raft::new(config.node_id, raft_config, network, log, sm)
            .await
            .map_err(|e| ServerError::Internal(format!("starting raft: {e}")))?;
        let (tx, rx) = mpsc::channel(MAX_BATCH * MAX_BATCHES_IN_FLIGHT * 4);
        let (barrier_tx, barrier_rx) = mpsc::unbounded_channel();
        let node = Self {
            inner: Arc::new(Inner {
                id: config.node_id,
                advertise: config.advertise.clone(),
                raft,
                state,
                peers,
                proposals: tx,
                barriers: barrier_tx,
                request_timeout: config.request_timeout,
            }),
        };
        tokio::spawn(batch_loop(node.clone(), rx));
        tokio::spawn(barrier_loop(node.clone(), barrier_rx));
        Ok(node)
    }

    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    pub fn advertise(&self) -> &str {
        &self.inner.advertise
    }

    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    pub fn state(&self) -> &StateReader {
        &self.inner.state
    }

    pub fn peers(&self) -> &Arc<Peers> {
        &self.inner.peers
    }

    pub fn metrics(&self) -> RaftMetrics {
        self.inner.raft.metrics().borrow().clone()
    }

    /// Forms the cluster the first time its members start. Every initial
    /// member calls this with the same membership, which openraft allows;
    /// on a node that already has state it is refused and ignored.
    pub async fn initialize(
        &self,
        members: BTreeMap<NodeId, BasicNode>,
    ) -> Result<(), ServerError> {
        match self.inner.raft.initialize(members).await {
            Ok(()) => {
                tracing::info!("initialized a new cluster");
                Ok(())
            }
            Err(RaftError::APIError(e)) => {
                tracing::debug!(reason = %e, "not initializing: node already has state");
                Ok(())
            }
            Err(RaftError::Fatal(e)) => Err(ServerError::Internal(e.to_string())),
        }
    }

    /// Proposes one command; concurrent callers share Raft entries.
    pub async fn write(&self, command: Command) -> Result<CommandOutput, ServerError> {
        let mut results = self.propose(vec![command]).await?;
        match results.pop() {
            Some(result) if results.is_empty() => Ok(result?),
            _ => Err(ServerError::OutcomeUnknown(
                "the leader returned no result for the write".into(),
            )),
        }
    }

    /// Queues commands for the batcher, which puts them in one entry
    /// together with whatever else is waiting.
    async fn propose(&self, commands: Vec<Command>) -> Result<Vec<CommandResult>, ServerError> {
        let needed = commands.iter().map(Command::level).max().unwrap_or(1);
        if needed > 1 {
            crate::upgrade::check_members_support(self, needed).await?;
        }
        let (reply, rx) = oneshot::channel();
        self.inner
            .proposals
            .send(Proposal { commands, reply })
            .await
            .map_err(|_| ServerError::ShuttingDown)?;
        rx.await.map_err(|_| ServerError::ShuttingDown)?
    }

    /// Proposes a batch as one entry, here or on the leader. Retries only
    /// where nothing can have been applied, so a retry never duplicates.
    pub async fn write_batch(
        &self,
        commands: Vec<Command>,
    ) -> Result<Vec<CommandResult>, ServerError> {
        let deadline = Instant::now() + self.inner.request_timeout;
        let request = Request::new(commands);
        loop {
            let forward_to = match self.inner.raft.client_write(request.clone()).await {
                Ok(response) => return Ok(response.data.results),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(fwd))) => fwd
                    .leader_id
                    .zip(fwd.leader_node)
                    .filter(|(id, _)| *id != self.inner.id),
                Err(RaftError::APIError(e)) => return Err(ServerError::internal(e)),
                Err(RaftError::Fatal(_)) => return Err(ServerError::ShuttingDown),
            };
            if let Some((leader, node)) = forward_to {
                match self.forward(&node.addr, &request.commands).await {
                    Ok(Some(results)) => return Ok(results),
                    Ok(None) => tracing::debug!(leader, "forward target is no longer leader"),
                    Err(e) => return Err(e),
                }
            }
            if Instant::now() >= deadline {
                return Err(ServerError::NoLeader(
                    "gave up waiting for a leader to accept the write".into(),
                ));
            }
            tokio::time::sleep(LEADER_POLL).await;
        }
    }

    /// `Ok(None)` means the write was certainly not applied (not sent, or the
    /// target was not leader) and may be retried.
    async fn forward(
        &self,
        leader_addr: &str,
        commands: &[Command],
    ) -> Result<Option<Vec<CommandResult>>, ServerError> {
        let mut client = self
            .inner
            .peers
            .raft_client(leader_addr)
            .map_err(ServerError::Internal)?;
        let data = encode(&commands).map_err(ServerError::internal)?;
        let mut request = tonic::Request::new(pb::RaftPayload { data });
        request.set_timeout(self.inner.request_timeout);
        match client.forward(request).await {
            Ok(reply) => match decode::<ForwardReply>(&reply.into_inner().data) {
                Ok(ForwardReply::Applied(results)) => Ok(Some(results)),
                Ok(ForwardReply::NotLeader) => Ok(None),
                Ok(ForwardReply::Failed(e)) => Err(ServerError::OutcomeUnknown(e)),
                Err(e) => Err(ServerError::OutcomeUnknown(format!(
                    "bad reply from leader: {e}"
                ))),
            },
            Err(status) if is_connect_failure(&status) => Ok(None),
            Err(status) => Err(ServerError::OutcomeUnknown(format!(
                "forwarding to the leader at {leader_addr} failed: {}",
                status.message()
            ))),
        }
    }

    /// Serves a write forwarded by a follower. It goes through this
    /// server's batcher, so forwarded batches share entries with each other
    /// and with local writes, but stays whole in one entry. A server that is
    /// not leader says so rather than forwarding it further.
    pub async fn accept_forwarded(&self, commands: Vec<Command>) -> ForwardReply {
        if !self.is_leader() {
            return ForwardReply::NotLeader;
        }
        // The batcher hands every proposal exactly one result per command.
        match self.propose(commands).await {
            Ok(results) => ForwardReply::Applied(results),
            Err(e) => ForwardReply::Failed(e.to_string()),
        }
    }

    /// Returns once this server's state reflects every write acknowledged
    /// anywhere before the call (a linearizable read point). Concurrent
    /// callers share one barrier round.
    pub async fn read_barrier(&self) -> Result<(), ServerError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .barriers
            .send(tx)
            .map_err(|_| ServerError::ShuttingDown)?;
        rx.await.map_err(|_| ServerError::ShuttingDown)?
    }

    /// A linearizable read: passes a read barrier, then runs `f` on the
    /// applied state under its read lock.
    pub async fn read<T>(
        &self,
        f: impl FnOnce(&berth_types::State) -> T,
    ) -> Result<T, ServerError> {
        self.read_barrier().await?;
        let applied = self.inner.state.read();
        Ok(f(&applied.state))
    }

    async fn read_barrier_round(&self) -> Result<(), ServerError> {
        let deadline = Instant::now() + self.inner.request_timeout;
        loop {
            let leader = match self.inner.raft.ensure_linearizable().await {
                Ok(_) => return Ok(()),
                Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(fwd))) => fwd
                    .leader_id
                    .zip(fwd.leader_node)
                    .filter(|(id, _)| *id != self.inner.id),
                Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))) => None,
                Err(RaftError::Fatal(_)) => return Err(ServerError::ShuttingDown),
            };
            if let Some((_, node)) = leader {
                if let Ok(index) = self.leader_read_index(&node.addr).await {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    return self
                        .inner
                        .raft
                        .wait(Some(remaining))
                        .applied_index_at_least(Some(index), "linearizable read")
                        .await
                        .map(|_| ())
                        .map_err(|e| {
                            ServerError::Unavailable(format!("catching up for a read: {e}"))
                        });
                }
            }
            if Instant::now() >= deadline {
                return Err(ServerError::NoLeader(
                    "cannot confirm a leader for a consistent read".into(),
                ));
            }
            tokio::time::sleep(LEADER_POLL).await;
        }
    }

    async fn leader_read_index(&self, leader_addr: &str) -> Result<u64, ServerError> {
        let mut client = self
            .inner
            .peers
            .raft_client(leader_addr)
            .map_err(ServerError::Internal)?;
        let mut request = tonic::Request::new(pb::ReadIndexRequest {});
        request.set_timeout(self.inner.request_timeout);
        let reply = client
            .read_index(request)
            .await
            .map_err(|s| ServerError::Unavailable(s.message().to_string()))?;
        Ok(reply.into_inner().read_index)
    }

    /// The index a follower must reach before reading (leader side).
    pub async fn read_index(&self) -> Result<u64, ServerError> {
        match self.inner.raft.get_read_log_id().await {
            Ok((read_log_id, _)) => Ok(read_log_id.map_or(0, |id| id.index)),
            Err(RaftError::Fatal(_)) => Err(ServerError::ShuttingDown),
            Err(RaftError::APIError(e)) => Err(ServerError::Unavailable(e.to_string())),
        }
    }

    /// The current leader, waiting a while for an election to finish.
    pub async fn leader(&self) -> Result<(NodeId, String), ServerError> {
        let deadline = Instant::now() + self.inner.request_timeout;
        loop {
            let metrics = self.metrics();
            if let Some(leader) = metrics.current_leader {
                if let Some(node) = metrics.membership_config.membership().get_node(&leader) {
                    return Ok((leader, node.addr.clone()));
                }
            }
            if Instant::now() >= deadline {
                return Err(ServerError::NoLeader("no leader elected".into()));
            }
            tokio::time::sleep(LEADER_POLL).await;
        }
    }

    /// A leader that has applied an entry of its own term has applied every
    /// entry committed before it, so its state is as fresh as any
    /// acknowledged write.
    pub fn has_applied_own_term(&self) -> bool {
        // Borrowed, not cloned: this runs on every authenticated call.
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow();
        m.state == ServerState::Leader
            && m.last_applied
                .is_some_and(|id| id.leader_id.term == m.current_term)
    }

    pub fn is_leader(&self) -> bool {
        // Borrowed, not cloned: every forwarded batch asks.
        self.inner.raft.metrics().borrow().state == ServerState::Leader
    }

    /// Adds a server as a learner, waits for it to catch up, then (unless
    /// `learner_only`) promotes it to voter. Leader only.
    pub async fn add_server(
        &self,
        id: NodeId,
        addr: String,
        learner_only: bool,
    ) -> Result<(), ServerError> {
        let raft = &self.inner.raft;
        let membership_err = |e: RaftError<NodeId, ClientWriteError>| match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => ServerError::Unavailable(
                "leadership changed during the membership change; retry".into(),
            ),
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                ServerError::FailedPrecondition(e.to_string())
            }
            RaftError::Fatal(_) => ServerError::ShuttingDown,
        };
        let catch_up = tokio::time::timeout(
            Duration::from_secs(120),
            raft.add_learner(id, BasicNode::new(addr.clone()), true),
        )
        .await
        .map_err(|_| {
            ServerError::Unavailable(format!(
                "server {id} at {addr} was added as a learner but has not caught up in 120 s; is it running? run `berth server add` again to promote it"
            ))
        })?;
        catch_up.map_err(membership_err)?;
        if !learner_only {
            raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                .await
                .map_err(membership_err)?;
        }
        // Answer once this server's own view shows the change, so the
        // membership a caller reads back is the new one.
        let _ = raft
            .wait(Some(Duration::from_secs(5)))
            .metrics(
                |m| {
                    let membership = m.membership_config.membership();
                    membership.get_node(&id).is_some()
                        && (learner_only || membership.voter_ids().any(|v| v == id))
                },
                "membership shows the added server",
            )
            .await;
        tracing::info!(node_id = id, %addr, learner_only, "server added");
        Ok(())
    }

    /// Removes a server from the membership entirely. Leader only.
    pub async fn remove_server(&self, id: NodeId) -> Result<(), ServerError> {
        let metrics = self.metrics();
        let membership = metrics.membership_config.membership();
        if membership.get_node(&id).is_none() {
            return Err(ServerError::NotFound(format!(
                "server {id} is not a member"
            )));
        }
        let is_voter = membership.voter_ids().any(|v| v == id);
        let change = if is_voter {
            if membership.voter_ids().count() == 1 {
                return Err(ServerError::FailedPrecondition(
                    "cannot remove the last voting server".into(),
                ));
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        self.inner
            .raft
            .change_membership(change, false)
            .await
            .map_err(|e| match e {
                RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
                    ServerError::Unavailable("leadership changed; retry".into())
                }
                RaftError::APIError(e) => ServerError::FailedPrecondition(e.to_string()),
                RaftError::Fatal(_) => ServerError::ShuttingDown,
            })?;
        let _ = self
            .inner
            .raft
            .wait(Some(Duration::from_secs(5)))
            .metrics(
                |m| m.membership_config.membership().get_node(&id).is_none(),
                "membership no longer shows the removed server",
            )
            .await;
        tracing::info!(node_id = id, "server removed");
        Ok(())
    }

    /// This server's own view, for status queries.
    pub fn local_status(&self) -> pb::NodeStatusResponse {
        let m = self.metrics();
        pb::NodeStatusResponse {
            node_id: self.inner.id,
            role: server_role(m.state).as_str().to_string(),
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: m.last_applied.map_or(0, |id| id.index),
            leader_id: m.current_leader,
            advertise_addr: self.inner.advertise.clone(),
            snapshot_index: m.snapshot.map_or(0, |id| id.index),
            command_level: berth_types::COMMAND_LEVEL,
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// Resolves once Raft has stopped on an error (a storage failure such as
    /// a full or failing disk), with that error; never after a normal
    /// shutdown.
    pub async fn fatal(&self) -> String {
        let mut metrics = self.inner.raft.metrics();
        loop {
            if let Err(fatal) = &metrics.borrow_and_update().running_state {
                if !matches!(fatal, openraft::error::Fatal::Stopped) {
                    return fatal.to_string();
                }
            }
            if metrics.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Raft runs (it has not stopped on an error) and knows a leader.
    pub fn is_ready(&self) -> bool {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow();
        m.running_state.is_ok() && m.current_leader.is_some()
    }

    pub async fn shutdown(&self) {
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}

/// A Raft state in the API's words.
pub fn server_role(state: ServerState) -> ServerRole {
    match state {
        ServerState::Leader => ServerRole::Leader,
        ServerState::Follower => ServerRole::Follower,
        ServerState::Learner => ServerRole::Learner,
        ServerState::Candidate => ServerRole::Candidate,
        ServerState::Shutdown => ServerRole::Shutdown,
    }
}

/// Runs read barriers one round at a time. Every waiter in a round was
/// queued before the round started, so the round's read index is at least
/// the commit index at each waiter's arrival: one leader confirmation serves
/// them all (etcd's read-index batching).
async fn barrier_loop(node: BerthNode, mut rx: mpsc::UnboundedReceiver<BarrierWaiter>) {
    while let Some(first) = rx.recv().await {
        let mut waiters = vec![first];
        while let Ok(next) = rx.try_recv() {
            waiters.push(next);
        }
        let result = node.read_barrier_round().await;
        for waiter in waiters {
            let _ = waiter.send(result.clone());
        }
    }
}

/// Collects proposals into batches and proposes a few batches at a time.
/// A proposal is never split: one that does not fit waits for the next batch.
async fn batch_loop(node: BerthNode, mut rx: mpsc::Receiver<Proposal>) {
    let in_flight = Arc::new(Semaphore::new(MAX_BATCHES_IN_FLIGHT));
    let mut carried: Option<Proposal> = None;
    loop {
        let first = match carried.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        // While waiting for a permit more proposals queued up; take them.
        let (batch, size, left_over) = fill_batch(first, &mut rx, MAX_BATCH);
        carried = left_over;
        let node = node.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut commands = Vec::with_capacity(size);
            let mut replies = Vec::with_capacity(batch.len());
            for proposal in batch {
                replies.push((proposal.reply, proposal.commands.len()));
                commands.extend(proposal.commands);
            }
            match node.write_batch(commands).await {
                Ok(results) if results.len() == size => {
                    let mut results = results.into_iter();
                    for (reply, count) in replies {
                        let _ = reply.send(Ok(results.by_ref().take(count).collect()));
                    }
                }
                Ok(results) => {
                    let e = format!(
                        "leader returned {} results for {size} commands",
                        results.len()
                    );
                    for (reply, _) in replies {
                        let _ = reply.send(Err(ServerError::OutcomeUnknown(e.clone())));
                    }
                }
                Err(e) => {
                    for (reply, _) in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}

/// `first` plus what is queued, up to `max` commands in all, never splitting
/// a proposal (`first` goes even when it alone is larger). Returns the batch,
/// its command count and the queued proposal that did not fit, if any.
fn fill_batch(
    first: Proposal,
    rx: &mut mpsc::Receiver<Proposal>,
    max: usize,
) -> (Vec<Proposal>, usize, Option<Proposal>) {
    let mut size = first.commands.len();
    let mut batch = vec![first];
    while size < max {
        match rx.try_recv() {
            Ok(p) if size + p.commands.len() <= max => {
                size += p.commands.len();
                batch.push(p);
            }
            Ok(p) => return (batch, size, Some(p)),
            Err(_) => break,
        }
    }
    (batch, size, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proposal(commands: usize) -> Proposal {
        let (reply, _) = oneshot::channel();
        Proposal {
            commands: (0..commands)
                .map(|i| Command::DeleteCluster {
                    name: format!("c{i}"),
                })
                .collect(),
            reply,
        }
    }

    fn sizes(batch: &[Proposal]) -> Vec<usize> {
        batch.iter().map(|p| p.commands.len()).collect()
    }

    #[tokio::test]
    async fn batches_take_whole_proposals_up_to_the_limit() {
        let (tx, mut rx) = mpsc::channel(16);
        for n in [100, 100, 10, 300, 5] {
            tx.send(proposal(n)).await.expect("queue");
        }
        let first = rx.recv().await.expect("first");
        let (batch, size, carried) = fill_batch(first, &mut rx, 256);
        assert_eq!((sizes(&batch), size), (vec![100, 100, 10], 210));
        // 300 does not fit: it is carried to the next batch, alone, whole.
        let carried = carried.expect("a proposal that did not fit");
        let (batch, size, carried) = fill_batch(carried, &mut rx, 256);
        assert_eq!((sizes(&batch), size), (vec![300], 300));
        assert!(carried.is_none());
        let first = rx.recv().await.expect("last");
        let (batch, _, carried) = fill_batch(first, &mut rx, 256);
        assert_eq!(sizes(&batch), vec![5]);
        assert!(carried.is_none());
    }
}
