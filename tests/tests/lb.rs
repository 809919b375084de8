//! End-to-end: berth-lb in front of a bridge-mode service on real berthd
//! servers, a real berth-agent, containerd and a real HAProxy. berth-lb
//! watches the service's endpoints with a readonly token; HTTP through
//! HAProxy reaches both tasks of a two-task service, and after a scale-in
//! only the remaining one, within seconds and without a HAProxy reload
//! (the same worker process answers the runtime API). With every server
//! down HAProxy keeps serving the last endpoints; once they are back
//! berth-lb follows the service again.
//!
//! Needs haproxy (scripts/install-deps.sh) and the containerd environment
//! (scripts/test-env.sh): skipped with a notice outside CI, failing under
//! CI=true.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use berth_client::services::EndpointWatch;
use berth_client::{BerthClient, ClientConfig};
use berth_e2e::agents::*;
use berth_e2e::*;
use berth_types::{InstanceState, Role};

const T: Duration = Duration::from_secs(90);
const CLUSTER: &str = "lbt";

/// Whether haproxy is installed; outside CI a missing one skips the test.
fn haproxy_installed() -> bool {
    let found = ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
        .iter()
        .any(|p| Path::new(p).exists());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but haproxy is not installed: run scripts/install-deps.sh"
        );
        eprintln!("NOTICE: skipping: haproxy is not installed (scripts/install-deps.sh)");
    }
    found
}

fn client(servers: &str, token: &str) -> BerthClient {
    BerthClient::new(
        ClientConfig::new(servers.split(',').map(str::to_string).collect::<Vec<_>>())
            .with_ca(test_pki().ca_pem.clone())
            .with_token(token.to_string()),
    )
    .expect("client")
}

/// berth-lb as a process; SIGTERM (which stops its HAProxy) when dropped.
struct LbProc {
    child: Option<Child>,
    log: PathBuf,
}

