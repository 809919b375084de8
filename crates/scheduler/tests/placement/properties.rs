//! Randomised checks over many small clusters and requests: every plan
//! applies, and a task is left unplaced only when, by brute force, no
//! instance could take it.

use berth_scheduler::{
    check_placement, place, place_with_limit, Constraint, HostPort, InstanceState, Reservation,
};

use crate::harness::*;

/// Small deterministic generator so the cases are reproducible.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const STRATEGIES: [&str; 6] = [
    "binpack:cpu",
    "binpack:memory",
    "spread:instanceId",
    "spread:attribute:zone",
    "spread:attribute:rack",
    "random",
];
const CONSTRAINTS: [&str; 5] = [
    "distinctInstance",
    "memberOf(attribute:zone in [a, b])",
    "memberOf(not attribute:gpu exists)",
    "memberOf(task:group != g1)",
    "memberOf(attribute:zone == c or task:group == g2)",
];

#[test]
fn unplaced_tasks_really_have_nowhere_to_go() {
    let mut g = Gen(7);
    for case in 0..300u64 {
        let n = 1 + g.below(25) as usize;
        let mut h = Harness::new().instances(n, 1024 * (1 + g.below(4)), 1024 * (1 + g.below(8)));
        h = h.with_attr_cycle("zone", &["a", "b", "c"]);
        let mut view_instances = h.view().instances().to_vec();
        for inst in &mut view_instances {
            if g.below(4) == 0 {
                inst.attributes.insert("gpu".into(), "1".into());
            }
            if g.below(3) == 0 {
                inst.attributes
                    .insert("rack".into(), format!("r{}", g.below(3)));
            }
            inst.status = match g.below(10) {
                0 => InstanceState::Draining,
                1 => InstanceState::Disconnected,
                _ => InstanceState::Active,
            };
            for _ in 0..g.below(4) {
                let mut r = Reservation::new(128 * g.below(4), 256 * g.below(4));
                if g.below(5) == 0 {
                    r = r.with_port(HostPort::tcp(8000 + g.below(3) as u32));
                }
                inst.record_task(&format!("g{}", g.below(3)), &r);
            }
        }
        let view = berth_scheduler::ClusterView::new(view_instances).unwrap();

        let mut r = req(
            &format!("g{}", g.below(3)),
            128 * g.below(6),
            256 * g.below(6),
            1 + g.below(12) as u32,
        );
        for _ in 0..g.below(3) {
            r = r.strategy(STRATEGIES[g.below(6) as usize]);
        }
        for _ in 0..g.below(3) {
            r = r.constraint(CONSTRAINTS[g.below(5) as usize]);
        }
        if g.below(3) == 0 {
            r = r.port(8000 + g.below(3) as u32);
        }
        let limit = [1, 2, 50, usize::MAX][g.below(4) as usize];
        let plan = place_with_limit(&view, &r, case, limit);
        assert_plan_applies(&view, &r, &plan);
        assert_eq!(
            plan,
            place_with_limit(&view, &r, case, limit),
            "deterministic"
        );

        if plan.is_complete() {
            continue;
        }
        let mut after = view.clone();
        after.apply(&r, &plan).unwrap();
        let feasible: Vec<&str> = after
            .instances()
            .iter()
            .filter(|inst| check_placement(inst, &r.reservation).is_ok())
            .filter(|inst| {
                r.constraints.iter().all(|c| match c {
                    Constraint::DistinctInstance => inst.tasks_of_group(&r.group) == 0,
                    Constraint::MemberOf(m) => m.expression.matches(inst),
                })
            })
            .map(|inst| inst.id.as_str())
            .collect();
        assert!(
            feasible.is_empty(),
            "case {case}: unplaced ({}) but {feasible:?} could take it; request {r:?}",
            plan.unplaced[0].reason
        );
    }
}

#[test]
fn plans_from_the_default_limit_apply_in_sequence() {
    let mut g = Gen(11);
    let mut view = Harness::new()
        .instances(60, 2048, 4096)
        .with_attr_cycle("zone", &["a", "b", "c"])
        .view();
    for k in 0..150u64 {
        let mut r = req(
            &format!("g{}", g.below(5)),
            128 * g.below(4),
            256 * g.below(4),
            1 + g.below(8) as u32,
        )
        .strategy(STRATEGIES[g.below(6) as usize]);
        if g.below(2) == 0 {
            r = r.constraint(CONSTRAINTS[g.below(5) as usize]);
        }
        let plan = place(&view, &r, k);
        view.apply(&r, &plan).unwrap();
    }
}
