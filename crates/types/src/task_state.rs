//! The task half of the state machine: RunTask/StartTask, placements decided
//! by the leader's scheduler, agent status reports, stops, and the instance
//! transitions (connected, disconnected, lost, draining) that decide where
//! tasks may go.
//!
//! Every rule that protects an instance from over-commitment is enforced
//! here, at apply time, against the state as it is then: a placement decided
//! from an older view that no longer fits is rejected, never applied.

use std::collections::BTreeMap;

use crate::access::InstanceStatus;
use crate::cluster::ClusterSettings;
use crate::command::{Command, CommandOutput, RunTasks, TaskPlacement, TaskReport};
use crate::error::{FieldError, StateError, ValidationErrors};
use crate::resources::{reserve, Resources};
use crate::state::{ClientTokenRecord, State, TaskEvent};
use crate::task::{DesiredStatus, StopCode, Task, TaskStatus};
use crate::taskdef::TaskDefinitionStatus;

/// The most tasks one RunTask may start (ECS allows 10; bulk runs here are
/// still bounded so one command stays a reasonable Raft entry).
pub const MAX_TASKS_PER_RUN: usize = 1000;

/// How long a RunTask client token is remembered.
pub const CLIENT_TOKEN_TTL_MS: i64 = 24 * 3600 * 1000;

