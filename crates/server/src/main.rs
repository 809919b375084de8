use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use berth_daemon::{init_logging, LogFormat};
use berth_server::{parse_initial_cluster, tls, ServeOptions, Server};
use clap::{Args, CommandFactory, Parser, Subcommand};

mod data_key;

// glibc malloc's chunk consolidation was a fifth of the CPU on the write
// path (decoding and encoding many small strings per task definition).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// berthd: a Berth control-plane server.
///
/// Every flag can also be set as a `BERTH_*` environment variable or as a
/// key in the TOML file given with --config (flags > environment > file).
#[derive(Parser)]
#[command(name = "berthd", version, about)]
struct Cli {
    /// TOML file whose keys are flag names (`node_id = 1`, `listen = "..."`).
    #[arg(long, global = true, env = "BERTH_CONFIG")]
    config: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "BERTH_LOG_FORMAT")]
    log_format: LogFormat,
    /// Log filter, e.g. `info` or `berth_server=debug,openraft=info`.
    #[arg(
        long,
        global = true,
        default_value = "info,openraft=warn",
        env = "BERTH_LOG"
    )]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one server of a cluster.
    Serve(ServeArgs),
    /// Run a single-server development cluster in ./.berth.
    Dev(DevArgs),
    /// Create the cluster CA and server certificates; rotate the data key.
    #[command(subcommand)]
    Pki(PkiCommand),
    /// Disaster recovery after a majority of the servers was lost for good:
    /// make this stopped server the only voter of a one-server cluster,
    /// keeping everything in its data dir (like etcd's
    /// --force-new-cluster). Then add servers back with `berth server add`.
    Recover(berth_server::recovery::RecoverArgs),
    /// Create a new one-server cluster's data dir from a backup made with
    /// `berth server backup` (offline; the server must not run).
    Restore(berth_server::recovery::RestoreArgs),
    /// Probe a server's health endpoint; exits 0 when it answers 200 (for
    /// container health checks: the images have no curl).
    Health {
        #[arg(long, default_value = "http://127.0.0.1:7480/readyz")]
        url: String,
    },
}

#[derive(Subcommand)]
enum PkiCommand {
    /// Create a new cluster CA and bootstrap admin token in DIR (once per cluster).
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// Cluster id carried by every certificate (default: random).
        #[arg(long)]
        cluster_id: Option<String>,
    },
    /// Rotate the data key secrets are sealed with (add, promote, retire).
    ///
    /// The steps: add, promote, `berth secret rekey`, retire; after add,
    /// promote and retire give every server the new data.key and restart
    /// them one at a time (docs/operations.md, "The data key").
    #[command(subcommand)]
    DataKey(data_key::DataKeyCommand),
    /// Issue server NODE_ID's certificate into OUT, with the CA and admin token beside it.
    Issue {
        /// The directory `pki init` wrote.
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        node_id: u64,
        /// IP addresses and DNS names clients use to reach this server (repeat).
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        /// Where to write it: the server's --pki-dir (default DATA_DIR/pki).
        #[arg(long)]
        out: PathBuf,
    },
    /// Replace the cluster's root CA without downtime (docs/operations.md, "Rotate the CA").
    #[command(subcommand)]
    RotateCa(RotateCaStep),
}

