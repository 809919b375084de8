//! CreateService, UpdateService, DeleteService, DescribeServices,
//! ListServices and the deployment history.

use berth_controllers::IdSource;
use berth_types::service::{
    self, CreateServiceInput, DeploymentView, SchedulingStrategy, ServiceDescription,
    ServiceStatus, ServiceUpdate, UpdateServiceInput,
};
use berth_types::{Command, CommandOutput, DEFAULT_CLUSTER};

use super::{check_len, cluster_or_default, invalid, unexpected, Ops};
use crate::api::now_ms;
use crate::error::ServerError;
use crate::node::BerthNode;

/// Names asked for in one Describe call at most (ECS allows 10; more is
/// cheap here, but still bounded).
pub const MAX_NAMES_PER_DESCRIBE: usize = 100;

/// A name asked for that is not there, and why (ECS's `failures[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub name: String,
    pub reason: String,
}

fn new_deployment_id() -> String {
    berth_controllers::services::deployment_id(&IdSource::new(rand::random()))
}

/// Placement settings parse with the scheduler's grammar before anything
/// is proposed: a bad one costs no Raft round.
fn check_placement(strategies: &[String], constraints: &[String]) -> Result<(), ServerError> {
    berth_scheduler::parse_strategies(strategies)
        .map_err(|e| invalid("placementStrategy", e.to_string()))?;
    berth_scheduler::parse_constraints(constraints)
        .map_err(|e| invalid("placementConstraints", e.to_string()))?;
    Ok(())
}

impl Ops {
    async fn describe_one(
        &self,
        cluster: &str,
        name: &str,
    ) -> Result<ServiceDescription, ServerError> {
        self.node
            .read(|state| {
                state
                    .service(cluster, name)
                    .map(|s| state.describe_service(s))
            })
            .await?
            .ok_or_else(|| {
                ServerError::NotFound(format!("service {name:?} not found in cluster {cluster:?}"))
            })
    }

    async fn propose_service(&self, command: Command) -> Result<ServiceDescription, ServerError> {
        match self.node.write(command).await? {
            CommandOutput::Service(s) => self.describe_one(&s.cluster, &s.name).await,
            other => Err(unexpected(other)),
        }
    }

    pub async fn create_service(
        &self,
        input: CreateServiceInput,
    ) -> Result<ServiceDescription, ServerError> {
        check_len("taskDefinition", &input.task_definition, 512)?;
        check_placement(&input.placement_strategies, &input.placement_constraints)?;
        let spec = input.into_spec(DEFAULT_CLUSTER);
        service::validate_spec(&spec)?;
        let (cluster, name) = (spec.cluster.clone(), spec.name.clone());
        let described = self
            .propose_service(Command::CreateService {
                spec,
                deployment_id: new_deployment_id(),
                at_ms: now_ms(),
            })
            .await?;
        tracing::info!(%cluster, service = %name, "service created");
        Ok(described)
    }

    pub async fn update_service(
        &self,
        input: UpdateServiceInput,
    ) -> Result<ServiceDescription, ServerError> {
        let cluster = cluster_or_default(&input.cluster);
        if let Some(td) = &input.task_definition {
            check_len("taskDefinition", td, 512)?;
        }
        check_placement(
            input.placement_strategies.as_deref().unwrap_or_default(),
            input.placement_constraints.as_deref().unwrap_or_default(),
        )?;
        if input
            .desired_count
            .is_some_and(|n| n > service::MAX_DESIRED_COUNT)
        {
            return Err(invalid(
                "desiredCount",
                format!(
                    "at most {} tasks per service; split it into several services",
                    service::MAX_DESIRED_COUNT
                ),
            ));
        }
        // Settings left out keep their current value; the state machine
        // merges and validates the result as a whole.
        let current = self
            .node
            .read(|state| {
                state
                    .service(&cluster, &input.name)
                    .map(|s| s.deployment_configuration)
            })
            .await?;
        let deployment_configuration = match current {
            Some(current) if input.deployment_configuration != Default::default() => {
                Some(input.deployment_configuration.over(current))
            }
            _ => None,
        };
        let update = ServiceUpdate {
            task_definition: input.task_definition,
            desired_count: input.desired_count,
            deployment_configuration,
            placement_strategies: input.placement_strategies,
            placement_constraints: input.placement_constraints,
            health_check_grace_period_secs: input.health_check_grace_period_secs,
            force_new_deployment: input.force_new_deployment,
        };
        let name = input.name;
        let described = self
            .propose_service(Command::UpdateService {
                cluster: cluster.clone(),
                name: name.clone(),
                update,
                deployment_id: new_deployment_id(),
                at_ms: now_ms(),
            })
            .await?;
        tracing::info!(%cluster, service = %name, "service updated");
        Ok(described)
    }

    pub async fn delete_service(
        &self,
        cluster: &str,
        name: &str,
        force: bool,
    ) -> Result<ServiceDescription, ServerError> {
        let cluster = cluster_or_default(cluster);
        let described = self
            .propose_service(Command::DeleteService {
                cluster: cluster.clone(),
                name: name.to_string(),
                force,
                at_ms: now_ms(),
            })
            .await?;
        tracing::info!(%cluster, service = %name, force, "service deleted");
        Ok(described)
    }

    /// Rolls a deployment in progress back (see `Command::RollbackService`).
    pub async fn rollback_service(
        &self,
        cluster: &str,
        name: &str,
    ) -> Result<ServiceDescription, ServerError> {
        let cluster = cluster_or_default(cluster);
        check_len("service", name, berth_types::limits::MAX_ID_LEN)?;
        let described = self
            .propose_service(Command::RollbackService {
                cluster: cluster.clone(),
                name: name.to_string(),
                deployment_id: new_deployment_id(),
                at_ms: now_ms(),
            })
            .await?;
        tracing::info!(%cluster, service = %name, "service rolled back");
        Ok(described)
    }

