//! Commands are the only way state changes: each is an entry (or part of a
//! batched entry) in the Raft log, applied in the same order on every server.
//! Anything that varies between servers (clock readings, generated ids) is
//! decided by the proposer and carried inside the command.

use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use crate::{
    Activation, ApiToken, Cluster, Instance, Registration, Role, TaskDefinition, TaskDefinitionSpec,
};

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
    /// The admin token created at bootstrap; a no-op once a token with this
    /// id exists (so a revoked bootstrap token never comes back).
    BootstrapAdminToken {
        id: String,
        secret_hash: String,
        at_ms: i64,
    },
    CreateApiToken {
        id: String,
        role: Role,
        description: String,
        secret_hash: String,
        expires_at_ms: Option<i64>,
        at_ms: i64,
    },
    RevokeApiToken {
        id: String,
        at_ms: i64,
    },
    CreateActivation {
        id: String,
        cluster: String,
        description: String,
        secret_hash: String,
        expires_at_ms: i64,
        max_registrations: u32,
        attributes: BTreeMap<String, String>,
        at_ms: i64,
    },
    RevokeActivation {
        id: String,
        at_ms: i64,
    },
    RegisterInstance(Registration),
    RecordInstanceCertificate {
        instance_id: String,
        expires_at_ms: i64,
    },
    DeregisterInstance {
        instance_id: String,
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
            Command::BootstrapAdminToken { .. } => "bootstrap_admin_token",
            Command::CreateApiToken { .. } => "create_api_token",
            Command::RevokeApiToken { .. } => "revoke_api_token",
            Command::CreateActivation { .. } => "create_activation",
            Command::RevokeActivation { .. } => "revoke_activation",
            Command::RegisterInstance(_) => "register_instance",
            Command::RecordInstanceCertificate { .. } => "record_instance_certificate",
            Command::DeregisterInstance { .. } => "deregister_instance",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CommandOutput {
    Cluster(Cluster),
    ClusterDeleted(String),
    TaskDefinition(TaskDefinition),
    ApiToken(ApiToken),
    Activation(Activation),
    Instance(Instance),
    /// A command that found its outcome already in place.
    Unchanged,
}
