//! Who may call what. A tower layer in front of every service derives the
//! caller from the TLS client certificate or the bearer token, never from a
//! request field, and refuses before any handler runs:
//!
//! | calls | caller must be |
//! | --- | --- |
//! | `RaftService/*` | a server of this cluster (certificate) |
//! | `AgentService/RegisterInstance` | anyone (the activation secret authenticates) |
//! | `grpc.reflection.*/ServerReflectionInfo` | anyone (the schema only, public in `proto/`) |
//! | other `AgentService/*`, `AgentSecretsService/*` | a registered, active instance (certificate) |
//! | `TaskService/GetTaskLogs` | an admin or logs token, or a server |
//! | `List*`, `Describe*`, `Get*`, `Watch*` | an admin, logs or readonly token, or a server |
//! | everything else | an admin token, or a server (proxied calls) |

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use berth_pki::tokens::{hash_secret, hashes_equal, ApiTokenSecret};
use berth_pki::{PeerIdentity, Role as CertRole};
use berth_types::{InstanceStatus, Role};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::Status;

use crate::api::now_ms;
use crate::audit::{CallContext, LocalAudit, LocalRecord};
use crate::limits::AddressRate;
use crate::node::BerthNode;
use berth_types::journal::{Actor, Principal};

/// The gRPC path of the agent session, which the session transport's
/// connections are authorized as.
pub const SESSION_PATH: &str = "/berth.v1.AgentSessionService/Session";

