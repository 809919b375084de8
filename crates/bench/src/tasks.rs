//! `berth-bench tasks`: a 3-server cluster with N hollow agents (simulated
//! instances in this process, see `hollow`), then RunTask of many small
//! tasks: placement throughput until every task is RUNNING, time to RUNNING
//! of single-task probes under that load, and berthd's CPU and memory.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use berth_e2e::{AuthChannel, TestCluster};
use berth_proto::pb;
use berth_proto::pb::task_service_client::TaskServiceClient;
use berth_types::TaskStatus;
use tokio::time::Instant;

use crate::cluster;
use crate::hollow::{self, FleetStats, HollowSize};
use crate::machine::{self, CpuClock, CpuWindow, Machine};
use crate::stats::{self, fmt_ms, fmt_rate};
use crate::TasksArgs;

const SERVERS: u64 = 3;

// Targets from the issue ("Scale of the control plane").
/// Placement throughput required at these instance counts.
const TARGET_TASKS_PER_SEC: [(usize, f64); 2] = [(2000, 20_000.0), (10_000, 15_000.0)];
/// The pace the probes are spread over when no target names the point.
const PROBE_PACE_TASKS_PER_SEC: f64 = 15_000.0;
const TARGET_IDLE_LEADER_CORES: f64 = 0.10;
const TARGET_IDLE_INSTANCES: usize = 10_000;
/// Leader memory per connected instance, over the leader's baseline.
const TARGET_BYTES_PER_INSTANCE: f64 = 30.0 * 1024.0;
/// Leader RSS with `TARGET_RSS_INSTANCES` and `TARGET_RSS_TASKS` running.
const TARGET_RSS_BYTES: u64 = 500 << 20;
const TARGET_RSS_INSTANCES: usize = 10_000;
const TARGET_RSS_TASKS: usize = 100_000;
/// The leader's memory with no instance is read this long after the
/// cluster is up (its own startup allocations settled).
const BASELINE_SETTLE: Duration = Duration::from_secs(3);
/// Above this, CPU used by other processes is called out in the notes.
const OTHER_BUSY_CORES: f64 = 0.25;

/// What each hollow instance offers: 16 cores, 64 GiB.
const HOLLOW_CPU_UNITS: u32 = 16 * 1024;
const HOLLOW_MEMORY_MIB: u32 = 64 * 1024;
/// What each task reserves.
const TASK_CPU_UNITS: u32 = 16;
const TASK_MEMORY_MIB: u32 = 16;
const BULK_FAMILY: &str = "hollow-bulk";
const PROBE_FAMILY: &str = "hollow-probe";
/// RunTask's own limit (`MAX_TASKS_PER_RUN`).
const MAX_PER_CALL: usize = 1000;

/// Hollow agents batch their status reports this long.
const REPORT_FLUSH: Duration = Duration::from_millis(20);
/// Concurrent RegisterInstance calls.
/// Between all sessions being up and the idle window.
const SETTLE: Duration = Duration::from_secs(3);
/// The bulk run fails when nothing moves (no task accepted, assigned or
/// reported RUNNING) for this long.
const STALL: Duration = Duration::from_secs(30);
/// Probes poll every 1/20 of the time they have waited so far, within
/// these bounds: at most 5% (or 20 ms) of slack, without flooding the
/// leader with reads while dozens of probes wait in a long queue.
const PROBE_POLL_MIN: Duration = Duration::from_millis(20);
const PROBE_POLL_MAX: Duration = Duration::from_millis(250);
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the bench asks whether every bulk task is RUNNING, once the
/// hollow agents have reported them all (a few reads of short lists).
const CONFIRM_POLL: Duration = Duration::from_millis(20);
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Lists of 50,000 tasks are larger than tonic's 4 MiB default.
const MAX_MESSAGE: usize = 512 * 1024 * 1024;

type Tasks = TaskServiceClient<AuthChannel>;

/// berthd's default log filter plus the scheduler's per-pass debug line
/// ("placements applied placed=N").
const SERVER_LOG: &str = "info,openraft=warn,berth_server::leader=debug";

/// CPU (cores) and memory (bytes) of one process.
pub(crate) struct Proc {
    pub(crate) label: String,
    pid: Option<u32>,
    pub(crate) cores: Option<f64>,
    rss: Option<u64>,
    peak: Option<u64>,
}

impl Proc {
    pub(crate) fn rss_mib(&self) -> Option<f64> {
        self.rss.map(|b| b as f64 / (1024.0 * 1024.0))
    }
}

struct Bulk {
    calls: usize,
    /// Offsets from the first RunTask.
    accepted: Option<Duration>,
    last_assignment: Option<Duration>,
    last_running_sent: Option<Duration>,
    confirmed: Duration,
    /// Proofs of RUNNING asked of the follower, and how long the last one
    /// (the one that found every task RUNNING) took: the proof's own share
    /// of `confirmed`.
    confirm_polls: u32,
    proving_poll: Duration,
    cpu: Vec<Proc>,
    retries: u64,
    /// Raft entries the leader's log grew by during the run.
    entries: Option<u64>,
    /// Status batches the hollow agents sent during the run.
    status_batches: u64,
}

impl Bulk {
    fn per_sec(&self, tasks: usize) -> f64 {
        tasks as f64 / self.confirmed.as_secs_f64()
    }
}

pub struct Report {
    machine: Machine,
    /// The servers' memory once the cluster is up, before any instance.
    baseline: Vec<Proc>,
    /// Terms the cluster went through from the first RunTask to all
    /// RUNNING (each is an election); `None` when a status was not had.
    bulk_elections: Option<u64>,
    instances: usize,
    tasks: usize,
    probes_wanted: usize,
    concurrency: usize,
    strategies: Vec<String>,
    heartbeat: String,
    idle_secs: u64,
    leader: u64,
    leader_after: Option<u64>,
    register: Duration,
    connect: Duration,
    idle: Vec<Proc>,
    idle_heartbeats_per_sec: f64,
    bulk: Bulk,
    probe_interval: Duration,
    probes: Vec<Duration>,
    probe_failures: Vec<String>,
    loaded: Vec<Proc>,
    loaded_idle: Vec<Proc>,
    fleet: FleetSummary,
    bench_rss: Option<u64>,
    bench_threads: Option<u64>,
    passes: Passes,
    bulk_raft_timeouts: usize,
    notes: Vec<String>,
    elapsed: Duration,
}

struct FleetSummary {
    hellos: u64,
    redirects: u64,
    failures: u64,
    first_failure: Option<String>,
    sets: u64,
    assignments: u64,
    running_reported: u64,
    status_batches: u64,
    heartbeats: u64,
}

fn summary(stats: &FleetStats) -> FleetSummary {
    let l = FleetStats::load;
    FleetSummary {
        hellos: l(&stats.hellos),
        redirects: l(&stats.redirects),
        failures: l(&stats.session_failures),
        first_failure: stats.first_failure(),
        sets: l(&stats.assignment_sets),
        assignments: l(&stats.assignments),
        running_reported: l(&stats.running_reported),
        status_batches: l(&stats.status_batches),
        heartbeats: l(&stats.heartbeats),
    }
}

async fn task_client(addr: &str) -> Result<Tasks> {
    Ok(TaskServiceClient::new(berth_e2e::channel(addr).await?)
        .max_decoding_message_size(MAX_MESSAGE))
}

fn status_error(what: &str, s: tonic::Status) -> anyhow::Error {
    anyhow!("{what}: {:?}: {}", s.code(), s.message())
}

/// Bounds a call; a timeout is an error like any other.
pub(crate) async fn bounded<T>(
    what: &str,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(status_error(what, s)),
        Err(_) => Err(anyhow!("{what}: no answer within {CALL_TIMEOUT:?}")),
    }
}

