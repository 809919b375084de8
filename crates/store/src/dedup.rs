//! Exactly-once application of retried batches.
//!
//! A server that forwards a batch to the leader and loses the answer cannot
//! tell whether the leader applied it. It sends the batch again under the
//! same id, and the state machine answers the repeat with the results it
//! recorded the first time instead of applying the commands twice. The
//! record lives in the replicated state (and in snapshots), so it holds
//! across leader changes: whichever leader commits the repeat, every server
//! applies it as a repeat.
//!
//! The window is bounded per proposing process ("session"): the newest
//! `RESULTS_PER_SESSION` batches keep their results (task records by id
//! only, filled in from the state when a repeat is answered). A batch
//! older than that is never applied again; it is answered `Expired` (its
//! outcome is unknown), because it may have been applied and forgotten. A proposer has
//! at most a few batches in flight, so only a retry that is many batches
//! late meets the floor.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use berth_types::journal::Actor;
use berth_types::{Command, CommandOutput, State, StateError, Task};

pub type CommandResult = Result<CommandOutput, StateError>;

/// Batches whose results a session keeps for repeats.
pub const RESULTS_PER_SESSION: usize = 64;
/// Sessions remembered; the one that proposed least recently goes first.
/// Only servers propose, each with one session per process, so a session
/// with a retry still pending (seconds old) is never the least recent of 16.
pub const MAX_SESSIONS: usize = 16;

/// Names one batch across its retries. `session` is drawn at random when a
/// server process starts (so a restart never reuses an id), `seq` counts that
/// process's batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BatchId {
    pub session: u64,
    pub seq: u64,
}

impl std::fmt::Display for BatchId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}/{}", self.session, self.seq)
    }
}

/// Commands applied together, all or none, under one id. Without an id
/// (tests, tools) a batch is applied however often it is proposed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    pub id: Option<BatchId>,
    pub origin: Origin,
    pub commands: Vec<Command>,
}

/// Who proposed a batch and on whose behalf: the envelope the journal
/// reads its actors and times from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Origin {
    /// The server that assembled the batch.
    pub proposer: u64,
    /// The proposer's clock when it assembled the batch.
    pub at_ms: i64,
    /// The callers of the batch's commands, in order, as runs; commands past
    /// the last run are the proposer's own (its controllers).
    pub actors: Vec<ActorRun>,
}

/// `commands` consecutive commands made for `actor`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActorRun {
    pub commands: u32,
    pub actor: Actor,
}

/// One result per command of a batch. Shared between the window and the
/// answer where the window keeps the results whole (see `Kept`), so that
/// only a server with someone waiting for the answer (the proposer's)
/// copies them; serialized as the plain list.
pub type BatchResults = Arc<Vec<CommandResult>>;

/// What applying a batch did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BatchOutcome {
    /// Applied now: one result per command.
    Applied(BatchResults),
    /// An earlier copy was applied; these are its results. Nothing changed.
    Repeated(BatchResults),
    /// Older than the window: it may or may not have been applied before,
    /// and it was not applied now.
    Expired,
}

impl BatchOutcome {
    /// The results, whether applied now or before; `None` when unknown.
    pub fn into_results(self) -> Option<Vec<CommandResult>> {
        match self {
            BatchOutcome::Applied(r) | BatchOutcome::Repeated(r) => Some(Arc::unwrap_or_clone(r)),
            BatchOutcome::Expired => None,
        }
    }
}

fn holds_task_records(result: &CommandResult) -> bool {
    matches!(result, Ok(CommandOutput::Tasks(tasks)) if !tasks.is_empty())
}

/// What the window keeps of a batch's results. An answer of task records
/// (a RunTask of up to a thousand tasks, a service's new tasks) keeps only
/// their ids; [`refill`] answers a repeat with the records as they are
/// then: holding every record of the window's batches cost each server
/// about half a KiB per task started recently. Other batches share their
/// results with the answer. Serialized as the plain list of results, an id
/// as a record with only its id set, so snapshots read the same either
/// way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "Vec<CommandResult>", into = "Vec<CommandResult>")]
enum Kept {
    Whole(BatchResults),
    ByTaskId(Vec<KeptResult>),
}

