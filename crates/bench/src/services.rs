//! `berth-bench services`: a REPLICA service of many tasks on hollow agents
//! and a 3-server cluster: create to steady state, a rolling deployment of
//! every task to a new revision, the replacement of the tasks of many
//! agents killed at once, and the leader's CPU while the service is steady.

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use berth_client::{BerthClient, ClientConfig};
use berth_proto::pb;
use berth_types::service::{
    CreateServiceInput, DeploymentConfigurationInput, ServiceDescription, UpdateServiceInput,
};
use berth_types::RolloutState;
use tokio::time::Instant;

use crate::cluster;
use crate::hollow::{self, FleetStats, HollowSize};
use crate::machine::{self, CpuClock, CpuWindow, Machine};
use crate::tasks::{bounded, print_procs, proc_table, procs, Proc};
use crate::ServicesArgs;

const SERVERS: u64 = 3;
const FAMILY: &str = "hollow-svc";
/// The services are named `bench-0`, `bench-1`, ...: ECS (and Berth) cap
/// a service at 5,000 tasks, so a larger load is split evenly over several.
const SERVICE_PREFIX: &str = "bench-";
/// The most services a run splits its tasks over.
pub const MAX_SERVICES: u32 = 4;
const TARGET_CREATE: Duration = Duration::from_secs(3);
const TARGET_ROLLOUT: Duration = Duration::from_secs(15);
/// Replacement of lost tasks: at most lost_after plus this.
const TARGET_REPLACE_SLACK: Duration = Duration::from_secs(3);
const TARGET_IDLE_LEADER_CORES: f64 = 0.10;
/// Each hollow instance takes up to 64 tasks of 16 units / 16 MiB.
const HOLLOW_CPU_UNITS: u32 = 1024;
const HOLLOW_MEMORY_MIB: u32 = 1024;
const TASK_CPU_UNITS: u32 = 16;
const TASK_MEMORY_MIB: u32 = 16;
const REPORT_FLUSH: Duration = Duration::from_millis(20);
const POLL: Duration = Duration::from_millis(50);
const SERVER_LOG: &str = "info,openraft=warn";

/// One point of the curve.
#[derive(Debug, Clone, Copy)]
pub struct Point {
    pub instances: usize,
    /// Desired tasks over all the services.
    pub tasks: u32,
    /// Hollow agents killed at once.
    pub lost: usize,
}

/// `tasks` rounded down so that it splits evenly into services of at most
/// `MAX_DESIRED_COUNT` each.
pub fn even_tasks(tasks: u32) -> u32 {
    let count = tasks
        .div_ceil(berth_types::service::MAX_DESIRED_COUNT)
        .max(1);
    tasks - tasks % count
}

pub struct Report {
    machine: Machine,
    instances: usize,
    tasks: u32,
    services: u32,
    lost: usize,
    lost_after_secs: u64,
    heartbeat: String,
    idle_secs: u64,
    register: Duration,
    connect: Duration,
    create: Duration,
    rollout: Duration,
    lost_tasks: usize,
    replace: Duration,
    loss_seen: Duration,
    idle: Vec<Proc>,
    during_rollout: Vec<Proc>,
    notes: Vec<String>,
    elapsed: Duration,
}

fn spec(family: &str, marker: &str) -> pb::TaskDefinitionSpec {
    let mut container = berth_types::ContainerDefinition::new("app", "localhost:5000/bench/app:1");
    container.cpu = TASK_CPU_UNITS;
    container.memory = Some(TASK_MEMORY_MIB);
    container.environment = vec![berth_types::KeyValuePair {
        name: "REVISION".into(),
        value: marker.into(),
    }];
    berth_types::TaskDefinitionSpec {
        family: family.into(),
        container_definitions: vec![container],
        cpu: None,
        memory: None,
        network_mode: Default::default(),
        volumes: vec![],
        tags: vec![],
    }
    .into()
}

