//! ECS's JSON and YAML shapes and their conversion to Berth's domain types
//! (`berth-types`): task definition files as `aws ecs
//! register-task-definition --cli-input-json` takes them ([`taskdef`]) and
//! service files as `aws ecs create-service --cli-input-json` takes them
//! ([`service`]), read leniently so that every problem is reported at once
//! with its field path and ECS fields Berth does not use are listed. Keeping
//! them in one crate means a field is spelled, defaulted and validated in one
//! place, for every reader of ECS's formats. For the ECS-compatible API
//! (issue #15, being built) it also holds ARNs ([`arn`]), ECS's error
//! answers ([`error`]), its pagination and time formats ([`page`]) and
//! the shapes of its cluster operations ([`clusters`]), of a registered
//! task definition ([`taskdefs`]), of a task ([`tasks`]), of a service
//! ([`services`]) and of a container instance ([`instances`]), and
//! RunTask/StartTask requests read into Berth's inputs ([`run_task`]),
//! tag operations and the resource an ARN names for them ([`tags`]) and
//! account settings with the names and values ECS allows
//! ([`account_settings`]).

pub mod account_settings;
pub mod arn;
pub mod clusters;
pub mod deployments;
pub mod error;
pub mod instances;
pub mod page;
pub mod run_task;
pub mod service;
pub mod services;
pub mod tags;
pub mod taskdef;
pub mod taskdefs;
pub mod tasks;

#[cfg(test)]
mod secrets_tests;
