//! berth-lb: runs HAProxy and keeps its backends equal to Berth services'
//! endpoints (see the crate docs and README "Load balancing with berth-lb").

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use berth_client::{BerthClient, ClientConfig};
use berth_daemon::logging::{init_logging, LogFormat};
use berth_lb::config::{self, Overrides, Settings};
use berth_lb::haproxy::{Paths, Syncer};
use berth_lb::plan::{select, Server};
use clap::Parser;
use tokio::sync::mpsc;

/// Keeps a real HAProxy's backends equal to Berth services' endpoints.
/// Flags win over BERTH_* environment variables, which win over the
/// config file.
#[derive(Debug, Parser)]
#[command(name = "berth-lb", version)]
struct Cli {
    /// TOML file with the [[load_balancer]] tables (and, optionally, the
    /// settings below under their flag names with `_`).
    #[arg(long, env = "BERTH_LB_CONFIG", value_name = "FILE")]
    config: PathBuf,
    /// Control-plane servers, comma-separated. Default: 127.0.0.1:7400.
    #[arg(
        long,
        env = "BERTH_ENDPOINT",
        value_name = "HOST:PORT[,HOST:PORT...]",
        value_delimiter = ','
    )]
    endpoint: Vec<String>,
    /// The cluster CA certificate (PEM).
    #[arg(long, env = "BERTH_CA_CERT", value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// File holding an API token; a readonly one is enough.
    #[arg(long, env = "BERTH_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// HAProxy's runtime API socket (berth-lb writes it into the config;
    /// the master CLI is SOCKET.master). Default: /run/berth-lb/haproxy.sock.
    #[arg(long, env = "BERTH_LB_HAPROXY_SOCKET", value_name = "PATH")]
    haproxy_socket: Option<PathBuf>,
    /// Where berth-lb writes HAProxy's config. Default:
    /// /run/berth-lb/haproxy.cfg.
    #[arg(long, env = "BERTH_LB_HAPROXY_CONFIG", value_name = "PATH")]
    haproxy_config: Option<PathBuf>,
    /// The haproxy binary. Default: haproxy (from PATH).
    #[arg(long, env = "BERTH_LB_HAPROXY_BINARY", value_name = "PATH")]
    haproxy_binary: Option<PathBuf>,
    /// Servers each backend starts with (more only through a reload).
    /// Default: 16.
    #[arg(long, env = "BERTH_LB_SLOTS", value_name = "N")]
    slots: Option<i64>,
    /// Log filter.
    #[arg(long, env = "BERTH_LOG", default_value = "info")]
    log: String,
    #[arg(long, env = "BERTH_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
}

/// `ADDR=WEIGHT` (`ADDR=drain` for a draining one) per server, for the
/// log line of each endpoint set: what traffic shares HAProxy is given.
fn weights(servers: &[Server]) -> String {
    servers
        .iter()
        .map(|s| {
            if s.draining {
                format!("{}=drain", s.target)
            } else {
                format!("{}={}", s.target, s.weight)
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("berth-lb: {e:#}");
        std::process::exit(1);
    }
}

fn client(settings: &Settings) -> anyhow::Result<BerthClient> {
    let token = std::fs::read_to_string(&settings.token_file)
        .with_context(|| {
            format!(
                "cannot read the token file {}",
                settings.token_file.display()
            )
        })?
        .trim()
        .to_string();
    if token.is_empty() {
        bail!("the token file {} is empty", settings.token_file.display());
    }
    let ca_pem = match &settings.ca_cert {
        Some(path) => Some(std::fs::read_to_string(path).with_context(|| {
            format!("cannot read the cluster CA certificate {}", path.display())
        })?),
        None => None,
    };
    Ok(BerthClient::new(ClientConfig {
        endpoints: settings.endpoints.clone(),
        ca_pem,
        token: Some(token),
        ..ClientConfig::default()
    })?)
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log).map_err(anyhow::Error::msg)?;
    let file = config::load(&cli.config)?;
    let settings = config::resolve(
        Overrides {
            endpoints: config::split_endpoints(&cli.endpoint),
            ca_cert: cli.ca_cert,
            token_file: cli.token_file,
            haproxy_socket: cli.haproxy_socket,
            haproxy_config: cli.haproxy_config,
            haproxy_binary: cli.haproxy_binary,
            slots: cli.slots,
        },
        file,
    )?;
    let client = client(&settings)?;
    let paths = Paths {
        binary: settings.haproxy_binary.clone(),
        config: settings.haproxy_config.clone(),
        socket: settings.haproxy_socket.clone(),
    };
    let mut syncer = Syncer::start(paths, settings.load_balancers.clone())
        .await
        .context("starting HAProxy")?;
    tracing::info!(
        pid = syncer.haproxy.pid(),
        config = %settings.haproxy_config.display(),
        socket = %settings.haproxy_socket.display(),
        load_balancers = settings.load_balancers.len(),
        "HAProxy started"
    );

    // One watch per load balancer; each sends its whole server list.
    let (tx, mut rx) = mpsc::channel::<(usize, Vec<Server>)>(16);
    for (index, lb) in settings.load_balancers.iter().cloned().enumerate() {
        let client = client.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut watch = client.watch_endpoints(&lb.cluster, &lb.service);
            let mut failing = false;
            loop {
                match watch.next().await {
                    Ok(set) => {
                        if failing {
                            tracing::info!(load_balancer = %lb.name, "control plane reachable again");
                            failing = false;
                        }
                        let selection = select(&lb, &set.endpoints);
                        for problem in &selection.problems {
                            tracing::warn!(load_balancer = %lb.name, endpoint = %problem, "endpoint problem");
                        }
                        if let Some(mismatch) = &selection.mismatch {
                            tracing::warn!(
                                load_balancer = %lb.name,
                                config = %format!("load_balancer[{index}]"),
                                service = %lb.service,
                                problem = %mismatch,
                                "no endpoints selected"
                            );
                        }
                        tracing::info!(
                            load_balancer = %lb.name,
                            revision = set.revision,
                            selected_by = ?selection.by,
                            endpoints = selection.servers.len(),
                            draining = selection.servers.iter().filter(|s| s.draining).count(),
                            weights = %weights(&selection.servers),
                            "endpoint set"
                        );
                        if tx.send((index, selection.servers)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        // HAProxy keeps the servers it has meanwhile.
                        tracing::warn!(
                            load_balancer = %lb.name,
                            error = %e,
                            "cannot watch the service's endpoints; keeping the last ones and retrying"
                        );
                        failing = true;
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                }
            }
        });
    }
    drop(tx);

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    let mut retry = tokio::time::interval(Duration::from_secs(1));
    let result = loop {
        tokio::select! {
            message = rx.recv() => {
                let Some((index, servers)) = message else {
                    break Err(anyhow::anyhow!("every endpoint watch stopped"));
                };
                if let Err(e) = syncer.set_servers(index, &servers).await {
                    tracing::warn!(error = %e, "updating HAProxy failed; retrying");
                }
            }
            _ = retry.tick(), if syncer.needs_retry() => {
                if let Err(e) = syncer.retry().await {
                    tracing::warn!(error = %e, "updating HAProxy failed; retrying");
                }
            }
            e = syncer.haproxy.exited() => break Err(e.into()),
            _ = tokio::signal::ctrl_c() => break Ok(()),
            _ = sigterm.recv() => break Ok(()),
        }
    };
    tracing::info!("stopping HAProxy");
    syncer.haproxy.stop().await;
    result
}
