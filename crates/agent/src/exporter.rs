//! berth-agent's metrics, in the Prometheus/OpenMetrics text format on the
//! health listener's `/metrics`: per task and container, CPU, memory (usage,
//! limit, OOM kills) and restarts, sampled from containerd's cgroup metrics
//! every few seconds; per bridge- and task-mode task, the bytes and packets
//! it received and sent (from the host end of its veth: `tasknet::stats`;
//! a host-mode task shares the host's interfaces and has no figure of its
//! own); tasks by status; image pulls (duration, bytes fetched); failed
//! containerd calls.
//!
//! One set per process (an agent runs once per host), so the code that pulls
//! images or calls containerd counts without being handed anything.

use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::runner::StatusBoard;
use crate::runtime::{ContainerStats, NetworkStats, Runtime};

type Labels = Vec<(String, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

fn pair(key: &str, value: &str) -> (String, String) {
    (key.to_string(), value.to_string())
}

pub struct AgentMetrics {
    registry: Registry,
    cpu_seconds: Family<Labels, FloatGauge>,
    memory_usage: Family<Labels, Gauge>,
    memory_limit: Family<Labels, Gauge>,
    oom_kills: Family<Labels, Gauge>,
    restarts: Family<Labels, Gauge>,
    tasks: Family<Labels, Gauge>,
    pull_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    pull_bytes: Family<Labels, Counter>,
    net_receive_bytes: Family<Labels, Counter>,
    net_transmit_bytes: Family<Labels, Counter>,
    net_receive_packets: Family<Labels, Counter>,
    net_transmit_packets: Family<Labels, Counter>,
    containerd_errors: Family<Labels, Counter>,
    sample_failures: Counter,
    /// The newest pass's samples, until the session sends them.
    report: std::sync::Mutex<Option<berth_proto::pb::StatsReport>>,
}

fn pull_buckets() -> Histogram {
    // 10 ms .. ~10 min.
    Histogram::new(exponential_buckets(0.01, 2.0, 16))
}

impl AgentMetrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("berth_agent");
        let m = AgentMetrics {
            registry: Registry::default(),
            cpu_seconds: Family::default(),
            memory_usage: Family::default(),
            memory_limit: Family::default(),
            oom_kills: Family::default(),
            restarts: Family::default(),
            tasks: Family::default(),
            pull_seconds: Family::new_with_constructor(pull_buckets),
            pull_bytes: Family::default(),
            net_receive_bytes: Family::default(),
            net_transmit_bytes: Family::default(),
            net_receive_packets: Family::default(),
            net_transmit_packets: Family::default(),
            containerd_errors: Family::default(),
            sample_failures: Counter::default(),
            report: std::sync::Mutex::new(None),
        };
        let r = &mut registry;
        r.register(
            "container_cpu_seconds",
            "CPU time a container used since it started (cumulative)",
            m.cpu_seconds.clone(),
        );
        r.register(
            "container_memory_usage_bytes",
            "Memory a container's cgroup uses",
            m.memory_usage.clone(),
        );
        r.register(
            "container_memory_limit_bytes",
            "Memory limit of a container's cgroup",
            m.memory_limit.clone(),
        );
        r.register(
            "container_oom_kills",
            "OOM kills in a container's cgroup",
            m.oom_kills.clone(),
        );
        r.register(
            "container_restarts",
            "Times the agent restarted a container in place (restart policy)",
            m.restarts.clone(),
        );
        r.register("tasks", "Tasks on this instance by status", m.tasks.clone());
        r.register(
            "image_pull_seconds",
            "Duration of image pulls by outcome",
            m.pull_seconds.clone(),
        );
        r.register(
            "image_pull_bytes",
            "Bytes of image blobs (config and layers) fetched from registries by pulls, by outcome; \
             blobs already on the host are not fetched",
            m.pull_bytes.clone(),
        );
        // Counters set from the kernel's: each pass clears the families and
        // counts each task up to its current figure afresh.
        r.register(
            "task_network_receive_bytes",
            "Bytes a bridge- or task-mode task received on its network interface",
            m.net_receive_bytes.clone(),
        );
        r.register(
            "task_network_transmit_bytes",
            "Bytes a bridge- or task-mode task sent on its network interface",
            m.net_transmit_bytes.clone(),
        );
        r.register(
            "task_network_receive_packets",
            "Packets a bridge- or task-mode task received on its network interface",
            m.net_receive_packets.clone(),
        );
        r.register(
            "task_network_transmit_packets",
            "Packets a bridge- or task-mode task sent on its network interface",
            m.net_transmit_packets.clone(),
        );
        r.register(
            "containerd_errors",
            "Failed containerd calls by call",
            m.containerd_errors.clone(),
        );
        r.register(
            "stats_sample_failures",
            "Containers whose stats could not be read in a sampling pass",
            m.sample_failures.clone(),
        );
        AgentMetrics { registry, ..m }
    }

    /// One pull from a registry: how long it took and the bytes of the
    /// blobs it fetched (a failed pull's too: what it got before failing).
    pub fn image_pulled(&self, ok: bool, seconds: f64, bytes: u64) {
        let labels = vec![pair("outcome", if ok { "ok" } else { "failed" })];
        self.pull_seconds.get_or_create(&labels).observe(seconds);
        self.pull_bytes.get_or_create(&labels).inc_by(bytes);
    }

    pub fn containerd_error(&self, call: &str) {
        self.containerd_errors
            .get_or_create(&vec![pair("call", call)])
            .inc();
    }

    /// The newest samples not yet sent to the control plane (which turns
    /// them into `berth task stats`); `None` when there is nothing new.
    pub fn take_stats_report(&self) -> Option<berth_proto::pb::StatsReport> {
        self.report.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Reads every running container's stats from the runtime and the
    /// board's view of each task; what has gone since the last pass drops
    /// out.
    pub async fn sample<R: Runtime>(&self, board: &StatusBoard, runtime: &R) {
        let mut samples: Vec<(Labels, ContainerStats, u32)> = Vec::new();
        let mut report = berth_proto::pb::StatsReport::default();
        let mut by_status: std::collections::BTreeMap<&'static str, i64> = Default::default();
        let mut running: Vec<String> = Vec::new();
        for task_id in board.task_ids() {
            let Some(view) = board.view(&task_id) else {
                continue;
            };
            *by_status.entry(view.status.as_str()).or_default() += 1;
            if view.status == berth_types::TaskStatus::Running {
                running.push(task_id.clone());
            }
            let mut task_sample = berth_proto::pb::TaskStatsSample {
                task_id: task_id.clone(),
                sampled_at_ms: berth_client::time::now_ms(),
                containers: Vec::new(),
            };
            for (name, id) in &view.containers {
                let Some(id) = id else { continue };
                let restarts = view
                    .report
                    .containers
                    .iter()
                    .find(|c| &c.name == name)
                    .map_or(0, |c| c.restart_count);
                if view.status != berth_types::TaskStatus::Running {
                    continue;
                }
                match runtime.stats(id).await {
                    Ok(stats) => {
                        task_sample
                            .containers
                            .push(berth_proto::pb::ContainerStats {
                                name: name.clone(),
                                cpu_usage_ns: stats.cpu_usage_ns,
                                memory_usage_bytes: stats.memory_usage_bytes,
                                memory_limit_bytes: stats.memory_limit_bytes,
                                oom_kills: stats.oom_kills,
                            });
                        samples.push((
                            vec![pair("task_id", &task_id), pair("container", name)],
                            stats,
                            restarts,
                        ))
                    }
                    Err(e) => {
                        tracing::debug!(task_id = %task_id, container = %name, error = %e, "no stats");
                        self.sample_failures.inc();
                    }
                }
            }
            if !task_sample.containers.is_empty() {
                report.tasks.push(task_sample);
            }
        }
        *self.report.lock().unwrap_or_else(|p| p.into_inner()) = Some(report);
        for family in [
            &self.memory_usage,
            &self.memory_limit,
            &self.oom_kills,
            &self.restarts,
            &self.tasks,
        ] {
            family.clear();
        }
        self.cpu_seconds.clear();
        for (labels, stats, restarts) in samples {
            let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            self.cpu_seconds
                .get_or_create(&labels)
                .set(stats.cpu_usage_ns as f64 / 1e9);
            self.memory_usage
                .get_or_create(&labels)
                .set(clamp(stats.memory_usage_bytes));
            self.memory_limit
                .get_or_create(&labels)
                .set(clamp(stats.memory_limit_bytes));
            self.oom_kills
                .get_or_create(&labels)
                .set(clamp(stats.oom_kills));
            self.restarts
                .get_or_create(&labels)
                .set(i64::from(restarts));
        }
        for (status, count) in by_status {
            self.tasks
                .get_or_create(&vec![pair("status", status)])
                .set(count);
        }
        self.sample_task_networks(&running, runtime);
    }

    /// Reads the network traffic of these tasks from the runtime and makes
    /// it the exported figures; tasks not listed, and tasks without a
    /// network of their own (host mode), have none. `sample` passes the
    /// running tasks.
    pub fn sample_task_networks<R: Runtime>(&self, task_ids: &[String], runtime: &R) {
        let mut samples: Vec<(&str, NetworkStats)> = Vec::new();
        for task_id in task_ids {
            match runtime.task_network_stats(task_id) {
                Ok(Some(stats)) => samples.push((task_id.as_str(), stats)),
                Ok(None) => {}
                Err(e) => tracing::debug!(task_id = %task_id, error = %e, "no network stats"),
            }
        }
        let families = [
            &self.net_receive_bytes,
            &self.net_transmit_bytes,
            &self.net_receive_packets,
            &self.net_transmit_packets,
        ];
        for family in families {
            family.clear();
        }
        for (task_id, stats) in samples {
            let labels = vec![pair("task_id", task_id)];
            let figures = [
                stats.receive_bytes,
                stats.transmit_bytes,
                stats.receive_packets,
                stats.transmit_packets,
            ];
            for (family, value) in families.iter().zip(figures) {
                family.get_or_create(&labels).inc_by(value);
            }
        }
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        if let Err(e) = encode(&mut text, &self.registry) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        text
    }
}

