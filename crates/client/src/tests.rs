//! Failover against real sockets: in-process tonic servers on 127.0.0.1 and
//! ports nothing listens on.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_proto::pb::cluster_service_server::{ClusterService, ClusterServiceServer};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

use super::*;

#[derive(Clone, Copy)]
enum Mode {
    Healthy,
    /// Answers every call with `Unavailable`, as a server without a leader
    /// would.
    NoLeader,
    /// Takes far longer than the client's request timeout.
    Slow,
}

#[derive(Clone)]
struct FakeClusters {
    label: &'static str,
    mode: Mode,
    calls: Arc<AtomicUsize>,
}

impl FakeClusters {
    fn new(label: &'static str, mode: Mode) -> Self {
        Self {
            label,
            mode,
            calls: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    async fn enter(&self) -> Result<(), Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match self.mode {
            Mode::Healthy => Ok(()),
            Mode::NoLeader => Err(Status::unavailable("no leader elected yet")),
            Mode::Slow => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(())
            }
        }
    }

    fn cluster(name: &str) -> pb::Cluster {
        pb::Cluster {
            name: name.to_string(),
            status: "ACTIVE".into(),
            created_at_ms: 1_700_000_000_000,
            lost_after_secs: 300,
            task_retention_secs: 3600,
            tags: Default::default(),
        }
    }
}

#[tonic::async_trait]
impl ClusterService for FakeClusters {
    async fn create_cluster(
        &self,
        request: Request<pb::CreateClusterRequest>,
    ) -> Result<Response<pb::CreateClusterResponse>, Status> {
        self.enter().await?;
        Ok(Response::new(pb::CreateClusterResponse {
            cluster: Some(Self::cluster(&request.into_inner().name)),
        }))
    }

    async fn list_clusters(
        &self,
        _request: Request<pb::ListClustersRequest>,
    ) -> Result<Response<pb::ListClustersResponse>, Status> {
        self.enter().await?;
        // Named after the server, so a test can tell who answered.
        Ok(Response::new(pb::ListClustersResponse {
            clusters: vec![Self::cluster(self.label)],
        }))
    }

    async fn describe_cluster(
        &self,
        request: Request<pb::DescribeClusterRequest>,
    ) -> Result<Response<pb::DescribeClusterResponse>, Status> {
        self.enter().await?;
        Err(Status::not_found(format!(
            "cluster {:?} not found",
            request.into_inner().name
        )))
    }

    async fn delete_cluster(
        &self,
        _request: Request<pb::DeleteClusterRequest>,
    ) -> Result<Response<pb::DeleteClusterResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn update_cluster(
        &self,
        _request: Request<pb::UpdateClusterRequest>,
    ) -> Result<Response<pb::UpdateClusterResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }
}

/// Starts `fake` on an ephemeral port and returns its `host:port`.
async fn serve(fake: FakeClusters) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ClusterServiceServer::new(fake))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    addr.to_string()
}

/// A port that was just free: connecting to it is refused.
async fn closed_port() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr.to_string()
}

fn client(endpoints: &[&String]) -> BerthClient {
    BerthClient::new(ClientConfig {
        endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_millis(500),
        ..ClientConfig::default()
    })
    .unwrap()
}

fn names(clusters: &[t::Cluster]) -> Vec<&str> {
    clusters.iter().map(|c| c.name.as_str()).collect()
}

#[test]
fn new_rejects_a_bad_endpoint_by_name() {
    let err = BerthClient::new(ClientConfig::new(["127.0.0.1:7400", "nohost"])).unwrap_err();
    match err {
        ClientError::InvalidEndpoint { endpoint, .. } => assert_eq!(endpoint, "nohost"),
        other => panic!("expected InvalidEndpoint, got {other:?}"),
    }
    assert!(matches!(
        BerthClient::new(ClientConfig::default()),
        Err(ClientError::NoEndpoints)
    ));
}

