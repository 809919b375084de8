//! What changed in the state, announced after each applied batch of
//! commands to every subscriber (agent sessions route assignments with them,
//! controllers wake up on them). In memory only: nothing here is replicated.

/// One change, named by the aggregate it concerns.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StateEvent {
    /// A task was created, placed, or its desired or reported status
    /// changed. `instance_id` is where it is placed (None while it waits).
    Task {
        task_id: String,
        instance_id: Option<String>,
    },
    /// An instance connected, disconnected, drained, was deregistered, or
    /// its attributes or resources changed.
    Instance { instance_id: String },
    /// A service was created, updated, deleted, or its rollout moved on
    /// (including any of its tasks stopping).
    Service { cluster: String, name: String },
}
