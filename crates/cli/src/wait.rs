//! `berth wait`: block until tasks or services reach a state, as
//! `aws ecs wait` does, so scripts can go on only when they have.

use std::future::Future;
use std::io::{self, IsTerminal};
use std::time::Duration;

use anyhow::bail;
use berth_client::{BerthClient, ClientError, Code};
use berth_types::service::ServiceDescription;
use berth_types::{DeploymentStatus, ServiceStatus, Task, TaskStatus};
use clap::{Args, Subcommand};
use tokio::time::Instant;

use crate::args::duration_arg;
use crate::ids::{self, short, Kind};

/// How often the state is looked at again.
const POLL: Duration = Duration::from_secs(2);

#[derive(Debug, Subcommand)]
pub enum WaitCommand {
    /// Wait until every task is RUNNING; fail as soon as one of them is
    /// STOPPED or no longer exists.
    TasksRunning(WaitTasks),
    /// Wait until every task is STOPPED (one the cluster no longer keeps
    /// counts as stopped).
    TasksStopped(WaitTasks),
    /// Wait until every service is stable: ACTIVE, with exactly one
    /// deployment and as many tasks RUNNING as it desires; fail as soon as
    /// one of them does not exist or is deleted (DRAINING or INACTIVE).
    ServicesStable {
        #[arg(value_name = "NAME", required = true)]
        names: Vec<String>,
        /// The services' cluster [default: the default cluster].
        #[arg(long)]
        cluster: Option<String>,
        #[command(flatten)]
        timeout: Timeout,
    },
}

#[derive(Debug, Args)]
pub struct WaitTasks {
    /// Task ids, or unique prefixes of them.
    #[arg(value_name = "ID", required = true)]
    pub ids: Vec<String>,
    #[command(flatten)]
    pub timeout: Timeout,
}

#[derive(Debug, Clone, Copy, Args)]
pub struct Timeout {
    /// Give up after this long, with exit status 1, e.g. 90s or 1h.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = duration_arg)]
    pub timeout: Duration,
}

/// Where a wait stands after one look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Done,
    /// Not yet: what is still awaited.
    Waiting(String),
    /// It can no longer happen: why.
    Failed(String),
}

/// Prints nothing on success, as `aws ecs wait` does: the exit status is
/// the answer.
pub async fn wait(client: &BerthClient, command: WaitCommand) -> anyhow::Result<String> {
    match command {
        WaitCommand::TasksRunning(WaitTasks { ids, timeout }) => {
            let ids = task_ids(client, &ids).await?;
            let ids = &ids;
            let looks =
                move || async move { Ok(tasks_running(&look_at_tasks(client, ids).await?)) };
            until(timeout.timeout, POLL, "the tasks to be RUNNING", looks).await?;
        }
        WaitCommand::TasksStopped(WaitTasks { ids, timeout }) => {
            let ids = task_ids(client, &ids).await?;
            let ids = &ids;
            let looks =
                move || async move { Ok(tasks_stopped(&look_at_tasks(client, ids).await?)) };
            until(timeout.timeout, POLL, "the tasks to be STOPPED", looks).await?;
        }
        WaitCommand::ServicesStable {
            names,
            cluster,
            timeout,
        } => {
            let (cluster, names) = (cluster.as_deref().unwrap_or_default(), &names);
            let looks = move || async move {
                let (found, missing) = client.describe_services(cluster, names).await?;
                let missing: Vec<String> = missing.into_iter().map(|m| m.name).collect();
                Ok(services_stable(&found, &missing))
            };
            until(timeout.timeout, POLL, "the services to be stable", looks).await?;
        }
    }
    Ok(String::new())
}

async fn task_ids(client: &BerthClient, typed: &[String]) -> anyhow::Result<Vec<String>> {
    let mut whole = Vec::with_capacity(typed.len());
    for id in typed {
        whole.push(ids::task(client, id).await?);
    }
    Ok(whole)
}

/// Each task as it is now; `None` for one the cluster no longer has.
async fn look_at_tasks(
    client: &BerthClient,
    ids: &[String],
) -> anyhow::Result<Vec<(String, Option<Task>)>> {
    let mut tasks = Vec::with_capacity(ids.len());
    for id in ids {
        let task = match client.describe_task(id).await {
            Ok(task) => Some(task),
            Err(e) if e.api_code() == Some(Code::NotFound) => None,
            Err(e) => return Err(e.into()),
        };
        tasks.push((id.clone(), task));
    }
    Ok(tasks)
}