/// The authenticated caller, placed in request extensions for handlers.
#[derive(Debug, Clone, PartialEq)]
pub enum Caller {
    Server(u64),
    Instance(String),
    Operator { token_id: String, role: Role },
    Anonymous,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Access {
    RaftPeer,
    Open,
    /// gRPC server reflection: the API's schema, which is public in
    /// `proto/`, so that grpcurl, grpcui and Postman discover the services
    /// without a token (as most gRPC servers allow). Not rate-limited with
    /// agent registrations (a tool asks many questions on one stream, and
    /// they cost a map lookup), never audited (it changes nothing).
    Schema,
    Agent,
    Read,
    /// Container logs: they hold whatever applications print.
    Logs,
    Write,
}

fn classify(path: &str) -> Access {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let service = parts.next().unwrap_or_default();
    let method = parts.next().unwrap_or_default();
    match service {
        "berth.v1.RaftService" => Access::RaftPeer,
        // The agent binary and its installer: public by design.
        "downloads" => Access::Open,
        "berth.v1.AgentService" if method == "RegisterInstance" => Access::Open,
        "grpc.reflection.v1.ServerReflection" | "grpc.reflection.v1alpha.ServerReflection"
            if method == "ServerReflectionInfo" =>
        {
            Access::Schema
        }
        "berth.v1.AgentService"
        | "berth.v1.AgentSessionService"
        | "berth.v1.AgentSecretsService" => Access::Agent,
        "berth.v1.TaskService" if method == "GetTaskLogs" => Access::Logs,
        _ if ["List", "Describe", "Get", "Watch"]
            .iter()
            .any(|p| method.starts_with(p)) =>
        {
            Access::Read
        }
        _ => Access::Write,
    }
}

/// The `method` label of a call's metrics: the API method without the
/// package (`TaskService/RunTask`). Paths that name no method of berthd's
/// API (a caller may send any path, even unauthenticated) share one label,
/// `unknown`, so the number of series stays that of the API.
fn method_label(path: &str) -> &str {
    static KNOWN: std::sync::OnceLock<std::collections::HashSet<String>> =
        std::sync::OnceLock::new();
    let known = KNOWN.get_or_init(|| {
        let mut paths = std::collections::HashSet::new();
        // The descriptor set is compiled into the binary by the build, so
        // it decodes; an empty set would only label every call `unknown`.
        let files = <prost_types::FileDescriptorSet as prost::Message>::decode(
            berth_proto::pb::FILE_DESCRIPTOR_SET,
        )
        .map(|set| set.file)
        .unwrap_or_default();
        for file in files {
            let package = file.package.unwrap_or_default();
            for service in file.service {
                let service_name = service.name.unwrap_or_default();
                for method in service.method {
                    let method_name = method.name.unwrap_or_default();
                    paths.insert(format!("/{package}.{service_name}/{method_name}"));
                }
            }
        }
        paths
    });
    if known.contains(path) {
        return path.trim_start_matches("/berth.v1.");
    }
    match classify(path) {
        Access::Schema => "ServerReflection/ServerReflectionInfo",
        Access::Open if path.starts_with("/downloads/") => "downloads",
        _ => "unknown",
    }
}

pub struct Authorizer {
    node: BerthNode,
    cluster_id: String,
    /// Bounds unauthenticated calls per client address; `None`: unbounded.
    anonymous_rate: Option<Arc<AddressRate>>,
    /// Where calls that never become a command are audited; `None`: not
    /// audited (tests of authorization alone).
    local_audit: Option<Arc<LocalAudit>>,
}

impl Authorizer {
    pub fn new(
        node: BerthNode,
        cluster_id: String,
        anonymous_rate: Option<Arc<AddressRate>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            node,
            cluster_id,
            anonymous_rate,
            local_audit: None,
        })
    }

    /// The same, auditing calls that never become a command in `audit`.
    pub fn audited(
        node: BerthNode,
        cluster_id: String,
        anonymous_rate: Option<Arc<AddressRate>>,
        audit: Arc<LocalAudit>,
    ) -> Arc<Self> {
        Arc::new(Self {
            node,
            cluster_id,
            anonymous_rate,
            local_audit: Some(audit),
        })
    }

    /// Who a refused caller is, as far as its credentials prove: a token
    /// that verifies (but lacked the role), or a valid certificate.
    async fn identify(&self, call: &CallInfo) -> Principal {
        if let Ok(Some(identity)) = self.peer_identity(call) {
            return match identity.role {
                CertRole::Instance(id) => Principal::Instance { id },
                CertRole::Server(id) => Principal::Server { id },
            };
        }
        match self.check_token(call, Role::Readonly).await {
            Ok(caller) => principal_of(&caller),
            Err(_) => Principal::Anonymous,
        }
    }

    /// Records a call in this server's local audit file.
    fn record_locally(&self, call: &CallInfo, actor: Actor, outcome: LocalOutcome) {
        let Some(audit) = &self.local_audit else {
            return;
        };
        let (outcome, code, reason) = match outcome {
            LocalOutcome::Accepted => ("accepted", String::new(), String::new()),
            LocalOutcome::Refused { code, reason } => ("refused", code, reason),
        };
        let claimed = if actor.principal == Principal::Anonymous {
            call.claimed()
        } else {
            String::new()
        };
        audit.append(&LocalRecord {
            at_ms: now_ms(),
            server_id: self.node.id(),
            actor,
            claimed,
            outcome: outcome.to_string(),
            code,
            reason,
        });
    }

    fn peer_identity(&self, call: &CallInfo) -> Result<Option<PeerIdentity>, Status> {
        let Some(leaf) = call.peer_certs.as_ref().and_then(|c| c.first()) else {
            return Ok(None);
        };
        let identity = PeerIdentity::from_der(leaf.as_ref())
            .map_err(|e| Status::unauthenticated(format!("client certificate refused: {e}")))?;
        if identity.cluster_id != self.cluster_id {
            return Err(Status::unauthenticated(format!(
                "client certificate belongs to cluster {}, not this one",
                identity.cluster_id
            )));
        }
        Ok(Some(identity))
    }

    /// Refuses a caller whose presented chain holds a revoked certificate:
    /// its own, or the signing CA that issued it. Checked against this
    /// server's applied state (Raft calls cannot wait for a read barrier).
    fn refuse_revoked(&self, call: &CallInfo) -> Result<(), Status> {
        let Some(chain) = call.peer_certs.as_ref() else {
            return Ok(());
        };
        let applied = self.node.state().read();
        for cert in chain.iter() {
            let fingerprint = berth_pki::der_digest(cert.as_ref());
            if applied.state.is_certificate_revoked(&fingerprint) {
                tracing::warn!(%fingerprint, path = %call.path, "refused a revoked certificate");
                return Err(Status::permission_denied(format!(
                    "certificate {fingerprint} has been revoked"
                )));
            }
        }
        Ok(())
    }

    async fn authorize(&self, call: &CallInfo) -> Result<Caller, Status> {
        let access = classify(&call.path);
        if access == Access::Schema {
            // Whatever credentials come along are not looked at.
            return Ok(Caller::Anonymous);
        }
        let identity = self.peer_identity(call)?;
        if identity.is_some() && access != Access::Open {
            // Agents and API callers get the same freshness as tokens do;
            // Raft traffic is checked against what is applied here.
            if access != Access::RaftPeer {
                self.fresh().await?;
            }
            self.refuse_revoked(call)?;
        }
        match access {
            Access::Open => {
                // Keyed on the TCP peer: an unknown address (no connection
                // info) shares one bucket rather than escaping the limit.
                let ip = call
                    .remote
                    .map_or(IpAddr::from([0, 0, 0, 0]), |addr| addr.ip());
                match &self.anonymous_rate {
                    Some(rate) if !rate.allow(ip) => Err(Status::resource_exhausted(format!(
                        "too many unauthenticated calls from {ip}; slow down and retry in a few seconds"
                    ))),
                    _ => Ok(Caller::Anonymous),
                }
            }
            Access::Schema => Ok(Caller::Anonymous),
            Access::RaftPeer => match identity.map(|i| i.role) {
                Some(CertRole::Server(id)) => self.member_server(id),
                _ => Err(Status::permission_denied(
                    "Raft RPCs are only accepted from this cluster's servers (server certificate required)",
                )),
            },
            Access::Agent => match identity.map(|i| i.role) {
                Some(CertRole::Instance(id)) => {
                    self.fresh().await?;
                    let applied = self.node.state().read();
                    match applied.state.instance(&id).map(|i| i.status) {
                        Some(InstanceStatus::Active) => Ok(Caller::Instance(id)),
                        Some(InstanceStatus::Inactive) => Err(Status::permission_denied(format!(
                            "instance {id} has been deregistered; its certificate is no longer accepted"
                        ))),
                        None => Err(Status::permission_denied(format!("instance {id} is not registered"))),
                    }
                }
                _ => Err(Status::unauthenticated(
                    "agent calls need the instance's client certificate (mutual TLS)",
                )),
            },
            Access::Read | Access::Logs | Access::Write => {
                if let Some(PeerIdentity {
                    role: CertRole::Server(id),
                    ..
                }) = identity
                {
                    return self.member_server(id);
                }
                let role_needed = match access {
                    Access::Read => Role::Readonly,
                    Access::Logs => Role::Logs,
                    _ => Role::Admin,
                };
                self.check_token(call, role_needed).await
            }
        }
    }

    /// A server certificate speaks for a server only while that server is
    /// in the membership (voter or learner) as this server knows it: a
    /// removed server's certificate is worth nothing from then on. A server
    /// that is not yet part of any cluster accepts whichever server of its
    /// cluster initializes it or adds it.
    fn member_server(&self, id: u64) -> Result<Caller, Status> {
        let metrics = self.node.metrics();
        let membership = metrics.membership_config.membership();
        let initialized = membership.nodes().next().is_some();
        if !initialized || membership.get_node(&id).is_some() {
            return Ok(Caller::Server(id));
        }
        tracing::warn!(
            server_id = id,
            "refused a call with the certificate of a server that is not a member"
        );
        Err(Status::permission_denied(format!(
            "server {id} is not a member of this cluster (removed?); its certificate is no longer accepted"
        )))
    }

    /// Checks an `authorization` header's API token for `needed`, as every
    /// operator call does.
    pub async fn check_authorization(
        &self,
        authorization: Option<String>,
        needed: Role,
    ) -> Result<Caller, Status> {
        let call = CallInfo {
            path: String::new(),
            authorization,
            peer_certs: None,
            remote: None,
        };
        self.check_token(&call, needed).await
    }

    async fn check_token(&self, call: &CallInfo, needed: Role) -> Result<Caller, Status> {
        let header = call
            .authorization
            .as_ref()
            .ok_or_else(|| Status::unauthenticated(NO_TOKEN))?;
        let text = header.strip_prefix("Bearer ").ok_or_else(|| {
            Status::unauthenticated(
                "the authorization metadata is not `Bearer TOKEN`; send it as `authorization: Bearer berth_...`",
            )
        })?;
        let invalid = || Status::unauthenticated("invalid API token");
        let presented = ApiTokenSecret::parse(text).ok_or_else(invalid)?;
        self.fresh().await?;
        let applied = self.node.state().read();
        let token = applied
            .state
            .api_token(&presented.id)
            // An AWS key signs requests to the ECS endpoint; it is never a
            // bearer token (its hash is empty too, so this is the second
            // lock on the same door).
            .filter(|t| !t.is_aws())
            .ok_or_else(invalid)?;
        if !hashes_equal(&token.secret_hash, &hash_secret(&presented.secret)) {
            return Err(invalid());
        }
        if token.revoked_at_ms.is_some() {
            return Err(Status::unauthenticated(format!(
                "API token {} has been revoked",
                token.id
            )));
        }
        if !token.is_usable(now_ms()) {
            return Err(Status::unauthenticated(format!(
                "API token {} has expired",
                token.id
            )));
        }
        if !token.role.grants(needed) {
            let why = match needed {
                Role::Logs => "this call reads container logs and needs a logs or admin token",
                _ => "this call changes state and needs an admin token",
            };
            return Err(Status::permission_denied(format!(
                "API token {} is {}; {why}",
                token.id,
                token.role.as_str()
            )));
        }
        Ok(Caller::Operator {
            token_id: token.id.clone(),
            role: token.role,
        })
    }

    /// Makes sure revocations acknowledged anywhere are visible here: a
    /// leader within its lease reads locally, anyone else passes a read
    /// barrier (which a leader cut off from the others cannot pass).
    async fn fresh(&self) -> Result<(), Status> {
        if self.node.can_read_locally() {
            return Ok(());
        }
        self.node.read_barrier().await.map_err(Status::from)
    }
}

