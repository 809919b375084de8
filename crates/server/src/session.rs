//! Agent sessions: one long-lived stream per agent, held by the leader.
//!
//! Heartbeats stay in this process's memory; only transitions (connected,
//! status changes) become Raft commands. Assignments flow the other way: a
//! complete set when the session starts, then the tasks that changed, routed
//! here from the state machine's task events. Every message is idempotent,
//! so a reconnect (to this leader or the next) repeats nothing harmful.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_proto::pb;
use berth_proto::pb::agent_message::Body as AgentBody;
use berth_proto::pb::agent_session_service_server::AgentSessionService;
use berth_proto::pb::server_message::Body as ServerBody;
use berth_types::resources::Resources;
use berth_types::{
    limits, validate, Command, DesiredStatus, FieldError, State, StateEvent, Task, TaskReport,
    TaskStatus,
};
use tokio::sync::{mpsc, Notify};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Request, Response, Status, Streaming};

use crate::api::now_ms;
use crate::auth::Caller;
use crate::error::ServerError;
use crate::node::BerthNode;

/// How long an agent has to say hello after opening its stream.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Outbound messages queued per session before the sender waits.
const OUTBOUND_QUEUE: usize = 256;
/// Largest message an agent may send on its session; a bigger one ends the
/// session. A full status message (1,024 reports) stays well below it.
pub const MAX_AGENT_MESSAGE_BYTES: usize = 1024 * 1024;
/// Task reports an agent may send at once, and per second after that. An
/// honest agent reports a task's few transitions; one that sends more than
/// this is broken or hostile, and its session is cut off.
const REPORT_BURST: f64 = 4096.0;
const REPORTS_PER_SEC: f64 = 512.0;
/// Tasks with a report waiting to be written, across all sessions; at the
/// limit, sessions wait (their agents' streams are not read) until the
/// writer catches up.
const MAX_PENDING_REPORTS: usize = 100_000;
/// One ReportTaskStatus command at most this big (encoded), so that a
/// hello with many tasks becomes several commands, never one oversized write.
const REPORT_COMMAND_BYTES: usize = 512 * 1024;

#[derive(Debug, Clone, Copy)]
pub struct SessionConfig {
    /// Sent to agents; they heartbeat about this often.
    pub heartbeat: Duration,
    /// After a leader change, no instance is declared DISCONNECTED for this
    /// long: agents need time to find the new leader.
    pub grace: Duration,
}

impl SessionConfig {
    /// Missed for about three periods -> DISCONNECTED.
    pub fn disconnect_after(&self) -> Duration {
        self.heartbeat * 3
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(5),
            grace: Duration::from_secs(20),
        }
    }
}

/// A message queued for the agent. Boxed because a channel allocates its
/// first block of 32 slots when it is made and keeps it for the session's
/// life: 32 pointers per session instead of 32 `Status`-sized results
/// (about 6 KiB, times every connected instance on the leader).
type Queued = Box<Result<pb::ServerMessage, Status>>;

/// The sending side of a session's stream to its agent.
#[derive(Clone)]
struct Outbound(mpsc::Sender<Queued>);

/// The agent closed its session; the message was not queued.
struct SessionClosed;

impl Outbound {
    async fn send(&self, message: Result<pb::ServerMessage, Status>) -> Result<(), SessionClosed> {
        self.0
            .send(Box::new(message))
            .await
            .map_err(|_| SessionClosed)
    }

    /// Fails when the queue is full as well as when the session is closed.
    fn try_send(&self, message: Result<pb::ServerMessage, Status>) -> Result<(), SessionClosed> {
        self.0
            .try_send(Box::new(message))
            .map_err(|_| SessionClosed)
    }

    async fn closed(&self) {
        self.0.closed().await
    }
}

/// The receiving side, as the stream tonic sends to the agent.
pub struct OutboundStream(mpsc::Receiver<Queued>);

impl futures::Stream for OutboundStream {
    type Item = Result<pb::ServerMessage, Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0
            .poll_recv(cx)
            .map(|queued| queued.map(|message| *message))
    }
}

fn outbound_channel() -> (Outbound, OutboundStream) {
    let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
    (Outbound(tx), OutboundStream(rx))
}

/// Reports waiting for the report writer: the latest one per task, so an
/// agent that repeats itself adds nothing, however often it does.
#[derive(Default)]
struct PendingReports {
    /// Task id -> (instance id, the report to write).
    reports: Mutex<HashMap<String, (String, TaskReport)>>,
    /// Wakes the writer.
    queued: Notify,
    /// Wakes sessions waiting for room.
    drained: Notify,
}

impl PendingReports {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, TaskReport)>> {
        self.reports.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `news`, merging each with a pending report of the same task,
    /// and waits while the queue is full.
    async fn push(&self, instance_id: &str, news: Vec<TaskReport>) {
        let mut news = news.into_iter().peekable();
        while news.peek().is_some() {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            {
                let mut pending = self.lock();
                while let Some(report) = news.next_if(|r| {
                    pending.len() < MAX_PENDING_REPORTS || pending.contains_key(&r.task_id)
                }) {
                    let merged = match pending.remove(&report.task_id) {
                        Some((_, older)) => merge_reports(older, report),
                        None => report,
                    };
                    pending.insert(merged.task_id.clone(), (instance_id.to_string(), merged));
                }
            }
            self.queued.notify_one();
            if news.peek().is_some() {
                drained.await;
            }
        }
    }

    /// Whether the same report is already waiting to be written.
    fn holds(&self, report: &TaskReport) -> bool {
        self.lock()
            .get(&report.task_id)
            .is_some_and(|(_, pending)| pending == report)
    }
}

