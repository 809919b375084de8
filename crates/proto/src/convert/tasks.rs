//! Tasks, their containers, and what agents report about them.

use berth_types as t;
use t::FieldError;

use super::{non_empty, wire_enum};
use crate::pb;

impl From<&t::NetworkBinding> for pb::NetworkBinding {
    fn from(b: &t::NetworkBinding) -> Self {
        Self {
            container_name: b.container_name.clone(),
            container_port: b.container_port,
            host_port: b.host_port,
            protocol: b.protocol.as_str().to_string(),
        }
    }
}

impl TryFrom<pb::NetworkBinding> for t::NetworkBinding {
    type Error = FieldError;

    fn try_from(b: pb::NetworkBinding) -> Result<Self, FieldError> {
        Ok(Self {
            protocol: super::taskdefs::protocol("networkBindings.protocol".into(), &b.protocol)?,
            container_name: b.container_name,
            container_port: b.container_port,
            host_port: b.host_port,
        })
    }
}

impl From<&t::ContainerState> for pb::ContainerState {
    fn from(c: &t::ContainerState) -> Self {
        Self {
            name: c.name.clone(),
            status: c.status.as_str().to_string(),
            exit_code: c.exit_code,
            reason: c.reason.clone(),
            health: c.health.as_str().to_string(),
            restart_count: c.restart_count,
        }
    }
}

impl From<&t::Task> for pb::Task {
    fn from(task: &t::Task) -> Self {
        Self {
            id: task.id.clone(),
            cluster: task.cluster.clone(),
            task_definition: task.task_definition(),
            instance_id: task.instance_id.clone().unwrap_or_default(),
            group: task.group.clone(),
            started_by: task.started_by.clone(),
            desired_status: task.desired_status.as_str().to_string(),
            last_status: task.last_status.as_str().to_string(),
            containers: task.containers.iter().map(Into::into).collect(),
            stop_code: task
                .stop_code
                .map(|c| c.as_str().to_string())
                .unwrap_or_default(),
            stopped_reason: task.stopped_reason.clone(),
            placement_reason: task.placement_reason.clone(),
            created_at_ms: task.created_at_ms,
            pending_at_ms: task.pending_at_ms,
            started_at_ms: task.started_at_ms,
            stopping_at_ms: task.stopping_at_ms,
            stopped_at_ms: task.stopped_at_ms,
            overrides: overrides_to_wire(&task.overrides),
            cpu: u32::try_from(task.reservation.cpu).unwrap_or(u32::MAX),
            memory: u32::try_from(task.reservation.memory_mib).unwrap_or(u32::MAX),
            // Needs the task's definition: filled in by the server
            // (`berth_server::ops::tasks`), which has it.
            network_bindings: Vec::new(),
            ip: task.ip.clone().unwrap_or_default(),
            deactivating_until_ms: task.deactivating_until_ms,
            tags: task.tags.clone(),
        }
    }
}

/// A task as the API carries it. The wire has no place for its placement
/// strategies and constraints or its host ports, so a task read back has
/// none of them (its CPU and memory do come back).
impl TryFrom<pb::Task> for t::Task {
    type Error = FieldError;

    fn try_from(w: pb::Task) -> Result<Self, FieldError> {
        let reference = t::TaskDefinitionRef::parse(&w.task_definition)?;
        let revision = reference.revision.ok_or_else(|| {
            FieldError::new(
                "taskDefinition",
                format!("{:?} has no revision", w.task_definition),
            )
        })?;
        let stop_code = match non_empty(w.stop_code) {
            None => None,
            Some(code) => Some(wire_enum(
                "stopCode",
                &code,
                t::StopCode::parse,
                "a stop code",
            )?),
        };
        let containers = w
            .containers
            .into_iter()
            .enumerate()
            .map(|(i, c)| container_state_from_wire(&format!("containers[{i}]"), c))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            desired_status: wire_enum(
                "desiredStatus",
                &w.desired_status,
                t::DesiredStatus::parse,
                "RUNNING or STOPPED",
            )?,
            last_status: wire_enum(
                "lastStatus",
                &w.last_status,
                t::TaskStatus::parse,
                "PROVISIONING, PENDING, RUNNING, DEACTIVATING, STOPPING or STOPPED",
            )?,
            overrides: overrides_from_wire(&w.overrides)?,
            id: w.id,
            cluster: w.cluster,
            family: reference.family,
            revision,
            instance_id: non_empty(w.instance_id),
            group: w.group,
            started_by: w.started_by,
            containers,
            stop_code,
            stopped_reason: w.stopped_reason,
            placement_reason: w.placement_reason,
            placement_strategies: Vec::new(),
            placement_constraints: Vec::new(),
            reservation: t::resources::Reservation::new(u64::from(w.cpu), u64::from(w.memory)),
            created_at_ms: w.created_at_ms,
            pending_at_ms: w.pending_at_ms,
            started_at_ms: w.started_at_ms,
            stopping_at_ms: w.stopping_at_ms,
            stopped_at_ms: w.stopped_at_ms,
            ip: non_empty(w.ip),
            deactivating_until_ms: w.deactivating_until_ms,
            tags: w.tags,
        })
    }
}

