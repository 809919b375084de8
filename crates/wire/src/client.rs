//! The agent's end: connect, learn whether the server speaks this
//! transport, then exchange frames.

use std::pin::Pin;
use std::sync::Arc;

use berth_proto::pb;
use berth_proto::pb::server_message::Body;
use futures::Stream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::ReadHalf;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::{write_frames, FrameReader, WireError, SESSION_ALPN};

/// TLS for a session: trusts only the cluster CA (`ca_pem`), presents the
/// instance's certificate chain and key (`identity`, PEM; only tests go
/// without one, to see it refused), and offers this transport first and
/// gRPC's `h2` second.
pub fn client_config(
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<Arc<rustls::ClientConfig>, WireError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| WireError::Tls(format!("{what}: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let ca = ca.map_err(|e| bad("the cluster CA certificate", &e))?;
        roots
            .add(ca)
            .map_err(|e| bad("the cluster CA certificate", &e))?;
    }
    if roots.is_empty() {
        return Err(WireError::Tls(
            "the cluster CA PEM holds no certificate".into(),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verified = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("TLS versions", &e))?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert_pem, key_pem)) => {
            let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad("the instance certificate", &e))?;
            let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
                .map_err(|e| bad("the instance key", &e))?;
            verified
                .with_client_auth_cert(chain, key)
                .map_err(|e| bad("the instance certificate and key", &e))?
        }
        None => verified.with_no_client_auth(),
    };
    config.alpn_protocols = vec![SESSION_ALPN.to_vec(), b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A TLS connection to a server, handshake done.
pub struct Connection {
    tls: TlsStream<TcpStream>,
}

/// Opens a TCP connection to `address` (`host:port`) and completes the TLS
/// handshake, verifying the server's certificate for `server_name`.
pub async fn connect(
    address: &str,
    server_name: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<Connection, WireError> {
    let failed = |reason: String| WireError::Connect {
        address: address.to_string(),
        reason,
    };
    let name = ServerName::try_from(server_name.to_string()).map_err(|e| {
        failed(format!(
            "{server_name:?} is not a host name or address: {e}"
        ))
    })?;
    let tcp = TcpStream::connect(address)
        .await
        .map_err(|e| failed(e.to_string()))?;
    // A heartbeat is a few bytes; Nagle's algorithm would hold it back.
    let _ = tcp.set_nodelay(true);
    crate::watch_for_dead_peer(&tcp);
    let tls = TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| failed(format!("TLS handshake: {e}")))?;
    Ok(Connection { tls })
}

impl Connection {
    /// Whether the server chose this transport; `false` means it speaks
    /// only gRPC (an older server) and the session must go there.
    pub fn speaks_sessions(&self) -> bool {
        self.tls.get_ref().1.alpn_protocol() == Some(SESSION_ALPN)
    }

    /// Starts the session: `outbound` (whose first message must be the
    /// hello) is written in the background; the returned reader receives
    /// the server's messages, each at most `max_inbound` bytes. Dropping
    /// the reader stops the writer and closes the connection.
    pub fn start<S>(self, outbound: S, max_inbound: usize) -> Inbound
    where
        S: Stream<Item = pb::AgentMessage> + Send + Unpin + 'static,
    {
        let (read, write) = tokio::io::split(self.tls);
        let writer = tokio::spawn(async move {
            if let Err(error) = write_frames(write, outbound).await {
                tracing::debug!(%error, "session writer stopped");
            }
        });
        Inbound {
            reader: FrameReader::new(read, max_inbound),
            writer,
        }
    }
}

/// The server's side of a session, as the agent reads it.
pub struct Inbound {
    reader: FrameReader<ReadHalf<TlsStream<TcpStream>>>,
    writer: tokio::task::JoinHandle<()>,
}

impl Inbound {
    /// The next message; `Ok(None)` when the server closed the session
    /// without a reason, and the server's `SessionEnd` as its gRPC status,
    /// as tonic's `Streaming::message` reports them on the gRPC session.
    pub async fn message(&mut self) -> Result<Option<pb::ServerMessage>, tonic::Status> {
        match self.reader.next::<pb::ServerMessage>().await {
            Ok(Some(pb::ServerMessage {
                body: Some(Body::End(end)),
            })) => Err(tonic::Status::new(tonic::Code::from(end.code), end.message)),
            Ok(other) => Ok(other),
            Err(error) => Err(error.to_status()),
        }
    }

    /// The messages as a stream that ends after the first error.
    pub fn into_stream(
        self,
    ) -> Pin<Box<dyn Stream<Item = Result<pb::ServerMessage, tonic::Status>> + Send>> {
        Box::pin(futures::stream::unfold(Some(self), |inbound| async move {
            let mut inbound = inbound?;
            match inbound.message().await {
                Ok(Some(message)) => Some((Ok(message), Some(inbound))),
                Ok(None) => None,
                Err(status) => Some((Err(status), None)),
            }
        }))
    }
}

impl Drop for Inbound {
    fn drop(&mut self) {
        self.writer.abort();
    }
}
