//! What the API shows that is not a stored record as it is: records without
//! their secrets' hashes, and figures computed from the state (an
//! instance's free resources, the control plane's members). Plain data; the
//! server builds them from the state and clients get them back from the
//! wire.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::access::{Activation, ApiToken, Instance, InstanceState, Role};

/// An API token as the API shows it: the record without its secret's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiTokenView {
    pub id: String,
    pub role: Role,
    pub description: String,
    pub created_at_ms: i64,
    /// `None`: never expires.
    pub expires_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
    /// How the credential is presented: a bearer token, or an AWS access
    /// key that signs requests to the ECS endpoint with SigV4.
    pub format: TokenFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenFormat {
    #[default]
    Bearer,
    Aws,
}

impl TokenFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bearer => "bearer",
            Self::Aws => "aws",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "" | "bearer" => Some(Self::Bearer),
            "aws" => Some(Self::Aws),
            _ => None,
        }
    }
}

/// Whether a token grants anything, as of a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ApiTokenStatus {
    Active,
    Expired,
    Revoked,
}

impl ApiTokenView {
    /// Revoked outranks expired: revoking is what someone did about it.
    pub fn status(&self, now_ms: i64) -> ApiTokenStatus {
        if self.revoked_at_ms.is_some() {
            ApiTokenStatus::Revoked
        } else if self.expires_at_ms.is_some_and(|e| e <= now_ms) {
            ApiTokenStatus::Expired
        } else {
            ApiTokenStatus::Active
        }
    }
}

impl From<&ApiToken> for ApiTokenView {
    fn from(t: &ApiToken) -> Self {
        Self {
            id: t.id.clone(),
            role: t.role,
            description: t.description.clone(),
            created_at_ms: t.created_at_ms,
            expires_at_ms: t.expires_at_ms,
            revoked_at_ms: t.revoked_at_ms,
            format: if t.is_aws() {
                TokenFormat::Aws
            } else {
                TokenFormat::Bearer
            },
        }
    }
}

/// An activation (join token) as the API shows it: the record without its
/// secret's hash. The API says whether it was revoked, not when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivationView {
    pub id: String,
    pub cluster: String,
    pub description: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub max_registrations: u32,
    pub registrations: u32,
    /// Given to every instance that registers with it.
    pub attributes: BTreeMap<String, String>,
    pub revoked: bool,
}

/// Whether an activation still registers instances, as of a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ActivationStatus {
    Active,
    /// Every registration it allows is taken.
    Used,
    Expired,
    Revoked,
}

impl ActivationView {
    pub fn status(&self, now_ms: i64) -> ActivationStatus {
        if self.revoked {
            ActivationStatus::Revoked
        } else if self.expires_at_ms <= now_ms {
            ActivationStatus::Expired
        } else if self.registrations >= self.max_registrations {
            ActivationStatus::Used
        } else {
            ActivationStatus::Active
        }
    }
}

impl From<&Activation> for ActivationView {
    fn from(a: &Activation) -> Self {
        Self {
            id: a.id.clone(),
            cluster: a.cluster.clone(),
            description: a.description.clone(),
            created_at_ms: a.created_at_ms,
            expires_at_ms: a.expires_at_ms,
            max_registrations: a.max_registrations,
            registrations: a.registrations,
            attributes: a.attributes.clone(),
            revoked: a.revoked_at_ms.is_some(),
        }
    }
}

/// A container instance as the API shows it: the record's facts, the
/// status people see, and what its tasks take and leave. Its JSON is what
/// `berth instance ... -o json` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceView {
    pub id: String,
    pub cluster: String,
    pub hostname: String,
    pub attributes: BTreeMap<String, String>,
    pub activation_id: String,
    pub registered_at_ms: i64,
    pub certificate_expires_at_ms: i64,
    pub status: InstanceState,
    pub deregistered_at_ms: Option<i64>,
    /// `None` until the agent has connected once.
    pub agent_version: Option<String>,
    pub agent_connected: bool,
    /// Set while connected: when the current session began.
    pub connected_since_ms: Option<i64>,
    /// Set while disconnected: when the agent was last heard from.
    pub last_seen_ms: Option<i64>,
    /// What tasks are placed against, in CPU units (1024 = one core): what
    /// the agent reported, capped by the operator's `berth.capacity.cpu`
    /// (the claim itself is the attribute `agent.capacity.cpu`), and what
    /// placed tasks leave of it; likewise memory in MiB.
    pub cpu_registered: u64,
    pub cpu_remaining: u64,
    pub memory_registered_mib: u64,
    pub memory_remaining_mib: u64,
    /// Host ports held by placed tasks.
    pub ports_in_use: Vec<u32>,
    /// Tasks placed here and not yet STOPPED.
    pub running_tasks: u32,
    pub draining: bool,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

impl InstanceView {
    /// `running_tasks` comes from the state's task index, which the record
    /// does not hold.
    pub fn new(instance: &Instance, running_tasks: usize) -> Self {
        let i = instance;
        // What placements count on: the claim, capped by the operator.
        let placeable = i.placeable_capacity();
        let (registered, remaining) = (placeable.registered(), placeable.remaining());
        Self {
            id: i.id.clone(),
            cluster: i.cluster.clone(),
            hostname: i.hostname.clone(),
            attributes: i.all_attributes(),
            activation_id: i.activation_id.clone(),
            registered_at_ms: i.registered_at_ms,
            certificate_expires_at_ms: i.certificate_expires_at_ms,
            status: i.display_status(),
            deregistered_at_ms: i.deregistered_at_ms,
            agent_version: Some(i.agent_version.clone()).filter(|v| !v.is_empty()),
            agent_connected: i.agent_connected,
            connected_since_ms: i.connected_since_ms,
            last_seen_ms: i.last_seen_ms,
            cpu_registered: registered.cpu,
            cpu_remaining: remaining.cpu,
            memory_registered_mib: registered.memory_mib,
            memory_remaining_mib: remaining.memory_mib,
            ports_in_use: i.capacity.used_ports().iter().map(|p| p.port).collect(),
            running_tasks: u32::try_from(running_tasks).unwrap_or(u32::MAX),
            draining: i.draining,
            tags: i.tags.clone(),
        }
    }
}

