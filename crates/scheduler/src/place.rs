//! One placement decision: filter instances (status, constraints, resources,
//! ports), then rank the survivors by the request's strategies.
//!
//! # Bounded ranking
//!
//! Looking at every instance for every task would cost O(instances) per task.
//! Instead, like Nomad's limit iterator, each task ranks a bounded sample of
//! at most `sample_limit` (default 50) *feasible* instances. Instances are
//! only checked when a walk reaches them, and walks carry on across the tasks
//! of a request (round robin from a seeded random order), so consecutive
//! tasks look at different instances.
//!
//! A plain random sample would make binpack scatter tasks and spread miss the
//! rare emptiest spot, so the sample is drawn in the order of the *first*
//! strategy, which therefore decides exactly:
//!
//! - `binpack:R`: instances are walked from the least free R upwards (the
//!   view keeps them sorted; this request's own placements are merged in), so
//!   the chosen instance is always a best fit. The walk stops at the first
//!   value above the best candidate's, since nothing beyond can win.
//! - `spread:F`: instances are walked by tier, from the values of F with the
//!   fewest tasks of the group upwards, so the chosen value always has the
//!   fewest tasks. Ties between values are broken by a seeded rotation.
//! - `random`: a seeded shuffle of the instances.
//!
//! The later strategies only break ties, and only among the sample plus the
//! instances this request already placed on (so a secondary binpack keeps
//! filling them). That is the trade-off: with `spread:attribute:zone` then
//! `binpack:memory` the zone is exact, but the instance is the best fit among
//! about 50 of that zone rather than among all of them (like Nomad, which
//! ranks a couple of candidates, "power of two choices", instead of the whole
//! cluster). Remaining ties go to the instance with the fewest tasks of the
//! group, then to walk order. `place_with_limit(.., usize::MAX)` ranks every
//! feasible instance.
//!
//! Within one request, an instance that fails a check for any reason other
//! than a `task:group` expression can never pass again (free resources only
//! shrink, ports only fill, group counts only grow, status and attributes are
//! fixed), so it is dropped from the walks for the rest of the request. That
//! keeps a request's cost near O(instances + tasks × sample) even when it
//! fills the cluster, instead of rescanning full instances for every task.
//!
//! A task that cannot be placed is detected when the walk has run out of
//! instances; only then is the whole cluster scanned once more, to explain
//! why (the remaining tasks of the request get the same reason, since nothing
//! changes after a failure). That scan places the task if it finds a feasible
//! instance after all, so sampling can never leave a placeable task unplaced.

use std::collections::BTreeSet;
use std::ops::{Bound, Range};

use berth_types::TaskDefinitionSpec;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::expr::Expr;
use crate::reason::{Census, Exclusion, Filtered, StatusCounts, Unplaceable};
use crate::resources::{reserve, HostPort, Reservation, Resources};
use crate::spec::{Constraint, Resource, SpreadField, Strategy};
use crate::view::{index_u32, AttrIndex, ClusterView, InstanceFacts, InstanceState};

/// How many feasible instances each task ranks, unless told otherwise.
pub const DEFAULT_SAMPLE_LIMIT: usize = 50;

/// Strategies beyond this many cannot change a decision in practice (ECS
/// allows five); the bound keeps a ranking key on the stack.
const MAX_KEYS: usize = 6;

/// `count` tasks that reserve the same resources, placed together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlacementRequest {
    /// `service:NAME`, `family:NAME` (RunTask's default) or a RunTask
    /// `--group`; what distinctInstance and spread count.
    pub group: String,
    pub count: u32,
    pub reservation: Reservation,
    pub constraints: Vec<Constraint>,
    /// Applied in order; empty means `spread:instanceId`.
    pub strategies: Vec<Strategy>,
}

impl PlacementRequest {
    pub fn new(group: impl Into<String>, reservation: Reservation, count: u32) -> Self {
        Self {
            group: group.into(),
            count,
            reservation,
            constraints: Vec::new(),
            strategies: Vec::new(),
        }
    }

    /// A request for tasks of `spec`; the group defaults to `family:FAMILY`
    /// as in ECS RunTask.
    pub fn for_task_definition(spec: &TaskDefinitionSpec, group: Option<&str>, count: u32) -> Self {
        let group = match group {
            Some(g) => g.to_string(),
            None => format!("family:{}", spec.family),
        };
        Self::new(group, reserve(spec), count)
    }

