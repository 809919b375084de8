//! The runner's state machine against the fake runtime. Time is paused:
//! waits end when the runner has nothing left to do, never on a guess.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use berth_proto::pb;
use berth_types::{ContainerStatus, DesiredStatus, Health, StopCode, TaskReport, TaskStatus};

use super::fake::{assignment, container, depends, set, web_task, Call, FakeRuntime};
use super::*;
use crate::containerd::container_id;
use crate::runtime::{ContainerState, ExitStatus};
use crate::store::{ContainerRecord, TaskRecord};

struct Harness {
    fake: Arc<FakeRuntime>,
    handle: RunnerHandle<FakeRuntime>,
    store: Store,
    /// Every report taken off the board, in order, as the server reads it.
    seen: Vec<TaskReport>,
    _runner: AbortOnDrop,
}

impl Harness {
    fn start(fake: Arc<FakeRuntime>, store: Store) -> Self {
        Self::start_with(fake, store, RunnerConfig::default())
    }

    fn start_with(fake: Arc<FakeRuntime>, store: Store, config: RunnerConfig) -> Self {
        let (runner, handle) = Runner::new(fake.clone(), store.clone(), config).expect("runner");
        let task = tokio::spawn(runner.run());
        Harness {
            fake,
            handle,
            store,
            seen: Vec::new(),
            _runner: AbortOnDrop(task),
        }
    }

    fn new() -> Self {
        Self::start(
            Arc::new(FakeRuntime::default()),
            Store::temporary().expect("store"),
        )
    }

    async fn apply(&self, set: pb::AssignmentSet) {
        self.handle.apply(set).await.expect("apply");
    }

    fn drain(&mut self) {
        for report in self.handle.board().take_pending() {
            let read = TaskReport::try_from(report.clone());
            self.seen.push(
                read.unwrap_or_else(|e| panic!("a report the server cannot read: {e}: {report:?}")),
            );
        }
    }

    /// The first report of `task` (seen so far or still to come) that
    /// satisfies `pred`. With the clock paused, a report that never comes
    /// ends the test at once rather than hanging it.
    async fn until(
        &mut self,
        task: &str,
        what: &str,
        pred: impl Fn(&TaskReport) -> bool,
    ) -> TaskReport {
        loop {
            self.drain();
            if let Some(r) = self.seen.iter().find(|r| r.task_id == task && pred(r)) {
                return r.clone();
            }
            if tokio::time::timeout(Duration::from_secs(3600), self.handle.board().changed())
                .await
                .is_err()
            {
                panic!("{task}: no report {what}; seen: {:#?}", self.seen);
            }
        }
    }

    async fn until_status(&mut self, task: &str, status: TaskStatus) -> TaskReport {
        self.until(task, status.as_str(), |r| r.last_status == status)
            .await
    }

    /// Lets every actor and helper run until all are idle.
    async fn settle(&mut self) {
        tokio::time::sleep(Duration::from_secs(600)).await;
        self.drain();
    }

    /// The statuses reported for `task`, repeats folded.
    fn statuses(&self, task: &str) -> Vec<TaskStatus> {
        let mut out: Vec<TaskStatus> = Vec::new();
        for r in self.seen.iter().filter(|r| r.task_id == task) {
            if out.last() != Some(&r.last_status) {
                out.push(r.last_status);
            }
        }
        out
    }

    /// Reports of every task only ever moved forward.
    fn assert_forward_only(&self) {
        let mut last: BTreeMap<&str, TaskStatus> = BTreeMap::new();
        for r in &self.seen {
            let status = r.last_status;
            if let Some(before) = last.insert(&r.task_id, status) {
                assert!(
                    status >= before,
                    "{}: {} after {}",
                    r.task_id,
                    status.as_str(),
                    before.as_str()
                );
            }
        }
    }

    fn calls(&self) -> Vec<Call> {
        self.fake.calls()
    }
}

fn container_state<'a>(r: &'a TaskReport, name: &str) -> &'a berth_types::ContainerState {
    r.containers
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name} in {r:?}"))
}

fn position(calls: &[Call], call: &Call) -> usize {
    calls
        .iter()
        .position(|c| c == call)
        .unwrap_or_else(|| panic!("{call:?} not in {calls:?}"))
}

async fn running_web_task(h: &mut Harness, task: &str) {
    h.apply(set(1, true, vec![web_task(task)])).await;
    h.until_status(task, TaskStatus::Running).await;
}

#[tokio::test(start_paused = true)]
async fn assignment_reports_pending_then_running_in_dependency_order() {
    let mut h = Harness::new();
    let mut a = web_task("t1");
    a.overrides.push(pb::KeyValuePair {
        name: "web.env.GREETING".into(),
        value: "hi".into(),
    });
    h.apply(set(1, true, vec![a])).await;
    let running = h.until_status("t1", TaskStatus::Running).await;

    assert_eq!(h.statuses("t1"), [TaskStatus::Pending, TaskStatus::Running]);
    for name in ["web", "sidecar"] {
        let c = container_state(&running, name);
        assert_eq!(
            (c.status, c.exit_code),
            (ContainerStatus::Running, None),
            "{name}"
        );
        assert_eq!(c.health, Health::Unknown);
    }
    let web = container_id("t1", "web");
    let sidecar = container_id("t1", "sidecar");
    let calls = h.calls();
    // sidecar is listed first but depends on web.
    assert!(
        position(&calls, &Call::Start(web.clone()))
            < position(&calls, &Call::Create(sidecar.clone()))
    );
    assert!(calls.contains(&Call::Pull("web:1".into())));
    let env = h
        .fake
        .config(&web)
        .expect("web created")
        .definition
        .environment;
    assert!(
        env.iter()
            .any(|kv| kv.name == "GREETING" && kv.value == "hi"),
        "override applied: {env:?}"
    );

    // What a restarted agent would find.
    let loaded = h.store.load().expect("load");
    assert_eq!(loaded.last_sequence, 1);
    let record = loaded.tasks[0].record.clone().expect("record");
    assert_eq!(record.status, TaskStatus::Running);
    assert!(record
        .containers
        .iter()
        .all(|c| c.id.is_some() && c.started));
    h.assert_forward_only();
}

