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

/// An error and its sources on one line, outermost first, joined by `: `.
/// Transport errors need it: tonic's and reqwest's outer errors only say
/// "transport error" or "error sending request", and what actually happened
/// ("connection refused") is a few sources down.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Layer(&'static str, #[source] Option<Box<Layer>>);

    #[test]
    fn error_chain_names_every_source_outermost_first() {
        let inner = Layer("connection refused", None);
        let middle = Layer("tcp connect error", Some(Box::new(inner)));
        let outer = Layer("transport error", Some(Box::new(middle)));
        assert_eq!(
            error_chain(&outer),
            "transport error: tcp connect error: connection refused"
        );
        assert_eq!(error_chain(&Layer("alone", None)), "alone");
    }
}
