//! Disaster recovery on the real store, started as a real openraft node:
//! a survivor's data dir of a three-server cluster becomes a one-server
//! cluster with every entry it held (committed or not), and an online
//! backup becomes a new one-server cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use berth_store::recovery::{self, Forced};
use berth_store::{Entry, LogId, Node, Raft, Request, StoreError, Vote};
use berth_types::Command;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload, Membership, RaftLogReader, RaftSnapshotBuilder};
use tempfile::TempDir;

mod common;
use common::{retry_locked, start_as};

fn create(name: String) -> Request {
    Request::new(vec![Command::CreateCluster {
        name,
        settings: Default::default(),
        at_ms: 1,
    }])
}

fn three_servers() -> Membership<u64, Node> {
    Membership::new(
        vec![BTreeSet::from([1, 2, 3])],
        BTreeMap::from([
            (1, Node::new("127.0.0.1:7401")),
            (2, Node::new("127.0.0.1:7402")),
            (3, Node::new("127.0.0.1:7403")),
        ]),
    )
}

/// What server 1 of a three-server cluster led by server 2 holds when the
/// other two are lost: the membership at 1, clusters `c-2` ... `c-{last}`
/// after it, a snapshot at `snapshot` with the log purged below
/// `snapshot - 2`, and a commit index (as far as it knew) of `committed`.
async fn survivor(last: u64, snapshot: u64, committed: u64) -> TempDir {
    let dir = TempDir::new().expect("temp dir");
    let (mut log, mut sm) = berth_store::open(dir.path()).expect("open");
    let mut entries = vec![Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), 1),
        payload: EntryPayload::Membership(three_servers()),
    }];
    entries.extend((2..=last).map(|index| Entry {
        log_id: LogId::new(CommittedLeaderId::new(2, 2), index),
        payload: EntryPayload::Normal(create(format!("c-{index}"))),
    }));
    log.save_vote(&Vote::new_committed(2, 2))
        .await
        .expect("vote");
    log.blocking_append(entries).await.expect("append");
    let applied = log
        .try_get_log_entries(1..=snapshot)
        .await
        .expect("read back");
    sm.apply(applied).await.expect("apply");
    sm.build_snapshot().await.expect("snapshot");
    log.purge(LogId::new(CommittedLeaderId::new(2, 2), snapshot - 2))
        .await
        .expect("purge");
    log.save_committed(Some(LogId::new(CommittedLeaderId::new(2, 2), committed)))
        .await
        .expect("committed");
    log.flush().await.expect("flush");
    dir
}

fn names(reader: &berth_store::StateReader) -> BTreeSet<String> {
    reader
        .read()
        .state
        .clusters()
        .map(|c| c.name.clone())
        .collect()
}

fn voters(raft: &Raft) -> Vec<u64> {
    raft.metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect()
}

async fn wait_applied(raft: &Raft, index: u64) {
    raft.wait(Some(Duration::from_secs(10)))
        .applied_index_at_least(Some(index), "applied")
        .await
        .expect("applies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_survivor_becomes_a_one_voter_cluster_keeping_every_entry_it_held() {
    let (last, snapshot, committed) = (30, 12, 20);
    let dir = survivor(last, snapshot, committed).await;
    let summary = unlocked(|| recovery::inspect(dir.path())).await;
    assert_eq!(summary.voters(), vec![1, 2, 3]);
    assert_eq!(summary.last_log_id.map(|id| id.index), Some(last));
    assert_eq!(summary.snapshot.map(|id| id.index), Some(snapshot));
    assert_eq!(summary.beyond_committed(), last - committed);

    let Forced {
        before,
        entry,
        address,
    } = unlocked(|| recovery::recover(dir.path(), 1, None)).await;
    assert_eq!(before.voters(), vec![1, 2, 3]);
    assert_eq!(address, "127.0.0.1:7401", "its address in the membership");
    let entry = entry.expect("a membership entry was appended");
    assert_eq!(entry.index, last + 1);
    assert_eq!(entry.leader_id.term, 3, "a term above any seen");

    let (raft, reader) = start_as(dir.path(), 1).await;
    assert_eq!(voters(&raft), vec![1]);
    // Its first entry as leader commits everything before it, the entries
    // it never knew to be committed included.
    wait_applied(&raft, last + 2).await;
    let held: BTreeSet<String> = (2..=last).map(|i| format!("c-{i}")).collect();
    let found = names(&reader);
    assert!(
        found.is_superset(&held),
        "missing: {:?}",
        held.difference(&found)
    );
    // The recovery is in the journal as a membership change by server 1.
    let membership_events: Vec<_> = reader
        .read()
        .state
        .journal()
        .events()
        .after(None, usize::MAX, |e| {
            matches!(
                e.detail,
                berth_types::journal::EventDetail::MembershipChange { .. }
            )
        })
        .expect("journal")
        .into_iter()
        .map(|e| (e.actor.principal.name(), format!("{:?}", e.detail)))
        .collect();
    let recovered = membership_events.last().expect("a membership event");
    assert_eq!(recovered.0, "server:1", "{membership_events:?}");
    assert!(recovered.1.contains("voters: [1]"), "{membership_events:?}");
    raft.client_write(create("after".into()))
        .await
        .expect("writes are accepted");
    raft.shutdown().await.expect("shutdown");
    drop(raft);

    // A second run finds it alone already and changes nothing; a restart
    // keeps it the leader of its one-server cluster.
    let again = unlocked(|| recovery::recover(dir.path(), 1, None)).await;
    assert_eq!(again.entry, None);
    assert_eq!(again.before.voters(), vec![1]);
    let (raft, reader) = start_as(dir.path(), 1).await;
    assert_eq!(voters(&raft), vec![1]);
    assert!(names(&reader).contains("after"));
    raft.shutdown().await.expect("shutdown");
}

/// `f`'s result once the previous handles' flush thread has let go of
/// sled's lock on the data dir.
async fn unlocked<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match f().await {
            Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Ok(v) => return v,
            Err(e) => panic!("{e}"),
        }
    }
}

