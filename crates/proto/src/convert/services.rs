//! Services and deployments.

use berth_types::service::{
    self as s, BlueGreen, CreateServiceInput, DeploymentConfigurationInput, DeploymentController,
    DeploymentCounts, DeploymentView, LoadBalancer, PendingReason, ServiceDescription,
    TrafficShift, UpdateServiceInput,
};
use berth_types::{
    CircuitBreaker, Deployment, DeploymentConfiguration, DeploymentStatus, FieldError,
    RolloutState, SchedulingStrategy, Service, ServiceEvent, ServiceStatus,
};

use super::{non_empty, wire_enum};
use crate::pb;
use berth_types as t;

impl From<CircuitBreaker> for pb::CircuitBreaker {
    fn from(c: CircuitBreaker) -> Self {
        Self {
            enable: c.enable,
            rollback: c.rollback,
            threshold: c.threshold,
        }
    }
}

impl From<pb::CircuitBreaker> for CircuitBreaker {
    fn from(c: pb::CircuitBreaker) -> Self {
        Self {
            enable: c.enable,
            rollback: c.rollback,
            threshold: c.threshold,
        }
    }
}

impl From<DeploymentController> for pb::DeploymentController {
    fn from(c: DeploymentController) -> Self {
        match c {
            DeploymentController::Rolling => Self {
                r#type: "ROLLING".into(),
                traffic_shift: None,
                bake_time_secs: 0,
            },
            DeploymentController::BlueGreen(b) => {
                let (kind, percent, interval_secs) = match b.traffic {
                    TrafficShift::AllAtOnce => ("ALL_AT_ONCE", 0, 0),
                    TrafficShift::Canary {
                        percent,
                        interval_secs,
                    } => ("CANARY", percent, interval_secs),
                    TrafficShift::Linear {
                        percent,
                        interval_secs,
                    } => ("LINEAR", percent, interval_secs),
                };
                Self {
                    r#type: "BLUE_GREEN".into(),
                    traffic_shift: Some(pb::TrafficShift {
                        r#type: kind.into(),
                        percent,
                        interval_secs,
                    }),
                    bake_time_secs: b.bake_time_secs,
                }
            }
        }
    }
}

impl TryFrom<pb::DeploymentController> for DeploymentController {
    type Error = FieldError;

    fn try_from(c: pb::DeploymentController) -> Result<Self, FieldError> {
        match c.r#type.to_ascii_uppercase().as_str() {
            "" | "ROLLING" | "ECS" => Ok(DeploymentController::Rolling),
            "BLUE_GREEN" => {
                let shift = c.traffic_shift.unwrap_or_default();
                let traffic = match shift.r#type.to_ascii_uppercase().as_str() {
                    "" | "ALL_AT_ONCE" => TrafficShift::AllAtOnce,
                    "CANARY" => TrafficShift::Canary {
                        percent: shift.percent,
                        interval_secs: shift.interval_secs,
                    },
                    "LINEAR" => TrafficShift::Linear {
                        percent: shift.percent,
                        interval_secs: shift.interval_secs,
                    },
                    other => {
                        return Err(FieldError::new(
                            "deploymentController.trafficShift.type",
                            format!("{other:?} is not ALL_AT_ONCE, CANARY or LINEAR"),
                        ))
                    }
                };
                Ok(DeploymentController::BlueGreen(BlueGreen {
                    traffic,
                    bake_time_secs: c.bake_time_secs,
                }))
            }
            other => Err(FieldError::new(
                "deploymentController.type",
                format!("{other:?} is not ROLLING or BLUE_GREEN"),
            )),
        }
    }
}

impl From<DeploymentConfiguration> for pb::DeploymentConfiguration {
    fn from(c: DeploymentConfiguration) -> Self {
        Self {
            minimum_healthy_percent: Some(c.minimum_healthy_percent),
            maximum_percent: Some(c.maximum_percent),
            circuit_breaker: Some(c.circuit_breaker.into()),
            deployment_timeout_secs: Some(c.timeout_secs),
            controller: Some(c.controller.into()),
        }
    }
}