/// A call without a token, answered to any client (not only the CLI).
pub const NO_TOKEN: &str = "no API token: send one as `authorization: Bearer TOKEN` metadata (the berth CLI: --token or BERTH_TOKEN)";

enum LocalOutcome {
    Accepted,
    Refused { code: String, reason: String },
}

/// Calls that change something and are audited: everything an admin token
/// is needed for, agent registration and the agents' unary calls. Reads,
/// Raft traffic, downloads and the agents' session streams are not (the
/// commands a session makes are journaled as the instance's events).
fn audited(access: Access, path: &str) -> bool {
    match access {
        Access::Write => true,
        Access::Open => path.starts_with("/berth.v1."),
        Access::Agent => !path.starts_with("/berth.v1.AgentSessionService/"),
        Access::RaftPeer | Access::Schema | Access::Read | Access::Logs => false,
    }
}

fn principal_of(caller: &Caller) -> Principal {
    match caller {
        Caller::Server(id) => Principal::Server { id: *id },
        Caller::Instance(id) => Principal::Instance { id: id.clone() },
        Caller::Operator { token_id, role } => Principal::Token {
            id: token_id.clone(),
            role: *role,
        },
        Caller::Anonymous => Principal::Anonymous,
    }
}

/// The status of a unary reply: tonic puts a handler's error in the
/// headers (a trailers-only reply); success leaves `grpc-status` for the
/// trailers.
fn reply_status<B>(response: &http::Response<B>) -> Option<(String, String)> {
    let status = Status::from_header_map(response.headers())?;
    (status.code() != tonic::Code::Ok)
        .then(|| (format!("{:?}", status.code()), status.message().to_string()))
}

