//! `berth-bench raft`: write and read throughput/latency of a 3-server
//! cluster, and how long writes stop when the leader is killed or stopped,
//! optionally side by side with a 3-member etcd cluster driven the same way
//! (`--compare etcd`), alternating the two in rounds.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use berth_e2e::TestCluster;
use berth_proto::pb;
use berth_proto::pb::task_definition_service_client::TaskDefinitionServiceClient;

use crate::cluster;
use crate::etcd::{self, EtcdCluster};
use crate::load::{self, Outcome, Watched};
use crate::machine::{self, CpuClock, Machine};
use crate::stats::{self, fmt_ms, fmt_rate};
use crate::RaftArgs;

const SERVERS: u64 = 3;
/// HTTP/2 connections per server that all clients share.
const CHANNELS_PER_SERVER: usize = 4;
/// Distinct families (etcd: keys) the writers write to.
const WRITE_FAMILIES: usize = 64;
/// Definitions (etcd: keys) the readers read.
const READ_FAMILIES: usize = 16;

/// The failover writer gives up on a request after this and retries at once
/// on the next server.
const FAILOVER_REQUEST_TIMEOUT: Duration = Duration::from_millis(300);
/// Writing before the kill, so the writer is in its steady state.
const FAILOVER_STEADY: Duration = Duration::from_secs(1);
/// A trial fails when no write is acknowledged this long after the kill.
const FAILOVER_GIVE_UP: Duration = Duration::from_secs(15);
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

// Targets from the issue: ratios against etcd measured in the same run.
const TARGET_WRITES_256_LEADER: f64 = 2.5;
const TARGET_WRITES_256_ROUND_ROBIN: f64 = 2.0;
const TARGET_WRITES_16: f64 = 1.5;
const TARGET_P50_ONE_CLIENT: f64 = 1.0;
const TARGET_READS_256: f64 = 5.0;
const TARGET_FAILOVER: Duration = Duration::from_millis(600);
const TARGET_FAILOVER_RATIO: f64 = 0.5;
const TARGET_HANDOVER: Duration = Duration::from_millis(200);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum System {
    Berth,
    Etcd,
}

impl System {
    fn label(self) -> &'static str {
        match self {
            System::Berth => "Berth",
            System::Etcd => "etcd",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Leader,
    RoundRobin,
}

impl Target {
    fn label(self) -> &'static str {
        match self {
            Target::Leader => "leader",
            Target::RoundRobin => "round-robin, all 3",
        }
    }
}

/// One operation's request body: a write's value or a read's key.
enum Call<W, R> {
    Write(W),
    Read(R),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Write,
    Read,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Write => "writes",
            Kind::Read => "reads",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    Kill9,
    Term,
}

struct Row {
    system: System,
    round: usize,
    kind: Kind,
    target: Target,
    clients: usize,
    outcome: Outcome,
    leader: String,
    leader_after: Option<String>,
    /// Raft log entries Berth's leader appended during the level.
    entries: Option<u64>,
}

struct Trial {
    system: System,
    round: usize,
    stop: Stop,
    killed: String,
    new_leader: Option<String>,
    unavailable: Option<Duration>,
    first_ack_by: Option<String>,
    failed_requests: u64,
}

/// What one load level is: which requests, to whom, how many clients.
#[derive(Clone, Copy)]
struct Level {
    kind: Kind,
    target: Target,
    clients: usize,
}

pub struct Report {
    machine: Machine,
    etcd_version: Option<String>,
    rounds: usize,
    spec_json_bytes: usize,
    write_wire_bytes: usize,
    etcd_put_bytes: usize,
    warmup: Duration,
    measure: Duration,
    rows: Vec<Row>,
    trials: Vec<Trial>,
    snapshots_built: usize,
    command: String,
    elapsed: Duration,
}

type Client = TaskDefinitionServiceClient<berth_e2e::AuthChannel>;

/// `CHANNELS_PER_SERVER` connections to every server, by server index.
#[derive(Clone)]
struct Pool<C> {
    clients: Vec<Vec<C>>,
}

impl<C: Clone> Pool<C> {
    /// The connection client `client` uses for its `seq`th request.
    fn pick(&self, target: Target, leader: usize, client: usize, seq: u64) -> C {
        let n = self.clients.len();
        match target {
            Target::Leader => self.clients[leader][client % CHANNELS_PER_SERVER].clone(),
            Target::RoundRobin => {
                let server = (client + (seq % n as u64) as usize) % n;
                self.clients[server][(client / n) % CHANNELS_PER_SERVER].clone()
            }
        }
    }
}

async fn berth_pool(cluster: &TestCluster) -> Result<(Vec<u64>, Pool<Client>)> {
    let mut ids = Vec::new();
    let mut clients = Vec::new();
    for (id, server) in &cluster.servers {
        let mut per_server = Vec::new();
        // The harness's channels: TLS against the test CA, admin token.
        // Each call opens its own HTTP/2 connection.
        for _ in 0..CHANNELS_PER_SERVER {
            let client = berth_e2e::taskdefs(&server.addr)
                .await
                .with_context(|| format!("connecting to server {id} at {}", server.addr))?;
            per_server.push(client);
        }
        ids.push(*id);
        clients.push(per_server);
    }
    Ok((ids, Pool { clients }))
}

async fn etcd_pool(cluster: &EtcdCluster) -> Result<Pool<etcd::Kv>> {
    let mut clients = Vec::new();
    for member in 0..cluster.members.len() {
        let mut per_member = Vec::new();
        for _ in 0..CHANNELS_PER_SERVER {
            per_member.push(cluster.kv(member).await?);
        }
        clients.push(per_member);
    }
    Ok(Pool { clients })
}

fn index_of(ids: &[u64], id: u64) -> Result<usize> {
    ids.iter()
        .position(|i| *i == id)
        .with_context(|| format!("server {id} is not in the pool"))
}

