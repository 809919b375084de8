//! Typed key spaces. Each kind of record lives in its own sled tree or under
//! its own prefix byte; log indexes are big-endian so they sort numerically.

pub const LOG_TREE: &str = "raft_log";
pub const RAFT_META_TREE: &str = "raft_meta";
/// Where earlier versions wrote the state through on every apply (records
/// and metadata) and kept their snapshot; read once when upgrading.
pub const STATE_TREE: &str = "state_machine";
pub const SNAPSHOT_TREE: &str = "snapshot";

pub const VOTE: &[u8] = b"vote";
pub const LAST_PURGED: &[u8] = b"last_purged";
pub const COMMITTED: &[u8] = b"committed";

const META_PREFIX: u8 = b'm';
const RECORD_PREFIX: u8 = b'r';

pub const SNAPSHOT_META: &[u8] = b"meta";
pub const SNAPSHOT_DATA: &[u8] = b"data";

pub fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

pub fn log_index(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

pub fn sm_meta(name: &str) -> Vec<u8> {
    let mut key = vec![META_PREFIX];
    key.extend_from_slice(name.as_bytes());
    key
}

pub fn record_prefix() -> [u8; 1] {
    [RECORD_PREFIX]
}
