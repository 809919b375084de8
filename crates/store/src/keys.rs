//! Typed key spaces. Each kind of record lives in its own sled tree or under
//! its own prefix byte; log indexes are big-endian so they sort numerically.

/// Where data dirs of format 7 kept the Raft log's entries.
pub const LOG_TREE: &str = "raft_log";
pub const RAFT_META_TREE: &str = "raft_meta";
/// Trees of data format 1, which kept the state and its snapshot in sled;
/// their presence marks a data dir of that format.
pub const FORMAT_1_TREES: [&str; 2] = ["state_machine", "snapshot"];

pub const VOTE: &[u8] = b"vote";
pub const LAST_PURGED: &[u8] = b"last_purged";
pub const COMMITTED: &[u8] = b"committed";
/// The data format of the log and snapshots in this data dir (big-endian).
pub const FORMAT: &[u8] = b"format";

/// The key of entry `index` in `LOG_TREE`, where data dirs of format 7
/// kept the log (converted on open; tests write such data dirs).
#[cfg(test)]
pub fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}
