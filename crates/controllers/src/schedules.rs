//! Fires scheduled tasks. For each enabled schedule whose next slot has
//! come, one `FireSchedule`: the slot's RunTask (its client token named
//! after the slot), or a skip. The state machine refuses a slot at or
//! before the last one fired, so a slot fires at most once across leader
//! changes; and a controller that finds several slots due (the cluster had
//! no leader for a while) fires once for the newest of them, or skips them
//! all when the schedule does not catch up: never a backlog.

use berth_types::scheduled::{ConcurrencyPolicy, Schedule, ScheduleState};
use berth_types::{Command, FireSchedule, RunTasks, State, StateEvent, TaskStatus};

use crate::{Controller, IdSource, Inputs};

/// A slot found later than this was missed (an outage), not merely due.
pub const MISSED_AFTER_MS: i64 = 60_000;
/// How many due slots are counted before giving up on counting (a cron of
/// every minute after months without a leader).
const MAX_SLOTS_COUNTED: usize = 100_000;

pub struct Schedules;

impl Controller for Schedules {
    fn name(&self) -> &'static str {
        "schedules"
    }

    /// Slots fall on whole minutes (or rate periods): a second's lateness
    /// is the resolution.
    fn interval_ms(&self) -> u64 {
        1_000
    }

    fn wakes_on(&self, _: &StateEvent) -> bool {
        false
    }

    fn reconcile(&self, state: &State, inputs: &Inputs<'_>) -> Vec<Command> {
        let ids = IdSource::new(inputs.seed);
        state
            .schedules()
            .filter(|s| s.state == ScheduleState::Enabled)
            .filter_map(|s| fire(state, s, inputs.now_ms, &ids))
            .map(Command::FireSchedule)
            .collect()
    }
}

/// The newest due slot, how many were due, and whether the first was
/// already late (missed rather than due).
fn due_slots(schedule: &Schedule, now_ms: i64) -> Option<(i64, usize, bool)> {
    let slots = schedule.slots()?;
    let first = slots.next()?;
    if first > now_ms {
        return None;
    }
    let mut newest = first;
    let mut count = 1;
    while count < MAX_SLOTS_COUNTED {
        match slots.after(newest) {
            Some(next) if next <= now_ms => {
                newest = next;
                count += 1;
            }
            _ => break,
        }
    }
    Some((newest, count, now_ms - first > MISSED_AFTER_MS))
}

