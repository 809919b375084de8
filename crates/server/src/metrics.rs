//! berthd's metrics, in the Prometheus/OpenMetrics text format on the
//! health listener's `/metrics`. What happens in the process (API calls,
//! proposals, fsyncs, applies, controller passes) is counted as it
//! happens; what the state says (instances, tasks, services, deployments)
//! and what Raft says (term, indexes, leader) is read at each scrape, so a
//! scrape of any server shows the cluster as that server has applied it.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use berth_types::State;

/// Label pairs: few and fixed per metric, so plain pairs do.
pub type Labels = Vec<(String, String)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

fn latency() -> Histogram {
    // 0.5 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

fn sizes() -> Histogram {
    // 1 .. 4096.
    Histogram::new(exponential_buckets(1.0, 2.0, 13))
}

fn labels<const N: usize>(pairs: [(&str, &str); N]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub struct ServerMetrics {
    registry: Registry,
    // Raft, read at scrape time.
    term: Gauge,
    last_log_index: Gauge,
    applied_index: Gauge,
    snapshot_index: Gauge,
    is_leader: Gauge,
    leader_id: Gauge,
    leader_changes: Counter,
    // Storage and proposals, counted as they happen.
    log_flush_seconds: Histogram,
    appends_per_flush: Histogram,
    apply_seconds: Histogram,
    entries_per_apply: Histogram,
    snapshot_seconds: Histogram,
    snapshot_bytes: Gauge,
    write_seconds: Histogram,
    commands_per_entry: Histogram,
    proposals_per_entry: Histogram,
    // The API.
    api_requests: Family<Labels, Counter>,
    api_seconds: Histograms,
    /// Each method's series, taken from the two families above the first
    /// time it is called: every call after that finds them by its borrowed
    /// method name instead of building two label vectors and hashing them
    /// (3% of a leader's CPU under 256 reading clients). Methods are the
    /// API's own (unknown ones share one label), so this stays small.
    api_series: RwLock<HashMap<String, ApiSeries>>,
    // Agents.
    agent_sessions: Gauge,
    agent_heartbeats: Counter,
    // The state, read at scrape time.
    instances: Family<Labels, Gauge>,
    tasks: Family<Labels, Gauge>,
    service_desired: Family<Labels, Gauge>,
    service_running: Family<Labels, Gauge>,
    service_healthy: Family<Labels, Gauge>,
    deployments: Family<Labels, Gauge>,
    journal_records: Family<Labels, Gauge>,
    // Controllers.
    controller_seconds: Histograms,
    placement_failures: Family<Labels, Counter>,
}

struct ApiSeries {
    seconds: Histogram,
    /// By reply code; a method sees a few of them.
    requests: Vec<(String, Counter)>,
}

impl ApiSeries {
    fn requests(&self, code: &str) -> Option<&Counter> {
        self.requests
            .iter()
            .find_map(|(c, counter)| (c == code).then_some(counter))
    }
}

impl std::fmt::Debug for ServerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerMetrics")
    }
}