impl From<DeploymentConfigurationInput> for pb::DeploymentConfiguration {
    fn from(c: DeploymentConfigurationInput) -> Self {
        Self {
            minimum_healthy_percent: c.minimum_healthy_percent,
            maximum_percent: c.maximum_percent,
            circuit_breaker: c.circuit_breaker.map(Into::into),
            deployment_timeout_secs: c.timeout_secs,
            controller: c.controller.map(Into::into),
        }
    }
}

impl TryFrom<pb::DeploymentConfiguration> for DeploymentConfigurationInput {
    type Error = FieldError;

    fn try_from(c: pb::DeploymentConfiguration) -> Result<Self, FieldError> {
        Ok(Self {
            minimum_healthy_percent: c.minimum_healthy_percent,
            maximum_percent: c.maximum_percent,
            circuit_breaker: c.circuit_breaker.map(Into::into),
            timeout_secs: c.deployment_timeout_secs,
            controller: c.controller.map(TryInto::try_into).transpose()?,
        })
    }
}

impl From<&LoadBalancer> for pb::LoadBalancer {
    fn from(lb: &LoadBalancer) -> Self {
        Self {
            name: lb.name.clone(),
            container_name: lb.container_name.clone(),
            container_port: lb.container_port,
            deregistration_delay_secs: Some(lb.deregistration_delay_secs),
        }
    }
}

impl From<pb::LoadBalancer> for LoadBalancer {
    fn from(lb: pb::LoadBalancer) -> Self {
        Self {
            name: lb.name,
            container_name: lb.container_name,
            container_port: lb.container_port,
            deregistration_delay_secs: lb
                .deregistration_delay_secs
                .unwrap_or(s::DEFAULT_DEREGISTRATION_DELAY_SECS),
        }
    }
}

fn strategy_from_wire(value: &str) -> Result<SchedulingStrategy, FieldError> {
    if value.is_empty() {
        return Ok(SchedulingStrategy::Replica);
    }
    wire_enum(
        "schedulingStrategy",
        value,
        SchedulingStrategy::parse,
        "REPLICA or DAEMON",
    )
}

fn tags_to_wire(tags: &std::collections::BTreeMap<String, String>) -> Vec<pb::KeyValuePair> {
    tags.iter()
        .map(|(name, value)| pb::KeyValuePair {
            name: name.clone(),
            value: value.clone(),
        })
        .collect()
}

fn tags_from_wire(tags: Vec<pb::KeyValuePair>) -> std::collections::BTreeMap<String, String> {
    tags.into_iter().map(|kv| (kv.name, kv.value)).collect()
}

