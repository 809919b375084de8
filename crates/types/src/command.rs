//! Commands are the only way state changes: each is an entry (or part of a
//! batched entry) in the Raft log, applied in the same order on every server.
//! Anything that varies between servers (clock readings, generated ids) is
//! decided by the proposer and carried inside the command.

use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use crate::resources::Resources;
use crate::task::{ContainerState, StopCode, Task, TaskStatus};
use crate::{
    Activation, ApiToken, Cluster, ClusterSettings, Instance, Registration, Role, TaskDefinition,
    TaskDefinitionSpec,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    CreateCluster {
        name: String,
        settings: ClusterSettings,
        at_ms: i64,
    },
    UpdateClusterSettings {
        name: String,
        lost_after_secs: Option<u64>,
        task_retention_secs: Option<u64>,
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
    /// RunTask (the scheduler places the tasks) or, with `instance_ids`,
    /// StartTask (one task on each named instance, placed at once).
    RunTasks(RunTasks),
    /// Placement decisions of the leader's scheduler, each re-checked
    /// against the instance as it is now; plus reasons for tasks it could
    /// not place (written only when a reason changes).
    PlaceTasks {
        placements: Vec<TaskPlacement>,
        unplaced: Vec<(String, String)>,
        at_ms: i64,
    },
    /// Status reports from the agent on `instance_id` (from its certificate).
    ReportTaskStatus {
        instance_id: String,
        reports: Vec<TaskReport>,
        at_ms: i64,
    },
    StopTask {
        task_id: String,
        reason: String,
        at_ms: i64,
    },
    InstanceConnected {
        instance_id: String,
        agent_version: String,
        resources: Resources,
        attributes: BTreeMap<String, String>,
        at_ms: i64,
    },
    InstanceDisconnected {
        instance_id: String,
        at_ms: i64,
    },
    /// The instance stayed disconnected past its cluster's `lost_after`:
    /// its tasks are STOPPED with stop code InstanceLost.
    InstanceLost {
        instance_id: String,
        at_ms: i64,
    },
    SetInstanceDraining {
        instance_id: String,
        draining: bool,
    },
    PutInstanceAttributes {
        instance_id: String,
        attributes: BTreeMap<String, String>,
    },
    DeleteInstanceAttributes {
        instance_id: String,
        names: Vec<String>,
    },
    /// Removes STOPPED tasks older than their cluster's retention, and old
    /// client tokens.
    PurgeStoppedTasks {
        now_ms: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunTasks {
    pub cluster: String,
    /// `FAMILY` (latest ACTIVE revision when applied) or `FAMILY:REVISION`.
    pub task_definition: String,
    /// Chosen by the proposer, one per task to start.
    pub task_ids: Vec<String>,
    /// StartTask: one task per instance, in the order of `task_ids`.
    pub instance_ids: Vec<String>,
    pub group: Option<String>,
    pub started_by: String,
    pub placement_strategies: Vec<String>,
    pub placement_constraints: Vec<String>,
    pub overrides: Vec<(String, String, String)>,
    pub client_token: Option<String>,
    pub at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskPlacement {
    pub task_id: String,
    pub instance_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskReport {
    pub task_id: String,
    pub last_status: TaskStatus,
    /// Empty: the containers did not change.
    pub containers: Vec<ContainerState>,
    pub reason: String,
    pub stop_code: Option<StopCode>,
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
            Command::UpdateClusterSettings { .. } => "update_cluster_settings",
            Command::RunTasks(_) => "run_tasks",
            Command::PlaceTasks { .. } => "place_tasks",
            Command::ReportTaskStatus { .. } => "report_task_status",
            Command::StopTask { .. } => "stop_task",
            Command::InstanceConnected { .. } => "instance_connected",
            Command::InstanceDisconnected { .. } => "instance_disconnected",
            Command::InstanceLost { .. } => "instance_lost",
            Command::SetInstanceDraining { .. } => "set_instance_draining",
            Command::PutInstanceAttributes { .. } => "put_instance_attributes",
            Command::DeleteInstanceAttributes { .. } => "delete_instance_attributes",
            Command::PurgeStoppedTasks { .. } => "purge_stopped_tasks",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CommandOutput {
    Cluster(Cluster),
    ClusterDeleted(String),
    TaskDefinition(std::sync::Arc<TaskDefinition>),
    ApiToken(ApiToken),
    Activation(Activation),
    Instance(Instance),
    Task(Task),
    Tasks(Vec<Task>),
    /// What a PlaceTasks did: tasks placed, and (task, why) refused.
    Placed {
        placed: Vec<String>,
        rejected: Vec<(String, String)>,
    },
    Purged(u32),
    /// A command that found its outcome already in place.
    Unchanged,
}
