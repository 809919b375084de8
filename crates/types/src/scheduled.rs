//! Scheduled tasks: RunTask on a `cron(...)` or `rate(...)` schedule, as
//! EventBridge Scheduler gives ECS users. The records and their rules; the
//! leader's `Schedules` controller decides when a slot is due, and the state
//! machine fires each slot at most once (`Schedule::last_slot_ms`), whichever
//! leader proposes it.

use serde::{Deserialize, Serialize};

use crate::error::{FieldError, ValidationErrors};
use crate::schedule::ScheduleExpression;

/// Runs kept per schedule, newest first.
pub const MAX_RUNS_KEPT: usize = 20;
/// `startedBy` of a scheduled run's tasks: `schedule/NAME`.
pub const STARTED_BY_PREFIX: &str = "schedule/";
pub const MAX_SCHEDULE_NAME_LEN: usize = 64;

/// What to do when a slot comes while the previous run still runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConcurrencyPolicy {
    /// Start the new run anyway.
    #[default]
    Allow,
    /// Skip the slot.
    Forbid,
    /// Stop the previous run's tasks, then start the new run.
    Replace,
}

impl ConcurrencyPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ConcurrencyPolicy::Allow => "allow",
            ConcurrencyPolicy::Forbid => "forbid",
            ConcurrencyPolicy::Replace => "replace",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Allow, Self::Forbid, Self::Replace]
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(text.trim()))
    }
}

/// What the operator asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleSpec {
    pub cluster: String,
    pub name: String,
    /// `cron(...)` or `rate(...)`, as given.
    pub expression: String,
    /// An IANA time zone (`Europe/Seoul`) the cron fields are read in;
    /// empty: UTC. Rates ignore it.
    pub timezone: String,
    /// `FAMILY` (its latest ACTIVE revision when the slot fires) or
    /// `FAMILY:REVISION`.
    pub task_definition: String,
    pub count: u32,
    /// `CONTAINER.env.KEY=VALUE` overrides, as RunTask takes them.
    pub overrides: Vec<(String, String, String)>,
    pub placement_strategies: Vec<String>,
    pub placement_constraints: Vec<String>,
    pub concurrency: ConcurrencyPolicy,
    /// After slots were missed (no leader, paused servers): run once for
    /// them (true) or skip them (false). Never more than once.
    pub catch_up: bool,
}

impl ScheduleSpec {
    /// Every problem at once, each naming its field.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = Vec::new();
        let name_ok = !self.name.is_empty()
            && self.name.len() <= MAX_SCHEDULE_NAME_LEN
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            errors.push(FieldError::new(
                "name",
                format!(
                    "{:?}: use 1-{MAX_SCHEDULE_NAME_LEN} letters, digits, - or _",
                    self.name
                ),
            ));
        }
        if let Err(e) = ScheduleExpression::parse(&self.expression) {
            errors.push(e);
        }
        if let Err(e) = parse_timezone(&self.timezone) {
            errors.push(e);
        }
        if self.task_definition.trim().is_empty() {
            errors.push(FieldError::new(
                "taskDefinition",
                "required: FAMILY or FAMILY:REVISION",
            ));
        }
        let max = crate::state::MAX_TASKS_PER_RUN;
        if self.count == 0 || self.count as usize > max {
            errors.push(FieldError::new(
                "count",
                format!(
                    "{} is out of range; run 1 to {max} tasks per slot",
                    self.count
                ),
            ));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(errors))
        }
    }

    pub fn started_by(&self) -> String {
        format!("{STARTED_BY_PREFIX}{}", self.name)
    }
}

/// The time zone a schedule's cron is read in; empty is UTC.
pub fn parse_timezone(name: &str) -> Result<jiff::tz::TimeZone, FieldError> {
    if name.is_empty() {
        return Ok(jiff::tz::TimeZone::UTC);
    }
    jiff::tz::TimeZone::get(name).map_err(|_| {
        FieldError::new(
            "timezone",
            format!("{name:?} is not a time zone; use an IANA name such as Europe/Seoul or America/New_York (empty: UTC)"),
        )
    })
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ScheduleState {
    #[default]
    Enabled,
    Paused,
}

impl ScheduleState {
    pub fn as_str(self) -> &'static str {
        match self {
            ScheduleState::Enabled => "ENABLED",
            ScheduleState::Paused => "PAUSED",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunOutcome {
    Started,
    /// Concurrency `forbid`, or missed slots without catch-up.
    Skipped,
    /// RunTask was refused (no such task definition, a bad placement).
    FailedToStart,
}

impl RunOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Started => "STARTED",
            RunOutcome::Skipped => "SKIPPED",
            RunOutcome::FailedToStart => "FAILED_TO_START",
        }
    }
}

