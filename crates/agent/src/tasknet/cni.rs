//! The pure half of task networking: the CNI network configurations a
//! bridge-mode task is set up with, the order plugins run in, what their
//! results say, the files a task's containers get (`/etc/hosts`,
//! `/etc/resolv.conf`), and what a starting agent sweeps. No I/O here, so
//! all of it is tested without root.
//!
//! The plugins are the reference ones (containernetworking/plugins), run the
//! way libcni runs a network configuration list (as containerd's CRI through
//! go-cni, and Nomad, do): `loopback` on its own for `lo`, then the chain
//! `bridge` -> `portmap` -> `firewall` for `eth0`. On ADD each plugin of the
//! chain gets the previous one's result as `prevResult`; on DEL the plugins
//! run in reverse order and each gets the chain's cached ADD result.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::str::FromStr;

use berth_types::{NetworkBinding, Protocol};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The CNI spec version Berth speaks; Debian 12's plugins (1.1.1) take it.
pub const CNI_VERSION: &str = "1.0.0";
/// The interface a task's containers see.
pub const TASK_IFNAME: &str = "eth0";
pub const LOOPBACK_IFNAME: &str = "lo";

/// An IPv4 subnet in CIDR notation, e.g. `198.18.0.0/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    network: Ipv4Addr,
    prefix: u8,
}

impl Subnet {
    /// `tasknet::DEFAULT_BRIDGE_SUBNET`, 198.18.0.0/16 (a test checks they
    /// agree).
    pub const DEFAULT_BRIDGE: Subnet = Subnet {
        network: Ipv4Addr::new(198, 18, 0, 0),
        prefix: 16,
    };

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.network)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

impl FromStr for Subnet {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (addr, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not an IPv4 subnet like 198.18.0.0/16"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| format!("{prefix:?} is not a prefix length"))?;
        // The bridge takes one address as the gateway and host-local keeps
        // the network and broadcast addresses: a /30 leaves one task.
        if !(8..=30).contains(&prefix) {
            return Err(format!(
                "prefix /{prefix} is out of range: use /8 to /30 (a /16 holds 65,533 tasks)"
            ));
        }
        let network = Ipv4Addr::from(u32::from(addr) & mask(prefix));
        if network != addr {
            return Err(format!(
                "{text} has host bits set; did you mean {network}/{prefix}?"
            ));
        }
        Ok(Subnet { network, prefix })
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// What every bridge-mode task on this agent shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetSettings {
    /// The CNI network name: host-local's reservations and the iptables
    /// chains of bridge and portmap are named after it.
    pub network_name: String,
    pub bridge: String,
    pub subnet: Subnet,
    /// host-local's `dataDir`: the IP reservations.
    pub ipam_dir: String,
    /// Run the `firewall` plugin too (when it is installed): on hosts whose
    /// FORWARD policy is DROP (Docker sets that) it is what lets tasks'
    /// traffic through.
    pub firewall: bool,
}

/// One published port, in portmap's `runtimeConfig.portMappings` terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    #[serde(rename = "hostPort")]
    pub host_port: u16,
    #[serde(rename = "containerPort")]
    pub container_port: u16,
    pub protocol: String,
}

/// The port mappings of a bridge-mode task: exactly the bindings the control
/// plane chose, host port to the task's address and container port. A
/// binding that cannot be published is refused, not skipped: a task whose
/// port silently went unpublished would look healthy and serve nobody.
pub fn port_mappings(bindings: &[NetworkBinding]) -> Result<Vec<PortMapping>, String> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(bindings.len());
    for b in bindings {
        let port = |p: u32, what: &str| -> Result<u16, String> {
            u16::try_from(p).ok().filter(|p| *p > 0).ok_or_else(|| {
                format!(
                    "container {:?}: {what} {p} is not a port (1-65535)",
                    b.container_name
                )
            })
        };
        let host_port = port(b.host_port, "host port")?;
        let container_port = port(b.container_port, "container port")?;
        let protocol = match b.protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        };
        if !seen.insert((host_port, protocol)) {
            return Err(format!(
                "host port {host_port}/{protocol} is bound twice in the task"
            ));
        }
        out.push(PortMapping {
            host_port,
            container_port,
            protocol: protocol.to_string(),
        });
    }
    Ok(out)
}

