//! `berth-bench discovery`: how fast a service's tasks reach and leave the
//! places clients find them, and what HAProxy in front of them costs.
//!
//! A 3-server cluster with DNS on every server (`--dns-listen
//! 127.0.0.{id}:PORT`), one hollow agent, a bridge-mode service whose
//! container port is published on a dynamic host port, and the real
//! `berth-lb` programming a real HAProxy (http mode) from the service's
//! endpoints.
//!
//! 1. Rounds of scale-out by one task and back: from the hollow agent's
//!    RUNNING report leaving the bench (the task has no health check, so
//!    it is healthy once RUNNING) to the task in the SRV answer of the
//!    leader's and a follower's DNS, and to its host port in a ready server
//!    slot of HAProxy (`show servers state` on the runtime API); and from
//!    the scale-in call returning to the stopped task gone from all three.
//! 2. HTTP requests per second through HAProxy to a 3-task service against
//!    the same three backends hit directly, in interleaved rounds: the bench
//!    serves HTTP on the three endpoints' host ports itself (hollow agents
//!    run no containers).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use berth_client::{BerthClient, ClientConfig};
use berth_lb::haproxy::Runtime;
use berth_proto::pb;
use berth_types::service::{CreateServiceInput, UpdateServiceInput};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cluster;
use crate::hollow::{self, HollowSize, RunningSent};
use crate::load::Watched;
use crate::machine::{self, CpuClock, CpuWindow, Machine};
use crate::stats::{fmt_rate, percentile};
use crate::tasks::bounded;
use crate::DiscoveryArgs;

const SERVERS: u64 = 3;
const CLUSTER: &str = berth_types::DEFAULT_CLUSTER;
const FAMILY: &str = "disc-web";
const SERVICE: &str = "web";
/// berth-lb's `[[load_balancer]]`: frontend `fe_web`, backend `be_web`.
const LB_NAME: &str = "web";
const CONTAINER: &str = "app";
const CONTAINER_PORT: u32 = 8080;
/// Servers in HAProxy's backend: enough for every task of the run, so
/// berth-lb never reloads HAProxy to grow it.
const LB_SLOTS: usize = 8;
/// Tasks of the service while requests per second are measured.
const THROUGHPUT_TASKS: u32 = 3;
/// The hollow agent: room for every task; its reports leave at once.
const HOLLOW_CPU_UNITS: u32 = 1024;
const HOLLOW_MEMORY_MIB: u32 = 1024;
const TASK_CPU_UNITS: u32 = 16;
const TASK_MEMORY_MIB: u32 = 16;
/// Pause between a change being seen everywhere and the next change.
const SETTLE: Duration = Duration::from_millis(250);
/// One path has this long to show a change before the run fails.
const CHANGE_LIMIT: Duration = Duration::from_secs(15);
const DNS_TIMEOUT: Duration = Duration::from_secs(2);
/// One HTTP exchange of the load generator, at most.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Warm-up of each throughput window (connections opened, HAProxy's
/// server connections established), not counted.
const WARMUP: Duration = Duration::from_millis(500);
const SERVER_LOG: &str = "info,openraft=warn";
const TARGET_APPEAR: Duration = Duration::from_secs(1);

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n";
const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n";

/// One of the three places a client finds the service.
#[derive(Clone, Copy)]
enum Path3 {
    DnsLeader,
    DnsFollower,
    Haproxy,
}

const PATHS: [Path3; 3] = [Path3::DnsLeader, Path3::DnsFollower, Path3::Haproxy];

/// One scale-out and scale-in cycle.
struct Round {
    /// UpdateService (count + 1) sent to the new task's RUNNING report
    /// leaving the hollow agent.
    to_running: Duration,
    /// From the RUNNING report: leader DNS, follower DNS, HAProxy.
    appear: [Duration; 3],
    /// From the scale-in call's answer: the same three.
    leave: [Duration; 3],
    /// The scale-in stopped the task the scale-out had started.
    stopped_new: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Proxied,
    Direct,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Proxied => "through HAProxy",
            Mode::Direct => "direct",
        }
    }
}

struct Window {
    mode: Mode,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    window: Duration,
    p50: Option<Duration>,
    p99: Option<Duration>,
    /// (label, cores): HAProxy's worker, the servers, the bench, everything
    /// else.
    cpu: Vec<(String, Option<f64>)>,
    /// Cores the machine spent in interrupts (loopback TCP is mostly
    /// softirq; the kernel counts part of it to whichever process ran, so
    /// it overlaps the per-process figures).
    irq: Option<f64>,
    /// Requests each backend served during the window.
    per_backend: Vec<u64>,
}

impl Window {
    fn rps(&self) -> f64 {
        self.ok as f64 / self.window.as_secs_f64()
    }
}

pub struct Report {
    machine: Machine,
    haproxy_version: String,
    args_line: String,
    heartbeat: Duration,
    heartbeat_text: String,
    base: u32,
    poll: Duration,
    leader: u64,
    follower: u64,
    rounds: Vec<Round>,
    connections: usize,
    secs: u64,
    windows: Vec<(usize, Window)>,
    notes: Vec<String>,
    elapsed: Duration,
}

