//! `berth task stats` and `berth service stats`.

use berth_proto::pb;
use berth_types::time::rfc3339;
use serde::Serialize;

use crate::output::{render, Format, Table};

const MIB: f64 = 1024.0 * 1024.0;

/// A task's figures as `-o json|yaml` prints them.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatsView {
    pub task_id: String,
    pub cluster: String,
    pub instance_id: String,
    pub sampled_at: String,
    /// CPU units (1024 = one CPU) used between the last two samples.
    pub cpu_units_used: Option<f64>,
    pub cpu_units_reserved: u32,
    /// Percent of the reservation, as ECS's CPUUtilization.
    pub cpu_utilization: Option<f64>,
    pub memory_bytes_used: u64,
    pub memory_bytes_reserved: u64,
    /// Percent of the reservation, as ECS's MemoryUtilization.
    pub memory_utilization: Option<f64>,
    pub containers: Vec<ContainerView>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerView {
    pub name: String,
    pub cpu_seconds: f64,
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    pub oom_kills: u64,
}

impl From<pb::TaskStats> for TaskStatsView {
    fn from(s: pb::TaskStats) -> Self {
        TaskStatsView {
            task_id: s.task_id,
            cluster: s.cluster,
            instance_id: s.instance_id,
            sampled_at: rfc3339(s.sampled_at_ms),
            cpu_units_used: s.cpu_units_used,
            cpu_units_reserved: s.cpu_units_reserved,
            cpu_utilization: s.cpu_utilization,
            memory_bytes_used: s.memory_bytes_used,
            memory_bytes_reserved: s.memory_bytes_reserved,
            memory_utilization: s.memory_utilization,
            containers: s
                .containers
                .into_iter()
                .map(|c| ContainerView {
                    name: c.name,
                    cpu_seconds: c.cpu_usage_ns as f64 / 1e9,
                    memory_bytes: c.memory_usage_bytes,
                    memory_limit_bytes: c.memory_limit_bytes,
                    oom_kills: c.oom_kills,
                })
                .collect(),
        }
    }
}

fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_string(), |v| format!("{v:.1}%"))
}

fn cpu_line(t: &TaskStatsView) -> String {
    match t.cpu_units_used {
        Some(used) => format!(
            "{used:.1} units of {} reserved ({})",
            t.cpu_units_reserved,
            percent(t.cpu_utilization)
        ),
        None => format!(
            "not known until a second sample ({} units reserved)",
            t.cpu_units_reserved
        ),
    }
}

fn memory_line(t: &TaskStatsView) -> String {
    format!(
        "{:.1} MiB of {:.0} MiB reserved ({})",
        t.memory_bytes_used as f64 / MIB,
        t.memory_bytes_reserved as f64 / MIB,
        percent(t.memory_utilization)
    )
}

pub fn task_detail(t: &TaskStatsView) -> String {
    let mut out = format!(
        "Task:     {} ({} on {})\nSampled:  {}\nCPU:      {}\nMemory:   {}\n",
        t.task_id,
        t.cluster,
        t.instance_id,
        t.sampled_at,
        cpu_line(t),
        memory_line(t)
    );
    let mut table = Table::new(["CONTAINER", "CPU TIME", "MEMORY", "LIMIT", "OOM KILLS"]);
    for c in &t.containers {
        table.row([
            c.name.clone(),
            format!("{:.1}s", c.cpu_seconds),
            format!("{:.1} MiB", c.memory_bytes as f64 / MIB),
            format!("{:.0} MiB", c.memory_limit_bytes as f64 / MIB),
            c.oom_kills.to_string(),
        ]);
    }
    out.push_str(&table.render());
    out
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatsView {
    pub cluster: String,
    pub service: String,
    pub running_tasks: u32,
    pub sampled_tasks: u32,
    pub cpu_utilization: Option<f64>,
    pub memory_utilization: Option<f64>,
    pub tasks: Vec<TaskStatsView>,
}

impl From<pb::ServiceStats> for ServiceStatsView {
    fn from(s: pb::ServiceStats) -> Self {
        ServiceStatsView {
            cluster: s.cluster,
            service: s.service,
            running_tasks: s.running_tasks,
            sampled_tasks: s.sampled_tasks,
            cpu_utilization: s.cpu_utilization,
            memory_utilization: s.memory_utilization,
            tasks: s.tasks.into_iter().map(Into::into).collect(),
        }
    }
}

pub fn service_detail(s: &ServiceStatsView) -> String {
    let mut out = format!(
        "Service:  {}/{}\nTasks:    {} running, {} sampled\nCPU:      {} of the reservation (average)\nMemory:   {} of the reservation (average)\n",
        s.cluster,
        s.service,
        s.running_tasks,
        s.sampled_tasks,
        percent(s.cpu_utilization),
        percent(s.memory_utilization),
    );
    let mut table = Table::new(["TASK", "INSTANCE", "CPU", "MEMORY", "SAMPLED"]);
    for t in &s.tasks {
        table.row([
            crate::ids::short(crate::ids::Kind::Task, &t.task_id),
            t.instance_id.clone(),
            percent(t.cpu_utilization),
            percent(t.memory_utilization),
            t.sampled_at.clone(),
        ]);
    }
    out.push_str(&table.render());
    out
}

pub fn show_task(format: Format, stats: pb::TaskStats) -> anyhow::Result<String> {
    render(format, &TaskStatsView::from(stats), task_detail)
}

pub fn show_service(format: Format, stats: pb::ServiceStats) -> anyhow::Result<String> {
    render(format, &ServiceStatsView::from(stats), service_detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_as_ecs_reports_them() {
        let view = TaskStatsView::from(pb::TaskStats {
            task_id: "t".into(),
            cpu_units_used: Some(256.0),
            cpu_units_reserved: 512,
            cpu_utilization: Some(50.0),
            memory_bytes_used: 64 * 1024 * 1024,
            memory_bytes_reserved: 256 * 1024 * 1024,
            memory_utilization: Some(25.0),
            ..Default::default()
        });
        let text = task_detail(&view);
        assert!(
            text.contains("256.0 units of 512 reserved (50.0%)"),
            "{text}"
        );
        assert!(
            text.contains("64.0 MiB of 256 MiB reserved (25.0%)"),
            "{text}"
        );
        let first = TaskStatsView::from(pb::TaskStats {
            cpu_units_reserved: 512,
            ..Default::default()
        });
        assert!(cpu_line(&first).contains("second sample"));
    }
}
