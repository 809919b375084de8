//! Reading service files written the way ECS users already write them: the
//! JSON that `aws ecs create-service --cli-input-json` takes, or YAML with the
//! same field names. Every problem is reported at once with its field path;
//! ECS fields Berth does not use are listed so the CLI can warn about them.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::error::{EcsError, ErrorType};
use crate::taskdef::FileFormat;
use berth_types::error::{FieldError, ValidationErrors};
use berth_types::service::{
    BlueGreen, CircuitBreaker, CreateServiceInput, DeploymentConfigurationInput,
    DeploymentController, LoadBalancer, SchedulingStrategy, TrafficShift, UpdateServiceInput,
    DEFAULT_DEREGISTRATION_DELAY_SECS,
};

/// A service read from a file, with the fields Berth did not use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedService {
    pub input: CreateServiceInput,
    pub ignored_fields: Vec<String>,
}

/// ECS CreateService fields that Berth accepts and ignores (they concern
/// AWS's own infrastructure).
const IGNORED: &[&str] = &[
    "launchType",
    "capacityProviderStrategy",
    "platformVersion",
    "serviceRegistries",
    "networkConfiguration",
    "role",
    "clientToken",
    "enableECSManagedTags",
    "propagateTags",
    "enableExecuteCommand",
    "serviceConnectConfiguration",
    "volumeConfigurations",
    "availabilityZoneRebalancing",
];

pub fn parse_service(text: &str, format: FileFormat) -> Result<ParsedService, ValidationErrors> {
    let value: Value = match format {
        FileFormat::Json => parse_json(text)?,
        FileFormat::Yaml => parse_yaml(text)?,
        FileFormat::Auto if text.trim_start().starts_with('{') => parse_json(text)?,
        FileFormat::Auto => parse_yaml(text)?,
    };
    let Value::Object(top) = value else {
        return Err(FieldError::new(
            "",
            "the file must hold one object (the CreateService input)",
        )
        .into());
    };
    let mut r = Reader::default();
    let mut input = CreateServiceInput::default();
    // ECS keeps the controller beside the deployment configuration; Berth
    // keeps it inside, whichever order the file gives them in.
    let mut controller = None;
    for (key, value) in &top {
        match key.as_str() {
            "cluster" => input.cluster = r.string(key, value),
            "serviceName" => input.name = r.string(key, value),
            "taskDefinition" => input.task_definition = r.string(key, value),
            "desiredCount" => input.desired_count = Some(r.u32(key, value)),
            "schedulingStrategy" => {
                let text = r.string(key, value);
                match SchedulingStrategy::parse(&text) {
                    Some(s) => input.scheduling_strategy = s,
                    None => r.error(key, format!("{text:?} is not REPLICA or DAEMON")),
                }
            }
            "placementStrategy" => input.placement_strategies = r.placement_strategies(key, value),
            "placementConstraints" => {
                input.placement_constraints = r.placement_constraints(key, value)
            }
            "deploymentConfiguration" => {
                input.deployment_configuration = r.deployment_configuration(key, value)
            }
            "deploymentController" => controller = Some(r.deployment_controller(key, value)),
            "loadBalancers" => {
                for (i, item) in r.array(key, value).iter().enumerate() {
                    let path = format!("{key}[{i}]");
                    if let Some(lb) = r.load_balancer(&path, item) {
                        input.load_balancers.push(lb);
                    }
                }
            }
            "healthCheckGracePeriodSeconds" => {
                input.health_check_grace_period_secs = r.u32(key, value)
            }
            "tags" => {
                for (path, k, v) in r.pairs(key, value, "key", "value") {
                    match k {
                        Some(k) => {
                            input.tags.insert(k, v.unwrap_or_default());
                        }
                        None => r.error(&format!("{path}.key"), "required".into()),
                    }
                }
            }
            other if IGNORED.contains(&other) => r.ignored.push(other.to_string()),
            other => r.error(
                other,
                "unknown field; see `berth service create --help` for the fields Berth reads"
                    .into(),
            ),
        }
    }
    if controller.is_some() {
        input.deployment_configuration.controller = controller;
    }
    if r.errors.is_empty() {
        Ok(ParsedService {
            input,
            ignored_fields: r.ignored,
        })
    } else {
        Err(ValidationErrors(r.errors))
    }
}

