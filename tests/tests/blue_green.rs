//! End-to-end: a service behind berth-lb (a real HAProxy) on real berthd
//! servers, a real berth-agent and containerd, with HTTP requests flowing
//! through HAProxy the whole time:
//!
//! 1. a rolling deployment (v1 -> v2): old tasks go DEACTIVATING (drained)
//!    before they stop, and no request fails;
//! 2. a blue/green canary (v2 -> v3, 10%): about a tenth of the requests
//!    reach v3 while the canary holds; `berth service rollback` then gives
//!    every request back to v2 at once and the v3 tasks stop; no request
//!    fails;
//! 3. a blue/green deployment to completion (v2 -> v4: canary, bake time,
//!    old tasks drained): every request ends on v4; no request fails.
//!
//! Needs haproxy (scripts/install-deps.sh) and the containerd environment
//! (scripts/test-env.sh): skipped with a notice outside CI, failing under
//! CI=true.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use berth_client::{BerthClient, ClientConfig};
use berth_e2e::agents::*;
use berth_e2e::lb::{get_body, haproxy_installed, LbProc};
use berth_e2e::*;
use berth_proto::pb;
use berth_types::service::{
    BlueGreen, CreateServiceInput, DeploymentConfigurationInput, DeploymentController,
    LoadBalancer, ServiceDescription, TrafficShift, UpdateServiceInput,
};
use berth_types::{
    HealthCheck, InstanceState, KeyValuePair, NetworkMode, PortMapping, Protocol, RolloutState,
    TaskStatus,
};

const T: Duration = Duration::from_secs(120);
const CLUSTER: &str = "bgt";
const SERVICE: &str = "bg";

fn admin(servers: &str) -> BerthClient {
    BerthClient::new(
        ClientConfig::new(servers.split(',').map(str::to_string).collect::<Vec<_>>())
            .with_ca(test_pki().ca_pem.clone())
            .with_token(test_pki().admin_token.clone()),
    )
    .expect("client")
}

/// Registers the next revision of `bg`: the test app answering `revision`
/// on /revision, in bridge mode, health-checked over HTTP.
async fn register(s: &AgentCluster, revision: &str) -> Result<()> {
    let mut spec: berth_types::TaskDefinitionSpec =
        from_wire(testapp_taskdef(SERVICE, &s.image, &["serve", "8080"], 32))?;
    spec.network_mode = NetworkMode::Bridge;
    let app = &mut spec.container_definitions[0];
    app.port_mappings = vec![PortMapping {
        container_port: 8080,
        host_port: None,
        protocol: Protocol::Tcp,
    }];
    app.environment = vec![KeyValuePair {
        name: "TESTAPP_REVISION".into(),
        value: revision.into(),
    }];
    app.health_check = Some(HealthCheck {
        command: vec![
            "CMD".into(),
            "/berth-testapp".into(),
            "check".into(),
            "8080".into(),
        ],
        interval: 5,
        timeout: 2,
        retries: 1,
        start_period: 0,
    });
    taskdefs(&s.addr(1))
        .await?
        .register_task_definition(pb::RegisterTaskDefinitionRequest {
            spec: Some(spec.into()),
        })
        .await?;
    Ok(())
}

fn update(
    task_definition: Option<&str>,
    controller: Option<DeploymentController>,
) -> UpdateServiceInput {
    UpdateServiceInput {
        cluster: CLUSTER.into(),
        name: SERVICE.into(),
        task_definition: task_definition.map(str::to_string),
        desired_count: None,
        deployment_configuration: DeploymentConfigurationInput {
            controller,
            ..Default::default()
        },
        placement_strategies: None,
        placement_constraints: None,
        health_check_grace_period_secs: None,
        force_new_deployment: false,
    }
}

fn canary(percent: u32, interval_secs: u32, bake_time_secs: u32) -> DeploymentController {
    DeploymentController::BlueGreen(BlueGreen {
        traffic: TrafficShift::Canary {
            percent,
            interval_secs,
        },
        bake_time_secs,
    })
}

/// Requests through HAProxy, one every 20 ms, from a thread of their own:
/// each answer's revision, or the error.
struct Traffic {
    samples: Arc<Mutex<Vec<Result<String, String>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(frontend: u16) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (samples, stop) = (samples.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let answer = get_body(frontend, "/revision").map_err(|e| format!("{e:#}"));
                    samples.lock().unwrap().push(answer);
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        Self {
            samples,
            stop,
            thread: Some(thread),
        }
    }

    /// How many samples so far (a mark to count from).
    fn mark(&self) -> usize {
        self.samples.lock().unwrap().len()
    }

