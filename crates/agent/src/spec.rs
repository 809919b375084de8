//! The OCI runtime spec for a container: containerd's usual defaults (the
//! ones `ctr run` and nerdctl start from) plus what the task definition asks
//! for. Pure: the caller resolves paths, users and the image config first.

use std::collections::BTreeMap;

use berth_types::{ContainerDefinition, NetworkMode};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{Result, RuntimeError};

pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The part of an OCI image config a container starts from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ImageRunConfig {
    #[serde(rename = "Env", default)]
    pub env: Option<Vec<String>>,
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    pub working_dir: Option<String>,
    #[serde(rename = "User", default)]
    pub user: Option<String>,
}

/// A bind mount from the host, already resolved to a host path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub source: String,
    pub destination: String,
    pub read_only: bool,
}

#[derive(Debug, Clone)]
pub struct SpecInput<'a> {
    pub definition: &'a ContainerDefinition,
    pub image: &'a ImageRunConfig,
    pub network_mode: NetworkMode,
    /// Bridge mode: the task's network namespace (`crate::tasknet`), which
    /// every container of the task joins.
    pub netns: Option<String>,
    pub hostname: String,
    pub binds: Vec<BindMount>,
    /// Under the task's cgroup, which holds the task-level limits
    /// (`crate::taskcgroup`).
    pub cgroups_path: String,
    /// Most processes (threads count) the container may have; `None` for
    /// no limit.
    pub pids_limit: Option<u32>,
    pub uid: u32,
    pub gid: u32,
}

/// Docker's rules, which ECS follows: an entrypoint in the task definition
/// replaces the image's and drops the image's cmd; a command replaces the
/// image's cmd.
pub fn process_args(def: &ContainerDefinition, image: &ImageRunConfig) -> Result<Vec<String>> {
    let entrypoint = if def.entry_point.is_empty() {
        image.entrypoint.clone().unwrap_or_default()
    } else {
        def.entry_point.clone()
    };
    let cmd = if !def.command.is_empty() {
        def.command.clone()
    } else if def.entry_point.is_empty() {
        image.cmd.clone().unwrap_or_default()
    } else {
        Vec::new()
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(RuntimeError::InvalidConfig {
            container: def.name.clone(),
            reason: "neither the task definition nor the image sets an entrypoint or command"
                .into(),
        });
    }
    Ok(args)
}

/// Image env first, the task definition's on top; a key keeps its first
/// position so the order stays stable.
pub fn merge_env(image_env: &[String], def: &ContainerDefinition, hostname: &str) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    fn put(order: &mut Vec<String>, values: &mut BTreeMap<String, String>, k: &str, v: &str) {
        if values.insert(k.to_string(), v.to_string()).is_none() {
            order.push(k.to_string());
        }
    }
    put(&mut order, &mut values, "HOSTNAME", hostname);
    for entry in image_env {
        let (k, v) = entry.split_once('=').unwrap_or((entry.as_str(), ""));
        put(&mut order, &mut values, k, v);
    }
    for kv in &def.environment {
        put(&mut order, &mut values, &kv.name, &kv.value);
    }
    if !values.contains_key("PATH") {
        let (k, v) = DEFAULT_PATH.split_once('=').unwrap_or(("PATH", ""));
        values.insert(k.to_string(), v.to_string());
        order.push(k.to_string());
    }
    order
        .into_iter()
        .map(|k| {
            let v = values.get(&k).cloned().unwrap_or_default();
            format!("{k}={v}")
        })
        .collect()
}

/// ECS CPU units map one to one onto cgroup v1 shares (1024 = one core);
/// the kernel's floor is 2.
pub fn cpu_shares(units: u32) -> u64 {
    u64::from(units.max(2))
}

/// Default capabilities of containerd's default spec (and Docker's). The
/// seccomp profile (`crate::seccomp`) is written for exactly these.
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];

const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

