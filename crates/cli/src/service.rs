//! `berth service ...`: commands and what they print.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use berth_client::BerthClient;
use berth_ecs::service::parse_service;
use berth_ecs::taskdef::FileFormat;
use berth_types::service::{
    BlueGreen, CircuitBreaker, CreateServiceInput, DeploymentConfigurationInput,
    DeploymentController, DeploymentView, LoadBalancer, SchedulingStrategy, ServiceDescription,
    TrafficShift, UpdateServiceInput,
};
use berth_types::time::rfc3339;
use berth_types::{DeploymentStatus, RolloutState};

use crate::args::{
    ControllerArg, DeploymentArgs, SchedulingStrategyArg, ServiceCommand, ServiceCreateArgs,
    ServiceUpdateArgs,
};
use crate::ids::Kind;
use crate::output::{age, age_column, render, Format, Table, View};

/// How often `--wait` and `events --follow` look again.
const POLL: Duration = Duration::from_secs(1);

pub async fn service(
    connect: impl FnOnce() -> anyhow::Result<BerthClient>,
    format: Format,
    command: ServiceCommand,
) -> anyhow::Result<String> {
    let view = format.view();
    match command {
        ServiceCommand::Create(args) => {
            let wait = args.wait;
            let input = create_input(args)?;
            let client = connect()?;
            let created = client.create_service(&input).await?;
            if wait {
                let id = primary_id(&created)?;
                return watch(
                    &client,
                    &created.service.cluster,
                    &created.service.name,
                    &id,
                    format,
                )
                .await;
            }
            render(format, &created, |s| service_detail(s, view))
        }
        ServiceCommand::Update(args) => {
            let wait = args.wait;
            let input = update_input(args);
            let client = connect()?;
            let updated = client.update_service(&input).await?;
            if wait {
                let id = primary_id(&updated)?;
                return watch(
                    &client,
                    &updated.service.cluster,
                    &updated.service.name,
                    &id,
                    format,
                )
                .await;
            }
            render(format, &updated, |s| service_detail(s, view))
        }
        ServiceCommand::Delete {
            name,
            cluster,
            force,
        } => {
            let deleted = connect()?
                .delete_service(cluster.as_deref().unwrap_or_default(), &name, force)
                .await?;
            render(format, &deleted, |s| {
                format!(
                    "service {} is {}: its tasks stop, then it is INACTIVE (berth service list --all)\n",
                    s.service.name,
                    s.service.status.as_str()
                )
            })
        }
        ServiceCommand::List {
            cluster,
            all,
            all_clusters,
            watch,
        } => {
            let client = &connect()?;
            let cluster = cluster.as_deref().unwrap_or_default();
            let view = View {
                clusters: all_clusters,
                ..view
            };
            crate::watch::run(watch, format, move || async move {
                let mut services = if all_clusters {
                    services_everywhere(client, all).await?
                } else {
                    client.list_services(cluster, None, all).await?
                };
                crate::output::oldest_first(&mut services);
                let now = berth_client::time::now_ms();
                render(format, services.as_slice(), |s| {
                    services_table(s, now, view)
                })
            })
            .await
        }
        ServiceCommand::Describe {
            names,
            cluster,
            watch,
        } => {
            let client = &connect()?;
            let (cluster, names) = (cluster.as_deref().unwrap_or_default(), &names);
            crate::watch::run(watch, format, move || async move {
                let (found, missing) = client.describe_services(cluster, names).await?;
                if !missing.is_empty() {
                    let names: Vec<&str> = missing.iter().map(|m| m.name.as_str()).collect();
                    if found.is_empty() {
                        bail!(
                            "no such service: {} (`berth service list` shows them)",
                            names.join(", ")
                        );
                    }
                    crate::warn(&[format!("no such service: {}", names.join(", "))]);
                }
                render(format, found.as_slice(), |all| {
                    all.iter()
                        .map(|s| service_detail(s, view))
                        .collect::<Vec<_>>()
                        .join("\n")
                })
            })
            .await
        }
        ServiceCommand::Stats { name, cluster } => {
            let client = connect()?;
            crate::stats::show_service(
                format,
                client
                    .service_stats(cluster.as_deref().unwrap_or_default(), &name)
                    .await?,
            )
        }
        ServiceCommand::History {
            name,
            cluster,
            follow,
        } => {
            let cluster = cluster.unwrap_or_else(|| berth_types::DEFAULT_CLUSTER.to_string());
            crate::journal::history(
                &connect()?,
                format,
                format!("service/{cluster}/{name}"),
                follow,
            )
            .await
        }
        ServiceCommand::Events {
            name,
            cluster,
            follow,
        } => {
            let client = connect()?;
            let cluster = cluster.unwrap_or_default();
            let service = client.describe_service(&cluster, &name).await?;
            let mut events = service.service.events.clone();
            events.reverse();
            if !follow || !format.is_table() {
                return render(format, events.as_slice(), |e| {
                    e.iter().map(event_line).collect::<String>()
                });
            }
            let mut last = 0;
            loop {
                let mut out = std::io::stdout().lock();
                let seen = last;
                for e in events.iter().filter(|e| e.id > seen) {
                    write!(out, "{}", event_line(e))?;
                    last = e.id;
                }
                out.flush()?;
                drop(out);
                tokio::time::sleep(POLL * 2).await;
                events = client
                    .describe_service(&cluster, &name)
                    .await?
                    .service
                    .events;
                events.reverse();
            }
        }
        ServiceCommand::Endpoints {
            name,
            cluster,
            watch,
        } => {
            let client = connect()?;
            let mut sets = client.watch_endpoints(cluster.as_deref().unwrap_or_default(), &name);
            loop {
                let set = sets.next().await?;
                let shown = render(format, set.endpoints.as_slice(), |e| {
                    endpoints_table(e, view)
                })?;
                if !watch {
                    return Ok(shown);
                }
                let mut out = std::io::stdout().lock();
                writeln!(out, "{shown}")?;
                out.flush()?;
            }
        }
        ServiceCommand::Rollback { name, cluster } => {
            let service = connect()?
                .rollback_service(cluster.as_deref().unwrap_or_default(), &name)
                .await?;
            render(format, &service, |s| service_detail(s, view))
        }
        ServiceCommand::Deployments { name, cluster } => {
            let deployments = connect()?
                .list_service_deployments(cluster.as_deref().unwrap_or_default(), &name)
                .await?;
            render(format, deployments.as_slice(), |d| {
                deployments_table(d, view)
            })
        }
    }
}

