//! The scheduler: places PROVISIONING tasks on instances. Tasks that share
//! a placement request (cluster, definition, group, strategies and
//! constraints) are placed together by `berth-scheduler` on a view built
//! from the state, each group seeing what the previous took, and the
//! decisions go out as one `PlaceTasks`, re-checked when applied. Reasons
//! for tasks that cannot be placed are written only when they change.

use std::collections::{BTreeMap, HashMap, HashSet};

use berth_scheduler::{
    parse_constraints, parse_strategies, place, ClusterView, Constraint, InstanceView,
    PlacementRequest, SpecError, SpreadField, Strategy,
};
use berth_types::{
    Command, InstanceState, SchedulingStrategy, ServiceStatus, State, StateEvent, TaskPlacement,
};

use crate::{Controller, Inputs};

/// Most placements proposed in one command, so entries stay modest.
pub const MAX_PLACEMENTS_PER_PASS: usize = 5000;

pub struct Scheduling;

impl Controller for Scheduling {
    fn name(&self) -> &'static str {
        "scheduler"
    }

    fn interval_ms(&self) -> u64 {
        1000
    }

    fn wakes_on(&self, _: &StateEvent) -> bool {
        // New tasks wait, stopped tasks free room, instances come and go:
        // every change may make a placement possible.
        true
    }

    fn repeat_while_progressing(&self) -> bool {
        true
    }

    fn reconcile(&self, state: &State, inputs: &Inputs<'_>) -> Vec<Command> {
        let (placements, unplaced) = decide(state, inputs.seed);
        if placements.is_empty() && unplaced.is_empty() {
            return Vec::new();
        }
        vec![Command::PlaceTasks {
            placements,
            unplaced,
            at_ms: inputs.now_ms,
        }]
    }
}

/// A group's parsed placement strategies and constraints.
type Settings = (Vec<Strategy>, Vec<Constraint>);

/// Tasks that share a placement request: same cluster, definition, group,
/// strategies and constraints.
type GroupKey<'a> = (&'a str, &'a str, u32, &'a str, &'a [String], &'a [String]);

