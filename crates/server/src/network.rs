//! Server-to-server calls behind the [`Transport`] trait. In production:
//! tonic, one lazily-connected, reused channel per peer, with Raft messages
//! as bincode-encoded openraft types. Calls up to [`PIPELINE_MAX_BYTES`]
//! go on one long-lived stream per peer (`crate::pipeline`); larger ones,
//! snapshot chunks, and every call to a peer without that stream (an older
//! server) are unary calls with a `RaftPayload`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_proto::pb;
use berth_proto::pb::raft_service_client::RaftServiceClient;
use berth_store::rpc::*;
use berth_store::{Node, NodeId, TypeConfig};
use futures::future::BoxFuture;
use openraft::error::{NetworkError, RPCError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::pipeline::Pipeline;

/// Large enough for a batch of AppendEntries or a snapshot chunk.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Larger calls (AppendEntries with big entries, snapshot chunks) are sent
/// as calls of their own: on the pipeline, the calls behind one would wait
/// until its last byte was through HTTP/2's flow control (a heartbeat
/// behind megabytes of entries), while separate streams interleave. 64 KiB
/// is HTTP/2's initial stream window, so a call on the pipeline never
/// waits for more than one window update.
const PIPELINE_MAX_BYTES: usize = 64 * 1024;

/// Channels to other servers, shared by Raft replication, write forwarding
/// and status queries. Always mutual TLS with this server's certificate.
pub struct Peers {
    channels: Mutex<Channels>,
    /// The runtime the channels' connections are driven on (see
    /// `ServeOptions::raft_runtime`); `None`: the caller's.
    runtime: Option<tokio::runtime::Handle>,
}

struct Channels {
    by_addr: HashMap<String, Channel>,
    pipelines: HashMap<String, Arc<PipelineSlot>>,
    tls: ClientTlsConfig,
}

/// The stream to one peer, opened on first use and again after it ends.
#[derive(Default)]
pub(crate) struct PipelineSlot {
    current: Mutex<Option<Arc<Pipeline>>>,
    /// Held while a stream is being opened, so concurrent calls wait for
    /// one stream instead of opening several.
    opening: tokio::sync::Mutex<()>,
    /// The peer answered that it has no such stream: use unary calls.
    pub(crate) unsupported: std::sync::atomic::AtomicBool,
}

impl PipelineSlot {
    fn open_one(&self) -> Option<Arc<Pipeline>> {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        current.as_ref().filter(|p| p.is_open()).cloned()
    }

    /// The open stream, opening one if there is none. `Ok(None)`: the peer
    /// has none; call it with unary calls.
    pub(crate) async fn get(
        &self,
        client: &mut RaftServiceClient<Channel>,
        runtime: Option<&tokio::runtime::Handle>,
    ) -> Result<Option<Arc<Pipeline>>, tonic::Status> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.unsupported.load(Relaxed) {
            return Ok(None);
        }
        if let Some(pipeline) = self.open_one() {
            return Ok(Some(pipeline));
        }
        let _opening = self.opening.lock().await;
        if let Some(pipeline) = self.open_one() {
            return Ok(Some(pipeline));
        }
        let opened = Pipeline::open(client, runtime).await?;
        if opened.is_none() {
            self.unsupported.store(true, Relaxed);
        }
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone_from(&opened);
        Ok(opened)
    }

    fn close(&self, why: &str) {
        if let Some(pipeline) = self.open_one() {
            pipeline.close(why);
        }
    }
}

impl Peers {
    pub fn new(tls: ClientTlsConfig) -> Self {
        Self {
            channels: Mutex::new(Channels {
                by_addr: HashMap::new(),
                pipelines: HashMap::new(),
                tls,
            }),
            runtime: None,
        }
    }

    /// Drives the channels' connections on `runtime`: tonic spawns a
    /// channel's connection task on the runtime current when the channel
    /// is made, so the replies to Raft's calls are read there whoever calls.
    pub fn on_runtime(mut self, runtime: Option<tokio::runtime::Handle>) -> Self {
        self.runtime = runtime;
        self
    }

    /// New TLS settings (a reloaded PKI): channels made from now on use
    /// them. The cached channels are dropped, so the next call to a peer
    /// connects again and presents the new certificate; calls in flight
    /// finish on the connection they have.
    pub fn set_tls(&self, tls: ClientTlsConfig) {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        channels.tls = tls;
        channels.by_addr.clear();
        for (_, slot) in channels.pipelines.drain() {
            slot.close("the PKI was reloaded");
        }
    }