fn spec(family: &str) -> pb::TaskDefinitionSpec {
    let mut container = berth_types::ContainerDefinition::new("app", "localhost:5000/bench/app:1");
    container.cpu = TASK_CPU_UNITS;
    container.memory = Some(TASK_MEMORY_MIB);
    berth_types::TaskDefinitionSpec {
        family: family.into(),
        container_definitions: vec![container],
        // Task-level sizes start at 128 units; the container's own
        // reservation makes the task's.
        cpu: None,
        memory: None,
        network_mode: Default::default(),
        volumes: vec![],
        tags: vec![],
    }
    .into()
}

/// Memory of every watched process now, CPU from `cpu` if given.
pub(crate) fn procs(
    watched: &[(String, u32)],
    cpu: Option<Vec<(String, Option<f64>)>>,
) -> Vec<Proc> {
    let cpu = cpu.unwrap_or_default();
    let mut out: Vec<Proc> = watched
        .iter()
        .map(|(label, pid)| {
            let mem = machine::rss(*pid);
            Proc {
                label: label.clone(),
                pid: Some(*pid),
                cores: cpu.iter().find(|(l, _)| l == label).and_then(|(_, c)| *c),
                rss: mem.map(|m| m.0),
                peak: mem.map(|m| m.1),
            }
        })
        .collect();
    for extra in ["bench", "other"] {
        if let Some((_, cores)) = cpu.iter().find(|(l, _)| l == extra) {
            let mem = (extra == "bench")
                .then(|| machine::rss(std::process::id()))
                .flatten();
            out.push(Proc {
                label: extra.to_string(),
                pid: None,
                cores: *cores,
                rss: mem.map(|m| m.0),
                peak: mem.map(|m| m.1),
            });
        }
    }
    out
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("-".into(), |b| {
        format!("{:.0}", b as f64 / (1024.0 * 1024.0))
    })
}

fn pct(cores: Option<f64>) -> String {
    cores.map_or("-".into(), |c| format!("{:.1}%", c * 100.0))
}

pub(crate) fn print_procs(title: &str, procs: &[Proc]) {
    println!("  {title}:");
    for p in procs {
        println!(
            "    {:<20} CPU {:>7} of one core   RSS {:>6} MiB (peak {} MiB)",
            p.label,
            pct(p.cores),
            mib(p.rss),
            mib(p.peak)
        );
    }
}

/// The tasks one server lists for `family` in `status` (either empty: any).
async fn list_tasks(client: &mut Tasks, family: &str, status: &str) -> Result<Vec<pb::Task>> {
    let reply = bounded(
        "ListTasks",
        client.list_tasks(pb::ListTasksRequest {
            cluster: String::new(),
            instance_id: String::new(),
            family: family.into(),
            status: status.into(),
        }),
    )
    .await?;
    Ok(reply.tasks)
}

/// Every status but RUNNING, in the order a task goes through them.
const NOT_RUNNING_IN_ORDER: [TaskStatus; 5] = [
    TaskStatus::Provisioning,
    TaskStatus::Pending,
    TaskStatus::Deactivating,
    TaskStatus::Stopping,
    TaskStatus::Stopped,
];

