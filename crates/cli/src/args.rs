//! The command line, as clap parses it.

use std::path::PathBuf;
use std::time::Duration;

use berth_types::service::TrafficShift;
use berth_types::{TaskDefinitionStatus, TaskStatus};
use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

use crate::output::Format;

pub const DEFAULT_ENDPOINT: &str = "127.0.0.1:7400";

/// Manage a Berth control plane: clusters, task definitions, tasks,
/// instances, access and the servers themselves.
///
/// Connection settings come from flags, then environment variables, then
/// the config file (~/.config/berth/config.toml: endpoint, token, ca_cert).
///
/// Wherever a command takes a task, instance, API token or activation id,
/// any unique prefix of it of at least 4 characters will do (an instance's
/// i- may be left out); tables show ids short, -o wide in full.
#[derive(Debug, Parser)]
#[command(name = "berth", version, propagate_version = true)]
pub struct Cli {
    /// Control-plane servers to talk to, comma-separated (HOST:PORT); the
    /// next is tried when one cannot be reached. Default: 127.0.0.1:7400.
    #[arg(
        long,
        global = true,
        env = "BERTH_ENDPOINT",
        value_name = "HOST:PORT[,HOST:PORT...]",
        value_delimiter = ','
    )]
    pub endpoint: Vec<String>,

    /// API token (berth_<id>_<secret>), sent with every call. Prefer the
    /// environment variable: flags are visible to other users in `ps`.
    #[arg(
        long,
        global = true,
        env = "BERTH_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,

    /// The cluster CA certificate (PEM) that servers' certificates are
    /// checked against.
    // Strings rather than paths so that an exported but empty variable
    // means "not set" instead of a usage error.
    #[arg(long, global = true, env = "BERTH_CA_CERT", value_name = "PATH")]
    pub ca_cert: Option<String>,

    /// Config file [default: ~/.config/berth/config.toml, if it exists].
    #[arg(long, global = true, env = "BERTH_CONFIG", value_name = "PATH")]
    pub config: Option<String>,

    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,

    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The endpoints with blanks trimmed, so `a:1, b:1` and a trailing comma
    /// in BERTH_ENDPOINT do what was meant.
    pub fn endpoints(&self) -> Vec<String> {
        split_endpoints(&self.endpoint)
    }

    pub fn ca_cert(&self) -> Option<PathBuf> {
        non_empty_path(self.ca_cert.as_deref())
    }

    pub fn config(&self) -> Option<PathBuf> {
        non_empty_path(self.config.as_deref())
    }
}

fn non_empty_path(text: Option<&str>) -> Option<PathBuf> {
    text.filter(|t| !t.trim().is_empty()).map(PathBuf::from)
}

/// Trims endpoints and drops empty ones.
pub fn split_endpoints<S: AsRef<str>>(items: &[S]) -> Vec<String> {
    items
        .iter()
        .flat_map(|item| item.as_ref().split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .collect()
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Clusters, and the state of the control plane.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Task definitions: versioned recipes FAMILY:REVISION.
    #[command(subcommand, name = "taskdef")]
    TaskDef(TaskDefCommand),
    /// The control-plane servers (Raft members).
    #[command(subcommand)]
    Server(ServerCommand),
    /// Access to the API.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Activations: join tokens that let agents register instances.
    #[command(subcommand)]
    Activation(ActivationCommand),
    /// Registered instances (hosts running berth-agent).
    #[command(subcommand)]
    Instance(InstanceCommand),
    /// Tasks: running copies of task definitions.
    #[command(subcommand)]
    Task(TaskCommand),
    /// Services: keep N tasks running (REPLICA) or one on every instance
    /// (DAEMON), and roll them out to new revisions.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Wait until tasks are RUNNING or STOPPED, or services are stable,
    /// checking every 2s; exit status 1 when that can no longer happen or
    /// the time is up.
    #[command(subcommand)]
    Wait(crate::wait::WaitCommand),
    /// Print a shell completion script, e.g. `source <(berth completion
    /// bash)`, or save it where the shell looks (bash:
    /// /usr/share/bash-completion/completions/berth).
    Completion(crate::completion::CompletionArgs),
    /// Print the manual page berth(1), or write one page per command into
    /// a directory.
    Man(crate::completion::ManArgs),
    /// What changed in the cluster, oldest first: task, instance, service,
    /// deployment, task definition, cluster, membership, token, activation,
    /// certificate, schedule and secret events, each with the cursor to
    /// resume after.
    Events(EventsArgs),
    /// Who did what: every change-making call, applied or refused.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Scheduled tasks: RunTask on a cron or rate schedule (EventBridge
    /// Scheduler's syntax).
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// Secrets: values sealed in the cluster state that task definitions
    /// reference (`secrets`, `repositoryCredentials`).
    #[command(subcommand)]
    Secret(crate::secret::SecretCommand),
    /// Tags on clusters, task definitions, tasks, services and instances
    /// (cluster/NAME, taskdef/FAMILY:REVISION, task/ID,
    /// service/CLUSTER/NAME, instance/ID).
    #[command(subcommand)]
    Tag(crate::tag::TagCommand),
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Create a schedule.
    Create(ScheduleCreateArgs),
    /// Change a schedule: only the flags given change. A new --cron,
    /// --rate or --timezone counts slots from now.
    Update(ScheduleUpdateArgs),
    /// List schedules with their next runs.
    List {
        /// Only this cluster's [default: every cluster].
        #[arg(long)]
        cluster: Option<String>,
    },
    /// Show a schedule with its last runs and its next one.
    Describe {
        name: String,
        #[arg(long)]
        cluster: Option<String>,
    },
    /// Stop firing until resumed.
    Pause {
        name: String,
        #[arg(long)]
        cluster: Option<String>,
    },
    /// Fire again, counting slots from now (what the pause skipped is not
    /// fired).
    Resume {
        name: String,
        #[arg(long)]
        cluster: Option<String>,
    },
    /// Delete a schedule (tasks it started keep running).
    Delete {
        name: String,
        #[arg(long)]
        cluster: Option<String>,
    },
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("when").args(["cron", "rate"]).required(true)))]
pub struct ScheduleCreateArgs {
    #[arg(long)]
    pub name: String,
    #[command(flatten)]
    pub settings: ScheduleSettings,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("when").args(["cron", "rate"])))]
pub struct ScheduleUpdateArgs {
    pub name: String,
    #[command(flatten)]
    pub settings: ScheduleSettings,
}

