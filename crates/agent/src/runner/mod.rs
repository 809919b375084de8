//! The task runner: turns assignment sets from the session into one actor
//! per task (`task.rs`), and at start reconciles what the store remembers
//! with what the runtime has, so that an agent restart (even `kill -9`)
//! never stops a task's containers.
//!
//! ```text
//!  session --apply(set)--> Runner --Update/Forget--> task actor --> Runtime
//!     ^                                                  |
//!     +------------- StatusBoard (reports) <-------------+
//! ```

mod board;
mod task;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use berth_proto::pb;
use berth_types::TaskStatus;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tracing::{error, info, info_span, warn, Instrument};

use crate::runtime::{ContainerState, OwnedContainer, PullPolicy, Runtime};
use crate::store::{Loaded, Store, StoreError};

pub use board::{LogTargetError, StatusBoard, TaskView};

/// Assignment sets waiting for the runner; the session waits for each.
const COMMAND_QUEUE: usize = 4;
/// Commands waiting for one task actor.
const TASK_QUEUE: usize = 8;

#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub pull_policy: PullPolicy,
    /// Between SIGTERM and SIGKILL when a container sets no `stopTimeout`
    /// (ECS's default is 30 s).
    pub default_stop_timeout: Duration,
    /// How long a stopped task's containers (and so its logs) are kept
    /// after the control plane recorded it STOPPED, like ECS's task cleanup
    /// wait; zero removes them at once.
    pub cleanup_wait: Duration,
    /// The shortest restart attempt period the runner honours: a
    /// container's `restartPolicy.restartAttemptPeriod` below it (which the
    /// control plane's validation never lets through) is raised to it.
    /// ECS's lower bound, 60 s; tests lower it so a real container need not
    /// run for a minute before it may be restarted.
    pub min_restart_attempt_period: Duration,
    /// Where the values of tasks' secrets come from; `None`: a task that
    /// references secrets fails to start.
    pub secrets: Option<Arc<dyn crate::secrets::SecretSource>>,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            pull_policy: PullPolicy::IfNotPresent,
            default_stop_timeout: Duration::from_secs(30),
            cleanup_wait: Duration::ZERO,
            min_restart_attempt_period: Duration::from_secs(u64::from(
                berth_types::RestartPolicy::MIN_ATTEMPT_PERIOD_SECS,
            )),
            secrets: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("the task runner has stopped")]
    Stopped,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What every task actor shares.
pub(crate) struct Ctx<R> {
    pub runtime: Arc<R>,
    pub store: Store,
    pub board: StatusBoard,
    pub config: Arc<RunnerConfig>,
}

impl<R> Clone for Ctx<R> {
    fn clone(&self) -> Self {
        Ctx {
            runtime: self.runtime.clone(),
            store: self.store.clone(),
            board: self.board.clone(),
            config: self.config.clone(),
        }
    }
}

#[derive(Debug)]
pub(crate) enum TaskCommand {
    /// A new version of the task's assignment.
    Update(Box<pb::Assignment>),
    /// The task is no longer assigned here: stop, remove, forget.
    Forget,
}

/// Aborts the spawned task when dropped, so helpers never outlive the actor
/// that owns them.
pub(crate) struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

enum Command {
    Apply {
        set: pb::AssignmentSet,
        done: oneshot::Sender<Result<(), StoreError>>,
    },
}

/// The session's side of the runner. Cheap to clone.
pub struct RunnerHandle<R> {
    commands: mpsc::Sender<Command>,
    board: StatusBoard,
    store: Store,
    runtime: Arc<R>,
}

impl<R> Clone for RunnerHandle<R> {
    fn clone(&self) -> Self {
        RunnerHandle {
            commands: self.commands.clone(),
            board: self.board.clone(),
            store: self.store.clone(),
            runtime: self.runtime.clone(),
        }
    }
}

impl<R: Runtime> RunnerHandle<R> {
    /// Hands an assignment set to the runner; returns once it is on disk
    /// (the moment the session may acknowledge it).
    pub async fn apply(&self, set: pb::AssignmentSet) -> Result<(), RunnerError> {
        let (done, answer) = oneshot::channel();
        self.commands
            .send(Command::Apply { set, done })
            .await
            .map_err(|_| RunnerError::Stopped)?;
        answer.await.map_err(|_| RunnerError::Stopped)??;
        Ok(())
    }

