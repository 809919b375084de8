//! Tags on clusters, task definitions, tasks, services and container
//! instances: which resource a tag command names, and the limits ECS puts
//! on tags (so a tag set through Berth's API is one ECS would accept too).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{FieldError, ValidationErrors};

/// Tags per resource at most, counted after a TagResource merged its tags
/// into those already there (ECS's limit).
pub const MAX_TAGS: usize = 50;
pub const MAX_TAG_KEY_CHARS: usize = 128;
pub const MAX_TAG_VALUE_CHARS: usize = 256;
/// Keys with this prefix (in any case) belong to AWS; ECS refuses to set or
/// remove them, so Berth does too.
pub const RESERVED_TAG_PREFIX: &str = "aws:";

/// The resource a tag command names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TagTarget {
    Cluster {
        name: String,
    },
    TaskDefinition {
        family: String,
        revision: u32,
    },
    /// Task ids are generated unique across clusters, so the id alone names
    /// a task.
    Task {
        id: String,
    },
    Service {
        cluster: String,
        name: String,
    },
    /// Instance ids are unique across clusters, as task ids are.
    Instance {
        id: String,
    },
}

impl TagTarget {
    /// The resource as the audit log and Berth's API name it:
    /// `cluster/NAME`, `taskdef/FAMILY:REV`, `task/ID`,
    /// `service/CLUSTER/NAME`, `instance/ID`.
    pub fn resource(&self) -> String {
        match self {
            TagTarget::Cluster { name } => format!("cluster/{name}"),
            TagTarget::TaskDefinition { family, revision } => {
                format!("taskdef/{family}:{revision}")
            }
            TagTarget::Task { id } => format!("task/{id}"),
            TagTarget::Service { cluster, name } => format!("service/{cluster}/{name}"),
            TagTarget::Instance { id } => format!("instance/{id}"),
        }
    }

    /// Reads what [`TagTarget::resource`] prints. `task-definition/` is
    /// taken for `taskdef/` as well, since that is how the audit log and
    /// the events name a task definition.
    pub fn parse(text: &str) -> Result<Self, FieldError> {
        let bad = |why: &str| {
            FieldError::new(
                "resource",
                format!(
                    "`{text}` {why}; use cluster/NAME, taskdef/FAMILY:REVISION, task/ID, service/CLUSTER/NAME or instance/ID"
                ),
            )
        };
        let (kind, rest) = text
            .split_once('/')
            .ok_or_else(|| bad("names no resource kind"))?;
        let part = |value: &str| {
            if value.is_empty() || value.contains('/') {
                Err(bad("has an empty or extra part"))
            } else {
                Ok(value.to_string())
            }
        };
        match kind {
            "cluster" => Ok(TagTarget::Cluster { name: part(rest)? }),
            "taskdef" | "task-definition" => {
                let (family, revision) = rest
                    .split_once(':')
                    .ok_or_else(|| bad("names no revision (FAMILY:REVISION)"))?;
                let revision = revision
                    .parse()
                    .map_err(|_| bad("has a revision that is not a whole number"))?;
                Ok(TagTarget::TaskDefinition {
                    family: part(family)?,
                    revision,
                })
            }
            "task" => Ok(TagTarget::Task { id: part(rest)? }),
            "instance" => Ok(TagTarget::Instance { id: part(rest)? }),
            "service" => {
                let (cluster, name) = rest
                    .split_once('/')
                    .ok_or_else(|| bad("names no cluster (service/CLUSTER/NAME)"))?;
                Ok(TagTarget::Service {
                    cluster: part(cluster)?,
                    name: part(name)?,
                })
            }
            _ => Err(bad("is of an unknown kind")),
        }
    }
}

impl std::fmt::Display for TagTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.resource())
    }
}

fn reserved(key: &str) -> bool {
    key.get(..RESERVED_TAG_PREFIX.len())
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case(RESERVED_TAG_PREFIX))
}

