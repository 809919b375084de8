//! End-to-end: services on 3 berthd servers, real berth-agents and real
//! containerd. A REPLICA service reaches its steady state, replaces a
//! container killed underneath its agent and the tasks of a lost agent,
//! settles at exactly its count when that agent returns, rolls out within
//! minimumHealthyPercent/maximumPercent (sampled all along, through a
//! leader kill -9), and rolls a failing deployment back; a failing health
//! check gets its task replaced; a DAEMON service follows instances joining
//! and draining.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, ensure, Result};
use berth_client::{BerthClient, ClientConfig};
use berth_e2e::agents::*;
use berth_e2e::*;
use berth_proto::pb;
use berth_types::service::{
    CreateServiceInput, DeploymentConfigurationInput, ServiceDescription, UpdateServiceInput,
};
use berth_types::{
    DesiredStatus, HealthCheck, InstanceState, RolloutState, SchedulingStrategy, StopCode, Task,
    TaskFilter, TaskStatus,
};

const T: Duration = Duration::from_secs(90);
const CLUSTER: &str = "svc";

/// The containerd tests share one containerd and two cores: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

type Setup = AgentCluster;

async fn setup(lost_after_secs: u64) -> Result<Option<Setup>> {
    AgentCluster::start(CLUSTER, lost_after_secs, 10).await
}

/// What the services tests add to the shared agent cluster.
trait ServiceSetup {
    fn client(&self) -> BerthClient;
    async fn taskdef(&self, family: &str, command: &[&str], health: Option<&[&str]>) -> Result<()>;
    async fn wait_agent(&self, agent: &AgentProc) -> Result<String>;
}

impl ServiceSetup for AgentCluster {
    /// The real client, with every server as an endpoint.
    fn client(&self) -> BerthClient {
        let pki = test_pki();
        let endpoints: Vec<String> = self.servers.split(',').map(str::to_string).collect();
        BerthClient::new(
            ClientConfig::new(endpoints)
                .with_ca(pki.ca_pem.clone())
                .with_token(pki.admin_token.clone()),
        )
        .expect("client")
    }

    /// Registers `family` running the test app with `command`.
    async fn taskdef(&self, family: &str, command: &[&str], health: Option<&[&str]>) -> Result<()> {
        let mut spec = testapp_taskdef(family, &self.image, command, 32);
        if let Some(check) = health {
            let mut c: berth_types::TaskDefinitionSpec = from_wire(spec)?;
            c.container_definitions[0].health_check = Some(HealthCheck {
                command: check.iter().map(|s| s.to_string()).collect(),
                interval: 5,
                timeout: 2,
                retries: 1,
                start_period: 0,
            });
            spec = c.into();
        }
        taskdefs(&self.cluster.addr(1))
            .await?
            .register_task_definition(pb::RegisterTaskDefinitionRequest { spec: Some(spec) })
            .await?;
        Ok(())
    }

    async fn wait_agent(&self, agent: &AgentProc) -> Result<String> {
        let i =
            wait_instance_status(&self.cluster.addr(1), agent, InstanceState::Active, T).await?;
        Ok(i.id)
    }
}

