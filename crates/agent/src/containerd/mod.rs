//! `Runtime` over containerd's gRPC API, in a namespace of its own so it can
//! share a containerd with Docker or Kubernetes without seeing their
//! containers.

mod content;
mod images;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use berth_types::NetworkMode;
use containerd_client::services::v1::container::Runtime as ContainerRuntime;
use containerd_client::services::v1::snapshots::{
    MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
};
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteProcessRequest, DeleteTaskRequest, ExecProcessRequest, GetContainerRequest, GetRequest,
    KillRequest, ListContainersRequest, MetricsRequest, StartRequest, SubscribeRequest,
    WaitRequest,
};
use containerd_client::types::Mount;
use containerd_client::Client;
use futures::StreamExt;
use prost::Message;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Request};
use tracing::{debug, info, info_span, warn, Instrument};

use crate::error::{Result, RuntimeError};
use crate::hostpath::HostPathPolicy;
use crate::logs;
use crate::metrics;
use crate::registry::{Registries, RegistryConfig};
use crate::rootfs;
use crate::runtime::*;
use crate::spec::{self, BindMount, SpecInput};
use crate::taskcgroup::{self, Cgroups, TaskLimits};
use crate::tasknet::{self, TaskNet, TaskNetConfig, TaskNetwork};

pub use content::sha256_digest;
pub use images::{chain_ids, host_platform, ImportedImage};

const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
const SIGTERM: u32 = 15;
const SIGKILL: u32 = 9;
/// Exec output kept in memory at most (health checks need the exit code;
/// the output is for people).
const EXEC_OUTPUT_CAP: u64 = 64 * 1024;

#[derive(Debug, Clone)]
pub enum LogDriver {
    /// The shim starts this program (`berth-logd`) with the container's
    /// stdout and stderr; it writes, caps and rotates the file and outlives
    /// the agent.
    Binary(PathBuf),
    /// The shim appends to the file itself (`file://`): no cap, no rotation.
    File,
}

#[derive(Debug, Clone)]
pub struct ContainerdConfig {
    pub socket: PathBuf,
    pub namespace: String,
    /// Host directory for log files, hostname files and scratch volumes.
    pub state_dir: PathBuf,
    pub snapshotter: String,
    pub runtime: String,
    pub log_driver: LogDriver,
    pub log_max_bytes: u64,
    pub log_max_files: u32,
    pub registry: RegistryConfig,
    pub connect_timeout: Duration,
    /// Which host paths tasks may bind-mount.
    pub host_paths: HostPathPolicy,
    /// Most processes (threads count) one container may have; 0 for no
    /// limit.
    pub pids_limit: u32,
    /// Bridge network mode: CNI plugins, subnet, bridge.
    pub network: TaskNetConfig,
}

/// Target of the per-step timing events of a container's create and start
/// (`phase`, `us` since the previous step), at debug level: enable it to see
/// where a start spends its time (berth-agent-bench --phases does).
pub const TIMING_TARGET: &str = "berth_agent::timing";

/// Emits one timing event per step, each measured from the previous one.
struct Steps(std::time::Instant);

impl Steps {
    fn new() -> Self {
        Steps(std::time::Instant::now())
    }

    fn mark(&mut self, phase: &'static str) {
        let now = std::time::Instant::now();
        let us = now.duration_since(self.0).as_micros() as u64;
        debug!(target: TIMING_TARGET, phase, us);
        self.0 = now;
    }
}

/// `berth-logd` beside the agent's binary: the two ship together.
pub fn default_log_driver(agent_exe: &Path) -> PathBuf {
    agent_exe.with_file_name(logs::DRIVER_NAME)
}

/// Enough for busy servers (thread pools, worker processes), and a fork
/// bomb stops there instead of at the host's pid_max.
pub const DEFAULT_PIDS_LIMIT: u32 = 4096;

impl ContainerdConfig {
    /// The driver binary must exist before a task is given to the shim,
    /// which would only report that the task's logger failed to start.
    pub fn check_log_driver(&self) -> Result<()> {
        match &self.log_driver {
            LogDriver::Binary(bin) if !bin.is_file() => {
                Err(RuntimeError::LogDriverMissing { path: bin.clone() })
            }
            _ => Ok(()),
        }
    }

    pub fn new(socket: impl Into<PathBuf>, state_dir: impl Into<PathBuf>) -> Self {
        let socket = socket.into();
        let state_dir = state_dir.into();
        let mut host_paths = HostPathPolicy::new(&socket, &state_dir);
        // containerd's shim runs the log driver as root: a task must not be
        // able to replace it, nor the agent.
        let exe = std::env::current_exe().ok();
        let driver = exe.as_deref().map(default_log_driver);
        for path in exe.iter().chain(driver.iter()) {
            host_paths.protect(path);
        }
        ContainerdConfig {
            host_paths,
            pids_limit: DEFAULT_PIDS_LIMIT,
            socket,
            namespace: "berth".into(),
            state_dir,
            snapshotter: "overlayfs".into(),
            runtime: "io.containerd.runc.v2".into(),
            log_driver: driver.map(LogDriver::Binary).unwrap_or(LogDriver::File),
            log_max_bytes: 10 << 20,
            log_max_files: 3,
            registry: RegistryConfig::default(),
            connect_timeout: Duration::from_secs(5),
            network: TaskNetConfig::default(),
        }
    }
}

struct Inner {
    cfg: ContainerdConfig,
    client: Client,
    ns: AsciiMetadataValue,
    registries: Registries,
    images: Mutex<HashMap<String, Arc<images::ResolvedImage>>>,
    pull_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    transfer_unsupported: std::sync::atomic::AtomicBool,
    oom: Mutex<HashSet<String>>,
    /// How this host mounts cgroups, or why it could not be told.
    cgroups: std::result::Result<Cgroups, String>,
    /// What containerd said it is at connect time.
    version: String,
    /// Bridge-mode tasks' network namespaces.
    tasknet: TaskNet,
}

