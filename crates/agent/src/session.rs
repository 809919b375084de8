//! The agent's session with the control plane: one long-lived gRPC stream
//! (`AgentSessionService.Session`) to the leader, over mutual TLS with the
//! instance certificate.
//!
//! - The agent says hello with everything it knows (resources, attributes,
//!   every task's current report, the last assignment sequence applied).
//!   Reports are idempotent on the server, so saying it all again on every
//!   reconnect is how nothing is ever lost.
//! - The server answers with settings, then the complete assignment set,
//!   then changes; the agent acknowledges each set once the runner has it on
//!   disk.
//! - The agent sends heartbeats, status changes (batched for a moment so a
//!   burst becomes one message) and log data the server asked for.
//!
//! A follower answers with a redirect to the leader; any failure reconnects,
//! forever, rotating through the configured servers with capped backoff.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use berth_client::backoff::Backoff;
use berth_client::join::AgentIdentity;
use berth_proto::convert;
use berth_proto::pb;
use berth_proto::pb::agent_message::Body as Out;
use berth_proto::pb::agent_session_service_client::AgentSessionServiceClient;
use berth_proto::pb::server_message::Body as In;
use berth_proto::tls::client_tls;
use berth_types::error_chain;
use futures::{Stream, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;
use tonic::transport::Endpoint;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::host::HostInfo;
use crate::runner::{RunnerError, RunnerHandle, StatusBoard};
use crate::runtime::{LogLine, LogStream, Runtime};

/// Messages waiting to go out; senders wait when it is full.
const OUT_QUEUE: usize = 64;
/// How long status changes are collected before they go out together.
const BATCH_WINDOW: Duration = Duration::from_millis(50);
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
/// A server that neither redirects nor sends settings by then is stuck.
const SETTINGS_TIMEOUT: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest message the agent accepts from the server: a complete
/// assignment set for every task an instance can hold fits well inside.
const MAX_SERVER_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
const NO_LEADER_RETRY: Duration = Duration::from_millis(500);
/// Redirects in a row before backing off (followers that disagree about
/// the leader during an election).
const MAX_REDIRECTS: u32 = 5;
const MAX_LOG_STREAMS: usize = 16;
const LOG_CHUNK_BYTES: usize = 32 * 1024;
/// What a `tail` may hold in memory, whatever it asks for.
const MAX_TAIL_LINES: u32 = 10_000;
const MAX_TAIL_BYTES: usize = 4 << 20;

#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Control-plane servers, `HOST:PORT` or `https://HOST:PORT`.
    pub endpoints: Vec<String>,
    pub host: HostInfo,
    pub agent_version: String,
    /// Ready while a session with the leader is up (the health endpoint).
    pub health: berth_daemon::HealthState,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("invalid server address {address:?}: {reason}")]
    InvalidAddress { address: String, reason: String },
    #[error("cannot connect to {address}: {reason}")]
    Connect { address: String, reason: String },
    #[error("the server refused the session: {code:?}: {message}")]
    Refused { code: tonic::Code, message: String },
    #[error("the session broke: {code:?}: {message}")]
    Stream { code: tonic::Code, message: String },
    #[error("the server sent neither settings nor a redirect within {0:?}")]
    NoSettings(Duration),
    #[error("the outgoing stream closed")]
    OutboundClosed,
    #[error(transparent)]
    Runner(#[from] RunnerError),
}

/// How a conversation ended without an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A follower named the leader.
    Redirect(String),
    /// A follower knows no leader yet.
    NoLeader,
    /// The server ended the stream.
    Closed,
    /// The certificate is about to expire or the identity changed:
    /// reconnect with the current one.
    Renew,
}

