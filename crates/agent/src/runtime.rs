//! The `Runtime` trait the task runner drives, and the plain data it speaks.
//! The containerd implementation lives in `crate::containerd`; a fake is only
//! for unit tests of pure logic.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use berth_types::{ContainerDefinition, NetworkBinding, NetworkMode, Volume};
use futures::Stream;

use crate::error::Result;

/// Labels every container of ours carries, so a new runtime instance can find
/// them and tell which task and container definition each belongs to.
pub const LABEL_TASK_ID: &str = "berth.task-id";
pub const LABEL_CONTAINER_NAME: &str = "berth.container-name";
pub const LABEL_TASK_FAMILY: &str = "berth.task-family";
pub const LABEL_MANAGED: &str = "berth.managed";
/// The task's limits, so a container restarted later (after a host reboot
/// emptied the cgroups) gets its task cgroup back with them.
pub const LABEL_TASK_CPU: &str = "berth.task-cpu";
pub const LABEL_TASK_MEMORY: &str = "berth.task-memory";
/// `bridge` on the containers of a bridge-mode task, so a restart after a
/// reboot sets the task's network namespace up again first.
pub const LABEL_NETWORK_MODE: &str = "berth.network-mode";
/// The task's cluster, so a restart can write the same resolv.conf (its
/// search domain is `CLUSTER.berth`).
pub const LABEL_CLUSTER: &str = "berth.cluster";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Resolve the tag against the registry every time; fetch what changed.
    Always,
    /// Use the local image when there is one.
    #[default]
    IfNotPresent,
}

impl PullPolicy {
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().replace('_', "-").as_str() {
            "always" => Some(Self::Always),
            "if-not-present" | "ifnotpresent" => Some(Self::IfNotPresent),
            _ => None,
        }
    }
}

/// What an image resolved to on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// The normalized name containerd stores it under
    /// (`docker.io/library/busybox:latest`).
    pub name: String,
    /// Digest of the manifest (or index) the name points at.
    pub digest: String,
    /// Digest of the platform-specific manifest.
    pub manifest_digest: String,
    pub config_digest: String,
    /// Chain ID of the top layer: the snapshot containers are made from.
    pub chain_id: String,
}

/// Everything needed to create one container of a task.
#[derive(Debug, Clone)]
pub struct ContainerConfig {
    pub task_id: String,
    pub task_family: String,
    /// The cluster the task runs in: its service names are
    /// `SERVICE.CLUSTER.berth` in Berth's DNS.
    pub cluster: String,
    pub definition: ContainerDefinition,
    pub network_mode: NetworkMode,
    /// The task's published ports as the control plane chose them (every
    /// container of the task carries all of them). Bridge mode publishes
    /// exactly these; host mode ignores them (the container listens on the
    /// host itself).
    pub network_bindings: Vec<NetworkBinding>,
    pub volumes: Vec<Volume>,
    /// Task-level CPU units: a hard CPU quota for all of the task's
    /// containers together (its task cgroup's).
    pub task_cpu: Option<u32>,
    /// Task-level memory in MiB: the limit of all of the task's containers
    /// together (its task cgroup's).
    pub task_memory: Option<u32>,
    pub pull_policy: PullPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    pub code: u32,
    /// The kernel's OOM killer ended the container.
    pub oom_killed: bool,
    pub exited_at: Option<SystemTime>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    /// Created, with no process started yet.
    Created,
    Running {
        pid: u32,
    },
    Paused {
        pid: u32,
    },
    Stopped(ExitStatus),
    Unknown,
}

/// A container this runtime owns, as found by `list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedContainer {
    pub id: String,
    pub task_id: String,
    pub container_name: String,
    pub image: String,
    pub state: ContainerState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ContainerStats {
    /// Cumulative CPU time, nanoseconds.
    pub cpu_usage_ns: u64,
    pub memory_usage_bytes: u64,
    /// The cgroup's limit; `u64::MAX`-ish values mean unlimited.
    pub memory_limit_bytes: u64,
    /// OOM kills seen by the container's cgroup.
    pub oom_kills: u64,
    /// 1 or 2: which cgroup metrics the shim returned.
    pub cgroup_version: u8,
}

