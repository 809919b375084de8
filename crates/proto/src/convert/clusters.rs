//! Clusters.

use berth_types as t;

use crate::pb;

impl From<t::Cluster> for pb::Cluster {
    fn from(c: t::Cluster) -> Self {
        Self {
            name: c.name,
            status: "ACTIVE".to_string(),
            created_at_ms: c.created_at_ms,
            lost_after_secs: c.settings.lost_after_secs,
            task_retention_secs: c.settings.task_retention_secs,
        }
    }
}
