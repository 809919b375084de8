//! Scheduled tasks on the wire.

use berth_types::scheduled::{ConcurrencyPolicy, Schedule, ScheduleRun, ScheduleSpec};
use berth_types::{FieldError, DEFAULT_CLUSTER};

use super::{overrides_from_wire, overrides_to_wire};
use crate::pb;

impl From<&ScheduleSpec> for pb::ScheduleSpec {
    fn from(spec: &ScheduleSpec) -> Self {
        pb::ScheduleSpec {
            cluster: spec.cluster.clone(),
            name: spec.name.clone(),
            expression: spec.expression.clone(),
            timezone: spec.timezone.clone(),
            task_definition: spec.task_definition.clone(),
            count: spec.count,
            overrides: overrides_to_wire(&spec.overrides),
            placement_strategies: spec.placement_strategies.clone(),
            placement_constraints: spec.placement_constraints.clone(),
            concurrency: spec.concurrency.as_str().to_string(),
            skip_missed: !spec.catch_up,
        }
    }
}

impl TryFrom<pb::ScheduleSpec> for ScheduleSpec {
    type Error = FieldError;

    /// Defaults applied: the default cluster, one task, concurrency allow.
    fn try_from(wire: pb::ScheduleSpec) -> Result<Self, FieldError> {
        let concurrency = match wire.concurrency.trim() {
            "" => ConcurrencyPolicy::Allow,
            text => ConcurrencyPolicy::parse(text).ok_or_else(|| {
                FieldError::new(
                    "concurrency",
                    format!("{text:?} is not allow, forbid or replace"),
                )
            })?,
        };
        Ok(ScheduleSpec {
            cluster: if wire.cluster.is_empty() {
                DEFAULT_CLUSTER.to_string()
            } else {
                wire.cluster
            },
            name: wire.name,
            expression: wire.expression,
            timezone: wire.timezone,
            task_definition: wire.task_definition,
            count: wire.count.max(1),
            overrides: overrides_from_wire(&wire.overrides)?,
            placement_strategies: wire.placement_strategies,
            placement_constraints: wire.placement_constraints,
            concurrency,
            catch_up: !wire.skip_missed,
        })
    }
}

impl From<&ScheduleRun> for pb::ScheduleRun {
    fn from(run: &ScheduleRun) -> Self {
        pb::ScheduleRun {
            slot_ms: run.slot_ms,
            fired_at_ms: run.fired_at_ms,
            outcome: run.outcome.as_str().to_string(),
            reason: run.reason.clone(),
            task_ids: run.task_ids.clone(),
            stopped_task_ids: run.stopped_task_ids.clone(),
        }
    }
}

impl From<&Schedule> for pb::Schedule {
    fn from(schedule: &Schedule) -> Self {
        let enabled = schedule.state == berth_types::scheduled::ScheduleState::Enabled;
        pb::Schedule {
            spec: Some((&schedule.spec).into()),
            state: schedule.state.as_str().to_string(),
            created_at_ms: schedule.created_at_ms,
            updated_at_ms: schedule.updated_at_ms,
            last_slot_ms: schedule.last_slot_ms,
            next_slot_ms: if enabled { schedule.next_slot() } else { None },
            runs: schedule.runs.iter().map(Into::into).collect(),
        }
    }
}
