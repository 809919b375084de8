//! The read-only picture of a cluster that a decision is made from, with the
//! indexes that let a decision look at a handful of instances instead of all
//! of them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::expr::Facts;
use crate::resources::{
    CapacityError, InstanceCapacity, PlacementConflict, Reservation, Resources,
};
use crate::spec::Resource;

/// Where an instance stands decides whether it takes new tasks; the state
/// is berth-types', so the scheduler, the state machine and the API name it
/// alike.
pub use berth_types::InstanceState;

/// Position of a state in per-state counts.
fn state_index(state: InstanceState) -> usize {
    match state {
        InstanceState::Active => 0,
        InstanceState::Draining => 1,
        InstanceState::Disconnected => 2,
        InstanceState::Inactive => 3,
    }
}

/// One container instance as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceView {
    pub id: String,
    pub status: InstanceState,
    /// `os`, `arch`, `hostname` and custom attributes.
    pub attributes: BTreeMap<String, String>,
    pub capacity: InstanceCapacity,
    /// Task group (`service:NAME`, `family:NAME` or a RunTask `--group`) ->
    /// number of its tasks on this instance. Entries are never zero.
    pub task_groups: BTreeMap<String, u32>,
}

impl InstanceView {
    pub fn new(id: impl Into<String>, status: InstanceState, registered: Resources) -> Self {
        Self {
            id: id.into(),
            status,
            attributes: BTreeMap::new(),
            capacity: InstanceCapacity::new(registered),
            task_groups: BTreeMap::new(),
        }
    }

    pub fn with_attribute(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.insert(name.into(), value.into());
        self
    }

    /// Counts a task that is already running here, whether or not it fits
    /// (the view must reflect reality, even an over-committed one).
    pub fn record_task(&mut self, group: &str, reservation: &Reservation) {
        self.capacity.record(reservation);
        *self.task_groups.entry(group.to_string()).or_insert(0) += 1;
    }

    /// Forgets a task that stopped. Nothing changes on a mismatch.
    pub fn remove_task(
        &mut self,
        group: &str,
        reservation: &Reservation,
    ) -> Result<(), CapacityError> {
        self.capacity.release(reservation)?;
        match self.task_groups.get_mut(group) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                self.task_groups.remove(group);
            }
            None => {}
        }
        Ok(())
    }

    pub fn tasks_of_group(&self, group: &str) -> u32 {
        self.task_groups.get(group).copied().unwrap_or(0)
    }
}

/// Whether a task with `reservation` may be started on `instance` now. The
/// state machine calls this when it applies a placement decided from an
/// older view; a decision that no longer fits is rejected rather than
/// over-committing the instance.
pub fn check_placement(
    instance: &InstanceView,
    reservation: &Reservation,
) -> Result<(), PlacementConflict> {
    if instance.status != InstanceState::Active {
        return Err(PlacementConflict::NotActive {
            instance: instance.id.clone(),
            status: instance.status.to_string(),
        });
    }
    instance.capacity.check(reservation)
}

pub(crate) struct InstanceFacts<'a> {
    pub instance: &'a InstanceView,
    /// The request's own group, once a task of it was placed here during the
    /// current decision.
    pub extra_group: Option<&'a str>,
}

