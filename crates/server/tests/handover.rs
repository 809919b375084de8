//! A stopping leader hands leadership over (Raft's TimeoutNow) instead of
//! leaving the followers to wait out openraft's lease and an election
//! timeout; and no one but the current leader can make a server stand for
//! election.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster;

use std::time::Duration;

use berth_server::network::PeerRpc;
use berth_server::node::ElectNow;
use cluster::{register, revisions, Fault, Rule, TestCluster, ELECTION_MS};
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn a_stopping_leader_hands_over_in_one_election_without_waiting_out_the_lease() {
    let cluster = TestCluster::start(3).await;
    let old = cluster.leader().await;
    for _ in 0..3 {
        cluster.node(old).write(register("web")).await.unwrap();
    }
    // A leader elected less than openraft's lease ago refuses even a
    // caught-up candidate its vote; this one has led for a while.
    tokio::time::sleep(Duration::from_millis(ELECTION_MS * 2)).await;
    let term = cluster.node(old).metrics().current_term;
    assert!(cluster.node(old).can_read_locally());

    let started = Instant::now();
    let new = cluster
        .node(old)
        .hand_over_leadership(Duration::from_secs(2))
        .await
        .expect("a caught-up follower took over");
    let took = started.elapsed();

    assert_ne!(new, old);
    assert!(cluster.node(new).is_leader());
    assert!(!cluster.node(old).is_leader());
    // One election won at the first try...
    assert_eq!(
        cluster.node(new).metrics().current_term,
        term + 1,
        "term before {term}"
    );
    // ...sooner than a follower would even have stood for election
    // (openraft's lease plus an election timeout after the last heartbeat).
    assert!(
        took < Duration::from_millis(ELECTION_MS),
        "the handover took {took:?}"
    );
    // The old leader stopped reading locally before the new one was
    // elected, and does not lead again.
    assert!(!cluster.node(old).can_read_locally());
    tokio::time::sleep(Duration::from_millis(ELECTION_MS * 5)).await;
    assert_eq!(cluster.leader().await, new);

    // Every acknowledged write is there, and writes go on, also through
    // the old leader, which forwards them.
    cluster.node(new).write(register("web")).await.unwrap();
    cluster.node(old).write(register("web")).await.unwrap();
    assert_eq!(revisions(cluster.node(new), "web"), vec![1, 2, 3, 4, 5]);
}

#[tokio::test(start_paused = true)]
async fn only_the_current_leader_may_ask_a_server_to_stand_for_election() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let followers = cluster.followers_of(leader);
    let term = cluster.node(leader).metrics().current_term;

    // Another follower, or the leader in a past term, is refused.
    let by_follower = cluster
        .node(followers[0])
        .elect_now(ElectNow {
            leader: followers[1],
            term,
        })
        .await;
    assert!(by_follower.is_err(), "{by_follower:?}");
    let stale = cluster
        .node(followers[0])
        .elect_now(ElectNow {
            leader,
            term: term - 1,
        })
        .await;
    assert!(stale.is_err(), "{stale:?}");
    tokio::time::sleep(Duration::from_millis(ELECTION_MS)).await;
    assert_eq!(cluster.leader().await, leader);
    assert_eq!(cluster.node(leader).metrics().current_term, term);

    // A follower that is not leader hands nothing over.
    assert_eq!(
        cluster
            .node(followers[0])
            .hand_over_leadership(Duration::from_millis(100))
            .await,
        None
    );
}

#[tokio::test(start_paused = true)]
async fn a_leader_handing_over_stops_reading_locally_even_if_no_one_takes_over() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    tokio::time::sleep(Duration::from_millis(ELECTION_MS * 2)).await;
    assert!(cluster.node(leader).can_read_locally());
    let followers = cluster.followers_of(leader);
    cluster
        .net
        .add(Rule::new(&[leader], &followers, Fault::Cut).only(&[PeerRpc::ElectNow]));

    let handed = cluster
        .node(leader)
        .hand_over_leadership(Duration::from_millis(200))
        .await;

    assert_eq!(handed, None);
    // Still leader (heartbeats flow), but it no longer trusts its lease:
    // reads pass a barrier.
    assert!(cluster.node(leader).is_leader());
    assert!(!cluster.node(leader).can_read_locally());
    cluster.node(leader).read_barrier().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_handover_passes_over_a_voter_it_cannot_reach() {
    let cluster = TestCluster::start(3).await;
    let old = cluster.leader().await;
    cluster.node(old).write(register("web")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(ELECTION_MS * 2)).await;
    // Both followers hold the whole log; the first one asked cannot be
    // reached (as if it had just stopped).
    let followers = cluster.followers_of(old);
    cluster
        .net
        .add(Rule::new(&[old], &[followers[0]], Fault::Cut).only(&[PeerRpc::ElectNow]));

    let new = cluster
        .node(old)
        .hand_over_leadership(Duration::from_secs(2))
        .await;

    assert_eq!(new, Some(followers[1]));
    assert!(cluster.node(followers[1]).is_leader());
}
