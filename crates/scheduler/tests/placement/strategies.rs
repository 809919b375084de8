use std::collections::BTreeMap;

use berth_scheduler::{place, place_with_limit, Reservation};

use crate::harness::*;

#[test]
fn binpack_memory_fills_the_fullest_instance_first() {
    let small = Reservation::new(0, 1024);
    let h = Harness::new()
        .instances(4, 4096, 8192)
        .running("i-002", "other", &small)
        .running("i-002", "other", &small);
    // i-002 has the least memory free, so it takes tasks until it is full.
    let plan = h.place(&req("web", 0, 1024, 8).strategy("binpack:memory"));
    let counts = per_instance(&plan);
    assert_eq!(counts.get("i-002"), Some(&6));
    assert_eq!(counts.values().sum::<u32>(), 8);
    assert_eq!(
        counts.len(),
        2,
        "the overflow goes to one more instance: {counts:?}"
    );
}

#[test]
fn binpack_cpu_uses_cpu_not_memory() {
    let h = Harness::new()
        .instance("big-mem-free", 2048, 16384)
        .instance("little-cpu-free", 1024, 1024)
        .instance("lots-free", 8192, 16384);
    let plan = h.place(&req("web", 512, 256, 1).strategy("binpack:cpu"));
    assert_eq!(plan.instance_for(0), Some("little-cpu-free"));
    let plan = h.place(&req("web", 512, 256, 1).strategy("binpack:memory"));
    assert_eq!(plan.instance_for(0), Some("little-cpu-free"));
    let plan = h.place(&req("web", 512, 2048, 1).strategy("binpack:memory"));
    assert_eq!(plan.instance_for(0), Some("big-mem-free"));
}

#[test]
fn binpack_finds_the_one_partly_used_instance_among_thousands() {
    // Binpack is the first strategy, so the walk goes in its order and the
    // sample cannot miss the best fit, however large the cluster.
    let h = Harness::new().instances(3000, 4096, 8192).running(
        "i-2718",
        "other",
        &Reservation::new(1024, 4096),
    );
    for seed in 0..5 {
        let plan = h.place_seeded(&req("web", 256, 512, 3).strategy("binpack:memory"), seed);
        assert_eq!(
            per_instance(&plan),
            BTreeMap::from([("i-2718".to_string(), 3)])
        );
    }
}

#[test]
fn spread_instance_id_balances_within_the_request() {
    let h = Harness::new().instances(5, 4096, 8192);
    let plan = h.place(&req("web", 256, 256, 10).strategy("spread:instanceId"));
    let counts = per_instance(&plan);
    assert_eq!(counts.len(), 5);
    assert!(counts.values().all(|&c| c == 2), "{counts:?}");
}

#[test]
fn default_strategy_is_spread_instance_id() {
    let h = Harness::new()
        .instances(4, 4096, 8192)
        .running("i-000", "web", &Reservation::new(256, 256))
        .running("i-001", "web", &Reservation::new(256, 256));
    let plan = h.place(&req("web", 256, 256, 2));
    let mut got: Vec<_> = plan
        .placements
        .iter()
        .map(|p| p.instance_id.as_str())
        .collect();
    got.sort();
    assert_eq!(got, ["i-002", "i-003"]);
}

#[test]
fn spread_counts_only_the_requests_group() {
    let other = Reservation::new(0, 0);
    let h = Harness::new()
        .instances(2, 4096, 8192)
        .running("i-000", "service:db", &other)
        .running("i-000", "service:db", &other)
        .running("i-001", "service:web", &other);
    let plan = h.place(&req("service:web", 0, 0, 1).strategy("spread:instanceId"));
    assert_eq!(plan.instance_for(0), Some("i-000"));
}

#[test]
fn spread_attribute_balances_values_not_instances() {
    // Zone c has one instance and zone a has 200; spread is per zone, so c
    // still gets a third of the tasks.
    let h = Harness::new()
        .instances(200, 8192, 16384)
        .with_attr("zone", "a")
        .instances(20, 8192, 16384)
        .with_attr("zone", "b")
        .instances(1, 8192, 16384)
        .with_attr("zone", "c");
    let plan = h.place(&req("web", 256, 256, 9).strategy("spread:attribute:zone"));
    let zones = per_attr(&h, &plan, "zone");
    assert_eq!(
        zones,
        BTreeMap::from([("a".into(), 3), ("b".into(), 3), ("c".into(), 3)])
    );
}

