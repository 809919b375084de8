//! A harness for end-to-end tests: real `berthd` processes on loopback,
//! each with its own data dir, that tests can kill (-9), stop (SIGTERM) and
//! restart. The binaries are built once by `cargo build --bins` and reused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod agents;
pub mod ecs;
pub mod lb;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use berth_proto::pb;
use berth_proto::pb::cluster_service_client::ClusterServiceClient;
use berth_proto::pb::control_plane_service_client::ControlPlaneServiceClient;
use berth_proto::pb::task_definition_service_client::TaskDefinitionServiceClient;
use std::sync::OnceLock;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;

/// Path of a binary of this workspace: next to the running executable
/// (a bench binary) or next to its `deps` directory (a test).
pub fn binary(name: &str) -> PathBuf {
    try_binary(name).unwrap_or_else(|e| panic!("{e}"))
}

/// Like [`binary`], but an error instead of a panic when it is missing.
pub fn try_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("current exe")?;
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(name))
        .collect();
    match candidates.iter().find(|p| p.exists()) {
        Some(path) => Ok(path.clone()),
        None => bail!(
            "{name} is missing (looked in {candidates:?}): run `cargo build --bins` (or --release for benchmarks) first"
        ),
    }
}

/// A free loopback port (bound and released; good enough on a test host).
/// Never the same port twice in one test binary: its tests run at once,
/// and a port one test picked but has not bound yet is free again to the
/// kernel, which handed it to a second test's server once (the second
/// test's calls then reached the first test's cluster).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        if GIVEN.lock().unwrap_or_else(|p| p.into_inner()).insert(port) {
            return port;
        }
    }
}

pub struct ServerProc {
    pub id: u64,
    pub addr: String,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    /// A command berthd runs under (e.g. `strace -f ...`), empty for none.
    pub wrapper: Vec<String>,
    args: Vec<String>,
    child: Option<Child>,
}

/// Starts one of the workspace's binaries with its stderr appended to `log`
/// (kept across restarts, so a test failure shows every run).
pub fn spawn_logged(name: &str, args: &[String], log: &Path) -> Result<Child> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    Command::new(binary(name))
        .args(args)
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .with_context(|| format!("spawning {name}"))
}

impl ServerProc {
    pub fn start(&mut self) -> Result<()> {
        let child = match self.wrapper.split_first() {
            None => spawn_logged("berthd", &self.args, &self.log_path)?,
            Some((program, wrapper_args)) => {
                let log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.log_path)?;
                Command::new(program)
                    .args(wrapper_args)
                    .arg(binary("berthd"))
                    .args(&self.args)
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .with_context(|| format!("spawning berthd under {program}"))?
            }
        };
        self.child = Some(child);
        Ok(())
    }

    /// Waits for the server to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let Some(child) = self.child.as_mut() else {
            bail!("server {} is not running", self.id);
        };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("server {} still runs after {timeout:?}", self.id);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process id while the server runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("server {} is not running", self.id);
        };
        let pid = child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("server {} did not exit within 15 s of SIGTERM", self.id);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub servers: BTreeMap<u64, ServerProc>,
    pub extra_args: Vec<String>,
    /// Raft timing flags every server gets ([`FAST`] unless chosen).
    pub timing_args: Vec<String>,
}

/// Fast timings so failover tests finish quickly on a loaded machine.
pub const FAST: &[&str] = &["--heartbeat-ms", "100", "--election-timeout-ms", "500"];

impl TestCluster {
    /// Starts `n` servers that form a new cluster.
    pub async fn start(n: u64, extra_args: &[&str]) -> Result<Self> {
        Self::start_with_timings(n, FAST, extra_args).await
    }

