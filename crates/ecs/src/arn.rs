//! ECS's resource names: `arn:aws:ecs:REGION:ACCOUNT:RESOURCE`, and the
//! "name or ARN" inputs every ECS operation takes. Berth answers with ARNs in
//! the region the caller signed for and a configurable account id; it takes
//! any region and account in what it is sent (they name nothing in Berth),
//! but never another service's or another resource type's ARN.
//!
//! Resource forms (ECS's "long ARN format"):
//! `cluster/NAME`, `task-definition/FAMILY:REVISION`, `task/CLUSTER/ID`,
//! `service/CLUSTER/NAME`, `container-instance/CLUSTER/ID`. The older short
//! forms without the cluster (`task/ID`, `service/NAME`,
//! `container-instance/ID`) are read too.

use std::fmt;

/// The account id in Berth's ARNs unless configured (`--ecs-account-id`):
/// twelve digits, as AWS account ids are.
pub const DEFAULT_ACCOUNT: &str = "000000000000";
/// The cluster ECS uses when a request names none.
pub const DEFAULT_CLUSTER: &str = "default";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    Cluster {
        name: String,
    },
    TaskDefinition {
        family: String,
        revision: u32,
    },
    /// `cluster` is `None` in the short form.
    Task {
        cluster: Option<String>,
        id: String,
    },
    Service {
        cluster: Option<String>,
        name: String,
    },
    ContainerInstance {
        cluster: Option<String>,
        id: String,
    },
    /// One deployment of a service
    /// (`service-deployment/CLUSTER/SERVICE/ID`).
    ServiceDeployment {
        cluster: String,
        service: String,
        id: String,
    },
    /// What a deployment rolls out (`service-revision/CLUSTER/SERVICE/ID`):
    /// Berth has one revision per deployment, under the same id.
    ServiceRevision {
        cluster: String,
        service: String,
        id: String,
    },
    /// A task's container (`container/CLUSTER/TASK/NAME`); Berth names
    /// containers by their name in the task definition.
    Container {
        cluster: String,
        task: String,
        name: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arn {
    pub partition: String,
    pub region: String,
    pub account: String,
    pub resource: Resource,
}

/// An identifier that is neither a valid name nor an ECS ARN of the kind
/// asked for; the message is what ECS's `InvalidParameterException` says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ArnError(pub String);

fn invalid(what: &str, text: &str, why: &str) -> ArnError {
    ArnError(format!("Invalid identifier for {what}: {text:?}: {why}"))
}

impl Arn {
    pub fn new(region: &str, account: &str, resource: Resource) -> Self {
        Self {
            partition: "aws".into(),
            region: region.into(),
            account: account.into(),
            resource,
        }
    }

    pub fn parse(text: &str) -> Result<Self, ArnError> {
        let bad = |why: &str| invalid("an ECS ARN", text, why);
        let mut parts = text.splitn(6, ':');
        let (Some("arn"), Some(partition), Some(service), Some(region), Some(account), Some(rest)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(bad("expected arn:PARTITION:ecs:REGION:ACCOUNT:RESOURCE"));
        };
        if service != "ecs" {
            return Err(bad("not an ECS ARN"));
        }
        if partition.is_empty() || region.is_empty() || account.is_empty() {
            return Err(bad("the partition, region and account must not be empty"));
        }
        let (kind, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("expected RESOURCE-TYPE/ID after the account"))?;
        let segments: Vec<&str> = path.split('/').collect();
        if segments.iter().any(|s| s.is_empty()) {
            return Err(bad("an empty path segment"));
        }
        let owned = |s: &str| s.to_string();
        let resource = match (kind, segments.as_slice()) {
            ("cluster", [name]) => Resource::Cluster { name: owned(name) },
            ("task-definition", [family_revision]) => {
                let (family, revision) = family_revision
                    .rsplit_once(':')
                    .ok_or_else(|| bad("a task definition ARN ends in FAMILY:REVISION"))?;
                let revision = revision
                    .parse::<u32>()
                    .ok()
                    .filter(|r| *r > 0)
                    .ok_or_else(|| bad("the revision must be a positive number"))?;
                Resource::TaskDefinition {
                    family: owned(family),
                    revision,
                }
            }
            ("task", [id]) => Resource::Task {
                cluster: None,
                id: owned(id),
            },
            ("task", [cluster, id]) => Resource::Task {
                cluster: Some(owned(cluster)),
                id: owned(id),
            },
            ("service", [name]) => Resource::Service {
                cluster: None,
                name: owned(name),
            },
            ("service", [cluster, name]) => Resource::Service {
                cluster: Some(owned(cluster)),
                name: owned(name),
            },
            ("container-instance", [id]) => Resource::ContainerInstance {
                cluster: None,
                id: owned(id),
            },
            ("container-instance", [cluster, id]) => Resource::ContainerInstance {
                cluster: Some(owned(cluster)),
                id: owned(id),
            },
            ("service-deployment", [cluster, service, id]) => Resource::ServiceDeployment {
                cluster: owned(cluster),
                service: owned(service),
                id: owned(id),
            },
            ("service-revision", [cluster, service, id]) => Resource::ServiceRevision {
                cluster: owned(cluster),
                service: owned(service),
                id: owned(id),
            },
            ("container", [cluster, task, name]) => Resource::Container {
                cluster: owned(cluster),
                task: owned(task),
                name: owned(name),
            },
            (other, _) => return Err(bad(&format!("unknown or malformed ECS resource {other:?}"))),
        };
        Ok(Self {
            partition: owned(partition),
            region: owned(region),
            account: owned(account),
            resource,
        })
    }
}

impl fmt::Display for Arn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "arn:{}:ecs:{}:{}:",
            self.partition, self.region, self.account
        )?;
        match &self.resource {
            Resource::Cluster { name } => write!(f, "cluster/{name}"),
            Resource::TaskDefinition { family, revision } => {
                write!(f, "task-definition/{family}:{revision}")
            }
            Resource::Task { cluster, id } => match cluster {
                Some(cluster) => write!(f, "task/{cluster}/{id}"),
                None => write!(f, "task/{id}"),
            },
            Resource::Service { cluster, name } => match cluster {
                Some(cluster) => write!(f, "service/{cluster}/{name}"),
                None => write!(f, "service/{name}"),
            },
            Resource::ContainerInstance { cluster, id } => match cluster {
                Some(cluster) => write!(f, "container-instance/{cluster}/{id}"),
                None => write!(f, "container-instance/{id}"),
            },
            Resource::Container {
                cluster,
                task,
                name,
            } => write!(f, "container/{cluster}/{task}/{name}"),
            Resource::ServiceDeployment {
                cluster,
                service,
                id,
            } => write!(f, "service-deployment/{cluster}/{service}/{id}"),
            Resource::ServiceRevision {
                cluster,
                service,
                id,
            } => write!(f, "service-revision/{cluster}/{service}/{id}"),
        }
    }
}

