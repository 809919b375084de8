//! The control API. Handlers validate, then either propose a command
//! (`BerthNode::write`) or pass a read barrier and read the applied state.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_proto::pb;
use berth_proto::pb::cluster_service_server::ClusterService;
use berth_proto::pb::control_plane_service_client::ControlPlaneServiceClient;
use berth_proto::pb::control_plane_service_server::ControlPlaneService;
use berth_proto::pb::task_definition_service_server::TaskDefinitionService;
use berth_types::{
    validate, ClusterSettings, Command, CommandOutput, FieldError, TaskDefinitionFamily,
    TaskDefinitionRef, TaskDefinitionSpec, TaskDefinitionStatus,
};
use tonic::{Request, Response, Status};

use crate::error::ServerError;
use crate::node::BerthNode;

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn unexpected(output: CommandOutput) -> Status {
    ServerError::Internal(format!("unexpected command output {output:?}")).into()
}

#[derive(Clone)]
pub struct Api {
    pub node: BerthNode,
}

#[tonic::async_trait]
impl ClusterService for Api {
    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn create_cluster(
        &self,
        request: Request<pb::CreateClusterRequest>,
    ) -> Result<Response<pb::CreateClusterResponse>, Status> {
        let req = request.into_inner();
        validate::check_name("name", &req.name).map_err(ServerError::from_field)?;
        let defaults = ClusterSettings::default();
        let settings = ClusterSettings {
            lost_after_secs: Some(req.lost_after_secs)
                .filter(|s| *s > 0)
                .unwrap_or(defaults.lost_after_secs),
            task_retention_secs: Some(req.task_retention_secs)
                .filter(|s| *s > 0)
                .unwrap_or(defaults.task_retention_secs),
        };
        match self
            .node
            .write(Command::CreateCluster {
                name: req.name,
                settings,
                at_ms: now_ms(),
            })
            .await?
        {
            CommandOutput::Cluster(c) => Ok(Response::new(pb::CreateClusterResponse {
                cluster: Some(c.into()),
            })),
            other => Err(unexpected(other)),
        }
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn update_cluster(
        &self,
        request: Request<pb::UpdateClusterRequest>,
    ) -> Result<Response<pb::UpdateClusterResponse>, Status> {
        let req = request.into_inner();
        match self
            .node
            .write(Command::UpdateClusterSettings {
                name: req.name,
                lost_after_secs: req.lost_after_secs,
                task_retention_secs: req.task_retention_secs,
            })
            .await?
        {
            CommandOutput::Cluster(c) => Ok(Response::new(pb::UpdateClusterResponse {
                cluster: Some(c.into()),
            })),
            other => Err(unexpected(other)),
        }
    }

    async fn list_clusters(
        &self,
        _request: Request<pb::ListClustersRequest>,
    ) -> Result<Response<pb::ListClustersResponse>, Status> {
        let clusters = self
            .node
            .read(|state| state.clusters().cloned().map(Into::into).collect())
            .await?;
        Ok(Response::new(pb::ListClustersResponse { clusters }))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn describe_cluster(
        &self,
        request: Request<pb::DescribeClusterRequest>,
    ) -> Result<Response<pb::DescribeClusterResponse>, Status> {
        let name = request.into_inner().name;
        let cluster = self
            .node
            .read(|state| state.cluster(&name).cloned())
            .await?;
        match cluster {
            Some(c) => Ok(Response::new(pb::DescribeClusterResponse {
                cluster: Some(c.into()),
            })),
            None => Err(ServerError::NotFound(format!("cluster {name:?} not found")).into()),
        }
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn delete_cluster(
        &self,
        request: Request<pb::DeleteClusterRequest>,
    ) -> Result<Response<pb::DeleteClusterResponse>, Status> {
        let name = request.into_inner().name;
        match self.node.write(Command::DeleteCluster { name }).await? {
            CommandOutput::ClusterDeleted(name) => {
                Ok(Response::new(pb::DeleteClusterResponse { name }))
            }
            other => Err(unexpected(other)),
        }
    }
}

fn parse_ref(text: &str) -> Result<TaskDefinitionRef, ServerError> {
    TaskDefinitionRef::parse(text).map_err(ServerError::from_field)
}

#[tonic::async_trait]
impl TaskDefinitionService for Api {
    #[tracing::instrument(skip_all, fields(family))]
    async fn register_task_definition(
        &self,
        request: Request<pb::RegisterTaskDefinitionRequest>,
    ) -> Result<Response<pb::RegisterTaskDefinitionResponse>, Status> {
        let wire = request
            .into_inner()
            .spec
            .ok_or_else(|| ServerError::from_field(FieldError::new("spec", "required")))?;
        let spec = TaskDefinitionSpec::try_from(wire).map_err(ServerError::Invalid)?;
        tracing::Span::current().record("family", spec.family.as_str());
        // Checked here so that bad input is refused without a Raft round;
        // the state machine checks again when applying.
        validate::validate_spec(&spec).map_err(ServerError::Invalid)?;
        match self
            .node
            .write(Command::RegisterTaskDefinition {
                spec,
                at_ms: now_ms(),
            })
            .await?
        {
            CommandOutput::TaskDefinition(td) => {
                tracing::debug!(task_definition = %td.id(), "registered");
                Ok(Response::new(pb::RegisterTaskDefinitionResponse {
                    task_definition: Some(Arc::unwrap_or_clone(td).into()),
                }))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn list_task_definitions(
        &self,
        request: Request<pb::ListTaskDefinitionsRequest>,
    ) -> Result<Response<pb::ListTaskDefinitionsResponse>, Status> {
        let request = request.into_inner();
        let status = match request.status.as_str() {
            "" => None,
            s => Some(TaskDefinitionStatus::parse(s).ok_or_else(|| {
                ServerError::from_field(FieldError::new(
                    "status",
                    format!("unknown status {s:?}; use ACTIVE or INACTIVE"),
                ))
            })?),
        };
        self.node.read_barrier().await?;
        let applied = self.node.state().read();
        let matches = |td: &&berth_types::TaskDefinition| status.is_none_or(|s| td.status == s);
        let task_definitions = if request.family.is_empty() {
            applied
                .state
                .task_definitions()
                .filter(matches)
                .cloned()
                .map(Into::into)
                .collect()
        } else {
            applied
                .state
                .family_revisions(&request.family)
                .filter(matches)
                .cloned()
                .map(Into::into)
                .collect()
        };
        Ok(Response::new(pb::ListTaskDefinitionsResponse {
            task_definitions,
        }))
    }

    async fn list_task_definition_families(
        &self,
        _request: Request<pb::ListTaskDefinitionFamiliesRequest>,
    ) -> Result<Response<pb::ListTaskDefinitionFamiliesResponse>, Status> {
        self.node.read_barrier().await?;
        let applied = self.node.state().read();
        let families = applied
            .state
            .families()
            .map(|(family, latest)| {
                TaskDefinitionFamily {
                    family: family.to_string(),
                    latest_revision: latest,
                    latest_active_revision: applied
                        .state
                        .latest_active(family)
                        .map(|td| td.revision),
                }
                .into()
            })
            .collect();
        Ok(Response::new(pb::ListTaskDefinitionFamiliesResponse {
            families,
        }))
    }

    #[tracing::instrument(skip_all, fields(task_definition = %request.get_ref().task_definition))]
    async fn describe_task_definition(
        &self,
        request: Request<pb::DescribeTaskDefinitionRequest>,
    ) -> Result<Response<pb::DescribeTaskDefinitionResponse>, Status> {
        let reference = parse_ref(&request.into_inner().task_definition)?;
        self.node.read_barrier().await?;
        let applied = self.node.state().read();
        let found = match reference.revision {
            Some(rev) => applied.state.task_definition(&reference.family, rev),
            None => applied.state.latest_active(&reference.family),
        };
        match found {
            Some(td) => Ok(Response::new(pb::DescribeTaskDefinitionResponse {
                task_definition: Some(td.clone().into()),
            })),
            None if reference.revision.is_none() => Err(ServerError::NotFound(format!(
                "task definition family {:?} has no ACTIVE revision",
                reference.family
            ))
            .into()),
            None => {
                Err(ServerError::NotFound(format!("task definition {reference} not found")).into())
            }
        }
    }

    #[tracing::instrument(skip_all, fields(task_definition = %request.get_ref().task_definition))]
    async fn deregister_task_definition(
        &self,
        request: Request<pb::DeregisterTaskDefinitionRequest>,
    ) -> Result<Response<pb::DeregisterTaskDefinitionResponse>, Status> {
        let reference = parse_ref(&request.into_inner().task_definition)?;
        let Some(revision) = reference.revision else {
            return Err(ServerError::from_field(FieldError::new(
                "taskDefinition",
                format!(
                    "{:?} has no revision; deregister one revision at a time, e.g. {}:1",
                    reference.family, reference.family
                ),
            ))
            .into());
        };
        match self
            .node
            .write(Command::DeregisterTaskDefinition {
                family: reference.family,
                revision,
                at_ms: now_ms(),
            })
            .await?
        {
            CommandOutput::TaskDefinition(td) => {
                Ok(Response::new(pb::DeregisterTaskDefinitionResponse {
                    task_definition: Some(Arc::unwrap_or_clone(td).into()),
                }))
            }
            other => Err(unexpected(other)),
        }
    }
}

impl Api {
    async fn members(&self) -> Vec<pb::ServerMember> {
        let metrics = self.node.metrics();
        let membership = metrics.membership_config.membership().clone();
        let voters: Vec<u64> = membership.voter_ids().collect();
        let queries = membership.nodes().map(|(id, node)| {
            let id = *id;
            let addr = node.addr.clone();
            let voter = voters.contains(&id);
            let node_handle = self.node.clone();
            async move {
                let mut member = pb::ServerMember {
                    node_id: id,
                    address: addr.clone(),
                    role: "unknown".into(),
                    voter,
                    ..Default::default()
                };
                let status = if id == node_handle.id() {
                    Ok(node_handle.local_status())
                } else {
                    query_status(&node_handle, &addr).await
                };
                match status {
                    Ok(s) => {
                        member.role = s.role;
                        member.reachable = true;
                        member.term = s.term;
                        member.last_log_index = s.last_log_index;
                        member.applied_index = s.applied_index;
                        member.snapshot_index = s.snapshot_index;
                    }
                    Err(e) => member.error = e,
                }
                member
            }
        });
        futures::future::join_all(queries).await
    }

    /// Runs a membership change on the leader, proxying it from a follower.
    async fn on_leader<T, F, Fut>(
        &self,
        local: F,
        remote: impl AsyncFnOnce(
            ControlPlaneServiceClient<tonic::transport::Channel>,
        ) -> Result<T, Status>,
    ) -> Result<T, Status>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T, ServerError>>,
    {
        let (leader, addr) = self.node.leader().await?;
        if leader == self.node.id() {
            return Ok(local().await?);
        }
        let channel = self
            .node
            .peers()
            .channel(&addr)
            .map_err(ServerError::Internal)?;
        remote(ControlPlaneServiceClient::new(channel)).await
    }
}

async fn query_status(node: &BerthNode, addr: &str) -> Result<pb::NodeStatusResponse, String> {
    let mut client = node.peers().raft_client(addr)?;
    let mut request = Request::new(pb::NodeStatusRequest {});
    request.set_timeout(Duration::from_millis(800));
    match tokio::time::timeout(Duration::from_secs(1), client.node_status(request)).await {
        Ok(Ok(reply)) => Ok(reply.into_inner()),
        Ok(Err(status)) => Err(status.message().to_string()),
        Err(_) => Err("no answer within 1 s".into()),
    }
}

#[tonic::async_trait]
impl ControlPlaneService for Api {
    async fn get_status(
        &self,
        _request: Request<pb::GetControlPlaneStatusRequest>,
    ) -> Result<Response<pb::GetControlPlaneStatusResponse>, Status> {
        let metrics = self.node.metrics();
        let members = self.members().await;
        Ok(Response::new(pb::GetControlPlaneStatusResponse {
            leader_id: metrics.current_leader,
            term: metrics.current_term,
            answered_by: self.node.id(),
            members,
        }))
    }

    #[tracing::instrument(skip_all, fields(node_id = request.get_ref().node_id, address = %request.get_ref().address))]
    async fn add_server(
        &self,
        request: Request<pb::AddServerRequest>,
    ) -> Result<Response<pb::AddServerResponse>, Status> {
        let req = request.into_inner();
        if req.node_id == 0 {
            return Err(
                ServerError::from_field(FieldError::new("nodeId", "must be 1 or more")).into(),
            );
        }
        if req.address.parse::<std::net::SocketAddr>().is_err() && !req.address.contains(':') {
            return Err(ServerError::from_field(FieldError::new(
                "address",
                format!("{:?} is not HOST:PORT", req.address),
            ))
            .into());
        }
        let forwarded = req.clone();
        // The membership in the reply is the leader's: a follower may not
        // have applied the change yet when the leader answers.
        let members = self
            .on_leader(
                || async {
                    self.node
                        .add_server(req.node_id, req.address.clone(), req.learner_only)
                        .await?;
                    Ok(self.members().await)
                },
                async move |mut client| {
                    Ok(client.add_server(forwarded).await?.into_inner().members)
                },
            )
            .await?;
        Ok(Response::new(pb::AddServerResponse { members }))
    }

    #[tracing::instrument(skip_all, fields(node_id = request.get_ref().node_id))]
    async fn remove_server(
        &self,
        request: Request<pb::RemoveServerRequest>,
    ) -> Result<Response<pb::RemoveServerResponse>, Status> {
        let req = request.into_inner();
        let forwarded = req;
        let members = self
            .on_leader(
                || async {
                    self.node.remove_server(req.node_id).await?;
                    Ok(self.members().await)
                },
                async move |mut client| {
                    Ok(client.remove_server(forwarded).await?.into_inner().members)
                },
            )
            .await?;
        Ok(Response::new(pb::RemoveServerResponse { members }))
    }
}
