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
//!   must not be applied twice;
//! - a write that carries a client token (RunTask, StartTask) is idempotent
//!   on the server, so it fails over like a read: sent again with the same
//!   token, it never starts tasks twice.
//!
//! Servers speak TLS with certificates from the cluster CA, and every API
//! call carries an API token:
//!
//! ```no_run
//! # async fn demo(ca_pem: String) -> Result<(), berth_client::ClientError> {
//! use berth_client::{BerthClient, ClientConfig};
//! let config = ClientConfig::new(["10.0.0.1:7400", "10.0.0.2:7400"])
//!     .with_ca(ca_pem)
//!     .with_token("berth_0123ab_4567cd");
//! let client = BerthClient::new(config)?;
//! for cluster in client.list_clusters().await? {
//!     println!("{}", cluster.name);
//! }
//! # Ok(()) }
//! ```
//!
//! Every call takes and returns `berth_types` domain types (records, views
//! such as `InstanceView`, inputs such as `RunTaskInput`); the wire
//! messages and their conversions (`berth_proto::convert`) stay inside.
//!
//! Agents join with [`join`]: they pin the CA by the digest in their join
//! token, register, and then authenticate with a client certificate.

pub mod backoff;
pub mod backup;
mod endpoint;
mod error;
pub mod events;
pub mod join;
pub mod schedules;
pub mod secrets;
pub mod services;
pub mod stats;
pub mod tags;
pub mod time;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use berth_proto::convert;
use berth_proto::pb;
use berth_proto::pb::activation_service_client::ActivationServiceClient;
use berth_proto::pb::agent_service_client::AgentServiceClient;
use berth_proto::pb::auth_service_client::AuthServiceClient;
use berth_proto::pb::cluster_service_client::ClusterServiceClient;
use berth_proto::pb::control_plane_service_client::ControlPlaneServiceClient;
use berth_proto::pb::instance_service_client::InstanceServiceClient;
use berth_proto::pb::task_definition_service_client::TaskDefinitionServiceClient;
use berth_proto::pb::task_service_client::TaskServiceClient;
use berth_types as t;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

pub use error::{code_name, ClientError};
pub use tonic::Code;

use endpoint::{parse_endpoint, ParsedEndpoint, Scheme};
use error::{classify, Failure};

/// How to reach the control plane and who to be there. [`BerthClient::new`]
/// is the one place that turns this into transports.
#[derive(Clone)]
pub struct ClientConfig {
    /// `host:port`, `https://host:port` or `http://host:port`, in order of
    /// preference. A bare `host:port` means https when `ca_pem` is set.
    pub endpoints: Vec<String>,
    /// How long to wait for a TCP connection before trying the next endpoint.
    pub connect_timeout: Duration,
    /// How long one call may take, once connected.
    pub request_timeout: Duration,
    /// The cluster CA (PEM). Servers must present a certificate it issued
    /// for the host dialed; without it only plain `http` is possible.
    pub ca_pem: Option<String>,
    /// The API token (`berth_<id>_<secret>`), sent as `authorization:
    /// Bearer ...` on every call.
    pub token: Option<String>,
    /// A client certificate and its key (PEM), for agents.
    pub identity: Option<(String, String)>,
}

// Written by hand so that the token and the private key can never end up in
// a log line through `{:?}`.
impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("endpoints", &self.endpoints)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<certificate>"))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("identity", &self.identity.as_ref().map(|_| "<redacted>"))
            .finish()
    }
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

    /// Verify servers against this cluster CA (PEM).
    pub fn with_ca(mut self, ca_pem: impl Into<String>) -> Self {
        self.ca_pem = Some(ca_pem.into());
        self
    }

    /// Send this API token with every call.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Present this client certificate (PEM certificate and key).
    pub fn with_identity(
        mut self,
        cert_pem: impl Into<String>,
        key_pem: impl Into<String>,
    ) -> Self {
        self.identity = Some((cert_pem.into(), key_pem.into()));
        self
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            ca_pem: None,
            token: None,
            identity: None,
        }
    }
}

/// Adds the bearer token to every call. Built once, so a token that cannot
/// be sent is reported by `BerthClient::new` rather than on each call.
#[derive(Clone, Default)]
struct Auth {
    header: Option<MetadataValue<Ascii>>,
}

impl Auth {
    fn new(token: Option<&str>) -> Result<Self, ClientError> {
        let Some(token) = token.map(str::trim) else {
            return Ok(Self::default());
        };
        if token.is_empty() {
            return Err(ClientError::InvalidToken("it is empty".into()));
        }
        // Checked here because header values may carry bytes above ASCII,
        // which tonic would send as they are. Neither the token nor a
        // parse error (which may quote it) goes into the message.
        let unsendable = || {
            ClientError::InvalidToken(
                "it contains characters that cannot be sent in a header (only printable \
                 ASCII without spaces is allowed)"
                    .into(),
            )
        };
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(unsendable());
        }
        let mut header =
            MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| unsendable())?;
        // Keeps it out of HTTP/2 header compression tables and Debug output.
        header.set_sensitive(true);
        Ok(Self {
            header: Some(header),
        })
    }
}

