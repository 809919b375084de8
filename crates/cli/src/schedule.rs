//! `berth schedule`: scheduled tasks.

use berth_client::time::now_ms;
use berth_client::BerthClient;
use berth_proto::pb;
use berth_types::time::rfc3339;
use serde::Serialize;

use crate::args::{ScheduleCommand, ScheduleSettings};
use crate::output::{age, render, Format, Table};

/// `--cron "0 3 * * ? *"` is `cron(0 3 * * ? *)`; an expression already
/// written whole is taken as it is.
fn expression(settings: &ScheduleSettings) -> Option<String> {
    let wrap = |kind: &str, text: &str| {
        let text = text.trim();
        if text.starts_with(&format!("{kind}(")) {
            text.to_string()
        } else {
            format!("{kind}({text})")
        }
    };
    match (&settings.cron, &settings.rate) {
        (Some(cron), _) => Some(wrap("cron", cron)),
        (None, Some(rate)) => Some(wrap("rate", rate)),
        (None, None) => None,
    }
}

/// The settings given laid over `base` (empty for create).
fn apply_settings(base: &mut pb::ScheduleSpec, settings: ScheduleSettings) -> anyhow::Result<()> {
    if let Some(expression) = expression(&settings) {
        base.expression = expression;
    }
    if let Some(td) = settings.task_definition {
        base.task_definition = td;
    }
    if let Some(count) = settings.count {
        base.count = count;
    }
    if let Some(cluster) = settings.cluster {
        base.cluster = cluster;
    }
    if let Some(tz) = settings.timezone {
        base.timezone = tz;
    }
    if !settings.overrides.is_empty() {
        base.overrides = settings
            .overrides
            .iter()
            .map(|o| {
                let (container, key, value) = berth_types::task::parse_override(o)?;
                Ok(pb::KeyValuePair {
                    name: berth_types::task::override_target(&container, &key),
                    value,
                })
            })
            .collect::<Result<_, berth_types::FieldError>>()?;
    }
    if !settings.placement_strategies.is_empty() {
        base.placement_strategies = settings.placement_strategies;
    }
    if !settings.placement_constraints.is_empty() {
        base.placement_constraints = settings.placement_constraints;
    }
    if let Some(policy) = settings.concurrency {
        base.concurrency = policy;
    }
    if let Some(skip) = settings.skip_missed {
        base.skip_missed = skip;
    }
    Ok(())
}

/// A schedule as `-o json|yaml` prints it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleView {
    pub cluster: String,
    pub name: String,
    pub state: String,
    pub expression: String,
    pub timezone: String,
    pub task_definition: String,
    pub count: u32,
    pub concurrency: String,
    pub catch_up: bool,
    pub created_at: String,
    #[serde(skip)]
    created_ms: i64,
    pub next_run: Option<String>,
    pub last_slot: Option<String>,
    /// Newest first.
    pub runs: Vec<RunView>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunView {
    pub slot: String,
    pub fired_at: String,
    pub outcome: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    pub task_ids: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stopped_task_ids: Vec<String>,
}

impl From<pb::Schedule> for ScheduleView {
    fn from(s: pb::Schedule) -> Self {
        let spec = s.spec.unwrap_or_default();
        ScheduleView {
            cluster: spec.cluster,
            name: spec.name,
            state: s.state,
            expression: spec.expression,
            timezone: if spec.timezone.is_empty() {
                "UTC".into()
            } else {
                spec.timezone
            },
            task_definition: spec.task_definition,
            count: spec.count,
            concurrency: spec.concurrency,
            catch_up: !spec.skip_missed,
            created_at: rfc3339(s.created_at_ms),
            created_ms: s.created_at_ms,
            next_run: s.next_slot_ms.map(rfc3339),
            last_slot: s.last_slot_ms.map(rfc3339),
            runs: s
                .runs
                .into_iter()
                .map(|r| RunView {
                    slot: rfc3339(r.slot_ms),
                    fired_at: rfc3339(r.fired_at_ms),
                    outcome: r.outcome,
                    reason: r.reason,
                    task_ids: r.task_ids,
                    stopped_task_ids: r.stopped_task_ids,
                })
                .collect(),
        }
    }
}

fn or_dash(value: Option<&String>) -> String {
    value.cloned().unwrap_or_else(|| "-".into())
}

fn schedules_table(list: &[ScheduleView]) -> String {
    let mut table = Table::new([
        "CLUSTER", "NAME", "STATE", "SCHEDULE", "TIMEZONE", "TASK DEF", "NEXT RUN", "LAST RUN",
    ]);
    for s in list {
        let last = s
            .runs
            .first()
            .map(|r| format!("{} {}", r.slot, r.outcome))
            .unwrap_or_else(|| "-".into());
        table.row([
            s.cluster.clone(),
            s.name.clone(),
            s.state.clone(),
            s.expression.clone(),
            s.timezone.clone(),
            s.task_definition.clone(),
            or_dash(s.next_run.as_ref()),
            last,
        ]);
    }
    table.render()
}