#[derive(Subcommand)]
enum RotateCaStep {
    /// Make a new root, cross-signed by the current one; both are trusted until `finish`.
    Start {
        /// The directory `pki init` wrote (holds the root key).
        #[arg(long)]
        dir: PathBuf,
    },
    /// Drop the old root once every server was reissued and every agent renewed.
    Finish {
        /// The directory `pki init` wrote (holds the root key).
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Args)]
struct Tuning {
    /// Raft heartbeat interval.
    #[arg(long, default_value_t = 100, env = "BERTH_HEARTBEAT_MS")]
    heartbeat_ms: u64,
    /// Minimum election timeout (the maximum is 1.25 times this). A
    /// follower stands for election once it has heard nothing from the
    /// leader for openraft's lease (the maximum) plus a random timeout, so
    /// about 2.25-2.5 times this after a leader dies.
    #[arg(long, default_value_t = 150, env = "BERTH_ELECTION_TIMEOUT_MS")]
    election_timeout_ms: u64,
    /// Build a snapshot (and compact the log) after this many entries; also
    /// the most entries a restart applies again on top of the snapshot.
    #[arg(long, default_value_t = 10_000, env = "BERTH_SNAPSHOT_THRESHOLD")]
    snapshot_threshold: u64,
    /// Entries kept in the log behind a snapshot, for followers that lag a little.
    #[arg(long, default_value_t = 1_000, env = "BERTH_KEEP_LOGS")]
    keep_logs: u64,
    /// How long an API call may wait for a leader or a commit.
    #[arg(long, default_value_t = 10_000, env = "BERTH_REQUEST_TIMEOUT_MS")]
    request_timeout_ms: u64,
    /// Lifetime of the client certificates issued to agents (e.g. 7d, 12h).
    #[arg(long, default_value = "7d", env = "BERTH_AGENT_CERT_LIFETIME")]
    agent_cert_lifetime: String,
    /// How often agents heartbeat; missing about three marks an instance
    /// DISCONNECTED (so does a session that ended and was not reopened
    /// within 2 s).
    #[arg(long, default_value = "5s", env = "BERTH_AGENT_HEARTBEAT")]
    agent_heartbeat: String,
    /// After a leader change, how long agents have to reconnect before any
    /// instance can be marked DISCONNECTED (default: four heartbeats).
    #[arg(long, env = "BERTH_AGENT_GRACE")]
    agent_grace: Option<String>,
    /// Serve plain-HTTP /healthz, /readyz, /metrics (Prometheus) and
    /// Prometheus service discovery (/sd/servers, /sd/agents) here (e.g.
    /// 127.0.0.1:7480).
    #[arg(long, env = "BERTH_HEALTH_LISTEN")]
    health_listen: Option<SocketAddr>,
    /// Answer DNS for the berth. zone here, UDP and TCP (e.g.
    /// 0.0.0.0:53 or 127.0.0.1:8600): SERVICE.CLUSTER.berth A records
    /// and _PORT._tcp.SERVICE.CLUSTER.berth SRV records of services'
    /// healthy tasks. Off unless set.
    #[arg(long, env = "BERTH_DNS_LISTEN")]
    dns_listen: Option<SocketAddr>,
    /// Where DNS queries for names outside berth. go (IP:PORT; default:
    /// the first nameserver in /etc/resolv.conf, port 53).
    #[arg(long, env = "BERTH_DNS_UPSTREAM")]
    dns_upstream: Option<SocketAddr>,
    /// The berth-agent binary offered at https://SERVER/downloads/berth-agent
    /// (default: berth-agent next to berthd); its log driver berth-logd,
    /// offered at /downloads/berth-logd, must be in the same directory.
    #[arg(long, env = "BERTH_AGENT_BINARY")]
    agent_binary: Option<PathBuf>,
    /// Unauthenticated calls (RegisterInstance, /downloads) allowed per
    /// second from one client address (IPv6: one /64); 0 turns the limit off.
    #[arg(long, default_value_t = 5.0, env = "BERTH_ANONYMOUS_RATE")]
    anonymous_rate: f64,
    /// Unauthenticated calls one address may make in a burst before
    /// --anonymous-rate applies (many hosts behind one NAT share it).
    #[arg(long, default_value_t = 20, env = "BERTH_ANONYMOUS_BURST")]
    anonymous_burst: u32,
    /// A connection that has not finished its TLS handshake by then is
    /// closed (e.g. 10s).
    #[arg(long, default_value = "10s", env = "BERTH_TLS_HANDSHAKE_TIMEOUT")]
    tls_handshake_timeout: String,
    /// Serve the ECS-compatible API here (HTTPS with this server's
    /// certificate; e.g. 0.0.0.0:7443), for `aws ecs --endpoint-url`,
    /// boto3 and the AWS SDKs, signed with keys from `berth auth token
    /// create --format aws`. Off unless set.
    #[arg(long, env = "BERTH_ECS_LISTEN")]
    ecs_listen: Option<SocketAddr>,
    /// Serve --ecs-listen as plain HTTP: only allowed on a loopback
    /// address (a local proxy terminating TLS, experiments).
    #[arg(long, env = "BERTH_ECS_PLAIN_HTTP")]
    ecs_plain_http: bool,
    /// The account id in the ECS API's ARNs (12 digits).
    #[arg(long, default_value = "000000000000", env = "BERTH_ECS_ACCOUNT_ID")]
    ecs_account_id: String,
}