/// One slot that fired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleRun {
    /// The slot's time (the schedule's, not when the leader got to it).
    pub slot_ms: i64,
    pub fired_at_ms: i64,
    pub outcome: RunOutcome,
    /// Why it was skipped or failed; empty when started.
    pub reason: String,
    pub task_ids: Vec<String>,
    /// Concurrency `replace`: the previous run's tasks it stopped.
    pub stopped_task_ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Schedule {
    pub spec: ScheduleSpec,
    pub state: ScheduleState,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// Slots are counted from here: creation, a change of expression or
    /// time zone, or a resume (so a resumed schedule does not fire what it
    /// missed while paused).
    pub anchor_ms: i64,
    /// The newest slot fired (or skipped); no slot at or before it fires.
    pub last_slot_ms: Option<i64>,
    /// Newest first, at most `MAX_RUNS_KEPT`.
    pub runs: Vec<ScheduleRun>,
}

impl Schedule {
    /// The schedule's slots, with its expression and time zone parsed once
    /// (a controller counting missed slots asks for many). `None` for a
    /// spec that no longer parses, which validation prevents.
    pub fn slots(&self) -> Option<Slots> {
        Some(Slots {
            expression: ScheduleExpression::parse(&self.spec.expression).ok()?,
            tz: parse_timezone(&self.spec.timezone).ok()?,
            anchor_ms: self.anchor_ms,
            from_ms: self
                .last_slot_ms
                .map_or(self.anchor_ms, |last| last.max(self.anchor_ms)),
        })
    }

    /// The next slot to fire: the first after the last one fired, and
    /// after the anchor.
    pub fn next_slot(&self) -> Option<i64> {
        self.slots()?.next()
    }
}

/// A schedule's slots from its next one on.
pub struct Slots {
    expression: ScheduleExpression,
    tz: jiff::tz::TimeZone,
    anchor_ms: i64,
    from_ms: i64,
}

impl Slots {
    /// The first slot strictly after `after_ms`; `None` for a cron whose
    /// years are over.
    pub fn after(&self, after_ms: i64) -> Option<i64> {
        self.expression
            .next_after_in(&self.tz, after_ms, self.anchor_ms)
    }

    /// The next slot to fire.
    pub fn next(&self) -> Option<i64> {
        self.after(self.from_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(expression: &str, timezone: &str) -> ScheduleSpec {
        ScheduleSpec {
            cluster: "default".into(),
            name: "nightly".into(),
            expression: expression.into(),
            timezone: timezone.into(),
            task_definition: "report".into(),
            count: 1,
            overrides: vec![],
            placement_strategies: vec![],
            placement_constraints: vec![],
            concurrency: ConcurrencyPolicy::Allow,
            catch_up: true,
        }
    }

    fn schedule(spec: ScheduleSpec, anchor_ms: i64) -> Schedule {
        Schedule {
            spec,
            state: ScheduleState::Enabled,
            created_at_ms: anchor_ms,
            updated_at_ms: anchor_ms,
            anchor_ms,
            last_slot_ms: None,
            runs: vec![],
        }
    }

    const HOUR: i64 = 3_600_000;
    // 2026-12-05T00:00:00Z
    const DAY0: i64 = 1_796_428_800_000;

    #[test]
    fn a_cron_is_read_in_its_time_zone() {
        // 03:00 in Seoul (UTC+9, no DST) is 18:00 UTC the day before.
        let s = schedule(spec("cron(0 3 * * ? *)", "Asia/Seoul"), DAY0);
        assert_eq!(s.next_slot(), Some(DAY0 + 18 * HOUR));
        let utc = schedule(spec("cron(0 3 * * ? *)", ""), DAY0);
        assert_eq!(utc.next_slot(), Some(DAY0 + 3 * HOUR));
    }

    #[test]
    fn a_cron_in_a_daylight_saving_gap_runs_once_after_it() {
        // 2027-03-14 02:30 does not exist in New York (clocks jump from
        // 02:00 EST to 03:00 EDT); it runs at 03:30 EDT = 07:30 UTC.
        let march_14 = 1_804_982_400_000; // 2027-03-14T00:00:00Z
        let s = schedule(spec("cron(30 2 14 3 ? 2027)", "America/New_York"), march_14);
        assert_eq!(s.next_slot(), Some(march_14 + 7 * HOUR + 30 * 60_000));
    }

    #[test]
    fn a_rate_counts_from_its_anchor_and_the_last_slot() {
        let mut s = schedule(spec("rate(5 minutes)", "Asia/Seoul"), DAY0);
        assert_eq!(s.next_slot(), Some(DAY0 + 300_000));
        s.last_slot_ms = Some(DAY0 + 300_000);
        assert_eq!(s.next_slot(), Some(DAY0 + 600_000));
    }

    #[test]
    fn bad_specs_name_every_field() {
        let mut bad = spec("cron(0 3 * *)", "Mars/Olympus");
        bad.name = "no spaces".into();
        bad.count = 0;
        bad.task_definition = " ".into();
        let fields: Vec<String> = bad
            .validate()
            .unwrap_err()
            .fields()
            .map(str::to_string)
            .collect();
        assert_eq!(
            fields,
            [
                "name",
                "scheduleExpression",
                "timezone",
                "taskDefinition",
                "count"
            ]
        );
        assert!(spec("rate(1 minute)", "Asia/Seoul").validate().is_ok());
        assert_eq!(
            ConcurrencyPolicy::parse("Replace"),
            Some(ConcurrencyPolicy::Replace)
        );
    }
}
