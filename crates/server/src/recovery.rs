//! `berthd recover` and `berthd restore`: the offline halves of disaster
//! recovery, run on a stopped server's data dir (see `berth_store::recovery`
//! for what they do to the Raft storage, and docs/operations.md for the
//! procedures around them).
//!
//! Besides the Raft storage they leave the data dir ready for an ordinary
//! `berthd serve`: `node.json` records the node without an
//! `--initial-cluster` line (the old cluster's line, still in a config
//! file, is then ignored as on a server that joined), and a `rejoin.json`
//! marker, which would keep the only voter from ever voting, is removed.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_proto::pb;
use berth_store::recovery::{Forced, RaftSummary};
use berth_store::{LogId, NodeId};

use crate::ServerError;

/// How long a member has to say whether its cluster works.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `berthd recover`.
#[derive(Debug, clap::Args)]
pub struct RecoverArgs {
    /// The stopped server's data dir.
    #[arg(long, env = "BERTH_DATA_DIR")]
    pub data_dir: PathBuf,
    /// This server's id (default: the one its data dir records).
    #[arg(long, env = "BERTH_NODE_ID")]
    pub node_id: Option<NodeId>,
    /// The address it is reached at from now on (default: its address in
    /// the cluster's membership).
    #[arg(long, env = "BERTH_ADVERTISE")]
    pub advertise: Option<String>,
    /// Print what the data dir holds and what would change; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// This server's certificates, used to ask the other members whether
    /// their cluster still works (default: DATA_DIR/pki).
    #[arg(long, env = "BERTH_PKI_DIR")]
    pub pki_dir: Option<PathBuf>,
    /// Recover even though another member answers that its cluster has a
    /// leader (or without asking, when this server has no certificates).
    #[arg(long)]
    pub force: bool,
}

/// `berthd restore`.
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The backup (`berth server backup --out FILE`), or a copy of a
    /// stopped server's DATA_DIR/snapshots/current.
    #[arg(long)]
    pub from: PathBuf,
    /// A new, empty data dir (pki/ may be there already).
    #[arg(long, env = "BERTH_DATA_DIR")]
    pub data_dir: PathBuf,
    /// The id the restored server runs as.
    #[arg(long, env = "BERTH_NODE_ID")]
    pub node_id: NodeId,
    /// The address it is reached at (default: that of the same node id in
    /// the backup's membership, if it has one).
    #[arg(long, env = "BERTH_ADVERTISE")]
    pub advertise: Option<String>,
    /// Where its certificates will be (default: DATA_DIR/pki), to remind
    /// you to issue them.
    #[arg(long, env = "BERTH_PKI_DIR")]
    pub pki_dir: Option<PathBuf>,
}

fn failed(e: impl std::fmt::Display) -> ServerError {
    ServerError::FailedPrecondition(e.to_string())
}

fn check_address(address: Option<&str>) -> Result<(), ServerError> {
    match address {
        Some(a)
            if a.rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none() =>
        {
            Err(failed(format!("--advertise {a:?} is not HOST:PORT")))
        }
        _ => Ok(()),
    }
}