impl Default for ServerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("berth");
        let m = ServerMetrics {
            term: Gauge::default(),
            last_log_index: Gauge::default(),
            applied_index: Gauge::default(),
            snapshot_index: Gauge::default(),
            is_leader: Gauge::default(),
            leader_id: Gauge::default(),
            leader_changes: Counter::default(),
            log_flush_seconds: latency(),
            appends_per_flush: sizes(),
            apply_seconds: latency(),
            entries_per_apply: sizes(),
            snapshot_seconds: latency(),
            snapshot_bytes: Gauge::default(),
            write_seconds: latency(),
            commands_per_entry: sizes(),
            proposals_per_entry: sizes(),
            api_requests: Family::default(),
            api_seconds: Family::new_with_constructor(latency),
            api_series: RwLock::default(),
            agent_sessions: Gauge::default(),
            agent_heartbeats: Counter::default(),
            instances: Family::default(),
            tasks: Family::default(),
            service_desired: Family::default(),
            service_running: Family::default(),
            service_healthy: Family::default(),
            deployments: Family::default(),
            journal_records: Family::default(),
            controller_seconds: Family::new_with_constructor(latency),
            placement_failures: Family::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register("raft_term", "Current Raft term", m.term.clone());
        r.register(
            "raft_last_log_index",
            "Index of the last entry in this server's log",
            m.last_log_index.clone(),
        );
        r.register(
            "raft_applied_index",
            "Index of the last entry applied to this server's state",
            m.applied_index.clone(),
        );
        r.register(
            "raft_snapshot_index",
            "Index the newest snapshot covers",
            m.snapshot_index.clone(),
        );
        r.register("raft_is_leader", "1 on the leader", m.is_leader.clone());
        r.register(
            "raft_leader_id",
            "The leader this server knows of (0: none)",
            m.leader_id.clone(),
        );
        r.register(
            "raft_leader_changes",
            "Times this server saw the leader change",
            m.leader_changes.clone(),
        );
        r.register(
            "raft_log_flush_seconds",
            "Duration of one fsync of the Raft log (appends become durable)",
            m.log_flush_seconds.clone(),
        );
        r.register(
            "raft_appends_per_flush",
            "Appends made durable by one fsync",
            m.appends_per_flush.clone(),
        );
        r.register(
            "raft_apply_seconds",
            "Duration of applying a run of entries to the state",
            m.apply_seconds.clone(),
        );
        r.register(
            "raft_entries_per_apply",
            "Entries applied together",
            m.entries_per_apply.clone(),
        );
        r.register(
            "raft_snapshot_seconds",
            "Duration of building and writing a snapshot",
            m.snapshot_seconds.clone(),
        );
        r.register(
            "raft_snapshot_bytes",
            "Size of the newest snapshot built here",
            m.snapshot_bytes.clone(),
        );
        r.register(
            "raft_write_seconds",
            "Duration of a write from proposal to applied (here or forwarded)",
            m.write_seconds.clone(),
        );
        r.register(
            "raft_commands_per_entry",
            "Commands in one proposed entry",
            m.commands_per_entry.clone(),
        );
        r.register(
            "raft_proposals_per_entry",
            "Callers' proposals sharing one entry",
            m.proposals_per_entry.clone(),
        );
        r.register(
            "api_requests",
            "API calls by method and code: gRPC methods with their gRPC code, ECS operations (ecs.OPERATION, ecs.unknown) with their HTTP status",
            m.api_requests.clone(),
        );
        r.register(
            "api_request_seconds",
            "API call duration (to the response headers) by method",
            m.api_seconds.clone(),
        );
        r.register(
            "agent_sessions",
            "Agent sessions held by this server",
            m.agent_sessions.clone(),
        );
        r.register(
            "agent_heartbeats",
            "Agent heartbeats received",
            m.agent_heartbeats.clone(),
        );
        r.register(
            "instances",
            "Registered instances by cluster and status",
            m.instances.clone(),
        );
        r.register("tasks", "Tasks by cluster and last status", m.tasks.clone());
        r.register(
            "service_desired_tasks",
            "Desired tasks of each service",
            m.service_desired.clone(),
        );
        r.register(
            "service_running_tasks",
            "Running tasks of each service",
            m.service_running.clone(),
        );
        r.register(
            "service_healthy_tasks",
            "Healthy tasks of each service",
            m.service_healthy.clone(),
        );
        r.register(
            "deployments",
            "Current deployments by cluster, status and rollout state",
            m.deployments.clone(),
        );
        r.register(
            "journal_records",
            "Events and audit records kept",
            m.journal_records.clone(),
        );
        r.register(
            "controller_pass_seconds",
            "Duration of one pass of a leader controller (the scheduler is `scheduling`)",
            m.controller_seconds.clone(),
        );
        r.register(
            "placement_failures",
            "Tasks the scheduler could not place, by reason",
            m.placement_failures.clone(),
        );
        ServerMetrics { registry, ..m }
    }

    pub fn log_flushed(&self, appends: usize, seconds: f64) {
        self.log_flush_seconds.observe(seconds);
        self.appends_per_flush.observe(appends as f64);
    }

    pub fn applied(&self, entries: usize, seconds: f64) {
        self.apply_seconds.observe(seconds);
        self.entries_per_apply.observe(entries as f64);
    }

    pub fn snapshot_built(&self, bytes: usize, seconds: f64) {
        self.snapshot_seconds.observe(seconds);
        self.snapshot_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    pub fn entry_proposed(&self, proposals: usize, commands: usize, seconds: f64) {
        self.write_seconds.observe(seconds);
        self.proposals_per_entry.observe(proposals as f64);
        self.commands_per_entry.observe(commands as f64);
    }

    pub fn api_call(&self, method: &str, code: &str, seconds: f64) {
        {
            let known = self
                .api_series
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(series) = known.get(method) {
                if let Some(requests) = series.requests(code) {
                    requests.inc();
                    series.seconds.observe(seconds);
                    return;
                }
            }
        }
        let requests = self
            .api_requests
            .get_or_create(&labels([("method", method), ("code", code)]))
            .clone();
        let histogram = self
            .api_seconds
            .get_or_create(&labels([("method", method)]))
            .clone();
        requests.inc();
        histogram.observe(seconds);
        let mut known = self
            .api_series
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let series = known
            .entry(method.to_string())
            .or_insert_with(|| ApiSeries {
                seconds: histogram,
                requests: Vec::new(),
            });
        if series.requests(code).is_none() {
            series.requests.push((code.to_string(), requests));
        }
    }

    pub fn heartbeat(&self) {
        self.agent_heartbeats.inc();
    }

    pub fn leader_changed(&self) {
        self.leader_changes.inc();
    }

    pub fn controller_pass(&self, controller: &str, seconds: f64) {
        self.controller_seconds
            .get_or_create(&labels([("controller", controller)]))
            .observe(seconds);
    }

    /// A placement failure's reason, reduced to its kind (the text before
    /// any detail) so the label stays a small set.
    pub fn placement_failed(&self, reason: &str) {
        let kind = reason
            .split([':', '(', ';'])
            .next()
            .unwrap_or_default()
            .trim();
        let kind: String = kind.chars().take(80).collect();
        self.placement_failures
            .get_or_create(&labels([("reason", &kind)]))
            .inc();
    }

    /// Reads Raft's and the state's figures, then renders everything.
    pub fn render(
        &self,
        raft: &berth_store::RaftMetrics,
        state: &State,
        sessions: usize,
    ) -> String {
        self.term.set(raft.current_term as i64);
        self.last_log_index
            .set(raft.last_log_index.unwrap_or(0) as i64);
        self.applied_index
            .set(raft.last_applied.map_or(0, |l| l.index) as i64);
        self.snapshot_index
            .set(raft.snapshot.map_or(0, |l| l.index) as i64);
        self.is_leader
            .set(i64::from(raft.state == openraft::ServerState::Leader));
        self.leader_id.set(raft.current_leader.unwrap_or(0) as i64);
        self.agent_sessions
            .set(i64::try_from(sessions).unwrap_or(i64::MAX));
        self.read_state(state);
        let mut text = String::new();
        if let Err(e) = encode(&mut text, &self.registry) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        text
    }

    fn read_state(&self, state: &State) {
        // Label sets come and go with the state: start each scrape afresh.
        for family in [
            &self.instances,
            &self.tasks,
            &self.service_desired,
            &self.service_running,
            &self.service_healthy,
            &self.deployments,
            &self.journal_records,
        ] {
            family.clear();
        }
        for instance in state.instances() {
            let status = instance.display_status();
            self.instances
                .get_or_create(&labels([
                    ("cluster", &instance.cluster),
                    ("status", status.as_str()),
                ]))
                .inc();
        }
        for task in state.tasks() {
            self.tasks
                .get_or_create(&labels([
                    ("cluster", &task.cluster),
                    ("status", task.last_status.as_str()),
                ]))
                .inc();
        }
        for service in state.services() {
            if service.status == berth_types::ServiceStatus::Inactive {
                continue;
            }
            let d = state.describe_service(service);
            let key = labels([("cluster", &service.cluster), ("service", &service.name)]);
            self.service_desired
                .get_or_create(&key)
                .set(i64::from(service.desired_count));
            self.service_running
                .get_or_create(&key)
                .set(i64::from(d.running_count));
            self.service_healthy
                .get_or_create(&key)
                .set(i64::from(d.healthy_count));
            for deployment in &service.deployments {
                self.deployments
                    .get_or_create(&labels([
                        ("cluster", &service.cluster),
                        ("status", deployment.status.as_str()),
                        ("rollout_state", deployment.rollout_state.as_str()),
                    ]))
                    .inc();
            }
        }
        let journal = state.journal();
        self.journal_records
            .get_or_create(&labels([("kind", "event")]))
            .set(journal.events().len() as i64);
        self.journal_records
            .get_or_create(&labels([("kind", "audit")]))
            .set(journal.audit().len() as i64);
    }
}