/// A valid task definition for `family` whose JSON is exactly `json_bytes`
/// long: one container, padded with environment variables.
fn padded_spec(family: &str, json_bytes: usize) -> Result<berth_types::TaskDefinitionSpec> {
    let mut container = berth_types::ContainerDefinition::new("app", "localhost:5000/bench/app:1");
    container.memory = Some(64);
    let mut spec = berth_types::TaskDefinitionSpec {
        family: family.into(),
        container_definitions: vec![container],
        cpu: None,
        memory: None,
        network_mode: Default::default(),
        volumes: vec![],
        tags: vec![],
    };
    let size = |s: &berth_types::TaskDefinitionSpec| serde_json::to_vec(s).map(|v| v.len());
    let filler = |n: usize| -> String {
        "abcdefghijklmnopqrstuvwxyz0123456789"
            .chars()
            .cycle()
            .take(n)
            .collect()
    };
    loop {
        let len = size(&spec)?;
        if len >= json_bytes {
            break;
        }
        let env = &mut spec.container_definitions[0].environment;
        env.push(berth_types::KeyValuePair {
            name: format!("PAD_{:02}", env.len()),
            value: String::new(),
        });
        let with_empty = size(&spec)?;
        let env = &mut spec.container_definitions[0].environment;
        if with_empty > json_bytes {
            // No room for one more variable: lengthen the last one instead.
            env.pop();
            match env.last_mut() {
                Some(last) => last.value.push_str(&filler(json_bytes - len)),
                None => bail!("a definition for {family:?} cannot be {json_bytes} bytes"),
            }
            break;
        }
        if let Some(last) = env.last_mut() {
            last.value = filler((json_bytes - with_empty).min(48));
        }
    }
    berth_types::validate::validate_spec(&spec)
        .map_err(|e| anyhow::anyhow!("the padded definition is invalid: {e:?}"))?;
    Ok(spec)
}