/// Cheap to clone; all clones share one gRPC channel.
#[derive(Clone)]
pub struct ContainerdRuntime {
    inner: Arc<Inner>,
    _oom_watch: Arc<AbortOnDrop>,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn connect_channel(socket: &Path, timeout: Duration) -> Result<Channel> {
    let unreachable = |reason: String| RuntimeError::ContainerdUnreachable {
        socket: socket.to_path_buf(),
        reason,
    };
    if !socket.exists() {
        return Err(unreachable("the socket does not exist".into()));
    }
    let path = socket.to_path_buf();
    // The URI is a placeholder: the connector below always dials the socket.
    let endpoint = Endpoint::from_static("http://containerd.sock").connect_timeout(timeout);
    let connect = endpoint.connect_with_connector(tower::service_fn(move |_: Uri| {
        let path = path.clone();
        async move {
            let stream = tokio::net::UnixStream::connect(path).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    }));
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(ch)) => Ok(ch),
        Ok(Err(e)) => Err(unreachable(berth_types::error_chain(&e))),
        Err(_) => Err(unreachable(format!("no answer within {timeout:?}"))),
    }
}

impl ContainerdRuntime {
    /// Connect and check that containerd answers.
    pub async fn connect(cfg: ContainerdConfig) -> Result<Self> {
        let ns: AsciiMetadataValue =
            cfg.namespace
                .parse()
                .map_err(|_| RuntimeError::InvalidConfig {
                    container: String::new(),
                    reason: format!("namespace {:?} is not a valid header value", cfg.namespace),
                })?;
        let channel = connect_channel(&cfg.socket, cfg.connect_timeout).await?;
        let client = Client::from(channel);
        let version = tokio::time::timeout(cfg.connect_timeout, client.version().version(()))
            .await
            .map_err(|_| RuntimeError::ContainerdUnreachable {
                socket: cfg.socket.clone(),
                reason: "the version call got no answer".into(),
            })?
            .map_err(|s| RuntimeError::ContainerdUnreachable {
                socket: cfg.socket.clone(),
                reason: s.message().to_string(),
            })?
            .into_inner();
        info!(socket = %cfg.socket.display(), namespace = %cfg.namespace, version = %version.version, "connected to containerd");
        for dir in ["containers", "tasks", "tmp"] {
            let d = cfg.state_dir.join(dir);
            std::fs::create_dir_all(&d)
                .map_err(|e| RuntimeError::io(format!("create {}", d.display()), e))?;
        }
        let tasknet = TaskNet::new(cfg.network.clone(), &cfg.state_dir);
        let missing = tasknet.missing_plugins();
        if !missing.is_empty() {
            warn!(
                cni_bin_dir = %cfg.network.cni_bin_dir.display(),
                missing = %missing.join(", "),
                "CNI plugins missing: bridge-mode tasks cannot run (install containernetworking-plugins or set --cni-bin-dir)"
            );
        }
        let inner = Arc::new(Inner {
            tasknet,
            registries: Registries::new(cfg.registry.clone()),
            cfg,
            client,
            ns,
            images: Mutex::new(HashMap::new()),
            pull_locks: Mutex::new(HashMap::new()),
            transfer_unsupported: std::sync::atomic::AtomicBool::new(false),
            oom: Mutex::new(HashSet::new()),
            cgroups: Cgroups::detect(),
            version: version.version,
        });
        if let Err(e) = &inner.cgroups {
            warn!(error = %e, "no cgroups found: tasks with a task-level cpu or memory cannot run");
        }
        let watch = tokio::spawn(watch_oom(Arc::downgrade(&inner)));
        let runtime = ContainerdRuntime {
            inner,
            _oom_watch: Arc::new(AbortOnDrop(watch)),
        };
        runtime.sweep_task_cgroups().await;
        runtime.sweep_task_networks().await;
        Ok(runtime)
    }

    /// True once a pull found that this containerd has no Transfer service
    /// (containerd 1.6) and fell back to pulling client-side.
    pub fn transfer_unsupported(&self) -> bool {
        self.inner
            .transfer_unsupported
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// containerd's version (e.g. `1.6.20`), as it answered at connect.
    pub fn version(&self) -> &str {
        &self.inner.version
    }

    pub fn config(&self) -> &ContainerdConfig {
        &self.inner.cfg
    }

    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// A request in our namespace.
    pub fn request<T>(&self, msg: T) -> Request<T> {
        self.inner.request(msg)
    }

    /// Import an OCI-layout or docker-archive tarball; returns the images it
    /// named.
    pub async fn import(&self, path: &Path) -> Result<Vec<ImportedImage>> {
        images::import(&self.inner, path).await
    }

    fn container_dir(&self, id: &str) -> PathBuf {
        self.inner.cfg.state_dir.join("containers").join(id)
    }

    fn log_path(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("container.log")
    }

    async fn task_status(&self, id: &str) -> Result<Option<containerd_client::types::v1::Process>> {
        match self
            .inner
            .client
            .tasks()
            .get(self.request(GetRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }))
            .await
        {
            Ok(r) => Ok(r.into_inner().process),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(RuntimeError::containerd("get task", s)),
        }
    }

    async fn oom_killed(&self, id: &str, code: u32) -> bool {
        // An OOM in a task's cgroup is announced to every container in it;
        // the one killed is the one that died of SIGKILL.
        if code == 137
            && self
                .inner
                .oom
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(id)
        {
            return true;
        }
        // The OOM event may have come while no agent was listening; the
        // cgroup's own counter survives until the task is deleted.
        code == 137
            && self
                .stats(id)
                .await
                .map(|s| s.oom_kills > 0)
                .unwrap_or(false)
    }

    async fn exit_status(
        &self,
        id: &str,
        code: u32,
        at: Option<prost_types::Timestamp>,
    ) -> ExitStatus {
        ExitStatus {
            code,
            oom_killed: self.oom_killed(id, code).await,
            exited_at: at.and_then(|t| {
                let d = Duration::new(u64::try_from(t.seconds).ok()?, u32::try_from(t.nanos).ok()?);
                SystemTime::UNIX_EPOCH.checked_add(d)
            }),
        }
    }

