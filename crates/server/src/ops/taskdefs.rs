//! RegisterTaskDefinition, ListTaskDefinitions, ListTaskDefinitionFamilies,
//! DescribeTaskDefinition, DeregisterTaskDefinition.

use std::sync::Arc;

use berth_types::{
    validate, Command, CommandOutput, FieldError, TaskDefinition, TaskDefinitionFamily,
    TaskDefinitionRef, TaskDefinitionSpec, TaskDefinitionStatus,
};

use super::{unexpected, Ops};
use crate::api::now_ms;
use crate::error::ServerError;

fn parse_ref(text: &str) -> Result<TaskDefinitionRef, ServerError> {
    TaskDefinitionRef::parse(text).map_err(ServerError::from_field)
}

impl Ops {
    pub async fn register_task_definition(
        &self,
        spec: TaskDefinitionSpec,
    ) -> Result<TaskDefinition, ServerError> {
        // Checked here so that bad input is refused without a Raft round;
        // the state machine checks again when applying.
        validate::validate_spec(&spec).map_err(ServerError::Invalid)?;
        match self
            .node
            .write(Command::RegisterTaskDefinition {
                spec,
                at_ms: now_ms(),
            })
            .await?
        {
            CommandOutput::TaskDefinition(td) => {
                tracing::debug!(task_definition = %td.id(), "registered");
                Ok(Arc::unwrap_or_clone(td))
            }
            other => Err(unexpected(other)),
        }
    }

    /// Every revision (of `family`, if given) with `status`, if given.
    pub async fn list_task_definitions(
        &self,
        family: Option<&str>,
        status: Option<TaskDefinitionStatus>,
    ) -> Result<Vec<TaskDefinition>, ServerError> {
        self.node
            .read(|state| {
                let matches = |td: &&TaskDefinition| status.is_none_or(|s| td.status == s);
                match family {
                    None => state.task_definitions().filter(matches).cloned().collect(),
                    Some(f) => state.family_revisions(f).filter(matches).cloned().collect(),
                }
            })
            .await
    }

    pub async fn list_task_definition_families(
        &self,
    ) -> Result<Vec<TaskDefinitionFamily>, ServerError> {
        self.node
            .read(|state| {
                state
                    .families()
                    .map(|(family, latest)| TaskDefinitionFamily {
                        family: family.to_string(),
                        latest_revision: latest,
                        latest_active_revision: state.latest_active(family).map(|td| td.revision),
                    })
                    .collect()
            })
            .await
    }

    /// `FAMILY:REVISION`, or `FAMILY` for its latest ACTIVE revision.
    pub async fn describe_task_definition(
        &self,
        reference: &str,
    ) -> Result<TaskDefinition, ServerError> {
        let reference = parse_ref(reference)?;
        let found = self
            .node
            .read(|state| {
                match reference.revision {
                    Some(rev) => state.task_definition(&reference.family, rev),
                    None => state.latest_active(&reference.family),
                }
                .cloned()
            })
            .await?;
        match found {
            Some(td) => Ok(td),
            None if reference.revision.is_none() => Err(ServerError::NotFound(format!(
                "task definition family {:?} has no ACTIVE revision",
                reference.family
            ))),
            None => Err(ServerError::NotFound(format!(
                "task definition {reference} not found"
            ))),
        }
    }

    pub async fn deregister_task_definition(
        &self,
        reference: &str,
    ) -> Result<TaskDefinition, ServerError> {
        let (family, revision) = one_revision(reference, "deregister")?;
        self.revision_command(Command::DeregisterTaskDefinition {
            family,
            revision,
            at_ms: now_ms(),
        })
        .await
    }

    /// Proposes a command on one revision and answers that revision.
    async fn revision_command(&self, command: Command) -> Result<TaskDefinition, ServerError> {
        match self.node.write(command).await? {
            CommandOutput::TaskDefinition(td) => Ok(Arc::unwrap_or_clone(td)),
            other => Err(unexpected(other)),
        }
    }

    /// Deletes an INACTIVE revision nothing runs from any more (the answer
    /// is the revision as it was, status DELETED).
    pub async fn delete_task_definition(
        &self,
        reference: &str,
    ) -> Result<TaskDefinition, ServerError> {
        let (family, revision) = one_revision(reference, "delete")?;
        self.revision_command(Command::DeleteTaskDefinition {
            family,
            revision,
            at_ms: now_ms(),
        })
        .await
    }
}

/// `FAMILY:REVISION` for a call on one revision (`verb` says which, for the
/// error a bare family gets).
fn one_revision(reference: &str, verb: &str) -> Result<(String, u32), ServerError> {
    let reference = parse_ref(reference)?;
    match reference.revision {
        Some(revision) => Ok((reference.family, revision)),
        None => Err(ServerError::from_field(FieldError::new(
            "taskDefinition",
            format!(
                "{:?} has no revision; {verb} one revision at a time, e.g. {}:1",
                reference.family, reference.family
            ),
        ))),
    }
}
