//! HAProxy itself: the config berth-lb writes, the process (master-worker,
//! reloaded through its master CLI, so its master PID never changes), the
//! runtime API over the admin `stats socket`, and [`Syncer`], which keeps
//! each backend's servers (address, weight, drain state) equal to a list.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};

use crate::config::{LoadBalancer, MAX_SLOTS};
use crate::plan::{
    backend_name, frontend_name, grown, plan, resync, server_name, Server, SlotCommand, Slots,
};
use crate::LbError;

/// Where a free slot points while in maintenance (never used: a server in
/// maintenance gets no traffic).
pub const PARKED: &str = "127.0.0.1:1";

const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// The files berth-lb and HAProxy share.
#[derive(Debug, Clone)]
pub struct Paths {
    pub binary: PathBuf,
    /// The generated config.
    pub config: PathBuf,
    /// The runtime API (`stats socket ... level admin`).
    pub socket: PathBuf,
}

impl Paths {
    /// The master CLI socket, beside the runtime API's: `SOCKET.master`.
    pub fn master_socket(&self) -> PathBuf {
        let mut name = self.socket.as_os_str().to_owned();
        name.push(".master");
        PathBuf::from(name)
    }
}

fn server_line(out: &mut String, index: usize, server: Option<Server>) {
    let name = server_name(index);
    // Writing to a String cannot fail.
    let _ = match server {
        // A reload starts a new worker with no connections, so a draining
        // server there only has to take no new ones: weight 0 does that
        // (the config has no drain state). The old worker, which holds the
        // open connections, keeps draining them.
        Some(Server {
            target,
            draining: true,
            ..
        }) => writeln!(out, "    server {name} {target} weight 0"),
        Some(Server { target, weight, .. }) => {
            writeln!(out, "    server {name} {target} weight {weight}")
        }
        None => writeln!(out, "    server {name} {PARKED} disabled"),
    };
}

/// Which endpoints feed a backend, for the comment above it.
fn selection_comment(lb: &LoadBalancer) -> String {
    match (&lb.container_name, lb.container_port) {
        (None, None) => format!("endpoints naming load balancer {}", lb.name),
        _ => format!(
            "endpoints naming load balancer {}, else those of {}",
            lb.name,
            lb.container_filter()
        ),
    }
}

/// The whole HAProxy config: one frontend and one backend per load
/// balancer, each backend with a server per slot (free slots disabled,
/// i.e. in maintenance, until the runtime API fills them).
pub fn render_config(paths: &Paths, backends: &[(LoadBalancer, Slots)]) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "# Written by berth-lb; it is rewritten at every start and reload.\n\
         global\n    \
         stats socket {socket} mode 600 level admin expose-fd listeners\n    \
         stats timeout 30s\n\n\
         defaults\n    \
         timeout connect 5s\n    \
         timeout client 60s\n    \
         timeout server 60s\n    \
         # A connection refused by an endpoint that just went away is\n    \
         # retried on another server.\n    \
         retries 3\n    \
         option redispatch 1\n",
        socket = paths.socket.display()
    );
    for (lb, slots) in backends {
        let backend = backend_name(&lb.name);
        let mode = lb.mode.as_str();
        let _ = write!(
            out,
            "\n# {name}: service {service} of cluster {cluster}: {selection}\n\
             frontend {frontend}\n    \
             mode {mode}\n    \
             bind {bind}\n    \
             default_backend {backend}\n\n\
             backend {backend}\n    \
             mode {mode}\n    \
             balance roundrobin\n",
            name = lb.name,
            service = lb.service,
            cluster = lb.cluster,
            selection = selection_comment(lb),
            frontend = frontend_name(&lb.name),
            bind = lb.bind,
        );
        for (index, target) in slots.iter().enumerate() {
            server_line(&mut out, index, *target);
        }
    }
    out
}

/// Writes `text` to `path` through a temporary file and a rename.
pub fn write_config(path: &Path, text: &str) -> Result<(), LbError> {
    let write_err = |source| LbError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(write_err)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text).map_err(write_err)?;
    std::fs::rename(&tmp, path).map_err(write_err)
}