#[tokio::test]
async fn a_read_fails_over_from_a_closed_port_to_a_live_server() {
    let closed = closed_port().await;
    let live = serve(FakeClusters::new("live", Mode::Healthy)).await;
    let client = client(&[&closed, &live]);

    let clusters = client.list_clusters().await.unwrap();
    assert_eq!(names(&clusters), ["live"]);
    assert_eq!(clusters[0].status, t::ClusterStatus::Active);
    assert_eq!(clusters[0].settings.lost_after_secs, 300);
    assert_eq!(client.inner.preferred.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn all_down_is_unavailable_naming_every_endpoint() {
    let first = closed_port().await;
    let second = closed_port().await;
    let client = client(&[&first, &second]);

    match client.list_clusters().await.unwrap_err() {
        ClientError::Unavailable { tried, last } => {
            assert_eq!(tried, [first.clone(), second.clone()]);
            assert_eq!(last, "connection refused");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // A write that could not be sent anywhere is reported the same way.
    let err = client.create_cluster("prod").await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&first) && text.contains(&second), "{text}");
}

#[tokio::test]
async fn a_write_fails_over_when_the_connection_is_refused() {
    let closed = closed_port().await;
    let fake = FakeClusters::new("live", Mode::Healthy);
    let live = serve(fake.clone()).await;
    let client = client(&[&closed, &live]);

    let cluster = client.create_cluster("prod").await.unwrap();
    assert_eq!(cluster.name, "prod");
    assert_eq!(fake.calls(), 1);
}

#[tokio::test]
async fn a_write_the_server_answered_is_not_sent_elsewhere() {
    let refusing = serve(FakeClusters::new("a", Mode::NoLeader)).await;
    let other = FakeClusters::new("b", Mode::Healthy);
    let other_addr = serve(other.clone()).await;
    let client = client(&[&refusing, &other_addr]);

    match client.create_cluster("prod").await.unwrap_err() {
        ClientError::Api { code, message } => {
            assert_eq!(code, Code::Unavailable);
            assert_eq!(message, "no leader elected yet");
        }
        other => panic!("expected Api, got {other:?}"),
    }
    assert_eq!(other.calls(), 0);
}

#[tokio::test]
async fn a_write_whose_reply_was_lost_is_not_sent_elsewhere() {
    let slow = serve(FakeClusters::new("slow", Mode::Slow)).await;
    let other = FakeClusters::new("b", Mode::Healthy);
    let other_addr = serve(other.clone()).await;
    let client = client(&[&slow, &other_addr]);

    match client.create_cluster("prod").await.unwrap_err() {
        ClientError::OutcomeUnknown { endpoint, reason } => {
            assert_eq!(endpoint, slow);
            assert_eq!(reason, "request timed out");
        }
        other => panic!("expected OutcomeUnknown, got {other:?}"),
    }
    assert_eq!(other.calls(), 0);

    // A read is safe to repeat, so it moves on.
    let clusters = client.list_clusters().await.unwrap();
    assert_eq!(names(&clusters), ["b"]);
}

#[tokio::test]
async fn reads_move_on_from_unavailable_and_then_start_where_they_succeeded() {
    let first = FakeClusters::new("a", Mode::NoLeader);
    let second = FakeClusters::new("b", Mode::Healthy);
    let first_addr = serve(first.clone()).await;
    let second_addr = serve(second.clone()).await;
    let client = client(&[&first_addr, &second_addr]);

    assert_eq!(names(&client.list_clusters().await.unwrap()), ["b"]);
    assert_eq!((first.calls(), second.calls()), (1, 1));

    // Clones share the failover position.
    let clone = client.clone();
    assert_eq!(names(&clone.list_clusters().await.unwrap()), ["b"]);
    assert_eq!((first.calls(), second.calls()), (1, 2));
}

#[tokio::test]
async fn server_errors_keep_their_code_and_message() {
    let first = FakeClusters::new("a", Mode::Healthy);
    let second = FakeClusters::new("b", Mode::Healthy);
    let first_addr = serve(first.clone()).await;
    let second_addr = serve(second.clone()).await;
    let client = client(&[&first_addr, &second_addr]);

    let err = client.describe_cluster("nope").await.unwrap_err();
    assert_eq!(err.api_code(), Some(Code::NotFound));
    assert_eq!(err.to_string(), "cluster \"nope\" not found (not found)");
    assert_eq!(second.calls(), 0, "a definite answer is not retried");
}

#[test]
fn a_reply_that_does_not_convert_is_an_invalid_response() {
    let mut wire = FakeClusters::cluster("x");
    wire.status = "EXPLODED".into();
    let err = read::<_, t::Cluster>("cluster", wire).unwrap_err();
    assert!(matches!(err, ClientError::InvalidResponse(_)), "{err:?}");
    assert!(err.to_string().contains("EXPLODED"), "{err}");
}

// ------------------------------------------------------ TLS and tokens

const TOKEN: &str = "berth_0a1b2c_00112233445566778899aabbccddeeff";

/// Answers `list_clusters` only for the bearer token `TOKEN`, the way the
/// server's authentication layer would.
#[derive(Clone, Default)]
struct Guarded;

fn check_token<T>(request: &Request<T>) -> Result<(), Status> {
    match request
        .metadata()
        .get("authorization")
        .map(|v| v.to_str().unwrap_or_default())
    {
        None => Err(Status::unauthenticated("missing bearer token")),
        Some(value) if value == format!("Bearer {TOKEN}") => Ok(()),
        Some(_) => Err(Status::unauthenticated("unknown or revoked API token")),
    }
}

#[tonic::async_trait]
impl ClusterService for Guarded {
    async fn create_cluster(
        &self,
        request: Request<pb::CreateClusterRequest>,
    ) -> Result<Response<pb::CreateClusterResponse>, Status> {
        check_token(&request)?;
        Err(Status::permission_denied("the token is readonly"))
    }

    async fn list_clusters(
        &self,
        request: Request<pb::ListClustersRequest>,
    ) -> Result<Response<pb::ListClustersResponse>, Status> {
        check_token(&request)?;
        Ok(Response::new(pb::ListClustersResponse {
            clusters: vec![FakeClusters::cluster("secure")],
        }))
    }

    async fn describe_cluster(
        &self,
        _request: Request<pb::DescribeClusterRequest>,
    ) -> Result<Response<pb::DescribeClusterResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn delete_cluster(
        &self,
        _request: Request<pb::DeleteClusterRequest>,
    ) -> Result<Response<pb::DeleteClusterResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn update_cluster(
        &self,
        _request: Request<pb::UpdateClusterRequest>,
    ) -> Result<Response<pb::UpdateClusterResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }
}

async fn serve_guarded(pki: &crate::test_support::TestPki) -> String {
    let router =
        crate::test_support::tls_server(pki).add_service(ClusterServiceServer::new(Guarded));
    crate::test_support::spawn(router).await
}

fn tls_client(addr: &str, ca_pem: &str, token: Option<&str>) -> Result<BerthClient, ClientError> {
    let mut config = ClientConfig::new([addr]).with_ca(ca_pem);
    config.token = token.map(str::to_string);
    config.request_timeout = Duration::from_secs(5);
    BerthClient::new(config)
}

#[tokio::test]
async fn calls_go_over_tls_with_the_bearer_token() {
    let pki = crate::test_support::pki("tls-test");
    let addr = serve_guarded(&pki).await;

    let client = tls_client(&addr, &pki.ca.cert_pem, Some(TOKEN)).unwrap();
    assert_eq!(names(&client.list_clusters().await.unwrap()), ["secure"]);
    // `https://` says the same as a bare address with a CA.
    let client = tls_client(&format!("https://{addr}"), &pki.ca.cert_pem, Some(TOKEN)).unwrap();
    assert_eq!(names(&client.list_clusters().await.unwrap()), ["secure"]);
}

#[tokio::test]
async fn refused_tokens_are_their_own_errors_with_the_servers_message() {
    let pki = crate::test_support::pki("tls-test");
    let addr = serve_guarded(&pki).await;

    let anonymous = tls_client(&addr, &pki.ca.cert_pem, None).unwrap();
    match anonymous.list_clusters().await.unwrap_err() {
        ClientError::Unauthenticated(message) => assert_eq!(message, "missing bearer token"),
        other => panic!("expected Unauthenticated, got {other:?}"),
    }
    let wrong = tls_client(&addr, &pki.ca.cert_pem, Some("berth_00_11")).unwrap();
    let err = wrong.list_clusters().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "unauthenticated: unknown or revoked API token"
    );
    assert_eq!(err.api_code(), Some(Code::Unauthenticated));
    assert!(!err.is_transient());

    let readonly = tls_client(&addr, &pki.ca.cert_pem, Some(TOKEN)).unwrap();
    let err = readonly.create_cluster("prod").await.unwrap_err();
    assert!(matches!(err, ClientError::PermissionDenied(_)), "{err:?}");
    assert_eq!(err.to_string(), "permission denied: the token is readonly");
}

