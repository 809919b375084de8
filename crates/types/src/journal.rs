//! The journal: typed events (what changed) and audit records (who asked
//! for it), kept in the replicated state so that every server answers the
//! same history, across restarts and snapshots, up to a retention bound.
//!
//! Each record is named by a [`Cursor`]: the Raft log index of the entry
//! that produced it and its position among that entry's records. Cursors
//! only grow, so a reader resumes exactly after the last one it saw.
//!
//! Nothing secret is ever journaled: events carry ids, names and statuses,
//! and audit records carry the operation and the resource it named, never
//! a command's contents (token secrets, environment values).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::access::{InstanceStatus, Role};
use crate::service::{DeploymentStatus, RolloutState, ServiceStatus};
use crate::task::{DesiredStatus, StopCode, TaskStatus};
use crate::taskdef::TaskDefinitionStatus;

/// Where a journal record sits in the replicated history.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Cursor {
    /// The Raft log index of the entry that produced the record.
    pub index: u64,
    /// The record's position among that entry's records.
    pub seq: u32,
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.index, self.seq)
    }
}

impl std::str::FromStr for Cursor {
    type Err = String;

    /// `INDEX.SEQ` as printed, or a bare `INDEX`, which stands for the last
    /// record of that entry (so resuming from it starts at the next entry).
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "cursor `{text}` is not INDEX or INDEX.SEQ (as printed in the CURSOR column or the `cursor` field)"
            )
        };
        let (index, seq) = match text.split_once('.') {
            Some((index, seq)) => (index, seq.parse().map_err(|_| bad())?),
            None => (text, u32::MAX),
        };
        Ok(Cursor {
            index: index.parse().map_err(|_| bad())?,
            seq,
        })
    }
}

/// Who made a change: the identity the server derived from the caller's
/// token or certificate (never from a request field), or the server or
/// schedule that acted on its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// Externally tagged: bincode (the log, snapshots) cannot read internally
// tagged enums back.
#[serde(rename_all = "camelCase")]
pub enum Principal {
    /// An operator's API token.
    Token { id: String, role: Role },
    /// An agent, by its instance's certificate.
    Instance { id: String },
    /// A control-plane server: its controllers, or a call it proxied.
    Server { id: u64 },
    /// A scheduled task's schedule firing.
    Schedule { cluster: String, name: String },
    /// A call that needs no identity (an agent registering with an
    /// activation secret).
    Anonymous,
}

impl Principal {
    /// `token:ID`, `instance:ID`, `server:N`, `schedule:CLUSTER/NAME` or
    /// `anonymous`: what tables print and `--actor` matches.
    pub fn name(&self) -> String {
        match self {
            Principal::Token { id, .. } => format!("token:{id}"),
            Principal::Instance { id } => format!("instance:{id}"),
            Principal::Server { id } => format!("server:{id}"),
            Principal::Schedule { cluster, name } => format!("schedule:{cluster}/{name}"),
            Principal::Anonymous => "anonymous".to_string(),
        }
    }

    pub fn role(&self) -> Option<Role> {
        match self {
            Principal::Token { role, .. } => Some(*role),
            _ => None,
        }
    }

    /// Whether `--actor QUERY` selects this principal: its whole name, or
    /// the id alone.
    pub fn matches(&self, query: &str) -> bool {
        let name = self.name();
        name == query || name.split_once(':').is_some_and(|(_, id)| id == query)
    }
}

/// A principal acting through one call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Actor {
    pub principal: Principal,
    /// The API operation (`RunTask`, `CreateService`, ...); empty for what a
    /// server's controllers do on their own (not audited).
    pub operation: String,
    /// The caller's address as the server saw it; empty when unknown.
    pub peer: String,
}

impl Actor {
    /// A server's own controllers.
    pub fn server(id: u64) -> Self {
        Self {
            principal: Principal::Server { id },
            operation: String::new(),
            peer: String::new(),
        }
    }

    /// Whether the change came from a call (and so is audited).
    pub fn is_call(&self) -> bool {
        !self.operation.is_empty()
    }
}

