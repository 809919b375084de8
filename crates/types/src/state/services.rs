//! Services and their deployments in the state machine.
//!
//! The service controller on the leader decides; this module re-checks each
//! decision against the state as it is when the command applies, so a
//! decision made from a view that went stale (a leader change, a concurrent
//! update) is refused rather than applied:
//! - tasks are started only for the service's current PRIMARY deployment,
//!   never beyond `maximumPercent` (DAEMON: one per instance), and not while
//!   the service is backed off;
//! - a healthy task is stopped only if the healthy tasks left still meet
//!   `minimumHealthyPercent`;
//! - rollout steps (completed, failed, retired, steady) are recorded only if
//!   they still hold.
//!
//! Failures are counted here, when a task's STOPPED status is applied, so
//! every server agrees on the circuit breaker's count and the backoff.

use std::collections::BTreeSet;

use crate::command::{
    CommandOutput, RunTasks, ServiceProgress, ServiceTaskStop, StartServiceTasks, StopCause,
};
use crate::error::StateError;
use crate::event::StateEvent;
use crate::service::{
    service_name_of, task_health, Deployment, DeploymentCounts, DeploymentStatus, RolloutState,
    SchedulingStrategy, Service, ServiceSpec, ServiceStatus, ServiceUpdate, TaskHealth, Throttle,
    MAX_EVENTS, MAX_FINISHED_DEPLOYMENTS, THROTTLE_MAX_MS, THROTTLE_RESET_RUN_MS,
};
use crate::state::State;
use crate::task::{DesiredStatus, StopCode, Task, TaskStatus};

/// Task ids named in one event message at most.
const IDS_PER_EVENT: usize = 10;

type ServiceKey = (String, String);

fn key(cluster: &str, name: &str) -> ServiceKey {
    (cluster.to_string(), name.to_string())
}

fn refuse(message: String) -> StateError {
    StateError::FailedPrecondition(message)
}

/// Judges the health of many tasks, looking their task definition up only
/// when it differs from the previous task's: a service's tasks share one or
/// two, and a lookup per task (a key built and compared down the map) was
/// most of an idle leader's CPU with 20,000 service tasks.
pub struct HealthJudge<'a> {
    state: &'a State,
    last: Option<(&'a str, u32, Option<&'a crate::taskdef::TaskDefinition>)>,
}

impl<'a> HealthJudge<'a> {
    pub fn new(state: &'a State) -> Self {
        Self { state, last: None }
    }

    pub fn health(&mut self, task: &'a Task) -> TaskHealth {
        if task.last_status != TaskStatus::Running || task.desired_status != DesiredStatus::Running
        {
            return TaskHealth::Unknown;
        }
        let definition = match self.last {
            Some((family, revision, definition))
                if revision == task.revision && family == task.family =>
            {
                definition
            }
            _ => {
                let definition = self.state.task_definition(&task.family, task.revision);
                self.last = Some((&task.family, task.revision, definition));
                definition
            }
        };
        task_health(task, definition)
    }
}

impl State {
    // ------------------------------------------------------------- queries

