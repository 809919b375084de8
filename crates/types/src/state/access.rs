//! Identity and access: API tokens, activations (join tokens), and the
//! registration, certificates and deregistration of container instances.

use std::collections::BTreeMap;

use crate::access::{
    Activation, ApiToken, Instance, InstanceStatus, Registration, RevokedCertificate, Role,
};
use crate::command::CommandOutput;
use crate::error::StateError;
use crate::state::State;

/// What a new activation carries (CreateActivation).
pub(super) struct NewActivation {
    pub id: String,
    pub cluster: String,
    pub description: String,
    pub secret_hash: String,
    pub expires_at_ms: i64,
    pub max_registrations: u32,
    pub attributes: BTreeMap<String, String>,
    pub at_ms: i64,
}

impl State {
    pub fn api_token(&self, id: &str) -> Option<&ApiToken> {
        self.api_tokens.get(id)
    }

    pub fn api_tokens(&self) -> impl Iterator<Item = &ApiToken> {
        self.api_tokens.values()
    }

    pub fn activation(&self, id: &str) -> Option<&Activation> {
        self.activations.get(id)
    }

    pub fn activations(&self) -> impl Iterator<Item = &Activation> {
        self.activations.values()
    }

    /// The admin token created at bootstrap; a no-op once a token with this
    /// id exists (so a revoked bootstrap token never comes back).
    pub(super) fn bootstrap_admin_token(
        &mut self,
        id: String,
        secret_hash: String,
        at_ms: i64,
    ) -> Result<CommandOutput, StateError> {
        if self.api_tokens.contains_key(&id) {
            return Ok(CommandOutput::Unchanged);
        }
        self.insert_token(ApiToken {
            aws_secret: None,
            id,
            role: Role::Admin,
            description: "created at bootstrap".into(),
            secret_hash,
            created_at_ms: at_ms,
            expires_at_ms: None,
            revoked_at_ms: None,
        })
    }

    pub(super) fn create_api_token(
        &mut self,
        token: ApiToken,
    ) -> Result<CommandOutput, StateError> {
        if self.api_tokens.contains_key(&token.id) {
            return Err(StateError::already_exists("API token", token.id));
        }
        self.insert_token(token)
    }

    pub(super) fn revoke_api_token(
        &mut self,
        id: String,
        at_ms: i64,
    ) -> Result<CommandOutput, StateError> {
        let token = self
            .api_tokens
            .get_mut(&id)
            .ok_or_else(|| StateError::not_found("API token", id.clone()))?;
        if token.revoked_at_ms.is_none() {
            token.revoked_at_ms = Some(at_ms);
        }
        Ok(CommandOutput::ApiToken(token.clone()))
    }

    /// Replaces the sealed secrets of AWS access keys; a key revoked or
    /// gone since is skipped (it grants nothing any more).
    pub(super) fn reseal_aws_keys(
        &mut self,
        keys: Vec<crate::access::ResealedKey>,
    ) -> Result<CommandOutput, StateError> {
        let mut resealed = Vec::new();
        let mut skipped = Vec::new();
        for key in keys {
            match self.api_tokens.get_mut(&key.id) {
                Some(token) if token.aws_secret.is_some() && token.revoked_at_ms.is_none() => {
                    token.aws_secret = Some(key.sealed);
                    resealed.push(key.id);
                }
                _ => skipped.push(key.id),
            }
        }
        Ok(CommandOutput::Resealed { resealed, skipped })
    }

    fn insert_token(&mut self, token: ApiToken) -> Result<CommandOutput, StateError> {
        self.api_tokens.insert(token.id.clone(), token.clone());
        Ok(CommandOutput::ApiToken(token))
    }

