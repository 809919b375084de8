//! The shapes of ECS's cluster operations (CreateCluster, DescribeClusters,
//! ListClusters, DeleteCluster) and what Berth makes of them. Requests are
//! read as ECS sends them; what Berth does not do is refused with
//! `UnsupportedFeatureException` naming what to use instead, never dropped.

use serde::{Deserialize, Serialize};

use crate::arn::Scope;
use crate::error::{EcsError, ErrorType};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameValue {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateClusterRequest {
    pub cluster_name: Option<String>,
    #[serde(default)]
    pub tags: Vec<Tag>,
    #[serde(default)]
    pub settings: Vec<NameValue>,
    pub configuration: Option<serde_json::Value>,
    #[serde(default)]
    pub capacity_providers: Vec<String>,
    #[serde(default)]
    pub default_capacity_provider_strategy: Vec<serde_json::Value>,
    pub service_connect_defaults: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeClustersRequest {
    #[serde(default)]
    pub clusters: Vec<String>,
    #[serde(default)]
    pub include: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListClustersRequest {
    pub next_token: Option<String>,
    pub max_results: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteClusterRequest {
    pub cluster: String,
}

/// What a cluster holds, counted from the state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub registered_instances: u32,
    pub running_tasks: u32,
    pub pending_tasks: u32,
    pub active_services: u32,
}

/// ECS's `Cluster`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    pub cluster_arn: String,
    pub cluster_name: String,
    pub status: String,
    pub registered_container_instances_count: u32,
    pub running_tasks_count: u32,
    pub pending_tasks_count: u32,
    pub active_services_count: u32,
    pub statistics: Vec<NameValue>,
    pub tags: Vec<Tag>,
    pub settings: Vec<NameValue>,
    pub capacity_providers: Vec<String>,
    pub default_capacity_provider_strategy: Vec<serde_json::Value>,
}

/// ECS's `Failure`: a Describe* item that was not found, by its ARN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    pub arn: String,
    pub reason: String,
}

impl Failure {
    pub fn missing(arn: String) -> Self {
        Self {
            arn,
            reason: "MISSING".into(),
        }
    }
}

const CONTAINER_INSIGHTS: &str = "containerInsights";

/// The cluster as ECS describes it. `statistics` is filled only when the
/// request included `STATISTICS`, as ECS does.
pub fn cluster(
    scope: &Scope,
    cluster: &berth_types::Cluster,
    counts: Counts,
    include_statistics: bool,
) -> Cluster {
    let statistics = if include_statistics {
        vec![
            NameValue {
                name: "runningEC2TasksCount".into(),
                value: counts.running_tasks.to_string(),
            },
            NameValue {
                name: "pendingEC2TasksCount".into(),
                value: counts.pending_tasks.to_string(),
            },
            NameValue {
                name: "activeEC2ServiceCount".into(),
                value: counts.active_services.to_string(),
            },
        ]
    } else {
        Vec::new()
    };
    Cluster {
        cluster_arn: scope.cluster(&cluster.name),
        cluster_name: cluster.name.clone(),
        status: cluster.status.as_str().into(),
        registered_container_instances_count: counts.registered_instances,
        running_tasks_count: counts.running_tasks,
        pending_tasks_count: counts.pending_tasks,
        active_services_count: counts.active_services,
        statistics,
        tags: crate::tags::tag_list(&cluster.tags),
        // Berth's own metrics are Prometheus's (`/metrics`), not Container
        // Insights.
        settings: vec![NameValue {
            name: CONTAINER_INSIGHTS.into(),
            value: "disabled".into(),
        }],
        capacity_providers: Vec::new(),
        default_capacity_provider_strategy: Vec::new(),
    }
}

fn unsupported(what: &str, instead: &str) -> EcsError {
    EcsError::new(
        ErrorType::UnsupportedFeature,
        format!("{what} is not supported by Berth; {instead}"),
    )
}

/// The name a CreateCluster makes (ECS's `default` when it names none),
/// once everything it asks for is something Berth does.
pub fn create_cluster_name(request: &CreateClusterRequest) -> Result<String, EcsError> {
    if !request.capacity_providers.is_empty()
        || !request.default_capacity_provider_strategy.is_empty()
    {
        return Err(unsupported(
            "capacityProviders",
            "tasks are placed on the instances registered in the cluster (berth activation create, install-agent.sh)",
        ));
    }
    if request.configuration.is_some() {
        return Err(unsupported(
            "configuration (ECS Exec)",
            "read a task's output with GetTaskLogs (berth task logs)",
        ));
    }
    if request.service_connect_defaults.is_some() {
        return Err(unsupported(
            "serviceConnectDefaults",
            "services are found through Berth's DNS (SERVICE.CLUSTER.berth) and WatchEndpoints",
        ));
    }
    for setting in &request.settings {
        match (setting.name.as_str(), setting.value.as_str()) {
            (CONTAINER_INSIGHTS, "disabled") => {}
            (CONTAINER_INSIGHTS, _) => {
                return Err(unsupported(
                    "containerInsights",
                    "scrape the servers' and agents' /metrics with Prometheus (deploy/monitoring)",
                ))
            }
            (other, _) => {
                return Err(EcsError::new(
                    ErrorType::InvalidParameter,
                    format!(
                        "settings: unknown setting {other:?}; the only one is containerInsights"
                    ),
                ))
            }
        }
    }
    match request.cluster_name.as_deref().map(str::trim) {
        None | Some("") => Ok(crate::arn::DEFAULT_CLUSTER.into()),
        Some(name) => Ok(name.into()),
    }
}

/// DescribeClusters' `include`: whether `STATISTICS` was asked for (see
/// [`include_cluster_tags`] for `TAGS`); the rest of ECS's options
/// (attachments, settings, configurations) describe nothing Berth has.
pub fn include_statistics(include: &[String]) -> Result<bool, EcsError> {
    let mut statistics = false;
    for option in include {
        match option.as_str() {
            "STATISTICS" => statistics = true,
            "TAGS" | "ATTACHMENTS" | "SETTINGS" | "CONFIGURATIONS" => {}
            other => {
                return Err(EcsError::new(
                    ErrorType::InvalidParameter,
                    format!(
                        "include: {other:?} is not one of ATTACHMENTS, CONFIGURATIONS, SETTINGS, STATISTICS, TAGS"
                    ),
                ))
            }
        }
    }
    Ok(statistics)
}

/// Whether DescribeClusters' `include` asks for `TAGS`.
pub fn include_cluster_tags(include: &[String]) -> bool {
    include.iter().any(|o| o == "TAGS")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> Scope {
        Scope {
            region: "eu-west-1".into(),
            account: "000000000000".into(),
        }
    }

    #[test]
    fn a_cluster_is_described_in_ecs_field_names() {
        let prod = berth_types::Cluster {
            name: "prod".into(),
            status: berth_types::ClusterStatus::Active,
            created_at_ms: 0,
            settings: Default::default(),
            tags: Default::default(),
        };
        let counts = Counts {
            registered_instances: 2,
            running_tasks: 5,
            pending_tasks: 1,
            active_services: 3,
        };
        let json = serde_json::to_value(cluster(&scope(), &prod, counts, true)).unwrap();
        assert_eq!(
            json["clusterArn"],
            "arn:aws:ecs:eu-west-1:000000000000:cluster/prod"
        );
        assert_eq!(json["clusterName"], "prod");
        assert_eq!(json["status"], "ACTIVE");
        assert_eq!(json["registeredContainerInstancesCount"], 2);
        assert_eq!(json["runningTasksCount"], 5);
        assert_eq!(json["pendingTasksCount"], 1);
        assert_eq!(json["activeServicesCount"], 3);
        assert_eq!(json["statistics"][0]["name"], "runningEC2TasksCount");
        assert_eq!(json["settings"][0]["value"], "disabled");
        let plain = serde_json::to_value(cluster(&scope(), &prod, counts, false)).unwrap();
        assert_eq!(plain["statistics"], serde_json::json!([]));
    }

    #[test]
    fn create_takes_what_berth_does_and_names_what_it_does_not() {
        let parse = |json: &str| serde_json::from_str::<CreateClusterRequest>(json).unwrap();
        assert_eq!(create_cluster_name(&parse("{}")).unwrap(), "default");
        assert_eq!(
            create_cluster_name(&parse(
                r#"{"clusterName": "prod", "settings": [{"name": "containerInsights", "value": "disabled"}]}"#
            ))
            .unwrap(),
            "prod"
        );
        let refused = [
            (r#"{"capacityProviders": ["FARGATE"]}"#, "capacityProviders"),
            (
                r#"{"configuration": {"executeCommandConfiguration": {}}}"#,
                "ECS Exec",
            ),
            (r#"{"serviceConnectDefaults": {"namespace": "x"}}"#, "berth"),
            (
                r#"{"settings": [{"name": "containerInsights", "value": "enabled"}]}"#,
                "Prometheus",
            ),
        ];
        for (json, says) in refused {
            let e = create_cluster_name(&parse(json)).unwrap_err();
            assert_eq!(e.kind, ErrorType::UnsupportedFeature, "{json}");
            assert!(e.message.contains(says), "{json}: {e}");
        }
        let e = create_cluster_name(&parse(r#"{"settings": [{"name": "x", "value": "y"}]}"#))
            .unwrap_err();
        assert_eq!(e.kind, ErrorType::InvalidParameter);
    }

    #[test]
    fn describe_include_options_are_ecs_s() {
        assert!(!include_statistics(&[]).unwrap());
        assert!(include_statistics(&["TAGS".into(), "STATISTICS".into()]).unwrap());
        let e = include_statistics(&["EVERYTHING".into()]).unwrap_err();
        assert_eq!(e.kind, ErrorType::InvalidParameter);
        let missing = serde_json::to_value(Failure::missing(scope().cluster("nope"))).unwrap();
        assert_eq!(missing["reason"], "MISSING");
    }
}
