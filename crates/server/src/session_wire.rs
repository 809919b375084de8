//! Agent sessions on the session transport (`berth_wire`): connections
//! whose TLS handshake chose ALPN `berth-session/1` come here instead of to
//! the gRPC server. Authorization, the session and its limits are the gRPC
//! session's; only the bytes differ.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use berth_proto::pb;
use berth_wire::FrameReader;
use futures::StreamExt;
use tokio::io::ReadHalf;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tonic::Status;

use crate::auth::{Authorizer, SESSION_PATH};
use crate::session::{AgentInbound, OutboundStream, SessionHub, MAX_AGENT_MESSAGE_BYTES};

/// Whether a connection's handshake chose the session transport.
pub fn is_session(tls: &TlsStream<TcpStream>) -> bool {
    tls.get_ref().1.alpn_protocol() == Some(berth_wire::SESSION_ALPN)
}

struct WireInbound(FrameReader<ReadHalf<TlsStream<TcpStream>>>);

impl AgentInbound for WireInbound {
    async fn message(&mut self) -> Result<Option<pb::AgentMessage>, Status> {
        self.0.next().await.map_err(|e| e.to_status())
    }
}

/// The frame that tells the agent why its session ended.
fn end(status: &Status) -> pb::ServerMessage {
    pb::ServerMessage {
        body: Some(pb::server_message::Body::End(pb::SessionEnd {
            code: status.code() as i32,
            message: status.message().to_string(),
        })),
    }
}

/// What goes to the agent: the session's messages, and its ending error
/// as a last `SessionEnd` frame.
fn frames(outbound: OutboundStream) -> impl futures::Stream<Item = pb::ServerMessage> + Unpin {
    Box::pin(outbound.scan(false, |ended, item| {
        let next = match item {
            _ if *ended => None,
            Ok(message) => Some(message),
            Err(status) => {
                *ended = true;
                Some(end(&status))
            }
        };
        futures::future::ready(next)
    }))
}

/// Serves one session connection until the session ends.
pub async fn serve(hub: SessionHub, authorizer: Arc<Authorizer>, tls: TlsStream<TcpStream>) {
    let started = Instant::now();
    let (tcp, connection) = tls.get_ref();
    berth_wire::watch_for_dead_peer(tcp);
    let remote: Option<SocketAddr> = tcp.peer_addr().ok();
    let peer_certs = connection.peer_certificates().map(|c| Arc::new(c.to_vec()));
    let (read, write) = tokio::io::split(tls);
    let opened = match authorizer.authorize_session(peer_certs, remote).await {
        Ok(caller) => {
            let inbound = WireInbound(FrameReader::new(read, MAX_AGENT_MESSAGE_BYTES));
            let peer_ip = remote.map(|addr| addr.ip().to_canonical());
            hub.open_session(Some(caller), peer_ip, inbound).await
        }
        Err(status) => Err(status),
    };
    let code = match &opened {
        Ok(_) => "Ok".to_string(),
        Err(status) => format!("{:?}", status.code()),
    };
    hub.node().server_metrics().api_call(
        SESSION_PATH.trim_start_matches("/berth.v1."),
        &code,
        started.elapsed().as_secs_f64(),
    );
    let written = match opened {
        Ok(outbound) => berth_wire::write_frames(write, frames(outbound)).await,
        Err(status) => berth_wire::write_frames(write, futures::stream::iter([end(&status)])).await,
    };
    if let Err(error) = written {
        tracing::debug!(?remote, %error, "agent session connection ended");
    }
}
