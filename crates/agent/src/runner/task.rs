//! One actor per task. It owns the task's known status (what it reports)
//! and its desired status (from the latest assignment), and is the only
//! writer of the task's record and board entry.
//!
//! Anything slow (pulling, creating, starting, stopping, removing, waiting
//! for exits, health checks) runs in a spawned tokio task that reports back
//! through the actor's event channel, so the actor always answers commands
//! at once: a stop that arrives during a long pull cancels the pull.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use berth_proto::{convert, pb};
use berth_types::resources::{self, Resources};
use berth_types::task::override_target;
use berth_types::validate;
use berth_types::{
    ContainerDefinition, ContainerStatus, DependencyCondition, DesiredStatus, Health, KeyValuePair,
    NetworkBinding, RestartPolicy, StopCode, TaskDefinitionSpec, TaskReport, TaskStatus,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, info_span, warn, Instrument};

use super::board::TaskView;
use super::{AbortOnDrop, Ctx, TaskCommand};
use crate::error::RuntimeError;
use crate::health::{self, HealthStatus};
use crate::runtime::{ContainerConfig, ContainerState, ExitStatus, OwnedContainer, Runtime};
use crate::store::{ContainerRecord, TaskRecord};

/// Events from the actor's helpers; a handful per container at most.
const EVENT_QUEUE: usize = 16;
const OOM_REASON: &str = "OutOfMemoryError: container killed due to memory usage";
/// A container's reason while its restart policy restarts it.
const RESTARTING_REASON: &str = "exited; being restarted by its restart policy";
const REMOVE_ATTEMPTS: u32 = 3;

/// What the runtime still has of a task when the agent starts.
#[derive(Debug, Default)]
pub(crate) struct Recovery {
    pub record: Option<TaskRecord>,
    pub found: Vec<OwnedContainer>,
}

/// The server has recorded the task as STOPPED for good.
pub(crate) fn is_final(a: &pb::Assignment) -> bool {
    TaskStatus::parse(&a.last_status) == Some(TaskStatus::Stopped)
}

fn wants_stop(a: &pb::Assignment) -> bool {
    DesiredStatus::parse(&a.desired_status) == Some(DesiredStatus::Stopped) || is_final(a)
}

/// The task definition as it will run: overrides applied, dependencies
/// checked. An error is the reason the task fails to start.
pub(crate) fn plan(a: &pb::Assignment) -> Result<TaskDefinitionSpec, String> {
    let spec = a
        .task_definition
        .as_ref()
        .and_then(|td| td.spec.clone())
        .ok_or_else(|| "the assignment carries no task definition".to_string())?;
    let mut spec =
        TaskDefinitionSpec::try_from(spec).map_err(|e| format!("invalid task definition: {e}"))?;
    if spec.container_definitions.is_empty() {
        return Err("the task definition has no containers".into());
    }
    apply_overrides(&mut spec.container_definitions, &a.overrides)?;
    check_dependencies(&spec.container_definitions)?;
    Ok(spec)
}

/// The assignment's published ports. One that does not parse fails the task
/// to start: running it without the port would serve nobody.
pub(crate) fn network_bindings(a: &pb::Assignment) -> Result<Vec<NetworkBinding>, String> {
    a.network_bindings
        .iter()
        .cloned()
        .map(|b| NetworkBinding::try_from(b).map_err(|e| format!("invalid network binding: {e}")))
        .collect()
}

fn apply_overrides(
    defs: &mut [ContainerDefinition],
    overrides: &[pb::KeyValuePair],
) -> Result<(), String> {
    let overrides =
        convert::overrides_from_wire(overrides).map_err(|e| format!("invalid override: {e}"))?;
    for (container, key, value) in overrides {
        let def = defs
            .iter_mut()
            .find(|d| d.name == container)
            .ok_or_else(|| {
                format!(
                    "override {:?} names no container of the task",
                    override_target(&container, &key)
                )
            })?;
        match def.environment.iter_mut().find(|e| e.name == key) {
            Some(e) => e.value = value,
            None => def.environment.push(KeyValuePair { name: key, value }),
        }
    }
    Ok(())
}

/// What the server validated already, checked again because a task that
/// waits on a container it does not have, or on itself, would never start.
fn check_dependencies(defs: &[ContainerDefinition]) -> Result<(), String> {
    for d in defs {
        for dep in &d.depends_on {
            if dep.container_name == d.name {
                return Err(format!("container {:?} depends on itself", d.name));
            }
            if !defs.iter().any(|o| o.name == dep.container_name) {
                return Err(format!(
                    "container {:?} depends on {:?}, which the task does not have",
                    d.name, dep.container_name
                ));
            }
        }
    }
    match validate::find_dependency_cycle(defs) {
        Some(i) => Err(format!(
            "dependsOn forms a cycle through container {:?}",
            defs[i].name
        )),
        None => Ok(()),
    }
}

fn exit_code(exit: &ExitStatus) -> i32 {
    i32::try_from(exit.code).unwrap_or(-1)
}

/// The wall clock in ms since the epoch, for what outlives the agent.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The monotonic instant matching a wall-clock time: how long ago it was,
/// taken from now. A time in the future (clock change) counts as now.
fn instant_at(ms: i64) -> Instant {
    let ago = u64::try_from(now_ms().saturating_sub(ms)).unwrap_or(0);
    let now = Instant::now();
    now.checked_sub(Duration::from_millis(ago)).unwrap_or(now)
}

/// How long a process that started at `started_ms` (wall clock) ran until
/// it exited at `exited_at`, when both are known.
fn ran_between(started_ms: Option<i64>, exited_at: Option<SystemTime>) -> Option<Duration> {
    let exited_ms = exited_at?
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())?;
    let ran = exited_ms.checked_sub(started_ms?)?;
    u64::try_from(ran).ok().map(Duration::from_millis)
}

/// Whether the restart policy restarts an exit, judged on the container
/// alone (the task's own state is the actor's to check): `Err` says why
/// not. `ran_for` is how long the process ran since its last (re)start;
/// unknown is never long enough. `min_period` raises a shorter attempt
/// period to the agent's floor (ECS's 60 s unless a test lowers it).
pub(crate) fn restart_decision(
    policy: Option<&RestartPolicy>,
    exit_code: Option<i32>,
    ran_for: Option<Duration>,
    min_period: Duration,
) -> Result<(), &'static str> {
    let policy = policy
        .filter(|p| p.enabled)
        .ok_or("no enabled restart policy")?;
    let code = exit_code.ok_or("the exit code is unknown")?;
    if !policy.restarts_exit_code(code) {
        return Err("the exit code is in ignoredExitCodes");
    }
    let period = Duration::from_secs(u64::from(policy.restart_attempt_period_secs)).max(min_period);
    match ran_for {
        Some(ran) if ran >= period => Ok(()),
        _ => Err("it ran for less than restartAttemptPeriod since its last (re)start"),
    }
}

