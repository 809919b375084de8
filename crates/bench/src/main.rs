//! berth-bench: benchmarks that start real `berthd` processes on loopback
//! (through the `berth-e2e` harness), drive them over gRPC and write what
//! they measured to `docs/benchmarks.md`.
//!
//! Each benchmark owns one section of that file, between
//! `<!-- NAME:begin -->` and `<!-- NAME:end -->`, and rewrites only it.

mod apply;
mod cluster;
mod discovery;
mod doc;
mod etcd;
mod hollow;
mod load;
mod machine;
mod raft;
mod services;
mod stats;
mod tasks;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};

// The load generator shares the machine with the servers it measures; the
// same allocator as berthd keeps its own share of the CPU down.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "berth-bench", about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Raft write/read throughput and latency, and how long writes stop when
    /// the leader is killed or stopped, on a 3-server cluster; with
    /// `--compare etcd` side by side with etcd, alternating in rounds.
    Raft(RaftArgs),
    /// Placement throughput, time to RUNNING and berthd's CPU and memory
    /// with many simulated ("hollow") agents connected, on a 3-server
    /// cluster.
    Tasks(TasksArgs),
    /// A REPLICA service on hollow agents: create to steady state, a
    /// rolling deployment of every task, many agents lost at once, and the
    /// leader's idle CPU, on a 3-server cluster.
    Services(ServicesArgs),
    /// Service discovery on a 3-server cluster with DNS and berth-lb in
    /// front of a real HAProxy: how fast a task appears in and leaves DNS
    /// and HAProxy, and HTTP requests per second through HAProxy against
    /// the same backends hit directly.
    Discovery(DiscoveryArgs),
    /// What one server's state machine spends applying a bulk run (RunTasks,
    /// PlaceTasks, reports to RUNNING) per task, in process: no Raft,
    /// network or other processes.
    Apply(ApplyArgs),
}

#[derive(Args)]
pub struct ApplyArgs {
    /// Instances registered and connected in the state.
    #[arg(long, default_value_t = 10_000)]
    instances: usize,
    /// Tasks run per instance.
    #[arg(long, default_value_t = 10)]
    tasks_per_instance: usize,
    /// Rounds, each on a fresh state; the figures are their medians.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// The file whose `apply` section is rewritten.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/benchmarks.md"))]
    doc: PathBuf,
    /// Print the results only; leave the doc alone.
    #[arg(long)]
    no_doc: bool,
}

#[derive(Args)]
pub struct DiscoveryArgs {
    /// Scale-out and scale-in cycles timed.
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// Tasks the service keeps between cycles (each cycle adds one).
    #[arg(long, default_value_t = 1)]
    base: u32,
    /// berthd's --agent-heartbeat (the target for leaving is one period).
    #[arg(long, default_value = "1s")]
    heartbeat: String,
    /// How often each path (two DNS servers, HAProxy) is polled, in ms.
    #[arg(long, default_value_t = 1)]
    poll_ms: u64,
    /// Throughput rounds, each one window through HAProxy and one direct.
    #[arg(long, default_value_t = 5)]
    rps_rounds: usize,
    /// Length of each throughput window, in seconds.
    #[arg(long, default_value_t = 5)]
    rps_secs: u64,
    /// Concurrent keep-alive connections of the load generator (a multiple
    /// of 3 loads the three backends evenly when they are hit directly).
    #[arg(long, default_value_t = 30)]
    connections: usize,
    /// The whole run gives up after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// The file whose `discovery` section is rewritten.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/benchmarks.md"))]
    doc: PathBuf,
    /// Print the results only; leave the doc alone.
    #[arg(long)]
    no_doc: bool,
    /// Copy the servers' logs into this directory before they are removed.
    #[arg(long)]
    logs: Option<PathBuf>,
}

