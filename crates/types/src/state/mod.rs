//! The replicated state and its deterministic transition function.
//!
//! `State::apply` is the only writer. It dispatches each command to the
//! module of the aggregate it changes (clusters, task definitions, access,
//! instances, tasks); the storage layer keeps the state in memory and makes
//! it durable through the Raft log and snapshots.

mod access;
mod clusters;
mod instances;
mod journal;
mod schedules;
mod secrets;
mod services;
mod tags;
mod taskdefs;
pub(crate) mod tasks;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// A derived index keyed by ids the servers chose (task and instance ids,
/// never a caller's names), hashed with FxHash: SipHash's resistance to
/// chosen keys buys nothing there, and hashing every id of a bulk run
/// with it was a tenth of applying it.
pub(crate) type IdMap<V> = HashMap<String, V, fxhash::FxBuildHasher>;

use serde::{Deserialize, Serialize};

use crate::access::{Activation, ApiToken, Instance, RevokedCertificate};
use crate::cluster::{Cluster, ClusterSettings, ClusterStatus, DEFAULT_CLUSTER};
use crate::command::{Command, CommandOutput};
use crate::error::StateError;
use crate::event::StateEvent;
use crate::service::Service;
use crate::task::Task;
use crate::taskdef::TaskDefinition;

pub use services::HealthJudge;
pub use tasks::{CLIENT_TOKEN_TTL_MS, MAX_TASKS_PER_RUN};

/// Per-family bookkeeping. Kept separately from the revisions so revision
/// numbers are never reused, whatever happens to the revisions themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FamilyRecord {
    pub last_revision: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub(crate) clusters: BTreeMap<String, Cluster>,
    pub(crate) families: BTreeMap<String, FamilyRecord>,
    /// Shared so that the state, a snapshot of it and a command's output
    /// can hold a definition without copying it.
    pub(crate) task_definitions: BTreeMap<(String, u32), Arc<TaskDefinition>>,
    pub(crate) api_tokens: BTreeMap<String, ApiToken>,
    pub(crate) activations: BTreeMap<String, Activation>,
    pub(crate) instances: BTreeMap<String, Instance>,
    /// Hashed, not ordered: every status report, placement and assignment
    /// looks tasks up by id, and in a B-tree of 100,000 string keys a lookup
    /// made some thirty key comparisons, each reading a key from its own
    /// allocation: about 7% of the leader's CPU in `berth-bench tasks` at
    /// 10,000 instances (docs/benchmarks.md). Nothing replicated depends
    /// on this map's order: listings sort, and the snapshot encodes it as a
    /// map, whatever the order. Boxed: a task record is about 470 bytes, and
    /// the table's slots (up to twice as many as its entries) hold only the
    /// key and the pointer.
    pub(crate) tasks: IdMap<Box<Task>>,
    /// RunTask client tokens, so a retried request never starts tasks twice.
    pub(crate) client_tokens: BTreeMap<String, ClientTokenRecord>,
    /// By (cluster, name).
    pub(crate) services: BTreeMap<(String, String), Service>,
    /// The certificate revocation list, by fingerprint.
    pub(crate) revoked_certificates: BTreeMap<String, RevokedCertificate>,
    /// Scheduled tasks, by (cluster, name).
    pub(crate) schedules: BTreeMap<(String, String), crate::scheduled::Schedule>,
    /// Events and audit records, bounded (see `crate::journal`).
    pub(crate) journal: crate::journal::Journal,
    /// Sealed secret values and their metadata, by name.
    pub(crate) secrets: BTreeMap<String, crate::secrets::Secret>,
    /// Derived: what the journal last said about each record.
    #[serde(skip)]
    pub(crate) journal_views: journal::JournalViews,
    /// What changed since the last `take_events`, in apply order; the
    /// server hands them to every subscriber (agent sessions, controllers).
    #[serde(skip)]
    pub(crate) events: Vec<StateEvent>,
    /// Derived from `tasks` (rebuilt by `rebuild_indexes`, kept up to date by
    /// `apply`): the not-yet-STOPPED tasks placed on each instance.
    #[serde(skip)]
    pub(crate) tasks_by_instance: IdMap<BTreeSet<String>>,
    /// Derived, alongside `tasks_by_instance`: how many of those tasks each
    /// group has, per instance. The scheduler builds its view from this
    /// every pass; counting from the tasks themselves cost a lookup and a
    /// copy per running task per pass.
    #[serde(skip)]
    pub(crate) task_groups_by_instance: IdMap<BTreeMap<String, u32>>,
    /// Derived: tasks waiting for a placement, by creation time (oldest
    /// first), then id. Keyed by time first so that a task that is not
    /// waiting is known absent without building a key for it.
    #[serde(skip)]
    pub(crate) provisioning: BTreeMap<i64, BTreeSet<String>>,
    /// Derived: the not-yet-STOPPED tasks of each service, by (cluster,
    /// name).
    #[serde(skip)]
    pub(crate) tasks_by_service: HashMap<(String, String), BTreeSet<String>>,
    /// ECS account settings by principal (`""`: the account's defaults),
    /// then setting name. Appended last: the state is stored positionally.
    pub(crate) account_settings: BTreeMap<String, BTreeMap<String, String>>,
}

