use berth_scheduler::{
    place, reserve, PlacementConflict, PlacementRequest, Reservation, Resources, ViewError,
};
use berth_types::{ContainerDefinition, NetworkMode, PortMapping, Protocol, TaskDefinitionSpec};

use crate::harness::*;

fn web_spec() -> TaskDefinitionSpec {
    let mut app = ContainerDefinition::new("app", "web:1");
    app.cpu = 256;
    app.memory = Some(512);
    app.memory_reservation = Some(256);
    app.port_mappings = vec![PortMapping {
        container_port: 8080,
        host_port: None,
        protocol: Protocol::Tcp,
    }];
    let mut sidecar = ContainerDefinition::new("log", "log:1");
    sidecar.cpu = 128;
    sidecar.memory_reservation = Some(64);
    TaskDefinitionSpec {
        family: "web".into(),
        container_definitions: vec![app, sidecar],
        cpu: None,
        memory: None,
        network_mode: NetworkMode::Host,
        volumes: vec![],
        tags: vec![],
    }
}

#[test]
fn request_from_a_task_definition() {
    let spec = web_spec();
    let r = PlacementRequest::for_task_definition(&spec, None, 2);
    assert_eq!(r.group, "family:web");
    assert_eq!(r.reservation.cpu, 384);
    assert_eq!(r.reservation.memory_mib, 576);
    assert_eq!(r.reservation.ports.len(), 1);
    assert_eq!(
        PlacementRequest::for_task_definition(&spec, Some("service:shop"), 1).group,
        "service:shop"
    );
    let h = Harness::new().instances(2, 1024, 2048);
    let plan = h.place(&r);
    assert!(plan.is_complete());
    assert_eq!(
        per_instance(&plan).len(),
        2,
        "port 8080 forces two instances"
    );
}

#[test]
fn apply_then_remove_returns_to_the_same_numbers() {
    let h = Harness::new().instances(4, 2048, 4096);
    let mut view = h.view();
    let before: Vec<_> = view.instances().to_vec();
    let r = PlacementRequest::new("web", reserve(&web_spec()), 8).strategy("binpack:memory");
    let plan = place(&view, &r, 3);
    // Two per instance would need 8080 twice, so only one per instance fits.
    assert_eq!(plan.placements.len(), 4);
    view.apply(&r, &plan).unwrap();
    for inst in view.instances() {
        assert_eq!(inst.capacity.allocated(), Resources::new(384, 576));
        assert_eq!(
            inst.capacity.remaining(),
            Resources::new(2048 - 384, 4096 - 576)
        );
        assert_eq!(inst.tasks_of_group("web"), 1);
    }
    for p in &plan.placements {
        view.remove_task(&p.instance_id, "web", &r.reservation)
            .unwrap();
    }
    assert_eq!(view.instances(), &before[..]);
    // The indexes came back too: the same decision again gives the same plan.
    assert_eq!(place(&view, &r, 3), plan);
}

#[test]
fn a_request_fills_an_instance_exactly_and_never_beyond() {
    let h = Harness::new().instances(1, 1000, 1000);
    let r = req("web", 300, 100, 10).strategy("binpack:cpu");
    let plan = h.place(&r);
    assert_eq!(plan.placements.len(), 3);
    let mut view = h.view();
    view.apply(&r, &plan).unwrap();
    assert_eq!(
        view.instances()[0].capacity.remaining(),
        Resources::new(100, 700)
    );
}

#[test]
fn tasks_reserving_nothing_fit_anywhere_active() {
    let h = Harness::new()
        .instances(2, 0, 0)
        .running("i-000", "x", &Reservation::new(0, 0));
    let plan = h.place(&req("web", 0, 0, 5));
    assert!(plan.is_complete());
}

#[test]
fn view_refuses_bad_bookkeeping() {
    let h = Harness::new().instances(1, 1024, 1024);
    let mut view = h.view();
    assert_eq!(
        view.add_task("i-404", "web", &Reservation::new(1, 1)),
        Err(ViewError::UnknownInstance("i-404".into()))
    );
    assert!(matches!(
        view.add_task("i-000", "web", &Reservation::new(2048, 1)),
        Err(ViewError::Conflict {
            conflict: PlacementConflict::InsufficientCpu {
                needed: 2048,
                free: 1024
            },
            ..
        })
    ));
    assert!(matches!(
        view.remove_task("i-000", "web", &Reservation::new(1, 1)),
        Err(ViewError::Release { .. })
    ));
    let dup = vec![view.instances()[0].clone(), view.instances()[0].clone()];
    assert_eq!(
        berth_scheduler::ClusterView::new(dup).err(),
        Some(ViewError::DuplicateInstance("i-000".into()))
    );
}

#[test]
fn over_committed_reality_is_shown_and_receives_nothing() {
    // An agent re-registered smaller than what already runs on it.
    let big = Reservation::new(800, 800);
    let h = Harness::new()
        .instances(1, 1024, 1024)
        .running("i-000", "a", &big)
        .running("i-000", "a", &big);
    let view = h.view();
    assert_eq!(view.instances()[0].capacity.remaining(), Resources::ZERO);
    let plan = h.place(&req("web", 1, 0, 1));
    assert_eq!(
        reason(&plan),
        "no instance has 1 free CPU units (at most 0 free; 1 ACTIVE instance)"
    );
}