#[derive(Args)]
pub struct ServicesArgs {
    /// Hollow instances (simulated agents); a comma-separated list
    /// (`1000,2000,5000,10000`) measures a curve, each point on a fresh
    /// cluster.
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    instances: Vec<usize>,
    /// The services' desired count in all (one point only; otherwise
    /// `--tasks-per-instance` sets it).
    #[arg(long)]
    tasks: Option<u32>,
    /// Desired tasks per hollow instance when `--tasks` is not given, up to
    /// the bench's limit of 20,000 tasks (4 services of 5,000).
    #[arg(long, default_value_t = 10)]
    tasks_per_instance: u32,
    /// Hollow agents killed at once (one point only; otherwise a tenth of
    /// the point's instances).
    #[arg(long)]
    lost: Option<usize>,
    /// The cluster's lost_after, in seconds.
    #[arg(long, default_value_t = 5)]
    lost_after_secs: u64,
    /// berthd's --agent-heartbeat (berthd's default). Heartbeats are most of
    /// the idle leader's CPU: 2,000 a second from 10,000 instances at 5 s.
    #[arg(long, default_value = "5s")]
    heartbeat: String,
    /// Length of the idle measurement, in seconds.
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
    /// Each step fails unless done within this many seconds.
    #[arg(long, default_value_t = 120)]
    step_timeout_secs: u64,
    /// Each point of the curve gives up after this many seconds.
    #[arg(long, default_value_t = 900)]
    timeout_secs: u64,
    /// The file whose `services` section is rewritten.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/benchmarks.md"))]
    doc: PathBuf,
    /// Print the results only; leave the doc alone.
    #[arg(long)]
    no_doc: bool,
    /// Copy the servers' logs into this directory before they are removed.
    #[arg(long)]
    logs: Option<PathBuf>,
}

#[derive(Args)]
pub struct TasksArgs {
    /// Hollow instances (simulated agents) to register and connect; a
    /// comma-separated list (`1000,2000,5000,10000`) measures a curve, each
    /// point on a fresh cluster.
    #[arg(long, value_delimiter = ',', default_value = "2000")]
    instances: Vec<usize>,
    /// Tasks started by the bulk RunTask calls (one point only; otherwise
    /// `--tasks-per-instance` sets them).
    #[arg(long)]
    tasks: Option<usize>,
    /// Bulk tasks per hollow instance, when `--tasks` is not given.
    #[arg(long, default_value_t = 10)]
    tasks_per_instance: usize,
    /// Single-task RunTask probes timed while the bulk run lasts.
    #[arg(long, default_value_t = 50)]
    probes: usize,
    /// Bulk RunTask calls in flight.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Placement strategy of the bulk RunTask calls (repeat for several),
    /// e.g. `binpack:cpu`; none: berthd's default.
    #[arg(long = "strategy")]
    strategies: Vec<String>,
    /// Length of each idle measurement, in seconds.
    #[arg(long, default_value_t = 20)]
    idle_secs: u64,
    /// berthd's --agent-heartbeat.
    #[arg(long, default_value = "5s")]
    heartbeat: String,
    /// The bulk run fails unless every task is RUNNING within this.
    #[arg(long, default_value_t = 300)]
    bulk_timeout_secs: u64,
    /// Each point of the curve gives up after this many seconds.
    #[arg(long, default_value_t = 900)]
    timeout_secs: u64,
    /// The file whose `tasks` section is rewritten.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/benchmarks.md"))]
    doc: PathBuf,
    /// Print the results only; leave the doc alone.
    #[arg(long)]
    no_doc: bool,
    /// Copy the servers' logs into this directory before they are removed.
    #[arg(long)]
    logs: Option<PathBuf>,
}

/// A system measured side by side with Berth.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Peer {
    /// A 3-member etcd cluster (Debian's etcd-server) with TLS on client
    /// and peer traffic.
    Etcd,
}

#[derive(Args)]
pub struct RaftArgs {
    /// Also measure this system, the same way, alternating with Berth.
    #[arg(long, value_enum)]
    compare: Option<Peer>,
    /// Rounds; each runs every level and the failover trials on fresh
    /// clusters of each system.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Client counts of the write levels sent to the leader.
    #[arg(long, value_delimiter = ',', default_value = "1,16,256")]
    write_clients: Vec<usize>,
    /// Client counts of the write levels sent round-robin to all servers.
    #[arg(long, value_delimiter = ',', default_value = "256")]
    round_robin_clients: Vec<usize>,
    /// Client counts of the read levels (each to the leader and round-robin).
    #[arg(long, value_delimiter = ',', default_value = "16,256")]
    read_clients: Vec<usize>,
    /// Size of one write request on the wire, protobuf-encoded (Berth's
    /// RegisterTaskDefinitionRequest; etcd's PutRequest is made as long).
    #[arg(long, default_value_t = 518)]
    payload_bytes: usize,
    /// Warm-up before each measured load level, in seconds.
    #[arg(long, default_value_t = 1)]
    warmup_secs: u64,
    /// Measured time (window) of each load level, in seconds.
    #[arg(long, default_value_t = 5)]
    secs: u64,
    /// Failover trials with kill -9 of the leader, per system and round.
    #[arg(long, default_value_t = 2)]
    trials: usize,
    /// Trials stopping the leader with SIGTERM, per system and round.
    #[arg(long, default_value_t = 1)]
    term_trials: usize,
    /// The whole run gives up after this many seconds.
    #[arg(long, default_value_t = 1800)]
    timeout_secs: u64,
    /// The file whose `raft` section is rewritten.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/benchmarks.md"))]
    doc: PathBuf,
    /// Print the results only; leave the doc alone.
    #[arg(long)]
    no_doc: bool,
    /// Copy the servers' logs into this directory before they are removed.
    #[arg(long)]
    logs: Option<PathBuf>,
}

