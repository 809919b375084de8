//! A test cluster in one process, in the style of TiKV's: real `BerthNode`s
//! (openraft, the sled store, the batcher and the read barrier) talking over
//! an in-memory [`Transport`] whose rules cut, drop or delay messages
//! between chosen servers. Every message goes through `raft_service::dispatch`,
//! the code the gRPC service runs, so only the wire itself is simulated.
//!
//! Time is the test's to control: everything here (openraft's timers, the
//! lease, the transport's delays) runs on tokio's clock, so a test on
//! `#[tokio::test(start_paused = true)]` sees election timeouts, partitions
//! and delays happen on a virtual clock that moves only when every server is
//! idle (or when the test calls `tokio::time::advance`). Disk work still
//! takes real time, but the clock stands still meanwhile: the log's fsyncs
//! run on tokio's blocking pool, which holds the paused clock.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod history;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_server::network::{CallError, PeerRpc, Peers, Transport};
use berth_server::{BerthNode, NodeConfig};
use berth_store::NodeId;
use berth_types::{Command, ContainerDefinition, TaskDefinitionSpec};
use futures::future::BoxFuture;
use openraft::ServerState;
use rand::Rng;

pub const HEARTBEAT_MS: u64 = 50;
pub const ELECTION_MS: u64 = 300;

/// What a rule does to a message it matches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// Refused like a connection that cannot be opened: the sender knows
    /// nothing was delivered.
    Cut,
    /// Lost on the way: never delivered; the sender waits out its timeout.
    DropRequest,
    /// Delivered and handled; the answer is lost (the sender times out).
    DropReply,
    /// Delivered after a random delay up to this long (reorders messages).
    Delay(Duration),
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub from: BTreeSet<NodeId>,
    pub to: BTreeSet<NodeId>,
    /// Empty: every kind of call.
    pub rpcs: Vec<PeerRpc>,
    pub fault: Fault,
    /// Applies to this many more messages, then retires; `None`: forever.
    pub times: Option<usize>,
    /// How many messages it has hit.
    pub hits: usize,
}

impl Rule {
    pub fn new(from: &[NodeId], to: &[NodeId], fault: Fault) -> Self {
        Self {
            from: from.iter().copied().collect(),
            to: to.iter().copied().collect(),
            rpcs: Vec::new(),
            fault,
            times: None,
            hits: 0,
        }
    }

    pub fn only(mut self, rpcs: &[PeerRpc]) -> Self {
        self.rpcs = rpcs.to_vec();
        self
    }

    pub fn times(mut self, n: usize) -> Self {
        self.times = Some(n);
        self
    }

    fn matches(&self, from: NodeId, to: NodeId, rpc: PeerRpc) -> bool {
        self.from.contains(&from)
            && self.to.contains(&to)
            && (self.rpcs.is_empty() || self.rpcs.contains(&rpc))
            && self.times != Some(0)
    }
}

/// Messages seen per (from, to, rpc), for tests that check who talked.
pub type Traffic = HashMap<(NodeId, NodeId, PeerRpc), usize>;

#[derive(Default)]
pub struct Net {
    nodes: Mutex<HashMap<String, (NodeId, BerthNode)>>,
    rules: Mutex<Vec<(usize, Rule)>>,
    next_rule: Mutex<usize>,
    traffic: Mutex<Traffic>,
}

impl Net {
    fn node_at(&self, addr: &str) -> Option<(NodeId, BerthNode)> {
        self.nodes.lock().unwrap().get(addr).cloned()
    }

    /// The first live rule matching the message, counted.
    fn judge(&self, from: NodeId, to: NodeId, rpc: PeerRpc) -> Option<Fault> {
        *self
            .traffic
            .lock()
            .unwrap()
            .entry((from, to, rpc))
            .or_default() += 1;
        let mut rules = self.rules.lock().unwrap();
        let (_, rule) = rules.iter_mut().find(|(_, r)| r.matches(from, to, rpc))?;
        rule.hits += 1;
        if let Some(n) = rule.times.as_mut() {
            *n -= 1;
        }
        Some(rule.fault)
    }

    pub fn add(&self, rule: Rule) -> usize {
        let mut next = self.next_rule.lock().unwrap();
        *next += 1;
        self.rules.lock().unwrap().push((*next, rule));
        *next
    }

