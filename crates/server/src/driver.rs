//! The one driver of every leader controller: it owns timing (each
//! controller's interval), wake-ups (state events a controller cares
//! about, coalesced), and leadership (controllers run only while this
//! server leads and has applied an entry of its own term, so they decide
//! from a state as fresh as any acknowledged write). Time comes from an
//! injected clock, so tests drive it with tokio's paused time.
//!
//! A pass reads the state, asks the controller for commands, proposes them
//! as one Raft entry and waits until they are applied before the next pass,
//! so a controller never decides twice from the same state.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use berth_controllers::{AgentLiveness, Controller, Inputs};
use berth_types::{Command, State, StateEvent};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::node::{BerthNode, CommandResult};
use crate::ServerError;

/// How often leadership is checked when nothing else wakes the driver.
const LEADERSHIP_POLL: Duration = Duration::from_millis(250);
/// A controller woken by events runs at most this often, so a stream of
/// status reports costs a pass per gap, not a pass per report.
const MIN_GAP: Duration = Duration::from_millis(50);
/// Passes in a row for a controller that keeps making progress.
const MAX_REPEATS: usize = 20;

/// Milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        crate::api::now_ms()
    }
}

/// The replicated state as the driver needs it: whether this server may act,
/// a consistent read, and a way to propose.
pub trait Replicated: Send + Sync + 'static {
    fn leads(&self) -> bool;
    fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T;
    fn propose(
        &self,
        commands: Vec<Command>,
    ) -> impl Future<Output = Result<Vec<CommandResult>, ServerError>> + Send;
    /// One controller pass took `seconds` to decide `commands` (metrics).
    fn observe_pass(&self, _controller: &str, _seconds: f64, _commands: &[Command]) {}
}

impl Replicated for BerthNode {
    fn leads(&self) -> bool {
        self.has_applied_own_term()
    }

    fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.state().read().state)
    }

    fn propose(
        &self,
        commands: Vec<Command>,
    ) -> impl Future<Output = Result<Vec<CommandResult>, ServerError>> + Send {
        self.write_batch(commands)
    }

    fn observe_pass(&self, controller: &str, seconds: f64, commands: &[Command]) {
        let metrics = self.server_metrics();
        metrics.controller_pass(controller, seconds);
        for command in commands {
            if let Command::PlaceTasks { unplaced, .. } = command {
                for (_, reason) in unplaced {
                    metrics.placement_failed(reason);
                }
            }
        }
    }
}

struct Slot {
    controller: Box<dyn Controller>,
    due: Instant,
    last_run: Option<Instant>,
}

pub struct Driver<R, C> {
    replicated: R,
    clock: C,
    agents: Arc<dyn AgentLiveness + Send + Sync>,
    slots: Vec<Slot>,
    leading: watch::Sender<bool>,
}

impl<R: Replicated, C: Clock> Driver<R, C> {
    pub fn new(replicated: R, clock: C, agents: Arc<dyn AgentLiveness + Send + Sync>) -> Self {
        let (leading, _) = watch::channel(false);
        Self {
            replicated,
            clock,
            agents,
            slots: Vec::new(),
            leading,
        }
    }

    /// Adds a controller; controllers of one pass run in the order added.
    pub fn with(mut self, controller: impl Controller + 'static) -> Self {
        self.slots.push(Slot {
            controller: Box::new(controller),
            due: Instant::now(),
            last_run: None,
        });
        self
    }

    /// Whether this server is running the controllers (it leads).
    pub fn leadership(&self) -> watch::Receiver<bool> {
        self.leading.subscribe()
    }

    pub async fn run(mut self, events: mpsc::UnboundedReceiver<Arc<[StateEvent]>>) {
        let mut events = Some(events);
        let mut leader_since: Option<Instant> = None;
        loop {
            let poll = Instant::now() + LEADERSHIP_POLL;
            // A follower's slots are not due, whatever their times say: it
            // only watches for leadership.
            let next_due = if *self.leading.borrow() {
                self.slots.iter().map(|s| s.due).min()
            } else {
                None
            };
            let wake_at = next_due.map_or(poll, |due| due.min(poll));
            tokio::select! {
                batch = recv(&mut events) => {
                    match batch {
                        Some(batch) => self.note(&batch),
                        // The applier went away (shutdown); keep polling
                        // until the runtime ends.
                        None => events = None,
                    }
                    while let Some(batch) = events.as_mut().and_then(|rx| rx.try_recv().ok()) {
                        self.note(&batch);
                    }
                }
                _ = tokio::time::sleep_until(wake_at) => {}
            }
            let leads = self.replicated.leads();
            if leads != *self.leading.borrow() {
                self.leading.send_replace(leads);
                if leads {
                    tracing::info!("leading: controllers start");
                    let now = Instant::now();
                    for slot in &mut self.slots {
                        slot.due = now;
                    }
                } else {
                    tracing::info!("no longer leading: controllers stop");
                }
            }
            if !leads {
                leader_since = None;
                continue;
            }
            // Measured on the monotonic clock and expressed against this
            // pass's reading of the injected one, so a wall-clock step
            // neither shortens nor stretches the grace period.
            let led_for = leader_since.get_or_insert_with(Instant::now).elapsed();
            let since = self
                .clock
                .now_ms()
                .saturating_sub(i64::try_from(led_for.as_millis()).unwrap_or(i64::MAX));
            for index in 0..self.slots.len() {
                if self.slots[index].due <= Instant::now() {
                    self.run_slot(index, since).await;
                }
            }
        }
    }