#[derive(Args)]
struct ServeArgs {
    /// This server's id, unique in the cluster (1 or more).
    #[arg(long, env = "BERTH_NODE_ID")]
    node_id: u64,
    /// Where this server keeps its Raft log and state.
    #[arg(long, env = "BERTH_DATA_DIR")]
    data_dir: PathBuf,
    /// Address to listen on for API and Raft traffic.
    #[arg(long, env = "BERTH_LISTEN")]
    listen: SocketAddr,
    /// Address other servers and clients use to reach this one (default: --listen).
    #[arg(long, env = "BERTH_ADVERTISE")]
    advertise: Option<String>,
    /// Members that form a new cluster: ID=HOST:PORT,... Leave out on a server
    /// that will join an existing cluster with `berth server add`.
    #[arg(long, env = "BERTH_INITIAL_CLUSTER")]
    initial_cluster: Option<String>,
    /// The server's certificates, CA and admin token (default: DATA_DIR/pki).
    #[arg(long, env = "BERTH_PKI_DIR")]
    pki_dir: Option<PathBuf>,
    #[command(flatten)]
    tuning: Tuning,
}

#[derive(Args)]
struct DevArgs {
    /// Where the development cluster keeps its data.
    #[arg(long, default_value = ".berth", env = "BERTH_DATA_DIR")]
    data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7400", env = "BERTH_LISTEN")]
    listen: SocketAddr,
    /// Run the control plane alone, without the local agent.
    #[arg(long)]
    no_agent: bool,
    /// FOR LOCAL EXPERIMENTS ONLY: the ECS API (--ecs-listen, which must
    /// be a loopback address) takes any well-formed SigV4 signature from
    /// a loopback client as an admin's, whatever the key and secret.
    #[arg(long)]
    ecs_insecure_accept_any_signature: bool,
    #[command(flatten)]
    tuning: Tuning,
}

fn ecs_options(tuning: &Tuning) -> anyhow::Result<Option<berth_server::EcsOptions>> {
    let Some(listen) = tuning.ecs_listen else {
        if tuning.ecs_plain_http {
            anyhow::bail!("--ecs-plain-http needs --ecs-listen");
        }
        return Ok(None);
    };
    if tuning.ecs_plain_http && !listen.ip().is_loopback() {
        anyhow::bail!(
            "--ecs-plain-http is only allowed on a loopback address (127.0.0.1:PORT), not {listen}: AWS secret keys sign requests, but bodies and answers would cross the network in the clear; leave out --ecs-plain-http to serve HTTPS with this server's certificate"
        );
    }
    let account = &tuning.ecs_account_id;
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        anyhow::bail!(
            "--ecs-account-id must be 12 digits, like an AWS account id, not {account:?}"
        );
    }
    Ok(Some(berth_server::EcsOptions {
        listen,
        plain_http: tuning.ecs_plain_http,
        account_id: account.clone(),
        accept_any_signature: false,
    }))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received"),
    }
}