    pub fn with_strategy(mut self, strategy: Strategy) -> Self {
        self.strategies.push(strategy);
        self
    }

    pub fn with_constraint(mut self, constraint: Constraint) -> Self {
        self.constraints.push(constraint);
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    pub task_index: u32,
    pub instance_id: String,
}

/// Tasks that stay PROVISIONING, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Unplaced {
    pub task_indexes: Range<u32>,
    pub reason: Unplaceable,
    /// How many instances each filter ruled out.
    pub filtered: Filtered,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlacementPlan {
    /// In task order.
    pub placements: Vec<Placement>,
    pub unplaced: Vec<Unplaced>,
}

impl PlacementPlan {
    pub fn is_complete(&self) -> bool {
        self.unplaced.is_empty()
    }

    pub fn unplaced_count(&self) -> u32 {
        self.unplaced
            .iter()
            .map(|u| u.task_indexes.len() as u32)
            .sum()
    }

    pub fn instance_for(&self, task_index: u32) -> Option<&str> {
        self.placements
            .iter()
            .find(|p| p.task_index == task_index)
            .map(|p| p.instance_id.as_str())
    }

    pub fn reason_for(&self, task_index: u32) -> Option<&Unplaceable> {
        self.unplaced
            .iter()
            .find(|u| u.task_indexes.contains(&task_index))
            .map(|u| &u.reason)
    }
}

/// Places `request.count` tasks on `view`, one by one, each seeing the
/// placements before it. Deterministic for a given view, request and seed.
pub fn place(view: &ClusterView, request: &PlacementRequest, rng_seed: u64) -> PlacementPlan {
    place_with_limit(view, request, rng_seed, DEFAULT_SAMPLE_LIMIT)
}

/// [`place`] with a different sample size; `usize::MAX` ranks every feasible
/// instance (exact, and slow on big clusters).
pub fn place_with_limit(
    view: &ClusterView,
    request: &PlacementRequest,
    rng_seed: u64,
    sample_limit: usize,
) -> PlacementPlan {
    let mut plan = PlacementPlan::default();
    if request.count == 0 {
        return plan;
    }
    if view.is_empty() {
        plan.unplaced.push(Unplaced {
            task_indexes: 0..request.count,
            reason: Unplaceable::NoInstances,
            filtered: Filtered::default(),
        });
        return plan;
    }
    let mut decision = Decision::new(view, request, rng_seed, sample_limit.max(1));
    for task in 0..request.count {
        match decision.next() {
            Ok(i) => {
                decision.commit(i);
                plan.placements.push(Placement {
                    task_index: task,
                    instance_id: view.at(i).id.clone(),
                });
            }
            Err(reason) => {
                plan.unplaced.push(Unplaced {
                    task_indexes: task..request.count,
                    reason,
                    filtered: std::mem::take(&mut decision.filtered),
                });
                break;
            }
        }
    }
    plan
}

/// What a check says about an instance for the current task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fit {
    Yes,
    /// Not now, but it may be later in this request (a `task:group`
    /// expression can change either way as tasks are placed).
    No,
    /// Not for the rest of this request. Within a request every other check
    /// only gets stricter: free resources only shrink, ports only fill up,
    /// group counts only grow, and status and attributes are fixed. So a
    /// dead instance can be dropped from every walk, which keeps each task's
    /// cost proportional to what it looks at rather than to the cluster.
    Dead,
}

// Per-instance cache for the checks that, once failed, stay failed.
const UNKNOWN: u8 = 0;
const PASS: u8 = 1;
const DEAD: u8 = 2;

/// Visits 0..n once each in a seeded pseudo-random order: `start + k *
/// stride (mod n)` with the stride coprime to n is a full cycle, so a
/// shuffled order costs no shuffle.
struct Walk {
    n: u64,
    start: u64,
    stride: u64,
    step: u64,
}

impl Walk {
    fn new(n: usize, rng: &mut StdRng) -> Self {
        let n = (n as u64).max(1);
        let start = rng.gen_range(0..n);
        let mut stride = 1;
        for _ in 0..64 {
            let s = rng.gen_range(1..=n);
            if gcd(s, n) == 1 {
                stride = s;
                break;
            }
        }
        Self {
            n,
            start,
            stride,
            step: 0,
        }
    }

