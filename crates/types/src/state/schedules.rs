//! Scheduled tasks in the state machine: their records, and the firing of
//! one slot, which happens at most once whichever leader proposes it.

use super::State;
use crate::command::{CommandOutput, FireSchedule};
use crate::error::StateError;
use crate::scheduled::{
    RunOutcome, Schedule, ScheduleRun, ScheduleSpec, ScheduleState, MAX_RUNS_KEPT,
};
use crate::ClusterStatus;

fn key(cluster: &str, name: &str) -> (String, String) {
    (cluster.to_string(), name.to_string())
}

impl State {
    pub fn schedule(&self, cluster: &str, name: &str) -> Option<&Schedule> {
        self.schedules.get(&key(cluster, name))
    }

    pub fn schedules(&self) -> impl Iterator<Item = &Schedule> {
        self.schedules.values()
    }

    fn schedule_mut(&mut self, cluster: &str, name: &str) -> Result<&mut Schedule, StateError> {
        self.schedules
            .get_mut(&key(cluster, name))
            .ok_or_else(|| StateError::not_found("schedule", format!("{cluster}/{name}")))
    }

    fn schedule_output(&self, cluster: &str, name: &str) -> Result<CommandOutput, StateError> {
        self.schedule(cluster, name)
            .map(|s| CommandOutput::Schedule(Box::new(s.clone())))
            .ok_or_else(|| StateError::not_found("schedule", format!("{cluster}/{name}")))
    }

    /// Creates (`create`) or replaces a schedule's spec. A new expression
    /// or time zone counts slots from now; the runs so far are kept.
    pub(super) fn put_schedule(
        &mut self,
        spec: ScheduleSpec,
        create: bool,
        at_ms: i64,
    ) -> Result<CommandOutput, StateError> {
        spec.validate()?;
        match self.clusters.get(&spec.cluster) {
            Some(c) if c.status == ClusterStatus::Active => {}
            _ => return Err(StateError::not_found("cluster", spec.cluster)),
        }
        let id = format!("{}/{}", spec.cluster, spec.name);
        let (cluster, name) = (spec.cluster.clone(), spec.name.clone());
        match (self.schedules.get_mut(&key(&cluster, &name)), create) {
            (Some(_), true) => return Err(StateError::already_exists("schedule", id)),
            (None, false) => return Err(StateError::not_found("schedule", id)),
            (Some(existing), false) => {
                if existing.spec.expression != spec.expression
                    || existing.spec.timezone != spec.timezone
                {
                    existing.anchor_ms = at_ms;
                }
                existing.spec = spec;
                existing.updated_at_ms = at_ms;
            }
            (None, true) => {
                self.schedules.insert(
                    key(&cluster, &name),
                    Schedule {
                        spec,
                        state: ScheduleState::Enabled,
                        created_at_ms: at_ms,
                        updated_at_ms: at_ms,
                        anchor_ms: at_ms,
                        last_slot_ms: None,
                        runs: Vec::new(),
                    },
                );
            }
        }
        self.schedule_output(&cluster, &name)
    }

    pub(super) fn delete_schedule(
        &mut self,
        cluster: &str,
        name: &str,
    ) -> Result<CommandOutput, StateError> {
        self.schedules
            .remove(&key(cluster, name))
            .map(|s| CommandOutput::Schedule(Box::new(s)))
            .ok_or_else(|| StateError::not_found("schedule", format!("{cluster}/{name}")))
    }

    /// Pausing stops firing; resuming counts slots from the resume, so what
    /// the pause skipped is not fired afterwards.
    pub(super) fn set_schedule_paused(
        &mut self,
        cluster: &str,
        name: &str,
        paused: bool,
        at_ms: i64,
    ) -> Result<CommandOutput, StateError> {
        let schedule = self.schedule_mut(cluster, name)?;
        let wanted = if paused {
            ScheduleState::Paused
        } else {
            ScheduleState::Enabled
        };
        if schedule.state == wanted {
            return Ok(CommandOutput::Unchanged);
        }
        schedule.state = wanted;
        schedule.updated_at_ms = at_ms;
        if !paused {
            schedule.anchor_ms = at_ms;
        }
        self.schedule_output(cluster, name)
    }

    /// Fires one slot: refused for a slot at or before the last one fired
    /// (another leader got there first) or while paused. Starting the tasks
    /// may fail (no such task definition); that is recorded as the run's
    /// outcome, and the slot is spent either way.
    pub(super) fn fire_schedule(
        &mut self,
        fire: FireSchedule,
    ) -> Result<CommandOutput, StateError> {
        let FireSchedule {
            cluster,
            name,
            slot_ms,
            run,
            stop_task_ids,
            skipped,
            at_ms,
        } = fire;
        let schedule = self.schedule_mut(&cluster, &name)?;
        if schedule.state == ScheduleState::Paused {
            return Err(StateError::FailedPrecondition(format!(
                "schedule {cluster}/{name} is paused"
            )));
        }
        if schedule.last_slot_ms.is_some_and(|last| slot_ms <= last) {
            return Err(StateError::FailedPrecondition(format!(
                "schedule {cluster}/{name} already fired its slot at {slot_ms}"
            )));
        }
        schedule.last_slot_ms = Some(slot_ms);
        let reason = format!("Replaced by the next run of schedule {name}");
        let mut stopped = Vec::new();
        for id in stop_task_ids {
            let live = self
                .tasks
                .get(&id)
                .is_some_and(|t| t.last_status != crate::TaskStatus::Stopped);
            if live && self.stop_task(&id, &reason, at_ms).is_ok() {
                stopped.push(id);
            }
        }
        let (outcome, reason, task_ids) = match (skipped, run) {
            (Some(why), _) => (RunOutcome::Skipped, why, Vec::new()),
            (None, None) => (
                RunOutcome::FailedToStart,
                "nothing to run was proposed".to_string(),
                Vec::new(),
            ),
            (None, Some(run)) => match self.run_tasks(run) {
                Ok(CommandOutput::Tasks(tasks)) => (
                    RunOutcome::Started,
                    String::new(),
                    tasks.into_iter().map(|t| t.id).collect(),
                ),
                Ok(_) => (RunOutcome::Started, String::new(), Vec::new()),
                Err(e) => (RunOutcome::FailedToStart, e.to_string(), Vec::new()),
            },
        };
        let schedule = self.schedule_mut(&cluster, &name)?;
        schedule.runs.insert(
            0,
            ScheduleRun {
                slot_ms,
                fired_at_ms: at_ms,
                outcome,
                reason,
                task_ids,
                stopped_task_ids: stopped,
            },
        );
        schedule.runs.truncate(MAX_RUNS_KEPT);
        self.schedule_output(&cluster, &name)
    }
}