/// Makes the server whose data dir this is the only voter of a new
/// one-server cluster; returns the report to print.
pub async fn recover(args: &RecoverArgs) -> Result<String, ServerError> {
    let dir = &args.data_dir;
    check_address(args.advertise.as_deref())?;
    if !dir.join("db").exists() {
        return Err(failed(format!(
            "{} holds no Raft database (db/); give the data dir of the server to recover",
            dir.display()
        )));
    }
    let recorded = crate::identity::recorded_node_id(dir)?;
    let node_id = match (args.node_id, recorded) {
        (Some(given), Some(found)) if given != found => {
            return Err(failed(format!(
                "data dir {} belongs to node {found}, not node {given}; use --node-id {found} or leave it out",
                dir.display()
            )))
        }
        (Some(id), _) | (None, Some(id)) => id,
        (None, None) => {
            return Err(failed(format!(
                "data dir {} records no node id (no node.json); give it with --node-id",
                dir.display()
            )))
        }
    };
    let marker = dir.join(crate::rejoin::MARKER);
    let catching_up = marker.exists();
    let mut report = String::new();
    let summary = berth_store::recovery::inspect(dir).await.map_err(failed)?;
    let working = ask_members(args, node_id, &summary, &mut report).await?;
    if args.dry_run {
        let _ = writeln!(report, "data dir {} (server {node_id}):", dir.display());
        describe(&mut report, &summary);
        match summary.address_of(node_id) {
            Some(known) => {
                let address = args.advertise.clone().unwrap_or(known);
                let _ = writeln!(
                    report,
                    "berthd recover would make server {node_id} at {address} the only voter, keeping all {} entries",
                    summary.last_log_id.map_or(0, |id| id.index)
                );
            }
            None => {
                let _ = writeln!(
                    report,
                    "server {node_id} is not a member of this cluster: berthd recover would refuse it"
                );
            }
        }
        if catching_up {
            let _ = writeln!(report, "{}", behind_warning(&marker, false));
        }
        if let Some(working) = &working {
            let _ = writeln!(report, "berthd recover would refuse: {working}");
        }
        let _ = writeln!(report, "nothing was changed (--dry-run)");
        return Ok(report);
    }
    if let Some(working) = working {
        if !args.force {
            return Err(failed(format!(
                "{working}: the cluster is not lost, and a recovered server beside it would split \
                 it in two. Replace lost servers one at a time instead (docs/operations.md, section 7); \
                 if those servers are being shut down for good anyway, stop them first or pass --force"
            )));
        }
        let _ = writeln!(report, "warning: recovering anyway (--force): {working}");
    }
    let forced =
        unlocked(|| berth_store::recovery::recover(dir, node_id, args.advertise.as_deref()))
            .await?;
    crate::identity::record_standalone(dir, node_id)?;
    if catching_up {
        std::fs::remove_file(&marker)
            .map_err(|e| failed(format!("cannot remove {}: {e}", marker.display())))?;
    }
    give_back(dir)?;
    tracing::warn!(
        node_id,
        address = %forced.address,
        entry = ?forced.entry,
        "recovered: this server is the only voter of a one-server cluster"
    );
    let _ = writeln!(
        report,
        "data dir {} (server {node_id}), as found:",
        dir.display()
    );
    describe(&mut report, &forced.before);
    outcome(&mut report, node_id, &forced, "every entry it held is kept");
    if catching_up {
        let _ = writeln!(report, "{}", behind_warning(&marker, true));
    }
    let _ = writeln!(
        report,
        "next: start it (systemctl start berthd), check `berth cluster status`, then add servers \
         back one at a time with empty data dirs (berth server add ID ADDR); never start a lost \
         server on its old data dir (docs/operations.md, \"Lose a majority of the servers\")"
    );
    Ok(report)
}

/// The store once the handles `inspect` used have let go of sled's lock
/// (they close in the background).
async fn unlocked<F, Fut>(mut f: F) -> Result<Forced, ServerError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Forced, berth_store::StoreError>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match f().await {
            Err(berth_store::StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => return other.map_err(failed),
        }
    }
}

