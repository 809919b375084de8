//! The server's error type, mapped to a gRPC status in exactly one place.

use berth_types::{FieldError, StateError, ValidationErrors};
use tonic::{Code, Status};

#[derive(Debug, Clone, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Invalid(#[from] ValidationErrors),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("no leader is elected right now ({0}); retry shortly")]
    NoLeader(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("the write may or may not have been applied: {0}; check before retrying")]
    OutcomeUnknown(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    NotFound(String),
    #[error("server is shutting down")]
    ShuttingDown,
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServerError {
    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::Internal(e.to_string())
    }

    /// One bad field of a request.
    pub fn from_field(e: FieldError) -> Self {
        Self::Invalid(e.into())
    }
}

impl From<FieldError> for ServerError {
    fn from(e: FieldError) -> Self {
        Self::from_field(e)
    }
}

impl From<ServerError> for Status {
    fn from(error: ServerError) -> Self {
        let code = match &error {
            ServerError::Invalid(_) => Code::InvalidArgument,
            ServerError::State(StateError::Invalid(_)) => Code::InvalidArgument,
            ServerError::State(StateError::NotFound { .. }) | ServerError::NotFound(_) => {
                Code::NotFound
            }
            ServerError::State(StateError::AlreadyExists { .. }) => Code::AlreadyExists,
            ServerError::State(StateError::FailedPrecondition(_))
            | ServerError::FailedPrecondition(_) => Code::FailedPrecondition,
            ServerError::NoLeader(_)
            | ServerError::Unavailable(_)
            | ServerError::OutcomeUnknown(_)
            | ServerError::ShuttingDown => Code::Unavailable,
            ServerError::Internal(_) => Code::Internal,
        };
        if code == Code::Internal {
            tracing::error!(error = %error, "internal error answered to a client");
        }
        Status::new(code, error.to_string())
    }
}
