//! Who made each call, carried to where it becomes a command, and the
//! server-local part of the audit log.
//!
//! A call that reaches the replicated log is audited there: the auth layer
//! runs its handler inside a [`CallContext`], `BerthNode::write` reads the
//! caller from it, and the batch carries the caller to the state machine,
//! which journals an audit record for each command (applied or refused).
//! A call that never becomes a command is audited in this server's local
//! JSON-lines file instead: one refused by authentication, authorization
//! or validation, and one that succeeds without a command (a Raft
//! membership change). So each call is recorded exactly once.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use berth_types::journal::{Actor, Principal};

tokio::task_local! {
    static CALL: CallContext;
}

/// The caller of the call being served.
#[derive(Clone, Debug)]
pub struct CallContext {
    pub actor: Actor,
    /// Set once a command was proposed on the caller's behalf.
    proposed: Arc<AtomicBool>,
}

impl CallContext {
    pub fn new(actor: Actor) -> Self {
        Self {
            actor,
            proposed: Arc::default(),
        }
    }

    pub fn proposed(&self) -> bool {
        self.proposed.load(Ordering::Relaxed)
    }

    /// Runs `work` on this caller's behalf.
    pub async fn scope<F: std::future::Future>(self, work: F) -> F::Output {
        CALL.scope(self, work).await
    }
}

/// The caller whose call is being served, if any; noting that a command is
/// proposed for it.
pub fn caller_for_proposal() -> Option<Actor> {
    CALL.try_with(|call| {
        call.proposed.store(true, Ordering::Relaxed);
        call.actor.clone()
    })
    .ok()
}

/// An agent's reports: journaled as the instance's doing, not audited.
pub fn instance_actor(instance_id: &str) -> CallContext {
    CallContext::new(Actor {
        principal: Principal::Instance {
            id: instance_id.to_string(),
        },
        operation: String::new(),
        peer: String::new(),
    })
}

/// The operation of a gRPC path: `/berth.v1.TaskService/RunTask` is
/// `RunTask`.
pub fn operation_of(path: &str) -> String {
    path.rsplit('/').next().unwrap_or_default().to_string()
}

/// One call audited by this server alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalRecord {
    pub at_ms: i64,
    /// The server that served (and recorded) the call.
    pub server_id: u64,
    pub actor: Actor,
    /// For a refused call whose caller could not be identified: what it
    /// claimed (`token:ID` of a token that did not verify). Never a secret.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub claimed: String,
    /// `refused`, or `accepted` (a call that changed nothing in the log).
    pub outcome: String,
    /// The gRPC status code of a refusal (`PermissionDenied`, ...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub code: String,
    /// Why it was refused.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// The local audit file: `audit.jsonl` in the data dir, rotated to
/// `audit.jsonl.1` ... `audit.jsonl.N` (oldest) when it passes `max_bytes`.
/// Appended with a plain write: a record is on disk once the kernel writes
/// it back, not fsynced per call, so that a flood of refused calls cannot
/// turn into a flood of disk flushes.
pub struct LocalAudit {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    lock: Mutex<()>,
}

pub const DEFAULT_MAX_BYTES: u64 = 16 * 1024 * 1024;
pub const DEFAULT_KEEP: usize = 4;

impl LocalAudit {
    pub fn new(dir: &Path, max_bytes: u64, keep: usize) -> Self {
        Self {
            path: dir.join("audit.jsonl"),
            max_bytes: max_bytes.max(1024),
            keep: keep.max(1),
            lock: Mutex::new(()),
        }
    }

    fn rotated(&self, n: usize) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// Appends one record; failures are logged, never passed to the caller
    /// (an unwritable audit file must not turn refusals into errors).
    pub fn append(&self, record: &LocalRecord) {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = self.append_locked(record) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot write the local audit file");
        }
    }

    fn append_locked(&self, record: &LocalRecord) -> std::io::Result<()> {
        let size = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        if size >= self.max_bytes {
            for n in (1..self.keep).rev() {
                let from = self.rotated(n);
                if from.exists() {
                    std::fs::rename(&from, self.rotated(n + 1))?;
                }
            }
            std::fs::rename(&self.path, self.rotated(1))?;
        }
        let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        line.push(b'\n');
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?
            .write_all(&line)
    }

    /// Every record kept, oldest first. Lines that do not parse (a torn
    /// last line after a crash) are skipped.
    pub fn read(&self) -> Vec<LocalRecord> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut files: Vec<PathBuf> = (1..=self.keep).rev().map(|n| self.rotated(n)).collect();
        files.push(self.path.clone());
        let mut records = Vec::new();
        for file in files {
            let Ok(file) = std::fs::File::open(&file) else {
                continue;
            };
            for line in std::io::BufReader::new(file).lines() {
                let Ok(line) = line else { break };
                if let Ok(record) = serde_json::from_str(&line) {
                    records.push(record);
                }
            }
        }
        records
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: i64) -> LocalRecord {
        LocalRecord {
            at_ms: n,
            server_id: 1,
            actor: Actor {
                principal: Principal::Anonymous,
                operation: "RunTask".into(),
                peer: "127.0.0.1:9".into(),
            },
            claimed: "token:abc".into(),
            outcome: "refused".into(),
            code: "Unauthenticated".into(),
            reason: "invalid API token".into(),
        }
    }

    #[test]
    fn records_rotate_and_the_oldest_file_goes() {
        let dir = tempfile::tempdir().unwrap();
        let log = LocalAudit::new(dir.path(), 1024, 2);
        for n in 0..40 {
            log.append(&record(n));
        }
        let kept = log.read();
        // Rotation dropped the oldest records, kept order, and bounded the
        // files to the current one and two rotated ones.
        assert!(kept.len() < 40 && kept.len() > 10, "{}", kept.len());
        assert_eq!(kept.last().unwrap().at_ms, 39);
        assert!(kept.windows(2).all(|w| w[0].at_ms < w[1].at_ms));
        assert!(!dir.path().join("audit.jsonl.3").exists());
        assert!(dir.path().join("audit.jsonl.2").exists());
    }

    #[tokio::test]
    async fn a_proposal_inside_a_call_takes_its_caller() {
        assert_eq!(caller_for_proposal(), None);
        let call = instance_actor("i-1");
        let seen = call.clone();
        let actor = call.scope(async { caller_for_proposal() }).await;
        assert_eq!(actor.unwrap().principal.name(), "instance:i-1");
        assert!(seen.proposed());
    }
}
