//! First start of a member of `--initial-cluster`: form the cluster, or
//! find that it exists already and catch up without voting.
//!
//! A server whose data dir is empty cannot tell a first start from a restart
//! after its disk was lost. In the second case it has forgotten its Raft
//! vote: initializing again, or voting before it has caught up, could give
//! one term two votes from it, and a term two leaders. So before
//! initializing it asks the other members over the server-to-server
//! transport. If one of them already belongs to a cluster that has elected
//! a leader (it knows a leader, or has applied an entry), this server does
//! not initialize; it refuses to vote and does not stand for election until
//! it has followed a leader and applied at least as far as the most
//! advanced member it asked, and then the leader's commit index. A server
//! with an empty data dir and no `--initial-cluster` (one about to be added,
//! or a lost one started that way) also votes only once it has caught up
//! with a leader. A marker file in the data dir keeps that state across
//! restarts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_proto::pb;
use berth_store::NodeId;
use openraft::BasicNode;
use serde::{Deserialize, Serialize};

use crate::network::{CallError, PeerRpc};
use crate::{BerthNode, ServerError};

pub(crate) const MARKER: &str = "rejoin.json";
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// What the other members said, as far as forming the cluster goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Nobody answered with a working cluster: form it (openraft lets every
    /// initial member initialize with the same membership).
    Initialize,
    /// `by` already belongs to a working cluster: catch up to `applied`
    /// before voting.
    Rejoin { by: NodeId, term: u64, applied: u64 },
}

/// Decides from the members' answers (unreachable ones count for nothing).
pub fn decide(answers: &[(NodeId, Result<pb::NodeStatusResponse, CallError>)]) -> Decision {
    let mut decision = Decision::Initialize;
    for (id, answer) in answers {
        let Ok(status) = answer else { continue };
        let working = status.leader_id.is_some() || status.applied_index > 0;
        if !working {
            continue;
        }
        let furthest = match &decision {
            Decision::Rejoin { applied, .. } => status.applied_index > *applied,
            Decision::Initialize => true,
        };
        if furthest {
            decision = Decision::Rejoin {
                by: *id,
                term: status.term,
                applied: status.applied_index,
            };
        }
    }
    decision
}

/// Asks every other member for its status.
pub async fn probe(
    node: &BerthNode,
    members: &BTreeMap<NodeId, String>,
) -> Vec<(NodeId, Result<pb::NodeStatusResponse, CallError>)> {
    let asks = members
        .iter()
        .filter(|(id, _)| **id != node.id())
        .map(|(id, addr)| async move {
            let answer = node
                .transport()
                .call(addr, PeerRpc::NodeStatus, Vec::new(), PROBE_TIMEOUT)
                .await
                .and_then(|bytes| {
                    <pb::NodeStatusResponse as prost::Message>::decode(bytes.as_slice())
                        .map_err(|e| CallError::Unknown(format!("bad status: {e}")))
                });
            (*id, answer)
        });
    futures::future::join_all(asks).await
}

#[derive(Serialize, Deserialize)]
struct Marker {
    /// Applied index to reach before voting.
    catch_up_to: u64,
}

fn marker_path(data_dir: &Path) -> PathBuf {
    data_dir.join(MARKER)
}

fn unusable(path: &Path, e: impl std::fmt::Display) -> ServerError {
    ServerError::FailedPrecondition(format!("{}: {e}", path.display()))
}

/// Runs once Raft has started: resumes an unfinished catch-up, or on a
/// fresh data dir of an `--initial-cluster` member, forms the cluster or
/// starts catching up.
pub async fn form_or_rejoin(
    node: &BerthNode,
    data_dir: &Path,
    fresh: bool,
    initial_cluster: Option<&BTreeMap<NodeId, String>>,
) -> Result<(), ServerError> {
    let marker = marker_path(data_dir);
    match std::fs::read(&marker) {
        Ok(bytes) => {
            let found: Marker = serde_json::from_slice(&bytes).map_err(|e| unusable(&marker, e))?;
            tracing::warn!(
                catch_up_to = found.catch_up_to,
                "still catching up after rejoining with an empty data dir; not voting until then"
            );
            node.hold_votes_until(found.catch_up_to, Some(marker));
            return Ok(());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(unusable(&marker, e)),
    }
    if !fresh {
        return Ok(());
    }
    let Some(members) = initial_cluster else {
        // A new server, to be added with `berth server add`, or a lost one
        // started without its --initial-cluster: either way it has no vote
        // to remember, and votes only once it has a full log.
        tracing::info!("empty data dir: not voting until this server has caught up with a leader");
        return hold(node, &marker, 0);
    };
    match decide(&probe(node, members).await) {
        Decision::Initialize => {
            let members = members
                .iter()
                .map(|(id, addr)| (*id, BasicNode::new(addr.clone())))
                .collect();
            node.initialize(members).await
        }
        Decision::Rejoin { by, term, applied } => {
            tracing::warn!(
                peer = by,
                term,
                applied,
                "not initializing: the cluster in --initial-cluster exists already and this data dir is empty (a lost disk?); this server neither votes nor stands for election until it has caught up. Replace it properly: `berth server remove ID`, then `berth server add ID ADDR` (docs/operations.md)"
            );
            hold(node, &marker, applied)
        }
    }
}

/// Holds votes until caught up to `catch_up_to` (and to the leader's
/// commit index), recording that in `marker` first.
fn hold(node: &BerthNode, marker: &Path, catch_up_to: u64) -> Result<(), ServerError> {
    let bytes = serde_json::to_vec(&Marker { catch_up_to }).map_err(|e| unusable(marker, e))?;
    crate::identity::write_atomically(marker, &bytes).map_err(|e| unusable(marker, e))?;
    node.hold_votes_until(catch_up_to, Some(marker.to_path_buf()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(term: u64, leader: Option<u64>, applied: u64) -> pb::NodeStatusResponse {
        pb::NodeStatusResponse {
            term,
            leader_id: leader,
            applied_index: applied,
            ..Default::default()
        }
    }

    #[test]
    fn only_a_member_of_a_working_cluster_stops_the_initialization() {
        let down = || Err(CallError::NotSent("refused".into()));
        // First start: the others are down, or up and empty, or campaigning
        // without ever having had a leader.
        assert_eq!(decide(&[(2, down()), (3, down())]), Decision::Initialize);
        assert_eq!(
            decide(&[(2, Ok(status(0, None, 0))), (3, Ok(status(4, None, 0)))]),
            Decision::Initialize
        );
        // A cluster with a leader, or with applied entries, exists.
        assert_eq!(
            decide(&[(2, Ok(status(3, Some(2), 0))), (3, down())]),
            Decision::Rejoin {
                by: 2,
                term: 3,
                applied: 0
            }
        );
        assert_eq!(
            decide(&[
                (2, Ok(status(5, None, 40))),
                (3, Ok(status(5, Some(1), 42)))
            ]),
            Decision::Rejoin {
                by: 3,
                term: 5,
                applied: 42
            }
        );
    }
}
