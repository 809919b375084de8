use serde::{Deserialize, Serialize};

/// One problem with one field of the input, phrased so that a person knows
/// what to change: `containerDefinitions[1].image: required; ...`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// Path of the field in the ECS JSON shape, e.g. `containerDefinitions[0].memory`.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Every problem found in one input, so a person can fix them all at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl std::fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join("; "))
    }
}

impl ValidationErrors {
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|e| e.field.as_str())
    }
}

impl From<FieldError> for ValidationErrors {
    fn from(error: FieldError) -> Self {
        Self(vec![error])
    }
}

/// Why the state machine refused a command. Refusals are deterministic: every
/// server applying the same log refuses the same commands, and a refused
/// command changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum StateError {
    #[error("{kind} {id:?} not found")]
    NotFound { kind: String, id: String },
    #[error("{kind} {id:?} already exists")]
    AlreadyExists { kind: String, id: String },
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("invalid input: {0}")]
    Invalid(ValidationErrors),
}

impl StateError {
    pub fn not_found(kind: &str, id: impl Into<String>) -> Self {
        Self::NotFound {
            kind: kind.to_string(),
            id: id.into(),
        }
    }

    pub fn already_exists(kind: &str, id: impl Into<String>) -> Self {
        Self::AlreadyExists {
            kind: kind.to_string(),
            id: id.into(),
        }
    }
}

impl From<ValidationErrors> for StateError {
    fn from(errors: ValidationErrors) -> Self {
        Self::Invalid(errors)
    }
}

impl From<FieldError> for StateError {
    fn from(error: FieldError) -> Self {
        Self::Invalid(error.into())
    }
}
