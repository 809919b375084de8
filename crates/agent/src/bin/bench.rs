//! berth-agent-bench: container start latency through `ContainerdRuntime`
//! versus `ctr run -d --net-host` (Berth's host-mode task has no network
//! namespace either), same image, same containerd, interleaved in one run,
//! with the `ctr` process's own start (`ctr version`) timed in the same
//! rounds so that it can be taken out; where Berth's start spends its time,
//! step by step; then bridge-mode starts (a netns, the CNI plugins and a
//! published port) against host-mode ones; then the runtime's resident
//! memory and the log drivers' with 20 running containers.
//!
//!   eval "$(scripts/test-env.sh)"   # or any containerd socket
//!   cargo run --release -p berth-agent --bin berth-agent-bench -- \
//!       --socket "$BERTH_TEST_CONTAINERD_SOCK" --testapp PATH_TO_STATIC_BERTH_TESTAPP

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use berth_agent::containerd::{default_log_driver, TIMING_TARGET};
use berth_agent::{
    ocibuild, ContainerConfig, ContainerdConfig, ContainerdRuntime, LogDriver, PullPolicy, Runtime,
};
use berth_types::{ContainerDefinition, NetworkMode};
use clap::Parser;

#[derive(Parser)]
struct Args {
    #[arg(
        long,
        env = "BERTH_TEST_CONTAINERD_SOCK",
        default_value = "/run/containerd/containerd.sock"
    )]
    socket: PathBuf,
    #[arg(long, default_value = "berth-bench")]
    namespace: String,
    /// The static berth-testapp binary to package as the image.
    #[arg(
        long,
        default_value = "target/testapp-static/x86_64-unknown-linux-gnu/release/berth-testapp"
    )]
    testapp: PathBuf,
    #[arg(long, default_value_t = 100)]
    sequential: usize,
    #[arg(long, default_value_t = 10)]
    concurrency: usize,
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Sequential bridge-mode starts, each followed by a host-mode one; 0
    /// skips them (they need the CNI plugins in /usr/lib/cni).
    #[arg(long, default_value_t = 30)]
    bridge_starts: usize,
    #[arg(long, default_value = "/tmp/berth-bench/state")]
    state_dir: PathBuf,
    /// Internal: only start 20 containers and report this process's RSS, so
    /// the figure is not inflated by the image building and timing above.
    #[arg(long, hide = true)]
    rss_only: bool,
    /// Rewrite the `runtime` section (between its markers) of this file,
    /// e.g. docs/benchmarks.md, with the figures of this run.
    #[arg(long)]
    docs: Option<PathBuf>,
}

const IMAGE: &str = "berth.local/bench/testapp:latest";
/// Berth's start may take at most this times `ctr`'s (the issue's target).
const TARGET_RATIO: f64 = 1.1;
/// A bridge and subnet of the bench's own, apart from any agent's.
const BENCH_BRIDGE: &str = "berthbench0";
const BENCH_SUBNET: &str = "198.19.251.0/24";
/// Host ports the bridge-mode starts publish 8080 on, one per start.
const BENCH_FIRST_HOST_PORT: u32 = 47000;

