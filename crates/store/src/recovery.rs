//! Offline changes to a stopped server's Raft storage, for the two ways
//! out of a disaster: recovering from one survivor after a majority of the
//! servers was lost for good (etcd's `--force-new-cluster`, Nomad's
//! `peers.json`), and starting a new cluster from an online backup (etcd's
//! `snapshot restore`).
//!
//! Both end the same way: one membership entry is appended to the log that
//! names this server as the only voter, in a term above any this data dir
//! has seen, with a vote for that term. openraft takes the newest
//! membership in the log as the one in effect as soon as it is read, so on
//! the next start this server is the only voter, elects itself, and its
//! first entry as leader commits everything before it. Nothing in the log
//! is dropped, committed or not: an entry the survivor held may have been
//! acknowledged by the lost majority, and every entry in a log was
//! proposed by a leader (at worst it is a write whose caller was told the
//! outcome is unknown). The entry is applied like any membership change,
//! so the journal records the recovery as a membership event.
//!
//! Appending an entry rather than rewriting the snapshot leaves the
//! snapshot file and every existing entry byte for byte as they were, and
//! running it twice is harmless: the second run finds this server already
//! the only voter and changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload, Membership, RaftLogReader};

use crate::snapshot_file::{decode_file, SnapshotFile};
use crate::{
    Entry, LogId, LogStore, Node, NodeId, StateMachineStore, StoreError, StoredMembership, Vote,
};

/// Entries read at once while looking for the newest membership: bounds
/// memory on a log of large entries.
const SCAN_CHUNK: u64 = 64;

/// What a stopped server's Raft storage holds.
#[derive(Debug, Clone)]
pub struct RaftSummary {
    pub vote: Option<Vote>,
    /// The newest entry in the log (or the one it was purged up to).
    pub last_log_id: Option<LogId>,
    /// The newest entry this server knew to be committed. Saved without a
    /// flush of its own, so it may lag behind what was committed.
    pub committed: Option<LogId>,
    /// The newest entry the snapshot file includes.
    pub snapshot: Option<LogId>,
    /// The membership in effect: the newest in the log, else the snapshot's.
    pub membership: StoredMembership,
}

impl RaftSummary {
    pub fn voters(&self) -> Vec<NodeId> {
        self.membership.membership().voter_ids().collect()
    }

    pub fn learners(&self) -> Vec<NodeId> {
        self.membership.membership().learner_ids().collect()
    }

    /// The address the membership gives `node_id`.
    pub fn address_of(&self, node_id: NodeId) -> Option<String> {
        self.membership
            .membership()
            .get_node(&node_id)
            .map(|n| n.addr.clone())
    }

    /// Entries in the log after the last one known to be committed: they
    /// become committed when this log is recovered.
    pub fn beyond_committed(&self) -> u64 {
        let last = self.last_log_id.map_or(0, |id| id.index);
        let committed = self.committed.max(self.snapshot).map_or(0, |id| id.index);
        last.saturating_sub(committed)
    }
}

/// The outcome of making a server the only voter.
#[derive(Debug, Clone)]
pub struct Forced {
    /// The storage as it was found.
    pub before: RaftSummary,
    /// The membership entry appended; `None` when this server already was
    /// the only voter at that address and nothing was changed.
    pub entry: Option<LogId>,
    /// This server's address in the new membership.
    pub address: String,
}

/// Reads what `dir` holds without changing the Raft state (for a dry run,
/// and to choose the survivor with the longest log).
pub async fn inspect(dir: &Path) -> Result<RaftSummary, StoreError> {
    let (mut log, mut sm) = crate::open(dir)?;
    summarize(&mut log, &mut sm).await
}

/// Makes `node_id` the only voter of the cluster in `dir`, at `address`
/// (default: its address in the membership). It must be a member of the
/// membership there.
pub async fn recover(
    dir: &Path,
    node_id: NodeId,
    address: Option<&str>,
) -> Result<Forced, StoreError> {
    let (mut log, mut sm) = crate::open(dir)?;
    let before = summarize(&mut log, &mut sm).await?;
    if before.membership.membership().nodes().next().is_none() {
        return Err(StoreError::NoCluster {
            path: dir.display().to_string(),
        });
    }
    let known = before
        .address_of(node_id)
        .ok_or_else(|| StoreError::NotAMember {
            path: dir.display().to_string(),
            node_id,
            voters: before.voters(),
            learners: before.learners(),
        })?;
    let address = address.map_or(known, str::to_string);
    force(&mut log, before, node_id, address).await
}