/// The kinds of events, for `--type` filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventType {
    Task,
    Instance,
    Service,
    Deployment,
    TaskDefinition,
    Cluster,
    Membership,
    Token,
    Activation,
    Certificate,
    Schedule,
    Secret,
}

impl EventType {
    pub const ALL: [EventType; 12] = [
        EventType::Task,
        EventType::Instance,
        EventType::Service,
        EventType::Deployment,
        EventType::TaskDefinition,
        EventType::Cluster,
        EventType::Membership,
        EventType::Token,
        EventType::Activation,
        EventType::Certificate,
        EventType::Schedule,
        EventType::Secret,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Task => "task",
            EventType::Instance => "instance",
            EventType::Service => "service",
            EventType::Deployment => "deployment",
            EventType::TaskDefinition => "task-definition",
            EventType::Cluster => "cluster",
            EventType::Membership => "membership",
            EventType::Token => "token",
            EventType::Activation => "activation",
            EventType::Certificate => "certificate",
            EventType::Schedule => "schedule",
            EventType::Secret => "secret",
        }
    }

    /// Accepts the names `as_str` prints, and `taskdef`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim().to_ascii_lowercase();
        if text == "taskdef" {
            return Ok(EventType::TaskDefinition);
        }
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == text)
            .ok_or_else(|| {
                format!(
                    "event type `{text}` is unknown; use one of {}",
                    Self::ALL.map(EventType::as_str).join(", ")
                )
            })
    }
}

/// How a token, activation or cluster changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Change {
    Created,
    Updated,
    Deleted,
    Revoked,
    Paused,
    Resumed,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Created => "created",
            Change::Updated => "updated",
            Change::Deleted => "deleted",
            Change::Revoked => "revoked",
            Change::Paused => "paused",
            Change::Resumed => "resumed",
        }
    }
}

/// What happened. Statuses are the ones the records hold after the change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// Externally tagged, as bincode needs: `{"taskStateChange": {...}}`.
#[serde(rename_all = "camelCase")]
pub enum EventDetail {
    #[serde(rename_all = "camelCase")]
    TaskStateChange {
        task_id: String,
        task_definition: String,
        group: String,
        instance_id: Option<String>,
        desired_status: DesiredStatus,
        last_status: TaskStatus,
        stop_code: Option<StopCode>,
        stopped_reason: String,
    },
    #[serde(rename_all = "camelCase")]
    InstanceStateChange {
        instance_id: String,
        status: InstanceStatus,
        agent_connected: bool,
        draining: bool,
    },
    /// Created, updated (desired count, task definition) or its status
    /// moved (DRAINING, INACTIVE).
    #[serde(rename_all = "camelCase")]
    ServiceStateChange {
        service: String,
        status: ServiceStatus,
        desired_count: u32,
        task_definition: String,
    },
    /// A line of the service's own event list (ECS's service events).
    #[serde(rename_all = "camelCase")]
    ServiceAction { service: String, message: String },
    #[serde(rename_all = "camelCase")]
    DeploymentStateChange {
        service: String,
        deployment_id: String,
        task_definition: String,
        status: DeploymentStatus,
        rollout_state: RolloutState,
        reason: String,
        traffic_percent: u32,
    },
    #[serde(rename_all = "camelCase")]
    TaskDefinitionStateChange {
        family: String,
        revision: u32,
        status: TaskDefinitionStatus,
    },
    #[serde(rename_all = "camelCase")]
    ClusterChange { name: String, change: Change },
    /// The Raft membership now in force.
    #[serde(rename_all = "camelCase")]
    MembershipChange {
        voters: Vec<u64>,
        learners: Vec<u64>,
    },
    #[serde(rename_all = "camelCase")]
    TokenChange {
        token_id: String,
        role: Option<Role>,
        change: Change,
    },
    #[serde(rename_all = "camelCase")]
    ActivationChange {
        activation_id: String,
        change: Change,
    },
    #[serde(rename_all = "camelCase")]
    CertificateRevoked {
        fingerprint: String,
        description: String,
    },
    #[serde(rename_all = "camelCase")]
    ScheduleChange { name: String, change: Change },
    /// A slot fired: tasks started, skipped, or failed to start.
    #[serde(rename_all = "camelCase")]
    ScheduleRun {
        name: String,
        slot_ms: i64,
        outcome: crate::scheduled::RunOutcome,
        reason: String,
        task_ids: Vec<String>,
    },
    /// A scheduled run's task failed to start or exited non-zero.
    #[serde(rename_all = "camelCase")]
    ScheduledTaskFailed {
        name: String,
        task_id: String,
        reason: String,
    },
    /// A secret was created, updated (its value or description) or
    /// deleted; never its value.
    #[serde(rename_all = "camelCase")]
    SecretChange {
        name: String,
        version: u64,
        change: Change,
    },
}

