//! ECS's service deployments (ListServiceDeployments,
//! DescribeServiceDeployments) from Berth's deployments. Berth keeps one
//! record per rollout with its task definition, so each deployment is also
//! the one service revision it rolls out: both ARNs end in the deployment's
//! id without its `ecs-svc/` prefix (an ARN segment holds no `/`).

use serde::{Deserialize, Serialize};

use berth_types::service::{
    Deployment, DeploymentStatus, DeploymentView, RolloutState, Service, ServiceDescription,
    DEPLOYMENT_ID_PREFIX,
};

use crate::arn::{Arn, Resource, Scope};
use crate::error::{EcsError, ErrorType};
use crate::page::epoch_seconds;
use crate::services::{deployment_configuration, DeploymentConfiguration};

/// ECS's limit on the deployments one DescribeServiceDeployments names.
pub const MAX_DESCRIBED: usize = 20;

/// The statuses ECS has for a service deployment.
pub const STATUSES: [&str; 9] = [
    "PENDING",
    "SUCCESSFUL",
    "STOPPED",
    "STOP_REQUESTED",
    "IN_PROGRESS",
    "ROLLBACK_REQUESTED",
    "ROLLBACK_IN_PROGRESS",
    "ROLLBACK_SUCCESSFUL",
    "ROLLBACK_FAILED",
];

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedAt {
    pub before: Option<f64>,
    pub after: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListServiceDeploymentsRequest {
    pub service: String,
    pub cluster: Option<String>,
    #[serde(default)]
    pub status: Vec<String>,
    pub created_at: Option<CreatedAt>,
    pub next_token: Option<String>,
    pub max_results: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeServiceDeploymentsRequest {
    #[serde(default)]
    pub service_deployment_arns: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRevisionSummary {
    pub arn: String,
    pub requested_task_count: u32,
    pub running_task_count: u32,
    pub pending_task_count: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollback {
    pub reason: String,
    pub started_at: f64,
    pub service_revision_arn: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CircuitBreakerState {
    pub status: String,
    pub failure_count: u32,
    pub threshold: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceDeploymentBrief {
    pub service_deployment_arn: String,
    pub service_arn: String,
    pub cluster_arn: String,
    pub created_at: f64,
    pub started_at: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<f64>,
    pub target_service_revision_arn: String,
    pub status: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub status_reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceDeployment {
    pub service_deployment_arn: String,
    pub service_arn: String,
    pub cluster_arn: String,
    pub created_at: f64,
    pub started_at: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<f64>,
    pub updated_at: f64,
    pub source_service_revisions: Vec<ServiceRevisionSummary>,
    pub target_service_revision: ServiceRevisionSummary,
    pub status: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub status_reason: String,
    pub deployment_configuration: DeploymentConfiguration,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback: Option<Rollback>,
    pub deployment_circuit_breaker: CircuitBreakerState,
}

fn arn_id(deployment_id: &str) -> &str {
    deployment_id
        .strip_prefix(DEPLOYMENT_ID_PREFIX)
        .unwrap_or(deployment_id)
}

pub fn deployment_arn(scope: &Scope, service: &Service, deployment_id: &str) -> String {
    scope.arn(Resource::ServiceDeployment {
        cluster: service.cluster.clone(),
        service: service.name.clone(),
        id: arn_id(deployment_id).into(),
    })
}

pub fn revision_arn(scope: &Scope, service: &Service, deployment_id: &str) -> String {
    scope.arn(Resource::ServiceRevision {
        cluster: service.cluster.clone(),
        service: service.name.clone(),
        id: arn_id(deployment_id).into(),
    })
}

/// A service deployment ARN: its cluster, service and Berth deployment id.
pub fn parse_deployment_arn(text: &str) -> Result<(String, String, String), EcsError> {
    match Arn::parse(text)?.resource {
        Resource::ServiceDeployment {
            cluster,
            service,
            id,
        } => Ok((cluster, service, format!("{DEPLOYMENT_ID_PREFIX}{id}"))),
        _ => Err(EcsError::new(
            ErrorType::InvalidParameter,
            format!("{text:?} is not a service deployment ARN"),
        )),
    }
}

/// ECS's status of a deployment. Berth rolls a failed deployment back with
/// a new deployment (`rollback_of`), whose progress is ECS's ROLLBACK_*;
/// a deployment that failed, or was replaced before it finished, is
/// STOPPED.
pub fn status(d: &Deployment) -> &'static str {
    match (d.rollback_of.is_some(), d.rollout_state, d.status) {
        (true, RolloutState::InProgress, DeploymentStatus::Inactive) => "STOPPED",
        (true, RolloutState::InProgress, _) => "ROLLBACK_IN_PROGRESS",
        (true, RolloutState::Completed, _) => "ROLLBACK_SUCCESSFUL",
        (true, RolloutState::Failed, _) => "ROLLBACK_FAILED",
        (false, RolloutState::InProgress, DeploymentStatus::Inactive) => "STOPPED",
        (false, RolloutState::InProgress, _) => "IN_PROGRESS",
        (false, RolloutState::Completed, _) => "SUCCESSFUL",
        (false, RolloutState::Failed, _) => "STOPPED",
    }
}

fn finished_at(d: &Deployment) -> Option<f64> {
    (status(d) != "IN_PROGRESS" && status(d) != "ROLLBACK_IN_PROGRESS")
        .then(|| epoch_seconds(d.updated_at_ms))
}

fn summary(scope: &Scope, service: &Service, view: &DeploymentView) -> ServiceRevisionSummary {
    ServiceRevisionSummary {
        arn: revision_arn(scope, service, &view.deployment.id),
        requested_task_count: view.deployment.desired_count,
        running_task_count: view.counts.running,
        pending_task_count: view.counts.pending,
    }
}

pub fn brief(scope: &Scope, service: &Service, d: &Deployment) -> ServiceDeploymentBrief {
    ServiceDeploymentBrief {
        service_deployment_arn: deployment_arn(scope, service, &d.id),
        service_arn: scope.arn(Resource::Service {
            cluster: Some(service.cluster.clone()),
            name: service.name.clone(),
        }),
        cluster_arn: scope.cluster(&service.cluster),
        created_at: epoch_seconds(d.created_at_ms),
        started_at: epoch_seconds(d.created_at_ms),
        finished_at: finished_at(d),
        target_service_revision_arn: revision_arn(scope, service, &d.id),
        status: status(d).into(),
        status_reason: d.rollout_state_reason.clone(),
    }
}

/// One deployment in full. The revisions it replaces are the service's
/// other current deployments while it is the PRIMARY one; Berth keeps no
/// record of them once it has finished.
pub fn deployment(
    scope: &Scope,
    described: &ServiceDescription,
    view: &DeploymentView,
) -> ServiceDeployment {
    let service = &described.service;
    let d = &view.deployment;
    let brief = brief(scope, service, d);
    let source_service_revisions = if d.status == DeploymentStatus::Primary {
        described
            .deployments
            .iter()
            .filter(|o| o.deployment.status == DeploymentStatus::Active)
            .map(|o| summary(scope, service, o))
            .collect()
    } else {
        Vec::new()
    };
    let breaker = &service.deployment_configuration.circuit_breaker;
    let breaker_status = match (breaker.enable, d.rollout_state) {
        (false, _) => "DISABLED",
        (true, RolloutState::Failed) => "TRIGGERED",
        (true, RolloutState::InProgress) => "MONITORING",
        (true, RolloutState::Completed) => "MONITORING_COMPLETE",
    };
    ServiceDeployment {
        service_deployment_arn: brief.service_deployment_arn,
        service_arn: brief.service_arn,
        cluster_arn: brief.cluster_arn,
        created_at: brief.created_at,
        started_at: brief.started_at,
        finished_at: brief.finished_at,
        updated_at: epoch_seconds(d.updated_at_ms),
        source_service_revisions,
        target_service_revision: summary(scope, service, view),
        status: brief.status,
        status_reason: brief.status_reason,
        deployment_configuration: deployment_configuration(&service.deployment_configuration),
        rollback: d.rollback_of.as_ref().map(|failed| Rollback {
            reason: format!("rolling back deployment {failed}"),
            started_at: epoch_seconds(d.created_at_ms),
            service_revision_arn: revision_arn(scope, service, &d.id),
        }),
        deployment_circuit_breaker: CircuitBreakerState {
            status: breaker_status.into(),
            failure_count: d.failed_tasks,
            threshold: breaker.threshold_for(d.desired_count),
        },
    }
}

/// ListServiceDeployments over a service's deployments: newest first,
/// filtered by status and creation time, one page.
pub fn list(
    scope: &Scope,
    service: &Service,
    deployments: &[DeploymentView],
    request: &ListServiceDeploymentsRequest,
) -> Result<(Vec<ServiceDeploymentBrief>, Option<String>), EcsError> {
    for s in &request.status {
        if !STATUSES.contains(&s.as_str()) {
            return Err(EcsError::new(
                ErrorType::InvalidParameter,
                format!("status: {s:?} is not one of {}", STATUSES.join(", ")),
            ));
        }
    }
    let window = request.created_at.clone().unwrap_or_default();
    let mut keyed: Vec<(String, ServiceDeploymentBrief)> = deployments
        .iter()
        .map(|v| &v.deployment)
        // The service keeps its deployments newest first; that position
        // breaks ties between deployments made in the same millisecond
        // (their ids are random).
        .enumerate()
        .filter(|(_, d)| request.status.is_empty() || request.status.iter().any(|s| s == status(d)))
        .filter(|(_, d)| {
            let at = epoch_seconds(d.created_at_ms);
            window.after.is_none_or(|after| at >= after)
                && window.before.is_none_or(|before| at <= before)
        })
        // Newest first: the key counts down as creation time goes up.
        .map(|(position, d)| {
            let key = format!("{:020}{position:010}{}", i64::MAX - d.created_at_ms, d.id);
            (key, brief(scope, service, d))
        })
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    let (page, token) = crate::page::page(
        keyed,
        |(key, _)| key,
        request.next_token.as_deref(),
        request.max_results,
    )?;
    Ok((page.into_iter().map(|(_, b)| b).collect(), token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_types::service::DeploymentCounts;

    fn scope() -> Scope {
        Scope {
            region: "eu-west-1".into(),
            account: "000000000000".into(),
        }
    }

    fn deployment_at(id: &str, at_ms: i64, status: DeploymentStatus) -> DeploymentView {
        DeploymentView {
            deployment: Deployment {
                id: format!("{DEPLOYMENT_ID_PREFIX}{id}"),
                status,
                task_definition: "web:1".into(),
                desired_count: 4,
                rollout_state: RolloutState::InProgress,
                rollout_state_reason: String::new(),
                failed_tasks: 1,
                rollback_of: None,
                created_at_ms: at_ms,
                updated_at_ms: at_ms + 500,
                traffic_percent: 100,
                traffic_at_ms: at_ms,
            },
            counts: DeploymentCounts {
                pending: 1,
                running: 2,
                healthy: 2,
            },
        }
    }

    fn described() -> ServiceDescription {
        let mut d =
            crate::services::tests::described(berth_types::service::DeploymentController::Rolling);
        d.deployments = vec![
            deployment_at("2", 9_000, DeploymentStatus::Primary),
            deployment_at("1", 5_000, DeploymentStatus::Active),
        ];
        d
    }

    #[test]
    fn deployment_arns_round_trip_to_berth_ids() {
        let d = described();
        let arn = deployment_arn(&scope(), &d.service, "ecs-svc/0042");
        assert_eq!(
            arn,
            "arn:aws:ecs:eu-west-1:000000000000:service-deployment/default/web/0042"
        );
        assert_eq!(
            parse_deployment_arn(&arn).unwrap(),
            ("default".into(), "web".into(), "ecs-svc/0042".into())
        );
        assert!(parse_deployment_arn("arn:aws:ecs:r:1:service/default/web").is_err());
    }

    #[test]
    fn statuses_follow_rollouts_and_rollbacks() {
        let mut d = deployment_at("1", 0, DeploymentStatus::Primary).deployment;
        assert_eq!(status(&d), "IN_PROGRESS");
        d.rollout_state = RolloutState::Completed;
        assert_eq!(status(&d), "SUCCESSFUL");
        d.rollout_state = RolloutState::Failed;
        assert_eq!(status(&d), "STOPPED");
        d.rollout_state = RolloutState::InProgress;
        d.status = DeploymentStatus::Inactive;
        assert_eq!(status(&d), "STOPPED", "replaced before it finished");
        d.status = DeploymentStatus::Primary;
        d.rollback_of = Some("ecs-svc/0".into());
        assert_eq!(status(&d), "ROLLBACK_IN_PROGRESS");
        d.rollout_state = RolloutState::Completed;
        assert_eq!(status(&d), "ROLLBACK_SUCCESSFUL");
        d.rollout_state = RolloutState::Failed;
        assert_eq!(status(&d), "ROLLBACK_FAILED");
    }

    #[test]
    fn a_primary_deployment_replaces_the_active_revisions() {
        let d = described();
        let full = deployment(&scope(), &d, &d.deployments[0]);
        let json = serde_json::to_value(&full).unwrap();
        assert_eq!(json["status"], "IN_PROGRESS");
        assert_eq!(json["startedAt"], 9.0);
        assert!(json.get("finishedAt").is_none());
        assert_eq!(
            json["targetServiceRevision"],
            serde_json::json!({
                "arn": "arn:aws:ecs:eu-west-1:000000000000:service-revision/default/web/2",
                "requestedTaskCount": 4, "runningTaskCount": 2, "pendingTaskCount": 1
            })
        );
        assert_eq!(
            json["sourceServiceRevisions"][0]["arn"],
            "arn:aws:ecs:eu-west-1:000000000000:service-revision/default/web/1"
        );
        assert_eq!(json["deploymentCircuitBreaker"]["failureCount"], 1);
        let old = deployment(&scope(), &d, &d.deployments[1]);
        assert!(old.source_service_revisions.is_empty());
    }

    /// Made in the same millisecond (a CreateService and an UpdateService
    /// in a row), the newer deployment still comes first, whatever its
    /// random id.
    #[test]
    fn deployments_of_the_same_millisecond_list_newest_first() {
        let mut d = described();
        for (newer, older) in [("1", "9"), ("9", "1")] {
            d.deployments = vec![
                deployment_at(newer, 7_000, DeploymentStatus::Primary),
                deployment_at(older, 7_000, DeploymentStatus::Active),
            ];
            let request: ListServiceDeploymentsRequest =
                serde_json::from_value(serde_json::json!({"service": "web"})).unwrap();
            let (page, _) = list(&scope(), &d.service, &d.deployments, &request).unwrap();
            assert!(
                page[0]
                    .service_deployment_arn
                    .ends_with(&format!("/{newer}")),
                "{page:?}"
            );
        }
    }

    #[test]
    fn listing_is_newest_first_filtered_and_paged() {
        let d = described();
        let request = |json: serde_json::Value| -> ListServiceDeploymentsRequest {
            serde_json::from_value(json).unwrap()
        };
        let (page, token) = list(
            &scope(),
            &d.service,
            &d.deployments,
            &request(serde_json::json!({"service": "web", "maxResults": 1})),
        )
        .unwrap();
        assert!(page[0].service_deployment_arn.ends_with("/2"));
        let (page, token) = list(
            &scope(),
            &d.service,
            &d.deployments,
            &request(serde_json::json!({"service": "web", "maxResults": 1, "nextToken": token})),
        )
        .unwrap();
        assert!(page[0].service_deployment_arn.ends_with("/1"));
        assert_eq!(token, None);
        let (page, _) = list(
            &scope(),
            &d.service,
            &d.deployments,
            &request(serde_json::json!({"service": "web", "createdAt": {"before": 6.0}})),
        )
        .unwrap();
        assert_eq!(page.len(), 1);
        let (page, _) = list(
            &scope(),
            &d.service,
            &d.deployments,
            &request(serde_json::json!({"service": "web", "status": ["SUCCESSFUL"]})),
        )
        .unwrap();
        assert!(page.is_empty());
        let e = list(
            &scope(),
            &d.service,
            &d.deployments,
            &request(serde_json::json!({"service": "web", "status": ["DONE"]})),
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorType::InvalidParameter);
    }
}
