//! TaskService: RunTask, StartTask, StopTask, list/describe, and logs
//! streamed from the agent through the leader's session with it.

use std::pin::Pin;

use berth_proto::pb;
use berth_proto::pb::task_service_client::TaskServiceClient;
use berth_proto::pb::task_service_server::TaskService;
use berth_types::task::parse_override;
use berth_types::{
    Command, CommandOutput, FieldError, RunTasks, TaskStatus, DEFAULT_CLUSTER, MAX_TASKS_PER_RUN,
};
use futures::Stream;
use tonic::{Request, Response, Status};

use crate::api::now_ms;
use crate::error::ServerError;
use crate::session::{leader_address, SessionHub};

fn invalid(field: &str, message: impl Into<String>) -> Status {
    ServerError::Invalid(FieldError::new(field, message).into()).into()
}

fn unexpected(output: CommandOutput) -> Status {
    ServerError::Internal(format!("unexpected command output {output:?}")).into()
}

/// Task ids are random, so ids chosen by different proposers never clash.
fn new_task_id() -> String {
    berth_pki::random_hex(16)
}

#[derive(Clone)]
pub struct TasksApi {
    pub hub: SessionHub,
}

struct Common {
    cluster: String,
    task_definition: String,
    group: Option<String>,
    started_by: String,
    overrides: Vec<(String, String, String)>,
    client_token: Option<String>,
}

impl Common {
    /// The command for `count` new tasks: placed by the scheduler when
    /// `instance_ids` is empty (RunTask), else one on each (StartTask).
    fn into_run(
        self,
        count: usize,
        instance_ids: Vec<String>,
        placement_strategies: Vec<String>,
        placement_constraints: Vec<String>,
    ) -> RunTasks {
        RunTasks {
            cluster: self.cluster,
            task_definition: self.task_definition,
            task_ids: (0..count).map(|_| new_task_id()).collect(),
            instance_ids,
            group: self.group,
            started_by: self.started_by,
            placement_strategies,
            placement_constraints,
            overrides: self.overrides,
            client_token: self.client_token,
            at_ms: now_ms(),
        }
    }
}

fn common(
    cluster: String,
    task_definition: String,
    group: String,
    started_by: String,
    overrides: Vec<String>,
    client_token: String,
) -> Result<Common, Status> {
    if task_definition.trim().is_empty() {
        return Err(invalid(
            "taskDefinition",
            "required: FAMILY or FAMILY:REVISION, e.g. web or web:3",
        ));
    }
    for (field, value, max) in [
        ("group", &group, 255),
        ("startedBy", &started_by, 128),
        ("clientToken", &client_token, 64),
    ] {
        if value.len() > max {
            return Err(invalid(field, format!("must be at most {max} characters")));
        }
    }
    let overrides = overrides
        .iter()
        .map(|o| parse_override(o))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Status::from(ServerError::Invalid(e.into())))?;
    Ok(Common {
        cluster: if cluster.is_empty() {
            DEFAULT_CLUSTER.to_string()
        } else {
            cluster
        },
        task_definition,
        group: Some(group).filter(|g| !g.is_empty()),
        started_by,
        overrides,
        client_token: Some(client_token).filter(|t| !t.is_empty()),
    })
}

impl TasksApi {
    async fn run(&self, run: RunTasks) -> Result<Vec<pb::Task>, Status> {
        let output = self.hub.node().write(Command::RunTasks(run)).await?;
        let CommandOutput::Tasks(tasks) = output else {
            return Err(unexpected(output));
        };
        Ok(tasks.iter().map(Into::into).collect())
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
        let req = request.into_inner();
        let count = if req.count == 0 {
            1
        } else {
            req.count as usize
        };
        if count > MAX_TASKS_PER_RUN {
            return Err(invalid(
                "count",
                format!("at most {MAX_TASKS_PER_RUN} tasks per RunTask; split bigger runs"),
            ));
        }
        berth_scheduler::parse_strategies(&req.placement_strategies)
            .map_err(|e| invalid("placementStrategy", e.to_string()))?;
        berth_scheduler::parse_constraints(&req.placement_constraints)
            .map_err(|e| invalid("placementConstraints", e.to_string()))?;
        let c = common(
            req.cluster,
            req.task_definition,
            req.group,
            req.started_by,
            req.overrides,
            req.client_token,
        )?;
        let run = c.into_run(
            count,
            Vec::new(),
            req.placement_strategies,
            req.placement_constraints,
        );
        let tasks = self.run(run).await?;
        tracing::info!(tasks = tasks.len(), "tasks accepted");
        Ok(Response::new(pb::RunTaskResponse { tasks }))
    }