#[test]
fn spread_attribute_accounts_for_running_tasks() {
    let r = Reservation::new(0, 0);
    let h = Harness::new()
        .instances(6, 4096, 8192)
        .with_attr_cycle("zone", &["a", "b", "c"])
        .running("i-000", "web", &r)
        .running("i-003", "web", &r)
        .running("i-001", "web", &r);
    // a has 2, b has 1, c has 0: the next three go c, then b and c.
    let plan = h.place(&req("web", 0, 0, 3).strategy("spread:attribute:zone"));
    let zones = per_attr(&h, &plan, "zone");
    assert_eq!(zones, BTreeMap::from([("b".into(), 1), ("c".into(), 2)]));
}

#[test]
fn instances_without_the_attribute_form_their_own_bucket() {
    let h = Harness::new()
        .instances(2, 4096, 8192)
        .with_attr("zone", "a")
        .instances(2, 4096, 8192);
    let plan = h.place(&req("web", 0, 0, 4).strategy("spread:attribute:zone"));
    let zones = per_attr(&h, &plan, "zone");
    assert_eq!(zones, BTreeMap::from([("-".into(), 2), ("a".into(), 2)]));
    // An attribute nobody has does not stop placement.
    let plan = h.place(&req("web", 0, 0, 4).strategy("spread:attribute:rack"));
    assert!(plan.is_complete());
}

#[test]
fn spread_zone_then_binpack_memory_packs_inside_each_zone() {
    let h = Harness::new()
        .instances(30, 4096, 8192)
        .with_attr_cycle("zone", &["a", "b", "c"]);
    let plan = h.place(
        &req("web", 256, 1024, 12)
            .strategy("spread:attribute:zone")
            .strategy("binpack:memory"),
    );
    let zones = per_attr(&h, &plan, "zone");
    assert!(zones.values().all(|&c| c == 4), "{zones:?}");
    // Within a zone the second strategy keeps filling one instance.
    let counts = per_instance(&plan);
    assert_eq!(counts.len(), 3, "{counts:?}");
}

#[test]
fn binpack_then_spread_differs_from_spread_then_binpack() {
    let h = Harness::new()
        .instances(2, 4096, 8192)
        .with_attr("zone", "a")
        .instances(1, 4096, 8192)
        .with_attr("zone", "b");
    let packed = h.place(
        &req("web", 256, 1024, 4)
            .strategy("binpack:memory")
            .strategy("spread:attribute:zone"),
    );
    assert_eq!(per_instance(&packed).len(), 1);
    let spread = h.place(
        &req("web", 256, 1024, 4)
            .strategy("spread:attribute:zone")
            .strategy("binpack:memory"),
    );
    assert_eq!(
        per_attr(&h, &spread, "zone"),
        BTreeMap::from([("a".into(), 2), ("b".into(), 2)])
    );
}

#[test]
fn binpack_ties_are_broken_by_the_next_strategy() {
    let h = Harness::new()
        .instances(3, 4096, 8192)
        .with_attr_cycle("zone", &["a", "b", "c"])
        .running("i-000", "web", &Reservation::new(0, 0));
    // All three have the same free memory; the zone spread picks b or c.
    let plan = h.place(
        &req("web", 0, 0, 1)
            .strategy("binpack:memory")
            .strategy("spread:attribute:zone"),
    );
    assert_ne!(plan.instance_for(0), Some("i-000"));
}

#[test]
fn random_is_deterministic_per_seed_and_uses_many_instances() {
    let h = Harness::new().instances(50, 4096, 8192);
    let r = req("web", 0, 0, 40).strategy("random");
    let view = h.view();
    let a = place(&view, &r, 7);
    let b = place(&view, &r, 7);
    let c = place(&view, &r, 8);
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert!(per_instance(&a).len() > 15, "{:?}", per_instance(&a));
}

#[test]
fn every_strategy_places_everything_when_there_is_room() {
    let h = Harness::new()
        .instances(10, 4096, 8192)
        .with_attr_cycle("zone", &["a", "b"]);
    for s in [
        "binpack:cpu",
        "binpack:memory",
        "spread:instanceId",
        "spread:attribute:zone",
        "random",
    ] {
        let plan = h.place(&req("web", 512, 1024, 40).strategy(s));
        assert!(plan.is_complete(), "{s}: {}", reason(&plan));
        assert_eq!(plan.placements.len(), 40);
    }
}

#[test]
fn exhaustive_and_sampled_agree_on_the_first_strategy() {
    let h = Harness::new()
        .instances(400, 4096, 8192)
        .with_attr_cycle("zone", &["a", "b", "c", "d"]);
    let view = h.view();
    let r = req("web", 256, 512, 60)
        .strategy("spread:attribute:zone")
        .strategy("binpack:cpu");
    let sampled = place_with_limit(&view, &r, 1, 5);
    let exact = place_with_limit(&view, &r, 1, usize::MAX);
    assert_eq!(per_attr(&h, &sampled, "zone"), per_attr(&h, &exact, "zone"));
}