/// RunTask overrides as `CONTAINER.env.KEY` = value pairs.
pub fn overrides_to_wire(overrides: &[(String, String, String)]) -> Vec<pb::KeyValuePair> {
    overrides
        .iter()
        .map(|(container, key, value)| pb::KeyValuePair {
            name: t::task::override_target(container, key),
            value: value.clone(),
        })
        .collect()
}

/// `CONTAINER.env.KEY` = value pairs as (container, key, value).
pub fn overrides_from_wire(
    overrides: &[pb::KeyValuePair],
) -> Result<Vec<(String, String, String)>, FieldError> {
    overrides
        .iter()
        .enumerate()
        .map(|(i, kv)| {
            let (container, key) = t::task::parse_override_target(&kv.name).ok_or_else(|| {
                FieldError::new(
                    format!("overrides[{i}].name"),
                    format!("{:?} is not CONTAINER.env.KEY", kv.name),
                )
            })?;
            Ok((container, key, kv.value.clone()))
        })
        .collect()
}

fn container_state_from_wire(
    field: &str,
    c: pb::ContainerState,
) -> Result<t::ContainerState, FieldError> {
    let status = t::ContainerStatus::parse(&c.status).ok_or_else(|| {
        FieldError::new(
            format!("{field}.status"),
            format!("{:?} is not PENDING, RUNNING or STOPPED", c.status),
        )
    })?;
    Ok(t::ContainerState {
        name: c.name,
        status,
        exit_code: c.exit_code,
        reason: c.reason,
        health: t::Health::parse(&c.health),
        restart_count: c.restart_count,
    })
}

impl TryFrom<pb::TaskReport> for t::TaskReport {
    type Error = FieldError;

    fn try_from(r: pb::TaskReport) -> Result<Self, FieldError> {
        let last_status = t::TaskStatus::parse_reported(&r.last_status).ok_or_else(|| {
            FieldError::new(
                "lastStatus",
                format!(
                    "{:?} is not PENDING, RUNNING, STOPPING or STOPPED",
                    r.last_status
                ),
            )
        })?;
        let stop_code = if r.stop_code.is_empty() {
            None
        } else {
            Some(t::StopCode::parse(&r.stop_code).ok_or_else(|| {
                FieldError::new("stopCode", format!("{:?} is not a stop code", r.stop_code))
            })?)
        };
        let containers = r
            .containers
            .into_iter()
            .enumerate()
            .map(|(i, c)| container_state_from_wire(&format!("containers[{i}]"), c))
            .collect::<Result<_, _>>()?;
        Ok(t::TaskReport {
            task_id: r.task_id,
            last_status,
            containers,
            reason: r.reason,
            stop_code,
            ip: match non_empty(r.ip) {
                None => None,
                Some(ip) => Some(
                    ip.parse::<std::net::IpAddr>()
                        .map_err(|_| FieldError::new("ip", format!("{ip:?} is not an IP address")))?
                        .to_string(),
                ),
            },
        })
    }
}

impl From<&t::TaskReport> for pb::TaskReport {
    fn from(r: &t::TaskReport) -> Self {
        Self {
            task_id: r.task_id.clone(),
            last_status: r.last_status.as_str().to_string(),
            containers: r.containers.iter().map(Into::into).collect(),
            reason: r.reason.clone(),
            stop_code: r
                .stop_code
                .map(|c| c.as_str().to_string())
                .unwrap_or_default(),
            ip: r.ip.clone().unwrap_or_default(),
        }
    }
}

// ---------------------------------------------------------------- requests

/// One task placed by the server's defaults (no strategies, no
/// constraints): the launch as RunTask carries it.
impl From<t::TaskLaunch> for pb::RunTaskRequest {
    fn from(l: t::TaskLaunch) -> Self {
        Self {
            cluster: l.cluster.unwrap_or_default(),
            task_definition: l.task_definition,
            group: l.group.unwrap_or_default(),
            started_by: l.started_by.unwrap_or_default(),
            overrides: l.overrides,
            client_token: l.client_token.unwrap_or_default(),
            ..Self::default()
        }
    }
}

