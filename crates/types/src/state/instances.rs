//! Container instances as the control plane sees them: connected,
//! disconnected, lost, draining, and their attributes. Only ACTIVE instances
//! that are connected and not draining take new tasks.

use std::collections::BTreeMap;

use crate::access::{Instance, InstanceStatus};
use crate::command::CommandOutput;
use crate::error::StateError;
use crate::event::StateEvent;
use crate::resources::Resources;
use crate::state::State;

/// What an agent's hello (or the liveness controller) says when an
/// instance's session is connected.
pub(super) struct Connection {
    pub agent_version: String,
    pub resources: Resources,
    pub attributes: BTreeMap<String, String>,
    pub host_ports: Vec<crate::resources::HostPort>,
    pub at_ms: i64,
}

impl State {
    pub fn instance(&self, id: &str) -> Option<&Instance> {
        self.instances.get(id)
    }

    pub fn instances(&self) -> impl Iterator<Item = &Instance> {
        self.instances.values()
    }

    /// The registered resources of an instance, as its agent reported them.
    pub fn instance_resources(&self, instance_id: &str) -> Option<Resources> {
        self.instances
            .get(instance_id)
            .map(|i| i.capacity.registered())
    }

    pub(super) fn instance_connected(
        &mut self,
        instance_id: String,
        connection: Connection,
    ) -> Result<CommandOutput, StateError> {
        let instance = self.active_instance_mut(&instance_id)?;
        instance.agent_connected = true;
        instance.connected_since_ms = Some(connection.at_ms);
        instance.last_seen_ms = None;
        instance.agent_version = connection.agent_version;
        instance.capacity.set_registered(connection.resources);
        // The agent's report replaces its previous one and nothing else:
        // the operator's attributes are not the agent's to change.
        instance.agent_attributes = connection.attributes;
        // A host-mode task binds its ports on the host itself: what the
        // instance's own tasks hold is Berth's, not an outside user's.
        let mut outside = connection.host_ports;
        outside.retain(|p| {
            !self
                .tasks_by_instance
                .get(&instance_id)
                .into_iter()
                .flatten()
                .filter_map(|id| self.tasks.get(id))
                .any(|t| t.reservation.ports.contains(p))
        });
        if let Some(instance) = self.instances.get_mut(&instance_id) {
            instance.capacity.set_host_ports(outside);
        }
        self.instance_changed(&instance_id);
        self.instance_output(&instance_id)
    }

    pub(super) fn instance_disconnected(
        &mut self,
        instance_id: String,
        at_ms: i64,
    ) -> Result<CommandOutput, StateError> {
        let instance = self.active_instance_mut(&instance_id)?;
        if instance.agent_connected {
            instance.agent_connected = false;
            instance.connected_since_ms = None;
            instance.last_seen_ms = Some(at_ms);
            self.instance_changed(&instance_id);
        }
        self.instance_output(&instance_id)
    }

    /// The instance stayed disconnected past its cluster's `lost_after`: its
    /// tasks are STOPPED with stop code InstanceLost (services replace them).
    pub(super) fn instance_lost(
        &mut self,
        instance_id: String,
        at_ms: i64,
    ) -> Result<CommandOutput, StateError> {
        let instance = self
            .instances
            .get(&instance_id)
            .ok_or_else(|| StateError::not_found("instance", instance_id.clone()))?;
        if instance.agent_connected {
            return Err(StateError::FailedPrecondition(format!(
                "instance {instance_id} is connected; only a disconnected instance can be lost"
            )));
        }
        let lost_for = instance
            .last_seen_ms
            .map(|seen| (at_ms - seen).max(0) / 1000)
            .unwrap_or(0);
        let reason = format!(
            "instance {instance_id} was disconnected for {lost_for}s, longer than its cluster's lost_after"
        );
        self.stop_instance_tasks(&instance_id, &reason, at_ms);
        self.instance_output(&instance_id)
    }

    pub(super) fn set_instance_draining(
        &mut self,
        instance_id: String,
        draining: bool,
    ) -> Result<CommandOutput, StateError> {
        let instance = self.active_instance_mut(&instance_id)?;
        if instance.draining != draining {
            instance.draining = draining;
            self.instance_changed(&instance_id);
        }
        self.instance_output(&instance_id)
    }

    pub(super) fn put_instance_attributes(
        &mut self,
        instance_id: String,
        attributes: BTreeMap<String, String>,
    ) -> Result<CommandOutput, StateError> {
        let instance = self.active_instance_mut(&instance_id)?;
        instance.attributes.extend(attributes);
        self.instance_changed(&instance_id);
        self.instance_output(&instance_id)
    }

    pub(super) fn delete_instance_attributes(
        &mut self,
        instance_id: String,
        names: Vec<String>,
    ) -> Result<CommandOutput, StateError> {
        let instance = self.active_instance_mut(&instance_id)?;
        for name in &names {
            instance.attributes.remove(name);
        }
        self.instance_changed(&instance_id);
        self.instance_output(&instance_id)
    }

    fn active_instance_mut(&mut self, id: &str) -> Result<&mut Instance, StateError> {
        let instance = self
            .instances
            .get_mut(id)
            .ok_or_else(|| StateError::not_found("instance", id.to_string()))?;
        if instance.status == InstanceStatus::Inactive {
            return Err(StateError::FailedPrecondition(format!(
                "instance {id} is deregistered"
            )));
        }
        Ok(instance)
    }

    pub(crate) fn instance_output(&self, id: &str) -> Result<CommandOutput, StateError> {
        self.instances
            .get(id)
            .cloned()
            .map(CommandOutput::Instance)
            .ok_or_else(|| StateError::not_found("instance", id.to_string()))
    }

    pub(crate) fn instance_changed(&mut self, id: &str) {
        self.events.push(StateEvent::Instance {
            instance_id: id.to_string(),
        });
    }
}
