//! Tasks, instance operations and cluster settings against in-process fake
//! servers: what each call sends, how idempotent writes fail over, and logs
//! that stream for longer than the request timeout.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_proto::pb::cluster_service_server::{ClusterService, ClusterServiceServer};
use berth_proto::pb::instance_service_server::{InstanceService, InstanceServiceServer};
use berth_proto::pb::task_service_server::{TaskService, TaskServiceServer};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Server;
use tonic::{Request, Response, Status};

use super::*;

/// What the servers of one fake control plane share: the tasks started per
/// client token, as the replicated state would hold them.
#[derive(Clone, Default)]
struct SharedState {
    by_token: Arc<Mutex<HashMap<String, Vec<pb::Task>>>>,
    started: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct FakeTasks {
    state: SharedState,
    /// Applies the request, then answers too late for the client.
    slow: bool,
    calls: Arc<AtomicUsize>,
    tokens_seen: Arc<Mutex<Vec<String>>>,
    logs_requests: Arc<Mutex<Vec<pb::TaskLogsRequest>>>,
    list_requests: Arc<Mutex<Vec<pb::ListTasksRequest>>>,
    /// What GetTaskLogs sends: chunks, pauses, and a final error.
    script: Vec<Step>,
}

#[derive(Clone)]
enum Step {
    Chunk(&'static str, &'static [u8]),
    Pause(Duration),
    Fail(Status),
}

impl FakeTasks {
    fn new(state: &SharedState, slow: bool) -> Self {
        Self {
            state: state.clone(),
            slow,
            calls: Arc::new(AtomicUsize::new(0)),
            tokens_seen: Arc::new(Mutex::new(Vec::new())),
            logs_requests: Arc::new(Mutex::new(Vec::new())),
            list_requests: Arc::new(Mutex::new(Vec::new())),
            script: Vec::new(),
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn task(id: String, td: &str) -> pb::Task {
        pb::Task {
            id,
            cluster: "default".into(),
            task_definition: td.into(),
            desired_status: "RUNNING".into(),
            last_status: "PROVISIONING".into(),
            ..Default::default()
        }
    }

    /// Starts the request's tasks unless its token was seen before, in which
    /// case the tasks of that first call are the answer, as the server
    /// promises.
    fn start(&self, token: &str, td: &str, count: u32) -> Vec<pb::Task> {
        let mut by_token = self.state.by_token.lock().unwrap();
        if let Some(tasks) = by_token.get(token).filter(|_| !token.is_empty()) {
            return tasks.clone();
        }
        let tasks: Vec<pb::Task> = (0..count.max(1))
            .map(|_| {
                let n = self.state.started.fetch_add(1, Ordering::SeqCst);
                Self::task(format!("t-{n}"), td)
            })
            .collect();
        if !token.is_empty() {
            by_token.insert(token.to_string(), tasks.clone());
        }
        tasks
    }

    async fn reply_late(&self) {
        if self.slow {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
    }
}

#[tonic::async_trait]
impl TaskService for FakeTasks {
    async fn run_task(
        &self,
        request: Request<pb::RunTaskRequest>,
    ) -> Result<Response<pb::RunTaskResponse>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let req = request.into_inner();
        self.tokens_seen
            .lock()
            .unwrap()
            .push(req.client_token.clone());
        let tasks = self.start(&req.client_token, &req.task_definition, req.count);
        self.reply_late().await;
        Ok(Response::new(pb::RunTaskResponse { tasks }))
    }

    async fn start_task(
        &self,
        request: Request<pb::StartTaskRequest>,
    ) -> Result<Response<pb::StartTaskResponse>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let req = request.into_inner();
        self.tokens_seen
            .lock()
            .unwrap()
            .push(req.client_token.clone());
        let mut tasks = self.start(
            &req.client_token,
            &req.task_definition,
            u32::try_from(req.instance_ids.len()).unwrap(),
        );
        for (task, instance) in tasks.iter_mut().zip(&req.instance_ids) {
            task.instance_id = instance.clone();
        }
        self.reply_late().await;
        Ok(Response::new(pb::StartTaskResponse { tasks }))
    }

    async fn stop_task(
        &self,
        request: Request<pb::StopTaskRequest>,
    ) -> Result<Response<pb::StopTaskResponse>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let req = request.into_inner();
        let mut task = Self::task(req.id, "web:1");
        task.desired_status = "STOPPED".into();
        task.stop_code = "UserInitiated".into();
        task.stopped_reason = req.reason;
        Ok(Response::new(pb::StopTaskResponse { task: Some(task) }))
    }

    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        // Kept, so a test can see what was sent.
        self.list_requests
            .lock()
            .unwrap()
            .push(request.into_inner());
        let task = Self::task("t-1".into(), "web:1");
        Ok(Response::new(pb::ListTasksResponse { tasks: vec![task] }))
    }

