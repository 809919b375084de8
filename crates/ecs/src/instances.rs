//! A container instance (a Berth instance: a host running berth-agent) as
//! ECS's DescribeContainerInstances and the instance calls answer with it.
//! ECS has no DISCONNECTED status: such an instance is ACTIVE with
//! `agentConnected: false`, as ECS shows an instance whose agent is gone.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::arn::{Resource, Scope};
use crate::clusters::Tag;
use crate::error::{EcsError, ErrorType};
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
        tags: crate::tags::tag_list(&i.tags),
        container_instance_arn: arn,
    }
}

/// RegisterContainerInstance as the API sends it. Berth's instances
/// register themselves: a host's agent presents an activation's join token
/// and gets its certificate. So this call makes a single-use activation for
/// the cluster, with the attributes given, and answers the instance to be.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterContainerInstanceRequest {
    pub cluster: Option<String>,
    pub instance_identity_document: Option<String>,
    pub instance_identity_document_signature: Option<String>,
    #[serde(default)]
    pub total_resources: Vec<serde_json::Value>,
    pub version_info: Option<serde_json::Value>,
    pub container_instance_arn: Option<String>,
    #[serde(default)]
    pub attributes: Vec<AttributeInput>,
    #[serde(default)]
    pub platform_devices: Vec<serde_json::Value>,
    #[serde(default)]
    pub tags: Vec<Tag>,
}

/// The attribute of a RegisterContainerInstance answer that carries the
/// activation's join token (shown once; pass it to install-agent.sh).
pub const JOIN_TOKEN_ATTRIBUTE: &str = "berth.join-token";

fn unsupported(field: &str, instead: &str) -> EcsError {
    EcsError::new(
        ErrorType::UnsupportedFeature,
        format!("{field} is not supported by Berth; {instead}"),
    )
}

/// The attributes the activation gives the instance, once the request asks
/// for nothing Berth's registration does differently.
pub fn registration_attributes(
    request: &RegisterContainerInstanceRequest,
) -> Result<BTreeMap<String, String>, EcsError> {
    let present = |v: &Option<String>| v.as_deref().is_some_and(|t| !t.is_empty());
    if present(&request.instance_identity_document)
        || present(&request.instance_identity_document_signature)
    {
        return Err(unsupported(
            "instanceIdentityDocument",
            "a host proves itself with the join token this call answers (install-agent.sh --token), not an EC2 identity document",
        ));
    }
    if present(&request.container_instance_arn) {
        return Err(unsupported(
            "containerInstanceArn (re-registration)",
            "an instance registers again by itself when its agent restarts with the same key; for a new host call RegisterContainerInstance without it",
        ));
    }
    if !request.total_resources.is_empty() || request.version_info.is_some() {
        return Err(unsupported(
            "totalResources and versionInfo",
            "the agent reports the host's resources and its version when it registers; leave them out",
        ));
    }
    if !request.platform_devices.is_empty() {
        return Err(unsupported(
            "platformDevices",
            "Berth places tasks by CPU, memory, ports and attributes; describe devices as attributes",
        ));
    }
    if !request.tags.is_empty() {
        return Err(unsupported(
            "tags",
            "tag the instance with TagResource once it has registered",
        ));
    }
    let mut attributes = BTreeMap::new();
    for (i, a) in request.attributes.iter().enumerate() {
        if a.target_id.as_deref().is_some_and(|t| !t.is_empty()) {
            return Err(EcsError::new(
                ErrorType::InvalidParameter,
                format!("attributes[{i}].targetId: leave it out; the attributes are the registering instance's"),
            ));
        }
        if a.name == JOIN_TOKEN_ATTRIBUTE {
            return Err(EcsError::new(
                ErrorType::InvalidParameter,
                format!("attributes[{i}].name: {JOIN_TOKEN_ATTRIBUTE} is the answer's; choose another name"),
            ));
        }
        if attributes
            .insert(a.name.clone(), a.value.clone().unwrap_or_default())
            .is_some()
        {
            return Err(EcsError::new(
                ErrorType::InvalidParameter,
                format!(
                    "attributes[{i}].name: {:?} is given twice; give each name once",
                    a.name
                ),
            ));
        }
    }
    Ok(attributes)
}