    #[tracing::instrument(skip_all, fields(task_definition = %request.get_ref().task_definition))]
    async fn start_task(
        &self,
        request: Request<pb::StartTaskRequest>,
    ) -> Result<Response<pb::StartTaskResponse>, Status> {
        let req = request.into_inner();
        if req.instance_ids.is_empty() {
            return Err(invalid(
                "instanceIds",
                "name at least one instance (berth instance list shows them)",
            ));
        }
        if req.instance_ids.len() > MAX_TASKS_PER_RUN {
            return Err(invalid(
                "instanceIds",
                format!("at most {MAX_TASKS_PER_RUN} instances per StartTask"),
            ));
        }
        let c = common(
            req.cluster,
            req.task_definition,
            req.group,
            req.started_by,
            req.overrides,
            req.client_token,
        )?;
        let run = c.into_run(
            req.instance_ids.len(),
            req.instance_ids,
            Vec::new(),
            Vec::new(),
        );
        let tasks = self.run(run).await?;
        Ok(Response::new(pb::StartTaskResponse { tasks }))
    }

    #[tracing::instrument(skip_all, fields(task_id = %request.get_ref().id))]
    async fn stop_task(
        &self,
        request: Request<pb::StopTaskRequest>,
    ) -> Result<Response<pb::StopTaskResponse>, Status> {
        let req = request.into_inner();
        if req.reason.len() > 1024 {
            return Err(invalid("reason", "must be at most 1024 characters"));
        }
        let output = self
            .hub
            .node()
            .write(Command::StopTask {
                task_id: req.id,
                reason: req.reason,
                at_ms: now_ms(),
            })
            .await?;
        let CommandOutput::Task(task) = output else {
            return Err(unexpected(output));
        };
        tracing::info!(task_id = %task.id, "task stop requested");
        Ok(Response::new(pb::StopTaskResponse {
            task: Some((&task).into()),
        }))
    }

    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let req = request.into_inner();
        let status = if req.status.is_empty() {
            None
        } else {
            Some(TaskStatus::parse(&req.status).ok_or_else(|| {
                invalid(
                    "status",
                    format!(
                        "{:?} is not PROVISIONING, PENDING, RUNNING, STOPPING or STOPPED",
                        req.status
                    ),
                )
            })?)
        };
        let tasks = self
            .hub
            .node()
            .read(|state| {
                let matches = |t: &&berth_types::Task| {
                    (req.cluster.is_empty() || t.cluster == req.cluster)
                        && (req.instance_id.is_empty()
                            || t.instance_id.as_deref() == Some(req.instance_id.as_str()))
                        && (req.family.is_empty() || t.family == req.family)
                        && status.is_none_or(|s| t.last_status == s)
                };
                let mut tasks: Vec<&berth_types::Task> = if req.instance_id.is_empty() {
                    state.tasks().filter(matches).collect()
                } else {
                    // Only this instance's tasks, not a scan of all of them.
                    let mut on: Vec<_> = state.active_tasks_on(&req.instance_id).collect();
                    if status.is_none_or(|s| s == TaskStatus::Stopped) {
                        on.extend(
                            state
                                .tasks()
                                .filter(|t| t.last_status == TaskStatus::Stopped),
                        );
                    }
                    on.into_iter().filter(matches).collect()
                };
                tasks.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
                tasks.into_iter().map(Into::into).collect()
            })
            .await?;
        Ok(Response::new(pb::ListTasksResponse { tasks }))
    }

    async fn describe_task(
        &self,
        request: Request<pb::DescribeTaskRequest>,
    ) -> Result<Response<pb::DescribeTaskResponse>, Status> {
        let id = request.into_inner().id;
        let task = self
            .hub
            .node()
            .read(|state| state.task(&id).map(Into::into))
            .await?
            .ok_or_else(|| ServerError::NotFound(format!("task {id:?} not found")))?;
        Ok(Response::new(pb::DescribeTaskResponse { task: Some(task) }))
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
