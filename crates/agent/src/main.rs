//! berth-agent. `berth-agent --server ... --token ... --data-dir DIR` joins
//! the cluster (or reuses the identity in DIR) and keeps its certificate
//! fresh; `berth-agent image import FILE` loads images on air-gapped hosts;
//! and containerd's shim starts the binary in log-driver mode per container.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use berth_agent::{logs, ContainerdConfig, ContainerdRuntime};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "berth-agent",
    about = "Berth agent: runs tasks through containerd"
)]
struct Cli {
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
    /// Join token from `berth activation create`; needed to register.
    #[arg(long, env = "BERTH_JOIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
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
    #[arg(long = "attribute", value_parser = parse_attribute)]
    attributes: Vec<(String, String)>,
    /// How often the agent checks in with the control plane.
    #[arg(long, default_value = "5s", value_parser = parse_interval)]
    ping_interval: Duration,
    /// Log filter, e.g. `info` or `berth_agent=debug`.
    #[arg(long, env = "BERTH_LOG", default_value = "info", global = true)]
    log: String,
    #[command(subcommand)]
    command: Option<Command>,
}

fn parse_attribute(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
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
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Import an OCI-layout or docker-archive tarball (`docker save`).
    Import { file: PathBuf },
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    // The shim passes the log driver's arguments as unordered pairs, so this
    // mode is recognized before clap sees them.
    if logs::is_driver_invocation(&args) {
        return ExitCode::from(logs::driver_main(&args) as u8);
    }
    let cli = Cli::parse();
    let filter = match tracing_subscriber::EnvFilter::try_new(&cli.log) {
        Ok(filter) => filter,
        Err(e) => {
            eprintln!(
                "berth-agent: --log {:?} is not a valid log filter: {e}",
                cli.log
            );
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
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

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut cfg = ContainerdConfig::new(&cli.containerd_socket, &cli.state_dir);
    cfg.namespace = cli.namespace;
    match cli.command {
        None => {
            join_and_run(
                cli.server,
                cli.token,
                cli.data_dir,
                cli.cluster,
                cli.attributes,
                cli.ping_interval,
            )
            .await?
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

/// Registers (or reuses the stored identity) and keeps it alive until
/// SIGTERM or Ctrl-C.
async fn join_and_run(
    servers: Vec<String>,
    token: Option<String>,
    dir: PathBuf,
    cluster: Option<String>,
    attributes: Vec<(String, String)>,
    ping_every: Duration,
) -> anyhow::Result<()> {
    let endpoints: Vec<String> = servers
        .into_iter()
        .filter(|s| !s.trim().is_empty())
        .collect();
    if endpoints.is_empty() {
        anyhow::bail!("no control plane given: pass --server HOST:PORT[,HOST:PORT...]");
    }
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string());
    let config = berth_client::join::AgentLoopConfig {
        endpoints,
        dir,
        token,
        hostname,
        attributes: attributes.into_iter().collect::<BTreeMap<_, _>>(),
        cluster,
        ping_every,
        updates: None,
    };
    let shutdown = async {
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
        tracing::info!("shutting down");
    };
    berth_client::join::run_agent_identity_loop(config, shutdown).await?;
    Ok(())
}