    pub fn remove(&self, id: usize) -> Option<Rule> {
        let mut rules = self.rules.lock().unwrap();
        let at = rules.iter().position(|(i, _)| *i == id)?;
        Some(rules.remove(at).1)
    }

    pub fn rule(&self, id: usize) -> Option<Rule> {
        let rules = self.rules.lock().unwrap();
        rules.iter().find(|(i, _)| *i == id).map(|(_, r)| r.clone())
    }

    /// Cuts every link between the two groups, both ways.
    pub fn partition(&self, a: &[NodeId], b: &[NodeId]) -> Vec<usize> {
        vec![
            self.add(Rule::new(a, b, Fault::Cut)),
            self.add(Rule::new(b, a, Fault::Cut)),
        ]
    }

    pub fn heal(&self) {
        self.rules.lock().unwrap().clear();
    }

    pub fn traffic(&self) -> Traffic {
        self.traffic.lock().unwrap().clone()
    }
}

/// One server's view of the network.
struct NodeTransport {
    from: NodeId,
    net: Arc<Net>,
}

impl Transport for NodeTransport {
    fn call(
        &self,
        addr: &str,
        rpc: PeerRpc,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, CallError>> {
        let net = self.net.clone();
        let from = self.from;
        let addr = addr.to_string();
        Box::pin(async move {
            let Some((to, node)) = net.node_at(&addr) else {
                return Err(CallError::NotSent(format!("nothing listens at {addr}")));
            };
            let fault = net.judge(from, to, rpc);
            match fault {
                Some(Fault::Cut) => {
                    return Err(CallError::NotSent(format!("link {from}->{to} is cut")))
                }
                Some(Fault::DropRequest) => {
                    tokio::time::sleep(timeout).await;
                    return Err(CallError::Unknown(format!("{rpc:?} {from}->{to} lost")));
                }
                Some(Fault::Delay(max)) => {
                    let delay = rand::thread_rng().gen_range(Duration::ZERO..=max);
                    tokio::time::sleep(delay).await;
                }
                Some(Fault::DropReply) | None => {}
            }
            // The receiver runs the call to the end even when the sender
            // stops waiting, as a server does.
            let handled = tokio::spawn(async move {
                berth_server::raft_service::dispatch(&node, rpc, &payload).await
            });
            let reply = match tokio::time::timeout(timeout, handled).await {
                Ok(Ok(Ok(reply))) => reply,
                Ok(Ok(Err(status))) => {
                    return Err(CallError::Unknown(format!(
                        "{:?}: {}",
                        status.code(),
                        status.message()
                    )))
                }
                Ok(Err(e)) => return Err(CallError::Unknown(format!("handler failed: {e}"))),
                Err(_) => {
                    return Err(CallError::Unknown(format!(
                        "{rpc:?} {from}->{to} timed out"
                    )))
                }
            };
            if fault == Some(Fault::DropReply) {
                return Err(CallError::Unknown(format!(
                    "{rpc:?} {from}->{to}: reply lost"
                )));
            }
            Ok(reply)
        })
    }
}

/// Opens a data dir, waiting in real time (a paused clock would not move)
/// for a stopped server's last sled handle and Raft log (`wal/LOCK`) to let go.
fn open_when_unlocked(
    dir: &std::path::Path,
) -> (berth_store::LogStore, berth_store::StateMachineStore) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match berth_store::open(dir) {
            Ok(stores) => return stores,
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "data dir still locked");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("opening {}: {e}", dir.display()),
        }
    }
}

pub struct TestCluster {
    pub net: Arc<Net>,
    pub nodes: BTreeMap<NodeId, BerthNode>,
    dirs: BTreeMap<NodeId, PathBuf>,
    _root: tempfile::TempDir,
}

pub fn addr(id: NodeId) -> String {
    format!("node-{id}:7400")
}

pub fn config(id: NodeId) -> NodeConfig {
    NodeConfig {
        node_id: id,
        advertise: addr(id),
        heartbeat_ms: HEARTBEAT_MS,
        election_timeout_min_ms: ELECTION_MS,
        election_timeout_max_ms: ELECTION_MS + ELECTION_MS / 4,
        snapshot_threshold: 10_000,
        keep_logs_after_snapshot: 1_000,
        request_timeout: Duration::from_secs(3),
    }
}

