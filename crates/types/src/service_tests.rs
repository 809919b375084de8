//! State machine rules for services: what is refused, and what each command
//! re-checks at apply time.

use std::collections::BTreeMap;

use crate::command::{
    ServiceProgress, ServiceTaskStop, StartServiceTasks, StopCause, TaskPlacement, TaskReport,
};
use crate::resources::Resources;
use crate::service::{
    CircuitBreaker, DeploymentConfiguration, DeploymentController, DeploymentStatus, RolloutState,
    SchedulingStrategy, ServiceSpec, ServiceStatus, ServiceUpdate, TaskHealth, TrafficShift,
    MAX_DESIRED_COUNT,
};
use crate::task::{ContainerState, ContainerStatus, Health, Task};
use crate::{
    Command, CommandOutput, ContainerDefinition, HealthCheck, HealthJudge, Registration, State,
    StateError, StopCode, TaskDefinitionSpec, TaskStatus,
};

fn spec(family: &str, health_checked: bool) -> TaskDefinitionSpec {
    let mut container = ContainerDefinition::new("app", "registry.local/app:1");
    container.memory = Some(128);
    if health_checked {
        container.health_check = Some(HealthCheck {
            command: vec!["CMD".into(), "true".into()],
            interval: 5,
            timeout: 2,
            retries: 1,
            start_period: 0,
        });
    }
    TaskDefinitionSpec {
        family: family.to_string(),
        container_definitions: vec![container],
        cpu: None,
        memory: None,
        network_mode: Default::default(),
        volumes: vec![],
        tags: vec![],
    }
}

fn ok(state: &mut State, command: Command) -> CommandOutput {
    let kind = command.kind();
    state
        .apply(command)
        .unwrap_or_else(|e| panic!("{kind} refused: {e}"))
}

/// `web:1`, `web:2` (health-checked `hc:1`) and two connected instances.
fn base() -> State {
    let mut state = State::new();
    for s in [spec("web", false), spec("web", false), spec("hc", true)] {
        ok(
            &mut state,
            Command::RegisterTaskDefinition { spec: s, at_ms: 1 },
        );
    }
    ok(
        &mut state,
        Command::CreateActivation {
            id: "act".into(),
            cluster: "default".into(),
            description: String::new(),
            secret_hash: "h".into(),
            expires_at_ms: i64::MAX,
            max_registrations: 10,
            attributes: BTreeMap::new(),
            at_ms: 0,
        },
    );
    for id in ["i-1", "i-2"] {
        ok(
            &mut state,
            Command::RegisterInstance(Registration {
                activation_id: "act".into(),
                secret_hash: "h".into(),
                new_instance_id: id.into(),
                previous_instance_id: None,
                expected_cluster: None,
                hostname: id.into(),
                attributes: BTreeMap::new(),
                certificate_expires_at_ms: i64::MAX,
                at_ms: 1,
                public_key_sha256: "key-1".into(),
            }),
        );
        ok(
            &mut state,
            Command::InstanceConnected {
                host_ports: Vec::new(),
                instance_id: id.into(),
                agent_version: "t".into(),
                resources: Resources::new(4096, 4096),
                attributes: BTreeMap::new(),
                at_ms: 2,
            },
        );
    }
    state
}

fn service_spec(name: &str, td: &str, desired: u32) -> ServiceSpec {
    ServiceSpec {
        load_balancers: Vec::new(),
        cluster: "default".into(),
        name: name.into(),
        task_definition: td.into(),
        desired_count: desired,
        scheduling_strategy: SchedulingStrategy::Replica,
        placement_strategies: vec![],
        placement_constraints: vec![],
        deployment_configuration: DeploymentConfiguration::defaults_for(
            SchedulingStrategy::Replica,
        ),
        health_check_grace_period_secs: 0,
        tags: BTreeMap::new(),
    }
}

/// `web` (1 task) behind load balancer `lb` on `container`:`port`.
fn balanced(
    container: &str,
    port: u32,
    delay_secs: u32,
    controller: DeploymentController,
) -> ServiceSpec {
    let mut spec = service_spec("web", "web", 1);
    spec.deployment_configuration.controller = controller;
    spec.load_balancers = vec![crate::service::LoadBalancer {
        name: "lb".into(),
        container_name: container.into(),
        container_port: port,
        deregistration_delay_secs: delay_secs,
    }];
    spec
}

fn blue_green(traffic: TrafficShift) -> DeploymentController {
    DeploymentController::BlueGreen(crate::service::BlueGreen {
        traffic,
        bake_time_secs: 0,
    })
}

/// `web` (2 tasks) with minimum healthy and maximum percents.
fn percents(min: u32, max: u32) -> ServiceSpec {
    let mut spec = service_spec("web", "web", 2);
    spec.deployment_configuration.minimum_healthy_percent = min;
    spec.deployment_configuration.maximum_percent = max;
    spec
}

fn create(state: &mut State, spec: ServiceSpec) -> Result<CommandOutput, StateError> {
    state.apply(Command::CreateService {
        spec,
        deployment_id: "ecs-svc/1".into(),
        at_ms: 10,
    })
}

fn start(
    state: &mut State,
    deployment: &str,
    ids: &[&str],
    at_ms: i64,
) -> Result<CommandOutput, StateError> {
    state.apply(Command::StartServiceTasks(StartServiceTasks {
        cluster: "default".into(),
        service: "web".into(),
        deployment_id: deployment.into(),
        task_ids: ids.iter().map(|s| s.to_string()).collect(),
        instance_ids: vec![],
        at_ms,
    }))
}

/// Places the task and has its agent report it RUNNING (with `health`).
fn run(state: &mut State, id: &str, instance: &str, health: Health) {
    ok(
        state,
        Command::PlaceTasks {
            placements: vec![TaskPlacement {
                task_id: id.into(),
                instance_id: instance.into(),
            }],
            unplaced: vec![],
            at_ms: 20,
        },
    );
    report(state, id, instance, TaskStatus::Running, health, None, 30);
}

fn report(
    state: &mut State,
    id: &str,
    instance: &str,
    status: TaskStatus,
    health: Health,
    stop_code: Option<StopCode>,
    at_ms: i64,
) {
    ok(
        state,
        Command::ReportTaskStatus {
            instance_id: instance.into(),
            reports: vec![TaskReport {
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
            }],
            at_ms,
        },
    );
}

