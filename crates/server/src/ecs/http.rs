//! The ECS endpoint's HTTP side (`berthd --ecs-listen`): HTTPS with the
//! cluster's server certificate (plain HTTP only on a loopback address),
//! `POST /` with `X-Amz-Target`, AWS Signature Version 4 checked against
//! Berth's AWS-format API tokens, the same roles as the gRPC API, and the
//! same audit: a call that becomes a command is recorded in the replicated
//! log, one refused before that in this server's local audit file.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_ecs::arn::Scope;
use berth_ecs::error::{EcsError, ErrorType};
use berth_sigv4::{Authorization, SigV4Error};
use berth_types::journal::{Actor, Principal};
use berth_types::Role;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use super::{kind, EcsApi, Kind, TARGET_PREFIX};
use crate::api::now_ms;
use crate::audit::{CallContext, LocalAudit, LocalRecord};
use crate::node::BerthNode;
use crate::tls::SharedPki;

/// The largest request body read (a RegisterTaskDefinition with many
/// containers is tens of KiB).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Connections served at once; more wait to be accepted (the API port's
/// own limits leave this endpoint alone).
const MAX_CONNECTIONS: usize = 1024;

/// How long a client may take to send a request's headers, and then its
/// body: a slow client holds a connection for no longer.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// The service name SigV4 credential scopes must carry.
const SIGNING_SERVICE: &str = "ecs";

const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// Everything the endpoint needs.
pub struct EcsEndpoint {
    pub api: EcsApi,
    pub node: BerthNode,
    pub pki: Arc<SharedPki>,
    pub audit: Arc<LocalAudit>,
    /// `berthd dev --ecs-insecure-accept-any-signature`: any well-formed signature
    /// from a loopback client is taken as an admin's. Never on a real
    /// cluster.
    pub accept_any_signature: bool,
}

/// A refusal: the AWS error type, its HTTP status and message.
struct Refusal {
    status: u16,
    aws_type: &'static str,
    message: String,
}

impl From<EcsError> for Refusal {
    fn from(e: EcsError) -> Self {
        Self {
            status: e.kind.http_status(),
            aws_type: e.kind.name(),
            message: e.message,
        }
    }
}

impl From<SigV4Error> for Refusal {
    fn from(e: SigV4Error) -> Self {
        Self {
            status: e.http_status(),
            aws_type: e.aws_type(),
            message: e.to_string(),
        }
    }
}

impl Refusal {
    fn new(status: u16, aws_type: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            aws_type,
            message: message.into(),
        }
    }

    fn body(&self) -> String {
        serde_json::json!({ "__type": self.aws_type, "message": self.message }).to_string()
    }
}

/// Who signed a request.
struct Signer {
    token_id: String,
    role: Role,
    region: String,
}