fn spec() -> pb::TaskDefinitionSpec {
    let mut container =
        berth_types::ContainerDefinition::new(CONTAINER, "localhost:5000/bench/web:1");
    container.cpu = TASK_CPU_UNITS;
    container.memory = Some(TASK_MEMORY_MIB);
    container.port_mappings = vec![berth_types::PortMapping {
        container_port: CONTAINER_PORT,
        host_port: None,
        protocol: berth_types::Protocol::Tcp,
    }];
    berth_types::TaskDefinitionSpec {
        family: FAMILY.into(),
        container_definitions: vec![container],
        cpu: None,
        memory: None,
        network_mode: berth_types::NetworkMode::Bridge,
        volumes: vec![],
        tags: vec![],
    }
    .into()
}

/// A DNS client asking one server for the service's SRV records.
struct DnsProbe {
    socket: UdpSocket,
    name: Name,
    id: u16,
}

impl DnsProbe {
    async fn new(server: SocketAddr) -> Result<Self> {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        socket.connect(server).await?;
        let name = Name::from_str(&format!(
            "_{CONTAINER_PORT}._tcp.{SERVICE}.{CLUSTER}.berth."
        ))?;
        Ok(Self {
            socket,
            name,
            id: 0,
        })
    }

    /// (task id, host port) of every SRV record in the answer.
    async fn srv(&mut self) -> Result<BTreeSet<(String, u16)>> {
        self.id = self.id.wrapping_add(1);
        let mut query = Message::new();
        query
            .set_id(self.id)
            .add_query(Query::query(self.name.clone(), RecordType::SRV));
        self.socket.send(&query.to_vec()?).await?;
        let mut buf = vec![0u8; 4096];
        loop {
            let n = tokio::time::timeout(DNS_TIMEOUT, self.socket.recv(&mut buf))
                .await
                .map_err(|_| anyhow!("no DNS answer within {DNS_TIMEOUT:?}"))??;
            let answer = Message::from_vec(&buf[..n])?;
            // A late answer to an earlier query that timed out.
            if answer.id() != self.id {
                continue;
            }
            return Ok(answer
                .answers()
                .iter()
                .filter_map(|r| match r.data() {
                    RData::SRV(srv) => {
                        let task = srv.target().iter().next()?;
                        Some((
                            String::from_utf8_lossy(task).to_ascii_lowercase(),
                            srv.port(),
                        ))
                    }
                    _ => None,
                })
                .collect());
        }
    }
}

/// The host ports of HAProxy's ready servers in the backend (in service
/// and not in maintenance).
async fn ready_ports(runtime: &Runtime) -> Result<BTreeSet<u16>> {
    let backend = berth_lb::plan::backend_name(LB_NAME);
    Ok(runtime
        .servers(&backend)
        .await?
        .into_iter()
        .filter(|s| s.op_state == 2 && !s.in_maint())
        .map(|s| s.port)
        .collect())
}

/// What one path's poller watches for.
enum Want<'a> {
    /// The task (DNS) or its host port (HAProxy) is there.
    Present { task: &'a str, port: u16 },
    /// Exactly this many endpoints are left.
    Count(usize),
}

impl Want<'_> {
    fn dns(&self, set: &BTreeSet<(String, u16)>) -> bool {
        match self {
            Want::Present { task, .. } => set.iter().any(|(t, _)| t == task),
            Want::Count(n) => set.len() == *n,
        }
    }

    fn lb(&self, ports: &BTreeSet<u16>) -> bool {
        match self {
            Want::Present { port, .. } => ports.contains(port),
            Want::Count(n) => ports.len() == *n,
        }
    }
}

/// Polls one path every `poll` until `want` holds; the instant the first
/// answer that shows it arrived.
async fn watch_dns(probe: &mut DnsProbe, poll: Duration, want: &Want<'_>) -> Result<Instant> {
    let start = Instant::now();
    loop {
        let answer = probe.srv().await;
        let got = Instant::now();
        match answer {
            Ok(set) if want.dns(&set) => return Ok(got),
            Ok(set) if start.elapsed() > CHANGE_LIMIT => {
                bail!("DNS still answers {set:?} after {CHANGE_LIMIT:?}")
            }
            Err(e) if start.elapsed() > CHANGE_LIMIT => return Err(e.context("DNS")),
            _ => {}
        }
        tokio::time::sleep(poll).await;
    }
}

async fn watch_lb(runtime: &Runtime, poll: Duration, want: &Want<'_>) -> Result<Instant> {
    let start = Instant::now();
    loop {
        let answer = ready_ports(runtime).await;
        let got = Instant::now();
        match answer {
            Ok(ports) if want.lb(&ports) => return Ok(got),
            Ok(ports) if start.elapsed() > CHANGE_LIMIT => {
                bail!("HAProxy's ready servers are still {ports:?} after {CHANGE_LIMIT:?}")
            }
            Err(e) if start.elapsed() > CHANGE_LIMIT => {
                return Err(anyhow!(e).context("HAProxy's runtime API"))
            }
            _ => {}
        }
        tokio::time::sleep(poll).await;
    }
}

/// The three paths at once; the instant each first showed `want`.
async fn watch_all(
    dns: &mut [DnsProbe; 2],
    runtime: &Runtime,
    poll: Duration,
    want: &Want<'_>,
) -> Result<[Instant; 3]> {
    let [leader, follower] = dns;
    let (a, b, c) = tokio::join!(
        watch_dns(leader, poll, want),
        watch_dns(follower, poll, want),
        watch_lb(runtime, poll, want)
    );
    Ok([
        a.context("the leader's DNS")?,
        b.context("a follower's DNS")?,
        c?,
    ])
}

