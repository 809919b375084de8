//! Tags on clusters, task definitions, tasks, services and instances, and
//! account settings.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::command::CommandOutput;
use crate::error::{FieldError, StateError, ValidationErrors};
use crate::event::StateEvent;
use crate::state::State;
use crate::tags::{check_tag_keys, merge_tags, TagTarget};
use crate::taskdef::Tag;

/// Bounds on what an account setting may hold. The names and values ECS
/// allows are checked by the ECS front end; the state only keeps a record
/// from growing without bound.
const MAX_SETTING_NAME_CHARS: usize = 128;
const MAX_SETTING_VALUE_CHARS: usize = 256;
/// An IAM ARN is at most 2048 characters.
const MAX_PRINCIPAL_CHARS: usize = 2048;

/// A task definition keeps its tags as a list (ECS's shape); duplicates,
/// if any, resolve to the last one, as a map read from the list would.
fn tag_map(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .map(|t| (t.key.clone(), t.value.clone()))
        .collect()
}

fn tag_list(tags: BTreeMap<String, String>) -> Vec<Tag> {
    tags.into_iter()
        .map(|(key, value)| Tag { key, value })
        .collect()
}

fn check_setting(principal: &str, name: &str, value: Option<&str>) -> Result<(), StateError> {
    let mut errors = Vec::new();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_SETTING_NAME_CHARS {
        errors.push(FieldError::new(
            "name",
            format!("{chars} characters; use 1 to {MAX_SETTING_NAME_CHARS}"),
        ));
    }
    if let Some(value) = value {
        let chars = value.chars().count();
        if chars > MAX_SETTING_VALUE_CHARS {
            errors.push(FieldError::new(
                "value",
                format!("{chars} characters; use at most {MAX_SETTING_VALUE_CHARS}"),
            ));
        }
    }
    let chars = principal.chars().count();
    if chars > MAX_PRINCIPAL_CHARS {
        errors.push(FieldError::new(
            "principalArn",
            format!("{chars} characters; use at most {MAX_PRINCIPAL_CHARS}"),
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(StateError::Invalid(ValidationErrors(errors)))
    }
}

impl State {
    /// The tags of a resource; NotFound if it does not exist.
    pub fn tags(&self, target: &TagTarget) -> Result<BTreeMap<String, String>, StateError> {
        match target {
            TagTarget::Cluster { name } => self
                .clusters
                .get(name)
                .map(|c| c.tags.clone())
                .ok_or_else(|| StateError::not_found("cluster", name.clone())),
            TagTarget::TaskDefinition { family, revision } => self
                .task_definition(family, *revision)
                .map(|td| tag_map(&td.spec.tags))
                .ok_or_else(|| {
                    StateError::not_found("task definition", format!("{family}:{revision}"))
                }),
            TagTarget::Task { id } => self
                .tasks
                .get(id)
                .map(|t| t.tags.clone())
                .ok_or_else(|| StateError::not_found("task", id.clone())),
            TagTarget::Service { cluster, name } => self
                .service(cluster, name)
                .map(|s| s.tags.clone())
                .ok_or_else(|| StateError::not_found("service", format!("{cluster}/{name}"))),
            TagTarget::Instance { id } => self
                .instances
                .get(id)
                .map(|i| i.tags.clone())
                .ok_or_else(|| StateError::not_found("instance", id.clone())),
        }
    }

    pub(super) fn tag_resource(
        &mut self,
        target: TagTarget,
        add: BTreeMap<String, String>,
    ) -> Result<CommandOutput, StateError> {
        let current = self.tags(&target)?;
        let merged = merge_tags(&current, &add)?;
        self.set_tags(&target, current, merged)
    }

    pub(super) fn untag_resource(
        &mut self,
        target: TagTarget,
        keys: Vec<String>,
    ) -> Result<CommandOutput, StateError> {
        check_tag_keys(&keys)?;
        let current = self.tags(&target)?;
        let mut left = current.clone();
        for key in &keys {
            left.remove(key);
        }
        self.set_tags(&target, current, left)
    }

    /// Writes a resource's new tags (it exists: `tags` just read it), and
    /// announces the record so the journal compares it with what it last
    /// said (the views include tags). Nothing changed: Unchanged, no event.
    fn set_tags(
        &mut self,
        target: &TagTarget,
        current: BTreeMap<String, String>,
        tags: BTreeMap<String, String>,
    ) -> Result<CommandOutput, StateError> {
        if current == tags {
            return Ok(CommandOutput::Unchanged);
        }
        let gone = || StateError::not_found("resource", target.resource());
        match target {
            TagTarget::Cluster { name } => {
                self.clusters.get_mut(name).ok_or_else(gone)?.tags = tags.clone();
            }
            TagTarget::TaskDefinition { family, revision } => {
                let td = self
                    .task_definitions
                    .get_mut(&(family.clone(), *revision))
                    .ok_or_else(gone)?;
                Arc::make_mut(td).spec.tags = tag_list(tags.clone());
            }
            TagTarget::Task { id } => {
                let task = self.tasks.get_mut(id).ok_or_else(gone)?;
                task.tags = tags.clone();
                let event = StateEvent::Task {
                    task_id: id.clone(),
                    instance_id: task.instance_id.clone(),
                };
                self.events.push(event);
            }
            TagTarget::Service { cluster, name } => {
                self.services
                    .get_mut(&(cluster.clone(), name.clone()))
                    .ok_or_else(gone)?
                    .tags = tags.clone();
                self.events.push(StateEvent::Service {
                    cluster: cluster.clone(),
                    name: name.clone(),
                });
            }
            TagTarget::Instance { id } => {
                self.instances.get_mut(id).ok_or_else(gone)?.tags = tags.clone();
                self.events.push(StateEvent::Instance {
                    instance_id: id.clone(),
                });
            }
        }
        Ok(CommandOutput::Tags(tags))
    }

    /// Every account setting, by principal (`""`: the account's defaults),
    /// then name.
    pub fn account_settings(&self) -> &BTreeMap<String, BTreeMap<String, String>> {
        &self.account_settings
    }

    /// The account's default value of a setting (PutAccountSettingDefault).
    pub fn account_setting_default(&self, name: &str) -> Option<&str> {
        self.account_settings_for("")
            .and_then(|s| s.get(name))
            .map(String::as_str)
    }

    /// What a principal set for itself (not the defaults).
    pub fn account_settings_for(&self, principal: &str) -> Option<&BTreeMap<String, String>> {
        self.account_settings.get(principal)
    }

    /// The value in force for a principal: its own, else the default.
    pub fn effective_account_setting(&self, principal: &str, name: &str) -> Option<&str> {
        self.account_settings_for(principal)
            .and_then(|s| s.get(name))
            .map(String::as_str)
            .or_else(|| self.account_setting_default(name))
    }

    pub(super) fn put_account_setting(
        &mut self,
        principal: String,
        name: String,
        value: String,
    ) -> Result<CommandOutput, StateError> {
        check_setting(&principal, &name, Some(&value))?;
        let settings = self.account_settings.entry(principal.clone()).or_default();
        if settings.get(&name) == Some(&value) {
            return Ok(CommandOutput::Unchanged);
        }
        settings.insert(name.clone(), value.clone());
        Ok(CommandOutput::AccountSetting {
            principal,
            name,
            value: Some(value),
        })
    }

    pub(super) fn delete_account_setting(
        &mut self,
        principal: String,
        name: String,
    ) -> Result<CommandOutput, StateError> {
        check_setting(&principal, &name, None)?;
        // Deleting what is not set is done already (a retried delete must
        // not fail).
        let Some(settings) = self.account_settings.get_mut(&principal) else {
            return Ok(CommandOutput::Unchanged);
        };
        if settings.remove(&name).is_none() {
            return Ok(CommandOutput::Unchanged);
        }
        // No empty maps left behind: the state compares equal to one that
        // never had the setting.
        if settings.is_empty() {
            self.account_settings.remove(&principal);
        }
        Ok(CommandOutput::AccountSetting {
            principal,
            name,
            value: None,
        })
    }
}
