//! Leader-only loops: the scheduler, instance liveness, and the purge of old
//! stopped tasks. Each runs on every server but acts only while this server
//! leads and has applied an entry of its own term (so its state is as fresh
//! as any acknowledged write). Each reads the state, decides, and proposes
//! commands; the state machine re-checks them, so a decision made from a
//! view that went stale is rejected rather than applied.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use berth_scheduler::{
    parse_constraints, parse_strategies, place, ClusterView, InstanceView, PlacementRequest,
};
use berth_types::{Command, CommandOutput, InstanceStatus, State, TaskPlacement};

use crate::api::now_ms;
use crate::node::BerthNode;
use crate::session::{leader_address, SessionHub};

/// Most placements proposed in one command, so entries stay modest.
const MAX_PLACEMENTS_PER_PASS: usize = 5000;
/// How often the loops look even when nothing woke them.
const SCHEDULER_TICK: Duration = Duration::from_secs(1);
const LIVENESS_TICK: Duration = Duration::from_millis(250);
const PURGE_TICK: Duration = Duration::from_secs(30);

pub fn spawn(hub: SessionHub) {
    tokio::spawn(liveness_loop(hub.clone()));
    tokio::spawn(scheduler_loop(hub.clone()));
    tokio::spawn(purge_loop(hub));
}

fn leads(node: &BerthNode) -> bool {
    node.has_applied_own_term()
}

// ---------------------------------------------------------------- scheduler

async fn scheduler_loop(hub: SessionHub) {
    loop {
        tokio::select! {
            _ = hub.scheduler_kicked() => {}
            _ = tokio::time::sleep(SCHEDULER_TICK) => {}
        }
        if !leads(hub.node()) {
            continue;
        }
        // Keep placing while there is work and progress.
        loop {
            match schedule_once(hub.node()).await {
                Ok(placed) if placed > 0 => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "scheduling pass failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    break;
                }
            }
        }
    }
}

/// Tasks that share a placement request: same cluster, definition, group,
/// strategies and constraints.
type GroupKey<'a> = (&'a str, &'a str, u32, &'a str, &'a [String], &'a [String]);

/// One pass: decide placements for waiting tasks and propose them. Returns
/// how many were placed.
async fn schedule_once(node: &BerthNode) -> Result<usize, crate::ServerError> {
    let seed = now_ms() as u64;
    let (placements, unplaced) = {
        let applied = node.state().read();
        decide(&applied.state, seed)
    };
    if placements.is_empty() && unplaced.is_empty() {
        return Ok(0);
    }
    let wanted = placements.len();
    let output = node
        .write(Command::PlaceTasks {
            placements,
            unplaced,
            at_ms: now_ms(),
        })
        .await?;
    if let CommandOutput::Placed { placed, rejected } = output {
        if !rejected.is_empty() {
            tracing::debug!(rejected = rejected.len(), "stale placements rejected");
        }
        tracing::debug!(placed = placed.len(), wanted, "placements applied");
        return Ok(placed.len());
    }
    Ok(0)
}

