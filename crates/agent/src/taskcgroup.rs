//! One cgroup per task, holding its containers' cgroups, with the task's
//! `cpu` and `memory` as its limits (as ECS does): the scheduler reserves a
//! task's cpu and memory once, so the host must enforce them once, for all
//! of the task's containers together, not once per container.
//!
//! The layout under the cgroup root (cgroup v2) or under each controller's
//! hierarchy (v1) is `/<namespace>/task-<task id>/<container id>`. runc
//! creates and removes the containers' cgroups; the agent creates the task's
//! (after the first container's record exists, so that `sweep` can tell a
//! task cgroup in use from one left behind) and removes it with the task's
//! last container, or at the next start when it was left behind.

use std::path::{Path, PathBuf};

use tracing::{info, warn};

/// The CFS period the task's CPU quota is expressed in.
const CFS_PERIOD_US: u64 = 100_000;
const PREFIX: &str = "task-";

/// A task's limits: ECS CPU units (1024 = one core) and MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TaskLimits {
    pub cpu_units: Option<u32>,
    pub memory_mib: Option<u32>,
}

impl TaskLimits {
    /// The CFS quota for the CPU units, in microseconds per period.
    pub fn cpu_quota_us(&self) -> Option<u64> {
        self.cpu_units
            .filter(|u| *u > 0)
            .map(|u| (u64::from(u) * CFS_PERIOD_US / 1024).max(1000))
    }

