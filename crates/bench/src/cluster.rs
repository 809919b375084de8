//! Starting, watching and stopping the `berthd` clusters the benchmarks
//! drive: real processes on loopback through the `berth-e2e` harness, with
//! the harness's test CA and admin token (`berthd pki init/issue`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use berth_e2e::TestCluster;

use crate::load::Watched;

/// The release `berthd` next to this binary, or a clear error.
pub fn berthd() -> Result<PathBuf> {
    berth_e2e::try_binary("berthd").context(
        "berth-bench drives the release berthd that sits next to it; build both first with \
         `cargo build --release -p berth-server -p berth-bench`",
    )
}

/// Starts `servers` servers that form a new cluster and waits for a leader.
/// `timings` are Raft timing flags (`&[]`: berthd's defaults), `extra` any
/// other `berthd serve` flags. The caller holds a [`PkiCleanup`] for the
/// CA the harness makes.
pub async fn start(servers: u64, timings: &[&str], extra: &[&str]) -> Result<TestCluster> {
    // A hollow fleet registers thousands of instances from one address,
    // which berthd's per-address limit on unauthenticated calls would slow.
    let mut args = vec!["--anonymous-rate", "0"];
    args.extend_from_slice(extra);
    TestCluster::start_with_timings(servers, timings, &args)
        .await
        .context("starting the berthd cluster")
}

/// The harness keeps the CA it makes for the process's clusters (a temp dir
/// it never removes); the bench removes it when it is done. Created only
/// once berthd is known to exist, so that the CA can be had.
pub struct PkiCleanup;

impl Drop for PkiCleanup {
    fn drop(&mut self) {
        // While unwinding, the CA may be what failed; leave it alone.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&berth_e2e::test_pki().dir);
        }
    }
}

/// The leader first (labelled `leader (server N)`), then the followers
/// (`server N`), with their process ids.
pub fn watched(cluster: &TestCluster, leader: u64) -> Watched {
    let mut out = Vec::new();
    if let Some(pid) = cluster.servers.get(&leader).and_then(|s| s.pid()) {
        out.push((format!("leader (server {leader})"), pid));
    }
    for (id, server) in &cluster.servers {
        if *id != leader {
            if let Some(pid) = server.pid() {
                out.push((format!("server {id}"), pid));
            }
        }
    }
    out
}

/// The last log index of the server at `addr`, by its own account.
pub async fn log_index(addr: &str) -> Option<u64> {
    let status = berth_e2e::status(addr).await.ok()?;
    status
        .members
        .iter()
        .find(|m| m.node_id == status.answered_by)
        .map(|m| m.last_log_index)
}

/// Kills the servers before their temp dir goes away, keeping their logs
/// in `logs/NAME-nodeN.log` when asked to.
pub fn stop(mut cluster: TestCluster, logs: Option<&Path>, name: &str) -> Result<()> {
    for server in cluster.servers.values_mut() {
        server.kill9();
    }
    if let Some(dir) = logs {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for (id, server) in &cluster.servers {
            let to = dir.join(format!("{name}-node{id}.log"));
            std::fs::copy(&server.log_path, &to)
                .with_context(|| format!("copying a log to {}", to.display()))?;
        }
    }
    Ok(())
}

/// Waits until all `servers` answer and have applied everything the
/// leader has in its log.
pub async fn wait_caught_up(
    cluster: &mut TestCluster,
    servers: usize,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let leader = cluster.wait_for_leader(timeout).await?;
        let last = match berth_e2e::status(&cluster.addr(leader)).await {
            Ok(status) => {
                let target = status
                    .members
                    .iter()
                    .find(|m| m.node_id == leader)
                    .map(|m| m.last_log_index);
                let all_reachable =
                    status.members.len() == servers && status.members.iter().all(|m| m.reachable);
                if let (true, Some(target)) = (all_reachable, target) {
                    if status.members.iter().all(|m| m.applied_index >= target) {
                        return Ok(());
                    }
                }
                format!("{:?}", status.members)
            }
            Err(e) => e.to_string(),
        };
        if Instant::now() > deadline {
            bail!("the servers did not all catch up within {timeout:?}; last status: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