/// Polls the services until `done` holds for all of them or `limit`
/// passes; returns the time from `since` to the first set of descriptions
/// that satisfied it.
async fn until(
    client: &BerthClient,
    names: &[String],
    since: Instant,
    limit: Duration,
    what: &str,
    mut done: impl FnMut(&[ServiceDescription]) -> bool,
) -> Result<Duration> {
    loop {
        match client.describe_services("", names).await {
            Ok((found, _)) if found.len() == names.len() && done(&found) => {
                return Ok(since.elapsed())
            }
            Ok((found, _)) if since.elapsed() > limit => bail!(
                "{what}: not done after {limit:?}: {:?}",
                found
                    .iter()
                    .map(|d| (
                        &d.service.name,
                        d.running_count,
                        d.pending_count,
                        d.service.steady,
                        d.service.events.first().map(|e| &e.message)
                    ))
                    .collect::<Vec<_>>()
            ),
            // A read that failed (a slow moment) is simply tried again.
            _ if since.elapsed() > limit => bail!("{what}: no answer within {limit:?}"),
            _ => {}
        }
        tokio::time::sleep(POLL).await;
    }
}

fn all_steady(all: &[ServiceDescription], tasks: u32, taskdef: &str) -> bool {
    all.iter().all(|d| steady(d, tasks, taskdef))
}

fn steady(d: &ServiceDescription, tasks: u32, taskdef: &str) -> bool {
    d.running_count == tasks
        && d.pending_count == 0
        && d.service.steady
        && d.service.deployments.len() == 1
        && d.service.task_definition == taskdef
        && d.service
            .primary()
            .is_some_and(|p| p.rollout_state == RolloutState::Completed)
}

