//! End-to-end: the cluster's root CA is replaced on a running cluster of
//! three servers and an agent running a task, without restarting any of
//! them: `berthd pki rotate-ca start`, each server reissued and sent SIGHUP,
//! the agent following by itself, then `rotate-ca finish` and the same
//! again. Afterwards nothing the old root issued is accepted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use berth_e2e::agents::*;
use berth_e2e::*;
use berth_pki::trust;
use berth_proto::pb;
use berth_proto::pb::agent_service_client::AgentServiceClient;
use berth_types::{InstanceState, TaskStatus};

const CLUSTER: &str = "rotating";
const WAIT: Duration = Duration::from_secs(60);

fn berthd(args: &[&str], dir: &Path) -> Result<String> {
    let out = Command::new(binary("berthd"))
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()?;
    ensure!(
        out.status.success(),
        "berthd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `berthd pki issue` for server `id` into its pki dir, then SIGHUP.
fn reissue_and_reload(s: &mut AgentCluster, id: u64) -> Result<()> {
    let out = s.cluster.dir.path().join(format!("node{id}")).join("pki");
    let status = Command::new(binary("berthd"))
        .args(["pki", "issue", "--dir"])
        .arg(&test_pki().dir)
        .args(["--node-id", &id.to_string(), "--host", "127.0.0.1", "--out"])
        .arg(&out)
        .output()?;
    ensure!(
        status.status.success(),
        "pki issue for server {id}: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let pid = s.cluster.server(id).pid().context("server pid")?;
    let status = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()?;
    ensure!(status.success(), "kill -HUP {pid}");
    Ok(())
}

/// An agent ping with the given trust and certificate: what only a
/// certificate the server accepts can do.
async fn ping(addr: &str, ca_pem: &str, cert: &str, key: &str) -> Result<pb::AgentPingResponse> {
    let channel = tls_channel_trusting(addr, ca_pem, Some((cert, key))).await?;
    Ok(AgentServiceClient::new(channel)
        .ping(pb::AgentPingRequest {})
        .await?
        .into_inner())
}

struct AgentFiles {
    ca: String,
    cert: String,
    key: String,
}

fn agent_files(agent: &AgentProc) -> Result<AgentFiles> {
    let dir = agent.dir.join("identity");
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name)).with_context(|| format!("agent {name}"))
    };
    Ok(AgentFiles {
        ca: read("ca.crt")?,
        cert: read("agent.crt")?,
        key: read("agent.key")?,
    })
}

