//! Scenario tables for the service controller: a state and a time in,
//! commands out (no Raft, no network), plus a small simulation that applies
//! what it decides, plays the agents, and checks the rollout bounds after
//! every step.

use std::collections::BTreeMap;

use berth_types::service::{
    BlueGreen, CircuitBreaker, DeploymentConfiguration, DeploymentController, LoadBalancer,
    ServiceSpec, ServiceUpdate, TrafficShift,
};
use berth_types::task::{ContainerState, ContainerStatus, Health};
use berth_types::{
    Command, CommandOutput, DesiredStatus, RolloutState, SchedulingStrategy, ServiceProgress,
    ServiceStatus, State, StopCause, StopCode, TaskReport, TaskStatus,
};

use berth_types::endpoints::FULL_WEIGHT;

use crate::scheduling::Scheduling;
use crate::services::Services;
use crate::testkit::{add_instance, apply, register, spec};
use crate::{Controller, Inputs, NoAgents};

const NOW: i64 = 1_000_000;

fn replica(name: &str, td: &str, desired: u32, min: u32, max: u32) -> ServiceSpec {
    let mut config = DeploymentConfiguration::defaults_for(SchedulingStrategy::Replica);
    config.minimum_healthy_percent = min;
    config.maximum_percent = max;
    ServiceSpec {
        load_balancers: Vec::new(),
        cluster: "default".into(),
        name: name.into(),
        task_definition: td.into(),
        desired_count: desired,
        scheduling_strategy: SchedulingStrategy::Replica,
        placement_strategies: vec![],
        placement_constraints: vec![],
        deployment_configuration: config,
        health_check_grace_period_secs: 0,
        tags: BTreeMap::new(),
    }
}

fn daemon(name: &str, td: &str, constraints: &[&str]) -> ServiceSpec {
    ServiceSpec {
        scheduling_strategy: SchedulingStrategy::Daemon,
        deployment_configuration: DeploymentConfiguration::defaults_for(SchedulingStrategy::Daemon),
        placement_constraints: constraints.iter().map(|s| s.to_string()).collect(),
        ..replica(name, td, 0, 0, 100)
    }
}

/// A cluster with `web:1`, `web:2` (128 MiB), `hc:1` (health-checked) and
/// `big:1` (3000 MiB), and `instances` of 4096 MiB.
fn world(instances: &[&str]) -> State {
    let mut state = State::new();
    register(&mut state, spec("web", 128, false));
    register(&mut state, spec("web", 128, false));
    register(&mut state, spec("hc", 128, true));
    register(&mut state, spec("big", 3000, false));
    for id in instances {
        add_instance(
            &mut state,
            id,
            4096,
            &[("zone", if id.ends_with('1') { "a" } else { "b" })],
        );
    }
    state
}

fn create(state: &mut State, spec: ServiceSpec) {
    apply(
        state,
        Command::CreateService {
            spec,
            deployment_id: "ecs-svc/1".into(),
            at_ms: NOW - 60_000,
        },
    );
}

/// A fresh seed per pass, as the driver gives (fresh task ids each time).
fn seed() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// UpdateService of `name` with `update`; a new deployment, if any, is
/// `deployment_id`.
fn update(state: &mut State, name: &str, update: ServiceUpdate, deployment_id: &str, at_ms: i64) {
    apply(
        state,
        Command::UpdateService {
            cluster: "default".into(),
            name: name.into(),
            update,
            deployment_id: deployment_id.into(),
            at_ms,
        },
    );
}

/// A new deployment of `name` to `taskdef`.
fn deploy(state: &mut State, name: &str, taskdef: &str, deployment_id: &str, at_ms: i64) {
    let to = ServiceUpdate {
        task_definition: Some(taskdef.into()),
        ..Default::default()
    };
    update(state, name, to, deployment_id, at_ms);
}

fn services(state: &State, now: i64) -> Vec<Command> {
    Services.reconcile(state, &Inputs::new(now, seed(), &NoAgents))
}

/// The kinds of the commands and, for starts and stops, how many tasks.
fn summary(commands: &[Command]) -> Vec<String> {
    commands
        .iter()
        .map(|c| match c {
            Command::StartServiceTasks(s) if s.instance_ids.is_empty() => {
                format!("start {}", s.task_ids.len())
            }
            Command::StartServiceTasks(s) => format!("start on {}", s.instance_ids.join(",")),
            Command::StopServiceTasks { stops, .. } => {
                let mut causes: Vec<String> =
                    stops.iter().map(|s| format!("{:?}", s.cause)).collect();
                causes.sort();
                format!("stop {}", causes.join(","))
            }
            Command::ServiceProgress { progress, .. } => match progress {
                ServiceProgress::DeploymentCompleted { .. } => "completed".into(),
                ServiceProgress::DeploymentFailed {
                    rollback_deployment_id,
                    ..
                } => format!("failed rollback={}", rollback_deployment_id.is_some()),
                ServiceProgress::DeploymentsRetired { deployment_ids } => {
                    format!("retired {}", deployment_ids.len())
                }
                ServiceProgress::Steady => "steady".into(),
                ServiceProgress::Inactive => "inactive".into(),
                ServiceProgress::DaemonDesiredCount { count } => format!("daemon desired {count}"),
                ServiceProgress::Note { .. } => "note".into(),
                ServiceProgress::TrafficShifted { percent, .. } => format!("traffic {percent}"),
                ServiceProgress::BlueGreenRolledBack { .. } => "rolled back".into(),
            },
            other => other.kind().to_string(),
        })
        .collect()
}

/// Applies every command (the state machine re-checks each) and returns how
/// many were refused.
fn apply_all(state: &mut State, commands: Vec<Command>) -> usize {
    commands
        .into_iter()
        .filter(|c| state.apply(c.clone()).is_err())
        .count()
}

/// The agents' side: place what waits (the real scheduler), then every
/// placed task runs (healthy unless `health` says otherwise) and every task
/// asked to stop stops.
fn agents(state: &mut State, now: i64, health: Health) {
    let placements = Scheduling.reconcile(state, &Inputs::new(now, 7, &NoAgents));
    apply_all(state, placements);
    let mut by_instance: BTreeMap<String, Vec<TaskReport>> = BTreeMap::new();
    for task in state.tasks() {
        let Some(iid) = task.instance_id.clone() else {
            continue;
        };
        // What a real agent is told (a DEACTIVATING task still runs).
        let (status, code) = match (task.agent_desired_status(), task.last_status) {
            (_, TaskStatus::Stopped) => continue,
            (DesiredStatus::Stopped, _) => (TaskStatus::Stopped, None),
            (DesiredStatus::Running, TaskStatus::Running | TaskStatus::Deactivating) => continue,
            (DesiredStatus::Running, _) => (TaskStatus::Running, None),
        };
        by_instance
            .entry(iid)
            .or_default()
            .push(report(&task.id, status, health, code));
    }
    for (instance_id, reports) in by_instance {
        apply(
            state,
            Command::ReportTaskStatus {
                instance_id,
                reports,
                at_ms: now,
            },
        );
    }
}

fn report(id: &str, status: TaskStatus, health: Health, stop_code: Option<StopCode>) -> TaskReport {
    TaskReport {
        task_id: id.into(),
        last_status: status,
        containers: vec![ContainerState {
            name: "app".into(),
            status: if status == TaskStatus::Stopped {
                ContainerStatus::Stopped
            } else {
                ContainerStatus::Running
            },
            exit_code: (status == TaskStatus::Stopped).then_some(1),
            reason: String::new(),
            health,
            restart_count: 0,
        }],
        reason: String::new(),
        stop_code,
        ip: None,
    }
}