/// Serves the endpoint on `listener` until the process ends: TLS when
/// `acceptors` is given, plain HTTP otherwise (the caller allows that on
/// loopback only).
pub fn spawn(
    endpoint: Arc<EcsEndpoint>,
    listener: TcpListener,
    acceptors: Option<tokio::sync::watch::Receiver<TlsAcceptor>>,
    handshake_timeout: Duration,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    match acceptors {
        Some(acceptors) => {
            let mut incoming = crate::limits::tls_incoming(listener, acceptors, handshake_timeout);
            tokio::spawn(async move {
                use tokio_stream::StreamExt;
                loop {
                    let Ok(slot) = slots.clone().acquire_owned().await else {
                        return;
                    };
                    let Some(Ok(stream)) = incoming.next().await else {
                        return;
                    };
                    let remote = stream.get_ref().0.peer_addr().ok();
                    serve_connection(endpoint.clone(), stream, remote, slot);
                }
            });
        }
        None => {
            tokio::spawn(async move {
                loop {
                    let Ok(slot) = slots.clone().acquire_owned().await else {
                        return;
                    };
                    match listener.accept().await {
                        Ok((stream, remote)) => {
                            let _ = stream.set_nodelay(true);
                            serve_connection(endpoint.clone(), stream, Some(remote), slot);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "ECS endpoint: accepting a connection failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            });
        }
    }
}

fn serve_connection<S>(
    endpoint: Arc<EcsEndpoint>,
    stream: S,
    remote: Option<SocketAddr>,
    slot: tokio::sync::OwnedSemaphorePermit,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let _slot = slot;
        let service = hyper::service::service_fn(move |request| {
            let endpoint = endpoint.clone();
            async move { Ok::<_, Infallible>(endpoint.handle(request, remote).await) }
        });
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT);
        builder
            .http2()
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(Some(Duration::from_secs(30)));
        if let Err(e) = builder
            .serve_connection(TokioIo::new(stream), service)
            .await
        {
            tracing::debug!(error = %e, "ECS endpoint: connection ended with an error");
        }
    });
}

fn respond(status: u16, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(CONTENT_TYPE),
    );
    if let Ok(id) = HeaderValue::from_str(&request_id()) {
        headers.insert("x-amzn-requestid", id);
    }
    response
}

/// A request id in the form AWS's answers carry (the SDKs log it).
fn request_id() -> String {
    let hex = berth_pki::random_hex(16);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

impl EcsEndpoint {
    async fn handle(
        &self,
        request: Request<Incoming>,
        remote: Option<SocketAddr>,
    ) -> Response<Full<Bytes>> {
        let started = Instant::now();
        let operation = request
            .headers()
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .and_then(|t| t.strip_prefix(TARGET_PREFIX))
            .unwrap_or_default()
            .to_string();
        let span = tracing::info_span!("ecs", operation = %operation, peer = ?remote);
        let (status, body) = async {
            match self.serve(request, &operation, remote).await {
                Ok(value) => (200, value.to_string()),
                Err(refusal) => {
                    tracing::info!(
                        status = refusal.status,
                        error = refusal.aws_type,
                        message = %refusal.message,
                        "ECS call refused"
                    );
                    (refusal.status, refusal.body())
                }
            }
        }
        .instrument(span)
        .await;
        let code = if status == 200 {
            "Ok".to_string()
        } else {
            status.to_string()
        };
        // Only names ECS has: the target is the caller's text, and every
        // label value would be a series of its own.
        let label = if kind(&operation).is_some() {
            format!("ecs.{operation}")
        } else {
            "ecs.unknown".to_string()
        };
        self.node
            .server_metrics()
            .api_call(&label, &code, started.elapsed().as_secs_f64());
        respond(status, body)
    }

    async fn serve(
        &self,
        request: Request<Incoming>,
        operation: &str,
        remote: Option<SocketAddr>,
    ) -> Result<serde_json::Value, Refusal> {
        let (parts, body) = request.into_parts();
        if parts.method != Method::POST || parts.uri.path() != "/" {
            return Err(Refusal::new(
                404,
                "UnknownOperationException",
                "the ECS API is POST / with an X-Amz-Target header (use the aws CLI or an AWS SDK with --endpoint-url)",
            ));
        }
        // Nothing is read from a caller that did not even try to sign.
        if !parts.headers.contains_key(http::header::AUTHORIZATION) {
            return Err(SigV4Error::MissingAuthentication.into());
        }
        let collected =
            tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY_BYTES).collect())
                .await
                .map_err(|_| {
                    Refusal::new(
                        408,
                        "RequestTimeoutException",
                        format!(
                            "the request body did not arrive within {} s",
                            BODY_TIMEOUT.as_secs()
                        ),
                    )
                })?;
        let body = collected
            .map_err(|e| {
                Refusal::new(
                    413,
                    "SerializationException",
                    format!(
                        "the request body could not be read or is over {MAX_BODY_BYTES} bytes: {e}"
                    ),
                )
            })?
            .to_bytes();
        let mut headers: Vec<(String, String)> = parts
            .headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_string(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        // HTTP/2 carries the host as the `:authority` pseudo-header, which
        // hyper puts in the URI; SigV4 signs it as `host`.
        if !parts.headers.contains_key(http::header::HOST) {
            if let Some(authority) = parts.uri.authority() {
                headers.push(("host".to_string(), authority.to_string()));
            }
        }
        let signed = berth_sigv4::Request {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or_default(),
            headers: &headers,
            body: &body,
        };
        let audited = !matches!(kind(operation), Some(Kind::Supported(Role::Readonly)));
        let peer = remote.map(|r| r.to_string()).unwrap_or_default();
        let actor_of = |principal: Principal| Actor {
            principal,
            operation: operation.to_string(),
            peer: peer.clone(),
        };
        let signer = match self.authenticate(&signed, remote).await {
            Ok(signer) => signer,
            Err(refusal) => {
                if audited {
                    let claimed = Authorization::parse(&signed, SIGNING_SERVICE, now_secs())
                        .map(|a| format!("token:{}", a.credential.access_key_id))
                        .unwrap_or_default();
                    self.record(actor_of(Principal::Anonymous), claimed, &refusal);
                }
                return Err(refusal);
            }
        };
        let principal = Principal::Token {
            id: signer.token_id.clone(),
            role: signer.role,
        };
        let needed = match kind(operation) {
            None => {
                let refusal = Refusal::from(EcsError::new(
                    ErrorType::UnknownOperation,
                    if operation.is_empty() {
                        format!("no operation: send X-Amz-Target: {TARGET_PREFIX}OPERATION")
                    } else {
                        format!("{operation} is not an ECS operation")
                    },
                ));
                self.record(actor_of(principal), String::new(), &refusal);
                return Err(refusal);
            }
            Some(Kind::Unsupported(instead)) => {
                let refusal = Refusal::from(EcsError::new(
                    ErrorType::UnsupportedFeature,
                    format!("{operation} is not supported by Berth: {instead}"),
                ));
                self.record(actor_of(principal), String::new(), &refusal);
                return Err(refusal);
            }
            Some(Kind::Supported(role)) => role,
        };
        if !signer.role.grants(needed) {
            let refusal = Refusal::from(EcsError::new(
                ErrorType::AccessDenied,
                format!(
                    "access key {} is {}; {operation} changes state and needs an admin key (berth auth token create --role admin --format aws)",
                    signer.token_id,
                    signer.role.as_str()
                ),
            ));
            if audited {
                self.record(actor_of(principal), String::new(), &refusal);
            }
            return Err(refusal);
        }
        let scope = Scope {
            region: signer.region,
            account: self.api.account_id.clone(),
        };
        // An AWS key stands for an IAM user of the account, named by its id
        // (what account settings are kept by).
        let caller = format!(
            "arn:aws:iam::{}:user/{}",
            self.api.account_id, signer.token_id
        );
        tracing::debug!(token_id = %signer.token_id, "ECS call authenticated");
        if !audited {
            return self
                .api
                .call(&scope, &caller, operation, &body)
                .await
                .map_err(Refusal::from);
        }
        let context = CallContext::new(actor_of(principal));
        let probe = context.clone();
        let actor = context.actor.clone();
        let result = context
            .scope(self.api.call(&scope, &caller, operation, &body))
            .await
            .map_err(Refusal::from);
        if !probe.proposed() {
            match &result {
                Ok(_) => self.record_accepted(actor),
                Err(refusal) => self.record(actor, String::new(), refusal),
            }
        }
        result
    }

    /// The signer of a request whose signature verifies with the secret of
    /// a usable AWS-format token.
    async fn authenticate(
        &self,
        request: &berth_sigv4::Request<'_>,
        remote: Option<SocketAddr>,
    ) -> Result<Signer, Refusal> {
        let authorization = Authorization::parse(request, SIGNING_SERVICE, now_secs())?;
        let key_id = authorization.credential.access_key_id.clone();
        let region = authorization.credential.region.clone();
        if self.accept_any_signature && remote.is_some_and(|r| r.ip().is_loopback()) {
            return Ok(Signer {
                token_id: key_id,
                role: Role::Admin,
                region,
            });
        }
        // A key revoked anywhere is refused here once that is acknowledged.
        if !self.node.can_read_locally() {
            self.node.read_barrier().await.map_err(|e| {
                Refusal::new(
                    500,
                    "ServerException",
                    format!("cannot check the access key now: {e}; retry"),
                )
            })?;
        }
        let token = {
            let applied = self.node.state().read();
            applied.state.api_token(&key_id).cloned()
        };
        let Some(token) = token.filter(|t| t.is_aws()) else {
            return Err(SigV4Error::UnrecognizedClient.into());
        };
        let sealed = token
            .aws_secret
            .as_ref()
            .ok_or(SigV4Error::UnrecognizedClient)?;
        let data_key = self.pki.current().data_key.clone().ok_or_else(|| {
            Refusal::new(
                500,
                "ServerException",
                "this server has no data key, so it cannot check AWS signatures; ask the operator to run `berthd pki issue` for it again",
            )
        })?;
        let secret = data_key
            .open(
                &berth_types::aws_key_seal_name(&key_id),
                &sealed.nonce,
                &sealed.ciphertext,
            )
            .map_err(|e| {
                tracing::error!(token_id = %key_id, error = %e, "cannot open an AWS access key's secret");
                Refusal::new(
                    500,
                    "ServerException",
                    "this server's data key does not open this access key; ask the operator to check the data key ring (berthd pki data-key show)",
                )
            })?;
        let secret = String::from_utf8(secret.to_vec()).map_err(|_| {
            Refusal::new(
                500,
                "ServerException",
                "a stored secret access key is not text",
            )
        })?;
        // Only a caller who holds the secret learns whether the key is
        // revoked or expired, as with bearer tokens.
        authorization.verify(request, &secret)?;
        if token.revoked_at_ms.is_some() {
            return Err(Refusal::new(
                400,
                "UnrecognizedClientException",
                format!("access key {key_id} has been revoked"),
            ));
        }
        if !token.is_usable(now_ms()) {
            return Err(Refusal::new(
                400,
                "ExpiredTokenException",
                format!("access key {key_id} has expired; create another with berth auth token create --format aws"),
            ));
        }
        Ok(Signer {
            token_id: token.id,
            role: token.role,
            region,
        })
    }

    fn record(&self, actor: Actor, claimed: String, refusal: &Refusal) {
        self.audit.append(&LocalRecord {
            at_ms: now_ms(),
            server_id: self.node.id(),
            actor,
            claimed,
            outcome: "refused".into(),
            code: refusal.aws_type.to_string(),
            reason: refusal.message.clone(),
        });
    }

    fn record_accepted(&self, actor: Actor) {
        self.audit.append(&LocalRecord {
            at_ms: now_ms(),
            server_id: self.node.id(),
            actor,
            claimed: String::new(),
            outcome: "accepted".into(),
            code: String::new(),
            reason: String::new(),
        });
    }
}

fn now_secs() -> i64 {
    now_ms().div_euclid(1000)
}