/// The services of every cluster. A cluster deleted between the two calls
/// has none.
async fn services_everywhere(
    client: &BerthClient,
    include_inactive: bool,
) -> anyhow::Result<Vec<ServiceDescription>> {
    let mut services = Vec::new();
    for cluster in client.list_clusters().await? {
        match client
            .list_services(&cluster.name, None, include_inactive)
            .await
        {
            Ok(found) => services.extend(found),
            Err(e) if e.api_code() == Some(berth_client::Code::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(services)
}

fn primary_id(s: &ServiceDescription) -> anyhow::Result<String> {
    s.service
        .primary()
        .map(|d| d.id.clone())
        .context("the service has no deployment to wait for")
}

fn strategy(arg: SchedulingStrategyArg) -> SchedulingStrategy {
    match arg {
        SchedulingStrategyArg::Replica => SchedulingStrategy::Replica,
        SchedulingStrategyArg::Daemon => SchedulingStrategy::Daemon,
    }
}

fn secs(d: Duration) -> u64 {
    d.as_secs().max(1)
}

/// The rollout flags over what a file or the defaults say.
fn deployment_input(
    args: &DeploymentArgs,
    base: DeploymentConfigurationInput,
) -> DeploymentConfigurationInput {
    let mut config = base;
    if let Some(n) = args.min_healthy_percent {
        config.minimum_healthy_percent = Some(n);
    }
    if let Some(n) = args.max_percent {
        config.maximum_percent = Some(n);
    }
    if args.circuit_breaker {
        config.circuit_breaker = Some(CircuitBreaker {
            enable: true,
            rollback: args.rollback,
            threshold: args.failure_threshold,
        });
    }
    if let Some(d) = args.deployment_timeout {
        config.timeout_secs = Some(secs(d));
    }
    let blue_green_flags = args.traffic_shift.is_some() || args.bake_time.is_some();
    match args.deployment_controller {
        Some(ControllerArg::Rolling) => config.controller = Some(DeploymentController::Rolling),
        Some(ControllerArg::BlueGreen) => {
            config.controller = Some(DeploymentController::BlueGreen(BlueGreen {
                traffic: TrafficShift::AllAtOnce,
                bake_time_secs: 0,
            }))
        }
        None => {}
    }
    if blue_green_flags {
        // The shift and bake time tune blue/green, whether this command or
        // the file chose it; the server refuses them for a rolling service.
        let mut blue_green = match config.controller {
            Some(DeploymentController::BlueGreen(b)) => b,
            _ => BlueGreen {
                traffic: TrafficShift::AllAtOnce,
                bake_time_secs: 0,
            },
        };
        if let Some(shift) = args.traffic_shift {
            blue_green.traffic = shift;
        }
        if let Some(bake) = args.bake_time {
            blue_green.bake_time_secs = u32::try_from(bake.as_secs()).unwrap_or(u32::MAX);
        }
        config.controller = Some(DeploymentController::BlueGreen(blue_green));
    }
    config
}

fn read_file(path: &Path) -> anyhow::Result<String> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
        return Ok(text);
    }
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

pub fn create_input(args: ServiceCreateArgs) -> anyhow::Result<CreateServiceInput> {
    let mut input = match &args.file {
        Some(path) => {
            let text = read_file(path)?;
            let parsed = parse_service(&text, FileFormat::Auto).map_err(|errors| {
                crate::errors::InvalidFile {
                    file: path.display().to_string(),
                    errors,
                }
            })?;
            if !parsed.ignored_fields.is_empty() {
                crate::warn(&[format!(
                    "{}: ignored (ECS-only): {}",
                    path.display(),
                    parsed.ignored_fields.join(", ")
                )]);
            }
            parsed.input
        }
        None => CreateServiceInput::default(),
    };
    if let Some(name) = args.name {
        input.name = name;
    }
    if let Some(cluster) = args.cluster {
        input.cluster = cluster;
    }
    if let Some(td) = args.task_definition {
        input.task_definition = td;
    }
    if let Some(n) = args.desired_count {
        input.desired_count = Some(n);
    }
    if let Some(s) = args.scheduling_strategy {
        input.scheduling_strategy = strategy(s);
    }
    if !args.placement_strategies.is_empty() {
        input.placement_strategies = args.placement_strategies;
    }
    if !args.placement_constraints.is_empty() {
        input.placement_constraints = args.placement_constraints;
    }
    input.deployment_configuration =
        deployment_input(&args.deployment, input.deployment_configuration);
    if let Some(grace) = args.deployment.health_check_grace {
        input.health_check_grace_period_secs = u32::try_from(secs(grace)).unwrap_or(u32::MAX);
    }
    input.tags.extend(args.tags);
    let delay = args.deregistration_delay.map_or(
        berth_types::service::DEFAULT_DEREGISTRATION_DELAY_SECS,
        |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX),
    );
    for (name, container_name, container_port) in args.load_balancers {
        input.load_balancers.push(LoadBalancer {
            name,
            container_name,
            container_port,
            deregistration_delay_secs: delay,
        });
    }
    if input.name.is_empty() {
        bail!("--name is required (or serviceName in --file)");
    }
    if input.task_definition.is_empty() {
        bail!("--taskdef is required (or taskDefinition in --file)");
    }
    Ok(input)
}

pub fn update_input(args: ServiceUpdateArgs) -> UpdateServiceInput {
    let (strategies, constraints) = if args.clear_placement {
        (Some(Vec::new()), Some(Vec::new()))
    } else {
        (
            Some(args.placement_strategies).filter(|v| !v.is_empty()),
            Some(args.placement_constraints).filter(|v| !v.is_empty()),
        )
    };
    UpdateServiceInput {
        cluster: args.cluster.unwrap_or_default(),
        name: args.name,
        task_definition: args.task_definition,
        desired_count: args.desired_count,
        deployment_configuration: deployment_input(&args.deployment, Default::default()),
        placement_strategies: strategies,
        placement_constraints: constraints,
        health_check_grace_period_secs: args
            .deployment
            .health_check_grace
            .map(|g| u32::try_from(secs(g)).unwrap_or(u32::MAX)),
        force_new_deployment: args.force_new_deployment,
    }
}

// ------------------------------------------------------------------ wait

/// How a watched deployment ended, if it has.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    Failed(String),
}