/// Whether every task of `family` is RUNNING, asked of one server without
/// listing them: one `ListTasks` per other status, in the order a task goes
/// through them, each a linearizable read. A task's status only moves
/// forward, so if none of these lists holds a task, every task was RUNNING
/// when the last pre-RUNNING list was read: one that was behind then was
/// in some earlier status at that status's (earlier) list, and one that
/// was ahead is still ahead of RUNNING, so a later list in the same order
/// catches it (STOPPED is final). Near the end the lists are empty, so the
/// proof costs a few small reads however many tasks there are, where
/// listing every RUNNING task took 0.7 s at 100,000. It proves nothing
/// about tasks that do not exist yet: call it once every RunTask is
/// answered.
async fn only_running(client: &mut Tasks, family: &str) -> Result<bool> {
    for status in NOT_RUNNING_IN_ORDER {
        if !list_tasks(client, family, status.as_str())
            .await?
            .is_empty()
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Counts of tasks by last status, and the first placement reason of a
/// PROVISIONING task, for an error message.
async fn task_census(client: &mut Tasks, family: &str) -> String {
    match list_tasks(client, family, "").await {
        Ok(tasks) => {
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            let mut reason = None;
            for t in &tasks {
                *counts.entry(t.last_status.clone()).or_default() += 1;
                if reason.is_none() && !t.placement_reason.is_empty() {
                    reason = Some(t.placement_reason.clone());
                }
            }
            format!(
                "tasks of {family} by status: {counts:?}{}",
                reason
                    .map(|r| format!("; a PROVISIONING task waits because: {r}"))
                    .unwrap_or_default()
            )
        }
        Err(e) => format!("could not list the tasks: {e:#}"),
    }
}

/// Where each server's log ended at some point, to look only at what
/// came after.
fn log_marks(cluster: &TestCluster) -> BTreeMap<u64, usize> {
    cluster
        .servers
        .iter()
        .map(|(id, s)| (*id, s.log().len()))
        .collect()
}

/// What the servers logged at WARN or ERROR after `marks`.
struct LogProblems {
    lines: usize,
    /// Of which: Raft RPCs (AppendEntries, heartbeats) that timed out.
    raft_timeouts: usize,
    samples: Vec<String>,
}

fn log_problems(cluster: &TestCluster, marks: &BTreeMap<u64, usize>) -> LogProblems {
    let mut problems = LogProblems {
        lines: 0,
        raft_timeouts: 0,
        samples: Vec::new(),
    };
    for (id, server) in &cluster.servers {
        let log = server.log();
        let from = marks.get(id).copied().unwrap_or(0).min(log.len());
        let tail = log.get(from..).unwrap_or("");
        for line in tail.lines() {
            let line = strip_ansi(line);
            if !(line.contains(" WARN ") || line.contains(" ERROR ")) {
                continue;
            }
            problems.lines += 1;
            if is_raft_timeout(&line) {
                problems.raft_timeouts += 1;
            }
            if problems.samples.len() < 3 {
                let short: String = line.chars().take(240).collect();
                problems.samples.push(format!("server {id}: {short}"));
            }
        }
    }
    problems
}

/// Whether a log line reports one Raft RPC that timed out: openraft's own
/// deadline (`timeout after 100ms when AppendEntries`) or the transport's
/// (tonic's `Timeout expired`). openraft logs one failed replication call
/// three times (`RPCError err=...`, `error replication to target=...`,
/// `update progress error ...`) and a failed heartbeat twice (`heartbeat
/// error: ...`, `update progress error request_id=HeartBeat ...`): only the
/// first line of each counts, so the figure is calls, not lines.
fn is_raft_timeout(line: &str) -> bool {
    (line.contains("timeout after") || line.contains("Timeout expired"))
        && !line.contains("error replication to target")
        && !line.contains("update progress error")
}

/// The scheduler's commits during the bulk run, from the leader's log.
struct Passes {
    count: usize,
    placed: u64,
    largest: u64,
    /// Between consecutive commits.
    intervals: Vec<Duration>,
}

/// Seconds since midnight of a log line's leading RFC 3339 timestamp.
fn log_time(line: &str) -> Option<f64> {
    let time = line.get(11..)?.split(['Z', ' ']).next()?;
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

fn scheduler_passes(log: &str) -> Passes {
    let mut passes = Passes {
        count: 0,
        placed: 0,
        largest: 0,
        intervals: Vec::new(),
    };
    let mut last: Option<f64> = None;
    for line in log.lines() {
        let line = strip_ansi(line);
        if !line.contains("placements applied") {
            continue;
        }
        let placed: u64 = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("placed="))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if placed == 0 {
            continue;
        }
        passes.count += 1;
        passes.placed += placed;
        passes.largest = passes.largest.max(placed);
        if let Some(at) = log_time(&line) {
            if let Some(before) = last {
                if at >= before {
                    passes.intervals.push(Duration::from_secs_f64(at - before));
                }
            }
            last = Some(at);
        }
    }
    passes.intervals.sort();
    passes
}

/// `line` without terminal colour codes (berthd colours its log even into
/// a file).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ params final-byte
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The highest term any of `addrs` reports, by its own account.
async fn cluster_term(addrs: &[String]) -> Option<u64> {
    let mut term = None;
    for addr in addrs {
        if let Ok(status) = berth_e2e::status(addr).await {
            let seen = status.members.iter().map(|m| m.term).max().unwrap_or(0);
            term = Some(term.unwrap_or(0).max(status.term).max(seen));
        }
    }
    term
}

/// One point of the curve: `instances` hollow agents on a fresh cluster,
/// then `total` bulk tasks.
pub async fn run(args: &TasksArgs, instances: usize, total: usize) -> Result<Report> {
    let started = Instant::now();
    let capacity = instances * (HOLLOW_CPU_UNITS / TASK_CPU_UNITS) as usize;
    if total + args.probes > capacity {
        bail!(
            "{} tasks do not fit on {instances} hollow instances ({capacity} at most)",
            total + args.probes
        );
    }
    let berthd = cluster::berthd()?;
    println!("berthd: {}", berthd.display());
    let machine = machine::describe();
    println!(
        "machine: {} x {}, {}, {}; data dirs in {}",
        machine.nproc, machine.cpu_model, machine.memory, machine.kernel, machine.data_fs
    );
    let clock = CpuClock::new();

    println!(
        "starting {SERVERS} servers (berthd default Raft timings, --agent-heartbeat {})",
        args.heartbeat
    );
    let mut cluster = cluster::start(
        SERVERS,
        &[],
        &[
            "--agent-heartbeat",
            args.heartbeat.as_str(),
            // The scheduler's passes, for the timeline below.
            "--log",
            SERVER_LOG,
        ],
    )
    .await?;
    let mut leader = cluster.wait_for_leader(Duration::from_secs(15)).await?;
    let start_marks = log_marks(&cluster);
    let mut leader_addr = cluster.addr(leader);
    let servers: Vec<String> = cluster.servers.values().map(|s| s.addr.clone()).collect();
    let mut watched = cluster::watched(&cluster, leader);
    println!("leader: server {leader} at {leader_addr}");
    tokio::time::sleep(BASELINE_SETTLE).await;
    let mut baseline = procs(&watched, None);
    print_procs("no instance yet", &baseline);

    let launched = hollow::launch(
        &leader_addr,
        servers,
        instances,
        HollowSize {
            cpu_units: HOLLOW_CPU_UNITS,
            memory_mib: HOLLOW_MEMORY_MIB,
            flush: REPORT_FLUSH,
        },
        "berth-bench tasks: hollow agents",
    )
    .await?;
    let (fleet, register, connect) = (launched.fleet, launched.register, launched.connect);
    let stats = fleet.stats.clone();

    // ---- idle: N instances heartbeating, nothing else.
    tokio::time::sleep(SETTLE).await;
    // The sessions follow the leader: if leadership moved while they
    // joined, measure the new leader (its own no-instance figure included).
    let mut notes = Vec::new();
    let leader_now = cluster.wait_for_leader(Duration::from_secs(15)).await?;
    if leader_now != leader {
        println!("leadership moved from server {leader} to server {leader_now} while the instances joined");
        notes.push(format!(
            "Leadership moved from server {leader} to server {leader_now} while the instances \
             joined; the figures are the new leader's."
        ));
        leader = leader_now;
        leader_addr = cluster.addr(leader);
        watched = cluster::watched(&cluster, leader);
        for p in &mut baseline {
            if let Some((label, _)) = watched.iter().find(|(_, pid)| Some(*pid) == p.pid) {
                p.label = label.clone();
            }
        }
        baseline.sort_by_key(|p| !p.label.starts_with("leader"));
    }
    println!(
        "idle, {instances} instances connected: measuring {} s",
        args.idle_secs
    );
    let beats_before = FleetStats::load(&stats.heartbeats);
    let window = CpuWindow::start(&clock, &watched);
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
    let idle_cpu = window.finish();
    let idle_heartbeats_per_sec =
        (FleetStats::load(&stats.heartbeats) - beats_before) as f64 / t.elapsed().as_secs_f64();
    let idle = procs(&watched, Some(idle_cpu));
    print_procs("idle", &idle);
    println!("    heartbeats: {idle_heartbeats_per_sec:.0}/s");

    // ---- the bulk run, with probes.
    let follower_addr = cluster
        .servers
        .iter()
        .find(|(id, _)| **id != leader)
        .map(|(_, s)| s.addr.clone())
        .unwrap_or_else(|| leader_addr.clone());
    let mut admin = berth_e2e::taskdefs(&leader_addr).await?;
    for family in [BULK_FAMILY, PROBE_FAMILY] {
        bounded(
            "RegisterTaskDefinition",
            admin.register_task_definition(pb::RegisterTaskDefinitionRequest {
                spec: Some(spec(family)),
            }),
        )
        .await?;
    }
    let mut bulk_clients = Vec::new();
    for _ in 0..args.concurrency.clamp(1, 8) {
        bulk_clients.push(task_client(&leader_addr).await?);
    }
    let probe_client = task_client(&leader_addr).await?;
    let mut confirm_client = task_client(&follower_addr).await?;

    let calls = total.div_ceil(MAX_PER_CALL);
    let expected = Duration::from_secs_f64(total as f64 / target_rate(instances));
    let probe_interval = if args.probes == 0 {
        Duration::ZERO
    } else {
        (expected / args.probes as u32).max(Duration::from_millis(10))
    };
    println!(
        "RunTask of {total} tasks: {calls} calls of up to {MAX_PER_CALL}, {} in parallel; a probe every {} ms",
        args.concurrency,
        probe_interval.as_millis()
    );

    let next_call = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let retries = Arc::new(AtomicU64::new(0));
    let accepted_at = Arc::new(Mutex::new(None::<Instant>));
    let done = Arc::new(AtomicBool::new(false));
    let bulk_marks = log_marks(&cluster);
    let batches_before = FleetStats::load(&stats.status_batches);
    let index_before = cluster::log_index(&leader_addr).await;
    let all_addrs: Vec<String> = cluster.servers.values().map(|s| s.addr.clone()).collect();
    let term_before = cluster_term(&all_addrs).await;
    let window = CpuWindow::start(&clock, &watched);
    let t0 = Instant::now();

    let mut workers = Vec::new();
    for w in 0..args.concurrency.max(1) {
        let mut client = bulk_clients[w % bulk_clients.len()].clone();
        let strategies = args.strategies.clone();
        let next_call = next_call.clone();
        let accepted = accepted.clone();
        let accepted_at = accepted_at.clone();
        let retries = retries.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let call = next_call.fetch_add(1, Ordering::Relaxed);
                if call >= calls {
                    return Ok::<(), anyhow::Error>(());
                }
                let count = MAX_PER_CALL.min(total - call * MAX_PER_CALL);
                let request = pb::RunTaskRequest {
                    cluster: String::new(),
                    task_definition: BULK_FAMILY.into(),
                    count: count as u32,
                    group: String::new(),
                    started_by: "berth-bench".into(),
                    placement_strategies: strategies.clone(),
                    placement_constraints: vec![],
                    overrides: vec![],
                    // A retry of the same call starts nothing twice.
                    client_token: format!("bulk-{call}"),
                };
                let mut attempt = 0;
                let reply = loop {
                    attempt += 1;
                    match bounded("RunTask", client.run_task(request.clone())).await {
                        Ok(reply) => break reply,
                        Err(e) if attempt >= 3 => {
                            return Err(
                                e.context(format!("RunTask call {call}, {attempt} attempts"))
                            )
                        }
                        Err(_) => {
                            retries.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    }
                };
                if reply.tasks.len() != count {
                    bail!(
                        "RunTask call {call} started {} tasks, not {count}",
                        reply.tasks.len()
                    );
                }
                if accepted.fetch_add(count as u64, Ordering::Relaxed) + count as u64
                    >= total as u64
                {
                    *accepted_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
                }
            }
        }));
    }

    // Probes: RunTask count=1, then DescribeTask until RUNNING.
    let probe_results = Arc::new(Mutex::new(Vec::<Result<Duration, String>>::new()));
    let probe_launcher = {
        let done = done.clone();
        let results = probe_results.clone();
        let probes = args.probes;
        tokio::spawn(async move {
            let mut running = Vec::new();
            for k in 0..probes {
                tokio::time::sleep_until(t0 + probe_interval * k as u32).await;
                if done.load(Ordering::Relaxed) {
                    break;
                }
                let mut client = probe_client.clone();
                let results = results.clone();
                running.push(tokio::spawn(async move {
                    let r = probe(&mut client, k).await.map_err(|e| format!("{e:#}"));
                    results.lock().unwrap_or_else(|p| p.into_inner()).push(r);
                }));
            }
            for handle in running {
                let _ = handle.await;
            }
        })
    };

    // Watch until every bulk task is RUNNING, or fail.
    let mut last_progress = (0u64, 0u64, 0u64);
    let mut last_move = Instant::now();
    let mut last_print = Instant::now();
    let mut last_confirm = Instant::now() - CONFIRM_POLL;
    let mut confirm_polls = 0u32;
    let (confirmed, proving_poll) = loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let progress = (
            accepted.load(Ordering::Relaxed),
            FleetStats::load(&stats.assignments),
            FleetStats::load(&stats.running_reported),
        );
        if progress != last_progress {
            last_progress = progress;
            last_move = Instant::now();
        }
        if let Some(finished) = workers.iter().position(|w| w.is_finished()) {
            let worker = workers.swap_remove(finished);
            match worker.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    done.store(true, Ordering::Relaxed);
                    return Err(e.context("the bulk RunTask calls failed"));
                }
                Err(e) => bail!("a RunTask worker died: {e}"),
            }
        }
        let why_not = if last_move.elapsed() > STALL {
            Some(format!("nothing moved for {} s", STALL.as_secs()))
        } else if t0.elapsed() > Duration::from_secs(args.bulk_timeout_secs) {
            Some(format!(
                "not done within --bulk-timeout-secs {}",
                args.bulk_timeout_secs
            ))
        } else {
            None
        };
        if let Some(why) = why_not {
            done.store(true, Ordering::Relaxed);
            let census = task_census(&mut confirm_client, BULK_FAMILY).await;
            let problems = log_problems(&cluster, &bulk_marks);
            bail!(
                "the cluster did not run the {total} tasks: {why}. RunTask accepted {}, hollow agents \
                 got {} assignments and reported {} RUNNING; {} of {instances} sessions up, {} session \
                 failures (first: {}); {census}; {} WARN/ERROR lines in the server logs since the \
                 first RunTask{}",
                progress.0,
                progress.1,
                progress.2,
                stats.ready.load(Ordering::Relaxed),
                FleetStats::load(&stats.session_failures),
                stats.first_failure().unwrap_or_else(|| "none".into()),
                problems.lines,
                problems
                    .samples
                    .iter()
                    .map(|s| format!("\n  {s}"))
                    .collect::<String>()
            );
        }
        if last_print.elapsed() > Duration::from_secs(2) {
            println!(
                "  {:>5.1} s: accepted {}, assignments received {}, RUNNING reported {}",
                t0.elapsed().as_secs_f64(),
                progress.0,
                progress.1,
                progress.2
            );
            last_print = Instant::now();
        }
        // Every RunTask is answered (so every bulk task exists) and the
        // hollow agents have reported RUNNING as often as there are bulk
        // tasks (probes count too, so this is necessary, not sufficient):
        // ask a follower whether the RUNNING status of all is committed.
        if progress.0 >= total as u64
            && progress.2 >= total as u64
            && last_confirm.elapsed() >= CONFIRM_POLL
        {
            last_confirm = Instant::now();
            confirm_polls += 1;
            if only_running(&mut confirm_client, BULK_FAMILY).await? {
                let proved = Instant::now();
                break (proved, proved - last_confirm);
            }
        }
    };
    done.store(true, Ordering::Relaxed);
    let bulk_cpu = window.finish();
    let index_after = cluster::log_index(&leader_addr).await;
    let term_after = cluster_term(&all_addrs).await;
    let bulk_elections = term_before
        .zip(term_after)
        .map(|(b, a)| a.saturating_sub(b));
    let batches_during = FleetStats::load(&stats.status_batches) - batches_before;
    let since = |at: Option<Instant>| at.map(|a| a.saturating_duration_since(t0));
    let bulk = Bulk {
        calls,
        accepted: since(*accepted_at.lock().unwrap_or_else(|p| p.into_inner())),
        last_assignment: since(stats.last_new_assignment()),
        last_running_sent: since(stats.last_running_sent()),
        confirmed: confirmed - t0,
        confirm_polls,
        proving_poll,
        cpu: procs(&watched, Some(bulk_cpu)),
        retries: retries.load(Ordering::Relaxed),
        entries: index_before
            .zip(index_after)
            .map(|(b, a)| a.saturating_sub(b)),
        status_batches: batches_during,
    };
    println!(
        "  all {total} RUNNING (committed) after {:.2} s: {} tasks/s{}; elections meanwhile: {}",
        bulk.confirmed.as_secs_f64(),
        fmt_rate(bulk.per_sec(total)),
        target_for(instances)
            .map(|t| format!(" (target at least {})", fmt_rate(t)))
            .unwrap_or_default(),
        bulk_elections.map_or("-".into(), |e| e.to_string())
    );
    println!(
        "  confirmed by the follower: {} proofs asked, the last taking {:.3} s",
        bulk.confirm_polls,
        bulk.proving_poll.as_secs_f64()
    );
    print_procs("during the run", &bulk.cpu);
    for w in workers {
        let _ = w.await;
    }
    tokio::time::timeout(PROBE_TIMEOUT + CALL_TIMEOUT, probe_launcher)
        .await
        .map_err(|_| anyhow!("the probes did not finish"))?
        .map_err(|e| anyhow!("the probe launcher died: {e}"))?;
    let mut probes = Vec::new();
    let mut probe_failures = Vec::new();
    for r in probe_results
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .drain(..)
    {
        match r {
            Ok(d) => probes.push(d),
            Err(e) => probe_failures.push(e),
        }
    }
    probes.sort();
    println!(
        "  probes: {} issued during the run, time to RUNNING p50 {} ms, p99 {} ms, max {} ms{}",
        probes.len() + probe_failures.len(),
        fmt_ms(stats::percentile(&probes, 50.0)),
        fmt_ms(stats::percentile(&probes, 99.0)),
        fmt_ms(probes.last().copied()),
        probe_failures
            .first()
            .map(|e| format!(" ({} failed; first: {e})", probe_failures.len()))
            .unwrap_or_default()
    );

    // ---- memory with every task running, then idle again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let loaded = procs(&watched, None);
    print_procs(&format!("with {total} tasks running"), &loaded);
    println!(
        "idle, {instances} instances and {total} tasks: measuring {} s",
        args.idle_secs
    );
    let window = CpuWindow::start(&clock, &watched);
    tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
    let loaded_idle = procs(&watched, Some(window.finish()));
    print_procs("idle with tasks", &loaded_idle);

    // ---- checks.
    let running_now = list_tasks(&mut confirm_client, "", TaskStatus::Running.as_str())
        .await?
        .len();
    if running_now != total + probes.len() {
        notes.push(format!(
            "At the end {running_now} tasks were RUNNING, not {} (bulk + probes).",
            total + probes.len()
        ));
    }
    let (listed, connected) = hollow::connected_instances(&leader_addr).await?;
    if connected != instances || listed != instances {
        notes.push(format!(
            "At the end {connected} of {listed} instances were connected, not {instances}."
        ));
    }
    let leader_after = cluster.wait_for_leader(Duration::from_secs(15)).await.ok();
    let bulk_problems = log_problems(&cluster, &bulk_marks);
    let passes = {
        let log = cluster
            .servers
            .get(&leader)
            .map(|s| s.log())
            .unwrap_or_default();
        let from = bulk_marks.get(&leader).copied().unwrap_or(0).min(log.len());
        scheduler_passes(log.get(from..).unwrap_or(""))
    };
    let problems = log_problems(&cluster, &start_marks);
    if problems.lines > 0 {
        notes.push(format!(
            "The servers logged {} WARN/ERROR lines after the cluster was up ({} of them Raft RPC \
             timeouts, {} of those from the first RunTask to all RUNNING); the first: {}",
            problems.lines,
            problems.raft_timeouts,
            bulk_problems.raft_timeouts,
            problems.samples.join(" / ")
        ));
    }
    let fleet_summary = summary(&stats);
    let bench_rss = machine::rss(std::process::id()).map(|m| m.0);
    let bench_threads = machine::threads(std::process::id());
    drop(fleet);
    cluster::stop(cluster, args.logs.as_deref(), "tasks")?;

    Ok(Report {
        machine,
        baseline,
        bulk_elections,
        instances,
        tasks: total,
        probes_wanted: args.probes,
        concurrency: args.concurrency,
        strategies: args.strategies.clone(),
        heartbeat: args.heartbeat.clone(),
        idle_secs: args.idle_secs,
        leader,
        leader_after,
        register,
        connect,
        idle,
        idle_heartbeats_per_sec,
        bulk,
        probe_interval,
        probes,
        probe_failures,
        loaded,
        loaded_idle,
        fleet: fleet_summary,
        bench_rss,
        bench_threads,
        passes,
        bulk_raft_timeouts: bulk_problems.raft_timeouts,
        notes,
        elapsed: started.elapsed(),
    })
}

