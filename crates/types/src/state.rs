//! The replicated state and its deterministic transition function.
//!
//! `State::apply` is the only writer. The storage layer keeps the state in
//! memory and makes it durable through the Raft log and snapshots; `Record`
//! is the per-record form earlier versions persisted, still read when a data
//! dir from one of them is opened.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::access::{Activation, ApiToken, Instance, InstanceStatus, Registration, Role};
use crate::cluster::{Cluster, ClusterSettings, ClusterStatus, DEFAULT_CLUSTER};
use crate::command::{Command, CommandOutput};
use crate::error::StateError;
use crate::task::{Task, TaskStatus};
use crate::taskdef::{TaskDefinition, TaskDefinitionSpec, TaskDefinitionStatus};
use crate::validate;
use std::collections::BTreeMap as Map;

/// Per-family bookkeeping. Kept separately from the revisions so revision
/// numbers are never reused, whatever happens to the revisions themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FamilyRecord {
    pub last_revision: u32,
}

/// One persisted record, as the storage layer writes and reloads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Record {
    Cluster(Cluster),
    Family(String, FamilyRecord),
    TaskDefinition(Arc<TaskDefinition>),
    ApiToken(ApiToken),
    Activation(Activation),
    Instance(Instance),
    Task(Task),
    ClientToken(String, ClientTokenRecord),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub(crate) clusters: BTreeMap<String, Cluster>,
    pub(crate) families: BTreeMap<String, FamilyRecord>,
    /// Shared so that the state, a snapshot of it and a command's output
    /// can hold a definition without copying it.
    pub(crate) task_definitions: BTreeMap<(String, u32), Arc<TaskDefinition>>,
    pub(crate) api_tokens: Map<String, ApiToken>,
    pub(crate) activations: Map<String, Activation>,
    pub(crate) instances: Map<String, Instance>,
    pub(crate) tasks: Map<String, Task>,
    /// RunTask client tokens, so a retried request never starts tasks twice.
    pub(crate) client_tokens: Map<String, ClientTokenRecord>,
    /// Tasks whose assignment or status changed since the last
    /// `take_task_events`; the leader uses them to update agent sessions.
    #[serde(skip)]
    pub(crate) task_events: Vec<TaskEvent>,
    /// Derived from `tasks` (rebuilt by `rebuild_indexes`, kept up to date by
    /// `apply`): the not-yet-STOPPED tasks placed on each instance.
    #[serde(skip)]
    pub(crate) tasks_by_instance: HashMap<String, BTreeSet<String>>,
    /// Derived: tasks waiting for a placement, oldest first.
    #[serde(skip)]
    pub(crate) provisioning: BTreeSet<(i64, String)>,
}

/// A RunTask client token and the tasks it started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientTokenRecord {
    pub created_at_ms: i64,
    pub task_ids: Vec<String>,
}

/// Something about a task changed. `instance_id` is the instance it is
/// placed on (None while PROVISIONING); an event with an empty `task_id`
/// means the instance itself changed (connected, drained, resources).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEvent {
    pub instance_id: Option<String>,
    pub task_id: String,
}