pub async fn run(args: &ServicesArgs, point: Point) -> Result<Report> {
    let started = Instant::now();
    let per_instance = (HOLLOW_CPU_UNITS / TASK_CPU_UNITS) as usize;
    // A rollout at maximumPercent 200 needs room for twice the tasks, and
    // the lost instances' tasks must fit on the others.
    let room = (point.instances - point.lost) * per_instance;
    if (point.tasks as usize) * 2 > point.instances * per_instance || point.tasks as usize > room {
        bail!(
            "{} tasks need more room than {} hollow instances of {per_instance} tasks offer (twice the tasks for the rollout, and the tasks on the {} survivors)",
            point.tasks, point.instances, point.instances - point.lost
        );
    }
    let machine = machine::describe();
    println!(
        "machine: {} x {}, {}, {}",
        machine.nproc, machine.cpu_model, machine.memory, machine.kernel
    );
    let clock = CpuClock::new();
    let mut cluster = cluster::start(
        SERVERS,
        &[],
        &[
            "--agent-heartbeat",
            args.heartbeat.as_str(),
            "--log",
            SERVER_LOG,
        ],
    )
    .await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(15)).await?;
    let leader_addr = cluster.addr(leader);
    let servers: Vec<String> = cluster.servers.values().map(|s| s.addr.clone()).collect();
    let watched = cluster::watched(&cluster, leader);
    println!("leader: server {leader} at {leader_addr}");
    let mut admin = berth_e2e::clusters(&leader_addr).await?;
    bounded(
        "UpdateCluster",
        admin.update_cluster(pb::UpdateClusterRequest {
            name: berth_types::DEFAULT_CLUSTER.into(),
            lost_after_secs: Some(args.lost_after_secs),
            task_retention_secs: None,
        }),
    )
    .await?;
    let mut defs = berth_e2e::taskdefs(&leader_addr).await?;
    for marker in ["1", "2"] {
        bounded(
            "RegisterTaskDefinition",
            defs.register_task_definition(pb::RegisterTaskDefinitionRequest {
                spec: Some(spec(FAMILY, marker)),
            }),
        )
        .await?;
    }

    let launched = hollow::launch(
        &leader_addr,
        servers.clone(),
        point.instances,
        HollowSize {
            cpu_units: HOLLOW_CPU_UNITS,
            memory_mib: HOLLOW_MEMORY_MIB,
            flush: REPORT_FLUSH,
        },
        "berth-bench services: hollow agents",
    )
    .await?;
    let mut fleet = launched.fleet;
    let pki = berth_e2e::test_pki();
    let client = BerthClient::new(
        ClientConfig::new(servers.clone())
            .with_ca(pki.ca_pem.clone())
            .with_token(pki.admin_token.clone()),
    )?;
    let limit = Duration::from_secs(args.step_timeout_secs);

    // ---- create to steady state.
    let tasks = point.tasks;
    let max = berth_types::service::MAX_DESIRED_COUNT;
    let count = tasks.div_ceil(max);
    if !tasks.is_multiple_of(count) {
        bail!("--tasks must split evenly into services of at most {max} tasks");
    }
    let per_service = tasks / count;
    let names: Vec<String> = (0..count).map(|i| format!("{SERVICE_PREFIX}{i}")).collect();
    println!(
        "CreateService of {count} x {per_service} tasks on {} instances",
        point.instances
    );
    let t0 = Instant::now();
    for name in &names {
        client
            .create_service(&CreateServiceInput {
                name: name.clone(),
                task_definition: format!("{FAMILY}:1"),
                desired_count: Some(per_service),
                ..Default::default()
            })
            .await?;
    }
    let create = until(&client, &names, t0, limit, "create", |all| {
        all_steady(all, per_service, &format!("{FAMILY}:1"))
    })
    .await?;
    println!("  steady after {:.2} s", create.as_secs_f64());

    // ---- idle with the service steady.
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!(
        "idle with {tasks} service tasks: measuring {} s",
        args.idle_secs
    );
    let window = CpuWindow::start(&clock, &watched);
    tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
    let idle = procs(&watched, Some(window.finish()));
    print_procs("idle", &idle);

    // ---- a rolling deployment of every task.
    println!("UpdateService to {FAMILY}:2, minimum 50% / maximum 200%");
    let window = CpuWindow::start(&clock, &watched);
    let t0 = Instant::now();
    for name in &names {
        client
            .update_service(&UpdateServiceInput {
                name: name.clone(),
                task_definition: Some(format!("{FAMILY}:2")),
                deployment_configuration: DeploymentConfigurationInput {
                    minimum_healthy_percent: Some(50),
                    maximum_percent: Some(200),
                    ..Default::default()
                },
                ..Default::default()
            })
            .await?;
    }
    let rollout = until(&client, &names, t0, limit, "rollout", |all| {
        all_steady(all, per_service, &format!("{FAMILY}:2"))
    })
    .await?;
    let during_rollout = procs(&watched, Some(window.finish()));
    println!("  COMPLETED after {:.2} s", rollout.as_secs_f64());
    print_procs("during the rollout", &during_rollout);

    // ---- many agents die at once.
    let all = client
        .list_tasks(&berth_types::TaskFilter {
            status: Some(berth_types::TaskStatus::Running),
            ..Default::default()
        })
        .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed = fleet.kill_first(point.lost);
    let lost_tasks = all
        .iter()
        .filter(|t| t.instance_id.as_ref().is_some_and(|i| killed.contains(i)))
        .count();
    println!(
        "killed {} hollow agents holding {lost_tasks} tasks (lost_after {} s)",
        killed.len(),
        args.lost_after_secs
    );
    let t0 = Instant::now();
    let mut loss_seen = None;
    let replace = until(&client, &names, t0, limit, "replacement", |all| {
        if loss_seen.is_none() && all.iter().any(|d| !d.service.steady) {
            loss_seen = Some(t0.elapsed());
        }
        loss_seen.is_some() && all_steady(all, per_service, &format!("{FAMILY}:2"))
    })
    .await?;
    let loss_seen = loss_seen.ok_or_else(|| anyhow!("the loss was never seen"))?;
    println!(
        "  lost tasks stopped after {:.2} s, all {tasks} RUNNING again after {:.2} s",
        loss_seen.as_secs_f64(),
        replace.as_secs_f64()
    );

    let mut notes = Vec::new();
    let stats = &fleet.stats;
    let failures = FleetStats::load(&stats.session_failures);
    if failures > point.lost as u64 {
        notes.push(format!(
            "{failures} hollow session failures (the {} killed ones end theirs); the first: {}",
            point.lost,
            stats.first_failure().unwrap_or_default()
        ));
    }
    drop(fleet);
    cluster::stop(cluster, args.logs.as_deref(), "services")?;
    Ok(Report {
        machine,
        instances: point.instances,
        tasks,
        services: count,
        lost: point.lost,
        lost_after_secs: args.lost_after_secs,
        heartbeat: args.heartbeat.clone(),
        idle_secs: args.idle_secs,
        register: launched.register,
        connect: launched.connect,
        create,
        rollout,
        lost_tasks,
        replace,
        loss_seen,
        idle,
        during_rollout,
        notes,
        elapsed: started.elapsed(),
    })
}

