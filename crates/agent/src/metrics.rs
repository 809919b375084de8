//! Tasks.Metrics returns a `google.protobuf.Any` holding containerd's cgroup
//! metrics: `io.containerd.cgroups.v1.Metrics` on cgroup v1 hosts and
//! `io.containerd.cgroups.v2.Metrics` on v2. containerd-client does not ship
//! those messages, so the fields we read are declared here with the tags of
//! containerd/cgroups' metrics.proto; prost skips the rest.

use prost::Message;

use crate::error::{Result, RuntimeError};
use crate::runtime::ContainerStats;

pub mod v1 {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metrics {
        #[prost(message, optional, tag = "3")]
        pub cpu: Option<CpuStat>,
        #[prost(message, optional, tag = "4")]
        pub memory: Option<MemoryStat>,
        #[prost(message, optional, tag = "9")]
        pub memory_oom_control: Option<MemoryOomControl>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CpuStat {
        #[prost(message, optional, tag = "1")]
        pub usage: Option<CpuUsage>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CpuUsage {
        #[prost(uint64, tag = "1")]
        pub total: u64,
        #[prost(uint64, tag = "2")]
        pub kernel: u64,
        #[prost(uint64, tag = "3")]
        pub user: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MemoryStat {
        #[prost(uint64, tag = "1")]
        pub cache: u64,
        #[prost(uint64, tag = "2")]
        pub rss: u64,
        #[prost(uint64, tag = "18")]
        pub total_cache: u64,
        #[prost(uint64, tag = "19")]
        pub total_rss: u64,
        #[prost(uint64, tag = "30")]
        pub total_inactive_file: u64,
        #[prost(message, optional, tag = "33")]
        pub usage: Option<MemoryEntry>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MemoryEntry {
        #[prost(uint64, tag = "1")]
        pub limit: u64,
        #[prost(uint64, tag = "2")]
        pub usage: u64,
        #[prost(uint64, tag = "3")]
        pub max: u64,
        #[prost(uint64, tag = "4")]
        pub failcnt: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MemoryOomControl {
        #[prost(uint64, tag = "1")]
        pub oom_kill_disable: u64,
        #[prost(uint64, tag = "2")]
        pub under_oom: u64,
        #[prost(uint64, tag = "3")]
        pub oom_kill: u64,
    }
}

pub mod v2 {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metrics {
        #[prost(message, optional, tag = "2")]
        pub cpu: Option<CpuStat>,
        #[prost(message, optional, tag = "4")]
        pub memory: Option<MemoryStat>,
        #[prost(message, optional, tag = "8")]
        pub memory_events: Option<MemoryEvents>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CpuStat {
        #[prost(uint64, tag = "1")]
        pub usage_usec: u64,
        #[prost(uint64, tag = "2")]
        pub user_usec: u64,
        #[prost(uint64, tag = "3")]
        pub system_usec: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MemoryStat {
        #[prost(uint64, tag = "13")]
        pub inactive_file: u64,
        #[prost(uint64, tag = "32")]
        pub usage: u64,
        #[prost(uint64, tag = "33")]
        pub usage_limit: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MemoryEvents {
        #[prost(uint64, tag = "3")]
        pub max: u64,
        #[prost(uint64, tag = "4")]
        pub oom: u64,
        #[prost(uint64, tag = "5")]
        pub oom_kill: u64,
    }
}

pub const V1_TYPE: &str = "io.containerd.cgroups.v1.Metrics";
pub const V2_TYPE: &str = "io.containerd.cgroups.v2.Metrics";

/// Decode the metrics Any. Memory usage is reported the way `docker stats`
/// does: usage minus inactive page cache, which the kernel reclaims first.
pub fn decode(any: &prost_types::Any) -> Result<ContainerStats> {
    let bad = |e: prost::DecodeError| RuntimeError::Containerd {
        op: "decode metrics",
        status: tonic::Status::internal(e.to_string()),
    };
    let type_name = any.type_url.rsplit('/').next().unwrap_or_default();
    match type_name {
        V1_TYPE => {
            let m = v1::Metrics::decode(any.value.as_slice()).map_err(bad)?;
            let mem = m.memory.unwrap_or_default();
            let usage = mem.usage.unwrap_or_default();
            Ok(ContainerStats {
                cpu_usage_ns: m.cpu.and_then(|c| c.usage).map(|u| u.total).unwrap_or(0),
                memory_usage_bytes: usage.usage.saturating_sub(mem.total_inactive_file),
                memory_limit_bytes: usage.limit,
                oom_kills: m.memory_oom_control.map(|o| o.oom_kill).unwrap_or(0),
                cgroup_version: 1,
            })
        }
        V2_TYPE => {
            let m = v2::Metrics::decode(any.value.as_slice()).map_err(bad)?;
            let mem = m.memory.unwrap_or_default();
            Ok(ContainerStats {
                cpu_usage_ns: m.cpu.map(|c| c.usage_usec * 1000).unwrap_or(0),
                memory_usage_bytes: mem.usage.saturating_sub(mem.inactive_file),
                memory_limit_bytes: mem.usage_limit,
                oom_kills: m.memory_events.map(|e| e.oom_kill).unwrap_or(0),
                cgroup_version: 2,
            })
        }
        other => Err(RuntimeError::Containerd {
            op: "decode metrics",
            status: tonic::Status::internal(format!("unknown metrics type {other:?}")),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_both_cgroup_versions() {
        let m1 = v1::Metrics {
            cpu: Some(v1::CpuStat {
                usage: Some(v1::CpuUsage {
                    total: 5_000,
                    kernel: 1,
                    user: 2,
                }),
            }),
            memory: Some(v1::MemoryStat {
                total_inactive_file: 100,
                usage: Some(v1::MemoryEntry {
                    limit: 1 << 20,
                    usage: 600,
                    max: 0,
                    failcnt: 0,
                }),
                ..Default::default()
            }),
            memory_oom_control: Some(v1::MemoryOomControl {
                oom_kill: 1,
                ..Default::default()
            }),
        };
        let any = prost_types::Any {
            type_url: V1_TYPE.into(),
            value: m1.encode_to_vec(),
        };
        let s = decode(&any).expect("v1");
        assert_eq!(
            (
                s.cpu_usage_ns,
                s.memory_usage_bytes,
                s.memory_limit_bytes,
                s.oom_kills,
                s.cgroup_version
            ),
            (5_000, 500, 1 << 20, 1, 1)
        );

        let m2 = v2::Metrics {
            cpu: Some(v2::CpuStat {
                usage_usec: 7,
                ..Default::default()
            }),
            memory: Some(v2::MemoryStat {
                inactive_file: 10,
                usage: 110,
                usage_limit: 2 << 20,
            }),
            memory_events: Some(v2::MemoryEvents {
                oom_kill: 2,
                ..Default::default()
            }),
        };
        let any = prost_types::Any {
            type_url: format!("types.containerd.io/{V2_TYPE}"),
            value: m2.encode_to_vec(),
        };
        let s = decode(&any).expect("v2");
        assert_eq!(
            (
                s.cpu_usage_ns,
                s.memory_usage_bytes,
                s.memory_limit_bytes,
                s.oom_kills,
                s.cgroup_version
            ),
            (7_000, 100, 2 << 20, 2, 2)
        );
    }
}
