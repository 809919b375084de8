//! `berth secret`: sealed values that task definitions reference by name
//! (`secrets[].valueFrom`, `repositoryCredentials.credentialsParameter`).

use std::path::PathBuf;

use anyhow::Context;
use berth_client::time::now_ms;
use berth_client::BerthClient;
use berth_proto::pb;
use berth_types::time::rfc3339;
use clap::{ArgGroup, Args, Subcommand};
use serde::Serialize;

use crate::output::{age, render, Format, Table};

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Create a secret; its value is sealed with the cluster data key
    /// before it is stored.
    Create(SecretValueArgs),
    /// Replace a secret's value (tasks started from now get the new one).
    Update(SecretValueArgs),
    /// List secrets (names and versions, never values).
    List,
    /// Show a secret's metadata; with --reveal (admin token only) print
    /// its value and nothing else.
    Describe {
        name: String,
        #[arg(long)]
        reveal: bool,
    },
    /// Delete a secret (running tasks keep the value they started with;
    /// new tasks referencing it fail to start).
    Delete { name: String },
    /// Re-seal secrets with the primary data key (key rotation; admin).
    ///
    /// The answering server re-seals every secret, and every AWS access
    /// key's secret (`auth token create --format aws`), not sealed with its
    /// primary data key, keeping versions; a secret updated meanwhile is
    /// skipped (AWS keys are counted with the secrets and named
    /// token/ID). Run it after `berthd pki data-key promote` reached every
    /// server, and before `berthd pki data-key retire`; repeat until it
    /// re-seals nothing (docs/operations.md, "The data key").
    Rekey,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("value").args(["from_file", "from_literal"]).required(true)))]
pub struct SecretValueArgs {
    pub name: String,
    /// Read the value from a file, byte for byte ("-": standard input).
    #[arg(long, value_name = "FILE")]
    pub from_file: Option<PathBuf>,
    /// The value itself (note: it lands in your shell history; prefer
    /// --from-file).
    #[arg(long, value_name = "VALUE")]
    pub from_literal: Option<String>,
    #[arg(long)]
    pub description: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretView {
    pub name: String,
    pub description: String,
    pub version: u64,
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip)]
    updated_ms: i64,
}

impl From<pb::SecretMetadata> for SecretView {
    fn from(m: pb::SecretMetadata) -> Self {
        SecretView {
            name: m.name,
            description: m.description,
            version: m.version,
            created_at: rfc3339(m.created_at_ms),
            updated_at: rfc3339(m.updated_at_ms),
            updated_ms: m.updated_at_ms,
        }
    }
}

fn value_of(args: &SecretValueArgs) -> anyhow::Result<Vec<u8>> {
    match (&args.from_file, &args.from_literal) {
        (Some(path), _) if path.as_os_str() == "-" => {
            let mut value = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut value)
                .context("cannot read the value from standard input")?;
            Ok(value)
        }
        (Some(path), _) => {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
        }
        (None, Some(value)) => Ok(value.clone().into_bytes()),
        (None, None) => anyhow::bail!("give --from-file FILE or --from-literal VALUE"),
    }
}

fn detail(s: &SecretView) -> String {
    format!(
        "Name:        {}\nDescription: {}\nVersion:     {}\nCreated:     {}\nUpdated:     {} ({} ago)\n",
        s.name,
        if s.description.is_empty() { "-" } else { &s.description },
        s.version,
        s.created_at,
        s.updated_at,
        age(s.updated_ms, now_ms()),
    )
}

pub async fn secret(
    client: &BerthClient,
    format: Format,
    command: SecretCommand,
) -> anyhow::Result<String> {
    let one = |m: pb::SecretMetadata| render(format, &SecretView::from(m), detail);
    match command {
        SecretCommand::Create(args) | SecretCommand::Update(args) if args.name.is_empty() => {
            anyhow::bail!("a secret needs a name")
        }
        SecretCommand::Create(args) => {
            let value = value_of(&args)?;
            one(client
                .create_secret(pb::SecretRequest {
                    name: args.name,
                    value,
                    set_description: args.description.is_some(),
                    description: args.description.unwrap_or_default(),
                })
                .await?)
        }
        SecretCommand::Update(args) => {
            let value = value_of(&args)?;
            one(client
                .update_secret(pb::SecretRequest {
                    name: args.name,
                    value,
                    set_description: args.description.is_some(),
                    description: args.description.unwrap_or_default(),
                })
                .await?)
        }
        SecretCommand::List => {
            let list: Vec<SecretView> = client
                .list_secrets()
                .await?
                .into_iter()
                .map(SecretView::from)
                .collect();
            render(format, &list, |list| {
                let mut table = Table::new(["NAME", "VERSION", "UPDATED", "DESCRIPTION"]);
                for s in list {
                    table.row([
                        s.name.clone(),
                        s.version.to_string(),
                        s.updated_at.clone(),
                        s.description.clone(),
                    ]);
                }
                table.render()
            })
        }
        SecretCommand::Describe {
            name,
            reveal: false,
        } => one(client.describe_secret(&name).await?),
        SecretCommand::Describe { name, reveal: true } => {
            let revealed = client.reveal_secret(&name).await?;
            // The value exactly as stored, so `> file` gives it back.
            let value = String::from_utf8(revealed.value).map_err(|_| {
                anyhow::anyhow!("secret {name:?} is not UTF-8 text and cannot be printed")
            })?;
            match format {
                Format::Table | Format::Wide => Ok(value),
                _ => {
                    #[derive(Serialize)]
                    struct Revealed {
                        name: String,
                        value: String,
                    }
                    render(format, &Revealed { name, value }, |r| r.value.clone())
                }
            }
        }
        SecretCommand::Delete { name } => one(client.delete_secret(&name).await?),
        SecretCommand::Rekey => rekey(client, format).await,
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct RekeyView {
    primary_key_id: String,
    resealed: u32,
    current: u32,
    skipped: Vec<String>,
    unreadable: Vec<String>,
}

async fn rekey(client: &BerthClient, format: Format) -> anyhow::Result<String> {
    let reply = client.rekey_secrets().await?;
    let view = RekeyView {
        primary_key_id: reply.primary_key_id,
        resealed: reply.resealed,
        current: reply.current,
        skipped: reply.skipped,
        unreadable: reply.unreadable,
    };
    let text = render(format, &view, |v| {
        let mut text = format!(
            "re-sealed {} secret(s) under data key {}; {} already current\n",
            v.resealed, v.primary_key_id, v.current
        );
        if !v.skipped.is_empty() {
            text += &format!(
                "skipped (updated while this ran; run `berth secret rekey` again): {}\n",
                v.skipped.join(", ")
            );
        }
        if v.unreadable.is_empty() && v.skipped.is_empty() && v.resealed == 0 {
            text += "every secret is sealed with the primary key: the other keys can be retired (`berthd pki data-key retire`)\n";
        }
        text
    })?;
    if !view.unreadable.is_empty() {
        // The counts first, then the failure: nothing may be retired now.
        print!("{text}");
        anyhow::bail!(
            "{} secret(s) open with no key of the answering server's data.key: {} (do not retire any key; see docs/operations.md)",
            view.unreadable.len(),
            view.unreadable.join(", ")
        );
    }
    Ok(text)
}
