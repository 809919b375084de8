//! Reading task definition files written the way ECS users already write
//! them: the JSON that `aws ecs register-task-definition --cli-input-json`
//! takes, or YAML with the same field names.
//!
//! The file is first read into private, deliberately loose structs in which
//! every leaf is "any value". Checking the types ourselves, while converting
//! into the domain types, is what lets a wrong type be reported with its
//! exact field path (`containerDefinitions[0].portMappings[1].containerPort`)
//! instead of a bare serde message, and lets one pass report every problem.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use berth_types::error::{FieldError, ValidationErrors};
use berth_types::taskdef::{
    ContainerDefinition, ContainerDependency, DependencyCondition, HealthCheck, KeyValuePair,
    MountPoint, NetworkMode, PortMapping, Protocol, RestartPolicy, Tag, TaskDefinitionSpec, Volume,
};
use berth_types::validate;

/// The syntax of a task definition file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Json,
    Yaml,
    /// JSON if the first non-whitespace character is `{`, YAML otherwise.
    Auto,
}

/// A task definition read from a file, with the fields Berth did not use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedTaskDefinition {
    pub spec: TaskDefinitionSpec,
    /// Paths of fields present in the file that Berth ignores (ECS-only or
    /// unknown), as they appear in the file, e.g.
    /// `containerDefinitions[0].logConfiguration`, so the CLI can warn.
    pub ignored_fields: Vec<String>,
}

/// Parses a task definition file into a spec without validating it; fails
/// only on what cannot be represented (syntax, wrong types, negative numbers,
/// unsupported values).
pub fn parse_task_definition(
    text: &str,
    format: FileFormat,
) -> Result<ParsedTaskDefinition, ValidationErrors> {
    let reading = read(text, format)?;
    if reading.errors.is_empty() {
        Ok(ParsedTaskDefinition {
            spec: reading.spec,
            ignored_fields: reading.ignored_fields,
        })
    } else {
        Err(ValidationErrors(reading.errors))
    }
}

/// Parses a task definition file, then runs `validate::validate_spec`;
/// returns every problem found by either.
pub fn load_task_definition(
    text: &str,
    format: FileFormat,
) -> Result<ParsedTaskDefinition, ValidationErrors> {
    let reading = read(text, format)?;
    let mut errors = reading.errors;
    if let Err(found) = validate::validate_spec(&reading.spec) {
        // A field that could not be read was given a stand-in value; what
        // validation says about the stand-in would only confuse.
        errors.extend(
            found
                .0
                .into_iter()
                .filter(|e| !reading.unreadable.iter().any(|u| covers(u, &e.field))),
        );
    }
    if errors.is_empty() {
        Ok(ParsedTaskDefinition {
            spec: reading.spec,
            ignored_fields: reading.ignored_fields,
        })
    } else {
        Err(ValidationErrors(errors))
    }
}

/// Whether `field` is `prefix` or lies inside it.
fn covers(prefix: &str, field: &str) -> bool {
    match field.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('.') || rest.starts_with('['),
        None => false,
    }
}

// ---- reading the syntax ----------------------------------------------------

/// A best-effort spec plus what went wrong building it. `unreadable` holds
/// the fields (or subtrees) that got a stand-in value.
struct Reading {
    spec: TaskDefinitionSpec,
    ignored_fields: Vec<String>,
    errors: Vec<FieldError>,
    unreadable: Vec<String>,
}

/// Errors only when there is no document to convert at all.
fn read(text: &str, format: FileFormat) -> Result<Reading, ValidationErrors> {
    // Editors on Windows like to start files with a byte order mark, which
    // the JSON parser rejects.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim().is_empty() {
        return Err(FieldError::new(
            "file",
            "is empty; write a task definition with at least \"family\" and \"containerDefinitions\"",
        )
        .into());
    }
    let format = match format {
        FileFormat::Auto if text.trim_start().starts_with('{') => FileFormat::Json,
        FileFormat::Auto => FileFormat::Yaml,
        other => other,
    };
    let mut ignored_fields = Vec::new();
    let root: Obj<TaskDefDto> = match format {
        FileFormat::Json => {
            let mut de = serde_json::Deserializer::from_str(text);
            serde_ignored::deserialize(&mut de, |path| ignored_fields.push(path_text(&path)))
                .and_then(|root| de.end().map(|()| root))
                .map_err(json_error)?
        }
        _ => {
            let de = serde_yaml::Deserializer::from_str(text);
            serde_ignored::deserialize(de, |path| ignored_fields.push(path_text(&path)))
                .map_err(yaml_error)?
        }
    };
    let mut root = match root {
        Obj::Value(root) => root,
        Obj::Absent => {
            return Err(FieldError::new(
                "file",
                "holds no value; write a task definition with at least \"family\" and \"containerDefinitions\"",
            )
            .into())
        }
        Obj::Wrong(found) => {
            return Err(FieldError::new(
                "file",
                format!(
                    "expected an object with the task definition's fields (\"family\", \"containerDefinitions\", ...), found {found}"
                ),
            )
            .into())
        }
    };

    let mut reader = Reader::default();
    let dto = match std::mem::take(&mut root.task_definition) {
        Obj::Absent => root,
        Obj::Value(mut inner) => {
            unwrap_describe_output(&mut reader, &mut inner, root);
            *inner
        }
        Obj::Wrong(found) => {
            reader.bad(
                "taskDefinition",
                format!("expected an object holding the task definition, found {found}"),
            );
            root
        }
    };
    let spec = reader.task_definition(&dto);
    // Refused rather than ignored: running without them would weaken the
    // sandbox or put data somewhere other than the file says.
    ignored_fields.retain(|path| match refusal(path) {
        Some(message) => {
            reader.bad(path, message);
            false
        }
        None => true,
    });
    Ok(Reading {
        spec,
        ignored_fields,
        errors: reader.errors,
        unreadable: reader.unreadable,
    })
}

const SECURITY_FIX: &str =
    "Berth does not support it yet and will not run the task without it; remove the field";
const VOLUME_FIX: &str = "Berth volumes are host paths (`host.sourcePath`) or scratch directories that are deleted with the task (no `host`); remove it and use one of those, rather than have the data land in a scratch directory";

/// Why an ECS field Berth does not implement must not be dropped with a
/// warning: it changes the sandbox, where secrets come from or where logs and
/// data go. Harmless AWS-only fields (`taskRoleArn`, `runtimePlatform`, ...)
/// return `None` and stay warnings.
fn refusal(path: &str) -> Option<String> {
    let path = path.strip_prefix("taskDefinition.").unwrap_or(path);
    let (scope, field) = match path.split_once("].") {
        Some((scope, field)) => (scope.split('[').next().unwrap_or(scope), field),
        None => ("", path),
    };
    let why = match (scope, field) {
        ("", "pidMode" | "ipcMode") => {
            "every task gets its own PID and IPC namespaces; sharing the host's is not supported"
        }
        ("", "proxyConfiguration") => "App Mesh proxies are not supported",
        ("containerDefinitions", "linuxParameters") => {
            "capabilities, devices, init, shared memory and tmpfs settings are not supported"
        }
        ("containerDefinitions", "logConfiguration") => {
            "log drivers are not supported: the agent keeps container logs on the host (read them with `berth task logs`)"
        }
        ("containerDefinitions", "dockerSecurityOptions" | "systemControls") => {
            "security options and sysctls are not supported"
        }
        ("containerDefinitions", "volumesFrom") => {
            return Some(
                "is not supported; declare the volume in `volumes` and mount it with `mountPoints`"
                    .into(),
            )
        }
        (
            "volumes",
            "efsVolumeConfiguration"
            | "dockerVolumeConfiguration"
            | "fsxWindowsFileServerVolumeConfiguration",
        ) => return Some(format!("is not supported: {VOLUME_FIX}")),
        _ => return None,
    };
    Some(format!("is not supported ({why}): {SECURITY_FIX}"))
}

/// `aws ecs describe-task-definition` prints `{"taskDefinition": {...}}`,
/// with the tags (when asked for) beside the definition rather than in it.
fn unwrap_describe_output(reader: &mut Reader, inner: &mut TaskDefDto, outer: TaskDefDto) {
    let beside = [
        ("family", !outer.family.is_null()),
        (
            "containerDefinitions",
            !outer.container_definitions.is_absent(),
        ),
        ("cpu", !outer.cpu.is_null()),
        ("memory", !outer.memory.is_null()),
        ("networkMode", !outer.network_mode.is_null()),
        ("volumes", !outer.volumes.is_absent()),
    ];
    let beside: Vec<&str> = beside
        .iter()
        .filter(|(_, present)| *present)
        .map(|(name, _)| *name)
        .collect();
    if !beside.is_empty() {
        reader.bad(
            "taskDefinition",
            format!(
                "the file has a \"taskDefinition\" wrapper and also {} beside it; move every field inside \"taskDefinition\" or drop the wrapper",
                beside.join(", ")
            ),
        );
    }
    if !inner.task_definition.is_absent() {
        reader.bad(
            "taskDefinition",
            "holds another \"taskDefinition\"; unwrap it once only",
        );
    }
    if !outer.tags.is_absent() {
        if inner.tags.is_absent() {
            inner.tags = outer.tags;
        } else {
            reader.bad(
                "tags",
                "given both inside and beside \"taskDefinition\"; keep one of them",
            );
        }
    }
}

/// `containerDefinitions[0].logConfiguration`, the way the fields are named
/// everywhere else, rather than serde_ignored's `containerDefinitions.0...`.
fn path_text(path: &serde_ignored::Path) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", path_text(parent)),
        Path::Map { parent, key } => {
            let parent = path_text(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => path_text(parent),
    }
}

fn json_error(error: serde_json::Error) -> ValidationErrors {
    let full = error.to_string();
    let (line, column) = (error.line(), error.column());
    let suffix = format!(" at line {line} column {column}");
    let what = full.strip_suffix(&suffix).unwrap_or(&full);
    let message = match error.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            format!("invalid JSON at line {line}, column {column}: {what}")
        }
        _ if line > 0 => format!("cannot read the JSON at line {line}, column {column}: {what}"),
        _ => format!("cannot read the JSON: {what}"),
    };
    FieldError::new("file", message).into()
}

fn yaml_error(error: serde_yaml::Error) -> ValidationErrors {
    let full = error.to_string();
    let message = match error.location() {
        Some(at) => {
            // libyaml repeats the location inside its message.
            let repeated = format!(" at line {} column {}", at.line(), at.column());
            let what = full.replacen(&repeated, "", 1);
            format!(
                "invalid YAML at line {}, column {}: {what}",
                at.line(),
                at.column()
            )
        }
        None => format!("invalid YAML: {full}"),
    };
    FieldError::new("file", message).into()
}

