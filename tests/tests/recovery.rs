//! End-to-end disaster recovery with real berthd processes: a three-server
//! cluster loses two servers and their disks for good; `berthd recover` on
//! the survivor makes it a one-server cluster with every acknowledged write
//! it held, and two fresh servers are added back with `berth server add`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{ensure, Result};
use berth_e2e::*;
use berth_proto::pb;
use berth_types::ServerRole;

const LONG: Duration = Duration::from_secs(30);

fn berthd(args: &[&str]) -> Output {
    Command::new(binary("berthd"))
        .args(args)
        .env_remove("BERTH_CONFIG")
        .output()
        .expect("run berthd")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

async fn stored(addr: &str, family: &str) -> Result<BTreeMap<u32, String>> {
    Ok(list_family(addr, family)
        .await?
        .iter()
        .map(|td| (td.revision, marker_of(td)))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_survivor_of_a_lost_majority_is_recovered_and_servers_are_added_back() -> Result<()> {
    // Small snapshots, so the survivor's state is a snapshot plus a log.
    let mut cluster =
        TestCluster::start(3, &["--snapshot-threshold", "20", "--keep-logs", "5"]).await?;
    let mut acked = BTreeMap::new();
    for i in 0..45 {
        let via = cluster.addr(1 + i % 3);
        let td = register(&via, "dr", &format!("m{i}")).await?;
        acked.insert(td.revision, marker_of(&td));
    }
    let leader = cluster.wait_for_leader(LONG).await?;
    let survivor = (1..=3).find(|id| *id != leader).unwrap();
    let lost: Vec<u64> = (1..=3).filter(|id| *id != survivor).collect();
    let data_dir = cluster.server(survivor).data_dir.display().to_string();

    // While the others still have a leader the cluster is not lost: a
    // stopped member is not recovered beside it.
    assert!(cluster.server(survivor).terminate()?.success());
    let out = berthd(&["recover", "--data-dir", &data_dir]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("its cluster has a leader (server {leader}")),
        "{}",
        text(&out)
    );
    cluster.server(survivor).start()?;

    // Every acknowledged write is on a majority; wait until the survivor
    // has applied as far as the leader, so it holds all of them.
    let leader_addr = cluster.addr(leader);
    eventually(LONG, || {
        let leader_addr = leader_addr.clone();
        async move {
            let members = status(&leader_addr).await?.members;
            let applied = |id: u64| {
                members
                    .iter()
                    .find(|m| m.node_id == id)
                    .unwrap()
                    .applied_index
            };
            ensure!(applied(survivor) >= applied(leader), "{members:?}");
            Ok(())
        }
    })
    .await?;

    // Two servers and their disks are gone for good.
    for id in &lost {
        cluster.server(*id).kill9();
        std::fs::remove_dir_all(&cluster.server(*id).data_dir)?;
    }

    // Refused while the survivor still runs, naming why.
    let out = berthd(&["recover", "--data-dir", &data_dir]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("is berthd still running"),
        "{}",
        text(&out)
    );

    let exit = cluster.server(survivor).terminate()?;
    assert!(exit.success(), "the survivor exited with {exit} on SIGTERM");

    let out = berthd(&["recover", "--data-dir", &data_dir, "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("voters [1, 2, 3]"), "{}", text(&out));
    assert!(text(&out).contains("nothing was changed"), "{}", text(&out));
    for id in &lost {
        let line = format!("server {id} at {}: no answer", cluster.addr(*id));
        assert!(text(&out).contains(&line), "{}", text(&out));
    }

    let out = berthd(&["recover", "--data-dir", &data_dir]);
    assert!(out.status.success(), "{}", text(&out));
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!("berthd recover said:\n{report}");
    assert!(
        report.contains(&format!(
            "server {survivor} at {} is the only voter",
            cluster.addr(survivor)
        )),
        "{report}"
    );

    // Started with its old command line (--initial-cluster of all three
    // included): it leads a one-server cluster.
    let earlier = cluster.server(survivor).log().len();
    cluster.server(survivor).start()?;
    assert_eq!(cluster.wait_for_leader(LONG).await?, survivor);
    let addr = cluster.addr(survivor);
    let after = eventually(LONG, || status(&addr)).await?;
    assert_eq!(after.members.len(), 1, "{after:?}");
    assert!(after.members[0].voter && after.members[0].role == ServerRole::Leader);
    let log = cluster.server(survivor).log().split_off(earlier);
    assert!(!log.contains("initialized a new cluster"), "{log}");

    // Every acknowledged write is there, and new ones are accepted.
    assert_eq!(eventually(LONG, || stored(&addr, "dr")).await?, acked);
    let td = register(&addr, "dr", "after-recovery").await?;
    assert_eq!(td.revision as usize, acked.len() + 1);
    acked.insert(td.revision, marker_of(&td));

    // Two fresh servers (the lost ids, new addresses, empty data dirs) are
    // added back and catch up from the survivor.
    let mut control = control_plane(&addr).await?;
    for id in &lost {
        let new_addr = cluster.start_joiner(*id)?;
        let reply = control
            .add_server(pb::AddServerRequest {
                node_id: *id,
                address: new_addr,
                learner_only: false,
            })
            .await?
            .into_inner();
        assert!(
            reply.members.iter().any(|m| m.node_id == *id && m.voter),
            "{reply:?}"
        );
    }
    for id in &lost {
        let addr = cluster.addr(*id);
        let expected = acked.clone();
        eventually(LONG, || {
            let addr = addr.clone();
            let expected = expected.clone();
            async move {
                ensure!(
                    stored(&addr, "dr").await? == expected,
                    "server not caught up yet"
                );
                Ok(())
            }
        })
        .await?;
    }
    let members = status(&addr).await?.members;
    assert_eq!(members.len(), 3, "{members:?}");
    assert!(
        members.iter().all(|m| m.voter && m.reachable),
        "{members:?}"
    );

    // They are voters of a real cluster again: it survives losing the
    // recovered server.
    cluster.server(survivor).kill9();
    let new_leader = cluster.wait_for_leader(LONG).await?;
    assert!(lost.contains(&new_leader));
    let via = cluster.addr(new_leader);
    let td = eventually(LONG, || register(&via, "dr", "after-failover")).await?;
    assert_eq!(td.revision as usize, acked.len() + 1);
    Ok(())
}
