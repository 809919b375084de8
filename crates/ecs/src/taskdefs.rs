//! A registered task definition as ECS's DescribeTaskDefinition and
//! RegisterTaskDefinition answer with it: the spec in ECS's field names (the
//! shape `berth-types` already gives it), task-level `cpu` and `memory` as
//! strings the way ECS sends them, the ARN, revision, status and times, and
//! the tags beside the definition rather than in it.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::arn::{Resource, Scope};
use crate::clusters::Tag;
use crate::error::{EcsError, ErrorType};
use crate::page::epoch_seconds;
use crate::taskdef::{load_task_definition, FileFormat};

/// Where Berth runs tasks, in ECS's words: on instances it was given
/// (`EXTERNAL`, as ECS Anywhere) and like EC2 container instances.
pub const COMPATIBILITIES: [&str; 2] = ["EC2", "EXTERNAL"];

pub fn arn(scope: &Scope, td: &berth_types::TaskDefinition) -> String {
    scope.arn(Resource::TaskDefinition {
        family: td.family.clone(),
        revision: td.revision,
    })
}

/// ECS's `TaskDefinition` object for `td`.
pub fn task_definition(scope: &Scope, td: &berth_types::TaskDefinition) -> Value {
    let mut object = match serde_json::to_value(&td.spec) {
        Ok(Value::Object(object)) => object,
        // A spec always serializes to an object; nothing else can be said.
        _ => Map::new(),
    };
    object.remove("tags");
    for field in ["cpu", "memory"] {
        if let Some(Value::Number(n)) = object.get(field) {
            let text = n.to_string();
            object.insert(field.into(), Value::String(text));
        }
    }
    object.insert("taskDefinitionArn".into(), Value::String(arn(scope, td)));
    object.insert("revision".into(), Value::from(td.revision));
    // ECS names a deleted revision by what it is becoming.
    let status = match td.status {
        berth_types::TaskDefinitionStatus::Deleted => "DELETE_IN_PROGRESS",
        other => other.as_str(),
    };
    object.insert("status".into(), Value::String(status.into()));
    object.insert(
        "registeredAt".into(),
        Value::from(epoch_seconds(td.registered_at_ms)),
    );
    if let Some(at) = td.deregistered_at_ms {
        object.insert("deregisteredAt".into(), Value::from(epoch_seconds(at)));
    }
    object.insert(
        "compatibilities".into(),
        Value::Array(COMPATIBILITIES.iter().map(|c| Value::from(*c)).collect()),
    );
    Value::Object(object)
}

/// The definition's tags, which ECS returns beside it (with `include:
/// ["TAGS"]`).
pub fn tags(td: &berth_types::TaskDefinition) -> Vec<Tag> {
    td.spec
        .tags
        .iter()
        .map(|t| Tag {
            key: t.key.clone(),
            value: t.value.clone(),
        })
        .collect()
}

