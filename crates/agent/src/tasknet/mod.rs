//! Bridge- and task-mode task networking: a network namespace per task,
//! wired to the host bridge `berth0` by the standard CNI plugins (`cni`
//! says which and how), with a bridge-mode task's published ports
//! forwarded by `portmap` (a task-mode task publishes none: it is reached
//! on its own address).
//!
//! On the host, under the runtime's state dir:
//!
//! ```text
//! netns/<task-id>            the task's netns, a bind mount of the nsfs file
//! cni/tasks/<task-id>.json   the configuration it was set up with (cni::NetRecord)
//! cni/ipam/<network>/...     host-local's IP reservations
//! ```
//!
//! The record is written before anything is created and removed only after
//! every plugin's DEL succeeded, so whatever stops the agent half-way (a
//! failing plugin, `kill -9`) leaves a record that the next teardown or the
//! sweep at start undoes with the configuration that was used.

pub mod cni;
pub mod stats;

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use berth_types::NetworkBinding;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tracing::{debug, info, warn};

use crate::error::{Result, RuntimeError};
use cni::{Command, NetRecord, NetSettings, Step, Subnet};

/// RFC 2544's benchmarking range (198.18.0.0/15): reserved, so never a LAN's
/// or the internet's, which makes clashes with the networks a host already
/// routes to unlikely.
pub const DEFAULT_BRIDGE_SUBNET: &str = "198.18.0.0/16";
/// Where Debian's `containernetworking-plugins` puts the plugins.
pub const DEFAULT_CNI_BIN_DIR: &str = "/usr/lib/cni";
pub const DEFAULT_BRIDGE: &str = "berth0";
/// nsfs's magic number: a mounted network namespace file.
const NSFS_MAGIC: i128 = 0x6e73_6673;

#[derive(Debug, Clone)]
pub struct TaskNetConfig {
    pub cni_bin_dir: PathBuf,
    pub subnet: Subnet,
    pub bridge: String,
    pub network_name: String,
    /// Longest one plugin may run.
    pub plugin_timeout: Duration,
    /// Berth's DNS servers (berthd `--dns-listen`, port 53), which the
    /// containers of bridge- and task-mode tasks then resolve through,
    /// searching their cluster's `CLUSTER.berth`. Empty: the host's
    /// resolvers, as `cni::resolv_conf` makes them reachable.
    pub dns: Vec<std::net::IpAddr>,
}

impl Default for TaskNetConfig {
    fn default() -> Self {
        TaskNetConfig {
            cni_bin_dir: DEFAULT_CNI_BIN_DIR.into(),
            subnet: Subnet::DEFAULT_BRIDGE,
            bridge: DEFAULT_BRIDGE.into(),
            network_name: "berth".into(),
            plugin_timeout: Duration::from_secs(60),
            dns: Vec::new(),
        }
    }
}

/// A task's network as it is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskNetwork {
    pub task_id: String,
    /// The netns file containers join.
    pub netns: PathBuf,
    /// The task's address on the bridge: reachable from the host, and what
    /// its published ports forward to.
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub host_veth: Option<String>,
}

pub struct TaskNet {
    cfg: TaskNetConfig,
    records_dir: PathBuf,
    ipam_dir: PathBuf,
    netns_dir: PathBuf,
    /// One setup, teardown or sweep at a time: they share the bridge,
    /// host-local's reservations and the iptables chains.
    lock: tokio::sync::Mutex<()>,
}

