//! Prometheus service discovery from the instance list: where each agent's
//! `/metrics` is, as Prometheus's HTTP service discovery reads it
//! (`[{"targets": ["HOST:PORT"], "labels": {...}}]`).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::Serialize;

use crate::endpoints::ADDRESS_ATTRIBUTE;
use crate::{InstanceStatus, State};

/// The agent attribute holding the address its health listener (and so
/// `/metrics`) is bound to, as given to `--health-listen`.
pub const METRICS_ATTRIBUTE: &str = "metrics";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetGroup {
    pub targets: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

/// One group per registered instance whose agent serves metrics. An agent
/// bound to every address (`0.0.0.0:PORT`) is reached at the instance's
/// address; one bound to loopback only is left out unless the instance
/// itself is on loopback (nothing else could reach it).
pub fn agent_targets(state: &State) -> Vec<TargetGroup> {
    state
        .instances()
        .filter(|i| i.status == InstanceStatus::Active)
        .filter_map(|instance| {
            let bound: SocketAddr = instance
                .agent_attributes
                .get(METRICS_ATTRIBUTE)?
                .parse()
                .ok()?;
            let target = if bound.ip().is_unspecified() {
                let host = instance.agent_attributes.get(ADDRESS_ATTRIBUTE)?;
                let ip: std::net::IpAddr = host.parse().ok()?;
                SocketAddr::new(ip, bound.port())
            } else if bound.ip().is_loopback() {
                // Reachable only from its own host: fine when that is where
                // the control plane sees it (a dev cluster on one machine).
                let host = instance.agent_attributes.get(ADDRESS_ATTRIBUTE)?;
                let ip: std::net::IpAddr = host.parse().ok()?;
                if !ip.is_loopback() {
                    return None;
                }
                bound
            } else {
                bound
            };
            let labels = BTreeMap::from([
                ("berth_instance_id".to_string(), instance.id.clone()),
                ("berth_cluster".to_string(), instance.cluster.clone()),
                ("berth_hostname".to_string(), instance.hostname.clone()),
            ]);
            Some(TargetGroup {
                targets: vec![target.to_string()],
                labels,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Command, Registration};

    fn with_agents(attributes: &[&[(&str, &str)]]) -> State {
        let mut state = State::new();
        state
            .apply(Command::CreateActivation {
                id: "act".into(),
                cluster: "default".into(),
                description: String::new(),
                secret_hash: "h".into(),
                expires_at_ms: i64::MAX,
                max_registrations: 10,
                attributes: BTreeMap::new(),
                at_ms: 0,
            })
            .unwrap();
        for (n, attrs) in attributes.iter().enumerate() {
            let id = format!("i-{n}");
            state
                .apply(Command::RegisterInstance(Registration {
                    activation_id: "act".into(),
                    secret_hash: "h".into(),
                    new_instance_id: id.clone(),
                    previous_instance_id: None,
                    expected_cluster: None,
                    hostname: format!("host-{n}"),
                    attributes: BTreeMap::new(),
                    certificate_expires_at_ms: i64::MAX,
                    at_ms: 1,
                    public_key_sha256: String::new(),
                }))
                .unwrap();
            state
                .apply(Command::InstanceConnected {
                    instance_id: id,
                    agent_version: "t".into(),
                    resources: crate::resources::Resources::new(1024, 1024),
                    attributes: attrs
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    host_ports: vec![],
                    at_ms: 2,
                })
                .unwrap();
        }
        state
    }

    #[test]
    fn agents_are_found_where_prometheus_can_reach_them() {
        let state = with_agents(&[
            &[("metrics", "0.0.0.0:7481"), ("address", "10.0.0.5")],
            &[("metrics", "10.0.0.6:9000")],
            &[("metrics", "127.0.0.1:7481"), ("address", "10.0.0.7")],
            &[("address", "10.0.0.8")],
            &[("metrics", "127.0.0.1:7482"), ("address", "127.0.0.1")],
        ]);
        let groups = agent_targets(&state);
        let targets: Vec<&str> = groups.iter().map(|g| g.targets[0].as_str()).collect();
        assert_eq!(
            targets,
            ["10.0.0.5:7481", "10.0.0.6:9000", "127.0.0.1:7482"]
        );
        assert_eq!(groups[0].labels["berth_instance_id"], "i-0");
        assert_eq!(groups[1].labels["berth_hostname"], "host-1");
    }
}