/// One report that says what two consecutive ones said: the furthest
/// status (statuses only move forward) and the latest containers.
fn merge_reports(older: TaskReport, newer: TaskReport) -> TaskReport {
    let containers = if newer.containers.is_empty() {
        older.containers.clone()
    } else {
        newer.containers.clone()
    };
    let ip = newer.ip.clone().or_else(|| older.ip.clone());
    let status_from = if newer.last_status >= older.last_status {
        newer
    } else {
        older
    };
    TaskReport {
        containers,
        ip,
        ..status_from
    }
}

/// Reports of one instance as ReportTaskStatus commands of at most
/// [`REPORT_COMMAND_BYTES`] each.
fn report_commands(instance_id: &str, reports: Vec<TaskReport>, at_ms: i64) -> Vec<Command> {
    let mut commands = Vec::new();
    let mut chunk = Vec::new();
    let mut bytes = 0;
    for report in reports {
        let size = bincode::serialized_size(&report).map_or(usize::MAX, |n| n as usize);
        if !chunk.is_empty() && bytes + size > REPORT_COMMAND_BYTES {
            commands.push(Command::ReportTaskStatus {
                instance_id: instance_id.to_string(),
                reports: std::mem::take(&mut chunk),
                at_ms,
            });
            bytes = 0;
        }
        bytes += size;
        chunk.push(report);
    }
    if !chunk.is_empty() {
        commands.push(Command::ReportTaskStatus {
            instance_id: instance_id.to_string(),
            reports: chunk,
            at_ms,
        });
    }
    commands
}

/// Commands grouped into writes of at most `max_bytes` (encoded) each.
fn batches_by_bytes(commands: Vec<Command>, max_bytes: usize) -> Vec<Vec<Command>> {
    let mut batches = Vec::new();
    let mut batch = Vec::new();
    let mut bytes = 0;
    for command in commands {
        let size = bincode::serialized_size(&command).map_or(usize::MAX, |n| n as usize);
        if !batch.is_empty() && bytes + size > max_bytes {
            batches.push(std::mem::take(&mut batch));
            bytes = 0;
        }
        bytes += size;
        batch.push(command);
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    batches
}

/// How many reports a session may still send: a token bucket per session.
struct ReportBudget {
    tokens: f64,
    at: Instant,
}

impl ReportBudget {
    fn new() -> Self {
        Self {
            tokens: REPORT_BURST,
            at: Instant::now(),
        }
    }

    /// Takes `count` reports from the budget; false when it is used up.
    fn take(&mut self, count: usize) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * REPORTS_PER_SEC;
        self.tokens = (self.tokens + refill).min(REPORT_BURST);
        self.at = now;
        // Every message costs at least one, so empty ones are not free.
        self.tokens -= count.max(1) as f64;
        self.tokens >= 0.0
    }
}

/// Bounds what one report may carry: a report over a limit ends the
/// session (`Err`). Reasons quote runtime errors and are cut, not refused.
fn bounded_report(mut report: pb::TaskReport, at: &str) -> Result<pb::TaskReport, FieldError> {
    limits::check_len(&format!("{at}.taskId"), &report.task_id, limits::MAX_ID_LEN)?;
    limits::check_count(
        &format!("{at}.containers"),
        report.containers.len(),
        limits::MAX_CONTAINERS_PER_REPORT,
    )?;
    for (i, c) in report.containers.iter_mut().enumerate() {
        limits::check_len(
            &format!("{at}.containers[{i}].name"),
            &c.name,
            validate::MAX_NAME_LEN,
        )?;
        c.reason = limits::truncated(std::mem::take(&mut c.reason), limits::MAX_REASON_LEN);
    }
    report.reason = limits::truncated(std::mem::take(&mut report.reason), limits::MAX_REASON_LEN);
    Ok(report)
}

/// Bounds the reports of one hello or status message.
fn bounded_reports(
    reports: Vec<pb::TaskReport>,
    at: &str,
) -> Result<Vec<pb::TaskReport>, FieldError> {
    limits::check_count(at, reports.len(), limits::MAX_REPORTS_PER_MESSAGE)?;
    reports
        .into_iter()
        .enumerate()
        .map(|(i, r)| bounded_report(r, &format!("{at}[{i}]")))
        .collect()
}

/// Bounds what a hello carries besides its reports.
fn check_hello(hello: &pb::AgentHello) -> Result<(), FieldError> {
    limits::check_len(
        "hello.agentVersion",
        &hello.agent_version,
        limits::MAX_AGENT_VERSION_LEN,
    )?;
    limits::check_count(
        "hello.attributes",
        hello.attributes.len(),
        limits::MAX_ATTRIBUTES,
    )?;
    for (i, a) in hello.attributes.iter().enumerate() {
        validate::check_attribute(i, &a.name, &a.value)
            .map_err(|e| FieldError::new(format!("hello.{}", e.field), e.message))?;
    }
    Ok(())
}

/// Logs why an agent's session is being cut off, and says so to the agent.
fn cut_off(instance_id: &str, why: impl std::fmt::Display) -> ServerError {
    tracing::warn!(%instance_id, reason = %why, "agent session cut off: the agent broke a session limit (see docs/security.md, Limits)");
    ServerError::FailedPrecondition(format!("session cut off: {why}"))
}

struct LiveSession {
    session_id: u64,
    outbound: Outbound,
    changes: mpsc::UnboundedSender<String>,
    started: Instant,
    logs: HashMap<u64, mpsc::Sender<pb::LogData>>,
}

