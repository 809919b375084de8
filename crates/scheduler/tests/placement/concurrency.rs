//! The state machine re-checks every placement when it applies it, so two
//! decisions made from the same (stale) view can never over-commit.

use berth_scheduler::{check_placement, place, PlacementConflict, Reservation, ViewError};

use crate::harness::*;

#[test]
fn two_decisions_from_one_stale_view_cannot_both_apply() {
    // Room for one 768 MiB task only.
    let h = Harness::new().instances(1, 4096, 1024);
    let stale = h.view();
    let a = req("service:a", 256, 768, 1);
    let b = req("service:b", 256, 768, 1);
    let plan_a = place(&stale, &a, 1);
    let plan_b = place(&stale, &b, 2);
    assert_eq!(plan_a.instance_for(0), Some("i-000"));
    assert_eq!(plan_b.instance_for(0), Some("i-000"));

    // The authoritative record, as the state machine holds it.
    let mut record = stale.instances()[0].clone();
    assert_eq!(check_placement(&record, &a.reservation), Ok(()));
    record.capacity.allocate(&a.reservation).unwrap();
    record.task_groups.insert(a.group.clone(), 1);
    assert_eq!(
        check_placement(&record, &b.reservation),
        Err(PlacementConflict::InsufficientMemory {
            needed: 768,
            free: 256
        })
    );
    assert!(record.capacity.allocate(&b.reservation).is_err());
    assert_eq!(record.capacity.allocated().memory_mib, 768);

    // The same through the view the leader keeps between decisions.
    let mut view = stale.clone();
    view.apply(&a, &plan_a).unwrap();
    assert!(matches!(
        view.apply(&b, &plan_b),
        Err(ViewError::PlanConflict {
            task_index: 0,
            conflict: PlacementConflict::InsufficientMemory { .. },
            ..
        })
    ));
    assert_eq!(view.instances()[0].capacity.allocated().memory_mib, 768);
}

#[test]
fn stale_port_decisions_conflict_too() {
    let h = Harness::new().instances(1, 4096, 8192);
    let stale = h.view();
    let a = req("a", 0, 0, 1).port(443);
    let b = req("b", 0, 0, 1).port(443);
    let (plan_a, plan_b) = (place(&stale, &a, 1), place(&stale, &b, 1));
    let mut view = stale.clone();
    view.apply(&a, &plan_a).unwrap();
    assert!(matches!(
        view.apply(&b, &plan_b),
        Err(ViewError::PlanConflict {
            conflict: PlacementConflict::PortInUse { .. },
            ..
        })
    ));
}

#[test]
fn a_placement_on_an_instance_that_started_draining_is_refused() {
    let h = Harness::new().instances(1, 4096, 8192);
    let view = h.view();
    let r = req("a", 1, 1, 1);
    let plan = place(&view, &r, 1);
    let mut record = view.instances()[0].clone();
    record.status = berth_scheduler::InstanceState::Draining;
    assert!(matches!(
        check_placement(&record, &Reservation::new(1, 1)),
        Err(PlacementConflict::NotActive { .. })
    ));
    assert_eq!(plan.placements.len(), 1);
}

#[test]
fn decisions_applied_in_turn_never_over_commit() {
    // Many requests, each decided from the view updated by the ones before
    // (the leader's loop); every plan must apply cleanly.
    let h = Harness::new()
        .instances(40, 2048, 4096)
        .with_attr_cycle("zone", &["a", "b", "c"]);
    let mut view = h.view();
    let strategies = [
        "binpack:memory",
        "binpack:cpu",
        "spread:instanceId",
        "spread:attribute:zone",
        "random",
    ];
    let mut placed = 0;
    for k in 0..200u64 {
        let mut r = req(
            &format!("g{}", k % 7),
            128 * (1 + k % 4),
            256 * (1 + k % 3),
            1 + (k % 5) as u32,
        )
        .strategy(strategies[(k % 5) as usize]);
        if k % 3 == 0 {
            r = r.constraint("distinctInstance");
        }
        if k % 11 == 0 {
            r = r.port(9000 + (k % 4) as u32);
        }
        let plan = place(&view, &r, k);
        placed += plan.placements.len();
        view.apply(&r, &plan).unwrap();
    }
    assert!(placed > 100);
    for inst in view.instances() {
        let (used, size) = (inst.capacity.allocated(), inst.capacity.registered());
        assert!(used.cpu <= size.cpu && used.memory_mib <= size.memory_mib);
    }
}

#[test]
fn applying_a_plan_is_all_or_nothing() {
    // Room for three tasks; a stale plan for four must change nothing.
    let h = Harness::new().instances(2, 1024, 1024);
    let stale = h.view();
    let r = req("web", 512, 512, 4).strategy("binpack:cpu");
    let plan = place(&stale, &r, 1);
    assert_eq!(plan.placements.len(), 4);
    let mut view = stale.clone();
    view.add_task("i-001", "other", &Reservation::new(512, 512))
        .unwrap();
    let before = view.instances().to_vec();
    let err = view.apply(&r, &plan).unwrap_err();
    assert!(matches!(err, ViewError::PlanConflict { .. }), "{err}");
    assert_eq!(view.instances(), &before[..]);
    assert_eq!(
        err.to_string(),
        format!(
            "task {} of the plan, on instance i-001: needs 512 CPU units but only 0 are free",
            plan.placements
                .iter()
                .filter(|p| p.instance_id == "i-001")
                .nth(1)
                .map(|p| p.task_index)
                .unwrap()
        )
    );
}
