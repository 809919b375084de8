//! State machine rules for tasks and the instance transitions around them.

use std::collections::BTreeMap;

use crate::command::{RunTasks, TaskPlacement, TaskReport};
use crate::resources::{HostPort, Resources};
use crate::task::{ContainerState, ContainerStatus, Health};
use crate::{
    Command, CommandOutput, ContainerDefinition, DesiredStatus, InstanceState, PortMapping,
    Registration, State, StateError, StateEvent, StopCode, Task, TaskDefinitionSpec, TaskStatus,
};

fn spec(family: &str, memory: u32, host_port: Option<u32>) -> TaskDefinitionSpec {
    let mut container = ContainerDefinition::new("web", "registry.local/web:1");
    container.memory = Some(memory);
    container.cpu = 256;
    if let Some(port) = host_port {
        container.port_mappings = vec![PortMapping {
            container_port: port,
            host_port: Some(port),
            protocol: Default::default(),
        }];
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

/// A state with task definition `web:1` (256 cpu, 512 MiB, host port 8080)
/// and two connected instances of 1024 cpu / 1024 MiB.
fn cluster() -> State {
    let mut state = State::new();
    state
        .apply(Command::RegisterTaskDefinition {
            spec: spec("web", 512, Some(8080)),
            at_ms: 1,
        })
        .unwrap();
    state
        .apply(Command::RegisterTaskDefinition {
            spec: spec("small", 64, None),
            at_ms: 1,
        })
        .unwrap();
    state
        .apply(Command::CreateActivation {
            id: "act".into(),
            cluster: "default".into(),
            description: String::new(),
            secret_hash: "h".into(),
            expires_at_ms: i64::MAX,
            max_registrations: 10,
            attributes: BTreeMap::new(),
            at_ms: 0,
        })
        .unwrap();
    for id in ["i-1", "i-2"] {
        add_instance(&mut state, id, true);
    }
    state.take_events();
    state
}

fn add_instance(state: &mut State, id: &str, connect: bool) {
    state
        .apply(Command::RegisterInstance(Registration {
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
        }))
        .unwrap();
    if connect {
        state
            .apply(Command::InstanceConnected {
                host_ports: Vec::new(),
                instance_id: id.into(),
                agent_version: "0.1.0".into(),
                resources: Resources::new(1024, 1024),
                attributes: BTreeMap::from([("os".to_string(), "linux".to_string())]),
                at_ms: 2,
            })
            .unwrap();
    }
}

fn run(family: &str, ids: &[&str], token: Option<&str>) -> RunTasks {
    RunTasks {
        cluster: "default".into(),
        task_definition: family.into(),
        task_ids: ids.iter().map(|s| s.to_string()).collect(),
        instance_ids: vec![],
        group: None,
        started_by: "test".into(),
        placement_strategies: vec![],
        placement_constraints: vec![],
        overrides: vec![],
        client_token: token.map(str::to_string),
        at_ms: 10,
    }
}

fn tasks(out: CommandOutput) -> Vec<Task> {
    match out {
        CommandOutput::Tasks(t) => t,
        other => panic!("unexpected {other:?}"),
    }
}

fn place(state: &mut State, pairs: &[(&str, &str)]) -> (Vec<String>, Vec<(String, String)>) {
    let out = state
        .apply(Command::PlaceTasks {
            placements: pairs
                .iter()
                .map(|(t, i)| TaskPlacement {
                    task_id: t.to_string(),
                    instance_id: i.to_string(),
                })
                .collect(),
            unplaced: vec![],
            at_ms: 20,
        })
        .unwrap();
    match out {
        CommandOutput::Placed { placed, rejected } => (placed, rejected),
        other => panic!("unexpected {other:?}"),
    }
}

fn report(state: &mut State, instance: &str, task: &str, status: TaskStatus) {
    state
        .apply(Command::ReportTaskStatus {
            instance_id: instance.into(),
            reports: vec![TaskReport {
                task_id: task.into(),
                last_status: status,
                containers: vec![],
                reason: String::new(),
                stop_code: None,
                ip: None,
            }],
            at_ms: 30,
        })
        .unwrap();
}

fn remaining(state: &State, instance: &str) -> Resources {
    state.instance(instance).unwrap().capacity.remaining()
}

#[test]
fn run_task_creates_provisioning_tasks_from_the_latest_revision() {
    let mut state = cluster();
    let created = tasks(
        state
            .apply(Command::RunTasks(run("web", &["t1", "t2"], None)))
            .unwrap(),
    );
    assert_eq!(created.len(), 2);
    for t in &created {
        assert_eq!(t.task_definition(), "web:1");
        assert_eq!(t.last_status, TaskStatus::Provisioning);
        assert_eq!(t.desired_status, DesiredStatus::Running);
        assert_eq!(t.group, "family:web");
        assert_eq!(t.reservation.memory_mib, 512);
    }
    let waiting: Vec<&str> = state.provisioning_tasks().map(|t| t.id.as_str()).collect();
    assert_eq!(waiting, ["t1", "t2"]);
}

#[test]
fn the_same_client_token_never_starts_tasks_twice() {
    let mut state = cluster();
    let first = tasks(
        state
            .apply(Command::RunTasks(run("web", &["t1"], Some("tok"))))
            .unwrap(),
    );
    // A retry carries new task ids (the proposer made them) but the token
    // wins: the tasks of the first attempt come back.
    let again = tasks(
        state
            .apply(Command::RunTasks(run("web", &["t9"], Some("tok"))))
            .unwrap(),
    );
    assert_eq!(first[0].id, again[0].id);
    assert!(state.task("t9").is_none());
    assert_eq!(state.tasks().count(), 1);
}

#[test]
fn run_task_refuses_bad_input_without_writing_anything() {
    let mut state = cluster();
    let missing = state
        .apply(Command::RunTasks(run("nope", &["t1"], None)))
        .unwrap_err();
    assert!(matches!(missing, StateError::NotFound { .. }), "{missing}");
    let mut bad = run("web", &["t1"], None);
    bad.overrides = vec![("db".into(), "K".into(), "V".into())];
    let err = state.apply(Command::RunTasks(bad)).unwrap_err();
    assert!(
        err.to_string().contains("no container named \"db\""),
        "{err}"
    );
    let err = state
        .apply(Command::RunTasks(run("web:7", &["t1"], None)))
        .unwrap_err();
    assert!(err.to_string().contains("web:7"), "{err}");
    let before = state.clone();
    let empty = state.apply(Command::RunTasks(run("web", &[], None)));
    assert!(empty.unwrap_err().to_string().contains("count"));
    assert_eq!(state.tasks().count(), 0);
    assert_eq!(state, before);
}

#[test]
fn placement_is_rechecked_and_never_overcommits() {
    let mut state = cluster();
    state
        .apply(Command::RunTasks(run("web", &["t1", "t2", "t3"], None)))
        .unwrap();
    // A stale scheduler decided all three for i-1: the second one needs the
    // same host port, so only the first is applied.
    let (placed, rejected) = place(&mut state, &[("t1", "i-1"), ("t2", "i-1"), ("t3", "i-2")]);
    assert_eq!(placed, ["t1", "t3"]);
    assert_eq!(rejected.len(), 1);
    assert!(rejected[0].1.contains("8080"), "{:?}", rejected);
    assert_eq!(remaining(&state, "i-1"), Resources::new(768, 512));
    assert_eq!(state.task("t1").unwrap().last_status, TaskStatus::Pending);
    assert_eq!(
        state.task("t2").unwrap().last_status,
        TaskStatus::Provisioning
    );
    assert_eq!(state.active_task_count_on("i-1"), 1);
    // Placing an already placed task again changes nothing.
    let (placed, rejected) = place(&mut state, &[("t1", "i-2")]);
    assert!(placed.is_empty());
    assert!(rejected[0].1.contains("no longer waiting"));
    assert_eq!(
        state.task("t1").unwrap().instance_id.as_deref(),
        Some("i-1")
    );
}

#[test]
fn memory_is_accounted_exactly_through_start_and_stop() {
    let mut state = cluster();
    state
        .apply(Command::RunTasks(run("small", &["a", "b", "c"], None)))
        .unwrap();
    place(&mut state, &[("a", "i-1"), ("b", "i-1"), ("c", "i-1")]);
    assert_eq!(
        remaining(&state, "i-1"),
        Resources::new(1024 - 768, 1024 - 192)
    );
    report(&mut state, "i-1", "a", TaskStatus::Running);
    report(&mut state, "i-1", "a", TaskStatus::Stopped);
    // A duplicate STOPPED report must not release twice.
    report(&mut state, "i-1", "a", TaskStatus::Stopped);
    assert_eq!(
        remaining(&state, "i-1"),
        Resources::new(1024 - 512, 1024 - 128)
    );
}

#[test]
fn only_active_connected_instances_take_tasks() {
    let mut state = cluster();
    add_instance(&mut state, "i-3", false);
    state
        .apply(Command::SetInstanceDraining {
            instance_id: "i-2".into(),
            draining: true,
        })
        .unwrap();
    state
        .apply(Command::RunTasks(run("small", &["a", "b", "c"], None)))
        .unwrap();
    let (placed, rejected) = place(&mut state, &[("a", "i-2"), ("b", "i-3"), ("c", "i-1")]);
    assert_eq!(placed, ["c"]);
    assert!(rejected[0].1.contains("DRAINING"), "{rejected:?}");
    assert!(rejected[1].1.contains("DISCONNECTED"), "{rejected:?}");
    assert_eq!(
        state.instance("i-2").unwrap().display_status(),
        InstanceState::Draining
    );
    state
        .apply(Command::SetInstanceDraining {
            instance_id: "i-2".into(),
            draining: false,
        })
        .unwrap();
    let (placed, _) = place(&mut state, &[("a", "i-2")]);
    assert_eq!(placed, ["a"]);
}

#[test]
fn reports_only_move_forward_and_come_only_from_the_tasks_instance() {
    let mut state = cluster();
    state
        .apply(Command::RunTasks(run("small", &["a"], None)))
        .unwrap();
    place(&mut state, &[("a", "i-1")]);
    report(&mut state, "i-2", "a", TaskStatus::Running);
    assert_eq!(state.task("a").unwrap().last_status, TaskStatus::Pending);
    report(&mut state, "i-1", "a", TaskStatus::Running);
    report(&mut state, "i-1", "a", TaskStatus::Pending);
    let t = state.task("a").unwrap();
    assert_eq!(t.last_status, TaskStatus::Running);
    assert_eq!((t.pending_at_ms, t.started_at_ms), (Some(20), Some(30)));
}

#[test]
fn an_essential_exit_and_a_failed_start_get_their_stop_codes() {
    let mut state = cluster();
    state
        .apply(Command::RunTasks(run("small", &["a", "b"], None)))
        .unwrap();
    place(&mut state, &[("a", "i-1"), ("b", "i-1")]);
    report(&mut state, "i-1", "a", TaskStatus::Running);
    state
        .apply(Command::ReportTaskStatus {
            instance_id: "i-1".into(),
            reports: vec![TaskReport {
                task_id: "a".into(),
                last_status: TaskStatus::Stopped,
                containers: vec![ContainerState {
                    name: "web".into(),
                    status: ContainerStatus::Stopped,
                    exit_code: Some(3),
                    reason: String::new(),
                    health: Health::Unknown,
                    restart_count: 0,
                }],
                reason: "Essential container \"web\" exited with code 3".into(),
                stop_code: None,
                ip: None,
            }],
            at_ms: 40,
        })
        .unwrap();
    let a = state.task("a").unwrap();
    assert_eq!(a.stop_code, Some(StopCode::EssentialContainerExited));
    assert_eq!(a.desired_status, DesiredStatus::Stopped);
    assert_eq!(a.containers[0].exit_code, Some(3));
    report(&mut state, "i-1", "b", TaskStatus::Stopped);
    assert_eq!(
        state.task("b").unwrap().stop_code,
        Some(StopCode::TaskFailedToStart)
    );
    assert_eq!(state.active_task_count_on("i-1"), 0);
}

#[test]
fn stopping_a_provisioning_task_stops_it_at_once() {
    let mut state = cluster();
    state
        .apply(Command::RunTasks(run("small", &["a", "b"], None)))
        .unwrap();
    place(&mut state, &[("b", "i-1")]);
    state
        .apply(Command::StopTask {
            task_id: "a".into(),
            reason: String::new(),
            at_ms: 50,
        })
        .unwrap();
    let a = state.task("a").unwrap();
    assert_eq!(a.last_status, TaskStatus::Stopped);
    assert_eq!(a.stop_code, Some(StopCode::UserInitiated));
    assert_eq!(state.provisioning_tasks().count(), 0);
    // A placed task waits for its agent: desired STOPPED, still PENDING.
    let seq = state.instance("i-1").unwrap().assignment_seq;
    state
        .apply(Command::StopTask {
            task_id: "b".into(),
            reason: "done".into(),
            at_ms: 50,
        })
        .unwrap();
    let b = state.task("b").unwrap();
    assert_eq!(
        (b.desired_status, b.last_status),
        (DesiredStatus::Stopped, TaskStatus::Pending)
    );
    assert_eq!(b.stopped_reason, "done");
    assert!(state.instance("i-1").unwrap().assignment_seq > seq);
    let events = state.take_events();
    assert!(events.iter().any(|e| matches!(
        e,
        crate::StateEvent::Task { task_id, instance_id }
            if task_id == "b" && instance_id.as_deref() == Some("i-1")
    )));
}

#[test]
fn a_lost_instance_stops_its_tasks_with_instance_lost() {
    let mut state = cluster();
    state
        .apply(Command::RunTasks(run("small", &["a", "b"], None)))
        .unwrap();
    place(&mut state, &[("a", "i-1"), ("b", "i-2")]);
    let refused = state.apply(Command::InstanceLost {
        instance_id: "i-1".into(),
        at_ms: 60,
    });
    assert!(refused.unwrap_err().to_string().contains("connected"));
    state
        .apply(Command::InstanceDisconnected {
            instance_id: "i-1".into(),
            at_ms: 60,
        })
        .unwrap();
    let i1 = state.instance("i-1").unwrap();
    assert_eq!(i1.display_status(), InstanceState::Disconnected);
    assert_eq!(i1.last_seen_ms, Some(60));
    // Disconnected: the task is kept, not replaced.
    assert_eq!(state.task("a").unwrap().last_status, TaskStatus::Pending);
    state
        .apply(Command::InstanceLost {
            instance_id: "i-1".into(),
            at_ms: 5060,
        })
        .unwrap();
    let a = state.task("a").unwrap();
    assert_eq!(a.last_status, TaskStatus::Stopped);
    assert_eq!(a.stop_code, Some(StopCode::InstanceLost));
    assert!(a.stopped_reason.contains("5s"), "{}", a.stopped_reason);
    assert_eq!(remaining(&state, "i-1"), Resources::new(1024, 1024));
    assert_eq!(state.task("b").unwrap().last_status, TaskStatus::Pending);
}

#[test]
fn stopped_tasks_are_purged_after_the_clusters_retention() {
    let mut state = cluster();
    state
        .apply(Command::UpdateClusterSettings {
            name: "default".into(),
            lost_after_secs: None,
            task_retention_secs: Some(10),
        })
        .unwrap();
    state
        .apply(Command::RunTasks(run("small", &["a", "b"], Some("tok"))))
        .unwrap();
    state
        .apply(Command::StopTask {
            task_id: "a".into(),
            reason: String::new(),
            at_ms: 1000,
        })
        .unwrap();
    let purge = |state: &mut State, now_ms| match state
        .apply(Command::PurgeStoppedTasks { now_ms })
        .unwrap()
    {
        CommandOutput::Purged(n) => n,
        other => panic!("{other:?}"),
    };
    assert_eq!(purge(&mut state, 10_999), 0);
    assert_eq!(purge(&mut state, 11_000), 1);
    assert!(state.task("a").is_none());
    assert!(state.task("b").is_some(), "a running task is never purged");
}

#[test]
fn cluster_settings_are_checked() {
    let mut state = cluster();
    let err = state
        .apply(Command::UpdateClusterSettings {
            name: "default".into(),
            lost_after_secs: Some(0),
            task_retention_secs: None,
        })
        .unwrap_err();
    assert!(err.to_string().contains("lostAfter"), "{err}");
    assert_eq!(
        state.cluster("default").unwrap().settings.lost_after_secs,
        300
    );
}

#[test]
fn start_task_is_all_or_nothing() {
    let mut state = cluster();
    let mut start = run("web", &["a", "b"], None);
    start.instance_ids = vec!["i-1".into(), "i-1".into()];
    let err = state.apply(Command::RunTasks(start)).unwrap_err();
    assert!(err.to_string().contains("8080"), "{err}");
    assert_eq!(state.tasks().count(), 0);
    assert_eq!(remaining(&state, "i-1"), Resources::new(1024, 1024));
    let mut start = run("web", &["a", "b"], None);
    start.instance_ids = vec!["i-1".into(), "i-2".into()];
    let started = tasks(state.apply(Command::RunTasks(start)).unwrap());
    assert!(started.iter().all(|t| t.last_status == TaskStatus::Pending));
    assert!(state
        .instance("i-2")
        .unwrap()
        .capacity
        .port_in_use(HostPort::tcp(8080)));
}

#[test]
fn deleting_a_cluster_with_tasks_is_refused() {
    let mut state = cluster();
    state
        .apply(Command::CreateCluster {
            name: "other".into(),
            settings: Default::default(),
            at_ms: 1,
        })
        .unwrap();
    let mut r = run("small", &["a"], None);
    r.cluster = "other".into();
    state.apply(Command::RunTasks(r)).unwrap();
    let err = state
        .apply(Command::DeleteCluster {
            name: "other".into(),
        })
        .unwrap_err();
    assert!(err.to_string().contains("1 tasks"), "{err}");
}

#[test]
fn indexes_survive_a_snapshot_round_trip() {
    let mut state = cluster();
    state
        .apply(Command::RunTasks(run("small", &["a", "b", "c"], None)))
        .unwrap();
    place(&mut state, &[("a", "i-1")]);
    // What a deserialized snapshot looks like: records without indexes.
    let mut copy = state.clone();
    copy.tasks_by_instance.clear();
    copy.provisioning.clear();
    assert_eq!(copy.active_task_count_on("i-1"), 0);
    copy.rebuild_indexes();
    assert_eq!(copy, state);
    assert_eq!(copy.active_task_count_on("i-1"), 1);
    assert_eq!(copy.provisioning_tasks().count(), 2);
}

#[test]
fn restart_counts_are_stored_and_never_go_back() {
    let mut state = cluster();
    state
        .apply(Command::RunTasks(run("small", &["a"], None)))
        .unwrap();
    place(&mut state, &[("a", "i-1")]);
    let web = |restart_count: u32, status: ContainerStatus| ContainerState {
        name: "web".into(),
        status,
        exit_code: None,
        reason: String::new(),
        health: Health::Unknown,
        restart_count,
    };
    let send = |state: &mut State, containers: Vec<ContainerState>| {
        state
            .apply(Command::ReportTaskStatus {
                instance_id: "i-1".into(),
                reports: vec![TaskReport {
                    task_id: "a".into(),
                    last_status: TaskStatus::Running,
                    containers,
                    reason: String::new(),
                    stop_code: None,
                    ip: None,
                }],
                at_ms: 40,
            })
            .unwrap()
    };
    send(&mut state, vec![web(0, ContainerStatus::Running)]);
    state.take_events();
    // A restart while RUNNING is news on its own: the task stays RUNNING.
    send(&mut state, vec![web(2, ContainerStatus::Running)]);
    let told: Vec<StateEvent> = state.take_events();
    assert!(
        told.iter()
            .any(|e| matches!(e, StateEvent::Task { task_id, .. } if task_id == "a")),
        "{told:?}"
    );
    let t = state.task("a").unwrap();
    assert_eq!(t.containers[0].restart_count, 2);
    assert_eq!(t.last_status, TaskStatus::Running);
    // A late report with an older count keeps the other news, not the count.
    send(&mut state, vec![web(1, ContainerStatus::Pending)]);
    let t = state.task("a").unwrap();
    assert_eq!(t.containers[0].restart_count, 2);
    assert_eq!(t.containers[0].status, ContainerStatus::Pending);
    assert_eq!(t.desired_status, DesiredStatus::Running);
}

#[test]
fn a_reported_container_list_is_stored_without_spare_room() {
    let mut state = cluster();
    state
        .apply(Command::RunTasks(run("small", &["a"], None)))
        .unwrap();
    place(&mut state, &[("a", "i-1")]);
    // As a decoder leaves it: room for four containers, one used.
    let mut containers = Vec::with_capacity(4);
    containers.push(ContainerState {
        name: "web".into(),
        status: ContainerStatus::Running,
        exit_code: None,
        reason: String::new(),
        health: Health::Unknown,
        restart_count: 0,
    });
    state
        .apply(Command::ReportTaskStatus {
            instance_id: "i-1".into(),
            reports: vec![TaskReport {
                task_id: "a".into(),
                last_status: TaskStatus::Running,
                containers,
                reason: String::new(),
                stop_code: None,
                ip: None,
            }],
            at_ms: 40,
        })
        .unwrap();
    let t = state.task("a").unwrap();
    assert_eq!(t.containers.len(), 1);
    assert_eq!(
        t.containers.capacity(),
        1,
        "the record keeps every task's containers for its lifetime"
    );
}

#[test]
fn a_client_token_is_remembered_for_a_day() {
    let mut state = cluster();
    let first = tasks(
        state
            .apply(Command::RunTasks(run("small", &["t1"], Some("tok"))))
            .unwrap(),
    );
    let day = 24 * 3600 * 1000;
    // run() creates at 10 ms.
    state
        .apply(Command::PurgeStoppedTasks {
            now_ms: 10 + day - 1,
        })
        .unwrap();
    let again = tasks(
        state
            .apply(Command::RunTasks(run("small", &["t2"], Some("tok"))))
            .unwrap(),
    );
    assert_eq!(again[0].id, first[0].id, "still remembered");
    state
        .apply(Command::PurgeStoppedTasks { now_ms: 10 + day })
        .unwrap();
    let fresh = tasks(
        state
            .apply(Command::RunTasks(run("small", &["t3"], Some("tok"))))
            .unwrap(),
    );
    assert_eq!(fresh[0].id, "t3", "forgotten after a day");
}

#[test]
fn one_run_starts_at_most_1000_tasks() {
    let mut state = cluster();
    let ids: Vec<String> = (0..1001).map(|i| format!("t{i}")).collect();
    let all: Vec<&str> = ids.iter().map(String::as_str).collect();
    let err = state
        .apply(Command::RunTasks(run("small", &all, None)))
        .unwrap_err();
    assert!(err.to_string().contains("1001"), "{err}");
    assert_eq!(state.tasks().count(), 0);
    let created = tasks(
        state
            .apply(Command::RunTasks(run("small", &all[..1000], None)))
            .unwrap(),
    );
    assert_eq!(created.len(), 1000);
}

#[test]
fn a_placement_reason_is_written_only_on_a_task_still_waiting() {
    let mut state = cluster();
    state
        .apply(Command::RunTasks(run("small", &["a", "b"], None)))
        .unwrap();
    place(&mut state, &[("a", "i-1")]);
    state
        .apply(Command::PlaceTasks {
            placements: vec![],
            unplaced: vec![("a".into(), "late".into()), ("b".into(), "no room".into())],
            at_ms: 25,
        })
        .unwrap();
    assert_eq!(state.task("a").unwrap().placement_reason, "");
    assert_eq!(state.task("b").unwrap().placement_reason, "no room");
}

#[test]
fn a_report_without_containers_keeps_the_known_containers() {
    let mut state = cluster();
    state
        .apply(Command::RunTasks(run("small", &["a"], None)))
        .unwrap();
    place(&mut state, &[("a", "i-1")]);
    let web = ContainerState {
        name: "web".into(),
        status: ContainerStatus::Running,
        exit_code: None,
        reason: String::new(),
        health: Health::Healthy,
        restart_count: 0,
    };
    state
        .apply(Command::ReportTaskStatus {
            instance_id: "i-1".into(),
            reports: vec![TaskReport {
                task_id: "a".into(),
                last_status: TaskStatus::Running,
                containers: vec![web.clone()],
                reason: String::new(),
                stop_code: None,
                ip: None,
            }],
            at_ms: 30,
        })
        .unwrap();
    report(&mut state, "i-1", "a", TaskStatus::Running);
    assert_eq!(state.task("a").unwrap().containers, [web]);
}

#[test]
fn the_active_tasks_of_an_instance_are_those_placed_and_not_stopped() {
    let mut state = cluster();
    state
        .apply(Command::RunTasks(run("small", &["a", "b", "c"], None)))
        .unwrap();
    place(&mut state, &[("a", "i-1"), ("b", "i-1")]);
    let on = |state: &State, i: &str| -> Vec<String> {
        state.active_tasks_on(i).map(|t| t.id.clone()).collect()
    };
    assert_eq!(on(&state, "i-1"), ["a", "b"]);
    assert!(state.has_active_tasks("i-1"));
    assert!(on(&state, "i-2").is_empty());
    assert!(!state.has_active_tasks("i-2"));
    report(&mut state, "i-1", "a", TaskStatus::Stopped);
    assert_eq!(on(&state, "i-1"), ["b"]);
    assert!(state.has_active_tasks("i-1"));
    report(&mut state, "i-1", "b", TaskStatus::Stopped);
    assert!(on(&state, "i-1").is_empty());
    assert!(!state.has_active_tasks("i-1"));
}

fn mapping(container_port: u32, host_port: Option<u32>, protocol: crate::Protocol) -> PortMapping {
    PortMapping {
        container_port,
        host_port,
        protocol,
    }
}

/// Registers `api` in bridge mode with `mappings` (and a health check when
/// asked); returns the command's level.
fn register_bridge_api(state: &mut State, mappings: Vec<PortMapping>, checked: bool) -> u32 {
    let mut c = ContainerDefinition::new("api", "registry.local/api:1");
    c.memory = Some(64);
    c.port_mappings = mappings;
    if checked {
        c.health_check = Some(crate::HealthCheck {
            command: vec!["CMD".into(), "true".into()],
            interval: 5,
            timeout: 2,
            retries: 3,
            start_period: 0,
        });
    }
    let spec = TaskDefinitionSpec {
        family: "api".into(),
        container_definitions: vec![c],
        cpu: None,
        memory: None,
        network_mode: crate::NetworkMode::Bridge,
        volumes: vec![],
        tags: vec![],
    };
    crate::validate::validate_spec(&spec).unwrap();
    let command = Command::RegisterTaskDefinition { spec, at_ms: 1 };
    let level = command.level();
    state.apply(command).unwrap();
    level
}

/// `api:1` in bridge mode: container port 8080 on a dynamic host port,
/// 9090/udp on a dynamic one, and 7000 fixed on host port 7700.
fn bridge_definition(state: &mut State) {
    use crate::Protocol::{Tcp, Udp};
    let mappings = vec![
        mapping(8080, None, Tcp),
        mapping(9090, Some(0), Udp),
        mapping(7000, Some(7700), Tcp),
    ];
    assert_eq!(
        register_bridge_api(state, mappings, false),
        2,
        "bridge mode needs command level 2"
    );
}

fn bindings(state: &State, task: &str) -> Vec<(u32, u32, &'static str)> {
    let task = state.task(task).unwrap();
    let td = state.task_definition(&task.family, task.revision).unwrap();
    crate::resources::network_bindings(&td.spec, &task.reservation)
        .into_iter()
        .map(|b| (b.container_port, b.host_port, b.protocol.as_str()))
        .collect()
}

#[test]
fn bridge_tasks_get_distinct_dynamic_host_ports_when_placed() {
    let mut state = cluster();
    bridge_definition(&mut state);
    state
        .apply(Command::RunTasks(run("api", &["a1", "a2"], None)))
        .unwrap();
    // Not placed yet: only the fixed port is known.
    assert_eq!(bindings(&state, "a1"), vec![(7000, 7700, "tcp")]);
    // Two copies cannot share host port 7700: the second is refused.
    let (placed, rejected) = place(&mut state, &[("a1", "i-1"), ("a2", "i-1")]);
    assert_eq!(placed, vec!["a1"]);
    assert!(rejected[0].1.contains("7700"), "{rejected:?}");
    assert_eq!(
        bindings(&state, "a1"),
        vec![
            (8080, 49153, "tcp"),
            (9090, 49153, "udp"),
            (7000, 7700, "tcp")
        ]
    );
    let held = state
        .instance("i-1")
        .unwrap()
        .capacity
        .used_ports()
        .to_vec();
    assert!(held.contains(&HostPort::new(49153, crate::Protocol::Tcp)));
    assert!(held.contains(&HostPort::new(49153, crate::Protocol::Udp)));
}

#[test]
fn dynamic_ports_are_unique_per_instance_and_released_with_the_task() {
    let mut state = cluster();
    // Without the fixed port, many copies share one instance.
    register_bridge_api(
        &mut state,
        vec![mapping(8080, None, crate::Protocol::Tcp)],
        false,
    );
    state
        .apply(Command::RunTasks(run("api", &["a1", "a2", "a3"], None)))
        .unwrap();
    let (placed, _) = place(&mut state, &[("a1", "i-1"), ("a2", "i-1"), ("a3", "i-2")]);
    assert_eq!(placed.len(), 3);
    assert_eq!(bindings(&state, "a1"), vec![(8080, 49153, "tcp")]);
    assert_eq!(bindings(&state, "a2"), vec![(8080, 49154, "tcp")]);
    // Another instance has its own range.
    assert_eq!(bindings(&state, "a3"), vec![(8080, 49153, "tcp")]);

    // a1 stops: its port is free again and the next task gets it.
    report(&mut state, "i-1", "a1", TaskStatus::Stopped);
    assert!(!state
        .instance("i-1")
        .unwrap()
        .capacity
        .used_ports()
        .contains(&HostPort::new(49153, crate::Protocol::Tcp)));
    state
        .apply(Command::RunTasks(run("api", &["a4"], None)))
        .unwrap();
    place(&mut state, &[("a4", "i-1")]);
    assert_eq!(bindings(&state, "a4"), vec![(8080, 49153, "tcp")]);

    // StartTask picks them the same way.
    let mut start = run("api", &["s1", "s2"], None);
    start.instance_ids = vec!["i-2".into(), "i-2".into()];
    let started = tasks(state.apply(Command::RunTasks(start)).unwrap());
    assert_eq!(started.len(), 2);
    assert_eq!(bindings(&state, "s1"), vec![(8080, 49154, "tcp")]);
    assert_eq!(bindings(&state, "s2"), vec![(8080, 49155, "tcp")]);
}

#[test]
fn host_mode_bindings_are_the_container_ports() {
    let mut state = cluster();
    state
        .apply(Command::RunTasks(run("web", &["w1"], None)))
        .unwrap();
    place(&mut state, &[("w1", "i-1")]);
    assert_eq!(bindings(&state, "w1"), vec![(8080, 8080, "tcp")]);
    let register = Command::RegisterTaskDefinition {
        spec: spec("web", 512, Some(8080)),
        at_ms: 2,
    };
    assert_eq!(register.level(), 1);
}

#[test]
fn ports_bound_on_the_host_are_never_handed_out_but_a_tasks_own_are_not_held_against_it() {
    use crate::Protocol::Tcp;
    let mut state = cluster();
    // A host-mode task holds 8080 on i-1; its agent then reports 8080 (the
    // task's own listener), 7700 and 49153 (other programs) bound.
    state
        .apply(Command::RunTasks(run("web", &["w1"], None)))
        .unwrap();
    place(&mut state, &[("w1", "i-1")]);
    state
        .apply(Command::InstanceConnected {
            host_ports: vec![
                HostPort::new(8080, Tcp),
                HostPort::new(49153, Tcp),
                HostPort::new(7700, Tcp),
            ],
            instance_id: "i-1".into(),
            agent_version: "0.1.0".into(),
            resources: Resources::new(4096, 4096),
            attributes: BTreeMap::new(),
            at_ms: 3,
        })
        .unwrap();
    let capacity = &state.instance("i-1").unwrap().capacity;
    assert_eq!(
        capacity.host_ports(),
        [HostPort::new(7700, Tcp), HostPort::new(49153, Tcp)]
    );
    // A fixed host port bound on the host is refused, naming it...
    bridge_definition(&mut state);
    state
        .apply(Command::RunTasks(run("api", &["a1"], None)))
        .unwrap();
    let (placed, rejected) = place(&mut state, &[("a1", "i-1")]);
    assert!(placed.is_empty());
    assert!(rejected[0].1.contains("7700"), "{rejected:?}");
    // ...and the dynamic range skips the bound port.
    register_bridge_api(&mut state, vec![mapping(8080, None, Tcp)], false);
    state
        .apply(Command::RunTasks(run("api", &["a2"], None)))
        .unwrap();
    let (placed, _) = place(&mut state, &[("a2", "i-1")]);
    assert_eq!(placed, vec!["a2"]);
    assert_eq!(bindings(&state, "a2"), vec![(8080, 49154, "tcp")]);
}

fn connect_at(state: &mut State, instance: &str, address: &str) {
    state
        .apply(Command::InstanceConnected {
            host_ports: Vec::new(),
            instance_id: instance.into(),
            agent_version: "0.1.0".into(),
            resources: Resources::new(1024, 1024),
            attributes: BTreeMap::from([(
                crate::endpoints::ADDRESS_ATTRIBUTE.to_string(),
                address.to_string(),
            )]),
            at_ms: 3,
        })
        .unwrap();
}

fn endpoints(state: &State) -> Vec<(String, u32, String)> {
    crate::endpoints::service_endpoints(state, "default", "api")
        .into_iter()
        .map(|e| (e.address, e.port, e.task_id))
        .collect()
}

#[test]
fn a_services_endpoints_are_its_healthy_running_tasks_published_ports() {
    let mut state = cluster();
    connect_at(&mut state, "i-1", "10.0.0.1");
    connect_at(&mut state, "i-2", "10.0.0.2");
    register_bridge_api(
        &mut state,
        vec![mapping(8080, None, crate::Protocol::Tcp)],
        true,
    );
    state
        .apply(Command::CreateService {
            spec: crate::service::ServiceSpec {
                load_balancers: Vec::new(),
                cluster: "default".into(),
                name: "api".into(),
                task_definition: "api".into(),
                desired_count: 3,
                scheduling_strategy: crate::SchedulingStrategy::Replica,
                placement_strategies: vec![],
                placement_constraints: vec![],
                deployment_configuration: crate::DeploymentConfiguration::defaults_for(
                    crate::SchedulingStrategy::Replica,
                ),
                health_check_grace_period_secs: 0,
                tags: BTreeMap::new(),
            },
            deployment_id: "ecs-svc/1".into(),
            at_ms: 10,
        })
        .unwrap();
    state
        .apply(Command::StartServiceTasks(
            crate::command::StartServiceTasks {
                cluster: "default".into(),
                service: "api".into(),
                deployment_id: "ecs-svc/1".into(),
                task_ids: vec!["a1".into(), "a2".into(), "a3".into()],
                instance_ids: vec![],
                at_ms: 11,
            },
        ))
        .unwrap();
    place(&mut state, &[("a1", "i-1"), ("a2", "i-1"), ("a3", "i-2")]);
    assert!(endpoints(&state).is_empty(), "nothing runs yet");

    let health = |state: &mut State, instance: &str, task: &str, health: Health| {
        state
            .apply(Command::ReportTaskStatus {
                instance_id: instance.into(),
                reports: vec![TaskReport {
                    task_id: task.into(),
                    last_status: TaskStatus::Running,
                    containers: vec![ContainerState {
                        name: "api".into(),
                        status: ContainerStatus::Running,
                        exit_code: None,
                        reason: String::new(),
                        health,
                        restart_count: 0,
                    }],
                    reason: String::new(),
                    stop_code: None,
                    ip: None,
                }],
                at_ms: 40,
            })
            .unwrap();
    };
    health(&mut state, "i-1", "a1", Health::Unknown);
    assert!(endpoints(&state).is_empty(), "running, checks undecided");
    health(&mut state, "i-1", "a1", Health::Healthy);
    health(&mut state, "i-1", "a2", Health::Healthy);
    health(&mut state, "i-2", "a3", Health::Unhealthy);
    let before = crate::endpoints::service_endpoints(&state, "default", "api");
    assert_eq!(
        endpoints(&state),
        vec![
            ("10.0.0.1".to_string(), 49153, "a1".to_string()),
            ("10.0.0.1".to_string(), 49154, "a2".to_string()),
        ]
    );
    // Asked to stop: gone at once, before its containers stop.
    state
        .apply(Command::StopTask {
            task_id: "a2".into(),
            reason: "scale in".into(),
            at_ms: 50,
        })
        .unwrap();
    let after = crate::endpoints::service_endpoints(&state, "default", "api");
    assert_eq!(
        endpoints(&state),
        vec![("10.0.0.1".to_string(), 49153, "a1".to_string())]
    );
    assert_ne!(
        crate::endpoints::revision(&before),
        crate::endpoints::revision(&after)
    );
    assert_eq!(
        crate::endpoints::revision(&after),
        crate::endpoints::revision(&after.clone())
    );
    // A task whose checks recover is an endpoint again.
    health(&mut state, "i-2", "a3", Health::Healthy);
    assert_eq!(endpoints(&state).len(), 2);
}

#[test]
fn the_journal_tells_a_tasks_life_with_who_caused_each_step() {
    use crate::journal::{Actor, Cursor, EventDetail, Principal};
    let mut state = cluster();
    // The helper applied its commands bare; start the journal's views
    // from what is there, as a snapshot load does.
    state.rebuild_indexes();
    let operator = Actor {
        principal: Principal::Token {
            id: "ops".into(),
            role: crate::Role::Admin,
        },
        operation: "RunTask".into(),
        peer: "10.0.0.9:4000".into(),
    };
    state.begin_entry(10, 1_000);
    state
        .apply_by(Command::RunTasks(run("small", &["t-1"], None)), &operator)
        .unwrap();
    state.begin_entry(11, 1_001);
    state
        .apply_by(
            Command::PlaceTasks {
                placements: vec![TaskPlacement {
                    task_id: "t-1".into(),
                    instance_id: "i-1".into(),
                }],
                unplaced: vec![],
                at_ms: 20,
            },
            &Actor::server(2),
        )
        .unwrap();
    state.begin_entry(12, 1_002);
    state
        .apply_by(
            Command::ReportTaskStatus {
                instance_id: "i-1".into(),
                reports: vec![TaskReport {
                    task_id: "t-1".into(),
                    last_status: TaskStatus::Running,
                    containers: vec![],
                    reason: String::new(),
                    stop_code: None,
                    ip: None,
                }],
                at_ms: 30,
            },
            &Actor::server(2),
        )
        .unwrap();
    // A repeated report changes nothing and says nothing.
    state.begin_entry(13, 1_003);
    report(&mut state, "i-1", "t-1", TaskStatus::Running);
    // A call the state machine refuses is audited, with why; no event.
    let mut stop = operator.clone();
    stop.operation = "StopTask".into();
    state.begin_entry(14, 1_004);
    let refused = state.apply_by(
        Command::StopTask {
            task_id: "nope".into(),
            reason: String::new(),
            at_ms: 40,
        },
        &stop,
    );
    assert!(refused.is_err());

    let journal = state.journal();
    let events = journal.events().after(None, 100, |_| true).unwrap();
    let told: Vec<(Cursor, String, TaskStatus)> = events
        .iter()
        .map(|e| match &e.detail {
            EventDetail::TaskStateChange { last_status, .. } => {
                (e.cursor, e.actor.principal.name(), *last_status)
            }
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    let at = |index, seq| Cursor { index, seq };
    assert_eq!(
        told,
        [
            // The audit record of the call is 10.0, its effect 10.1.
            (at(10, 1), "token:ops".to_string(), TaskStatus::Provisioning),
            (at(11, 0), "server:2".to_string(), TaskStatus::Pending),
            (at(12, 0), "instance:i-1".to_string(), TaskStatus::Running),
        ]
    );
    assert_eq!(events[0].at_ms, 1_000);
    assert_eq!(events[1].cluster, "default");
    let audit = journal.audit().after(None, 100, |_| true).unwrap();
    let calls: Vec<(Cursor, &str, &str, bool)> = audit
        .iter()
        .map(|r| {
            (
                r.cursor,
                r.actor.operation.as_str(),
                r.resource.as_str(),
                r.error.is_some(),
            )
        })
        .collect();
    assert_eq!(
        calls,
        [
            (at(10, 0), "RunTask", "task/t-1", false),
            (at(14, 0), "StopTask", "task/nope", true),
        ]
    );
}

/// A state with `ids` run (unplaced) at entry 5, and its copy through a
/// snapshot's encoding, checked equal.
fn run_then_copy_through_snapshot(ids: &[&str]) -> (State, State) {
    use crate::journal::Actor;
    let mut state = cluster();
    state.rebuild_indexes();
    state.begin_entry(5, 500);
    state
        .apply_by(
            Command::RunTasks(run("small", ids, None)),
            &Actor::server(1),
        )
        .unwrap();
    let mut copy: State = bincode::deserialize(&bincode::serialize(&state).unwrap()).unwrap();
    copy.rebuild_indexes();
    assert_eq!(copy, state);
    (state, copy)
}

#[test]
fn a_state_loaded_from_a_snapshot_journals_exactly_what_the_original_does() {
    use crate::journal::Actor;
    let (mut state, mut loaded) = run_then_copy_through_snapshot(&["t-1", "t-2"]);
    for s in [&mut state, &mut loaded] {
        s.begin_entry(6, 600);
        s.apply_by(
            Command::PlaceTasks {
                placements: vec![TaskPlacement {
                    task_id: "t-1".into(),
                    instance_id: "i-2".into(),
                }],
                unplaced: vec![],
                at_ms: 60,
            },
            &Actor::server(1),
        )
        .unwrap();
        s.begin_untimed_entry(7);
        s.record_membership(&Actor::server(1), vec![1, 2, 3], vec![]);
    }
    assert_eq!(loaded.journal(), state.journal());
    // Placing t-1 said one thing (t-2 did not move); the membership
    // change took the time of the entry before it.
    let newest = state.journal().events().after(None, 100, |_| true).unwrap();
    let tail: Vec<_> = newest.iter().rev().take(2).collect();
    assert_eq!(tail[0].at_ms, 600);
    assert_eq!(tail[1].resource(), "task/t-1");
}

/// The task map is hashed: a copy decoded from a snapshot (its table sized
/// for every task at once) walks the tasks in another order than the
/// original (grown as they came). Whatever the state machine does next
/// must come out the same on both.
#[test]
fn a_copy_from_a_snapshot_with_many_tasks_applies_the_same_as_the_original() {
    use crate::journal::Actor;
    let ids: Vec<String> = (0..300u64)
        .map(|i| format!("{:016x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
        .collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let (mut state, mut copy) = run_then_copy_through_snapshot(&id_refs);
    for s in [&mut state, &mut copy] {
        s.begin_entry(6, 600);
        let placements = id_refs[..8]
            .iter()
            .enumerate()
            .map(|(n, id)| TaskPlacement {
                task_id: id.to_string(),
                instance_id: if n % 2 == 0 { "i-1" } else { "i-2" }.into(),
            })
            .collect();
        s.apply_by(
            Command::PlaceTasks {
                placements,
                unplaced: vec![],
                at_ms: 600,
            },
            &Actor::server(1),
        )
        .unwrap();
        s.begin_entry(7, 700);
        s.apply_by(
            Command::InstanceDisconnected {
                instance_id: "i-1".into(),
                at_ms: 650,
            },
            &Actor::server(1),
        )
        .unwrap();
        s.apply_by(
            Command::InstanceLost {
                instance_id: "i-1".into(),
                at_ms: 700,
            },
            &Actor::server(1),
        )
        .unwrap();
        for id in &id_refs[100..200] {
            s.apply_by(
                Command::StopTask {
                    task_id: id.to_string(),
                    reason: "test".into(),
                    at_ms: 700,
                },
                &Actor::server(1),
            )
            .unwrap();
        }
        s.begin_entry(8, i64::MAX / 2);
        let purged = s
            .apply_by(
                Command::PurgeStoppedTasks {
                    now_ms: i64::MAX / 2,
                },
                &Actor::server(1),
            )
            .unwrap();
        assert!(
            matches!(purged, CommandOutput::Purged(n) if n > 100),
            "the lost instance's and the stopped tasks are purged: {purged:?}"
        );
    }
    assert_eq!(copy, state);
    assert_eq!(copy.journal(), state.journal());
    let listed = |s: &State| {
        let mut ids: Vec<String> = s.tasks().map(|t| t.id.clone()).collect();
        ids.sort();
        ids
    };
    assert_eq!(listed(&copy), listed(&state));
    assert_eq!(
        copy.active_tasks_on("i-2").count(),
        state.active_tasks_on("i-2").count()
    );
}

// Tags and account settings.

fn pairs(list: &[(&str, &str)]) -> BTreeMap<String, String> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn tag(state: &mut State, target: &crate::TagTarget, list: &[(&str, &str)]) -> CommandOutput {
    state
        .apply(Command::TagResource {
            target: target.clone(),
            tags: pairs(list),
        })
        .unwrap()
}

fn untag(state: &mut State, target: &crate::TagTarget, keys: &[&str]) -> CommandOutput {
    state
        .apply(Command::UntagResource {
            target: target.clone(),
            keys: keys.iter().map(|k| k.to_string()).collect(),
        })
        .unwrap()
}

/// `state` with a service `api` of `small` and a task `t-1`.
fn tagged_world() -> State {
    let mut state = cluster();
    state
        .apply(Command::RunTasks(run("small", &["t-1"], None)))
        .unwrap();
    let mut spec = crate::ServiceSpec {
        load_balancers: Vec::new(),
        cluster: "default".into(),
        name: "api".into(),
        task_definition: "small".into(),
        desired_count: 0,
        scheduling_strategy: crate::SchedulingStrategy::Replica,
        placement_strategies: vec![],
        placement_constraints: vec![],
        deployment_configuration: crate::DeploymentConfiguration::defaults_for(
            crate::SchedulingStrategy::Replica,
        ),
        health_check_grace_period_secs: 0,
        tags: BTreeMap::new(),
    };
    spec.tags = pairs(&[("team", "core")]);
    state
        .apply(Command::CreateService {
            spec,
            deployment_id: "d-1".into(),
            at_ms: 10,
        })
        .unwrap();
    state
}

#[test]
fn every_kind_of_resource_is_tagged_and_untagged() {
    use crate::TagTarget;
    let mut state = tagged_world();
    let targets = [
        TagTarget::Cluster {
            name: "default".into(),
        },
        TagTarget::TaskDefinition {
            family: "web".into(),
            revision: 1,
        },
        TagTarget::Task { id: "t-1".into() },
        TagTarget::Service {
            cluster: "default".into(),
            name: "api".into(),
        },
        TagTarget::Instance { id: "i-1".into() },
    ];
    for target in &targets {
        let before = state.tags(target).unwrap();
        let out = tag(&mut state, target, &[("env", "prod"), ("owner", "a")]);
        let mut expected = before.clone();
        expected.extend(pairs(&[("env", "prod"), ("owner", "a")]));
        assert_eq!(out, CommandOutput::Tags(expected.clone()), "{target}");
        // A key already there takes the new value.
        tag(&mut state, target, &[("owner", "b")]);
        expected.insert("owner".into(), "b".into());
        assert_eq!(state.tags(target).unwrap(), expected, "{target}");
        // Removing a key that is not there is fine, as in ECS.
        untag(&mut state, target, &["env", "absent"]);
        expected.remove("env");
        assert_eq!(state.tags(target).unwrap(), expected, "{target}");
        // Nothing to change: Unchanged.
        assert_eq!(
            untag(&mut state, target, &["absent"]),
            CommandOutput::Unchanged
        );
    }
    // Each landed in its own record.
    assert_eq!(state.cluster("default").unwrap().tags["owner"], "b");
    let td = state.task_definition("web", 1).unwrap();
    assert_eq!(
        td.spec.tags,
        vec![crate::Tag {
            key: "owner".into(),
            value: "b".into()
        }]
    );
    assert_eq!(state.task("t-1").unwrap().tags["owner"], "b");
    let service = state.service("default", "api").unwrap();
    assert_eq!(service.tags, pairs(&[("owner", "b"), ("team", "core")]));
    assert_eq!(state.instance("i-1").unwrap().tags["owner"], "b");
    // Tags survive the positional encoding of snapshots.
    let bytes = bincode::serialize(&state).unwrap();
    assert_eq!(bincode::deserialize::<State>(&bytes).unwrap(), state);
}

#[test]
fn a_stopped_task_can_be_tagged_but_a_missing_resource_cannot() {
    use crate::TagTarget;
    let mut state = tagged_world();
    state
        .apply(Command::StopTask {
            task_id: "t-1".into(),
            reason: "done".into(),
            at_ms: 20,
        })
        .unwrap();
    assert_eq!(state.task("t-1").unwrap().last_status, TaskStatus::Stopped);
    tag(
        &mut state,
        &TagTarget::Task { id: "t-1".into() },
        &[("k", "v")],
    );
    for (target, kind) in [
        (
            TagTarget::Cluster {
                name: "gone".into(),
            },
            "cluster",
        ),
        (
            TagTarget::TaskDefinition {
                family: "web".into(),
                revision: 9,
            },
            "task definition",
        ),
        (TagTarget::Task { id: "t-9".into() }, "task"),
        (
            TagTarget::Service {
                cluster: "default".into(),
                name: "nope".into(),
            },
            "service",
        ),
        (TagTarget::Instance { id: "i-9".into() }, "instance"),
    ] {
        let before = state.clone();
        let err = state
            .apply(Command::TagResource {
                target: target.clone(),
                tags: pairs(&[("k", "v")]),
            })
            .unwrap_err();
        assert!(
            matches!(&err, StateError::NotFound { kind: k, .. } if k == kind),
            "{target}: {err}"
        );
        assert!(state
            .apply(Command::UntagResource {
                target,
                keys: vec!["k".into()],
            })
            .is_err());
        assert_eq!(state, before);
    }
}

#[test]
fn tags_are_refused_past_fifty_or_under_the_aws_prefix() {
    use crate::TagTarget;
    let mut state = tagged_world();
    let cluster = TagTarget::Cluster {
        name: "default".into(),
    };
    let fifty: BTreeMap<String, String> = (0..50)
        .map(|i| (format!("k{i}"), "v".to_string()))
        .collect();
    state
        .apply(Command::TagResource {
            target: cluster.clone(),
            tags: fifty,
        })
        .unwrap();
    let before = state.clone();
    let err = state
        .apply(Command::TagResource {
            target: cluster.clone(),
            tags: pairs(&[("one-more", "v")]),
        })
        .unwrap_err();
    assert!(err.to_string().contains("51 tags"), "{err}");
    // Overwriting one keeps 50.
    tag(&mut state, &cluster, &[("k0", "new")]);
    let service = TagTarget::Service {
        cluster: "default".into(),
        name: "api".into(),
    };
    let before_service = state.clone();
    let err = state
        .apply(Command::TagResource {
            target: service.clone(),
            tags: pairs(&[("a", "1"), ("aws:stack", "x")]),
        })
        .unwrap_err();
    match &err {
        StateError::Invalid(e) => assert_eq!(e.fields().collect::<Vec<_>>(), ["tags[1].key"]),
        other => panic!("unexpected {other}"),
    }
    let err = state
        .apply(Command::UntagResource {
            target: service,
            keys: vec!["aws:x".into()],
        })
        .unwrap_err();
    assert!(err.to_string().contains("reserved"), "{err}");
    assert_eq!(state, before_service);
    assert_ne!(state, before);
}

#[test]
fn account_settings_have_defaults_and_per_principal_values() {
    let mut state = State::new();
    let put = |state: &mut State, principal: &str, name: &str, value: &str| {
        state
            .apply(Command::PutAccountSetting {
                principal: principal.into(),
                name: name.into(),
                value: value.into(),
            })
            .unwrap()
    };
    let alice = "arn:aws:iam::123456789012:user/alice";
    put(&mut state, "", "containerInsights", "enabled");
    assert_eq!(
        put(&mut state, alice, "containerInsights", "disabled"),
        CommandOutput::AccountSetting {
            principal: alice.into(),
            name: "containerInsights".into(),
            value: Some("disabled".into()),
        }
    );
    assert_eq!(
        put(&mut state, alice, "containerInsights", "disabled"),
        CommandOutput::Unchanged
    );
    assert_eq!(
        state.account_setting_default("containerInsights"),
        Some("enabled")
    );
    assert_eq!(
        state.effective_account_setting(alice, "containerInsights"),
        Some("disabled")
    );
    // Someone without a value of their own gets the default.
    assert_eq!(
        state.effective_account_setting("arn:aws:iam::123456789012:user/bob", "containerInsights"),
        Some("enabled")
    );
    assert_eq!(state.effective_account_setting(alice, "other"), None);
    assert_eq!(
        state.account_settings_for(alice).unwrap(),
        &pairs(&[("containerInsights", "disabled")])
    );
    let delete = |state: &mut State, principal: &str, name: &str| {
        state
            .apply(Command::DeleteAccountSetting {
                principal: principal.into(),
                name: name.into(),
            })
            .unwrap()
    };
    delete(&mut state, alice, "containerInsights");
    assert_eq!(
        state.effective_account_setting(alice, "containerInsights"),
        Some("enabled")
    );
    assert!(state.account_settings_for(alice).is_none());
    // Deleting again is done already.
    assert_eq!(
        delete(&mut state, alice, "containerInsights"),
        CommandOutput::Unchanged
    );
    delete(&mut state, "", "containerInsights");
    assert_eq!(state, State::new());
    // Only lengths are the state's to check.
    let err = state
        .apply(Command::PutAccountSetting {
            principal: String::new(),
            name: String::new(),
            value: "v".repeat(257),
        })
        .unwrap_err();
    match err {
        StateError::Invalid(e) => assert_eq!(e.fields().collect::<Vec<_>>(), ["name", "value"]),
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn tag_changes_are_journaled() {
    use crate::journal::{Actor, EventDetail, Principal};
    use crate::TagTarget;
    let mut state = tagged_world();
    state.rebuild_indexes();
    let operator = Actor {
        principal: Principal::Token {
            id: "ops".into(),
            role: crate::Role::Admin,
        },
        operation: "TagResource".into(),
        peer: String::new(),
    };
    let targets = [
        TagTarget::Cluster {
            name: "default".into(),
        },
        TagTarget::TaskDefinition {
            family: "web".into(),
            revision: 1,
        },
        TagTarget::Task { id: "t-1".into() },
        TagTarget::Service {
            cluster: "default".into(),
            name: "api".into(),
        },
        TagTarget::Instance { id: "i-1".into() },
    ];
    let mut index = 100;
    for target in &targets {
        state.begin_entry(index, 5_000);
        state
            .apply_by(
                Command::TagResource {
                    target: target.clone(),
                    tags: pairs(&[("env", "prod")]),
                },
                &operator,
            )
            .unwrap();
        // The same tags again change nothing and say nothing.
        state.begin_entry(index + 1, 5_001);
        state
            .apply_by(
                Command::TagResource {
                    target: target.clone(),
                    tags: pairs(&[("env", "prod")]),
                },
                &operator,
            )
            .unwrap();
        index += 2;
    }
    let events = state.journal().events().after(None, 100, |_| true).unwrap();
    let told: Vec<String> = events
        .iter()
        .filter(|e| e.cursor.index >= 100)
        .map(|e| {
            assert!(
                matches!(
                    e.detail,
                    EventDetail::ClusterChange { .. }
                        | EventDetail::TaskDefinitionStateChange { .. }
                        | EventDetail::TaskStateChange { .. }
                        | EventDetail::ServiceStateChange { .. }
                        | EventDetail::InstanceStateChange { .. }
                ),
                "{:?}",
                e.detail
            );
            e.resource()
        })
        .collect();
    assert_eq!(
        told,
        [
            "cluster/default",
            "task-definition/web:1",
            "task/t-1",
            "service/default/api",
            "instance/i-1"
        ]
    );
    let audit = state.journal().audit().after(None, 100, |_| true).unwrap();
    assert!(audit
        .iter()
        .any(|r| r.command == "tag_resource" && r.resource == "task-definition/web:1"));
}

#[test]
fn a_cluster_is_created_with_its_tags_or_not_at_all() {
    let mut state = State::new();
    let create = |name: &str, tags: &[(&str, &str)]| Command::CreateTaggedCluster {
        name: name.into(),
        settings: Default::default(),
        tags: pairs(tags),
        at_ms: 5,
    };
    state.apply(create("prod", &[("env", "prod")])).unwrap();
    assert_eq!(
        state.cluster("prod").unwrap().tags,
        pairs(&[("env", "prod")])
    );
    // A refused create never tags the cluster already there.
    let before = state.clone();
    let err = state
        .apply(create("prod", &[("env", "other")]))
        .unwrap_err();
    assert!(matches!(err, StateError::AlreadyExists { .. }), "{err}");
    let err = state.apply(create("dev", &[("aws:x", "y")])).unwrap_err();
    assert!(matches!(err, StateError::Invalid(_)), "{err}");
    assert_eq!(state, before);
    assert_eq!(
        create("x", &[]).level(),
        5,
        "only a level-5 server knows it"
    );
}

#[test]
fn an_inactive_revision_nothing_runs_from_is_deleted_and_its_number_never_reused() {
    let mut state = cluster();
    let delete = |state: &mut State| {
        state.apply(Command::DeleteTaskDefinition {
            family: "web".into(),
            revision: 1,
            at_ms: 60,
        })
    };
    let active = delete(&mut state).unwrap_err();
    assert!(
        active.to_string().contains("deregister it first"),
        "{active}"
    );
    state
        .apply(Command::RunTasks(run("web", &["a"], None)))
        .unwrap();
    state
        .apply(Command::DeregisterTaskDefinition {
            family: "web".into(),
            revision: 1,
            at_ms: 40,
        })
        .unwrap();
    let used = delete(&mut state).unwrap_err();
    assert!(used.to_string().contains("not yet STOPPED"), "{used}");
    state
        .apply(Command::StopTask {
            task_id: "a".into(),
            reason: String::new(),
            at_ms: 50,
        })
        .unwrap();
    match delete(&mut state).unwrap() {
        CommandOutput::TaskDefinition(td) => {
            assert_eq!(td.status, crate::TaskDefinitionStatus::Deleted)
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(state.task_definition("web", 1).is_none());
    assert!(
        state.task("a").is_some(),
        "a stopped task outlives its definition"
    );
    assert!(matches!(
        delete(&mut state),
        Err(StateError::NotFound { .. })
    ));
    match state
        .apply(Command::RegisterTaskDefinition {
            spec: spec("web", 512, Some(8080)),
            at_ms: 70,
        })
        .unwrap()
    {
        CommandOutput::TaskDefinition(td) => assert_eq!(td.revision, 2, "1 is not reused"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn group_counts_per_instance_follow_placements_and_stops() {
    let recount = |state: &State, i: &str| -> BTreeMap<String, u32> {
        let mut counts = BTreeMap::new();
        for task in state.active_tasks_on(i) {
            *counts.entry(task.group.clone()).or_insert(0) += 1;
        }
        counts
    };
    let indexed = |state: &State, i: &str| -> BTreeMap<String, u32> {
        state.task_groups_on(i).cloned().unwrap_or_default()
    };
    let mut state = cluster();
    state
        .apply(Command::RunTasks(run("small", &["a", "b"], None)))
        .unwrap();
    let mut other_group = run("small", &["c"], None);
    other_group.group = Some("batch".into());
    state.apply(Command::RunTasks(other_group)).unwrap();
    assert_eq!(state.task_groups_on("i-1"), None, "nothing placed yet");
    place(&mut state, &[("a", "i-1"), ("b", "i-1"), ("c", "i-1")]);
    let counts = indexed(&state, "i-1");
    assert_eq!(counts.values().sum::<u32>(), 3);
    assert_eq!(counts.get("batch"), Some(&1));
    assert_eq!(counts, recount(&state, "i-1"));
    // A report that changes nothing counted leaves the counts alone.
    report(&mut state, "i-1", "a", TaskStatus::Running);
    assert_eq!(indexed(&state, "i-1"), counts);
    report(&mut state, "i-1", "a", TaskStatus::Stopped);
    report(&mut state, "i-1", "a", TaskStatus::Stopped);
    assert_eq!(indexed(&state, "i-1").values().sum::<u32>(), 2);
    assert_eq!(indexed(&state, "i-1"), recount(&state, "i-1"));
    // A snapshot's state rebuilds the same counts.
    let mut copy = state.clone();
    copy.task_groups_by_instance.clear();
    copy.rebuild_indexes();
    assert_eq!(indexed(&copy, "i-1"), indexed(&state, "i-1"));
    report(&mut state, "i-1", "c", TaskStatus::Stopped);
    assert_eq!(indexed(&state, "i-1").get("batch"), None);
    report(&mut state, "i-1", "b", TaskStatus::Stopped);
    assert_eq!(
        state.task_groups_on("i-1"),
        None,
        "an instance with nothing left"
    );
}