/// One scheduling pass. Each pass places at most
/// `MAX_PLACEMENTS_PER_PASS` tasks, shared fairly between the waiting
/// requests, so a one-task RunTask is not queued behind a bulk run.
pub fn decide(state: &State, seed: u64) -> (Vec<TaskPlacement>, Vec<(String, String)>) {
    let mut groups: BTreeMap<GroupKey<'_>, Vec<&str>> = BTreeMap::new();
    let mut order: Vec<GroupKey<'_>> = Vec::new();
    for task in state.provisioning_tasks() {
        let key = (
            task.cluster.as_str(),
            task.family.as_str(),
            task.revision,
            task.group.as_str(),
            task.placement_strategies.as_slice(),
            task.placement_constraints.as_slice(),
        );
        let entry = groups.entry(key).or_default();
        if entry.is_empty() {
            order.push(key);
        }
        entry.push(task.id.as_str());
    }
    // A fair share for each group first, then what is left in queue order.
    let share = (MAX_PLACEMENTS_PER_PASS / order.len().max(1)).max(1);
    let mut budget = MAX_PLACEMENTS_PER_PASS;
    let mut take: HashMap<GroupKey<'_>, usize> = HashMap::new();
    for key in &order {
        let n = groups.get(key).map_or(0, Vec::len).min(share).min(budget);
        budget -= n;
        take.insert(*key, n);
    }
    for key in &order {
        let waiting = groups.get(key).map_or(0, Vec::len);
        let n = take.entry(*key).or_insert(0);
        let more = (waiting - *n).min(budget);
        *n += more;
        budget -= more;
    }
    // Each group's placement settings, parsed once.
    let settings: Vec<Result<Settings, SpecError>> = order
        .iter()
        .map(|&(_, _, _, _, strategies, constraints)| {
            parse_strategies(strategies)
                .and_then(|s| parse_constraints(constraints).map(|c| (s, c)))
        })
        .collect();
    // Instance attributes cost a map per instance per pass; only
    // constraints, `spread:attribute` and daemons' room read them.
    let clusters_reading_attributes: HashSet<&str> = order
        .iter()
        .zip(&settings)
        .filter(|(_, parsed)| {
            matches!(parsed, Ok((strategies, constraints)) if !constraints.is_empty()
                || strategies
                    .iter()
                    .any(|s| matches!(s, Strategy::Spread(SpreadField::Attribute(_)))))
        })
        .map(|(key, _)| key.0)
        .collect();
    let mut views: HashMap<String, ClusterView> = HashMap::new();
    let mut placements = Vec::new();
    let mut unplaced = Vec::new();
    for (key, parsed) in order.into_iter().zip(settings) {
        let Some(mut ids) = groups.remove(&key) else {
            continue;
        };
        ids.truncate(take.get(&key).copied().unwrap_or(0));
        if ids.is_empty() {
            continue;
        }
        let (cluster, _, _, group, _, _) = key;
        let Some(first) = ids.first().and_then(|id| state.task(id)) else {
            continue;
        };
        let reservation = first.reservation.clone();
        let (strategies, constraints) = match parsed {
            Ok(p) => p,
            Err(e) => {
                for id in ids {
                    unplaced.push((id.to_string(), format!("bad placement settings: {e}")));
                }
                continue;
            }
        };
        if !views.contains_key(cluster) {
            let attributes =
                clusters_reading_attributes.contains(cluster) || has_daemons(state, cluster);
            match build_view(state, cluster, attributes) {
                Ok(mut view) => {
                    hold_room_for_daemons(state, cluster, &mut view);
                    views.insert(cluster.to_string(), view);
                }
                Err(e) => {
                    tracing::error!(%cluster, error = %e, "cannot build the cluster view");
                    continue;
                }
            }
        }
        let Some(view) = views.get_mut(cluster) else {
            continue;
        };
        let count = u32::try_from(ids.len()).unwrap_or(u32::MAX);
        let mut request = PlacementRequest::new(group.to_string(), reservation, count);
        request.strategies = strategies;
        request.constraints = constraints;
        let plan = place(view, &request, seed);
        // Later groups must see what this one took.
        if let Err(e) = view.apply(&request, &plan) {
            tracing::error!(error = %e, "plan does not fit the view it was made from");
            continue;
        }
        for p in &plan.placements {
            if let Some(id) = ids.get(p.task_index as usize) {
                placements.push(TaskPlacement {
                    task_id: id.to_string(),
                    instance_id: p.instance_id.clone(),
                });
            }
        }
        for u in &plan.unplaced {
            // The binding reason, then how many instances each filter
            // ruled out, so a person sees what to change.
            let reason = if u.filtered.is_empty() {
                u.reason.to_string()
            } else {
                format!("{}; {}", u.reason, u.filtered)
            };
            for index in u.task_indexes.clone() {
                let Some(id) = ids.get(index as usize) else {
                    continue;
                };
                // Only a changed reason is worth a write.
                if state.task(id).is_some_and(|t| t.placement_reason != reason) {
                    unplaced.push((id.to_string(), reason.clone()));
                }
            }
        }
    }
    (placements, unplaced)
}

/// Daemons first in: an ACTIVE instance that should run a daemon service's
/// task but does not yet (it just joined, say) keeps the room for it, so
/// replica tasks placed in the same pass cannot take it.
fn hold_room_for_daemons(state: &State, cluster: &str, view: &mut ClusterView) {
    for service in state.services_in(cluster) {
        if service.scheduling_strategy != SchedulingStrategy::Daemon
            || service.status != ServiceStatus::Active
        {
            continue;
        }
        let Some(td) = service
            .primary()
            .and_then(|d| d.task_definition.split_once(':'))
            .and_then(|(family, rev)| state.task_definition(family, rev.parse().ok()?))
        else {
            continue;
        };
        let expressions: Vec<_> = parse_constraints(&service.placement_constraints)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| match c {
                berth_scheduler::Constraint::MemberOf(m) => Some(m.expression),
                berth_scheduler::Constraint::DistinctInstance => None,
            })
            .collect();
        let reservation = berth_types::resources::reserve(&td.spec);
        let group = service.group();
        let mut due = Vec::new();
        for instance in view.instances() {
            let runs_one = state
                .service_tasks(cluster, &service.name)
                .any(|t| t.instance_id.as_deref() == Some(instance.id.as_str()));
            if instance.status == InstanceState::Active
                && !runs_one
                && expressions.iter().all(|e| e.matches(instance))
            {
                due.push(instance.id.clone());
            }
        }
        for id in due {
            // An instance too small for the daemon holds nothing for it.
            let _ = view.add_task(&id, &group, &reservation);
        }
    }
}

