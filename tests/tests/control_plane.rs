//! End-to-end: real berthd processes on loopback, faults included.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{bail, ensure, Result};
use berth_e2e::*;
use berth_proto::pb;
use berth_proto::pb::raft_service_client::RaftServiceClient;
use berth_proto::pb::task_definition_service_client::TaskDefinitionServiceClient;
use berth_types::{ServerRole, TaskDefinition, TaskDefinitionStatus};

const LONG: Duration = Duration::from_secs(30);

async fn describe(addr: &str, reference: &str) -> Result<pb::TaskDefinition> {
    let mut client = taskdefs(addr).await?;
    let reply = client
        .describe_task_definition(pb::DescribeTaskDefinitionRequest {
            task_definition: reference.into(),
        })
        .await?;
    Ok(reply.into_inner().task_definition.unwrap())
}

/// Writes through one server are read back, linearizably, from every server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_forms_and_every_server_serves_reads_and_writes() -> Result<()> {
    let cluster = TestCluster::start(3, &[]).await?;
    let mut registered = Vec::new();
    for id in 1..=3u64 {
        let td = register(&cluster.addr(id), "web", &format!("via-{id}")).await?;
        registered.push(td);
    }
    let revisions: Vec<u32> = registered.iter().map(|td| td.revision).collect();
    assert_eq!(
        revisions,
        vec![1, 2, 3],
        "revisions are contiguous in order of acknowledgement"
    );

    for id in 1..=3u64 {
        let addr = cluster.addr(id);
        for td in &registered {
            let read = describe(&addr, &format!("web:{}", td.revision)).await?;
            assert_eq!(
                marker_of(&read),
                marker_of(td),
                "server {id} reads web:{}",
                td.revision
            );
        }
        // The bare family resolves to the latest ACTIVE revision everywhere.
        assert_eq!(describe(&addr, "web").await?.revision, 3);
    }

    let status = status(&cluster.addr(2)).await?;
    assert_eq!(status.members.len(), 3);
    let leaders: Vec<_> = status
        .members
        .iter()
        .filter(|m| m.role == ServerRole::Leader)
        .collect();
    assert_eq!(leaders.len(), 1, "{status:?}");
    assert!(
        status.members.iter().all(|m| m.reachable && m.voter),
        "{status:?}"
    );
    assert!(
        status.members.iter().all(|m| m.applied_index >= 4),
        "{status:?}"
    );
    Ok(())
}