/// Keeps a session to the leader until dropped. Waits for the first
/// identity; each connection uses the identity current at that moment.
pub async fn run<R: Runtime>(
    config: SessionConfig,
    mut identity: watch::Receiver<Option<AgentIdentity>>,
    runner: RunnerHandle<R>,
) {
    if config.endpoints.is_empty() {
        warn!("no control-plane server configured; no session");
        return;
    }
    let mut rng = StdRng::from_entropy();
    let mut backoff = reconnect_backoff();
    let mut next = 0usize;
    let mut redirect: Option<String> = None;
    let mut hops = 0u32;
    loop {
        let Ok(current) = identity.wait_for(Option::is_some).await.map(|i| i.clone()) else {
            // The identity loop is gone: the agent is exiting.
            return;
        };
        let Some(current) = current else { continue };
        let from_list = redirect.is_none();
        let target = redirect
            .take()
            .unwrap_or_else(|| config.endpoints[next % config.endpoints.len()].clone());
        let mut reached_leader = false;
        let span = info_span!("session", server = %target, instance_id = %current.instance_id);
        let outcome = attempt(
            &config,
            &target,
            &current,
            &mut identity,
            &runner,
            &mut reached_leader,
        )
        .instrument(span)
        .await;
        config.health.set_ready(false);
        if reached_leader {
            backoff.reset();
            hops = 0;
        }
        let pause = match outcome {
            Ok(Outcome::Redirect(leader)) => {
                hops += 1;
                info!(server = %target, leader = %leader, "redirected to the leader");
                if hops > MAX_REDIRECTS {
                    hops = 0;
                    Some(backoff.next(&mut rng))
                } else {
                    redirect = Some(leader);
                    None
                }
            }
            Ok(Outcome::NoLeader) => {
                info!(server = %target, "no leader yet; asking again shortly");
                redirect = Some(target);
                Some(NO_LEADER_RETRY.mul_f64(rng.gen_range(0.8..=1.2)))
            }
            Ok(Outcome::Closed) if reached_leader => {
                info!(server = %target, "the server ended the session; reconnecting");
                redirect = Some(target);
                Some(NO_LEADER_RETRY.mul_f64(rng.gen_range(0.0..=1.0)))
            }
            Ok(Outcome::Closed) => {
                warn!(server = %target, "the server ended the session before it started");
                if from_list {
                    next += 1;
                }
                Some(backoff.next(&mut rng))
            }
            Ok(Outcome::Renew) => {
                info!(server = %target, "reconnecting with the current certificate");
                redirect = Some(target);
                None
            }
            Err(e) => {
                let wait = backoff.next(&mut rng);
                warn!(server = %target, error = %e, retry_in_ms = wait.as_millis() as u64, "session failed");
                if from_list {
                    next += 1;
                }
                Some(wait)
            }
        };
        if let Some(pause) = pause {
            tokio::time::sleep(pause).await;
        }
    }
}

/// One connection: connect, hello, converse. The session transport
/// (`berth_wire`) when the server offers it, else the gRPC session (a
/// server of an earlier release).
async fn attempt<R: Runtime>(
    config: &SessionConfig,
    target: &str,
    identity: &AgentIdentity,
    identity_rx: &mut watch::Receiver<Option<AgentIdentity>>,
    runner: &RunnerHandle<R>,
    reached_leader: &mut bool,
) -> Result<Outcome, SessionError> {
    let (authority, host) = parse_address(target)?;
    let connect_failed = |reason: String| SessionError::Connect {
        address: target.to_string(),
        reason,
    };
    let tls = berth_wire::client_config(
        &identity.ca_pem,
        Some((&identity.cert_pem, &identity.key_pem)),
    )
    .map_err(|e| connect_failed(e.to_string()))?;
    let connection =
        tokio::time::timeout(CONNECT_TIMEOUT, berth_wire::connect(&authority, &host, tls))
            .await
            .map_err(|_| connect_failed(format!("no connection within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| match e {
                berth_wire::WireError::Connect { reason, .. } => connect_failed(reason),
                other => connect_failed(other.to_string()),
            })?;
    let (tx, rx) = mpsc::channel(OUT_QUEUE);
    let hello = hello(config, &identity.instance_id, runner);
    let said: Vec<pb::TaskReport> = match &hello.body {
        Some(Out::Hello(h)) => h.running.clone(),
        _ => Vec::new(),
    };
    // Queued before the call: the server reads the hello before it answers.
    tx.send(hello)
        .await
        .map_err(|_| SessionError::OutboundClosed)?;
    let outbound = tokio_stream::wrappers::ReceiverStream::new(rx);
    let inbound = if connection.speaks_sessions() {
        connection
            .start(outbound, MAX_SERVER_MESSAGE_BYTES)
            .into_stream()
    } else {
        drop(connection);
        debug!(server = %target, "the server has no session transport; using the gRPC session");
        grpc_session(target, identity, outbound).await?
    };
    runner.note_sent(&said);
    debug!(tasks = said.len(), "hello sent");
    let expires_in = u64::try_from(identity.local_expires_at_ms - berth_client::time::now_ms())
        .ok()
        .map(Duration::from_millis);
    converse(
        inbound,
        tx,
        runner,
        identity_rx,
        &identity.instance_id,
        expires_in,
        reached_leader,
        &config.health,
    )
    .await
}

/// The server's messages of a session.
type ServerMessages =
    std::pin::Pin<Box<dyn Stream<Item = Result<pb::ServerMessage, tonic::Status>> + Send>>;

/// Opens the session as a gRPC call, for servers without the session
/// transport.
async fn grpc_session(
    target: &str,
    identity: &AgentIdentity,
    outbound: tokio_stream::wrappers::ReceiverStream<pb::AgentMessage>,
) -> Result<ServerMessages, SessionError> {
    let endpoint = endpoint(target, identity)?;
    let channel = tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect())
        .await
        .map_err(|_| SessionError::Connect {
            address: target.to_string(),
            reason: format!("no connection within {CONNECT_TIMEOUT:?}"),
        })?
        .map_err(|e| SessionError::Connect {
            address: target.to_string(),
            reason: error_chain(&e),
        })?;
    let mut client =
        AgentSessionServiceClient::new(channel).max_decoding_message_size(MAX_SERVER_MESSAGE_BYTES);
    let response = tokio::time::timeout(SETTINGS_TIMEOUT, client.session(outbound))
        .await
        .map_err(|_| SessionError::NoSettings(SETTINGS_TIMEOUT))?
        .map_err(|s| SessionError::Refused {
            code: s.code(),
            message: s.message().to_string(),
        })?;
    Ok(Box::pin(response.into_inner()))
}

