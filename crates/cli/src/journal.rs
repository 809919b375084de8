//! `berth events`, `berth audit`, and the history of one task or service.

use std::io::Write;
use std::time::Duration;

use anyhow::bail;
use berth_client::time::now_ms;
use berth_client::BerthClient;
use berth_proto::pb;
use berth_types::journal::EventType;
use berth_types::time::rfc3339;
use serde::Serialize;

use crate::args::{AuditCommand, EventQuery, EventsArgs, EventsCommand};
use crate::output::{render, Format, Table};

/// An event as `-o json|yaml` prints it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    pub cursor: String,
    pub time: String,
    pub at_ms: i64,
    #[serde(rename = "type")]
    pub kind: String,
    pub cluster: String,
    pub resource: String,
    pub actor: ActorView,
    pub summary: String,
    /// The typed event: one key naming its kind, holding its fields.
    pub detail: serde_json::Value,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActorView {
    pub principal: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub role: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub operation: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub peer: String,
}

impl From<Option<pb::Actor>> for ActorView {
    fn from(actor: Option<pb::Actor>) -> Self {
        let actor = actor.unwrap_or_default();
        ActorView {
            principal: actor.principal,
            role: actor.role,
            operation: actor.operation,
            peer: actor.peer,
        }
    }
}

impl ActorView {
    /// `token:ID (admin) via RunTask`.
    fn cell(&self) -> String {
        let mut text = self.principal.clone();
        if !self.role.is_empty() {
            text.push_str(&format!(" ({})", self.role));
        }
        if !self.operation.is_empty() {
            text.push_str(&format!(" via {}", self.operation));
        }
        text
    }
}

/// The time of a record; `-` when unknown (the cluster's first membership,
/// journaled before any entry carried a clock).
fn time_of(at_ms: i64) -> String {
    if at_ms == 0 {
        "-".to_string()
    } else {
        rfc3339(at_ms)
    }
}

impl From<pb::JournalEvent> for EventView {
    fn from(e: pb::JournalEvent) -> Self {
        EventView {
            time: time_of(e.at_ms),
            at_ms: e.at_ms,
            detail: serde_json::from_str(&e.detail_json).unwrap_or(serde_json::Value::Null),
            cursor: e.cursor,
            kind: e.r#type,
            cluster: e.cluster,
            resource: e.resource,
            actor: e.actor.into(),
            summary: e.summary,
        }
    }
}

/// An audit record as `-o json|yaml` prints it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditView {
    /// Empty for a record kept by one server alone (see `serverId`).
    pub cursor: String,
    pub time: String,
    pub at_ms: i64,
    pub actor: ActorView,
    /// What an unidentified caller claimed to be (never a secret).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub claimed: String,
    pub command: String,
    pub resource: String,
    /// applied, failed, refused or accepted.
    pub outcome: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub code: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// The server that recorded a local record; 0 for replicated ones.
    pub server_id: u64,
}

impl From<pb::AuditRecord> for AuditView {
    fn from(r: pb::AuditRecord) -> Self {
        AuditView {
            time: rfc3339(r.at_ms),
            at_ms: r.at_ms,
            cursor: r.cursor,
            actor: r.actor.into(),
            claimed: r.claimed,
            command: r.command,
            resource: r.resource,
            outcome: r.outcome,
            code: r.code,
            error: r.error,
            server_id: r.server_id,
        }
    }
}

fn event_row(e: &EventView) -> [String; 6] {
    [
        e.cursor.clone(),
        e.time.clone(),
        e.kind.clone(),
        e.resource.clone(),
        e.actor.cell(),
        e.summary.clone(),
    ]
}

const EVENT_HEADERS: [&str; 6] = ["CURSOR", "TIME", "TYPE", "RESOURCE", "ACTOR", "SUMMARY"];

fn events_table(events: &[EventView]) -> String {
    let mut table = Table::new(EVENT_HEADERS);
    for e in events {
        table.row(event_row(e));
    }
    table.render()
}

fn audit_table(records: &[AuditView]) -> String {
    let mut table = Table::new(["TIME", "ACTOR", "OPERATION", "RESOURCE", "OUTCOME", "WHERE"]);
    for r in records {
        let mut actor = r.actor.principal.clone();
        if !r.actor.role.is_empty() {
            actor.push_str(&format!(" ({})", r.actor.role));
        }
        if !r.claimed.is_empty() {
            actor.push_str(&format!(" claiming {}", r.claimed));
        }
        let outcome = match (r.code.as_str(), r.error.as_str()) {
            (_, "") => r.outcome.clone(),
            ("", error) => format!("{}: {error}", r.outcome),
            (code, error) => format!("{} {code}: {error}", r.outcome),
        };
        let place = if r.server_id == 0 {
            format!("log {}", r.cursor)
        } else {
            format!("server {}", r.server_id)
        };
        table.row([
            r.time.clone(),
            actor,
            r.actor.operation.clone(),
            r.resource.clone(),
            outcome,
            format!("{place} from {}", or_dash(&r.actor.peer)),
        ]);
    }
    table.render()
}