    fn next(&mut self) -> u32 {
        // step < n and stride <= n, both below 2^32: no overflow.
        let i = (self.start + self.step * self.stride) % self.n;
        self.step = (self.step + 1) % self.n;
        i as u32
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Items (instances or buckets) in a seeded random order, visited round
/// robin across the tasks of a request; items that can no longer take a
/// task are removed in O(1), so they are paid for once.
#[derive(Default)]
struct Pool {
    items: Vec<u32>,
    cursor: usize,
}

impl Pool {
    fn shuffled(n: usize, rng: &mut StdRng, keep: impl Fn(u32) -> bool) -> Self {
        let mut walk = Walk::new(n, rng);
        let items = (0..n).map(|_| walk.next()).filter(|&i| keep(i)).collect();
        Self { items, cursor: 0 }
    }
}

/// This request's binpack order: instances that had at least the needed
/// amount free when the decision started, ascending by free amount, with
/// union-find skip links so removed entries cost nothing on later walks.
#[derive(Default)]
struct SortedFree {
    items: Vec<(u64, u32)>,
    /// `next[k] == k` while entry k is live; `items.len()` is a sentinel.
    next: Vec<u32>,
}

impl SortedFree {
    fn new(items: Vec<(u64, u32)>) -> Self {
        let next = (0..=items.len()).map(index_u32).collect();
        Self { items, next }
    }

    /// The first live entry at or after k.
    fn find(&mut self, k: usize) -> usize {
        let mut root = k;
        while self.next[root] as usize != root {
            root = self.next[root] as usize;
        }
        let mut x = k;
        while self.next[x] as usize != root {
            let up = self.next[x] as usize;
            self.next[x] = index_u32(root);
            x = up;
        }
        root
    }

    fn remove(&mut self, k: usize) {
        self.next[k] = index_u32(k + 1);
    }
}

/// How a spread strategy groups instances.
#[derive(Clone, Copy)]
enum Buckets<'a> {
    /// `spread:instanceId`: every instance is its own bucket.
    Identity,
    Attr(&'a AttrIndex),
    /// An attribute no instance has: one bucket holding everything.
    Single,
}

impl Buckets<'_> {
    fn count(&self, n: usize) -> usize {
        match self {
            Buckets::Identity => n,
            Buckets::Attr(a) => a.members.len(),
            Buckets::Single => 1,
        }
    }

    fn bucket_of(&self, i: u32) -> u32 {
        match self {
            Buckets::Identity => i,
            Buckets::Attr(a) => a.bucket_of[i as usize],
            Buckets::Single => 0,
        }
    }

    fn len(&self, b: u32, n: usize) -> usize {
        match self {
            Buckets::Identity => 1,
            Buckets::Attr(a) => a.members[b as usize].len(),
            Buckets::Single => n,
        }
    }

    fn member(&self, b: u32, k: usize) -> u32 {
        match self {
            Buckets::Identity => b,
            Buckets::Attr(a) => a.members[b as usize][k],
            Buckets::Single => k as u32,
        }
    }
}

struct Spread<'a> {
    buckets: Buckets<'a>,
    /// Tasks of the group per bucket, including this request's.
    counts: Vec<u32>,
    primary: bool,
    // The rest is only kept for the primary strategy, which drives the walk.
    /// Buckets without tasks of the group that may still take one.
    empty: Pool,
    /// Buckets holding tasks, as (count, rotated rank, bucket); dead buckets
    /// are dropped.
    nonzero: BTreeSet<(u32, u32, u32)>,
    rotation: u32,
    /// Where the walk inside each bucket resumes; `u32::MAX` = not started.
    cursors: Vec<u32>,
}

