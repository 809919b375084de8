//! Tasks: RunTask/StartTask, placements decided by the leader's scheduler,
//! agent status reports, stops, and the purge of old stopped tasks.
//!
//! Every rule that protects an instance from over-commitment is enforced
//! here, at apply time, against the state as it is then: a placement decided
//! from an older view that no longer fits is rejected, never applied.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::command::{CommandOutput, RunTasks, TaskPlacement, TaskReport};
use crate::error::{FieldError, StateError};
use crate::event::StateEvent;
use crate::resources::reserve;
use crate::state::{ClientTokenRecord, IdMap, State};
use crate::task::{DesiredStatus, StopCode, Task, TaskStatus};
use crate::taskdef::TaskDefinitionStatus;

/// The most tasks one RunTask may start (ECS allows 10; bulk runs here are
/// still bounded so one command stays a reasonable Raft entry).
pub const MAX_TASKS_PER_RUN: usize = 1000;

/// How long a RunTask client token is remembered.
pub const CLIENT_TOKEN_TTL_MS: i64 = 24 * 3600 * 1000;

fn invalid(field: &str, message: impl Into<String>) -> StateError {
    StateError::Invalid(FieldError::new(field, message).into())
}

/// The indexes derived from the tasks, borrowed apart from the task map so
/// that a task is indexed where it lies: copying it first cost more than
/// the indexing itself on every change of a bulk run.
pub(crate) struct TaskIndexes<'a> {
    provisioning: &'a mut BTreeMap<i64, BTreeSet<String>>,
    by_instance: &'a mut IdMap<BTreeSet<String>>,
    groups_by_instance: &'a mut IdMap<BTreeMap<String, u32>>,
    by_service: &'a mut HashMap<(String, String), BTreeSet<String>>,
}

impl TaskIndexes<'_> {
    /// Keeps the indexes right for one task's current value. True when this
    /// is the change that stopped a service's task. A task already indexed
    /// where it belongs costs lookups only, no copies of its keys.
    pub(crate) fn index(&mut self, task: &Task) -> bool {
        let waiting = task.last_status == TaskStatus::Provisioning
            && task.desired_status == DesiredStatus::Running;
        if waiting {
            self.provisioning
                .entry(task.created_at_ms)
                .or_default()
                .insert(task.id.clone());
        } else if let Some(ids) = self.provisioning.get_mut(&task.created_at_ms) {
            ids.remove(&task.id);
            if ids.is_empty() {
                self.provisioning.remove(&task.created_at_ms);
            }
        }
        if let Some(iid) = &task.instance_id {
            if task.last_status == TaskStatus::Stopped {
                let was_counted = match self.by_instance.get_mut(iid) {
                    Some(set) => {
                        let removed = set.remove(&task.id);
                        if set.is_empty() {
                            self.by_instance.remove(iid);
                        }
                        removed
                    }
                    None => false,
                };
                if was_counted {
                    self.uncount_group(iid, &task.group);
                }
            } else {
                let added = match self.by_instance.get_mut(iid) {
                    Some(set) if set.contains(&task.id) => false,
                    Some(set) => set.insert(task.id.clone()),
                    None => {
                        self.by_instance
                            .insert(iid.clone(), BTreeSet::from([task.id.clone()]));
                        true
                    }
                };
                if added {
                    let groups = match self.groups_by_instance.get_mut(iid) {
                        Some(groups) => groups,
                        None => self.groups_by_instance.entry(iid.clone()).or_default(),
                    };
                    match groups.get_mut(&task.group) {
                        Some(n) => *n += 1,
                        None => {
                            groups.insert(task.group.clone(), 1);
                        }
                    }
                }
            }
        }
        let Some(service) = crate::service::service_name_of(task) else {
            return false;
        };
        let key = (task.cluster.clone(), service.to_string());
        if task.last_status == TaskStatus::Stopped {
            let Some(set) = self.by_service.get_mut(&key) else {
                return false;
            };
            let removed = set.remove(&task.id);
            if set.is_empty() {
                self.by_service.remove(&key);
            }
            removed
        } else {
            match self.by_service.get_mut(&key) {
                Some(set) if set.contains(&task.id) => {}
                Some(set) => {
                    set.insert(task.id.clone());
                }
                None => {
                    self.by_service
                        .insert(key, BTreeSet::from([task.id.clone()]));
                }
            }
            false
        }
    }

    fn uncount_group(&mut self, instance_id: &str, group: &str) {
        let Some(groups) = self.groups_by_instance.get_mut(instance_id) else {
            return;
        };
        match groups.get_mut(group) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                groups.remove(group);
            }
            None => {}
        }
        if groups.is_empty() {
            self.groups_by_instance.remove(instance_id);
        }
    }
}