/// `haproxy -c -f CONFIG`: the config's problems, as HAProxy says them.
pub async fn check_config(paths: &Paths) -> Result<(), LbError> {
    let out = Command::new(&paths.binary)
        .arg("-c")
        .arg("-q")
        .arg("-f")
        .arg(&paths.config)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|source| LbError::Spawn {
            binary: paths.binary.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(LbError::HaproxyConfig {
            path: paths.config.clone(),
            output: String::from_utf8_lossy(&[out.stdout, out.stderr].concat())
                .trim()
                .to_string(),
        })
    }
}

/// One command on a unix-socket CLI (runtime API or master CLI); the
/// answer as text.
pub async fn send(socket: &Path, command: &str) -> Result<String, LbError> {
    let io_err = |source| LbError::Socket {
        path: socket.to_path_buf(),
        source,
    };
    let exchange = async {
        let mut conn = UnixStream::connect(socket).await.map_err(io_err)?;
        conn.write_all(format!("{command}\n").as_bytes())
            .await
            .map_err(io_err)?;
        let mut answer = Vec::new();
        conn.read_to_end(&mut answer).await.map_err(io_err)?;
        Ok(String::from_utf8_lossy(&answer).into_owned())
    };
    tokio::time::timeout(COMMAND_TIMEOUT, exchange)
        .await
        .map_err(|_| {
            io_err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer to `{command}` within {COMMAND_TIMEOUT:?}"),
            ))
        })?
}

/// The runtime API.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub socket: PathBuf,
}

impl Runtime {
    /// Runs one slot command, checking HAProxy's answer.
    pub async fn run(&self, backend: &str, command: &SlotCommand) -> Result<(), LbError> {
        let line = command.render(backend);
        let answer = send(&self.socket, &line).await?;
        let text = answer.trim();
        let ok = match command {
            // "IP changed from '127.0.0.1' to '10.0.0.1', port changed ..."
            // or "no need to change the addr".
            SlotCommand::SetAddr { .. } => {
                text.contains("changed from") || text.contains("no need to change")
            }
            // Success is an empty answer; a refusal says why ("Absolute
            // weight can only be between 0 and 256 inclusive.").
            SlotCommand::SetWeight { .. }
            | SlotCommand::Ready { .. }
            | SlotCommand::Drain { .. }
            | SlotCommand::Maint { .. } => text.is_empty(),
        };
        if ok {
            Ok(())
        } else {
            Err(LbError::Command {
                command: line,
                answer: text.to_string(),
            })
        }
    }

    /// The PID of the worker answering (changes at each reload).
    pub async fn worker_pid(&self) -> Result<u32, LbError> {
        let info = send(&self.socket, "show info").await?;
        info.lines()
            .find_map(|l| l.strip_prefix("Pid:"))
            .and_then(|pid| pid.trim().parse().ok())
            .ok_or_else(|| LbError::Command {
                command: "show info".into(),
                answer: info.chars().take(200).collect(),
            })
    }

    /// Each server of `backend` from `show servers state` (HAProxy's
    /// management guide: srv_op_state 2 is running; srv_admin_state is a
    /// bit field, see [`ServerState::in_maint`]).
    pub async fn servers(&self, backend: &str) -> Result<Vec<ServerState>, LbError> {
        let text = send(&self.socket, &format!("show servers state {backend}")).await?;
        Ok(text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                // be_id be_name srv_id srv_name srv_addr srv_op_state
                // srv_admin_state srv_uweight ... srv_port is field 18.
                Some(ServerState {
                    name: f.get(3)?.to_string(),
                    address: f.get(4)?.to_string(),
                    port: f.get(18)?.parse().ok()?,
                    op_state: f.get(5)?.parse().ok()?,
                    admin_state: f.get(6)?.parse().ok()?,
                    weight: f.get(7)?.parse().ok()?,
                })
            })
            .filter(|s| s.name.starts_with('s'))
            .collect())
    }
}

/// One line of `show servers state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerState {
    pub name: String,
    pub address: String,
    pub port: u16,
    pub op_state: u8,
    pub admin_state: u8,
    /// The weight the runtime API or the config set (`srv_uweight`).
    pub weight: u32,
}

