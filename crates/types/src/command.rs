//! Commands are the only way state changes: each is an entry (or part of a
//! batched entry) in the Raft log, applied in the same order on every server.
//! Anything that varies between servers (clock readings, generated ids) is
//! decided by the proposer and carried inside the command.

use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use crate::access::RevokedCertificate;
use crate::resources::Resources;
use crate::service::{Service, ServiceSpec, ServiceUpdate};
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
        /// The key of the new certificate (see `Instance::public_key_sha256`).
        public_key_sha256: String,
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
    /// Answered with an empty `Tasks`: the changes go out as state events.
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
        /// Ports the agent found bound on the host; those its instance's
        /// tasks hold are Berth's own and are left out when applied.
        host_ports: Vec<crate::resources::HostPort>,
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
    // Services. New variants go at the end: the variant index is the wire
    // format of every command in the log.
    /// CreateService; `deployment_id` names its first deployment.
    CreateService {
        spec: ServiceSpec,
        deployment_id: String,
        at_ms: i64,
    },
    /// UpdateService; `deployment_id` names the new deployment if the
    /// update needs one (new task definition or placement, or forced).
    UpdateService {
        cluster: String,
        name: String,
        update: ServiceUpdate,
        deployment_id: String,
        at_ms: i64,
    },
    /// DeleteService: the service goes DRAINING, its tasks stop, then it is
    /// INACTIVE. Refused while the desired count is above 0 unless `force`.
    DeleteService {
        cluster: String,
        name: String,
        force: bool,
        at_ms: i64,
    },
    /// The service controller starts tasks of a deployment; refused unless
    /// that deployment is still the service's PRIMARY one and the tasks fit
    /// within `maximumPercent` (or, for DAEMON, one per instance).
    StartServiceTasks(StartServiceTasks),
    /// The service controller stops some of a service's tasks; a stop that
    /// would take the healthy tasks below `minimumHealthyPercent` is
    /// skipped, unless the task itself is unhealthy.
    StopServiceTasks {
        cluster: String,
        service: String,
        stops: Vec<ServiceTaskStop>,
        at_ms: i64,
    },
    /// A step of a service's rollout that the controller observed; the
    /// state machine re-checks it before recording it.
    ServiceProgress {
        cluster: String,
        service: String,
        progress: ServiceProgress,
        at_ms: i64,
    },
    /// Adds a certificate (a server's, a signing CA's or an agent's) to the
    /// revocation list every server checks callers against.
    RevokeCertificate {
        /// SHA-256 of the certificate's DER, lowercase hex.
        fingerprint: String,
        description: String,
        at_ms: i64,
    },
    /// The deregistration delay of these DEACTIVATING tasks is over: their
    /// agents are told to stop them.
    EndDeactivation {
        task_ids: Vec<String>,
        at_ms: i64,
    },
    /// `berth service rollback`: a blue/green deployment still shifting
    /// traffic (or baking) gives all traffic back to the deployment before
    /// it, whose tasks still run; a rolling one is replaced by a new
    /// deployment (`deployment_id`) of the last COMPLETED task definition.
    RollbackService {
        cluster: String,
        name: String,
        deployment_id: String,
        at_ms: i64,
    },
    /// `berth events retention`: how many events and audit records the
    /// journal keeps, and for how long.
    SetJournalRetention {
        retention: crate::journal::Retention,
    },
    /// CreateSchedule (`create`) or UpdateSchedule.
    PutSchedule {
        spec: crate::scheduled::ScheduleSpec,
        create: bool,
        at_ms: i64,
    },
    DeleteSchedule {
        cluster: String,
        name: String,
        at_ms: i64,
    },
    SetSchedulePaused {
        cluster: String,
        name: String,
        paused: bool,
        at_ms: i64,
    },
    /// The schedules controller fires one slot.
    FireSchedule(FireSchedule),
    /// CreateSecret (`create`) or UpdateSecret: the value is already
    /// sealed by the proposing server (the log never holds it in clear).
    PutSecret {
        secret: crate::secrets::Secret,
        create: bool,
        at_ms: i64,
    },
    DeleteSecret {
        name: String,
        at_ms: i64,
    },
    /// `berth secret rekey`: secrets sealed again, by the proposing server,
    /// under its primary data key. Each is replaced only while its version
    /// is still the one that was read (compare-and-set): a secret updated
    /// or deleted since is skipped, never overwritten. The version, the
    /// description and the times stay: the value did not change, so no
    /// secret event is raised (the call itself is audited).
    ResealSecrets {
        secrets: Vec<crate::secrets::ResealedSecret>,
    },
    /// TagResource: adds the tags, a key already there taking the new
    /// value; refused if the resource would end up with more than 50.
    TagResource {
        target: crate::tags::TagTarget,
        tags: BTreeMap<String, String>,
    },
    /// UntagResource: keys the resource does not have are ignored, as ECS
    /// does.
    UntagResource {
        target: crate::tags::TagTarget,
        keys: Vec<String>,
    },
    /// PutAccountSetting (`principal` is the caller's principal ARN as
    /// given) or, with `principal` empty, PutAccountSettingDefault. Names
    /// and values are ECS's to check (berth-ecs); the state only bounds
    /// their lengths.
    PutAccountSetting {
        principal: String,
        name: String,
        value: String,
    },
    /// DeleteAccountSetting; `principal` empty deletes the default.
    DeleteAccountSetting {
        principal: String,
        name: String,
    },
    /// CreateCluster with tags, in one command: a TagResource batched after
    /// a CreateCluster would tag an existing cluster of that name when the
    /// create is refused.
    CreateTaggedCluster {
        name: String,
        settings: ClusterSettings,
        tags: BTreeMap<String, String>,
        at_ms: i64,
    },
    /// `berth auth token create --format aws`: an API token that signs
    /// with SigV4; its secret access key sealed by the proposing server.
    CreateAwsAccessKey {
        id: String,
        role: Role,
        description: String,
        sealed: crate::access::SealedKey,
        expires_at_ms: Option<i64>,
        at_ms: i64,
    },
    /// `berth secret rekey`, for AWS access keys: their secrets sealed
    /// again under the proposing server's primary data key.
    ResealAwsAccessKeys {
        keys: Vec<crate::access::ResealedKey>,
    },
    /// DeleteTaskDefinitions (ECS): removes an INACTIVE revision that no
    /// task still running and no current service deployment uses. The
    /// family keeps its revision counter, so the number is never reused.
    DeleteTaskDefinition {
        family: String,
        revision: u32,
        at_ms: i64,
    },
}