fn parse_json(text: &str) -> Result<Value, ValidationErrors> {
    serde_json::from_str(text).map_err(|e| {
        FieldError::new(
            "",
            format!(
                "not valid JSON: {e} (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
        .into()
    })
}

fn parse_yaml(text: &str) -> Result<Value, ValidationErrors> {
    serde_yaml::from_str(text)
        .map_err(|e| FieldError::new("", format!("not valid YAML: {e}")).into())
}

#[derive(Default)]
struct Reader {
    errors: Vec<FieldError>,
    ignored: Vec<String>,
}

impl Reader {
    fn error(&mut self, path: &str, message: String) {
        self.errors.push(FieldError::new(path, message));
    }

    fn string(&mut self, path: &str, value: &Value) -> String {
        match value {
            Value::String(s) => s.clone(),
            other => {
                self.error(path, format!("must be a string, not {}", kind(other)));
                String::new()
            }
        }
    }

    fn u32(&mut self, path: &str, value: &Value) -> u32 {
        match value.as_u64().map(u32::try_from) {
            Some(Ok(n)) => n,
            _ => {
                self.error(
                    path,
                    format!("must be a whole number from 0 to {}, not {value}", u32::MAX),
                );
                0
            }
        }
    }

    fn bool(&mut self, path: &str, value: &Value) -> bool {
        match value {
            Value::Bool(b) => *b,
            other => {
                self.error(path, format!("must be true or false, not {}", kind(other)));
                false
            }
        }
    }

    fn array<'v>(&mut self, path: &str, value: &'v Value) -> &'v [Value] {
        match value {
            Value::Array(items) => items,
            other => {
                self.error(path, format!("must be a list, not {}", kind(other)));
                &[]
            }
        }
    }

    fn object(&mut self, path: &str, value: &Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map.clone(),
            other => {
                self.error(path, format!("must be an object, not {}", kind(other)));
                Map::new()
            }
        }
    }

    /// A list of objects with two string fields (`{"type": ..., "field":
    /// ...}`): each item's path and its two values, where present; any other
    /// field is an error.
    fn pairs(
        &mut self,
        key: &str,
        value: &Value,
        first: &str,
        second: &str,
    ) -> Vec<(String, Option<String>, Option<String>)> {
        let mut out = Vec::new();
        for (i, item) in self.array(key, value).iter().enumerate() {
            let path = format!("{key}[{i}]");
            let fields = self.object(&path, item);
            let a = fields
                .get(first)
                .map(|v| self.string(&format!("{path}.{first}"), v));
            let b = fields
                .get(second)
                .map(|v| self.string(&format!("{path}.{second}"), v));
            self.unknown(&path, &fields, &[first, second]);
            out.push((path, a, b));
        }
        out
    }

    /// ECS's `placementStrategy` list as Berth's strategy expressions.
    fn placement_strategies(&mut self, key: &str, value: &Value) -> Vec<String> {
        let mut out = Vec::new();
        for (path, kind, field) in self.pairs(key, value, "type", "field") {
            match (kind.as_deref(), field) {
                        (Some("random"), _) => out.push("random".into()),
                        (Some(kind @ ("binpack" | "spread")), Some(field)) => {
                            // ECS names the instance id field instanceId.
                            out.push(format!("{kind}:{field}"))
                        }
                        (Some("binpack" | "spread"), None) => {
                            self.error(&format!("{path}.field"), "required for binpack (cpu or memory) and spread (instanceId or attribute:NAME)".into())
                        }
                        (Some(other), _) => self.error(
                            &format!("{path}.type"),
                            format!("{other:?} is not binpack, spread or random"),
                        ),
                        (None, _) => self.error(&format!("{path}.type"), "required".into()),
                    }
        }
        out
    }

    /// ECS's `placementConstraints` list as Berth's constraint expressions.
    fn placement_constraints(&mut self, key: &str, value: &Value) -> Vec<String> {
        let mut out = Vec::new();
        for (path, kind, expression) in self.pairs(key, value, "type", "expression") {
            match (kind.as_deref(), expression) {
                (Some("distinctInstance"), _) => out.push("distinctInstance".into()),
                (Some("memberOf"), Some(e)) => out.push(format!("memberOf({e})")),
                (Some("memberOf"), None) => self.error(
                    &format!("{path}.expression"),
                    "required for memberOf".into(),
                ),
                (Some(other), _) => self.error(
                    &format!("{path}.type"),
                    format!("{other:?} is not distinctInstance or memberOf"),
                ),
                (None, _) => self.error(&format!("{path}.type"), "required".into()),
            }
        }
        out
    }

    fn unknown(&mut self, path: &str, fields: &Map<String, Value>, known: &[&str]) {
        for key in fields.keys() {
            if !known.contains(&key.as_str()) {
                self.error(
                    &format!("{path}.{key}"),
                    format!("unknown field; use {}", known.join(", ")),
                );
            }
        }
    }

    /// `{"type": "ECS"}` (rolling, also `ROLLING`) or `{"type":
    /// "BLUE_GREEN", "trafficShift": {...}, "bakeTimeSeconds": N}`; a bare
    /// string names the type.
    fn deployment_controller(&mut self, path: &str, value: &Value) -> DeploymentController {
        let fields = match value {
            Value::String(kind) => {
                Map::from_iter([("type".to_string(), Value::String(kind.clone()))])
            }
            other => self.object(path, other),
        };
        self.unknown(path, &fields, &["type", "trafficShift", "bakeTimeSeconds"]);
        let kind = fields
            .get("type")
            .map(|v| self.string(&format!("{path}.type"), v))
            .unwrap_or_else(|| "ECS".into());
        match kind.to_ascii_uppercase().as_str() {
            "ECS" | "ROLLING" => {
                for extra in ["trafficShift", "bakeTimeSeconds"] {
                    if fields.contains_key(extra) {
                        self.error(
                            &format!("{path}.{extra}"),
                            "only for type BLUE_GREEN; remove it or set type: BLUE_GREEN".into(),
                        );
                    }
                }
                DeploymentController::Rolling
            }
            "BLUE_GREEN" => {
                let traffic = match fields.get("trafficShift") {
                    None => TrafficShift::AllAtOnce,
                    Some(v) => self.traffic_shift(&format!("{path}.trafficShift"), v),
                };
                let bake_time_secs = fields
                    .get("bakeTimeSeconds")
                    .map(|v| self.u32(&format!("{path}.bakeTimeSeconds"), v))
                    .unwrap_or(0);
                DeploymentController::BlueGreen(BlueGreen {
                    traffic,
                    bake_time_secs,
                })
            }
            "CODE_DEPLOY" => {
                self.error(
                    &format!("{path}.type"),
                    "Berth has no CodeDeploy; its native blue/green is type BLUE_GREEN with a trafficShift".into(),
                );
                DeploymentController::Rolling
            }
            _ => {
                self.error(
                    &format!("{path}.type"),
                    format!("{kind:?} is not supported; use ECS (rolling) or BLUE_GREEN"),
                );
                DeploymentController::Rolling
            }
        }
    }

    fn traffic_shift(&mut self, path: &str, value: &Value) -> TrafficShift {
        let fields = self.object(path, value);
        self.unknown(path, &fields, &["type", "percent", "intervalSeconds"]);
        let kind = fields
            .get("type")
            .map(|v| self.string(&format!("{path}.type"), v))
            .unwrap_or_default();
        let number = |r: &mut Self, name: &str| match fields.get(name) {
            Some(v) => r.u32(&format!("{path}.{name}"), v),
            None => {
                r.error(
                    &format!("{path}.{name}"),
                    format!("required for type {kind}"),
                );
                0
            }
        };
        match kind.to_ascii_uppercase().as_str() {
            "ALL_AT_ONCE" => TrafficShift::AllAtOnce,
            "CANARY" => TrafficShift::Canary {
                percent: number(self, "percent"),
                interval_secs: number(self, "intervalSeconds"),
            },
            "LINEAR" => TrafficShift::Linear {
                percent: number(self, "percent"),
                interval_secs: number(self, "intervalSeconds"),
            },
            _ => {
                self.error(
                    &format!("{path}.type"),
                    format!("{kind:?} is not ALL_AT_ONCE, CANARY or LINEAR"),
                );
                TrafficShift::AllAtOnce
            }
        }
    }

    /// ECS's loadBalancers entry with a Berth load balancer `name` (ECS's
    /// classic `loadBalancerName` is read as the name too).
    fn load_balancer(&mut self, path: &str, value: &Value) -> Option<LoadBalancer> {
        let fields = self.object(path, value);
        if fields.contains_key("targetGroupArn") {
            self.error(
                &format!("{path}.targetGroupArn"),
                "Berth has no target groups; name the Berth load balancer (what berth-lb serves) with name".into(),
            );
        }
        self.unknown(
            path,
            &fields,
            &[
                "name",
                "loadBalancerName",
                "containerName",
                "containerPort",
                "deregistrationDelaySeconds",
                "targetGroupArn",
            ],
        );
        let name = fields
            .get("name")
            .or_else(|| fields.get("loadBalancerName"))
            .map(|v| self.string(&format!("{path}.name"), v));
        let container_name = fields
            .get("containerName")
            .map(|v| self.string(&format!("{path}.containerName"), v));
        let container_port = fields
            .get("containerPort")
            .map(|v| self.u32(&format!("{path}.containerPort"), v));
        let deregistration_delay_secs = fields
            .get("deregistrationDelaySeconds")
            .map(|v| self.u32(&format!("{path}.deregistrationDelaySeconds"), v))
            .unwrap_or(DEFAULT_DEREGISTRATION_DELAY_SECS);
        for (field, missing) in [
            ("name", name.is_none()),
            ("containerName", container_name.is_none()),
            ("containerPort", container_port.is_none()),
        ] {
            if missing {
                self.error(&format!("{path}.{field}"), "required".into());
            }
        }
        Some(LoadBalancer {
            name: name?,
            container_name: container_name?,
            container_port: container_port?,
            deregistration_delay_secs,
        })
    }

    fn deployment_configuration(
        &mut self,
        path: &str,
        value: &Value,
    ) -> DeploymentConfigurationInput {
        let fields = self.object(path, value);
        let mut config = DeploymentConfigurationInput::default();
        let mut known: BTreeMap<&str, bool> = BTreeMap::new();
        for (key, value) in &fields {
            let at = format!("{path}.{key}");
            known.insert(key.as_str(), true);
            match key.as_str() {
                "minimumHealthyPercent" => config.minimum_healthy_percent = Some(self.u32(&at, value)),
                "maximumPercent" => config.maximum_percent = Some(self.u32(&at, value)),
                // Berth's own: the deadline of a deployment, in seconds.
                "deploymentTimeoutSeconds" => config.timeout_secs = Some(u64::from(self.u32(&at, value))),
                "deploymentCircuitBreaker" => {
                    let breaker = self.object(&at, value);
                    let mut cb = CircuitBreaker::default();
                    for (k, v) in &breaker {
                        let here = format!("{at}.{k}");
                        match k.as_str() {
                            "enable" => cb.enable = self.bool(&here, v),
                            "rollback" => cb.rollback = self.bool(&here, v),
                            // Berth's own: failed tasks that fail a deployment.
                            "threshold" => cb.threshold = Some(self.u32(&here, v)),
                            _ => self.error(&here, "unknown field; use enable, rollback, threshold".into()),
                        }
                    }
                    config.circuit_breaker = Some(cb);
                }
                "alarms" | "bakeTimeInMinutes" | "lifecycleHooks" | "strategy" => self.ignored.push(at),
                _ => self.error(&at, "unknown field; use minimumHealthyPercent, maximumPercent, deploymentCircuitBreaker, deploymentTimeoutSeconds".into()),
            }
        }
        config
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

// ---- the same requests through the ECS API ---------------------------------
//
// A file may carry ECS fields that concern AWS's own infrastructure and the
// CLI warns about them; an API caller gets no warning, so through the API a
// field Berth would not act on is refused, unless its value asks for nothing
// (launchType EC2, an empty list, a false flag, a client token).

fn unsupported(field: &str, instead: &str) -> EcsError {
    EcsError::new(
        ErrorType::UnsupportedFeature,
        format!("{field} is not supported by Berth; {instead}"),
    )
}

fn is_empty_value(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => items.is_empty(),
        Value::Object(fields) => fields.is_empty(),
        Value::String(text) => text.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(_) => false,
    }
}