    /// Revision -> answers since `mark`, and the failures.
    fn since(&self, mark: usize) -> (BTreeMap<String, usize>, Vec<String>) {
        let samples = self.samples.lock().unwrap();
        let mut seen = BTreeMap::new();
        let mut failed = Vec::new();
        for s in samples.iter().skip(mark) {
            match s {
                Ok(revision) => *seen.entry(revision.clone()).or_insert(0) += 1,
                Err(e) => failed.push(e.clone()),
            }
        }
        (seen, failed)
    }

    /// The last `n` answers.
    fn last(&self, n: usize) -> Vec<Result<String, String>> {
        let samples = self.samples.lock().unwrap();
        samples.iter().rev().take(n).cloned().collect()
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Polls the service until `done` holds, noting whether any of its tasks
/// was DEACTIVATING meanwhile.
async fn until(
    client: &BerthClient,
    what: &str,
    mut done: impl FnMut(&ServiceDescription) -> bool,
) -> Result<(ServiceDescription, bool)> {
    let deadline = Instant::now() + T;
    let mut saw_deactivating = false;
    loop {
        let service = client.describe_service(CLUSTER, SERVICE).await?;
        let tasks = client
            .list_tasks(&berth_types::TaskFilter {
                cluster: Some(CLUSTER.into()),
                family: Some(SERVICE.into()),
                status: Some(TaskStatus::Deactivating),
                ..Default::default()
            })
            .await
            .unwrap_or_default();
        saw_deactivating |= tasks.iter().any(|t| {
            t.last_status == TaskStatus::Deactivating && t.deactivating_until_ms.is_some()
        });
        if done(&service) {
            return Ok((service, saw_deactivating));
        }
        ensure!(
            Instant::now() < deadline,
            "{what}: not within {T:?}; deployments: {:#?}\nevents: {:#?}",
            service.deployments,
            service.service.events.iter().take(10).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn primary_done(s: &ServiceDescription, task_definition: &str) -> bool {
    s.service.primary().is_some_and(|p| {
        p.task_definition == task_definition && p.rollout_state == RolloutState::Completed
    }) && s.service.deployments.len() == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_through_haproxy_survives_rolling_and_blue_green_deployments_and_a_canary_rollback(
) -> Result<()> {
    if !haproxy_installed() {
        return Ok(());
    }
    let Some(mut s) = AgentCluster::start_with(CLUSTER, 300, 2, &[]).await? else {
        return Ok(());
    };
    // A bridge and subnet of its own (see lb.rs and discovery.rs).
    let mut agent = s.agent("bgt", &[]).with_args(&[
        "--bridge-name",
        "berthbg0",
        "--bridge-subnet",
        "198.18.80.0/24",
    ]);
    agent.start()?;
    wait_instance_status(&s.addr(1), &agent, InstanceState::Active, T).await?;
    let client = admin(&s.servers);
    let result = exercise(&mut s, &client).await;
    // Whatever happened, the agent removes every task network before the
    // test ends (a killed agent would leave NAT rules on this host).
    let torn_down = teardown(&client, &agent).await;
    result.with_context(|| agent.log()).and(torn_down)
}

async fn teardown(client: &BerthClient, agent: &AgentProc) -> Result<()> {
    let mut zero = update(None, None);
    zero.desired_count = Some(0);
    client.update_service(&zero).await?;
    agent.wait_for_no_task_networks(T).await
}

async fn exercise(s: &mut AgentCluster, client: &BerthClient) -> Result<()> {
    register(s, "v1").await?;
    client
        .create_service(&CreateServiceInput {
            cluster: CLUSTER.into(),
            name: SERVICE.into(),
            task_definition: SERVICE.into(),
            desired_count: Some(2),
            load_balancers: vec![LoadBalancer {
                name: "public".into(),
                container_name: "app".into(),
                container_port: 8080,
                deregistration_delay_secs: 3,
            }],
            ..Default::default()
        })
        .await?;

    let (_, readonly) = client
        .create_api_token(berth_types::Role::Readonly, "berth-lb blue/green e2e", None)
        .await?;
    let dir = s.work.path().join("lb");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("token"), &readonly)?;
    let frontend = free_port();
    let config = dir.join("lb.toml");
    std::fs::write(
        &config,
        format!(
            r#"endpoint = "{servers}"
ca_cert = "{ca}"
token_file = "token"
haproxy_socket = "haproxy.sock"
haproxy_config = "haproxy.cfg"
slots = 8

[[load_balancer]]
name = "public"
bind = "127.0.0.1:{frontend}"
cluster = "{CLUSTER}"
service = "{SERVICE}"
container_name = "app"
container_port = 8080
mode = "http"
"#,
            servers = s.servers,
            ca = test_pki().dir.join("ca.crt").display(),
        ),
    )?;
    let lb = LbProc::start(&config)?;
    let run = phases(s, client, frontend).await;
    run.with_context(|| lb.log())
}

async fn phases(s: &AgentCluster, client: &BerthClient, frontend: u16) -> Result<()> {
    until(client, "v1 running", |d| primary_done(d, "bg:1")).await?;
    eventually(T, || async move {
        ensure!(get_body(frontend, "/revision")? == "v1");
        Ok(())
    })
    .await?;
    let traffic = Traffic::start(frontend);

    // 1. Rolling, v1 -> v2.
    let mark = traffic.mark();
    register(s, "v2").await?;
    client.update_service(&update(Some("bg:2"), None)).await?;
    let (_, drained) = until(client, "rolling to v2", |d| primary_done(d, "bg:2")).await?;
    ensure!(drained, "no replaced task was seen DEACTIVATING");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (seen, failed) = traffic.since(mark);
    eprintln!("rolling v1 -> v2: {seen:?}, {} failed", failed.len());
    ensure!(
        failed.is_empty(),
        "requests failed during the rolling deployment: {failed:?}"
    );
    ensure!(
        traffic.last(20).iter().all(|r| r.as_deref() == Ok("v2")),
        "not all on v2 after the rollout: {:?}",
        traffic.last(20)
    );

    // 2. Blue/green canary v2 -> v3 at 10%, held long; then rolled back.
    client
        .update_service(&update(None, Some(canary(10, 600, 0))))
        .await?;
    register(s, "v3").await?;
    client.update_service(&update(Some("bg:3"), None)).await?;
    until(client, "the canary step", |d| {
        d.service
            .primary()
            .is_some_and(|p| p.task_definition == "bg:3" && p.traffic_percent == 10)
    })
    .await?;
    // Let berth-lb apply the weights, then count.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mark = traffic.mark();
    tokio::time::sleep(Duration::from_secs(15)).await;
    let (seen, failed) = traffic.since(mark);
    let total: usize = seen.values().sum();
    let canary_share = *seen.get("v3").unwrap_or(&0) as f64 / total.max(1) as f64;
    eprintln!(
        "canary at 10%: {seen:?} ({canary_share:.3} on v3), {} failed",
        failed.len()
    );
    ensure!(
        failed.is_empty(),
        "requests failed during the canary: {failed:?}"
    );
    // One request at a time, a few dozen a second on a busy machine.
    ensure!(total >= 100, "only {total} answers in 15 s");
    ensure!(
        (0.04..=0.18).contains(&canary_share),
        "the canary got {canary_share:.3} of the requests: {seen:?}"
    );
    ensure!(
        seen.keys().all(|r| r == "v2" || r == "v3"),
        "unexpected revisions: {seen:?}"
    );

    let mark = traffic.mark();
    client.rollback_service(CLUSTER, SERVICE).await?;
    let back_at = Instant::now();
    eventually(Duration::from_secs(10), || async {
        ensure!(
            traffic.last(25).iter().all(|r| r.as_deref() == Ok("v2")),
            "still answered by v3: {:?}",
            traffic.last(25)
        );
        Ok(())
    })
    .await?;
    eprintln!(
        "rollback: every request on v2 within {:?}",
        back_at.elapsed()
    );
    let (service, _) = until(client, "the rolled-back tasks retired", |d| {
        primary_done(d, "bg:2")
    })
    .await?;
    ensure!(
        service
            .service
            .events
            .iter()
            .any(|e| e.message.contains("rolled back")),
        "no rollback event"
    );
    let (seen, failed) = traffic.since(mark);
    eprintln!("after the rollback: {seen:?}, {} failed", failed.len());
    ensure!(
        failed.is_empty(),
        "requests failed during the rollback: {failed:?}"
    );

    // 3. Blue/green to completion: v2 -> v4, canary 10% for 5 s, bake 5 s.
    client
        .update_service(&update(None, Some(canary(10, 5, 5))))
        .await?;
    register(s, "v4").await?;
    let mark = traffic.mark();
    client.update_service(&update(Some("bg:4"), None)).await?;
    let (_, drained) = until(client, "blue/green to v4", |d| primary_done(d, "bg:4")).await?;
    ensure!(drained, "no old task was seen DEACTIVATING");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (seen, failed) = traffic.since(mark);
    eprintln!("blue/green v2 -> v4: {seen:?}, {} failed", failed.len());
    ensure!(
        failed.is_empty(),
        "requests failed during the blue/green deployment: {failed:?}"
    );
    ensure!(
        traffic.last(20).iter().all(|r| r.as_deref() == Ok("v4")),
        "not all on v4 after the deployment: {:?}",
        traffic.last(20)
    );
    Ok(())
}
