//! RunTask, StartTask, StopTask, DescribeTasks, ListTasks.

use berth_ecs::arn::{self, Resource, Scope};
use berth_ecs::clusters::Failure;
use berth_ecs::error::{include_tags, EcsError, ErrorType};
use berth_ecs::page;
use berth_ecs::run_task::{run_task_input, start_task_input, RunTaskRequest};
use berth_ecs::tasks::{
    self as shapes, task_in, task_query, DescribeTasksRequest, ListTasksRequest, StopTaskRequest,
    MAX_DESCRIBED,
};
use berth_types::{State, Task};
use serde_json::json;

use super::{answer, from_server, EcsApi, EcsResult};

/// The images of `task`'s containers from its definition (kept after
/// deregistration, so a stopped task still shows them).
fn images_of(state: &State, task: &Task) -> Vec<(String, String)> {
    state
        .task_definition(&task.family, task.revision)
        .map(|td| shapes::images(&td.spec))
        .unwrap_or_default()
}

impl EcsApi {
    /// Tasks in ECS's shape, with their images and port bindings.
    async fn task_shapes(
        &self,
        scope: &Scope,
        tasks: Vec<Task>,
    ) -> Result<Vec<shapes::Task>, EcsError> {
        let with_images = self
            .ops
            .node()
            .read(|state| {
                tasks
                    .into_iter()
                    .map(|t| {
                        let images = images_of(state, &t);
                        (t, images)
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .map_err(from_server)?;
        Ok(with_images
            .iter()
            .map(|(t, images)| shapes::task(scope, t, images, &self.ops.network_bindings(t)))
            .collect())
    }

    /// ClusterNotFoundException for a cluster that does not exist, before
    /// answering anything about its tasks.
    async fn existing_cluster(&self, cluster: Option<&str>) -> Result<String, EcsError> {
        let name = arn::cluster_name(cluster)?;
        self.ops
            .describe_cluster(&name)
            .await
            .map_err(from_server)?;
        Ok(name)
    }

    pub(super) async fn run_task(&self, scope: &Scope, request: RunTaskRequest) -> EcsResult {
        let input = run_task_input(&request)?;
        let tasks = self.ops.run_task(input).await.map_err(from_server)?;
        // A task Berth cannot place yet waits as PROVISIONING with its
        // reason rather than failing, so there are no placement failures.
        let tasks = self.task_shapes(scope, tasks).await?;
        answer(json!({ "tasks": tasks, "failures": Vec::<Failure>::new() }))
    }

    pub(super) async fn start_task(&self, scope: &Scope, request: RunTaskRequest) -> EcsResult {
        let input = start_task_input(&request)?;
        let tasks = self.ops.start_task(input).await.map_err(from_server)?;
        let tasks = self.task_shapes(scope, tasks).await?;
        answer(json!({ "tasks": tasks, "failures": Vec::<Failure>::new() }))
    }

    pub(super) async fn stop_task(&self, scope: &Scope, request: StopTaskRequest) -> EcsResult {
        let cluster = self.existing_cluster(request.cluster.as_deref()).await?;
        let id = task_in(&cluster, &request.task)?;
        let missing = || {
            EcsError::new(
                ErrorType::InvalidParameter,
                format!("task {:?} not found in cluster {cluster:?}", request.task),
            )
        };
        // Checked first: stopping a task of another cluster by its id alone
        // would act outside the cluster the caller named.
        match self.ops.describe_task(&id).await {
            Ok(task) if task.cluster == cluster => {}
            Ok(_) => return Err(missing()),
            Err(crate::error::ServerError::NotFound(_)) => return Err(missing()),
            Err(e) => return Err(from_server(e)),
        }
        let reason = request
            .reason
            .unwrap_or_else(|| "Task stopped by the user (StopTask)".into());
        let task = self.ops.stop_task(id, reason).await.map_err(from_server)?;
        let mut shaped = self.task_shapes(scope, vec![task]).await?;
        answer(json!({ "task": shaped.pop() }))
    }

    pub(super) async fn describe_tasks(
        &self,
        scope: &Scope,
        request: DescribeTasksRequest,
    ) -> EcsResult {
        let with_tags = include_tags(&request.include)?;
        if request.tasks.is_empty() || request.tasks.len() > MAX_DESCRIBED {
            return Err(EcsError::new(
                ErrorType::InvalidParameter,
                format!("tasks: name between 1 and {MAX_DESCRIBED} tasks"),
            ));
        }
        let cluster = self.existing_cluster(request.cluster.as_deref()).await?;
        let mut ids = Vec::new();
        let mut failures = Vec::new();
        for input in &request.tasks {
            match arn::task(input)? {
                // ECS reports a task of another cluster as missing from
                // this one rather than failing the whole call.
                (Some(other), _) if other != cluster => {
                    failures.push(Failure::missing(input.clone()))
                }
                (_, id) => ids.push(id),
            }
        }
        let found = self
            .ops
            .node()
            .read(|state| {
                ids.iter()
                    .map(|id| {
                        state
                            .task(id)
                            .filter(|t| t.cluster == cluster)
                            .cloned()
                            .ok_or_else(|| id.clone())
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .map_err(from_server)?;
        let mut tasks = Vec::new();
        for item in found {
            match item {
                Ok(task) => tasks.push(task),
                Err(id) => failures.push(Failure::missing(scope.arn(Resource::Task {
                    cluster: Some(cluster.clone()),
                    id,
                }))),
            }
        }
        let mut tasks = self.task_shapes(scope, tasks).await?;
        if !with_tags {
            // ECS answers tags only when asked for.
            tasks.iter_mut().for_each(|t| t.tags.clear());
        }
        answer(json!({ "tasks": tasks, "failures": failures }))
    }

    pub(super) async fn list_tasks(&self, scope: &Scope, request: ListTasksRequest) -> EcsResult {
        let query = task_query(&request)?;
        self.existing_cluster(Some(&query.cluster)).await?;
        let ids: Vec<String> = self
            .ops
            .list_tasks(query.filter())
            .await
            .map_err(from_server)?
            .into_iter()
            .filter(|t| query.matches(t))
            .map(|t| t.id)
            .collect();
        let (arns, next_token) = page::page_of_keys(
            ids,
            request.next_token.as_deref(),
            request.max_results,
            |id| {
                scope.arn(Resource::Task {
                    cluster: Some(query.cluster.clone()),
                    id,
                })
            },
        )?;
        answer(json!({ "taskArns": arns, "nextToken": next_token }))
    }
}
