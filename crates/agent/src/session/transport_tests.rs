//! `attempt` against real TLS servers: one that offers the session
//! transport, one that speaks only gRPC (a server of an earlier release).

use std::time::Duration;

use berth_proto::pb::agent_session_service_server::{
    AgentSessionService, AgentSessionServiceServer,
};
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;

use super::*;
use crate::runner::fake::FakeRuntime;
use crate::runner::{Runner, RunnerConfig};
use crate::store::Store;

struct Pki {
    ca_pem: String,
    server: berth_pki::IssuedCertificate,
    agent: berth_pki::IssuedCertificate,
}

fn pki() -> Pki {
    let ca = berth_pki::CertificateAuthority::generate("session-test").expect("CA");
    let issue = |id| {
        ca.issue_server(id, &["127.0.0.1".into()], Duration::from_secs(600))
            .expect("certificate")
    };
    Pki {
        ca_pem: ca.cert_pem.clone(),
        server: issue(1),
        agent: issue(2),
    }
}

fn agent_identity(pki: &Pki) -> AgentIdentity {
    AgentIdentity {
        instance_id: "i-1".into(),
        cluster: "default".into(),
        cert_pem: pki.agent.cert_pem.clone(),
        key_pem: pki.agent.key_pem.clone(),
        ca_pem: pki.ca_pem.clone(),
        issued_at_ms: 0,
        expires_at_ms: i64::MAX,
        local_expires_at_ms: i64::MAX,
    }
}

fn redirect_to(leader_address: &str) -> pb::ServerMessage {
    pb::ServerMessage {
        body: Some(In::Redirect(pb::Redirect {
            leader_address: leader_address.into(),
        })),
    }
}

fn hello_instance(message: Option<pb::AgentMessage>) -> Option<String> {
    match message?.body? {
        Out::Hello(hello) => Some(hello.instance_id),
        _ => None,
    }
}

/// A gRPC-only session server: reads the hello, redirects.
struct GrpcOnly {
    hello: std::sync::Mutex<Option<oneshot::Sender<Option<String>>>>,
}

#[tonic::async_trait]
impl AgentSessionService for GrpcOnly {
    type SessionStream =
        futures::stream::Iter<std::vec::IntoIter<Result<pb::ServerMessage, tonic::Status>>>;

    async fn session(
        &self,
        request: tonic::Request<tonic::Streaming<pb::AgentMessage>>,
    ) -> Result<tonic::Response<Self::SessionStream>, tonic::Status> {
        let hello = request.into_inner().message().await.ok().flatten();
        if let Some(tell) = self.hello.lock().expect("lock").take() {
            let _ = tell.send(hello_instance(hello));
        }
        Ok(tonic::Response::new(futures::stream::iter(vec![Ok(
            redirect_to("via-grpc:7400"),
        )])))
    }
}

async fn attempt_at(pki: &Pki, address: &str) -> Result<Outcome, SessionError> {
    let (runner, handle) = Runner::new(
        Arc::new(FakeRuntime::default()),
        Store::temporary().expect("store"),
        RunnerConfig::default(),
    )
    .expect("runner");
    let runner = tokio::spawn(runner.run());
    let identity = agent_identity(pki);
    let (_identity_tx, mut identity_rx) = watch::channel(Some(identity.clone()));
    let mut reached = false;
    let config = SessionConfig {
        endpoints: vec![address.to_string()],
        host: crate::host::HostInfo {
            cpu_total: 1024,
            memory_total_mib: 1024,
            attributes: Default::default(),
        },
        agent_version: "test".into(),
        health: Default::default(),
    };
    let outcome = tokio::time::timeout(
        Duration::from_secs(20),
        attempt(
            &config,
            address,
            &identity,
            &mut identity_rx,
            &handle,
            &mut reached,
        ),
    )
    .await
    .expect("the attempt ends");
    runner.abort();
    outcome
}

#[tokio::test]
async fn a_server_without_the_session_transport_gets_the_grpc_session() {
    let pki = pki();
    let (tell, told) = oneshot::channel();
    let tls = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(
            &pki.server.cert_pem,
            &pki.server.key_pem,
        ))
        .client_ca_root(tonic::transport::Certificate::from_pem(&pki.ca_pem));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(tls)
            .expect("TLS")
            .add_service(AgentSessionServiceServer::new(GrpcOnly {
                hello: std::sync::Mutex::new(Some(tell)),
            }))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let outcome = attempt_at(&pki, &address).await;
    server.abort();
    assert_eq!(
        outcome.expect("a redirect"),
        Outcome::Redirect("via-grpc:7400".into())
    );
    assert_eq!(
        told.await.expect("the server saw a session"),
        Some("i-1".into())
    );
}

#[tokio::test]
async fn a_server_with_the_session_transport_gets_frames() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let pki = pki();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).expect("CA"))
        .expect("CA");
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .expect("verifier");
    let chain = CertificateDer::pem_slice_iter(pki.server.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("chain");
    let key = PrivateKeyDer::from_pem_slice(pki.server.key_pem.as_bytes()).expect("key");
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .expect("server config");
    config.alpn_protocols = vec![berth_wire::SESSION_ALPN.to_vec(), b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let tls = acceptor.accept(tcp).await.expect("handshake");
        let chose = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let (read, write) = tokio::io::split(tls);
        let hello = berth_wire::FrameReader::new(read, 1 << 20)
            .next::<pb::AgentMessage>()
            .await
            .expect("a frame");
        berth_wire::write_frames(write, futures::stream::iter([redirect_to("via-wire:7400")]))
            .await
            .expect("written");
        (chose, hello_instance(hello))
    });
    let outcome = attempt_at(&pki, &address).await;
    assert_eq!(
        outcome.expect("a redirect"),
        Outcome::Redirect("via-wire:7400".into())
    );
    let (chose, hello) = server.await.expect("server");
    assert_eq!(chose.as_deref(), Some(berth_wire::SESSION_ALPN));
    assert_eq!(hello, Some("i-1".into()));
}
