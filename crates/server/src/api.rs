//! ClusterService and TaskDefinitionService, thin adapters over
//! `ops::clusters` and `ops::taskdefs`; and ControlPlaneService (the Raft
//! membership and status of the servers themselves).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_proto::pb;
use berth_proto::pb::cluster_service_server::ClusterService;
use berth_proto::pb::control_plane_service_client::ControlPlaneServiceClient;
use berth_proto::pb::control_plane_service_server::ControlPlaneService;
use berth_proto::pb::task_definition_service_server::TaskDefinitionService;
use berth_types::{FieldError, TaskDefinitionSpec, TaskDefinitionStatus};
use tonic::{Request, Response, Status};

use crate::error::ServerError;
use crate::node::BerthNode;

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[derive(Clone)]
pub struct Api {
    pub node: BerthNode,
    pub ops: crate::ops::Ops,
}

#[tonic::async_trait]
impl ClusterService for Api {
    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn create_cluster(
        &self,
        request: Request<pb::CreateClusterRequest>,
    ) -> Result<Response<pb::CreateClusterResponse>, Status> {
        let req = request.into_inner();
        let cluster = self
            .ops
            .create_cluster(
                req.name,
                Some(req.lost_after_secs),
                Some(req.task_retention_secs),
                req.tags,
            )
            .await?;
        Ok(Response::new(pb::CreateClusterResponse {
            cluster: Some(cluster.into()),
        }))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn update_cluster(
        &self,
        request: Request<pb::UpdateClusterRequest>,
    ) -> Result<Response<pb::UpdateClusterResponse>, Status> {
        let req = request.into_inner();
        let cluster = self
            .ops
            .update_cluster(req.name, req.lost_after_secs, req.task_retention_secs)
            .await?;
        Ok(Response::new(pb::UpdateClusterResponse {
            cluster: Some(cluster.into()),
        }))
    }

    async fn list_clusters(
        &self,
        _request: Request<pb::ListClustersRequest>,
    ) -> Result<Response<pb::ListClustersResponse>, Status> {
        let clusters = self.ops.list_clusters().await?;
        Ok(Response::new(pb::ListClustersResponse {
            clusters: clusters.into_iter().map(Into::into).collect(),
        }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(name = %request.get_ref().name))]
    async fn describe_cluster(
        &self,
        request: Request<pb::DescribeClusterRequest>,
    ) -> Result<Response<pb::DescribeClusterResponse>, Status> {
        let cluster = self
            .ops
            .describe_cluster(&request.into_inner().name)
            .await?;
        Ok(Response::new(pb::DescribeClusterResponse {
            cluster: Some(cluster.into()),
        }))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn delete_cluster(
        &self,
        request: Request<pb::DeleteClusterRequest>,
    ) -> Result<Response<pb::DeleteClusterResponse>, Status> {
        let name = self.ops.delete_cluster(request.into_inner().name).await?;
        Ok(Response::new(pb::DeleteClusterResponse { name }))
    }
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
        let td = self.ops.register_task_definition(spec).await?;
        Ok(Response::new(pb::RegisterTaskDefinitionResponse {
            task_definition: Some(td.into()),
        }))
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
        let family = Some(request.family.as_str()).filter(|f| !f.is_empty());
        let task_definitions = self.ops.list_task_definitions(family, status).await?;
        Ok(Response::new(pb::ListTaskDefinitionsResponse {
            task_definitions: task_definitions.into_iter().map(Into::into).collect(),
        }))
    }

    async fn list_task_definition_families(
        &self,
        _request: Request<pb::ListTaskDefinitionFamiliesRequest>,
    ) -> Result<Response<pb::ListTaskDefinitionFamiliesResponse>, Status> {
        let families = self.ops.list_task_definition_families().await?;
        Ok(Response::new(pb::ListTaskDefinitionFamiliesResponse {
            families: families.into_iter().map(Into::into).collect(),
        }))
    }

    // The plain reads that have a span (most have none) have it at debug
    // level: an info span per call cost the leader 5% of its CPU under 256
    // reading clients (registering it and formatting its fields), and a
    // read logs nothing at info.
    #[tracing::instrument(level = "debug", skip_all, fields(task_definition = %request.get_ref().task_definition))]
    async fn describe_task_definition(
        &self,
        request: Request<pb::DescribeTaskDefinitionRequest>,
    ) -> Result<Response<pb::DescribeTaskDefinitionResponse>, Status> {
        let td = self
            .ops
            .describe_task_definition(&request.into_inner().task_definition)
            .await?;
        Ok(Response::new(pb::DescribeTaskDefinitionResponse {
            task_definition: Some(td.into()),
        }))
    }

    #[tracing::instrument(skip_all, fields(task_definition = %request.get_ref().task_definition))]
    async fn deregister_task_definition(
        &self,
        request: Request<pb::DeregisterTaskDefinitionRequest>,
    ) -> Result<Response<pb::DeregisterTaskDefinitionResponse>, Status> {
        let td = self
            .ops
            .deregister_task_definition(&request.into_inner().task_definition)
            .await?;
        Ok(Response::new(pb::DeregisterTaskDefinitionResponse {
            task_definition: Some(td.into()),
        }))
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
