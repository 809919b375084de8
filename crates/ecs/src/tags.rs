//! The shapes of ECS's TagResource, UntagResource and ListTagsForResource,
//! and the resource an ARN names as Berth's [`TagTarget`].

use std::collections::BTreeMap;

use berth_types::TagTarget;
use serde::{Deserialize, Serialize};

use crate::arn::{Arn, Resource};
use crate::clusters::Tag;
use crate::error::{EcsError, ErrorType};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TagResourceRequest {
    pub resource_arn: String,
    #[serde(default)]
    pub tags: Vec<Tag>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UntagResourceRequest {
    pub resource_arn: String,
    #[serde(default)]
    pub tag_keys: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListTagsForResourceRequest {
    pub resource_arn: String,
}

/// TagResource and UntagResource answer with an empty object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EmptyResponse {}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListTagsForResourceResponse {
    pub tags: Vec<Tag>,
}

impl ListTagsForResourceResponse {
    pub fn new(tags: BTreeMap<String, String>) -> Self {
        Self {
            tags: tag_list(&tags),
        }
    }
}

/// A record's tags as ECS lists them, in key order.
pub fn tag_list(tags: &BTreeMap<String, String>) -> Vec<Tag> {
    tags.iter()
        .map(|(key, value)| Tag {
            key: key.clone(),
            value: value.clone(),
        })
        .collect()
}

fn invalid(message: impl Into<String>) -> EcsError {
    EcsError::new(ErrorType::InvalidParameter, message)
}

/// The resource `resource_arn` names. Tasks and container instances are
/// named by their ids alone (unique across clusters in Berth); a service
/// needs its cluster, so its short ARN (`service/NAME`) is refused, as ECS
/// refuses to tag one.
pub fn tag_target(resource_arn: &str) -> Result<TagTarget, EcsError> {
    let arn = Arn::parse(resource_arn)?;
    match arn.resource {
        Resource::Cluster { name } => Ok(TagTarget::Cluster { name }),
        Resource::TaskDefinition { family, revision } => {
            Ok(TagTarget::TaskDefinition { family, revision })
        }
        Resource::Task { id, .. } => Ok(TagTarget::Task { id }),
        Resource::ContainerInstance { id, .. } => Ok(TagTarget::Instance { id }),
        Resource::Service {
            cluster: Some(cluster),
            name,
        } => Ok(TagTarget::Service { cluster, name }),
        Resource::Service {
            cluster: None,
            name,
        } => Err(invalid(format!(
            "resourceArn {resource_arn:?} is a short service ARN; name the service with its cluster: arn:aws:ecs:REGION:ACCOUNT:service/CLUSTER/{name}"
        ))),
        Resource::Container { .. } => Err(invalid(format!(
            "resourceArn {resource_arn:?} names a container, which has no tags; tag its task (task/CLUSTER/ID) instead"
        ))),
        Resource::ServiceDeployment { .. } | Resource::ServiceRevision { .. } => {
            Err(invalid(format!(
                "resourceArn {resource_arn:?} names a service deployment or revision, which has no tags; tag the service (service/CLUSTER/NAME) instead"
            )))
        }
    }
}

/// The cluster a task or container-instance ARN names, which the resource
/// must be in (ECS refuses a task ARN of the wrong cluster); `None` for
/// other resources and the short forms.
pub fn named_cluster(resource_arn: &str) -> Result<Option<String>, EcsError> {
    Ok(match Arn::parse(resource_arn)?.resource {
        Resource::Task { cluster, .. } | Resource::ContainerInstance { cluster, .. } => cluster,
        _ => None,
    })
}

/// The tags of a request as a map, refusing a key given twice and what
/// ECS's limits refuse (length, the `aws:` prefix, 50 at most per request).
pub fn tag_map(tags: &[Tag]) -> Result<BTreeMap<String, String>, EcsError> {
    let mut map = BTreeMap::new();
    for (i, tag) in tags.iter().enumerate() {
        if map.insert(tag.key.clone(), tag.value.clone()).is_some() {
            return Err(invalid(format!(
                "tags[{i}].key {:?} is given twice; each key may appear once",
                tag.key
            )));
        }
    }
    berth_types::tags::merge_tags(&BTreeMap::new(), &map).map_err(|e| invalid(e.to_string()))?;
    Ok(map)
}

/// The keys of an UntagResource, checked as ECS checks them.
pub fn tag_keys(keys: &[String]) -> Result<Vec<String>, EcsError> {
    berth_types::tags::check_tag_keys(keys).map_err(|e| invalid(e.to_string()))?;
    Ok(keys.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:ecs:eu-west-1:000000000000:";

    #[test]
    fn every_taggable_arn_names_its_target() {
        let cases = [
            (
                "cluster/prod",
                TagTarget::Cluster {
                    name: "prod".into(),
                },
            ),
            (
                "task-definition/web:3",
                TagTarget::TaskDefinition {
                    family: "web".into(),
                    revision: 3,
                },
            ),
            ("task/prod/t-1", TagTarget::Task { id: "t-1".into() }),
            ("task/t-1", TagTarget::Task { id: "t-1".into() }),
            (
                "service/prod/api",
                TagTarget::Service {
                    cluster: "prod".into(),
                    name: "api".into(),
                },
            ),
            (
                "container-instance/prod/i-1",
                TagTarget::Instance { id: "i-1".into() },
            ),
        ];
        for (resource, target) in cases {
            assert_eq!(tag_target(&format!("{ARN}{resource}")).unwrap(), target);
        }
        for bad in [
            format!("{ARN}service/api"),
            format!("{ARN}container/prod/t-1/web"),
            "prod".to_string(),
            "arn:aws:s3:::bucket".to_string(),
        ] {
            let err = tag_target(&bad).unwrap_err();
            assert_eq!(err.kind, ErrorType::InvalidParameter, "{bad}");
        }
        let short = tag_target(&format!("{ARN}service/api")).unwrap_err();
        assert!(short.message.contains("service/CLUSTER/api"), "{short}");
    }

    #[test]
    fn requests_read_as_ecs_sends_them() {
        let req: TagResourceRequest = serde_json::from_str(&format!(
            r#"{{"resourceArn":"{ARN}cluster/prod","tags":[{{"key":"env","value":"prod"}}]}}"#
        ))
        .unwrap();
        assert_eq!(
            tag_map(&req.tags).unwrap(),
            BTreeMap::from([("env".to_string(), "prod".to_string())])
        );
        let req: UntagResourceRequest = serde_json::from_str(&format!(
            r#"{{"resourceArn":"{ARN}cluster/prod","tagKeys":["env"]}}"#
        ))
        .unwrap();
        assert_eq!(tag_keys(&req.tag_keys).unwrap(), ["env"]);
        let req: ListTagsForResourceRequest =
            serde_json::from_str(&format!(r#"{{"resourceArn":"{ARN}task/t-1"}}"#)).unwrap();
        assert_eq!(req.resource_arn, format!("{ARN}task/t-1"));
        let answer = ListTagsForResourceResponse::new(BTreeMap::from([(
            "env".to_string(),
            "prod".to_string(),
        )]));
        assert_eq!(
            serde_json::to_string(&answer).unwrap(),
            r#"{"tags":[{"key":"env","value":"prod"}]}"#
        );
        assert_eq!(serde_json::to_string(&EmptyResponse {}).unwrap(), "{}");
    }

    #[test]
    fn bad_tags_are_invalid_parameters_naming_the_field() {
        let tag = |key: &str, value: &str| Tag {
            key: key.into(),
            value: value.into(),
        };
        let twice = tag_map(&[tag("a", "1"), tag("a", "2")]).unwrap_err();
        assert!(twice.message.contains("tags[1].key"), "{twice}");
        let reserved = tag_map(&[tag("aws:x", "1")]).unwrap_err();
        assert_eq!(reserved.kind, ErrorType::InvalidParameter);
        assert!(reserved.message.contains("tags[0].key"), "{reserved}");
        let many: Vec<Tag> = (0..51).map(|i| tag(&format!("k{i}"), "v")).collect();
        assert!(tag_map(&many).unwrap_err().message.contains("51 tags"));
        let keys = tag_keys(&["ok".into(), "AWS:x".into()]).unwrap_err();
        assert!(keys.message.contains("tagKeys[1]"), "{keys}");
    }
}