/// Runs controller and agents until nothing changes; checks after every
/// step that the controller never started tasks beyond `maximumPercent`.
fn settle(state: &mut State, name: &str, mut now: i64, steps: usize) -> i64 {
    for _ in 0..steps {
        let before = alive(state, name);
        let commands = services(state, now);
        let quiet = commands.is_empty();
        apply_all(state, commands);
        let service = state.service("default", name).unwrap();
        let max = service
            .deployment_configuration
            .max_alive(service.effective_desired_count());
        let after = alive(state, name);
        assert!(
            after <= max.max(before),
            "{after} tasks alive, above maximumPercent ({max})"
        );
        agents(state, now, Health::Healthy);
        if quiet && state.provisioning_tasks().count() == 0 {
            break;
        }
        now += 1_000;
    }
    now
}

fn alive(state: &State, name: &str) -> u32 {
    state.service_tasks("default", name).count() as u32
}

fn running(state: &State, name: &str) -> Vec<(String, String)> {
    state
        .service_tasks("default", name)
        .filter(|t| {
            t.last_status == TaskStatus::Running && t.desired_status == DesiredStatus::Running
        })
        .map(|t| {
            (
                t.started_by.clone(),
                t.instance_id.clone().unwrap_or_default(),
            )
        })
        .collect()
}

