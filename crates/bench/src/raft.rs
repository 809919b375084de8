//! `berth-bench raft`: write and read throughput/latency of a 3-server
//! cluster, and how long writes stop when the leader is killed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use berth_e2e::TestCluster;
use berth_proto::pb;
use berth_proto::pb::task_definition_service_client::TaskDefinitionServiceClient;

use crate::cluster;
use crate::load::{self, Outcome};
use crate::machine::{self, CpuClock, Machine};
use crate::stats::{self, fmt_ms, fmt_rate};
use crate::RaftArgs;

const SERVERS: u64 = 3;
/// HTTP/2 connections per server that all clients share.
const CHANNELS_PER_SERVER: usize = 4;
/// Size of each registered task definition as JSON (what berthd validates
/// and what ECS's size limit counts).
const DEFINITION_JSON_BYTES: usize = 1024;
/// Distinct families the writers register into.
const WRITE_FAMILIES: usize = 64;
/// Definitions the readers describe.
const READ_FAMILIES: usize = 16;
const WRITE_CLIENTS: &[usize] = &[1, 16, 256];
const ROUND_ROBIN_WRITE_CLIENTS: &[usize] = &[256];
const READ_CLIENTS: &[usize] = &[16, 256];

/// The failover writer gives up on a request after this and retries at once
/// on the next server.
const FAILOVER_REQUEST_TIMEOUT: Duration = Duration::from_millis(300);
/// Writing before the kill, so the writer is in its steady state.
const FAILOVER_STEADY: Duration = Duration::from_secs(1);
/// A trial fails when no write is acknowledged this long after the kill.
const FAILOVER_GIVE_UP: Duration = Duration::from_secs(15);
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

// Targets from the issue.
const TARGET_WRITES_PER_SEC: f64 = 10_000.0;
const TARGET_P50_ONE_CLIENT: Duration = Duration::from_millis(3);
const TARGET_FAILOVER_MEDIAN: Duration = Duration::from_millis(1500);

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

struct Row {
    target: Target,
    clients: usize,
    outcome: Outcome,
    leader: u64,
    leader_after: Option<u64>,
    /// Raft log entries the leader appended during the level.
    entries: Option<u64>,
}

struct Trial {
    killed: u64,
    new_leader: Option<u64>,
    unavailable: Option<Duration>,
    first_ack_by: Option<u64>,
    failed_requests: u64,
}

pub struct Report {
    machine: Machine,
    spec_json_bytes: usize,
    spec_proto_bytes: usize,
    warmup: Duration,
    measure: Duration,
    writes: Vec<Row>,
    reads: Vec<Row>,
    trials: Vec<Trial>,
    failover_timings: String,
    snapshots_built: usize,
    elapsed: Duration,
}

type Client = TaskDefinitionServiceClient<berth_e2e::AuthChannel>;

/// Connections to every server: `CHANNELS_PER_SERVER` each.
#[derive(Clone)]
struct Pool {
    ids: Vec<u64>,
    clients: Vec<Vec<Client>>,
}

impl Pool {
    async fn connect(cluster: &TestCluster) -> Result<Self> {
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
        Ok(Self { ids, clients })
    }

    fn index_of(&self, id: u64) -> Result<usize> {
        self.ids
            .iter()
            .position(|i| *i == id)
            .with_context(|| format!("server {id} is not in the pool"))
    }

