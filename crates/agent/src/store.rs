//! What the agent remembers across its own restarts, in sled under
//! `<data-dir>/tasks`: each task's assignment (as the server sent it), what
//! the agent knows of its containers and status, whether STOPPED has been
//! reported, and the last assignment sequence applied.
//!
//! The rule that makes restarts safe: an assignment is on disk before any
//! container is created for it, so every container the agent ever created
//! belongs to a task it can find again. Container IDs are recorded too, but
//! the runtime's labels (task id, container name) are the fallback when a
//! crash came between creating a container and recording it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_daemon::SledFiles;

use berth_proto::pb;
use berth_types::{ContainerStatus, Health, StopCode, TaskStatus};
use prost::Message;
use serde::{Deserialize, Serialize};

/// sled's page cache. The default is a gigabyte; the records here are a
/// few kilobytes per task, so a megabyte keeps every one of them hot.
const CACHE_BYTES: u64 = 1 << 20;
/// sled writes its buffers out this often on its own (a crash may lose the
/// last interval); `flush` is for the writes that must be durable before the
/// agent acts on them, and syncs them to disk.
const FLUSH_EVERY_MS: u64 = 500;
const LAST_SEQUENCE: &[u8] = b"last_sequence";
/// Present in every store this agent version opened: a store file that
/// exists but reads back without it was damaged (sled 0.34 can open a
/// damaged file as an empty database instead of reporting it).
const MARKER: &[u8] = b"berth_agent_store";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the agent's task store at {path} is locked by another process: is another berth-agent \
         using the same --data-dir?"
    )]
    Locked { path: PathBuf },
    #[error(
        "the agent's task store at {path} is corrupt ({reason}): stop the agent, move {path} \
         aside (keep it for a bug report) and start the agent again; it then takes its \
         assignments from the server afresh"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot open the agent's task store at {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("task store {op} failed: {source}")]
    Sled {
        op: &'static str,
        #[source]
        source: sled::Error,
    },
    #[error("task store record for {key:?} cannot be encoded: {reason}")]
    Encode { key: String, reason: String },
    #[error("task store flush was interrupted: {0}")]
    Interrupted(String),
    #[error("task store: {0}")]
    Sync(#[source] berth_daemon::DurableError),
}

fn sled_err(op: &'static str) -> impl FnOnce(sled::Error) -> StoreError {
    move |source| StoreError::Sled { op, source }
}

/// What the agent knows of one task beyond its assignment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskRecord {
    /// The last status the agent reached (and reported, or will report).
    pub status: TaskStatus,
    pub containers: Vec<ContainerRecord>,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub stop_code: Option<StopCode>,
    /// The task's own address on this host's bridge (bridge and task
    /// network modes), once its network was set up; kept after the network
    /// is gone, as the address the task had. Stored so a restarted agent's
    /// hello says it before the runtime has even been asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<std::net::IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecord {
    pub name: String,
    /// The runtime's ID, once created.
    #[serde(default)]
    pub id: Option<String>,
    pub status: ContainerStatus,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub reason: String,
    pub health: Health,
    /// The process was started at least once: tells a container that ran
    /// and exited from one that never ran (dependency conditions need it).
    #[serde(default)]
    pub started: bool,
    /// In-place restarts under the container's restart policy, kept so an
    /// agent restart does not reset what the task reports.
    #[serde(default)]
    pub restart_count: u32,
    /// When the current process started (wall clock, ms since the epoch):
    /// after an agent restart it still tells how long the container ran,
    /// which the restart policy's attempt period is about.
    #[serde(default)]
    pub started_at_ms: Option<i64>,
}

/// One task as loaded at start.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTask {
    pub assignment: pb::Assignment,
    /// `None` when the task was assigned but the agent had not yet written
    /// anything about it (or the record could not be read).
    pub record: Option<TaskRecord>,
    pub stopped_reported: bool,
}

/// Everything loaded at start.
#[derive(Debug, Default)]
pub struct Loaded {
    pub tasks: Vec<StoredTask>,
    /// Tasks whose assignment could not be decoded: their containers are
    /// left alone (neither managed nor removed) until the server sends the
    /// assignment again.
    pub unreadable: Vec<String>,
    pub last_sequence: u64,
}

