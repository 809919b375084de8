//! The status board: the current report of every task the agent knows, and
//! the changes the session has not sent yet. Task actors write it; the
//! session reads it (everything for a hello, the changes for a batch).
//!
//! It is bounded by construction: one current view per task, and at most
//! one queued report per task status (a newer report of the same status
//! replaces the queued one), so a disconnected session never piles up
//! reports. Statuses only move forward here too, whatever order actors
//! publish in.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use berth_proto::pb;
use berth_types::resources::Resources;
use berth_types::TaskStatus;
use tokio::sync::Notify;

/// One task as the board shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskView {
    pub status: TaskStatus,
    pub report: pb::TaskReport,
    /// Container names in definition order, with their runtime IDs once
    /// created (log requests name containers, the runtime wants IDs).
    pub containers: Vec<(String, Option<String>)>,
    /// What the task holds on this instance while it is not STOPPED.
    pub reservation: Resources,
}

#[derive(Default)]
struct Inner {
    tasks: BTreeMap<String, TaskView>,
    pending: BTreeMap<String, Vec<pb::TaskReport>>,
}

/// Cheap to clone; clones share the board.
#[derive(Clone, Default)]
pub struct StatusBoard {
    inner: Arc<Mutex<Inner>>,
    notify: Arc<Notify>,
}

impl std::fmt::Debug for StatusBoard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusBoard")
            .field("tasks", &self.lock().tasks.len())
            .finish()
    }
}

/// Why a log request cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogTargetError {
    #[error("task {0} is not known on this instance")]
    UnknownTask(String),
    #[error("task {task} has no container named {container:?}")]
    UnknownContainer { task: String, container: String },
    #[error("container {container:?} of task {task} has not been created yet")]
    NotCreated { task: String, container: String },
}

impl StatusBoard {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves data that is still
        // consistent (every update is a single insert), so keep using it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the task's current view and queues its report for the
    /// session. A view whose status is behind the current one is ignored:
    /// whoever published it is late, and the server would ignore it too.
    pub(crate) fn publish(&self, view: TaskView) {
        let mut inner = self.lock();
        if let Some(current) = inner.tasks.get(&view.report.task_id) {
            if view.status < current.status {
                return;
            }
        }
        let queue = inner
            .pending
            .entry(view.report.task_id.clone())
            .or_default();
        match queue.last_mut() {
            Some(last) if last.last_status == view.report.last_status => {
                *last = view.report.clone()
            }
            _ => queue.push(view.report.clone()),
        }
        inner.tasks.insert(view.report.task_id.clone(), view);
        drop(inner);
        self.notify.notify_one();
    }

    /// Records the view without queuing a report: for what was loaded at
    /// start, which the hello carries anyway.
    pub(crate) fn seed(&self, view: TaskView) {
        self.lock().tasks.insert(view.report.task_id.clone(), view);
    }

    pub(crate) fn forget(&self, task_id: &str) {
        let mut inner = self.lock();
        inner.tasks.remove(task_id);
        inner.pending.remove(task_id);
    }

    /// The current report of every known task, for a hello. Clears the
    /// queue: the hello says all of it.
    pub fn all_reports(&self) -> Vec<pb::TaskReport> {
        let mut inner = self.lock();
        inner.pending.clear();
        inner.tasks.values().map(|v| v.report.clone()).collect()
    }

    /// The queued reports, oldest status first per task.
    pub fn take_pending(&self) -> Vec<pb::TaskReport> {
        std::mem::take(&mut self.lock().pending)
            .into_values()
            .flatten()
            .collect()
    }

    /// Resolves once something was published since the last call (a
    /// publish while nobody waits is remembered).
    pub async fn changed(&self) {
        self.notify.notified().await;
    }

    pub fn status(&self, task_id: &str) -> Option<TaskStatus> {
        self.lock().tasks.get(task_id).map(|v| v.status)
    }

    pub fn view(&self, task_id: &str) -> Option<TaskView> {
        self.lock().tasks.get(task_id).cloned()
    }

    pub fn task_ids(&self) -> Vec<String> {
        self.lock().tasks.keys().cloned().collect()
    }