    async fn describe_task(
        &self,
        request: Request<pb::DescribeTaskRequest>,
    ) -> Result<Response<pb::DescribeTaskResponse>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let id = request.into_inner().id;
        if id == "missing" {
            return Err(Status::not_found("task \"missing\" not found"));
        }
        Ok(Response::new(pb::DescribeTaskResponse {
            task: Some(Self::task(id, "web:1")),
        }))
    }

    type GetTaskLogsStream = ReceiverStream<Result<pb::LogChunk, Status>>;

    async fn get_task_logs(
        &self,
        request: Request<pb::TaskLogsRequest>,
    ) -> Result<Response<Self::GetTaskLogsStream>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.logs_requests
            .lock()
            .unwrap()
            .push(request.into_inner());
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let script = self.script.clone();
        tokio::spawn(async move {
            for step in script {
                let item = match step {
                    Step::Chunk(stream, data) => Ok(pb::LogChunk {
                        stream: stream.into(),
                        data: data.to_vec(),
                    }),
                    Step::Pause(d) => {
                        tokio::time::sleep(d).await;
                        continue;
                    }
                    Step::Fail(status) => Err(status),
                };
                if tx.send(item).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

async fn serve_tasks(fake: FakeTasks) -> String {
    crate::test_support::spawn(Server::builder().add_service(TaskServiceServer::new(fake))).await
}

/// A port that was just free: connecting to it is refused.
async fn closed_port() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr.to_string()
}

fn client(endpoints: &[&String]) -> BerthClient {
    BerthClient::new(ClientConfig {
        endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_millis(500),
        ..ClientConfig::default()
    })
    .unwrap()
}

fn run_input(token: Option<&str>) -> t::RunTaskInput {
    t::RunTaskInput {
        launch: t::TaskLaunch {
            task_definition: "web:1".into(),
            client_token: token.map(Into::into),
            ..Default::default()
        },
        count: 2,
        ..Default::default()
    }
}

fn ids(tasks: &[t::Task]) -> Vec<&str> {
    tasks.iter().map(|t| t.id.as_str()).collect()
}

#[tokio::test]
async fn run_task_with_a_token_is_sent_again_when_the_reply_is_lost() {
    let state = SharedState::default();
    let slow = FakeTasks::new(&state, true);
    let live = FakeTasks::new(&state, false);
    let slow_addr = serve_tasks(slow.clone()).await;
    let live_addr = serve_tasks(live.clone()).await;
    let client = client(&[&slow_addr, &live_addr]);

    let tasks = client.run_task(&run_input(Some("tok-1"))).await.unwrap();

    // The first server applied it; the retry got the same tasks back
    // instead of starting two more.
    assert_eq!(ids(&tasks), ["t-0", "t-1"]);
    assert_eq!(state.started.load(Ordering::SeqCst), 2);
    assert_eq!((slow.calls(), live.calls()), (1, 1));
    assert_eq!(*slow.tokens_seen.lock().unwrap(), ["tok-1"]);
    assert_eq!(*live.tokens_seen.lock().unwrap(), ["tok-1"]);
}

#[tokio::test]
async fn run_task_without_a_token_is_not_sent_again() {
    let state = SharedState::default();
    let slow_addr = serve_tasks(FakeTasks::new(&state, true)).await;
    let live = FakeTasks::new(&state, false);
    let live_addr = serve_tasks(live.clone()).await;
    let client = client(&[&slow_addr, &live_addr]);

    match client.run_task(&run_input(None)).await.unwrap_err() {
        ClientError::OutcomeUnknown { endpoint, .. } => assert_eq!(endpoint, slow_addr),
        other => panic!("expected OutcomeUnknown, got {other:?}"),
    }
    assert_eq!(live.calls(), 0);
}

#[tokio::test]
async fn start_task_with_a_token_fails_over_too_and_names_instances() {
    let state = SharedState::default();
    let slow_addr = serve_tasks(FakeTasks::new(&state, true)).await;
    let live = FakeTasks::new(&state, false);
    let live_addr = serve_tasks(live.clone()).await;
    let client = client(&[&slow_addr, &live_addr]);

    let tasks = client
        .start_task(&t::StartTaskInput {
            launch: t::TaskLaunch {
                task_definition: "web:1".into(),
                client_token: Some("tok-2".into()),
                ..Default::default()
            },
            instance_ids: vec!["i-1".into(), "i-2".into()],
        })
        .await
        .unwrap();
    assert_eq!(state.started.load(Ordering::SeqCst), 2);
    let placed: Vec<Option<&str>> = tasks.iter().map(|t| t.instance_id.as_deref()).collect();
    assert_eq!(placed, [Some("i-1"), Some("i-2")]);

    // No instance is a mistake caught before sending.
    let err = client
        .start_task(&t::StartTaskInput::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::InvalidRequest(_)), "{err:?}");
    assert_eq!(live.calls(), 1);
}

#[test]
fn client_tokens_are_random_hex() {
    let a = new_client_token();
    let b = new_client_token();
    assert_eq!(a.len(), 32);
    assert!(a.bytes().all(|c| c.is_ascii_hexdigit()), "{a}");
    assert_ne!(a, b);
}

#[tokio::test]
async fn list_describe_and_stop_send_what_they_were_given() {
    let fake = FakeTasks::new(&SharedState::default(), false);
    let addr = serve_tasks(fake.clone()).await;
    let client = client(&[&addr]);

    let listed = client
        .list_tasks(&t::TaskFilter {
            cluster: Some("prod".into()),
            instance_id: Some("i-1".into()),
            family: Some("web".into()),
            status: Some(t::TaskStatus::Running),
        })
        .await
        .unwrap();
    assert_eq!(listed[0].last_status, t::TaskStatus::Provisioning);
    client.list_tasks(&t::TaskFilter::default()).await.unwrap();
    let sent = fake.list_requests.lock().unwrap().clone();
    assert_eq!(
        sent,
        [
            pb::ListTasksRequest {
                cluster: "prod".into(),
                instance_id: "i-1".into(),
                family: "web".into(),
                status: "RUNNING".into(),
            },
            pb::ListTasksRequest::default()
        ]
    );

    let stopped = client.stop_task("t-9", "by hand").await.unwrap();
    assert_eq!(stopped.id, "t-9");
    assert_eq!(stopped.stopped_reason, "by hand");
    assert_eq!(stopped.desired_status, t::DesiredStatus::Stopped);
    assert_eq!(stopped.stop_code, Some(t::StopCode::UserInitiated));

    assert_eq!(client.describe_task("t-3").await.unwrap().id, "t-3");
    let err = client.describe_task("missing").await.unwrap_err();
    assert_eq!(err.api_code(), Some(Code::NotFound));
}

#[tokio::test]
async fn logs_keep_streaming_past_the_request_timeout() {
    let mut fake = FakeTasks::new(&SharedState::default(), false);
    fake.script = vec![
        Step::Chunk("stdout", b"hello\n"),
        // Longer than the client's 500 ms request timeout.
        Step::Pause(Duration::from_millis(1200)),
        Step::Chunk("stderr", b"oops\n"),
    ];
    let closed = closed_port().await;
    let addr = serve_tasks(fake.clone()).await;
    let client = client(&[&closed, &addr]);

    let options = t::LogOptions {
        container: Some("web".into()),
        follow: true,
        tail: Some(10),
    };
    let mut stream = client.task_logs("t-1", &options).await.unwrap();
    assert_eq!(stream.endpoint(), addr, "opening fails over like a read");
    let mut got = Vec::new();
    while let Some(chunk) = stream.next().await.unwrap() {
        got.push((chunk.stream, chunk.data));
    }
    assert_eq!(
        got,
        [
            (t::OutputStream::Stdout, b"hello\n".to_vec()),
            (t::OutputStream::Stderr, b"oops\n".to_vec())
        ]
    );
    let sent = fake.logs_requests.lock().unwrap().clone();
    assert_eq!(
        sent,
        [pb::TaskLogsRequest {
            id: "t-1".into(),
            container: "web".into(),
            follow: true,
            tail: 10,
        }]
    );
}

#[tokio::test]
async fn a_log_stream_that_fails_midway_reports_the_servers_error() {
    let mut fake = FakeTasks::new(&SharedState::default(), false);
    fake.script = vec![
        Step::Chunk("stdout", b"partial"),
        Step::Fail(Status::unavailable("the agent disconnected")),
    ];
    let addr = serve_tasks(fake.clone()).await;
    let client = client(&[&addr]);

    let mut stream = client
        .task_logs("t-1", &t::LogOptions::default())
        .await
        .unwrap();
    assert_eq!(stream.next().await.unwrap().unwrap().data, b"partial");
    let err = stream.next().await.unwrap_err();
    assert_eq!(err.api_code(), Some(Code::Unavailable));
    assert!(err.to_string().contains("the agent disconnected"), "{err}");
    let sent = fake.logs_requests.lock().unwrap().clone();
    assert_eq!((sent[0].container.as_str(), sent[0].tail), ("", 0));

    let err = client
        .task_logs(
            "t-1",
            &t::LogOptions {
                tail: Some(0),
                ..t::LogOptions::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::InvalidRequest(_)), "{err:?}");
    assert_eq!(fake.calls(), 1, "tail 0 is refused before sending");
}

// ------------------------------------------------------------ instances

#[derive(Clone, Default)]
struct FakeInstances {
    requests: Arc<Mutex<Vec<String>>>,
}

impl FakeInstances {
    fn answer(&self, what: String, id: &str) -> pb::Instance {
        self.requests.lock().unwrap().push(what);
        pb::Instance {
            id: id.to_string(),
            status: "DRAINING".into(),
            ..Default::default()
        }
    }
}

#[tonic::async_trait]
impl InstanceService for FakeInstances {
    async fn list_instances(
        &self,
        _request: Request<pb::ListInstancesRequest>,
    ) -> Result<Response<pb::ListInstancesResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn describe_instance(
        &self,
        _request: Request<pb::DescribeInstanceRequest>,
    ) -> Result<Response<pb::DescribeInstanceResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn deregister_instance(
        &self,
        _request: Request<pb::DeregisterInstanceRequest>,
    ) -> Result<Response<pb::DeregisterInstanceResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn drain_instance(
        &self,
        request: Request<pb::DrainInstanceRequest>,
    ) -> Result<Response<pb::DrainInstanceResponse>, Status> {
        let id = request.into_inner().id;
        Ok(Response::new(pb::DrainInstanceResponse {
            instance: Some(self.answer(format!("drain {id}"), &id)),
        }))
    }

    async fn activate_instance(
        &self,
        request: Request<pb::ActivateInstanceRequest>,
    ) -> Result<Response<pb::ActivateInstanceResponse>, Status> {
        let id = request.into_inner().id;
        Ok(Response::new(pb::ActivateInstanceResponse {
            instance: Some(self.answer(format!("activate {id}"), &id)),
        }))
    }

    async fn put_instance_attributes(
        &self,
        request: Request<pb::PutInstanceAttributesRequest>,
    ) -> Result<Response<pb::PutInstanceAttributesResponse>, Status> {
        let req = request.into_inner();
        let pairs: Vec<String> = req
            .attributes
            .iter()
            .map(|a| format!("{}={}", a.name, a.value))
            .collect();
        let what = format!("put {} {}", req.id, pairs.join(","));
        Ok(Response::new(pb::PutInstanceAttributesResponse {
            instance: Some(self.answer(what, &req.id)),
        }))
    }

    async fn delete_instance_attributes(
        &self,
        request: Request<pb::DeleteInstanceAttributesRequest>,
    ) -> Result<Response<pb::DeleteInstanceAttributesResponse>, Status> {
        let req = request.into_inner();
        let what = format!("delete {} {}", req.id, req.names.join(","));
        Ok(Response::new(pb::DeleteInstanceAttributesResponse {
            instance: Some(self.answer(what, &req.id)),
        }))
    }
}

#[tokio::test]
async fn instance_operations_send_the_id_and_attributes() {
    let fake = FakeInstances::default();
    let addr = crate::test_support::spawn(
        Server::builder().add_service(InstanceServiceServer::new(fake.clone())),
    )
    .await;
    let client = client(&[&addr]);

    let drained = client.drain_instance("i-1").await.unwrap();
    assert_eq!(drained.id, "i-1");
    assert_eq!(drained.status, t::InstanceState::Draining);
    client.activate_instance("i-2").await.unwrap();
    let attributes = BTreeMap::from([
        ("zone".to_string(), "a".to_string()),
        ("disk".to_string(), "ssd".to_string()),
    ]);
    client
        .put_instance_attributes("i-3", &attributes)
        .await
        .unwrap();
    client
        .delete_instance_attributes("i-4", &["zone".into(), "disk".into()])
        .await
        .unwrap();
    // Empty lists are refused before sending.
    assert!(matches!(
        client
            .put_instance_attributes("i-5", &BTreeMap::new())
            .await,
        Err(ClientError::InvalidRequest(_))
    ));
    assert!(matches!(
        client.delete_instance_attributes("i-5", &[]).await,
        Err(ClientError::InvalidRequest(_))
    ));
    assert_eq!(
        *fake.requests.lock().unwrap(),
        [
            "drain i-1",
            "activate i-2",
            "put i-3 disk=ssd,zone=a",
            "delete i-4 zone,disk"
        ]
    );
}

// ------------------------------------------------------------- clusters

/// The (lost_after_secs, task_retention_secs) of one UpdateCluster call.
type Update = (Option<u64>, Option<u64>);

/// Records the settings it is sent and answers with a cluster carrying
/// them.
#[derive(Clone, Default)]
struct SettingsRecorder {
    creates: Arc<Mutex<Vec<(u64, u64)>>>,
    updates: Arc<Mutex<Vec<Update>>>,
}

fn wire_cluster(name: String, lost_after_secs: u64, task_retention_secs: u64) -> pb::Cluster {
    pb::Cluster {
        name,
        status: "ACTIVE".into(),
        created_at_ms: 1_700_000_000_000,
        lost_after_secs,
        task_retention_secs,
        tags: Default::default(),
    }
}

#[tonic::async_trait]
impl ClusterService for SettingsRecorder {
    async fn create_cluster(
        &self,
        request: Request<pb::CreateClusterRequest>,
    ) -> Result<Response<pb::CreateClusterResponse>, Status> {
        let req = request.into_inner();
        self.creates
            .lock()
            .unwrap()
            .push((req.lost_after_secs, req.task_retention_secs));
        let lost = if req.lost_after_secs == 0 {
            300
        } else {
            req.lost_after_secs
        };
        let keep = match req.task_retention_secs {
            0 => 3600,
            n => n,
        };
        Ok(Response::new(pb::CreateClusterResponse {
            cluster: Some(wire_cluster(req.name, lost, keep)),
        }))
    }

    async fn update_cluster(
        &self,
        request: Request<pb::UpdateClusterRequest>,
    ) -> Result<Response<pb::UpdateClusterResponse>, Status> {
        let req = request.into_inner();
        self.updates
            .lock()
            .unwrap()
            .push((req.lost_after_secs, req.task_retention_secs));
        Ok(Response::new(pb::UpdateClusterResponse {
            cluster: Some(wire_cluster(
                req.name,
                req.lost_after_secs.unwrap_or(300),
                req.task_retention_secs.unwrap_or(3600),
            )),
        }))
    }

    async fn list_clusters(
        &self,
        _request: Request<pb::ListClustersRequest>,
    ) -> Result<Response<pb::ListClustersResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn describe_cluster(
        &self,
        _request: Request<pb::DescribeClusterRequest>,
    ) -> Result<Response<pb::DescribeClusterResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn delete_cluster(
        &self,
        _request: Request<pb::DeleteClusterRequest>,
    ) -> Result<Response<pb::DeleteClusterResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }
}