fn health_from(h: HealthStatus) -> Health {
    match h {
        HealthStatus::Unknown => Health::Unknown,
        HealthStatus::Healthy => Health::Healthy,
        HealthStatus::Unhealthy => Health::Unhealthy,
    }
}

/// The board's view of a task record: the one place a report is built, for
/// what was loaded at start as for what an actor publishes.
pub(crate) fn record_view(task_id: &str, record: &TaskRecord, reservation: Resources) -> TaskView {
    TaskView {
        status: record.status,
        report: (&TaskReport {
            task_id: task_id.to_string(),
            last_status: record.status,
            containers: record
                .containers
                .iter()
                .map(|c| berth_types::ContainerState {
                    name: c.name.clone(),
                    status: c.status,
                    exit_code: c.exit_code,
                    reason: c.reason.clone(),
                    health: c.health,
                    restart_count: c.restart_count,
                })
                .collect(),
            reason: record.reason.clone(),
            stop_code: record.stop_code,
            ip: record.ip.map(|ip| ip.to_string()),
        })
            .into(),
        containers: record
            .containers
            .iter()
            .map(|c| (c.name.clone(), c.id.clone()))
            .collect(),
        reservation,
    }
}

/// What a fresh task's record looks like before anything happened.
pub(crate) fn initial_record(spec: Option<&TaskDefinitionSpec>) -> TaskRecord {
    TaskRecord {
        status: TaskStatus::Pending,
        containers: spec
            .map(|s| {
                s.container_definitions
                    .iter()
                    .map(|d| ContainerRecord {
                        name: d.name.clone(),
                        id: None,
                        status: ContainerStatus::Pending,
                        exit_code: None,
                        reason: String::new(),
                        health: Health::Unknown,
                        started: false,
                        restart_count: 0,
                        started_at_ms: None,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        reason: String::new(),
        stop_code: None,
        ip: None,
    }
}

pub(crate) fn reservation(spec: Option<&TaskDefinitionSpec>) -> Resources {
    spec.map(|s| resources::reserve(s).resources())
        .unwrap_or(Resources::ZERO)
}

#[derive(Debug)]
enum Event {
    /// `ip`: the task's address, when creating the container set its
    /// network up (or found it).
    Created {
        idx: usize,
        id: String,
        ip: Option<IpAddr>,
    },
    Started {
        idx: usize,
        result: Result<(), String>,
    },
    /// `run` is the container's restart count when the process was
    /// started, so news from a process that was since replaced is dropped.
    Exited {
        idx: usize,
        id: String,
        run: u32,
        exit: Option<ExitStatus>,
        reason: String,
    },
    Health {
        idx: usize,
        id: String,
        run: u32,
        status: HealthStatus,
    },
    /// `ip` as in `Created`: a restart after a reboot sets the task's
    /// network up again, maybe with another address.
    Restarted {
        idx: usize,
        id: String,
        result: Result<u32, String>,
        ip: Option<IpAddr>,
    },
    StopDone {
        results: Vec<(usize, String, Option<ExitStatus>)>,
    },
    Removed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Containers are being created and started in dependency order.
    Starting,
    Running,
    Stopping,
    Stopped,
    /// Stopped and being removed, to be forgotten.
    Removing,
    Gone,
}

struct Ctr {
    def: ContainerDefinition,
    id: Option<String>,
    status: ContainerStatus,
    exit_code: Option<i32>,
    reason: String,
    health: Health,
    started: bool,
    /// In-place restarts under the restart policy; also numbers the runs.
    restart_count: u32,
    /// When the current process started, for the restart attempt period.
    started_at: Option<Instant>,
    /// The same on the wall clock, which is what the record keeps.
    started_at_ms: Option<i64>,
    waiter: Option<AbortOnDrop>,
    checker: Option<AbortOnDrop>,
    /// The in-place restart in flight. A container being restarted is
    /// PENDING with `started` set, a pair nothing else produces, which is
    /// how a restarted agent knows to finish the restart.
    restarter: Option<AbortOnDrop>,
}

impl Ctr {
    fn restarting(&self) -> bool {
        self.status == ContainerStatus::Pending && self.started
    }

    fn mark_started(&mut self) {
        self.started_at = Some(Instant::now());
        self.started_at_ms = Some(now_ms());
    }
}

enum Readiness {
    Ready,
    NotYet,
    Never(String),
}

struct Actor<R: Runtime> {
    ctx: Ctx<R>,
    task_id: String,
    assignment: pb::Assignment,
    spec: Option<TaskDefinitionSpec>,
    /// The ports the control plane chose at placement (they never change).
    bindings: Vec<NetworkBinding>,
    plan_error: Option<String>,
    reservation: Resources,
    status: TaskStatus,
    stop_code: Option<StopCode>,
    reason: String,
    /// The task's own address (bridge and task network modes), once its
    /// network exists; every report from then on carries it.
    ip: Option<IpAddr>,
    containers: Vec<Ctr>,
    phase: Phase,
    /// The create-and-start in flight, with the container it is for.
    op: Option<(usize, AbortOnDrop)>,
    /// The stop or removal in flight.
    side_op: Option<AbortOnDrop>,
    /// Remove the containers and forget the task once it is stopped.
    forget: bool,
    events_tx: mpsc::Sender<Event>,
    events_rx: mpsc::Receiver<Event>,
}

/// Runs the task until it is forgotten (or the runner goes away, which
/// leaves its containers as they are). Returns the task id.
pub(crate) async fn run<R: Runtime>(
    ctx: Ctx<R>,
    assignment: pb::Assignment,
    recovery: Option<Recovery>,
    mut commands: mpsc::Receiver<TaskCommand>,
) -> String {
    let mut actor = Actor::new(ctx, assignment);
    match recovery {
        Some(r) => actor.recover(r).await,
        None => actor.begin().await,
    }
    while actor.phase != Phase::Gone {
        tokio::select! {
            cmd = commands.recv() => match cmd {
                Some(cmd) => actor.command(cmd).await,
                None => break,
            },
            Some(event) = actor.events_rx.recv() => actor.event(event).await,
        }
    }
    actor.task_id
}

impl<R: Runtime> Actor<R> {
    fn new(ctx: Ctx<R>, assignment: pb::Assignment) -> Self {
        let (spec, bindings, plan_error) =
            match plan(&assignment).and_then(|s| Ok((s, network_bindings(&assignment)?))) {
                Ok((spec, bindings)) => (Some(spec), bindings, None),
                Err(e) => (None, Vec::new(), Some(e)),
            };
        let containers = spec
            .iter()
            .flat_map(|s| s.container_definitions.iter())
            .map(|def| Ctr {
                def: def.clone(),
                id: None,
                status: ContainerStatus::Pending,
                exit_code: None,
                reason: String::new(),
                health: Health::Unknown,
                started: false,
                restart_count: 0,
                started_at: None,
                started_at_ms: None,
                waiter: None,
                checker: None,
                restarter: None,
            })
            .collect();
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        Actor {
            task_id: assignment.task_id.clone(),
            reservation: reservation(spec.as_ref()),
            spec,
            bindings,
            plan_error,
            assignment,
            ctx,
            status: TaskStatus::Pending,
            stop_code: None,
            reason: String::new(),
            ip: None,
            containers,
            phase: Phase::Starting,
            op: None,
            side_op: None,
            forget: false,
            events_tx,
            events_rx,
        }
    }

    // ------------------------------------------------------------ records

    fn record(&self) -> TaskRecord {
        TaskRecord {
            status: self.status,
            containers: self
                .containers
                .iter()
                .map(|c| ContainerRecord {
                    name: c.def.name.clone(),
                    id: c.id.clone(),
                    status: c.status,
                    exit_code: c.exit_code,
                    reason: c.reason.clone(),
                    health: c.health,
                    started: c.started,
                    restart_count: c.restart_count,
                    started_at_ms: c.started_at_ms,
                })
                .collect(),
            reason: self.reason.clone(),
            stop_code: self.stop_code,
            ip: self.ip,
        }
    }

    /// Writes the record; `durable` waits until it is on disk. A failed
    /// write is logged and the task carries on: the runtime's labels still
    /// tell a restarted agent what runs.
    async fn save(&self, durable: bool) {
        let result = match self.ctx.store.put_record(&self.task_id, &self.record()) {
            Ok(()) if durable => self.ctx.store.flush().await,
            other => other,
        };
        if let Err(e) = result {
            warn!(error = %e, "cannot record the task's state");
        }
    }

    fn publish(&self) {
        self.ctx
            .board
            .publish(record_view(&self.task_id, &self.record(), self.reservation));
    }

    /// Moves the known status forward (never back), saves and reports.
    async fn advance(&mut self, to: TaskStatus) {
        if to > self.status {
            info!(from = self.status.as_str(), to = to.as_str(), "task status");
            self.status = to;
        }
        self.save(true).await;
        self.publish();
    }

    // ------------------------------------------------------------ start

    async fn begin(&mut self) {
        if wants_stop(&self.assignment) {
            // Stopped before it ever started here: nothing to stop.
            self.forget = is_final(&self.assignment);
            self.finish_stop().await;
            return;
        }
        if let Some(reason) = self.plan_error.clone() {
            warn!(reason = %reason, "task cannot start");
            self.begin_stop(Some(StopCode::TaskFailedToStart), reason)
                .await;
            return;
        }
        info!(
            family = %self.spec.as_ref().map(|s| s.family.as_str()).unwrap_or_default(),
            containers = self.containers.len(),
            "starting task"
        );
        self.advance(TaskStatus::Pending).await;
        self.step().await;
    }

    /// Starts the next container whose dependencies allow it, or declares
    /// the task RUNNING once every container has started.
    async fn step(&mut self) {
        if self.phase != Phase::Starting || self.op.is_some() {
            return;
        }
        // An essential container that is gone (it exited, or vanished while
        // the agent was away) ends the start whatever else is pending.
        if let Some(c) = self
            .containers
            .iter()
            .find(|c| c.def.essential && c.status == ContainerStatus::Stopped)
        {
            let (code, why) = if c.started {
                (StopCode::EssentialContainerExited, essential_exit_reason(c))
            } else {
                (
                    StopCode::TaskFailedToStart,
                    format!("container {:?} never started: {}", c.def.name, c.reason),
                )
            };
            self.begin_stop(Some(code), why).await;
            return;
        }
        for idx in 0..self.containers.len() {
            let c = &self.containers[idx];
            if c.started || c.status == ContainerStatus::Stopped {
                continue;
            }
            match self.readiness(idx) {
                Readiness::Ready => {
                    self.spawn_start(idx);
                    return;
                }
                Readiness::NotYet => {}
                Readiness::Never(reason) => {
                    self.begin_stop(Some(StopCode::TaskFailedToStart), reason)
                        .await;
                    return;
                }
            }
        }
        let all_started = self
            .containers
            .iter()
            .all(|c| c.started || c.status == ContainerStatus::Stopped);
        let essentials_run = self
            .containers
            .iter()
            .filter(|c| c.def.essential)
            .all(|c| c.status == ContainerStatus::Running);
        if all_started && essentials_run {
            self.phase = Phase::Running;
            self.advance(TaskStatus::Running).await;
            self.check_all_exited().await;
        }
    }

    fn readiness(&self, idx: usize) -> Readiness {
        let c = &self.containers[idx];
        for dep in &c.def.depends_on {
            let Some(d) = self
                .containers
                .iter()
                .find(|o| o.def.name == dep.container_name)
            else {
                return Readiness::Never(format!(
                    "container {:?} depends on unknown container {:?}",
                    c.def.name, dep.container_name
                ));
            };
            let exited = d.status == ContainerStatus::Stopped;
            let never = |why: String| {
                Readiness::Never(format!(
                    "container {:?} cannot start: dependency {:?} ({}) {why}",
                    c.def.name,
                    d.def.name,
                    dep.condition.as_str()
                ))
            };
            match dep.condition {
                DependencyCondition::Start if d.started => {}
                DependencyCondition::Start if exited => return never("never started".into()),
                DependencyCondition::Complete if exited && d.started => {}
                DependencyCondition::Complete if exited => return never("never started".into()),
                DependencyCondition::Success if exited && d.exit_code == Some(0) => {}
                DependencyCondition::Success if exited => {
                    return never(match d.exit_code {
                        Some(code) => format!("exited with code {code}"),
                        None => "did not run to completion".into(),
                    })
                }
                DependencyCondition::Healthy if d.health == Health::Healthy => {}
                DependencyCondition::Healthy if exited => {
                    return never("exited before it was healthy".into())
                }
                DependencyCondition::Healthy if d.def.health_check.is_none() => {
                    return never("has no healthCheck".into())
                }
                _ => return Readiness::NotYet,
            }
        }
        Readiness::Ready
    }

    fn container_config(&self, def: &ContainerDefinition) -> Option<ContainerConfig> {
        let spec = self.spec.as_ref()?;
        Some(ContainerConfig {
            task_id: self.task_id.clone(),
            task_family: spec.family.clone(),
            cluster: self.assignment.cluster.clone(),
            definition: def.clone(),
            network_mode: spec.network_mode,
            network_bindings: self.bindings.clone(),
            volumes: spec.volumes.clone(),
            task_cpu: spec.cpu,
            task_memory: spec.memory,
            pull_policy: self.ctx.config.pull_policy,
        })
    }

    fn spawn_start(&mut self, idx: usize) {
        let c = &self.containers[idx];
        let Some(config) = self.container_config(&c.def) else {
            return;
        };
        if c.id.is_none() {
            // What a PENDING task waits for, for `berth task describe`: a
            // pull can take minutes, and says nothing else until it ends.
            let doing = format!(
                "pulling image {} and creating the container (since {})",
                c.def.image,
                berth_types::time::rfc3339(berth_client::time::now_ms())
            );
            if let Some(c) = self.containers.get_mut(idx) {
                c.reason = doing;
            }
            self.publish();
        }
        let c = &self.containers[idx];
        let existing = c.id.clone();
        let runtime = self.ctx.runtime.clone();
        let tx = self.events_tx.clone();
        let span = info_span!("start", container = %c.def.name);
        let secrets = self.ctx.config.secrets.clone();
        let task_id = self.task_id.clone();
        let handle = tokio::spawn(
            async move {
                let mut config = config;
                // Only a container still to be created needs the values
                // (an existing one has its environment already).
                let needs = !config.definition.secrets.is_empty()
                    || config.definition.repository_credentials.is_some();
                let fetched = if existing.is_none() && needs {
                    fetch_secrets(secrets.as_deref(), &task_id, &mut config).await
                } else {
                    Ok(None)
                };
                let result = match fetched {
                    Ok(credentials) => {
                        crate::registry::PULL_CREDENTIALS
                            .scope(
                                credentials,
                                create_and_start(&*runtime, &config, existing, idx, &tx),
                            )
                            .await
                    }
                    Err(reason) => Err(reason),
                };
                let _ = tx.send(Event::Started { idx, result }).await;
            }
            .instrument(span),
        );
        self.op = Some((idx, AbortOnDrop(handle)));
    }

    /// Follows a started container: its exit, and its health checks.
    fn watch(&mut self, idx: usize) {
        let runtime = self.ctx.runtime.clone();
        let tx = self.events_tx.clone();
        let c = &mut self.containers[idx];
        let Some(id) = c.id.clone() else { return };
        let run = c.restart_count;
        let span = info_span!("container", container = %c.def.name, container_id = %id);
        c.waiter = Some(AbortOnDrop(tokio::spawn(
            wait_for_exit(runtime.clone(), id.clone(), idx, run, tx.clone())
                .instrument(span.clone()),
        )));
        let Some(check) = &c.def.health_check else {
            return;
        };
        let Some(mut health) = health::monitor(runtime, id.clone(), check) else {
            return;
        };
        c.checker = Some(AbortOnDrop(tokio::spawn(
            async move {
                while health.changed().await.is_ok() {
                    let status = *health.borrow_and_update();
                    let event = Event::Health {
                        idx,
                        id: id.clone(),
                        run,
                        status,
                    };
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
            }
            .instrument(span),
        )));
    }

    // ------------------------------------------------------------ stop

    /// Stops the task: cancels what is starting, stops what runs. The first
    /// stop code and reason are kept.
    async fn begin_stop(&mut self, code: Option<StopCode>, reason: String) {
        if !matches!(self.phase, Phase::Starting | Phase::Running) {
            return;
        }
        if self.stop_code.is_none() && code.is_some() {
            self.stop_code = code;
            self.reason = reason;
        }
        if self.stop_code.is_some() {
            info!(stop_code = ?self.stop_code, reason = %self.reason, "stopping task");
        } else {
            info!("stopping task as desired");
        }
        // Dropping the handle aborts the start in flight; the container it
        // may have created is looked up by its labels.
        let aborted = self.op.take().map(|(idx, _)| idx);
        // A restart in flight is abandoned the same way; its container
        // (PENDING, with an id) is among the targets, so whatever process
        // the restart got to start is stopped too.
        for c in &mut self.containers {
            c.restarter = None;
        }
        self.phase = Phase::Stopping;
        let timeout = self.ctx.config.default_stop_timeout;
        let targets: Vec<StopTarget> = self
            .containers
            .iter()
            .enumerate()
            .filter(|(i, c)| {
                c.status != ContainerStatus::Stopped && (c.id.is_some() || aborted == Some(*i))
            })
            .map(|(idx, c)| StopTarget {
                idx,
                name: c.def.name.clone(),
                id: c.id.clone(),
                timeout: c
                    .def
                    .stop_timeout
                    .map(|s| Duration::from_secs(u64::from(s)))
                    .unwrap_or(timeout),
            })
            .collect();
        if targets.is_empty() {
            self.finish_stop().await;
            return;
        }
        self.advance(TaskStatus::Stopping).await;
        self.spawn_stop(targets, aborted.is_some());
    }

    fn spawn_stop(&mut self, targets: Vec<StopTarget>, look_up: bool) {
        let runtime = self.ctx.runtime.clone();
        let tx = self.events_tx.clone();
        let task_id = self.task_id.clone();
        self.side_op = Some(AbortOnDrop(tokio::spawn(
            async move {
                let results = stop_containers(runtime, &task_id, targets, look_up).await;
                let _ = tx.send(Event::StopDone { results }).await;
            }
            .in_current_span(),
        )));
    }

    async fn finish_stop(&mut self) {
        for c in &mut self.containers {
            c.status = ContainerStatus::Stopped;
            c.waiter = None;
            c.checker = None;
            c.restarter = None;
        }
        self.side_op = None;
        self.phase = Phase::Stopped;
        // Before STOPPED is reported: the control plane frees the task's
        // host ports then, and a stale port mapping would catch the next
        // task's traffic. (A task that created nothing holds nothing.)
        if self.containers.iter().any(|c| c.id.is_some()) {
            self.ctx.runtime.task_stopped(&self.task_id).await;
        }
        self.advance(TaskStatus::Stopped).await;
        if self.forget {
            self.begin_remove();
        }
    }

    fn begin_remove(&mut self) {
        self.phase = Phase::Removing;
        let runtime = self.ctx.runtime.clone();
        let tx = self.events_tx.clone();
        let task_id = self.task_id.clone();
        let ids: Vec<String> = self
            .containers
            .iter()
            .filter_map(|c| c.id.clone())
            .collect();
        let wait = self.ctx.config.cleanup_wait;
        if !wait.is_zero() {
            info!(
                wait_secs = wait.as_secs(),
                "task stopped; its containers and logs are kept for the cleanup wait"
            );
        }
        self.side_op = Some(AbortOnDrop(tokio::spawn(
            async move {
                // The actor stays alive meanwhile, so `berth task logs`
                // still reads a stopped task's output.
                tokio::time::sleep(wait).await;
                remove_containers(runtime, &task_id, ids).await;
                let _ = tx.send(Event::Removed).await;
            }
            .in_current_span(),
        )));
    }

    async fn check_all_exited(&mut self) {
        if self.phase == Phase::Running
            && self
                .containers
                .iter()
                .all(|c| c.status == ContainerStatus::Stopped)
        {
            self.begin_stop(
                Some(StopCode::EssentialContainerExited),
                "All containers exited".into(),
            )
            .await;
        }
    }

    // ------------------------------------------------------------ inputs

    async fn command(&mut self, cmd: TaskCommand) {
        match cmd {
            TaskCommand::Update(a) => {
                if matches!(self.phase, Phase::Removing | Phase::Gone) {
                    debug!("assignment for a task being forgotten; ignored");
                    return;
                }
                let stop = wants_stop(&a);
                self.forget |= is_final(&a);
                // The definition of a task never changes; only the desired
                // and recorded statuses matter here.
                self.assignment = *a;
                if stop {
                    self.begin_stop(None, String::new()).await;
                }
            }
            TaskCommand::Forget => {
                if matches!(self.phase, Phase::Removing | Phase::Gone) {
                    return;
                }
                info!("no longer assigned to this instance: stopping and forgetting it");
                self.forget = true;
                self.begin_stop(None, String::new()).await;
            }
        }
        if self.forget && self.phase == Phase::Stopped {
            self.begin_remove();
        }
    }

    async fn event(&mut self, event: Event) {
        match event {
            Event::Created { idx, id, ip } => {
                if let Some(c) = self.containers.get_mut(idx) {
                    c.id = Some(id);
                    let new_address = self.note_address(ip);
                    self.save(false).await;
                    if new_address {
                        self.publish();
                    }
                }
            }
            Event::Started { idx, result } => self.on_started(idx, result).await,
            Event::Exited {
                idx,
                id,
                run,
                exit,
                reason,
            } => self.on_exit(idx, &id, run, exit, reason).await,
            Event::Restarted {
                idx,
                id,
                result,
                ip,
            } => {
                self.note_address(ip);
                self.on_restarted(idx, &id, result).await
            }
            Event::Health {
                idx,
                id,
                run,
                status,
            } => {
                let Some(c) = self.containers.get_mut(idx) else {
                    return;
                };
                let health = health_from(status);
                if c.id.as_deref() != Some(id.as_str())
                    || c.restart_count != run
                    || c.status != ContainerStatus::Running
                    || c.health == health
                {
                    return;
                }
                c.health = health;
                self.save(false).await;
                self.publish();
                self.step().await;
            }
            Event::StopDone { results } => {
                for (idx, id, exit) in results {
                    if let Some(c) = self.containers.get_mut(idx) {
                        c.id.get_or_insert(id);
                        if c.status != ContainerStatus::Stopped {
                            c.status = ContainerStatus::Stopped;
                            c.exit_code = exit.as_ref().map(exit_code);
                            if exit.is_some_and(|e| e.oom_killed) {
                                c.reason = OOM_REASON.into();
                            }
                        }
                    }
                }
                self.finish_stop().await;
            }
            Event::Removed => {
                let forgotten = self
                    .ctx
                    .store
                    .remove_task(&self.task_id)
                    .map_err(|e| e.to_string());
                let flushed = self.ctx.store.flush().await.map_err(|e| e.to_string());
                if let Err(e) = forgotten.and(flushed) {
                    warn!(error = %e, "cannot remove the task from the store");
                }
                self.ctx.board.forget(&self.task_id);
                self.phase = Phase::Gone;
                info!("task forgotten");
            }
        }
    }

    async fn on_started(&mut self, idx: usize, result: Result<(), String>) {
        if self.op.as_ref().map(|(i, _)| *i) != Some(idx) {
            // A start that was cancelled already.
            return;
        }
        self.op = None;
        match result {
            Ok(()) => {
                let Some(c) = self.containers.get_mut(idx) else {
                    return;
                };
                c.started = true;
                c.status = ContainerStatus::Running;
                c.reason.clear();
                c.mark_started();
                self.watch(idx);
                self.save(false).await;
                self.publish();
                self.step().await;
            }
            Err(reason) => {
                if let Some(c) = self.containers.get_mut(idx) {
                    c.reason.clone_from(&reason);
                }
                warn!(reason = %reason, "task failed to start");
                self.begin_stop(Some(StopCode::TaskFailedToStart), reason)
                    .await;
            }
        }
    }

    async fn on_exit(
        &mut self,
        idx: usize,
        id: &str,
        run: u32,
        exit: Option<ExitStatus>,
        reason: String,
    ) {
        let min_period = self.ctx.config.min_restart_attempt_period;
        // Only a RUNNING task that is to keep running restarts containers:
        // during the start, dependency conditions are still being judged on
        // exits, and a stop must never be undone.
        let task_may_restart = self.phase == Phase::Running && !self.stop_wanted();
        let Some(c) = self.containers.get_mut(idx) else {
            return;
        };
        if c.id.as_deref() != Some(id)
            || c.restart_count != run
            || c.status != ContainerStatus::Running
        {
            return;
        }
        c.exit_code = exit.as_ref().map(exit_code);
        c.reason = if exit.is_some_and(|e| e.oom_killed) {
            OOM_REASON.into()
        } else {
            reason
        };
        c.checker = None;
        let ran_for = c.started_at.map(|at| at.elapsed());
        let decision = restart_decision(
            c.def.restart_policy.as_ref(),
            c.exit_code,
            ran_for,
            min_period,
        );
        match decision {
            Ok(()) if task_may_restart => {
                self.begin_restart(idx).await;
                return;
            }
            Ok(()) => {}
            Err(why) => {
                if c.def.restart_policy.as_ref().is_some_and(|p| p.enabled) {
                    info!(container = %c.def.name, exit_code = ?c.exit_code, ran_secs = ran_for.map(|d| d.as_secs()), why, "container not restarted");
                }
            }
        }
        c.status = ContainerStatus::Stopped;
        info!(container = %c.def.name, exit_code = ?c.exit_code, essential = c.def.essential, "container exited");
        self.save(false).await;
        self.publish();
        self.after_exit(idx).await;
    }

    /// What a container's exit does to the task, once it is not restarted.
    async fn after_exit(&mut self, idx: usize) {
        let Some(c) = self.containers.get(idx) else {
            return;
        };
        let essential = c.def.essential;
        let why = essential_exit_reason(c);
        match self.phase {
            Phase::Starting | Phase::Running if essential => {
                self.begin_stop(Some(StopCode::EssentialContainerExited), why)
                    .await
            }
            Phase::Starting => self.step().await,
            Phase::Running => self.check_all_exited().await,
            _ => {}
        }
    }

    fn stop_wanted(&self) -> bool {
        self.forget || wants_stop(&self.assignment)
    }

    fn uses_bridge(&self) -> bool {
        self.spec
            .as_ref()
            .is_some_and(|s| s.network_mode.uses_bridge())
    }

    /// Takes the task's address as the runtime last gave it (`None`: it
    /// did not say, and the one known stays). True when it changed.
    fn note_address(&mut self, ip: Option<IpAddr>) -> bool {
        match ip {
            Some(ip) if self.ip != Some(ip) => {
                info!(ip = %ip, previous = ?self.ip, "task address");
                self.ip = Some(ip);
                true
            }
            _ => false,
        }
    }

    // ------------------------------------------------------------ restart policy

    /// Restarts an exited container in place (its restart policy allows
    /// it). The container is PENDING until the new process runs, so the
    /// task is never reported STOPPED for it. Works with or without a
    /// session: nothing here needs the control plane.
    async fn begin_restart(&mut self, idx: usize) {
        let Some(c) = self.containers.get_mut(idx) else {
            return;
        };
        c.status = ContainerStatus::Pending;
        c.started = true;
        c.health = Health::Unknown;
        c.waiter = None;
        c.checker = None;
        if c.reason.is_empty() {
            c.reason = RESTARTING_REASON.into();
        }
        info!(task_id = %self.task_id, container = %c.def.name, exit_code = ?c.exit_code, restart_count = c.restart_count, "container exited; restarting it in place (restart policy)");
        // On disk before the runtime is touched: an agent that dies in the
        // middle finds the restart half done and finishes it.
        self.save(true).await;
        self.publish();
        self.spawn_restart(idx);
    }

    fn spawn_restart(&mut self, idx: usize) {
        let runtime = self.ctx.runtime.clone();
        let tx = self.events_tx.clone();
        let task_id = self.task_id.clone();
        let bridged = self.uses_bridge();
        let Some(c) = self.containers.get_mut(idx) else {
            return;
        };
        let Some(id) = c.id.clone() else {
            return;
        };
        let name = c.def.name.clone();
        let span = info_span!("restart", container = %name, container_id = %id);
        c.restarter = Some(AbortOnDrop(tokio::spawn(
            async move {
                let result = runtime.restart(&id).await.map_err(|e| {
                    format!(
                        "CannotStartContainerError: container {name:?} could not be restarted: {e}"
                    )
                });
                let ip = bridged.then(|| runtime.task_address(&task_id)).flatten();
                let _ = tx
                    .send(Event::Restarted {
                        idx,
                        id,
                        result,
                        ip,
                    })
                    .await;
            }
            .instrument(span),
        )));
    }

    async fn on_restarted(&mut self, idx: usize, id: &str, result: Result<u32, String>) {
        let task_id = self.task_id.clone();
        let Some(c) = self.containers.get_mut(idx) else {
            return;
        };
        // A stop abandons restarts (dropping the handle); a result that
        // was already on its way is stale.
        if c.restarter.take().is_none() || c.id.as_deref() != Some(id) || !c.restarting() {
            return;
        }
        match result {
            Ok(pid) => {
                c.restart_count += 1;
                c.status = ContainerStatus::Running;
                // The exit code belongs to the process that is gone; the
                // reason keeps it for people.
                let last_exit = c.exit_code.take();
                c.reason = restarted_reason(last_exit, &c.reason);
                c.mark_started();
                info!(task_id = %task_id, container = %c.def.name, exit_code = ?last_exit, restart_count = c.restart_count, pid, "container restarted in place");
                self.watch(idx);
                // Durable: the count must survive an agent restart.
                self.save(true).await;
                self.publish();
            }
            Err(reason) => {
                warn!(task_id = %task_id, container = %c.def.name, reason = %reason, "restart failed; the exit stands");
                c.status = ContainerStatus::Stopped;
                c.reason = reason;
                self.save(false).await;
                self.publish();
                self.after_exit(idx).await;
            }
        }
    }

    // ------------------------------------------------------------ restart

    /// Picks the task up again after an agent restart: containers that run
    /// are followed again (never restarted, never stopped), exits that
    /// happened meanwhile are recorded, and the task carries on from there.
    async fn recover(&mut self, recovery: Recovery) {
        let Recovery { record, found } = recovery;
        if let Some(r) = &record {
            self.status = r.status;
            self.stop_code = r.stop_code;
            self.reason.clone_from(&r.reason);
            self.ip = r.ip;
        }
        if self.uses_bridge() {
            // What the runtime has wins: the record may predate the network
            // (an agent stopped between the two) or come from an agent that
            // did not keep addresses yet.
            let ip = self.ctx.runtime.task_address(&self.task_id);
            self.note_address(ip);
        }
        let mut claimed = vec![false; found.len()];
        let mut follow = Vec::new();
        // Containers to restart in place once the task is back to RUNNING:
        // restarts the last agent left half done, and exits while it was
        // away that the restart policy covers.
        let mut restarts = Vec::new();
        let may_restart =
            self.status == TaskStatus::Running && !self.stop_wanted() && self.plan_error.is_none();
        let min_period = self.ctx.config.min_restart_attempt_period;
        for idx in 0..self.containers.len() {
            let c = &mut self.containers[idx];
            if let Some(r) = record
                .as_ref()
                .and_then(|r| r.containers.iter().find(|rc| rc.name == c.def.name))
            {
                c.id.clone_from(&r.id);
                c.status = r.status;
                c.exit_code = r.exit_code;
                c.reason.clone_from(&r.reason);
                c.health = r.health;
                c.started = r.started;
                c.restart_count = r.restart_count;
                c.started_at_ms = r.started_at_ms;
                c.started_at = r.started_at_ms.map(instant_at);
            }
            let was_restarting = c.restarting();
            let listed = found.iter().position(|f| f.container_name == c.def.name);
            if let Some(i) = listed {
                claimed[i] = true;
                c.id = Some(found[i].id.clone());
            }
            match listed.map(|i| found[i].state) {
                Some(ContainerState::Running { .. } | ContainerState::Paused { .. }) => {
                    info!(container = %c.def.name, "container still runs: following it again");
                    if was_restarting {
                        // The restart went through; only its record did not.
                        c.restart_count += 1;
                        c.reason = restarted_reason(c.exit_code.take(), &c.reason);
                        info!(task_id = %self.task_id, container = %c.def.name, restart_count = c.restart_count, "a restart begun before the agent stopped had finished");
                    }
                    if was_restarting || c.started_at.is_none() {
                        // Unknown start: counting from now can only make
                        // the attempt period longer, never shorter.
                        c.mark_started();
                    }
                    c.status = ContainerStatus::Running;
                    c.started = true;
                    follow.push(idx);
                }
                Some(
                    ContainerState::Stopped(_) | ContainerState::Created | ContainerState::Unknown,
                ) if was_restarting && may_restart => {
                    info!(container = %c.def.name, "finishing a restart begun before the agent stopped");
                    restarts.push(idx);
                }
                Some(ContainerState::Stopped(exit))
                    if may_restart
                        && c.status == ContainerStatus::Running
                        && restart_decision(
                            c.def.restart_policy.as_ref(),
                            Some(exit_code(&exit)),
                            ran_between(c.started_at_ms, exit.exited_at),
                            min_period,
                        )
                        .is_ok() =>
                {
                    c.exit_code = Some(exit_code(&exit));
                    c.reason = if exit.oom_killed {
                        OOM_REASON.into()
                    } else {
                        RESTARTING_REASON.into()
                    };
                    c.status = ContainerStatus::Pending;
                    c.started = true;
                    c.health = Health::Unknown;
                    info!(task_id = %self.task_id, container = %c.def.name, exit_code = exit.code, restart_count = c.restart_count, "container exited while the agent was away; restarting it in place (restart policy)");
                    restarts.push(idx);
                }
                Some(ContainerState::Stopped(exit)) => {
                    if c.status != ContainerStatus::Stopped {
                        info!(container = %c.def.name, exit_code = exit.code, "container exited while the agent was away");
                        c.status = ContainerStatus::Stopped;
                        c.started = true;
                        c.exit_code = Some(exit_code(&exit));
                        if exit.oom_killed {
                            c.reason = OOM_REASON.into();
                        }
                    }
                }
                Some(ContainerState::Created) => {
                    if c.status != ContainerStatus::Stopped {
                        c.status = ContainerStatus::Pending;
                        c.started = false;
                    }
                }
                Some(ContainerState::Unknown) => {
                    if c.status != ContainerStatus::Stopped {
                        c.status = ContainerStatus::Stopped;
                        c.started = true;
                        c.exit_code = None;
                        c.reason =
                            "the container's process is gone (was the host restarted?)".into();
                    }
                }
                None => {
                    if c.id.is_some() && c.status != ContainerStatus::Stopped {
                        c.status = ContainerStatus::Stopped;
                        c.exit_code = None;
                        c.reason = "the container no longer exists".into();
                    }
                }
            }
        }
        for idx in follow {
            self.watch(idx);
        }
        // Containers with the task's label that the definition does not name
        // cannot be managed; they go.
        let strays: Vec<OwnedContainer> = found
            .into_iter()
            .zip(claimed)
            .filter(|(_, claimed)| !claimed)
            .map(|(c, _)| c)
            .collect();
        if !strays.is_empty() {
            let runtime = self.ctx.runtime.clone();
            let timeout = self.ctx.config.default_stop_timeout;
            tokio::spawn(
                async move {
                    for c in strays {
                        super::remove_unowned(&*runtime, &c, timeout).await;
                    }
                }
                .in_current_span(),
            );
        }
        self.save(true).await;
        self.publish();

        let essential_exit = self
            .containers
            .iter()
            .find(|c| c.def.essential && c.started && c.status == ContainerStatus::Stopped)
            .map(essential_exit_reason);
        if self.status == TaskStatus::Stopped {
            self.phase = Phase::Stopped;
            self.forget |= is_final(&self.assignment);
            let leftovers = self
                .containers
                .iter()
                .any(|c| c.status == ContainerStatus::Running);
            if leftovers {
                // Stopped on record, yet something runs: finish that stop.
                self.phase = Phase::Running;
                self.begin_stop(None, String::new()).await;
            } else if self.forget {
                self.begin_remove();
            }
        } else if self.status == TaskStatus::Stopping {
            self.phase = Phase::Running;
            self.begin_stop(None, String::new()).await;
        } else if wants_stop(&self.assignment) {
            self.forget |= is_final(&self.assignment);
            self.phase = Phase::Running;
            self.begin_stop(None, String::new()).await;
        } else if let Some(reason) = self.plan_error.clone() {
            self.phase = Phase::Running;
            self.begin_stop(Some(StopCode::TaskFailedToStart), reason)
                .await;
        } else if let Some(why) = essential_exit {
            self.phase = Phase::Running;
            self.begin_stop(Some(StopCode::EssentialContainerExited), why)
                .await;
        } else if self.status == TaskStatus::Pending {
            self.phase = Phase::Starting;
            self.step().await;
        } else {
            self.phase = Phase::Running;
            for idx in restarts {
                self.spawn_restart(idx);
            }
            self.check_all_exited().await;
        }
    }
}

/// A restarted container's reason: the exit it was restarted after.
fn restarted_reason(exit_code: Option<i32>, exit_reason: &str) -> String {
    let mut why = match exit_code {
        Some(code) => format!("restarted after exit code {code}"),
        None => "restarted".to_string(),
    };
    if exit_reason == OOM_REASON {
        why.push_str(" (");
        why.push_str(OOM_REASON);
        why.push(')');
    }
    why
}

fn essential_exit_reason(c: &Ctr) -> String {
    let mut why = match c.exit_code {
        Some(code) => format!(
            "Essential container {:?} exited with code {code}",
            c.def.name
        ),
        None => format!("Essential container {:?} exited", c.def.name),
    };
    if !c.reason.is_empty() {
        why.push_str(": ");
        why.push_str(&c.reason);
    }
    why
}

/// Puts the container's secrets into its environment (in memory only);
/// returns its registry credentials, if it names some.
async fn fetch_secrets(
    source: Option<&dyn crate::secrets::SecretSource>,
    task_id: &str,
    config: &mut ContainerConfig,
) -> Result<Option<(String, String)>, String> {
    let source = source.ok_or_else(|| {
        format!(
            "{}: this agent cannot fetch secrets",
            crate::secrets::FETCH_ERROR
        )
    })?;
    let values = source.task_secrets(task_id).await?;
    crate::secrets::inject(&mut config.definition, &values)?;
    let Some(name) = &config.definition.repository_credentials else {
        return Ok(None);
    };
    let value = values.get(name).ok_or_else(|| {
        format!(
            "{}: secret {name:?} does not exist",
            crate::secrets::FETCH_ERROR
        )
    })?;
    crate::registry::parse_credentials(value)
        .map(Some)
        .map_err(|e| {
            format!(
                "{}: repositoryCredentials secret {name:?} {e}",
                crate::secrets::FETCH_ERROR
            )
        })
}

/// Pulls (as the policy says), creates and starts one container. The error
/// is the task's stopped reason, in ECS's words.
async fn create_and_start<R: Runtime>(
    runtime: &R,
    config: &ContainerConfig,
    existing: Option<String>,
    idx: usize,
    tx: &mpsc::Sender<Event>,
) -> Result<(), String> {
    let name = &config.definition.name;
    let id = match existing {
        Some(id) => id,
        None => {
            runtime
                .ensure_image(&config.definition.image, config.pull_policy)
                .await
                .map_err(|e| format!("CannotPullContainerError: container {name:?}: {e}"))?;
            let id = runtime
                .create(config)
                .await
                .map_err(|e| format!("CannotCreateContainerError: container {name:?}: {e}"))?;
            // The first container's create is what sets the network up.
            let ip = config
                .network_mode
                .uses_bridge()
                .then(|| runtime.task_address(&config.task_id))
                .flatten();
            let _ = tx
                .send(Event::Created {
                    idx,
                    id: id.clone(),
                    ip,
                })
                .await;
            id
        }
    };
    runtime
        .start(&id)
        .await
        .map_err(|e| format!("CannotStartContainerError: container {name:?}: {e}"))?;
    Ok(())
}

/// Waits for the container's exit. Transient runtime errors (containerd
/// restarting) are retried: only a real exit, or the container vanishing,
/// is reported.
async fn wait_for_exit<R: Runtime>(
    runtime: Arc<R>,
    id: String,
    idx: usize,
    run: u32,
    tx: mpsc::Sender<Event>,
) {
    let mut delay = Duration::from_millis(500);
    loop {
        let (exit, reason) = match runtime.wait(&id).await {
            Ok(exit) => (Some(exit), String::new()),
            Err(RuntimeError::ContainerNotFound { .. }) => {
                (None, "the container no longer exists".to_string())
            }
            Err(e) => {
                warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "waiting for the container failed");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let _ = tx
            .send(Event::Exited {
                idx,
                id,
                run,
                exit,
                reason,
            })
            .await;
        return;
    }
}

struct StopTarget {
    idx: usize,
    name: String,
    id: Option<String>,
    timeout: Duration,
}

/// Stops the targets at once (SIGTERM, SIGKILL after each one's timeout).
/// `look_up` finds the ID of a container whose create was cancelled.
async fn stop_containers<R: Runtime>(
    runtime: Arc<R>,
    task_id: &str,
    mut targets: Vec<StopTarget>,
    look_up: bool,
) -> Vec<(usize, String, Option<ExitStatus>)> {
    if look_up && targets.iter().any(|t| t.id.is_none()) {
        match runtime.list().await {
            Ok(listed) => {
                for t in targets.iter_mut().filter(|t| t.id.is_none()) {
                    t.id = listed
                        .iter()
                        .find(|c| c.task_id == task_id && c.container_name == t.name)
                        .map(|c| c.id.clone());
                }
            }
            Err(e) => warn!(error = %e, "cannot list containers to find a cancelled one"),
        }
    }
    let stops = targets.into_iter().filter_map(|t| {
        let id = t.id?;
        let runtime = runtime.clone();
        Some(async move {
            let exit = stop_one(&*runtime, &id, t.timeout).await;
            (t.idx, id, exit)
        })
    });
    futures::future::join_all(stops).await
}

/// `None` when the container (or its process) is gone. Other failures are
/// retried: a task is STOPPED only once its containers really are.
async fn stop_one<R: Runtime>(runtime: &R, id: &str, timeout: Duration) -> Option<ExitStatus> {
    let mut delay = Duration::from_secs(1);
    loop {
        match runtime.stop(id, timeout).await {
            Ok(exit) => return Some(exit),
            Err(RuntimeError::ContainerNotFound { .. }) => return None,
            Err(e) => {
                warn!(container_id = id, error = %e, retry_in_s = delay.as_secs(), "stopping the container failed");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Removes the task's containers: the known IDs and whatever else carries
/// its label. Failures are logged; a container left behind is removed as an
/// orphan by the next agent start.
async fn remove_containers<R: Runtime>(runtime: Arc<R>, task_id: &str, mut ids: Vec<String>) {
    match runtime.list().await {
        Ok(listed) => {
            for c in listed.into_iter().filter(|c| c.task_id == task_id) {
                if !ids.contains(&c.id) {
                    ids.push(c.id);
                }
            }
        }
        Err(e) => debug!(error = %e, "cannot list containers; removing the known ones"),
    }
    for id in ids {
        let mut delay = Duration::from_secs(1);
        for attempt in 1..=REMOVE_ATTEMPTS {
            match runtime.remove(&id).await {
                Ok(()) | Err(RuntimeError::ContainerNotFound { .. }) => break,
                Err(e) if attempt == REMOVE_ATTEMPTS => {
                    warn!(container_id = %id, error = %e, "cannot remove the container; giving up");
                }
                Err(e) => {
                    debug!(container_id = %id, error = %e, "removing the container failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
    }
}