/// The `lo` network: brings the loopback interface of the netns up.
pub fn loopback_config() -> Value {
    json!({"cniVersion": CNI_VERSION, "name": "berth-loopback", "type": "loopback"})
}

/// The task's chain, each plugin's configuration complete (`cniVersion` and
/// `name` included) as libcni hands it over, without `prevResult`.
pub fn chain_configs(settings: &NetSettings, mappings: &[PortMapping]) -> Vec<Value> {
    let name = &settings.network_name;
    let mut chain = vec![
        json!({
            "cniVersion": CNI_VERSION,
            "name": name,
            "type": "bridge",
            "bridge": settings.bridge,
            // The bridge holds the gateway address and the host routes to
            // the subnet through it: tasks are reachable on their address.
            "isGateway": true,
            // Outbound traffic leaves with the host's address.
            "ipMasq": true,
            // A task may reach itself through its own published port.
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": settings.subnet.to_string()}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": settings.ipam_dir,
            },
        }),
        json!({
            "cniVersion": CNI_VERSION,
            "name": name,
            "type": "portmap",
            "capabilities": {"portMappings": true},
            // What libcni would inject for the capability. Kept in the saved
            // configuration: portmap's DEL removes nothing without it.
            "runtimeConfig": {"portMappings": mappings},
            // Masquerade connections to a published port made from the host
            // itself (127.0.0.1) or from a task back to its own port, so the
            // task's answers come back through the host.
            "snat": true,
        }),
    ];
    if settings.firewall {
        chain.push(json!({
            "cniVersion": CNI_VERSION,
            "name": name,
            "type": "firewall",
            "backend": "iptables",
        }));
    }
    chain
}

/// The plugin a configuration names.
pub fn plugin_type(conf: &Value) -> Option<&str> {
    conf.get("type").and_then(Value::as_str)
}

/// A plugin's stdin: its configuration plus `prevResult` when there is one.
pub fn with_prev_result(conf: &Value, prev: Option<&Value>) -> Value {
    let mut conf = conf.clone();
    if let (Some(obj), Some(prev)) = (conf.as_object_mut(), prev) {
        obj.insert("prevResult".into(), prev.clone());
    }
    conf
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
        }
    }
}

/// One plugin run.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub command: Command,
    pub plugin: String,
    pub ifname: &'static str,
    pub stdin: Value,
}

/// What a task's network was set up with, saved before the first plugin
/// runs so that whatever happens next (a failed plugin, a killed agent) can
/// be undone with the same configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetRecord {
    pub task_id: String,
    pub netns: String,
    pub loopback: Value,
    /// In ADD order.
    pub chain: Vec<Value>,
    /// The chain's latest ADD result: every DEL's `prevResult` (the firewall
    /// plugin finds the rules to remove through its addresses).
    #[serde(default)]
    pub result: Option<Value>,
    /// Every ADD succeeded.
    #[serde(default)]
    pub complete: bool,
}

/// The DEL steps undoing a record: the chain in reverse, then `lo` (the
/// reverse of ADD's order), each with the cached result.
pub fn del_steps(record: &NetRecord) -> Vec<Step> {
    let prev = record.result.as_ref();
    let mut steps: Vec<Step> = record
        .chain
        .iter()
        .rev()
        .map(|conf| Step {
            command: Command::Del,
            plugin: plugin_type(conf).unwrap_or_default().to_string(),
            ifname: TASK_IFNAME,
            stdin: with_prev_result(conf, prev),
        })
        .collect();
    steps.push(Step {
        command: Command::Del,
        plugin: plugin_type(&record.loopback)
            .unwrap_or_default()
            .to_string(),
        ifname: LOOPBACK_IFNAME,
        stdin: record.loopback.clone(),
    });
    steps
}

