//! Task definitions in the shape ECS users know (camelCase field names), as
//! stored in the replicated state. These types are also the Raft log format
//! (bincode), so they avoid serde attributes that need a self-describing
//! format (`skip_serializing_if`, `flatten`, untagged enums). The lenient
//! parsing of ECS JSON and YAML files lives in the `berth-ecs` crate
//! (`berth_ecs::taskdef`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Containers share the host's network namespace (the only mode that
    /// publishes ports in Berth today).
    #[default]
    Host,
    /// Containers get a private network namespace with only loopback.
    None,
    /// The task gets its own network namespace on the instance's bridge
    /// (`berth0`, through the CNI bridge plugin); its container ports are
    /// published on host ports, fixed or picked from the dynamic range.
    /// Needs command level 2 (see `Command::level`).
    Bridge,
    /// The task gets its own network namespace and IP address on the
    /// instance's bridge, like ECS's `awsvpc` (accepted as an alias): its
    /// container ports are reached on that IP directly and nothing is
    /// published on the host. Needs command level 3.
    Task,
}

impl NetworkMode {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::Host => "host",
            NetworkMode::None => "none",
            NetworkMode::Bridge => "bridge",
            NetworkMode::Task => "task",
        }
    }

    /// Also accepts `awsvpc`, ECS's name for what Berth calls `task`.
    pub fn parse(s: &str) -> Option<Self> {
        if s.eq_ignore_ascii_case("awsvpc") {
            return Some(NetworkMode::Task);
        }
        [
            NetworkMode::Host,
            NetworkMode::None,
            NetworkMode::Bridge,
            NetworkMode::Task,
        ]
        .into_iter()
        .find(|m| m.as_str().eq_ignore_ascii_case(s))
    }

    /// Whether the task gets its own network namespace on the instance's
    /// bridge, with an address of its own.
    pub fn uses_bridge(self) -> bool {
        matches!(self, NetworkMode::Bridge | NetworkMode::Task)
    }
}

/// Host ports handed out for bridge-mode mappings without a fixed
/// `hostPort`: ECS's default ephemeral range, above the ranges Linux
/// (32768-60999) gives to outgoing connections' own ports as little as
/// Docker's does.
pub const DYNAMIC_HOST_PORTS: std::ops::RangeInclusive<u32> = 49153..=65535;

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub container_port: u32,
    /// In host networking the host port is the container port; a different
    /// value is rejected by validation, as ECS does. In bridge networking
    /// absent or 0 means a port from [`DYNAMIC_HOST_PORTS`], chosen when
    /// the task is placed.
    pub host_port: Option<u32>,
    pub protocol: Protocol,
}

impl PortMapping {
    /// The port this mapping occupies on the instance in host networking.
    pub fn effective_host_port(&self) -> u32 {
        self.host_port.unwrap_or(self.container_port)
    }

    /// The host port fixed by the definition in `mode`, or `None` when one
    /// is picked at placement (bridge mode without a `hostPort`) or nothing
    /// is published (`none`).
    pub fn fixed_host_port(&self, mode: NetworkMode) -> Option<u32> {
        match mode {
            NetworkMode::Host => Some(self.effective_host_port()).filter(|p| *p != 0),
            NetworkMode::Bridge => self.host_port.filter(|p| *p != 0),
            // Reached on the task's own address; nothing on the host.
            NetworkMode::None | NetworkMode::Task => None,
        }
    }
}

/// Where one container port of a placed task is published on its instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkBinding {
    pub container_name: String,
    pub container_port: u32,
    pub host_port: u32,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValuePair {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// ECS form: `["CMD", "arg", ...]` or `["CMD-SHELL", "script"]`.
    pub command: Vec<String>,
    pub interval: u32,
    pub timeout: u32,
    pub retries: u32,
    pub start_period: u32,
}