fn replica(name: &str, taskdef: &str, desired: u32, min: u32, max: u32) -> CreateServiceInput {
    CreateServiceInput {
        cluster: CLUSTER.into(),
        name: name.into(),
        task_definition: taskdef.into(),
        desired_count: Some(desired),
        deployment_configuration: DeploymentConfigurationInput {
            minimum_healthy_percent: Some(min),
            maximum_percent: Some(max),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The service's tasks that are not STOPPED.
async fn alive(client: &BerthClient, service: &str) -> Result<Vec<Task>> {
    let filter = TaskFilter {
        cluster: Some(CLUSTER.into()),
        ..Default::default()
    };
    let group = format!("service:{service}");
    Ok(client
        .list_tasks(&filter)
        .await?
        .into_iter()
        .filter(|t| t.group == group && t.last_status != TaskStatus::Stopped)
        .collect())
}

fn running(tasks: &[Task]) -> Vec<&Task> {
    tasks
        .iter()
        .filter(|t| {
            t.last_status == TaskStatus::Running && t.desired_status == DesiredStatus::Running
        })
        .collect()
}

/// Waits until the service runs exactly `count` tasks, all RUNNING and
/// wanted, of `taskdef`, and says it is steady.
async fn wait_steady(
    client: &BerthClient,
    service: &str,
    count: usize,
    taskdef: &str,
) -> Result<ServiceDescription> {
    eventually(T, || async {
        let d = client.describe_service(CLUSTER, service).await?;
        let tasks = alive(client, service).await?;
        let ok = running(&tasks);
        ensure!(
            tasks.len() == count
                && ok.len() == count
                && ok.iter().all(|t| t.task_definition() == taskdef)
                && d.service.steady,
            "service {service}: {} alive, {} running, steady {}; events: {:?}",
            tasks.len(),
            ok.len(),
            d.service.steady,
            d.service
                .events
                .iter()
                .take(3)
                .map(|e| &e.message)
                .collect::<Vec<_>>()
        );
        Ok(d)
    })
    .await
}

/// Samples a service's tasks until stopped, recording every moment where
/// more than `max_alive` were not STOPPED or fewer than `min_running` ran.
struct Sampler {
    stop: Arc<AtomicBool>,
    violations: Arc<Mutex<Vec<String>>>,
    samples: Arc<Mutex<u32>>,
    handle: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(client: BerthClient, service: &str, max_alive: usize, min_running: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let violations = Arc::new(Mutex::new(Vec::new()));
        let samples = Arc::new(Mutex::new(0));
        let (s, v, n, name) = (
            stop.clone(),
            violations.clone(),
            samples.clone(),
            service.to_string(),
        );
        let handle = tokio::spawn(async move {
            while !s.load(Ordering::SeqCst) {
                // A sample that fails (a leader change) is skipped, not
                // counted: it saw nothing.
                if let Ok(tasks) = alive(&client, &name).await {
                    let up = tasks
                        .iter()
                        .filter(|t| t.last_status == TaskStatus::Running)
                        .count();
                    *n.lock().unwrap() += 1;
                    if tasks.len() > max_alive || up < min_running {
                        v.lock().unwrap().push(format!(
                            "{} not stopped (max {max_alive}), {up} running (min {min_running})",
                            tasks.len()
                        ));
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Self {
            stop,
            violations,
            samples,
            handle,
        }
    }

    async fn finish(self) -> (Vec<String>, u32) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.handle.await;
        let v = self.violations.lock().unwrap().clone();
        let n = *self.samples.lock().unwrap();
        (v, n)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_service_recovers_rolls_out_and_rolls_back() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let Some(s) = setup(8).await? else {
        return Ok(());
    };
    s.taskdef("web", &["ticker", "500"], None).await?;
    s.taskdef("web", &["ticker", "400"], None).await?;
    s.taskdef("crash", &["exit", "1"], None).await?;
    let mut one = s.agent("one", &[]);
    let mut two = s.agent("two", &[]);
    one.start()?;
    two.start()?;
    let id_one = s.wait_agent(&one).await?;
    let id_two = s.wait_agent(&two).await?;
    let client = s.client();

    // A service of 4 over 2 agents reaches its steady state.
    let created = client
        .create_service(&replica("web", "web:1", 4, 50, 150))
        .await?;
    assert_eq!(created.service.task_definition, "web:1");
    let steady = wait_steady(&client, "web", 4, "web:1").await?;
    assert!(steady
        .service
        .events
        .iter()
        .any(|e| e.message.contains("has reached a steady state")));
    let tasks = alive(&client, "web").await?;
    let instances: BTreeSet<String> = tasks.iter().filter_map(|t| t.instance_id.clone()).collect();
    assert_eq!(instances.len(), 2, "spread over both agents: {tasks:?}");
    assert!(tasks.iter().all(|t| t.started_by.starts_with("ecs-svc/")));

    // A container SIGKILLed underneath its agent is replaced.
    let victim = tasks
        .iter()
        .find(|t| t.instance_id.as_deref() == Some(id_one.as_str()))
        .unwrap();
    let container = s
        .env
        .running_containers(&one.namespace)?
        .into_iter()
        .find(|c| c.contains(&victim.id))
        .expect("the task's container is named after it");
    let killed = std::process::Command::new("ctr")
        .arg("--address")
        .arg(&s.env.socket)
        .args([
            "-n",
            &one.namespace,
            "tasks",
            "kill",
            "-s",
            "SIGKILL",
            &container,
        ])
        .status()?;
    assert!(killed.success());
    let dead = wait_task_status(&s.cluster.addr(2), &victim.id, TaskStatus::Stopped, T).await?;
    assert_eq!(dead.stop_code, Some(StopCode::EssentialContainerExited));
    wait_steady(&client, "web", 4, "web:1").await?;
    assert!(alive(&client, "web")
        .await?
        .iter()
        .all(|t| t.id != victim.id));

    // A rolling update with minimum 50 / maximum 150, sampled all along:
    // never more than 6 tasks, never fewer than 2 running.
    let sampler = Sampler::start(s.client(), "web", 6, 2);
    let updated = client
        .update_service(&UpdateServiceInput {
            cluster: CLUSTER.into(),
            name: "web".into(),
            task_definition: Some("web:2".into()),
            ..Default::default()
        })
        .await?;
    let rollout = updated.service.primary().unwrap().id.clone();
    wait_steady(&client, "web", 4, "web:2").await?;
    let (violations, samples) = sampler.finish().await;
    assert!(samples >= 5, "only {samples} samples");
    assert!(violations.is_empty(), "bounds broken: {violations:?}");
    let d = client.describe_service(CLUSTER, "web").await?;
    let done = d
        .deployments
        .iter()
        .find(|x| x.deployment.id == rollout)
        .unwrap();
    assert_eq!(done.deployment.rollout_state, RolloutState::Completed);
    assert_eq!(
        d.service.deployments.len(),
        1,
        "the old deployment is retired"
    );

    // A revision whose essential container exits 1 at once: the circuit
    // breaker (threshold 3) fails it and rolls back to web:2. `--wait`
    // follows it and exits 1.
    let out = berth_cli(
        &s.servers,
        &test_pki().admin_token,
        &[
            "service",
            "update",
            "web",
            "--cluster",
            CLUSTER,
            "--taskdef",
            "crash:1",
            "--circuit-breaker",
            "--rollback",
            "--failure-threshold",
            "3",
            "--wait",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stderr.contains("FAILED") && stderr.contains("rolling back to web:2"),
        "{stderr}"
    );
    assert!(
        stdout.contains("crash:1"),
        "the live view showed the deployment: {stdout}"
    );
    let after = wait_steady(&client, "web", 4, "web:2").await?;
    let failed = after
        .deployments
        .iter()
        .find(|x| x.deployment.task_definition == "crash:1")
        .unwrap();
    assert_eq!(failed.deployment.rollout_state, RolloutState::Failed);
    assert!(failed.deployment.failed_tasks >= 3);
    assert!(after
        .service
        .events
        .iter()
        .any(|e| e.message.contains("rolling back to web:2")));
    // web:2's healthy tasks kept running through the failed deployment.
    assert!(running(&alive(&client, "web").await?).len() >= 4);

    // An agent killed with kill -9: its tasks are replaced after lost_after
    // (8 s); when it returns, its stale copies are stopped and the service
    // settles at exactly 4.
    let on_two: Vec<String> = alive(&client, "web")
        .await?
        .into_iter()
        .filter(|t| t.instance_id.as_deref() == Some(id_two.as_str()))
        .map(|t| t.id)
        .collect();
    assert!(!on_two.is_empty());
    two.kill9();
    tokio::time::sleep(Duration::from_secs(3)).await;
    // DISCONNECTED, not lost yet: nothing is started twice.
    let blip = alive(&client, "web").await?;
    assert_eq!(blip.len(), 4, "no double run during a blip: {blip:?}");
    for id in &on_two {
        let t = wait_task_status(&s.cluster.addr(1), id, TaskStatus::Stopped, T).await?;
        assert_eq!(t.stop_code, Some(StopCode::InstanceLost));
    }
    eventually(T, || async {
        let tasks = alive(&client, "web").await?;
        let ok = running(&tasks);
        ensure!(
            ok.len() == 4
                && ok
                    .iter()
                    .all(|t| t.instance_id.as_deref() == Some(id_one.as_str())),
            "{tasks:?}"
        );
        Ok(())
    })
    .await?;
    two.start()?;
    s.wait_agent(&two).await?;
    eventually(T, || async {
        let stale = s.env.running_containers(&two.namespace)?;
        ensure!(
            stale.is_empty(),
            "stale copies still run on the returned agent: {stale:?}"
        );
        Ok(())
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let settled = alive(&client, "web").await?;
    assert_eq!(settled.len(), 4, "exactly 4: {settled:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_kill_during_a_rollout_starts_nothing_twice() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let Some(mut s) = setup(60).await? else {
        return Ok(());
    };
    s.taskdef("api", &["ticker", "500"], None).await?;
    s.taskdef("api", &["ticker", "300"], None).await?;
    let mut one = s.agent("one", &[]);
    let mut two = s.agent("two", &[]);
    one.start()?;
    two.start()?;
    s.wait_agent(&one).await?;
    s.wait_agent(&two).await?;
    let client = s.client();
    client
        .create_service(&replica("api", "api:1", 6, 50, 150))
        .await?;
    wait_steady(&client, "api", 6, "api:1").await?;

    let sampler = Sampler::start(s.client(), "api", 9, 3);
    let updated = client
        .update_service(&UpdateServiceInput {
            cluster: CLUSTER.into(),
            name: "api".into(),
            task_definition: Some("api:2".into()),
            ..Default::default()
        })
        .await?;
    let rollout = updated.service.primary().unwrap().id.clone();
    // Kill the leader once the rollout has started some tasks.
    eventually(T, || async {
        let n = alive(&client, "api")
            .await?
            .iter()
            .filter(|t| t.started_by == rollout)
            .count();
        ensure!(n > 0, "the rollout has not started yet");
        Ok(())
    })
    .await?;
    let leader = s.cluster.wait_for_leader(Duration::from_secs(20)).await?;
    s.cluster.server(leader).kill9();
    wait_steady(&client, "api", 6, "api:2").await?;
    let (violations, samples) = sampler.finish().await;
    assert!(samples >= 5, "only {samples} samples");
    assert!(
        violations.is_empty(),
        "bounds broken across the leader change: {violations:?}"
    );
    // Nothing was started twice: the new deployment started exactly its 6.
    let all = client
        .list_tasks(&TaskFilter {
            cluster: Some(CLUSTER.into()),
            ..Default::default()
        })
        .await?;
    let started: Vec<&Task> = all.iter().filter(|t| t.started_by == rollout).collect();
    assert_eq!(started.len(), 6, "{started:?}");
    let d = client.describe_service(CLUSTER, "api").await?;
    assert_eq!(
        d.service.primary().unwrap().rollout_state,
        RolloutState::Completed
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_replace_tasks_and_a_daemon_follows_its_instances() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let Some(s) = setup(60).await? else {
        return Ok(());
    };
    s.taskdef(
        "sick",
        &["ticker", "500"],
        Some(&["CMD", "/berth-testapp", "fail"]),
    )
    .await?;
    s.taskdef("node", &["ticker", "1000"], None).await?;
    let mut one = s.agent("one", &["role=worker"]);
    let mut two = s.agent("two", &["role=worker"]);
    one.start()?;
    two.start()?;
    s.wait_agent(&one).await?;
    let id_two = s.wait_agent(&two).await?;
    let client = s.client();

    // A failing health check: after the 2 s grace period the task is
    // stopped as unhealthy and replaced.
    let mut sick = replica("sick", "sick:1", 1, 0, 100);
    sick.health_check_grace_period_secs = 2;
    client.create_service(&sick).await?;
    let first = eventually(T, || async {
        let tasks = alive(&client, "sick").await?;
        tasks
            .into_iter()
            .find(|t| t.last_status == TaskStatus::Running)
            .ok_or_else(|| anyhow!("not running yet"))
    })
    .await?;
    let stopped = wait_task_status(&s.cluster.addr(1), &first.id, TaskStatus::Stopped, T).await?;
    assert_eq!(stopped.stop_code, Some(StopCode::ServiceSchedulerInitiated));
    assert_eq!(
        stopped.stopped_reason,
        "Task failed container health checks"
    );
    eventually(T, || async {
        let tasks = alive(&client, "sick").await?;
        ensure!(
            tasks.iter().any(|t| t.id != first.id),
            "not replaced yet: {tasks:?}"
        );
        Ok(())
    })
    .await?;
    let d = client.describe_service(CLUSTER, "sick").await?;
    assert!(d
        .service
        .events
        .iter()
        .any(|e| e.message.contains("failed container health checks")));
    client.delete_service(CLUSTER, "sick", true).await?;

    // A DAEMON service: one task on each worker.
    let daemon = CreateServiceInput {
        cluster: CLUSTER.into(),
        name: "node".into(),
        task_definition: "node:1".into(),
        scheduling_strategy: SchedulingStrategy::Daemon,
        placement_constraints: vec!["memberOf(attribute:agent.role == worker)".into()],
        ..Default::default()
    };
    client.create_service(&daemon).await?;
    wait_steady(&client, "node", 2, "node:1").await?;
    // A third worker joins and gets its task; a non-worker gets none.
    let mut three = s.agent("three", &["role=worker"]);
    let mut other = s.agent("other", &["role=db"]);
    three.start()?;
    other.start()?;
    let id_three = s.wait_agent(&three).await?;
    let id_other = s.wait_agent(&other).await?;
    wait_steady(&client, "node", 3, "node:1").await?;
    let tasks = alive(&client, "node").await?;
    assert!(tasks
        .iter()
        .any(|t| t.instance_id.as_deref() == Some(id_three.as_str())));
    assert!(tasks
        .iter()
        .all(|t| t.instance_id.as_deref() != Some(id_other.as_str())));
    assert_eq!(
        client
            .describe_service(CLUSTER, "node")
            .await?
            .service
            .desired_count,
        3
    );

    // An instance drained: its daemon task stops, the count follows.
    client.drain_instance(&id_two).await?;
    wait_steady(&client, "node", 2, "node:1").await?;
    let tasks = alive(&client, "node").await?;
    assert!(tasks
        .iter()
        .all(|t| t.instance_id.as_deref() != Some(id_two.as_str())));
    assert_eq!(
        client
            .describe_service(CLUSTER, "node")
            .await?
            .service
            .desired_count,
        2
    );
    // CLI views read the same service.
    let out = berth_cli(
        &s.servers,
        &test_pki().admin_token,
        &["service", "describe", "node", "--cluster", CLUSTER],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("DAEMON") && text.contains("2 desired, 2 running"),
        "{text}"
    );
    drop(one);
    Ok(())
}