/// A task definition family: its newest revision, and the newest one still
/// ACTIVE (what `FAMILY` alone refers to), if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskDefinitionFamily {
    pub family: String,
    pub latest_revision: u32,
    pub latest_active_revision: Option<u32>,
}

/// The control plane as one server sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlPlaneStatus {
    /// `None` while no leader is elected.
    pub leader_id: Option<u64>,
    pub term: u64,
    /// The server that answered.
    pub answered_by: u64,
    pub members: Vec<ServerMember>,
}

/// One control-plane server and its replication progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerMember {
    pub node_id: u64,
    pub address: String,
    pub role: ServerRole,
    pub voter: bool,
    pub reachable: bool,
    pub term: u64,
    pub last_log_index: u64,
    pub applied_index: u64,
    /// Last log index its latest snapshot covers.
    pub snapshot_index: u64,
    /// Why it could not be reached; `None` when it could.
    pub error: Option<String>,
}

/// A server's Raft role; `Unknown` when it could not be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerRole {
    Leader,
    Follower,
    Learner,
    Candidate,
    Shutdown,
    Unknown,
}

impl ServerRole {
    pub const ALL: [ServerRole; 6] = [
        ServerRole::Leader,
        ServerRole::Follower,
        ServerRole::Learner,
        ServerRole::Candidate,
        ServerRole::Shutdown,
        ServerRole::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ServerRole::Leader => "leader",
            ServerRole::Follower => "follower",
            ServerRole::Learner => "learner",
            ServerRole::Candidate => "candidate",
            ServerRole::Shutdown => "shutdown",
            ServerRole::Unknown => "unknown",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(expires_at_ms: Option<i64>, revoked_at_ms: Option<i64>) -> ApiTokenView {
        ApiTokenView {
            id: "0a1b2c".into(),
            role: Role::Admin,
            description: String::new(),
            created_at_ms: 0,
            expires_at_ms,
            revoked_at_ms,
            format: TokenFormat::Bearer,
        }
    }

    #[test]
    fn token_status_is_revoked_then_expired_then_active() {
        assert_eq!(token(None, None).status(100), ApiTokenStatus::Active);
        assert_eq!(token(Some(100), None).status(100), ApiTokenStatus::Expired);
        assert_eq!(token(Some(101), None).status(100), ApiTokenStatus::Active);
        assert_eq!(
            token(Some(100), Some(50)).status(100),
            ApiTokenStatus::Revoked
        );
    }

    #[test]
    fn activation_status_is_revoked_then_expired_then_used_then_active() {
        let mut a = ActivationView {
            id: "a1".into(),
            cluster: "default".into(),
            description: String::new(),
            created_at_ms: 0,
            expires_at_ms: 100,
            max_registrations: 2,
            registrations: 1,
            attributes: BTreeMap::new(),
            revoked: false,
        };
        assert_eq!(a.status(99), ActivationStatus::Active);
        a.registrations = 2;
        assert_eq!(a.status(99), ActivationStatus::Used);
        assert_eq!(a.status(100), ActivationStatus::Expired);
        a.revoked = true;
        assert_eq!(a.status(100), ActivationStatus::Revoked);
    }

    #[test]
    fn an_instance_view_shows_what_tasks_leave_and_no_version_before_a_session() {
        use crate::access::InstanceStatus;
        use crate::resources::{HostPort, InstanceCapacity, Reservation, Resources};

        let mut capacity = InstanceCapacity::new(Resources::new(2048, 4096));
        let reservation = Reservation::new(512, 256).with_port(HostPort::tcp(8080));
        capacity.allocate(&reservation).unwrap();
        let instance = Instance {
            id: "i-1".into(),
            cluster: "default".into(),
            hostname: "node-1".into(),
            attributes: BTreeMap::new(),
            activation_id: "a1".into(),
            registered_at_ms: 1,
            certificate_expires_at_ms: 2,
            status: InstanceStatus::Active,
            deregistered_at_ms: None,
            agent_version: String::new(),
            agent_connected: false,
            connected_since_ms: None,
            last_seen_ms: None,
            draining: false,
            capacity,
            assignment_seq: 0,
            public_key_sha256: "k".into(),
            agent_attributes: BTreeMap::new(),
            tags: BTreeMap::new(),
        };
        let view = InstanceView::new(&instance, 3);
        assert_eq!(view.status, InstanceState::Disconnected);
        assert_eq!(view.agent_version, None);
        assert_eq!((view.cpu_registered, view.cpu_remaining), (2048, 1536));
        assert_eq!(
            (view.memory_registered_mib, view.memory_remaining_mib),
            (4096, 3840)
        );
        assert_eq!(view.ports_in_use, [8080]);
        assert_eq!(view.running_tasks, 3);
    }

    #[test]
    fn server_roles_read_back_from_their_names() {
        for role in ServerRole::ALL {
            assert_eq!(ServerRole::parse(role.as_str()), Some(role));
            assert_eq!(
                serde_json::to_value(role).unwrap(),
                serde_json::Value::String(role.as_str().into())
            );
        }
        assert_eq!(ServerRole::parse("Leader"), Some(ServerRole::Leader));
        assert_eq!(ServerRole::parse("boss"), None);
    }
}