/// What this process last observed of an instance's agent.
struct Heard {
    at: Instant,
    /// When its last session here ended, while it has no other: a closed
    /// stream (the agent process gone, its host's TCP stack resetting the
    /// connection) says more than silence, and sooner.
    session_ended: Option<Instant>,
}

impl Heard {
    /// Heard from just now, over a session that is open.
    fn now() -> Self {
        Self {
            at: Instant::now(),
            session_ended: None,
        }
    }
}

struct HubInner {
    node: BerthNode,
    config: SessionConfig,
    /// Status reports from every session, merged into few Raft entries.
    reports: PendingReports,
    sessions: Mutex<HashMap<String, LiveSession>>,
    /// When each instance's agent was last heard from, kept after its
    /// session ends: liveness counts an agent's silence from here, on this
    /// process's monotonic clock.
    last_heard: Mutex<HashMap<String, Heard>>,
    next_id: AtomicU64,
    /// The agents' latest resource samples (see `crate::stats`).
    stats: crate::stats::StatsBook,
}

/// The leader's registry of agent sessions.
#[derive(Clone)]
pub struct SessionHub {
    inner: Arc<HubInner>,
}

/// Heartbeats as the liveness controller reads them: wall-clock times of
/// this process's in-memory observations.
impl berth_controllers::AgentLiveness for SessionHub {
    fn last_heartbeat_ms(&self, instance_id: &str) -> Option<i64> {
        self.last_heartbeat(instance_id)
            .map(|at| now_ms().saturating_sub(millis(at.elapsed())))
    }

    fn session_started_ms(&self, instance_id: &str) -> Option<i64> {
        self.session_age(instance_id)
            .map(|age| now_ms().saturating_sub(millis(age)))
    }

