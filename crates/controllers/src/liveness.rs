//! Instance liveness from agent heartbeats, which only the leader's memory
//! holds: an instance whose agent stopped heartbeating, or whose session
//! ended and was not reopened within [`RECONNECT_GRACE_MS`], is marked
//! DISCONNECTED (its tasks are kept: a network blip must not double-run
//! them), and one that stays away past its cluster's `lost_after` is LOST
//! (its tasks are stopped, and services replace them). After a leader change
//! nothing is marked for a grace period while agents find the new leader.
//!
//! Every duration is this leader's own observation: the silence before LOST
//! counts from the last heartbeat this leader heard, or from its election if
//! it heard none (as Nomad resets heartbeat timers on a leader change). The
//! replicated last-seen time is for people: it was written on whichever
//! server led then, and a clock skewed against that one's would declare
//! instances lost early.

use berth_types::{Command, InstanceStatus, State, StateEvent};

use crate::{Controller, Inputs};

/// How long an agent whose session ended may take to open another before
/// it is DISCONNECTED without waiting for three silent heartbeat periods.
/// An agent reconnects at once after a redirect, within 0.5 s when the
/// server ended its session, and after a failed attempt it waits 0.125 to
/// 0.25 s, doubling with each failure; one that needs longer than this is
/// not connected. So a killed agent (its kernel closes the stream) is
/// marked within seconds at any heartbeat period. `lost_after` still counts
/// from the last heartbeat.
pub const RECONNECT_GRACE_MS: i64 = 2_000;

pub struct Liveness {
    /// No heartbeat for this long -> DISCONNECTED (about three periods).
    pub disconnect_after_ms: i64,
    /// Nothing is marked for this long after this server became leader.
    pub grace_ms: i64,
}

