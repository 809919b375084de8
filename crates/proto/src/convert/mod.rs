//! Wire <-> domain conversions, one file per area of the API; the only
//! place a wire message is made from a domain type or read into one, for
//! the server, the client and the agent alike.
//!
//! Converting from the wire is fallible: enum fields travel as strings, and
//! a bad one is reported as a `FieldError` naming the field (in the API's
//! camelCase), like any other validation problem. Empty strings on the wire
//! mean "not set".

mod attributes;
mod clusters;
mod control_plane;
mod identity;
mod journal;
mod schedules;
mod services;
mod taskdefs;
mod tasks;

pub use attributes::{attributes_from_wire, attributes_to_wire, checked_attributes_from_wire};
pub use tasks::{overrides_from_wire, overrides_to_wire, task_logs_request};

use berth_types::FieldError;

/// A wire string that must name a value of an enum; `expected` lists the
/// names for the message.
fn wire_enum<T>(
    field: &str,
    value: &str,
    parse: impl FnOnce(&str) -> Option<T>,
    expected: &str,
) -> Result<T, FieldError> {
    parse(value).ok_or_else(|| FieldError::new(field, format!("{value:?} is not {expected}")))
}

/// An empty wire string means "not set".
fn non_empty(text: String) -> Option<String> {
    Some(text).filter(|t| !t.is_empty())
}