fn yes_no(met: bool) -> &'static str {
    if met {
        "yes"
    } else {
        "**no**"
    }
}

impl Report {
    fn idle_leader_cores(&self) -> Option<f64> {
        self.idle
            .iter()
            .find(|p| p.label.starts_with("leader"))
            .and_then(|p| p.cores)
    }

    fn replace_target(&self) -> Duration {
        Duration::from_secs(self.lost_after_secs) + TARGET_REPLACE_SLACK
    }

    fn all_met(&self) -> bool {
        self.create <= TARGET_CREATE
            && self.rollout <= TARGET_ROLLOUT
            && self.replace <= self.replace_target()
            && self
                .idle_leader_cores()
                .is_some_and(|c| c < TARGET_IDLE_LEADER_CORES)
    }

    /// One point's own figures, under level-4 headings.
    fn detail_markdown(&self) -> String {
        let mut s = String::new();
        s.push_str("#### Targets\n\n| Target (from the issue) | Required | Measured | Met |\n|---|---|---:|---|\n");
        s.push_str(&format!(
            "| REPLICA services of {} tasks in all ({} of {} each: a service holds at most 5,000), CreateService to steady state | at most {} s | {:.2} s | {} |\n",
            self.tasks,
            self.services,
            self.tasks / self.services.max(1),
            TARGET_CREATE.as_secs(),
            self.create.as_secs_f64(),
            yes_no(self.create <= TARGET_CREATE)
        ));
        s.push_str(&format!(
            "| Rolling deployment of all {} tasks (every service at once), minimum 50 / maximum 200, to COMPLETED | at most {} s | {:.2} s | {} |\n",
            self.tasks,
            TARGET_ROLLOUT.as_secs(),
            self.rollout.as_secs_f64(),
            yes_no(self.rollout <= TARGET_ROLLOUT)
        ));
        s.push_str(&format!(
            "| {} hollow agents killed at once ({} tasks), lost_after {} s: every lost task replaced and RUNNING | at most {} s | {:.2} s | {} |\n",
            self.lost,
            self.lost_tasks,
            self.lost_after_secs,
            self.replace_target().as_secs(),
            self.replace.as_secs_f64(),
            yes_no(self.replace <= self.replace_target())
        ));
        let idle_leader = self.idle_leader_cores();
        s.push_str(&format!(
            "| Idle leader CPU with the services steady | under {:.0}% of one core | {} | {} |\n\n",
            TARGET_IDLE_LEADER_CORES * 100.0,
            idle_leader.map_or("-".into(), |c| format!("{:.1}%", c * 100.0)),
            yes_no(idle_leader.is_some_and(|c| c < TARGET_IDLE_LEADER_CORES))
        ));
        s.push_str(&format!(
            "Joining: {} instances registered in {:.1} s, sessions up in {:.1} s; the loss was \
             first seen {:.2} s after the kill. The point took {} s.\n\n",
            self.instances,
            self.register.as_secs_f64(),
            self.connect.as_secs_f64(),
            self.loss_seen.as_secs_f64(),
            self.elapsed.as_secs(),
        ));
        s.push_str("Idle with the services steady:\n\n");
        s.push_str(&proc_table(&self.idle, true, true));
        s.push_str("\nDuring the rolling deployment:\n\n");
        s.push_str(&proc_table(&self.during_rollout, true, true));
        for note in &self.notes {
            s.push_str(&format!("\n- Note: {note}\n"));
        }
        s
    }
}