#[derive(Debug, Args, Clone, Default)]
pub struct ScheduleSettings {
    /// Six cron fields: MINUTES HOURS DAY-OF-MONTH MONTH DAY-OF-WEEK YEAR,
    /// e.g. "0 3 * * ? *" (03:00 every day); one of day-of-month and
    /// day-of-week must be ?.
    #[arg(long, value_name = "FIELDS")]
    pub cron: Option<String>,
    /// A period, e.g. "5 minutes", "1 hour", "2 days"; the first run is one
    /// period after creation.
    #[arg(long, value_name = "PERIOD")]
    pub rate: Option<String>,
    /// The task definition: FAMILY (its latest ACTIVE revision when a slot
    /// fires) or FAMILY:REVISION. Required with create.
    #[arg(long = "taskdef", value_name = "FAMILY[:REVISION]")]
    pub task_definition: Option<String>,
    /// Tasks per run [default: 1].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub count: Option<u32>,
    /// The cluster [default: the default cluster].
    #[arg(long)]
    pub cluster: Option<String>,
    /// The IANA time zone the cron is read in, e.g. Asia/Seoul [default:
    /// UTC].
    #[arg(long, value_name = "ZONE")]
    pub timezone: Option<String>,
    /// Set an environment variable in one container; repeatable (replaces
    /// all overrides on update).
    #[arg(long = "override", value_name = "CONTAINER.env.KEY=VALUE", value_parser = override_arg)]
    pub overrides: Vec<String>,
    /// As `task run --placement-strategy`; repeatable.
    #[arg(long = "placement-strategy", value_name = "STRATEGY")]
    pub placement_strategies: Vec<String>,
    /// As `task run --placement-constraint`; repeatable.
    #[arg(long = "placement-constraint", value_name = "CONSTRAINT")]
    pub placement_constraints: Vec<String>,
    /// While the previous run still runs: allow another, forbid (skip the
    /// slot), or replace (stop it first) [default: allow].
    #[arg(long, value_name = "POLICY", value_parser = ["allow", "forbid", "replace"])]
    pub concurrency: Option<String>,
    /// Skip slots missed while the cluster had no leader, instead of
    /// running once for them [default: run once]; --skip-missed=false
    /// undoes it.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub skip_missed: Option<bool>,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct EventsArgs {
    #[command(subcommand)]
    pub command: Option<EventsCommand>,
    #[command(flatten)]
    pub query: EventQuery,
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Show or change how many events and audit records the cluster keeps,
    /// and for how long (both bounds apply; the oldest go first).
    Retention {
        /// At most this many events (and, separately, audit records).
        #[arg(long, value_name = "N")]
        max_records: Option<u32>,
        /// None older than this, e.g. 7d.
        #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
        max_age: Option<Duration>,
    },
}

#[derive(Debug, Args, Default, Clone)]
#[command(group(ArgGroup::new("start").args(["since", "from"])))]
pub struct EventQuery {
    /// Only events of the last DURATION, e.g. 10m.
    #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
    pub since: Option<Duration>,
    /// Only events after this cursor (as printed in the CURSOR column), to
    /// resume exactly where an earlier reader stopped.
    #[arg(long, value_name = "CURSOR")]
    pub from: Option<String>,
    /// Keep printing new events until interrupted (as JSON lines with -o
    /// json).
    #[arg(short, long)]
    pub follow: bool,
    /// Only these types; repeatable or comma-separated: task, instance,
    /// service, deployment, task-definition, cluster, membership, token,
    /// activation, certificate, schedule, secret.
    #[arg(long = "type", value_name = "TYPE", value_delimiter = ',')]
    pub types: Vec<String>,
    /// Only events of this cluster (and those of no cluster).
    #[arg(long)]
    pub cluster: Option<String>,
    /// Only events about this resource (task/ID, service/CLUSTER/NAME,
    /// instance/ID, ...) or, ending in `/`, resources under it.
    #[arg(long)]
    pub resource: Option<String>,
    /// Only changes made by this actor: token:ID, instance:ID, server:N,
    /// schedule:CLUSTER/NAME, or just the id.
    #[arg(long)]
    pub actor: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List audited calls, oldest first: those in the replicated log
    /// (identical on every server) and those each server recorded alone
    /// (refused calls, membership changes).
    List {
        /// Only calls of the last DURATION, e.g. 1h.
        #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
        since: Option<Duration>,
        /// Only calls by this actor: token:ID, instance:ID, server:N, or
        /// just the id.
        #[arg(long)]
        actor: Option<String>,
        /// Only calls naming this resource (task/ID, service/CLUSTER/NAME,
        /// ...) or, ending in `/`, resources under it.
        #[arg(long)]
        resource: Option<String>,
        /// Only the newest N.
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Show the control plane: leader, term and every server's state.
    Status,
    /// Create a cluster.
    Create(ClusterCreateArgs),
    /// Change a cluster's settings.
    Update(ClusterUpdateArgs),
    /// List clusters.
    List,
    /// Show one cluster.
    Describe { name: String },
    /// Delete a cluster.
    Delete { name: String },
}

#[derive(Debug, Args)]
pub struct ClusterCreateArgs {
    pub name: String,
    /// How long an instance may stay disconnected before it is declared
    /// lost: its tasks are stopped, and services start theirs elsewhere
    /// (one-off tasks are not restarted), e.g. 5m [default: the server's, 5m].
    #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
    pub lost_after: Option<Duration>,
    /// How long a stopped task stays describable, e.g. 1h [default: the
    /// server's, 1h].
    #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
    pub task_retention: Option<Duration>,
    /// A tag; repeatable (at most 50; keys starting with aws: are
    /// reserved).
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = attribute_arg)]
    pub tags: Vec<(String, String)>,
}

#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("settings")
        .args(["lost_after", "task_retention"])
        .required(true)
        .multiple(true)
))]
pub struct ClusterUpdateArgs {
    pub name: String,
    /// How long an instance may stay disconnected before it is declared
    /// lost: its tasks are stopped, and services start theirs elsewhere
    /// (one-off tasks are not restarted), e.g. 10m.
    #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
    pub lost_after: Option<Duration>,
    /// How long a stopped task stays describable, e.g. 2h.
    #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
    pub task_retention: Option<Duration>,
}

#[derive(Debug, Subcommand)]
pub enum TaskDefCommand {
    /// Register a new revision from a JSON or YAML file in ECS's shape.
    Register(RegisterArgs),
    /// List task definition revisions.
    List {
        /// Only this family.
        #[arg(long, value_name = "FAMILY")]
        family: Option<String>,
        /// Only revisions with this status.
        #[arg(long, value_enum, ignore_case = true)]
        status: Option<StatusFilter>,
    },
    /// List families with their latest revisions.
    Families,
    /// Show a task definition: FAMILY (latest ACTIVE revision) or
    /// FAMILY:REVISION.
    Describe {
        #[arg(value_name = "FAMILY[:REVISION]")]
        task_definition: String,
    },
    /// Mark a revision INACTIVE so no new tasks use it.
    Deregister {
        #[arg(value_name = "FAMILY:REVISION")]
        task_definition: String,
    },
}

#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// The file; `-` reads standard input. `.json` is read as JSON,
    /// `.yaml`/`.yml` as YAML, anything else by its first character.
    #[arg(short, long, value_name = "FILE")]
    pub file: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusFilter {
    #[value(name = "ACTIVE")]
    Active,
    #[value(name = "INACTIVE")]
    Inactive,
}