impl ServerState {
    /// In maintenance: forced (0x01: the runtime API, or `disabled` in the
    /// config, which also sets 0x04 for good), inherited (0x02) or for a
    /// failed resolution (0x20); HAProxy's SRV_ADMF_MAINT.
    pub fn in_maint(&self) -> bool {
        self.admin_state & 0x23 != 0
    }

    /// Draining: forced (0x08, `state drain`) or inherited (0x10);
    /// HAProxy's SRV_ADMF_DRAIN.
    pub fn in_drain(&self) -> bool {
        self.admin_state & 0x18 != 0
    }
}

/// The HAProxy master process berth-lb started.
#[derive(Debug)]
pub struct Haproxy {
    child: Child,
    paths: Paths,
}

impl Haproxy {
    /// Starts `haproxy -W -db -f CONFIG -S MASTER` and waits until its
    /// runtime API answers.
    pub async fn start(paths: &Paths) -> Result<Self, LbError> {
        check_config(paths).await?;
        let master = paths.master_socket();
        if let Some(dir) = paths.socket.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| LbError::Write {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let child = Command::new(&paths.binary)
            .arg("-W")
            .arg("-db")
            .arg("-f")
            .arg(&paths.config)
            .arg("-S")
            .arg(&master)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| LbError::Spawn {
                binary: paths.binary.clone(),
                source,
            })?;
        let mut haproxy = Self {
            child,
            paths: paths.clone(),
        };
        haproxy.wait_worker(None).await?;
        Ok(haproxy)
    }