pub(crate) fn check_cluster_settings(settings: &ClusterSettings) -> Result<(), StateError> {
    let mut errors = Vec::new();
    if settings.lost_after_secs == 0 {
        errors.push(FieldError::new(
            "lostAfter",
            "must be at least 1s (e.g. 5m)",
        ));
    }
    if settings.task_retention_secs == 0 {
        errors.push(FieldError::new(
            "taskRetention",
            "must be at least 1s (e.g. 1h)",
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(StateError::Invalid(ValidationErrors(errors)))
    }
}

fn invalid(field: &str, message: impl Into<String>) -> StateError {
    StateError::Invalid(FieldError::new(field, message).into())
}

impl State {
    pub(crate) fn apply_task_command(
        &mut self,
        command: Command,
    ) -> Result<CommandOutput, StateError> {
        match command {
            Command::UpdateClusterSettings {
                name,
                lost_after_secs,
                task_retention_secs,
            } => {
                let cluster = self
                    .clusters
                    .get(&name)
                    .ok_or_else(|| StateError::not_found("cluster", name.clone()))?;
                let mut settings = cluster.settings.clone();
                if let Some(v) = lost_after_secs {
                    settings.lost_after_secs = v;
                }
                if let Some(v) = task_retention_secs {
                    settings.task_retention_secs = v;
                }
                check_cluster_settings(&settings)?;
                let cluster = self
                    .clusters
                    .get_mut(&name)
                    .ok_or_else(|| StateError::not_found("cluster", name.clone()))?;
                cluster.settings = settings;
                let out = cluster.clone();
                Ok(CommandOutput::Cluster(out))
            }
            Command::RunTasks(run) => self.run_tasks(run),
            Command::PlaceTasks {
                placements,
                unplaced,
                at_ms,
            } => Ok(self.place_tasks(placements, unplaced, at_ms)),
            Command::ReportTaskStatus {
                instance_id,
                reports,
                at_ms,
            } => self.report_task_status(&instance_id, reports, at_ms),
            Command::StopTask {
                task_id,
                reason,
                at_ms,
            } => self.stop_task(&task_id, &reason, at_ms),
            Command::InstanceConnected {
                instance_id,
                agent_version,
                resources,
                attributes,
                at_ms,
            } => {
                let instance = self.active_instance_mut(&instance_id)?;
                instance.agent_connected = true;
                instance.connected_since_ms = Some(at_ms);
                instance.last_seen_ms = None;
                instance.agent_version = agent_version;
                instance.capacity.set_registered(resources);
                instance.attributes.extend(attributes);
                self.instance_changed(&instance_id);
                self.instance_output(&instance_id)
            }
            Command::InstanceDisconnected { instance_id, at_ms } => {
                let instance = self.active_instance_mut(&instance_id)?;
                if instance.agent_connected {
                    instance.agent_connected = false;
                    instance.connected_since_ms = None;
                    instance.last_seen_ms = Some(at_ms);
                    self.instance_changed(&instance_id);
                }
                self.instance_output(&instance_id)
            }
            Command::InstanceLost { instance_id, at_ms } => {
                let instance = self
                    .instances
                    .get(&instance_id)
                    .ok_or_else(|| StateError::not_found("instance", instance_id.clone()))?;
                if instance.agent_connected {
                    return Err(StateError::FailedPrecondition(format!(
                        "instance {instance_id} is connected; only a disconnected instance can be lost"
                    )));
                }
                let lost_for = instance
                    .last_seen_ms
                    .map(|seen| (at_ms - seen).max(0) / 1000)
                    .unwrap_or(0);
                let reason = format!(
                    "instance {instance_id} was disconnected for {lost_for}s, longer than its cluster's lost_after"
                );
                self.stop_instance_tasks(&instance_id, &reason, at_ms);
                self.instance_output(&instance_id)
            }
            Command::SetInstanceDraining {
                instance_id,
                draining,
            } => {
                let instance = self.active_instance_mut(&instance_id)?;
                if instance.draining != draining {
                    instance.draining = draining;
                    self.instance_changed(&instance_id);
                }
                self.instance_output(&instance_id)
            }
            Command::PutInstanceAttributes {
                instance_id,
                attributes,
            } => {
                let instance = self.active_instance_mut(&instance_id)?;
                instance.attributes.extend(attributes);
                self.instance_changed(&instance_id);
                self.instance_output(&instance_id)
            }
            Command::DeleteInstanceAttributes { instance_id, names } => {
                let instance = self.active_instance_mut(&instance_id)?;
                for name in &names {
                    instance.attributes.remove(name);
                }
                self.instance_changed(&instance_id);
                self.instance_output(&instance_id)
            }
            Command::PurgeStoppedTasks { now_ms } => Ok(CommandOutput::Purged(self.purge(now_ms))),
            other => Err(StateError::FailedPrecondition(format!(
                "command {} is not a task command",
                other.kind()
            ))),
        }
    }

    fn active_instance_mut(
        &mut self,
        id: &str,
    ) -> Result<&mut crate::access::Instance, StateError> {
        let instance = self
            .instances
            .get_mut(id)
            .ok_or_else(|| StateError::not_found("instance", id.to_string()))?;
        if instance.status == InstanceStatus::Inactive {
            return Err(StateError::FailedPrecondition(format!(
                "instance {id} is deregistered"
            )));
        }
        Ok(instance)
    }

    pub(crate) fn instance_output(&self, id: &str) -> Result<CommandOutput, StateError> {
        self.instances
            .get(id)
            .cloned()
            .map(CommandOutput::Instance)
            .ok_or_else(|| StateError::not_found("instance", id.to_string()))
    }

    fn instance_changed(&mut self, id: &str) {
        self.task_events.push(TaskEvent {
            instance_id: Some(id.to_string()),
            task_id: String::new(),
        });
    }

    /// Records a change to a task: indexed, and announced to the session of
    /// its instance (whose assignment sequence moves on).
    fn task_changed(&mut self, task_id: &str) {
        let Some(task) = self.tasks.get(task_id) else {
            return;
        };
        let instance_id = task.instance_id.clone();
        let task = task.clone();
        self.index_task(&task);
        if let Some(iid) = &instance_id {
            if let Some(instance) = self.instances.get_mut(iid) {
                instance.assignment_seq += 1;
            }
        }
        self.task_events.push(TaskEvent {
            instance_id,
            task_id: task_id.to_string(),
        });
    }

    /// Keeps the derived indexes right for one task's current value.
    pub(crate) fn index_task(&mut self, task: &Task) {
        let waiting = task.last_status == TaskStatus::Provisioning
            && task.desired_status == DesiredStatus::Running;
        let key = (task.created_at_ms, task.id.clone());
        if waiting {
            self.provisioning.insert(key);
        } else {
            self.provisioning.remove(&key);
        }
        if let Some(iid) = &task.instance_id {
            let set = self.tasks_by_instance.entry(iid.clone()).or_default();
            if task.last_status == TaskStatus::Stopped {
                set.remove(&task.id);
                if set.is_empty() {
                    self.tasks_by_instance.remove(iid);
                }
            } else {
                set.insert(task.id.clone());
            }
        }
    }

    /// Rebuilds what is derived from the records; for a state that was
    /// deserialized whole (a snapshot).
    pub fn rebuild_indexes(&mut self) {
        self.provisioning.clear();
        self.tasks_by_instance.clear();
        let tasks: Vec<Task> = self.tasks.values().cloned().collect();
        for task in &tasks {
            self.index_task(task);
        }
    }

    /// Task changes since the previous call, in the order they happened.
    pub fn take_task_events(&mut self) -> Vec<TaskEvent> {
        std::mem::take(&mut self.task_events)
    }

    fn run_tasks(&mut self, run: RunTasks) -> Result<CommandOutput, StateError> {
        if let Some(token) = &run.client_token {
            if let Some(seen) = self.client_tokens.get(token) {
                let tasks = seen
                    .task_ids
                    .iter()
                    .filter_map(|id| self.tasks.get(id).cloned())
                    .collect();
                return Ok(CommandOutput::Tasks(tasks));
            }
        }
        if !self.clusters.contains_key(&run.cluster) {
            return Err(StateError::not_found("cluster", run.cluster));
        }
        let count = run.task_ids.len();
        if count == 0 || count > MAX_TASKS_PER_RUN {
            return Err(invalid(
                "count",
                format!("must be between 1 and {MAX_TASKS_PER_RUN}, got {count}"),
            ));
        }
        let starting = !run.instance_ids.is_empty();
        if starting && run.instance_ids.len() != count {
            return Err(invalid(
                "instanceIds",
                "StartTask starts exactly one task per instance",
            ));
        }
        let (family, revision) = match run.task_definition.split_once(':') {
            Some((family, rev)) => {
                let rev: u32 = rev.parse().map_err(|_| {
                    invalid(
                        "taskDefinition",
                        format!("{:?} is not FAMILY or FAMILY:REVISION", run.task_definition),
                    )
                })?;
                (family.to_string(), Some(rev))
            }
            None => (run.task_definition.clone(), None),
        };
        let td = match revision {
            Some(rev) => self
                .task_definitions
                .get(&(family.clone(), rev))
                .ok_or_else(|| {
                    StateError::not_found("task definition", format!("{family}:{rev}"))
                })?,
            None => self.latest_active(&family).ok_or_else(|| {
                StateError::not_found("task definition", format!("{family} (no ACTIVE revision)"))
            })?,
        };
        if td.status != TaskDefinitionStatus::Active {
            return Err(StateError::FailedPrecondition(format!(
                "task definition {}:{} is INACTIVE; run an ACTIVE revision",
                td.family, td.revision
            )));
        }
        for (container, _, _) in &run.overrides {
            if !td
                .spec
                .container_definitions
                .iter()
                .any(|c| c.name == *container)
            {
                return Err(invalid(
                    "overrides",
                    format!(
                        "task definition {}:{} has no container named {container:?}",
                        td.family, td.revision
                    ),
                ));
            }
        }
        let reservation = reserve(&td.spec);
        let group = run
            .group
            .clone()
            .filter(|g| !g.is_empty())
            .unwrap_or_else(|| format!("family:{}", td.family));
        let template = Task {
            id: String::new(),
            cluster: run.cluster.clone(),
            family: td.family.clone(),
            revision: td.revision,
            instance_id: None,
            group,
            started_by: run.started_by.clone(),
            desired_status: DesiredStatus::Running,
            last_status: TaskStatus::Provisioning,
            containers: Vec::new(),
            stop_code: None,
            stopped_reason: String::new(),
            placement_reason: String::new(),
            overrides: run.overrides.clone(),
            placement_strategies: run.placement_strategies.clone(),
            placement_constraints: run.placement_constraints.clone(),
            reservation,
            created_at_ms: run.at_ms,
            pending_at_ms: None,
            started_at_ms: None,
            stopping_at_ms: None,
            stopped_at_ms: None,
        };
        for id in &run.task_ids {
            if self.tasks.contains_key(id) {
                return Err(StateError::already_exists("task", id.clone()));
            }
        }
        if starting {
            // StartTask is all or nothing: every named instance must take
            // its task now, or none is started.
            let mut trial: BTreeMap<String, crate::resources::InstanceCapacity> = BTreeMap::new();
            for iid in &run.instance_ids {
                let instance = self
                    .instances
                    .get(iid)
                    .ok_or_else(|| StateError::not_found("instance", iid.clone()))?;
                if instance.cluster != run.cluster {
                    return Err(StateError::FailedPrecondition(format!(
                        "instance {iid} is in cluster {:?}, not {:?}",
                        instance.cluster, run.cluster
                    )));
                }
                if !instance.takes_new_tasks() {
                    return Err(StateError::FailedPrecondition(format!(
                        "instance {iid} is {}; only ACTIVE instances take new tasks",
                        instance.display_status()
                    )));
                }
                let capacity = trial
                    .entry(iid.clone())
                    .or_insert_with(|| instance.capacity.clone());
                capacity
                    .allocate(&template.reservation)
                    .map_err(|conflict| {
                        StateError::FailedPrecondition(format!(
                            "task does not fit on instance {iid}: {conflict}"
                        ))
                    })?;
            }
        }
        let mut created = Vec::with_capacity(count);
        for (i, id) in run.task_ids.iter().enumerate() {
            let mut task = template.clone();
            task.id = id.clone();
            if let Some(iid) = run.instance_ids.get(i) {
                if let Some(instance) = self.instances.get_mut(iid) {
                    instance.capacity.record(&task.reservation);
                }
                task.instance_id = Some(iid.clone());
                task.advance(TaskStatus::Pending, run.at_ms);
            }
            self.tasks.insert(id.clone(), task.clone());
            self.task_changed(id);
            created.push(task);
        }
        if let Some(token) = run.client_token {
            self.client_tokens.insert(
                token,
                ClientTokenRecord {
                    created_at_ms: run.at_ms,
                    task_ids: run.task_ids,
                },
            );
        }
        Ok(CommandOutput::Tasks(created))
    }

    fn place_tasks(
        &mut self,
        placements: Vec<TaskPlacement>,
        unplaced: Vec<(String, String)>,
        at_ms: i64,
    ) -> CommandOutput {
        let mut placed = Vec::new();
        let mut rejected = Vec::new();
        for p in placements {
            match self.place_one(&p, at_ms) {
                Ok(()) => placed.push(p.task_id),
                Err(why) => rejected.push((p.task_id, why)),
            }
        }
        for (task_id, reason) in unplaced {
            let Some(task) = self.tasks.get_mut(&task_id) else {
                continue;
            };
            if task.last_status == TaskStatus::Provisioning && task.placement_reason != reason {
                task.placement_reason = reason;
            }
        }
        CommandOutput::Placed { placed, rejected }
    }

    fn place_one(&mut self, p: &TaskPlacement, at_ms: i64) -> Result<(), String> {
        let task = self
            .tasks
            .get(&p.task_id)
            .ok_or_else(|| format!("task {} no longer exists", p.task_id))?;
        if task.last_status != TaskStatus::Provisioning
            || task.desired_status != DesiredStatus::Running
        {
            return Err(format!(
                "task {} is no longer waiting for a placement ({})",
                p.task_id,
                task.last_status.as_str()
            ));
        }
        let instance = self
            .instances
            .get_mut(&p.instance_id)
            .ok_or_else(|| format!("instance {} does not exist", p.instance_id))?;
        if instance.cluster != task.cluster {
            return Err(format!(
                "instance {} is not in cluster {:?}",
                p.instance_id, task.cluster
            ));
        }
        if !instance.takes_new_tasks() {
            return Err(format!(
                "instance {} is {}",
                p.instance_id,
                instance.display_status()
            ));
        }
        instance
            .capacity
            .allocate(&task.reservation)
            .map_err(|conflict| format!("instance {}: {conflict}", p.instance_id))?;
        if let Some(task) = self.tasks.get_mut(&p.task_id) {
            task.instance_id = Some(p.instance_id.clone());
            task.placement_reason.clear();
            task.advance(TaskStatus::Pending, at_ms);
        }
        self.task_changed(&p.task_id);
        Ok(())
    }

    fn report_task_status(
        &mut self,
        instance_id: &str,
        reports: Vec<TaskReport>,
        at_ms: i64,
    ) -> Result<CommandOutput, StateError> {
        if !self.instances.contains_key(instance_id) {
            return Err(StateError::not_found("instance", instance_id.to_string()));
        }
        let mut updated = Vec::new();
        for report in reports {
            let Some(task) = self.tasks.get_mut(&report.task_id) else {
                continue;
            };
            // An agent speaks only for tasks placed on it.
            if task.instance_id.as_deref() != Some(instance_id) {
                continue;
            }
            let mut changed = false;
            if !report.containers.is_empty() && task.containers != report.containers {
                let mut containers = report.containers;
                // Restart counts only grow within a task: a report that is
                // late (or from before an agent restart) must not make a
                // restarted container look as if it never was.
                for c in &mut containers {
                    if let Some(known) = task.containers.iter().find(|k| k.name == c.name) {
                        c.restart_count = c.restart_count.max(known.restart_count);
                    }
                }
                if task.containers != containers {
                    task.containers = containers;
                    changed = true;
                }
            }
            let was = task.last_status;
            if task.advance(report.last_status, at_ms) {
                changed = true;
                if report.last_status == TaskStatus::Stopped {
                    let code = report.stop_code.unwrap_or(if was < TaskStatus::Running {
                        StopCode::TaskFailedToStart
                    } else {
                        StopCode::EssentialContainerExited
                    });
                    task.request_stop(code, &report.reason);
                    let reservation = task.reservation.clone();
                    if let Some(instance) = self.instances.get_mut(instance_id) {
                        // A mismatch would be a bookkeeping bug; the task
                        // still stops rather than the report being refused.
                        let _ = instance.capacity.release(&reservation);
                    }
                }
            }
            if changed {
                self.task_changed(&report.task_id);
                updated.push(report.task_id);
            }
        }
        let tasks = updated
            .iter()
            .filter_map(|id| self.tasks.get(id).cloned())
            .collect();
        Ok(CommandOutput::Tasks(tasks))
    }

    fn stop_task(
        &mut self,
        task_id: &str,
        reason: &str,
        at_ms: i64,
    ) -> Result<CommandOutput, StateError> {
        let task = self
            .tasks
            .get_mut(task_id)
            .ok_or_else(|| StateError::not_found("task", task_id.to_string()))?;
        let reason = if reason.is_empty() {
            "Task stopped by user"
        } else {
            reason
        };
        let requested = task.request_stop(StopCode::UserInitiated, reason);
        if !requested {
            return Ok(CommandOutput::Task(task.clone()));
        }
        if task.last_status == TaskStatus::Provisioning {
            // Never placed: nothing runs anywhere, so it is stopped now.
            task.advance(TaskStatus::Stopped, at_ms);
        }
        self.task_changed(task_id);
        self.tasks
            .get(task_id)
            .cloned()
            .map(CommandOutput::Task)
            .ok_or_else(|| StateError::not_found("task", task_id.to_string()))
    }

    /// Marks every not-yet-STOPPED task on the instance STOPPED with stop
    /// code InstanceLost and gives back what they held.
    pub(crate) fn stop_instance_tasks(&mut self, instance_id: &str, reason: &str, at_ms: i64) {
        let ids: Vec<String> = self
            .tasks_by_instance
            .get(instance_id)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default();
        for id in ids {
            let Some(task) = self.tasks.get_mut(&id) else {
                continue;
            };
            task.request_stop(StopCode::InstanceLost, reason);
            if task.advance(TaskStatus::Stopped, at_ms) {
                let reservation = task.reservation.clone();
                if let Some(instance) = self.instances.get_mut(instance_id) {
                    let _ = instance.capacity.release(&reservation);
                }
                self.task_changed(&id);
            }
        }
    }

    fn purge(&mut self, now_ms: i64) -> u32 {
        let retention: BTreeMap<String, i64> = self
            .clusters
            .values()
            .map(|c| {
                let ms = i64::try_from(c.settings.task_retention_secs.saturating_mul(1000))
                    .unwrap_or(i64::MAX);
                (c.name.clone(), ms)
            })
            .collect();
        let default_ms =
            i64::try_from(crate::cluster::DEFAULT_TASK_RETENTION_SECS * 1000).unwrap_or(i64::MAX);
        let expired: Vec<String> = self
            .tasks
            .values()
            .filter(|t| t.last_status == TaskStatus::Stopped)
            .filter(|t| {
                let keep = retention.get(&t.cluster).copied().unwrap_or(default_ms);
                t.stopped_at_ms
                    .is_some_and(|at| at.saturating_add(keep) <= now_ms)
            })
            .map(|t| t.id.clone())
            .collect();
        for id in &expired {
            self.tasks.remove(id);
        }
        self.client_tokens
            .retain(|_, r| r.created_at_ms.saturating_add(CLIENT_TOKEN_TTL_MS) > now_ms);
        u32::try_from(expired.len()).unwrap_or(u32::MAX)
    }

    // ------------------------------------------------------------ queries

    pub fn task(&self, id: &str) -> Option<&Task> {
        self.tasks.get(id)
    }

    pub fn tasks(&self) -> impl Iterator<Item = &Task> {
        self.tasks.values()
    }

    /// Tasks placed on the instance that are not STOPPED yet.
    pub fn active_tasks_on(&self, instance_id: &str) -> impl Iterator<Item = &Task> {
        self.tasks_by_instance
            .get(instance_id)
            .into_iter()
            .flat_map(|set| set.iter())
            .filter_map(|id| self.tasks.get(id))
    }

    pub fn active_task_count_on(&self, instance_id: &str) -> usize {
        self.tasks_by_instance
            .get(instance_id)
            .map_or(0, |set| set.len())
    }

    /// Tasks waiting for a placement, oldest first.
    pub fn provisioning_tasks(&self) -> impl Iterator<Item = &Task> {
        self.provisioning
            .iter()
            .filter_map(|(_, id)| self.tasks.get(id))
    }

    /// Whether the instance still has tasks that a loss would stop.
    pub fn has_active_tasks(&self, instance_id: &str) -> bool {
        self.active_task_count_on(instance_id) > 0
    }

    /// The registered resources of an instance, as its agent reported them.
    pub fn instance_resources(&self, instance_id: &str) -> Option<Resources> {
        self.instances
            .get(instance_id)
            .map(|i| i.capacity.registered())
    }
}
