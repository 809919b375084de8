//! The one error type of the runtime. Each variant says what a person can do
//! about it; the containerd and registry details stay in the message.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "containerd is not reachable at {socket}: {reason}. Start it (e.g. `systemctl start containerd`, \
         or `containerd --address {socket}`) or point the agent at the right socket"
    )]
    ContainerdUnreachable { socket: PathBuf, reason: String },

    #[error(
        "the log driver {path} is missing: berth-logd ships with berth-agent and must sit in the \
         same directory (install both binaries, e.g. with install-agent.sh, or build it with \
         `cargo build -p berth-logd`)"
    )]
    LogDriverMissing { path: PathBuf },

    #[error("image {reference} not found: {reason}")]
    ImageNotFound { reference: String, reason: String },

    #[error("registry {registry} is unreachable while fetching {reference}: {reason}")]
    RegistryUnreachable {
        registry: String,
        reference: String,
        reason: String,
    },

    #[error("registry {registry} refused credentials for {reference}: {reason}")]
    RegistryAuth {
        registry: String,
        reference: String,
        reason: String,
    },

    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },

    #[error("image {reference} has no variant for platform {wanted}; it offers: {available}")]
    PlatformMismatch {
        reference: String,
        wanted: String,
        available: String,
    },

    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },

    #[error("image {reference} is malformed: {reason}")]
    InvalidImage { reference: String, reason: String },

    #[error("cannot import {path}: {reason}")]
    Import { path: PathBuf, reason: String },

    #[error("container {id} not found")]
    ContainerNotFound { id: String },

    #[error("container {id} still runs; only an exited container can be restarted")]
    StillRunning { id: String },

    #[error("volume {volume:?}: host.sourcePath {path:?} is refused: {reason}")]
    HostPathRefused {
        volume: String,
        path: String,
        reason: String,
    },

    #[error("invalid container configuration for {container}: {reason}")]
    InvalidConfig { container: String, reason: String },

    // The status's own Display dumps metadata; people need code and message.
    #[error("containerd {op} failed ({:?}): {}", status.code(), status.message())]
    Containerd {
        op: &'static str,
        #[source]
        status: tonic::Status,
    },

    #[error("registry error for {reference}: {reason}")]
    Registry { reference: String, reason: String },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// A bridge-mode task's network namespace or CNI plugins failed.
    #[error("network of task {task_id}: {reason}")]
    TaskNetwork { task_id: String, reason: String },

    #[error("timed out after {after:?} while {what}")]
    Timeout {
        what: String,
        after: std::time::Duration,
    },
}

impl RuntimeError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        RuntimeError::Io {
            context: context.into(),
            source,
        }
    }

    /// A failed containerd call; counted in the agent's metrics by call.
    pub(crate) fn containerd(op: &'static str, status: tonic::Status) -> Self {
        crate::exporter::metrics().containerd_error(op);
        RuntimeError::Containerd { op, status }
    }
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
