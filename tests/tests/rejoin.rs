//! End-to-end: a server whose data dir was wiped, started again with the
//! same command line (the same `--initial-cluster`), neither forms a new
//! cluster nor votes before it has caught up; the cluster keeps its leader
//! and its data.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use anyhow::{ensure, Result};
use berth_e2e::*;
use berth_types::ServerRole;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_member_restarted_with_the_same_command_line_catches_up_without_initializing(
) -> Result<()> {
    let mut cluster = TestCluster::start(3, &[]).await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await?;
    for i in 0..5 {
        register(&cluster.addr(leader), "web", &format!("m{i}")).await?;
    }
    let before = status(&cluster.addr(leader)).await?;
    let lost = (1..=3).find(|id| *id != leader).unwrap();

    // Lose everything but the certificates (the documented procedure
    // issues them again; keeping them changes nothing here).
    cluster.server(lost).kill9();
    let data_dir = cluster.server(lost).data_dir.clone();
    for entry in std::fs::read_dir(&data_dir)? {
        let path = entry?.path();
        if path.file_name().is_some_and(|n| n != "pki") {
            if path.is_dir() {
                std::fs::remove_dir_all(&path)?;
            } else {
                std::fs::remove_file(&path)?;
            }
        }
    }
    let earlier = cluster.server(lost).log().len();
    cluster.server(lost).start()?;

    // It catches up: every write is readable through it.
    let addr = cluster.addr(lost);
    let revisions = eventually(Duration::from_secs(30), || {
        let addr = addr.clone();
        async move {
            let revisions: Vec<u32> = list_family(&addr, "web")
                .await?
                .iter()
                .map(|d| d.revision)
                .collect();
            ensure!(revisions.len() == 5, "{revisions:?}");
            Ok(revisions)
        }
    })
    .await?;
    assert_eq!(revisions, vec![1, 2, 3, 4, 5]);
    // What it logged since the restart.
    let log = eventually(Duration::from_secs(10), || {
        let log = cluster.server(lost).log().split_off(earlier);
        async move {
            ensure!(log.contains("voting again"), "not caught up yet:\n{log}");
            Ok(log)
        }
    })
    .await?;
    assert!(
        log.contains("not initializing: the cluster in --initial-cluster exists already"),
        "{log}"
    );
    assert!(!log.contains("initialized a new cluster"), "{log}");

    // One leader, the same one, in the same term, and nothing lost.
    let after = status(&cluster.addr(leader)).await?;
    assert_eq!(after.leader_id, Some(leader));
    assert_eq!(after.term, before.term, "the rejoin disturbed the leader");
    let leaders = after
        .members
        .iter()
        .filter(|m| m.role == ServerRole::Leader)
        .count();
    assert_eq!(leaders, 1, "{after:?}");
    assert!(!data_dir.join("rejoin.json").exists());
    Ok(())
}
