use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use berth_server::{parse_initial_cluster, ServeOptions, Server};
use clap::{Args, Parser, Subcommand, ValueEnum};

/// berthd: a Berth control-plane server.
#[derive(Parser)]
#[command(name = "berthd", version, about)]
struct Cli {
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

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run one server of a cluster.
    Serve(ServeArgs),
    /// Run a single-server development cluster in ./.berth.
    Dev(DevArgs),
}

#[derive(Args)]
struct Tuning {
    /// Raft heartbeat interval.
    #[arg(long, default_value_t = 100, env = "BERTH_HEARTBEAT_MS")]
    heartbeat_ms: u64,
    /// Minimum election timeout (the maximum is twice this).
    #[arg(long, default_value_t = 500, env = "BERTH_ELECTION_TIMEOUT_MS")]
    election_timeout_ms: u64,
    /// Build a snapshot (and compact the log) after this many entries.
    #[arg(long, default_value_t = 10_000, env = "BERTH_SNAPSHOT_THRESHOLD")]
    snapshot_threshold: u64,
    /// Entries kept in the log behind a snapshot, for followers that lag a little.
    #[arg(long, default_value_t = 1_000, env = "BERTH_KEEP_LOGS")]
    keep_logs: u64,
    /// How long an API call may wait for a leader or a commit.
    #[arg(long, default_value_t = 10_000, env = "BERTH_REQUEST_TIMEOUT_MS")]
    request_timeout_ms: u64,
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
    #[command(flatten)]
    tuning: Tuning,
}

fn init_logging(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| anyhow::anyhow!("--log {filter:?} is not a valid log filter: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
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

fn options(
    node_id: u64,
    data_dir: PathBuf,
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
    Ok(ServeOptions {
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

async fn run(cli: Cli) -> anyhow::Result<()> {
    let options = match cli.command {
        Command::Serve(args) => {
            let initial = args
                .initial_cluster
                .as_deref()
                .map(parse_initial_cluster)
                .transpose()
                .map_err(anyhow::Error::msg)?;
            options(
                args.node_id,
                args.data_dir,
                args.listen,
                args.advertise,
                initial,
                &args.tuning,
            )?
        }
        Command::Dev(args) => {
            let members = BTreeMap::from([(1, args.listen.to_string())]);
            let options = options(
                1,
                args.data_dir,
                args.listen,
                None,
                Some(members),
                &args.tuning,
            )?;
            println!("Berth dev control plane");
            println!("  endpoint: {}", options.advertise);
            println!("  data dir: {}", options.data_dir.display());
            println!();
            println!("Point the CLI at it:");
            println!("  export BERTH_ENDPOINT={}", options.advertise);
            println!("  berth cluster status");
            println!("  berth taskdef register -f deploy/examples/web.json");
            println!();
            options
        }
    };
    Server::run(options, shutdown_signal()).await?;
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = init_logging(cli.log_format, &cli.log) {
        eprintln!("error: {e}");
        std::process::exit(2);
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