fn update(
    state: &mut State,
    update: ServiceUpdate,
    deployment: &str,
) -> Result<CommandOutput, StateError> {
    state.apply(Command::UpdateService {
        cluster: "default".into(),
        name: "web".into(),
        update,
        deployment_id: deployment.into(),
        at_ms: 100,
    })
}

fn progress(state: &mut State, p: ServiceProgress) -> Result<CommandOutput, StateError> {
    state.apply(Command::ServiceProgress {
        cluster: "default".into(),
        service: "web".into(),
        progress: p,
        at_ms: 200,
    })
}

fn fields(err: &StateError) -> Vec<String> {
    match err {
        StateError::Invalid(e) => e.fields().map(str::to_string).collect(),
        other => panic!("not a validation error: {other}"),
    }
}

#[test]
fn bad_service_settings_are_refused_with_the_field_and_change_nothing() {
    let before = base();
    let cases: Vec<(ServiceSpec, &str)> = vec![
        (
            service_spec("web", "web", MAX_DESIRED_COUNT + 1),
            "desiredCount",
        ),
        (percents(50, 90), "deploymentConfiguration.maximumPercent"),
        (
            percents(150, 150),
            "deploymentConfiguration.minimumHealthyPercent",
        ),
        (
            ServiceSpec {
                scheduling_strategy: SchedulingStrategy::Daemon,
                ..service_spec("web", "web", 3)
            },
            "desiredCount",
        ),
        (
            ServiceSpec {
                scheduling_strategy: SchedulingStrategy::Daemon,
                placement_strategies: vec!["spread:instanceId".into()],
                deployment_configuration: DeploymentConfiguration::defaults_for(
                    SchedulingStrategy::Daemon,
                ),
                ..service_spec("web", "web", 0)
            },
            "placementStrategy",
        ),
        (
            ServiceSpec {
                deployment_configuration: DeploymentConfiguration {
                    circuit_breaker: CircuitBreaker {
                        enable: false,
                        rollback: true,
                        threshold: None,
                    },
                    ..DeploymentConfiguration::defaults_for(SchedulingStrategy::Replica)
                },
                ..service_spec("web", "web", 2)
            },
            "deploymentConfiguration.deploymentCircuitBreaker.rollback",
        ),
        (service_spec("has space", "web", 1), "serviceName"),
        (
            balanced("nope", 80, 10, DeploymentController::Rolling),
            "loadBalancers[0].containerName",
        ),
        (
            // `web` maps no port at all.
            balanced("app", 80, 10, DeploymentController::Rolling),
            "loadBalancers[0].containerPort",
        ),
        (
            balanced("app", 80, 4000, DeploymentController::Rolling),
            "loadBalancers[0].deregistrationDelaySeconds",
        ),
        (
            ServiceSpec {
                load_balancers: Vec::new(),
                ..balanced("app", 80, 10, blue_green(TrafficShift::AllAtOnce))
            },
            "deploymentController",
        ),
        (
            balanced(
                "app",
                80,
                10,
                blue_green(TrafficShift::Canary {
                    percent: 0,
                    interval_secs: 60,
                }),
            ),
            "deploymentController.trafficShift.percent",
        ),
        (
            balanced(
                "app",
                80,
                10,
                blue_green(TrafficShift::Linear {
                    percent: 10,
                    interval_secs: 0,
                }),
            ),
            "deploymentController.trafficShift.intervalSeconds",
        ),
        (
            ServiceSpec {
                load_balancers: vec![
                    balanced("app", 80, 10, DeploymentController::Rolling)
                        .load_balancers[0]
                        .clone();
                    2
                ],
                ..service_spec("web", "web", 1)
            },
            "loadBalancers[1].name",
        ),
    ];
    for (spec, field) in cases {
        let mut state = before.clone();
        let err = create(&mut state, spec).unwrap_err();
        assert!(fields(&err).iter().any(|f| f == field), "{field}: {err}");
        assert_eq!(state, before, "{field}: nothing changed");
    }
    let mut state = before.clone();
    let err = create(&mut state, service_spec("web", "nope", 1)).unwrap_err();
    assert!(matches!(err, StateError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("nope"), "{err}");
    assert_eq!(state, before);
}

#[test]
fn create_resolves_the_family_to_its_latest_revision_and_refuses_duplicates() {
    let mut state = base();
    let CommandOutput::Service(service) =
        create(&mut state, service_spec("web", "web", 2)).unwrap()
    else {
        panic!()
    };
    assert_eq!(service.task_definition, "web:2");
    assert_eq!(service.deployments.len(), 1);
    let primary = &service.deployments[0];
    assert_eq!(
        (primary.status, primary.rollout_state, primary.desired_count),
        (DeploymentStatus::Primary, RolloutState::InProgress, 2)
    );
    let err = create(&mut state, service_spec("web", "web", 2)).unwrap_err();
    assert!(matches!(err, StateError::AlreadyExists { .. }));
}

#[test]
fn a_stale_deployment_cannot_start_tasks() {
    let mut state = base();
    create(&mut state, service_spec("web", "web:1", 2)).unwrap();
    start(&mut state, "ecs-svc/1", &["a"], 20).unwrap();
    // A new task definition makes a new PRIMARY deployment.
    update(
        &mut state,
        ServiceUpdate {
            task_definition: Some("web:2".into()),
            ..Default::default()
        },
        "ecs-svc/2",
    )
    .unwrap();
    let service = state.service("default", "web").unwrap();
    assert_eq!(service.deployments[0].id, "ecs-svc/2");
    assert_eq!(service.deployments[1].status, DeploymentStatus::Active);
    // A decision taken before the update is refused, not applied.
    let err = start(&mut state, "ecs-svc/1", &["b"], 120).unwrap_err();
    assert!(
        err.to_string().contains("no longer the current deployment"),
        "{err}"
    );
    assert!(state.task("b").is_none());
    let out = start(&mut state, "ecs-svc/2", &["c"], 120).unwrap();
    let CommandOutput::Tasks(tasks) = out else {
        panic!()
    };
    assert_eq!(tasks[0].started_by, "ecs-svc/2");
    assert_eq!(tasks[0].group, "service:web");
    assert_eq!(tasks[0].task_definition(), "web:2");
}

#[test]
fn starts_never_exceed_maximum_percent_nor_the_desired_count() {
    let mut state = base();
    let mut s = service_spec("web", "web:1", 4);
    s.deployment_configuration.maximum_percent = 150;
    s.deployment_configuration.minimum_healthy_percent = 50;
    create(&mut state, s).unwrap();
    // Never more of a deployment than the desired count...
    let err = start(&mut state, "ecs-svc/1", &["a", "b", "c", "d", "e"], 20).unwrap_err();
    assert!(err.to_string().contains("desired count"), "{err}");
    start(&mut state, "ecs-svc/1", &["a", "b", "c", "d"], 20).unwrap();
    let err = start(&mut state, "ecs-svc/1", &["e"], 20).unwrap_err();
    assert!(err.to_string().contains("desired count"), "{err}");
    // ...and, during a rollout, never more than 150% of 4 = 6 in all.
    update(
        &mut state,
        ServiceUpdate {
            task_definition: Some("web:2".into()),
            ..Default::default()
        },
        "ecs-svc/2",
    )
    .unwrap();
    let err = start(&mut state, "ecs-svc/2", &["f", "g", "h"], 120).unwrap_err();
    assert!(err.to_string().contains("maximumPercent"), "{err}");
    start(&mut state, "ecs-svc/2", &["f", "g"], 120).unwrap();
    assert_eq!(state.service_tasks("default", "web").count(), 6);
}

#[test]
fn healthy_tasks_are_stopped_only_down_to_minimum_healthy_percent() {
    let mut state = base();
    let mut s = service_spec("web", "hc", 4);
    s.deployment_configuration.minimum_healthy_percent = 50;
    create(&mut state, s).unwrap();
    start(&mut state, "ecs-svc/1", &["a", "b", "c", "d"], 20).unwrap();
    for id in ["a", "b", "c"] {
        run(&mut state, id, "i-1", Health::Healthy);
    }
    run(&mut state, "d", "i-2", Health::Unknown);
    let stop = |ids: &[&str], cause| Command::StopServiceTasks {
        cluster: "default".into(),
        service: "web".into(),
        stops: ids
            .iter()
            .map(|id| ServiceTaskStop {
                task_id: id.to_string(),
                cause,
            })
            .collect(),
        at_ms: 50,
    };
    // 3 healthy, 50% of 4 = 2 must stay: only one healthy task may go; the
    // task that is not healthy yet may always go.
    let CommandOutput::Tasks(stopped) = ok(&mut state, stop(&["a", "b", "d"], StopCause::Replaced))
    else {
        panic!()
    };
    let ids: Vec<&str> = stopped.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["a", "d"]);
    assert_eq!(
        stopped[0].stop_code,
        Some(StopCode::ServiceSchedulerInitiated)
    );
    // An "unhealthy" stop of a healthy task is refused too.
    let CommandOutput::Tasks(stopped) = ok(&mut state, stop(&["b"], StopCause::Unhealthy)) else {
        panic!()
    };
    assert!(stopped.is_empty());
    // An unhealthy task goes whatever the minimum, and counts as a failure.
    report(
        &mut state,
        "c",
        "i-1",
        TaskStatus::Running,
        Health::Unhealthy,
        None,
        60,
    );
    let CommandOutput::Tasks(stopped) = ok(&mut state, stop(&["c"], StopCause::Unhealthy)) else {
        panic!()
    };
    assert_eq!(stopped.len(), 1);
    assert_eq!(
        stopped[0].stopped_reason,
        "Task failed container health checks"
    );
    let service = state.service("default", "web").unwrap();
    assert_eq!(service.deployments[0].failed_tasks, 1);
    assert!(service.events[0]
        .message
        .contains("failed container health checks"));
}

