//! Where a service can be reached: one endpoint per published port of each
//! of its healthy RUNNING tasks (and, marked draining, of its DEACTIVATING
//! ones). DNS, the `WatchEndpoints` stream and load balancers all read this
//! one function, so they agree.

use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use crate::service::{Service, TaskHealth};
use crate::state::State;
use crate::task::{Task, TaskStatus};
use crate::{NetworkMode, Protocol};

/// The agent attribute holding the address other hosts reach the instance
/// on: what the agent's `--advertise-address` says, or else the source
/// address of its session as the leader saw it. Seen as `agent.address`.
pub const ADDRESS_ATTRIBUTE: &str = "address";

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// An IP address: the instance's (host and bridge modes) or the task's
    /// own (task mode).
    pub address: String,
    /// The host port (host and bridge modes) or the container port (task
    /// mode).
    pub port: u32,
    pub protocol: Protocol,
    pub container_name: String,
    pub container_port: u32,
    pub task_id: String,
    pub instance_id: String,
    /// Its relative share of load balancer traffic, 0 to [`MAX_WEIGHT`]:
    /// [`FULL_WEIGHT`] for every task of a rolling service; in a blue/green
    /// deployment, each deployment's traffic share split among its tasks (0
    /// for a deployment that gets none yet).
    pub weight: u32,
    /// DEACTIVATING: the task is to stop; load balancers send it no new
    /// connections and let the open ones finish.
    pub draining: bool,
    /// The service's load balancers that send traffic to this container
    /// port.
    pub load_balancers: Vec<String>,
}

impl Endpoint {
    /// Whether new clients should be sent here (what DNS answers with).
    pub fn takes_new_traffic(&self) -> bool {
        !self.draining && self.weight > 0
    }
}

/// HAProxy's largest server weight.
pub const MAX_WEIGHT: u32 = 256;
/// The weight of every endpoint of a service that is not shifting traffic.
pub const FULL_WEIGHT: u32 = 100;

/// The endpoints of service `name` in `cluster`, sorted: every port
/// binding of each task that is RUNNING, wanted RUNNING, and healthy (every
/// essential container with a health check HEALTHY), on an instance whose
/// address is known (task mode: with its own address known); and, marked
/// draining, those of its DEACTIVATING tasks. A task asked to stop without
/// a load balancer, failing its checks or on a lost instance (its tasks are
/// stopped) is not an endpoint.
pub fn service_endpoints(state: &State, cluster: &str, name: &str) -> Vec<Endpoint> {
    let Some(service) = state.service(cluster, name) else {
        return Vec::new();
    };
    let mut tasks = Vec::new();
    for task in state.service_tasks(cluster, name) {
        let draining =
            task.last_status == TaskStatus::Deactivating && task.deactivating_until_ms.is_some();
        if !draining && state.task_health(task) != TaskHealth::Healthy {
            continue;
        }
        tasks.push((task, draining));
    }
    let weights = Weights::new(service, tasks.iter().map(|(t, d)| (*t, *d)));
    let mut endpoints = Vec::new();
    for (task, draining) in tasks {
        let Some(instance) = task
            .instance_id
            .as_deref()
            .and_then(|id| state.instance(id))
        else {
            continue;
        };
        let Some(definition) = state.task_definition(&task.family, task.revision) else {
            continue;
        };
        let mode = definition.spec.network_mode;
        let reachable: Vec<(String, u32, crate::NetworkBinding)> = match mode {
            NetworkMode::None => continue,
            NetworkMode::Task => {
                let Some(ip) = task.ip.clone() else {
                    continue;
                };
                definition
                    .spec
                    .container_definitions
                    .iter()
                    .flat_map(|c| {
                        c.port_mappings.iter().map(|m| crate::NetworkBinding {
                            container_name: c.name.clone(),
                            container_port: m.container_port,
                            host_port: m.container_port,
                            protocol: m.protocol,
                        })
                    })
                    .map(|b| (ip.clone(), b.container_port, b))
                    .collect()
            }
            NetworkMode::Host | NetworkMode::Bridge => {
                let Some(address) = instance.agent_attributes.get(ADDRESS_ATTRIBUTE) else {
                    continue;
                };
                crate::resources::network_bindings(&definition.spec, &task.reservation)
                    .into_iter()
                    .map(|b| (address.clone(), b.host_port, b))
                    .collect()
            }
        };
        let weight = if draining { 0 } else { weights.of(task) };
        for (address, port, binding) in reachable {
            let load_balancers = service
                .load_balancers
                .iter()
                .filter(|lb| {
                    lb.container_name == binding.container_name
                        && lb.container_port == binding.container_port
                })
                .map(|lb| lb.name.clone())
                .collect();
            endpoints.push(Endpoint {
                address,
                port,
                protocol: binding.protocol,
                container_name: binding.container_name,
                container_port: binding.container_port,
                task_id: task.id.clone(),
                instance_id: instance.id.clone(),
                weight,
                draining,
                load_balancers,
            });
        }
    }
    endpoints.sort();
    endpoints
}

/// Load balancer weights per task. A rolling service weighs every task the
/// same. A blue/green one gives each current deployment its traffic share,
/// split evenly among its serving tasks, so the proxy's weighted balancing
/// sends each deployment its share whatever the task counts.
struct Weights<'a> {
    service: &'a Service,
    /// Serving (not draining) tasks per deployment.
    serving: BTreeMap<&'a str, u32>,
}

impl<'a> Weights<'a> {
    fn new(service: &'a Service, tasks: impl Iterator<Item = (&'a Task, bool)>) -> Self {
        let mut serving: BTreeMap<&str, u32> = BTreeMap::new();
        for (task, draining) in tasks {
            if !draining {
                *serving.entry(task.started_by.as_str()).or_default() += 1;
            }
        }
        Self { service, serving }
    }

    fn of(&self, task: &Task) -> u32 {
        if self.service.deployment_configuration.blue_green().is_none() {
            return FULL_WEIGHT;
        }
        let Some(deployment) = self
            .service
            .deployments
            .iter()
            .find(|d| d.id == task.started_by)
        else {
            // Its deployment retired: it is on its way out.
            return 0;
        };
        let share = deployment.traffic_percent.min(100);
        if share == 0 {
            return 0;
        }
        let tasks = self
            .serving
            .get(task.started_by.as_str())
            .copied()
            .unwrap_or(1)
            .max(1);
        // MAX_WEIGHT for all the traffic on one task; at least 1 so a share
        // never rounds away.
        (share * MAX_WEIGHT / 100 / tasks).clamp(1, MAX_WEIGHT)
    }
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
        feed(&e.weight.to_le_bytes());
        feed(&[u8::from(e.draining)]);
        for lb in &e.load_balancers {
            feed(lb.as_bytes());
            feed(&[0xfe]);
        }
        feed(&[0xff]);
    }
    hash
}