// ---- loose values ----------------------------------------------------------

/// Any value at all; its type is checked during conversion.
#[derive(Debug, Default)]
enum Loose {
    /// Absent or null: ECS treats both as "not set".
    #[default]
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    List(Vec<Loose>),
    /// The contents are not needed: no leaf of a task definition is a map.
    Object,
}

impl Loose {
    fn is_null(&self) -> bool {
        matches!(self, Loose::Null)
    }
}

/// What was found instead of the expected type, for messages.
fn describe(value: &Loose) -> String {
    match value {
        Loose::Null => "null".to_string(),
        Loose::Bool(b) => b.to_string(),
        Loose::Int(i) => format!("the number {i}"),
        Loose::Float(f) => format!("the number {f}"),
        Loose::Str(s) if s.chars().count() > 40 => {
            let start: String = s.chars().take(40).collect();
            format!("the string {start:?}...")
        }
        Loose::Str(s) => format!("the string {s:?}"),
        Loose::List(_) => "a list".to_string(),
        Loose::Object => "an object".to_string(),
    }
}

impl<'de> Deserialize<'de> for Loose {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(LooseVisitor)
    }
}

struct LooseVisitor;

impl<'de> Visitor<'de> for LooseVisitor {
    type Value = Loose;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Loose, E> {
        Ok(Loose::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Loose, E> {
        Ok(Loose::Int(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Loose, E> {
        Ok(Loose::Int(v.into()))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Loose, E> {
        Ok(Loose::Int(v))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Loose, E> {
        // Anything this large is "too large" for every field anyway.
        Ok(Loose::Int(i128::try_from(v).unwrap_or(i128::MAX)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Loose, E> {
        Ok(Loose::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Loose, E> {
        Ok(Loose::Str(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Loose, E> {
        Ok(Loose::Str(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Loose, E> {
        Ok(Loose::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Loose, E> {
        Ok(Loose::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Loose, D::Error> {
        deserializer.deserialize_any(LooseVisitor)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Loose, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Loose>()? {
            items.push(item);
        }
        Ok(Loose::List(items))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, _data: A) -> Result<Loose, A::Error> {
        Err(tag_error())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Loose, A::Error> {
        // Drained as values rather than `IgnoredAny`, which serde_ignored
        // would report as ignored fields although it is a type error.
        while map.next_entry::<Loose, Loose>()?.is_some() {}
        Ok(Loose::Object)
    }
}

/// A field that must hold a list of `T`; anything else is kept as a
/// description for the error message.
#[derive(Default)]
enum List<T> {
    #[default]
    Absent,
    Items(Vec<T>),
    Wrong(String),
}

impl<T> List<T> {
    fn is_absent(&self) -> bool {
        matches!(self, List::Absent)
    }
}

/// A field that must hold an object read as `T`.
#[derive(Default)]
enum Obj<T> {
    #[default]
    Absent,
    Value(T),
    Wrong(String),
}

impl<T> Obj<T> {
    fn is_absent(&self) -> bool {
        matches!(self, Obj::Absent)
    }
}

/// How a structured field takes each kind of input. The list and object
/// cases get the deserializer's own `SeqAccess`/`MapAccess`, so serde_ignored
/// keeps tracking the path of every field below.
trait Shape<'de>: Sized {
    const EXPECTING: &'static str;
    fn absent() -> Self;
    fn wrong(found: String) -> Self;

    fn from_seq<A: SeqAccess<'de>>(seq: A) -> Result<Self, A::Error> {
        let found = LooseVisitor.visit_seq(seq)?;
        Ok(Self::wrong(describe(&found)))
    }

    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        let found = LooseVisitor.visit_map(map)?;
        Ok(Self::wrong(describe(&found)))
    }
}

impl<'de, T: Deserialize<'de>> Shape<'de> for List<T> {
    const EXPECTING: &'static str = "a list";

    fn absent() -> Self {
        List::Absent
    }

    fn wrong(found: String) -> Self {
        List::Wrong(found)
    }

    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<T>()? {
            items.push(item);
        }
        Ok(List::Items(items))
    }
}

impl<'de, T: Deserialize<'de>> Shape<'de> for Obj<T> {
    const EXPECTING: &'static str = "an object";

    fn absent() -> Self {
        Obj::Absent
    }

    fn wrong(found: String) -> Self {
        Obj::Wrong(found)
    }

    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Obj::Value)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ShapeVisitor(PhantomData))
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ShapeVisitor(PhantomData))
    }
}

struct ShapeVisitor<S>(PhantomData<S>);

impl<S> ShapeVisitor<S> {
    fn scalar<'de, E>(found: Result<Loose, E>) -> Result<S, E>
    where
        S: Shape<'de>,
    {
        found.map(|value| S::wrong(describe(&value)))
    }
}

impl<'de, S: Shape<'de>> Visitor<'de> for ShapeVisitor<S> {
    type Value = S;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(S::EXPECTING)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<S, E> {
        Self::scalar(LooseVisitor.visit_bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<S, E> {
        Self::scalar(LooseVisitor.visit_i64(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<S, E> {
        Self::scalar(LooseVisitor.visit_u64(v))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<S, E> {
        Self::scalar(LooseVisitor.visit_i128(v))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<S, E> {
        Self::scalar(LooseVisitor.visit_u128(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<S, E> {
        Self::scalar(LooseVisitor.visit_f64(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<S, E> {
        Self::scalar(LooseVisitor.visit_str(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<S, E> {
        Ok(S::absent())
    }

    fn visit_none<E: de::Error>(self) -> Result<S, E> {
        Ok(S::absent())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<S, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<S, A::Error> {
        S::from_seq(seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<S, A::Error> {
        S::from_map(map)
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, _data: A) -> Result<S, A::Error> {
        Err(tag_error())
    }
}

/// YAML tags (`!Ref x`, as in CloudFormation templates) reach serde as enums.
fn tag_error<E: de::Error>() -> E {
    E::custom("YAML tags such as !Ref are not supported; write the plain value")
}

// ---- the ECS shape ----------------------------------------------------------
//
// Only the fields Berth uses are named; serde_ignored reports the others.

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct TaskDefDto {
    family: Loose,
    container_definitions: List<Obj<ContainerDto>>,
    cpu: Loose,
    memory: Loose,
    network_mode: Loose,
    volumes: List<Obj<VolumeDto>>,
    tags: List<Obj<TagDto>>,
    /// The wrapper of `describe-task-definition` output.
    task_definition: Obj<Box<TaskDefDto>>,
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ContainerDto {
    name: Loose,
    image: Loose,
    cpu: Loose,
    memory: Loose,
    memory_reservation: Loose,
    port_mappings: List<Obj<PortMappingDto>>,
    environment: List<Obj<KeyValueDto>>,
    command: Loose,
    entry_point: Loose,
    essential: Loose,
    health_check: Obj<HealthCheckDto>,
    working_directory: Loose,
    user: Loose,
    stop_timeout: Loose,
    depends_on: List<Obj<DependencyDto>>,
    mount_points: List<Obj<MountPointDto>>,
    readonly_root_filesystem: Loose,
    restart_policy: Obj<RestartPolicyDto>,
    /// Read so that `false` passes silently and `true` is refused.
    privileged: Loose,
    secrets: List<Obj<SecretRefDto>>,
    repository_credentials: Obj<RepositoryCredentialsDto>,
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct SecretRefDto {
    name: Loose,
    value_from: Loose,
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct RepositoryCredentialsDto {
    credentials_parameter: Loose,
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct PortMappingDto {
    container_port: Loose,
    host_port: Loose,
    protocol: Loose,
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct KeyValueDto {
    name: Loose,
    value: Loose,
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct HealthCheckDto {
    command: Loose,
    interval: Loose,
    timeout: Loose,
    retries: Loose,
    start_period: Loose,
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct RestartPolicyDto {
    enabled: Loose,
    ignored_exit_codes: Loose,
    restart_attempt_period: Loose,
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct DependencyDto {
    container_name: Loose,
    condition: Loose,
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct MountPointDto {
    source_volume: Loose,
    container_path: Loose,
    read_only: Loose,
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct VolumeDto {
    name: Loose,
    host: Obj<HostDto>,
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct HostDto {
    source_path: Loose,
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct TagDto {
    key: Loose,
    value: Loose,
}

// ---- conversion into the domain types ----------------------------------------

const PORT_FIX: &str = "use 1 to 65535";
const CONTAINER_CPU_FIX: &str = "use CPU units, e.g. 256 (1024 units = one core)";
const CONTAINER_MEMORY_FIX: &str = "use MiB, e.g. 512";
const TASK_CPU_FIX: &str = "use CPU units like 256 or \"256\", or vCPUs like \"0.5 vCPU\"";
const TASK_MEMORY_FIX: &str = "use MiB like 512 or \"512\", or GB like \"2GB\"";

/// Converts while collecting every problem. Each unreadable field gets a
/// stand-in value so the rest of the file is still checked.
#[derive(Default)]
struct Reader {
    errors: Vec<FieldError>,
    unreadable: Vec<String>,
}

impl Reader {
    fn bad(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
        self.unreadable.push(field.to_string());
    }

    fn wrong_type(&mut self, field: &str, expected: &str, found: &Loose) {
        self.bad(
            field,
            format!("expected {expected}, found {}", describe(found)),
        );
    }

    fn string(&mut self, value: &Loose, field: &str) -> Option<String> {
        match value {
            Loose::Null => None,
            Loose::Str(s) => Some(s.clone()),
            other => {
                self.wrong_type(field, "a string", other);
                None
            }
        }
    }

    /// A string where YAML users naturally write a bare integer or boolean
    /// (`PORT: 8080`, `user: 1000`), which YAML then reads as one. A bare
    /// decimal is refused: `1.10` would come back as "1.1".
    fn text(&mut self, value: &Loose, field: &str) -> Option<String> {
        match value {
            Loose::Int(i) => Some(i.to_string()),
            Loose::Bool(b) => Some(b.to_string()),
            Loose::Float(f) => {
                self.bad(
                    field,
                    format!("expected a string, found the number {f}; put the value in quotes so it is kept exactly as written"),
                );
                None
            }
            other => self.string(other, field),
        }
    }

    fn boolean(&mut self, value: &Loose, field: &str) -> Option<bool> {
        match value {
            Loose::Null => None,
            Loose::Bool(b) => Some(*b),
            other => {
                self.wrong_type(field, "true or false", other);
                None
            }
        }
    }

    fn integer(&mut self, value: &Loose, field: &str, fix: &str) -> Option<i128> {
        match value {
            Loose::Null => None,
            Loose::Int(i) => Some(*i),
            // `as` saturates, and anything that large is refused below.
            Loose::Float(f) if f.is_finite() && f.fract() == 0.0 => Some(*f as i128),
            Loose::Float(f) => {
                self.bad(field, format!("{f} is not a whole number; {fix}"));
                None
            }
            Loose::Str(s) => {
                self.bad(
                    field,
                    format!("expected a number, found the string {s:?}; write the number without quotes"),
                );
                None
            }
            other => {
                self.wrong_type(field, "a number", other);
                None
            }
        }
    }

    fn uint(&mut self, value: &Loose, field: &str, fix: &str) -> Option<u32> {
        let n = self.integer(value, field, fix)?;
        if n < 0 {
            self.bad(field, format!("{n} is negative; {fix}"));
            return None;
        }
        match u32::try_from(n) {
            Ok(n) => Some(n),
            Err(_) => {
                self.bad(field, format!("{n} is too large; {fix}"));
                None
            }
        }
    }

    /// Anything a `u32` holds passes: the 1 to 65535 rule is validation's.
    fn port(&mut self, value: &Loose, field: &str) -> Option<u32> {
        let n = self.integer(value, field, PORT_FIX)?;
        match u32::try_from(n) {
            Ok(n) => Some(n),
            Err(_) => {
                self.bad(field, format!("{n} is not a port number; {PORT_FIX}"));
                None
            }
        }
    }

    fn strings(&mut self, value: &Loose, field: &str) -> Vec<String> {
        match value {
            Loose::Null => Vec::new(),
            Loose::List(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| match item {
                    Loose::Str(s) => Some(s.clone()),
                    other => {
                        self.wrong_type(&format!("{field}[{i}]"), "a string", other);
                        None
                    }
                })
                .collect(),
            Loose::Str(s) => {
                self.bad(
                    field,
                    format!(
                        "expected a list of strings, found the string {s:?}; write it as a list, e.g. [\"sh\", \"-c\", \"...\"]"
                    ),
                );
                Vec::new()
            }
            other => {
                self.wrong_type(field, "a list of strings", other);
                Vec::new()
            }
        }
    }

    fn object<'a, T>(&mut self, value: &'a Obj<T>, field: &str) -> Option<&'a T> {
        match value {
            Obj::Absent => None,
            Obj::Value(v) => Some(v),
            Obj::Wrong(found) => {
                self.bad(field, format!("expected an object, found {found}"));
                None
            }
        }
    }

    /// The entries of a list of objects with their paths; an entry that is
    /// not an object comes back as `None` so the caller keeps its place,
    /// which keeps later indexes in messages right.
    fn items<'a, T>(
        &mut self,
        value: &'a List<Obj<T>>,
        field: &str,
    ) -> Vec<(String, Option<&'a T>)> {
        match value {
            List::Absent => Vec::new(),
            List::Wrong(found) => {
                self.bad(field, format!("expected a list, found {found}"));
                Vec::new()
            }
            List::Items(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let at = format!("{field}[{i}]");
                    let item = match item {
                        Obj::Value(v) => Some(v),
                        Obj::Absent => {
                            self.bad(&at, "expected an object, found null");
                            None
                        }
                        Obj::Wrong(found) => {
                            self.bad(&at, format!("expected an object, found {found}"));
                            None
                        }
                    };
                    (at, item)
                })
                .collect(),
        }
    }

    fn task_definition(&mut self, dto: &TaskDefDto) -> TaskDefinitionSpec {
        let family = self.string(&dto.family, "family").unwrap_or_default();
        let container_definitions = self
            .items(&dto.container_definitions, "containerDefinitions")
            .into_iter()
            .map(|(at, c)| match c {
                Some(c) => self.container(c, &at),
                None => {
                    // A stand-in container has no memory; do not let it
                    // produce "no memory is set" on its own.
                    self.unreadable.push("memory".to_string());
                    ContainerDefinition::new("", "")
                }
            })
            .collect();
        let cpu = self.task_amount(&dto.cpu, "cpu", &[("vcpu", 1024)], TASK_CPU_FIX);
        let memory = self.task_amount(
            &dto.memory,
            "memory",
            &[("gib", 1024), ("gb", 1024), ("mib", 1), ("mb", 1)],
            TASK_MEMORY_FIX,
        );
        let network_mode = match &dto.network_mode {
            Loose::Null => NetworkMode::Host,
            Loose::Str(s) => match NetworkMode::parse(s) {
                Some(mode) => mode,
                None => {
                    self.bad(
                        "networkMode",
                        format!(
                            "{s:?} is not supported by Berth; use \"host\", \"bridge\", \"task\" (or its ECS name \"awsvpc\") or \"none\""
                        ),
                    );
                    NetworkMode::Host
                }
            },
            other => {
                self.wrong_type(
                    "networkMode",
                    "\"host\", \"bridge\", \"task\", \"awsvpc\" or \"none\"",
                    other,
                );
                NetworkMode::Host
            }
        };
        let volumes = self
            .items(&dto.volumes, "volumes")
            .into_iter()
            .map(|(at, v)| {
                let Some(v) = v else {
                    return Volume {
                        name: String::new(),
                        host_source_path: None,
                    };
                };
                let name = self
                    .string(&v.name, &format!("{at}.name"))
                    .unwrap_or_default();
                let host_source_path =
                    self.object(&v.host, &format!("{at}.host"))
                        .and_then(|host| {
                            self.string(&host.source_path, &format!("{at}.host.sourcePath"))
                        });
                Volume {
                    name,
                    host_source_path,
                }
            })
            .collect();
        let tags = self
            .items(&dto.tags, "tags")
            .into_iter()
            .map(|(at, t)| match t {
                Some(t) => Tag {
                    key: self
                        .string(&t.key, &format!("{at}.key"))
                        .unwrap_or_default(),
                    value: self
                        .text(&t.value, &format!("{at}.value"))
                        .unwrap_or_default(),
                },
                None => Tag {
                    key: String::new(),
                    value: String::new(),
                },
            })
            .collect();
        TaskDefinitionSpec {
            family,
            container_definitions,
            cpu,
            memory,
            network_mode,
            volumes,
            tags,
        }
    }

    /// Task-level cpu and memory: ECS takes a number or a string with an
    /// optional unit ("1 vCPU", "2GB", "1.5 GB").
    fn task_amount(
        &mut self,
        value: &Loose,
        field: &str,
        units: &[(&str, u128)],
        fix: &str,
    ) -> Option<u32> {
        let Loose::Str(text) = value else {
            return self.uint(value, field, fix);
        };
        let lower = text.trim().to_ascii_lowercase();
        let (number, factor) = units
            .iter()
            .find_map(|(unit, factor)| lower.strip_suffix(unit).map(|n| (n.trim_end(), *factor)))
            .unwrap_or((lower.as_str(), 1));
        let problem = match scale_decimal(number, factor) {
            Ok(n) => match u32::try_from(n) {
                Ok(n) => return Some(n),
                Err(_) => "is too large",
            },
            Err(AmountError::NotWhole) => "does not come to a whole number",
            Err(AmountError::TooLarge) => "is too large",
            Err(AmountError::NotNumber) => "is not an amount",
        };
        self.bad(field, format!("{text:?} {problem}; {fix}"));
        None
    }

    fn container(&mut self, dto: &ContainerDto, at: &str) -> ContainerDefinition {
        let f = |name: &str| format!("{at}.{name}");
        let name = self.string(&dto.name, &f("name")).unwrap_or_default();
        let image = self.string(&dto.image, &f("image")).unwrap_or_default();
        let mut c = ContainerDefinition::new(name, image);
        c.cpu = self
            .uint(&dto.cpu, &f("cpu"), CONTAINER_CPU_FIX)
            .unwrap_or(0);

        let before = self.errors.len();
        c.memory = self.uint(&dto.memory, &f("memory"), CONTAINER_MEMORY_FIX);
        c.memory_reservation = self.uint(
            &dto.memory_reservation,
            &f("memoryReservation"),
            CONTAINER_MEMORY_FIX,
        );
        if self.errors.len() > before {
            // The memory was given, just not readably.
            self.unreadable.push("memory".to_string());
        }

        c.port_mappings = self
            .items(&dto.port_mappings, &f("portMappings"))
            .into_iter()
            .map(|(pm_at, pm)| self.port_mapping(pm, &pm_at))
            .collect();
        c.environment = self
            .items(&dto.environment, &f("environment"))
            .into_iter()
            .map(|(env_at, env)| match env {
                Some(env) => KeyValuePair {
                    name: self
                        .string(&env.name, &format!("{env_at}.name"))
                        .unwrap_or_default(),
                    value: self
                        .text(&env.value, &format!("{env_at}.value"))
                        .unwrap_or_default(),
                },
                None => KeyValuePair {
                    name: String::new(),
                    value: String::new(),
                },
            })
            .collect();
        c.command = self.strings(&dto.command, &f("command"));
        c.entry_point = self.strings(&dto.entry_point, &f("entryPoint"));
        c.essential = self
            .boolean(&dto.essential, &f("essential"))
            .unwrap_or(true);
        c.health_check = self
            .object(&dto.health_check, &f("healthCheck"))
            .map(|hc| self.health_check(hc, &f("healthCheck")));
        if self.boolean(&dto.privileged, &f("privileged")) == Some(true) {
            self.bad(
                &f("privileged"),
                "is not supported: Berth runs every container unprivileged; remove the field or set it to false",
            );
        }
        c.working_directory = self.string(&dto.working_directory, &f("workingDirectory"));
        c.user = self.text(&dto.user, &f("user"));
        c.stop_timeout = self.uint(
            &dto.stop_timeout,
            &f("stopTimeout"),
            "use 0 to 3600 seconds",
        );
        c.depends_on = self
            .items(&dto.depends_on, &f("dependsOn"))
            .into_iter()
            .map(|(dep_at, dep)| {
                let Some(dep) = dep else {
                    return ContainerDependency {
                        container_name: String::new(),
                        condition: DependencyCondition::Start,
                    };
                };
                let container_name = self
                    .string(&dep.container_name, &format!("{dep_at}.containerName"))
                    .unwrap_or_default();
                let field = format!("{dep_at}.condition");
                let condition = match self.string(&dep.condition, &field) {
                    None => DependencyCondition::Start,
                    Some(text) => DependencyCondition::parse(&text).unwrap_or_else(|| {
                        self.bad(
                            &field,
                            format!("{text:?} is not a condition; use START, COMPLETE, SUCCESS or HEALTHY"),
                        );
                        DependencyCondition::Start
                    }),
                };
                ContainerDependency {
                    container_name,
                    condition,
                }
            })
            .collect();
        c.mount_points = self
            .items(&dto.mount_points, &f("mountPoints"))
            .into_iter()
            .map(|(mp_at, mp)| match mp {
                Some(mp) => MountPoint {
                    source_volume: self
                        .string(&mp.source_volume, &format!("{mp_at}.sourceVolume"))
                        .unwrap_or_default(),
                    container_path: self
                        .string(&mp.container_path, &format!("{mp_at}.containerPath"))
                        .unwrap_or_default(),
                    read_only: self
                        .boolean(&mp.read_only, &format!("{mp_at}.readOnly"))
                        .unwrap_or(false),
                },
                None => MountPoint {
                    source_volume: String::new(),
                    container_path: String::new(),
                    read_only: false,
                },
            })
            .collect();
        c.readonly_root_filesystem = self
            .boolean(&dto.readonly_root_filesystem, &f("readonlyRootFilesystem"))
            .unwrap_or(false);
        c.restart_policy = self
            .object(&dto.restart_policy, &f("restartPolicy"))
            .map(|rp| self.restart_policy(rp, &f("restartPolicy")));
        c.secrets = self
            .items(&dto.secrets, &f("secrets"))
            .into_iter()
            .map(|(at, s)| berth_types::secrets::SecretRef {
                name: s
                    .and_then(|s| self.string(&s.name, &format!("{at}.name")))
                    .unwrap_or_default(),
                value_from: s
                    .and_then(|s| self.string(&s.value_from, &format!("{at}.valueFrom")))
                    .unwrap_or_default(),
            })
            .collect();
        c.repository_credentials = self
            .object(&dto.repository_credentials, &f("repositoryCredentials"))
            .map(|rc| {
                self.string(
                    &rc.credentials_parameter,
                    &f("repositoryCredentials.credentialsParameter"),
                )
                .unwrap_or_default()
            });
        c
    }

    fn restart_policy(&mut self, dto: &RestartPolicyDto, at: &str) -> RestartPolicy {
        let f = |name: &str| format!("{at}.{name}");
        // ECS requires `enabled`: a policy object that does not say whether
        // it is on is more likely a mistake than a wish for either.
        let enabled = match self.boolean(&dto.enabled, &f("enabled")) {
            Some(enabled) => enabled,
            None => {
                if dto.enabled.is_null() {
                    self.bad(
                        &f("enabled"),
                        "required; set \"enabled\": true to restart the container when it exits, or false to keep the policy off",
                    );
                }
                false
            }
        };
        RestartPolicy {
            enabled,
            ignored_exit_codes: self.exit_codes(&dto.ignored_exit_codes, &f("ignoredExitCodes")),
            // The 60 to 1800 rule is validation's, like other ranges.
            restart_attempt_period_secs: self
                .uint(
                    &dto.restart_attempt_period,
                    &f("restartAttemptPeriod"),
                    "use 60 to 1800 seconds",
                )
                .unwrap_or(RestartPolicy::DEFAULT_ATTEMPT_PERIOD_SECS),
        }
    }

    /// A list of exit codes: whole numbers that fit an `i32`.
    fn exit_codes(&mut self, value: &Loose, field: &str) -> Vec<i32> {
        const FIX: &str = "use whole numbers, e.g. [0, 143]";
        let items = match value {
            Loose::Null => return Vec::new(),
            Loose::List(items) => items,
            other => {
                self.wrong_type(field, "a list of exit codes, e.g. [0, 143]", other);
                return Vec::new();
            }
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let at = format!("{field}[{i}]");
                if item.is_null() {
                    self.bad(&at, format!("expected an exit code, found null; {FIX}"));
                    return None;
                }
                let n = self.integer(item, &at, FIX)?;
                match i32::try_from(n) {
                    Ok(code) => Some(code),
                    Err(_) => {
                        self.bad(&at, format!("{n} is not an exit code; {FIX}"));
                        None
                    }
                }
            })
            .collect()
    }

    fn port_mapping(&mut self, dto: Option<&PortMappingDto>, at: &str) -> PortMapping {
        let stand_in = PortMapping {
            container_port: 0,
            host_port: None,
            protocol: Protocol::Tcp,
        };
        let Some(dto) = dto else {
            return stand_in;
        };
        let before = self.errors.len();
        let container_field = format!("{at}.containerPort");
        let container_port = self.port(&dto.container_port, &container_field);
        if dto.container_port.is_null() {
            self.bad(
                &container_field,
                "required; set the port the container listens on, e.g. 8080",
            );
        }
        let host_port = self.port(&dto.host_port, &format!("{at}.hostPort"));
        let protocol_field = format!("{at}.protocol");
        let protocol = match self.string(&dto.protocol, &protocol_field) {
            None => Protocol::Tcp,
            Some(p) if p.eq_ignore_ascii_case("tcp") => Protocol::Tcp,
            Some(p) if p.eq_ignore_ascii_case("udp") => Protocol::Udp,
            Some(p) => {
                self.bad(
                    &protocol_field,
                    format!("{p:?} is not a protocol; use \"tcp\" or \"udp\""),
                );
                Protocol::Tcp
            }
        };
        match container_port {
            Some(container_port) if self.errors.len() == before => PortMapping {
                container_port,
                host_port,
                protocol,
            },
            _ => {
                // Comparing a stand-in port with the other one would
                // produce made-up conflicts.
                self.unreadable.push(at.to_string());
                stand_in
            }
        }
    }

    fn health_check(&mut self, dto: &HealthCheckDto, at: &str) -> HealthCheck {
        let f = |name: &str| format!("{at}.{name}");
        HealthCheck {
            command: self.strings(&dto.command, &f("command")),
            interval: self
                .uint(&dto.interval, &f("interval"), "use 5 to 300 seconds")
                .unwrap_or(HealthCheck::DEFAULT_INTERVAL),
            timeout: self
                .uint(&dto.timeout, &f("timeout"), "use 2 to 60 seconds")
                .unwrap_or(HealthCheck::DEFAULT_TIMEOUT),
            retries: self
                .uint(&dto.retries, &f("retries"), "use 1 to 10")
                .unwrap_or(HealthCheck::DEFAULT_RETRIES),
            start_period: self
                .uint(&dto.start_period, &f("startPeriod"), "use 0 to 300 seconds")
                .unwrap_or(HealthCheck::DEFAULT_START_PERIOD),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum AmountError {
    NotNumber,
    NotWhole,
    TooLarge,
}

/// `number * factor` for a plain non-negative decimal such as "0.5", in
/// exact integer arithmetic so "0.1 vCPU" is refused rather than rounded.
fn scale_decimal(number: &str, factor: u128) -> Result<u128, AmountError> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !digits(whole) || !digits(fraction) {
        return Err(AmountError::NotNumber);
    }
    let whole = whole.trim_start_matches('0');
    let fraction = fraction.trim_end_matches('0');
    // Keeps every step below inside u128.
    if whole.len() > 18 || fraction.len() > 18 {
        return Err(if whole.len() > 18 {
            AmountError::TooLarge
        } else {
            AmountError::NotWhole
        });
    }
    let parse = |s: &str| -> u128 { s.bytes().fold(0, |n, b| n * 10 + u128::from(b - b'0')) };
    let scale = 10u128.pow(fraction.len() as u32);
    let total = (parse(whole) * scale + parse(fraction))
        .checked_mul(factor)
        .ok_or(AmountError::TooLarge)?;
    if total % scale == 0 {
        Ok(total / scale)
    } else {
        Err(AmountError::NotWhole)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors_of(result: Result<ParsedTaskDefinition, ValidationErrors>) -> ValidationErrors {
        match result {
            Ok(parsed) => panic!("expected errors, got {parsed:?}"),
            Err(e) => e,
        }
    }

    fn fields(errors: &ValidationErrors) -> Vec<&str> {
        errors.fields().collect()
    }

    fn message_for<'a>(errors: &'a ValidationErrors, field: &str) -> &'a str {
        errors
            .0
            .iter()
            .find(|e| e.field == field)
            .map(|e| e.message.as_str())
            .unwrap_or_else(|| panic!("no error on {field}: {errors}"))
    }

    /// A minimal valid file with one container whose JSON body is `container`.
    fn one_container(container: &str) -> String {
        format!(
            r#"{{"family": "t", "containerDefinitions": [{{"name": "a", "image": "img", "memory": 64 {container}}}]}}"#
        )
    }

    const ECS_JSON: &str = r#"
{
  "family": "shop",
  "taskRoleArn": "arn:aws:iam::123456789012:role/shop",
  "executionRoleArn": "arn:aws:iam::123456789012:role/ecsTaskExecutionRole",
  "networkMode": "host",
  "requiresCompatibilities": ["EC2"],
  "cpu": "1 vCPU",
  "memory": "2GB",
  "placementConstraints": [{"type": "memberOf", "expression": "attribute:ecs.os-type == linux"}],
  "containerDefinitions": [
    {
      "name": "web",
      "image": "registry.example.com/shop/web:1.4",
      "cpu": 512,
      "memory": 512,
      "memoryReservation": 256,
      "essential": true,
      "portMappings": [
        {"containerPort": 8080, "hostPort": 8080, "protocol": "tcp", "name": "http", "appProtocol": "http"},
        {"containerPort": 5353, "protocol": "UDP"}
      ],
      "environment": [
        {"name": "GREETING", "value": "hello"},
        {"name": "DB_HOST", "value": "localhost"}
      ],
      "command": ["serve", "--port", "8080"],
      "entryPoint": ["/bin/web"],
      "healthCheck": {
        "command": ["CMD-SHELL", "curl -f http://localhost:8080/ || exit 1"],
        "interval": 10,
        "retries": 5
      },
      "workingDirectory": "/srv",
      "user": "1000:1000",
      "stopTimeout": 20,
      "dependsOn": [{"containerName": "db", "condition": "HEALTHY"}],
      "mountPoints": [{"sourceVolume": "cache", "containerPath": "/cache", "readOnly": false}],
      "readonlyRootFilesystem": true,
      "restartPolicy": {"enabled": true, "ignoredExitCodes": [0, 143], "restartAttemptPeriod": 120},
      "ulimits": [{"name": "nofile", "softLimit": 1024, "hardLimit": 4096}]
    },
    {
      "name": "db",
      "image": "postgres:16",
      "essential": false,
      "memoryReservation": 256,
      "healthCheck": {"command": ["CMD", "pg_isready"]},
      "mountPoints": [{"sourceVolume": "data", "containerPath": "/var/lib/postgresql/data"}],
      "privileged": false
    }
  ],
  "volumes": [
    {"name": "data", "host": {"sourcePath": "/srv/shop/data"}},
    {"name": "cache"}
  ],
  "tags": [{"key": "team", "value": "shop"}],
  "runtimePlatform": {"operatingSystemFamily": "LINUX"}
}
"#;

    const ECS_YAML: &str = r#"
# The same definition as ECS_JSON.
family: shop
taskRoleArn: arn:aws:iam::123456789012:role/shop
executionRoleArn: arn:aws:iam::123456789012:role/ecsTaskExecutionRole
networkMode: host
requiresCompatibilities: [EC2]
cpu: 1 vCPU
memory: 2GB
placementConstraints:
  - type: memberOf
    expression: "attribute:ecs.os-type == linux"
containerDefinitions:
  - name: web
    image: registry.example.com/shop/web:1.4
    cpu: 512
    memory: 512
    memoryReservation: 256
    essential: true
    portMappings:
      - containerPort: 8080
        hostPort: 8080
        protocol: tcp
        name: http
        appProtocol: http
      - containerPort: 5353
        protocol: UDP
    environment:
      - name: GREETING
        value: hello
      - name: DB_HOST
        value: localhost
    command: [serve, --port, "8080"]
    entryPoint: [/bin/web]
    healthCheck:
      command: [CMD-SHELL, "curl -f http://localhost:8080/ || exit 1"]
      interval: 10
      retries: 5
    workingDirectory: /srv
    user: "1000:1000"
    stopTimeout: 20
    dependsOn:
      - containerName: db
        condition: HEALTHY
    mountPoints:
      - sourceVolume: cache
        containerPath: /cache
        readOnly: false
    readonlyRootFilesystem: true
    restartPolicy:
      enabled: true
      ignoredExitCodes: [0, 143]
      restartAttemptPeriod: 120
    ulimits:
      - name: nofile
        softLimit: 1024
        hardLimit: 4096
  - name: db
    image: postgres:16
    essential: false
    memoryReservation: 256
    healthCheck:
      command: [CMD, pg_isready]
    mountPoints:
      - sourceVolume: data
        containerPath: /var/lib/postgresql/data
    privileged: false
volumes:
  - name: data
    host:
      sourcePath: /srv/shop/data
  - name: cache
tags:
  - key: team
    value: shop
runtimePlatform:
  operatingSystemFamily: LINUX
"#;

    fn expected_shop() -> TaskDefinitionSpec {
        let mut web = ContainerDefinition::new("web", "registry.example.com/shop/web:1.4");
        web.cpu = 512;
        web.memory = Some(512);
        web.memory_reservation = Some(256);
        web.port_mappings = vec![
            PortMapping {
                container_port: 8080,
                host_port: Some(8080),
                protocol: Protocol::Tcp,
            },
            PortMapping {
                container_port: 5353,
                host_port: None,
                protocol: Protocol::Udp,
            },
        ];
        web.environment = vec![
            KeyValuePair {
                name: "GREETING".into(),
                value: "hello".into(),
            },
            KeyValuePair {
                name: "DB_HOST".into(),
                value: "localhost".into(),
            },
        ];
        web.command = vec!["serve".into(), "--port".into(), "8080".into()];
        web.entry_point = vec!["/bin/web".into()];
        web.health_check = Some(HealthCheck {
            command: vec![
                "CMD-SHELL".into(),
                "curl -f http://localhost:8080/ || exit 1".into(),
            ],
            interval: 10,
            timeout: HealthCheck::DEFAULT_TIMEOUT,
            retries: 5,
            start_period: HealthCheck::DEFAULT_START_PERIOD,
        });
        web.working_directory = Some("/srv".into());
        web.user = Some("1000:1000".into());
        web.stop_timeout = Some(20);
        web.depends_on = vec![ContainerDependency {
            container_name: "db".into(),
            condition: DependencyCondition::Healthy,
        }];
        web.mount_points = vec![MountPoint {
            source_volume: "cache".into(),
            container_path: "/cache".into(),
            read_only: false,
        }];
        web.readonly_root_filesystem = true;
        web.restart_policy = Some(RestartPolicy {
            enabled: true,
            ignored_exit_codes: vec![0, 143],
            restart_attempt_period_secs: 120,
        });

        let mut db = ContainerDefinition::new("db", "postgres:16");
        db.essential = false;
        db.memory_reservation = Some(256);
        db.health_check = Some(HealthCheck {
            command: vec!["CMD".into(), "pg_isready".into()],
            interval: HealthCheck::DEFAULT_INTERVAL,
            timeout: HealthCheck::DEFAULT_TIMEOUT,
            retries: HealthCheck::DEFAULT_RETRIES,
            start_period: HealthCheck::DEFAULT_START_PERIOD,
        });
        db.mount_points = vec![MountPoint {
            source_volume: "data".into(),
            container_path: "/var/lib/postgresql/data".into(),
            read_only: false,
        }];

        TaskDefinitionSpec {
            family: "shop".into(),
            container_definitions: vec![web, db],
            cpu: Some(1024),
            memory: Some(2048),
            network_mode: NetworkMode::Host,
            volumes: vec![
                Volume {
                    name: "data".into(),
                    host_source_path: Some("/srv/shop/data".into()),
                },
                Volume {
                    name: "cache".into(),
                    host_source_path: None,
                },
            ],
            tags: vec![Tag {
                key: "team".into(),
                value: "shop".into(),
            }],
        }
    }

    const SHOP_IGNORED: &[&str] = &[
        "taskRoleArn",
        "executionRoleArn",
        "requiresCompatibilities",
        "placementConstraints",
        "containerDefinitions[0].portMappings[0].name",
        "containerDefinitions[0].portMappings[0].appProtocol",
        "containerDefinitions[0].ulimits",
        "runtimePlatform",
    ];

    #[test]
    fn ecs_json_and_equivalent_yaml_give_the_same_spec_and_ignored_fields() {
        let json = load_task_definition(ECS_JSON, FileFormat::Json).unwrap();
        let yaml = load_task_definition(ECS_YAML, FileFormat::Yaml).unwrap();
        assert_eq!(json.spec, expected_shop());
        assert_eq!(yaml.spec, json.spec);
        assert_eq!(json.ignored_fields, SHOP_IGNORED);
        assert_eq!(yaml.ignored_fields, SHOP_IGNORED);
    }

    #[test]
    fn auto_detects_json_and_yaml() {
        let json = parse_task_definition(ECS_JSON, FileFormat::Auto).unwrap();
        let yaml = parse_task_definition(ECS_YAML, FileFormat::Auto).unwrap();
        assert_eq!(json.spec, expected_shop());
        assert_eq!(yaml.spec, expected_shop());
        // A byte order mark does not hide the brace.
        let bom = format!("\u{feff}{ECS_JSON}");
        assert_eq!(
            parse_task_definition(&bom, FileFormat::Auto).unwrap().spec,
            expected_shop()
        );
    }

    #[test]
    fn the_bridge_example_asks_for_a_dynamic_host_port() {
        let loaded = load_task_definition(
            include_str!("../../../deploy/examples/web-bridge.json"),
            FileFormat::Json,
        )
        .unwrap();
        assert!(
            loaded.ignored_fields.is_empty(),
            "{:?}",
            loaded.ignored_fields
        );
        assert_eq!(loaded.spec.network_mode, NetworkMode::Bridge);
        let dynamic: Vec<u32> = berth_types::resources::dynamic_mappings(&loaded.spec)
            .map(|(_, m)| m.container_port)
            .collect();
        assert_eq!(dynamic, vec![8080]);
    }

    #[test]
    fn the_task_mode_examples_take_no_host_port() {
        let web = load_task_definition(
            include_str!("../../../deploy/examples/web-task.json"),
            FileFormat::Json,
        )
        .unwrap();
        assert!(web.ignored_fields.is_empty(), "{:?}", web.ignored_fields);
        assert_eq!(web.spec.network_mode, NetworkMode::Task, "awsvpc");
        let reservation = berth_types::resources::reserve(&web.spec);
        assert!(reservation.ports.is_empty(), "{reservation:?}");
        assert_eq!(
            berth_types::resources::dynamic_mappings(&web.spec).count(),
            0
        );

        let lookup = load_task_definition(
            include_str!("../../../deploy/examples/lookup.json"),
            FileFormat::Json,
        )
        .unwrap();
        assert!(
            lookup.ignored_fields.is_empty(),
            "{:?}",
            lookup.ignored_fields
        );
        assert_eq!(lookup.spec.network_mode, NetworkMode::Bridge);
        assert_eq!(
            lookup.spec.container_definitions[0].command,
            ["lookup", "web", "8080"]
        );
    }

    #[test]
    fn example_files_parse_to_the_same_valid_spec() {
        let json = load_task_definition(
            include_str!("../../../deploy/examples/web.json"),
            FileFormat::Json,
        )
        .unwrap();
        let yaml = load_task_definition(
            include_str!("../../../deploy/examples/web.yaml"),
            FileFormat::Yaml,
        )
        .unwrap();
        assert_eq!(json.spec, yaml.spec);
        assert!(json.ignored_fields.is_empty(), "{:?}", json.ignored_fields);
        assert!(yaml.ignored_fields.is_empty(), "{:?}", yaml.ignored_fields);

        let spec = json.spec;
        assert_eq!(spec.family, "web");
        assert_eq!(spec.container_definitions.len(), 1);
        let web = &spec.container_definitions[0];
        assert_eq!(web.name, "web");
        assert_eq!(web.image, "localhost:5000/berth/testapp:1");
        assert!(web.essential);
        assert_eq!((web.memory, web.cpu), (Some(64), 128));
        assert_eq!(web.port_mappings[0].container_port, 8080);
        assert_eq!(
            web.environment,
            vec![KeyValuePair {
                name: "GREETING".into(),
                value: "hello".into()
            }]
        );
        // The example runs the project's test image, which has no shell:
        // its health check execs the program's own `check` mode.
        let hc = web.health_check.as_ref().unwrap();
        assert_eq!(hc.command, vec!["CMD", "/berth-testapp", "check", "8080"]);
    }

    #[test]
    fn task_level_cpu_and_memory_accept_numbers_and_ecs_strings() {
        let cases: &[(&str, &str, u32, u32)] = &[
            (r#""1 vCPU""#, r#""2GB""#, 1024, 2048),
            (r#""0.5 vCPU""#, r#""2 GB""#, 512, 2048),
            (r#""0.25vcpu""#, r#""1.5GB""#, 256, 1536),
            (r#""256""#, r#""512""#, 256, 512),
            ("256", "512", 256, 512),
            (r#""4 VCPU""#, r#""0.5 gb""#, 4096, 512),
            (r#"" 1024 ""#, r#""3072 MiB""#, 1024, 3072),
        ];
        for (cpu, memory, want_cpu, want_memory) in cases {
            let text = format!(
                r#"{{"family": "t", "cpu": {cpu}, "memory": {memory},
                    "containerDefinitions": [{{"name": "a", "image": "i"}}]}}"#
            );
            let spec = load_task_definition(&text, FileFormat::Json)
                .unwrap_or_else(|e| panic!("{cpu} / {memory}: {e}"))
                .spec;
            assert_eq!(spec.cpu, Some(*want_cpu), "cpu {cpu}");
            assert_eq!(spec.memory, Some(*want_memory), "memory {memory}");
        }
        // The same strings in YAML.
        let yaml = "family: t\ncpu: 0.5 vCPU\nmemory: 1.5 GB\ncontainerDefinitions:\n  - {name: a, image: i}\n";
        let spec = load_task_definition(yaml, FileFormat::Yaml).unwrap().spec;
        assert_eq!((spec.cpu, spec.memory), (Some(512), Some(1536)));
    }

    #[test]
    fn task_level_cpu_and_memory_refuse_what_is_not_an_amount() {
        let cases: &[(&str, &str, &str)] = &[
            ("cpu", r#""0.3 vCPU""#, "whole number"),
            ("cpu", r#""lots""#, "not an amount"),
            ("cpu", r#""0.5""#, "whole number"),
            ("cpu", "-256", "negative"),
            ("cpu", r#""5000000 vCPU""#, "too large"),
            ("memory", r#""2 TB""#, "not an amount"),
            ("memory", r#""-1GB""#, "not an amount"),
            ("memory", "1.5", "not a whole number"),
            ("memory", "true", "expected a number"),
            ("memory", r#""99999999999999999999999GB""#, "too large"),
        ];
        for (field, value, why) in cases {
            let text = format!(
                r#"{{"family": "t", "{field}": {value},
                    "containerDefinitions": [{{"name": "a", "image": "i", "memory": 64}}]}}"#
            );
            let errors = errors_of(parse_task_definition(&text, FileFormat::Json));
            assert_eq!(fields(&errors), vec![*field], "{value}");
            let message = message_for(&errors, field);
            assert!(message.contains(why), "{value}: {message}");
        }
    }

    #[test]
    fn describe_task_definition_output_is_unwrapped() {
        let text = r#"{
          "taskDefinition": {
            "taskDefinitionArn": "arn:aws:ecs:eu-west-1:123456789012:task-definition/web:3",
            "family": "web",
            "revision": 3,
            "status": "ACTIVE",
            "containerDefinitions": [
              {"name": "web", "image": "nginx:1.27", "memory": 128,
               "portMappings": [{"containerPort": 80, "hostPort": 80, "protocol": "tcp"}]}
            ],
            "requiresAttributes": [{"name": "com.amazonaws.ecs.capability.docker-remote-api.1.18"}],
            "compatibilities": ["EC2"],
            "registeredAt": "2024-05-01T10:00:00.000000+00:00",
            "registeredBy": "arn:aws:iam::123456789012:user/me"
          },
          "tags": [{"key": "team", "value": "edge"}]
        }"#;
        let parsed = load_task_definition(text, FileFormat::Auto).unwrap();
        assert_eq!(parsed.spec.family, "web");
        assert_eq!(parsed.spec.container_definitions[0].image, "nginx:1.27");
        assert_eq!(
            parsed.spec.tags,
            vec![Tag {
                key: "team".into(),
                value: "edge".into()
            }]
        );
        assert_eq!(
            parsed.ignored_fields,
            vec![
                "taskDefinition.taskDefinitionArn",
                "taskDefinition.revision",
                "taskDefinition.status",
                "taskDefinition.requiresAttributes",
                "taskDefinition.compatibilities",
                "taskDefinition.registeredAt",
                "taskDefinition.registeredBy",
            ]
        );

        // The same as YAML.
        let yaml = "taskDefinition:\n  family: web\n  revision: 3\n  containerDefinitions:\n    - name: web\n      image: nginx:1.27\n      memory: 128\n";
        let parsed = load_task_definition(yaml, FileFormat::Yaml).unwrap();
        assert_eq!(parsed.spec.family, "web");
        assert_eq!(parsed.ignored_fields, vec!["taskDefinition.revision"]);
    }

    #[test]
    fn wrapper_with_fields_beside_it_is_refused() {
        let text = r#"{"family": "web", "taskDefinition": {"family": "web",
            "containerDefinitions": [{"name": "a", "image": "i", "memory": 64}]}}"#;
        let errors = errors_of(parse_task_definition(text, FileFormat::Json));
        assert_eq!(fields(&errors), vec!["taskDefinition"]);
        assert!(errors.0[0].message.contains("family"), "{errors}");

        let text = r#"{"tags": [{"key": "a", "value": "1"}], "taskDefinition": {"family": "web",
            "containerDefinitions": [{"name": "a", "image": "i", "memory": 64}],
            "tags": [{"key": "b", "value": "2"}]}}"#;
        let errors = errors_of(parse_task_definition(text, FileFormat::Json));
        assert_eq!(fields(&errors), vec!["tags"]);

        let errors = errors_of(parse_task_definition(
            r#"{"taskDefinition": "web:3"}"#,
            FileFormat::Json,
        ));
        assert_eq!(fields(&errors), vec!["taskDefinition"]);
    }

    #[test]
    fn json_syntax_error_gives_line_and_column() {
        let text = "{\n  \"family\": \"web\"\n  \"containerDefinitions\": []\n}\n";
        let errors = errors_of(parse_task_definition(text, FileFormat::Json));
        assert_eq!(fields(&errors), vec!["file"]);
        let message = &errors.0[0].message;
        assert!(message.contains("line 3, column 3"), "{message}");
        assert!(message.contains("expected `,` or `}`"), "{message}");

        let truncated = "{\"family\": \"web\", \"containerDefinitions\": [";
        let errors = errors_of(parse_task_definition(truncated, FileFormat::Json));
        assert_eq!(fields(&errors), vec!["file"]);
        assert!(errors.0[0].message.contains("line 1"), "{errors}");

        let trailing = "{\"family\": \"web\"} x";
        let errors = errors_of(parse_task_definition(trailing, FileFormat::Json));
        assert!(errors.0[0].message.contains("trailing"), "{errors}");
    }

    #[test]
    fn yaml_syntax_error_gives_line_and_column() {
        let text = "family: web\ncontainerDefinitions:\n  - name: a\n    image: [unclosed\n";
        let errors = errors_of(parse_task_definition(text, FileFormat::Yaml));
        assert_eq!(fields(&errors), vec!["file"]);
        let message = &errors.0[0].message;
        assert!(message.contains("line "), "{message}");
        assert!(message.contains("column "), "{message}");
        assert!(message.contains("expected"), "{message}");
        // libyaml's own copy of the location is not repeated.
        assert_eq!(message.matches("line 5").count(), 1, "{message}");

        let errors = errors_of(parse_task_definition(
            "family: !Ref Name
",
            FileFormat::Yaml,
        ));
        assert_eq!(fields(&errors), vec!["file"]);
        assert!(errors.0[0].message.contains("!Ref"), "{errors}");
    }

    #[test]
    fn empty_or_non_object_files_are_refused() {
        for text in ["", "  \n", "null", "~"] {
            let errors = errors_of(parse_task_definition(text, FileFormat::Auto));
            assert_eq!(fields(&errors), vec!["file"], "{text:?}");
        }
        for text in ["[1, 2]", "- a\n- b\n", "just words"] {
            let errors = errors_of(parse_task_definition(text, FileFormat::Auto));
            assert_eq!(fields(&errors), vec!["file"], "{text:?}");
            assert!(
                errors.0[0].message.contains("expected an object"),
                "{errors}"
            );
        }
    }

    #[test]
    fn negative_and_out_of_range_numbers_name_the_exact_field() {
        let text = one_container(
            r#", "portMappings": [{"containerPort": 80}, {"containerPort": -1, "hostPort": 5000000000}]"#,
        );
        let errors = errors_of(parse_task_definition(&text, FileFormat::Json));
        assert_eq!(
            fields(&errors),
            vec![
                "containerDefinitions[0].portMappings[1].containerPort",
                "containerDefinitions[0].portMappings[1].hostPort",
            ]
        );
        for e in &errors.0 {
            assert!(e.message.contains("use 1 to 65535"), "{e}");
        }

        let text = r#"{"family": "t", "containerDefinitions": [{"name": "a", "image": "i",
            "memory": 5000000000, "cpu": -2, "memoryReservation": 1.5, "stopTimeout": -1,
            "healthCheck": {"command": ["CMD", "true"], "interval": -30}}]}"#;
        let errors = errors_of(load_task_definition(text, FileFormat::Json));
        assert_eq!(
            fields(&errors),
            vec![
                "containerDefinitions[0].cpu",
                "containerDefinitions[0].memory",
                "containerDefinitions[0].memoryReservation",
                "containerDefinitions[0].healthCheck.interval",
                "containerDefinitions[0].stopTimeout",
            ]
        );
        assert!(message_for(&errors, "containerDefinitions[0].memory").contains("too large"));
        assert!(message_for(&errors, "containerDefinitions[0].cpu").contains("negative"));
    }

    #[test]
    fn port_numbers_out_of_range_are_reported_by_validation_through_the_file() {
        let text = one_container(
            r#", "portMappings": [{"containerPort": 0}, {"containerPort": 70000}, {"containerPort": -5}]"#,
        );
        // Parsing alone only refuses what a port field cannot hold.
        let errors = errors_of(parse_task_definition(&text, FileFormat::Json));
        assert_eq!(
            fields(&errors),
            vec!["containerDefinitions[0].portMappings[2].containerPort"]
        );
        let errors = errors_of(load_task_definition(&text, FileFormat::Json));
        let mut got = fields(&errors);
        got.sort();
        assert_eq!(
            got,
            vec![
                "containerDefinitions[0].portMappings[0].containerPort",
                "containerDefinitions[0].portMappings[1].containerPort",
                "containerDefinitions[0].portMappings[2].containerPort",
            ]
        );
        for e in &errors.0 {
            assert!(e.message.contains("use 1 to 65535"), "{e}");
        }
    }

    #[test]
    fn wrong_types_name_the_exact_field() {
        let text = r#"{"family": "t", "containerDefinitions": [
            {"name": "a", "image": 5, "memory": "64", "essential": "yes",
             "portMappings": "8080", "command": "echo hi",
             "environment": ["A=B", {"name": "B", "value": 2}],
             "healthCheck": ["CMD", "true"],
             "dependsOn": [{"containerName": "b", "condition": "READY"}],
             "mountPoints": [{"sourceVolume": "v", "containerPath": "/v", "readOnly": "no"}],
             "entryPoint": ["/bin/sh", 1]}
          ],
          "volumes": {"name": "v"},
          "tags": [{"key": 1, "value": "x"}]}"#;
        let errors = errors_of(parse_task_definition(text, FileFormat::Json));
        assert_eq!(
            fields(&errors),
            vec![
                "containerDefinitions[0].image",
                "containerDefinitions[0].memory",
                "containerDefinitions[0].portMappings",
                "containerDefinitions[0].environment[0]",
                "containerDefinitions[0].command",
                "containerDefinitions[0].entryPoint[1]",
                "containerDefinitions[0].essential",
                "containerDefinitions[0].healthCheck",
                "containerDefinitions[0].dependsOn[0].condition",
                "containerDefinitions[0].mountPoints[0].readOnly",
                "volumes",
                "tags[0].key",
            ]
        );
        assert_eq!(
            message_for(&errors, "containerDefinitions[0].image"),
            "expected a string, found the number 5"
        );
        assert!(message_for(&errors, "containerDefinitions[0].memory").contains("without quotes"));
        assert_eq!(
            message_for(&errors, "containerDefinitions[0].portMappings"),
            "expected a list, found the string \"8080\""
        );
        assert!(message_for(&errors, "containerDefinitions[0].command").contains("as a list"));
        assert!(
            message_for(&errors, "containerDefinitions[0].dependsOn[0].condition")
                .contains("START, COMPLETE, SUCCESS or HEALTHY")
        );
        assert_eq!(
            message_for(&errors, "volumes"),
            "expected a list, found an object"
        );

        // The same mistakes in YAML are reported at the same paths.
        let yaml = "family: t\ncontainerDefinitions:\n  - name: a\n    image: 5\n    memory: 64\n    portMappings: 8080\n";
        let errors = errors_of(parse_task_definition(yaml, FileFormat::Yaml));
        assert_eq!(
            fields(&errors),
            vec![
                "containerDefinitions[0].image",
                "containerDefinitions[0].portMappings",
            ]
        );
    }

    #[test]
    fn fields_that_change_the_sandbox_or_where_data_goes_are_refused_not_ignored() {
        let container = [
            ("privileged", "true", "runs every container unprivileged"),
            (
                "linuxParameters",
                r#"{"capabilities": {"add": ["SYS_ADMIN"]}}"#,
                "capabilities",
            ),
            (
                "logConfiguration",
                r#"{"logDriver": "awslogs"}"#,
                "berth task logs",
            ),
            (
                "dockerSecurityOptions",
                r#"["seccomp=unconfined"]"#,
                "security options",
            ),
            (
                "systemControls",
                r#"[{"namespace": "net.ipv4.ip_forward", "value": "1"}]"#,
                "sysctls",
            ),
            (
                "volumesFrom",
                r#"[{"sourceContainer": "b"}]"#,
                "mountPoints",
            ),
        ];
        for (field, value, why) in container {
            let text = one_container(&format!(r#", "{field}": {value}"#));
            let errors = errors_of(load_task_definition(&text, FileFormat::Json));
            let path = format!("containerDefinitions[0].{field}");
            assert_eq!(fields(&errors), vec![path.as_str()], "{field}");
            let message = message_for(&errors, &path);
            assert!(message.contains("not supported"), "{message}");
            assert!(message.contains(why), "{field}: {message}");
            // The same in a describe-task-definition wrapper is refused too.
            let wrapped = format!(r#"{{"taskDefinition": {text}}}"#);
            assert!(
                load_task_definition(&wrapped, FileFormat::Json).is_err(),
                "{field}"
            );
        }
        for field in ["efsVolumeConfiguration", "dockerVolumeConfiguration"] {
            let text = format!(
                r#"{{"family": "t", "volumes": [{{"name": "v", "{field}": {{"fileSystemId": "fs-1"}}}}],
                    "containerDefinitions": [{{"name": "a", "image": "i", "memory": 64,
                    "mountPoints": [{{"sourceVolume": "v", "containerPath": "/v"}}]}}]}}"#
            );
            let errors = errors_of(load_task_definition(&text, FileFormat::Json));
            let path = format!("volumes[0].{field}");
            assert_eq!(fields(&errors), vec![path.as_str()]);
            assert!(message_for(&errors, &path).contains("host.sourcePath"));
        }
        for field in ["pidMode", "ipcMode"] {
            let yaml = format!(
                "family: t\n{field}: host\ncontainerDefinitions: [{{name: a, image: i, memory: 64}}]\n"
            );
            let errors = errors_of(parse_task_definition(&yaml, FileFormat::Yaml));
            assert_eq!(fields(&errors), vec![field]);
        }
        // Saying what Berth does anyway is not an error, and AWS-only
        // fields stay warnings.
        let fine = load_task_definition(
            &one_container(r#", "privileged": false, "ulimits": []"#),
            FileFormat::Json,
        )
        .unwrap();
        assert_eq!(fine.ignored_fields, vec!["containerDefinitions[0].ulimits"]);
        let aws_only = r#"{"family": "t", "taskRoleArn": "arn:r", "executionRoleArn": "arn:e",
            "containerDefinitions": [{"name": "a", "image": "i", "memory": 64}]}"#;
        let parsed = load_task_definition(aws_only, FileFormat::Json).unwrap();
        assert_eq!(
            parsed.ignored_fields,
            vec!["taskRoleArn", "executionRoleArn"]
        );
    }

    #[test]
    fn unsupported_network_modes_are_refused() {
        for mode in ["nat", "vpc"] {
            let text = format!(
                r#"{{"family": "t", "networkMode": "{mode}", "containerDefinitions": [{{"name": "a", "image": "i", "memory": 64}}]}}"#
            );
            let errors = errors_of(load_task_definition(&text, FileFormat::Json));
            assert_eq!(fields(&errors), vec!["networkMode"], "{mode}");
            let message = &errors.0[0].message;
            assert!(message.contains("not supported"), "{message}");
            assert!(
                message.contains("use \"host\", \"bridge\", \"task\""),
                "{message}"
            );
        }
        let bridge = load_task_definition(
            "family: t\nnetworkMode: BRIDGE\ncontainerDefinitions: [{name: a, image: i, memory: 64, portMappings: [{containerPort: 80, hostPort: 0}]}]\n",
            FileFormat::Yaml,
        )
        .unwrap();
        assert_eq!(bridge.spec.network_mode, NetworkMode::Bridge);
        let none = load_task_definition(
            "family: t\nnetworkMode: none\ncontainerDefinitions: [{name: a, image: i, memory: 64}]\n",
            FileFormat::Yaml,
        )
        .unwrap();
        assert_eq!(none.spec.network_mode, NetworkMode::None);
        for name in ["task", "awsvpc", "AWSVPC"] {
            let task = load_task_definition(
                &format!("family: t\nnetworkMode: {name}\ncontainerDefinitions: [{{name: a, image: i, memory: 64, portMappings: [{{containerPort: 80}}]}}]\n"),
                FileFormat::Yaml,
            )
            .unwrap();
            assert_eq!(task.spec.network_mode, NetworkMode::Task, "{name}");
        }
        let absent = load_task_definition(&one_container(""), FileFormat::Json).unwrap();
        assert_eq!(absent.spec.network_mode, NetworkMode::Host);
    }

    #[test]
    fn ecs_defaults_apply() {
        let text = one_container(
            r#", "portMappings": [{"containerPort": 80}],
               "healthCheck": {"command": ["CMD", "true"]},
               "dependsOn": [{"containerName": "b"}]},
              {"name": "b", "image": "i", "memory": 64, "essential": false"#,
        );
        let spec = load_task_definition(&text, FileFormat::Json).unwrap().spec;
        let a = &spec.container_definitions[0];
        assert!(a.essential);
        assert!(!a.readonly_root_filesystem);
        assert_eq!(a.port_mappings[0].protocol, Protocol::Tcp);
        assert_eq!(a.port_mappings[0].host_port, None);
        assert_eq!(
            a.health_check,
            Some(HealthCheck {
                command: vec!["CMD".into(), "true".into()],
                interval: 30,
                timeout: 5,
                retries: 3,
                start_period: 0,
            })
        );
        assert_eq!(a.depends_on[0].condition, DependencyCondition::Start);
        assert!(!spec.container_definitions[1].essential);
        assert_eq!((spec.cpu, spec.memory), (None, None));
    }

    #[test]
    fn null_means_not_set() {
        let text = r#"{"family": "t", "cpu": null, "volumes": null, "containerDefinitions": [
            {"name": "a", "image": "i", "memory": 64, "memoryReservation": null,
             "portMappings": null, "healthCheck": null, "essential": null}]}"#;
        let spec = load_task_definition(text, FileFormat::Json).unwrap().spec;
        let a = &spec.container_definitions[0];
        assert!(a.essential);
        assert_eq!(a.health_check, None);
        assert!(a.port_mappings.is_empty());
        assert_eq!(spec.cpu, None);
    }

    #[test]
    fn yaml_bare_numbers_are_accepted_where_a_string_is_meant() {
        let yaml = "family: t\ncontainerDefinitions:\n  - name: a\n    image: i\n    memory: 64\n    user: 1000\n    environment:\n      - name: PORT\n        value: 8080\n      - name: DEBUG\n        value: true\ntags:\n  - key: tier\n    value: 2\n";
        let spec = load_task_definition(yaml, FileFormat::Yaml).unwrap().spec;
        let a = &spec.container_definitions[0];
        assert_eq!(a.user.as_deref(), Some("1000"));
        assert_eq!(a.environment[0].value, "8080");
        assert_eq!(a.environment[1].value, "true");
        assert_eq!(spec.tags[0].value, "2");

        let yaml = "family: t\ncontainerDefinitions:\n  - name: a\n    image: i\n    memory: 64\n    environment:\n      - name: VERSION\n        value: 1.10\n";
        let errors = errors_of(parse_task_definition(yaml, FileFormat::Yaml));
        assert_eq!(
            fields(&errors),
            vec!["containerDefinitions[0].environment[0].value"]
        );
        assert!(errors.0[0].message.contains("quotes"), "{errors}");
    }

    #[test]
    fn unknown_fields_at_every_level_are_listed() {
        let text = one_container(
            r#", "Image": "typo", "healthCheck": {"command": ["CMD", "true"], "intervall": 9},
               "portMappings": [{"containerPort": 80, "containerPortRange": "80-90"}]"#,
        );
        let parsed = load_task_definition(&text, FileFormat::Json).unwrap();
        assert_eq!(
            parsed.ignored_fields,
            vec![
                "containerDefinitions[0].Image",
                "containerDefinitions[0].healthCheck.intervall",
                "containerDefinitions[0].portMappings[0].containerPortRange",
            ]
        );
    }

    #[test]
    fn restart_policy_gets_ecs_defaults_and_is_absent_unless_given() {
        let spec = load_task_definition(&one_container(""), FileFormat::Json)
            .unwrap()
            .spec;
        assert_eq!(spec.container_definitions[0].restart_policy, None);

        let text = one_container(r#", "restartPolicy": {"enabled": true}"#);
        let spec = load_task_definition(&text, FileFormat::Json).unwrap().spec;
        assert_eq!(
            spec.container_definitions[0].restart_policy,
            Some(RestartPolicy {
                enabled: true,
                ignored_exit_codes: vec![],
                restart_attempt_period_secs: 300,
            })
        );

        let yaml = "family: t\ncontainerDefinitions:\n  - name: a\n    image: i\n    memory: 64\n    restartPolicy: {enabled: false, ignoredExitCodes: [-1, 2147483647], restartAttemptPeriod: null}\n";
        let spec = load_task_definition(yaml, FileFormat::Yaml).unwrap().spec;
        assert_eq!(
            spec.container_definitions[0].restart_policy,
            Some(RestartPolicy {
                enabled: false,
                ignored_exit_codes: vec![-1, i32::MAX],
                restart_attempt_period_secs: 300,
            })
        );
        // `null` means not set, as everywhere else.
        let text = one_container(r#", "restartPolicy": null"#);
        let spec = load_task_definition(&text, FileFormat::Json).unwrap().spec;
        assert_eq!(spec.container_definitions[0].restart_policy, None);
    }

    #[test]
    fn restart_policy_mistakes_name_the_exact_field() {
        let text = one_container(
            r#", "restartPolicy": {"enabled": "yes", "ignoredExitCodes": [0, "1", 1.5, 3000000000, null],
               "restartAttemptPeriod": -5, "restartAttempts": 3}"#,
        );
        let errors = errors_of(load_task_definition(&text, FileFormat::Json));
        assert_eq!(
            fields(&errors),
            vec![
                "containerDefinitions[0].restartPolicy.enabled",
                "containerDefinitions[0].restartPolicy.ignoredExitCodes[1]",
                "containerDefinitions[0].restartPolicy.ignoredExitCodes[2]",
                "containerDefinitions[0].restartPolicy.ignoredExitCodes[3]",
                "containerDefinitions[0].restartPolicy.ignoredExitCodes[4]",
                "containerDefinitions[0].restartPolicy.restartAttemptPeriod",
            ]
        );
        assert_eq!(
            message_for(&errors, "containerDefinitions[0].restartPolicy.enabled"),
            "expected true or false, found the string \"yes\""
        );
        assert!(message_for(
            &errors,
            "containerDefinitions[0].restartPolicy.ignoredExitCodes[3]"
        )
        .contains("not an exit code"));
        assert!(message_for(
            &errors,
            "containerDefinitions[0].restartPolicy.restartAttemptPeriod"
        )
        .contains("negative; use 60 to 1800 seconds"));

        // ECS requires "enabled".
        let text = one_container(r#", "restartPolicy": {"ignoredExitCodes": [0]}"#);
        let errors = errors_of(load_task_definition(&text, FileFormat::Json));
        assert_eq!(
            fields(&errors),
            vec!["containerDefinitions[0].restartPolicy.enabled"]
        );
        assert!(errors.0[0].message.starts_with("required;"), "{errors}");

        // Not an object, or codes not a list.
        for (body, field) in [
            (
                r#", "restartPolicy": true"#,
                "containerDefinitions[0].restartPolicy",
            ),
            (
                r#", "restartPolicy": {"enabled": true, "ignoredExitCodes": 1}"#,
                "containerDefinitions[0].restartPolicy.ignoredExitCodes",
            ),
        ] {
            let errors = errors_of(parse_task_definition(
                &one_container(body),
                FileFormat::Json,
            ));
            assert_eq!(fields(&errors), vec![field], "{body}");
        }

        // Unknown keys inside the policy are listed like any other.
        let text = one_container(
            r#", "restartPolicy": {"enabled": true, "restartAttemptPeriodSeconds": 60}"#,
        );
        let parsed = load_task_definition(&text, FileFormat::Json).unwrap();
        assert_eq!(
            parsed.ignored_fields,
            vec!["containerDefinitions[0].restartPolicy.restartAttemptPeriodSeconds"]
        );
    }

    #[test]
    fn restart_policy_bounds_are_checked_through_the_file() {
        // Parsing takes any period a u32 holds; validation applies ECS's
        // bounds and says so at the same path.
        let text = one_container(
            r#", "restartPolicy": {"enabled": true, "restartAttemptPeriod": 30,
               "ignoredExitCodes": [0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50]}"#,
        );
        assert!(parse_task_definition(&text, FileFormat::Json).is_ok());
        let errors = errors_of(load_task_definition(&text, FileFormat::Json));
        assert_eq!(
            errors.to_string(),
            "containerDefinitions[0].restartPolicy.restartAttemptPeriod: must be between 60 and 1800 seconds, not 30; it is how long the container must run before an exit is restarted (default 300); \
             containerDefinitions[0].restartPolicy.ignoredExitCodes: 51 exit codes is too many; list at most 50"
        );
    }

    #[test]
    fn several_problems_in_one_file_are_all_reported() {
        let text = r#"{
          "family": "shop",
          "networkMode": "nat",
          "containerDefinitions": [
            {"name": "web", "memory": 4, "workingDirectory": "srv",
             "portMappings": [{"containerPort": -80}],
             "mountPoints": [{"sourceVolume": "nope", "containerPath": "/x"}]},
            {"name": "web", "image": "db", "memory": 64, "memoryReservation": 128,
             "dependsOn": [{"containerName": "cache"}]}
          ]
        }"#;
        let errors = errors_of(load_task_definition(text, FileFormat::Json));
        let mut got = fields(&errors);
        got.sort();
        let mut want = vec![
            "networkMode",
            "containerDefinitions[0].portMappings[0].containerPort",
            "containerDefinitions[0].image",
            "containerDefinitions[0].memory",
            "containerDefinitions[0].workingDirectory",
            "containerDefinitions[0].mountPoints[0].sourceVolume",
            "containerDefinitions[1].name",
            "containerDefinitions[1].memoryReservation",
            "containerDefinitions[1].dependsOn[0].containerName",
        ];
        want.sort();
        assert_eq!(got, want, "{errors}");
    }

    #[test]
    fn stand_in_values_do_not_add_made_up_errors() {
        // Only container memory is set, and it is unreadable: "no memory is
        // set" would be wrong.
        let text = r#"{"family": "t", "containerDefinitions": [{"name": "a", "image": "i", "memory": -64}]}"#;
        let errors = errors_of(load_task_definition(text, FileFormat::Json));
        assert_eq!(fields(&errors), vec!["containerDefinitions[0].memory"]);

        // An unreadable containerPort is not compared with its hostPort.
        let text =
            one_container(r#", "portMappings": [{"containerPort": "http", "hostPort": 80}]"#);
        let errors = errors_of(load_task_definition(&text, FileFormat::Json));
        assert_eq!(
            fields(&errors),
            vec!["containerDefinitions[0].portMappings[0].containerPort"]
        );

        // A container that is not an object keeps the next one's index.
        let text = r#"{"family": "t", "containerDefinitions": ["web",
            {"name": "b", "memory": 64}]}"#;
        let errors = errors_of(load_task_definition(text, FileFormat::Json));
        assert_eq!(
            fields(&errors),
            vec!["containerDefinitions[0]", "containerDefinitions[1].image"]
        );
    }

    #[test]
    fn missing_container_port_is_required() {
        let text = one_container(r#", "portMappings": [{"hostPort": 80}]"#);
        let errors = errors_of(parse_task_definition(&text, FileFormat::Json));
        assert_eq!(
            fields(&errors),
            vec!["containerDefinitions[0].portMappings[0].containerPort"]
        );
        assert!(errors.0[0].message.starts_with("required"));
    }

    #[test]
    fn duplicate_keys_are_reported_with_their_line() {
        let text = "{\n\"family\": \"a\",\n\"family\": \"b\"\n}";
        let errors = errors_of(parse_task_definition(text, FileFormat::Json));
        assert_eq!(fields(&errors), vec!["file"]);
        assert!(errors.0[0].message.contains("line 3"), "{errors}");
    }

    #[test]
    fn validation_errors_through_the_file_name_the_same_fields() {
        // Each case: a container body and the field validation must name.
        let cases: &[(&str, &str)] = &[
            (
                r#"{"name": "a", "image": "", "memory": 64}"#,
                "containerDefinitions[0].image",
            ),
            (
                r#"{"name": "a", "image": "i", "memory": 64, "essential": false}"#,
                "containerDefinitions",
            ),
            (r#"{"name": "a", "image": "i"}"#, "memory"),
            (
                r#"{"name": "a", "image": "i", "memory": 64, "healthCheck": {"command": ["curl localhost"]}}"#,
                "containerDefinitions[0].healthCheck.command",
            ),
            (
                r#"{"name": "a", "image": "i", "memory": 64, "healthCheck": {"command": ["CMD", "true"], "retries": 50}}"#,
                "containerDefinitions[0].healthCheck.retries",
            ),
            (
                r#"{"name": "a", "image": "i", "memory": 64, "portMappings": [{"containerPort": 80, "hostPort": 8080}]}"#,
                "containerDefinitions[0].portMappings[0].hostPort",
            ),
        ];
        for (container, field) in cases {
            let text = format!(r#"{{"family": "t", "containerDefinitions": [{container}]}}"#);
            let errors = errors_of(load_task_definition(&text, FileFormat::Json));
            assert_eq!(fields(&errors), vec![*field], "{container}");
        }
    }

    #[test]
    fn scale_decimal_is_exact() {
        assert_eq!(scale_decimal("0.5", 1024), Ok(512));
        assert_eq!(scale_decimal(".25", 1024), Ok(256));
        assert_eq!(scale_decimal("2.", 1024), Ok(2048));
        assert_eq!(scale_decimal("007", 1), Ok(7));
        assert_eq!(scale_decimal("1.50000", 1024), Ok(1536));
        assert_eq!(scale_decimal("0.1", 1024), Err(AmountError::NotWhole));
        assert_eq!(scale_decimal("", 1), Err(AmountError::NotNumber));
        assert_eq!(scale_decimal(".", 1), Err(AmountError::NotNumber));
        assert_eq!(scale_decimal("1e3", 1), Err(AmountError::NotNumber));
        assert_eq!(scale_decimal("1.2.3", 1), Err(AmountError::NotNumber));
        assert_eq!(
            scale_decimal("1234567890123456789", 1),
            Err(AmountError::TooLarge)
        );
    }
}