#[derive(Debug, Clone, PartialEq)]
enum KeptResult {
    /// Boxed: a result can hold a whole task record, an id list is small.
    Result(Box<CommandResult>),
    TaskIds(Vec<String>),
}

impl Kept {
    fn of(results: &BatchResults) -> Self {
        if !results.iter().any(holds_task_records) {
            return Kept::Whole(results.clone());
        }
        Kept::ByTaskId(
            results
                .iter()
                .map(|result| match result {
                    Ok(CommandOutput::Tasks(tasks)) => {
                        KeptResult::TaskIds(tasks.iter().map(|t| t.id.clone()).collect())
                    }
                    other => KeptResult::Result(Box::new(other.clone())),
                })
                .collect(),
        )
    }

    /// The results a repeat is answered with before [`refill`].
    fn answer(&self) -> BatchResults {
        match self {
            Kept::Whole(results) => results.clone(),
            Kept::ByTaskId(_) => Arc::new(self.clone().into()),
        }
    }
}

impl From<Vec<CommandResult>> for Kept {
    fn from(results: Vec<CommandResult>) -> Self {
        Kept::of(&Arc::new(results))
    }
}

impl From<Kept> for Vec<CommandResult> {
    fn from(kept: Kept) -> Self {
        match kept {
            Kept::Whole(results) => Arc::unwrap_or_clone(results),
            Kept::ByTaskId(results) => results
                .into_iter()
                .map(|result| match result {
                    KeptResult::Result(result) => *result,
                    KeptResult::TaskIds(ids) => Ok(CommandOutput::Tasks(
                        ids.into_iter().map(Task::id_only).collect(),
                    )),
                })
                .collect(),
        }
    }
}

/// A repeat's results with the task records the window kept by id filled
/// in from `state` (the state the repeat is applied to, so every server
/// answers alike). A task purged since is left out.
pub fn refill(results: BatchResults, state: &State) -> BatchResults {
    if !results.iter().any(holds_task_records) {
        return results;
    }
    Arc::new(
        Arc::unwrap_or_clone(results)
            .into_iter()
            .map(|result| match result {
                Ok(CommandOutput::Tasks(tasks)) => Ok(CommandOutput::Tasks(
                    tasks
                        .iter()
                        .filter_map(|t| state.task(&t.id).cloned())
                        .collect(),
                )),
                other => other,
            })
            .collect(),
    )
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Session {
    /// Log index of the newest entry that carried a batch of this session;
    /// decides which session is forgotten first.
    last_index: u64,
    /// Every seq below this one may have been applied and forgotten.
    floor: u64,
    results: BTreeMap<u64, Kept>,
}

/// The de-duplication window, part of the replicated state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dedup {
    sessions: BTreeMap<u64, Session>,
}

impl Dedup {
    /// Applies `batch` (entry at log `index`) with `apply`, unless the same
    /// id was applied before. Deterministic: every server gets the same
    /// answer from the same log.
    pub fn apply(
        &mut self,
        index: u64,
        batch: Batch,
        mut apply: impl FnMut(Command, &Actor) -> CommandResult,
    ) -> BatchOutcome {
        let Batch {
            id,
            origin,
            commands,
        } = batch;
        // Commands past the last run are the proposer's own.
        let proposer = Actor::server(origin.proposer);
        let mut runs = origin
            .actors
            .iter()
            .flat_map(|run| std::iter::repeat_n(&run.actor, run.commands as usize));
        let mut apply_all = |commands: Vec<Command>| -> Vec<CommandResult> {
            commands
                .into_iter()
                .map(|command| apply(command, runs.next().unwrap_or(&proposer)))
                .collect()
        };
        let Some(id) = id else {
            return BatchOutcome::Applied(Arc::new(apply_all(commands)));
        };
        let session = self.sessions.entry(id.session).or_default();
        session.last_index = index;
        if let Some(results) = session.results.get(&id.seq) {
            tracing::info!(batch = %id, index, "repeated batch answered with its first results");
            return BatchOutcome::Repeated(results.answer());
        }
        if id.seq < session.floor {
            tracing::warn!(batch = %id, index, floor = session.floor, "batch older than the de-duplication window not applied");
            return BatchOutcome::Expired;
        }
        let results: BatchResults = Arc::new(apply_all(commands));
        session.results.insert(id.seq, Kept::of(&results));
        while session.results.len() > RESULTS_PER_SESSION {
            if let Some((oldest, _)) = session.results.pop_first() {
                session.floor = session.floor.max(oldest + 1);
            }
        }
        while self.sessions.len() > MAX_SESSIONS {
            let stalest = self
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.last_index)
                .map(|(k, _)| *k);
            match stalest {
                Some(k) => self.sessions.remove(&k),
                None => break,
            };
        }
        BatchOutcome::Applied(results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(session: u64, seq: u64) -> Batch {
        Batch {
            id: Some(BatchId { session, seq }),
            origin: Origin::default(),
            commands: vec![Command::DeleteCluster {
                name: format!("{session}-{seq}"),
            }],
        }
    }

    /// Counts applications and answers with the count, so that a result
    /// shows which application produced it.
    fn counting(count: &mut u32) -> impl FnMut(Command, &Actor) -> CommandResult + '_ {
        move |_, _| {
            *count += 1;
            Ok(CommandOutput::Purged(*count))
        }
    }