/// Asks every other member of the membership in the data dir for its
/// status, and reports the answers. Returns why the cluster still works,
/// when a member answers that it has a leader: then it is not lost.
async fn ask_members(
    args: &RecoverArgs,
    node_id: NodeId,
    summary: &RaftSummary,
    report: &mut String,
) -> Result<Option<String>, ServerError> {
    let others: Vec<(NodeId, String)> = summary
        .membership
        .membership()
        .nodes()
        .filter(|(id, _)| **id != node_id)
        .map(|(id, node)| (*id, node.addr.clone()))
        .collect();
    if others.is_empty() {
        return Ok(None);
    }
    let pki_dir = args
        .pki_dir
        .clone()
        .unwrap_or_else(|| args.data_dir.join("pki"));
    let pki = match crate::tls::Pki::load(&pki_dir, node_id) {
        Ok(pki) => pki,
        Err(e) if args.force => {
            let _ = writeln!(
                report,
                "warning: did not ask the other members whether their cluster works (--force; {e})"
            );
            return Ok(None);
        }
        Err(e) => {
            return Err(failed(format!(
                "cannot ask the other members whether their cluster still works without this \
                 server's certificates ({e}); give --pki-dir, or --force to recover without asking"
            )))
        }
    };
    let peers = crate::network::Peers::new(pki.peer_tls());
    let asks = others.iter().map(|(id, addr)| {
        let peers = &peers;
        async move {
            let answer = match peers.raft_client(addr) {
                Ok(mut client) => {
                    let mut request = tonic::Request::new(pb::NodeStatusRequest {});
                    request.set_timeout(PROBE_TIMEOUT);
                    match tokio::time::timeout(PROBE_TIMEOUT, client.node_status(request)).await {
                        Ok(Ok(reply)) => Ok(reply.into_inner()),
                        Ok(Err(status)) => Err(status.message().to_string()),
                        Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
                    }
                }
                Err(e) => Err(e),
            };
            (*id, addr.clone(), answer)
        }
    });
    let mut working = None;
    let _ = writeln!(report, "asked the other members:");
    for (id, addr, answer) in futures::future::join_all(asks).await {
        match answer {
            Ok(status) => {
                let _ = writeln!(
                    report,
                    "  server {id} at {addr}: answers, term {}, leader {}",
                    status.term,
                    status
                        .leader_id
                        .map_or_else(|| "none".to_string(), |l| l.to_string())
                );
                if let (Some(leader), None) = (status.leader_id, &working) {
                    working = Some(format!(
                        "server {id} at {addr} answers that its cluster has a leader (server {leader}, term {})",
                        status.term
                    ));
                }
            }
            Err(e) => {
                let _ = writeln!(report, "  server {id} at {addr}: no answer ({e})");
            }
        }
    }
    Ok(working)
}

/// Creates a new one-server cluster's data dir from a backup; returns the
/// report to print.
pub async fn restore(args: &RestoreArgs) -> Result<String, ServerError> {
    let dir = &args.data_dir;
    if args.node_id == 0 {
        return Err(failed("--node-id must be 1 or more"));
    }
    check_address(args.advertise.as_deref())?;
    if crate::identity::recorded_node_id(dir)?.is_some() {
        return Err(failed(format!(
            "data dir {} already belongs to a server (node.json); restore into a new, empty data dir (only pki/ may be there)",
            dir.display()
        )));
    }
    let bytes = std::fs::read(&args.from)
        .map_err(|e| failed(format!("cannot read {}: {e}", args.from.display())))?;
    std::fs::create_dir_all(dir)
        .map_err(|e| failed(format!("cannot create data dir {}: {e}", dir.display())))?;
    let forced = berth_store::recovery::restore(
        dir,
        &args.from,
        &bytes,
        args.node_id,
        args.advertise.as_deref(),
    )
    .await
    .map_err(failed)?;
    crate::identity::record_standalone(dir, args.node_id)?;
    give_back(dir)?;
    tracing::warn!(
        node_id = args.node_id,
        address = %forced.address,
        from = %args.from.display(),
        "restored: this server is the only voter of a new one-server cluster"
    );
    let mut report = String::new();
    let _ = writeln!(
        report,
        "restored {} into data dir {}; the backup holds:",
        args.from.display(),
        dir.display()
    );
    let _ = writeln!(
        report,
        "  the state at log entry {} of a cluster with voters {:?}",
        show(forced.before.snapshot),
        forced.before.voters()
    );
    outcome(
        &mut report,
        args.node_id,
        &forced,
        "with the backup's state",
    );
    let pki = args.pki_dir.clone().unwrap_or_else(|| dir.join("pki"));
    if !pki.join("server.crt").exists() {
        let _ = writeln!(
            report,
            "before starting it, issue its certificate from the cluster's CA (the same CA, or agents will not trust it): \
             berthd pki issue --dir CA_DIR --node-id {} --host HOST --out {}",
            args.node_id,
            pki.display()
        );
    }
    let _ = writeln!(
        report,
        "next: stop every server of the old cluster for good, start this one (without --initial-cluster, or with \
         the old line, which it ignores), check `berth cluster status`, then add servers with empty data dirs \
         (berth server add ID ADDR); what changed after the backup is gone (docs/operations.md, \"Back up and restore\")"
    );
    Ok(report)
}