impl TestCluster {
    /// `n` servers forming one cluster; returns once it has a leader.
    pub async fn start(n: u64) -> Self {
        let root = tempfile::tempdir().unwrap();
        let mut cluster = Self {
            net: Arc::default(),
            nodes: BTreeMap::new(),
            dirs: BTreeMap::new(),
            _root: root,
        };
        for id in 1..=n {
            let dir = cluster._root.path().join(format!("n{id}"));
            cluster.dirs.insert(id, dir);
            cluster.boot(id).await;
        }
        // As berthd does on a first start: each asks the others, then forms
        // the cluster (or, if it already works, catches up).
        let members = cluster.members();
        for (id, node) in &cluster.nodes {
            berth_server::rejoin::form_or_rejoin(node, &cluster.dirs[id], true, Some(&members))
                .await
                .unwrap();
        }
        cluster.leader().await;
        cluster
    }

    /// Starts server `id` on its data dir (creating it if need be).
    pub async fn boot(&mut self, id: NodeId) -> BerthNode {
        let dir = &self.dirs[&id];
        let (log, sm) = open_when_unlocked(dir);
        let transport = Arc::new(NodeTransport {
            from: id,
            net: self.net.clone(),
        });
        let peers = Arc::new(Peers::new(tonic::transport::ClientTlsConfig::new()));
        let node = BerthNode::start(&config(id), log, sm, peers, transport)
            .await
            .unwrap();
        self.net
            .nodes
            .lock()
            .unwrap()
            .insert(addr(id), (id, node.clone()));
        self.nodes.insert(id, node.clone());
        node
    }

    /// Stops server `id` (its data dir stays).
    pub async fn stop(&mut self, id: NodeId) {
        self.net.nodes.lock().unwrap().remove(&addr(id));
        if let Some(node) = self.nodes.remove(&id) {
            node.shutdown().await;
        }
    }

    /// `--initial-cluster` of this cluster.
    pub fn members(&self) -> BTreeMap<NodeId, String> {
        self.dirs.keys().map(|id| (*id, addr(*id))).collect()
    }

    pub fn data_dir(&self, id: NodeId) -> PathBuf {
        self.dirs[&id].clone()
    }

    pub fn node(&self, id: NodeId) -> &BerthNode {
        &self.nodes[&id]
    }

    /// The leader every live server agrees on, waiting up to 10 s.
    pub async fn leader(&self) -> NodeId {
        self.leader_among(&self.nodes.keys().copied().collect::<Vec<_>>())
            .await
    }

    /// A server of `group` that leads and that the rest of `group` follows.
    pub async fn leader_among(&self, group: &[NodeId]) -> NodeId {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let leaders: Vec<NodeId> = group
                .iter()
                .filter(|id| self.nodes[id].metrics().state == ServerState::Leader)
                .copied()
                .collect();
            if let [leader] = leaders[..] {
                let agreed = group
                    .iter()
                    .all(|id| self.nodes[id].metrics().current_leader == Some(leader));
                if agreed && self.nodes[&leader].has_applied_own_term() {
                    return leader;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no agreed leader among {group:?}: {:?}",
                group
                    .iter()
                    .map(|id| (
                        *id,
                        self.nodes[id].metrics().state,
                        self.nodes[id].metrics().current_leader
                    ))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn followers_of(&self, leader: NodeId) -> Vec<NodeId> {
        self.nodes
            .keys()
            .copied()
            .filter(|id| *id != leader)
            .collect()
    }
}

/// A task definition registration of `family` (not idempotent: every one
/// applied makes a new revision).
pub fn register(family: &str) -> Command {
    Command::RegisterTaskDefinition {
        spec: TaskDefinitionSpec {
            family: family.into(),
            container_definitions: vec![ContainerDefinition::new("app", "registry.local/app:1")],
            cpu: None,
            memory: Some(128),
            network_mode: Default::default(),
            volumes: vec![],
            tags: vec![],
        },
        at_ms: 1,
    }
}

/// Revisions of `family` in a server's applied state.
pub fn revisions(node: &BerthNode, family: &str) -> Vec<u32> {
    let applied = node.state().read();
    let mut revisions: Vec<u32> = applied
        .state
        .task_definitions()
        .filter(|d| d.family == family)
        .map(|d| d.revision)
        .collect();
    revisions.sort_unstable();
    revisions
}