    /// Brings forward the controllers that care about these changes.
    fn note(&mut self, batch: &[StateEvent]) {
        let now = Instant::now();
        for slot in &mut self.slots {
            if batch.iter().any(|e| slot.controller.wakes_on(e)) {
                let earliest = slot.last_run.map_or(now, |at| (at + MIN_GAP).max(now));
                slot.due = slot.due.min(earliest);
            }
        }
    }

    async fn run_slot(&mut self, index: usize, leader_since_ms: i64) {
        let slot = &mut self.slots[index];
        let started = Instant::now();
        slot.last_run = Some(started);
        slot.due = started + Duration::from_millis(slot.controller.interval_ms());
        let name = slot.controller.name();
        for _ in 0..MAX_REPEATS {
            let deciding = Instant::now();
            let commands = {
                let inputs = Inputs {
                    now_ms: self.clock.now_ms(),
                    leader_since_ms,
                    agents: self.agents.as_ref(),
                    seed: rand::random(),
                };
                let controller = &self.slots[index].controller;
                self.replicated
                    .read(|state| controller.reconcile(state, &inputs))
            };
            self.replicated
                .observe_pass(name, deciding.elapsed().as_secs_f64(), &commands);
            if commands.is_empty() {
                return;
            }
            let proposed = commands.len();
            let kinds: Vec<&'static str> = commands.iter().map(Command::kind).collect();
            let applied = match self.replicated.propose(commands).await {
                Ok(results) => {
                    let mut applied = 0;
                    for (kind, result) in kinds.iter().zip(&results) {
                        match result {
                            Ok(_) => applied += 1,
                            // Expected now and then: the state moved on
                            // between deciding and applying.
                            Err(e) => {
                                tracing::debug!(controller = name, kind, error = %e, "command refused")
                            }
                        }
                    }
                    tracing::debug!(controller = name, proposed, applied, "controller pass");
                    applied
                }
                Err(e) => {
                    tracing::warn!(controller = name, error = %e, "controller commands not applied");
                    return;
                }
            };
            if applied == 0 || !self.slots[index].controller.repeat_while_progressing() {
                return;
            }
        }
    }
}

