//! Task and service resource use, as ECS reports it (CPU and memory as a
//! percentage of the task's reservation), from the samples agents send in
//! their sessions. In the leader's memory only: samples are seconds old
//! and worthless after a restart, so they never cost a Raft write; a new
//! leader has figures again one sampling period after agents reconnect.

use std::collections::HashMap;
use std::sync::Mutex;

use berth_proto::pb;
use berth_types::Task;

/// The newest two samples of one task.
struct Entry {
    instance_id: String,
    latest: pb::TaskStatsSample,
    previous: Option<pb::TaskStatsSample>,
}

#[derive(Default)]
pub struct StatsBook {
    tasks: Mutex<HashMap<String, Entry>>,
}

const MIB: u64 = 1024 * 1024;

impl StatsBook {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes an instance's report: its tasks' samples replace the older
    /// ones, and its tasks missing from the report are dropped (they no
    /// longer run there).
    pub fn record(&self, instance_id: &str, report: pb::StatsReport) {
        let mut tasks = self.lock();
        let reported: std::collections::HashSet<&str> =
            report.tasks.iter().map(|t| t.task_id.as_str()).collect();
        tasks.retain(|id, e| e.instance_id != instance_id || reported.contains(id.as_str()));
        for sample in report.tasks {
            let previous = tasks
                .remove(&sample.task_id)
                .filter(|e| e.instance_id == instance_id)
                .map(|e| e.latest)
                // A repeated sample says nothing about the rate.
                .filter(|p| p.sampled_at_ms < sample.sampled_at_ms);
            tasks.insert(
                sample.task_id.clone(),
                Entry {
                    instance_id: instance_id.to_string(),
                    latest: sample,
                    previous,
                },
            );
        }
    }

    /// Forgets an instance's samples (its session ended).
    pub fn forget_instance(&self, instance_id: &str) {
        self.lock().retain(|_, e| e.instance_id != instance_id);
    }

    pub fn task_stats(&self, task: &Task) -> Option<pb::TaskStats> {
        let tasks = self.lock();
        let entry = tasks.get(&task.id)?;
        Some(utilization(
            task,
            &entry.instance_id,
            &entry.latest,
            entry.previous.as_ref(),
        ))
    }
}

/// What the samples say against what the task reserved.
pub fn utilization(
    task: &Task,
    instance_id: &str,
    latest: &pb::TaskStatsSample,
    previous: Option<&pb::TaskStatsSample>,
) -> pb::TaskStats {
    let cpu_total =
        |s: &pb::TaskStatsSample| -> u64 { s.containers.iter().map(|c| c.cpu_usage_ns).sum() };
    let cpu_units_used = previous.and_then(|p| {
        let wall_ns = (latest.sampled_at_ms - p.sampled_at_ms) as f64 * 1e6;
        let used_ns = cpu_total(latest).checked_sub(cpu_total(p))? as f64;
        (wall_ns > 0.0).then(|| used_ns / wall_ns * 1024.0)
    });
    let cpu_reserved = task.reservation.cpu;
    let memory_used: u64 = latest.containers.iter().map(|c| c.memory_usage_bytes).sum();
    let memory_reserved = task.reservation.memory_mib * MIB;
    let percent = |used: f64, reserved: u64| (reserved > 0).then(|| used / reserved as f64 * 100.0);
    pb::TaskStats {
        task_id: task.id.clone(),
        instance_id: instance_id.to_string(),
        cluster: task.cluster.clone(),
        sampled_at_ms: latest.sampled_at_ms,
        cpu_units_used,
        cpu_units_reserved: u32::try_from(cpu_reserved).unwrap_or(u32::MAX),
        cpu_utilization: cpu_units_used.and_then(|used| percent(used, cpu_reserved)),
        memory_bytes_used: memory_used,
        memory_bytes_reserved: memory_reserved,
        memory_utilization: percent(memory_used as f64, memory_reserved),
        containers: latest.containers.clone(),
    }
}