#[tokio::test]
async fn a_server_from_another_ca_fails_the_handshake() {
    let pki = crate::test_support::pki("real");
    let addr = serve_guarded(&pki).await;
    let other = crate::test_support::pki("other");

    let client = tls_client(&addr, &other.ca.cert_pem, Some(TOKEN)).unwrap();
    let err = client.list_clusters().await.unwrap_err();
    assert!(err.is_tls_failure(), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("TLS handshake failed"), "{text}");
    assert!(text.contains("UnknownIssuer"), "{text}");
    assert!(!text.contains(TOKEN));
}

#[tokio::test]
async fn plain_http_to_a_tls_server_does_not_get_an_answer() {
    let pki = crate::test_support::pki("tls-test");
    let addr = serve_guarded(&pki).await;
    let mut config = ClientConfig::new([format!("http://{addr}")]).with_token(TOKEN);
    config.request_timeout = Duration::from_secs(5);
    let client = BerthClient::new(config).unwrap();
    assert!(client.list_clusters().await.is_err());
}

#[test]
fn tokens_that_cannot_be_sent_are_refused_up_front_without_echoing_them() {
    for bad in ["berth_ab_cd\nX-Evil: 1", "berth_ab_cd\u{e9}", "   "] {
        let err =
            BerthClient::new(ClientConfig::new(["127.0.0.1:7400"]).with_token(bad)).unwrap_err();
        assert!(matches!(err, ClientError::InvalidToken(_)), "{err:?}");
        let text = err.to_string();
        assert!(text.starts_with("invalid API token: "), "{text}");
        assert!(
            !text.contains("berth_ab"),
            "the message must not quote the token: {text}"
        );
    }
}

