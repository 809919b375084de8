//! Commands are the only way state changes: each is an entry (or part of a
//! batched entry) in the Raft log, applied in the same order on every server.
//! Anything that varies between servers (clock readings, generated ids) is
//! decided by the proposer and carried inside the command.

use serde::{Deserialize, Serialize};

use crate::{Cluster, TaskDefinition, TaskDefinitionSpec};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    CreateCluster {
        name: String,
        at_ms: i64,
    },
    DeleteCluster {
        name: String,
    },
    RegisterTaskDefinition {
        spec: TaskDefinitionSpec,
        at_ms: i64,
    },
    DeregisterTaskDefinition {
        family: String,
        revision: u32,
        at_ms: i64,
    },
}

impl Command {
    /// Short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::CreateCluster { .. } => "create_cluster",
            Command::DeleteCluster { .. } => "delete_cluster",
            Command::RegisterTaskDefinition { .. } => "register_task_definition",
            Command::DeregisterTaskDefinition { .. } => "deregister_task_definition",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CommandOutput {
    Cluster(Cluster),
    ClusterDeleted(String),
    TaskDefinition(TaskDefinition),
}