impl EventDetail {
    pub fn event_type(&self) -> EventType {
        match self {
            EventDetail::TaskStateChange { .. } => EventType::Task,
            EventDetail::InstanceStateChange { .. } => EventType::Instance,
            EventDetail::ServiceStateChange { .. } | EventDetail::ServiceAction { .. } => {
                EventType::Service
            }
            EventDetail::DeploymentStateChange { .. } => EventType::Deployment,
            EventDetail::TaskDefinitionStateChange { .. } => EventType::TaskDefinition,
            EventDetail::ClusterChange { .. } => EventType::Cluster,
            EventDetail::MembershipChange { .. } => EventType::Membership,
            EventDetail::TokenChange { .. } => EventType::Token,
            EventDetail::ActivationChange { .. } => EventType::Activation,
            EventDetail::CertificateRevoked { .. } => EventType::Certificate,
            EventDetail::ScheduleChange { .. }
            | EventDetail::ScheduleRun { .. }
            | EventDetail::ScheduledTaskFailed { .. } => EventType::Schedule,
            EventDetail::SecretChange { .. } => EventType::Secret,
        }
    }

    /// The resource the event is about, in the form `--resource` and the
    /// history commands select by: `task/ID`, `service/CLUSTER/NAME`, ...
    /// Deployment events belong to their service's history.
    pub fn resource(&self, cluster: &str) -> String {
        match self {
            EventDetail::TaskStateChange { task_id, .. } => format!("task/{task_id}"),
            EventDetail::InstanceStateChange { instance_id, .. } => {
                format!("instance/{instance_id}")
            }
            EventDetail::ServiceStateChange { service, .. }
            | EventDetail::ServiceAction { service, .. }
            | EventDetail::DeploymentStateChange { service, .. } => {
                format!("service/{cluster}/{service}")
            }
            EventDetail::TaskDefinitionStateChange {
                family, revision, ..
            } => format!("task-definition/{family}:{revision}"),
            EventDetail::ClusterChange { name, .. } => format!("cluster/{name}"),
            EventDetail::MembershipChange { .. } => "membership".to_string(),
            EventDetail::TokenChange { token_id, .. } => format!("token/{token_id}"),
            EventDetail::ActivationChange { activation_id, .. } => {
                format!("activation/{activation_id}")
            }
            EventDetail::CertificateRevoked { fingerprint, .. } => {
                format!("certificate/{fingerprint}")
            }
            EventDetail::ScheduleChange { name, .. }
            | EventDetail::ScheduleRun { name, .. }
            | EventDetail::ScheduledTaskFailed { name, .. } => {
                format!("schedule/{cluster}/{name}")
            }
            EventDetail::SecretChange { name, .. } => format!("secret/{name}"),
        }
    }

