//! Placement of ECS-style tasks on container instances: a pure function
//! from a read-only [`ClusterView`] and a [`PlacementRequest`] to a
//! [`PlacementPlan`], plus the resource accounting the state machine uses to
//! re-check a plan when it applies it.
//!
//! - [`reserve`] turns a task definition into a [`Reservation`] (CPU units,
//!   MiB, host ports); [`InstanceCapacity`] keeps an instance's accounting
//!   exact through `allocate`/`release`.
//! - [`Strategy`] and [`Constraint`] parse the CLI's strings
//!   (`spread:attribute:zone`, `memberOf(attribute:os == linux)`); the
//!   `memberOf` language is in [`expr`].
//! - [`place`] filters instances (status, constraints, resources, ports) and
//!   ranks a bounded sample of the feasible ones by the strategies; see the
//!   `place` module docs for the sampling trade-off.
//! - [`check_placement`] is the optimistic-concurrency check: a placement
//!   decided from a stale view is refused, never over-committed.

pub mod expr;
mod place;
mod reason;
// Resource accounting lives in berth-types so the state machine can re-check
// placements with exactly the arithmetic the scheduler used.
use berth_types::resources;
mod spec;
mod view;

pub use expr::{Expr, ExprError};
pub use place::{
    place, place_with_limit, Placement, PlacementPlan, PlacementRequest, Unplaced,
    DEFAULT_SAMPLE_LIMIT,
};
pub use reason::{Census, Exclusion, Filtered, StatusCounts, Unplaceable};
pub use resources::{
    reserve, CapacityError, HostPort, InstanceCapacity, PlacementConflict, Reservation, Resources,
};
pub use spec::{
    parse_constraints, parse_strategies, Constraint, MemberOf, Resource, SpecError, SpreadField,
    Strategy, MAX_CONSTRAINTS, MAX_STRATEGIES,
};
pub use view::{check_placement, ClusterView, InstanceState, InstanceView, ViewError};
