//! CreateCluster, DescribeClusters, ListClusters, DeleteCluster.

use berth_ecs::arn::{self, Scope};
use berth_ecs::clusters::{
    self as shapes, Counts, CreateClusterRequest, DeleteClusterRequest, DescribeClustersRequest,
    Failure, ListClustersRequest,
};
use berth_ecs::error::{EcsError, ErrorType};
use berth_ecs::page;
use berth_types::{ClusterStatus, InstanceStatus, ServiceStatus, State, TaskStatus};
use serde_json::json;

use super::{answer, from_server, EcsApi, EcsResult};
use crate::error::ServerError;

/// ECS's limit on the clusters one DescribeClusters names.
const MAX_DESCRIBED: usize = 100;

fn counts(state: &State, cluster: &str) -> Counts {
    let mut counts = Counts {
        registered_instances: state
            .instances()
            .filter(|i| i.cluster == cluster && i.status == InstanceStatus::Active)
            .count() as u32,
        active_services: state
            .services_in(cluster)
            .filter(|s| s.status == ServiceStatus::Active)
            .count() as u32,
        ..Counts::default()
    };
    for task in state.tasks().filter(|t| t.cluster == cluster) {
        match task.last_status {
            TaskStatus::Running => counts.running_tasks += 1,
            TaskStatus::Provisioning | TaskStatus::Pending => counts.pending_tasks += 1,
            _ => {}
        }
    }
    counts
}

/// A refused DeleteCluster as ECS names it: what the cluster still holds.
fn delete_refusal(error: ServerError) -> EcsError {
    let mut mapped = from_server(error);
    if mapped.kind == ErrorType::Client {
        if mapped.message.contains("registered instances") {
            mapped.kind = ErrorType::ClusterContainsContainerInstances;
        } else if mapped.message.contains("tasks that are not STOPPED") {
            mapped.kind = ErrorType::ClusterContainsTasks;
        } else if mapped.message.contains("service") {
            mapped.kind = ErrorType::ClusterContainsServices;
        }
    }
    mapped
}

impl EcsApi {
    pub(super) async fn create_cluster(
        &self,
        scope: &Scope,
        request: CreateClusterRequest,
    ) -> EcsResult {
        let name = shapes::create_cluster_name(&request)?;
        let tags = berth_ecs::tags::tag_map(&request.tags)?;
        let cluster = match self
            .ops
            .create_cluster(name.clone(), None, None, tags.clone())
            .await
        {
            Ok(cluster) => cluster,
            // ECS answers a create of an existing cluster with that cluster;
            // tags it does not have would be dropped, so they are refused.
            Err(ServerError::State(berth_types::StateError::AlreadyExists { .. })) => {
                let existing = self
                    .ops
                    .describe_cluster(&name)
                    .await
                    .map_err(from_server)?;
                if !tags.is_empty() && tags != existing.tags {
                    return Err(EcsError::new(
                        ErrorType::InvalidParameter,
                        format!(
                            "cluster {name:?} exists with other tags; change them with TagResource and UntagResource on its ARN"
                        ),
                    ));
                }
                existing
            }
            Err(e) => return Err(from_server(e)),
        };
        let counts = self
            .ops
            .node()
            .read(|state| counts(state, &cluster.name))
            .await
            .map_err(from_server)?;
        answer(json!({ "cluster": shapes::cluster(scope, &cluster, counts, false) }))
    }