/// A definition for `family` whose `RegisterTaskDefinitionRequest` is
/// `wire_bytes` long as protobuf (or, when padding cannot hit it exactly,
/// the shortest longer one), with its JSON and wire sizes.
fn spec_for_wire(
    family: &str,
    wire_bytes: usize,
) -> Result<(berth_types::TaskDefinitionSpec, usize, usize)> {
    let wire = |spec: &berth_types::TaskDefinitionSpec| {
        prost::Message::encoded_len(&pb::RegisterTaskDefinitionRequest {
            spec: Some(spec.clone().into()),
        })
    };
    let (mut lo, mut hi) = (1usize, wire_bytes.saturating_mul(4).max(1024));
    if wire(&padded_spec(family, hi)?) < wire_bytes {
        bail!("--payload-bytes {wire_bytes} is more than a task definition can be padded to");
    }
    // The smallest JSON size whose wire size reaches the target.
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if wire(&padded_spec(family, mid)?) >= wire_bytes {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let spec = padded_spec(family, lo)?;
    let json = serde_json::to_vec(&spec)?.len();
    let on_wire = wire(&spec);
    Ok((spec, json, on_wire))
}

/// Writes per Raft entry over the whole level: how well berthd batched.
fn per_entry(row: &Row) -> Option<String> {
    let entries = row.entries.filter(|e| *e > 0)?;
    Some(format!(
        "{:.1}",
        row.outcome.total_ok as f64 / entries as f64
    ))
}

fn print_row(row: &Row) {
    let o = &row.outcome;
    println!(
        "  {:<5} {:<6} {:<20} {:>4} clients: {:>8}/s  p50 {:>7} ms  p99 {:>7} ms  errors {}{}{}",
        row.system.label(),
        row.kind.label(),
        row.target.label(),
        row.clients,
        fmt_rate(o.per_sec()),
        fmt_ms(stats::percentile(&o.latencies, 50.0)),
        fmt_ms(stats::percentile(&o.latencies, 99.0)),
        o.errors,
        per_entry(row).map_or(String::new(), |w| format!("  writes/entry {w}")),
        o.first_error
            .as_ref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default(),
    );
}

fn print_trial(trial: &Trial) {
    println!(
        "  {:<5} {}: stopped leader {}, writes acknowledged again after {} ms (first by {}, new leader {}, {} failed or timed-out requests)",
        trial.system.label(),
        match trial.stop {
            Stop::Kill9 => "kill -9",
            Stop::Term => "SIGTERM",
        },
        trial.killed,
        fmt_ms(trial.unavailable),
        trial.first_ack_by.as_deref().unwrap_or("-"),
        trial.new_leader.as_deref().unwrap_or("-"),
        trial.failed_requests,
    );
}

/// What every round of every system runs, from the flags.
struct Plan {
    levels: Vec<Level>,
    warmup: Duration,
    measure: Duration,
    kill_trials: usize,
    term_trials: usize,
}

impl Plan {
    fn from_args(args: &RaftArgs) -> Self {
        let mut levels = Vec::new();
        for &clients in &args.write_clients {
            levels.push(Level {
                kind: Kind::Write,
                target: Target::Leader,
                clients,
            });
        }
        for &clients in &args.round_robin_clients {
            levels.push(Level {
                kind: Kind::Write,
                target: Target::RoundRobin,
                clients,
            });
        }
        for target in [Target::Leader, Target::RoundRobin] {
            for &clients in &args.read_clients {
                levels.push(Level {
                    kind: Kind::Read,
                    target,
                    clients,
                });
            }
        }
        Self {
            levels,
            warmup: Duration::from_secs(args.warmup_secs),
            measure: Duration::from_secs(args.secs),
            kill_trials: args.trials,
            term_trials: args.term_trials,
        }
    }
}

pub async fn run(args: &RaftArgs) -> Result<Report> {
    let started = Instant::now();
    let berthd = cluster::berthd()?;
    println!("berthd: {}", berthd.display());
    let etcd_version = match args.compare {
        Some(crate::Peer::Etcd) => {
            let etcd = etcd::binary()?;
            let version = etcd::version(&etcd);
            println!("etcd: {} ({version})", etcd.display());
            Some(version)
        }
        None => None,
    };
    let plan = Plan::from_args(args);
    let machine = machine::describe();
    println!(
        "machine: {} x {}, {}, {}; data dirs in {}; fsync median {} ms",
        machine.nproc,
        machine.cpu_model,
        machine.memory,
        machine.kernel,
        machine.data_fs,
        fmt_ms(machine.fsync_median)
    );
    let clock = CpuClock::new();

    let mut write_specs: Vec<pb::TaskDefinitionSpec> = Vec::new();
    let (mut spec_json_bytes, mut write_wire_bytes) = (0, 0);
    for i in 0..WRITE_FAMILIES {
        let (spec, json, wire) = spec_for_wire(&format!("bench-{i:02}"), args.payload_bytes)?;
        (spec_json_bytes, write_wire_bytes) = (json, wire);
        write_specs.push(spec.into());
    }
    let write_specs = Arc::new(write_specs);
    // etcd's writes carry as many bytes as Berth's.
    let puts: Arc<Vec<etcd::pb::PutRequest>> = Arc::new(
        (0..WRITE_FAMILIES)
            .map(|i| etcd::put_of_size(&format!("bench-{i:02}"), write_wire_bytes))
            .collect(),
    );
    let etcd_put_bytes = prost::Message::encoded_len(&puts[0]);
    println!(
        "a write: {write_wire_bytes} B on the wire ({spec_json_bytes} B task definition JSON; etcd Put {etcd_put_bytes} B)"
    );

    let _pki = cluster::PkiCleanup;
    let mut rows = Vec::new();
    let mut trials = Vec::new();
    let mut snapshots_built = 0;
    let systems: Vec<System> = match args.compare {
        Some(crate::Peer::Etcd) => vec![System::Etcd, System::Berth],
        None => vec![System::Berth],
    };
    for round in 1..=args.rounds {
        // Alternate who goes first, so neither always runs on a machine
        // the other just warmed (or fragmented).
        let order: Vec<System> = if round % 2 == 1 {
            systems.clone()
        } else {
            systems.iter().rev().copied().collect()
        };
        for system in order {
            println!("round {round} of {}: {}", args.rounds, system.label());
            match system {
                System::Berth => {
                    let (r, snapshots) =
                        berth_throughput(&plan, round, &write_specs, args, &clock).await?;
                    rows.extend(r);
                    snapshots_built += snapshots;
                    trials.extend(berth_failover(&plan, round, &write_specs[0], args).await?);
                }
                System::Etcd => {
                    rows.extend(etcd_throughput(&plan, round, &puts, args, &clock, &berthd).await?);
                    trials.extend(etcd_failover(&plan, round, &puts[0], args, &berthd).await?);
                }
            }
        }
    }

    Ok(Report {
        machine,
        etcd_version,
        rounds: args.rounds,
        spec_json_bytes,
        write_wire_bytes,
        etcd_put_bytes,
        warmup: plan.warmup,
        measure: plan.measure,
        rows,
        trials,
        snapshots_built,
        command: std::env::args()
            .map(|a| {
                if a.contains(std::path::MAIN_SEPARATOR) {
                    a.rsplit(std::path::MAIN_SEPARATOR)
                        .next()
                        .unwrap_or(&a)
                        .to_string()
                } else {
                    a
                }
            })
            .collect::<Vec<_>>()
            .join(" "),
        elapsed: started.elapsed(),
    })
}

/// A cluster under load, asked for its leader before and after each level.
trait Leadership {
    async fn leader(&mut self) -> Result<Leader>;
}

struct Leader {
    index: usize,
    name: String,
    /// The processes whose CPU is shown, the leader first.
    watched: Watched,
    /// The leader's last log index (Berth), for writes per entry.
    log_index: Option<u64>,
}

struct BerthUnderLoad {
    cluster: TestCluster,
    ids: Vec<u64>,
}

impl Leadership for BerthUnderLoad {
    async fn leader(&mut self) -> Result<Leader> {
        let leader = self
            .cluster
            .wait_for_leader(Duration::from_secs(15))
            .await?;
        Ok(Leader {
            index: index_of(&self.ids, leader)?,
            name: format!("server {leader}"),
            watched: cluster::watched(&self.cluster, leader),
            log_index: cluster::log_index(&self.cluster.addr(leader)).await,
        })
    }
}

impl Leadership for EtcdCluster {
    async fn leader(&mut self) -> Result<Leader> {
        let leader = EtcdCluster::leader(self).await?;
        Ok(Leader {
            index: leader,
            name: self.members[leader].name.clone(),
            watched: self.watched(leader),
            log_index: None,
        })
    }
}

struct LevelResult {
    level: Level,
    outcome: Outcome,
    before: Leader,
    after: Option<Leader>,
}

/// Runs every level of `plan` with `op(level, leader index, client, seq)`.
async fn run_levels<F, Fut>(
    plan: &Plan,
    clock: &CpuClock,
    cluster: &mut impl Leadership,
    op: F,
) -> Vec<LevelResult>
where
    F: Fn(Level, usize, usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), tonic::Status>> + Send + 'static,
{
    let mut out = Vec::new();
    for &level in &plan.levels {
        let before = match cluster.leader().await {
            Ok(l) => l,
            Err(e) => {
                println!("  no leader before a level: {e:#}");
                continue;
            }
        };
        let op = op.clone();
        let leader = before.index;
        let outcome = load::run(
            level.clients,
            plan.warmup,
            plan.measure,
            &before.watched,
            clock,
            move |client, seq| op(level, leader, client, seq),
        )
        .await;
        let after = cluster.leader().await.ok();
        out.push(LevelResult {
            level,
            outcome,
            before,
            after,
        });
    }
    out
}

fn row_of(system: System, round: usize, r: LevelResult, entries: Option<u64>) -> Row {
    Row {
        system,
        round,
        kind: r.level.kind,
        target: r.level.target,
        clients: r.level.clients,
        outcome: r.outcome,
        leader: r.before.name,
        leader_after: r.after.map(|a| a.name),
        entries,
    }
}

async fn berth_throughput(
    plan: &Plan,
    round: usize,
    write_specs: &Arc<Vec<pb::TaskDefinitionSpec>>,
    args: &RaftArgs,
    clock: &CpuClock,
) -> Result<(Vec<Row>, usize)> {
    // berthd's own default timings (no timing flags).
    let mut cluster = cluster::start(SERVERS, &[], &[]).await?;
    let (ids, pool) = berth_pool(&cluster).await?;

    // The definitions the readers describe.
    let leader = cluster.wait_for_leader(Duration::from_secs(15)).await?;
    let mut admin = pool.clients[index_of(&ids, leader)?][0].clone();
    let mut read_refs = Vec::new();
    for i in 0..READ_FAMILIES {
        let mut spec = write_specs[i % write_specs.len()].clone();
        spec.family = format!("read-{i:02}");
        let td = admin
            .register_task_definition(pb::RegisterTaskDefinitionRequest { spec: Some(spec) })
            .await
            .context("registering the definitions to read")?
            .into_inner()
            .task_definition
            .context("no task definition in the reply")?;
        read_refs.push(format!("{}:{}", td.family, td.revision));
    }
    let read_refs = Arc::new(read_refs);

    let specs = write_specs.clone();
    let op = move |level: Level, leader: usize, client: usize, seq: u64| {
        let mut c = pool.pick(level.target, leader, client, seq);
        // Only what the level sends is copied: the load generator shares
        // the two cores with the servers, for both systems alike.
        let call = match level.kind {
            Kind::Write => Call::Write(specs[client % specs.len()].clone()),
            Kind::Read => Call::Read(read_refs[client % read_refs.len()].clone()),
        };
        async move {
            match call {
                Call::Write(spec) => c
                    .register_task_definition(pb::RegisterTaskDefinitionRequest {
                        spec: Some(spec),
                    })
                    .await
                    .map(|_| ()),
                Call::Read(reference) => c
                    .describe_task_definition(pb::DescribeTaskDefinitionRequest {
                        task_definition: reference,
                    })
                    .await
                    .map(|_| ()),
            }
        }
    };
    let mut under_load = BerthUnderLoad { cluster, ids };
    let results = run_levels(plan, clock, &mut under_load, op).await;
    let mut rows = Vec::new();
    for r in results {
        let entries = match (
            r.before.log_index,
            r.after.as_ref().and_then(|a| a.log_index),
        ) {
            // The same leader's log, before and after the level.
            (Some(b), Some(a)) if r.level.kind == Kind::Write => Some(a.saturating_sub(b)),
            _ => None,
        };
        let row = row_of(System::Berth, round, r, entries);
        print_row(&row);
        rows.push(row);
    }
    let cluster = under_load.cluster;
    let snapshots = cluster
        .servers
        .values()
        .map(|s| s.log().matches("built snapshot").count())
        .sum();
    cluster::stop(
        cluster,
        args.logs.as_deref(),
        &format!("berth-round{round}"),
    )?;
    Ok((rows, snapshots))
}

async fn etcd_throughput(
    plan: &Plan,
    round: usize,
    puts: &Arc<Vec<etcd::pb::PutRequest>>,
    args: &RaftArgs,
    clock: &CpuClock,
    berthd: &std::path::Path,
) -> Result<Vec<Row>> {
    let mut cluster = EtcdCluster::start(berthd, &berth_e2e::test_pki().dir, SERVERS as usize)
        .await
        .context("starting etcd")?;
    let pool = etcd_pool(&cluster).await?;
    let leader = cluster.leader().await?;
    let mut admin = pool.clients[leader][0].clone();
    let mut read_keys = Vec::new();
    for i in 0..READ_FAMILIES {
        let mut put = puts[i % puts.len()].clone();
        put.key = format!("read-{i:02}").into_bytes();
        read_keys.push(put.key.clone());
        admin.put(put).await.context("writing the keys to read")?;
    }
    let read_keys = Arc::new(read_keys);
    let puts = puts.clone();
    let op = move |level: Level, leader: usize, client: usize, seq: u64| {
        let mut c = pool.pick(level.target, leader, client, seq);
        let call = match level.kind {
            Kind::Write => Call::Write(puts[client % puts.len()].clone()),
            Kind::Read => Call::Read(read_keys[client % read_keys.len()].clone()),
        };
        async move {
            match call {
                Call::Write(put) => c.put(put).await.map(|_| ()),
                Call::Read(key) => c
                    .range(etcd::pb::RangeRequest {
                        key,
                        serializable: false,
                    })
                    .await
                    .and_then(|r| {
                        if r.get_ref().kvs.is_empty() {
                            Err(tonic::Status::not_found("the key read is missing"))
                        } else {
                            Ok(())
                        }
                    }),
            }
        }
    };
    let results = run_levels(plan, clock, &mut cluster, op).await;
    let mut rows = Vec::new();
    for r in results {
        let row = row_of(System::Etcd, round, r, None);
        print_row(&row);
        rows.push(row);
    }
    cluster.stop(args.logs.as_deref(), &format!("etcd-round{round}"))?;
    Ok(rows)
}

struct Ack {
    sent: Instant,
    done: Instant,
    server: usize,
}

/// One writer, round-robin over `servers`, retrying at once on failure.
async fn failover_writer<F, Fut>(
    servers: usize,
    op: F,
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Ack>>>,
    failures: Arc<AtomicU64>,
) where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<(), tonic::Status>>,
{
    let mut next = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let server = next % servers;
        next += 1;
        let sent = Instant::now();
        match tokio::time::timeout(FAILOVER_REQUEST_TIMEOUT, op(server)).await {
            Ok(Ok(())) => {
                let ack = Ack {
                    sent,
                    done: Instant::now(),
                    server,
                };
                acks.lock().unwrap_or_else(|p| p.into_inner()).push(ack);
            }
            _ => {
                failures.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        }
    }
}

/// How long writes stopped around one stop of the leader.
struct Outage {
    unavailable: Option<Duration>,
    first_ack_by: Option<usize>,
    failed_requests: u64,
}

/// Runs the failover writer over `servers`, and after its steady period
/// stops the leader with `stop_leader` (which returns once the process is
/// gone). kill -9: the time from the kill to the acknowledgement of the
/// first write sent after it. SIGTERM: the longest gap between consecutive
/// acknowledgements from the signal until a write sent after the exit is
/// acknowledged, since the stopping leader may go on acknowledging while
/// it hands over.
async fn outage<F, Fut>(
    servers: usize,
    op: F,
    how: Stop,
    stop_leader: impl FnOnce() -> Result<()>,
) -> Result<Outage>
where
    F: Fn(usize) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), tonic::Status>> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(Mutex::new(Vec::<Ack>::new()));
    let failures = Arc::new(AtomicU64::new(0));
    let writer = tokio::spawn(failover_writer(
        servers,
        op,
        stop.clone(),
        acks.clone(),
        failures.clone(),
    ));
    tokio::time::sleep(FAILOVER_STEADY).await;
    if acks.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
        stop.store(true, Ordering::Relaxed);
        let _ = writer.await;
        bail!("the failover writer had no write acknowledged before the leader was stopped");
    }
    let failures_before = failures.load(Ordering::Relaxed);
    let stopped_at = Instant::now();
    // SIGTERM waits for the exit, which takes as long as the handover:
    // the writer goes on meanwhile on the runtime's other threads.
    let stopped = tokio::task::block_in_place(stop_leader);
    // Writes sent from here on cannot have been committed by the old leader.
    let gone_at = Instant::now();
    let give_up = stopped_at + FAILOVER_GIVE_UP;
    let after_exit = loop {
        let found = acks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|a| a.sent >= gone_at)
            .map(|a| (a.done, a.server))
            .min_by_key(|(done, _)| *done);
        if found.is_some() || Instant::now() > give_up || stopped.is_err() {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let failed_requests = failures.load(Ordering::Relaxed) - failures_before;
    stop.store(true, Ordering::Relaxed);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    stopped?;
    let unavailable = match (how, after_exit) {
        (_, None) => None,
        (Stop::Kill9, Some((done, _))) => Some(done - stopped_at),
        (Stop::Term, Some((end, _))) => {
            let mut done: Vec<Instant> = acks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|a| a.done)
                .filter(|d| *d >= stopped_at && *d <= end)
                .collect();
            done.sort();
            let mut longest = Duration::ZERO;
            let mut previous = stopped_at;
            for d in done {
                longest = longest.max(d - previous);
                previous = d;
            }
            Some(longest)
        }
    };
    Ok(Outage {
        unavailable,
        first_ack_by: after_exit.map(|(_, server)| server),
        failed_requests,
    })
}

