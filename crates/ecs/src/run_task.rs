//! ECS's RunTask and StartTask requests, read into Berth's launch inputs.
//! What Berth does (the task definition, count, group, startedBy,
//! environment overrides, placement, client token) is taken; what it does
//! not (roles, Fargate, capacity providers, ECS Exec, awsvpc subnets, other
//! overrides) is refused as `UnsupportedFeatureException` naming the field
//! and what to use instead, never dropped.

use serde::Deserialize;

use crate::arn;
use crate::clusters::{NameValue, Tag};
use crate::error::{EcsError, ErrorType};

/// ECS starts at most ten tasks per RunTask call.
pub const MAX_COUNT: u32 = 10;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerOverride {
    pub name: String,
    #[serde(default)]
    pub environment: Vec<NameValue>,
    pub command: Option<serde_json::Value>,
    pub cpu: Option<serde_json::Value>,
    pub memory: Option<serde_json::Value>,
    pub memory_reservation: Option<serde_json::Value>,
    pub environment_files: Option<serde_json::Value>,
    pub resource_requirements: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskOverride {
    #[serde(default)]
    pub container_overrides: Vec<ContainerOverride>,
    pub cpu: Option<serde_json::Value>,
    pub memory: Option<serde_json::Value>,
    pub task_role_arn: Option<String>,
    pub execution_role_arn: Option<String>,
    pub ephemeral_storage: Option<serde_json::Value>,
    pub inference_accelerator_overrides: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlacementConstraint {
    #[serde(rename = "type")]
    pub kind: String,
    pub expression: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlacementStrategy {
    #[serde(rename = "type")]
    pub kind: String,
    pub field: Option<String>,
}

/// RunTask's and StartTask's members (StartTask names
/// `containerInstances` instead of placement).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunTaskRequest {
    pub cluster: Option<String>,
    pub task_definition: String,
    pub count: Option<u32>,
    pub group: Option<String>,
    pub started_by: Option<String>,
    pub overrides: Option<TaskOverride>,
    #[serde(default)]
    pub placement_constraints: Vec<PlacementConstraint>,
    #[serde(default)]
    pub placement_strategy: Vec<PlacementStrategy>,
    pub launch_type: Option<String>,
    #[serde(default)]
    pub capacity_provider_strategy: Vec<serde_json::Value>,
    pub network_configuration: Option<serde_json::Value>,
    pub platform_version: Option<String>,
    pub enable_execute_command: Option<bool>,
    pub enable_ecs_managed_tags: Option<bool>,
    pub propagate_tags: Option<String>,
    pub reference_id: Option<String>,
    #[serde(default)]
    pub tags: Vec<Tag>,
    pub client_token: Option<String>,
    #[serde(default)]
    pub volume_configurations: Vec<serde_json::Value>,
    /// StartTask only.
    #[serde(default)]
    pub container_instances: Vec<String>,
}

fn unsupported(field: &str, instead: &str) -> EcsError {
    EcsError::new(
        ErrorType::UnsupportedFeature,
        format!("{field} is not supported by Berth; {instead}"),
    )
}

fn invalid(message: String) -> EcsError {
    EcsError::new(ErrorType::InvalidParameter, message)
}

/// `CONTAINER.env.KEY=VALUE` for each environment override, refusing the
/// overrides Berth does not apply.
fn overrides(task: Option<&TaskOverride>) -> Result<Vec<String>, EcsError> {
    let Some(task) = task else {
        return Ok(Vec::new());
    };
    let roles = "Berth has no IAM roles; give tasks credentials as secrets (secrets/valueFrom)";
    if task.task_role_arn.is_some() {
        return Err(unsupported("overrides.taskRoleArn", roles));
    }
    if task.execution_role_arn.is_some() {
        return Err(unsupported("overrides.executionRoleArn", roles));
    }
    let sizes = "register a task definition revision with the size instead";
    for (present, field) in [
        (task.cpu.is_some(), "overrides.cpu"),
        (task.memory.is_some(), "overrides.memory"),
        (
            task.ephemeral_storage.is_some(),
            "overrides.ephemeralStorage",
        ),
        (
            task.inference_accelerator_overrides.is_some(),
            "overrides.inferenceAcceleratorOverrides",
        ),
    ] {
        if present {
            return Err(unsupported(field, sizes));
        }
    }
    let mut out = Vec::new();
    for (i, c) in task.container_overrides.iter().enumerate() {
        let at = |field: &str| format!("overrides.containerOverrides[{i}].{field}");
        for (present, field) in [
            (c.command.is_some(), "command"),
            (c.cpu.is_some(), "cpu"),
            (c.memory.is_some(), "memory"),
            (c.memory_reservation.is_some(), "memoryReservation"),
            (c.environment_files.is_some(), "environmentFiles"),
            (c.resource_requirements.is_some(), "resourceRequirements"),
        ] {
            if present {
                return Err(unsupported(
                    &at(field),
                    "only environment overrides are applied; register a task definition revision for the rest",
                ));
            }
        }
        if c.name.is_empty() {
            return Err(invalid(format!("{}: required", at("name"))));
        }
        for pair in &c.environment {
            out.push(format!("{}.env.{}={}", c.name, pair.name, pair.value));
        }
    }
    Ok(out)
}

fn placement(request: &RunTaskRequest) -> Result<(Vec<String>, Vec<String>), EcsError> {
    let mut strategies = Vec::new();
    for (i, s) in request.placement_strategy.iter().enumerate() {
        strategies.push(match (s.kind.as_str(), s.field.as_deref()) {
            ("random", _) => "random".to_string(),
            ("binpack" | "spread", Some(field)) => format!("{}:{field}", s.kind),
            _ => {
                return Err(invalid(format!(
                    "placementStrategy[{i}]: type {:?} with field {:?}; use binpack (cpu or memory), spread (instanceId or attribute:NAME) or random",
                    s.kind, s.field
                )))
            }
        });
    }
    let mut constraints = Vec::new();
    for (i, c) in request.placement_constraints.iter().enumerate() {
        constraints.push(match (c.kind.as_str(), c.expression.as_deref()) {
            ("distinctInstance", _) => "distinctInstance".to_string(),
            ("memberOf", Some(expression)) => format!("memberOf({expression})"),
            _ => {
                return Err(invalid(format!(
                    "placementConstraints[{i}]: type {:?}; use distinctInstance or memberOf with an expression",
                    c.kind
                )))
            }
        });
    }
    Ok((strategies, constraints))
}

/// What both calls refuse or take the same way.
fn launch(request: &RunTaskRequest) -> Result<berth_types::TaskLaunch, EcsError> {
    match request.launch_type.as_deref() {
        None | Some("EXTERNAL") | Some("EC2") => {}
        Some("FARGATE") => {
            return Err(unsupported(
                "launchType FARGATE",
                "tasks run on the instances registered in the cluster: use EXTERNAL",
            ))
        }
        Some(other) => return Err(invalid(format!("launchType: unknown {other:?}"))),
    }
    if !request.capacity_provider_strategy.is_empty() {
        return Err(unsupported(
            "capacityProviderStrategy",
            "tasks are placed on the cluster's registered instances; use placementConstraints to choose among them",
        ));
    }
    if request.network_configuration.is_some() {
        return Err(unsupported(
            "networkConfiguration",
            "give the task definition networkMode task (awsvpc) for a task address of its own",
        ));
    }
    if request.platform_version.is_some() {
        return Err(invalid(
            "platformVersion applies to Fargate only; leave it out".into(),
        ));
    }
    if request.enable_execute_command == Some(true) {
        return Err(unsupported(
            "enableExecuteCommand",
            "read the task's output with GetTaskLogs (berth task logs)",
        ));
    }
    if !request.tags.is_empty()
        || matches!(request.propagate_tags.as_deref(), Some(p) if p != "NONE")
    {
        return Err(unsupported(
            "tags",
            "run the task without them, then tag it with TagResource on its ARN",
        ));
    }
    if !request.volume_configurations.is_empty() {
        return Err(unsupported(
            "volumeConfigurations",
            "declare host or scratch volumes in the task definition",
        ));
    }
    Ok(berth_types::TaskLaunch {
        cluster: Some(arn::cluster_name(request.cluster.as_deref())?),
        task_definition: arn::task_definition(&request.task_definition)?,
        group: request.group.clone().filter(|g| !g.is_empty()),
        started_by: request.started_by.clone().filter(|s| !s.is_empty()),
        overrides: overrides(request.overrides.as_ref())?,
        client_token: request.client_token.clone().filter(|t| !t.is_empty()),
    })
}

/// RunTask: tasks the scheduler places.
pub fn run_task_input(request: &RunTaskRequest) -> Result<berth_types::RunTaskInput, EcsError> {
    let count = request.count.unwrap_or(1);
    if !(1..=MAX_COUNT).contains(&count) {
        return Err(invalid(format!(
            "count must be between 1 and {MAX_COUNT}, not {count}"
        )));
    }
    let launch = launch(request)?;
    let (placement_strategies, placement_constraints) = placement(request)?;
    Ok(berth_types::RunTaskInput {
        launch,
        count,
        placement_strategies,
        placement_constraints,
    })
}

/// StartTask: one task on each named container instance (ids or ARNs).
pub fn start_task_input(request: &RunTaskRequest) -> Result<berth_types::StartTaskInput, EcsError> {
    if request.container_instances.is_empty() {
        return Err(invalid("containerInstances: name at least one".into()));
    }
    if !request.placement_strategy.is_empty() || !request.placement_constraints.is_empty() {
        return Err(invalid(
            "StartTask places on the containerInstances it names; placement applies to RunTask"
                .into(),
        ));
    }
    let launch = launch(request)?;
    let instance_ids = request
        .container_instances
        .iter()
        .map(|i| arn::container_instance(i).map(|(_, id)| id))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(berth_types::StartTaskInput {
        launch,
        instance_ids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> RunTaskRequest {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn what_berth_does_is_taken_in_its_own_terms() {
        let input = run_task_input(&parse(
            r#"{
                "cluster": "arn:aws:ecs:eu-west-1:000000000000:cluster/prod",
                "taskDefinition": "arn:aws:ecs:eu-west-1:000000000000:task-definition/web:3",
                "count": 2, "group": "batch", "startedBy": "nightly", "launchType": "EXTERNAL",
                "clientToken": "5f3c",
                "overrides": {"containerOverrides": [{"name": "app",
                    "environment": [{"name": "MODE", "value": "debug"}]}]},
                "placementStrategy": [{"type": "spread", "field": "attribute:zone"}, {"type": "random"}],
                "placementConstraints": [{"type": "distinctInstance"},
                    {"type": "memberOf", "expression": "attribute:zone == a"}]
            }"#,
        ))
        .unwrap();
        assert_eq!(input.launch.cluster.as_deref(), Some("prod"));
        assert_eq!(input.launch.task_definition, "web:3");
        assert_eq!(input.count, 2);
        assert_eq!(input.launch.group.as_deref(), Some("batch"));
        assert_eq!(input.launch.started_by.as_deref(), Some("nightly"));
        assert_eq!(input.launch.client_token.as_deref(), Some("5f3c"));
        assert_eq!(input.launch.overrides, ["app.env.MODE=debug"]);
        assert_eq!(
            input.placement_strategies,
            ["spread:attribute:zone", "random"]
        );
        assert_eq!(
            input.placement_constraints,
            ["distinctInstance", "memberOf(attribute:zone == a)"]
        );
        let defaults = run_task_input(&parse(r#"{"taskDefinition": "web"}"#)).unwrap();
        assert_eq!(defaults.count, 1);
        assert_eq!(defaults.launch.cluster.as_deref(), Some("default"));

        let start = start_task_input(&parse(
            r#"{"taskDefinition": "web", "containerInstances":
                ["i-1", "arn:aws:ecs:r:1:container-instance/prod/i-2"]}"#,
        ))
        .unwrap();
        assert_eq!(start.instance_ids, ["i-1", "i-2"]);
    }

    #[test]
    fn what_berth_does_not_do_is_refused_by_name() {
        let refused = [
            (r#""launchType": "FARGATE""#, "FARGATE"),
            (
                r#""capacityProviderStrategy": [{"capacityProvider": "x"}]"#,
                "capacityProviderStrategy",
            ),
            (
                r#""networkConfiguration": {"awsvpcConfiguration": {"subnets": ["s"]}}"#,
                "networkMode task",
            ),
            (r#""enableExecuteCommand": true"#, "enableExecuteCommand"),
            (r#""tags": [{"key": "a", "value": "b"}]"#, "tags"),
            (r#""propagateTags": "TASK_DEFINITION""#, "tags"),
            (r#""volumeConfigurations": [{}]"#, "volumeConfigurations"),
            (
                r#""overrides": {"taskRoleArn": "arn:aws:iam::1:role/x"}"#,
                "IAM roles",
            ),
            (r#""overrides": {"memory": "512"}"#, "overrides.memory"),
            (
                r#""overrides": {"containerOverrides": [{"name": "app", "command": ["sh"]}]}"#,
                "containerOverrides[0].command",
            ),
        ];
        for (member, says) in refused {
            let request = parse(&format!(r#"{{"taskDefinition": "web", {member}}}"#));
            let e = run_task_input(&request).unwrap_err();
            assert_eq!(e.kind, ErrorType::UnsupportedFeature, "{member}: {e}");
            assert!(e.message.contains(says), "{member}: {e}");
        }
        let invalid = [
            (r#""count": 0"#, "count"),
            (r#""count": 11"#, "count"),
            (r#""launchType": "SPOT""#, "launchType"),
            (r#""platformVersion": "LATEST""#, "platformVersion"),
            (
                r#""placementStrategy": [{"type": "binpack"}]"#,
                "placementStrategy[0]",
            ),
            (
                r#""placementConstraints": [{"type": "memberOf"}]"#,
                "placementConstraints[0]",
            ),
            (
                r#""cluster": "arn:aws:ecs:r:1:service/prod/web""#,
                "cluster",
            ),
        ];
        for (member, says) in invalid {
            let request = parse(&format!(r#"{{"taskDefinition": "web", {member}}}"#));
            let e = run_task_input(&request).unwrap_err();
            assert_eq!(e.kind, ErrorType::InvalidParameter, "{member}: {e}");
            assert!(e.message.contains(says), "{member}: {e}");
        }
        let e = start_task_input(&parse(r#"{"taskDefinition": "web"}"#)).unwrap_err();
        assert!(e.message.contains("containerInstances"), "{e}");
        let e = start_task_input(&parse(
            r#"{"taskDefinition": "web", "containerInstances": ["i-1"], "placementConstraints": [{"type": "distinctInstance"}]}"#,
        ))
        .unwrap_err();
        assert!(e.message.contains("RunTask"), "{e}");
    }
}
