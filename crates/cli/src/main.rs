//! `berth`: the command-line interface to a Berth control plane.

mod args;
mod config;
mod errors;
mod output;

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use berth_client::time::now_ms;
use berth_client::BerthClient;
use berth_types::taskdef_file::{load_task_definition, FileFormat};
use clap::Parser;

use args::{
    ActivationCommand, ActivationCreateArgs, AuthCommand, Cli, ClusterCommand, Command,
    InstanceCommand, ServerCommand, TaskDefCommand, TokenCommand,
};
use errors::InvalidFile;
use output::{render, Format};

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
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let loaded = config::load(cli.config().as_deref(), home.as_deref())?;
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
        Command::Activation(command) => activation(connect, format, command).await?,
        Command::Instance(command) => instance(&connect()?, format, command).await?,
    };
    emit(&text)
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
        } => {
            let (record, token) = client
                .create_api_token(role.into(), &description, expires)
                .await?;
            let created = output::CreatedApiToken {
                api_token: output::ApiToken::new(record, now_ms()),
                token,
            };
            if format == Format::Table {
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
            let token = output::ApiToken::new(client.revoke_api_token(&id).await?, now_ms());
            render(format, &token, output::revoked_api_token)
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
            let attributes = attribute_map(attributes)?;
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
            if format == Format::Table {
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
            let activation =
                output::Activation::new(connect()?.describe_activation(&id).await?, now_ms());
            render(format, &activation, output::activation_detail)
        }
        ActivationCommand::Revoke { id } => {
            let activation =
                output::Activation::new(connect()?.revoke_activation(&id).await?, now_ms());
            render(format, &activation, output::revoked_activation)
        }
    }
}

/// `--attribute` pairs as a map; giving a name twice is a mistake, not a
/// silent override.
fn attribute_map(pairs: Vec<(String, String)>) -> anyhow::Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for (name, value) in pairs {
        if map.contains_key(&name) {
            bail!("--attribute {name} is given more than once");
        }
        map.insert(name, value);
    }
    Ok(map)
}

async fn instance(
    client: &BerthClient,
    format: Format,
    command: InstanceCommand,
) -> anyhow::Result<String> {
    match command {
        InstanceCommand::List { cluster } => {
            let instances: Vec<output::Instance> = client
                .list_instances(cluster.as_deref())
                .await?
                .into_iter()
                .map(Into::into)
                .collect();
            render(format, instances.as_slice(), output::instances_table)
        }
        InstanceCommand::Describe { id } => {
            let instance = output::Instance::from(client.describe_instance(&id).await?);
            render(format, &instance, output::instance_detail)
        }
        InstanceCommand::Deregister { id } => {
            let instance = output::Instance::from(client.deregister_instance(&id).await?);
            render(format, &instance, output::deregistered_instance)
        }
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
        ClusterCommand::Create { name } => {
            let cluster = client.create_cluster(&name).await?;
            render(format, &cluster, output::cluster_detail)
        }
        ClusterCommand::List => {
            let clusters = client.list_clusters().await?;
            render(format, clusters.as_slice(), output::clusters_table)
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
                .list_task_definitions(family.as_deref(), status.map(|s| s.as_str()))
                .await?;
            render(format, tds.as_slice(), output::task_definitions_table)
        }
        TaskDefCommand::Families => {
            let families: Vec<output::Family> = connect()?
                .list_task_definition_families()
                .await?
                .into_iter()
                .map(Into::into)
                .collect();
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
        let map = attribute_map(vec![
            ("zone".into(), "a".into()),
            ("disk".into(), "".into()),
        ])
        .unwrap();
        assert_eq!(map.len(), 2);
        let err = attribute_map(vec![
            ("zone".into(), "a".into()),
            ("zone".into(), "b".into()),
        ])
        .unwrap_err();
        assert_eq!(err.to_string(), "--attribute zone is given more than once");
    }

    #[test]
    fn ignored_fields_are_named_in_the_warning() {
        assert_eq!(
            ignored_field_warning("containerDefinitions[0].logConfiguration"),
            "warning: ignored field containerDefinitions[0].logConfiguration (not used by Berth)"
        );
    }
}