/// Whether deployment `id` of the service has finished, and how.
pub fn outcome(s: &ServiceDescription, id: &str) -> Option<Outcome> {
    let d = s.deployments.iter().find(|d| d.deployment.id == id)?;
    match d.deployment.rollout_state {
        RolloutState::Completed => Some(Outcome::Completed),
        RolloutState::Failed => {
            let mut why = format!(
                "deployment {id} of service {} FAILED: {}",
                s.service.name, d.deployment.rollout_state_reason
            );
            if let Some(rollback) = s
                .deployments
                .iter()
                .find(|r| r.deployment.rollback_of.as_deref() == Some(id))
            {
                why.push_str(&format!(
                    "; rolling back to {} (deployment {})",
                    rollback.deployment.task_definition, rollback.deployment.id
                ));
            }
            Some(Outcome::Failed(why))
        }
        RolloutState::InProgress if d.deployment.status != DeploymentStatus::Primary => {
            Some(Outcome::Failed(format!(
                "deployment {id} of service {} was superseded by a newer deployment",
                s.service.name
            )))
        }
        RolloutState::InProgress => None,
    }
}

/// One line per current deployment, as `--wait` shows them.
pub fn progress_lines(s: &ServiceDescription) -> Vec<String> {
    s.deployments
        .iter()
        .filter(|d| d.deployment.status != DeploymentStatus::Inactive)
        .map(|d| {
            format!(
                "{:<8} {} {:<12} {:<11} desired {:>4}  pending {:>4}  running {:>4}  healthy {:>4}  failed {:>3}",
                d.deployment.status.as_str(),
                d.deployment.id,
                d.deployment.task_definition,
                d.deployment.rollout_state.as_str(),
                d.deployment.desired_count,
                d.counts.pending,
                d.counts.running,
                d.counts.healthy,
                d.deployment.failed_tasks
            )
        })
        .collect()
}

