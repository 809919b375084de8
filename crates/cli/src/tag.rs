//! `berth tag`: tags on clusters, task definitions, tasks, services and
//! instances, named as `cluster/NAME`, `taskdef/FAMILY:REVISION`, `task/ID`,
//! `service/CLUSTER/NAME` or `instance/ID`.

use std::collections::BTreeMap;

use berth_client::BerthClient;
use clap::Subcommand;

use crate::args::attribute_arg;
use crate::output::{render, Format, Table};

#[derive(Debug, Subcommand)]
pub enum TagCommand {
    /// Show a resource's tags.
    List {
        /// cluster/NAME, taskdef/FAMILY:REVISION, task/ID,
        /// service/CLUSTER/NAME or instance/ID.
        resource: String,
    },
    /// Add tags to a resource; a key it has takes the new value. A
    /// resource holds at most 50 tags; keys starting with aws: are
    /// reserved.
    Set {
        /// cluster/NAME, taskdef/FAMILY:REVISION, task/ID,
        /// service/CLUSTER/NAME or instance/ID.
        resource: String,
        #[arg(value_name = "KEY=VALUE", required = true, value_parser = attribute_arg)]
        tags: Vec<(String, String)>,
    },
    /// Remove tags from a resource by key (keys it lacks are ignored).
    Remove {
        /// cluster/NAME, taskdef/FAMILY:REVISION, task/ID,
        /// service/CLUSTER/NAME or instance/ID.
        resource: String,
        #[arg(value_name = "KEY", required = true)]
        keys: Vec<String>,
    },
}

/// Every command answers with the resource's tags as they are afterwards.
pub async fn tag(
    client: &BerthClient,
    format: Format,
    command: TagCommand,
) -> anyhow::Result<String> {
    let tags = match command {
        TagCommand::List { resource } => client.list_tags(&resource).await?,
        TagCommand::Set { resource, tags } => {
            client.tag_resource(&resource, distinct_keys(tags)?).await?
        }
        TagCommand::Remove { resource, keys } => client.untag_resource(&resource, keys).await?,
    };
    render(format, &tags, tags_table)
}

/// KEY=VALUE arguments as a map; a key given twice is a mistake (which
/// value was meant?), as the API's TagResource says too.
fn distinct_keys(tags: Vec<(String, String)>) -> anyhow::Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for (key, value) in tags {
        if map.insert(key.clone(), value).is_some() {
            anyhow::bail!("tag {key:?} is given twice; give each key once");
        }
    }
    Ok(map)
}

pub fn tags_table(tags: &BTreeMap<String, String>) -> String {
    let mut table = Table::new(["KEY", "VALUE"]);
    for (key, value) in tags {
        table.row([key.clone(), value.clone()]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: TagCommand,
    }

    #[test]
    fn set_takes_pairs_and_remove_takes_keys() {
        let cli =
            Cli::try_parse_from(["tag", "set", "cluster/prod", "env=prod", "note=a=b"]).unwrap();
        match cli.command {
            TagCommand::Set { resource, tags } => {
                assert_eq!(resource, "cluster/prod");
                assert_eq!(
                    tags,
                    [
                        ("env".to_string(), "prod".to_string()),
                        ("note".to_string(), "a=b".to_string())
                    ]
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(Cli::try_parse_from(["tag", "set", "cluster/prod"]).is_err());
        assert!(Cli::try_parse_from(["tag", "set", "cluster/prod", "novalue"]).is_err());
        assert!(Cli::try_parse_from(["tag", "remove", "task/t-1"]).is_err());
    }

    #[test]
    fn the_table_lists_keys_in_order() {
        let tags = BTreeMap::from([
            ("team".to_string(), "core".to_string()),
            ("env".to_string(), "prod".to_string()),
        ]);
        let text = tags_table(&tags);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("KEY"), "{text}");
        assert!(
            lines[1].starts_with("env") && lines[2].starts_with("team"),
            "{text}"
        );
    }
}
