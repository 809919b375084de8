//! berth-lb: a small process beside a real HAProxy that keeps HAProxy's
//! backends equal to Berth services' endpoints.
//!
//! - [`config`]: the TOML file and its validation.
//! - [`plan`]: the pure core: which endpoints a load balancer takes (by
//!   the service's load balancer name, or its container port), which slot
//!   (HAProxy server) holds each, with what weight and drain state, and the
//!   runtime API commands that get there.
//! - [`haproxy`]: the generated HAProxy config, the HAProxy process
//!   (master-worker, reloaded through its master CLI) and the runtime API
//!   client (the admin-level `stats socket`).

pub mod config;
pub mod haproxy;
pub mod plan;

use std::path::PathBuf;

/// Everything berth-lb's library parts can fail with.
#[derive(Debug, thiserror::Error)]
pub enum LbError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The TOML itself does not parse (or has unknown keys).
    #[error("{path}:{line}: {message}")]
    ConfigSyntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// A setting has a value berth-lb cannot use; `field` names it the way
    /// the file does (`load_balancer[1].container_port`).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("cannot start haproxy ({binary}): {source}")]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("haproxy rejects the generated config {path}: {output}")]
    HaproxyConfig { path: PathBuf, output: String },
    #[error("haproxy exited: {0}")]
    HaproxyExited(String),
    #[error("haproxy's runtime API socket {path} did not answer within {waited_secs} s")]
    NotReady { path: PathBuf, waited_secs: u64 },
    #[error("haproxy socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    /// HAProxy answered a command with something other than success.
    #[error("haproxy refused `{command}`: {answer}")]
    Command { command: String, answer: String },
}
