//! A member of `--initial-cluster` that lost its data dir and starts again
//! with the same command line neither forms a new cluster nor votes before
//! it has caught up.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster;

use std::time::Duration;

use berth_server::network::{encode, CallError, PeerRpc};
use berth_store::rpc::VoteRequest;
use cluster::{register, revisions, Fault, Rule, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_lost_its_data_does_not_initialize_or_vote_until_caught_up() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    for _ in 0..5 {
        cluster.node(leader).write(register("web")).await.unwrap();
    }
    let term = cluster.node(leader).metrics().current_term;
    let lost = cluster.followers_of(leader)[0];
    let other = cluster.followers_of(leader)[1];
    cluster.stop(lost).await;
    std::fs::remove_dir_all(cluster.data_dir(lost)).unwrap();

    // The leader cannot reach it yet, so it stays empty for a while.
    let hold = cluster.net.add(Rule::new(&[leader], &[lost], Fault::Cut));
    let node = cluster.boot(lost).await;
    let members = cluster.members();
    berth_server::rejoin::form_or_rejoin(&node, &cluster.data_dir(lost), true, Some(&members))
        .await
        .unwrap();

    // It did not initialize: no log, no membership of its own.
    let metrics = node.metrics();
    assert_eq!(metrics.last_log_index, None);
    assert_eq!(
        metrics.membership_config.membership().voter_ids().count(),
        0
    );
    assert!(node.votes_held());
    assert!(cluster.data_dir(lost).join("rejoin.json").exists());
    // A candidate of a term it may have voted in before is refused.
    let request = VoteRequest::new(openraft::Vote::new(term, other), None);
    let refused = cluster
        .node(other)
        .transport()
        .call(
            &cluster::addr(lost),
            PeerRpc::Vote,
            encode(&request).unwrap(),
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, CallError::Unknown(m) if m.contains("does not vote")),
        "{refused:?}"
    );
    tokio::time::sleep(Duration::from_millis(3 * cluster::ELECTION_MS)).await;
    assert!(node.votes_held(), "it let go before catching up");
    assert_eq!(node.metrics().current_term, 0, "it stood for election");

    // Once the leader reaches it, it catches up, then votes again.
    cluster.net.remove(hold);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while node.votes_held() {
        assert!(tokio::time::Instant::now() < deadline, "never caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!cluster.data_dir(lost).join("rejoin.json").exists());
    assert_eq!(revisions(&node, "web"), vec![1, 2, 3, 4, 5]);
    assert_eq!(
        cluster.leader().await,
        leader,
        "the cluster kept its leader"
    );
    assert_eq!(cluster.node(leader).metrics().current_term, term);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_before_catching_up_keeps_the_votes_held() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    cluster.node(leader).write(register("web")).await.unwrap();
    let lost = cluster.followers_of(leader)[0];
    cluster.stop(lost).await;
    std::fs::remove_dir_all(cluster.data_dir(lost)).unwrap();
    cluster.net.add(Rule::new(&[leader], &[lost], Fault::Cut));
    let members = cluster.members();
    let node = cluster.boot(lost).await;
    berth_server::rejoin::form_or_rejoin(&node, &cluster.data_dir(lost), true, Some(&members))
        .await
        .unwrap();
    assert!(node.votes_held());
    cluster.stop(lost).await;

    // Not a fresh data dir any more, but the marker remembers.
    let node = cluster.boot(lost).await;
    berth_server::rejoin::form_or_rejoin(&node, &cluster.data_dir(lost), false, Some(&members))
        .await
        .unwrap();
    assert!(node.votes_held());
    cluster.net.heal();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while node.votes_held() {
        assert!(tokio::time::Instant::now() < deadline, "never caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(revisions(&node, "web"), vec![1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_lost_its_data_and_starts_without_initial_cluster_votes_only_once_caught_up()
{
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    for _ in 0..3 {
        cluster.node(leader).write(register("web")).await.unwrap();
    }
    let lost = cluster.followers_of(leader)[0];
    cluster.stop(lost).await;
    std::fs::remove_dir_all(cluster.data_dir(lost)).unwrap();
    let hold = cluster.net.add(Rule::new(&[leader], &[lost], Fault::Cut));
    let node = cluster.boot(lost).await;
    berth_server::rejoin::form_or_rejoin(&node, &cluster.data_dir(lost), true, None)
        .await
        .unwrap();
    assert!(node.votes_held());
    tokio::time::sleep(Duration::from_millis(3 * cluster::ELECTION_MS)).await;
    assert!(node.votes_held());
    assert_eq!(node.metrics().last_log_index, None);

    cluster.net.remove(hold);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while node.votes_held() {
        assert!(tokio::time::Instant::now() < deadline, "never caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // It let go only with the whole log.
    assert_eq!(revisions(&node, "web"), vec![1, 2, 3]);
    assert_eq!(cluster.leader().await, leader);
}
