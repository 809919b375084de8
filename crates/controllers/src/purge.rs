//! Drops STOPPED tasks older than their cluster's retention, and old RunTask
//! client tokens.

use berth_types::{Command, State, StateEvent};

use crate::{Controller, Inputs};

pub struct Purge;

impl Controller for Purge {
    fn name(&self) -> &'static str {
        "purge"
    }

    fn interval_ms(&self) -> u64 {
        30_000
    }

    fn wakes_on(&self, _: &StateEvent) -> bool {
        false
    }

    fn reconcile(&self, state: &State, inputs: &Inputs<'_>) -> Vec<Command> {
        let now_ms = inputs.now_ms;
        if state.tasks().any(|t| state.purge_due(t, now_ms)) {
            vec![Command::PurgeStoppedTasks { now_ms }]
        } else {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{apply, register, run_tasks, spec};
    use crate::NoAgents;

    #[test]
    fn purges_only_once_a_stopped_task_is_past_retention() {
        let mut state = State::new();
        register(&mut state, spec("web", 128, false));
        run_tasks(&mut state, "web", &["t1"]);
        let at = |now| Inputs::new(now, 1, &NoAgents);
        assert!(
            Purge.reconcile(&state, &at(10_000_000)).is_empty(),
            "nothing stopped"
        );
        apply(
            &mut state,
            Command::StopTask {
                task_id: "t1".into(),
                reason: String::new(),
                at_ms: 100,
            },
        );
        // The default retention is an hour.
        assert!(Purge.reconcile(&state, &at(100 + 3_599_999)).is_empty());
        let commands = Purge.reconcile(&state, &at(100 + 3_600_000));
        assert_eq!(commands.len(), 1);
        apply(&mut state, commands.into_iter().next().unwrap());
        assert!(state.task("t1").is_none());
    }
}
