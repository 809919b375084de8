//! CreateService, UpdateService, DeleteService, DescribeServices,
//! ListServices, ListServicesByNamespace, ListServiceDeployments,
//! DescribeServiceDeployments.

use berth_ecs::arn::{self, Resource, Scope};
use berth_ecs::clusters::Failure;
use berth_ecs::deployments::{
    self, DescribeServiceDeploymentsRequest, ListServiceDeploymentsRequest,
};
use berth_ecs::error::{include_tags, EcsError, ErrorType};
use berth_ecs::page;
use berth_ecs::service::{create_service_request, update_service_request};
use berth_ecs::services::{
    self as shapes, list_filter, namespace_cluster, service_in, DeleteServiceRequest,
    DescribeServicesRequest, ListServicesByNamespaceRequest, ListServicesRequest,
};
use berth_types::service::ServiceDescription;
use serde_json::json;

use super::{answer, from_server, EcsApi, EcsResult};

fn invalid(message: String) -> EcsError {
    EcsError::new(ErrorType::InvalidParameter, message)
}

/// The cluster and service a request names (a service ARN of another
/// cluster than the one named is ServiceNotFoundException).
fn named_service(cluster: Option<&str>, service: &str) -> Result<(String, String), EcsError> {
    let cluster = arn::cluster_name(cluster)?;
    let name = service_in(&cluster, service)?.ok_or_else(|| {
        EcsError::new(
            ErrorType::ServiceNotFound,
            format!("service {service:?} is not in cluster {cluster:?}"),
        )
    })?;
    Ok((cluster, name))
}

impl EcsApi {
    pub(super) async fn create_service(&self, scope: &Scope, body: &[u8]) -> EcsResult {
        let input = create_service_request(body)?;
        let described = self.ops.create_service(input).await.map_err(from_server)?;
        // ECS's CreateService answers with the tags it was given.
        answer(json!({ "service": shapes::service(scope, &described, true) }))
    }

    pub(super) async fn update_service(&self, scope: &Scope, body: &[u8]) -> EcsResult {
        let input = update_service_request(body)?;
        let described = self.ops.update_service(input).await.map_err(from_server)?;
        answer(json!({ "service": shapes::service(scope, &described, false) }))
    }

    pub(super) async fn delete_service(
        &self,
        scope: &Scope,
        request: DeleteServiceRequest,
    ) -> EcsResult {
        let (cluster, name) = named_service(request.cluster.as_deref(), &request.service)?;
        let described = self
            .ops
            .delete_service(&cluster, &name, request.force.unwrap_or(false))
            .await
            .map_err(from_server)?;
        answer(json!({ "service": shapes::service(scope, &described, false) }))
    }