    pub(super) fn create_activation(
        &mut self,
        new: NewActivation,
    ) -> Result<CommandOutput, StateError> {
        if !self.clusters.contains_key(&new.cluster) {
            return Err(StateError::not_found("cluster", new.cluster));
        }
        if self.activations.contains_key(&new.id) {
            return Err(StateError::already_exists("activation", new.id));
        }
        let activation = Activation {
            id: new.id.clone(),
            cluster: new.cluster,
            description: new.description,
            secret_hash: new.secret_hash,
            created_at_ms: new.at_ms,
            expires_at_ms: new.expires_at_ms,
            max_registrations: new.max_registrations,
            registrations: 0,
            attributes: new.attributes,
            revoked_at_ms: None,
        };
        self.activations.insert(new.id, activation.clone());
        Ok(CommandOutput::Activation(activation))
    }

    pub(super) fn revoke_activation(
        &mut self,
        id: String,
        at_ms: i64,
    ) -> Result<CommandOutput, StateError> {
        let activation = self
            .activations
            .get_mut(&id)
            .ok_or_else(|| StateError::not_found("activation", id.clone()))?;
        if activation.revoked_at_ms.is_none() {
            activation.revoked_at_ms = Some(at_ms);
        }
        Ok(CommandOutput::Activation(activation.clone()))
    }

    pub(super) fn record_instance_certificate(
        &mut self,
        instance_id: String,
        expires_at_ms: i64,
        public_key_sha256: String,
    ) -> Result<CommandOutput, StateError> {
        let instance = self
            .instances
            .get_mut(&instance_id)
            .ok_or_else(|| StateError::not_found("instance", instance_id.clone()))?;
        if instance.status != InstanceStatus::Active {
            return Err(StateError::FailedPrecondition(format!(
                "instance {instance_id} is deregistered"
            )));
        }
        instance.certificate_expires_at_ms = expires_at_ms;
        instance.public_key_sha256 = public_key_sha256;
        Ok(CommandOutput::Instance(instance.clone()))
    }

    pub(super) fn deregister_instance(
        &mut self,
        instance_id: String,
        at_ms: i64,
    ) -> Result<CommandOutput, StateError> {
        let instance = self
            .instances
            .get_mut(&instance_id)
            .ok_or_else(|| StateError::not_found("instance", instance_id.clone()))?;
        if instance.status == InstanceStatus::Active {
            instance.status = InstanceStatus::Inactive;
            instance.deregistered_at_ms = Some(at_ms);
            instance.agent_connected = false;
            self.instance_changed(&instance_id);
            self.stop_instance_tasks(
                &instance_id,
                &format!("instance {instance_id} was deregistered"),
                at_ms,
            );
        }
        self.instance_output(&instance_id)
    }

    /// The activation `r` uses, if it may register now: known, with the
    /// right secret, not revoked, expired or used up, for the expected
    /// cluster. Servers also call this on their applied state before
    /// proposing, so a bad token costs no Raft entry.
    pub fn check_registration(&self, r: &Registration) -> Result<&Activation, StateError> {
        let refuse = |why: String| Err(StateError::FailedPrecondition(why));
        let Some(activation) = self.activations.get(&r.activation_id) else {
            return refuse("the activation token is not valid: unknown activation id".into());
        };
        if activation.secret_hash != r.secret_hash {
            return refuse("the activation token is not valid: wrong secret".into());
        }
        if activation.revoked_at_ms.is_some() {
            return refuse(format!(
                "activation {} was revoked; create a new one (ActivationService/CreateActivation; the berth CLI: `berth activation create`)",
                activation.id
            ));
        }
        if r.at_ms >= activation.expires_at_ms {
            return refuse(format!(
                "activation {} has expired; create a new one (ActivationService/CreateActivation; the berth CLI: `berth activation create`)",
                activation.id
            ));
        }
        if activation.registrations >= activation.max_registrations {
            return refuse(format!(
                "activation {} has been used for all {} of its registrations; create a new one",
                activation.id, activation.max_registrations
            ));
        }
        if let Some(expected) = &r.expected_cluster {
            if *expected != activation.cluster {
                return refuse(format!(
                    "activation {} is for cluster {:?}, not {expected:?}",
                    activation.id, activation.cluster
                ));
            }
        }
        if !self.clusters.contains_key(&activation.cluster) {
            return refuse(format!("cluster {:?} no longer exists", activation.cluster));
        }
        Ok(activation)
    }