    pub fn board(&self) -> &StatusBoard {
        &self.board
    }

    pub fn runtime(&self) -> &Arc<R> {
        &self.runtime
    }

    /// The sequence of the last assignment set applied, for the hello.
    pub fn last_sequence(&self) -> u64 {
        self.store.last_sequence().unwrap_or_else(|e| {
            warn!(error = %e, "cannot read the last sequence; saying 0");
            0
        })
    }

    /// Notes the STOPPED reports the session has just sent.
    pub fn note_sent(&self, reports: &[pb::TaskReport]) {
        let stopped =
            |r: &&pb::TaskReport| TaskStatus::parse(&r.last_status) == Some(TaskStatus::Stopped);
        for r in reports.iter().filter(stopped) {
            if let Err(e) = self.store.mark_stopped_reported(&r.task_id) {
                warn!(task_id = %r.task_id, error = %e, "cannot record that STOPPED was reported");
            }
        }
    }
}

/// Sets that arrived before the runner could reconcile, merged: the last
/// complete set plus every change since.
#[derive(Default)]
struct Deferred {
    complete: bool,
    sequence: u64,
    assignments: BTreeMap<String, pb::Assignment>,
}

impl Deferred {
    fn merge(&mut self, set: pb::AssignmentSet) {
        if set.complete {
            self.complete = true;
            self.assignments.clear();
        }
        self.sequence = set.sequence;
        for a in set.assignments {
            self.assignments.insert(a.task_id.clone(), a);
        }
    }

    fn into_set(self) -> pb::AssignmentSet {
        pb::AssignmentSet {
            sequence: self.sequence,
            complete: self.complete,
            assignments: self.assignments.into_values().collect(),
        }
    }
}

pub struct Runner<R: Runtime> {
    ctx: Ctx<R>,
    commands: mpsc::Receiver<Command>,
    loaded: Loaded,
    /// Live actors by task id, with a generation so that a finished actor
    /// is never mistaken for a newer one with the same task id.
    tasks: HashMap<String, (u64, mpsc::Sender<TaskCommand>)>,
    actors: JoinSet<(String, u64)>,
    generation: u64,
    /// Containers of tasks whose stored assignment could not be read, kept
    /// (untouched) until the server sends the assignment again.
    unclaimed: HashMap<String, Vec<OwnedContainer>>,
}

impl<R: Runtime> Runner<R> {
    /// Loads the store and shows what it remembers on the board, so that a
    /// session can say hello before the runtime has even been asked.
    pub fn new(
        runtime: Arc<R>,
        store: Store,
        config: RunnerConfig,
    ) -> Result<(Self, RunnerHandle<R>), StoreError> {
        let loaded = store.load()?;
        let board = StatusBoard::default();
        for t in &loaded.tasks {
            let spec = task::plan(&t.assignment).ok();
            let mut record = t
                .record
                .clone()
                .unwrap_or_else(|| task::initial_record(spec.as_ref()));
            if record.ip.is_none() && spec.as_ref().is_some_and(|s| s.network_mode.uses_bridge()) {
                // A record written before the network existed, or by an
                // agent that did not keep addresses: the hello still says
                // where the task is.
                record.ip = runtime.task_address(&t.assignment.task_id);
            }
            board.seed(task::record_view(
                &t.assignment.task_id,
                &record,
                task::reservation(spec.as_ref()),
            ));
        }
        info!(
            tasks = loaded.tasks.len(),
            last_sequence = loaded.last_sequence,
            "task store loaded"
        );
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let handle = RunnerHandle {
            commands: tx,
            board: board.clone(),
            store: store.clone(),
            runtime: runtime.clone(),
        };
        let runner = Runner {
            ctx: Ctx {
                runtime,
                store,
                board,
                config: Arc::new(config),
            },
            commands: rx,
            loaded,
            tasks: HashMap::new(),
            actors: JoinSet::new(),
            generation: 0,
            unclaimed: HashMap::new(),
        };
        Ok((runner, handle))
    }