    /// The connection client `client` uses for its `seq`th request.
    fn pick(&self, target: Target, leader: usize, client: usize, seq: u64) -> Client {
        let n = self.ids.len();
        match target {
            Target::Leader => self.clients[leader][client % CHANNELS_PER_SERVER].clone(),
            Target::RoundRobin => {
                let server = (client + (seq % n as u64) as usize) % n;
                self.clients[server][(client / n) % CHANNELS_PER_SERVER].clone()
            }
        }
    }
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

/// Writes per Raft entry over the whole level: how well berthd batched.
fn per_entry(row: &Row) -> Option<String> {
    let entries = row.entries.filter(|e| *e > 0)?;
    Some(format!(
        "{:.1}",
        row.outcome.total_ok as f64 / entries as f64
    ))
}

fn print_row(kind: &str, row: &Row) {
    let o = &row.outcome;
    println!(
        "  {kind:<6} {:<20} {:>4} clients: {:>8}/s  p50 {:>7} ms  p99 {:>7} ms  errors {}{}{}",
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

pub async fn run(args: &RaftArgs) -> Result<Report> {
    let started = Instant::now();
    let berthd = cluster::berthd()?;
    println!("berthd: {}", berthd.display());
    let warmup = Duration::from_secs(args.warmup_secs);
    let measure = Duration::from_secs(args.secs);
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

    let write_specs: Vec<pb::TaskDefinitionSpec> = (0..WRITE_FAMILIES)
        .map(|i| padded_spec(&format!("bench-{i:02}"), DEFINITION_JSON_BYTES).map(Into::into))
        .collect::<Result<_>>()?;
    let sample = padded_spec("bench-00", DEFINITION_JSON_BYTES)?;
    let spec_json_bytes = serde_json::to_vec(&sample)?.len();
    let spec_proto_bytes = prost::Message::encoded_len(&pb::RegisterTaskDefinitionRequest {
        spec: Some(sample.into()),
    });
    let write_specs = Arc::new(write_specs);

    // ---- throughput: berthd's own default timings (no timing flags).
    println!("starting 3 servers (berthd default timings)");
    let _pki = cluster::PkiCleanup;
    let mut cluster = cluster::start(SERVERS, &[], &[]).await?;
    let pool = Pool::connect(&cluster).await?;

    let mut writes = Vec::new();
    let plan = WRITE_CLIENTS.iter().map(|c| (Target::Leader, *c)).chain(
        ROUND_ROBIN_WRITE_CLIENTS
            .iter()
            .map(|c| (Target::RoundRobin, *c)),
    );
    println!("writes (RegisterTaskDefinition, {spec_json_bytes} B JSON):");
    for (target, clients) in plan {
        let leader = cluster.wait_for_leader(Duration::from_secs(15)).await?;
        let leader_idx = pool.index_of(leader)?;
        let index_before = cluster::log_index(&cluster.addr(leader)).await;
        let pool = pool.clone();
        let specs = write_specs.clone();
        let outcome = load::run(
            clients,
            warmup,
            measure,
            &cluster::watched(&cluster, leader),
            &clock,
            move |client, seq| {
                let mut c = pool.pick(target, leader_idx, client, seq);
                let spec = specs[client % specs.len()].clone();
                async move {
                    c.register_task_definition(pb::RegisterTaskDefinitionRequest {
                        spec: Some(spec),
                    })
                    .await
                    .map(|_| ())
                }
            },
        )
        .await;
        let leader_after = cluster.wait_for_leader(Duration::from_secs(15)).await.ok();
        let index_after = cluster::log_index(&cluster.addr(leader)).await;
        let row = Row {
            target,
            clients,
            outcome,
            leader,
            leader_after,
            entries: index_before
                .zip(index_after)
                .map(|(b, a)| a.saturating_sub(b)),
        };
        print_row("write", &row);
        writes.push(row);
    }

    // ---- linearizable reads of definitions that exist.
    let leader = cluster.wait_for_leader(Duration::from_secs(15)).await?;
    let mut admin = pool.clients[pool.index_of(leader)?][0].clone();
    let mut read_refs = Vec::new();
    for i in 0..READ_FAMILIES {
        let spec = padded_spec(&format!("read-{i:02}"), DEFINITION_JSON_BYTES)?;
        let td = admin
            .register_task_definition(pb::RegisterTaskDefinitionRequest {
                spec: Some(spec.into()),
            })
            .await
            .context("registering the definitions to read")?
            .into_inner()
            .task_definition
            .context("no task definition in the reply")?;
        read_refs.push(format!("{}:{}", td.family, td.revision));
    }
    let read_refs = Arc::new(read_refs);
    let mut reads = Vec::new();
    println!("linearizable reads (DescribeTaskDefinition):");
    for target in [Target::Leader, Target::RoundRobin] {
        for &clients in READ_CLIENTS {
            let leader = cluster.wait_for_leader(Duration::from_secs(15)).await?;
            let leader_idx = pool.index_of(leader)?;
            let pool = pool.clone();
            let refs = read_refs.clone();
            let outcome = load::run(
                clients,
                warmup,
                measure,
                &cluster::watched(&cluster, leader),
                &clock,
                move |client, seq| {
                    let mut c = pool.pick(target, leader_idx, client, seq);
                    let reference = refs[client % refs.len()].clone();
                    async move {
                        c.describe_task_definition(pb::DescribeTaskDefinitionRequest {
                            task_definition: reference,
                        })
                        .await
                        .map(|_| ())
                    }
                },
            )
            .await;
            let leader_after = cluster.wait_for_leader(Duration::from_secs(15)).await.ok();
            let row = Row {
                target,
                clients,
                outcome,
                leader,
                leader_after,
                entries: None,
            };
            print_row("read", &row);
            reads.push(row);
        }
    }
    let snapshots_built = cluster
        .servers
        .values()
        .map(|s| s.log().matches("built snapshot").count())
        .sum();
    drop(pool);
    cluster::stop(cluster, args.logs.as_deref(), "throughput")?;

    // ---- failover, on a fresh cluster with timings spelled out rather than
    // left to berthd's defaults, so the figure says what it was measured with.
    let heartbeat = args.failover_heartbeat_ms.to_string();
    let election = args.failover_election_timeout_ms.to_string();
    let timings = [
        "--heartbeat-ms",
        heartbeat.as_str(),
        "--election-timeout-ms",
        election.as_str(),
    ];
    let failover_timings = timings.join(" ");
    println!("failover: starting 3 fresh servers with {failover_timings}");
    let mut cluster = cluster::start(SERVERS, &timings, &[]).await?;
    let spec: pb::TaskDefinitionSpec =
        padded_spec("failover", DEFINITION_JSON_BYTES).map(Into::into)?;
    let mut trials = Vec::new();
    cluster::wait_caught_up(&mut cluster, SERVERS as usize, CATCH_UP_TIMEOUT).await?;
    for n in 1..=args.trials {
        let trial = failover_trial(&mut cluster, &spec).await?;
        println!(
            "  trial {n}: killed leader {}, writes acknowledged again after {} ms (first by server {}, new leader {}, {} failed or timed-out requests)",
            trial.killed,
            fmt_ms(trial.unavailable),
            trial.first_ack_by.map_or("-".into(), |i| i.to_string()),
            trial.new_leader.map_or("-".into(), |i| i.to_string()),
            trial.failed_requests,
        );
        trials.push(trial);
        cluster
            .server(trials[trials.len() - 1].killed)
            .start()
            .context("restarting the killed server")?;
        cluster::wait_caught_up(&mut cluster, SERVERS as usize, CATCH_UP_TIMEOUT).await?;
    }
    cluster::stop(cluster, args.logs.as_deref(), "failover")?;

    Ok(Report {
        machine,
        spec_json_bytes,
        spec_proto_bytes,
        warmup,
        measure,
        writes,
        reads,
        trials,
        failover_timings,
        snapshots_built,
        elapsed: started.elapsed(),
    })
}

struct Ack {
    sent: Instant,
    done: Instant,
    server: u64,
}

/// One writer, round-robin over every server, retrying at once on failure.
async fn failover_writer(
    targets: Vec<(u64, Client)>,
    spec: pb::TaskDefinitionSpec,
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Ack>>>,
    failures: Arc<AtomicU64>,
) {
    let mut next = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let (server, mut client) = targets[next % targets.len()].clone();
        next += 1;
        let sent = Instant::now();
        let request = pb::RegisterTaskDefinitionRequest {
            spec: Some(spec.clone()),
        };
        match tokio::time::timeout(
            FAILOVER_REQUEST_TIMEOUT,
            client.register_task_definition(request),
        )
        .await
        {
            Ok(Ok(_)) => {
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

async fn failover_trial(cluster: &mut TestCluster, spec: &pb::TaskDefinitionSpec) -> Result<Trial> {
    let leader = cluster.wait_for_leader(Duration::from_secs(15)).await?;
    // Connected while every server is up; the one to the killed server then
    // fails fast (connection refused) until it is back.
    let mut targets = Vec::new();
    for (id, server) in &cluster.servers {
        let client = berth_e2e::taskdefs(&server.addr)
            .await
            .with_context(|| format!("connecting to server {id}"))?;
        targets.push((*id, client));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(Mutex::new(Vec::<Ack>::new()));
    let failures = Arc::new(AtomicU64::new(0));
    let writer = tokio::spawn(failover_writer(
        targets,
        spec.clone(),
        stop.clone(),
        acks.clone(),
        failures.clone(),
    ));

    tokio::time::sleep(FAILOVER_STEADY).await;
    let steady = acks.lock().unwrap_or_else(|p| p.into_inner()).len();
    if steady == 0 {
        stop.store(true, Ordering::Relaxed);
        let _ = writer.await;
        bail!("the failover writer had no write acknowledged before the kill");
    }

    let killed = leader;
    let failures_before = failures.load(Ordering::Relaxed);
    let kill_at = Instant::now();
    cluster.server(killed).kill9();
    // Writes sent from here on cannot have been committed by the old leader.
    let dead_at = Instant::now();

    let give_up = kill_at + FAILOVER_GIVE_UP;
    let first = loop {
        let found = acks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|a| a.sent >= dead_at)
            .map(|a| (a.done, a.server))
            .min_by_key(|(done, _)| *done);
        if found.is_some() || Instant::now() > give_up {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let failed_requests = failures.load(Ordering::Relaxed) - failures_before;
    stop.store(true, Ordering::Relaxed);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    let new_leader = cluster.wait_for_leader(Duration::from_secs(15)).await.ok();
    Ok(Trial {
        killed,
        new_leader,
        unavailable: first.map(|(done, _)| done - kill_at),
        first_ack_by: first.map(|(_, server)| server),
        failed_requests,
    })
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
    let leader = o
        .cpu
        .iter()
        .find(|(l, _)| l.starts_with("leader"))
        .map(|(_, c)| fmt(c))
        .unwrap_or_else(|| "-".into());
    let followers: Vec<String> = o
        .cpu
        .iter()
        .filter(|(l, _)| l.starts_with("server"))
        .map(|(_, c)| fmt(c))
        .collect();
    let bench = o
        .cpu
        .iter()
        .find(|(l, _)| l == "bench")
        .map(|(_, c)| fmt(c))
        .unwrap_or_else(|| "-".into());
    let other = o
        .cpu
        .iter()
        .find(|(l, _)| l == "other")
        .map(|(_, c)| fmt(c))
        .unwrap_or_else(|| "-".into());
    format!("{leader} / {} / {bench} / {other}", followers.join(" + "))
}

fn table(kind: &str, rows: &[Row]) -> String {
    let batching = rows.iter().any(|r| r.entries.is_some());
    let (extra_head, extra_rule) = if batching {
        (" Writes per Raft entry |", "---:|")
    } else {
        ("", "")
    };
    let mut out = format!(
        "| Sent to | Clients | {kind}/s | p50 (ms) | p99 (ms) | Errors |{extra_head} CPU in cores: leader / followers / bench / other |\n\
         |---|---:|---:|---:|---:|---:|{extra_rule}---|\n"
    );
    for row in rows {
        let o = &row.outcome;
        let extra = if batching {
            format!(" {} |", per_entry(row).unwrap_or_else(|| "-".into()))
        } else {
            String::new()
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |{extra} {} |\n",
            row.target.label(),
            row.clients,
            fmt_rate(o.per_sec()),
            fmt_ms(stats::percentile(&o.latencies, 50.0)),
            fmt_ms(stats::percentile(&o.latencies, 99.0)),
            o.errors,
            cpu_cell(o),
        ));
    }
    out
}

impl Report {
    fn write_row(&self, target: Target, clients: usize) -> Option<&Row> {
        self.writes
            .iter()
            .find(|r| r.target == target && r.clients == clients)
    }

    /// A trial without any acknowledged write counts as `FAILOVER_GIVE_UP`
    /// (it was at least that).
    fn failover_median(&self) -> Option<Duration> {
        let all: Vec<Duration> = self
            .trials
            .iter()
            .map(|t| t.unavailable.unwrap_or(FAILOVER_GIVE_UP))
            .collect();
        stats::median(&all)
    }

    /// The benchmark's section of docs/benchmarks.md, also printed.
    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let mut s = String::new();
        s.push_str("## Raft replication: `berth-bench raft`\n\n");
        s.push_str(&format!("Measured {} (`date -u`).\n\n", m.date));

        s.push_str("### Reproduce\n\n```sh\n");
        s.push_str("cargo build --release -p berth-server -p berth-bench\n");
        s.push_str("./target/release/berth-bench raft\n```\n\n");
        s.push_str(
            "`cargo run --release -p berth-bench -- raft` works too once the release `berthd` \
             is built: Cargo does not build another package's binary, and the bench refuses to \
             start without `target/release/berthd`. Data dirs go to a fresh temp dir under \
             `$TMPDIR`; set it to benchmark another disk. The run takes about ",
        );
        s.push_str(&format!(
            "{} s and rewrites only this section.\n\n",
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
            "The three servers and the load generator share these cores; the CPU columns \
             below show how busy each process was during each measured window, and *other* \
             what the rest of the machine used meanwhile (anything well above 0 means the \
             figures were disturbed).\n\n",
        );

        s.push_str("### Targets\n\n");
        s.push_str("| Target (from the issue) | Required | Measured | Met |\n|---|---|---:|---|\n");
        for (target, label) in [
            (Target::Leader, "to the leader"),
            (Target::RoundRobin, "round-robin over all 3 servers"),
        ] {
            if let Some(row) = self.write_row(target, 256) {
                let rate = row.outcome.per_sec();
                s.push_str(&format!(
                    "| Write throughput, 256 clients, {label} | at least {} writes/s | {} writes/s | {} |\n",
                    fmt_rate(TARGET_WRITES_PER_SEC),
                    fmt_rate(rate),
                    yes_no(rate >= TARGET_WRITES_PER_SEC)
                ));
            }
        }
        if let Some(row) = self.write_row(Target::Leader, 1) {
            let p50 = stats::percentile(&row.outcome.latencies, 50.0);
            s.push_str(&format!(
                "| Write latency p50, 1 client | at most {} ms | {} ms | {} |\n",
                fmt_ms(Some(TARGET_P50_ONE_CLIENT)),
                fmt_ms(p50),
                yes_no(p50.is_some_and(|p| p <= TARGET_P50_ONE_CLIENT))
            ));
        }
        let median = self.failover_median();
        s.push_str(&format!(
            "| Failover unavailability, median of {} trials | at most {:.2} s | {} s | {} |\n\n",
            self.trials.len(),
            TARGET_FAILOVER_MEDIAN.as_secs_f64(),
            median.map_or("-".into(), |d| format!("{:.3}", d.as_secs_f64())),
            yes_no(median.is_some_and(|d| d <= TARGET_FAILOVER_MEDIAN))
        ));

        s.push_str("### Setup\n\n");
        s.push_str(&format!(
            "- {SERVERS} `berthd` servers on 127.0.0.1, each with its own data dir; `berthd` is \
             `target/release/berthd`.\n\
             - Throughput and reads: one cluster started with berthd's default timings (no timing \
             flags; see `berthd serve --help`). Failover: a second, fresh cluster started with \
             `{}`.\n\
             - A write is `RegisterTaskDefinition` of a {} byte task definition (JSON, as berthd \
             validates it; {} bytes as protobuf): one container padded with environment \
             variables, {WRITE_FAMILIES} families. berthd acknowledges it once the Raft entry \
             holding it is committed, i.e. in the log and `fdatasync`ed on a majority, and applied.\n\
             - A read is `DescribeTaskDefinition FAMILY:REVISION` of one of {READ_FAMILIES} \
             existing definitions; berthd answers it after a linearizable read barrier.\n\
             - Closed loop: each client has one request in flight and sends the next as soon as \
             the reply arrives. All clients share {CHANNELS_PER_SERVER} HTTP/2 connections per \
             server, opened the way the e2e harness opens them (`berth_e2e::taskdefs`). \
             *leader*: every request goes to the leader; *round-robin*: each client \
             sends its successive requests to the 3 servers in turn, and followers forward \
             writes to the leader.\n\
             - *Writes per Raft entry*: writes acknowledged over the whole level divided by the \
             entries the leader's log grew by, i.e. how many writes berthd batched into one \
             entry (one fsync and one replication round).\n\
             - Each level: {} s warm-up, then {} s measured. Throughput counts the requests that \
             completed inside the measured window; p50/p99 are nearest-rank percentiles of \
             their latencies, from this run's samples.\n\n",
            self.failover_timings,
            self.spec_json_bytes,
            self.spec_proto_bytes,
            self.warmup.as_secs(),
            self.measure.as_secs(),
        ));

        s.push_str("### Writes\n\n");
        s.push_str(&table("Writes", &self.writes));
        s.push('\n');
        s.push_str("### Linearizable reads\n\n");
        s.push_str(&table("Reads", &self.reads));
        s.push('\n');

        s.push_str("### Failover\n\n");
        s.push_str(&format!(
            "One writer registers definitions continuously, round-robin over the 3 servers, \
             giving up on a request after {} ms and retrying at once on the next server. \
             After {} s of writing the leader is killed with `kill -9`; the figure is the time \
             from the kill to the acknowledgement of the first write sent after the kill. \
             Between trials the killed server is restarted and the bench waits until all 3 \
             servers answer and have applied the leader's log.\n\n",
            FAILOVER_REQUEST_TIMEOUT.as_millis(),
            FAILOVER_STEADY.as_secs_f64(),
        ));
        s.push_str("| Trial | Killed leader | New leader | First write acknowledged by | Failed or timed-out requests | Unavailable (ms) |\n");
        s.push_str("|---:|---:|---:|---:|---:|---:|\n");
        for (i, t) in self.trials.iter().enumerate() {
            let id = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                i + 1,
                t.killed,
                id(t.new_leader),
                id(t.first_ack_by),
                t.failed_requests,
                t.unavailable.map_or_else(
                    || format!("none within {} s", FAILOVER_GIVE_UP.as_secs()),
                    |d| format!("{:.0}", stats::ms(d))
                ),
            ));
        }
        s.push_str(&format!(
            "\nMedian: {} ms.\n",
            median.map_or("-".into(), |d| format!("{:.0}", stats::ms(d)))
        ));

        let mut notes = Vec::new();
        for row in self.writes.iter().chain(&self.reads) {
            if row.leader_after != Some(row.leader) {
                notes.push(format!(
                    "The leader changed during the {} clients / {} level (server {} before, {} after).",
                    row.clients,
                    row.target.label(),
                    row.leader,
                    row.leader_after.map_or("none".into(), |l| format!("server {l}")),
                ));
            }
            if let Some(e) = &row.outcome.first_error {
                notes.push(format!(
                    "{} clients / {}: first error: {e}",
                    row.clients,
                    row.target.label()
                ));
            }
        }
        notes.push(format!(
            "Snapshots built by the throughput cluster during the run: {}.",
            self.snapshots_built
        ));
        s.push_str("\n### Notes\n\n");
        for note in notes {
            s.push_str(&format!("- {note}\n"));
        }
        s
    }
}