/// Whether an ECS-only field's value changes nothing in Berth; if it
/// would, the refusal saying what to use instead.
fn check_ecs_only(field: &str, value: &Value) -> Result<(), EcsError> {
    let text = value.as_str();
    let no_tags = "a service does not copy tags onto its tasks; leave it out (or NONE/false) and tag tasks with TagResource";
    let harmless = match field {
        "launchType" => matches!(text, Some("EC2" | "EXTERNAL")) || value.is_null(),
        "propagateTags" => matches!(text, Some("NONE")) || value.is_null(),
        "availabilityZoneRebalancing" => matches!(text, Some("DISABLED")) || value.is_null(),
        "serviceConnectConfiguration" => {
            value.get("enabled") == Some(&Value::Bool(false)) || is_empty_value(value)
        }
        "clientToken" => true,
        _ => is_empty_value(value),
    };
    if harmless {
        return Ok(());
    }
    Err(match field {
        "launchType" => unsupported(
            &format!("launchType {value}"),
            "tasks run on the instances registered in the cluster: use EXTERNAL (or EC2)",
        ),
        "capacityProviderStrategy" => unsupported(
            field,
            "tasks are placed on the cluster's registered instances; choose among them with placementConstraints",
        ),
        "platformVersion" => unsupported(field, "it applies to Fargate only; leave it out"),
        "serviceRegistries" | "serviceConnectConfiguration" => unsupported(
            field,
            "a service's tasks are found by DNS as SERVICE.CLUSTER.berth without registries; load balancers (loadBalancers) spread traffic",
        ),
        "networkConfiguration" => unsupported(
            field,
            "give the task definition networkMode task (awsvpc) for a task address of its own",
        ),
        "role" => unsupported(
            field,
            "Berth has no IAM roles and its load balancers need none; leave role out",
        ),
        "enableECSManagedTags" | "propagateTags" => unsupported(field, no_tags),
        "enableExecuteCommand" => unsupported(
            field,
            "read a task's output with GetTaskLogs (berth task logs)",
        ),
        "volumeConfigurations" => unsupported(
            field,
            "declare host or scratch volumes in the task definition",
        ),
        "availabilityZoneRebalancing" => unsupported(
            &format!("availabilityZoneRebalancing {value}"),
            "Berth has no availability zones; spread tasks with placementStrategy spread over an instance attribute (attribute:NAME)",
        ),
        "vpcLatticeConfigurations" => unsupported(
            field,
            "reach a service through its DNS name SERVICE.CLUSTER.berth or a load balancer",
        ),
        "loadBalancers" => unsupported(
            "changing loadBalancers",
            "a service's load balancers are set when it is created; create a new service with them",
        ),
        other => unsupported(other, "leave it out"),
    })
}

