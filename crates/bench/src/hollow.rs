//! Hollow agents, like Kubernetes' hollow nodes: many simulated container
//! instances in one process, each with its own identity (key, CSR,
//! certificate from `AgentService.RegisterInstance`) and its own mutual-TLS
//! agent session on the session transport (`berth_wire`, as the real agent
//! holds it), speaking the real protocol, with a runtime that starts every
//! task at once.
//!
//! All sessions share the bench's tokio runtime; each instance has its own
//! connection, since its client certificate is its identity.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use berth_client::backoff::Backoff;
use berth_proto::pb;
use berth_proto::pb::activation_service_client::ActivationServiceClient;
use berth_proto::pb::agent_message::Body as AgentBody;
use berth_proto::pb::agent_service_client::AgentServiceClient;
use berth_proto::pb::instance_service_client::InstanceServiceClient;
use berth_proto::pb::server_message::Body as ServerBody;
use berth_types::{ContainerState, ContainerStatus, DesiredStatus, Health, TaskReport, TaskStatus};
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::stats::fmt_rate;
use crate::tasks::bounded;

/// How long opening a connection or a session may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// One registration call, at most.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);
/// Reconnect back-off after a failed session: starts here, doubles, caps.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Shared connections the registrations go through.
const REGISTER_CHANNELS: usize = 4;

/// What one hollow instance is, once registered.
#[derive(Clone)]
pub struct HollowIdentity {
    pub index: usize,
    pub instance_id: String,
    cert_pem: String,
    key_pem: String,
}

