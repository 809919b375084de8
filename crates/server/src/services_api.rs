//! ServiceService, a thin adapter over `ops::services`.

use berth_proto::pb;
use berth_proto::pb::service_service_server::ServiceService;
use berth_types::service::{CreateServiceInput, SchedulingStrategy};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

use crate::error::ServerError;
use crate::ops::services::Failure;
use crate::ops::Ops;

#[derive(Clone)]
pub struct ServicesApi {
    pub ops: Ops,
}

fn failures(failures: Vec<Failure>) -> Vec<pb::Failure> {
    failures
        .into_iter()
        .map(|f| pb::Failure {
            name: f.name,
            reason: f.reason,
        })
        .collect()
}

type EndpointStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::EndpointSet, Status>> + Send>>;

#[tonic::async_trait]
impl ServiceService for ServicesApi {
    type WatchEndpointsStream = EndpointStream;

    #[tracing::instrument(skip_all, fields(cluster = %request.get_ref().cluster, service = %request.get_ref().service))]
    async fn watch_endpoints(
        &self,
        request: Request<pb::WatchEndpointsRequest>,
    ) -> Result<Response<Self::WatchEndpointsStream>, Status> {
        let req = request.into_inner();
        let sets = self
            .ops
            .watch_endpoints(&req.cluster, &req.service, req.known_revision)?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(sets).map(|set| {
            set.map(|set| pb::EndpointSet {
                revision: set.revision,
                endpoints: set.endpoints.iter().map(Into::into).collect(),
            })
            .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    #[tracing::instrument(skip_all, fields(cluster = %request.get_ref().cluster, service = %request.get_ref().service_name))]
    async fn create_service(
        &self,
        request: Request<pb::CreateServiceRequest>,
    ) -> Result<Response<pb::CreateServiceResponse>, Status> {
        let input =
            CreateServiceInput::try_from(request.into_inner()).map_err(ServerError::from_field)?;
        let service = self.ops.create_service(input).await?;
        Ok(Response::new(pb::CreateServiceResponse {
            service: Some((&service).into()),
        }))
    }

    #[tracing::instrument(skip_all, fields(cluster = %request.get_ref().cluster, service = %request.get_ref().service))]
    async fn update_service(
        &self,
        request: Request<pb::UpdateServiceRequest>,
    ) -> Result<Response<pb::UpdateServiceResponse>, Status> {
        let input = berth_types::service::UpdateServiceInput::try_from(request.into_inner())
            .map_err(ServerError::from_field)?;
        let service = self.ops.update_service(input).await?;
        Ok(Response::new(pb::UpdateServiceResponse {
            service: Some((&service).into()),
        }))
    }

    #[tracing::instrument(skip_all, fields(cluster = %request.get_ref().cluster, service = %request.get_ref().service))]
    async fn delete_service(
        &self,
        request: Request<pb::DeleteServiceRequest>,
    ) -> Result<Response<pb::DeleteServiceResponse>, Status> {
        let req = request.into_inner();
        let service = self
            .ops
            .delete_service(&req.cluster, &req.service, req.force)
            .await?;
        Ok(Response::new(pb::DeleteServiceResponse {
            service: Some((&service).into()),
        }))
    }

    #[tracing::instrument(skip_all, fields(cluster = %request.get_ref().cluster, service = %request.get_ref().service))]
    async fn rollback_service(
        &self,
        request: Request<pb::RollbackServiceRequest>,
    ) -> Result<Response<pb::RollbackServiceResponse>, Status> {
        let req = request.into_inner();
        let service = self
            .ops
            .rollback_service(&req.cluster, &req.service)
            .await?;
        Ok(Response::new(pb::RollbackServiceResponse {
            service: Some((&service).into()),
        }))
    }

    async fn describe_services(
        &self,
        request: Request<pb::DescribeServicesRequest>,
    ) -> Result<Response<pb::DescribeServicesResponse>, Status> {
        let req = request.into_inner();
        let (found, missing) = self
            .ops
            .describe_services(&req.cluster, &req.services)
            .await?;
        Ok(Response::new(pb::DescribeServicesResponse {
            services: found.iter().map(Into::into).collect(),
            failures: failures(missing),
        }))
    }

    async fn list_services(
        &self,
        request: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        let req = request.into_inner();
        let strategy = match req.scheduling_strategy.as_str() {
            "" => None,
            other => Some(SchedulingStrategy::parse(other).ok_or_else(|| {
                ServerError::from_field(berth_types::FieldError::new(
                    "schedulingStrategy",
                    format!("{other:?} is not REPLICA or DAEMON"),
                ))
            })?),
        };
        let services = self
            .ops
            .list_services(&req.cluster, strategy, req.include_inactive)
            .await?;
        Ok(Response::new(pb::ListServicesResponse {
            services: services.iter().map(Into::into).collect(),
        }))
    }

    async fn list_service_deployments(
        &self,
        request: Request<pb::ListServiceDeploymentsRequest>,
    ) -> Result<Response<pb::ListServiceDeploymentsResponse>, Status> {
        let req = request.into_inner();
        let deployments = self
            .ops
            .list_deployments(&req.cluster, &req.service)
            .await?;
        Ok(Response::new(pb::ListServiceDeploymentsResponse {
            deployments: deployments.iter().map(Into::into).collect(),
        }))
    }

    async fn describe_service_deployments(
        &self,
        request: Request<pb::DescribeServiceDeploymentsRequest>,
    ) -> Result<Response<pb::DescribeServiceDeploymentsResponse>, Status> {
        let req = request.into_inner();
        let (found, missing) = self
            .ops
            .describe_deployments(&req.cluster, &req.service, &req.deployment_ids)
            .await?;
        Ok(Response::new(pb::DescribeServiceDeploymentsResponse {
            deployments: found.iter().map(Into::into).collect(),
            failures: failures(missing),
        }))
    }
}
