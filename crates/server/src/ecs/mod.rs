//! The ECS-compatible API: ECS's JSON operations (as `aws ecs`, boto3 and
//! the AWS SDKs send them) answered from the same application layer
//! ([`crate::ops`]) as the gRPC API. Each operation reads its request with
//! `berth-ecs`'s shapes, calls `Ops`, and answers in ECS's shapes; nothing
//! here decides anything the gRPC API would decide differently. The HTTP
//! side (TLS, SigV4, roles, audit) is in [`http`].

mod clusters;
pub mod http;
mod instances;
mod services;
mod tagging;
mod taskdefs;
mod tasks;

use berth_ecs::arn::Scope;
use berth_ecs::error::{EcsError, ErrorType};
use berth_types::{Role, StateError};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::ServerError;
use crate::ops::Ops;

/// The `X-Amz-Target` prefix of every ECS operation.
pub const TARGET_PREFIX: &str = "AmazonEC2ContainerServiceV20141113.";

/// The account id ARNs carry unless `--ecs-account-id` says otherwise.
pub const DEFAULT_ACCOUNT_ID: &str = "000000000000";

/// What an operation's answer is: the JSON body of a 200.
pub type EcsResult = Result<Value, EcsError>;

/// ECS's operations as Berth sorts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Answered; the caller needs at least this role.
    Supported(Role),
    /// An ECS operation Berth does not do: answered with
    /// `UnsupportedFeatureException` saying what to use instead.
    Unsupported(&'static str),
}

/// What `operation` is, or `None` for a name ECS does not have.
pub fn kind(operation: &str) -> Option<Kind> {
    use Kind::{Supported, Unsupported};
    if let Some((_, _, role)) = ROUTES.iter().find(|(name, _, _)| *name == operation) {
        return Some(Supported(*role));
    }
    Some(match operation {
        "UpdateContainerAgent" => Unsupported(
            "updating the agent through the API: upgrade berth-agent on the host (install-agent.sh installs a new version; the agent keeps its tasks running across a restart)",
        ),
        "DescribeServiceRevisions" => Unsupported(
            "service revisions: each Berth deployment rolls out one task definition; use DescribeServiceDeployments instead, whose targetServiceRevision is that revision",
        ),
        "PutClusterCapacityProviders"
        | "CreateCapacityProvider"
        | "DeleteCapacityProvider"
        | "UpdateCapacityProvider"
        | "DescribeCapacityProviders" => Unsupported(
            "capacity providers: Berth places tasks on the instances registered in the cluster; add capacity by installing agents (install-agent.sh with an activation)",
        ),
        "CreateTaskSet" | "DeleteTaskSet" | "DescribeTaskSets" | "UpdateTaskSet"
        | "UpdateServicePrimaryTaskSet" => Unsupported(
            "task sets (the EXTERNAL deployment controller): use a service's rolling deployment (deploymentController ECS) or Berth's blue/green one (deploymentController {\"type\": \"BLUE_GREEN\", \"trafficShift\": ...} in CreateService)",
        ),
        "ExecuteCommand" => Unsupported(
            "ECS Exec: read a task's output with `berth task logs` (TaskService/GetTaskLogs)",
        ),
        "DiscoverPollEndpoint" | "SubmitTaskStateChange" | "SubmitContainerStateChange"
        | "SubmitAttachmentStateChanges" => Unsupported(
            "the ECS container agent's calls: use Berth's own agent (berth-agent, installed by install-agent.sh), which reports over its mutual-TLS session",
        ),
        "GetTaskProtection" | "UpdateTaskProtection" => Unsupported(
            "task scale-in protection: a service replaces tasks only in a deployment or after failures; pin work with a standalone task (RunTask) instead",
        ),
        "StopServiceDeployment" => Unsupported(
            "stopping a service deployment: roll back with `berth service rollback` (ServiceService/RollbackService) or update the service again",
        ),
        _ => return None,
    })
}

fn server_error_type(error: &ServerError) -> ErrorType {
    match error {
        ServerError::Invalid(_) | ServerError::State(StateError::Invalid(_)) => {
            ErrorType::InvalidParameter
        }
        ServerError::State(StateError::NotFound { kind, .. }) => match kind.as_str() {
            "cluster" => ErrorType::ClusterNotFound,
            "service" => ErrorType::ServiceNotFound,
            _ => ErrorType::InvalidParameter,
        },
        ServerError::NotFound(message) if message.starts_with("cluster ") => {
            ErrorType::ClusterNotFound
        }
        ServerError::NotFound(message) if message.starts_with("service ") => {
            ErrorType::ServiceNotFound
        }
        ServerError::NotFound(_) => ErrorType::InvalidParameter,
        ServerError::State(StateError::AlreadyExists { .. })
        | ServerError::State(StateError::FailedPrecondition(_))
        | ServerError::FailedPrecondition(_) => ErrorType::Client,
        ServerError::NoLeader(_)
        | ServerError::Unavailable(_)
        | ServerError::OutcomeUnknown(_)
        | ServerError::ShuttingDown
        | ServerError::Internal(_) => ErrorType::Server,
    }
}

