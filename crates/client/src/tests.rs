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
fn unknown_cluster_status_is_an_invalid_response() {
    let mut wire = FakeClusters::cluster("x");
    wire.status = "EXPLODED".into();
    let err = cluster_from_wire(wire).unwrap_err();
    assert!(matches!(err, ClientError::InvalidResponse(_)), "{err:?}");
    assert!(err.to_string().contains("EXPLODED"));
}
