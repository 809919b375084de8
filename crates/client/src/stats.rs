//! Task and service resource use (from the leader's memory).

use berth_proto::pb;
use berth_proto::pb::stats_service_client::StatsServiceClient;

use crate::{BerthClient, ClientError, Conn, Kind};

fn stats_service(conn: Conn) -> StatsServiceClient<Conn> {
    StatsServiceClient::new(conn)
}

impl BerthClient {
    pub async fn task_stats(&self, task_id: &str) -> Result<pb::TaskStats, ClientError> {
        let request = pb::GetTaskStatsRequest {
            task_id: task_id.to_string(),
        };
        self.call(Kind::Read, |conn| {
            let request = request.clone();
            async move { stats_service(conn).get_task_stats(request).await }
        })
        .await
    }

    pub async fn service_stats(
        &self,
        cluster: &str,
        service: &str,
    ) -> Result<pb::ServiceStats, ClientError> {
        let request = pb::GetServiceStatsRequest {
            cluster: cluster.to_string(),
            service: service.to_string(),
        };
        self.call(Kind::Read, |conn| {
            let request = request.clone();
            async move { stats_service(conn).get_service_stats(request).await }
        })
        .await
    }
}
