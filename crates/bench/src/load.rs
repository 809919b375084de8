//! A closed-loop load generator: N clients, each with one request in flight
//! at a time, for a warm-up and then a measured window.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::machine::CpuClock;

/// What one load level measured. Only requests that completed inside the
/// measured window count, for throughput and for latency alike.
pub struct Outcome {
    pub ok: u64,
    /// Successful requests over the whole level, warm-up included.
    pub total_ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub window: Duration,
    /// Latencies of the successful requests, sorted ascending.
    pub latencies: Vec<Duration>,
    /// CPU used during the window by each watched process, by this bench
    /// (`bench`) and by everything else on the machine (`other`), in cores.
    pub cpu: Vec<(String, Option<f64>)>,
}

impl Outcome {
    pub fn per_sec(&self) -> f64 {
        self.ok as f64 / self.window.as_secs_f64()
    }
}

struct ClientTally {
    ok: u64,
    total_ok: u64,
    errors: u64,
    first_error: Option<String>,
    latencies: Vec<Duration>,
}

/// Processes whose CPU use is reported: (label, pid).
pub type Watched = Vec<(String, u32)>;

/// Runs `clients` loops calling `op(client, seq)` back to back.
pub async fn run<F, Fut>(
    clients: usize,
    warmup: Duration,
    measure: Duration,
    watched: &Watched,
    clock: &CpuClock,
    op: F,
) -> Outcome
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), tonic::Status>> + Send + 'static,
{
    let op = Arc::new(op);
    let begin = Instant::now();
    let window_start = begin + warmup;
    let window_end = window_start + measure;
    let mut tasks = Vec::with_capacity(clients);
    for client in 0..clients {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut tally = ClientTally {
                ok: 0,
                total_ok: 0,
                errors: 0,
                first_error: None,
                latencies: Vec::new(),
            };
            let mut seq = 0u64;
            loop {
                let sent = Instant::now();
                if sent >= window_end {
                    break;
                }
                let result = op(client, seq).await;
                seq += 1;
                let done = Instant::now();
                let counted = done >= window_start && done <= window_end;
                if result.is_ok() {
                    tally.total_ok += 1;
                }
                match result {
                    Ok(()) if counted => {
                        tally.ok += 1;
                        tally.latencies.push(done - sent);
                    }
                    Ok(()) => {}
                    Err(status) => {
                        if counted {
                            tally.errors += 1;
                        }
                        if tally.first_error.is_none() {
                            tally.first_error =
                                Some(format!("{:?}: {}", status.code(), status.message()));
                        }
                        // Not a hot loop against a server that refuses.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            tally
        }));
    }

    let sample = |watched: &Watched| -> Vec<Option<f64>> {
        watched
            .iter()
            .map(|(_, pid)| clock.cpu_secs(*pid))
            .chain(std::iter::once(clock.cpu_secs(std::process::id())))
            .collect()
    };
    tokio::time::sleep_until(window_start).await;
    let cpu_before = sample(watched);
    let busy_before = clock.machine_busy_secs();
    let cpu_start = Instant::now();
    tokio::time::sleep_until(window_end).await;
    let cpu_after = sample(watched);
    let busy_after = clock.machine_busy_secs();
    let cpu_window = cpu_start.elapsed().as_secs_f64();

    let mut outcome = Outcome {
        ok: 0,
        total_ok: 0,
        errors: 0,
        first_error: None,
        window: measure,
        latencies: Vec::new(),
        cpu: Vec::new(),
    };
    for task in tasks {
        match task.await {
            Ok(tally) => {
                outcome.ok += tally.ok;
                outcome.total_ok += tally.total_ok;
                outcome.errors += tally.errors;
                if outcome.first_error.is_none() {
                    outcome.first_error = tally.first_error;
                }
                outcome.latencies.extend(tally.latencies);
            }
            Err(e) => {
                outcome.errors += 1;
                outcome
                    .first_error
                    .get_or_insert(format!("client task: {e}"));
            }
        }
    }
    outcome.latencies.sort();
    let labels = watched
        .iter()
        .map(|(label, _)| label.clone())
        .chain(std::iter::once("bench".to_string()));
    outcome.cpu = labels
        .zip(cpu_before.iter().zip(&cpu_after))
        .map(|(label, (before, after))| {
            let cores = match (before, after) {
                (Some(b), Some(a)) if cpu_window > 0.0 => Some((a - b) / cpu_window),
                _ => None,
            };
            (label, cores)
        })
        .collect();
    // Whatever else ran meanwhile: the machine's busy time less ours.
    let ours: Option<f64> = outcome.cpu.iter().map(|(_, c)| *c).sum();
    let machine = match (busy_before, busy_after) {
        (Some(b), Some(a)) if cpu_window > 0.0 => Some((a - b) / cpu_window),
        _ => None,
    };
    let other = machine.zip(ours).map(|(m, o)| (m - o).max(0.0));
    outcome.cpu.push(("other".to_string(), other));
    outcome
}