/// Whether the cluster has an ACTIVE daemon service, whose room
/// `hold_room_for_daemons` finds by matching instance attributes.
fn has_daemons(state: &State, cluster: &str) -> bool {
    state.services_in(cluster).any(|s| {
        s.scheduling_strategy == SchedulingStrategy::Daemon && s.status == ServiceStatus::Active
    })
}

/// The cluster as the scheduler sees it, with every instance's attributes.
pub fn cluster_view(
    state: &State,
    cluster: &str,
) -> Result<ClusterView, berth_scheduler::ViewError> {
    build_view(state, cluster, true)
}

/// The cluster's view; without `attributes`, instances carry none, for a
/// pass that reads none.
fn build_view(
    state: &State,
    cluster: &str,
    attributes: bool,
) -> Result<ClusterView, berth_scheduler::ViewError> {
    let instances = state
        .instances()
        .filter(|i| i.cluster == cluster)
        .map(|i| {
            let status = i.display_status();
            let task_groups = state.task_groups_on(&i.id).cloned().unwrap_or_default();
            let attributes = if attributes {
                // The hostname the agent registered with, for agents that
                // report none in their hello; agent-reported, like all
                // agent.*.
                let mut all = i.all_attributes();
                all.entry(format!(
                    "{}hostname",
                    berth_types::access::AGENT_ATTRIBUTE_PREFIX
                ))
                .or_insert_with(|| i.hostname.clone());
                all
            } else {
                BTreeMap::new()
            };
            InstanceView {
                id: i.id.clone(),
                status,
                attributes,
                // The operator's `berth.capacity.*` caps bound the claim.
                capacity: i.placeable_capacity(),
                task_groups,
            }
        })
        .collect();
    ClusterView::new(instances)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_types::resources::Resources;
    use berth_types::{
        CommandOutput, ContainerDefinition, Registration, RunTasks, TaskDefinitionSpec,
    };

    fn state_with(instances: &[(&str, &str)]) -> State {
        let mut state = State::new();
        let mut container = ContainerDefinition::new("app", "img:1");
        container.memory = Some(256);
        state
            .apply(Command::RegisterTaskDefinition {
                spec: TaskDefinitionSpec {
                    family: "web".into(),
                    container_definitions: vec![container],
                    cpu: None,
                    memory: None,
                    network_mode: Default::default(),
                    volumes: vec![],
                    tags: vec![],
                },
                at_ms: 1,
            })
            .unwrap();
        state
            .apply(Command::CreateActivation {
                id: "act".into(),
                cluster: "default".into(),
                description: String::new(),
                secret_hash: "h".into(),
                expires_at_ms: i64::MAX,
                max_registrations: 100,
                attributes: BTreeMap::new(),
                at_ms: 0,
            })
            .unwrap();
        for (id, zone) in instances {
            state
                .apply(Command::RegisterInstance(Registration {
                    activation_id: "act".into(),
                    secret_hash: "h".into(),
                    new_instance_id: id.to_string(),
                    previous_instance_id: None,
                    expected_cluster: None,
                    hostname: id.to_string(),
                    attributes: BTreeMap::new(),
                    certificate_expires_at_ms: i64::MAX,
                    at_ms: 1,
                    public_key_sha256: "key-1".into(),
                }))
                .unwrap();
            state
                .apply(Command::InstanceConnected {
                    host_ports: Vec::new(),
                    instance_id: id.to_string(),
                    agent_version: "t".into(),
                    resources: Resources::new(1024, 1024),
                    attributes: BTreeMap::from([("zone".to_string(), "agent-says".to_string())]),
                    at_ms: 2,
                })
                .unwrap();
            state
                .apply(Command::PutInstanceAttributes {
                    instance_id: id.to_string(),
                    attributes: BTreeMap::from([("zone".to_string(), zone.to_string())]),
                })
                .unwrap();
        }
        state
    }

    fn run(state: &mut State, ids: &[&str], constraints: &[&str]) {
        run_in(state, ids, constraints, None)
    }

    fn run_in(state: &mut State, ids: &[&str], constraints: &[&str], group: Option<&str>) {
        state
            .apply(Command::RunTasks(RunTasks {
                cluster: "default".into(),
                task_definition: "web".into(),
                task_ids: ids.iter().map(|s| s.to_string()).collect(),
                instance_ids: vec![],
                group: group.map(str::to_string),
                started_by: String::new(),
                placement_strategies: vec![],
                placement_constraints: constraints.iter().map(|s| s.to_string()).collect(),
                overrides: vec![],
                client_token: None,
                at_ms: 3,
            }))
            .unwrap();
    }

    #[test]
    fn what_an_agent_reports_cannot_satisfy_a_constraint_on_an_operator_attribute() {
        // i-a's operator said zone=a; its agent claims zone=agent-says.
        let mut state = state_with(&[("i-a", "a")]);
        run(
            &mut state,
            &["t1"],
            &["memberOf(attribute:zone == agent-says)"],
        );
        let (placements, unplaced) = decide(&state, 7);
        assert!(placements.is_empty(), "{placements:?}");
        assert_eq!(unplaced.len(), 1);
        run(
            &mut state,
            &["t2"],
            &["memberOf(attribute:agent.zone == agent-says and attribute:zone == a)"],
        );
        let (placements, _) = decide(&state, 7);
        assert_eq!(placements.len(), 1, "{placements:?}");
        assert_eq!(placements[0].task_id, "t2");
    }

    #[test]
    fn the_operators_capacity_cap_bounds_what_an_agent_claims() {
        // i-a's agent claims 1024 MiB; the operator caps it at 512, so only
        // two tasks of 256 MiB go there and the third waits.
        let mut state = state_with(&[("i-a", "a")]);
        state
            .apply(Command::PutInstanceAttributes {
                instance_id: "i-a".into(),
                attributes: BTreeMap::from([(
                    berth_types::access::MEMORY_CAP_ATTRIBUTE.to_string(),
                    "512".to_string(),
                )]),
            })
            .unwrap();
        run(&mut state, &["t1", "t2", "t3"], &[]);
        let (placements, unplaced) = decide(&state, 7);
        assert_eq!(placements.len(), 2, "{placements:?}");
        assert_eq!(unplaced.len(), 1);
        assert!(
            unplaced[0].1.contains("lacking memory"),
            "{}",
            unplaced[0].1
        );
    }

    #[test]
    fn decisions_honour_constraints_and_capacity_and_explain_the_rest() {
        let mut state = state_with(&[("i-a", "a"), ("i-b", "b")]);
        // 1024 MiB each, 256 per task: four fit in zone b, the fifth waits.
        run(
            &mut state,
            &["t1", "t2", "t3", "t4", "t5"],
            &["memberOf(attribute:zone == b)"],
        );
        let (placements, unplaced) = decide(&state, 7);
        assert_eq!(placements.len(), 4);
        assert!(placements.iter().all(|p| p.instance_id == "i-b"));
        assert_eq!(unplaced.len(), 1);
        assert!(unplaced[0].1.contains("256"), "{}", unplaced[0].1);
        assert!(
            unplaced[0].1.ends_with(
                "instances filtered out: 1 by memberOf(attribute:zone == b), 1 lacking memory"
            ),
            "{}",
            unplaced[0].1
        );
        let out = state
            .apply(Command::PlaceTasks {
                placements,
                unplaced,
                at_ms: 4,
            })
            .unwrap();
        assert!(matches!(out, CommandOutput::Placed { ref placed, .. } if placed.len() == 4));
        // The same reason is not written again.
        let (placements, unplaced) = decide(&state, 8);
        assert!(placements.is_empty() && unplaced.is_empty());
    }

    #[test]
    fn spreading_by_an_attribute_reads_the_attributes_without_any_constraint() {
        // Two instances in zone a, one in zone b: spread by zone sends one
        // of two tasks to b. A view built without attributes would put
        // every instance in one bucket and could fill zone a.
        let mut state = state_with(&[("i-a1", "a"), ("i-a2", "a"), ("i-b", "b")]);
        state
            .apply(Command::RunTasks(RunTasks {
                cluster: "default".into(),
                task_definition: "web".into(),
                task_ids: vec!["t1".into(), "t2".into()],
                instance_ids: vec![],
                group: None,
                started_by: String::new(),
                placement_strategies: vec!["spread:attribute:zone".into()],
                placement_constraints: vec![],
                overrides: vec![],
                client_token: None,
                at_ms: 3,
            }))
            .unwrap();
        for seed in 0..20 {
            let (placements, _) = decide(&state, seed);
            assert_eq!(placements.len(), 2, "{placements:?}");
            let in_b = placements.iter().filter(|p| p.instance_id == "i-b").count();
            assert_eq!(in_b, 1, "seed {seed}: {placements:?}");
        }
    }

    #[test]
    fn a_pass_that_reads_no_attribute_places_like_one_that_does() {
        // Spread by instance with no constraint: the view is built without
        // attributes, and the decisions are those of the full view.
        let mut state = state_with(&[("i-a", "a"), ("i-b", "b"), ("i-c", "c")]);
        run(&mut state, &["t1", "t2", "t3", "t4", "t5", "t6"], &[]);
        for seed in 0..10 {
            let (placements, unplaced) = decide(&state, seed);
            assert!(unplaced.is_empty(), "{unplaced:?}");
            let mut full = cluster_view(&state, "default").unwrap();
            let mut request = PlacementRequest::new(
                "family:web".to_string(),
                state.task("t1").unwrap().reservation.clone(),
                6,
            );
            request.strategies = parse_strategies(&Vec::<String>::new()).unwrap();
            let plan = place(&full, &request, seed);
            full.apply(&request, &plan).unwrap();
            let expected: Vec<&str> = plan
                .placements
                .iter()
                .map(|p| p.instance_id.as_str())
                .collect();
            let got: Vec<&str> = placements.iter().map(|p| p.instance_id.as_str()).collect();
            assert_eq!(got, expected, "seed {seed}");
        }
    }

    #[test]
    fn groups_decided_in_one_pass_do_not_overcommit() {
        let mut state = state_with(&[("i-a", "a")]);
        run(&mut state, &["x1", "x2", "x3"], &[]);
        run_in(
            &mut state,
            &["y1", "y2"],
            &["distinctInstance"],
            Some("other"),
        );
        let (placements, unplaced) = decide(&state, 1);
        // 4 x 256 MiB fill the instance; the view carries the first group's
        // placements into the second's decision (y2 could not go to the same
        // instance as y1 anyway).
        assert_eq!(placements.len(), 4);
        assert_eq!(unplaced.len(), 1);
        assert_eq!(unplaced[0].0, "y2");
        let out = state
            .apply(Command::PlaceTasks {
                placements,
                unplaced: vec![],
                at_ms: 4,
            })
            .unwrap();
        let CommandOutput::Placed { placed, rejected } = out else {
            panic!()
        };
        assert_eq!((placed.len(), rejected.len()), (4, 0));
        assert_eq!(
            state
                .instance("i-a")
                .unwrap()
                .capacity
                .remaining()
                .memory_mib,
            0
        );
    }

    #[test]
    fn the_scheduler_runs_every_second_wakes_on_any_event_and_repeats_while_it_progresses() {
        let c = Scheduling;
        assert_eq!(c.name(), "scheduler");
        assert_eq!(c.interval_ms(), 1000);
        assert!(c.repeat_while_progressing());
        let events = [
            StateEvent::Task {
                task_id: "t1".into(),
                instance_id: None,
            },
            StateEvent::Instance {
                instance_id: "i-a".into(),
            },
            StateEvent::Service {
                cluster: "default".into(),
                name: "web".into(),
            },
        ];
        for e in &events {
            assert!(c.wakes_on(e), "{e:?}");
        }
    }

    #[test]
    fn distinct_instance_counts_tasks_placed_in_earlier_passes() {
        let mut state = state_with(&[("i-a", "a")]);
        run_in(&mut state, &["y1"], &["distinctInstance"], Some("g"));
        let (placements, _) = decide(&state, 1);
        assert_eq!(placements.len(), 1);
        state
            .apply(Command::PlaceTasks {
                placements,
                unplaced: vec![],
                at_ms: 4,
            })
            .unwrap();
        // The view built for the next pass knows i-a runs a task of g.
        run_in(&mut state, &["y2"], &["distinctInstance"], Some("g"));
        let (placements, unplaced) = decide(&state, 2);
        assert!(placements.is_empty(), "{placements:?}");
        assert_eq!(unplaced.len(), 1);
        assert_eq!(unplaced[0].0, "y2");
        assert!(
            unplaced[0].1.contains("distinctInstance"),
            "{}",
            unplaced[0].1
        );
    }

    /// Tasks decided (placed or explained) in one pass, per group prefix.
    fn decided_per_group(state: &State) -> BTreeMap<String, usize> {
        let (placements, unplaced) = decide(state, 5);
        let mut per = BTreeMap::new();
        let ids = placements
            .iter()
            .map(|p| p.task_id.as_str())
            .chain(unplaced.iter().map(|(id, _)| id.as_str()));
        for id in ids {
            let group = id.split('-').next().unwrap_or_default().to_string();
            *per.entry(group).or_insert(0) += 1;
        }
        per
    }

    fn run_many(state: &mut State, group: &str, n: usize) {
        let ids: Vec<String> = (0..n).map(|i| format!("{group}-{i:05}")).collect();
        for chunk in ids.chunks(1000) {
            let ids: Vec<&str> = chunk.iter().map(String::as_str).collect();
            run_in(state, &ids, &[], Some(group));
        }
    }

    #[test]
    fn a_pass_shares_its_placements_fairly_then_gives_the_rest_in_queue_order() {
        // Two requests that each want more than half: half each.
        let mut state = state_with(&[("i-a", "a")]);
        run_many(&mut state, "a", 3000);
        run_many(&mut state, "b", 3000);
        let half = MAX_PLACEMENTS_PER_PASS / 2;
        assert_eq!(
            decided_per_group(&state),
            BTreeMap::from([("a".to_string(), half), ("b".to_string(), half)])
        );
        // Three: a fair third each (a small one takes all it wants), then
        // what is left goes to the oldest request first.
        let mut state = state_with(&[("i-a", "a")]);
        run_many(&mut state, "a", 3000);
        run_many(&mut state, "b", 100);
        run_many(&mut state, "c", 3000);
        assert_eq!(
            decided_per_group(&state),
            BTreeMap::from([
                ("a".to_string(), 3000),
                ("b".to_string(), 100),
                ("c".to_string(), MAX_PLACEMENTS_PER_PASS - 3100),
            ])
        );
    }

    #[test]
    fn a_small_request_is_not_queued_behind_a_bulk_run() {
        let mut state = state_with(&[("i-a", "a")]);
        let bulk: Vec<String> = (0..MAX_PLACEMENTS_PER_PASS + 500)
            .map(|i| format!("bulk-{i}"))
            .collect();
        for chunk in bulk.chunks(1000) {
            let ids: Vec<&str> = chunk.iter().map(String::as_str).collect();
            run(&mut state, &ids, &[]);
        }
        run_in(&mut state, &["probe"], &[], Some("probe"));
        let (placements, unplaced) = decide(&state, 3);
        let decided: Vec<&str> = placements
            .iter()
            .map(|p| p.task_id.as_str())
            .chain(unplaced.iter().map(|(id, _)| id.as_str()))
            .collect();
        assert!(
            decided.contains(&"probe"),
            "the probe waits behind the bulk run"
        );
        assert!(decided.len() <= MAX_PLACEMENTS_PER_PASS);
    }
}
