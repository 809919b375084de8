//! Rolling upgrades: a command is proposed only once every server of the
//! membership can apply it, so no server receives an entry it cannot decode.
//! Commands of level 1 (everything this format started with) need no check;
//! the servers are asked only for newer ones.

use std::time::Duration;

use berth_proto::pb;
use berth_store::NodeId;
use tonic::Request;

use crate::error::ServerError;
use crate::node::BerthNode;

/// What one member said when asked for its command level.
#[derive(Debug, Clone, PartialEq)]
pub enum MemberLevel {
    Reported(u32),
    /// It did not answer; `last` is what it reported before, if ever.
    Unreachable {
        why: String,
        last: Option<u32>,
    },
}

/// Why a command of level `needed` may not be proposed yet, if it may not:
/// every member that answers must report a level at least as high, and so
/// must the last report of one that does not. A member that does not answer
/// and never reported does not hold the write up: a quorum of the others
/// commits it either way, and if that member turns out to run an older
/// build it stops at the entry with an error naming the level instead of
/// misreading it (docs/design.md, "Command levels"). Losing a minority of
/// servers so never makes newer commands unavailable.
pub fn refusal(needed: u32, members: &[(NodeId, MemberLevel)]) -> Option<String> {
    let behind: Vec<String> = members
        .iter()
        .filter_map(|(id, level)| match level {
            MemberLevel::Reported(level) if *level >= needed => None,
            MemberLevel::Reported(level) => {
                Some(format!("server {id} applies up to level {level}"))
            }
            MemberLevel::Unreachable {
                why,
                last: Some(level),
            } if *level < needed => Some(format!(
                "server {id} did not say ({why}) and last applied up to level {level}"
            )),
            MemberLevel::Unreachable { .. } => None,
        })
        .collect();
    if behind.is_empty() {
        return None;
    }
    Some(format!(
        "this change needs command level {needed} on every server, and {}; finish upgrading every server, then retry",
        behind.join(", ")
    ))
}

/// The command levels members have reported, by node id. A server never
/// goes below a level it reported without a downgrade, and a downgraded
/// server that meets an entry above its level stops saying so instead of
/// misreading it; so once a member has reported a level, writes up to it
/// need not ask again. That keeps newer commands available while a
/// minority of servers is down (a member that cannot be asked counts with
/// what it said last), and spares a round of calls before every write.
#[derive(Debug, Default)]
pub struct KnownLevels(std::sync::Mutex<std::collections::HashMap<NodeId, u32>>);

impl KnownLevels {
    fn get(&self, id: NodeId) -> Option<u32> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .copied()
    }

    fn record(&self, id: NodeId, level: u32) {
        let mut levels = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // The newest report wins, down as well as up: a member that says
        // less now was downgraded.
        levels.insert(id, level);
    }
}

/// Checks that every member (voters and learners) supports `needed`:
/// from what each has reported before, asking those not known to.
pub async fn check_members_support(node: &BerthNode, needed: u32) -> Result<(), ServerError> {
    let members: Vec<(NodeId, String)> = node
        .metrics()
        .membership_config
        .membership()
        .nodes()
        .map(|(id, n)| (*id, n.addr.clone()))
        .collect();
    let mut levels = Vec::with_capacity(members.len());
    for (id, addr) in members {
        let known = node.member_levels().get(id);
        let level = if id == node.id() {
            MemberLevel::Reported(berth_types::COMMAND_LEVEL)
        } else if let Some(level) = known.filter(|level| *level >= needed) {
            MemberLevel::Reported(level)
        } else {
            match ask(node, &addr).await {
                Ok(level) => {
                    node.member_levels().record(id, level);
                    MemberLevel::Reported(level)
                }
                Err(why) => {
                    tracing::debug!(member = id, %why, needed, "a member did not say its command level");
                    MemberLevel::Unreachable { why, last: known }
                }
            }
        };
        levels.push((id, level));
    }
    match refusal(needed, &levels) {
        Some(why) => Err(ServerError::FailedPrecondition(why)),
        None => Ok(()),
    }
}

async fn ask(node: &BerthNode, addr: &str) -> Result<u32, String> {
    let mut client = node.peers().raft_client(addr)?;
    let mut request = Request::new(pb::NodeStatusRequest {});
    request.set_timeout(Duration::from_secs(1));
    match tokio::time::timeout(Duration::from_secs(2), client.node_status(request)).await {
        // A build from before command levels leaves the field at 0.
        Ok(Ok(reply)) => Ok(reply.into_inner().command_level),
        Ok(Err(status)) => Err(status.message().to_string()),
        Err(_) => Err("no answer within 2 s".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MemberLevel::*;

    #[test]
    fn a_command_waits_for_every_member_to_support_its_level() {
        let all_new = [(1, Reported(2)), (2, Reported(3)), (3, Reported(2))];
        assert_eq!(refusal(2, &all_new), None);
        assert_eq!(refusal(1, &all_new), None);

        let one_behind = [(1, Reported(2)), (2, Reported(1)), (3, Reported(2))];
        let why = refusal(2, &one_behind).unwrap();
        assert!(why.contains("server 2 applies up to level 1"), "{why}");
        assert!(!why.contains("server 1"), "{why}");
        assert!(why.contains("finish upgrading"), "{why}");

        // A learner counts like a voter. A member that does not answer
        // holds the write up only if it said it was behind when it last
        // answered.
        let silent_behind = [
            (1, Reported(2)),
            (
                4,
                Unreachable {
                    why: "connection refused".into(),
                    last: Some(1),
                },
            ),
        ];
        let why = refusal(2, &silent_behind).unwrap();
        assert!(
            why.contains(
                "server 4 did not say (connection refused) and last applied up to level 1"
            ),
            "{why}"
        );
        let silent = |last| {
            [
                (1, Reported(2)),
                (2, Reported(1)),
                (
                    3,
                    Unreachable {
                        why: "down".into(),
                        last,
                    },
                ),
            ]
        };
        assert_eq!(refusal(1, &silent(None)), None);
        assert_eq!(refusal(1, &silent(Some(2))), None);
        let why = refusal(2, &silent(None)).unwrap();
        assert!(why.contains("server 2 applies up to level 1"), "{why}");
        assert!(
            !why.contains("server 3"),
            "a silent member is not blamed: {why}"
        );
        let down_and_unknown = [
            (1, Reported(2)),
            (2, Reported(2)),
            (
                3,
                Unreachable {
                    why: "down".into(),
                    last: None,
                },
            ),
        ];
        assert_eq!(
            refusal(2, &down_and_unknown),
            None,
            "a minority that is down does not make newer commands unavailable"
        );
        // A build from before levels reports 0.
        assert!(refusal(1, &[(5, Reported(0))]).is_some());
    }
}
