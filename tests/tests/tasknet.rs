//! End-to-end: task network mode (ECS's `awsvpc`) and Berth's DNS from
//! inside tasks, on three real berthd servers, a real berth-agent,
//! containerd and the CNI plugins.
//!
//! A task-mode service's tasks are reached on their own addresses and
//! container port, which DescribeTasks, `berth task describe`, the
//! endpoints and every server's DNS give; a bridge-mode task finds the
//! service by its bare name through the glibc resolver and `--task-dns`,
//! and fetches from it; the addresses survive an agent killed with
//! SIGKILL, and nothing of a task's network (iptables rules and chains,
//! veth, IP reservation, netns file and mount) is left once the task stops,
//! or once a task whose container vanished while the agent was down is
//! swept at the agent's next start.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use berth_client::services::EndpointWatch;
use berth_client::{BerthClient, ClientConfig};
use berth_e2e::agents::*;
use berth_e2e::*;
use berth_proto::pb;
use berth_types::{InstanceState, NetworkMode, Task, TaskStatus};
use hickory_proto::rr::RecordType;

const T: Duration = Duration::from_secs(90);
const CLUSTER: &str = "tnet";
/// A bridge and subnet of this test's own: a bridge keeps the subnet of
/// whoever made it first, and discovery.rs and lb.rs use theirs.
const BRIDGE: &str = "berthtask0";
const SUBNET: &str = "198.18.79.0/24";
/// The interface holding the addresses the three servers answer DNS on
/// (port 53, which resolv.conf cannot change): outside every test bridge's
/// subnet, so host-local never hands them to a task, and routed to from
/// the tasks through their gateway like any address of the host.
const DNS_LINK: &str = "berthtaskdns";

fn dns_ip(server: u64) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, 79, u8::try_from(server).expect("a server id"))
}

fn client(servers: &str) -> BerthClient {
    let pki = test_pki();
    BerthClient::new(
        ClientConfig::new(servers.split(',').map(str::to_string).collect::<Vec<_>>())
            .with_ca(pki.ca_pem.clone())
            .with_token(pki.admin_token.clone()),
    )
    .expect("client")
}

