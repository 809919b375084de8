//! The session's conversation over in-memory streams, against a runner on
//! the fake runtime, with the clock paused.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_types::{ContainerStatus, Health, TaskReport, TaskStatus};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

use super::*;
use crate::containerd::container_id;
use crate::runner::fake::{set, web_task, FakeRuntime};
use crate::runner::{Runner, RunnerConfig};
use crate::store::{ContainerRecord, Store, TaskRecord};

fn config() -> SessionConfig {
    SessionConfig {
        endpoints: vec!["127.0.0.1:7400".into()],
        host: HostInfo {
            cpu_total: 4096,
            memory_total_mib: 8192,
            attributes: BTreeMap::from([
                ("os".to_string(), "linux".to_string()),
                ("zone".to_string(), "a".to_string()),
            ]),
        },
        agent_version: "9.9.9".into(),
        health: Default::default(),
    }
}

fn identity(instance_id: &str) -> AgentIdentity {
    AgentIdentity {
        instance_id: instance_id.into(),
        cluster: "default".into(),
        cert_pem: String::new(),
        key_pem: String::new(),
        ca_pem: String::new(),
        issued_at_ms: 0,
        expires_at_ms: i64::MAX,
        local_expires_at_ms: i64::MAX,
    }
}

type Ended = (Result<Outcome, SessionError>, bool);

/// A conversation running in the background, with both ends of its
/// streams in the test's hands.
struct Conv {
    to_agent: mpsc::Sender<Result<pb::ServerMessage, tonic::Status>>,
    from_agent: mpsc::Receiver<pb::AgentMessage>,
    identity: watch::Sender<Option<AgentIdentity>>,
    ended: Option<JoinHandle<Ended>>,
    handle: RunnerHandle<FakeRuntime>,
    fake: Arc<FakeRuntime>,
    _runner: JoinHandle<()>,
}

impl Drop for Conv {
    fn drop(&mut self) {
        self._runner.abort();
        if let Some(ended) = &self.ended {
            ended.abort();
        }
    }
}

impl Conv {
    fn start(store: Store) -> Self {
        let fake = Arc::new(FakeRuntime::default());
        let (runner, handle) =
            Runner::new(fake.clone(), store, RunnerConfig::default()).expect("runner");
        let runner = tokio::spawn(runner.run());
        Self::attach(fake, handle, runner)
    }

    /// A conversation for a runner that has been running on its own.
    fn attach(
        fake: Arc<FakeRuntime>,
        handle: RunnerHandle<FakeRuntime>,
        runner: JoinHandle<()>,
    ) -> Self {
        let (to_agent, inbound) = mpsc::channel(16);
        let (out, from_agent) = mpsc::channel(OUT_QUEUE);
        let (identity, mut identity_rx) = watch::channel(Some(self::identity("i-1")));
        let h = handle.clone();
        let ended = tokio::spawn(async move {
            let mut reached = false;
            let result = converse(
                ReceiverStream::new(inbound),
                out,
                &h,
                &mut identity_rx,
                "i-1",
                None,
                &mut reached,
                &Default::default(),
            )
            .await;
            (result, reached)
        });
        Conv {
            to_agent,
            from_agent,
            identity,
            ended: Some(ended),
            handle,
            fake,
            _runner: runner,
        }
    }

    fn new() -> Self {
        Self::start(Store::temporary().expect("store"))
    }

    async fn send(&self, body: In) {
        self.to_agent
            .send(Ok(pb::ServerMessage { body: Some(body) }))
            .await
            .expect("agent listening");
    }

    async fn next(&mut self) -> Out {
        tokio::time::timeout(Duration::from_secs(3600), self.from_agent.recv())
            .await
            .expect("a message from the agent")
            .expect("stream open")
            .body
            .expect("a body")
    }

    /// The next message that is not a heartbeat.
    async fn next_not_heartbeat(&mut self) -> Out {
        loop {
            match self.next().await {
                Out::Heartbeat(_) => continue,
                other => return other,
            }
        }
    }

