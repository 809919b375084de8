//! The command line, as clap parses it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::output::Format;

pub const DEFAULT_ENDPOINT: &str = "127.0.0.1:7400";

/// Manage a Berth control plane: clusters, task definitions and the servers
/// themselves.
#[derive(Debug, Parser)]
#[command(name = "berth", version, propagate_version = true)]
pub struct Cli {
    /// Control-plane servers to talk to, comma-separated (HOST:PORT); the
    /// next is tried when one cannot be reached.
    #[arg(
        long,
        global = true,
        env = "BERTH_ENDPOINT",
        value_name = "HOST:PORT[,HOST:PORT...]",
        value_delimiter = ',',
        default_value = DEFAULT_ENDPOINT
    )]
    pub endpoint: Vec<String>,

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
        self.endpoint
            .iter()
            .map(|e| e.trim())
            .filter(|e| !e.is_empty())
            .map(str::to_string)
            .collect()
    }
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
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Show the control plane: leader, term and every server's state.
    Status,
    /// Create a cluster.
    Create { name: String },
    /// List clusters.
    List,
    /// Show one cluster.
    Describe { name: String },
    /// Delete a cluster.
    Delete { name: String },
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

impl StatusFilter {
    pub fn as_str(self) -> &'static str {
        match self {
            StatusFilter::Active => "ACTIVE",
            StatusFilter::Inactive => "INACTIVE",
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

    #[test]
    fn endpoint_defaults_and_env_are_declared() {
        let command = Cli::command();
        let endpoint = command
            .get_arguments()
            .find(|a| a.get_id() == "endpoint")
            .unwrap();
        assert_eq!(
            endpoint.get_env().and_then(|e| e.to_str()),
            Some("BERTH_ENDPOINT")
        );
        let defaults: Vec<_> = endpoint.get_default_values().iter().collect();
        assert_eq!(defaults, [DEFAULT_ENDPOINT]);
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
}