    fn run_tasks(ids: &[&str]) -> Command {
        Command::RunTasks(berth_types::RunTasks {
            cluster: "default".into(),
            task_definition: "web".into(),
            task_ids: ids.iter().map(|id| id.to_string()).collect(),
            instance_ids: vec![],
            group: None,
            started_by: String::new(),
            placement_strategies: vec![],
            placement_constraints: vec![],
            overrides: vec![],
            client_token: None,
            at_ms: 2,
        })
    }

    #[test]
    fn a_run_is_kept_by_task_id_and_a_repeat_gets_the_records_as_they_are_then() {
        let mut state = State::new();
        state
            .apply(Command::RegisterTaskDefinition {
                spec: berth_types::TaskDefinitionSpec {
                    family: "web".into(),
                    container_definitions: vec![berth_types::ContainerDefinition::new(
                        "app",
                        "registry.local/app:1",
                    )],
                    cpu: None,
                    memory: Some(16),
                    network_mode: Default::default(),
                    volumes: vec![],
                    tags: vec![],
                },
                at_ms: 1,
            })
            .unwrap();
        let mut dedup = Dedup::default();
        let run = Batch {
            id: Some(BatchId { session: 7, seq: 0 }),
            origin: Origin::default(),
            commands: vec![run_tasks(&["t-1", "t-2"])],
        };
        let BatchOutcome::Applied(first) =
            dedup.apply(1, run.clone(), |c, actor| state.apply_by(c, actor))
        else {
            panic!("a new batch is applied");
        };
        // The answer carries the whole records...
        let Ok(CommandOutput::Tasks(answered)) = &first[0] else {
            panic!("{first:?}");
        };
        assert_eq!(answered.len(), 2);
        assert_eq!(answered[0].family, "web");
        // ...the window their ids only.
        let window = &dedup.sessions[&7].results[&0];
        let Kept::ByTaskId(kept) = window else {
            panic!("{window:?}");
        };
        let ids = vec!["t-1".to_string(), "t-2".to_string()];
        assert_eq!(kept, &[KeptResult::TaskIds(ids.clone())]);
        // In a snapshot, the window reads as the results it stands for.
        let as_results: Vec<CommandResult> = vec![Ok(CommandOutput::Tasks(
            ids.into_iter().map(Task::id_only).collect(),
        ))];
        assert_eq!(
            crate::codec::encode(window),
            crate::codec::encode(&as_results)
        );
        let decoded: Kept = crate::codec::decode("window", &crate::codec::encode(window)).unwrap();
        assert_eq!(&decoded, window);

        // The task changes, then the batch is proposed again: the repeat
        // applies nothing and answers with the task as it is now.
        state
            .apply(Command::StopTask {
                task_id: "t-1".into(),
                reason: "done".into(),
                at_ms: 3,
            })
            .unwrap();
        let tasks_before = state.tasks().count();
        let BatchOutcome::Repeated(kept) = dedup.apply(2, run, |c, actor| state.apply_by(c, actor))
        else {
            panic!("the same id again is a repeat");
        };
        assert_eq!(state.tasks().count(), tasks_before);
        let refilled = refill(kept, &state);
        let Ok(CommandOutput::Tasks(again)) = &refilled[0] else {
            panic!("{refilled:?}");
        };
        assert_eq!(again.len(), 2);
        assert_eq!(again[0].id, "t-1");
        assert_eq!(again[0].family, "web");
        assert_eq!(again[0].stopped_reason, "done");
        assert_eq!(Some(&again[1]), state.task("t-2"));
    }