/// Registers `count` instances with the activation, `concurrency` calls in
/// flight, through a few TLS connections (verified with the CA, no client
/// certificate) to `addr`. Each instance gets a fresh key and CSR.
pub async fn register(
    addr: &str,
    activation_id: &str,
    activation_secret: &str,
    count: usize,
    concurrency: usize,
) -> Result<Vec<HollowIdentity>> {
    let mut channels = Vec::new();
    for _ in 0..REGISTER_CHANNELS {
        channels.push(
            berth_e2e::channel_as(addr, None)
                .await
                .with_context(|| format!("connecting to {addr} to register instances"))?,
        );
    }
    let results: Vec<Result<HollowIdentity>> = futures::stream::iter(0..count)
        .map(|index| {
            let channel = channels[index % channels.len()].clone();
            async move {
                let hostname = format!("hollow-{index:05}");
                let (key_pem, csr_pem) = berth_pki::generate_csr(&hostname)
                    .map_err(|e| anyhow!("making a key and CSR: {e}"))?;
                let request = pb::RegisterInstanceRequest {
                    activation_id: activation_id.to_string(),
                    activation_secret: activation_secret.to_string(),
                    csr_pem,
                    hostname,
                    attributes: vec![pb::Attribute {
                        name: "hollow".into(),
                        value: "true".into(),
                    }],
                    previous_instance_id: String::new(),
                    cluster: String::new(),
                };
                let reply = tokio::time::timeout(
                    REGISTER_TIMEOUT,
                    AgentServiceClient::new(channel).register_instance(request),
                )
                .await
                .map_err(|_| anyhow!("RegisterInstance took over {REGISTER_TIMEOUT:?}"))?
                .map_err(|s| anyhow!("RegisterInstance: {:?}: {}", s.code(), s.message()))?
                .into_inner();
                Ok(HollowIdentity {
                    index,
                    instance_id: reply.instance_id,
                    cert_pem: reply.certificate_pem,
                    key_pem,
                })
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut identities = Vec::with_capacity(count);
    let mut failures = Vec::new();
    for r in results {
        match r {
            Ok(id) => identities.push(id),
            Err(e) => failures.push(e),
        }
    }
    if let Some(first) = failures.first() {
        bail!(
            "{} of {count} registrations failed; the first: {first:#}",
            failures.len()
        );
    }
    identities.sort_by_key(|i| i.index);
    Ok(identities)
}

/// How many registrations are in flight while a fleet registers.
pub const REGISTER_CONCURRENCY: usize = 32;

/// What each hollow instance offers.
pub struct HollowSize {
    pub cpu_units: u32,
    pub memory_mib: u32,
    /// Status reports are batched for this long before they are sent.
    pub flush: Duration,
}

/// A fleet up and recorded as connected, and how long that took.
pub struct Launched {
    pub fleet: Fleet,
    pub register: Duration,
    pub connect: Duration,
}

/// Creates an activation, registers `instances` hollow agents with it,
/// starts their sessions, and waits until the leader records every one as
/// connected.
pub async fn launch(
    leader_addr: &str,
    servers: Vec<String>,
    instances: usize,
    size: HollowSize,
    description: &str,
) -> Result<Launched> {
    // ---- the activation and the instances' registrations.
    let mut activations = ActivationServiceClient::new(berth_e2e::channel(leader_addr).await?);
    let max_registrations = u32::try_from(instances).context("too many instances")?;
    let created = bounded(
        "CreateActivation",
        activations.create_activation(pb::CreateActivationRequest {
            cluster: String::new(),
            expires_in_secs: 3600,
            max_registrations,
            attributes: vec![],
            description: description.into(),
        }),
    )
    .await?;
    let token = berth_pki::tokens::JoinToken::parse(&created.token)
        .map_err(|e| anyhow!("the join token CreateActivation returned: {e}"))?;
    println!("registering {instances} hollow instances ({REGISTER_CONCURRENCY} calls in flight)");
    let t = Instant::now();
    let identities = tokio::time::timeout(
        Duration::from_secs(60) + Duration::from_millis(50) * instances as u32,
        register(
            leader_addr,
            &token.activation_id,
            &token.secret,
            instances,
            REGISTER_CONCURRENCY,
        ),
    )
    .await
    .map_err(|_| anyhow!("registering {instances} instances took too long"))??;
    let register = t.elapsed();
    println!(
        "  registered in {:.1} s ({} /s)",
        register.as_secs_f64(),
        fmt_rate(instances as f64 / register.as_secs_f64())
    );

    // ---- the sessions.
    let t = Instant::now();
    let fleet = Fleet::start(
        identities,
        FleetConfig {
            servers,
            ca_pem: berth_e2e::test_pki().ca_pem.clone(),
            cpu_units: size.cpu_units,
            memory_mib: size.memory_mib,
            flush: size.flush,
        },
    );
    let stats = fleet.stats.clone();
    let connect_limit = Duration::from_secs(60) + Duration::from_millis(30) * instances as u32;
    let mut last_print = Instant::now();
    loop {
        let ready = stats.ready.load(Ordering::Relaxed);
        if ready >= fleet.len() {
            break;
        }
        if t.elapsed() > connect_limit {
            bail!(
                "only {ready} of {instances} hollow sessions were up after {:.0} s; {} session failures, the first: {}",
                connect_limit.as_secs_f64(),
                FleetStats::load(&stats.session_failures),
                stats.first_failure().unwrap_or_else(|| "none".into())
            );
        }
        if last_print.elapsed() > Duration::from_secs(5) {
            println!("  {ready} of {instances} sessions up");
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Up on the bench's side; now wait for the leader to have recorded it.
    loop {
        let (listed, connected) = connected_instances(leader_addr).await?;
        if connected >= instances {
            break;
        }
        if t.elapsed() > connect_limit {
            bail!(
                "{connected} of {listed} instances are recorded as connected after {:.0} s",
                connect_limit.as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let connect = t.elapsed();
    println!(
        "  {instances} sessions up and recorded in {:.1} s ({} redirects followed)",
        connect.as_secs_f64(),
        FleetStats::load(&stats.redirects)
    );
    Ok(Launched {
        fleet,
        register,
        connect,
    })
}

/// (instances listed, instances recorded as connected).
pub async fn connected_instances(addr: &str) -> Result<(usize, usize)> {
    let mut client = InstanceServiceClient::new(berth_e2e::channel(addr).await?)
        .max_decoding_message_size(512 * 1024 * 1024);
    let reply = bounded(
        "ListInstances",
        client.list_instances(pb::ListInstancesRequest {
            cluster: String::new(),
        }),
    )
    .await?;
    let connected = reply.instances.iter().filter(|i| i.agent_connected).count();
    Ok((reply.instances.len(), connected))
}

pub struct FleetConfig {
    /// Every server's address; instance i first tries server i mod n and
    /// follows redirects to the leader from there.
    pub servers: Vec<String>,
    pub ca_pem: String,
    /// What each hollow instance offers: CPU units and MiB.
    pub cpu_units: u32,
    pub memory_mib: u32,
    /// Status reports are batched for this long before they are sent.
    pub flush: Duration,
}

/// Counters over the whole fleet, updated by every session.
pub struct FleetStats {
    epoch: Instant,
    /// Sessions that received their complete assignment set and are open.
    pub ready: AtomicUsize,
    pub hellos: AtomicU64,
    pub redirects: AtomicU64,
    pub session_failures: AtomicU64,
    pub heartbeats: AtomicU64,
    pub assignment_sets: AtomicU64,
    /// Assignments received, in all sets.
    pub assignments: AtomicU64,
    /// Distinct tasks reported RUNNING / STOPPED (queued for the next
    /// status batch; a report lost with its session is repeated in the next
    /// hello).
    pub running_reported: AtomicU64,
    pub stopped_reported: AtomicU64,
    pub status_batches: AtomicU64,
    /// Nanoseconds after `epoch`, 0 for never.
    last_new_assignment: AtomicU64,
    last_running_sent: AtomicU64,
    first_failure: Mutex<Option<String>>,
    /// Every RUNNING report sent, once [`FleetStats::record_running`] was
    /// called (off by default: a bulk run would only pay for it).
    running_log: Mutex<Option<Vec<RunningSent>>>,
}

/// One task's RUNNING report, as it left a hollow agent.
#[derive(Debug, Clone)]
pub struct RunningSent {
    pub task_id: String,
    /// When the status batch holding it was queued on the session stream.
    pub at: Instant,
    /// The host ports its assignment published (bridge and host modes).
    pub host_ports: Vec<u16>,
}

impl FleetStats {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            ready: AtomicUsize::new(0),
            hellos: AtomicU64::new(0),
            redirects: AtomicU64::new(0),
            session_failures: AtomicU64::new(0),
            heartbeats: AtomicU64::new(0),
            assignment_sets: AtomicU64::new(0),
            assignments: AtomicU64::new(0),
            running_reported: AtomicU64::new(0),
            stopped_reported: AtomicU64::new(0),
            status_batches: AtomicU64::new(0),
            last_new_assignment: AtomicU64::new(0),
            last_running_sent: AtomicU64::new(0),
            first_failure: Mutex::new(None),
            running_log: Mutex::new(None),
        }
    }

    fn mark(&self, slot: &AtomicU64) {
        let nanos = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        slot.fetch_max(nanos.max(1), Ordering::Relaxed);
    }

    fn at(&self, slot: &AtomicU64) -> Option<Instant> {
        match slot.load(Ordering::Relaxed) {
            0 => None,
            n => Some(self.epoch + Duration::from_nanos(n)),
        }
    }

    /// When the last assignment of a task new to its instance arrived.
    pub fn last_new_assignment(&self) -> Option<Instant> {
        self.at(&self.last_new_assignment)
    }

    /// When the last RUNNING report left the bench.
    pub fn last_running_sent(&self) -> Option<Instant> {
        self.at(&self.last_running_sent)
    }

    pub fn first_failure(&self) -> Option<String> {
        self.first_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn failed(&self, why: String) {
        self.session_failures.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_failure.lock().unwrap_or_else(|p| p.into_inner());
        first.get_or_insert(why);
    }

    /// From now on, every RUNNING report sent is kept (see
    /// [`FleetStats::running_sent`]).
    pub fn record_running(&self) {
        let mut log = self.running_log.lock().unwrap_or_else(|p| p.into_inner());
        log.get_or_insert_with(Vec::new);
    }

    fn recording(&self) -> bool {
        self.running_log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// The RUNNING reports sent since [`FleetStats::record_running`],
    /// oldest first, from the `skip`th on.
    pub fn running_sent(&self, skip: usize) -> Vec<RunningSent> {
        self.running_log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|log| log.iter().skip(skip).cloned().collect())
            .unwrap_or_default()
    }

    fn log_running(&self, sent: Vec<RunningSent>) {
        if let Some(log) = self
            .running_log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            log.extend(sent);
        }
    }

    pub fn load(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// The running hollow instances; dropping it ends every session.
pub struct Fleet {
    pub stats: Arc<FleetStats>,
    handles: Vec<JoinHandle<()>>,
    /// The instance id of each session, in the order of `handles`.
    ids: Vec<String>,
}

impl Fleet {
    pub fn start(identities: Vec<HollowIdentity>, config: FleetConfig) -> Self {
        let stats = Arc::new(FleetStats::new());
        let config = Arc::new(config);
        let ids = identities.iter().map(|i| i.instance_id.clone()).collect();
        let handles = identities
            .into_iter()
            .map(|id| tokio::spawn(run_instance(id, config.clone(), stats.clone())))
            .collect();
        Self {
            stats,
            handles,
            ids,
        }
    }

    /// Ends the sessions of the first `count` instances at once, as if
    /// their hosts died; returns their instance ids.
    pub fn kill_first(&mut self, count: usize) -> Vec<String> {
        let count = count.min(self.handles.len());
        for handle in &self.handles[..count] {
            handle.abort();
        }
        self.ids[..count].to_vec()
    }

    pub fn len(&self) -> usize {
        self.handles.len()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for handle in &self.handles {
            handle.abort();
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Reported {
    Nothing,
    Running,
    Stopped,
}

struct Known {
    reported: Reported,
    containers: Arc<[String]>,
}

/// What a hollow instance remembers across sessions, as a real agent does.
struct InstanceState {
    tasks: HashMap<String, Known>,
    /// Container names per `family:revision`.
    definitions: HashMap<String, Arc<[String]>>,
    last_sequence: u64,
}

impl InstanceState {
    fn containers_of(&mut self, a: &pb::Assignment) -> Arc<[String]> {
        let Some(td) = &a.task_definition else {
            return Arc::from(Vec::new());
        };
        let key = format!("{}:{}", td.family, td.revision);
        self.definitions
            .entry(key)
            .or_insert_with(|| {
                td.spec
                    .as_ref()
                    .map(|s| {
                        s.container_definitions
                            .iter()
                            .map(|c| c.name.clone())
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .clone()
    }

    /// Applies an assignment set and queues the reports it calls for (the
    /// simulated runtime starts and stops everything at once). Returns how
    /// many tasks were new to this instance.
    fn apply(&mut self, set: &pb::AssignmentSet, pending: &mut Pending, record: bool) -> usize {
        if set.complete {
            let wanted: HashSet<&str> =
                set.assignments.iter().map(|a| a.task_id.as_str()).collect();
            self.tasks.retain(|id, _| wanted.contains(id.as_str()));
        }
        let mut new = 0;
        for a in &set.assignments {
            if TaskStatus::parse(&a.last_status) == Some(TaskStatus::Stopped) {
                // The record is final: forget the task.
                self.tasks.remove(&a.task_id);
                continue;
            }
            if !self.tasks.contains_key(&a.task_id) {
                let containers = self.containers_of(a);
                self.tasks.insert(
                    a.task_id.clone(),
                    Known {
                        reported: Reported::Nothing,
                        containers,
                    },
                );
                new += 1;
            }
            let Some(known) = self.tasks.get_mut(&a.task_id) else {
                continue;
            };
            match DesiredStatus::parse(&a.desired_status) {
                Some(DesiredStatus::Running) if known.reported == Reported::Nothing => {
                    known.reported = Reported::Running;
                    let running = report(&a.task_id, TaskStatus::Running, &known.containers);
                    pending.push(running, true);
                    if record {
                        let ports = a
                            .network_bindings
                            .iter()
                            .filter_map(|b| u16::try_from(b.host_port).ok())
                            .collect();
                        pending.running_tasks.push((a.task_id.clone(), ports));
                    }
                }
                Some(DesiredStatus::Stopped) if known.reported != Reported::Stopped => {
                    known.reported = Reported::Stopped;
                    let stopped = report(&a.task_id, TaskStatus::Stopped, &known.containers);
                    pending.push(stopped, false);
                }
                _ => {}
            }
        }
        if set.sequence > self.last_sequence {
            self.last_sequence = set.sequence;
        }
        new
    }

    /// Every task it knows, for the hello of a new session.
    fn known_reports(&self) -> Vec<pb::TaskReport> {
        self.tasks
            .iter()
            .filter_map(|(id, k)| match k.reported {
                Reported::Nothing => None,
                Reported::Running => Some(report(id, TaskStatus::Running, &k.containers)),
                Reported::Stopped => Some(report(id, TaskStatus::Stopped, &k.containers)),
            })
            .collect()
    }
}

#[derive(Default)]
struct Pending {
    reports: Vec<pb::TaskReport>,
    running: u64,
    stopped: u64,
    /// RUNNING reports' tasks and host ports, when the fleet records them.
    running_tasks: Vec<(String, Vec<u16>)>,
}

impl Pending {
    fn push(&mut self, report: pb::TaskReport, running: bool) {
        self.reports.push(report);
        if running {
            self.running += 1;
        } else {
            self.stopped += 1;
        }
    }
}

/// Every container in the task's status: the simulated runtime starts and
/// stops them all at once, and they exit cleanly.
fn report(task_id: &str, status: TaskStatus, containers: &[String]) -> pb::TaskReport {
    let stopped = status == TaskStatus::Stopped;
    let report = TaskReport {
        task_id: task_id.to_string(),
        last_status: status,
        containers: containers
            .iter()
            .map(|name| ContainerState {
                name: name.clone(),
                status: if stopped {
                    ContainerStatus::Stopped
                } else {
                    ContainerStatus::Running
                },
                exit_code: stopped.then_some(0),
                reason: String::new(),
                health: Health::Unknown,
                restart_count: 0,
            })
            .collect(),
        reason: String::new(),
        stop_code: None,
        ip: None,
    };
    (&report).into()
}

enum Ended {
    Redirect(String),
    Failed(String),
}

/// A mutual-TLS connection with the instance's certificate, on the
/// session transport as the real agent opens it.
async fn connect(addr: &str, ca_pem: &str, id: &HollowIdentity) -> Result<berth_wire::Connection> {
    let tls = berth_wire::client_config(ca_pem, Some((&id.cert_pem, &id.key_pem)))?;
    let host = addr
        .rsplit_once(':')
        .map_or(addr, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let connection =
        tokio::time::timeout(OPEN_TIMEOUT, berth_wire::connect(addr, host, tls)).await??;
    anyhow::ensure!(
        connection.speaks_sessions(),
        "{addr} does not offer the session transport (an older berthd?)"
    );
    Ok(connection)
}

fn jittered(rng: &mut StdRng, base: Duration, low: f64, high: f64) -> Duration {
    base.mul_f64(rng.gen_range(low..high))
}

async fn run_instance(id: HollowIdentity, config: Arc<FleetConfig>, stats: Arc<FleetStats>) {
    let mut rng = StdRng::seed_from_u64(id.index as u64);
    let servers = config.servers.len().max(1);
    let mut next_server = id.index % servers;
    let mut addr = config.servers[next_server].clone();
    let mut state = InstanceState {
        tasks: HashMap::new(),
        definitions: HashMap::new(),
        last_sequence: 0,
    };
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX, 0.5..=1.5);
    loop {
        let ended = match connect(&addr, &config.ca_pem, &id).await {
            Ok(connection) => {
                session(
                    connection,
                    &id,
                    &config,
                    &stats,
                    &mut state,
                    &mut rng,
                    &mut backoff,
                )
                .await
            }
            Err(e) => Ended::Failed(format!("connecting to {addr}: {e:#}")),
        };
        let pause = match ended {
            Ended::Redirect(to) if !to.is_empty() => {
                stats.redirects.fetch_add(1, Ordering::Relaxed);
                addr = to;
                continue;
            }
            Ended::Redirect(_) => {
                // No leader known yet: ask again shortly.
                stats.redirects.fetch_add(1, Ordering::Relaxed);
                jittered(&mut rng, Duration::from_millis(200), 1.0, 2.0)
            }
            Ended::Failed(why) => {
                stats.failed(format!("{}: {why}", id.instance_id));
                backoff.next(&mut rng)
            }
        };
        tokio::time::sleep(pause).await;
        next_server = (next_server + 1) % servers;
        addr = config.servers[next_server].clone();
    }
}

/// Marks the fleet's ready count while a session holds its complete set.
struct ReadyMark<'a> {
    stats: &'a FleetStats,
    ready: bool,
}

impl ReadyMark<'_> {
    fn set(&mut self) {
        if !self.ready {
            self.ready = true;
            self.stats.ready.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for ReadyMark<'_> {
    fn drop(&mut self) {
        if self.ready {
            self.stats.ready.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

fn message(body: AgentBody) -> pb::AgentMessage {
    pb::AgentMessage { body: Some(body) }
}

/// One session, from hello to its end.
async fn session(
    connection: berth_wire::Connection,
    id: &HollowIdentity,
    config: &FleetConfig,
    stats: &FleetStats,
    state: &mut InstanceState,
    rng: &mut StdRng,
    backoff: &mut Backoff,
) -> Ended {
    // Unbounded: the server may be blocked sending to us while we send to
    // it; a bounded queue here could deadlock the two.
    let (tx, rx) = mpsc::unbounded_channel::<pb::AgentMessage>();
    let hello = pb::AgentHello {
        host_ports: Vec::new(),
        instance_id: id.instance_id.clone(),
        agent_version: concat!("berth-bench-hollow/", env!("CARGO_PKG_VERSION")).into(),
        cpu_total: config.cpu_units,
        memory_total_mib: config.memory_mib,
        cpu_available: config.cpu_units,
        memory_available_mib: config.memory_mib,
        attributes: vec![
            pb::Attribute {
                name: "os".into(),
                value: "linux".into(),
            },
            pb::Attribute {
                name: "arch".into(),
                value: "x86_64".into(),
            },
            pb::Attribute {
                name: "hostname".into(),
                value: format!("hollow-{:05}", id.index),
            },
        ],
        running: state.known_reports(),
        last_sequence: state.last_sequence,
    };
    let _ = tx.send(message(AgentBody::Hello(hello)));
    stats.hellos.fetch_add(1, Ordering::Relaxed);
    let mut inbound = connection.start(UnboundedReceiverStream::new(rx), 64 * 1024 * 1024);
    let mut mark = ReadyMark {
        stats,
        ready: false,
    };
    let far = || Instant::now() + Duration::from_secs(3600);
    let mut period: Option<Duration> = None;
    let mut next_heartbeat = far();
    let mut pending = Pending::default();
    let mut flush_at: Option<Instant> = None;
    // As the real agent: a set's acknowledgement rides on the status batch.
    let mut unacked: Option<u64> = None;
    loop {
        tokio::select! {
            received = inbound.message() => {
                let body = match received {
                    Ok(Some(pb::ServerMessage { body: Some(body) })) => body,
                    Ok(Some(_)) => continue,
                    Ok(None) => return Ended::Failed("the server ended the session".into()),
                    Err(status) => {
                        return Ended::Failed(format!(
                            "session: {:?}: {}",
                            status.code(),
                            status.message()
                        ))
                    }
                };
                match body {
                    ServerBody::Settings(settings) => {
                        let p = Duration::from_millis(u64::from(settings.heartbeat_period_ms.max(100)));
                        period = Some(p);
                        // The first beat anywhere in the period, so that the
                        // fleet's beats spread out.
                        next_heartbeat = Instant::now() + jittered(rng, p, 0.0, 1.0);
                    }
                    ServerBody::Assignments(set) => {
                        stats.assignment_sets.fetch_add(1, Ordering::Relaxed);
                        stats
                            .assignments
                            .fetch_add(set.assignments.len() as u64, Ordering::Relaxed);
                        let (running_before, stopped_before) = (pending.running, pending.stopped);
                        let new = state.apply(&set, &mut pending, stats.recording());
                        stats
                            .running_reported
                            .fetch_add(pending.running - running_before, Ordering::Relaxed);
                        stats
                            .stopped_reported
                            .fetch_add(pending.stopped - stopped_before, Ordering::Relaxed);
                        if new > 0 {
                            stats.mark(&stats.last_new_assignment);
                        }
                        unacked = Some(set.sequence);
                        if set.complete {
                            mark.set();
                            backoff.reset();
                        }
                        flush_at.get_or_insert_with(|| Instant::now() + config.flush);
                    }
                    ServerBody::Redirect(r) => return Ended::Redirect(r.leader_address),
                    ServerBody::LogRequest(request) => {
                        let _ = tx.send(message(AgentBody::Log(pb::LogData {
                            request_id: request.request_id,
                            stream: String::new(),
                            data: Vec::new(),
                            end: true,
                            error: "a hollow agent has no logs".into(),
                        })));
                    }
                    ServerBody::LogCancel(_) => {}
                    // Reported by `Inbound::message` as an error already.
                    ServerBody::End(end) => {
                        return Ended::Failed(format!("session: {}: {}", end.code, end.message))
                    }
                }
            }
            _ = tokio::time::sleep_until(next_heartbeat), if period.is_some() => {
                let sent_at_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
                let _ = tx.send(message(AgentBody::Heartbeat(pb::Heartbeat { sent_at_ms })));
                stats.heartbeats.fetch_add(1, Ordering::Relaxed);
                let p = period.unwrap_or(Duration::from_secs(5));
                next_heartbeat = Instant::now() + jittered(rng, p, 0.9, 1.1);
            }
            _ = tokio::time::sleep_until(flush_at.unwrap_or_else(far)), if flush_at.is_some() => {
                flush_at = None;
                let batch = std::mem::take(&mut pending);
                if batch.reports.is_empty() {
                    if let Some(sequence) = unacked.take() {
                        let _ = tx.send(message(AgentBody::Ack(pb::Ack { sequence })));
                    }
                    continue;
                }
                let _ = tx.send(message(AgentBody::Status(pb::StatusBatch {
                    reports: batch.reports,
                    acked_sequence: unacked.take().unwrap_or(0),
                })));
                if !batch.running_tasks.is_empty() {
                    let at = Instant::now();
                    stats.log_running(
                        batch
                            .running_tasks
                            .into_iter()
                            .map(|(task_id, host_ports)| RunningSent { task_id, at, host_ports })
                            .collect(),
                    );
                }
                stats.status_batches.fetch_add(1, Ordering::Relaxed);
                if batch.running > 0 {
                    stats.mark(&stats.last_running_sent);
                }
            }
        }
    }
}
