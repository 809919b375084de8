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
    Unreachable(String),
}

/// Why a command of level `needed` may not be proposed yet, if it may not:
/// every member must have reported a level at least as high. A member that
/// did not answer counts as behind, since it may be the one on the old build.
pub fn refusal(needed: u32, members: &[(NodeId, MemberLevel)]) -> Option<String> {
    let behind: Vec<String> = members
        .iter()
        .filter_map(|(id, level)| match level {
            MemberLevel::Reported(level) if *level >= needed => None,
            MemberLevel::Reported(level) => {
                Some(format!("server {id} applies up to level {level}"))
            }
            MemberLevel::Unreachable(why) => Some(format!("server {id} did not say ({why})")),
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

/// Asks every member (voters and learners) for its command level.
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
        let level = if id == node.id() {
            MemberLevel::Reported(berth_types::COMMAND_LEVEL)
        } else {
            match ask(node, &addr).await {
                Ok(level) => MemberLevel::Reported(level),
                Err(why) => MemberLevel::Unreachable(why),
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

        // A learner counts like a voter, and silence counts as behind.
        let silent = [
            (1, Reported(2)),
            (4, Unreachable("connection refused".into())),
        ];
        let why = refusal(2, &silent).unwrap();
        assert!(
            why.contains("server 4 did not say (connection refused)"),
            "{why}"
        );
        // A build from before levels reports 0.
        assert!(refusal(1, &[(5, Reported(0))]).is_some());
    }
}