/// Creates the storage of a new one-server cluster in `dir` (which must not
/// hold a database or a snapshot yet) from a snapshot file's `bytes`: an
/// online backup or a copy of some server's `snapshots/current`. `source`
/// names the file in errors. `address` may be left out when the snapshot's
/// membership has `node_id`.
pub async fn restore(
    dir: &Path,
    source: &Path,
    bytes: &[u8],
    node_id: NodeId,
    address: Option<&str>,
) -> Result<Forced, StoreError> {
    let (meta, data) = decode_file(source, bytes)?;
    let applied = crate::state_machine::decode_payload(&data).map_err(|e| match e {
        StoreError::Format { found, reads, .. } => StoreError::Format {
            what: format!("backup {}", source.display()),
            found,
            reads,
        },
        other => other,
    })?;
    let Some(last) = meta.last_log_id else {
        return Err(StoreError::BackupEmpty {
            path: source.display().to_string(),
        });
    };
    if applied.last_applied != meta.last_log_id {
        return Err(StoreError::SnapshotCorrupt {
            path: source.display().to_string(),
            reason: format!(
                "its metadata says it ends at {last} and its state at {:?}",
                applied.last_applied
            ),
        });
    }
    for used in ["db", "wal", "snapshots"] {
        if dir.join(used).exists() {
            return Err(StoreError::NotEmpty {
                path: dir.display().to_string(),
                found: used.to_string(),
            });
        }
    }
    let address = match address {
        Some(a) => a.to_string(),
        None => meta
            .last_membership
            .membership()
            .get_node(&node_id)
            .map(|n| n.addr.clone())
            .ok_or(StoreError::AddressNeeded { node_id })?,
    };
    let snapshots = dir.join("snapshots");
    let (file, _) = SnapshotFile::open(&snapshots)?;
    file.write(&meta, &data)?;
    drop(file);
    let (mut log, mut sm) = crate::open(dir)?;
    // The log starts after the snapshot, as on a server that compacted it.
    log.purge(last).await?;
    let before = summarize(&mut log, &mut sm).await?;
    force(&mut log, before, node_id, address).await
}

async fn summarize(
    log: &mut LogStore,
    sm: &mut StateMachineStore,
) -> Result<RaftSummary, StoreError> {
    let vote = log.read_vote().await?;
    let committed = log.read_committed().await?;
    let state = log.get_log_state().await?;
    // Nothing is applied at open: this is the snapshot's.
    let (snapshot, mut membership) = sm.applied_state().await?;
    let mut next = snapshot
        .max(state.last_purged_log_id)
        .map_or(0, |id| id.index + 1);
    let end = state.last_log_id.map_or(0, |id| id.index + 1);
    while next < end {
        let upto = (next + SCAN_CHUNK).min(end);
        for entry in log.try_get_log_entries(next..upto).await? {
            if let EntryPayload::Membership(m) = entry.payload {
                membership = StoredMembership::new(Some(entry.log_id), m);
            }
        }
        next = upto;
    }
    Ok(RaftSummary {
        vote,
        last_log_id: state.last_log_id,
        committed,
        snapshot,
        membership,
    })
}

async fn force(
    log: &mut LogStore,
    before: RaftSummary,
    node_id: NodeId,
    address: String,
) -> Result<Forced, StoreError> {
    let alone = before.voters() == [node_id]
        && before.learners().is_empty()
        && before.address_of(node_id).as_deref() == Some(address.as_str());
    if alone {
        return Ok(Forced {
            before,
            entry: None,
            address,
        });
    }
    let term = before
        .last_log_id
        .map_or(0, |id| id.leader_id.term)
        .max(before.vote.map_or(0, |v| v.leader_id.term))
        + 1;
    let index = before.last_log_id.map_or(0, |id| id.index) + 1;
    // The vote goes first: an entry of a term must never be on disk without
    // a vote at least that new, or the log would read as coming from a
    // leader this server never voted for. Left uncommitted, so that the
    // server starts as a follower and wins an ordinary election (its own
    // vote is a quorum) instead of resuming leadership of a term it never
    // led.
    log.save_vote(&Vote::new(term, node_id)).await?;
    let membership = Membership::new(
        vec![BTreeSet::from([node_id])],
        BTreeMap::from([(node_id, Node::new(address.clone()))]),
    );
    let entry = LogId::new(CommittedLeaderId::new(term, node_id), index);
    // Returns once the entry is synced to disk.
    log.blocking_append([Entry {
        log_id: entry,
        payload: EntryPayload::Membership(membership),
    }])
    .await?;
    tracing::info!(%entry, node_id, %address, "appended a membership with this server as the only voter");
    Ok(Forced {
        before,
        entry: Some(entry),
        address,
    })
}
