//! The service controller: keeps each service at its desired count (REPLICA)
//! or on every instance that qualifies (DAEMON), and moves it from one
//! deployment to the next within its bounds, the way ECS's service
//! scheduler does:
//!
//! - tasks that are not STOPPED never exceed `maximumPercent` of the desired
//!   count (rounded down), and healthy tasks never drop below
//!   `minimumHealthyPercent` (rounded up) — except that an unhealthy task is
//!   always replaced;
//! - a task that stops for a reason the controller did not ask for is
//!   replaced; tasks on a DISCONNECTED instance still count until the
//!   instance is declared lost, so a network blip never double-runs them;
//! - tasks on a DRAINING instance are replaced elsewhere first and stopped
//!   once the healthy count allows it; a daemon's task there goes last;
//! - a deployment that keeps failing trips the circuit breaker (or misses
//!   its deadline) and, if asked, rolls back to the last COMPLETED task
//!   definition; repeated failures back launches off exponentially.
//!
//! Every decision is re-checked by the state machine when it applies, so a
//! decision made from a state that moved on is refused, never over-applied.

use std::collections::{BTreeMap, HashMap, HashSet};

use berth_scheduler::{parse_constraints, Constraint, InstanceState};
use berth_types::service::TaskHealth;
use berth_types::{
    Command, DesiredStatus, HealthJudge, RolloutState, SchedulingStrategy, Service,
    ServiceProgress, ServiceStatus, ServiceTaskStop, StartServiceTasks, State, StateEvent,
    StopCause, Task, TaskStatus, MAX_TASKS_PER_RUN,
};

use crate::{Controller, IdSource, Inputs};

/// Tasks started for one service in one pass at most (one command).
pub const MAX_STARTS_PER_PASS: usize = MAX_TASKS_PER_RUN;

pub struct Services;

impl Controller for Services {
    fn name(&self) -> &'static str {
        "services"
    }

    fn interval_ms(&self) -> u64 {
        1000
    }

    fn wakes_on(&self, event: &StateEvent) -> bool {
        // Any task or instance change may concern a service; the driver
        // coalesces bursts.
        matches!(
            event,
            StateEvent::Service { .. } | StateEvent::Task { .. } | StateEvent::Instance { .. }
        )
    }

    fn reconcile(&self, state: &State, inputs: &Inputs<'_>) -> Vec<Command> {
        let ids = IdSource::new(inputs.seed);
        let mut commands = Vec::new();
        // Deregistration delays that are over (checked every pass: time,
        // not an event, ends them).
        let due: Vec<String> = state
            .deactivation_due(inputs.now_ms)
            .map(|t| t.id.clone())
            .take(MAX_TASKS_PER_RUN)
            .collect();
        if !due.is_empty() {
            commands.push(Command::EndDeactivation {
                task_ids: due,
                at_ms: inputs.now_ms,
            });
        }
        // Once a pass, not a lookup per task: usually empty.
        let draining: HashSet<&str> = state
            .instances()
            .filter(|i| i.draining)
            .map(|i| i.id.as_str())
            .collect();
        for service in state.services() {
            if service.status == ServiceStatus::Inactive {
                continue;
            }
            let mut plan = Plan::new(service, inputs.now_ms, &draining);
            match service.scheduling_strategy {
                SchedulingStrategy::Replica => plan.replica(state, &ids),
                SchedulingStrategy::Daemon => plan.daemon(state, &ids),
            }
            plan.progress(state, &ids);
            commands.extend(plan.commands);
        }
        commands
    }
}

/// One task of the service as the controller sees it.
struct Seen<'a> {
    task: &'a Task,
    health: TaskHealth,
    /// Of the PRIMARY deployment.
    primary: bool,
    /// Its instance is draining.
    draining: bool,
    /// Still wanted (not asked to stop yet).
    wanted: bool,
}

/// What the controller decides for one service in one pass.
struct Plan<'a> {
    service: &'a Service,
    now_ms: i64,
    /// The instances that are draining.
    draining: &'a HashSet<&'a str>,
    commands: Vec<Command>,
    stops: Vec<ServiceTaskStop>,
    /// Stops already flushed into a command of this pass.
    stopped: Vec<String>,
    /// Tasks started in this pass.
    started: u32,
}

