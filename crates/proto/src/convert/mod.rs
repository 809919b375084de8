//! Wire <-> domain conversions, one file per area of the API; the only
//! place a wire message is made from a domain type or read into one.
//! Converting from the wire is fallible: enum fields travel as strings, and
//! a bad one is reported as a `FieldError` naming the field, like any other
//! validation problem.

mod clusters;
mod taskdefs;
mod tasks;

pub use tasks::overrides_to_wire;
