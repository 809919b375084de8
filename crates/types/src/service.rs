//! Services: keep N copies of a task definition running (REPLICA) or one on
//! every instance that qualifies (DAEMON), and roll them from one task
//! definition to the next through deployments, the way ECS does.
//!
//! The arithmetic that bounds a rollout lives here so the controller that
//! decides and the state machine that re-checks use exactly the same rules.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{FieldError, ValidationErrors};
use crate::task::{DesiredStatus, Health, Task, TaskStatus};
use crate::taskdef::TaskDefinition;

/// ECS's limit on a service's desired count.
pub const MAX_DESIRED_COUNT: u32 = 5000;
/// Events kept per service (ECS shows the latest 100).
pub const MAX_EVENTS: usize = 100;
/// Finished deployments kept per service for `berth service deployments`.
pub const MAX_FINISHED_DEPLOYMENTS: usize = 20;
/// A deployment that has not completed after this long is FAILED.
pub const DEFAULT_DEPLOYMENT_TIMEOUT_SECS: u64 = 30 * 60;
/// Service tasks are in group `service:NAME`, as in ECS; RunTask may not use
/// the prefix, so a service's tasks are exactly its group.
pub const SERVICE_GROUP_PREFIX: &str = "service:";
/// Prefix of deployment ids, which service tasks carry as `startedBy`.
pub const DEPLOYMENT_ID_PREFIX: &str = "ecs-svc/";

/// Failures in a row that launch again at once; the next ones back off.
pub const THROTTLE_FREE_FAILURES: u32 = 2;
/// The first backoff; each further failure doubles it.
pub const THROTTLE_BASE_MS: i64 = 10_000;
/// ECS caps the backoff at 15 minutes.
pub const THROTTLE_MAX_MS: i64 = 15 * 60 * 1000;
/// A task that ran at least this long had started successfully: its failure
/// starts a new count.
pub const THROTTLE_RESET_RUN_MS: i64 = 60_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SchedulingStrategy {
    #[default]
    Replica,
    Daemon,
}