    /// Checks an activation and, only if every check passes, consumes one
    /// registration and records the instance: a refused registration never
    /// decrements anything.
    pub(super) fn register_instance(
        &mut self,
        r: Registration,
    ) -> Result<CommandOutput, StateError> {
        let activation = self.check_registration(&r)?;
        let cluster = activation.cluster.clone();
        // A known, still-active instance of the same cluster keeps its id,
        // but only for the host that holds the key of its last certificate:
        // a join token proves a host may join, not which host it is. A
        // deregistered instance never comes back under its old identity.
        let kept = r.previous_instance_id.as_ref().and_then(|id| {
            self.instances
                .get(id)
                .filter(|i| i.status == InstanceStatus::Active && i.cluster == cluster)
        });
        if let Some(existing) = kept {
            if existing.public_key_sha256.is_empty()
                || existing.public_key_sha256 != r.public_key_sha256
            {
                return Err(StateError::FailedPrecondition(format!(
                    "instance {} is registered with another key: only the host holding the key \
                     of its last certificate can register again under its id (the agent does so \
                     with the key in its data dir); register without a previous instance id to \
                     join as a new instance, or deregister {} first",
                    existing.id, existing.id
                )));
            }
        }
        // The activation's attributes are the operator's and go to the
        // instances it creates; a kept instance keeps the operator's
        // attributes as they are now (`attribute put` included). What the
        // agent reports is its own, apart.
        let instance = match kept {
            Some(existing) => Instance {
                hostname: r.hostname,
                agent_attributes: r.attributes.clone(),
                activation_id: r.activation_id.clone(),
                certificate_expires_at_ms: r.certificate_expires_at_ms,
                public_key_sha256: r.public_key_sha256.clone(),
                ..existing.clone()
            },
            None => {
                if self.instances.contains_key(&r.new_instance_id) {
                    return Err(StateError::already_exists("instance", r.new_instance_id));
                }
                Instance {
                    id: r.new_instance_id,
                    cluster,
                    hostname: r.hostname,
                    attributes: activation.attributes.clone(),
                    activation_id: r.activation_id.clone(),
                    registered_at_ms: r.at_ms,
                    certificate_expires_at_ms: r.certificate_expires_at_ms,
                    status: InstanceStatus::Active,
                    deregistered_at_ms: None,
                    agent_version: String::new(),
                    agent_connected: false,
                    connected_since_ms: None,
                    last_seen_ms: None,
                    draining: false,
                    capacity: Default::default(),
                    assignment_seq: 0,
                    public_key_sha256: r.public_key_sha256.clone(),
                    agent_attributes: r.attributes.clone(),
                    tags: Default::default(),
                }
            }
        };
        if let Some(activation) = self.activations.get_mut(&r.activation_id) {
            activation.registrations += 1;
        }
        self.instances.insert(instance.id.clone(), instance.clone());
        Ok(CommandOutput::Instance(instance))
    }

    /// Adds a certificate to the revocation list; revoking one twice keeps
    /// the first entry.
    pub(super) fn revoke_certificate(
        &mut self,
        fingerprint: String,
        description: String,
        at_ms: i64,
    ) -> Result<CommandOutput, StateError> {
        if !crate::access::is_fingerprint(&fingerprint) {
            return Err(StateError::Invalid(
                crate::FieldError::new(
                    "fingerprint",
                    "must be the certificate's SHA-256 as 64 lowercase hex digits (the berth CLI computes it: `berth auth certificate revoke --file CERT.pem`)",
                )
                .into(),
            ));
        }
        let entry = self
            .revoked_certificates
            .entry(fingerprint.clone())
            .or_insert(RevokedCertificate {
                fingerprint,
                description,
                revoked_at_ms: at_ms,
            });
        Ok(CommandOutput::RevokedCertificate(entry.clone()))
    }

    pub fn is_certificate_revoked(&self, fingerprint: &str) -> bool {
        self.revoked_certificates.contains_key(fingerprint)
    }

    pub fn revoked_certificates(&self) -> impl Iterator<Item = &RevokedCertificate> {
        self.revoked_certificates.values()
    }
}
