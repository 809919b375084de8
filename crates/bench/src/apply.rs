//! What applying a bulk run costs one server's state machine, without Raft,
//! the network or other processes: the commands a RunTask of many tasks
//! becomes on every server (RunTasks, the scheduler's PlaceTasks, the
//! agents' ReportTaskStatus to RUNNING), applied in process through the
//! de-duplication window and the journal exactly as `StateMachineStore`
//! applies log entries. Every server of a cluster pays this per task, so
//! it bounds placement throughput on a machine the servers share.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use berth_store::dedup::Dedup;
use berth_store::{Batch, BatchId, Origin};
use berth_types::resources::Resources;
use berth_types::task::{ContainerState, ContainerStatus, Health};
use berth_types::{
    Command, ContainerDefinition, Registration, RunTasks, State, TaskDefinitionSpec, TaskPlacement,
    TaskReport, TaskStatus,
};

use crate::{machine, stats, ApplyArgs};

/// Commands per report entry: what the leader's report writer puts in one
/// batch when thousands of agents report at once.
const REPORT_COMMANDS_PER_BATCH: usize = 200;
/// Tasks one RunTask starts at most, as in the tasks benchmark.
const TASKS_PER_RUN: usize = 1000;
/// Placements per PlaceTasks, the scheduler's limit per pass.
const PLACEMENTS_PER_PASS: usize = 5000;

/// Time per task of each kind of command, one round.
#[derive(Debug, Clone, Copy)]
struct Round {
    run: Duration,
    place: Duration,
    report: Duration,
}

/// Applies batches as the state machine does, numbering entries.
struct Applier {
    state: State,
    dedup: Dedup,
    index: u64,
}

impl Applier {
    fn new() -> Self {
        Self {
            state: State::new(),
            dedup: Dedup::default(),
            index: 0,
        }
    }

    fn apply(&mut self, commands: Vec<Command>) -> Result<()> {
        self.index += 1;
        let batch = Batch {
            id: Some(BatchId {
                session: 1,
                seq: self.index,
            }),
            origin: Origin {
                proposer: 1,
                at_ms: 1,
                actors: Vec::new(),
            },
            commands,
        };
        let state = &mut self.state;
        state.begin_entry(self.index, 1);
        let outcome = self
            .dedup
            .apply(self.index, batch, |c, actor| state.apply_by(c, actor));
        let results = outcome
            .into_results()
            .context("a fresh batch was refused as expired")?;
        if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
            bail!("a command was refused: {e}");
        }
        Ok(())
    }
}

/// Ids shaped like the servers' (random hex, 36 characters), so that map
/// lookups compare strings as they do in a cluster.
fn id(n: u64) -> String {
    let h = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        h >> 32,
        (h >> 16) & 0xffff,
        h & 0xfff,
        (h >> 20) & 0xfff,
        n
    )
}

fn one_round(instances: usize, tasks_per_instance: usize) -> Result<Round> {
    let mut applier = Applier::new();
    let mut container = ContainerDefinition::new("app", "registry.local/app:1");
    container.memory = Some(16);
    applier.apply(vec![Command::RegisterTaskDefinition {
        spec: TaskDefinitionSpec {
            family: "bulk".into(),
            container_definitions: vec![container],
            cpu: None,
            memory: None,
            network_mode: Default::default(),
            volumes: vec![],
            tags: vec![],
        },
        at_ms: 1,
    }])?;
    applier.apply(vec![Command::CreateActivation {
        id: "bench".into(),
        cluster: "default".into(),
        description: String::new(),
        secret_hash: "h".into(),
        expires_at_ms: i64::MAX,
        max_registrations: u32::try_from(instances).unwrap_or(u32::MAX),
        attributes: BTreeMap::new(),
        at_ms: 1,
    }])?;
    let instance_ids: Vec<String> = (0..instances as u64)
        .map(|n| format!("i-{}", id(n)))
        .collect();
    for chunk in instance_ids.chunks(500) {
        let mut commands = Vec::new();
        for instance_id in chunk {
            commands.push(Command::RegisterInstance(Registration {
                activation_id: "bench".into(),
                secret_hash: "h".into(),
                new_instance_id: instance_id.clone(),
                previous_instance_id: None,
                expected_cluster: None,
                hostname: instance_id.clone(),
                attributes: BTreeMap::new(),
                certificate_expires_at_ms: i64::MAX,
                at_ms: 1,
                public_key_sha256: "key".into(),
            }));
            commands.push(Command::InstanceConnected {
                host_ports: vec![],
                instance_id: instance_id.clone(),
                agent_version: "bench".into(),
                resources: Resources::new(4096, 8192),
                attributes: BTreeMap::new(),
                at_ms: 2,
            });
        }
        applier.apply(commands)?;
    }
    let total = instances * tasks_per_instance;
    let task_ids: Vec<String> = (0..total as u64).map(|n| id((1 << 40) + n)).collect();
    // Everything a phase applies is built before its clock starts.
    // Each RunTasks at its own time, as calls a few milliseconds apart are:
    // tasks created in the same millisecond share an index bucket.
    let runs: Vec<Vec<Command>> = task_ids
        .chunks(TASKS_PER_RUN)
        .zip(3i64..)
        .map(|(chunk, at_ms)| {
            vec![Command::RunTasks(RunTasks {
                cluster: "default".into(),
                task_definition: "bulk".into(),
                task_ids: chunk.to_vec(),
                instance_ids: vec![],
                group: None,
                started_by: String::new(),
                placement_strategies: vec![],
                placement_constraints: vec![],
                overrides: vec![],
                client_token: None,
                at_ms,
            })]
        })
        .collect();
    let placements: Vec<TaskPlacement> = task_ids
        .iter()
        .enumerate()
        .map(|(i, task_id)| TaskPlacement {
            task_id: task_id.clone(),
            instance_id: instance_ids[i % instances].clone(),
        })
        .collect();
    let passes: Vec<Vec<Command>> = placements
        .chunks(PLACEMENTS_PER_PASS)
        .map(|chunk| {
            vec![Command::PlaceTasks {
                placements: chunk.to_vec(),
                unplaced: vec![],
                at_ms: 100_000,
            }]
        })
        .collect();
    let mut reports: Vec<Vec<TaskReport>> = vec![Vec::new(); instances];
    for (i, task_id) in task_ids.iter().enumerate() {
        reports[i % instances].push(TaskReport {
            task_id: task_id.clone(),
            last_status: TaskStatus::Running,
            containers: vec![ContainerState {
                name: "app".into(),
                status: ContainerStatus::Running,
                exit_code: None,
                reason: String::new(),
                health: Health::Unknown,
                restart_count: 0,
            }],
            reason: String::new(),
            stop_code: None,
            ip: None,
        });
    }
    let report_commands: Vec<Command> = reports
        .into_iter()
        .zip(&instance_ids)
        .map(|(reports, instance_id)| Command::ReportTaskStatus {
            instance_id: instance_id.clone(),
            reports,
            at_ms: 100_001,
        })
        .collect();
    let mut report_batches = Vec::new();
    let mut commands = report_commands.into_iter().peekable();
    while commands.peek().is_some() {
        report_batches.push(commands.by_ref().take(REPORT_COMMANDS_PER_BATCH).collect());
    }

    let per_task = |d: Duration| d / u32::try_from(total).unwrap_or(u32::MAX);
    let phase = |applier: &mut Applier, batches: Vec<Vec<Command>>| -> Result<Duration> {
        let started = Instant::now();
        for commands in batches {
            applier.apply(commands)?;
        }
        Ok(per_task(started.elapsed()))
    };
    let run = phase(&mut applier, runs)?;
    let place = phase(&mut applier, passes)?;
    let report = phase(&mut applier, report_batches)?;
    let running = applier
        .state
        .tasks()
        .filter(|t| t.last_status == TaskStatus::Running)
        .count();
    if running != total {
        bail!("{running} of {total} tasks RUNNING after the reports");
    }
    Ok(Round { run, place, report })
}

