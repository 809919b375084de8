//! CreateActivation: the join tokens with which hosts register as
//! instances (the gRPC ActivationService and the ECS API's
//! RegisterContainerInstance).

use std::collections::BTreeMap;
use std::time::Duration;

use berth_pki::tokens::{hash_secret, JoinToken};
use berth_types::{validate, Activation, Command, CommandOutput};

use super::{cluster_or_default, invalid, unexpected, Ops};
use crate::api::now_ms;
use crate::error::ServerError;

/// How long an activation lasts unless its creator says otherwise.
pub const DEFAULT_ACTIVATION_LIFETIME: Duration = Duration::from_secs(24 * 3600);
const MAX_REGISTRATIONS: u32 = 10_000;

/// What an activation is for; attributes are already checked as an
/// operator's (`validate::check_operator_attribute`).
pub struct NewActivation {
    pub cluster: String,
    pub description: String,
    /// 0: one.
    pub max_registrations: u32,
    /// `None`: [`DEFAULT_ACTIVATION_LIFETIME`].
    pub lifetime: Option<Duration>,
    pub attributes: BTreeMap<String, String>,
}

impl Ops {
    /// Creates an activation and answers it with its join token (shown
    /// once; only a hash is stored). `ca_digest` pins the cluster CA in the
    /// token, so the agent can verify the servers before trusting them.
    pub async fn create_activation(
        &self,
        request: NewActivation,
        ca_digest: &str,
    ) -> Result<(Activation, String), ServerError> {
        let cluster = cluster_or_default(&request.cluster);
        validate::check_name("cluster", &cluster).map_err(ServerError::from_field)?;
        berth_types::limits::check_len(
            "description",
            &request.description,
            berth_types::limits::MAX_DESCRIPTION_LEN,
        )?;
        let max_registrations = match request.max_registrations {
            0 => 1,
            n if n > MAX_REGISTRATIONS => {
                return Err(invalid(
                    "maxRegistrations",
                    format!("{n} is too many; use at most {MAX_REGISTRATIONS}"),
                ))
            }
            n => n,
        };
        super::check_operator_attributes(&request.attributes)?;
        let lifetime = request.lifetime.unwrap_or(DEFAULT_ACTIVATION_LIFETIME);
        let token = JoinToken::generate(ca_digest);
        let now = now_ms();
        let output = self
            .node
            .write(Command::CreateActivation {
                id: token.activation_id.clone(),
                cluster,
                description: request.description,
                secret_hash: hash_secret(&token.secret),
                expires_at_ms: now
                    .saturating_add(i64::try_from(lifetime.as_millis()).unwrap_or(i64::MAX)),
                max_registrations,
                attributes: request.attributes,
                at_ms: now,
            })
            .await?;
        let CommandOutput::Activation(activation) = output else {
            return Err(unexpected(output));
        };
        tracing::info!(activation_id = %activation.id, max_registrations, "activation created");
        Ok((activation, token.encode()))
    }
}