#[allow(clippy::too_many_arguments)]
fn options(
    node_id: u64,
    data_dir: PathBuf,
    pki_dir: Option<PathBuf>,
    listen: SocketAddr,
    advertise: Option<String>,
    initial_cluster: Option<BTreeMap<u64, String>>,
    tuning: &Tuning,
) -> anyhow::Result<ServeOptions> {
    if node_id == 0 {
        anyhow::bail!("--node-id must be 1 or more");
    }
    let advertise = match advertise {
        Some(a) => a,
        None if listen.ip().is_unspecified() => {
            anyhow::bail!(
                "--listen {listen} is not an address others can reach; set --advertise HOST:PORT"
            )
        }
        None => listen.to_string(),
    };
    if tuning.heartbeat_ms == 0 || tuning.election_timeout_ms <= tuning.heartbeat_ms {
        anyhow::bail!(
            "--election-timeout-ms ({}) must be larger than --heartbeat-ms ({}), which must be above 0",
            tuning.election_timeout_ms,
            tuning.heartbeat_ms
        );
    }
    if tuning.snapshot_threshold == 0 {
        anyhow::bail!("--snapshot-threshold must be 1 or more");
    }
    let agent_cert_lifetime = berth_types::duration::parse_duration(&tuning.agent_cert_lifetime)
        .map_err(|e| anyhow::anyhow!("--agent-cert-lifetime: {e}"))?;
    if agent_cert_lifetime < Duration::from_secs(10) {
        anyhow::bail!("--agent-cert-lifetime must be at least 10s");
    }
    let heartbeat = berth_types::duration::parse_duration(&tuning.agent_heartbeat)
        .map_err(|e| anyhow::anyhow!("--agent-heartbeat: {e}"))?;
    if heartbeat < Duration::from_millis(100) {
        anyhow::bail!("--agent-heartbeat must be at least 100ms");
    }
    let grace = match &tuning.agent_grace {
        Some(text) => berth_types::duration::parse_duration(text)
            .map_err(|e| anyhow::anyhow!("--agent-grace: {e}"))?,
        None => heartbeat * 4,
    };
    let pki_dir = pki_dir.unwrap_or_else(|| data_dir.join("pki"));
    let agent_binary = tuning.agent_binary.clone().or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.join("berth-agent")))
            .filter(|path| path.exists())
    });
    if !(tuning.anonymous_rate >= 0.0 && tuning.anonymous_rate.is_finite()) {
        anyhow::bail!(
            "--anonymous-rate must be 0 (no limit) or a positive number of calls per second"
        );
    }
    Ok(ServeOptions {
        limits: berth_server::limits::Limits {
            anonymous_per_sec: tuning.anonymous_rate,
            anonymous_burst: tuning.anonymous_burst,
            tls_handshake_timeout: berth_types::duration::parse_duration(
                &tuning.tls_handshake_timeout,
            )
            .map_err(|e| anyhow::anyhow!("--tls-handshake-timeout: {e}"))?,
        },
        dev_agent: None,
        ecs: ecs_options(tuning)?,
        raft_runtime: Some(raft_runtime()?),
        health_listen: tuning.health_listen,
        dns_listen: tuning.dns_listen,
        dns_upstream: tuning.dns_upstream.or_else(|| {
            std::fs::read_to_string("/etc/resolv.conf")
                .ok()
                .and_then(|text| berth_server::dns::upstream_from_resolv_conf(&text))
        }),
        agent_binary,
        session: berth_server::session::SessionConfig { heartbeat, grace },
        pki_dir,
        agent_cert_lifetime,
        node_id,
        data_dir,
        listen,
        advertise,
        initial_cluster,
        heartbeat_ms: tuning.heartbeat_ms,
        election_timeout_ms: tuning.election_timeout_ms,
        snapshot_threshold: tuning.snapshot_threshold,
        keep_logs_after_snapshot: tuning.keep_logs,
        request_timeout: Duration::from_millis(tuning.request_timeout_ms),
    })
}

