//! Network faults against a 3-server cluster in one process, with clients
//! writing and reading the task definition registry throughout; every
//! history is checked for linearizability.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_server::network::PeerRpc;
use berth_store::NodeId;
use berth_types::CommandOutput;
use cluster::history::{check, History, Op, Outcome};
use cluster::{register, Fault, Rule, TestCluster};
use openraft::ServerState;
use rand::Rng;

const FAMILIES: [&str; 2] = ["a", "b"];
/// Longest a client waits for one operation (a write stuck on a cut-off
/// leader would otherwise wait until the partition heals).
const OP_TIMEOUT: Duration = Duration::from_secs(4);

/// One client per server, each sending registrations and reads of random
/// families to its server until stopped.
struct Clients {
    history: Arc<History>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Clients {
    fn start(cluster: &TestCluster) -> Self {
        let history = Arc::new(History::default());
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = cluster
            .nodes
            .iter()
            .map(|(id, node)| {
                let (node, history, stop, client) =
                    (node.clone(), history.clone(), stop.clone(), *id as usize);
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        let (family, write) = {
                            let mut rng = rand::thread_rng();
                            (FAMILIES[rng.gen_range(0..2)], rng.gen_bool(0.5))
                        };
                        let call = history.call();
                        if write {
                            let outcome = match tokio::time::timeout(
                                OP_TIMEOUT,
                                node.write(register(family)),
                            )
                            .await
                            {
                                Ok(Ok(CommandOutput::TaskDefinition(d))) => {
                                    Outcome::Registered(d.revision)
                                }
                                Ok(Ok(other)) => panic!("unexpected output {other:?}"),
                                // Failed or timed out: it may still be applied.
                                Ok(Err(_)) | Err(_) => Outcome::RegisterUnknown,
                            };
                            history.record(client, family, call, outcome);
                        } else {
                            let read = node.read(|s| s.latest_active(family).map(|d| d.revision));
                            // A failed read tells nothing; it is left out.
                            if let Ok(Ok(latest)) = tokio::time::timeout(OP_TIMEOUT, read).await {
                                history.record(client, family, call, Outcome::Latest(latest));
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
            })
            .collect();
        Self {
            history,
            stop,
            tasks,
        }
    }

    /// Stops the clients and returns the checked history.
    async fn finish(self) -> Vec<Op> {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.unwrap();
        }
        let ops = self.history.ops();
        check(&ops).unwrap();
        eprintln!(
            "{} operations ({} acknowledged writes) linearizable",
            ops.len(),
            acknowledged_writes(&ops)
        );
        ops
    }
}

fn acknowledged_writes(ops: &[Op]) -> usize {
    ops.iter()
        .filter(|o| matches!(o.outcome, Outcome::Registered(_)))
        .count()
}

/// Every server ends with the same registry, in which each family's
/// revisions run from 1 without gaps.
async fn converged(cluster: &TestCluster) {
    let leader = cluster.leader().await;
    cluster.node(leader).read_barrier().await.unwrap();
    let expected: Vec<Vec<u32>> = FAMILIES
        .iter()
        .map(|f| cluster::revisions(cluster.node(leader), f))
        .collect();
    for revisions in &expected {
        assert!(revisions.iter().copied().eq(1..=revisions.len() as u32));
    }
    for id in cluster.nodes.keys() {
        let node = cluster.node(*id);
        node.read_barrier().await.unwrap();
        let got: Vec<Vec<u32>> = FAMILIES
            .iter()
            .map(|f| cluster::revisions(node, f))
            .collect();
        assert_eq!(got, expected, "server {id}");
    }
}

fn leader_of(cluster: &TestCluster, group: &[NodeId]) -> Option<NodeId> {
    group
        .iter()
        .copied()
        .find(|id| cluster.node(*id).metrics().state == ServerState::Leader)
}

#[tokio::test(start_paused = true)]
async fn a_leader_cut_off_from_both_followers_is_replaced_and_acknowledges_nothing_after() {
    let cluster = TestCluster::start(3).await;
    let old = cluster.leader().await;
    let others = cluster.followers_of(old);
    let clients = Clients::start(&cluster);
    tokio::time::sleep(Duration::from_millis(500)).await;

    cluster.net.partition(&[old], &others);
    let new = cluster.leader_among(&others).await;
    let elected = clients.history.call();
    assert_ne!(new, old);
    // The old leader cannot tell yet: it still thinks it leads...
    assert_eq!(leader_of(&cluster, &[old]), Some(old));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let healed = clients.history.call();
    cluster.net.heal();
    // ...until it hears of the new term, and steps down.
    assert_eq!(cluster.leader().await, new);
    assert_eq!(cluster.node(old).metrics().state, ServerState::Follower);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ops = clients.finish().await;

    let by_old_while_cut: Vec<&Op> = ops
        .iter()
        .filter(|o| o.client == old as usize && o.ret > elected && o.ret < healed)
        .filter(|o| matches!(o.outcome, Outcome::Registered(_)))
        .collect();
    assert!(
        by_old_while_cut.is_empty(),
        "the old leader acknowledged writes after the new one was elected: {by_old_while_cut:?}"
    );
    let by_new = ops
        .iter()
        .filter(|o| o.client == new as usize && o.call > elected && o.ret < healed)
        .filter(|o| matches!(o.outcome, Outcome::Registered(_)))
        .count();
    assert!(
        by_new > 0,
        "the new leader took no writes while the old one was cut off"
    );
    converged(&cluster).await;
}

#[tokio::test(start_paused = true)]
async fn a_minority_partitioned_and_healed_catches_up() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let [cut, kept] = cluster.followers_of(leader)[..] else {
        unreachable!()
    };
    let clients = Clients::start(&cluster);
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.net.partition(&[cut], &[leader, kept]);
    let before = acknowledged_writes(&clients.history.ops());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        acknowledged_writes(&clients.history.ops()) > before,
        "the majority stopped taking writes"
    );
    cluster.net.heal();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ops = clients.finish().await;
    assert!(acknowledged_writes(&ops) > 10);
    converged(&cluster).await;
}

