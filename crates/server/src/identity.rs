//! Which node and which cluster a data dir belongs to. Starting a server on
//! another node's data dir, or on a data dir of another cluster, would
//! corrupt Raft's guarantees, so it is refused before anything is opened.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{ServeOptions, ServerError};

const FILE: &str = "node.json";

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct DataDirIdentity {
    node_id: u64,
    /// The `--initial-cluster` the cluster was formed with, normalised; empty
    /// for a server that joined an existing cluster.
    initial_cluster: String,
}

fn fingerprint(options: &ServeOptions) -> String {
    options
        .initial_cluster
        .as_ref()
        .map(|members| {
            members
                .iter()
                .map(|(id, addr)| format!("{id}={addr}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn unusable(dir: &Path, e: impl std::fmt::Display) -> ServerError {
    ServerError::FailedPrecondition(format!("data dir {} is not usable: {e}", dir.display()))
}

/// Checks the data dir against this command line, recording the identity on
/// first use. Returns whether the data dir is fresh (first start).
pub fn claim(options: &ServeOptions) -> Result<bool, ServerError> {
    let dir = &options.data_dir;
    std::fs::create_dir_all(dir).map_err(|e| unusable(dir, e))?;
    let wanted = DataDirIdentity {
        node_id: options.node_id,
        initial_cluster: fingerprint(options),
    };
    if let Some(members) = &options.initial_cluster {
        match members.get(&options.node_id) {
            None => {
                return Err(ServerError::FailedPrecondition(format!(
                    "--initial-cluster does not include this server's --node-id {}",
                    options.node_id
                )))
            }
            Some(addr) if *addr != options.advertise => {
                return Err(ServerError::FailedPrecondition(format!(
                    "--initial-cluster puts node {} at {addr} but --advertise is {}; make them the same",
                    options.node_id, options.advertise
                )))
            }
            Some(_) => {}
        }
    }
    let path = dir.join(FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let found: DataDirIdentity = serde_json::from_slice(&bytes)
                .map_err(|e| unusable(dir, format!("{} is corrupt: {e}", path.display())))?;
            if found.node_id != wanted.node_id {
                return Err(ServerError::FailedPrecondition(format!(
                    "data dir {} belongs to node {}, not node {}; use --node-id {} or another --data-dir",
                    dir.display(),
                    found.node_id,
                    wanted.node_id,
                    found.node_id
                )));
            }
            // A server that joined later may be restarted with or without an
            // --initial-cluster (templated deployments give every server the
            // same line; it never forms anything once the dir exists); only
            // one that contradicts the cluster this dir was formed with is an
            // error.
            if !wanted.initial_cluster.is_empty() && found.initial_cluster.is_empty() {
                tracing::info!(
                    "this server joined an existing cluster; --initial-cluster is ignored"
                );
            } else if !wanted.initial_cluster.is_empty()
                && found.initial_cluster != wanted.initial_cluster
            {
                return Err(ServerError::FailedPrecondition(format!(
                    "data dir {} belongs to the cluster formed with --initial-cluster {}; this command line has --initial-cluster {}",
                    dir.display(),
                    found.initial_cluster,
                    wanted.initial_cluster
                )));
            }
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let bytes = serde_json::to_vec_pretty(&wanted).map_err(|e| unusable(dir, e))?;
            write_atomically(&path, &bytes).map_err(|e| unusable(dir, e))?;
            Ok(true)
        }
        Err(e) => Err(unusable(dir, e)),
    }
}

/// The node id recorded in `dir`, if it holds a `node.json`.
pub(crate) fn recorded_node_id(dir: &Path) -> Result<Option<u64>, ServerError> {
    let path = dir.join(FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let found: DataDirIdentity = serde_json::from_slice(&bytes)
                .map_err(|e| unusable(dir, format!("{} is corrupt: {e}", path.display())))?;
            Ok(Some(found.node_id))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(unusable(dir, e)),
    }
}

/// Records that `dir` belongs to node `node_id` of a cluster that no
/// `--initial-cluster` line formed (one made by `berthd recover` or
/// `berthd restore`): a line given later is ignored, as on a server that
/// joined, so the old cluster's line in a config file does no harm.
pub(crate) fn record_standalone(dir: &Path, node_id: u64) -> Result<(), ServerError> {
    let identity = DataDirIdentity {
        node_id,
        initial_cluster: String::new(),
    };
    let bytes = serde_json::to_vec_pretty(&identity).map_err(|e| unusable(dir, e))?;
    write_atomically(&dir.join(FILE), &bytes).map_err(|e| unusable(dir, e))
}

/// Replaces `path` with `bytes` whole: a crash leaves the old file or the
/// new one, never a part.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn options(dir: &Path, node_id: u64, cluster: &str) -> ServeOptions {
        let initial = crate::parse_initial_cluster(cluster).unwrap();
        ServeOptions {
            node_id,
            data_dir: dir.to_path_buf(),
            listen: "127.0.0.1:0".parse().unwrap(),
            advertise: initial[&node_id].clone(),
            initial_cluster: Some(initial),
            heartbeat_ms: 100,
            election_timeout_ms: 500,
            snapshot_threshold: 100,
            keep_logs_after_snapshot: 10,
            request_timeout: Duration::from_secs(1),
            pki_dir: dir.join("pki"),
            agent_cert_lifetime: Duration::from_secs(60),
            session: Default::default(),
            raft_runtime: None,
            health_listen: None,
            dns_listen: None,
            dns_upstream: None,
            agent_binary: None,
            dev_agent: None,
            ecs: None,
            limits: Default::default(),
        }
    }

    #[test]
    fn data_dir_is_claimed_once_and_checked_after() {
        let tmp = tempfile::tempdir().unwrap();
        let cluster = "1=127.0.0.1:7401,2=127.0.0.1:7402";
        assert!(claim(&options(tmp.path(), 1, cluster)).unwrap());
        assert!(!claim(&options(tmp.path(), 1, cluster)).unwrap());

        let other_node = claim(&options(tmp.path(), 2, cluster))
            .unwrap_err()
            .to_string();
        assert!(
            other_node.contains("belongs to node 1, not node 2"),
            "{other_node}"
        );

        let other_cluster = claim(&options(tmp.path(), 1, "1=127.0.0.1:7401,3=127.0.0.1:7403"))
            .unwrap_err()
            .to_string();
        assert!(
            other_cluster.contains("--initial-cluster"),
            "{other_cluster}"
        );
    }

    #[test]
    fn a_server_that_joined_later_accepts_the_clusters_initial_line() {
        let tmp = tempfile::tempdir().unwrap();
        let cluster = "1=127.0.0.1:7401,4=127.0.0.1:7404";
        let mut joined = options(tmp.path(), 4, cluster);
        joined.initial_cluster = None;
        assert!(claim(&joined).unwrap());
        // The same templated command line as its peers: accepted, ignored.
        assert!(!claim(&options(tmp.path(), 4, cluster)).unwrap());
    }

    /// After `berthd recover` or `restore`, the old cluster's line (or any
    /// other) is ignored rather than refused, and the node id still holds.
    #[test]
    fn a_recovered_data_dir_ignores_initial_cluster_lines() {
        let tmp = tempfile::tempdir().unwrap();
        let cluster = "1=127.0.0.1:7401,2=127.0.0.1:7402,3=127.0.0.1:7403";
        assert!(claim(&options(tmp.path(), 1, cluster)).unwrap());
        record_standalone(tmp.path(), 1).unwrap();
        assert_eq!(recorded_node_id(tmp.path()).unwrap(), Some(1));
        assert!(!claim(&options(tmp.path(), 1, cluster)).unwrap());
        assert!(!claim(&options(tmp.path(), 1, "1=127.0.0.1:7401")).unwrap());
        let other = claim(&options(tmp.path(), 2, cluster))
            .unwrap_err()
            .to_string();
        assert!(other.contains("belongs to node 1"), "{other}");
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(recorded_node_id(empty.path()).unwrap(), None);
    }

    #[test]
    fn node_must_be_in_its_initial_cluster_at_its_advertised_address() {
        let tmp = tempfile::tempdir().unwrap();
        let mut opts = options(tmp.path(), 1, "1=127.0.0.1:7401");
        opts.advertise = "127.0.0.1:9999".into();
        let err = claim(&opts).unwrap_err().to_string();
        assert!(err.contains("--advertise"), "{err}");
        opts.node_id = 5;
        let err = claim(&opts).unwrap_err().to_string();
        assert!(err.contains("does not include"), "{err}");
    }

    #[test]
    fn unusable_data_dir_is_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("plain-file");
        std::fs::write(&file, b"x").unwrap();
        let err = claim(&options(&file, 1, "1=127.0.0.1:7401"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not usable"), "{err}");
    }
}