    async fn kill(&self, id: &str, signal: u32, all: bool) -> Result<()> {
        match self
            .inner
            .client
            .tasks()
            .kill(self.request(KillRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
                signal,
                all,
            }))
            .await
        {
            Ok(_) => Ok(()),
            // Already gone: the caller's wait reports how it ended.
            Err(s) if matches!(s.code(), Code::NotFound | Code::FailedPrecondition) => Ok(()),
            Err(s) => Err(RuntimeError::containerd("kill task", s)),
        }
    }

    fn stdio_uri(&self, id: &str) -> Result<String> {
        let log = self.log_path(id);
        let log_str = log.to_str().ok_or_else(|| RuntimeError::InvalidConfig {
            container: id.to_string(),
            reason: format!("log path {} is not UTF-8", log.display()),
        })?;
        self.inner.cfg.check_log_driver()?;
        Ok(match &self.inner.cfg.log_driver {
            LogDriver::File => format!("file://{log_str}"),
            LogDriver::Binary(bin) => logs::binary_uri(
                bin,
                &log,
                self.inner.cfg.log_max_bytes,
                self.inner.cfg.log_max_files,
            ),
        })
    }

    async fn create_inner(&self, config: &ContainerConfig, id: &str) -> Result<()> {
        let def = &config.definition;
        // Refused before anything is pulled or written.
        let mut host_sources: HashMap<&str, PathBuf> = HashMap::new();
        for v in &config.volumes {
            if let Some(p) = &v.host_source_path {
                if def.mount_points.iter().any(|m| m.source_volume == v.name) {
                    host_sources.insert(&v.name, self.inner.cfg.host_paths.check(&v.name, p)?);
                }
            }
        }
        let mut steps = Steps::new();
        let image = self
            .ensure_image_resolved(&def.image, config.pull_policy)
            .await?;
        steps.mark("image");
        let dir = self.container_dir(id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| RuntimeError::io(format!("create {}", dir.display()), e))?;

        let hostname = match config.network_mode {
            NetworkMode::Host => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "localhost".into()),
            NetworkMode::None | NetworkMode::Bridge | NetworkMode::Task => {
                id.chars().take(12).collect()
            }
        };
        let hostname_file = dir.join("hostname");
        std::fs::write(&hostname_file, format!("{hostname}\n"))
            .map_err(|e| RuntimeError::io("write hostname file", e))?;
        let mut binds = vec![BindMount {
            source: hostname_file.display().to_string(),
            destination: "/etc/hostname".into(),
            read_only: true,
        }];
        if config.network_mode == NetworkMode::Host {
            for f in ["/etc/resolv.conf", "/etc/hosts"] {
                if Path::new(f).exists() {
                    binds.push(BindMount {
                        source: f.into(),
                        destination: f.into(),
                        read_only: true,
                    });
                }
            }
        }
        // Made before the container record: the spec names the netns.
        let network = if config.network_mode.uses_bridge() {
            let net = self
                .inner
                .tasknet
                .ensure(&config.task_id, Some(&config.network_bindings))
                .await?;
            let cluster = Some(config.cluster.as_str()).filter(|c| !c.is_empty());
            binds.extend(write_network_files(
                &dir,
                &hostname,
                &net,
                &self.inner.cfg.network.dns,
                cluster,
            )?);
            Some(net)
        } else {
            None
        };
        for mp in &def.mount_points {
            let vol = config
                .volumes
                .iter()
                .find(|v| v.name == mp.source_volume)
                .ok_or_else(|| RuntimeError::InvalidConfig {
                    container: def.name.clone(),
                    reason: format!("mountPoint uses unknown volume {:?}", mp.source_volume),
                })?;
            let source = match host_sources.get(vol.name.as_str()) {
                Some(p) => p.clone(),
                None => {
                    let p = self
                        .inner
                        .cfg
                        .state_dir
                        .join("tasks")
                        .join(&config.task_id)
                        .join("volumes")
                        .join(&vol.name);
                    std::fs::create_dir_all(&p)
                        .map_err(|e| RuntimeError::io(format!("create {}", p.display()), e))?;
                    p
                }
            };
            binds.push(BindMount {
                source: source.display().to_string(),
                destination: mp.container_path.clone(),
                read_only: mp.read_only,
            });
        }

        let labels: HashMap<String, String> = [
            (LABEL_MANAGED, "true".to_string()),
            (LABEL_TASK_ID, config.task_id.clone()),
            (LABEL_TASK_FAMILY, config.task_family.clone()),
            (LABEL_CONTAINER_NAME, def.name.clone()),
        ]
        .into_iter()
        .chain(config.task_cpu.map(|c| (LABEL_TASK_CPU, c.to_string())))
        .chain(
            config
                .task_memory
                .map(|m| (LABEL_TASK_MEMORY, m.to_string())),
        )
        .chain(
            (config.network_mode.uses_bridge())
                .then(|| (LABEL_NETWORK_MODE, config.network_mode.as_str().to_string())),
        )
        .chain((!config.cluster.is_empty()).then(|| (LABEL_CLUSTER, config.cluster.clone())))
        .map(|(k, v)| (k.to_string(), v))
        .collect();

        // The snapshot is prepared under a short lease: until the container
        // record names it, nothing else keeps containerd's GC off it.
        let snapshotter = self.inner.cfg.snapshotter.clone();
        let mut container = Container {
            id: id.to_string(),
            labels,
            image: image.info.name.clone(),
            runtime: Some(ContainerRuntime {
                name: self.inner.cfg.runtime.clone(),
                options: None,
            }),
            spec: None,
            snapshotter: snapshotter.clone(),
            snapshot_key: id.to_string(),
            ..Default::default()
        };
        steps.mark("files and labels");
        let lease = self.inner.create_lease("create").await?;
        steps.mark("create lease");
        let registered: Result<Vec<Mount>> = async {
            let snapshots = self.inner.client.snapshots();
            let mounts = match snapshots
                .clone()
                .prepare(self.inner.leased(
                    Some(&lease),
                    PrepareSnapshotRequest {
                        snapshotter: snapshotter.clone(),
                        key: id.to_string(),
                        parent: image.info.chain_id.clone(),
                        labels: HashMap::new(),
                    },
                ))
                .await
            {
                Ok(r) => r.into_inner().mounts,
                Err(s) => return Err(RuntimeError::containerd("prepare snapshot", s)),
            };
            steps.mark("prepare snapshot");

            let user = def
                .user
                .clone()
                .filter(|u| !u.is_empty())
                .or_else(|| image.run.user.clone())
                .unwrap_or_default();
            let ids = if user.is_empty() || user.split(':').all(|p| p.parse::<u32>().is_ok()) {
                spec::resolve_user(&user, None, None)
            } else {
                let group_name = user
                    .split_once(':')
                    .is_some_and(|(_, g)| g.parse::<u32>().is_err());
                read_user_files(&mounts, group_name)
                    .await
                    .and_then(|(passwd, group)| {
                        spec::resolve_user(&user, passwd.as_deref(), group.as_deref())
                    })
            }
            .map_err(|e| match e {
                RuntimeError::InvalidConfig { reason, .. } => RuntimeError::InvalidConfig {
                    container: def.name.clone(),
                    reason,
                },
                other => other,
            });
            let spec = (|| -> Result<Vec<u8>> {
                let (uid, gid) = ids?;
                let spec = spec::build_spec(&SpecInput {
                    definition: def,
                    image: &image.run,
                    network_mode: config.network_mode,
                    netns: network.as_ref().map(|n| n.netns.display().to_string()),
                    hostname,
                    binds,
                    cgroups_path: taskcgroup::container_path(
                        &self.inner.cfg.namespace,
                        &config.task_id,
                        id,
                    ),
                    pids_limit: Some(self.inner.cfg.pids_limit).filter(|n| *n > 0),
                    uid,
                    gid,
                })?;
                serde_json::to_vec(&spec).map_err(|e| RuntimeError::InvalidConfig {
                    container: def.name.clone(),
                    reason: e.to_string(),
                })
            })();
            let spec = match spec {
                Ok(s) => s,
                Err(e) => {
                    self.remove_snapshot(id).await;
                    return Err(e);
                }
            };
            container.spec = Some(prost_types::Any {
                type_url: SPEC_TYPE_URL.into(),
                value: spec,
            });
            steps.mark("spec");
            if let Err(s) = self
                .inner
                .client
                .containers()
                .create(self.request(CreateContainerRequest {
                    container: Some(container),
                }))
                .await
            {
                self.remove_snapshot(id).await;
                return Err(RuntimeError::containerd("create container", s));
            }
            steps.mark("create container");
            Ok(mounts)
        }
        .await;
        self.inner.release_lease(lease).await;
        steps.mark("delete lease");
        let mounts = registered?;
        // Only now that the container record exists (see `sweep_task_cgroups`).
        let limits = TaskLimits {
            cpu_units: config.task_cpu,
            memory_mib: config.task_memory,
        };
        if let Err(e) = self.ensure_task_cgroup(&def.name, &config.task_id, limits) {
            let _ = self.remove(id).await;
            return Err(e);
        }
        steps.mark("task cgroup");

        let uri = self.stdio_uri(id)?;
        if let Err(s) = self
            .inner
            .client
            .tasks()
            .create(self.request(CreateTaskRequest {
                container_id: id.to_string(),
                rootfs: mounts,
                stdout: uri.clone(),
                stderr: uri,
                ..Default::default()
            }))
            .await
        {
            let _ = self.remove(id).await;
            return Err(RuntimeError::containerd("create task", s));
        }
        // The shim has started the log driver and waited for it by now.
        steps.mark("create task");
        Ok(())
    }

    /// The task's cgroup with its limits, made before its container's
    /// process is (idempotent).
    fn ensure_task_cgroup(&self, container: &str, task_id: &str, limits: TaskLimits) -> Result<()> {
        let refuse = |reason: String| RuntimeError::InvalidConfig {
            container: container.to_string(),
            reason: format!("cannot enforce the task's cpu/memory limits: {reason}"),
        };
        match &self.inner.cgroups {
            Ok(cg) => cg
                .ensure(&self.inner.cfg.namespace, task_id, limits)
                .map_err(refuse),
            // Without limits runc makes the directories it needs itself.
            Err(_) if limits == TaskLimits::default() => Ok(()),
            Err(e) => Err(refuse(e.clone())),
        }
    }

    /// Removes the task cgroups left behind by an agent that stopped between
    /// removing a task's last container and its cgroup. The directories are
    /// listed before the containers: a task cgroup is made only after its
    /// container's record, so one being made now has a container listed.
    async fn sweep_task_cgroups(&self) {
        let Ok(cg) = &self.inner.cgroups else { return };
        let ns = &self.inner.cfg.namespace;
        let dirs = cg.task_dirs(ns);
        if dirs.is_empty() {
            return;
        }
        match self.list().await {
            Ok(live) => {
                let tasks: Vec<String> = live.into_iter().map(|c| c.task_id).collect();
                cg.sweep(ns, dirs, &tasks);
            }
            Err(e) => warn!(error = %e, "cannot list containers; task cgroups left behind stay"),
        }
    }

    /// Removes the networks (netns, IP reservation, port forwards) of tasks
    /// that have no container left: an agent stopped (or killed) between
    /// removing a task's last container and its network, or while setting
    /// one up.
    async fn sweep_task_networks(&self) {
        match self.list().await {
            Ok(live) => {
                let tasks: HashSet<String> = live.into_iter().map(|c| c.task_id).collect();
                self.inner.tasknet.sweep(&tasks).await;
            }
            Err(e) => warn!(error = %e, "cannot list containers; task networks left behind stay"),
        }
    }

    /// A bridge-mode task's network as set up on this host: its address,
    /// netns and veth.
    pub fn task_network(&self, task_id: &str) -> Option<TaskNetwork> {
        self.inner.tasknet.get(task_id)
    }

    /// The per-task network namespace file of a bridge-mode task.
    pub fn task_netns_path(&self, task_id: &str) -> PathBuf {
        self.inner.tasknet.netns_path(task_id)
    }

    /// Tears a task's network down unless the task still has containers.
    async fn release_task_network(&self, task_id: &str) {
        match self.list().await {
            Ok(live) if live.iter().any(|c| c.task_id == task_id) => {}
            Ok(_) => {
                if let Err(e) = self.inner.tasknet.teardown(task_id).await {
                    warn!(task_id, error = %e, "cannot remove the task's network; the next agent start tries again");
                }
            }
            Err(e) => {
                warn!(task_id, error = %e, "cannot list containers; the task's network stays until the next agent start")
            }
        }
    }

    /// How this host mounts cgroups (for tests and tools).
    pub fn cgroups(&self) -> Option<&Cgroups> {
        self.inner.cgroups.as_ref().ok()
    }

    async fn remove_snapshot(&self, key: &str) {
        if let Err(s) = self
            .inner
            .client
            .snapshots()
            .remove(self.request(RemoveSnapshotRequest {
                snapshotter: self.inner.cfg.snapshotter.clone(),
                key: key.to_string(),
            }))
            .await
        {
            if s.code() != Code::NotFound {
                warn!(key, error = %s.message(), "remove snapshot");
            }
        }
    }

    async fn ensure_image_resolved(
        &self,
        reference: &str,
        policy: PullPolicy,
    ) -> Result<Arc<images::ResolvedImage>> {
        images::ensure(&self.inner, reference, policy).await
    }

    async fn get_container(&self, id: &str) -> Result<Container> {
        self.inner
            .client
            .containers()
            .get(self.request(GetContainerRequest { id: id.to_string() }))
            .await
            .map_err(|s| match s.code() {
                Code::NotFound => RuntimeError::ContainerNotFound { id: id.to_string() },
                _ => RuntimeError::containerd("get container", s),
            })?
            .into_inner()
            .container
            .ok_or_else(|| RuntimeError::ContainerNotFound { id: id.to_string() })
    }
}