/// The address a task got, from a chain's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addressing {
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    /// The host end of the task's veth pair.
    pub host_veth: Option<String>,
}

#[derive(Deserialize)]
struct ResultIface {
    name: String,
    #[serde(default)]
    sandbox: Option<String>,
}

#[derive(Deserialize)]
struct ResultIp {
    #[serde(default)]
    interface: Option<usize>,
    address: String,
    #[serde(default)]
    gateway: Option<String>,
}

#[derive(Deserialize)]
struct CniResult {
    #[serde(default)]
    interfaces: Vec<ResultIface>,
    #[serde(default)]
    ips: Vec<ResultIp>,
}

/// The task's IPv4 address on `eth0` (the interface inside the netns) and
/// the host end of its veth (the interface on the host that is neither the
/// bridge nor in a sandbox).
pub fn addressing(result: &Value, bridge: &str) -> Result<Addressing, String> {
    let r: CniResult = serde_json::from_value(result.clone())
        .map_err(|e| format!("the CNI result is malformed: {e}"))?;
    let in_sandbox = |idx: Option<usize>| {
        idx.and_then(|i| r.interfaces.get(i))
            .is_some_and(|i| i.sandbox.as_deref().is_some_and(|s| !s.is_empty()))
    };
    let parsed: Vec<(Option<usize>, Ipv4Addr, u8, Option<Ipv4Addr>)> = r
        .ips
        .iter()
        .filter_map(|ip| {
            let (addr, prefix) = ip.address.split_once('/')?;
            let addr: Ipv4Addr = addr.parse().ok()?;
            let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32)?;
            let gw = ip.gateway.as_deref().and_then(|g| g.parse().ok());
            Some((ip.interface, addr, prefix, gw))
        })
        .collect();
    let chosen = parsed
        .iter()
        .find(|(iface, ..)| in_sandbox(*iface))
        .or_else(|| parsed.first())
        .ok_or_else(|| "the CNI result holds no IPv4 address".to_string())?;
    let host_veth = r
        .interfaces
        .iter()
        .find(|i| i.name != bridge && i.sandbox.as_deref().is_none_or(str::is_empty))
        .map(|i| i.name.clone());
    Ok(Addressing {
        ip: chosen.1,
        prefix: chosen.2,
        gateway: chosen.3,
        host_veth,
    })
}

/// A result standing in for a lost one: the address host-local reserved for
/// the task, which is what the firewall plugin's DEL needs to find its rules.
pub fn result_from_reservation(ip: Ipv4Addr, subnet: Subnet) -> Value {
    json!({
        "cniVersion": CNI_VERSION,
        "interfaces": [{"name": TASK_IFNAME, "sandbox": ""}],
        "ips": [{"address": format!("{ip}/{}", subnet.prefix()), "interface": 0}],
    })
}

/// A plugin's failure as a sentence: its CNI error (`{"code", "msg",
/// "details"}` on stdout), else its stderr, else its exit status.
pub fn plugin_error(stdout: &[u8], stderr: &[u8], status: &str) -> String {
    #[derive(Deserialize)]
    struct CniError {
        #[serde(default)]
        code: u32,
        #[serde(default)]
        msg: String,
        #[serde(default)]
        details: String,
    }
    if let Ok(e) = serde_json::from_slice::<CniError>(stdout) {
        if !e.msg.is_empty() {
            return if e.details.is_empty() {
                format!("{} (CNI error {})", e.msg, e.code)
            } else {
                format!("{}: {} (CNI error {})", e.msg, e.details, e.code)
            };
        }
    }
    let err = String::from_utf8_lossy(stderr);
    let err = err.trim();
    if err.is_empty() {
        format!("exited with {status}")
    } else {
        format!("exited with {status}: {err}")
    }
}

