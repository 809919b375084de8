//! A `Runtime` in memory, for the runner's and the session's unit tests:
//! containers are entries in a map, exits are triggered by the test, and
//! every call is recorded so tests can assert what was (not) done.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;
use std::time::Duration;

use berth_proto::pb;
use tokio::sync::{watch, Notify};

use crate::containerd::container_id;
use crate::error::{Result, RuntimeError};
use crate::runtime::*;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Call {
    Pull(String),
    Create(String),
    Start(String),
    Restart(String),
    Stop(String),
    Remove(String),
    /// `task_stopped` with this task id.
    TaskStopped(String),
}

struct FakeContainer {
    task_id: String,
    name: String,
    image: String,
    state: ContainerState,
    exit: watch::Sender<Option<ExitStatus>>,
}

#[derive(Default)]
struct Inner {
    containers: BTreeMap<String, FakeContainer>,
    calls: Vec<Call>,
    missing_images: BTreeSet<String>,
    failing_starts: BTreeSet<String>,
    failing_restarts: BTreeSet<String>,
    /// PIDs handed out by restarts, so each process is told apart.
    last_pid: u32,
    logs: BTreeMap<String, Vec<LogLine>>,
    list_failures: u32,
    configs: BTreeMap<String, ContainerConfig>,
    hold_pulls: bool,
    hold_stops: bool,
    hold_restarts: bool,
    /// Bridge- and task-mode tasks' addresses while their "network" is up:
    /// from their first create until `task_stopped`.
    addresses: BTreeMap<String, IpAddr>,
    last_address: u8,
    /// What `task_network_stats` answers per task (set by the test).
    network_stats: BTreeMap<String, NetworkStats>,
}

#[derive(Default)]
pub(crate) struct FakeRuntime {
    inner: Mutex<Inner>,
    pulls_released: Notify,
    /// Wakes held stops and restarts.
    released: Notify,
}

fn exited(code: u32) -> ExitStatus {
    ExitStatus {
        code,
        oom_killed: false,
        exited_at: None,
    }
}

impl FakeRuntime {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Pulling this image fails as an unknown image does.
    pub fn missing_image(&self, image: &str) {
        self.lock().missing_images.insert(image.to_string());
    }

    /// Starting the container of this name fails.
    pub fn failing_start(&self, name: &str) {
        self.lock().failing_starts.insert(name.to_string());
    }

    /// Restarting the container of this name fails.
    pub fn failing_restart(&self, name: &str) {
        self.lock().failing_restarts.insert(name.to_string());
    }

    /// The next `n` calls to `list` fail.
    pub fn fail_list(&self, n: u32) {
        self.lock().list_failures = n;
    }

    /// Pulls wait until `release_pulls` (a registry that is slow).
    pub fn hold_pulls(&self) {
        self.lock().hold_pulls = true;
    }

    pub fn release_pulls(&self) {
        self.lock().hold_pulls = false;
        self.pulls_released.notify_waiters();
    }

    /// Stops wait until `release`, before the process gets any signal
    /// (a process slow to take its SIGTERM, as it were).
    pub fn hold_stops(&self) {
        self.lock().hold_stops = true;
    }

    /// Restarts wait until `release`, before anything is started.
    pub fn hold_restarts(&self) {
        self.lock().hold_restarts = true;
    }

    pub fn release(&self) {
        let mut inner = self.lock();
        inner.hold_stops = false;
        inner.hold_restarts = false;
        drop(inner);
        self.released.notify_waiters();
    }

    /// Waits while `held` says so (a call the test holds back).
    async fn wait_while(&self, held: impl Fn(&Inner) -> bool) {
        loop {
            let released = self.released.notified();
            if !held(&self.lock()) {
                return;
            }
            released.await;
        }
    }

    /// What the container was created with.
    pub fn config(&self, id: &str) -> Option<ContainerConfig> {
        self.lock().configs.get(id).cloned()
    }

    pub fn set_logs(&self, id: &str, lines: Vec<LogLine>) {
        self.lock().logs.insert(id.to_string(), lines);
    }

    /// A container that exists before the agent starts (for restarts).
    /// The task's network traffic as `task_network_stats` reports it.
    pub fn set_network_stats(&self, task_id: &str, stats: NetworkStats) {
        self.lock().network_stats.insert(task_id.to_string(), stats);
    }

    pub fn insert(&self, task_id: &str, name: &str, state: ContainerState) -> String {
        let id = container_id(task_id, name);
        let exit = match state {
            ContainerState::Stopped(e) => Some(e),
            _ => None,
        };
        self.lock().containers.insert(
            id.clone(),
            FakeContainer {
                task_id: task_id.into(),
                name: name.into(),
                image: "img".into(),
                state,
                exit: watch::channel(exit).0,
            },
        );
        id
    }

