//! Container health checks with ECS's (and Docker's) semantics: checks run
//! every `interval`; a check that fails or outlives `timeout` is a failure;
//! `retries` consecutive failures make the container UNHEALTHY; failures in
//! the `start_period` do not count, but a success there makes it HEALTHY.
//!
//! `HealthState` is pure (it is told the time); `run` drives it with tokio
//! time so tests can pause the clock.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use berth_types::HealthCheck;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

use crate::runtime::Runtime;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthStatus {
    Unknown,
    Healthy,
    Unhealthy,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Unknown => "UNKNOWN",
            HealthStatus::Healthy => "HEALTHY",
            HealthStatus::Unhealthy => "UNHEALTHY",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckOutcome {
    Success,
    Failure,
    TimedOut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub start_period: Duration,
}

impl HealthPolicy {
    pub fn from_check(check: &HealthCheck) -> Self {
        let secs =
            |v: u32, default: u32| Duration::from_secs(u64::from(if v == 0 { default } else { v }));
        HealthPolicy {
            interval: secs(check.interval, HealthCheck::DEFAULT_INTERVAL),
            timeout: secs(check.timeout, HealthCheck::DEFAULT_TIMEOUT),
            retries: if check.retries == 0 {
                HealthCheck::DEFAULT_RETRIES
            } else {
                check.retries
            },
            start_period: Duration::from_secs(u64::from(check.start_period)),
        }
    }
}

/// The command to exec for an ECS health check: `["CMD", args..]` runs
/// `args`, `["CMD-SHELL", script]` runs `/bin/sh -c script`.
pub fn check_command(check: &HealthCheck) -> Option<Vec<String>> {
    match check.command.split_first() {
        Some((first, rest)) if first == "CMD" => (!rest.is_empty()).then(|| rest.to_vec()),
        Some((first, rest)) if first == "CMD-SHELL" => Some(vec![
            "/bin/sh".to_string(),
            "-c".to_string(),
            rest.join(" "),
        ]),
        Some(_) => Some(check.command.clone()),
        None => None,
    }
}

#[derive(Debug, Clone)]
pub struct HealthState {
    policy: HealthPolicy,
    started_at: Instant,
    status: HealthStatus,
    consecutive_failures: u32,
    /// Set by the first success: the start period ends early then, so later
    /// failures count at once.
    start_period_over: bool,
}

impl HealthState {
    pub fn new(policy: HealthPolicy, started_at: Instant) -> Self {
        HealthState {
            policy,
            started_at,
            status: HealthStatus::Unknown,
            consecutive_failures: 0,
            start_period_over: false,
        }
    }

    pub fn status(&self) -> HealthStatus {
        self.status
    }

    pub fn record(&mut self, now: Instant, outcome: CheckOutcome) -> HealthStatus {
        match outcome {
            CheckOutcome::Success => {
                self.consecutive_failures = 0;
                self.start_period_over = true;
                self.status = HealthStatus::Healthy;
            }
            CheckOutcome::Failure | CheckOutcome::TimedOut => {
                let in_grace = !self.start_period_over
                    && now.saturating_duration_since(self.started_at) < self.policy.start_period;
                if !in_grace {
                    self.consecutive_failures += 1;
                    if self.consecutive_failures >= self.policy.retries {
                        self.status = HealthStatus::Unhealthy;
                    }
                }
            }
        }
        self.status
    }
}

/// Run checks until `status` has no receivers left. `probe` runs one check
/// (an exec in the container); it is cut off after the policy's timeout.
pub async fn run<F, Fut>(policy: HealthPolicy, status: watch::Sender<HealthStatus>, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = CheckOutcome>,
{
    let mut state = HealthState::new(policy, Instant::now());
    loop {
        tokio::time::sleep(policy.interval).await;
        if status.is_closed() {
            return;
        }
        let outcome = match tokio::time::timeout(policy.timeout, probe()).await {
            Ok(outcome) => outcome,
            Err(_) => CheckOutcome::TimedOut,
        };
        let before = state.status();
        let now = state.record(Instant::now(), outcome);
        if now != before {
            tracing::info!(
                from = before.as_str(),
                to = now.as_str(),
                ?outcome,
                "health changed"
            );
        }
        if status.send(now).is_err() {
            return;
        }
    }
}

/// Start checking `container_id` with its task definition's `healthCheck`,
/// each check an exec of the check command in the container. The checks stop
/// when the returned receiver (and its clones) are dropped.
pub fn monitor<R>(
    runtime: Arc<R>,
    container_id: String,
    check: &HealthCheck,
) -> Option<watch::Receiver<HealthStatus>>
where
    R: Runtime,
{
    let command = check_command(check)?;
    let policy = HealthPolicy::from_check(check);
    let (tx, rx) = watch::channel(HealthStatus::Unknown);
    let span = tracing::info_span!("health", container_id = %container_id);
    tokio::spawn(
        run(policy, tx, move || {
            let rt = runtime.clone();
            let id = container_id.clone();
            let cmd = command.clone();
            async move {
                match rt.exec(&id, &cmd, policy.timeout).await {
                    Ok(out) if out.exit_code == 0 => CheckOutcome::Success,
                    Ok(out) => {
                        tracing::debug!(exit_code = out.exit_code, output = %String::from_utf8_lossy(&out.output), "health check failed");
                        CheckOutcome::Failure
                    }
                    Err(crate::error::RuntimeError::Timeout { .. }) => CheckOutcome::TimedOut,
                    Err(e) => {
                        tracing::debug!(error = %e, "health check could not run");
                        CheckOutcome::Failure
                    }
                }
            }
        })
        .instrument(span),
    );
    Some(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn policy(retries: u32, start: u64) -> HealthPolicy {
        HealthPolicy {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            retries,
            start_period: Duration::from_secs(start),
        }
    }

    #[test]
    fn failures_in_start_period_do_not_count() {
        let t0 = Instant::now();
        let mut s = HealthState::new(policy(2, 30), t0);
        assert_eq!(
            s.record(t0 + Duration::from_secs(10), CheckOutcome::Failure),
            HealthStatus::Unknown
        );
        assert_eq!(
            s.record(t0 + Duration::from_secs(20), CheckOutcome::Failure),
            HealthStatus::Unknown
        );
        assert_eq!(
            s.record(t0 + Duration::from_secs(30), CheckOutcome::Failure),
            HealthStatus::Unknown
        );
        assert_eq!(
            s.record(t0 + Duration::from_secs(40), CheckOutcome::TimedOut),
            HealthStatus::Unhealthy
        );
        assert_eq!(
            s.record(t0 + Duration::from_secs(50), CheckOutcome::Success),
            HealthStatus::Healthy
        );
    }

    #[test]
    fn success_in_start_period_ends_it() {
        let t0 = Instant::now();
        let mut s = HealthState::new(policy(1, 300), t0);
        assert_eq!(
            s.record(t0 + Duration::from_secs(1), CheckOutcome::Success),
            HealthStatus::Healthy
        );
        assert_eq!(
            s.record(t0 + Duration::from_secs(2), CheckOutcome::Failure),
            HealthStatus::Unhealthy
        );
    }

    #[test]
    fn commands() {
        let hc = |c: &[&str]| HealthCheck {
            command: c.iter().map(|s| s.to_string()).collect(),
            interval: 0,
            timeout: 0,
            retries: 0,
            start_period: 0,
        };
        assert_eq!(
            check_command(&hc(&["CMD", "/app", "check"])),
            Some(vec!["/app".into(), "check".into()])
        );
        assert_eq!(
            check_command(&hc(&["CMD-SHELL", "curl -f localhost"])),
            Some(vec![
                "/bin/sh".into(),
                "-c".into(),
                "curl -f localhost".into()
            ])
        );
        assert_eq!(check_command(&hc(&[])), None);
        let p = HealthPolicy::from_check(&hc(&["CMD", "x"]));
        assert_eq!(
            (p.interval, p.timeout, p.retries),
            (Duration::from_secs(30), Duration::from_secs(5), 3)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn runner_turns_unhealthy_then_healthy_with_paused_time() {
        let (tx, mut rx) = watch::channel(HealthStatus::Unknown);
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let start = Instant::now();
        tokio::spawn(run(policy(3, 0), tx, move || {
            let n = c.fetch_add(1, Ordering::SeqCst);
            async move {
                match n {
                    // Two plain failures, then one that hangs past the timeout.
                    0 | 1 => CheckOutcome::Failure,
                    2 => {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        CheckOutcome::Success
                    }
                    _ => CheckOutcome::Success,
                }
            }
        }));
        rx.wait_for(|s| *s == HealthStatus::Unhealthy)
            .await
            .expect("unhealthy");
        // Three intervals plus one timeout: the clock only moved as far as the
        // checks needed.
        assert_eq!(Instant::now() - start, Duration::from_secs(32));
        rx.wait_for(|s| *s == HealthStatus::Healthy)
            .await
            .expect("healthy");
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }
}