#[test]
fn tls_settings_are_checked_when_the_client_is_built() {
    let pki = crate::test_support::pki("cfg");
    let err = BerthClient::new(ClientConfig::new(["https://127.0.0.1:7400"])).unwrap_err();
    match err {
        ClientError::InvalidEndpoint { endpoint, reason } => {
            assert_eq!(endpoint, "https://127.0.0.1:7400");
            assert!(reason.contains("cluster CA"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let err =
        BerthClient::new(ClientConfig::new(["127.0.0.1:7400"]).with_ca("not a pem")).unwrap_err();
    assert!(
        err.to_string()
            .contains("the cluster CA is not a PEM certificate"),
        "{err}"
    );
    let err = BerthClient::new(
        ClientConfig::new(["127.0.0.1:7400"]).with_identity(&pki.server.cert_pem, "key"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("needs the cluster CA"), "{err}");
    let err = BerthClient::new(
        ClientConfig::new(["127.0.0.1:7400"])
            .with_ca(pki.ca.cert_pem.clone())
            .with_identity(&pki.server.cert_pem, "not a key"),
    )
    .unwrap_err();
    assert!(matches!(err, ClientError::InvalidConfig(_)), "{err:?}");

    // Explicit http:// stays plain even with a CA: the scheme decides.
    assert!(BerthClient::new(
        ClientConfig::new(["http://127.0.0.1:7400"]).with_ca(pki.ca.cert_pem.clone())
    )
    .is_ok());
}

#[test]
fn debug_output_hides_the_token_and_key() {
    let config = ClientConfig::new(["127.0.0.1:7400"])
        .with_token(TOKEN)
        .with_identity("CERT", "-----BEGIN PRIVATE KEY-----secret");
    let text = format!("{config:?}");
    assert!(!text.contains(TOKEN), "{text}");
    assert!(!text.contains("secret"), "{text}");
    assert!(text.contains("127.0.0.1:7400"), "{text}");
}

#[test]
fn zero_lifetimes_are_refused_before_sending() {
    assert!(matches!(
        whole_seconds(Duration::from_millis(500), "expires_in"),
        Err(ClientError::InvalidRequest(_))
    ));
    assert_eq!(
        whole_seconds(Duration::from_secs(90), "expires_in").unwrap(),
        90
    );
}