/// Follows deployment `id` until it completes (Ok) or fails (Err, so the
/// exit status is 1). In a terminal the view redraws in place; otherwise a
/// line is printed whenever something changed.
async fn watch(
    client: &BerthClient,
    cluster: &str,
    name: &str,
    id: &str,
    format: Format,
) -> anyhow::Result<String> {
    let tty = std::io::stdout().is_terminal() && format.is_table();
    let mut shown: Vec<String> = Vec::new();
    loop {
        let s = client.describe_service(cluster, name).await?;
        let lines = progress_lines(&s);
        if lines != shown {
            let mut out = std::io::stdout().lock();
            if tty && !shown.is_empty() {
                // Up over the previous view, then clear to the end.
                write!(out, "\x1b[{}A\x1b[J", shown.len())?;
            }
            if format.is_table() {
                for line in &lines {
                    writeln!(out, "{line}")?;
                }
            }
            out.flush()?;
            shown = lines;
        }
        match outcome(&s, id) {
            Some(Outcome::Completed) => {
                let done = format!("deployment {id} of service {name} COMPLETED\n");
                return render(format, &s, |_| done.clone());
            }
            Some(Outcome::Failed(why)) => {
                if !format.is_table() {
                    print!("{}", render(format, &s, |_| String::new())?);
                }
                bail!(why);
            }
            None => tokio::time::sleep(POLL).await,
        }
    }
}

