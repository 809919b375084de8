//! TagResource, UntagResource and ListTagsForResource on clusters, task
//! definitions, tasks, services and container instances.

use std::collections::BTreeMap;

use berth_types::tags::{check_tag_keys, check_tags};
use berth_types::{Command, CommandOutput, TagTarget};

use super::{unexpected, Ops};
use crate::error::ServerError;

type Tags = BTreeMap<String, String>;

impl Ops {
    /// Adds tags (a key already there takes the new value); returns the
    /// resource's tags afterwards.
    pub async fn tag_resource(&self, target: TagTarget, tags: Tags) -> Result<Tags, ServerError> {
        // Checked here too so a bad request costs no Raft round; the state
        // machine checks again, with the 50-tag limit after the merge.
        check_tags(&tags)?;
        let output = self
            .node
            .write(Command::TagResource {
                target: target.clone(),
                tags,
            })
            .await?;
        self.tags_after(target, output).await
    }

    /// Removes tags by key (keys the resource lacks are ignored); returns
    /// the resource's tags afterwards.
    pub async fn untag_resource(
        &self,
        target: TagTarget,
        keys: Vec<String>,
    ) -> Result<Tags, ServerError> {
        check_tag_keys(&keys)?;
        let output = self
            .node
            .write(Command::UntagResource {
                target: target.clone(),
                keys,
            })
            .await?;
        self.tags_after(target, output).await
    }

    /// A resource's tags; NotFound if it does not exist.
    pub async fn list_tags(&self, target: &TagTarget) -> Result<Tags, ServerError> {
        Ok(self.node.read(|state| state.tags(target)).await??)
    }

    async fn tags_after(
        &self,
        target: TagTarget,
        output: CommandOutput,
    ) -> Result<Tags, ServerError> {
        match output {
            CommandOutput::Tags(tags) => Ok(tags),
            // Nothing changed: the tags are what a (linearizable) read
            // finds, whichever server applied the write first.
            CommandOutput::Unchanged => self.list_tags(&target).await,
            other => Err(unexpected(other)),
        }
    }
}
