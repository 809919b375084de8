//! Task definitions.

use berth_types as t;
use t::{FieldError, ValidationErrors};

use crate::pb;

impl From<t::PortMapping> for pb::PortMapping {
    fn from(p: t::PortMapping) -> Self {
        Self {
            container_port: p.container_port,
            host_port: p.host_port,
            protocol: p.protocol.as_str().to_string(),
        }
    }
}

impl From<t::HealthCheck> for pb::HealthCheck {
    fn from(h: t::HealthCheck) -> Self {
        Self {
            command: h.command,
            interval: h.interval,
            timeout: h.timeout,
            retries: h.retries,
            start_period: h.start_period,
        }
    }
}

impl From<t::ContainerDefinition> for pb::ContainerDefinition {
    fn from(c: t::ContainerDefinition) -> Self {
        Self {
            name: c.name,
            image: c.image,
            cpu: c.cpu,
            memory: c.memory,
            memory_reservation: c.memory_reservation,
            port_mappings: c.port_mappings.into_iter().map(Into::into).collect(),
            environment: c
                .environment
                .into_iter()
                .map(|kv| pb::KeyValuePair {
                    name: kv.name,
                    value: kv.value,
                })
                .collect(),
            command: c.command,
            entry_point: c.entry_point,
            essential: c.essential,
            health_check: c.health_check.map(Into::into),
            working_directory: c.working_directory,
            user: c.user,
            stop_timeout: c.stop_timeout,
            depends_on: c
                .depends_on
                .into_iter()
                .map(|d| pb::ContainerDependency {
                    container_name: d.container_name,
                    condition: d.condition.as_str().to_string(),
                })
                .collect(),
            mount_points: c
                .mount_points
                .into_iter()
                .map(|m| pb::MountPoint {
                    source_volume: m.source_volume,
                    container_path: m.container_path,
                    read_only: m.read_only,
                })
                .collect(),
            readonly_root_filesystem: c.readonly_root_filesystem,
            restart_policy: c.restart_policy.map(Into::into),
            secrets: c
                .secrets
                .into_iter()
                .map(|s| pb::SecretRef {
                    name: s.name,
                    value_from: s.value_from,
                })
                .collect(),
            repository_credentials: c.repository_credentials.unwrap_or_default(),
        }
    }
}

impl From<t::RestartPolicy> for pb::RestartPolicy {
    fn from(p: t::RestartPolicy) -> Self {
        Self {
            enabled: p.enabled,
            ignored_exit_codes: p.ignored_exit_codes,
            restart_attempt_period: Some(p.restart_attempt_period_secs),
        }
    }
}

impl From<pb::RestartPolicy> for t::RestartPolicy {
    fn from(p: pb::RestartPolicy) -> Self {
        Self {
            enabled: p.enabled,
            ignored_exit_codes: p.ignored_exit_codes,
            // Absent is ECS's default; an explicit value (even 0) is kept
            // so validation can refuse it by name.
            restart_attempt_period_secs: p
                .restart_attempt_period
                .unwrap_or(t::RestartPolicy::DEFAULT_ATTEMPT_PERIOD_SECS),
        }
    }
}

impl From<t::TaskDefinitionSpec> for pb::TaskDefinitionSpec {
    fn from(s: t::TaskDefinitionSpec) -> Self {
        Self {
            family: s.family,
            container_definitions: s
                .container_definitions
                .into_iter()
                .map(Into::into)
                .collect(),
            cpu: s.cpu,
            memory: s.memory,
            network_mode: s.network_mode.as_str().to_string(),
            volumes: s
                .volumes
                .into_iter()
                .map(|v| pb::Volume {
                    name: v.name,
                    host_source_path: v.host_source_path,
                })
                .collect(),
            tags: s
                .tags
                .into_iter()
                .map(|t| pb::Tag {
                    key: t.key,
                    value: t.value,
                })
                .collect(),
        }
    }
}

impl From<t::TaskDefinition> for pb::TaskDefinition {
    fn from(td: t::TaskDefinition) -> Self {
        Self {
            family: td.family,
            revision: td.revision,
            status: td.status.as_str().to_string(),
            registered_at_ms: td.registered_at_ms,
            deregistered_at_ms: td.deregistered_at_ms,
            spec: Some(td.spec.into()),
        }
    }
}

pub(super) fn protocol(field: String, value: &str) -> Result<t::Protocol, FieldError> {
    match value.to_ascii_lowercase().as_str() {
        "" | "tcp" => Ok(t::Protocol::Tcp),
        "udp" => Ok(t::Protocol::Udp),
        other => Err(FieldError::new(
            field,
            format!("unknown protocol {other:?}; use \"tcp\" or \"udp\""),
        )),
    }
}

fn network_mode(value: &str) -> Result<t::NetworkMode, FieldError> {
    if value.is_empty() {
        return Ok(t::NetworkMode::Host);
    }
    t::NetworkMode::parse(value).ok_or_else(|| {
        FieldError::new(
            "networkMode",
            format!("{value:?} is not supported; use \"host\", \"bridge\", \"task\" (ECS: \"awsvpc\") or \"none\""),
        )
    })
}