// Equality is about the replicated records; the pending change list is
// bookkeeping of the storage layer.
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
            },
        );
        Self {
            clusters,
            families: BTreeMap::new(),
            task_definitions: BTreeMap::new(),
            api_tokens: Map::new(),
            activations: Map::new(),
            instances: Map::new(),
            tasks: Map::new(),
            client_tokens: Map::new(),
            task_events: Vec::new(),
            tasks_by_instance: HashMap::new(),
            provisioning: BTreeSet::new(),
        }
    }

    pub fn apply(&mut self, command: Command) -> Result<CommandOutput, StateError> {
        match command {
            Command::CreateCluster {
                name,
                settings,
                at_ms,
            } => self.create_cluster(name, settings, at_ms),
            Command::DeleteCluster { name } => self.delete_cluster(name),
            Command::RegisterTaskDefinition { spec, at_ms } => {
                self.register_task_definition(spec, at_ms)
            }
            Command::DeregisterTaskDefinition {
                family,
                revision,
                at_ms,
            } => self.deregister_task_definition(family, revision, at_ms),
            Command::BootstrapAdminToken {
                id,
                secret_hash,
                at_ms,
            } => {
                if self.api_tokens.contains_key(&id) {
                    return Ok(CommandOutput::Unchanged);
                }
                self.insert_token(ApiToken {
                    id,
                    role: Role::Admin,
                    description: "created at bootstrap".into(),
                    secret_hash,
                    created_at_ms: at_ms,
                    expires_at_ms: None,
                    revoked_at_ms: None,
                })
            }
            Command::CreateApiToken {
                id,
                role,
                description,
                secret_hash,
                expires_at_ms,
                at_ms,
            } => {
                if self.api_tokens.contains_key(&id) {
                    return Err(StateError::already_exists("API token", id));
                }
                self.insert_token(ApiToken {
                    id,
                    role,
                    description,
                    secret_hash,
                    created_at_ms: at_ms,
                    expires_at_ms,
                    revoked_at_ms: None,
                })
            }
            Command::RevokeApiToken { id, at_ms } => {
                let token = self
                    .api_tokens
                    .get_mut(&id)
                    .ok_or_else(|| StateError::not_found("API token", id.clone()))?;
                if token.revoked_at_ms.is_none() {
                    token.revoked_at_ms = Some(at_ms);
                }
                Ok(CommandOutput::ApiToken(token.clone()))
            }
            Command::CreateActivation {
                id,
                cluster,
                description,
                secret_hash,
                expires_at_ms,
                max_registrations,
                attributes,
                at_ms,
            } => {
                if !self.clusters.contains_key(&cluster) {
                    return Err(StateError::not_found("cluster", cluster));
                }
                if self.activations.contains_key(&id) {
                    return Err(StateError::already_exists("activation", id));
                }
                let activation = Activation {
                    id: id.clone(),
                    cluster,
                    description,
                    secret_hash,
                    created_at_ms: at_ms,
                    expires_at_ms,
                    max_registrations,
                    registrations: 0,
                    attributes,
                    revoked_at_ms: None,
                };
                self.activations.insert(id.clone(), activation.clone());
                Ok(CommandOutput::Activation(activation))
            }
            Command::RevokeActivation { id, at_ms } => {
                let activation = self
                    .activations
                    .get_mut(&id)
                    .ok_or_else(|| StateError::not_found("activation", id.clone()))?;
                if activation.revoked_at_ms.is_none() {
                    activation.revoked_at_ms = Some(at_ms);
                }
                Ok(CommandOutput::Activation(activation.clone()))
            }
            Command::RegisterInstance(registration) => self.register_instance(registration),
            Command::RecordInstanceCertificate {
                instance_id,
                expires_at_ms,
            } => {
                let instance = self
                    .instances
                    .get_mut(&instance_id)
                    .ok_or_else(|| StateError::not_found("instance", instance_id.clone()))?;
                if instance.status != InstanceStatus::Active {
                    return Err(StateError::FailedPrecondition(format!(
                        "instance {instance_id} is deregistered"
                    )));
                }
                instance.certificate_expires_at_ms = expires_at_ms;
                Ok(CommandOutput::Instance(instance.clone()))
            }
            Command::DeregisterInstance { instance_id, at_ms } => {
                let instance = self
                    .instances
                    .get_mut(&instance_id)
                    .ok_or_else(|| StateError::not_found("instance", instance_id.clone()))?;
                if instance.status == InstanceStatus::Active {
                    instance.status = InstanceStatus::Inactive;
                    instance.deregistered_at_ms = Some(at_ms);
                    instance.agent_connected = false;
                    self.stop_instance_tasks(
                        &instance_id,
                        &format!("instance {instance_id} was deregistered"),
                        at_ms,
                    );
                }
                self.instance_output(&instance_id)
            }
            other => self.apply_task_command(other),
        }
    }

    fn insert_token(&mut self, token: ApiToken) -> Result<CommandOutput, StateError> {
        self.api_tokens.insert(token.id.clone(), token.clone());
        Ok(CommandOutput::ApiToken(token))
    }

    /// Checks an activation and, only if every check passes, consumes one
    /// registration and records the instance: a refused registration never
    /// decrements anything.
    fn register_instance(&mut self, r: Registration) -> Result<CommandOutput, StateError> {
        let refuse = |why: String| Err(StateError::FailedPrecondition(why));
        let Some(activation) = self.activations.get(&r.activation_id) else {
            return refuse("the activation token is not valid: unknown activation id".into());
        };
        if activation.secret_hash != r.secret_hash {
            return refuse("the activation token is not valid: wrong secret".into());
        }
        if activation.revoked_at_ms.is_some() {
            return refuse(format!(
                "activation {} was revoked; create a new one with `berth activation create`",
                activation.id
            ));
        }
        if r.at_ms >= activation.expires_at_ms {
            return refuse(format!(
                "activation {} has expired; create a new one with `berth activation create`",
                activation.id
            ));
        }
        if activation.registrations >= activation.max_registrations {
            return refuse(format!(
                "activation {} has been used for all {} of its registrations; create a new one",
                activation.id, activation.max_registrations
            ));
        }
        if let Some(expected) = &r.expected_cluster {
            if *expected != activation.cluster {
                return refuse(format!(
                    "activation {} is for cluster {:?}, not {expected:?}",
                    activation.id, activation.cluster
                ));
            }
        }
        if !self.clusters.contains_key(&activation.cluster) {
            return refuse(format!("cluster {:?} no longer exists", activation.cluster));
        }
        let cluster = activation.cluster.clone();
        // A known, still-active instance of the same cluster keeps its id; a
        // deregistered one never comes back under its old identity.
        let kept = r.previous_instance_id.as_ref().and_then(|id| {
            self.instances
                .get(id)
                .filter(|i| i.status == InstanceStatus::Active && i.cluster == cluster)
        });
        let mut attributes = activation.attributes.clone();
        attributes.extend(r.attributes.clone());
        let instance = match kept {
            Some(existing) => Instance {
                hostname: r.hostname,
                attributes,
                activation_id: r.activation_id.clone(),
                certificate_expires_at_ms: r.certificate_expires_at_ms,
                ..existing.clone()
            },
            None => {
                if self.instances.contains_key(&r.new_instance_id) {
                    return Err(StateError::already_exists("instance", r.new_instance_id));
                }
                Instance {
                    id: r.new_instance_id,
                    cluster,
                    hostname: r.hostname,
                    attributes,
                    activation_id: r.activation_id.clone(),
                    registered_at_ms: r.at_ms,
                    certificate_expires_at_ms: r.certificate_expires_at_ms,
                    status: InstanceStatus::Active,
                    deregistered_at_ms: None,
                    agent_version: String::new(),
                    agent_connected: false,
                    connected_since_ms: None,
                    last_seen_ms: None,
                    draining: false,
                    capacity: Default::default(),
                    assignment_seq: 0,
                }
            }
        };
        if let Some(activation) = self.activations.get_mut(&r.activation_id) {
            activation.registrations += 1;
        }
        self.instances.insert(instance.id.clone(), instance.clone());
        Ok(CommandOutput::Instance(instance))
    }

    /// Puts a persisted record back when the storage layer reloads state.
    pub fn load_record(&mut self, record: Record) {
        match record {
            Record::Cluster(c) => {
                self.clusters.insert(c.name.clone(), c);
            }
            Record::Family(name, f) => {
                self.families.insert(name, f);
            }
            Record::TaskDefinition(td) => {
                self.task_definitions
                    .insert((td.family.clone(), td.revision), td);
            }
            Record::ApiToken(t) => {
                self.api_tokens.insert(t.id.clone(), t);
            }
            Record::Activation(a) => {
                self.activations.insert(a.id.clone(), a);
            }
            Record::Instance(i) => {
                self.instances.insert(i.id.clone(), i);
            }
            Record::Task(t) => {
                self.index_task(&t);
                self.tasks.insert(t.id.clone(), t);
            }
            Record::ClientToken(token, r) => {
                self.client_tokens.insert(token, r);
            }
        }
    }

    /// Every record, for writing a whole state (after a snapshot install).
    pub fn records(&self) -> impl Iterator<Item = Record> + '_ {
        let clusters = self.clusters.values().cloned().map(Record::Cluster);
        let families = self
            .families
            .iter()
            .map(|(name, f)| Record::Family(name.clone(), *f));
        let defs = self
            .task_definitions
            .values()
            .cloned()
            .map(Record::TaskDefinition);
        let tokens = self.api_tokens.values().cloned().map(Record::ApiToken);
        let activations = self.activations.values().cloned().map(Record::Activation);
        let instances = self.instances.values().cloned().map(Record::Instance);
        let tasks = self.tasks.values().cloned().map(Record::Task);
        let tokens_run = self
            .client_tokens
            .iter()
            .map(|(k, r)| Record::ClientToken(k.clone(), r.clone()));
        clusters
            .chain(families)
            .chain(defs)
            .chain(tokens)
            .chain(activations)
            .chain(instances)
            .chain(tasks)
            .chain(tokens_run)
    }

    pub fn api_token(&self, id: &str) -> Option<&ApiToken> {
        self.api_tokens.get(id)
    }

    pub fn api_tokens(&self) -> impl Iterator<Item = &ApiToken> {
        self.api_tokens.values()
    }

    pub fn activation(&self, id: &str) -> Option<&Activation> {
        self.activations.get(id)
    }

    pub fn activations(&self) -> impl Iterator<Item = &Activation> {
        self.activations.values()
    }

    pub fn instance(&self, id: &str) -> Option<&Instance> {
        self.instances.get(id)
    }

    pub fn instances(&self) -> impl Iterator<Item = &Instance> {
        self.instances.values()
    }

    // ---- reads -------------------------------------------------------------

    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.get(name)
    }

    pub fn clusters(&self) -> impl Iterator<Item = &Cluster> {
        self.clusters.values()
    }

    pub fn task_definition(&self, family: &str, revision: u32) -> Option<&TaskDefinition> {
        self.task_definitions
            .get(&(family.to_string(), revision))
            .map(Arc::as_ref)
    }

    /// The highest ACTIVE revision of a family, which is what a bare family
    /// name refers to.
    pub fn latest_active(&self, family: &str) -> Option<&TaskDefinition> {
        self.family_revisions(family)
            .rev()
            .find(|td| td.status == TaskDefinitionStatus::Active)
    }

    pub fn family_revisions<'a>(
        &'a self,
        family: &str,
    ) -> impl DoubleEndedIterator<Item = &'a TaskDefinition> + 'a {
        let start = (family.to_string(), 0);
        let end = (family.to_string(), u32::MAX);
        self.task_definitions
            .range(start..=end)
            .map(|(_, td)| td.as_ref())
    }

    pub fn task_definitions(&self) -> impl Iterator<Item = &TaskDefinition> {
        self.task_definitions.values().map(Arc::as_ref)
    }

    pub fn families(&self) -> impl Iterator<Item = (&str, u32)> {
        self.families
            .iter()
            .map(|(name, f)| (name.as_str(), f.last_revision))
    }

    // ---- transitions -------------------------------------------------------

    fn create_cluster(
        &mut self,
        name: String,
        settings: ClusterSettings,
        at_ms: i64,
    ) -> Result<CommandOutput, StateError> {
        validate::check_name("clusterName", &name)?;
        crate::task_state::check_cluster_settings(&settings)?;
        if self.clusters.contains_key(&name) {
            return Err(StateError::already_exists("cluster", name));
        }
        let cluster = Cluster {
            name: name.clone(),
            status: ClusterStatus::Active,
            created_at_ms: at_ms,
            settings,
        };
        self.clusters.insert(name.clone(), cluster.clone());
        Ok(CommandOutput::Cluster(cluster))
    }

    fn delete_cluster(&mut self, name: String) -> Result<CommandOutput, StateError> {
        if name == DEFAULT_CLUSTER {
            return Err(StateError::FailedPrecondition(
                "the default cluster cannot be deleted".to_string(),
            ));
        }
        if !self.clusters.contains_key(&name) {
            return Err(StateError::not_found("cluster", name));
        }
        let registered = self
            .instances
            .values()
            .filter(|i| i.cluster == name && i.status == InstanceStatus::Active)
            .count();
        if registered > 0 {
            return Err(StateError::FailedPrecondition(format!(
                "cluster {name:?} still has {registered} registered instances; deregister them first"
            )));
        }
        let tasks = self
            .tasks
            .values()
            .filter(|t| t.cluster == name && t.last_status != TaskStatus::Stopped)
            .count();
        if tasks > 0 {
            return Err(StateError::FailedPrecondition(format!(
                "cluster {name:?} still has {tasks} tasks that are not STOPPED; stop them first"
            )));
        }
        self.clusters.remove(&name);
        Ok(CommandOutput::ClusterDeleted(name))
    }

    fn register_task_definition(
        &mut self,
        spec: TaskDefinitionSpec,
        at_ms: i64,
    ) -> Result<CommandOutput, StateError> {
        // Re-validated here, not only at the API, so that nothing invalid can
        // enter the state whoever proposed it.
        validate::validate_spec(&spec)?;
        let family = spec.family.clone();
        let revision = self
            .families
            .get(&family)
            .map_or(1, |f| f.last_revision + 1);
        let definition = Arc::new(TaskDefinition {
            family: family.clone(),
            revision,
            status: TaskDefinitionStatus::Active,
            registered_at_ms: at_ms,
            deregistered_at_ms: None,
            spec,
        });
        self.families.insert(
            family.clone(),
            FamilyRecord {
                last_revision: revision,
            },
        );
        self.task_definitions
            .insert((family.clone(), revision), definition.clone());
        Ok(CommandOutput::TaskDefinition(definition))
    }

    fn deregister_task_definition(
        &mut self,
        family: String,
        revision: u32,
        at_ms: i64,
    ) -> Result<CommandOutput, StateError> {
        let key = (family.clone(), revision);
        let Some(definition) = self.task_definitions.get_mut(&key) else {
            return Err(StateError::not_found(
                "task definition",
                format!("{family}:{revision}"),
            ));
        };
        if definition.status == TaskDefinitionStatus::Active {
            let definition = Arc::make_mut(definition);
            definition.status = TaskDefinitionStatus::Inactive;
            definition.deregistered_at_ms = Some(at_ms);
        }
        // Deregistering twice is not an error: the outcome the caller asked
        // for holds, and retries after a lost reply must stay harmless.
        Ok(CommandOutput::TaskDefinition(definition.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ContainerDefinition;

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
    fn default_cluster_exists_and_cannot_be_deleted() {
        let mut state = State::new();
        assert!(state.cluster(DEFAULT_CLUSTER).is_some());
        let err = state
            .apply(Command::DeleteCluster {
                name: DEFAULT_CLUSTER.into(),
            })
            .unwrap_err();
        assert!(matches!(err, StateError::FailedPrecondition(_)));
        assert!(state.cluster(DEFAULT_CLUSTER).is_some());
    }

    #[test]
    fn clusters_create_list_delete() {
        let mut state = State::new();
        state
            .apply(Command::CreateCluster {
                name: "prod".into(),
                settings: Default::default(),
                at_ms: 5,
            })
            .unwrap();
        let dup = state
            .apply(Command::CreateCluster {
                name: "prod".into(),
                settings: Default::default(),
                at_ms: 6,
            })
            .unwrap_err();
        assert!(matches!(dup, StateError::AlreadyExists { .. }));
        assert_eq!(state.cluster("prod").unwrap().created_at_ms, 5);
        assert_eq!(state.clusters().count(), 2);
        state
            .apply(Command::DeleteCluster {
                name: "prod".into(),
            })
            .unwrap();
        assert!(state.cluster("prod").is_none());
        let missing = state
            .apply(Command::DeleteCluster {
                name: "prod".into(),
            })
            .unwrap_err();
        assert!(matches!(missing, StateError::NotFound { .. }));
    }

    #[test]
    fn bad_cluster_name_is_refused() {
        let mut state = State::new();
        let err = state
            .apply(Command::CreateCluster {
                name: "has space".into(),
                settings: Default::default(),
                at_ms: 0,
            })
            .unwrap_err();
        assert!(matches!(err, StateError::Invalid(_)), "{err}");
        assert_eq!(state.clusters().count(), 1);
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
    fn records_rebuild_the_state() {
        let mut state = State::new();
        register(&mut state, "web").unwrap();
        state
            .apply(Command::CreateCluster {
                name: "edge".into(),
                settings: Default::default(),
                at_ms: 2,
            })
            .unwrap();

        // Reloading the records an earlier version persisted reproduces
        // the state.
        let mut reloaded = State::new();
        for record in state.records() {
            reloaded.load_record(record);
        }
        assert_eq!(reloaded, state);
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