#[tokio::test(start_paused = true)]
async fn one_way_links_keep_the_history_linearizable() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let [a, b] = cluster.followers_of(leader)[..] else {
        unreachable!()
    };
    let clients = Clients::start(&cluster);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The leader's messages no longer reach `a`, but `a`'s reach it (so
    // `a` stands for election with terms the others have not seen).
    let rule = cluster.net.add(Rule::new(&[leader], &[a], Fault::Cut));
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.net.remove(rule);
    // Then `b` hears from nobody, and everybody hears from `b`.
    let rule = cluster
        .net
        .add(Rule::new(&[leader, a], &[b], Fault::DropRequest));
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.net.remove(rule);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ops = clients.finish().await;
    assert!(acknowledged_writes(&ops) > 10);
    converged(&cluster).await;
}

#[tokio::test(start_paused = true)]
async fn reordered_and_lost_messages_keep_the_history_linearizable() {
    let cluster = TestCluster::start(3).await;
    let all: Vec<NodeId> = cluster.nodes.keys().copied().collect();
    let clients = Clients::start(&cluster);
    // Every message waits a random time up to 40 ms, so later ones often
    // overtake earlier ones; some forwards and appends are lost as well,
    // before or after they are handled.
    cluster.net.add(
        Rule::new(&all, &all, Fault::DropReply)
            .only(&[PeerRpc::Forward])
            .times(5),
    );
    cluster.net.add(
        Rule::new(&all, &all, Fault::DropRequest)
            .only(&[PeerRpc::AppendEntries])
            .times(20),
    );
    cluster.net.add(Rule::new(
        &all,
        &all,
        Fault::Delay(Duration::from_millis(40)),
    ));
    tokio::time::sleep(Duration::from_secs(4)).await;
    cluster.net.heal();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ops = clients.finish().await;
    assert!(acknowledged_writes(&ops) > 10);
    converged(&cluster).await;
}
