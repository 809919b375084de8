use berth_scheduler::InstanceState;

use crate::harness::*;

#[test]
fn only_active_instances_receive_tasks() {
    let h = Harness::new()
        .instances(2, 4096, 8192)
        .status(InstanceState::Draining)
        .instances(2, 4096, 8192)
        .status(InstanceState::Disconnected)
        .instances(2, 4096, 8192)
        .status(InstanceState::Inactive)
        .instances(1, 4096, 8192);
    for s in [
        "binpack:memory",
        "binpack:cpu",
        "spread:instanceId",
        "random",
        "spread:attribute:os",
    ] {
        let plan = h.place(&req("web", 128, 128, 20).strategy(s));
        assert_eq!(
            per_instance(&plan).keys().collect::<Vec<_>>(),
            ["i-006"],
            "{s}"
        );
        assert_eq!(plan.placements.len(), 20);
    }
}

#[test]
fn no_active_instance_is_reported_with_the_statuses() {
    let h = Harness::new()
        .instances(2, 4096, 8192)
        .status(InstanceState::Draining)
        .instances(1, 4096, 8192)
        .status(InstanceState::Disconnected);
    let plan = h.place(&req("web", 128, 128, 2));
    assert!(plan.placements.is_empty());
    assert!(!plan.is_complete());
    assert_eq!(plan.unplaced_count(), 2);
    assert_eq!(
        reason(&plan),
        "no ACTIVE container instance to place on (2 DRAINING, 1 DISCONNECTED)"
    );
}

#[test]
fn empty_cluster() {
    let plan = Harness::new().place(&req("web", 128, 128, 3));
    assert_eq!(
        reason(&plan),
        "no container instances are registered in the cluster"
    );
    assert_eq!(plan.unplaced[0].task_indexes, 0..3);
    assert!(!plan.is_complete());
}