pub fn build_spec(input: &SpecInput<'_>) -> Result<Value> {
    let def = input.definition;
    let args = process_args(def, input.image)?;
    let env = merge_env(
        input.image.env.as_deref().unwrap_or_default(),
        def,
        &input.hostname,
    );
    let cwd = def
        .working_directory
        .clone()
        .filter(|w| !w.is_empty())
        .or_else(|| input.image.working_dir.clone().filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".to_string());
    if !cwd.starts_with('/') {
        return Err(RuntimeError::InvalidConfig {
            container: def.name.clone(),
            reason: format!("workingDirectory {cwd:?} must be an absolute path"),
        });
    }

    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
    ];
    // Without its own network namespace a container may not mount a fresh
    // sysfs (the kernel ties sysfs to the netns), so host networking gets
    // the host's /sys bound read-only, as Docker does. `none` and `bridge`
    // have a netns of their own (bridge: the task's).
    if input.network_mode == NetworkMode::Host {
        mounts.push(
            json!({"destination": "/sys", "type": "bind", "source": "/sys",
                           "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}),
        );
    } else {
        mounts.push(
            json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
                           "options": ["nosuid", "noexec", "nodev", "ro"]}),
        );
        mounts.push(
            json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                           "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
        );
    }
    mounts.push(
        json!({"destination": "/run", "type": "tmpfs", "source": "tmpfs",
                       "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
    );
    for b in &input.binds {
        let mut options = vec!["rbind", "rprivate"];
        options.push(if b.read_only { "ro" } else { "rw" });
        mounts.push(json!({"destination": b.destination, "type": "bind",
                           "source": b.source, "options": options}));
    }

    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    match input.network_mode {
        NetworkMode::Host => {}
        NetworkMode::None => namespaces.push(json!({"type": "network"})),
        NetworkMode::Bridge | NetworkMode::Task => {
            let path = input
                .netns
                .as_deref()
                .ok_or_else(|| RuntimeError::InvalidConfig {
                    container: def.name.clone(),
                    reason: format!(
                        "{} network mode without the task's network namespace",
                        input.network_mode.as_str()
                    ),
                })?;
            namespaces.push(json!({"type": "network", "path": path}));
        }
    }

    let mut memory = serde_json::Map::new();
    if let Some(mib) = def.memory {
        let bytes = i64::from(mib) << 20;
        memory.insert("limit".into(), json!(bytes));
        // No swap beyond the limit, as ECS does: the limit is the limit.
        memory.insert("swap".into(), json!(bytes));
    }
    if let Some(mib) = def.memory_reservation {
        memory.insert("reservation".into(), json!(i64::from(mib) << 20));
    }
    let mut cpu = serde_json::Map::new();
    cpu.insert("shares".into(), json!(cpu_shares(def.cpu)));
    let mut resources = json!({
        "devices": [{"allow": false, "access": "rwm"}],
        "memory": memory,
        "cpu": cpu,
    });
    if let Some(limit) = input.pids_limit {
        resources["pids"] = json!({"limit": i64::from(limit)});
    }

    Ok(json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": false,
            "user": {"uid": input.uid, "gid": input.gid},
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {
                "bounding": DEFAULT_CAPS,
                "effective": DEFAULT_CAPS,
                "permitted": DEFAULT_CAPS,
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true,
        },
        "root": {"path": "rootfs", "readonly": def.readonly_root_filesystem},
        "hostname": input.hostname,
        "mounts": mounts,
        "linux": {
            "resources": resources,
            "cgroupsPath": input.cgroups_path,
            "namespaces": namespaces,
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
            "seccomp": crate::seccomp::default_profile(),
        },
    }))
}

/// Resolve `user` (`uid`, `uid:gid`, `name`, `name:group`) against the
/// image's /etc/passwd and /etc/group text, as runc's user lookup does.
pub fn resolve_user(user: &str, passwd: Option<&str>, group: Option<&str>) -> Result<(u32, u32)> {
    let bad = |why: String| RuntimeError::InvalidConfig {
        container: String::new(),
        reason: why,
    };
    if user.is_empty() {
        return Ok((0, 0));
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd_entry = |name: &str| -> Option<(u32, u32)> {
        passwd?.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 4 && f[0] == name)
                .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
                .flatten()
        })
    };
    let (uid, default_gid) = match u.parse::<u32>() {
        Ok(uid) => (uid, passwd_entry_by_uid(passwd, uid).unwrap_or(0)),
        Err(_) => passwd_entry(u).ok_or_else(|| {
            bad(format!(
                "user {u:?} is not in the image's /etc/passwd; use a numeric uid[:gid]"
            ))
        })?,
    };
    let gid = match g {
        None => default_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group
                .and_then(|text| {
                    text.lines().find_map(|l| {
                        let f: Vec<&str> = l.split(':').collect();
                        (f.len() >= 3 && f[0] == g)
                            .then(|| f[2].parse().ok())
                            .flatten()
                    })
                })
                .ok_or_else(|| {
                    bad(format!(
                        "group {g:?} is not in the image's /etc/group; use a numeric gid"
                    ))
                })?,
        },
    };
    Ok((uid, gid))
}