impl<'a> Spread<'a> {
    fn new(
        view: &'a ClusterView,
        field: &SpreadField,
        group_count: &[u32],
        group_members: &[u32],
        primary: bool,
        rng: &mut StdRng,
    ) -> Self {
        let n = view.len();
        let buckets = match field {
            SpreadField::InstanceId => Buckets::Identity,
            SpreadField::Attribute(name) => {
                view.attr_index(name).map_or(Buckets::Single, Buckets::Attr)
            }
        };
        let nb = buckets.count(n).max(1);
        let mut counts = vec![0u32; nb];
        for &m in group_members {
            let c = &mut counts[buckets.bucket_of(m) as usize];
            *c = c.saturating_add(group_count[m as usize]);
        }
        let mut spread = Spread {
            buckets,
            counts,
            primary,
            empty: Pool::default(),
            nonzero: BTreeSet::new(),
            rotation: 0,
            cursors: Vec::new(),
        };
        if primary {
            spread.rotation = rng.gen_range(0..nb) as u32;
            let counts = &spread.counts;
            spread.empty = match buckets {
                // Only ACTIVE instances can ever take a task.
                Buckets::Identity => Pool::shuffled(nb, rng, |i| {
                    counts[i as usize] == 0 && view.at(i).status == InstanceState::Active
                }),
                _ => Pool::shuffled(nb, rng, |b| counts[b as usize] == 0),
            };
            if !matches!(buckets, Buckets::Identity) {
                spread.cursors = vec![u32::MAX; nb];
            }
            for (b, &c) in spread.counts.iter().enumerate() {
                if c > 0 {
                    let b = b as u32;
                    spread.nonzero.insert((c, spread.rank(b), b));
                }
            }
        }
        spread
    }

    fn rank(&self, b: u32) -> u32 {
        ((u64::from(b) + u64::from(self.rotation)) % self.counts.len() as u64) as u32
    }

    fn count_at(&self, i: u32) -> u32 {
        self.counts[self.buckets.bucket_of(i) as usize]
    }

    fn add(&mut self, i: u32) {
        let b = self.buckets.bucket_of(i);
        let old = self.counts[b as usize];
        self.counts[b as usize] = old + 1;
        if self.primary {
            let rank = self.rank(b);
            if old > 0 {
                self.nonzero.remove(&(old, rank, b));
            }
            self.nonzero.insert((old + 1, rank, b));
        }
    }
}

struct Decision<'a> {
    view: &'a ClusterView,
    req: &'a PlacementRequest,
    strategies: Vec<Strategy>,
    limit: usize,
    /// The sample size for the current task (`limit` or fewer).
    want: usize,
    rng: StdRng,
    distinct: bool,
    static_exprs: Vec<&'a Expr>,
    /// Expressions on `task:group`, re-evaluated as tasks are placed.
    dynamic_exprs: Vec<&'a Expr>,
    /// UNKNOWN, PASS (status and static constraints hold) or DEAD.
    state: Vec<u8>,
    /// Tasks of this request per instance.
    placed: Vec<u32>,
    /// Tasks of the group per instance, this request's included.
    group_count: Vec<u32>,
    /// Instances this request placed on that may still take another task.
    touched: Vec<u32>,
    /// For a primary `random`.
    pool: Pool,
    /// One entry per strategy; `Some` for spreads.
    spreads: Vec<Option<Spread<'a>>>,
    /// For a primary binpack: instances as the decision found them, and the
    /// touched ones by what they have left now.
    sorted: SortedFree,
    overlay: BTreeSet<(u64, u32)>,
    /// `stamp[i] == task_stamp` when i is already a candidate for this task.
    stamp: Vec<u32>,
    task_stamp: u32,
    candidates: Vec<u32>,
    /// What the last diagnosis found, per filter.
    filtered: Filtered,
}

