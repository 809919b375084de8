//! Validation of what people submit. Every check names the field (in the ECS
//! JSON shape) and says how to fix it; all problems are reported together.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{FieldError, ValidationErrors};
use crate::taskdef::{NetworkMode, TaskDefinitionSpec};

/// ECS's limit on the size of a registered task definition.
pub const MAX_DEFINITION_BYTES: usize = 64 * 1024;
/// The smallest memory limit a container runtime accepts.
pub const MIN_MEMORY_MIB: u32 = 6;
/// More memory than any host Berth runs on can offer (1 TiB).
pub const MAX_MEMORY_MIB: u32 = 1024 * 1024;
/// 256 cores, in CPU units.
pub const MAX_CPU_UNITS: u32 = 256 * 1024;
/// ECS's limit on containers in one task definition.
pub const MAX_CONTAINERS: usize = 10;
pub const MAX_NAME_LEN: usize = 255;

/// Names of families, clusters, containers and volumes: what ECS allows.
pub fn check_name(field: &str, name: &str) -> Result<(), FieldError> {
    if name.is_empty() {
        return Err(FieldError::new(field, "required; use letters, digits, '-' and '_'"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(FieldError::new(
            field,
            format!("{} characters is too long; use at most {MAX_NAME_LEN}", name.len()),
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(FieldError::new(
            field,
            format!("{name:?} contains {bad:?}; use only letters, digits, '-' and '_'"),
        ));
    }
    Ok(())
}

fn check_port(errors: &mut Vec<FieldError>, field: String, port: u32) {
    if !(1..=65535).contains(&port) {
        errors.push(FieldError::new(
            field,
            format!("{port} is not a port number; use 1 to 65535"),
        ));
    }
}

fn check_memory(errors: &mut Vec<FieldError>, field: String, mib: u32) {
    if mib < MIN_MEMORY_MIB {
        errors.push(FieldError::new(
            field,
            format!("{mib} MiB is below the minimum of {MIN_MEMORY_MIB} MiB; raise it"),
        ));
    } else if mib > MAX_MEMORY_MIB {
        errors.push(FieldError::new(
            field,
            format!("{mib} MiB is more than any instance can have (at most {MAX_MEMORY_MIB} MiB)"),
        ));
    }
}

fn check_range(
    errors: &mut Vec<FieldError>,
    field: String,
    value: u32,
    range: std::ops::RangeInclusive<u32>,
    unit: &str,
) {
    if !range.contains(&value) {
        errors.push(FieldError::new(
            field,
            format!(
                "{value} {unit} is out of range; use {} to {} {unit}",
                range.start(),
                range.end()
            ),
        ));
    }
}

/// Checks a task definition before it is written. Returns every problem.
pub fn validate_spec(spec: &TaskDefinitionSpec) -> Result<(), ValidationErrors> {
    let mut errors = Vec::new();

    if let Err(e) = check_name("family", &spec.family) {
        errors.push(e);
    }

    // The size limit is on the registered JSON, as ECS measures it.
    match serde_json::to_vec(spec) {
        Ok(bytes) if bytes.len() > MAX_DEFINITION_BYTES => errors.push(FieldError::new(
            "taskDefinition",
            format!(
                "{} bytes is larger than the limit of {MAX_DEFINITION_BYTES} bytes (64 KiB); move large values out of the definition",
                bytes.len()
            ),
        )),
        Ok(_) => {}
        Err(e) => errors.push(FieldError::new("taskDefinition", format!("cannot be encoded: {e}"))),
    }

    let containers = &spec.container_definitions;
    if containers.is_empty() {
        errors.push(FieldError::new(
            "containerDefinitions",
            "required; define at least one container",
        ));
    } else if containers.len() > MAX_CONTAINERS {
        errors.push(FieldError::new(
            "containerDefinitions",
            format!(
                "{} containers is too many; use at most {MAX_CONTAINERS}",
                containers.len()
            ),
        ));
    }
    if !containers.is_empty() && !containers.iter().any(|c| c.essential) {
        errors.push(FieldError::new(
            "containerDefinitions",
            "no container is essential; mark at least one container \"essential\": true",
        ));
    }

    let mut volume_names = BTreeSet::new();
    for (i, volume) in spec.volumes.iter().enumerate() {
        let field = format!("volumes[{i}].name");
        if let Err(e) = check_name(&field, &volume.name) {
            errors.push(e);
        } else if !volume_names.insert(volume.name.as_str()) {
            errors.push(FieldError::new(
                field,
                format!("duplicate volume name {:?}; give each volume its own name", volume.name),
            ));
        }
        if let Some(path) = &volume.host_source_path {
            if !path.starts_with('/') {
                errors.push(FieldError::new(
                    format!("volumes[{i}].host.sourcePath"),
                    format!("{path:?} is not an absolute path; start it with '/'"),
                ));
            }
        }
    }

    let names: BTreeSet<&str> = containers.iter().map(|c| c.name.as_str()).collect();
    let mut seen_names = BTreeSet::new();
    // (protocol, host port) -> container that claimed it
    let mut host_ports: BTreeMap<(&str, u32), String> = BTreeMap::new();
    let mut any_memory = false;

    for (i, c) in containers.iter().enumerate() {
        let at = |field: &str| format!("containerDefinitions[{i}].{field}");

        if let Err(e) = check_name(&at("name"), &c.name) {
            errors.push(e);
        } else if !seen_names.insert(c.name.as_str()) {
            errors.push(FieldError::new(
                at("name"),
                format!("duplicate container name {:?}; give each container its own name", c.name),
            ));
        }
        if c.image.trim().is_empty() {
            errors.push(FieldError::new(
                at("image"),
                "required; set the image to run, e.g. \"registry.example.com/web:1.2\"",
            ));
        } else if c.image.chars().any(char::is_whitespace) {
            errors.push(FieldError::new(
                at("image"),
                format!("{:?} contains white space; an image reference has none", c.image),
            ));
        }
        if c.cpu > MAX_CPU_UNITS {
            errors.push(FieldError::new(
                at("cpu"),
                format!("{} units is more than any instance can have (at most {MAX_CPU_UNITS})", c.cpu),
            ));
        }
        if let Some(memory) = c.memory {
            any_memory = true;
            check_memory(&mut errors, at("memory"), memory);
        }
        if let Some(reservation) = c.memory_reservation {
            any_memory = true;
            check_memory(&mut errors, at("memoryReservation"), reservation);
            if let Some(memory) = c.memory {
                if reservation > memory {
                    errors.push(FieldError::new(
                        at("memoryReservation"),
                        format!("{reservation} MiB is above the hard limit memory={memory} MiB; lower it or raise memory"),
                    ));
                }
            }
        }

        for (j, pm) in c.port_mappings.iter().enumerate() {
            let field = |f: &str| at(&format!("portMappings[{j}].{f}"));
            check_port(&mut errors, field("containerPort"), pm.container_port);
            if let Some(host_port) = pm.host_port {
                check_port(&mut errors, field("hostPort"), host_port);
                if spec.network_mode == NetworkMode::Host && host_port != pm.container_port {
                    errors.push(FieldError::new(
                        field("hostPort"),
                        format!(
                            "{host_port} differs from containerPort {}; with networkMode \"host\" the container listens on the host directly, so omit hostPort or set it equal",
                            pm.container_port
                        ),
                    ));
                }
            }
            let host = pm.effective_host_port();
            if (1..=65535).contains(&host) {
                if let Some(owner) = host_ports.insert((pm.protocol.as_str(), host), c.name.clone()) {
                    errors.push(FieldError::new(
                        field("hostPort"),
                        format!(
                            "host port {host}/{} is already used by container {owner:?}; each host port can be used once per task",
                            pm.protocol.as_str()
                        ),
                    ));
                }
            }
        }
        if spec.network_mode == NetworkMode::None && !c.port_mappings.is_empty() {
            errors.push(FieldError::new(
                at("portMappings"),
                "port mappings need networkMode \"host\"; with \"none\" the task has no network",
            ));
        }

        for (j, env) in c.environment.iter().enumerate() {
            if env.name.is_empty() || env.name.contains('=') || env.name.contains('\0') {
                errors.push(FieldError::new(
                    at(&format!("environment[{j}].name")),
                    format!("{:?} is not a valid variable name; use a non-empty name without '='", env.name),
                ));
            }
        }

        if let Some(hc) = &c.health_check {
            let field = |f: &str| at(&format!("healthCheck.{f}"));
            match hc.command.first().map(String::as_str) {
                Some("CMD") | Some("CMD-SHELL") if hc.command.len() >= 2 => {}
                _ => errors.push(FieldError::new(
                    field("command"),
                    "must start with \"CMD\" or \"CMD-SHELL\" followed by the command, e.g. [\"CMD-SHELL\", \"curl -f http://localhost/ || exit 1\"]",
                )),
            }
            check_range(&mut errors, field("interval"), hc.interval, 5..=300, "seconds");
            check_range(&mut errors, field("timeout"), hc.timeout, 2..=60, "seconds");
            check_range(&mut errors, field("retries"), hc.retries, 1..=10, "retries");
            check_range(&mut errors, field("startPeriod"), hc.start_period, 0..=300, "seconds");
            if hc.timeout >= hc.interval && (5..=300).contains(&hc.interval) {
                errors.push(FieldError::new(
                    field("timeout"),
                    format!("{} seconds must be shorter than interval {} seconds", hc.timeout, hc.interval),
                ));
            }
        }

        if let Some(dir) = &c.working_directory {
            if !dir.starts_with('/') {
                errors.push(FieldError::new(
                    at("workingDirectory"),
                    format!("{dir:?} is not an absolute path; start it with '/'"),
                ));
            }
        }
        if let Some(user) = &c.user {
            if user.is_empty() || user.chars().any(char::is_whitespace) {
                errors.push(FieldError::new(
                    at("user"),
                    format!("{user:?} is not a user; use NAME, UID, NAME:GROUP or UID:GID"),
                ));
            }
        }
        if let Some(timeout) = c.stop_timeout {
            check_range(&mut errors, at("stopTimeout"), timeout, 0..=3600, "seconds");
        }

        for (j, dep) in c.depends_on.iter().enumerate() {
            let field = at(&format!("dependsOn[{j}].containerName"));
            if dep.container_name == c.name {
                errors.push(FieldError::new(field, "a container cannot depend on itself"));
            } else if !names.contains(dep.container_name.as_str()) {
                errors.push(FieldError::new(
                    field,
                    format!(
                        "unknown container {:?}; name one of: {}",
                        dep.container_name,
                        names.iter().copied().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }

        for (j, mp) in c.mount_points.iter().enumerate() {
            let field = |f: &str| at(&format!("mountPoints[{j}].{f}"));
            if !volume_names.contains(mp.source_volume.as_str()) {
                errors.push(FieldError::new(
                    field("sourceVolume"),
                    format!("unknown volume {:?}; declare it under \"volumes\"", mp.source_volume),
                ));
            }
            if !mp.container_path.starts_with('/') {
                errors.push(FieldError::new(
                    field("containerPath"),
                    format!("{:?} is not an absolute path; start it with '/'", mp.container_path),
                ));
            }
        }
    }

    if let Some(cycle_at) = find_dependency_cycle(spec) {
        errors.push(FieldError::new(
            format!("containerDefinitions[{cycle_at}].dependsOn"),
            "dependencies form a cycle; no container in it could ever start",
        ));
    }

    if let Some(cpu) = spec.cpu {
        check_range(&mut errors, "cpu".to_string(), cpu, 128..=MAX_CPU_UNITS, "units");
        let sum: u32 = containers.iter().map(|c| c.cpu).sum();
        if sum > cpu {
            errors.push(FieldError::new(
                "cpu",
                format!("{cpu} units is less than the containers' total of {sum}; raise it or lower the containers' cpu"),
            ));
        }
    }
    if let Some(memory) = spec.memory {
        check_memory(&mut errors, "memory".to_string(), memory);
        for (i, c) in containers.iter().enumerate() {
            if let Some(m) = c.memory {
                if m > memory {
                    errors.push(FieldError::new(
                        format!("containerDefinitions[{i}].memory"),
                        format!("{m} MiB is above the task's memory of {memory} MiB"),
                    ));
                }
            }
        }
    } else if !any_memory && !containers.is_empty() {
        errors.push(FieldError::new(
            "memory",
            "no memory is set; set the task's memory or each container's memory or memoryReservation so the scheduler knows what to reserve",
        ));
    }

    for (i, tag) in spec.tags.iter().enumerate() {
        if tag.key.is_empty() || tag.key.len() > 128 {
            errors.push(FieldError::new(
                format!("tags[{i}].key"),
                "must be 1 to 128 characters",
            ));
        }
        if tag.value.len() > 256 {
            errors.push(FieldError::new(
                format!("tags[{i}].value"),
                "must be at most 256 characters",
            ));
        }
    }

    if errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(errors))
    }
}

/// Index of a container that sits on a dependsOn cycle, if there is one.
fn find_dependency_cycle(spec: &TaskDefinitionSpec) -> Option<usize> {
    let index: BTreeMap<&str, usize> = spec
        .container_definitions
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();
    // 0 = unvisited, 1 = on the current path, 2 = done
    let mut mark = vec![0u8; spec.container_definitions.len()];
    fn visit(
        node: usize,
        spec: &TaskDefinitionSpec,
        index: &BTreeMap<&str, usize>,
        mark: &mut [u8],
    ) -> Option<usize> {
        match mark[node] {
            1 => return Some(node),
            2 => return None,
            _ => {}
        }
        mark[node] = 1;
        for dep in &spec.container_definitions[node].depends_on {
            if let Some(&next) = index.get(dep.container_name.as_str()) {
                if next != node {
                    if let Some(found) = visit(next, spec, index, mark) {
                        return Some(found);
                    }
                }
            }
        }
        mark[node] = 2;
        None
    }
    (0..mark.len()).find_map(|start| visit(start, spec, &index, &mut mark))
}
