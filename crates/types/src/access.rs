//! Records of identity and access: operator API tokens, activations (join
//! tokens for agents) and registered instances. Secrets are never stored,
//! only their SHA-256 hashes (hex), computed by the server before proposing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::resources::{InstanceCapacity, Resources};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// Describe, list and status calls only; not container logs.
    Readonly,
    /// What readonly may do, plus reading container logs, which can hold
    /// whatever the application prints (tokens, personal data).
    Logs,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Readonly => "readonly",
            Role::Logs => "logs",
        }
    }

    /// Whether a token of this role may make a call that needs `needed`:
    /// admin grants everything, logs grants readonly's calls too.
    pub fn grants(self, needed: Role) -> bool {
        match needed {
            Role::Readonly => true,
            Role::Logs => matches!(self, Role::Logs | Role::Admin),
            Role::Admin => self == Role::Admin,
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value.to_ascii_lowercase().as_str() {
            "admin" => Some(Role::Admin),
            "readonly" | "read-only" => Some(Role::Readonly),
            "logs" => Some(Role::Logs),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiToken {
    pub id: String,
    pub role: Role,
    pub description: String,
    pub secret_hash: String,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
    /// An AWS-format credential (`berth auth token create --format aws`):
    /// the secret access key, sealed under the data key, because verifying
    /// a SigV4 signature needs the secret itself. `secret_hash` is empty
    /// then, so the credential is never accepted as a bearer token.
    pub aws_secret: Option<SealedKey>,
}

/// A secret access key sealed under the cluster data key (AES-256-GCM,
/// authenticated with the access key id), like secrets' values.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedKey {
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for SealedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealedKey(..)")
    }
}

/// An AWS access key sealed again under another data key (see
/// `Command::ResealAwsAccessKeys`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResealedKey {
    pub id: String,
    pub sealed: SealedKey,
}

impl std::fmt::Debug for ResealedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResealedKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// What the data key authenticates an access key's sealed secret with:
/// its id, so a sealed secret cannot be moved to another key.
pub fn aws_key_seal_name(id: &str) -> String {
    format!("aws-access-key/{id}")
}

impl ApiToken {
    /// Whether this is an AWS-format credential (SigV4 only).
    pub fn is_aws(&self) -> bool {
        self.aws_secret.is_some()
    }