/// Where the answers' ARNs say resources live: the region the caller
/// signed for and the configured account id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub region: String,
    pub account: String,
}

impl Scope {
    pub fn arn(&self, resource: Resource) -> String {
        Arn::new(&self.region, &self.account, resource).to_string()
    }

    pub fn cluster(&self, name: &str) -> String {
        self.arn(Resource::Cluster { name: name.into() })
    }
}

fn is_arn(text: &str) -> bool {
    text.starts_with("arn:")
}

/// A `cluster` parameter: a name, a cluster ARN, or nothing (the default
/// cluster).
pub fn cluster_name(input: Option<&str>) -> Result<String, ArnError> {
    match input.map(str::trim) {
        None | Some("") => Ok(DEFAULT_CLUSTER.into()),
        Some(text) if is_arn(text) => match Arn::parse(text)?.resource {
            Resource::Cluster { name } => Ok(name),
            _ => Err(invalid("a cluster", text, "not a cluster ARN")),
        },
        Some(name) => Ok(name.into()),
    }
}

/// A `taskDefinition` parameter: `FAMILY`, `FAMILY:REVISION` or a task
/// definition ARN, as Berth's own reference (`FAMILY` or `FAMILY:REVISION`).
pub fn task_definition(input: &str) -> Result<String, ArnError> {
    let text = input.trim();
    if is_arn(text) {
        return match Arn::parse(text)?.resource {
            Resource::TaskDefinition { family, revision } => Ok(format!("{family}:{revision}")),
            _ => Err(invalid(
                "a task definition",
                text,
                "not a task definition ARN",
            )),
        };
    }
    if text.is_empty() {
        return Err(invalid("a task definition", text, "it is empty"));
    }
    Ok(text.into())
}

/// An id or ARN of a resource that lives in a cluster (a task, a service, a
/// container instance): the id (or name) and the cluster the ARN names, if
/// it names one. The caller checks that cluster against the request's.
fn in_cluster(
    input: &str,
    what: &str,
    pick: fn(Resource) -> Option<(Option<String>, String)>,
) -> Result<(Option<String>, String), ArnError> {
    let text = input.trim();
    if text.is_empty() {
        return Err(invalid(what, text, "it is empty"));
    }
    if !is_arn(text) {
        return Ok((None, text.into()));
    }
    pick(Arn::parse(text)?.resource)
        .ok_or_else(|| invalid(what, text, &format!("not the ARN of {what}")))
}