/// Cheap to clone; clones share the database.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    /// `None` for a temporary store, which has nothing to sync.
    files: Option<Arc<SledFiles>>,
    assignments: sled::Tree,
    records: sled::Tree,
    reported: sled::Tree,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            path: dir.to_path_buf(),
            reason,
        };
        let existed = std::fs::metadata(dir.join("db")).is_ok_and(|m| m.len() > 0);
        // sled panics on some damage while recovering; that is corruption
        // too, not a reason for the agent to crash without saying so.
        let opened = std::panic::catch_unwind(|| {
            let db = sled::Config::new()
                .path(dir)
                .cache_capacity(CACHE_BYTES)
                .flush_every_ms(Some(FLUSH_EVERY_MS))
                .open()?;
            let marked = db.contains_key(MARKER)?;
            let empty = db.is_empty()
                && db
                    .tree_names()
                    .iter()
                    .all(|name| db.open_tree(name).map(|t| t.is_empty()).unwrap_or(true));
            Ok::<_, sled::Error>((db, marked, empty))
        });
        let (db, marked, empty) = match opened {
            Ok(Ok(opened)) => opened,
            Ok(Err(sled::Error::Corruption { at, .. })) => {
                return Err(corrupt(format!("sled found damage at {at:?}")))
            }
            Ok(Err(source)) if source.to_string().contains("could not acquire lock") => {
                return Err(StoreError::Locked {
                    path: dir.to_path_buf(),
                })
            }
            Ok(Err(source)) => {
                return Err(StoreError::Open {
                    path: dir.to_path_buf(),
                    source,
                })
            }
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("a panic");
                return Err(corrupt(format!("reading it failed: {what}")));
            }
        };
        // A store of an agent from before the marker has records but no
        // marker; an empty one without it was wiped by damage.
        if existed && !marked && empty {
            return Err(corrupt(
                "the store file is there but reads back empty".into(),
            ));
        }
        if !marked {
            db.insert(MARKER, &[1u8][..])
                .map_err(sled_err("write marker"))?;
        }
        let files = SledFiles::open(dir).map_err(StoreError::Sync)?;
        Self::with_db(db, Some(Arc::new(files)))
    }

    /// A store that vanishes when dropped, for tests.
    pub fn temporary() -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .temporary(true)
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(|source| StoreError::Open {
                path: PathBuf::from("<temporary>"),
                source,
            })?;
        Self::with_db(db, None)
    }

    fn with_db(db: sled::Db, files: Option<Arc<SledFiles>>) -> Result<Self, StoreError> {
        Ok(Store {
            files,
            assignments: db.open_tree("assignments").map_err(sled_err("open tree"))?,
            records: db.open_tree("records").map_err(sled_err("open tree"))?,
            reported: db
                .open_tree("stopped_reported")
                .map_err(sled_err("open tree"))?,
            db,
        })
    }

    pub fn load(&self) -> Result<Loaded, StoreError> {
        let mut loaded = Loaded {
            last_sequence: self.last_sequence()?,
            ..Loaded::default()
        };
        for entry in self.assignments.iter() {
            let (key, value) = entry.map_err(sled_err("read assignments"))?;
            let task_id = String::from_utf8_lossy(&key).into_owned();
            let assignment = match pb::Assignment::decode(value.as_ref()) {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!(task_id = %task_id, error = %e, "stored assignment is unreadable; its containers are left alone");
                    loaded.unreadable.push(task_id);
                    continue;
                }
            };
            let record = match self.records.get(&key).map_err(sled_err("read record"))? {
                None => None,
                Some(bytes) => match serde_json::from_slice::<TaskRecord>(&bytes) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        // The containers themselves still say what runs.
                        tracing::warn!(task_id = %task_id, error = %e, "stored task record is unreadable; rebuilding it from the runtime");
                        None
                    }
                },
            };
            let stopped_reported = self
                .reported
                .contains_key(&key)
                .map_err(sled_err("read reported"))?;
            loaded.tasks.push(StoredTask {
                assignment,
                record,
                stopped_reported,
            });
        }
        Ok(loaded)
    }

    pub fn put_assignment(&self, assignment: &pb::Assignment) -> Result<(), StoreError> {
        self.assignments
            .insert(assignment.task_id.as_bytes(), assignment.encode_to_vec())
            .map_err(sled_err("write assignment"))?;
        Ok(())
    }

    pub fn put_record(&self, task_id: &str, record: &TaskRecord) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(record).map_err(|e| StoreError::Encode {
            key: task_id.to_string(),
            reason: e.to_string(),
        })?;
        self.records
            .insert(task_id.as_bytes(), bytes)
            .map_err(sled_err("write record"))?;
        Ok(())
    }

    pub fn mark_stopped_reported(&self, task_id: &str) -> Result<(), StoreError> {
        // Only for tasks still known: a late mark must not resurrect a key
        // of a task that was just forgotten.
        if self
            .assignments
            .contains_key(task_id.as_bytes())
            .map_err(sled_err("read assignment"))?
        {
            self.reported
                .insert(task_id.as_bytes(), &[1u8][..])
                .map_err(sled_err("write reported"))?;
        }
        Ok(())
    }

    /// Forgets the task entirely.
    pub fn remove_task(&self, task_id: &str) -> Result<(), StoreError> {
        let key = task_id.as_bytes();
        // The assignment goes first: without it the rest is never loaded.
        self.assignments
            .remove(key)
            .map_err(sled_err("remove assignment"))?;
        self.records
            .remove(key)
            .map_err(sled_err("remove record"))?;
        self.reported
            .remove(key)
            .map_err(sled_err("remove reported"))?;
        Ok(())
    }

    pub fn last_sequence(&self) -> Result<u64, StoreError> {
        Ok(self
            .db
            .get(LAST_SEQUENCE)
            .map_err(sled_err("read last sequence"))?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0))
    }

    pub fn set_last_sequence(&self, sequence: u64) -> Result<(), StoreError> {
        self.db
            .insert(LAST_SEQUENCE, &sequence.to_be_bytes()[..])
            .map_err(sled_err("write last sequence"))?;
        Ok(())
    }

    /// Makes every write so far durable: sled's flush, then an `fdatasync`
    /// of its files (sled's flush alone does not survive a power cut; see
    /// `berth_daemon::durable`). Both block on I/O (and sled's async flush
    /// can deadlock under concurrency), so they run on the blocking pool.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (db, files) = (self.db.clone(), self.files.clone());
        tokio::task::spawn_blocking(move || {
            db.flush().map_err(sled_err("flush"))?;
            match files {
                Some(files) => files.sync().map_err(StoreError::Sync),
                None => Ok(()),
            }
        })
        .await
        .map_err(|e| StoreError::Interrupted(e.to_string()))??;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(id: &str) -> pb::Assignment {
        pb::Assignment {
            task_id: id.into(),
            desired_status: "RUNNING".into(),
            cluster: "default".into(),
            ..Default::default()
        }
    }

    fn record() -> TaskRecord {
        TaskRecord {
            status: TaskStatus::Running,
            containers: vec![ContainerRecord {
                name: "web".into(),
                id: Some("t-1-web".into()),
                status: ContainerStatus::Running,
                exit_code: None,
                reason: String::new(),
                health: Health::Healthy,
                started: true,
                restart_count: 3,
                started_at_ms: Some(1_700_000_000_000),
            }],
            reason: String::new(),
            stop_code: None,
            ip: Some([198, 18, 0, 7].into()),
        }
    }

    #[tokio::test]
    async fn survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(dir.path()).expect("open");
            store.put_assignment(&assignment("t-1")).expect("put");
            store.put_record("t-1", &record()).expect("record");
            store.put_assignment(&assignment("t-2")).expect("put");
            store.mark_stopped_reported("t-2").expect("mark");
            store.set_last_sequence(42).expect("seq");
            store.flush().await.expect("flush");
        }
        let store = Store::open(dir.path()).expect("reopen");
        let loaded = store.load().expect("load");
        assert_eq!(loaded.last_sequence, 42);
        assert_eq!(loaded.tasks.len(), 2);
        let t1 = &loaded.tasks[0];
        assert_eq!(t1.assignment, assignment("t-1"));
        assert_eq!(t1.record, Some(record()));
        assert!(!t1.stopped_reported);
        let t2 = &loaded.tasks[1];
        assert_eq!(t2.record, None);
        assert!(t2.stopped_reported);
    }

    fn garble(dir: &Path, pick: impl Fn(usize) -> std::ops::Range<usize>) {
        let path = dir.join("db");
        let mut bytes = std::fs::read(&path).expect("read db");
        let range = pick(bytes.len());
        for b in &mut bytes[range] {
            *b ^= 0x5a;
        }
        std::fs::write(&path, &bytes).expect("write db");
    }

    async fn written(dir: &Path) {
        let store = Store::open(dir).expect("open");
        for i in 0..300 {
            let mut a = assignment(&format!("t-{i}"));
            a.cluster = "x".repeat(1000);
            store.put_assignment(&a).expect("put");
        }
        store.flush().await.expect("flush");
    }

    /// sled 0.34 reads damage in its log as the log's end, so damage past
    /// the first records loses them silently (a limit documented in
    /// docs/operations.md); damage that leaves nothing readable, as here,
    /// must not pass for a new store.
    #[tokio::test]
    async fn a_damaged_store_is_named_corrupt_not_another_agent() {
        for (what, pick) in [
            ("head", (|_| 0..4096) as fn(usize) -> std::ops::Range<usize>),
            ("everything", |len| 0..len),
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            written(dir.path()).await;
            garble(dir.path(), pick);
            let err = Store::open(dir.path()).expect_err(what).to_string();
            assert!(err.contains("is corrupt"), "{what}: {err}");
            assert!(
                err.contains("move") && err.contains("aside"),
                "{what}: {err}"
            );
            assert!(!err.contains("another berth-agent"), "{what}: {err}");
            // Refused again: nothing was written into it.
            let again = Store::open(dir.path()).expect_err(what).to_string();
            assert!(again.contains("is corrupt"), "{what}: {again}");
        }
    }

    #[tokio::test]
    async fn a_store_in_use_names_the_other_agent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _first = Store::open(dir.path()).expect("open");
        let err = Store::open(dir.path()).expect_err("locked").to_string();
        assert!(err.contains("another berth-agent"), "{err}");
    }

    #[test]
    fn remove_forgets_everything_and_late_marks_do_not_resurrect() {
        let store = Store::temporary().expect("store");
        store.put_assignment(&assignment("t-1")).expect("put");
        store.put_record("t-1", &record()).expect("record");
        store.mark_stopped_reported("t-1").expect("mark");
        store.remove_task("t-1").expect("remove");
        store.mark_stopped_reported("t-1").expect("late mark");
        let loaded = store.load().expect("load");
        assert!(loaded.tasks.is_empty());
        assert_eq!(store.reported.len(), 0);
        assert_eq!(store.records.len(), 0);
    }

    #[test]
    fn records_written_before_restart_counts_still_load() {
        let store = Store::temporary().expect("store");
        store.put_assignment(&assignment("t-1")).expect("put");
        let old = br#"{"status":"RUNNING","containers":[{"name":"web","id":"t-1-web","status":"RUNNING","health":"UNKNOWN","started":true}]}"#;
        store.records.insert("t-1", &old[..]).expect("raw");
        let record = store.load().expect("load").tasks[0]
            .record
            .clone()
            .expect("readable");
        assert_eq!(record.containers[0].restart_count, 0);
        assert_eq!(record.containers[0].started_at_ms, None);
        assert_eq!(record.ip, None, "written before addresses were kept");
    }

    #[test]
    fn unreadable_assignments_are_set_aside() {
        let store = Store::temporary().expect("store");
        store.put_assignment(&assignment("t-1")).expect("put");
        store
            .assignments
            .insert("t-bad", &[0xff, 0xff, 0xff][..])
            .expect("raw");
        let loaded = store.load().expect("load");
        assert_eq!(loaded.tasks.len(), 1);
        assert_eq!(loaded.unreadable, vec!["t-bad".to_string()]);
    }
}
