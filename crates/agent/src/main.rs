//! berth-agent. `berth-agent --server ... --token ... --data-dir DIR` joins
//! the cluster (or reuses the identity in DIR), keeps its certificate fresh,
//! holds the session with the control plane and runs the tasks it assigns;
//! `berth-agent image import FILE` loads images on air-gapped hosts.
//! containerd's shim starts `berth-logd`, shipped beside this binary, per
//! container.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use berth_agent::host::HostInfo;
use berth_agent::runner::{Runner, RunnerConfig};
use berth_agent::session::{self, SessionConfig};
use berth_agent::store::Store;
use berth_agent::{ContainerdConfig, ContainerdRuntime, PullPolicy};
use berth_daemon::LogFormat;
use clap::{CommandFactory, Parser, Subcommand};
use tokio::sync::watch;

/// Every flag can also be set as a `BERTH_*` environment variable or as a
/// key in the TOML file given with --config (flags > environment > file).
#[derive(Parser)]
#[command(
    name = "berth-agent",
    about = "Berth agent: runs tasks through containerd"
)]
struct Cli {
    /// TOML file whose keys are flag names (`server = "h:7400"`,
    /// `attribute = { zone = "a" }`); /etc/berth/agent.toml when installed.
    #[arg(long, global = true, env = "BERTH_CONFIG")]
    config: Option<PathBuf>,
    /// containerd's socket.
    #[arg(
        long,
        env = "BERTH_CONTAINERD_SOCK",
        default_value = "/run/containerd/containerd.sock",
        global = true
    )]
    containerd_socket: PathBuf,
    /// containerd namespace the agent owns.
    #[arg(
        long,
        env = "BERTH_CONTAINERD_NAMESPACE",
        default_value = "berth",
        global = true
    )]
    namespace: String,
    /// Where the agent keeps logs and per-container files.
    #[arg(
        long,
        env = "BERTH_AGENT_STATE_DIR",
        default_value = "/var/lib/berth-agent",
        global = true
    )]
    state_dir: PathBuf,
    /// Control-plane servers, comma-separated HOST:PORT.
    #[arg(long, env = "BERTH_SERVER", value_delimiter = ',')]
    server: Vec<String>,
    /// Join token from `berth activation create`; needed to register. It
    /// has served once the agent is registered: prefer --token-file, which
    /// the agent removes then.
    #[arg(
        long,
        env = "BERTH_JOIN_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    token: Option<String>,
    /// A file (mode 0600) holding the join token; removed by the agent once
    /// it is registered, so the token does not stay on the host. A missing
    /// file is fine once registered.
    #[arg(long, env = "BERTH_JOIN_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Where the agent keeps its identity (key mode 0600, certificate).
    #[arg(
        long,
        env = "BERTH_AGENT_DATA_DIR",
        default_value = "/var/lib/berth-agent/identity"
    )]
    data_dir: PathBuf,
    /// Cluster to join (refused if the token is for another one).
    #[arg(long, env = "BERTH_CLUSTER")]
    cluster: Option<String>,
    /// Attribute for placement, KEY=VALUE (repeatable).
    #[arg(
        long = "attribute",
        env = "BERTH_ATTRIBUTE",
        value_delimiter = ',',
        value_parser = parse_attribute
    )]
    attributes: Vec<(String, String)>,
    /// The address other hosts reach this one on, for service discovery
    /// (DNS, endpoints): the host-port endpoints of its tasks are at this
    /// IP. Default: the address its connection to the control plane comes
    /// from, as the server sees it (wrong behind NAT: set it there).
    #[arg(long, env = "BERTH_ADVERTISE_ADDRESS")]
    advertise_address: Option<std::net::IpAddr>,
    /// How often the agent checks its identity with the control plane.
    #[arg(long, env = "BERTH_PING_INTERVAL", default_value = "5s", value_parser = parse_interval)]
    ping_interval: Duration,
    /// Serve plain-HTTP /healthz (process up), /readyz (session with the
    /// leader up) and /metrics (Prometheus) here, e.g. 0.0.0.0:7481; the
    /// address is published to berthd's /sd/agents.
    #[arg(long, env = "BERTH_HEALTH_LISTEN")]
    health_listen: Option<std::net::SocketAddr>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "BERTH_LOG_FORMAT")]
    log_format: LogFormat,
    /// Registries (HOST:PORT) reached over plain HTTP, e.g. a private one on
    /// the local network; localhost and 127.0.0.1 always are.
    #[arg(
        long,
        env = "BERTH_INSECURE_REGISTRY",
        value_delimiter = ',',
        global = true
    )]
    insecure_registry: Vec<String>,
    /// How long a stopped task's containers and logs are kept before they
    /// are removed (ECS's task cleanup wait).
    #[arg(long, env = "BERTH_TASK_CLEANUP_WAIT", default_value = "10m", value_parser = berth_types::duration::parse_duration)]
    task_cleanup_wait: Duration,
    /// Import every image tarball (*.tar) in DIR at start, for hosts that
    /// cannot reach a registry.
    #[arg(long, env = "BERTH_IMPORT_DIR")]
    import_dir: Option<PathBuf>,
    /// When to pull task images: `if-not-present` (use a local image when
    /// there is one) or `always` (resolve the tag at every task start).
    #[arg(
        long,
        env = "BERTH_PULL_POLICY",
        default_value = "if-not-present",
        value_parser = parse_pull_policy
    )]
    pull_policy: PullPolicy,
    /// Host directories tasks may bind-mount (`host.sourcePath`),
    /// comma-separated; a path must be inside one of them. Unset: any path
    /// but the protected ones. Always refused: `/`, `/proc`, `/sys`,
    /// containerd's socket directory, `/run/containerd`,
    /// `/var/lib/containerd`, --state-dir, --data-dir, the --config file,
    /// the agent's binary, and any directory holding one of them.
    #[arg(
        long,
        env = "BERTH_ALLOWED_HOST_PATHS",
        value_delimiter = ',',
        global = true
    )]
    allowed_host_paths: Vec<PathBuf>,
    /// Most processes (threads count) one container may have; 0 for no
    /// limit.
    #[arg(long, env = "BERTH_PIDS_LIMIT", default_value_t = berth_agent::containerd::DEFAULT_PIDS_LIMIT, global = true)]
    pids_limit: u32,
    /// Where the CNI plugins are (`bridge`, `host-local`, `portmap`,
    /// `loopback`, and `firewall` when present): bridge- and task-mode tasks run
    /// them. Debian's containernetworking-plugins installs them here.
    #[arg(long, env = "BERTH_CNI_BIN_DIR", default_value = berth_agent::tasknet::DEFAULT_CNI_BIN_DIR, global = true)]
    cni_bin_dir: PathBuf,
    /// IPv4 subnet of bridge- and task-mode tasks (bridge `berth0`, which takes the
    /// first address as the tasks' gateway). The default is in 198.18.0.0/15,
    /// reserved for network benchmarks (RFC 2544): never a LAN's or the
    /// internet's, so it does not hide a network the host must reach.
    /// A change applies to tasks started afterwards; running tasks keep
    /// their address.
    #[arg(long, env = "BERTH_BRIDGE_SUBNET", default_value = berth_agent::tasknet::DEFAULT_BRIDGE_SUBNET, global = true)]
    bridge_subnet: berth_agent::tasknet::cni::Subnet,
    /// The host bridge bridge- and task-mode tasks are attached to. One subnet per
    /// bridge: agents sharing a host (tests, several clusters) each need
    /// their own bridge for their own subnet.
    #[arg(long, env = "BERTH_BRIDGE_NAME", default_value = berth_agent::tasknet::DEFAULT_BRIDGE, value_parser = parse_bridge_name, global = true)]
    bridge_name: String,
    /// Berth's DNS for bridge- and task-mode tasks: IP[,IP...] (up to 3)
    /// of berthd servers answering DNS on port 53 (`berthd --dns-listen
    /// IP:53`) at addresses the tasks can route to (not loopback). Their
    /// containers' resolv.conf then names only these, searching
    /// `CLUSTER.berth` first, so a bare service name resolves to its
    /// endpoints; berthd forwards other names upstream. Unset: the host's
    /// resolvers. Applies to containers created or restarted afterwards.
    #[arg(long, env = "BERTH_TASK_DNS", value_delimiter = ',', global = true)]
    task_dns: Vec<std::net::IpAddr>,
    /// Log filter, e.g. `info` or `berth_agent=debug`.
    #[arg(long, env = "BERTH_LOG", default_value = "info", global = true)]
    log: String,
    #[command(subcommand)]
    command: Option<Command>,
}