/// A task id as a file name and CNI container id: libcni's rule
/// (`[A-Za-z0-9][A-Za-z0-9_.-]*`), and short enough for a path.
pub fn valid_task_id(task_id: &str) -> bool {
    let mut chars = task_id.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && task_id.len() <= 128
}

/// host-local's reservation file for `ip` holds the container id on its
/// first line (then the interface name).
pub fn reservation_owner(file_name: &str, contents: &str) -> Option<(Ipv4Addr, String)> {
    let ip: Ipv4Addr = file_name.parse().ok()?;
    let owner = contents.lines().next()?.trim();
    (!owner.is_empty()).then(|| (ip, owner.to_string()))
}

/// The tasks a starting agent tears the network of down: those with a
/// record, a netns file or an IP reservation but no container left. A task
/// with containers keeps its network, even when its netns is gone (after a
/// reboot): restarting a container sets the network up again.
pub fn to_sweep<'a>(
    records: impl IntoIterator<Item = &'a str>,
    netns_files: impl IntoIterator<Item = &'a str>,
    reservations: impl IntoIterator<Item = &'a str>,
    live: &HashSet<String>,
) -> BTreeSet<String> {
    records
        .into_iter()
        .chain(netns_files)
        .chain(reservations)
        .filter(|t| !live.contains(*t))
        .map(str::to_string)
        .collect()
}

/// The `/etc/hosts` of a bridge-mode task's containers.
pub fn hosts_file(hostname: &str, ip: Ipv4Addr) -> String {
    format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{ip}\t{hostname}\n")
}

/// Public resolvers for when the host has none a task can reach (Docker's
/// fallback too).
pub const FALLBACK_NAMESERVERS: [&str; 2] = ["8.8.8.8", "8.8.4.4"];

/// The `/etc/resolv.conf` of a bridge-mode task's containers, from the
/// host's. A loopback nameserver (systemd-resolved's 127.0.0.53, a local
/// dnsmasq) means nothing inside the task's netns, so those are dropped;
/// when none is left, systemd-resolved's list of upstream servers is used
/// when given, else `FALLBACK_NAMESERVERS`. `search` and `options` lines are
/// kept. Returns the text and whether the public fallback was used.
pub fn resolv_conf(host: &str, resolved_upstream: Option<&str>) -> (String, bool) {
    fn nameservers(text: &str) -> Vec<String> {
        text.lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                (f.next() == Some("nameserver")).then(|| f.next()).flatten()
            })
            .filter(|ns| {
                // A zone suffix (fe80::1%eth0) names a host interface.
                let addr = ns.split('%').next().unwrap_or(ns);
                match addr.parse::<IpAddr>() {
                    Ok(ip) => !ip.is_loopback() && !ns.contains('%'),
                    Err(_) => false,
                }
            })
            .map(str::to_string)
            .collect()
    }
    let others: Vec<&str> = host
        .lines()
        .filter(|l| {
            let first = l.split_whitespace().next();
            matches!(first, Some("search" | "domain" | "options"))
        })
        .collect();
    let mut servers = nameservers(host);
    if servers.is_empty() {
        servers = resolved_upstream.map(nameservers).unwrap_or_default();
    }
    let fallback = servers.is_empty();
    if fallback {
        servers = FALLBACK_NAMESERVERS.iter().map(|s| s.to_string()).collect();
    }
    let mut out = String::new();
    for l in others {
        out.push_str(l.trim());
        out.push('\n');
    }
    for s in servers {
        out.push_str("nameserver ");
        out.push_str(&s);
        out.push('\n');
    }
    (out, fallback)
}

/// The most nameservers a resolv.conf may name (glibc's and musl's MAXNS):
/// later ones would be ignored without a word.
pub const MAX_TASK_DNS: usize = 3;