#[test]
fn spread_attribute_also_spreads_inside_each_value() {
    // Two zones of three instances: six tasks, one per instance, since
    // within a zone the instance with the fewest tasks of the group wins.
    let h = Harness::new()
        .instances(6, 4096, 8192)
        .with_attr_cycle("zone", &["a", "b"]);
    for seed in 0..4 {
        let plan = h.place_seeded(&req("web", 0, 0, 6).strategy("spread:attribute:zone"), seed);
        let counts = per_instance(&plan);
        assert_eq!(counts.len(), 6, "seed {seed}: {counts:?}");
    }
}

#[test]
fn ties_between_spread_values_are_broken_by_a_seeded_rotation() {
    // Every zone has one task: which zone takes the next one depends on the
    // seed, not on the order of the zones.
    let r = Reservation::new(0, 0);
    let h = Harness::new()
        .instances(6, 4096, 8192)
        .with_attr_cycle("zone", &["a", "b", "c"])
        .running("i-000", "web", &r)
        .running("i-001", "web", &r)
        .running("i-002", "web", &r);
    let mut zones = std::collections::BTreeSet::new();
    for seed in 0..12 {
        let plan = h.place_seeded(&req("web", 0, 0, 1).strategy("spread:attribute:zone"), seed);
        let zone = per_attr(&h, &plan, "zone").into_keys().next().unwrap();
        // The instance of that zone without a task of the group.
        assert!(
            ["i-003", "i-004", "i-005"].contains(&plan.instance_for(0).unwrap()),
            "{plan:?}"
        );
        zones.insert(zone);
    }
    assert!(zones.len() > 1, "always zone {zones:?}");
}

#[test]
fn a_second_spread_breaks_the_ties_of_the_first() {
    // Rack r2 has no task of the group, so it wins; inside it, zone b has
    // none either while zone a has one (on i-000, in rack r1).
    let h = Harness::new()
        .instance("i-000", 4096, 8192)
        .with_attr("rack", "r1")
        .with_attr("zone", "a")
        .instance("i-001", 4096, 8192)
        .with_attr("rack", "r2")
        .with_attr("zone", "a")
        .instance("i-002", 4096, 8192)
        .with_attr("rack", "r2")
        .with_attr("zone", "b")
        .running("i-000", "web", &Reservation::new(0, 0));
    for seed in 0..8 {
        let plan = h.place_seeded(
            &req("web", 0, 0, 1)
                .strategy("spread:attribute:rack")
                .strategy("spread:attribute:zone"),
            seed,
        );
        assert_eq!(plan.instance_for(0), Some("i-002"), "seed {seed}");
    }
}

#[test]
fn distinct_instance_and_host_ports_still_rank_by_the_strategy() {
    // "snug" has less memory free: binpack prefers it, whatever else the
    // request asks for.
    let h = Harness::new()
        .instance("roomy", 4096, 8192)
        .instance("snug", 4096, 8192)
        .running("snug", "other", &Reservation::new(0, 4096));
    let distinct = req("web", 0, 256, 1)
        .constraint("distinctInstance")
        .strategy("binpack:memory");
    assert_eq!(h.place(&distinct).instance_for(0), Some("snug"));
    let ported = req("web", 0, 256, 1).port(8080).strategy("binpack:memory");
    assert_eq!(h.place(&ported).instance_for(0), Some("snug"));
}

#[test]
fn the_sample_limit_bounds_what_later_strategies_rank() {
    // One zone of ten instances, one of them partly used. Ranking every
    // instance, the secondary binpack always finds it; a sample of one is
    // just the first instance the zone walk reaches.
    let h = Harness::new()
        .instances(10, 4096, 8192)
        .with_attr("zone", "a")
        .running("i-007", "other", &Reservation::new(0, 4096));
    let view = h.view();
    let r = req("web", 0, 256, 1)
        .strategy("spread:attribute:zone")
        .strategy("binpack:memory");
    let mut best_fit = 0;
    for seed in 0..10 {
        let all = place_with_limit(&view, &r, seed, usize::MAX);
        assert_eq!(all.instance_for(0), Some("i-007"), "seed {seed}");
        let one = place_with_limit(&view, &r, seed, 1);
        if one.instance_for(0) == Some("i-007") {
            best_fit += 1;
        }
    }
    assert!(best_fit < 10, "a sample of one ranked every instance");
}