fn schedule_detail(s: &ScheduleView) -> String {
    let mut out = format!(
        "Name:         {}/{}\nState:        {}\nSchedule:     {} ({})\nTask def:     {} x{}\nConcurrency:  {}\nMissed slots: {}\nCreated:      {} ({} ago)\nNext run:     {}\n",
        s.cluster,
        s.name,
        s.state,
        s.expression,
        s.timezone,
        s.task_definition,
        s.count,
        s.concurrency,
        if s.catch_up { "run once for them" } else { "skipped" },
        s.created_at,
        age(s.created_ms, now_ms()),
        or_dash(s.next_run.as_ref()),
    );
    if s.runs.is_empty() {
        out.push_str("Runs:         none yet\n");
        return out;
    }
    out.push_str("Runs (newest first):\n");
    let mut table = Table::new(["SLOT", "OUTCOME", "TASKS", "REASON"]);
    for r in &s.runs {
        table.row([
            r.slot.clone(),
            r.outcome.clone(),
            if r.task_ids.is_empty() {
                "-".into()
            } else {
                r.task_ids.join(" ")
            },
            if r.reason.is_empty() {
                "-".into()
            } else {
                r.reason.clone()
            },
        ]);
    }
    out.push_str(&table.render());
    out
}

pub async fn schedule(
    client: &BerthClient,
    format: Format,
    command: ScheduleCommand,
) -> anyhow::Result<String> {
    let one = |s: pb::Schedule| -> anyhow::Result<String> {
        let view = ScheduleView::from(s);
        render(format, &view, schedule_detail)
    };
    match command {
        ScheduleCommand::Create(args) => {
            let mut spec = pb::ScheduleSpec {
                name: args.name,
                ..Default::default()
            };
            if args.settings.task_definition.is_none() {
                anyhow::bail!("--taskdef is required: the task definition each run starts (FAMILY or FAMILY:REVISION)");
            }
            apply_settings(&mut spec, args.settings)?;
            one(client.create_schedule(spec).await?)
        }
        ScheduleCommand::Update(args) => {
            let cluster = args.settings.cluster.clone().unwrap_or_default();
            let current = client.describe_schedule(&cluster, &args.name).await?;
            let mut spec = current.spec.unwrap_or_default();
            apply_settings(&mut spec, args.settings)?;
            one(client.update_schedule(spec).await?)
        }
        ScheduleCommand::List { cluster } => {
            let list: Vec<ScheduleView> = client
                .list_schedules(cluster.as_deref().unwrap_or_default())
                .await?
                .into_iter()
                .map(Into::into)
                .collect();
            render(format, list.as_slice(), schedules_table)
        }
        ScheduleCommand::Describe { name, cluster } => one(client
            .describe_schedule(cluster.as_deref().unwrap_or_default(), &name)
            .await?),
        ScheduleCommand::Pause { name, cluster } => one(client
            .set_schedule_paused(cluster.as_deref().unwrap_or_default(), &name, true)
            .await?),
        ScheduleCommand::Resume { name, cluster } => one(client
            .set_schedule_paused(cluster.as_deref().unwrap_or_default(), &name, false)
            .await?),
        ScheduleCommand::Delete { name, cluster } => {
            let deleted = client
                .delete_schedule(cluster.as_deref().unwrap_or_default(), &name)
                .await?;
            let view = ScheduleView::from(deleted);
            render(format, &view, |s| {
                format!("deleted schedule {}/{}\n", s.cluster, s.name)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_and_rate_flags_become_expressions() {
        let with = |cron: Option<&str>, rate: Option<&str>| {
            expression(&ScheduleSettings {
                cron: cron.map(str::to_string),
                rate: rate.map(str::to_string),
                ..Default::default()
            })
        };
        assert_eq!(
            with(Some("0 3 * * ? *"), None).unwrap(),
            "cron(0 3 * * ? *)"
        );
        assert_eq!(with(None, Some(" 5 minutes")).unwrap(), "rate(5 minutes)");
        assert_eq!(with(None, Some("rate(1 hour)")).unwrap(), "rate(1 hour)");
        assert_eq!(with(None, None), None);
    }

    #[test]
    fn an_update_changes_only_what_was_given() {
        let mut spec = pb::ScheduleSpec {
            name: "nightly".into(),
            expression: "cron(0 3 * * ? *)".into(),
            task_definition: "report:2".into(),
            count: 3,
            concurrency: "forbid".into(),
            ..Default::default()
        };
        apply_settings(
            &mut spec,
            ScheduleSettings {
                timezone: Some("Asia/Seoul".into()),
                overrides: vec!["app.env.MODE=full".into()],
                skip_missed: Some(true),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(spec.expression, "cron(0 3 * * ? *)");
        assert_eq!((spec.task_definition.as_str(), spec.count), ("report:2", 3));
        assert_eq!(spec.timezone, "Asia/Seoul");
        assert_eq!(spec.overrides[0].name, "app.env.MODE");
        assert!(spec.skip_missed);
        assert_eq!(spec.concurrency, "forbid");
    }
}