fn container_from_wire(
    i: usize,
    c: pb::ContainerDefinition,
    errors: &mut Vec<FieldError>,
) -> t::ContainerDefinition {
    let at = |f: &str| format!("containerDefinitions[{i}].{f}");
    let port_mappings = c
        .port_mappings
        .into_iter()
        .enumerate()
        .map(|(j, p)| t::PortMapping {
            container_port: p.container_port,
            host_port: p.host_port,
            protocol: protocol(at(&format!("portMappings[{j}].protocol")), &p.protocol)
                .unwrap_or_else(|e| {
                    errors.push(e);
                    t::Protocol::Tcp
                }),
        })
        .collect();
    let depends_on = c
        .depends_on
        .into_iter()
        .enumerate()
        .filter_map(|(j, d)| {
            let condition = if d.condition.is_empty() {
                Some(t::DependencyCondition::Start)
            } else {
                t::DependencyCondition::parse(&d.condition)
            };
            match condition {
                Some(condition) => Some(t::ContainerDependency {
                    container_name: d.container_name,
                    condition,
                }),
                None => {
                    errors.push(FieldError::new(
                        at(&format!("dependsOn[{j}].condition")),
                        format!(
                            "unknown condition {:?}; use START, COMPLETE, SUCCESS or HEALTHY",
                            d.condition
                        ),
                    ));
                    None
                }
            }
        })
        .collect();
    t::ContainerDefinition {
        name: c.name,
        image: c.image,
        cpu: c.cpu,
        memory: c.memory,
        memory_reservation: c.memory_reservation,
        port_mappings,
        environment: c
            .environment
            .into_iter()
            .map(|kv| t::KeyValuePair {
                name: kv.name,
                value: kv.value,
            })
            .collect(),
        command: c.command,
        entry_point: c.entry_point,
        essential: c.essential,
        health_check: c.health_check.map(|h| t::HealthCheck {
            command: h.command,
            interval: h.interval,
            timeout: h.timeout,
            retries: h.retries,
            start_period: h.start_period,
        }),
        working_directory: c.working_directory,
        user: c.user,
        stop_timeout: c.stop_timeout,
        depends_on,
        mount_points: c
            .mount_points
            .into_iter()
            .map(|m| t::MountPoint {
                source_volume: m.source_volume,
                container_path: m.container_path,
                read_only: m.read_only,
            })
            .collect(),
        readonly_root_filesystem: c.readonly_root_filesystem,
        restart_policy: c.restart_policy.map(Into::into),
        secrets: c
            .secrets
            .into_iter()
            .map(|s| berth_types::secrets::SecretRef {
                name: s.name,
                value_from: s.value_from,
            })
            .collect(),
        repository_credentials: Some(c.repository_credentials).filter(|r| !r.is_empty()),
    }
}

impl TryFrom<pb::TaskDefinitionSpec> for t::TaskDefinitionSpec {
    type Error = ValidationErrors;

    fn try_from(s: pb::TaskDefinitionSpec) -> Result<Self, Self::Error> {
        let mut errors = Vec::new();
        let network_mode = network_mode(&s.network_mode).unwrap_or_else(|e| {
            errors.push(e);
            t::NetworkMode::Host
        });
        let container_definitions = s
            .container_definitions
            .into_iter()
            .enumerate()
            .map(|(i, c)| container_from_wire(i, c, &mut errors))
            .collect();
        if !errors.is_empty() {
            return Err(ValidationErrors(errors));
        }
        Ok(Self {
            family: s.family,
            container_definitions,
            cpu: s.cpu,
            memory: s.memory,
            network_mode,
            volumes: s
                .volumes
                .into_iter()
                .map(|v| t::Volume {
                    name: v.name,
                    host_source_path: v.host_source_path,
                })
                .collect(),
            tags: s
                .tags
                .into_iter()
                .map(|t| t::Tag {
                    key: t.key,
                    value: t.value,
                })
                .collect(),
        })
    }
}

impl TryFrom<pb::TaskDefinition> for t::TaskDefinition {
    type Error = ValidationErrors;

    fn try_from(td: pb::TaskDefinition) -> Result<Self, Self::Error> {
        let status = t::TaskDefinitionStatus::parse(&td.status).ok_or_else(|| {
            FieldError::new(
                "status",
                format!(
                    "unknown status {:?}; expected ACTIVE or INACTIVE",
                    td.status
                ),
            )
        })?;
        let spec = td
            .spec
            .ok_or_else(|| FieldError::new("spec", "missing from the response"))?
            .try_into()?;
        Ok(Self {
            family: td.family,
            revision: td.revision,
            status,
            registered_at_ms: td.registered_at_ms,
            deregistered_at_ms: td.deregistered_at_ms,
            spec,
        })
    }
}

impl From<t::TaskDefinitionFamily> for pb::TaskDefinitionFamily {
    fn from(f: t::TaskDefinitionFamily) -> Self {
        Self {
            family: f.family,
            latest_revision: f.latest_revision,
            latest_active_revision: f.latest_active_revision,
        }
    }
}