impl SchedulingStrategy {
    pub fn as_str(self) -> &'static str {
        match self {
            SchedulingStrategy::Replica => "REPLICA",
            SchedulingStrategy::Daemon => "DAEMON",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value.to_ascii_uppercase().as_str() {
            "REPLICA" => Some(Self::Replica),
            "DAEMON" => Some(Self::Daemon),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServiceStatus {
    Active,
    /// Deleted; its tasks are stopping.
    Draining,
    /// Deleted and every task stopped.
    Inactive,
}

impl ServiceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceStatus::Active => "ACTIVE",
            ServiceStatus::Draining => "DRAINING",
            ServiceStatus::Inactive => "INACTIVE",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value.to_ascii_uppercase().as_str() {
            "ACTIVE" => Some(Self::Active),
            "DRAINING" => Some(Self::Draining),
            "INACTIVE" => Some(Self::Inactive),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeploymentStatus {
    /// The deployment the service is moving to.
    Primary,
    /// An earlier deployment whose tasks are being replaced.
    Active,
    /// Finished: no tasks left.
    Inactive,
}

impl DeploymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentStatus::Primary => "PRIMARY",
            DeploymentStatus::Active => "ACTIVE",
            DeploymentStatus::Inactive => "INACTIVE",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value.to_ascii_uppercase().as_str() {
            "PRIMARY" => Some(Self::Primary),
            "ACTIVE" => Some(Self::Active),
            "INACTIVE" => Some(Self::Inactive),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RolloutState {
    InProgress,
    Completed,
    Failed,
}

impl RolloutState {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::InProgress => "IN_PROGRESS",
            RolloutState::Completed => "COMPLETED",
            RolloutState::Failed => "FAILED",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value.to_ascii_uppercase().as_str() {
            "IN_PROGRESS" => Some(Self::InProgress),
            "COMPLETED" => Some(Self::Completed),
            "FAILED" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// ECS's deployment circuit breaker, with a threshold that may be set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CircuitBreaker {
    pub enable: bool,
    pub rollback: bool,
    /// Failed tasks that fail a deployment; None: ECS's rule (half the
    /// desired count, at least 10, at most 200).
    pub threshold: Option<u32>,
}

impl CircuitBreaker {
    pub fn threshold_for(&self, desired_count: u32) -> u32 {
        self.threshold
            .unwrap_or_else(|| desired_count.div_ceil(2).clamp(10, 200))
    }
}

/// How a new deployment takes over from the one before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DeploymentController {
    /// ECS's rolling update, within minimumHealthyPercent and
    /// maximumPercent.
    #[default]
    Rolling,
    /// The new deployment's tasks start beside the old ones; once all are
    /// healthy, the load balancers' traffic moves to them as `traffic` says;
    /// the old tasks stay up for `bake_time_secs` after the last step, then
    /// stop. A failing new task or `berth service rollback` before then
    /// moves all traffic back.
    BlueGreen(BlueGreen),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlueGreen {
    pub traffic: TrafficShift,
    pub bake_time_secs: u32,
}

/// CodeDeploy's traffic-shifting configurations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TrafficShift {
    AllAtOnce,
    /// `percent` first, the rest `interval_secs` later.
    Canary {
        percent: u32,
        interval_secs: u32,
    },
    /// `percent` more every `interval_secs`.
    Linear {
        percent: u32,
        interval_secs: u32,
    },
}

impl TrafficShift {
    /// The share of traffic after `current` (what the new deployment has
    /// now), or `None` once it has everything.
    pub fn next_percent(&self, current: u32) -> Option<u32> {
        if current >= 100 {
            return None;
        }
        Some(match *self {
            TrafficShift::AllAtOnce => 100,
            TrafficShift::Canary { percent, .. } => {
                if current == 0 {
                    percent.min(100)
                } else {
                    100
                }
            }
            TrafficShift::Linear { percent, .. } => current.saturating_add(percent).min(100),
        })
    }

    /// How long a step holds before the next one.
    pub fn interval_ms(&self) -> i64 {
        match *self {
            TrafficShift::AllAtOnce => 0,
            TrafficShift::Canary { interval_secs, .. }
            | TrafficShift::Linear { interval_secs, .. } => i64::from(interval_secs) * 1000,
        }
    }

    /// `ALL_AT_ONCE`, `CANARY 10% then the rest after 60s`, ...
    pub fn describe(&self) -> String {
        match *self {
            TrafficShift::AllAtOnce => "all at once".to_string(),
            TrafficShift::Canary {
                percent,
                interval_secs,
            } => format!("canary {percent}%, the rest after {interval_secs}s"),
            TrafficShift::Linear {
                percent,
                interval_secs,
            } => format!("linear {percent}% every {interval_secs}s"),
        }
    }
}

/// A load balancer a service's tasks are registered with: ECS's
/// `loadBalancers` entry, with the name of a Berth load balancer (what
/// `berth-lb` serves) where ECS has a target group ARN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancer {
    pub name: String,
    pub container_name: String,
    pub container_port: u32,
    /// How long a task that is to stop stays drained in the load balancer
    /// (DEACTIVATING) before it is told to stop.
    pub deregistration_delay_secs: u32,
}

/// ELB's default deregistration delay is 300 s; Berth's is shorter because
/// its HAProxy drains within the same host network.
pub const DEFAULT_DEREGISTRATION_DELAY_SECS: u32 = 10;
pub const MAX_DEREGISTRATION_DELAY_SECS: u32 = 3600;
/// Load balancers per service (ECS's limit).
pub const MAX_LOAD_BALANCERS: usize = 5;
/// Bounds of a blue/green step interval and bake time.
pub const MAX_TRAFFIC_INTERVAL_SECS: u32 = 24 * 3600;
pub const MAX_BAKE_TIME_SECS: u32 = 2 * 24 * 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentConfiguration {
    /// Healthy tasks never drop below this share of the desired count
    /// (rounded up).
    pub minimum_healthy_percent: u32,
    /// Tasks that are not yet STOPPED never exceed this share of the desired
    /// count (rounded down).
    pub maximum_percent: u32,
    pub circuit_breaker: CircuitBreaker,
    /// A deployment not COMPLETED after this long is FAILED.
    pub timeout_secs: u64,
    pub controller: DeploymentController,
}

impl DeploymentConfiguration {
    /// ECS's defaults: 100/200 for REPLICA, 0/100 for DAEMON.
    pub fn defaults_for(strategy: SchedulingStrategy) -> Self {
        let (minimum_healthy_percent, maximum_percent) = match strategy {
            SchedulingStrategy::Replica => (100, 200),
            SchedulingStrategy::Daemon => (0, 100),
        };
        Self {
            minimum_healthy_percent,
            maximum_percent,
            circuit_breaker: CircuitBreaker::default(),
            timeout_secs: DEFAULT_DEPLOYMENT_TIMEOUT_SECS,
            controller: DeploymentController::Rolling,
        }
    }

    /// Healthy tasks the service must keep: the minimum rounded up.
    pub fn min_healthy(&self, desired_count: u32) -> u32 {
        (u64::from(desired_count) * u64::from(self.minimum_healthy_percent))
            .div_ceil(100)
            .try_into()
            .unwrap_or(u32::MAX)
    }

    /// Tasks the service may have that are not STOPPED: the maximum rounded
    /// down; for blue/green, a full set of each of two deployments.
    pub fn max_alive(&self, desired_count: u32) -> u32 {
        let percent = match self.controller {
            DeploymentController::Rolling => u64::from(self.maximum_percent),
            DeploymentController::BlueGreen(_) => 200,
        };
        (u64::from(desired_count) * percent / 100)
            .try_into()
            .unwrap_or(u32::MAX)
    }

    pub fn blue_green(&self) -> Option<&BlueGreen> {
        match &self.controller {
            DeploymentController::BlueGreen(b) => Some(b),
            DeploymentController::Rolling => None,
        }
    }
}

/// What CreateService asks for, defaults already filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    pub cluster: String,
    pub name: String,
    /// `FAMILY` (its latest ACTIVE revision) or `FAMILY:REVISION`.
    pub task_definition: String,
    pub desired_count: u32,
    pub scheduling_strategy: SchedulingStrategy,
    pub placement_strategies: Vec<String>,
    pub placement_constraints: Vec<String>,
    pub deployment_configuration: DeploymentConfiguration,
    pub health_check_grace_period_secs: u32,
    pub tags: BTreeMap<String, String>,
    pub load_balancers: Vec<LoadBalancer>,
}

/// What UpdateService changes; None leaves a setting as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceUpdate {
    pub task_definition: Option<String>,
    pub desired_count: Option<u32>,
    pub deployment_configuration: Option<DeploymentConfiguration>,
    pub placement_strategies: Option<Vec<String>>,
    pub placement_constraints: Option<Vec<String>>,
    pub health_check_grace_period_secs: Option<u32>,
    pub force_new_deployment: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    /// `ecs-svc/...`; the service's tasks carry it as `startedBy`.
    pub id: String,
    pub status: DeploymentStatus,
    /// `family:revision`.
    pub task_definition: String,
    pub desired_count: u32,
    pub rollout_state: RolloutState,
    pub rollout_state_reason: String,
    /// Tasks of this deployment that failed to start, exited, or failed
    /// their health checks (what the circuit breaker counts).
    pub failed_tasks: u32,
    /// The failed deployment this one rolls back.
    pub rollback_of: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// Blue/green: the share of the load balancers' traffic this
    /// deployment's tasks get (the other current deployment has the rest).
    pub traffic_percent: u32,
    /// When `traffic_percent` last changed.
    pub traffic_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEvent {
    pub id: u64,
    pub created_at_ms: i64,
    pub message: String,
}

/// Backoff of a service whose tasks keep failing (ECS's throttle logic).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Throttle {
    /// Failures in a row (those during a backoff are not counted).
    pub failures: u32,
    /// No task is launched before this time.
    pub until_ms: i64,
    pub last_failure_ms: i64,
}

impl Throttle {
    /// The backoff after `failures` failures in a row.
    pub fn delay_ms(failures: u32) -> i64 {
        if failures <= THROTTLE_FREE_FAILURES {
            return 0;
        }
        let doublings = (failures - THROTTLE_FREE_FAILURES - 1).min(20);
        THROTTLE_BASE_MS
            .saturating_mul(1 << doublings)
            .min(THROTTLE_MAX_MS)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    pub cluster: String,
    pub name: String,
    pub status: ServiceStatus,
    /// The PRIMARY deployment's task definition, `family:revision`.
    pub task_definition: String,
    /// For DAEMON, the number of instances that should run its task (the
    /// controller keeps it current).
    pub desired_count: u32,
    pub scheduling_strategy: SchedulingStrategy,
    pub placement_strategies: Vec<String>,
    pub placement_constraints: Vec<String>,
    pub deployment_configuration: DeploymentConfiguration,
    pub health_check_grace_period_secs: u32,
    pub tags: BTreeMap<String, String>,
    pub load_balancers: Vec<LoadBalancer>,
    /// The PRIMARY deployment first, then ACTIVE ones, newest first.
    pub deployments: Vec<Deployment>,
    /// INACTIVE deployments, newest first (bounded).
    pub finished_deployments: Vec<Deployment>,
    /// Newest first, at most `MAX_EVENTS`.
    pub events: Vec<ServiceEvent>,
    pub next_event_id: u64,
    pub throttle: Throttle,
    /// Whether "has reached a steady state" was said since the last change.
    pub steady: bool,
    /// The task definition of the last deployment that COMPLETED: where a
    /// failed deployment rolls back to.
    pub stable_task_definition: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl Service {
    pub fn group(&self) -> String {
        format!("{SERVICE_GROUP_PREFIX}{}", self.name)
    }

    pub fn primary(&self) -> Option<&Deployment> {
        self.deployments.first()
    }

    /// The desired count the rollout bounds apply to (0 once deleted).
    pub fn effective_desired_count(&self) -> u32 {
        match self.status {
            ServiceStatus::Active => self.desired_count,
            ServiceStatus::Draining | ServiceStatus::Inactive => 0,
        }
    }

    /// How long a task of this service stays DEACTIVATING before it is
    /// stopped: the longest deregistration delay of its load balancers (0:
    /// it has none, and stops at once).
    pub fn deregistration_delay_ms(&self) -> i64 {
        self.load_balancers
            .iter()
            .map(|lb| i64::from(lb.deregistration_delay_secs) * 1000)
            .max()
            .unwrap_or(0)
    }

    /// Every deployment, current ones first.
    pub fn all_deployments(&self) -> impl Iterator<Item = &Deployment> {
        self.deployments
            .iter()
            .chain(self.finished_deployments.iter())
    }
}

/// Tags per service at most (ECS's limit).
pub const MAX_TAGS: usize = 50;
/// Bounds of `maximumPercent` and of the deployment deadline.
pub const MAX_MAXIMUM_PERCENT: u32 = 1000;
pub const MIN_DEPLOYMENT_TIMEOUT_SECS: u64 = 10;
pub const MAX_DEPLOYMENT_TIMEOUT_SECS: u64 = 7 * 24 * 3600;
/// The longest health check grace period (ECS allows about 68 years; a
/// week is already more than any service needs).
pub const MAX_GRACE_PERIOD_SECS: u32 = 7 * 24 * 3600;

/// Checks a service's settings, reporting every problem at once, each with
/// the field it concerns and what to change. Placement expressions are
/// parsed by the API (the scheduler owns their grammar).
pub fn validate_spec(spec: &ServiceSpec) -> Result<(), ValidationErrors> {
    let mut errors = Vec::new();
    let mut bad = |field: &str, message: String| errors.push(FieldError::new(field, message));
    if let Err(e) = crate::validate::check_name("serviceName", &spec.name) {
        bad(&e.field, e.message);
    }
    if spec.task_definition.trim().is_empty() {
        bad(
            "taskDefinition",
            "required: FAMILY or FAMILY:REVISION, e.g. web or web:3".into(),
        );
    }
    let config = &spec.deployment_configuration;
    match spec.scheduling_strategy {
        SchedulingStrategy::Replica => {
            if spec.desired_count > MAX_DESIRED_COUNT {
                bad(
                    "desiredCount",
                    format!(
                        "{} is above the limit of {MAX_DESIRED_COUNT} tasks per service; split it into several services",
                        spec.desired_count
                    ),
                );
            }
        }
        SchedulingStrategy::Daemon => {
            if spec.desired_count > 0 {
                bad(
                    "desiredCount",
                    "a DAEMON service runs one task on every instance that qualifies; leave desiredCount out".into(),
                );
            }
            if !spec.placement_strategies.is_empty() {
                bad(
                    "placementStrategy",
                    "a DAEMON service places one task per instance; it takes placement constraints, not strategies".into(),
                );
            }
        }
    }
    if config.maximum_percent < 100 {
        bad(
            "deploymentConfiguration.maximumPercent",
            format!(
                "{} is below 100; use at least 100 (200 lets a rollout start every new task before stopping old ones)",
                config.maximum_percent
            ),
        );
    } else if config.maximum_percent > MAX_MAXIMUM_PERCENT {
        bad(
            "deploymentConfiguration.maximumPercent",
            format!("{} is above {MAX_MAXIMUM_PERCENT}", config.maximum_percent),
        );
    }
    if config.minimum_healthy_percent > 100 {
        bad(
            "deploymentConfiguration.minimumHealthyPercent",
            format!("{} is above 100", config.minimum_healthy_percent),
        );
    } else if config.minimum_healthy_percent >= config.maximum_percent {
        bad(
            "deploymentConfiguration.minimumHealthyPercent",
            format!(
                "{} must be below maximumPercent ({}), or no rollout can replace a task",
                config.minimum_healthy_percent, config.maximum_percent
            ),
        );
    }
    let breaker = &config.circuit_breaker;
    if breaker.rollback && !breaker.enable {
        bad(
            "deploymentConfiguration.deploymentCircuitBreaker.rollback",
            "rollback needs the circuit breaker: set enable as well".into(),
        );
    }
    if let Some(threshold) = breaker.threshold {
        if threshold == 0 || threshold > MAX_DESIRED_COUNT {
            bad(
                "deploymentConfiguration.deploymentCircuitBreaker.threshold",
                format!("{threshold} is not between 1 and {MAX_DESIRED_COUNT} failed tasks"),
            );
        }
    }
    if !(MIN_DEPLOYMENT_TIMEOUT_SECS..=MAX_DEPLOYMENT_TIMEOUT_SECS).contains(&config.timeout_secs) {
        bad(
            "deploymentConfiguration.deploymentTimeout",
            format!(
                "{}s is not between {MIN_DEPLOYMENT_TIMEOUT_SECS}s and 7 days",
                config.timeout_secs
            ),
        );
    }
    if let Some(blue_green) = config.blue_green() {
        let field = "deploymentController";
        if spec.scheduling_strategy == SchedulingStrategy::Daemon {
            bad(
                field,
                "a DAEMON service runs one task per instance, so it cannot run two deployments side by side; use the rolling controller".into(),
            );
        }
        if spec.load_balancers.is_empty() {
            bad(
                field,
                "blue/green moves load balancer traffic between deployments; declare loadBalancers too, or use the rolling controller".into(),
            );
        }
        match blue_green.traffic {
            TrafficShift::AllAtOnce => {}
            TrafficShift::Canary {
                percent,
                interval_secs,
            }
            | TrafficShift::Linear {
                percent,
                interval_secs,
            } => {
                if !(1..=99).contains(&percent) {
                    bad(
                        "deploymentController.trafficShift.percent",
                        format!("{percent} is not between 1 and 99; for 100 use ALL_AT_ONCE"),
                    );
                }
                if !(1..=MAX_TRAFFIC_INTERVAL_SECS).contains(&interval_secs) {
                    bad(
                        "deploymentController.trafficShift.intervalSeconds",
                        format!("{interval_secs} is not between 1 and {MAX_TRAFFIC_INTERVAL_SECS} seconds"),
                    );
                }
            }
        }
        if blue_green.bake_time_secs > MAX_BAKE_TIME_SECS {
            bad(
                "deploymentController.bakeTimeSeconds",
                format!(
                    "{} is above {MAX_BAKE_TIME_SECS} seconds (2 days)",
                    blue_green.bake_time_secs
                ),
            );
        }
    }
    if spec.load_balancers.len() > MAX_LOAD_BALANCERS {
        bad(
            "loadBalancers",
            format!(
                "{} load balancers; at most {MAX_LOAD_BALANCERS}",
                spec.load_balancers.len()
            ),
        );
    }
    let mut lb_names = std::collections::BTreeSet::new();
    for (i, lb) in spec.load_balancers.iter().enumerate() {
        let at = |f: &str| format!("loadBalancers[{i}].{f}");
        if let Err(e) = crate::validate::check_name(&at("name"), &lb.name) {
            bad(&e.field, e.message);
        } else if !lb_names.insert(lb.name.as_str()) {
            bad(
                &at("name"),
                format!(
                    "{:?} is listed twice; name each load balancer once",
                    lb.name
                ),
            );
        }
        if lb.container_name.trim().is_empty() {
            bad(
                &at("containerName"),
                "required: the container whose port the load balancer sends traffic to".into(),
            );
        }
        if !(1..=65535).contains(&lb.container_port) {
            bad(
                &at("containerPort"),
                format!("{} is not a port (1-65535)", lb.container_port),
            );
        }
        if lb.deregistration_delay_secs > MAX_DEREGISTRATION_DELAY_SECS {
            bad(
                &at("deregistrationDelaySeconds"),
                format!(
                    "{} is above {MAX_DEREGISTRATION_DELAY_SECS} seconds",
                    lb.deregistration_delay_secs
                ),
            );
        }
    }
    if spec.health_check_grace_period_secs > MAX_GRACE_PERIOD_SECS {
        bad(
            "healthCheckGracePeriodSeconds",
            format!("{} is above a week", spec.health_check_grace_period_secs),
        );
    }
    if spec.tags.len() > MAX_TAGS {
        bad(
            "tags",
            format!("{} tags; at most {MAX_TAGS}", spec.tags.len()),
        );
    }
    for (k, v) in &spec.tags {
        if k.is_empty() || k.len() > 128 {
            bad("tags", format!("key {k:?} must have 1 to 128 characters"));
        }
        if v.len() > 256 {
            bad(
                "tags",
                format!("the value of {k:?} has more than 256 characters"),
            );
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(errors))
    }
}

/// Deployment settings as a request gives them: what is left out keeps its
/// current value (UpdateService) or its default (CreateService).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentConfigurationInput {
    pub minimum_healthy_percent: Option<u32>,
    pub maximum_percent: Option<u32>,
    pub circuit_breaker: Option<CircuitBreaker>,
    pub timeout_secs: Option<u64>,
    pub controller: Option<DeploymentController>,
}

impl DeploymentConfigurationInput {
    /// These settings over `base`.
    pub fn over(&self, base: DeploymentConfiguration) -> DeploymentConfiguration {
        DeploymentConfiguration {
            minimum_healthy_percent: self
                .minimum_healthy_percent
                .unwrap_or(base.minimum_healthy_percent),
            maximum_percent: self.maximum_percent.unwrap_or(base.maximum_percent),
            circuit_breaker: self.circuit_breaker.unwrap_or(base.circuit_breaker),
            timeout_secs: self.timeout_secs.unwrap_or(base.timeout_secs),
            controller: self.controller.unwrap_or(base.controller),
        }
    }
}

/// CreateService as every front end (gRPC, CLI files, the ECS API) gives it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateServiceInput {
    /// Empty: `default`.
    pub cluster: String,
    pub name: String,
    pub task_definition: String,
    /// None: 0 for DAEMON, 1 for REPLICA (as ECS).
    pub desired_count: Option<u32>,
    pub scheduling_strategy: SchedulingStrategy,
    pub placement_strategies: Vec<String>,
    pub placement_constraints: Vec<String>,
    pub deployment_configuration: DeploymentConfigurationInput,
    pub health_check_grace_period_secs: u32,
    pub tags: BTreeMap<String, String>,
    pub load_balancers: Vec<LoadBalancer>,
}

impl CreateServiceInput {
    /// The spec with ECS's defaults filled in.
    pub fn into_spec(self, default_cluster: &str) -> ServiceSpec {
        let strategy = self.scheduling_strategy;
        ServiceSpec {
            cluster: if self.cluster.is_empty() {
                default_cluster.to_string()
            } else {
                self.cluster
            },
            name: self.name,
            task_definition: self.task_definition,
            desired_count: self.desired_count.unwrap_or(match strategy {
                SchedulingStrategy::Replica => 1,
                SchedulingStrategy::Daemon => 0,
            }),
            scheduling_strategy: strategy,
            placement_strategies: self.placement_strategies,
            placement_constraints: self.placement_constraints,
            deployment_configuration: self
                .deployment_configuration
                .over(DeploymentConfiguration::defaults_for(strategy)),
            health_check_grace_period_secs: self.health_check_grace_period_secs,
            tags: self.tags,
            load_balancers: self.load_balancers,
        }
    }
}

/// UpdateService as every front end gives it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateServiceInput {
    pub cluster: String,
    pub name: String,
    pub task_definition: Option<String>,
    pub desired_count: Option<u32>,
    pub deployment_configuration: DeploymentConfigurationInput,
    pub placement_strategies: Option<Vec<String>>,
    pub placement_constraints: Option<Vec<String>>,
    pub health_check_grace_period_secs: Option<u32>,
    pub force_new_deployment: bool,
}

/// A deployment with its task counts, as DescribeServices shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentView {
    #[serde(flatten)]
    pub deployment: Deployment,
    #[serde(flatten)]
    pub counts: DeploymentCounts,
}

