//! The server side of server-to-server traffic.

use berth_proto::pb;
use berth_proto::pb::raft_service_server::RaftService;
use berth_types::Command;
use tonic::{Request, Response, Status};

use crate::network::{decode, encode};
use crate::node::BerthNode;

pub struct RaftRpc {
    pub node: BerthNode,
}

fn bad_payload(e: bincode::Error) -> Status {
    Status::invalid_argument(format!("undecodable raft payload: {e}"))
}

fn reply<T: serde::Serialize>(value: &T) -> Result<Response<pb::RaftPayload>, Status> {
    let data = encode(value).map_err(|e| Status::internal(format!("encoding reply: {e}")))?;
    Ok(Response::new(pb::RaftPayload { data }))
}

#[tonic::async_trait]
impl RaftService for RaftRpc {
    async fn append_entries(
        &self,
        request: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let rpc = decode(&request.into_inner().data).map_err(bad_payload)?;
        reply(&self.node.raft().append_entries(rpc).await)
    }

    async fn vote(
        &self,
        request: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let rpc = decode(&request.into_inner().data).map_err(bad_payload)?;
        reply(&self.node.raft().vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let rpc = decode(&request.into_inner().data).map_err(bad_payload)?;
        reply(&self.node.raft().install_snapshot(rpc).await)
    }

    async fn forward(
        &self,
        request: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let commands: Vec<Command> = decode(&request.into_inner().data).map_err(bad_payload)?;
        reply(&self.node.accept_forwarded(commands).await)
    }

    async fn read_index(
        &self,
        _request: Request<pb::ReadIndexRequest>,
    ) -> Result<Response<pb::ReadIndexResponse>, Status> {
        let read_index = self.node.read_index().await?;
        Ok(Response::new(pb::ReadIndexResponse { read_index }))
    }

    async fn node_status(
        &self,
        _request: Request<pb::NodeStatusRequest>,
    ) -> Result<Response<pb::NodeStatusResponse>, Status> {
        Ok(Response::new(self.node.local_status()))
    }
}