impl Inner {
    fn request<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        req.metadata_mut()
            .insert("containerd-namespace", self.ns.clone());
        req
    }
}

/// `/etc/hosts` and `/etc/resolv.conf` for a bridge- or task-mode
/// container, written into its directory (rewritten on a restart) and bound
/// read-only. With `dns` (`--task-dns`) the resolvers are Berth's, searching
/// `CLUSTER.berth`; without, the host's.
fn write_network_files(
    dir: &Path,
    hostname: &str,
    net: &TaskNetwork,
    dns: &[std::net::IpAddr],
    cluster: Option<&str>,
) -> Result<Vec<BindMount>> {
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    // systemd-resolved's stub (127.0.0.53) is unreachable from the netns;
    // this file lists the servers it forwards to.
    let upstream = std::fs::read_to_string("/run/systemd/resolve/resolv.conf").ok();
    let (resolv, fallback) = if dns.is_empty() {
        tasknet::cni::resolv_conf(&host_resolv, upstream.as_deref())
    } else {
        debug!(task_id = %net.task_id, servers = ?dns, cluster = cluster.unwrap_or(""), "the task resolves through Berth's DNS");
        (
            tasknet::cni::berth_resolv_conf(&host_resolv, dns, cluster),
            false,
        )
    };
    if fallback {
        warn!(
            task_id = %net.task_id,
            nameservers = %tasknet::cni::FALLBACK_NAMESERVERS.join(", "),
            "the host's resolv.conf names no nameserver a task can reach (only loopback ones); the task uses public resolvers"
        );
    }
    let mut binds = Vec::new();
    for (name, text) in [
        ("hosts", tasknet::cni::hosts_file(hostname, net.ip)),
        ("resolv.conf", resolv),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text)
            .map_err(|e| RuntimeError::io(format!("write {}", path.display()), e))?;
        binds.push(BindMount {
            source: path.display().to_string(),
            destination: format!("/etc/{name}"),
            read_only: true,
        });
    }
    Ok(binds)
}

