//! End-to-end: Prometheus metrics on both daemons' health listeners, on a
//! real cluster with a real agent running a task through containerd.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Result};
use berth_e2e::agents::*;
use berth_e2e::*;
use berth_proto::pb;
use berth_proto::pb::service_service_client::ServiceServiceClient;
use berth_proto::pb::stats_service_client::StatsServiceClient;
use berth_types::InstanceState;

const CLUSTER: &str = "metered";

/// The value of the sample `series` (name and labels, exactly as printed).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_daemons_serve_metrics_of_what_runs() -> Result<()> {
    let port = free_port();
    let health = format!("127.0.0.{{id}}:{port}");
    let Some(s) = AgentCluster::start_with(CLUSTER, 300, 2, &["--health-listen", &health]).await?
    else {
        return Ok(());
    };
    let a1 = s.addr(1);
    let mut agent = s.agent("metered-1", &[]);
    agent.start()?;
    wait_instance_status(&a1, &agent, InstanceState::Active, Duration::from_secs(60)).await?;
    taskdefs(&a1)
        .await?
        .register_task_definition(pb::RegisterTaskDefinitionRequest {
            spec: Some(testapp_taskdef("ticker", &s.image, &["ticker", "200"], 32)),
        })
        .await?;
    let task = tasks_client(&a1)
        .await?
        .run_task(pb::RunTaskRequest {
            cluster: CLUSTER.into(),
            task_definition: "ticker".into(),
            count: 1,
            ..Default::default()
        })
        .await?
        .into_inner()
        .tasks
        .remove(0);
    wait_task_status(
        &a1,
        &task.id,
        berth_types::TaskStatus::Running,
        Duration::from_secs(60),
    )
    .await?;

    // Every server describes the cluster as it has applied it.
    for id in 1..=3u8 {
        let addr = SocketAddr::from(([127, 0, 0, id], port));
        let text = eventually(Duration::from_secs(10), || async move {
            let text = http_get_at(addr, "/metrics")?;
            let running = format!("berth_tasks{{cluster=\"{CLUSTER}\",status=\"RUNNING\"}}");
            if sample(&text, &running) != Some(1.0) {
                bail!("server {id} does not count the running task yet:\n{text}");
            }
            Ok(text)
        })
        .await?;
        assert!(text.contains("openmetrics-text"), "{text}");
        assert!(sample(&text, "berth_raft_term").unwrap() >= 1.0);
        assert!(sample(&text, "berth_raft_applied_index").unwrap() > 0.0);
        let active = format!("berth_instances{{cluster=\"{CLUSTER}\",status=\"ACTIVE\"}}");
        assert_eq!(sample(&text, &active), Some(1.0), "{text}");
        assert!(text.contains("berth_raft_apply_seconds_bucket"), "{text}");
    }
    // The server that served RunTask counted it.
    let text = http_get_at(SocketAddr::from(([127, 0, 0, 1], port)), "/metrics")?;
    let run_task = "berth_api_requests_total{method=\"TaskService/RunTask\",code=\"Ok\"}";
    assert!(sample(&text, run_task).unwrap_or(0.0) >= 1.0, "{text}");

    // The agent: the running container's memory and CPU, sampled from its
    // cgroup through containerd.
    let series = format!("{{task_id=\"{}\",container=\"app\"}}", task.id);
    let agent_addr: SocketAddr = agent.health_addr.parse()?;
    let text = eventually(Duration::from_secs(30), || {
        let series = series.clone();
        async move {
            let text = http_get_at(agent_addr, "/metrics")?;
            match sample(
                &text,
                &format!("berth_agent_container_memory_usage_bytes{series}"),
            ) {
                Some(bytes) if bytes > 0.0 => Ok(text),
                _ => bail!("no memory figure for the task yet:\n{text}"),
            }
        }
    })
    .await?;
    assert!(
        sample(
            &text,
            &format!("berth_agent_container_memory_limit_bytes{series}")
        )
        .unwrap()
            >= 32.0 * 1024.0 * 1024.0,
        "{text}"
    );
    assert!(
        sample(&text, &format!("berth_agent_container_cpu_seconds{series}")).is_some(),
        "{text}"
    );
    assert_eq!(
        sample(&text, "berth_agent_tasks{status=\"RUNNING\"}"),
        Some(1.0),
        "{text}"
    );
    assert!(text.contains("berth_agent_image_pull_seconds"), "{text}");

    // The control plane's figures for the task, as ECS reports them (any
    // server answers; the samples are in the leader's memory).
    let stats = eventually(Duration::from_secs(30), || {
        let (a2, id) = (s.addr(2), task.id.clone());
        async move {
            Ok(StatsServiceClient::new(channel(&a2).await?)
                .get_task_stats(pb::GetTaskStatsRequest { task_id: id })
                .await?
                .into_inner())
        }
    })
    .await?;
    assert_eq!(stats.cpu_units_reserved, 64, "{stats:?}");
    assert_eq!(stats.memory_bytes_reserved, 32 * 1024 * 1024, "{stats:?}");
    assert!(stats.memory_bytes_used > 0, "{stats:?}");
    let memory = stats.memory_utilization.expect("memory utilization");
    assert!(memory > 0.0 && memory <= 100.0, "{stats:?}");
    assert_eq!(stats.containers[0].name, "app");
    // A service's figures average its sampled tasks.
    ServiceServiceClient::new(channel(&a1).await?)
        .create_service(pb::CreateServiceRequest {
            cluster: CLUSTER.into(),
            service_name: "ticking".into(),
            task_definition: "ticker".into(),
            desired_count: Some(1),
            ..Default::default()
        })
        .await?;
    let service = eventually(Duration::from_secs(60), || {
        let a3 = s.addr(3);
        async move {
            let stats = StatsServiceClient::new(channel(&a3).await?)
                .get_service_stats(pb::GetServiceStatsRequest {
                    cluster: CLUSTER.into(),
                    service: "ticking".into(),
                })
                .await?
                .into_inner();
            if stats.sampled_tasks < 1 {
                bail!("no sampled task yet: {stats:?}");
            }
            Ok(stats)
        }
    })
    .await?;
    assert_eq!(service.running_tasks, 1, "{service:?}");
    assert_eq!(
        service.memory_utilization, service.tasks[0].memory_utilization,
        "one task: the average is its figure"
    );

    // Every metric the Grafana dashboard queries is one the daemons serve.
    let server_text = http_get_at(SocketAddr::from(([127, 0, 0, 1], port)), "/metrics")?;
    let dashboard = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/monitoring/grafana-dashboard.json"),
    )?;
    let mut queried: Vec<&str> = dashboard
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("berth_"))
        // Labels the service discovery adds, not metrics.
        .filter(|w| {
            ![
                "berth_hostname",
                "berth_cluster",
                "berth_instance_id",
                "berth_server_id",
            ]
            .contains(w)
        })
        .collect();
    queried.sort_unstable();
    queried.dedup();
    assert!(queried.len() > 10, "{queried:?}");
    let both = format!("{server_text}\n{text}");
    for name in queried {
        // Counters and histograms are queried by their series' names; the
        // family is what the daemons declare (`# TYPE NAME ...`), with or
        // without samples yet.
        let family = ["_total", "_bucket", "_count", "_sum"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        assert!(
            both.contains(&format!("# TYPE {family} ")),
            "the dashboard queries {name}, which neither daemon serves"
        );
    }

    // Prometheus finds the agent and the servers through any server.
    let sd = http_get_at(SocketAddr::from(([127, 0, 0, 2], port)), "/sd/agents")?;
    let body = sd.split("\r\n\r\n").nth(1).unwrap_or_default();
    let groups: serde_json::Value = serde_json::from_str(body)?;
    assert_eq!(groups[0]["targets"][0], agent.health_addr.as_str(), "{sd}");
    assert_eq!(groups[0]["labels"]["berth_cluster"], CLUSTER, "{sd}");
    let sd = http_get_at(SocketAddr::from(([127, 0, 0, 3], port)), "/sd/servers")?;
    let body = sd.split("\r\n\r\n").nth(1).unwrap_or_default();
    let servers: serde_json::Value = serde_json::from_str(body)?;
    assert_eq!(servers.as_array().map(Vec::len), Some(3), "{sd}");
    Ok(())
}