    fn pipeline_slot(&self, addr: &str) -> Arc<PipelineSlot> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        channels
            .pipelines
            .entry(addr.to_string())
            .or_default()
            .clone()
    }

    /// The channel to `addr`, created on first use and reused afterwards.
    pub fn channel(&self, addr: &str) -> Result<Channel, String> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(channel) = channels.by_addr.get(addr) {
            return Ok(channel.clone());
        }
        let endpoint = Endpoint::from_shared(format!("https://{addr}"))
            .map_err(|e| format!("bad peer address {addr:?}: {e}"))?
            .tls_config(channels.tls.clone())
            .map_err(|e| format!("TLS for peer {addr:?}: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        let _entered = self.runtime.as_ref().map(|r| r.enter());
        let channel = endpoint.connect_lazy();
        channels.by_addr.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    pub fn raft_client(&self, addr: &str) -> Result<RaftServiceClient<Channel>, String> {
        Ok(RaftServiceClient::new(self.channel(addr)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }
}

/// A server-to-server call, by what it asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerRpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
    /// A follower's batches for the leader to propose.
    Forward,
    ReadIndex,
    NodeStatus,
    /// A stopping leader's request that a caught-up voter stand for
    /// election at once.
    ElectNow,
}

impl PeerRpc {
    /// The call's number in a pipeline frame (`RaftFrame.rpc`): part of
    /// the protocol between servers, so numbers are never reused.
    pub fn wire(self) -> u32 {
        match self {
            PeerRpc::AppendEntries => 1,
            PeerRpc::Vote => 2,
            PeerRpc::InstallSnapshot => 3,
            PeerRpc::Forward => 4,
            PeerRpc::ReadIndex => 5,
            PeerRpc::NodeStatus => 6,
            PeerRpc::ElectNow => 7,
        }
    }

    pub fn from_wire(number: u32) -> Option<Self> {
        Some(match number {
            1 => PeerRpc::AppendEntries,
            2 => PeerRpc::Vote,
            3 => PeerRpc::InstallSnapshot,
            4 => PeerRpc::Forward,
            5 => PeerRpc::ReadIndex,
            6 => PeerRpc::NodeStatus,
            7 => PeerRpc::ElectNow,
            _ => return None,
        })
    }
}

/// Why a call to a peer failed, as far as the caller can know.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// Connecting failed: no byte of the request reached the peer, so it
    /// certainly did nothing.
    #[error("not sent: {0}")]
    NotSent(String),
    /// The request may have reached the peer (and been acted on); the
    /// answer is lost.
    #[error("{0}")]
    Unknown(String),
}

/// How servers reach each other: the gRPC channels in production, an
/// in-memory network with fault filters in tests. Payloads are bincode
/// (prost for `NodeStatus`), the same bytes either way.
pub trait Transport: Send + Sync + 'static {
    fn call(
        &self,
        addr: &str,
        rpc: PeerRpc,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, CallError>>;
}

/// Classifies a failed gRPC call. Only tonic's `ConnectError` (raised by
/// its connector while opening the TCP connection or the TLS session, before
/// any request is written) proves that nothing was sent; a reset, a timeout,
/// a GOAWAY or an error status can all come after the peer acted.
pub fn classify(status: &tonic::Status) -> CallError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = source {
        if e.downcast_ref::<tonic::ConnectError>().is_some() {
            return CallError::NotSent(status.message().to_string());
        }
        source = e.source();
    }
    CallError::Unknown(format!("{:?}: {}", status.code(), status.message()))
}