fn pct(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[idx.min(samples.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// Resident memory of a process from /proc/PID/smaps_rollup, in KiB.
#[derive(Default, Clone, Copy)]
struct Memory {
    rss: u64,
    /// Proportional: each shared page divided among the processes mapping it.
    pss: u64,
    /// Private to the process (heap, stacks); the rest of `rss` is file-backed.
    anon: u64,
}

fn memory_kib(pid: &str) -> Memory {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    Memory {
        rss: field("Rss:"),
        pss: field("Pss:"),
        anon: field("Anonymous:"),
    }
}

fn mib(kib: u64) -> String {
    format!("{:.2}", kib as f64 / 1024.0)
}

/// Collects the runtime's per-step timing events (see
/// `berth_agent::containerd::TIMING_TARGET`).
/// Samples by step, in the order the steps first occurred.
type StepSamples = Arc<Mutex<Vec<(String, Vec<Duration>)>>>;

#[derive(Clone, Default)]
struct StepLayer(StepSamples);

struct StepVisitor {
    phase: Option<String>,
    us: Option<u64>,
}

impl tracing::field::Visit for StepVisitor {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "phase" {
            self.phase = Some(value.to_string());
        }
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        if field.name() == "us" {
            self.us = Some(value);
        }
    }
    fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for StepLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() != TIMING_TARGET {
            return;
        }
        let mut v = StepVisitor {
            phase: None,
            us: None,
        };
        event.record(&mut v);
        if let (Some(phase), Some(us)) = (v.phase, v.us) {
            let mut steps = self.0.lock().unwrap_or_else(|p| p.into_inner());
            let sample = Duration::from_micros(us);
            match steps.iter_mut().find(|(name, _)| *name == phase) {
                Some((_, samples)) => samples.push(sample),
                None => steps.push((phase, vec![sample])),
            }
        }
    }
}

struct Bench {
    rt: ContainerdRuntime,
    socket: PathBuf,
    namespace: String,
}

impl Bench {
    fn config(&self, name: &str) -> ContainerConfig {
        let mut def = ContainerDefinition::new(name, IMAGE);
        def.command = vec!["sleep".into()];
        ContainerConfig {
            task_id: format!("b{:010x}", rand::random::<u64>() & 0xff_ffff_ffff),
            task_family: "bench".into(),
            cluster: "bench".into(),
            definition: def,
            network_mode: NetworkMode::Host,
            network_bindings: vec![],
            volumes: vec![],
            task_cpu: None,
            task_memory: None,
            pull_policy: PullPolicy::IfNotPresent,
        }
    }

    /// Runtime call to process running: create (image cached) + start.
    async fn ours(&self, name: String) -> anyhow::Result<(Duration, String)> {
        self.start(self.config(&name)).await
    }

    /// Like [`Bench::ours`] in bridge mode: the task's netns, the CNI
    /// plugins and a published port come with the create.
    async fn ours_bridged(
        &self,
        name: String,
        host_port: u32,
    ) -> anyhow::Result<(Duration, String)> {
        let mut cfg = self.config(&name);
        cfg.network_mode = NetworkMode::Bridge;
        cfg.network_bindings = vec![berth_types::NetworkBinding {
            container_name: name,
            container_port: 8080,
            host_port,
            protocol: berth_types::Protocol::Tcp,
        }];
        self.start(cfg).await
    }

    async fn start(&self, cfg: ContainerConfig) -> anyhow::Result<(Duration, String)> {
        let t = Instant::now();
        let id = self.rt.create(&cfg).await?;
        self.rt.start(&id).await?;
        Ok((t.elapsed(), id))
    }

    /// `ctr run -d --net-host`: in the host's network namespace, as a
    /// host-mode Berth task is (without the flag ctr makes a namespace per
    /// container, which Berth's start does not pay for).
    async fn ctr(&self, id: &str) -> anyhow::Result<Duration> {
        self.ctr_run(id, &[]).await
    }

    /// The same with `--seccomp` (containerd's default allow-list): every
    /// Berth container runs under a seccomp allow-list of the same shape,
    /// which runc compiles and loads at task create; plain `ctr run` has
    /// none.
    async fn ctr_seccomp(&self, id: &str) -> anyhow::Result<Duration> {
        self.ctr_run(id, &["--seccomp"]).await
    }

    async fn ctr_run(&self, id: &str, extra: &[&str]) -> anyhow::Result<Duration> {
        let mut args = vec!["-n", &self.namespace, "run", "-d", "--net-host"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[IMAGE, id, "/berth-testapp", "sleep"]);
        self.ctr_timed(&args).await
    }

    /// The ctr CLI's own cost: starting the process, dialing containerd and
    /// one trivial call. Berth's runtime pays none of it (the agent is
    /// running and connected), so it is timed in the same rounds and taken
    /// out of `ctr run`'s time for the like-for-like ratio.
    async fn ctr_process(&self) -> anyhow::Result<Duration> {
        self.ctr_timed(&["version"]).await
    }

    async fn ctr_timed(&self, args: &[&str]) -> anyhow::Result<Duration> {
        let t = Instant::now();
        let out = tokio::process::Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(args)
            .output()
            .await
            .context("run ctr")?;
        let took = t.elapsed();
        if !out.status.success() {
            bail!(
                "ctr {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(took)
    }

    async fn cleanup(&self, id: &str) {
        if let Err(e) = self.rt.remove(id).await {
            eprintln!("cleanup {id}: {e}");
        }
    }
}
/// p50 and p95 of one set of samples.
struct Percentiles {
    p50: Duration,
    p95: Duration,
}

fn percentiles(samples: &mut [Duration]) -> Percentiles {
    Percentiles {
        p50: pct(samples, 0.5),
        p95: pct(samples, 0.95),
    }
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}

/// One comparison of Berth's starts with ctr's, from interleaved samples.
struct Comparison {
    label: String,
    berth: Percentiles,
    ctr: Percentiles,
    ctr_process: Percentiles,
    /// `ctr run` minus `ctr version` of the same round, sample by sample.
    ctr_net: Percentiles,
}

impl Comparison {
    fn new(
        label: String,
        berth: &mut [Duration],
        ctr: &mut [Duration],
        ctr_process: &mut [Duration],
    ) -> Self {
        let mut net: Vec<Duration> = ctr
            .iter()
            .zip(ctr_process.iter())
            .map(|(run, process)| run.saturating_sub(*process))
            .collect();
        Comparison {
            label,
            berth: percentiles(berth),
            ctr: percentiles(ctr),
            ctr_process: percentiles(ctr_process),
            ctr_net: percentiles(&mut net),
        }
    }

    fn row(&self) -> String {
        let net = ratio(self.berth.p50, self.ctr_net.p50);
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2}x | {:.2}x | {} |\n",
            self.label,
            ms(self.berth.p50),
            ms(self.berth.p95),
            ms(self.ctr.p50),
            ms(self.ctr.p95),
            ms(self.ctr_process.p50),
            ms(self.ctr_process.p95),
            ms(self.ctr_net.p50),
            ms(self.ctr_net.p95),
            ratio(self.berth.p50, self.ctr.p50),
            net,
            if net <= TARGET_RATIO { "yes" } else { "**no**" },
        )
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let steps = StepLayer::default();
    {
        use tracing_subscriber::layer::SubscriberExt;
        let filter = tracing_subscriber::filter::Targets::new()
            .with_target(TIMING_TARGET, tracing::Level::DEBUG);
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::Layer::with_filter(steps.clone(), filter),
        );
        tracing::subscriber::set_global_default(subscriber)
            .map_err(|e| anyhow::anyhow!("tracing: {e}"))?;
    }
    let binary = if args.rss_only {
        Vec::new()
    } else {
        std::fs::read(&args.testapp).with_context(|| {
            format!(
                "read {} (build it: RUSTFLAGS='-C target-feature=+crt-static' cargo build --release \
                 -p berth-testapp --target x86_64-unknown-linux-gnu --target-dir target/testapp-static)",
                args.testapp.display()
            )
        })?
    };
    let mut cfg = ContainerdConfig::new(&args.socket, &args.state_dir);
    cfg.namespace = args.namespace.clone();
    cfg.network.bridge = BENCH_BRIDGE.into();
    cfg.network.subnet = BENCH_SUBNET
        .parse()
        .map_err(|e| anyhow::anyhow!("bench subnet: {e}"))?;
    let exe = std::env::current_exe()?;
    let driver = default_log_driver(&exe);
    if !driver.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p berth-logd`",
            driver.display()
        );
    }
    cfg.log_driver = LogDriver::Binary(driver);
    let rt = ContainerdRuntime::connect(cfg).await?;
    if args.rss_only {
        return rss_only(rt).await;
    }
    for c in rt.list().await? {
        rt.remove(&c.id).await?;
    }
    let tar = args.state_dir.join("bench-image.tar");
    std::fs::create_dir_all(&args.state_dir)?;
    ocibuild::testapp_image(&binary)?.write_oci_layout(IMAGE, &tar)?;
    drop(binary);
    rt.import(&tar).await?;
    rt.ensure_image(IMAGE, PullPolicy::IfNotPresent).await?;
    let bench = Bench {
        rt,
        socket: args.socket.clone(),
        namespace: args.namespace.clone(),
    };

    // Warm-up: first starts page in the shim and runc binaries.
    for i in 0..3 {
        let (_, id) = bench.ours(format!("warm{i}")).await?;
        bench.cleanup(&id).await;
        let cid = format!("ctr-warm-{i}");
        bench.ctr(&cid).await?;
        bench.cleanup(&cid).await;
        bench.ctr_process().await?;
    }
    steps.0.lock().unwrap_or_else(|p| p.into_inner()).clear();

    let (mut ours_seq, mut ctr_seq, mut proc_seq) = (Vec::new(), Vec::new(), Vec::new());
    let mut seccomp_seq = Vec::new();
    for i in 0..args.sequential {
        // Which of the two goes first alternates, so neither always starts
        // on the heels of the other's cleanup.
        let cid = format!("ctr-seq-{i}");
        if i % 2 == 1 {
            ctr_seq.push(bench.ctr(&cid).await?);
            bench.cleanup(&cid).await;
        }
        let (d, id) = bench.ours(format!("seq{i}")).await?;
        ours_seq.push(d);
        bench.cleanup(&id).await;
        if i % 2 == 0 {
            ctr_seq.push(bench.ctr(&cid).await?);
            bench.cleanup(&cid).await;
        }
        proc_seq.push(bench.ctr_process().await?);
        let cid = format!("ctr-seccomp-{i}");
        seccomp_seq.push(bench.ctr_seccomp(&cid).await?);
        bench.cleanup(&cid).await;
    }
    let step_report = steps_table(&steps.0.lock().unwrap_or_else(|p| p.into_inner()));

    let (mut ours_conc, mut ctr_conc, mut proc_conc) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..args.rounds {
        let starts = (0..args.concurrency).map(|i| bench.ours(format!("conc{r}-{i}")));
        let results = futures::future::join_all(starts).await;
        let mut ids = Vec::new();
        for res in results {
            let (d, id) = res?;
            ours_conc.push(d);
            ids.push(id);
        }
        futures::future::join_all(ids.iter().map(|id| bench.cleanup(id))).await;
        let cids: Vec<String> = (0..args.concurrency)
            .map(|i| format!("ctr-conc-{r}-{i}"))
            .collect();
        let results = futures::future::join_all(cids.iter().map(|c| bench.ctr(c))).await;
        for res in results {
            ctr_conc.push(res?);
        }
        futures::future::join_all(cids.iter().map(|id| bench.cleanup(id))).await;
        let results =
            futures::future::join_all((0..args.concurrency).map(|_| bench.ctr_process())).await;
        for res in results {
            proc_conc.push(res?);
        }
    }

    let (mut bridged, mut hosted) = (Vec::new(), Vec::new());
    for i in 0..args.bridge_starts {
        let port = BENCH_FIRST_HOST_PORT + u32::try_from(i)?;
        let (d, id) = bench.ours_bridged(format!("br{i}"), port).await?;
        bridged.push(d);
        bench.cleanup(&id).await;
        let (d, id) = bench.ours(format!("ho{i}")).await?;
        hosted.push(d);
        bench.cleanup(&id).await;
    }

    // Resident memory of a fresh process holding the runtime, as an agent
    // would be, with 20 containers up.
    let out = tokio::process::Command::new(&exe)
        .arg("--socket")
        .arg(&args.socket)
        .args(["--namespace", &args.namespace, "--rss-only", "--state-dir"])
        .arg(&args.state_dir)
        .output()
        .await?;
    if !out.status.success() {
        bail!("rss run failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let rss_report = String::from_utf8_lossy(&out.stdout).to_string();

    let ctr_version = first_line_of("ctr", &["--version"]);
    // The seccomp comparison reuses the sequential Berth and ctr-process
    // samples: each round ran all of them.
    let mut ours_again = ours_seq.clone();
    let mut proc_again = proc_seq.clone();
    let comparisons = [
        Comparison::new(
            format!("{} sequential", args.sequential),
            &mut ours_seq,
            &mut ctr_seq,
            &mut proc_seq,
        ),
        Comparison::new(
            format!("{} concurrent x {} rounds", args.concurrency, args.rounds),
            &mut ours_conc,
            &mut ctr_conc,
            &mut proc_conc,
        ),
        Comparison::new(
            format!(
                "{} sequential, against `ctr run --seccomp` (for comparison only)",
                args.sequential
            ),
            &mut ours_again,
            &mut seccomp_seq,
            &mut proc_again,
        ),
    ];
    let mut table = String::new();
    table.push_str(
        "| case | Berth p50 ms | Berth p95 ms | `ctr run` p50 ms | `ctr run` p95 ms | `ctr version` p50 ms | `ctr version` p95 ms | `ctr run` minus `ctr version` p50 ms | same, p95 ms | raw p50 ratio | p50 ratio without ctr's process | met (at most 1.1x) |\n",
    );
    table.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
    for c in &comparisons {
        table.push_str(&c.row());
    }
    if !bridged.is_empty() {
        let (b50, b95, h50, h95) = (
            pct(&mut bridged, 0.5),
            pct(&mut bridged, 0.95),
            pct(&mut hosted, 0.5),
            pct(&mut hosted, 0.95),
        );
        table.push_str(&format!(
            "\nBridge mode against host mode, both through berth-agent's runtime, interleaved:\n\n\
             | case | bridge p50 ms | bridge p95 ms | host p50 ms | host p95 ms | p50 ratio | bridge overhead p50 ms |\n\
             |---|---:|---:|---:|---:|---:|---:|\n\
             | {n} sequential | {} | {} | {} | {} | {:.2}x | {} |\n",
            ms(b50),
            ms(b95),
            ms(h50),
            ms(h95),
            ratio(b50, h50),
            ms(b50.saturating_sub(h50)),
            n = args.bridge_starts,
        ));
    }
    println!("containerd start latency (create+start, image cached), {ctr_version}");
    print!("{table}");
    println!("\nBerth's sequential starts, step by step:\n{step_report}");
    print!("{rss_report}");
    if let Some(path) = &args.docs {
        write_docs(path, &args, &ctr_version, &table, &step_report, &rss_report)?;
        println!("wrote the runtime section of {}", path.display());
    }
    Ok(())
}

/// p50 and p95 of each step of Berth's create and start, in step order.
fn steps_table(steps: &[(String, Vec<Duration>)]) -> String {
    let mut out = String::from("| step | p50 ms | p95 ms |\n|---|---:|---:|\n");
    let mut sum = Duration::ZERO;
    for (name, samples) in steps {
        let mut samples = samples.clone();
        let p = percentiles(&mut samples);
        sum += p.p50;
        out.push_str(&format!("| {name} | {} | {} |\n", ms(p.p50), ms(p.p95)));
    }
    out.push_str(&format!("| sum of the p50s | {} | |\n", ms(sum)));
    out
}

async fn rss_only(rt: ContainerdRuntime) -> anyhow::Result<()> {
    let bench = Bench {
        rt,
        socket: PathBuf::new(),
        namespace: String::new(),
    };
    let mut ids = Vec::new();
    for i in 0..20 {
        let (_, id) = bench.ours(format!("rss{i}")).await?;
        ids.push(id);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let me = memory_kib("self");
    let drivers: Vec<Memory> = std::fs::read_dir("/proc")?
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_string_lossy().to_string();
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).to_string();
            (cmd.contains(berth_agent::logs::DRIVER_NAME)
                && ids.iter().any(|id| cmd.contains(id.as_str())))
            .then(|| memory_kib(&pid))
        })
        .collect();
    futures::future::join_all(ids.iter().map(|id| bench.cleanup(id))).await;
    println!(
        "agent-like process with 20 running containers: RSS {} MiB ({} MiB anonymous, {} MiB file-backed)",
        mib(me.rss),
        mib(me.anon),
        mib(me.rss - me.anon.min(me.rss)),
    );
    if !drivers.is_empty() {
        let n = drivers.len() as u64;
        let sum = |f: fn(&Memory) -> u64| drivers.iter().map(f).sum::<u64>();
        println!(
            "berth-logd processes (children of the shims, not of the agent): {n}, per container RSS {} MiB, PSS {} MiB ({} MiB anonymous); all {n}: RSS {} MiB, PSS {} MiB",
            mib(sum(|m| m.rss) / n),
            mib(sum(|m| m.pss) / n),
            mib(sum(|m| m.anon) / n),
            mib(sum(|m| m.rss)),
            mib(sum(|m| m.pss)),
        );
    }
    Ok(())
}

fn first_line_of(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .unwrap_or_default()
}

fn write_docs(
    path: &std::path::Path,
    args: &Args,
    ctr_version: &str,
    table: &str,
    steps: &str,
    rss: &str,
) -> anyhow::Result<()> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':').map(|(_, v)| v.trim().to_string()))
        })
        .unwrap_or_default();
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cgroup = if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "v2"
    } else {
        "v1"
    };
    let date = first_line_of("date", &["-u"]);
    let runc = first_line_of("runc", &["--version"]);
    let rss_lines: String = rss.lines().map(|l| format!("- {l}\n")).collect();
    let reproduce = [
        "set -a; eval \"$(sudo scripts/test-env.sh)\"; set +a   # private containerd (or use any socket)",
        "RUSTFLAGS='-C target-feature=+crt-static' cargo build --release -p berth-testapp \\",
        "    --target x86_64-unknown-linux-gnu --target-dir target/testapp-static",
        "cargo build --release -p berth-agent -p berth-logd",
        "sudo ./target/release/berth-agent-bench --socket \"$BERTH_TEST_CONTAINERD_SOCK\" --docs docs/benchmarks.md",
    ]
    .join("\n");
    let section = format!(
        "<!-- runtime:begin -->\n\
## containerd runtime: `berth-agent-bench`\n\n\
Measured {date} (`date -u`) by `berth-agent-bench`, which writes this section.\n\n\
### What is measured\n\n\
- Start latency: from the `Runtime::create` call (image already in containerd, pull policy \
`if-not-present`) to `Runtime::start` returning the PID of a running process (what a task's \
actor waits for between its assignment and reporting RUNNING), against `ctr run -d --net-host` \
of the same image (the static `berth-testapp`, `sleep` mode) on the same containerd and \
namespace, timed as the wall-clock of the `ctr` process. `--net-host` because a host-mode \
Berth task gets no network namespace either. The last row adds `--seccomp` to ctr's run \
(containerd's default allow-list; every Berth container runs under an allow-list of the same \
shape, which runc compiles and loads at task create) in the same sequential rounds; the \
target is checked on the first two rows. {seq} sequential starts, the two alternating \
which goes first, then {rounds} rounds of {conc} concurrent starts each. Each container is \
removed (untimed) before the next.\n\
- The `ctr` process's own start: in every round, `ctr --address SOCK version` (start the CLI, \
dial containerd, one trivial call), which `ctr run` pays too and Berth's running, connected \
runtime does not. *Without ctr's process* subtracts it from the same round's `ctr run`, sample \
by sample, before taking percentiles; the target (at most {target}x) is checked on that ratio.\n\
- Steps: the runtime's timing events (target `berth_agent::timing`, debug level) for the \
sequential starts, each step measured from the previous one.\n\
- Bridge-mode overhead: {bridge} bridge-mode starts (the task's netns, the CNI `loopback`, \
`bridge`, `host-local`, `portmap` and `firewall` plugins, 8080 published on a host port) each \
followed by a host-mode start, both through the runtime and timed the same way.\n\
- Memory: a fresh process holding a `ContainerdRuntime` (what the agent holds), with 20 \
containers it started still running, and those containers' `berth-logd` log drivers (children \
of the shims); RSS, PSS and anonymous memory from /proc/PID/smaps_rollup.\n\n\
### Machine\n\n\
| nproc | CPU | Memory | Kernel | cgroup | containerd | runc |\n\
|---:|---|---|---|---|---|---|\n\
| {nproc} | {cpu} | {mem_gib:.1} GiB | Linux {kernel} | {cgroup} | {ctr_version} | {runc} |\n\n\
The cores are shared with other work on this machine (builds by other engineers may run \
at the same time), so the p95 columns are noisy.\n\n\
### Results\n\n\
{table}\n\
Berth's sequential starts, step by step:\n\n\
{steps}\n\
{rss_lines}\n\
### Reproduce\n\n\
```sh\n{reproduce}\n```\n\n\
`cargo run --release -p berth-agent --bin berth-agent-bench -- --socket ...` works as well; \
the bench needs the release `berth-logd` binary beside it (the log driver). It imports its \
image from a tarball it builds, so no registry is involved, and uses the `{ns}` namespace.\n\
<!-- runtime:end -->\n",
        seq = args.sequential,
        bridge = args.bridge_starts,
        rounds = args.rounds,
        conc = args.concurrency,
        kernel = kernel.trim(),
        ns = args.namespace,
        target = TARGET_RATIO,
    );
    let current = std::fs::read_to_string(path).unwrap_or_default();
    let updated = match (
        current.find("<!-- runtime:begin -->"),
        current.find("<!-- runtime:end -->"),
    ) {
        (Some(a), Some(b)) if b > a => {
            let end = b + "<!-- runtime:end -->".len();
            let rest = current[end..].strip_prefix('\n').unwrap_or(&current[end..]);
            format!("{}{section}{rest}", &current[..a])
        }
        _ => {
            let sep = if current.is_empty() || current.ends_with("\n\n") {
                ""
            } else if current.ends_with('\n') {
                "\n"
            } else {
                "\n\n"
            };
            format!("{current}{sep}{section}")
        }
    };
    std::fs::write(path, updated).with_context(|| format!("write {}", path.display()))?;
    Ok(())
}
