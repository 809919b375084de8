//! TagService: tags on clusters, task definitions, tasks, services and
//! instances, a thin adapter over `ops::tags`.

use berth_proto::pb;
use berth_proto::pb::tag_service_server::TagService;
use berth_types::TagTarget;
use tonic::{Request, Response, Status};

use crate::api::Api;
use crate::error::ServerError;

fn target(resource: &str) -> Result<TagTarget, Status> {
    TagTarget::parse(resource).map_err(|e| ServerError::from_field(e).into())
}

#[tonic::async_trait]
impl TagService for Api {
    #[tracing::instrument(skip_all, fields(resource = %request.get_ref().resource))]
    async fn tag_resource(
        &self,
        request: Request<pb::TagResourceRequest>,
    ) -> Result<Response<pb::TagResourceResponse>, Status> {
        let req = request.into_inner();
        let tags = self
            .ops
            .tag_resource(target(&req.resource)?, req.tags)
            .await?;
        Ok(Response::new(pb::TagResourceResponse { tags }))
    }

    #[tracing::instrument(skip_all, fields(resource = %request.get_ref().resource))]
    async fn untag_resource(
        &self,
        request: Request<pb::UntagResourceRequest>,
    ) -> Result<Response<pb::UntagResourceResponse>, Status> {
        let req = request.into_inner();
        let tags = self
            .ops
            .untag_resource(target(&req.resource)?, req.keys)
            .await?;
        Ok(Response::new(pb::UntagResourceResponse { tags }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(resource = %request.get_ref().resource))]
    async fn list_tags_for_resource(
        &self,
        request: Request<pb::ListTagsForResourceRequest>,
    ) -> Result<Response<pb::ListTagsForResourceResponse>, Status> {
        let req = request.into_inner();
        let tags = self.ops.list_tags(&target(&req.resource)?).await?;
        Ok(Response::new(pb::ListTagsForResourceResponse { tags }))
    }
}