    /// Reconciles with the runtime (retrying until it answers), then runs
    /// assignments until dropped. Dropping it stops the actors but never a
    /// container.
    pub async fn run(mut self) {
        let mut deferred = Deferred::default();
        let owned = self.list_owned(&mut deferred).await;
        self.reconcile(owned);
        if deferred.complete || !deferred.assignments.is_empty() {
            self.dispatch(deferred.into_set()).await;
        }
        let mut open = true;
        loop {
            tokio::select! {
                cmd = self.commands.recv(), if open => match cmd {
                    Some(Command::Apply { set, done }) => {
                        let result = self.apply(set, None).await;
                        let _ = done.send(result);
                    }
                    // The agent is shutting down; the actors go with this
                    // future.
                    None => open = false,
                },
                Some(joined) = self.actors.join_next() => self.reap(joined),
                else => std::future::pending::<()>().await,
            }
        }
    }

    /// `Runtime::list`, retried with backoff; sets that arrive meanwhile
    /// are stored, acknowledged and kept for after.
    async fn list_owned(&mut self, deferred: &mut Deferred) -> Vec<OwnedContainer> {
        let mut delay = Duration::from_millis(500);
        loop {
            let runtime = self.ctx.runtime.clone();
            let listing = runtime.list();
            tokio::pin!(listing);
            let result = loop {
                tokio::select! {
                    result = &mut listing => break result,
                    Some(Command::Apply { set, done }) = self.commands.recv() => {
                        let result = self.apply(set, Some(deferred)).await;
                        let _ = done.send(result);
                    }
                }
            };
            match result {
                Ok(owned) => return owned,
                Err(e) => {
                    error!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot list containers; tasks wait until the runtime answers");
                }
            }
            let pause = tokio::time::sleep(delay);
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    () = &mut pause => break,
                    Some(Command::Apply { set, done }) = self.commands.recv() => {
                        let result = self.apply(set, Some(deferred)).await;
                        let _ = done.send(result);
                    }
                }
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// Starts an actor for every stored task with what the runtime has of
    /// it, and removes containers that belong to no known task.
    fn reconcile(&mut self, owned: Vec<OwnedContainer>) {
        let mut by_task: HashMap<String, Vec<OwnedContainer>> = HashMap::new();
        for c in owned {
            by_task.entry(c.task_id.clone()).or_default().push(c);
        }
        let loaded = std::mem::take(&mut self.loaded);
        for t in loaded.tasks {
            let found = by_task.remove(&t.assignment.task_id).unwrap_or_default();
            self.spawn(
                t.assignment,
                Some(task::Recovery {
                    record: t.record,
                    found,
                }),
            );
        }
        for id in loaded.unreadable {
            if let Some(found) = by_task.remove(&id) {
                self.unclaimed.insert(id, found);
            }
        }
        let orphans: Vec<OwnedContainer> = by_task.into_values().flatten().collect();
        info!(
            tasks = self.tasks.len(),
            orphans = orphans.len(),
            "reconciled with the runtime"
        );
        self.remove_in_background(orphans);
    }

    fn remove_in_background(&self, containers: Vec<OwnedContainer>) {
        if containers.is_empty() {
            return;
        }
        let runtime = self.ctx.runtime.clone();
        let timeout = self.ctx.config.default_stop_timeout;
        tokio::spawn(
            async move {
                for c in containers {
                    remove_unowned(&*runtime, &c, timeout).await;
                }
            }
            .instrument(info_span!("orphans")),
        );
    }

    /// Stores the set (before anything acts on it), then hands it to the
    /// actors, or to `deferred` while reconciliation is pending.
    async fn apply(
        &mut self,
        mut set: pb::AssignmentSet,
        deferred: Option<&mut Deferred>,
    ) -> Result<(), StoreError> {
        set.assignments.retain(|a| {
            let named = !a.task_id.is_empty();
            if !named {
                warn!("ignoring an assignment without a task id");
            }
            named
        });
        let store = &self.ctx.store;
        for a in &set.assignments {
            let known = self.tasks.contains_key(&a.task_id)
                || self.unclaimed.contains_key(&a.task_id)
                || deferred.is_some();
            // Nothing to keep for a task that is over and never ran here.
            if task::is_final(a) && !known {
                continue;
            }
            store.put_assignment(a)?;
        }
        store.set_last_sequence(set.sequence)?;
        store.flush().await?;
        match deferred {
            Some(d) => d.merge(set),
            None => self.dispatch(set).await,
        }
        Ok(())
    }

    async fn dispatch(&mut self, set: pb::AssignmentSet) {
        let listed: HashSet<String> = set.assignments.iter().map(|a| a.task_id.clone()).collect();
        for a in set.assignments {
            self.deliver(a).await;
        }
        if !set.complete {
            return;
        }
        let unwanted: Vec<String> = self
            .tasks
            .keys()
            .filter(|id| !listed.contains(*id))
            .cloned()
            .collect();
        for id in unwanted {
            if let Some((_, tx)) = self.tasks.get(&id) {
                // A closed channel means the actor is already done.
                let _ = tx.send(TaskCommand::Forget).await;
            }
        }
        let unclaimed: Vec<String> = self
            .unclaimed
            .keys()
            .filter(|id| !listed.contains(*id))
            .cloned()
            .collect();
        for id in unclaimed {
            if let Some(containers) = self.unclaimed.remove(&id) {
                self.remove_in_background(containers);
            }
        }
    }

    async fn deliver(&mut self, a: pb::Assignment) {
        let id = a.task_id.clone();
        let a = match self.tasks.get(&id) {
            Some((_, tx)) => match tx.send(TaskCommand::Update(Box::new(a))).await {
                Ok(()) => return,
                Err(mpsc::error::SendError(cmd)) => {
                    // Its actor finished (the task was forgotten) and the
                    // server sends it again: start over, from the store.
                    self.tasks.remove(&id);
                    let TaskCommand::Update(a) = cmd else { return };
                    let a = *a;
                    let stored = self.ctx.store.put_assignment(&a).map_err(|e| e.to_string());
                    let flushed = match stored {
                        Ok(()) => self.ctx.store.flush().await.map_err(|e| e.to_string()),
                        Err(e) => Err(e),
                    };
                    if let Err(e) = flushed {
                        warn!(task_id = %id, error = %e, "cannot store the assignment; not starting it");
                        return;
                    }
                    a
                }
            },
            None => a,
        };
        let found = self.unclaimed.remove(&id);
        if task::is_final(&a) && found.is_none() {
            let _ = self.ctx.store.remove_task(&id);
            return;
        }
        self.spawn(
            a,
            found.map(|found| task::Recovery {
                record: None,
                found,
            }),
        );
    }

    fn spawn(&mut self, assignment: pb::Assignment, recovery: Option<task::Recovery>) {
        let (tx, rx) = mpsc::channel(TASK_QUEUE);
        self.generation += 1;
        let generation = self.generation;
        let id = assignment.task_id.clone();
        let span = info_span!("task", task_id = %id);
        let ctx = self.ctx.clone();
        self.actors.spawn(
            async move {
                let id = task::run(ctx, assignment, recovery, rx).await;
                (id, generation)
            }
            .instrument(span),
        );
        self.tasks.insert(id, (generation, tx));
    }

    fn reap(&mut self, joined: Result<(String, u64), tokio::task::JoinError>) {
        match joined {
            Ok((id, generation)) => {
                if self.tasks.get(&id).is_some_and(|(g, _)| *g == generation) {
                    self.tasks.remove(&id);
                }
            }
            Err(e) if e.is_panic() => {
                // The actor's record and containers are still there; the
                // next agent start picks the task up again.
                error!(error = %e, "a task actor panicked");
            }
            Err(_) => {}
        }
    }
}

/// Stops (if it runs) and removes a container no task owns.
pub(crate) async fn remove_unowned<R: Runtime>(runtime: &R, c: &OwnedContainer, timeout: Duration) {
    info!(container_id = %c.id, task_id = %c.task_id, container = %c.container_name, "removing a container that belongs to no task of this agent");
    if matches!(
        c.state,
        ContainerState::Running { .. } | ContainerState::Paused { .. } | ContainerState::Created
    ) {
        if let Err(e) = runtime.stop(&c.id, timeout).await {
            warn!(container_id = %c.id, error = %e, "cannot stop it");
        }
    }
    if let Err(e) = runtime.remove(&c.id).await {
        warn!(container_id = %c.id, error = %e, "cannot remove it");
    }
}

#[cfg(test)]
pub(crate) mod fake;
#[cfg(test)]
mod tests;