impl From<&CreateServiceInput> for pb::CreateServiceRequest {
    fn from(i: &CreateServiceInput) -> Self {
        Self {
            cluster: i.cluster.clone(),
            service_name: i.name.clone(),
            task_definition: i.task_definition.clone(),
            desired_count: i.desired_count,
            scheduling_strategy: i.scheduling_strategy.as_str().to_string(),
            placement_strategies: i.placement_strategies.clone(),
            placement_constraints: i.placement_constraints.clone(),
            deployment_configuration: Some(i.deployment_configuration.into()),
            health_check_grace_period_secs: i.health_check_grace_period_secs,
            tags: tags_to_wire(&i.tags),
            load_balancers: i.load_balancers.iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<pb::CreateServiceRequest> for CreateServiceInput {
    type Error = FieldError;

    fn try_from(r: pb::CreateServiceRequest) -> Result<Self, FieldError> {
        Ok(Self {
            cluster: r.cluster,
            name: r.service_name,
            task_definition: r.task_definition,
            desired_count: r.desired_count,
            scheduling_strategy: strategy_from_wire(&r.scheduling_strategy)?,
            placement_strategies: r.placement_strategies,
            placement_constraints: r.placement_constraints,
            deployment_configuration: r
                .deployment_configuration
                .map(TryInto::try_into)
                .transpose()?
                .unwrap_or_default(),
            health_check_grace_period_secs: r.health_check_grace_period_secs,
            tags: tags_from_wire(r.tags),
            load_balancers: r.load_balancers.into_iter().map(Into::into).collect(),
        })
    }
}

impl From<&UpdateServiceInput> for pb::UpdateServiceRequest {
    fn from(i: &UpdateServiceInput) -> Self {
        let list = |l: &Option<Vec<String>>| {
            l.as_ref().map(|values| pb::StringList {
                values: values.clone(),
            })
        };
        Self {
            cluster: i.cluster.clone(),
            service: i.name.clone(),
            task_definition: i.task_definition.clone(),
            desired_count: i.desired_count,
            deployment_configuration: Some(i.deployment_configuration.into()),
            placement_strategies: list(&i.placement_strategies),
            placement_constraints: list(&i.placement_constraints),
            health_check_grace_period_secs: i.health_check_grace_period_secs,
            force_new_deployment: i.force_new_deployment,
        }
    }
}

impl TryFrom<pb::UpdateServiceRequest> for UpdateServiceInput {
    type Error = FieldError;

    fn try_from(r: pb::UpdateServiceRequest) -> Result<Self, FieldError> {
        Ok(Self {
            cluster: r.cluster,
            name: r.service,
            task_definition: r.task_definition,
            desired_count: r.desired_count,
            deployment_configuration: r
                .deployment_configuration
                .map(TryInto::try_into)
                .transpose()?
                .unwrap_or_default(),
            placement_strategies: r.placement_strategies.map(|l| l.values),
            placement_constraints: r.placement_constraints.map(|l| l.values),
            health_check_grace_period_secs: r.health_check_grace_period_secs,
            force_new_deployment: r.force_new_deployment,
        })
    }
}

impl From<&DeploymentView> for pb::Deployment {
    fn from(v: &DeploymentView) -> Self {
        let d = &v.deployment;
        Self {
            id: d.id.clone(),
            status: d.status.as_str().to_string(),
            task_definition: d.task_definition.clone(),
            desired_count: d.desired_count,
            pending_count: v.counts.pending,
            running_count: v.counts.running,
            healthy_count: v.counts.healthy,
            failed_tasks: d.failed_tasks,
            rollout_state: d.rollout_state.as_str().to_string(),
            rollout_state_reason: d.rollout_state_reason.clone(),
            rollback_of: d.rollback_of.clone().unwrap_or_default(),
            created_at_ms: d.created_at_ms,
            updated_at_ms: d.updated_at_ms,
            traffic_percent: d.traffic_percent,
            traffic_at_ms: d.traffic_at_ms,
        }
    }
}

impl TryFrom<pb::Deployment> for DeploymentView {
    type Error = FieldError;

    fn try_from(d: pb::Deployment) -> Result<Self, FieldError> {
        Ok(Self {
            deployment: Deployment {
                status: wire_enum(
                    "deployments.status",
                    &d.status,
                    DeploymentStatus::parse,
                    "PRIMARY, ACTIVE or INACTIVE",
                )?,
                rollout_state: wire_enum(
                    "deployments.rolloutState",
                    &d.rollout_state,
                    RolloutState::parse,
                    "IN_PROGRESS, COMPLETED or FAILED",
                )?,
                id: d.id,
                task_definition: d.task_definition,
                desired_count: d.desired_count,
                rollout_state_reason: d.rollout_state_reason,
                failed_tasks: d.failed_tasks,
                rollback_of: non_empty(d.rollback_of),
                created_at_ms: d.created_at_ms,
                updated_at_ms: d.updated_at_ms,
                traffic_percent: d.traffic_percent,
                traffic_at_ms: d.traffic_at_ms,
            },
            counts: DeploymentCounts {
                pending: d.pending_count,
                running: d.running_count,
                healthy: d.healthy_count,
            },
        })
    }
}

impl From<&ServiceDescription> for pb::Service {
    fn from(d: &ServiceDescription) -> Self {
        let s = &d.service;
        Self {
            cluster: s.cluster.clone(),
            name: s.name.clone(),
            status: s.status.as_str().to_string(),
            task_definition: s.task_definition.clone(),
            desired_count: s.desired_count,
            running_count: d.running_count,
            pending_count: d.pending_count,
            healthy_count: d.healthy_count,
            scheduling_strategy: s.scheduling_strategy.as_str().to_string(),
            placement_strategies: s.placement_strategies.clone(),
            placement_constraints: s.placement_constraints.clone(),
            deployment_configuration: Some(s.deployment_configuration.into()),
            health_check_grace_period_secs: s.health_check_grace_period_secs,
            tags: tags_to_wire(&s.tags),
            deployments: d.deployments.iter().map(Into::into).collect(),
            events: s
                .events
                .iter()
                .map(|e| pb::ServiceEvent {
                    id: e.id,
                    created_at_ms: e.created_at_ms,
                    message: e.message.clone(),
                })
                .collect(),
            pending_reasons: d
                .pending_reasons
                .iter()
                .map(|r| pb::PendingReason {
                    reason: r.reason.clone(),
                    tasks: r.tasks,
                })
                .collect(),
            created_at_ms: s.created_at_ms,
            updated_at_ms: s.updated_at_ms,
            backoff_until_ms: s.throttle.until_ms,
            consecutive_failures: s.throttle.failures,
            steady: s.steady,
            stable_task_definition: s.stable_task_definition.clone().unwrap_or_default(),
            next_event_id: s.next_event_id,
            load_balancers: s.load_balancers.iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<pb::Service> for ServiceDescription {
    type Error = FieldError;

    fn try_from(p: pb::Service) -> Result<Self, FieldError> {
        let defaults = DeploymentConfiguration::defaults_for(SchedulingStrategy::Replica);
        let deployment_configuration = p
            .deployment_configuration
            .map(DeploymentConfigurationInput::try_from)
            .transpose()?
            .map(|c| c.over(defaults))
            .unwrap_or(defaults);
        let views = p
            .deployments
            .into_iter()
            .map(DeploymentView::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        let (finished, current): (Vec<&DeploymentView>, Vec<&DeploymentView>) = views
            .iter()
            .partition(|v| v.deployment.status == DeploymentStatus::Inactive);
        let service = Service {
            status: wire_enum(
                "status",
                &p.status,
                ServiceStatus::parse,
                "ACTIVE, DRAINING or INACTIVE",
            )?,
            scheduling_strategy: strategy_from_wire(&p.scheduling_strategy)?,
            cluster: p.cluster,
            name: p.name,
            task_definition: p.task_definition,
            desired_count: p.desired_count,
            placement_strategies: p.placement_strategies,
            placement_constraints: p.placement_constraints,
            deployment_configuration,
            health_check_grace_period_secs: p.health_check_grace_period_secs,
            tags: tags_from_wire(p.tags),
            load_balancers: p.load_balancers.into_iter().map(Into::into).collect(),
            deployments: current.iter().map(|v| v.deployment.clone()).collect(),
            finished_deployments: finished.iter().map(|v| v.deployment.clone()).collect(),
            events: p
                .events
                .into_iter()
                .map(|e| ServiceEvent {
                    id: e.id,
                    created_at_ms: e.created_at_ms,
                    message: e.message,
                })
                .collect(),
            next_event_id: p.next_event_id,
            throttle: s::Throttle {
                failures: p.consecutive_failures,
                until_ms: p.backoff_until_ms,
                last_failure_ms: 0,
            },
            steady: p.steady,
            stable_task_definition: non_empty(p.stable_task_definition),
            created_at_ms: p.created_at_ms,
            updated_at_ms: p.updated_at_ms,
        };
        Ok(Self {
            service,
            running_count: p.running_count,
            pending_count: p.pending_count,
            healthy_count: p.healthy_count,
            deployments: views,
            pending_reasons: p
                .pending_reasons
                .into_iter()
                .map(|r| PendingReason {
                    reason: r.reason,
                    tasks: r.tasks,
                })
                .collect(),
        })
    }
}

impl From<&t::endpoints::Endpoint> for pb::Endpoint {
    fn from(e: &t::endpoints::Endpoint) -> Self {
        Self {
            address: e.address.clone(),
            port: e.port,
            protocol: e.protocol.as_str().to_string(),
            container_name: e.container_name.clone(),
            container_port: e.container_port,
            task_id: e.task_id.clone(),
            instance_id: e.instance_id.clone(),
            weight: e.weight,
            draining: e.draining,
            load_balancers: e.load_balancers.clone(),
        }
    }
}

impl TryFrom<pb::Endpoint> for t::endpoints::Endpoint {
    type Error = FieldError;

    fn try_from(e: pb::Endpoint) -> Result<Self, FieldError> {
        Ok(Self {
            protocol: super::taskdefs::protocol("endpoints.protocol".into(), &e.protocol)?,
            address: e.address,
            port: e.port,
            container_name: e.container_name,
            container_port: e.container_port,
            task_id: e.task_id,
            instance_id: e.instance_id,
            weight: e.weight,
            draining: e.draining,
            load_balancers: e.load_balancers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_service_description_survives_the_wire() {
        let mut config = DeploymentConfiguration::defaults_for(SchedulingStrategy::Replica);
        config.circuit_breaker = CircuitBreaker {
            enable: true,
            rollback: true,
            threshold: Some(4),
        };
        let deployment = |id: &str, status, state| Deployment {
            traffic_at_ms: 0,
            traffic_percent: 100,
            id: id.into(),
            status,
            task_definition: "web:2".into(),
            desired_count: 3,
            rollout_state: state,
            rollout_state_reason: "r".into(),
            failed_tasks: 1,
            rollback_of: Some("ecs-svc/0".into()),
            created_at_ms: 5,
            updated_at_ms: 6,
        };
        let primary = deployment(
            "ecs-svc/2",
            DeploymentStatus::Primary,
            RolloutState::InProgress,
        );
        let old = deployment(
            "ecs-svc/1",
            DeploymentStatus::Inactive,
            RolloutState::Completed,
        );
        let service = Service {
            load_balancers: Vec::new(),
            cluster: "prod".into(),
            name: "web".into(),
            status: ServiceStatus::Active,
            task_definition: "web:2".into(),
            desired_count: 3,
            scheduling_strategy: SchedulingStrategy::Replica,
            placement_strategies: vec!["spread:instanceId".into()],
            placement_constraints: vec!["distinctInstance".into()],
            deployment_configuration: config,
            health_check_grace_period_secs: 30,
            tags: BTreeMap::from([("team".to_string(), "a".to_string())]),
            deployments: vec![primary.clone()],
            finished_deployments: vec![old.clone()],
            events: vec![ServiceEvent {
                id: 4,
                created_at_ms: 9,
                message: "m".into(),
            }],
            next_event_id: 5,
            throttle: s::Throttle {
                failures: 3,
                until_ms: 77,
                last_failure_ms: 0,
            },
            steady: false,
            stable_task_definition: Some("web:1".into()),
            created_at_ms: 1,
            updated_at_ms: 2,
        };
        let counts = DeploymentCounts {
            pending: 1,
            running: 2,
            healthy: 2,
        };
        let description = ServiceDescription {
            service,
            running_count: 2,
            pending_count: 1,
            healthy_count: 2,
            deployments: vec![
                DeploymentView {
                    deployment: primary,
                    counts,
                },
                DeploymentView {
                    deployment: old,
                    counts: DeploymentCounts::default(),
                },
            ],
            pending_reasons: vec![PendingReason {
                reason: "no room".into(),
                tasks: 1,
            }],
        };
        let wire = pb::Service::from(&description);
        let back = ServiceDescription::try_from(wire).unwrap();
        assert_eq!(back, description);
    }

    #[test]
    fn requests_survive_the_wire_and_unset_stays_unset() {
        let create = CreateServiceInput {
            load_balancers: Vec::new(),
            cluster: "prod".into(),
            name: "web".into(),
            task_definition: "web".into(),
            desired_count: None,
            scheduling_strategy: SchedulingStrategy::Daemon,
            placement_strategies: vec![],
            placement_constraints: vec!["memberOf(attribute:zone == a)".into()],
            deployment_configuration: DeploymentConfigurationInput {
                minimum_healthy_percent: Some(50),
                ..Default::default()
            },
            health_check_grace_period_secs: 10,
            tags: BTreeMap::new(),
        };
        let back = CreateServiceInput::try_from(pb::CreateServiceRequest::from(&create)).unwrap();
        assert_eq!(back, create);
        let update = UpdateServiceInput {
            cluster: "prod".into(),
            name: "web".into(),
            task_definition: Some("web:3".into()),
            desired_count: Some(0),
            placement_constraints: Some(vec![]),
            force_new_deployment: true,
            ..Default::default()
        };
        let back = UpdateServiceInput::try_from(pb::UpdateServiceRequest::from(&update)).unwrap();
        assert_eq!(back, update);
        assert_eq!(back.placement_strategies, None, "unset stays unset");
        let bad = pb::CreateServiceRequest {
            scheduling_strategy: "BOTH".into(),
            ..Default::default()
        };
        let err = CreateServiceInput::try_from(bad).unwrap_err();
        assert_eq!(err.field, "schedulingStrategy");
    }
}