/// Raft's own runtime (see `ServeOptions::raft_runtime`), made once and
/// kept for the life of the process. Two threads, so that applying a large
/// batch to the state machine does not hold up replication.
fn raft_runtime() -> anyhow::Result<tokio::runtime::Handle> {
    static RAFT: std::sync::OnceLock<Result<tokio::runtime::Runtime, String>> =
        std::sync::OnceLock::new();
    RAFT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("berthd-raft")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map(|runtime| runtime.handle().clone())
    .map_err(|e| anyhow::anyhow!("cannot start Raft's runtime: {e}"))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let options = match cli.command {
        Command::Serve(args) => {
            // An empty value (a templated BERTH_INITIAL_CLUSTER=) means none.
            let initial = args
                .initial_cluster
                .as_deref()
                .filter(|text| !text.trim().is_empty())
                .map(parse_initial_cluster)
                .transpose()
                .map_err(anyhow::Error::msg)?;
            options(
                args.node_id,
                args.data_dir,
                args.pki_dir,
                args.listen,
                args.advertise,
                initial,
                &args.tuning,
            )?
        }
        Command::Pki(_) | Command::Health { .. } => {
            unreachable!("handled before the runtime starts")
        }
        Command::Recover(args) => {
            print!("{}", berth_server::recovery::recover(&args).await?);
            return Ok(());
        }
        Command::Restore(args) => {
            print!("{}", berth_server::recovery::restore(&args).await?);
            return Ok(());
        }
        Command::Dev(args) => {
            let members = BTreeMap::from([(1, args.listen.to_string())]);
            let mut options = options(
                1,
                args.data_dir,
                None,
                args.listen,
                None,
                Some(members),
                &args.tuning,
            )?;
            // Absolute: the private containerd and the agent run elsewhere.
            options.data_dir = std::path::absolute(&options.data_dir)?;
            if args.ecs_insecure_accept_any_signature {
                let ecs = options.ecs.as_mut().filter(|e| e.listen.ip().is_loopback()).ok_or_else(|| {
                    anyhow::anyhow!(
                        "--ecs-insecure-accept-any-signature needs --ecs-listen on a loopback address (e.g. 127.0.0.1:7443)"
                    )
                })?;
                ecs.accept_any_signature = true;
                eprintln!(
                    "WARNING: --ecs-insecure-accept-any-signature: the ECS API on {} takes ANY signature from this host as an admin's; for local experiments only",
                    ecs.listen
                );
            }
            if !args.no_agent {
                let containerd = berth_server::dev::choose_containerd(&options.data_dir)
                    .await
                    .map_err(anyhow::Error::msg)?;
                let agent_binary = options.agent_binary.clone().ok_or_else(|| {
                    anyhow::anyhow!(
                        "no berth-agent binary next to berthd; build it (cargo build -p berth-agent), \
                         pass --agent-binary PATH, or run with --no-agent"
                    )
                })?;
                // Said here rather than in the agent's log, which a dev user
                // may never open.
                let log_driver = agent_binary.with_file_name("berth-logd");
                if !log_driver.is_file() {
                    anyhow::bail!(
                        "no {} beside the agent: the agent's log driver ships with it; build it \
                         (cargo build -p berth-logd) or run with --no-agent",
                        log_driver.display()
                    );
                }
                options.dev_agent = Some(berth_server::dev::DevAgentConfig {
                    data_dir: std::path::absolute(&options.data_dir)?,
                    agent_binary,
                    containerd,
                    server: options.advertise.clone(),
                });
            }
            let first_start = !options.pki_dir.join("ca.crt").exists();
            if first_start {
                tls::init(&options.pki_dir, None)?;
                let hosts = vec![
                    "127.0.0.1".to_string(),
                    "localhost".to_string(),
                    args.listen.ip().to_string(),
                ];
                tls::issue(&options.pki_dir, 1, &hosts, &options.pki_dir)?;
            }
            // A dev dir from before secrets: the dev server keeps its CA,
            // so it can make its own data key.
            tls::ensure_data_key(&options.pki_dir)?;
            let token_path = options.pki_dir.join("admin.token");
            let ca_path = std::fs::canonicalize(options.pki_dir.join("ca.crt"))?;
            println!("Berth dev control plane");
            println!("  endpoint:    {}", options.advertise);
            println!("  data dir:    {}", options.data_dir.display());
            println!("  CA:          {}", ca_path.display());
            if first_start {
                // Printed once; afterwards it is only in the 0600 file.
                let token = std::fs::read_to_string(&token_path)?;
                println!("  admin token: {}", token.trim());
            } else {
                println!("  admin token: in {} (mode 0600)", token_path.display());
            }
            println!();
            println!("Point the CLI at it:");
            println!("  export BERTH_ENDPOINT={}", options.advertise);
            println!("  export BERTH_CA_CERT={}", ca_path.display());
            println!(
                "  export BERTH_TOKEN=$(cat {})",
                std::fs::canonicalize(&token_path)?.display()
            );
            if let Some(agent) = &options.dev_agent {
                let containerd = match &agent.containerd {
                    berth_server::dev::ContainerdChoice::Existing(socket) => {
                        format!("containerd at {}", socket.display())
                    }
                    berth_server::dev::ContainerdChoice::Private { dir, .. } => {
                        format!("a private containerd under {}", dir.display())
                    }
                };
                println!(
                    "  local agent: on {containerd}; log in {}",
                    agent.data_dir.join("agent.log").display()
                );
            }
            println!("  berth cluster status");
            println!("  berth instance list");
            println!("  berth taskdef register -f deploy/examples/hello.json");
            println!("  berth task run --taskdef hello && berth task list");
            println!();
            options
        }
    };
    Server::run(options, shutdown_signal()).await?;
    Ok(())
}