/// `7d`, `12h`, `90m`, `45s`: the largest unit that divides it.
fn human_secs(secs: u64) -> String {
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if secs >= size && secs.is_multiple_of(size) {
            return format!("{}{unit}", secs / size);
        }
    }
    format!("{secs}s")
}

fn or_dash(text: &str) -> &str {
    if text.is_empty() {
        "-"
    } else {
        text
    }
}

fn since_ms(since: Option<Duration>) -> i64 {
    since.map_or(0, |d| {
        now_ms().saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    })
}

fn watch_request(query: &EventQuery) -> anyhow::Result<pb::WatchEventsRequest> {
    for t in &query.types {
        if let Err(e) = EventType::parse(t) {
            bail!("--type: {e}");
        }
    }
    if let Some(from) = &query.from {
        if let Err(e) = from.parse::<berth_types::journal::Cursor>() {
            bail!("--from: {e}");
        }
    }
    Ok(pb::WatchEventsRequest {
        from: query.from.clone().unwrap_or_default(),
        since_ms: since_ms(query.since),
        types: query.types.clone(),
        cluster: query.cluster.clone().unwrap_or_default(),
        resource: query.resource.clone().unwrap_or_default(),
        actor: query.actor.clone().unwrap_or_default(),
        follow: query.follow,
    })
}

/// Prints the events `query` selects: all at once, or as they come with
/// `--follow` (table lines, or one JSON object per line).
pub async fn show_events(
    client: &BerthClient,
    format: Format,
    query: &EventQuery,
) -> anyhow::Result<String> {
    let request = watch_request(query)?;
    let mut watch = client.watch_events(request);
    if !query.follow {
        let mut all: Vec<EventView> = Vec::new();
        while let Some(page) = watch.next().await? {
            all.extend(page.into_iter().map(EventView::from));
        }
        return render(format, all.as_slice(), events_table);
    }
    let mut first = true;
    while let Some(page) = watch.next().await? {
        let mut out = std::io::stdout().lock();
        for event in page.into_iter().map(EventView::from) {
            match format {
                Format::Json => writeln!(out, "{}", serde_json::to_string(&event)?)?,
                Format::Yaml => write!(out, "---\n{}", serde_yaml::to_string(&event)?)?,
                Format::Table | Format::Wide => {
                    if first {
                        writeln!(out, "{}", EVENT_HEADERS.join("  "))?;
                        first = false;
                    }
                    writeln!(out, "{}", event_row(&event).join("  "))?;
                }
            }
        }
        out.flush()?;
    }
    Ok(String::new())
}

pub async fn events(
    client: &BerthClient,
    format: Format,
    args: EventsArgs,
) -> anyhow::Result<String> {
    match args.command {
        None => show_events(client, format, &args.query).await,
        Some(EventsCommand::Retention {
            max_records,
            max_age,
        }) => {
            let retention = if max_records.is_none() && max_age.is_none() {
                client.journal_retention().await?
            } else {
                let now = client.journal_retention().await?;
                client
                    .set_journal_retention(
                        max_records.unwrap_or(now.max_records),
                        max_age.map_or(now.max_age_secs, |d| d.as_secs()),
                    )
                    .await?
            };
            let view = RetentionView {
                max_records: retention.max_records,
                max_age_secs: retention.max_age_secs,
                events: retention.events,
                audit_records: retention.audit_records,
                pruned_through: retention.pruned_through,
            };
            render(format, &view, |r| {
                format!(
                    "Keeps:          at most {} events and {} audit records, none older than {}\nKept now:       {} events, {} audit records\nDropped up to:  {}\n",
                    r.max_records,
                    r.max_records,
                    human_secs(r.max_age_secs),
                    r.events,
                    r.audit_records,
                    or_dash(&r.pruned_through)
                )
            })
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct RetentionView {
    max_records: u32,
    max_age_secs: u64,
    events: u32,
    audit_records: u32,
    pruned_through: String,
}

/// `task history` and `service history`: the events of one resource.
pub async fn history(
    client: &BerthClient,
    format: Format,
    resource: String,
    follow: bool,
) -> anyhow::Result<String> {
    let query = EventQuery {
        resource: Some(resource),
        follow,
        ..Default::default()
    };
    show_events(client, format, &query).await
}

pub async fn audit(
    client: &BerthClient,
    format: Format,
    command: AuditCommand,
) -> anyhow::Result<String> {
    match command {
        AuditCommand::List {
            since,
            actor,
            resource,
            limit,
        } => {
            let reply = client
                .list_audit_records(&pb::ListAuditRecordsRequest {
                    since_ms: since_ms(since),
                    actor: actor.unwrap_or_default(),
                    resource: resource.unwrap_or_default(),
                    local_only: false,
                    limit: limit.unwrap_or(0),
                })
                .await?;
            for server in &reply.unreachable {
                eprintln!(
                    "warning: the local audit records of {server} are missing from this list"
                );
            }
            let records: Vec<AuditView> = reply.records.into_iter().map(Into::into).collect();
            render(format, records.as_slice(), audit_table)
        }
    }
}