/// A Linux interface name: 1 to 15 of letters, digits, `_`, `-` and `.`.
fn parse_bridge_name(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text.len() <= 15
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
    if ok {
        Ok(text.to_string())
    } else {
        Err(format!(
            "{text:?} is not an interface name: use 1 to 15 letters, digits, '_', '-' or '.'"
        ))
    }
}

fn parse_attribute(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

fn parse_pull_policy(text: &str) -> Result<PullPolicy, String> {
    PullPolicy::parse(text).ok_or_else(|| format!("{text:?} is not `if-not-present` or `always`"))
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    berth_types::duration::parse_duration(text).and_then(|d| {
        if d.is_zero() {
            Err("must be more than 0s".into())
        } else {
            Ok(d)
        }
    })
}

#[derive(Subcommand)]
enum Command {
    /// Image operations.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Probe an agent's health endpoint; exits 0 when it answers 200.
    Health {
        #[arg(long, default_value = "http://127.0.0.1:7481/readyz")]
        url: String,
    },
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Import an OCI-layout or docker-archive tarball (`docker save`).
    Import { file: PathBuf },
    /// Package one static binary as an OCI image tarball (no registry, no
    /// Docker): the binary is the entrypoint, --cmd its default arguments.
    Pack {
        #[arg(long)]
        binary: PathBuf,
        /// Image name, e.g. localhost/berth/hello:1.
        #[arg(long)]
        tag: String,
        #[arg(long = "cmd", allow_hyphen_values = true)]
        cmd: Vec<String>,
        /// Where to write the OCI-layout tarball.
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    keep_malloc_small();
    if let Err(e) = berth_daemon::apply_config_file(&Cli::command(), &args) {
        eprintln!("berth-agent: {e}");
        return ExitCode::from(2);
    }
    let cli = Cli::parse();
    if let Err(e) = berth_daemon::init_logging(cli.log_format, &cli.log) {
        eprintln!("berth-agent: {e}");
        return ExitCode::from(2);
    }
    // Two workers are plenty for an agent's I/O-bound work, and fewer
    // threads mean fewer malloc arenas: the agent stays small on big hosts.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth-agent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-agent: {e}");
            ExitCode::FAILURE
        }
    }
}

