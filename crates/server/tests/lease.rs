//! A leader checks API tokens against its own state without a read barrier
//! only while it holds its lease: once cut off from the others it stops,
//! before another leader can be elected and revoke anything.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster;

use std::time::Duration;

use berth_pki::tokens::{hash_secret, ApiTokenSecret};
use berth_server::auth::Authorizer;
use berth_types::{Command, Role};
use cluster::{TestCluster, ELECTION_MS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_others_refuses_a_token_revoked_elsewhere() {
    let cluster = TestCluster::start(3).await;
    let old = cluster.leader().await;
    let others = cluster.followers_of(old);
    let token = ApiTokenSecret::generate();
    cluster
        .node(old)
        .write(Command::CreateApiToken {
            id: token.id.clone(),
            role: Role::Admin,
            description: "test".into(),
            secret_hash: hash_secret(&token.secret),
            expires_at_ms: None,
            at_ms: 1,
        })
        .await
        .unwrap();
    let header = Some(format!("Bearer {}", token.encode()));
    let auth = Authorizer::new(cluster.node(old).clone(), "test".into(), None);
    // Healthy: the token is accepted, and without a barrier.
    assert!(cluster.node(old).can_read_locally());
    auth.check_authorization(header.clone(), Role::Admin)
        .await
        .unwrap();

    cluster.net.partition(&[old], &others);
    let new = cluster.leader_among(&others).await;
    cluster
        .node(new)
        .write(Command::RevokeApiToken {
            id: token.id.clone(),
            at_ms: 2,
        })
        .await
        .unwrap();

    // The old leader has not heard of the new one: it still thinks it leads
    // and has the token unrevoked in its state...
    let deposed = cluster.node(old);
    assert!(deposed.is_leader(), "openraft stepped the old leader down");
    assert!(deposed.has_applied_own_term());
    assert!(deposed
        .state()
        .read()
        .state
        .api_token(&token.id)
        .is_some_and(|t| t.revoked_at_ms.is_none()));
    // ...but its lease ran out before the others could elect anyone, so it
    // asks them, and cannot get an answer.
    assert!(!deposed.can_read_locally());
    let refused = auth
        .check_authorization(header.clone(), Role::Admin)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");

    // Healed, it learns of the new leader and of the revocation.
    cluster.net.heal();
    cluster.leader().await;
    let refused = auth
        .check_authorization(header, Role::Admin)
        .await
        .unwrap_err();
    assert!(refused.message().contains("revoked"), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_runs_out_within_the_election_timeout_of_the_last_acknowledgement() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    // Heartbeats keep it renewed.
    for _ in 0..5 {
        assert!(cluster.node(leader).holds_lease());
        tokio::time::sleep(Duration::from_millis(ELECTION_MS / 2)).await;
    }
    let cut = tokio::time::Instant::now();
    cluster
        .net
        .partition(&[leader], &cluster.followers_of(leader));
    while cluster.node(leader).holds_lease() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        cut.elapsed() <= Duration::from_millis(ELECTION_MS),
        "lease held {:?} after the cut",
        cut.elapsed()
    );
}