    #[test]
    fn a_repeat_is_answered_with_the_first_results_and_applies_nothing() {
        let mut dedup = Dedup::default();
        let mut count = 0;
        let first = dedup.apply(1, batch(7, 0), counting(&mut count));
        assert_eq!(
            first,
            BatchOutcome::Applied(Arc::new(vec![Ok(CommandOutput::Purged(1))]))
        );
        let again = dedup.apply(2, batch(7, 0), counting(&mut count));
        assert_eq!(
            again,
            BatchOutcome::Repeated(Arc::new(vec![Ok(CommandOutput::Purged(1))]))
        );
        assert_eq!(count, 1);
        // Another seq, and the same seq of another session, are new.
        dedup.apply(3, batch(7, 1), counting(&mut count));
        dedup.apply(4, batch(8, 0), counting(&mut count));
        assert_eq!(count, 3);
        // Batches without an id are applied every time.
        let plain = Batch {
            id: None,
            ..batch(1, 1)
        };
        dedup.apply(5, plain.clone(), counting(&mut count));
        dedup.apply(6, plain, counting(&mut count));
        assert_eq!(count, 5);
    }

    #[test]
    fn each_command_is_applied_for_its_callers_actor_and_the_rest_for_the_proposer() {
        let caller = Actor {
            principal: berth_types::journal::Principal::Instance { id: "i-1".into() },
            operation: "RenewCertificate".into(),
            peer: "10.0.0.1:5".into(),
        };
        let mut three = batch(1, 1);
        three.commands = [0, 1, 2].map(|_| three.commands[0].clone()).to_vec();
        three.origin = Origin {
            proposer: 3,
            at_ms: 1,
            actors: vec![ActorRun {
                commands: 2,
                actor: caller.clone(),
            }],
        };
        let mut seen = Vec::new();
        Dedup::default().apply(1, three, |_, actor| {
            seen.push(actor.principal.name());
            Ok(CommandOutput::Unchanged)
        });
        assert_eq!(seen, ["instance:i-1", "instance:i-1", "server:3"]);
    }

    #[test]
    fn a_batch_older_than_the_window_is_expired_not_applied_again() {
        let mut dedup = Dedup::default();
        let mut count = 0;
        let n = RESULTS_PER_SESSION as u64 + 1;
        for seq in 0..n {
            dedup.apply(seq + 1, batch(1, seq), counting(&mut count));
        }
        assert_eq!(count as u64, n);
        assert_eq!(
            dedup.apply(100, batch(1, 0), counting(&mut count)),
            BatchOutcome::Expired
        );
        assert!(matches!(
            dedup.apply(101, batch(1, 1), counting(&mut count)),
            BatchOutcome::Repeated(_)
        ));
        assert_eq!(count as u64, n, "nothing was applied again");
    }

    #[test]
    fn the_least_recent_session_is_forgotten_first() {
        let mut dedup = Dedup::default();
        let mut count = 0;
        for session in 0..=MAX_SESSIONS as u64 {
            // Session 0 proposes again late, so session 1 is the stalest.
            dedup.apply(session + 1, batch(session, 0), counting(&mut count));
            if session == 5 {
                dedup.apply(session + 1, batch(0, 1), counting(&mut count));
            }
        }
        assert_eq!(dedup.sessions.len(), MAX_SESSIONS);
        assert!(dedup.sessions.contains_key(&0));
        assert!(!dedup.sessions.contains_key(&1));
    }
}