/// glibc raises its mmap threshold after a large buffer (an image layer, a
/// big gRPC frame) is freed, and from then on keeps such buffers in the heap
/// instead of handing them back: the agent's resident memory ratchets up
/// (33 MiB with 20 tasks, measured). A fixed threshold, which glibc reads
/// only from the environment at start, keeps it near 25 MiB. glibc also
/// gives threads arenas of their own (up to 8 per core), each holding freed
/// memory apart; the agent's threads (two tokio workers, the blocking pool)
/// are mostly idle, and one arena for all of them saved 1.5-2 MiB with 20
/// tasks (docs/benchmarks.md). So the agent re-executes itself once with
/// both set; the pid stays the same. Either can be overridden from the
/// environment.
fn keep_malloc_small() {
    use std::os::unix::process::CommandExt;
    const VAR: &str = "MALLOC_MMAP_THRESHOLD_";
    const ARENAS: &str = "MALLOC_ARENA_MAX";
    if std::env::var_os(VAR).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut command = std::process::Command::new(exe);
    command.args(std::env::args_os().skip(1)).env(VAR, "131072");
    if std::env::var_os(ARENAS).is_none() {
        command.env(ARENAS, "1");
    }
    let error = command.exec();
    // Only reached when exec failed: run as we are.
    eprintln!("berth-agent: note: cannot re-execute with {VAR} set ({error}); continuing");
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut cfg = ContainerdConfig::new(&cli.containerd_socket, &cli.state_dir);
    cfg.namespace = cli.namespace;
    cfg.registry.insecure = cli.insecure_registry;
    cfg.pids_limit = cli.pids_limit;
    cfg.network.cni_bin_dir = cli.cni_bin_dir;
    cfg.network.subnet = cli.bridge_subnet;
    cfg.network.bridge = cli.bridge_name;
    berth_agent::tasknet::cni::check_task_dns(&cli.task_dns)
        .map_err(|e| anyhow::anyhow!("--task-dns: {e}"))?;
    if !cli.task_dns.is_empty() {
        tracing::info!(servers = ?cli.task_dns, "bridge- and task-mode tasks resolve names through Berth's DNS");
    }
    cfg.network.dns = cli.task_dns;
    cfg.host_paths.protect(&cli.data_dir);
    if let Some(config) = &cli.config {
        cfg.host_paths.protect(config);
    }
    cfg.host_paths
        .allow_only(&cli.allowed_host_paths)
        .map_err(anyhow::Error::msg)?;
    match cli.command {
        None => {
            // Before joining: an agent that cannot log its tasks should say
            // so now, not fail each task it is given.
            cfg.check_log_driver()?;
            join_and_run(
                JoinArgs {
                    import_dir: cli.import_dir,
                    health_listen: cli.health_listen,
                    servers: cli.server,
                    token: cli.token,
                    token_file: cli.token_file,
                    dir: cli.data_dir,
                    cluster: cli.cluster,
                    attributes: cli
                        .attributes
                        .into_iter()
                        .chain(cli.advertise_address.map(|ip| {
                            (
                                berth_types::endpoints::ADDRESS_ATTRIBUTE.to_string(),
                                ip.to_string(),
                            )
                        }))
                        // Where Prometheus finds this agent's /metrics
                        // (berthd's /sd/agents).
                        .chain(cli.health_listen.map(|addr| {
                            (
                                berth_types::monitoring::METRICS_ATTRIBUTE.to_string(),
                                addr.to_string(),
                            )
                        }))
                        .collect(),
                    ping_every: cli.ping_interval,
                    pull_policy: cli.pull_policy,
                    cleanup_wait: cli.task_cleanup_wait,
                },
                cfg,
            )
            .await?
        }
        Some(Command::Health { url }) => {
            berth_daemon::probe(&url)
                .await
                .map_err(|e| anyhow::anyhow!("unhealthy: {e}"))?;
        }
        Some(Command::Image {
            command:
                ImageCommand::Pack {
                    binary,
                    tag,
                    cmd,
                    out,
                },
        }) => {
            let data = std::fs::read(&binary)
                .map_err(|e| anyhow::anyhow!("cannot read --binary {}: {e}", binary.display()))?;
            let name = binary
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "app".into());
            let image = berth_agent::ocibuild::single_binary_image(&name, &data, &cmd)?;
            image.write_oci_layout(&tag, &out)?;
            println!("{tag}\t{}", image.manifest_digest);
        }
        Some(Command::Image {
            command: ImageCommand::Import { file },
        }) => {
            let runtime = ContainerdRuntime::connect(cfg).await?;
            for img in runtime.import(&file).await? {
                println!("{}\t{}", img.name, img.digest);
            }
        }
    }
    Ok(())
}