/// The hello: who, what it has, and every task it knows.
pub(crate) fn hello<R: Runtime>(
    config: &SessionConfig,
    instance_id: &str,
    runner: &RunnerHandle<R>,
) -> pb::AgentMessage {
    let board = runner.board();
    let reserved = board.reserved();
    let available = |total: u32, used: u64| {
        u32::try_from(u64::from(total).saturating_sub(used)).unwrap_or(total)
    };
    pb::AgentMessage {
        body: Some(Out::Hello(pb::AgentHello {
            instance_id: instance_id.to_string(),
            agent_version: config.agent_version.clone(),
            cpu_total: config.host.cpu_total,
            memory_total_mib: config.host.memory_total_mib,
            cpu_available: available(config.host.cpu_total, reserved.cpu),
            memory_available_mib: available(config.host.memory_total_mib, reserved.memory_mib),
            attributes: convert::attributes_to_wire(&config.host.attributes),
            running: board.all_reports(),
            last_sequence: runner.last_sequence(),
            // Read at every (re)connection: what was bound since is seen
            // at the next one.
            host_ports: crate::hostports::bound_ports(),
        })),
    }
}

fn message(body: Out) -> pb::AgentMessage {
    pb::AgentMessage { body: Some(body) }
}

/// Serves one established stream until it ends. The hello has been sent.
// The arguments are the stream's ends and the session's shared state; a
// struct holding them for one call would only rename them.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn converse<R, S>(
    mut inbound: S,
    out: mpsc::Sender<pb::AgentMessage>,
    runner: &RunnerHandle<R>,
    identity_rx: &mut watch::Receiver<Option<AgentIdentity>>,
    instance_id: &str,
    expires_in: Option<Duration>,
    reached_leader: &mut bool,
    health: &berth_daemon::HealthState,
) -> Result<Outcome, SessionError>
where
    R: Runtime,
    S: Stream<Item = Result<pb::ServerMessage, tonic::Status>> + Unpin,
{
    let mut rng = StdRng::from_entropy();
    let started = Instant::now();
    // Far enough never to fire; a disabled branch still needs a deadline.
    let never = started + Duration::from_secs(86_400 * 365);
    let settings_deadline = started + SETTINGS_TIMEOUT;
    let expiry = expires_in.map(|d| started + d);
    let mut heartbeat: Option<Duration> = None;
    let mut next_heartbeat = never;
    let mut batch_at: Option<Instant> = None;
    // A stored assignment set not yet acknowledged: it rides on the status
    // batch the set usually causes within the window, or goes alone.
    let mut unacked: Option<u64> = None;
    let mut identity_open = true;
    let mut logs = LogStreams::default();
    let send = |msg: pb::AgentMessage| {
        let out = out.clone();
        async move {
            out.send(msg)
                .await
                .map_err(|_| SessionError::OutboundClosed)
        }
    };
    loop {
        tokio::select! {
            msg = inbound.next() => {
                let body = match msg {
                    None => return Ok(Outcome::Closed),
                    Some(Err(s)) => {
                        return Err(SessionError::Stream { code: s.code(), message: s.message().to_string() })
                    }
                    Some(Ok(pb::ServerMessage { body: None })) => continue,
                    Some(Ok(pb::ServerMessage { body: Some(body) })) => body,
                };
                match body {
                    In::Settings(s) => {
                        let period = match s.heartbeat_period_ms {
                            0 => DEFAULT_HEARTBEAT,
                            ms => Duration::from_millis(u64::from(ms)),
                        };
                        if !*reached_leader {
                            info!(heartbeat_ms = period.as_millis() as u64, "session established with the leader");
                        }
                        *reached_leader = true;
                        health.set_ready(true);
                        heartbeat = Some(period);
                        next_heartbeat = Instant::now() + jitter(period, &mut rng);
                    }
                    In::Assignments(set) => {
                        let sequence = set.sequence;
                        debug!(sequence, complete = set.complete, tasks = set.assignments.len(), "assignments");
                        runner.apply(set).await?;
                        unacked = Some(sequence);
                        batch_at.get_or_insert_with(|| Instant::now() + BATCH_WINDOW);
                    }
                    In::Redirect(r) => {
                        let leader = r.leader_address.trim();
                        return Ok(if leader.is_empty() {
                            Outcome::NoLeader
                        } else {
                            Outcome::Redirect(leader.to_string())
                        });
                    }
                    In::LogRequest(req) => logs.start(req, runner, out.clone()),
                    In::LogCancel(c) => logs.cancel(c.request_id),
                    // `berth_wire::Inbound` reports it as an error already;
                    // here for a stream that passes it on as a message.
                    In::End(end) => {
                        return Err(SessionError::Stream { code: tonic::Code::from(end.code), message: end.message })
                    }
                }
            }
            () = tokio::time::sleep_until(next_heartbeat), if heartbeat.is_some() => {
                let period = heartbeat.unwrap_or(DEFAULT_HEARTBEAT);
                send(message(Out::Heartbeat(pb::Heartbeat { sent_at_ms: berth_client::time::now_ms() }))).await?;
                if let Some(report) = crate::exporter::metrics().take_stats_report() {
                    send(message(Out::Stats(report))).await?;
                }
                next_heartbeat = Instant::now() + jitter(period, &mut rng);
            }
            () = tokio::time::sleep_until(settings_deadline), if heartbeat.is_none() => {
                return Err(SessionError::NoSettings(SETTINGS_TIMEOUT));
            }
            () = runner.board().changed(), if batch_at.is_none() => {
                batch_at = Some(Instant::now() + BATCH_WINDOW);
            }
            () = tokio::time::sleep_until(batch_at.unwrap_or(never)), if batch_at.is_some() => {
                batch_at = None;
                let reports = runner.board().take_pending();
                if !reports.is_empty() {
                    debug!(reports = reports.len(), "status batch");
                    let acked_sequence = unacked.take().unwrap_or(0);
                    send(message(Out::Status(pb::StatusBatch { reports: reports.clone(), acked_sequence }))).await?;
                    runner.note_sent(&reports);
                } else if let Some(sequence) = unacked.take() {
                    send(message(Out::Ack(pb::Ack { sequence }))).await?;
                }
            }
            () = tokio::time::sleep_until(expiry.unwrap_or(never)), if expiry.is_some() => {
                return Ok(Outcome::Renew);
            }
            changed = identity_rx.changed(), if identity_open => match changed {
                Err(_) => identity_open = false,
                Ok(()) => {
                    let now = identity_rx.borrow_and_update().as_ref().map(|i| i.instance_id.clone());
                    if now.as_deref().is_some_and(|id| id != instance_id) {
                        return Ok(Outcome::Renew);
                    }
                }
            },
            Some(done) = logs.tasks.join_next(), if !logs.tasks.is_empty() => logs.finished(done),
        }
    }
}

