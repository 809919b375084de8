//! StatsService: task and service resource use. The samples live in the
//! leader's memory; another server asks the leader.

use berth_proto::pb;
use berth_proto::pb::stats_service_client::StatsServiceClient;
use berth_types::{TaskStatus, DEFAULT_CLUSTER};
use tonic::{Request, Response, Status};

use crate::error::ServerError;
use crate::node::BerthNode;
use crate::session::SessionHub;

#[derive(Clone)]
pub struct StatsApi {
    pub node: BerthNode,
    pub hub: SessionHub,
}

impl StatsApi {
    /// The leader's client when this server is not the leader.
    async fn leader(
        &self,
    ) -> Result<Option<StatsServiceClient<tonic::transport::Channel>>, Status> {
        let (leader, addr) = self.node.leader().await?;
        if leader == self.node.id() {
            return Ok(None);
        }
        let channel = self
            .node
            .peers()
            .channel(&addr)
            .map_err(ServerError::Internal)?;
        Ok(Some(StatsServiceClient::new(channel)))
    }
}

fn not_sampled(task_id: &str) -> Status {
    Status::from(ServerError::NotFound(format!(
        "no resource figures for task {task_id} yet: its agent samples RUNNING tasks every 10 s and reports them to the leader"
    )))
}

#[tonic::async_trait]
impl pb::stats_service_server::StatsService for StatsApi {
    async fn get_task_stats(
        &self,
        request: Request<pb::GetTaskStatsRequest>,
    ) -> Result<Response<pb::TaskStats>, Status> {
        let req = request.into_inner();
        if let Some(mut leader) = self.leader().await? {
            return leader.get_task_stats(req).await;
        }
        let task = self
            .node
            .read(|state| state.task(&req.task_id).cloned())
            .await?
            .ok_or_else(|| ServerError::NotFound(format!("task {} not found", req.task_id)))?;
        let stats = self
            .hub
            .task_stats(&task)
            .ok_or_else(|| not_sampled(&task.id))?;
        Ok(Response::new(stats))
    }

    async fn get_service_stats(
        &self,
        request: Request<pb::GetServiceStatsRequest>,
    ) -> Result<Response<pb::ServiceStats>, Status> {
        let mut req = request.into_inner();
        if req.cluster.is_empty() {
            req.cluster = DEFAULT_CLUSTER.to_string();
        }
        if let Some(mut leader) = self.leader().await? {
            return leader.get_service_stats(req).await;
        }
        let (cluster, service) = (req.cluster.clone(), req.service.clone());
        let running = self
            .node
            .read(|state| {
                state.service(&cluster, &service)?;
                // The service's index lists its tasks by id.
                Some(
                    state
                        .service_tasks(&cluster, &service)
                        .filter(|t| t.last_status == TaskStatus::Running)
                        .cloned()
                        .collect::<Vec<_>>(),
                )
            })
            .await?
            .ok_or_else(|| {
                ServerError::NotFound(format!("service {cluster}/{service} not found"))
            })?;
        let sampled: Vec<pb::TaskStats> = running
            .iter()
            .filter_map(|t| self.hub.task_stats(t))
            .collect();
        Ok(Response::new(crate::stats::service_stats(
            &cluster,
            &service,
            u32::try_from(running.len()).unwrap_or(u32::MAX),
            sampled,
        )))
    }
}