    fn session_ended_ms(&self, instance_id: &str) -> Option<i64> {
        self.session_ended(instance_id)
            .map(|at| now_ms().saturating_sub(millis(at.elapsed())))
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl SessionHub {
    pub fn new(node: BerthNode, config: SessionConfig) -> Self {
        Self {
            inner: Arc::new(HubInner {
                node,
                config,
                reports: PendingReports::default(),
                sessions: Mutex::new(HashMap::new()),
                last_heard: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                stats: crate::stats::StatsBook::default(),
            }),
        }
    }

    pub fn config(&self) -> SessionConfig {
        self.inner.config
    }

    /// The task's resource use, if its agent has sampled it lately.
    pub fn task_stats(&self, task: &berth_types::Task) -> Option<pb::TaskStats> {
        self.inner.stats.task_stats(task)
    }

    /// Keeps the samples of the tasks the state places on this instance;
    /// anything else an agent says about other tasks is ignored.
    fn record_stats(&self, instance_id: &str, mut report: pb::StatsReport) {
        {
            let applied = self.inner.node.state().read();
            report.tasks.retain(|t| {
                applied
                    .state
                    .task(&t.task_id)
                    .is_some_and(|task| task.instance_id.as_deref() == Some(instance_id))
            });
        }
        self.inner.stats.record(instance_id, report);
    }

    pub fn node(&self) -> &BerthNode {
        &self.inner.node
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, LiveSession>> {
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// When the instance's agent was last heard from by this process, even
    /// if its session has ended since.
    pub fn last_heartbeat(&self, instance_id: &str) -> Option<Instant> {
        self.last_heard_map().get(instance_id).map(|heard| heard.at)
    }

    /// When the instance's last session on this process ended, if it has
    /// not opened another since.
    pub fn session_ended(&self, instance_id: &str) -> Option<Instant> {
        self.last_heard_map()
            .get(instance_id)
            .and_then(|heard| heard.session_ended)
    }

    fn last_heard_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Heard>> {
        self.inner
            .last_heard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn heard(&self, instance_id: &str) {
        let mut last_heard = self.last_heard_map();
        // In place: a heartbeat of a known instance (nearly all of them)
        // allocates no key.
        match last_heard.get_mut(instance_id) {
            Some(heard) => heard.at = Instant::now(),
            None => {
                last_heard.insert(instance_id.to_string(), Heard::now());
            }
        }
    }

    /// How long the instance's current session has existed.
    pub fn session_age(&self, instance_id: &str) -> Option<Duration> {
        self.sessions()
            .get(instance_id)
            .map(|s| s.started.elapsed())
    }

    pub fn connected_count(&self) -> usize {
        self.sessions().len()
    }

    /// Ends every session (this server stopped leading); each agent is told
    /// where the leader is, if known, and reconnects there.
    pub fn drop_all_sessions(&self, leader_address: &str) {
        let sessions: Vec<LiveSession> = self.sessions().drain().map(|(_, s)| s).collect();
        if !sessions.is_empty() {
            tracing::info!(count = sessions.len(), leader = %leader_address, "leadership lost: ending agent sessions");
        }
        for session in sessions {
            let _ = session.outbound.try_send(Ok(redirect(leader_address)));
        }
    }

    /// Routes task changes to the sessions of the instances they concern.
    pub async fn route_events(
        self,
        mut events: mpsc::UnboundedReceiver<std::sync::Arc<[StateEvent]>>,
    ) {
        while let Some(batch) = events.recv().await {
            let sessions = self.sessions();
            for event in batch.iter() {
                if let StateEvent::Task {
                    task_id,
                    instance_id: Some(iid),
                } = event
                {
                    if let Some(session) = sessions.get(iid) {
                        let _ = session.changes.send(task_id.clone());
                    }
                }
            }
        }
    }

    /// Proposes the reports of all sessions together: whatever arrived while
    /// the previous write was in flight goes into the next one, one entry
    /// holding one command per instance. Thousands of agents reporting at
    /// once then cost a handful of Raft entries, not one each.
    pub async fn write_reports(self) {
        let pending = &self.inner.reports;
        loop {
            pending.queued.notified().await;
            let taken = std::mem::take(&mut *pending.lock());
            pending.drained.notify_waiters();
            if taken.is_empty() {
                continue;
            }
            let mut by_instance: HashMap<String, Vec<TaskReport>> = HashMap::new();
            for (_, (instance, report)) in taken {
                by_instance.entry(instance).or_default().push(report);
            }
            let at_ms = now_ms();
            let commands: Vec<Command> = by_instance
                .into_iter()
                .flat_map(|(instance_id, reports)| report_commands(&instance_id, reports, at_ms))
                .collect();
            for batch in batches_by_bytes(commands, crate::node::MAX_BATCH_BYTES) {
                let count = batch.len();
                // Reports are idempotent: one that is lost here (leadership
                // moved) comes again in the agent's hello to the next leader.
                if let Err(e) = self.inner.node.write_batch(batch).await {
                    tracing::warn!(instances = count, error = %e, "status reports not applied; agents resend them when they reconnect");
                }
            }
        }
    }

    /// Asks the agent of `instance_id` for a task's logs. The returned guard
    /// cancels the request on the agent when dropped.
    pub fn request_logs(
        &self,
        instance_id: &str,
        mut request: pb::LogRequest,
    ) -> Result<(mpsc::Receiver<pb::LogData>, LogRequestGuard), ServerError> {
        let request_id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        request.request_id = request_id;
        let (tx, rx) = mpsc::channel(64);
        let mut sessions = self.sessions();
        let session = sessions.get_mut(instance_id).ok_or_else(|| {
            ServerError::Unavailable(format!(
                "instance {instance_id} is not connected, so its logs cannot be read now; retry when its agent is back"
            ))
        })?;
        session
            .outbound
            .try_send(Ok(pb::ServerMessage {
                body: Some(ServerBody::LogRequest(request)),
            }))
            .map_err(|_| {
                ServerError::Unavailable(format!(
                    "the session of instance {instance_id} is busy; retry"
                ))
            })?;
        session.logs.insert(request_id, tx);
        Ok((
            rx,
            LogRequestGuard {
                hub: self.clone(),
                instance_id: instance_id.to_string(),
                request_id,
            },
        ))
    }

    fn log_sender(&self, instance_id: &str, request_id: u64) -> Option<mpsc::Sender<pb::LogData>> {
        self.sessions()
            .get(instance_id)
            .and_then(|s| s.logs.get(&request_id).cloned())
    }

    fn forget_log_request(&self, instance_id: &str, request_id: u64, cancel: bool) {
        let mut sessions = self.sessions();
        if let Some(session) = sessions.get_mut(instance_id) {
            if session.logs.remove(&request_id).is_some() && cancel {
                let _ = session.outbound.try_send(Ok(pb::ServerMessage {
                    body: Some(ServerBody::LogCancel(pb::LogCancel { request_id })),
                }));
            }
        }
    }

    fn register(
        &self,
        instance_id: &str,
        outbound: Outbound,
        changes: mpsc::UnboundedSender<String>,
    ) -> u64 {
        let session_id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let previous = self.sessions().insert(
            instance_id.to_string(),
            LiveSession {
                session_id,
                outbound,
                changes,
                started: Instant::now(),
                logs: HashMap::new(),
            },
        );
        if previous.is_some() {
            tracing::info!(%instance_id, "agent opened a new session; the old one is closed");
        }
        // A new session counts as hearing from the agent, and it has a
        // session again.
        self.last_heard_map()
            .insert(instance_id.to_string(), Heard::now());
        session_id
    }

    fn unregister(&self, instance_id: &str, session_id: u64) {
        let mut sessions = self.sessions();
        if sessions
            .get(instance_id)
            .is_some_and(|s| s.session_id == session_id)
        {
            sessions.remove(instance_id);
            drop(sessions);
            self.inner.stats.forget_instance(instance_id);
            if let Some(heard) = self.last_heard_map().get_mut(instance_id) {
                heard.session_ended = Some(Instant::now());
            }
        }
    }

    fn heartbeat(&self, instance_id: &str, session_id: u64) {
        self.inner.node.server_metrics().heartbeat();
        let current = self
            .sessions()
            .get(instance_id)
            .is_some_and(|s| s.session_id == session_id);
        if current {
            self.heard(instance_id);
        }
    }

    async fn run_session<I: AgentInbound>(
        &self,
        instance_id: String,
        peer_ip: Option<std::net::IpAddr>,
        mut inbound: I,
        outbound: Outbound,
    ) -> Result<(), ServerError> {
        let mut hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(pb::AgentMessage {
                body: Some(AgentBody::Hello(hello)),
            }))) => hello,
            Ok(Ok(_)) => {
                return Err(ServerError::FailedPrecondition(
                    "the first session message must be a hello".into(),
                ))
            }
            Ok(Err(status)) => return Err(ServerError::Unavailable(status.message().to_string())),
            Err(_) => {
                return Err(ServerError::FailedPrecondition(
                    "no hello within 10s of opening the session".into(),
                ))
            }
        };
        if let Err(e) = check_hello(&hello) {
            return Err(cut_off(&instance_id, e));
        }
        add_session_address(&mut hello, peer_ip);
        if !hello.instance_id.is_empty() && hello.instance_id != instance_id {
            return Err(ServerError::FailedPrecondition(format!(
                "hello names instance {} but the certificate is for {instance_id}",
                hello.instance_id
            )));
        }
        let (changes_tx, mut changes) = mpsc::unbounded_channel();
        let session_id = self.register(&instance_id, outbound.clone(), changes_tx);
        let result = self
            .serve_session(
                &instance_id,
                session_id,
                hello,
                &mut inbound,
                &outbound,
                &mut changes,
            )
            .await;
        self.unregister(&instance_id, session_id);
        if let Err(e) = &result {
            tracing::info!(%instance_id, error = %e, "agent session ended");
        }
        result
    }

    async fn serve_session<I: AgentInbound>(
        &self,
        instance_id: &str,
        session_id: u64,
        hello: pb::AgentHello,
        inbound: &mut I,
        outbound: &Outbound,
        changes: &mut mpsc::UnboundedReceiver<String>,
    ) -> Result<(), ServerError> {
        let node = self.inner.node.clone();
        let attributes = berth_proto::convert::attributes_from_wire(&hello.attributes);
        let running =
            bounded_reports(hello.running, "hello.running").map_err(|e| cut_off(instance_id, e))?;
        // The hello's writes are boxed: an async fn's state is as large as
        // its largest await, and this session's state lives as long as the
        // agent stays connected, on the leader, for every instance.
        let news = self.news(instance_id, running);
        for command in report_commands(instance_id, news, now_ms()) {
            Box::pin(node.write(command)).await?;
        }
        let host_ports =
            host_ports_from_wire(&hello.host_ports).map_err(|e| cut_off(instance_id, e))?;
        Box::pin(node.write(Command::InstanceConnected {
            instance_id: instance_id.to_string(),
            agent_version: hello.agent_version.clone(),
            resources: Resources::new(
                u64::from(hello.cpu_total),
                u64::from(hello.memory_total_mib),
            ),
            attributes,
            host_ports,
            at_ms: now_ms(),
        }))
        .await?;
        tracing::info!(
            %instance_id,
            agent_version = %hello.agent_version,
            cpu = hello.cpu_total,
            memory_mib = hello.memory_total_mib,
            last_sequence = hello.last_sequence,
            "agent session started"
        );
        let heartbeat_period_ms =
            u32::try_from(self.inner.config.heartbeat.as_millis()).unwrap_or(u32::MAX);
        send(
            outbound,
            ServerBody::Settings(pb::SessionSettings {
                heartbeat_period_ms,
            }),
        )
        .await?;
        let mut budget = ReportBudget::new();
        let mut sent: HashMap<String, (DesiredStatus, bool)> = HashMap::new();
        let complete = {
            let applied = node.state().read();
            let state = &applied.state;
            let seq = state.instance(instance_id).map_or(0, |i| i.assignment_seq);
            let assignments: Vec<pb::Assignment> = state
                .active_tasks_on(instance_id)
                .map(|task| {
                    sent.insert(task.id.clone(), sent_key(task));
                    assignment(state, task)
                })
                .collect();
            pb::AssignmentSet {
                sequence: seq,
                complete: true,
                assignments,
            }
        };
        send(outbound, ServerBody::Assignments(complete)).await?;

        loop {
            tokio::select! {
                message = inbound.message() => {
                    let message = match message {
                        Ok(Some(m)) => m,
                        Ok(None) => return Ok(()),
                        // A message over MAX_AGENT_MESSAGE_BYTES, refused
                        // from its length prefix before it is read.
                        Err(status) if status.code() == tonic::Code::OutOfRange => {
                            return Err(cut_off(instance_id, status.message()))
                        }
                        Err(status) => {
                            return Err(ServerError::Unavailable(status.message().to_string()))
                        }
                    };
                    self.handle_agent_message(instance_id, session_id, message, &mut budget).await?;
                }
                changed = changes.recv() => {
                    let Some(first) = changed else {
                        // The hub let go of this session: leadership moved.
                        let leader = leader_address(&node);
                        let _ = outbound.try_send(Ok(redirect(&leader)));
                        return Ok(());
                    };
                    let mut ids = vec![first];
                    while let Ok(more) = changes.try_recv() {
                        ids.push(more);
                    }
                    if let Some(set) = incremental(&node, instance_id, ids, &mut sent) {
                        send(outbound, ServerBody::Assignments(set)).await?;
                    }
                }
                _ = outbound.closed() => return Ok(()),
            }
        }
    }

    async fn handle_agent_message(
        &self,
        instance_id: &str,
        session_id: u64,
        message: pb::AgentMessage,
        budget: &mut ReportBudget,
    ) -> Result<(), ServerError> {
        // Any message proves the agent is alive. An acknowledgement (alone,
        // or a status batch's `acked_sequence`) is nothing more: a new
        // session starts from the complete set whatever was acknowledged.
        self.heartbeat(instance_id, session_id);
        match message.body {
            Some(AgentBody::Heartbeat(_)) | Some(AgentBody::Ack(_)) | None => Ok(()),
            Some(AgentBody::Stats(report)) => {
                self.record_stats(instance_id, report);
                Ok(())
            }
            Some(AgentBody::Hello(_)) => Err(ServerError::FailedPrecondition(
                "hello sent twice in one session".into(),
            )),
            Some(AgentBody::Status(batch)) => {
                if !budget.take(batch.reports.len()) {
                    return Err(cut_off(
                        instance_id,
                        format!(
                            "more than {REPORT_BURST} task reports at once or {REPORTS_PER_SEC} a second"
                        ),
                    ));
                }
                let reports = bounded_reports(batch.reports, "status.reports")
                    .map_err(|e| cut_off(instance_id, e))?;
                let news = self.news(instance_id, reports);
                if !news.is_empty() {
                    self.inner.reports.push(instance_id, news).await;
                }
                Ok(())
            }
            Some(AgentBody::Log(data)) => {
                let request_id = data.request_id;
                let end = data.end;
                if let Some(tx) = self.log_sender(instance_id, request_id) {
                    if tx.send(data).await.is_err() {
                        self.forget_log_request(instance_id, request_id, true);
                        return Ok(());
                    }
                }
                if end {
                    self.forget_log_request(instance_id, request_id, false);
                }
                Ok(())
            }
        }
    }

    /// The reports that say something new. The rest (duplicates, statuses
    /// already passed, tasks not placed here) are dropped here so they cost
    /// no Raft write. A hello's news is written before the session starts;
    /// later news goes to the shared report writer, so reading the agent's
    /// stream never waits for a commit.
    fn news(&self, instance_id: &str, reports: Vec<pb::TaskReport>) -> Vec<TaskReport> {
        if reports.is_empty() {
            return Vec::new();
        }
        let mut parsed = Vec::with_capacity(reports.len());
        for report in reports {
            match TaskReport::try_from(report) {
                Ok(r) => parsed.push(r),
                Err(e) => {
                    tracing::warn!(%instance_id, error = %e, "ignoring a malformed task report")
                }
            }
        }
        let news: Vec<TaskReport> = {
            let applied = self.inner.node.state().read();
            parsed
                .into_iter()
                .filter(|r| is_news(&applied.state, instance_id, r))
                .collect()
        };
        // What is waiting to be written already is not news either: a
        // repeat costs no write, however often it comes before the first
        // is applied.
        news.into_iter()
            .filter(|r| !self.inner.reports.holds(r))
            .collect()
    }
}

fn is_news(state: &State, instance_id: &str, report: &TaskReport) -> bool {
    let Some(task) = state.task(&report.task_id) else {
        return false;
    };
    if task.instance_id.as_deref() != Some(instance_id) {
        return false;
    }
    report.last_status > task.last_status
        || (report.ip.is_some() && report.ip != task.ip && task.last_status != TaskStatus::Stopped)
        || (!report.containers.is_empty()
            && task.last_status != TaskStatus::Stopped
            && report.containers != task.containers)
}

/// The hello's host ports, bounded like every other part of a session.
fn host_ports_from_wire(
    ports: &[pb::BoundPort],
) -> Result<Vec<berth_types::resources::HostPort>, FieldError> {
    limits::check_count("hello.hostPorts", ports.len(), limits::MAX_HOST_PORTS)?;
    ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let field = |f: &str| format!("hello.hostPorts[{i}].{f}");
            let protocol = match p.protocol.as_str() {
                "tcp" => berth_types::Protocol::Tcp,
                "udp" => berth_types::Protocol::Udp,
                other => {
                    return Err(FieldError::new(
                        field("protocol"),
                        format!("{other:?} is not tcp or udp"),
                    ))
                }
            };
            if !(1..=65535).contains(&p.port) {
                return Err(FieldError::new(
                    field("port"),
                    format!("{} is not a port (1-65535)", p.port),
                ));
            }
            Ok(berth_types::resources::HostPort::new(p.port, protocol))
        })
        .collect()
}