    /// A stream of service `name`'s endpoint sets from this server's applied
    /// state: the current set first (unless its revision is
    /// `known_revision`), then each changed set. Ends with NOT_FOUND once
    /// the service is gone, and when the receiver is dropped.
    pub fn watch_endpoints(
        &self,
        cluster: &str,
        name: &str,
        known_revision: u64,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<EndpointSet, ServerError>>, ServerError> {
        let cluster = cluster_or_default(cluster);
        check_len("service", name, berth_types::limits::MAX_ID_LEN)?;
        let name = name.to_string();
        // Subscribed before the first read, so no change falls in between.
        let mut events = self.node.state().subscribe_events();
        let current = endpoint_set(&self.node, &cluster, &name)?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let node = self.node.clone();
        tokio::spawn(async move {
            let mut known = known_revision;
            let mut set = Ok(current);
            loop {
                match set {
                    Ok(set) if set.revision == known => {}
                    Ok(set) => {
                        known = set.revision;
                        if tx.send(Ok(set)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
                // Anything applied may change the set (a task's status or
                // health, an instance's address, the service itself); the
                // revision decides whether it did.
                tokio::select! {
                    batch = events.recv() => if batch.is_none() { return },
                    () = tx.closed() => return,
                }
                while events.try_recv().is_ok() {}
                set = endpoint_set(&node, &cluster, &name);
            }
        });
        Ok(rx)
    }

    /// Several services at once; the names not found are failures, not an
    /// error (as ECS reports them).
    pub async fn describe_services(
        &self,
        cluster: &str,
        names: &[String],
    ) -> Result<(Vec<ServiceDescription>, Vec<Failure>), ServerError> {
        if names.is_empty() {
            return Err(invalid("services", "name at least one service"));
        }
        if names.len() > MAX_NAMES_PER_DESCRIBE {
            return Err(invalid(
                "services",
                format!("at most {MAX_NAMES_PER_DESCRIBE} services per call"),
            ));
        }
        let cluster = cluster_or_default(cluster);
        self.node
            .read(|state| {
                if state.cluster(&cluster).is_none() {
                    return Err(ServerError::NotFound(format!(
                        "cluster {cluster:?} not found"
                    )));
                }
                let mut found = Vec::new();
                let mut failures = Vec::new();
                for name in names {
                    match state.service(&cluster, name) {
                        Some(s) => found.push(state.describe_service(s)),
                        None => failures.push(Failure {
                            name: name.clone(),
                            reason: "MISSING".into(),
                        }),
                    }
                }
                Ok((found, failures))
            })
            .await?
    }

    /// The services of a cluster, without their events (DescribeServices
    /// has them).
    pub async fn list_services(
        &self,
        cluster: &str,
        strategy: Option<SchedulingStrategy>,
        include_inactive: bool,
    ) -> Result<Vec<ServiceDescription>, ServerError> {
        let cluster = cluster_or_default(cluster);
        self.node
            .read(|state| {
                if state.cluster(&cluster).is_none() {
                    return Err(ServerError::NotFound(format!(
                        "cluster {cluster:?} not found"
                    )));
                }
                Ok(state
                    .services_in(&cluster)
                    .filter(|s| include_inactive || s.status != ServiceStatus::Inactive)
                    .filter(|s| strategy.is_none_or(|k| s.scheduling_strategy == k))
                    .map(|s| {
                        let mut d = state.describe_service(s);
                        d.service.events.clear();
                        d
                    })
                    .collect())
            })
            .await?
    }

    /// Every deployment of a service, current ones first.
    pub async fn list_deployments(
        &self,
        cluster: &str,
        name: &str,
    ) -> Result<Vec<DeploymentView>, ServerError> {
        let cluster = cluster_or_default(cluster);
        Ok(self.describe_one(&cluster, name).await?.deployments)
    }

    pub async fn describe_deployments(
        &self,
        cluster: &str,
        name: &str,
        ids: &[String],
    ) -> Result<(Vec<DeploymentView>, Vec<Failure>), ServerError> {
        if ids.len() > MAX_NAMES_PER_DESCRIBE {
            return Err(invalid(
                "deploymentIds",
                format!("at most {MAX_NAMES_PER_DESCRIBE} deployments per call"),
            ));
        }
        let all = self.list_deployments(cluster, name).await?;
        let mut found = Vec::new();
        let mut failures = Vec::new();
        for id in ids {
            match all.iter().find(|d| d.deployment.id == *id) {
                Some(d) => found.push(d.clone()),
                None => failures.push(Failure {
                    name: id.clone(),
                    reason: "MISSING".into(),
                }),
            }
        }
        Ok((found, failures))
    }
}

/// A service's endpoints and their revision, as applied on this server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSet {
    pub revision: u64,
    pub endpoints: Vec<berth_types::endpoints::Endpoint>,
}

fn endpoint_set(node: &BerthNode, cluster: &str, name: &str) -> Result<EndpointSet, ServerError> {
    let applied = node.state().read();
    let state = &applied.state;
    if state.cluster(cluster).is_none() {
        return Err(ServerError::NotFound(format!(
            "cluster {cluster:?} not found"
        )));
    }
    let endpoints = berth_types::endpoints::live_service_endpoints(state, cluster, name)
        .ok_or_else(|| {
            ServerError::NotFound(format!("service {name:?} not found in cluster {cluster:?}"))
        })?;
    Ok(EndpointSet {
        revision: berth_types::endpoints::revision(&endpoints),
        endpoints,
    })
}
