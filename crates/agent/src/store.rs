//! What the agent remembers across its own restarts, in one journal file
//! under `<data-dir>/tasks`: each task's assignment (as the server sent it),
//! what the agent knows of its containers and status, whether STOPPED has
//! been reported, and the last assignment sequence applied.
//!
//! The rule that makes restarts safe: an assignment is on disk before any
//! container is created for it, so every container the agent ever created
//! belongs to a task it can find again. Container IDs are recorded too, but
//! the runtime's labels (task id, container name) are the fallback when a
//! crash came between creating a container and recording it.
//!
//! The journal (`journal`) is a header and a sequence of records, each
//! `length u32 LE | CRC-32 u32 LE | kind u8 | key length u16 LE | key |
//! value`. Every change is appended at once (so it survives the agent
//! being killed) and is durable after [`Store::flush`], one `fdatasync`.
//! The whole state is kept in memory (a few kilobytes per task) and the
//! journal is rewritten from it, synced and renamed into place, once it has
//! grown to several times what is live. Earlier agents kept this in a sled
//! database (whose page table, I/O buffers and eight threads cost the agent
//! more memory than everything it stored); such a store is converted when
//! first opened.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use berth_proto::pb;
use berth_types::{ContainerStatus, Health, StopCode, TaskStatus};
use prost::Message;
use serde::{Deserialize, Serialize};
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

/// The journal's file name in the store's directory.
const JOURNAL: &str = "journal";
/// Held with `flock` while a store is open: a second agent on the same
/// directory is refused before it reads anything.
const LOCK: &str = "lock";
/// The journal's first bytes: format version 1.
const MAGIC: &[u8; 8] = b"BRTHJNL1";
/// Length and CRC-32 in front of each record.
const RECORD_HEAD: usize = 8;
/// Kind and key length at the start of each record's body.
const BODY_HEAD: usize = 3;
/// The journal is rewritten from memory once it is at least this big...
const COMPACT_MIN_BYTES: u64 = 1 << 20;
/// ...and this many times the size of what is live in it.
const COMPACT_FACTOR: u64 = 4;

/// What one journal record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    /// key: task id; value: the assignment's protobuf encoding.
    Assignment = 1,
    /// key: task id; value: a [`TaskRecord`] in JSON.
    Record = 2,
    /// key: task id; STOPPED has been reported.
    Reported = 3,
    /// key: task id; the task is forgotten.
    Remove = 4,
    /// value: the last sequence, 8 bytes big-endian.
    LastSequence = 5,
}

impl Kind {
    fn from_byte(byte: u8) -> Option<Self> {
        [
            Self::Assignment,
            Self::Record,
            Self::Reported,
            Self::Remove,
            Self::LastSequence,
        ]
        .into_iter()
        .find(|k| *k as u8 == byte)
    }
}

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
    #[error("task store: cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "task store at {path} stopped taking writes: a failed write could not be undone \
         ({reason}); restart the agent once the disk is writable"
    )]
    Broken { path: PathBuf, reason: String },
    #[error("cannot convert the sled task store at {path}: {source}")]
    Sled {
        path: PathBuf,
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

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Everything the store knows, as the journal replays to.
#[derive(Debug, Default)]
struct State {
    /// Task id to the assignment's protobuf encoding.
    assignments: BTreeMap<String, Vec<u8>>,
    /// Task id to its [`TaskRecord`] in JSON.
    records: BTreeMap<String, Vec<u8>>,
    reported: BTreeSet<String>,
    last_sequence: u64,
}

impl State {
    fn apply(&mut self, kind: Kind, key: &str, value: &[u8]) -> Result<(), String> {
        match kind {
            Kind::Assignment => {
                self.assignments.insert(key.to_string(), value.to_vec());
            }
            Kind::Record => {
                self.records.insert(key.to_string(), value.to_vec());
            }
            Kind::Reported => {
                self.reported.insert(key.to_string());
            }
            Kind::Remove => {
                self.assignments.remove(key);
                self.records.remove(key);
                self.reported.remove(key);
            }
            Kind::LastSequence => {
                let bytes = <[u8; 8]>::try_from(value)
                    .map_err(|_| format!("a last-sequence record of {} bytes", value.len()))?;
                self.last_sequence = u64::from_be_bytes(bytes);
            }
        }
        Ok(())
    }

    /// The whole state as a journal: what a rewrite writes.
    fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for (key, value) in &self.assignments {
            push_record(&mut out, Kind::Assignment, key, value);
        }
        for (key, value) in &self.records {
            push_record(&mut out, Kind::Record, key, value);
        }
        for key in &self.reported {
            push_record(&mut out, Kind::Reported, key, &[]);
        }
        // 0 is what a journal without the record replays to.
        if self.last_sequence != 0 {
            push_record(
                &mut out,
                Kind::LastSequence,
                "",
                &self.last_sequence.to_be_bytes(),
            );
        }
        out
    }

    fn encoded_len(&self) -> u64 {
        let each = |key: &str, value: usize| (RECORD_HEAD + BODY_HEAD + key.len() + value) as u64;
        let assignments: u64 = self.assignments.iter().map(|(k, v)| each(k, v.len())).sum();
        let records: u64 = self.records.iter().map(|(k, v)| each(k, v.len())).sum();
        let reported: u64 = self.reported.iter().map(|k| each(k, 0)).sum();
        MAGIC.len() as u64 + assignments + records + reported + each("", 8)
    }
}