impl Controller for Liveness {
    fn name(&self) -> &'static str {
        "liveness"
    }

    /// A fifteenth of the silence that disconnects, within 0.25-1 s: an
    /// instance is marked at most that late, and the check (one lookup per
    /// instance) stays cheap on a leader with 10,000 agents (5 s heartbeats:
    /// once a second).
    fn interval_ms(&self) -> u64 {
        u64::try_from(self.disconnect_after_ms / 15)
            .unwrap_or(0)
            .clamp(250, 1000)
    }

    fn wakes_on(&self, _: &StateEvent) -> bool {
        false
    }

    fn reconcile(&self, state: &State, inputs: &Inputs<'_>) -> Vec<Command> {
        let now = inputs.now_ms;
        if now.saturating_sub(inputs.leader_since_ms) < self.grace_ms {
            return Vec::new();
        }
        let agents = inputs.agents;
        let mut commands = Vec::new();
        for instance in state.instances() {
            if instance.status != InstanceStatus::Active {
                continue;
            }
            let last_heartbeat = agents.last_heartbeat_ms(&instance.id);
            let session_gone = agents
                .session_ended_ms(&instance.id)
                .is_some_and(|ended| now.saturating_sub(ended) >= RECONNECT_GRACE_MS);
            let alive = !session_gone
                && last_heartbeat
                    .is_some_and(|at| now.saturating_sub(at) < self.disconnect_after_ms);
            if instance.agent_connected {
                if !alive {
                    // Last seen at its last heartbeat (when this leader
                    // heard one), so `lost_after` counts from then, not
                    // from when the silence was noticed.
                    commands.push(Command::InstanceDisconnected {
                        instance_id: instance.id.clone(),
                        at_ms: last_heartbeat.unwrap_or(now).min(now),
                    });
                }
                continue;
            }
            // A new session writes its own InstanceConnected from its hello;
            // only an old one that outlived the DISCONNECTED mark needs this
            // (a partition shorter than TCP noticed, heartbeats flow again).
            let survived = agents
                .session_started_ms(&instance.id)
                .is_some_and(|at| now.saturating_sub(at) > self.disconnect_after_ms);
            if alive && survived {
                commands.push(Command::InstanceConnected {
                    instance_id: instance.id.clone(),
                    agent_version: instance.agent_version.clone(),
                    resources: instance.capacity.registered(),
                    // What the agent last reported stands: the session
                    // that reported it is the one still running.
                    attributes: instance.agent_attributes.clone(),
                    host_ports: instance.capacity.host_ports().to_vec(),
                    at_ms: now,
                });
            }
            // An agent that is talking to us is never lost.
            if alive || !state.has_active_tasks(&instance.id) {
                continue;
            }
            let silent_since = last_heartbeat
                .unwrap_or(i64::MIN)
                .max(inputs.leader_since_ms);
            if now.saturating_sub(silent_since) >= state.lost_after_ms(&instance.cluster) {
                commands.push(Command::InstanceLost {
                    instance_id: instance.id.clone(),
                    at_ms: now,
                });
            }
        }
        commands
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{add_instance, apply, register, run_tasks, spec, Heartbeats};
    use berth_types::TaskPlacement;

    const NOW: i64 = 1_000_000;

    fn controller() -> Liveness {
        Liveness {
            disconnect_after_ms: 15_000,
            grace_ms: 20_000,
        }
    }

    /// One instance `i-1` with a running task, optionally already marked
    /// DISCONNECTED at `disconnected_at`; the cluster's lost_after is 60 s.
    fn state(disconnected_at: Option<i64>) -> State {
        let mut state = State::new();
        apply(
            &mut state,
            Command::UpdateClusterSettings {
                name: "default".into(),
                lost_after_secs: Some(60),
                task_retention_secs: None,
            },
        );
        register(&mut state, spec("web", 128, false));
        add_instance(&mut state, "i-1", 1024, &[]);
        run_tasks(&mut state, "web", &["t1"]);
        apply(
            &mut state,
            Command::PlaceTasks {
                placements: vec![TaskPlacement {
                    task_id: "t1".into(),
                    instance_id: "i-1".into(),
                }],
                unplaced: vec![],
                at_ms: 4,
            },
        );
        if let Some(at_ms) = disconnected_at {
            apply(
                &mut state,
                Command::InstanceDisconnected {
                    instance_id: "i-1".into(),
                    at_ms,
                },
            );
        }
        state
    }

    /// (what, marked disconnected at, heartbeat age, session age, leader
    /// for, expected command kinds)
    type Scenario = (
        &'static str,
        Option<i64>,
        Option<i64>,
        i64,
        i64,
        &'static [&'static str],
    );

    #[test]
    fn liveness_scenarios() {
        let table: &[Scenario] = &[
            (
                "heartbeating: nothing",
                None,
                Some(1_000),
                60_000,
                60_000,
                &[],
            ),
            (
                "silent 16 s: DISCONNECTED",
                None,
                Some(16_000),
                60_000,
                60_000,
                &["instance_disconnected"],
            ),
            (
                "no session at all: DISCONNECTED",
                None,
                None,
                0,
                60_000,
                &["instance_disconnected"],
            ),
            (
                "silent, but leader for 10 s only: grace",
                None,
                Some(16_000),
                60_000,
                10_000,
                &[],
            ),
            (
                "silent exactly disconnect_after: DISCONNECTED",
                None,
                Some(15_000),
                60_000,
                60_000,
                &["instance_disconnected"],
            ),
            (
                "leader for exactly the grace period: marks again",
                None,
                Some(16_000),
                60_000,
                20_000,
                &["instance_disconnected"],
            ),
            (
                "silent 30 s: not lost yet",
                Some(NOW - 30_000),
                Some(30_000),
                60_000,
                120_000,
                &[],
            ),
            (
                "silent 61 s: LOST",
                Some(NOW - 61_000),
                Some(61_000),
                90_000,
                120_000,
                &["instance_lost"],
            ),
            (
                "marked long ago on another leader's clock, unheard for the 30 s this one leads: not lost yet",
                Some(NOW - 600_000),
                None,
                0,
                30_000,
                &[],
            ),
            (
                "unheard for the 61 s this leader leads: LOST",
                Some(NOW - 30_000),
                None,
                0,
                61_000,
                &["instance_lost"],
            ),
            (
                "heard 50 s ago, elected 40 s ago: silent since the later of the two",
                Some(NOW - 35_000),
                Some(50_000),
                90_000,
                40_000,
                &[],
            ),
            (
                "a session that outlived its mark heartbeats again: connected",
                Some(NOW - 30_000),
                Some(500),
                40_000,
                120_000,
                &["instance_connected"],
            ),
            (
                "a session exactly disconnect_after old says hello itself",
                Some(NOW - 30_000),
                Some(500),
                15_000,
                120_000,
                &[],
            ),
            (
                "a brand-new session says hello itself",
                Some(NOW - 30_000),
                Some(500),
                1_000,
                120_000,
                &[],
            ),
            (
                "heartbeating, though marked long ago: never lost",
                Some(NOW - 600_000),
                Some(500),
                1_000,
                120_000,
                &[],
            ),
        ];
        for (what, disconnected_at, heartbeat_age, session_age, leader_for, expected) in table {
            let state = state(*disconnected_at);
            let mut beats = Heartbeats::default();
            if let Some(age) = heartbeat_age {
                beats.0.insert("i-1".into(), (NOW - age, NOW - session_age));
            }
            let mut inputs = Inputs::new(NOW, 1, &beats);
            inputs.leader_since_ms = NOW - leader_for;
            let kinds: Vec<&str> = controller()
                .reconcile(&state, &inputs)
                .iter()
                .map(Command::kind)
                .collect();
            assert_eq!(kinds, *expected, "{what}");
        }
    }

    #[test]
    fn the_check_runs_often_enough_to_mark_within_a_fifteenth_of_the_window() {
        let every = |disconnect_after_ms| {
            Liveness {
                disconnect_after_ms,
                grace_ms: 0,
            }
            .interval_ms()
        };
        // Default 5 s heartbeats: 15 s of silence, checked every second.
        assert_eq!(every(15_000), 1000);
        assert_eq!(every(6_000), 400);
        // Never busier than four times a second, never slower than once.
        assert_eq!(every(3_000), 250);
        assert_eq!(every(600_000), 1000);
    }

    #[test]
    fn lost_after_counts_from_the_last_heartbeat() {
        let state = state(None);
        let mut beats = Heartbeats::default();
        beats.0.insert("i-1".into(), (NOW - 16_000, NOW - 60_000));
        let mut inputs = Inputs::new(NOW, 1, &beats);
        inputs.leader_since_ms = 0;
        let commands = controller().reconcile(&state, &inputs);
        assert_eq!(
            commands,
            [Command::InstanceDisconnected {
                instance_id: "i-1".into(),
                at_ms: NOW - 16_000
            }]
        );
        // Unheard by this leader: last seen now.
        let none = Heartbeats::default();
        let mut inputs = Inputs::new(NOW, 1, &none);
        inputs.leader_since_ms = 0;
        let commands = controller().reconcile(&state, &inputs);
        assert!(matches!(
            commands[..],
            [Command::InstanceDisconnected { at_ms: NOW, .. }]
        ));
    }

    #[test]
    fn liveness_runs_on_its_own_clock_and_no_state_event_wakes_it() {
        let c = controller();
        assert_eq!(c.name(), "liveness");
        assert_eq!(c.interval_ms(), 1000);
        assert!(!c.repeat_while_progressing());
        let events = [
            StateEvent::Task {
                task_id: "t1".into(),
                instance_id: Some("i-1".into()),
            },
            StateEvent::Instance {
                instance_id: "i-1".into(),
            },
            StateEvent::Service {
                cluster: "default".into(),
                name: "web".into(),
            },
        ];
        for e in &events {
            assert!(!c.wakes_on(e), "{e:?}");
        }
    }

    #[test]
    fn an_instance_without_tasks_is_never_declared_lost() {
        let mut state = state(Some(NOW - 600_000));
        apply(
            &mut state,
            Command::StopTask {
                task_id: "t1".into(),
                reason: String::new(),
                at_ms: 5,
            },
        );
        apply(
            &mut state,
            Command::InstanceLost {
                instance_id: "i-1".into(),
                at_ms: 6,
            },
        );
        let beats = Heartbeats::default();
        let mut inputs = Inputs::new(NOW, 1, &beats);
        inputs.leader_since_ms = 0;
        assert!(controller().reconcile(&state, &inputs).is_empty());
    }

    /// Three heartbeat periods are 15 s here; an agent whose stream closed
    /// and did not come back is marked after the reconnect grace instead,
    /// and lost `lost_after` after its last heartbeat, long before 15 s.
    #[test]
    fn a_session_that_ended_and_stayed_away_is_marked_without_waiting_for_silence() {
        let reconcile = |state: &State, heartbeat_age: i64, ended_age: Option<i64>| {
            let mut beats = Heartbeats::default();
            beats
                .0
                .insert("i-1".into(), (NOW - heartbeat_age, NOW - 60_000));
            if let Some(age) = ended_age {
                beats.1.insert("i-1".into(), NOW - age);
            }
            let mut inputs = Inputs::new(NOW, 1, &beats);
            inputs.leader_since_ms = 0;
            controller().reconcile(state, &inputs)
        };
        let connected = state(None);
        assert_eq!(
            reconcile(&connected, 1_000, Some(RECONNECT_GRACE_MS)),
            [Command::InstanceDisconnected {
                instance_id: "i-1".into(),
                at_ms: NOW - 1_000
            }],
            "ended the grace ago: DISCONNECTED, last seen at its last heartbeat"
        );
        assert!(
            reconcile(&connected, 1_000, Some(RECONNECT_GRACE_MS - 1)).is_empty(),
            "still within the grace: the agent may be reconnecting"
        );
        assert!(
            reconcile(&connected, 1_000, None).is_empty(),
            "a session still open and heartbeating"
        );

        let mut marked = state(Some(NOW - 4_000));
        apply(
            &mut marked,
            Command::UpdateClusterSettings {
                name: "default".into(),
                lost_after_secs: Some(5),
                task_retention_secs: None,
            },
        );
        assert_eq!(
            reconcile(&marked, 6_000, Some(4_000))
                .iter()
                .map(Command::kind)
                .collect::<Vec<_>>(),
            ["instance_lost"],
            "heard 6 s ago, lost_after 5 s, its session gone: LOST"
        );
        assert!(
            reconcile(&marked, 4_000, Some(4_000)).is_empty(),
            "heard 4 s ago: not lost yet, and not connected again either"
        );
    }
}
