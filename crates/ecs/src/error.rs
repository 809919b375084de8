//! ECS's error answers: `{"__type": "...", "message": "..."}` with the HTTP
//! status ECS gives each type. Service errors are all 400 except
//! `ServerException` (500); authentication errors come from `berth-sigv4`.

use serde::Serialize;

/// The exception types Berth answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    /// The request is wrong in a way no other type names (ECS's catch-all
    /// for client mistakes, including a resource that does not exist).
    Client,
    /// A parameter is invalid; the message names it.
    InvalidParameter,
    ClusterNotFound,
    ClusterContainsServices,
    ClusterContainsTasks,
    ClusterContainsContainerInstances,
    ServiceNotFound,
    /// ListServicesByNamespace named no namespace Berth has.
    NamespaceNotFound,
    /// Not something Berth does; the message says what to use instead.
    UnsupportedFeature,
    /// The credentials' role may not do this.
    AccessDenied,
    /// The operation named in `X-Amz-Target` does not exist.
    UnknownOperation,
    /// The body is not JSON of the expected shape.
    Serialization,
    /// The control plane could not do it now (no leader, shutting down):
    /// retry.
    Server,
}

impl ErrorType {
    pub fn name(self) -> &'static str {
        match self {
            Self::Client => "ClientException",
            Self::InvalidParameter => "InvalidParameterException",
            Self::ClusterNotFound => "ClusterNotFoundException",
            Self::ClusterContainsServices => "ClusterContainsServicesException",
            Self::ClusterContainsTasks => "ClusterContainsTasksException",
            Self::ClusterContainsContainerInstances => "ClusterContainsContainerInstancesException",
            Self::ServiceNotFound => "ServiceNotFoundException",
            Self::NamespaceNotFound => "NamespaceNotFoundException",
            Self::UnsupportedFeature => "UnsupportedFeatureException",
            Self::AccessDenied => "AccessDeniedException",
            Self::UnknownOperation => "UnknownOperationException",
            Self::Serialization => "SerializationException",
            Self::Server => "ServerException",
        }
    }

    pub fn http_status(self) -> u16 {
        match self {
            Self::Server => 500,
            _ => 400,
        }
    }
}

/// One error answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", kind.name())]
pub struct EcsError {
    pub kind: ErrorType,
    pub message: String,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "__type")]
    kind: &'a str,
    message: &'a str,
}

impl EcsError {
    pub fn new(kind: ErrorType, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// The JSON body ECS clients parse (`__type`, `message`).
    pub fn body(&self) -> String {
        serde_json::to_string(&Body {
            kind: self.kind.name(),
            message: &self.message,
        })
        .unwrap_or_else(|_| String::from("{\"__type\":\"ServerException\"}"))
    }
}

impl From<crate::arn::ArnError> for EcsError {
    fn from(e: crate::arn::ArnError) -> Self {
        Self::new(ErrorType::InvalidParameter, e.0)
    }
}

/// What Berth's own validation refused, every problem with its field path,
/// as ECS reports a bad parameter.
impl From<berth_types::ValidationErrors> for EcsError {
    fn from(e: berth_types::ValidationErrors) -> Self {
        Self::new(ErrorType::InvalidParameter, e.to_string())
    }
}

/// An `include` list of a Describe* call: whether `TAGS` was asked for.
/// Options ECS has for other resources are refused by name.
pub fn include_tags(include: &[String]) -> Result<bool, EcsError> {
    let mut tags = false;
    for option in include {
        match option.as_str() {
            "TAGS" => tags = true,
            other => {
                return Err(EcsError::new(
                    ErrorType::InvalidParameter,
                    format!("include: {other:?} is not TAGS"),
                ))
            }
        }
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_and_statuses_are_as_ecs_sends_them() {
        let e = EcsError::new(ErrorType::ClusterNotFound, "Cluster not found.");
        assert_eq!(
            e.body(),
            r#"{"__type":"ClusterNotFoundException","message":"Cluster not found."}"#
        );
        assert_eq!(e.kind.http_status(), 400);
        assert_eq!(ErrorType::Server.http_status(), 500);
        let quoted = EcsError::new(ErrorType::InvalidParameter, "a \"quoted\" name");
        let parsed: serde_json::Value = serde_json::from_str(&quoted.body()).unwrap();
        assert_eq!(parsed["message"], "a \"quoted\" name");
        let from_arn: EcsError = crate::arn::cluster_name(Some("arn:x")).unwrap_err().into();
        assert_eq!(from_arn.kind, ErrorType::InvalidParameter);
    }

    #[test]
    fn include_takes_tags_and_refuses_the_rest() {
        assert!(!include_tags(&[]).unwrap());
        assert!(include_tags(&["TAGS".into()]).unwrap());
        let e = include_tags(&["STATISTICS".into()]).unwrap_err();
        assert_eq!(e.kind, ErrorType::InvalidParameter);
        assert!(e.message.contains("STATISTICS"), "{e}");
    }
}
