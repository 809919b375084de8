//! A service as ECS's CreateService, UpdateService, DeleteService and
//! DescribeServices answer with it, from Berth's service description (the
//! record and its task counts). Berth's blue/green controller is ECS's
//! native `BLUE_GREEN` deployment strategy; the deployment controller is
//! always `ECS`.

use serde::{Deserialize, Serialize};

use crate::arn::{Resource, Scope};
use crate::clusters::Tag;
use crate::error::{EcsError, ErrorType};
use crate::page::epoch_seconds;
use crate::tasks::LAUNCH_TYPE;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CircuitBreaker {
    pub enable: bool,
    pub rollback: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentConfiguration {
    pub maximum_percent: u32,
    pub minimum_healthy_percent: u32,
    pub deployment_circuit_breaker: CircuitBreaker,
    pub strategy: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bake_time_in_minutes: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeploymentController {
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    pub id: String,
    pub status: String,
    pub task_definition: String,
    pub desired_count: u32,
    pub pending_count: u32,
    pub running_count: u32,
    pub failed_tasks: u32,
    pub created_at: f64,
    pub updated_at: f64,
    pub launch_type: String,
    pub rollout_state: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub rollout_state_reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEvent {
    pub id: String,
    pub created_at: f64,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlacementConstraint {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlacementStrategy {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancer {
    /// Berth's load balancers are berth-lb's, named in its config; ECS has
    /// no field for a name other than a target group ARN or a classic ELB
    /// name, and this is the latter's.
    pub load_balancer_name: String,
    pub container_name: String,
    pub container_port: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    pub service_arn: String,
    pub service_name: String,
    pub cluster_arn: String,
    pub status: String,
    pub desired_count: u32,
    pub running_count: u32,
    pub pending_count: u32,
    pub launch_type: String,
    pub task_definition: String,
    pub scheduling_strategy: String,
    pub deployment_configuration: DeploymentConfiguration,
    pub deployment_controller: DeploymentController,
    pub deployments: Vec<Deployment>,
    pub events: Vec<ServiceEvent>,
    pub created_at: f64,
    pub placement_constraints: Vec<PlacementConstraint>,
    pub placement_strategy: Vec<PlacementStrategy>,
    pub load_balancers: Vec<LoadBalancer>,
    pub health_check_grace_period_seconds: u32,
    pub tags: Vec<Tag>,
}

/// `binpack:cpu`, `spread:instanceId`, `spread:attribute:NAME`, `random`
/// as ECS's `{type, field}`.
fn strategy(text: &str) -> PlacementStrategy {
    match text.split_once(':') {
        Some((kind, field)) => PlacementStrategy {
            kind: kind.into(),
            field: Some(field.into()),
        },
        None => PlacementStrategy {
            kind: text.into(),
            field: None,
        },
    }
}

/// `distinctInstance` and `memberOf(EXPRESSION)` as ECS's
/// `{type, expression}`.
fn constraint(text: &str) -> PlacementConstraint {
    match text
        .strip_prefix("memberOf(")
        .and_then(|rest| rest.strip_suffix(')'))
    {
        Some(expression) => PlacementConstraint {
            kind: "memberOf".into(),
            expression: Some(expression.into()),
        },
        None => PlacementConstraint {
            kind: text.into(),
            expression: None,
        },
    }
}

fn task_definition_arn(scope: &Scope, reference: &str) -> String {
    match reference.rsplit_once(':') {
        Some((family, revision)) => match revision.parse() {
            Ok(revision) => scope.arn(Resource::TaskDefinition {
                family: family.into(),
                revision,
            }),
            Err(_) => reference.into(),
        },
        None => reference.into(),
    }
}

/// ECS's `Service` for a described Berth service. Its events come newest
/// first, as ECS sends them; tags only with `include: ["TAGS"]`.
/// A service's deployment settings in ECS's shape: Berth's blue/green
/// controller is ECS's native BLUE_GREEN strategy.
pub fn deployment_configuration(
    config: &berth_types::service::DeploymentConfiguration,
) -> DeploymentConfiguration {
    use berth_types::service::DeploymentController as Controller;
    let (strategy_name, bake) = match config.controller {
        Controller::Rolling => ("ROLLING", None),
        Controller::BlueGreen(bg) => ("BLUE_GREEN", Some(bg.bake_time_secs.div_ceil(60))),
    };
    DeploymentConfiguration {
        maximum_percent: config.maximum_percent,
        minimum_healthy_percent: config.minimum_healthy_percent,
        deployment_circuit_breaker: CircuitBreaker {
            enable: config.circuit_breaker.enable,
            rollback: config.circuit_breaker.rollback,
        },
        strategy: strategy_name.into(),
        bake_time_in_minutes: bake,
    }
}

pub fn service(
    scope: &Scope,
    described: &berth_types::service::ServiceDescription,
    include_tags: bool,
) -> Service {
    let s = &described.service;
    let config = &s.deployment_configuration;
    let deployments = described
        .deployments
        .iter()
        .map(|view| {
            let d = &view.deployment;
            Deployment {
                id: d.id.clone(),
                status: d.status.as_str().into(),
                task_definition: task_definition_arn(scope, &d.task_definition),
                desired_count: d.desired_count,
                pending_count: view.counts.pending,
                running_count: view.counts.running,
                failed_tasks: d.failed_tasks,
                created_at: epoch_seconds(d.created_at_ms),
                updated_at: epoch_seconds(d.updated_at_ms),
                launch_type: LAUNCH_TYPE.into(),
                rollout_state: d.rollout_state.as_str().into(),
                rollout_state_reason: d.rollout_state_reason.clone(),
            }
        })
        .collect();
    Service {
        service_arn: scope.arn(Resource::Service {
            cluster: Some(s.cluster.clone()),
            name: s.name.clone(),
        }),
        service_name: s.name.clone(),
        cluster_arn: scope.cluster(&s.cluster),
        status: s.status.as_str().into(),
        desired_count: s.desired_count,
        running_count: described.running_count,
        pending_count: described.pending_count,
        launch_type: LAUNCH_TYPE.into(),
        task_definition: task_definition_arn(scope, &s.task_definition),
        scheduling_strategy: s.scheduling_strategy.as_str().into(),
        deployment_configuration: deployment_configuration(config),
        deployment_controller: DeploymentController { kind: "ECS".into() },
        deployments,
        events: s
            .events
            .iter()
            .map(|e| ServiceEvent {
                id: e.id.to_string(),
                created_at: epoch_seconds(e.created_at_ms),
                message: e.message.clone(),
            })
            .collect(),
        created_at: epoch_seconds(s.created_at_ms),
        placement_constraints: s
            .placement_constraints
            .iter()
            .map(|c| constraint(c))
            .collect(),
        placement_strategy: s.placement_strategies.iter().map(|p| strategy(p)).collect(),
        load_balancers: s
            .load_balancers
            .iter()
            .map(|lb| LoadBalancer {
                load_balancer_name: lb.name.clone(),
                container_name: lb.container_name.clone(),
                container_port: lb.container_port,
            })
            .collect(),
        health_check_grace_period_seconds: s.health_check_grace_period_secs,
        tags: if include_tags {
            s.tags
                .iter()
                .map(|(key, value)| Tag {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect()
        } else {
            Vec::new()
        },
    }
}

/// ECS's limit on the services one DescribeServices names.
pub const MAX_DESCRIBED: usize = 10;

/// The DNS zone under which a cluster's services are found
/// (`SERVICE.CLUSTER.berth`).
pub const DNS_ZONE: &str = "berth";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteServiceRequest {
    pub cluster: Option<String>,
    pub service: String,
    pub force: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeServicesRequest {
    pub cluster: Option<String>,
    #[serde(default)]
    pub services: Vec<String>,
    #[serde(default)]
    pub include: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListServicesRequest {
    pub cluster: Option<String>,
    pub launch_type: Option<String>,
    pub scheduling_strategy: Option<String>,
    pub next_token: Option<String>,
    pub max_results: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListServicesByNamespaceRequest {
    pub namespace: String,
    pub next_token: Option<String>,
    pub max_results: Option<i64>,
}

/// A service named in a request about `cluster`: its name, or `None` when
/// its ARN names another cluster (ECS does not find it in this one).
pub fn service_in(cluster: &str, input: &str) -> Result<Option<String>, EcsError> {
    let (named, name) = crate::arn::service(input)?;
    Ok(match named {
        Some(other) if other != cluster => None,
        _ => Some(name),
    })
}

/// ListServices' filters: the scheduling strategy to keep (if any), or
/// `None` when the launch type asked for is one no Berth service has.
pub fn list_filter(
    request: &ListServicesRequest,
) -> Result<Option<Option<berth_types::service::SchedulingStrategy>>, EcsError> {
    let invalid = |m: String| EcsError::new(ErrorType::InvalidParameter, m);
    let strategy = match request.scheduling_strategy.as_deref() {
        None | Some("") => None,
        Some(text) => Some(
            berth_types::service::SchedulingStrategy::parse(text).ok_or_else(|| {
                invalid(format!(
                    "schedulingStrategy: {text:?} is not REPLICA or DAEMON"
                ))
            })?,
        ),
    };
    match request.launch_type.as_deref() {
        None | Some(LAUNCH_TYPE) => Ok(Some(strategy)),
        Some("EC2" | "FARGATE") => Ok(None),
        Some(other) => Err(invalid(format!(
            "launchType: {other:?} is not EC2, FARGATE or EXTERNAL"
        ))),
    }
}

/// ListServicesByNamespace's namespace as a cluster name. Berth has no
/// Cloud Map: a cluster's services are found by DNS as
/// `SERVICE.CLUSTER.berth`, so the namespace of a cluster's services is
/// `CLUSTER.berth`; the cluster's name or ARN is taken as well.
pub fn namespace_cluster(namespace: &str) -> Result<String, EcsError> {
    let text = namespace.trim().trim_end_matches('.');
    if text.is_empty() {
        return Err(EcsError::new(
            ErrorType::InvalidParameter,
            "namespace: required (CLUSTER.berth, a cluster name or a cluster ARN)",
        ));
    }
    if text.starts_with("arn:") {
        return Ok(crate::arn::cluster_name(Some(text))?);
    }
    Ok(text
        .strip_suffix(&format!(".{DNS_ZONE}"))
        .unwrap_or(text)
        .to_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use berth_types::service::{
        BlueGreen, DeploymentConfiguration as Config, DeploymentController as Controller,
        SchedulingStrategy, ServiceSpec, TrafficShift,
    };
    use berth_types::{Command, ContainerDefinition, State, TaskDefinitionSpec};
    use std::collections::BTreeMap;

    /// A service made the way the servers make one: through the state
    /// machine's commands.
    pub(crate) fn described(controller: Controller) -> berth_types::service::ServiceDescription {
        let mut state = State::new();
        let mut container = ContainerDefinition::new("app", "registry.local/app:1");
        container.memory = Some(64);
        container.port_mappings = vec![berth_types::PortMapping {
            container_port: 8080,
            host_port: None,
            protocol: berth_types::Protocol::Tcp,
        }];
        state
            .apply(Command::RegisterTaskDefinition {
                spec: TaskDefinitionSpec {
                    family: "web".into(),
                    container_definitions: vec![container],
                    cpu: None,
                    memory: None,
                    network_mode: Default::default(),
                    volumes: vec![],
                    tags: vec![],
                },
                at_ms: 1,
            })
            .unwrap();
        let mut config = Config::defaults_for(SchedulingStrategy::Replica);
        config.controller = controller;
        config.circuit_breaker.enable = true;
        state
            .apply(Command::CreateService {
                spec: ServiceSpec {
                    load_balancers: vec![berth_types::service::LoadBalancer {
                        name: "public".into(),
                        container_name: "app".into(),
                        container_port: 8080,
                        deregistration_delay_secs: 5,
                    }],
                    cluster: "default".into(),
                    name: "web".into(),
                    task_definition: "web:1".into(),
                    desired_count: 2,
                    scheduling_strategy: SchedulingStrategy::Replica,
                    placement_strategies: vec!["spread:instanceId".into()],
                    placement_constraints: vec!["distinctInstance".into()],
                    deployment_configuration: config,
                    health_check_grace_period_secs: 30,
                    tags: BTreeMap::from([("team".to_string(), "a".to_string())]),
                },
                deployment_id: "ecs-svc/1".into(),
                at_ms: 5_000,
            })
            .unwrap();
        let service = state.service("default", "web").unwrap();
        state.describe_service(service)
    }

    #[test]
    fn a_service_is_described_in_ecs_field_names() {
        let scope = Scope {
            region: "eu-west-1".into(),
            account: "000000000000".into(),
        };
        let json =
            serde_json::to_value(service(&scope, &described(Controller::Rolling), false)).unwrap();
        assert_eq!(
            json["serviceArn"],
            "arn:aws:ecs:eu-west-1:000000000000:service/default/web"
        );
        assert_eq!(json["status"], "ACTIVE");
        assert_eq!(json["desiredCount"], 2);
        assert_eq!(json["runningCount"], 0);
        assert_eq!(json["pendingCount"], 0, "no task placed without instances");
        assert_eq!(
            json["taskDefinition"],
            "arn:aws:ecs:eu-west-1:000000000000:task-definition/web:1"
        );
        assert_eq!(json["schedulingStrategy"], "REPLICA");
        assert_eq!(json["launchType"], "EXTERNAL");
        assert_eq!(
            json["deploymentConfiguration"],
            serde_json::json!({"maximumPercent": 200, "minimumHealthyPercent": 100,
                "deploymentCircuitBreaker": {"enable": true, "rollback": false},
                "strategy": "ROLLING"})
        );
        assert_eq!(json["deploymentController"]["type"], "ECS");
        let primary = &json["deployments"][0];
        assert_eq!(primary["id"], "ecs-svc/1");
        assert_eq!(primary["status"], "PRIMARY");
        assert_eq!(primary["rolloutState"], "IN_PROGRESS");
        assert_eq!(primary["createdAt"], 5.0);
        assert_eq!(json["placementStrategy"][0]["field"], "instanceId");
        assert_eq!(json["placementConstraints"][0]["type"], "distinctInstance");
        assert_eq!(json["healthCheckGracePeriodSeconds"], 30);
        assert_eq!(
            json["loadBalancers"],
            serde_json::json!([{"loadBalancerName": "public", "containerName": "app", "containerPort": 8080}])
        );
        assert_eq!(
            json["tags"],
            serde_json::json!([]),
            "tags only when included"
        );
        let tagged = service(&scope, &described(Controller::Rolling), true);
        assert_eq!(tagged.tags[0].key, "team");

        let blue_green = Controller::BlueGreen(BlueGreen {
            traffic: TrafficShift::AllAtOnce,
            bake_time_secs: 90,
        });
        let json = serde_json::to_value(service(&scope, &described(blue_green), false)).unwrap();
        assert_eq!(json["deploymentConfiguration"]["strategy"], "BLUE_GREEN");
        assert_eq!(json["deploymentConfiguration"]["bakeTimeInMinutes"], 2);
    }

    #[test]
    fn placement_texts_become_ecs_objects() {
        assert_eq!(
            strategy("spread:attribute:ecs.availability-zone"),
            PlacementStrategy {
                kind: "spread".into(),
                field: Some("attribute:ecs.availability-zone".into())
            }
        );
        assert_eq!(strategy("binpack:memory").field.as_deref(), Some("memory"));
        assert_eq!(strategy("random").field, None);
        assert_eq!(
            constraint("memberOf(attribute:zone == a)"),
            PlacementConstraint {
                kind: "memberOf".into(),
                expression: Some("attribute:zone == a".into())
            }
        );
        assert_eq!(constraint("distinctInstance").expression, None);
        let scope = Scope {
            region: "r".into(),
            account: "1".into(),
        };
        assert_eq!(
            task_definition_arn(&scope, "web:4"),
            "arn:aws:ecs:r:1:task-definition/web:4"
        );
    }

    #[test]
    fn requests_about_services_are_read_as_ecs_means_them() {
        assert_eq!(service_in("prod", "web").unwrap().as_deref(), Some("web"));
        assert_eq!(
            service_in("prod", "arn:aws:ecs:r:1:service/prod/web")
                .unwrap()
                .as_deref(),
            Some("web")
        );
        assert_eq!(
            service_in("prod", "arn:aws:ecs:r:1:service/test/web").unwrap(),
            None
        );
        assert!(service_in("prod", "arn:aws:ecs:r:1:task/prod/x").is_err());
        let filter = |json: &str| list_filter(&serde_json::from_str(json).unwrap());
        assert_eq!(filter("{}").unwrap(), Some(None));
        assert_eq!(
            filter(r#"{"schedulingStrategy": "DAEMON", "launchType": "EXTERNAL"}"#).unwrap(),
            Some(Some(berth_types::service::SchedulingStrategy::Daemon))
        );
        assert_eq!(filter(r#"{"launchType": "FARGATE"}"#).unwrap(), None);
        assert!(filter(r#"{"schedulingStrategy": "BATCH"}"#).is_err());
        assert!(filter(r#"{"launchType": "MOON"}"#).is_err());
        assert_eq!(namespace_cluster("prod.berth").unwrap(), "prod");
        assert_eq!(namespace_cluster("prod.berth.").unwrap(), "prod");
        assert_eq!(namespace_cluster("prod").unwrap(), "prod");
        assert_eq!(
            namespace_cluster("arn:aws:ecs:r:1:cluster/prod").unwrap(),
            "prod"
        );
        assert!(namespace_cluster("arn:aws:servicediscovery:r:1:namespace/ns-1").is_err());
        assert!(namespace_cluster(" ").is_err());
    }
}