#[test]
fn failures_count_toward_the_circuit_breaker_and_back_the_service_off() {
    let mut state = base();
    let mut s = service_spec("web", "web", 4);
    s.deployment_configuration.maximum_percent = 100;
    s.deployment_configuration.minimum_healthy_percent = 0;
    create(&mut state, s).unwrap();
    start(&mut state, "ecs-svc/1", &["a", "b", "c", "d"], 1_000).unwrap();
    for (id, at) in [("a", 1_010), ("b", 1_020), ("c", 1_030), ("d", 1_040)] {
        run(&mut state, id, "i-1", Health::Unknown);
        // It exits at once: EssentialContainerExited.
        report(
            &mut state,
            id,
            "i-1",
            TaskStatus::Stopped,
            Health::Unknown,
            None,
            at,
        );
    }
    let service = state.service("default", "web").unwrap();
    assert_eq!(service.deployments[0].failed_tasks, 4);
    assert_eq!(
        state.task("a").unwrap().stop_code,
        Some(StopCode::EssentialContainerExited)
    );
    // Two failures launch again at once; the third backs off 10 s; the
    // fourth task was launched before the backoff began, so its failure
    // does not lengthen it.
    assert_eq!(service.throttle.failures, 3);
    assert_eq!(service.throttle.until_ms, 1_030 + 10_000);
    assert!(service
        .events
        .iter()
        .any(|e| e.message.contains("backed off for 10s")));
    let err = start(&mut state, "ecs-svc/1", &["e"], 11_029).unwrap_err();
    assert!(err.to_string().contains("backed off"), "{err}");
    start(&mut state, "ecs-svc/1", &["e"], 11_030).unwrap();
    // A task lost with its instance is not a failure of the deployment.
    run(&mut state, "e", "i-2", Health::Unknown);
    ok(
        &mut state,
        Command::InstanceDisconnected {
            instance_id: "i-2".into(),
            at_ms: 20_000,
        },
    );
    ok(
        &mut state,
        Command::InstanceLost {
            instance_id: "i-2".into(),
            at_ms: 400_000,
        },
    );
    assert_eq!(
        state.task("e").unwrap().stop_code,
        Some(StopCode::InstanceLost)
    );
    assert_eq!(
        state.service("default", "web").unwrap().deployments[0].failed_tasks,
        4
    );
}

