use berth_scheduler::{InstanceState, Reservation, Unplaceable};

use crate::harness::*;

#[test]
fn memory_is_the_binding_constraint() {
    let h = Harness::new()
        .instances(3, 4096, 256)
        .instances(1, 4096, 8192)
        .status(InstanceState::Draining);
    let plan = h.place(&req("web", 256, 512, 1));
    assert_eq!(
        reason(&plan),
        "no instance has 512 MiB free memory (at most 256 MiB free; 3 ACTIVE instances, 1 DRAINING)"
    );
    assert!(matches!(
        plan.unplaced[0].reason,
        Unplaceable::Resources {
            memory_needed: 512,
            lacking_memory: 3,
            lacking_cpu: 0,
            ..
        }
    ));
}

#[test]
fn cpu_is_the_binding_constraint() {
    let h = Harness::new().instances(2, 512, 8192);
    let plan = h.place(&req("web", 1024, 512, 1));
    assert_eq!(
        reason(&plan),
        "no instance has 1024 free CPU units (at most 512 free; 2 ACTIVE instances)"
    );
}

#[test]
fn both_resources_lacking_everywhere() {
    let h = Harness::new().instances(1, 512, 256);
    let plan = h.place(&req("web", 1024, 512, 1));
    assert_eq!(
        reason(&plan),
        "no instance has 1024 CPU units and 512 MiB memory free (at most 512 CPU units and 256 MiB free; 1 ACTIVE instance)"
    );
}

#[test]
fn each_instance_lacks_something_different() {
    let h = Harness::new()
        .instance("cpu-poor", 512, 8192)
        .instance("mem-poor", 4096, 256);
    let plan = h.place(&req("web", 1024, 512, 1));
    assert_eq!(
        reason(&plan),
        "no instance has both 1024 CPU units and 512 MiB memory free (1 lack CPU, 1 lack memory; 2 ACTIVE instances)"
    );
}

#[test]
fn resource_reason_mentions_how_many_passed_the_constraints() {
    let h = Harness::new()
        .instances(3, 4096, 256)
        .with_attr("zone", "a")
        .instances(2, 4096, 8192)
        .with_attr("zone", "b");
    let plan = h.place(&req("web", 0, 512, 1).constraint("memberOf(attribute:zone == a)"));
    assert_eq!(
        reason(&plan),
        "no instance has 512 MiB free memory (at most 256 MiB free; 5 ACTIVE instances (3 satisfy the placement constraints))"
    );
}

#[test]
fn member_of_is_the_binding_constraint() {
    let h = Harness::new()
        .instances(4, 4096, 8192)
        .with_attr("zone", "a")
        .instances(1, 4096, 8192)
        .with_attr("zone", "b")
        .status(InstanceState::Draining);
    let plan = h.place(&req("web", 0, 0, 1).constraint("memberOf(attribute:zone == b)"));
    assert_eq!(
        reason(&plan),
        "no ACTIVE instance matches memberOf(attribute:zone == b) (4 checked)"
    );
}

#[test]
fn later_tasks_of_a_request_get_the_same_reason_as_the_first_failure() {
    let h = Harness::new().instances(2, 1024, 1024);
    let plan = h.place(&req("web", 512, 512, 7).strategy("binpack:cpu"));
    assert_eq!(plan.placements.len(), 4);
    assert_eq!(plan.unplaced.len(), 1);
    assert_eq!(plan.unplaced[0].task_indexes, 4..7);
    assert_eq!(plan.unplaced_count(), 3);
    for t in 4..7 {
        assert_eq!(
            plan.reason_for(t).map(ToString::to_string).as_deref(),
            Some("no instance has 512 CPU units and 512 MiB memory free (at most 0 CPU units and 0 MiB free; 2 ACTIVE instances)")
        );
    }
    assert_eq!(plan.reason_for(0), None);
}

#[test]
fn reasons_serialize_for_the_api() {
    let h =
        Harness::new()
            .instances(1, 4096, 8192)
            .running("i-000", "x", &Reservation::new(4096, 0));
    let plan = h.place(&req("web", 1, 0, 1));
    let json = serde_json::to_string(&plan).unwrap();
    let back: berth_scheduler::PlacementPlan = serde_json::from_str(&json).unwrap();
    assert_eq!(back, plan);
}

#[test]
fn every_filter_says_how_many_instances_it_ruled_out() {
    // 1 DRAINING; 2 in zone b (the constraint wants a); in zone a: 1 short of
    // memory, 1 short of CPU and memory, 1 with the host port taken.
    let port = berth_scheduler::HostPort::tcp(8080);
    let mut web = Reservation::new(256, 512);
    web.ports = vec![port];
    let h = Harness::new()
        .instances(1, 4096, 4096)
        .status(InstanceState::Draining)
        .instances(2, 4096, 4096)
        .with_attr("zone", "b")
        .instances(1, 4096, 256)
        .with_attr("zone", "a")
        .instances(1, 128, 256)
        .with_attr("zone", "a")
        .instances(1, 4096, 4096)
        .with_attr("zone", "a")
        .running("i-005", "other", &web);
    let mut request = req("web", 256, 512, 1).constraint("memberOf(attribute:zone == a)");
    request.reservation.ports = vec![port];
    let plan = h.place(&request);
    let filtered = &plan.unplaced[0].filtered;
    assert_eq!(filtered.not_active, 1);
    assert_eq!(filtered.constraints[0].instances, 2);
    assert_eq!((filtered.memory, filtered.cpu, filtered.ports), (2, 1, 1));
    assert_eq!(
        filtered.to_string(),
        "instances filtered out: 1 not ACTIVE, 2 by memberOf(attribute:zone == a), 2 lacking memory, 1 lacking CPU, 1 with a needed host port in use"
    );
    // Placeable requests carry no breakdown.
    assert!(h.place(&req("web", 0, 0, 1)).unplaced.is_empty());
}

#[test]
fn distinct_instance_excludes_only_instances_running_the_group() {
    // x runs a task of the group; y lacks memory: memory is the reason, and
    // only one instance passed the constraints.
    let h = Harness::new()
        .instance("x", 4096, 8192)
        .running("x", "web", &berth_scheduler::Reservation::new(0, 0))
        .instance("y", 4096, 512);
    let plan = h.place(&req("web", 0, 1024, 1).constraint("distinctInstance"));
    assert_eq!(
        reason(&plan),
        "no instance has 1024 MiB free memory (at most 512 MiB free; 2 ACTIVE instances (1 satisfies the placement constraints))"
    );
}

#[test]
fn a_constraint_that_excluded_nothing_is_not_named_in_the_reason() {
    let h = Harness::new()
        .instances(3, 4096, 8192)
        .with_attr("zone", "a");
    let plan = h.place(
        &req("web", 0, 0, 1)
            .constraint("distinctInstance")
            .constraint("memberOf(attribute:zone == b)"),
    );
    assert_eq!(
        reason(&plan),
        "no ACTIVE instance matches memberOf(attribute:zone == b) (3 checked)"
    );
}

#[test]
fn an_exact_cpu_fit_is_not_reported_as_lacking_cpu() {
    // The instance has exactly the CPU the task needs; memory is short.
    let h = Harness::new().instance("i-000", 1024, 512);
    let plan = h.place(&req("web", 1024, 1024, 1));
    assert_eq!(
        reason(&plan),
        "no instance has 1024 MiB free memory (at most 512 MiB free; 1 ACTIVE instance)"
    );
}