/// RegisterTaskDefinition's body is the task definition file itself, read
/// with the reader `berth taskdef register` uses (same validation, same
/// refusals).
pub fn register_request(body: &[u8]) -> Result<crate::taskdef::ParsedTaskDefinition, EcsError> {
    let text = std::str::from_utf8(body).map_err(|_| {
        EcsError::new(
            ErrorType::Serialization,
            "the request body is not UTF-8 JSON",
        )
    })?;
    Ok(load_task_definition(text, FileFormat::Json)?)
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeTaskDefinitionRequest {
    pub task_definition: String,
    #[serde(default)]
    pub include: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteTaskDefinitionsRequest {
    #[serde(default)]
    pub task_definitions: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeregisterTaskDefinitionRequest {
    pub task_definition: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListTaskDefinitionsRequest {
    pub family_prefix: Option<String>,
    pub status: Option<String>,
    pub sort: Option<String>,
    pub next_token: Option<String>,
    pub max_results: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListTaskDefinitionFamiliesRequest {
    pub family_prefix: Option<String>,
    pub status: Option<String>,
    pub next_token: Option<String>,
    pub max_results: Option<i64>,
}

fn bad_status(text: &str, allowed: &str) -> EcsError {
    EcsError::new(
        ErrorType::InvalidParameter,
        format!("status: {text:?} is not one of {allowed}"),
    )
}

/// The sort key of a revision: by family, then revision as a number
/// (zero-padded so that 10 sorts after 9; NUL sorts before every character
/// a family name may hold).
fn revision_key(td: &berth_types::TaskDefinition) -> String {
    format!("{}\u{0}{:010}", td.family, td.revision)
}

/// ListTaskDefinitions over every registered revision: the page of ARNs
/// asked for and the token of the next. ECS lists ACTIVE revisions unless
/// asked for INACTIVE, in ascending order unless asked for DESC.
pub fn list_task_definitions(
    scope: &Scope,
    all: Vec<berth_types::TaskDefinition>,
    request: &ListTaskDefinitionsRequest,
) -> Result<(Vec<String>, Option<String>), EcsError> {
    use berth_types::TaskDefinitionStatus;
    let status = match request.status.as_deref() {
        None | Some("ACTIVE") => TaskDefinitionStatus::Active,
        Some("INACTIVE") => TaskDefinitionStatus::Inactive,
        Some(other) => return Err(bad_status(other, "ACTIVE, INACTIVE")),
    };
    let descending = match request.sort.as_deref() {
        None | Some("ASC") => false,
        Some("DESC") => true,
        Some(other) => {
            return Err(EcsError::new(
                ErrorType::InvalidParameter,
                format!("sort: {other:?} is not ASC or DESC"),
            ))
        }
    };
    // Despite its name, ListTaskDefinitions' familyPrefix is the whole
    // family name (ListTaskDefinitionFamilies' is a prefix).
    let family = request.family_prefix.as_deref().filter(|f| !f.is_empty());
    let mut keyed: Vec<(String, String)> = all
        .iter()
        .filter(|td| td.status == status && family.is_none_or(|f| td.family == f))
        .map(|td| (revision_key(td), arn(scope, td)))
        .collect();
    keyed.sort();
    if descending {
        keyed.reverse();
    }
    let (page, token) = crate::page::page_in(
        keyed,
        |(key, _)| key,
        request.next_token.as_deref(),
        request.max_results,
        descending,
    )?;
    Ok((page.into_iter().map(|(_, arn)| arn).collect(), token))
}

/// ListTaskDefinitionFamilies: family names (not ARNs, as ECS answers).
/// Without a status ECS lists every family; ACTIVE is a family with an
/// ACTIVE revision, INACTIVE one whose revisions are all INACTIVE.
pub fn list_families(
    families: Vec<berth_types::TaskDefinitionFamily>,
    request: &ListTaskDefinitionFamiliesRequest,
) -> Result<(Vec<String>, Option<String>), EcsError> {
    let wanted: fn(&berth_types::TaskDefinitionFamily) -> bool = match request.status.as_deref() {
        None | Some("ALL") => |_| true,
        Some("ACTIVE") => |f| f.latest_active_revision.is_some(),
        Some("INACTIVE") => |f| f.latest_active_revision.is_none(),
        Some(other) => return Err(bad_status(other, "ACTIVE, INACTIVE, ALL")),
    };
    let prefix = request.family_prefix.as_deref().unwrap_or_default();
    let mut names: Vec<String> = families
        .into_iter()
        .filter(|f| wanted(f) && f.family.starts_with(prefix))
        .map(|f| f.family)
        .collect();
    names.sort();
    crate::page::page(
        names,
        String::as_str,
        request.next_token.as_deref(),
        request.max_results,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::taskdef::{load_task_definition, FileFormat};

    const FILE: &str = r#"{
        "family": "web",
        "cpu": "512",
        "memory": "1024",
        "networkMode": "bridge",
        "containerDefinitions": [{
            "name": "app", "image": "registry.example/app:1", "memory": 256, "cpu": 128,
            "essential": true,
            "portMappings": [{"containerPort": 8080, "protocol": "tcp"}],
            "environment": [{"name": "MODE", "value": "prod"}],
            "secrets": [{"name": "DB_PASSWORD", "valueFrom": "db-password"}]
        }],
        "tags": [{"key": "team", "value": "payments"}]
    }"#;

    fn registered() -> berth_types::TaskDefinition {
        berth_types::TaskDefinition {
            family: "web".into(),
            revision: 3,
            status: berth_types::TaskDefinitionStatus::Active,
            registered_at_ms: 1_733_400_000_250,
            deregistered_at_ms: None,
            spec: load_task_definition(FILE, FileFormat::Json).unwrap().spec,
        }
    }

    fn scope() -> Scope {
        Scope {
            region: "eu-west-1".into(),
            account: "000000000000".into(),
        }
    }

    #[test]
    fn a_definition_is_described_as_ecs_does() {
        let td = registered();
        let json = task_definition(&scope(), &td);
        assert_eq!(
            json["taskDefinitionArn"],
            "arn:aws:ecs:eu-west-1:000000000000:task-definition/web:3"
        );
        assert_eq!(json["family"], "web");
        assert_eq!(json["revision"], 3);
        assert_eq!(json["status"], "ACTIVE");
        assert_eq!(json["registeredAt"], 1_733_400_000.25);
        assert_eq!(json["cpu"], "512", "task-level cpu is a string in ECS");
        assert_eq!(json["memory"], "1024");
        assert_eq!(json["containerDefinitions"][0]["cpu"], 128);
        assert_eq!(
            json["compatibilities"],
            serde_json::json!(["EC2", "EXTERNAL"])
        );
        assert!(json.get("tags").is_none(), "tags go beside the definition");
        assert_eq!(
            tags(&td),
            [Tag {
                key: "team".into(),
                value: "payments".into()
            }]
        );
    }

    /// What `aws ecs describe-task-definition --include TAGS` prints
    /// registers back as the same definition: only the read-only fields are
    /// left out (and listed).
    #[test]
    fn describe_output_registers_back_as_the_same_definition() {
        let td = registered();
        let output = serde_json::json!({
            "taskDefinition": task_definition(&scope(), &td),
            "tags": tags(&td),
        });
        let again = load_task_definition(&output.to_string(), FileFormat::Json).unwrap();
        assert_eq!(again.spec, td.spec);
        let mut ignored = again.ignored_fields.clone();
        ignored.sort();
        assert_eq!(
            ignored,
            [
                "taskDefinition.compatibilities",
                "taskDefinition.registeredAt",
                "taskDefinition.revision",
                "taskDefinition.status",
                "taskDefinition.taskDefinitionArn",
            ]
        );
    }

    #[test]
    fn register_reads_the_body_as_the_cli_reads_a_file() {
        let spec = register_request(FILE.as_bytes()).unwrap().spec;
        assert_eq!(spec, registered().spec);
        let e = register_request(br#"{"family": "web", "containerDefinitions": []}"#).unwrap_err();
        assert_eq!(e.kind, ErrorType::InvalidParameter);
        assert!(e.message.contains("containerDefinitions"), "{e}");
        let e = register_request(&[0xff, 0xfe]).unwrap_err();
        assert_eq!(e.kind, ErrorType::Serialization);
    }

    fn revision(family: &str, revision: u32, active: bool) -> berth_types::TaskDefinition {
        let mut td = registered();
        td.family = family.into();
        td.revision = revision;
        if !active {
            td.status = berth_types::TaskDefinitionStatus::Inactive;
        }
        td
    }

    #[test]
    fn revisions_are_listed_by_family_then_number_either_way() {
        let all = vec![
            revision("web", 10, true),
            revision("web", 9, true),
            revision("web", 2, false),
            revision("web-x", 1, true),
            revision("api", 1, true),
        ];
        let short = |arns: Vec<String>| -> Vec<String> {
            arns.iter()
                .map(|a| a.rsplit('/').next().unwrap_or_default().to_string())
                .collect()
        };
        let asc = ListTaskDefinitionsRequest::default();
        let (arns, token) = list_task_definitions(&scope(), all.clone(), &asc).unwrap();
        assert_eq!(short(arns), ["api:1", "web:9", "web:10", "web-x:1"]);
        assert_eq!(token, None);
        let desc = ListTaskDefinitionsRequest {
            family_prefix: Some("web".into()),
            sort: Some("DESC".into()),
            max_results: Some(2),
            ..Default::default()
        };
        let (arns, token) = list_task_definitions(&scope(), all.clone(), &desc).unwrap();
        assert_eq!(short(arns), ["web:10", "web:9"], "web only, not web-x");
        assert!(token.is_none());
        let all_desc = ListTaskDefinitionsRequest {
            family_prefix: None,
            ..desc
        };
        let (arns, token) = list_task_definitions(&scope(), all.clone(), &all_desc).unwrap();
        assert_eq!(short(arns), ["web-x:1", "web:10"]);
        let next = ListTaskDefinitionsRequest {
            next_token: token,
            ..all_desc
        };
        let (arns, token) = list_task_definitions(&scope(), all.clone(), &next).unwrap();
        assert_eq!(short(arns), ["web:9", "api:1"]);
        assert!(token.is_none());
        let inactive = ListTaskDefinitionsRequest {
            status: Some("INACTIVE".into()),
            ..Default::default()
        };
        let (arns, _) = list_task_definitions(&scope(), all.clone(), &inactive).unwrap();
        assert_eq!(short(arns), ["web:2"]);
        for bad in [
            ListTaskDefinitionsRequest {
                status: Some("DELETED".into()),
                ..Default::default()
            },
            ListTaskDefinitionsRequest {
                sort: Some("UP".into()),
                ..Default::default()
            },
        ] {
            let e = list_task_definitions(&scope(), all.clone(), &bad).unwrap_err();
            assert_eq!(e.kind, ErrorType::InvalidParameter);
        }
    }

    #[test]
    fn families_are_filtered_by_whether_they_have_an_active_revision() {
        let family = |name: &str, active: Option<u32>| berth_types::TaskDefinitionFamily {
            family: name.into(),
            latest_revision: 3,
            latest_active_revision: active,
        };
        let all = vec![
            family("web", Some(3)),
            family("old", None),
            family("worker", Some(1)),
        ];
        let list = |status: Option<&str>, prefix: Option<&str>| {
            list_families(
                all.clone(),
                &ListTaskDefinitionFamiliesRequest {
                    status: status.map(String::from),
                    family_prefix: prefix.map(String::from),
                    ..Default::default()
                },
            )
            .map(|(names, _)| names)
        };
        assert_eq!(list(None, None).unwrap(), ["old", "web", "worker"]);
        assert_eq!(list(Some("ACTIVE"), None).unwrap(), ["web", "worker"]);
        assert_eq!(list(Some("INACTIVE"), None).unwrap(), ["old"]);
        assert_eq!(list(Some("ALL"), Some("w")).unwrap(), ["web", "worker"]);
        assert!(list(Some("GONE"), None).is_err());
    }
}
