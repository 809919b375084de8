//! Everything `berth` prints on stdout: tables for people, JSON and YAML for
//! programs. Renderers return strings so they can be tested without a
//! terminal.

use std::collections::BTreeMap;

use berth_types::time::rfc3339;
use berth_types::{
    self as t, ActivationStatus, ApiTokenStatus, Cluster, ContainerStatus, DesiredStatus, Health,
    InstanceView, ServerRole, StopCode, TaskDefinition, TaskStatus,
};
use serde::Serialize;

use crate::colour;
use crate::ids::{short, Kind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Tables for people, with short ids.
    Table,
    /// Tables with whole ids and more columns.
    Wide,
    /// JSON, stable for scripts.
    Json,
    /// YAML: the same document as JSON.
    Yaml,
}

impl Format {
    /// Whether people read it: a table, plain or wide.
    pub fn is_table(self) -> bool {
        matches!(self, Format::Table | Format::Wide)
    }

    /// How tables in this format show ids and optional columns.
    pub fn view(self) -> View {
        View {
            wide: self == Format::Wide,
            clusters: false,
        }
    }
}

/// What a table shows besides its fixed columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct View {
    /// `-o wide`: whole ids and the extra columns.
    pub wide: bool,
    /// A CLUSTER column, for lists that span clusters (`--all-clusters`);
    /// wide tables have it anyway.
    pub clusters: bool,
}

impl View {
    pub fn cluster_column(self) -> bool {
        self.clusters || self.wide
    }

    /// An id as this view shows it: short, unless wide.
    pub fn id(self, kind: Kind, id: &str) -> String {
        if self.wide {
            id.to_string()
        } else {
            short(kind, id)
        }
    }
}

/// `value` as JSON or YAML, or as the table `table` draws (plain and wide
/// alike: the closure tells them apart through [`Format::view`]).
pub fn render<T: Serialize + ?Sized>(
    format: Format,
    value: &T,
    table: impl FnOnce(&T) -> String,
) -> anyhow::Result<String> {
    Ok(match format {
        Format::Table | Format::Wide => table(value),
        Format::Json => {
            let mut text = serde_json::to_string_pretty(value)?;
            text.push('\n');
            text
        }
        Format::Yaml => serde_yaml::to_string(value)?,
    })
}

// ----------------------------------------------------------------- views
//
// What `-o json|yaml` commits to for scripts, made from the domain types.
// Clusters, task definitions, families and instances are printed as the
// domain types themselves; these others add what holds as of when berth ran
// (a token's status), flatten what people look for (a task's
// FAMILY:REVISION) and leave out what is only the API's business.

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub node_id: u64,
    pub address: String,
    pub role: ServerRole,
    pub voter: bool,
    pub reachable: bool,
    pub term: u64,
    pub last_log_index: u64,
    pub applied_index: u64,
    /// Why the member could not be reached; `null` when it could.
    pub error: Option<String>,
}