    pub fn service(&self, cluster: &str, name: &str) -> Option<&Service> {
        self.services.get(&key(cluster, name))
    }

    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.services.values()
    }

    pub fn services_in<'a>(&'a self, cluster: &'a str) -> impl Iterator<Item = &'a Service> + 'a {
        self.services.values().filter(move |s| s.cluster == cluster)
    }

    /// The service's tasks that are not STOPPED yet (including those asked
    /// to stop that have not stopped: their containers still run).
    pub fn service_tasks<'a>(
        &'a self,
        cluster: &str,
        name: &str,
    ) -> impl Iterator<Item = &'a Task> + 'a {
        self.tasks_by_service
            .get(&key(cluster, name))
            .into_iter()
            .flat_map(|ids| ids.iter())
            .filter_map(|id| self.task(id))
    }

    /// A task's health as its service judges it (by its definition's
    /// health checks).
    pub fn task_health(&self, task: &Task) -> TaskHealth {
        HealthJudge::new(self).health(task)
    }

    /// Pending, running and healthy tasks of each deployment that has any.
    pub fn deployment_counts(&self, service: &Service) -> Vec<(String, DeploymentCounts)> {
        let mut counts: Vec<(String, DeploymentCounts)> = service
            .all_deployments()
            .map(|d| (d.id.clone(), DeploymentCounts::default()))
            .collect();
        let mut judge = HealthJudge::new(self);
        for task in self.service_tasks(&service.cluster, &service.name) {
            if task.desired_status != DesiredStatus::Running {
                continue;
            }
            let Some((_, c)) = counts.iter_mut().find(|(id, _)| *id == task.started_by) else {
                continue;
            };
            match task.last_status {
                TaskStatus::Provisioning | TaskStatus::Pending => c.pending += 1,
                TaskStatus::Running => {
                    c.running += 1;
                    if judge.health(task) == TaskHealth::Healthy {
                        c.healthy += 1;
                    }
                }
                TaskStatus::Deactivating | TaskStatus::Stopping | TaskStatus::Stopped => {}
            }
        }
        counts
    }

    /// The service with its counts, as DescribeServices shows it.
    pub fn describe_service(&self, service: &Service) -> crate::service::ServiceDescription {
        let counts = self.deployment_counts(service);
        let deployments: Vec<crate::service::DeploymentView> = service
            .all_deployments()
            .map(|d| crate::service::DeploymentView {
                deployment: d.clone(),
                counts: counts
                    .iter()
                    .find(|(id, _)| *id == d.id)
                    .map(|(_, c)| *c)
                    .unwrap_or_default(),
            })
            .collect();
        let sum = |f: fn(&DeploymentCounts) -> u32| counts.iter().map(|(_, c)| f(c)).sum::<u32>();
        let mut reasons: std::collections::BTreeMap<&str, u32> = std::collections::BTreeMap::new();
        for task in self.service_tasks(&service.cluster, &service.name) {
            if task.last_status == TaskStatus::Provisioning && !task.placement_reason.is_empty() {
                *reasons.entry(task.placement_reason.as_str()).or_default() += 1;
            }
        }
        crate::service::ServiceDescription {
            service: service.clone(),
            running_count: sum(|c| c.running),
            pending_count: sum(|c| c.pending),
            healthy_count: sum(|c| c.healthy),
            deployments,
            pending_reasons: reasons
                .into_iter()
                .map(|(reason, tasks)| crate::service::PendingReason {
                    reason: reason.to_string(),
                    tasks,
                })
                .collect(),
        }
    }

    fn healthy_service_tasks(&self, cluster: &str, name: &str) -> u32 {
        let mut judge = HealthJudge::new(self);
        let n = self
            .service_tasks(cluster, name)
            .filter(|t| judge.health(t) == TaskHealth::Healthy)
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    fn alive_service_tasks(&self, cluster: &str, name: &str) -> u32 {
        let n = self.service_tasks(cluster, name).count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    fn service_mut(&mut self, cluster: &str, name: &str) -> Result<&mut Service, StateError> {
        self.services
            .get_mut(&key(cluster, name))
            .ok_or_else(|| StateError::not_found("service", format!("{cluster}/{name}")))
    }

    fn service_output(&self, cluster: &str, name: &str) -> Result<CommandOutput, StateError> {
        self.service(cluster, name)
            .map(|s| CommandOutput::Service(Box::new(s.clone())))
            .ok_or_else(|| StateError::not_found("service", format!("{cluster}/{name}")))
    }

    pub(crate) fn service_changed(&mut self, cluster: &str, name: &str) {
        self.events.push(StateEvent::Service {
            cluster: cluster.to_string(),
            name: name.to_string(),
        });
    }

    // ------------------------------------------------------------- commands

    pub(super) fn create_service(
        &mut self,
        spec: ServiceSpec,
        deployment_id: String,
        at_ms: i64,
    ) -> Result<CommandOutput, StateError> {
        crate::service::validate_spec(&spec)?;
        if !self.clusters.contains_key(&spec.cluster) {
            return Err(StateError::not_found("cluster", spec.cluster));
        }
        if let Some(existing) = self.service(&spec.cluster, &spec.name) {
            if existing.status != ServiceStatus::Inactive {
                return Err(StateError::already_exists(
                    "service",
                    format!("{}/{}", spec.cluster, spec.name),
                ));
            }
        }
        let td = self.resolve_task_definition("taskDefinition", &spec.task_definition)?;
        if td.status != crate::TaskDefinitionStatus::Active {
            return Err(refuse(format!(
                "task definition {}:{} is INACTIVE; use an ACTIVE revision",
                td.family, td.revision
            )));
        }
        check_load_balancers(&spec.load_balancers, td)?;
        let task_definition = format!("{}:{}", td.family, td.revision);
        let desired_count = match spec.scheduling_strategy {
            SchedulingStrategy::Replica => spec.desired_count,
            // Counted by the controller from the instances that qualify.
            SchedulingStrategy::Daemon => 0,
        };
        let mut service = Service {
            cluster: spec.cluster.clone(),
            name: spec.name.clone(),
            status: ServiceStatus::Active,
            task_definition: task_definition.clone(),
            desired_count,
            scheduling_strategy: spec.scheduling_strategy,
            placement_strategies: spec.placement_strategies,
            placement_constraints: spec.placement_constraints,
            deployment_configuration: spec.deployment_configuration,
            health_check_grace_period_secs: spec.health_check_grace_period_secs,
            tags: spec.tags,
            load_balancers: spec.load_balancers,
            // The first deployment has nothing to take traffic from.
            deployments: vec![new_deployment(
                deployment_id,
                task_definition.clone(),
                desired_count,
                None,
                100,
                at_ms,
            )],
            finished_deployments: Vec::new(),
            events: Vec::new(),
            next_event_id: 1,
            throttle: Throttle::default(),
            steady: false,
            stable_task_definition: None,
            created_at_ms: at_ms,
            updated_at_ms: at_ms,
        };
        let message = format!(
            "(service {}) was created with task definition {task_definition}.",
            service.name
        );
        push_event(&mut service, at_ms, message);
        let (cluster, name) = (service.cluster.clone(), service.name.clone());
        self.services.insert(key(&cluster, &name), service);
        self.service_changed(&cluster, &name);
        self.service_output(&cluster, &name)
    }

    pub(super) fn update_service(
        &mut self,
        cluster: String,
        name: String,
        update: ServiceUpdate,
        deployment_id: String,
        at_ms: i64,
    ) -> Result<CommandOutput, StateError> {
        let service = self
            .service(&cluster, &name)
            .ok_or_else(|| StateError::not_found("service", format!("{cluster}/{name}")))?;
        if service.status != ServiceStatus::Active {
            return Err(refuse(format!(
                "service {name} is {} (deleted); create it again to use it",
                service.status.as_str()
            )));
        }
        // The service as it would be, validated as a whole before anything
        // changes.
        let mut spec = ServiceSpec {
            cluster: cluster.clone(),
            name: name.clone(),
            task_definition: update
                .task_definition
                .clone()
                .unwrap_or_else(|| service.task_definition.clone()),
            desired_count: update.desired_count.unwrap_or(service.desired_count),
            scheduling_strategy: service.scheduling_strategy,
            placement_strategies: update
                .placement_strategies
                .clone()
                .unwrap_or_else(|| service.placement_strategies.clone()),
            placement_constraints: update
                .placement_constraints
                .clone()
                .unwrap_or_else(|| service.placement_constraints.clone()),
            deployment_configuration: update
                .deployment_configuration
                .unwrap_or(service.deployment_configuration),
            health_check_grace_period_secs: update
                .health_check_grace_period_secs
                .unwrap_or(service.health_check_grace_period_secs),
            tags: service.tags.clone(),
            load_balancers: service.load_balancers.clone(),
        };
        if service.scheduling_strategy == SchedulingStrategy::Daemon {
            if update.desired_count.is_some() {
                return Err(crate::FieldError::new(
                    "desiredCount",
                    "a DAEMON service runs one task on every instance that qualifies; its desired count cannot be set",
                )
                .into());
            }
            // Validated as given: a DAEMON spec has no desired count.
            spec.desired_count = 0;
        }
        crate::service::validate_spec(&spec)?;
        let td = self.resolve_task_definition("taskDefinition", &spec.task_definition)?;
        let task_definition = format!("{}:{}", td.family, td.revision);
        let changed_definition = task_definition != service.task_definition;
        if changed_definition && td.status != crate::TaskDefinitionStatus::Active {
            return Err(refuse(format!(
                "task definition {task_definition} is INACTIVE; deploy an ACTIVE revision"
            )));
        }
        check_load_balancers(&spec.load_balancers, td)?;
        let changed_placement = spec.placement_strategies != service.placement_strategies
            || spec.placement_constraints != service.placement_constraints;
        let new_deployment_needed =
            changed_definition || changed_placement || update.force_new_deployment;
        if new_deployment_needed && service.all_deployments().any(|d| d.id == deployment_id) {
            return Err(StateError::already_exists("deployment", deployment_id));
        }
        // Blue/green moves traffic between exactly two deployments: one
        // at a time, and the controller does not change under one.
        let rolling_out = service.deployments.len() > 1;
        let blue_green_now = service.deployment_configuration.blue_green().is_some();
        let changed_controller =
            spec.deployment_configuration.controller != service.deployment_configuration.controller;
        if rolling_out && (changed_controller || (blue_green_now && new_deployment_needed)) {
            let current = service.primary().map(|d| d.id.as_str()).unwrap_or_default();
            return Err(refuse(if changed_controller {
                format!(
                    "service {name} has a deployment ({current}) in progress; change its deployment controller once it has completed"
                )
            } else {
                format!(
                    "service {name} has a blue/green deployment ({current}) in progress; wait for it to complete or roll it back (berth service rollback {name}) first"
                )
            }));
        }
        let new_traffic = if spec.deployment_configuration.blue_green().is_some() {
            0
        } else {
            100
        };

        let service = self.service_mut(&cluster, &name)?;
        let daemon = service.scheduling_strategy == SchedulingStrategy::Daemon;
        if !daemon {
            service.desired_count = spec.desired_count;
        }
        service.placement_strategies = spec.placement_strategies;
        service.placement_constraints = spec.placement_constraints;
        service.deployment_configuration = spec.deployment_configuration;
        service.health_check_grace_period_secs = spec.health_check_grace_period_secs;
        service.updated_at_ms = at_ms;
        service.steady = false;
        let desired = service.desired_count;
        if new_deployment_needed {
            for d in &mut service.deployments {
                d.status = DeploymentStatus::Active;
                d.updated_at_ms = at_ms;
            }
            service.deployments.insert(
                0,
                new_deployment(
                    deployment_id.clone(),
                    task_definition.clone(),
                    desired,
                    None,
                    new_traffic,
                    at_ms,
                ),
            );
            service.task_definition = task_definition.clone();
            // A new deployment gets a fresh start.
            service.throttle = Throttle::default();
            let message = format!(
                "(service {name}) has started deployment {deployment_id} to task definition {task_definition}."
            );
            push_event(service, at_ms, message);
        } else if let Some(primary) = service.deployments.first_mut() {
            primary.desired_count = desired;
            primary.updated_at_ms = at_ms;
        }
        self.service_changed(&cluster, &name);
        self.service_output(&cluster, &name)
    }

    pub(super) fn delete_service(
        &mut self,
        cluster: String,
        name: String,
        force: bool,
        at_ms: i64,
    ) -> Result<CommandOutput, StateError> {
        let service = self.service_mut(&cluster, &name)?;
        if service.status != ServiceStatus::Active {
            // Already being deleted: the outcome the caller asked for holds.
            return self.service_output(&cluster, &name);
        }
        if service.scheduling_strategy == SchedulingStrategy::Replica
            && service.desired_count > 0
            && !force
        {
            return Err(refuse(format!(
                "service {name} still has a desired count of {}; scale it to 0 first (berth service update {name} --desired-count 0) or delete it with --force",
                service.desired_count
            )));
        }
        service.status = ServiceStatus::Draining;
        service.desired_count = 0;
        service.updated_at_ms = at_ms;
        service.steady = false;
        for d in &mut service.deployments {
            d.desired_count = 0;
            d.updated_at_ms = at_ms;
        }
        let message = format!("(service {name}) was deleted; its tasks are stopping.");
        push_event(service, at_ms, message);
        self.service_changed(&cluster, &name);
        self.service_output(&cluster, &name)
    }

    pub(super) fn start_service_tasks(
        &mut self,
        start: StartServiceTasks,
    ) -> Result<CommandOutput, StateError> {
        let StartServiceTasks {
            cluster,
            service: name,
            deployment_id,
            task_ids,
            instance_ids,
            at_ms,
        } = start;
        let service = self
            .service(&cluster, &name)
            .ok_or_else(|| StateError::not_found("service", format!("{cluster}/{name}")))?;
        if service.status != ServiceStatus::Active {
            return Err(refuse(format!("service {name} is being deleted")));
        }
        let Some(primary) = service.primary().filter(|d| d.id == deployment_id) else {
            return Err(refuse(format!(
                "deployment {deployment_id} is no longer the current deployment of service {name}"
            )));
        };
        if primary.rollout_state == RolloutState::Failed {
            return Err(refuse(format!(
                "deployment {deployment_id} of service {name} has failed; it starts no more tasks"
            )));
        }
        if at_ms < service.throttle.until_ms {
            return Err(refuse(format!(
                "service {name} is backed off after repeated task failures until {}",
                service.throttle.until_ms
            )));
        }
        let count = u32::try_from(task_ids.len()).unwrap_or(u32::MAX);
        match service.scheduling_strategy {
            SchedulingStrategy::Replica => {
                if !instance_ids.is_empty() {
                    return Err(refuse(
                        "tasks of a REPLICA service are placed by the scheduler".into(),
                    ));
                }
                let limit = service
                    .deployment_configuration
                    .max_alive(service.desired_count);
                let alive = self.alive_service_tasks(&cluster, &name);
                if alive.saturating_add(count) > limit {
                    return Err(refuse(format!(
                        "starting {count} tasks would make {} of service {name}, above its maximumPercent ({limit})",
                        alive.saturating_add(count)
                    )));
                }
                // What already counts toward the desired count: a decision
                // taken twice (two leaders, a retry) never over-starts.
                let counted = self
                    .service_tasks(&cluster, &name)
                    .filter(|t| {
                        t.started_by == deployment_id
                            && t.desired_status == DesiredStatus::Running
                            && !t
                                .instance_id
                                .as_deref()
                                .and_then(|i| self.instances.get(i))
                                .is_some_and(|i| i.draining)
                    })
                    .count();
                let counted = u32::try_from(counted).unwrap_or(u32::MAX);
                if counted.saturating_add(count) > service.desired_count {
                    return Err(refuse(format!(
                        "service {name} already has {counted} of its {} tasks; starting {count} more would exceed its desired count",
                        service.desired_count
                    )));
                }
            }
            SchedulingStrategy::Daemon => {
                let distinct: BTreeSet<&String> = instance_ids.iter().collect();
                if distinct.len() != instance_ids.len() {
                    return Err(refuse("a DAEMON service runs one task per instance".into()));
                }
                for iid in &instance_ids {
                    let busy = self
                        .service_tasks(&cluster, &name)
                        .any(|t| t.instance_id.as_deref() == Some(iid.as_str()));
                    if busy {
                        return Err(refuse(format!(
                            "instance {iid} already runs a task of daemon service {name}"
                        )));
                    }
                }
            }
        }
        let run = RunTasks {
            cluster: cluster.clone(),
            task_definition: primary.task_definition.clone(),
            task_ids,
            instance_ids,
            group: Some(service.group()),
            started_by: deployment_id,
            placement_strategies: service.placement_strategies.clone(),
            placement_constraints: service.placement_constraints.clone(),
            overrides: Vec::new(),
            client_token: None,
            at_ms,
        };
        let created = self.create_tasks(run, false)?;
        let ids: Vec<&str> = created.iter().map(|t| t.id.as_str()).collect();
        let message = format!(
            "(service {name}) has started {} {}: {}.",
            ids.len(),
            if ids.len() == 1 { "task" } else { "tasks" },
            task_list(&ids)
        );
        let service = self.service_mut(&cluster, &name)?;
        service.steady = false;
        push_event(service, at_ms, message);
        self.service_changed(&cluster, &name);
        Ok(CommandOutput::Tasks(created))
    }

    pub(super) fn stop_service_tasks(
        &mut self,
        cluster: String,
        name: String,
        stops: Vec<ServiceTaskStop>,
        at_ms: i64,
    ) -> Result<CommandOutput, StateError> {
        let service = self
            .service(&cluster, &name)
            .ok_or_else(|| StateError::not_found("service", format!("{cluster}/{name}")))?;
        let min_healthy = service
            .deployment_configuration
            .min_healthy(service.effective_desired_count());
        let group = service.group();
        let mut healthy = self.healthy_service_tasks(&cluster, &name);
        let mut stopped = Vec::new();
        let mut unhealthy = Vec::new();
        for stop in stops {
            let Some(task) = self.tasks.get(&stop.task_id) else {
                continue;
            };
            if task.group != group
                || task.cluster != cluster
                || task.desired_status != DesiredStatus::Running
                || task.last_status == TaskStatus::Stopped
            {
                continue;
            }
            let was_healthy = self.task_health(task) == TaskHealth::Healthy;
            if stop.cause == StopCause::Unhealthy {
                if self.task_health(task) != TaskHealth::Unhealthy {
                    continue;
                }
            } else if was_healthy {
                if healthy <= min_healthy {
                    continue;
                }
                healthy -= 1;
            }
            let deployment_id = task.started_by.clone();
            let Some(task) = self.tasks.get_mut(&stop.task_id) else {
                continue;
            };
            task.request_stop(StopCode::ServiceSchedulerInitiated, stop.cause.reason());
            if task.last_status == TaskStatus::Provisioning {
                task.advance(TaskStatus::Stopped, at_ms);
            }
            self.deactivate_if_balanced(&stop.task_id, at_ms);
            self.task_changed(&stop.task_id);
            if stop.cause == StopCause::Unhealthy {
                self.count_failure(&cluster, &name, &deployment_id, None, at_ms);
                unhealthy.push(stop.task_id.clone());
            }
            stopped.push(stop.task_id);
        }
        if !stopped.is_empty() {
            let ids: Vec<&str> = stopped.iter().map(String::as_str).collect();
            let mut message = format!(
                "(service {name}) has stopped {} running {}: {}.",
                ids.len(),
                if ids.len() == 1 { "task" } else { "tasks" },
                task_list(&ids)
            );
            if !unhealthy.is_empty() {
                let ids: Vec<&str> = unhealthy.iter().map(String::as_str).collect();
                message.push_str(&format!(
                    " {} failed container health checks.",
                    task_list(&ids)
                ));
            }
            let service = self.service_mut(&cluster, &name)?;
            service.steady = false;
            push_event(service, at_ms, message);
            self.service_changed(&cluster, &name);
        }
        let tasks = stopped
            .iter()
            .filter_map(|id| self.task(id).cloned())
            .collect();
        Ok(CommandOutput::Tasks(tasks))
    }

    pub(super) fn service_progress(
        &mut self,
        cluster: String,
        name: String,
        progress: ServiceProgress,
        at_ms: i64,
    ) -> Result<CommandOutput, StateError> {
        let service = self
            .service(&cluster, &name)
            .ok_or_else(|| StateError::not_found("service", format!("{cluster}/{name}")))?;
        let mut judge = HealthJudge::new(self);
        let alive: Vec<(String, bool)> = self
            .service_tasks(&cluster, &name)
            .map(|t| (t.started_by.clone(), judge.health(t) == TaskHealth::Healthy))
            .collect();
        let desired = service.effective_desired_count();
        let primary_id = service.primary().map(|d| d.id.clone()).unwrap_or_default();
        let settled = service.deployments.len() == 1
            && service
                .primary()
                .is_some_and(|d| d.rollout_state == RolloutState::Completed)
            && alive.len() == desired as usize
            && alive
                .iter()
                .all(|(d, healthy)| *d == primary_id && *healthy);
        let stable_target = service.stable_task_definition.clone();
        let service = self.service_mut(&cluster, &name)?;
        match progress {
            ServiceProgress::DeploymentCompleted { deployment_id } => {
                let healthy_primary = alive
                    .iter()
                    .filter(|(d, healthy)| *d == deployment_id && *healthy)
                    .count();
                let others = alive.iter().any(|(d, _)| *d != deployment_id);
                let Some(primary) = service
                    .deployments
                    .first_mut()
                    .filter(|d| d.id == deployment_id)
                else {
                    return Err(refuse(format!(
                        "deployment {deployment_id} is no longer the current deployment of service {name}"
                    )));
                };
                if primary.rollout_state != RolloutState::InProgress
                    || healthy_primary < desired as usize
                    || others
                {
                    return Err(refuse(format!(
                        "deployment {deployment_id} of service {name} has not completed"
                    )));
                }
                primary.rollout_state = RolloutState::Completed;
                primary.rollout_state_reason =
                    "ECS deployment ".to_string() + &deployment_id + " completed.";
                primary.updated_at_ms = at_ms;
                service.stable_task_definition = Some(primary.task_definition.clone());
                let retired: Vec<Deployment> = service.deployments.drain(1..).collect();
                retire(service, retired, at_ms);
                let message =
                    format!("(service {name}) (deployment {deployment_id}) deployment completed.");
                push_event(service, at_ms, message);
            }
            ServiceProgress::DeploymentFailed {
                deployment_id,
                reason,
                rollback_deployment_id,
            } => {
                let Some(primary) = service.deployments.first_mut().filter(|d| {
                    d.id == deployment_id && d.rollout_state == RolloutState::InProgress
                }) else {
                    return Err(refuse(format!(
                        "deployment {deployment_id} of service {name} is not a rollout in progress"
                    )));
                };
                primary.rollout_state = RolloutState::Failed;
                primary.rollout_state_reason = reason.clone();
                primary.updated_at_ms = at_ms;
                let failed_definition = primary.task_definition.clone();
                let is_rollback = primary.rollback_of.is_some();
                let message = format!(
                    "(service {name}) (deployment {deployment_id}) deployment failed: {reason}"
                );
                push_event(service, at_ms, message);
                if let Some(rollback_id) = rollback_deployment_id {
                    match stable_target {
                        Some(target) if target != failed_definition && !is_rollback => {
                            if service.all_deployments().any(|d| d.id == rollback_id) {
                                return Err(StateError::already_exists("deployment", rollback_id));
                            }
                            start_rollback(service, rollback_id, target, &deployment_id, at_ms);
                        }
                        _ => {
                            let why = if is_rollback {
                                "the failed deployment was itself a rollback"
                            } else {
                                "no earlier deployment of it completed"
                            };
                            push_event(
                                service,
                                at_ms,
                                format!("(service {name}) cannot roll back: {why}."),
                            );
                        }
                    }
                }
            }
            ServiceProgress::DeploymentsRetired { deployment_ids } => {
                let wanted: BTreeSet<String> = deployment_ids.into_iter().collect();
                let busy: BTreeSet<&String> = alive.iter().map(|(d, _)| d).collect();
                let mut retired = Vec::new();
                let mut kept = Vec::new();
                for (i, d) in service.deployments.drain(..).enumerate() {
                    if i > 0 && wanted.contains(&d.id) && !busy.contains(&d.id) {
                        retired.push(d);
                    } else {
                        kept.push(d);
                    }
                }
                service.deployments = kept;
                if retired.is_empty() {
                    return Err(refuse(
                        "no deployment of the service could be retired".into(),
                    ));
                }
                retire(service, retired, at_ms);
            }
            ServiceProgress::Steady => {
                if service.steady || !settled {
                    return Err(refuse(format!("service {name} is not in a steady state")));
                }
                service.steady = true;
                push_event(
                    service,
                    at_ms,
                    format!("(service {name}) has reached a steady state."),
                );
            }
            ServiceProgress::Inactive => {
                if service.status != ServiceStatus::Draining || !alive.is_empty() {
                    return Err(refuse(format!("service {name} still has tasks")));
                }
                service.status = ServiceStatus::Inactive;
                let retired: Vec<Deployment> = service.deployments.drain(..).collect();
                retire(service, retired, at_ms);
                push_event(
                    service,
                    at_ms,
                    format!("(service {name}) is INACTIVE: every task stopped."),
                );
            }
            ServiceProgress::DaemonDesiredCount { count } => {
                if service.scheduling_strategy != SchedulingStrategy::Daemon
                    || service.status != ServiceStatus::Active
                {
                    return Err(refuse(format!(
                        "service {name} is not an active DAEMON service"
                    )));
                }
                service.desired_count = count;
                if let Some(primary) = service.deployments.first_mut() {
                    primary.desired_count = count;
                }
                service.steady = false;
            }
            ServiceProgress::Note { message } => {
                if service.events.first().is_some_and(|e| e.message == message) {
                    return Ok(CommandOutput::Unchanged);
                }
                push_event(service, at_ms, message);
            }
            ServiceProgress::TrafficShifted {
                deployment_id,
                percent,
            } => {
                let healthy_primary = alive
                    .iter()
                    .filter(|(d, healthy)| *d == deployment_id && *healthy)
                    .count();
                let blue_green = service.deployment_configuration.blue_green().is_some();
                let Some(primary) = service.deployments.first_mut().filter(|d| {
                    d.id == deployment_id && d.rollout_state == RolloutState::InProgress
                }) else {
                    return Err(refuse(format!(
                        "deployment {deployment_id} of service {name} is not a rollout in progress"
                    )));
                };
                if !blue_green
                    || percent > 100
                    || percent <= primary.traffic_percent
                    || healthy_primary < desired as usize
                {
                    return Err(refuse(format!(
                        "deployment {deployment_id} of service {name} cannot take {percent}% of its traffic now"
                    )));
                }
                primary.traffic_percent = percent;
                primary.traffic_at_ms = at_ms;
                primary.updated_at_ms = at_ms;
                for d in service.deployments.iter_mut().skip(1) {
                    d.traffic_percent = 100 - percent;
                    d.traffic_at_ms = at_ms;
                }
                let message = format!(
                    "(service {name}) (deployment {deployment_id}) now gets {percent}% of the load balancer traffic."
                );
                push_event(service, at_ms, message);
            }
            ServiceProgress::BlueGreenRolledBack {
                deployment_id,
                reason,
            } => {
                let busy: BTreeSet<&String> = alive.iter().map(|(d, _)| d).collect();
                blue_green_roll_back(service, &deployment_id, &reason, &busy, at_ms)?;
            }
        }
        service.updated_at_ms = at_ms;
        self.service_changed(&cluster, &name);
        self.service_output(&cluster, &name)
    }

    pub(super) fn rollback_service(
        &mut self,
        cluster: String,
        name: String,
        deployment_id: String,
        at_ms: i64,
    ) -> Result<CommandOutput, StateError> {
        let service = self
            .service(&cluster, &name)
            .ok_or_else(|| StateError::not_found("service", format!("{cluster}/{name}")))?;
        if service.status != ServiceStatus::Active {
            return Err(refuse(format!("service {name} is being deleted")));
        }
        let busy: BTreeSet<String> = self
            .service_tasks(&cluster, &name)
            .map(|t| t.started_by.clone())
            .collect();
        let busy: BTreeSet<&String> = busy.iter().collect();
        let Some(primary) = service
            .primary()
            .filter(|d| d.rollout_state == RolloutState::InProgress)
        else {
            return Err(refuse(format!(
                "service {name} has no deployment in progress to roll back; to go back to an earlier task definition, deploy it (berth service update {name} --task-definition FAMILY:REVISION)"
            )));
        };
        let primary_id = primary.id.clone();
        let failed_definition = primary.task_definition.clone();
        let blue_green_old_alive = service.deployment_configuration.blue_green().is_some()
            && service
                .deployments
                .iter()
                .skip(1)
                .any(|d| busy.contains(&d.id));
        let stable = service.stable_task_definition.clone();
        if !blue_green_old_alive && service.all_deployments().any(|d| d.id == deployment_id) {
            return Err(StateError::already_exists("deployment", deployment_id));
        }
        let service = self.service_mut(&cluster, &name)?;
        let reason = "it was rolled back (berth service rollback).";
        if blue_green_old_alive {
            blue_green_roll_back(service, &primary_id, reason, &busy, at_ms)?;
        } else {
            let Some(target) = stable.filter(|t| *t != failed_definition) else {
                return Err(refuse(format!(
                    "service {name} has no earlier COMPLETED task definition to roll back to"
                )));
            };
            if let Some(primary) = service.deployments.first_mut() {
                primary.rollout_state = RolloutState::Failed;
                primary.rollout_state_reason = reason.to_string();
                primary.updated_at_ms = at_ms;
            }
            push_event(
                service,
                at_ms,
                format!("(service {name}) (deployment {primary_id}) deployment failed: {reason}"),
            );
            start_rollback(service, deployment_id, target, &primary_id, at_ms);
        }
        service.steady = false;
        service.updated_at_ms = at_ms;
        self.service_changed(&cluster, &name);
        self.service_output(&cluster, &name)
    }

    // ---------------------------------------------------- task transitions

    /// A task just reached STOPPED: if it belonged to a service, the service
    /// is no longer steady, and a failure counts toward its deployment's
    /// circuit breaker and its backoff.
    pub(crate) fn service_task_stopped(&mut self, task_id: &str, at_ms: i64) {
        let Some(task) = self.tasks.get(task_id) else {
            return;
        };
        let Some(name) = service_name_of(task).map(str::to_string) else {
            return;
        };
        let cluster = task.cluster.clone();
        let failed = matches!(
            task.stop_code,
            Some(StopCode::TaskFailedToStart | StopCode::EssentialContainerExited)
        );
        let ran_ms = task
            .started_at_ms
            .map(|started| at_ms.saturating_sub(started));
        let deployment_id = task.started_by.clone();
        let Ok(service) = self.service_mut(&cluster, &name) else {
            return;
        };
        service.steady = false;
        if failed {
            self.count_failure(&cluster, &name, &deployment_id, ran_ms, at_ms);
        }
        self.service_changed(&cluster, &name);
    }

    /// One failed task: its deployment's count, and the service's backoff.
    fn count_failure(
        &mut self,
        cluster: &str,
        name: &str,
        deployment_id: &str,
        ran_ms: Option<i64>,
        at_ms: i64,
    ) {
        let Ok(service) = self.service_mut(cluster, name) else {
            return;
        };
        if let Some(d) = service
            .deployments
            .iter_mut()
            .find(|d| d.id == deployment_id)
        {
            d.failed_tasks = d.failed_tasks.saturating_add(1);
            d.updated_at_ms = at_ms;
        }
        let throttle = &mut service.throttle;
        // A task that ran a while had started fine, and a long quiet spell
        // ends a streak: either way this failure starts a new count.
        let ran_long = ran_ms.is_some_and(|ms| ms >= THROTTLE_RESET_RUN_MS);
        let quiet = at_ms.saturating_sub(throttle.last_failure_ms) > 2 * THROTTLE_MAX_MS;
        if ran_long || quiet {
            *throttle = Throttle::default();
        }
        throttle.last_failure_ms = at_ms;
        // Tasks launched before a backoff began may still fail during it;
        // they do not lengthen it.
        if at_ms < throttle.until_ms {
            return;
        }
        throttle.failures = throttle.failures.saturating_add(1);
        let delay = Throttle::delay_ms(throttle.failures);
        if delay > 0 {
            throttle.until_ms = at_ms.saturating_add(delay);
            let failures = throttle.failures;
            let message = format!(
                "(service {name}) has had {failures} task failures in a row; launches are backed off for {}s (doubling up to {}m).",
                delay / 1000,
                THROTTLE_MAX_MS / 60_000
            );
            push_event(service, at_ms, message);
        }
    }
}

fn new_deployment(
    id: String,
    task_definition: String,
    desired_count: u32,
    rollback_of: Option<String>,
    traffic_percent: u32,
    at_ms: i64,
) -> Deployment {
    Deployment {
        id,
        status: DeploymentStatus::Primary,
        task_definition,
        desired_count,
        rollout_state: RolloutState::InProgress,
        rollout_state_reason: "ECS deployment in progress.".to_string(),
        failed_tasks: 0,
        rollback_of,
        created_at_ms: at_ms,
        updated_at_ms: at_ms,
        traffic_percent,
        traffic_at_ms: at_ms,
    }
}

/// Each load balancer names a container of the task definition and one of
/// its mapped ports, or traffic could never reach the tasks.
fn check_load_balancers(
    load_balancers: &[crate::service::LoadBalancer],
    td: &crate::TaskDefinition,
) -> Result<(), StateError> {
    let mut errors = Vec::new();
    for (i, lb) in load_balancers.iter().enumerate() {
        let definition = format!("{}:{}", td.family, td.revision);
        let Some(container) = td
            .spec
            .container_definitions
            .iter()
            .find(|c| c.name == lb.container_name)
        else {
            errors.push(crate::FieldError::new(
                format!("loadBalancers[{i}].containerName"),
                format!(
                    "task definition {definition} has no container {:?}; name one of its containers",
                    lb.container_name
                ),
            ));
            continue;
        };
        if !container
            .port_mappings
            .iter()
            .any(|m| m.container_port == lb.container_port)
        {
            errors.push(crate::FieldError::new(
                format!("loadBalancers[{i}].containerPort"),
                format!(
                    "container {:?} of {definition} maps no port {}; add it to its portMappings or name a mapped port",
                    lb.container_name, lb.container_port
                ),
            ));
        }
        if td.spec.network_mode == crate::NetworkMode::None {
            errors.push(crate::FieldError::new(
                format!("loadBalancers[{i}]"),
                format!("task definition {definition} has networkMode \"none\": nothing can reach it; use bridge, task or host"),
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(crate::ValidationErrors(errors).into())
    }
}

/// A new PRIMARY deployment going back to `target`, the last COMPLETED
/// task definition, after deployment `failed_id` failed.
fn start_rollback(
    service: &mut Service,
    rollback_id: String,
    target: String,
    failed_id: &str,
    at_ms: i64,
) {
    for d in &mut service.deployments {
        d.status = DeploymentStatus::Active;
    }
    // A blue/green rollback deployment starts with no traffic like any
    // other, and takes it over once its tasks are healthy.
    let traffic = if service.deployment_configuration.blue_green().is_some() {
        0
    } else {
        100
    };
    service.deployments.insert(
        0,
        new_deployment(
            rollback_id,
            target.clone(),
            service.desired_count,
            Some(failed_id.to_string()),
            traffic,
            at_ms,
        ),
    );
    service.task_definition = target.clone();
    service.throttle = Throttle::default();
    let name = service.name.clone();
    push_event(
        service,
        at_ms,
        format!("(service {name}) rolling back to {target}."),
    );
}

/// Blue/green: PRIMARY deployment `failed_id` fails, and the deployment
/// before it, whose tasks still run (`busy` lists deployments with tasks),
/// is PRIMARY again with all the traffic. Its tasks never stopped, so
/// nothing has to start.
fn blue_green_roll_back(
    service: &mut Service,
    failed_id: &str,
    reason: &str,
    busy: &BTreeSet<&String>,
    at_ms: i64,
) -> Result<(), StateError> {
    let name = service.name.clone();
    let primary_ok = service
        .deployments
        .first()
        .is_some_and(|d| d.id == failed_id && d.rollout_state == RolloutState::InProgress);
    let previous = service
        .deployments
        .iter()
        .skip(1)
        .position(|d| busy.contains(&d.id))
        .map(|i| i + 1);
    let (true, Some(previous), true) = (
        primary_ok,
        previous,
        service.deployment_configuration.blue_green().is_some(),
    ) else {
        return Err(refuse(format!(
            "deployment {failed_id} of service {name} is not a blue/green rollout whose previous deployment still runs"
        )));
    };
    let mut failed = service.deployments.remove(0);
    failed.rollout_state = RolloutState::Failed;
    failed.rollout_state_reason = reason.to_string();
    failed.status = DeploymentStatus::Active;
    failed.traffic_percent = 0;
    failed.traffic_at_ms = at_ms;
    failed.updated_at_ms = at_ms;
    let mut back = service.deployments.remove(previous - 1);
    back.status = DeploymentStatus::Primary;
    back.traffic_percent = 100;
    back.traffic_at_ms = at_ms;
    back.updated_at_ms = at_ms;
    back.desired_count = service.desired_count;
    service.task_definition = back.task_definition.clone();
    let back_id = back.id.clone();
    service.deployments.insert(0, failed);
    service.deployments.insert(0, back);
    service.throttle = Throttle::default();
    push_event(
        service,
        at_ms,
        format!("(service {name}) (deployment {failed_id}) deployment failed: {reason}"),
    );
    push_event(
        service,
        at_ms,
        format!(
            "(service {name}) rolled back: deployment {back_id} gets all the load balancer traffic again."
        ),
    );
    Ok(())
}

/// Moves deployments to the finished list, newest first, bounded.
fn retire(service: &mut Service, deployments: Vec<Deployment>, at_ms: i64) {
    for mut d in deployments {
        d.status = DeploymentStatus::Inactive;
        d.desired_count = 0;
        d.updated_at_ms = at_ms;
        service.finished_deployments.insert(0, d);
    }
    service
        .finished_deployments
        .truncate(MAX_FINISHED_DEPLOYMENTS);
}

fn push_event(service: &mut Service, at_ms: i64, message: String) {
    let id = service.next_event_id;
    service.next_event_id += 1;
    service.events.insert(
        0,
        crate::service::ServiceEvent {
            id,
            created_at_ms: at_ms,
            message,
        },
    );
    service.events.truncate(MAX_EVENTS);
}

/// `(task a) (task b) ... and 3 more`, as ECS lists tasks in events.
fn task_list(ids: &[&str]) -> String {
    let mut parts: Vec<String> = ids
        .iter()
        .take(IDS_PER_EVENT)
        .map(|id| format!("(task {id})"))
        .collect();
    if ids.len() > IDS_PER_EVENT {
        parts.push(format!("and {} more", ids.len() - IDS_PER_EVENT));
    }
    parts.join(" ")
}