/// A RunTask client token and the tasks it started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientTokenRecord {
    pub created_at_ms: i64,
    pub task_ids: Vec<String>,
}

// Equality is about the replicated records; events and indexes are derived.
impl PartialEq for State {
    fn eq(&self, other: &Self) -> bool {
        self.clusters == other.clusters
            && self.families == other.families
            && self.task_definitions == other.task_definitions
            && self.api_tokens == other.api_tokens
            && self.activations == other.activations
            && self.instances == other.instances
            && self.tasks == other.tasks
            && self.client_tokens == other.client_tokens
            && self.services == other.services
            && self.revoked_certificates == other.revoked_certificates
            && self.schedules == other.schedules
            && self.journal == other.journal
            && self.secrets == other.secrets
            && self.account_settings == other.account_settings
    }
}

impl Default for State {
    fn default() -> Self {
        Self::new()
    }
}

impl State {
    /// The state every server starts from. It already holds the `default`
    /// cluster; since every server starts from the same value this stays
    /// deterministic without a bootstrap command.
    pub fn new() -> Self {
        let mut clusters = BTreeMap::new();
        clusters.insert(
            DEFAULT_CLUSTER.to_string(),
            Cluster {
                name: DEFAULT_CLUSTER.to_string(),
                status: ClusterStatus::Active,
                created_at_ms: 0,
                settings: ClusterSettings::default(),
                tags: BTreeMap::new(),
            },
        );
        Self {
            clusters,
            families: BTreeMap::new(),
            task_definitions: BTreeMap::new(),
            api_tokens: BTreeMap::new(),
            activations: BTreeMap::new(),
            instances: BTreeMap::new(),
            tasks: IdMap::default(),
            client_tokens: BTreeMap::new(),
            services: BTreeMap::new(),
            revoked_certificates: BTreeMap::new(),
            schedules: BTreeMap::new(),
            journal: Default::default(),
            secrets: BTreeMap::new(),
            journal_views: Default::default(),
            events: Vec::new(),
            tasks_by_instance: IdMap::default(),
            task_groups_by_instance: IdMap::default(),
            provisioning: BTreeMap::new(),
            tasks_by_service: HashMap::new(),
            account_settings: BTreeMap::new(),
        }
    }