/// Appends one record; the key's length was checked by the caller
/// ([`record`]) or comes from a state that only holds checked keys.
fn push_record(out: &mut Vec<u8>, kind: Kind, key: &str, value: &[u8]) {
    let body_len = BODY_HEAD + key.len() + value.len();
    let start = out.len();
    out.reserve(RECORD_HEAD + body_len);
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(kind as u8);
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(value);
    let crc = crc32fast::hash(&out[start + RECORD_HEAD..]);
    out[start + 4..start + RECORD_HEAD].copy_from_slice(&crc.to_le_bytes());
}

fn record(kind: Kind, key: &str, value: &[u8]) -> Result<Vec<u8>, StoreError> {
    let body_len = BODY_HEAD + key.len() + value.len();
    if u16::try_from(key.len()).is_err() || u32::try_from(body_len).is_err() {
        return Err(StoreError::Encode {
            key: key.chars().take(64).collect(),
            reason: format!(
                "a key of {} bytes and a value of {} bytes do not fit a record",
                key.len(),
                value.len()
            ),
        });
    }
    let mut out = Vec::new();
    push_record(&mut out, kind, key, value);
    Ok(out)
}

/// The record at `at`, if a whole one with a matching checksum is there:
/// its kind, key, value and where the next one starts.
fn parse_at(buf: &[u8], at: usize) -> Option<(Kind, &str, &[u8], usize)> {
    let head = buf.get(at..at.checked_add(RECORD_HEAD)?)?;
    let body_len = u32::from_le_bytes(head[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(head[4..].try_into().ok()?);
    if body_len < BODY_HEAD {
        return None;
    }
    let body_start = at + RECORD_HEAD;
    let body = buf.get(body_start..body_start.checked_add(body_len)?)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    let kind = Kind::from_byte(body[0])?;
    let key_len = u16::from_le_bytes([body[1], body[2]]) as usize;
    let key = std::str::from_utf8(body.get(BODY_HEAD..BODY_HEAD + key_len)?).ok()?;
    let value = &body[BODY_HEAD + key_len..];
    Some((kind, key, value, body_start + body_len))
}

/// Replays a journal's bytes. A record that does not read back whole at
/// the very end, with no valid record anywhere after it, is a write the
/// agent was killed in (never synced, so never relied on): its offset comes
/// back so the caller cuts it off. Damage with valid records after it is
/// not a torn write, and is refused.
fn replay(buf: &[u8]) -> Result<(State, Option<usize>), String> {
    if buf.len() < MAGIC.len() || &buf[..MAGIC.len()] != MAGIC {
        return Err("the journal does not start with its header".into());
    }
    let mut state = State::default();
    let mut at = MAGIC.len();
    while at < buf.len() {
        match parse_at(buf, at) {
            Some((kind, key, value, next)) => {
                state
                    .apply(kind, key, value)
                    .map_err(|e| format!("{e} at byte {at}"))?;
                at = next;
            }
            None => {
                if (at + 1..buf.len()).any(|o| parse_at(buf, o).is_some()) {
                    return Err(format!(
                        "the record at byte {at} is damaged and valid records follow it"
                    ));
                }
                return Ok((state, Some(at)));
            }
        }
    }
    Ok((state, None))
}

/// The open journal file.
struct Journal {
    path: PathBuf,
    /// Opened for appending; shared so a sync runs without the lock.
    file: Arc<File>,
    len: u64,
    /// Set when a failed append could not be cut off again: where the file
    /// ends is then unknown, and appending after it would leave a damaged
    /// record in the middle.
    broken: Option<String>,
}

impl Journal {
    fn open_append(path: &Path) -> Result<File, StoreError> {
        std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(io_err("open", path))
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        if let Some(reason) = &self.broken {
            return Err(StoreError::Broken {
                path: self.path.clone(),
                reason: reason.clone(),
            });
        }
        if let Err(e) = (&*self.file).write_all(bytes) {
            if let Err(cut) = self.file.set_len(self.len) {
                self.broken = Some(format!("{e}; then {cut}"));
            }
            return Err(io_err("append to", &self.path)(e));
        }
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Replaces the journal with `state` alone (written, synced and renamed
    /// into place, so a crash leaves the old journal or the new one).
    fn rewrite(&mut self, state: &State) -> Result<(), StoreError> {
        let bytes = state.encode();
        berth_daemon::write_file(&self.path, &bytes, 0o600).map_err(StoreError::Sync)?;
        match Self::open_append(&self.path) {
            Ok(file) => {
                self.file = Arc::new(file);
                self.len = bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Appends would go to the replaced file, lost on restart.
                self.broken = Some(e.to_string());
                Err(e)
            }
        }
    }
}

struct Inner {
    state: State,
    /// `None` for a temporary store, which keeps nothing on disk.
    journal: Option<Journal>,
}

/// Cheap to clone; clones share the store.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Mutex<Inner>>,
    /// The `flock`ed lock file, released when the last clone is dropped.
    _lock: Option<Arc<File>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`, converting a sled store an
    /// earlier agent left there.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        let lock_path = dir.join(LOCK);
        let lock = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io_err("open", &lock_path))?;
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(StoreError::Locked {
                    path: dir.to_path_buf(),
                })
            }
            Err(e) => return Err(io_err("lock", &lock_path)(e.into())),
        }
        let path = dir.join(JOURNAL);
        let state = match std::fs::read(&path) {
            Ok(bytes) => Self::recover(&path, &bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let state = if from_sled::has_store(dir) {
                    from_sled::read(dir)?
                } else {
                    State::default()
                };
                berth_daemon::write_file(&path, &state.encode(), 0o600)
                    .map_err(StoreError::Sync)?;
                state
            }
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        // After a conversion, or one a crash cut short after the journal
        // was in place: the journal is the store now.
        from_sled::remove(dir)?;
        let file = Journal::open_append(&path)?;
        let len = file.metadata().map_err(io_err("stat", &path))?.len();
        Ok(Store {
            inner: Arc::new(Mutex::new(Inner {
                state,
                journal: Some(Journal {
                    path,
                    file: Arc::new(file),
                    len,
                    broken: None,
                }),
            })),
            _lock: Some(Arc::new(lock)),
        })
    }

    /// Replays the journal, cutting off a torn last record.
    fn recover(path: &Path, bytes: &[u8]) -> Result<State, StoreError> {
        let (state, torn_at) = replay(bytes).map_err(|reason| StoreError::Corrupt {
            path: path.to_path_buf(),
            reason,
        })?;
        if let Some(at) = torn_at {
            tracing::warn!(path = %path.display(), at, dropped = bytes.len() - at, "the task store's journal ends in a record that was never completed; dropping it");
            let file = Journal::open_append(path)?;
            file.set_len(at as u64).map_err(io_err("truncate", path))?;
            file.sync_data().map_err(io_err("sync", path))?;
        }
        Ok(state)
    }

    /// A store that keeps nothing on disk, for tests.
    pub fn temporary() -> Result<Self, StoreError> {
        Ok(Store {
            inner: Arc::new(Mutex::new(Inner {
                state: State::default(),
                journal: None,
            })),
            _lock: None,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding it left the state as the last completed
        // change: every change is applied after its append succeeded.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends the change, then applies it in memory.
    fn change(&self, kind: Kind, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.change_if(kind, key, value, |_| true)
    }

    /// [`Store::change`], only if `wanted` says so of the state: decided
    /// under the same lock as the append, so no other change comes between.
    fn change_if(
        &self,
        kind: Kind,
        key: &str,
        value: &[u8],
        wanted: impl FnOnce(&State) -> bool,
    ) -> Result<(), StoreError> {
        let bytes = record(kind, key, value)?;
        let mut inner = self.lock();
        if !wanted(&inner.state) {
            return Ok(());
        }
        if let Some(journal) = &mut inner.journal {
            journal.append(&bytes)?;
        }
        inner
            .state
            .apply(kind, key, value)
            .map_err(|reason| StoreError::Encode {
                key: key.to_string(),
                reason,
            })
    }

    pub fn load(&self) -> Result<Loaded, StoreError> {
        let inner = self.lock();
        let state = &inner.state;
        let mut loaded = Loaded {
            last_sequence: state.last_sequence,
            ..Loaded::default()
        };
        for (task_id, bytes) in &state.assignments {
            let assignment = match pb::Assignment::decode(bytes.as_slice()) {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!(task_id = %task_id, error = %e, "stored assignment is unreadable; its containers are left alone");
                    loaded.unreadable.push(task_id.clone());
                    continue;
                }
            };
            let record = match state.records.get(task_id) {
                None => None,
                Some(bytes) => match serde_json::from_slice::<TaskRecord>(bytes) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        // The containers themselves still say what runs.
                        tracing::warn!(task_id = %task_id, error = %e, "stored task record is unreadable; rebuilding it from the runtime");
                        None
                    }
                },
            };
            loaded.tasks.push(StoredTask {
                assignment,
                record,
                stopped_reported: state.reported.contains(task_id),
            });
        }
        Ok(loaded)
    }

    pub fn put_assignment(&self, assignment: &pb::Assignment) -> Result<(), StoreError> {
        self.change(
            Kind::Assignment,
            &assignment.task_id,
            &assignment.encode_to_vec(),
        )
    }

    pub fn put_record(&self, task_id: &str, record: &TaskRecord) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(record).map_err(|e| StoreError::Encode {
            key: task_id.to_string(),
            reason: e.to_string(),
        })?;
        self.change(Kind::Record, task_id, &bytes)
    }

    pub fn mark_stopped_reported(&self, task_id: &str) -> Result<(), StoreError> {
        // Only for tasks still known: a late mark must not resurrect a key
        // of a task that was just forgotten.
        self.change_if(Kind::Reported, task_id, &[], |state| {
            state.assignments.contains_key(task_id) && !state.reported.contains(task_id)
        })
    }

    /// Forgets the task entirely.
    pub fn remove_task(&self, task_id: &str) -> Result<(), StoreError> {
        self.change_if(Kind::Remove, task_id, &[], |state| {
            state.assignments.contains_key(task_id)
                || state.records.contains_key(task_id)
                || state.reported.contains(task_id)
        })
    }

    pub fn last_sequence(&self) -> Result<u64, StoreError> {
        Ok(self.lock().state.last_sequence)
    }

    pub fn set_last_sequence(&self, sequence: u64) -> Result<(), StoreError> {
        self.change(Kind::LastSequence, "", &sequence.to_be_bytes())
    }

    /// Makes every change so far durable: one `fdatasync` of the journal,
    /// on the blocking pool. Then, if the journal has grown to several
    /// times what is live, rewrites it (a failed rewrite leaves the synced
    /// journal as it was, and is only logged).
    pub async fn flush(&self) -> Result<(), StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.sync())
            .await
            .map_err(|e| StoreError::Interrupted(e.to_string()))?
    }

    fn sync(&self) -> Result<(), StoreError> {
        let (file, path) = match &self.lock().journal {
            None => return Ok(()),
            Some(journal) => {
                if let Some(reason) = &journal.broken {
                    return Err(StoreError::Broken {
                        path: journal.path.clone(),
                        reason: reason.clone(),
                    });
                }
                (journal.file.clone(), journal.path.clone())
            }
        };
        // Not under the lock: changes keep going while the disk works.
        file.sync_data().map_err(io_err("sync", &path))?;
        let mut inner = self.lock();
        let Inner { state, journal } = &mut *inner;
        if let Some(journal) = journal {
            if journal.len >= COMPACT_MIN_BYTES
                && journal.len >= COMPACT_FACTOR * state.encoded_len()
            {
                let before = journal.len;
                match journal.rewrite(state) {
                    Ok(()) => {
                        tracing::debug!(before, after = journal.len, "task store journal rewritten")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot rewrite the task store's journal; it keeps growing until a rewrite succeeds")
                    }
                }
            }
        }
        Ok(())
    }
}

/// Reading the sled store of an earlier agent, once, to convert it.
mod from_sled {
    use super::*;

    /// sled's own files in the store's directory.
    const FILES: [&str; 2] = ["db", "conf"];
    pub(super) const LAST_SEQUENCE: &[u8] = b"last_sequence";
    /// Present in every sled store an agent opened; one that exists but
    /// reads back without it was damaged (sled 0.34 can open a damaged
    /// file as an empty database instead of reporting it).
    pub(super) const MARKER: &[u8] = b"berth_agent_store";

    pub(super) fn has_store(dir: &Path) -> bool {
        dir.join("db").exists()
    }

    pub(super) fn read(dir: &Path) -> Result<State, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            path: dir.to_path_buf(),
            reason,
        };
        let sled_err = |source| StoreError::Sled {
            path: dir.to_path_buf(),
            source,
        };
        let existed = std::fs::metadata(dir.join("db")).is_ok_and(|m| m.len() > 0);
        // sled panics on some damage while recovering; that is corruption
        // too, not a reason for the agent to crash without saying so.
        let opened = std::panic::catch_unwind(|| {
            let db = ::sled::Config::new().path(dir).open()?;
            let mut state = State::default();
            let tree = |name: &str| -> Result<Vec<(String, Vec<u8>)>, ::sled::Error> {
                db.open_tree(name)?
                    .iter()
                    .map(|kv| {
                        kv.map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v.to_vec()))
                    })
                    .collect()
            };
            state.assignments = tree("assignments")?.into_iter().collect();
            state.records = tree("records")?.into_iter().collect();
            state.reported = tree("stopped_reported")?
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            state.last_sequence = db
                .get(LAST_SEQUENCE)?
                .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            let marked = db.contains_key(MARKER)?;
            Ok::<_, ::sled::Error>((state, marked))
        });
        let (state, marked) = match opened {
            Ok(Ok(read)) => read,
            Ok(Err(::sled::Error::Corruption { at, .. })) => {
                return Err(corrupt(format!("sled found damage at {at:?}")))
            }
            Ok(Err(source)) if source.to_string().contains("could not acquire lock") => {
                return Err(StoreError::Locked {
                    path: dir.to_path_buf(),
                })
            }
            Ok(Err(source)) => return Err(sled_err(source)),
            Err(panic) => {
                return Err(corrupt(format!(
                    "reading it failed: {}",
                    berth_daemon::panic_message(panic.as_ref())
                )));
            }
        };
        let empty = state.assignments.is_empty()
            && state.records.is_empty()
            && state.reported.is_empty()
            && state.last_sequence == 0;
        if existed && !marked && empty {
            return Err(corrupt(
                "the sled store file is there but reads back empty".into(),
            ));
        }
        tracing::info!(path = %dir.display(), tasks = state.assignments.len(), "converting the task store from sled to a journal");
        Ok(state)
    }

    /// Deletes sled's files, once the journal holds what they held.
    pub(super) fn remove(dir: &Path) -> Result<(), StoreError> {
        let gone = |r: std::io::Result<()>, path: &Path| match r {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err("remove", path)(e)),
            _ => Ok(()),
        };
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => return Err(io_err("list", dir)(e)),
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let path = entry.path();
            if FILES.contains(&name.as_ref()) || name.starts_with("snap.") {
                gone(std::fs::remove_file(&path), &path)?;
            } else if name == "blobs" {
                gone(std::fs::remove_dir_all(&path), &path)?;
            }
        }
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

    fn journal(dir: &Path) -> Vec<u8> {
        std::fs::read(dir.join(JOURNAL)).expect("read journal")
    }

    /// Task ids and last sequence, for comparing whole stores.
    fn summary(store: &Store) -> (Vec<String>, u64) {
        let loaded = store.load().expect("load");
        let ids = loaded
            .tasks
            .iter()
            .map(|t| t.assignment.task_id.clone())
            .collect();
        (ids, loaded.last_sequence)
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

    /// A kill at any byte of an append: the store opens with exactly the
    /// changes whose records were whole, and takes new ones after them.
    #[tokio::test]
    async fn a_kill_at_every_byte_keeps_the_whole_records_before_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The journal's length after each change, and what it then held.
        let mut after = Vec::new();
        {
            let store = Store::open(dir.path()).expect("open");
            after.push((journal(dir.path()).len(), summary(&store)));
            for i in 1..=4u64 {
                store
                    .put_assignment(&assignment(&format!("t-{i}")))
                    .expect("put");
                after.push((journal(dir.path()).len(), summary(&store)));
                store.set_last_sequence(i).expect("seq");
                after.push((journal(dir.path()).len(), summary(&store)));
            }
        }
        let full = journal(dir.path());
        for cut in MAGIC.len()..=full.len() {
            let copy = tempfile::tempdir().expect("tempdir");
            std::fs::write(copy.path().join(JOURNAL), &full[..cut]).expect("write");
            let store = Store::open(copy.path()).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
            let expected = &after
                .iter()
                .rev()
                .find(|(len, _)| *len <= cut)
                .expect("the header is always there")
                .1;
            assert_eq!(&summary(&store), expected, "cut at byte {cut}");
            store.set_last_sequence(99).expect("append after the cut");
            drop(store);
            let store = Store::open(copy.path()).expect("reopen");
            assert_eq!(summary(&store).1, 99, "cut at byte {cut}");
        }
    }

    #[tokio::test]
    async fn damage_before_valid_records_is_refused_and_left_alone() {
        for (what, at) in [("header", 0usize), ("first record", MAGIC.len() + 5)] {
            let dir = tempfile::tempdir().expect("tempdir");
            {
                let store = Store::open(dir.path()).expect("open");
                for i in 0..3 {
                    store
                        .put_assignment(&assignment(&format!("t-{i}")))
                        .expect("put");
                }
                store.flush().await.expect("flush");
            }
            let mut bytes = journal(dir.path());
            bytes[at] ^= 0x5a;
            std::fs::write(dir.path().join(JOURNAL), &bytes).expect("write");
            let err = Store::open(dir.path()).expect_err(what).to_string();
            assert!(err.contains("is corrupt"), "{what}: {err}");
            assert!(
                err.contains("move") && err.contains("aside"),
                "{what}: {err}"
            );
            assert!(!err.contains("another berth-agent"), "{what}: {err}");
            assert_eq!(journal(dir.path()), bytes, "{what}: the file was changed");
        }
    }

    #[tokio::test]
    async fn a_store_in_use_names_the_other_agent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = Store::open(dir.path()).expect("open");
        let err = Store::open(dir.path()).expect_err("locked").to_string();
        assert!(err.contains("another berth-agent"), "{err}");
        drop(first);
        Store::open(dir.path()).expect("free once the first is closed");
    }

    /// Rewrites keep the journal near what is live, and lose nothing.
    #[tokio::test]
    async fn a_grown_journal_is_rewritten_to_what_is_live() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        store.put_assignment(&assignment("t-1")).expect("put");
        store.put_record("t-1", &record()).expect("record");
        let mut written = 0;
        while written < 3 * COMPACT_MIN_BYTES {
            store.set_last_sequence(written).expect("seq");
            store.put_record("t-1", &record()).expect("record");
            written = journal(dir.path()).len() as u64;
        }
        store.flush().await.expect("flush");
        let after = journal(dir.path()).len() as u64;
        assert!(after < 4096, "the journal is still {after} bytes");
        store.set_last_sequence(7).expect("seq after the rewrite");
        drop(store);
        let store = Store::open(dir.path()).expect("reopen");
        let loaded = store.load().expect("load");
        assert_eq!(loaded.last_sequence, 7);
        assert_eq!(loaded.tasks.len(), 1);
        assert_eq!(loaded.tasks[0].record, Some(record()));
    }

    /// The store as an agent before the journal left it.
    fn sled_store(dir: &Path) {
        let db = ::sled::Config::new().path(dir).open().expect("sled");
        db.insert(from_sled::MARKER, &[1u8][..]).expect("marker");
        db.insert(from_sled::LAST_SEQUENCE, &11u64.to_be_bytes()[..])
            .expect("seq");
        let assignments = db.open_tree("assignments").expect("tree");
        let records = db.open_tree("records").expect("tree");
        let reported = db.open_tree("stopped_reported").expect("tree");
        for i in 0..300 {
            let mut a = assignment(&format!("t-{i:03}"));
            a.cluster = "x".repeat(1000);
            assignments
                .insert(a.task_id.as_bytes(), a.encode_to_vec())
                .expect("put");
        }
        records
            .insert("t-001", serde_json::to_vec(&record()).expect("json"))
            .expect("record");
        reported.insert("t-002", &[1u8][..]).expect("reported");
        db.flush().expect("flush");
        drop((assignments, records, reported, db));
        // sled's flusher thread holds the database, and with it the lock
        // on its file, for a moment after the last handle is dropped: an
        // agent that has exited has let go, so wait for the same here.
        let file = File::open(dir.join("db")).expect("open db");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
            .is_err()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "sled still holds its lock"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[tokio::test]
    async fn a_sled_store_is_converted() {
        let dir = tempfile::tempdir().expect("tempdir");
        sled_store(dir.path());
        for open in ["converting", "again"] {
            let store = Store::open(dir.path()).expect(open);
            let loaded = store.load().expect("load");
            assert_eq!(loaded.last_sequence, 11, "{open}");
            assert_eq!(loaded.tasks.len(), 300, "{open}");
            assert_eq!(loaded.tasks[1].record, Some(record()), "{open}");
            assert!(loaded.tasks[2].stopped_reported, "{open}");
            assert!(!loaded.tasks[1].stopped_reported, "{open}");
            assert_eq!(loaded.tasks[299].assignment.cluster.len(), 1000, "{open}");
            assert!(
                !dir.path().join("db").exists(),
                "{open}: sled's file is left"
            );
            assert!(
                !dir.path().join("conf").exists(),
                "{open}: sled's conf is left"
            );
        }
    }

    /// sled 0.34 reads damage in its log as the log's end, so damage past
    /// the first records loses them silently (a limit documented in
    /// docs/operations.md); damage that leaves nothing readable, as here,
    /// must not pass for a new store.
    #[tokio::test]
    async fn a_damaged_sled_store_is_named_corrupt_and_not_converted() {
        for (what, pick) in [
            ("head", (|_| 0..4096) as fn(usize) -> std::ops::Range<usize>),
            ("everything", |len| 0..len),
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            sled_store(dir.path());
            let path = dir.path().join("db");
            let mut bytes = std::fs::read(&path).expect("read db");
            let range = pick(bytes.len());
            for b in &mut bytes[range] {
                *b ^= 0x5a;
            }
            std::fs::write(&path, &bytes).expect("write db");
            let err = Store::open(dir.path()).expect_err(what).to_string();
            assert!(err.contains("is corrupt"), "{what}: {err}");
            assert!(!err.contains("another berth-agent"), "{what}: {err}");
            assert!(!dir.path().join(JOURNAL).exists(), "{what}");
            let again = Store::open(dir.path()).expect_err(what).to_string();
            assert!(again.contains("is corrupt"), "{what}: {again}");
        }
    }

    #[tokio::test]
    async fn remove_forgets_everything_and_late_marks_do_not_resurrect() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(dir.path()).expect("open");
            store.put_assignment(&assignment("t-1")).expect("put");
            store.put_record("t-1", &record()).expect("record");
            store.mark_stopped_reported("t-1").expect("mark");
            store.remove_task("t-1").expect("remove");
            store.mark_stopped_reported("t-1").expect("late mark");
            store
                .put_assignment(&assignment("t-1"))
                .expect("assigned again");
            let loaded = store.load().expect("load");
            assert_eq!(loaded.tasks.len(), 1);
            assert_eq!(loaded.tasks[0].record, None);
            assert!(!loaded.tasks[0].stopped_reported);
        }
        let store = Store::open(dir.path()).expect("reopen");
        let loaded = store.load().expect("load");
        assert_eq!(loaded.tasks.len(), 1);
        assert_eq!(loaded.tasks[0].record, None, "the record came back");
        assert!(!loaded.tasks[0].stopped_reported, "the mark came back");
    }

    #[test]
    fn records_written_before_restart_counts_still_load() {
        let store = Store::temporary().expect("store");
        store.put_assignment(&assignment("t-1")).expect("put");
        let old = br#"{"status":"RUNNING","containers":[{"name":"web","id":"t-1-web","status":"RUNNING","health":"UNKNOWN","started":true}]}"#;
        store.change(Kind::Record, "t-1", old).expect("raw");
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
            .change(Kind::Assignment, "t-bad", &[0xff, 0xff, 0xff])
            .expect("raw");
        let loaded = store.load().expect("load");
        assert_eq!(loaded.tasks.len(), 1);
        assert_eq!(loaded.unreadable, vec!["t-bad".to_string()]);
    }
}