/// `f`'s error once sled's lock is released (see `unlocked`).
async fn refused<T: std::fmt::Debug, F, Fut>(mut f: F) -> StoreError
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match f().await {
            Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => return e,
            Ok(v) => panic!("expected an error, got {v:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_refuses_a_non_member_an_empty_data_dir_and_a_running_server() {
    let dir = survivor(5, 3, 5).await;
    let err = refused(|| recovery::recover(dir.path(), 4, None)).await;
    let message = err.to_string();
    assert!(
        message.contains("node 4 is not a member") && message.contains("[1, 2, 3]"),
        "{message}"
    );

    // While berthd runs, sled's lock says so.
    let (held, _sm) = retry_locked(|| berth_store::open(dir.path())).await;
    let err = recovery::recover(dir.path(), 1, None)
        .await
        .expect_err("in use");
    assert!(err.to_string().contains("is berthd still running"), "{err}");
    drop(held);

    let empty = TempDir::new().expect("temp dir");
    let err = recovery::recover(empty.path(), 1, None)
        .await
        .expect_err("nothing to recover");
    assert!(err.to_string().contains("holds no cluster"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_becomes_a_new_one_server_cluster_without_what_came_after_it() {
    let source = TempDir::new().expect("temp dir");
    let (raft, reader) = {
        let (log, sm) = berth_store::open(source.path()).expect("open");
        let reader = sm.reader();
        let raft = Raft::new(
            1,
            std::sync::Arc::new(common::config()),
            common::NoPeers,
            log,
            sm,
        )
        .await
        .expect("start");
        raft.initialize(BTreeMap::from([(1, Node::new("127.0.0.1:7401"))]))
            .await
            .expect("initialize");
        // A write before the election ends is refused (no leader yet),
        // which a loaded machine makes likely.
        raft.wait(Some(Duration::from_secs(10)))
            .state(openraft::ServerState::Leader, "leader")
            .await
            .expect("becomes leader");
        (raft, reader)
    };
    for i in 0..10 {
        raft.client_write(create(format!("before-{i}")))
            .await
            .expect("write");
    }
    let backup = reader.backup();
    let at = backup.last_applied.expect("applied something");
    raft.client_write(create("after".into()))
        .await
        .expect("write");
    raft.shutdown().await.expect("shutdown");
    let file = source.path().join("backup.snap");

    // Without an address for a server the backup's cluster does not have.
    let target = TempDir::new().expect("temp dir");
    let err = recovery::restore(target.path(), &file, &backup.bytes, 7, None)
        .await
        .expect_err("no address");
    assert!(err.to_string().contains("--advertise"), "{err}");
    // A damaged file.
    let mut damaged = backup.bytes.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 1;
    let err = recovery::restore(target.path(), &file, &damaged, 7, Some("127.0.0.1:7407"))
        .await
        .expect_err("damaged");
    assert!(err.to_string().contains("checksum"), "{err}");

    let restored = recovery::restore(
        target.path(),
        &file,
        &backup.bytes,
        7,
        Some("127.0.0.1:7407"),
    )
    .await
    .expect("restore");
    assert_eq!(restored.before.voters(), vec![1], "the backup's membership");
    assert_eq!(restored.entry.map(|e| e.index), Some(at.index + 1));

    let (raft, reader) = start_as(target.path(), 7).await;
    assert_eq!(voters(&raft), vec![7]);
    wait_applied(&raft, at.index + 2).await;
    let found = names(&reader);
    for i in 0..10 {
        assert!(found.contains(&format!("before-{i}")), "{found:?}");
    }
    assert!(
        !found.contains("after"),
        "written after the backup: {found:?}"
    );
    raft.client_write(create("on-the-restored".into()))
        .await
        .expect("writes are accepted");
    raft.shutdown().await.expect("shutdown");

    // Never over an existing data dir.
    let err =
        refused(|| recovery::restore(target.path(), &file, &backup.bytes, 7, Some("x:1"))).await;
    assert!(err.to_string().contains("new, empty data dir"), "{err}");
}