/// Why `--task-dns` servers cannot serve tasks, if they cannot. Each must
/// be reachable from inside a task's network namespace, where loopback is
/// the task's own.
pub fn check_task_dns(servers: &[IpAddr]) -> Result<(), String> {
    if servers.len() > MAX_TASK_DNS {
        return Err(format!(
            "{} servers given: a resolv.conf takes at most {MAX_TASK_DNS}",
            servers.len()
        ));
    }
    for ip in servers {
        if ip.is_loopback() {
            return Err(format!(
                "{ip} is a loopback address, which inside a task's network namespace is the                  task itself: give an address of a host the tasks can route to (berthd                  --dns-listen on it, port 53)"
            ));
        }
        if ip.is_unspecified() || ip.is_multicast() {
            return Err(format!("{ip} cannot be a DNS server's address"));
        }
    }
    Ok(())
}

/// The `/etc/resolv.conf` of a bridge- or task-mode task's containers when
/// the agent has `--task-dns`: Berth's DNS servers only (berthd forwards
/// names outside `berth.` upstream itself), and `CLUSTER.berth` first in
/// the search list, so a bare service name (`web`) is
/// `web.CLUSTER.berth`. The host's search domains follow it (from its last
/// `search` or `domain` line: the one resolvers use) and its `options`
/// lines are kept. `cluster` is `None` for a container created before the
/// agent knew it (no label): then only the host's search domains.
pub fn berth_resolv_conf(host: &str, servers: &[IpAddr], cluster: Option<&str>) -> String {
    let host_search = host
        .lines()
        .rev()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            match f.next() {
                Some("search" | "domain") => Some(f.map(str::to_string).collect::<Vec<_>>()),
                _ => None,
            }
        })
        .unwrap_or_default();
    let mut search: Vec<String> = cluster.map(|c| format!("{c}.berth")).into_iter().collect();
    for d in host_search {
        if !search.iter().any(|s| s.eq_ignore_ascii_case(&d)) {
            search.push(d);
        }
    }
    let mut out = String::new();
    if !search.is_empty() {
        out.push_str("search ");
        out.push_str(&search.join(" "));
        out.push('\n');
    }
    for l in host.lines() {
        if l.split_whitespace().next() == Some("options") {
            out.push_str(l.trim());
            out.push('\n');
        }
    }
    for s in servers {
        out.push_str("nameserver ");
        out.push_str(&s.to_string());
        out.push('\n');
    }
    out
}