/// What authorization needs from a request, taken out before awaiting so
/// the request body need not be shared across threads.
struct CallInfo {
    path: String,
    authorization: Option<String>,
    peer_certs: Option<Arc<Vec<tokio_rustls::rustls::pki_types::CertificateDer<'static>>>>,
    remote: Option<SocketAddr>,
}

impl CallInfo {
    fn actor(&self, principal: Principal) -> Actor {
        Actor {
            principal,
            operation: crate::audit::operation_of(&self.path),
            peer: self.remote.map(|a| a.to_string()).unwrap_or_default(),
        }
    }

    /// Who an unidentified caller claimed to be: the id of the token it
    /// presented (never its secret), or its certificate's subject.
    fn claimed(&self) -> String {
        if let Some(token) = self
            .authorization
            .as_deref()
            .and_then(|h| h.strip_prefix("Bearer "))
            .and_then(ApiTokenSecret::parse)
        {
            return format!("token:{}", token.id);
        }
        let identity = self
            .peer_certs
            .as_ref()
            .and_then(|c| c.first())
            .and_then(|leaf| PeerIdentity::from_der(leaf.as_ref()).ok());
        match identity.map(|i| i.role) {
            Some(CertRole::Instance(id)) => format!("instance:{id}"),
            Some(CertRole::Server(id)) => format!("server:{id}"),
            None => String::new(),
        }
    }

