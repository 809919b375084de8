//! `berthd dev`'s local agent: the one-command experience runs a real
//! berth-agent next to the single server, on the system containerd when its
//! socket answers, or on a private containerd started under the data dir.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use berth_pki::tokens::{hash_secret, JoinToken};
use berth_types::{Command, DEFAULT_CLUSTER};
use tokio::process::{Child, Command as Process};

use crate::api::now_ms;
use crate::node::BerthNode;
use crate::tls::Pki;

pub const SYSTEM_CONTAINERD: &str = "/run/containerd/containerd.sock";

/// Where the dev agent's containers run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerdChoice {
    /// A containerd that already answers on this socket.
    Existing(PathBuf),
    /// No socket answers, but `containerd` is installed: start one privately.
    Private { binary: PathBuf, dir: PathBuf },
}

#[derive(Debug, Clone)]
pub struct DevAgentConfig {
    pub data_dir: PathBuf,
    pub agent_binary: PathBuf,
    pub containerd: ContainerdChoice,
    pub server: String,
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// Decides where containers will run, or says exactly what to install.
pub async fn choose_containerd(data_dir: &Path) -> Result<ContainerdChoice, String> {
    let system = PathBuf::from(SYSTEM_CONTAINERD);
    if tokio::net::UnixStream::connect(&system).await.is_ok() {
        return Ok(ContainerdChoice::Existing(system));
    }
    let private_socket = data_dir.join("containerd/containerd.sock");
    if tokio::net::UnixStream::connect(&private_socket)
        .await
        .is_ok()
    {
        return Ok(ContainerdChoice::Existing(private_socket));
    }
    match on_path("containerd") {
        Some(binary) if on_path("runc").is_some() => Ok(ContainerdChoice::Private {
            binary,
            dir: data_dir.join("containerd"),
        }),
        _ => Err(format!(
            "no containerd answers on {SYSTEM_CONTAINERD} and the containerd and runc binaries are not installed; \
             install them (Debian/Ubuntu: sudo apt-get install -y containerd runc) and run berthd dev again, \
             or pass --no-agent to run the control plane alone"
        )),
    }
}

/// Starts a private containerd under `dir` and waits for its socket.
async fn start_private_containerd(binary: &Path, dir: &Path) -> Result<(Child, PathBuf), String> {
    let socket = dir.join("containerd.sock");
    for sub in ["root", "state"] {
        std::fs::create_dir_all(dir.join(sub))
            .map_err(|e| format!("cannot create {}: {e}", dir.join(sub).display()))?;
    }
    // The CRI plugin wants a Kubernetes setup; Berth does not use it.
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n",
    )
    .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
    let log = std::fs::File::create(dir.join("containerd.log"))
        .map_err(|e| format!("cannot create the containerd log: {e}"))?;
    let child = Process::new(binary)
        .arg("--config")
        .arg(&config)
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--state")
        .arg(dir.join("state"))
        .arg("--address")
        .arg(&socket)
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(false)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    for _ in 0..100 {
        if tokio::net::UnixStream::connect(&socket).await.is_ok() {
            return Ok((child, socket));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "the private containerd did not answer on {} within 10s; see {}",
        socket.display(),
        dir.join("containerd.log").display()
    ))
}

/// Creates a one-use join token for the dev agent, once the node leads.
async fn join_token(node: &BerthNode, pki: &Pki) -> Result<String, String> {
    let digest = berth_pki::ca_digest(&pki.root_pem).map_err(|e| e.to_string())?;
    let token = JoinToken::generate(&digest);
    for _ in 0..100 {
        if node.has_applied_own_term() {
            let now = now_ms();
            node.write(Command::CreateActivation {
                id: token.activation_id.clone(),
                cluster: DEFAULT_CLUSTER.to_string(),
                description: "berthd dev local agent".into(),
                secret_hash: hash_secret(&token.secret),
                expires_at_ms: now.saturating_add(3_600_000),
                max_registrations: 1,
                attributes: Default::default(),
                at_ms: now,
            })
            .await
            .map_err(|e| e.to_string())?;
            return Ok(token.encode());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("the dev server did not become leader within 10s".into())
}

/// Runs the local agent (and a private containerd if chosen) for as long as
/// the server runs. Both are started with the server and outlive nothing:
/// they get SIGTERM when berthd dev exits (task containers keep running, as
/// on any host whose agent stops).
pub async fn run_local_agent(node: BerthNode, pki: Arc<Pki>, config: DevAgentConfig) {
    if let Err(e) = local_agent(node, pki, config).await {
        tracing::error!(error = %e, "the local dev agent is not running");
        eprintln!("berthd dev: local agent not started: {e}");
    }
}

async fn local_agent(node: BerthNode, pki: Arc<Pki>, config: DevAgentConfig) -> Result<(), String> {
    let mut containerd_child = None;
    let socket = match &config.containerd {
        ContainerdChoice::Existing(socket) => socket.clone(),
        ContainerdChoice::Private { binary, dir } => {
            let (child, socket) = start_private_containerd(binary, dir).await?;
            tracing::info!(socket = %socket.display(), "private containerd started");
            containerd_child = Some(child);
            socket
        }
    };
    let agent_dir = config.data_dir.join("agent");
    let identity_dir = agent_dir.join("identity");
    let mut command = Process::new(&config.agent_binary);
    command
        .arg("--server")
        .arg(&config.server)
        .arg("--data-dir")
        .arg(&identity_dir)
        .arg("--state-dir")
        .arg(agent_dir.join("state"))
        .arg("--containerd-socket")
        .arg(&socket)
        // Images the dev script packed (no registry needed for the example).
        .arg("--import-dir")
        .arg(config.data_dir.join("images"));
    if !identity_dir.join("identity.json").exists() {
        let token = join_token(&node, &pki).await?;
        command.env("BERTH_JOIN_TOKEN", token);
    }
    let log_path = config.data_dir.join("agent.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
    let mut agent = command
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", config.agent_binary.display()))?;
    tracing::info!(log = %log_path.display(), containerd = %socket.display(), "local agent started");
    let status = agent.wait().await;
    drop(containerd_child);
    Err(format!(
        "the local agent exited ({status:?}); see {}",
        log_path.display()
    ))
}
