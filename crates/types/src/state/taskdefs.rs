//! Task definitions: revisions of a family, numbered by a counter that is
//! never decremented so numbers are contiguous and never reused.

use std::sync::Arc;

use crate::command::CommandOutput;
use crate::error::StateError;
use crate::state::{FamilyRecord, State};
use crate::taskdef::{TaskDefinition, TaskDefinitionSpec, TaskDefinitionStatus};
use crate::validate;

impl State {
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

    /// Resolves `FAMILY` (its latest ACTIVE revision) or `FAMILY:REVISION`;
    /// `field` names the request field in errors.
    pub fn resolve_task_definition(
        &self,
        field: &str,
        reference: &str,
    ) -> Result<&TaskDefinition, StateError> {
        match reference.split_once(':') {
            Some((family, rev)) => {
                let rev: u32 = rev.parse().map_err(|_| {
                    StateError::Invalid(
                        crate::FieldError::new(
                            field,
                            format!("{reference:?} is not FAMILY or FAMILY:REVISION"),
                        )
                        .into(),
                    )
                })?;
                self.task_definition(family, rev).ok_or_else(|| {
                    StateError::not_found("task definition", format!("{family}:{rev}"))
                })
            }
            None => self.latest_active(reference).ok_or_else(|| {
                StateError::not_found(
                    "task definition",
                    format!("{reference} (no ACTIVE revision)"),
                )
            }),
        }
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

    pub(super) fn register_task_definition(
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

    pub(super) fn deregister_task_definition(
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

    pub(super) fn delete_task_definition(
        &mut self,
        family: String,
        revision: u32,
        at_ms: i64,
    ) -> Result<CommandOutput, StateError> {
        let id = format!("{family}:{revision}");
        let key = (family.clone(), revision);
        let Some(definition) = self.task_definitions.get(&key) else {
            return Err(StateError::not_found("task definition", id));
        };
        if definition.status == TaskDefinitionStatus::Active {
            return Err(StateError::FailedPrecondition(format!(
                "task definition {id} is ACTIVE; deregister it first (berth taskdef deregister, DeregisterTaskDefinition)"
            )));
        }
        // What still runs from it needs it: the agents read a task's
        // containers from its definition until the task has stopped.
        let running = self
            .tasks
            .values()
            .filter(|t| {
                t.family == family
                    && t.revision == revision
                    && t.last_status != crate::task::TaskStatus::Stopped
            })
            .count();
        if running > 0 {
            return Err(StateError::FailedPrecondition(format!(
                "task definition {id} is used by {running} task(s) not yet STOPPED; stop them first"
            )));
        }
        let deploying = self.services.values().find(|s| {
            s.status != crate::service::ServiceStatus::Inactive
                && s.deployments.iter().any(|d| {
                    d.task_definition == id
                        && d.status != crate::service::DeploymentStatus::Inactive
                })
        });
        if let Some(service) = deploying {
            return Err(StateError::FailedPrecondition(format!(
                "task definition {id} is deployed by service {}/{}; update the service to another revision first",
                service.cluster, service.name
            )));
        }
        let Some(removed) = self.task_definitions.remove(&key) else {
            return Err(StateError::not_found("task definition", id));
        };
        let mut deleted = (*removed).clone();
        deleted.status = TaskDefinitionStatus::Deleted;
        deleted.deregistered_at_ms = deleted.deregistered_at_ms.or(Some(at_ms));
        Ok(CommandOutput::TaskDefinition(Arc::new(deleted)))
    }
}