    pub fn memory_bytes(&self) -> Option<u64> {
        self.memory_mib
            .filter(|m| *m > 0)
            .map(|m| u64::from(m) << 20)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroups {
    /// The unified hierarchy mounted here.
    V2(PathBuf),
    /// Each v1 hierarchy: its mount point and whether it holds the memory
    /// and cpu controllers.
    V1(Vec<V1Hierarchy>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Hierarchy {
    pub mount: PathBuf,
    pub memory: bool,
    pub cpu: bool,
}

/// The directory name of a task's cgroup.
pub fn task_dir(task_id: &str) -> String {
    let clean: String = task_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{PREFIX}{clean}")
}

/// The `cgroupsPath` of a container of the task.
pub fn container_path(namespace: &str, task_id: &str, container_id: &str) -> String {
    format!("/{namespace}/{}/{container_id}", task_dir(task_id))
}

impl Cgroups {
    /// How this host mounts cgroups, from /proc/self/mountinfo (as runc
    /// decides it: cgroup2 at /sys/fs/cgroup is v2, else the v1 mounts).
    pub fn detect() -> Result<Self, String> {
        let text = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
        Self::parse_mountinfo(&text)
    }

    pub fn parse_mountinfo(text: &str) -> Result<Self, String> {
        let mut v1 = Vec::new();
        for line in text.lines() {
            // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [TAGS...] - FSTYPE SOURCE SUPEROPTS
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mount = left.split_whitespace().nth(4).unwrap_or_default();
            let mut right = right.split_whitespace();
            let fstype = right.next().unwrap_or_default();
            let super_opts = right.nth(1).unwrap_or_default();
            if fstype == "cgroup2" && mount == "/sys/fs/cgroup" {
                return Ok(Cgroups::V2(PathBuf::from(mount)));
            }
            if fstype == "cgroup2" {
                // The hybrid layout's unified hierarchy, e.g. at
                // /sys/fs/cgroup/unified: runc makes the task's directory
                // there too, so it is removed there too.
                v1.push(V1Hierarchy {
                    mount: PathBuf::from(mount),
                    memory: false,
                    cpu: false,
                });
            } else if fstype == "cgroup" {
                let opts: Vec<&str> = super_opts.split(',').collect();
                v1.push(V1Hierarchy {
                    mount: PathBuf::from(mount),
                    memory: opts.contains(&"memory"),
                    cpu: opts.contains(&"cpu"),
                });
            }
        }
        if v1.is_empty() {
            return Err(
                "no cgroup hierarchy is mounted (neither cgroup2 at /sys/fs/cgroup nor \
                        cgroup v1 controllers)"
                    .into(),
            );
        }
        Ok(Cgroups::V1(v1))
    }

    /// Creates the task's cgroup (idempotent) and sets its limits.
    pub fn ensure(&self, namespace: &str, task_id: &str, limits: TaskLimits) -> Result<(), String> {
        let dir = task_dir(task_id);
        match self {
            Cgroups::V2(root) => {
                let ns = root.join(namespace);
                let task = ns.join(&dir);
                mkdir(&ns)?;
                enable_controllers(root)?;
                enable_controllers(&ns)?;
                mkdir(&task)?;
                if let Some(bytes) = limits.memory_bytes() {
                    write(&task.join("memory.max"), &bytes.to_string())?;
                    // No swap beyond the limit, as for a container's.
                    write_if_present(&task.join("memory.swap.max"), "0")?;
                }
                if let Some(quota) = limits.cpu_quota_us() {
                    write(&task.join("cpu.max"), &format!("{quota} {CFS_PERIOD_US}"))?;
                }
                enable_controllers(&task)
            }
            Cgroups::V1(hierarchies) => {
                let mut memory_done = limits.memory_bytes().is_none();
                let mut cpu_done = limits.cpu_quota_us().is_none();
                for h in hierarchies.iter().filter(|h| h.memory || h.cpu) {
                    let task = h.mount.join(namespace).join(&dir);
                    mkdir(&task)?;
                    if h.memory {
                        if let Some(bytes) = limits.memory_bytes() {
                            write(&task.join("memory.limit_in_bytes"), &bytes.to_string())?;
                            // memory+swap may not be below memory alone;
                            // absent without swap accounting.
                            write_if_present(
                                &task.join("memory.memsw.limit_in_bytes"),
                                &bytes.to_string(),
                            )?;
                            memory_done = true;
                        }
                    }
                    if h.cpu {
                        if let Some(quota) = limits.cpu_quota_us() {
                            write(&task.join("cpu.cfs_period_us"), &CFS_PERIOD_US.to_string())?;
                            write(&task.join("cpu.cfs_quota_us"), &quota.to_string())?;
                            cpu_done = true;
                        }
                    }
                }
                if !memory_done {
                    return Err("the memory cgroup controller is not mounted".into());
                }
                if !cpu_done {
                    return Err("the cpu cgroup controller is not mounted".into());
                }
                Ok(())
            }
        }
    }

    /// Removes the task's cgroup; its containers' cgroups must be gone
    /// (runc removes them with the container's process). Missing is fine.
    pub fn remove(&self, namespace: &str, task_id: &str) -> Result<(), String> {
        self.remove_dir(namespace, &task_dir(task_id))
    }

    fn remove_dir(&self, namespace: &str, dir: &str) -> Result<(), String> {
        let mut first_error = None;
        for mount in self.mounts() {
            let path = mount.join(namespace).join(dir);
            match std::fs::remove_dir(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    first_error.get_or_insert(format!("cannot remove {}: {e}", path.display()));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The task cgroup directory names under `namespace`, in any hierarchy.
    pub fn task_dirs(&self, namespace: &str) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for mount in self.mounts() {
            let Ok(entries) = std::fs::read_dir(mount.join(namespace)) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(PREFIX)
                    && e.file_type().is_ok_and(|t| t.is_dir())
                    && !names.contains(&name)
                {
                    names.push(name);
                }
            }
        }
        names
    }

    /// Removes those of `dirs` (from `task_dirs`) that no live task needs.
    /// `live_tasks` must be listed after `dirs` was (the agent
    /// creates a task's cgroup only after the container record exists), so
    /// a cgroup being set up for a new container is never taken for a
    /// leftover.
    pub fn sweep(&self, namespace: &str, dirs: Vec<String>, live_tasks: &[String]) {
        let live: Vec<String> = live_tasks.iter().map(|t| task_dir(t)).collect();
        for dir in dirs.into_iter().filter(|d| !live.contains(d)) {
            match self.remove_dir(namespace, &dir) {
                Ok(()) => info!(cgroup = %dir, "removed a task cgroup left behind"),
                Err(e) => {
                    warn!(cgroup = %dir, error = %e, "cannot remove a task cgroup left behind")
                }
            }
        }
    }

    /// Where the task's cgroup holds its memory limit (for tests and tools).
    pub fn memory_limit_file(&self, namespace: &str, task_id: &str) -> Option<PathBuf> {
        let dir = task_dir(task_id);
        match self {
            Cgroups::V2(root) => Some(root.join(namespace).join(dir).join("memory.max")),
            Cgroups::V1(hs) => hs.iter().find(|h| h.memory).map(|h| {
                h.mount
                    .join(namespace)
                    .join(dir)
                    .join("memory.limit_in_bytes")
            }),
        }
    }

    /// Where the task's cgroup holds its CPU quota.
    pub fn cpu_quota_file(&self, namespace: &str, task_id: &str) -> Option<PathBuf> {
        let dir = task_dir(task_id);
        match self {
            Cgroups::V2(root) => Some(root.join(namespace).join(dir).join("cpu.max")),
            Cgroups::V1(hs) => hs
                .iter()
                .find(|h| h.cpu)
                .map(|h| h.mount.join(namespace).join(dir).join("cpu.cfs_quota_us")),
        }
    }

    /// Every directory the task's cgroup may have (one per v1 hierarchy).
    pub fn task_paths(&self, namespace: &str, task_id: &str) -> Vec<PathBuf> {
        let dir = task_dir(task_id);
        self.mounts()
            .into_iter()
            .map(|m| m.join(namespace).join(&dir))
            .collect()
    }

    fn mounts(&self) -> Vec<PathBuf> {
        match self {
            Cgroups::V2(root) => vec![root.clone()],
            Cgroups::V1(hs) => hs.iter().map(|h| h.mount.clone()).collect(),
        }
    }
}

fn mkdir(path: &Path) -> Result<(), String> {
    std::fs::create_dir_all(path).map_err(|e| format!("cannot create {}: {e}", path.display()))
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value)
        .map_err(|e| format!("cannot write {value:?} to {}: {e}", path.display()))
}

fn write_if_present(path: &Path, value: &str) -> Result<(), String> {
    if path.exists() {
        write(path, value)
    } else {
        Ok(())
    }
}

/// Lets the children of a v2 cgroup use the memory, cpu and pids
/// controllers, those of them the cgroup has.
fn enable_controllers(dir: &Path) -> Result<(), String> {
    let available = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let enabled = std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
    for c in ["memory", "cpu", "pids"] {
        let has = |text: &str| text.split_whitespace().any(|x| x == c);
        if has(&available) && !has(&enabled) {
            write(&dir.join("cgroup.subtree_control"), &format!("+{c}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_are_read_from_mountinfo() {
        let v1 = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                  32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:5 - cgroup cgroup rw,cpu,cpuacct\n\
                  35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                  40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n\
                  41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            Cgroups::parse_mountinfo(v1),
            Ok(Cgroups::V1(vec![
                V1Hierarchy {
                    mount: "/sys/fs/cgroup/cpu,cpuacct".into(),
                    memory: false,
                    cpu: true
                },
                V1Hierarchy {
                    mount: "/sys/fs/cgroup/memory".into(),
                    memory: true,
                    cpu: false
                },
                V1Hierarchy {
                    mount: "/sys/fs/cgroup/systemd".into(),
                    memory: false,
                    cpu: false
                },
                V1Hierarchy {
                    mount: "/sys/fs/cgroup/unified".into(),
                    memory: false,
                    cpu: false
                },
            ]))
        );
        let v2 = "25 20 0:22 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            Cgroups::parse_mountinfo(v2),
            Ok(Cgroups::V2("/sys/fs/cgroup".into()))
        );
        assert!(Cgroups::parse_mountinfo("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n").is_err());
    }

    #[test]
    fn limits_and_paths() {
        let l = TaskLimits {
            cpu_units: Some(512),
            memory_mib: Some(512),
        };
        assert_eq!(l.cpu_quota_us(), Some(50_000));
        assert_eq!(l.memory_bytes(), Some(512 << 20));
        assert_eq!(TaskLimits::default().cpu_quota_us(), None);
        assert_eq!(
            TaskLimits {
                cpu_units: Some(1),
                memory_mib: Some(0)
            }
            .cpu_quota_us(),
            Some(1000)
        );
        assert_eq!(
            container_path("berth", "a/b:c", "a-b-c-web"),
            "/berth/task-a-b-c/a-b-c-web"
        );
    }

    /// A v2 layout in a temp dir: the limits' files and their format.
    #[test]
    fn v2_limits_on_plain_directories() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cg = Cgroups::V2(dir.path().to_path_buf());
        let limits = TaskLimits {
            cpu_units: Some(2048),
            memory_mib: Some(512),
        };
        cg.ensure("ns", "t1", limits).expect("ensure");
        let read = |p: Option<PathBuf>| std::fs::read_to_string(p.expect("file")).expect("read");
        assert_eq!(
            read(cg.memory_limit_file("ns", "t1")),
            (512u64 << 20).to_string()
        );
        assert_eq!(read(cg.cpu_quota_file("ns", "t1")), "200000 100000");
        assert_eq!(cg.task_dirs("ns"), vec!["task-t1"]);
        assert_eq!(
            cg.task_paths("ns", "t1"),
            vec![dir.path().join("ns/task-t1")]
        );
    }

    /// A v1 layout in a temp dir (plain directories stand in for the
    /// hierarchies): limits land in the right files and sweep keeps live
    /// tasks.
    #[test]
    fn v1_limits_and_sweep_on_plain_directories() {
        let dir = tempfile::tempdir().expect("tempdir");
        let h = |name: &str, memory, cpu| V1Hierarchy {
            mount: dir.path().join(name),
            memory,
            cpu,
        };
        let cg = Cgroups::V1(vec![
            h("memory", true, false),
            h("cpu", false, true),
            h("pids", false, false),
        ]);
        let limits = TaskLimits {
            cpu_units: Some(256),
            memory_mib: Some(64),
        };
        cg.ensure("ns", "t1", limits).expect("ensure");
        let read = |p: Option<PathBuf>| std::fs::read_to_string(p.expect("file")).expect("read");
        assert_eq!(
            read(cg.memory_limit_file("ns", "t1")),
            (64u64 << 20).to_string()
        );
        assert_eq!(read(cg.cpu_quota_file("ns", "t1")), "25000");
        cg.ensure("ns", "t2", TaskLimits::default())
            .expect("ensure");
        // runc made the task's directory in another hierarchy too.
        std::fs::create_dir_all(dir.path().join("pids/ns/task-t3")).expect("mkdir");
        let mut dirs = cg.task_dirs("ns");
        dirs.sort();
        assert_eq!(dirs, vec!["task-t1", "task-t2", "task-t3"]);
        cg.sweep("ns", dirs, &["t1".to_string()]);
        assert_eq!(cg.task_dirs("ns"), vec!["task-t1"]);
        let missing = Cgroups::V1(vec![h("pids", false, false)]);
        assert!(missing
            .ensure("ns", "t4", limits)
            .is_err_and(|e| e.contains("memory cgroup controller")));
    }
}
