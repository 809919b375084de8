//! The state survives restarts: it is the newest snapshot file plus the
//! committed log entries after it, which openraft applies again on start.
//! A one-server Raft on the real sled store and snapshot files.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use berth_store::{Node, Raft, Request};
use berth_types::Command;
use tempfile::TempDir;

mod common;
use common::{retry_locked, NoPeers};

async fn start(dir: &TempDir) -> (Raft, berth_store::StateReader) {
    let (log, sm) = retry_locked(|| berth_store::open(dir.path())).await;
    let reader = sm.reader();
    let raft = Raft::new(1, Arc::new(common::config()), NoPeers, log, sm)
        .await
        .expect("start raft");
    let _ = raft
        .initialize(BTreeMap::from([(1, Node::default())]))
        .await;
    raft.wait(Some(Duration::from_secs(10)))
        .state(openraft::ServerState::Leader, "leader")
        .await
        .expect("becomes leader");
    (raft, reader)
}

async fn create_clusters(raft: &Raft, names: impl Iterator<Item = String>) {
    for name in names {
        let response = raft
            .client_write(Request::new(vec![Command::CreateCluster {
                name,
                settings: Default::default(),
                at_ms: 1,
            }]))
            .await
            .expect("write");
        assert!(
            matches!(&response.data.outcomes[..], [berth_store::BatchOutcome::Applied(r)] if r[0].is_ok()),
            "{:?}",
            response.data
        );
    }
}

fn cluster_names(reader: &berth_store::StateReader) -> Vec<String> {
    let applied = reader.read();
    applied.state.clusters().map(|c| c.name.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_is_the_snapshot_plus_the_log_after_it() {
    let dir = TempDir::new().expect("temp dir");
    let (raft, _) = start(&dir).await;
    create_clusters(&raft, (0..20).map(|i| format!("before-{i:02}"))).await;
    raft.trigger().snapshot().await.expect("trigger snapshot");
    raft.wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.snapshot.is_some(), "snapshot built")
        .await
        .expect("snapshot");
    // Written after the snapshot: only in the log.
    create_clusters(&raft, (0..15).map(|i| format!("after-{i:02}"))).await;
    raft.shutdown().await.expect("shutdown");
    drop(raft);

    assert!(dir.path().join("snapshots/current").exists());
    let (raft, reader) = start(&dir).await;
    let names = cluster_names(&reader);
    for i in 0..20 {
        assert!(
            names.contains(&format!("before-{i:02}")),
            "before-{i:02} lost: {names:?}"
        );
    }
    for i in 0..15 {
        assert!(
            names.contains(&format!("after-{i:02}")),
            "after-{i:02} lost: {names:?}"
        );
    }
    // A second restart, with writes on both sides, changes nothing either.
    create_clusters(&raft, std::iter::once("third".to_string())).await;
    raft.shutdown().await.expect("shutdown");
    drop(raft);
    let (raft, reader) = start(&dir).await;
    assert_eq!(cluster_names(&reader).len(), names.len() + 1);
    raft.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_of_another_format_is_refused_with_what_to_do() {
    // Format 1 kept no marker; its log and vote were in the same trees.
    let dir = TempDir::new().expect("temp dir");
    {
        let db = sled::open(dir.path().join("db")).expect("sled");
        let log = db.open_tree("raft_log").expect("tree");
        log.insert(1u64.to_be_bytes(), b"an old entry".to_vec())
            .expect("insert");
        db.flush().expect("flush");
    }
    let err = berth_store::open(dir.path()).err().expect("refused");
    let message = err.to_string();
    assert!(message.contains("data format 1"), "{message}");
    assert!(message.contains("berth server add"), "{message}");

    // A marker of a newer format is refused as well.
    let dir = TempDir::new().expect("temp dir");
    {
        let db = sled::open(dir.path().join("db")).expect("sled");
        let meta = db.open_tree("raft_meta").expect("tree");
        meta.insert(b"format", &99u32.to_be_bytes())
            .expect("insert");
        db.flush().expect("flush");
    }
    let err = berth_store::open(dir.path()).err().expect("refused");
    assert!(err.to_string().contains("format 99"), "{err}");

    // A new data dir is marked, and opens again.
    let dir = TempDir::new().expect("temp dir");
    drop(berth_store::open(dir.path()).expect("new data dir"));
    drop(retry_locked(|| berth_store::open(dir.path())).await);
}
