//! The server side of server-to-server traffic.

use berth_proto::pb;
use berth_proto::pb::raft_service_server::RaftService;
use berth_store::rpc::{AppendEntriesRequest, AppendEntriesResponse, RaftError};
use berth_store::Batch;
use tonic::{Request, Response, Status};

use crate::network::{decode, encode, PeerRpc};
use crate::node::{BerthNode, ElectNow};

pub struct RaftRpc {
    pub node: BerthNode,
    /// Becomes true when the server starts shutting down.
    pub closing: tokio::sync::watch::Receiver<bool>,
}

fn bad_payload(e: bincode::Error) -> Status {
    Status::invalid_argument(format!("undecodable raft payload: {e}"))
}

/// An AppendEntries that takes longer than this to decode and append is
/// logged: half of the leader's default deadline (the heartbeat interval),
/// so the log shows which side a replication timeout came from.
const SLOW_APPEND: std::time::Duration = std::time::Duration::from_millis(50);

/// Decodes and appends one AppendEntries, warning when it was slow.
async fn append_entries(
    node: &BerthNode,
    data: &[u8],
) -> Result<Result<AppendEntriesResponse, RaftError>, Status> {
    let started = std::time::Instant::now();
    let rpc: AppendEntriesRequest = decode(data).map_err(bad_payload)?;
    let decoded = started.elapsed();
    let entries = rpc.entries.len();
    let result = node.raft().append_entries(rpc).await;
    let took = started.elapsed();
    if took >= SLOW_APPEND {
        tracing::warn!(
            bytes = data.len(),
            entries,
            decode_ms = decoded.as_secs_f64() * 1e3,
            total_ms = took.as_secs_f64() * 1e3,
            "slow AppendEntries from the leader"
        );
    }
    Ok(result)
}

/// A server catching up after losing its data does not vote (`rejoin`).
fn refuse_held_vote(node: &BerthNode) -> Result<(), Status> {
    if node.votes_held() {
        return Err(Status::unavailable(
            "this server rejoined with an empty data dir and does not vote until it has caught up",
        ));
    }
    Ok(())
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
        reply(&append_entries(&self.node, &request.into_inner().data).await?)
    }

    async fn vote(
        &self,
        request: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        refuse_held_vote(&self.node)?;
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
        let batches: Vec<Batch> = decode(&request.into_inner().data).map_err(bad_payload)?;
        reply(&self.node.accept_forwarded(batches).await)
    }

    async fn read_index(
        &self,
        _request: Request<pb::ReadIndexRequest>,
    ) -> Result<Response<pb::ReadIndexResponse>, Status> {
        let read_index = self.node.read_index().await?;
        Ok(Response::new(pb::ReadIndexResponse { read_index }))
    }

    async fn elect_now(
        &self,
        request: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let ask: ElectNow = decode(&request.into_inner().data).map_err(bad_payload)?;
        self.node.elect_now(ask).await?;
        reply(&())
    }

    type PipelineStream = crate::pipeline::AnswerStream;

    async fn pipeline(
        &self,
        request: Request<tonic::Streaming<pb::RaftFrame>>,
    ) -> Result<Response<Self::PipelineStream>, Status> {
        let node = self.node.clone();
        let handle = move |rpc, data: Vec<u8>| {
            let node = node.clone();
            async move { dispatch(&node, rpc, &data).await }
        };
        Ok(Response::new(crate::pipeline::answer_frames(
            handle,
            request.into_inner(),
            self.closing.clone(),
        )))
    }

    async fn node_status(
        &self,
        _request: Request<pb::NodeStatusRequest>,
    ) -> Result<Response<pb::NodeStatusResponse>, Status> {
        Ok(Response::new(self.node.local_status()))
    }
}

/// Serves one server-to-server call given as bytes, the way the gRPC
/// service does; for transports other than gRPC (the in-memory test
/// network). Replies are encoded as `Transport::call` returns them.
pub async fn dispatch(node: &BerthNode, rpc: PeerRpc, data: &[u8]) -> Result<Vec<u8>, Status> {
    let encoded = |value: &dyn erased::Encode| value.encode();
    match rpc {
        PeerRpc::AppendEntries => encoded(&append_entries(node, data).await?),
        PeerRpc::Vote => {
            refuse_held_vote(node)?;
            let rpc = decode(data).map_err(bad_payload)?;
            encoded(&node.raft().vote(rpc).await)
        }
        PeerRpc::InstallSnapshot => {
            let rpc = decode(data).map_err(bad_payload)?;
            encoded(&node.raft().install_snapshot(rpc).await)
        }
        PeerRpc::Forward => {
            let batches: Vec<Batch> = decode(data).map_err(bad_payload)?;
            encoded(&node.accept_forwarded(batches).await)
        }
        PeerRpc::ReadIndex => encoded(&node.read_index().await?),
        PeerRpc::NodeStatus => Ok(prost::Message::encode_to_vec(&node.local_status())),
        PeerRpc::ElectNow => {
            let ask: ElectNow = decode(data).map_err(bad_payload)?;
            node.elect_now(ask).await?;
            encoded(&())
        }
    }
}

mod erased {
    /// bincode-encodes values of different types through one closure.
    pub trait Encode {
        fn encode(&self) -> Result<Vec<u8>, tonic::Status>;
    }

    impl<T: serde::Serialize> Encode for T {
        fn encode(&self) -> Result<Vec<u8>, tonic::Status> {
            super::encode(self).map_err(|e| tonic::Status::internal(format!("encoding reply: {e}")))
        }
    }
}