pub fn run(args: &ApplyArgs) -> Result<String> {
    let machine = machine::describe();
    let mut rounds = Vec::new();
    for round in 1..=args.rounds {
        let r = one_round(args.instances, args.tasks_per_instance)?;
        println!(
            "round {round}: RunTasks {:.2} us, PlaceTasks {:.2} us, ReportTaskStatus {:.2} us per task",
            us(r.run),
            us(r.place),
            us(r.report)
        );
        rounds.push(r);
    }
    let median_of = |pick: fn(&Round) -> Duration| {
        let samples: Vec<Duration> = rounds.iter().map(pick).collect();
        stats::median(&samples).unwrap_or_default()
    };
    let (run, place, report) = (
        median_of(|r| r.run),
        median_of(|r| r.place),
        median_of(|r| r.report),
    );
    let total = run + place + report;
    let spread = |pick: fn(&Round) -> Duration| {
        let values: Vec<String> = rounds
            .iter()
            .map(|r| format!("{:.2}", us(pick(r))))
            .collect();
        values.join(" / ")
    };
    let tasks = args.instances * args.tasks_per_instance;
    Ok(format!(
        "## State machine: applying a bulk run\n\n\
         Measured {} on {} ({} CPUs, {}), {}.\n\n\
         `berth-bench apply --instances {} --tasks-per-instance {} --rounds {}`: one \
         server's state machine, in process (no Raft, network or other processes), \
         applies what a RunTask of {} tasks on {} instances becomes on every server: \
         RunTasks of {TASKS_PER_RUN} tasks, PlaceTasks of {PLACEMENTS_PER_PASS}, then \
         one ReportTaskStatus to RUNNING per instance, {REPORT_COMMANDS_PER_BATCH} to \
         an entry; each through the de-duplication window and the journal, as \
         `StateMachineStore` applies log entries, each RunTasks a millisecond after \
         the one before. Medians of {} rounds, each on a fresh state; what a phase \
         applies is built before its clock starts.\n\n\
         | command | median per task (us) | rounds (us) |\n|---|---:|---|\n\
         | RunTasks | {:.2} | {} |\n\
         | PlaceTasks | {:.2} | {} |\n\
         | ReportTaskStatus | {:.2} | {} |\n\
         | all three | {:.2} | |\n\n\
         Every server of a cluster applies every entry, so on one machine shared by \
         three servers a task costs three times this in apply alone. Limits: one \
         process, one thread; the figure moves with the machine's other load.\n",
        machine.date,
        machine.cpu_model,
        machine.nproc,
        machine.memory,
        machine.kernel,
        args.instances,
        args.tasks_per_instance,
        args.rounds,
        stats::fmt_rate(tasks as f64),
        stats::fmt_rate(args.instances as f64),
        args.rounds,
        us(run),
        spread(|r| r.run),
        us(place),
        spread(|r| r.place),
        us(report),
        spread(|r| r.report),
        us(total),
    ))
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_round_runs_every_task() {
        // one_round itself refuses a run that leaves a task short of
        // RUNNING, so a round that returns applied every command.
        let round = one_round(20, 3).expect("the round applies");
        assert!(round.run > Duration::ZERO && round.place > Duration::ZERO);
        assert!(round.report > Duration::ZERO);
    }

    #[test]
    fn ids_are_distinct_and_server_shaped() {
        let ids: std::collections::BTreeSet<String> = (0..10_000).map(id).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids.iter().all(|i| i.len() >= 36));
    }
}