impl From<t::ServerMember> for Member {
    fn from(m: t::ServerMember) -> Self {
        Self {
            node_id: m.node_id,
            address: m.address,
            role: m.role,
            voter: m.voter,
            reachable: m.reachable,
            term: m.term,
            last_log_index: m.last_log_index,
            applied_index: m.applied_index,
            error: m.error,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlPlaneStatus {
    pub leader_id: Option<u64>,
    pub term: u64,
    pub answered_by: u64,
    pub members: Vec<Member>,
}

impl From<t::ControlPlaneStatus> for ControlPlaneStatus {
    fn from(s: t::ControlPlaneStatus) -> Self {
        Self {
            leader_id: s.leader_id,
            term: s.term,
            answered_by: s.answered_by,
            members: s.members.into_iter().map(Into::into).collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeletedCluster {
    pub name: String,
}

/// An API token's record (never its secret) and whether it works.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiToken {
    #[serde(flatten)]
    pub token: t::ApiTokenView,
    /// As of when berth ran.
    pub status: ApiTokenStatus,
}

impl ApiToken {
    pub fn new(token: t::ApiTokenView, now_ms: i64) -> Self {
        Self {
            status: token.status(now_ms),
            token,
        }
    }
}

/// What `auth token create` prints: the record and the token, which is
/// shown this once only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedApiToken {
    pub api_token: ApiToken,
    pub token: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Activation {
    pub id: String,
    pub cluster: String,
    pub description: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub max_registrations: u32,
    pub registrations: u32,
    pub attributes: BTreeMap<String, String>,
    /// As of when berth ran.
    pub status: ActivationStatus,
}

impl Activation {
    pub fn new(a: t::ActivationView, now_ms: i64) -> Self {
        Self {
            status: a.status(now_ms),
            id: a.id,
            cluster: a.cluster,
            description: a.description,
            created_at_ms: a.created_at_ms,
            expires_at_ms: a.expires_at_ms,
            max_registrations: a.max_registrations,
            registrations: a.registrations,
            attributes: a.attributes,
        }
    }
}

/// What `activation create` prints: the activation and its join token,
/// which is shown this once only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedActivation {
    pub activation: Activation,
    pub token: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    pub id: String,
    pub cluster: String,
    /// FAMILY:REVISION.
    pub task_definition: String,
    /// `null` while PROVISIONING (not placed yet).
    pub instance_id: Option<String>,
    pub group: Option<String>,
    pub started_by: Option<String>,
    /// What the control plane wants.
    pub desired_status: DesiredStatus,
    /// What the agent last reported.
    pub last_status: TaskStatus,
    pub containers: Vec<ContainerState>,
    pub stop_code: Option<StopCode>,
    pub stopped_reason: Option<String>,
    /// Why a PROVISIONING task is not placed yet.
    pub placement_reason: Option<String>,
    /// `CONTAINER.env.KEY=VALUE`, as given.
    pub overrides: Vec<String>,
    /// CPU units and MiB reserved on the instance.
    pub cpu: u32,
    pub memory: u32,
    pub created_at_ms: i64,
    pub pending_at_ms: Option<i64>,
    pub started_at_ms: Option<i64>,
    pub stopping_at_ms: Option<i64>,
    pub stopped_at_ms: Option<i64>,
    /// Where container ports are published on the instance (shown by
    /// `task describe`; lists leave it empty).
    pub network_bindings: Vec<t::NetworkBinding>,
    /// The task's own address on its instance's bridge (bridge and task
    /// network modes).
    pub ip: Option<String>,
    /// DEACTIVATING: when it is stopped (its deregistration delay ends).
    pub deactivating_until_ms: Option<i64>,
    /// PROVISIONING or PENDING: what it waits for (`task describe` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerState {
    pub name: String,
    pub status: ContainerStatus,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub health: Health,
    /// Times the agent restarted the container in place (restart policy).
    pub restart_count: u32,
}

impl From<t::Task> for Task {
    fn from(t: t::Task) -> Self {
        Self {
            task_definition: t.task_definition(),
            id: t.id,
            cluster: t.cluster,
            instance_id: t.instance_id,
            group: non_empty(t.group),
            started_by: non_empty(t.started_by),
            desired_status: t.desired_status,
            last_status: t.last_status,
            containers: t.containers.into_iter().map(Into::into).collect(),
            stop_code: t.stop_code,
            stopped_reason: non_empty(t.stopped_reason),
            placement_reason: non_empty(t.placement_reason),
            overrides: t
                .overrides
                .iter()
                .map(|(container, key, value)| {
                    format!("{}={value}", t::task::override_target(container, key))
                })
                .collect(),
            // Reservations are made from u32 task definition fields.
            cpu: u32::try_from(t.reservation.cpu).unwrap_or(u32::MAX),
            memory: u32::try_from(t.reservation.memory_mib).unwrap_or(u32::MAX),
            created_at_ms: t.created_at_ms,
            pending_at_ms: t.pending_at_ms,
            started_at_ms: t.started_at_ms,
            stopping_at_ms: t.stopping_at_ms,
            stopped_at_ms: t.stopped_at_ms,
            network_bindings: Vec::new(),
            ip: t.ip,
            deactivating_until_ms: t.deactivating_until_ms,
            waiting_for: None,
            tags: t.tags,
        }
    }
}

impl From<t::ContainerState> for ContainerState {
    fn from(c: t::ContainerState) -> Self {
        Self {
            name: c.name,
            status: c.status,
            exit_code: c.exit_code,
            reason: non_empty(c.reason),
            health: c.health,
            restart_count: c.restart_count,
        }
    }
}

fn non_empty(text: String) -> Option<String> {
    Some(text).filter(|t| !t.is_empty())
}

// ---------------------------------------------------------------- tables

/// Things a list shows oldest first, as their AGE column reads.
pub trait Aged {
    fn created_at_ms(&self) -> i64;
    /// What orders things created in the same millisecond, so the order is
    /// the same on every run (and every `--watch` redraw).
    fn tie(&self) -> (&str, &str);
}

impl Aged for Cluster {
    fn created_at_ms(&self) -> i64 {
        self.created_at_ms
    }
    fn tie(&self) -> (&str, &str) {
        (&self.name, "")
    }
}

impl Aged for Task {
    fn created_at_ms(&self) -> i64 {
        self.created_at_ms
    }
    fn tie(&self) -> (&str, &str) {
        (&self.id, "")
    }
}

impl Aged for InstanceView {
    fn created_at_ms(&self) -> i64 {
        self.registered_at_ms
    }
    fn tie(&self) -> (&str, &str) {
        (&self.id, "")
    }
}

impl Aged for t::service::ServiceDescription {
    fn created_at_ms(&self) -> i64 {
        self.service.created_at_ms
    }
    fn tie(&self) -> (&str, &str) {
        (&self.service.cluster, &self.service.name)
    }
}

/// Sorts oldest first, the order every list prints in (JSON and YAML too,
/// so a script and a person see the same order).
pub fn oldest_first<T: Aged>(items: &mut [T]) {
    items.sort_by(|a, b| (a.created_at_ms(), a.tie()).cmp(&(b.created_at_ms(), b.tie())));
}

pub fn clusters_table(clusters: &[Cluster], now_ms: i64) -> String {
    let mut table = Table::new([
        "NAME",
        "STATUS",
        "CREATED",
        "LOST AFTER",
        "TASK RETENTION",
        "AGE",
    ])
    .status_columns(&["STATUS"]);
    for c in clusters {
        table.row([
            c.name.clone(),
            screaming(&c.status),
            rfc3339(c.created_at_ms),
            format!("{}s", c.settings.lost_after_secs),
            format!("{}s", c.settings.task_retention_secs),
            age_column(c.created_at_ms, now_ms),
        ]);
    }
    table.render()
}

pub fn cluster_detail(c: &Cluster) -> String {
    fields(&[
        ("Name", c.name.clone()),
        ("Status", screaming(&c.status)),
        ("Created", rfc3339(c.created_at_ms)),
        ("Lost after", format!("{}s", c.settings.lost_after_secs)),
        (
            "Task retention",
            format!("{}s", c.settings.task_retention_secs),
        ),
        ("Tags", attributes_cell(&c.tags)),
    ])
}

pub fn deleted_cluster(d: &DeletedCluster) -> String {
    format!("deleted cluster {}\n", d.name)
}

pub fn task_definitions_table(tds: &[TaskDefinition]) -> String {
    let mut table = Table::new(["TASK DEFINITION", "STATUS", "CONTAINERS", "REGISTERED"]);
    for td in tds {
        let containers: Vec<&str> = td
            .spec
            .container_definitions
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        table.row([
            td.id(),
            td.status.as_str().to_string(),
            containers.join(","),
            rfc3339(td.registered_at_ms),
        ]);
    }
    table.render()
}

pub fn task_definition_detail(td: &TaskDefinition) -> String {
    let spec = &td.spec;
    let volumes: Vec<String> = spec
        .volumes
        .iter()
        .map(|v| match &v.host_source_path {
            Some(path) => format!("{}={}", v.name, path),
            None => format!("{} (scratch)", v.name),
        })
        .collect();
    let tags: Vec<String> = spec
        .tags
        .iter()
        .map(|t| format!("{}={}", t.key, t.value))
        .collect();
    let mut out = fields(&[
        ("Task definition", td.id()),
        ("Status", td.status.as_str().to_string()),
        ("Registered", rfc3339(td.registered_at_ms)),
        (
            "Deregistered",
            td.deregistered_at_ms.map_or_else(dash, rfc3339),
        ),
        ("Network mode", spec.network_mode.as_str().to_string()),
        ("CPU", spec.cpu.map_or_else(dash, |c| c.to_string())),
        (
            "Memory",
            spec.memory.map_or_else(dash, |m| format!("{m} MiB")),
        ),
        ("Volumes", list_or_dash(&volumes)),
        ("Tags", list_or_dash(&tags)),
    ]);
    out.push('\n');
    let mut table = Table::new([
        "CONTAINER",
        "IMAGE",
        "ESSENTIAL",
        "CPU",
        "MEMORY",
        "RESERVATION",
        "PORTS",
    ]);
    for c in &spec.container_definitions {
        let ports: Vec<String> = c
            .port_mappings
            .iter()
            .map(|p| match p.host_port {
                Some(host) if host != p.container_port => {
                    format!("{host}->{}/{}", p.container_port, p.protocol.as_str())
                }
                _ => format!("{}/{}", p.container_port, p.protocol.as_str()),
            })
            .collect();
        table.row([
            c.name.clone(),
            c.image.clone(),
            yes_no(c.essential),
            c.cpu.to_string(),
            c.memory.map_or_else(dash, |m| m.to_string()),
            c.memory_reservation.map_or_else(dash, |m| m.to_string()),
            list_or_dash(&ports),
        ]);
    }
    out.push_str(&table.render());
    out
}

pub fn registered(td: &TaskDefinition) -> String {
    format!("registered task definition {}\n", td.id())
}

pub fn deregistered(td: &TaskDefinition) -> String {
    format!(
        "deregistered task definition {} (now {})\n",
        td.id(),
        td.status.as_str()
    )
}

pub fn families_table(families: &[t::TaskDefinitionFamily]) -> String {
    let mut table = Table::new(["FAMILY", "LATEST REVISION", "LATEST ACTIVE REVISION"]);
    for f in families {
        table.row([
            f.family.clone(),
            f.latest_revision.to_string(),
            f.latest_active_revision
                .map_or_else(dash, |r| r.to_string()),
        ]);
    }
    table.render()
}

pub fn members_table(members: &[Member]) -> String {
    let mut table = Table::new([
        "ID",
        "ADDRESS",
        "ROLE",
        "VOTER",
        "REACHABLE",
        "TERM",
        "LAST LOG INDEX",
        "APPLIED INDEX",
        "ERROR",
    ]);
    for m in members {
        table.row([
            m.node_id.to_string(),
            m.address.clone(),
            m.role.as_str().to_string(),
            yes_no(m.voter),
            yes_no(m.reachable),
            m.term.to_string(),
            m.last_log_index.to_string(),
            m.applied_index.to_string(),
            m.error.clone().unwrap_or_default(),
        ]);
    }
    table.render()
}

/// Only the token, so `TOKEN=$(berth auth token create ...)` works; what
/// it is goes to stderr (see `created_api_token_note`).
pub fn created_api_token(c: &CreatedApiToken) -> String {
    format!("{}\n", c.token)
}

pub fn created_api_token_note(c: &CreatedApiToken) -> String {
    format!(
        "created {} API token {} ({}); it is shown only this once: store it now",
        c.api_token.token.role.as_str(),
        c.api_token.token.id,
        c.api_token.token.expires_at_ms.map_or_else(
            || "never expires".to_string(),
            |e| format!("expires {}", rfc3339(e))
        )
    )
}

/// What `auth token create --format aws` prints: the record, the access
/// key id and the secret access key, which is shown this once only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedAwsAccessKey {
    pub api_token: ApiToken,
    pub aws_access_key_id: String,
    pub aws_secret_access_key: String,
}

/// In the environment variables' form the aws CLI and the SDKs read.
pub fn created_aws_access_key(c: &CreatedAwsAccessKey) -> String {
    format!(
        "AWS_ACCESS_KEY_ID={}\nAWS_SECRET_ACCESS_KEY={}\n",
        c.aws_access_key_id, c.aws_secret_access_key
    )
}

pub fn created_aws_access_key_note(c: &CreatedAwsAccessKey) -> String {
    format!(
        "created {} AWS access key {} ({}); the secret access key is shown only this once: store it now. Use it with the ECS endpoint (berthd --ecs-listen): aws ecs --endpoint-url https://SERVER:PORT ...",
        c.api_token.token.role.as_str(),
        c.api_token.token.id,
        c.api_token.token.expires_at_ms.map_or_else(
            || "never expires".to_string(),
            |e| format!("expires {}", rfc3339(e))
        )
    )
}

pub fn api_tokens_table(tokens: &[ApiToken]) -> String {
    let mut table = Table::new([
        "ID",
        "ROLE",
        "FORMAT",
        "STATUS",
        "CREATED",
        "EXPIRES",
        "DESCRIPTION",
    ])
    .status_columns(&["STATUS"]);
    for ApiToken { token: t, status } in tokens {
        table.row([
            t.id.clone(),
            t.role.as_str().to_string(),
            t.format.as_str().to_string(),
            screaming(status),
            rfc3339(t.created_at_ms),
            t.expires_at_ms.map_or_else(|| "never".to_string(), rfc3339),
            t.description.clone(),
        ]);
    }
    table.render()
}

pub fn revoked_api_token(t: &ApiToken) -> String {
    format!("revoked API token {}\n", t.token.id)
}

pub fn revoked_certificate(c: &t::RevokedCertificate) -> String {
    format!(
        "revoked certificate {}: every server refuses it from now on\n",
        c.fingerprint
    )
}

pub fn revoked_certificates_table(list: &[t::RevokedCertificate]) -> String {
    let mut table = Table::new(["FINGERPRINT", "REVOKED", "DESCRIPTION"]);
    for c in list {
        table.row([
            c.fingerprint.clone(),
            rfc3339(c.revoked_at_ms),
            c.description.clone(),
        ]);
    }
    table.render()
}

/// Only the join token, so `TOKEN=$(berth activation create)` works; the
/// rest goes to stderr (see `created_activation_note`).
pub fn created_activation(c: &CreatedActivation) -> String {
    format!("{}\n", c.token)
}

pub fn created_activation_note(c: &CreatedActivation) -> String {
    let a = &c.activation;
    format!(
        "created activation {} for cluster {}: up to {} registration{} until {}; the join token \
         is shown only this once",
        a.id,
        a.cluster,
        a.max_registrations,
        if a.max_registrations == 1 { "" } else { "s" },
        rfc3339(a.expires_at_ms)
    )
}

pub fn activations_table(activations: &[Activation]) -> String {
    let mut table = Table::new([
        "ID",
        "CLUSTER",
        "STATUS",
        "REGISTRATIONS",
        "EXPIRES",
        "ATTRIBUTES",
        "DESCRIPTION",
    ])
    .status_columns(&["STATUS"]);
    for a in activations {
        table.row([
            a.id.clone(),
            a.cluster.clone(),
            screaming(&a.status),
            format!("{}/{}", a.registrations, a.max_registrations),
            rfc3339(a.expires_at_ms),
            attributes_cell(&a.attributes),
            a.description.clone(),
        ]);
    }
    table.render()
}

pub fn activation_detail(a: &Activation) -> String {
    fields(&[
        ("ID", a.id.clone()),
        ("Cluster", a.cluster.clone()),
        ("Status", screaming(&a.status)),
        ("Description", or_dash(&a.description)),
        ("Created", rfc3339(a.created_at_ms)),
        ("Expires", rfc3339(a.expires_at_ms)),
        (
            "Registrations",
            format!("{} of {}", a.registrations, a.max_registrations),
        ),
        ("Attributes", attributes_cell(&a.attributes)),
    ])
}

pub fn revoked_activation(a: &Activation) -> String {
    format!("revoked activation {}\n", a.id)
}

/// One row per instance. `now_ms` is when berth ran, for the SINCE
/// column (how long the agent has been connected, or disconnected) and AGE
/// (how long ago the instance registered).
pub fn instances_table(instances: &[InstanceView], now_ms: i64, view: View) -> String {
    let mut table = Table::new([
        "ID",
        "CLUSTER",
        "HOSTNAME",
        "STATUS",
        "AGENT",
        "SINCE",
        "CPU FREE/TOTAL",
        "MEMORY FREE/TOTAL (MiB)",
        "TASKS",
        "VERSION",
        "ATTRIBUTES",
        "AGE",
    ])
    .status_columns(&["STATUS"]);
    for i in instances {
        table.row([
            view.id(Kind::Instance, &i.id),
            i.cluster.clone(),
            i.hostname.clone(),
            i.status.as_str().to_string(),
            agent_state(i).to_string(),
            agent_since(i).map_or_else(dash, |at| age(at, now_ms)),
            format!("{}/{}", i.cpu_remaining, i.cpu_registered),
            format!("{}/{}", i.memory_remaining_mib, i.memory_registered_mib),
            i.running_tasks.to_string(),
            i.agent_version.clone().unwrap_or_else(dash),
            attributes_cell(&i.attributes),
            age_column(i.registered_at_ms, now_ms),
        ]);
    }
    table.render()
}

fn agent_state(i: &InstanceView) -> &'static str {
    if i.agent_connected {
        "connected"
    } else if i.last_seen_ms.is_some() || i.agent_version.is_some() {
        "disconnected"
    } else {
        "never-connected"
    }
}

/// When the agent's current state began: connected since, or last seen.
fn agent_since(i: &InstanceView) -> Option<i64> {
    if i.agent_connected {
        i.connected_since_ms
    } else {
        i.last_seen_ms
    }
}

pub fn instance_detail(i: &InstanceView, now_ms: i64) -> String {
    let agent = match (i.agent_connected, agent_since(i)) {
        (true, Some(at)) => format!("connected since {} ({} ago)", rfc3339(at), age(at, now_ms)),
        (false, Some(at)) => format!(
            "disconnected, last seen {} ({} ago)",
            rfc3339(at),
            age(at, now_ms)
        ),
        _ => agent_state(i).replace('-', " "),
    };
    let ports: Vec<String> = i.ports_in_use.iter().map(u32::to_string).collect();
    fields(&[
        ("ID", i.id.clone()),
        ("Cluster", i.cluster.clone()),
        ("Hostname", i.hostname.clone()),
        ("Status", i.status.as_str().to_string()),
        ("Agent", agent),
        (
            "Agent version",
            i.agent_version.clone().unwrap_or_else(dash),
        ),
        (
            "CPU",
            format!("{} free of {} units", i.cpu_remaining, i.cpu_registered),
        ),
        (
            "Memory",
            format!(
                "{} MiB free of {} MiB",
                i.memory_remaining_mib, i.memory_registered_mib
            ),
        ),
        ("Ports in use", list_or_dash(&ports)),
        ("Running tasks", i.running_tasks.to_string()),
        ("Attributes", attributes_cell(&i.attributes)),
        ("Tags", attributes_cell(&i.tags)),
        ("Registered", rfc3339(i.registered_at_ms)),
        ("Certificate expires", rfc3339(i.certificate_expires_at_ms)),
        ("Activation", or_dash(&i.activation_id)),
        (
            "Deregistered",
            i.deregistered_at_ms.map_or_else(dash, rfc3339),
        ),
    ])
}

pub fn deregistered_instance(i: &InstanceView) -> String {
    format!("deregistered instance {} (now {})\n", i.id, i.status)
}

pub fn drained_instance(i: &InstanceView) -> String {
    format!(
        "draining instance {} (now {}): no new tasks are placed on it; {} task{} still there\n",
        i.id,
        i.status,
        i.running_tasks,
        if i.running_tasks == 1 { "" } else { "s" }
    )
}

pub fn activated_instance(i: &InstanceView) -> String {
    format!("activated instance {} (now {})\n", i.id, i.status)
}

pub fn instance_attributes(i: &InstanceView) -> String {
    format!(
        "attributes of instance {}: {}\n",
        i.id,
        attributes_cell(&i.attributes)
    )
}

// ----------------------------------------------------------------- tasks

/// One row per task. `now_ms` is when berth ran, for the STARTED column
/// (how long ago the task started running) and AGE (how long ago it was
/// created). Wide tables add the task's own address.
pub fn tasks_table(tasks: &[Task], now_ms: i64, view: View) -> String {
    let mut headers = vec!["ID"];
    if view.cluster_column() {
        headers.push("CLUSTER");
    }
    headers.extend(["TASKDEF", "STATUS", "DESIRED", "INSTANCE"]);
    if view.wide {
        headers.push("ADDRESS");
    }
    headers.extend(["GROUP", "STARTED", "STOP CODE", "AGE"]);
    let mut table = Table::new(headers).status_columns(&["STATUS"]);
    for t in tasks {
        let mut row = vec![view.id(Kind::Task, &t.id)];
        if view.cluster_column() {
            row.push(t.cluster.clone());
        }
        row.extend([
            t.task_definition.clone(),
            t.last_status.as_str().to_string(),
            t.desired_status.as_str().to_string(),
            t.instance_id
                .as_deref()
                .map_or_else(dash, |i| view.id(Kind::Instance, i)),
        ]);
        if view.wide {
            row.push(t.ip.clone().unwrap_or_else(dash));
        }
        row.extend([
            t.group.clone().unwrap_or_else(dash),
            t.started_at_ms.map_or_else(dash, |at| age(at, now_ms)),
            t.stop_code.map_or_else(dash, |c| c.as_str().to_string()),
            age_column(t.created_at_ms, now_ms),
        ]);
        table.row(row);
    }
    table.render()
}

/// For stderr after `task run`: why tasks that are still PROVISIONING are
/// not placed yet.
pub fn unplaced_notes(tasks: &[Task]) -> Vec<String> {
    tasks
        .iter()
        .filter(|t| t.last_status == TaskStatus::Provisioning)
        .filter_map(|t| {
            t.placement_reason
                .as_ref()
                .map(|why| format!("task {} is not placed yet: {why}", t.id))
        })
        .collect()
}

pub fn task_detail(t: &Task) -> String {
    let time = |ms: Option<i64>| ms.map_or_else(dash, rfc3339);
    let mut pairs = vec![
        ("ID", t.id.clone()),
        ("Cluster", t.cluster.clone()),
        ("Task definition", t.task_definition.clone()),
        ("Status", t.last_status.as_str().to_string()),
        ("Desired status", t.desired_status.as_str().to_string()),
        (
            "Instance",
            t.instance_id
                .clone()
                .unwrap_or_else(|| "- (not placed)".to_string()),
        ),
    ];
    if let Some(waiting) = &t.waiting_for {
        pairs.push(("Waiting for", waiting.clone()));
    } else if t.last_status == TaskStatus::Provisioning {
        pairs.push((
            "Placement",
            t.placement_reason
                .clone()
                .unwrap_or_else(|| "waiting for the scheduler".to_string()),
        ));
    }
    pairs.extend([
        ("Group", t.group.clone().unwrap_or_else(dash)),
        ("Started by", t.started_by.clone().unwrap_or_else(dash)),
        ("CPU", t.cpu.to_string()),
        ("Memory", format!("{} MiB", t.memory)),
        ("Overrides", list_or_dash(&t.overrides)),
        ("Tags", attributes_cell(&t.tags)),
    ]);
    if !t.network_bindings.is_empty() {
        let ports: Vec<String> = t
            .network_bindings
            .iter()
            .map(|b| {
                format!(
                    "{}:{}/{} on host port {}",
                    b.container_name,
                    b.container_port,
                    b.protocol.as_str(),
                    b.host_port
                )
            })
            .collect();
        pairs.push(("Ports", ports.join(", ")));
    }
    if let Some(ip) = &t.ip {
        pairs.push(("Address", ip.clone()));
    }
    if let Some(until) = t.deactivating_until_ms {
        pairs.push(("Deregistered until", rfc3339(until)));
    }
    pairs.extend([
        ("Created", rfc3339(t.created_at_ms)),
        ("Pending", time(t.pending_at_ms)),
        ("Started", time(t.started_at_ms)),
        ("Stopping", time(t.stopping_at_ms)),
        ("Stopped", time(t.stopped_at_ms)),
        (
            "Stop code",
            t.stop_code.map_or_else(dash, |c| c.as_str().to_string()),
        ),
        (
            "Stopped reason",
            t.stopped_reason.clone().unwrap_or_else(dash),
        ),
    ]);
    let mut out = fields(&pairs);
    out.push('\n');
    let mut table = Table::new(["CONTAINER", "STATUS", "EXIT CODE", "HEALTH", "REASON"])
        .status_columns(&["STATUS", "HEALTH"]);
    for c in &t.containers {
        // Only containers that were restarted say so: most never are, and
        // a column of zeros would be noise.
        let status = match c.restart_count {
            0 => c.status.as_str().to_string(),
            n => format!("{} (restarts: {n})", c.status.as_str()),
        };
        table.row([
            c.name.clone(),
            status,
            c.exit_code.map_or_else(dash, |code| code.to_string()),
            c.health.as_str().to_string(),
            c.reason.clone().unwrap_or_else(dash),
        ]);
    }
    out.push_str(&table.render());
    out
}

pub fn stopping_task(t: &Task) -> String {
    format!(
        "stopping task {} (desired {}, now {})\n",
        t.id,
        t.desired_status.as_str(),
        t.last_status.as_str()
    )
}

/// How long ago `then_ms` was, in the largest unit that keeps two digits
/// of precision: `45s`, `12m`, `5h`, `3d`. A time in the future (clock
/// skew) reads as `0s`.
pub fn age(then_ms: i64, now_ms: i64) -> String {
    let secs = (now_ms.saturating_sub(then_ms) / 1000).max(0);
    match secs {
        0..=119 => format!("{secs}s"),
        120..=7_199 => format!("{}m", secs / 60),
        7_200..=172_799 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// The AGE column: `-` where the time is not known (the `default`
/// cluster, made before anything carried a clock, says 0).
pub fn age_column(created_at_ms: i64, now_ms: i64) -> String {
    if created_at_ms <= 0 {
        dash()
    } else {
        age(created_at_ms, now_ms)
    }
}

/// `name=value` pairs joined by commas, without spaces, so the cell stays
/// one word for `awk`.
fn attributes_cell(attributes: &BTreeMap<String, String>) -> String {
    if attributes.is_empty() {
        return dash();
    }
    attributes
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn or_dash(text: &str) -> String {
    if text.is_empty() {
        dash()
    } else {
        text.to_string()
    }
}

pub fn status_table(s: &ControlPlaneStatus) -> String {
    let mut out = fields(&[
        (
            "Leader",
            s.leader_id.map_or_else(
                || "none (no leader elected)".to_string(),
                |id| id.to_string(),
            ),
        ),
        ("Term", s.term.to_string()),
        ("Answered by", s.answered_by.to_string()),
    ]);
    out.push('\n');
    out.push_str(&members_table(&s.members));
    out
}

// --------------------------------------------------------------- helpers

/// Columns padded to their widest cell and separated by two spaces, with no
/// trailing whitespace. Widths count characters, which is right for the
/// ASCII names and addresses Berth deals in.
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
    /// Per column: whether its cells are status words, coloured on a
    /// terminal.
    status: Vec<bool>,
}

impl Table {
    pub fn new<'a>(headers: impl IntoIterator<Item = &'a str>) -> Self {
        let headers: Vec<String> = headers.into_iter().map(str::to_string).collect();
        Self {
            status: vec![false; headers.len()],
            headers,
            rows: Vec::new(),
        }
    }

    /// Marks the columns with these headers as status columns.
    pub fn status_columns(mut self, headers: &[&str]) -> Self {
        for (i, header) in self.headers.iter().enumerate() {
            if headers.contains(&header.as_str()) {
                self.status[i] = true;
            }
        }
        self
    }

    pub fn row(&mut self, cells: impl IntoIterator<Item = String>) {
        // A newline inside a cell (an error message, say) would break the
        // one-record-per-line layout that `grep` and `awk` rely on.
        self.rows
            .push(cells.into_iter().map(|c| one_line(&c)).collect());
    }

    /// The table, coloured when `main` decided stdout may be.
    pub fn render(&self) -> String {
        self.render_coloured(colour::enabled())
    }

    pub fn render_coloured(&self, colour: bool) -> String {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for (n, line) in std::iter::once(&self.headers).chain(&self.rows).enumerate() {
            let mut text = String::new();
            for (i, cell) in line.iter().enumerate().take(columns) {
                if i > 0 {
                    text.push_str("  ");
                }
                // Padding goes outside the escape codes, which take no
                // room on screen, so widths count only what is seen.
                if colour && n > 0 && self.status[i] {
                    text.push_str(&colour::status(cell));
                } else {
                    text.push_str(cell);
                }
                let pad = widths[i].saturating_sub(cell.chars().count());
                text.extend(std::iter::repeat_n(' ', pad));
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `Key:  value` lines with the values aligned.
fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (key, value) in pairs {
        let label = format!("{key}:");
        out.push_str(&format!("{label:<width$}  {}\n", one_line(value)));
    }
    out
}

fn one_line(text: &str) -> String {
    text.replace(['\n', '\r', '\t'], " ")
}

fn dash() -> String {
    "-".to_string()
}

fn list_or_dash(items: &[String]) -> String {
    if items.is_empty() {
        dash()
    } else {
        items.join(", ")
    }
}

fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.to_string()
}

/// The serde name of a unit enum variant (`ACTIVE`), so tables and JSON
/// agree without a second list of names.
pub fn screaming<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "?".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_types::{InstanceState, Role};

    #[test]
    fn table_aligns_columns_without_trailing_spaces() {
        let mut table = Table::new(["NAME", "STATUS", "ERROR"]);
        table.row(["default".into(), "ACTIVE".into(), String::new()]);
        table.row(["p".into(), "ACTIVE".into(), "line one\nline two".into()]);
        assert_eq!(
            table.render(),
            "NAME     STATUS  ERROR\n\
             default  ACTIVE\n\
             p        ACTIVE  line one line two\n"
        );
    }

    #[test]
    fn empty_table_is_just_the_header() {
        assert_eq!(
            clusters_table(&[], NOW),
            "NAME  STATUS  CREATED  LOST AFTER  TASK RETENTION  AGE\n"
        );
    }

    fn cluster() -> Cluster {
        Cluster {
            name: "prod".into(),
            status: t::ClusterStatus::Active,
            created_at_ms: 1_700_000_000_000,
            settings: t::ClusterSettings {
                lost_after_secs: 300,
                task_retention_secs: 3600,
            },
            tags: [("env".to_string(), "prod".to_string())].into(),
        }
    }

    fn task_definition(revision: u32) -> TaskDefinition {
        let mut web = t::ContainerDefinition::new("web", "localhost:5000/web:1");
        web.memory = Some(128);
        web.port_mappings.push(t::PortMapping {
            container_port: 8080,
            host_port: None,
            protocol: t::Protocol::Tcp,
        });
        let mut side = t::ContainerDefinition::new("side", "busybox");
        side.essential = false;
        TaskDefinition {
            family: "web".into(),
            revision,
            status: t::TaskDefinitionStatus::Active,
            registered_at_ms: 1_700_000_000_000,
            deregistered_at_ms: None,
            spec: t::TaskDefinitionSpec {
                family: "web".into(),
                container_definitions: vec![web, side],
                cpu: Some(512),
                memory: None,
                network_mode: t::NetworkMode::Host,
                volumes: vec![t::Volume {
                    name: "scratch".into(),
                    host_source_path: None,
                }],
                tags: vec![],
            },
        }
    }

    #[test]
    fn clusters_render_as_table_and_json_array() {
        let clusters = vec![cluster()];
        assert_eq!(
            render(Format::Table, clusters.as_slice(), |c| clusters_table(
                c,
                NOW + 7_200_000
            ))
            .unwrap(),
            "NAME  STATUS  CREATED               LOST AFTER  TASK RETENTION  AGE\n\
             prod  ACTIVE  2023-11-14T22:13:20Z  300s        3600s           2h\n"
        );
        let json = render(Format::Json, clusters.as_slice(), |c| {
            clusters_table(c, NOW)
        })
        .unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            value,
            serde_json::json!([{
                "name": "prod",
                "status": "ACTIVE",
                "createdAtMs": 1_700_000_000_000i64,
                "settings": {"lostAfterSecs": 300, "taskRetentionSecs": 3600},
                "tags": {"env": "prod"}
            }])
        );
        assert!(json.contains("\n  "), "pretty-printed: {json}");
        assert!(json.ends_with("}\n]\n"));
    }

    #[test]
    fn cluster_detail_aligns_values() {
        assert_eq!(
            cluster_detail(&cluster()),
            "Name:            prod\n\
             Status:          ACTIVE\n\
             Created:         2023-11-14T22:13:20Z\n\
             Lost after:      300s\n\
             Task retention:  3600s\n\
             Tags:            env=prod\n"
        );
    }

    #[test]
    fn task_definitions_table_lists_ids_and_containers() {
        let tds = vec![task_definition(1), task_definition(12)];
        assert_eq!(
            task_definitions_table(&tds),
            "TASK DEFINITION  STATUS  CONTAINERS  REGISTERED\n\
             web:1            ACTIVE  web,side    2023-11-14T22:13:20Z\n\
             web:12           ACTIVE  web,side    2023-11-14T22:13:20Z\n"
        );
    }

    #[test]
    fn task_definition_detail_shows_spec_and_containers() {
        let text = task_definition_detail(&task_definition(3));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "Task definition:  web:3");
        assert_eq!(lines[3], "Deregistered:     -");
        assert_eq!(lines[5], "CPU:              512");
        assert_eq!(lines[6], "Memory:           -");
        assert_eq!(lines[7], "Volumes:          scratch (scratch)");
        assert_eq!(lines[9], "");
        assert_eq!(
            lines[10],
            "CONTAINER  IMAGE                 ESSENTIAL  CPU  MEMORY  RESERVATION  PORTS"
        );
        assert_eq!(
            lines[11],
            "web        localhost:5000/web:1  yes        0    128     -            8080/tcp"
        );
        assert_eq!(
            lines[12],
            "side       busybox               no         0    -       -            -"
        );
    }

    #[test]
    fn task_definition_json_uses_the_domain_camel_case_shape() {
        let td = task_definition(3);
        let json = render(Format::Json, &td, task_definition_detail).unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["family"], "web");
        assert_eq!(value["revision"], 3);
        assert_eq!(value["status"], "ACTIVE");
        assert_eq!(value["registeredAtMs"], 1_700_000_000_000i64);
        assert_eq!(value["spec"]["networkMode"], "host");
        assert_eq!(
            value["spec"]["containerDefinitions"][0]["portMappings"][0]["containerPort"],
            8080
        );
        // What `-o json` prints reads back as the same task definition.
        let back: TaskDefinition = serde_json::from_value(value).unwrap();
        assert_eq!(back, td);
    }

    #[test]
    fn yaml_output_reads_back() {
        let tds = vec![task_definition(1)];
        let yaml = render(Format::Yaml, tds.as_slice(), task_definitions_table).unwrap();
        assert!(yaml.starts_with("- family: web\n"), "{yaml}");
        let back: Vec<TaskDefinition> = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(back, tds);
    }

    fn members() -> Vec<Member> {
        vec![
            Member::from(t::ServerMember {
                node_id: 1,
                address: "10.0.0.1:7400".into(),
                role: ServerRole::Leader,
                voter: true,
                reachable: true,
                term: 4,
                last_log_index: 120,
                applied_index: 120,
                snapshot_index: 100,
                error: None,
            }),
            Member::from(t::ServerMember {
                node_id: 2,
                address: "10.0.0.2:7400".into(),
                role: ServerRole::Unknown,
                voter: true,
                reachable: false,
                term: 0,
                last_log_index: 0,
                applied_index: 0,
                snapshot_index: 0,
                error: Some("connection refused".into()),
            }),
        ]
    }

    #[test]
    fn members_table_has_every_column() {
        assert_eq!(
            members_table(&members()),
            "ID  ADDRESS        ROLE     VOTER  REACHABLE  TERM  LAST LOG INDEX  APPLIED INDEX  ERROR\n\
             1   10.0.0.1:7400  leader   yes    yes        4     120             120\n\
             2   10.0.0.2:7400  unknown  yes    no         0     0               0              connection refused\n"
        );
    }

    #[test]
    fn status_shows_leader_then_members() {
        let status = ControlPlaneStatus::from(t::ControlPlaneStatus {
            leader_id: None,
            term: 4,
            answered_by: 1,
            members: vec![],
        });
        assert_eq!(
            status_table(&status),
            "Leader:       none (no leader elected)\n\
             Term:         4\n\
             Answered by:  1\n\
             \n\
             ID  ADDRESS  ROLE  VOTER  REACHABLE  TERM  LAST LOG INDEX  APPLIED INDEX  ERROR\n"
        );
    }

    #[test]
    fn status_json_is_camel_case_with_null_for_absent_values() {
        let status = ControlPlaneStatus {
            leader_id: Some(1),
            term: 4,
            answered_by: 2,
            members: members(),
        };
        let json = render(Format::Json, &status, status_table).unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["leaderId"], 1);
        assert_eq!(value["answeredBy"], 2);
        assert_eq!(value["members"][0]["lastLogIndex"], 120);
        assert_eq!(value["members"][0]["error"], serde_json::Value::Null);
        assert_eq!(value["members"][1]["error"], "connection refused");
        assert_eq!(value["members"][0]["role"], "leader");
        assert_eq!(value["members"][1]["role"], "unknown");
    }