impl From<StatusFilter> for TaskDefinitionStatus {
    fn from(status: StatusFilter) -> Self {
        match status {
            StatusFilter::Active => TaskDefinitionStatus::Active,
            StatusFilter::Inactive => TaskDefinitionStatus::Inactive,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// List the control-plane servers.
    List,
    /// Add a server; it joins as a learner and is promoted to voter once it
    /// has caught up.
    Add {
        node_id: u64,
        /// The address other servers reach it at (HOST:PORT).
        address: String,
        /// Keep it a non-voting learner.
        #[arg(long)]
        learner_only: bool,
    },
    /// Remove a server.
    Remove { node_id: u64 },
    /// Save a consistent copy of the whole state from a running server
    /// (admin token), for `berthd restore`. It holds every record, token
    /// and activation hashes included: keep it like the servers' keys.
    Backup {
        /// Where to write it (mode 0600; an existing file is replaced).
        #[arg(long, value_name = "FILE")]
        out: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// API tokens for people and scripts.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The certificate revocation list: servers refuse a caller whose
    /// chain holds a listed certificate.
    #[command(subcommand)]
    Certificate(CertificateCommand),
}

#[derive(Debug, Subcommand)]
pub enum CertificateCommand {
    /// Revoke a certificate (a server's, a server's signing CA, or an
    /// agent's): every server refuses it from then on.
    #[command(group(ArgGroup::new("which").args(["fingerprint", "file"]).required(true)))]
    Revoke {
        /// SHA-256 of the certificate's DER, 64 hex digits.
        #[arg(long)]
        fingerprint: Option<String>,
        /// A PEM certificate file; its first certificate is revoked.
        #[arg(long, value_name = "PEM")]
        file: Option<std::path::PathBuf>,
        /// Why, for the list.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List revoked certificates.
    List,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TokenFormatArg {
    Bearer,
    Aws,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an API token; it is printed this once only.
    Create {
        /// What the token may do: admin (everything), readonly (describe,
        /// list and status; not container logs) or logs (readonly plus
        /// `berth task logs`).
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Who or what the token is for.
        #[arg(long)]
        description: String,
        /// Lifetime, e.g. 30d or 12h [default: never expires].
        #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
        expires: Option<Duration>,
        /// bearer: a token sent as `authorization: Bearer ...` (the CLI,
        /// gRPC clients); aws: an AWS access key id and secret access key
        /// for the ECS endpoint (`aws ecs --endpoint-url`, boto3, AWS
        /// SDKs), which sign requests with SigV4.
        #[arg(long, value_enum, default_value = "bearer")]
        format: TokenFormatArg,
    },
    /// List API tokens (never their secrets).
    List,
    /// Revoke an API token: it stops working at once.
    Revoke { id: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    Admin,
    Readonly,
    Logs,
}

impl From<RoleArg> for berth_types::Role {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Admin => berth_types::Role::Admin,
            RoleArg::Readonly => berth_types::Role::Readonly,
            RoleArg::Logs => berth_types::Role::Logs,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ActivationCommand {
    /// Create an activation and print its join token (this once only).
    Create(ActivationCreateArgs),
    /// List activations.
    List,
    /// Show one activation.
    Describe { id: String },
    /// Revoke an activation: no more registrations with its token.
    Revoke { id: String },
}

#[derive(Debug, Args)]
pub struct ActivationCreateArgs {
    /// The cluster instances join [default: the default cluster].
    #[arg(long)]
    pub cluster: Option<String>,
    /// How long the join token can be used.
    #[arg(long, value_name = "DURATION", value_parser = duration_arg, default_value = "24h")]
    pub expires: Duration,
    /// How many instances may register with it (one token per host is
    /// safest: a token left on a host cannot register another).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_registrations: u32,
    /// An attribute every instance registered with it gets (an operator
    /// attribute: what the agent reports cannot change it; names may not
    /// start with agent.); repeatable. berth.capacity.cpu=UNITS and
    /// berth.capacity.memory=MIB cap what those hosts may claim.
    #[arg(long = "attribute", value_name = "NAME=VALUE", value_parser = attribute_arg)]
    pub attributes: Vec<(String, String)>,
    /// What the activation is for.
    #[arg(long, default_value = "")]
    pub description: String,
}

#[derive(Debug, Subcommand)]
pub enum InstanceCommand {
    /// List registered instances, oldest first [default: every cluster's].
    List {
        /// Only this cluster's.
        #[arg(long)]
        cluster: Option<String>,
        /// Every cluster's, as without --cluster.
        #[arg(long, conflicts_with = "cluster")]
        all_clusters: bool,
        #[command(flatten)]
        watch: crate::watch::Watch,
    },
    /// Show one instance.
    Describe { id: String },
    /// Deregister an instance: its certificate is refused from then on and
    /// its tasks are stopped (services start theirs elsewhere).
    Deregister { id: String },
    /// Stop placing new tasks on an instance; its tasks keep running.
    Drain { id: String },
    /// Place tasks on a drained instance again.
    Activate { id: String },
    /// Operator attributes, used by memberOf placement constraints. They
    /// win over anything the agent reports: its facts and its --attribute
    /// flags appear apart, as agent.NAME (agent.os, agent.arch,
    /// agent.hostname, agent.containerd.version, agent.capacity.cpu,
    /// agent.zone, ...), and its sessions never change these.
    /// berth.capacity.cpu and berth.capacity.memory cap the CPU units and
    /// MiB the agent may claim: tasks are placed against the smaller.
    #[command(subcommand)]
    Attribute(AttributeCommand),
}

#[derive(Debug, Subcommand)]
pub enum AttributeCommand {
    /// Set operator attributes on an instance (replacing values of names it
    /// has); the agent's next session does not undo them. Names may not
    /// start with agent.
    Put {
        id: String,
        #[arg(
            value_name = "NAME=VALUE",
            required = true,
            value_parser = attribute_arg
        )]
        attributes: Vec<(String, String)>,
    },
    /// Remove attributes from an instance.
    Delete {
        id: String,
        #[arg(value_name = "NAME", required = true)]
        names: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Start tasks where the scheduler places them.
    Run(TaskRunArgs),
    /// Start tasks on the instances given, bypassing placement.
    Start(TaskStartArgs),
    /// Stop a task.
    Stop {
        id: String,
        /// Why, for whoever describes the task later.
        #[arg(long)]
        reason: Option<String>,
    },
    /// List tasks, oldest first [default: every cluster's].
    List(TaskListArgs),
    /// Show one task with its containers.
    Describe {
        id: String,
        #[command(flatten)]
        watch: crate::watch::Watch,
    },
    /// Print a container's output: stdout to stdout, stderr to stderr.
    Logs(TaskLogsArgs),
    /// CPU and memory a running task uses, as a share of what it reserved
    /// (sampled by its agent every 10 s).
    Stats { id: String },
    /// What happened to a task, oldest first: each state change, when and
    /// by whom.
    History {
        id: String,
        /// Keep printing new changes until interrupted.
        #[arg(short, long)]
        follow: bool,
    },
}

/// What `task run` and `task start` share.
#[derive(Debug, Args)]
pub struct TaskLaunchArgs {
    /// The task definition: FAMILY (its latest ACTIVE revision) or
    /// FAMILY:REVISION.
    #[arg(long = "taskdef", value_name = "FAMILY[:REVISION]")]
    pub task_definition: String,
    /// The cluster [default: the default cluster].
    #[arg(long)]
    pub cluster: Option<String>,
    /// A group name, e.g. for spreading or distinctInstance.
    #[arg(long)]
    pub group: Option<String>,
    /// Who or what started the task, e.g. a CI job.
    #[arg(long)]
    pub started_by: Option<String>,
    /// Set an environment variable in one container; repeatable.
    #[arg(long = "override", value_name = "CONTAINER.env.KEY=VALUE", value_parser = override_arg)]
    pub overrides: Vec<String>,
    /// Idempotency token: the same token never starts tasks twice
    /// [default: a fresh random one per invocation].
    #[arg(long, value_name = "TOKEN", value_parser = client_token_arg)]
    pub client_token: Option<String>,
}

#[derive(Debug, Args)]
pub struct TaskRunArgs {
    #[command(flatten)]
    pub launch: TaskLaunchArgs,
    /// How many tasks to start.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub count: u32,
    /// binpack:cpu, binpack:memory, spread:instanceId,
    /// spread:attribute:NAME or random; repeatable, applied in order.
    #[arg(long = "placement-strategy", value_name = "STRATEGY")]
    pub placement_strategies: Vec<String>,
    /// distinctInstance or memberOf(EXPRESSION), e.g.
    /// 'memberOf(attribute:zone == a)'; repeatable.
    #[arg(long = "placement-constraint", value_name = "CONSTRAINT")]
    pub placement_constraints: Vec<String>,
}

#[derive(Debug, Args)]
pub struct TaskStartArgs {
    #[command(flatten)]
    pub launch: TaskLaunchArgs,
    /// An instance to start one task on; repeatable.
    #[arg(long = "instance", value_name = "ID", required = true)]
    pub instances: Vec<String>,
}

#[derive(Debug, Args)]
pub struct TaskListArgs {
    /// Only this cluster's.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Only those placed on this instance.
    #[arg(long, value_name = "ID")]
    pub instance: Option<String>,
    /// Only this task definition family's.
    #[arg(long, value_name = "FAMILY")]
    pub family: Option<String>,
    /// Only tasks with this last status.
    #[arg(long, value_enum, ignore_case = true)]
    pub status: Option<TaskStatusFilter>,
    /// Every cluster's, as without --cluster, with a CLUSTER column.
    #[arg(long, conflicts_with = "cluster")]
    pub all_clusters: bool,
    #[command(flatten)]
    pub watch: crate::watch::Watch,
}

#[derive(Debug, Args)]
pub struct TaskLogsArgs {
    pub id: String,
    /// The container [default: the task's first].
    #[arg(long, value_name = "NAME")]
    pub container: Option<String>,
    /// Keep printing new output until the task stops.
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub tail: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TaskStatusFilter {
    #[value(name = "PROVISIONING")]
    Provisioning,
    #[value(name = "PENDING")]
    Pending,
    #[value(name = "RUNNING")]
    Running,
    #[value(name = "DEACTIVATING")]
    Deactivating,
    #[value(name = "STOPPING")]
    Stopping,
    #[value(name = "STOPPED")]
    Stopped,
}

impl From<TaskStatusFilter> for TaskStatus {
    fn from(status: TaskStatusFilter) -> Self {
        match status {
            TaskStatusFilter::Provisioning => TaskStatus::Provisioning,
            TaskStatusFilter::Pending => TaskStatus::Pending,
            TaskStatusFilter::Running => TaskStatus::Running,
            TaskStatusFilter::Deactivating => TaskStatus::Deactivating,
            TaskStatusFilter::Stopping => TaskStatus::Stopping,
            TaskStatusFilter::Stopped => TaskStatus::Stopped,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Create a service, from flags or from a file in ECS's CreateService
    /// JSON/YAML shape (flags given as well override the file).
    Create(ServiceCreateArgs),
    /// Change a service: scale it, deploy another task definition, or
    /// start a new deployment of the same one.
    Update(ServiceUpdateArgs),
    /// Delete a service: it drains (its tasks stop), then it is INACTIVE.
    Delete {
        name: String,
        #[arg(long)]
        cluster: Option<String>,
        /// Delete it although its desired count is above 0.
        #[arg(long)]
        force: bool,
    },
    /// List the services of a cluster, oldest first.
    List {
        #[arg(long)]
        cluster: Option<String>,
        /// Include deleted (INACTIVE) services.
        #[arg(long)]
        all: bool,
        /// The services of every cluster, with a CLUSTER column.
        #[arg(long, conflicts_with = "cluster")]
        all_clusters: bool,
        #[command(flatten)]
        watch: crate::watch::Watch,
    },
    /// Show services with their deployments, counts and latest events.
    Describe {
        #[arg(value_name = "NAME", required = true)]
        names: Vec<String>,
        #[arg(long)]
        cluster: Option<String>,
        #[command(flatten)]
        watch: crate::watch::Watch,
    },
    /// CPU and memory the service's running tasks use, as a share of what
    /// they reserved: the average, and each task.
    Stats {
        name: String,
        #[arg(long)]
        cluster: Option<String>,
    },
    /// What happened to a service, oldest first: updates, deployments and
    /// its events, when and by whom.
    History {
        name: String,
        #[arg(long)]
        cluster: Option<String>,
        /// Keep printing new changes until interrupted.
        #[arg(short, long)]
        follow: bool,
    },
    /// Print a service's events, oldest first.
    Events {
        name: String,
        #[arg(long)]
        cluster: Option<String>,
        /// Keep printing new events until interrupted.
        #[arg(short, long)]
        follow: bool,
    },
    /// Where a service can be reached: one line per published port of each
    /// healthy RUNNING task (the instance's address and host port; task
    /// mode: the task's address and container port), with its load
    /// balancer weight, or "draining" for a DEACTIVATING task.
    Endpoints {
        name: String,
        #[arg(long)]
        cluster: Option<String>,
        /// Keep printing the whole set each time it changes (resumes on
        /// another server if this one goes away).
        #[arg(short, long)]
        watch: bool,
    },
    /// List a service's deployments, current ones first.
    Deployments {
        name: String,
        #[arg(long)]
        cluster: Option<String>,
    },
    /// Roll back the deployment in progress: a blue/green one gives all
    /// traffic back to the previous deployment, whose tasks still run; a
    /// rolling one deploys the last COMPLETED task definition again.
    Rollback {
        name: String,
        #[arg(long)]
        cluster: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ControllerArg {
    /// ECS's rolling update within --min-healthy-percent/--max-percent.
    #[value(name = "rolling", alias = "ECS")]
    Rolling,
    /// New tasks start beside the old; load balancer traffic moves to them
    /// as --traffic-shift says (needs load balancers).
    #[value(name = "blue-green", alias = "BLUE_GREEN")]
    BlueGreen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchedulingStrategyArg {
    #[value(name = "REPLICA")]
    Replica,
    #[value(name = "DAEMON")]
    Daemon,
}

/// Rollout settings that `create` and `update` share.
#[derive(Debug, Default, Args)]
pub struct DeploymentArgs {
    /// Healthy tasks never drop below this percentage of the desired count
    /// during a rollout [default: 100, DAEMON 0].
    #[arg(long = "min-healthy-percent", value_name = "N")]
    pub min_healthy_percent: Option<u32>,
    /// Tasks never exceed this percentage of the desired count during a
    /// rollout [default: 200, DAEMON 100].
    #[arg(long = "max-percent", value_name = "N")]
    pub max_percent: Option<u32>,
    /// Fail a deployment whose tasks keep failing (ECS's deployment
    /// circuit breaker).
    #[arg(long)]
    pub circuit_breaker: bool,
    /// With --circuit-breaker: roll a failed deployment back to the last
    /// one that completed.
    #[arg(long, requires = "circuit_breaker")]
    pub rollback: bool,
    /// With --circuit-breaker: failed tasks that fail a deployment
    /// [default: half the desired count, at least 10, at most 200].
    #[arg(long, value_name = "N", requires = "circuit_breaker")]
    pub failure_threshold: Option<u32>,
    /// A deployment not COMPLETED after this long is FAILED (and rolled
    /// back with --rollback) [default: 30m].
    #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
    pub deployment_timeout: Option<Duration>,
    /// Ignore failing health checks for this long after a task starts.
    #[arg(long = "health-check-grace", value_name = "DURATION", value_parser = duration_arg)]
    pub health_check_grace: Option<Duration>,
    /// How a new deployment takes over [default: rolling].
    #[arg(long, value_enum, ignore_case = true)]
    pub deployment_controller: Option<ControllerArg>,
    /// Blue/green: all-at-once, canary:PERCENT:INTERVAL (PERCENT first, the
    /// rest after INTERVAL) or linear:PERCENT:INTERVAL (PERCENT more every
    /// INTERVAL), e.g. canary:10:5m [default: all-at-once].
    #[arg(long, value_name = "SHIFT", value_parser = traffic_shift_arg)]
    pub traffic_shift: Option<TrafficShift>,
    /// Blue/green: how long the old tasks stay up after the last traffic
    /// step [default: 0s].
    #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
    pub bake_time: Option<Duration>,
}

/// `all-at-once`, `canary:10:5m`, `linear:20:1m`.
pub fn traffic_shift_arg(text: &str) -> Result<TrafficShift, String> {
    if text.eq_ignore_ascii_case("all-at-once") {
        return Ok(TrafficShift::AllAtOnce);
    }
    let usage = "expected all-at-once, canary:PERCENT:INTERVAL or linear:PERCENT:INTERVAL, e.g. canary:10:5m";
    let mut parts = text.splitn(3, ':');
    let (Some(kind), Some(percent), Some(interval)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(usage.into());
    };
    let percent: u32 = percent
        .parse()
        .map_err(|_| format!("{percent:?} is not a percentage; {usage}"))?;
    let interval_secs = u32::try_from(duration_arg(interval)?.as_secs())
        .map_err(|_| format!("{interval} is too long"))?;
    match kind.to_ascii_lowercase().as_str() {
        "canary" => Ok(TrafficShift::Canary {
            percent,
            interval_secs,
        }),
        "linear" => Ok(TrafficShift::Linear {
            percent,
            interval_secs,
        }),
        _ => Err(usage.into()),
    }
}

/// `NAME:CONTAINER:PORT`.
pub fn load_balancer_arg(text: &str) -> Result<(String, String, u32), String> {
    let usage = "expected NAME:CONTAINER:PORT, e.g. public:web:8080";
    let mut parts = text.splitn(3, ':');
    let (Some(name), Some(container), Some(port)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(usage.into());
    };
    let port = port
        .parse()
        .map_err(|_| format!("{port:?} is not a port; {usage}"))?;
    Ok((name.to_string(), container.to_string(), port))
}

#[derive(Debug, Args)]
pub struct ServiceCreateArgs {
    /// A CreateService input file (JSON or YAML, ECS field names); `-` for
    /// standard input.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// The service name [required without --file].
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub cluster: Option<String>,
    /// The task definition: FAMILY (its latest ACTIVE revision) or
    /// FAMILY:REVISION [required without --file].
    #[arg(long = "taskdef", value_name = "FAMILY[:REVISION]")]
    pub task_definition: Option<String>,
    /// How many tasks to keep running [default: 1; not for DAEMON].
    #[arg(long, value_name = "N")]
    pub desired_count: Option<u32>,
    #[arg(long, value_enum, ignore_case = true)]
    pub scheduling_strategy: Option<SchedulingStrategyArg>,
    /// binpack:cpu, binpack:memory, spread:instanceId,
    /// spread:attribute:NAME or random; repeatable, applied in order.
    #[arg(long = "placement-strategy", value_name = "STRATEGY")]
    pub placement_strategies: Vec<String>,
    /// distinctInstance or memberOf(EXPRESSION); repeatable.
    #[arg(long = "placement-constraint", value_name = "CONSTRAINT")]
    pub placement_constraints: Vec<String>,
    #[command(flatten)]
    pub deployment: DeploymentArgs,
    /// Register the tasks with this Berth load balancer (what berth-lb
    /// serves) on the container's port; repeatable.
    #[arg(long = "load-balancer", value_name = "NAME:CONTAINER:PORT", value_parser = load_balancer_arg)]
    pub load_balancers: Vec<(String, String, u32)>,
    /// How long a task to be stopped stays DEACTIVATING (drained in its
    /// load balancers) before it is stopped [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = berth_types::duration::parse_duration, requires = "load_balancers")]
    pub deregistration_delay: Option<Duration>,
    /// A tag; repeatable.
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = attribute_arg)]
    pub tags: Vec<(String, String)>,
    /// Wait for the first deployment to complete, showing its progress.
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, Args)]
pub struct ServiceUpdateArgs {
    pub name: String,
    #[arg(long)]
    pub cluster: Option<String>,
    /// Deploy this task definition (FAMILY or FAMILY:REVISION).
    #[arg(long = "taskdef", value_name = "FAMILY[:REVISION]")]
    pub task_definition: Option<String>,
    #[arg(long, value_name = "N")]
    pub desired_count: Option<u32>,
    /// Start a new deployment even if nothing else changed (e.g. to pull
    /// a moved image tag again).
    #[arg(long)]
    pub force_new_deployment: bool,
    /// Replace the placement strategies; repeatable.
    #[arg(long = "placement-strategy", value_name = "STRATEGY")]
    pub placement_strategies: Vec<String>,
    /// Replace the placement constraints; repeatable.
    #[arg(long = "placement-constraint", value_name = "CONSTRAINT")]
    pub placement_constraints: Vec<String>,
    /// Remove every placement strategy and constraint.
    #[arg(long, conflicts_with_all = ["placement_strategies", "placement_constraints"])]
    pub clear_placement: bool,
    #[command(flatten)]
    pub deployment: DeploymentArgs,
    /// Wait until the rollout completes (exit 0) or fails (exit 1),
    /// showing its progress.
    #[arg(long)]
    pub wait: bool,
}

/// `30s`, `90m`, `24h`, `7d`, for clap, which adds the flag's name to the
/// message.
pub fn duration_arg(text: &str) -> Result<Duration, String> {
    let duration = berth_types::duration::parse_duration(text)?;
    if duration.is_zero() {
        return Err("must be longer than 0s".into());
    }
    Ok(duration)
}

/// `NAME=VALUE`; the value may be empty or contain `=`.
pub fn attribute_arg(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_string(), value.to_string()))
        }
        _ => Err("expected NAME=VALUE, e.g. zone=eu-1a".into()),
    }
}

/// `CONTAINER.env.KEY=VALUE`, checked here and sent as given.
pub fn override_arg(text: &str) -> Result<String, String> {
    berth_types::task::parse_override(text).map_err(|e| e.message)?;
    Ok(text.to_string())
}

/// A client token: printable ASCII without spaces, so it survives shells
/// and logs unchanged.
pub fn client_token_arg(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > 64 || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be 1 to 64 printable characters without spaces".into());
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("berth").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    fn env_of(id: &str) -> Option<String> {
        let command = Cli::command();
        let arg = command.get_arguments().find(|a| a.get_id() == id).unwrap();
        arg.get_env().and_then(|e| e.to_str()).map(str::to_string)
    }

    #[test]
    fn connection_settings_are_global_and_read_the_environment() {
        assert_eq!(env_of("endpoint").as_deref(), Some("BERTH_ENDPOINT"));
        assert_eq!(env_of("token").as_deref(), Some("BERTH_TOKEN"));
        assert_eq!(env_of("ca_cert").as_deref(), Some("BERTH_CA_CERT"));
        assert_eq!(env_of("config").as_deref(), Some("BERTH_CONFIG"));
        // The default endpoint comes last, after the config file, so clap
        // must not fill one in.
        let command = Cli::command();
        let endpoint = command
            .get_arguments()
            .find(|a| a.get_id() == "endpoint")
            .unwrap();
        assert!(endpoint.get_default_values().is_empty());

        let cli = parse(&[
            "instance",
            "list",
            "--token",
            "berth_a_b",
            "--ca-cert",
            "/etc/berth/ca.crt",
            "--config",
            "/tmp/c.toml",
        ])
        .unwrap();
        assert_eq!(cli.token.as_deref(), Some("berth_a_b"));
        assert_eq!(cli.ca_cert(), Some(PathBuf::from("/etc/berth/ca.crt")));
        assert_eq!(cli.config(), Some(PathBuf::from("/tmp/c.toml")));

        // Empty values (an exported but empty variable) mean unset.
        let cli = parse(&["instance", "list", "--ca-cert", "", "--config="]).unwrap();
        assert_eq!(cli.ca_cert(), None);
        assert_eq!(cli.config(), None);
    }

    #[test]
    fn the_token_never_shows_in_help() {
        let command = Cli::command();
        let token = command
            .get_arguments()
            .find(|a| a.get_id() == "token")
            .unwrap();
        assert!(token.is_hide_env_values_set());
    }

    #[test]
    fn endpoints_split_on_commas_and_trim() {
        let cli = parse(&["--endpoint", "a:1, b:2,,c:3,", "cluster", "list"]).unwrap();
        assert_eq!(cli.endpoints(), ["a:1", "b:2", "c:3"]);
    }

    #[test]
    fn endpoint_may_be_repeated_and_given_after_the_subcommand() {
        let cli = parse(&["cluster", "list", "--endpoint", "a:1", "--endpoint=b:2"]).unwrap();
        assert_eq!(cli.endpoints(), ["a:1", "b:2"]);
    }

    #[test]
    fn output_is_global_and_checked() {
        let cli = parse(&["taskdef", "families", "-o", "yaml"]).unwrap();
        assert_eq!(cli.output, Format::Yaml);
        let cli = parse(&["--output", "json", "server", "list"]).unwrap();
        assert_eq!(cli.output, Format::Json);
        assert_eq!(parse(&["cluster", "list"]).unwrap().output, Format::Table);
        let err = parse(&["cluster", "list", "-o", "xml"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::InvalidValue);
    }

    #[test]
    fn taskdef_list_filters() {
        let cli = parse(&["taskdef", "list", "--family", "web", "--status", "inactive"]).unwrap();
        match cli.command {
            Command::TaskDef(TaskDefCommand::List { family, status }) => {
                assert_eq!(family.as_deref(), Some("web"));
                assert_eq!(status, Some(StatusFilter::Inactive));
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["taskdef", "list", "--status", "DRAINING"]).is_err());
    }

    #[test]
    fn register_needs_a_file() {
        let cli = parse(&["taskdef", "register", "-f", "-"]).unwrap();
        match cli.command {
            Command::TaskDef(TaskDefCommand::Register(args)) => {
                assert_eq!(args.file, PathBuf::from("-"))
            }
            other => panic!("{other:?}"),
        }
        let err = parse(&["taskdef", "register"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn server_add_takes_id_address_and_flag() {
        let cli = parse(&["server", "add", "4", "10.0.0.4:7400", "--learner-only"]).unwrap();
        match cli.command {
            Command::Server(ServerCommand::Add {
                node_id,
                address,
                learner_only,
            }) => {
                assert_eq!(
                    (node_id, address.as_str(), learner_only),
                    (4, "10.0.0.4:7400", true)
                );
            }
            other => panic!("{other:?}"),
        }
        let err = parse(&["server", "remove", "four"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
    }

    #[test]
    fn durations_take_units_and_errors_name_the_flag() {
        assert_eq!(duration_arg("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(duration_arg("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(duration_arg("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(duration_arg("7d"), Ok(Duration::from_secs(604_800)));
        assert!(duration_arg("0h").unwrap_err().contains("longer than 0s"));
        for bad in ["", "24", "1w", "-1h", "h", "1.5h"] {
            assert!(duration_arg(bad).is_err(), "{bad:?}");
        }

        let err = parse(&[
            "auth",
            "token",
            "create",
            "--role",
            "admin",
            "--description",
            "ci",
            "--expires",
            "3x",
        ])
        .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        let text = err.to_string();
        assert!(text.contains("--expires"), "{text}");
        assert!(text.contains("3x"), "{text}");
        let err = parse(&["activation", "create", "--expires", "0s"]).unwrap_err();
        assert!(err.to_string().contains("--expires"), "{err}");
    }

    #[test]
    fn token_create_needs_a_known_role_and_a_description() {
        let cli = parse(&[
            "auth",
            "token",
            "create",
            "--role",
            "readonly",
            "--description",
            "grafana",
            "--expires",
            "30d",
        ])
        .unwrap();
        match cli.command {
            Command::Auth(AuthCommand::Token(TokenCommand::Create {
                role,
                description,
                expires,
                format,
            })) => {
                assert_eq!(format, TokenFormatArg::Bearer);
                assert_eq!(role, RoleArg::Readonly);
                assert_eq!(description, "grafana");
                assert_eq!(expires, Some(Duration::from_secs(30 * 86_400)));
            }
            other => panic!("{other:?}"),
        }
        let err = parse(&[
            "auth",
            "token",
            "create",
            "--role",
            "root",
            "--description",
            "x",
        ])
        .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::InvalidValue);
        let err = parse(&["auth", "token", "create", "--role", "admin"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        assert!(matches!(
            parse(&["auth", "token", "revoke", "0a1b"]).unwrap().command,
            Command::Auth(AuthCommand::Token(TokenCommand::Revoke { .. }))
        ));
    }

    #[test]
    fn activation_create_has_defaults_and_repeatable_attributes() {
        let cli = parse(&["activation", "create"]).unwrap();
        match cli.command {
            Command::Activation(ActivationCommand::Create(args)) => {
                assert_eq!(args.cluster, None);
                assert_eq!(args.expires, Duration::from_secs(86_400));
                assert_eq!(args.max_registrations, 1);
                assert!(args.attributes.is_empty());
                assert_eq!(args.description, "");
            }
            other => panic!("{other:?}"),
        }
        let cli = parse(&[
            "activation",
            "create",
            "--cluster",
            "prod",
            "--expires",
            "2h",
            "--max-registrations",
            "5",
            "--attribute",
            "zone=a",
            "--attribute",
            "disk=ssd=fast",
            "--description",
            "rack 4",
        ])
        .unwrap();
        match cli.command {
            Command::Activation(ActivationCommand::Create(args)) => {
                assert_eq!(args.cluster.as_deref(), Some("prod"));
                assert_eq!(args.expires, Duration::from_secs(7200));
                assert_eq!(args.max_registrations, 5);
                assert_eq!(
                    args.attributes,
                    [
                        ("zone".into(), "a".into()),
                        ("disk".into(), "ssd=fast".into())
                    ]
                );
            }
            other => panic!("{other:?}"),
        }
        let err = parse(&["activation", "create", "--attribute", "novalue"]).unwrap_err();
        assert!(err.to_string().contains("--attribute"), "{err}");
        assert!(err.to_string().contains("NAME=VALUE"), "{err}");
        assert!(parse(&["activation", "create", "--attribute", "=x"]).is_err());
        assert!(parse(&["activation", "create", "--max-registrations", "0"]).is_err());
    }

    #[test]
    fn instance_commands_parse() {
        let cli = parse(&["instance", "list", "--cluster", "prod"]).unwrap();
        match cli.command {
            Command::Instance(InstanceCommand::List { cluster, .. }) => {
                assert_eq!(cluster.as_deref(), Some("prod"))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["instance", "deregister", "i-1"]).unwrap().command,
            Command::Instance(InstanceCommand::Deregister { .. })
        ));
        assert!(parse(&["instance", "describe"]).is_err());
    }

    fn parse_err(args: &[&str]) -> String {
        parse(args).unwrap_err().to_string()
    }

    #[test]
    fn cluster_create_takes_optional_durations() {
        let cli = parse(&["cluster", "create", "prod"]).unwrap();
        match cli.command {
            Command::Cluster(ClusterCommand::Create(args)) => {
                assert_eq!(args.name, "prod");
                assert_eq!((args.lost_after, args.task_retention), (None, None));
            }
            other => panic!("{other:?}"),
        }
        let cli = parse(&[
            "cluster",
            "create",
            "prod",
            "--lost-after",
            "5m",
            "--task-retention",
            "1h",
        ])
        .unwrap();
        match cli.command {
            Command::Cluster(ClusterCommand::Create(args)) => {
                assert_eq!(args.lost_after, Some(Duration::from_secs(300)));
                assert_eq!(args.task_retention, Some(Duration::from_secs(3600)));
            }
            other => panic!("{other:?}"),
        }
        let err = parse_err(&["cluster", "create", "prod", "--lost-after", "5 minutes"]);
        assert!(err.contains("--lost-after"), "{err}");
        let err = parse_err(&["cluster", "create", "prod", "--task-retention", "0s"]);
        assert!(err.contains("--task-retention"), "{err}");
        assert!(err.contains("longer than 0s"), "{err}");
    }

    #[test]
    fn cluster_update_needs_at_least_one_setting() {
        let cli = parse(&["cluster", "update", "prod", "--task-retention", "2h"]).unwrap();
        match cli.command {
            Command::Cluster(ClusterCommand::Update(args)) => {
                assert_eq!(args.name, "prod");
                assert_eq!(args.lost_after, None);
                assert_eq!(args.task_retention, Some(Duration::from_secs(7200)));
            }
            other => panic!("{other:?}"),
        }
        let err = parse(&["cluster", "update", "prod"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let text = err.to_string();
        assert!(
            text.contains("--lost-after") && text.contains("--task-retention"),
            "{text}"
        );
        let err = parse_err(&["cluster", "update", "prod", "--lost-after", "10x"]);
        assert!(err.contains("--lost-after") && err.contains("10x"), "{err}");
    }

    #[test]
    fn task_run_takes_every_option_and_repeats() {
        let cli = parse(&[
            "task",
            "run",
            "--taskdef",
            "web:3",
            "--cluster",
            "prod",
            "--count",
            "3",
            "--group",
            "batch",
            "--started-by",
            "ci",
            "--placement-strategy",
            "spread:attribute:zone",
            "--placement-strategy",
            "binpack:memory",
            "--placement-constraint",
            "memberOf(attribute:zone == a)",
            "--placement-constraint",
            "distinctInstance",
            "--override",
            "web.env.GREETING=hi=there",
            "--override",
            "side.env.EMPTY=",
            "--client-token",
            "deploy-42",
        ])
        .unwrap();
        let Command::Task(TaskCommand::Run(args)) = cli.command else {
            panic!("{:?}", cli.command);
        };
        assert_eq!(args.launch.task_definition, "web:3");
        assert_eq!(args.launch.cluster.as_deref(), Some("prod"));
        assert_eq!(args.count, 3);
        assert_eq!(args.launch.group.as_deref(), Some("batch"));
        assert_eq!(args.launch.started_by.as_deref(), Some("ci"));
        assert_eq!(
            args.placement_strategies,
            ["spread:attribute:zone", "binpack:memory"]
        );
        assert_eq!(
            args.placement_constraints,
            ["memberOf(attribute:zone == a)", "distinctInstance"]
        );
        assert_eq!(
            args.launch.overrides,
            ["web.env.GREETING=hi=there", "side.env.EMPTY="]
        );
        assert_eq!(args.launch.client_token.as_deref(), Some("deploy-42"));

        let cli = parse(&["task", "run", "--taskdef", "web"]).unwrap();
        let Command::Task(TaskCommand::Run(args)) = cli.command else {
            panic!("{:?}", cli.command);
        };
        assert_eq!(args.count, 1);
        assert!(args.placement_strategies.is_empty());
        assert_eq!(args.launch.client_token, None);
    }

    #[test]
    fn task_run_errors_name_the_flag() {
        let err = parse(&["task", "run", "--count", "2"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        assert!(err.to_string().contains("--taskdef"), "{err}");

        for bad in [
            "web.GREETING=hi",
            "web.env.GREETING",
            ".env.X=1",
            "web.env.=1",
        ] {
            let err = parse_err(&["task", "run", "--taskdef", "web", "--override", bad]);
            assert!(err.contains("--override"), "{bad}: {err}");
            assert!(err.contains("CONTAINER.env.KEY=VALUE"), "{bad}: {err}");
        }

        let err = parse_err(&["task", "run", "--taskdef", "web", "--count", "0"]);
        assert!(err.contains("--count"), "{err}");
        let err = parse_err(&["task", "run", "--taskdef", "web", "--count", "many"]);
        assert!(err.contains("--count"), "{err}");
        let err = parse_err(&["task", "run", "--taskdef", "web", "--client-token", "a b"]);
        assert!(err.contains("--client-token"), "{err}");
        let long = "x".repeat(65);
        let err = parse_err(&["task", "run", "--taskdef", "web", "--client-token", &long]);
        assert!(err.contains("--client-token"), "{err}");
    }

    #[test]
    fn task_start_needs_a_taskdef_and_instances() {
        let cli = parse(&[
            "task",
            "start",
            "--taskdef",
            "web:1",
            "--instance",
            "i-1",
            "--instance",
            "i-2",
            "--override",
            "web.env.A=1",
            "--started-by",
            "me",
        ])
        .unwrap();
        let Command::Task(TaskCommand::Start(args)) = cli.command else {
            panic!("{:?}", cli.command);
        };
        assert_eq!(args.launch.task_definition, "web:1");
        assert_eq!(args.instances, ["i-1", "i-2"]);
        assert_eq!(args.launch.overrides, ["web.env.A=1"]);
        assert_eq!(args.launch.started_by.as_deref(), Some("me"));

        let err = parse(&["task", "start", "--taskdef", "web"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        assert!(err.to_string().contains("--instance"), "{err}");
        let err = parse(&["task", "start", "--instance", "i-1"]).unwrap_err();
        assert!(err.to_string().contains("--taskdef"), "{err}");
        // Placement is the scheduler's business: start does not take it.
        let err = parse(&[
            "task",
            "start",
            "--taskdef",
            "web",
            "--instance",
            "i-1",
            "--placement-strategy",
            "random",
        ])
        .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::UnknownArgument);
    }

    #[test]
    fn task_stop_list_describe_and_logs_parse() {
        let cli = parse(&["task", "stop", "t-1", "--reason", "done"]).unwrap();
        match cli.command {
            Command::Task(TaskCommand::Stop { id, reason }) => {
                assert_eq!((id.as_str(), reason.as_deref()), ("t-1", Some("done")))
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["task", "stop"]).is_err());

        let cli = parse(&[
            "task",
            "list",
            "--cluster",
            "prod",
            "--instance",
            "i-1",
            "--family",
            "web",
            "--status",
            "running",
        ])
        .unwrap();
        let Command::Task(TaskCommand::List(args)) = cli.command else {
            panic!("{:?}", cli.command);
        };
        assert_eq!(args.cluster.as_deref(), Some("prod"));
        assert_eq!(args.instance.as_deref(), Some("i-1"));
        assert_eq!(args.family.as_deref(), Some("web"));
        assert_eq!(args.status, Some(TaskStatusFilter::Running));
        // Every status people can type is one the API knows, by the same name.
        for filter in TaskStatusFilter::value_variants() {
            let name = filter.to_possible_value().map(|v| v.get_name().to_string());
            assert_eq!(name.as_deref(), Some(TaskStatus::from(*filter).as_str()));
        }
        let err = parse_err(&["task", "list", "--status", "DONE"]);
        assert!(
            err.contains("--status") && err.contains("PROVISIONING"),
            "{err}"
        );

        assert!(matches!(
            parse(&["task", "describe", "t-1"]).unwrap().command,
            Command::Task(TaskCommand::Describe { id, .. }) if id == "t-1"
        ));
        assert!(parse(&["task", "describe"]).is_err());

        let cli = parse(&[
            "task",
            "logs",
            "t-1",
            "-f",
            "--tail",
            "20",
            "--container",
            "web",
        ])
        .unwrap();
        let Command::Task(TaskCommand::Logs(args)) = cli.command else {
            panic!("{:?}", cli.command);
        };
        assert_eq!(
            (
                args.id.as_str(),
                args.follow,
                args.tail,
                args.container.as_deref()
            ),
            ("t-1", true, Some(20), Some("web"))
        );
        let cli = parse(&["task", "logs", "t-1"]).unwrap();
        let Command::Task(TaskCommand::Logs(args)) = cli.command else {
            panic!("{:?}", cli.command);
        };
        assert_eq!(
            (args.follow, args.tail, args.container),
            (false, None, None)
        );
        let err = parse_err(&["task", "logs", "t-1", "--tail", "0"]);
        assert!(err.contains("--tail"), "{err}");
        let err = parse_err(&["task", "logs", "t-1", "--tail=-3"]);
        assert!(err.contains("--tail"), "{err}");
    }

    #[test]
    fn instance_drain_activate_and_attributes_parse() {
        assert!(matches!(
            parse(&["instance", "drain", "i-1"]).unwrap().command,
            Command::Instance(InstanceCommand::Drain { id }) if id == "i-1"
        ));
        assert!(matches!(
            parse(&["instance", "activate", "i-1"]).unwrap().command,
            Command::Instance(InstanceCommand::Activate { id }) if id == "i-1"
        ));
        assert!(parse(&["instance", "drain"]).is_err());

        let cli = parse(&[
            "instance",
            "attribute",
            "put",
            "i-1",
            "zone=a",
            "disk=ssd=fast",
        ])
        .unwrap();
        match cli.command {
            Command::Instance(InstanceCommand::Attribute(AttributeCommand::Put {
                id,
                attributes,
            })) => {
                assert_eq!(id, "i-1");
                assert_eq!(
                    attributes,
                    [
                        ("zone".into(), "a".into()),
                        ("disk".into(), "ssd=fast".into())
                    ]
                );
            }
            other => panic!("{other:?}"),
        }
        let err = parse_err(&["instance", "attribute", "put", "i-1", "zone"]);
        assert!(err.contains("NAME=VALUE"), "{err}");
        let err = parse(&["instance", "attribute", "put", "i-1"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);

        let cli = parse(&["instance", "attribute", "delete", "i-1", "zone", "disk"]).unwrap();
        match cli.command {
            Command::Instance(InstanceCommand::Attribute(AttributeCommand::Delete {
                id,
                names,
            })) => {
                assert_eq!(id, "i-1");
                assert_eq!(names, ["zone", "disk"]);
            }
            other => panic!("{other:?}"),
        }
        let err = parse(&["instance", "attribute", "delete", "i-1"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    }
}