    pub(super) async fn describe_clusters(
        &self,
        scope: &Scope,
        request: DescribeClustersRequest,
    ) -> EcsResult {
        let statistics = shapes::include_statistics(&request.include)?;
        let with_tags = shapes::include_cluster_tags(&request.include);
        if request.clusters.len() > MAX_DESCRIBED {
            return Err(EcsError::new(
                ErrorType::InvalidParameter,
                format!("clusters: at most {MAX_DESCRIBED} per call"),
            ));
        }
        // No names: the default cluster, as ECS does.
        let asked = if request.clusters.is_empty() {
            vec![arn::DEFAULT_CLUSTER.to_string()]
        } else {
            request
                .clusters
                .iter()
                .map(|c| arn::cluster_name(Some(c)))
                .collect::<Result<Vec<_>, _>>()?
        };
        let found = self
            .ops
            .node()
            .read(|state| {
                asked
                    .iter()
                    .map(|name| {
                        state
                            .cluster(name)
                            .map(|c| (c.clone(), counts(state, name)))
                            .ok_or_else(|| name.clone())
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .map_err(from_server)?;
        let mut clusters = Vec::new();
        let mut failures = Vec::new();
        for item in found {
            match item {
                Ok((cluster, counts)) => {
                    let mut shaped = shapes::cluster(scope, &cluster, counts, statistics);
                    if !with_tags {
                        // ECS answers tags only when asked for.
                        shaped.tags.clear();
                    }
                    clusters.push(shaped)
                }
                Err(name) => failures.push(Failure::missing(scope.cluster(&name))),
            }
        }
        answer(json!({ "clusters": clusters, "failures": failures }))
    }

    pub(super) async fn list_clusters(
        &self,
        scope: &Scope,
        request: ListClustersRequest,
    ) -> EcsResult {
        let names: Vec<String> = self
            .ops
            .list_clusters()
            .await
            .map_err(from_server)?
            .into_iter()
            .filter(|c| c.status == ClusterStatus::Active)
            .map(|c| c.name)
            .collect();
        let (arns, next_token) = page::page_of_keys(
            names,
            request.next_token.as_deref(),
            request.max_results,
            |name| scope.cluster(&name),
        )?;
        answer(json!({ "clusterArns": arns, "nextToken": next_token }))
    }

    pub(super) async fn delete_cluster(
        &self,
        scope: &Scope,
        request: DeleteClusterRequest,
    ) -> EcsResult {
        let name = arn::cluster_name(Some(&request.cluster))?;
        let before = self
            .ops
            .describe_cluster(&name)
            .await
            .map_err(from_server)?;
        self.ops
            .delete_cluster(name.clone())
            .await
            .map_err(delete_refusal)?;
        // Berth forgets a deleted cluster; ECS answers with it INACTIVE.
        let mut cluster = shapes::cluster(scope, &before, Counts::default(), false);
        cluster.status = "INACTIVE".into();
        answer(json!({ "cluster": cluster }))
    }
}

/// UpdateCluster and UpdateClusterSettings: what ECS lets them change
/// (settings, ECS Exec's configuration, Service Connect defaults) is
/// checked as CreateCluster checks it; Berth keeps no such settings, so a
/// request that passes changes nothing and answers the cluster.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct UpdateClusterRequest {
    cluster: String,
    #[serde(default)]
    settings: Vec<berth_ecs::clusters::NameValue>,
    configuration: Option<serde_json::Value>,
    service_connect_defaults: Option<serde_json::Value>,
}

impl EcsApi {
    pub(super) async fn update_cluster(
        &self,
        scope: &Scope,
        request: UpdateClusterRequest,
    ) -> EcsResult {
        let name = arn::cluster_name(Some(&request.cluster))?;
        shapes::create_cluster_name(&CreateClusterRequest {
            cluster_name: Some(name.clone()),
            settings: request.settings,
            configuration: request.configuration,
            service_connect_defaults: request.service_connect_defaults,
            ..CreateClusterRequest::default()
        })?;
        let cluster = self
            .ops
            .describe_cluster(&name)
            .await
            .map_err(from_server)?;
        let counts = self
            .ops
            .node()
            .read(|state| counts(state, &cluster.name))
            .await
            .map_err(from_server)?;
        answer(json!({ "cluster": shapes::cluster(scope, &cluster, counts, false) }))
    }
}