/// Checks tags to be added (TagResource, or a resource created with tags).
/// Fields are numbered in key order, as `tags[3].key`.
pub fn check_tags(tags: &BTreeMap<String, String>) -> Result<(), ValidationErrors> {
    let mut errors = Vec::new();
    for (i, (key, value)) in tags.iter().enumerate() {
        let keys = key.chars().count();
        if keys == 0 || keys > MAX_TAG_KEY_CHARS {
            errors.push(FieldError::new(
                format!("tags[{i}].key"),
                format!("{keys} characters; use 1 to {MAX_TAG_KEY_CHARS}"),
            ));
        } else if reserved(key) {
            errors.push(FieldError::new(
                format!("tags[{i}].key"),
                format!("{key:?} starts with the reserved prefix `aws:`; choose another key"),
            ));
        }
        let values = value.chars().count();
        if values > MAX_TAG_VALUE_CHARS {
            errors.push(FieldError::new(
                format!("tags[{i}].value"),
                format!("{values} characters; use at most {MAX_TAG_VALUE_CHARS}"),
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(errors))
    }
}

/// Checks tag keys to be removed (UntagResource).
pub fn check_tag_keys(keys: &[String]) -> Result<(), ValidationErrors> {
    let errors: Vec<FieldError> = keys
        .iter()
        .enumerate()
        .filter_map(|(i, key)| {
            let chars = key.chars().count();
            if chars == 0 || chars > MAX_TAG_KEY_CHARS {
                Some(FieldError::new(
                    format!("tagKeys[{i}]"),
                    format!("{chars} characters; use 1 to {MAX_TAG_KEY_CHARS}"),
                ))
            } else if reserved(key) {
                Some(FieldError::new(
                    format!("tagKeys[{i}]"),
                    format!(
                        "{key:?} starts with the reserved prefix `aws:`, which cannot be removed"
                    ),
                ))
            } else {
                None
            }
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(errors))
    }
}

/// Merges `add` into `current` (a key already there takes the new value)
/// and checks the limit on the result, so a resource never ends up with
/// more than [`MAX_TAGS`].
pub fn merge_tags(
    current: &BTreeMap<String, String>,
    add: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, ValidationErrors> {
    check_tags(add)?;
    let mut merged = current.clone();
    merged.extend(add.iter().map(|(k, v)| (k.clone(), v.clone())));
    if merged.len() > MAX_TAGS {
        return Err(FieldError::new(
            "tags",
            format!(
                "the resource would have {} tags; at most {MAX_TAGS} are allowed, so remove some first",
                merged.len()
            ),
        )
        .into());
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn resources_round_trip_through_their_text() {
        for target in [
            TagTarget::Cluster {
                name: "prod".into(),
            },
            TagTarget::TaskDefinition {
                family: "web".into(),
                revision: 3,
            },
            TagTarget::Task { id: "t-1".into() },
            TagTarget::Service {
                cluster: "prod".into(),
                name: "api".into(),
            },
            TagTarget::Instance { id: "i-1".into() },
        ] {
            assert_eq!(TagTarget::parse(&target.resource()).unwrap(), target);
        }
        assert_eq!(
            TagTarget::parse("task-definition/web:2").unwrap(),
            TagTarget::TaskDefinition {
                family: "web".into(),
                revision: 2
            }
        );
        for bad in [
            "prod",
            "cluster/",
            "cluster/a/b",
            "taskdef/web",
            "taskdef/web:x",
            "service/prod",
            "bucket/x",
        ] {
            let err = TagTarget::parse(bad).unwrap_err();
            assert_eq!(err.field, "resource", "{bad}");
            assert!(err.message.contains("cluster/NAME"), "{err}");
        }
    }

    #[test]
    fn limits_are_those_of_ecs() {
        let long = tags(&[(&"k".repeat(128), &"v".repeat(256))]);
        assert!(check_tags(&long).is_ok());
        // Characters, not bytes.
        assert!(check_tags(&tags(&[(&"é".repeat(128), "")])).is_ok());
        let err = check_tags(&tags(&[
            ("a", "ok"),
            ("", "x"),
            (&"k".repeat(129), ""),
            ("z", &"v".repeat(257)),
        ]))
        .unwrap_err();
        let fields: Vec<&str> = err.fields().collect();
        // Key order: "", "a", "kkk...", "z".
        assert_eq!(fields, ["tags[0].key", "tags[2].key", "tags[3].value"]);
    }

    #[test]
    fn the_aws_prefix_is_reserved_in_any_case() {
        for key in ["aws:x", "AWS:cloudformation", "Aws:"] {
            let err = check_tags(&tags(&[(key, "v")])).unwrap_err();
            assert_eq!(err.0[0].field, "tags[0].key");
            assert!(err.0[0].message.contains("reserved"), "{err}");
            let err = check_tag_keys(&[key.to_string()]).unwrap_err();
            assert_eq!(err.0[0].field, "tagKeys[0]");
        }
        assert!(check_tags(&tags(&[("awsome", "v"), ("my:aws:x", "v")])).is_ok());
    }

    #[test]
    fn fifty_tags_after_the_merge_at_most() {
        let current: BTreeMap<String, String> = (0..49)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect();
        // Overwriting keeps the count.
        let merged = merge_tags(&current, &tags(&[("k0", "new"), ("k49", "v")])).unwrap();
        assert_eq!(merged.len(), 50);
        assert_eq!(merged["k0"], "new");
        let err = merge_tags(&merged, &tags(&[("k50", "v")])).unwrap_err();
        assert_eq!(err.0[0].field, "tags");
        assert!(err.0[0].message.contains("51 tags"), "{err}");
    }
}