#[tokio::test(start_paused = true)]
async fn essential_exit_stops_the_other_containers() {
    let mut h = Harness::new();
    running_web_task(&mut h, "t1").await;
    let web = container_id("t1", "web");
    let sidecar = container_id("t1", "sidecar");

    h.fake.exit(&web, 3);
    let stopped = h.until_status("t1", TaskStatus::Stopped).await;

    assert_eq!(stopped.stop_code, Some(StopCode::EssentialContainerExited));
    assert_eq!(
        stopped.reason,
        "Essential container \"web\" exited with code 3"
    );
    assert_eq!(container_state(&stopped, "web").exit_code, Some(3));
    let side = container_state(&stopped, "sidecar");
    assert_eq!(
        (side.status, side.exit_code),
        (ContainerStatus::Stopped, Some(143))
    );
    assert!(h.calls().contains(&Call::Stop(sidecar.clone())));
    assert_eq!(
        h.statuses("t1"),
        [
            TaskStatus::Pending,
            TaskStatus::Running,
            TaskStatus::Stopping,
            TaskStatus::Stopped
        ]
    );
    // Kept (logs stay readable) until the server says the task is over.
    assert!(h.fake.exists(&web) && h.fake.exists(&sidecar));
    h.assert_forward_only();
}

#[tokio::test(start_paused = true)]
async fn non_essential_exit_keeps_the_task_running() {
    let mut h = Harness::new();
    running_web_task(&mut h, "t1").await;
    let sidecar = container_id("t1", "sidecar");

    h.fake.exit(&sidecar, 1);
    let report = h
        .until("t1", "with sidecar stopped", |r| {
            r.containers
                .iter()
                .any(|c| c.name == "sidecar" && c.status == ContainerStatus::Stopped)
        })
        .await;
    h.settle().await;

    assert_eq!(report.last_status, TaskStatus::Running);
    assert_eq!(container_state(&report, "sidecar").exit_code, Some(1));
    assert_eq!(
        container_state(&report, "web").status,
        ContainerStatus::Running
    );
    assert_eq!(h.handle.board().status("t1"), Some(TaskStatus::Running));
    assert!(!h.calls().iter().any(|c| matches!(c, Call::Stop(_))));
    assert_eq!(h.statuses("t1"), [TaskStatus::Pending, TaskStatus::Running]);
}

#[tokio::test(start_paused = true)]
async fn failed_pull_fails_the_task_to_start_and_stops_what_started() {
    let mut h = Harness::new();
    h.fake.missing_image("missing:1");
    let a = assignment(
        "t1",
        vec![
            container("web", "web:1", true),
            depends(container("db", "missing:1", true), "web", "START"),
        ],
    );
    h.apply(set(1, true, vec![a])).await;
    let stopped = h.until_status("t1", TaskStatus::Stopped).await;

    assert_eq!(stopped.stop_code, Some(StopCode::TaskFailedToStart));
    assert!(
        stopped.reason.contains("CannotPullContainerError")
            && stopped.reason.contains("missing:1")
            && stopped.reason.contains("manifest unknown"),
        "{}",
        stopped.reason
    );
    assert!(!h.statuses("t1").contains(&TaskStatus::Running));
    assert!(h.calls().contains(&Call::Stop(container_id("t1", "web"))));
    assert!(!h.calls().contains(&Call::Create(container_id("t1", "db"))));
    h.assert_forward_only();
}