/// What the agent has been told about a task: its desired status, and
/// whether the record is final.
fn sent_key(task: &Task) -> (DesiredStatus, bool) {
    (
        task.agent_desired_status(),
        task.last_status == TaskStatus::Stopped,
    )
}

/// The instance's address for service discovery: what its agent says
/// (`--advertise-address`), or else where its session comes from.
fn add_session_address(hello: &mut pb::AgentHello, peer_ip: Option<std::net::IpAddr>) {
    let address = berth_types::endpoints::ADDRESS_ATTRIBUTE;
    if let Some(ip) = peer_ip.filter(|_| !hello.attributes.iter().any(|a| a.name == address)) {
        hello.attributes.push(pb::Attribute {
            name: address.to_string(),
            value: ip.to_string(),
        });
    }
}

fn assignment(state: &State, task: &Task) -> pb::Assignment {
    let definition = state.task_definition(&task.family, task.revision);
    pb::Assignment {
        task_id: task.id.clone(),
        desired_status: task.agent_desired_status().as_str().to_string(),
        task_definition: definition.cloned().map(Into::into),
        overrides: berth_proto::convert::overrides_to_wire(&task.overrides),
        last_status: task.last_status.as_str().to_string(),
        cluster: task.cluster.clone(),
        network_bindings: definition
            .map(|td| berth_types::resources::network_bindings(&td.spec, &task.reservation))
            .unwrap_or_default()
            .iter()
            .map(Into::into)
            .collect(),
    }
}

