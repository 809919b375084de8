//! berth-agent: runs Berth tasks on an instance. This crate holds the
//! container runtime (the `Runtime` trait and its containerd
//! implementation: images, containers, logs, stats, exec, health checks),
//! bridge- and task-mode task networking through CNI (`tasknet`),
//! the task runner that drives it (`runner`, with its local `store`), and
//! the session with the control plane (`session`).

pub mod containerd;
pub mod error;
pub mod exporter;
pub mod health;
pub mod host;
pub mod hostpath;
pub mod hostports;
pub mod logs;
pub mod metrics;
pub mod ocibuild;
pub mod reference;
pub mod registry;
pub mod rootfs;
pub mod runner;
pub mod runtime;
pub mod seccomp;
pub mod secrets;
pub mod session;
pub mod spec;
pub mod store;
pub mod taskcgroup;
pub mod tasknet;

pub use containerd::{ContainerdConfig, ContainerdRuntime, LogDriver};
pub use error::RuntimeError;
pub use runtime::*;

/// This host's architecture in OCI terms (`amd64`, `arm64`).
pub fn host_arch() -> String {
    containerd::host_platform().1
}

pub(crate) fn containerd_sha256(data: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}