/// The pure part of a scheduling pass. Each pass places at most
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
    let mut views: HashMap<String, ClusterView> = HashMap::new();
    let mut placements = Vec::new();
    let mut unplaced = Vec::new();
    for key in order {
        let Some(mut ids) = groups.remove(&key) else {
            continue;
        };
        ids.truncate(take.get(&key).copied().unwrap_or(0));
        if ids.is_empty() {
            continue;
        }
        let (cluster, _, _, group, strategies, constraints) = key;
        let Some(first) = ids.first().and_then(|id| state.task(id)) else {
            continue;
        };
        let reservation = first.reservation.clone();
        let parsed = parse_strategies(strategies)
            .and_then(|s| parse_constraints(constraints).map(|c| (s, c)));
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
            match cluster_view(state, cluster) {
                Ok(view) => {
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
            let reason = u.reason.to_string();
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

fn cluster_view(state: &State, cluster: &str) -> Result<ClusterView, berth_scheduler::ViewError> {
    let instances = state
        .instances()
        .filter(|i| i.cluster == cluster)
        .map(|i| {
            let status = i.display_status();
            let mut task_groups: BTreeMap<String, u32> = BTreeMap::new();
            for task in state.active_tasks_on(&i.id) {
                *task_groups.entry(task.group.clone()).or_insert(0) += 1;
            }
            let mut attributes = i.attributes.clone();
            attributes
                .entry("hostname".to_string())
                .or_insert_with(|| i.hostname.clone());
            InstanceView {
                id: i.id.clone(),
                status,
                attributes,
                capacity: i.capacity.clone(),
                task_groups,
            }
        })
        .collect();
    ClusterView::new(instances)
}

// ----------------------------------------------------------------- liveness

async fn liveness_loop(hub: SessionHub) {
    let node = hub.node().clone();
    let config = hub.config();
    let mut leader_since: Option<Instant> = None;
    let mut pending: HashMap<String, Instant> = HashMap::new();
    loop {
        tokio::time::sleep(LIVENESS_TICK).await;
        if !leads(&node) {
            if leader_since.take().is_some() {
                hub.drop_all_sessions(&leader_address(&node));
            }
            continue;
        }
        let since = *leader_since.get_or_insert_with(Instant::now);
        if since.elapsed() < config.grace {
            continue;
        }
        let now = now_ms();
        let commands = {
            let applied = node.state().read();
            liveness_decisions(&applied.state, &hub, config.disconnect_after(), now)
        };
        for command in commands {
            let key = format!("{}:{}", command.kind(), instance_of(&command));
            // One proposal per instance and kind at a time.
            if pending
                .get(&key)
                .is_some_and(|at| at.elapsed() < Duration::from_secs(5))
            {
                continue;
            }
            pending.insert(key, Instant::now());
            tracing::info!(instance_id = %instance_of(&command), kind = command.kind(), "instance liveness transition");
            if let Err(e) = node.write(command).await {
                tracing::warn!(error = %e, "liveness transition not applied");
            }
        }
        pending.retain(|_, at| at.elapsed() < Duration::from_secs(5));
    }
}

fn instance_of(command: &Command) -> &str {
    match command {
        Command::InstanceDisconnected { instance_id, .. }
        | Command::InstanceLost { instance_id, .. }
        | Command::InstanceConnected { instance_id, .. } => instance_id,
        _ => "",
    }
}

fn liveness_decisions(
    state: &State,
    hub: &SessionHub,
    disconnect_after: Duration,
    now: i64,
) -> Vec<Command> {
    let mut commands = Vec::new();
    for instance in state.instances() {
        if instance.status != InstanceStatus::Active {
            continue;
        }
        let alive = hub
            .last_heartbeat(&instance.id)
            .is_some_and(|at| at.elapsed() < disconnect_after);
        if instance.agent_connected {
            if !alive {
                commands.push(Command::InstanceDisconnected {
                    instance_id: instance.id.clone(),
                    at_ms: now,
                });
            }
            continue;
        }
        // A new session writes its own InstanceConnected from its hello;
        // only an old one that outlived the DISCONNECTED mark needs this.
        let survived = hub
            .session_age(&instance.id)
            .is_some_and(|age| age > disconnect_after);
        if alive && survived {
            // Marked DISCONNECTED, yet its session survived (a partition
            // shorter than TCP noticed) and heartbeats flow again.
            commands.push(Command::InstanceConnected {
                instance_id: instance.id.clone(),
                agent_version: instance.agent_version.clone(),
                resources: instance.capacity.registered(),
                attributes: BTreeMap::new(),
                at_ms: now,
            });
        }
        // An agent that is talking to us is never lost.
        if alive || !state.has_active_tasks(&instance.id) {
            continue;
        }
        let lost_after_ms = state.cluster(&instance.cluster).map_or(300_000, |c| {
            i64::try_from(c.settings.lost_after_secs.saturating_mul(1000)).unwrap_or(i64::MAX)
        });
        let seen = instance.last_seen_ms.unwrap_or(instance.registered_at_ms);
        if now.saturating_sub(seen) >= lost_after_ms {
            commands.push(Command::InstanceLost {
                instance_id: instance.id.clone(),
                at_ms: now,
            });
        }
    }
    commands
}

// -------------------------------------------------------------------- purge

async fn purge_loop(hub: SessionHub) {
    let node = hub.node().clone();
    loop {
        tokio::time::sleep(PURGE_TICK).await;
        if !leads(&node) {
            continue;
        }
        let now = now_ms();
        let due = {
            let applied = node.state().read();
            let state = &applied.state;
            let due = state.tasks().any(|t| {
                let keep = state.cluster(&t.cluster).map_or(3_600_000, |c| {
                    i64::try_from(c.settings.task_retention_secs.saturating_mul(1000))
                        .unwrap_or(i64::MAX)
                });
                t.stopped_at_ms
                    .is_some_and(|at| at.saturating_add(keep) <= now)
            });
            due
        };
        if due {
            match node.write(Command::PurgeStoppedTasks { now_ms: now }).await {
                Ok(CommandOutput::Purged(n)) => {
                    tracing::info!(purged = n, "old stopped tasks removed")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "purge not applied"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_types::resources::Resources;
    use berth_types::{ContainerDefinition, Registration, RunTasks, TaskDefinitionSpec};

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
                }))
                .unwrap();
            state
                .apply(Command::InstanceConnected {
                    instance_id: id.to_string(),
                    agent_version: "t".into(),
                    resources: Resources::new(1024, 1024),
                    attributes: BTreeMap::from([("zone".to_string(), zone.to_string())]),
                    at_ms: 2,
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
