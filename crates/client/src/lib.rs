//! A typed client for Berth's control API.
//!
//! Every control-plane server answers every call (followers forward writes
//! to the leader), so the client only needs one server that is up. It is
//! given a list of endpoints and fails over between them:
//!
//! - endpoints are tried in order, starting from the last one that answered;
//! - a read moves on after any transport failure or `Unavailable` answer;
//! - a write moves on only when the connection could not be made at all,
//!   because a write whose reply was lost may already have been applied and
//!   must not be applied twice.
//!
//! ```no_run
//! # async fn demo() -> Result<(), berth_client::ClientError> {
//! use berth_client::{BerthClient, ClientConfig};
//! let client = BerthClient::new(ClientConfig::new(["10.0.0.1:7400", "10.0.0.2:7400"]))?;
//! for cluster in client.list_clusters().await? {
//!     println!("{}", cluster.name);
//! }
//! # Ok(()) }
//! ```

mod endpoint;
mod error;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use berth_proto::pb::cluster_service_client::ClusterServiceClient;
use berth_proto::pb::control_plane_service_client::ControlPlaneServiceClient;
use berth_proto::pb::task_definition_service_client::TaskDefinitionServiceClient;
use berth_types as t;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

pub use berth_proto::pb;
pub use error::{code_name, ClientError};
pub use tonic::Code;

use endpoint::{parse_endpoint, ParsedEndpoint};
use error::{classify, Failure};

/// How to reach the control plane. TLS settings and the bearer token belong
/// here too when they arrive; [`BerthClient::new`] is the one place that
/// turns this into transports.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host:port` or `http://host:port`, in order of preference.
    pub endpoints: Vec<String>,
    /// How long to wait for a TCP connection before trying the next endpoint.
    pub connect_timeout: Duration,
    /// How long one call may take, once connected.
    pub request_timeout: Duration,
}

impl ClientConfig {
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

    /// The given endpoints with the default timeouts.
    pub fn new<I, S>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// One server to talk to. The channel is made on first use rather than in
/// `BerthClient::new`, because making one spawns a task and so needs a
/// running tokio runtime; after that it is reused for every call.
struct Target {
    name: String,
    endpoint: Endpoint,
    channel: OnceLock<Channel>,
}

impl Target {
    fn channel(&self) -> Channel {
        self.channel
            .get_or_init(|| self.endpoint.connect_lazy())
            .clone()
    }
}

struct Inner {
    targets: Vec<Target>,
    /// Index of the target that last answered; calls start there.
    preferred: AtomicUsize,
}

/// A client for the control API. Cheap to clone; clones share connections
/// and the failover position.
///
/// Connections are made by the tokio runtime that first uses them and die
/// with it, so a client belongs to one runtime.
#[derive(Clone)]
pub struct BerthClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for BerthClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BerthClient")
            .field("endpoints", &self.endpoints())
            .finish()
    }
}

/// Whether a call changes state, which decides when it may be retried on
/// another endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
}