/// Settings inside `deploymentConfiguration` that a file may carry and
/// Berth does not act on: refused unless they ask for nothing.
fn check_deployment_configuration(config: &mut Map<String, Value>) -> Result<(), EcsError> {
    if let Some(strategy) = config.remove("strategy") {
        if !matches!(strategy.as_str(), Some("ROLLING")) && !strategy.is_null() {
            return Err(unsupported(
                &format!("deploymentConfiguration.strategy {strategy}"),
                "for blue/green give deploymentController {\"type\": \"BLUE_GREEN\"}",
            ));
        }
    }
    if let Some(alarms) = config.remove("alarms") {
        if alarms
            .get("enable")
            .is_some_and(|e| e != &Value::Bool(false))
        {
            return Err(unsupported(
                "deploymentConfiguration.alarms",
                "Berth has no CloudWatch alarms; the circuit breaker (deploymentCircuitBreaker) fails a deployment on failed tasks",
            ));
        }
    }
    for field in ["bakeTimeInMinutes", "lifecycleHooks"] {
        if let Some(value) = config.remove(field) {
            if !is_empty_value(&value) {
                return Err(unsupported(
                    &format!("deploymentConfiguration.{field}"),
                    "a blue/green bake time is deploymentController.bakeTimeSeconds; Berth has no lifecycle hooks",
                ));
            }
        }
    }
    Ok(())
}

