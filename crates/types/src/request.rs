//! What callers of the control API and the agent API hand in, and the
//! replies that are not records: plain data, checked by the server (the
//! strings here are passed on as given, so the server's messages name the
//! problem the same way whoever called).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::task::TaskStatus;

/// What RunTask and StartTask share: which task definition, where, and how
/// the tasks are labelled.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskLaunch {
    /// `None`: the default cluster.
    pub cluster: Option<String>,
    /// `FAMILY` (its latest ACTIVE revision) or `FAMILY:REVISION`.
    pub task_definition: String,
    pub group: Option<String>,
    pub started_by: Option<String>,
    /// `CONTAINER.env.KEY=VALUE`, as given.
    pub overrides: Vec<String>,
    /// Idempotency: the same token never starts tasks twice, so a call
    /// carrying one may be sent again after a lost reply. `None`: the call
    /// is an ordinary write.
    pub client_token: Option<String>,
}

/// RunTask: tasks placed by the scheduler.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunTaskInput {
    pub launch: TaskLaunch,
    /// How many tasks; 0 counts as 1, as on the wire.
    pub count: u32,
    /// `binpack:memory`, `spread:attribute:zone`, `random`, ...
    pub placement_strategies: Vec<String>,
    /// `distinctInstance`, `memberOf(...)`.
    pub placement_constraints: Vec<String>,
}

/// StartTask: one task on each named instance, bypassing placement.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartTaskInput {
    pub launch: TaskLaunch,
    pub instance_ids: Vec<String>,
}

/// Which tasks ListTasks returns; `None` does not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskFilter {
    pub cluster: Option<String>,
    pub instance_id: Option<String>,
    pub family: Option<String>,
    /// The last status.
    pub status: Option<TaskStatus>,
}

/// What a task-logs call reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogOptions {
    /// `None`: the task's first container.
    pub container: Option<String>,
    /// Keep streaming new output until the task stops or the reader goes.
    pub follow: bool,
    /// Only the last N lines; `None`: everything.
    pub tail: Option<u32>,
}

/// Which of a container's outputs a piece of log came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputStream {
    Stdout,
    Stderr,
}

impl OutputStream {
    pub fn as_str(self) -> &'static str {
        match self {
            OutputStream::Stdout => "stdout",
            OutputStream::Stderr => "stderr",
        }
    }
}

/// A piece of a container's output, bytes as the container wrote them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogChunk {
    pub stream: OutputStream,
    pub data: Vec<u8>,
}

/// An agent's registration with an activation (join token).
#[derive(Clone, PartialEq, Eq)]
pub struct RegisterInstanceInput {
    pub activation_id: String,
    pub activation_secret: String,
    /// PEM certificate signing request; the key never leaves the host.
    pub csr_pem: String,
    pub hostname: String,
    pub attributes: BTreeMap<String, String>,
    /// Set when an agent whose certificate expired registers again: it
    /// keeps its instance id.
    pub previous_instance_id: Option<String>,
    /// The cluster the agent expects to join; `None`: the activation's.
    pub cluster: Option<String>,
}

// By hand, so the activation secret never reaches a log through `{:?}`.
impl std::fmt::Debug for RegisterInstanceInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisterInstanceInput")
            .field("activation_id", &self.activation_id)
            .field("activation_secret", &"<redacted>")
            .field("hostname", &self.hostname)
            .field("attributes", &self.attributes)
            .field("previous_instance_id", &self.previous_instance_id)
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

/// What a registration gets: the instance's id and cluster, and a client
/// certificate for the CSR's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisteredInstance {
    pub instance_id: String,
    pub cluster: String,
    pub certificate_pem: String,
    pub ca_pem: String,
    pub certificate_expires_at_ms: i64,
    /// The server's clock when it signed; 0 from servers before it was sent.
    pub server_time_ms: i64,
}

/// A renewed instance certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IssuedCertificate {
    pub certificate_pem: String,
    pub certificate_expires_at_ms: i64,
    /// The server's clock when it signed; 0 from servers before it was sent.
    pub server_time_ms: i64,
}

/// The answer to an agent's ping: who the server thinks is calling, its
/// clock, and the roots it trusts (empty from servers before CA rotation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentPing {
    pub instance_id: String,
    pub server_time_ms: i64,
    #[serde(default)]
    pub ca_pem: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registration_never_shows_its_secret_in_debug_output() {
        let input = RegisterInstanceInput {
            activation_id: "a1".into(),
            activation_secret: "s3cr3t".into(),
            csr_pem: String::new(),
            hostname: "node-1".into(),
            attributes: BTreeMap::new(),
            previous_instance_id: None,
            cluster: None,
        };
        let text = format!("{input:?}");
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(text.contains("node-1"), "{text}");
    }
}