fn main() {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(cli)) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Raft(args) => {
            if args.secs == 0 || args.secs > 60 || args.warmup_secs > 60 {
                bail!("--secs must be 1..=60 and --warmup-secs at most 60");
            }
            if args.trials > 20 || args.term_trials > 20 || args.trials + args.term_trials == 0 {
                bail!("--trials and --term-trials must be 0..=20, not both 0");
            }
            if args.rounds == 0 || args.rounds > 20 {
                bail!("--rounds must be 1..=20");
            }
            let counts = [
                &args.write_clients,
                &args.round_robin_clients,
                &args.read_clients,
            ];
            if counts
                .iter()
                .any(|c| c.iter().any(|n| *n == 0 || *n > 4096))
            {
                bail!("client counts (--write-clients, --round-robin-clients, --read-clients) must be 1..=4096");
            }
            if args.payload_bytes < 64 || args.payload_bytes > 60_000 {
                bail!("--payload-bytes must be 64..=60000 (a task definition is at most 64 KiB of JSON)");
            }
            let limit = Duration::from_secs(args.timeout_secs);
            let report = bounded_run(limit, raft::run(&args)).await?;
            publish(&report.markdown(), "raft", &args.doc, args.no_doc)
        }
        Command::Services(args) => {
            if args.instances.is_empty() || args.instances.len() > 8 {
                bail!("--instances takes 1 to 8 counts");
            }
            if (args.tasks.is_some() || args.lost.is_some()) && args.instances.len() > 1 {
                bail!("--tasks and --lost set one point's; a curve takes --tasks-per-instance");
            }
            let max_tasks = berth_types::service::MAX_DESIRED_COUNT * services::MAX_SERVICES;
            let mut points = Vec::new();
            for &instances in &args.instances {
                if !(2..=10_000).contains(&instances) {
                    bail!("--instances must be 2..=10000 (one activation's limit)");
                }
                let tasks = args.tasks.unwrap_or_else(|| {
                    services::even_tasks(
                        (instances as u64 * u64::from(args.tasks_per_instance))
                            .min(u64::from(max_tasks)) as u32,
                    )
                });
                if tasks == 0 || tasks > max_tasks {
                    bail!("--tasks must be 1..={max_tasks}");
                }
                let lost = args.lost.unwrap_or(instances / 10).max(1);
                if lost >= instances {
                    bail!("--lost must be fewer than --instances");
                }
                points.push(services::Point {
                    instances,
                    tasks,
                    lost,
                });
            }
            if args.idle_secs == 0 || args.idle_secs > 300 || args.lost_after_secs == 0 {
                bail!("--idle-secs must be 1..=300 and --lost-after-secs at least 1");
            }
            let limit = Duration::from_secs(args.timeout_secs);
            let started = std::time::Instant::now();
            // The harness makes one CA per process, shared by every point's
            // cluster: removed only once the last point is done.
            cluster::berthd()?;
            let _pki = cluster::PkiCleanup;
            let mut reports = Vec::new();
            let mut failed = Vec::new();
            for point in points {
                println!(
                    "==== point: {} instances, {} tasks, {} lost",
                    point.instances, point.tasks, point.lost
                );
                // As in `tasks`: a failed point is recorded, the curve goes on.
                match bounded_run(limit, services::run(&args, point)).await {
                    Ok(report) => reports.push(report),
                    Err(e) => {
                        eprintln!("point of {} instances failed: {e:#}", point.instances);
                        failed.push((point, format!("{e:#}")));
                    }
                }
            }
            if reports.is_empty() {
                bail!("every point failed");
            }
            let curve = services::Curve {
                reports,
                failed,
                elapsed: started.elapsed(),
            };
            publish(&curve.markdown(), "services", &args.doc, args.no_doc)
        }
        Command::Discovery(args) => {
            if args.rounds == 0 || args.rounds > 200 {
                bail!("--rounds must be 1..=200");
            }
            if args.base == 0 || args.base > 4 {
                bail!("--base must be 1..=4");
            }
            if args.poll_ms == 0 || args.poll_ms > 1000 {
                bail!("--poll-ms must be 1..=1000");
            }
            if args.rps_rounds == 0
                || args.rps_rounds > 20
                || args.rps_secs == 0
                || args.rps_secs > 60
            {
                bail!("--rps-rounds must be 1..=20 and --rps-secs 1..=60");
            }
            if args.connections == 0 || args.connections > 256 {
                bail!("--connections must be 1..=256");
            }
            let limit = Duration::from_secs(args.timeout_secs);
            let report = bounded_run(limit, discovery::run(&args)).await?;
            publish(&report.markdown(), "discovery", &args.doc, args.no_doc)
        }
        Command::Apply(args) => {
            if args.instances == 0 || args.instances > 100_000 {
                bail!("--instances must be 1..=100000");
            }
            if args.tasks_per_instance == 0
                || args.instances.saturating_mul(args.tasks_per_instance) > 1_000_000
            {
                bail!("--tasks-per-instance must be at least 1, and instances x tasks at most 1,000,000");
            }
            if args.rounds == 0 || args.rounds > 50 {
                bail!("--rounds must be 1..=50");
            }
            let section = apply::run(&args)?;
            publish(&section, "apply", &args.doc, args.no_doc)
        }
        Command::Tasks(args) => {
            if args.instances.is_empty() || args.instances.len() > 8 {
                bail!("--instances takes 1 to 8 counts");
            }
            if args.tasks.is_some() && args.instances.len() > 1 {
                bail!("--tasks sets one point's tasks; a curve takes --tasks-per-instance");
            }
            let mut points = Vec::new();
            for &instances in &args.instances {
                if instances == 0 || instances > 10_000 {
                    bail!("--instances must be 1..=10000 (one activation's limit)");
                }
                let tasks = args
                    .tasks
                    .unwrap_or_else(|| instances.saturating_mul(args.tasks_per_instance));
                if tasks == 0 || tasks > 1_000_000 {
                    bail!("--tasks (or instances x --tasks-per-instance) must be 1..=1000000");
                }
                points.push((instances, tasks));
            }
            if args.concurrency == 0 || args.concurrency > 64 {
                bail!("--concurrency must be 1..=64");
            }
            if args.idle_secs == 0 || args.idle_secs > 300 {
                bail!("--idle-secs must be 1..=300");
            }
            let limit = Duration::from_secs(args.timeout_secs);
            let started = std::time::Instant::now();
            // The harness makes one CA per process, shared by every point's
            // cluster: removed only once the last point is done.
            cluster::berthd()?;
            let _pki = cluster::PkiCleanup;
            let mut reports = Vec::new();
            let mut failed = Vec::new();
            for (instances, tasks) in points {
                println!("==== point: {instances} instances, {tasks} tasks");
                // A point that fails is recorded as failed and the curve
                // goes on: the larger points say more than none.
                match bounded_run(limit, tasks::run(&args, instances, tasks)).await {
                    Ok(report) => reports.push(report),
                    Err(e) => {
                        eprintln!("point of {instances} instances failed: {e:#}");
                        failed.push(tasks::Failed {
                            instances,
                            tasks,
                            error: format!("{e:#}"),
                        });
                    }
                }
            }
            if reports.is_empty() {
                bail!("every point failed");
            }
            let curve = tasks::Curve {
                reports,
                failed,
                elapsed: started.elapsed(),
            };
            publish(&curve.markdown(&args), "tasks", &args.doc, args.no_doc)
        }
    }
}

/// Runs a benchmark until it ends, `limit` passes or Ctrl-C. The servers
/// belong to the future: when it ends, early or not, dropping it kills them
/// (the harness's Drop) and ends the hollow agents' sessions.
async fn bounded_run<T>(
    limit: Duration,
    bench: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    tokio::select! {
        r = tokio::time::timeout(limit, bench) => {
            r.map_err(|_| anyhow::anyhow!("the run took longer than {limit:?} (--timeout-secs); gave up"))?
        }
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
    }
}

/// Prints a benchmark's section and, unless `no_doc`, rewrites it in `doc`.
fn publish(section: &str, name: &str, doc: &std::path::Path, no_doc: bool) -> Result<()> {
    println!();
    println!("{section}");
    if !no_doc {
        doc::write_section(doc, name, section)
            .with_context(|| format!("writing {}", doc.display()))?;
        println!("wrote the {name} section of {}", doc.display());
    }
    Ok(())
}