impl TaskNet {
    pub fn new(cfg: TaskNetConfig, state_dir: &Path) -> Self {
        TaskNet {
            records_dir: state_dir.join("cni").join("tasks"),
            ipam_dir: state_dir.join("cni").join("ipam"),
            netns_dir: state_dir.join("netns"),
            cfg,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    pub fn config(&self) -> &TaskNetConfig {
        &self.cfg
    }

    pub fn netns_path(&self, task_id: &str) -> PathBuf {
        self.netns_dir.join(task_id)
    }

    fn record_path(&self, task_id: &str) -> PathBuf {
        self.records_dir.join(format!("{task_id}.json"))
    }

    fn reservations_dir(&self) -> PathBuf {
        self.ipam_dir.join(&self.cfg.network_name)
    }

    fn settings(&self) -> NetSettings {
        NetSettings {
            network_name: self.cfg.network_name.clone(),
            bridge: self.cfg.bridge.clone(),
            subnet: self.cfg.subnet,
            ipam_dir: self.ipam_dir.display().to_string(),
            firewall: self.cfg.cni_bin_dir.join("firewall").is_file(),
        }
    }

    fn error(task_id: &str, reason: impl Into<String>) -> RuntimeError {
        RuntimeError::TaskNetwork {
            task_id: task_id.to_string(),
            reason: reason.into(),
        }
    }

    /// Why bridge-mode tasks cannot run here, if they cannot: checked at
    /// start so the operator hears it before a task fails.
    pub fn missing_plugins(&self) -> Vec<&'static str> {
        ["loopback", "bridge", "host-local", "portmap"]
            .into_iter()
            .filter(|p| !self.cfg.cni_bin_dir.join(p).is_file())
            .collect()
    }

    /// The task's network, set up if it is not: on the first container of a
    /// task (with its bindings), and again on a restart after the netns went
    /// away with a reboot (`bindings` `None`: those it was set up with).
    pub async fn ensure(
        &self,
        task_id: &str,
        bindings: Option<&[NetworkBinding]>,
    ) -> Result<TaskNetwork> {
        if !cni::valid_task_id(task_id) {
            return Err(Self::error(task_id, "the task id cannot name a netns"));
        }
        let _guard = self.lock.lock().await;
        let netns = self.netns_path(task_id);
        let existing = self.read_record(task_id)?;
        if let Some(record) = &existing {
            if record.complete && is_netns(&netns) {
                if let Some(result) = &record.result {
                    return self.network_of(task_id, result);
                }
            }
        }
        let chain = match (bindings, &existing) {
            (Some(b), _) => {
                let mappings = cni::port_mappings(b).map_err(|e| Self::error(task_id, e))?;
                cni::chain_configs(&self.settings(), &mappings)
            }
            (None, Some(record)) => record.chain.clone(),
            (None, None) => {
                return Err(Self::error(
                    task_id,
                    "no network was set up for it on this host (its record is gone)",
                ))
            }
        };
        if existing.is_some() {
            // Half set up (an agent stopped mid-way) or its netns is gone:
            // undo it all first, so the plugins start from a clean slate.
            info!(
                task_id,
                "task network incomplete or its netns is gone; setting it up again"
            );
            self.teardown_locked(task_id).await?;
        }
        self.setup_locked(task_id, chain).await
    }

    /// The task's network, when it is set up.
    pub fn get(&self, task_id: &str) -> Option<TaskNetwork> {
        let record = self.read_record(task_id).ok().flatten()?;
        if !record.complete {
            return None;
        }
        self.network_of(task_id, record.result.as_ref()?).ok()
    }

    /// The task's traffic, from the host end of its veth (`stats`); `None`
    /// when the task has no network set up here, or its CNI result names
    /// no host-side interface.
    pub fn stats(&self, task_id: &str) -> Result<Option<crate::runtime::NetworkStats>> {
        let Some(network) = self.get(task_id) else {
            return Ok(None);
        };
        let Some(veth) = network.host_veth else {
            debug!(
                task_id,
                "the task's CNI result names no host-side veth: no traffic figures"
            );
            return Ok(None);
        };
        stats::host_veth_stats(Path::new(stats::SYS_CLASS_NET), task_id, &veth).map(Some)
    }

    fn network_of(&self, task_id: &str, result: &Value) -> Result<TaskNetwork> {
        let a = cni::addressing(result, &self.cfg.bridge).map_err(|e| Self::error(task_id, e))?;
        Ok(TaskNetwork {
            task_id: task_id.to_string(),
            netns: self.netns_path(task_id),
            ip: a.ip,
            prefix: a.prefix,
            gateway: a.gateway,
            host_veth: a.host_veth,
        })
    }

    async fn setup_locked(&self, task_id: &str, chain: Vec<Value>) -> Result<TaskNetwork> {
        for dir in [&self.records_dir, &self.ipam_dir, &self.netns_dir] {
            std::fs::create_dir_all(dir)
                .map_err(|e| RuntimeError::io(format!("create {}", dir.display()), e))?;
        }
        make_shared(&self.netns_dir);
        let netns = self.netns_path(task_id);
        let mut record = NetRecord {
            task_id: task_id.to_string(),
            netns: netns.display().to_string(),
            loopback: cni::loopback_config(),
            chain,
            result: None,
            complete: false,
        };
        self.write_record(&record)?;
        match self.add(&mut record).await {
            Ok(network) => {
                info!(
                    task_id,
                    ip = %network.ip,
                    netns = %network.netns.display(),
                    host_veth = network.host_veth.as_deref().unwrap_or(""),
                    "task network up"
                );
                Ok(network)
            }
            Err(e) => {
                warn!(task_id, error = %e, "task network setup failed; undoing it");
                if let Err(undo) = self.teardown_locked(task_id).await {
                    warn!(task_id, error = %undo, "cannot undo the task network; the next agent start tries again");
                }
                Err(e)
            }
        }
    }

    async fn add(&self, record: &mut NetRecord) -> Result<TaskNetwork> {
        let task_id = record.task_id.clone();
        let netns = self.netns_path(&task_id);
        create_netns(&task_id, &netns).await?;
        let netns_arg = netns.display().to_string();
        self.run(
            &task_id,
            &netns_arg,
            &Step {
                command: Command::Add,
                plugin: "loopback".into(),
                ifname: cni::LOOPBACK_IFNAME,
                stdin: record.loopback.clone(),
            },
        )
        .await?;
        let mut prev: Option<Value> = None;
        for conf in record.chain.clone() {
            let step = Step {
                command: Command::Add,
                plugin: cni::plugin_type(&conf).unwrap_or_default().to_string(),
                ifname: cni::TASK_IFNAME,
                stdin: cni::with_prev_result(&conf, prev.as_ref()),
            };
            let out = self.run(&task_id, &netns_arg, &step).await?;
            let result: Value = serde_json::from_slice(&out).map_err(|e| {
                Self::error(
                    &task_id,
                    format!("CNI plugin {} answered no JSON result: {e}", step.plugin),
                )
            })?;
            // Saved at once: the firewall plugin's DEL finds its rules
            // through the addresses in it.
            record.result = Some(result.clone());
            self.write_record(record)?;
            prev = Some(result);
        }
        let result = prev.ok_or_else(|| Self::error(&task_id, "the CNI chain is empty"))?;
        let network = self.network_of(&task_id, &result)?;
        record.complete = true;
        self.write_record(record)?;
        Ok(network)
    }

    /// Undoes the task's network: every plugin's DEL in reverse order, then
    /// the netns, then the record. Idempotent; a task without a network is
    /// fine. When a DEL fails the netns and the record stay, so a later
    /// teardown (or the sweep at the next start) can still undo it whole.
    pub async fn teardown(&self, task_id: &str) -> Result<()> {
        if !cni::valid_task_id(task_id) {
            return Ok(());
        }
        let _guard = self.lock.lock().await;
        self.teardown_locked(task_id).await
    }

    async fn teardown_locked(&self, task_id: &str) -> Result<()> {
        let netns = self.netns_path(task_id);
        let reservation = self.reservation_of(task_id);
        let record = match self.read_record(task_id)? {
            Some(r) => Some(r),
            // No record but an address still reserved: undo with the
            // current configuration (host-local releases by container id).
            None if reservation.is_some() => Some(NetRecord {
                task_id: task_id.to_string(),
                netns: netns.display().to_string(),
                loopback: cni::loopback_config(),
                chain: cni::chain_configs(&self.settings(), &[]),
                result: None,
                complete: false,
            }),
            None => None,
        };
        if let Some(mut record) = record {
            if record.result.is_none() {
                record.result =
                    reservation.map(|ip| cni::result_from_reservation(ip, self.cfg.subnet));
            }
            // DEL in a netns that is gone (a reboot) is refused by the
            // plugins; without one they still release what is on the host.
            let netns_arg = if is_netns(&netns) {
                netns.display().to_string()
            } else {
                String::new()
            };
            let mut failed = Vec::new();
            for step in cni::del_steps(&record) {
                // Each DEL undoes its own plugin's work: one failing does
                // not keep the others from running.
                if let Err(e) = self.run(task_id, &netns_arg, &step).await {
                    failed.push(e.to_string());
                }
            }
            if !failed.is_empty() {
                return Err(Self::error(
                    task_id,
                    format!("CNI DEL failed: {}", failed.join("; ")),
                ));
            }
        }
        remove_netns(task_id, &netns)?;
        let path = self.record_path(task_id);
        match std::fs::remove_file(&path) {
            Ok(()) => info!(task_id, "task network removed"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(RuntimeError::io(format!("remove {}", path.display()), e)),
        }
        Ok(())
    }

    /// At agent start: tears down the network of every task that has a
    /// record, a netns file or an IP reservation here but no container.
    pub async fn sweep(&self, live: &HashSet<String>) {
        let _guard = self.lock.lock().await;
        let records = list_tasks(&self.records_dir, ".json");
        let netns = list_tasks(&self.netns_dir, "");
        let reserved: Vec<String> = self.reservations().into_iter().map(|(_, t)| t).collect();
        let sweep = cni::to_sweep(
            records.iter().map(String::as_str),
            netns.iter().map(String::as_str),
            reserved.iter().map(String::as_str),
            live,
        );
        for task_id in sweep {
            info!(task_id = %task_id, "removing the network of a task that has no container left");
            if let Err(e) = self.teardown_locked(&task_id).await {
                warn!(task_id = %task_id, error = %e, "cannot remove a leftover task network; the next start tries again");
            }
        }
    }

    /// host-local's reservations: (address, task id).
    fn reservations(&self) -> Vec<(Ipv4Addr, String)> {
        let Ok(entries) = std::fs::read_dir(self.reservations_dir()) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                // Reservation files are a line or two; anything bigger is not one.
                if e.metadata().ok()?.len() > 4096 {
                    return None;
                }
                let text = std::fs::read_to_string(e.path()).ok()?;
                cni::reservation_owner(&name, &text)
            })
            .filter(|(_, owner)| cni::valid_task_id(owner))
            .collect()
    }