    /// Applies one command. A refused command changes nothing.
    pub fn apply(&mut self, command: Command) -> Result<CommandOutput, StateError> {
        match command {
            Command::CreateCluster {
                name,
                settings,
                at_ms,
            } => self.create_cluster(name, settings, Default::default(), at_ms),
            Command::CreateTaggedCluster {
                name,
                settings,
                tags,
                at_ms,
            } => self.create_cluster(name, settings, tags, at_ms),
            Command::UpdateClusterSettings {
                name,
                lost_after_secs,
                task_retention_secs,
            } => self.update_cluster_settings(name, lost_after_secs, task_retention_secs),
            Command::DeleteCluster { name } => self.delete_cluster(name),
            Command::RegisterTaskDefinition { spec, at_ms } => {
                self.register_task_definition(spec, at_ms)
            }
            Command::DeregisterTaskDefinition {
                family,
                revision,
                at_ms,
            } => self.deregister_task_definition(family, revision, at_ms),
            Command::DeleteTaskDefinition {
                family,
                revision,
                at_ms,
            } => self.delete_task_definition(family, revision, at_ms),
            Command::BootstrapAdminToken {
                id,
                secret_hash,
                at_ms,
            } => self.bootstrap_admin_token(id, secret_hash, at_ms),
            Command::CreateApiToken {
                id,
                role,
                description,
                secret_hash,
                expires_at_ms,
                at_ms,
            } => self.create_api_token(ApiToken {
                id,
                role,
                description,
                secret_hash,
                created_at_ms: at_ms,
                expires_at_ms,
                revoked_at_ms: None,
                aws_secret: None,
            }),
            Command::CreateAwsAccessKey {
                id,
                role,
                description,
                sealed,
                expires_at_ms,
                at_ms,
            } => self.create_api_token(ApiToken {
                id,
                role,
                description,
                secret_hash: String::new(),
                created_at_ms: at_ms,
                expires_at_ms,
                revoked_at_ms: None,
                aws_secret: Some(sealed),
            }),
            Command::ResealAwsAccessKeys { keys } => self.reseal_aws_keys(keys),
            Command::RevokeApiToken { id, at_ms } => self.revoke_api_token(id, at_ms),
            Command::CreateActivation {
                id,
                cluster,
                description,
                secret_hash,
                expires_at_ms,
                max_registrations,
                attributes,
                at_ms,
            } => self.create_activation(access::NewActivation {
                id,
                cluster,
                description,
                secret_hash,
                expires_at_ms,
                max_registrations,
                attributes,
                at_ms,
            }),
            Command::RevokeActivation { id, at_ms } => self.revoke_activation(id, at_ms),
            Command::RegisterInstance(registration) => self.register_instance(registration),
            Command::RecordInstanceCertificate {
                instance_id,
                expires_at_ms,
                public_key_sha256,
            } => self.record_instance_certificate(instance_id, expires_at_ms, public_key_sha256),
            Command::DeregisterInstance { instance_id, at_ms } => {
                self.deregister_instance(instance_id, at_ms)
            }
            Command::InstanceConnected {
                instance_id,
                agent_version,
                resources,
                attributes,
                host_ports,
                at_ms,
            } => self.instance_connected(
                instance_id,
                instances::Connection {
                    agent_version,
                    resources,
                    attributes,
                    host_ports,
                    at_ms,
                },
            ),
            Command::InstanceDisconnected { instance_id, at_ms } => {
                self.instance_disconnected(instance_id, at_ms)
            }
            Command::InstanceLost { instance_id, at_ms } => self.instance_lost(instance_id, at_ms),
            Command::SetInstanceDraining {
                instance_id,
                draining,
            } => self.set_instance_draining(instance_id, draining),
            Command::PutInstanceAttributes {
                instance_id,
                attributes,
            } => self.put_instance_attributes(instance_id, attributes),
            Command::DeleteInstanceAttributes { instance_id, names } => {
                self.delete_instance_attributes(instance_id, names)
            }
            Command::RunTasks(run) => self.run_tasks(run),
            Command::PlaceTasks {
                placements,
                unplaced,
                at_ms,
            } => Ok(self.place_tasks(placements, unplaced, at_ms)),
            Command::ReportTaskStatus {
                instance_id,
                reports,
                at_ms,
            } => self.report_task_status(&instance_id, reports, at_ms),
            Command::StopTask {
                task_id,
                reason,
                at_ms,
            } => self.stop_task(&task_id, &reason, at_ms),
            Command::PurgeStoppedTasks { now_ms } => Ok(CommandOutput::Purged(self.purge(now_ms))),
            Command::CreateService {
                spec,
                deployment_id,
                at_ms,
            } => self.create_service(spec, deployment_id, at_ms),
            Command::UpdateService {
                cluster,
                name,
                update,
                deployment_id,
                at_ms,
            } => self.update_service(cluster, name, update, deployment_id, at_ms),
            Command::DeleteService {
                cluster,
                name,
                force,
                at_ms,
            } => self.delete_service(cluster, name, force, at_ms),
            Command::StartServiceTasks(start) => self.start_service_tasks(start),
            Command::StopServiceTasks {
                cluster,
                service,
                stops,
                at_ms,
            } => self.stop_service_tasks(cluster, service, stops, at_ms),
            Command::ServiceProgress {
                cluster,
                service,
                progress,
                at_ms,
            } => self.service_progress(cluster, service, progress, at_ms),
            Command::RevokeCertificate {
                fingerprint,
                description,
                at_ms,
            } => self.revoke_certificate(fingerprint, description, at_ms),
            Command::EndDeactivation { task_ids, at_ms } => self.end_deactivation(task_ids, at_ms),
            Command::RollbackService {
                cluster,
                name,
                deployment_id,
                at_ms,
            } => self.rollback_service(cluster, name, deployment_id, at_ms),
            Command::PutSchedule {
                spec,
                create,
                at_ms,
            } => self.put_schedule(spec, create, at_ms),
            Command::DeleteSchedule { cluster, name, .. } => self.delete_schedule(&cluster, &name),
            Command::SetSchedulePaused {
                cluster,
                name,
                paused,
                at_ms,
            } => self.set_schedule_paused(&cluster, &name, paused, at_ms),
            Command::FireSchedule(fire) => self.fire_schedule(fire),
            Command::SetJournalRetention { retention } => {
                retention.validate()?;
                self.journal.set_retention(retention);
                Ok(CommandOutput::Unchanged)
            }
            Command::PutSecret {
                secret,
                create,
                at_ms,
            } => self.put_secret(secret, create, at_ms),
            Command::DeleteSecret { name, .. } => self.delete_secret(&name),
            Command::ResealSecrets { secrets } => self.reseal_secrets(secrets),
            Command::TagResource { target, tags } => self.tag_resource(target, tags),
            Command::UntagResource { target, keys } => self.untag_resource(target, keys),
            Command::PutAccountSetting {
                principal,
                name,
                value,
            } => self.put_account_setting(principal, name, value),
            Command::DeleteAccountSetting { principal, name } => {
                self.delete_account_setting(principal, name)
            }
        }
    }