/// An error of the application layer as ECS reports it. Messages are the
/// gRPC API's: both front ends explain a refusal the same way.
pub fn from_server(error: ServerError) -> EcsError {
    if matches!(error, ServerError::Internal(_)) {
        tracing::error!(error = %error, "internal error answered to an ECS client");
    }
    EcsError::new(server_error_type(&error), error.to_string())
}

/// Reads a request body into its ECS shape: an empty body is `{}` (what
/// the SDKs send for an operation without parameters), anything that is
/// not JSON of the shape is a `SerializationException`.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, EcsError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| {
        EcsError::new(
            ErrorType::Serialization,
            format!("the request body is not valid for this operation: {e}"),
        )
    })
}

/// Serializes an answer. Members without a value are left out, as ECS
/// leaves them out (some SDKs read an explicit `null` as a value).
pub fn answer(value: impl serde::Serialize) -> EcsResult {
    let mut value = serde_json::to_value(value).map_err(|e| {
        EcsError::new(
            ErrorType::Server,
            format!("could not encode the answer: {e}"),
        )
    })?;
    drop_nulls(&mut value);
    Ok(value)
}

fn drop_nulls(value: &mut Value) {
    match value {
        Value::Object(members) => {
            members.retain(|_, v| !v.is_null());
            members.values_mut().for_each(drop_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// Declares [`Route`], one variant per operation [`EcsApi::call`] answers,
/// and the table from operation names to it and the role it needs; `kind`
/// reads its supported operations from the table. `call` matches on
/// `Route` exhaustively, so an operation listed here cannot lack its
/// handler, and one supported cannot lack a route.
macro_rules! routes {
    ($($name:ident => $role:ident),* $(,)?) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        enum Route {
            $($name),*
        }

        const ROUTES: &[(&str, Route, Role)] =
            &[$((stringify!($name), Route::$name, Role::$role)),*];
    };
}

routes!(
    ListClusters => Readonly,
    DescribeClusters => Readonly,
    CreateCluster => Admin,
    DeleteCluster => Admin,
    UpdateCluster => Admin,
    UpdateClusterSettings => Admin,
    TagResource => Admin,
    UntagResource => Admin,
    ListTagsForResource => Readonly,
    PutAccountSetting => Admin,
    PutAccountSettingDefault => Admin,
    DeleteAccountSetting => Admin,
    ListAccountSettings => Readonly,
    RegisterTaskDefinition => Admin,
    DescribeTaskDefinition => Readonly,
    DeregisterTaskDefinition => Admin,
    DeleteTaskDefinitions => Admin,
    ListTaskDefinitions => Readonly,
    ListTaskDefinitionFamilies => Readonly,
    RunTask => Admin,
    StartTask => Admin,
    StopTask => Admin,
    DescribeTasks => Readonly,
    ListTasks => Readonly,
    CreateService => Admin,
    UpdateService => Admin,
    DeleteService => Admin,
    DescribeServices => Readonly,
    ListServices => Readonly,
    ListServicesByNamespace => Readonly,
    ListServiceDeployments => Readonly,
    DescribeServiceDeployments => Readonly,
    DescribeContainerInstances => Readonly,
    ListContainerInstances => Readonly,
    DeregisterContainerInstance => Admin,
    UpdateContainerInstancesState => Admin,
    PutAttributes => Admin,
    DeleteAttributes => Admin,
    ListAttributes => Readonly,
    RegisterContainerInstance => Admin,
);

fn route(operation: &str) -> Option<Route> {
    ROUTES
        .iter()
        .find(|(name, _, _)| *name == operation)
        .map(|(_, route, _)| *route)
}

/// The operations, over the application layer.
#[derive(Clone)]
pub struct EcsApi {
    pub ops: Ops,
    pub account_id: String,
    /// The cluster CA, which RegisterContainerInstance's join tokens pin;
    /// `None` (in-process tests): that call answers ServerException.
    pub pki: Option<std::sync::Arc<crate::tls::SharedPki>>,
}

impl EcsApi {
    /// Answers one supported operation (the caller has been authenticated
    /// and holds the role [`kind`] names). `caller` is the caller's
    /// principal ARN, which account settings are kept by.
    pub async fn call(
        &self,
        scope: &Scope,
        caller: &str,
        operation: &str,
        body: &[u8],
    ) -> EcsResult {
        let Some(route) = route(operation) else {
            return Err(EcsError::new(
                ErrorType::UnknownOperation,
                format!("{operation} is not an ECS operation Berth answers"),
            ));
        };
        match route {
            Route::ListClusters => self.list_clusters(scope, parse(body)?).await,
            Route::DescribeClusters => self.describe_clusters(scope, parse(body)?).await,
            Route::CreateCluster => self.create_cluster(scope, parse(body)?).await,
            Route::DeleteCluster => self.delete_cluster(scope, parse(body)?).await,
            Route::UpdateCluster | Route::UpdateClusterSettings => {
                self.update_cluster(scope, parse(body)?).await
            }
            Route::TagResource => self.tag_resource(parse(body)?).await,
            Route::UntagResource => self.untag_resource(parse(body)?).await,
            Route::ListTagsForResource => self.list_tags_for_resource(parse(body)?).await,
            Route::PutAccountSetting => self.put_account_setting(scope, caller, parse(body)?).await,
            Route::PutAccountSettingDefault => {
                self.put_account_setting_default(scope, parse(body)?).await
            }
            Route::DeleteAccountSetting => {
                self.delete_account_setting(scope, caller, parse(body)?)
                    .await
            }
            Route::ListAccountSettings => {
                self.list_account_settings(scope, caller, parse(body)?)
                    .await
            }
            Route::RegisterTaskDefinition => self.register_task_definition(scope, body).await,
            Route::DescribeTaskDefinition => {
                self.describe_task_definition(scope, parse(body)?).await
            }
            Route::DeleteTaskDefinitions => self.delete_task_definitions(scope, parse(body)?).await,
            Route::DeregisterTaskDefinition => {
                self.deregister_task_definition(scope, parse(body)?).await
            }
            Route::ListTaskDefinitions => self.list_task_definitions(scope, parse(body)?).await,
            Route::ListTaskDefinitionFamilies => {
                self.list_task_definition_families(parse(body)?).await
            }
            Route::RunTask => self.run_task(scope, parse(body)?).await,
            Route::StartTask => self.start_task(scope, parse(body)?).await,
            Route::StopTask => self.stop_task(scope, parse(body)?).await,
            Route::DescribeTasks => self.describe_tasks(scope, parse(body)?).await,
            Route::ListTasks => self.list_tasks(scope, parse(body)?).await,
            Route::CreateService => self.create_service(scope, body).await,
            Route::UpdateService => self.update_service(scope, body).await,
            Route::DeleteService => self.delete_service(scope, parse(body)?).await,
            Route::DescribeServices => self.describe_services(scope, parse(body)?).await,
            Route::ListServices => self.list_services(scope, parse(body)?).await,
            Route::ListServicesByNamespace => {
                self.list_services_by_namespace(scope, parse(body)?).await
            }
            Route::ListServiceDeployments => {
                self.list_service_deployments(scope, parse(body)?).await
            }
            Route::DescribeServiceDeployments => {
                self.describe_service_deployments(scope, parse(body)?).await
            }
            Route::DescribeContainerInstances => {
                self.describe_container_instances(scope, parse(body)?).await
            }
            Route::ListContainerInstances => {
                self.list_container_instances(scope, parse(body)?).await
            }
            Route::DeregisterContainerInstance => {
                self.deregister_container_instance(scope, parse(body)?)
                    .await
            }
            Route::UpdateContainerInstancesState => {
                self.update_container_instances_state(scope, parse(body)?)
                    .await
            }
            Route::PutAttributes => self.put_attributes(parse(body)?).await,
            Route::DeleteAttributes => self.delete_attributes(parse(body)?).await,
            Route::ListAttributes => self.list_attributes(scope, parse(body)?).await,
            Route::RegisterContainerInstance => {
                self.register_container_instance(scope, parse(body)?).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_of_the_application_layer_map_to_ecs_types() {
        let cases = [
            (
                ServerError::State(StateError::not_found("cluster", "x")),
                ErrorType::ClusterNotFound,
            ),
            (
                ServerError::State(StateError::not_found("service", "x")),
                ErrorType::ServiceNotFound,
            ),
            (
                ServerError::NotFound("cluster \"x\" not found".into()),
                ErrorType::ClusterNotFound,
            ),
            (
                ServerError::State(StateError::not_found("task", "x")),
                ErrorType::InvalidParameter,
            ),
            (
                ServerError::State(StateError::already_exists("service", "x")),
                ErrorType::Client,
            ),
            (ServerError::NoLeader("x".into()), ErrorType::Server),
        ];
        for (error, expected) in cases {
            assert_eq!(from_server(error.clone()).kind, expected, "{error}");
        }
    }

    #[test]
    fn bodies_are_read_as_ecs_sends_them() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(rename_all = "camelCase")]
        struct Probe {
            cluster_name: Option<String>,
        }
        let empty: Probe = parse(b"").unwrap();
        assert_eq!(empty.cluster_name, None);
        let named: Probe = parse(br#"{"clusterName": "a"}"#).unwrap();
        assert_eq!(named.cluster_name.as_deref(), Some("a"));
        let e = parse::<Probe>(b"{not json").unwrap_err();
        assert_eq!(e.kind, ErrorType::Serialization);
    }

    #[test]
    fn operations_are_sorted_into_reads_writes_and_refusals() {
        assert_eq!(kind("ListClusters"), Some(Kind::Supported(Role::Readonly)));
        assert_eq!(kind("CreateCluster"), Some(Kind::Supported(Role::Admin)));
        assert!(matches!(
            kind("PutClusterCapacityProviders"),
            Some(Kind::Unsupported(_))
        ));
        assert_eq!(kind("MakeCoffee"), None);
    }

    /// The operations of task definitions, tasks, services and container
    /// instances, with the role each needs.
    const ADDED: &[(&str, Role)] = &[
        ("RegisterTaskDefinition", Role::Admin),
        ("DescribeTaskDefinition", Role::Readonly),
        ("DeregisterTaskDefinition", Role::Admin),
        ("ListTaskDefinitions", Role::Readonly),
        ("ListTaskDefinitionFamilies", Role::Readonly),
        ("RunTask", Role::Admin),
        ("StartTask", Role::Admin),
        ("StopTask", Role::Admin),
        ("DescribeTasks", Role::Readonly),
        ("ListTasks", Role::Readonly),
        ("CreateService", Role::Admin),
        ("UpdateService", Role::Admin),
        ("DeleteService", Role::Admin),
        ("DescribeServices", Role::Readonly),
        ("ListServices", Role::Readonly),
        ("ListServicesByNamespace", Role::Readonly),
        ("ListServiceDeployments", Role::Readonly),
        ("DescribeServiceDeployments", Role::Readonly),
        ("DescribeContainerInstances", Role::Readonly),
        ("ListContainerInstances", Role::Readonly),
        ("DeregisterContainerInstance", Role::Admin),
        ("UpdateContainerInstancesState", Role::Admin),
        ("PutAttributes", Role::Admin),
        ("DeleteAttributes", Role::Admin),
        ("ListAttributes", Role::Readonly),
    ];

    #[test]
    fn every_added_operation_has_its_role_and_a_handler() {
        for (operation, role) in ADDED {
            assert_eq!(kind(operation), Some(Kind::Supported(*role)), "{operation}");
            assert!(
                route(operation).is_some(),
                "{operation} has no handler in call"
            );
        }
    }

    #[test]
    fn every_handled_operation_is_a_supported_one() {
        for (operation, _, role) in ROUTES {
            assert_eq!(
                kind(operation),
                Some(Kind::Supported(*role)),
                "{operation} is answered by call but kind() does not support it"
            );
        }

        assert_eq!(route("MakeCoffee"), None);
    }

    #[test]
    fn every_refusal_says_what_to_use_instead() {
        let refused = [
            "DescribeServiceRevisions",
            "UpdateContainerAgent",
            "PutClusterCapacityProviders",
            "CreateTaskSet",
            "ExecuteCommand",
            "DiscoverPollEndpoint",
            "GetTaskProtection",
            "StopServiceDeployment",
        ];
        for operation in refused {
            let Some(Kind::Unsupported(message)) = kind(operation) else {
                panic!("{operation} is not refused");
            };
            assert!(
                route(operation).is_none(),
                "{operation} is refused yet routed"
            );
            let says_instead = [
                "use ",
                "instead",
                "`berth ",
                "ServiceService/",
                "install-agent.sh",
            ]
            .iter()
            .any(|w| message.contains(w));
            assert!(says_instead && message.len() > 40, "{operation}: {message}");
        }
    }
}