    async fn ended(mut self) -> Ended {
        let ended = self.ended.take().expect("still running");
        tokio::time::timeout(Duration::from_secs(3600), ended)
            .await
            .expect("conversation ended")
            .expect("no panic")
    }

    /// LogData messages (request id, stream, text, end, error) up to and
    /// including the one that ends a request.
    async fn logs(&mut self) -> Vec<(u64, String, String, bool, String)> {
        let mut got = Vec::new();
        loop {
            if let Out::Log(l) = self.next().await {
                let end = l.end;
                got.push((
                    l.request_id,
                    l.stream,
                    String::from_utf8_lossy(&l.data).into_owned(),
                    l.end,
                    l.error,
                ));
                if end {
                    return got;
                }
            }
        }
    }
}

fn settings(ms: u32) -> In {
    In::Settings(pb::SessionSettings {
        heartbeat_period_ms: ms,
    })
}

#[tokio::test(start_paused = true)]
async fn hello_tells_everything_the_agent_knows() {
    let store = Store::temporary().expect("store");
    let record = |status| TaskRecord {
        status,
        containers: vec![ContainerRecord {
            name: "web".into(),
            id: Some("x-web".into()),
            status: ContainerStatus::Running,
            exit_code: None,
            reason: String::new(),
            health: Health::Healthy,
            started: true,
            restart_count: 0,
            started_at_ms: None,
        }],
        reason: String::new(),
        stop_code: None,
        ip: None,
    };
    for (id, status) in [("a", TaskStatus::Running), ("b", TaskStatus::Stopped)] {
        store.put_assignment(&web_task(id)).expect("put");
        store.put_record(id, &record(status)).expect("record");
    }
    store.set_last_sequence(5).expect("seq");
    let (_runner, handle) = Runner::new(
        Arc::new(FakeRuntime::default()),
        store,
        RunnerConfig::default(),
    )
    .expect("runner");

    for attempt in 0..2 {
        let Some(Out::Hello(hello)) = hello(&config(), "i-1", &handle).body else {
            panic!("not a hello");
        };
        assert_eq!(hello.instance_id, "i-1");
        assert_eq!(hello.agent_version, "9.9.9");
        assert_eq!((hello.cpu_total, hello.memory_total_mib), (4096, 8192));
        // web_task holds 2 x (256 CPU units, 128 MiB); only a is not STOPPED.
        assert_eq!(hello.cpu_available, 4096 - 512);
        assert_eq!(hello.memory_available_mib, 8192 - 256);
        let attributes: Vec<(&str, &str)> = hello
            .attributes
            .iter()
            .map(|a| (a.name.as_str(), a.value.as_str()))
            .collect();
        assert_eq!(attributes, [("os", "linux"), ("zone", "a")]);
        let running: Vec<TaskReport> = hello
            .running
            .iter()
            .map(|r| TaskReport::try_from(r.clone()).expect("a report the server can read"))
            .collect();
        let statuses: Vec<(&str, TaskStatus)> = running
            .iter()
            .map(|r| (r.task_id.as_str(), r.last_status))
            .collect();
        assert_eq!(
            statuses,
            [("a", TaskStatus::Running), ("b", TaskStatus::Stopped)],
            "attempt {attempt}"
        );
        assert_eq!(running[0].containers[0].health, Health::Healthy);
        assert_eq!(hello.last_sequence, 5);
    }
}

#[tokio::test(start_paused = true)]
async fn a_set_that_changes_nothing_is_acknowledged_alone_within_the_window() {
    let mut c = Conv::new();
    c.send(settings(1000)).await;
    let sent = Instant::now();
    c.send(In::Assignments(set(3, true, Vec::new()))).await;
    match c.next_not_heartbeat().await {
        Out::Ack(ack) => assert_eq!(ack.sequence, 3),
        other => panic!("expected an ack, got {other:?}"),
    }
    assert!(sent.elapsed() <= BATCH_WINDOW, "{:?}", sent.elapsed());
    assert_eq!(c.handle.last_sequence(), 3, "stored before acknowledged");
}

