//! Validation of what people submit. Every check names the field (in the ECS
//! JSON shape) and says how to fix it; all problems are reported together.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{FieldError, ValidationErrors};
use crate::taskdef::{ContainerDefinition, NetworkMode, RestartPolicy, TaskDefinitionSpec};

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
        return Err(FieldError::new(
            field,
            "required; use letters, digits, '-' and '_'",
        ));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(FieldError::new(
            field,
            format!(
                "{} characters is too long; use at most {MAX_NAME_LEN}",
                name.len()
            ),
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

struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Checks a task definition before it is written. Returns every problem.
pub fn validate_spec(spec: &TaskDefinitionSpec) -> Result<(), ValidationErrors> {
    let mut errors = Vec::new();

    if let Err(e) = check_name("family", &spec.family) {
        errors.push(e);
    }

    // The size limit is on the registered JSON, as ECS measures it. Counted
    // rather than built: this runs on every server for every registration.
    let mut counter = ByteCounter(0);
    match serde_json::to_writer(&mut counter, spec) {
        Ok(()) if counter.0 > MAX_DEFINITION_BYTES => errors.push(FieldError::new(
            "taskDefinition",
            format!(
                "{} bytes is larger than the limit of {MAX_DEFINITION_BYTES} bytes (64 KiB); move large values out of the definition",
                counter.0
            ),
        )),
        Ok(()) => {}
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
                format!(
                    "duplicate volume name {:?}; give each volume its own name",
                    volume.name
                ),
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
    let mut container_ports: BTreeMap<(&str, u32), String> = BTreeMap::new();
    let mut any_memory = false;
    // Built once and kept short: repeating every name in every message
    // would grow with the square of an oversized container list.
    let mut known_names = names
        .iter()
        .take(MAX_CONTAINERS)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > MAX_CONTAINERS {
        known_names.push_str(", ...");
    }

    for (i, c) in containers.iter().enumerate() {
        let at = |field: &str| format!("containerDefinitions[{i}].{field}");

        if let Err(e) = check_name(&at("name"), &c.name) {
            errors.push(e);
        } else if !seen_names.insert(c.name.as_str()) {
            errors.push(FieldError::new(
                at("name"),
                format!(
                    "duplicate container name {:?}; give each container its own name",
                    c.name
                ),
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
                format!(
                    "{:?} contains white space; an image reference has none",
                    c.image
                ),
            ));
        }
        if c.cpu > MAX_CPU_UNITS {
            errors.push(FieldError::new(
                at("cpu"),
                format!(
                    "{} units is more than any instance can have (at most {MAX_CPU_UNITS})",
                    c.cpu
                ),
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
            if let Some(host_port) = pm.host_port.filter(|p| {
                // 0 asks for a dynamic port in bridge mode.
                *p != 0 || !spec.network_mode.uses_bridge()
            }) {
                check_port(&mut errors, field("hostPort"), host_port);
                let mode = spec.network_mode;
                if matches!(mode, NetworkMode::Host | NetworkMode::Task)
                    && host_port != pm.container_port
                {
                    let why = if mode == NetworkMode::Host {
                        "the container listens on the host directly"
                    } else {
                        "the task is reached on its own address and nothing is published on the host"
                    };
                    errors.push(FieldError::new(
                        field("hostPort"),
                        format!(
                            "{host_port} differs from containerPort {}; with networkMode \"{}\" {why}, so omit hostPort or set it equal",
                            pm.container_port,
                            mode.as_str()
                        ),
                    ));
                }
            }
            if spec.network_mode.uses_bridge() {
                // The task's containers share one network namespace.
                if let Some(owner) = container_ports
                    .insert((pm.protocol.as_str(), pm.container_port), c.name.clone())
                {
                    errors.push(FieldError::new(
                        field("containerPort"),
                        format!(
                            "container port {}/{} is already mapped by container {owner:?}; in bridge and task modes a task's containers share one network namespace, so each container port can be mapped once per task",
                            pm.container_port,
                            pm.protocol.as_str()
                        ),
                    ));
                }
            }
            let host = pm.fixed_host_port(spec.network_mode).unwrap_or(0);
            if (1..=65535).contains(&host) {
                if let Some(owner) = host_ports.insert((pm.protocol.as_str(), host), c.name.clone())
                {
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
                "port mappings need networkMode \"host\" or \"bridge\"; with \"none\" the task has no network",
            ));
        }

        for (j, env) in c.environment.iter().enumerate() {
            if env.name.is_empty() || env.name.contains('=') || env.name.contains('\0') {
                errors.push(FieldError::new(
                    at(&format!("environment[{j}].name")),
                    format!(
                        "{:?} is not a valid variable name; use a non-empty name without '='",
                        env.name
                    ),
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
            check_range(
                &mut errors,
                field("interval"),
                hc.interval,
                5..=300,
                "seconds",
            );
            check_range(&mut errors, field("timeout"), hc.timeout, 2..=60, "seconds");
            check_range(&mut errors, field("retries"), hc.retries, 1..=10, "retries");
            check_range(
                &mut errors,
                field("startPeriod"),
                hc.start_period,
                0..=300,
                "seconds",
            );
            // Compared only when both are in range, so one bad value does
            // not produce two errors on the same field.
            if hc.timeout >= hc.interval
                && (5..=300).contains(&hc.interval)
                && (2..=60).contains(&hc.timeout)
            {
                errors.push(FieldError::new(
                    field("timeout"),
                    format!(
                        "{} seconds must be shorter than interval {} seconds",
                        hc.timeout, hc.interval
                    ),
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
        if let Some(policy) = &c.restart_policy {
            check_restart_policy(&mut errors, &at("restartPolicy"), policy);
        }
        for (j, secret) in c.secrets.iter().enumerate() {
            let name = &secret.name;
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                errors.push(FieldError::new(
                    at(&format!("secrets[{j}].name")),
                    format!(
                        "{name:?} is not a valid variable name; use a non-empty name without '='"
                    ),
                ));
            } else if c.environment.iter().any(|e| &e.name == name)
                || c.secrets[..j].iter().any(|s| &s.name == name)
            {
                // Which value would win is not worth guessing at.
                errors.push(FieldError::new(
                    at(&format!("secrets[{j}].name")),
                    format!(
                        "{name:?} is already set by another entry of `environment` or `secrets`"
                    ),
                ));
            }
            if let Err(e) = crate::secrets::check_secret_name(
                &at(&format!("secrets[{j}].valueFrom")),
                &secret.value_from,
            ) {
                errors.push(e);
            }
        }
        if let Some(credentials) = &c.repository_credentials {
            if let Err(e) = crate::secrets::check_secret_name(
                &at("repositoryCredentials.credentialsParameter"),
                credentials,
            ) {
                errors.push(e);
            }
        }

        for (j, dep) in c.depends_on.iter().enumerate() {
            let field = at(&format!("dependsOn[{j}].containerName"));
            if dep.container_name == c.name {
                errors.push(FieldError::new(
                    field,
                    "a container cannot depend on itself",
                ));
            } else if !names.contains(dep.container_name.as_str()) {
                errors.push(FieldError::new(
                    field,
                    format!(
                        "unknown container {:?}; name one of: {known_names}",
                        dep.container_name
                    ),
                ));
            }
        }

        for (j, mp) in c.mount_points.iter().enumerate() {
            let field = |f: &str| at(&format!("mountPoints[{j}].{f}"));
            if !volume_names.contains(mp.source_volume.as_str()) {
                errors.push(FieldError::new(
                    field("sourceVolume"),
                    format!(
                        "unknown volume {:?}; declare it under \"volumes\"",
                        mp.source_volume
                    ),
                ));
            }
            if !mp.container_path.starts_with('/') {
                errors.push(FieldError::new(
                    field("containerPath"),
                    format!(
                        "{:?} is not an absolute path; start it with '/'",
                        mp.container_path
                    ),
                ));
            }
        }
    }

    if let Some(cycle_at) = find_dependency_cycle(&spec.container_definitions) {
        errors.push(FieldError::new(
            format!("containerDefinitions[{cycle_at}].dependsOn"),
            "dependencies form a cycle; no container in it could ever start",
        ));
    }

    if let Some(cpu) = spec.cpu {
        check_range(
            &mut errors,
            "cpu".to_string(),
            cpu,
            128..=MAX_CPU_UNITS,
            "units",
        );
        // Summed wide: a few huge values must not overflow (a panic here
        // would take down the server applying the log).
        let sum: u64 = containers.iter().map(|c| u64::from(c.cpu)).sum();
        if sum > u64::from(cpu) {
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

/// One `name = value` attribute at position `index` of a list a person
/// gave: names are what constraints can spell (`attribute:NAME`), values
/// are bounded.
pub fn check_attribute(index: usize, name: &str, value: &str) -> Result<(), FieldError> {
    let name_ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:".contains(c));
    if !name_ok {
        return Err(FieldError::new(
            format!("attributes[{index}].name"),
            format!("{name:?} is not an attribute name; use letters, digits and -_./:"),
        ));
    }
    if value.len() > 256 {
        return Err(FieldError::new(
            format!("attributes[{index}].value"),
            "must be at most 256 characters",
        ));
    }
    Ok(())
}

/// Attributes an operator sets (an activation's, `berth instance attribute
/// put|delete`): `agent.*` names are what agents report and cannot be set
/// or deleted by hand.
pub fn check_operator_attribute_name(field: &str, name: &str) -> Result<(), FieldError> {
    if name.starts_with(crate::access::AGENT_ATTRIBUTE_PREFIX) {
        return Err(FieldError::new(
            field,
            format!(
                "{name:?}: names starting with {:?} are what the agent reports about its host; \
                 choose another name",
                crate::access::AGENT_ATTRIBUTE_PREFIX
            ),
        ));
    }
    Ok(())
}

/// One attribute an operator sets, name and value: what
/// [`check_operator_attribute_name`] checks, and a capacity cap
/// (`berth.capacity.cpu`, `berth.capacity.memory`) must be a whole number
/// of CPU units or MiB above zero.
pub fn check_operator_attribute(index: usize, name: &str, value: &str) -> Result<(), FieldError> {
    check_operator_attribute_name(&format!("attributes[{index}].name"), name)?;
    let unit = match name {
        crate::access::CPU_CAP_ATTRIBUTE => "CPU units (1024 to a core)",
        crate::access::MEMORY_CAP_ATTRIBUTE => "MiB",
        _ => return Ok(()),
    };
    match value.parse::<u64>() {
        Ok(cap) if cap > 0 => Ok(()),
        _ => Err(FieldError::new(
            format!("attributes[{index}].value"),
            format!(
                "{name} caps what the host's agent may claim and must be a whole number of {unit} \
                 above zero, not {value:?}; delete the attribute to remove the cap"
            ),
        )),
    }
}

/// ECS's bounds, checked whether or not the policy is enabled: a disabled
/// policy with a bad value would fail the day someone turns it on.
fn check_restart_policy(errors: &mut Vec<FieldError>, at: &str, policy: &RestartPolicy) {
    let (min, max) = (
        RestartPolicy::MIN_ATTEMPT_PERIOD_SECS,
        RestartPolicy::MAX_ATTEMPT_PERIOD_SECS,
    );
    let period = policy.restart_attempt_period_secs;
    if !(min..=max).contains(&period) {
        errors.push(FieldError::new(
            format!("{at}.restartAttemptPeriod"),
            format!(
                "must be between {min} and {max} seconds, not {period}; it is how long the container must run before an exit is restarted (default {})",
                RestartPolicy::DEFAULT_ATTEMPT_PERIOD_SECS
            ),
        ));
    }
    let codes = policy.ignored_exit_codes.len();
    if codes > RestartPolicy::MAX_IGNORED_EXIT_CODES {
        errors.push(FieldError::new(
            format!("{at}.ignoredExitCodes"),
            format!(
                "{codes} exit codes is too many; list at most {}",
                RestartPolicy::MAX_IGNORED_EXIT_CODES
            ),
        ));
    }
}

/// Index of a container that sits on a dependsOn cycle, if there is one:
/// no container on it could ever start. A container naming itself is not
/// counted (`validate_spec` reports that on its own, and a caller that must
/// refuse it checks it directly), nor is a name no container has.
pub fn find_dependency_cycle(containers: &[ContainerDefinition]) -> Option<usize> {
    let index: BTreeMap<&str, usize> = containers
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();
    // Self-dependencies are reported on their own, not as cycles.
    let edges: Vec<Vec<usize>> = containers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            c.depends_on
                .iter()
                .filter_map(|dep| index.get(dep.container_name.as_str()).copied())
                .filter(|&next| next != i)
                .collect()
        })
        .collect();
    // 0 = unvisited, 1 = on the current path, 2 = done
    let mut mark = vec![0u8; containers.len()];
    // An explicit stack of (container, next edge to follow): the count is
    // only limited after this runs, and recursion along a long chain would
    // overflow the thread's stack.
    let mut path: Vec<(usize, usize)> = Vec::new();
    for start in 0..containers.len() {
        if mark[start] != 0 {
            continue;
        }
        mark[start] = 1;
        path.push((start, 0));
        while let Some((node, next_edge)) = path.last_mut() {
            match edges[*node].get(*next_edge) {
                Some(&next) => {
                    *next_edge += 1;
                    match mark[next] {
                        1 => return Some(next),
                        0 => {
                            mark[next] = 1;
                            path.push((next, 0));
                        }
                        _ => {}
                    }
                }
                None => {
                    mark[*node] = 2;
                    path.pop();
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::taskdef::{
        ContainerDefinition, ContainerDependency, DependencyCondition, HealthCheck, KeyValuePair,
        MountPoint, PortMapping, Protocol, Volume,
    };

    fn container(name: &str) -> ContainerDefinition {
        let mut c = ContainerDefinition::new(name, "registry.local/app:1");
        c.memory = Some(128);
        c
    }

    fn spec(containers: Vec<ContainerDefinition>) -> TaskDefinitionSpec {
        TaskDefinitionSpec {
            family: "web".into(),
            container_definitions: containers,
            cpu: None,
            memory: None,
            network_mode: NetworkMode::Host,
            volumes: vec![],
            tags: vec![],
        }
    }

    fn port(container_port: u32, host_port: Option<u32>) -> PortMapping {
        PortMapping {
            container_port,
            host_port,
            protocol: Protocol::Tcp,
        }
    }

    fn depends(name: &str) -> ContainerDependency {
        ContainerDependency {
            container_name: name.into(),
            condition: DependencyCondition::Start,
        }
    }

    fn health(command: &[&str]) -> HealthCheck {
        HealthCheck {
            command: command.iter().map(|s| s.to_string()).collect(),
            interval: HealthCheck::DEFAULT_INTERVAL,
            timeout: HealthCheck::DEFAULT_TIMEOUT,
            retries: HealthCheck::DEFAULT_RETRIES,
            start_period: HealthCheck::DEFAULT_START_PERIOD,
        }
    }

    /// The fields of every error, in the order reported.
    fn error_fields(spec: &TaskDefinitionSpec) -> Vec<String> {
        match validate_spec(spec) {
            Ok(()) => Vec::new(),
            Err(errors) => errors.0.into_iter().map(|e| e.field).collect(),
        }
    }

    fn assert_only(spec: &TaskDefinitionSpec, field: &str) {
        assert_eq!(error_fields(spec), vec![field.to_string()], "{spec:?}");
    }

    #[test]
    fn a_sensible_definition_passes() {
        let mut web = container("web");
        web.port_mappings = vec![port(8080, Some(8080)), port(9090, None)];
        web.health_check = Some(health(&["CMD-SHELL", "curl -f localhost:8080"]));
        web.depends_on = vec![ContainerDependency {
            container_name: "db".into(),
            condition: DependencyCondition::Healthy,
        }];
        web.working_directory = Some("/srv".into());
        web.mount_points = vec![MountPoint {
            source_volume: "data".into(),
            container_path: "/data".into(),
            read_only: true,
        }];
        let mut db = container("db");
        db.essential = false;
        db.health_check = Some(health(&["CMD", "pg_isready"]));
        let mut s = spec(vec![web, db]);
        s.volumes = vec![Volume {
            name: "data".into(),
            host_source_path: Some("/srv/data".into()),
        }];
        s.cpu = Some(1024);
        s.memory = Some(512);
        assert_eq!(validate_spec(&s), Ok(()));
    }

    #[test]
    fn missing_image() {
        let mut c = container("web");
        c.image = "  ".into();
        assert_only(&spec(vec![c]), "containerDefinitions[0].image");
    }

    #[test]
    fn duplicate_container_names() {
        assert_only(
            &spec(vec![container("web"), container("web")]),
            "containerDefinitions[1].name",
        );
    }

    #[test]
    fn no_essential_container() {
        let mut a = container("a");
        a.essential = false;
        let mut b = container("b");
        b.essential = false;
        assert_only(&spec(vec![a, b]), "containerDefinitions");
    }

    #[test]
    fn memory_below_the_minimum() {
        let mut c = container("web");
        c.memory = Some(MIN_MEMORY_MIB - 1);
        assert_only(&spec(vec![c]), "containerDefinitions[0].memory");

        let mut s = spec(vec![ContainerDefinition::new("web", "img")]);
        s.memory = Some(4);
        assert_only(&s, "memory");
        // The minimum itself is fine.
        s.memory = Some(MIN_MEMORY_MIB);
        assert_eq!(validate_spec(&s), Ok(()));
    }

    #[test]
    fn memory_above_the_maximum() {
        let mut c = container("web");
        c.memory = Some(MAX_MEMORY_MIB + 1);
        assert_only(&spec(vec![c]), "containerDefinitions[0].memory");

        let mut c = container("web");
        c.memory = None;
        c.memory_reservation = Some(u32::MAX);
        assert_only(&spec(vec![c]), "containerDefinitions[0].memoryReservation");
    }

    #[test]
    fn memory_reservation_above_memory() {
        let mut c = container("web");
        c.memory = Some(128);
        c.memory_reservation = Some(256);
        assert_only(&spec(vec![c]), "containerDefinitions[0].memoryReservation");
    }

    #[test]
    fn no_memory_anywhere() {
        let mut c = container("web");
        c.memory = None;
        assert_only(&spec(vec![c]), "memory");
        // A reservation alone is enough, and so is the task's memory.
        let mut c = container("web");
        c.memory = None;
        c.memory_reservation = Some(64);
        assert_eq!(validate_spec(&spec(vec![c])), Ok(()));
        let mut s = spec(vec![ContainerDefinition::new("web", "img")]);
        s.memory = Some(256);
        assert_eq!(validate_spec(&s), Ok(()));
    }

    #[test]
    fn container_memory_above_the_task_memory() {
        let mut s = spec(vec![container("web")]);
        s.memory = Some(64);
        assert_only(&s, "containerDefinitions[0].memory");
    }

    #[test]
    fn bad_port_numbers() {
        for bad in [0, 65536, 70000] {
            let mut c = container("web");
            c.port_mappings = vec![port(80, None), port(bad, None)];
            assert_only(
                &spec(vec![c]),
                "containerDefinitions[0].portMappings[1].containerPort",
            );
        }
        let mut c = container("web");
        c.port_mappings = vec![port(70000, Some(70000))];
        assert_eq!(
            error_fields(&spec(vec![c])),
            vec![
                "containerDefinitions[0].portMappings[0].containerPort",
                "containerDefinitions[0].portMappings[0].hostPort",
            ]
        );
        let mut c = container("web");
        c.port_mappings = vec![port(65535, None), port(1, None)];
        assert_eq!(validate_spec(&spec(vec![c])), Ok(()));
    }

    #[test]
    fn duplicate_host_ports() {
        let mut a = container("a");
        a.port_mappings = vec![port(8080, None)];
        let mut b = container("b");
        b.port_mappings = vec![port(8080, Some(8080))];
        let s = spec(vec![a.clone(), b]);
        assert_only(&s, "containerDefinitions[1].portMappings[0].hostPort");
        let Err(errors) = validate_spec(&s) else {
            unreachable!()
        };
        assert!(errors.0[0].message.contains("\"a\""), "{errors}");

        // The same number over UDP is a different port.
        let mut b = container("b");
        b.port_mappings = vec![PortMapping {
            container_port: 8080,
            host_port: None,
            protocol: Protocol::Udp,
        }];
        assert_eq!(validate_spec(&spec(vec![a, b])), Ok(()));
    }

    #[test]
    fn host_port_must_equal_container_port_in_host_mode() {
        let mut c = container("web");
        c.port_mappings = vec![port(80, Some(8080))];
        assert_only(
            &spec(vec![c]),
            "containerDefinitions[0].portMappings[0].hostPort",
        );
    }

    #[test]
    fn bridge_mode_maps_any_host_port_but_each_container_port_once() {
        let mut web = container("web");
        web.port_mappings = vec![port(80, Some(8080)), port(81, Some(0)), port(82, None)];
        let mut s = spec(vec![web.clone()]);
        s.network_mode = NetworkMode::Bridge;
        validate_spec(&s).unwrap();
        // The task's containers share one namespace: port 80 twice clashes.
        let mut sidecar = container("sidecar");
        sidecar.port_mappings = vec![port(80, None)];
        s.container_definitions.push(sidecar);
        assert_only(&s, "containerDefinitions[1].portMappings[0].containerPort");
    }

    #[test]
    fn task_mode_publishes_nothing_so_host_port_must_match_or_be_absent() {
        let mut web = container("web");
        web.port_mappings = vec![port(80, None), port(81, Some(81)), port(82, Some(0))];
        let mut s = spec(vec![web]);
        s.network_mode = NetworkMode::Task;
        validate_spec(&s).unwrap();
        assert!(crate::resources::reserve(&s).ports.is_empty());
        s.container_definitions[0].port_mappings = vec![port(80, Some(8080))];
        assert_only(&s, "containerDefinitions[0].portMappings[0].hostPort");
        let mut sidecar = container("sidecar");
        sidecar.port_mappings = vec![port(80, None)];
        s.container_definitions[0].port_mappings = vec![port(80, None)];
        s.container_definitions.push(sidecar);
        assert_only(&s, "containerDefinitions[1].portMappings[0].containerPort");
    }

    #[test]
    fn port_mappings_need_a_network() {
        let mut c = container("web");
        c.port_mappings = vec![port(80, None)];
        let mut s = spec(vec![c]);
        s.network_mode = NetworkMode::None;
        assert_only(&s, "containerDefinitions[0].portMappings");
    }

    #[test]
    fn unknown_depends_on_target() {
        let mut c = container("web");
        c.depends_on = vec![depends("db")];
        let s = spec(vec![c, container("cache")]);
        assert_only(&s, "containerDefinitions[0].dependsOn[0].containerName");
        let Err(errors) = validate_spec(&s) else {
            unreachable!()
        };
        assert!(
            errors.0[0].message.ends_with("name one of: cache, web"),
            "{errors}"
        );

        let mut c = container("web");
        c.depends_on = vec![depends("web")];
        assert_only(
            &spec(vec![c]),
            "containerDefinitions[0].dependsOn[0].containerName",
        );
    }

    #[test]
    fn depends_on_cycle() {
        let mut a = container("a");
        a.depends_on = vec![depends("b")];
        let mut b = container("b");
        b.depends_on = vec![depends("c")];
        let mut c = container("c");
        c.depends_on = vec![depends("a")];
        assert_only(&spec(vec![a, b, c]), "containerDefinitions[0].dependsOn");

        // A container reached twice without a cycle (a diamond) is fine.
        let mut a = container("a");
        a.depends_on = vec![depends("b"), depends("c")];
        let mut b = container("b");
        b.depends_on = vec![depends("d")];
        let mut c = container("c");
        c.depends_on = vec![depends("d")];
        assert_eq!(validate_spec(&spec(vec![a, b, c, container("d")])), Ok(()));

        // The cycle is found wherever it starts.
        let mut b = container("b");
        b.depends_on = vec![depends("c")];
        let mut c = container("c");
        c.depends_on = vec![depends("b")];
        assert_only(
            &spec(vec![container("a"), b, c]),
            "containerDefinitions[1].dependsOn",
        );
    }

    #[test]
    fn a_long_dependency_chain_does_not_exhaust_the_stack() {
        // Far beyond MAX_CONTAINERS, as a hostile or broken request may be;
        // validation must answer with errors rather than crash the server.
        let n = 50_000;
        let containers = (0..n)
            .map(|i| {
                let mut c = ContainerDefinition::new(format!("c{i}"), "i");
                c.memory = Some(8);
                if i + 1 < n {
                    c.depends_on = vec![depends(&format!("c{}", i + 1))];
                }
                c
            })
            .collect();
        let fields = error_fields(&spec(containers));
        assert!(fields.contains(&"containerDefinitions".to_string()));
        assert!(!fields.iter().any(|f| f.ends_with("dependsOn")), "no cycle");
    }

    #[test]
    fn unknown_target_messages_stay_short_with_many_containers() {
        let containers: Vec<_> = (0..200)
            .map(|i| {
                let mut c = container(&format!("c{i:03}"));
                c.depends_on = vec![depends("ghost")];
                c
            })
            .collect();
        let Err(errors) = validate_spec(&spec(containers)) else {
            unreachable!()
        };
        let unknown: Vec<_> = errors
            .0
            .iter()
            .filter(|e| e.field.ends_with("containerName"))
            .collect();
        assert_eq!(unknown.len(), 200);
        assert!(unknown[0].message.ends_with("c009, ..."), "{}", unknown[0]);
    }

    #[test]
    fn huge_cpu_values_do_not_overflow() {
        let mut a = container("a");
        a.cpu = u32::MAX;
        let mut b = container("b");
        b.cpu = u32::MAX;
        let mut s = spec(vec![a, b]);
        s.cpu = Some(1024);
        assert_eq!(
            error_fields(&s),
            vec![
                "containerDefinitions[0].cpu",
                "containerDefinitions[1].cpu",
                "cpu"
            ]
        );
    }

    #[test]
    fn task_cpu_below_the_containers_total() {
        let mut a = container("a");
        a.cpu = 512;
        let mut b = container("b");
        b.cpu = 768;
        let mut s = spec(vec![a, b]);
        s.cpu = Some(1024);
        assert_only(&s, "cpu");
    }

    #[test]
    fn too_large_definition() {
        let mut c = container("web");
        c.environment = vec![KeyValuePair {
            name: "BLOB".into(),
            value: "x".repeat(MAX_DEFINITION_BYTES),
        }];
        assert_only(&spec(vec![c]), "taskDefinition");
    }

    #[test]
    fn health_check_values_out_of_range() {
        type Change = fn(&mut HealthCheck);
        let cases: &[(Change, &str)] = &[
            (|h| h.interval = 4, "interval"),
            (|h| h.interval = 301, "interval"),
            (|h| h.timeout = 1, "timeout"),
            (|h| h.timeout = 61, "timeout"),
            (|h| h.retries = 0, "retries"),
            (|h| h.retries = 11, "retries"),
            (|h| h.start_period = 301, "startPeriod"),
            // Within its own range but not shorter than the interval.
            (
                |h| {
                    h.interval = 10;
                    h.timeout = 10
                },
                "timeout",
            ),
        ];
        for (change, field) in cases {
            let mut hc = health(&["CMD", "true"]);
            change(&mut hc);
            let mut c = container("web");
            c.health_check = Some(hc);
            assert_only(
                &spec(vec![c]),
                &format!("containerDefinitions[0].healthCheck.{field}"),
            );
        }
    }

    #[test]
    fn health_check_command_form() {
        for bad in [
            &[][..],
            &["CMD"][..],
            &["CMD-SHELL"][..],
            &["curl -f localhost"][..],
            &["cmd", "true"][..],
            &["SHELL", "true"][..],
        ] {
            let mut c = container("web");
            c.health_check = Some(health(bad));
            assert_only(
                &spec(vec![c]),
                "containerDefinitions[0].healthCheck.command",
            );
        }
    }

    #[test]
    fn restart_policy_bounds_name_the_field_and_the_fix() {
        let with = |policy: RestartPolicy| {
            let mut c = container("web");
            c.restart_policy = Some(policy);
            spec(vec![c])
        };
        // ECS's own bounds and default pass, enabled or not.
        for period in [60, 300, 1800] {
            let policy = RestartPolicy {
                restart_attempt_period_secs: period,
                ..RestartPolicy::enabled()
            };
            assert_eq!(validate_spec(&with(policy)), Ok(()), "{period}");
        }
        for period in [0, 59, 1801, u32::MAX] {
            for enabled in [true, false] {
                let policy = RestartPolicy {
                    enabled,
                    ignored_exit_codes: vec![0],
                    restart_attempt_period_secs: period,
                };
                let Err(errors) = validate_spec(&with(policy)) else {
                    panic!("{period} accepted");
                };
                assert_eq!(errors.0.len(), 1, "{errors}");
                let e = &errors.0[0];
                assert_eq!(
                    e.field,
                    "containerDefinitions[0].restartPolicy.restartAttemptPeriod"
                );
                assert!(
                    e.message
                        .starts_with("must be between 60 and 1800 seconds, not "),
                    "{e}"
                );
            }
        }

        let mut policy = RestartPolicy::enabled();
        policy.ignored_exit_codes = (0..50).collect();
        assert_eq!(validate_spec(&with(policy.clone())), Ok(()));
        policy.ignored_exit_codes.push(255);
        let Err(errors) = validate_spec(&with(policy)) else {
            panic!("51 codes accepted");
        };
        assert_eq!(
            errors.to_string(),
            "containerDefinitions[0].restartPolicy.ignoredExitCodes: 51 exit codes is too many; list at most 50"
        );
    }

    #[test]
    fn relative_working_directory() {
        let mut c = container("web");
        c.working_directory = Some("srv/app".into());
        assert_only(&spec(vec![c]), "containerDefinitions[0].workingDirectory");
    }

    #[test]
    fn mount_point_naming_an_unknown_volume() {
        let mut c = container("web");
        c.mount_points = vec![MountPoint {
            source_volume: "data".into(),
            container_path: "/data".into(),
            read_only: false,
        }];
        let mut s = spec(vec![c]);
        s.volumes = vec![Volume {
            name: "cache".into(),
            host_source_path: None,
        }];
        assert_only(&s, "containerDefinitions[0].mountPoints[0].sourceVolume");
    }

    #[test]
    fn volumes_need_unique_names_and_absolute_paths() {
        let mut s = spec(vec![container("web")]);
        s.volumes = vec![
            Volume {
                name: "data".into(),
                host_source_path: Some("srv/data".into()),
            },
            Volume {
                name: "data".into(),
                host_source_path: None,
            },
        ];
        assert_eq!(
            error_fields(&s),
            vec!["volumes[0].host.sourcePath", "volumes[1].name"]
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut a = container("a");
        a.image.clear();
        a.memory = Some(2);
        a.working_directory = Some("rel".into());
        a.port_mappings = vec![port(0, None)];
        let mut b = container("a");
        b.depends_on = vec![depends("ghost")];
        let mut s = spec(vec![a, b]);
        s.family = "bad family".into();
        assert_eq!(
            error_fields(&s),
            vec![
                "family",
                "containerDefinitions[0].image",
                "containerDefinitions[0].memory",
                "containerDefinitions[0].portMappings[0].containerPort",
                "containerDefinitions[0].workingDirectory",
                "containerDefinitions[1].name",
                "containerDefinitions[1].dependsOn[0].containerName",
            ]
        );
    }

    #[test]
    fn names_follow_ecs_rules() {
        assert!(check_name("family", "web-app_2").is_ok());
        assert!(check_name("family", "").is_err());
        assert!(check_name("family", "web.app").is_err());
        assert!(check_name("family", &"a".repeat(MAX_NAME_LEN)).is_ok());
        assert!(check_name("family", &"a".repeat(MAX_NAME_LEN + 1)).is_err());
    }
}