impl Interceptor for Auth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(header) = &self.header {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        Ok(request)
    }
}

/// What every typed stub is built on: a connection plus the token.
type Conn = InterceptedService<Channel, Auth>;

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
    auth: Auth,
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
    /// A write the server deduplicates (by client token): as safe to send
    /// again elsewhere as a read.
    Idempotent,
}

impl Kind {
    /// Whether a call that may have reached a server can be sent again.
    fn repeatable(self) -> bool {
        matches!(self, Kind::Read | Kind::Idempotent)
    }
}

/// Cluster settings for [`BerthClient::create_cluster_with`] (`None`: the
/// server's default) and [`BerthClient::update_cluster`] (`None`: leave it
/// as it is). Both are whole seconds on the wire, at least one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterOptions {
    /// How long an instance may stay disconnected before its tasks are
    /// declared lost and replaced.
    pub lost_after: Option<Duration>,
    /// How long a STOPPED task stays describable.
    pub task_retention: Option<Duration>,
}

/// A fresh client token for RunTask or StartTask: 128 random bits in hex.
/// Use one per logical request and resend it with every retry of that
/// request.
pub fn new_client_token() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl BerthClient {
    /// Checks every endpoint, the CA, the client certificate and the
    /// token; connects to nothing until the first call.
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        if config.endpoints.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        let auth = Auth::new(config.token.as_deref())?;
        let tls = tls_settings(&config)?;
        let targets = config
            .endpoints
            .iter()
            .map(|text| {
                let parsed = parse_endpoint(text)?;
                Ok(Target {
                    endpoint: transport_endpoint(text, &parsed, tls.as_ref(), &config)?,
                    name: parsed.name,
                    channel: OnceLock::new(),
                })
            })
            .collect::<Result<Vec<_>, ClientError>>()?;
        Ok(Self {
            inner: Arc::new(Inner {
                targets,
                auth,
                preferred: AtomicUsize::new(0),
            }),
        })
    }

    /// The endpoints as `host:port`, in configured order.
    pub fn endpoints(&self) -> Vec<String> {
        self.inner.targets.iter().map(|t| t.name.clone()).collect()
    }

    // ------------------------------------------------------------ clusters

    /// Creates a cluster with the server's default settings.
    pub async fn create_cluster(&self, name: &str) -> Result<t::Cluster, ClientError> {
        self.create_cluster_with(name, &ClusterOptions::default())
            .await
    }

    /// Creates a cluster; unset options take the server's defaults.
    pub async fn create_cluster_with(
        &self,
        name: &str,
        options: &ClusterOptions,
    ) -> Result<t::Cluster, ClientError> {
        self.create_tagged_cluster(name, options, &std::collections::BTreeMap::new())
            .await
    }

    /// Creates a cluster with tags (at most 50, as ECS allows).
    pub async fn create_tagged_cluster(
        &self,
        name: &str,
        options: &ClusterOptions,
        tags: &std::collections::BTreeMap<String, String>,
    ) -> Result<t::Cluster, ClientError> {
        // 0 on the wire means "the default".
        let req = pb::CreateClusterRequest {
            name: name.to_string(),
            lost_after_secs: optional_seconds(options.lost_after, "lost_after")?.unwrap_or(0),
            task_retention_secs: optional_seconds(options.task_retention, "task_retention")?
                .unwrap_or(0),
            tags: tags.clone(),
        };
        let resp = self
            .call(Kind::Write, |conn| {
                let req = req.clone();
                async move { cluster_service(conn).create_cluster(req).await }
            })
            .await?;
        read("cluster", required(resp.cluster, "cluster")?)
    }

    pub async fn list_clusters(&self) -> Result<Vec<t::Cluster>, ClientError> {
        let resp = self
            .call(Kind::Read, |conn| async move {
                cluster_service(conn)
                    .list_clusters(pb::ListClustersRequest {})
                    .await
            })
            .await?;
        read_all("cluster", resp.clusters)
    }

    pub async fn describe_cluster(&self, name: &str) -> Result<t::Cluster, ClientError> {
        let req = pb::DescribeClusterRequest {
            name: name.to_string(),
        };
        let resp = self
            .call(Kind::Read, |conn| {
                let req = req.clone();
                async move { cluster_service(conn).describe_cluster(req).await }
            })
            .await?;
        read("cluster", required(resp.cluster, "cluster")?)
    }

    /// Changes the settings that are set in `changes`; returns the cluster
    /// afterwards.
    pub async fn update_cluster(
        &self,
        name: &str,
        changes: &ClusterOptions,
    ) -> Result<t::Cluster, ClientError> {
        let req = pb::UpdateClusterRequest {
            name: name.to_string(),
            lost_after_secs: optional_seconds(changes.lost_after, "lost_after")?,
            task_retention_secs: optional_seconds(changes.task_retention, "task_retention")?,
        };
        if req.lost_after_secs.is_none() && req.task_retention_secs.is_none() {
            return Err(ClientError::InvalidRequest(
                "nothing to update: set lost_after or task_retention".into(),
            ));
        }
        let resp = self
            .call(Kind::Write, |conn| {
                let req = req.clone();
                async move { cluster_service(conn).update_cluster(req).await }
            })
            .await?;
        read("cluster", required(resp.cluster, "cluster")?)
    }

    /// Returns the name of the deleted cluster.
    pub async fn delete_cluster(&self, name: &str) -> Result<String, ClientError> {
        let req = pb::DeleteClusterRequest {
            name: name.to_string(),
        };
        let resp = self
            .call(Kind::Write, |conn| {
                let req = req.clone();
                async move { cluster_service(conn).delete_cluster(req).await }
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
            .call(Kind::Write, |conn| {
                let req = req.clone();
                async move {
                    task_definition_service(conn)
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
        status: Option<t::TaskDefinitionStatus>,
    ) -> Result<Vec<t::TaskDefinition>, ClientError> {
        let req = pb::ListTaskDefinitionsRequest {
            family: family.unwrap_or_default().to_string(),
            status: status.map(|s| s.as_str().to_string()).unwrap_or_default(),
        };
        let resp = self
            .call(Kind::Read, |conn| {
                let req = req.clone();
                async move {
                    task_definition_service(conn)
                        .list_task_definitions(req)
                        .await
                }
            })
            .await?;
        resp.task_definitions
            .into_iter()
            .map(task_definition_from_wire)
            .collect()
    }

    pub async fn list_task_definition_families(
        &self,
    ) -> Result<Vec<t::TaskDefinitionFamily>, ClientError> {
        let resp = self
            .call(Kind::Read, |conn| async move {
                task_definition_service(conn)
                    .list_task_definition_families(pb::ListTaskDefinitionFamiliesRequest {})
                    .await
            })
            .await?;
        Ok(resp.families.into_iter().map(Into::into).collect())
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
            .call(Kind::Read, |conn| {
                let req = req.clone();
                async move {
                    task_definition_service(conn)
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
            .call(Kind::Write, |conn| {
                let req = req.clone();
                async move {
                    task_definition_service(conn)
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
    pub async fn status(&self) -> Result<t::ControlPlaneStatus, ClientError> {
        let resp = self
            .call(Kind::Read, |conn| async move {
                control_plane_service(conn)
                    .get_status(pb::GetControlPlaneStatusRequest {})
                    .await
            })
            .await?;
        read("control-plane status", resp)
    }

    /// Adds a server to the control plane; returns the members afterwards.
    pub async fn add_server(
        &self,
        node_id: u64,
        address: &str,
        learner_only: bool,
    ) -> Result<Vec<t::ServerMember>, ClientError> {
        let req = pb::AddServerRequest {
            node_id,
            address: address.to_string(),
            learner_only,
        };
        let resp = self
            .call(Kind::Write, |conn| {
                let req = req.clone();
                async move { control_plane_service(conn).add_server(req).await }
            })
            .await?;
        read_all("server member", resp.members)
    }

    /// Removes a server from the control plane; returns the members
    /// afterwards.
    pub async fn remove_server(&self, node_id: u64) -> Result<Vec<t::ServerMember>, ClientError> {
        let req = pb::RemoveServerRequest { node_id };
        let resp = self
            .call(Kind::Write, |conn| async move {
                control_plane_service(conn).remove_server(req).await
            })
            .await?;
        read_all("server member", resp.members)
    }

    // ---------------------------------------------------------- API tokens

    /// Creates an API token; returns its record and the bearer token
    /// (`berth_<id>_<secret>`), which the server shows this once only.
    /// `None` never expires.
    pub async fn create_api_token(
        &self,
        role: t::Role,
        description: &str,
        expires_in: Option<Duration>,
    ) -> Result<(t::ApiTokenView, String), ClientError> {
        let req = pb::CreateApiTokenRequest {
            role: role.as_str().to_string(),
            description: description.to_string(),
            expires_in_secs: match expires_in {
                None => 0,
                Some(d) => whole_seconds(d, "expires_in")?,
            },
            format: String::new(),
        };
        let resp = self
            .call(Kind::Write, |conn| {
                let req = req.clone();
                async move { auth_service(conn).create_api_token(req).await }
            })
            .await?;
        Ok((
            read("API token", required(resp.token, "token")?)?,
            resp.secret,
        ))
    }

    /// Creates an AWS access key for the ECS endpoint: its record, its id
    /// and its secret access key (shown this once).
    pub async fn create_aws_access_key(
        &self,
        role: t::Role,
        description: &str,
        expires_in: Option<Duration>,
    ) -> Result<(t::ApiTokenView, String, String), ClientError> {
        let req = pb::CreateApiTokenRequest {
            role: role.as_str().to_string(),
            description: description.to_string(),
            expires_in_secs: match expires_in {
                None => 0,
                Some(d) => whole_seconds(d, "expires_in")?,
            },
            format: t::TokenFormat::Aws.as_str().to_string(),
        };
        let resp = self
            .call(Kind::Write, |conn| {
                let req = req.clone();
                async move { auth_service(conn).create_api_token(req).await }
            })
            .await?;
        if resp.aws_access_key_id.is_empty() || resp.aws_secret_access_key.is_empty() {
            // A server from before AWS keys ignores `format` and makes a
            // bearer token, whose secret is not shown here.
            return Err(ClientError::InvalidResponse(
                "the server made no AWS access key (it predates --format aws); upgrade every server, then revoke the token it made instead".into(),
            ));
        }
        Ok((
            read("API token", required(resp.token, "token")?)?,
            resp.aws_access_key_id,
            resp.aws_secret_access_key,
        ))
    }

    pub async fn list_api_tokens(&self) -> Result<Vec<t::ApiTokenView>, ClientError> {
        let resp = self
            .call(Kind::Read, |conn| async move {
                auth_service(conn)
                    .list_api_tokens(pb::ListApiTokensRequest {})
                    .await
            })
            .await?;
        read_all("API token", resp.tokens)
    }

    /// Returns the now revoked token.
    pub async fn revoke_api_token(&self, id: &str) -> Result<t::ApiTokenView, ClientError> {
        let req = pb::RevokeApiTokenRequest { id: id.to_string() };
        let resp = self
            .call(Kind::Write, |conn| {
                let req = req.clone();
                async move { auth_service(conn).revoke_api_token(req).await }
            })
            .await?;
        read("API token", required(resp.token, "token")?)
    }

    /// Adds a certificate, by the SHA-256 of its DER, to the revocation list.
    pub async fn revoke_certificate(
        &self,
        fingerprint: &str,
        description: &str,
    ) -> Result<t::RevokedCertificate, ClientError> {
        let req = pb::RevokeCertificateRequest {
            fingerprint: fingerprint.to_string(),
            description: description.to_string(),
        };
        let resp = self
            .call(Kind::Write, |conn| {
                let req = req.clone();
                async move { auth_service(conn).revoke_certificate(req).await }
            })
            .await?;
        Ok(required(resp.certificate, "certificate")?.into())
    }

    pub async fn list_revoked_certificates(
        &self,
    ) -> Result<Vec<t::RevokedCertificate>, ClientError> {
        let resp = self
            .call(Kind::Read, |conn| async move {
                auth_service(conn)
                    .list_revoked_certificates(pb::ListRevokedCertificatesRequest {})
                    .await
            })
            .await?;
        Ok(resp.certificates.into_iter().map(Into::into).collect())
    }

    // --------------------------------------------------------- activations

    /// Creates an activation; returns it and the join token agents
    /// register with (shown this once only). `None` takes the server's
    /// defaults: the default cluster, 24 hours, one registration.
    pub async fn create_activation(
        &self,
        cluster: Option<&str>,
        expires_in: Option<Duration>,
        max_registrations: Option<u32>,
        attributes: &BTreeMap<String, String>,
        description: &str,
    ) -> Result<(t::ActivationView, String), ClientError> {
        if max_registrations == Some(0) {
            // 0 on the wire means "the default", not "none".
            return Err(ClientError::InvalidRequest(
                "max_registrations must be at least 1".into(),
            ));
        }
        let req = pb::CreateActivationRequest {
            cluster: cluster.unwrap_or_default().to_string(),
            expires_in_secs: match expires_in {
                None => 0,
                Some(d) => whole_seconds(d, "expires_in")?,
            },
            max_registrations: max_registrations.unwrap_or_default(),
            attributes: convert::attributes_to_wire(attributes),
            description: description.to_string(),
        };
        let resp = self
            .call(Kind::Write, |conn| {
                let req = req.clone();
                async move { activation_service(conn).create_activation(req).await }
            })
            .await?;
        let activation = required(resp.activation, "activation")?.into();
        Ok((activation, resp.token))
    }

    pub async fn list_activations(&self) -> Result<Vec<t::ActivationView>, ClientError> {
        let resp = self
            .call(Kind::Read, |conn| async move {
                activation_service(conn)
                    .list_activations(pb::ListActivationsRequest {})
                    .await
            })
            .await?;
        Ok(resp.activations.into_iter().map(Into::into).collect())
    }

    pub async fn describe_activation(&self, id: &str) -> Result<t::ActivationView, ClientError> {
        let req = pb::DescribeActivationRequest { id: id.to_string() };
        let resp = self
            .call(Kind::Read, |conn| {
                let req = req.clone();
                async move { activation_service(conn).describe_activation(req).await }
            })
            .await?;
        Ok(required(resp.activation, "activation")?.into())
    }

    /// Returns the now revoked activation; instances it registered stay.
    pub async fn revoke_activation(&self, id: &str) -> Result<t::ActivationView, ClientError> {
        let req = pb::RevokeActivationRequest { id: id.to_string() };
        let resp = self
            .call(Kind::Write, |conn| {
                let req = req.clone();
                async move { activation_service(conn).revoke_activation(req).await }
            })
            .await?;
        Ok(required(resp.activation, "activation")?.into())
    }

    // ----------------------------------------------------------- instances

    /// `None` lists the instances of every cluster.
    pub async fn list_instances(
        &self,
        cluster: Option<&str>,
    ) -> Result<Vec<t::InstanceView>, ClientError> {
        let req = pb::ListInstancesRequest {
            cluster: cluster.unwrap_or_default().to_string(),
        };
        let resp = self
            .call(Kind::Read, |conn| {
                let req = req.clone();
                async move { instance_service(conn).list_instances(req).await }
            })
            .await?;
        read_all("instance", resp.instances)
    }

    pub async fn describe_instance(&self, id: &str) -> Result<t::InstanceView, ClientError> {
        let req = pb::DescribeInstanceRequest { id: id.to_string() };
        let resp = self
            .call(Kind::Read, |conn| {
                let req = req.clone();
                async move { instance_service(conn).describe_instance(req).await }
            })
            .await?;
        read("instance", required(resp.instance, "instance")?)
    }

    /// Returns the now INACTIVE instance; its certificate is refused from
    /// then on.
    pub async fn deregister_instance(&self, id: &str) -> Result<t::InstanceView, ClientError> {
        let req = pb::DeregisterInstanceRequest { id: id.to_string() };
        let resp = self
            .call(Kind::Write, |conn| {
                let req = req.clone();
                async move { instance_service(conn).deregister_instance(req).await }
            })
            .await?;
        read("instance", required(resp.instance, "instance")?)
    }

    /// Marks an instance DRAINING: nothing new is placed on it; the tasks
    /// already there keep running. Returns the instance afterwards.
    pub async fn drain_instance(&self, id: &str) -> Result<t::InstanceView, ClientError> {
        let req = pb::DrainInstanceRequest { id: id.to_string() };
        let resp = self
            .call(Kind::Write, |conn| {
                let req = req.clone();
                async move { instance_service(conn).drain_instance(req).await }
            })
            .await?;
        read("instance", required(resp.instance, "instance")?)
    }

    /// Ends draining: the instance takes new tasks again.
    pub async fn activate_instance(&self, id: &str) -> Result<t::InstanceView, ClientError> {
        let req = pb::ActivateInstanceRequest { id: id.to_string() };
        let resp = self
            .call(Kind::Write, |conn| {
                let req = req.clone();
                async move { instance_service(conn).activate_instance(req).await }
            })
            .await?;
        read("instance", required(resp.instance, "instance")?)
    }

    /// Sets custom attributes (replacing the values of names it already
    /// has); returns the instance afterwards.
    pub async fn put_instance_attributes(
        &self,
        id: &str,
        attributes: &BTreeMap<String, String>,
    ) -> Result<t::InstanceView, ClientError> {
        if attributes.is_empty() {
            return Err(ClientError::InvalidRequest(
                "give at least one attribute".into(),
            ));
        }
        let req = pb::PutInstanceAttributesRequest {
            id: id.to_string(),
            attributes: convert::attributes_to_wire(attributes),
        };
        let resp = self
            .call(Kind::Write, |conn| {
                let req = req.clone();
                async move { instance_service(conn).put_instance_attributes(req).await }
            })
            .await?;
        read("instance", required(resp.instance, "instance")?)
    }

    /// Removes attributes by name; returns the instance afterwards.
    pub async fn delete_instance_attributes(
        &self,
        id: &str,
        names: &[String],
    ) -> Result<t::InstanceView, ClientError> {
        if names.is_empty() {
            return Err(ClientError::InvalidRequest(
                "give at least one attribute name".into(),
            ));
        }
        let req = pb::DeleteInstanceAttributesRequest {
            id: id.to_string(),
            names: names.to_vec(),
        };
        let resp = self
            .call(Kind::Write, |conn| {
                let req = req.clone();
                async move { instance_service(conn).delete_instance_attributes(req).await }
            })
            .await?;
        read("instance", required(resp.instance, "instance")?)
    }

    // --------------------------------------------------------------- tasks
    //
    // Tasks come back as `berth_types::Task`. The API does not carry a
    // task's placement strategies and constraints or its host ports, so
    // those are empty in what these calls return.

    /// Starts `count` tasks placed by the scheduler; returns them (some may
    /// still be PROVISIONING, with a placement reason).
    ///
    /// With a client token (see [`new_client_token`]) the call is
    /// idempotent, so a call whose reply was lost is sent again to another
    /// server with the same token; without one it is an ordinary write and
    /// such a failure is [`ClientError::OutcomeUnknown`].
    pub async fn run_task(&self, input: &t::RunTaskInput) -> Result<Vec<t::Task>, ClientError> {
        let kind = launch_kind(&input.launch);
        let req = pb::RunTaskRequest::from(input.clone());
        let resp = self
            .call(kind, |conn| {
                let req = req.clone();
                async move { task_service(conn).run_task(req).await }
            })
            .await?;
        read_all("task", resp.tasks)
    }

    /// Starts tasks on the named instances, bypassing placement; retried
    /// like [`BerthClient::run_task`].
    pub async fn start_task(&self, input: &t::StartTaskInput) -> Result<Vec<t::Task>, ClientError> {
        if input.instance_ids.is_empty() {
            return Err(ClientError::InvalidRequest(
                "give at least one instance to start the task on".into(),
            ));
        }
        let kind = launch_kind(&input.launch);
        let req = pb::StartTaskRequest::from(input.clone());
        let resp = self
            .call(kind, |conn| {
                let req = req.clone();
                async move { task_service(conn).start_task(req).await }
            })
            .await?;
        read_all("task", resp.tasks)
    }

    /// Asks a task to stop; returns it (usually still STOPPING).
    pub async fn stop_task(&self, id: &str, reason: &str) -> Result<t::Task, ClientError> {
        let req = pb::StopTaskRequest {
            id: id.to_string(),
            reason: reason.to_string(),
        };
        let resp = self
            .call(Kind::Write, |conn| {
                let req = req.clone();
                async move { task_service(conn).stop_task(req).await }
            })
            .await?;
        read("task", required(resp.task, "task")?)
    }

    pub async fn list_tasks(&self, filter: &t::TaskFilter) -> Result<Vec<t::Task>, ClientError> {
        let req = pb::ListTasksRequest::from(filter.clone());
        let resp = self
            .call(Kind::Read, |conn| {
                let req = req.clone();
                async move { task_service(conn).list_tasks(req).await }
            })
            .await?;
        read_all("task", resp.tasks)
    }

    pub async fn describe_task(&self, id: &str) -> Result<t::Task, ClientError> {
        read("task", self.describe_task_wire(id).await?)
    }

    async fn describe_task_wire(&self, id: &str) -> Result<pb::Task, ClientError> {
        let req = pb::DescribeTaskRequest { id: id.to_string() };
        let resp = self
            .call(Kind::Read, |conn| {
                let req = req.clone();
                async move { task_service(conn).describe_task(req).await }
            })
            .await?;
        required(resp.task, "task")
    }

    /// [`describe_task`](Self::describe_task), with where the task's
    /// container ports are published on its instance.
    pub async fn describe_task_with_bindings(
        &self,
        id: &str,
    ) -> Result<(t::Task, Vec<t::NetworkBinding>), ClientError> {
        let mut wire = self.describe_task_wire(id).await?;
        let bindings = read_all(
            "network binding",
            std::mem::take(&mut wire.network_bindings),
        )?;
        Ok((read("task", wire)?, bindings))
    }

    /// Opens a task's container output. Opening fails over like a read;
    /// once open, the stream stays with the server that answered, and the
    /// request timeout does not apply to it (a followed stream may run for
    /// days).
    pub async fn task_logs(
        &self,
        id: &str,
        options: &t::LogOptions,
    ) -> Result<LogStream, ClientError> {
        if options.tail == Some(0) {
            // 0 on the wire means "everything".
            return Err(ClientError::InvalidRequest(
                "tail must be at least 1".into(),
            ));
        }
        let req = convert::task_logs_request(id, options);
        let (inner, index) = self
            .call_indexed(Kind::Read, |conn| {
                let req = req.clone();
                async move { task_service(conn).get_task_logs(req).await }
            })
            .await?;
        Ok(LogStream {
            inner,
            endpoint: self.inner.targets[index].name.clone(),
        })
    }

    // --------------------------------------------------------------- agents
    //
    // Used by `join`; public so an agent can make the calls its own way.

    /// Registers an instance with an activation. A write: each call uses up
    /// one of the activation's registrations, so a call whose reply was
    /// lost is not repeated elsewhere.
    pub async fn register_instance(
        &self,
        input: &t::RegisterInstanceInput,
    ) -> Result<t::RegisteredInstance, ClientError> {
        let req = pb::RegisterInstanceRequest::from(input.clone());
        let resp = self
            .call(Kind::Write, |conn| {
                let req = req.clone();
                async move { agent_service(conn).register_instance(req).await }
            })
            .await?;
        Ok(resp.into())
    }

    /// Asks for a certificate for the CSR's key; needs the client
    /// certificate. Safe to repeat, like a read: signing the same CSR twice
    /// just yields two certificates for the same key, and the older one
    /// stays valid until it expires anyway.
    pub async fn renew_certificate(
        &self,
        csr_pem: &str,
    ) -> Result<t::IssuedCertificate, ClientError> {
        let req = pb::RenewCertificateRequest {
            csr_pem: csr_pem.to_string(),
        };
        let resp = self
            .call(Kind::Read, |conn| {
                let req = req.clone();
                async move { agent_service(conn).renew_certificate(req).await }
            })
            .await?;
        Ok(resp.into())
    }

    /// The agent's heartbeat; needs the client certificate.
    pub async fn agent_ping(&self) -> Result<t::AgentPing, ClientError> {
        let resp = self
            .call(Kind::Read, |conn| async move {
                agent_service(conn).ping(pb::AgentPingRequest {}).await
            })
            .await?;
        Ok(resp.into())
    }

    // ------------------------------------------------------------ failover

    /// Runs `rpc` against the endpoints in failover order until one answers
    /// or the failure may not be retried.
    async fn call<T, F, Fut>(&self, kind: Kind, rpc: F) -> Result<T, ClientError>
    where
        F: FnMut(Conn) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        Ok(self.call_indexed(kind, rpc).await?.0)
    }

    /// [`BerthClient::call`], also saying which target answered.
    async fn call_indexed<T, F, Fut>(
        &self,
        kind: Kind,
        mut rpc: F,
    ) -> Result<(T, usize), ClientError>
    where
        F: FnMut(Conn) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let targets = &self.inner.targets;
        let start = self.inner.preferred.load(Ordering::Relaxed) % targets.len();
        let mut tried = Vec::with_capacity(targets.len());
        let mut last = String::new();
        for step in 0..targets.len() {
            let index = (start + step) % targets.len();
            let target = &targets[index];
            let conn = InterceptedService::new(target.channel(), self.inner.auth.clone());
            let status = match rpc(conn).await {
                Ok(response) => {
                    self.inner.preferred.store(index, Ordering::Relaxed);
                    return Ok((response.into_inner(), index));
                }
                Err(status) => status,
            };
            tried.push(target.name.clone());
            match classify(status) {
                Failure::NotSent(why) => last = why,
                Failure::Lost(why) if kind.repeatable() => last = why,
                Failure::Lost(reason) => {
                    return Err(ClientError::OutcomeUnknown {
                        endpoint: target.name.clone(),
                        reason,
                    })
                }
                // An Unavailable answer (no leader yet, shutting down) means
                // this server did not serve the call; another one may.
                Failure::Server(status)
                    if kind.repeatable() && status.code() == Code::Unavailable =>
                {
                    last = match status.message() {
                        "" => "unavailable".to_string(),
                        message => format!("unavailable: {message}"),
                    };
                }
                Failure::Server(status) => {
                    self.inner.preferred.store(index, Ordering::Relaxed);
                    return Err(ClientError::from_status(&status));
                }
            }
        }
        Err(ClientError::Unavailable { tried, last })
    }
}

/// A launch with a client token is deduplicated by the server; one
/// without is not.
fn launch_kind(launch: &t::TaskLaunch) -> Kind {
    match launch.client_token.as_deref().map(str::trim) {
        Some(token) if !token.is_empty() => Kind::Idempotent,
        _ => Kind::Write,
    }
}

/// A task's container output as the server streams it, chunk by chunk.
pub struct LogStream {
    inner: tonic::Streaming<pb::LogChunk>,
    endpoint: String,
}

impl std::fmt::Debug for LogStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStream")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl LogStream {
    /// The next chunk (which stream, and the bytes as written); `None`
    /// once the server has sent everything (without follow) or the task has
    /// stopped (with follow).
    pub async fn next(&mut self) -> Result<Option<t::LogChunk>, ClientError> {
        match self.inner.message().await {
            Ok(chunk) => Ok(chunk.map(Into::into)),
            Err(status) => Err(match classify(status) {
                Failure::Server(status) => ClientError::from_status(&status),
                Failure::NotSent(reason) | Failure::Lost(reason) => ClientError::StreamBroken {
                    endpoint: self.endpoint.clone(),
                    reason,
                },
            }),
        }
    }

    /// The server the stream comes from (`host:port`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

/// The CA and client certificate as tonic wants them, checked here so a
/// bad file is reported when the client is built, not as a failed
/// handshake. `None` without a CA.
fn tls_settings(config: &ClientConfig) -> Result<Option<ClientTlsConfig>, ClientError> {
    let Some(ca_pem) = &config.ca_pem else {
        if config.identity.is_some() {
            return Err(ClientError::InvalidConfig(
                "a client certificate needs the cluster CA too".into(),
            ));
        }
        return Ok(None);
    };
    berth_pki::first_der(ca_pem).map_err(|e| {
        ClientError::InvalidConfig(format!("the cluster CA is not a PEM certificate: {e}"))
    })?;
    if let Some((cert_pem, _)) = &config.identity {
        berth_pki::first_der(cert_pem).map_err(|e| {
            ClientError::InvalidConfig(format!(
                "the client certificate is not a PEM certificate: {e}"
            ))
        })?;
    }
    let identity = config
        .identity
        .as_ref()
        .map(|(cert_pem, key_pem)| (cert_pem.as_str(), key_pem.as_str()));
    Ok(Some(berth_proto::tls::client_tls(ca_pem, identity)))
}

/// The one place a parsed endpoint becomes a transport. The scheme decides:
/// `http://` is plain, `https://` is TLS, and a bare `host:port` is TLS
/// exactly when there is a CA to verify the server with.
fn transport_endpoint(
    text: &str,
    parsed: &ParsedEndpoint,
    tls: Option<&ClientTlsConfig>,
    config: &ClientConfig,
) -> Result<Endpoint, ClientError> {
    let tls = match (parsed.scheme, tls) {
        (Scheme::Http, _) | (Scheme::Bare, None) => None,
        (Scheme::Https | Scheme::Bare, Some(tls)) => Some(tls),
        (Scheme::Https, None) => {
            return Err(ClientError::InvalidEndpoint {
                endpoint: text.to_string(),
                reason: "https needs the cluster CA to verify the server with".into(),
            })
        }
    };
    let mut endpoint = Endpoint::from(parsed.uri(tls.is_some())?)
        .connect_timeout(config.connect_timeout)
        .timeout(config.request_timeout);
    if let Some(tls) = tls {
        // Named explicitly because tonic would take the URI's host, which
        // keeps the brackets of an IPv6 address.
        let tls = tls.clone().domain_name(parsed.host.clone());
        endpoint = endpoint.tls_config(tls).map_err(|e| {
            ClientError::InvalidConfig(format!(
                "the TLS settings for {} cannot be used: {}",
                parsed.name,
                t::error_chain(&e)
            ))
        })?;
    }
    Ok(endpoint)
}

// The typed stubs are built only here, on connections that carry the token.

fn cluster_service(conn: Conn) -> ClusterServiceClient<Conn> {
    ClusterServiceClient::new(conn)
}

fn task_definition_service(conn: Conn) -> TaskDefinitionServiceClient<Conn> {
    TaskDefinitionServiceClient::new(conn)
}

fn control_plane_service(conn: Conn) -> ControlPlaneServiceClient<Conn> {
    ControlPlaneServiceClient::new(conn)
}

fn auth_service(conn: Conn) -> AuthServiceClient<Conn> {
    AuthServiceClient::new(conn)
}

fn activation_service(conn: Conn) -> ActivationServiceClient<Conn> {
    ActivationServiceClient::new(conn)
}

fn instance_service(conn: Conn) -> InstanceServiceClient<Conn> {
    InstanceServiceClient::new(conn)
}

fn task_service(conn: Conn) -> TaskServiceClient<Conn> {
    TaskServiceClient::new(conn)
}

fn agent_service(conn: Conn) -> AgentServiceClient<Conn> {
    AgentServiceClient::new(conn)
}

// ---------------------------------------------------------- conversions

/// A lifetime in whole seconds, as the API takes them; 0 means "the
/// default" on the wire, so less than a second is refused.
fn whole_seconds(d: Duration, field: &str) -> Result<u64, ClientError> {
    match d.as_secs() {
        0 => Err(ClientError::InvalidRequest(format!(
            "{field} must be at least one second"
        ))),
        secs => Ok(secs),
    }
}

/// [`whole_seconds`] for an optional setting.
fn optional_seconds(d: Option<Duration>, field: &str) -> Result<Option<u64>, ClientError> {
    d.map(|d| whole_seconds(d, field)).transpose()
}

fn required<T>(value: Option<T>, field: &str) -> Result<T, ClientError> {
    value.ok_or_else(|| ClientError::InvalidResponse(format!("{field} is missing")))
}

/// A reply read as its domain type; `what` names the record in the
/// message when the server sent something this client cannot read.
fn read<W, D>(what: &str, wire: W) -> Result<D, ClientError>
where
    D: TryFrom<W>,
    D::Error: std::fmt::Display,
{
    D::try_from(wire).map_err(|e| ClientError::InvalidResponse(format!("{what}: {e}")))
}

/// [`read`] for every record of a list.
fn read_all<W, D>(what: &str, wire: Vec<W>) -> Result<Vec<D>, ClientError>
where
    D: TryFrom<W>,
    D::Error: std::fmt::Display,
{
    wire.into_iter().map(|w| read(what, w)).collect()
}

/// A task definition read back, named by its id in the message.
fn task_definition_from_wire(td: pb::TaskDefinition) -> Result<t::TaskDefinition, ClientError> {
    let id = format!("{}:{}", td.family, td.revision);
    read(&format!("task definition {id}"), td)
}

#[cfg(test)]
mod task_tests;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;
