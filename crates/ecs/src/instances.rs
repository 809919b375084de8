//! A container instance (a Berth instance: a host running berth-agent) as
//! ECS's DescribeContainerInstances and the instance calls answer with it.
//! ECS has no DISCONNECTED status: such an instance is ACTIVE with
//! `agentConnected: false`, as ECS shows an instance whose agent is gone.

use serde::Serialize;

use crate::arn::{Resource, Scope};
use crate::clusters::Tag;
use crate::page::epoch_seconds;

/// ECS's `Resource`: an integer (CPU, MEMORY) or a set of strings (PORTS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceResource {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub integer_value: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub string_set_value: Vec<String>,
}

fn integer(name: &str, value: u64) -> InstanceResource {
    InstanceResource {
        name: name.into(),
        kind: "INTEGER".into(),
        integer_value: Some(value),
        string_set_value: Vec::new(),
    }
}

fn ports(ports: &[u32]) -> InstanceResource {
    InstanceResource {
        name: "PORTS".into(),
        kind: "STRINGSET".into(),
        integer_value: None,
        string_set_value: ports.iter().map(u32::to_string).collect(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Attribute {
    pub name: String,
    pub value: String,
    pub target_type: String,
    pub target_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    pub agent_version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerInstance {
    pub container_instance_arn: String,
    /// ECS Anywhere shows the managed instance id here; Berth's instance id
    /// is the equivalent.
    pub ec2_instance_id: String,
    pub version_info: VersionInfo,
    pub remaining_resources: Vec<InstanceResource>,
    pub registered_resources: Vec<InstanceResource>,
    pub status: String,
    pub agent_connected: bool,
    pub running_tasks_count: u32,
    pub pending_tasks_count: u32,
    pub attributes: Vec<Attribute>,
    pub registered_at: f64,
    pub tags: Vec<Tag>,
}

/// ECS's status for a Berth instance state and its drain flag.
pub fn status(instance: &berth_types::InstanceView) -> &'static str {
    use berth_types::InstanceState;
    match instance.status {
        InstanceState::Inactive => "INACTIVE",
        _ if instance.draining => "DRAINING",
        InstanceState::Draining => "DRAINING",
        InstanceState::Active | InstanceState::Disconnected => "ACTIVE",
    }
}

pub fn container_instance(scope: &Scope, i: &berth_types::InstanceView) -> ContainerInstance {
    let arn = scope.arn(Resource::ContainerInstance {
        cluster: Some(i.cluster.clone()),
        id: i.id.clone(),
    });
    ContainerInstance {
        ec2_instance_id: i.id.clone(),
        version_info: VersionInfo {
            agent_version: i.agent_version.clone().unwrap_or_default(),
        },
        remaining_resources: vec![
            integer("CPU", i.cpu_remaining),
            integer("MEMORY", i.memory_remaining_mib),
            ports(&i.ports_in_use),
        ],
        registered_resources: vec![
            integer("CPU", i.cpu_registered),
            integer("MEMORY", i.memory_registered_mib),
            ports(&[]),
        ],
        status: status(i).into(),
        agent_connected: i.agent_connected,
        // Berth counts every task placed here and not yet stopped.
        running_tasks_count: i.running_tasks,
        pending_tasks_count: 0,
        attributes: i
            .attributes
            .iter()
            .map(|(name, value)| Attribute {
                name: name.clone(),
                value: value.clone(),
                target_type: "container-instance".into(),
                target_id: arn.clone(),
            })
            .collect(),
        registered_at: epoch_seconds(i.registered_at_ms),
        tags: Vec::new(),
        container_instance_arn: arn,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_types::InstanceState;
    use std::collections::BTreeMap;

    fn view(status: InstanceState, draining: bool, connected: bool) -> berth_types::InstanceView {
        berth_types::InstanceView {
            id: "i-1".into(),
            cluster: "prod".into(),
            hostname: "host-a".into(),
            attributes: BTreeMap::from([("zone".to_string(), "a".to_string())]),
            activation_id: "act".into(),
            registered_at_ms: 2_500,
            certificate_expires_at_ms: 0,
            status,
            deregistered_at_ms: None,
            agent_version: Some("0.1.0".into()),
            agent_connected: connected,
            connected_since_ms: None,
            last_seen_ms: None,
            cpu_registered: 2048,
            cpu_remaining: 1024,
            memory_registered_mib: 4096,
            memory_remaining_mib: 3072,
            ports_in_use: vec![8080, 49153],
            running_tasks: 2,
            draining,
            tags: Default::default(),
        }
    }

    #[test]
    fn an_instance_is_described_in_ecs_field_names() {
        let scope = Scope {
            region: "eu-west-1".into(),
            account: "000000000000".into(),
        };
        let json = serde_json::to_value(container_instance(
            &scope,
            &view(InstanceState::Active, false, true),
        ))
        .unwrap();
        let arn = "arn:aws:ecs:eu-west-1:000000000000:container-instance/prod/i-1";
        assert_eq!(json["containerInstanceArn"], arn);
        assert_eq!(json["ec2InstanceId"], "i-1");
        assert_eq!(json["status"], "ACTIVE");
        assert_eq!(json["agentConnected"], true);
        assert_eq!(json["runningTasksCount"], 2);
        assert_eq!(json["registeredAt"], 2.5);
        assert_eq!(json["versionInfo"]["agentVersion"], "0.1.0");
        assert_eq!(
            json["remainingResources"],
            serde_json::json!([
                {"name": "CPU", "type": "INTEGER", "integerValue": 1024},
                {"name": "MEMORY", "type": "INTEGER", "integerValue": 3072},
                {"name": "PORTS", "type": "STRINGSET", "stringSetValue": ["8080", "49153"]}
            ])
        );
        assert_eq!(json["registeredResources"][0]["integerValue"], 2048);
        assert_eq!(
            json["attributes"],
            serde_json::json!([{"name": "zone", "value": "a",
                "targetType": "container-instance", "targetId": arn}])
        );
    }

    #[test]
    fn statuses_are_ecs_s() {
        assert_eq!(status(&view(InstanceState::Active, false, true)), "ACTIVE");
        assert_eq!(status(&view(InstanceState::Active, true, true)), "DRAINING");
        assert_eq!(
            status(&view(InstanceState::Draining, true, true)),
            "DRAINING"
        );
        let gone = view(InstanceState::Disconnected, false, false);
        assert_eq!(status(&gone), "ACTIVE", "ECS has no DISCONNECTED");
        assert!(!gone.agent_connected);
        assert_eq!(
            status(&view(InstanceState::Inactive, true, false)),
            "INACTIVE"
        );
    }
}
