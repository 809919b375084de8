//! Identity and access: API tokens, activations, instances, and an agent's
//! registration, renewal and ping.

use berth_types as t;
use t::FieldError;

use super::attributes::{attributes_from_wire, attributes_to_wire};
use super::{non_empty, wire_enum};
use crate::pb;

// ------------------------------------------------------------ API tokens

impl From<&t::ApiTokenView> for pb::ApiToken {
    fn from(t: &t::ApiTokenView) -> Self {
        Self {
            id: t.id.clone(),
            role: t.role.as_str().to_string(),
            description: t.description.clone(),
            created_at_ms: t.created_at_ms,
            expires_at_ms: t.expires_at_ms,
            revoked: t.revoked_at_ms.is_some(),
            revoked_at_ms: t.revoked_at_ms,
            format: t.format.as_str().to_string(),
        }
    }
}

/// A stored token as the API shows it: never its secret's hash.
impl From<&t::ApiToken> for pb::ApiToken {
    fn from(t: &t::ApiToken) -> Self {
        (&t::ApiTokenView::from(t)).into()
    }
}

impl TryFrom<pb::ApiToken> for t::ApiTokenView {
    type Error = FieldError;

    fn try_from(t: pb::ApiToken) -> Result<Self, FieldError> {
        if t.revoked && t.revoked_at_ms.is_none() {
            return Err(FieldError::new(
                "revokedAtMs",
                "missing although the token is revoked",
            ));
        }
        Ok(Self {
            role: wire_enum("role", &t.role, t::Role::parse, "admin or readonly")?,
            id: t.id,
            description: t.description,
            created_at_ms: t.created_at_ms,
            expires_at_ms: t.expires_at_ms,
            revoked_at_ms: t.revoked_at_ms,
            format: wire_enum("format", &t.format, t::TokenFormat::parse, "bearer or aws")?,
        })
    }
}

// ----------------------------------------------------------- activations

impl From<&t::ActivationView> for pb::Activation {
    fn from(a: &t::ActivationView) -> Self {
        Self {
            id: a.id.clone(),
            cluster: a.cluster.clone(),
            description: a.description.clone(),
            created_at_ms: a.created_at_ms,
            expires_at_ms: a.expires_at_ms,
            max_registrations: a.max_registrations,
            registrations: a.registrations,
            attributes: attributes_to_wire(&a.attributes),
            revoked: a.revoked,
        }
    }
}

/// A stored activation as the API shows it: never its secret's hash.
impl From<&t::Activation> for pb::Activation {
    fn from(a: &t::Activation) -> Self {
        (&t::ActivationView::from(a)).into()
    }
}

impl From<pb::Activation> for t::ActivationView {
    fn from(a: pb::Activation) -> Self {
        Self {
            attributes: attributes_from_wire(&a.attributes),
            id: a.id,
            cluster: a.cluster,
            description: a.description,
            created_at_ms: a.created_at_ms,
            expires_at_ms: a.expires_at_ms,
            max_registrations: a.max_registrations,
            registrations: a.registrations,
            revoked: a.revoked,
        }
    }
}

// ------------------------------------------------------------- instances

impl From<t::InstanceView> for pb::Instance {
    fn from(i: t::InstanceView) -> Self {
        Self {
            attributes: attributes_to_wire(&i.attributes),
            id: i.id,
            cluster: i.cluster,
            hostname: i.hostname,
            registered_at_ms: i.registered_at_ms,
            certificate_expires_at_ms: i.certificate_expires_at_ms,
            status: i.status.as_str().to_string(),
            activation_id: i.activation_id,
            deregistered_at_ms: i.deregistered_at_ms,
            agent_version: i.agent_version.unwrap_or_default(),
            agent_connected: i.agent_connected,
            connected_since_ms: i.connected_since_ms,
            last_seen_ms: i.last_seen_ms,
            cpu_registered: i.cpu_registered,
            memory_registered_mib: i.memory_registered_mib,
            cpu_remaining: i.cpu_remaining,
            memory_remaining_mib: i.memory_remaining_mib,
            ports_in_use: i.ports_in_use,
            running_tasks: i.running_tasks,
            draining: i.draining,
            tags: i.tags,
        }
    }
}

impl TryFrom<pb::Instance> for t::InstanceView {
    type Error = FieldError;

    fn try_from(i: pb::Instance) -> Result<Self, FieldError> {
        Ok(Self {
            status: wire_enum(
                "status",
                &i.status,
                t::InstanceState::parse,
                "ACTIVE, DRAINING, DISCONNECTED or INACTIVE",
            )?,
            attributes: attributes_from_wire(&i.attributes),
            id: i.id,
            cluster: i.cluster,
            hostname: i.hostname,
            activation_id: i.activation_id,
            registered_at_ms: i.registered_at_ms,
            certificate_expires_at_ms: i.certificate_expires_at_ms,
            deregistered_at_ms: i.deregistered_at_ms,
            agent_version: non_empty(i.agent_version),
            agent_connected: i.agent_connected,
            connected_since_ms: i.connected_since_ms,
            last_seen_ms: i.last_seen_ms,
            cpu_registered: i.cpu_registered,
            cpu_remaining: i.cpu_remaining,
            memory_registered_mib: i.memory_registered_mib,
            memory_remaining_mib: i.memory_remaining_mib,
            ports_in_use: i.ports_in_use,
            running_tasks: i.running_tasks,
            draining: i.draining,
            tags: i.tags,
        })
    }
}