async fn run_ticker(addr: &str) -> Result<String> {
    let task = tasks_client(addr)
        .await?
        .run_task(pb::RunTaskRequest {
            cluster: CLUSTER.into(),
            task_definition: "ticker".into(),
            count: 1,
            ..Default::default()
        })
        .await?
        .into_inner()
        .tasks
        .remove(0);
    wait_task_status(addr, &task.id, TaskStatus::Running, WAIT).await?;
    Ok(task.id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_root_ca_is_rotated_without_restarting_servers_or_agents() -> Result<()> {
    let Some(mut s) = AgentCluster::start(CLUSTER, 300, 2).await? else {
        return Ok(());
    };
    let a1 = s.addr(1);
    let mut agent = s
        .agent("rot-1", &[])
        .with_args(&["--ping-interval", "300ms"]);
    agent.start()?;
    wait_instance_status(&a1, &agent, InstanceState::Active, WAIT).await?;
    let instance_id = agent.instance_id().context("instance id")?;
    taskdefs(&a1)
        .await?
        .register_task_definition(pb::RegisterTaskDefinitionRequest {
            spec: Some(testapp_taskdef("ticker", &s.image, &["ticker", "200"], 32)),
        })
        .await?;
    let first_task = run_ticker(&a1).await?;

    let ca_dir = test_pki().dir.clone();
    let old_root = test_pki().ca_pem.clone();
    let before = agent_files(&agent)?;
    assert_eq!(trust::roots(&before.ca)?.len(), 1);
    let server_pids: Vec<u32> = (1..=3)
        .map(|id| s.cluster.server(id).pid().unwrap())
        .collect();

    // Start: a new root, cross-signed by the old one.
    let printed = berthd(&["pki", "rotate-ca", "start"], &ca_dir)?;
    assert!(printed.contains("kill -HUP"), "{printed}");
    let bundle = std::fs::read_to_string(ca_dir.join("ca.crt"))?;
    let roots = trust::roots(&bundle)?;
    assert_eq!(roots.len(), 2, "both roots are trusted during the rotation");
    let new_root = berth_pki::split_pem(&bundle).remove(0);
    assert!(
        berthd(&["pki", "rotate-ca", "start"], &ca_dir).is_err(),
        "a second start while one is under way is refused"
    );

    for id in 1..=3 {
        reissue_and_reload(&mut s, id)?;
        let addr = s.addr(id);
        // The reloaded server presents a chain from the new root. A client
        // that trusts only the old root still reaches it (through the
        // cross-signed certificate), and so does one that trusts only the
        // new root.
        eventually(WAIT, || {
            let (addr, new_root) = (addr.clone(), new_root.clone());
            async move {
                tls_channel_trusting(&addr, &new_root, None).await?;
                Ok(())
            }
        })
        .await
        .with_context(|| format!("server {id} reloaded:\n{}", s.cluster.logs()))?;
        status(&addr)
            .await
            .with_context(|| format!("old-root client to server {id}"))?;
    }
    assert!(
        s.cluster.logs().contains("PKI reloaded on SIGHUP"),
        "{}",
        s.cluster.logs()
    );

    // The agent takes the new bundle at a heartbeat and renews under the
    // new root, by itself.
    let during = eventually(WAIT, || {
        let agent = &agent;
        async move {
            let files = agent_files(agent)?;
            if trust::roots(&files.ca)?.len() != 2 {
                bail!("the agent still trusts only the old root");
            }
            if !trust::chain_is_current(&files.cert, &files.ca) {
                bail!("the agent's certificate is not from the new root yet");
            }
            Ok(files)
        }
    })
    .await
    .with_context(|| agent.log())?;
    assert_ne!(during.cert, before.cert);
    let another = run_ticker(&a1).await?;

    // Finish: only the new root is trusted; each server again.
    berthd(&["pki", "rotate-ca", "finish"], &ca_dir)?;
    let finished = std::fs::read_to_string(ca_dir.join("ca.crt"))?;
    assert_eq!(finished, new_root);
    assert!(!ca_dir.join("ca-cross.crt").exists());
    assert!(!ca_dir.join("ca-previous.key").exists());
    for id in 1..=3 {
        reissue_and_reload(&mut s, id)?;
        let addr = s.addr(id);
        // A client that trusts only the old root cannot reach it now.
        eventually(WAIT, || {
            let (addr, old_root) = (addr.clone(), old_root.clone());
            async move {
                if tls_channel_trusting(&addr, &old_root, None).await.is_ok() {
                    bail!("server still shows a chain to the old root");
                }
                Ok(())
            }
        })
        .await?;
    }

    let after = eventually(WAIT, || {
        let agent = &agent;
        async move {
            let files = agent_files(agent)?;
            if trust::roots(&files.ca)?.len() != 1 {
                bail!("the agent still trusts the old root");
            }
            Ok(files)
        }
    })
    .await
    .with_context(|| agent.log())?;
    assert_eq!(after.ca, new_root);

    for id in 1..=3 {
        let addr = s.addr(id);
        // The agent's certificate from the new root is accepted...
        let pong = ping(&addr, &new_root, &after.cert, &after.key).await?;
        assert_eq!(pong.instance_id, instance_id);
        assert_eq!(pong.ca_pem, new_root);
        // ...and its certificate from the old root, still within its
        // lifetime, is refused by every server.
        let refused = ping(&addr, &new_root, &before.cert, &before.key).await;
        assert!(
            refused.is_err(),
            "server {id} accepted a certificate from the old root"
        );
    }

    // Nothing restarted, and the agent kept its identity and its work.
    assert!(agent.is_running(), "{}", agent.log());
    assert_eq!(agent.instance_id().as_deref(), Some(instance_id.as_str()));
    for (id, pid) in (1..=3).zip(&server_pids) {
        assert_eq!(s.cluster.server(id).pid(), Some(*pid));
        assert!(s.cluster.server(id).is_running());
    }
    for task in [&first_task, &another] {
        let task = describe_task(&a1, task).await?;
        assert_eq!(task.last_status, TaskStatus::Running, "{task:?}");
    }
    let third = run_ticker(&s.addr(2)).await?;
    let placed = describe_task(&a1, &third).await?;
    assert_eq!(placed.instance_id.as_deref(), Some(instance_id.as_str()));

    // Join tokens made now pin the new root.
    let token = join_token(&a1, CLUSTER, 1).await?;
    let token = berth_pki::tokens::JoinToken::parse(&token)?;
    assert_eq!(token.ca_digest, berth_pki::ca_digest(&new_root)?);
    Ok(())
}