    /// The container's process exits with `code`.
    pub fn exit(&self, id: &str, code: u32) {
        let mut inner = self.lock();
        if let Some(c) = inner.containers.get_mut(id) {
            c.state = ContainerState::Stopped(exited(code));
            c.exit.send_replace(Some(exited(code)));
        }
    }

    pub fn state(&self, id: &str) -> Option<ContainerState> {
        self.lock().containers.get(id).map(|c| c.state)
    }

    pub fn exists(&self, id: &str) -> bool {
        self.lock().containers.contains_key(id)
    }

    /// The task's network is (now) at `ip`, as a real runtime's is after a
    /// reboot made it again; `None`: it has none.
    pub fn set_address(&self, task_id: &str, ip: Option<IpAddr>) {
        let mut inner = self.lock();
        match ip {
            Some(ip) => inner.addresses.insert(task_id.to_string(), ip),
            None => inner.addresses.remove(task_id),
        };
    }
}

impl Runtime for FakeRuntime {
    async fn task_stopped(&self, task_id: &str) {
        let mut inner = self.lock();
        inner.calls.push(Call::TaskStopped(task_id.to_string()));
        inner.addresses.remove(task_id);
    }

    fn task_address(&self, task_id: &str) -> Option<IpAddr> {
        self.lock().addresses.get(task_id).copied()
    }

    fn task_network_stats(&self, task_id: &str) -> Result<Option<NetworkStats>> {
        Ok(self.lock().network_stats.get(task_id).copied())
    }

    async fn ensure_image(&self, reference: &str, _policy: PullPolicy) -> Result<ImageInfo> {
        self.lock().calls.push(Call::Pull(reference.to_string()));
        loop {
            let released = self.pulls_released.notified();
            if !self.lock().hold_pulls {
                break;
            }
            released.await;
        }
        let inner = self.lock();
        if inner.missing_images.contains(reference) {
            return Err(RuntimeError::ImageNotFound {
                reference: reference.to_string(),
                reason: "manifest unknown".into(),
            });
        }
        Ok(ImageInfo {
            name: reference.to_string(),
            digest: "sha256:0".into(),
            manifest_digest: "sha256:1".into(),
            config_digest: "sha256:2".into(),
            chain_id: "sha256:3".into(),
        })
    }

    async fn create(&self, config: &ContainerConfig) -> Result<String> {
        let id = container_id(&config.task_id, &config.definition.name);
        let mut inner = self.lock();
        inner.calls.push(Call::Create(id.clone()));
        if inner.containers.contains_key(&id) {
            return Err(RuntimeError::InvalidConfig {
                container: id,
                reason: "already exists".into(),
            });
        }
        inner.configs.insert(id.clone(), config.clone());
        if config.network_mode.uses_bridge() && !inner.addresses.contains_key(&config.task_id) {
            inner.last_address += 1;
            let ip = Ipv4Addr::new(198, 18, 0, inner.last_address);
            inner.addresses.insert(config.task_id.clone(), ip.into());
        }
        inner.containers.insert(
            id.clone(),
            FakeContainer {
                task_id: config.task_id.clone(),
                name: config.definition.name.clone(),
                image: config.definition.image.clone(),
                state: ContainerState::Created,
                exit: watch::channel(None).0,
            },
        );
        Ok(id)
    }

    async fn start(&self, id: &str) -> Result<u32> {
        let mut inner = self.lock();
        inner.calls.push(Call::Start(id.to_string()));
        let failing = inner.failing_starts.clone();
        let c = inner
            .containers
            .get_mut(id)
            .ok_or_else(|| RuntimeError::ContainerNotFound { id: id.into() })?;
        if failing.contains(&c.name) {
            return Err(RuntimeError::InvalidConfig {
                container: c.name.clone(),
                reason: "exec: \"/app\": no such file".into(),
            });
        }
        c.state = ContainerState::Running { pid: 100 };
        Ok(100)
    }

    async fn restart(&self, id: &str) -> Result<u32> {
        self.lock().calls.push(Call::Restart(id.to_string()));
        self.wait_while(|i| i.hold_restarts).await;
        let mut inner = self.lock();
        inner.last_pid = inner.last_pid.max(1000) + 1;
        let pid = inner.last_pid;
        let failing = inner.failing_restarts.clone();
        let c = inner
            .containers
            .get_mut(id)
            .ok_or_else(|| RuntimeError::ContainerNotFound { id: id.into() })?;
        if failing.contains(&c.name) {
            return Err(RuntimeError::InvalidConfig {
                container: c.name.clone(),
                reason: "snapshot is gone".into(),
            });
        }
        if matches!(
            c.state,
            ContainerState::Running { .. } | ContainerState::Paused { .. }
        ) {
            return Err(RuntimeError::StillRunning { id: id.into() });
        }
        c.state = ContainerState::Running { pid };
        // A new process: its exit is yet to come.
        c.exit.send_replace(None);
        Ok(pid)
    }

