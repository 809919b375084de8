//! Who may call what. A tower layer in front of every service derives the
//! caller from the TLS client certificate or the bearer token, never from a
//! request field, and refuses before any handler runs:
//!
//! | calls | caller must be |
//! | --- | --- |
//! | `RaftService/*` | a server of this cluster (certificate) |
//! | `AgentService/RegisterInstance` | anyone (the activation secret authenticates) |
//! | other `AgentService/*` | a registered, active instance (certificate) |
//! | `TaskService/GetTaskLogs` | an admin or logs token, or a server |
//! | `List*`, `Describe*`, `Get*` | an admin, logs or readonly token, or a server |
//! | everything else | an admin token, or a server (proxied calls) |

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use berth_pki::tokens::{hash_secret, hashes_equal, ApiTokenSecret};
use berth_pki::{PeerIdentity, Role as CertRole};
use berth_types::{InstanceStatus, Role};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::Status;

use crate::api::now_ms;
use crate::node::BerthNode;

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
        "berth.v1.AgentService" | "berth.v1.AgentSessionService" => Access::Agent,
        "berth.v1.TaskService" if method == "GetTaskLogs" => Access::Logs,
        _ if ["List", "Describe", "Get"]
            .iter()
            .any(|p| method.starts_with(p)) =>
        {
            Access::Read
        }
        _ => Access::Write,
    }
}

pub struct Authorizer {
    node: BerthNode,
    cluster_id: String,
}

impl Authorizer {
    pub fn new(node: BerthNode, cluster_id: String) -> Arc<Self> {
        Arc::new(Self { node, cluster_id })
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

    async fn authorize(&self, call: &CallInfo) -> Result<Caller, Status> {
        let access = classify(&call.path);
        let identity = self.peer_identity(call)?;
        match access {
            Access::Open => Ok(Caller::Anonymous),
            Access::RaftPeer => match identity.map(|i| i.role) {
                Some(CertRole::Server(id)) => Ok(Caller::Server(id)),
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
                    return Ok(Caller::Server(id));
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

    async fn check_token(&self, call: &CallInfo, needed: Role) -> Result<Caller, Status> {
        let header = call.authorization.as_ref().ok_or_else(|| {
            Status::unauthenticated("no API token: pass --token or set BERTH_TOKEN")
        })?;
        let text = header.strip_prefix("Bearer ").ok_or_else(|| {
            Status::unauthenticated("the authorization header is not `Bearer <token>`")
        })?;
        let invalid = || Status::unauthenticated("invalid API token");
        let presented = ApiTokenSecret::parse(text).ok_or_else(invalid)?;
        self.fresh().await?;
        let applied = self.node.state().read();
        let token = applied.state.api_token(&presented.id).ok_or_else(invalid)?;
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

    /// Makes sure revocations acknowledged anywhere are visible here.
    async fn fresh(&self) -> Result<(), Status> {
        if self.node.has_applied_own_term() {
            return Ok(());
        }
        self.node.read_barrier().await.map_err(Status::from)
    }
}

/// What authorization needs from a request, taken out before awaiting so
/// the request body need not be shared across threads.
struct CallInfo {
    path: String,
    authorization: Option<String>,
    peer_certs: Option<Arc<Vec<tokio_rustls::rustls::pki_types::CertificateDer<'static>>>>,
}

impl CallInfo {
    fn of<B>(request: &http::Request<B>) -> Self {
        Self {
            path: request.uri().path().to_string(),
            authorization: request
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            peer_certs: request
                .extensions()
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|info| info.peer_certs()),
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

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The ready service is the one to call; leave a fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let authorizer = self.authorizer.clone();
        let call = CallInfo::of(&request);
        Box::pin(async move {
            match authorizer.authorize(&call).await {
                Ok(caller) => {
                    request.extensions_mut().insert(caller);
                    inner.call(request).await
                }
                Err(status) => {
                    tracing::info!(path = %call.path, code = ?status.code(), reason = %status.message(), "call refused");
                    Ok(status.into_http())
                }
            }
        })
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
        assert_eq!(classify("/berth.v1.TaskService/GetTaskLogs"), Access::Logs);
        assert_eq!(classify("/berth.v1.TaskService/GetTask"), Access::Read);
        assert_eq!(classify("/something.Else/Whatever"), Access::Write);
        assert_eq!(classify(""), Access::Write);
    }
}