fn body_object(body: &[u8]) -> Result<Map<String, Value>, EcsError> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(_) => Err(EcsError::new(
            ErrorType::Serialization,
            "the request body must be a JSON object",
        )),
        Err(e) => Err(EcsError::new(
            ErrorType::Serialization,
            format!("the request body is not valid JSON: {e}"),
        )),
    }
}

/// Replaces a "name or ARN" member by the name Berth's reader expects.
fn to_name(
    fields: &mut Map<String, Value>,
    key: &str,
    read: impl Fn(&str) -> Result<String, crate::arn::ArnError>,
) -> Result<(), EcsError> {
    if let Some(Value::String(text)) = fields.get(key) {
        let name = read(text)?;
        fields.insert(key.into(), Value::String(name));
    }
    Ok(())
}

/// CreateService through the API: the file reader's conversion, with the
/// cluster and task definition given by name or ARN and ECS-only fields
/// refused unless they change nothing.
pub fn create_service_request(body: &[u8]) -> Result<CreateServiceInput, EcsError> {
    let mut fields = body_object(body)?;
    to_name(&mut fields, "cluster", |c| {
        crate::arn::cluster_name(Some(c))
    })?;
    to_name(&mut fields, "taskDefinition", crate::arn::task_definition)?;
    for field in IGNORED {
        if let Some(value) = fields.remove(*field) {
            check_ecs_only(field, &value)?;
        }
    }
    if let Some(Value::Object(config)) = fields.get_mut("deploymentConfiguration") {
        check_deployment_configuration(config)?;
    }
    let text = Value::Object(fields).to_string();
    let parsed = parse_service(&text, FileFormat::Json)?;
    // Everything the reader would ignore was taken out above; anything left
    // is refused rather than dropped.
    if let Some(field) = parsed.ignored_fields.first() {
        return Err(unsupported(field, "leave it out"));
    }
    Ok(parsed.input)
}