fn stops(plan: &Plan) -> Vec<Stop> {
    let mut out = vec![Stop::Kill9; plan.kill_trials];
    out.extend(vec![Stop::Term; plan.term_trials]);
    out
}

/// Failover trials on a fresh cluster with berthd's default timings.
async fn berth_failover(
    plan: &Plan,
    round: usize,
    spec: &pb::TaskDefinitionSpec,
    args: &RaftArgs,
) -> Result<Vec<Trial>> {
    let mut cluster = cluster::start(SERVERS, &[], &[]).await?;
    cluster::wait_caught_up(&mut cluster, SERVERS as usize, CATCH_UP_TIMEOUT).await?;
    let mut trials = Vec::new();
    for how in stops(plan) {
        let leader = cluster.wait_for_leader(Duration::from_secs(15)).await?;
        // Connected while every server is up; the one to the stopped server
        // then fails fast (connection refused) until it is back.
        let mut targets = Vec::new();
        let mut names = Vec::new();
        for (id, server) in &cluster.servers {
            let client = berth_e2e::taskdefs(&server.addr)
                .await
                .with_context(|| format!("connecting to server {id}"))?;
            targets.push(client);
            names.push(format!("server {id}"));
        }
        let spec = spec.clone();
        let op = move |server: usize| {
            let mut client = targets[server].clone();
            let request = pb::RegisterTaskDefinitionRequest {
                spec: Some(spec.clone()),
            };
            async move { client.register_task_definition(request).await.map(|_| ()) }
        };
        let victim = cluster.server(leader);
        let outage = outage(names.len(), op, how, || match how {
            Stop::Kill9 => {
                victim.kill9();
                Ok(())
            }
            Stop::Term => victim.terminate().map(|_| ()),
        })
        .await?;
        let new_leader = cluster.wait_for_leader(Duration::from_secs(15)).await.ok();
        let trial = Trial {
            system: System::Berth,
            round,
            stop: how,
            killed: format!("server {leader}"),
            new_leader: new_leader.map(|l| format!("server {l}")),
            unavailable: outage.unavailable,
            first_ack_by: outage.first_ack_by.map(|i| names[i].clone()),
            failed_requests: outage.failed_requests,
        };
        print_trial(&trial);
        trials.push(trial);
        cluster
            .server(leader)
            .start()
            .context("restarting the stopped server")?;
        cluster::wait_caught_up(&mut cluster, SERVERS as usize, CATCH_UP_TIMEOUT).await?;
    }
    cluster::stop(
        cluster,
        args.logs.as_deref(),
        &format!("berth-failover{round}"),
    )?;
    Ok(trials)
}

