//! Building blocks for controller scenario tables: a state with a cluster,
//! task definitions and connected instances, built through the same
//! commands the API and agents would propose.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};

use berth_types::resources::Resources;
use berth_types::{
    Command, CommandOutput, ContainerDefinition, HealthCheck, Registration, RunTasks, State,
    TaskDefinitionSpec,
};

use crate::AgentLiveness;

/// A task definition `family` with one essential container of `memory`
/// MiB; with a health check when `health_checked`.
pub fn spec(family: &str, memory: u32, health_checked: bool) -> TaskDefinitionSpec {
    let mut container = ContainerDefinition::new("app", "registry.local/app:1");
    container.memory = Some(memory);
    if health_checked {
        container.health_check = Some(HealthCheck {
            command: vec!["CMD".into(), "true".into()],
            interval: 5,
            timeout: 2,
            retries: 3,
            start_period: 0,
        });
    }
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

pub fn apply(state: &mut State, command: Command) -> CommandOutput {
    let kind = command.kind();
    state
        .apply(command)
        .unwrap_or_else(|e| panic!("{kind} refused: {e}"))
}

pub fn register(state: &mut State, spec: TaskDefinitionSpec) {
    apply(state, Command::RegisterTaskDefinition { spec, at_ms: 1 });
}

/// Registers and connects an instance of `memory` MiB (and 4096 CPU units)
/// with the given attributes, set by an operator (`attribute put`).
pub fn add_instance(state: &mut State, id: &str, memory: u32, attributes: &[(&str, &str)]) {
    if state.activation("act").is_none() {
        apply(
            state,
            Command::CreateActivation {
                id: "act".into(),
                cluster: "default".into(),
                description: String::new(),
                secret_hash: "h".into(),
                expires_at_ms: i64::MAX,
                max_registrations: 100_000,
                attributes: BTreeMap::new(),
                at_ms: 0,
            },
        );
    }
    apply(
        state,
        Command::RegisterInstance(Registration {
            activation_id: "act".into(),
            secret_hash: "h".into(),
            new_instance_id: id.to_string(),
            previous_instance_id: None,
            expected_cluster: None,
            hostname: id.to_string(),
            attributes: BTreeMap::new(),
            certificate_expires_at_ms: i64::MAX,
            at_ms: 1,
            public_key_sha256: "key-1".into(),
        }),
    );
    apply(
        state,
        Command::InstanceConnected {
            host_ports: Vec::new(),
            instance_id: id.to_string(),
            agent_version: "test".into(),
            resources: Resources::new(4096, u64::from(memory)),
            attributes: BTreeMap::from([
                ("os".to_string(), "linux".to_string()),
                // Where its endpoints are reached (a documentation address).
                ("address".to_string(), "192.0.2.10".to_string()),
            ]),
            at_ms: 2,
        },
    );
    if !attributes.is_empty() {
        apply(
            state,
            Command::PutInstanceAttributes {
                instance_id: id.to_string(),
                attributes: attributes
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
        );
    }
}

/// A RunTask of `ids` of `family`, placed by the scheduler.
pub fn run_tasks(state: &mut State, family: &str, ids: &[&str]) {
    apply(
        state,
        Command::RunTasks(RunTasks {
            cluster: "default".into(),
            task_definition: family.into(),
            task_ids: ids.iter().map(|s| s.to_string()).collect(),
            instance_ids: vec![],
            group: None,
            started_by: String::new(),
            placement_strategies: vec![],
            placement_constraints: vec![],
            overrides: vec![],
            client_token: None,
            at_ms: 3,
        }),
    );
}

/// Agent heartbeats as a table: instance -> (last heartbeat, session
/// start), and instance -> when its session ended (it has none since).
#[derive(Default)]
pub struct Heartbeats(pub HashMap<String, (i64, i64)>, pub HashMap<String, i64>);

impl AgentLiveness for Heartbeats {
    fn last_heartbeat_ms(&self, id: &str) -> Option<i64> {
        self.0.get(id).map(|(at, _)| *at)
    }
    fn session_started_ms(&self, id: &str) -> Option<i64> {
        if self.1.contains_key(id) {
            return None;
        }
        self.0.get(id).map(|(_, at)| *at)
    }
    fn session_ended_ms(&self, id: &str) -> Option<i64> {
        self.1.get(id).copied()
    }
}