/// One slot of a schedule, as the leader's controller decided it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FireSchedule {
    pub cluster: String,
    pub name: String,
    pub slot_ms: i64,
    /// The RunTask to make, its client token named after the slot.
    pub run: Option<RunTasks>,
    /// Concurrency `replace`: the previous run's tasks to stop first.
    pub stop_task_ids: Vec<String>,
    /// Why the slot is skipped instead (concurrency `forbid`, missed slots
    /// without catch-up).
    pub skipped: Option<String>,
    pub at_ms: i64,
}

/// The newest command level this build can apply. Every variant has the
/// level of the release that added it; a leader proposes a command only once
/// every server reports at least its level, so no server ever receives an
/// entry it cannot decode during a rolling upgrade. Raise this when a new
/// variant is appended, and give that variant the new level. A command whose
/// *content* an older server cannot decode (a new enum variant inside it)
/// takes the new level too, decided by content.
///
/// Level 2: bridge network mode in task definitions.
/// Level 3: task network mode; load balancers, deregistration and
/// blue/green deployments of services.
/// Level 4: journal retention; scheduled tasks; secrets (and their
/// re-sealing under a rotated data key).
/// Level 5: tags on clusters, tasks and instances; account settings; AWS
/// access keys.
pub const COMMAND_LEVEL: u32 = 5;

/// The most secrets a ResealSecrets names in its audit record.
const RESOURCE_NAMES: usize = 20;