/// One probe: a single-task RunTask, then DescribeTask (see
/// `PROBE_POLL_MIN`) until the task is RUNNING.
async fn probe(client: &mut Tasks, k: usize) -> Result<Duration> {
    let sent = Instant::now();
    let reply = bounded(
        "RunTask (probe)",
        client.run_task(pb::RunTaskRequest {
            cluster: String::new(),
            task_definition: PROBE_FAMILY.into(),
            count: 1,
            group: String::new(),
            started_by: "berth-bench probe".into(),
            placement_strategies: vec![],
            placement_constraints: vec![],
            overrides: vec![],
            client_token: format!("probe-{k}"),
        }),
    )
    .await?;
    let id = reply
        .tasks
        .first()
        .map(|t| t.id.clone())
        .context("RunTask answered without a task")?;
    loop {
        let poll = (sent.elapsed() / 20).clamp(PROBE_POLL_MIN, PROBE_POLL_MAX);
        tokio::time::sleep(poll).await;
        let task = bounded(
            "DescribeTask",
            client.describe_task(pb::DescribeTaskRequest { id: id.clone() }),
        )
        .await?
        .task
        .context("DescribeTask answered without a task")?;
        if TaskStatus::parse(&task.last_status) == Some(TaskStatus::Running) {
            return Ok(sent.elapsed());
        }
        if sent.elapsed() > PROBE_TIMEOUT {
            bail!(
                "task {id} was still {} after {PROBE_TIMEOUT:?}",
                task.last_status
            );
        }
    }
}