fn passwd_entry_by_uid(passwd: Option<&str>, uid: u32) -> Option<u32> {
    passwd?.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[2].parse::<u32>().ok() == Some(uid))
            .then(|| f[3].parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_types::KeyValuePair;

    fn image() -> ImageRunConfig {
        ImageRunConfig {
            env: Some(vec!["PATH=/bin".into(), "A=image".into(), "B=image".into()]),
            entrypoint: Some(vec!["/app".into()]),
            cmd: Some(vec!["serve".into()]),
            working_dir: Some("/srv".into()),
            user: None,
        }
    }

    fn input<'a>(def: &'a ContainerDefinition, img: &'a ImageRunConfig) -> SpecInput<'a> {
        SpecInput {
            definition: def,
            image: img,
            network_mode: NetworkMode::Host,
            netns: None,
            hostname: "h".into(),
            binds: vec![],
            cgroups_path: "/berth/x".into(),
            pids_limit: Some(4096),
            uid: 0,
            gid: 0,
        }
    }

    #[test]
    fn args_follow_docker_rules() {
        let img = image();
        let mut def = ContainerDefinition::new("c", "i");
        assert_eq!(
            process_args(&def, &img).ok(),
            Some(vec!["/app".into(), "serve".into()])
        );
        def.command = vec!["exit".into(), "3".into()];
        assert_eq!(
            process_args(&def, &img).ok(),
            Some(vec!["/app".into(), "exit".into(), "3".into()])
        );
        def.command.clear();
        def.entry_point = vec!["/other".into()];
        assert_eq!(process_args(&def, &img).ok(), Some(vec!["/other".into()]));
        let empty = ImageRunConfig::default();
        let def = ContainerDefinition::new("c", "i");
        assert!(process_args(&def, &empty).is_err());
    }

    #[test]
    fn env_merges_with_task_definition_winning() {
        let mut def = ContainerDefinition::new("c", "i");
        def.environment = vec![KeyValuePair {
            name: "B".into(),
            value: "task".into(),
        }];
        let env = merge_env(&image().env.unwrap_or_default(), &def, "h");
        assert_eq!(env, vec!["HOSTNAME=h", "PATH=/bin", "A=image", "B=task"]);
        let env = merge_env(&[], &def, "h");
        assert!(env.iter().any(|e| e.starts_with("PATH=/usr/local/sbin")));
    }

    #[test]
    fn limits_and_defaults() {
        let img = image();
        let mut def = ContainerDefinition::new("c", "i");
        def.cpu = 512;
        def.memory = Some(64);
        def.memory_reservation = Some(32);
        def.readonly_root_filesystem = true;
        let mut inp = input(&def, &img);
        let spec = build_spec(&inp).expect("spec");
        let res = &spec["linux"]["resources"];
        assert_eq!(res["cpu"]["shares"], 512);
        // The task's quota is its cgroup's, not each container's.
        assert!(res["cpu"].get("quota").is_none());
        assert_eq!(res["memory"]["limit"], 64 << 20);
        assert_eq!(res["memory"]["reservation"], 32 << 20);
        assert_eq!(spec["root"]["readonly"], true);
        assert_eq!(res["pids"]["limit"], 4096);
        assert_eq!(
            spec["linux"]["seccomp"],
            crate::seccomp::default_profile(),
            "every container runs under the default seccomp profile"
        );
        assert_eq!(spec["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(spec["process"]["cwd"], "/srv");
        let ns = spec["linux"]["namespaces"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            !ns.iter().any(|n| n["type"] == "network"),
            "host networking"
        );
        assert!(spec["linux"]["maskedPaths"]
            .as_array()
            .is_some_and(|m| m.iter().any(|p| p == "/proc/kcore")));
        inp.network_mode = NetworkMode::None;
        let spec = build_spec(&inp).expect("spec");
        let ns = spec["linux"]["namespaces"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(ns
            .iter()
            .any(|n| n["type"] == "network" && n.get("path").is_none()));

        // Bridge: the task's netns, and a sysfs of its own as with none.
        inp.network_mode = NetworkMode::Bridge;
        assert!(build_spec(&inp).is_err(), "bridge needs the task's netns");
        inp.netns = Some("/var/lib/berth-agent/netns/t1".into());
        let spec = build_spec(&inp).expect("spec");
        let ns = spec["linux"]["namespaces"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(ns
            .iter()
            .any(|n| n["type"] == "network" && n["path"] == "/var/lib/berth-agent/netns/t1"));
        let mounts = spec["mounts"].as_array().cloned().unwrap_or_default();
        assert!(mounts
            .iter()
            .any(|m| m["destination"] == "/sys" && m["type"] == "sysfs"));
    }

    #[test]
    fn no_pids_limit_when_disabled() {
        let img = image();
        let def = ContainerDefinition::new("c", "i");
        let mut inp = input(&def, &img);
        inp.pids_limit = None;
        let spec = build_spec(&inp).expect("spec");
        assert!(spec["linux"]["resources"].get("pids").is_none());
    }

    #[test]
    fn users_resolve() {
        let passwd = "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n";
        let group = "root:x:0:\nstaff:x:50:\n";
        assert_eq!(resolve_user("", None, None).ok(), Some((0, 0)));
        assert_eq!(resolve_user("1000", None, None).ok(), Some((1000, 0)));
        assert_eq!(
            resolve_user("1000", Some(passwd), None).ok(),
            Some((1000, 1001))
        );
        assert_eq!(
            resolve_user("app", Some(passwd), None).ok(),
            Some((1000, 1001))
        );
        assert_eq!(
            resolve_user("app:staff", Some(passwd), Some(group)).ok(),
            Some((1000, 50))
        );
        assert_eq!(resolve_user("5:6", None, None).ok(), Some((5, 6)));
        assert!(resolve_user("nobody", Some(passwd), None).is_err());
    }
}
