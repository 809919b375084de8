//! Real `berth-agent` processes running real containers through the test
//! containerd (see scripts/test-env.sh), and the helpers the task tests use.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use berth_proto::pb;
use berth_proto::pb::activation_service_client::ActivationServiceClient;
use berth_proto::pb::instance_service_client::InstanceServiceClient;
use berth_proto::pb::task_service_client::TaskServiceClient;

use berth_types::{InstanceState, InstanceView, Task, TaskStatus};

use crate::{binary, channel, eventually, from_wire, AuthChannel};

/// Where the private containerd and registry of scripts/test-env.sh are.
pub struct ContainerdEnv {
    pub socket: PathBuf,
    pub registry: String,
}

impl ContainerdEnv {
    /// `None` (the test skips, saying so) outside CI when the environment is
    /// not set up; under `CI=true` a missing environment fails the test.
    pub fn from_env() -> Option<Self> {
        let socket = std::env::var("BERTH_TEST_CONTAINERD_SOCK").ok();
        let registry = std::env::var("BERTH_TEST_REGISTRY").ok();
        match (socket, registry) {
            (Some(s), Some(r)) => Some(Self {
                socket: PathBuf::from(s),
                registry: r,
            }),
            _ => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "CI=true but BERTH_TEST_CONTAINERD_SOCK / BERTH_TEST_REGISTRY are not set: \
                     run `eval \"$(scripts/test-env.sh)\"` first"
                );
                eprintln!(
                    "NOTICE: skipping: set BERTH_TEST_CONTAINERD_SOCK and BERTH_TEST_REGISTRY (scripts/test-env.sh)"
                );
                None
            }
        }
    }

    /// The test image (berth-testapp, no base image) in the test registry.
    pub async fn testapp_image(&self) -> Result<String> {
        static PUSHED: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
        let registry = self.registry.clone();
        PUSHED
            .get_or_try_init(|| async move {
                let binary = berth_agent::ocibuild::static_testapp_binary(&workspace_root())
                    .context("build berth-testapp")?;
                let image = berth_agent::ocibuild::testapp_image(&binary)?;
                let reference = format!("{registry}/berth-e2e/testapp:v1");
                image.push_insecure(&reference).await?;
                Ok::<_, anyhow::Error>(reference)
            })
            .await
            .cloned()
    }

    /// The ids of the running containerd tasks (containers) of a namespace.
    pub fn running_containers(&self, namespace: &str) -> Result<BTreeSet<String>> {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["-n", namespace, "tasks", "ls"])
            .output()
            .context("run ctr")?;
        anyhow::ensure!(
            out.status.success(),
            "ctr tasks ls: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Columns: TASK PID STATUS, after a header line.
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(1)
            .filter_map(|line| {
                let cols: Vec<&str> = line.split_whitespace().collect();
                (cols.get(2) == Some(&"RUNNING")).then(|| cols[0].to_string())
            })
            .collect())
    }

    /// The ids of every container of a namespace, running or not.
    pub fn containers(&self, namespace: &str) -> Result<BTreeSet<String>> {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["-n", namespace, "containers", "ls", "-q"])
            .output()
            .context("run ctr")?;
        anyhow::ensure!(
            out.status.success(),
            "ctr containers ls: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect())
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// One `berth-agent` process with its own data dir, state dir and
/// containerd namespace, so several share one containerd without touching
/// each other's containers.
pub struct AgentProc {
    pub name: String,
    /// Its plain-HTTP health endpoint.
    pub health_addr: String,
    pub namespace: String,
    pub dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
}

impl AgentProc {
    /// Waits until the agent has removed every task network namespace (a
    /// killed agent would leave NAT rules on this host).
    pub async fn wait_for_no_task_networks(&self, timeout: Duration) -> Result<()> {
        let netns = self.dir.join("state").join("netns");
        crate::eventually(timeout, || {
            let netns = netns.clone();
            async move {
                let left: Vec<_> = std::fs::read_dir(&netns)
                    .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
                    .unwrap_or_default();
                anyhow::ensure!(left.is_empty(), "network namespaces left: {left:?}");
                Ok(())
            }
        })
        .await
        .with_context(|| self.log())
    }

    pub fn new(
        name: &str,
        work: &Path,
        env: &ContainerdEnv,
        servers: &str,
        token: &str,
        attributes: &[&str],
    ) -> Self {
        let dir = work.join(name);
        let namespace = format!("e2e-{name}-{}", std::process::id());
        let health_addr = format!("127.0.0.1:{}", crate::free_port());
        let mut args = vec![
            "--server".to_string(),
            servers.to_string(),
            "--token".into(),
            token.to_string(),
            "--data-dir".into(),
            dir.join("identity").display().to_string(),
            "--state-dir".into(),
            dir.join("state").display().to_string(),
            "--containerd-socket".into(),
            env.socket.display().to_string(),
            "--namespace".into(),
            namespace.clone(),
            "--log".into(),
            "info,berth_agent=debug".into(),
            "--health-listen".into(),
            health_addr.clone(),
        ];
        for a in attributes {
            args.push("--attribute".into());
            args.push(a.to_string());
        }
        Self {
            name: name.to_string(),
            health_addr,
            namespace,
            log: work.join(format!("{name}.log")),
            dir,
            args,
            child: None,
        }
    }

    /// More berth-agent flags.
    pub fn with_args(mut self, extra: &[&str]) -> Self {
        self.args.extend(extra.iter().map(|a| a.to_string()));
        self
    }

    pub fn start(&mut self) -> Result<()> {
        self.child = Some(crate::spawn_logged("berth-agent", &self.args, &self.log)?);
        Ok(())
    }

    /// `berth-agent health --url http://ADDR/PATH` succeeded.
    pub fn health(&self, path: &str) -> bool {
        Command::new(binary("berth-agent"))
            .args([
                "health",
                "--url",
                &format!("http://{}{path}", self.health_addr),
            ])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Started, and has not exited.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn instance_id(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.dir.join("identity/identity.json")).ok()?;
        let value: serde_json::Value = serde_json::from_str(&text).ok()?;
        value["instanceId"].as_str().map(str::to_string)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        self.kill9();
        // Task containers outlive the agent on purpose; the test's own are
        // removed here so nothing is left behind in the shared containerd.
        if let Ok(sock) = std::env::var("BERTH_TEST_CONTAINERD_SOCK") {
            cleanup_namespace(Path::new(&sock), &self.namespace);
        }
        // A bridge-mode agent makes its netns directory a (shared) mount
        // point of its own; left mounted, it keeps the test's temporary
        // directory from being removed. Not mounted: nothing to do.
        let netns = self.dir.join("state").join("netns");
        if netns.exists() {
            let _ = Command::new("umount").arg("--lazy").arg(&netns).output();
        }
    }
}

/// Kills and deletes every task and container in a namespace.
pub fn cleanup_namespace(socket: &Path, namespace: &str) {
    let ctr = |args: &[&str]| {
        Command::new("ctr")
            .arg("--address")
            .arg(socket)
            .args(["-n", namespace])
            .args(args)
            .output()
    };
    let list = |what: &str| -> Vec<String> {
        ctr(&[what, "ls", "-q"])
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    for task in list("tasks") {
        let _ = ctr(&["tasks", "kill", "-s", "SIGKILL", &task]);
    }
    std::thread::sleep(Duration::from_millis(300));
    for task in list("tasks") {
        let _ = ctr(&["tasks", "delete", "-f", &task]);
    }
    for container in list("containers") {
        let _ = ctr(&["containers", "delete", &container]);
    }
    // The agent's task cgroups (`/<namespace>/task-*`) and the namespace's
    // own, now empty, in every hierarchy; an agent would sweep them at its
    // next start, but this namespace has none.
    // v2: /sys/fs/cgroup itself; v1: each hierarchy below it.
    let root = Path::new("/sys/fs/cgroup");
    let hierarchies = std::fs::read_dir(root)
        .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
        .unwrap_or_default();
    for h in std::iter::once(root.to_path_buf()).chain(hierarchies) {
        let dir = h.join(namespace);
        if let Ok(tasks) = std::fs::read_dir(&dir) {
            for t in tasks.flatten() {
                if t.file_name().to_string_lossy().starts_with("task-") {
                    let _ = std::fs::remove_dir(t.path());
                }
            }
        }
        let _ = std::fs::remove_dir(&dir);
    }
}

pub async fn tasks_client(addr: &str) -> Result<TaskServiceClient<AuthChannel>> {
    Ok(TaskServiceClient::new(channel(addr).await?))
}

pub async fn instances_client(addr: &str) -> Result<InstanceServiceClient<AuthChannel>> {
    Ok(InstanceServiceClient::new(channel(addr).await?))
}

/// A join token for `cluster` good for `max` registrations.
pub async fn join_token(addr: &str, cluster: &str, max: u32) -> Result<String> {
    let mut client = ActivationServiceClient::new(channel(addr).await?);
    Ok(client
        .create_activation(pb::CreateActivationRequest {
            cluster: cluster.into(),
            max_registrations: max,
            ..Default::default()
        })
        .await?
        .into_inner()
        .token)
}

pub async fn instance(addr: &str, id: &str) -> Result<InstanceView> {
    from_wire(
        instances_client(addr)
            .await?
            .describe_instance(pb::DescribeInstanceRequest { id: id.into() })
            .await?
            .into_inner()
            .instance
            .ok_or_else(|| anyhow!("no instance in reply"))?,
    )
}

/// Waits until the agent has registered and its instance shows `status`.
pub async fn wait_instance_status(
    addr: &str,
    agent: &AgentProc,
    status: InstanceState,
    timeout: Duration,
) -> Result<InstanceView> {
    eventually(timeout, || async {
        let id = agent
            .instance_id()
            .ok_or_else(|| anyhow!("{} not registered yet", agent.name))?;
        let i = instance(addr, &id).await?;
        if i.status == status {
            Ok(i)
        } else {
            Err(anyhow!("{} is {}, waiting for {status}", id, i.status))
        }
    })
    .await
    .with_context(|| format!("agent log:\n{}", agent.log()))
}

pub async fn describe_task(addr: &str, id: &str) -> Result<Task> {
    from_wire(
        tasks_client(addr)
            .await?
            .describe_task(pb::DescribeTaskRequest { id: id.into() })
            .await?
            .into_inner()
            .task
            .ok_or_else(|| anyhow!("no task in reply"))?,
    )
}

/// Waits until the task's last status is `status`.
pub async fn wait_task_status(
    addr: &str,
    id: &str,
    status: TaskStatus,
    timeout: Duration,
) -> Result<Task> {
    eventually(timeout, || async {
        let t = describe_task(addr, id).await?;
        if t.last_status == status {
            Ok(t)
        } else {
            Err(anyhow!(
                "task {id} is {} (desired {}, placement: {:?}, stopped: {:?}), waiting for {}",
                t.last_status.as_str(),
                t.desired_status.as_str(),
                t.placement_reason,
                t.stopped_reason,
                status.as_str()
            ))
        }
    })
    .await
}

/// Reads a task's logs (not following) as text.
pub async fn task_logs(addr: &str, id: &str) -> Result<String> {
    let mut stream = tasks_client(addr)
        .await?
        .get_task_logs(pb::TaskLogsRequest {
            id: id.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut text = String::new();
    while let Some(chunk) = stream.message().await? {
        text.push_str(&String::from_utf8_lossy(&chunk.data));
    }
    Ok(text)
}

/// A task definition running berth-testapp with `command`.
pub fn testapp_taskdef(
    family: &str,
    image: &str,
    command: &[&str],
    memory: u32,
) -> pb::TaskDefinitionSpec {
    let mut container = berth_types::ContainerDefinition::new("app", image);
    container.memory = Some(memory);
    container.cpu = 64;
    container.command = command.iter().map(|s| s.to_string()).collect();
    container.stop_timeout = Some(2);
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

/// A 3-server cluster with fast agent heartbeats (500 ms, a 3 s grace after
/// a leader change), an ECS cluster of its own with a short `lost_after`,
/// a join token for it, and the test image: what the agent e2e tests share.
pub struct AgentCluster {
    pub cluster: crate::TestCluster,
    pub env: ContainerdEnv,
    /// Every server's address, comma-separated.
    pub servers: String,
    pub work: tempfile::TempDir,
    pub token: String,
    pub image: String,
}

impl AgentCluster {
    /// `None` when the containerd environment is not set up (outside CI).
    pub async fn start(
        name: &str,
        lost_after_secs: u64,
        registrations: u32,
    ) -> Result<Option<Self>> {
        Self::start_with(name, lost_after_secs, registrations, &[]).await
    }

    /// [`AgentCluster::start`] with more berthd flags (`{id}` is each
    /// server's id).
    pub async fn start_with(
        name: &str,
        lost_after_secs: u64,
        registrations: u32,
        server_args: &[&str],
    ) -> Result<Option<Self>> {
        let Some(env) = ContainerdEnv::from_env() else {
            return Ok(None);
        };
        let image = env.testapp_image().await?;
        let mut args = vec!["--agent-heartbeat", "500ms", "--agent-grace", "3s"];
        args.extend_from_slice(server_args);
        let cluster = crate::TestCluster::start(3, &args).await?;
        let servers: String = (1..=3)
            .map(|id| cluster.addr(id))
            .collect::<Vec<_>>()
            .join(",");
        crate::clusters(&cluster.addr(1))
            .await?
            .create_cluster(pb::CreateClusterRequest {
                name: name.into(),
                lost_after_secs,
                task_retention_secs: 0,
                tags: Default::default(),
            })
            .await?;
        let token = join_token(&cluster.addr(1), name, registrations).await?;
        Ok(Some(Self {
            cluster,
            env,
            servers,
            work: tempfile::tempdir()?,
            token,
            image,
        }))
    }

    pub fn agent(&self, name: &str, attributes: &[&str]) -> AgentProc {
        AgentProc::new(
            name,
            self.work.path(),
            &self.env,
            &self.servers,
            &self.token,
            attributes,
        )
    }

    pub fn addr(&self, id: u64) -> String {
        self.cluster.addr(id)
    }
}

/// The web service the networking tests share: `web`, the test app
/// serving HTTP on container port 8080; in bridge mode its host port is
/// left to Berth, in task mode it is reached on the task's own address.
pub mod bridge_web {
    use anyhow::Result;
    use berth_client::BerthClient;
    use berth_proto::pb;
    use berth_types::service::{CreateServiceInput, LoadBalancer, UpdateServiceInput};
    use berth_types::{NetworkMode, PortMapping, Protocol};

    use super::{testapp_taskdef, AgentCluster, AgentProc};
    use crate::{from_wire, taskdefs};

    const SERVICE: &str = "web";
    const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(90);

    /// Registers `web` in bridge mode and creates its service of `count` in
    /// `cluster`.
    pub async fn create(
        s: &AgentCluster,
        client: &BerthClient,
        cluster: &str,
        count: u32,
    ) -> Result<()> {
        create_as(s, client, cluster, count, NetworkMode::Bridge, Vec::new()).await
    }

    /// [`create`] with the service declaring `load_balancers` (its
    /// container is `app`, port 8080).
    pub async fn create_with_load_balancers(
        s: &AgentCluster,
        client: &BerthClient,
        cluster: &str,
        count: u32,
        load_balancers: Vec<LoadBalancer>,
    ) -> Result<()> {
        create_as(
            s,
            client,
            cluster,
            count,
            NetworkMode::Bridge,
            load_balancers,
        )
        .await
    }

    /// [`create`] with the network mode given (`Bridge` or `Task`).
    pub async fn create_in_mode(
        s: &AgentCluster,
        client: &BerthClient,
        cluster: &str,
        count: u32,
        mode: NetworkMode,
    ) -> Result<()> {
        create_as(s, client, cluster, count, mode, Vec::new()).await
    }

    async fn create_as(
        s: &AgentCluster,
        client: &BerthClient,
        cluster: &str,
        count: u32,
        mode: NetworkMode,
        load_balancers: Vec<LoadBalancer>,
    ) -> Result<()> {
        let mut spec: berth_types::TaskDefinitionSpec =
            from_wire(testapp_taskdef(SERVICE, &s.image, &["serve", "8080"], 32))?;
        spec.network_mode = mode;
        spec.container_definitions[0].port_mappings = vec![PortMapping {
            container_port: 8080,
            host_port: None,
            protocol: Protocol::Tcp,
        }];
        taskdefs(&s.addr(1))
            .await?
            .register_task_definition(pb::RegisterTaskDefinitionRequest {
                spec: Some(spec.into()),
            })
            .await?;
        client
            .create_service(&CreateServiceInput {
                cluster: cluster.into(),
                name: SERVICE.into(),
                task_definition: SERVICE.into(),
                desired_count: Some(count),
                load_balancers,
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    /// Sets the service's desired count.
    pub async fn scale(client: &BerthClient, cluster: &str, count: u32) -> Result<()> {
        client
            .update_service(&UpdateServiceInput {
                cluster: cluster.into(),
                name: SERVICE.into(),
                task_definition: None,
                desired_count: Some(count),
                deployment_configuration: Default::default(),
                placement_strategies: None,
                placement_constraints: None,
                health_check_grace_period_secs: None,
                force_new_deployment: false,
            })
            .await?;
        Ok(())
    }

    /// Scales the service to zero and waits until the agent has removed
    /// every task network namespace (a killed agent would leave NAT rules
    /// on this host): what a networking test does last, whatever happened.
    pub async fn teardown(client: &BerthClient, cluster: &str, agent: &AgentProc) -> Result<()> {
        scale(client, cluster, 0).await?;
        agent.wait_for_no_task_networks(TIMEOUT).await
    }
}