impl Command {
    /// The command level a server needs to decode and apply this command.
    /// Deliberately without a wildcard: a new variant does not compile until
    /// its level is chosen.
    pub fn level(&self) -> u32 {
        match self {
            Command::TagResource { .. }
            | Command::UntagResource { .. }
            | Command::PutAccountSetting { .. }
            | Command::DeleteAccountSetting { .. }
            | Command::CreateTaggedCluster { .. } => 5,
            Command::SetJournalRetention { .. }
            | Command::PutSchedule { .. }
            | Command::DeleteSchedule { .. }
            | Command::SetSchedulePaused { .. }
            | Command::FireSchedule(_)
            | Command::PutSecret { .. }
            | Command::DeleteSecret { .. }
            | Command::ResealSecrets { .. } => 4,
            Command::CreateAwsAccessKey { .. }
            | Command::ResealAwsAccessKeys { .. }
            | Command::DeleteTaskDefinition { .. } => 5,
            Command::EndDeactivation { .. } | Command::RollbackService { .. } => 3,
            Command::ServiceProgress { progress, .. } => match progress {
                ServiceProgress::TrafficShifted { .. }
                | ServiceProgress::BlueGreenRolledBack { .. } => 3,
                _ => 1,
            },
            Command::RegisterTaskDefinition { spec, .. } => match spec.network_mode {
                crate::NetworkMode::Host | crate::NetworkMode::None => 1,
                crate::NetworkMode::Bridge => 2,
                crate::NetworkMode::Task => 3,
            },
            Command::CreateCluster { .. }
            | Command::UpdateClusterSettings { .. }
            | Command::DeleteCluster { .. }
            | Command::DeregisterTaskDefinition { .. }
            | Command::BootstrapAdminToken { .. }
            | Command::CreateApiToken { .. }
            | Command::RevokeApiToken { .. }
            | Command::CreateActivation { .. }
            | Command::RevokeActivation { .. }
            | Command::RegisterInstance(_)
            | Command::RecordInstanceCertificate { .. }
            | Command::DeregisterInstance { .. }
            | Command::RunTasks(_)
            | Command::PlaceTasks { .. }
            | Command::ReportTaskStatus { .. }
            | Command::StopTask { .. }
            | Command::InstanceConnected { .. }
            | Command::InstanceDisconnected { .. }
            | Command::InstanceLost { .. }
            | Command::SetInstanceDraining { .. }
            | Command::PutInstanceAttributes { .. }
            | Command::DeleteInstanceAttributes { .. }
            | Command::PurgeStoppedTasks { .. }
            | Command::CreateService { .. }
            | Command::UpdateService { .. }
            | Command::DeleteService { .. }
            | Command::StartServiceTasks(_)
            | Command::StopServiceTasks { .. }
            | Command::RevokeCertificate { .. } => 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartServiceTasks {
    pub cluster: String,
    pub service: String,
    pub deployment_id: String,
    /// Chosen by the proposer.
    pub task_ids: Vec<String>,
    /// DAEMON: the instance of each task (placed at once). REPLICA: empty,
    /// the scheduler places them.
    pub instance_ids: Vec<String>,
    pub at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceTaskStop {
    pub task_id: String,
    pub cause: StopCause,
}

/// Why the service controller stops a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopCause {
    /// An essential container failed its health checks after the grace
    /// period; counts as a failed task.
    Unhealthy,
    /// Its deployment was replaced by a newer one.
    Replaced,
    /// More tasks run than the desired count.
    ScaledDown,
    /// Its instance is draining and its replacement is healthy.
    InstanceDraining,
    /// The service was deleted.
    ServiceDeleted,
    /// DAEMON: the instance no longer qualifies, or runs a second copy.
    NotWanted,
}

impl StopCause {
    /// The task's stopped reason, for people.
    pub fn reason(self) -> &'static str {
        match self {
            StopCause::Unhealthy => "Task failed container health checks",
            StopCause::Replaced => "Task replaced by a newer deployment of its service",
            StopCause::ScaledDown => {
                "Scaling activity initiated by the service (desired count lowered)"
            }
            StopCause::InstanceDraining => {
                "Container instance is draining; the task was replaced elsewhere"
            }
            StopCause::ServiceDeleted => "The service was deleted",
            StopCause::NotWanted => "The daemon service no longer wants a task on this instance",
        }
    }
}

/// Rollout steps the controller proposes (re-checked when applied).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceProgress {
    /// The PRIMARY deployment runs its desired count of healthy tasks and
    /// nothing else is left.
    DeploymentCompleted { deployment_id: String },
    /// The PRIMARY deployment failed (circuit breaker or deadline); with
    /// `rollback_deployment_id` a new deployment goes back to the last
    /// COMPLETED task definition.
    DeploymentFailed {
        deployment_id: String,
        reason: String,
        rollback_deployment_id: Option<String>,
    },
    /// Earlier deployments whose tasks are all STOPPED.
    DeploymentsRetired { deployment_ids: Vec<String> },
    /// The service runs exactly what it should, all healthy.
    Steady,
    /// A deleted service's last task stopped.
    Inactive,
    /// DAEMON: the number of instances that should run its task.
    DaemonDesiredCount { count: u32 },
    /// Something people should know (a task that cannot be placed, a
    /// rollout that cannot move); recorded unless it repeats the latest.
    Note { message: String },
    /// Blue/green: the PRIMARY deployment now gets `percent` of the load
    /// balancers' traffic (applied only if every one of its tasks is
    /// healthy and the share grows).
    TrafficShifted { deployment_id: String, percent: u32 },
    /// Blue/green: the PRIMARY deployment failed while the one before it
    /// still runs: that one is PRIMARY again, with all traffic.
    BlueGreenRolledBack {
        deployment_id: String,
        reason: String,
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
    /// The task's address on the instance's bridge (bridge and task network
    /// modes), once known.
    pub ip: Option<String>,
}

impl Command {
    /// Short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::RevokeCertificate { .. } => "revoke_certificate",
            Command::CreateCluster { .. } | Command::CreateTaggedCluster { .. } => "create_cluster",
            Command::DeleteCluster { .. } => "delete_cluster",
            Command::RegisterTaskDefinition { .. } => "register_task_definition",
            Command::DeregisterTaskDefinition { .. } => "deregister_task_definition",
            Command::DeleteTaskDefinition { .. } => "delete_task_definition",
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
            Command::CreateService { .. } => "create_service",
            Command::UpdateService { .. } => "update_service",
            Command::DeleteService { .. } => "delete_service",
            Command::StartServiceTasks(_) => "start_service_tasks",
            Command::StopServiceTasks { .. } => "stop_service_tasks",
            Command::ServiceProgress { .. } => "service_progress",
            Command::EndDeactivation { .. } => "end_deactivation",
            Command::RollbackService { .. } => "rollback_service",
            Command::SetJournalRetention { .. } => "set_journal_retention",
            Command::PutSchedule { create: true, .. } => "create_schedule",
            Command::PutSchedule { create: false, .. } => "update_schedule",
            Command::DeleteSchedule { .. } => "delete_schedule",
            Command::SetSchedulePaused { .. } => "set_schedule_paused",
            Command::FireSchedule(_) => "fire_schedule",
            Command::PutSecret { create: true, .. } => "create_secret",
            Command::PutSecret { create: false, .. } => "update_secret",
            Command::DeleteSecret { .. } => "delete_secret",
            Command::ResealSecrets { .. } => "reseal_secrets",
            Command::TagResource { .. } => "tag_resource",
            Command::UntagResource { .. } => "untag_resource",
            Command::PutAccountSetting { .. } => "put_account_setting",
            Command::DeleteAccountSetting { .. } => "delete_account_setting",
            Command::CreateAwsAccessKey { .. } => "create_aws_access_key",
            Command::ResealAwsAccessKeys { .. } => "reseal_aws_access_keys",
        }
    }