async fn scale(client: &BerthClient, count: u32) -> Result<()> {
    tokio::time::timeout(
        Duration::from_secs(30),
        client.update_service(&UpdateServiceInput {
            cluster: CLUSTER.into(),
            name: SERVICE.into(),
            desired_count: Some(count),
            ..Default::default()
        }),
    )
    .await
    .map_err(|_| anyhow!("UpdateService (desired count {count}): no answer within 30 s"))??;
    Ok(())
}

/// The next RUNNING report the hollow agent sends after the `seen` it had
/// sent before.
async fn next_running(
    stats: &hollow::FleetStats,
    seen: &mut usize,
    limit: Duration,
) -> Result<RunningSent> {
    let start = Instant::now();
    loop {
        if let Some(sent) = stats.running_sent(*seen).into_iter().next() {
            *seen += 1;
            return Ok(sent);
        }
        if start.elapsed() > limit {
            bail!("the hollow agent reported no new task RUNNING within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// HTTP/1.1 on `port`: answers every request with [`RESPONSE`] on
/// keep-alive connections, counting them.
async fn serve_http(port: u16, served: Arc<AtomicU64>) -> Result<JoinHandle<()>> {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| {
            format!("serving HTTP on 127.0.0.1:{port}, the endpoint's host port (something else holds it?)")
        })?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let served = served.clone();
            tokio::spawn(async move {
                let _ = stream.set_nodelay(true);
                let mut buf: Vec<u8> = Vec::with_capacity(4096);
                let mut out: Vec<u8> = Vec::with_capacity(4096);
                loop {
                    // Requests are GETs without a body: one per header block.
                    while let Some(end) = find(&buf, b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        out.extend_from_slice(RESPONSE);
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    if !out.is_empty() {
                        if stream.write_all(&out).await.is_err() {
                            return;
                        }
                        out.clear();
                    }
                    buf.reserve(4096);
                    match stream.read_buf(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            });
        }
    }))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn content_length(head: &[u8]) -> Option<usize> {
    let head = std::str::from_utf8(head).ok()?;
    head.split("\r\n").find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    })
}

/// Reads one response (status 200, with a Content-Length) off `stream`.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = &buf[..end];
            if !head.starts_with(b"HTTP/1.1 200") {
                let line =
                    String::from_utf8_lossy(head.split(|b| *b == b'\r').next().unwrap_or(head))
                        .into_owned();
                return Err(bad(format!("answer {line:?}")));
            }
            let len = content_length(head).ok_or_else(|| bad("no Content-Length".into()))?;
            let total = end + 4 + len;
            while buf.len() < total {
                buf.reserve(4096);
                if stream.read_buf(buf).await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
            buf.drain(..total);
            return Ok(());
        }
        buf.reserve(4096);
        if stream.read_buf(buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// One request on the client's keep-alive connection (opened if need be).
async fn exchange(
    conn: &mut Option<TcpStream>,
    target: SocketAddr,
    buf: &mut Vec<u8>,
) -> std::io::Result<()> {
    let stream = match conn {
        Some(stream) => stream,
        None => {
            let stream = TcpStream::connect(target).await?;
            stream.set_nodelay(true)?;
            buf.clear();
            conn.insert(stream)
        }
    };
    stream.write_all(REQUEST).await?;
    read_response(stream, buf).await
}

struct Tally {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    latencies: Vec<Duration>,
}

/// `connections` closed-loop clients, each on its own keep-alive
/// connection to `targets[i % len]`, for [`WARMUP`] and then `measure`.
/// Only requests completed inside the measured window count.
async fn http_load(
    mode: Mode,
    targets: &[SocketAddr],
    connections: usize,
    measure: Duration,
    clock: &CpuClock,
    watched: &Watched,
    served: &[Arc<AtomicU64>],
) -> Window {
    let begin = Instant::now();
    let window_start = begin + WARMUP;
    let window_end = window_start + measure;
    let mut clients = Vec::with_capacity(connections);
    for i in 0..connections {
        let target = targets[i % targets.len()];
        clients.push(tokio::spawn(async move {
            let mut tally = Tally {
                ok: 0,
                errors: 0,
                first_error: None,
                latencies: Vec::new(),
            };
            let mut conn: Option<TcpStream> = None;
            let mut buf = Vec::with_capacity(4096);
            loop {
                let sent = Instant::now();
                if sent >= window_end {
                    break;
                }
                let result =
                    tokio::time::timeout(REQUEST_TIMEOUT, exchange(&mut conn, target, &mut buf))
                        .await
                        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()));
                let done = Instant::now();
                let counted = done >= window_start && done <= window_end;
                match result {
                    Ok(()) if counted => {
                        tally.ok += 1;
                        tally.latencies.push(done - sent);
                    }
                    Ok(()) => {}
                    Err(e) => {
                        conn = None;
                        if counted {
                            tally.errors += 1;
                        }
                        tally.first_error.get_or_insert_with(|| e.to_string());
                        // Not a hot loop against a refusing server.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            tally
        }));
    }
    tokio::time::sleep_until(window_start).await;
    let before: Vec<u64> = served.iter().map(|s| s.load(Ordering::Relaxed)).collect();
    let cpu = CpuWindow::start(clock, watched);
    let irq_before = clock.irq_secs();
    tokio::time::sleep_until(window_end).await;
    let irq = clock
        .irq_secs()
        .zip(irq_before)
        .map(|(a, b)| (a - b) / measure.as_secs_f64());
    let cpu = cpu.finish();
    let per_backend = served
        .iter()
        .zip(&before)
        .map(|(s, b)| s.load(Ordering::Relaxed) - b)
        .collect();
    let mut out = Window {
        mode,
        ok: 0,
        errors: 0,
        first_error: None,
        window: measure,
        p50: None,
        p99: None,
        cpu,
        irq,
        per_backend,
    };
    let mut latencies = Vec::new();
    for client in clients {
        match client.await {
            Ok(t) => {
                out.ok += t.ok;
                out.errors += t.errors;
                if out.first_error.is_none() {
                    out.first_error = t.first_error;
                }
                latencies.extend(t.latencies);
            }
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert(format!("client task: {e}"));
            }
        }
    }
    latencies.sort();
    out.p50 = percentile(&latencies, 50.0);
    out.p99 = percentile(&latencies, 99.0);
    out
}

/// Writes berth-lb's config (a readonly token, the test CA, one http-mode
/// load balancer for the service) into `dir`; returns the config's path.
fn lb_config(dir: &Path, servers: &[String], token: &str, frontend: u16) -> Result<PathBuf> {
    std::fs::write(dir.join("token"), token)?;
    let config = dir.join("lb.toml");
    std::fs::write(
        &config,
        format!(
            r#"endpoint = "{servers}"
ca_cert = "{ca}"
token_file = "token"
haproxy_socket = "haproxy.sock"
haproxy_config = "haproxy.cfg"
slots = {LB_SLOTS}

[[load_balancer]]
name = "{LB_NAME}"
bind = "127.0.0.1:{frontend}"
cluster = "{CLUSTER}"
service = "{SERVICE}"
container_name = "{CONTAINER}"
container_port = {CONTAINER_PORT}
mode = "http"
"#,
            servers = servers.join(","),
            ca = berth_e2e::test_pki().dir.join("ca.crt").display(),
        ),
    )?;
    Ok(config)
}

fn haproxy_version() -> Result<String> {
    let out = std::process::Command::new("haproxy")
        .arg("-v")
        .output()
        .context("running `haproxy -v`: is haproxy installed (scripts/install-deps.sh)?")?;
    ensure!(out.status.success(), "`haproxy -v` failed");
    // "HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/"
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)
        .unwrap_or("unknown");
    Ok(format!("HAProxy {version}"))
}

pub async fn run(args: &DiscoveryArgs) -> Result<Report> {
    let started = Instant::now();
    let heartbeat = berth_types::duration::parse_duration(&args.heartbeat)
        .map_err(|e| anyhow!("--heartbeat: {e}"))?;
    let haproxy_version = haproxy_version()?;
    berth_e2e::try_binary("berth-lb").context(
        "berth-bench drives the release berth-lb that sits next to it; build it with \
         `cargo build --release -p berth-server -p berth-lb -p berth-bench`",
    )?;
    cluster::berthd()?;
    let machine = machine::describe();
    println!(
        "machine: {} x {}, {}, {}; {haproxy_version}",
        machine.nproc, machine.cpu_model, machine.memory, machine.kernel
    );
    let clock = CpuClock::new();
    let poll = Duration::from_millis(args.poll_ms);
    let base = args.base;

    // ---- the cluster, with DNS on 127.0.0.{id}:PORT.
    let _pki = cluster::PkiCleanup;
    let dns_port = berth_e2e::free_port();
    let dns_listen = format!("127.0.0.{{id}}:{dns_port}");
    let mut cluster = cluster::start(
        SERVERS,
        &[],
        &[
            "--agent-heartbeat",
            args.heartbeat.as_str(),
            "--dns-listen",
            dns_listen.as_str(),
            "--log",
            SERVER_LOG,
        ],
    )
    .await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(15)).await?;
    let leader_addr = cluster.addr(leader);
    let follower = (1..=SERVERS)
        .find(|id| *id != leader)
        .ok_or_else(|| anyhow!("no follower"))?;
    let servers: Vec<String> = cluster.servers.values().map(|s| s.addr.clone()).collect();
    println!("leader: server {leader}; DNS on 127.0.0.{{1,2,3}}:{dns_port}");
    let dns_addr = |id: u64| -> Result<SocketAddr> {
        Ok(SocketAddr::from(([127, 0, 0, u8::try_from(id)?], dns_port)))
    };

    let mut defs = berth_e2e::taskdefs(&leader_addr).await?;
    bounded(
        "RegisterTaskDefinition",
        defs.register_task_definition(pb::RegisterTaskDefinitionRequest { spec: Some(spec()) }),
    )
    .await?;

    // ---- one hollow agent, keeping a log of its RUNNING reports.
    let launched = hollow::launch(
        &leader_addr,
        servers.clone(),
        1,
        HollowSize {
            cpu_units: HOLLOW_CPU_UNITS,
            memory_mib: HOLLOW_MEMORY_MIB,
            flush: Duration::ZERO,
        },
        "berth-bench discovery: a hollow agent",
    )
    .await?;
    let fleet = launched.fleet;
    fleet.stats.record_running();
    let mut seen = 0usize;

    let pki = berth_e2e::test_pki();
    let client = BerthClient::new(
        ClientConfig::new(servers.clone())
            .with_ca(pki.ca_pem.clone())
            .with_token(pki.admin_token.clone()),
    )?;
    client
        .create_service(&CreateServiceInput {
            cluster: CLUSTER.into(),
            name: SERVICE.into(),
            task_definition: FAMILY.into(),
            desired_count: Some(base),
            ..Default::default()
        })
        .await?;
    for _ in 0..base {
        next_running(&fleet.stats, &mut seen, CHANGE_LIMIT).await?;
    }

    // ---- berth-lb and its HAProxy.
    let (_, readonly) = client
        .create_api_token(berth_types::Role::Readonly, "berth-bench discovery", None)
        .await?;
    let lb_dir = tempfile::Builder::new()
        .prefix("berth-bench-lb")
        .tempdir()
        .context("a temp dir for berth-lb")?;
    let frontend = berth_e2e::free_port();
    let config = lb_config(lb_dir.path(), &servers, &readonly, frontend)?;
    let mut lb = berth_e2e::lb::LbProc::start(&config)?;
    let runtime = Runtime {
        socket: lb_dir.path().join("haproxy.sock"),
    };
    let mut dns = [
        DnsProbe::new(dns_addr(leader)?).await?,
        DnsProbe::new(dns_addr(follower)?).await?,
    ];
    let steady = watch_all(&mut dns, &runtime, poll, &Want::Count(base as usize)).await;
    steady.with_context(|| format!("the service's first endpoints\n{}", lb.log()))?;
    let worker = runtime.worker_pid().await?;
    println!(
        "berth-lb up: HAProxy worker {worker}, frontend 127.0.0.1:{frontend}; {base} task(s) found everywhere"
    );

    // ---- 1. scale out by one and back, `rounds` times.
    let mut rounds = Vec::new();
    for round in 1..=args.rounds {
        let asked = Instant::now();
        scale(&client, base + 1).await?;
        let new = next_running(&fleet.stats, &mut seen, CHANGE_LIMIT).await?;
        let port = *new
            .host_ports
            .first()
            .ok_or_else(|| anyhow!("task {} was given no host port", new.task_id))?;
        let task = new.task_id.to_ascii_lowercase();
        let want = Want::Present { task: &task, port };
        let seen_at = watch_all(&mut dns, &runtime, poll, &want)
            .await
            .with_context(|| format!("round {round}: task {task} on host port {port} appearing"))?;
        let appear = seen_at.map(|at| at.saturating_duration_since(new.at));
        tokio::time::sleep(SETTLE).await;

        scale(&client, base).await?;
        let stop_returned = Instant::now();
        let gone_at = watch_all(&mut dns, &runtime, poll, &Want::Count(base as usize))
            .await
            .with_context(|| format!("round {round}: back to {base} endpoint(s)"))?;
        let leave = gone_at.map(|at| at.saturating_duration_since(stop_returned));
        let stopped_new = !dns[0].srv().await?.iter().any(|(t, _)| *t == task);
        println!(
            "round {round:>2}: appear {:.1} / {:.1} / {:.1} ms, leave {:.1} / {:.1} / {:.1} ms (leader DNS / follower DNS / HAProxy)",
            ms(appear[0]), ms(appear[1]), ms(appear[2]), ms(leave[0]), ms(leave[1]), ms(leave[2])
        );
        rounds.push(Round {
            to_running: new.at.saturating_duration_since(asked),
            appear,
            leave,
            stopped_new,
        });
        tokio::time::sleep(SETTLE).await;
    }

    // ---- 2. requests per second, through HAProxy and direct.
    scale(&client, THROUGHPUT_TASKS).await?;
    let want = Want::Count(THROUGHPUT_TASKS as usize);
    watch_all(&mut dns, &runtime, poll, &want)
        .await
        .context("the throughput service's endpoints")?;
    let endpoints = dns[0].srv().await?;
    let ports: Vec<u16> = endpoints.iter().map(|(_, p)| *p).collect();
    ensure!(
        ports.len() == THROUGHPUT_TASKS as usize
            && ready_ports(&runtime).await? == ports.iter().copied().collect(),
        "DNS ({endpoints:?}) and HAProxy disagree"
    );
    let served: Vec<Arc<AtomicU64>> = ports.iter().map(|_| Arc::new(AtomicU64::new(0))).collect();
    let mut http_servers = Vec::new();
    for (port, counter) in ports.iter().zip(&served) {
        http_servers.push(serve_http(*port, counter.clone()).await?);
    }
    let backends: Vec<SocketAddr> = ports
        .iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
        .collect();
    let front = [SocketAddr::from(([127, 0, 0, 1], frontend))];
    let worker = runtime.worker_pid().await?;
    let mut watched: Watched = vec![("haproxy".to_string(), worker)];
    watched.extend(cluster::watched(&cluster, leader));
    println!(
        "throughput: {} rounds of {} s through HAProxy and {} s direct, {} connections, backends on host ports {ports:?}",
        args.rps_rounds, args.rps_secs, args.rps_secs, args.connections
    );
    let mut windows = Vec::new();
    for round in 1..=args.rps_rounds {
        let order = if round % 2 == 1 {
            [Mode::Proxied, Mode::Direct]
        } else {
            [Mode::Direct, Mode::Proxied]
        };
        for mode in order {
            let targets: &[SocketAddr] = match mode {
                Mode::Proxied => &front,
                Mode::Direct => &backends,
            };
            let w = http_load(
                mode,
                targets,
                args.connections,
                Duration::from_secs(args.rps_secs),
                &clock,
                &watched,
                &served,
            )
            .await;
            println!(
                "  round {round} {:<15} {:>8} req/s, p50 {:.3} ms, p99 {:.3} ms, {} errors",
                mode.label(),
                fmt_rate(w.rps()),
                w.p50.map_or(0.0, ms),
                w.p99.map_or(0.0, ms),
                w.errors
            );
            windows.push((round, w));
        }
    }

    let mut notes = Vec::new();
    let errors: u64 = windows.iter().map(|(_, w)| w.errors).sum();
    if let Some(first) = windows.iter().find_map(|(_, w)| w.first_error.clone()) {
        notes.push(format!(
            "{errors} failed HTTP requests counted in the windows; the first error: {first}"
        ));
    }
    let failures = hollow::FleetStats::load(&fleet.stats.session_failures);
    if failures > 0 {
        notes.push(format!(
            "{failures} hollow session failures; the first: {}",
            fleet.stats.first_failure().unwrap_or_default()
        ));
    }
    if runtime.worker_pid().await? != worker {
        notes.push("HAProxy's worker changed during the run (a reload)".into());
    }

    for server in http_servers {
        server.abort();
    }
    lb.terminate().with_context(|| lb.log())?;
    drop(fleet);
    cluster::stop(cluster, args.logs.as_deref(), "discovery")?;
    Ok(Report {
        machine,
        haproxy_version,
        args_line: format!(
            "--rounds {} --rps-rounds {} --rps-secs {} --connections {}",
            args.rounds, args.rps_rounds, args.rps_secs, args.connections
        ),
        heartbeat,
        heartbeat_text: args.heartbeat.clone(),
        base,
        poll,
        leader,
        follower,
        rounds,
        connections: args.connections,
        secs: args.rps_secs,
        windows,
        notes,
        elapsed: started.elapsed(),
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn fmt_ms1(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_string(), |d| format!("{:.1}", ms(d)))
}

/// (p50, p90, max) of samples.
fn spread(
    samples: impl Iterator<Item = Duration>,
) -> (Option<Duration>, Option<Duration>, Option<Duration>) {
    let mut sorted: Vec<Duration> = samples.collect();
    sorted.sort();
    (
        percentile(&sorted, 50.0),
        percentile(&sorted, 90.0),
        sorted.last().copied(),
    )
}

fn median_f64(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

fn yes_no(met: bool) -> &'static str {
    if met {
        "yes"
    } else {
        "**no**"
    }
}

fn path_label(path: Path3, leader: u64, follower: u64) -> String {
    match path {
        Path3::DnsLeader => format!("DNS SRV, leader (server {leader})"),
        Path3::DnsFollower => format!("DNS SRV, follower (server {follower})"),
        Path3::Haproxy => "HAProxy ready server (berth-lb)".to_string(),
    }
}

impl Report {
    /// The cores of the processes whose label `matches`, summed.
    fn cores(w: &Window, matches: impl Fn(&str) -> bool) -> String {
        w.cpu
            .iter()
            .filter(|(l, _)| matches(l))
            .map(|(_, c)| *c)
            .sum::<Option<f64>>()
            .map_or("-".into(), |c| format!("{c:.2}"))
    }

    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let (l, f) = (self.leader, self.follower);
        let n = self.rounds.len();
        let mut s = String::new();
        s.push_str("## Service discovery and berth-lb: `berth-bench discovery`\n\n");
        s.push_str(&format!("Measured {} (`date -u`).\n\n", m.date));
        s.push_str("### Reproduce\n\n```sh\nsudo scripts/install-deps.sh   # haproxy\ncargo build --release -p berth-server -p berth-lb -p berth-bench\n");
        s.push_str(&format!(
            "./target/release/berth-bench discovery {}\n```\n\n",
            self.args_line
        ));
        s.push_str(&format!(
            "The run took {} s and rewrites only this section (`--no-doc` leaves it alone).\n\n",
            self.elapsed.as_secs()
        ));
        s.push_str(
            "### Machine\n\n| nproc | CPU | Memory | Kernel | HAProxy |\n|---:|---|---|---|---|\n",
        );
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n\n",
            m.nproc, m.cpu_model, m.memory, m.kernel, self.haproxy_version
        ));
        s.push_str(
            "The three servers, the hollow agent, berth-lb, HAProxy, the HTTP backends and the load \
             generator all share these cores (the bench process is the hollow agent, the pollers, \
             the backends and the load generator).\n\n",
        );

        // ---- targets.
        let appear: Vec<_> = (0..3)
            .map(|i| spread(self.rounds.iter().map(|r| r.appear[i])))
            .collect();
        let leave: Vec<_> = (0..3)
            .map(|i| spread(self.rounds.iter().map(|r| r.leave[i])))
            .collect();
        s.push_str("### Targets\n\n| Target (from the issue) | Required | Measured (max of the rounds) | Met |\n|---|---|---:|---|\n");
        for (i, path) in PATHS.iter().enumerate() {
            let max = appear[i].2;
            s.push_str(&format!(
                "| A healthy task appears: {} | under {} ms, every round | {} ms | {} |\n",
                path_label(*path, l, f),
                TARGET_APPEAR.as_millis(),
                fmt_ms1(max),
                yes_no(max.is_some_and(|m| m < TARGET_APPEAR))
            ));
        }
        for (i, path) in PATHS.iter().enumerate() {
            let max = leave[i].2;
            s.push_str(&format!(
                "| A stopped task leaves: {} | within one heartbeat period ({}), every round | {} ms | {} |\n",
                path_label(*path, l, f),
                self.heartbeat_text,
                fmt_ms1(max),
                yes_no(max.is_some_and(|m| m <= self.heartbeat))
            ));
        }

        // ---- discovery latency.
        s.push_str(&format!(
            "\n### Appearing and leaving, {n} rounds\n\n\
             *Appear*: from the hollow agent queueing the new task's RUNNING report on its session \
             to the first answer that shows it. *Leave*: from the scale-in `UpdateService` call's \
             answer to the first answer without the stopped task.\n\n\
             | Path | appear p50 (ms) | p90 | max | leave p50 (ms) | p90 | max |\n|---|---:|---:|---:|---:|---:|---:|\n"
        ));
        for (i, path) in PATHS.iter().enumerate() {
            let (a, b) = (appear[i], leave[i]);
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                path_label(*path, l, f),
                fmt_ms1(a.0),
                fmt_ms1(a.1),
                fmt_ms1(a.2),
                fmt_ms1(b.0),
                fmt_ms1(b.1),
                fmt_ms1(b.2)
            ));
        }
        let placed = spread(self.rounds.iter().map(|r| r.to_running));
        let stopped_new = self.rounds.iter().filter(|r| r.stopped_new).count();
        s.push_str(&format!(
            "\nFor scale: the scale-out `UpdateService` call to the RUNNING report leaving the hollow \
             agent (the service controller, the scheduler, the assignment, no container to start) \
             took p50 {} ms, max {} ms. The scale-in stopped the task just started in {stopped_new} \
             of {n} rounds, the older one otherwise; either way the count of endpoints going back to \
             {} is what *leave* waits for.\n\n",
            fmt_ms1(placed.0),
            fmt_ms1(placed.2),
            self.base
        ));
        s.push_str("<details><summary>Every round (ms): appear leader / follower / HAProxy, leave leader / follower / HAProxy</summary>\n\n| Round | appear L | appear F | appear HAProxy | leave L | leave F | leave HAProxy |\n|---:|---:|---:|---:|---:|---:|---:|\n");
        for (i, r) in self.rounds.iter().enumerate() {
            s.push_str(&format!(
                "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
                i + 1,
                ms(r.appear[0]),
                ms(r.appear[1]),
                ms(r.appear[2]),
                ms(r.leave[0]),
                ms(r.leave[1]),
                ms(r.leave[2])
            ));
        }
        s.push_str("\n</details>\n\n");

        // ---- throughput.
        let rps = |mode: Mode| -> Vec<f64> {
            self.windows
                .iter()
                .filter(|(_, w)| w.mode == mode)
                .map(|(_, w)| w.rps())
                .collect()
        };
        let p50s = |mode: Mode| -> Vec<f64> {
            self.windows
                .iter()
                .filter(|(_, w)| w.mode == mode)
                .filter_map(|(_, w)| w.p50.map(ms))
                .collect()
        };
        let ratios: Vec<f64> = self
            .windows
            .chunks(2)
            .filter_map(|pair| {
                let proxied = pair.iter().find(|(_, w)| w.mode == Mode::Proxied)?;
                let direct = pair.iter().find(|(_, w)| w.mode == Mode::Direct)?;
                (direct.1.rps() > 0.0).then(|| proxied.1.rps() / direct.1.rps())
            })
            .collect();
        let latency_ratios: Vec<f64> = self
            .windows
            .chunks(2)
            .filter_map(|pair| {
                let proxied = pair.iter().find(|(_, w)| w.mode == Mode::Proxied)?.1.p50?;
                let direct = pair.iter().find(|(_, w)| w.mode == Mode::Direct)?.1.p50?;
                (!direct.is_zero()).then(|| proxied.as_secs_f64() / direct.as_secs_f64())
            })
            .collect();
        let rounds = self.windows.len() / 2;
        s.push_str(&format!(
            "### HTTP through HAProxy against direct, {rounds} rounds\n\n\
             A service of {THROUGHPUT_TASKS} tasks; the bench serves HTTP/1.1 on their three host \
             ports itself (a fixed {}-byte answer), and {} closed-loop clients, each on its own \
             keep-alive connection, send `GET /` for {} s per window ({} ms warm-up not counted): \
             *through HAProxy* all to berth-lb's frontend (http mode, `balance roundrobin`), \
             *direct* spread evenly over the three host ports. Each round measures both, the order \
             alternating between rounds.\n\n",
            RESPONSE.len(),
            self.connections,
            self.secs,
            WARMUP.as_millis()
        ));
        s.push_str(&format!(
            "| Figure (medians of the {rounds} rounds) | Through HAProxy | Direct | Ratio (HAProxy / direct, median of the rounds' ratios) |\n|---|---:|---:|---:|\n"
        ));
        s.push_str(&format!(
            "| Requests per second | {} | {} | **{}** |\n",
            median_f64(rps(Mode::Proxied)).map_or("-".into(), fmt_rate),
            median_f64(rps(Mode::Direct)).map_or("-".into(), fmt_rate),
            median_f64(ratios).map_or("-".into(), |r| format!("{r:.2}"))
        ));
        s.push_str(&format!(
            "| p50 latency (ms) | {} | {} | {} |\n\n",
            median_f64(p50s(Mode::Proxied)).map_or("-".into(), |v| format!("{v:.3}")),
            median_f64(p50s(Mode::Direct)).map_or("-".into(), |v| format!("{v:.3}")),
            median_f64(latency_ratios).map_or("-".into(), |r| format!("{r:.2}"))
        ));
        s.push_str("| Round | Path | Requests/s | p50 (ms) | p99 (ms) | Errors | Requests per backend | CPU in cores: HAProxy / bench / 3 berthd / other | Interrupts (cores) |\n|---:|---|---:|---:|---:|---:|---|---|---:|\n");
        for (round, w) in &self.windows {
            s.push_str(&format!(
                "| {round} | {} | {} | {} | {} | {} | {} | {} / {} / {} / {} | {} |\n",
                w.mode.label(),
                fmt_rate(w.rps()),
                w.p50.map_or("-".into(), |d| format!("{:.3}", ms(d))),
                w.p99.map_or("-".into(), |d| format!("{:.3}", ms(d))),
                w.errors,
                w.per_backend
                    .iter()
                    .map(|c| fmt_rate(*c as f64))
                    .collect::<Vec<_>>()
                    .join(" / "),
                Self::cores(w, |l| l == "haproxy"),
                Self::cores(w, |l| l == "bench"),
                Self::cores(w, |l| l.starts_with("leader") || l.starts_with("server")),
                Self::cores(w, |l| l == "other"),
                w.irq.map_or("-".into(), |c| format!("{c:.2}")),
            ));
        }

        // ---- method and limits.
        s.push_str("\n### How it was measured, and what limits the figures\n\n");
        s.push_str(&format!(
            "- 3 `berthd` servers on 127.0.0.1 (release build, default Raft timings, \
             `--agent-heartbeat {}`, `--dns-listen 127.0.0.{{id}}:PORT`); the leader's (server {l}) and a follower's (server \
             {f}) DNS are asked over UDP. One *hollow agent* in the bench process (its own \
             certificate and mutual-TLS session, the real protocol; see `berth-bench tasks`) runs \
             the tasks: it reports a task RUNNING the moment it is assigned, and STOPPED the moment \
             it is asked to stop. No container starts, so *appear* is Berth's share alone: the \
             status report's Raft commit, each server applying it, and for HAProxy the \
             `WatchEndpoints` stream berth-lb holds (to whichever server its client picked), \
             berth-lb's runtime API commands (`set server ... addr`, `state ready`) and HAProxy.\n\
             - The service `{SERVICE}` runs task definition `{FAMILY}` in bridge mode, container \
             port {CONTAINER_PORT} published on a dynamic host port, no health check (healthy once \
             RUNNING), no `loadBalancers` of its own (so no deregistration delay: a task asked to \
             stop leaves the endpoints at once). The hollow agent's address is its session's \
             source address, 127.0.0.1. Each round scales the service from {b} to {} and back; \
             DNS is asked for `_{CONTAINER_PORT}._tcp.{SERVICE}.{CLUSTER}.berth` SRV, whose targets \
             name the tasks (the A record of `{SERVICE}.{CLUSTER}.berth` is one address, \
             127.0.0.1, for every task here, so it cannot show a task coming or going).\n\
             - Each path is polled every {} ms, the three at once; a time is taken when the answer \
             that first shows the change arrives, so it includes up to one poll interval plus one \
             query's round trip (well under 1 ms on loopback). A round starts only once all three \
             paths agree, with {} ms of rest after each change.\n\
             - *Leave* is measured from the scale-in call's answer; the call returns once the new \
             desired count is committed, and the leader's service controller then stops a task in \
             a command of its own. The heartbeat plays no part in a scale-in; it bounds how long a \
             silent agent's tasks stay, which this bench does not exercise.\n\
             - Throughput: {} as berth-lb runs it (`haproxy -W`, its default threads, \
             no health checks), on the same two cores as the load generator and the backends, so \
             the proxied path pays for two TCP hops and HAProxy's CPU out of the same budget; the \
             ratio is HAProxy's overhead on one small machine, not Berth's (Berth is never in the \
             data path) nor what HAProxy does on a host of its own. Requests per second count the \
             requests completed inside each window; latencies are per request, nearest-rank \
             percentiles. *bench* is the load generator and the three backends together; \
             *other* is what the rest of the shared VM used meanwhile (well above 0: the figures \
             were disturbed, or interrupt time the kernel counted to no process); *Interrupts* is \
             the machine's hard and soft interrupt time (loopback TCP is mostly softirq work, \
             partly counted to whichever process ran, so it overlaps the other columns).\n",
            self.heartbeat_text,
            self.base + 1,
            self.poll.as_millis(),
            SETTLE.as_millis(),
            self.haproxy_version,
            b = self.base,
        ));
        for note in &self.notes {
            s.push_str(&format!("- Note: {note}\n"));
        }
        s
    }
}