// ---------------------------------------------------------------- tables

/// One row per service; AGE is how long ago it was created. Wide tables
/// add the healthy count.
pub fn services_table(services: &[ServiceDescription], now_ms: i64, view: View) -> String {
    let mut headers = vec!["NAME"];
    if view.cluster_column() {
        headers.push("CLUSTER");
    }
    headers.extend([
        "STATUS", "STRATEGY", "TASKDEF", "DESIRED", "RUNNING", "PENDING",
    ]);
    if view.wide {
        headers.push("HEALTHY");
    }
    headers.extend(["ROLLOUT", "AGE"]);
    let mut table = Table::new(headers).status_columns(&["STATUS", "ROLLOUT"]);
    for d in services {
        let s = &d.service;
        let mut row = vec![s.name.clone()];
        if view.cluster_column() {
            row.push(s.cluster.clone());
        }
        row.extend([
            s.status.as_str().to_string(),
            s.scheduling_strategy.as_str().to_string(),
            s.task_definition.clone(),
            s.desired_count.to_string(),
            d.running_count.to_string(),
            d.pending_count.to_string(),
        ]);
        if view.wide {
            row.push(d.healthy_count.to_string());
        }
        row.extend([
            s.primary()
                .map_or("-".to_string(), |p| p.rollout_state.as_str().to_string()),
            age_column(s.created_at_ms, now_ms),
        ]);
        table.row(row);
    }
    table.render()
}

pub fn deployments_table(deployments: &[DeploymentView], view: View) -> String {
    let now = berth_client::time::now_ms();
    let mut table = Table::new([
        "ID", "STATUS", "TASKDEF", "DESIRED", "PENDING", "RUNNING", "HEALTHY", "FAILED", "TRAFFIC",
        "ROLLOUT", "CREATED", "REASON",
    ])
    .status_columns(&["ROLLOUT"]);
    for d in deployments {
        let x = &d.deployment;
        let traffic = if x.status == DeploymentStatus::Inactive {
            "-".to_string()
        } else {
            format!("{}%", x.traffic_percent)
        };
        table.row([
            view.id(Kind::Deployment, &x.id),
            x.status.as_str().to_string(),
            x.task_definition.clone(),
            x.desired_count.to_string(),
            d.counts.pending.to_string(),
            d.counts.running.to_string(),
            d.counts.healthy.to_string(),
            x.failed_tasks.to_string(),
            traffic,
            x.rollout_state.as_str().to_string(),
            age(x.created_at_ms, now),
            x.rollout_state_reason.clone(),
        ]);
    }
    table.render()
}

pub fn endpoints_table(endpoints: &[berth_types::endpoints::Endpoint], view: View) -> String {
    let mut table = Table::new([
        "ADDRESS",
        "PORT",
        "PROTOCOL",
        "CONTAINER",
        "WEIGHT",
        "LOAD BALANCERS",
        "TASK",
        "INSTANCE",
    ]);
    for e in endpoints {
        let weight = if e.draining {
            "draining".to_string()
        } else {
            e.weight.to_string()
        };
        let balancers = if e.load_balancers.is_empty() {
            "-".to_string()
        } else {
            e.load_balancers.join(",")
        };
        table.row([
            e.address.clone(),
            e.port.to_string(),
            e.protocol.as_str().to_string(),
            format!("{}:{}", e.container_name, e.container_port),
            weight,
            balancers,
            view.id(Kind::Task, &e.task_id),
            view.id(Kind::Instance, &e.instance_id),
        ]);
    }
    table.render()
}

fn event_line(e: &berth_types::ServiceEvent) -> String {
    format!("{}  {}\n", rfc3339(e.created_at_ms), e.message)
}

/// Events shown by `describe`.
const EVENTS_IN_DETAIL: usize = 10;

