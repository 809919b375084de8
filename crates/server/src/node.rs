//! One control-plane server's Raft node and the two paths everything else
//! goes through: `write` (batched proposals, forwarded to the leader from a
//! follower) and `read_barrier` (linearizable reads on any server).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_proto::pb;
use berth_store::rpc::{CheckIsLeaderError, ClientWriteError};
use berth_store::{
    ActorRun, Batch, BatchId, BatchOutcome, LogStore, NodeId, Origin, Raft, RaftMetrics, Request,
    StateMachineStore, StateReader,
};
use berth_types::journal::Actor;
use berth_types::{Command, CommandOutput, ServerRole};
use openraft::error::RaftError;
use openraft::{BasicNode, ChangeMembers, ServerState};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;

use crate::error::ServerError;
use crate::network::{decode, encode, CallError, Network, PeerRpc, Peers, Transport};

/// Commands per Raft entry at most; keeps entries well under the message
/// size limit while amortising fsync and replication over many writes.
const MAX_BATCH: usize = 256;
/// Encoded bytes per Raft entry at most, and so per write. With openraft's
/// `max_payload_entries` of 2 an AppendEntries stays at an eighth of the
/// transport's message limit, however large the commands are.
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Entries proposed concurrently by one server's batcher. Two, not more:
/// writes that wait for a slot join the next entry, and each entry costs
/// every server an append, an fsync and a round of replication whatever it
/// holds. Against four, two put 5 writes in an entry instead of 3 at 16
/// clients and 47 instead of 28 at 256, for 7-36% more writes a second
/// and half the p99 (`berth-bench raft`, docs/benchmarks.md); one was no
/// better than two at 256 clients and slower for a lone client.
const MAX_BATCHES_IN_FLIGHT: usize = 2;
const LEADER_POLL: Duration = Duration::from_millis(50);
/// The least a forward waits for the leader's answer before sending again.
const MIN_FORWARD_ATTEMPT: Duration = Duration::from_millis(500);

pub use berth_store::CommandResult;

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
            // Entries are batches (up to 256 commands, or a thousand tasks,
            // up to MAX_BATCH_BYTES); openraft gives an AppendEntries one
            // heartbeat interval (100 ms by default), which covers the
            // follower decoding, appending and syncing the whole payload, and
            // a heartbeat queued behind it. With 8 entries a payload of
            // placement batches ran past that under load (berth-bench tasks,
            // docs/benchmarks.md): 2 keep it well inside.
            max_payload_entries: 2,
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
    /// One outcome per forwarded batch.
    Applied(Vec<BatchOutcome>),
    /// The receiver is not the leader: nothing was proposed.
    NotLeader,
    Failed(String),
}

type BarrierWaiter = oneshot::Sender<Result<(), ServerError>>;

/// Commands that must land in the same Raft entry: one API write, or the
/// batches a follower forwarded (each applied whole, or not at all).
struct Proposal {
    work: Work,
    /// Encoded size of the work's commands.
    bytes: usize,
    /// One outcome per batch: a local write has one (its own commands).
    reply: oneshot::Sender<Result<Vec<BatchOutcome>, ServerError>>,
}

enum Work {
    /// Commands of one of this server's callers (or its own controllers);
    /// the batcher gives them an id.
    Local(Vec<Command>, Actor),
    /// Batches from another server, with that server's ids.
    Forwarded(Vec<Batch>),
}

impl Work {
    fn commands(&self) -> usize {
        match self {
            Work::Local(commands, _) => commands.len(),
            Work::Forwarded(batches) => batches.iter().map(|b| b.commands.len()).sum(),
        }
    }

    fn all_commands(&self) -> Vec<&Command> {
        match self {
            Work::Local(commands, _) => commands.iter().collect(),
            Work::Forwarded(batches) => batches.iter().flat_map(|b| b.commands.iter()).collect(),
        }
    }
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
    transport: Arc<dyn Transport>,
    /// Random per process, so that batch ids never repeat across restarts.
    session: u64,
    next_seq: AtomicU64,
    proposals: mpsc::Sender<Proposal>,
    /// Entries being proposed at once (see `batch_loop`).
    entry_slots: Arc<Semaphore>,
    barriers: mpsc::UnboundedSender<BarrierWaiter>,
    request_timeout: Duration,
    /// When a quorum last acknowledged this server as leader, by its own
    /// clock, and in which term (see `holds_lease`).
    quorum_acked: std::sync::Mutex<Option<(u64, Instant)>>,
    /// How long after that acknowledgement no other leader can exist.
    lease: Duration,
    /// Set once this leader has started handing leadership over: the
    /// successor is elected without waiting out the lease, so local reads
    /// stop first.
    handing_over: std::sync::atomic::AtomicBool,
    /// Writes between the handover check and openraft's answer: the
    /// successor must hold every entry, including ones still being appended.
    writes_in_flight: std::sync::atomic::AtomicUsize,
    /// Set while this server, rejoining with an empty data dir, catches up
    /// (see `rejoin`): it neither votes nor stands for election.
    votes_held: std::sync::atomic::AtomicBool,
    metrics: Arc<crate::metrics::ServerMetrics>,
    /// The newest command level each member has reported (see
    /// `upgrade::check_members_support`).
    member_levels: crate::upgrade::KnownLevels,
}

