use berth_scheduler::{parse_constraints, Reservation};

use crate::harness::*;

#[test]
fn distinct_instance_puts_one_task_of_the_group_per_instance() {
    let h = Harness::new().instances(3, 4096, 8192);
    let plan = h.place(
        &req("service:web", 256, 256, 5)
            .constraint("distinctInstance")
            .strategy("binpack:memory"),
    );
    assert_eq!(plan.placements.len(), 3);
    assert!(per_instance(&plan).values().all(|&c| c == 1));
    assert_eq!(plan.unplaced[0].task_indexes, 3..5);
    assert_eq!(
        reason(&plan),
        "every ACTIVE instance that matches the constraints already runs a task of group service:web (distinctInstance; 3 checked)"
    );
}

#[test]
fn distinct_instance_counts_running_tasks_of_the_same_group_only() {
    let r = Reservation::new(0, 0);
    let h = Harness::new()
        .instances(3, 4096, 8192)
        .running("i-000", "service:web", &r)
        .running("i-001", "service:db", &r);
    let plan = h.place(&req("service:web", 0, 0, 2).constraint("distinctInstance"));
    let mut got: Vec<_> = plan
        .placements
        .iter()
        .map(|p| p.instance_id.as_str())
        .collect();
    got.sort();
    assert_eq!(got, ["i-001", "i-002"]);
}

#[test]
fn member_of_operators() {
    let h = Harness::new()
        .instances(2, 4096, 8192)
        .with_attr("zone", "a")
        .with_attr("type", "t2.small")
        .instances(2, 4096, 8192)
        .with_attr("zone", "b")
        .with_attr("type", "m5.large")
        .with_attr("gpu", "1")
        .instances(2, 4096, 8192)
        .with_attr("zone", "c")
        .with_attr("type", "t3.micro")
        .with_attr("arch", "arm64");
    let cases: &[(&str, &[&str])] = &[
        ("attribute:zone == b", &["i-002", "i-003"]),
        ("attribute:zone != a", &["i-002", "i-003", "i-004", "i-005"]),
        (
            "attribute:zone in [a, c]",
            &["i-000", "i-001", "i-004", "i-005"],
        ),
        ("attribute:zone not_in [a, c]", &["i-002", "i-003"]),
        ("attribute:zone !in [a, b]", &["i-004", "i-005"]),
        (
            "attribute:type =~ t*",
            &["i-000", "i-001", "i-004", "i-005"],
        ),
        (
            "attribute:type !~ *.large",
            &["i-000", "i-001", "i-004", "i-005"],
        ),
        ("attribute:gpu exists", &["i-002", "i-003"]),
        (
            "attribute:gpu !exists and attribute:arch == amd64",
            &["i-000", "i-001"],
        ),
        ("instanceId == i-004", &["i-004"]),
        ("ec2InstanceId in [i-001, i-005]", &["i-001", "i-005"]),
        (
            "not (attribute:zone == a or attribute:zone == b)",
            &["i-004", "i-005"],
        ),
        (
            "attribute:zone == a and instanceId != i-000 or attribute:gpu exists",
            &["i-001", "i-002", "i-003"],
        ),
    ];
    for (expr, want) in cases {
        let plan = h.place(
            &req("web", 0, 0, 6)
                .constraint(&format!("memberOf({expr})"))
                .constraint("distinctInstance"),
        );
        let mut got: Vec<_> = plan
            .placements
            .iter()
            .map(|p| p.instance_id.as_str())
            .collect();
        got.sort();
        assert_eq!(&got, want, "memberOf({expr})");
    }
}

#[test]
fn member_of_and_distinct_instance_combine_with_other_constraints() {
    let h = Harness::new()
        .instances(4, 4096, 8192)
        .with_attr_cycle("os", &["linux", "windows"]);
    let constraints =
        parse_constraints(&["distinctInstance", "memberOf(attribute:os == linux)"]).unwrap();
    let mut r = req("web", 0, 0, 3);
    r.constraints = constraints;
    let plan = h.place(&r);
    assert_eq!(plan.placements.len(), 2);
    assert_eq!(
        reason(&plan),
        "no ACTIVE instance satisfies all placement constraints: distinctInstance excluded 2, memberOf(attribute:os == linux) excluded 2 (4 checked)"
    );
}

#[test]
fn task_group_affinity_and_anti_affinity() {
    let r = Reservation::new(0, 0);
    let h = Harness::new()
        .instances(4, 4096, 8192)
        .running("i-001", "service:db", &r)
        .running("i-003", "service:db", &r);
    let next_to_db = h.place(&req("web", 0, 0, 4).constraint("memberOf(task:group == service:db)"));
    assert!(next_to_db.is_complete());
    assert!(per_instance(&next_to_db)
        .keys()
        .all(|i| i == "i-001" || i == "i-003"));
    let away = h.place(&req("web", 0, 0, 4).constraint("memberOf(not task:group == service:db)"));
    assert!(per_instance(&away)
        .keys()
        .all(|i| i == "i-000" || i == "i-002"));
}

#[test]
fn task_group_constraints_see_tasks_placed_earlier_in_the_request() {
    // "not next to my own group" behaves like distinctInstance, because the
    // decision re-evaluates task:group after every placement.
    let h = Harness::new().instances(3, 4096, 8192);
    let plan = h.place(
        &req("family:web", 0, 0, 5)
            .strategy("binpack:memory")
            .constraint("memberOf(task:group != family:web)"),
    );
    assert_eq!(plan.placements.len(), 3);
    assert!(per_instance(&plan).values().all(|&c| c == 1));
    assert_eq!(
        reason(&plan),
        "no ACTIVE instance matches memberOf(task:group != family:web) (3 checked)"
    );
}

#[test]
fn constraint_strings_from_the_cli_report_their_errors() {
    let err = parse_constraints(&["distinctInstance", "memberOf(attribute:os == )"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "placement constraint \"memberOf(attribute:os == )\": memberOf expression: expected a value after '==' at column 17, found the end of the expression"
    );
}