    /// One line for people.
    pub fn summary(&self) -> String {
        match self {
            EventDetail::TaskStateChange {
                task_definition,
                instance_id,
                desired_status,
                last_status,
                stop_code,
                stopped_reason,
                ..
            } => {
                let mut line = format!(
                    "{task_definition} {} (desired {})",
                    last_status.as_str(),
                    desired_status.as_str()
                );
                if let Some(instance) = instance_id {
                    line.push_str(&format!(" on {instance}"));
                }
                if let Some(code) = stop_code {
                    line.push_str(&format!(": {}", code.as_str()));
                }
                if !stopped_reason.is_empty() {
                    line.push_str(&format!(": {stopped_reason}"));
                }
                line
            }
            EventDetail::InstanceStateChange {
                status,
                agent_connected,
                draining,
                ..
            } => format!(
                "{}, agent {}{}",
                status.as_str(),
                if *agent_connected {
                    "connected"
                } else {
                    "disconnected"
                },
                if *draining { ", draining" } else { "" }
            ),
            EventDetail::ServiceStateChange {
                status,
                desired_count,
                task_definition,
                ..
            } => format!(
                "{} desired {desired_count} of {task_definition}",
                status.as_str()
            ),
            EventDetail::ServiceAction { message, .. } => message.clone(),
            EventDetail::DeploymentStateChange {
                deployment_id,
                task_definition,
                status,
                rollout_state,
                reason,
                traffic_percent,
                ..
            } => {
                let mut line = format!(
                    "deployment {deployment_id} of {task_definition} {} {} (traffic {traffic_percent}%)",
                    status.as_str(),
                    rollout_state.as_str()
                );
                if !reason.is_empty() {
                    line.push_str(&format!(": {reason}"));
                }
                line
            }
            EventDetail::TaskDefinitionStateChange { status, .. } => status.as_str().to_string(),
            EventDetail::ClusterChange { change, .. } => change.as_str().to_string(),
            EventDetail::MembershipChange { voters, learners } => {
                format!("voters {voters:?}, learners {learners:?}")
            }
            EventDetail::TokenChange { role, change, .. } => match role {
                Some(role) => format!("{} ({})", change.as_str(), role.as_str()),
                None => change.as_str().to_string(),
            },
            EventDetail::ActivationChange { change, .. } => change.as_str().to_string(),
            EventDetail::CertificateRevoked { description, .. } => {
                format!("revoked: {description}")
            }
            EventDetail::ScheduleChange { change, .. } => change.as_str().to_string(),
            EventDetail::ScheduleRun {
                slot_ms,
                outcome,
                reason,
                task_ids,
                ..
            } => {
                let mut line = format!(
                    "slot {} {}",
                    crate::time::rfc3339(*slot_ms),
                    outcome.as_str()
                );
                if !task_ids.is_empty() {
                    line.push_str(&format!(" tasks {}", task_ids.join(" ")));
                }
                if !reason.is_empty() {
                    line.push_str(&format!(": {reason}"));
                }
                line
            }
            EventDetail::ScheduledTaskFailed {
                task_id, reason, ..
            } => format!("task {task_id} failed: {reason}"),
            EventDetail::SecretChange {
                version, change, ..
            } => match change {
                Change::Deleted => change.as_str().to_string(),
                _ => format!("{} (version {version})", change.as_str()),
            },
        }
    }
}

/// One change to the state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub cursor: Cursor,
    pub at_ms: i64,
    /// Who caused it.
    pub actor: Actor,
    /// Empty for what belongs to no cluster (tokens, membership).
    pub cluster: String,
    pub detail: EventDetail,
}

impl Event {
    pub fn resource(&self) -> String {
        self.detail.resource(&self.cluster)
    }
}

/// One call that reached the replicated log, applied or refused there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    pub cursor: Cursor,
    pub at_ms: i64,
    pub actor: Actor,
    /// The command it became (`run_tasks`, ...).
    pub command: String,
    /// What it named: `task/ID`, `service/CLUSTER/NAME`, ...
    pub resource: String,
    /// `None`: applied. Otherwise why the state machine refused it.
    pub error: Option<String>,
}

/// How much history the journal keeps: at most `max_records` events (and,
/// separately, as many audit records), none older than `max_age_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    pub max_records: u32,
    pub max_age_ms: i64,
}