impl BerthNode {
    pub async fn start(
        config: &NodeConfig,
        log: LogStore,
        sm: StateMachineStore,
        peers: Arc<Peers>,
        transport: Arc<dyn Transport>,
    ) -> Result<Self, ServerError> {
        Self::start_on(config, log, sm, peers, transport, None).await
    }

    /// As `start`, with openraft's tasks (its core, replication streams,
    /// state machine worker, log flushes) on `raft_runtime` when given:
    /// openraft spawns them on the runtime `Raft::new` runs on.
    pub async fn start_on(
        config: &NodeConfig,
        log: LogStore,
        sm: StateMachineStore,
        peers: Arc<Peers>,
        transport: Arc<dyn Transport>,
        raft_runtime: Option<&tokio::runtime::Handle>,
    ) -> Result<Self, ServerError> {
        let raft_config = Arc::new(config.raft_config()?);
        let state = sm.reader();
        let metrics = Arc::new(crate::metrics::ServerMetrics::new());
        let observer = Arc::new(crate::metrics::StoreMetrics(metrics.clone()));
        log.set_observer(observer.clone());
        sm.set_observer(observer);
        let network = Network {
            transport: transport.clone(),
        };
        let node_id = config.node_id;
        let raft = match raft_runtime {
            Some(runtime) => runtime
                .spawn(Raft::new(node_id, raft_config, network, log, sm))
                .await
                .map_err(|e| ServerError::Internal(format!("starting raft: {e}")))?,
            None => Raft::new(node_id, raft_config, network, log, sm).await,
        }
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
                transport,
                session: rand::random(),
                next_seq: AtomicU64::new(0),
                proposals: tx,
                entry_slots: Arc::new(Semaphore::new(MAX_BATCHES_IN_FLIGHT)),
                barriers: barrier_tx,
                request_timeout: config.request_timeout,
                quorum_acked: std::sync::Mutex::new(None),
                // Followers refuse to vote for anyone else until openraft's
                // lease (the maximum election timeout) has passed since the
                // leader's heartbeat reached them. The minimum leaves a
                // quarter of it for clock rate differences and for the delay
                // between openraft's measurement and `watch_lease` seeing it.
                lease: Duration::from_millis(config.election_timeout_min_ms),
                handing_over: std::sync::atomic::AtomicBool::new(false),
                writes_in_flight: std::sync::atomic::AtomicUsize::new(0),
                votes_held: std::sync::atomic::AtomicBool::new(false),
                metrics,
                member_levels: Default::default(),
            }),
        };
        tokio::spawn(batch_loop(node.clone(), rx));
        tokio::spawn(barrier_loop(node.clone(), barrier_rx));
        tokio::spawn(watch_lease(node.clone()));
        tokio::spawn(count_leader_changes(node.clone()));
        Ok(node)
    }

    pub fn server_metrics(&self) -> &Arc<crate::metrics::ServerMetrics> {
        &self.inner.metrics
    }

    /// The metrics text for one scrape.
    pub fn render_metrics(&self, agent_sessions: usize) -> String {
        let raft = self.metrics();
        let applied = self.inner.state.read();
        self.inner
            .metrics
            .render(&raft, &applied.state, agent_sessions)
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

    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.inner.transport
    }

    fn next_batch_id(&self) -> BatchId {
        BatchId {
            session: self.inner.session,
            seq: self.inner.next_seq.fetch_add(1, Ordering::Relaxed),
        }
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
        let actor = self.caller();
        let mut outcomes = self.propose(Work::Local(vec![command], actor)).await?;
        let results = match outcomes.pop() {
            Some(outcome) if outcomes.is_empty() => outcome.into_results().ok_or_else(|| {
                ServerError::OutcomeUnknown(
                    "the write was retried too late to tell whether it was applied".into(),
                )
            })?,
            _ => {
                return Err(ServerError::OutcomeUnknown(
                    "the leader returned no result for the write".into(),
                ))
            }
        };
        match <[CommandResult; 1]>::try_from(results) {
            Ok([result]) => Ok(result?),
            Err(_) => Err(ServerError::OutcomeUnknown(
                "the leader returned no result for the write".into(),
            )),
        }
    }

    pub(crate) fn member_levels(&self) -> &crate::upgrade::KnownLevels {
        &self.inner.member_levels
    }

    /// Who the commands being proposed are for: the caller of the call
    /// being served, or else this server (its controllers).
    fn caller(&self) -> Actor {
        crate::audit::caller_for_proposal().unwrap_or_else(|| Actor::server(self.id()))
    }

    /// Queues work for the batcher, which puts it in one entry together
    /// with whatever else is waiting.
    async fn propose(&self, work: Work) -> Result<Vec<BatchOutcome>, ServerError> {
        let commands = work.all_commands();
        let bytes = encoded_size(&commands)?;
        let needed = commands.iter().map(|c| c.level()).max().unwrap_or(1);
        if needed > 1 {
            crate::upgrade::check_members_support(self, needed).await?;
        }
        let (reply, rx) = oneshot::channel();
        let proposal = Proposal { work, bytes, reply };
        match self.idle_entry_slot() {
            // Nothing to batch with: proposed from this task, which saves
            // the hand-offs to the batcher's tasks and back (a lone
            // client's write latency is mostly such hand-offs).
            Some(slot) => propose_entry(self.clone(), vec![proposal], slot).await,
            None => self
                .inner
                .proposals
                .send(proposal)
                .await
                .map_err(|_| ServerError::ShuttingDown)?,
        }
        rx.await.map_err(|_| ServerError::ShuttingDown)?
    }

    /// A slot for an entry when no proposal is queued and no entry is being
    /// proposed; `None` while there is anything a proposal could join.
    fn idle_entry_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let queued = self.inner.proposals.max_capacity() - self.inner.proposals.capacity();
        let slots = &self.inner.entry_slots;
        if queued > 0 || slots.available_permits() < MAX_BATCHES_IN_FLIGHT {
            return None;
        }
        slots.clone().try_acquire_owned().ok()
    }

    /// Proposes `commands` as one batch in an entry of their own (all
    /// applied, or none), here or on the leader.
    pub async fn write_batch(
        &self,
        commands: Vec<Command>,
    ) -> Result<Vec<CommandResult>, ServerError> {
        let actor = self.caller();
        let batch = Batch {
            id: Some(self.next_batch_id()),
            origin: Origin {
                proposer: self.id(),
                at_ms: crate::api::now_ms(),
                actors: vec![ActorRun {
                    commands: u32::try_from(commands.len()).unwrap_or(u32::MAX),
                    actor,
                }],
            },
            commands,
        };
        let mut outcomes = self.write_batches(vec![batch]).await?;
        match outcomes.pop() {
            Some(outcome) if outcomes.is_empty() => outcome.into_results().ok_or_else(|| {
                ServerError::OutcomeUnknown(
                    "the write was retried too late to tell whether it was applied".into(),
                )
            }),
            _ => Err(ServerError::OutcomeUnknown(
                "the leader returned no result for the write".into(),
            )),
        }
    }

    /// Proposes batches as one entry, here or on the leader; one outcome per
    /// batch. A forward that fails where the leader may have acted is sent
    /// again under the same batch ids (the state machine applies an id
    /// once), until the request timeout.
    async fn write_batches(&self, batches: Vec<Batch>) -> Result<Vec<BatchOutcome>, ServerError> {
        let deadline = Instant::now() + self.inner.request_timeout;
        let request = Request::batches(batches);
        let mut unknown: Option<String> = None;
        loop {
            // A leader handing over proposes nothing more, so that its
            // successor's log stays as long as its own and wins the vote;
            // once the successor leads, the write is forwarded to it.
            while self.inner.handing_over.load(Ordering::SeqCst)
                && self.is_leader()
                && Instant::now() < deadline
            {
                tokio::time::sleep(HANDOVER_POLL).await;
            }
            let written = {
                // Counted down on drop too: a caller that goes away mid-write
                // must not leave a handover waiting for it.
                let _in_flight = InFlight::count(&self.inner.writes_in_flight);
                self.inner.raft.client_write(request.clone()).await
            };
            let forward_to = match written {
                Ok(response) => return Ok(response.data.outcomes),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(fwd))) => fwd
                    .leader_id
                    .zip(fwd.leader_node)
                    .filter(|(id, _)| *id != self.inner.id),
                Err(RaftError::APIError(e)) => return Err(ServerError::internal(e)),
                Err(RaftError::Fatal(_)) => return Err(ServerError::ShuttingDown),
            };
            if let Some((leader, node)) = forward_to {
                // Short enough to leave time for a repeat (which the batch
                // ids make safe) within the request timeout.
                let attempt = (self.inner.request_timeout / 4)
                    .max(MIN_FORWARD_ATTEMPT)
                    .min(deadline.saturating_duration_since(Instant::now()))
                    .max(Duration::from_millis(1));
                match self.forward(&node.addr, &request.batches, attempt).await {
                    Ok(Some(outcomes)) => return Ok(outcomes),
                    Ok(None) => tracing::debug!(leader, "forward not accepted; nothing applied"),
                    Err(e) => {
                        tracing::info!(leader, error = %e, "forwarded write's outcome unknown; sending it again under the same batch ids");
                        unknown = Some(e);
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(match unknown {
                    Some(e) => ServerError::OutcomeUnknown(format!(
                        "forwarding to the leader failed and no retry got an answer in time: {e}"
                    )),
                    None => ServerError::NoLeader(
                        "gave up waiting for a leader to accept the write".into(),
                    ),
                });
            }
            tokio::time::sleep(LEADER_POLL).await;
        }
    }

    /// `Ok(None)`: certainly not applied (not sent, or the target was not
    /// leader). `Err`: the leader may have applied it.
    async fn forward(
        &self,
        leader_addr: &str,
        batches: &[Batch],
        timeout: Duration,
    ) -> Result<Option<Vec<BatchOutcome>>, String> {
        let data = encode(&batches).map_err(|e| format!("encoding the batches: {e}"))?;
        let reply = self
            .inner
            .transport
            .call(leader_addr, PeerRpc::Forward, data, timeout)
            .await;
        match reply {
            Ok(bytes) => match decode::<ForwardReply>(&bytes) {
                Ok(ForwardReply::Applied(outcomes)) if outcomes.len() == batches.len() => {
                    Ok(Some(outcomes))
                }
                Ok(ForwardReply::Applied(outcomes)) => Err(format!(
                    "the leader returned {} outcomes for {} batches",
                    outcomes.len(),
                    batches.len()
                )),
                Ok(ForwardReply::NotLeader) => Ok(None),
                Ok(ForwardReply::Failed(e)) => Err(e),
                Err(e) => Err(format!("bad reply from the leader: {e}")),
            },
            Err(CallError::NotSent(e)) => {
                tracing::debug!(%leader_addr, error = %e, "forward not sent");
                Ok(None)
            }
            Err(CallError::Unknown(e)) => Err(format!(
                "forwarding to the leader at {leader_addr} failed: {e}"
            )),
        }
    }

    /// Serves batches forwarded by a follower. They go through this server's
    /// batcher, so they share entries with each other and with local writes,
    /// but stay whole in one entry. A server that is not leader says so
    /// rather than forwarding them further.
    pub async fn accept_forwarded(&self, batches: Vec<Batch>) -> ForwardReply {
        if !self.is_leader() {
            return ForwardReply::NotLeader;
        }
        let count = batches.len();
        match self.propose(Work::Forwarded(batches)).await {
            Ok(outcomes) if outcomes.len() == count => ForwardReply::Applied(outcomes),
            Ok(outcomes) => {
                ForwardReply::Failed(format!("{} outcomes for {count} batches", outcomes.len()))
            }
            Err(e) => ForwardReply::Failed(e.to_string()),
        }
    }

    /// Returns once this server's state reflects every write acknowledged
    /// anywhere before the call (a linearizable read point). Concurrent
    /// callers share one barrier round.
    pub async fn read_barrier(&self) -> Result<(), ServerError> {
        // A leader that holds its lease and has applied an entry of its own
        // term already reflects every acknowledged write (writes are
        // acknowledged only once the leader applied them): no round to a
        // quorum is needed.
        if self.can_read_locally() {
            return Ok(());
        }
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
        let reply = self
            .inner
            .transport
            .call(
                leader_addr,
                PeerRpc::ReadIndex,
                Vec::new(),
                self.inner.request_timeout,
            )
            .await
            .map_err(|e| ServerError::Unavailable(e.to_string()))?;
        decode(&reply).map_err(|e| ServerError::Unavailable(format!("bad read index: {e}")))
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

    /// Whether a quorum acknowledged this server as leader (the heartbeat
    /// it acknowledged was sent) less than the lease ago: until then no
    /// other server can have been elected, so nothing can have been
    /// committed that this server has not seen.
    pub fn holds_lease(&self) -> bool {
        if self.inner.handing_over.load(Ordering::SeqCst) {
            return false;
        }
        let acked = *self
            .inner
            .quorum_acked
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let term = self.inner.raft.metrics().borrow().current_term;
        acked.is_some_and(|(acked_term, at)| acked_term == term && at.elapsed() < self.inner.lease)
    }

    /// Whether this server's applied state is as fresh as any write
    /// acknowledged anywhere, without asking the others: it leads, has
    /// applied an entry of its own term, and holds its lease. A leader cut
    /// off from the others loses this within the lease, before anyone else
    /// can be elected.
    pub fn can_read_locally(&self) -> bool {
        self.has_applied_own_term() && self.holds_lease()
    }

    /// Holds this server's votes (and its candidacy) until it has followed
    /// a leader and applied `catch_up_to`; then removes `marker`.
    pub fn hold_votes_until(&self, catch_up_to: u64, marker: Option<std::path::PathBuf>) {
        self.inner.votes_held.store(true, Ordering::SeqCst);
        self.inner.raft.runtime_config().elect(false);
        let node = self.clone();
        tokio::spawn(async move {
            let me = node.id();
            let caught_up = node
                .inner
                .raft
                .wait(None)
                .metrics(
                    |m| {
                        m.current_leader.is_some_and(|l| l != me)
                            && m.last_applied.is_some_and(|id| id.index >= catch_up_to)
                    },
                    "caught up after rejoining",
                )
                .await;
            if caught_up.is_err() {
                return; // shutting down
            }
            // Then everything the leader had committed when asked, so that
            // a server that knew no target still votes only with a full log.
            loop {
                let leader = node.metrics().current_leader.and_then(|id| {
                    node.metrics()
                        .membership_config
                        .membership()
                        .get_node(&id)
                        .map(|n| n.addr.clone())
                });
                let caught_up = match leader {
                    Some(addr) => match node.leader_read_index(&addr).await {
                        Ok(index) => node
                            .inner
                            .raft
                            .wait(Some(node.inner.request_timeout))
                            .applied_index_at_least(Some(index), "caught up with the leader")
                            .await
                            .is_ok(),
                        Err(_) => false,
                    },
                    None => false,
                };
                if caught_up {
                    break;
                }
                if node.inner.raft.metrics().borrow().state == ServerState::Shutdown {
                    return;
                }
                tokio::time::sleep(LEADER_POLL).await;
            }
            if let Some(marker) = marker {
                if let Err(e) = std::fs::remove_file(&marker) {
                    tracing::error!(path = %marker.display(), error = %e, "cannot remove the rejoin marker; votes stay held until it is removed and the server restarted");
                    return;
                }
            }
            node.inner.votes_held.store(false, Ordering::SeqCst);
            node.inner.raft.runtime_config().elect(true);
            tracing::info!(catch_up_to, "caught up after rejoining; voting again");
        });
    }

    /// Whether vote requests are refused (see `hold_votes_until`).
    pub fn votes_held(&self) -> bool {
        self.inner.votes_held.load(Ordering::SeqCst)
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
        // openraft would keep the old address silently (adding a node that
        // exists changes nothing), and rewriting it in place can split
        // the cluster if the new address belongs to another server.
        if let Some(known) = self.metrics().membership_config.membership().get_node(&id) {
            if known.addr != addr {
                return Err(ServerError::FailedPrecondition(format!(
                    "server {id} is already a member, at {}; to move it to {addr}, remove it \
                     first (ControlPlaneService/RemoveServer; the berth CLI: berth server remove {id}), give it an empty data dir and a certificate \
                     for the new address, start it there, then add it again (docs/operations.md, \
                     \"Move a server to a new address\")",
                    known.addr
                )));
            }
        }
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
                "server {id} at {addr} was added as a learner but has not caught up in 120 s; is it running? call AddServer again to promote it (the berth CLI: berth server add)"
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

    /// Hands leadership to another voter before this server stops (Raft's
    /// TimeoutNow). Without it the followers wait out openraft's lease and
    /// an election timeout after the last heartbeat before electing anyone.
    /// A voter whose log matches this leader's last entry is asked to stand
    /// for election at once; this server, still running, grants its vote
    /// (a leader's own vote is older than the lease), so the successor wins
    /// with one round trip. (A leader elected less than the lease ago
    /// refuses it its vote, and the candidate tries again after its election
    /// timeout, still sooner than an election after a crash.) Returns the
    /// new leader, or `None` when this
    /// server was not leader or no voter took over within `within` (then
    /// the others elect one the usual way once this server is gone).
    pub async fn hand_over_leadership(&self, within: Duration) -> Option<NodeId> {
        if !self.is_leader() {
            return None;
        }
        // The successor is elected before this server's read lease would
        // have run out: stop reading locally first. And this server, about
        // to stop, must not win an election of its own meanwhile.
        self.inner.handing_over.store(true, Ordering::SeqCst);
        self.inner.raft.runtime_config().elect(false);
        let deadline = Instant::now() + within;
        let mut asked = None;
        // Voters that could not be asked (stopped, unreachable): the next
        // caught-up one is tried instead.
        let mut unreachable = BTreeSet::new();
        while Instant::now() < deadline {
            let m = self.metrics();
            if m.state != ServerState::Leader {
                if let Some(leader) = m.current_leader.filter(|l| *l != self.id()) {
                    tracing::info!(
                        new_leader = leader,
                        term = m.current_term,
                        "handed leadership over"
                    );
                    return Some(leader);
                }
            } else if asked.is_none() && self.inner.writes_in_flight.load(Ordering::SeqCst) == 0 {
                if let Some((target, addr)) = caught_up_voter(&m, self.id(), &unreachable) {
                    let ask = ElectNow {
                        leader: self.id(),
                        term: m.current_term,
                    };
                    match encode(&ask) {
                        Ok(data) => {
                            let reply = self
                                .inner
                                .transport
                                .call(&addr, PeerRpc::ElectNow, data, HANDOVER_CALL_TIMEOUT)
                                .await;
                            match reply {
                                Ok(_) => asked = Some(target),
                                Err(e) => {
                                    tracing::warn!(target, error = %e, "asking a voter to take over failed");
                                    unreachable.insert(target);
                                }
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "encoding the handover request"),
                    }
                }
            }
            tokio::time::sleep(HANDOVER_POLL).await;
        }
        tracing::warn!(
            asked = ?asked,
            "no voter took leadership over in {within:?}; the others elect a leader once this server stops"
        );
        None
    }

    /// A voter's side of the handover: stands for election at once when the
    /// current leader of the current term asks. Anyone else is refused, so
    /// the call cannot be used to unseat a healthy leader.
    pub async fn elect_now(&self, ask: ElectNow) -> Result<(), ServerError> {
        let m = self.metrics();
        if m.current_leader != Some(ask.leader) || m.current_term != ask.term {
            return Err(ServerError::FailedPrecondition(format!(
                "only the current leader may ask for an election (asked by {} in term {}; \
                 this server follows {:?} in term {})",
                ask.leader, ask.term, m.current_leader, m.current_term
            )));
        }
        if self.votes_held() {
            return Err(ServerError::FailedPrecondition(
                "this server is still catching up after a rejoin and does not stand for election"
                    .into(),
            ));
        }
        tracing::info!(
            leader = ask.leader,
            term = ask.term,
            "the stopping leader asked this server to take over"
        );
        self.inner
            .raft
            .trigger()
            .elect()
            .await
            .map_err(|e| ServerError::Internal(format!("starting an election: {e}")))
    }

    pub async fn shutdown(&self) {
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}

/// What a stopping leader sends the voter it hands leadership to.
#[derive(Debug, Serialize, Deserialize)]
pub struct ElectNow {
    pub leader: NodeId,
    pub term: u64,
}

/// How long the stopping leader waits for the voter's answer.
const HANDOVER_CALL_TIMEOUT: Duration = Duration::from_millis(500);
const HANDOVER_POLL: Duration = Duration::from_millis(2);

/// A voter other than `me` and those in `skip` whose replicated log matches
/// the leader's last entry, with its address.
fn caught_up_voter(
    m: &RaftMetrics,
    me: NodeId,
    skip: &BTreeSet<NodeId>,
) -> Option<(NodeId, String)> {
    let last = m.last_log_index?;
    let replication = m.replication.as_ref()?;
    let membership = m.membership_config.membership();
    membership
        .voter_ids()
        .filter(|id| *id != me && !skip.contains(id))
        .find(|id| {
            replication
                .get(id)
                .and_then(|matched| matched.as_ref())
                .is_some_and(|log_id| log_id.index == last)
        })
        .and_then(|id| membership.get_node(&id).map(|n| (id, n.addr.clone())))
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

/// Follows openraft's metrics to know when a quorum last acknowledged this
/// server as leader. openraft reports the age of that acknowledgement when
/// it publishes metrics (every turn of its loop, so at least once per
/// heartbeat round); subtracting it from the time the report is seen puts
/// the acknowledgement a little later than it was, which the lease's margin
/// covers.
async fn watch_lease(node: BerthNode) {
    let mut metrics = node.inner.raft.metrics();
    while metrics.changed().await.is_ok() {
        let seen = Instant::now();
        let mark = {
            let m = metrics.borrow_and_update();
            match (m.state, m.millis_since_quorum_ack) {
                (ServerState::Leader, Some(ms)) => seen
                    .checked_sub(Duration::from_millis(ms))
                    .map(|at| (m.current_term, at)),
                _ => None,
            }
        };
        *node
            .inner
            .quorum_acked
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = mark;
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

/// The encoded size of a write, refused when it could not fit in one entry.
fn encoded_size(commands: &[&Command]) -> Result<usize, ServerError> {
    let bytes = bincode::serialized_size(commands)
        .ok()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| ServerError::Internal("a write cannot be encoded".into()))?;
    if bytes > MAX_BATCH_BYTES {
        return Err(ServerError::from(berth_types::FieldError::new(
            "request",
            format!(
                "this write is {bytes} bytes once encoded; one write may be at most {MAX_BATCH_BYTES}"
            ),
        )));
    }
    Ok(bytes)
}

/// Counts the leader changes this server sees (for metrics).
async fn count_leader_changes(node: BerthNode) {
    let mut metrics = node.inner.raft.metrics();
    let mut leader = metrics.borrow().current_leader;
    while metrics.changed().await.is_ok() {
        let now = metrics.borrow().current_leader;
        if now != leader {
            if now.is_some() {
                node.inner.metrics.leader_changed();
            }
            leader = now;
        }
    }
}

/// Collects proposals into entries and proposes a few entries at a time.
/// A proposal is never split: one that does not fit waits for the next entry.
async fn batch_loop(node: BerthNode, mut rx: mpsc::Receiver<Proposal>) {
    let slots = node.inner.entry_slots.clone();
    let mut carried: Option<Proposal> = None;
    loop {
        let first = match carried.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        // While waiting for a slot more proposals queued up; take them.
        let (proposals, _, left_over) = fill_batch(first, &mut rx, MAX_BATCH, MAX_BATCH_BYTES);
        carried = left_over;
        tokio::spawn(propose_entry(node.clone(), proposals, slot));
    }
}

/// Proposes `proposals` as one entry and answers each of them.
async fn propose_entry(
    node: BerthNode,
    proposals: Vec<Proposal>,
    _slot: tokio::sync::OwnedSemaphorePermit,
) {
    let started = Instant::now();
    let (proposals_in_entry, commands_in_entry) = (
        proposals.len(),
        proposals.iter().map(|p| p.work.commands()).sum::<usize>(),
    );
    let (batches, routes) = assemble(proposals, || Batch {
        id: Some(node.next_batch_id()),
        origin: Origin {
            proposer: node.id(),
            at_ms: crate::api::now_ms(),
            actors: Vec::new(),
        },
        commands: Vec::new(),
    });
    let count = batches.len();
    let written = node.write_batches(batches).await;
    node.inner.metrics.entry_proposed(
        proposals_in_entry,
        commands_in_entry,
        started.elapsed().as_secs_f64(),
    );
    match written {
        Ok(outcomes) if outcomes.len() == count => deliver(routes, outcomes),
        Ok(outcomes) => {
            let e = format!(
                "leader returned {} outcomes for {count} batches",
                outcomes.len()
            );
            for route in routes {
                let _ = route
                    .reply()
                    .send(Err(ServerError::OutcomeUnknown(e.clone())));
            }
        }
        Err(e) => {
            for route in routes {
                let _ = route.reply().send(Err(e.clone()));
            }
        }
    }
}

/// One write between the handover check and openraft's answer.
struct InFlight<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> InFlight<'a> {
    fn count(counter: &'a std::sync::atomic::AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

type Reply = oneshot::Sender<Result<Vec<BatchOutcome>, ServerError>>;

/// Where a proposal's outcomes are in the entry's.
enum Route {
    /// The next `count` commands of the local batch (the last one).
    Local { reply: Reply, count: usize },
    /// `count` whole batches from `first`.
    Forwarded {
        reply: Reply,
        first: usize,
        count: usize,
    },
}

impl Route {
    fn reply(self) -> Reply {
        match self {
            Route::Local { reply, .. } | Route::Forwarded { reply, .. } => reply,
        }
    }
}

/// The entry's batches: forwarded ones as they came, then one batch with a
/// fresh id holding every local proposal's commands.
fn assemble(
    proposals: Vec<Proposal>,
    new_batch: impl FnOnce() -> Batch,
) -> (Vec<Batch>, Vec<Route>) {
    let mut batches = Vec::new();
    let mut local = Vec::new();
    let mut actors: Vec<ActorRun> = Vec::new();
    let mut routes = Vec::with_capacity(proposals.len());
    for Proposal { work, reply, .. } in proposals {
        match work {
            Work::Local(commands, actor) => {
                routes.push(Route::Local {
                    reply,
                    count: commands.len(),
                });
                let count = u32::try_from(commands.len()).unwrap_or(u32::MAX);
                match actors.last_mut() {
                    Some(run) if run.actor == actor => run.commands += count,
                    _ => actors.push(ActorRun {
                        commands: count,
                        actor,
                    }),
                }
                local.extend(commands);
            }
            Work::Forwarded(forwarded) => {
                routes.push(Route::Forwarded {
                    reply,
                    first: batches.len(),
                    count: forwarded.len(),
                });
                batches.extend(forwarded);
            }
        }
    }
    if routes.iter().any(|r| matches!(r, Route::Local { .. })) {
        let mut batch = new_batch();
        batch.origin.actors = actors;
        batch.commands = local;
        batches.push(batch);
    }
    (batches, routes)
}

/// Hands every proposal its outcomes.
fn deliver(routes: Vec<Route>, mut outcomes: Vec<BatchOutcome>) {
    let has_local = routes.iter().any(|r| matches!(r, Route::Local { .. }));
    let local = if has_local { outcomes.pop() } else { None };
    // The local batch's results, split among its proposals in order.
    let (repeated, mut local_results) = match local {
        Some(BatchOutcome::Applied(r)) => (false, Some(Arc::unwrap_or_clone(r).into_iter())),
        Some(BatchOutcome::Repeated(r)) => (true, Some(Arc::unwrap_or_clone(r).into_iter())),
        Some(BatchOutcome::Expired) | None => (false, None),
    };
    for route in routes {
        match route {
            Route::Local { reply, count, .. } => {
                let outcome = match local_results.as_mut() {
                    Some(results) => {
                        let mine: Arc<Vec<_>> = Arc::new(results.by_ref().take(count).collect());
                        if repeated {
                            BatchOutcome::Repeated(mine)
                        } else {
                            BatchOutcome::Applied(mine)
                        }
                    }
                    None => BatchOutcome::Expired,
                };
                let _ = reply.send(Ok(vec![outcome]));
            }
            Route::Forwarded {
                reply,
                first,
                count,
            } => {
                let mine = outcomes.get(first..first + count).map(<[_]>::to_vec);
                let _ = reply.send(mine.ok_or_else(|| {
                    ServerError::OutcomeUnknown("outcomes missing for forwarded batches".into())
                }));
            }
        }
    }
}

/// `first` plus what is queued, up to `max` commands and `max_bytes` in all,
/// never splitting a proposal (`first` goes even when it alone is larger).
/// Returns the proposals, their command count and the queued proposal that
/// did not fit, if any.
fn fill_batch(
    first: Proposal,
    rx: &mut mpsc::Receiver<Proposal>,
    max: usize,
    max_bytes: usize,
) -> (Vec<Proposal>, usize, Option<Proposal>) {
    let mut size = first.work.commands();
    let mut bytes = first.bytes;
    let mut batch = vec![first];
    while size < max && bytes < max_bytes {
        match rx.try_recv() {
            Ok(p) if size + p.work.commands() <= max && bytes + p.bytes <= max_bytes => {
                size += p.work.commands();
                bytes += p.bytes;
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
        sized_proposal(commands, 1)
    }

    /// `commands` commands of about `name_len` bytes each.
    fn sized_proposal(commands: usize, name_len: usize) -> Proposal {
        let (reply, _) = oneshot::channel();
        let commands: Vec<Command> = (0..commands)
            .map(|_| Command::DeleteCluster {
                name: "c".repeat(name_len),
            })
            .collect();
        Proposal {
            bytes: encoded_size(&commands.iter().collect::<Vec<_>>()).unwrap(),
            work: Work::Local(commands, Actor::server(1)),
            reply,
        }
    }

    #[test]
    fn a_write_dropped_midway_is_no_longer_counted_in_flight() {
        use std::future::Future;
        let counter = std::sync::atomic::AtomicUsize::new(0);
        let mut write = Box::pin(async {
            let _in_flight = InFlight::count(&counter);
            std::future::pending::<()>().await
        });
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(write.as_mut().poll(&mut cx).is_pending());
        assert_eq!(counter.load(Ordering::SeqCst), 1);
        drop(write);
        assert_eq!(counter.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_local_batch_keeps_each_proposals_caller() {
        let by = |id: u64, commands: usize| {
            let mut p = proposal(commands);
            if let Work::Local(_, actor) = &mut p.work {
                *actor = Actor::server(id);
            }
            p
        };
        let proposals = vec![by(7, 2), by(7, 1), by(8, 1)];
        let (batches, routes) = assemble(proposals, || Batch {
            id: None,
            origin: Origin::default(),
            commands: Vec::new(),
        });
        assert_eq!(routes.len(), 3);
        let [batch] = batches.as_slice() else {
            panic!("one local batch expected")
        };
        let runs: Vec<(u32, String)> = batch
            .origin
            .actors
            .iter()
            .map(|r| (r.commands, r.actor.principal.name()))
            .collect();
        // Consecutive proposals of one caller share a run.
        assert_eq!(runs, [(3, "server:7".into()), (1, "server:8".into())]);
        assert_eq!(batch.commands.len(), 4);
    }

    fn sizes(batch: &[Proposal]) -> Vec<usize> {
        batch.iter().map(|p| p.work.commands()).collect()
    }

    #[tokio::test]
    async fn batches_take_whole_proposals_up_to_the_limit() {
        let (tx, mut rx) = mpsc::channel(16);
        for n in [100, 100, 10, 300, 5] {
            tx.send(proposal(n)).await.expect("queue");
        }
        let first = rx.recv().await.expect("first");
        let (batch, size, carried) = fill_batch(first, &mut rx, 256, MAX_BATCH_BYTES);
        assert_eq!((sizes(&batch), size), (vec![100, 100, 10], 210));
        // 300 does not fit: it is carried to the next batch, alone, whole.
        let carried = carried.expect("a proposal that did not fit");
        let (batch, size, carried) = fill_batch(carried, &mut rx, 256, MAX_BATCH_BYTES);
        assert_eq!((sizes(&batch), size), (vec![300], 300));
        assert!(carried.is_none());
        let first = rx.recv().await.expect("last");
        let (batch, _, carried) = fill_batch(first, &mut rx, 256, MAX_BATCH_BYTES);
        assert_eq!(sizes(&batch), vec![5]);
        assert!(carried.is_none());
    }

    #[tokio::test]
    async fn batches_are_bounded_by_bytes_too() {
        let (tx, mut rx) = mpsc::channel(16);
        // Three 1.5 MiB proposals of one command each: two fit in 4 MiB.
        for _ in 0..3 {
            tx.send(sized_proposal(1, 1536 * 1024))
                .await
                .expect("queue");
        }
        let first = rx.recv().await.expect("first");
        let (batch, size, carried) = fill_batch(first, &mut rx, 256, MAX_BATCH_BYTES);
        assert_eq!((batch.len(), size), (2, 2));
        let bytes: usize = batch.iter().map(|p| p.bytes).sum();
        assert!(bytes <= MAX_BATCH_BYTES, "{bytes}");
        assert!(carried.is_some(), "the third waits for the next entry");
    }

    #[test]
    fn a_write_too_large_for_one_entry_is_refused_naming_the_limit() {
        let huge = Command::DeleteCluster {
            name: "c".repeat(MAX_BATCH_BYTES),
        };
        let e = encoded_size(&[&huge]).unwrap_err().to_string();
        assert!(e.contains("at most 4194304"), "{e}");
    }
}