#[tokio::test(start_paused = true)]
async fn acknowledges_sets_once_stored_and_batches_reports() {
    let mut c = Conv::new();
    c.send(settings(1000)).await;
    let settled = Instant::now();
    c.send(In::Assignments(set(7, true, vec![web_task("t1")])))
        .await;

    let mut statuses = Vec::new();
    let mut batches = 0;
    while !statuses.contains(&Some(TaskStatus::Running)) {
        match c.next_not_heartbeat().await {
            Out::Status(batch) => {
                batches += 1;
                // The set's acknowledgement rides on the first batch it
                // caused, and only there.
                let expected = if batches == 1 { 7 } else { 0 };
                assert_eq!(batch.acked_sequence, expected, "batch {batches}");
                assert_eq!(c.handle.last_sequence(), 7, "stored before acknowledged");
                statuses.extend(
                    batch
                        .reports
                        .into_iter()
                        .map(|r| TaskStatus::parse(&r.last_status)),
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    statuses.dedup();
    assert_eq!(
        statuses,
        [Some(TaskStatus::Pending), Some(TaskStatus::Running)]
    );
    // Several changes, few messages: the batch window gathers them.
    assert!(batches <= 2, "{batches} batches");

    // Heartbeats every second, give or take 10%.
    let mut beats = Vec::new();
    while beats.len() < 3 {
        if let Out::Heartbeat(_) = c.next().await {
            beats.push(Instant::now());
        }
    }
    let mut previous = settled;
    for at in beats {
        let gap = at - previous;
        assert!(
            gap >= Duration::from_millis(900) && gap <= Duration::from_millis(1100),
            "{gap:?}"
        );
        previous = at;
    }
}

#[tokio::test(start_paused = true)]
async fn redirects_end_the_conversation() {
    let c = Conv::new();
    c.send(In::Redirect(pb::Redirect {
        leader_address: "10.0.0.2:7400".into(),
    }))
    .await;
    let (outcome, reached) = c.ended().await;
    assert_eq!(
        outcome.expect("ok"),
        Outcome::Redirect("10.0.0.2:7400".into())
    );
    assert!(!reached);

    let c = Conv::new();
    c.send(In::Redirect(pb::Redirect {
        leader_address: String::new(),
    }))
    .await;
    assert_eq!(c.ended().await.0.expect("ok"), Outcome::NoLeader);
}

#[tokio::test(start_paused = true)]
async fn a_silent_server_or_a_broken_stream_is_an_error() {
    let c = Conv::new();
    let started = Instant::now();
    let (outcome, _) = c.ended().await;
    assert!(
        matches!(outcome, Err(SessionError::NoSettings(_))),
        "{outcome:?}"
    );
    assert_eq!(Instant::now() - started, SETTINGS_TIMEOUT);

    let c = Conv::new();
    c.send(settings(1000)).await;
    c.to_agent
        .send(Err(tonic::Status::unavailable("leader stepped down")))
        .await
        .expect("send");
    let (outcome, reached) = c.ended().await;
    assert!(reached);
    assert!(
        matches!(
            &outcome,
            Err(SessionError::Stream {
                code: tonic::Code::Unavailable,
                ..
            })
        ),
        "{outcome:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_new_instance_identity_renews_the_session() {
    let c = Conv::new();
    c.send(settings(1000)).await;
    // A renewed certificate for the same instance changes nothing...
    c.identity.send_replace(Some(identity("i-1")));
    // ...another instance id does.
    c.identity.send_replace(Some(identity("i-2")));
    assert_eq!(c.ended().await.0.expect("ok"), Outcome::Renew);
}

#[tokio::test(start_paused = true)]
async fn log_requests_are_answered_in_chunks_then_ended() {
    let mut c = Conv::new();
    c.send(settings(60_000)).await;
    c.send(In::Assignments(set(1, true, vec![web_task("t1")])))
        .await;
    while c.handle.board().status("t1") != Some(TaskStatus::Running) {
        c.next().await;
    }
    let line = |stream, text: &str| LogLine {
        stream,
        time: "2024-01-01T00:00:00Z".into(),
        line: text.into(),
    };
    c.fake.set_logs(
        &container_id("t1", "web"),
        vec![
            line(LogStream::Stdout, "a"),
            line(LogStream::Stdout, "b"),
            line(LogStream::Stderr, "c"),
        ],
    );
    let request = |request_id, task: &str, tail| {
        In::LogRequest(pb::LogRequest {
            request_id,
            task_id: task.into(),
            container: "web".into(),
            follow: false,
            tail,
        })
    };
    c.send(request(1, "t1", 0)).await;
    assert_eq!(
        c.logs().await,
        [
            (
                1,
                "stdout".to_string(),
                "a\nb\n".to_string(),
                false,
                String::new()
            ),
            (
                1,
                "stderr".to_string(),
                "c\n".to_string(),
                false,
                String::new()
            ),
            (1, String::new(), String::new(), true, String::new()),
        ]
    );

    c.send(request(2, "t1", 1)).await;
    let got = c.logs().await;
    assert_eq!(got[0].2, "c\n", "tail 1: {got:?}");
    assert_eq!(got.len(), 2);

    c.send(request(3, "nope", 0)).await;
    let got = c.logs().await;
    assert_eq!(got.len(), 1);
    assert!(got[0].3 && got[0].4.contains("not known"), "{got:?}");
}

#[test]
fn addresses() {
    let ok = |a: &str| parse_address(a).expect(a);
    assert_eq!(
        ok("10.0.0.1:7400"),
        ("10.0.0.1:7400".into(), "10.0.0.1".into())
    );
    assert_eq!(
        ok("https://berth.example:7400/"),
        ("berth.example:7400".into(), "berth.example".into())
    );
    assert_eq!(ok("[::1]:7400"), ("[::1]:7400".into(), "::1".into()));
    for bad in ["http://10.0.0.1:7400", "10.0.0.1", "", "h:1/x"] {
        assert!(parse_address(bad).is_err(), "{bad:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn restarts_while_disconnected_are_reported_once_connected() {
    use crate::runner::fake::{assignment, container, restarting};
    let fake = Arc::new(FakeRuntime::default());
    let (runner, handle) = Runner::new(
        fake.clone(),
        Store::temporary().expect("store"),
        RunnerConfig::default(),
    )
    .expect("runner");
    let runner = tokio::spawn(runner.run());
    // Assigned by an earlier session; now no session at all.
    let a = assignment(
        "t1",
        vec![restarting(container("web", "web:1", true), 60, &[])],
    );
    handle.apply(set(1, true, vec![a])).await.expect("apply");
    let web = container_id("t1", "web");
    let count = |handle: &RunnerHandle<FakeRuntime>| {
        handle
            .board()
            .view("t1")
            .map(|v| v.report.containers[0].restart_count)
    };
    while handle.board().status("t1") != Some(TaskStatus::Running) {
        handle.board().changed().await;
    }
    tokio::time::sleep(Duration::from_secs(61)).await;
    fake.exit(&web, 3);
    while count(&handle) != Some(1) {
        handle.board().changed().await;
    }

    // The hello of the next session says so, the task still RUNNING...
    let Some(Out::Hello(said)) = hello(&config(), "i-1", &handle).body else {
        panic!("not a hello");
    };
    assert_eq!(said.running[0].last_status, "RUNNING");
    assert_eq!(said.running[0].containers[0].restart_count, 1);
    assert_eq!(said.running[0].containers[0].status, "RUNNING");

    // ...and a restart during the session goes out in a status batch.
    let mut c = Conv::attach(fake.clone(), handle, runner);
    c.send(settings(60_000)).await;
    tokio::time::sleep(Duration::from_secs(61)).await;
    c.fake.exit(&web, 3);
    loop {
        if let Out::Status(batch) = c.next_not_heartbeat().await {
            let restarted = batch.reports.iter().any(|r| {
                r.task_id == "t1"
                    && r.last_status == "RUNNING"
                    && r.containers[0].restart_count == 2
                    && r.containers[0].status == "RUNNING"
            });
            assert!(
                batch.reports.iter().all(|r| r.last_status == "RUNNING"),
                "{batch:?}"
            );
            if restarted {
                break;
            }
        }
    }
}