    /// Whether the token grants anything at `now_ms`.
    pub fn is_usable(&self, now_ms: i64) -> bool {
        self.revoked_at_ms.is_none() && self.expires_at_ms.is_none_or(|e| now_ms < e)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Activation {
    pub id: String,
    pub cluster: String,
    pub description: String,
    pub secret_hash: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub max_registrations: u32,
    pub registrations: u32,
    pub attributes: BTreeMap<String, String>,
    pub revoked_at_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InstanceStatus {
    Active,
    /// Deregistered: its certificate is refused everywhere.
    Inactive,
}

impl InstanceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceStatus::Active => "ACTIVE",
            InstanceStatus::Inactive => "INACTIVE",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    pub id: String,
    pub cluster: String,
    pub hostname: String,
    pub attributes: BTreeMap<String, String>,
    pub activation_id: String,
    pub registered_at_ms: i64,
    pub certificate_expires_at_ms: i64,
    pub status: InstanceStatus,
    pub deregistered_at_ms: Option<i64>,
    /// Reported in the agent's hello.
    pub agent_version: String,
    /// Kept up to date by the leader from the agent session (transitions
    /// only; heartbeats are never written).
    pub agent_connected: bool,
    pub connected_since_ms: Option<i64>,
    pub last_seen_ms: Option<i64>,
    /// Set by an operator: no new placements.
    pub draining: bool,
    /// Registered resources (from the hello) and what placed tasks hold.
    pub capacity: InstanceCapacity,
    /// Bumped whenever a task placed here changes; what the agent acks.
    pub assignment_seq: u64,
    /// SHA-256 (hex) of the SubjectPublicKeyInfo of the key in the last
    /// certificate issued to this instance (registration or renewal).
    /// Registering again under this id needs a CSR with the same key:
    /// proof that the caller is the host that held the id, not merely a
    /// holder of a join token of the same cluster.
    pub public_key_sha256: String,
    /// What the agent reports about its host (registration, then every
    /// hello replaces it): detected facts and the host's `--attribute`s.
    /// Self-reported, so a compromised host could claim anything here:
    /// these are seen only as `agent.NAME` (see [`Instance::all_attributes`])
    /// and never change the operator's `attributes`.
    pub agent_attributes: BTreeMap<String, String>,
    /// Appended last: records are stored positionally (bincode).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// The prefix agent-reported attributes are seen under; operators cannot
/// set or delete names with it.
pub const AGENT_ATTRIBUTE_PREFIX: &str = "agent.";

/// Operator attributes that cap the CPU units and memory (MiB) an agent may
/// claim for its host: the scheduler places against the smaller of the
/// cap and the report, so a host that lies cannot attract more than the
/// operator allowed. Set by an activation (for every host it registers) or
/// `berth instance attribute put`; a positive whole number.
pub const CPU_CAP_ATTRIBUTE: &str = "berth.capacity.cpu";
pub const MEMORY_CAP_ATTRIBUTE: &str = "berth.capacity.memory";

impl Instance {
    /// What placement matches and people see: the operator's attributes
    /// (from the activation and `berth instance attribute put`), and every
    /// agent-reported one as `agent.NAME` (the claimed capacity as
    /// `agent.capacity.cpu` and `agent.capacity.memory`). The two never collide, so a host
    /// cannot satisfy a constraint on an operator attribute by reporting it.
    pub fn all_attributes(&self) -> BTreeMap<String, String> {
        let mut all = self.attributes.clone();
        for (name, value) in &self.agent_attributes {
            all.entry(format!("{AGENT_ATTRIBUTE_PREFIX}{name}"))
                .or_insert_with(|| value.clone());
        }
        // The capacity the agent claims (once it has), whatever the
        // operator's caps.
        let reported = self.capacity.registered();
        if reported != Resources::ZERO {
            all.insert(
                format!("{AGENT_ATTRIBUTE_PREFIX}capacity.cpu"),
                reported.cpu.to_string(),
            );
            all.insert(
                format!("{AGENT_ATTRIBUTE_PREFIX}capacity.memory"),
                reported.memory_mib.to_string(),
            );
        }
        all
    }

    /// What placements count on: the capacity the agent reported, each
    /// part capped by the operator's `berth.capacity.*` attribute when set.
    /// The cap is applied by the scheduler and in what people see, not
    /// when entries are applied: the state machine keeps checking placements
    /// against the report, so servers of different versions apply the same
    /// log to the same state.
    pub fn placeable_capacity(&self) -> InstanceCapacity {
        let reported = self.capacity.registered();
        let cap = |name: &str, reported: u64| {
            self.attributes
                .get(name)
                .and_then(|v| v.parse::<u64>().ok())
                .map_or(reported, |cap| cap.min(reported))
        };
        let mut capacity = self.capacity.clone();
        capacity.set_registered(Resources::new(
            cap(CPU_CAP_ATTRIBUTE, reported.cpu),
            cap(MEMORY_CAP_ATTRIBUTE, reported.memory_mib),
        ));
        capacity
    }

    /// The status people and the scheduler see: INACTIVE (deregistered),
    /// DISCONNECTED (agent not connected), DRAINING, or ACTIVE, in that
    /// order of precedence.
    pub fn display_status(&self) -> InstanceState {
        if self.status == InstanceStatus::Inactive {
            InstanceState::Inactive
        } else if !self.agent_connected {
            InstanceState::Disconnected
        } else if self.draining {
            InstanceState::Draining
        } else {
            InstanceState::Active
        }
    }

    /// Whether new tasks may be placed here.
    pub fn takes_new_tasks(&self) -> bool {
        self.display_status() == InstanceState::Active
    }
}

/// Where an instance stands, as shown and as scheduled: only ACTIVE
/// instances receive new tasks; the others keep (and are charged for) the
/// tasks they run. Derived from the record ([`Instance::display_status`]),
/// never stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InstanceState {
    Active,
    /// Being emptied by an operator.
    Draining,
    /// The agent stopped heartbeating; its tasks are not yet declared lost.
    Disconnected,
    /// Deregistered.
    Inactive,
}

impl InstanceState {
    pub const ALL: [InstanceState; 4] = [
        InstanceState::Active,
        InstanceState::Draining,
        InstanceState::Disconnected,
        InstanceState::Inactive,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Active => "ACTIVE",
            InstanceState::Draining => "DRAINING",
            InstanceState::Disconnected => "DISCONNECTED",
            InstanceState::Inactive => "INACTIVE",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(value))
    }
}

impl std::fmt::Display for InstanceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a registration asks for; carried by `Command::RegisterInstance`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub activation_id: String,
    pub secret_hash: String,
    /// Chosen by the proposer; used unless `previous_instance_id` is kept.
    pub new_instance_id: String,
    pub previous_instance_id: Option<String>,
    pub expected_cluster: Option<String>,
    pub hostname: String,
    pub attributes: BTreeMap<String, String>,
    pub certificate_expires_at_ms: i64,
    pub at_ms: i64,
    /// SHA-256 of the CSR's SubjectPublicKeyInfo (the CSR's signature was
    /// checked by the proposer).
    pub public_key_sha256: String,
}

/// An entry of the certificate revocation list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevokedCertificate {
    /// SHA-256 of the certificate's DER, lowercase hex.
    pub fingerprint: String,
    pub description: String,
    pub revoked_at_ms: i64,
}

/// Whether `text` is a certificate fingerprint as Berth writes them: 64
/// lowercase hex digits.
pub fn is_fingerprint(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