    /// Like [`TestCluster::start`] with other Raft timing flags than
    /// [`FAST`]; `&[]` leaves berthd's own defaults.
    pub async fn start_with_timings(
        n: u64,
        timing_args: &[&str],
        extra_args: &[&str],
    ) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let addrs: BTreeMap<u64, String> = (1..=n)
            .map(|id| (id, format!("127.0.0.1:{}", free_port())))
            .collect();
        let initial = addrs
            .iter()
            .map(|(id, a)| format!("{id}={a}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Self {
            dir,
            servers: BTreeMap::new(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            timing_args: timing_args.iter().map(|s| s.to_string()).collect(),
        };
        for (id, addr) in &addrs {
            let server = cluster.new_server(*id, addr, Some(&initial));
            cluster.servers.insert(*id, server);
        }
        for server in cluster.servers.values_mut() {
            server.start()?;
        }
        cluster.wait_for_leader(Duration::from_secs(20)).await?;
        Ok(cluster)
    }

    fn new_server(&self, id: u64, addr: &str, initial: Option<&str>) -> ServerProc {
        let data_dir = self.dir.path().join(format!("node{id}"));
        let pki = test_pki();
        let out = Command::new(binary("berthd"))
            .args(["pki", "issue", "--dir"])
            .arg(&pki.dir)
            .args(["--node-id", &id.to_string(), "--host", "127.0.0.1", "--out"])
            .arg(data_dir.join("pki"))
            .output()
            .expect("run berthd pki issue");
        assert!(
            out.status.success(),
            "pki issue: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut args = vec![
            "serve".to_string(),
            "--node-id".into(),
            id.to_string(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--listen".into(),
            addr.to_string(),
        ];
        if let Some(initial) = initial {
            args.push("--initial-cluster".into());
            args.push(initial.to_string());
        }
        args.extend(self.timing_args.iter().cloned());
        // `{id}` in an extra argument is this server's id, for what must
        // differ between servers (e.g. `--dns-listen 127.0.0.{id}:PORT`).
        args.extend(
            self.extra_args
                .iter()
                .map(|a| a.replace("{id}", &id.to_string())),
        );
        ServerProc {
            id,
            addr: addr.to_string(),
            log_path: self.dir.path().join(format!("node{id}.log")),
            data_dir,
            wrapper: Vec::new(),
            args,
            child: None,
        }
    }

    /// Starts a server that is not part of the initial membership.
    pub fn start_joiner(&mut self, id: u64) -> Result<String> {
        let addr = self.prepare_joiner(id);
        self.server(id).start()?;
        Ok(addr)
    }

    /// Sets up a server that is not part of the initial membership (its
    /// certificate issued into its data dir) without starting it.
    pub fn prepare_joiner(&mut self, id: u64) -> String {
        let addr = format!("127.0.0.1:{}", free_port());
        let server = self.new_server(id, &addr, None);
        self.servers.insert(id, server);
        addr
    }

    pub fn addr(&self, id: u64) -> String {
        self.servers[&id].addr.clone()
    }

    pub fn server(&mut self, id: u64) -> &mut ServerProc {
        self.servers.get_mut(&id).expect("server")
    }

    /// Any running server's view of who leads; waits for an election.
    pub async fn wait_for_leader(&mut self, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let running: Vec<String> = self
                .servers
                .values_mut()
                .filter_map(|s| s.is_running().then(|| s.addr.clone()))
                .collect();
            for addr in &running {
                if let Ok(status) = status(addr).await {
                    if let Some(leader) = status.leader_id {
                        if running.contains(&self.servers[&leader].addr) {
                            return Ok(leader);
                        }
                    }
                }
            }
            if Instant::now() > deadline {
                bail!("no leader within {timeout:?}; logs:\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn logs(&self) -> String {
        self.servers
            .values()
            .map(|s| {
                let log = s.log();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                format!(
                    "--- node {} ---\n{}",
                    s.id,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// One CA and admin token for every cluster a test process starts, so the
/// free functions below can reach any of them.
pub struct TestPki {
    pub dir: PathBuf,
    /// The root as `pki init` made it (a CA rotation changes the dir's
    /// `ca.crt`, not this).
    pub ca_pem: String,
    pub admin_token: String,
}

pub fn test_pki() -> &'static TestPki {
    static PKI: OnceLock<TestPki> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir").keep();
        let out = Command::new(binary("berthd"))
            .args(["pki", "init", "--cluster-id", "e2e", "--dir"])
            .arg(&dir)
            .output()
            .expect("run berthd pki init");
        assert!(
            out.status.success(),
            "pki init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        TestPki {
            ca_pem: std::fs::read_to_string(dir.join("ca.crt")).expect("ca.crt"),
            admin_token: std::fs::read_to_string(dir.join("admin.token"))
                .expect("admin.token")
                .trim()
                .to_string(),
            dir,
        }
    })
}

/// The `berth` CLI against `endpoints` (comma-separated) with `token`,
/// trusting the test CA's current `ca.crt`, with nothing taken from the
/// environment or a config file.
pub fn berth_cli(endpoints: &str, token: &str, args: &[&str]) -> std::process::Output {
    Command::new(binary("berth"))
        .arg("--endpoint")
        .arg(endpoints)
        .arg("--ca-cert")
        .arg(test_pki().dir.join("ca.crt"))
        .args(args)
        .env_remove("BERTH_ENDPOINT")
        .env_remove("BERTH_CA_CERT")
        .env_remove("BERTH_CONFIG")
        .env("BERTH_TOKEN", token)
        .output()
        .expect("run berth")
}

/// Adds `authorization: Bearer ...` to every call, when a token is set.
#[derive(Clone)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub type AuthChannel = InterceptedService<Channel, BearerToken>;

/// A TLS channel verified against the test CA, with an optional client
/// certificate (certificate and key, PEM).
pub async fn tls_channel(addr: &str, identity: Option<(&str, &str)>) -> Result<Channel> {
    // Read at each call, not once: a CA rotation (tests/tests/ca_rotation.rs)
    // changes what the servers' chains lead to.
    let ca_pem = std::fs::read_to_string(test_pki().dir.join("ca.crt"))
        .unwrap_or_else(|_| test_pki().ca_pem.clone());
    tls_channel_trusting(addr, &ca_pem, identity).await
}

/// An agent session on the session transport (ALPN `berth-session/1`),
/// as the agent opens it, with an optional client certificate: sends
/// `messages` and keeps its side open; the returned reader is the
/// server's side.
pub async fn wire_session(
    addr: &str,
    identity: Option<(&str, &str)>,
    messages: Vec<pb::AgentMessage>,
) -> Result<berth_wire::Inbound> {
    let outbound =
        futures::StreamExt::chain(futures::stream::iter(messages), futures::stream::pending());
    wire_session_sending(addr, identity, outbound).await
}

/// [`wire_session`] sending whatever `outbound` yields.
pub async fn wire_session_sending<S>(
    addr: &str,
    identity: Option<(&str, &str)>,
    outbound: S,
) -> Result<berth_wire::Inbound>
where
    S: futures::Stream<Item = pb::AgentMessage> + Send + Unpin + 'static,
{
    let ca_pem = std::fs::read_to_string(test_pki().dir.join("ca.crt"))
        .unwrap_or_else(|_| test_pki().ca_pem.clone());
    let config = berth_wire::client_config(&ca_pem, identity)?;
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let connection = tokio::time::timeout(
        Duration::from_secs(5),
        berth_wire::connect(addr, host, config),
    )
    .await??;
    anyhow::ensure!(
        connection.speaks_sessions(),
        "{addr} did not choose the session transport"
    );
    Ok(connection.start(outbound, 64 << 20))
}

/// How the server ended a session on the session transport: the status of
/// its `SessionEnd`, read past any messages before it. A session that is
/// still going after 10 s, or that ends without a reason, fails the test.
pub async fn wire_refusal(inbound: &mut berth_wire::Inbound) -> tonic::Status {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, inbound.message()).await {
            Ok(Err(status)) => return status,
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => panic!("the session ended without a reason"),
            Err(_) => panic!("the session was not ended within 10 s"),
        }
    }
}

/// A TLS channel that trusts `ca_pem` only, with an optional client
/// certificate.
pub async fn tls_channel_trusting(
    addr: &str,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<Channel> {
    let tls = berth_proto::tls::client_tls(ca_pem, identity);
    Ok(Channel::from_shared(format!("https://{addr}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(15))
        .connect()
        .await?)
}

/// A channel that presents `token` (or none) on every call.
pub async fn channel_as(addr: &str, token: Option<&str>) -> Result<AuthChannel> {
    let value = token
        .map(|t| MetadataValue::try_from(format!("Bearer {t}")))
        .transpose()?;
    Ok(InterceptedService::new(
        tls_channel(addr, None).await?,
        BearerToken(value),
    ))
}

/// A channel with the bootstrap admin token.
pub async fn channel(addr: &str) -> Result<AuthChannel> {
    channel_as(addr, Some(&test_pki().admin_token)).await
}

/// A wire message read as its domain type; a message that does not
/// convert fails the test, naming the field.
pub fn from_wire<W, D>(wire: W) -> Result<D>
where
    D: TryFrom<W>,
    D::Error: std::fmt::Display,
{
    D::try_from(wire).map_err(|e| anyhow::anyhow!("a reply that does not convert: {e}"))
}

pub async fn status(addr: &str) -> Result<berth_types::ControlPlaneStatus> {
    let mut client = ControlPlaneServiceClient::new(channel(addr).await?);
    from_wire(
        client
            .get_status(pb::GetControlPlaneStatusRequest {})
            .await?
            .into_inner(),
    )
}

pub async fn taskdefs(addr: &str) -> Result<TaskDefinitionServiceClient<AuthChannel>> {
    Ok(TaskDefinitionServiceClient::new(channel(addr).await?))
}

pub async fn clusters(addr: &str) -> Result<ClusterServiceClient<AuthChannel>> {
    Ok(ClusterServiceClient::new(channel(addr).await?))
}

pub async fn control_plane(addr: &str) -> Result<ControlPlaneServiceClient<AuthChannel>> {
    Ok(ControlPlaneServiceClient::new(channel(addr).await?))
}

/// A small valid task definition; `marker` lands in an env var so each
/// registration can be recognised when read back.
pub fn spec(family: &str, marker: &str) -> pb::TaskDefinitionSpec {
    let mut container = berth_types::ContainerDefinition::new("app", "localhost:5000/app:1");
    container.memory = Some(64);
    container.environment.push(berth_types::KeyValuePair {
        name: "MARKER".into(),
        value: marker.into(),
    });
    berth_types::TaskDefinitionSpec {
        family: family.into(),
        container_definitions: vec![container],
        cpu: None,
        memory: None,
        network_mode: Default::default(),
        volumes: vec![],
        tags: vec![],
    }
    .into()
}

pub fn marker_of(td: &pb::TaskDefinition) -> String {
    td.spec
        .as_ref()
        .and_then(|s| s.container_definitions.first())
        .and_then(|c| c.environment.iter().find(|e| e.name == "MARKER"))
        .map(|e| e.value.clone())
        .unwrap_or_default()
}

pub async fn register(addr: &str, family: &str, marker: &str) -> Result<pb::TaskDefinition> {
    let mut client = taskdefs(addr).await?;
    let reply = client
        .register_task_definition(pb::RegisterTaskDefinitionRequest {
            spec: Some(spec(family, marker)),
        })
        .await?;
    reply
        .into_inner()
        .task_definition
        .context("no task definition in reply")
}

pub async fn list_family(addr: &str, family: &str) -> Result<Vec<pb::TaskDefinition>> {
    let mut client = taskdefs(addr).await?;
    Ok(client
        .list_task_definitions(pb::ListTaskDefinitionsRequest {
            family: family.into(),
            status: String::new(),
        })
        .await?
        .into_inner()
        .task_definitions)
}

/// Retries `f` until it succeeds or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > deadline => {
                return Err(e.context(format!("still failing after {timeout:?}")))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

pub fn data_dir_exists(path: &Path) -> bool {
    path.join("node.json").exists()
}

/// One plain HTTP/1.0 GET to `127.0.0.1:port` (the test app's serve mode).
pub fn http_get(port: u16, path: &str) -> Result<String> {
    http_get_at(std::net::SocketAddr::from(([127, 0, 0, 1], port)), path)
}

/// [`http_get`] at any address (a task's own, say).
pub fn http_get_at(addr: std::net::SocketAddr, path: &str) -> Result<String> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(conn, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut text = String::new();
    conn.read_to_string(&mut text)?;
    Ok(text)
}

/// One DNS question over UDP (recursion desired, as a stub resolver asks);
/// the answers' data as text, sorted.
pub async fn dig(
    server: std::net::SocketAddr,
    name: &str,
    record_type: hickory_proto::rr::RecordType,
) -> Result<Vec<String>> {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::Name;
    use std::str::FromStr;
    let mut query = Message::new();
    query
        .set_id(7)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_str(name)?, record_type));
    let socket = tokio::net::UdpSocket::bind("0.0.0.0:0").await?;
    socket.send_to(&query.to_vec()?, server).await?;
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
        .await
        .context("no DNS answer within 5 s")??;
    let answer = Message::from_vec(&buf[..n])?;
    let mut data: Vec<String> = answer
        .answers()
        .iter()
        .map(|r| r.data().to_string())
        .collect();
    data.sort();
    Ok(data)
}