fn pki(command: PkiCommand) -> anyhow::Result<()> {
    match command {
        PkiCommand::Init { dir, cluster_id } => {
            let cluster_id = tls::init(&dir, cluster_id.as_deref())?;
            println!(
                "created cluster CA for cluster {cluster_id} in {}",
                dir.display()
            );
            println!(
                "admin token: {} (mode 0600)",
                dir.join("admin.token").display()
            );
        }
        PkiCommand::DataKey(command) => data_key::run(command)?,
        PkiCommand::Issue {
            dir,
            node_id,
            hosts,
            out,
        } => {
            tls::issue(&dir, node_id, &hosts, &out)?;
            println!(
                "issued server {node_id}'s certificate into {}",
                out.display()
            );
        }
        PkiCommand::RotateCa(RotateCaStep::Start { dir }) => {
            let digest = tls::rotate_ca_start(&dir)?;
            println!("new root CA {digest} in {}", dir.display());
            println!("both roots are trusted until `berthd pki rotate-ca finish`. Next, one server at a time:");
            println!(
                "  berthd pki issue --dir {} --node-id N --host ADDR --out DATA_DIR/pki",
                dir.display()
            );
            println!("  kill -HUP $(pidof berthd)   # or systemctl reload berthd");
            println!(
                "agents take the new roots at their next heartbeat and renew their certificates;"
            );
            println!("join tokens made from now on pin {digest}.");
        }
        PkiCommand::RotateCa(RotateCaStep::Finish { dir }) => {
            let digest = tls::rotate_ca_finish(&dir)?;
            println!(
                "root CA {digest} is the only one trusted in {}",
                dir.display()
            );
            println!("Next, one server at a time: `berthd pki issue` again and SIGHUP it, as for `start`;");
            println!(
                "then give clients (`berth --ca-cert`, the CLI config) the new {}.",
                dir.join("ca.crt").display()
            );
        }
    }
    Ok(())
}

fn main() {
    // Before any thread starts: see `small_pages` for what huge pages cost.
    let small_pages = berth_server::small_pages::use_small_pages();
    let args: Vec<String> = std::env::args().collect();
    if let Err(e) = berth_daemon::apply_config_file(&Cli::command(), &args) {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    let cli = Cli::parse();
    if let Command::Health { url } = &cli.command {
        let probe = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|rt| rt.block_on(berth_daemon::probe(url)));
        match probe {
            Ok(()) => return,
            Err(e) => {
                eprintln!("unhealthy: {e}");
                std::process::exit(1);
            }
        }
    }
    if let Command::Pki(command) = cli.command {
        if let Err(e) = pki(command) {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
        return;
    }
    if let Err(e) = init_logging(cli.log_format, &cli.log) {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    if let Err(e) = small_pages {
        // A kernel without the flag runs as before, with more memory.
        tracing::warn!(error = %e, "could not turn transparent huge pages off");
    }
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
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
