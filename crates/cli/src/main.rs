//! `berth`: the command-line interface to a Berth control plane.

mod args;
mod backup;
mod colour;
mod completion;
mod config;
mod errors;
mod ids;
mod journal;
mod output;
mod schedule;
mod secret;
mod service;
mod stats;
mod tag;
mod wait;
mod watch;

use std::collections::BTreeMap;
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use berth_client::time::now_ms;
use berth_client::{BerthClient, ClusterOptions};
use berth_ecs::taskdef::{load_task_definition, FileFormat};
use berth_types::{
    LogChunk, LogOptions, OutputStream, RunTaskInput, StartTaskInput, Task, TaskFilter, TaskLaunch,
};
use clap::Parser;

use args::{
    ActivationCommand, ActivationCreateArgs, AttributeCommand, AuthCommand, CertificateCommand,
    Cli, ClusterCommand, ClusterCreateArgs, ClusterUpdateArgs, Command, InstanceCommand,
    ServerCommand, TaskCommand, TaskDefCommand, TaskLaunchArgs, TaskListArgs, TaskLogsArgs,
    TaskRunArgs, TaskStartArgs, TokenCommand, TokenFormatArg,
};
use errors::{InvalidFile, LaunchFailed};
use output::{render, Format, View};

fn main() -> ExitCode {
    // Usage errors end here with clap's message and exit code 2.
    let cli = Cli::parse();
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|runtime| runtime.block_on(run(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let mut stderr = io::stderr().lock();
            for line in errors::error_lines(&err) {
                // Nothing sensible is left to do if stderr is gone.
                let _ = writeln!(stderr, "{line}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let format = cli.output;
    colour::set_enabled(
        format.is_table()
            && colour::wanted(
                io::stdout().is_terminal(),
                std::env::var_os("NO_COLOR").as_deref(),
                std::env::var_os("TERM").as_deref(),
            ),
    );
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let loaded = if completion::is_offline(&cli.command) {
        None
    } else {
        config::load(cli.config().as_deref(), home.as_deref())?
    };
    if let Some(loaded) = &loaded {
        warn(&loaded.warnings);
    }
    let settings = config::resolve(
        cli.endpoints(),
        cli.token.clone(),
        cli.ca_cert(),
        loaded.as_ref().map(|l| &l.file),
    );
    // Built on demand, so that problems with a command's own input (a
    // broken task definition file) are reported before connection ones.
    let connect = || -> anyhow::Result<BerthClient> {
        Ok(BerthClient::new(config::client_config(&settings)?)?)
    };
    let text = match cli.command {
        Command::Cluster(command) => cluster(&connect()?, format, command).await?,
        Command::TaskDef(command) => task_definition(connect, format, command).await?,
        Command::Server(command) => server(&connect()?, format, command).await?,
        Command::Auth(AuthCommand::Token(command)) => {
            api_token(&connect()?, format, command).await?
        }
        Command::Auth(AuthCommand::Certificate(command)) => {
            certificate(connect, format, command).await?
        }
        Command::Activation(command) => activation(connect, format, command).await?,
        Command::Instance(command) => instance(connect, format, command).await?,
        Command::Task(command) => task(connect, format, command).await?,
        Command::Service(command) => service::service(connect, format, command).await?,
        Command::Wait(command) => wait::wait(&connect()?, command).await?,
        Command::Completion(args) => completion::completion(&args)?,
        Command::Man(args) => completion::man(&args)?,
        Command::Events(args) => journal::events(&connect()?, format, args).await?,
        Command::Audit(command) => journal::audit(&connect()?, format, command).await?,
        Command::Schedule(command) => schedule::schedule(&connect()?, format, command).await?,
        Command::Secret(command) => secret::secret(&connect()?, format, command).await?,
        Command::Tag(command) => tag::tag(&connect()?, format, command).await?,
    };
    emit(&text)
}

/// What a PROVISIONING or PENDING task waits for; its instance is
/// described for that (a failure to, only loses the detail).
async fn waiting_for(client: &BerthClient, task: &berth_types::Task) -> Option<String> {
    if !matches!(
        task.last_status,
        berth_types::TaskStatus::Provisioning | berth_types::TaskStatus::Pending
    ) {
        return None;
    }
    let instance = match &task.instance_id {
        Some(id) => client.describe_instance(id).await.ok(),
        None => None,
    };
    berth_types::task::waiting_for(task, instance.as_ref(), now_ms())
}

/// Lines for stderr that are not errors: what a created secret is, config
/// warnings.
fn warn(lines: &[String]) {
    let mut stderr = io::stderr().lock();
    for line in lines {
        let _ = writeln!(stderr, "{line}");
    }
}

async fn api_token(
    client: &BerthClient,
    format: Format,
    command: TokenCommand,
) -> anyhow::Result<String> {
    match command {
        TokenCommand::Create {
            role,
            description,
            expires,
            format: TokenFormatArg::Aws,
        } => {
            let (record, access_key_id, secret_access_key) = client
                .create_aws_access_key(role.into(), &description, expires)
                .await?;
            let created = output::CreatedAwsAccessKey {
                api_token: output::ApiToken::new(record, now_ms()),
                aws_access_key_id: access_key_id,
                aws_secret_access_key: secret_access_key,
            };
            if format.is_table() {
                warn(&[output::created_aws_access_key_note(&created)]);
            }
            render(format, &created, output::created_aws_access_key)
        }
        TokenCommand::Create {
            role,
            description,
            expires,
            format: TokenFormatArg::Bearer,
        } => {
            let (record, token) = client
                .create_api_token(role.into(), &description, expires)
                .await?;
            let created = output::CreatedApiToken {
                api_token: output::ApiToken::new(record, now_ms()),
                token,
            };
            if format.is_table() {
                warn(&[output::created_api_token_note(&created)]);
            }
            render(format, &created, output::created_api_token)
        }
        TokenCommand::List => {
            let now = now_ms();
            let tokens: Vec<output::ApiToken> = client
                .list_api_tokens()
                .await?
                .into_iter()
                .map(|t| output::ApiToken::new(t, now))
                .collect();
            render(format, tokens.as_slice(), output::api_tokens_table)
        }
        TokenCommand::Revoke { id } => {
            let id = ids::api_token(client, &id).await?;
            let token = output::ApiToken::new(client.revoke_api_token(&id).await?, now_ms());
            render(format, &token, output::revoked_api_token)
        }
    }
}

async fn certificate(
    connect: impl FnOnce() -> anyhow::Result<BerthClient>,
    format: Format,
    command: CertificateCommand,
) -> anyhow::Result<String> {
    match command {
        CertificateCommand::Revoke {
            fingerprint,
            file,
            description,
        } => {
            let fingerprint = match (fingerprint, file) {
                (Some(fingerprint), _) => fingerprint,
                (None, Some(path)) => {
                    let pem = std::fs::read_to_string(&path)
                        .with_context(|| format!("--file {}", path.display()))?;
                    let der = berth_pki::first_der(&pem).with_context(|| {
                        format!("--file {} holds no PEM certificate", path.display())
                    })?;
                    berth_pki::der_digest(&der)
                }
                (None, None) => bail!("name the certificate with --fingerprint or --file"),
            };
            let revoked = connect()?
                .revoke_certificate(&fingerprint, &description)
                .await?;
            render(format, &revoked, output::revoked_certificate)
        }
        CertificateCommand::List => {
            let list = connect()?.list_revoked_certificates().await?;
            render(format, list.as_slice(), output::revoked_certificates_table)
        }
    }
}

async fn activation(
    connect: impl FnOnce() -> anyhow::Result<BerthClient>,
    format: Format,
    command: ActivationCommand,
) -> anyhow::Result<String> {
    match command {
        ActivationCommand::Create(args) => {
            let ActivationCreateArgs {
                cluster,
                expires,
                max_registrations,
                attributes,
                description,
            } = args;
            // Checked before connecting: it is a mistake in the command.
            let attributes = name_value_map(attributes, "--attribute")?;
            let (record, token) = connect()?
                .create_activation(
                    cluster.as_deref(),
                    Some(expires),
                    Some(max_registrations),
                    &attributes,
                    &description,
                )
                .await?;
            let created = output::CreatedActivation {
                activation: output::Activation::new(record, now_ms()),
                token,
            };
            if format.is_table() {
                warn(&[output::created_activation_note(&created)]);
            }
            render(format, &created, output::created_activation)
        }
        ActivationCommand::List => {
            let now = now_ms();
            let activations: Vec<output::Activation> = connect()?
                .list_activations()
                .await?
                .into_iter()
                .map(|a| output::Activation::new(a, now))
                .collect();
            render(format, activations.as_slice(), output::activations_table)
        }
        ActivationCommand::Describe { id } => {
            let client = connect()?;
            let id = ids::activation(&client, &id).await?;
            let activation =
                output::Activation::new(client.describe_activation(&id).await?, now_ms());
            render(format, &activation, output::activation_detail)
        }
        ActivationCommand::Revoke { id } => {
            let client = connect()?;
            let id = ids::activation(&client, &id).await?;
            let activation =
                output::Activation::new(client.revoke_activation(&id).await?, now_ms());
            render(format, &activation, output::revoked_activation)
        }
    }
}

/// `NAME=VALUE` pairs as a map; giving a name twice is a mistake, not a
/// silent override. `what` names the argument in the message.
fn name_value_map(
    pairs: Vec<(String, String)>,
    what: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for (name, value) in pairs {
        if map.contains_key(&name) {
            bail!("{what} {name} is given more than once");
        }
        map.insert(name, value);
    }
    Ok(map)
}

async fn instance(
    connect: impl FnOnce() -> anyhow::Result<BerthClient>,
    format: Format,
    command: InstanceCommand,
) -> anyhow::Result<String> {
    match command {
        InstanceCommand::List {
            cluster,
            all_clusters,
            watch,
        } => {
            let client = &connect()?;
            let cluster = cluster.as_deref();
            let view = View {
                clusters: all_clusters,
                ..format.view()
            };
            watch::run(watch, format, move || async move {
                let mut instances = client.list_instances(cluster).await?;
                output::oldest_first(&mut instances);
                let now = now_ms();
                render(format, instances.as_slice(), |i| {
                    output::instances_table(i, now, view)
                })
            })
            .await
        }
        InstanceCommand::Describe { id } => {
            let client = connect()?;
            let instance = client
                .describe_instance(&ids::instance(&client, &id).await?)
                .await?;
            let now = now_ms();
            render(format, &instance, |i| output::instance_detail(i, now))
        }
        InstanceCommand::Deregister { id } => {
            let client = connect()?;
            let instance = client
                .deregister_instance(&ids::instance(&client, &id).await?)
                .await?;
            render(format, &instance, output::deregistered_instance)
        }
        InstanceCommand::Drain { id } => {
            let client = connect()?;
            let instance = client
                .drain_instance(&ids::instance(&client, &id).await?)
                .await?;
            render(format, &instance, output::drained_instance)
        }
        InstanceCommand::Activate { id } => {
            let client = connect()?;
            let instance = client
                .activate_instance(&ids::instance(&client, &id).await?)
                .await?;
            render(format, &instance, output::activated_instance)
        }
        InstanceCommand::Attribute(AttributeCommand::Put { id, attributes }) => {
            // Checked before connecting: it is a mistake in the command.
            let attributes = name_value_map(attributes, "attribute")?;
            let client = connect()?;
            let id = ids::instance(&client, &id).await?;
            let instance = client.put_instance_attributes(&id, &attributes).await?;
            render(format, &instance, output::instance_attributes)
        }
        InstanceCommand::Attribute(AttributeCommand::Delete { id, names }) => {
            let client = connect()?;
            let id = ids::instance(&client, &id).await?;
            let instance = client.delete_instance_attributes(&id, &names).await?;
            render(format, &instance, output::instance_attributes)
        }
    }
}

async fn task(
    connect: impl FnOnce() -> anyhow::Result<BerthClient>,
    format: Format,
    command: TaskCommand,
) -> anyhow::Result<String> {
    match command {
        TaskCommand::Run(args) => {
            let input = run_task_input(args);
            let tasks = connect()?
                .run_task(&input)
                .await
                .map_err(|e| LaunchFailed::wrap(e, launch_token(&input.launch)))?;
            launched(format, &task_views(tasks))
        }
        TaskCommand::Start(args) => {
            let mut input = start_task_input(args);
            let client = connect()?;
            for id in &mut input.instance_ids {
                *id = ids::instance(&client, id).await?;
            }
            let tasks = client
                .start_task(&input)
                .await
                .map_err(|e| LaunchFailed::wrap(e, launch_token(&input.launch)))?;
            launched(format, &task_views(tasks))
        }
        TaskCommand::Stop { id, reason } => {
            let client = connect()?;
            let id = ids::task(&client, &id).await?;
            let task = output::Task::from(
                client
                    .stop_task(&id, reason.as_deref().unwrap_or_default())
                    .await?,
            );
            render(format, &task, output::stopping_task)
        }
        TaskCommand::List(args) => {
            let client = &connect()?;
            let view = View {
                clusters: args.all_clusters,
                ..format.view()
            };
            let watch = args.watch;
            let mut filter = task_filter(args);
            if let Some(id) = &filter.instance_id {
                filter.instance_id = Some(ids::instance(client, id).await?);
            }
            let filter = &filter;
            watch::run(watch, format, move || async move {
                let mut tasks = task_views(client.list_tasks(filter).await?);
                output::oldest_first(&mut tasks);
                let now = now_ms();
                render(format, tasks.as_slice(), |t| {
                    output::tasks_table(t, now, view)
                })
            })
            .await
        }
        TaskCommand::Describe { id, watch } => {
            let client = &connect()?;
            let id = &ids::task(client, &id).await?;
            watch::run(watch, format, move || async move {
                let (task, bindings) = client.describe_task_with_bindings(id).await?;
                let waiting_for = waiting_for(client, &task).await;
                let task = output::Task {
                    network_bindings: bindings,
                    waiting_for,
                    ..output::Task::from(task)
                };
                render(format, &task, output::task_detail)
            })
            .await
        }
        TaskCommand::Stats { id } => {
            let client = connect()?;
            let id = ids::task(&client, &id).await?;
            stats::show_task(format, client.task_stats(&id).await?)
        }
        TaskCommand::History { id, follow } => {
            let client = connect()?;
            let id = ids::task(&client, &id).await?;
            journal::history(&client, format, format!("task/{id}"), follow).await
        }
        TaskCommand::Logs(args) => {
            let (id, options) = log_options(args);
            let client = connect()?;
            let id = ids::task(&client, &id).await?;
            let mut stream = client.task_logs(&id, &options).await?;
            let (mut stdout, mut stderr) = (io::stdout(), io::stderr());
            while let Some(chunk) = stream.next().await? {
                if !write_chunk(&chunk, &mut stdout, &mut stderr)? {
                    break;
                }
            }
            // Everything went out as it came; nothing is left to print.
            Ok(String::new())
        }
    }
}

fn task_views(tasks: Vec<Task>) -> Vec<output::Task> {
    tasks.into_iter().map(Into::into).collect()
}

/// What `task run` and `task start` print: the tasks, and on stderr why
/// any of them is not placed yet.
fn launched(format: Format, tasks: &[output::Task]) -> anyhow::Result<String> {
    if format.is_table() {
        warn(&output::unplaced_notes(tasks));
    }
    let now = now_ms();
    render(format, tasks, |t| {
        output::tasks_table(t, now, format.view())
    })
}

/// What `task run` and `task start` share. The client token is the one
/// given, or a fresh one, so that the client may send the request again to
/// another server without ever starting the tasks twice.
fn task_launch(args: TaskLaunchArgs) -> TaskLaunch {
    let TaskLaunchArgs {
        task_definition,
        cluster,
        group,
        started_by,
        overrides,
        client_token,
    } = args;
    TaskLaunch {
        cluster,
        task_definition,
        group,
        started_by,
        overrides,
        client_token: Some(client_token.unwrap_or_else(berth_client::new_client_token)),
    }
}

/// The token a launch was sent with, for retrying it by hand.
fn launch_token(launch: &TaskLaunch) -> &str {
    launch.client_token.as_deref().unwrap_or_default()
}

fn run_task_input(args: TaskRunArgs) -> RunTaskInput {
    let TaskRunArgs {
        launch,
        count,
        placement_strategies,
        placement_constraints,
    } = args;
    RunTaskInput {
        launch: task_launch(launch),
        count,
        placement_strategies,
        placement_constraints,
    }
}

fn start_task_input(args: TaskStartArgs) -> StartTaskInput {
    let TaskStartArgs { launch, instances } = args;
    StartTaskInput {
        launch: task_launch(launch),
        instance_ids: instances,
    }
}

fn task_filter(args: TaskListArgs) -> TaskFilter {
    TaskFilter {
        cluster: args.cluster,
        instance_id: args.instance,
        family: args.family,
        status: args.status.map(Into::into),
    }
}

fn log_options(args: TaskLogsArgs) -> (String, LogOptions) {
    (
        args.id,
        LogOptions {
            container: args.container,
            follow: args.follow,
            tail: args.tail,
        },
    )
}

/// Writes a log chunk as it came, stderr's to `err` and everything else to
/// `out`, flushed so `--follow` shows output at once. `false` when the
/// reader has gone (`berth task logs ID | head`): time to stop quietly.
fn write_chunk(
    chunk: &LogChunk,
    out: &mut impl Write,
    err: &mut impl Write,
) -> anyhow::Result<bool> {
    let (target, name): (&mut dyn Write, &str) = match chunk.stream {
        OutputStream::Stderr => (err, "standard error"),
        OutputStream::Stdout => (out, "standard output"),
    };
    match target.write_all(&chunk.data).and_then(|()| target.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot write to {name}")),
    }
}

async fn cluster(
    client: &BerthClient,
    format: Format,
    command: ClusterCommand,
) -> anyhow::Result<String> {
    match command {
        ClusterCommand::Status => {
            let status = output::ControlPlaneStatus::from(client.status().await?);
            render(format, &status, output::status_table)
        }
        ClusterCommand::Create(ClusterCreateArgs {
            name,
            lost_after,
            task_retention,
            tags,
        }) => {
            let options = ClusterOptions {
                lost_after,
                task_retention,
            };
            let tags = tags.into_iter().collect();
            let cluster = client.create_tagged_cluster(&name, &options, &tags).await?;
            render(format, &cluster, output::cluster_detail)
        }
        ClusterCommand::Update(ClusterUpdateArgs {
            name,
            lost_after,
            task_retention,
        }) => {
            let changes = ClusterOptions {
                lost_after,
                task_retention,
            };
            let cluster = client.update_cluster(&name, &changes).await?;
            render(format, &cluster, output::cluster_detail)
        }
        ClusterCommand::List => {
            let mut clusters = client.list_clusters().await?;
            output::oldest_first(&mut clusters);
            let now = now_ms();
            render(format, clusters.as_slice(), |c| {
                output::clusters_table(c, now)
            })
        }
        ClusterCommand::Describe { name } => {
            let cluster = client.describe_cluster(&name).await?;
            render(format, &cluster, output::cluster_detail)
        }
        ClusterCommand::Delete { name } => {
            let deleted = output::DeletedCluster {
                name: client.delete_cluster(&name).await?,
            };
            render(format, &deleted, output::deleted_cluster)
        }
    }
}

async fn task_definition(
    connect: impl FnOnce() -> anyhow::Result<BerthClient>,
    format: Format,
    command: TaskDefCommand,
) -> anyhow::Result<String> {
    match command {
        TaskDefCommand::Register(args) => {
            // The file is read and validated before the client is even
            // built, so a broken file is reported the same with or without
            // a server around.
            let spec = read_task_definition(&args.file)?;
            let td = connect()?.register_task_definition(spec).await?;
            render(format, &td, output::registered)
        }
        TaskDefCommand::List { family, status } => {
            let tds = connect()?
                .list_task_definitions(family.as_deref(), status.map(Into::into))
                .await?;
            render(format, tds.as_slice(), output::task_definitions_table)
        }
        TaskDefCommand::Families => {
            let families = connect()?.list_task_definition_families().await?;
            render(format, families.as_slice(), output::families_table)
        }
        TaskDefCommand::Describe { task_definition } => {
            let td = connect()?
                .describe_task_definition(&task_definition)
                .await?;
            render(format, &td, output::task_definition_detail)
        }
        TaskDefCommand::Deregister { task_definition } => {
            let td = connect()?
                .deregister_task_definition(&task_definition)
                .await?;
            render(format, &td, output::deregistered)
        }
    }
}

async fn server(
    client: &BerthClient,
    format: Format,
    command: ServerCommand,
) -> anyhow::Result<String> {
    let members = match command {
        ServerCommand::List => client.status().await?.members,
        ServerCommand::Add {
            node_id,
            address,
            learner_only,
        } => client.add_server(node_id, &address, learner_only).await?,
        ServerCommand::Remove { node_id } => client.remove_server(node_id).await?,
        ServerCommand::Backup { out } => return backup::save(client, format, &out).await,
    };
    let members: Vec<output::Member> = members.into_iter().map(Into::into).collect();
    render(format, members.as_slice(), output::members_table)
}

/// Reads and validates a task definition file, warning on stderr about the
/// fields Berth does not use.
fn read_task_definition(path: &Path) -> anyhow::Result<berth_types::TaskDefinitionSpec> {
    let (name, text) = if path.as_os_str() == "-" {
        let mut text = String::new();
        io::stdin()
            .read_to_string(&mut text)
            .context("cannot read standard input")?;
        ("<stdin>".to_string(), text)
    } else {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {name}"))?;
        (name, text)
    };
    let parsed = load_task_definition(&text, file_format(path))
        .map_err(|errors| InvalidFile { file: name, errors })?;
    let mut stderr = io::stderr().lock();
    for field in &parsed.ignored_fields {
        let _ = writeln!(stderr, "{}", ignored_field_warning(field));
    }
    Ok(parsed.spec)
}

fn file_format(path: &Path) -> FileFormat {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("json") => FileFormat::Json,
        Some("yaml" | "yml") => FileFormat::Yaml,
        _ => FileFormat::Auto,
    }
}

fn ignored_field_warning(field: &str) -> String {
    format!("warning: ignored field {field} (not used by Berth)")
}

/// Writes to stdout; a closed pipe (`berth taskdef list | head -1`) is how
/// the reader says it has seen enough, not an error.
fn emit(text: &str) -> anyhow::Result<()> {
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to standard output")
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_format_follows_the_extension() {
        assert_eq!(file_format(Path::new("web.json")), FileFormat::Json);
        assert_eq!(file_format(Path::new("web.JSON")), FileFormat::Json);
        assert_eq!(file_format(Path::new("a/web.yaml")), FileFormat::Yaml);
        assert_eq!(file_format(Path::new("web.yml")), FileFormat::Yaml);
        assert_eq!(file_format(Path::new("web.txt")), FileFormat::Auto);
        assert_eq!(file_format(Path::new("web")), FileFormat::Auto);
        assert_eq!(file_format(Path::new("-")), FileFormat::Auto);
    }

    #[test]
    fn attributes_may_not_repeat_a_name() {
        let map = name_value_map(
            vec![("zone".into(), "a".into()), ("disk".into(), "".into())],
            "--attribute",
        )
        .unwrap();
        assert_eq!(map.len(), 2);
        let err = name_value_map(
            vec![("zone".into(), "a".into()), ("zone".into(), "b".into())],
            "--attribute",
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "--attribute zone is given more than once");
    }

    #[test]
    fn ignored_fields_are_named_in_the_warning() {
        assert_eq!(
            ignored_field_warning("containerDefinitions[0].ulimits"),
            "warning: ignored field containerDefinitions[0].ulimits (not used by Berth)"
        );
    }

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("berth").chain(args.iter().copied())).unwrap()
    }

    fn run_args(args: &[&str]) -> TaskRunArgs {
        match cli(args).command {
            Command::Task(TaskCommand::Run(args)) => args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn run_task_input_carries_every_flag_and_a_fresh_token() {
        let input = run_task_input(run_args(&[
            "task",
            "run",
            "--taskdef",
            "web:3",
            "--count",
            "2",
            "--placement-strategy",
            "binpack:memory",
            "--placement-constraint",
            "distinctInstance",
            "--override",
            "web.env.A=1",
        ]));
        let launch = &input.launch;
        assert_eq!(launch.task_definition, "web:3");
        assert_eq!(input.count, 2);
        assert_eq!(launch.cluster, None, "the server's default cluster");
        assert_eq!(input.placement_strategies, ["binpack:memory"]);
        assert_eq!(input.placement_constraints, ["distinctInstance"]);
        assert_eq!(launch.overrides, ["web.env.A=1"]);
        let token = launch.client_token.clone().unwrap_or_default();
        assert_eq!(token.len(), 32, "{token}");

        // Every invocation gets its own token, unless one is given.
        let again = run_task_input(run_args(&["task", "run", "--taskdef", "web:3"]));
        assert_ne!(again.launch.client_token, launch.client_token);
        let given = run_task_input(run_args(&[
            "task",
            "run",
            "--taskdef",
            "web",
            "--client-token",
            "deploy-42",
        ]));
        assert_eq!(given.launch.client_token.as_deref(), Some("deploy-42"));
    }

    #[test]
    fn start_task_input_names_the_instances() {
        let args = match cli(&[
            "task",
            "start",
            "--taskdef",
            "web",
            "--instance",
            "i-1",
            "--instance",
            "i-2",
            "--cluster",
            "prod",
            "--group",
            "g",
        ])
        .command
        {
            Command::Task(TaskCommand::Start(args)) => args,
            other => panic!("{other:?}"),
        };
        let input = start_task_input(args);
        assert_eq!(input.instance_ids, ["i-1", "i-2"]);
        let launch = &input.launch;
        assert_eq!(
            (launch.cluster.as_deref(), launch.group.as_deref()),
            (Some("prod"), Some("g"))
        );
        assert_eq!(launch.client_token.as_ref().map(String::len), Some(32));
    }

    #[test]
    fn list_and_logs_flags_become_the_filter_and_options() {
        let Command::Task(TaskCommand::List(args)) =
            cli(&["task", "list", "--instance", "i-1", "--status", "stopped"]).command
        else {
            panic!("not task list");
        };
        assert_eq!(
            task_filter(args),
            TaskFilter {
                cluster: None,
                instance_id: Some("i-1".into()),
                family: None,
                status: Some(berth_types::TaskStatus::Stopped),
            }
        );
        let Command::Task(TaskCommand::Logs(args)) =
            cli(&["task", "logs", "t-1", "--follow", "--tail", "5"]).command
        else {
            panic!("not task logs");
        };
        let (id, options) = log_options(args);
        assert_eq!(id, "t-1");
        assert_eq!(
            options,
            LogOptions {
                container: None,
                follow: true,
                tail: Some(5)
            }
        );
    }

    fn chunk(stream: OutputStream, data: &[u8]) -> LogChunk {
        LogChunk {
            stream,
            data: data.to_vec(),
        }
    }

    #[test]
    fn log_chunks_go_to_their_own_stream_unchanged() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        for c in [
            chunk(OutputStream::Stdout, b"one\n"),
            chunk(OutputStream::Stderr, b"warn\xff\n"),
            chunk(OutputStream::Stdout, b"two"),
        ] {
            assert!(write_chunk(&c, &mut out, &mut err).unwrap());
        }
        assert_eq!(out, b"one\ntwo");
        assert_eq!(err, b"warn\xff\n", "bytes pass through as they are");
    }

    /// A reader that went away, or a disk that is full.
    struct Failing(io::ErrorKind);

    impl Write for Failing {
        fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(self.0))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_pipe_ends_the_logs_quietly_but_other_write_errors_fail() {
        let mut err = Vec::new();
        let keep_going = write_chunk(
            &chunk(OutputStream::Stdout, b"x"),
            &mut Failing(io::ErrorKind::BrokenPipe),
            &mut err,
        )
        .unwrap();
        assert!(!keep_going);
        let failure = write_chunk(
            &chunk(OutputStream::Stdout, b"x"),
            &mut Failing(io::ErrorKind::StorageFull),
            &mut err,
        )
        .unwrap_err();
        assert!(
            failure
                .to_string()
                .contains("cannot write to standard output"),
            "{failure}"
        );
    }
}
