//! A leader checks API tokens against its own state without a read barrier
//! only while it holds its lease: once cut off from the others it stops,
//! before another leader can be elected and revoke anything.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster;

use std::time::Duration;

use berth_pki::tokens::{hash_secret, ApiTokenSecret};
use berth_server::auth::Authorizer;
use berth_types::{Command, Role};
use cluster::{TestCluster, ELECTION_MS, HEARTBEAT_MS};
use openraft::ServerState;

#[tokio::test(start_paused = true)]
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

/// On the virtual clock the order of events is exact: the cut-off leader's
/// lease ends within the election timeout of the cut, and no later than the
/// others elect a new leader.
#[tokio::test(start_paused = true)]
async fn the_lease_runs_out_within_the_election_timeout_and_before_anyone_else_is_elected() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    // Heartbeats keep it renewed.
    for _ in 0..5 {
        assert!(cluster.node(leader).holds_lease());
        tokio::time::sleep(Duration::from_millis(ELECTION_MS / 2)).await;
    }
    let others = cluster.followers_of(leader);
    let cut = tokio::time::Instant::now();
    cluster.net.partition(&[leader], &others);
    let (mut lease_ended, mut new_leader_at) = (None, None);
    while lease_ended.is_none() || new_leader_at.is_none() {
        if lease_ended.is_none() && !cluster.node(leader).holds_lease() {
            lease_ended = Some(cut.elapsed());
        }
        let elected = others
            .iter()
            .any(|id| cluster.node(*id).metrics().state == ServerState::Leader);
        if new_leader_at.is_none() && elected {
            new_leader_at = Some(cut.elapsed());
        }
        assert!(cut.elapsed() < Duration::from_secs(10), "nothing happened");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let (lease_ended, new_leader_at) = (lease_ended.unwrap(), new_leader_at.unwrap());
    eprintln!("lease ended {lease_ended:?} after the cut, a new leader {new_leader_at:?}");
    assert!(
        lease_ended <= Duration::from_millis(ELECTION_MS),
        "lease held {lease_ended:?} after the cut"
    );
    assert!(
        lease_ended >= Duration::from_millis(ELECTION_MS - 2 * HEARTBEAT_MS),
        "lease ended {lease_ended:?} after the cut: earlier than its last heartbeat allows"
    );
    // Equal instants are possible on this clock (a message takes no time and
    // a follower may time out at the minimum): the new leader has then not
    // committed anything yet.
    assert!(
        lease_ended <= new_leader_at,
        "a new leader ({new_leader_at:?}) while the old one held its lease ({lease_ended:?})"
    );
}
