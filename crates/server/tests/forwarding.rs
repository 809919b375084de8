//! Writes forwarded from a follower to the leader are applied exactly once,
//! even when the leader's answer is lost after it applied them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster;

use std::time::Duration;

use berth_server::network::{classify, CallError, PeerRpc, Peers, Transport};
use berth_types::CommandOutput;
use cluster::{register, revisions, Fault, Rule, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_write_whose_reply_is_lost_is_applied_once() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let follower = cluster.followers_of(leader)[0];
    // The leader applies the batch, and its answer never reaches the
    // follower, twice in a row.
    let rule = cluster.net.add(
        Rule::new(&[follower], &[leader], Fault::DropReply)
            .only(&[PeerRpc::Forward])
            .times(2),
    );

    let output = cluster.node(follower).write(register("web")).await.unwrap();

    let CommandOutput::TaskDefinition(definition) = output else {
        panic!("unexpected output {output:?}");
    };
    assert_eq!(definition.revision, 1, "the caller gets the first outcome");
    assert_eq!(
        cluster.net.rule(rule).unwrap().hits,
        2,
        "both replies were lost"
    );
    // Three copies reached the leader; one was applied.
    let forwarded = cluster.net.traffic()[&(follower, leader, PeerRpc::Forward)];
    assert_eq!(forwarded, 3);
    cluster.node(leader).read_barrier().await.unwrap();
    assert_eq!(revisions(cluster.node(leader), "web"), vec![1]);

    // The next write is a new batch and is applied as such.
    cluster.node(follower).write(register("web")).await.unwrap();
    cluster.node(leader).read_barrier().await.unwrap();
    assert_eq!(revisions(cluster.node(leader), "web"), vec![1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_lost_on_the_way_is_sent_again_and_applied_once() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let follower = cluster.followers_of(leader)[0];
    cluster.net.add(
        Rule::new(&[follower], &[leader], Fault::DropRequest)
            .only(&[PeerRpc::Forward])
            .times(1),
    );
    let output = cluster.node(follower).write(register("db")).await.unwrap();
    assert!(
        matches!(&output, CommandOutput::TaskDefinition(d) if d.revision == 1),
        "{output:?}"
    );
    cluster.node(leader).read_barrier().await.unwrap();
    assert_eq!(revisions(cluster.node(leader), "db"), vec![1]);
}

#[tokio::test]
async fn only_a_connect_failure_counts_as_not_sent() {
    // Nothing listens on this port: connecting fails, nothing was sent.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let peers = Peers::new(tonic::transport::ClientTlsConfig::new());
    let err = peers
        .call(&addr, PeerRpc::Forward, vec![], Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::NotSent(_)), "{err:?}");

    // A server that takes the connection and closes it during the TLS
    // handshake: still part of connecting, still nothing sent.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            drop(socket);
        }
    });
    let err = peers
        .call(&addr, PeerRpc::Forward, vec![], Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::NotSent(_)), "{err:?}");

    // Words alone prove nothing: hyper calls a reset in the middle of a
    // request a "connection error" too.
    let status = tonic::Status::unavailable("connection error");
    assert!(matches!(classify(&status), CallError::Unknown(_)));
    let status = tonic::Status::unavailable("error trying to connect: tcp connect error");
    assert!(matches!(classify(&status), CallError::Unknown(_)));
}
