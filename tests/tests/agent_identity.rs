//! End-to-end: the real `berth-agent` binary joins a 3-server TLS cluster
//! with an activation, keeps its identity across restarts, renews its
//! certificate, and re-registers after its certificate expired.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use berth_e2e::*;
use berth_proto::pb;
use berth_proto::pb::activation_service_client::ActivationServiceClient;
use berth_proto::pb::instance_service_client::InstanceServiceClient;

struct Agent {
    child: Option<Child>,
    log: std::path::PathBuf,
}

impl Agent {
    fn start(servers: &str, dir: &Path, token: Option<&str>, log: &Path) -> Self {
        let token_args: Vec<&str> = token.map(|t| vec!["--token", t]).unwrap_or_default();
        Self::start_with(servers, dir, &token_args, log)
    }

    fn start_with(servers: &str, dir: &Path, extra: &[&str], log: &Path) -> Self {
        let mut cmd = Command::new(binary("berth-agent"));
        cmd.args(["--server", servers, "--data-dir"]).arg(dir);
        cmd.args(["--ping-interval", "1s", "--log", "info"]);
        cmd.args(extra);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = cmd
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn berth-agent");
        Self {
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit on its own.
    fn wait_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("agent still running after {timeout:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn activation(addr: &str, max: u32) -> Result<String> {
    let mut client = ActivationServiceClient::new(channel(addr).await?);
    Ok(client
        .create_activation(pb::CreateActivationRequest {
            max_registrations: max,
            attributes: vec![pb::Attribute {
                name: "rack".into(),
                value: "r1".into(),
            }],
            ..Default::default()
        })
        .await?
        .into_inner()
        .token)
}

async fn instances(addr: &str) -> Result<Vec<pb::Instance>> {
    let mut client = InstanceServiceClient::new(channel(addr).await?);
    Ok(client
        .list_instances(pb::ListInstancesRequest::default())
        .await?
        .into_inner()
        .instances)
}

fn identity_id(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("identity.json")).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value["instanceId"].as_str().map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_registers_renews_restarts_and_reregisters() -> Result<()> {
    let cluster = TestCluster::start(3, &["--agent-cert-lifetime", "12s"]).await?;
    let servers: String = (1..=3)
        .map(|id| cluster.addr(id))
        .collect::<Vec<_>>()
        .join(",");
    let addr = cluster.addr(2);
    let work = tempfile::tempdir()?;
    let dir = work.path().join("agent");
    let log = work.path().join("agent.log");

    // A token whose CA digest is not this cluster's: registration aborts.
    let token = activation(&addr, 2).await?;
    let forged = format!("{}{}", &token[..token.len() - 64], "0".repeat(64));
    let mut mitm = Agent::start(&servers, &work.path().join("mitm"), Some(&forged), &log);
    let status = mitm.wait_exit(Duration::from_secs(20))?;
    assert!(!status.success());
    assert!(mitm.log().contains("man-in-the-middle"), "{}", mitm.log());
    assert!(
        instances(&addr).await?.is_empty(),
        "nothing registered through a forged CA"
    );

    // Registration with the token in a file, which the agent removes once
    // registered; the key is private to the host.
    let token_file = work.path().join("join-token");
    std::fs::write(&token_file, &token)?;
    let token_file_arg = token_file.to_string_lossy().into_owned();
    let mut agent = Agent::start_with(&servers, &dir, &["--token-file", &token_file_arg], &log);
    let id = eventually(Duration::from_secs(20), || async {
        identity_id(&dir).ok_or_else(|| anyhow::anyhow!("not registered yet:\n{}", agent.log()))
    })
    .await?;
    eventually(Duration::from_secs(10), || async {
        anyhow::ensure!(!token_file.exists(), "the join token file is still there");
        Ok(())
    })
    .await?;
    assert!(
        agent.log().contains("removed the join token file"),
        "{}",
        agent.log()
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("agent.key"))?
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "agent.key must be private");
    let listed = instances(&addr).await?;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, id);
    assert!(listed[0]
        .attributes
        .iter()
        .any(|a| a.name == "rack" && a.value == "r1"));

    // Renewals at 50-80% of a 12 s lifetime keep it connected: two of them
    // take at most 2 x 9.6 s, plus slack for a loaded machine.
    let first_expiry = listed[0].certificate_expires_at_ms;
    tokio::time::sleep(Duration::from_secs(25)).await;
    let renewed = instances(&addr).await?;
    assert!(
        renewed[0].certificate_expires_at_ms > first_expiry + 5_000,
        "certificate was not renewed: {} -> {}",
        first_expiry,
        renewed[0].certificate_expires_at_ms
    );
    assert!(
        agent.log().matches("certificate renewed").count() >= 2,
        "{}",
        agent.log()
    );

    // A restart reuses the stored identity: no second instance, same id.
    agent.kill();
    let mut agent = Agent::start(&servers, &dir, None, &log);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(identity_id(&dir).as_deref(), Some(id.as_str()));
    assert_eq!(instances(&addr).await?.len(), 1);
    assert!(
        agent.child.as_mut().unwrap().try_wait()?.is_none(),
        "agent exited:\n{}",
        agent.log()
    );

    // Host off until the certificate expired: a fresh token re-registers
    // under the same instance id.
    agent.kill();
    tokio::time::sleep(Duration::from_secs(13)).await;
    let fresh = activation(&addr, 1).await?;
    let _agent = Agent::start(&servers, &dir, Some(&fresh), &log);
    eventually(Duration::from_secs(20), || async {
        let all = instances(&addr).await?;
        anyhow::ensure!(all.len() == 1, "expected one instance, got {}", all.len());
        anyhow::ensure!(
            all[0].certificate_expires_at_ms > renewed[0].certificate_expires_at_ms + 10_000,
            "not re-registered yet"
        );
        Ok(())
    })
    .await?;
    assert_eq!(identity_id(&dir).as_deref(), Some(id.as_str()));

    // Secrets never reach the logs.
    let logs: String = cluster
        .servers
        .values()
        .map(|s| s.log())
        .collect::<String>()
        + &_agent.log();
    for secret in [&token, &fresh] {
        let secret_part = secret.split('-').nth(2).unwrap();
        assert!(
            !logs.contains(secret_part),
            "an activation secret leaked into the logs"
        );
    }
    Ok(())
}
