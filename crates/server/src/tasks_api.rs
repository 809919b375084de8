//! TaskService, a thin adapter over `ops::tasks`: RunTask, StartTask,
//! StopTask, list/describe, and logs streamed from the agent through the
//! leader's session with it.

use std::pin::Pin;

use berth_proto::pb;
use berth_proto::pb::task_service_client::TaskServiceClient;
use berth_proto::pb::task_service_server::TaskService;
use futures::Stream;
use tonic::{Request, Response, Status};

use crate::error::ServerError;
use crate::ops::Ops;
use crate::session::{leader_address, SessionHub};

#[derive(Clone)]
pub struct TasksApi {
    pub hub: SessionHub,
    pub ops: Ops,
}

impl TasksApi {
    /// A task as the API carries it, with its network bindings (which the
    /// conversion alone cannot know: they come from its definition).
    fn wire(&self, task: &berth_types::Task) -> pb::Task {
        let mut wire = pb::Task::from(task);
        wire.network_bindings = self
            .ops
            .network_bindings(task)
            .iter()
            .map(Into::into)
            .collect();
        wire
    }
}

type LogStream = Pin<Box<dyn Stream<Item = Result<pb::LogChunk, Status>> + Send>>;

#[tonic::async_trait]
impl TaskService for TasksApi {
    #[tracing::instrument(skip_all, fields(task_definition = %request.get_ref().task_definition, count = request.get_ref().count))]
    async fn run_task(
        &self,
        request: Request<pb::RunTaskRequest>,
    ) -> Result<Response<pb::RunTaskResponse>, Status> {
        let tasks = self.ops.run_task(request.into_inner().into()).await?;
        Ok(Response::new(pb::RunTaskResponse {
            tasks: tasks.iter().map(|t| self.wire(t)).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(task_definition = %request.get_ref().task_definition))]
    async fn start_task(
        &self,
        request: Request<pb::StartTaskRequest>,
    ) -> Result<Response<pb::StartTaskResponse>, Status> {
        let tasks = self.ops.start_task(request.into_inner().into()).await?;
        Ok(Response::new(pb::StartTaskResponse {
            tasks: tasks.iter().map(|t| self.wire(t)).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(task_id = %request.get_ref().id))]
    async fn stop_task(
        &self,
        request: Request<pb::StopTaskRequest>,
    ) -> Result<Response<pb::StopTaskResponse>, Status> {
        let req = request.into_inner();
        let task = self.ops.stop_task(req.id, req.reason).await?;
        Ok(Response::new(pb::StopTaskResponse {
            task: Some(self.wire(&task)),
        }))
    }

    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let filter = request
            .into_inner()
            .try_into()
            .map_err(ServerError::from_field)?;
        let tasks = self.ops.list_tasks(filter).await?;
        Ok(Response::new(pb::ListTasksResponse {
            tasks: tasks.iter().map(|t| self.wire(t)).collect(),
        }))
    }

    async fn describe_task(
        &self,
        request: Request<pb::DescribeTaskRequest>,
    ) -> Result<Response<pb::DescribeTaskResponse>, Status> {
        let task = self.ops.describe_task(&request.into_inner().id).await?;
        Ok(Response::new(pb::DescribeTaskResponse {
            task: Some(self.wire(&task)),
        }))
    }

    type GetTaskLogsStream = LogStream;

    #[tracing::instrument(skip_all, fields(task_id = %request.get_ref().id))]
    async fn get_task_logs(
        &self,
        request: Request<pb::TaskLogsRequest>,
    ) -> Result<Response<LogStream>, Status> {
        let node = self.hub.node();
        if !node.has_applied_own_term() {
            return self.forward_logs(request).await;
        }
        let req = request.into_inner();
        let task = node
            .read(|state| state.task(&req.id).cloned())
            .await?
            .ok_or_else(|| ServerError::NotFound(format!("task {:?} not found", req.id)))?;
        let Some(instance_id) = task.instance_id.clone() else {
            return Err(ServerError::FailedPrecondition(format!(
                "task {} was never placed on an instance, so it has no logs",
                task.id
            ))
            .into());
        };
        let (mut rx, guard) = self.hub.request_logs(
            &instance_id,
            pb::LogRequest {
                request_id: 0,
                task_id: req.id,
                container: req.container,
                follow: req.follow,
                tail: req.tail,
            },
        )?;
        let stream = async_stream_logs(move |yield_tx| async move {
            let _guard = guard;
            while let Some(data) = rx.recv().await {
                if !data.error.is_empty() {
                    let _ = yield_tx
                        .send(Err(Status::failed_precondition(data.error)))
                        .await;
                    return;
                }
                if !data.data.is_empty()
                    && yield_tx
                        .send(Ok(pb::LogChunk {
                            stream: data.stream,
                            data: data.data,
                        }))
                        .await
                        .is_err()
                {
                    return;
                }
                if data.end {
                    return;
                }
            }
            let _ = yield_tx
                .send(Err(Status::unavailable(
                    "the agent's session ended while sending logs; retry",
                )))
                .await;
        });
        Ok(Response::new(stream))
    }
}

/// A stream fed by a spawned producer; dropping the stream ends the producer
/// at its next send (and drops whatever it holds, such as the request guard).
fn async_stream_logs<F, Fut>(producer: F) -> LogStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<pb::LogChunk, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(producer(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

impl TasksApi {
    /// Followers hold no agent sessions: pass the call to the leader with
    /// the caller's own credentials.
    async fn forward_logs(
        &self,
        request: Request<pb::TaskLogsRequest>,
    ) -> Result<Response<LogStream>, Status> {
        let node = self.hub.node();
        node.leader().await?;
        let leader = leader_address(node);
        if leader.is_empty() || leader == node.advertise() {
            return Err(ServerError::NoLeader("no leader to read logs through".into()).into());
        }
        let channel = node
            .peers()
            .channel(&leader)
            .map_err(ServerError::Internal)?;
        let authorization = request.metadata().get("authorization").cloned();
        let mut forwarded = Request::new(request.into_inner());
        if let Some(value) = authorization {
            forwarded.metadata_mut().insert("authorization", value);
        }
        let response = TaskServiceClient::new(channel)
            .get_task_logs(forwarded)
            .await?;
        let stream: LogStream = Box::pin(response.into_inner());
        Ok(Response::new(stream))
    }
}
