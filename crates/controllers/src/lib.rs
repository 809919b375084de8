//! The leader's controllers. Each is a pure function from the replicated
//! state (plus the few facts only the leader's memory holds, such as agent
//! heartbeats) and the current time to the commands that move the cluster
//! toward what it should be. No I/O, no clock, no randomness of their own:
//! the server's driver supplies all three, owns timing, wake-ups and
//! leadership, and proposes what they return. The state machine re-checks
//! every command when it applies it, so a decision made from a state that
//! has since moved on is refused rather than applied.
//!
//! Tests are scenario tables: a state and a time in, commands out.

pub mod ids;
pub mod liveness;
pub mod purge;
pub mod schedules;
pub mod scheduling;
pub mod services;
#[cfg(test)]
mod services_tests;
#[cfg(test)]
pub(crate) mod testkit;

use berth_types::{Command, State, StateEvent};

pub use ids::IdSource;

/// What the leader knows about agents that is not in the replicated state.
pub trait AgentLiveness {
    /// When the instance's agent last heartbeat, if it has a session here.
    fn last_heartbeat_ms(&self, instance_id: &str) -> Option<i64>;
    /// When the instance's current session started.
    fn session_started_ms(&self, instance_id: &str) -> Option<i64>;
    /// When the instance's last session here ended, if it has no session
    /// now.
    fn session_ended_ms(&self, instance_id: &str) -> Option<i64>;
}

/// No agent has a session (for tests and for controllers that never ask).
pub struct NoAgents;

impl AgentLiveness for NoAgents {
    fn last_heartbeat_ms(&self, _: &str) -> Option<i64> {
        None
    }
    fn session_started_ms(&self, _: &str) -> Option<i64> {
        None
    }
    fn session_ended_ms(&self, _: &str) -> Option<i64> {
        None
    }
}

/// Everything a controller may look at besides the state.
pub struct Inputs<'a> {
    /// Milliseconds since the Unix epoch, from the driver's clock.
    pub now_ms: i64,
    /// When this server became the leader that is running the controllers.
    pub leader_since_ms: i64,
    pub agents: &'a dyn AgentLiveness,
    /// Fresh ids (tasks, deployments) and placement sampling draw from here;
    /// the driver seeds it randomly, tests with a constant.
    pub seed: u64,
}

impl<'a> Inputs<'a> {
    pub fn new(now_ms: i64, seed: u64, agents: &'a dyn AgentLiveness) -> Self {
        Self {
            now_ms,
            leader_since_ms: i64::MIN / 2,
            agents,
            seed,
        }
    }
}

/// One control loop.
pub trait Controller: Send {
    fn name(&self) -> &'static str;
    /// How often it runs when nothing wakes it, in milliseconds.
    fn interval_ms(&self) -> u64;
    /// Whether a change in the state is worth an early run.
    fn wakes_on(&self, event: &StateEvent) -> bool;
    /// Whether to run again at once after a pass whose commands were
    /// applied (work that did not fit one pass, such as bulk placements).
    fn repeat_while_progressing(&self) -> bool {
        false
    }
    /// The commands that move the cluster toward its desired state; empty
    /// when there is nothing to do.
    fn reconcile(&self, state: &State, inputs: &Inputs<'_>) -> Vec<Command>;
}