/// The assignments among `ids` that differ from what the agent was told.
fn incremental(
    node: &BerthNode,
    instance_id: &str,
    ids: Vec<String>,
    sent: &mut HashMap<String, (DesiredStatus, bool)>,
) -> Option<pb::AssignmentSet> {
    let applied = node.state().read();
    let state = &applied.state;
    let mut assignments = Vec::new();
    for id in ids {
        match state.task(&id) {
            Some(task) if task.instance_id.as_deref() == Some(instance_id) => {
                let key = sent_key(task);
                if sent.get(&id) != Some(&key) {
                    sent.insert(id.clone(), key);
                    assignments.push(assignment(state, task));
                }
                if key.1 {
                    sent.remove(&id);
                }
            }
            // Purged: tell the agent to let go of it, if it was told of it.
            None if sent.remove(&id).is_some() => assignments.push(pb::Assignment {
                task_id: id,
                desired_status: DesiredStatus::Stopped.as_str().to_string(),
                last_status: TaskStatus::Stopped.as_str().to_string(),
                ..Default::default()
            }),
            _ => {}
        }
    }
    if assignments.is_empty() {
        return None;
    }
    let sequence = state.instance(instance_id).map_or(0, |i| i.assignment_seq);
    Some(pb::AssignmentSet {
        sequence,
        complete: false,
        assignments,
    })
}

