//! Tags on clusters, task definitions, tasks, services and instances.
//! `resource` is `cluster/NAME`, `taskdef/FAMILY:REVISION`, `task/ID`,
//! `service/CLUSTER/NAME` or `instance/ID`.

use std::collections::BTreeMap;

use berth_proto::pb;
use berth_proto::pb::tag_service_client::TagServiceClient;

use crate::{BerthClient, ClientError, Conn, Kind};

fn tag_service(conn: Conn) -> TagServiceClient<Conn> {
    TagServiceClient::new(conn)
}

impl BerthClient {
    /// Adds tags (a key already there takes the new value); returns the
    /// resource's tags afterwards. Setting the same tags twice leaves the
    /// same result, so a lost reply is retried.
    pub async fn tag_resource(
        &self,
        resource: &str,
        tags: BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, ClientError> {
        let request = pb::TagResourceRequest {
            resource: resource.to_string(),
            tags,
        };
        let reply = self
            .call(Kind::Idempotent, |conn| {
                let request = request.clone();
                async move { tag_service(conn).tag_resource(request).await }
            })
            .await?;
        Ok(reply.tags)
    }

    /// Removes tags by key (keys not there are ignored); returns the
    /// resource's tags afterwards.
    pub async fn untag_resource(
        &self,
        resource: &str,
        keys: Vec<String>,
    ) -> Result<BTreeMap<String, String>, ClientError> {
        let request = pb::UntagResourceRequest {
            resource: resource.to_string(),
            keys,
        };
        let reply = self
            .call(Kind::Idempotent, |conn| {
                let request = request.clone();
                async move { tag_service(conn).untag_resource(request).await }
            })
            .await?;
        Ok(reply.tags)
    }

    pub async fn list_tags(&self, resource: &str) -> Result<BTreeMap<String, String>, ClientError> {
        let request = pb::ListTagsForResourceRequest {
            resource: resource.to_string(),
        };
        let reply = self
            .call(Kind::Read, |conn| {
                let request = request.clone();
                async move { tag_service(conn).list_tags_for_resource(request).await }
            })
            .await?;
        Ok(reply.tags)
    }
}
