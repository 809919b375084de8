//! Scheduled tasks.

use berth_proto::pb;
use berth_proto::pb::schedule_service_client::ScheduleServiceClient;

use crate::{BerthClient, ClientError, Conn, Kind};

fn schedule_service(conn: Conn) -> ScheduleServiceClient<Conn> {
    ScheduleServiceClient::new(conn)
}

fn name(cluster: &str, name: &str) -> pb::ScheduleName {
    pb::ScheduleName {
        cluster: cluster.to_string(),
        name: name.to_string(),
    }
}

fn schedule_of(reply: pb::ScheduleResponse) -> Result<pb::Schedule, ClientError> {
    reply
        .schedule
        .ok_or_else(|| ClientError::InvalidResponse("the reply holds no schedule".into()))
}

impl BerthClient {
    /// Not retried after a lost reply: a second try would find it created.
    pub async fn create_schedule(
        &self,
        spec: pb::ScheduleSpec,
    ) -> Result<pb::Schedule, ClientError> {
        let request = pb::ScheduleRequest { spec: Some(spec) };
        let reply = self
            .call(Kind::Write, |conn| {
                let request = request.clone();
                async move { schedule_service(conn).create_schedule(request).await }
            })
            .await?;
        schedule_of(reply)
    }

    /// Replacing a spec with the same spec twice is harmless.
    pub async fn update_schedule(
        &self,
        spec: pb::ScheduleSpec,
    ) -> Result<pb::Schedule, ClientError> {
        let request = pb::ScheduleRequest { spec: Some(spec) };
        let reply = self
            .call(Kind::Idempotent, |conn| {
                let request = request.clone();
                async move { schedule_service(conn).update_schedule(request).await }
            })
            .await?;
        schedule_of(reply)
    }

    pub async fn list_schedules(&self, cluster: &str) -> Result<Vec<pb::Schedule>, ClientError> {
        let request = pb::ListSchedulesRequest {
            cluster: cluster.to_string(),
        };
        let reply = self
            .call(Kind::Read, |conn| {
                let request = request.clone();
                async move { schedule_service(conn).list_schedules(request).await }
            })
            .await?;
        Ok(reply.schedules)
    }

    pub async fn describe_schedule(
        &self,
        cluster: &str,
        schedule: &str,
    ) -> Result<pb::Schedule, ClientError> {
        let request = name(cluster, schedule);
        let reply = self
            .call(Kind::Read, |conn| {
                let request = request.clone();
                async move { schedule_service(conn).describe_schedule(request).await }
            })
            .await?;
        schedule_of(reply)
    }

    /// Pausing or resuming twice leaves the same state: retried freely.
    pub async fn set_schedule_paused(
        &self,
        cluster: &str,
        schedule: &str,
        paused: bool,
    ) -> Result<pb::Schedule, ClientError> {
        let request = name(cluster, schedule);
        let reply = self
            .call(Kind::Idempotent, |conn| {
                let request = request.clone();
                async move {
                    let mut client = schedule_service(conn);
                    if paused {
                        client.pause_schedule(request).await
                    } else {
                        client.resume_schedule(request).await
                    }
                }
            })
            .await?;
        schedule_of(reply)
    }

    pub async fn delete_schedule(
        &self,
        cluster: &str,
        schedule: &str,
    ) -> Result<pb::Schedule, ClientError> {
        let request = name(cluster, schedule);
        let reply = self
            .call(Kind::Write, |conn| {
                let request = request.clone();
                async move { schedule_service(conn).delete_schedule(request).await }
            })
            .await?;
        schedule_of(reply)
    }
}