async fn send(outbound: &Outbound, body: ServerBody) -> Result<(), ServerError> {
    outbound
        .send(Ok(pb::ServerMessage { body: Some(body) }))
        .await
        .map_err(|_| ServerError::Unavailable("the agent closed its session".into()))
}

fn redirect(leader_address: &str) -> pb::ServerMessage {
    pb::ServerMessage {
        body: Some(ServerBody::Redirect(pb::Redirect {
            leader_address: leader_address.to_string(),
        })),
    }
}

/// The leader's advertised address, or empty while none is known.
pub fn leader_address(node: &BerthNode) -> String {
    let metrics = node.metrics();
    metrics
        .current_leader
        .filter(|id| *id != node.id() || node.is_leader())
        .and_then(|id| metrics.membership_config.membership().get_node(&id))
        .map(|n| n.addr.clone())
        .unwrap_or_default()
}

/// Sends LogCancel to the agent when the reader goes away early.
pub struct LogRequestGuard {
    hub: SessionHub,
    instance_id: String,
    request_id: u64,
}

impl Drop for LogRequestGuard {
    fn drop(&mut self) {
        self.hub
            .forget_log_request(&self.instance_id, self.request_id, true);
    }
}

/// Where a session's agent messages come from: the gRPC stream, or the
/// session transport's frames (`crate::session_wire`).
pub(crate) trait AgentInbound: Send + 'static {
    /// The next message; `Ok(None)` when the agent closed its side. A
    /// message over [`MAX_AGENT_MESSAGE_BYTES`] is `OutOfRange`.
    fn message(
        &mut self,
    ) -> impl std::future::Future<Output = Result<Option<pb::AgentMessage>, Status>> + Send;
}

impl AgentInbound for Streaming<pb::AgentMessage> {
    async fn message(&mut self) -> Result<Option<pb::AgentMessage>, Status> {
        Streaming::message(self).await
    }
}

impl SessionHub {
    /// Opens an agent's session on either transport: `caller` is what
    /// authorization made of the connection, `peer_ip` where it came from.
    /// The returned stream is what goes to the agent; the session itself
    /// runs in its own task.
    #[tracing::instrument(skip_all, fields(instance_id))]
    pub(crate) async fn open_session<I: AgentInbound>(
        &self,
        caller: Option<Caller>,
        peer_ip: Option<std::net::IpAddr>,
        inbound: I,
    ) -> Result<OutboundStream, Status> {
        let Some(Caller::Instance(instance_id)) = caller else {
            return Err(Status::unauthenticated(
                "the agent session needs the instance's client certificate",
            ));
        };
        tracing::Span::current().record("instance_id", instance_id.as_str());
        let (tx, rx) = outbound_channel();
        let node = &self.inner.node;
        // A new leader serves sessions once its state is current, so the
        // complete set it sends reflects every acknowledged write.
        let deadline = Instant::now() + Duration::from_secs(3);
        while node.is_leader() && !node.has_applied_own_term() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !node.has_applied_own_term() {
            let leader = leader_address(node);
            let _ = tx.send(Ok(redirect(&leader))).await;
            return Ok(rx);
        }
        let hub = self.clone();
        tokio::spawn(async move {
            if let Err(e) = hub
                .run_session(instance_id, peer_ip, inbound, tx.clone())
                .await
            {
                let _ = tx.try_send(Err(Status::from(e)));
            }
        });
        Ok(rx)
    }
}

#[tonic::async_trait]
impl AgentSessionService for SessionHub {
    type SessionStream = OutboundStream;

    async fn session(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let caller = request.extensions().get::<Caller>().cloned();
        // Where the agent's connection came from: the instance's address
        // unless the agent names one (`--advertise-address`).
        let peer_ip = request
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|info| info.get_ref().remote_addr())
            .map(|addr| addr.ip().to_canonical());
        self.open_session(caller, peer_ip, request.into_inner())
            .await
            .map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_instance_address_is_the_agents_or_else_its_sessions_source() {
        let peer: std::net::IpAddr = "192.0.2.7".parse().unwrap();
        let address = |hello: &pb::AgentHello| {
            hello
                .attributes
                .iter()
                .filter(|a| a.name == berth_types::endpoints::ADDRESS_ATTRIBUTE)
                .map(|a| a.value.clone())
                .collect::<Vec<_>>()
        };
        let mut hello = pb::AgentHello::default();
        add_session_address(&mut hello, Some(peer));
        assert_eq!(address(&hello), vec!["192.0.2.7"]);
        let mut advertised = pb::AgentHello {
            attributes: vec![pb::Attribute {
                name: berth_types::endpoints::ADDRESS_ATTRIBUTE.into(),
                value: "198.51.100.1".into(),
            }],
            ..Default::default()
        };
        add_session_address(&mut advertised, Some(peer));
        assert_eq!(address(&advertised), vec!["198.51.100.1"]);
        let mut unknown = pb::AgentHello::default();
        add_session_address(&mut unknown, None);
        assert!(address(&unknown).is_empty());
    }
    use berth_types::{ContainerState, ContainerStatus, Health};