/// A service's figures: the averages over its sampled tasks, as ECS
/// averages its service utilization over the service's tasks.
pub fn service_stats(
    cluster: &str,
    service: &str,
    running_tasks: u32,
    tasks: Vec<pb::TaskStats>,
) -> pb::ServiceStats {
    let average = |values: Vec<f64>| {
        (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
    };
    pb::ServiceStats {
        cluster: cluster.to_string(),
        service: service.to_string(),
        running_tasks,
        sampled_tasks: u32::try_from(tasks.len()).unwrap_or(u32::MAX),
        cpu_utilization: average(tasks.iter().filter_map(|t| t.cpu_utilization).collect()),
        memory_utilization: average(tasks.iter().filter_map(|t| t.memory_utilization).collect()),
        tasks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, cpu: u64, memory_mib: u64) -> Task {
        use berth_types::{DesiredStatus, TaskStatus};
        Task {
            id: id.into(),
            cluster: "default".into(),
            family: "web".into(),
            revision: 1,
            instance_id: Some("i-1".into()),
            group: String::new(),
            started_by: String::new(),
            desired_status: DesiredStatus::Running,
            last_status: TaskStatus::Running,
            containers: vec![],
            stop_code: None,
            stopped_reason: String::new(),
            placement_reason: String::new(),
            overrides: vec![],
            placement_strategies: vec![],
            placement_constraints: vec![],
            reservation: berth_types::resources::Reservation::new(cpu, memory_mib),
            created_at_ms: 0,
            pending_at_ms: None,
            started_at_ms: None,
            stopping_at_ms: None,
            stopped_at_ms: None,
            ip: None,
            deactivating_until_ms: None,
            tags: Default::default(),
        }
    }

    fn sample(task_id: &str, at_ms: i64, cpu_ns: u64, memory: u64) -> pb::TaskStatsSample {
        pb::TaskStatsSample {
            task_id: task_id.into(),
            sampled_at_ms: at_ms,
            containers: vec![pb::ContainerStats {
                name: "app".into(),
                cpu_usage_ns: cpu_ns,
                memory_usage_bytes: memory,
                memory_limit_bytes: 0,
                oom_kills: 0,
            }],
        }
    }

    #[test]
    fn utilization_is_a_share_of_the_reservation_like_ecs() {
        let book = StatsBook::default();
        let t = task("t-1", 512, 256);
        book.record(
            "i-1",
            pb::StatsReport {
                tasks: vec![sample("t-1", 10_000, 0, 64 * MIB)],
            },
        );
        let first = book.task_stats(&t).unwrap();
        // One sample: memory is known, a CPU rate is not.
        assert_eq!(first.memory_utilization, Some(25.0));
        assert_eq!(first.cpu_utilization, None);
        // Half a CPU (512 units) for ten seconds: all of the reservation.
        book.record(
            "i-1",
            pb::StatsReport {
                tasks: vec![sample("t-1", 20_000, 5_000_000_000, 128 * MIB)],
            },
        );
        let second = book.task_stats(&t).unwrap();
        assert_eq!(second.cpu_units_used, Some(512.0));
        assert_eq!(second.cpu_utilization, Some(100.0));
        assert_eq!(second.memory_utilization, Some(50.0));
        // Gone from the next report: no longer running there.
        book.record("i-1", pb::StatsReport { tasks: vec![] });
        assert!(book.task_stats(&t).is_none());
    }

    #[test]
    fn a_service_averages_its_sampled_tasks() {
        let tasks = vec![
            pb::TaskStats {
                cpu_utilization: Some(10.0),
                memory_utilization: Some(40.0),
                ..Default::default()
            },
            pb::TaskStats {
                cpu_utilization: None,
                memory_utilization: Some(60.0),
                ..Default::default()
            },
        ];
        let s = service_stats("default", "web", 3, tasks);
        assert_eq!((s.running_tasks, s.sampled_tasks), (3, 2));
        assert_eq!(s.cpu_utilization, Some(10.0));
        assert_eq!(s.memory_utilization, Some(50.0));
        assert_eq!(
            service_stats("default", "web", 0, vec![]).memory_utilization,
            None
        );
    }
}
