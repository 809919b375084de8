//! Clusters: the named groupings every instance, task and service lives in.

use crate::cluster::{Cluster, ClusterSettings, ClusterStatus, DEFAULT_CLUSTER};
use crate::command::CommandOutput;
use crate::error::{FieldError, StateError, ValidationErrors};
use crate::state::State;
use crate::task::TaskStatus;
use crate::validate;
use crate::InstanceStatus;

pub(crate) fn check_cluster_settings(settings: &ClusterSettings) -> Result<(), StateError> {
    let mut errors = Vec::new();
    if settings.lost_after_secs == 0 {
        errors.push(FieldError::new(
            "lostAfter",
            "must be at least 1s (e.g. 5m)",
        ));
    }
    if settings.task_retention_secs == 0 {
        errors.push(FieldError::new(
            "taskRetention",
            "must be at least 1s (e.g. 1h)",
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(StateError::Invalid(ValidationErrors(errors)))
    }
}

impl State {
    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.get(name)
    }

    pub fn clusters(&self) -> impl Iterator<Item = &Cluster> {
        self.clusters.values()
    }

    /// The cluster's `lost_after`, in milliseconds (the default for a
    /// cluster that is gone).
    pub fn lost_after_ms(&self, cluster: &str) -> i64 {
        let secs = self
            .cluster(cluster)
            .map_or(crate::cluster::DEFAULT_LOST_AFTER_SECS, |c| {
                c.settings.lost_after_secs
            });
        i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
    }

    /// How long the cluster keeps STOPPED tasks, in milliseconds.
    pub fn task_retention_ms(&self, cluster: &str) -> i64 {
        let secs = self
            .cluster(cluster)
            .map_or(crate::cluster::DEFAULT_TASK_RETENTION_SECS, |c| {
                c.settings.task_retention_secs
            });
        i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
    }

    pub(super) fn create_cluster(
        &mut self,
        name: String,
        settings: ClusterSettings,
        tags: std::collections::BTreeMap<String, String>,
        at_ms: i64,
    ) -> Result<CommandOutput, StateError> {
        validate::check_name("clusterName", &name)?;
        check_cluster_settings(&settings)?;
        // The limits of a TagResource on a cluster without tags.
        let tags = crate::tags::merge_tags(&Default::default(), &tags)?;
        if self.clusters.contains_key(&name) {
            return Err(StateError::already_exists("cluster", name));
        }
        let cluster = Cluster {
            name: name.clone(),
            status: ClusterStatus::Active,
            created_at_ms: at_ms,
            settings,
            tags,
        };
        self.clusters.insert(name.clone(), cluster.clone());
        Ok(CommandOutput::Cluster(cluster))
    }

    pub(super) fn update_cluster_settings(
        &mut self,
        name: String,
        lost_after_secs: Option<u64>,
        task_retention_secs: Option<u64>,
    ) -> Result<CommandOutput, StateError> {
        let cluster = self
            .clusters
            .get(&name)
            .ok_or_else(|| StateError::not_found("cluster", name.clone()))?;
        let mut settings = cluster.settings.clone();
        if let Some(v) = lost_after_secs {
            settings.lost_after_secs = v;
        }
        if let Some(v) = task_retention_secs {
            settings.task_retention_secs = v;
        }
        check_cluster_settings(&settings)?;
        let cluster = self
            .clusters
            .get_mut(&name)
            .ok_or_else(|| StateError::not_found("cluster", name.clone()))?;
        cluster.settings = settings;
        Ok(CommandOutput::Cluster(cluster.clone()))
    }

    pub(super) fn delete_cluster(&mut self, name: String) -> Result<CommandOutput, StateError> {
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
        let services = self
            .services_in(&name)
            .filter(|s| s.status != crate::ServiceStatus::Inactive)
            .count();
        if services > 0 {
            return Err(StateError::FailedPrecondition(format!(
                "cluster {name:?} still has {services} services; delete them first"
            )));
        }
        self.services.retain(|(cluster, _), _| *cluster != name);
        self.clusters.remove(&name);
        Ok(CommandOutput::ClusterDeleted(name))
    }
}

#[cfg(test)]
mod tests {
    use crate::{Command, State, StateError, DEFAULT_CLUSTER};

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
}