    fn reservation_of(&self, task_id: &str) -> Option<Ipv4Addr> {
        self.reservations()
            .into_iter()
            .find(|(_, owner)| owner == task_id)
            .map(|(ip, _)| ip)
    }

    fn read_record(&self, task_id: &str) -> Result<Option<NetRecord>> {
        let path = self.record_path(task_id);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Self::error(
                    task_id,
                    format!(
                        "{} is damaged ({e}); remove it and the task's netns by hand",
                        path.display()
                    ),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(RuntimeError::io(format!("read {}", path.display()), e)),
        }
    }

    /// Written whole (temporary file, fsync, rename): a crash leaves the
    /// old record or the new one.
    fn write_record(&self, record: &NetRecord) -> Result<()> {
        use std::io::Write as _;
        let path = self.record_path(&record.task_id);
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(record)
            .map_err(|e| Self::error(&record.task_id, format!("cannot encode the record: {e}")))?;
        let io = |e| RuntimeError::io(format!("write {}", path.display()), e);
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        if let Ok(dir) = std::fs::File::open(&self.records_dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    /// Runs one plugin as the CNI spec says: parameters in the environment,
    /// the configuration on stdin, the result (or a CNI error) on stdout.
    async fn run(&self, task_id: &str, netns: &str, step: &Step) -> Result<Vec<u8>> {
        let bin = self.cfg.cni_bin_dir.join(&step.plugin);
        if step.plugin.is_empty() || step.plugin.contains('/') || !bin.is_file() {
            return Err(Self::error(
                task_id,
                format!(
                    "CNI plugin {:?} is not in {}: install containernetworking-plugins \
                     (scripts/install-deps.sh does) or point --cni-bin-dir at the plugins",
                    step.plugin,
                    self.cfg.cni_bin_dir.display()
                ),
            ));
        }
        let stdin = serde_json::to_vec(&step.stdin)
            .map_err(|e| Self::error(task_id, format!("cannot encode the configuration: {e}")))?;
        let mut child = tokio::process::Command::new(&bin)
            .env("CNI_COMMAND", step.command.as_str())
            .env("CNI_CONTAINERID", task_id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", step.ifname)
            .env("CNI_PATH", &self.cfg.cni_bin_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A setup abandoned half-way (the create was cancelled) must not
            // leave a plugin running on; the record says what to undo.
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| RuntimeError::io(format!("run {}", bin.display()), e))?;
        if let Some(mut input) = child.stdin.take() {
            input
                .write_all(&stdin)
                .await
                .map_err(|e| RuntimeError::io(format!("write to {}", bin.display()), e))?;
        }
        let output = tokio::time::timeout(self.cfg.plugin_timeout, child.wait_with_output())
            .await
            .map_err(|_| RuntimeError::Timeout {
                what: format!(
                    "CNI {} {} for task {task_id}",
                    step.command.as_str(),
                    step.plugin
                ),
                after: self.cfg.plugin_timeout,
            })?
            .map_err(|e| RuntimeError::io(format!("run {}", bin.display()), e))?;
        if !output.status.success() {
            let reason =
                cni::plugin_error(&output.stdout, &output.stderr, &output.status.to_string());
            warn!(task_id, plugin = %step.plugin, command = step.command.as_str(), error = %reason, "CNI plugin failed");
            return Err(Self::error(
                task_id,
                format!("CNI {} {}: {reason}", step.command.as_str(), step.plugin),
            ));
        }
        debug!(task_id, plugin = %step.plugin, command = step.command.as_str(), "CNI plugin done");
        Ok(output.stdout)
    }
}

/// A mounted network namespace (not just the empty file left behind after
/// a reboot).
fn is_netns(path: &Path) -> bool {
    rustix::fs::statfs(path).is_ok_and(|s| i128::from(s.f_type) == NSFS_MAGIC)
}

/// The directory of netns files as a shared mount point of its own, as
/// `ip netns` does with /run/netns: unmounting a netns here then also
/// unmounts the copies other mount namespaces made of it since, so none of
/// them keeps the namespace alive.
fn make_shared(dir: &Path) {
    use rustix::mount::{mount_bind, mount_change, MountPropagationFlags};
    let shared = MountPropagationFlags::SHARED | MountPropagationFlags::REC;
    match mount_change(dir, shared) {
        Ok(()) => {}
        // Not a mount point yet.
        Err(rustix::io::Errno::INVAL) => {
            if let Err(e) = mount_bind(dir, dir).and_then(|()| mount_change(dir, shared)) {
                warn!(dir = %dir.display(), error = %e, "cannot make the netns directory a shared mount");
            }
        }
        Err(e) => {
            warn!(dir = %dir.display(), error = %e, "cannot make the netns directory a shared mount")
        }
    }
}

/// A new network namespace, kept alive by a bind mount on `path`. util-linux's
/// `unshare --net=FILE` makes it: entering a namespace takes a thread of its
/// own (and unsafe code), which a short-lived child process gives for free.
async fn create_netns(task_id: &str, path: &Path) -> Result<()> {
    if is_netns(path) {
        return Ok(());
    }
    std::fs::File::create(path)
        .map_err(|e| RuntimeError::io(format!("create {}", path.display()), e))?;
    let output = tokio::process::Command::new("unshare")
        .arg(format!("--net={}", path.display()))
        .arg("true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| RuntimeError::io("run unshare (util-linux) to create a netns", e))?;
    if !output.status.success() || !is_netns(path) {
        let _ = std::fs::remove_file(path);
        return Err(TaskNet::error(
            task_id,
            format!(
                "cannot create a network namespace with `unshare --net`: {} {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        ));
    }
    Ok(())
}

/// Unmounts and removes the netns file; a missing one is fine.
fn remove_netns(task_id: &str, path: &Path) -> Result<()> {
    use rustix::mount::{unmount, UnmountFlags};
    // Detached: a process still inside (a container not yet reaped) keeps
    // the namespace, not the mount.
    while is_netns(path) {
        match unmount(path, UnmountFlags::DETACH) {
            Ok(()) => {}
            Err(e) => {
                return Err(TaskNet::error(
                    task_id,
                    format!("cannot unmount {}: {e}", path.display()),
                ))
            }
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(RuntimeError::io(format!("remove {}", path.display()), e)),
    }
}

/// The tasks named by the files in `dir`.
fn list_tasks(dir: &Path, suffix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| cni::task_of_file(&e.path(), suffix))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_subnet_is_rfc2544_space() {
        let s: Subnet = DEFAULT_BRIDGE_SUBNET.parse().expect("default subnet");
        assert_eq!(s, TaskNetConfig::default().subnet);
        assert!(s.contains(Ipv4Addr::new(198, 18, 0, 1)));
        assert_eq!(s.prefix(), 16);
    }

    #[tokio::test]
    async fn a_task_without_network_tears_down_cleanly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let net = TaskNet::new(TaskNetConfig::default(), dir.path());
        net.teardown("t1").await.expect("nothing to do");
        net.teardown("../etc")
            .await
            .expect("refused names are ignored");
        assert!(net.get("t1").is_none());
        let err = net.ensure("t1", None).await.expect_err("no record");
        assert!(err.to_string().contains("no network was set up"), "{err}");
    }

    #[tokio::test]
    async fn a_missing_plugin_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = TaskNetConfig {
            cni_bin_dir: dir.path().join("no-plugins"),
            ..TaskNetConfig::default()
        };
        let net = TaskNet::new(cfg, dir.path());
        assert_eq!(
            net.missing_plugins(),
            ["loopback", "bridge", "host-local", "portmap"]
        );
        let step = Step {
            command: Command::Add,
            plugin: "bridge".into(),
            ifname: cni::TASK_IFNAME,
            stdin: serde_json::json!({}),
        };
        let err = net.run("t1", "", &step).await.expect_err("no plugin");
        assert!(err.to_string().contains("--cni-bin-dir"), "{err}");
    }

    /// Plugins that log how they were run (and `fail_del` fails its DEL).
    fn fake_plugins(dir: &Path, fail_del: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).expect("bin dir");
        let log = dir.join("calls.log");
        for plugin in ["loopback", "bridge", "host-local", "portmap", "firewall"] {
            let fail = if plugin == fail_del {
                r#"[ "$CNI_COMMAND" = DEL ] && { echo '{"code":999,"msg":"nope"}'; exit 1; }"#
            } else {
                ""
            };
            let script = format!(
                "#!/bin/sh\nin=$(cat)\nprev=$(printf '%s' \"$in\" | grep -c prevResult)\n\
                 echo \"$CNI_COMMAND {plugin} $CNI_IFNAME [$CNI_NETNS] $CNI_CONTAINERID prev=$prev\" >> {}\n{fail}\necho '{{}}'\n",
                log.display()
            );
            let path = bin.join(plugin);
            std::fs::write(&path, script).expect("script");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        bin
    }

    fn calls(dir: &Path) -> Vec<String> {
        std::fs::read_to_string(dir.join("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn record(net: &TaskNet, task_id: &str, result: Option<Value>) -> NetRecord {
        NetRecord {
            task_id: task_id.into(),
            netns: net.netns_path(task_id).display().to_string(),
            loopback: cni::loopback_config(),
            chain: cni::chain_configs(&net.settings(), &[]),
            result,
            complete: true,
        }
    }

    #[tokio::test]
    async fn teardown_runs_del_in_reverse_and_forgets_the_task() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = TaskNetConfig {
            cni_bin_dir: fake_plugins(dir.path(), ""),
            ..TaskNetConfig::default()
        };
        let net = TaskNet::new(cfg, dir.path());
        std::fs::create_dir_all(&net.records_dir).expect("records dir");
        net.write_record(&record(&net, "t1", Some(serde_json::json!({"ips": []}))))
            .expect("record");
        // The netns file left behind by a reboot: a plain file.
        std::fs::create_dir_all(&net.netns_dir).expect("netns dir");
        std::fs::write(net.netns_path("t1"), "").expect("netns file");

        net.teardown("t1").await.expect("teardown");
        assert_eq!(
            calls(dir.path()),
            [
                "DEL firewall eth0 [] t1 prev=1",
                "DEL portmap eth0 [] t1 prev=1",
                "DEL bridge eth0 [] t1 prev=1",
                "DEL loopback lo [] t1 prev=0",
            ],
            "reverse order, the cached result, and no netns that is not one"
        );
        assert!(!net.record_path("t1").exists());
        assert!(!net.netns_path("t1").exists());
        // Idempotent: nothing left, nothing run.
        net.teardown("t1").await.expect("again");
        assert_eq!(calls(dir.path()).len(), 4);
    }

    #[tokio::test]
    async fn a_failed_del_keeps_the_record_for_the_next_try() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = TaskNetConfig {
            cni_bin_dir: fake_plugins(dir.path(), "portmap"),
            ..TaskNetConfig::default()
        };
        let net = TaskNet::new(cfg, dir.path());
        std::fs::create_dir_all(&net.records_dir).expect("records dir");
        net.write_record(&record(&net, "t1", None)).expect("record");
        let err = net.teardown("t1").await.expect_err("portmap fails");
        assert!(err.to_string().contains("nope"), "{err}");
        // The other plugins still ran.
        assert_eq!(calls(dir.path()).len(), 4);
        assert!(net.record_path("t1").exists());
    }

    #[tokio::test]
    async fn sweep_undoes_tasks_without_containers_even_without_a_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = TaskNetConfig {
            cni_bin_dir: fake_plugins(dir.path(), ""),
            ..TaskNetConfig::default()
        };
        let net = TaskNet::new(cfg, dir.path());
        std::fs::create_dir_all(&net.records_dir).expect("records dir");
        net.write_record(&record(&net, "live", None))
            .expect("record");
        net.write_record(&record(&net, "gone", None))
            .expect("record");
        // An address reserved for a task whose record never made it.
        let reservations = net.reservations_dir();
        std::fs::create_dir_all(&reservations).expect("ipam dir");
        std::fs::write(reservations.join("198.18.0.9"), "stray\r\neth0").expect("reservation");
        std::fs::write(reservations.join("last_reserved_ip.0"), "198.18.0.9").expect("last");

        net.sweep(&["live".to_string()].into()).await;
        let calls = calls(dir.path());
        assert!(calls.iter().all(|c| !c.contains(" live ")), "{calls:?}");
        assert_eq!(calls.iter().filter(|c| c.contains(" gone ")).count(), 4);
        // The stand-in result carries the reserved address to the DELs.
        assert!(
            calls.contains(&"DEL firewall eth0 [] stray prev=1".to_string()),
            "{calls:?}"
        );
        assert!(net.record_path("live").exists());
        assert!(!net.record_path("gone").exists());
    }
}