fn jitter(period: Duration, rng: &mut impl Rng) -> Duration {
    period.mul_f64(rng.gen_range(0.9..=1.1))
}

/// How reconnecting backs off: from 250 ms, capped at 5 s, each wait drawn
/// from the upper half of its step so agents cut off together spread out.
fn reconnect_backoff() -> Backoff {
    Backoff::new(
        Duration::from_millis(250),
        Duration::from_secs(5),
        0.5..=1.0,
    )
}

/// `HOST:PORT` or `https://HOST:PORT` as (authority, TLS server name).
pub(crate) fn parse_address(address: &str) -> Result<(String, String), SessionError> {
    let invalid = |reason: &str| SessionError::InvalidAddress {
        address: address.to_string(),
        reason: reason.to_string(),
    };
    let text = address.trim();
    let rest = match text.split_once("://") {
        None => text,
        Some(("https", rest)) => rest,
        Some(_) => {
            return Err(invalid(
                "the session needs mutual TLS; use HOST:PORT or https://HOST:PORT",
            ))
        }
    };
    let rest = rest.trim_end_matches('/');
    let authority: http::uri::Authority = rest
        .parse()
        .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
    if authority.port_u16().is_none() {
        return Err(invalid("a port is required, e.g. 10.0.0.1:7400"));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if host.is_empty() {
        return Err(invalid("the host is empty"));
    }
    Ok((authority.to_string(), host))
}

/// A channel endpoint presenting the instance certificate and trusting only
/// the cluster CA. No request timeout: the stream lives for hours; HTTP/2
/// pings find a dead peer instead.
pub(crate) fn endpoint(address: &str, identity: &AgentIdentity) -> Result<Endpoint, SessionError> {
    let (authority, host) = parse_address(address)?;
    let invalid = |e: tonic::transport::Error| SessionError::InvalidAddress {
        address: address.to_string(),
        reason: error_chain(&e),
    };
    let tls = client_tls(
        &identity.ca_pem,
        Some((&identity.cert_pem, &identity.key_pem)),
    )
    .domain_name(host);
    Ok(Endpoint::from_shared(format!("https://{authority}"))
        .map_err(invalid)?
        .tls_config(tls)
        .map_err(invalid)?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .tcp_keepalive(Some(Duration::from_secs(30)))
        .http2_keep_alive_interval(Duration::from_secs(15))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true))
}