async fn recv(
    events: &mut Option<mpsc::UnboundedReceiver<Arc<[StateEvent]>>>,
) -> Option<Arc<[StateEvent]>> {
    match events {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Mutex;

    use berth_types::CommandOutput;

    /// A state applied in memory, standing in for the Raft node.
    #[derive(Clone)]
    struct Local {
        state: Arc<Mutex<State>>,
        leads: Arc<AtomicBool>,
        events: mpsc::UnboundedSender<Arc<[StateEvent]>>,
    }

    impl Replicated for Local {
        fn leads(&self) -> bool {
            self.leads.load(Ordering::SeqCst)
        }
        fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
            f(&self.state.lock().unwrap())
        }
        fn propose(
            &self,
            commands: Vec<Command>,
        ) -> impl Future<Output = Result<Vec<CommandResult>, ServerError>> + Send {
            let mut state = self.state.lock().unwrap();
            let results: Vec<CommandResult> =
                commands.into_iter().map(|c| state.apply(c)).collect();
            let events: Arc<[StateEvent]> = state.take_events().into();
            if !events.is_empty() {
                let _ = self.events.send(events);
            }
            std::future::ready(Ok(results))
        }
    }

    /// The clock follows tokio's (paused) time.
    struct TokioClock(Instant);
    impl Clock for TokioClock {
        fn now_ms(&self) -> i64 {
            1_000_000 + self.0.elapsed().as_millis() as i64
        }
    }

    /// Counts its passes and creates a cluster once per wake-up it is
    /// asked to act on.
    struct Probe {
        passes: Arc<AtomicUsize>,
        interval_ms: u64,
        wakes: bool,
    }

    impl Controller for Probe {
        fn name(&self) -> &'static str {
            "probe"
        }
        fn interval_ms(&self) -> u64 {
            self.interval_ms
        }
        fn wakes_on(&self, e: &StateEvent) -> bool {
            self.wakes && matches!(e, StateEvent::Instance { .. })
        }
        fn reconcile(&self, _: &State, _: &Inputs<'_>) -> Vec<Command> {
            self.passes.fetch_add(1, Ordering::SeqCst);
            Vec::new()
        }
    }

    fn setup(leads: bool) -> (Local, mpsc::UnboundedReceiver<Arc<[StateEvent]>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let local = Local {
            state: Arc::new(Mutex::new(State::new())),
            leads: Arc::new(AtomicBool::new(leads)),
            events: tx,
        };
        (local, rx)
    }

    fn probe(interval_ms: u64, wakes: bool) -> (Probe, Arc<AtomicUsize>) {
        let passes = Arc::new(AtomicUsize::new(0));
        (
            Probe {
                passes: passes.clone(),
                interval_ms,
                wakes,
            },
            passes,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn controllers_run_on_their_interval_only_while_leading() {
        let (local, rx) = setup(false);
        let (probe, passes) = probe(1000, false);
        let driver = Driver::new(
            local.clone(),
            TokioClock(Instant::now()),
            Arc::new(berth_controllers::NoAgents),
        )
        .with(probe);
        let mut leading = driver.leadership();
        tokio::spawn(driver.run(rx));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(passes.load(Ordering::SeqCst), 0, "a follower runs nothing");
        assert!(!*leading.borrow_and_update());

        local.leads.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(*leading.borrow_and_update(), "leadership is announced");
        assert_eq!(
            passes.load(Ordering::SeqCst),
            1,
            "runs at once when it starts leading"
        );
        tokio::time::sleep(Duration::from_millis(3000)).await;
        assert_eq!(passes.load(Ordering::SeqCst), 4, "then once a second");

        local.leads.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!*leading.borrow_and_update());
        let stopped_at = passes.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(passes.load(Ordering::SeqCst), stopped_at);
    }

    #[tokio::test(start_paused = true)]
    async fn events_wake_a_controller_early_and_bursts_are_coalesced() {
        let (local, rx) = setup(true);
        let (waker, woken) = probe(60_000, true);
        let (sleeper, slept) = probe(60_000, false);
        let driver = Driver::new(
            local.clone(),
            TokioClock(Instant::now()),
            Arc::new(berth_controllers::NoAgents),
        )
        .with(waker)
        .with(sleeper);
        tokio::spawn(driver.run(rx));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            (woken.load(Ordering::SeqCst), slept.load(Ordering::SeqCst)),
            (1, 1)
        );

        // A burst of 100 instance changes within 10 ms.
        for i in 0..100 {
            let _ = local.events.send(Arc::from(vec![StateEvent::Instance {
                instance_id: format!("i-{i}"),
            }]));
            if i % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let after_burst = woken.load(Ordering::SeqCst);
        assert!(
            (2..=4).contains(&after_burst),
            "woken, but not once per event: {after_burst} passes"
        );
        assert_eq!(
            slept.load(Ordering::SeqCst),
            1,
            "not interested in instances"
        );
    }

    /// Places one task per pass, as a controller with more work than a pass.
    struct OneAtATime;
    impl Controller for OneAtATime {
        fn name(&self) -> &'static str {
            "one-at-a-time"
        }
        fn interval_ms(&self) -> u64 {
            60_000
        }
        fn wakes_on(&self, _: &StateEvent) -> bool {
            false
        }
        fn repeat_while_progressing(&self) -> bool {
            true
        }
        fn reconcile(&self, state: &State, inputs: &Inputs<'_>) -> Vec<Command> {
            let made = state.clusters().count();
            if made >= 5 {
                return Vec::new();
            }
            vec![Command::CreateCluster {
                name: format!("c{made}"),
                settings: Default::default(),
                at_ms: inputs.now_ms,
            }]
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_controller_that_makes_progress_runs_again_at_once() {
        let (local, rx) = setup(true);
        let driver = Driver::new(
            local.clone(),
            TokioClock(Instant::now()),
            Arc::new(berth_controllers::NoAgents),
        )
        .with(OneAtATime);
        tokio::spawn(driver.run(rx));
        tokio::time::sleep(Duration::from_millis(300)).await;
        // The default cluster plus four made in one wake-up, not one a minute.
        assert_eq!(local.read(|s| s.clusters().count()), 5);
        let applied = local.read(|s| s.cluster("c1").map(|c| c.created_at_ms));
        // Leadership is first seen one poll (250 ms) after the start.
        assert_eq!(applied, Some(1_000_250), "stamped by the injected clock");
        let out = local
            .state
            .lock()
            .unwrap()
            .apply(Command::DeleteCluster { name: "c1".into() });
        assert!(matches!(out, Ok(CommandOutput::ClusterDeleted(_))));
    }
}