#[test]
fn a_task_that_ran_a_minute_restarts_the_failure_count() {
    let mut state = base();
    create(&mut state, service_spec("web", "web", 1)).unwrap();
    for (id, at) in [("a", 1_000), ("b", 2_000), ("c", 3_000)] {
        start(&mut state, "ecs-svc/1", &[id], at).unwrap();
        run(&mut state, id, "i-1", Health::Unknown);
        report(
            &mut state,
            id,
            "i-1",
            TaskStatus::Stopped,
            Health::Unknown,
            None,
            at + 10,
        );
    }
    assert_eq!(
        state.service("default", "web").unwrap().throttle.failures,
        3
    );
    let at = 3_010 + 10_000;
    start(&mut state, "ecs-svc/1", &["d"], at).unwrap();
    run(&mut state, "d", "i-1", Health::Unknown);
    // RUNNING was reported at 30 (the helper's time); it ran for minutes.
    report(
        &mut state,
        "d",
        "i-1",
        TaskStatus::Stopped,
        Health::Unknown,
        None,
        200_000,
    );
    let throttle = state.service("default", "web").unwrap().throttle;
    assert_eq!((throttle.failures, throttle.until_ms), (1, 0));
}

#[test]
fn completion_failure_and_rollback_are_recorded_only_when_they_hold() {
    let mut state = base();
    let mut s = service_spec("web", "web:1", 1);
    s.deployment_configuration.circuit_breaker = CircuitBreaker {
        enable: true,
        rollback: true,
        threshold: Some(1),
    };
    create(&mut state, s).unwrap();
    let completed = |id: &str| ServiceProgress::DeploymentCompleted {
        deployment_id: id.into(),
    };
    let err = progress(&mut state, completed("ecs-svc/1")).unwrap_err();
    assert!(err.to_string().contains("has not completed"), "{err}");
    start(&mut state, "ecs-svc/1", &["a"], 20).unwrap();
    run(&mut state, "a", "i-1", Health::Unknown);
    progress(&mut state, completed("ecs-svc/1")).unwrap();
    progress(&mut state, ServiceProgress::Steady).unwrap();
    let service = state.service("default", "web").unwrap();
    assert_eq!(service.stable_task_definition.as_deref(), Some("web:1"));
    assert!(service.events[0]
        .message
        .ends_with("has reached a steady state."));
    assert!(
        progress(&mut state, ServiceProgress::Steady).is_err(),
        "said once"
    );

    // Deploy web:2; it fails and rolls back to web:1.
    update(
        &mut state,
        ServiceUpdate {
            task_definition: Some("web:2".into()),
            ..Default::default()
        },
        "ecs-svc/2",
    )
    .unwrap();
    let failed = ServiceProgress::DeploymentFailed {
        deployment_id: "ecs-svc/2".into(),
        reason: "tasks failed to start".into(),
        rollback_deployment_id: Some("ecs-svc/3".into()),
    };
    progress(&mut state, failed.clone()).unwrap();
    let service = state.service("default", "web").unwrap();
    let ids: Vec<(&str, DeploymentStatus, RolloutState)> = service
        .deployments
        .iter()
        .map(|d| (d.id.as_str(), d.status, d.rollout_state))
        .collect();
    assert_eq!(
        ids,
        [
            (
                "ecs-svc/3",
                DeploymentStatus::Primary,
                RolloutState::InProgress
            ),
            ("ecs-svc/2", DeploymentStatus::Active, RolloutState::Failed),
            (
                "ecs-svc/1",
                DeploymentStatus::Active,
                RolloutState::Completed
            ),
        ]
    );
    assert_eq!(service.task_definition, "web:1");
    assert_eq!(
        service.deployments[0].rollback_of.as_deref(),
        Some("ecs-svc/2")
    );
    assert!(service.events[0].message.contains("rolling back to web:1"));
    // The first deployment stays until its tasks are gone.
    assert_eq!(service.finished_deployments.len(), 0);
    // Recording the same failure twice is refused.
    assert!(progress(&mut state, failed).is_err());
}

#[test]
fn a_failed_rollback_does_not_roll_back_again() {
    let mut state = base();
    create(&mut state, service_spec("web", "web:1", 0)).unwrap();
    progress(
        &mut state,
        ServiceProgress::DeploymentCompleted {
            deployment_id: "ecs-svc/1".into(),
        },
    )
    .unwrap();
    update(
        &mut state,
        ServiceUpdate {
            task_definition: Some("web:2".into()),
            ..Default::default()
        },
        "ecs-svc/2",
    )
    .unwrap();
    let fail = |d: &str, next: &str| ServiceProgress::DeploymentFailed {
        deployment_id: d.into(),
        reason: "deadline".into(),
        rollback_deployment_id: Some(next.into()),
    };
    progress(&mut state, fail("ecs-svc/2", "ecs-svc/3")).unwrap();
    progress(&mut state, fail("ecs-svc/3", "ecs-svc/4")).unwrap();
    let service = state.service("default", "web").unwrap();
    assert_eq!(service.deployments[0].id, "ecs-svc/3");
    assert_eq!(service.deployments[0].rollout_state, RolloutState::Failed);
    assert!(
        service.events[0].message.contains("cannot roll back"),
        "{}",
        service.events[0].message
    );
    // A failed primary starts nothing.
    let err = start(&mut state, "ecs-svc/3", &["x"], 300).unwrap_err();
    assert!(err.to_string().contains("has failed"), "{err}");
}

#[test]
fn delete_needs_a_desired_count_of_zero_or_force_and_ends_inactive() {
    let mut state = base();
    create(&mut state, service_spec("web", "web", 1)).unwrap();
    start(&mut state, "ecs-svc/1", &["a"], 20).unwrap();
    run(&mut state, "a", "i-1", Health::Unknown);
    let delete = |force| Command::DeleteService {
        cluster: "default".into(),
        name: "web".into(),
        force,
        at_ms: 50,
    };
    let err = state.apply(delete(false)).unwrap_err();
    assert!(err.to_string().contains("--desired-count 0"), "{err}");
    assert_eq!(
        state.service("default", "web").unwrap().status,
        ServiceStatus::Active
    );
    ok(&mut state, delete(true));
    assert_eq!(
        state.service("default", "web").unwrap().status,
        ServiceStatus::Draining
    );
    // Its task may go now (the minimum of 0 desired is 0), and it cannot
    // start new ones.
    assert!(start(&mut state, "ecs-svc/1", &["b"], 60).is_err());
    assert!(
        progress(&mut state, ServiceProgress::Inactive).is_err(),
        "a task still runs"
    );
    ok(
        &mut state,
        Command::StopServiceTasks {
            cluster: "default".into(),
            service: "web".into(),
            stops: vec![ServiceTaskStop {
                task_id: "a".into(),
                cause: StopCause::ServiceDeleted,
            }],
            at_ms: 70,
        },
    );
    report(
        &mut state,
        "a",
        "i-1",
        TaskStatus::Stopped,
        Health::Unknown,
        None,
        80,
    );
    progress(&mut state, ServiceProgress::Inactive).unwrap();
    let service = state.service("default", "web").unwrap();
    assert_eq!(service.status, ServiceStatus::Inactive);
    assert!(service.deployments.is_empty());
    // The name can be used again.
    create(&mut state, service_spec("web", "web", 1)).unwrap();
}

