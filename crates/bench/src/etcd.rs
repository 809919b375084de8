//! The peer `berth-bench raft --compare etcd` measures Berth against: a
//! 3-member etcd cluster (Debian's `etcd-server`) on loopback with TLS on
//! client traffic and mutual TLS on peer traffic, its certificates issued by
//! `berthd pki` from the same CA as Berth's servers, so both systems pay for
//! TLS. The bench talks to it with its own gRPC client (proto/etcd.proto).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tonic::transport::Channel;

pub mod pb {
    tonic::include_proto!("etcdserverpb");
}

pub type Kv = pb::kv_client::KvClient<Channel>;
type Maintenance = pb::maintenance_client::MaintenanceClient<Channel>;

/// Node ids for `berthd pki issue`, well clear of Berth's servers' 1..=3.
const FIRST_CERT_NODE_ID: u64 = 901;

pub struct Member {
    pub name: String,
    pub client_addr: String,
    log_path: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    /// etcd's member id, learnt from the member's own Status.
    member_id: Option<u64>,
}

impl Member {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn start(&mut self, etcd: &Path) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("opening {}", self.log_path.display()))?;
        let mut command = Command::new(etcd);
        // etcd takes any ETCD_* variable as a flag; only ours count.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ETCD_") {
                command.env_remove(key);
            }
        }
        let child = command
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} ({})", etcd.display(), self.name))?;
        self.child = Some(child);
        Ok(())
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the exit (etcd hands leadership over first).
    pub fn terminate(&mut self, timeout: Duration) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        if !sent.is_ok_and(|s| s.success()) {
            let _ = child.kill();
        }
        let deadline = Instant::now() + timeout;
        loop {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{} did not exit within {timeout:?} of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

pub struct EtcdCluster {
    _dir: tempfile::TempDir,
    etcd: PathBuf,
    pub members: Vec<Member>,
    ca_pem: String,
}

/// `etcd` on the PATH, or a clear error saying how to get it.
pub fn binary() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("etcd"))
        .find(|p| p.is_file())
        .context(
            "--compare etcd needs the etcd server on the PATH: `apt-get install -y etcd-server`",
        )
}

pub fn version(etcd: &Path) -> String {
    Command::new(etcd)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_else(|| "etcd (version unknown)".into())
}