    fn report(task_id: &str, status: TaskStatus, containers: usize) -> TaskReport {
        TaskReport {
            task_id: task_id.into(),
            last_status: status,
            containers: (0..containers)
                .map(|i| ContainerState {
                    name: format!("c{i}"),
                    status: ContainerStatus::Running,
                    exit_code: None,
                    reason: String::new(),
                    health: Health::Unknown,
                    restart_count: 0,
                })
                .collect(),
            reason: String::new(),
            stop_code: None,
            ip: None,
        }
    }

    #[test]
    fn merged_reports_keep_the_furthest_status_and_the_latest_containers() {
        let running = report("t", TaskStatus::Running, 2);
        let stopped = report("t", TaskStatus::Stopped, 0);
        let merged = merge_reports(running.clone(), stopped.clone());
        assert_eq!(merged.last_status, TaskStatus::Stopped);
        assert_eq!(
            merged.containers, running.containers,
            "empty means unchanged"
        );
        // Out of order: the status never goes back.
        let merged = merge_reports(stopped, report("t", TaskStatus::Running, 1));
        assert_eq!(merged.last_status, TaskStatus::Stopped);
        assert_eq!(merged.containers.len(), 1);
    }

    #[tokio::test]
    async fn repeated_reports_of_a_task_wait_as_one() {
        let pending = PendingReports::default();
        for _ in 0..1000 {
            pending
                .push("i-1", vec![report("t-1", TaskStatus::Running, 1)])
                .await;
        }
        pending
            .push("i-1", vec![report("t-2", TaskStatus::Pending, 0)])
            .await;
        assert_eq!(pending.lock().len(), 2);
        assert!(pending.holds(&report("t-1", TaskStatus::Running, 1)));
        assert!(!pending.holds(&report("t-1", TaskStatus::Stopped, 1)));
    }

    #[tokio::test]
    async fn a_full_queue_makes_sessions_wait_until_the_writer_drains_it() {
        let pending = Arc::new(PendingReports::default());
        {
            let mut map = pending.lock();
            for i in 0..MAX_PENDING_REPORTS {
                let r = report(&format!("t-{i}"), TaskStatus::Running, 0);
                map.insert(r.task_id.clone(), ("i-1".into(), r));
            }
        }
        // A report of a task already waiting merges even when full.
        pending
            .push("i-1", vec![report("t-0", TaskStatus::Stopped, 0)])
            .await;
        let blocked = tokio::spawn({
            let pending = pending.clone();
            async move {
                pending
                    .push("i-2", vec![report("new", TaskStatus::Running, 0)])
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !blocked.is_finished(),
            "a full queue holds the session back"
        );
        std::mem::take(&mut *pending.lock());
        pending.drained.notify_waiters();
        tokio::time::timeout(Duration::from_secs(5), blocked)
            .await
            .expect("the session goes on once drained")
            .expect("no panic");
        assert!(pending.lock().contains_key("new"));
    }

    #[test]
    fn many_reports_become_several_bounded_commands() {
        let mut big = report("t", TaskStatus::Running, 10);
        for c in &mut big.containers {
            c.reason = "r".repeat(limits::MAX_REASON_LEN);
        }
        let reports: Vec<TaskReport> = (0..200)
            .map(|i| TaskReport {
                task_id: format!("t-{i}"),
                ..big.clone()
            })
            .collect();
        let commands = report_commands("i-1", reports, 0);
        assert!(commands.len() > 1, "{} commands", commands.len());
        let mut total = 0;
        for c in &commands {
            let size = bincode::serialized_size(c).unwrap() as usize;
            assert!(size <= REPORT_COMMAND_BYTES + 16 * 1024, "{size}");
            let Command::ReportTaskStatus { reports, .. } = c else {
                panic!("{c:?}")
            };
            total += reports.len();
        }
        assert_eq!(total, 200, "nothing lost in the split");
        let batches = batches_by_bytes(commands, 1024 * 1024);
        assert!(batches.len() > 1);
    }

    #[test]
    fn reports_over_a_limit_are_refused_and_long_reasons_cut() {
        let mut wire = pb::TaskReport {
            task_id: "t".into(),
            reason: "é".repeat(limits::MAX_REASON_LEN),
            ..Default::default()
        };
        let bounded = bounded_report(wire.clone(), "r").unwrap();
        assert!(bounded.reason.len() <= limits::MAX_REASON_LEN);
        wire.task_id = "t".repeat(limits::MAX_ID_LEN + 1);
        let e = bounded_report(wire, "status.reports[3]").unwrap_err();
        assert_eq!(e.field, "status.reports[3].taskId");
        let too_many = vec![pb::TaskReport::default(); limits::MAX_REPORTS_PER_MESSAGE + 1];
        assert!(bounded_reports(too_many, "status.reports").is_err());
    }

    #[test]
    fn the_report_budget_allows_a_burst_then_cuts_off() {
        let mut budget = ReportBudget::new();
        assert!(budget.take(REPORT_BURST as usize));
        assert!(!budget.take(1000), "the burst is used up");
    }

    #[test]
    fn a_hello_over_a_limit_is_refused_naming_the_field() {
        let hello = pb::AgentHello {
            agent_version: "v".repeat(limits::MAX_AGENT_VERSION_LEN + 1),
            ..Default::default()
        };
        assert_eq!(check_hello(&hello).unwrap_err().field, "hello.agentVersion");
        let hello = pb::AgentHello {
            attributes: vec![pb::Attribute::default(); limits::MAX_ATTRIBUTES + 1],
            ..Default::default()
        };
        assert_eq!(check_hello(&hello).unwrap_err().field, "hello.attributes");
    }
}