#[tokio::test]
async fn cluster_settings_go_as_whole_seconds_and_unset_means_default_or_unchanged() {
    let fake = SettingsRecorder::default();
    let addr = crate::test_support::spawn(
        Server::builder().add_service(ClusterServiceServer::new(fake.clone())),
    )
    .await;
    let client = client(&[&addr]);

    let plain = client.create_cluster("a").await.unwrap();
    assert_eq!(plain.settings.task_retention_secs, 3600);
    let tuned = client
        .create_cluster_with(
            "b",
            &ClusterOptions {
                lost_after: Some(Duration::from_secs(600)),
                task_retention: Some(Duration::from_secs(7200)),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (
            tuned.settings.lost_after_secs,
            tuned.settings.task_retention_secs
        ),
        (600, 7200)
    );
    assert_eq!(*fake.creates.lock().unwrap(), [(0, 0), (600, 7200)]);

    let updated = client
        .update_cluster(
            "b",
            &ClusterOptions {
                task_retention: Some(Duration::from_secs(60)),
                ..ClusterOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.settings.task_retention_secs, 60);
    assert_eq!(*fake.updates.lock().unwrap(), [(None, Some(60))]);

    // Nothing to change, or less than a second, never reaches the server.
    let err = client
        .update_cluster("b", &ClusterOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::InvalidRequest(_)), "{err:?}");
    let err = client
        .create_cluster_with(
            "c",
            &ClusterOptions {
                lost_after: Some(Duration::from_millis(10)),
                ..ClusterOptions::default()
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("lost_after"), "{err}");
    assert_eq!(fake.updates.lock().unwrap().len(), 1);
    assert_eq!(fake.creates.lock().unwrap().len(), 2);
}