/// The storage layer's reports, into the server's metrics.
pub struct StoreMetrics(pub Arc<ServerMetrics>);

impl berth_store::StoreObserver for StoreMetrics {
    fn log_flushed(&self, appends: usize, seconds: f64) {
        self.0.log_flushed(appends, seconds);
    }
    fn applied(&self, entries: usize, seconds: f64) {
        self.0.applied(entries, seconds);
    }
    fn snapshot_built(&self, bytes: usize, seconds: f64) {
        self.0.snapshot_built(bytes, seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposition(metrics: &ServerMetrics) -> String {
        let mut text = String::new();
        encode(&mut text, &metrics.registry).expect("the registry encodes");
        text
    }

    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
    }

    #[test]
    fn repeated_api_calls_count_in_the_series_of_their_method_and_code() {
        let metrics = ServerMetrics::new();
        // The first call of a pair creates the series, later ones reuse it.
        for _ in 0..3 {
            metrics.api_call("TaskService/RunTask", "Ok", 0.001);
        }
        metrics.api_call("TaskService/RunTask", "InvalidArgument", 0.002);
        metrics.api_call("TaskService/RunTask", "InvalidArgument", 0.002);
        metrics.api_call("ClusterService/ListClusters", "Ok", 0.003);
        let text = exposition(&metrics);
        let requests = |method: &str, code: &str| {
            sample(
                &text,
                &format!("berth_api_requests_total{{method=\"{method}\",code=\"{code}\"}}"),
            )
        };
        assert_eq!(requests("TaskService/RunTask", "Ok"), Some(3.0), "{text}");
        assert_eq!(
            requests("TaskService/RunTask", "InvalidArgument"),
            Some(2.0),
            "{text}"
        );
        assert_eq!(
            requests("ClusterService/ListClusters", "Ok"),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            requests("ClusterService/ListClusters", "InvalidArgument"),
            None
        );
        let observed = |method: &str| {
            sample(
                &text,
                &format!("berth_api_request_seconds_count{{method=\"{method}\"}}"),
            )
        };
        assert_eq!(observed("TaskService/RunTask"), Some(5.0), "{text}");
        assert_eq!(observed("ClusterService/ListClusters"), Some(1.0), "{text}");
    }
}