    /// What the command names, as the audit log records it: `task/ID`,
    /// `service/CLUSTER/NAME`, ... (several, separated by spaces). Never a
    /// secret or a value: only ids and names.
    pub fn resource(&self) -> String {
        let tasks = |ids: &mut dyn Iterator<Item = &String>| {
            ids.map(|id| format!("task/{id}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let service = |cluster: &str, name: &str| format!("service/{cluster}/{name}");
        let instance = |id: &str| format!("instance/{id}");
        match self {
            Command::CreateCluster { name, .. }
            | Command::CreateTaggedCluster { name, .. }
            | Command::UpdateClusterSettings { name, .. }
            | Command::DeleteCluster { name } => format!("cluster/{name}"),
            Command::RegisterTaskDefinition { spec, .. } => {
                format!("task-definition/{}", spec.family)
            }
            Command::DeregisterTaskDefinition {
                family, revision, ..
            }
            | Command::DeleteTaskDefinition {
                family, revision, ..
            } => format!("task-definition/{family}:{revision}"),
            Command::BootstrapAdminToken { id, .. }
            | Command::CreateApiToken { id, .. }
            | Command::CreateAwsAccessKey { id, .. }
            | Command::RevokeApiToken { id, .. } => format!("token/{id}"),
            Command::CreateActivation { id, .. } | Command::RevokeActivation { id, .. } => {
                format!("activation/{id}")
            }
            Command::RegisterInstance(registration) => instance(
                registration
                    .previous_instance_id
                    .as_deref()
                    .unwrap_or(&registration.new_instance_id),
            ),
            Command::RecordInstanceCertificate { instance_id, .. }
            | Command::DeregisterInstance { instance_id, .. }
            | Command::ReportTaskStatus { instance_id, .. }
            | Command::InstanceConnected { instance_id, .. }
            | Command::InstanceDisconnected { instance_id, .. }
            | Command::InstanceLost { instance_id, .. }
            | Command::SetInstanceDraining { instance_id, .. }
            | Command::PutInstanceAttributes { instance_id, .. }
            | Command::DeleteInstanceAttributes { instance_id, .. } => instance(instance_id),
            Command::RunTasks(run) => tasks(&mut run.task_ids.iter()),
            Command::PlaceTasks { placements, .. } => {
                tasks(&mut placements.iter().map(|p| &p.task_id))
            }
            Command::StopTask { task_id, .. } => format!("task/{task_id}"),
            Command::EndDeactivation { task_ids, .. } => tasks(&mut task_ids.iter()),
            Command::PurgeStoppedTasks { .. } => "tasks".to_string(),
            Command::CreateService { spec, .. } => service(&spec.cluster, &spec.name),
            Command::UpdateService { cluster, name, .. }
            | Command::DeleteService { cluster, name, .. }
            | Command::RollbackService { cluster, name, .. } => service(cluster, name),
            Command::StartServiceTasks(start) => service(&start.cluster, &start.service),
            Command::StopServiceTasks {
                cluster,
                service: s,
                ..
            }
            | Command::ServiceProgress {
                cluster,
                service: s,
                ..
            } => service(cluster, s),
            Command::RevokeCertificate { fingerprint, .. } => format!("certificate/{fingerprint}"),
            Command::SetJournalRetention { .. } => "journal".to_string(),
            Command::PutSchedule { spec, .. } => format!("schedule/{}/{}", spec.cluster, spec.name),
            Command::DeleteSchedule { cluster, name, .. }
            | Command::SetSchedulePaused { cluster, name, .. }
            | Command::FireSchedule(FireSchedule { cluster, name, .. }) => {
                format!("schedule/{cluster}/{name}")
            }
            // The name only: never anything of the value.
            Command::PutSecret { secret, .. } => format!("secret/{}", secret.name),
            Command::DeleteSecret { name, .. } => format!("secret/{name}"),
            // A rekey of thousands of secrets must not make one audit
            // record of every name: the first ones, and how many more.
            Command::ResealSecrets { secrets } => {
                let mut names: Vec<String> = secrets
                    .iter()
                    .take(RESOURCE_NAMES)
                    .map(|s| format!("secret/{}", s.name))
                    .collect();
                if secrets.len() > RESOURCE_NAMES {
                    names.push(format!("(+{} more)", secrets.len() - RESOURCE_NAMES));
                }
                names.join(" ")
            }
            // As the audit log and the events name a task definition
            // elsewhere, so `--resource` finds its tag changes with the rest.
            Command::TagResource {
                target: crate::tags::TagTarget::TaskDefinition { family, revision },
                ..
            }
            | Command::UntagResource {
                target: crate::tags::TagTarget::TaskDefinition { family, revision },
                ..
            } => format!("task-definition/{family}:{revision}"),
            Command::TagResource { target, .. } | Command::UntagResource { target, .. } => {
                target.resource()
            }
            // The principal is an ARN the caller gave, not a secret.
            Command::PutAccountSetting {
                principal, name, ..
            }
            | Command::DeleteAccountSetting { principal, name } => {
                account_setting_resource(principal, name)
            }
            Command::ResealAwsAccessKeys { keys } => {
                let mut names: Vec<String> = keys
                    .iter()
                    .take(RESOURCE_NAMES)
                    .map(|k| format!("token/{}", k.id))
                    .collect();
                if keys.len() > RESOURCE_NAMES {
                    names.push(format!("(+{} more)", keys.len() - RESOURCE_NAMES));
                }
                names.join(" ")
            }
        }
    }
}

/// `account-setting/NAME` for the default, else
/// `account-setting/PRINCIPAL/NAME`.
fn account_setting_resource(principal: &str, name: &str) -> String {
    if principal.is_empty() {
        format!("account-setting/{name}")
    } else {
        format!("account-setting/{principal}/{name}")
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
    Service(Box<Service>),
    RevokedCertificate(RevokedCertificate),
    Schedule(Box<crate::scheduled::Schedule>),
    /// A command that found its outcome already in place.
    Unchanged,
    Secret(crate::secrets::SecretMetadata),
    /// What a ResealSecrets did: the secrets re-sealed, and those skipped
    /// (updated or deleted since they were read).
    Resealed {
        resealed: Vec<String>,
        skipped: Vec<String>,
    },
    /// A resource's tags after a TagResource or UntagResource changed them.
    Tags(BTreeMap<String, String>),
    /// An account setting after a Put (`value` Some) or Delete (None).
    AccountSetting {
        principal: String,
        name: String,
        value: Option<String>,
    },
}