// ------------------------------------------------------- agent identity

impl From<t::RegisterInstanceInput> for pb::RegisterInstanceRequest {
    fn from(r: t::RegisterInstanceInput) -> Self {
        Self {
            attributes: attributes_to_wire(&r.attributes),
            activation_id: r.activation_id,
            activation_secret: r.activation_secret,
            csr_pem: r.csr_pem,
            hostname: r.hostname,
            previous_instance_id: r.previous_instance_id.unwrap_or_default(),
            cluster: r.cluster.unwrap_or_default(),
        }
    }
}

impl From<pb::RegisterInstanceResponse> for t::RegisteredInstance {
    fn from(r: pb::RegisterInstanceResponse) -> Self {
        Self {
            instance_id: r.instance_id,
            cluster: r.cluster,
            certificate_pem: r.certificate_pem,
            ca_pem: r.ca_pem,
            certificate_expires_at_ms: r.certificate_expires_at_ms,
            server_time_ms: r.server_time_ms,
        }
    }
}

impl From<pb::RenewCertificateResponse> for t::IssuedCertificate {
    fn from(r: pb::RenewCertificateResponse) -> Self {
        Self {
            certificate_pem: r.certificate_pem,
            certificate_expires_at_ms: r.certificate_expires_at_ms,
            server_time_ms: r.server_time_ms,
        }
    }
}

impl From<pb::AgentPingResponse> for t::AgentPing {
    fn from(r: pb::AgentPingResponse) -> Self {
        Self {
            instance_id: r.instance_id,
            server_time_ms: r.server_time_ms,
            ca_pem: r.ca_pem,
        }
    }
}

impl From<&t::RevokedCertificate> for pb::RevokedCertificate {
    fn from(c: &t::RevokedCertificate) -> Self {
        Self {
            fingerprint: c.fingerprint.clone(),
            description: c.description.clone(),
            revoked_at_ms: c.revoked_at_ms,
        }
    }
}

impl From<pb::RevokedCertificate> for t::RevokedCertificate {
    fn from(c: pb::RevokedCertificate) -> Self {
        Self {
            fingerprint: c.fingerprint,
            description: c.description,
            revoked_at_ms: c.revoked_at_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn tokens_activations_and_instances_survive_the_wire() {
        let token = t::ApiTokenView {
            id: "0a1b2c".into(),
            role: t::Role::Readonly,
            description: "ci".into(),
            created_at_ms: 1,
            expires_at_ms: Some(2),
            revoked_at_ms: Some(3),
            format: t::TokenFormat::Aws,
        };
        let wire = pb::ApiToken::from(&token);
        assert!(wire.revoked);
        assert_eq!(t::ApiTokenView::try_from(wire.clone()), Ok(token));
        let bad_role = pb::ApiToken {
            role: "root".into(),
            ..wire
        };
        assert_eq!(
            t::ApiTokenView::try_from(bad_role).unwrap_err().field,
            "role"
        );

        let activation = t::ActivationView {
            id: "a1".into(),
            cluster: "prod".into(),
            description: "rack 4".into(),
            created_at_ms: 1,
            expires_at_ms: 2,
            max_registrations: 5,
            registrations: 2,
            attributes: BTreeMap::from([("zone".to_string(), "a".to_string())]),
            revoked: true,
        };
        let wire = pb::Activation::from(&activation);
        assert_eq!(t::ActivationView::from(wire), activation);

        let instance = t::InstanceView {
            id: "i-1".into(),
            cluster: "prod".into(),
            hostname: "node-1".into(),
            attributes: BTreeMap::from([("zone".to_string(), "a".to_string())]),
            activation_id: "a1".into(),
            registered_at_ms: 1,
            certificate_expires_at_ms: 2,
            status: t::InstanceState::Draining,
            deregistered_at_ms: None,
            agent_version: Some("0.4.0".into()),
            agent_connected: true,
            connected_since_ms: Some(3),
            last_seen_ms: None,
            cpu_registered: 2048,
            cpu_remaining: 1536,
            memory_registered_mib: 4096,
            memory_remaining_mib: 3968,
            ports_in_use: vec![8080],
            running_tasks: 2,
            draining: true,
            tags: Default::default(),
        };
        let mut wire = pb::Instance::from(instance.clone());
        assert_eq!(wire.status, "DRAINING");
        assert_eq!(t::InstanceView::try_from(wire.clone()), Ok(instance));
        wire.status = "GONE".into();
        assert_eq!(t::InstanceView::try_from(wire).unwrap_err().field, "status");
    }

    #[test]
    fn a_registration_goes_on_the_wire_with_unset_options_empty() {
        let input = t::RegisterInstanceInput {
            activation_id: "a1".into(),
            activation_secret: "secret".into(),
            csr_pem: "CSR".into(),
            hostname: "node-1".into(),
            attributes: BTreeMap::from([("zone".to_string(), "a".to_string())]),
            previous_instance_id: None,
            cluster: Some("prod".into()),
        };
        let wire = pb::RegisterInstanceRequest::from(input);
        assert_eq!(wire.activation_secret, "secret");
        assert_eq!(
            (wire.previous_instance_id.as_str(), wire.cluster.as_str()),
            ("", "prod")
        );
        assert_eq!(
            wire.attributes,
            vec![pb::Attribute {
                name: "zone".into(),
                value: "a".into()
            }]
        );
    }
}