impl From<t::RunTaskInput> for pb::RunTaskRequest {
    fn from(r: t::RunTaskInput) -> Self {
        Self {
            count: r.count,
            placement_strategies: r.placement_strategies,
            placement_constraints: r.placement_constraints,
            ..r.launch.into()
        }
    }
}

impl From<t::StartTaskInput> for pb::StartTaskRequest {
    fn from(r: t::StartTaskInput) -> Self {
        // StartTask carries the launch as RunTask does; mapped once, there.
        let pb::RunTaskRequest {
            cluster,
            task_definition,
            group,
            started_by,
            overrides,
            client_token,
            ..
        } = r.launch.into();
        Self {
            cluster,
            task_definition,
            instance_ids: r.instance_ids,
            group,
            started_by,
            overrides,
            client_token,
        }
    }
}

impl From<t::TaskFilter> for pb::ListTasksRequest {
    fn from(f: t::TaskFilter) -> Self {
        Self {
            cluster: f.cluster.unwrap_or_default(),
            instance_id: f.instance_id.unwrap_or_default(),
            family: f.family.unwrap_or_default(),
            status: f.status.map(|s| s.as_str().to_string()).unwrap_or_default(),
        }
    }
}

/// The launch as the server reads it: empty strings are "not set".
fn launch_from_wire(
    cluster: String,
    task_definition: String,
    group: String,
    started_by: String,
    overrides: Vec<String>,
    client_token: String,
) -> t::TaskLaunch {
    t::TaskLaunch {
        cluster: non_empty(cluster),
        task_definition,
        group: non_empty(group),
        started_by: non_empty(started_by),
        overrides,
        client_token: non_empty(client_token),
    }
}

impl From<pb::RunTaskRequest> for t::RunTaskInput {
    fn from(r: pb::RunTaskRequest) -> Self {
        Self {
            launch: launch_from_wire(
                r.cluster,
                r.task_definition,
                r.group,
                r.started_by,
                r.overrides,
                r.client_token,
            ),
            count: r.count,
            placement_strategies: r.placement_strategies,
            placement_constraints: r.placement_constraints,
        }
    }
}

impl From<pb::StartTaskRequest> for t::StartTaskInput {
    fn from(r: pb::StartTaskRequest) -> Self {
        Self {
            launch: launch_from_wire(
                r.cluster,
                r.task_definition,
                r.group,
                r.started_by,
                r.overrides,
                r.client_token,
            ),
            instance_ids: r.instance_ids,
        }
    }
}

impl TryFrom<pb::ListTasksRequest> for t::TaskFilter {
    type Error = FieldError;

    fn try_from(r: pb::ListTasksRequest) -> Result<Self, FieldError> {
        let status = match non_empty(r.status) {
            None => None,
            Some(s) => Some(wire_enum(
                "status",
                &s,
                t::TaskStatus::parse,
                "PROVISIONING, PENDING, RUNNING, DEACTIVATING, STOPPING or STOPPED",
            )?),
        };
        Ok(Self {
            cluster: non_empty(r.cluster),
            instance_id: non_empty(r.instance_id),
            family: non_empty(r.family),
            status,
        })
    }
}

/// What a task-logs call asks for; a tail of 0 means everything on the
/// wire, so `Some(0)` should be refused before it gets here.
pub fn task_logs_request(id: &str, options: &t::LogOptions) -> pb::TaskLogsRequest {
    pb::TaskLogsRequest {
        id: id.to_string(),
        container: options.container.clone().unwrap_or_default(),
        follow: options.follow,
        tail: options.tail.unwrap_or(0),
    }
}

/// Anything but `stderr` is standard output, as the agent only sends the
/// two.
impl From<pb::LogChunk> for t::LogChunk {
    fn from(c: pb::LogChunk) -> Self {
        let stream = if c.stream == t::OutputStream::Stderr.as_str() {
            t::OutputStream::Stderr
        } else {
            t::OutputStream::Stdout
        };
        Self {
            stream,
            data: c.data,
        }
    }
}