impl HealthCheck {
    pub const DEFAULT_INTERVAL: u32 = 30;
    pub const DEFAULT_TIMEOUT: u32 = 5;
    pub const DEFAULT_RETRIES: u32 = 3;
    pub const DEFAULT_START_PERIOD: u32 = 0;
}

/// ECS's per-container restart policy: the agent restarts an exited
/// container in place (same task, same container, new process) unless the
/// exit code is ignored or the container ran for less than the attempt
/// period since it was last (re)started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestartPolicy {
    pub enabled: bool,
    /// Exit codes that end the container as if it had no policy.
    pub ignored_exit_codes: Vec<i32>,
    /// How long (seconds) the container must have run since its last
    /// (re)start for an exit to be restarted. Named as ECS names it in JSON,
    /// so `-o json` output registers again unchanged.
    #[serde(rename = "restartAttemptPeriod")]
    pub restart_attempt_period_secs: u32,
}

impl RestartPolicy {
    /// ECS's default when `restartAttemptPeriod` is not given.
    pub const DEFAULT_ATTEMPT_PERIOD_SECS: u32 = 300;
    /// ECS's bounds on `restartAttemptPeriod`.
    pub const MIN_ATTEMPT_PERIOD_SECS: u32 = 60;
    pub const MAX_ATTEMPT_PERIOD_SECS: u32 = 1800;
    /// ECS's limit on `ignoredExitCodes`.
    pub const MAX_IGNORED_EXIT_CODES: usize = 50;

    /// An enabled policy with ECS's defaults (no ignored codes, 300 s).
    pub fn enabled() -> Self {
        Self {
            enabled: true,
            ignored_exit_codes: Vec::new(),
            restart_attempt_period_secs: Self::DEFAULT_ATTEMPT_PERIOD_SECS,
        }
    }