    /// The events and audit records kept.
    pub fn journal(&self) -> &crate::journal::Journal {
        &self.journal
    }

    /// What changed since the previous call, in the order it happened.
    pub fn take_events(&mut self) -> Vec<StateEvent> {
        std::mem::take(&mut self.events)
    }

    /// Rebuilds what is derived from the records; for a state that was
    /// deserialized whole (a snapshot).
    pub fn rebuild_indexes(&mut self) {
        self.provisioning.clear();
        self.tasks_by_instance.clear();
        self.task_groups_by_instance.clear();
        self.tasks_by_service.clear();
        let (tasks, mut indexes) = self.tasks_and_indexes();
        for task in tasks.values() {
            // Rebuilding stops nothing: the "just stopped" answer is moot.
            let _ = indexes.index(task);
        }
        self.journal_views = journal::JournalViews::rebuild(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ContainerDefinition, TaskDefinitionSpec, TaskDefinitionStatus};

    fn spec(family: &str) -> TaskDefinitionSpec {
        let mut container = ContainerDefinition::new("app", "registry.local/app:1");
        container.memory = Some(128);
        TaskDefinitionSpec {
            family: family.to_string(),
            container_definitions: vec![container],
            cpu: None,
            memory: None,
            network_mode: Default::default(),
            volumes: vec![],
            tags: vec![],
        }
    }

    fn register(state: &mut State, family: &str) -> Result<TaskDefinition, StateError> {
        match state.apply(Command::RegisterTaskDefinition {
            spec: spec(family),
            at_ms: 1,
        })? {
            CommandOutput::TaskDefinition(td) => Ok(Arc::unwrap_or_clone(td)),
            other => panic!("unexpected output {other:?}"),
        }
    }

    #[test]
    fn revisions_are_contiguous_and_never_reused() {
        let mut state = State::new();
        for expected in 1..=3 {
            assert_eq!(register(&mut state, "web").unwrap().revision, expected);
        }
        assert_eq!(register(&mut state, "db").unwrap().revision, 1);
        state
            .apply(Command::DeregisterTaskDefinition {
                family: "web".into(),
                revision: 3,
                at_ms: 9,
            })
            .unwrap();
        // The latest ACTIVE revision is now 2, yet the next one is 4.
        assert_eq!(state.latest_active("web").unwrap().revision, 2);
        assert_eq!(register(&mut state, "web").unwrap().revision, 4);
        let inactive = state.task_definition("web", 3).unwrap();
        assert_eq!(inactive.status, TaskDefinitionStatus::Inactive);
        assert_eq!(inactive.deregistered_at_ms, Some(9));
    }

    #[test]
    fn invalid_definition_changes_nothing() {
        let mut state = State::new();
        let mut bad = spec("web");
        bad.container_definitions[0].image.clear();
        let err = state
            .apply(Command::RegisterTaskDefinition {
                spec: bad,
                at_ms: 1,
            })
            .unwrap_err();
        assert!(matches!(err, StateError::Invalid(_)));
        assert_eq!(state, State::new());
        // The refused registration did not consume a revision number.
        assert_eq!(register(&mut state, "web").unwrap().revision, 1);
    }

    #[test]
    fn deregister_unknown_revision_is_not_found() {
        let mut state = State::new();
        register(&mut state, "web").unwrap();
        let err = state
            .apply(Command::DeregisterTaskDefinition {
                family: "web".into(),
                revision: 2,
                at_ms: 1,
            })
            .unwrap_err();
        assert!(matches!(err, StateError::NotFound { .. }));
    }

    #[test]
    fn state_and_commands_round_trip_through_bincode() {
        // The Raft log and snapshots use bincode, which cannot encode every
        // serde attribute; this catches a type that drifts out of its reach.
        let mut state = State::new();
        let mut full = spec("web");
        let c = &mut full.container_definitions[0];
        c.health_check = Some(crate::HealthCheck {
            command: vec!["CMD".into(), "true".into()],
            interval: 30,
            timeout: 5,
            retries: 3,
            start_period: 0,
        });
        c.port_mappings.push(crate::PortMapping {
            container_port: 80,
            host_port: None,
            protocol: crate::Protocol::Tcp,
        });
        c.restart_policy = Some(crate::RestartPolicy {
            enabled: true,
            ignored_exit_codes: vec![0, -1],
            restart_attempt_period_secs: 600,
        });
        let command = Command::RegisterTaskDefinition {
            spec: full,
            at_ms: 3,
        };
        let bytes = bincode::serialize(&command).unwrap();
        let decoded: Command = bincode::deserialize(&bytes).unwrap();
        assert_eq!(decoded, command);
        state.apply(decoded).unwrap();
        let report = Command::ReportTaskStatus {
            instance_id: "i-1".into(),
            reports: vec![crate::TaskReport {
                task_id: "t-1".into(),
                last_status: crate::TaskStatus::Running,
                containers: vec![crate::ContainerState {
                    name: "web".into(),
                    status: crate::ContainerStatus::Running,
                    exit_code: Some(3),
                    reason: "restarted".into(),
                    health: crate::Health::Unknown,
                    restart_count: 7,
                }],
                reason: String::new(),
                stop_code: None,
                ip: None,
            }],
            at_ms: 4,
        };
        let bytes = bincode::serialize(&report).unwrap();
        assert_eq!(bincode::deserialize::<Command>(&bytes).unwrap(), report);
        let bytes = bincode::serialize(&state).unwrap();
        let decoded: State = bincode::deserialize(&bytes).unwrap();
        assert_eq!(decoded, state);
    }
}