#[tokio::test(start_paused = true)]
async fn failed_start_fails_the_task_to_start() {
    let mut h = Harness::new();
    h.fake.failing_start("web");
    h.apply(set(
        1,
        true,
        vec![assignment("t1", vec![container("web", "web:1", true)])],
    ))
    .await;
    let stopped = h.until_status("t1", TaskStatus::Stopped).await;
    assert_eq!(stopped.stop_code, Some(StopCode::TaskFailedToStart));
    assert!(
        stopped.reason.contains("CannotStartContainerError")
            && stopped.reason.contains("no such file"),
        "{}",
        stopped.reason
    );
    // web was created: it is stopped (STOPPING) before the task is STOPPED.
    assert_eq!(
        h.statuses("t1"),
        [
            TaskStatus::Pending,
            TaskStatus::Stopping,
            TaskStatus::Stopped
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn desired_stopped_stops_then_final_status_removes_and_forgets() {
    let mut h = Harness::new();
    running_web_task(&mut h, "t1").await;
    let web = container_id("t1", "web");
    let sidecar = container_id("t1", "sidecar");

    let mut stop = web_task("t1");
    stop.desired_status = DesiredStatus::Stopped.as_str().into();
    stop.last_status = TaskStatus::Running.as_str().into();
    h.apply(set(2, false, vec![stop.clone()])).await;
    let stopped = h.until_status("t1", TaskStatus::Stopped).await;

    assert_eq!(
        h.statuses("t1"),
        [
            TaskStatus::Pending,
            TaskStatus::Running,
            TaskStatus::Stopping,
            TaskStatus::Stopped
        ]
    );
    assert_eq!(stopped.stop_code, None, "the server knows why it asked");
    assert!(h.calls().contains(&Call::Stop(web.clone())));
    assert!(h.calls().contains(&Call::Stop(sidecar.clone())));
    assert!(h.fake.exists(&web), "not removed before the server's word");

    stop.last_status = TaskStatus::Stopped.as_str().into();
    h.apply(set(3, false, vec![stop])).await;
    h.settle().await;

    assert!(!h.fake.exists(&web) && !h.fake.exists(&sidecar));
    assert!(h.calls().contains(&Call::Remove(web)));
    assert_eq!(h.handle.board().status("t1"), None);
    let loaded = h.store.load().expect("load");
    assert!(loaded.tasks.is_empty());
    assert_eq!(loaded.last_sequence, 3);
    h.assert_forward_only();
}

#[tokio::test(start_paused = true)]
async fn a_stopped_tasks_containers_are_kept_for_the_cleanup_wait() {
    let config = RunnerConfig {
        cleanup_wait: Duration::from_secs(1800),
        ..RunnerConfig::default()
    };
    let mut h = Harness::start_with(
        Arc::new(FakeRuntime::default()),
        Store::temporary().expect("store"),
        config,
    );
    running_web_task(&mut h, "t1").await;
    let web = container_id("t1", "web");
    let mut stop = web_task("t1");
    stop.desired_status = DesiredStatus::Stopped.as_str().into();
    stop.last_status = TaskStatus::Stopped.as_str().into();
    h.apply(set(2, false, vec![stop])).await;
    h.until_status("t1", TaskStatus::Stopped).await;
    // Its network went with the last container, before STOPPED was
    // reported (the control plane frees the host ports then).
    let calls = h.calls();
    assert!(
        position(&calls, &Call::TaskStopped("t1".into()))
            > position(&calls, &Call::Stop(web.clone())),
        "{calls:?}"
    );
    // Ten minutes on: still there (and its logs readable through the agent).
    h.settle().await;
    assert!(h.fake.exists(&web), "removed before the cleanup wait");
    assert!(h.handle.board().status("t1").is_some());
    // Past the wait: removed and forgotten.
    tokio::time::sleep(Duration::from_secs(1300)).await;
    h.settle().await;
    assert!(!h.fake.exists(&web));
    assert_eq!(h.handle.board().status("t1"), None);
}

#[tokio::test(start_paused = true)]
async fn complete_set_without_a_task_removes_and_forgets_it() {
    let mut h = Harness::new();
    h.apply(set(1, true, vec![web_task("a"), web_task("b")]))
        .await;
    h.until_status("a", TaskStatus::Running).await;
    h.until_status("b", TaskStatus::Running).await;

    h.apply(set(2, true, vec![web_task("b")])).await;
    h.settle().await;

    for name in ["web", "sidecar"] {
        assert!(
            !h.fake.exists(&container_id("a", name)),
            "a's {name} removed"
        );
        assert!(h.fake.exists(&container_id("b", name)), "b's {name} kept");
        assert!(!h.calls().contains(&Call::Stop(container_id("b", name))));
    }
    assert_eq!(h.handle.board().task_ids(), ["b"]);
    let loaded = h.store.load().expect("load");
    let ids: Vec<&str> = loaded
        .tasks
        .iter()
        .map(|t| t.assignment.task_id.as_str())
        .collect();
    assert_eq!(ids, ["b"]);
}

#[tokio::test(start_paused = true)]
async fn stop_during_a_slow_pull_cancels_it() {
    let mut h = Harness::new();
    h.fake.hold_pulls();
    h.apply(set(1, true, vec![web_task("t1")])).await;
    h.until_status("t1", TaskStatus::Pending).await;

    let mut stop = web_task("t1");
    stop.desired_status = DesiredStatus::Stopped.as_str().into();
    h.apply(set(2, false, vec![stop])).await;
    h.until_status("t1", TaskStatus::Stopped).await;
    h.fake.release_pulls();
    h.settle().await;

    assert!(!h
        .calls()
        .iter()
        .any(|c| matches!(c, Call::Create(_) | Call::Start(_))));
    assert_eq!(
        h.statuses("t1"),
        [
            TaskStatus::Pending,
            TaskStatus::Stopping,
            TaskStatus::Stopped
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_pending_task_says_it_is_pulling_until_its_container_runs() {
    let mut h = Harness::new();
    h.fake.hold_pulls();
    h.apply(set(1, true, vec![web_task("t1")])).await;
    let pulling = h
        .until("t1", "a pull in progress", |r| {
            r.containers
                .iter()
                .any(|c| c.reason.contains("pulling image"))
        })
        .await;
    assert_eq!(pulling.last_status, TaskStatus::Pending);
    h.fake.release_pulls();
    let running = h.until_status("t1", TaskStatus::Running).await;
    assert!(
        running.containers.iter().all(|c| c.reason.is_empty()),
        "{running:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn healthy_and_success_dependencies() {
    let mut h = Harness::new();
    let mut web = container("web", "web:1", true);
    web.health_check = Some(pb::HealthCheck {
        command: vec!["CMD".into(), "/check".into()],
        interval: 5,
        ..Default::default()
    });
    let healthy = assignment(
        "h",
        vec![
            web,
            depends(container("proxy", "proxy:1", true), "web", "HEALTHY"),
        ],
    );
    let success = assignment(
        "s",
        vec![
            container("init", "init:1", false),
            depends(container("app", "app:1", true), "init", "SUCCESS"),
        ],
    );
    h.apply(set(1, true, vec![healthy, success])).await;

    // proxy waits for web's first successful check.
    let running = h.until_status("h", TaskStatus::Running).await;
    assert_eq!(container_state(&running, "web").health, Health::Healthy);
    let calls = h.calls();
    assert!(
        position(&calls, &Call::Start(container_id("h", "web")))
            < position(&calls, &Call::Create(container_id("h", "proxy")))
    );

    // app never starts: init fails.
    h.until("s", "init running", |r| {
        container_state(r, "init").status == ContainerStatus::Running
    })
    .await;
    assert!(!h.calls().contains(&Call::Create(container_id("s", "app"))));
    h.fake.exit(&container_id("s", "init"), 1);
    let stopped = h.until_status("s", TaskStatus::Stopped).await;
    assert_eq!(stopped.stop_code, Some(StopCode::TaskFailedToStart));
    assert!(
        stopped.reason.contains("exited with code 1"),
        "{}",
        stopped.reason
    );
    assert!(!h.calls().contains(&Call::Create(container_id("s", "app"))));
}

fn stored(
    store: &Store,
    a: &pb::Assignment,
    status: TaskStatus,
    containers: &[(&str, Option<&str>, ContainerStatus)],
) {
    store.put_assignment(a).expect("put");
    let record = TaskRecord {
        status,
        containers: containers
            .iter()
            .map(|(name, id, status)| ContainerRecord {
                name: name.to_string(),
                id: id.map(str::to_string),
                status: *status,
                exit_code: None,
                reason: String::new(),
                health: Health::Unknown,
                started: *status != ContainerStatus::Pending,
                restart_count: 0,
                started_at_ms: None,
            })
            .collect(),
        reason: String::new(),
        stop_code: None,
        ip: None,
    };
    store.put_record(&a.task_id, &record).expect("record");
}

fn exit(code: u32) -> ContainerState {
    ContainerState::Stopped(ExitStatus {
        code,
        oom_killed: false,
        exited_at: None,
    })
}

#[tokio::test(start_paused = true)]
async fn restart_reattaches_running_containers_and_collects_exits() {
    let store = Store::temporary().expect("store");
    let fake = Arc::new(FakeRuntime::default());
    // Task a: web still runs; its sidecar exited (code 2) while the agent
    // was away. Task b: its only, essential, container exited with 7.
    let a_web = fake.insert("a", "web", ContainerState::Running { pid: 10 });
    let a_side = fake.insert("a", "sidecar", exit(2));
    let b_job = fake.insert("b", "job", exit(7));
    let ghost = fake.insert("ghost", "x", ContainerState::Running { pid: 11 });
    stored(
        &store,
        &web_task("a"),
        TaskStatus::Running,
        &[
            ("sidecar", Some(&a_side), ContainerStatus::Running),
            ("web", Some(&a_web), ContainerStatus::Running),
        ],
    );
    stored(
        &store,
        &assignment("b", vec![container("job", "job:1", true)]),
        TaskStatus::Running,
        &[("job", Some(&b_job), ContainerStatus::Running)],
    );
    store.set_last_sequence(9).expect("seq");

    let mut h = Harness::start(fake.clone(), store);
    // Before the runtime is even asked, the board knows what the store does.
    assert_eq!(h.handle.board().status("a"), Some(TaskStatus::Running));
    assert_eq!(h.handle.last_sequence(), 9);

    let b = h.until_status("b", TaskStatus::Stopped).await;
    assert_eq!(b.stop_code, Some(StopCode::EssentialContainerExited));
    assert_eq!(container_state(&b, "job").exit_code, Some(7));
    assert_eq!(b.reason, "Essential container \"job\" exited with code 7");

    let a = h
        .until("a", "with the sidecar's exit", |r| {
            container_state(r, "sidecar").status == ContainerStatus::Stopped
        })
        .await;
    h.settle().await;
    assert_eq!(a.last_status, TaskStatus::Running);
    assert_eq!(container_state(&a, "sidecar").exit_code, Some(2));
    assert_eq!(h.handle.board().status("a"), Some(TaskStatus::Running));
    // Re-attached, not restarted, not killed; the unknown container went.
    let calls = h.calls();
    assert!(
        !calls
            .iter()
            .any(|c| matches!(c, Call::Create(_) | Call::Start(_))),
        "{calls:?}"
    );
    assert!(!calls.contains(&Call::Stop(a_web.clone())));
    assert_eq!(
        fake.state(&a_web),
        Some(ContainerState::Running { pid: 10 })
    );
    assert!(calls.contains(&Call::Remove(ghost.clone())) && !fake.exists(&ghost));

    // The re-attached wait sees web's exit.
    fake.exit(&a_web, 0);
    let a = h.until_status("a", TaskStatus::Stopped).await;
    assert_eq!(a.reason, "Essential container \"web\" exited with code 0");
    h.assert_forward_only();
}

#[tokio::test(start_paused = true)]
async fn restart_resumes_a_task_that_was_still_starting() {
    let store = Store::temporary().expect("store");
    let fake = Arc::new(FakeRuntime::default());
    // The agent died after creating web and before starting it; sidecar
    // was never created. The record did not even get web's id.
    let web = fake.insert("t1", "web", ContainerState::Created);
    stored(
        &store,
        &web_task("t1"),
        TaskStatus::Pending,
        &[
            ("sidecar", None, ContainerStatus::Pending),
            ("web", None, ContainerStatus::Pending),
        ],
    );
    let mut h = Harness::start(fake, store);
    h.until_status("t1", TaskStatus::Running).await;
    let calls = h.calls();
    assert!(
        !calls.contains(&Call::Create(web.clone())),
        "reused: {calls:?}"
    );
    assert!(calls.contains(&Call::Start(web)));
    assert!(calls.contains(&Call::Create(container_id("t1", "sidecar"))));
}

#[tokio::test(start_paused = true)]
async fn sets_wait_for_the_runtime_but_are_acknowledged_at_once() {
    let fake = Arc::new(FakeRuntime::default());
    fake.fail_list(3);
    let store = Store::temporary().expect("store");
    let mut h = Harness::start(fake, store);
    // Stored and answered while the runtime cannot be listed.
    h.apply(set(4, true, vec![web_task("t1")])).await;
    assert_eq!(h.store.last_sequence().expect("seq"), 4);
    assert!(h.store.load().expect("load").tasks.len() == 1);
    h.until_status("t1", TaskStatus::Running).await;
}

#[tokio::test(start_paused = true)]
async fn stopped_assignment_for_an_unknown_task_is_reported_stopped() {
    let mut h = Harness::new();
    let mut a = web_task("t1");
    a.desired_status = DesiredStatus::Stopped.as_str().into();
    h.apply(set(1, true, vec![a])).await;
    h.until_status("t1", TaskStatus::Stopped).await;
    assert_eq!(h.statuses("t1"), [TaskStatus::Stopped]);
    assert!(h.calls().is_empty());

    // Already over on the server and never seen here: nothing at all.
    let mut done = web_task("t2");
    done.desired_status = DesiredStatus::Stopped.as_str().into();
    done.last_status = TaskStatus::Stopped.as_str().into();
    h.apply(set(2, false, vec![done])).await;
    h.settle().await;
    assert_eq!(h.handle.board().status("t2"), None);
    assert!(!h
        .store
        .load()
        .expect("load")
        .tasks
        .iter()
        .any(|t| t.assignment.task_id == "t2"));
}

#[tokio::test(start_paused = true)]
async fn stopped_reports_are_recorded_once_sent() {
    let mut h = Harness::new();
    running_web_task(&mut h, "t1").await;
    h.fake.exit(&container_id("t1", "web"), 0);
    let stopped = h.until_status("t1", TaskStatus::Stopped).await;
    assert!(!h.store.load().expect("load").tasks[0].stopped_reported);
    h.handle.note_sent(&[pb::TaskReport::from(&stopped)]);
    assert!(h.store.load().expect("load").tasks[0].stopped_reported);
}

#[tokio::test(start_paused = true)]
async fn restart_fails_a_start_whose_created_container_vanished() {
    let store = Store::temporary().expect("store");
    let fake = Arc::new(FakeRuntime::default());
    let web = container_id("t1", "web");
    stored(
        &store,
        &assignment("t1", vec![container("web", "web:1", true)]),
        TaskStatus::Pending,
        &[("web", Some(&web), ContainerStatus::Pending)],
    );
    let mut h = Harness::start(fake, store);
    let stopped = h.until_status("t1", TaskStatus::Stopped).await;
    assert_eq!(stopped.stop_code, Some(StopCode::TaskFailedToStart));
    assert!(
        stopped.reason.contains("never started"),
        "{}",
        stopped.reason
    );
    assert!(!h
        .calls()
        .iter()
        .any(|c| matches!(c, Call::Create(_) | Call::Start(_))));
}

// ------------------------------------------------------------ restart policy

use super::fake::restarting;
use super::task::restart_decision;
use berth_types::RestartPolicy;

/// A one-container task whose essential `web` has a restart policy.
fn restarting_task(task_id: &str, period_secs: u32, ignored: &[i32]) -> pb::Assignment {
    assignment(
        task_id,
        vec![restarting(
            container("web", "web:1", true),
            period_secs,
            ignored,
        )],
    )
}

fn restarts(h: &Harness) -> usize {
    h.calls()
        .iter()
        .filter(|c| matches!(c, Call::Restart(_)))
        .count()
}

async fn pass(secs: u64) {
    tokio::time::sleep(Duration::from_secs(secs)).await;
}

#[test]
fn restart_decision_follows_the_policy() {
    let policy = RestartPolicy {
        enabled: true,
        ignored_exit_codes: vec![0],
        restart_attempt_period_secs: 300,
    };
    let min = Duration::from_secs(60);
    let long = Some(Duration::from_secs(300));
    assert_eq!(restart_decision(Some(&policy), Some(1), long, min), Ok(()));
    assert!(restart_decision(Some(&policy), Some(0), long, min).is_err());
    assert!(restart_decision(Some(&policy), None, long, min).is_err());
    assert!(restart_decision(Some(&policy), Some(1), None, min).is_err());
    assert!(restart_decision(Some(&policy), Some(1), Some(Duration::from_secs(299)), min).is_err());
    assert!(restart_decision(None, Some(1), long, min).is_err());
    let off = RestartPolicy {
        enabled: false,
        ..policy.clone()
    };
    assert!(restart_decision(Some(&off), Some(1), long, min).is_err());
    // A period below the agent's floor is raised to it.
    let short = RestartPolicy {
        restart_attempt_period_secs: 10,
        ..policy
    };
    let thirty = Some(Duration::from_secs(30));
    assert!(restart_decision(Some(&short), Some(1), thirty, min).is_err());
    assert_eq!(
        restart_decision(Some(&short), Some(1), thirty, Duration::from_secs(1)),
        Ok(())
    );
}

#[tokio::test(start_paused = true)]
async fn an_eligible_exit_restarts_the_container_in_place() {
    let mut h = Harness::new();
    h.apply(set(1, true, vec![restarting_task("t1", 300, &[0])]))
        .await;
    h.until_status("t1", TaskStatus::Running).await;
    let web = container_id("t1", "web");

    pass(301).await;
    h.fake.exit(&web, 3);
    let report = h
        .until("t1", "web restarted once", |r| {
            let c = container_state(r, "web");
            c.restart_count == 1 && c.status == ContainerStatus::Running
        })
        .await;
    assert_eq!(report.last_status, TaskStatus::Running);
    let c = container_state(&report, "web");
    assert_eq!(c.exit_code, None, "the new process has not exited");
    assert_eq!(c.reason, "restarted after exit code 3");
    // The same container, a new process: no new create, no stop, no STOPPED.
    assert_eq!(
        h.fake.state(&web),
        Some(ContainerState::Running { pid: 1001 })
    );
    let calls = h.calls();
    assert_eq!(
        calls
            .iter()
            .filter(|c| matches!(c, Call::Create(_)))
            .count(),
        1
    );
    assert!(calls.contains(&Call::Restart(web.clone())));
    assert!(!calls.iter().any(|c| matches!(c, Call::Stop(_))));
    assert_eq!(h.handle.board().status("t1"), Some(TaskStatus::Running));
    // Counted on disk.
    let record = h.store.load().expect("load").tasks[0]
        .record
        .clone()
        .expect("record");
    assert_eq!(record.containers[0].restart_count, 1);
    assert!(record.containers[0].started_at_ms.is_some());

    // The period counts from the restart: a second long run restarts again,
    h.settle().await;
    pass(301).await;
    h.fake.exit(&web, 3);
    h.until("t1", "web restarted twice", |r| {
        container_state(r, "web").restart_count == 2
    })
    .await;
    // but a crash right after a restart is a crash loop: the task stops as
    // it always did.
    h.fake.exit(&web, 3);
    let stopped = h.until_status("t1", TaskStatus::Stopped).await;
    assert_eq!(stopped.stop_code, Some(StopCode::EssentialContainerExited));
    assert_eq!(
        stopped.reason,
        "Essential container \"web\" exited with code 3"
    );
    let c = container_state(&stopped, "web");
    assert_eq!((c.restart_count, c.exit_code), (2, Some(3)));
    assert_eq!(restarts(&h), 2);
    // Never STOPPING or STOPPED until the exit that was not restarted.
    assert_eq!(
        h.statuses("t1"),
        [
            TaskStatus::Pending,
            TaskStatus::Running,
            TaskStatus::Stopped
        ]
    );
    h.assert_forward_only();
}

#[tokio::test(start_paused = true)]
async fn an_ignored_exit_code_is_not_restarted() {
    let mut h = Harness::new();
    h.apply(set(1, true, vec![restarting_task("t1", 60, &[0, 143])]))
        .await;
    h.until_status("t1", TaskStatus::Running).await;
    pass(3600).await;
    h.fake.exit(&container_id("t1", "web"), 0);
    let stopped = h.until_status("t1", TaskStatus::Stopped).await;
    assert_eq!(stopped.stop_code, Some(StopCode::EssentialContainerExited));
    assert_eq!(container_state(&stopped, "web").restart_count, 0);
    assert_eq!(restarts(&h), 0);
}

#[tokio::test(start_paused = true)]
async fn an_exit_before_the_attempt_period_stops_the_task_as_before() {
    let mut h = Harness::new();
    h.apply(set(1, true, vec![restarting_task("t1", 300, &[])]))
        .await;
    h.until_status("t1", TaskStatus::Running).await;
    pass(299).await;
    h.fake.exit(&container_id("t1", "web"), 1);
    let stopped = h.until_status("t1", TaskStatus::Stopped).await;
    assert_eq!(stopped.stop_code, Some(StopCode::EssentialContainerExited));
    assert_eq!(
        stopped.reason,
        "Essential container \"web\" exited with code 1"
    );
    assert_eq!(restarts(&h), 0);

    // A period under the agent's floor (60 s by default) is raised to it.
    h.apply(set(2, false, vec![restarting_task("t2", 10, &[])]))
        .await;
    h.until_status("t2", TaskStatus::Running).await;
    pass(30).await;
    h.fake.exit(&container_id("t2", "web"), 1);
    h.until_status("t2", TaskStatus::Stopped).await;
    assert_eq!(restarts(&h), 0);
}

#[tokio::test(start_paused = true)]
async fn a_lower_floor_lets_a_short_attempt_period_through() {
    let config = RunnerConfig {
        min_restart_attempt_period: Duration::from_secs(1),
        ..RunnerConfig::default()
    };
    let mut h = Harness::start_with(
        Arc::new(FakeRuntime::default()),
        Store::temporary().expect("store"),
        config,
    );
    h.apply(set(1, true, vec![restarting_task("t1", 10, &[])]))
        .await;
    h.until_status("t1", TaskStatus::Running).await;
    pass(30).await;
    h.fake.exit(&container_id("t1", "web"), 1);
    h.until("t1", "web restarted", |r| {
        container_state(r, "web").restart_count == 1
    })
    .await;
    assert_eq!(restarts(&h), 1);
}

#[tokio::test(start_paused = true)]
async fn no_restart_once_the_task_is_to_stop() {
    let mut h = Harness::new();
    let a = restarting_task("t1", 60, &[]);
    let web = container_id("t1", "web");
    h.apply(set(1, true, vec![a.clone()])).await;
    h.until_status("t1", TaskStatus::Running).await;
    pass(120).await;
    // The server wants it stopped; web takes its SIGTERM and exits (143,
    // not ignored, long after the period) before the stop call returns.
    h.fake.hold_stops();
    let mut stop = a;
    stop.desired_status = "STOPPED".into();
    stop.last_status = "RUNNING".into();
    h.apply(set(2, false, vec![stop])).await;
    h.until_status("t1", TaskStatus::Stopping).await;
    h.fake.exit(&web, 143);
    h.settle().await;
    assert_eq!(restarts(&h), 0);
    h.fake.release();
    let stopped = h.until_status("t1", TaskStatus::Stopped).await;
    h.settle().await;
    assert_eq!(stopped.stop_code, None);
    assert_eq!(container_state(&stopped, "web").exit_code, Some(143));
    assert_eq!(restarts(&h), 0);

    // Nor for a task the server no longer assigns here.
    h.apply(set(3, true, vec![restarting_task("t2", 60, &[])]))
        .await;
    h.until_status("t2", TaskStatus::Running).await;
    pass(120).await;
    h.apply(set(4, true, vec![])).await;
    h.settle().await;
    assert_eq!(h.handle.board().status("t2"), None);
    assert_eq!(restarts(&h), 0);
}

#[tokio::test(start_paused = true)]
async fn a_stop_during_a_restart_abandons_it() {
    let mut h = Harness::new();
    let a = restarting_task("t1", 60, &[]);
    let web = container_id("t1", "web");
    h.apply(set(1, true, vec![a.clone()])).await;
    h.until_status("t1", TaskStatus::Running).await;
    pass(61).await;
    h.fake.hold_restarts();
    h.fake.exit(&web, 3);
    // Restarting: PENDING, with the exit that started it; the task RUNNING.
    let restarting = h
        .until("t1", "web restarting", |r| {
            container_state(r, "web").status == ContainerStatus::Pending
        })
        .await;
    assert_eq!(restarting.last_status, TaskStatus::Running);
    let c = container_state(&restarting, "web");
    assert_eq!(c.exit_code, Some(3));
    assert_eq!(c.reason, "exited; being restarted by its restart policy");

    let mut stop = a;
    stop.desired_status = "STOPPED".into();
    stop.last_status = "RUNNING".into();
    h.apply(set(2, false, vec![stop])).await;
    let stopped = h.until_status("t1", TaskStatus::Stopped).await;
    h.fake.release();
    h.settle().await;
    let c = container_state(&stopped, "web");
    assert_eq!((c.status.as_str(), c.restart_count), ("STOPPED", 0));
    // The abandoned restart never started a process.
    assert!(matches!(
        h.fake.state(&web),
        Some(ContainerState::Stopped(_))
    ));
    assert_eq!(h.handle.board().status("t1"), Some(TaskStatus::Stopped));
    h.assert_forward_only();
}

#[tokio::test(start_paused = true)]
async fn a_non_essential_container_restarts_too() {
    let mut h = Harness::new();
    let a = assignment(
        "t1",
        vec![
            container("web", "web:1", true),
            restarting(container("sidecar", "side:1", false), 60, &[]),
        ],
    );
    h.apply(set(1, true, vec![a])).await;
    h.until_status("t1", TaskStatus::Running).await;
    pass(61).await;
    h.fake.exit(&container_id("t1", "sidecar"), 0);
    let report = h
        .until("t1", "sidecar restarted", |r| {
            container_state(r, "sidecar").restart_count == 1
        })
        .await;
    assert_eq!(
        container_state(&report, "sidecar").status,
        ContainerStatus::Running
    );
    assert_eq!(container_state(&report, "web").restart_count, 0);
    assert!(!h.calls().iter().any(|c| matches!(c, Call::Stop(_))));
}

#[tokio::test(start_paused = true)]
async fn a_failed_restart_stops_the_task_as_the_exit_would_have() {
    let mut h = Harness::new();
    h.fake.failing_restart("web");
    h.apply(set(1, true, vec![restarting_task("t1", 60, &[])]))
        .await;
    h.until_status("t1", TaskStatus::Running).await;
    pass(61).await;
    h.fake.exit(&container_id("t1", "web"), 3);
    let stopped = h.until_status("t1", TaskStatus::Stopped).await;
    assert_eq!(stopped.stop_code, Some(StopCode::EssentialContainerExited));
    assert!(
        stopped
            .reason
            .starts_with("Essential container \"web\" exited with code 3: ")
            && stopped.reason.contains("could not be restarted"),
        "{}",
        stopped.reason
    );
    let c = container_state(&stopped, "web");
    assert_eq!((c.restart_count, c.exit_code), (0, Some(3)));
    assert_eq!(
        h.statuses("t1"),
        [
            TaskStatus::Pending,
            TaskStatus::Running,
            TaskStatus::Stopped
        ]
    );
    h.assert_forward_only();
}

#[tokio::test(start_paused = true)]
async fn an_agent_restart_keeps_the_restart_count() {
    let fake = Arc::new(FakeRuntime::default());
    let store = Store::temporary().expect("store");
    let web = container_id("t1", "web");
    {
        let mut h = Harness::start(fake.clone(), store.clone());
        h.apply(set(1, true, vec![restarting_task("t1", 60, &[])]))
            .await;
        h.until_status("t1", TaskStatus::Running).await;
        pass(61).await;
        fake.exit(&web, 3);
        h.until("t1", "restarted", |r| {
            container_state(r, "web").restart_count == 1
        })
        .await;
        // The agent goes away (its actors with it).
    }
    let mut h = Harness::start(fake.clone(), store);
    // Known before the runtime is even asked: what a hello would say.
    let seeded = h.handle.board().view("t1").expect("view").report;
    let web_state = seeded
        .containers
        .iter()
        .find(|c| c.name == "web")
        .expect("web");
    assert_eq!(web_state.restart_count, 1);
    h.settle().await;
    assert_eq!(restarts(&h), 1, "re-attached, not restarted again");
    pass(61).await;
    fake.exit(&web, 3);
    h.until("t1", "restarted again", |r| {
        container_state(r, "web").restart_count == 2
    })
    .await;
}

/// A stored one-container task whose essential `web` has a restart policy,
/// with its record as the last agent left it.
fn stored_restarting(
    store: &Store,
    task: &str,
    status: ContainerStatus,
    started: bool,
    started_at_ms: Option<i64>,
) {
    let a = restarting_task(task, 60, &[]);
    store.put_assignment(&a).expect("put");
    let record = TaskRecord {
        status: TaskStatus::Running,
        containers: vec![ContainerRecord {
            name: "web".into(),
            id: Some(container_id(task, "web")),
            status,
            exit_code: None,
            reason: String::new(),
            health: Health::Unknown,
            started,
            restart_count: 4,
            started_at_ms,
        }],
        reason: String::new(),
        stop_code: None,
        ip: None,
    };
    store.put_record(task, &record).expect("record");
}

fn wall_ms_ago(secs: i64) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970");
    i64::try_from(now.as_millis()).expect("fits") - secs * 1000
}

#[tokio::test(start_paused = true)]
async fn exits_while_the_agent_was_away_follow_the_policy() {
    let store = Store::temporary().expect("store");
    let fake = Arc::new(FakeRuntime::default());
    let exited_now = ContainerState::Stopped(ExitStatus {
        code: 3,
        oom_killed: false,
        exited_at: Some(std::time::SystemTime::now()),
    });
    // "long" ran 400 s before it exited; "short" 10 s.
    fake.insert("long", "web", exited_now);
    fake.insert("short", "web", exited_now);
    stored_restarting(
        &store,
        "long",
        ContainerStatus::Running,
        true,
        Some(wall_ms_ago(400)),
    );
    stored_restarting(
        &store,
        "short",
        ContainerStatus::Running,
        true,
        Some(wall_ms_ago(10)),
    );
    let mut h = Harness::start(fake.clone(), store);

    let long = h
        .until("long", "restarted", |r| {
            container_state(r, "web").restart_count == 5
        })
        .await;
    assert_eq!(long.last_status, TaskStatus::Running);
    assert_eq!(
        container_state(&long, "web").status,
        ContainerStatus::Running
    );
    let short = h.until_status("short", TaskStatus::Stopped).await;
    assert_eq!(short.stop_code, Some(StopCode::EssentialContainerExited));
    assert_eq!(container_state(&short, "web").restart_count, 4);
    assert!(h
        .calls()
        .contains(&Call::Restart(container_id("long", "web"))));
    assert!(!h
        .calls()
        .contains(&Call::Restart(container_id("short", "web"))));
    assert!(!h.statuses("long").contains(&TaskStatus::Stopped));
}

#[tokio::test(start_paused = true)]
async fn a_restart_cut_short_by_the_agent_going_away_is_finished() {
    let store = Store::temporary().expect("store");
    let fake = Arc::new(FakeRuntime::default());
    // "half": the old process was collected, the new one never started.
    // "done": the new process started, but its record was not written.
    fake.insert("half", "web", ContainerState::Unknown);
    fake.insert("done", "web", ContainerState::Running { pid: 77 });
    for task in ["half", "done"] {
        stored_restarting(
            &store,
            task,
            ContainerStatus::Pending,
            true,
            Some(wall_ms_ago(400)),
        );
    }
    let mut h = Harness::start(fake.clone(), store);
    for task in ["half", "done"] {
        let r = h
            .until(task, "restarted", |r| {
                let c = container_state(r, "web");
                c.restart_count == 5 && c.status == ContainerStatus::Running
            })
            .await;
        assert_eq!(r.last_status, TaskStatus::Running, "{task}");
    }
    // "done" started just now as far as anyone knows: a quick exit is not
    // restarted.
    fake.exit(&container_id("done", "web"), 3);
    h.until_status("done", TaskStatus::Stopped).await;
    h.settle().await;
    let calls = h.calls();
    assert!(calls.contains(&Call::Restart(container_id("half", "web"))));
    assert!(!calls.contains(&Call::Restart(container_id("done", "web"))));
    assert!(!h.statuses("half").contains(&TaskStatus::Stopped));
    assert_eq!(
        fake.state(&container_id("half", "web")),
        Some(ContainerState::Running { pid: 1001 })
    );
}

/// The ports the control plane placed reach the runtime with every
/// container of the task, in bridge mode as they came.
#[tokio::test(start_paused = true)]
async fn network_bindings_reach_the_runtime() {
    let mut h = Harness::new();
    let mut a = assignment("t1", vec![container("web", "web:1", true)]);
    if let Some(spec) = a.task_definition.as_mut().and_then(|td| td.spec.as_mut()) {
        spec.network_mode = "bridge".into();
    }
    a.network_bindings = vec![pb::NetworkBinding {
        container_name: "web".into(),
        container_port: 8080,
        host_port: 32768,
        protocol: "tcp".into(),
    }];
    h.apply(set(1, true, vec![a])).await;
    h.until_status("t1", TaskStatus::Running).await;
    let config = h
        .fake
        .config(&container_id("t1", "web"))
        .expect("web created");
    assert_eq!(config.network_mode, berth_types::NetworkMode::Bridge);
    assert_eq!(
        config.network_bindings,
        [berth_types::NetworkBinding {
            container_name: "web".into(),
            container_port: 8080,
            host_port: 32768,
            protocol: berth_types::Protocol::Tcp,
        }]
    );
}

/// A binding the agent cannot read fails the task to start: a task whose
/// port went unpublished would look healthy and serve nobody.
#[tokio::test(start_paused = true)]
async fn an_unreadable_network_binding_fails_the_task_to_start() {
    let mut h = Harness::new();
    let mut a = assignment("t1", vec![container("web", "web:1", true)]);
    a.network_bindings = vec![pb::NetworkBinding {
        container_name: "web".into(),
        container_port: 8080,
        host_port: 32768,
        protocol: "sctp".into(),
    }];
    h.apply(set(1, true, vec![a])).await;
    let stopped = h.until_status("t1", TaskStatus::Stopped).await;
    assert_eq!(stopped.stop_code, Some(StopCode::TaskFailedToStart));
    assert!(
        stopped.reason.contains("network binding"),
        "{}",
        stopped.reason
    );
    assert!(h.calls().is_empty(), "nothing created: {:?}", h.calls());
}

// ------------------------------------------------------------ task addresses

/// `a` in network mode `mode` (its name on the wire).
fn in_network_mode(mut a: pb::Assignment, mode: &str) -> pb::Assignment {
    if let Some(spec) = a.task_definition.as_mut().and_then(|td| td.spec.as_mut()) {
        spec.network_mode = mode.into();
    }
    a
}

/// Bridge- and task-mode (`awsvpc`) tasks report their address from the
/// first report after their network exists (the first container's create)
/// to the last, STOPPED included; reports from before carry none, and a
/// host-mode task's never do.
#[tokio::test(start_paused = true)]
async fn tasks_with_a_network_of_their_own_report_its_address_once_it_exists() {
    let mut h = Harness::new();
    h.fake.hold_pulls();
    h.apply(set(
        1,
        true,
        vec![
            in_network_mode(web_task("b"), "bridge"),
            in_network_mode(web_task("t"), "awsvpc"),
            web_task("h"),
        ],
    ))
    .await;
    for task in ["b", "t", "h"] {
        let pending = h.until_status(task, TaskStatus::Pending).await;
        assert_eq!(pending.ip, None, "{task}: no network yet");
    }
    h.fake.release_pulls();
    let mut addresses = Vec::new();
    for task in ["b", "t"] {
        let running = h.until_status(task, TaskStatus::Running).await;
        let ip = running.ip.clone().expect("RUNNING says the address");
        assert_eq!(
            h.fake.task_address(task).map(|a| a.to_string()),
            Some(ip.clone())
        );
        // Said as soon as web's create made the network: still PENDING.
        let first = h
            .seen
            .iter()
            .position(|r| r.task_id == task && r.ip.is_some())
            .expect("a report with the address");
        assert_eq!(h.seen[first].last_status, TaskStatus::Pending, "{task}");
        assert!(
            h.seen[first..]
                .iter()
                .filter(|r| r.task_id == task)
                .all(|r| r.ip.as_deref() == Some(ip.as_str())),
            "{task}: every report from then on: {:#?}",
            h.seen
        );
        let stored = h.store.load().expect("load");
        let record = stored
            .tasks
            .iter()
            .find(|t| t.assignment.task_id == task)
            .and_then(|t| t.record.clone())
            .expect("record");
        assert_eq!(record.ip.map(|a| a.to_string()), Some(ip.clone()));
        addresses.push(ip);
    }
    assert_ne!(addresses[0], addresses[1], "one address per task");
    h.until_status("h", TaskStatus::Running).await;
    assert!(
        h.seen
            .iter()
            .filter(|r| r.task_id == "h")
            .all(|r| r.ip.is_none()),
        "host mode: {:#?}",
        h.seen
    );

    // Stopped: the network goes, the report still says where it was.
    let mut stop = in_network_mode(web_task("b"), "bridge");
    stop.desired_status = DesiredStatus::Stopped.as_str().into();
    h.apply(set(2, false, vec![stop])).await;
    let stopped = h.until_status("b", TaskStatus::Stopped).await;
    assert!(h.calls().contains(&Call::TaskStopped("b".into())));
    assert_eq!(h.fake.task_address("b"), None);
    assert_eq!(stopped.ip.as_deref(), Some(addresses[0].as_str()));
    h.assert_forward_only();
}

/// A restarted agent's hello (the board as loaded, before the runtime is
/// asked) says the address of each task it runs: from the task's record,
/// or, for a record without one (written by an agent that kept none),
/// from the runtime; the recovered actors go on reporting it.
#[tokio::test(start_paused = true)]
async fn a_restarted_agent_says_its_tasks_addresses_in_the_hello() {
    let fake = Arc::new(FakeRuntime::default());
    let store = Store::temporary().expect("store");
    let address = {
        let mut h = Harness::start(fake.clone(), store.clone());
        h.apply(set(1, true, vec![in_network_mode(web_task("t1"), "task")]))
            .await;
        let running = h.until_status("t1", TaskStatus::Running).await;
        running.ip.expect("an address")
        // The agent goes away (its actors with it).
    };
    let old = in_network_mode(
        assignment("old", vec![container("web", "web:1", true)]),
        "bridge",
    );
    let old_web = fake.insert("old", "web", ContainerState::Running { pid: 12 });
    stored(
        &store,
        &old,
        TaskStatus::Running,
        &[("web", Some(&old_web), ContainerStatus::Running)],
    );
    let old_address: std::net::IpAddr = "198.18.0.77".parse().expect("ip");
    fake.set_address("old", Some(old_address));

    let mut h = Harness::start(fake.clone(), store);
    let hello: Vec<TaskReport> = h
        .handle
        .board()
        .all_reports()
        .into_iter()
        .map(|r| TaskReport::try_from(r).expect("readable"))
        .collect();
    let ip_of = |task: &str| {
        hello
            .iter()
            .find(|r| r.task_id == task)
            .unwrap_or_else(|| panic!("{task} in the hello: {hello:?}"))
            .ip
            .clone()
    };
    assert_eq!(ip_of("t1"), Some(address.clone()));
    assert_eq!(ip_of("old"), Some(old_address.to_string()));

    h.settle().await;
    fake.exit(&container_id("t1", "web"), 0);
    let stopped = h.until_status("t1", TaskStatus::Stopped).await;
    assert_eq!(stopped.ip, Some(address));
    fake.exit(&old_web, 0);
    let stopped = h.until_status("old", TaskStatus::Stopped).await;
    assert_eq!(stopped.ip, Some(old_address.to_string()));
}

/// A container restarted in place after the host rebooted gets the task's
/// network back, maybe at another address: the reports say the new one.
#[tokio::test(start_paused = true)]
async fn an_in_place_restart_reports_the_address_the_network_came_back_with() {
    let mut h = Harness::new();
    h.apply(set(
        1,
        true,
        vec![in_network_mode(restarting_task("t1", 60, &[]), "task")],
    ))
    .await;
    let first = h
        .until_status("t1", TaskStatus::Running)
        .await
        .ip
        .expect("an address");
    pass(61).await;
    let moved: std::net::IpAddr = "198.18.0.200".parse().expect("ip");
    assert_ne!(first, moved.to_string());
    h.fake.set_address("t1", Some(moved));
    h.fake.exit(&container_id("t1", "web"), 3);
    let restarted = h
        .until("t1", "restarted", |r| {
            container_state(r, "web").restart_count == 1
        })
        .await;
    assert_eq!(restarted.ip, Some(moved.to_string()));
}