// ------------------------------------------------------------------- logs

/// The log requests being served on this stream; they end with it.
#[derive(Default)]
struct LogStreams {
    tasks: JoinSet<u64>,
    running: HashMap<u64, AbortHandle>,
}

impl LogStreams {
    fn start<R: Runtime>(
        &mut self,
        req: pb::LogRequest,
        runner: &RunnerHandle<R>,
        out: mpsc::Sender<pb::AgentMessage>,
    ) {
        let id = req.request_id;
        self.cancel(id);
        if self.running.len() >= MAX_LOG_STREAMS {
            let handle = self.tasks.spawn(async move {
                let error = format!("this agent already serves {MAX_LOG_STREAMS} log streams");
                let _ = out.send(log_data(id, None, Vec::new(), true, error)).await;
                id
            });
            self.running.insert(id, handle);
            return;
        }
        let runtime = runner.runtime().clone();
        let board = runner.board().clone();
        let span =
            info_span!("logs", request_id = id, task_id = %req.task_id, container = %req.container);
        let handle = self
            .tasks
            .spawn(serve_logs(runtime, board, req, out).instrument(span));
        self.running.insert(id, handle);
    }

    fn cancel(&mut self, id: u64) {
        if let Some(handle) = self.running.remove(&id) {
            handle.abort();
        }
    }

    fn finished(&mut self, done: Result<u64, tokio::task::JoinError>) {
        if let Ok(id) = done {
            self.running.remove(&id);
        }
    }
}

fn log_data(
    request_id: u64,
    stream: Option<LogStream>,
    data: Vec<u8>,
    end: bool,
    error: String,
) -> pb::AgentMessage {
    message(Out::Log(pb::LogData {
        request_id,
        stream: match stream {
            Some(LogStream::Stdout) => "stdout".into(),
            Some(LogStream::Stderr) => "stderr".into(),
            None => String::new(),
        },
        data,
        end,
        error,
    }))
}