impl State {
    /// The task map, and the indexes derived from it to update.
    pub(crate) fn tasks_and_indexes(&mut self) -> (&IdMap<Box<Task>>, TaskIndexes<'_>) {
        (
            &self.tasks,
            TaskIndexes {
                provisioning: &mut self.provisioning,
                by_instance: &mut self.tasks_by_instance,
                groups_by_instance: &mut self.task_groups_by_instance,
                by_service: &mut self.tasks_by_service,
            },
        )
    }

    /// Records a change to a task: indexed, and announced to the session of
    /// its instance (whose assignment sequence moves on).
    pub(crate) fn task_changed(&mut self, task_id: &str) {
        let (tasks, mut indexes) = self.tasks_and_indexes();
        let Some(task) = tasks.get(task_id) else {
            return;
        };
        let stopped_service_task = indexes.index(task);
        let instance_id = task.instance_id.clone();
        let stopped_at_ms = task.stopped_at_ms.unwrap_or(task.created_at_ms);
        if stopped_service_task {
            self.service_task_stopped(task_id, stopped_at_ms);
        }
        if let Some(iid) = &instance_id {
            if let Some(instance) = self.instances.get_mut(iid) {
                instance.assignment_seq += 1;
            }
        }
        self.events.push(StateEvent::Task {
            task_id: task_id.to_string(),
            instance_id,
        });
    }

    pub(super) fn run_tasks(&mut self, run: RunTasks) -> Result<CommandOutput, StateError> {
        if let Some(token) = &run.client_token {
            if let Some(seen) = self.client_tokens.get(token) {
                let tasks = seen
                    .task_ids
                    .iter()
                    .filter_map(|id| self.task(id).cloned())
                    .collect();
                return Ok(CommandOutput::Tasks(tasks));
            }
        }
        if run
            .group
            .as_deref()
            .is_some_and(|g| g.starts_with(crate::service::SERVICE_GROUP_PREFIX))
        {
            return Err(invalid(
                "group",
                format!(
                    "the prefix {:?} is reserved for the tasks of services",
                    crate::service::SERVICE_GROUP_PREFIX
                ),
            ));
        }
        let token = run.client_token.clone();
        let (ids, at_ms) = (run.task_ids.clone(), run.at_ms);
        let created = self.create_tasks(run, true)?;
        if let Some(token) = token {
            self.client_tokens.insert(
                token,
                ClientTokenRecord {
                    created_at_ms: at_ms,
                    task_ids: ids,
                },
            );
        }
        Ok(CommandOutput::Tasks(created))
    }