/// UpdateService through the API: what Berth can change (task definition,
/// desired count, deployment configuration and controller, placement,
/// health check grace period, a forced new deployment); anything else that
/// would change something is refused.
pub fn update_service_request(body: &[u8]) -> Result<UpdateServiceInput, EcsError> {
    let fields = body_object(body)?;
    let mut r = Reader::default();
    let mut input = UpdateServiceInput::default();
    let mut cluster_in_arn = None;
    let mut controller = None;
    for (key, value) in &fields {
        match key.as_str() {
            "cluster" => {
                let text = r.string(key, value);
                input.cluster = crate::arn::cluster_name(Some(&text))?;
            }
            "service" => {
                let text = r.string(key, value);
                let (cluster, name) = crate::arn::service(&text)?;
                cluster_in_arn = cluster;
                input.name = name;
            }
            "taskDefinition" => {
                let text = r.string(key, value);
                input.task_definition = Some(crate::arn::task_definition(&text)?);
            }
            "desiredCount" => input.desired_count = Some(r.u32(key, value)),
            "deploymentConfiguration" => {
                let mut value = value.clone();
                if let Value::Object(config) = &mut value {
                    check_deployment_configuration(config)?;
                }
                input.deployment_configuration = r.deployment_configuration(key, &value);
            }
            "deploymentController" => controller = Some(r.deployment_controller(key, value)),
            "placementStrategy" => {
                input.placement_strategies = Some(r.placement_strategies(key, value))
            }
            "placementConstraints" => {
                input.placement_constraints = Some(r.placement_constraints(key, value))
            }
            "healthCheckGracePeriodSeconds" => {
                input.health_check_grace_period_secs = Some(r.u32(key, value))
            }
            "forceNewDeployment" => input.force_new_deployment = r.bool(key, value),
            other
                if IGNORED.contains(&other)
                    || matches!(other, "loadBalancers" | "vpcLatticeConfigurations") =>
            {
                check_ecs_only(other, value)?
            }
            other => r.error(other, "unknown field of UpdateService".into()),
        }
    }
    if controller.is_some() {
        input.deployment_configuration.controller = controller;
    }
    if input.name.is_empty() {
        r.error("service", "required: the service's name or ARN".into());
    }
    if let Some(cluster) = cluster_in_arn {
        if input.cluster.is_empty() {
            input.cluster = cluster;
        } else if cluster != input.cluster {
            r.error(
                "service",
                format!(
                    "the ARN names cluster {cluster:?}, the request {:?}",
                    input.cluster
                ),
            );
        }
    }
    if !r.errors.is_empty() {
        return Err(ValidationErrors(r.errors).into());
    }
    if let Some(field) = r.ignored.first() {
        return Err(unsupported(field, "leave it out"));
    }
    Ok(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_ecs_create_service_input() {
        let text = r#"{
            "cluster": "prod",
            "serviceName": "web",
            "taskDefinition": "web:3",
            "desiredCount": 4,
            "launchType": "EC2",
            "placementStrategy": [{"type": "spread", "field": "attribute:zone"}, {"type": "binpack", "field": "memory"}],
            "placementConstraints": [{"type": "distinctInstance"}, {"type": "memberOf", "expression": "attribute:os == linux"}],
            "deploymentConfiguration": {
                "minimumHealthyPercent": 50, "maximumPercent": 150,
                "deploymentCircuitBreaker": {"enable": true, "rollback": true}
            },
            "healthCheckGracePeriodSeconds": 30,
            "tags": [{"key": "team", "value": "a"}]
        }"#;
        let parsed = parse_service(text, FileFormat::Auto).unwrap();
        let i = parsed.input;
        assert_eq!(
            (
                i.cluster.as_str(),
                i.name.as_str(),
                i.task_definition.as_str()
            ),
            ("prod", "web", "web:3")
        );
        assert_eq!(i.desired_count, Some(4));
        assert_eq!(
            i.placement_strategies,
            ["spread:attribute:zone", "binpack:memory"]
        );
        assert_eq!(
            i.placement_constraints,
            ["distinctInstance", "memberOf(attribute:os == linux)"]
        );
        let c = i.deployment_configuration;
        assert_eq!(
            (c.minimum_healthy_percent, c.maximum_percent),
            (Some(50), Some(150))
        );
        assert_eq!(
            c.circuit_breaker,
            Some(CircuitBreaker {
                enable: true,
                rollback: true,
                threshold: None
            })
        );
        assert_eq!(i.health_check_grace_period_secs, 30);
        assert_eq!(i.tags.get("team").map(String::as_str), Some("a"));
        assert_eq!(parsed.ignored_fields, ["launchType"]);
    }

    #[test]
    fn load_balancers_and_a_blue_green_controller_are_read() {
        let text = "serviceName: web\ntaskDefinition: web\n\
            deploymentController:\n  type: BLUE_GREEN\n  trafficShift: {type: CANARY, percent: 10, intervalSeconds: 120}\n  bakeTimeSeconds: 300\n\
            deploymentConfiguration: {maximumPercent: 200}\n\
            loadBalancers:\n  - {name: public, containerName: web, containerPort: 8080}\n  - {loadBalancerName: admin, containerName: web, containerPort: 9090, deregistrationDelaySeconds: 0}\n";
        let i = parse_service(text, FileFormat::Auto).unwrap().input;
        assert_eq!(
            i.deployment_configuration.controller,
            Some(DeploymentController::BlueGreen(BlueGreen {
                traffic: TrafficShift::Canary {
                    percent: 10,
                    interval_secs: 120
                },
                bake_time_secs: 300,
            }))
        );
        assert_eq!(i.deployment_configuration.maximum_percent, Some(200));
        assert_eq!(
            i.load_balancers,
            vec![
                LoadBalancer {
                    name: "public".into(),
                    container_name: "web".into(),
                    container_port: 8080,
                    deregistration_delay_secs: DEFAULT_DEREGISTRATION_DELAY_SECS,
                },
                LoadBalancer {
                    name: "admin".into(),
                    container_name: "web".into(),
                    container_port: 9090,
                    deregistration_delay_secs: 0,
                },
            ]
        );
        let short = parse_service(
            "serviceName: web\ntaskDefinition: web\ndeploymentController: BLUE_GREEN\n",
            FileFormat::Auto,
        )
        .unwrap()
        .input;
        assert!(matches!(
            short.deployment_configuration.controller,
            Some(DeploymentController::BlueGreen(BlueGreen {
                traffic: TrafficShift::AllAtOnce,
                ..
            }))
        ));
        let bad = parse_service(
            "serviceName: web\ntaskDefinition: web\ndeploymentController: {type: BLUE_GREEN, trafficShift: {type: CANARY, percent: 10}}\n",
            FileFormat::Auto,
        )
        .unwrap_err();
        let fields: Vec<&str> = bad.fields().collect();
        assert_eq!(
            fields,
            ["deploymentController.trafficShift.intervalSeconds"]
        );
    }

    #[test]
    fn yaml_works_and_daemon_is_read() {
        let text =
            "serviceName: node-exporter\ntaskDefinition: exporter\nschedulingStrategy: DAEMON\n";
        let i = parse_service(text, FileFormat::Auto).unwrap().input;
        assert_eq!(i.scheduling_strategy, SchedulingStrategy::Daemon);
        assert_eq!(i.desired_count, None);
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let text = r#"{"serviceName": 3, "desiredCount": -1, "schedulingStrategy": "BOTH",
            "placementStrategy": [{"type": "spread"}],
            "deploymentConfiguration": {"maximumPercent": "lots", "deploymentCircuitBreaker": {"enable": "yes"}},
            "deploymentController": {"type": "CODE_DEPLOY"}, "surprise": 1,
            "loadBalancers": [{"targetGroupArn": "arn:aws:x", "containerName": "web"}]}"#;
        let errors = parse_service(text, FileFormat::Json).unwrap_err();
        let fields: Vec<&str> = errors.fields().collect();
        for expected in [
            "serviceName",
            "desiredCount",
            "schedulingStrategy",
            "placementStrategy[0].field",
            "deploymentConfiguration.maximumPercent",
            "deploymentConfiguration.deploymentCircuitBreaker.enable",
            "deploymentController.type",
            "surprise",
            "loadBalancers[0].targetGroupArn",
            "loadBalancers[0].name",
            "loadBalancers[0].containerPort",
        ] {
            assert!(
                fields.contains(&expected),
                "{expected} missing from {fields:?}"
            );
        }
        let syntax = parse_service("{", FileFormat::Json).unwrap_err();
        assert!(syntax.to_string().contains("not valid JSON"), "{syntax}");
    }

    #[test]
    fn create_service_through_the_api_takes_arns_and_refuses_what_would_change_something() {
        let body = br#"{
            "cluster": "arn:aws:ecs:eu-west-1:1:cluster/prod",
            "serviceName": "web",
            "taskDefinition": "arn:aws:ecs:eu-west-1:1:task-definition/web:3",
            "desiredCount": 2,
            "launchType": "EXTERNAL",
            "clientToken": "abc",
            "enableExecuteCommand": false,
            "propagateTags": "NONE",
            "deploymentConfiguration": {"maximumPercent": 200, "strategy": "ROLLING"}
        }"#;
        let input = create_service_request(body).unwrap();
        assert_eq!(
            (input.cluster.as_str(), input.task_definition.as_str()),
            ("prod", "web:3")
        );
        assert_eq!(input.deployment_configuration.maximum_percent, Some(200));
        let refused = [
            (r#""launchType": "FARGATE""#, "launchType"),
            (
                r#""networkConfiguration": {"awsvpcConfiguration": {}}"#,
                "networkConfiguration",
            ),
            (r#""role": "arn:aws:iam::1:role/x""#, "role"),
            (
                r#""serviceRegistries": [{"registryArn": "x"}]"#,
                "serviceRegistries",
            ),
            (r#""enableExecuteCommand": true"#, "enableExecuteCommand"),
            (r#""propagateTags": "SERVICE""#, "propagateTags"),
            (
                r#""availabilityZoneRebalancing": "ENABLED""#,
                "availabilityZoneRebalancing",
            ),
            (
                r#""deploymentConfiguration": {"alarms": {"enable": true, "alarmNames": ["a"]}}"#,
                "alarms",
            ),
            (
                r#""deploymentConfiguration": {"strategy": "BLUE_GREEN"}"#,
                "strategy",
            ),
        ];
        for (member, field) in refused {
            let body = format!(r#"{{"serviceName": "web", "taskDefinition": "web:1", {member}}}"#);
            let e = create_service_request(body.as_bytes()).unwrap_err();
            assert_eq!(e.kind, ErrorType::UnsupportedFeature, "{member}");
            assert!(e.message.contains(field), "{member}: {e}");
            assert!(e.message.contains("; "), "says what to do instead: {e}");
        }
        let e = create_service_request(
            br#"{"serviceName": "web", "taskDefinition": "web:1", "desiredCount": -1}"#,
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorType::InvalidParameter);
        assert!(e.message.contains("desiredCount"), "{e}");
        let e = create_service_request(b"[1]").unwrap_err();
        assert_eq!(e.kind, ErrorType::Serialization);
    }

    #[test]
    fn update_service_takes_what_berth_can_change_and_refuses_the_rest() {
        let body = br#"{
            "service": "arn:aws:ecs:r:1:service/prod/web",
            "taskDefinition": "web:4",
            "desiredCount": 3,
            "deploymentConfiguration": {"minimumHealthyPercent": 50},
            "deploymentController": {"type": "BLUE_GREEN"},
            "placementStrategy": [{"type": "spread", "field": "instanceId"}],
            "placementConstraints": [],
            "healthCheckGracePeriodSeconds": 20,
            "forceNewDeployment": true,
            "capacityProviderStrategy": []
        }"#;
        let input = update_service_request(body).unwrap();
        assert_eq!(
            (input.cluster.as_str(), input.name.as_str()),
            ("prod", "web")
        );
        assert_eq!(input.task_definition.as_deref(), Some("web:4"));
        assert_eq!(input.desired_count, Some(3));
        assert_eq!(
            input.deployment_configuration.minimum_healthy_percent,
            Some(50)
        );
        assert!(matches!(
            input.deployment_configuration.controller,
            Some(DeploymentController::BlueGreen(_))
        ));
        assert_eq!(
            input.placement_strategies.as_deref(),
            Some(["spread:instanceId".to_string()].as_slice())
        );
        assert_eq!(input.placement_constraints.as_deref(), Some([].as_slice()));
        assert_eq!(input.health_check_grace_period_secs, Some(20));
        assert!(input.force_new_deployment);
        let untouched = update_service_request(br#"{"service": "web"}"#).unwrap();
        assert_eq!(
            untouched.placement_strategies, None,
            "left out keeps the current"
        );
        let refused = [
            r#"{"service": "web", "loadBalancers": [{"name": "x"}]}"#,
            r#"{"service": "web", "launchType": "FARGATE"}"#,
            r#"{"service": "web", "networkConfiguration": {"a": 1}}"#,
        ];
        for body in refused {
            let e = update_service_request(body.as_bytes()).unwrap_err();
            assert_eq!(e.kind, ErrorType::UnsupportedFeature, "{body}");
        }
        for body in [
            r#"{"desiredCount": 1}"#,
            r#"{"service": "web", "colour": "blue"}"#,
            r#"{"cluster": "a", "service": "arn:aws:ecs:r:1:service/b/web"}"#,
        ] {
            let e = update_service_request(body.as_bytes()).unwrap_err();
            assert_eq!(e.kind, ErrorType::InvalidParameter, "{body}");
        }
    }
}