/// The task a netns or record file belongs to, from its name.
pub fn task_of_file(path: &Path, suffix: &str) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let task = name.strip_suffix(suffix)?;
    valid_task_id(task).then(|| task.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(firewall: bool) -> NetSettings {
        NetSettings {
            network_name: "berth".into(),
            bridge: "berth0".into(),
            subnet: "198.18.0.0/16".parse().expect("subnet"),
            ipam_dir: "/var/lib/berth-agent/cni/ipam".into(),
            firewall,
        }
    }

    fn binding(name: &str, container: u32, host: u32, protocol: Protocol) -> NetworkBinding {
        NetworkBinding {
            container_name: name.into(),
            container_port: container,
            host_port: host,
            protocol,
        }
    }

    #[test]
    fn subnets_parse_and_refuse() {
        let s: Subnet = "198.18.0.0/16".parse().expect("subnet");
        assert_eq!(s.to_string(), "198.18.0.0/16");
        assert!(s.contains(Ipv4Addr::new(198, 18, 3, 4)));
        assert!(!s.contains(Ipv4Addr::new(198, 19, 0, 1)));
        let err = "198.18.0.1/16".parse::<Subnet>().expect_err("host bits");
        assert!(err.contains("did you mean 198.18.0.0/16"), "{err}");
        assert!("198.18.0.0/31".parse::<Subnet>().is_err());
        assert!("198.18.0.0".parse::<Subnet>().is_err());
        assert!("fd00::/64".parse::<Subnet>().is_err());
        assert!("10.0.0.0/8".parse::<Subnet>().is_ok());
    }

    #[test]
    fn each_binding_becomes_a_port_mapping() {
        let m = port_mappings(&[
            binding("web", 8080, 32768, Protocol::Tcp),
            binding("web", 53, 5353, Protocol::Udp),
            binding("api", 8080, 8081, Protocol::Tcp),
        ])
        .expect("mappings");
        assert_eq!(
            m,
            vec![
                PortMapping {
                    host_port: 32768,
                    container_port: 8080,
                    protocol: "tcp".into()
                },
                PortMapping {
                    host_port: 5353,
                    container_port: 53,
                    protocol: "udp".into()
                },
                PortMapping {
                    host_port: 8081,
                    container_port: 8080,
                    protocol: "tcp".into()
                },
            ]
        );
        // The same host port for tcp and udp is two mappings.
        assert!(port_mappings(&[
            binding("a", 53, 53, Protocol::Tcp),
            binding("a", 53, 53, Protocol::Udp)
        ])
        .is_ok());
        let err = port_mappings(&[binding("a", 80, 0, Protocol::Tcp)]).expect_err("port 0");
        assert!(err.contains("host port 0"), "{err}");
        assert!(port_mappings(&[binding("a", 70000, 80, Protocol::Tcp)]).is_err());
        let err = port_mappings(&[
            binding("a", 80, 9000, Protocol::Tcp),
            binding("b", 81, 9000, Protocol::Tcp),
        ])
        .expect_err("twice");
        assert!(err.contains("9000/tcp"), "{err}");
    }

    #[test]
    fn chain_is_bridge_portmap_firewall() {
        let mappings =
            port_mappings(&[binding("web", 8080, 32768, Protocol::Tcp)]).expect("mappings");
        let chain = chain_configs(&settings(true), &mappings);
        let types: Vec<_> = chain.iter().filter_map(plugin_type).collect();
        assert_eq!(types, ["bridge", "portmap", "firewall"]);
        for conf in &chain {
            assert_eq!(conf["cniVersion"], CNI_VERSION);
            assert_eq!(conf["name"], "berth");
        }
        let bridge = &chain[0];
        assert_eq!(bridge["bridge"], "berth0");
        assert_eq!(bridge["isGateway"], true);
        assert_eq!(bridge["ipMasq"], true);
        assert_eq!(bridge["hairpinMode"], true);
        assert_eq!(bridge["ipam"]["type"], "host-local");
        assert_eq!(bridge["ipam"]["ranges"][0][0]["subnet"], "198.18.0.0/16");
        assert_eq!(bridge["ipam"]["dataDir"], "/var/lib/berth-agent/cni/ipam");
        let portmap = &chain[1];
        assert_eq!(portmap["snat"], true);
        assert_eq!(
            portmap["runtimeConfig"]["portMappings"],
            json!([{"hostPort": 32768, "containerPort": 8080, "protocol": "tcp"}])
        );
        let without = chain_configs(&settings(false), &mappings);
        assert_eq!(without.len(), 2);
    }

    #[test]
    fn del_runs_in_reverse_with_the_cached_result() {
        let chain = chain_configs(&settings(true), &[]);
        let result = json!({"cniVersion": CNI_VERSION, "ips": [{"address": "198.18.0.2/16"}]});
        let record = NetRecord {
            task_id: "t1".into(),
            netns: "/x/t1".into(),
            loopback: loopback_config(),
            chain,
            result: Some(result.clone()),
            complete: true,
        };
        let steps = del_steps(&record);
        let order: Vec<(&str, &str)> = steps
            .iter()
            .map(|s| (s.plugin.as_str(), s.ifname))
            .collect();
        assert_eq!(
            order,
            [
                ("firewall", "eth0"),
                ("portmap", "eth0"),
                ("bridge", "eth0"),
                ("loopback", "lo")
            ]
        );
        assert!(steps.iter().all(|s| s.command == Command::Del));
        for s in &steps[..3] {
            assert_eq!(s.stdin["prevResult"], result);
        }
        assert!(steps[3].stdin.get("prevResult").is_none());
        // Without a result (ADD cut short before the first one) DEL still
        // runs every plugin, with no prevResult.
        let record = NetRecord {
            result: None,
            ..record
        };
        assert!(del_steps(&record)
            .iter()
            .all(|s| s.stdin.get("prevResult").is_none()));
    }

    #[test]
    fn records_round_trip() {
        let record = NetRecord {
            task_id: "t1".into(),
            netns: "/x/t1".into(),
            loopback: loopback_config(),
            chain: chain_configs(&settings(false), &[]),
            result: None,
            complete: false,
        };
        let text = serde_json::to_string(&record).expect("json");
        let back: NetRecord = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, record);
    }

    #[test]
    fn results_give_the_task_address() {
        // As the bridge plugin 1.1.1 answers (portmap and firewall pass it on).
        let result = json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "berth0", "mac": "8e:04:68:56:18:78"},
                {"name": "veth05243bf8", "mac": "f6:66:b9:dc:fc:ba"},
                {"name": "eth0", "mac": "aa:b7:cb:2f:39:ba", "sandbox": "/x/netns/t1"}
            ],
            "ips": [{"interface": 2, "address": "198.18.0.2/16", "gateway": "198.18.0.1"}],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {}
        });
        let a = addressing(&result, "berth0").expect("addressing");
        assert_eq!(a.ip, Ipv4Addr::new(198, 18, 0, 2));
        assert_eq!(a.prefix, 16);
        assert_eq!(a.gateway, Some(Ipv4Addr::new(198, 18, 0, 1)));
        assert_eq!(a.host_veth.as_deref(), Some("veth05243bf8"));
        assert!(addressing(&json!({"ips": []}), "berth0").is_err());
        assert!(addressing(&json!({"ips": "x"}), "berth0").is_err());
        let stand_in = result_from_reservation(
            Ipv4Addr::new(198, 18, 0, 9),
            "198.18.0.0/16".parse().expect("s"),
        );
        assert_eq!(
            addressing(&stand_in, "berth0").expect("addr").ip,
            Ipv4Addr::new(198, 18, 0, 9)
        );
    }

    #[test]
    fn plugin_errors_read_well() {
        let out = br#"{"code": 11, "msg": "failed to set bridge addr", "details": "could not add IP address"}"#;
        assert_eq!(
            plugin_error(out, b"", "exit status: 1"),
            "failed to set bridge addr: could not add IP address (CNI error 11)"
        );
        assert_eq!(
            plugin_error(b"", b"boom\n", "exit status: 2"),
            "exited with exit status: 2: boom"
        );
        assert_eq!(
            plugin_error(b"junk", b"", "signal 9"),
            "exited with signal 9"
        );
    }

    #[test]
    fn task_ids_and_reservations() {
        assert!(valid_task_id("t0123abcd"));
        assert!(valid_task_id("a.b_c-d"));
        assert!(!valid_task_id(""));
        assert!(!valid_task_id(".hidden"));
        assert!(!valid_task_id("a/b"));
        assert!(!valid_task_id(&"a".repeat(129)));
        assert_eq!(
            reservation_owner("198.18.0.7", "t1\r\neth0"),
            Some((Ipv4Addr::new(198, 18, 0, 7), "t1".into()))
        );
        assert_eq!(reservation_owner("last_reserved_ip.0", "198.18.0.7"), None);
        assert_eq!(reservation_owner("lock", ""), None);
        assert_eq!(
            task_of_file(Path::new("/s/cni/tasks/t1.json"), ".json").as_deref(),
            Some("t1")
        );
        assert_eq!(
            task_of_file(Path::new("/s/cni/tasks/t1.json.tmp"), ".json"),
            None
        );
        assert_eq!(
            task_of_file(Path::new("/s/netns/t2"), "").as_deref(),
            Some("t2")
        );
    }

    #[test]
    fn sweep_takes_what_no_container_holds() {
        let live: HashSet<String> = ["alive".to_string()].into();
        let sweep = to_sweep(
            ["alive", "gone-record"],
            ["alive", "gone-netns", "gone-record"],
            ["alive", "gone-ip"],
            &live,
        );
        let sweep: Vec<&str> = sweep.iter().map(String::as_str).collect();
        assert_eq!(sweep, ["gone-ip", "gone-netns", "gone-record"]);
        assert!(to_sweep([], [], [], &live).is_empty());
    }

    #[test]
    fn hosts_and_resolv_conf() {
        let hosts = hosts_file("t0123", Ipv4Addr::new(198, 18, 0, 2));
        assert!(hosts.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(hosts.ends_with("198.18.0.2\tt0123\n"));

        let host = "# comment\nnameserver 10.0.0.2\nnameserver 127.0.0.1\nsearch example.org\noptions ndots:2\n";
        let (text, fallback) = resolv_conf(host, None);
        assert!(!fallback);
        assert_eq!(
            text,
            "search example.org\noptions ndots:2\nnameserver 10.0.0.2\n"
        );

        // systemd-resolved's stub: its upstream list is used.
        let stub = "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n";
        let upstream = "nameserver 192.168.1.1\nnameserver fe80::1%eth0\nnameserver 2001:db8::53\n";
        let (text, fallback) = resolv_conf(stub, Some(upstream));
        assert!(!fallback);
        assert_eq!(
            text,
            "options edns0 trust-ad\nsearch lan\nnameserver 192.168.1.1\nnameserver 2001:db8::53\n"
        );

        // Nothing usable anywhere: the public fallback.
        let (text, fallback) = resolv_conf("nameserver ::1\n", Some("nameserver 127.0.0.1\n"));
        assert!(fallback);
        assert_eq!(text, "nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
    }

    #[test]
    fn berth_dns_resolv_conf_searches_the_cluster_first() {
        let servers: Vec<IpAddr> = vec![
            "10.0.0.5".parse().expect("ip"),
            "2001:db8::5".parse().expect("ip"),
        ];
        let host =
            "nameserver 10.0.0.2\nsearch old.example\ndomain corp.example\noptions ndots:2 edns0\n";
        assert_eq!(
            berth_resolv_conf(host, &servers, Some("prod")),
            "search prod.berth corp.example\noptions ndots:2 edns0\n\
             nameserver 10.0.0.5\nnameserver 2001:db8::5\n",
            "only Berth's servers; the host's last search line after the cluster's"
        );
        assert_eq!(
            berth_resolv_conf("search prod.berth lan\n", &servers[..1], Some("prod")),
            "search prod.berth lan\nnameserver 10.0.0.5\n",
            "no domain twice"
        );
        assert_eq!(
            berth_resolv_conf("nameserver 10.0.0.2\n", &servers[..1], None),
            "nameserver 10.0.0.5\n",
            "no cluster known, no host search: no search line"
        );
    }

    #[test]
    fn task_dns_servers_must_be_reachable_from_a_task() {
        let ip = |s: &str| -> IpAddr { s.parse().expect("ip") };
        assert_eq!(check_task_dns(&[]), Ok(()));
        assert_eq!(check_task_dns(&[ip("198.18.80.1"), ip("10.0.0.5")]), Ok(()));
        let err = check_task_dns(&[ip("127.0.0.1")]).expect_err("loopback");
        assert!(
            err.contains("loopback") && err.contains("--dns-listen"),
            "{err}"
        );
        assert!(check_task_dns(&[ip("::1")]).is_err());
        assert!(check_task_dns(&[ip("0.0.0.0")]).is_err());
        assert!(check_task_dns(&[ip("224.0.0.251")]).is_err());
        let four = [
            ip("10.0.0.1"),
            ip("10.0.0.2"),
            ip("10.0.0.3"),
            ip("10.0.0.4"),
        ];
        let err = check_task_dns(&four).expect_err("too many");
        assert!(err.contains("at most 3"), "{err}");
    }
}