    /// The master's PID (stays the same across reloads).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub fn runtime(&self) -> Runtime {
        Runtime {
            socket: self.paths.socket.clone(),
        }
    }

    /// Rereads the config (checked first) through the master CLI's
    /// `reload`: a new worker takes the listening sockets over from the
    /// old one, which finishes its connections. Waits for the new worker.
    pub async fn reload(&mut self) -> Result<(), LbError> {
        check_config(&self.paths).await?;
        let old = self.runtime().worker_pid().await.ok();
        // The master re-executes itself and drops the connection, so the
        // answer (if any) is not an error.
        let _ = send(&self.paths.master_socket(), "reload").await;
        self.wait_worker(old).await
    }

    /// Waits until a worker other than `old` answers on the runtime API.
    async fn wait_worker(&mut self, old: Option<u32>) -> Result<(), LbError> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(LbError::HaproxyExited(status.to_string()));
            }
            match self.runtime().worker_pid().await {
                Ok(pid) if Some(pid) != old => return Ok(()),
                _ => {}
            }
            if tokio::time::Instant::now() > deadline {
                return Err(LbError::NotReady {
                    path: self.paths.socket.clone(),
                    waited_secs: READY_TIMEOUT.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Resolves when HAProxy's master exits (it should not).
    pub async fn exited(&mut self) -> LbError {
        match self.child.wait().await {
            Ok(status) => LbError::HaproxyExited(status.to_string()),
            Err(e) => LbError::HaproxyExited(e.to_string()),
        }
    }

    /// Stops HAProxy: SIGTERM through kill(1) (workers stop with their
    /// master), SIGKILL if it is still there after five seconds.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .stdin(Stdio::null())
                .status()
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Keeps every load balancer's backend servers equal to its endpoints.
#[derive(Debug)]
pub struct Syncer {
    pub haproxy: Haproxy,
    paths: Paths,
    lbs: Vec<LoadBalancer>,
    slots: Vec<Slots>,
    /// Servers last asked for, per load balancer.
    desired: Vec<Vec<Server>>,
    /// A command failed: HAProxy's state is unknown until resynced.
    dirty: Vec<bool>,
    /// Reloads done since start (slots grew).
    pub reloads: u32,
}

impl Syncer {
    /// Writes the config with every slot free and starts HAProxy.
    pub async fn start(paths: Paths, lbs: Vec<LoadBalancer>) -> Result<Self, LbError> {
        let slots: Vec<Slots> = lbs.iter().map(|lb| vec![None; lb.slots]).collect();
        let n = lbs.len();
        let syncer_config = Self::config_text(&paths, &lbs, &slots);
        write_config(&paths.config, &syncer_config)?;
        let haproxy = Haproxy::start(&paths).await?;
        Ok(Self {
            haproxy,
            paths,
            lbs,
            slots,
            desired: vec![Vec::new(); n],
            dirty: vec![false; n],
            reloads: 0,
        })
    }

    fn config_text(paths: &Paths, lbs: &[LoadBalancer], slots: &[Slots]) -> String {
        let backends: Vec<(LoadBalancer, Slots)> =
            lbs.iter().cloned().zip(slots.iter().cloned()).collect();
        render_config(paths, &backends)
    }

    pub fn load_balancers(&self) -> &[LoadBalancer] {
        &self.lbs
    }

    /// What each slot of load balancer `lb` holds.
    pub fn slots(&self, lb: usize) -> &[Option<Server>] {
        self.slots.get(lb).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Whether a load balancer still needs [`Syncer::retry`].
    pub fn needs_retry(&self) -> bool {
        self.dirty.iter().any(|d| *d)
    }

    /// Makes load balancer `lb`'s servers `desired` (addresses, weights,
    /// drain states): runtime API commands, or a reload with more slots
    /// when they are too few. On error the load balancer is resynced by
    /// the next call or [`Syncer::retry`].
    pub async fn set_servers(&mut self, lb: usize, desired: &[Server]) -> Result<(), LbError> {
        let (Some(config), Some(current)) = (self.lbs.get(lb), self.slots.get(lb)) else {
            return Ok(());
        };
        let name = config.name.clone();
        self.desired[lb] = desired.to_vec();
        let mut p = plan(current, desired);
        if !p.unplaced.is_empty() {
            let size = grown(current.len(), p.needed(), MAX_SLOTS);
            if size > current.len() {
                let mut bigger = current.clone();
                bigger.resize(size, None);
                p = plan(&bigger, desired);
                tracing::info!(
                    load_balancer = %name,
                    endpoints = p.needed(),
                    from = current.len(),
                    to = size,
                    "more endpoints than servers: reloading HAProxy with more"
                );
                return self.reload_with(lb, p.slots).await;
            }
            tracing::warn!(
                load_balancer = %name,
                left_out = p.unplaced.len(),
                "more endpoints than the most servers a backend gets ({MAX_SLOTS}); some get no traffic"
            );
        }
        let commands = if self.dirty[lb] {
            resync(&p.slots)
        } else {
            p.commands
        };
        self.slots[lb] = p.slots;
        self.dirty[lb] = true;
        let runtime = self.haproxy.runtime();
        let backend = backend_name(&name);
        for command in &commands {
            runtime.run(&backend, command).await?;
            tracing::debug!(load_balancer = %name, command = %command.render(&backend), "ran");
        }
        self.dirty[lb] = false;
        if !commands.is_empty() {
            tracing::info!(
                load_balancer = %name,
                servers = self.slots[lb].iter().flatten().count(),
                draining = self.slots[lb].iter().flatten().filter(|s| s.draining).count(),
                commands = commands.len(),
                "backend updated through the runtime API"
            );
        }
        Ok(())
    }

    async fn reload_with(&mut self, lb: usize, slots: Slots) -> Result<(), LbError> {
        let previous = std::mem::replace(&mut self.slots[lb], slots);
        let text = Self::config_text(&self.paths, &self.lbs, &self.slots);
        let result = match write_config(&self.paths.config, &text) {
            Ok(()) => self.haproxy.reload().await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                // Every backend is now what the config says.
                self.dirty.iter_mut().for_each(|d| *d = false);
                self.reloads += 1;
                Ok(())
            }
            Err(e) => {
                self.slots[lb] = previous;
                self.dirty[lb] = true;
                Err(e)
            }
        }
    }

    /// Applies the last servers again to load balancers whose last update
    /// failed.
    pub async fn retry(&mut self) -> Result<(), LbError> {
        let mut result = Ok(());
        for lb in 0..self.lbs.len() {
            if self.dirty[lb] {
                let desired = self.desired[lb].clone();
                if let Err(e) = self.set_servers(lb, &desired).await {
                    result = Err(e);
                }
            }
        }
        result
    }
}
