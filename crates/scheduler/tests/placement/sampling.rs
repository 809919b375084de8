//! The bounded sample keeps the first strategy exact and stays
//! deterministic.

use std::collections::BTreeMap;

use berth_scheduler::{place, place_with_limit, Reservation};

use crate::harness::*;

#[test]
fn same_inputs_same_plan() {
    let h = Harness::new()
        .instances(500, 4096, 8192)
        .with_attr_cycle("zone", &["a", "b", "c"]);
    let view = h.view();
    for s in [
        "binpack:memory",
        "spread:attribute:zone",
        "spread:instanceId",
        "random",
    ] {
        let r = req("web", 256, 256, 100).strategy(s);
        assert_eq!(place(&view, &r, 9), place(&view, &r, 9), "{s}");
    }
}

#[test]
fn spread_finds_the_few_empty_instances_in_a_big_cluster() {
    // 995 of 1000 instances already run a task of the group; a sample of 50
    // random instances would usually miss the 5 empty ones, the tiered walk
    // never does.
    let mut h = Harness::new().instances(1000, 4096, 8192);
    let r0 = Reservation::new(0, 0);
    for k in 0..1000 {
        if k % 200 != 7 {
            h = h.running(&format!("i-{k:03}"), "web", &r0);
        }
    }
    for seed in 0..3 {
        let plan = h.place_seeded(&req("web", 0, 0, 5), seed);
        let mut got: Vec<_> = plan
            .placements
            .iter()
            .map(|p| p.instance_id.clone())
            .collect();
        got.sort();
        assert_eq!(got, ["i-007", "i-207", "i-407", "i-607", "i-807"]);
    }
}

#[test]
fn spread_by_instance_balances_a_large_request_exactly() {
    let h = Harness::new().instances(300, 8192, 16384);
    let plan = h.place(&req("web", 64, 64, 900));
    let counts = per_instance(&plan);
    assert_eq!(counts.len(), 300);
    assert!(counts.values().all(|&c| c == 3));
}

#[test]
fn binpack_with_a_tiny_sample_still_packs() {
    let h = Harness::new().instances(200, 1024, 4096);
    let view = h.view();
    let r = req("web", 256, 512, 20).strategy("binpack:cpu");
    let plan = place_with_limit(&view, &r, 5, 2);
    // 4 tasks fill an instance's CPU: 20 tasks use exactly 5 instances.
    assert_eq!(per_instance(&plan).len(), 5);
}

#[test]
fn a_sample_of_one_is_still_correct() {
    let h = Harness::new()
        .instances(50, 1024, 1024)
        .with_attr_cycle("zone", &["a", "b"]);
    let view = h.view();
    for s in [
        "binpack:memory",
        "spread:attribute:zone",
        "spread:instanceId",
        "random",
    ] {
        let r = req("web", 512, 512, 100)
            .strategy(s)
            .constraint("memberOf(attribute:zone == a)");
        let plan = place_with_limit(&view, &r, 1, 1);
        assert_eq!(plan.placements.len(), 50, "{s}");
        assert_eq!(
            per_attr(&h, &plan, "zone"),
            BTreeMap::from([("a".into(), 50)])
        );
        assert_plan_applies(&view, &r, &plan);
    }
}

#[test]
fn sampled_secondary_binpack_stays_close_to_exhaustive() {
    // Zones are exact either way; within a zone the sampled binpack may use
    // a few more instances than ranking every feasible one would.
    let mut h = Harness::new()
        .instances(600, 4096, 8192)
        .with_attr_cycle("zone", &["a", "b", "c"]);
    for k in 0..600 {
        for _ in 0..(k * 7 % 5) {
            h = h.running(&format!("i-{k:03}"), "bg", &Reservation::new(512, 1024));
        }
    }
    let view = h.view();
    let r = req("web", 256, 1024, 300)
        .strategy("spread:attribute:zone")
        .strategy("binpack:memory");
    let sampled = place(&view, &r, 3);
    let exact = place_with_limit(&view, &r, 3, usize::MAX);
    assert_eq!(per_attr(&h, &sampled, "zone"), per_attr(&h, &exact, "zone"));
    let (s, e) = (per_instance(&sampled).len(), per_instance(&exact).len());
    eprintln!("instances used: sampled {s}, exhaustive {e}");
    assert!(s <= e + e / 4 + 3, "sampled {s} vs exhaustive {e}");
}

#[test]
fn random_walks_instances_in_a_shuffled_order_not_a_rotation() {
    // With a sample of one, consecutive tasks take consecutive instances
    // of the walk: they must not simply be neighbours in the view.
    let h = Harness::new().instances(100, 4096, 8192);
    let view = h.view();
    let r = req("web", 0, 0, 10).strategy("random");
    let mut rotations = 0;
    for seed in 0..8 {
        let plan = place_with_limit(&view, &r, seed, 1);
        let index =
            |k: u32| -> usize { plan.instance_for(k).unwrap()[2..].parse().expect("i-NNN") };
        if (1..10).all(|k| index(k) == (index(k - 1) + 1) % 100) {
            rotations += 1;
        }
    }
    assert!(rotations < 2, "{rotations} of 8 seeds walked in id order");
}

#[test]
fn a_sample_of_one_ranks_only_what_the_walk_reaches_not_the_requests_own_instances() {
    // With a single spread strategy the request's own instances are not
    // added to the sample: each task takes the next instance of the walk.
    let r = Reservation::new(0, 0);
    let mut h = Harness::new()
        .instances(4, 4096, 8192)
        .with_attr("zone", "a");
    for id in ["i-001", "i-002", "i-003"] {
        for _ in 0..5 {
            h = h.running(id, "web", &r);
        }
    }
    let view = h.view();
    let request = req("web", 0, 0, 2).strategy("spread:attribute:zone");
    for seed in 0..16 {
        let plan = place_with_limit(&view, &request, seed, 1);
        assert_eq!(per_instance(&plan).len(), 2, "seed {seed}: {plan:?}");
    }
}
