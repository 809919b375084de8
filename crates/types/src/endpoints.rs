//! Where a service can be reached: one endpoint per published port of each
//! of its healthy RUNNING tasks. DNS, the `WatchEndpoints` stream and load
//! balancers all read this one function, so they agree.

use serde::{Deserialize, Serialize};

use crate::service::TaskHealth;
use crate::state::State;
use crate::{NetworkMode, Protocol};

/// The agent attribute holding the address other hosts reach the instance
/// on: what the agent's `--advertise-address` says, or else the source
/// address of its session as the leader saw it. Seen as `agent.address`.
pub const ADDRESS_ATTRIBUTE: &str = "address";

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// An IP address: the instance's (host and bridge modes).
    pub address: String,
    pub port: u32,
    pub protocol: Protocol,
    pub container_name: String,
    pub container_port: u32,
    pub task_id: String,
    pub instance_id: String,
}

/// The endpoints of service `name` in `cluster`, sorted: every port
/// binding of each task that is RUNNING, wanted RUNNING, and healthy (every
/// essential container with a health check HEALTHY), on an instance whose
/// address is known. A task asked to stop, failing its checks or on a lost
/// instance (its tasks are stopped) is not an endpoint.
pub fn service_endpoints(state: &State, cluster: &str, name: &str) -> Vec<Endpoint> {
    let mut endpoints = Vec::new();
    for task in state.service_tasks(cluster, name) {
        if state.task_health(task) != TaskHealth::Healthy {
            continue;
        }
        let Some(instance) = task
            .instance_id
            .as_deref()
            .and_then(|id| state.instance(id))
        else {
            continue;
        };
        let Some(address) = instance.agent_attributes.get(ADDRESS_ATTRIBUTE) else {
            continue;
        };
        let Some(definition) = state.task_definition(&task.family, task.revision) else {
            continue;
        };
        if definition.spec.network_mode == NetworkMode::None {
            continue;
        }
        for binding in crate::resources::network_bindings(&definition.spec, &task.reservation) {
            endpoints.push(Endpoint {
                address: address.clone(),
                port: binding.host_port,
                protocol: binding.protocol,
                container_name: binding.container_name,
                container_port: binding.container_port,
                task_id: task.id.clone(),
                instance_id: instance.id.clone(),
            });
        }
    }
    endpoints.sort();
    endpoints
}

/// [`service_endpoints`] of a service that exists (is not INACTIVE), or
/// `None`: what callers answering "no such service" need.
pub fn live_service_endpoints(state: &State, cluster: &str, name: &str) -> Option<Vec<Endpoint>> {
    let live = state
        .service(cluster, name)
        .is_some_and(|s| s.status != crate::ServiceStatus::Inactive);
    live.then(|| service_endpoints(state, cluster, name))
}

/// Identifies a set of endpoints: equal sets, equal revisions, on every
/// server (FNV-1a over the sorted set), so a client that reconnects
/// elsewhere can say what it has and hear only of changes.
pub fn revision(endpoints: &[Endpoint]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for e in endpoints {
        feed(e.address.as_bytes());
        feed(&e.port.to_le_bytes());
        feed(e.protocol.as_str().as_bytes());
        feed(e.container_name.as_bytes());
        feed(&e.container_port.to_le_bytes());
        feed(e.task_id.as_bytes());
        feed(e.instance_id.as_bytes());
        feed(&[0xff]);
    }
    hash
}