impl<'a> Decision<'a> {
    fn new(view: &'a ClusterView, req: &'a PlacementRequest, seed: u64, limit: usize) -> Self {
        let n = view.len();
        let mut rng = StdRng::seed_from_u64(seed);
        let strategies: Vec<Strategy> = if req.strategies.is_empty() {
            vec![Strategy::DEFAULT]
        } else {
            req.strategies.iter().take(MAX_KEYS).cloned().collect()
        };
        let mut distinct = false;
        let mut static_exprs = Vec::new();
        let mut dynamic_exprs = Vec::new();
        for c in &req.constraints {
            match c {
                Constraint::DistinctInstance => distinct = true,
                Constraint::MemberOf(m) if m.expression.uses_task_groups() => {
                    dynamic_exprs.push(&m.expression)
                }
                Constraint::MemberOf(m) => static_exprs.push(&m.expression),
            }
        }
        let mut group_count = vec![0u32; n];
        let members: Vec<u32> = view
            .group_members(&req.group)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        for &m in &members {
            group_count[m as usize] = view.at(m).tasks_of_group(&req.group);
        }
        let spreads = strategies
            .iter()
            .enumerate()
            .map(|(k, s)| match s {
                Strategy::Spread(field) => Some(Spread::new(
                    view,
                    field,
                    &group_count,
                    &members,
                    k == 0,
                    &mut rng,
                )),
                _ => None,
            })
            .collect();
        let mut pool = Pool::default();
        let mut sorted = SortedFree::default();
        match &strategies[0] {
            Strategy::Random => {
                pool = Pool::shuffled(n, &mut rng, |i| view.at(i).status == InstanceState::Active);
            }
            Strategy::Binpack(resource) => {
                let need = need_of(&req.reservation, *resource);
                sorted = SortedFree::new(
                    view.free_index(*resource)
                        .range((need, 0)..)
                        .copied()
                        .collect(),
                );
            }
            Strategy::Spread(_) => {}
        }
        Self {
            view,
            req,
            strategies,
            limit,
            want: limit,
            rng,
            distinct,
            static_exprs,
            dynamic_exprs,
            state: vec![UNKNOWN; n],
            placed: vec![0; n],
            group_count,
            touched: Vec::new(),
            pool,
            spreads,
            sorted,
            overlay: BTreeSet::new(),
            stamp: vec![0; n],
            task_stamp: 0,
            candidates: Vec::new(),
            filtered: Filtered::default(),
        }
    }

    /// What instance i has left after this request's placements on it.
    fn free_now(&self, i: u32) -> Resources {
        let placed = u64::from(self.placed[i as usize]);
        let r = &self.req.reservation;
        self.view
            .at(i)
            .capacity
            .remaining()
            .saturating_sub(Resources::new(
                r.cpu.saturating_mul(placed),
                r.memory_mib.saturating_mul(placed),
            ))
    }

