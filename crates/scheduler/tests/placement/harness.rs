//! Builds a cluster view, runs a decision and helps assert on the plan, in
//! the manner of Nomad's scheduler Harness.

use std::collections::BTreeMap;
use std::ops::Range;

use berth_scheduler::{
    place, ClusterView, HostPort, InstanceState, InstanceView, PlacementPlan, PlacementRequest,
    Reservation, Resources,
};

pub const SEED: u64 = 42;

#[derive(Default)]
pub struct Harness {
    instances: Vec<InstanceView>,
    /// The instances the last `instances`/`instance` call added; the
    /// `with_*` and `status` modifiers apply to them.
    batch: Range<usize>,
}

impl Harness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `n` ACTIVE instances `i-000`, `i-001`, ... with `os=linux`,
    /// `arch=amd64` and a `hostname`.
    pub fn instances(mut self, n: usize, cpu: u64, memory_mib: u64) -> Self {
        let first = self.instances.len();
        for k in first..first + n {
            self.instances.push(
                InstanceView::new(
                    format!("i-{k:03}"),
                    InstanceState::Active,
                    Resources::new(cpu, memory_mib),
                )
                .with_attribute("os", "linux")
                .with_attribute("arch", "amd64")
                .with_attribute("hostname", format!("host-{k:03}")),
            );
        }
        self.batch = first..first + n;
        self
    }

    /// Adds one ACTIVE instance with this id and no attributes.
    pub fn instance(mut self, id: &str, cpu: u64, memory_mib: u64) -> Self {
        let first = self.instances.len();
        self.instances.push(InstanceView::new(
            id,
            InstanceState::Active,
            Resources::new(cpu, memory_mib),
        ));
        self.batch = first..first + 1;
        self
    }

    pub fn with_attr(mut self, name: &str, value: &str) -> Self {
        for i in self.batch.clone() {
            self.instances[i]
                .attributes
                .insert(name.to_string(), value.to_string());
        }
        self
    }

    /// Gives the batch's instances `values` in turn.
    pub fn with_attr_cycle(mut self, name: &str, values: &[&str]) -> Self {
        for (k, i) in self.batch.clone().enumerate() {
            self.instances[i]
                .attributes
                .insert(name.to_string(), values[k % values.len()].to_string());
        }
        self
    }

    pub fn status(mut self, status: InstanceState) -> Self {
        for i in self.batch.clone() {
            self.instances[i].status = status;
        }
        self
    }

    /// Records a task of `group` already running on the instance.
    pub fn running(mut self, instance_id: &str, group: &str, reservation: &Reservation) -> Self {
        let inst = self
            .instances
            .iter_mut()
            .find(|i| i.id == instance_id)
            .unwrap_or_else(|| panic!("no instance {instance_id} in the harness"));
        inst.record_task(group, reservation);
        self
    }

    pub fn view(&self) -> ClusterView {
        ClusterView::new(self.instances.clone()).expect("valid view")
    }

    pub fn place(&self, request: &PlacementRequest) -> PlacementPlan {
        self.place_seeded(request, SEED)
    }

    /// Places, then checks what every plan must satisfy whatever the
    /// request: applying it to the view it came from succeeds (nothing
    /// over-committed, ports free, only ACTIVE instances).
    pub fn place_seeded(&self, request: &PlacementRequest, seed: u64) -> PlacementPlan {
        let view = self.view();
        let plan = place(&view, request, seed);
        assert_plan_applies(&view, request, &plan);
        plan
    }
}

pub fn assert_plan_applies(view: &ClusterView, request: &PlacementRequest, plan: &PlacementPlan) {
    let mut after = view.clone();
    after
        .apply(request, plan)
        .unwrap_or_else(|e| panic!("plan does not apply to its own view: {e}"));
    for p in &plan.placements {
        let inst = after
            .instance(&p.instance_id)
            .expect("placed on a known instance");
        assert_eq!(
            inst.status,
            InstanceState::Active,
            "{} is not ACTIVE",
            inst.id
        );
        // Only what the request reserves can have been over-committed by
        // it; an instance may already be over-committed by what runs there.
        let (used, size) = (inst.capacity.allocated(), inst.capacity.registered());
        let r = &request.reservation;
        assert!(
            (r.cpu == 0 || used.cpu <= size.cpu)
                && (r.memory_mib == 0 || used.memory_mib <= size.memory_mib),
            "{} over-committed: {used:?} of {size:?}",
            inst.id
        );
    }
    let placed = plan.placements.len() as u32 + plan.unplaced_count();
    assert_eq!(placed, request.count, "every task is placed or explained");
}

/// A request builder for tests.
pub fn req(group: &str, cpu: u64, memory_mib: u64, count: u32) -> PlacementRequest {
    PlacementRequest::new(group, Reservation::new(cpu, memory_mib), count)
}

pub trait RequestExt {
    fn strategy(self, text: &str) -> Self;
    fn constraint(self, text: &str) -> Self;
    fn port(self, port: u32) -> Self;
    fn udp_port(self, port: u32) -> Self;
}

impl RequestExt for PlacementRequest {
    fn strategy(mut self, text: &str) -> Self {
        self.strategies.push(text.parse().expect("valid strategy"));
        self
    }

    fn constraint(mut self, text: &str) -> Self {
        self.constraints
            .push(text.parse().expect("valid constraint"));
        self
    }

    fn port(mut self, port: u32) -> Self {
        self.reservation = self.reservation.with_port(HostPort::tcp(port));
        self
    }

    fn udp_port(mut self, port: u32) -> Self {
        self.reservation = self.reservation.with_port(HostPort::udp(port));
        self
    }
}

/// Tasks per instance id.
pub fn per_instance(plan: &PlacementPlan) -> BTreeMap<String, u32> {
    let mut m = BTreeMap::new();
    for p in &plan.placements {
        *m.entry(p.instance_id.clone()).or_insert(0) += 1;
    }
    m
}

/// Tasks per value of `attr` (instances without it count as `-`).
pub fn per_attr(h: &Harness, plan: &PlacementPlan, attr: &str) -> BTreeMap<String, u32> {
    let view = h.view();
    let mut m = BTreeMap::new();
    for p in &plan.placements {
        let inst = view
            .instance(&p.instance_id)
            .expect("placed on a known instance");
        let value = inst
            .attributes
            .get(attr)
            .cloned()
            .unwrap_or_else(|| "-".into());
        *m.entry(value).or_insert(0) += 1;
    }
    m
}

pub fn reason(plan: &PlacementPlan) -> String {
    plan.unplaced
        .first()
        .map(|u| u.reason.to_string())
        .unwrap_or_default()
}
