use serde::{Deserialize, Serialize};

/// The cluster every control plane has from its first moment; it cannot be
/// deleted, so commands that omit a cluster always have somewhere to go.
pub const DEFAULT_CLUSTER: &str = "default";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClusterStatus {
    Active,
}

impl ClusterStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterStatus::Active => "ACTIVE",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        value
            .eq_ignore_ascii_case("ACTIVE")
            .then_some(ClusterStatus::Active)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSettings {
    /// How long an instance may stay disconnected before its tasks are
    /// declared lost and replaced.
    pub lost_after_secs: u64,
    /// How long a STOPPED task stays describable before it is removed.
    #[serde(default = "default_task_retention_secs")]
    pub task_retention_secs: u64,
}

pub const DEFAULT_LOST_AFTER_SECS: u64 = 300;
pub const DEFAULT_TASK_RETENTION_SECS: u64 = 3600;

fn default_task_retention_secs() -> u64 {
    DEFAULT_TASK_RETENTION_SECS
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            lost_after_secs: DEFAULT_LOST_AFTER_SECS,
            task_retention_secs: DEFAULT_TASK_RETENTION_SECS,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    pub name: String,
    pub status: ClusterStatus,
    pub created_at_ms: i64,
    pub settings: ClusterSettings,
    /// Appended last: records are stored positionally (bincode).
    #[serde(default)]
    pub tags: std::collections::BTreeMap<String, String>,
}