/// Failover trials on a fresh etcd cluster with etcd's default timings.
async fn etcd_failover(
    plan: &Plan,
    round: usize,
    put: &etcd::pb::PutRequest,
    args: &RaftArgs,
    berthd: &std::path::Path,
) -> Result<Vec<Trial>> {
    let mut cluster = EtcdCluster::start(berthd, &berth_e2e::test_pki().dir, SERVERS as usize)
        .await
        .context("starting etcd")?;
    let mut trials = Vec::new();
    for how in stops(plan) {
        let leader = EtcdCluster::leader(&mut cluster).await?;
        let mut targets = Vec::new();
        for member in 0..cluster.members.len() {
            targets.push(cluster.kv(member).await?);
        }
        let names: Vec<String> = cluster.members.iter().map(|m| m.name.clone()).collect();
        let put = put.clone();
        let op = move |member: usize| {
            let mut client = targets[member].clone();
            let put = put.clone();
            async move { client.put(put).await.map(|_| ()) }
        };
        let victim = &mut cluster.members[leader];
        let outage = outage(names.len(), op, how, || match how {
            Stop::Kill9 => {
                victim.kill9();
                Ok(())
            }
            Stop::Term => victim.terminate(Duration::from_secs(15)),
        })
        .await?;
        let new_leader = EtcdCluster::leader(&mut cluster).await.ok();
        let trial = Trial {
            system: System::Etcd,
            round,
            stop: how,
            killed: names[leader].clone(),
            new_leader: new_leader.map(|l| names[l].clone()),
            unavailable: outage.unavailable,
            first_ack_by: outage.first_ack_by.map(|i| names[i].clone()),
            failed_requests: outage.failed_requests,
        };
        print_trial(&trial);
        trials.push(trial);
        cluster.restart(leader)?;
        cluster.wait_ready(CATCH_UP_TIMEOUT).await?;
    }
    cluster.stop(args.logs.as_deref(), &format!("etcd-failover{round}"))?;
    Ok(trials)
}