pub const DEFAULT_MAX_RECORDS: u32 = 10_000;
pub const DEFAULT_MAX_AGE_MS: i64 = 7 * 24 * 3_600_000;
/// The most either bound may be raised to: the journal lives in memory on
/// every server and in every snapshot.
pub const LIMIT_MAX_RECORDS: u32 = 1_000_000;

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_records: DEFAULT_MAX_RECORDS,
            max_age_ms: DEFAULT_MAX_AGE_MS,
        }
    }
}

impl Retention {
    pub fn validate(&self) -> Result<(), crate::error::FieldError> {
        if self.max_records == 0 || self.max_records > LIMIT_MAX_RECORDS {
            return Err(crate::error::FieldError::new(
                "maxRecords",
                format!(
                    "{} is out of range; keep between 1 and {LIMIT_MAX_RECORDS} records",
                    self.max_records
                ),
            ));
        }
        if self.max_age_ms < 60_000 {
            return Err(crate::error::FieldError::new(
                "maxAge",
                format!(
                    "{} ms is too short; keep at least one minute (e.g. 7d)",
                    self.max_age_ms
                ),
            ));
        }
        Ok(())
    }
}

/// Which events a reader wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Empty: every type.
    pub types: Vec<EventType>,
    pub cluster: Option<String>,
    /// A whole resource (`task/ID`) or a prefix ending in `/`
    /// (`service/default/`).
    pub resource: Option<String>,
    /// As `Principal::matches`.
    pub actor: Option<String>,
    /// Only records at or after this time.
    pub since_ms: Option<i64>,
}

impl EventFilter {
    pub fn accepts(&self, event: &Event) -> bool {
        (self.types.is_empty() || self.types.contains(&event.detail.event_type()))
            && self
                .cluster
                .as_ref()
                .is_none_or(|c| event.cluster.is_empty() || &event.cluster == c)
            && self
                .resource
                .as_ref()
                .is_none_or(|r| resource_matches(&event.resource(), r))
            && self
                .actor
                .as_ref()
                .is_none_or(|a| event.actor.principal.matches(a))
            && self.since_ms.is_none_or(|s| event.at_ms >= s)
    }

    pub fn accepts_audit(&self, record: &AuditRecord) -> bool {
        self.resource
            .as_ref()
            .is_none_or(|r| resource_matches(&record.resource, r))
            && self
                .actor
                .as_ref()
                .is_none_or(|a| record.actor.principal.matches(a))
            && self.since_ms.is_none_or(|s| record.at_ms >= s)
    }
}

/// A resource string may name several resources, separated by spaces (a
/// RunTask that started three tasks).
fn resource_matches(resource: &str, wanted: &str) -> bool {
    resource.split(' ').any(|one| {
        if wanted.ends_with('/') {
            one.starts_with(wanted)
        } else {
            one == wanted
        }
    })
}

/// Asked for records the retention bound already dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pruned {
    /// Every record up to and including this one is gone.
    pub through: Cursor,
}

/// One bounded ring of records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ring<T> {
    records: VecDeque<T>,
    /// The newest cursor dropped so far.
    pruned_through: Option<Cursor>,
}

impl<T> Default for Ring<T> {
    fn default() -> Self {
        Self {
            records: VecDeque::new(),
            pruned_through: None,
        }
    }
}

/// What a record must say for its ring to bound it.
pub trait Journaled {
    fn cursor(&self) -> Cursor;
    fn at_ms(&self) -> i64;
}

impl Journaled for Event {
    fn cursor(&self) -> Cursor {
        self.cursor
    }
    fn at_ms(&self) -> i64 {
        self.at_ms
    }
}

impl Journaled for AuditRecord {
    fn cursor(&self) -> Cursor {
        self.cursor
    }
    fn at_ms(&self) -> i64 {
        self.at_ms
    }
}

impl<T: Journaled + Clone> Ring<T> {
    fn push(&mut self, record: T, retention: Retention) {
        self.records.push_back(record);
        while self.records.len() > retention.max_records as usize {
            self.drop_oldest();
        }
    }