/// Validation errors reach the client with the field and nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_task_definition_is_refused_with_the_field_and_writes_nothing() -> Result<()> {
    let cluster = TestCluster::start(1, &[]).await?;
    let addr = cluster.addr(1);
    let mut bad = spec("web", "x");
    bad.container_definitions[0].image.clear();
    bad.container_definitions[0].memory = Some(2);
    let err = taskdefs(&addr)
        .await?
        .register_task_definition(pb::RegisterTaskDefinitionRequest { spec: Some(bad) })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("containerDefinitions[0].image"),
        "{}",
        err.message()
    );
    assert!(
        err.message().contains("containerDefinitions[0].memory"),
        "{}",
        err.message()
    );
    assert!(list_family(&addr, "web").await?.is_empty());
    // The refused registration did not use up revision 1.
    assert_eq!(register(&addr, "web", "ok").await?.revision, 1);

    let mut clusters = clusters(&addr).await?;
    let dup = clusters
        .create_cluster(pb::CreateClusterRequest {
            name: "default".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(dup.code(), tonic::Code::AlreadyExists);
    let del = clusters
        .delete_cluster(pb::DeleteClusterRequest {
            name: "default".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(del.code(), tonic::Code::FailedPrecondition);
    Ok(())
}

/// kill -9 of the leader: a new leader is elected, writes continue, nothing
/// acknowledged is lost, and the killed server catches up after restart.
/// SetJournalRetention, a command of level 4.
async fn set_retention(addr: &str, max_records: u32) -> Result<pb::JournalRetention> {
    Ok(
        pb::event_service_client::EventServiceClient::new(channel(addr).await?)
            .set_journal_retention(pb::SetJournalRetentionRequest {
                max_records,
                max_age_secs: 86_400,
            })
            .await?
            .into_inner(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill9_loses_no_acknowledged_write() -> Result<()> {
    let mut cluster = TestCluster::start(3, &[]).await?;
    let mut acked = BTreeMap::new();
    for i in 0..20 {
        let via = cluster.addr(1 + i % 3);
        let td = register(&via, "svc", &format!("before-{i}")).await?;
        acked.insert(td.revision, marker_of(&td));
    }
    // A level-4 command through every server while all are up: each has
    // heard every member say its level.
    for id in 1..=3u64 {
        let retention = set_retention(&cluster.addr(id), 4_000 + id as u32).await?;
        assert_eq!(retention.max_records, 4_000 + id as u32);
    }
    let old_leader = cluster.wait_for_leader(LONG).await?;
    cluster.server(old_leader).kill9();
    let new_leader = cluster.wait_for_leader(LONG).await?;
    assert_ne!(new_leader, old_leader);

    let survivors: Vec<u64> = (1..=3).filter(|id| *id != old_leader).collect();
    // Commands above level 1 stay available with a server down: it counts
    // with the level it said before it went.
    for (i, id) in survivors.iter().enumerate() {
        let addr = cluster.addr(*id);
        let max = 5_000 + i as u32;
        let retention = eventually(LONG, || set_retention(&addr, max)).await?;
        assert_eq!(retention.max_records, max);
    }
    for i in 0..10 {
        let via = cluster.addr(survivors[i % 2]);
        let marker = format!("after-{i}");
        let td = eventually(LONG, || register(&via, "svc", &marker)).await?;
        acked.insert(td.revision, marker_of(&td));
    }
    for id in &survivors {
        let stored = list_family(&cluster.addr(*id), "svc").await?;
        let stored: BTreeMap<u32, String> = stored
            .iter()
            .map(|td| (td.revision, marker_of(td)))
            .collect();
        assert_eq!(
            stored, acked,
            "server {id} holds exactly the acknowledged writes"
        );
    }

    cluster.server(old_leader).start()?;
    let addr = cluster.addr(old_leader);
    let expected = acked.clone();
    eventually(LONG, || {
        let addr = addr.clone();
        let expected = expected.clone();
        async move {
            let stored = list_family(&addr, "svc").await?;
            let stored: BTreeMap<u32, String> = stored
                .iter()
                .map(|td| (td.revision, marker_of(td)))
                .collect();
            ensure!(stored == expected, "restarted server not caught up yet");
            Ok(())
        }
    })
    .await?;
    // It is a full member again: its own applied index matches the others'.
    let status = status(&addr).await?;
    assert!(status.members.iter().all(|m| m.reachable), "{status:?}");
    Ok(())
}

/// SIGTERM of every server, then a restart with the same command lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_stop_and_restart_keeps_everything() -> Result<()> {
    let mut cluster = TestCluster::start(3, &[]).await?;
    let addr = cluster.addr(1);
    clusters(&addr)
        .await?
        .create_cluster(pb::CreateClusterRequest {
            name: "prod".into(),
            ..Default::default()
        })
        .await?;
    for i in 0..5 {
        register(&addr, "api", &format!("m{i}")).await?;
    }
    let mut deregister = taskdefs(&addr).await?;
    deregister
        .deregister_task_definition(pb::DeregisterTaskDefinitionRequest {
            task_definition: "api:5".into(),
        })
        .await?;

    for id in 1..=3 {
        let status = cluster.server(id).terminate()?;
        assert!(
            status.success(),
            "server {id} exited with {status} on SIGTERM"
        );
    }
    assert!(cluster.server(1).log().contains("shutting down"));
    for id in 1..=3 {
        cluster.server(id).start()?;
    }
    cluster.wait_for_leader(LONG).await?;

    for id in 1..=3 {
        let addr = cluster.addr(id);
        let stored = eventually(LONG, || list_family(&addr, "api")).await?;
        assert_eq!(stored.len(), 5, "server {id}");
        let last: TaskDefinition = from_wire(stored[4].clone())?;
        assert_eq!(last.status, TaskDefinitionStatus::Inactive);
        assert_eq!(describe(&addr, "api").await?.revision, 4);
        let mut c = clusters(&addr).await?;
        let names: BTreeSet<String> = c
            .list_clusters(pb::ListClustersRequest {})
            .await?
            .into_inner()
            .clusters
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(
            names,
            BTreeSet::from(["default".to_string(), "prod".to_string()])
        );
    }
    // Revisions continue where they were, never reused.
    assert_eq!(
        register(&cluster.addr(2), "api", "after").await?.revision,
        6
    );
    Ok(())
}

/// A server added at runtime catches up through a snapshot (the log it
/// would need has been compacted away), is promoted to voter, and a removed
/// server leaves the membership.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_server_catches_up_from_snapshot_and_removed_server_leaves() -> Result<()> {
    let mut cluster =
        TestCluster::start(3, &["--snapshot-threshold", "20", "--keep-logs", "0"]).await?;
    let addr = cluster.addr(1);
    for i in 0..60 {
        register(&addr, "bulk", &format!("b{i}")).await?;
    }
    let leader = cluster.wait_for_leader(LONG).await?;
    let leader_addr = cluster.addr(leader);
    eventually(LONG, || {
        let leader_addr = leader_addr.clone();
        async move {
            let status = status(&leader_addr).await?;
            let _ = status;
            Ok(())
        }
    })
    .await?;

    let new_addr = cluster.start_joiner(4)?;
    let mut cp = control_plane(&cluster.addr(2)).await?;
    let reply = cp
        .add_server(pb::AddServerRequest {
            node_id: 4,
            address: new_addr.clone(),
            learner_only: false,
        })
        .await?
        .into_inner();
    let four = reply
        .members
        .iter()
        .find(|m| m.node_id == 4)
        .expect("member 4");
    assert!(four.voter, "{reply:?}");

    let stored = eventually(LONG, || list_family(&new_addr, "bulk")).await?;
    assert_eq!(stored.len(), 60);
    // Node 4 started empty, and the leader's log no longer holds the early
    // entries, so it can only have got them from a snapshot.
    let members = status(&new_addr).await?.members;
    let own = members.iter().find(|m| m.node_id == 4).expect("member 4");
    assert!(
        own.snapshot_index > 0,
        "node 4 installed no snapshot: {own:?}"
    );

    let reply = cp
        .remove_server(pb::RemoveServerRequest { node_id: 3 })
        .await?
        .into_inner();
    let ids: BTreeSet<u64> = reply.members.iter().map(|m| m.node_id).collect();
    assert_eq!(ids, BTreeSet::from([1, 2, 4]));
    // The remaining three still accept writes.
    register(&cluster.addr(4), "bulk", "after-remove").await?;

    // The removed server's certificate no longer speaks for a server: the
    // others refuse it for Raft and for the API, which a server's
    // certificate otherwise passes without a token.
    let pki = cluster.dir.path().join("node3").join("pki");
    let cert = std::fs::read_to_string(pki.join("server.crt"))?;
    let key = std::fs::read_to_string(pki.join("server.key"))?;
    for id in [1, 2, 4] {
        let addr = cluster.addr(id);
        let removed = tls_channel(&addr, Some((&cert, &key))).await?;
        let vote = RaftServiceClient::new(removed.clone())
            .vote(pb::RaftPayload { data: vec![0] })
            .await
            .expect_err("a removed server's vote is refused");
        assert_eq!(vote.code(), tonic::Code::PermissionDenied, "{vote:?}");
        assert!(
            vote.message().contains("server 3 is not a member"),
            "{vote:?}"
        );
        let write = TaskDefinitionServiceClient::new(removed)
            .register_task_definition(pb::RegisterTaskDefinitionRequest {
                spec: Some(spec("bulk", "from-removed")),
            })
            .await
            .expect_err("a removed server cannot call the API");
        assert_eq!(write.code(), tonic::Code::PermissionDenied, "{write:?}");
    }
    // A member's certificate still passes (servers pass calls on to each
    // other), so the refusal above is about membership, not certificates.
    let member = cluster.dir.path().join("node2").join("pki");
    let member_channel = tls_channel(
        &cluster.addr(1),
        Some((
            &std::fs::read_to_string(member.join("server.crt"))?,
            &std::fs::read_to_string(member.join("server.key"))?,
        )),
    )
    .await?;
    TaskDefinitionServiceClient::new(member_channel)
        .list_task_definitions(pb::ListTaskDefinitionsRequest::default())
        .await?;
    Ok(())
}

/// Many clients register revisions of one family in parallel through
/// different servers while the leader is killed: the acknowledged ones are
/// all there, each revision holds exactly what was acknowledged for it, and
/// revisions are contiguous.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registrations_across_leader_kill_stay_contiguous() -> Result<()> {
    let mut cluster = TestCluster::start(3, &[]).await?;
    let addrs: Vec<String> = (1..=3).map(|id| cluster.addr(id)).collect();
    let clients = 12;
    let killed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut handles = Vec::new();
    for c in 0..clients {
        let addrs = addrs.clone();
        let (killed, stop) = (killed.clone(), stop.clone());
        handles.push(tokio::spawn(async move {
            use std::sync::atomic::Ordering::SeqCst;
            let mut acked = Vec::new();
            let mut after_kill = 0;
            let mut i = 0;
            while !stop.load(SeqCst) {
                // Rotate through servers so a dead one is skipped next time.
                let addr = &addrs[(c + i) % addrs.len()];
                let marker = format!("c{c}-{i}");
                let was_killed = killed.load(SeqCst);
                if let Ok(td) = register(addr, "conc", &marker).await {
                    acked.push((td.revision, marker));
                    after_kill += usize::from(was_killed);
                }
                i += 1;
            }
            (acked, after_kill)
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let leader = cluster.wait_for_leader(LONG).await?;
    cluster.server(leader).kill9();
    killed.store(true, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);

    let mut acked: Vec<(u32, String)> = Vec::new();
    let mut acked_after_kill = 0;
    for h in handles {
        let (a, after) = h.await?;
        acked.extend(a);
        acked_after_kill += after;
    }
    assert!(
        acked_after_kill > 0,
        "no write was acknowledged after the leader was killed"
    );
    assert!(
        acked.len() > acked_after_kill,
        "no write was acknowledged before the kill"
    );
    let acked_revisions: BTreeSet<u32> = acked.iter().map(|(r, _)| *r).collect();
    assert_eq!(
        acked_revisions.len(),
        acked.len(),
        "a revision was acknowledged twice"
    );
    eprintln!(
        "acknowledged {} registrations, {acked_after_kill} after the kill",
        acked.len()
    );

    let survivor = (1..=3).find(|id| *id != leader).unwrap();
    let survivor_addr = cluster.addr(survivor);
    let stored = eventually(LONG, || list_family(&survivor_addr, "conc")).await?;
    let revisions: Vec<u32> = stored.iter().map(|td| td.revision).collect();
    let expected: Vec<u32> = (1..=stored.len() as u32).collect();
    assert_eq!(revisions, expected, "revisions are contiguous with no gaps");
    let stored: BTreeMap<u32, String> = stored
        .iter()
        .map(|td| (td.revision, marker_of(td)))
        .collect();
    for (revision, marker) in &acked {
        assert_eq!(
            stored.get(revision),
            Some(marker),
            "acknowledged conc:{revision} lost or changed"
        );
    }
    // No marker was stored under two revisions.
    let markers: BTreeSet<&String> = stored.values().collect();
    assert_eq!(
        markers.len(),
        stored.len(),
        "a registration was applied twice"
    );
    Ok(())
}

/// Starting on another node's data dir fails fast with a one-line error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_of_another_node_or_bad_flags_are_refused() -> Result<()> {
    let mut cluster = TestCluster::start(1, &[]).await?;
    let dir = cluster.server(1).data_dir.clone();
    cluster.server(1).terminate()?;
    assert!(data_dir_exists(&dir));
    let port = free_port();
    let run = |args: Vec<String>| {
        std::process::Command::new(binary("berthd"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(vec![
        "serve".into(),
        "--node-id".into(),
        "2".into(),
        "--data-dir".into(),
        dir.display().to_string(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--initial-cluster".into(),
        format!("2=127.0.0.1:{port}"),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: data dir") && last.contains("belongs to node 1"),
        "{stderr}"
    );

    let out = run(vec![
        "serve".into(),
        "--node-id".into(),
        "1".into(),
        "--data-dir".into(),
        "/proc/berth-cannot-live-here".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not usable"), "{stderr}");

    let out = run(vec![
        "serve".into(),
        "--node-id".into(),
        "1".into(),
        "--listen".into(),
        "nonsense".into(),
    ]);
    assert!(!out.status.success());
    if out.status.code() != Some(2) {
        bail!("bad flags should be a usage error: {:?}", out);
    }
    Ok(())
}

/// Moving a server to a new address: `server add` at the new address is
/// refused while it is a member at the old one; removed, started on an
/// empty data dir at the new address and added again, it catches up, votes
/// and serves there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_moves_to_a_new_address_by_remove_and_add() -> Result<()> {
    let mut cluster = TestCluster::start(3, &[]).await?;
    for i in 0..10 {
        register(&cluster.addr(1 + i % 3), "mv", &format!("m{i}")).await?;
    }
    let leader = cluster.wait_for_leader(LONG).await?;
    let moved = (1..=3).find(|id| *id != leader).unwrap();
    let old_addr = cluster.addr(moved);
    let mut cp = control_plane(&cluster.addr(leader)).await?;

    let elsewhere = format!("127.0.0.1:{}", free_port());
    let refused = cp
        .add_server(pb::AddServerRequest {
            node_id: moved,
            address: elsewhere.clone(),
            learner_only: false,
        })
        .await
        .expect_err("a member cannot be re-added at another address");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused
            .message()
            .contains(&format!("already a member, at {old_addr}")),
        "{refused:?}"
    );

    cp.remove_server(pb::RemoveServerRequest { node_id: moved })
        .await?;
    assert!(cluster.server(moved).terminate()?.success());
    std::fs::remove_dir_all(&cluster.server(moved).data_dir)?;
    let new_addr = cluster.start_joiner(moved)?;
    assert_ne!(new_addr, old_addr);
    let reply = cp
        .add_server(pb::AddServerRequest {
            node_id: moved,
            address: new_addr.clone(),
            learner_only: false,
        })
        .await?
        .into_inner();
    let member = reply
        .members
        .iter()
        .find(|m| m.node_id == moved)
        .expect("moved member");
    assert_eq!(member.address, new_addr);
    assert!(member.voter, "{reply:?}");

    let stored = eventually(LONG, || {
        let new_addr = new_addr.clone();
        async move {
            let stored = list_family(&new_addr, "mv").await?;
            ensure!(stored.len() == 10, "{} of 10", stored.len());
            Ok(stored)
        }
    })
    .await?;
    assert_eq!(stored.len(), 10);
    let members = status(&cluster.addr(leader)).await?.members;
    assert_eq!(members.len(), 3, "{members:?}");
    assert!(
        members.iter().all(|m| m.voter && m.reachable),
        "{members:?}"
    );
    assert!(
        !members.iter().any(|m| m.address == old_addr),
        "{members:?}"
    );
    assert_eq!(register(&new_addr, "mv", "moved").await?.revision, 11);
    Ok(())
}