impl Facts for InstanceFacts<'_> {
    fn attribute(&self, name: &str) -> Option<&str> {
        self.instance.attributes.get(name).map(String::as_str)
    }

    fn instance_id(&self) -> &str {
        &self.instance.id
    }

    fn any_group(&self, pred: &mut dyn FnMut(&str) -> bool) -> bool {
        self.extra_group.is_some_and(&mut *pred)
            || self.instance.task_groups.keys().any(|g| pred(g))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViewError {
    #[error("instance {0} appears twice in the cluster view")]
    DuplicateInstance(String),
    #[error("instance {0} is not in the cluster view")]
    UnknownInstance(String),
    #[error("instance {instance}: {conflict}")]
    Conflict {
        instance: String,
        conflict: PlacementConflict,
    },
    #[error("task {task_index} of the plan, on instance {instance}: {conflict}")]
    PlanConflict {
        task_index: u32,
        instance: String,
        conflict: PlacementConflict,
    },
    #[error("instance {instance}: {error}")]
    Release {
        instance: String,
        error: CapacityError,
    },
}

/// Instances grouped by the value of one attribute, for `spread:attribute`.
/// Buckets are in value order; instances without the attribute form a last
/// bucket of their own, so they still receive tasks, balanced like a value.
#[derive(Debug, Clone)]
pub(crate) struct AttrIndex {
    pub values: Vec<Option<String>>,
    pub members: Vec<Vec<u32>>,
    pub bucket_of: Vec<u32>,
}

/// A consistent, read-only snapshot of a cluster's instances, indexed for
/// placement. Built once per scheduling pass; [`ClusterView::apply`] adds a
/// plan's placements so the next request of the same pass sees them.
#[derive(Debug, Clone)]
pub struct ClusterView {
    instances: Vec<InstanceView>,
    by_id: HashMap<String, u32>,
    /// Group -> instances running at least one of its tasks.
    groups: HashMap<String, BTreeSet<u32>>,
    /// Built on first use: only `spread:attribute` reads it, and building
    /// it for every attribute of every instance took a share of each pass
    /// that placed by instance. Attributes never change within a view.
    attrs: OnceLock<HashMap<String, AttrIndex>>,
    /// ACTIVE instances ordered by what they have left, for binpack.
    free_cpu: BTreeSet<(u64, u32)>,
    free_memory: BTreeSet<(u64, u32)>,
    status_counts: [u32; 4],
}

impl ClusterView {
    pub fn new(instances: Vec<InstanceView>) -> Result<Self, ViewError> {
        let mut by_id = HashMap::with_capacity(instances.len());
        let mut groups: HashMap<String, BTreeSet<u32>> = HashMap::new();
        let mut free_cpu = BTreeSet::new();
        let mut free_memory = BTreeSet::new();
        let mut status_counts = [0u32; 4];
        for (i, inst) in instances.iter().enumerate() {
            let idx = index_u32(i);
            if by_id.insert(inst.id.clone(), idx).is_some() {
                return Err(ViewError::DuplicateInstance(inst.id.clone()));
            }
            for (group, &n) in &inst.task_groups {
                if n > 0 {
                    groups.entry(group.clone()).or_default().insert(idx);
                }
            }
            status_counts[state_index(inst.status)] += 1;
            if inst.status == InstanceState::Active {
                let free = inst.capacity.remaining();
                free_cpu.insert((free.cpu, idx));
                free_memory.insert((free.memory_mib, idx));
            }
        }
        Ok(Self {
            instances,
            by_id,
            groups,
            attrs: OnceLock::new(),
            free_cpu,
            free_memory,
            status_counts,
        })
    }

    /// One index per attribute name over all instances.
    fn index_attributes(instances: &[InstanceView]) -> HashMap<String, AttrIndex> {
        let mut values_by_name: BTreeMap<&str, BTreeMap<&str, Vec<u32>>> = BTreeMap::new();
        for (i, inst) in instances.iter().enumerate() {
            for (name, value) in &inst.attributes {
                values_by_name
                    .entry(name)
                    .or_default()
                    .entry(value)
                    .or_default()
                    .push(index_u32(i));
            }
        }
        let n = instances.len();
        values_by_name
            .into_iter()
            .map(|(name, values)| {
                let mut index = AttrIndex {
                    values: Vec::with_capacity(values.len() + 1),
                    members: Vec::with_capacity(values.len() + 1),
                    bucket_of: vec![u32::MAX; n],
                };
                for (value, members) in values {
                    let bucket = index_u32(index.values.len());
                    for &m in &members {
                        index.bucket_of[m as usize] = bucket;
                    }
                    index.values.push(Some(value.to_string()));
                    index.members.push(members);
                }
                let missing: Vec<u32> = (0..n)
                    .filter(|&i| index.bucket_of[i] == u32::MAX)
                    .map(index_u32)
                    .collect();
                if !missing.is_empty() {
                    let bucket = index_u32(index.values.len());
                    for &m in &missing {
                        index.bucket_of[m as usize] = bucket;
                    }
                    index.values.push(None);
                    index.members.push(missing);
                }
                (name.to_string(), index)
            })
            .collect()
    }

    pub fn instances(&self) -> &[InstanceView] {
        &self.instances
    }

    pub fn instance(&self, id: &str) -> Option<&InstanceView> {
        self.by_id.get(id).map(|&i| &self.instances[i as usize])
    }

    pub fn len(&self) -> usize {
        self.instances.len()
    }

    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }

    /// Starts a task of `group` on the instance if it fits there now.
    pub fn add_task(
        &mut self,
        instance_id: &str,
        group: &str,
        reservation: &Reservation,
    ) -> Result<(), ViewError> {
        let idx = self.index_of(instance_id)?;
        let inst = &self.instances[idx as usize];
        check_placement(inst, reservation).map_err(|conflict| ViewError::Conflict {
            instance: instance_id.to_string(),
            conflict,
        })?;
        self.update(idx, |inst| {
            inst.record_task(group, reservation);
            Ok(())
        })?;
        self.groups
            .entry(group.to_string())
            .or_default()
            .insert(idx);
        Ok(())
    }

    /// Forgets a stopped task of `group`.
    pub fn remove_task(
        &mut self,
        instance_id: &str,
        group: &str,
        reservation: &Reservation,
    ) -> Result<(), ViewError> {
        let idx = self.index_of(instance_id)?;
        self.update(idx, |inst| {
            inst.remove_task(group, reservation)
                .map_err(|error| ViewError::Release {
                    instance: inst.id.clone(),
                    error,
                })
        })?;
        if self.instances[idx as usize].tasks_of_group(group) == 0 {
            if let Some(set) = self.groups.get_mut(group) {
                set.remove(&idx);
                if set.is_empty() {
                    self.groups.remove(group);
                }
            }
        }
        Ok(())
    }

    /// Adds the placements of a plan made for `request`, all or nothing:
    /// each is checked as the state machine would (with the plan's earlier
    /// placements counted), and on a conflict nothing changes and the error
    /// names the first task that does not fit.
    pub fn apply(
        &mut self,
        request: &crate::PlacementRequest,
        plan: &crate::PlacementPlan,
    ) -> Result<(), ViewError> {
        let r = &request.reservation;
        let mut per_instance: HashMap<u32, u64> = HashMap::new();
        let mut targets = Vec::with_capacity(plan.placements.len());
        for p in &plan.placements {
            let idx = self.index_of(&p.instance_id)?;
            let k = per_instance.entry(idx).or_insert(0);
            *k += 1;
            let inst = &self.instances[idx as usize];
            let conflict = |conflict| ViewError::PlanConflict {
                task_index: p.task_index,
                instance: p.instance_id.clone(),
                conflict,
            };
            check_placement(inst, r).map_err(conflict)?;
            // The plan's earlier tasks on this instance hold their share.
            let free = inst.capacity.remaining();
            let (cpu, memory) = (r.cpu.saturating_mul(*k), r.memory_mib.saturating_mul(*k));
            if cpu > free.cpu {
                return Err(conflict(PlacementConflict::InsufficientCpu {
                    needed: r.cpu,
                    free: free.cpu.saturating_sub(cpu - r.cpu),
                }));
            }
            if memory > free.memory_mib {
                return Err(conflict(PlacementConflict::InsufficientMemory {
                    needed: r.memory_mib,
                    free: free.memory_mib.saturating_sub(memory - r.memory_mib),
                }));
            }
            if let (true, Some(&port)) = (*k > 1, r.ports.first()) {
                return Err(conflict(PlacementConflict::PortInUse { port }));
            }
            targets.push(idx);
        }
        for idx in targets {
            self.update(idx, |inst| {
                inst.record_task(&request.group, r);
                Ok(())
            })?;
            self.groups
                .entry(request.group.clone())
                .or_default()
                .insert(idx);
        }
        Ok(())
    }

    fn index_of(&self, instance_id: &str) -> Result<u32, ViewError> {
        self.by_id
            .get(instance_id)
            .copied()
            .ok_or_else(|| ViewError::UnknownInstance(instance_id.to_string()))
    }

    /// Changes one instance while keeping the free-resource indexes right.
    fn update(
        &mut self,
        idx: u32,
        change: impl FnOnce(&mut InstanceView) -> Result<(), ViewError>,
    ) -> Result<(), ViewError> {
        let inst = &mut self.instances[idx as usize];
        let active = inst.status == InstanceState::Active;
        let before = inst.capacity.remaining();
        change(inst)?;
        let after = inst.capacity.remaining();
        if active {
            self.free_cpu.remove(&(before.cpu, idx));
            self.free_cpu.insert((after.cpu, idx));
            self.free_memory.remove(&(before.memory_mib, idx));
            self.free_memory.insert((after.memory_mib, idx));
        }
        Ok(())
    }

    pub(crate) fn at(&self, idx: u32) -> &InstanceView {
        &self.instances[idx as usize]
    }

    pub(crate) fn group_members(&self, group: &str) -> Option<&BTreeSet<u32>> {
        self.groups.get(group)
    }

    pub(crate) fn attr_index(&self, name: &str) -> Option<&AttrIndex> {
        self.attrs
            .get_or_init(|| Self::index_attributes(&self.instances))
            .get(name)
    }

    pub(crate) fn free_index(&self, resource: Resource) -> &BTreeSet<(u64, u32)> {
        match resource {
            Resource::Cpu => &self.free_cpu,
            Resource::Memory => &self.free_memory,
        }
    }

    pub(crate) fn status_counts(&self) -> [u32; 4] {
        self.status_counts
    }
}

/// Instance positions are `u32` to keep the per-decision arrays small; a
/// cluster view never holds four billion instances.
pub(crate) fn index_u32(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}