#[test]
fn a_daemon_runs_one_task_per_instance() {
    let mut state = base();
    let spec = ServiceSpec {
        scheduling_strategy: SchedulingStrategy::Daemon,
        deployment_configuration: DeploymentConfiguration::defaults_for(SchedulingStrategy::Daemon),
        ..service_spec("web", "web", 0)
    };
    create(&mut state, spec).unwrap();
    let daemon = |ids: &[&str], instances: &[&str]| {
        Command::StartServiceTasks(StartServiceTasks {
            cluster: "default".into(),
            service: "web".into(),
            deployment_id: "ecs-svc/1".into(),
            task_ids: ids.iter().map(|s| s.to_string()).collect(),
            instance_ids: instances.iter().map(|s| s.to_string()).collect(),
            at_ms: 20,
        })
    };
    ok(&mut state, daemon(&["a", "b"], &["i-1", "i-2"]));
    assert_eq!(state.task("a").unwrap().last_status, TaskStatus::Pending);
    let err = state.apply(daemon(&["c"], &["i-1"])).unwrap_err();
    assert!(err.to_string().contains("already runs"), "{err}");
    let err = state
        .apply(Command::UpdateService {
            cluster: "default".into(),
            name: "web".into(),
            update: ServiceUpdate {
                desired_count: Some(3),
                ..Default::default()
            },
            deployment_id: "ecs-svc/2".into(),
            at_ms: 30,
        })
        .unwrap_err();
    assert_eq!(fields(&err), ["desiredCount"]);
}

#[test]
fn run_task_cannot_pose_as_a_service() {
    let mut state = base();
    let err = state
        .apply(Command::RunTasks(crate::RunTasks {
            cluster: "default".into(),
            task_definition: "web".into(),
            task_ids: vec!["x".into()],
            instance_ids: vec![],
            group: Some("service:web".into()),
            started_by: String::new(),
            placement_strategies: vec![],
            placement_constraints: vec![],
            overrides: vec![],
            client_token: None,
            at_ms: 1,
        }))
        .unwrap_err();
    assert_eq!(fields(&err), ["group"]);
}

#[test]
fn unplaced_service_tasks_say_why_once() {
    let mut state = base();
    create(&mut state, service_spec("web", "web", 2)).unwrap();
    start(&mut state, "ecs-svc/1", &["a", "b"], 20).unwrap();
    let unplaced = || Command::PlaceTasks {
        placements: vec![],
        unplaced: vec![
            ("a".into(), "no room".into()),
            ("b".into(), "no room".into()),
        ],
        at_ms: 30,
    };
    ok(&mut state, unplaced());
    ok(&mut state, unplaced());
    let service = state.service("default", "web").unwrap();
    let matching = service
        .events
        .iter()
        .filter(|e| {
            e.message.contains("was unable to place a task")
                && e.message.ends_with("Reason: no room")
        })
        .count();
    assert_eq!(matching, 1);
}

#[test]
fn services_and_their_commands_survive_bincode() {
    let mut state = base();
    create(&mut state, service_spec("web", "web", 2)).unwrap();
    start(&mut state, "ecs-svc/1", &["a"], 20).unwrap();
    let commands = [
        Command::StartServiceTasks(StartServiceTasks {
            cluster: "default".into(),
            service: "web".into(),
            deployment_id: "ecs-svc/1".into(),
            task_ids: vec!["b".into()],
            instance_ids: vec![],
            at_ms: 21,
        }),
        Command::ServiceProgress {
            cluster: "default".into(),
            service: "web".into(),
            progress: ServiceProgress::DeploymentFailed {
                deployment_id: "x".into(),
                reason: "r".into(),
                rollback_deployment_id: Some("y".into()),
            },
            at_ms: 1,
        },
    ];
    for c in commands {
        let decoded: Command = bincode::deserialize(&bincode::serialize(&c).unwrap()).unwrap();
        assert_eq!(decoded, c);
    }
    let mut decoded: State = bincode::deserialize(&bincode::serialize(&state).unwrap()).unwrap();
    decoded.rebuild_indexes();
    assert_eq!(decoded, state);
    assert_eq!(decoded.service_tasks("default", "web").count(), 1);
}

#[test]
fn describe_counts_each_deployments_tasks_and_says_why_tasks_wait() {
    use crate::service::{DeploymentCounts, PendingReason};
    let mut state = base();
    create(&mut state, service_spec("web", "hc", 4)).unwrap();
    start(&mut state, "ecs-svc/1", &["a", "b", "c", "d"], 20).unwrap();
    run(&mut state, "a", "i-1", Health::Healthy);
    run(&mut state, "b", "i-2", Health::Unknown);
    ok(
        &mut state,
        Command::PlaceTasks {
            placements: vec![TaskPlacement {
                task_id: "c".into(),
                instance_id: "i-1".into(),
            }],
            unplaced: vec![("d".into(), "no room".into())],
            at_ms: 30,
        },
    );
    update(
        &mut state,
        ServiceUpdate {
            task_definition: Some("web:1".into()),
            ..Default::default()
        },
        "ecs-svc/2",
    )
    .unwrap();
    start(&mut state, "ecs-svc/2", &["e", "f", "g"], 110).unwrap();
    run(&mut state, "e", "i-2", Health::Unknown);
    run(&mut state, "f", "i-2", Health::Unknown);
    // f is on its way out: it counts nowhere; g waits without a reason yet.
    ok(
        &mut state,
        Command::StopTask {
            task_id: "f".into(),
            reason: String::new(),
            at_ms: 120,
        },
    );
    let service = state.service("default", "web").unwrap().clone();
    let counts = |pending, running, healthy| DeploymentCounts {
        pending,
        running,
        healthy,
    };
    assert_eq!(
        state.deployment_counts(&service),
        [
            ("ecs-svc/2".to_string(), counts(1, 1, 1)),
            ("ecs-svc/1".to_string(), counts(2, 2, 1)),
        ]
    );
    let described = state.describe_service(&service);
    assert_eq!(
        (
            described.running_count,
            described.pending_count,
            described.healthy_count
        ),
        (3, 3, 2)
    );
    let per_deployment: Vec<(&str, DeploymentCounts)> = described
        .deployments
        .iter()
        .map(|d| (d.deployment.id.as_str(), d.counts))
        .collect();
    assert_eq!(
        per_deployment,
        [
            ("ecs-svc/2", counts(1, 1, 1)),
            ("ecs-svc/1", counts(2, 2, 1))
        ]
    );
    assert_eq!(
        described.pending_reasons,
        [PendingReason {
            reason: "no room".into(),
            tasks: 1
        }]
    );
}