impl EtcdCluster {
    /// Starts `size` members that form a new cluster, each with a server
    /// certificate (server and client use, for the peers' mutual TLS)
    /// issued by `berthd pki issue` from the CA in `pki_dir`.
    pub async fn start(berthd: &Path, pki_dir: &Path, size: usize) -> Result<Self> {
        let etcd = binary()?;
        let dir = tempfile::tempdir().context("temp dir for etcd")?;
        let ca = pki_dir.join("ca.crt");
        let ca_pem =
            std::fs::read_to_string(&ca).with_context(|| format!("reading {}", ca.display()))?;
        let ports: Vec<(u16, u16)> = (0..size)
            .map(|_| (berth_e2e::free_port(), berth_e2e::free_port()))
            .collect();
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{}=https://127.0.0.1:{peer}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let name = format!("m{}", i + 1);
            let certs = dir.path().join(format!("{name}-pki"));
            let out = Command::new(berthd)
                .args(["pki", "issue", "--dir"])
                .arg(pki_dir)
                .args(["--node-id", &(FIRST_CERT_NODE_ID + i as u64).to_string()])
                .args(["--host", "127.0.0.1", "--out"])
                .arg(&certs)
                .output()
                .context("running berthd pki issue for etcd")?;
            if !out.status.success() {
                bail!(
                    "berthd pki issue for etcd member {name}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let file = |f: &str| certs.join(f).display().to_string();
            let client_url = format!("https://127.0.0.1:{client}");
            let peer_url = format!("https://127.0.0.1:{peer}");
            let args: Vec<String> = [
                "--name",
                &name,
                "--data-dir",
                &dir.path().join(&name).display().to_string(),
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
                "--initial-cluster",
                &initial,
                "--initial-cluster-token",
                "berth-bench",
                "--initial-cluster-state",
                "new",
                "--cert-file",
                &file("server.crt"),
                "--key-file",
                &file("server.key"),
                "--peer-cert-file",
                &file("server.crt"),
                "--peer-key-file",
                &file("server.key"),
                "--peer-trusted-ca-file",
                &ca.display().to_string(),
                "--peer-client-cert-auth",
                "--logger",
                "zap",
                "--log-level",
                "warn",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            members.push(Member {
                log_path: dir.path().join(format!("{name}.log")),
                name,
                client_addr: format!("127.0.0.1:{client}"),
                args,
                child: None,
                member_id: None,
            });
        }
        let mut cluster = Self {
            _dir: dir,
            etcd,
            members,
            ca_pem,
        };
        for i in 0..size {
            let etcd = cluster.etcd.clone();
            cluster.members[i].start(&etcd)?;
        }
        cluster.wait_ready(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    pub async fn channel(&self, member: usize) -> Result<Channel> {
        let addr = &self.members[member].client_addr;
        berth_e2e::tls_channel_trusting(addr, &self.ca_pem, None)
            .await
            .with_context(|| format!("connecting to etcd at {addr}"))
    }

    pub async fn kv(&self, member: usize) -> Result<Kv> {
        Ok(Kv::new(self.channel(member).await?))
    }

    async fn status(&self, member: usize) -> Result<pb::StatusResponse> {
        let mut client = Maintenance::new(self.channel(member).await?);
        let status =
            tokio::time::timeout(Duration::from_secs(2), client.status(pb::StatusRequest {}))
                .await
                .context("etcd Status timed out")??;
        Ok(status.into_inner())
    }

    /// Index of the member that is leader, by the first running member's
    /// account (each member's id learnt from its own Status).
    pub async fn leader(&mut self) -> Result<usize> {
        let mut last = String::from("no member answered");
        for i in 0..self.members.len() {
            if self.members[i].child.is_none() {
                continue;
            }
            match self.status(i).await {
                Ok(status) => {
                    if let Some(header) = &status.header {
                        self.members[i].member_id = Some(header.member_id);
                    }
                    if status.leader == 0 {
                        last = format!("{} knows no leader", self.members[i].name);
                        continue;
                    }
                    if let Some(index) = self
                        .members
                        .iter()
                        .position(|m| m.member_id == Some(status.leader))
                    {
                        return Ok(index);
                    }
                    last = format!("leader {:x} is not a member learnt yet", status.leader);
                }
                Err(e) => last = format!("{}: {e:#}", self.members[i].name),
            }
        }
        bail!("{last}")
    }

    /// Waits until every member answers, all know their ids, one is leader
    /// and each has applied the leader's log as of the wait's start.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.caught_up().await {
                Ok(leader) => return Ok(leader),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() > deadline {
                bail!("etcd was not ready within {timeout:?}: {last}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn caught_up(&mut self) -> Result<usize> {
        let mut statuses = Vec::new();
        for i in 0..self.members.len() {
            let status = self.status(i).await?;
            let header = status.header.context("Status without a header")?;
            self.members[i].member_id = Some(header.member_id);
            statuses.push(status);
        }
        let leader_id = statuses[0].leader;
        if leader_id == 0 || statuses.iter().any(|s| s.leader != leader_id) {
            bail!("the members do not agree on a leader yet");
        }
        let leader = self
            .members
            .iter()
            .position(|m| m.member_id == Some(leader_id))
            .context("the leader is not one of the members")?;
        let target = statuses[leader].raft_index;
        if statuses.iter().any(|s| s.raft_applied_index < target) {
            bail!("not every member has applied index {target} yet");
        }
        Ok(leader)
    }

    pub fn restart(&mut self, member: usize) -> Result<()> {
        let etcd = self.etcd.clone();
        self.members[member].start(&etcd)
    }

    /// Process ids, the leader's first, labelled as `cluster::watched` does.
    pub fn watched(&self, leader: usize) -> crate::load::Watched {
        let mut out = Vec::new();
        if let Some(pid) = self.members[leader].pid() {
            out.push((format!("leader ({})", self.members[leader].name), pid));
        }
        for (i, member) in self.members.iter().enumerate() {
            if i != leader {
                if let Some(pid) = member.pid() {
                    out.push((format!("server {}", member.name), pid));
                }
            }
        }
        out
    }

    /// Kills every member, keeping their logs in `logs/NAME-mN.log` when
    /// asked to.
    pub fn stop(mut self, logs: Option<&Path>, name: &str) -> Result<()> {
        for member in &mut self.members {
            member.kill9();
        }
        if let Some(dir) = logs {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            for member in &self.members {
                let to = dir.join(format!("{name}-{}.log", member.name));
                std::fs::copy(&member.log_path, &to)
                    .with_context(|| format!("copying a log to {}", to.display()))?;
            }
        }
        Ok(())
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            member.kill9();
        }
    }
}

/// A `PutRequest` whose encoding is exactly `wire_bytes` long, so a write to etcd
/// carries as many bytes as Berth's `RegisterTaskDefinitionRequest`.
pub fn put_of_size(key: &str, wire_bytes: usize) -> pb::PutRequest {
    let mut put = pb::PutRequest {
        key: key.as_bytes().to_vec(),
        value: Vec::new(),
    };
    while prost::Message::encoded_len(&put) < wire_bytes {
        put.value.push(b'x');
    }
    // The value's length prefix grew a byte: one byte moves to the key.
    if prost::Message::encoded_len(&put) > wire_bytes {
        put.value.pop();
        put.key.push(b'-');
    }
    put
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The peer the bench compares against works as the bench drives it:
    /// three members with TLS agree on a leader, take a Put through a
    /// follower and answer a linearizable Range from every member, and a
    /// killed leader is replaced.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tls_etcd_cluster_takes_writes_and_reads_and_survives_its_leader() {
        if binary().is_err() {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "CI=true but etcd is not installed (scripts/install-deps.sh installs etcd-server)"
            );
            eprintln!("skipped: etcd is not installed (apt-get install -y etcd-server)");
            return;
        }
        let berthd = berth_e2e::binary("berthd");
        let pki = &berth_e2e::test_pki().dir;
        let mut cluster = EtcdCluster::start(&berthd, pki, 3)
            .await
            .expect("etcd starts");
        let leader = cluster.leader().await.expect("a leader");
        let follower = (leader + 1) % 3;
        let put = put_of_size("k", 518);
        cluster
            .kv(follower)
            .await
            .expect("connect")
            .put(put.clone())
            .await
            .expect("a Put through a follower");
        for member in 0..3 {
            let read = cluster
                .kv(member)
                .await
                .expect("connect")
                .range(pb::RangeRequest {
                    key: put.key.clone(),
                    serializable: false,
                })
                .await
                .expect("a linearizable read")
                .into_inner();
            assert_eq!(read.kvs.len(), 1, "member {member}");
            assert_eq!(read.kvs[0].value, put.value, "member {member}");
        }
        cluster.members[leader].kill9();
        let deadline = Instant::now() + Duration::from_secs(20);
        let new = loop {
            match cluster.leader().await {
                Ok(l) if l != leader => break l,
                _ if Instant::now() > deadline => panic!("no new etcd leader"),
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        assert_ne!(new, leader);
        cluster.restart(leader).expect("restart");
        cluster
            .wait_ready(Duration::from_secs(30))
            .await
            .expect("caught up");
    }

    #[test]
    fn a_put_is_as_long_on_the_wire_as_asked() {
        for size in [64, 127, 128, 129, 518, 4096] {
            let put = put_of_size("bench-07", size);
            assert_eq!(prost::Message::encoded_len(&put), size, "size {size}");
        }
    }
}