pub fn task(input: &str) -> Result<(Option<String>, String), ArnError> {
    in_cluster(input, "a task", |r| match r {
        Resource::Task { cluster, id } => Some((cluster, id)),
        _ => None,
    })
}

pub fn service(input: &str) -> Result<(Option<String>, String), ArnError> {
    in_cluster(input, "a service", |r| match r {
        Resource::Service { cluster, name } => Some((cluster, name)),
        _ => None,
    })
}

pub fn container_instance(input: &str) -> Result<(Option<String>, String), ArnError> {
    in_cluster(input, "a container instance", |r| match r {
        Resource::ContainerInstance { cluster, id } => Some((cluster, id)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_resource_form_round_trips() {
        let forms = [
            "arn:aws:ecs:eu-west-1:123456789012:cluster/prod",
            "arn:aws:ecs:eu-west-1:123456789012:task-definition/web:12",
            "arn:aws:ecs:eu-west-1:123456789012:task/prod/0f3c",
            "arn:aws:ecs:eu-west-1:123456789012:task/0f3c",
            "arn:aws:ecs:eu-west-1:123456789012:service/prod/web",
            "arn:aws:ecs:eu-west-1:123456789012:service/web",
            "arn:aws:ecs:eu-west-1:123456789012:container-instance/prod/i-1",
            "arn:aws:ecs:eu-west-1:123456789012:container-instance/i-1",
            "arn:aws:ecs:eu-west-1:123456789012:container/prod/0f3c/web",
            "arn:aws:ecs:eu-west-1:123456789012:service-deployment/prod/web/0000000000000000042",
            "arn:aws:ecs:eu-west-1:123456789012:service-revision/prod/web/0000000000000000042",
            "arn:aws-cn:ecs:cn-north-1:123456789012:cluster/prod",
        ];
        for text in forms {
            assert_eq!(Arn::parse(text).unwrap().to_string(), text);
        }
        let made = Arn::new(
            "us-east-1",
            DEFAULT_ACCOUNT,
            Resource::Service {
                cluster: Some("prod".into()),
                name: "web".into(),
            },
        );
        assert_eq!(
            made.to_string(),
            "arn:aws:ecs:us-east-1:000000000000:service/prod/web"
        );
    }

    #[test]
    fn names_and_arns_are_both_taken_where_ecs_takes_them() {
        assert_eq!(cluster_name(None).unwrap(), "default");
        assert_eq!(cluster_name(Some("")).unwrap(), "default");
        assert_eq!(cluster_name(Some("prod")).unwrap(), "prod");
        assert_eq!(
            cluster_name(Some("arn:aws:ecs:eu-west-1:1:cluster/prod")).unwrap(),
            "prod"
        );
        assert_eq!(task_definition("web").unwrap(), "web");
        assert_eq!(task_definition("web:3").unwrap(), "web:3");
        assert_eq!(
            task_definition("arn:aws:ecs:eu-west-1:1:task-definition/web:3").unwrap(),
            "web:3"
        );
        assert_eq!(
            task("arn:aws:ecs:r:1:task/prod/abc").unwrap(),
            (Some("prod".into()), "abc".into())
        );
        assert_eq!(task("abc").unwrap(), (None, "abc".into()));
        assert_eq!(
            service("arn:aws:ecs:r:1:service/web").unwrap(),
            (None, "web".into())
        );
        assert_eq!(
            container_instance("arn:aws:ecs:r:1:container-instance/prod/i-9").unwrap(),
            (Some("prod".into()), "i-9".into())
        );
    }

    #[test]
    fn the_wrong_kind_of_arn_or_a_malformed_one_is_refused_by_name() {
        let refused = [
            cluster_name(Some("arn:aws:ecs:r:1:service/prod/web")).unwrap_err(),
            task_definition("arn:aws:ecs:r:1:task-definition/web").unwrap_err(),
            task_definition("arn:aws:ecs:r:1:task-definition/web:0").unwrap_err(),
            task_definition(" ").unwrap_err(),
            task("arn:aws:ecs:r:1:cluster/prod").unwrap_err(),
            task("arn:aws:sqs:r:1:task/prod/abc").unwrap_err(),
            service("arn:aws:ecs:r:1:service/a/b/c").unwrap_err(),
            service("arn:aws:ecs:r:1:service//web").unwrap_err(),
            container_instance("arn:aws:ecs::1:container-instance/i-1").unwrap_err(),
            task("arn:aws:ecs:r:1:bucket/x").unwrap_err(),
            task("arn:nonsense").unwrap_err(),
        ];
        for e in refused {
            assert!(e.0.starts_with("Invalid identifier for "), "{e}");
        }
    }
}