/// Looks with `look` every `poll` until it says done (Ok) or failed, or
/// `timeout` has passed (both errors, so the exit status is 1). While
/// stderr is a terminal, each new state is shown there. Servers out of
/// reach are looked at again, not a failure, until the time is up.
pub async fn until<F, Fut>(
    timeout: Duration,
    poll: Duration,
    goal: &str,
    mut look: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Verdict>>,
{
    let deadline = Instant::now() + timeout;
    let show = io::stderr().is_terminal();
    let mut shown = String::new();
    loop {
        let state = match look().await {
            Ok(Verdict::Done) => return Ok(()),
            Ok(Verdict::Failed(why)) => bail!("{why}"),
            Ok(Verdict::Waiting(what)) => what,
            Err(err) if is_transient(&err) => crate::errors::error_lines(&err).join("; "),
            Err(err) => return Err(err),
        };
        if show && state != shown {
            crate::warn(&[format!("waiting for {goal}: {state}")]);
        }
        shown = state;
        let now = Instant::now();
        if now >= deadline {
            bail!(
                "timed out after {} waiting for {goal}: {shown} (--timeout waits longer)",
                human(timeout)
            );
        }
        tokio::time::sleep(poll.min(deadline - now)).await;
    }
}

fn is_transient(err: &anyhow::Error) -> bool {
    err.downcast_ref::<ClientError>()
        .is_some_and(ClientError::is_transient)
}

/// `10m`, `90s`, `2h`: the largest unit that divides it.
fn human(d: Duration) -> String {
    let secs = d.as_secs();
    for (unit, size) in [("h", 3_600), ("m", 60)] {
        if secs >= size && secs.is_multiple_of(size) {
            return format!("{}{unit}", secs / size);
        }
    }
    format!("{secs}s")
}

/// `3f2a0c9e1b7d is PENDING`, with why a task is not placed or stopped.
fn task_state(id: &str, task: &Task) -> String {
    let id = short(Kind::Task, id);
    let status = task.last_status.as_str();
    match task.last_status {
        TaskStatus::Provisioning if !task.placement_reason.is_empty() => {
            format!("{id} is {status} ({})", task.placement_reason)
        }
        TaskStatus::Stopped => {
            let why: Vec<&str> = task
                .stop_code
                .map(|c| c.as_str())
                .into_iter()
                .chain(Some(task.stopped_reason.as_str()).filter(|r| !r.is_empty()))
                .collect();
            if why.is_empty() {
                format!("{id} is {status}")
            } else {
                format!("{id} is {status} ({})", why.join(": "))
            }
        }
        _ => format!("{id} is {status}"),
    }
}

/// `aws ecs wait tasks-running`: done when every task is RUNNING, failed
/// as soon as one is STOPPED (it never runs again) or gone.
pub fn tasks_running(tasks: &[(String, Option<Task>)]) -> Verdict {
    let mut waiting = Vec::new();
    for (id, task) in tasks {
        match task {
            None => {
                return Verdict::Failed(format!("task {} no longer exists", short(Kind::Task, id)))
            }
            Some(t) if t.last_status == TaskStatus::Stopped => {
                return Verdict::Failed(format!("task {}", task_state(id, t)))
            }
            Some(t) if t.last_status == TaskStatus::Running => {}
            Some(t) => waiting.push(task_state(id, t)),
        }
    }
    waiting_for(tasks.len(), waiting, "RUNNING")
}

/// `aws ecs wait tasks-stopped`: done when every task is STOPPED. One the
/// cluster no longer has was stopped longer ago than its task retention.
pub fn tasks_stopped(tasks: &[(String, Option<Task>)]) -> Verdict {
    let waiting: Vec<String> = tasks
        .iter()
        .filter_map(|(id, task)| match task {
            Some(t) if t.last_status != TaskStatus::Stopped => Some(task_state(id, t)),
            _ => None,
        })
        .collect();
    waiting_for(tasks.len(), waiting, "STOPPED")
}

fn waiting_for(total: usize, waiting: Vec<String>, status: &str) -> Verdict {
    if waiting.is_empty() {
        return Verdict::Done;
    }
    Verdict::Waiting(format!(
        "{} of {total} {status}; {}",
        total - waiting.len(),
        waiting.join(", ")
    ))
}

/// `aws ecs wait services-stable`: done when every service is ACTIVE with
/// one deployment and as many tasks running as desired; failed when one
/// is missing or deleted.
pub fn services_stable(services: &[ServiceDescription], missing: &[String]) -> Verdict {
    if let Some(name) = missing.first() {
        return Verdict::Failed(format!(
            "no such service: {name} (`berth service list` shows them)"
        ));
    }
    let mut waiting = Vec::new();
    for d in services {
        let s = &d.service;
        if s.status != ServiceStatus::Active {
            return Verdict::Failed(format!(
                "service {} is {}: it was deleted",
                s.name,
                s.status.as_str()
            ));
        }
        let deployments = d
            .deployments
            .iter()
            .filter(|x| x.deployment.status != DeploymentStatus::Inactive)
            .count();
        if deployments != 1 || d.running_count != s.desired_count {
            waiting.push(format!(
                "{} has {deployments} deployment{} and {} of {} tasks running",
                s.name,
                if deployments == 1 { "" } else { "s" },
                d.running_count,
                s.desired_count
            ));
        }
    }
    if waiting.is_empty() {
        Verdict::Done
    } else {
        Verdict::Waiting(waiting.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::tests::described;
    use berth_types::{DesiredStatus, RolloutState, StopCode};

    const A: &str = "3f2a0c9e1b7d4e2f8a6b5c4d3e2f1a0b";
    const B: &str = "758bc3569df9fadd81c5d4c7e135044f";

    fn task(id: &str, status: TaskStatus) -> (String, Option<Task>) {
        let task = Task {
            id: id.into(),
            cluster: "default".into(),
            family: "web".into(),
            revision: 1,
            instance_id: None,
            group: String::new(),
            started_by: String::new(),
            desired_status: DesiredStatus::Running,
            last_status: status,
            containers: Vec::new(),
            stop_code: None,
            stopped_reason: String::new(),
            placement_reason: String::new(),
            overrides: Vec::new(),
            placement_strategies: Vec::new(),
            placement_constraints: Vec::new(),
            reservation: Default::default(),
            created_at_ms: 0,
            pending_at_ms: None,
            started_at_ms: None,
            stopping_at_ms: None,
            stopped_at_ms: None,
            ip: None,
            deactivating_until_ms: None,
            tags: Default::default(),
        };
        (id.to_string(), Some(task))
    }

    #[test]
    fn tasks_running_waits_for_every_task_and_fails_on_a_stopped_one() {
        use TaskStatus::*;
        assert_eq!(
            tasks_running(&[task(A, Running), task(B, Running)]),
            Verdict::Done
        );
        assert_eq!(
            tasks_running(&[task(A, Running), task(B, Pending)]),
            Verdict::Waiting("1 of 2 RUNNING; 758bc3569df9 is PENDING".into())
        );
        let mut unplaced = task(B, Provisioning);
        if let Some(t) = &mut unplaced.1 {
            t.placement_reason = "no instance has 512 MiB free memory".into();
        }
        assert_eq!(
            tasks_running(&[unplaced]),
            Verdict::Waiting(
                "0 of 1 RUNNING; 758bc3569df9 is PROVISIONING (no instance has 512 MiB free \
                 memory)"
                    .into()
            )
        );
        let mut stopped = task(B, Stopped);
        if let Some(t) = &mut stopped.1 {
            t.stop_code = Some(StopCode::EssentialContainerExited);
            t.stopped_reason = "essential container web exited with code 1".into();
        }
        assert_eq!(
            tasks_running(&[task(A, Pending), stopped]),
            Verdict::Failed(
                "task 758bc3569df9 is STOPPED (EssentialContainerExited: essential container \
                 web exited with code 1)"
                    .into()
            ),
            "as soon as any is STOPPED, while others still wait"
        );
        assert_eq!(
            tasks_running(&[task(A, Running), (B.to_string(), None)]),
            Verdict::Failed("task 758bc3569df9 no longer exists".into())
        );
    }

    #[test]
    fn tasks_stopped_counts_a_forgotten_task_as_stopped() {
        use TaskStatus::*;
        assert_eq!(
            tasks_stopped(&[task(A, Stopped), (B.to_string(), None)]),
            Verdict::Done
        );
        assert_eq!(
            tasks_stopped(&[task(A, Stopped), task(B, Stopping)]),
            Verdict::Waiting("1 of 2 STOPPED; 758bc3569df9 is STOPPING".into())
        );
        assert_eq!(
            tasks_stopped(&[task(A, Running)]),
            Verdict::Waiting("0 of 1 STOPPED; 3f2a0c9e1b7d is RUNNING".into())
        );
    }

    #[test]
    fn a_stable_service_has_one_deployment_and_all_its_tasks_running() {
        use DeploymentStatus::*;
        use RolloutState::*;
        let mut stable = described(vec![
            ("d2", Primary, Completed, None),
            ("d1", Inactive, Completed, None),
        ]);
        stable.running_count = 2;
        assert_eq!(services_stable(&[stable.clone()], &[]), Verdict::Done);

        let mut short_of_tasks = stable.clone();
        short_of_tasks.running_count = 1;
        assert_eq!(
            services_stable(&[stable.clone(), short_of_tasks], &[]),
            Verdict::Waiting("web has 1 deployment and 1 of 2 tasks running".into())
        );

        let mut rolling = described(vec![
            ("d3", Primary, InProgress, None),
            ("d2", Active, Completed, None),
        ]);
        rolling.running_count = 2;
        assert_eq!(
            services_stable(&[rolling], &[]),
            Verdict::Waiting("web has 2 deployments and 2 of 2 tasks running".into()),
            "counts are not enough while an old deployment remains"
        );

        let mut deleted = stable.clone();
        deleted.service.status = ServiceStatus::Draining;
        assert_eq!(
            services_stable(&[deleted], &[]),
            Verdict::Failed("service web is DRAINING: it was deleted".into())
        );
        assert_eq!(
            services_stable(&[stable], &["api".into()]),
            Verdict::Failed("no such service: api (`berth service list` shows them)".into())
        );
    }

    const TICK: Duration = Duration::from_millis(1);

    #[tokio::test]
    async fn waiting_ends_when_done_failed_or_out_of_time() {
        let mut looks = 0;
        until(Duration::from_secs(5), TICK, "it", || {
            looks += 1;
            let verdict = if looks < 3 {
                Verdict::Waiting("not yet".into())
            } else {
                Verdict::Done
            };
            async move { Ok(verdict) }
        })
        .await
        .unwrap();
        assert_eq!(looks, 3);

        let err = until(Duration::from_secs(5), TICK, "it", || async {
            Ok(Verdict::Failed("task x is STOPPED".into()))
        })
        .await
        .unwrap_err();
        assert_eq!(err.to_string(), "task x is STOPPED");

        let err = until(
            Duration::from_millis(20),
            TICK,
            "the tasks to be RUNNING",
            || async { Ok(Verdict::Waiting("0 of 1 RUNNING; a is PENDING".into())) },
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "timed out after 0s waiting for the tasks to be RUNNING: 0 of 1 RUNNING; a is \
             PENDING (--timeout waits longer)"
        );
    }

    #[tokio::test]
    async fn unreachable_servers_are_tried_again_but_other_errors_end_it() {
        let mut looks = 0;
        until(Duration::from_secs(5), TICK, "it", || {
            looks += 1;
            let first = looks == 1;
            async move {
                if first {
                    Err(ClientError::Unavailable {
                        tried: vec![],
                        last: "connection refused".into(),
                    }
                    .into())
                } else {
                    Ok(Verdict::Done)
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(looks, 2);

        let err = until(Duration::from_secs(5), TICK, "it", || async {
            Err::<Verdict, _>(
                ClientError::PermissionDenied("a readonly token cannot".into()).into(),
            )
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains("permission denied"), "{err}");
    }

    #[test]
    fn durations_read_as_typed() {
        assert_eq!(human(Duration::from_secs(600)), "10m");
        assert_eq!(human(Duration::from_secs(90)), "90s");
        assert_eq!(human(Duration::from_secs(7200)), "2h");
    }

    fn parse(args: &[&str]) -> Result<WaitCommand, clap::Error> {
        use clap::Parser;
        let cli =
            crate::args::Cli::try_parse_from(std::iter::once("berth").chain(args.iter().copied()))?;
        match cli.command {
            crate::args::Command::Wait(command) => Ok(command),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wait_commands_parse_with_a_ten_minute_default() {
        let Ok(WaitCommand::TasksRunning(args)) = parse(&["wait", "tasks-running", "3f2a", "758b"])
        else {
            panic!("tasks-running");
        };
        assert_eq!(args.ids, ["3f2a", "758b"]);
        assert_eq!(args.timeout.timeout, Duration::from_secs(600));
        let Ok(WaitCommand::TasksStopped(args)) =
            parse(&["wait", "tasks-stopped", "3f2a", "--timeout", "90s"])
        else {
            panic!("tasks-stopped");
        };
        assert_eq!(args.timeout.timeout, Duration::from_secs(90));
        let Ok(WaitCommand::ServicesStable {
            names,
            cluster,
            timeout,
        }) = parse(&["wait", "services-stable", "web", "api", "--cluster", "prod"])
        else {
            panic!("services-stable");
        };
        assert_eq!(names, ["web", "api"]);
        assert_eq!(cluster.as_deref(), Some("prod"));
        assert_eq!(timeout.timeout, Duration::from_secs(600));

        let err = parse(&["wait", "tasks-running"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let err = parse(&["wait", "services-stable"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let err = parse(&["wait", "tasks-running", "3f2a", "--timeout", "soon"]).unwrap_err();
        assert!(err.to_string().contains("--timeout"), "{err}");
    }
}