fn fire(state: &State, schedule: &Schedule, now_ms: i64, ids: &IdSource) -> Option<FireSchedule> {
    let (slot_ms, due, late) = due_slots(schedule, now_ms)?;
    let spec = &schedule.spec;
    let mut fire = FireSchedule {
        cluster: spec.cluster.clone(),
        name: spec.name.clone(),
        slot_ms,
        run: None,
        stop_task_ids: Vec::new(),
        skipped: None,
        at_ms: now_ms,
    };
    if (due > 1 || late) && !spec.catch_up {
        fire.skipped = Some(format!(
            "{due} slot(s) were missed while no leader ran schedules, and catch-up is off"
        ));
        return Some(fire);
    }
    let running: Vec<String> = schedule
        .runs
        .first()
        .map(|run| {
            run.task_ids
                .iter()
                .filter(|id| {
                    state
                        .task(id)
                        .is_some_and(|t| t.last_status != TaskStatus::Stopped)
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    match spec.concurrency {
        ConcurrencyPolicy::Forbid if !running.is_empty() => {
            fire.skipped = Some(format!(
                "the previous run is still running ({} task(s)); concurrency is forbid",
                running.len()
            ));
            return Some(fire);
        }
        ConcurrencyPolicy::Replace => fire.stop_task_ids = running,
        ConcurrencyPolicy::Allow | ConcurrencyPolicy::Forbid => {}
    }
    fire.run = Some(RunTasks {
        cluster: spec.cluster.clone(),
        task_definition: spec.task_definition.clone(),
        task_ids: (0..spec.count).map(|_| ids.task_id()).collect(),
        instance_ids: Vec::new(),
        group: None,
        started_by: spec.started_by(),
        placement_strategies: spec.placement_strategies.clone(),
        placement_constraints: spec.placement_constraints.clone(),
        overrides: spec.overrides.clone(),
        client_token: Some(format!("schedule/{}/{}/{slot_ms}", spec.cluster, spec.name)),
        at_ms: now_ms,
    });
    Some(fire)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{apply, register, spec};
    use crate::NoAgents;
    use berth_types::scheduled::{RunOutcome, ScheduleSpec};
    use berth_types::CommandOutput;

    const MINUTE: i64 = 60_000;
    const T0: i64 = 1_796_428_800_000; // 2026-12-05T00:00:00Z

    fn schedule_spec(expression: &str, concurrency: ConcurrencyPolicy) -> ScheduleSpec {
        ScheduleSpec {
            cluster: "default".into(),
            name: "report".into(),
            expression: expression.into(),
            timezone: String::new(),
            task_definition: "job".into(),
            count: 2,
            overrides: vec![],
            placement_strategies: vec![],
            placement_constraints: vec![],
            concurrency,
            catch_up: true,
        }
    }

    fn state_with(spec: ScheduleSpec) -> State {
        let mut state = State::new();
        register(&mut state, job());
        apply(
            &mut state,
            Command::PutSchedule {
                spec,
                create: true,
                at_ms: T0,
            },
        );
        state
    }

    fn job() -> berth_types::TaskDefinitionSpec {
        spec("job", 64, false)
    }

    /// Runs the controller at `now` and applies what it proposes; the
    /// fired slots, in order.
    fn tick(state: &mut State, now: i64) -> Vec<i64> {
        let commands = Schedules.reconcile(state, &Inputs::new(now, now as u64, &NoAgents));
        let mut slots = Vec::new();
        for command in commands {
            if let Command::FireSchedule(f) = &command {
                slots.push(f.slot_ms);
            }
            apply(state, command);
        }
        slots
    }

    fn runs(state: &State) -> Vec<(i64, RunOutcome, usize)> {
        let mut runs: Vec<_> = state
            .schedule("default", "report")
            .unwrap()
            .runs
            .iter()
            .map(|r| (r.slot_ms, r.outcome, r.task_ids.len()))
            .collect();
        runs.reverse();
        runs
    }

    #[test]
    fn each_slot_fires_once_when_it_comes() {
        let mut state = state_with(schedule_spec("rate(5 minutes)", ConcurrencyPolicy::Allow));
        assert!(tick(&mut state, T0 + 4 * MINUTE).is_empty(), "not yet due");
        assert_eq!(tick(&mut state, T0 + 5 * MINUTE + 900), [T0 + 5 * MINUTE]);
        // The next pass a second later finds nothing new.
        assert!(tick(&mut state, T0 + 5 * MINUTE + 1_900).is_empty());
        assert_eq!(tick(&mut state, T0 + 10 * MINUTE), [T0 + 10 * MINUTE]);
        assert_eq!(
            runs(&state),
            [
                (T0 + 5 * MINUTE, RunOutcome::Started, 2),
                (T0 + 10 * MINUTE, RunOutcome::Started, 2)
            ]
        );
        let task = state.tasks().next().unwrap();
        assert_eq!(task.started_by, "schedule/report");
    }

    #[test]
    fn a_second_leader_proposing_the_same_slot_is_refused() {
        let mut state = state_with(schedule_spec("rate(5 minutes)", ConcurrencyPolicy::Allow));
        let now = T0 + 5 * MINUTE;
        // Two leaders (say, across a failover) decide from the same state.
        let first = Schedules.reconcile(&state, &Inputs::new(now, 1, &NoAgents));
        let second = Schedules.reconcile(&state, &Inputs::new(now, 2, &NoAgents));
        apply(&mut state, first.into_iter().next().unwrap());
        let repeat = state.apply(second.into_iter().next().unwrap());
        assert!(repeat.is_err(), "{repeat:?}");
        assert_eq!(state.tasks().count(), 2, "the slot's tasks started once");
    }

    #[test]
    fn after_an_outage_one_catch_up_run_or_none() {
        let mut state = state_with(schedule_spec("rate(5 minutes)", ConcurrencyPolicy::Allow));
        // An hour without a leader: twelve slots due; one run, for the newest.
        assert_eq!(tick(&mut state, T0 + 62 * MINUTE), [T0 + 60 * MINUTE]);
        assert_eq!(runs(&state), [(T0 + 60 * MINUTE, RunOutcome::Started, 2)]);
        // Without catch-up the missed slots are skipped, with a reason.
        let mut spec = schedule_spec("rate(5 minutes)", ConcurrencyPolicy::Allow);
        spec.catch_up = false;
        let mut state = state_with(spec);
        assert_eq!(tick(&mut state, T0 + 62 * MINUTE), [T0 + 60 * MINUTE]);
        let run = &state.schedule("default", "report").unwrap().runs[0];
        assert_eq!(run.outcome, RunOutcome::Skipped);
        assert!(
            run.reason.contains("12 slot(s) were missed"),
            "{}",
            run.reason
        );
        // And the next slot on time runs normally.
        assert_eq!(tick(&mut state, T0 + 65 * MINUTE), [T0 + 65 * MINUTE]);
        assert_eq!(state.tasks().count(), 2);
    }

    #[test]
    fn concurrency_forbid_skips_and_replace_stops_the_previous_run() {
        let mut state = state_with(schedule_spec("rate(5 minutes)", ConcurrencyPolicy::Forbid));
        tick(&mut state, T0 + 5 * MINUTE);
        tick(&mut state, T0 + 10 * MINUTE);
        let outcomes: Vec<RunOutcome> = runs(&state).into_iter().map(|r| r.1).collect();
        assert_eq!(outcomes, [RunOutcome::Started, RunOutcome::Skipped]);

        let mut state = state_with(schedule_spec("rate(5 minutes)", ConcurrencyPolicy::Replace));
        tick(&mut state, T0 + 5 * MINUTE);
        let first: Vec<String> = state.schedule("default", "report").unwrap().runs[0]
            .task_ids
            .clone();
        tick(&mut state, T0 + 10 * MINUTE);
        let run = &state.schedule("default", "report").unwrap().runs[0];
        assert_eq!(run.stopped_task_ids, first);
        for id in &first {
            assert_eq!(
                state.task(id).unwrap().desired_status,
                berth_types::DesiredStatus::Stopped
            );
        }
        assert_eq!(run.outcome, RunOutcome::Started);
    }

    #[test]
    fn a_run_that_cannot_start_is_recorded_and_the_slot_spent() {
        let mut spec = schedule_spec("rate(5 minutes)", ConcurrencyPolicy::Allow);
        spec.task_definition = "missing".into();
        let mut state = state_with(spec);
        assert_eq!(tick(&mut state, T0 + 5 * MINUTE), [T0 + 5 * MINUTE]);
        let run = &state.schedule("default", "report").unwrap().runs[0];
        assert_eq!(run.outcome, RunOutcome::FailedToStart);
        assert!(run.reason.contains("missing"), "{}", run.reason);
        assert!(tick(&mut state, T0 + 6 * MINUTE).is_empty());
    }

    #[test]
    fn paused_schedules_do_not_fire_and_resume_without_a_backlog() {
        let mut state = state_with(schedule_spec("rate(5 minutes)", ConcurrencyPolicy::Allow));
        let pause = |paused, at_ms| Command::SetSchedulePaused {
            cluster: "default".into(),
            name: "report".into(),
            paused,
            at_ms,
        };
        apply(&mut state, pause(true, T0 + MINUTE));
        assert!(tick(&mut state, T0 + 30 * MINUTE).is_empty());
        let out = apply(&mut state, pause(false, T0 + 31 * MINUTE));
        assert!(matches!(out, CommandOutput::Schedule(_)));
        // Counted from the resume: nothing at 31, the first at 36.
        assert!(tick(&mut state, T0 + 31 * MINUTE + 500).is_empty());
        assert_eq!(tick(&mut state, T0 + 36 * MINUTE), [T0 + 36 * MINUTE]);
    }
}