    async fn wait(&self, id: &str) -> Result<ExitStatus> {
        let mut rx = self
            .lock()
            .containers
            .get(id)
            .map(|c| c.exit.subscribe())
            .ok_or_else(|| RuntimeError::ContainerNotFound { id: id.into() })?;
        let exit = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| RuntimeError::ContainerNotFound { id: id.into() })?;
        (*exit).ok_or_else(|| RuntimeError::ContainerNotFound { id: id.into() })
    }

    async fn stop(&self, id: &str, _timeout: Duration) -> Result<ExitStatus> {
        self.lock().calls.push(Call::Stop(id.to_string()));
        self.wait_while(|i| i.hold_stops).await;
        let mut inner = self.lock();
        let c = inner
            .containers
            .get_mut(id)
            .ok_or_else(|| RuntimeError::ContainerNotFound { id: id.into() })?;
        if let ContainerState::Stopped(e) = c.state {
            return Ok(e);
        }
        // What SIGTERM leaves.
        c.state = ContainerState::Stopped(exited(143));
        c.exit.send_replace(Some(exited(143)));
        Ok(exited(143))
    }

    async fn remove(&self, id: &str) -> Result<()> {
        let mut inner = self.lock();
        inner.calls.push(Call::Remove(id.to_string()));
        inner.containers.remove(id);
        Ok(())
    }

    async fn stats(&self, id: &str) -> Result<ContainerStats> {
        if self.exists(id) {
            Ok(ContainerStats::default())
        } else {
            Err(RuntimeError::ContainerNotFound { id: id.into() })
        }
    }

    async fn logs(&self, id: &str, _follow: bool) -> Result<LogLines> {
        let lines = self
            .lock()
            .logs
            .get(id)
            .cloned()
            .ok_or_else(|| RuntimeError::ContainerNotFound { id: id.into() })?;
        Ok(Box::pin(futures::stream::iter(lines.into_iter().map(Ok))))
    }

    async fn exec(&self, _id: &str, _command: &[String], _timeout: Duration) -> Result<ExecOutput> {
        // Every health check passes.
        Ok(ExecOutput {
            exit_code: 0,
            output: Vec::new(),
        })
    }

    async fn list(&self) -> Result<Vec<OwnedContainer>> {
        let mut inner = self.lock();
        if inner.list_failures > 0 {
            inner.list_failures -= 1;
            return Err(RuntimeError::ContainerdUnreachable {
                socket: "/fake.sock".into(),
                reason: "down".into(),
            });
        }
        Ok(inner
            .containers
            .iter()
            .map(|(id, c)| OwnedContainer {
                id: id.clone(),
                task_id: c.task_id.clone(),
                container_name: c.name.clone(),
                image: c.image.clone(),
                state: c.state,
            })
            .collect())
    }
}

// ------------------------------------------------------------- builders

pub(crate) fn container(name: &str, image: &str, essential: bool) -> pb::ContainerDefinition {
    pb::ContainerDefinition {
        name: name.into(),
        image: image.into(),
        essential,
        cpu: 256,
        memory: Some(128),
        ..Default::default()
    }
}

/// `c` with an enabled restart policy.
pub(crate) fn restarting(
    mut c: pb::ContainerDefinition,
    period_secs: u32,
    ignored_exit_codes: &[i32],
) -> pb::ContainerDefinition {
    c.restart_policy = Some(pb::RestartPolicy {
        enabled: true,
        ignored_exit_codes: ignored_exit_codes.to_vec(),
        restart_attempt_period: Some(period_secs),
    });
    c
}

pub(crate) fn depends(
    mut c: pb::ContainerDefinition,
    on: &str,
    condition: &str,
) -> pb::ContainerDefinition {
    c.depends_on.push(pb::ContainerDependency {
        container_name: on.into(),
        condition: condition.into(),
    });
    c
}

pub(crate) fn assignment(
    task_id: &str,
    containers: Vec<pb::ContainerDefinition>,
) -> pb::Assignment {
    pb::Assignment {
        task_id: task_id.into(),
        desired_status: "RUNNING".into(),
        task_definition: Some(pb::TaskDefinition {
            family: "web".into(),
            revision: 1,
            status: "ACTIVE".into(),
            spec: Some(pb::TaskDefinitionSpec {
                family: "web".into(),
                container_definitions: containers,
                network_mode: "host".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        last_status: "PENDING".into(),
        cluster: "default".into(),
        ..Default::default()
    }
}

/// The usual pair: an essential `web` and a non-essential `sidecar` that
/// starts after it (and is listed first, so order comes from dependsOn).
pub(crate) fn web_task(task_id: &str) -> pb::Assignment {
    assignment(
        task_id,
        vec![
            depends(container("sidecar", "side:1", false), "web", "START"),
            container("web", "web:1", true),
        ],
    )
}

pub(crate) fn set(
    sequence: u64,
    complete: bool,
    assignments: Vec<pb::Assignment>,
) -> pb::AssignmentSet {
    pb::AssignmentSet {
        sequence,
        complete,
        assignments,
    }
}
