//! The application layer: every operation of the control API as a
//! transport-independent function over domain types. Defaults, validation
//! that costs no Raft round, id generation and command building happen
//! here, once; the gRPC services (and any later front end, such as an
//! ECS-compatible HTTP API) are thin adapters that convert their wire
//! format and call these.

pub mod accounts;
pub mod activations;
pub mod clusters;
pub mod instances;
pub mod schedules;
pub mod services;
pub mod tags;
pub mod taskdefs;
pub mod tasks;

use berth_types::{CommandOutput, FieldError};

use crate::error::ServerError;
use crate::node::BerthNode;

#[derive(Clone)]
pub struct Ops {
    node: BerthNode,
}

impl Ops {
    pub fn new(node: BerthNode) -> Self {
        Self { node }
    }

    pub fn node(&self) -> &BerthNode {
        &self.node
    }
}

/// An empty cluster name on the wire means the default cluster.
fn cluster_or_default(cluster: &str) -> String {
    if cluster.is_empty() {
        berth_types::DEFAULT_CLUSTER.to_string()
    } else {
        cluster.to_string()
    }
}

fn invalid(field: &str, message: impl Into<String>) -> ServerError {
    ServerError::Invalid(FieldError::new(field, message).into())
}

fn unexpected(output: CommandOutput) -> ServerError {
    ServerError::Internal(format!("unexpected command output {output:?}"))
}

/// Attributes an operator sets (activations, `attribute put`, the ECS
/// API's PutAttributes and RegisterContainerInstance): at most
/// `MAX_ATTRIBUTES`, names and values well formed, none in the `agent.*`
/// space the agents report, capacity caps numbers.
pub fn check_operator_attributes(
    attributes: &std::collections::BTreeMap<String, String>,
) -> Result<(), ServerError> {
    use berth_types::{limits, validate};
    limits::check_count("attributes", attributes.len(), limits::MAX_ATTRIBUTES)?;
    for (i, (name, value)) in attributes.iter().enumerate() {
        validate::check_attribute(i, name, value).map_err(ServerError::from_field)?;
        validate::check_operator_attribute(i, name, value).map_err(ServerError::from_field)?;
    }
    Ok(())
}

/// A string a person gave, bounded (see `berth_types::limits`).
fn check_len(field: &str, value: &str, max: usize) -> Result<(), ServerError> {
    berth_types::limits::check_len(field, value, max).map_err(|e| ServerError::Invalid(e.into()))
}