/// Every point of one `berth-bench services` run, smallest first.
pub struct Curve {
    pub reports: Vec<Report>,
    /// Points that did not finish, with why.
    pub failed: Vec<(Point, String)>,
    pub elapsed: Duration,
}

impl Curve {
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let Some(first) = self.reports.first() else {
            return s;
        };
        let m = &first.machine;
        s.push_str("## Services on hollow agents: `berth-bench services`\n\n");
        s.push_str(&format!("Measured {} (`date -u`).\n\n", m.date));
        s.push_str(
            "### Reproduce\n\n```sh\ncargo build --release -p berth-server -p berth-bench\n",
        );
        if let ([only], []) = (self.reports.as_slice(), self.failed.as_slice()) {
            s.push_str(&format!(
                "./target/release/berth-bench services --instances {} --tasks {} --lost {} --lost-after-secs {}\n```\n\n",
                only.instances, only.tasks, only.lost, only.lost_after_secs
            ));
        } else {
            let mut counts: Vec<usize> = self.reports.iter().map(|r| r.instances).collect();
            counts.extend(self.failed.iter().map(|(p, _)| p.instances));
            counts.sort_unstable();
            let counts: Vec<String> = counts.iter().map(|n| n.to_string()).collect();
            s.push_str(&format!(
                "./target/release/berth-bench services --instances {} --lost-after-secs {}\n```\n\n",
                counts.join(","),
                first.lost_after_secs
            ));
        }
        s.push_str(&format!(
            "Each count of `--instances` is one point on a fresh 3-server cluster, with 10 desired \
             tasks per instance (`--tasks-per-instance`) up to the bench's 20,000 (4 services of \
             5,000, the most a service holds), and a tenth of the instances killed at once. The \
             run took {} s and rewrites only this section (`--no-doc` leaves it alone).\n\n",
            self.elapsed.as_secs()
        ));
        s.push_str("### Machine\n\n| nproc | CPU | Memory | Kernel |\n|---:|---|---|---|\n");
        s.push_str(&format!(
            "| {} | {} | {} | {} |\n\n",
            m.nproc, m.cpu_model, m.memory, m.kernel
        ));
        s.push_str(&format!(
            "### The curve\n\nTargets (from the issue), at every point: create to steady state \
             at most {} s, rolling deployment to COMPLETED at most {} s, lost tasks replaced and \
             RUNNING at most lost_after + {} s, idle leader under {:.0}% of one core.\n\n",
            TARGET_CREATE.as_secs(),
            TARGET_ROLLOUT.as_secs(),
            TARGET_REPLACE_SLACK.as_secs(),
            TARGET_IDLE_LEADER_CORES * 100.0
        ));
        s.push_str(
            "| Instances | Tasks (services) | Create (s) | Rollout (s) | Killed agents (their \
             tasks) | Replaced (s) | Idle leader CPU (% of a core) | Idle leader RSS (MiB) | \
             CPU during the rollout, cores: leader / followers / bench / other | All targets met \
             |\n|---:|---:|---:|---:|---:|---:|---:|---:|---|---|\n",
        );
        for r in &self.reports {
            let leader = r.idle.iter().find(|p| p.label.starts_with("leader"));
            let c = |v: Option<f64>| v.map_or("-".into(), |c| format!("{c:.2}"));
            let followers: Vec<String> = r
                .during_rollout
                .iter()
                .filter(|p| p.label.starts_with("server"))
                .map(|p| c(p.cores))
                .collect();
            let of = |label: &str| {
                r.during_rollout
                    .iter()
                    .find(|p| p.label == label)
                    .and_then(|p| p.cores)
            };
            s.push_str(&format!(
                "| {} | {} ({}) | {:.2} | {:.2} | {} ({}) | {:.2} | {} | {} | {} / {} / {} / {} | {} |\n",
                r.instances,
                r.tasks,
                r.services,
                r.create.as_secs_f64(),
                r.rollout.as_secs_f64(),
                r.lost,
                r.lost_tasks,
                r.replace.as_secs_f64(),
                r.idle_leader_cores()
                    .map_or("-".into(), |c| format!("{:.1}%", c * 100.0)),
                leader
                    .and_then(|p| p.rss_mib())
                    .map_or("-".into(), |m| format!("{m:.0}")),
                c(r.during_rollout
                    .iter()
                    .find(|p| p.label.starts_with("leader"))
                    .and_then(|p| p.cores)),
                followers.join(" + "),
                c(of("bench")),
                c(of("other")),
                yes_no(r.all_met()),
            ));
        }
        for (point, _) in &self.failed {
            s.push_str(&format!(
                "| {} | {} | failed | - | {} | - | - | - | - | **no** |\n",
                point.instances, point.tasks, point.lost
            ));
        }
        for (point, error) in &self.failed {
            let short: String = error.chars().take(1500).collect();
            s.push_str(&format!(
                "\nThe {}-instance point failed: {}\n",
                point.instances,
                short.replace('\n', " ")
            ));
        }
        s.push_str("\n### How it was measured, and what limits the figures\n\n");
        s.push_str(&format!(
            "- Per point: 3 berthd servers (release build, default Raft timings, \
             `--agent-heartbeat {}`) started afresh, and the point's hollow agents in the bench \
             process, each offering {HOLLOW_CPU_UNITS} CPU units and {HOLLOW_MEMORY_MIB} MiB and \
             reporting a task RUNNING as soon as it is assigned and STOPPED as soon as it is \
             asked to stop (reports batched for {} ms). Tasks reserve {TASK_CPU_UNITS} units and \
             {TASK_MEMORY_MIB} MiB.\n\
             - Each time is from the call (or the kill) to the first DescribeServices answer \
             (polled every {} ms through the client, any server) showing the desired count \
             RUNNING, nothing pending, one COMPLETED deployment and the steady state.\n\
             - The replacement clock starts at the kill. A killed hollow agent's connection \
             closes, as a killed process's does, so berthd marks its instance DISCONNECTED 2 s \
             after its session ended (or after three silent heartbeat periods, if sooner), and \
             declares it lost `lost_after` after its last heartbeat: the figure is at most \
             `lost_after` plus the time to notice, stop, re-place and report the lost tasks.\n\
             - Idle CPU over {} s from `/proc/PID/stat` with the services steady; everything \
             shares the machine's {} cores, so the figures move with whatever else runs (see \
             *other*).\n\n",
            first.heartbeat,
            REPORT_FLUSH.as_millis(),
            POLL.as_millis(),
            first.idle_secs,
            m.nproc
        ));
        s.push_str("### Each point\n\n");
        for r in &self.reports {
            s.push_str(&format!(
                "<details><summary>{} instances, {} tasks</summary>\n\n{}\n</details>\n\n",
                r.instances,
                r.tasks,
                r.detail_markdown()
            ));
        }
        s.trim_end().to_string() + "\n"
    }
}