/// The answer of RegisterContainerInstance: the instance to be, REGISTERING
/// until a host's agent registers with the join token (then it is listed
/// under its own id; this ARN, named by the activation, describes as
/// MISSING). The join token is the [`JOIN_TOKEN_ATTRIBUTE`] attribute.
pub fn registering_instance(
    scope: &Scope,
    activation: &berth_types::Activation,
    join_token: &str,
) -> ContainerInstance {
    let arn = scope.arn(Resource::ContainerInstance {
        cluster: Some(activation.cluster.clone()),
        id: format!("activation-{}", activation.id),
    });
    let mut attributes: Vec<Attribute> = activation
        .attributes
        .iter()
        .map(|(name, value)| Attribute {
            name: name.clone(),
            value: value.clone(),
            target_type: "container-instance".into(),
            target_id: arn.clone(),
        })
        .collect();
    attributes.push(Attribute {
        name: JOIN_TOKEN_ATTRIBUTE.into(),
        value: join_token.into(),
        target_type: "container-instance".into(),
        target_id: arn.clone(),
    });
    ContainerInstance {
        ec2_instance_id: String::new(),
        version_info: VersionInfo {
            agent_version: String::new(),
        },
        remaining_resources: Vec::new(),
        registered_resources: Vec::new(),
        status: "REGISTERING".into(),
        agent_connected: false,
        running_tasks_count: 0,
        pending_tasks_count: 0,
        attributes,
        registered_at: epoch_seconds(activation.created_at_ms),
        tags: Vec::new(),
        container_instance_arn: arn,
    }
}

/// ECS's limit on the instances one DescribeContainerInstances or
/// UpdateContainerInstancesState names.
pub const MAX_DESCRIBED: usize = 100;