struct JoinArgs {
    import_dir: Option<PathBuf>,
    health_listen: Option<std::net::SocketAddr>,
    servers: Vec<String>,
    token: Option<String>,
    token_file: Option<PathBuf>,
    dir: PathBuf,
    cluster: Option<String>,
    attributes: Vec<(String, String)>,
    ping_every: Duration,
    pull_policy: PullPolicy,
    cleanup_wait: Duration,
}

/// Registers (or reuses the stored identity), then keeps the identity
/// fresh, the session up and the tasks running, until SIGTERM or Ctrl-C.
/// Exiting never stops a task's containers: the next start takes them over.
async fn join_and_run(args: JoinArgs, containerd: ContainerdConfig) -> anyhow::Result<()> {
    let endpoints: Vec<String> = args
        .servers
        .into_iter()
        .filter(|s| !s.trim().is_empty())
        .collect();
    if endpoints.is_empty() {
        anyhow::bail!("no control plane given: pass --server HOST:PORT[,HOST:PORT...]");
    }
    let attributes: BTreeMap<String, String> = args.attributes.into_iter().collect();
    let health = berth_daemon::HealthState::default();
    if let Some(addr) = args.health_listen {
        let bound = berth_daemon::serve_health(addr, health.clone())
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on --health-listen {addr}: {e}"))?;
        tracing::info!(%bound, "health endpoint serving");
    }
    // Opened first: a second agent on the same --data-dir is refused here,
    // before it can touch anybody's containers.
    let store = Store::open(&args.dir.join("tasks"))?;
    let token = match &args.token_file {
        Some(file) => read_token_file(file)?,
        None => args.token,
    };
    let (identity_tx, identity_rx) = watch::channel(None);
    let config = berth_client::join::AgentLoopConfig {
        endpoints: endpoints.clone(),
        dir: args.dir,
        token,
        token_file: args.token_file,
        hostname: berth_agent::host::hostname(),
        attributes: attributes.clone(),
        cluster: args.cluster,
        ping_every: args.ping_every,
        updates: Some(identity_tx),
    };
    // The identity loop is ended by dropping it (below), not by its own
    // shutdown future.
    let identity = berth_client::join::run_agent_identity_loop(config, std::future::pending());
    let tasks = run_tasks(
        containerd,
        store.clone(),
        RunnerConfig {
            pull_policy: args.pull_policy,
            cleanup_wait: args.cleanup_wait,
            ..RunnerConfig::default()
        },
        Control {
            endpoints,
            attributes,
            identity: identity_rx,
            health,
        },
        args.import_dir,
    );
    let result = tokio::select! {
        r = identity => r.map_err(anyhow::Error::from),
        r = tasks => r,
        () = shutdown_signal() => {
            tracing::info!("shutting down; task containers keep running");
            Ok(())
        }
    };
    if let Err(e) = store.flush().await {
        tracing::warn!(error = %e, "cannot flush the task store");
    }
    result
}