    fn drop_oldest(&mut self) {
        if let Some(dropped) = self.records.pop_front() {
            self.pruned_through = Some(dropped.cursor());
        }
    }

    /// Records of unknown time (at_ms 0: a membership change before any
    /// timed entry, such as the cluster's first) age out only by count.
    fn prune(&mut self, now_ms: i64, retention: Retention) {
        let oldest_kept = now_ms.saturating_sub(retention.max_age_ms);
        while self.records.len() > retention.max_records as usize
            || self
                .records
                .front()
                .is_some_and(|r| r.at_ms() > 0 && r.at_ms() < oldest_kept)
        {
            self.drop_oldest();
        }
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn pruned_through(&self) -> Option<Cursor> {
        self.pruned_through
    }

    /// Records strictly after `after` (all retained ones when `None`) that
    /// `keep` accepts, at most `limit`. Refused when `after` is older than
    /// what was dropped, so a reader never silently misses records.
    pub fn after(
        &self,
        after: Option<Cursor>,
        limit: usize,
        keep: impl Fn(&T) -> bool,
    ) -> Result<Vec<T>, Pruned> {
        if let (Some(after), Some(through)) = (after, self.pruned_through) {
            if after < through {
                return Err(Pruned { through });
            }
        }
        let start = match after {
            Some(after) => self.records.partition_point(|r| r.cursor() <= after),
            None => 0,
        };
        Ok(self
            .records
            .range(start..)
            .filter(|r| keep(r))
            .take(limit)
            .cloned()
            .collect())
    }

    pub fn newest(&self) -> Option<Cursor> {
        self.records.back().map(Journaled::cursor)
    }
}

/// Where in the log the records being written come from. Replicated (not
/// derived) so that a server restored from a snapshot stamps a membership
/// entry with the same time as one that applied every entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Position {
    pub index: u64,
    pub next_seq: u32,
    pub at_ms: i64,
}

/// The replicated part of the journal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    pub(crate) events: Ring<Event>,
    pub(crate) audit: Ring<AuditRecord>,
    pub(crate) retention: Retention,
    pub(crate) position: Position,
}

impl Journal {
    pub fn events(&self) -> &Ring<Event> {
        &self.events
    }

    pub fn audit(&self) -> &Ring<AuditRecord> {
        &self.audit
    }

    pub fn retention(&self) -> Retention {
        self.retention
    }

    /// The newest cursor of either ring.
    pub fn newest(&self) -> Option<Cursor> {
        self.events.newest().max(self.audit.newest())
    }

    /// Starts the records of log entry `index`.
    pub(crate) fn begin_entry(&mut self, index: u64) {
        if index != self.position.index {
            self.position.index = index;
            self.position.next_seq = 0;
        }
    }

    /// Stamps what follows with `at_ms` (the proposer's clock, carried in
    /// the entry) and drops what has aged out by then.
    pub(crate) fn set_clock(&mut self, at_ms: i64) {
        self.position.at_ms = at_ms;
        self.events.prune(at_ms, self.retention);
        self.audit.prune(at_ms, self.retention);
    }

    fn next_cursor(&mut self) -> Cursor {
        let cursor = Cursor {
            index: self.position.index,
            seq: self.position.next_seq,
        };
        self.position.next_seq = self.position.next_seq.saturating_add(1);
        cursor
    }

    pub(crate) fn record_event(&mut self, actor: &Actor, cluster: &str, detail: EventDetail) {
        let event = Event {
            cursor: self.next_cursor(),
            at_ms: self.position.at_ms,
            actor: actor.clone(),
            cluster: cluster.to_string(),
            detail,
        };
        self.events.push(event, self.retention);
    }

    pub(crate) fn record_audit(
        &mut self,
        actor: &Actor,
        command: &str,
        resource: String,
        error: Option<String>,
    ) {
        let record = AuditRecord {
            cursor: self.next_cursor(),
            at_ms: self.position.at_ms,
            actor: actor.clone(),
            command: command.to_string(),
            resource,
            error,
        };
        self.audit.push(record, self.retention);
    }