impl BerthClient {
    /// Checks every endpoint; connects to none until the first call.
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        if config.endpoints.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        let targets = config
            .endpoints
            .iter()
            .map(|text| {
                let ParsedEndpoint { name, uri } = parse_endpoint(text)?;
                Ok(Target {
                    name,
                    endpoint: transport_endpoint(uri, &config),
                    channel: OnceLock::new(),
                })
            })
            .collect::<Result<Vec<_>, ClientError>>()?;
        Ok(Self {
            inner: Arc::new(Inner {
                targets,
                preferred: AtomicUsize::new(0),
            }),
        })
    }

    /// The endpoints as `host:port`, in configured order.
    pub fn endpoints(&self) -> Vec<String> {
        self.inner.targets.iter().map(|t| t.name.clone()).collect()
    }

    // ------------------------------------------------------------ clusters

    pub async fn create_cluster(&self, name: &str) -> Result<t::Cluster, ClientError> {
        let req = pb::CreateClusterRequest {
            name: name.to_string(),
        };
        let resp = self
            .call(Kind::Write, |ch| {
                let req = req.clone();
                async move { cluster_service(ch).create_cluster(req).await }
            })
            .await?;
        cluster_from_wire(required(resp.cluster, "cluster")?)
    }

    pub async fn list_clusters(&self) -> Result<Vec<t::Cluster>, ClientError> {
        let resp = self
            .call(Kind::Read, |ch| async move {
                cluster_service(ch)
                    .list_clusters(pb::ListClustersRequest {})
                    .await
            })
            .await?;
        resp.clusters.into_iter().map(cluster_from_wire).collect()
    }

    pub async fn describe_cluster(&self, name: &str) -> Result<t::Cluster, ClientError> {
        let req = pb::DescribeClusterRequest {
            name: name.to_string(),
        };
        let resp = self
            .call(Kind::Read, |ch| {
                let req = req.clone();
                async move { cluster_service(ch).describe_cluster(req).await }
            })
            .await?;
        cluster_from_wire(required(resp.cluster, "cluster")?)
    }

    /// Returns the name of the deleted cluster.
    pub async fn delete_cluster(&self, name: &str) -> Result<String, ClientError> {
        let req = pb::DeleteClusterRequest {
            name: name.to_string(),
        };
        let resp = self
            .call(Kind::Write, |ch| {
                let req = req.clone();
                async move { cluster_service(ch).delete_cluster(req).await }
            })
            .await?;
        Ok(resp.name)
    }

    // ---------------------------------------------------- task definitions

    pub async fn register_task_definition(
        &self,
        spec: t::TaskDefinitionSpec,
    ) -> Result<t::TaskDefinition, ClientError> {
        let req = pb::RegisterTaskDefinitionRequest {
            spec: Some(spec.into()),
        };
        let resp = self
            .call(Kind::Write, |ch| {
                let req = req.clone();
                async move {
                    task_definition_service(ch)
                        .register_task_definition(req)
                        .await
                }
            })
            .await?;
        task_definition_from_wire(required(resp.task_definition, "taskDefinition")?)
    }

    /// `None` lists every family, or every status.
    pub async fn list_task_definitions(
        &self,
        family: Option<&str>,
        status: Option<&str>,
    ) -> Result<Vec<t::TaskDefinition>, ClientError> {
        let req = pb::ListTaskDefinitionsRequest {
            family: family.unwrap_or_default().to_string(),
            status: status.unwrap_or_default().to_string(),
        };
        let resp = self
            .call(Kind::Read, |ch| {
                let req = req.clone();
                async move { task_definition_service(ch).list_task_definitions(req).await }
            })
            .await?;
        resp.task_definitions
            .into_iter()
            .map(task_definition_from_wire)
            .collect()
    }

    pub async fn list_task_definition_families(
        &self,
    ) -> Result<Vec<pb::TaskDefinitionFamily>, ClientError> {
        let resp = self
            .call(Kind::Read, |ch| async move {
                task_definition_service(ch)
                    .list_task_definition_families(pb::ListTaskDefinitionFamiliesRequest {})
                    .await
            })
            .await?;
        Ok(resp.families)
    }

    /// `reference` is `FAMILY` (its latest ACTIVE revision) or
    /// `FAMILY:REVISION`.
    pub async fn describe_task_definition(
        &self,
        reference: &str,
    ) -> Result<t::TaskDefinition, ClientError> {
        let req = pb::DescribeTaskDefinitionRequest {
            task_definition: reference.to_string(),
        };
        let resp = self
            .call(Kind::Read, |ch| {
                let req = req.clone();
                async move {
                    task_definition_service(ch)
                        .describe_task_definition(req)
                        .await
                }
            })
            .await?;
        task_definition_from_wire(required(resp.task_definition, "taskDefinition")?)
    }

    /// `reference` is `FAMILY:REVISION`; returns the now INACTIVE revision.
    pub async fn deregister_task_definition(
        &self,
        reference: &str,
    ) -> Result<t::TaskDefinition, ClientError> {
        let req = pb::DeregisterTaskDefinitionRequest {
            task_definition: reference.to_string(),
        };
        let resp = self
            .call(Kind::Write, |ch| {
                let req = req.clone();
                async move {
                    task_definition_service(ch)
                        .deregister_task_definition(req)
                        .await
                }
            })
            .await?;
        task_definition_from_wire(required(resp.task_definition, "taskDefinition")?)
    }

    // ------------------------------------------------------- control plane

    /// The control plane as seen by whichever server answers: leader, term
    /// and every member's replication state.
    pub async fn status(&self) -> Result<pb::GetControlPlaneStatusResponse, ClientError> {
        self.call(Kind::Read, |ch| async move {
            control_plane_service(ch)
                .get_status(pb::GetControlPlaneStatusRequest {})
                .await
        })
        .await
    }

    /// Adds a server to the control plane; returns the members afterwards.
    pub async fn add_server(
        &self,
        node_id: u64,
        address: &str,
        learner_only: bool,
    ) -> Result<Vec<pb::ServerMember>, ClientError> {
        let req = pb::AddServerRequest {
            node_id,
            address: address.to_string(),
            learner_only,
        };
        let resp = self
            .call(Kind::Write, |ch| {
                let req = req.clone();
                async move { control_plane_service(ch).add_server(req).await }
            })
            .await?;
        Ok(resp.members)
    }

    /// Removes a server from the control plane; returns the members
    /// afterwards.
    pub async fn remove_server(&self, node_id: u64) -> Result<Vec<pb::ServerMember>, ClientError> {
        let req = pb::RemoveServerRequest { node_id };
        let resp = self
            .call(Kind::Write, |ch| async move {
                control_plane_service(ch).remove_server(req).await
            })
            .await?;
        Ok(resp.members)
    }

    // ------------------------------------------------------------ failover

    /// Runs `rpc` against the endpoints in failover order until one answers
    /// or the failure may not be retried.
    async fn call<T, F, Fut>(&self, kind: Kind, mut rpc: F) -> Result<T, ClientError>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let targets = &self.inner.targets;
        let start = self.inner.preferred.load(Ordering::Relaxed) % targets.len();
        let mut tried = Vec::with_capacity(targets.len());
        let mut last = String::new();
        for step in 0..targets.len() {
            let index = (start + step) % targets.len();
            let target = &targets[index];
            let status = match rpc(target.channel()).await {
                Ok(response) => {
                    self.inner.preferred.store(index, Ordering::Relaxed);
                    return Ok(response.into_inner());
                }
                Err(status) => status,
            };
            tried.push(target.name.clone());
            match classify(status) {
                Failure::NotSent(why) => last = why,
                Failure::Lost(why) if kind == Kind::Read => last = why,
                Failure::Lost(reason) => {
                    return Err(ClientError::OutcomeUnknown {
                        endpoint: target.name.clone(),
                        reason,
                    })
                }
                // An Unavailable answer (no leader yet, shutting down) means
                // this server did not serve the call; another one may.
                Failure::Server(status)
                    if kind == Kind::Read && status.code() == Code::Unavailable =>
                {
                    last = match status.message() {
                        "" => "unavailable".to_string(),
                        message => format!("unavailable: {message}"),
                    };
                }
                Failure::Server(status) => {
                    self.inner.preferred.store(index, Ordering::Relaxed);
                    return Err(ClientError::Api {
                        code: status.code(),
                        message: status.message().to_string(),
                    });
                }
            }
        }
        Err(ClientError::Unavailable { tried, last })
    }
}