/// Why some of a service's tasks wait for a placement, and how many.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingReason {
    pub reason: String,
    pub tasks: u32,
}

/// A service with what DescribeServices adds to the record: its task counts
/// (in all and per deployment) and why tasks wait.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceDescription {
    pub service: Service,
    pub running_count: u32,
    pub pending_count: u32,
    pub healthy_count: u32,
    /// Current deployments (PRIMARY first), then finished ones.
    pub deployments: Vec<DeploymentView>,
    pub pending_reasons: Vec<PendingReason>,
}

/// The service a task belongs to, from its group.
pub fn service_name_of(task: &Task) -> Option<&str> {
    task.group.strip_prefix(SERVICE_GROUP_PREFIX)
}

/// A task's health as a service judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskHealth {
    /// RUNNING, and every essential container with a health check HEALTHY.
    Healthy,
    /// An essential container's health check says UNHEALTHY.
    Unhealthy,
    /// Not running yet, or checks have not decided.
    Unknown,
}

/// Judges a task by its essential containers' health checks: a task whose
/// essential containers have no health check is healthy once RUNNING.
pub fn task_health(task: &Task, definition: Option<&TaskDefinition>) -> TaskHealth {
    if task.last_status != TaskStatus::Running || task.desired_status != DesiredStatus::Running {
        return TaskHealth::Unknown;
    }
    let Some(definition) = definition else {
        return TaskHealth::Healthy;
    };
    let mut all_healthy = true;
    for container in &definition.spec.container_definitions {
        if !container.essential || container.health_check.is_none() {
            continue;
        }
        let health = task
            .containers
            .iter()
            .find(|c| c.name == container.name)
            .map_or(Health::Unknown, |c| c.health);
        match health {
            Health::Unhealthy => return TaskHealth::Unhealthy,
            Health::Healthy => {}
            Health::Unknown => all_healthy = false,
        }
    }
    if all_healthy {
        TaskHealth::Healthy
    } else {
        TaskHealth::Unknown
    }
}

