//! Berth's domain model: the records kept in the replicated state, the
//! commands that change them, and the pure, deterministic state machine that
//! applies those commands. Nothing here does I/O, so every rule can be tested
//! without a network, a disk or a runtime.

pub mod access;
pub mod cluster;
pub mod command;
pub mod duration;
pub mod endpoints;
pub mod error;
pub mod event;
pub mod journal;
pub mod limits;
pub mod monitoring;
pub mod request;
pub mod resources;
pub mod schedule;
pub mod scheduled;
pub mod secrets;
pub mod service;
pub mod state;
pub mod tags;
pub mod task;
pub mod taskdef;
pub mod time;
pub mod validate;
pub mod view;

pub use access::{
    aws_key_seal_name, Activation, ApiToken, Instance, InstanceState, InstanceStatus, Registration,
    ResealedKey, RevokedCertificate, Role, SealedKey,
};
pub use cluster::{Cluster, ClusterSettings, ClusterStatus, DEFAULT_CLUSTER};
pub use command::{
    Command, CommandOutput, FireSchedule, RunTasks, ServiceProgress, ServiceTaskStop,
    StartServiceTasks, StopCause, TaskPlacement, TaskReport, COMMAND_LEVEL,
};
pub use error::{error_chain, FieldError, StateError, ValidationErrors};
pub use event::StateEvent;
pub use request::{
    AgentPing, IssuedCertificate, LogChunk, LogOptions, OutputStream, RegisterInstanceInput,
    RegisteredInstance, RunTaskInput, StartTaskInput, TaskFilter, TaskLaunch,
};
pub use service::{
    CircuitBreaker, Deployment, DeploymentConfiguration, DeploymentStatus, RolloutState,
    SchedulingStrategy, Service, ServiceEvent, ServiceSpec, ServiceStatus, ServiceUpdate,
};
pub use state::{ClientTokenRecord, HealthJudge, State, CLIENT_TOKEN_TTL_MS, MAX_TASKS_PER_RUN};
pub use tags::TagTarget;
pub use task::{
    ContainerState, ContainerStatus, DesiredStatus, Health, StopCode, Task, TaskStatus,
};
pub use taskdef::*;
pub use view::{
    ActivationStatus, ActivationView, ApiTokenStatus, ApiTokenView, ControlPlaneStatus,
    InstanceView, ServerMember, ServerRole, TaskDefinitionFamily, TokenFormat,
};

#[cfg(test)]
mod access_tests;
#[cfg(test)]
mod service_tests;
#[cfg(test)]
mod task_tests;
