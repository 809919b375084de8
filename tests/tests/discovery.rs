//! End-to-end: a bridge-mode service on real berthd servers, a real
//! berth-agent, containerd and the CNI plugins. Two copies share one host,
//! each on its own dynamic host port and answering through it; the
//! WatchEndpoints stream and every server's DNS (SRV and A records) name
//! exactly the healthy tasks, and follow a scale-in and a stopped task.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use berth_client::services::EndpointWatch;
use berth_client::{BerthClient, ClientConfig};
use berth_e2e::agents::*;
use berth_e2e::*;
use berth_types::InstanceState;
use hickory_proto::rr::RecordType;

const T: Duration = Duration::from_secs(90);
const CLUSTER: &str = "disc";

fn client(servers: &str) -> BerthClient {
    let pki = test_pki();
    BerthClient::new(
        ClientConfig::new(servers.split(',').map(str::to_string).collect::<Vec<_>>())
            .with_ca(pki.ca_pem.clone())
            .with_token(pki.admin_token.clone()),
    )
    .expect("client")
}

/// The next endpoint set with `count` endpoints; its (address, port)s.
async fn wait_for(watch: &mut EndpointWatch, count: usize) -> Result<Vec<(String, u32)>> {
    let found = tokio::time::timeout(T, async {
        loop {
            let set = watch.next().await?;
            if set.endpoints.len() == count {
                return Ok::<_, anyhow::Error>(set);
            }
        }
    })
    .await
    .with_context(|| format!("no set of {count} endpoints within {T:?}"))??;
    Ok(found
        .endpoints
        .iter()
        .map(|e| (e.address.clone(), e.port))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_service_is_found_by_its_endpoints_and_dns_and_follows_changes() -> Result<()> {
    let dns_port = free_port();
    let dns_flag = format!("127.0.0.{{id}}:{dns_port}");
    let Some(s) =
        AgentCluster::start_with(CLUSTER, 300, 2, &["--dns-listen", dns_flag.as_str()]).await?
    else {
        return Ok(());
    };
    let dns = |id: u8| SocketAddr::from(([127, 0, 0, id], dns_port));
    let mut agent = s.agent("disc", &[]).with_args(&[
        "--bridge-name",
        "berthdisc0",
        "--bridge-subnet",
        "198.18.77.0/24",
    ]);
    agent.start()?;
    wait_instance_status(&s.addr(1), &agent, InstanceState::Active, T).await?;

    let client = client(&s.servers);
    let result = exercise(&s, &client, &agent, dns).await;
    // Whatever happened, the agent tears the tasks' networks down before it
    // goes (a killed agent would leave NAT rules on this host).
    let torn_down = bridge_web::teardown(&client, CLUSTER, &agent).await;
    result.and(torn_down)
}

async fn exercise(
    s: &AgentCluster,
    client: &BerthClient,
    agent: &AgentProc,
    dns: impl Fn(u8) -> SocketAddr + Copy,
) -> Result<()> {
    // Two copies of an HTTP server on container port 8080, host ports left
    // to Berth.
    bridge_web::create(s, client, CLUSTER, 2).await?;

    let mut watch = client.watch_endpoints(CLUSTER, "web");
    let endpoints = wait_for(&mut watch, 2).await.with_context(|| agent.log())?;
    let ports: BTreeSet<u32> = endpoints.iter().map(|(_, port)| *port).collect();
    ensure!(
        ports.len() == 2,
        "two copies, two host ports: {endpoints:?}"
    );
    ensure!(
        ports.iter().all(|p| (49153..=65535).contains(p)),
        "dynamic ports: {ports:?}"
    );
    ensure!(
        endpoints.iter().all(|(address, _)| address == "127.0.0.1"),
        "the agent's address as the leader saw its session: {endpoints:?}"
    );
    // Each copy answers on its own host port, as itself.
    let mut answers = BTreeSet::new();
    for port in &ports {
        let port = u16::try_from(*port)?;
        let text = eventually(T, || async move { http_get(port, "/env") })
            .await
            .with_context(|| format!("GET /env on host port {port}\n{}", agent.log()))?;
        ensure!(
            text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.0 200"),
            "{text}"
        );
        answers.insert(text);
    }
    ensure!(answers.len() == 2, "both ports reached the same task");

    // Every server's DNS says the same.
    let srv_name = format!("_8080._tcp.web.{CLUSTER}.berth.");
    let srv_ports = |records: &[String]| -> BTreeSet<u32> {
        records
            .iter()
            .filter_map(|r| r.split_whitespace().nth(2)?.parse().ok())
            .collect()
    };
    for id in 1..=3 {
        let records = eventually(T, || {
            let srv_name = srv_name.clone();
            async move {
                let records = dig(dns(id), &srv_name, RecordType::SRV).await?;
                ensure!(records.len() == 2, "server {id}: {records:?}");
                Ok(records)
            }
        })
        .await?;
        ensure!(srv_ports(&records) == ports, "server {id}: {records:?}");
        let a = dig(dns(id), &format!("web.{CLUSTER}.berth."), RecordType::A).await?;
        ensure!(a == vec!["127.0.0.1".to_string()], "server {id}: {a:?}");
    }
    let unknown = dig(dns(2), &format!("nope.{CLUSTER}.berth."), RecordType::A).await?;
    ensure!(unknown.is_empty());

    // Scale in: one endpoint leaves the stream and DNS.
    bridge_web::scale(client, CLUSTER, 1).await?;
    let left = wait_for(&mut watch, 1).await?;
    eventually(T, || {
        let srv_name = srv_name.clone();
        async move {
            let records = dig(dns(3), &srv_name, RecordType::SRV).await?;
            ensure!(records.len() == 1, "{records:?}");
            Ok(())
        }
    })
    .await?;

    // The remaining task is stopped: it leaves at once; the service starts
    // a replacement, which appears when it runs.
    let tasks = client
        .list_tasks(&berth_types::TaskFilter {
            cluster: Some(CLUSTER.into()),
            ..Default::default()
        })
        .await?;
    let remaining = tasks
        .iter()
        .find(|t| {
            t.desired_status == berth_types::DesiredStatus::Running
                && t.last_status == berth_types::TaskStatus::Running
        })
        .context("a running task")?;
    client.stop_task(&remaining.id, "test").await?;
    wait_for(&mut watch, 0).await?;
    let replaced = wait_for(&mut watch, 1).await?;
    ensure!(replaced.len() == 1 && left.len() == 1);

    Ok(())
}
