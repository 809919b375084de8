//! Clusters.

use berth_types as t;
use t::FieldError;

use super::wire_enum;
use crate::pb;

impl From<t::Cluster> for pb::Cluster {
    fn from(c: t::Cluster) -> Self {
        Self {
            name: c.name,
            status: c.status.as_str().to_string(),
            created_at_ms: c.created_at_ms,
            lost_after_secs: c.settings.lost_after_secs,
            task_retention_secs: c.settings.task_retention_secs,
            tags: c.tags,
        }
    }
}

impl TryFrom<pb::Cluster> for t::Cluster {
    type Error = FieldError;

    fn try_from(c: pb::Cluster) -> Result<Self, FieldError> {
        Ok(Self {
            status: wire_enum("status", &c.status, t::ClusterStatus::parse, "ACTIVE")?,
            name: c.name,
            created_at_ms: c.created_at_ms,
            settings: t::ClusterSettings {
                lost_after_secs: c.lost_after_secs,
                task_retention_secs: c.task_retention_secs,
            },
            tags: c.tags,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_survives_the_wire_and_an_unknown_status_names_itself() {
        let cluster = t::Cluster {
            name: "prod".into(),
            status: t::ClusterStatus::Active,
            created_at_ms: 5,
            settings: t::ClusterSettings {
                lost_after_secs: 60,
                task_retention_secs: 120,
            },
            tags: [("team".to_string(), "core".to_string())].into(),
        };
        let mut wire = pb::Cluster::from(cluster.clone());
        assert_eq!(t::Cluster::try_from(wire.clone()), Ok(cluster));
        wire.status = "EXPLODED".into();
        let err = t::Cluster::try_from(wire).unwrap_err();
        assert_eq!(err.field, "status");
        assert!(err.message.contains("EXPLODED"), "{err}");
    }
}