/// The only attribute target Berth has.
pub const TARGET_TYPE: &str = "container-instance";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeContainerInstancesRequest {
    pub cluster: Option<String>,
    #[serde(default)]
    pub container_instances: Vec<String>,
    #[serde(default)]
    pub include: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListContainerInstancesRequest {
    pub cluster: Option<String>,
    pub filter: Option<String>,
    pub status: Option<String>,
    pub next_token: Option<String>,
    pub max_results: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeregisterContainerInstanceRequest {
    pub cluster: Option<String>,
    pub container_instance: String,
    pub force: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateContainerInstancesStateRequest {
    pub cluster: Option<String>,
    #[serde(default)]
    pub container_instances: Vec<String>,
    pub status: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttributeInput {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_id: Option<String>,
}

/// PutAttributes and DeleteAttributes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttributesRequest {
    pub cluster: Option<String>,
    #[serde(default)]
    pub attributes: Vec<AttributeInput>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListAttributesRequest {
    pub cluster: Option<String>,
    pub target_type: String,
    pub attribute_name: Option<String>,
    pub attribute_value: Option<String>,
    pub next_token: Option<String>,
    pub max_results: Option<i64>,
}

fn invalid(message: String) -> EcsError {
    EcsError::new(ErrorType::InvalidParameter, message)
}

/// A container instance named in a request about `cluster`: its id, or
/// `None` when its ARN names another cluster (ECS does not find it there).
pub fn instance_in(cluster: &str, input: &str) -> Result<Option<String>, EcsError> {
    let (named, id) = crate::arn::container_instance(input)?;
    Ok(match named {
        Some(other) if other != cluster => None,
        _ => Some(id),
    })
}

/// ListContainerInstances' `status`: the ECS status to keep, or `None` for
/// every status but INACTIVE (ECS's default). Berth has no REGISTERING,
/// DEREGISTERING or REGISTRATION_FAILED instances: asking for them lists
/// nothing.
pub fn status_filter(status: Option<&str>) -> Result<Option<String>, EcsError> {
    match status {
        None | Some("") => Ok(None),
        Some(
            s @ ("ACTIVE" | "DRAINING" | "INACTIVE" | "REGISTERING" | "DEREGISTERING"
            | "REGISTRATION_FAILED"),
        ) => Ok(Some(s.to_string())),
        Some(other) => Err(invalid(format!(
            "status: {other:?} is not ACTIVE, DRAINING, REGISTERING, DEREGISTERING, REGISTRATION_FAILED or INACTIVE"
        ))),
    }
}

/// Whether an instance is listed under `wanted` (see [`status_filter`]).
pub fn status_matches(wanted: Option<&str>, instance: &berth_types::InstanceView) -> bool {
    match wanted {
        None => status(instance) != "INACTIVE",
        Some(s) => status(instance) == s,
    }
}

/// UpdateContainerInstancesState's `status`: whether to drain.
pub fn draining(status: &str) -> Result<bool, EcsError> {
    match status {
        "DRAINING" => Ok(true),
        "ACTIVE" => Ok(false),
        other => Err(invalid(format!(
            "status: {other:?}; an instance is set ACTIVE or DRAINING (DeregisterContainerInstance makes it INACTIVE)"
        ))),
    }
}

/// The attributes of a PutAttributes or DeleteAttributes call grouped by
/// the instance (id) they are on, each with its value (empty if none).
/// Berth has attributes on container instances only.
pub fn attributes_by_instance(
    cluster: &str,
    attributes: &[AttributeInput],
) -> Result<BTreeMap<String, BTreeMap<String, String>>, EcsError> {
    if attributes.is_empty() {
        return Err(invalid("attributes: give at least one".into()));
    }
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (i, a) in attributes.iter().enumerate() {
        match a.target_type.as_deref() {
            None | Some(TARGET_TYPE) => {}
            Some(other) => {
                return Err(EcsError::new(
                    ErrorType::UnsupportedFeature,
                    format!(
                        "attributes[{i}].targetType {other:?} is not supported by Berth; attributes are on container instances ({TARGET_TYPE})"
                    ),
                ))
            }
        }
        let Some(target) = a.target_id.as_deref().filter(|t| !t.is_empty()) else {
            return Err(invalid(format!(
                "attributes[{i}].targetId: required (a container instance id or ARN)"
            )));
        };
        let id = instance_in(cluster, target)?.ok_or_else(|| {
            invalid(format!(
                "attributes[{i}].targetId: {target:?} is not in cluster {cluster:?}"
            ))
        })?;
        out.entry(id)
            .or_default()
            .insert(a.name.clone(), a.value.clone().unwrap_or_default());
    }
    Ok(out)
}

/// ListAttributes over the cluster's instances: their attributes as ECS
/// lists them (with their target), filtered by name and value, one page.
pub fn list_attributes(
    scope: &Scope,
    instances: &[berth_types::InstanceView],
    request: &ListAttributesRequest,
) -> Result<(Vec<Attribute>, Option<String>), EcsError> {
    if request.target_type != TARGET_TYPE {
        return Err(invalid(format!(
            "targetType: {:?}; Berth has attributes on {TARGET_TYPE} only",
            request.target_type
        )));
    }
    if request.attribute_value.is_some() && request.attribute_name.is_none() {
        return Err(invalid(
            "attributeValue can be given only with attributeName".into(),
        ));
    }
    let mut keyed: Vec<(String, Attribute)> = instances
        .iter()
        .flat_map(|i| container_instance(scope, i).attributes)
        .filter(|a| {
            request.attribute_name.as_ref().is_none_or(|n| a.name == *n)
                && request
                    .attribute_value
                    .as_ref()
                    .is_none_or(|v| a.value == *v)
        })
        .map(|a| (format!("{}\u{0}{}", a.target_id, a.name), a))
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    let (page, token) = crate::page::page(
        keyed,
        |(key, _)| key,
        request.next_token.as_deref(),
        request.max_results,
    )?;
    Ok((page.into_iter().map(|(_, a)| a).collect(), token))
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

    #[test]
    fn instance_requests_are_read_as_ecs_means_them() {
        assert_eq!(instance_in("prod", "i-1").unwrap().as_deref(), Some("i-1"));
        assert_eq!(
            instance_in("prod", "arn:aws:ecs:r:1:container-instance/prod/i-1")
                .unwrap()
                .as_deref(),
            Some("i-1")
        );
        assert_eq!(
            instance_in("prod", "arn:aws:ecs:r:1:container-instance/test/i-1").unwrap(),
            None
        );
        assert!(draining("DRAINING").unwrap());
        assert!(!draining("ACTIVE").unwrap());
        assert!(draining("INACTIVE").is_err());
        let active = view(InstanceState::Active, false, true);
        let drained = view(InstanceState::Active, true, true);
        let gone = view(InstanceState::Inactive, false, false);
        let all = status_filter(None).unwrap();
        assert!(status_matches(all.as_deref(), &active));
        assert!(status_matches(all.as_deref(), &drained));
        assert!(
            !status_matches(all.as_deref(), &gone),
            "INACTIVE only when asked"
        );
        let d = status_filter(Some("DRAINING")).unwrap();
        assert!(status_matches(d.as_deref(), &drained) && !status_matches(d.as_deref(), &active));
        let registering = status_filter(Some("REGISTERING")).unwrap();
        assert!(!status_matches(registering.as_deref(), &active));
        assert!(status_filter(Some("LOST")).is_err());
    }

    #[test]
    fn attributes_are_grouped_by_their_instance() {
        let input = |name: &str, target: Option<&str>, kind: Option<&str>| AttributeInput {
            name: name.into(),
            value: Some("v".into()),
            target_type: kind.map(String::from),
            target_id: target.map(String::from),
        };
        let grouped = attributes_by_instance(
            "prod",
            &[
                input("a", Some("i-1"), None),
                input(
                    "b",
                    Some("arn:aws:ecs:r:1:container-instance/prod/i-1"),
                    Some(TARGET_TYPE),
                ),
                input("c", Some("i-2"), None),
            ],
        )
        .unwrap();
        assert_eq!(grouped.len(), 2);
        assert_eq!(grouped["i-1"].len(), 2);
        let e = attributes_by_instance("prod", &[input("a", None, None)]).unwrap_err();
        assert!(e.message.contains("targetId"), "{e}");
        let e = attributes_by_instance("prod", &[input("a", Some("x"), Some("task-definition"))])
            .unwrap_err();
        assert_eq!(e.kind, ErrorType::UnsupportedFeature);
        let e = attributes_by_instance(
            "prod",
            &[input(
                "a",
                Some("arn:aws:ecs:r:1:container-instance/test/i-1"),
                None,
            )],
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorType::InvalidParameter);
        assert!(attributes_by_instance("prod", &[]).is_err());
    }

    #[test]
    fn attributes_are_listed_with_their_target_and_filtered() {
        let scope = Scope {
            region: "r".into(),
            account: "1".into(),
        };
        let mut second = view(InstanceState::Active, false, true);
        second.id = "i-2".into();
        second.attributes.insert("zone".into(), "b".into());
        let instances = [view(InstanceState::Active, false, true), second];
        let request = |json: &str| -> ListAttributesRequest { serde_json::from_str(json).unwrap() };
        let (all, _) = list_attributes(
            &scope,
            &instances,
            &request(r#"{"targetType": "container-instance"}"#),
        )
        .unwrap();
        assert_eq!(all.len(), 2);
        let (zone_b, token) = list_attributes(
            &scope,
            &instances,
            &request(r#"{"targetType": "container-instance", "attributeName": "zone", "attributeValue": "b"}"#),
        )
        .unwrap();
        assert_eq!(zone_b.len(), 1);
        assert_eq!(
            zone_b[0].target_id,
            "arn:aws:ecs:r:1:container-instance/prod/i-2"
        );
        assert_eq!(token, None);
        for bad in [
            r#"{"targetType": "task"}"#,
            r#"{"targetType": "container-instance", "attributeValue": "b"}"#,
        ] {
            assert!(
                list_attributes(&scope, &instances, &request(bad)).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn register_makes_an_activation_and_refuses_what_berth_does_differently() {
        let parse =
            |json: &str| serde_json::from_str::<RegisterContainerInstanceRequest>(json).unwrap();
        let attributes = registration_attributes(&parse(
            r#"{"cluster": "prod", "attributes": [{"name": "zone", "value": "a"}]}"#,
        ))
        .unwrap();
        assert_eq!(attributes.get("zone").map(String::as_str), Some("a"));
        for (json, says) in [
            (r#"{"instanceIdentityDocument": "{}"}"#, "join token"),
            (r#"{"containerInstanceArn": "arn:x"}"#, "registers again"),
            (r#"{"totalResources": [{"name": "CPU"}]}"#, "agent reports"),
            (r#"{"platformDevices": [{"id": "gpu0"}]}"#, "attributes"),
            (r#"{"tags": [{"key": "k", "value": "v"}]}"#, "TagResource"),
        ] {
            let e = registration_attributes(&parse(json)).unwrap_err();
            assert_eq!(e.kind, ErrorType::UnsupportedFeature, "{json}");
            assert!(e.message.contains(says), "{json}: {e}");
        }
        let activation = berth_types::Activation {
            id: "a1b2c3".into(),
            cluster: "prod".into(),
            description: String::new(),
            secret_hash: String::new(),
            created_at_ms: 1_500,
            expires_at_ms: 2_000,
            max_registrations: 1,
            registrations: 0,
            attributes,
            revoked_at_ms: None,
        };
        let scope = Scope {
            region: "eu-west-1".into(),
            account: "000000000000".into(),
        };
        let json =
            serde_json::to_value(registering_instance(&scope, &activation, "bjt_1.x.y")).unwrap();
        assert_eq!(json["status"], "REGISTERING");
        assert_eq!(
            json["containerInstanceArn"],
            "arn:aws:ecs:eu-west-1:000000000000:container-instance/prod/activation-a1b2c3"
        );
        let token = json["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == JOIN_TOKEN_ATTRIBUTE)
            .unwrap();
        assert_eq!(token["value"], "bjt_1.x.y");
    }
}
