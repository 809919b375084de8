//! A task as ECS's RunTask, StartTask, StopTask and DescribeTasks answer
//! with it. Berth's task records carry ECS's statuses, stop codes and times
//! already; what the record does not hold (container images, the ports the
//! containers are published on) the caller passes in.

use serde::{Deserialize, Serialize};

use crate::arn::{Resource, Scope};
use crate::clusters::{NameValue, Tag};
use crate::error::{EcsError, ErrorType};
use crate::page::epoch_seconds;

/// Every Berth task runs on an instance someone registered: ECS Anywhere's
/// launch type.
pub const LAUNCH_TYPE: &str = "EXTERNAL";

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkBinding {
    #[serde(rename = "bindIP")]
    pub bind_ip: String,
    pub container_port: u32,
    pub host_port: u32,
    pub protocol: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkInterface {
    pub private_ipv4_address: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    pub container_arn: String,
    pub task_arn: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    pub last_status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    pub network_bindings: Vec<NetworkBinding>,
    pub network_interfaces: Vec<NetworkInterface>,
    pub health_status: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerOverride {
    pub name: String,
    pub environment: Vec<NameValue>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Overrides {
    pub container_overrides: Vec<ContainerOverride>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    pub task_arn: String,
    pub cluster_arn: String,
    pub task_definition_arn: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_instance_arn: Option<String>,
    pub last_status: String,
    pub desired_status: String,
    pub launch_type: String,
    pub cpu: String,
    pub memory: String,
    pub containers: Vec<Container>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub started_by: String,
    pub group: String,
    pub created_at: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopping_at: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_code: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub stopped_reason: String,
    pub health_status: String,
    pub overrides: Overrides,
    pub tags: Vec<Tag>,
}

/// A task's health as ECS sums it up: UNHEALTHY if any container is,
/// HEALTHY if every container is, UNKNOWN otherwise (no health checks, or
/// not decided yet).
fn task_health(containers: &[berth_types::ContainerState]) -> &'static str {
    use berth_types::Health;
    if containers.iter().any(|c| c.health == Health::Unhealthy) {
        "UNHEALTHY"
    } else if !containers.is_empty() && containers.iter().all(|c| c.health == Health::Healthy) {
        "HEALTHY"
    } else {
        "UNKNOWN"
    }
}

/// ECS's `Task` for `task`. `images` names each container's image (from
/// its task definition), `bindings` the host ports its containers are
/// published on.
pub fn task(
    scope: &Scope,
    task: &berth_types::Task,
    images: &[(String, String)],
    bindings: &[berth_types::NetworkBinding],
) -> Task {
    let task_arn = scope.arn(Resource::Task {
        cluster: Some(task.cluster.clone()),
        id: task.id.clone(),
    });
    // ECS lists every container of the definition from the start; Berth
    // has a container's state once the agent reports it, so the others
    // are shown PENDING until then (a stopped task's unreported ones too,
    // as ECS shows containers that never started).
    let mut states = task.containers.clone();
    for (name, _) in images {
        if !states.iter().any(|c| c.name == *name) {
            states.push(berth_types::ContainerState {
                name: name.clone(),
                status: berth_types::ContainerStatus::Pending,
                exit_code: None,
                reason: String::new(),
                health: berth_types::Health::Unknown,
                restart_count: 0,
            });
        }
    }
    let containers = states
        .iter()
        .map(|c| Container {
            container_arn: scope.arn(Resource::Container {
                cluster: task.cluster.clone(),
                task: task.id.clone(),
                name: c.name.clone(),
            }),
            task_arn: task_arn.clone(),
            name: c.name.clone(),
            image: images
                .iter()
                .find(|(name, _)| *name == c.name)
                .map(|(_, image)| image.clone()),
            last_status: c.status.as_str().into(),
            exit_code: c.exit_code,
            reason: c.reason.clone(),
            network_bindings: bindings
                .iter()
                .filter(|b| b.container_name == c.name)
                .map(|b| NetworkBinding {
                    bind_ip: "0.0.0.0".into(),
                    container_port: b.container_port,
                    host_port: b.host_port,
                    protocol: b.protocol.as_str().into(),
                })
                .collect(),
            network_interfaces: task
                .ip
                .iter()
                .map(|ip| NetworkInterface {
                    private_ipv4_address: ip.clone(),
                })
                .collect(),
            health_status: c.health.as_str().into(),
        })
        .collect();
    let mut container_overrides: Vec<ContainerOverride> = Vec::new();
    // Stored as the pieces of `CONTAINER.env.KEY=VALUE`.
    for (container, key, value) in &task.overrides {
        let pair = NameValue {
            name: key.clone(),
            value: value.clone(),
        };
        match container_overrides
            .iter_mut()
            .find(|o| o.name == *container)
        {
            Some(o) => o.environment.push(pair),
            None => container_overrides.push(ContainerOverride {
                name: container.clone(),
                environment: vec![pair],
            }),
        }
    }
    Task {
        cluster_arn: scope.cluster(&task.cluster),
        task_definition_arn: scope.arn(Resource::TaskDefinition {
            family: task.family.clone(),
            revision: task.revision,
        }),
        container_instance_arn: task.instance_id.as_ref().map(|id| {
            scope.arn(Resource::ContainerInstance {
                cluster: Some(task.cluster.clone()),
                id: id.clone(),
            })
        }),
        last_status: task.last_status.as_str().into(),
        desired_status: task.desired_status.as_str().into(),
        launch_type: LAUNCH_TYPE.into(),
        cpu: task.reservation.cpu.to_string(),
        memory: task.reservation.memory_mib.to_string(),
        health_status: task_health(&task.containers).into(),
        containers,
        started_by: task.started_by.clone(),
        group: task.group.clone(),
        created_at: epoch_seconds(task.created_at_ms),
        started_at: task.started_at_ms.map(epoch_seconds),
        stopping_at: task.stopping_at_ms.map(epoch_seconds),
        stopped_at: task.stopped_at_ms.map(epoch_seconds),
        stop_code: task.stop_code.map(|c| c.as_str().to_string()),
        stopped_reason: task.stopped_reason.clone(),
        overrides: Overrides {
            container_overrides,
        },
        task_arn,
        tags: crate::tags::tag_list(&task.tags),
    }
}

/// ECS's limit on the tasks one DescribeTasks names.
pub const MAX_DESCRIBED: usize = 100;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StopTaskRequest {
    pub cluster: Option<String>,
    pub task: String,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeTasksRequest {
    pub cluster: Option<String>,
    #[serde(default)]
    pub tasks: Vec<String>,
    #[serde(default)]
    pub include: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListTasksRequest {
    pub cluster: Option<String>,
    pub container_instance: Option<String>,
    pub family: Option<String>,
    pub started_by: Option<String>,
    pub service_name: Option<String>,
    pub desired_status: Option<String>,
    pub launch_type: Option<String>,
    pub next_token: Option<String>,
    pub max_results: Option<i64>,
}

/// A task named in a request about `cluster`: its id. A task ARN naming
/// another cluster is refused, as ECS finds no such task in this one.
pub fn task_in(cluster: &str, input: &str) -> Result<String, EcsError> {
    let (named, id) = crate::arn::task(input)?;
    match named {
        Some(other) if other != cluster => Err(EcsError::new(
            ErrorType::InvalidParameter,
            format!("task {input:?} is in cluster {other:?}, not {cluster:?}"),
        )),
        _ => Ok(id),
    }
}

/// What ListTasks asks for, read and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskQuery {
    pub cluster: String,
    pub instance_id: Option<String>,
    pub family: Option<String>,
    pub started_by: Option<String>,
    pub service_name: Option<String>,
    pub desired: berth_types::DesiredStatus,
    /// A filter no Berth task can match (desiredStatus PENDING, a launch
    /// type other than EXTERNAL): the answer is empty, as ECS's is.
    pub matches_nothing: bool,
}

pub fn task_query(request: &ListTasksRequest) -> Result<TaskQuery, EcsError> {
    use berth_types::DesiredStatus;
    let invalid = |m: String| EcsError::new(ErrorType::InvalidParameter, m);
    let cluster = crate::arn::cluster_name(request.cluster.as_deref())?;
    let mut matches_nothing = false;
    // ECS lists the tasks it wants running unless asked for the stopped
    // ones; it never sets a desired status of PENDING.
    let desired = match request.desired_status.as_deref() {
        None | Some("RUNNING") => DesiredStatus::Running,
        Some("STOPPED") => DesiredStatus::Stopped,
        Some("PENDING") => {
            matches_nothing = true;
            DesiredStatus::Running
        }
        Some(other) => {
            return Err(invalid(format!(
                "desiredStatus: {other:?} is not RUNNING, PENDING or STOPPED"
            )))
        }
    };
    match request.launch_type.as_deref() {
        None | Some(LAUNCH_TYPE) => {}
        Some("EC2" | "FARGATE") => matches_nothing = true,
        Some(other) => {
            return Err(invalid(format!(
                "launchType: {other:?} is not EC2, FARGATE or EXTERNAL"
            )))
        }
    }
    let instance_id = match request.container_instance.as_deref() {
        None | Some("") => None,
        Some(text) => Some(crate::arn::container_instance(text)?.1),
    };
    let service_name = match request.service_name.as_deref() {
        None | Some("") => None,
        Some(text) => Some(crate::arn::service(text)?.1),
    };
    let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    Ok(TaskQuery {
        cluster,
        instance_id,
        family: nonempty(&request.family),
        started_by: nonempty(&request.started_by),
        service_name,
        desired,
        matches_nothing,
    })
}

impl TaskQuery {
    /// The filter the application layer applies itself.
    pub fn filter(&self) -> berth_types::TaskFilter {
        berth_types::TaskFilter {
            cluster: Some(self.cluster.clone()),
            instance_id: self.instance_id.clone(),
            family: self.family.clone(),
            status: None,
        }
    }

    /// The rest of the query, over one task the filter let through.
    pub fn matches(&self, task: &berth_types::Task) -> bool {
        !self.matches_nothing
            && task.desired_status == self.desired
            && self
                .started_by
                .as_ref()
                .is_none_or(|s| task.started_by == *s)
            && self.service_name.as_ref().is_none_or(|name| {
                berth_types::service::service_name_of(task) == Some(name.as_str())
            })
    }
}

/// The images of a task's containers, from its task definition.
pub fn images(spec: &berth_types::TaskDefinitionSpec) -> Vec<(String, String)> {
    spec.container_definitions
        .iter()
        .map(|c| (c.name.clone(), c.image.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_types::{
        ContainerState, ContainerStatus, DesiredStatus, Health, Protocol, StopCode, TaskStatus,
    };

    fn scope() -> Scope {
        Scope {
            region: "eu-west-1".into(),
            account: "000000000000".into(),
        }
    }

    fn stopped_task() -> berth_types::Task {
        berth_types::Task {
            id: "0f3c".into(),
            cluster: "prod".into(),
            family: "web".into(),
            revision: 3,
            instance_id: Some("i-1".into()),
            group: "service:web".into(),
            started_by: "ecs-svc/web".into(),
            desired_status: DesiredStatus::Stopped,
            last_status: TaskStatus::Stopped,
            containers: vec![
                ContainerState {
                    name: "app".into(),
                    status: ContainerStatus::Stopped,
                    exit_code: Some(3),
                    reason: "exited".into(),
                    health: Health::Unhealthy,
                    restart_count: 0,
                },
                ContainerState {
                    name: "sidecar".into(),
                    status: ContainerStatus::Stopped,
                    exit_code: Some(0),
                    reason: String::new(),
                    health: Health::Healthy,
                    restart_count: 0,
                },
            ],
            stop_code: Some(StopCode::EssentialContainerExited),
            stopped_reason: "Essential container in task exited".into(),
            placement_reason: String::new(),
            overrides: vec![
                ("app".into(), "MODE".into(), "debug".into()),
                ("app".into(), "LEVEL".into(), "2".into()),
            ],
            placement_strategies: vec![],
            placement_constraints: vec![],
            reservation: berth_types::resources::Reservation {
                cpu: 256,
                memory_mib: 512,
                ports: vec![],
            },
            created_at_ms: 1_000,
            pending_at_ms: Some(2_000),
            started_at_ms: Some(3_500),
            stopping_at_ms: Some(9_000),
            stopped_at_ms: Some(9_250),
            ip: Some("198.18.0.7".into()),
            deactivating_until_ms: None,
            tags: Default::default(),
        }
    }

    #[test]
    fn a_task_is_described_in_ecs_field_names() {
        let bindings = [berth_types::NetworkBinding {
            container_name: "app".into(),
            container_port: 8080,
            host_port: 49153,
            protocol: Protocol::Tcp,
        }];
        let images = [("app".to_string(), "registry.example/app:1".to_string())];
        let json =
            serde_json::to_value(task(&scope(), &stopped_task(), &images, &bindings)).unwrap();
        assert_eq!(
            json["taskArn"],
            "arn:aws:ecs:eu-west-1:000000000000:task/prod/0f3c"
        );
        assert_eq!(
            json["clusterArn"],
            "arn:aws:ecs:eu-west-1:000000000000:cluster/prod"
        );
        assert_eq!(
            json["taskDefinitionArn"],
            "arn:aws:ecs:eu-west-1:000000000000:task-definition/web:3"
        );
        assert_eq!(
            json["containerInstanceArn"],
            "arn:aws:ecs:eu-west-1:000000000000:container-instance/prod/i-1"
        );
        assert_eq!(json["lastStatus"], "STOPPED");
        assert_eq!(json["desiredStatus"], "STOPPED");
        assert_eq!(json["launchType"], "EXTERNAL");
        assert_eq!(
            (json["cpu"].as_str(), json["memory"].as_str()),
            (Some("256"), Some("512"))
        );
        assert_eq!(json["createdAt"], 1.0);
        assert_eq!(json["startedAt"], 3.5);
        assert_eq!(json["stoppedAt"], 9.25);
        assert_eq!(json["stopCode"], "EssentialContainerExited");
        assert_eq!(json["healthStatus"], "UNHEALTHY");
        assert_eq!(json["startedBy"], "ecs-svc/web");
        let app = &json["containers"][0];
        assert_eq!(
            app["containerArn"],
            "arn:aws:ecs:eu-west-1:000000000000:container/prod/0f3c/app"
        );
        assert_eq!(app["image"], "registry.example/app:1");
        assert_eq!(app["exitCode"], 3);
        assert_eq!(
            app["networkBindings"],
            serde_json::json!([{"bindIP": "0.0.0.0", "containerPort": 8080, "hostPort": 49153, "protocol": "tcp"}])
        );
        assert_eq!(
            app["networkInterfaces"][0]["privateIpv4Address"],
            "198.18.0.7"
        );
        let sidecar = &json["containers"][1];
        assert!(sidecar.get("image").is_none());
        assert_eq!(sidecar["networkBindings"], serde_json::json!([]));
        assert!(
            sidecar.get("reason").is_none(),
            "empty strings are left out"
        );
        assert_eq!(
            json["overrides"],
            serde_json::json!({"containerOverrides": [{"name": "app", "environment": [
                {"name": "MODE", "value": "debug"}, {"name": "LEVEL", "value": "2"}]}]})
        );
    }

    #[test]
    fn a_task_is_healthy_only_when_every_container_is() {
        let mut t = stopped_task();
        assert_eq!(task_health(&t.containers), "UNHEALTHY");
        t.containers[0].health = Health::Healthy;
        assert_eq!(task_health(&t.containers), "HEALTHY");
        t.containers[1].health = Health::Unknown;
        assert_eq!(task_health(&t.containers), "UNKNOWN");
        assert_eq!(task_health(&[]), "UNKNOWN");
        t.instance_id = None;
        let json = serde_json::to_value(task(&scope(), &t, &[], &[])).unwrap();
        assert!(json.get("containerInstanceArn").is_none(), "not placed yet");
    }

    #[test]
    fn list_tasks_filters_are_read_as_ecs_means_them() {
        let request = |json: &str| -> ListTasksRequest { serde_json::from_str(json).unwrap() };
        let q = task_query(&request("{}")).unwrap();
        assert_eq!(q.cluster, "default");
        assert_eq!(
            q.desired,
            DesiredStatus::Running,
            "running tasks unless asked"
        );
        let q = task_query(&request(
            r#"{"cluster": "arn:aws:ecs:r:1:cluster/prod", "containerInstance": "arn:aws:ecs:r:1:container-instance/prod/i-1",
                "serviceName": "web", "desiredStatus": "STOPPED", "launchType": "EXTERNAL"}"#,
        ))
        .unwrap();
        assert_eq!(q.cluster, "prod");
        assert_eq!(q.instance_id.as_deref(), Some("i-1"));
        assert_eq!(q.filter().instance_id.as_deref(), Some("i-1"));
        let mut t = stopped_task();
        t.group = "service:web".into();
        assert!(q.matches(&t));
        t.group = "service:api".into();
        assert!(!q.matches(&t), "another service's task");
        t.group = "service:web".into();
        t.desired_status = DesiredStatus::Running;
        assert!(!q.matches(&t), "not STOPPED");
        let by_starter = task_query(&request(r#"{"startedBy": "ecs-svc/web"}"#)).unwrap();
        assert!(by_starter.matches(&t));
        t.started_by = "cron".into();
        assert!(!by_starter.matches(&t));
        for nothing in [
            r#"{"desiredStatus": "PENDING"}"#,
            r#"{"launchType": "FARGATE"}"#,
        ] {
            assert!(
                task_query(&request(nothing)).unwrap().matches_nothing,
                "{nothing}"
            );
        }
        for bad in [
            r#"{"desiredStatus": "GONE"}"#,
            r#"{"launchType": "MOON"}"#,
            r#"{"containerInstance": "arn:aws:ecs:r:1:task/prod/x"}"#,
        ] {
            let e = task_query(&request(bad)).unwrap_err();
            assert_eq!(e.kind, ErrorType::InvalidParameter, "{bad}");
        }
    }

    #[test]
    fn a_task_is_named_by_id_or_by_an_arn_in_the_same_cluster() {
        assert_eq!(task_in("prod", "0f3c").unwrap(), "0f3c");
        assert_eq!(
            task_in("prod", "arn:aws:ecs:r:1:task/prod/0f3c").unwrap(),
            "0f3c"
        );
        assert_eq!(
            task_in("prod", "arn:aws:ecs:r:1:task/0f3c").unwrap(),
            "0f3c"
        );
        let e = task_in("prod", "arn:aws:ecs:r:1:task/test/0f3c").unwrap_err();
        assert!(e.message.contains("test"), "{e}");
    }

    #[test]
    fn containers_not_reported_yet_are_pending() {
        let mut t = stopped_task();
        t.containers.truncate(1);
        let images = [
            ("app".to_string(), "registry.example/app:1".to_string()),
            ("sidecar".to_string(), "registry.example/side:1".to_string()),
        ];
        let json = serde_json::to_value(task(&scope(), &t, &images, &[])).unwrap();
        assert_eq!(json["containers"][0]["lastStatus"], "STOPPED");
        assert_eq!(json["containers"][1]["name"], "sidecar");
        assert_eq!(json["containers"][1]["lastStatus"], "PENDING");
        assert_eq!(json["containers"][1]["image"], "registry.example/side:1");
        assert_eq!(json["containers"].as_array().map(Vec::len), Some(2));
    }
}
