//! RunTask, StartTask, StopTask, ListTasks, DescribeTask.

use berth_types::limits;
use berth_types::task::parse_override;
use berth_types::{
    Command, CommandOutput, RunTaskInput, RunTasks, StartTaskInput, Task, TaskFilter, TaskLaunch,
    TaskStatus, DEFAULT_CLUSTER, MAX_TASKS_PER_RUN,
};

use super::{check_len, invalid, unexpected, Ops};
use crate::api::now_ms;
use crate::error::ServerError;

/// Task ids are random, so ids chosen by different proposers never clash.
fn new_task_id() -> String {
    berth_pki::random_hex(16)
}

/// The command for `count` new tasks: placed by the scheduler when
/// `instance_ids` is empty (RunTask), else one on each (StartTask).
fn run_command(
    launch: TaskLaunch,
    count: usize,
    instance_ids: Vec<String>,
    placement_strategies: Vec<String>,
    placement_constraints: Vec<String>,
) -> Result<RunTasks, ServerError> {
    if launch.task_definition.trim().is_empty() {
        return Err(invalid(
            "taskDefinition",
            "required: FAMILY or FAMILY:REVISION, e.g. web or web:3",
        ));
    }
    check_len("taskDefinition", &launch.task_definition, 512)?;
    check_len("group", launch.group.as_deref().unwrap_or_default(), 255)?;
    check_len(
        "startedBy",
        launch.started_by.as_deref().unwrap_or_default(),
        128,
    )?;
    check_len(
        "clientToken",
        launch.client_token.as_deref().unwrap_or_default(),
        64,
    )?;
    if launch.overrides.len() > 100 {
        return Err(invalid("overrides", "at most 100 overrides"));
    }
    for (i, o) in launch.overrides.iter().enumerate() {
        check_len(&format!("overrides[{i}]"), o, limits::MAX_OVERRIDE_LEN)?;
    }
    let overrides = launch
        .overrides
        .iter()
        .map(|o| parse_override(o))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServerError::Invalid(e.into()))?;
    Ok(RunTasks {
        cluster: launch
            .cluster
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| DEFAULT_CLUSTER.to_string()),
        task_definition: launch.task_definition,
        task_ids: (0..count).map(|_| new_task_id()).collect(),
        instance_ids,
        group: launch.group.filter(|g| !g.is_empty()),
        started_by: launch.started_by.unwrap_or_default(),
        placement_strategies,
        placement_constraints,
        overrides,
        client_token: launch.client_token.filter(|t| !t.is_empty()),
        at_ms: now_ms(),
    })
}

impl Ops {
    async fn start_tasks(&self, run: RunTasks) -> Result<Vec<Task>, ServerError> {
        match self.node.write(Command::RunTasks(run)).await? {
            CommandOutput::Tasks(tasks) => Ok(tasks),
            other => Err(unexpected(other)),
        }
    }

    pub async fn run_task(&self, input: RunTaskInput) -> Result<Vec<Task>, ServerError> {
        let count = input.count.max(1) as usize;
        if count > MAX_TASKS_PER_RUN {
            return Err(invalid(
                "count",
                format!("at most {MAX_TASKS_PER_RUN} tasks per RunTask; split bigger runs"),
            ));
        }
        berth_scheduler::parse_strategies(&input.placement_strategies)
            .map_err(|e| invalid("placementStrategy", e.to_string()))?;
        berth_scheduler::parse_constraints(&input.placement_constraints)
            .map_err(|e| invalid("placementConstraints", e.to_string()))?;
        let run = run_command(
            input.launch,
            count,
            Vec::new(),
            input.placement_strategies,
            input.placement_constraints,
        )?;
        let tasks = self.start_tasks(run).await?;
        tracing::info!(tasks = tasks.len(), "tasks accepted");
        Ok(tasks)
    }

    pub async fn start_task(&self, input: StartTaskInput) -> Result<Vec<Task>, ServerError> {
        if input.instance_ids.is_empty() {
            return Err(invalid(
                "instanceIds",
                "name at least one instance (InstanceService/ListInstances lists them; the berth CLI: berth instance list)",
            ));
        }
        if input.instance_ids.len() > MAX_TASKS_PER_RUN {
            return Err(invalid(
                "instanceIds",
                format!("at most {MAX_TASKS_PER_RUN} instances per StartTask"),
            ));
        }
        let count = input.instance_ids.len();
        let run = run_command(
            input.launch,
            count,
            input.instance_ids,
            Vec::new(),
            Vec::new(),
        )?;
        self.start_tasks(run).await
    }

    pub async fn stop_task(&self, id: String, reason: String) -> Result<Task, ServerError> {
        check_len("reason", &reason, limits::MAX_REASON_LEN)?;
        check_len("id", &id, limits::MAX_ID_LEN)?;
        let output = self
            .node
            .write(Command::StopTask {
                task_id: id,
                reason,
                at_ms: now_ms(),
            })
            .await?;
        let CommandOutput::Task(task) = output else {
            return Err(unexpected(output));
        };
        tracing::info!(task_id = %task.id, "task stop requested");
        Ok(task)
    }

    pub async fn list_tasks(&self, filter: TaskFilter) -> Result<Vec<Task>, ServerError> {
        self.node
            .read(|state| {
                let matches = |t: &&Task| {
                    filter.cluster.as_ref().is_none_or(|c| t.cluster == *c)
                        && filter
                            .instance_id
                            .as_ref()
                            .is_none_or(|i| t.instance_id.as_deref() == Some(i.as_str()))
                        && filter.family.as_ref().is_none_or(|f| t.family == *f)
                        && filter.status.is_none_or(|s| t.last_status == s)
                };
                let mut tasks: Vec<&Task> = match &filter.instance_id {
                    None => state.tasks().filter(matches).collect(),
                    Some(instance_id) => {
                        // Only this instance's tasks, not a scan of all.
                        let mut on: Vec<_> = state.active_tasks_on(instance_id).collect();
                        if filter.status.is_none_or(|s| s == TaskStatus::Stopped) {
                            on.extend(
                                state
                                    .tasks()
                                    .filter(|t| t.last_status == TaskStatus::Stopped),
                            );
                        }
                        on.into_iter().filter(matches).collect()
                    }
                };
                tasks.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
                tasks.into_iter().cloned().collect()
            })
            .await
    }

    pub async fn describe_task(&self, id: &str) -> Result<Task, ServerError> {
        self.node
            .read(|state| state.task(id).cloned())
            .await?
            .ok_or_else(|| ServerError::NotFound(format!("task {id:?} not found")))
    }

    /// Where `task`'s container ports are published on its instance (none
    /// before it is placed), from its definition in this server's state.
    pub fn network_bindings(&self, task: &Task) -> Vec<berth_types::NetworkBinding> {
        let applied = self.node.state().read();
        applied
            .state
            .task_definition(&task.family, task.revision)
            .map(|td| berth_types::resources::network_bindings(&td.spec, &task.reservation))
            .unwrap_or_default()
    }
}
