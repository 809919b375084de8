//! berth-agent-bench: container start latency through `ContainerdRuntime`
//! versus `ctr run -d`, same image, same containerd, interleaved in one run;
//! then bridge-mode starts (a netns, the CNI plugins and a published port)
//! against host-mode ones; then the runtime's resident memory with 20
//! running containers.
//!
//!   eval "$(scripts/test-env.sh)"   # or any containerd socket
//!   cargo run --release -p berth-agent --bin berth-agent-bench -- \
//!       --socket "$BERTH_TEST_CONTAINERD_SOCK" --testapp PATH_TO_STATIC_BERTH_TESTAPP

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
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
    #[arg(long, default_value_t = 50)]
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

fn rss_kib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
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

    async fn ctr(&self, id: &str) -> anyhow::Result<Duration> {
        let t = Instant::now();
        let out = tokio::process::Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args([
                "-n",
                &self.namespace,
                "run",
                "-d",
                IMAGE,
                id,
                "/berth-testapp",
                "sleep",
            ])
            .output()
            .await
            .context("run ctr")?;
        let took = t.elapsed();
        if !out.status.success() {
            bail!("ctr run failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(took)
    }

    async fn cleanup(&self, id: &str) {
        if let Err(e) = self.rt.remove(id).await {
            eprintln!("cleanup {id}: {e}");
        }
    }
}
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
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
    let agent = exe.with_file_name("berth-agent");
    if !agent.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p berth-agent`",
            agent.display()
        );
    }
    cfg.log_driver = LogDriver::Binary(agent);
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
    }

    let (mut ours_seq, mut ctr_seq) = (Vec::new(), Vec::new());
    for i in 0..args.sequential {
        let (d, id) = bench.ours(format!("seq{i}")).await?;
        ours_seq.push(d);
        bench.cleanup(&id).await;
        let cid = format!("ctr-seq-{i}");
        ctr_seq.push(bench.ctr(&cid).await?);
        bench.cleanup(&cid).await;
    }

    let (mut ours_conc, mut ctr_conc) = (Vec::new(), Vec::new());
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
    let mut table = String::new();
    table.push_str(
        "| case | berth-agent p50 ms | berth-agent p99 ms | ctr run -d p50 ms | ctr run -d p99 ms | p50 ratio |\n",
    );
    table.push_str("|---|---:|---:|---:|---:|---:|\n");
    for (label, ours, ctr) in [
        (
            format!("{} sequential", args.sequential),
            &mut ours_seq,
            &mut ctr_seq,
        ),
        (
            format!("{} concurrent x {} rounds", args.concurrency, args.rounds),
            &mut ours_conc,
            &mut ctr_conc,
        ),
    ] {
        let (o50, o99, c50, c99) = (
            pct(ours, 0.5),
            pct(ours, 0.99),
            pct(ctr, 0.5),
            pct(ctr, 0.99),
        );
        table.push_str(&format!(
            "| {label} | {} | {} | {} | {} | {:.2}x |\n",
            ms(o50),
            ms(o99),
            ms(c50),
            ms(c99),
            o50.as_secs_f64() / c50.as_secs_f64().max(1e-9)
        ));
    }
    if !bridged.is_empty() {
        let (b50, b99, h50, h99) = (
            pct(&mut bridged, 0.5),
            pct(&mut bridged, 0.99),
            pct(&mut hosted, 0.5),
            pct(&mut hosted, 0.99),
        );
        table.push_str(&format!(
            "\nBridge mode against host mode, both through berth-agent's runtime, interleaved:\n\n\
             | case | bridge p50 ms | bridge p99 ms | host p50 ms | host p99 ms | p50 ratio | bridge overhead p50 ms |\n\
             |---|---:|---:|---:|---:|---:|---:|\n\
             | {n} sequential | {} | {} | {} | {} | {:.2}x | {} |\n",
            ms(b50),
            ms(b99),
            ms(h50),
            ms(h99),
            b50.as_secs_f64() / h50.as_secs_f64().max(1e-9),
            ms(b50.saturating_sub(h50)),
            n = args.bridge_starts,
        ));
    }
    println!("containerd start latency (create+start, image cached), {ctr_version}");
    print!("{table}");
    print!("{rss_report}");
    if let Some(path) = &args.docs {
        write_docs(path, &args, &ctr_version, &table, &rss_report)?;
        println!("wrote the runtime section of {}", path.display());
    }
    Ok(())
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
    let self_rss = rss_kib("self");
    let driver_rss: Vec<u64> = std::fs::read_dir("/proc")?
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_string_lossy().to_string();
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).to_string();
            (cmd.contains("--berth-log-driver") && ids.iter().any(|id| cmd.contains(id.as_str())))
                .then(|| rss_kib(&pid))
        })
        .collect();
    futures::future::join_all(ids.iter().map(|id| bench.cleanup(id))).await;
    println!(
        "agent-like process RSS with 20 running containers: {:.1} MiB",
        self_rss as f64 / 1024.0
    );
    if !driver_rss.is_empty() {
        println!(
            "log driver processes: {} x avg {:.1} MiB RSS (children of the shims, not of the agent)",
            driver_rss.len(),
            driver_rss.iter().sum::<u64>() as f64 / driver_rss.len() as f64 / 1024.0
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
        "cargo build --release -p berth-agent",
        "sudo ./target/release/berth-agent-bench --socket \"$BERTH_TEST_CONTAINERD_SOCK\" --docs docs/benchmarks.md",
    ]
    .join("\n");
    let section = format!(
        "<!-- runtime:begin -->\n\
## containerd runtime: `berth-agent-bench`\n\n\
Measured {date} (`date -u`) by `berth-agent-bench`, which writes this section.\n\n\
### What is measured\n\n\
- Start latency: from the `Runtime::create` call (image already in containerd, pull policy \
`if-not-present`) to `Runtime::start` returning the PID of a running process, against \
`ctr run -d` of the same image (the static `berth-testapp`, `sleep` mode) on the same \
containerd and namespace, timed as the wall-clock of the `ctr` process. The two are \
interleaved start by start; {seq} sequential starts, then {rounds} rounds of {conc} \
concurrent starts each. Each container is removed (untimed) before the next.\n\
- Bridge-mode overhead: {bridge} bridge-mode starts (the task's netns, the CNI `loopback`, \
`bridge`, `host-local`, `portmap` and `firewall` plugins, 8080 published on a host port) each \
followed by a host-mode start, both through the runtime and timed the same way.\n\
- Memory: a fresh process holding a `ContainerdRuntime` (what the agent holds), with 20 \
containers it started still running; `VmRSS` from /proc. The per-container log drivers \
are separate processes, children of the shims.\n\n\
### Machine\n\n\
| nproc | CPU | Memory | Kernel | cgroup | containerd | runc |\n\
|---:|---|---|---|---|---|---|\n\
| {nproc} | {cpu} | {mem_gib:.1} GiB | Linux {kernel} | {cgroup} | {ctr_version} | {runc} |\n\n\
The cores are shared with other work on this machine (builds by other engineers may run \
at the same time), so the p99 columns are noisy.\n\n\
### Results\n\n\
{table}\n\
Targets: p50 within 1.2x of `ctr` (ratio column); agent RSS under 30 MiB.\n\n\
{rss_lines}\n\
### Reproduce\n\n\
```sh\n{reproduce}\n```\n\n\
`cargo run --release -p berth-agent --bin berth-agent-bench -- --socket ...` works as well; \
the bench needs the release `berth-agent` binary beside it (the log driver). It imports its \
image from a tarball it builds, so no registry is involved, and uses the `{ns}` namespace.\n\
<!-- runtime:end -->\n",
        seq = args.sequential,
        bridge = args.bridge_starts,
        rounds = args.rounds,
        conc = args.concurrency,
        kernel = kernel.trim(),
        ns = args.namespace,
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
