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
/// every member must have said it applies a level at least as high, now
/// or before (a member that does not answer counts with its last report).
/// One that never said, since this server started, counts as behind: it
/// may be the one still on the older build.
pub fn refusal(needed: u32, members: &[(NodeId, MemberLevel)]) -> Option<String> {
    let behind: Vec<String> = members
        .iter()
        .filter_map(|(id, level)| match level {
            MemberLevel::Reported(level) if *level >= needed => None,
            MemberLevel::Reported(level) => {
                Some(format!("server {id} applies up to level {level}"))
            }
            MemberLevel::Unreachable {
                last: Some(level), ..
            } if *level >= needed => None,
            MemberLevel::Unreachable {
                why,
                last: Some(level),
            } => Some(format!(
                "server {id} did not say ({why}) and last applied up to level {level}"
            )),
            MemberLevel::Unreachable { why, last: None } => Some(format!(
                "server {id} did not say ({why}) and has not said since this server started"
            )),
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

/// The command levels members have reported, by node id: asked before a
/// write that needs a level nobody has confirmed yet, and in the
/// background from start ([`learn_member_levels`]). A member that is down
/// counts with what it said last, so newer commands stay available while a
/// minority of servers is down, and a write does not ask every member
/// first. A member downgraded meanwhile says so at the next background
/// round; until then an entry it cannot apply stops it with an error
/// naming the level instead of being misread.
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

/// Every member but this server, voters and learners, with its address.
fn other_members(node: &BerthNode) -> Vec<(NodeId, String)> {
    node.metrics()
        .membership_config
        .membership()
        .nodes()
        .filter(|(id, _)| **id != node.id())
        .map(|(id, n)| (*id, n.addr.clone()))
        .collect()
}

/// Checks that every member (voters and learners) supports `needed`:
/// from what each has reported, asking those not known to.
pub async fn check_members_support(node: &BerthNode, needed: u32) -> Result<(), ServerError> {
    let mut levels = vec![(node.id(), MemberLevel::Reported(berth_types::COMMAND_LEVEL))];
    for (id, addr) in other_members(node) {
        let known = node.member_levels().get(id);
        let level = match known.filter(|level| *level >= needed) {
            Some(level) => MemberLevel::Reported(level),
            None => match ask(node, &addr).await {
                Ok(level) => {
                    node.member_levels().record(id, level);
                    MemberLevel::Reported(level)
                }
                Err(why) => {
                    tracing::debug!(member = id, %why, needed, "a member did not say its command level");
                    MemberLevel::Unreachable { why, last: known }
                }
            },
        };
        levels.push((id, level));
    }
    match refusal(needed, &levels) {
        Some(why) => Err(ServerError::FailedPrecondition(why)),
        None => Ok(()),
    }
}

/// Asks every member for its level from start, every second while one
/// has not answered yet and every half minute afterwards (new members,
/// downgrades), so a member that goes down later still counts with what it
/// said. One call per member per round: nothing on the write path.
pub async fn learn_member_levels(node: BerthNode) {
    loop {
        let mut all_known = true;
        for (id, addr) in other_members(&node) {
            match ask(&node, &addr).await {
                Ok(level) => node.member_levels().record(id, level),
                Err(_) => all_known &= node.member_levels().get(id).is_some(),
            }
        }
        let pause = if all_known { 30 } else { 1 };
        tokio::time::sleep(Duration::from_secs(pause)).await;
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
        assert_eq!(refusal(1, &silent(Some(2))), None);
        let why = refusal(1, &silent(None)).unwrap();
        assert!(
            why.contains("server 3 did not say (down) and has not said since this server started"),
            "a member never heard from may be the old one: {why}"
        );
        let why = refusal(2, &silent(Some(2))).unwrap();
        assert!(why.contains("server 2 applies up to level 1"), "{why}");
        assert!(
            !why.contains("server 3"),
            "a member down that said it applies the level is not blamed: {why}"
        );
        // A build from before levels reports 0.
        assert!(refusal(1, &[(5, Reported(0))]).is_some());
    }
}
