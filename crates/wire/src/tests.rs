use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use berth_proto::pb;
use berth_proto::pb::agent_message::Body as AgentBody;
use berth_proto::pb::server_message::Body as ServerBody;
use tokio::io::{AsyncWriteExt, DuplexStream};

use super::*;

fn heartbeat(at: i64) -> pb::AgentMessage {
    pb::AgentMessage {
        body: Some(AgentBody::Heartbeat(pb::Heartbeat { sent_at_ms: at })),
    }
}

fn sent_at(message: &pb::AgentMessage) -> i64 {
    match &message.body {
        Some(AgentBody::Heartbeat(h)) => h.sent_at_ms,
        other => panic!("not a heartbeat: {other:?}"),
    }
}

#[tokio::test]
async fn frames_arrive_whole_and_in_order_whatever_the_reads_cut() {
    let mut bytes = Vec::new();
    for at in 1..=20 {
        encode_frame(&heartbeat(at), &mut bytes);
    }
    // One byte per write: every prefix and body is split across reads.
    let (mut near, far) = tokio::io::duplex(1);
    let writer = tokio::spawn(async move {
        near.write_all(&bytes).await.unwrap();
        near.shutdown().await.unwrap();
    });
    let mut reader = FrameReader::new(far, 1024);
    let mut seen = Vec::new();
    while let Some(message) = reader.next::<pb::AgentMessage>().await.unwrap() {
        seen.push(sent_at(&message));
    }
    writer.await.unwrap();
    assert_eq!(seen, (1..=20).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_read_cancelled_midway_loses_nothing() {
    let mut bytes = Vec::new();
    encode_frame(&heartbeat(7), &mut bytes);
    let (mut near, far) = tokio::io::duplex(64);
    let mut reader = FrameReader::new(far, 1024);
    near.write_all(&bytes[..3]).await.unwrap();
    // The read waits for the rest; cancel it there.
    let waited =
        tokio::time::timeout(Duration::from_millis(50), reader.next::<pb::AgentMessage>()).await;
    assert!(waited.is_err(), "a partial frame must not complete a read");
    near.write_all(&bytes[3..]).await.unwrap();
    let message = reader.next::<pb::AgentMessage>().await.unwrap().unwrap();
    assert_eq!(sent_at(&message), 7);
}

#[tokio::test]
async fn a_frame_over_the_limit_is_refused_from_its_prefix() {
    let (mut near, far) = tokio::io::duplex(64);
    // Only the prefix is sent: the reader must not wait for the body.
    near.write_all(&(2048u32).to_be_bytes()).await.unwrap();
    let mut reader = FrameReader::new(far, 1024);
    match reader.next::<pb::AgentMessage>().await {
        Err(
            error @ WireError::TooLarge {
                len: 2048,
                max: 1024,
            },
        ) => {
            assert_eq!(error.to_status().code(), tonic::Code::OutOfRange);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[tokio::test]
async fn a_connection_cut_inside_a_frame_is_an_error_and_between_frames_an_end() {
    let mut bytes = Vec::new();
    encode_frame(&heartbeat(1), &mut bytes);
    let (mut near, far) = tokio::io::duplex(64);
    near.write_all(&bytes).await.unwrap();
    near.write_all(&bytes[..bytes.len() - 1]).await.unwrap();
    drop(near);
    let mut reader = FrameReader::new(far, 1024);
    assert!(reader.next::<pb::AgentMessage>().await.unwrap().is_some());
    assert!(matches!(
        reader.next::<pb::AgentMessage>().await,
        Err(WireError::Truncated)
    ));

    let (near, far) = tokio::io::duplex(64);
    drop(near);
    let mut reader = FrameReader::new(far, 1024);
    assert!(reader.next::<pb::AgentMessage>().await.unwrap().is_none());
}

#[tokio::test]
async fn a_large_message_does_not_leave_its_buffer_behind() {
    let big = pb::AgentMessage {
        body: Some(AgentBody::Log(pb::LogData {
            request_id: 1,
            stream: "stdout".into(),
            data: vec![b'x'; 100_000],
            end: false,
            error: String::new(),
        })),
    };
    let mut bytes = Vec::new();
    encode_frame(&big, &mut bytes);
    encode_frame(&heartbeat(2), &mut bytes);
    let (mut near, far) = tokio::io::duplex(1 << 20);
    near.write_all(&bytes).await.unwrap();
    let mut reader = FrameReader::new(far, 1 << 20);
    let first = reader.next::<pb::AgentMessage>().await.unwrap().unwrap();
    assert_eq!(first, big);
    let second = reader.next::<pb::AgentMessage>().await.unwrap().unwrap();
    assert_eq!(sent_at(&second), 2);
    assert!(
        reader.buffer.capacity() <= KEEP_READ_BUFFER,
        "the read buffer kept {} bytes after the large message",
        reader.buffer.capacity()
    );
}

/// Counts the writes that reach it.
struct CountingWriter {
    inner: DuplexStream,
    writes: Arc<AtomicUsize>,
}

impl AsyncWrite for CountingWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if polled.is_ready() {
            self.writes.fetch_add(1, Ordering::SeqCst);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn messages_ready_together_leave_in_one_write() {
    let (near, far) = tokio::io::duplex(1 << 20);
    let writes = Arc::new(AtomicUsize::new(0));
    let io = CountingWriter {
        inner: near,
        writes: writes.clone(),
    };
    let messages = futures::stream::iter((1..=50).map(heartbeat));
    write_frames(io, messages).await.unwrap();
    assert_eq!(
        writes.load(Ordering::SeqCst),
        1,
        "50 ready messages, one write"
    );
    let mut reader = FrameReader::new(far, 1024);
    let mut count = 0;
    while reader.next::<pb::AgentMessage>().await.unwrap().is_some() {
        count += 1;
    }
    assert_eq!(count, 50);
}

// ------------------------------------------------------------- TLS, ALPN

struct Pki {
    ca_pem: String,
    server: berth_pki::IssuedCertificate,
    client: berth_pki::IssuedCertificate,
}

fn pki() -> Pki {
    let ca = berth_pki::CertificateAuthority::generate("wire-test").unwrap();
    let server = ca
        .issue_server(1, &["127.0.0.1".into()], Duration::from_secs(600))
        .unwrap();
    let client = ca
        .issue_server(2, &["127.0.0.1".into()], Duration::from_secs(600))
        .unwrap();
    Pki {
        ca_pem: ca.cert_pem.clone(),
        server,
        client,
    }
}

/// A server that requires a client certificate from the CA and offers
/// `alpn`; it answers one session with `answer` and closes.
async fn serve_once(
    pki: &Pki,
    alpn: Vec<Vec<u8>>,
    answer: Vec<pb::ServerMessage>,
) -> (String, tokio::task::JoinHandle<Option<pb::AgentMessage>>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap())
        .unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let chain = CertificateDer::pem_slice_iter(pki.server.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(pki.server.key_pem.as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = alpn;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let served = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let tls = acceptor.accept(tcp).await.unwrap();
        if tls.get_ref().1.alpn_protocol() != Some(SESSION_ALPN) {
            return None;
        }
        let (read, write) = tokio::io::split(tls);
        let mut reader = FrameReader::new(read, 1024);
        let hello = reader.next::<pb::AgentMessage>().await.unwrap();
        write_frames(write, futures::stream::iter(answer))
            .await
            .unwrap();
        hello
    });
    (address, served)
}

#[tokio::test]
async fn a_session_runs_over_the_transport_and_ends_with_the_servers_status() {
    let pki = pki();
    let settings = pb::ServerMessage {
        body: Some(ServerBody::Settings(pb::SessionSettings {
            heartbeat_period_ms: 1234,
        })),
    };
    let end = pb::ServerMessage {
        body: Some(ServerBody::End(pb::SessionEnd {
            code: tonic::Code::PermissionDenied as i32,
            message: "instance i-1 has been deregistered".into(),
        })),
    };
    let (address, served) = serve_once(
        &pki,
        vec![SESSION_ALPN.to_vec(), b"h2".to_vec()],
        vec![settings.clone(), end],
    )
    .await;
    let config = client_config(
        &pki.ca_pem,
        Some((&pki.client.cert_pem, &pki.client.key_pem)),
    )
    .unwrap();
    let connection = connect(&address, "127.0.0.1", config).await.unwrap();
    assert!(connection.speaks_sessions());
    let mut inbound = connection.start(futures::stream::iter([heartbeat(42)]), 1 << 20);
    assert_eq!(inbound.message().await.unwrap(), Some(settings));
    let status = inbound.message().await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert_eq!(status.message(), "instance i-1 has been deregistered");
    let hello = served
        .await
        .unwrap()
        .expect("the server read the first frame");
    assert_eq!(sent_at(&hello), 42);
}

#[tokio::test]
async fn a_server_that_only_speaks_grpc_is_recognised() {
    let pki = pki();
    let (address, served) = serve_once(&pki, vec![b"h2".to_vec()], Vec::new()).await;
    let config = client_config(
        &pki.ca_pem,
        Some((&pki.client.cert_pem, &pki.client.key_pem)),
    )
    .unwrap();
    let connection = connect(&address, "127.0.0.1", config).await.unwrap();
    assert!(!connection.speaks_sessions());
    drop(connection);
    assert!(served.await.unwrap().is_none());
}

#[tokio::test]
async fn a_server_from_another_ca_is_refused() {
    // Each generated afresh: two CAs.
    let (pki, other) = (pki(), pki());
    let (address, _served) = serve_once(&other, vec![SESSION_ALPN.to_vec()], Vec::new()).await;
    let config = client_config(
        &pki.ca_pem,
        Some((&pki.client.cert_pem, &pki.client.key_pem)),
    )
    .unwrap();
    match connect(&address, "127.0.0.1", config).await {
        Err(WireError::Connect { reason, .. }) => {
            assert!(reason.contains("TLS handshake"), "{reason}")
        }
        Err(other) => panic!("expected a handshake failure, got {other}"),
        Ok(_) => panic!("a server with another CA's certificate was trusted"),
    }
}

#[test]
fn unusable_tls_settings_name_what_is_wrong() {
    let pki = pki();
    let no_ca =
        client_config("", Some((&pki.client.cert_pem, &pki.client.key_pem))).expect_err("no CA");
    assert!(no_ca.to_string().contains("cluster CA"), "{no_ca}");
    let bad_key =
        client_config(&pki.ca_pem, Some((&pki.client.cert_pem, "not a key"))).expect_err("bad key");
    assert!(bad_key.to_string().contains("instance key"), "{bad_key}");
}

#[tokio::test]
async fn a_session_socket_probes_a_silent_peer_and_gives_up_on_unacknowledged_data() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    watch_for_dead_peer(&tcp);
    let socket = socket2::SockRef::from(&tcp);
    assert!(socket.keepalive().unwrap(), "keepalive is on");
    assert_eq!(
        socket.tcp_keepalive_time().unwrap(),
        Duration::from_secs(30)
    );
    assert_eq!(
        socket.tcp_keepalive_interval().unwrap(),
        Duration::from_secs(10)
    );
    assert_eq!(socket.tcp_keepalive_retries().unwrap(), 3);
    assert_eq!(
        socket.tcp_user_timeout().unwrap(),
        Some(Duration::from_secs(30))
    );
}