fn fmt_ms0(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.0}", stats::ms(d)))
}

fn yes_no(met: bool) -> &'static str {
    if met {
        "yes"
    } else {
        "**no**"
    }
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.2}", d.as_secs_f64()))
}

pub(crate) fn proc_table(procs: &[Proc], cpu: bool, memory: bool) -> String {
    let mut head = "| Process |".to_string();
    let mut rule = "|---|".to_string();
    if cpu {
        head.push_str(" CPU (% of one core) |");
        rule.push_str("---:|");
    }
    if memory {
        head.push_str(" RSS (MiB) | Peak RSS so far (MiB) |");
        rule.push_str("---:|---:|");
    }
    let mut out = format!("{head}\n{rule}\n");
    for p in procs {
        if !cpu && p.label == "other" {
            continue;
        }
        let mut row = format!("| {} |", p.label);
        if cpu {
            row.push_str(&format!(" {} |", pct(p.cores)));
        }
        if memory {
            let (rss, peak) = if p.label == "other" {
                ("-".to_string(), "-".to_string())
            } else {
                (mib(p.rss), mib(p.peak))
            };
            row.push_str(&format!(" {rss} | {peak} |"));
        }
        out.push_str(&row);
        out.push('\n');
    }
    out
}

/// The throughput the issue requires at exactly `instances`, if any.
fn target_for(instances: usize) -> Option<f64> {
    TARGET_TASKS_PER_SEC
        .iter()
        .find(|(n, _)| *n == instances)
        .map(|(_, rate)| *rate)
}

/// The pace the probes are spread over: the point's target, else a pace
/// in the targets' range.
fn target_rate(instances: usize) -> f64 {
    target_for(instances).unwrap_or(PROBE_PACE_TASKS_PER_SEC)
}

fn kib(bytes: Option<f64>) -> String {
    bytes.map_or("-".into(), |b| format!("{:.1}", b / 1024.0))
}

fn leader_of(procs: &[Proc]) -> Option<&Proc> {
    procs.iter().find(|p| p.label.starts_with("leader"))
}

fn cores_of(procs: &[Proc], label: &str) -> Option<f64> {
    procs
        .iter()
        .find(|p| p.label == label)
        .and_then(|p| p.cores)
}

/// `leader / followers / bench / other`, in cores.
fn cpu_split(procs: &[Proc]) -> String {
    let c = |v: Option<f64>| v.map_or("-".into(), |c| format!("{c:.2}"));
    let followers: Vec<String> = procs
        .iter()
        .filter(|p| p.label.starts_with("server"))
        .map(|p| c(p.cores))
        .collect();
    format!(
        "{} / {} / {} / {}",
        c(leader_of(procs).and_then(|p| p.cores)),
        followers.join(" + "),
        c(cores_of(procs, "bench")),
        c(cores_of(procs, "other"))
    )
}

impl Report {
    fn leader_rss(procs: &[Proc]) -> Option<u64> {
        leader_of(procs).and_then(|p| p.rss)
    }

    /// Tasks running at the end: the bulk ones and the probes.
    fn running(&self) -> usize {
        self.tasks + self.probes.len()
    }

    /// The leader's RSS with every instance connected and idle, less its
    /// RSS before the first instance, per instance.
    fn bytes_per_instance(&self) -> Option<f64> {
        let idle = Self::leader_rss(&self.idle)?;
        let base = Self::leader_rss(&self.baseline)?;
        Some((idle as f64 - base as f64) / self.instances as f64)
    }

    /// The leader's RSS with every task running, less its RSS when idle
    /// with the instances only, per task.
    fn bytes_per_task(&self) -> Option<f64> {
        let loaded = Self::leader_rss(&self.loaded)?;
        let idle = Self::leader_rss(&self.idle)?;
        Some((loaded as f64 - idle as f64) / self.running().max(1) as f64)
    }

    fn idle_leader_cores(&self) -> Option<f64> {
        leader_of(&self.idle).and_then(|p| p.cores)
    }

    fn leader_changed(&self) -> bool {
        self.leader_after != Some(self.leader) || self.bulk_elections != Some(0)
    }

