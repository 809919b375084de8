//! Plumbing shared by the two daemons, `berthd` and `berth-agent`:
//! configuration files (flags > `BERTH_*` environment > file), log output
//! as text or JSON, and a plain-HTTP health endpoint that compose and
//! systemd can probe, with a client for images that have no curl; and the
//! syncs that make their sled databases durable after a flush.

pub mod config;
pub mod durable;
pub mod health;
pub mod logging;

pub use config::{apply_config_file, ConfigError};
pub use durable::{panic_message, write_file, DurableError, SledFiles};
pub use health::{probe, serve_health, HealthState, MetricsRenderer};
pub use logging::{init_logging, LogFormat};