/// The rollout counts of one deployment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentCounts {
    /// Not yet RUNNING (PROVISIONING or PENDING) and still wanted.
    pub pending: u32,
    /// RUNNING and still wanted.
    pub running: u32,
    pub healthy: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollout_bounds_round_as_ecs_does() {
        let config = |min, max| DeploymentConfiguration {
            minimum_healthy_percent: min,
            maximum_percent: max,
            ..DeploymentConfiguration::defaults_for(SchedulingStrategy::Replica)
        };
        // (min %, max %, desired, min healthy, max alive)
        for (min, max, desired, healthy, alive) in [
            (100, 200, 4, 4, 8),
            (50, 150, 4, 2, 6),
            (50, 150, 3, 2, 4),
            (50, 150, 1, 1, 1),
            (0, 100, 5, 0, 5),
            (75, 125, 10, 8, 12),
            (33, 133, 10, 4, 13),
            (100, 200, 0, 0, 0),
            (
                100,
                200,
                MAX_DESIRED_COUNT,
                MAX_DESIRED_COUNT,
                2 * MAX_DESIRED_COUNT,
            ),
        ] {
            let c = config(min, max);
            assert_eq!(c.min_healthy(desired), healthy, "min {min}% of {desired}");
            assert_eq!(c.max_alive(desired), alive, "max {max}% of {desired}");
        }
    }

    #[test]
    fn circuit_breaker_threshold_is_half_the_desired_count_within_10_and_200() {
        let ecs = CircuitBreaker {
            enable: true,
            rollback: true,
            threshold: None,
        };
        for (desired, threshold) in [
            (1, 10),
            (4, 10),
            (20, 10),
            (21, 11),
            (22, 11),
            (300, 150),
            (400, 200),
            (5000, 200),
        ] {
            assert_eq!(ecs.threshold_for(desired), threshold, "desired {desired}");
        }
        let set = CircuitBreaker {
            threshold: Some(3),
            ..ecs
        };
        assert_eq!(set.threshold_for(5000), 3);
    }

    #[test]
    fn throttle_backs_off_exponentially_up_to_15_minutes() {
        let delays: Vec<i64> = (0..=12).map(Throttle::delay_ms).collect();
        assert_eq!(
            delays,
            [
                0, 0, 0, 10_000, 20_000, 40_000, 80_000, 160_000, 320_000, 640_000, 900_000,
                900_000, 900_000
            ]
        );
        assert_eq!(Throttle::delay_ms(u32::MAX), THROTTLE_MAX_MS);
    }

    #[test]
    fn defaults_depend_on_the_strategy() {
        let replica = DeploymentConfiguration::defaults_for(SchedulingStrategy::Replica);
        assert_eq!(
            (replica.minimum_healthy_percent, replica.maximum_percent),
            (100, 200)
        );
        let daemon = DeploymentConfiguration::defaults_for(SchedulingStrategy::Daemon);
        assert_eq!(
            (daemon.minimum_healthy_percent, daemon.maximum_percent),
            (0, 100)
        );
        assert_eq!(replica.timeout_secs, 1800);
    }

    #[test]
    fn statuses_parse_what_they_print() {
        for s in [SchedulingStrategy::Replica, SchedulingStrategy::Daemon] {
            assert_eq!(SchedulingStrategy::parse(s.as_str()), Some(s));
        }
        for s in [
            ServiceStatus::Active,
            ServiceStatus::Draining,
            ServiceStatus::Inactive,
        ] {
            assert_eq!(ServiceStatus::parse(s.as_str()), Some(s));
        }
        for s in [
            DeploymentStatus::Primary,
            DeploymentStatus::Active,
            DeploymentStatus::Inactive,
        ] {
            assert_eq!(DeploymentStatus::parse(s.as_str()), Some(s));
        }
        for s in [
            RolloutState::InProgress,
            RolloutState::Completed,
            RolloutState::Failed,
        ] {
            assert_eq!(RolloutState::parse(s.as_str()), Some(s));
        }
        assert_eq!(
            SchedulingStrategy::parse("daemon"),
            Some(SchedulingStrategy::Daemon)
        );
        assert_eq!(SchedulingStrategy::parse("both"), None);
    }

    fn valid() -> ServiceSpec {
        ServiceSpec {
            load_balancers: Vec::new(),
            cluster: "default".into(),
            name: "web".into(),
            task_definition: "web:1".into(),
            desired_count: 1,
            scheduling_strategy: SchedulingStrategy::Replica,
            placement_strategies: vec![],
            placement_constraints: vec![],
            deployment_configuration: DeploymentConfiguration::defaults_for(
                SchedulingStrategy::Replica,
            ),
            health_check_grace_period_secs: 0,
            tags: BTreeMap::new(),
        }
    }

    /// The fields validate_spec refuses (empty when it accepts).
    fn refused(spec: &ServiceSpec) -> Vec<String> {
        match validate_spec(spec) {
            Ok(()) => vec![],
            Err(e) => e.fields().map(str::to_string).collect(),
        }
    }

    #[test]
    fn validation_accepts_every_limit_and_refuses_one_past_it() {
        type Edit = fn(&mut ServiceSpec);
        let percent = "deploymentConfiguration.maximumPercent";
        let minimum = "deploymentConfiguration.minimumHealthyPercent";
        let threshold = "deploymentConfiguration.deploymentCircuitBreaker.threshold";
        let timeout = "deploymentConfiguration.deploymentTimeout";
        let cases: &[(&str, Edit, &[&str])] = &[
            ("valid", |_| {}, &[]),
            (
                "blank task definition",
                |s| s.task_definition = " ".into(),
                &["taskDefinition"],
            ),
            ("5000 tasks", |s| s.desired_count = MAX_DESIRED_COUNT, &[]),
            (
                "5001 tasks",
                |s| s.desired_count = MAX_DESIRED_COUNT + 1,
                &["desiredCount"],
            ),
            (
                "maximumPercent 100",
                |s| {
                    s.deployment_configuration.maximum_percent = 100;
                    s.deployment_configuration.minimum_healthy_percent = 50;
                },
                &[],
            ),
            (
                "maximumPercent 99",
                |s| {
                    s.deployment_configuration.maximum_percent = 99;
                    s.deployment_configuration.minimum_healthy_percent = 50;
                },
                &[percent],
            ),
            (
                "maximumPercent 1000",
                |s| s.deployment_configuration.maximum_percent = 1000,
                &[],
            ),
            (
                "maximumPercent 1001",
                |s| s.deployment_configuration.maximum_percent = 1001,
                &[percent],
            ),
            (
                "minimumHealthyPercent 100 below 101",
                |s| {
                    s.deployment_configuration.minimum_healthy_percent = 100;
                    s.deployment_configuration.maximum_percent = 101;
                },
                &[],
            ),
            (
                "minimumHealthyPercent 101",
                |s| s.deployment_configuration.minimum_healthy_percent = 101,
                &[minimum],
            ),
            (
                "minimumHealthyPercent equal to maximumPercent",
                |s| {
                    s.deployment_configuration.minimum_healthy_percent = 100;
                    s.deployment_configuration.maximum_percent = 100;
                },
                &[minimum],
            ),
            (
                "threshold 1",
                |s| s.deployment_configuration.circuit_breaker.threshold = Some(1),
                &[],
            ),
            (
                "threshold 0",
                |s| s.deployment_configuration.circuit_breaker.threshold = Some(0),
                &[threshold],
            ),
            (
                "threshold 5000",
                |s| s.deployment_configuration.circuit_breaker.threshold = Some(MAX_DESIRED_COUNT),
                &[],
            ),
            (
                "threshold 5001",
                |s| {
                    s.deployment_configuration.circuit_breaker.threshold =
                        Some(MAX_DESIRED_COUNT + 1)
                },
                &[threshold],
            ),
            (
                "rollback with the breaker",
                |s| {
                    s.deployment_configuration.circuit_breaker.enable = true;
                    s.deployment_configuration.circuit_breaker.rollback = true;
                },
                &[],
            ),
            (
                "timeout 10 s",
                |s| s.deployment_configuration.timeout_secs = 10,
                &[],
            ),
            (
                "timeout 9 s",
                |s| s.deployment_configuration.timeout_secs = 9,
                &[timeout],
            ),
            (
                "timeout a week",
                |s| s.deployment_configuration.timeout_secs = 7 * 24 * 3600,
                &[],
            ),
            (
                "timeout a week and a second",
                |s| s.deployment_configuration.timeout_secs = 7 * 24 * 3600 + 1,
                &[timeout],
            ),
            (
                "grace a week",
                |s| s.health_check_grace_period_secs = 7 * 24 * 3600,
                &[],
            ),
            (
                "grace a week and a second",
                |s| s.health_check_grace_period_secs = 7 * 24 * 3600 + 1,
                &["healthCheckGracePeriodSeconds"],
            ),
            (
                "50 tags",
                |s| {
                    s.tags = (0..MAX_TAGS)
                        .map(|i| (format!("k{i}"), "v".into()))
                        .collect()
                },
                &[],
            ),
            (
                "51 tags",
                |s| {
                    s.tags = (0..=MAX_TAGS)
                        .map(|i| (format!("k{i}"), "v".into()))
                        .collect()
                },
                &["tags"],
            ),
            (
                "a 128-character key and a 256-character value",
                |s| s.tags = BTreeMap::from([("k".repeat(128), "v".repeat(256))]),
                &[],
            ),
            (
                "an empty key",
                |s| s.tags = BTreeMap::from([(String::new(), "v".into())]),
                &["tags"],
            ),
            (
                "a 129-character key",
                |s| s.tags = BTreeMap::from([("k".repeat(129), "v".into())]),
                &["tags"],
            ),
            (
                "a 257-character value",
                |s| s.tags = BTreeMap::from([("k".into(), "v".repeat(257))]),
                &["tags"],
            ),
            (
                "a daemon without count or strategies",
                |s| {
                    s.scheduling_strategy = SchedulingStrategy::Daemon;
                    s.desired_count = 0;
                },
                &[],
            ),
            (
                "a daemon with a strategy",
                |s| {
                    s.scheduling_strategy = SchedulingStrategy::Daemon;
                    s.desired_count = 0;
                    s.placement_strategies = vec!["random".into()];
                },
                &["placementStrategy"],
            ),
        ];
        for (what, edit, fields) in cases {
            let mut spec = valid();
            edit(&mut spec);
            assert_eq!(refused(&spec), *fields, "{what}");
        }
    }

    #[test]
    fn create_input_fills_in_ecs_defaults_and_keeps_what_it_is_given() {
        let spec = CreateServiceInput {
            name: "web".into(),
            task_definition: "web".into(),
            ..Default::default()
        }
        .into_spec("default");
        assert_eq!(spec.cluster, "default");
        assert_eq!(spec.desired_count, 1);
        assert_eq!(
            spec.deployment_configuration,
            DeploymentConfiguration::defaults_for(SchedulingStrategy::Replica)
        );
        let daemon = CreateServiceInput {
            cluster: "prod".into(),
            scheduling_strategy: SchedulingStrategy::Daemon,
            ..Default::default()
        }
        .into_spec("default");
        assert_eq!(daemon.cluster, "prod");
        assert_eq!(daemon.desired_count, 0);
        assert_eq!(daemon.deployment_configuration.maximum_percent, 100);
        let given = DeploymentConfigurationInput {
            controller: Default::default(),
            minimum_healthy_percent: Some(50),
            maximum_percent: Some(150),
            circuit_breaker: Some(CircuitBreaker {
                enable: true,
                rollback: false,
                threshold: Some(3),
            }),
            timeout_secs: Some(60),
        };
        let spec = CreateServiceInput {
            desired_count: Some(7),
            deployment_configuration: given,
            ..Default::default()
        }
        .into_spec("default");
        assert_eq!(spec.desired_count, 7);
        assert_eq!(
            spec.deployment_configuration,
            DeploymentConfiguration {
                controller: Default::default(),
                minimum_healthy_percent: 50,
                maximum_percent: 150,
                circuit_breaker: CircuitBreaker {
                    enable: true,
                    rollback: false,
                    threshold: Some(3),
                },
                timeout_secs: 60,
            }
        );
    }

    fn task(last: TaskStatus, desired: DesiredStatus, health: &[(&str, Health)]) -> Task {
        Task {
            id: "t".into(),
            cluster: "default".into(),
            family: "web".into(),
            revision: 1,
            instance_id: Some("i-1".into()),
            group: "service:web".into(),
            started_by: "ecs-svc/1".into(),
            desired_status: desired,
            last_status: last,
            containers: health
                .iter()
                .map(|(name, health)| crate::task::ContainerState {
                    name: name.to_string(),
                    status: crate::task::ContainerStatus::Running,
                    exit_code: None,
                    reason: String::new(),
                    health: *health,
                    restart_count: 0,
                })
                .collect(),
            stop_code: None,
            stopped_reason: String::new(),
            placement_reason: String::new(),
            overrides: vec![],
            placement_strategies: vec![],
            placement_constraints: vec![],
            reservation: crate::resources::Reservation::new(0, 0),
            created_at_ms: 0,
            pending_at_ms: None,
            started_at_ms: None,
            stopping_at_ms: None,
            stopped_at_ms: None,
            ip: None,
            deactivating_until_ms: None,
            tags: Default::default(),
        }
    }

    /// `checked`: an essential container with a health check; `side`: a
    /// non-essential one with a check; `plain`: essential, no check.
    fn definition() -> TaskDefinition {
        let check = crate::HealthCheck {
            command: vec!["CMD".into(), "true".into()],
            interval: 5,
            timeout: 2,
            retries: 1,
            start_period: 0,
        };
        let mut checked = crate::ContainerDefinition::new("checked", "img");
        checked.health_check = Some(check.clone());
        let mut side = crate::ContainerDefinition::new("side", "img");
        side.essential = false;
        side.health_check = Some(check);
        let plain = crate::ContainerDefinition::new("plain", "img");
        TaskDefinition {
            family: "web".into(),
            revision: 1,
            status: crate::TaskDefinitionStatus::Active,
            registered_at_ms: 0,
            deregistered_at_ms: None,
            spec: crate::TaskDefinitionSpec {
                family: "web".into(),
                container_definitions: vec![checked, side, plain],
                cpu: None,
                memory: None,
                network_mode: Default::default(),
                volumes: vec![],
                tags: vec![],
            },
        }
    }

    /// (what, last status, desired status, container health, expected)
    type HealthCase = (
        &'static str,
        TaskStatus,
        DesiredStatus,
        &'static [(&'static str, Health)],
        TaskHealth,
    );

    #[test]
    fn task_health_is_decided_by_the_essential_containers_with_a_check() {
        use Health::{Healthy as H, Unhealthy as U, Unknown as N};
        let td = definition();
        let run = TaskStatus::Running;
        let want = DesiredStatus::Running;
        let cases: &[HealthCase] = &[
            (
                "the checked container healthy",
                run,
                want,
                &[("checked", H), ("side", N), ("plain", N)],
                TaskHealth::Healthy,
            ),
            (
                "the checked container unhealthy",
                run,
                want,
                &[("checked", U), ("side", H), ("plain", H)],
                TaskHealth::Unhealthy,
            ),
            (
                "a non-essential container unhealthy does not count",
                run,
                want,
                &[("checked", H), ("side", U), ("plain", U)],
                TaskHealth::Healthy,
            ),
            (
                "the checked container undecided",
                run,
                want,
                &[("checked", N), ("side", H), ("plain", H)],
                TaskHealth::Unknown,
            ),
            (
                "the checked container not reported yet",
                run,
                want,
                &[("side", H), ("plain", H)],
                TaskHealth::Unknown,
            ),
            (
                "not running yet",
                TaskStatus::Pending,
                want,
                &[("checked", H)],
                TaskHealth::Unknown,
            ),
            (
                "asked to stop",
                run,
                DesiredStatus::Stopped,
                &[("checked", H)],
                TaskHealth::Unknown,
            ),
        ];
        for (what, last, desired, health, expected) in cases {
            let t = task(*last, *desired, health);
            assert_eq!(task_health(&t, Some(&td)), *expected, "{what}");
        }
        // Without its definition a running task is taken as healthy.
        assert_eq!(
            task_health(&task(run, want, &[]), None),
            TaskHealth::Healthy
        );
        assert_eq!(
            task_health(&task(TaskStatus::Pending, want, &[]), None),
            TaskHealth::Unknown
        );
    }

    #[test]
    fn a_service_knows_its_group_primary_and_effective_count() {
        let mut service = Service {
            load_balancers: Vec::new(),
            cluster: "default".into(),
            name: "web".into(),
            status: ServiceStatus::Active,
            task_definition: "web:2".into(),
            desired_count: 3,
            scheduling_strategy: SchedulingStrategy::Replica,
            placement_strategies: vec![],
            placement_constraints: vec![],
            deployment_configuration: DeploymentConfiguration::defaults_for(
                SchedulingStrategy::Replica,
            ),
            health_check_grace_period_secs: 0,
            tags: BTreeMap::new(),
            deployments: vec![],
            finished_deployments: vec![],
            events: vec![],
            next_event_id: 1,
            throttle: Throttle::default(),
            steady: false,
            stable_task_definition: None,
            created_at_ms: 0,
            updated_at_ms: 0,
        };
        assert_eq!(service.group(), "service:web");
        assert!(service.primary().is_none());
        let deployment = |id: &str| Deployment {
            traffic_at_ms: 0,
            traffic_percent: 100,
            id: id.into(),
            status: DeploymentStatus::Primary,
            task_definition: "web:2".into(),
            desired_count: 3,
            rollout_state: RolloutState::InProgress,
            rollout_state_reason: String::new(),
            failed_tasks: 0,
            rollback_of: None,
            created_at_ms: 0,
            updated_at_ms: 0,
        };
        service.deployments = vec![deployment("ecs-svc/2"), deployment("ecs-svc/1")];
        service.finished_deployments = vec![deployment("ecs-svc/0")];
        assert_eq!(service.primary().map(|d| d.id.as_str()), Some("ecs-svc/2"));
        let all: Vec<&str> = service.all_deployments().map(|d| d.id.as_str()).collect();
        assert_eq!(all, ["ecs-svc/2", "ecs-svc/1", "ecs-svc/0"]);
        assert_eq!(service.effective_desired_count(), 3);
        for status in [ServiceStatus::Draining, ServiceStatus::Inactive] {
            service.status = status;
            assert_eq!(service.effective_desired_count(), 0, "{status:?}");
        }
        let mut t = task(TaskStatus::Running, DesiredStatus::Running, &[]);
        assert_eq!(service_name_of(&t), Some("web"));
        t.group = "family:web".into();
        assert_eq!(service_name_of(&t), None);
    }

    #[test]
    fn statuses_parse_any_case_and_nothing_else() {
        assert_eq!(
            ServiceStatus::parse("draining"),
            Some(ServiceStatus::Draining)
        );
        assert_eq!(ServiceStatus::parse("gone"), None);
        assert_eq!(
            DeploymentStatus::parse("primary"),
            Some(DeploymentStatus::Primary)
        );
        assert_eq!(DeploymentStatus::parse("gone"), None);
        assert_eq!(RolloutState::parse("failed"), Some(RolloutState::Failed));
        assert_eq!(RolloutState::parse("gone"), None);
    }
}
