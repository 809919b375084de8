//! ScheduleService: the wire adapter over `ops::schedules`.

use berth_proto::pb;
use berth_types::scheduled::{Schedule, ScheduleSpec};
use tonic::{Request, Response, Status};

use crate::error::ServerError;
use crate::ops::Ops;

#[derive(Clone)]
pub struct SchedulesApi {
    pub ops: Ops,
}

fn reply(schedule: Schedule) -> Response<pb::ScheduleResponse> {
    Response::new(pb::ScheduleResponse {
        schedule: Some((&schedule).into()),
    })
}

fn spec_of(request: Request<pb::ScheduleRequest>) -> Result<ScheduleSpec, Status> {
    let spec = request
        .into_inner()
        .spec
        .ok_or_else(|| ServerError::from_field(berth_types::FieldError::new("spec", "required")))?;
    Ok(ScheduleSpec::try_from(spec).map_err(ServerError::from_field)?)
}

#[tonic::async_trait]
impl pb::schedule_service_server::ScheduleService for SchedulesApi {
    #[tracing::instrument(skip_all)]
    async fn create_schedule(
        &self,
        request: Request<pb::ScheduleRequest>,
    ) -> Result<Response<pb::ScheduleResponse>, Status> {
        let spec = spec_of(request)?;
        Ok(reply(self.ops.put_schedule(spec, true).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn update_schedule(
        &self,
        request: Request<pb::ScheduleRequest>,
    ) -> Result<Response<pb::ScheduleResponse>, Status> {
        let spec = spec_of(request)?;
        Ok(reply(self.ops.put_schedule(spec, false).await?))
    }

    async fn list_schedules(
        &self,
        request: Request<pb::ListSchedulesRequest>,
    ) -> Result<Response<pb::ListSchedulesResponse>, Status> {
        let schedules = self
            .ops
            .list_schedules(&request.into_inner().cluster)
            .await?;
        Ok(Response::new(pb::ListSchedulesResponse {
            schedules: schedules.iter().map(Into::into).collect(),
        }))
    }

    async fn describe_schedule(
        &self,
        request: Request<pb::ScheduleName>,
    ) -> Result<Response<pb::ScheduleResponse>, Status> {
        let req = request.into_inner();
        Ok(reply(
            self.ops.describe_schedule(&req.cluster, &req.name).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn pause_schedule(
        &self,
        request: Request<pb::ScheduleName>,
    ) -> Result<Response<pb::ScheduleResponse>, Status> {
        let req = request.into_inner();
        Ok(reply(
            self.ops
                .set_schedule_paused(&req.cluster, &req.name, true)
                .await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn resume_schedule(
        &self,
        request: Request<pb::ScheduleName>,
    ) -> Result<Response<pb::ScheduleResponse>, Status> {
        let req = request.into_inner();
        Ok(reply(
            self.ops
                .set_schedule_paused(&req.cluster, &req.name, false)
                .await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn delete_schedule(
        &self,
        request: Request<pb::ScheduleName>,
    ) -> Result<Response<pb::ScheduleResponse>, Status> {
        let req = request.into_inner();
        Ok(reply(
            self.ops.delete_schedule(&req.cluster, &req.name).await?,
        ))
    }
}