    #[test]
    fn families_show_a_dash_without_an_active_revision() {
        let families = vec![t::TaskDefinitionFamily {
            family: "web".into(),
            latest_revision: 3,
            latest_active_revision: None,
        }];
        assert_eq!(
            families_table(&families),
            "FAMILY  LATEST REVISION  LATEST ACTIVE REVISION\n\
             web     3                -\n"
        );
    }

    const NOW: i64 = 1_700_000_000_000;

    /// The keys of a pretty-printed JSON object, in the order printed.
    fn top_level_keys(json: &str) -> Vec<&str> {
        json.lines()
            .filter_map(|line| line.strip_prefix("  \""))
            .filter_map(|rest| rest.split_once("\":").map(|(key, _)| key))
            .collect()
    }

    fn api_token(revoked: bool, expires_at_ms: Option<i64>) -> t::ApiTokenView {
        t::ApiTokenView {
            id: "0a1b2c".into(),
            role: Role::Admin,
            description: "ci deploys".into(),
            created_at_ms: NOW - 1000,
            expires_at_ms,
            revoked_at_ms: revoked.then_some(NOW - 10),
            format: t::TokenFormat::Bearer,
        }
    }

    #[test]
    fn api_tokens_show_their_status_and_never_a_secret() {
        let tokens = vec![
            ApiToken::new(api_token(false, None), NOW),
            ApiToken::new(api_token(false, Some(NOW - 1)), NOW),
            ApiToken::new(api_token(true, Some(NOW + 86_400_000)), NOW),
        ];
        assert_eq!(
            api_tokens_table(&tokens),
            "ID      ROLE   FORMAT  STATUS   CREATED               EXPIRES               DESCRIPTION\n\
             0a1b2c  admin  bearer  ACTIVE   2023-11-14T22:13:19Z  never                 ci deploys\n\
             0a1b2c  admin  bearer  EXPIRED  2023-11-14T22:13:19Z  2023-11-14T22:13:19Z  ci deploys\n\
             0a1b2c  admin  bearer  REVOKED  2023-11-14T22:13:19Z  2023-11-15T22:13:20Z  ci deploys\n"
        );
        let json = render(Format::Json, &tokens[0], revoked_api_token).unwrap();
        assert_eq!(
            top_level_keys(&json),
            [
                "id",
                "role",
                "description",
                "createdAtMs",
                "expiresAtMs",
                "revokedAtMs",
                "format",
                "status"
            ],
            "the order scripts have always seen"
        );
        let json = render(Format::Json, tokens.as_slice(), api_tokens_table).unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value[0]["expiresAtMs"], serde_json::Value::Null);
        assert_eq!(value[2]["revokedAtMs"], NOW - 10);
        assert_eq!(value[2]["status"], "REVOKED");
        assert_eq!(value[2]["role"], "admin");
    }

    #[test]
    fn a_created_token_prints_only_the_token_on_stdout() {
        let created = CreatedApiToken {
            api_token: ApiToken::new(api_token(false, None), NOW),
            token: "berth_0a1b2c_ffee".into(),
        };
        assert_eq!(created_api_token(&created), "berth_0a1b2c_ffee\n");
        let note = created_api_token_note(&created);
        assert!(
            note.contains("0a1b2c") && note.contains("never expires"),
            "{note}"
        );
        assert!(!note.contains("ffee"), "{note}");

        let json = render(Format::Json, &created, created_api_token).unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["token"], "berth_0a1b2c_ffee");
        assert_eq!(value["apiToken"]["id"], "0a1b2c");
        assert_eq!(value["apiToken"]["status"], "ACTIVE");
    }

    fn activation() -> t::ActivationView {
        t::ActivationView {
            id: "a1".into(),
            cluster: "prod".into(),
            description: "rack 4".into(),
            created_at_ms: NOW,
            expires_at_ms: NOW + 86_400_000,
            max_registrations: 5,
            registrations: 2,
            attributes: BTreeMap::from([
                ("zone".to_string(), "a".to_string()),
                ("disk".to_string(), "ssd".to_string()),
            ]),
            revoked: false,
        }
    }

    #[test]
    fn activations_render_with_usage_and_attributes() {
        let mut used = activation();
        used.registrations = 5;
        used.attributes.clear();
        let activations = vec![
            Activation::new(activation(), NOW),
            Activation::new(used, NOW),
        ];
        assert_eq!(
            activations_table(&activations),
            "ID  CLUSTER  STATUS  REGISTRATIONS  EXPIRES               ATTRIBUTES       DESCRIPTION\n\
             a1  prod     ACTIVE  2/5            2023-11-15T22:13:20Z  disk=ssd,zone=a  rack 4\n\
             a1  prod     USED    5/5            2023-11-15T22:13:20Z  -                rack 4\n"
        );
        let detail = activation_detail(&activations[0]);
        assert!(detail.contains("Registrations:  2 of 5\n"), "{detail}");
        assert!(
            detail.contains("Attributes:     disk=ssd,zone=a\n"),
            "{detail}"
        );
        assert_eq!(
            Activation::new(activation(), NOW + 86_400_000).status,
            ActivationStatus::Expired
        );
    }

    #[test]
    fn a_created_activation_prints_the_join_token_and_json_has_both() {
        let created = CreatedActivation {
            activation: Activation::new(activation(), NOW),
            token: "BERTH1-a1-ff-00".into(),
        };
        assert_eq!(created_activation(&created), "BERTH1-a1-ff-00\n");
        let note = created_activation_note(&created);
        assert!(
            note.contains("up to 5 registrations until 2023-11-15T22:13:20Z"),
            "{note}"
        );
        let yaml = render(Format::Yaml, &created, created_activation).unwrap();
        let value: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(value["token"], "BERTH1-a1-ff-00");
        assert_eq!(value["activation"]["id"], "a1");
        assert_eq!(value["activation"]["attributes"]["zone"], "a");
    }

    fn instance() -> t::InstanceView {
        t::InstanceView {
            id: "i-1".into(),
            cluster: "prod".into(),
            hostname: "node-1".into(),
            attributes: BTreeMap::from([("zone".to_string(), "a".to_string())]),
            registered_at_ms: NOW - 86_400_000,
            certificate_expires_at_ms: NOW + 86_400_000,
            status: InstanceState::Active,
            activation_id: "a1".into(),
            deregistered_at_ms: None,
            agent_version: Some("0.4.0".into()),
            agent_connected: true,
            connected_since_ms: Some(NOW - 300_000),
            last_seen_ms: None,
            cpu_registered: 2048,
            cpu_remaining: 1536,
            memory_registered_mib: 4096,
            memory_remaining_mib: 3968,
            ports_in_use: vec![8080, 9090],
            running_tasks: 2,
            draining: false,
            tags: BTreeMap::from([("rack".to_string(), "r1".to_string())]),
        }
    }

    #[test]
    fn instances_table_shows_agent_state_resources_and_tasks() {
        let connected = instance();
        let mut gone = instance();
        gone.id = "i-2".into();
        gone.status = InstanceState::Disconnected;
        gone.agent_connected = false;
        gone.connected_since_ms = None;
        gone.last_seen_ms = Some(NOW - 3 * 3_600_000);
        gone.attributes.clear();
        let mut fresh = instance();
        fresh.id = "i-3".into();
        fresh.agent_connected = false;
        fresh.connected_since_ms = None;
        fresh.agent_version = None;
        fresh.running_tasks = 0;
        let instances = vec![connected, gone, fresh];
        assert_eq!(
            instances_table(&instances, NOW, View::default()),
            "ID   CLUSTER  HOSTNAME  STATUS        AGENT            SINCE  CPU FREE/TOTAL  MEMORY FREE/TOTAL (MiB)  TASKS  VERSION  ATTRIBUTES  AGE\n\
             i-1  prod     node-1    ACTIVE        connected        5m     1536/2048       3968/4096                2      0.4.0    zone=a      24h\n\
             i-2  prod     node-1    DISCONNECTED  disconnected     3h     1536/2048       3968/4096                2      0.4.0    -           24h\n\
             i-3  prod     node-1    ACTIVE        never-connected  -      1536/2048       3968/4096                0      -        zone=a      24h\n"
        );
        let detail = instance_detail(&instances[1], NOW);
        assert!(
            detail.contains(
                "Agent:                disconnected, last seen 2023-11-14T19:13:20Z (3h ago)\n"
            ),
            "{detail}"
        );
    }

    #[test]
    fn instance_detail_has_every_field() {
        let instance = instance();
        assert_eq!(
            instance_detail(&instance, NOW),
            "ID:                   i-1\n\
             Cluster:              prod\n\
             Hostname:             node-1\n\
             Status:               ACTIVE\n\
             Agent:                connected since 2023-11-14T22:08:20Z (5m ago)\n\
             Agent version:        0.4.0\n\
             CPU:                  1536 free of 2048 units\n\
             Memory:               3968 MiB free of 4096 MiB\n\
             Ports in use:         8080, 9090\n\
             Running tasks:        2\n\
             Attributes:           zone=a\n\
             Tags:                 rack=r1\n\
             Registered:           2023-11-13T22:13:20Z\n\
             Certificate expires:  2023-11-15T22:13:20Z\n\
             Activation:           a1\n\
             Deregistered:         -\n"
        );
    }

    #[test]
    fn instance_json_is_camel_case_with_nulls_for_absent_values() {
        let mut instance = instance();
        instance.agent_version = None;
        let json = render(Format::Json, &instance, |i| instance_detail(i, NOW)).unwrap();
        assert_eq!(
            top_level_keys(&json),
            [
                "id",
                "cluster",
                "hostname",
                "attributes",
                "activationId",
                "registeredAtMs",
                "certificateExpiresAtMs",
                "status",
                "deregisteredAtMs",
                "agentVersion",
                "agentConnected",
                "connectedSinceMs",
                "lastSeenMs",
                "cpuRegistered",
                "cpuRemaining",
                "memoryRegisteredMib",
                "memoryRemainingMib",
                "portsInUse",
                "runningTasks",
                "draining",
                "tags"
            ],
            "the order scripts have always seen (new keys last)"
        );
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["certificateExpiresAtMs"], NOW + 86_400_000);
        assert_eq!(value["attributes"]["zone"], "a");
        assert_eq!(value["agentConnected"], true);
        assert_eq!(value["connectedSinceMs"], NOW - 300_000);
        assert_eq!(value["lastSeenMs"], serde_json::Value::Null);
        assert_eq!(value["agentVersion"], serde_json::Value::Null);
        assert_eq!(value["cpuRegistered"], 2048);
        assert_eq!(value["cpuRemaining"], 1536);
        assert_eq!(value["memoryRegisteredMib"], 4096);
        assert_eq!(value["memoryRemainingMib"], 3968);
        assert_eq!(value["portsInUse"], serde_json::json!([8080, 9090]));
        assert_eq!(value["runningTasks"], 2);
        assert_eq!(value["draining"], false);
        assert_eq!(value["status"], "ACTIVE");
        assert_eq!(value["tags"]["rack"], "r1");
    }

    #[test]
    fn instance_operations_say_what_happened() {
        let mut instance = instance();
        instance.status = InstanceState::Draining;
        instance.draining = true;
        assert_eq!(
            drained_instance(&instance),
            "draining instance i-1 (now DRAINING): no new tasks are placed on it; 2 tasks still \
             there\n"
        );
        assert_eq!(
            activated_instance(&instance),
            "activated instance i-1 (now DRAINING)\n"
        );
        assert_eq!(
            instance_attributes(&instance),
            "attributes of instance i-1: zone=a\n"
        );
    }

    fn running_task() -> t::Task {
        t::Task {
            id: "t-1".into(),
            cluster: "prod".into(),
            family: "web".into(),
            revision: 3,
            instance_id: Some("i-1".into()),
            group: "batch".into(),
            started_by: "ci".into(),
            desired_status: DesiredStatus::Running,
            last_status: TaskStatus::Running,
            containers: vec![
                t::ContainerState {
                    name: "web".into(),
                    status: ContainerStatus::Running,
                    exit_code: None,
                    reason: String::new(),
                    health: Health::Healthy,
                    restart_count: 2,
                },
                t::ContainerState {
                    name: "init".into(),
                    status: ContainerStatus::Stopped,
                    exit_code: Some(0),
                    reason: "exited".into(),
                    health: Health::Unknown,
                    restart_count: 0,
                },
            ],
            stop_code: None,
            stopped_reason: String::new(),
            placement_reason: String::new(),
            overrides: vec![("web".into(), "GREETING".into(), "hi".into())],
            placement_strategies: Vec::new(),
            placement_constraints: Vec::new(),
            reservation: t::resources::Reservation::new(256, 128),
            created_at_ms: NOW - 120_000,
            pending_at_ms: Some(NOW - 110_000),
            started_at_ms: Some(NOW - 90_000),
            stopping_at_ms: None,
            stopped_at_ms: None,
            ip: None,
            deactivating_until_ms: None,
            tags: BTreeMap::from([("team".to_string(), "core".to_string())]),
        }
    }

    fn provisioning_task() -> t::Task {
        t::Task {
            id: "t-2".into(),
            instance_id: None,
            group: String::new(),
            started_by: String::new(),
            last_status: TaskStatus::Provisioning,
            containers: Vec::new(),
            placement_reason: "no instance has 512 MiB free memory; 3 instances checked".into(),
            overrides: Vec::new(),
            reservation: Default::default(),
            created_at_ms: NOW,
            pending_at_ms: None,
            started_at_ms: None,
            ..running_task()
        }
    }

    fn stopped_task() -> t::Task {
        t::Task {
            id: "t-3".into(),
            desired_status: DesiredStatus::Stopped,
            last_status: TaskStatus::Stopped,
            stop_code: Some(StopCode::EssentialContainerExited),
            stopped_reason: "essential container web exited with code 1".into(),
            started_at_ms: Some(NOW - 3 * 86_400_000),
            stopped_at_ms: Some(NOW - 86_400_000),
            ip: None,
            deactivating_until_ms: None,
            ..running_task()
        }
    }

    #[test]
    fn tasks_table_has_status_placement_age_and_stop_code() {
        let tasks: Vec<Task> = [running_task(), provisioning_task(), stopped_task()]
            .into_iter()
            .map(Task::from)
            .collect();
        assert_eq!(
            tasks_table(&tasks, NOW, View::default()),
            "ID   TASKDEF  STATUS        DESIRED  INSTANCE  GROUP  STARTED  STOP CODE                 AGE\n\
             t-1  web:3    RUNNING       RUNNING  i-1       batch  90s      -                         2m\n\
             t-2  web:3    PROVISIONING  RUNNING  -         -      -        -                         0s\n\
             t-3  web:3    STOPPED       STOPPED  i-1       batch  3d       EssentialContainerExited  2m\n"
        );
        assert_eq!(
            unplaced_notes(&tasks),
            [
                "task t-2 is not placed yet: no instance has 512 MiB free memory; 3 instances \
              checked"
            ]
        );
    }

    #[test]
    fn task_detail_shows_everything_and_the_containers() {
        let task = Task::from(stopped_task());
        assert_eq!(
            task_detail(&task),
            "ID:               t-3\n\
             Cluster:          prod\n\
             Task definition:  web:3\n\
             Status:           STOPPED\n\
             Desired status:   STOPPED\n\
             Instance:         i-1\n\
             Group:            batch\n\
             Started by:       ci\n\
             CPU:              256\n\
             Memory:           128 MiB\n\
             Overrides:        web.env.GREETING=hi\n\
             Tags:             team=core\n\
             Created:          2023-11-14T22:11:20Z\n\
             Pending:          2023-11-14T22:11:30Z\n\
             Started:          2023-11-11T22:13:20Z\n\
             Stopping:         -\n\
             Stopped:          2023-11-13T22:13:20Z\n\
             Stop code:        EssentialContainerExited\n\
             Stopped reason:   essential container web exited with code 1\n\
             \n\
             CONTAINER  STATUS                 EXIT CODE  HEALTH   REASON\n\
             web        RUNNING (restarts: 2)  -          HEALTHY  -\n\
             init       STOPPED                0          UNKNOWN  exited\n"
        );
    }

    #[test]
    fn a_provisioning_task_says_why_it_is_not_placed() {
        let detail = task_detail(&Task::from(provisioning_task()));
        let lines: Vec<&str> = detail.lines().collect();
        assert_eq!(lines[5], "Instance:         - (not placed)");
        assert_eq!(
            lines[6],
            "Placement:        no instance has 512 MiB free memory; 3 instances checked"
        );
        // Only PROVISIONING tasks have the line.
        assert!(!task_detail(&Task::from(running_task())).contains("Placement:"));
        assert!(detail.ends_with("CONTAINER  STATUS  EXIT CODE  HEALTH  REASON\n"));
    }

    #[test]
    fn a_placed_tasks_published_ports_are_described() {
        let mut task = Task::from(running_task());
        assert!(!task_detail(&task).contains("Ports:"), "none: no line");
        task.network_bindings = vec![t::NetworkBinding {
            container_name: "web".into(),
            container_port: 8080,
            host_port: 49153,
            protocol: t::Protocol::Tcp,
        }];
        assert!(
            task_detail(&task).contains("Ports:            web:8080/tcp on host port 49153\n"),
            "{}",
            task_detail(&task)
        );
    }

    #[test]
    fn a_tasks_own_address_is_described() {
        let mut task = Task::from(running_task());
        assert!(!task_detail(&task).contains("Address:"), "none: no line");
        task.ip = Some("198.18.0.7".into());
        assert!(
            task_detail(&task)
                .contains("Tags:             team=core\nAddress:          198.18.0.7\n"),
            "{}",
            task_detail(&task)
        );
    }

    #[test]
    fn task_json_is_camel_case_with_nulls_for_absent_values() {
        let tasks: Vec<Task> = vec![Task::from(running_task()), Task::from(provisioning_task())];
        let json = render(Format::Json, tasks.as_slice(), |t| {
            tasks_table(t, NOW, View::default())
        })
        .unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            value[0],
            serde_json::json!({
                "id": "t-1",
                "cluster": "prod",
                "taskDefinition": "web:3",
                "instanceId": "i-1",
                "group": "batch",
                "startedBy": "ci",
                "desiredStatus": "RUNNING",
                "lastStatus": "RUNNING",
                "containers": [
                    {"name": "web", "status": "RUNNING", "exitCode": null, "reason": null,
                     "health": "HEALTHY", "restartCount": 2},
                    {"name": "init", "status": "STOPPED", "exitCode": 0, "reason": "exited",
                     "health": "UNKNOWN", "restartCount": 0}
                ],
                "stopCode": null,
                "stoppedReason": null,
                "placementReason": null,
                "overrides": ["web.env.GREETING=hi"],
                "cpu": 256,
                "memory": 128,
                "createdAtMs": NOW - 120_000,
                "pendingAtMs": NOW - 110_000,
                "startedAtMs": NOW - 90_000,
                "stoppingAtMs": null,
                "stoppedAtMs": null,
                "networkBindings": [],
                "ip": null,
                "deactivatingUntilMs": null,
                "tags": {"team": "core"}
            })
        );
        assert_eq!(value[1]["instanceId"], serde_json::Value::Null);
        assert_eq!(
            value[1]["placementReason"],
            "no instance has 512 MiB free memory; 3 instances checked"
        );
        let yaml = render(Format::Yaml, tasks.as_slice(), |t| {
            tasks_table(t, NOW, View::default())
        })
        .unwrap();
        let back: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(back, value, "YAML carries the same document");
    }

    #[test]
    fn stopping_a_task_says_where_it_is() {
        let mut stopping = running_task();
        stopping.desired_status = DesiredStatus::Stopped;
        assert_eq!(
            stopping_task(&Task::from(stopping)),
            "stopping task t-1 (desired STOPPED, now RUNNING)\n"
        );
    }

    const TASK_ID: &str = "3f2a0c9e1b7d4e2f8a6b5c4d3e2f1a0b";
    const INSTANCE_ID: &str = "i-0123456789abcdef";

    fn real_ids(mut task: t::Task) -> Task {
        task.id = TASK_ID.into();
        task.instance_id = Some(INSTANCE_ID.into());
        task.ip = Some("198.18.0.7".into());
        Task::from(task)
    }

    #[test]
    fn tables_show_short_ids_and_wide_ones_whole_ids_and_more() {
        let tasks = vec![real_ids(running_task())];
        assert_eq!(
            tasks_table(&tasks, NOW, Format::Table.view()),
            "ID            TASKDEF  STATUS   DESIRED  INSTANCE    GROUP  STARTED  STOP CODE  AGE\n\
             3f2a0c9e1b7d  web:3    RUNNING  RUNNING  i-01234567  batch  90s      -          2m\n"
        );
        assert_eq!(
            tasks_table(&tasks, NOW, Format::Wide.view()),
            format!(
                "ID                                CLUSTER  TASKDEF  STATUS   DESIRED  INSTANCE            ADDRESS     GROUP  STARTED  STOP CODE  AGE\n\
                 {TASK_ID}  prod     web:3    RUNNING  RUNNING  {INSTANCE_ID}  198.18.0.7  batch  90s      -          2m\n"
            )
        );
        let all_clusters = View {
            clusters: true,
            ..Format::Table.view()
        };
        assert!(
            tasks_table(&tasks, NOW, all_clusters).starts_with("ID            CLUSTER  TASKDEF")
        );

        let mut instance = instance();
        instance.id = INSTANCE_ID.into();
        let short = instances_table(std::slice::from_ref(&instance), NOW, View::default());
        assert!(short.contains("\ni-01234567  prod"), "{short}");
        let wide = instances_table(&[instance], NOW, Format::Wide.view());
        assert!(wide.contains(&format!("\n{INSTANCE_ID}  prod")), "{wide}");
    }

    #[test]
    fn wide_changes_tables_only_never_json() {
        let tasks = vec![real_ids(running_task())];
        let draw = |t: &[Task]| tasks_table(t, NOW, Format::Wide.view());
        assert_eq!(
            render(Format::Json, tasks.as_slice(), draw).unwrap(),
            render(Format::Json, tasks.as_slice(), |t| {
                tasks_table(t, NOW, View::default())
            })
            .unwrap()
        );
        assert!(render(Format::Json, tasks.as_slice(), draw)
            .unwrap()
            .contains(&format!("\"id\": \"{TASK_ID}\"")));
        assert!(Format::Wide.is_table() && Format::Table.is_table());
        assert!(!Format::Json.is_table() && !Format::Yaml.is_table());
    }

    #[test]
    fn wide_is_an_output_format() {
        use clap::Parser;
        let cli =
            crate::args::Cli::try_parse_from(["berth", "task", "list", "-o", "wide"]).unwrap();
        assert_eq!(cli.output, Format::Wide);
        assert!(Format::Wide.view().wide && !Format::Table.view().wide);
    }

    #[test]
    fn status_cells_are_coloured_only_when_asked_and_stay_aligned() {
        let mut table = Table::new(["ID", "STATUS", "NOTE"]).status_columns(&["STATUS"]);
        table.row(["a".into(), "RUNNING".into(), "RUNNING".into()]);
        table.row(["b".into(), "STOPPED".into(), String::new()]);
        table.row(["c".into(), "PENDING".into(), "x".into()]);
        let plain = table.render_coloured(false);
        assert!(!plain.contains('\x1b'), "{plain}");
        assert_eq!(
            table.render(),
            plain,
            "off unless main turned it on (NO_COLOR, or not a terminal)"
        );
        let coloured = table.render_coloured(true);
        assert_eq!(
            coloured,
            "ID  STATUS   NOTE\n\
             a   \x1b[32mRUNNING\x1b[0m  RUNNING\n\
             b   \x1b[31mSTOPPED\x1b[0m\n\
             c   \x1b[33mPENDING\x1b[0m  x\n",
            "only the status column, padded outside the codes"
        );
        let stripped = coloured
            .replace("\x1b[32m", "")
            .replace("\x1b[31m", "")
            .replace("\x1b[33m", "")
            .replace("\x1b[0m", "");
        assert_eq!(stripped, plain);
    }

    #[test]
    fn lists_sort_oldest_first_with_a_stable_tie_break() {
        let at = |id: &str, created: i64| Task {
            id: id.into(),
            created_at_ms: created,
            ..Task::from(running_task())
        };
        let mut tasks = vec![at("c", NOW), at("b", NOW - 5), at("a", NOW)];
        oldest_first(&mut tasks);
        let order: Vec<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(order, ["b", "a", "c"]);

        let mut old = cluster();
        old.name = "z-old".into();
        old.created_at_ms -= 1;
        let mut clusters = vec![cluster(), old];
        oldest_first(&mut clusters);
        assert_eq!(clusters[0].name, "z-old");

        let mut young = instance();
        young.id = "i-0".into();
        young.registered_at_ms = NOW;
        let mut instances = vec![young, instance()];
        oldest_first(&mut instances);
        assert_eq!(instances[0].id, "i-1");
    }

    #[test]
    fn ages_use_the_largest_readable_unit() {
        assert_eq!(age(NOW, NOW), "0s");
        assert_eq!(age(NOW + 5_000, NOW), "0s", "clock skew");
        assert_eq!(age(NOW - 119_000, NOW), "119s");
        assert_eq!(age(NOW - 120_000, NOW), "2m");
        assert_eq!(age(NOW - 7_199_000, NOW), "119m");
        assert_eq!(age(NOW - 7_200_000, NOW), "2h");
        assert_eq!(age(NOW - 172_800_000, NOW), "2d");
        assert_eq!(age_column(NOW - 7_200_000, NOW), "2h");
        assert_eq!(age_column(0, NOW), "-", "not known");
    }
}