impl From<t::LogChunk> for pb::LogChunk {
    fn from(c: t::LogChunk) -> Self {
        Self {
            stream: c.stream.as_str().to_string(),
            data: c.data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task with everything the wire carries set (and nothing it does
    /// not), so it reads back equal.
    fn task() -> t::Task {
        t::Task {
            deactivating_until_ms: None,
            ip: None,
            id: "t-1".into(),
            cluster: "prod".into(),
            family: "web".into(),
            revision: 3,
            instance_id: Some("i-1".into()),
            group: "batch".into(),
            started_by: "ci".into(),
            desired_status: t::DesiredStatus::Stopped,
            last_status: t::TaskStatus::Stopping,
            containers: vec![t::ContainerState {
                name: "web".into(),
                status: t::ContainerStatus::Stopped,
                exit_code: Some(1),
                reason: "exited".into(),
                health: t::Health::Unhealthy,
                restart_count: 2,
            }],
            stop_code: Some(t::StopCode::EssentialContainerExited),
            stopped_reason: "essential container web exited".into(),
            placement_reason: String::new(),
            overrides: vec![("web".into(), "A.B".into(), "x=y".into())],
            placement_strategies: Vec::new(),
            placement_constraints: Vec::new(),
            reservation: t::resources::Reservation::new(256, 128),
            created_at_ms: 1,
            pending_at_ms: Some(2),
            started_at_ms: Some(3),
            stopping_at_ms: Some(4),
            stopped_at_ms: None,
            tags: Default::default(),
        }
    }

    #[test]
    fn a_task_survives_the_wire_and_bad_fields_are_named() {
        let wire = pb::Task::from(&task());
        assert_eq!(wire.task_definition, "web:3");
        assert_eq!(wire.overrides[0].name, "web.env.A.B");
        assert_eq!(t::Task::try_from(wire.clone()), Ok(task()));

        let unplaced = pb::Task {
            instance_id: String::new(),
            stop_code: String::new(),
            ..wire.clone()
        };
        let back = t::Task::try_from(unplaced).unwrap();
        assert_eq!((back.instance_id, back.stop_code), (None, None));

        let field = |mut change: Box<dyn FnMut(&mut pb::Task)>| {
            let mut bad = wire.clone();
            change(&mut bad);
            t::Task::try_from(bad).unwrap_err().field
        };
        assert_eq!(
            field(Box::new(|w| w.last_status = "LOST".into())),
            "lastStatus"
        );
        assert_eq!(
            field(Box::new(|w| w.desired_status = "".into())),
            "desiredStatus"
        );
        assert_eq!(field(Box::new(|w| w.stop_code = "Oops".into())), "stopCode");
        assert_eq!(
            field(Box::new(|w| w.task_definition = "web".into())),
            "taskDefinition"
        );
        assert_eq!(
            field(Box::new(|w| w.containers[0].status = "GONE".into())),
            "containers[0].status"
        );
        assert_eq!(
            field(Box::new(|w| w.overrides[0].name = "web.A".into())),
            "overrides[0].name"
        );
    }

    #[test]
    fn a_report_survives_the_wire() {
        let report = t::TaskReport {
            task_id: "t-1".into(),
            last_status: t::TaskStatus::Stopped,
            containers: task().containers,
            reason: "done".into(),
            stop_code: Some(t::StopCode::TaskFailedToStart),
            ip: None,
        };
        let wire = pb::TaskReport::from(&report);
        assert_eq!(wire.stop_code, "TaskFailedToStart");
        assert_eq!(t::TaskReport::try_from(wire), Ok(report));
    }

    #[test]
    fn requests_carry_unset_options_as_empty_strings() {
        let launch = t::TaskLaunch {
            cluster: None,
            task_definition: "web:3".into(),
            group: Some("g".into()),
            started_by: None,
            overrides: vec!["web.env.A=1".into()],
            client_token: Some("tok".into()),
        };
        let run = pb::RunTaskRequest::from(t::RunTaskInput {
            launch: launch.clone(),
            count: 2,
            placement_strategies: vec!["random".into()],
            placement_constraints: vec!["distinctInstance".into()],
        });
        assert_eq!(
            (
                run.cluster.as_str(),
                run.group.as_str(),
                run.client_token.as_str()
            ),
            ("", "g", "tok")
        );
        assert_eq!((run.count, run.placement_strategies.len()), (2, 1));
        let start = pb::StartTaskRequest::from(t::StartTaskInput {
            launch,
            instance_ids: vec!["i-1".into()],
        });
        assert_eq!(start.task_definition, "web:3");
        assert_eq!(start.overrides, ["web.env.A=1"]);
        assert_eq!(start.instance_ids, ["i-1"]);

        let list = pb::ListTasksRequest::from(t::TaskFilter {
            status: Some(t::TaskStatus::Running),
            ..Default::default()
        });
        assert_eq!(
            (list.status.as_str(), list.cluster.as_str()),
            ("RUNNING", "")
        );
        let logs = task_logs_request("t-1", &t::LogOptions::default());
        assert_eq!((logs.container.as_str(), logs.tail), ("", 0));

        for stream in [t::OutputStream::Stdout, t::OutputStream::Stderr] {
            let chunk = t::LogChunk {
                stream,
                data: b"x".to_vec(),
            };
            assert_eq!(t::LogChunk::from(pb::LogChunk::from(chunk.clone())), chunk);
        }
    }
}