/// (what, desired, min, max, tasks already running and healthy, expected)
type ReplicaScenario = (&'static str, u32, u32, u32, usize, &'static [&'static str]);

#[test]
fn replica_scenarios() {
    let table: &[ReplicaScenario] = &[
        (
            "a new service starts its desired count",
            3,
            100,
            200,
            0,
            &["start 3"],
        ),
        (
            "a service at its count does nothing but say so",
            3,
            100,
            200,
            3,
            &["completed", "steady"],
        ),
        ("one short: one replacement", 3, 100, 200, 2, &["start 1"]),
        (
            "one too many, no minimum: only the excess is stopped",
            2,
            0,
            200,
            3,
            &["stop ScaledDown"],
        ),
        (
            "one too many: scaled down",
            2,
            100,
            200,
            3,
            &["stop ScaledDown"],
        ),
        (
            "scale to zero stops everything",
            0,
            100,
            200,
            2,
            &["stop ScaledDown,ScaledDown"],
        ),
    ];
    for (what, desired, min, max, running_now, expected) in table {
        let mut state = world(&["i-1", "i-2"]);
        create(&mut state, replica("web", "web:1", 3, *min, *max));
        // Bring it to `running_now` healthy tasks, then set the count.
        let start: Vec<Command> = if *running_now > 0 {
            vec![Command::StartServiceTasks(berth_types::StartServiceTasks {
                cluster: "default".into(),
                service: "web".into(),
                deployment_id: "ecs-svc/1".into(),
                task_ids: (0..*running_now).map(|i| format!("t{i}")).collect(),
                instance_ids: vec![],
                at_ms: NOW - 50_000,
            })]
        } else {
            vec![]
        };
        assert_eq!(apply_all(&mut state, start), 0, "{what}");
        agents(&mut state, NOW - 40_000, Health::Healthy);
        update(
            &mut state,
            "web",
            ServiceUpdate {
                desired_count: Some(*desired),
                ..Default::default()
            },
            "unused",
            NOW - 30_000,
        );
        let got = summary(&services(&state, NOW));
        assert_eq!(got, *expected, "{what}");
    }
}

#[test]
fn a_task_that_stops_on_its_own_is_replaced_but_a_disconnected_one_is_not() {
    let mut state = world(&["i-1", "i-2"]);
    create(&mut state, replica("web", "web:1", 2, 100, 200));
    let now = settle(&mut state, "web", NOW, 10);
    let tasks = running(&state, "web");
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    assert!(summary(&services(&state, now)).is_empty(), "settled");

    // The container died underneath: replaced by one new task.
    let victim = state
        .service_tasks("default", "web")
        .find(|t| t.instance_id.as_deref() == Some("i-1"))
        .unwrap()
        .id
        .clone();
    apply(
        &mut state,
        Command::ReportTaskStatus {
            instance_id: "i-1".into(),
            reports: vec![report(
                &victim,
                TaskStatus::Stopped,
                Health::Unknown,
                Some(StopCode::EssentialContainerExited),
            )],
            at_ms: now,
        },
    );
    assert_eq!(summary(&services(&state, now + 10)), ["start 1"]);
    let now = settle(&mut state, "web", now + 10, 10);
    assert_eq!(running(&state, "web").len(), 2);

    // An instance goes quiet: its task still counts, nothing is started.
    let on_2 = state
        .service_tasks("default", "web")
        .filter(|t| t.instance_id.as_deref() == Some("i-2"))
        .count();
    apply(
        &mut state,
        Command::InstanceDisconnected {
            instance_id: "i-2".into(),
            at_ms: now,
        },
    );
    assert!(summary(&services(&state, now + 1_000)).is_empty());
    // Once it is declared lost, its tasks are replaced elsewhere.
    apply(
        &mut state,
        Command::InstanceLost {
            instance_id: "i-2".into(),
            at_ms: now + 300_000,
        },
    );
    assert_eq!(
        summary(&services(&state, now + 300_001)),
        [format!("start {on_2}")]
    );
    settle(&mut state, "web", now + 300_001, 10);
    assert!(running(&state, "web").iter().all(|(_, i)| i == "i-1"));
    assert_eq!(running(&state, "web").len(), 2);
}

#[test]
fn rolling_update_bounds_first_pass() {
    // (min, max, expected first pass of a rollout of 4 healthy tasks)
    for (min, max, expected) in [
        (100, 200, vec!["start 4"]),
        (50, 150, vec!["start 2", "stop Replaced,Replaced"]),
        (0, 100, vec!["stop Replaced,Replaced,Replaced,Replaced"]),
        (50, 100, vec!["stop Replaced,Replaced"]),
        (75, 125, vec!["start 1", "stop Replaced"]),
    ] {
        let mut state = world(&["i-1", "i-2"]);
        create(&mut state, replica("web", "web:1", 4, min, max));
        let now = settle(&mut state, "web", NOW, 10);
        deploy(&mut state, "web", "web:2", "ecs-svc/2", now);
        assert_eq!(summary(&services(&state, now + 1)), expected, "{min}/{max}");
    }
}

#[test]
fn rolling_updates_never_break_either_bound_and_complete() {
    for (min, max, desired) in [
        (50, 150, 4),
        (100, 200, 5),
        (0, 100, 3),
        (75, 125, 8),
        (50, 200, 7),
        (90, 110, 10),
    ] {
        let mut state = world(&["i-1", "i-2", "i-3"]);
        create(&mut state, replica("web", "web:1", desired, min, max));
        let mut now = settle(&mut state, "web", NOW, 20);
        deploy(&mut state, "web", "web:2", "ecs-svc/2", now);
        let config = state
            .service("default", "web")
            .unwrap()
            .deployment_configuration;
        for _ in 0..60 {
            let commands = services(&state, now);
            apply_all(&mut state, commands);
            // Sampled between every decision and every agent report.
            for phase in 0..2 {
                let alive = state.service_tasks("default", "web").count() as u32;
                let healthy = state
                    .service_tasks("default", "web")
                    .filter(|t| t.last_status == TaskStatus::Running)
                    .count() as u32;
                assert!(
                    alive <= config.max_alive(desired),
                    "{min}/{max}: {alive} alive > max"
                );
                assert!(
                    healthy >= config.min_healthy(desired),
                    "{min}/{max}: {healthy} healthy < min"
                );
                if phase == 0 {
                    agents(&mut state, now, Health::Healthy);
                }
            }
            now += 1_000;
        }
        let service = state.service("default", "web").unwrap();
        assert_eq!(
            service.deployments.len(),
            1,
            "{min}/{max}: {:?}",
            service.deployments
        );
        assert_eq!(service.deployments[0].id, "ecs-svc/2");
        assert_eq!(
            service.deployments[0].rollout_state,
            RolloutState::Completed
        );
        assert!(service.steady);
        let tasks = running(&state, "web");
        assert_eq!(tasks.len(), desired as usize);
        assert!(tasks.iter().all(|(d, _)| d == "ecs-svc/2"));
    }
}

#[test]
fn unhealthy_tasks_are_replaced_after_the_grace_period() {
    let mut state = world(&["i-1"]);
    let mut spec = replica("web", "hc:1", 1, 100, 200);
    spec.health_check_grace_period_secs = 30;
    create(&mut state, spec);
    let decided = services(&state, NOW);
    apply_all(&mut state, decided);
    agents(&mut state, NOW, Health::Unhealthy);
    let task = state
        .service_tasks("default", "web")
        .next()
        .unwrap()
        .clone();
    assert_eq!(
        state.task_health(&task),
        berth_types::service::TaskHealth::Unhealthy
    );
    // Within the grace period an unhealthy task is left alone (a second
    // one may start, within maximumPercent, since it is not healthy).
    let within = summary(&services(&state, NOW + 29_000));
    assert!(!within.iter().any(|c| c.starts_with("stop")), "{within:?}");
    let after = services(&state, NOW + 30_000);
    let stops: Vec<StopCause> = after
        .iter()
        .filter_map(|c| match c {
            Command::StopServiceTasks { stops, .. } => Some(stops.iter().map(|s| s.cause)),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(stops, [StopCause::Unhealthy]);
    // The task being replaced no longer counts: its replacement starts in
    // the same pass.
    assert_eq!(summary(&after), ["stop Unhealthy", "start 1"]);
    apply_all(&mut state, after);
    let stopped = state.task(&task.id).unwrap();
    assert_eq!(
        stopped.stopped_reason,
        "Task failed container health checks"
    );
    assert_eq!(stopped.stop_code, Some(StopCode::ServiceSchedulerInitiated));
}

#[test]
fn the_circuit_breaker_and_the_deadline_fail_a_deployment() {
    let breaker = |rollback, threshold| CircuitBreaker {
        enable: true,
        rollback,
        threshold,
    };
    // (what, breaker, failed tasks, minutes since deploy, expected)
    let table: &[(&str, CircuitBreaker, u32, i64, &[&str])] = &[
        (
            "below ECS's threshold of 10",
            breaker(true, None),
            9,
            1,
            &[],
        ),
        (
            "ECS's threshold of 10",
            breaker(true, None),
            10,
            1,
            &["failed rollback=true"],
        ),
        (
            "a threshold set to 3",
            breaker(false, Some(3)),
            3,
            1,
            &["failed rollback=false"],
        ),
        (
            "breaker off, failures do not matter",
            CircuitBreaker::default(),
            50,
            1,
            &[],
        ),
        (
            "past the 30 minute deadline",
            CircuitBreaker::default(),
            0,
            31,
            &["failed rollback=false"],
        ),
        (
            "past the deadline, rollback asked",
            breaker(true, None),
            0,
            31,
            &["failed rollback=true"],
        ),
    ];
    for (what, cb, failed, minutes, expected) in table {
        let mut state = world(&["i-1"]);
        let mut spec = replica("web", "web:1", 0, 100, 200);
        spec.deployment_configuration.circuit_breaker = *cb;
        create(&mut state, spec);
        // Failures as the state machine counts them: tasks that exited.
        // Each ran over a minute, so the backoff never holds the next back.
        for i in 0..*failed {
            let id = format!("f{i}");
            let at = NOW - 50_000 + i64::from(i) * 62_000;
            let count = |n| Command::UpdateService {
                cluster: "default".into(),
                name: "web".into(),
                update: ServiceUpdate {
                    desired_count: Some(n),
                    ..Default::default()
                },
                deployment_id: "unused".into(),
                at_ms: at,
            };
            apply(&mut state, count(1));
            apply(
                &mut state,
                Command::StartServiceTasks(berth_types::StartServiceTasks {
                    cluster: "default".into(),
                    service: "web".into(),
                    deployment_id: "ecs-svc/1".into(),
                    task_ids: vec![id.clone()],
                    instance_ids: vec![],
                    at_ms: at,
                }),
            );
            agents(&mut state, at, Health::Healthy);
            apply(
                &mut state,
                Command::ReportTaskStatus {
                    instance_id: "i-1".into(),
                    reports: vec![report(&id, TaskStatus::Stopped, Health::Unknown, None)],
                    at_ms: at + 61_000,
                },
            );
            apply(&mut state, count(0));
        }
        assert_eq!(
            state.service("default", "web").unwrap().deployments[0].failed_tasks,
            *failed,
            "{what}"
        );
        let now = NOW - 60_000 + minutes * 60_000;
        let got: Vec<String> = summary(&services(&state, now))
            .into_iter()
            .filter(|c| c.starts_with("failed"))
            .collect();
        assert_eq!(got, *expected, "{what}");
    }
}

#[test]
fn a_failing_deployment_rolls_back_to_the_last_completed_definition() {
    let mut state = world(&["i-1", "i-2"]);
    let mut spec = replica("web", "web:1", 2, 100, 200);
    spec.deployment_configuration.circuit_breaker = CircuitBreaker {
        enable: true,
        rollback: true,
        threshold: Some(3),
    };
    create(&mut state, spec);
    let mut now = settle(&mut state, "web", NOW, 10);
    deploy(&mut state, "web", "web:2", "ecs-svc/2", now);
    // Every web:2 task exits at once.
    for _ in 0..40 {
        let decided = services(&state, now);
        apply_all(&mut state, decided);
        let placements = Scheduling.reconcile(&state, &Inputs::new(now, 1, &NoAgents));
        apply_all(&mut state, placements);
        let mut reports: BTreeMap<String, Vec<TaskReport>> = BTreeMap::new();
        for t in state.tasks() {
            let Some(iid) = t.instance_id.clone() else {
                continue;
            };
            if t.last_status == TaskStatus::Stopped
                || t.last_status == TaskStatus::Running
                    && t.desired_status == DesiredStatus::Running
            {
                continue;
            }
            let status = if t.revision == 2 || t.desired_status == DesiredStatus::Stopped {
                TaskStatus::Stopped
            } else {
                TaskStatus::Running
            };
            reports
                .entry(iid)
                .or_default()
                .push(report(&t.id, status, Health::Unknown, None));
        }
        for (instance_id, reports) in reports {
            apply(
                &mut state,
                Command::ReportTaskStatus {
                    instance_id,
                    reports,
                    at_ms: now,
                },
            );
        }
        let healthy = state
            .service_tasks("default", "web")
            .filter(|t| t.last_status == TaskStatus::Running)
            .count();
        assert!(
            healthy >= 2,
            "minimumHealthyPercent 100 held: {healthy} healthy"
        );
        now += 20_000;
    }
    let service = state.service("default", "web").unwrap();
    let failed = service
        .all_deployments()
        .find(|d| d.id == "ecs-svc/2")
        .unwrap();
    assert_eq!(failed.rollout_state, RolloutState::Failed);
    assert!(failed.failed_tasks >= 3);
    assert_eq!(service.task_definition, "web:1");
    assert_eq!(
        service.deployments[0].rollback_of.as_deref(),
        Some("ecs-svc/2")
    );
    assert_eq!(
        service.deployments[0].rollout_state,
        RolloutState::Completed
    );
    assert!(service
        .events
        .iter()
        .any(|e| e.message.contains("rolling back to web:1")));
    // The rollback is a deployment of its own: it replaced the first
    // deployment's tasks (never below 100% healthy, see the loop above).
    let tasks = running(&state, "web");
    assert_eq!(tasks.len(), 2);
    assert!(tasks.iter().all(|(d, _)| *d == service.deployments[0].id));
}

#[test]
fn a_backed_off_service_launches_nothing_until_the_backoff_ends() {
    let mut state = world(&["i-1"]);
    create(&mut state, replica("web", "web:1", 1, 100, 200));
    let mut now = NOW;
    for _ in 0..3 {
        let decided = services(&state, now);
        apply_all(&mut state, decided);
        agents(&mut state, now, Health::Healthy);
        let id = state
            .service_tasks("default", "web")
            .next()
            .unwrap()
            .id
            .clone();
        apply(
            &mut state,
            Command::ReportTaskStatus {
                instance_id: "i-1".into(),
                reports: vec![report(&id, TaskStatus::Stopped, Health::Unknown, None)],
                at_ms: now + 100,
            },
        );
        now += 200;
    }
    let until = state.service("default", "web").unwrap().throttle.until_ms;
    assert_eq!(until, now - 100 + 10_000);
    assert!(summary(&services(&state, until - 1)).is_empty());
    assert_eq!(summary(&services(&state, until)), ["start 1"]);
}

#[test]
fn draining_replaces_first_then_stops_the_old_task() {
    let mut state = world(&["i-1", "i-2"]);
    let mut spec = replica("web", "web:1", 2, 100, 200);
    spec.placement_constraints = vec!["distinctInstance".into()];
    create(&mut state, spec);
    let now = settle(&mut state, "web", NOW, 10);
    add_instance(&mut state, "i-3", 4096, &[]);
    apply(
        &mut state,
        Command::SetInstanceDraining {
            instance_id: "i-1".into(),
            draining: true,
        },
    );
    // The replacement starts first; the draining task stays while it is
    // the only healthy one that minimumHealthyPercent 100 allows.
    assert_eq!(summary(&services(&state, now)), ["start 1"]);
    let decided = services(&state, now);
    apply_all(&mut state, decided);
    let old = state
        .service_tasks("default", "web")
        .find(|t| t.instance_id.as_deref() == Some("i-1"))
        .unwrap()
        .id
        .clone();
    assert_eq!(
        summary(&services(&state, now)),
        Vec::<String>::new(),
        "nothing until the new one is healthy"
    );
    agents(&mut state, now, Health::Healthy);
    assert_eq!(
        summary(&services(&state, now + 1)),
        ["stop InstanceDraining"]
    );
    settle(&mut state, "web", now + 1, 10);
    assert_eq!(
        state.task(&old).unwrap().stop_code,
        Some(StopCode::ServiceSchedulerInitiated)
    );
    let tasks = running(&state, "web");
    assert_eq!(tasks.len(), 2);
    assert!(tasks.iter().all(|(_, i)| i != "i-1"));
}

#[test]
fn a_daemon_follows_instances_joining_draining_and_leaving() {
    let mut state = world(&["i-1", "i-2"]);
    create(&mut state, daemon("agentd", "web:1", &[]));
    let mut now = NOW;
    let first = summary(&services(&state, now));
    assert_eq!(first, ["daemon desired 2", "start on i-1,i-2"]);
    now = settle(&mut state, "agentd", now, 10);
    assert_eq!(state.service("default", "agentd").unwrap().desired_count, 2);

    // A third instance joins: it gets its task.
    add_instance(&mut state, "i-3", 4096, &[]);
    assert_eq!(
        summary(&services(&state, now)),
        ["daemon desired 3", "start on i-3"]
    );
    now = settle(&mut state, "agentd", now, 10);

    // A replica service runs on i-1 too; i-1 drains: the replica task is
    // replaced first, the daemon task goes last.
    create(&mut state, replica("web", "web:1", 1, 0, 100));
    let spec_pinned = ServiceUpdate {
        placement_constraints: Some(vec!["memberOf(attribute:zone == a)".into()]),
        ..Default::default()
    };
    update(&mut state, "web", spec_pinned, "ecs-svc/9", now);
    now = settle(&mut state, "web", now, 10);
    assert_eq!(running(&state, "web")[0].1, "i-1");
    apply(
        &mut state,
        Command::SetInstanceDraining {
            instance_id: "i-1".into(),
            draining: true,
        },
    );
    let pass = summary(&services(&state, now));
    assert!(
        pass.contains(&"stop Replaced".to_string()) || pass.iter().any(|p| p.starts_with("stop")),
        "{pass:?}"
    );
    assert!(
        !services(&state, now)
            .iter()
            .any(|c| matches!(c, Command::StopServiceTasks { service, .. } if service == "agentd")),
        "the daemon stays while the replica task runs"
    );
    // Once the replica's task is gone, the daemon's goes too.
    update(
        &mut state,
        "web",
        ServiceUpdate {
            desired_count: Some(0),
            ..Default::default()
        },
        "x",
        now,
    );
    now = settle(&mut state, "web", now, 10);
    assert_eq!(
        state
            .active_tasks_on("i-1")
            .filter(|t| t.group == "service:web")
            .count(),
        0
    );
    // (settle runs every service: the daemon left i-1 during it.)
    let daemon_on_1 = state
        .tasks()
        .find(|t| t.group == "service:agentd" && t.instance_id.as_deref() == Some("i-1"))
        .unwrap();
    assert_eq!(daemon_on_1.last_status, TaskStatus::Stopped);
    assert_eq!(
        daemon_on_1.stopped_reason,
        StopCause::InstanceDraining.reason()
    );
    now = settle(&mut state, "agentd", now, 10);
    let mut instances: Vec<String> = running(&state, "agentd")
        .into_iter()
        .map(|(_, i)| i)
        .collect();
    instances.sort();
    assert_eq!(instances, ["i-2", "i-3"]);
    assert_eq!(state.service("default", "agentd").unwrap().desired_count, 2);

    // A deregistered instance loses its task, and the count follows.
    apply(
        &mut state,
        Command::DeregisterInstance {
            instance_id: "i-3".into(),
            at_ms: now,
        },
    );
    settle(&mut state, "agentd", now, 10);
    let instances: Vec<String> = running(&state, "agentd")
        .into_iter()
        .map(|(_, i)| i)
        .collect();
    assert_eq!(instances, ["i-2"]);
    assert_eq!(state.service("default", "agentd").unwrap().desired_count, 1);
}

#[test]
fn a_daemon_honours_its_constraints_and_is_placed_before_replicas_fill_an_instance() {
    let mut state = world(&["i-1", "i-2"]);
    create(
        &mut state,
        daemon("agentd", "big:1", &["memberOf(attribute:zone == b)"]),
    );
    assert_eq!(
        summary(&services(&state, NOW)),
        ["daemon desired 1", "start on i-2"]
    );

    // A new zone-b instance joins while a replica service wants to fill
    // it: the scheduler leaves room for the daemon's 3000 MiB.
    settle(&mut state, "agentd", NOW, 5);
    add_instance(&mut state, "i-4", 4096, &[("zone", "b")]);
    create(&mut state, replica("fill", "big:1", 2, 100, 200));
    let Command::StartServiceTasks(start) = services(&state, NOW + 10)
        .into_iter()
        .find(|c| matches!(c, Command::StartServiceTasks(s) if s.service == "fill"))
        .unwrap()
    else {
        panic!()
    };
    apply(&mut state, Command::StartServiceTasks(start));
    let placements = Scheduling.reconcile(&state, &Inputs::new(NOW + 10, 1, &NoAgents));
    let Command::PlaceTasks { placements, .. } = &placements[0] else {
        panic!()
    };
    assert!(
        placements.iter().all(|p| p.instance_id != "i-4"),
        "{placements:?}"
    );
}

#[test]
fn an_instance_already_running_its_daemon_task_holds_no_more_room_for_it() {
    let mut state = world(&[]);
    add_instance(&mut state, "i-8", 8192, &[]);
    create(&mut state, daemon("agentd", "big:1", &[]));
    settle(&mut state, "agentd", NOW, 5);
    assert_eq!(running(&state, "agentd").len(), 1);
    // 8192 - 3000 MiB left: room for one more 3000 MiB task, which must
    // not be held back for a daemon task that already runs there.
    create(&mut state, replica("fill", "big:1", 1, 100, 200));
    let start = services(&state, NOW + 10)
        .into_iter()
        .find(|c| matches!(c, Command::StartServiceTasks(s) if s.service == "fill"))
        .unwrap();
    apply(&mut state, start);
    let commands = Scheduling.reconcile(&state, &Inputs::new(NOW + 10, 1, &NoAgents));
    let Some(Command::PlaceTasks { placements, .. }) = commands.first() else {
        panic!("{commands:?}")
    };
    assert_eq!(placements.len(), 1, "{commands:?}");
    assert_eq!(placements[0].instance_id, "i-8");
}

#[test]
fn deleting_a_service_stops_its_tasks_then_makes_it_inactive() {
    let mut state = world(&["i-1"]);
    create(&mut state, replica("web", "web:1", 2, 100, 200));
    let now = settle(&mut state, "web", NOW, 10);
    apply(
        &mut state,
        Command::DeleteService {
            cluster: "default".into(),
            name: "web".into(),
            force: true,
            at_ms: now,
        },
    );
    assert_eq!(
        summary(&services(&state, now)),
        ["stop ServiceDeleted,ServiceDeleted"]
    );
    settle(&mut state, "web", now, 10);
    let service = state.service("default", "web").unwrap();
    assert_eq!(service.status, ServiceStatus::Inactive);
    assert_eq!(state.service_tasks("default", "web").count(), 0);
    let out = state.apply(Command::CreateService {
        spec: replica("web", "web:1", 1, 100, 200),
        deployment_id: "ecs-svc/new".into(),
        at_ms: now,
    });
    assert!(matches!(out, Ok(CommandOutput::Service(_))));
}

#[test]
fn stale_and_repeated_decisions_are_refused() {
    let mut state = world(&["i-1"]);
    create(&mut state, replica("web", "web:1", 2, 100, 200));
    let stale = services(&state, NOW);
    deploy(&mut state, "web", "web:2", "ecs-svc/2", NOW);
    assert_eq!(
        apply_all(&mut state, stale),
        1,
        "the start for ecs-svc/1 is refused"
    );
    assert_eq!(state.service_tasks("default", "web").count(), 0);
    // Two decisions from the same state (two leaders in a row, each
    // deciding before it saw the other's) never over-start the service.
    let first = services(&state, NOW + 1);
    let second = Services.reconcile(&state, &Inputs::new(NOW + 1, 4242, &NoAgents));
    assert_ne!(first, second, "different task ids");
    assert_eq!(apply_all(&mut state, first), 0);
    let starts: Vec<Command> = second
        .into_iter()
        .filter(|c| matches!(c, Command::StartServiceTasks(_)))
        .collect();
    assert_eq!(
        apply_all(&mut state, starts),
        1,
        "the second start is refused"
    );
    assert_eq!(state.service_tasks("default", "web").count(), 2);
    let again = services(&state, NOW + 2);
    assert!(!summary(&again).iter().any(|c| c.starts_with("start")));
}

fn set_desired(state: &mut State, name: &str, desired: u32, at_ms: i64) {
    apply(
        state,
        Command::UpdateService {
            cluster: "default".into(),
            name: name.into(),
            update: ServiceUpdate {
                desired_count: Some(desired),
                ..Default::default()
            },
            deployment_id: "unused".into(),
            at_ms,
        },
    );
}

/// The stops decided, as (instance of the task, cause), in decision order.
fn stops_on(state: &State, commands: &[Command]) -> Vec<(String, StopCause)> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::StopServiceTasks { stops, .. } => Some(stops),
            _ => None,
        })
        .flatten()
        .map(|s| {
            let task = state.task(&s.task_id).unwrap();
            (task.instance_id.clone().unwrap_or_default(), s.cause)
        })
        .collect()
}

fn note(commands: &[Command]) -> String {
    commands
        .iter()
        .find_map(|c| match c {
            Command::ServiceProgress {
                progress: ServiceProgress::Note { message },
                ..
            } => Some(message.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

#[test]
fn the_services_controller_runs_every_second_and_wakes_on_services_tasks_and_instances() {
    assert_eq!(Services.name(), "services");
    assert_eq!(Services.interval_ms(), 1000);
    assert!(!Services.repeat_while_progressing());
    let events = [
        berth_types::StateEvent::Task {
            task_id: "t".into(),
            instance_id: None,
        },
        berth_types::StateEvent::Instance {
            instance_id: "i-1".into(),
        },
        berth_types::StateEvent::Service {
            cluster: "default".into(),
            name: "web".into(),
        },
    ];
    for e in &events {
        assert!(Services.wakes_on(e), "{e:?}");
    }
}

#[test]
fn a_rollout_deadlocked_by_its_bounds_says_so_and_does_not_complete() {
    // One task, minimumHealthyPercent 50 (keep 1) and maximumPercent 100
    // (at most 1): the old task can neither be stopped nor joined.
    let mut state = world(&["i-1"]);
    create(&mut state, replica("web", "web:1", 1, 50, 100));
    let now = settle(&mut state, "web", NOW, 10);
    deploy(&mut state, "web", "web:2", "ecs-svc/2", now);
    let commands = services(&state, now + 1);
    assert_eq!(summary(&commands), ["note"]);
    let message = note(&commands);
    assert!(
        message.contains("cannot replace tasks: maximumPercent 100 allows 1 tasks"),
        "{message}"
    );
}

#[test]
fn tasks_already_asked_to_stop_are_not_stopped_again_nor_taken_for_a_deadlock() {
    let mut state = world(&["i-1", "i-2"]);
    create(&mut state, replica("web", "web:1", 2, 0, 100));
    let now = settle(&mut state, "web", NOW, 10);
    deploy(&mut state, "web", "web:2", "ecs-svc/2", now);
    let first = services(&state, now + 1);
    assert_eq!(summary(&first), ["stop Replaced,Replaced"]);
    assert_eq!(apply_all(&mut state, first), 0);
    // The old tasks run until their agents say they stopped; no room for
    // the new ones meanwhile, and nothing more to decide.
    assert_eq!(summary(&services(&state, now + 2)), Vec::<String>::new());
}

#[test]
fn scaling_down_stops_a_task_that_is_not_healthy_yet_before_a_healthy_one() {
    let mut state = world(&["i-1", "i-2"]);
    create(&mut state, replica("web", "web:1", 2, 100, 200));
    let now = settle(&mut state, "web", NOW, 10);
    set_desired(&mut state, "web", 3, now);
    let start = services(&state, now + 1);
    assert_eq!(summary(&start), ["start 1"]);
    apply_all(&mut state, start);
    let waiting = state
        .service_tasks("default", "web")
        .find(|t| t.last_status == TaskStatus::Provisioning)
        .unwrap()
        .id
        .clone();
    set_desired(&mut state, "web", 2, now + 2);
    let commands = services(&state, now + 3);
    assert_eq!(summary(&commands), ["stop ScaledDown"]);
    let Command::StopServiceTasks { stops, .. } = &commands[0] else {
        panic!("{commands:?}")
    };
    assert_eq!(stops[0].task_id, waiting);
}

#[test]
fn a_replaced_task_makes_the_service_steady_again_only_once_it_is_healthy() {
    let mut state = world(&["i-1"]);
    create(&mut state, replica("web", "web:1", 1, 100, 200));
    let now = settle(&mut state, "web", NOW, 10);
    assert!(state.service("default", "web").unwrap().steady);
    let id = state
        .service_tasks("default", "web")
        .next()
        .unwrap()
        .id
        .clone();
    apply(
        &mut state,
        Command::ReportTaskStatus {
            instance_id: "i-1".into(),
            reports: vec![report(
                &id,
                TaskStatus::Stopped,
                Health::Unknown,
                Some(StopCode::EssentialContainerExited),
            )],
            at_ms: now,
        },
    );
    assert!(!state.service("default", "web").unwrap().steady);
    let start = services(&state, now + 10);
    assert_eq!(summary(&start), ["start 1"]);
    apply_all(&mut state, start);
    // Waiting for a placement: counted, but not healthy, so not steady.
    assert_eq!(summary(&services(&state, now + 20)), Vec::<String>::new());
    agents(&mut state, now + 30, Health::Healthy);
    assert_eq!(summary(&services(&state, now + 40)), ["steady"]);
}

#[test]
fn a_daemon_rollout_replaces_healthy_tasks_only_within_minimum_healthy_percent() {
    // Four instances; minimumHealthyPercent 25 of 4 keeps 1 healthy task.
    let mut state = world(&["i-1", "i-2", "i-3", "i-4"]);
    let mut spec = daemon("agentd", "hc:1", &[]);
    spec.deployment_configuration.minimum_healthy_percent = 25;
    create(&mut state, spec);
    let now = settle(&mut state, "agentd", NOW, 10);
    assert_eq!(state.service("default", "agentd").unwrap().desired_count, 4);
    let on = |state: &State, instance: &str| {
        state
            .service_tasks("default", "agentd")
            .find(|t| t.instance_id.as_deref() == Some(instance))
            .unwrap()
            .id
            .clone()
    };
    // i-3's health check has not decided; i-4's task was asked to stop and
    // still runs.
    let t3 = on(&state, "i-3");
    apply(
        &mut state,
        Command::ReportTaskStatus {
            instance_id: "i-3".into(),
            reports: vec![report(&t3, TaskStatus::Running, Health::Unknown, None)],
            at_ms: now,
        },
    );
    let t4 = on(&state, "i-4");
    apply(
        &mut state,
        Command::StopTask {
            task_id: t4,
            reason: String::new(),
            at_ms: now,
        },
    );
    deploy(&mut state, "agentd", "web:1", "ecs-svc/2", now);
    let commands = services(&state, now + 1);
    // Healthy i-1 and i-2: one may go (2 - 1); i-3 costs no health; i-4
    // is on its way out and gets nothing new until it is gone, but still
    // counts toward the desired count (4, unchanged).
    assert_eq!(summary(&commands), ["stop Replaced,Replaced"]);
    assert_eq!(
        stops_on(&state, &commands),
        [
            ("i-1".to_string(), StopCause::Replaced),
            ("i-3".to_string(), StopCause::Replaced)
        ]
    );
}

#[test]
fn a_daemon_stops_only_its_unhealthy_task_and_replaces_an_old_one_elsewhere() {
    let mut state = world(&["i-1", "i-2"]);
    create(&mut state, daemon("agentd", "hc:1", &[]));
    let now = settle(&mut state, "agentd", NOW, 10);
    deploy(&mut state, "agentd", "web:1", "ecs-svc/2", now);
    // Before the new deployment acts, i-1's task turns unhealthy.
    let t1 = state
        .service_tasks("default", "agentd")
        .find(|t| t.instance_id.as_deref() == Some("i-1"))
        .unwrap()
        .id
        .clone();
    apply(
        &mut state,
        Command::ReportTaskStatus {
            instance_id: "i-1".into(),
            reports: vec![report(&t1, TaskStatus::Running, Health::Unhealthy, None)],
            at_ms: now,
        },
    );
    let commands = services(&state, now + 1);
    let mut stops = stops_on(&state, &commands);
    stops.sort_by_key(|(i, _)| i.clone());
    assert_eq!(
        stops,
        [
            ("i-1".to_string(), StopCause::Unhealthy),
            ("i-2".to_string(), StopCause::Replaced)
        ]
    );
}

#[test]
fn a_daemon_says_how_many_qualifying_instances_lack_room_for_its_task() {
    let mut state = world(&[]);
    add_instance(&mut state, "i-s1", 1024, &[]);
    create(&mut state, daemon("agentd", "big:1", &[]));
    let commands = services(&state, NOW);
    // Nothing to run anywhere: the deployment is complete, and it says why.
    assert_eq!(summary(&commands), ["note", "completed", "steady"]);
    assert!(
        note(&commands).contains("Reason: 1 qualifying instance lack"),
        "{}",
        note(&commands)
    );
    add_instance(&mut state, "i-s2", 1024, &[]);
    let commands = services(&state, NOW);
    assert!(
        note(&commands).contains("Reason: 2 qualifying instances lack"),
        "{}",
        note(&commands)
    );
}

#[test]
fn deleting_a_daemon_stops_its_tasks_without_touching_its_desired_count() {
    let mut state = world(&["i-1", "i-2"]);
    create(&mut state, daemon("agentd", "web:1", &[]));
    let now = settle(&mut state, "agentd", NOW, 10);
    apply(
        &mut state,
        Command::DeleteService {
            cluster: "default".into(),
            name: "agentd".into(),
            force: false,
            at_ms: now,
        },
    );
    assert_eq!(
        summary(&services(&state, now + 1)),
        ["stop ServiceDeleted,ServiceDeleted"]
    );
}

#[test]
fn a_daemon_whose_deployment_failed_starts_nothing() {
    let mut state = world(&["i-1"]);
    create(&mut state, daemon("agentd", "web:1", &[]));
    apply(
        &mut state,
        Command::ServiceProgress {
            cluster: "default".into(),
            service: "agentd".into(),
            progress: ServiceProgress::DeploymentFailed {
                deployment_id: "ecs-svc/1".into(),
                reason: "test".into(),
                rollback_deployment_id: None,
            },
            at_ms: NOW - 1_000,
        },
    );
    assert_eq!(summary(&services(&state, NOW)), ["daemon desired 1"]);
}

#[test]
fn deployment_ids_are_ecs_svc_and_19_digits() {
    let id = crate::services::deployment_id(&crate::IdSource::new(7));
    let digits = id.strip_prefix("ecs-svc/").unwrap_or_default();
    assert_eq!(digits.len(), 19, "{id}");
    assert!(digits.bytes().all(|b| b.is_ascii_digit()), "{id}");
    assert_ne!(id, crate::services::deployment_id(&crate::IdSource::new(8)));
}

#[test]
fn tasks_by_deployment_groups_the_tasks_of_a_rollout() {
    let mut state = world(&["i-1", "i-2"]);
    create(&mut state, replica("web", "web:1", 2, 100, 200));
    let now = settle(&mut state, "web", NOW, 10);
    deploy(&mut state, "web", "web:2", "ecs-svc/2", now);
    let start = services(&state, now + 1);
    assert_eq!(summary(&start), ["start 2"]);
    apply_all(&mut state, start);
    let service = state.service("default", "web").unwrap();
    let counts: Vec<(&str, usize)> = crate::services::tasks_by_deployment(&state, service)
        .into_iter()
        .map(|(d, tasks)| (d, tasks.len()))
        .collect();
    assert_eq!(counts, [("ecs-svc/1", 2), ("ecs-svc/2", 2)]);
}

#[test]
fn a_daemon_keeps_its_desired_count_while_its_tasks_are_replaced() {
    let mut state = world(&["i-1", "i-2"]);
    create(&mut state, daemon("agentd", "web:1", &[]));
    let mut now = settle(&mut state, "agentd", NOW, 10);
    assert_eq!(state.service("default", "agentd").unwrap().desired_count, 2);
    deploy(&mut state, "agentd", "web:2", "ecs-svc/2", now);
    for _ in 0..20 {
        let decided = services(&state, now);
        assert!(
            !decided.iter().any(|c| matches!(
                c,
                Command::ServiceProgress {
                    progress: ServiceProgress::DaemonDesiredCount { .. },
                    ..
                }
            )),
            "the count moved during the rollout: {:?}",
            summary(&decided)
        );
        apply_all(&mut state, decided);
        // Decided again while a replaced task is still stopping.
        let again = services(&state, now);
        assert!(
            !again.iter().any(|c| matches!(
                c,
                Command::ServiceProgress {
                    progress: ServiceProgress::DaemonDesiredCount { .. },
                    ..
                }
            )),
            "the count moved while a task was stopping: {:?}",
            summary(&again)
        );
        agents(&mut state, now, Health::Healthy);
        now += 1_000;
    }
    let tasks = running(&state, "agentd");
    assert_eq!(tasks.len(), 2);
    assert!(tasks.iter().all(|(d, _)| d == "ecs-svc/2"));
}

// ------------------------------------------------ load balancers, blue/green

/// `api:1` and `api:2`: bridge mode, container `app` on port 8080 (dynamic
/// host port), health-checked.
fn balanced_world() -> State {
    let mut state = world(&["i-1", "i-2"]);
    for _ in 0..2 {
        let mut def = spec("api", 128, true);
        def.network_mode = berth_types::NetworkMode::Bridge;
        def.container_definitions[0].port_mappings = vec![berth_types::PortMapping {
            container_port: 8080,
            host_port: None,
            protocol: berth_types::Protocol::Tcp,
        }];
        register(&mut state, def);
    }
    state
}

/// `api` behind load balancer `public` (deregistration delay 10 s), with
/// `controller`.
fn balanced(desired: u32, controller: DeploymentController) -> ServiceSpec {
    let mut spec = replica("api", "api:1", desired, 100, 200);
    spec.deployment_configuration.controller = controller;
    spec.load_balancers = vec![LoadBalancer {
        name: "public".into(),
        container_name: "app".into(),
        container_port: 8080,
        deregistration_delay_secs: 10,
    }];
    spec
}

fn canary(percent: u32, interval_secs: u32, bake_time_secs: u32) -> DeploymentController {
    DeploymentController::BlueGreen(BlueGreen {
        traffic: TrafficShift::Canary {
            percent,
            interval_secs,
        },
        bake_time_secs,
    })
}

/// One controller pass and one round of agents at `now`.
fn step(state: &mut State, now: i64) -> Vec<Command> {
    let decided = services(state, now);
    apply_all(state, decided.clone());
    agents(state, now, Health::Healthy);
    decided
}

/// (deployment, weight) of each endpoint that takes new traffic, and the
/// number of draining ones.
fn traffic(state: &State) -> (BTreeMap<String, u32>, usize) {
    let mut weights = BTreeMap::new();
    let mut draining = 0;
    for e in berth_types::endpoints::service_endpoints(state, "default", "api") {
        assert_eq!(e.load_balancers, vec!["public".to_string()]);
        if e.draining {
            draining += 1;
            continue;
        }
        if e.weight == 0 {
            continue;
        }
        let deployment = state.task(&e.task_id).unwrap().started_by.clone();
        *weights.entry(deployment).or_insert(0) += e.weight;
    }
    (weights, draining)
}

fn primary_traffic(state: &State) -> (String, u32) {
    let service = state.service("default", "api").unwrap();
    let primary = service.primary().unwrap();
    (primary.id.clone(), primary.traffic_percent)
}

#[test]
fn a_task_behind_a_load_balancer_is_drained_for_its_deregistration_delay_before_it_stops() {
    let mut state = balanced_world();
    create(&mut state, balanced(2, DeploymentController::Rolling));
    let mut now = settle(&mut state, "api", NOW, 20);
    assert_eq!(running(&state, "api").len(), 2);
    let scale_in = ServiceUpdate {
        desired_count: Some(1),
        ..Default::default()
    };
    update(&mut state, "api", scale_in, "ecs-svc/2", now);
    step(&mut state, now);
    let leaving: Vec<_> = state
        .service_tasks("default", "api")
        .filter(|t| t.last_status == TaskStatus::Deactivating)
        .map(|t| t.id.clone())
        .collect();
    assert_eq!(leaving.len(), 1, "one task should be DEACTIVATING");
    let task = state.task(&leaving[0]).unwrap();
    assert_eq!(task.desired_status, DesiredStatus::Stopped);
    assert_eq!(task.agent_desired_status(), DesiredStatus::Running);
    assert_eq!(task.deactivating_until_ms, Some(now + 10_000));
    // Out of new traffic at once, still served by the agent.
    let (weights, draining) = traffic(&state);
    assert_eq!((weights.values().sum::<u32>(), draining), (FULL_WEIGHT, 1));
    for _ in 0..9 {
        now += 1_000;
        step(&mut state, now);
        assert_eq!(
            state.task(&leaving[0]).unwrap().last_status,
            TaskStatus::Deactivating,
            "stopped before its deregistration delay was over"
        );
    }
    now += 1_000;
    step(&mut state, now);
    now += 1_000;
    step(&mut state, now);
    assert_eq!(
        state.task(&leaving[0]).unwrap().last_status,
        TaskStatus::Stopped
    );
    assert_eq!(traffic(&state).1, 0);
}

#[test]
fn a_blue_green_canary_moves_traffic_in_steps_and_bakes_before_the_old_tasks_stop() {
    let mut state = balanced_world();
    create(&mut state, balanced(2, canary(10, 60, 30)));
    let mut now = settle(&mut state, "api", NOW, 20);
    deploy(&mut state, "api", "api:2", "ecs-svc/2", now);
    // The new tasks start beside the old ones; no traffic until healthy.
    step(&mut state, now);
    let (weights, _) = traffic(&state);
    assert_eq!(weights.get("ecs-svc/2"), None, "{weights:?}");
    let mut shifted_at = None;
    for _ in 0..5 {
        now += 1_000;
        step(&mut state, now);
        if primary_traffic(&state).1 == 10 {
            shifted_at = Some(now);
            break;
        }
    }
    let shifted_at = shifted_at.expect("the canary step never came");
    assert_eq!(
        running(&state, "api").len(),
        4,
        "old and new run side by side"
    );
    let (weights, _) = traffic(&state);
    let total: u32 = weights.values().sum();
    let new_share = f64::from(weights["ecs-svc/2"]) / f64::from(total);
    assert!(
        (0.08..=0.12).contains(&new_share),
        "the canary gets {new_share:.3} of the weight: {weights:?}"
    );
    // Held for the interval.
    while now < shifted_at + 59_000 {
        now += 1_000;
        step(&mut state, now);
        assert_eq!(primary_traffic(&state).1, 10, "moved on early at {now}");
    }
    now += 2_000;
    step(&mut state, now);
    assert_eq!(primary_traffic(&state).1, 100);
    let all_at = now;
    let (weights, _) = traffic(&state);
    assert_eq!(weights.get("ecs-svc/1").copied().unwrap_or(0), 0);
    // Bake time: the old tasks stay up, with no traffic.
    while now < all_at + 29_000 {
        now += 1_000;
        step(&mut state, now);
        let old_up = state
            .service_tasks("default", "api")
            .filter(|t| t.started_by == "ecs-svc/1" && t.desired_status == DesiredStatus::Running)
            .count();
        assert_eq!(old_up, 2, "old tasks stopped during the bake time at {now}");
    }
    for _ in 0..20 {
        now += 1_000;
        step(&mut state, now);
    }
    let service = state.service("default", "api").unwrap();
    assert_eq!(service.primary().unwrap().id, "ecs-svc/2");
    assert_eq!(
        service.primary().unwrap().rollout_state,
        RolloutState::Completed
    );
    let tasks = running(&state, "api");
    assert_eq!(tasks.len(), 2);
    assert!(tasks.iter().all(|(d, _)| d == "ecs-svc/2"));
}

#[test]
fn a_new_task_failing_during_the_canary_gives_all_traffic_back_to_the_old_deployment() {
    let mut state = balanced_world();
    create(&mut state, balanced(2, canary(10, 600, 0)));
    let mut now = settle(&mut state, "api", NOW, 20);
    deploy(&mut state, "api", "api:2", "ecs-svc/2", now);
    for _ in 0..5 {
        now += 1_000;
        step(&mut state, now);
    }
    assert_eq!(primary_traffic(&state), ("ecs-svc/2".into(), 10));
    // A new task's health check fails.
    let victim = state
        .service_tasks("default", "api")
        .find(|t| t.started_by == "ecs-svc/2")
        .unwrap();
    let report = report(&victim.id, TaskStatus::Running, Health::Unhealthy, None);
    let instance_id = victim.instance_id.clone().unwrap();
    apply(
        &mut state,
        Command::ReportTaskStatus {
            instance_id,
            reports: vec![report],
            at_ms: now,
        },
    );
    now += 1_000;
    let decided = step(&mut state, now);
    assert!(
        summary(&decided).contains(&"rolled back".to_string()),
        "{:?}",
        summary(&decided)
    );
    assert_eq!(primary_traffic(&state), ("ecs-svc/1".into(), 100));
    let (weights, _) = traffic(&state);
    assert_eq!(weights.get("ecs-svc/2").copied().unwrap_or(0), 0);
    let service = state.service("default", "api").unwrap();
    assert_eq!(service.task_definition, "api:1");
    assert_eq!(service.deployments[1].rollout_state, RolloutState::Failed);
    for _ in 0..30 {
        now += 1_000;
        step(&mut state, now);
    }
    let tasks = running(&state, "api");
    assert_eq!(tasks.len(), 2);
    assert!(
        tasks.iter().all(|(d, _)| d == "ecs-svc/1"),
        "the old tasks keep serving: {tasks:?}"
    );
}

#[test]
fn rollback_during_a_canary_returns_all_traffic_without_starting_tasks() {
    let mut state = balanced_world();
    create(&mut state, balanced(2, canary(10, 600, 0)));
    let mut now = settle(&mut state, "api", NOW, 20);
    deploy(&mut state, "api", "api:2", "ecs-svc/2", now);
    for _ in 0..5 {
        now += 1_000;
        step(&mut state, now);
    }
    assert_eq!(primary_traffic(&state).1, 10);
    let old: Vec<String> = state
        .service_tasks("default", "api")
        .filter(|t| t.started_by == "ecs-svc/1")
        .map(|t| t.id.clone())
        .collect();
    // A second deployment is refused while this one shifts.
    let refused = state.apply(Command::UpdateService {
        cluster: "default".into(),
        name: "api".into(),
        update: ServiceUpdate {
            force_new_deployment: true,
            ..Default::default()
        },
        deployment_id: "ecs-svc/3".into(),
        at_ms: now,
    });
    let message = refused.unwrap_err().to_string();
    assert!(message.contains("berth service rollback"), "{message}");
    apply(
        &mut state,
        Command::RollbackService {
            cluster: "default".into(),
            name: "api".into(),
            deployment_id: "ecs-svc/4".into(),
            at_ms: now,
        },
    );
    assert_eq!(primary_traffic(&state), ("ecs-svc/1".into(), 100));
    for _ in 0..30 {
        now += 1_000;
        step(&mut state, now);
    }
    let mut ids: Vec<String> = state
        .service_tasks("default", "api")
        .map(|t| t.id.clone())
        .collect();
    ids.sort();
    let mut old = old;
    old.sort();
    assert_eq!(ids, old, "the same old tasks serve; nothing new started");
    let service = state.service("default", "api").unwrap();
    assert!(service
        .events
        .iter()
        .any(|e| e.message.contains("rolled back")));
}

#[test]
fn scaling_to_zero_during_a_canary_stops_the_old_tasks_too() {
    let mut state = balanced_world();
    create(&mut state, balanced(2, canary(10, 600, 0)));
    let mut now = settle(&mut state, "api", NOW, 20);
    deploy(&mut state, "api", "api:2", "ecs-svc/2", now);
    for _ in 0..5 {
        now += 1_000;
        step(&mut state, now);
    }
    assert_eq!(primary_traffic(&state).1, 10);
    let zero = ServiceUpdate {
        desired_count: Some(0),
        ..Default::default()
    };
    update(&mut state, "api", zero, "ecs-svc/3", now);
    for _ in 0..30 {
        now += 1_000;
        step(&mut state, now);
    }
    let left: Vec<_> = state
        .service_tasks("default", "api")
        .map(|t| (t.started_by.clone(), t.last_status))
        .collect();
    assert!(left.is_empty(), "tasks left after scaling to 0: {left:?}");
}
