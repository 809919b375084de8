//! Tasks, their containers, and what agents report about them.

use berth_types as t;
use t::FieldError;

use crate::pb;

impl From<&t::ContainerState> for pb::ContainerState {
    fn from(c: &t::ContainerState) -> Self {
        Self {
            name: c.name.clone(),
            status: c.status.as_str().to_string(),
            exit_code: c.exit_code,
            reason: c.reason.clone(),
            health: c.health.as_str().to_string(),
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
        }
    }
}

/// RunTask overrides as `CONTAINER.env.KEY` = value pairs.
pub fn overrides_to_wire(overrides: &[(String, String, String)]) -> Vec<pb::KeyValuePair> {
    overrides
        .iter()
        .map(|(container, key, value)| pb::KeyValuePair {
            name: format!("{container}.env.{key}"),
            value: value.clone(),
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
        })
    }
}
