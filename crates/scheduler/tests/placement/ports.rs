use berth_scheduler::{HostPort, Reservation};

use crate::harness::*;

#[test]
fn host_port_in_use_excludes_the_instance() {
    let h = Harness::new()
        .instances(3, 4096, 8192)
        .running(
            "i-000",
            "other",
            &Reservation::new(0, 0).with_port(HostPort::tcp(8080)),
        )
        .running(
            "i-002",
            "other",
            &Reservation::new(0, 0).with_port(HostPort::tcp(8080)),
        );
    let plan = h.place(&req("web", 0, 0, 1).port(8080).strategy("binpack:memory"));
    assert_eq!(plan.instance_for(0), Some("i-001"));
}

#[test]
fn tasks_of_one_request_do_not_share_a_host_port() {
    let h = Harness::new().instances(2, 4096, 8192);
    let plan = h.place(
        &req("web", 256, 256, 3)
            .port(8080)
            .strategy("binpack:memory"),
    );
    assert_eq!(plan.placements.len(), 2);
    assert_eq!(per_instance(&plan).len(), 2);
    assert_eq!(
        reason(&plan),
        "host port 8080/tcp is in use on every ACTIVE instance that has room (2 checked)"
    );
}

#[test]
fn tcp_and_udp_of_the_same_number_do_not_conflict() {
    let h = Harness::new().instances(1, 4096, 8192).running(
        "i-000",
        "dns",
        &Reservation::new(0, 0).with_port(HostPort::udp(53)),
    );
    let plan = h.place(&req("web", 0, 0, 1).port(53));
    assert!(plan.is_complete());
    let plan = h.place(&req("web", 0, 0, 1).udp_port(53));
    assert_eq!(
        reason(&plan),
        "host port 53/udp is in use on every ACTIVE instance that has room (1 checked)"
    );
}

#[test]
fn port_reason_lists_ports_when_none_blocks_everywhere() {
    let h = Harness::new()
        .instances(2, 4096, 8192)
        .running(
            "i-000",
            "a",
            &Reservation::new(0, 0).with_port(HostPort::tcp(80)),
        )
        .running(
            "i-001",
            "b",
            &Reservation::new(0, 0).with_port(HostPort::tcp(443)),
        );
    let plan = h.place(&req("web", 0, 0, 1).port(80).port(443).port(9000));
    assert_eq!(
        reason(&plan),
        "every ACTIVE instance that has room has one of host ports 80/tcp, 443/tcp in use (2 checked)"
    );
}

#[test]
fn resources_are_checked_before_ports() {
    // i-000 has the port free but no memory; i-001 has memory but the port
    // is taken: the port is what blocks among instances that have room.
    let h = Harness::new()
        .instance("i-000", 4096, 256)
        .instance("i-001", 4096, 8192)
        .running(
            "i-001",
            "x",
            &Reservation::new(0, 0).with_port(HostPort::tcp(8080)),
        );
    let plan = h.place(&req("web", 0, 512, 1).port(8080));
    assert_eq!(
        reason(&plan),
        "host port 8080/tcp is in use on every ACTIVE instance that has room (1 checked)"
    );
}

#[test]
fn binpack_passes_over_the_fullest_instance_when_its_port_is_taken() {
    // b has the least memory free but holds port 8080; c is the next best
    // fit, and a (first in the view) the worst.
    let h = Harness::new()
        .instance("a", 4096, 8192)
        .instance("b", 4096, 8192)
        .running(
            "b",
            "other",
            &Reservation::new(0, 6144).with_port(HostPort::tcp(8080)),
        )
        .instance("c", 4096, 8192)
        .running("c", "other", &Reservation::new(0, 4096));
    let plan = h.place(&req("web", 0, 256, 1).port(8080).strategy("binpack:memory"));
    assert_eq!(plan.instance_for(0), Some("c"));
}