    /// One point's own figures (joining, idle, the bulk run, memory after,
    /// notes), under level-4 headings.
    fn detail_markdown(&self) -> String {
        let n = self.instances;
        let t = self.tasks;
        let mut s = String::new();
        s.push_str("#### Joining\n\n");
        s.push_str(&format!(
            "- {n} registrations in {:.1} s ({} /s).\n\
             - {n} sessions up, and recorded as connected by the leader, {:.1} s after the first \
             was opened; {} redirects followed, {} failed session attempts.\n\n",
            self.register.as_secs_f64(),
            fmt_rate(n as f64 / self.register.as_secs_f64()),
            self.connect.as_secs_f64(),
            self.fleet.redirects,
            self.fleet.failures,
        ));
        s.push_str(&format!(
            "#### No instance yet ({} s after the leader was elected)\n\n{}\n",
            BASELINE_SETTLE.as_secs(),
            proc_table(&self.baseline, false, true)
        ));
        s.push_str(&format!(
            "#### Idle, {n} instances connected\n\n{}\nHeartbeats received by the leader: {:.0}/s.\n\n",
            proc_table(&self.idle, true, true),
            self.idle_heartbeats_per_sec
        ));
        s.push_str(&format!("#### RunTask of {} tasks\n\n", fmt_rate(t as f64)));
        s.push_str("| Milestone (from the first RunTask) | s |\n|---|---:|\n");
        s.push_str(&format!(
            "| Every RunTask call answered (all tasks accepted, PROVISIONING) | {} |\n\
             | Last new assignment received by a hollow agent (all placed) | {} |\n\
             | Last RUNNING report sent by a hollow agent | {} |\n\
             | Every task RUNNING, committed (follower's ListTasks by status) | {:.2} |\n\n\
             Proofs asked of the follower: {}; the one that found every task RUNNING took \
             {:.3} s of the figure above.\n\n",
            secs(self.bulk.accepted),
            secs(self.bulk.last_assignment),
            secs(self.bulk.last_running_sent),
            self.bulk.confirmed.as_secs_f64(),
            self.bulk.confirm_polls,
            self.bulk.proving_poll.as_secs_f64(),
        ));
        s.push_str(&format!(
            "Placement throughput: **{} tasks/s** ({} RunTask calls, {} retries).\n\n",
            fmt_rate(self.bulk.per_sec(t)),
            self.bulk.calls,
            self.bulk.retries
        ));
        let p = &self.passes;
        if p.count > 0 {
            s.push_str(&format!(
                "The leader's scheduler committed {} placement passes (`PlaceTasks` commands, the \
                 largest with {} placements), {} placements in all; one pass every \
                 {} ms at the median (min {}, max {} ms), from its log. Meanwhile the hollow \
                 agents sent {} status batches (each one `ReportTaskStatus` command), the leader's \
                 Raft log grew by {} entries, the servers logged {} Raft RPC timeouts, and the \
                 term moved by {}.\n\n",
                p.count,
                p.largest,
                p.placed,
                fmt_ms0(stats::percentile(&p.intervals, 50.0)),
                fmt_ms0(p.intervals.first().copied()),
                fmt_ms0(p.intervals.last().copied()),
                self.bulk.status_batches,
                self.bulk.entries.map_or("-".into(), |e| e.to_string()),
                self.bulk_raft_timeouts,
                self.bulk_elections.map_or("-".into(), |e| e.to_string()),
            ));
        }
        s.push_str("CPU during the run (first RunTask to all RUNNING) and memory at its end:\n\n");
        s.push_str(&proc_table(&self.bulk.cpu, true, true));
        s.push('\n');
        let issued = self.probes.len() + self.probe_failures.len();
        s.push_str(&format!(
            "Probes issued during the run (one every {} ms): {issued} of {}; time to RUNNING p50 \
             {} ms, p99 {} ms, max {} ms{}.\n\n",
            self.probe_interval.as_millis(),
            self.probes_wanted,
            fmt_ms(stats::percentile(&self.probes, 50.0)),
            fmt_ms(stats::percentile(&self.probes, 99.0)),
            fmt_ms(self.probes.last().copied()),
            if self.probe_failures.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} failed (first: {})",
                    self.probe_failures.len(),
                    self.probe_failures[0]
                )
            }
        ));
        s.push_str(&format!(
            "#### With {} tasks running\n\nMemory 2 s after the run:\n\n{}\nThen idle for {} s:\n\n{}\n",
            fmt_rate(self.running() as f64),
            proc_table(&self.loaded, false, true),
            self.idle_secs,
            proc_table(&self.loaded_idle, true, false),
        ));

        let f = &self.fleet;
        let mut notes = vec![
            format!(
                "Hollow agents over the whole run: {} hellos, {} redirects, {} failed session attempts{}, {} assignment sets with {} assignments, {} tasks reported RUNNING in {} status batches, {} heartbeats.",
                f.hellos,
                f.redirects,
                f.failures,
                f.first_failure
                    .as_ref()
                    .map(|e| format!(" (first: {e})"))
                    .unwrap_or_default(),
                f.sets,
                f.assignments,
                f.running_reported,
                f.status_batches,
                f.heartbeats
            ),
            format!(
                "The bench process (all {n} hollow agents, their {n} TLS connections, the load \
                 generator, {} threads) ended at {} MiB RSS.",
                self.bench_threads.map_or("-".into(), |t| t.to_string()),
                mib(self.bench_rss)
            ),
        ];
        if self.leader_after != Some(self.leader) {
            notes.push(format!(
                "The leader changed during the run (server {} before, {} after).",
                self.leader,
                self.leader_after
                    .map_or("none".into(), |l| format!("server {l}"))
            ));
        }
        let busy: Vec<String> = [
            ("idle", cores_of(&self.idle, "other")),
            ("bulk run", cores_of(&self.bulk.cpu, "other")),
            ("idle with tasks", cores_of(&self.loaded_idle, "other")),
        ]
        .iter()
        .filter_map(|(what, cores)| {
            cores
                .filter(|c| *c > OTHER_BUSY_CORES)
                .map(|c| format!("{what}: {:.2} cores", c))
        })
        .collect();
        if !busy.is_empty() {
            notes.push(format!(
                "Other work on this shared machine used CPU during the run ({}), so these \
                 figures are pessimistic; rerun on a quiet machine to compare.",
                busy.join(", ")
            ));
        }
        notes.push(format!(
            "The point took {} s, cluster start to stop.",
            self.elapsed.as_secs()
        ));
        notes.extend(self.notes.iter().cloned());
        s.push_str("#### Notes\n\n");
        for note in notes {
            s.push_str(&format!("- {note}\n"));
        }
        s
    }
}

/// A point of the curve that did not finish.
pub struct Failed {
    pub instances: usize,
    pub tasks: usize,
    pub error: String,
}

/// Every point of one `berth-bench tasks` run, smallest first.
pub struct Curve {
    pub reports: Vec<Report>,
    pub failed: Vec<Failed>,
    pub elapsed: Duration,
}

impl Curve {
    fn at(&self, instances: usize) -> Option<&Report> {
        self.reports.iter().find(|r| r.instances == instances)
    }

    fn failed_at(&self, instances: usize) -> bool {
        self.failed.iter().any(|f| f.instances == instances)
    }