/// The process's metrics.
pub fn metrics() -> &'static AgentMetrics {
    static METRICS: OnceLock<AgentMetrics> = OnceLock::new();
    METRICS.get_or_init(AgentMetrics::new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::fake::FakeRuntime;

    #[tokio::test]
    async fn containers_of_running_tasks_are_sampled_and_gone_ones_drop_out() {
        use crate::runner::TaskView;
        use crate::runtime::ContainerState;
        let m = AgentMetrics::new();
        let board = StatusBoard::default();
        let runtime = FakeRuntime::default();
        let id = runtime.insert("t-1", "web", ContainerState::Running { pid: 7 });
        let view = |status: berth_types::TaskStatus| TaskView {
            status,
            report: berth_proto::pb::TaskReport {
                task_id: "t-1".into(),
                last_status: status.as_str().into(),
                containers: vec![berth_proto::pb::ContainerState {
                    name: "web".into(),
                    restart_count: 2,
                    ..Default::default()
                }],
                ..Default::default()
            },
            containers: vec![("web".into(), Some(id.clone()))],
            reservation: Default::default(),
        };
        board.seed(view(berth_types::TaskStatus::Running));
        runtime.set_network_stats(
            "t-1",
            NetworkStats {
                receive_bytes: 1000,
                transmit_bytes: 20000,
                receive_packets: 10,
                transmit_packets: 30,
            },
        );
        m.sample(&board, &runtime).await;
        let text = m.render();
        let series = "{task_id=\"t-1\",container=\"web\"}";
        assert!(
            text.contains(&format!("berth_agent_container_restarts{series} 2")),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "berth_agent_container_memory_usage_bytes{series} 0"
            )),
            "{text}"
        );
        assert!(
            text.contains("berth_agent_tasks{status=\"RUNNING\"} 1"),
            "{text}"
        );
        for line in [
            "berth_agent_task_network_receive_bytes_total{task_id=\"t-1\"} 1000",
            "berth_agent_task_network_transmit_bytes_total{task_id=\"t-1\"} 20000",
            "berth_agent_task_network_receive_packets_total{task_id=\"t-1\"} 10",
            "berth_agent_task_network_transmit_packets_total{task_id=\"t-1\"} 30",
            "# TYPE berth_agent_task_network_receive_bytes counter",
        ] {
            assert!(text.contains(line), "{line}: {text}");
        }
        // The next pass sets the kernel's newer figure, not a sum.
        runtime.set_network_stats(
            "t-1",
            NetworkStats {
                receive_bytes: 1500,
                ..Default::default()
            },
        );
        m.sample(&board, &runtime).await;
        let text = m.render();
        assert!(
            text.contains("berth_agent_task_network_receive_bytes_total{task_id=\"t-1\"} 1500"),
            "{text}"
        );
        // Stopped: its series go at the next pass.
        board.seed(view(berth_types::TaskStatus::Stopped));
        m.sample(&board, &runtime).await;
        let text = m.render();
        assert!(!text.contains("task_id=\"t-1\""), "{text}");
        assert!(
            text.contains("berth_agent_tasks{status=\"STOPPED\"} 1"),
            "{text}"
        );
        m.image_pulled(true, 0.5, 4096);
        m.image_pulled(true, 0.1, 100);
        m.image_pulled(false, 0.2, 7);
        let text = m.render();
        assert!(text.contains("berth_agent_image_pull_seconds_count{outcome=\"ok\"} 2"));
        assert!(
            text.contains("berth_agent_image_pull_bytes_total{outcome=\"ok\"} 4196"),
            "{text}"
        );
        assert!(
            text.contains("berth_agent_image_pull_bytes_total{outcome=\"failed\"} 7"),
            "{text}"
        );
    }
}
