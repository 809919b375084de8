//! Berth's domain model: the records kept in the replicated state, the
//! commands that change them, and the pure, deterministic state machine that
//! applies those commands. Nothing here does I/O, so every rule can be tested
//! without a network, a disk or a runtime.

pub mod access;
pub mod cluster;
pub mod command;
pub mod duration;
pub mod error;
pub mod resources;
pub mod state;
pub mod task;
pub mod taskdef;
pub mod taskdef_file;
pub mod validate;

pub use access::{Activation, ApiToken, Instance, InstanceStatus, Registration, Role};
pub use cluster::{Cluster, ClusterSettings, ClusterStatus, DEFAULT_CLUSTER};
pub use command::{Command, CommandOutput};
pub use error::{FieldError, StateError, ValidationErrors};
pub use state::{Record, RecordKey, State};
pub use taskdef::*;

#[cfg(test)]
mod access_tests;