    /// Creates the tasks of a RunTask, a StartTask (with instance ids, all
    /// placed at once or none) or a service. A service may keep running a
    /// revision that was deregistered since; RunTask needs an ACTIVE one.
    pub(super) fn create_tasks(
        &mut self,
        run: RunTasks,
        require_active: bool,
    ) -> Result<Vec<Task>, StateError> {
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
        let td = self.resolve_task_definition("taskDefinition", &run.task_definition)?;
        if require_active && td.status != TaskDefinitionStatus::Active {
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
            ip: None,
            deactivating_until_ms: None,
            // RunTask takes no tags (yet); TagResource adds them.
            tags: Default::default(),
        };
        for id in &run.task_ids {
            if self.tasks.contains_key(id) {
                return Err(StateError::already_exists("task", id.clone()));
            }
        }
        // A started task's reservation, dynamic host ports included, per
        // instance in order.
        let mut reservations = Vec::new();
        if starting {
            // StartTask is all or nothing: every named instance must take
            // its task now, or none is started.
            let mut trial: BTreeMap<String, crate::resources::InstanceCapacity> = BTreeMap::new();
            let dynamic_protocols: Vec<_> = crate::resources::dynamic_mappings(&td.spec)
                .map(|(_, m)| m.protocol)
                .collect();
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
                let does_not_fit = |conflict| {
                    StateError::FailedPrecondition(format!(
                        "task does not fit on instance {iid}: {conflict}"
                    ))
                };
                let reservation = capacity
                    .with_dynamic_ports(&template.reservation, &dynamic_protocols)
                    .map_err(does_not_fit)?;
                capacity.allocate(&reservation).map_err(does_not_fit)?;
                reservations.push(reservation);
            }
        }
        let mut created = Vec::with_capacity(count);
        for (i, id) in run.task_ids.iter().enumerate() {
            let mut task = template.clone();
            task.id = id.clone();
            if let Some(iid) = run.instance_ids.get(i) {
                if let Some(reservation) = reservations.get(i) {
                    task.reservation = reservation.clone();
                }
                if let Some(instance) = self.instances.get_mut(iid) {
                    instance.capacity.record(&task.reservation);
                }
                task.instance_id = Some(iid.clone());
                task.advance(TaskStatus::Pending, run.at_ms);
            }
            self.tasks.insert(id.clone(), Box::new(task.clone()));
            self.task_changed(id);
            created.push(task);
        }
        Ok(created)
    }

    pub(super) fn place_tasks(
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
        // One event per service and reason, however many tasks it holds up.
        let mut services_waiting: BTreeMap<(String, String), String> = BTreeMap::new();
        for (task_id, reason) in unplaced {
            let Some(task) = self.tasks.get_mut(&task_id) else {
                continue;
            };
            if task.last_status == TaskStatus::Provisioning && task.placement_reason != reason {
                if let Some(service) = crate::service::service_name_of(task) {
                    services_waiting
                        .insert((task.cluster.clone(), service.to_string()), reason.clone());
                }
                task.placement_reason = reason;
            }
        }
        for ((cluster, service), reason) in services_waiting {
            let message = format!(
                "(service {service}) was unable to place a task because no container instance met all of its requirements. Reason: {reason}"
            );
            let _ = self.service_progress(
                cluster,
                service,
                crate::command::ServiceProgress::Note { message },
                at_ms,
            );
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
        // Bridge-mode mappings without a fixed host port get theirs here,
        // at apply, so every server picks the same ones.
        let dynamic_protocols: Vec<_> = self
            .task_definition(&task.family, task.revision)
            .map(|td| {
                crate::resources::dynamic_mappings(&td.spec)
                    .map(|(_, m)| m.protocol)
                    .collect()
            })
            .unwrap_or_default();
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
        let in_conflict = |conflict| format!("instance {}: {conflict}", p.instance_id);
        let reservation = instance
            .capacity
            .with_dynamic_ports(&task.reservation, &dynamic_protocols)
            .map_err(in_conflict)?;
        instance
            .capacity
            .allocate(&reservation)
            .map_err(in_conflict)?;
        if let Some(task) = self.tasks.get_mut(&p.task_id) {
            task.reservation = reservation;
            task.instance_id = Some(p.instance_id.clone());
            task.placement_reason.clear();
            task.advance(TaskStatus::Pending, at_ms);
        }
        self.task_changed(&p.task_id);
        Ok(())
    }

    pub(super) fn report_task_status(
        &mut self,
        instance_id: &str,
        reports: Vec<TaskReport>,
        at_ms: i64,
    ) -> Result<CommandOutput, StateError> {
        if !self.instances.contains_key(instance_id) {
            return Err(StateError::not_found("instance", instance_id.to_string()));
        }
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
                    // A decoded report's vector has room to spare (a
                    // decoder grows it to four slots for one container);
                    // the record keeps it for the task's lifetime.
                    containers.shrink_to_fit();
                    task.containers = containers;
                    changed = true;
                }
            }
            if let Some(ip) = report.ip {
                if task.ip.as_deref() != Some(ip.as_str())
                    && task.last_status != TaskStatus::Stopped
                {
                    task.ip = Some(ip);
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
            }
        }
        // Answered without the tasks: the answer's one reader, the leader's
        // report writer, needs only to know it applied, and what changed
        // reaches sessions and the journal as events. Copying each updated
        // task into the answer (and the de-duplication window) cost a copy
        // per report on every server.
        Ok(CommandOutput::Tasks(Vec::new()))
    }

    pub(super) fn stop_task(
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
            return Ok(CommandOutput::Task((**task).clone()));
        }
        if task.last_status == TaskStatus::Provisioning {
            // Never placed: nothing runs anywhere, so it is stopped now.
            task.advance(TaskStatus::Stopped, at_ms);
        }
        self.deactivate_if_balanced(task_id, at_ms);
        self.task_changed(task_id);
        self.task(task_id)
            .cloned()
            .map(CommandOutput::Task)
            .ok_or_else(|| StateError::not_found("task", task_id.to_string()))
    }

    /// A service task that was just asked to stop while RUNNING behind a
    /// load balancer goes DEACTIVATING for its service's deregistration
    /// delay (ECS's behaviour), so the load balancer drains it first.
    pub(crate) fn deactivate_if_balanced(&mut self, task_id: &str, at_ms: i64) {
        let Some(task) = self.tasks.get(task_id) else {
            return;
        };
        let delay_ms = crate::service::service_name_of(task)
            .and_then(|name| self.service(&task.cluster, name))
            .map_or(0, |s| s.deregistration_delay_ms());
        if delay_ms == 0 {
            return;
        }
        if let Some(task) = self.tasks.get_mut(task_id) {
            task.deactivate(at_ms.saturating_add(delay_ms));
        }
    }

    /// DEACTIVATING tasks whose deregistration delay is over: their agents
    /// are told to stop them now.
    pub(super) fn end_deactivation(
        &mut self,
        task_ids: Vec<String>,
        at_ms: i64,
    ) -> Result<CommandOutput, StateError> {
        let mut ended = Vec::new();
        for id in task_ids {
            let Some(task) = self.tasks.get_mut(&id) else {
                continue;
            };
            if task
                .deactivating_until_ms
                .is_some_and(|until| until <= at_ms)
            {
                task.deactivating_until_ms = None;
                ended.push(id);
            }
        }
        for id in &ended {
            self.task_changed(id);
        }
        let tasks = ended
            .iter()
            .filter_map(|id| self.task(id).cloned())
            .collect();
        Ok(CommandOutput::Tasks(tasks))
    }

    /// Tasks whose deregistration delay ended by `now_ms`.
    pub fn deactivation_due(&self, now_ms: i64) -> impl Iterator<Item = &Task> {
        self.tasks()
            .filter(move |t| t.deactivating_until_ms.is_some_and(|until| until <= now_ms))
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

    pub(super) fn purge(&mut self, now_ms: i64) -> u32 {
        let expired: Vec<String> = self
            .tasks
            .values()
            .filter(|t| self.purge_due(t, now_ms))
            .map(|t| t.id.clone())
            .collect();
        for id in &expired {
            self.tasks.remove(id);
        }
        self.client_tokens
            .retain(|_, r| r.created_at_ms.saturating_add(CLIENT_TOKEN_TTL_MS) > now_ms);
        u32::try_from(expired.len()).unwrap_or(u32::MAX)
    }

    /// Whether a task is STOPPED and older than its cluster's retention.
    pub fn purge_due(&self, task: &Task, now_ms: i64) -> bool {
        task.last_status == TaskStatus::Stopped
            && task.stopped_at_ms.is_some_and(|at| {
                at.saturating_add(self.task_retention_ms(&task.cluster)) <= now_ms
            })
    }

    // ------------------------------------------------------------ queries

    pub fn task(&self, id: &str) -> Option<&Task> {
        self.tasks.get(id).map(|task| &**task)
    }

    /// Every task, in no particular order: sort what a caller shows.
    pub fn tasks(&self) -> impl Iterator<Item = &Task> {
        self.tasks.values().map(|task| &**task)
    }

    /// Tasks placed on the instance that are not STOPPED yet.
    pub fn active_tasks_on(&self, instance_id: &str) -> impl Iterator<Item = &Task> {
        self.tasks_by_instance
            .get(instance_id)
            .into_iter()
            .flat_map(|set| set.iter())
            .filter_map(|id| self.task(id))
    }

    /// How many not-yet-STOPPED tasks each group has on the instance.
    pub fn task_groups_on(&self, instance_id: &str) -> Option<&BTreeMap<String, u32>> {
        self.task_groups_by_instance.get(instance_id)
    }

    pub fn active_task_count_on(&self, instance_id: &str) -> usize {
        self.tasks_by_instance
            .get(instance_id)
            .map_or(0, |set| set.len())
    }

    /// Tasks waiting for a placement, oldest first.
    pub fn provisioning_tasks(&self) -> impl Iterator<Item = &Task> {
        self.provisioning
            .values()
            .flatten()
            .filter_map(|id| self.task(id))
    }

    /// Whether the instance still has tasks that a loss would stop.
    pub fn has_active_tasks(&self, instance_id: &str) -> bool {
        self.active_task_count_on(instance_id) > 0
    }
}
