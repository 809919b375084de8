//! A registered task definition as ECS's DescribeTaskDefinition and
//! RegisterTaskDefinition answer with it: the spec in ECS's field names (the
//! shape `berth-types` already gives it), task-level `cpu` and `memory` as
//! strings the way ECS sends them, the ARN, revision, status and times, and
//! the tags beside the definition rather than in it.

use serde_json::{Map, Value};

use crate::arn::{Resource, Scope};
use crate::clusters::Tag;
use crate::page::epoch_seconds;

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
    object.insert("status".into(), Value::String(td.status.as_str().into()));
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
}
