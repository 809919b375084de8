//! ListInstances, DescribeInstance, DeregisterInstance, draining and
//! attributes of container instances.

use std::collections::BTreeMap;

use berth_types::{limits, Command, CommandOutput, InstanceView};

use super::{check_len, invalid, unexpected, Ops};
use crate::api::now_ms;
use crate::error::ServerError;

impl Ops {
    /// Proposes a command that answers with an instance, and shows it with
    /// its task count as applied.
    async fn instance_command(&self, command: Command) -> Result<InstanceView, ServerError> {
        let output = self.node.write(command).await?;
        let CommandOutput::Instance(instance) = output else {
            return Err(unexpected(output));
        };
        let running = self
            .node
            .state()
            .read()
            .state
            .active_task_count_on(&instance.id);
        Ok(InstanceView::new(&instance, running))
    }

    /// Every instance, or a cluster's.
    pub async fn list_instances(
        &self,
        cluster: Option<&str>,
    ) -> Result<Vec<InstanceView>, ServerError> {
        self.node
            .read(|state| {
                state
                    .instances()
                    .filter(|i| cluster.is_none_or(|c| i.cluster == c))
                    .map(|i| InstanceView::new(i, state.active_task_count_on(&i.id)))
                    .collect()
            })
            .await
    }

    pub async fn describe_instance(&self, id: &str) -> Result<InstanceView, ServerError> {
        self.node
            .read(|state| {
                state
                    .instance(id)
                    .map(|i| InstanceView::new(i, state.active_task_count_on(&i.id)))
            })
            .await?
            .ok_or_else(|| ServerError::NotFound(format!("instance {id:?} not found")))
    }

    pub async fn deregister_instance(&self, id: String) -> Result<InstanceView, ServerError> {
        check_len("id", &id, limits::MAX_ID_LEN)?;
        let instance = self
            .instance_command(Command::DeregisterInstance {
                instance_id: id,
                at_ms: now_ms(),
            })
            .await?;
        tracing::info!(instance_id = %instance.id, "instance deregistered");
        Ok(instance)
    }

    /// Draining (no new tasks; services replace theirs) or ACTIVE again.
    pub async fn set_instance_draining(
        &self,
        id: String,
        draining: bool,
    ) -> Result<InstanceView, ServerError> {
        check_len("id", &id, limits::MAX_ID_LEN)?;
        let instance = self
            .instance_command(Command::SetInstanceDraining {
                instance_id: id,
                draining,
            })
            .await?;
        tracing::info!(instance_id = %instance.id, draining, "instance draining set");
        Ok(instance)
    }

    pub async fn put_instance_attributes(
        &self,
        id: String,
        attributes: BTreeMap<String, String>,
    ) -> Result<InstanceView, ServerError> {
        check_len("id", &id, limits::MAX_ID_LEN)?;
        if attributes.is_empty() {
            return Err(invalid("attributes", "give at least one NAME=VALUE"));
        }
        super::check_operator_attributes(&attributes)?;
        self.instance_command(Command::PutInstanceAttributes {
            instance_id: id,
            attributes,
        })
        .await
    }

    pub async fn delete_instance_attributes(
        &self,
        id: String,
        names: Vec<String>,
    ) -> Result<InstanceView, ServerError> {
        check_len("id", &id, limits::MAX_ID_LEN)?;
        check_attribute_names(&names)?;
        self.instance_command(Command::DeleteInstanceAttributes {
            instance_id: id,
            names,
        })
        .await
    }
}

/// The names a DeleteInstanceAttributes may remove: some, bounded, and none
/// the agents report.
pub fn check_attribute_names(names: &[String]) -> Result<(), ServerError> {
    if names.is_empty() {
        return Err(invalid("names", "give at least one attribute name"));
    }
    limits::check_count("names", names.len(), limits::MAX_ATTRIBUTES)?;
    for (i, name) in names.iter().enumerate() {
        check_len(&format!("names[{i}]"), name, 128)?;
        berth_types::validate::check_operator_attribute_name(&format!("names[{i}]"), name)
            .map_err(|e| ServerError::Invalid(e.into()))?;
    }
    Ok(())
}