    /// The benchmark's section of docs/benchmarks.md, also printed.
    pub fn markdown(&self, args: &TasksArgs) -> String {
        let mut s = String::new();
        let Some(first) = self.reports.first() else {
            return s;
        };
        let m = &first.machine;
        s.push_str("## Tasks on hollow agents: `berth-bench tasks`\n\n");
        s.push_str(&format!("Measured {} (`date -u`).\n\n", m.date));

        s.push_str("### Reproduce\n\n```sh\n");
        s.push_str("cargo build --release -p berth-server -p berth-bench\n");
        let mut counts: Vec<usize> = self.reports.iter().map(|r| r.instances).collect();
        counts.extend(self.failed.iter().map(|f| f.instances));
        counts.sort_unstable();
        let counts: Vec<String> = counts.iter().map(|n| n.to_string()).collect();
        let tasks_flag = match args.tasks {
            Some(t) => format!("--tasks {t}"),
            None => format!("--tasks-per-instance {}", args.tasks_per_instance),
        };
        s.push_str(&format!(
            "./target/release/berth-bench tasks --instances {} {tasks_flag} --probes {}{}\n```\n\n",
            counts.join(","),
            first.probes_wanted,
            first
                .strategies
                .iter()
                .map(|st| format!(" --strategy {st}"))
                .collect::<String>()
        ));
        s.push_str(&format!(
            "Each count of `--instances` is one point, measured on a fresh 3-server cluster; \
             `--tasks N` sets one point's tasks instead. A quick try: `--instances 200 --tasks \
             2000 --idle-secs 5`. The run took {} s and rewrites only this section (`--no-doc` \
             leaves it alone).\n\n",
            self.elapsed.as_secs()
        ));

        s.push_str("### Machine\n\n");
        s.push_str("| nproc | CPU | Memory | Kernel | Data dirs |\n|---:|---|---|---|---|\n");
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n\n",
            m.nproc, m.cpu_model, m.memory, m.kernel, m.data_fs
        ));
        s.push_str(
            "The three servers and the bench with all its hollow agents share these cores; the \
             CPU columns say how busy each process was, and *other* what the rest of the machine \
             used meanwhile (well above 0 means the figures were disturbed).\n\n",
        );

        s.push_str("### Targets\n\n");
        s.push_str(&self.targets_markdown());

        s.push_str("### The curve\n\n");
        s.push_str(
            "| Instances | Tasks | Tasks/s | Raft RPC timeouts (bulk run) | Elections (bulk run) \
             | Idle leader CPU (% of a core) | Leader RSS, MiB: no instance / idle / tasks running \
             | Leader bytes per instance (KiB) | Leader bytes per task | CPU during the bulk run, \
             cores: leader / followers / bench / other |\n\
             |---:|---:|---:|---:|---:|---:|---|---:|---:|---|\n",
        );
        for r in &self.reports {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} / {} / {} | {} | {} | {} |\n",
                fmt_rate(r.instances as f64),
                fmt_rate(r.running() as f64),
                fmt_rate(r.bulk.per_sec(r.tasks)),
                r.bulk_raft_timeouts,
                r.bulk_elections.map_or("-".into(), |e| e.to_string()),
                pct(r.idle_leader_cores()),
                mib(Report::leader_rss(&r.baseline)),
                mib(Report::leader_rss(&r.idle)),
                mib(Report::leader_rss(&r.loaded)),
                kib(r.bytes_per_instance()),
                r.bytes_per_task().map_or("-".into(), |b| format!("{b:.0}")),
                cpu_split(&r.bulk.cpu),
            ));
        }
        for f in &self.failed {
            s.push_str(&format!(
                "| {} | {} | failed | - | - | - | - | - | - | - |\n",
                fmt_rate(f.instances as f64),
                fmt_rate(f.tasks as f64),
            ));
        }
        s.push('\n');
        for f in &self.failed {
            let short: String = f.error.chars().take(1500).collect();
            s.push_str(&format!(
                "The {}-instance point failed: {}\n\n",
                fmt_rate(f.instances as f64),
                short.replace('\n', " ")
            ));
        }

        s.push_str("### Method\n\n");
        s.push_str(&format!(
            "- Per point: 3 `berthd` servers on 127.0.0.1 (`target/release/berthd`, berthd's \
             default Raft timings, `--agent-heartbeat {}`), each with its own data dir, \
             certificates from `berthd pki init/issue`, started afresh.\n\
             - *Hollow agents* in the bench process, all on one tokio runtime: each made its own \
             key and CSR, registered with `AgentService.RegisterInstance` against one activation \
             ({} registrations in flight), and holds its own mutual-TLS connection with its \
             instance certificate, on the session transport the real agent uses (ALPN \
             `berth-session/1`, `crates/wire`). Instance i \
             first dials server i mod 3 and follows the `Redirect` to the leader. Each offers {} \
             CPU units and {} MiB, speaks the real protocol (hello, settings, complete then \
             incremental assignment sets, each acknowledged, heartbeats at the server's period \
             with +/-10% jitter) and simulates a runtime that starts every task at once: a task \
             desired RUNNING is reported RUNNING (its container RUNNING) in a `StatusBatch` \
             flushed {} ms after the set or the first report it holds, carrying the set's \
             acknowledgement (an `Ack` goes alone only with no report to carry it).\n\
             - Memory: `VmRSS` from `/proc/PID/status` of the leader {} s after it was elected \
             with no instance (*no instance*), after the idle window with every instance \
             connected (*idle*), and 2 s after every task was RUNNING (*tasks running*). *Bytes \
             per instance* is (idle - no instance) / instances; *bytes per task* is (tasks \
             running - idle) / tasks running, so it also carries the Raft log entries and \
             whatever else the run left allocated. RSS counts pages the allocator (mimalloc) \
             keeps after a free, so these are upper bounds of what is live.\n\
             - Idle: once every session is up and berthd records every instance as connected, \
             {} s of settling, then CPU over {} s from `/proc/PID/stat` (utime + stime).\n\
             - Bulk: two task definitions of one container reserving {TASK_CPU_UNITS} CPU units \
             and {TASK_MEMORY_MIB} MiB, no ports; `RunTask` of the point's tasks of \
             `{BULK_FAMILY}` in calls of up to {MAX_PER_CALL} (each with its own client token), \
             {} calls in flight, to the leader, {}. *Tasks/s* is the tasks divided by the time \
             from the first RunTask to the moment a follower proved every one of them RUNNING \
             in committed state: asked every {} ms once every RunTask was answered and the \
             hollow agents had reported every task, with one linearizable `ListTasks \
             family={BULK_FAMILY}` per status other than RUNNING, in lifecycle order \
             (PROVISIONING, PENDING, DEACTIVATING, STOPPING, STOPPED); all empty proves it, \
             since a status only moves forward. Until 2026-12-07 the proof was one `ListTasks \
             status=RUNNING` listing every task, which at 100,000 tasks took 0.7 s of the \
             figure (see \"The proof of RUNNING\" below the curve).\n\
             - *Raft RPC timeouts*: Raft calls (AppendEntries, heartbeats, leadership \
             confirmations of reads, votes) the three servers' logs report as timed out from the \
             first RunTask to all RUNNING, by openraft's deadline (`timeout after`) or the \
             transport's (tonic's `Timeout expired`); openraft logs one such call on two or three \
             lines, counted once. *Elections*: the highest term any server reports \
             after the bulk run less the highest before it.\n\
             - Probes: while the bulk run lasts, single-task `RunTask`s of `{PROBE_FAMILY}` \
             spread over the time the point's target (or {} tasks/s) would take (up to {} per \
             point), each then polling `DescribeTask` on the leader until `lastStatus` is \
             RUNNING, every 1/20 of the time waited so far ({} to {} ms). Percentiles are \
             nearest-rank over the point's samples.\n\n",
            first.heartbeat,
            hollow::REGISTER_CONCURRENCY,
            HOLLOW_CPU_UNITS,
            HOLLOW_MEMORY_MIB,
            REPORT_FLUSH.as_millis(),
            BASELINE_SETTLE.as_secs(),
            SETTLE.as_secs(),
            first.idle_secs,
            first.concurrency,
            if first.strategies.is_empty() {
                "berthd's default placement (no strategy given)".to_string()
            } else {
                format!("placement strategies `{}`", first.strategies.join("`, `"))
            },
            CONFIRM_POLL.as_millis(),
            fmt_rate(PROBE_PACE_TASKS_PER_SEC),
            first.probes_wanted,
            PROBE_POLL_MIN.as_millis(),
            PROBE_POLL_MAX.as_millis(),
        ));

        s.push_str("### Each point\n\n");
        for r in &self.reports {
            s.push_str(&format!(
                "<details><summary>{} instances, {} tasks</summary>\n\n{}\n</details>\n\n",
                fmt_rate(r.instances as f64),
                fmt_rate(r.tasks as f64),
                r.detail_markdown()
            ));
        }
        s.trim_end().to_string() + "\n"
    }

    fn targets_markdown(&self) -> String {
        let mut s = String::from(
            "| Target (from the issue) | Required | Measured | Met |\n|---|---|---:|---|\n",
        );
        let missing = |n: usize| format!("not measured (no {}-instance point)", fmt_rate(n as f64));
        for (n, rate) in TARGET_TASKS_PER_SEC {
            let (measured, met) = match self.at(n) {
                Some(r) => {
                    let got = r.bulk.per_sec(r.tasks);
                    (
                        format!(
                            "{} tasks/s ({} tasks)",
                            fmt_rate(got),
                            fmt_rate(r.tasks as f64)
                        ),
                        yes_no(got >= rate),
                    )
                }
                None if self.failed_at(n) => ("the point failed".into(), "**no**"),
                None => (missing(n), "-"),
            };
            s.push_str(&format!(
                "| Placement throughput, RunTask to RUNNING, {} instances | at least {} tasks/s | {measured} | {met} |\n",
                fmt_rate(n as f64),
                fmt_rate(rate),
            ));
        }
        let timeouts: Vec<String> = self
            .reports
            .iter()
            .map(|r| r.bulk_raft_timeouts.to_string())
            .collect();
        s.push_str(&format!(
            "| Raft RPC timeouts during the bulk run, each point | none | {} | {} |\n",
            timeouts.join(" / "),
            yes_no(
                self.failed.is_empty() && self.reports.iter().all(|r| r.bulk_raft_timeouts == 0)
            )
        ));
        let elections: Vec<String> = self
            .reports
            .iter()
            .map(|r| r.bulk_elections.map_or("-".into(), |e| e.to_string()))
            .collect();
        s.push_str(&format!(
            "| Leader changes during the bulk run, each point | none | {} elections | {} |\n",
            elections.join(" / "),
            yes_no(self.failed.is_empty() && self.reports.iter().all(|r| !r.leader_changed()))
        ));
        let (measured, met) = match self.at(TARGET_IDLE_INSTANCES) {
            Some(r) => {
                let c = r.idle_leader_cores();
                (
                    pct(c),
                    yes_no(c.is_some_and(|c| c < TARGET_IDLE_LEADER_CORES)),
                )
            }
            None if self.failed_at(TARGET_IDLE_INSTANCES) => ("the point failed".into(), "**no**"),
            None => (missing(TARGET_IDLE_INSTANCES), "-"),
        };
        s.push_str(&format!(
            "| Idle leader CPU, {} instances connected | under {:.0}% of one core | {measured} | {met} |\n",
            fmt_rate(TARGET_IDLE_INSTANCES as f64),
            TARGET_IDLE_LEADER_CORES * 100.0,
        ));
        // Per-instance memory is read at the largest point: at small counts
        // the allocator's noise outweighs the sessions.
        let (measured, met) = match self.reports.iter().max_by_key(|r| r.instances) {
            Some(r) => {
                let b = r.bytes_per_instance();
                (
                    format!(
                        "{} KiB ({} instances)",
                        kib(b),
                        fmt_rate(r.instances as f64)
                    ),
                    yes_no(b.is_some_and(|b| b <= TARGET_BYTES_PER_INSTANCE)),
                )
            }
            None => ("-".into(), "-"),
        };
        s.push_str(&format!(
            "| Leader memory per connected instance (RSS idle - RSS with no instance) | at most {:.0} KiB | {measured} | {met} |\n",
            TARGET_BYTES_PER_INSTANCE / 1024.0,
        ));
        let (measured, met) = match self
            .reports
            .iter()
            .find(|r| r.instances == TARGET_RSS_INSTANCES && r.tasks >= TARGET_RSS_TASKS)
        {
            Some(r) => {
                let rss = Report::leader_rss(&r.loaded);
                (
                    format!("{} MiB", mib(rss)),
                    yes_no(rss.is_some_and(|b| b <= TARGET_RSS_BYTES)),
                )
            }
            None if self.failed_at(TARGET_RSS_INSTANCES) => ("the point failed".into(), "**no**"),
            None => (
                format!(
                    "not measured (no point of {} instances and {} tasks)",
                    fmt_rate(TARGET_RSS_INSTANCES as f64),
                    fmt_rate(TARGET_RSS_TASKS as f64)
                ),
                "-",
            ),
        };
        s.push_str(&format!(
            "| Leader RSS, {} instances and {} tasks running | at most {} MiB | {measured} | {met} |\n",
            fmt_rate(TARGET_RSS_INSTANCES as f64),
            fmt_rate(TARGET_RSS_TASKS as f64),
            TARGET_RSS_BYTES >> 20,
        ));
        s.push_str(
            "| Real agent RSS with 20 tasks, plus its log drivers' share | at most 20 MiB | see \"The real agent's memory\" (`scripts/bench-agent-rss.sh`) | - |\n\n",
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_from_the_log() {
        let log = "2026-11-27T20:24:20.423074Z DEBUG berth_server::leader: placements applied placed=1000 wanted=1000
2026-11-27T20:24:20.500000Z  INFO berth_server::tasks_api: tasks accepted tasks=1
2026-11-27T20:24:21.155074Z DEBUG berth_server::leader: placements applied placed=2000 wanted=2000
2026-11-27T20:24:21.655074Z DEBUG berth_server::leader: placements applied placed=0 wanted=3
";
        let p = scheduler_passes(log);
        assert_eq!((p.count, p.placed, p.largest), (2, 3000, 2000));
        assert_eq!(p.intervals.len(), 1);
        assert!((p.intervals[0].as_secs_f64() - 0.732).abs() < 1e-6);
    }

    #[test]
    fn each_timed_out_call_counts_once() {
        let log = [
            "ERROR openraft::replication: RPCError err=NetworkError: x: Cancelled: Timeout expired",
            "WARN openraft::replication: error replication to target=1 error=NetworkError: Timeout expired",
            "WARN openraft::engine::handler::replication_handler: update progress error request_id=AppendEntries(3) result=NetworkError: Timeout expired",
            "WARN openraft::engine::handler::replication_handler: heartbeat error: NetworkError: Timeout expired, no update to inflight data",
            "WARN openraft::engine::handler::replication_handler: update progress error request_id=HeartBeat result=NetworkError: Timeout expired",
            "ERROR openraft::replication: RPCError err=timeout after 100ms when AppendEntries 3->1",
            "ERROR openraft::core::raft_core: timeout while confirming leadership for read request target=2 error=NetworkError: Timeout expired",
        ];
        assert_eq!(log.iter().filter(|l| is_raft_timeout(l)).count(), 4);
    }

    /// The proof of RUNNING holds only if its lists cover every other
    /// status in lifecycle order; a new status must be placed in it.
    #[test]
    fn the_proof_of_running_lists_every_other_status_in_order() {
        let placed = |status: TaskStatus| match status {
            TaskStatus::Running => false,
            TaskStatus::Provisioning
            | TaskStatus::Pending
            | TaskStatus::Deactivating
            | TaskStatus::Stopping
            | TaskStatus::Stopped => true,
        };
        for status in NOT_RUNNING_IN_ORDER {
            assert!(placed(status), "{status:?} is RUNNING");
        }
        assert!(
            NOT_RUNNING_IN_ORDER.windows(2).all(|w| w[0] < w[1]),
            "not in lifecycle order: {NOT_RUNNING_IN_ORDER:?}"
        );
        let before: Vec<_> = NOT_RUNNING_IN_ORDER
            .iter()
            .filter(|s| **s < TaskStatus::Running)
            .collect();
        assert_eq!(
            before,
            [&TaskStatus::Provisioning, &TaskStatus::Pending],
            "a status before RUNNING is missing"
        );
        assert_eq!(
            NOT_RUNNING_IN_ORDER.len(),
            5,
            "a status after RUNNING is missing"
        );
    }

    #[test]
    fn colour_codes_are_stripped() {
        let line = "2026 \u{1b}[33m WARN\u{1b}[0m \u{1b}[2mopenraft\u{1b}[0m: x";
        assert_eq!(strip_ansi(line), "2026  WARN openraft: x");
        assert_eq!(strip_ansi("plain"), "plain");
    }
}
