//! Tasks: one running copy of a task definition on one instance.
//!
//! `desired_status` is written only by the control plane; `last_status` only
//! moves forward (PROVISIONING -> PENDING -> RUNNING -> STOPPING -> STOPPED),
//! whatever order reports arrive in, so duplicated or delayed reports are
//! harmless.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskStatus {
    /// Accepted, not yet placed on an instance.
    Provisioning,
    /// Placed; the agent is pulling the image and creating containers.
    Pending,
    Running,
    /// Asked to stop while it is behind a load balancer: it has left the
    /// load balancer (drained) and keeps running through its deregistration
    /// delay, then the agent is told to stop it. Set by the control plane.
    Deactivating,
    /// Asked to stop; containers are being stopped.
    Stopping,
    Stopped,
}

impl TaskStatus {
    /// Parses a status an agent may report (not PROVISIONING or
    /// DEACTIVATING, which only the control plane sets).
    pub fn parse_reported(value: &str) -> Option<Self> {
        Self::parse(value)
            .filter(|s| !matches!(s, TaskStatus::Provisioning | TaskStatus::Deactivating))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Provisioning => "PROVISIONING",
            TaskStatus::Pending => "PENDING",
            TaskStatus::Running => "RUNNING",
            TaskStatus::Deactivating => "DEACTIVATING",
            TaskStatus::Stopping => "STOPPING",
            TaskStatus::Stopped => "STOPPED",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value.to_ascii_uppercase().as_str() {
            "PROVISIONING" => Some(Self::Provisioning),
            "PENDING" => Some(Self::Pending),
            "RUNNING" => Some(Self::Running),
            "DEACTIVATING" => Some(Self::Deactivating),
            "STOPPING" => Some(Self::Stopping),
            "STOPPED" => Some(Self::Stopped),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DesiredStatus {
    Running,
    Stopped,
}

impl DesiredStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DesiredStatus::Running => "RUNNING",
            DesiredStatus::Stopped => "STOPPED",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value.to_ascii_uppercase().as_str() {
            "RUNNING" => Some(Self::Running),
            "STOPPED" => Some(Self::Stopped),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopCode {
    TaskFailedToStart,
    EssentialContainerExited,
    UserInitiated,
    InstanceLost,
    /// Stopped by its service: replaced, scaled down, unhealthy, drained.
    ServiceSchedulerInitiated,
}

impl StopCode {
    pub fn parse(value: &str) -> Option<Self> {
        [
            StopCode::TaskFailedToStart,
            StopCode::EssentialContainerExited,
            StopCode::UserInitiated,
            StopCode::InstanceLost,
            StopCode::ServiceSchedulerInitiated,
        ]
        .into_iter()
        .find(|c| c.as_str().eq_ignore_ascii_case(value))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StopCode::TaskFailedToStart => "TaskFailedToStart",
            StopCode::EssentialContainerExited => "EssentialContainerExited",
            StopCode::UserInitiated => "UserInitiated",
            StopCode::InstanceLost => "InstanceLost",
            StopCode::ServiceSchedulerInitiated => "ServiceSchedulerInitiated",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ContainerStatus {
    Pending,
    Running,
    Stopped,
}

impl ContainerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerStatus::Pending => "PENDING",
            ContainerStatus::Running => "RUNNING",
            ContainerStatus::Stopped => "STOPPED",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value.to_ascii_uppercase().as_str() {
            "PENDING" => Some(Self::Pending),
            "RUNNING" => Some(Self::Running),
            "STOPPED" => Some(Self::Stopped),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Health {
    Unknown,
    Healthy,
    Unhealthy,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "UNKNOWN",
            Health::Healthy => "HEALTHY",
            Health::Unhealthy => "UNHEALTHY",
        }
    }

    pub fn parse(value: &str) -> Self {
        match value.to_ascii_uppercase().as_str() {
            "HEALTHY" => Health::Healthy,
            "UNHEALTHY" => Health::Unhealthy,
            _ => Health::Unknown,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerState {
    pub name: String,
    pub status: ContainerStatus,
    pub exit_code: Option<i32>,
    pub reason: String,
    pub health: Health,
    /// How often the agent restarted the container in place under its
    /// restart policy; only grows for a given task.
    pub restart_count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    pub id: String,
    pub cluster: String,
    pub family: String,
    pub revision: u32,
    pub instance_id: Option<String>,
    pub group: String,
    pub started_by: String,
    pub desired_status: DesiredStatus,
    pub last_status: TaskStatus,
    pub containers: Vec<ContainerState>,
    pub stop_code: Option<StopCode>,
    pub stopped_reason: String,
    /// Why a PROVISIONING task has not been placed (for people).
    pub placement_reason: String,
    /// `CONTAINER.env.KEY=VALUE` overrides given to RunTask.
    pub overrides: Vec<(String, String, String)>,
    pub placement_strategies: Vec<String>,
    pub placement_constraints: Vec<String>,
    /// What the task holds on its instance, fixed when it is created so the
    /// accounting never depends on looking the task definition up again.
    pub reservation: crate::resources::Reservation,
    pub created_at_ms: i64,
    pub pending_at_ms: Option<i64>,
    pub started_at_ms: Option<i64>,
    pub stopping_at_ms: Option<i64>,
    pub stopped_at_ms: Option<i64>,
    /// The task's own address on its instance's bridge (bridge and task
    /// network modes), as its agent reported it.
    pub ip: Option<String>,
    /// While DEACTIVATING: when its deregistration delay ends and the agent
    /// is told to stop it. `None` otherwise.
    pub deactivating_until_ms: Option<i64>,
    /// Appended last: records are stored positionally (bincode).
    #[serde(default)]
    pub tags: std::collections::BTreeMap<String, String>,
}

impl Task {
    /// A record that carries its id and nothing else: how the
    /// de-duplication window keeps an answer of many tasks without a copy
    /// of each (`berth_store::dedup`); a repeat is answered with the
    /// current records instead.
    pub fn id_only(id: String) -> Self {
        Task {
            id,
            cluster: String::new(),
            family: String::new(),
            revision: 0,
            instance_id: None,
            group: String::new(),
            started_by: String::new(),
            desired_status: DesiredStatus::Running,
            last_status: TaskStatus::Provisioning,
            containers: Vec::new(),
            stop_code: None,
            stopped_reason: String::new(),
            placement_reason: String::new(),
            overrides: Vec::new(),
            placement_strategies: Vec::new(),
            placement_constraints: Vec::new(),
            reservation: Default::default(),
            created_at_ms: 0,
            pending_at_ms: None,
            started_at_ms: None,
            stopping_at_ms: None,
            stopped_at_ms: None,
            ip: None,
            deactivating_until_ms: None,
            tags: Default::default(),
        }
    }

    pub fn task_definition(&self) -> String {
        format!("{}:{}", self.family, self.revision)
    }

    /// Moves `last_status` forward to `to`, stamping the transition time;
    /// a report of an earlier status changes nothing.
    pub fn advance(&mut self, to: TaskStatus, at_ms: i64) -> bool {
        if to <= self.last_status {
            return false;
        }
        self.last_status = to;
        if to >= TaskStatus::Stopping {
            // Stopping anyway (its containers exited, its instance was
            // lost): nothing is left to wait for.
            self.deactivating_until_ms = None;
        }
        let stamp = Some(at_ms);
        match to {
            TaskStatus::Provisioning => {}
            TaskStatus::Pending => self.pending_at_ms = self.pending_at_ms.or(stamp),
            TaskStatus::Running => self.started_at_ms = self.started_at_ms.or(stamp),
            TaskStatus::Deactivating => {}
            TaskStatus::Stopping => self.stopping_at_ms = self.stopping_at_ms.or(stamp),
            TaskStatus::Stopped => self.stopped_at_ms = self.stopped_at_ms.or(stamp),
        }
        true
    }

    /// The desired status its agent acts on: RUNNING until a DEACTIVATING
    /// task's deregistration delay is over.
    pub fn agent_desired_status(&self) -> DesiredStatus {
        if self.deactivating_until_ms.is_some() {
            DesiredStatus::Running
        } else {
            self.desired_status
        }
    }

    /// A RUNNING task asked to stop goes DEACTIVATING first, until
    /// `until_ms`, when it is behind a load balancer. False if it is not
    /// RUNNING (it has no traffic to drain).
    pub fn deactivate(&mut self, until_ms: i64) -> bool {
        if self.last_status != TaskStatus::Running {
            return false;
        }
        self.last_status = TaskStatus::Deactivating;
        self.deactivating_until_ms = Some(until_ms);
        true
    }

    /// Sets the desired status to STOPPED once, keeping the first reason.
    pub fn request_stop(&mut self, code: StopCode, reason: &str) -> bool {
        if self.desired_status == DesiredStatus::Stopped {
            return false;
        }
        self.desired_status = DesiredStatus::Stopped;
        self.stop_code = Some(code);
        self.stopped_reason = reason.to_string();
        true
    }
}

/// Parses `CONTAINER.env.KEY=VALUE`.
pub fn parse_override(text: &str) -> Result<(String, String, String), crate::FieldError> {
    let bad = || {
        crate::FieldError::new(
            "overrides",
            format!("{text:?} is not CONTAINER.env.KEY=VALUE, e.g. web.env.GREETING=hi"),
        )
    };
    let (target, value) = text.split_once('=').ok_or_else(bad)?;
    let (container, key) = parse_override_target(target).ok_or_else(bad)?;
    Ok((container, key, value.to_string()))
}

/// Parses the `CONTAINER.env.KEY` an override sets, as the API carries it
/// (the value travels beside it).
pub fn parse_override_target(target: &str) -> Option<(String, String)> {
    let mut parts = target.splitn(3, '.');
    let (Some(container), Some("env"), Some(key)) = (parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    if container.is_empty() || key.is_empty() {
        return None;
    }
    Some((container.to_string(), key.to_string()))
}

/// `CONTAINER.env.KEY`, the inverse of [`parse_override_target`].
pub fn override_target(container: &str, key: &str) -> String {
    format!("{container}.env.{key}")
}

/// What a task that has not started yet is waiting for, in words for
/// people (`berth task describe`): why a PROVISIONING task is not placed,
/// and what a PENDING one waits for on its instance (an image pull, a
/// disconnected agent). `None` for tasks past PENDING. `instance` is the
/// task's instance as described now, if it still exists.
pub fn waiting_for(
    task: &Task,
    instance: Option<&crate::view::InstanceView>,
    now_ms: i64,
) -> Option<String> {
    match task.last_status {
        TaskStatus::Provisioning => Some(if task.placement_reason.is_empty() {
            "not placed yet: waiting for the scheduler".to_string()
        } else {
            format!("not placed yet: {}", task.placement_reason)
        }),
        TaskStatus::Pending => {
            let on = task.instance_id.as_deref().unwrap_or("its instance");
            let Some(instance) = instance else {
                return Some(format!(
                    "placed on {on}, which is not registered any more; the task stops when the control plane notices"
                ));
            };
            if !instance.agent_connected {
                let seen = instance.last_seen_ms.map_or_else(
                    || "never".to_string(),
                    |at| format!("{}s ago", (now_ms - at).max(0) / 1000),
                );
                return Some(format!(
                    "placed on {on}, whose agent is disconnected (last heard from {seen}): the task starts when the agent reconnects, or stops if the instance is declared lost"
                ));
            }
            let busy: Vec<String> = task
                .containers
                .iter()
                .filter(|c| !c.reason.is_empty())
                .map(|c| format!("container {}: {}", c.name, c.reason))
                .collect();
            Some(if busy.is_empty() {
                format!("placed on {on}; its agent is starting it")
            } else {
                busy.join("; ")
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> Task {
        Task {
            id: "t-1".into(),
            cluster: "default".into(),
            family: "web".into(),
            revision: 1,
            instance_id: None,
            group: String::new(),
            started_by: String::new(),
            desired_status: DesiredStatus::Running,
            last_status: TaskStatus::Provisioning,
            containers: vec![],
            stop_code: None,
            stopped_reason: String::new(),
            placement_reason: String::new(),
            overrides: vec![],
            placement_strategies: vec![],
            placement_constraints: vec![],
            reservation: Default::default(),
            created_at_ms: 0,
            pending_at_ms: None,
            started_at_ms: None,
            stopping_at_ms: None,
            stopped_at_ms: None,
            ip: None,
            deactivating_until_ms: None,
            tags: Default::default(),
        }
    }

    #[test]
    fn a_waiting_task_says_what_it_waits_for() {
        let mut t = task();
        assert_eq!(
            waiting_for(&t, None, 0).unwrap(),
            "not placed yet: waiting for the scheduler"
        );
        t.placement_reason = "no instance has 512 MiB free".into();
        assert!(waiting_for(&t, None, 0).unwrap().contains("512 MiB"));
        t.last_status = TaskStatus::Pending;
        t.instance_id = Some("i-1".into());
        assert!(waiting_for(&t, None, 0).unwrap().contains("not registered"));
        let mut instance: crate::view::InstanceView = serde_json::from_value(serde_json::json!({
            "id": "i-1", "cluster": "default", "hostname": "h", "attributes": {},
            "activationId": "a", "registeredAtMs": 0, "certificateExpiresAtMs": 0,
            "status": "ACTIVE", "deregisteredAtMs": null, "agentVersion": null,
            "agentConnected": false, "connectedSinceMs": null, "lastSeenMs": 40_000,
            "cpuRegistered": 0, "cpuRemaining": 0, "memoryRegisteredMib": 0,
            "memoryRemainingMib": 0, "portsInUse": [], "runningTasks": 0, "draining": false
        }))
        .expect("an instance view");
        let said = waiting_for(&t, Some(&instance), 100_000).unwrap();
        assert!(
            said.contains("disconnected (last heard from 60s ago)"),
            "{said}"
        );
        instance.agent_connected = true;
        assert!(waiting_for(&t, Some(&instance), 0)
            .unwrap()
            .contains("starting it"));
        t.containers.push(ContainerState {
            name: "web".into(),
            status: ContainerStatus::Pending,
            exit_code: None,
            reason: "pulling image web:1 and creating the container".into(),
            health: Health::Unknown,
            restart_count: 0,
        });
        assert_eq!(
            waiting_for(&t, Some(&instance), 0).unwrap(),
            "container web: pulling image web:1 and creating the container"
        );
        t.last_status = TaskStatus::Running;
        assert_eq!(waiting_for(&t, Some(&instance), 0), None);
    }

    #[test]
    fn status_only_moves_forward_and_stamps_once() {
        let mut t = task();
        assert!(t.advance(TaskStatus::Pending, 5));
        assert!(t.advance(TaskStatus::Running, 7));
        assert!(
            !t.advance(TaskStatus::Pending, 9),
            "a late PENDING report is ignored"
        );
        assert_eq!(t.last_status, TaskStatus::Running);
        assert!(t.advance(TaskStatus::Stopped, 11));
        assert!(!t.advance(TaskStatus::Running, 12));
        assert_eq!(
            (t.pending_at_ms, t.started_at_ms, t.stopped_at_ms),
            (Some(5), Some(7), Some(11))
        );
    }

    #[test]
    fn first_stop_reason_wins() {
        let mut t = task();
        assert!(t.request_stop(StopCode::UserInitiated, "by hand"));
        assert!(!t.request_stop(StopCode::InstanceLost, "lost"));
        assert_eq!(t.stop_code, Some(StopCode::UserInitiated));
        assert_eq!(t.stopped_reason, "by hand");
    }

    #[test]
    fn overrides_parse_or_say_the_shape() {
        assert_eq!(
            parse_override("web.env.GREETING=hi=there").unwrap(),
            ("web".into(), "GREETING".into(), "hi=there".into())
        );
        for bad in ["web.env.X", "web.cpu.X=1", ".env.X=1", "web.env.=1", "x"] {
            let e = parse_override(bad).unwrap_err();
            assert!(e.message.contains("CONTAINER.env.KEY=VALUE"), "{bad}");
        }
    }
}