    /// Whether an exit with `code` may be restarted at all (the attempt
    /// period is the agent's to check, as only it knows the run time).
    pub fn restarts_exit_code(&self, code: i32) -> bool {
        self.enabled && !self.ignored_exit_codes.contains(&code)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DependencyCondition {
    Start,
    Complete,
    Success,
    Healthy,
}

impl DependencyCondition {
    pub fn as_str(self) -> &'static str {
        match self {
            DependencyCondition::Start => "START",
            DependencyCondition::Complete => "COMPLETE",
            DependencyCondition::Success => "SUCCESS",
            DependencyCondition::Healthy => "HEALTHY",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value.to_ascii_uppercase().as_str() {
            "START" => Some(Self::Start),
            "COMPLETE" => Some(Self::Complete),
            "SUCCESS" => Some(Self::Success),
            "HEALTHY" => Some(Self::Healthy),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerDependency {
    pub container_name: String,
    pub condition: DependencyCondition,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MountPoint {
    pub source_volume: String,
    pub container_path: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    pub name: String,
    /// A directory of the host; `None` makes a scratch volume that lives and
    /// dies with the task.
    pub host_source_path: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerDefinition {
    pub name: String,
    pub image: String,
    /// CPU units (1024 = one core); 0 means no reservation.
    pub cpu: u32,
    /// Hard memory limit in MiB.
    pub memory: Option<u32>,
    /// Soft memory reservation in MiB.
    pub memory_reservation: Option<u32>,
    pub port_mappings: Vec<PortMapping>,
    pub environment: Vec<KeyValuePair>,
    pub command: Vec<String>,
    pub entry_point: Vec<String>,
    pub essential: bool,
    pub health_check: Option<HealthCheck>,
    pub working_directory: Option<String>,
    pub user: Option<String>,
    /// Seconds between SIGTERM and SIGKILL when the container is stopped.
    pub stop_timeout: Option<u32>,
    pub depends_on: Vec<ContainerDependency>,
    pub mount_points: Vec<MountPoint>,
    pub readonly_root_filesystem: bool,
    /// Restart the container in place when it exits; `None` never does.
    pub restart_policy: Option<RestartPolicy>,
    /// Environment variables whose values are cluster secrets (ECS's
    /// `secrets`): only the names are in the definition.
    pub secrets: Vec<crate::secrets::SecretRef>,
    /// The secret holding the registry credentials the image is pulled
    /// with (ECS's `repositoryCredentials.credentialsParameter`); shown in
    /// JSON and YAML as that object.
    #[serde(with = "crate::secrets::repository_credentials_shape")]
    pub repository_credentials: Option<String>,
}

impl ContainerDefinition {
    /// A container with only the required fields set and ECS's defaults for
    /// the rest (essential, no limits).
    pub fn new(name: impl Into<String>, image: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            image: image.into(),
            cpu: 0,
            memory: None,
            memory_reservation: None,
            port_mappings: Vec::new(),
            environment: Vec::new(),
            command: Vec::new(),
            entry_point: Vec::new(),
            essential: true,
            health_check: None,
            working_directory: None,
            user: None,
            stop_timeout: None,
            depends_on: Vec::new(),
            mount_points: Vec::new(),
            readonly_root_filesystem: false,
            restart_policy: None,
            secrets: Vec::new(),
            repository_credentials: None,
        }
    }
}

/// What a person registers: everything but the revision and bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskDefinitionSpec {
    pub family: String,
    pub container_definitions: Vec<ContainerDefinition>,
    /// Task-level CPU units, if the task reserves a fixed amount.
    pub cpu: Option<u32>,
    /// Task-level memory in MiB, if the task reserves a fixed amount.
    pub memory: Option<u32>,
    pub network_mode: NetworkMode,
    pub volumes: Vec<Volume>,
    pub tags: Vec<Tag>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskDefinitionStatus {
    Active,
    Inactive,
    /// Deleted (`DeleteTaskDefinition`): no longer stored. Only a delete's
    /// answer and its event carry it.
    Deleted,
}

impl TaskDefinitionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskDefinitionStatus::Active => "ACTIVE",
            TaskDefinitionStatus::Inactive => "INACTIVE",
            TaskDefinitionStatus::Deleted => "DELETED",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value.to_ascii_uppercase().as_str() {
            "ACTIVE" => Some(Self::Active),
            "INACTIVE" => Some(Self::Inactive),
            "DELETED" => Some(Self::Deleted),
            _ => None,
        }
    }
}

/// One registered revision of a family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskDefinition {
    pub family: String,
    pub revision: u32,
    pub status: TaskDefinitionStatus,
    pub registered_at_ms: i64,
    pub deregistered_at_ms: Option<i64>,
    pub spec: TaskDefinitionSpec,
}

impl TaskDefinition {
    /// `family:revision`, the name people and commands use.
    pub fn id(&self) -> String {
        format!("{}:{}", self.family, self.revision)
    }
}

/// A reference to a task definition as people type it: `web` (latest ACTIVE
/// revision) or `web:3`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskDefinitionRef {
    pub family: String,
    pub revision: Option<u32>,
}

impl TaskDefinitionRef {
    pub fn parse(text: &str) -> Result<Self, crate::FieldError> {
        let bad = |why: &str| crate::FieldError::new("taskDefinition", why.to_string());
        let (family, revision) = match text.split_once(':') {
            None => (text, None),
            Some((family, rev)) => {
                let revision: u32 = rev.parse().map_err(|_| {
                    bad(&format!(
                        "revision {rev:?} in {text:?} is not a number; use FAMILY or FAMILY:REVISION, e.g. web:3"
                    ))
                })?;
                if revision == 0 {
                    return Err(bad(
                        "revisions start at 1; use FAMILY or FAMILY:REVISION, e.g. web:1",
                    ));
                }
                (family, Some(revision))
            }
        };
        crate::validate::check_name("taskDefinition", family)?;
        Ok(Self {
            family: family.to_string(),
            revision,
        })
    }
}

impl std::fmt::Display for TaskDefinitionRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.revision {
            Some(rev) => write!(f, "{}:{}", self.family, rev),
            None => write!(f, "{}", self.family),
        }
    }
}