    /// What the tasks that are not STOPPED hold.
    pub fn reserved(&self) -> Resources {
        self.lock()
            .tasks
            .values()
            .filter(|v| v.status != TaskStatus::Stopped)
            .fold(Resources::ZERO, |sum, v| sum.saturating_add(v.reservation))
    }

    /// The runtime ID of a task's container; an empty name means the first
    /// container of the task definition.
    pub fn container_id(&self, task_id: &str, container: &str) -> Result<String, LogTargetError> {
        let inner = self.lock();
        let view = inner
            .tasks
            .get(task_id)
            .ok_or_else(|| LogTargetError::UnknownTask(task_id.to_string()))?;
        let found = if container.is_empty() {
            view.containers.first()
        } else {
            view.containers.iter().find(|(name, _)| name == container)
        };
        let (name, id) = found.ok_or_else(|| LogTargetError::UnknownContainer {
            task: task_id.to_string(),
            container: container.to_string(),
        })?;
        id.clone().ok_or_else(|| LogTargetError::NotCreated {
            task: task_id.to_string(),
            container: name.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(task: &str, status: TaskStatus, note: &str) -> TaskView {
        TaskView {
            status,
            report: pb::TaskReport {
                task_id: task.into(),
                last_status: status.as_str().into(),
                reason: note.into(),
                ..Default::default()
            },
            containers: vec![
                ("web".into(), Some(format!("{task}-web"))),
                ("log".into(), None),
            ],
            reservation: Resources::new(256, 128),
        }
    }

    #[test]
    fn reports_only_move_forward() {
        let board = StatusBoard::default();
        board.publish(view("t", TaskStatus::Running, ""));
        board.publish(view("t", TaskStatus::Pending, "late"));
        assert_eq!(board.status("t"), Some(TaskStatus::Running));
        let sent = board.take_pending();
        assert_eq!(sent.len(), 1);
        assert_eq!(
            TaskStatus::parse(&sent[0].last_status),
            Some(TaskStatus::Running)
        );
    }

    #[test]
    fn queue_keeps_one_report_per_status_in_order() {
        let board = StatusBoard::default();
        board.publish(view("t", TaskStatus::Pending, "a"));
        board.publish(view("t", TaskStatus::Running, "b"));
        board.publish(view("t", TaskStatus::Running, "c"));
        board.publish(view("t", TaskStatus::Stopped, "d"));
        let sent: Vec<(Option<TaskStatus>, String)> = board
            .take_pending()
            .into_iter()
            .map(|r| (TaskStatus::parse(&r.last_status), r.reason))
            .collect();
        assert_eq!(
            sent,
            vec![
                (Some(TaskStatus::Pending), "a".into()),
                (Some(TaskStatus::Running), "c".into()),
                (Some(TaskStatus::Stopped), "d".into())
            ]
        );
        assert!(board.take_pending().is_empty());
    }

    #[test]
    fn hello_snapshot_has_everything_and_clears_the_queue() {
        let board = StatusBoard::default();
        board.seed(view("a", TaskStatus::Running, ""));
        board.publish(view("b", TaskStatus::Pending, ""));
        let all = board.all_reports();
        assert_eq!(all.len(), 2);
        assert!(board.take_pending().is_empty());
        // STOPPED tasks hold nothing.
        board.publish(view("b", TaskStatus::Stopped, ""));
        assert_eq!(board.reserved(), Resources::new(256, 128));
    }

    #[test]
    fn container_lookup() {
        let board = StatusBoard::default();
        board.seed(view("t", TaskStatus::Running, ""));
        assert_eq!(board.container_id("t", ""), Ok("t-web".into()));
        assert_eq!(board.container_id("t", "web"), Ok("t-web".into()));
        assert!(matches!(
            board.container_id("t", "log"),
            Err(LogTargetError::NotCreated { .. })
        ));
        assert!(matches!(
            board.container_id("t", "db"),
            Err(LogTargetError::UnknownContainer { .. })
        ));
        assert!(matches!(
            board.container_id("x", ""),
            Err(LogTargetError::UnknownTask(_))
        ));
    }
}
