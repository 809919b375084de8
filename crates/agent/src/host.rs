//! Facts about this host that the agent tells the control plane in its
//! hello: CPU units, memory, and the attributes placement can match on.

use std::collections::BTreeMap;

/// CPU units per core, as ECS counts them.
pub const UNITS_PER_CORE: u32 = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    /// CPU units (1024 = one core).
    pub cpu_total: u32,
    pub memory_total_mib: u32,
    /// `os`, `arch`, `hostname`, `containerd.version`, then the operator's
    /// `--attribute`s (which win over the detected ones of the same name).
    pub attributes: BTreeMap<String, String>,
}

impl HostInfo {
    pub fn detect(containerd_version: &str, extra: &BTreeMap<String, String>) -> Self {
        let mut attributes = BTreeMap::from([
            ("os".to_string(), std::env::consts::OS.to_string()),
            ("arch".to_string(), crate::host_arch()),
            ("hostname".to_string(), hostname()),
        ]);
        if !containerd_version.is_empty() {
            attributes.insert(
                "containerd.version".to_string(),
                containerd_version.to_string(),
            );
        }
        for (k, v) in extra {
            attributes.insert(k.clone(), v.clone());
        }
        HostInfo {
            cpu_total: cpu_units(),
            memory_total_mib: memory_total_mib(),
            attributes,
        }
    }
}

/// The CPUs this process may use (affinity and cgroup quota included),
/// in CPU units.
pub fn cpu_units() -> u32 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    u32::try_from(cores)
        .unwrap_or(u32::MAX)
        .saturating_mul(UNITS_PER_CORE)
}

/// MemTotal from /proc/meminfo, in MiB; 0 when it cannot be read.
pub fn memory_total_mib() -> u32 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| parse_meminfo_total_mib(&text))
        .unwrap_or(0)
}

pub fn parse_meminfo_total_mib(text: &str) -> Option<u32> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line
        .trim_start_matches("MemTotal:")
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(u32::try_from(kib / 1024).unwrap_or(u32::MAX))
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo() {
        let text = "MemTotal:        8029624 kB\nMemFree:         1234 kB\n";
        assert_eq!(parse_meminfo_total_mib(text), Some(7841));
        assert_eq!(parse_meminfo_total_mib("MemFree: 1 kB\n"), None);
        assert_eq!(parse_meminfo_total_mib("MemTotal: lots kB\n"), None);
    }

    #[test]
    fn operator_attributes_win() {
        let extra = BTreeMap::from([
            ("zone".to_string(), "a".to_string()),
            ("os".to_string(), "custom".to_string()),
        ]);
        let info = HostInfo::detect("1.6.20", &extra);
        assert_eq!(info.attributes["zone"], "a");
        assert_eq!(info.attributes["os"], "custom");
        assert_eq!(info.attributes["containerd.version"], "1.6.20");
        assert!(info.attributes.contains_key("arch"));
        assert!(info.cpu_total >= UNITS_PER_CORE);
    }
}