pub fn service_detail(d: &ServiceDescription, view: View) -> String {
    let s = &d.service;
    let c = &s.deployment_configuration;
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<22}{v}\n"));
    line("Service:", s.name.clone());
    line("Cluster:", s.cluster.clone());
    line("Status:", s.status.as_str().to_string());
    line(
        "Scheduling strategy:",
        s.scheduling_strategy.as_str().to_string(),
    );
    line("Task definition:", s.task_definition.clone());
    line(
        "Tasks:",
        format!(
            "{} desired, {} running ({} healthy), {} pending",
            s.desired_count, d.running_count, d.healthy_count, d.pending_count
        ),
    );
    if !s.placement_strategies.is_empty() {
        line("Placement strategy:", s.placement_strategies.join(", "));
    }
    if !s.placement_constraints.is_empty() {
        line("Placement constraints:", s.placement_constraints.join(", "));
    }
    let breaker = if c.circuit_breaker.enable {
        format!(
            "on (threshold {} failed tasks{})",
            c.circuit_breaker.threshold_for(s.desired_count),
            if c.circuit_breaker.rollback {
                ", rollback"
            } else {
                ""
            }
        )
    } else {
        "off".to_string()
    };
    line(
        "Deployments:",
        format!(
            "minimum healthy {}%, maximum {}%, circuit breaker {breaker}, deadline {}s",
            c.minimum_healthy_percent, c.maximum_percent, c.timeout_secs
        ),
    );
    if let Some(b) = c.blue_green() {
        line(
            "Deployment controller:",
            format!(
                "blue/green, traffic {}, bake time {}s",
                b.traffic.describe(),
                b.bake_time_secs
            ),
        );
    }
    for lb in &s.load_balancers {
        line(
            "Load balancer:",
            format!(
                "{} -> {}:{} (deregistration delay {}s)",
                lb.name, lb.container_name, lb.container_port, lb.deregistration_delay_secs
            ),
        );
    }
    if s.health_check_grace_period_secs > 0 {
        line(
            "Health check grace:",
            format!("{}s", s.health_check_grace_period_secs),
        );
    }
    let now = berth_client::time::now_ms();
    if s.throttle.until_ms > now {
        line(
            "Backed off until:",
            format!(
                "{} after {} failures in a row",
                rfc3339(s.throttle.until_ms),
                s.throttle.failures
            ),
        );
    }
    for r in &d.pending_reasons {
        line(
            "Waiting for placement:",
            format!(
                "{} {}: {}",
                r.tasks,
                if r.tasks == 1 { "task" } else { "tasks" },
                r.reason
            ),
        );
    }
    if !s.tags.is_empty() {
        let tags: Vec<String> = s.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        line("Tags:", tags.join(", "));
    }
    out.push('\n');
    let current: Vec<DeploymentView> = d
        .deployments
        .iter()
        .filter(|x| x.deployment.status != DeploymentStatus::Inactive)
        .cloned()
        .collect();
    out.push_str(&deployments_table(&current, view));
    if !s.events.is_empty() {
        out.push_str("\nEvents (newest first):\n");
        for e in s.events.iter().take(EVENTS_IN_DETAIL) {
            out.push_str(&format!("  {}", event_line(e)));
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::args::{Cli, Command};
    use berth_types::service::{DeploymentCounts, ServiceSpec};
    use berth_types::Deployment;
    use clap::Parser;

    fn parse(args: &[&str]) -> ServiceCommand {
        let cli = Cli::try_parse_from(std::iter::once("berth").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{e}"));
        match cli.command {
            Command::Service(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn create_flags_become_the_input() {
        let ServiceCommand::Create(args) = parse(&[
            "service",
            "create",
            "--name",
            "web",
            "--taskdef",
            "web:1",
            "--desired-count",
            "3",
            "--placement-strategy",
            "spread:instanceId",
            "--min-healthy-percent",
            "50",
            "--max-percent",
            "150",
            "--circuit-breaker",
            "--rollback",
            "--failure-threshold",
            "3",
            "--health-check-grace",
            "30s",
            "--deployment-timeout",
            "5m",
            "--tag",
            "team=a",
        ]) else {
            panic!()
        };
        let input = create_input(args).unwrap();
        assert_eq!(
            (input.name.as_str(), input.task_definition.as_str()),
            ("web", "web:1")
        );
        assert_eq!(input.desired_count, Some(3));
        assert_eq!(input.placement_strategies, ["spread:instanceId"]);
        let c = input.deployment_configuration;
        assert_eq!(
            (c.minimum_healthy_percent, c.maximum_percent),
            (Some(50), Some(150))
        );
        assert_eq!(
            c.circuit_breaker,
            Some(CircuitBreaker {
                enable: true,
                rollback: true,
                threshold: Some(3)
            })
        );
        assert_eq!(c.timeout_secs, Some(300));
        assert_eq!(input.health_check_grace_period_secs, 30);
        assert_eq!(input.tags.get("team").map(String::as_str), Some("a"));
        // What the server makes of it.
        let spec: ServiceSpec = input.into_spec("default");
        assert_eq!(spec.deployment_configuration.minimum_healthy_percent, 50);
    }

    #[test]
    fn load_balancer_and_blue_green_flags_become_the_input() {
        let ServiceCommand::Create(args) = parse(&[
            "service",
            "create",
            "--name",
            "web",
            "--taskdef",
            "web",
            "--load-balancer",
            "public:app:8080",
            "--deregistration-delay",
            "5s",
            "--deployment-controller",
            "blue-green",
            "--traffic-shift",
            "canary:10:2m",
            "--bake-time",
            "1m",
        ]) else {
            panic!()
        };
        let input = create_input(args).unwrap();
        assert_eq!(
            input.load_balancers,
            [LoadBalancer {
                name: "public".into(),
                container_name: "app".into(),
                container_port: 8080,
                deregistration_delay_secs: 5,
            }]
        );
        assert_eq!(
            input.deployment_configuration.controller,
            Some(DeploymentController::BlueGreen(BlueGreen {
                traffic: TrafficShift::Canary {
                    percent: 10,
                    interval_secs: 120
                },
                bake_time_secs: 60,
            }))
        );
        for bad in ["canary:10", "sideways:10:1m", "linear:x:1m", "canary:10:0s"] {
            let parsed =
                Cli::try_parse_from(["berth", "service", "update", "web", "--traffic-shift", bad]);
            assert!(parsed.is_err(), "{bad} was accepted");
        }
        let ServiceCommand::Update(args) = parse(&[
            "service",
            "update",
            "web",
            "--deployment-controller",
            "rolling",
        ]) else {
            panic!()
        };
        assert_eq!(
            update_input(args).deployment_configuration.controller,
            Some(DeploymentController::Rolling)
        );
    }

    #[test]
    fn flags_override_the_file_and_ecs_only_fields_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.json");
        std::fs::write(
            &path,
            r#"{"serviceName": "web", "taskDefinition": "web:1", "desiredCount": 2, "launchType": "EC2"}"#,
        )
        .unwrap();
        let file = path.to_str().unwrap();
        let ServiceCommand::Create(args) =
            parse(&["service", "create", "-f", file, "--desired-count", "5"])
        else {
            panic!()
        };
        let input = create_input(args).unwrap();
        assert_eq!(input.desired_count, Some(5));
        assert_eq!(input.task_definition, "web:1");
        let ServiceCommand::Create(args) = parse(&["service", "create", "--taskdef", "web"]) else {
            panic!()
        };
        assert!(create_input(args)
            .unwrap_err()
            .to_string()
            .contains("--name"));
    }

    #[test]
    fn rollback_needs_the_circuit_breaker() {
        let err = Cli::try_parse_from([
            "berth",
            "service",
            "create",
            "--name",
            "w",
            "--taskdef",
            "w",
            "--rollback",
        ]);
        assert!(err.is_err());
    }

    #[test]
    fn update_flags_leave_the_rest_unset() {
        let ServiceCommand::Update(args) =
            parse(&["service", "update", "web", "--taskdef", "web:2", "--wait"])
        else {
            panic!()
        };
        assert!(args.wait);
        let input = update_input(args);
        assert_eq!(input.task_definition.as_deref(), Some("web:2"));
        assert_eq!(input.desired_count, None);
        assert_eq!(input.placement_strategies, None);
        assert_eq!(input.deployment_configuration, Default::default());
        let ServiceCommand::Update(args) =
            parse(&["service", "update", "web", "--clear-placement"])
        else {
            panic!()
        };
        assert_eq!(update_input(args).placement_constraints, Some(vec![]));
    }

    pub(crate) fn described(
        deployments: Vec<(&str, DeploymentStatus, RolloutState, Option<&str>)>,
    ) -> ServiceDescription {
        let views: Vec<DeploymentView> = deployments
            .into_iter()
            .map(|(id, status, state, rollback_of)| DeploymentView {
                deployment: Deployment {
                    traffic_at_ms: 0,
                    traffic_percent: 100,
                    id: id.into(),
                    status,
                    task_definition: format!("web:{}", &id[id.len() - 1..]),
                    desired_count: 2,
                    rollout_state: state,
                    rollout_state_reason: "3 tasks failed".into(),
                    failed_tasks: 3,
                    rollback_of: rollback_of.map(Into::into),
                    created_at_ms: 0,
                    updated_at_ms: 0,
                },
                counts: DeploymentCounts {
                    pending: 1,
                    running: 1,
                    healthy: 1,
                },
            })
            .collect();
        let mut service = berth_types::Service {
            load_balancers: Vec::new(),
            cluster: "default".into(),
            name: "web".into(),
            status: berth_types::ServiceStatus::Active,
            task_definition: "web:2".into(),
            desired_count: 2,
            scheduling_strategy: SchedulingStrategy::Replica,
            placement_strategies: vec![],
            placement_constraints: vec![],
            deployment_configuration: berth_types::DeploymentConfiguration::defaults_for(
                SchedulingStrategy::Replica,
            ),
            health_check_grace_period_secs: 0,
            tags: Default::default(),
            deployments: vec![],
            finished_deployments: vec![],
            events: vec![],
            next_event_id: 1,
            throttle: Default::default(),
            steady: false,
            stable_task_definition: None,
            created_at_ms: 0,
            updated_at_ms: 0,
        };
        service.deployments = views.iter().map(|v| v.deployment.clone()).collect();
        ServiceDescription {
            service,
            running_count: 1,
            pending_count: 1,
            healthy_count: 1,
            deployments: views,
            pending_reasons: vec![],
        }
    }

    #[test]
    fn wait_ends_on_completion_failure_rollback_or_supersession() {
        use DeploymentStatus::*;
        use RolloutState::*;
        let s = described(vec![
            ("d2", Primary, InProgress, None),
            ("d1", Active, Completed, None),
        ]);
        assert_eq!(outcome(&s, "d2"), None);
        assert_eq!(progress_lines(&s).len(), 2);
        assert!(
            progress_lines(&s)[0].contains("desired    2  pending    1"),
            "{}",
            progress_lines(&s)[0]
        );
        let s = described(vec![("d2", Primary, Completed, None)]);
        assert_eq!(outcome(&s, "d2"), Some(Outcome::Completed));
        let s = described(vec![
            ("d3", Primary, InProgress, Some("d2")),
            ("d2", Active, Failed, None),
        ]);
        let Some(Outcome::Failed(why)) = outcome(&s, "d2") else {
            panic!()
        };
        assert!(why.contains("FAILED: 3 tasks failed"), "{why}");
        assert!(
            why.contains("rolling back to web:3 (deployment d3)"),
            "{why}"
        );
        let s = described(vec![
            ("d3", Primary, InProgress, None),
            ("d2", Active, InProgress, None),
        ]);
        let Some(Outcome::Failed(why)) = outcome(&s, "d2") else {
            panic!()
        };
        assert!(why.contains("superseded"), "{why}");
    }
}