/// A task's network traffic since its network was set up, from the task's
/// point of view (what it received and sent). Bridge- and task-mode tasks
/// only: a host-mode task shares the host's interfaces, so there is no
/// figure of its own to give.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NetworkStats {
    pub receive_bytes: u64,
    pub transmit_bytes: u64,
    pub receive_packets: u64,
    pub transmit_packets: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: u32,
    /// stdout and stderr interleaved, capped in size.
    pub output: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub stream: LogStream,
    /// RFC 3339 timestamp written by the log driver.
    pub time: String,
    pub line: String,
}

pub type LogLines = Pin<Box<dyn Stream<Item = Result<LogLine>> + Send>>;

/// The container runtime as the task runner sees it. Methods take containerd
/// container IDs as returned by `create`.
pub trait Runtime: Send + Sync + 'static {
    /// Make the image available locally, pulling it as `policy` says.
    fn ensure_image(
        &self,
        reference: &str,
        policy: PullPolicy,
    ) -> impl Future<Output = Result<ImageInfo>> + Send;

    /// Create the container (not started). Ensures the image first.
    fn create(&self, config: &ContainerConfig) -> impl Future<Output = Result<String>> + Send;

    /// Start the container's process; returns its host PID.
    fn start(&self, id: &str) -> impl Future<Output = Result<u32>> + Send;

    /// Start the container again after its process exited, in place: a new
    /// process (containerd task) in the same container, with the same
    /// snapshot, and output appended to the same log files. Also finishes
    /// a restart that was cut short (the old process already deleted, or
    /// the new one created but not started). Refused while the process
    /// still runs. Returns the new process's host PID.
    fn restart(&self, id: &str) -> impl Future<Output = Result<u32>> + Send;

    /// Wait until the container's process exits.
    fn wait(&self, id: &str) -> impl Future<Output = Result<ExitStatus>> + Send;

    /// SIGTERM, then SIGKILL after `timeout`; returns how it exited.
    fn stop(&self, id: &str, timeout: Duration) -> impl Future<Output = Result<ExitStatus>> + Send;

    /// Delete the container and everything it holds on the host: task, shim,
    /// snapshot, log files, and the task's scratch volumes once its last
    /// container is gone. A running container is killed first.
    fn remove(&self, id: &str) -> impl Future<Output = Result<()>> + Send;

    fn stats(&self, id: &str) -> impl Future<Output = Result<ContainerStats>> + Send;

    /// The container's log lines; with `follow`, keeps streaming new lines
    /// until the container has exited and the log is drained.
    fn logs(&self, id: &str, follow: bool) -> impl Future<Output = Result<LogLines>> + Send;

    /// Run `command` inside the running container.
    fn exec(
        &self,
        id: &str,
        command: &[String],
        timeout: Duration,
    ) -> impl Future<Output = Result<ExecOutput>> + Send;

    /// Every container this runtime owns, with its state: what a restarted
    /// agent reconciles against.
    fn list(&self) -> impl Future<Output = Result<Vec<OwnedContainer>>> + Send;

    /// Every container of the task has exited: release what another task may
    /// need at once (its network namespace, address and host ports, which
    /// the control plane hands out again as soon as the task is STOPPED),
    /// while the stopped containers and their logs stay for the cleanup
    /// wait. Idempotent; failures are logged, and what is left is swept at
    /// the next agent start.
    fn task_stopped(&self, task_id: &str) -> impl Future<Output = ()> + Send {
        let _ = task_id;
        async {}
    }

    /// The task's own address (bridge and task network modes) while its
    /// network is set up on this host: what its reports tell the control
    /// plane. `None` for host- and none-mode tasks, and before the network
    /// exists or after it is gone. Cheap enough to ask after every create
    /// and restart (a small local file at most).
    fn task_address(&self, task_id: &str) -> Option<IpAddr> {
        let _ = task_id;
        None
    }

    /// The task's network traffic (bridge and task network modes) while
    /// its network is set up on this host; `Ok(None)` for host- and
    /// none-mode tasks, and when there is no network (yet, or any more).
    /// Cheap: a few small kernel files.
    fn task_network_stats(&self, task_id: &str) -> Result<Option<NetworkStats>> {
        let _ = task_id;
        Ok(None)
    }
}