/// The one place a parsed endpoint becomes a transport: TLS
/// (`Endpoint::tls_config`) goes here.
fn transport_endpoint(uri: tonic::transport::Uri, config: &ClientConfig) -> Endpoint {
    Endpoint::from(uri)
        .connect_timeout(config.connect_timeout)
        .timeout(config.request_timeout)
}

// The typed stubs are built only here, so an interceptor adding the bearer
// token can be put on all of them at once.

fn cluster_service(ch: Channel) -> ClusterServiceClient<Channel> {
    ClusterServiceClient::new(ch)
}

fn task_definition_service(ch: Channel) -> TaskDefinitionServiceClient<Channel> {
    TaskDefinitionServiceClient::new(ch)
}

fn control_plane_service(ch: Channel) -> ControlPlaneServiceClient<Channel> {
    ControlPlaneServiceClient::new(ch)
}

// ---------------------------------------------------------- conversions

fn required<T>(value: Option<T>, field: &str) -> Result<T, ClientError> {
    value.ok_or_else(|| ClientError::InvalidResponse(format!("{field} is missing")))
}

// berth-proto has no wire-to-domain conversion for clusters (servers only
// send them), so it lives here.
fn cluster_from_wire(c: pb::Cluster) -> Result<t::Cluster, ClientError> {
    let status = match c.status.to_ascii_uppercase().as_str() {
        "ACTIVE" => t::ClusterStatus::Active,
        other => {
            return Err(ClientError::InvalidResponse(format!(
                "cluster {:?} has unknown status {other:?}",
                c.name
            )))
        }
    };
    Ok(t::Cluster {
        name: c.name,
        status,
        created_at_ms: c.created_at_ms,
        settings: t::ClusterSettings {
            lost_after_secs: c.lost_after_secs,
        },
    })
}

fn task_definition_from_wire(td: pb::TaskDefinition) -> Result<t::TaskDefinition, ClientError> {
    let id = format!("{}:{}", td.family, td.revision);
    t::TaskDefinition::try_from(td)
        .map_err(|e| ClientError::InvalidResponse(format!("task definition {id}: {e}")))
}

#[cfg(test)]
mod tests;