    fn facts(&self, i: u32) -> InstanceFacts<'a> {
        InstanceFacts {
            instance: self.view.at(i),
            extra_group: (self.placed[i as usize] > 0).then_some(self.req.group.as_str()),
        }
    }

    fn fit(&mut self, i: u32) -> Fit {
        let iu = i as usize;
        match self.state[iu] {
            PASS => {}
            DEAD => return Fit::Dead,
            _ => {
                let inst = self.view.at(i);
                let ok = inst.status == InstanceState::Active
                    && self.static_exprs.iter().all(|e| e.matches(inst));
                if !ok {
                    self.state[iu] = DEAD;
                    return Fit::Dead;
                }
                self.state[iu] = PASS;
            }
        }
        if !self.fits_resources_and_ports(i) {
            self.state[iu] = DEAD;
            return Fit::Dead;
        }
        if !self.dynamic_exprs.is_empty() {
            let facts = self.facts(i);
            if !self.dynamic_exprs.iter().all(|e| e.eval(&facts)) {
                return Fit::No;
            }
        }
        Fit::Yes
    }

    fn fits_resources_and_ports(&self, i: u32) -> bool {
        let iu = i as usize;
        if self.distinct && self.group_count[iu] > 0 {
            return false;
        }
        let r = &self.req.reservation;
        let free = self.free_now(i);
        if r.cpu > free.cpu || r.memory_mib > free.memory_mib {
            return false;
        }
        if !r.ports.is_empty() {
            // A task of this request already holds these ports here.
            if self.placed[iu] > 0 {
                return false;
            }
            let capacity = &self.view.at(i).capacity;
            if r.ports.iter().any(|p| capacity.port_in_use(*p)) {
                return false;
            }
        }
        true
    }

    fn full(&self) -> bool {
        self.candidates.len() >= self.want
    }

    /// Adds i to this task's candidates if it is new and fits.
    fn offer(&mut self, i: u32) -> Fit {
        if self.stamp[i as usize] == self.task_stamp {
            return Fit::Yes;
        }
        let fit = self.fit(i);
        if fit == Fit::Yes {
            self.stamp[i as usize] = self.task_stamp;
            self.candidates.push(i);
        }
        fit
    }

    fn next(&mut self) -> Result<u32, Unplaceable> {
        if self.task_stamp == u32::MAX {
            self.stamp.iter_mut().for_each(|s| *s = 0);
            self.task_stamp = 0;
        }
        self.task_stamp += 1;
        self.candidates.clear();
        self.want = self.limit;
        match self.strategies[0].clone() {
            Strategy::Binpack(r) => self.binpack_candidates(r),
            Strategy::Spread(_) => self.spread_candidates(),
            Strategy::Random => {
                let mut pool = std::mem::take(&mut self.pool);
                self.offer_pool(&mut pool, |d, i| d.offer(i));
                self.pool = pool;
            }
        }
        match self.choose() {
            Some(i) => Ok(i),
            None => self.diagnose(),
        }
    }

    /// Visits a pool round robin from where the last task stopped, until
    /// the sample is full or every item was seen once; removes dead items.
    fn offer_pool(&mut self, pool: &mut Pool, mut visit: impl FnMut(&mut Self, u32) -> Fit) {
        // Removals do not count against the budget: each item is removed at
        // most once, and every surviving item is reached within `budget`
        // advances.
        let budget = pool.items.len();
        let mut advances = 0;
        while advances < budget && !pool.items.is_empty() {
            let k = pool.cursor % pool.items.len();
            let item = pool.items[k];
            if visit(self, item) == Fit::Dead {
                pool.items.swap_remove(k);
                continue;
            }
            pool.cursor = k + 1;
            advances += 1;
            if self.full() {
                break;
            }
        }
    }

    fn binpack_candidates(&mut self, resource: Resource) {
        let need = need_of(&self.req.reservation, resource);
        let mut sorted = std::mem::take(&mut self.sorted);
        let mut overlay = std::mem::take(&mut self.overlay);
        let mut dead_in_overlay = Vec::new();
        let mut over = overlay.range((need, 0)..).peekable();
        let mut k = sorted.find(0);
        let mut best: Option<u64> = None;
        // Merge the decision's starting order with this request's updates:
        // an exact ascending walk by what each instance has left now.
        loop {
            let main = sorted.items.get(k).copied();
            let from_overlay = match (main, over.peek()) {
                (None, None) => break,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some(a), Some(b)) => **b <= a,
            };
            let (free, i) = if from_overlay {
                match over.next() {
                    Some(&entry) => entry,
                    None => break,
                }
            } else {
                match main {
                    Some(entry) => entry,
                    None => break,
                }
            };
            // Touched instances live in the overlay from now on.
            if !from_overlay && self.placed[i as usize] > 0 {
                sorted.remove(k);
                k = sorted.find(k);
                continue;
            }
            // Ascending order: once past the best candidate's value nothing
            // further can win, as later strategies only break ties.
            if best.is_some_and(|b| free > b) {
                break;
            }
            let fit = self.offer(i);
            if fit == Fit::Yes && best.is_none() {
                best = Some(free);
            }
            if !from_overlay {
                if fit == Fit::Dead {
                    sorted.remove(k);
                }
                k = sorted.find(k + 1);
            } else if fit == Fit::Dead {
                dead_in_overlay.push((free, i));
            }
            if self.full() {
                break;
            }
        }
        for entry in dead_in_overlay {
            overlay.remove(&entry);
        }
        self.sorted = sorted;
        self.overlay = overlay;
    }

    fn spread_candidates(&mut self) {
        // Moved out while walking so that `offer` can borrow `self`. It is
        // always there when the first strategy is a spread; if not, the
        // full scan in `diagnose` still finds any feasible instance.
        let Some(mut spread) = self.spreads[0].take() else {
            return;
        };
        self.spread_tiers(&mut spread);
        self.spreads[0] = Some(spread);
    }

    fn spread_tiers(&mut self, spread: &mut Spread<'a>) {
        let identity = matches!(spread.buckets, Buckets::Identity);
        // Without a second strategy, candidates of one tier tie on every key
        // when each has the same count of the group on the instance itself:
        // always so in tier 0 and for spread:instanceId. Then the first
        // candidate is the answer and sampling more is wasted work.
        let single = self.strategies.len() == 1;
        if single {
            self.want = 1;
        }
        // Tier 0: buckets without any task of the group.
        let mut empty = std::mem::take(&mut spread.empty);
        self.offer_pool(&mut empty, |d, b| {
            if spread.counts[b as usize] > 0 {
                // Took a task since; it belongs to the upper tiers now.
                Fit::Dead
            } else {
                d.offer_bucket(spread, b)
            }
        });
        spread.empty = empty;
        if !self.candidates.is_empty() {
            return;
        }
        if single && !identity {
            self.want = self.limit;
        }
        // Then buckets by ascending count; stop at the end of the first tier
        // that yields a candidate.
        let mut tier = None;
        let mut last: Option<(u32, u32, u32)> = None;
        loop {
            let next = match last {
                None => spread.nonzero.iter().next(),
                Some(k) => spread
                    .nonzero
                    .range((Bound::Excluded(k), Bound::Unbounded))
                    .next(),
            };
            let Some(&key) = next else { break };
            let (count, _, b) = key;
            if tier.is_some_and(|t| t != count) && !self.candidates.is_empty() {
                break;
            }
            tier = Some(count);
            last = Some(key);
            if self.offer_bucket(spread, b) == Fit::Dead {
                spread.nonzero.remove(&key);
            }
            if self.full() {
                break;
            }
        }
        // A secondary binpack should keep filling what this request started.
        if let Some(t) = tier {
            if !single && !self.candidates.is_empty() {
                let mut k = 0;
                while k < self.touched.len() {
                    let i = self.touched[k];
                    if spread.count_at(i) == t && self.offer(i) == Fit::Dead {
                        // Full (or otherwise done): never offer it again.
                        self.touched.swap_remove(k);
                        continue;
                    }
                    k += 1;
                }
            }
        }
    }

    /// Walks one bucket from where the last walk in it stopped. `Dead` when
    /// no member can take a task for the rest of the request.
    fn offer_bucket(&mut self, spread: &mut Spread<'a>, b: u32) -> Fit {
        let buckets = spread.buckets;
        if matches!(buckets, Buckets::Identity) {
            return self.offer(b);
        }
        let len = buckets.len(b, self.view.len());
        if len == 0 {
            return Fit::Dead;
        }
        let start = match spread.cursors[b as usize] {
            u32::MAX => self.rng.gen_range(0..len),
            c => c as usize,
        };
        let mut all_dead = true;
        for k in 0..len {
            let pos = (start + k) % len;
            if self.offer(buckets.member(b, pos)) != Fit::Dead {
                all_dead = false;
            }
            if self.full() {
                spread.cursors[b as usize] = ((pos + 1) % len) as u32;
                return Fit::Yes;
            }
        }
        spread.cursors[b as usize] = start as u32;
        if all_dead {
            Fit::Dead
        } else {
            Fit::No
        }
    }

    fn choose(&mut self) -> Option<u32> {
        let mut best: Option<([u64; MAX_KEYS + 2], u32)> = None;
        for pos in 0..self.candidates.len() {
            let i = self.candidates[pos];
            let mut key = [0u64; MAX_KEYS + 2];
            for (k, strategy) in self.strategies.iter().enumerate() {
                key[k] = match strategy {
                    Strategy::Binpack(Resource::Cpu) => self.free_now(i).cpu,
                    Strategy::Binpack(Resource::Memory) => self.free_now(i).memory_mib,
                    Strategy::Spread(_) => match &self.spreads[k] {
                        Some(s) => u64::from(s.count_at(i)),
                        None => 0,
                    },
                    Strategy::Random => self.rng.gen(),
                };
            }
            key[MAX_KEYS] = u64::from(self.group_count[i as usize]);
            key[MAX_KEYS + 1] = pos as u64;
            if best.is_none_or(|(b, _)| key < b) {
                best = Some((key, i));
            }
        }
        best.map(|(_, i)| i)
    }

    fn commit(&mut self, i: u32) {
        let iu = i as usize;
        let before = self.free_now(i);
        self.placed[iu] += 1;
        self.group_count[iu] += 1;
        if self.placed[iu] == 1 {
            self.touched.push(i);
        }
        for spread in self.spreads.iter_mut().flatten() {
            spread.add(i);
        }
        if let Strategy::Binpack(resource) = self.strategies[0] {
            let after = self.free_now(i);
            let (b, a) = match resource {
                Resource::Cpu => (before.cpu, after.cpu),
                Resource::Memory => (before.memory_mib, after.memory_mib),
            };
            self.overlay.remove(&(b, i));
            if a >= need_of(&self.req.reservation, resource) {
                self.overlay.insert((a, i));
            }
        }
    }

    /// Scans every instance to say which filter removed the last candidates.
    /// Returns an instance if one turns out to be feasible after all, so a
    /// gap in the sampled walk can never leave a placeable task unplaced.
    fn diagnose(&mut self) -> Result<u32, Unplaceable> {
        let statuses = StatusCounts::from_array(self.view.status_counts());
        if statuses.active == 0 {
            self.filtered = Filtered {
                not_active: statuses.draining + statuses.disconnected + statuses.inactive,
                ..Filtered::default()
            };
            return Err(Unplaceable::NoActiveInstance { statuses });
        }
        let r = &self.req.reservation;
        let constraints = &self.req.constraints;
        let mut excluded = vec![0u32; constraints.len()];
        let mut eligible = 0u32;
        let (mut lacking_cpu, mut lacking_memory) = (0u32, 0u32);
        let (mut most_free_cpu, mut most_free_memory) = (0u64, 0u64);
        let mut with_room = 0u32;
        let mut port_blocks = vec![0u32; r.ports.len()];
        for i in 0..self.view.len() as u32 {
            let inst = self.view.at(i);
            if inst.status != InstanceState::Active {
                continue;
            }
            let facts = self.facts(i);
            let failed = constraints.iter().position(|c| match c {
                Constraint::DistinctInstance => self.group_count[i as usize] > 0,
                Constraint::MemberOf(m) => !m.expression.eval(&facts),
            });
            if let Some(k) = failed {
                excluded[k] += 1;
                continue;
            }
            eligible += 1;
            let free = self.free_now(i);
            most_free_cpu = most_free_cpu.max(free.cpu);
            most_free_memory = most_free_memory.max(free.memory_mib);
            let no_cpu = r.cpu > free.cpu;
            let no_memory = r.memory_mib > free.memory_mib;
            lacking_cpu += u32::from(no_cpu);
            lacking_memory += u32::from(no_memory);
            if no_cpu || no_memory {
                continue;
            }
            with_room += 1;
            let mut blocked = false;
            for (k, p) in r.ports.iter().enumerate() {
                if self.placed[i as usize] > 0 || inst.capacity.port_in_use(*p) {
                    port_blocks[k] += 1;
                    blocked = true;
                }
            }
            if !blocked {
                return Ok(i);
            }
        }
        self.filtered = Filtered {
            not_active: statuses.draining + statuses.disconnected + statuses.inactive,
            constraints: constraints
                .iter()
                .zip(&excluded)
                .map(|(c, &n)| Exclusion {
                    constraint: c.to_string(),
                    instances: n,
                })
                .collect(),
            memory: lacking_memory,
            cpu: lacking_cpu,
            ports: with_room,
        };
        if eligible == 0 {
            return Err(Unplaceable::Constraints {
                group: self.req.group.clone(),
                excluded: constraints
                    .iter()
                    .zip(&excluded)
                    .filter(|(_, &n)| n > 0)
                    .map(|(c, &n)| Exclusion {
                        constraint: c.to_string(),
                        instances: n,
                    })
                    .collect(),
                checked: statuses.active,
            });
        }
        if with_room == 0 {
            return Err(Unplaceable::Resources {
                cpu_needed: r.cpu,
                memory_needed: r.memory_mib,
                candidates: eligible,
                lacking_cpu,
                lacking_memory,
                most_free_cpu,
                most_free_memory,
                census: Census {
                    statuses,
                    eligible: (eligible < statuses.active).then_some(eligible),
                },
            });
        }
        let everywhere: Vec<HostPort> = r
            .ports
            .iter()
            .zip(&port_blocks)
            .filter(|(_, &n)| n == with_room)
            .map(|(p, _)| *p)
            .collect();
        let on_every = !everywhere.is_empty();
        let ports = if on_every {
            everywhere
        } else {
            r.ports
                .iter()
                .zip(&port_blocks)
                .filter(|(_, &n)| n > 0)
                .map(|(p, _)| *p)
                .collect()
        };
        Err(Unplaceable::Ports {
            ports,
            on_every,
            checked: with_room,
        })
    }
}

fn need_of(reservation: &Reservation, resource: Resource) -> u64 {
    match resource {
        Resource::Cpu => reservation.cpu,
        Resource::Memory => reservation.memory_mib,
    }
}