impl Transport for Peers {
    fn call(
        &self,
        addr: &str,
        rpc: PeerRpc,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, CallError>> {
        let client = self.raft_client(addr);
        let slot = (rpc != PeerRpc::InstallSnapshot && payload.len() <= PIPELINE_MAX_BYTES)
            .then(|| self.pipeline_slot(addr));
        let runtime = self.runtime.clone();
        Box::pin(async move {
            let mut client = client.map_err(CallError::NotSent)?;
            if let Some(slot) = slot {
                let started = std::time::Instant::now();
                let opening = slot.get(&mut client, runtime.as_ref());
                // The margin lets the channel's own connect timeout report
                // first, with its reason.
                let wait = timeout + Duration::from_millis(250);
                match tokio::time::timeout(wait, opening).await {
                    // Opening counts against the call's time: openraft's
                    // timeout covers the whole call.
                    Ok(Ok(Some(pipeline))) => {
                        let left = timeout.saturating_sub(started.elapsed());
                        return pipeline.call(rpc, payload, left).await;
                    }
                    Ok(Ok(None)) => {}
                    Ok(Err(status)) => return Err(classify(&status)),
                    // Nothing is sent before the stream is open.
                    Err(_) => {
                        return Err(CallError::NotSent(format!(
                            "the stream to the peer did not open within {} ms",
                            wait.as_millis()
                        )))
                    }
                }
            }
            let call = async move {
                let data = match rpc {
                    PeerRpc::ReadIndex => {
                        let mut request = tonic::Request::new(pb::ReadIndexRequest {});
                        request.set_timeout(timeout);
                        let reply = client.read_index(request).await?.into_inner();
                        encode(&reply.read_index)
                            .map_err(|e| tonic::Status::internal(e.to_string()))?
                    }
                    PeerRpc::NodeStatus => {
                        let mut request = tonic::Request::new(pb::NodeStatusRequest {});
                        request.set_timeout(timeout);
                        prost::Message::encode_to_vec(
                            &client.node_status(request).await?.into_inner(),
                        )
                    }
                    _ => {
                        let mut request = tonic::Request::new(pb::RaftPayload { data: payload });
                        request.set_timeout(timeout);
                        let reply = match rpc {
                            PeerRpc::AppendEntries => client.append_entries(request).await?,
                            PeerRpc::Vote => client.vote(request).await?,
                            PeerRpc::InstallSnapshot => client.install_snapshot(request).await?,
                            PeerRpc::ElectNow => client.elect_now(request).await?,
                            _ => client.forward(request).await?,
                        };
                        reply.into_inner().data
                    }
                };
                Ok::<_, tonic::Status>(data)
            };
            // The deadline header makes the peer give up; this makes the
            // caller give up on a peer that never answers at all.
            match tokio::time::timeout(timeout + Duration::from_millis(250), call).await {
                Ok(Ok(data)) => Ok(data),
                Ok(Err(status)) => Err(classify(&status)),
                Err(_) => Err(CallError::Unknown(format!(
                    "no answer within {} ms",
                    timeout.as_millis()
                ))),
            }
        })
    }
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, bincode::Error> {
    bincode::serialize(value)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::Error> {
    bincode::deserialize(bytes)
}

#[derive(Clone)]
pub struct Network {
    pub transport: Arc<dyn Transport>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Self::Network {
        PeerConnection {
            target,
            addr: node.addr.clone(),
            transport: self.transport.clone(),
        }
    }
}

pub struct PeerConnection {
    target: NodeId,
    addr: String,
    transport: Arc<dyn Transport>,
}

impl PeerConnection {
    async fn call<Req, Resp, E>(
        &self,
        rpc: PeerRpc,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, Node, RaftError<E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let started = std::time::Instant::now();
        let data = encode(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut unanswered = Unanswered {
            target: self.target,
            rpc,
            bytes: data.len(),
            started,
            encoded: started.elapsed(),
            answered: false,
        };
        let reply = self
            .transport
            .call(&self.addr, rpc, data, option.hard_ttl())
            .await;
        unanswered.answered = true;
        let reply = reply.map_err(|e| match e {
            // Unreachable makes openraft back off instead of hammering a
            // server that is down.
            CallError::NotSent(_) => RPCError::Unreachable(Unreachable::new(&e)),
            CallError::Unknown(_) => RPCError::Network(NetworkError::new(&e)),
        })?;
        let result: Result<Resp, RaftError<E>> =
            decode(&reply).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// Logs a call that openraft gave up on (its deadline dropped the call
/// before the answer came), with what the log line of the timeout lacks:
/// the payload's size and how long encoding it took.
struct Unanswered {
    target: NodeId,
    rpc: PeerRpc,
    bytes: usize,
    started: std::time::Instant,
    encoded: Duration,
    answered: bool,
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        if !self.answered {
            tracing::warn!(
                target_node = self.target,
                rpc = ?self.rpc,
                bytes = self.bytes,
                encode_ms = self.encoded.as_secs_f64() * 1e3,
                waited_ms = self.started.elapsed().as_secs_f64() * 1e3,
                "Raft call abandoned before its answer came"
            );
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse, RPCError<NodeId, Node, RaftError>> {
        self.call(PeerRpc::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse, RPCError<NodeId, Node, RaftError<InstallSnapshotError>>>
    {
        self.call(PeerRpc::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest,
        option: RPCOption,
    ) -> Result<VoteResponse, RPCError<NodeId, Node, RaftError>> {
        self.call(PeerRpc::Vote, &rpc, &option).await
    }
}
