//! CreateCluster, UpdateCluster, ListClusters, DescribeCluster, DeleteCluster.

use std::collections::BTreeMap;

use berth_types::{validate, Cluster, ClusterSettings, Command, CommandOutput};

use super::{unexpected, Ops};
use crate::api::now_ms;
use crate::error::ServerError;

impl Ops {
    /// A setting of 0 or none takes its default. The cluster is created
    /// with its tags in one command: with them, or not at all.
    pub async fn create_cluster(
        &self,
        name: String,
        lost_after_secs: Option<u64>,
        task_retention_secs: Option<u64>,
        tags: BTreeMap<String, String>,
    ) -> Result<Cluster, ServerError> {
        validate::check_name("name", &name).map_err(ServerError::from_field)?;
        // The limits of a TagResource on a cluster without tags (the count
        // too), checked before any Raft round.
        berth_types::tags::merge_tags(&BTreeMap::new(), &tags)?;
        let defaults = ClusterSettings::default();
        let settings = ClusterSettings {
            lost_after_secs: lost_after_secs
                .filter(|s| *s > 0)
                .unwrap_or(defaults.lost_after_secs),
            task_retention_secs: task_retention_secs
                .filter(|s| *s > 0)
                .unwrap_or(defaults.task_retention_secs),
        };
        let at_ms = now_ms();
        // Without tags, the command every level knows: an older member is
        // then no obstacle to creating a cluster.
        let command = if tags.is_empty() {
            Command::CreateCluster {
                name,
                settings,
                at_ms,
            }
        } else {
            Command::CreateTaggedCluster {
                name,
                settings,
                tags,
                at_ms,
            }
        };
        match self.node.write(command).await? {
            CommandOutput::Cluster(c) => Ok(c),
            other => Err(unexpected(other)),
        }
    }

    pub async fn update_cluster(
        &self,
        name: String,
        lost_after_secs: Option<u64>,
        task_retention_secs: Option<u64>,
    ) -> Result<Cluster, ServerError> {
        match self
            .node
            .write(Command::UpdateClusterSettings {
                name,
                lost_after_secs,
                task_retention_secs,
            })
            .await?
        {
            CommandOutput::Cluster(c) => Ok(c),
            other => Err(unexpected(other)),
        }
    }

    pub async fn list_clusters(&self) -> Result<Vec<Cluster>, ServerError> {
        self.node
            .read(|state| state.clusters().cloned().collect())
            .await
    }

    pub async fn describe_cluster(&self, name: &str) -> Result<Cluster, ServerError> {
        self.node
            .read(|state| state.cluster(name).cloned())
            .await?
            .ok_or_else(|| ServerError::NotFound(format!("cluster {name:?} not found")))
    }

    /// Returns the deleted cluster's name.
    pub async fn delete_cluster(&self, name: String) -> Result<String, ServerError> {
        match self.node.write(Command::DeleteCluster { name }).await? {
            CommandOutput::ClusterDeleted(name) => Ok(name),
            other => Err(unexpected(other)),
        }
    }
}