fn yes_no(met: bool) -> &'static str {
    if met {
        "yes"
    } else {
        "**no**"
    }
}

fn cpu_cell(o: &Outcome) -> String {
    let fmt = |c: &Option<f64>| c.map_or("-".to_string(), |c| format!("{c:.2}"));
    let find = |prefix: &str| {
        o.cpu
            .iter()
            .find(|(l, _)| l.starts_with(prefix))
            .map(|(_, c)| fmt(c))
            .unwrap_or_else(|| "-".into())
    };
    let followers: Vec<String> = o
        .cpu
        .iter()
        .filter(|(l, _)| l.starts_with("server"))
        .map(|(_, c)| fmt(c))
        .collect();
    format!(
        "{} / {} / {} / {}",
        find("leader"),
        followers.join(" + "),
        find("bench"),
        find("other")
    )
}

/// The leader's CPU time per completed request over the window, in µs.
fn leader_cpu_per_request(o: &Outcome) -> Option<f64> {
    let cores = o
        .cpu
        .iter()
        .find(|(l, _)| l.starts_with("leader"))
        .and_then(|(_, c)| *c)?;
    let rate = o.per_sec();
    (rate > 0.0).then(|| cores * 1e6 / rate)
}

fn median_f64(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// One line of the side-by-side table: a figure per round for each system.
struct Compared {
    measure: String,
    etcd: Vec<f64>,
    berth: Vec<f64>,
    unit: &'static str,
    target: Option<Goal>,
}

enum Goal {
    /// Berth/etcd at least this.
    RatioAtLeast(f64),
    /// Berth/etcd at most this.
    RatioAtMost(f64),
    /// Berth at most this long, and at most this fraction of etcd's.
    OutageAtMost(Duration, f64),
    /// Berth at most this long.
    AtMost(Duration),
}

impl Compared {
    fn fmt(&self, v: f64) -> String {
        match self.unit {
            "/s" => fmt_rate(v),
            "µs" => format!("{v:.0}"),
            _ => format!("{v:.2}"),
        }
    }

    fn ratio(&self) -> Option<f64> {
        let (b, e) = (median_f64(&self.berth)?, median_f64(&self.etcd)?);
        (e > 0.0).then_some(b / e)
    }

    fn goal(&self) -> (String, String) {
        let ratio = self.ratio();
        let berth = median_f64(&self.berth);
        match &self.target {
            None => ("-".into(), "-".into()),
            Some(Goal::RatioAtLeast(r)) => (
                format!("at least {r}x etcd"),
                ratio.map_or("-".into(), |x| yes_no(x >= *r).into()),
            ),
            Some(Goal::RatioAtMost(r)) => (
                format!("at most {r}x etcd's"),
                ratio.map_or("-".into(), |x| yes_no(x <= *r).into()),
            ),
            Some(Goal::OutageAtMost(limit, r)) => (
                format!("at most {:.1} s and {r}x etcd's", limit.as_secs_f64()),
                match (berth, ratio) {
                    (Some(b), Some(x)) => yes_no(b <= stats::ms(*limit) && x <= *r).into(),
                    (Some(b), None) => yes_no(b <= stats::ms(*limit)).into(),
                    _ => "-".into(),
                },
            ),
            Some(Goal::AtMost(limit)) => (
                format!("at most {:.1} s", limit.as_secs_f64()),
                berth.map_or("-".into(), |b| yes_no(b <= stats::ms(*limit)).into()),
            ),
        }
    }
}

impl Report {
    fn rows_of(&self, system: System, kind: Kind, target: Target, clients: usize) -> Vec<&Row> {
        self.rows
            .iter()
            .filter(|r| {
                r.system == system && r.kind == kind && r.target == target && r.clients == clients
            })
            .collect()
    }

    fn outages(&self, system: System, stop: Stop) -> Vec<f64> {
        self.trials
            .iter()
            .filter(|t| t.system == system && t.stop == stop)
            .map(|t| stats::ms(t.unavailable.unwrap_or(FAILOVER_GIVE_UP)))
            .collect()
    }

    fn compared(&self) -> Vec<Compared> {
        let mut out = Vec::new();
        let mut levels: Vec<(Kind, Target, usize)> = Vec::new();
        for r in &self.rows {
            if !levels.contains(&(r.kind, r.target, r.clients)) {
                levels.push((r.kind, r.target, r.clients));
            }
        }
        for &(kind, target, clients) in &levels {
            let rates = |s| {
                self.rows_of(s, kind, target, clients)
                    .iter()
                    .map(|r| r.outcome.per_sec())
                    .collect()
            };
            let goal = match (kind, target, clients) {
                (Kind::Write, Target::Leader, 256) => {
                    Some(Goal::RatioAtLeast(TARGET_WRITES_256_LEADER))
                }
                (Kind::Write, Target::RoundRobin, 256) => {
                    Some(Goal::RatioAtLeast(TARGET_WRITES_256_ROUND_ROBIN))
                }
                (Kind::Write, Target::Leader, 16) => Some(Goal::RatioAtLeast(TARGET_WRITES_16)),
                (Kind::Read, Target::Leader, 256) => Some(Goal::RatioAtLeast(TARGET_READS_256)),
                _ => None,
            };
            out.push(Compared {
                measure: format!(
                    "{}/s, {clients} client{} to {}",
                    kind.label(),
                    if clients == 1 { "" } else { "s" },
                    match target {
                        Target::Leader => "the leader",
                        Target::RoundRobin => "all 3 in turn",
                    }
                ),
                etcd: rates(System::Etcd),
                berth: rates(System::Berth),
                unit: "/s",
                target: goal,
            });
            if kind == Kind::Write && target == Target::Leader {
                let cpu = |s| {
                    self.rows_of(s, kind, target, clients)
                        .iter()
                        .filter_map(|r| leader_cpu_per_request(&r.outcome))
                        .collect()
                };
                out.push(Compared {
                    measure: format!("leader CPU per write, {clients} to the leader (µs)"),
                    etcd: cpu(System::Etcd),
                    berth: cpu(System::Berth),
                    unit: "µs",
                    target: None,
                });
            }
            if kind == Kind::Write && target == Target::Leader && clients == 1 {
                let p50 = |s| {
                    self.rows_of(s, kind, target, clients)
                        .iter()
                        .filter_map(|r| stats::percentile(&r.outcome.latencies, 50.0))
                        .map(stats::ms)
                        .collect()
                };
                out.push(Compared {
                    measure: "write p50, 1 client (ms)".into(),
                    etcd: p50(System::Etcd),
                    berth: p50(System::Berth),
                    unit: "ms",
                    target: Some(Goal::RatioAtMost(TARGET_P50_ONE_CLIENT)),
                });
            }
        }
        out.push(Compared {
            measure: "failover after kill -9 of the leader (ms)".into(),
            etcd: self.outages(System::Etcd, Stop::Kill9),
            berth: self.outages(System::Berth, Stop::Kill9),
            unit: "ms",
            target: Some(Goal::OutageAtMost(TARGET_FAILOVER, TARGET_FAILOVER_RATIO)),
        });
        out.push(Compared {
            measure: "leader stopped with SIGTERM: longest gap between writes (ms)".into(),
            etcd: self.outages(System::Etcd, Stop::Term),
            berth: self.outages(System::Berth, Stop::Term),
            unit: "ms",
            target: Some(Goal::AtMost(TARGET_HANDOVER)),
        });
        out.retain(|c| !c.berth.is_empty() || !c.etcd.is_empty());
        out
    }

    /// The benchmark's section of docs/benchmarks.md, also printed.
    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let compare = self.etcd_version.is_some();
        let mut s = String::new();
        s.push_str("## Raft replication: `berth-bench raft`\n\n");
        s.push_str(&format!("Measured {} (`date -u`).\n\n", m.date));

        s.push_str("### Reproduce\n\n```sh\n");
        s.push_str("apt-get install -y etcd-server   # for --compare etcd\n");
        s.push_str("cargo build --release -p berth-server -p berth-bench\n");
        s.push_str(&format!("./target/release/{}\n```\n\n", self.command));
        s.push_str(
            "`cargo run --release -p berth-bench -- raft` works too once the release `berthd` \
             is built: Cargo does not build another package's binary, and the bench refuses to \
             start without `target/release/berthd`. Data dirs go to a fresh temp dir under \
             `$TMPDIR`; set it to benchmark another disk. `--help` lists the flags (client \
             counts, window, rounds, payload, trials, `--no-doc`). This run took ",
        );
        s.push_str(&format!(
            "{} s and rewrote only this section.\n\n",
            self.elapsed.as_secs()
        ));

        s.push_str("### Machine\n\n");
        s.push_str("| nproc | CPU | Memory | Kernel | Data dirs | fsync (1 KiB append + fdatasync, median of 50) |\n");
        s.push_str("|---:|---|---|---|---|---:|\n");
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} ms |\n\n",
            m.nproc,
            m.cpu_model,
            m.memory,
            m.kernel,
            m.data_fs,
            fmt_ms(m.fsync_median)
        ));
        s.push_str(
            "Each cluster's three servers and the load generator share these cores; the CPU \
             columns below show how busy each process was during each measured window, and \
             *other* what the rest of the machine used meanwhile (anything well above 0 means \
             the figures were disturbed).\n\n",
        );

        s.push_str(&format!(
            "### Side by side: medians of {} round{}\n\n",
            self.rounds,
            if self.rounds == 1 { "" } else { "s" }
        ));
        if compare {
            s.push_str(
                "Each figure is the median over the rounds (failover: over every trial of every \
                 round); the per-round figures follow the medians. *Berth/etcd* divides Berth's \
                 median by etcd's: above 1 is more throughput, or more latency or outage.\n\n",
            );
        }
        s.push_str("| Measure | etcd, per round | Berth, per round | etcd | Berth | Berth/etcd | Target | Met |\n");
        s.push_str("|---|---|---|---:|---:|---:|---|---|\n");
        for c in self.compared() {
            let list = |v: &[f64]| {
                if v.is_empty() {
                    "-".to_string()
                } else {
                    v.iter().map(|x| c.fmt(*x)).collect::<Vec<_>>().join(" / ")
                }
            };
            let med = |v: &[f64]| median_f64(v).map_or("-".to_string(), |x| c.fmt(x));
            let (target, met) = c.goal();
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {target} | {met} |\n",
                c.measure,
                list(&c.etcd),
                list(&c.berth),
                med(&c.etcd),
                med(&c.berth),
                c.ratio().map_or("-".into(), |r| format!("{r:.2}x")),
            ));
        }
        s.push('\n');

        s.push_str("### Setup\n\n");
        s.push_str(
            "- Berth: 3 `berthd` servers on 127.0.0.1 (`target/release/berthd`), each with its own \
             data dir, started with berthd's default timings (no timing flags; see `berthd serve \
             --help`). TLS on every connection, certificates from `berthd pki`; every call carries \
             a bearer token that berthd checks.\n",
        );
        if let Some(version) = &self.etcd_version {
            s.push_str(&format!(
                "- etcd: 3 members of `{version}` on 127.0.0.1, each with its own data dir in the \
                 same temp dir, etcd's default timings (100 ms heartbeat, 1,000 ms election \
                 timeout). TLS on client traffic and mutual TLS on peer traffic \
                 (`--peer-client-cert-auth`), with server certificates issued by `berthd pki \
                 issue` from the same CA as Berth's; no client certificates and no etcd auth \
                 (Berth's bearer-token check has no counterpart). The bench drives it with its \
                 own gRPC client (`crates/bench/proto/etcd.proto`).\n"
            ));
        }
        s.push_str(&format!(
            "- A write: Berth `RegisterTaskDefinition` of a {} byte task definition (JSON, as \
             berthd validates it), {} bytes as protobuf, into {WRITE_FAMILIES} families; berthd \
             acknowledges it once the Raft entry holding it is committed, i.e. in the log and \
             `fdatasync`ed on a majority, and applied.{}\n",
            self.spec_json_bytes,
            self.write_wire_bytes,
            if compare {
                format!(
                    " etcd: `Put` of one of {WRITE_FAMILIES} keys, {} bytes as protobuf (the same \
                     size as Berth's request); etcd acknowledges it once committed and applied \
                     (its WAL `fdatasync`ed on a majority).",
                    self.etcd_put_bytes
                )
            } else {
                String::new()
            }
        ));
        s.push_str(&format!(
            "- A read: Berth `DescribeTaskDefinition FAMILY:REVISION` of one of {READ_FAMILIES} \
             existing definitions, answered after a linearizable read barrier{}.\n",
            if compare {
                "; etcd: a linearizable `Range` (etcd's default, not serializable) of one of 16 \
                 keys holding values of the write size"
            } else {
                ""
            }
        ));
        s.push_str(&format!(
            "- Closed loop: each client has one request in flight and sends the next as soon as \
             the reply arrives. All clients share {CHANNELS_PER_SERVER} HTTP/2 connections per \
             server. *leader*: every request goes to the leader; *round-robin*: each client sends \
             its successive requests to the 3 servers in turn, and followers forward writes to \
             the leader (both systems do).\n\
             - *Writes per Raft entry* (Berth): writes acknowledged over the whole level divided \
             by the entries the leader's log grew by, i.e. how many writes berthd batched into \
             one entry (one fsync and one replication round).\n\
             - Each level: {} s warm-up, then {} s measured. Throughput counts the requests that \
             completed inside the measured window; p50/p99 are nearest-rank percentiles of their \
             latencies.\n\
             - Rounds alternate the systems (odd rounds etcd first, even rounds Berth first), \
             each on fresh clusters.\n\n",
            self.warmup.as_secs(),
            self.measure.as_secs(),
        ));

        s.push_str("### Every round\n\n");
        s.push_str("| Round | System | Requests | Sent to | Clients | Per s | p50 (ms) | p99 (ms) | Errors | Writes per Raft entry | Leader CPU per request (µs) | CPU in cores: leader / followers / bench / other |\n");
        s.push_str("|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n");
        for row in &self.rows {
            let o = &row.outcome;
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                row.round,
                row.system.label(),
                row.kind.label(),
                row.target.label(),
                row.clients,
                fmt_rate(o.per_sec()),
                fmt_ms(stats::percentile(&o.latencies, 50.0)),
                fmt_ms(stats::percentile(&o.latencies, 99.0)),
                o.errors,
                per_entry(row).unwrap_or_else(|| "-".into()),
                leader_cpu_per_request(o).map_or("-".into(), |us| format!("{us:.0}")),
                cpu_cell(o),
            ));
        }
        s.push('\n');

        s.push_str("### Failover\n\n");
        s.push_str(&format!(
            "On a fresh cluster of each system, with its default timings, one writer writes \
             continuously, round-robin over the 3 servers, giving up on a request after {} ms \
             and retrying at once on the next server. After {} s of writing the leader is \
             stopped. *kill -9*: the figure is the time from the kill to the acknowledgement of \
             the first write sent after the kill. *SIGTERM*: the server may hand leadership \
             over before it exits; the figure is the longest gap between consecutive \
             acknowledgements from the signal until a write sent after the exit is \
             acknowledged. Between trials the stopped server is restarted and the bench waits \
             until all 3 answer and have applied the leader's log.\n\n",
            FAILOVER_REQUEST_TIMEOUT.as_millis(),
            FAILOVER_STEADY.as_secs_f64(),
        ));
        s.push_str("| Round | System | Stopped with | Stopped leader | New leader | First write acknowledged by | Failed or timed-out requests | Unavailable (ms) |\n");
        s.push_str("|---:|---|---|---|---|---|---:|---:|\n");
        for t in &self.trials {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                t.round,
                t.system.label(),
                match t.stop {
                    Stop::Kill9 => "kill -9",
                    Stop::Term => "SIGTERM",
                },
                t.killed,
                t.new_leader.as_deref().unwrap_or("-"),
                t.first_ack_by.as_deref().unwrap_or("-"),
                t.failed_requests,
                t.unavailable.map_or_else(
                    || format!("none within {} s", FAILOVER_GIVE_UP.as_secs()),
                    |d| format!("{:.0}", stats::ms(d))
                ),
            ));
        }

        let mut notes = Vec::new();
        for row in &self.rows {
            if row.leader_after.as_ref() != Some(&row.leader) {
                notes.push(format!(
                    "Round {}, {}: the leader changed during the {} clients / {} / {} level ({} before, {} after).",
                    row.round,
                    row.system.label(),
                    row.clients,
                    row.kind.label(),
                    row.target.label(),
                    row.leader,
                    row.leader_after.as_deref().unwrap_or("none"),
                ));
            }
            if let Some(e) = &row.outcome.first_error {
                notes.push(format!(
                    "Round {}, {}, {} clients / {} / {}: first error: {e}",
                    row.round,
                    row.system.label(),
                    row.clients,
                    row.kind.label(),
                    row.target.label()
                ));
            }
        }
        notes.push(format!(
            "Snapshots built by Berth's throughput clusters during the run: {}.",
            self.snapshots_built
        ));
        s.push_str("\n### Notes\n\n");
        for note in notes {
            s.push_str(&format!("- {note}\n"));
        }
        s
    }
}