    fn of<B>(request: &http::Request<B>) -> Self {
        let tls = request.extensions().get::<TlsConnectInfo<TcpConnectInfo>>();
        Self {
            path: request.uri().path().to_string(),
            authorization: request
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            peer_certs: tls.and_then(|info| info.peer_certs()),
            remote: tls.and_then(|info| info.get_ref().remote_addr()),
        }
    }
}

#[derive(Clone)]
pub struct AuthLayer {
    pub authorizer: Arc<Authorizer>,
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            authorizer: self.authorizer.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    authorizer: Arc<Authorizer>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, B> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::BoxBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The ready service is the one to call; leave a fresh clone behind.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let authorizer = self.authorizer.clone();
        let call = CallInfo::of(&request);
        Box::pin(async move {
            let started = std::time::Instant::now();
            let response = authorizer.serve(&call, request, inner).await;
            if let Ok(response) = &response {
                let code = reply_status(response).map_or_else(|| "Ok".to_string(), |(c, _)| c);
                authorizer.node.server_metrics().api_call(
                    method_label(&call.path),
                    &code,
                    started.elapsed().as_secs_f64(),
                );
            }
            response
        })
    }
}

impl Authorizer {
    /// Authorizes the call, serves it (inside its caller's context when it
    /// is audited) and audits locally what never became a command.
    async fn serve<S, B>(
        &self,
        call: &CallInfo,
        mut request: http::Request<B>,
        mut inner: S,
    ) -> Result<S::Response, S::Error>
    where
        S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::BoxBody>>,
    {
        let access = classify(&call.path);
        match self.authorize(call).await {
            // Calls a server proxied are audited by the server that
            // received them from their caller.
            Ok(caller) if audited(access, &call.path) && !matches!(caller, Caller::Server(_)) => {
                let context = CallContext::new(call.actor(principal_of(&caller)));
                let actor = context.actor.clone();
                let probe = context.clone();
                request.extensions_mut().insert(caller);
                let response = context.scope(inner.call(request)).await?;
                if !probe.proposed() {
                    let outcome = match reply_status(&response) {
                        Some((code, reason)) => LocalOutcome::Refused { code, reason },
                        None => LocalOutcome::Accepted,
                    };
                    self.record_locally(call, actor, outcome);
                }
                Ok(response)
            }
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                inner.call(request).await
            }
            Err(status) => {
                self.refused(call, access, &status).await;
                Ok(status.into_http())
            }
        }
    }

    /// Logs a refusal, and audits it locally unless the call is one that
    /// is never audited.
    async fn refused(&self, call: &CallInfo, access: Access, status: &Status) {
        tracing::info!(path = %call.path, code = ?status.code(), reason = %status.message(), "call refused");
        if !matches!(
            access,
            Access::RaftPeer | Access::Schema | Access::Read | Access::Logs
        ) {
            let principal = self.identify(call).await;
            self.record_locally(
                call,
                call.actor(principal),
                LocalOutcome::Refused {
                    code: format!("{:?}", status.code()),
                    reason: status.message().to_string(),
                },
            );
        }
    }

    /// Authorizes an agent session that arrived on the session transport,
    /// which has no HTTP request to carry the certificate: the checks, and
    /// the local audit of a refusal, of the gRPC `Session` call.
    pub async fn authorize_session(
        &self,
        peer_certs: Option<Arc<Vec<tokio_rustls::rustls::pki_types::CertificateDer<'static>>>>,
        remote: Option<SocketAddr>,
    ) -> Result<Caller, Status> {
        let call = CallInfo {
            path: SESSION_PATH.to_string(),
            authorization: None,
            peer_certs,
            remote,
        };
        let refusal = match self.authorize(&call).await {
            Ok(caller) => return Ok(caller),
            Err(status) => status,
        };
        self.refused(&call, classify(&call.path), &refusal).await;
        Err(refusal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_classified_by_path() {
        assert_eq!(
            classify("/berth.v1.RaftService/AppendEntries"),
            Access::RaftPeer
        );
        assert_eq!(classify("/berth.v1.RaftService/Forward"), Access::RaftPeer);
        assert_eq!(classify("/berth.v1.RaftService/Pipeline"), Access::RaftPeer);
        assert_eq!(
            classify("/berth.v1.AgentService/RegisterInstance"),
            Access::Open
        );
        assert_eq!(
            classify("/berth.v1.AgentService/RenewCertificate"),
            Access::Agent
        );
        assert_eq!(
            classify("/berth.v1.TaskDefinitionService/ListTaskDefinitions"),
            Access::Read
        );
        assert_eq!(
            classify("/berth.v1.ControlPlaneService/GetStatus"),
            Access::Read
        );
        assert_eq!(
            classify("/berth.v1.AuthService/CreateApiToken"),
            Access::Write
        );
        assert_eq!(
            classify("/berth.v1.InstanceService/DeregisterInstance"),
            Access::Write
        );
        // Unknown paths need the most privilege, never the least.
        assert_eq!(
            classify("/berth.v1.TagService/ListTagsForResource"),
            Access::Read
        );
        assert_eq!(classify("/berth.v1.TagService/TagResource"), Access::Write);
        assert_eq!(
            classify("/berth.v1.TagService/UntagResource"),
            Access::Write
        );
        assert_eq!(classify("/berth.v1.TaskService/GetTaskLogs"), Access::Logs);
        assert_eq!(classify("/berth.v1.TaskService/GetTask"), Access::Read);
        assert_eq!(
            classify("/berth.v1.SecretService/RevealSecret"),
            Access::Write
        );
        assert_eq!(
            classify("/berth.v1.SecretService/RekeySecrets"),
            Access::Write
        );
        assert_eq!(
            classify("/berth.v1.AgentSecretsService/GetTaskSecrets"),
            Access::Agent
        );
        assert_eq!(
            classify("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            Access::Schema
        );
        assert_eq!(
            classify("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"),
            Access::Schema
        );
        assert_eq!(
            classify("/grpc.reflection.v1.ServerReflection/Other"),
            Access::Write
        );
        assert!(!audited(
            Access::Schema,
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        ));
        assert_eq!(classify("/something.Else/Whatever"), Access::Write);
        assert_eq!(classify(""), Access::Write);
    }

    #[test]
    fn metrics_label_api_methods_by_name_and_anything_else_as_unknown() {
        assert_eq!(
            method_label("/berth.v1.TaskService/RunTask"),
            "TaskService/RunTask"
        );
        assert_eq!(
            method_label("/berth.v1.TaskDefinitionService/DescribeTaskDefinition"),
            "TaskDefinitionService/DescribeTaskDefinition"
        );
        assert_eq!(
            method_label("/berth.v1.RaftService/Pipeline"),
            "RaftService/Pipeline"
        );
        assert_eq!(
            method_label("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            "ServerReflection/ServerReflectionInfo"
        );
        assert_eq!(method_label("/downloads/berth-agent"), "downloads");
        // Any path reaches the server; none may add a series of its own.
        assert_eq!(
            method_label("/berth.v1.TaskService/NoSuchMethod"),
            "unknown"
        );
        assert_eq!(method_label("/berth.v1.NoSuchService/RunTask"), "unknown");
        assert_eq!(method_label("/x0123456789"), "unknown");
        assert_eq!(method_label(""), "unknown");
    }
}