impl From<pb::TaskDefinitionFamily> for t::TaskDefinitionFamily {
    fn from(f: pb::TaskDefinitionFamily) -> Self {
        Self {
            family: f.family,
            latest_revision: f.latest_revision,
            latest_active_revision: f.latest_active_revision,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_spec() -> t::TaskDefinitionSpec {
        let mut c = t::ContainerDefinition::new("web", "localhost:5000/web:1");
        c.cpu = 256;
        c.memory = Some(128);
        c.memory_reservation = Some(64);
        c.port_mappings.push(t::PortMapping {
            container_port: 53,
            host_port: Some(53),
            protocol: t::Protocol::Udp,
        });
        c.environment.push(t::KeyValuePair {
            name: "A".into(),
            value: "b".into(),
        });
        c.command = vec!["serve".into()];
        c.entry_point = vec!["/app".into()];
        c.health_check = Some(t::HealthCheck {
            command: vec!["CMD".into(), "/app".into(), "check".into()],
            interval: 10,
            timeout: 3,
            retries: 2,
            start_period: 5,
        });
        c.working_directory = Some("/srv".into());
        c.user = Some("1000:1000".into());
        c.stop_timeout = Some(7);
        c.mount_points.push(t::MountPoint {
            source_volume: "data".into(),
            container_path: "/data".into(),
            read_only: true,
        });
        c.readonly_root_filesystem = true;
        c.restart_policy = Some(t::RestartPolicy {
            enabled: true,
            ignored_exit_codes: vec![0, 143],
            restart_attempt_period_secs: 90,
        });
        let mut side = t::ContainerDefinition::new("side", "localhost:5000/side:1");
        side.essential = false;
        side.depends_on.push(t::ContainerDependency {
            container_name: "web".into(),
            condition: t::DependencyCondition::Healthy,
        });
        t::TaskDefinitionSpec {
            family: "web".into(),
            container_definitions: vec![c, side],
            cpu: Some(512),
            memory: Some(256),
            network_mode: t::NetworkMode::None,
            volumes: vec![t::Volume {
                name: "data".into(),
                host_source_path: Some("/var/data".into()),
            }],
            tags: vec![t::Tag {
                key: "team".into(),
                value: "core".into(),
            }],
        }
    }

    #[test]
    fn task_definition_survives_the_wire() {
        let td = t::TaskDefinition {
            family: "web".into(),
            revision: 4,
            status: t::TaskDefinitionStatus::Inactive,
            registered_at_ms: 10,
            deregistered_at_ms: Some(20),
            spec: full_spec(),
        };
        let wire: pb::TaskDefinition = td.clone().into();
        let back: t::TaskDefinition = wire.try_into().unwrap();
        assert_eq!(back, td);
    }

    #[test]
    fn bad_enum_strings_name_their_fields() {
        let mut wire: pb::TaskDefinitionSpec = full_spec().into();
        wire.network_mode = "vpc".into();
        wire.container_definitions[0].port_mappings[0].protocol = "sctp".into();
        wire.container_definitions[1].depends_on[0].condition = "READY".into();
        let err = t::TaskDefinitionSpec::try_from(wire).unwrap_err();
        let fields: Vec<&str> = err.fields().collect();
        assert_eq!(
            fields,
            vec![
                "networkMode",
                "containerDefinitions[0].portMappings[0].protocol",
                "containerDefinitions[1].dependsOn[0].condition",
            ]
        );
    }

    #[test]
    fn restart_policy_period_defaults_only_when_absent() {
        let wire = pb::RestartPolicy {
            enabled: true,
            ignored_exit_codes: vec![1],
            restart_attempt_period: None,
        };
        let policy = t::RestartPolicy::from(wire.clone());
        assert_eq!(policy.restart_attempt_period_secs, 300);
        assert_eq!(policy.ignored_exit_codes, vec![1]);
        // An explicit 0 is not "absent": validation gets to refuse it.
        let zero = pb::RestartPolicy {
            restart_attempt_period: Some(0),
            ..wire
        };
        assert_eq!(t::RestartPolicy::from(zero).restart_attempt_period_secs, 0);
        // No policy on the wire is no policy in the domain.
        let mut spec: pb::TaskDefinitionSpec = full_spec().into();
        assert!(spec.container_definitions[1].restart_policy.is_none());
        spec.container_definitions[0].restart_policy = None;
        let back = t::TaskDefinitionSpec::try_from(spec).unwrap();
        assert_eq!(back.container_definitions[0].restart_policy, None);
    }

    #[test]
    fn container_restart_counts_survive_reports_and_tasks() {
        let state = t::ContainerState {
            name: "web".into(),
            status: t::ContainerStatus::Running,
            exit_code: None,
            reason: String::new(),
            health: t::Health::Healthy,
            restart_count: 4,
        };
        let wire = pb::ContainerState::from(&state);
        assert_eq!(wire.restart_count, 4);
        let report = pb::TaskReport {
            task_id: "t-1".into(),
            last_status: "RUNNING".into(),
            containers: vec![wire],
            ..Default::default()
        };
        let back = t::TaskReport::try_from(report).unwrap();
        assert_eq!(back.containers, vec![state]);
    }
}