    pub(crate) fn set_retention(&mut self, retention: Retention) {
        self.retention = retention;
        let now = self.position.at_ms;
        self.events.prune(now, retention);
        self.audit.prune(now, retention);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(index: u64, seq: u32, at_ms: i64) -> Event {
        Event {
            cursor: Cursor { index, seq },
            at_ms,
            actor: Actor::server(1),
            cluster: "default".into(),
            detail: EventDetail::ClusterChange {
                name: "default".into(),
                change: Change::Updated,
            },
        }
    }

    #[test]
    fn cursors_parse_as_printed_and_a_bare_index_means_its_whole_entry() {
        let c = Cursor { index: 42, seq: 3 };
        assert_eq!(c.to_string().parse::<Cursor>().unwrap(), c);
        let whole: Cursor = "42".parse().unwrap();
        assert!(whole > c && whole < Cursor { index: 43, seq: 0 });
        let err = "4x.1".parse::<Cursor>().unwrap_err();
        assert!(err.contains("INDEX.SEQ"), "{err}");
    }

    #[test]
    fn rings_keep_the_newest_records_and_refuse_a_resume_into_what_they_dropped() {
        let retention = Retention {
            max_records: 3,
            max_age_ms: 1_000,
        };
        let mut ring = Ring::default();
        for i in 1..=5 {
            ring.push(event(i, 0, 100), retention);
        }
        let cursors = |v: Vec<Event>| v.into_iter().map(|e| e.cursor.index).collect::<Vec<_>>();
        assert_eq!(cursors(ring.after(None, 10, |_| true).unwrap()), [3, 4, 5]);
        assert_eq!(
            cursors(
                ring.after(Some(Cursor { index: 3, seq: 0 }), 10, |_| true)
                    .unwrap()
            ),
            [4, 5]
        );
        // Resuming after record 1 would skip record 2, which is gone.
        let pruned = ring
            .after(Some(Cursor { index: 1, seq: 0 }), 10, |_| true)
            .unwrap_err();
        assert_eq!(pruned.through, Cursor { index: 2, seq: 0 });
        // Resuming exactly at the newest dropped record misses nothing.
        assert!(ring.after(Some(pruned.through), 10, |_| true).is_ok());
        // Age: everything older than max_age before "now" goes.
        ring.push(event(6, 0, 2_000), retention);
        ring.prune(2_050, retention);
        assert_eq!(cursors(ring.after(None, 10, |_| true).unwrap()), [6]);
    }

    #[test]
    fn filters_select_by_type_resource_prefix_actor_and_time() {
        let mut e = event(1, 0, 500);
        e.actor = Actor {
            principal: Principal::Token {
                id: "abc".into(),
                role: Role::Admin,
            },
            operation: "CreateCluster".into(),
            peer: String::new(),
        };
        let f = |filter: EventFilter| filter.accepts(&e);
        assert!(f(EventFilter::default()));
        assert!(f(EventFilter {
            types: vec![EventType::Cluster],
            ..Default::default()
        }));
        assert!(!f(EventFilter {
            types: vec![EventType::Task],
            ..Default::default()
        }));
        assert!(f(EventFilter {
            resource: Some("cluster/".into()),
            ..Default::default()
        }));
        assert!(!f(EventFilter {
            resource: Some("cluster/defaul".into()),
            ..Default::default()
        }));
        assert!(f(EventFilter {
            actor: Some("abc".into()),
            ..Default::default()
        }));
        assert!(f(EventFilter {
            actor: Some("token:abc".into()),
            ..Default::default()
        }));
        assert!(!f(EventFilter {
            actor: Some("server:1".into()),
            ..Default::default()
        }));
        assert!(!f(EventFilter {
            since_ms: Some(501),
            ..Default::default()
        }));
        assert_eq!(EventType::parse("taskdef"), Ok(EventType::TaskDefinition));
        assert!(EventType::parse("tsk").unwrap_err().contains("task,"));
    }
}