#[test]
fn binpack_keeps_a_tied_best_fit_for_the_next_task() {
    // a and c tie as the best fit and each takes one task; b, empty, none.
    let half = Reservation::new(0, 4096);
    let h = Harness::new()
        .instance("a", 4096, 8192)
        .running("a", "other", &half)
        .instance("b", 4096, 8192)
        .instance("c", 4096, 8192)
        .running("c", "other", &half);
    let plan = h.place(&req("web", 0, 4096, 2).strategy("binpack:memory"));
    assert_eq!(
        per_instance(&plan),
        BTreeMap::from([("a".to_string(), 1), ("c".to_string(), 1)])
    );
}

#[test]
fn spread_inside_a_value_prefers_instances_with_fewer_tasks_of_the_group() {
    let r = Reservation::new(0, 0);
    let h = Harness::new()
        .instances(3, 4096, 8192)
        .with_attr("zone", "a")
        .running("i-000", "web", &r)
        .running("i-000", "web", &r);
    for seed in 0..8 {
        let plan = h.place_seeded(&req("web", 0, 0, 2).strategy("spread:attribute:zone"), seed);
        assert_eq!(
            per_instance(&plan),
            BTreeMap::from([("i-001".to_string(), 1), ("i-002".to_string(), 1)]),
            "seed {seed}"
        );
    }
}

#[test]
fn spread_moves_to_the_next_value_when_the_emptiest_is_full() {
    // Zone a has the fewest tasks but no memory left: zone b (2 tasks) is
    // next, not zone c (3 tasks), whatever the order of the instances.
    let r = Reservation::new(0, 0);
    let h = Harness::new()
        .instance("c-1", 4096, 8192)
        .with_attr("zone", "c")
        .running("c-1", "web", &r)
        .running("c-1", "web", &r)
        .running("c-1", "web", &r)
        .instance("a-1", 4096, 256)
        .with_attr("zone", "a")
        .running("a-1", "web", &Reservation::new(0, 256))
        .instance("b-1", 4096, 8192)
        .with_attr("zone", "b")
        .running("b-1", "web", &r)
        .running("b-1", "web", &r);
    for seed in 0..4 {
        let plan = h.place_seeded(
            &req("web", 0, 256, 1).strategy("spread:attribute:zone"),
            seed,
        );
        assert_eq!(plan.instance_for(0), Some("b-1"), "seed {seed}");
    }
}

#[test]
fn values_that_tie_are_ranked_together_by_tasks_on_the_instance() {
    // Zones a and b both have two tasks; a's are on one instance, b's on
    // two. The next task goes to a b instance, whichever zone the seeded
    // rotation walks first.
    let r = Reservation::new(0, 0);
    let h = Harness::new()
        .instance("a-1", 4096, 8192)
        .with_attr("zone", "a")
        .running("a-1", "web", &r)
        .running("a-1", "web", &r)
        .instance("b-1", 4096, 8192)
        .with_attr("zone", "b")
        .running("b-1", "web", &r)
        .instance("b-2", 4096, 8192)
        .with_attr("zone", "b")
        .running("b-2", "web", &r);
    for seed in 0..12 {
        let plan = h.place_seeded(&req("web", 0, 0, 1).strategy("spread:attribute:zone"), seed);
        assert_ne!(plan.instance_for(0), Some("a-1"), "seed {seed}");
    }
}

#[test]
fn a_secondary_binpack_keeps_filling_its_instance_in_a_large_value() {
    // 120 instances in one zone: more than one sample. The request's own
    // instance is ranked with each new sample, so it keeps being filled.
    let h = Harness::new()
        .instances(120, 4096, 8192)
        .with_attr("zone", "a");
    for seed in 0..3 {
        let plan = h.place_seeded(
            &req("web", 0, 1024, 4)
                .strategy("spread:attribute:zone")
                .strategy("binpack:memory"),
            seed,
        );
        assert_eq!(per_instance(&plan).len(), 1, "seed {seed}");
    }
}

#[test]
fn a_sample_of_one_walks_round_the_instances_of_a_value() {
    let h = Harness::new()
        .instances(4, 4096, 8192)
        .with_attr("zone", "a");
    let view = h.view();
    let r = req("web", 0, 0, 4).strategy("spread:attribute:zone");
    for seed in 0..4 {
        let plan = place_with_limit(&view, &r, seed, 1);
        assert_eq!(per_instance(&plan).len(), 4, "seed {seed}: {plan:?}");
    }
}

#[test]
fn binpack_memory_packs_tasks_that_reserve_no_memory_onto_a_full_instance() {
    // "full" has no memory left, which a task reserving none still fits.
    let h = Harness::new()
        .instance("full", 4096, 8192)
        .running("full", "other", &Reservation::new(0, 8192))
        .instance("roomy", 4096, 8192);
    let plan = h.place(&req("web", 256, 0, 1).strategy("binpack:memory"));
    assert_eq!(plan.instance_for(0), Some("full"));
}