async fn serve_logs<R: Runtime>(
    runtime: Arc<R>,
    board: StatusBoard,
    req: pb::LogRequest,
    out: mpsc::Sender<pb::AgentMessage>,
) -> u64 {
    let id = req.request_id;
    let mut chunks = Chunker::new(id, out.clone());
    let result = stream_logs(&*runtime, &board, &req, &mut chunks).await;
    let error = match result.and(chunks.flush().await) {
        Ok(()) => String::new(),
        Err(LogError::Closed) => return id,
        Err(LogError::Failed(e)) => {
            debug!(error = %e, "log request failed");
            e
        }
    };
    let _ = out.send(log_data(id, None, Vec::new(), true, error)).await;
    id
}

enum LogError {
    /// The session is gone; nobody to tell.
    Closed,
    Failed(String),
}

async fn stream_logs<R: Runtime>(
    runtime: &R,
    board: &StatusBoard,
    req: &pb::LogRequest,
    chunks: &mut Chunker,
) -> Result<(), LogError> {
    let failed = |e: &dyn std::fmt::Display| LogError::Failed(e.to_string());
    let container_id = board
        .container_id(&req.task_id, &req.container)
        .map_err(|e| failed(&e))?;
    let mut skip = 0usize;
    if req.tail > 0 {
        let lines = runtime
            .logs(&container_id, false)
            .await
            .map_err(|e| failed(&e))?;
        let (last, total) = last_lines(lines, req.tail.min(MAX_TAIL_LINES)).await?;
        for line in last {
            chunks.push(line).await?;
        }
        if !req.follow {
            return Ok(());
        }
        // The follow below reads from the top again; what was already sent
        // is skipped by count.
        skip = total;
    }
    let mut lines = runtime
        .logs(&container_id, req.follow)
        .await
        .map_err(|e| failed(&e))?
        .skip(skip)
        .ready_chunks(256);
    while let Some(batch) = lines.next().await {
        for line in batch {
            chunks.push(line.map_err(|e| failed(&e))?).await?;
        }
        // Whatever is ready goes out now, so a follow stays live.
        chunks.flush().await?;
    }
    Ok(())
}

/// The last `n` lines (bounded in bytes too) and how many lines there were.
async fn last_lines(
    mut lines: crate::runtime::LogLines,
    n: u32,
) -> Result<(VecDeque<LogLine>, usize), LogError> {
    let cap = usize::try_from(n).unwrap_or(usize::MAX);
    let mut kept: VecDeque<LogLine> = VecDeque::new();
    let mut bytes = 0usize;
    let mut total = 0usize;
    while let Some(line) = lines.next().await {
        let line = line.map_err(|e| LogError::Failed(e.to_string()))?;
        total += 1;
        bytes += line.line.len();
        kept.push_back(line);
        while kept.len() > cap || (bytes > MAX_TAIL_BYTES && kept.len() > 1) {
            if let Some(old) = kept.pop_front() {
                bytes -= old.line.len();
            }
        }
    }
    Ok((kept, total))
}

/// Packs consecutive lines of one stream into LogData messages of up to
/// `LOG_CHUNK_BYTES`.
struct Chunker {
    request_id: u64,
    out: mpsc::Sender<pb::AgentMessage>,
    stream: Option<LogStream>,
    data: Vec<u8>,
}

impl Chunker {
    fn new(request_id: u64, out: mpsc::Sender<pb::AgentMessage>) -> Self {
        Chunker {
            request_id,
            out,
            stream: None,
            data: Vec::new(),
        }
    }

    async fn push(&mut self, line: LogLine) -> Result<(), LogError> {
        if self.stream != Some(line.stream)
            || self.data.len() + line.line.len() + 1 > LOG_CHUNK_BYTES
        {
            self.flush().await?;
        }
        self.stream = Some(line.stream);
        self.data.extend_from_slice(line.line.as_bytes());
        self.data.push(b'\n');
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), LogError> {
        if self.data.is_empty() {
            return Ok(());
        }
        let data = std::mem::take(&mut self.data);
        self.out
            .send(log_data(
                self.request_id,
                self.stream,
                data,
                false,
                String::new(),
            ))
            .await
            .map_err(|_| LogError::Closed)
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod transport_tests;