impl LbProc {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and a clean exit.
    fn terminate(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait()? {
                ensure!(status.success(), "berth-lb exited with {status}");
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("berth-lb did not exit within 15 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for LbProc {
    fn drop(&mut self) {
        let _ = self.terminate();
    }
}

/// The PID of the HAProxy worker answering the runtime API.
fn worker_pid(socket: &Path) -> Result<u32> {
    use std::io::{Read, Write};
    let mut conn = std::os::unix::net::UnixStream::connect(socket)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.write_all(b"show info\n")?;
    let mut info = String::new();
    conn.read_to_string(&mut info)?;
    info.lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|pid| pid.trim().parse().ok())
        .with_context(|| format!("no Pid in {info:?}"))
}

/// The body of `GET /env` on a loopback port (each task's differs).
fn env_of(port: u16) -> Result<String> {
    let text = http_get(port, "/env")?;
    ensure!(text.starts_with("HTTP/1.1 200"), "{text}");
    Ok(text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default())
}

/// Who answers `n` requests through the load balancer.
fn answers(frontend: u16, n: usize) -> Result<BTreeSet<String>> {
    (0..n).map(|_| env_of(frontend)).collect()
}

async fn wait_for(watch: &mut EndpointWatch, count: usize) -> Result<Vec<u16>> {
    let set = tokio::time::timeout(T, async {
        loop {
            let set = watch.next().await?;
            if set.endpoints.len() == count {
                return Ok::<_, anyhow::Error>(set);
            }
        }
    })
    .await
    .with_context(|| format!("no set of {count} endpoints within {T:?}"))??;
    set.endpoints
        .iter()
        .map(|e| Ok(u16::try_from(e.port)?))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn berth_lb_sends_traffic_to_the_services_tasks_and_follows_a_scale_in() -> Result<()> {
    if !haproxy_installed() {
        return Ok(());
    }
    let Some(mut s) = AgentCluster::start_with(CLUSTER, 300, 2, &[]).await? else {
        return Ok(());
    };
    // A bridge and subnet of its own: a bridge keeps the subnet of whoever
    // made it first, and other tests (discovery.rs) use theirs.
    let mut agent = s.agent("lbt", &[]).with_args(&[
        "--bridge-name",
        "berthlbt0",
        "--bridge-subnet",
        "198.18.78.0/24",
    ]);
    agent.start()?;
    wait_instance_status(&s.addr(1), &agent, InstanceState::Active, T).await?;

    let admin = client(&s.servers, &test_pki().admin_token);
    let result = exercise(&mut s, &admin, &agent).await;
    // Whatever happened, the agent tears the tasks' networks down before it
    // goes (a killed agent would leave NAT rules on this host).
    let torn_down = bridge_web::teardown(&admin, CLUSTER, &agent).await;
    result.and(torn_down)
}

async fn exercise(s: &mut AgentCluster, admin: &BerthClient, agent: &AgentProc) -> Result<()> {
    bridge_web::create(s, admin, CLUSTER, 2).await?;

    // berth-lb gets a readonly token, the CA and one load balancer.
    let (_, readonly) = admin
        .create_api_token(Role::Readonly, "berth-lb e2e", None)
        .await?;
    let dir = s.work.path().join("lb");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("token"), &readonly)?;
    let socket = dir.join("haproxy.sock");
    let frontend = free_port();
    let config = dir.join("lb.toml");
    std::fs::write(
        &config,
        format!(
            r#"endpoint = "{servers}"
ca_cert = "{ca}"
token_file = "token"
haproxy_socket = "haproxy.sock"
haproxy_config = "haproxy.cfg"
slots = 4

[[load_balancer]]
name = "web"
bind = "127.0.0.1:{frontend}"
cluster = "{CLUSTER}"
service = "web"
container_name = "app"
container_port = 8080
"#,
            servers = s.servers,
            ca = test_pki().dir.join("ca.crt").display(),
        ),
    )?;
    let log = dir.join("berth-lb.log");
    let mut lb = LbProc {
        child: Some(spawn_logged(
            "berth-lb",
            &["--config".into(), config.display().to_string()],
            &log,
        )?),
        log,
    };

    // Both tasks answer through HAProxy, and nothing else does.
    let mut watch = client(&s.servers, &readonly).watch_endpoints(CLUSTER, "web");
    let ports = wait_for(&mut watch, 2).await.with_context(|| agent.log())?;
    let mut direct = BTreeSet::new();
    for port in &ports {
        let port = *port;
        direct.insert(eventually(T, || async move { env_of(port) }).await?);
    }
    ensure!(direct.len() == 2, "two tasks, two answers");
    eventually(T, || {
        let direct = direct.clone();
        async move {
            let seen = answers(frontend, 10)?;
            ensure!(
                seen == direct,
                "through haproxy: {} distinct answers",
                seen.len()
            );
            Ok(())
        }
    })
    .await
    .with_context(|| lb.log())?;
    let worker = worker_pid(&socket)?;

    // Scale in: within seconds every request goes to the remaining task,
    // with the same HAProxy worker (no reload).
    bridge_web::scale(admin, CLUSTER, 1).await?;
    let remaining = wait_for(&mut watch, 1).await?;
    let since = Instant::now();
    let remaining = env_of(remaining[0])?;
    eventually(Duration::from_secs(10), || {
        let remaining = remaining.clone();
        async move {
            let seen = answers(frontend, 10)?;
            ensure!(
                seen == BTreeSet::from([remaining]),
                "{} distinct answers",
                seen.len()
            );
            Ok(())
        }
    })
    .await
    .with_context(|| lb.log())?;
    eprintln!(
        "berth-lb: traffic on the remaining task {:?} after the endpoint set changed",
        since.elapsed()
    );
    ensure!(
        worker_pid(&socket)? == worker,
        "HAProxy was reloaded for an endpoint change\n{}",
        lb.log()
    );

    // The control plane goes away entirely: HAProxy keeps the last
    // endpoints and berth-lb keeps running (and retrying).
    for id in 1..=3 {
        s.cluster.server(id).kill9();
    }
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let seen = answers(frontend, 5).with_context(|| lb.log())?;
        ensure!(
            seen == BTreeSet::from([remaining.clone()]),
            "{} distinct answers",
            seen.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ensure!(
        lb.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None))),
        "berth-lb exited without a control plane\n{}",
        lb.log()
    );
    ensure!(
        lb.log().contains("keeping the last ones and retrying"),
        "berth-lb did not notice the outage\n{}",
        lb.log()
    );
    // Back again: berth-lb follows a scale-out, still without a reload.
    for id in 1..=3 {
        s.cluster.server(id).start()?;
    }
    s.cluster.wait_for_leader(T).await?;
    eventually(T, || bridge_web::scale(admin, CLUSTER, 2)).await?;
    eventually(T, || async {
        let seen = answers(frontend, 10)?;
        ensure!(
            seen.len() == 2,
            "through haproxy: {} distinct answers",
            seen.len()
        );
        Ok(())
    })
    .await
    .with_context(|| lb.log())?;
    ensure!(
        worker_pid(&socket)? == worker,
        "HAProxy was reloaded for an endpoint change\n{}",
        lb.log()
    );

    // SIGTERM stops berth-lb and its HAProxy.
    lb.terminate().with_context(|| lb.log())?;
    ensure!(
        std::net::TcpStream::connect(("127.0.0.1", frontend)).is_err(),
        "HAProxy still listens after berth-lb stopped"
    );
    Ok(())
}