fn ip_cmd(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().context("run ip")?;
    ensure!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// The DNS addresses on an interface of their own, removed when dropped.
struct DnsLink;

impl DnsLink {
    fn create() -> Result<Self> {
        // Left by a run that was killed.
        let _ = ip_cmd(&["link", "del", DNS_LINK]);
        // A bridge without ports stands in for a dummy interface, which
        // needs a kernel module not every host (or CI container) has.
        ip_cmd(&["link", "add", DNS_LINK, "type", "bridge"])?;
        let link = DnsLink;
        for id in 1..=3 {
            ip_cmd(&[
                "addr",
                "add",
                &format!("{}/32", dns_ip(id)),
                "dev",
                DNS_LINK,
            ])?;
        }
        ip_cmd(&["link", "set", DNS_LINK, "up"])?;
        Ok(link)
    }
}

impl Drop for DnsLink {
    fn drop(&mut self) {
        let _ = ip_cmd(&["link", "del", DNS_LINK]);
    }
}

/// The next endpoint set with `count` endpoints, as (address, port)s.
async fn wait_for(watch: &mut EndpointWatch, count: usize) -> Result<BTreeSet<(String, u32)>> {
    let set = tokio::time::timeout(T, async {
        loop {
            let set = watch.next().await?;
            if set.endpoints.len() == count {
                return Ok::<_, anyhow::Error>(set);
            }
        }
    })
    .await
    .with_context(|| format!("no set of {count} endpoints within {T:?}"))??;
    Ok(set
        .endpoints
        .iter()
        .map(|e| (e.address.clone(), e.port))
        .collect())
}

fn subnet() -> berth_agent::tasknet::cni::Subnet {
    SUBNET.parse().expect("subnet")
}

/// A task's reported address, which must be on the test bridge.
fn address_of(task: &Task) -> Result<Ipv4Addr> {
    let ip: Ipv4Addr = task
        .ip
        .as_deref()
        .with_context(|| format!("task {} reports no address", task.id))?
        .parse()?;
    ensure!(subnet().contains(ip), "{ip} is not in {SUBNET}");
    Ok(ip)
}

/// The host side of a task's veth, from the agent's CNI record of it.
fn host_veth(agent: &AgentProc, task_id: &str) -> Result<String> {
    let path = agent
        .dir
        .join("state/cni/tasks")
        .join(format!("{task_id}.json"));
    let record: berth_agent::tasknet::cni::NetRecord =
        serde_json::from_slice(&std::fs::read(&path).with_context(|| path.display().to_string())?)?;
    let result = record.result.context("no CNI result in the record")?;
    berth_agent::tasknet::cni::addressing(&result, BRIDGE)
        .map_err(|e| anyhow!(e))?
        .host_veth
        .context("no host veth in the CNI result")
}

fn iptables_rules() -> Result<String> {
    let out = Command::new("iptables-save")
        .output()
        .context("run iptables-save")?;
    ensure!(out.status.success(), "iptables-save failed");
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn mentions(line: &str, ip: Ipv4Addr) -> bool {
    line.contains(&format!("{ip}/")) || line.contains(&format!("{ip}:"))
}

/// The per-task iptables chains (the bridge plugin's masquerade chain,
/// portmap's DNAT chain) that rules about `ip` jump to; the plugins' shared
/// chains (CNI-FORWARD, CNI-HOSTPORT-*) are not the task's.
fn chains_of(rules: &str, ip: Ipv4Addr) -> BTreeSet<String> {
    rules
        .lines()
        .filter(|l| mentions(l, ip))
        .flat_map(|l| {
            let t: Vec<&str> = l.split_whitespace().collect();
            t.windows(2)
                .filter(|w| matches!(w[0], "-j" | "-g"))
                .map(|w| w[1].to_string())
                .collect::<Vec<_>>()
        })
        .filter(|chain| {
            let hash = chain
                .strip_prefix("CNI-DN-")
                .or_else(|| chain.strip_prefix("CNI-SN-"))
                .or_else(|| chain.strip_prefix("CNI-"))
                .unwrap_or_default();
            hash.len() >= 16 && hash.chars().all(|c| c.is_ascii_hexdigit())
        })
        .collect()
}

/// What a task's network set up on the host, to check later that it went.
#[derive(Debug, Clone)]
struct NetTrace {
    task_id: String,
    ip: Ipv4Addr,
    veth: String,
    chains: BTreeSet<String>,
}

fn trace(agent: &AgentProc, task: &Task) -> Result<NetTrace> {
    let ip = address_of(task)?;
    let chains = chains_of(&iptables_rules()?, ip);
    ensure!(
        !chains.is_empty(),
        "no iptables chain of {ip} found while it runs"
    );
    Ok(NetTrace {
        task_id: task.id.clone(),
        ip,
        veth: host_veth(agent, &task.id)?,
        chains,
    })
}

/// What is left on this host of a task's network: nothing, once its
/// agent has released it.
fn leftovers(agent: &AgentProc, net: &NetTrace) -> Result<Vec<String>> {
    let state = agent.dir.join("state");
    let mut left = Vec::new();
    let rules = iptables_rules()?;
    for line in rules.lines() {
        if mentions(line, net.ip) || net.chains.iter().any(|c| line.contains(c.as_str())) {
            left.push(format!("iptables: {line}"));
        }
    }
    if Path::new("/sys/class/net").join(&net.veth).exists() {
        left.push(format!("veth {}", net.veth));
    }
    let reservation = state.join("cni/ipam/berth").join(net.ip.to_string());
    if reservation.exists() {
        left.push(format!("IP reservation {}", reservation.display()));
    }
    let record = state
        .join("cni/tasks")
        .join(format!("{}.json", net.task_id));
    if record.exists() {
        left.push(format!("CNI record {}", record.display()));
    }
    let netns = state.join("netns").join(&net.task_id);
    if netns.exists() {
        left.push(format!("netns file {}", netns.display()));
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    if mounts.contains(&netns.display().to_string()) {
        left.push(format!("netns mount {}", netns.display()));
    }
    Ok(left)
}

fn assert_released(agent: &AgentProc, net: &NetTrace, when: &str) -> Result<()> {
    let left = leftovers(agent, net)?;
    ensure!(
        left.is_empty(),
        "{when}: task {} ({}) left: {left:#?}",
        net.task_id,
        net.ip
    );
    Ok(())
}

/// The service's RUNNING tasks.
async fn running_web_tasks(client: &BerthClient) -> Result<Vec<Task>> {
    Ok(client
        .list_tasks(&berth_types::TaskFilter {
            cluster: Some(CLUSTER.into()),
            family: Some("web".into()),
            status: Some(TaskStatus::Running),
            ..Default::default()
        })
        .await?)
}

/// `berth ARGS` against the cluster; its stdout.
fn berth_cli(servers: &str, args: &[&str]) -> Result<String> {
    let pki = test_pki();
    let out = Command::new(binary("berth"))
        .arg("--endpoint")
        .arg(servers)
        .arg("--ca-cert")
        .arg(pki.dir.join("ca.crt"))
        .args(args)
        .env_remove("BERTH_ENDPOINT")
        .env_remove("BERTH_CA_CERT")
        .env_remove("BERTH_CONFIG")
        .env("BERTH_TOKEN", &pki.admin_token)
        .output()
        .context("run berth")?;
    ensure!(
        out.status.success(),
        "berth {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// Kills and deletes one container in the agent's namespace, behind its
/// back (as a host reboot would, while the agent is down).
fn delete_container(s: &AgentCluster, agent: &AgentProc, id: &str) -> Result<()> {
    let ctr = |args: &[&str]| -> Result<()> {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&s.env.socket)
            .args(["-n", &agent.namespace])
            .args(args)
            .output()
            .context("run ctr")?;
        ensure!(
            out.status.success(),
            "ctr {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(())
    };
    ctr(&["tasks", "kill", "-s", "SIGKILL", id])?;
    // The kill is asynchronous: delete once the process is gone.
    let mut deleted = Err(anyhow!("not tried"));
    for _ in 0..50 {
        deleted = ctr(&["tasks", "delete", id]);
        if deleted.is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    deleted?;
    ctr(&["containers", "delete", id])
}

/// berth-agent refuses a --task-dns that no task could reach, with one
/// line naming the flag, before it does anything else.
#[test]
fn a_loopback_task_dns_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(binary("berth-agent"))
        .args(["--server", "127.0.0.1:1", "--task-dns", "127.0.0.53"])
        .arg("--data-dir")
        .arg(dir.path().join("identity"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .output()
        .expect("run berth-agent");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(
        lines[0].contains("--task-dns") && lines[0].contains("loopback"),
        "{stderr}"
    );
    assert!(!dir.path().join("identity").exists(), "nothing done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_mode_service_is_reached_on_its_own_addresses_and_found_by_name_from_tasks(
) -> Result<()> {
    let _dns = DnsLink::create()?;
    let Some(s) =
        AgentCluster::start_with(CLUSTER, 300, 2, &["--dns-listen", "198.19.79.{id}:53"]).await?
    else {
        return Ok(());
    };
    let task_dns = format!("{},{}", dns_ip(1), dns_ip(2));
    let mut agent = s.agent("tnet", &[]).with_args(&[
        "--bridge-name",
        BRIDGE,
        "--bridge-subnet",
        SUBNET,
        "--task-dns",
        &task_dns,
    ]);
    agent.start()?;
    wait_instance_status(&s.addr(1), &agent, InstanceState::Active, T).await?;

    let client = client(&s.servers);
    let result = exercise(&s, &client, &mut agent).await;
    // Whatever happened, the agent tears the tasks' networks down before
    // it goes (a killed agent would leave NAT rules on this host).
    if !agent.is_running() {
        agent.start()?;
    }
    let torn_down = bridge_web::teardown(&client, CLUSTER, &agent).await;
    result.and(torn_down)
}

async fn exercise(s: &AgentCluster, client: &BerthClient, agent: &mut AgentProc) -> Result<()> {
    bridge_web::create_in_mode(s, client, CLUSTER, 2, NetworkMode::Task).await?;
    let mut watch = client.watch_endpoints(CLUSTER, "web");
    let endpoints = wait_for(&mut watch, 2).await.with_context(|| agent.log())?;

    // (a) Each task has an address of its own on the bridge: described,
    // its endpoint, and answering HTTP on its container port from here.
    let tasks = running_web_tasks(client).await?;
    ensure!(tasks.len() == 2, "{tasks:?}");
    let mut ips = BTreeSet::new();
    let mut answers = BTreeSet::new();
    for task in &tasks {
        let (described, bindings) = client.describe_task_with_bindings(&task.id).await?;
        let ip = address_of(&described)?;
        ensure!(
            bindings.is_empty(),
            "task mode publishes nothing: {bindings:?}"
        );
        let text = eventually(T, || async move {
            http_get_at(SocketAddr::from((ip, 8080)), "/env")
        })
        .await
        .with_context(|| format!("GET http://{ip}:8080/env\n{}", agent.log()))?;
        ensure!(text.starts_with("HTTP/1.1 200"), "{text}");
        answers.insert(text);
        let detail = berth_cli(&s.servers, &["task", "describe", &task.id])?;
        ensure!(
            detail.contains(&format!("Address:          {ip}\n")),
            "berth task describe: {detail}"
        );
        ensure!(!detail.contains("Ports:"), "{detail}");
        ips.insert(ip);
    }
    ensure!(
        ips.len() == 2 && answers.len() == 2,
        "two tasks, two addresses"
    );
    let expected: BTreeSet<(String, u32)> = ips.iter().map(|ip| (ip.to_string(), 8080)).collect();
    ensure!(
        endpoints == expected,
        "endpoints {endpoints:?}, tasks {ips:?}"
    );

    // Every server's DNS names the tasks' own addresses and container port.
    let want_a: Vec<String> = ips.iter().map(Ipv4Addr::to_string).collect();
    for id in 1..=3 {
        let dns = SocketAddr::from((dns_ip(id), 53));
        let a = eventually(T, || async move {
            let a = dig(dns, &format!("web.{CLUSTER}.berth."), RecordType::A).await?;
            ensure!(a.len() == 2, "server {id}: {a:?}");
            Ok(a)
        })
        .await?;
        ensure!(a == want_a, "server {id}: {a:?}, tasks {want_a:?}");
        let srv = dig(
            dns,
            &format!("_8080._tcp.web.{CLUSTER}.berth."),
            RecordType::SRV,
        )
        .await?;
        ensure!(
            srv.len() == 2
                && srv
                    .iter()
                    .all(|r| r.split_whitespace().nth(2) == Some("8080")),
            "server {id}: {srv:?}"
        );
    }

    let mut traces = Vec::new();
    for task in &tasks {
        traces.push(trace(agent, &client.describe_task(&task.id).await?)?);
    }

    // (b) A bridge-mode task resolves the bare name `web` through Berth's
    // DNS (its resolv.conf from --task-dns, glibc's resolver) and fetches
    // from the address it got.
    let client_task = run_lookup_task(s, client).await?;
    let stopped = wait_task_status(&s.addr(1), &client_task, TaskStatus::Stopped, T)
        .await
        .with_context(|| agent.log())?;
    let logs = task_logs(&s.addr(1), &client_task).await?;
    let looked_up: BTreeSet<Ipv4Addr> = logs
        .lines()
        .find_map(|l| l.strip_prefix("lookup web: "))
        .with_context(|| format!("no lookup line: {logs}"))?
        .split(", ")
        .map(Ipv4Addr::from_str)
        .collect::<Result<_, _>>()?;
    ensure!(
        looked_up == ips,
        "resolved {looked_up:?}, tasks {ips:?}: {logs}"
    );
    ensure!(
        logs.lines()
            .any(|l| l.starts_with("lookup GET ") && l.ends_with(":8080: HTTP/1.1 200 OK")),
        "{logs}"
    );
    ensure!(
        stopped.containers.iter().all(|c| c.exit_code == Some(0)),
        "{stopped:?}\n{logs}"
    );
    // (c) Its network went when it stopped: before STOPPED was reported.
    let client_ip = address_of(&stopped)?;
    ensure!(!ips.contains(&client_ip));
    for net in &traces {
        let kept = leftovers(agent, net)?;
        ensure!(
            kept.iter().any(|l| l.starts_with("netns mount"))
                && kept.iter().any(|l| l.starts_with("veth")),
            "the web tasks keep theirs: {kept:?}"
        );
    }
    let veths = std::fs::read_dir(Path::new("/sys/class/net").join(BRIDGE).join("brif"))?.count();
    ensure!(veths == 2, "only the web tasks' veths on {BRIDGE}: {veths}");
    ensure!(
        !iptables_rules()?.lines().any(|l| mentions(l, client_ip)),
        "no rule about the stopped task's {client_ip}"
    );
    ensure!(!agent
        .dir
        .join("state/cni/ipam/berth")
        .join(client_ip.to_string())
        .exists());

    // An agent killed with SIGKILL and started again keeps the tasks, their
    // networks and their addresses.
    agent.kill9();
    agent.start()?;
    eventually(T, || async {
        ensure!(agent.health("/readyz"), "no session yet");
        Ok(())
    })
    .await
    .with_context(|| agent.log())?;
    for net in &traces {
        let task = describe_task(&s.addr(2), &net.task_id).await?;
        ensure!(task.last_status == TaskStatus::Running, "{task:?}");
        ensure!(address_of(&task)? == net.ip);
        eventually(T, || async move {
            http_get_at(SocketAddr::from((net.ip, 8080)), "/health")
        })
        .await?;
    }

    // A task whose container vanished while its agent was down: the next
    // agent start sweeps its network, the task is STOPPED and replaced.
    let gone = traces[0].clone();
    agent.kill9();
    let deleted = delete_container(
        s,
        agent,
        &berth_agent::containerd::container_id(&gone.task_id, "app"),
    );
    agent.start()?;
    deleted?;
    wait_task_status(&s.addr(1), &gone.task_id, TaskStatus::Stopped, T)
        .await
        .with_context(|| agent.log())?;
    assert_released(agent, &gone, "after the agent's start-up sweep")?;
    let replaced = wait_for(&mut watch, 2).await.with_context(|| agent.log())?;
    ensure!(
        !replaced.contains(&(gone.ip.to_string(), 8080)),
        "{replaced:?} still has {}",
        gone.ip
    );
    let mut left = vec![traces[1].clone()];
    for task in running_web_tasks(client).await? {
        if task.id != traces[1].task_id {
            left.push(trace(agent, &task)?);
        }
    }
    ensure!(left.len() == 2, "{left:?}");

    // Scaled to zero: every network goes as its task stops.
    bridge_web::scale(client, CLUSTER, 0).await?;
    for net in &left {
        wait_task_status(&s.addr(1), &net.task_id, TaskStatus::Stopped, T).await?;
        assert_released(agent, net, "after the task stopped")?;
    }
    let ports = std::fs::read_dir(Path::new("/sys/class/net").join(BRIDGE).join("brif"))?.count();
    if ports != 0 {
        bail!("{ports} veths left on {BRIDGE}");
    }
    Ok(())
}

/// Runs `client`: a bridge-mode task whose test app looks `web` up and
/// GETs /env from it. Returns its task id.
async fn run_lookup_task(s: &AgentCluster, client: &BerthClient) -> Result<String> {
    let mut spec: berth_types::TaskDefinitionSpec = from_wire(testapp_taskdef(
        "client",
        &s.image,
        &["lookup", "web", "8080"],
        32,
    ))?;
    spec.network_mode = NetworkMode::Bridge;
    taskdefs(&s.addr(1))
        .await?
        .register_task_definition(pb::RegisterTaskDefinitionRequest {
            spec: Some(spec.into()),
        })
        .await?;
    let tasks = client
        .run_task(&berth_types::RunTaskInput {
            launch: berth_types::TaskLaunch {
                cluster: Some(CLUSTER.into()),
                task_definition: "client".into(),
                ..Default::default()
            },
            count: 1,
            ..Default::default()
        })
        .await?;
    let task = tasks.first().context("no task started")?;
    Ok(task.id.clone())
}