/// The image's /etc/passwd, and its /etc/group when a group name is to be
/// resolved, read from the snapshot's layers on a blocking thread (see
/// `rootfs`).
async fn read_user_files(
    mounts: &[Mount],
    group: bool,
) -> Result<(Option<String>, Option<String>)> {
    let layers = rootfs::layer_dirs(mounts);
    let read = tokio::task::spawn_blocking(move || {
        let passwd = rootfs::read_file(&layers, "/etc/passwd")?;
        let group = if group {
            rootfs::read_file(&layers, "/etc/group")?
        } else {
            None
        };
        Ok::<_, rootfs::RootfsError>((passwd, group))
    })
    .await
    .map_err(|e| RuntimeError::io("read the image's user files", std::io::Error::other(e)))?;
    read.map_err(|e| RuntimeError::InvalidConfig {
        container: String::new(),
        reason: format!("cannot resolve USER from the image: {e}"),
    })
}

/// Record OOM kills as containerd reports them; `wait` consults the set.
async fn watch_oom(inner: std::sync::Weak<Inner>) {
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let ns = strong.cfg.namespace.clone();
        let mut events = strong.client.events();
        let filter = format!("topic==\"/tasks/oom\",namespace==\"{ns}\"");
        drop(strong);
        match events
            .subscribe(SubscribeRequest {
                filters: vec![filter],
            })
            .await
        {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                while let Some(Ok(env)) = stream.next().await {
                    let Some(any) = env.event else { continue };
                    if let Ok(ev) = containerd_client::events::TaskOom::decode(any.value.as_slice())
                    {
                        if let Some(strong) = inner.upgrade() {
                            warn!(container = %ev.container_id, "container hit its memory limit: OOM kill");
                            strong
                                .oom
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .insert(ev.container_id);
                        }
                    }
                }
            }
            Err(s) => debug!(error = %s.message(), "event subscription failed; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// containerd IDs allow `[A-Za-z0-9._-]`, up to 76 characters.
pub fn container_id(task_id: &str, name: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    };
    let mut id = format!("{}-{}", clean(task_id), clean(name));
    id.truncate(76);
    id.trim_end_matches(['-', '_']).to_string()
}

impl Runtime for ContainerdRuntime {
    async fn task_stopped(&self, task_id: &str) {
        // No container of the task runs, so nothing is in the namespace;
        // `remove` after the cleanup wait finds it gone.
        if let Err(e) = self.inner.tasknet.teardown(task_id).await {
            warn!(task_id, error = %e, "cannot remove the stopped task's network; the next agent start tries again");
        }
    }

    fn task_address(&self, task_id: &str) -> Option<std::net::IpAddr> {
        self.inner.tasknet.get(task_id).map(|n| n.ip.into())
    }

    fn task_network_stats(&self, task_id: &str) -> Result<Option<crate::runtime::NetworkStats>> {
        self.inner.tasknet.stats(task_id)
    }

    async fn ensure_image(&self, reference: &str, policy: PullPolicy) -> Result<ImageInfo> {
        Ok(self
            .ensure_image_resolved(reference, policy)
            .await?
            .info
            .clone())
    }

    async fn create(&self, config: &ContainerConfig) -> Result<String> {
        let id = container_id(&config.task_id, &config.definition.name);
        let span = info_span!("create", task_id = %config.task_id, container = %config.definition.name, container_id = %id);
        async {
            let mut result = self.create_inner(config, &id).await;
            // The image may have been deleted behind our cache's back (e.g.
            // `ctr images rm`): forget it and resolve it again, once.
            if let Err(RuntimeError::Containerd {
                op: "prepare snapshot",
                status,
            }) = &result
            {
                if status.code() == Code::NotFound {
                    if let Ok(r) = crate::registry::parse_reference(&config.definition.image) {
                        self.inner
                            .images
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&r.whole());
                    }
                    result = self.create_inner(config, &id).await;
                }
            }
            if let Err(e) = result {
                // Leave nothing behind unless the ID belongs to a live
                // container (a duplicate create).
                if self.get_container(&id).await.is_err() {
                    let _ = std::fs::remove_dir_all(self.container_dir(&id));
                    if config.network_mode.uses_bridge() {
                        self.release_task_network(&config.task_id).await;
                    }
                }
                warn!(error = %e, "create failed");
                return Err(e);
            }
            info!(image = %config.definition.image, "container created");
            Ok(id.clone())
        }
        .instrument(span)
        .await
    }

    async fn start(&self, id: &str) -> Result<u32> {
        let mut steps = Steps::new();
        let pid = self
            .inner
            .client
            .tasks()
            .start(self.request(StartRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }))
            .await
            .map_err(|s| match s.code() {
                Code::NotFound => RuntimeError::ContainerNotFound { id: id.to_string() },
                _ => RuntimeError::containerd("start task", s),
            })?
            .into_inner()
            .pid;
        steps.mark("start task");
        info!(container_id = id, pid, "container started");
        Ok(pid)
    }

    async fn restart(&self, id: &str) -> Result<u32> {
        use containerd_client::types::v1::Status;
        let span = info_span!("restart", container_id = id);
        async {
            let container = self.get_container(id).await?;
            let status = self
                .task_status(id)
                .await?
                .map(|p| Status::try_from(p.status).unwrap_or(Status::Unknown));
            match status {
                Some(Status::Running | Status::Pausing | Status::Paused) => {
                    return Err(RuntimeError::StillRunning { id: id.to_string() });
                }
                // A restart cut short after the new process was created.
                Some(Status::Created) => {}
                Some(Status::Stopped | Status::Unknown) | None => {
                    if status.is_some() {
                        // The exited process holds the container's one task
                        // slot; its exit has been collected already.
                        match self
                            .inner
                            .client
                            .tasks()
                            .delete(self.request(DeleteTaskRequest {
                                container_id: id.to_string(),
                            }))
                            .await
                        {
                            Ok(_) => {}
                            Err(s) if s.code() == Code::NotFound => {}
                            Err(s) => return Err(RuntimeError::containerd("delete task", s)),
                        }
                    }
                    // An OOM kill of the previous process says nothing about
                    // the next one.
                    self.inner
                        .oom
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(id);
                    // The task service takes the root filesystem from the
                    // caller, as `create` does: the container's own snapshot,
                    // so files the last process wrote are still there.
                    let mounts = self
                        .inner
                        .client
                        .snapshots()
                        .mounts(self.request(MountsRequest {
                            snapshotter: container.snapshotter.clone(),
                            key: container.snapshot_key.clone(),
                        }))
                        .await
                        .map_err(|s| RuntimeError::containerd("snapshot mounts", s))?
                        .into_inner()
                        .mounts;
                    // A host reboot empties the cgroups; the task's limits
                    // come back from the container's labels.
                    if let Some(task_id) = container.labels.get(LABEL_TASK_ID) {
                        let label = |k: &str| container.labels.get(k).and_then(|v| v.parse().ok());
                        let limits = TaskLimits {
                            cpu_units: label(LABEL_TASK_CPU),
                            memory_mib: label(LABEL_TASK_MEMORY),
                        };
                        let name = container
                            .labels
                            .get(LABEL_CONTAINER_NAME)
                            .cloned()
                            .unwrap_or_default();
                        self.ensure_task_cgroup(&name, task_id, limits)?;
                        // A reboot took the task's netns along: the same
                        // configuration sets it up again (maybe with another
                        // address, which the hosts file then says).
                        let mode = container
                            .labels
                            .get(LABEL_NETWORK_MODE)
                            .and_then(|m| NetworkMode::parse(m));
                        if mode.is_some_and(NetworkMode::uses_bridge) {
                            let net = self.inner.tasknet.ensure(task_id, None).await?;
                            let hostname =
                                std::fs::read_to_string(self.container_dir(id).join("hostname"))
                                    .map(|h| h.trim().to_string())
                                    .unwrap_or_default();
                            // Containers made before the label existed get
                            // no cluster search domain; full names resolve.
                            let cluster = container.labels.get(LABEL_CLUSTER).map(String::as_str);
                            write_network_files(
                                &self.container_dir(id),
                                &hostname,
                                &net,
                                &self.inner.cfg.network.dns,
                                cluster,
                            )?;
                        }
                    }
                    // Same URI, same file: the log driver appends.
                    let uri = self.stdio_uri(id)?;
                    self.inner
                        .client
                        .tasks()
                        .create(self.request(CreateTaskRequest {
                            container_id: id.to_string(),
                            rootfs: mounts,
                            stdout: uri.clone(),
                            stderr: uri,
                            ..Default::default()
                        }))
                        .await
                        .map_err(|s| RuntimeError::containerd("create task", s))?;
                }
            }
            self.start(id).await
        }
        .instrument(span)
        .await
    }

    async fn wait(&self, id: &str) -> Result<ExitStatus> {
        let resp = self
            .inner
            .client
            .tasks()
            .wait(self.request(WaitRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }))
            .await
            .map_err(|s| match s.code() {
                Code::NotFound => RuntimeError::ContainerNotFound { id: id.to_string() },
                _ => RuntimeError::containerd("wait task", s),
            })?
            .into_inner();
        let status = self.exit_status(id, resp.exit_status, resp.exited_at).await;
        info!(
            container_id = id,
            exit_code = status.code,
            oom_killed = status.oom_killed,
            "container exited"
        );
        Ok(status)
    }

    async fn stop(&self, id: &str, timeout: Duration) -> Result<ExitStatus> {
        let span = info_span!("stop", container_id = id, timeout_s = timeout.as_secs_f64());
        async {
            match self.task_status(id).await? {
                None => return Err(RuntimeError::ContainerNotFound { id: id.to_string() }),
                Some(p) if p.status == containerd_client::types::v1::Status::Stopped as i32 => {
                    return Ok(self.exit_status(id, p.exit_status, p.exited_at).await);
                }
                Some(_) => {}
            }
            self.kill(id, SIGTERM, false).await?;
            match tokio::time::timeout(timeout, self.wait(id)).await {
                Ok(r) => r,
                Err(_) => {
                    info!("still running after the stop timeout: SIGKILL");
                    self.kill(id, SIGKILL, true).await?;
                    self.wait(id).await
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn remove(&self, id: &str) -> Result<()> {
        let span = info_span!("remove", container_id = id);
        async {
            let container = self.get_container(id).await.ok();
            if let Some(p) = self.task_status(id).await? {
                if p.status != containerd_client::types::v1::Status::Stopped as i32
                    && p.status != containerd_client::types::v1::Status::Created as i32
                {
                    self.kill(id, SIGKILL, true).await?;
                    let _ = tokio::time::timeout(Duration::from_secs(10), self.wait(id)).await;
                }
                match self
                    .inner
                    .client
                    .tasks()
                    .delete(self.request(DeleteTaskRequest {
                        container_id: id.to_string(),
                    }))
                    .await
                {
                    Ok(_) => {}
                    Err(s) if s.code() == Code::NotFound => {}
                    Err(s) => return Err(RuntimeError::containerd("delete task", s)),
                }
            }
            match self
                .inner
                .client
                .containers()
                .delete(self.request(DeleteContainerRequest { id: id.to_string() }))
                .await
            {
                Ok(_) => {}
                Err(s) if s.code() == Code::NotFound => {}
                Err(s) => return Err(RuntimeError::containerd("delete container", s)),
            }
            self.remove_snapshot(id).await;
            self.inner
                .oom
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(id);
            let dir = self.container_dir(id);
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    warn!(dir = %dir.display(), error = %e, "remove container dir");
                }
            }
            // Scratch volumes live as long as the task has containers.
            if let Some(task_id) = container.as_ref().and_then(|c| c.labels.get(LABEL_TASK_ID)) {
                let others = self
                    .list()
                    .await?
                    .iter()
                    .any(|c| &c.task_id == task_id && c.id != id);
                if !others {
                    let tdir = self.inner.cfg.state_dir.join("tasks").join(task_id);
                    let _ = std::fs::remove_dir_all(tdir);
                    // After the last container: nothing is in the netns.
                    if let Err(e) = self.inner.tasknet.teardown(task_id).await {
                        warn!(task_id = %task_id, error = %e, "cannot remove the task's network; the next agent start tries again");
                    }
                    if let Ok(cg) = &self.inner.cgroups {
                        if let Err(e) = cg.remove(&self.inner.cfg.namespace, task_id) {
                            warn!(task_id = %task_id, error = %e, "cannot remove the task's cgroup; the next agent start tries again");
                        }
                    }
                }
            }
            info!("container removed");
            Ok(())
        }
        .instrument(span)
        .await
    }

    async fn stats(&self, id: &str) -> Result<ContainerStats> {
        let resp = self
            .inner
            .client
            .tasks()
            .metrics(self.request(MetricsRequest {
                filters: vec![format!("id=={id}")],
            }))
            .await
            .map_err(|s| RuntimeError::containerd("task metrics", s))?
            .into_inner();
        let metric = resp
            .metrics
            .into_iter()
            .find(|m| m.id == id)
            .and_then(|m| m.data)
            .ok_or_else(|| RuntimeError::ContainerNotFound { id: id.to_string() })?;
        metrics::decode(&metric)
    }

    async fn logs(&self, id: &str, follow: bool) -> Result<LogLines> {
        let path = self.log_path(id);
        if !path.exists() && self.get_container(id).await.is_err() {
            return Err(RuntimeError::ContainerNotFound { id: id.to_string() });
        }
        let rt = self.clone();
        let id2 = id.to_string();
        let running = move || {
            let rt = rt.clone();
            let id = id2.clone();
            async move {
                matches!(rt.task_status(&id).await, Ok(Some(p)) if p.status != containerd_client::types::v1::Status::Stopped as i32)
            }
        };
        Ok(logs::read(path, follow, running))
    }

    async fn exec(&self, id: &str, command: &[String], timeout: Duration) -> Result<ExecOutput> {
        let container = self.get_container(id).await?;
        let mut spec: serde_json::Value = container
            .spec
            .as_ref()
            .and_then(|s| serde_json::from_slice(&s.value).ok())
            .ok_or_else(|| RuntimeError::InvalidConfig {
                container: id.to_string(),
                reason: "container has no readable OCI spec".into(),
            })?;
        let mut process = spec["process"].take();
        process["args"] = serde_json::json!(command);
        process["terminal"] = serde_json::json!(false);
        let exec_id = format!("exec-{:016x}", rand::random::<u64>());
        let out_dir = self.inner.cfg.state_dir.join("tmp");
        let out_path = out_dir.join(format!("{id}-{exec_id}.out"));
        let uri = format!("file://{}", out_path.display());
        let tasks = self.inner.client.tasks();
        tasks
            .clone()
            .exec(self.request(ExecProcessRequest {
                container_id: id.to_string(),
                stdin: String::new(),
                stdout: uri.clone(),
                stderr: uri,
                terminal: false,
                spec: Some(prost_types::Any {
                    type_url: PROCESS_TYPE_URL.into(),
                    value: serde_json::to_vec(&process).unwrap_or_default(),
                }),
                exec_id: exec_id.clone(),
            }))
            .await
            .map_err(|s| RuntimeError::containerd("exec", s))?;
        // Subscribe to the exit before starting so a fast process cannot exit
        // unseen.
        let waiter = {
            let mut t = tasks.clone();
            let req = self.request(WaitRequest {
                container_id: id.to_string(),
                exec_id: exec_id.clone(),
            });
            tokio::spawn(async move { t.wait(req).await })
        };
        let result = async {
            tasks
                .clone()
                .start(self.request(StartRequest {
                    container_id: id.to_string(),
                    exec_id: exec_id.clone(),
                }))
                .await
                .map_err(|s| RuntimeError::containerd("start exec", s))?;
            match tokio::time::timeout(timeout, waiter).await {
                Ok(Ok(Ok(r))) => Ok(r.into_inner().exit_status),
                Ok(Ok(Err(s))) => Err(RuntimeError::containerd("wait exec", s)),
                Ok(Err(e)) => Err(RuntimeError::Timeout {
                    what: format!("waiting for exec: {e}"),
                    after: timeout,
                }),
                Err(_) => {
                    let _ = tasks
                        .clone()
                        .kill(self.request(KillRequest {
                            container_id: id.to_string(),
                            exec_id: exec_id.clone(),
                            signal: SIGKILL,
                            all: false,
                        }))
                        .await;
                    Err(RuntimeError::Timeout {
                        what: format!("running {command:?} in {id}"),
                        after: timeout,
                    })
                }
            }
        }
        .await;
        let _ = tasks
            .clone()
            .delete_process(self.request(DeleteProcessRequest {
                container_id: id.to_string(),
                exec_id,
            }))
            .await;
        let output = read_capped(&out_path, EXEC_OUTPUT_CAP);
        let _ = std::fs::remove_file(&out_path);
        Ok(ExecOutput {
            exit_code: result?,
            output,
        })
    }

    async fn list(&self) -> Result<Vec<OwnedContainer>> {
        let containers = self
            .inner
            .client
            .containers()
            .list(self.request(ListContainersRequest {
                filters: vec![format!("labels.\"{LABEL_MANAGED}\"==true")],
            }))
            .await
            .map_err(|s| RuntimeError::containerd("list containers", s))?
            .into_inner()
            .containers;
        let mut out = Vec::with_capacity(containers.len());
        for c in containers {
            use containerd_client::types::v1::Status;
            let state = match self.task_status(&c.id).await? {
                None => ContainerState::Unknown,
                Some(p) => match Status::try_from(p.status).unwrap_or(Status::Unknown) {
                    Status::Created => ContainerState::Created,
                    Status::Running | Status::Pausing => ContainerState::Running { pid: p.pid },
                    Status::Paused => ContainerState::Paused { pid: p.pid },
                    Status::Stopped => ContainerState::Stopped(
                        self.exit_status(&c.id, p.exit_status, p.exited_at).await,
                    ),
                    Status::Unknown => ContainerState::Unknown,
                },
            };
            out.push(OwnedContainer {
                task_id: c.labels.get(LABEL_TASK_ID).cloned().unwrap_or_default(),
                container_name: c
                    .labels
                    .get(LABEL_CONTAINER_NAME)
                    .cloned()
                    .unwrap_or_default(),
                image: c.image.clone(),
                id: c.id,
                state,
            });
        }
        Ok(out)
    }
}

fn read_capped(path: &Path, cap: u64) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.take(cap).read_to_end(&mut out);
    }
    out
}

/// Resolve the mounts of a container's snapshot (for tools and tests).
pub async fn snapshot_mounts(rt: &ContainerdRuntime, key: &str) -> Result<Vec<Mount>> {
    Ok(rt
        .client()
        .snapshots()
        .mounts(rt.request(MountsRequest {
            snapshotter: rt.config().snapshotter.clone(),
            key: key.to_string(),
        }))
        .await
        .map_err(|s| RuntimeError::containerd("snapshot mounts", s))?
        .into_inner()
        .mounts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_are_valid_for_containerd() {
        assert_eq!(container_id("t-1", "web"), "t-1-web");
        assert_eq!(container_id("t:1", "my app/x"), "t-1-my-app-x");
        let long = container_id(&"a".repeat(70), "container");
        assert!(long.len() <= 76);
    }
}