impl<'a> Plan<'a> {
    fn new(service: &'a Service, now_ms: i64, draining: &'a HashSet<&'a str>) -> Self {
        Self {
            service,
            now_ms,
            draining,
            commands: Vec::new(),
            stops: Vec::new(),
            stopped: Vec::new(),
            started: 0,
        }
    }

    fn progress_command(&mut self, progress: ServiceProgress) {
        self.commands.push(Command::ServiceProgress {
            cluster: self.service.cluster.clone(),
            service: self.service.name.clone(),
            progress,
            at_ms: self.now_ms,
        });
    }

    fn stop(&mut self, task: &Task, cause: StopCause) {
        self.stops.push(ServiceTaskStop {
            task_id: task.id.clone(),
            cause,
        });
    }

    fn stopping(&self, task: &Task) -> bool {
        self.stops.iter().any(|s| s.task_id == task.id) || self.stopped.contains(&task.id)
    }

    /// Whether the PRIMARY deployment may start tasks now.
    fn launchable(&self) -> bool {
        self.service.status == ServiceStatus::Active
            && self
                .service
                .primary()
                .is_some_and(|d| d.rollout_state != RolloutState::Failed)
            && self.now_ms >= self.service.throttle.until_ms
    }

    fn seen(&self, state: &'a State) -> Vec<Seen<'a>> {
        let primary = self.service.primary().map(|d| d.id.as_str());
        let mut judge = HealthJudge::new(state);
        state
            .service_tasks(&self.service.cluster, &self.service.name)
            .map(|task| Seen {
                task,
                health: judge.health(task),
                primary: Some(task.started_by.as_str()) == primary,
                draining: task
                    .instance_id
                    .as_deref()
                    .is_some_and(|i| self.draining.contains(i)),
                wanted: task.desired_status == DesiredStatus::Running,
            })
            .collect()
    }

    /// Essential containers that failed their health checks after the grace
    /// period get their task replaced.
    fn stop_unhealthy(&mut self, seen: &[Seen<'_>]) {
        let grace_ms = i64::from(self.service.health_check_grace_period_secs) * 1000;
        for s in seen {
            let past_grace = s
                .task
                .started_at_ms
                .is_some_and(|at| self.now_ms.saturating_sub(at) >= grace_ms);
            if s.wanted && s.health == TaskHealth::Unhealthy && past_grace {
                self.stop(s.task, StopCause::Unhealthy);
            }
        }
    }

    fn start(&mut self, ids: &IdSource, count: usize, instance_ids: Vec<String>) {
        let Some(primary) = self.service.primary() else {
            return;
        };
        if count == 0 {
            return;
        }
        self.started += u32::try_from(count).unwrap_or(u32::MAX);
        self.commands
            .push(Command::StartServiceTasks(StartServiceTasks {
                cluster: self.service.cluster.clone(),
                service: self.service.name.clone(),
                deployment_id: primary.id.clone(),
                task_ids: (0..count).map(|_| ids.task_id()).collect(),
                instance_ids,
                at_ms: self.now_ms,
            }));
    }

    fn flush_stops(&mut self) {
        if self.stops.is_empty() {
            return;
        }
        self.stopped
            .extend(self.stops.iter().map(|s| s.task_id.clone()));
        self.commands.push(Command::StopServiceTasks {
            cluster: self.service.cluster.clone(),
            service: self.service.name.clone(),
            stops: std::mem::take(&mut self.stops),
            at_ms: self.now_ms,
        });
    }

    // ------------------------------------------------------------- REPLICA

    fn replica(&mut self, state: &'a State, ids: &IdSource) {
        let service = self.service;
        let config = &service.deployment_configuration;
        let desired = service.effective_desired_count();
        let max_alive = config.max_alive(desired);
        let min_healthy = config.min_healthy(desired);
        let seen = self.seen(state);
        self.stop_unhealthy(&seen);
        // Applied before the starts, which re-check the desired count.
        self.flush_stops();

        // What counts toward the desired count: wanted tasks of the PRIMARY
        // deployment, not on a draining instance, not being replaced.
        let keep: Vec<&Seen<'_>> = seen
            .iter()
            .filter(|s| s.wanted && s.primary && !s.draining && !self.stopping(s.task))
            .collect();
        let alive = u32::try_from(seen.len()).unwrap_or(u32::MAX);

        // Scale up within maximumPercent.
        let want = desired.saturating_sub(u32::try_from(keep.len()).unwrap_or(u32::MAX));
        let room = max_alive.saturating_sub(alive);
        if self.launchable() {
            let count = want.min(room) as usize;
            self.start(ids, count.min(MAX_STARTS_PER_PASS), Vec::new());
        }

        // Scale down within minimumHealthyPercent: tasks that are not
        // healthy go first (they cost no health), then healthy ones while
        // the budget lasts.
        let healthy = seen
            .iter()
            .filter(|s| s.wanted && s.health == TaskHealth::Healthy && !self.stopping(s.task))
            .count();
        let mut budget = u32::try_from(healthy)
            .unwrap_or(u32::MAX)
            .saturating_sub(min_healthy);
        let primary_failed = service
            .primary()
            .is_some_and(|d| d.rollout_state == RolloutState::Failed);
        let old_may_stop = self.old_tasks_may_stop();
        let deleting = service.status != ServiceStatus::Active;
        let mut candidates: Vec<(&Seen<'_>, StopCause)> = Vec::new();
        for s in &seen {
            if !s.wanted || self.stopping(s.task) {
                continue;
            }
            if deleting {
                candidates.push((s, StopCause::ServiceDeleted));
            } else if !s.primary {
                // A failed deployment stopped rolling forward: the tasks of
                // the earlier deployment are what keeps the service up.
                if !primary_failed && old_may_stop {
                    candidates.push((s, StopCause::Replaced));
                }
            } else if s.draining {
                candidates.push((s, StopCause::InstanceDraining));
            }
        }
        // Earlier deployments' tasks that are kept serving (a blue/green
        // shift, or a failed rollout without rollback) still follow the
        // desired count: a scale-in stops the surplus.
        if !deleting && (primary_failed || !old_may_stop) {
            let mut held: Vec<&Seen<'_>> = seen
                .iter()
                .filter(|s| s.wanted && !s.primary && !self.stopping(s.task))
                .collect();
            if held.len() > desired as usize {
                held.sort_by_key(|s| {
                    (
                        s.health == TaskHealth::Healthy,
                        std::cmp::Reverse(s.task.created_at_ms),
                    )
                });
                let surplus = held.len() - desired as usize;
                for s in held.into_iter().take(surplus) {
                    candidates.push((s, StopCause::ScaledDown));
                }
            }
        }
        if !deleting && keep.len() > desired as usize {
            // Newest and least healthy first.
            let mut excess: Vec<&&Seen<'_>> = keep.iter().collect();
            excess.sort_by_key(|s| {
                (
                    s.health == TaskHealth::Healthy,
                    std::cmp::Reverse(s.task.created_at_ms),
                )
            });
            for s in excess.into_iter().take(keep.len() - desired as usize) {
                candidates.push((s, StopCause::ScaledDown));
            }
        }
        candidates.sort_by_key(|(s, _)| s.health == TaskHealth::Healthy);
        let mut held_back = 0;
        for (s, cause) in candidates {
            if s.health == TaskHealth::Healthy {
                if budget == 0 {
                    held_back += 1;
                    continue;
                }
                budget -= 1;
            }
            self.stop(s.task, cause);
        }
        // Neither room to start nor health to spare, and nothing on its way:
        // the bounds deadlock this rollout. Say so (the deadline fails it).
        let in_flight = seen
            .iter()
            .any(|s| s.wanted && s.health != TaskHealth::Healthy);
        if want > 0 && room == 0 && held_back > 0 && self.stops.is_empty() && !in_flight {
            let message = format!(
                "(service {}) cannot replace tasks: maximumPercent {} allows {max_alive} tasks and minimumHealthyPercent {} needs {min_healthy} healthy of {desired}; raise maximumPercent or lower minimumHealthyPercent.",
                service.name, config.maximum_percent, config.minimum_healthy_percent
            );
            self.progress_command(ServiceProgress::Note { message });
        }
        self.flush_stops();
    }

    /// Whether tasks of earlier deployments may be stopped now. Rolling:
    /// always (within the health bounds). Blue/green: they keep serving
    /// until the new deployment has all the traffic and the bake time is
    /// over, or the rollout is no longer in progress (completed, or rolled
    /// back to them).
    fn old_tasks_may_stop(&self) -> bool {
        let Some(blue_green) = self.service.deployment_configuration.blue_green() else {
            return true;
        };
        let Some(primary) = self.service.primary() else {
            return true;
        };
        if primary.rollout_state != RolloutState::InProgress {
            return true;
        }
        let baked = primary
            .traffic_at_ms
            .saturating_add(i64::from(blue_green.bake_time_secs) * 1000);
        primary.traffic_percent >= 100 && self.now_ms >= baked
    }

    /// Blue/green steps of an IN_PROGRESS PRIMARY deployment: move traffic
    /// once all its tasks are healthy and each step's interval is over; go
    /// back to the previous deployment (still running) if a new task fails
    /// during the shift. True if it proposed something.
    fn blue_green_step(&mut self, seen: &[Seen<'_>], acting: bool) -> bool {
        let service = self.service;
        let (Some(blue_green), Some(primary)) = (
            service.deployment_configuration.blue_green(),
            service.primary(),
        ) else {
            return false;
        };
        let desired = service.effective_desired_count() as usize;
        let primary_tasks: Vec<&Seen<'_>> = seen.iter().filter(|s| s.primary && s.wanted).collect();
        let healthy_primary = primary_tasks
            .iter()
            .filter(|s| s.health == TaskHealth::Healthy && !s.draining)
            .count();
        let old_alive = seen.iter().any(|s| !s.primary && s.wanted);
        if primary.traffic_percent > 0 && old_alive {
            let failing = primary_tasks
                .iter()
                .any(|s| s.health == TaskHealth::Unhealthy)
                || healthy_primary < desired;
            if failing {
                self.progress_command(ServiceProgress::BlueGreenRolledBack {
                    deployment_id: primary.id.clone(),
                    reason: format!(
                        "a task of the new deployment failed while it had {}% of the traffic.",
                        primary.traffic_percent
                    ),
                });
                return true;
            }
        }
        if acting || healthy_primary < desired || desired == 0 {
            return false;
        }
        let Some(next) = blue_green.traffic.next_percent(primary.traffic_percent) else {
            return false;
        };
        let due = primary.traffic_percent == 0
            || self.now_ms
                >= primary
                    .traffic_at_ms
                    .saturating_add(blue_green.traffic.interval_ms());
        if due {
            self.progress_command(ServiceProgress::TrafficShifted {
                deployment_id: primary.id.clone(),
                percent: next,
            });
            return true;
        }
        false
    }

    // -------------------------------------------------------------- DAEMON

    fn daemon(&mut self, state: &'a State, ids: &IdSource) {
        let service = self.service;
        let seen = self.seen(state);
        self.stop_unhealthy(&seen);
        let expressions = match parse_constraints(&service.placement_constraints) {
            Ok(constraints) => constraints
                .into_iter()
                .filter_map(|c| match c {
                    Constraint::MemberOf(m) => Some(m.expression),
                    // One task per instance already.
                    Constraint::DistinctInstance => None,
                })
                .collect::<Vec<_>>(),
            Err(e) => {
                let message = format!(
                    "(service {}) has placement constraints that cannot be used: {e}",
                    service.name
                );
                self.progress_command(ServiceProgress::Note { message });
                return;
            }
        };
        let deleting = service.status != ServiceStatus::Active;
        let reservation = service
            .primary()
            .and_then(|d| d.task_definition.split_once(':'))
            .and_then(|(family, rev)| state.task_definition(family, rev.parse().ok()?))
            .map(|td| berth_types::resources::reserve(&td.spec));
        let views = match crate::scheduling::cluster_view(state, &service.cluster) {
            Ok(view) => view,
            Err(e) => {
                tracing::error!(service = %service.name, error = %e, "cannot build the cluster view");
                return;
            }
        };
        let mut on_instance: HashMap<&str, Vec<&Seen<'_>>> = HashMap::new();
        for s in &seen {
            if let Some(iid) = s.task.instance_id.as_deref() {
                on_instance.entry(iid).or_default().push(s);
            }
        }
        let min_healthy = service
            .deployment_configuration
            .min_healthy(service.effective_desired_count());
        let healthy = seen
            .iter()
            .filter(|s| s.wanted && s.health == TaskHealth::Healthy && !self.stopping(s.task))
            .count();
        let mut budget = u32::try_from(healthy)
            .unwrap_or(u32::MAX)
            .saturating_sub(min_healthy);
        let mut desired = 0u32;
        let mut start_on = Vec::new();
        let mut no_room = 0u32;
        for view in views.instances() {
            let Some(instance) = state.instance(&view.id) else {
                continue;
            };
            if instance.status != berth_types::InstanceStatus::Active {
                continue;
            }
            let tasks: Vec<&Seen<'_>> = on_instance
                .get(view.id.as_str())
                .map(|v| {
                    v.iter()
                        .copied()
                        .filter(|s| s.wanted && !self.stopping(s.task))
                        .collect()
                })
                .unwrap_or_default();
            if deleting {
                for s in tasks {
                    self.stop(s.task, StopCause::ServiceDeleted);
                }
                continue;
            }
            if instance.draining {
                // Last out: the daemon stays while anything else runs here.
                let others = state
                    .active_tasks_on(&view.id)
                    .any(|t| !is_daemon_task(state, t));
                if !others {
                    for s in tasks {
                        self.stop(s.task, StopCause::InstanceDraining);
                    }
                }
                continue;
            }
            if !expressions.iter().all(|e| e.matches(view)) {
                for s in tasks {
                    self.stop(s.task, StopCause::NotWanted);
                }
                continue;
            }
            // One copy: keep the best (primary, healthy), stop the rest.
            let mut tasks = tasks;
            tasks.sort_by_key(|s| (!s.primary, s.health != TaskHealth::Healthy));
            for extra in tasks.iter().skip(1) {
                self.stop(extra.task, StopCause::NotWanted);
            }
            match tasks.first() {
                Some(s) => {
                    desired += 1;
                    if !s.primary {
                        // Replaced: stopped first (maximumPercent 100), the
                        // new one starts once it has stopped.
                        if s.health == TaskHealth::Healthy {
                            if budget == 0 {
                                continue;
                            }
                            budget -= 1;
                        }
                        self.stop(s.task, StopCause::Replaced);
                    }
                }
                None => {
                    // A DISCONNECTED instance keeps what it runs and gets
                    // nothing new until it is back.
                    let busy = on_instance
                        .get(view.id.as_str())
                        .is_some_and(|v| !v.is_empty());
                    if busy {
                        // Its task is stopping to be replaced: the instance
                        // still counts, and gets the new one once it stopped.
                        desired += 1;
                        continue;
                    }
                    if view.status != InstanceState::Active {
                        continue;
                    }
                    let fits = reservation
                        .as_ref()
                        .is_some_and(|r| view.capacity.check(r).is_ok());
                    if fits {
                        desired += 1;
                        start_on.push(view.id.clone());
                    } else {
                        no_room += 1;
                    }
                }
            }
        }
        if !deleting && desired != service.desired_count {
            self.progress_command(ServiceProgress::DaemonDesiredCount { count: desired });
        }
        if self.launchable() && !start_on.is_empty() {
            start_on.truncate(MAX_STARTS_PER_PASS);
            let count = start_on.len();
            self.start(ids, count, start_on);
        }
        if no_room > 0 && !deleting {
            let message = format!(
                "(service {}) was unable to place a task because no container instance met all of its requirements. Reason: {no_room} qualifying {} lack the CPU, memory or ports its task needs.",
                service.name,
                if no_room == 1 { "instance" } else { "instances" }
            );
            self.progress_command(ServiceProgress::Note { message });
        }
        self.flush_stops();
    }

    // ------------------------------------------------------------ rollout

    /// Completion, failure (circuit breaker, deadline), retirement of
    /// earlier deployments, the steady state, and the end of a deletion.
    fn progress(&mut self, state: &State, ids: &IdSource) {
        let service = self.service;
        let config = &service.deployment_configuration;
        let seen = self.seen(state);
        if service.status == ServiceStatus::Draining {
            if seen.is_empty() {
                self.progress_command(ServiceProgress::Inactive);
            }
            return;
        }
        let Some(primary) = service.primary() else {
            return;
        };
        // What this pass just decided changes what holds: wait for it.
        let acting = self.started > 0
            || self
                .commands
                .iter()
                .any(|c| matches!(c, Command::StopServiceTasks { .. }));
        // Earlier deployments with nothing left.
        let busy: std::collections::BTreeSet<&str> =
            seen.iter().map(|s| s.task.started_by.as_str()).collect();
        let idle: Vec<String> = service
            .deployments
            .iter()
            .skip(1)
            .filter(|d| !busy.contains(d.id.as_str()))
            .map(|d| d.id.clone())
            .collect();
        if !idle.is_empty() {
            self.progress_command(ServiceProgress::DeploymentsRetired {
                deployment_ids: idle,
            });
        }
        let desired = service.effective_desired_count();
        if primary.rollout_state == RolloutState::InProgress {
            let threshold = config.circuit_breaker.threshold_for(desired);
            let deadline = primary.created_at_ms.saturating_add(
                i64::try_from(config.timeout_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
            );
            let failure = if config.circuit_breaker.enable && primary.failed_tasks >= threshold {
                Some(format!(
                    "{} tasks failed, reaching the circuit breaker's threshold of {threshold}.",
                    primary.failed_tasks
                ))
            } else if self.now_ms >= deadline {
                Some(format!(
                    "it did not complete within its deadline of {}s.",
                    config.timeout_secs
                ))
            } else {
                None
            };
            let old_alive = seen.iter().any(|s| !s.primary && s.wanted);
            if let (Some(reason), Some(_), true) = (&failure, config.blue_green(), old_alive) {
                // The previous deployment still runs and serves: going back
                // to it needs no new tasks.
                self.progress_command(ServiceProgress::BlueGreenRolledBack {
                    deployment_id: primary.id.clone(),
                    reason: reason.clone(),
                });
                return;
            }
            if let Some(reason) = failure {
                let rollback = config.circuit_breaker.rollback.then(|| deployment_id(ids));
                self.progress_command(ServiceProgress::DeploymentFailed {
                    deployment_id: primary.id.clone(),
                    reason,
                    rollback_deployment_id: rollback,
                });
                return;
            }
            if self.blue_green_step(&seen, acting) {
                return;
            }
            let healthy_primary = seen
                .iter()
                .filter(|s| s.wanted && s.primary && s.health == TaskHealth::Healthy && !s.draining)
                .count();
            let complete =
                !acting && healthy_primary == desired as usize && seen.len() == desired as usize;
            if complete {
                self.progress_command(ServiceProgress::DeploymentCompleted {
                    deployment_id: primary.id.clone(),
                });
                if !service.steady {
                    self.progress_command(ServiceProgress::Steady);
                }
            }
            return;
        }
        let settled = !acting
            && service.deployments.len() == 1
            && seen.len() == desired as usize
            && seen
                .iter()
                .all(|s| s.wanted && s.primary && s.health == TaskHealth::Healthy);
        if settled && !service.steady && primary.rollout_state == RolloutState::Completed {
            self.progress_command(ServiceProgress::Steady);
        }
    }
}

/// A fresh deployment id, `ecs-svc/` and 19 digits as ECS prints them.
pub fn deployment_id(ids: &IdSource) -> String {
    format!(
        "{}{:019}",
        berth_types::service::DEPLOYMENT_ID_PREFIX,
        ids.seed() % 10_000_000_000_000_000_000
    )
}

fn is_daemon_task(state: &State, task: &Task) -> bool {
    berth_types::service::service_name_of(task)
        .and_then(|name| state.service(&task.cluster, name))
        .is_some_and(|s| s.scheduling_strategy == SchedulingStrategy::Daemon)
}

/// The tasks of each deployment of a service, for tests and views.
pub fn tasks_by_deployment<'a>(
    state: &'a State,
    service: &Service,
) -> BTreeMap<&'a str, Vec<&'a Task>> {
    let mut map: BTreeMap<&str, Vec<&Task>> = BTreeMap::new();
    for task in state.service_tasks(&service.cluster, &service.name) {
        if task.last_status != TaskStatus::Stopped {
            map.entry(task.started_by.as_str()).or_default().push(task);
        }
    }
    map
}