#[test]
fn services_are_listed_in_all_and_per_cluster() {
    let mut state = base();
    ok(
        &mut state,
        Command::CreateCluster {
            name: "other".into(),
            settings: Default::default(),
            at_ms: 1,
        },
    );
    create(&mut state, service_spec("web", "web", 1)).unwrap();
    ok(
        &mut state,
        Command::CreateService {
            spec: ServiceSpec {
                cluster: "other".into(),
                ..service_spec("db", "web", 1)
            },
            deployment_id: "ecs-svc/7".into(),
            at_ms: 10,
        },
    );
    let names = |it: &mut dyn Iterator<Item = &crate::service::Service>| -> Vec<String> {
        it.map(|s| format!("{}/{}", s.cluster, s.name)).collect()
    };
    assert_eq!(names(&mut state.services()), ["default/web", "other/db"]);
    assert_eq!(names(&mut state.services_in("default")), ["default/web"]);
    assert_eq!(names(&mut state.services_in("other")), ["other/db"]);
}

fn stop_tasks(state: &mut State, stops: &[(&str, StopCause)], at_ms: i64) -> Vec<String> {
    let out = ok(
        state,
        Command::StopServiceTasks {
            cluster: "default".into(),
            service: "web".into(),
            stops: stops
                .iter()
                .map(|(id, cause)| ServiceTaskStop {
                    task_id: id.to_string(),
                    cause: *cause,
                })
                .collect(),
            at_ms,
        },
    );
    match out {
        CommandOutput::Tasks(tasks) => tasks.into_iter().map(|t| t.id).collect(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_service_change_is_announced() {
    let mut state = base();
    state.take_events();
    create(&mut state, service_spec("web", "web", 1)).unwrap();
    let events = state.take_events();
    assert!(
        events.iter().any(|e| matches!(
            e,
            crate::StateEvent::Service { cluster, name } if cluster == "default" && name == "web"
        )),
        "{events:?}"
    );
    update(
        &mut state,
        ServiceUpdate {
            desired_count: Some(2),
            ..Default::default()
        },
        "unused",
    )
    .unwrap();
    assert!(state
        .take_events()
        .iter()
        .any(|e| matches!(e, crate::StateEvent::Service { .. })));
}

#[test]
fn only_a_new_definition_new_placement_or_force_starts_a_deployment() {
    let mut state = base();
    create(&mut state, service_spec("web", "web", 1)).unwrap();
    let deployments = |state: &State| {
        state
            .service("default", "web")
            .unwrap()
            .deployments
            .iter()
            .map(|d| d.id.clone())
            .collect::<Vec<_>>()
    };
    update(
        &mut state,
        ServiceUpdate {
            desired_count: Some(3),
            ..Default::default()
        },
        "ecs-svc/2",
    )
    .unwrap();
    assert_eq!(deployments(&state), ["ecs-svc/1"]);
    assert_eq!(state.service("default", "web").unwrap().desired_count, 3);
    update(
        &mut state,
        ServiceUpdate {
            placement_constraints: Some(vec!["distinctInstance".into()]),
            ..Default::default()
        },
        "ecs-svc/3",
    )
    .unwrap();
    assert_eq!(deployments(&state), ["ecs-svc/3", "ecs-svc/1"]);
    update(
        &mut state,
        ServiceUpdate {
            placement_strategies: Some(vec!["spread:instanceId".into()]),
            ..Default::default()
        },
        "ecs-svc/4",
    )
    .unwrap();
    assert_eq!(deployments(&state), ["ecs-svc/4", "ecs-svc/3", "ecs-svc/1"]);
}

#[test]
fn updating_a_daemon_keeps_the_count_its_controller_set() {
    let mut state = base();
    create(
        &mut state,
        ServiceSpec {
            scheduling_strategy: SchedulingStrategy::Daemon,
            deployment_configuration: DeploymentConfiguration::defaults_for(
                SchedulingStrategy::Daemon,
            ),
            ..service_spec("web", "web", 0)
        },
    )
    .unwrap();
    progress(&mut state, ServiceProgress::DaemonDesiredCount { count: 2 }).unwrap();
    update(
        &mut state,
        ServiceUpdate {
            health_check_grace_period_secs: Some(30),
            ..Default::default()
        },
        "unused",
    )
    .unwrap();
    let service = state.service("default", "web").unwrap();
    assert_eq!(service.desired_count, 2);
    assert_eq!(service.health_check_grace_period_secs, 30);
}

#[test]
fn a_replica_scaled_to_zero_is_deleted_without_force() {
    let mut state = base();
    create(&mut state, service_spec("web", "web", 0)).unwrap();
    ok(
        &mut state,
        Command::DeleteService {
            cluster: "default".into(),
            name: "web".into(),
            force: false,
            at_ms: 50,
        },
    );
    assert_eq!(
        state.service("default", "web").unwrap().status,
        ServiceStatus::Draining
    );
}

#[test]
fn a_daemon_starts_on_an_instance_next_to_one_that_runs_it() {
    let mut state = base();
    create(
        &mut state,
        ServiceSpec {
            scheduling_strategy: SchedulingStrategy::Daemon,
            deployment_configuration: DeploymentConfiguration::defaults_for(
                SchedulingStrategy::Daemon,
            ),
            ..service_spec("web", "web", 0)
        },
    )
    .unwrap();
    let daemon = |id: &str, instance: &str| {
        Command::StartServiceTasks(StartServiceTasks {
            cluster: "default".into(),
            service: "web".into(),
            deployment_id: "ecs-svc/1".into(),
            task_ids: vec![id.into()],
            instance_ids: vec![instance.into()],
            at_ms: 20,
        })
    };
    ok(&mut state, daemon("a", "i-1"));
    ok(&mut state, daemon("b", "i-2"));
    assert_eq!(state.task("b").unwrap().instance_id.as_deref(), Some("i-2"));
}

#[test]
fn service_stops_touch_only_its_own_tasks_that_still_run() {
    let mut state = base();
    let mut spec = service_spec("web", "web", 3);
    spec.deployment_configuration.minimum_healthy_percent = 0;
    create(&mut state, spec).unwrap();
    start(&mut state, "ecs-svc/1", &["a", "b", "c"], 20).unwrap();
    run(&mut state, "a", "i-1", Health::Unknown);
    run(&mut state, "b", "i-2", Health::Unknown);
    // A RunTask task in the same cluster is not the service's to stop.
    ok(
        &mut state,
        Command::RunTasks(crate::RunTasks {
            cluster: "default".into(),
            task_definition: "web".into(),
            task_ids: vec!["x".into()],
            instance_ids: vec!["i-1".into()],
            group: None,
            started_by: String::new(),
            placement_strategies: vec![],
            placement_constraints: vec![],
            overrides: vec![],
            client_token: None,
            at_ms: 25,
        }),
    );
    let stopped = stop_tasks(
        &mut state,
        &[
            ("x", StopCause::Replaced),
            ("a", StopCause::Replaced),
            ("c", StopCause::Replaced),
        ],
        40,
    );
    assert_eq!(stopped, ["a", "c"]);
    assert_eq!(
        state.task("x").unwrap().desired_status,
        crate::DesiredStatus::Running
    );
    // A running task waits for its agent; one never placed stops at once.
    let a = state.task("a").unwrap();
    assert_eq!(
        (a.desired_status, a.last_status),
        (crate::DesiredStatus::Stopped, TaskStatus::Running)
    );
    assert_eq!(state.task("c").unwrap().last_status, TaskStatus::Stopped);
    // Asked again: nothing more happens.
    let events = state.service("default", "web").unwrap().events.len();
    let again = stop_tasks(
        &mut state,
        &[("a", StopCause::Replaced), ("c", StopCause::Replaced)],
        50,
    );
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(
        state.service("default", "web").unwrap().events.len(),
        events
    );
}

#[test]
fn completion_and_steady_need_every_task_healthy_and_of_the_deployment() {
    let mut state = base();
    create(&mut state, service_spec("web", "hc", 2)).unwrap();
    start(&mut state, "ecs-svc/1", &["a", "b"], 20).unwrap();
    run(&mut state, "a", "i-1", Health::Healthy);
    run(&mut state, "b", "i-2", Health::Unknown);
    let completed = || ServiceProgress::DeploymentCompleted {
        deployment_id: "ecs-svc/1".into(),
    };
    assert!(progress(&mut state, completed()).is_err(), "b not healthy");
    report(
        &mut state,
        "b",
        "i-2",
        TaskStatus::Running,
        Health::Healthy,
        None,
        40,
    );
    // All healthy, but still IN_PROGRESS: not steady yet.
    assert!(progress(&mut state, ServiceProgress::Steady).is_err());
    progress(&mut state, completed()).unwrap();
    // b's check fails: not steady.
    report(
        &mut state,
        "b",
        "i-2",
        TaskStatus::Running,
        Health::Unknown,
        None,
        50,
    );
    assert!(progress(&mut state, ServiceProgress::Steady).is_err());
    // b stops: one task short, though every alive task is healthy.
    report(
        &mut state,
        "b",
        "i-2",
        TaskStatus::Stopped,
        Health::Unknown,
        None,
        60,
    );
    assert!(progress(&mut state, ServiceProgress::Steady).is_err());
    start(&mut state, "ecs-svc/1", &["c"], 70).unwrap();
    run(&mut state, "c", "i-2", Health::Healthy);
    progress(&mut state, ServiceProgress::Steady).unwrap();
    assert!(state.service("default", "web").unwrap().steady);
}

#[test]
fn a_failed_deployment_of_the_stable_definition_does_not_roll_back_to_itself() {
    let mut state = base();
    create(&mut state, service_spec("web", "web", 1)).unwrap();
    start(&mut state, "ecs-svc/1", &["a"], 20).unwrap();
    run(&mut state, "a", "i-1", Health::Unknown);
    progress(
        &mut state,
        ServiceProgress::DeploymentCompleted {
            deployment_id: "ecs-svc/1".into(),
        },
    )
    .unwrap();
    update(
        &mut state,
        ServiceUpdate {
            force_new_deployment: true,
            ..Default::default()
        },
        "ecs-svc/2",
    )
    .unwrap();
    progress(
        &mut state,
        ServiceProgress::DeploymentFailed {
            deployment_id: "ecs-svc/2".into(),
            reason: "test".into(),
            rollback_deployment_id: Some("ecs-svc/3".into()),
        },
    )
    .unwrap();
    let service = state.service("default", "web").unwrap();
    let ids: Vec<&str> = service.deployments.iter().map(|d| d.id.as_str()).collect();
    // The old deployment still runs its task; no third one.
    assert_eq!(ids, ["ecs-svc/2", "ecs-svc/1"]);
    assert!(
        service.events[0].message.contains("cannot roll back"),
        "{:?}",
        service.events[0]
    );
}

#[test]
fn retiring_deployments_never_retires_the_primary() {
    let mut state = base();
    create(&mut state, service_spec("web", "web", 0)).unwrap();
    update(
        &mut state,
        ServiceUpdate {
            task_definition: Some("web:1".into()),
            ..Default::default()
        },
        "ecs-svc/2",
    )
    .unwrap();
    progress(
        &mut state,
        ServiceProgress::DeploymentsRetired {
            deployment_ids: vec!["ecs-svc/1".into(), "ecs-svc/2".into()],
        },
    )
    .unwrap();
    let service = state.service("default", "web").unwrap();
    let ids: Vec<&str> = service.deployments.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["ecs-svc/2"]);
    assert_eq!(service.finished_deployments[0].id, "ecs-svc/1");
}

/// Starts `id` at `at_ms`, places it and has it fail to start at once.
fn fail(state: &mut State, id: &str, at_ms: i64) {
    start(state, "ecs-svc/1", &[id], at_ms).unwrap();
    ok(
        state,
        Command::PlaceTasks {
            placements: vec![TaskPlacement {
                task_id: id.into(),
                instance_id: "i-1".into(),
            }],
            unplaced: vec![],
            at_ms,
        },
    );
    report(
        state,
        id,
        "i-1",
        TaskStatus::Stopped,
        Health::Unknown,
        None,
        at_ms,
    );
}

#[test]
fn a_failure_streak_ends_after_more_than_half_an_hour_of_quiet() {
    let mut state = base();
    create(&mut state, service_spec("web", "web", 1)).unwrap();
    let failures = |state: &State| state.service("default", "web").unwrap().throttle.failures;
    fail(&mut state, "a", 1_000);
    let half_hour = 30 * 60 * 1000;
    fail(&mut state, "b", 1_000 + half_hour);
    assert_eq!(failures(&state), 2, "exactly half an hour: same streak");
    fail(&mut state, "c", 1_000 + 2 * half_hour + 1);
    assert_eq!(failures(&state), 1, "more than half an hour: a new streak");
}

#[test]
fn a_failure_when_the_backoff_ends_counts_again() {
    let mut state = base();
    create(&mut state, service_spec("web", "web", 1)).unwrap();
    fail(&mut state, "a", 1_000);
    fail(&mut state, "b", 1_100);
    fail(&mut state, "c", 1_200);
    let throttle = state.service("default", "web").unwrap().throttle;
    assert_eq!((throttle.failures, throttle.until_ms), (3, 11_200));
    fail(&mut state, "d", 11_200);
    let throttle = state.service("default", "web").unwrap().throttle;
    assert_eq!((throttle.failures, throttle.until_ms), (4, 31_200));
}

#[test]
fn events_name_ten_tasks_then_say_how_many_more() {
    let mut state = base();
    create(&mut state, service_spec("web", "web", 21)).unwrap();
    let ids: Vec<String> = (0..10).map(|i| format!("t{i:02}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    start(&mut state, "ecs-svc/1", &refs, 20).unwrap();
    let message = state.service("default", "web").unwrap().events[0]
        .message
        .clone();
    assert!(message.ends_with("(task t09)."), "{message}");
    let ids: Vec<String> = (10..21).map(|i| format!("t{i:02}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    start(&mut state, "ecs-svc/1", &refs, 30).unwrap();
    let message = state.service("default", "web").unwrap().events[0]
        .message
        .clone();
    assert!(
        message.starts_with("(service web) has started 11 tasks: (task t10)"),
        "{message}"
    );
    assert!(message.ends_with("(task t19) and 1 more."), "{message}");
}

#[test]
fn only_an_active_daemon_takes_a_desired_count() {
    let mut state = base();
    create(&mut state, service_spec("web", "web", 1)).unwrap();
    assert!(progress(&mut state, ServiceProgress::DaemonDesiredCount { count: 2 }).is_err());
    let mut state = base();
    create(
        &mut state,
        ServiceSpec {
            scheduling_strategy: SchedulingStrategy::Daemon,
            deployment_configuration: DeploymentConfiguration::defaults_for(
                SchedulingStrategy::Daemon,
            ),
            ..service_spec("web", "web", 0)
        },
    )
    .unwrap();
    progress(&mut state, ServiceProgress::DaemonDesiredCount { count: 2 }).unwrap();
    ok(
        &mut state,
        Command::DeleteService {
            cluster: "default".into(),
            name: "web".into(),
            force: false,
            at_ms: 50,
        },
    );
    assert!(progress(&mut state, ServiceProgress::DaemonDesiredCount { count: 3 }).is_err());
}

#[test]
fn retiring_keeps_the_idle_deployments_it_was_not_asked_to_retire() {
    let mut state = base();
    create(&mut state, service_spec("web", "web", 0)).unwrap();
    for (td, id) in [("web:1", "ecs-svc/2"), ("web:2", "ecs-svc/3")] {
        update(
            &mut state,
            ServiceUpdate {
                task_definition: Some(td.into()),
                ..Default::default()
            },
            id,
        )
        .unwrap();
    }
    progress(
        &mut state,
        ServiceProgress::DeploymentsRetired {
            deployment_ids: vec!["ecs-svc/1".into()],
        },
    )
    .unwrap();
    let service = state.service("default", "web").unwrap();
    let ids: Vec<&str> = service.deployments.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["ecs-svc/3", "ecs-svc/2"]);
}

#[test]
fn a_health_judge_uses_each_tasks_own_definition() {
    let state = base();
    let task = |family: &str, health: Health| {
        let mut t = Task::id_only(format!("{family}-{health:?}"));
        t.family = family.into();
        t.revision = 1;
        t.last_status = TaskStatus::Running;
        t.containers = vec![ContainerState {
            name: "app".into(),
            status: ContainerStatus::Running,
            exit_code: None,
            reason: String::new(),
            health,
            restart_count: 0,
        }];
        t
    };
    // `web` has no health check (healthy once RUNNING), `hc` has one.
    let tasks = [
        task("hc", Health::Unknown),
        task("web", Health::Unknown),
        task("web", Health::Unhealthy),
        task("hc", Health::Healthy),
        task("hc", Health::Unhealthy),
        task("web", Health::Unknown),
    ];
    let mut judge = HealthJudge::new(&state);
    let judged: Vec<TaskHealth> = tasks.iter().map(|t| judge.health(t)).collect();
    assert_eq!(
        judged,
        [
            TaskHealth::Unknown,
            TaskHealth::Healthy,
            TaskHealth::Healthy,
            TaskHealth::Healthy,
            TaskHealth::Unhealthy,
            TaskHealth::Healthy,
        ]
    );
    for (t, expected) in tasks.iter().zip(&judged) {
        assert_eq!(state.task_health(t), *expected, "{}", t.id);
    }
}
