//! The control plane's status and members.

use berth_types as t;
use t::FieldError;

use super::{non_empty, wire_enum};
use crate::pb;

impl From<t::ServerMember> for pb::ServerMember {
    fn from(m: t::ServerMember) -> Self {
        Self {
            node_id: m.node_id,
            address: m.address,
            role: m.role.as_str().to_string(),
            voter: m.voter,
            reachable: m.reachable,
            term: m.term,
            last_log_index: m.last_log_index,
            applied_index: m.applied_index,
            error: m.error.unwrap_or_default(),
            snapshot_index: m.snapshot_index,
        }
    }
}

impl TryFrom<pb::ServerMember> for t::ServerMember {
    type Error = FieldError;

    fn try_from(m: pb::ServerMember) -> Result<Self, FieldError> {
        Ok(Self {
            role: wire_enum(
                "role",
                &m.role,
                t::ServerRole::parse,
                "leader, follower, learner, candidate, shutdown or unknown",
            )?,
            node_id: m.node_id,
            address: m.address,
            voter: m.voter,
            reachable: m.reachable,
            term: m.term,
            last_log_index: m.last_log_index,
            applied_index: m.applied_index,
            snapshot_index: m.snapshot_index,
            error: non_empty(m.error),
        })
    }
}

/// Members as the API lists them; a bad one names its position.
pub(super) fn members_from_wire(
    members: Vec<pb::ServerMember>,
) -> Result<Vec<t::ServerMember>, FieldError> {
    members
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            t::ServerMember::try_from(m)
                .map_err(|e| FieldError::new(format!("members[{i}].{}", e.field), e.message))
        })
        .collect()
}

impl From<t::ControlPlaneStatus> for pb::GetControlPlaneStatusResponse {
    fn from(s: t::ControlPlaneStatus) -> Self {
        Self {
            leader_id: s.leader_id,
            term: s.term,
            answered_by: s.answered_by,
            members: s.members.into_iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<pb::GetControlPlaneStatusResponse> for t::ControlPlaneStatus {
    type Error = FieldError;

    fn try_from(s: pb::GetControlPlaneStatusResponse) -> Result<Self, FieldError> {
        Ok(Self {
            leader_id: s.leader_id,
            term: s.term,
            answered_by: s.answered_by,
            members: members_from_wire(s.members)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_survives_the_wire_and_a_bad_role_names_its_member() {
        let member = |node_id, role, error: Option<&str>| t::ServerMember {
            node_id,
            address: format!("10.0.0.{node_id}:7400"),
            role,
            voter: true,
            reachable: error.is_none(),
            term: 4,
            last_log_index: 120,
            applied_index: 119,
            snapshot_index: 100,
            error: error.map(Into::into),
        };
        let status = t::ControlPlaneStatus {
            leader_id: Some(1),
            term: 4,
            answered_by: 2,
            members: vec![
                member(1, t::ServerRole::Leader, None),
                member(2, t::ServerRole::Unknown, Some("connection refused")),
            ],
        };
        let mut wire = pb::GetControlPlaneStatusResponse::from(status.clone());
        assert_eq!(wire.members[0].error, "", "no error travels as empty");
        assert_eq!(t::ControlPlaneStatus::try_from(wire.clone()), Ok(status));
        wire.members[1].role = "boss".into();
        let err = t::ControlPlaneStatus::try_from(wire).unwrap_err();
        assert_eq!(err.field, "members[1].role");
    }
}