    pub(super) async fn describe_services(
        &self,
        scope: &Scope,
        request: DescribeServicesRequest,
    ) -> EcsResult {
        let with_tags = include_tags(&request.include)?;
        if request.services.is_empty() || request.services.len() > shapes::MAX_DESCRIBED {
            return Err(invalid(format!(
                "services: name between 1 and {} services",
                shapes::MAX_DESCRIBED
            )));
        }
        let cluster = arn::cluster_name(request.cluster.as_deref())?;
        let mut names = Vec::new();
        let mut failures = Vec::new();
        for input in &request.services {
            match service_in(&cluster, input)? {
                Some(name) => names.push(name),
                None => failures.push(Failure::missing(input.clone())),
            }
        }
        let (found, missing) = if names.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            self.ops
                .describe_services(&cluster, &names)
                .await
                .map_err(from_server)?
        };
        failures.extend(missing.into_iter().map(|m| {
            Failure::missing(scope.arn(Resource::Service {
                cluster: Some(cluster.clone()),
                name: m.name,
            }))
        }));
        let services: Vec<_> = found
            .iter()
            .map(|d| shapes::service(scope, d, with_tags))
            .collect();
        answer(json!({ "services": services, "failures": failures }))
    }

    /// The ARNs of a cluster's ACTIVE and DRAINING services, one page, by
    /// name.
    async fn service_arns(
        &self,
        scope: &Scope,
        cluster: &str,
        filter: Option<Option<berth_types::service::SchedulingStrategy>>,
        next_token: Option<&str>,
        max_results: Option<i64>,
    ) -> EcsResult {
        let mut names: Vec<String> = match filter {
            None => {
                // No service matches, but the cluster must still exist.
                self.ops
                    .describe_cluster(cluster)
                    .await
                    .map_err(from_server)?;
                Vec::new()
            }
            Some(strategy) => self
                .ops
                .list_services(cluster, strategy, false)
                .await
                .map_err(from_server)?
                .into_iter()
                .map(|d| d.service.name)
                .collect(),
        };
        names.sort();
        let (names, next_token) = page::page(names, String::as_str, next_token, max_results)?;
        let arns: Vec<String> = names
            .into_iter()
            .map(|name| {
                scope.arn(Resource::Service {
                    cluster: Some(cluster.to_string()),
                    name,
                })
            })
            .collect();
        answer(json!({ "serviceArns": arns, "nextToken": next_token }))
    }

    pub(super) async fn list_services(
        &self,
        scope: &Scope,
        request: ListServicesRequest,
    ) -> EcsResult {
        let cluster = arn::cluster_name(request.cluster.as_deref())?;
        let filter = list_filter(&request)?;
        self.service_arns(
            scope,
            &cluster,
            filter,
            request.next_token.as_deref(),
            request.max_results,
        )
        .await
    }

    /// See [`namespace_cluster`]: a namespace is a cluster's DNS zone
    /// (`CLUSTER.berth`), its name or its ARN.
    pub(super) async fn list_services_by_namespace(
        &self,
        scope: &Scope,
        request: ListServicesByNamespaceRequest,
    ) -> EcsResult {
        let cluster = namespace_cluster(&request.namespace)?;
        let result = self
            .service_arns(
                scope,
                &cluster,
                Some(None),
                request.next_token.as_deref(),
                request.max_results,
            )
            .await;
        result.map_err(|mut e| {
            if e.kind == ErrorType::ClusterNotFound {
                e = EcsError::new(
                    ErrorType::NamespaceNotFound,
                    format!(
                        "namespace {:?}: no cluster {cluster:?} (a namespace is CLUSTER.{}, a cluster name or a cluster ARN)",
                        request.namespace,
                        shapes::DNS_ZONE
                    ),
                );
            }
            e
        })
    }

    async fn described_service(
        &self,
        cluster: &str,
        name: &str,
    ) -> Result<ServiceDescription, EcsError> {
        let (mut found, _) = self
            .ops
            .describe_services(cluster, &[name.to_string()])
            .await
            .map_err(from_server)?;
        found.pop().ok_or_else(|| {
            EcsError::new(
                ErrorType::ServiceNotFound,
                format!("service {name:?} not found in cluster {cluster:?}"),
            )
        })
    }

    pub(super) async fn list_service_deployments(
        &self,
        scope: &Scope,
        request: ListServiceDeploymentsRequest,
    ) -> EcsResult {
        let (cluster, name) = named_service(request.cluster.as_deref(), &request.service)?;
        let described = self.described_service(&cluster, &name).await?;
        let (briefs, next_token) =
            deployments::list(scope, &described.service, &described.deployments, &request)?;
        answer(json!({ "serviceDeployments": briefs, "nextToken": next_token }))
    }

    pub(super) async fn describe_service_deployments(
        &self,
        scope: &Scope,
        request: DescribeServiceDeploymentsRequest,
    ) -> EcsResult {
        let asked = &request.service_deployment_arns;
        if asked.is_empty() || asked.len() > deployments::MAX_DESCRIBED {
            return Err(invalid(format!(
                "serviceDeploymentArns: name between 1 and {} service deployments",
                deployments::MAX_DESCRIBED
            )));
        }
        let mut found = Vec::new();
        let mut failures = Vec::new();
        for text in asked {
            let (cluster, service, id) = deployments::parse_deployment_arn(text)?;
            // A service (or cluster) that is gone leaves its deployments
            // missing, not the whole call failed.
            let described = match self.described_service(&cluster, &service).await {
                Ok(d) => d,
                Err(e)
                    if matches!(
                        e.kind,
                        ErrorType::ServiceNotFound | ErrorType::ClusterNotFound
                    ) =>
                {
                    failures.push(Failure::missing(text.clone()));
                    continue;
                }
                Err(e) => return Err(e),
            };
            match described.deployments.iter().find(|v| v.deployment.id == id) {
                Some(view) => found.push(deployments::deployment(scope, &described, view)),
                None => failures.push(Failure::missing(text.clone())),
            }
        }
        answer(json!({ "serviceDeployments": found, "failures": failures }))
    }
}