/// Run as root on a data dir that belongs to the service's user (`sudo
/// berthd recover`), the files just written would be root's, and the server
/// could not open them: hands everything in the data dir to the data dir's
/// owner. `node.json` was just written, so its owner is who runs this.
fn give_back(dir: &Path) -> Result<(), ServerError> {
    use std::os::unix::fs::MetadataExt;
    let stat = |path: &Path| {
        std::fs::symlink_metadata(path)
            .map_err(|e| failed(format!("cannot stat {}: {e}", path.display())))
    };
    let owner = stat(dir)?;
    let me = stat(&dir.join("node.json"))?;
    if me.uid() != 0 || (owner.uid(), owner.gid()) == (0, 0) {
        return Ok(());
    }
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = stat(&path)?;
        if meta.is_dir() {
            let entries = std::fs::read_dir(&path)
                .map_err(|e| failed(format!("cannot list {}: {e}", path.display())))?;
            for entry in entries {
                let entry =
                    entry.map_err(|e| failed(format!("cannot list {}: {e}", path.display())))?;
                pending.push(entry.path());
            }
        }
        if (meta.uid(), meta.gid()) != (owner.uid(), owner.gid()) {
            std::os::unix::fs::lchown(&path, Some(owner.uid()), Some(owner.gid())).map_err(|e| {
                failed(format!(
                    "cannot give {} to the data dir's owner (uid {}): {e}; chown -R it before starting berthd",
                    path.display(),
                    owner.uid()
                ))
            })?;
        }
    }
    Ok(())
}

fn show(id: Option<LogId>) -> String {
    id.map_or_else(
        || "none".to_string(),
        |id| format!("{} (term {})", id.index, id.leader_id.term),
    )
}

fn describe(report: &mut String, summary: &RaftSummary) {
    let _ = writeln!(
        report,
        "  membership: voters {:?}, learners {:?}",
        summary.voters(),
        summary.learners()
    );
    let _ = writeln!(
        report,
        "  last log entry {}, known committed up to {}, snapshot at {}",
        show(summary.last_log_id),
        show(summary.committed.max(summary.snapshot)),
        show(summary.snapshot)
    );
    let beyond = summary.beyond_committed();
    if beyond > 0 {
        let _ = writeln!(
            report,
            "  the last {beyond} entries were not known here to be committed; recovering commits them (they may \
             hold writes whose callers were told the outcome is unknown)"
        );
    }
}

fn outcome(report: &mut String, node_id: NodeId, forced: &Forced, kept: &str) {
    match forced.entry {
        Some(entry) => {
            let _ = writeln!(
                report,
                "now: server {node_id} at {} is the only voter (membership entry {}, term {}); {kept}",
                forced.address, entry.index, entry.leader_id.term
            );
        }
        None => {
            let _ = writeln!(
                report,
                "server {node_id} at {} already was the only voter; nothing changed in the Raft storage",
                forced.address
            );
        }
    }
}

fn behind_warning(marker: &Path, removed: bool) -> String {
    format!(
        "warning: this server was still catching up after rejoining with an empty data dir ({} is there{}): it \
         may lack writes the old cluster had committed. If another server survived, recover that one instead \
         (compare `berthd recover --dry-run` on each: the longest log wins)",
        marker.display(),
        if removed { "; removed now" } else { "" }
    )
}