/// The join token in `file`; `None` when the file is gone (the agent
/// removes it once registered).
fn read_token_file(file: &std::path::Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(file) {
        Ok(text) => {
            let token = text.trim().to_string();
            if token.is_empty() {
                anyhow::bail!("--token-file {} is empty; put the join token from `berth activation create` in it", file.display());
            }
            Ok(Some(token))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => anyhow::bail!("cannot read --token-file {}: {e}", file.display()),
    }
}

/// How often containers' stats are sampled for `/metrics`: a scrape
/// interval's worth, so a 15 s scrape sees fresh figures.
const STATS_EVERY: Duration = Duration::from_secs(10);

/// What the session with the control plane needs.
struct Control {
    endpoints: Vec<String>,
    attributes: BTreeMap<String, String>,
    identity: watch::Receiver<Option<berth_client::join::AgentIdentity>>,
    health: berth_daemon::HealthState,
}

/// containerd (retried until it answers), then the runner and the session.
async fn run_tasks(
    containerd: ContainerdConfig,
    store: Store,
    runner_config: RunnerConfig,
    control: Control,
    import_dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    let Control {
        endpoints,
        attributes,
        identity,
        health,
    } = control;
    let mut delay = Duration::from_millis(500);
    let runtime = loop {
        match ContainerdRuntime::connect(containerd.clone()).await {
            Ok(runtime) => break runtime,
            Err(e) => {
                tracing::error!(error = %e, retry_in_ms = delay.as_millis() as u64, "containerd is not available; tasks wait for it");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    };
    if let Some(dir) = import_dir {
        import_images(&runtime, &dir).await;
    }
    let host = HostInfo::detect(runtime.version(), &attributes);
    tracing::info!(
        cpu_units = host.cpu_total,
        memory_mib = host.memory_total_mib,
        "host resources"
    );
    let mut runner_config = runner_config;
    runner_config.secrets = Some(Arc::new(berth_agent::secrets::ControlSecrets {
        endpoints: endpoints.clone(),
        identity: identity.clone(),
    }));
    let (runner, handle) = Runner::new(Arc::new(runtime), store, runner_config)?;
    let (board, sampled) = (handle.board().clone(), handle.runtime().clone());
    tokio::spawn(async move {
        loop {
            berth_agent::exporter::metrics()
                .sample(&board, sampled.as_ref())
                .await;
            tokio::time::sleep(STATS_EVERY).await;
        }
    });
    health.set_metrics(Arc::new(|| berth_agent::exporter::metrics().render()));
    let session = session::run(
        SessionConfig {
            endpoints,
            host,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            health,
        },
        identity,
        handle,
    );
    tokio::join!(runner.run(), session);
    Ok(())
}

/// Imports the tarballs in `dir`; a bad one is logged and skipped so that
/// it cannot keep the agent from running the tasks it can.
async fn import_images(runtime: &ContainerdRuntime, dir: &std::path::Path) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot read the image import dir");
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("tar") {
            continue;
        }
        match runtime.import(&path).await {
            Ok(images) => {
                for img in images {
                    tracing::info!(file = %path.display(), image = %img.name, digest = %img.digest, "image imported");
                }
            }
            Err(e) => tracing::warn!(file = %path.display(), error = %e, "image not imported"),
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
