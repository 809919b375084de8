//! Identity and access APIs: operator tokens, activations, instances, and
//! the agent's registration and certificate renewal.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use berth_pki::tokens::{hash_secret, ApiTokenSecret};
use berth_proto::convert;
use berth_proto::pb;
use berth_proto::pb::activation_service_server::ActivationService;
use berth_proto::pb::agent_service_server::AgentService;
use berth_proto::pb::auth_service_server::AuthService;
use berth_proto::pb::instance_service_server::InstanceService;
use berth_types::{validate, Command, CommandOutput, FieldError, Registration, Role};
use tonic::{Request, Response, Status};

use crate::api::now_ms;
use crate::auth::Caller;
use crate::error::ServerError;
use crate::node::BerthNode;
use crate::tls::SharedPki;

#[derive(Clone)]
pub struct IdentityApi {
    pub node: BerthNode,
    pub pki: Arc<SharedPki>,
    pub agent_cert_lifetime: Duration,
    pub ops: crate::ops::Ops,
}

fn invalid(field: &str, message: impl Into<String>) -> Status {
    ServerError::Invalid(FieldError::new(field, message).into()).into()
}

fn unexpected(output: CommandOutput) -> Status {
    ServerError::Internal(format!("unexpected command output {output:?}")).into()
}

/// Attributes a person gave, checked: a bad name or value is the caller's
/// mistake.
fn checked_attributes(attributes: &[pb::Attribute]) -> Result<BTreeMap<String, String>, Status> {
    convert::checked_attributes_from_wire(attributes)
        .map_err(|e| ServerError::Invalid(e.into()).into())
}

fn check_description(description: &str) -> Result<(), Status> {
    use berth_types::limits;
    limits::check_len("description", description, limits::MAX_DESCRIPTION_LEN)
        .map_err(|e| ServerError::from(e).into())
}

fn check_id(id: &str) -> Result<(), Status> {
    use berth_types::limits;
    limits::check_len("id", id, limits::MAX_ID_LEN).map_err(|e| ServerError::from(e).into())
}

/// An operator's attributes (activation, `attribute put`): checked, none
/// in the `agent.*` space, which is what agents report, and capacity caps
/// that are numbers.
fn operator_attributes(attributes: &[pb::Attribute]) -> Result<BTreeMap<String, String>, Status> {
    for (i, a) in attributes.iter().enumerate() {
        validate::check_operator_attribute(i, &a.name, &a.value)
            .map_err(|e| Status::from(ServerError::Invalid(e.into())))?;
    }
    checked_attributes(attributes)
}

/// The key a CSR carries, as instance records keep it; a CSR whose
/// signature does not verify is the caller's mistake.
fn csr_key(csr_pem: &str) -> Result<String, Status> {
    berth_pki::csr_key_digest(csr_pem).map_err(|e| invalid("csrPem", e.to_string()))
}

fn secs(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl IdentityApi {
    /// An AWS access key: an id shaped like AWS's (20 characters, `BKIA`
    /// then 16 upper-case hex digits) and a 40-character secret, sealed
    /// under this server's primary data key before it is proposed, so the
    /// Raft log and snapshots never hold it in the clear.
    async fn create_aws_access_key(
        &self,
        role: Role,
        description: String,
        expires_at_ms: Option<i64>,
        now: i64,
    ) -> Result<pb::CreateApiTokenResponse, Status> {
        let key = self.pki.current().data_key.clone().ok_or_else(|| {
            Status::from(ServerError::FailedPrecondition(format!(
                "this server has no {} in its PKI dir, so it cannot seal an AWS secret access key; run `berthd pki issue` for it again and restart it (docs/operations.md)",
                berth_pki::datakey::DATA_KEY
            )))
        })?;
        let id = format!("BKIA{}", berth_pki::random_hex(8).to_ascii_uppercase());
        let secret = berth_pki::random_hex(20);
        let sealed = key
            .seal(&berth_types::aws_key_seal_name(&id), secret.as_bytes())
            .map_err(|e| Status::from(ServerError::internal(format!("sealing failed: {e}"))))?;
        let output = self
            .node
            .write(Command::CreateAwsAccessKey {
                id: id.clone(),
                role,
                description,
                sealed: berth_types::SealedKey {
                    nonce: sealed.nonce.to_vec(),
                    ciphertext: sealed.ciphertext,
                },
                expires_at_ms,
                at_ms: now,
            })
            .await?;
        let CommandOutput::ApiToken(token) = output else {
            return Err(unexpected(output));
        };
        tracing::info!(token_id = %token.id, "AWS access key created");
        Ok(pb::CreateApiTokenResponse {
            token: Some((&token).into()),
            secret: String::new(),
            aws_access_key_id: id,
            aws_secret_access_key: secret,
        })
    }
}

#[tonic::async_trait]
impl AuthService for IdentityApi {
    #[tracing::instrument(skip_all, fields(role = %request.get_ref().role))]
    async fn create_api_token(
        &self,
        request: Request<pb::CreateApiTokenRequest>,
    ) -> Result<Response<pb::CreateApiTokenResponse>, Status> {
        let req = request.into_inner();
        check_description(&req.description)?;
        let role = Role::parse(&req.role).ok_or_else(|| {
            invalid(
                "role",
                format!("{:?} is not a role; use admin or readonly", req.role),
            )
        })?;
        let format = berth_types::TokenFormat::parse(&req.format).ok_or_else(|| {
            invalid(
                "format",
                format!("{:?} is not a token format; use bearer or aws", req.format),
            )
        })?;
        let now = now_ms();
        let expires_at_ms = (req.expires_in_secs > 0)
            .then(|| now.saturating_add(secs(Duration::from_secs(req.expires_in_secs))));
        if format == berth_types::TokenFormat::Aws {
            return self
                .create_aws_access_key(role, req.description, expires_at_ms, now)
                .await
                .map(Response::new);
        }
        let secret = ApiTokenSecret::generate();
        let output = self
            .node
            .write(Command::CreateApiToken {
                id: secret.id.clone(),
                role,
                description: req.description,
                secret_hash: hash_secret(&secret.secret),
                expires_at_ms,
                at_ms: now,
            })
            .await?;
        let CommandOutput::ApiToken(token) = output else {
            return Err(unexpected(output));
        };
        tracing::info!(token_id = %token.id, "API token created");
        Ok(Response::new(pb::CreateApiTokenResponse {
            token: Some((&token).into()),
            secret: secret.encode(),
            ..Default::default()
        }))
    }

    async fn list_api_tokens(
        &self,
        _request: Request<pb::ListApiTokensRequest>,
    ) -> Result<Response<pb::ListApiTokensResponse>, Status> {
        let tokens = self
            .node
            .read(|state| state.api_tokens().map(Into::into).collect())
            .await?;
        Ok(Response::new(pb::ListApiTokensResponse { tokens }))
    }

    #[tracing::instrument(skip_all, fields(token_id = %request.get_ref().id))]
    async fn revoke_api_token(
        &self,
        request: Request<pb::RevokeApiTokenRequest>,
    ) -> Result<Response<pb::RevokeApiTokenResponse>, Status> {
        let id = request.into_inner().id;
        check_id(&id)?;
        let output = self
            .node
            .write(Command::RevokeApiToken {
                id,
                at_ms: now_ms(),
            })
            .await?;
        let CommandOutput::ApiToken(token) = output else {
            return Err(unexpected(output));
        };
        tracing::info!(token_id = %token.id, "API token revoked");
        Ok(Response::new(pb::RevokeApiTokenResponse {
            token: Some((&token).into()),
        }))
    }

    #[tracing::instrument(skip_all, fields(fingerprint = %request.get_ref().fingerprint))]
    async fn revoke_certificate(
        &self,
        request: Request<pb::RevokeCertificateRequest>,
    ) -> Result<Response<pb::RevokeCertificateResponse>, Status> {
        let req = request.into_inner();
        check_description(&req.description)?;
        let output = self
            .node
            .write(Command::RevokeCertificate {
                fingerprint: req.fingerprint.trim().to_ascii_lowercase(),
                description: req.description,
                at_ms: now_ms(),
            })
            .await?;
        let CommandOutput::RevokedCertificate(certificate) = output else {
            return Err(unexpected(output));
        };
        tracing::warn!(fingerprint = %certificate.fingerprint, "certificate revoked");
        Ok(Response::new(pb::RevokeCertificateResponse {
            certificate: Some((&certificate).into()),
        }))
    }

    async fn list_revoked_certificates(
        &self,
        _request: Request<pb::ListRevokedCertificatesRequest>,
    ) -> Result<Response<pb::ListRevokedCertificatesResponse>, Status> {
        let certificates = self
            .node
            .read(|state| state.revoked_certificates().map(Into::into).collect())
            .await?;
        Ok(Response::new(pb::ListRevokedCertificatesResponse {
            certificates,
        }))
    }
}

#[tonic::async_trait]
impl ActivationService for IdentityApi {
    #[tracing::instrument(skip_all, fields(cluster = %request.get_ref().cluster))]
    async fn create_activation(
        &self,
        request: Request<pb::CreateActivationRequest>,
    ) -> Result<Response<pb::CreateActivationResponse>, Status> {
        let req = request.into_inner();
        let attributes = operator_attributes(&req.attributes)?;
        let digest =
            berth_pki::ca_digest(&self.pki.current().root_pem).map_err(ServerError::internal)?;
        let (activation, token) = self
            .ops
            .create_activation(
                crate::ops::activations::NewActivation {
                    cluster: req.cluster,
                    description: req.description,
                    max_registrations: req.max_registrations,
                    lifetime: (req.expires_in_secs > 0)
                        .then(|| Duration::from_secs(req.expires_in_secs)),
                    attributes,
                },
                &digest,
            )
            .await?;
        Ok(Response::new(pb::CreateActivationResponse {
            activation: Some((&activation).into()),
            token,
        }))
    }

    async fn list_activations(
        &self,
        _request: Request<pb::ListActivationsRequest>,
    ) -> Result<Response<pb::ListActivationsResponse>, Status> {
        let activations = self
            .node
            .read(|state| state.activations().map(Into::into).collect())
            .await?;
        Ok(Response::new(pb::ListActivationsResponse { activations }))
    }

    async fn describe_activation(
        &self,
        request: Request<pb::DescribeActivationRequest>,
    ) -> Result<Response<pb::DescribeActivationResponse>, Status> {
        let id = request.into_inner().id;
        let found = self
            .node
            .read(|state| state.activation(&id).map(Into::into))
            .await?;
        let activation =
            found.ok_or_else(|| ServerError::NotFound(format!("activation {id:?} not found")))?;
        Ok(Response::new(pb::DescribeActivationResponse {
            activation: Some(activation),
        }))
    }

    #[tracing::instrument(skip_all, fields(activation_id = %request.get_ref().id))]
    async fn revoke_activation(
        &self,
        request: Request<pb::RevokeActivationRequest>,
    ) -> Result<Response<pb::RevokeActivationResponse>, Status> {
        let id = request.into_inner().id;
        check_id(&id)?;
        let output = self
            .node
            .write(Command::RevokeActivation {
                id,
                at_ms: now_ms(),
            })
            .await?;
        let CommandOutput::Activation(activation) = output else {
            return Err(unexpected(output));
        };
        Ok(Response::new(pb::RevokeActivationResponse {
            activation: Some((&activation).into()),
        }))
    }
}

#[tonic::async_trait]
impl InstanceService for IdentityApi {
    async fn list_instances(
        &self,
        request: Request<pb::ListInstancesRequest>,
    ) -> Result<Response<pb::ListInstancesResponse>, Status> {
        let cluster = request.into_inner().cluster;
        let cluster = Some(cluster.as_str()).filter(|c| !c.is_empty());
        let instances = self.ops.list_instances(cluster).await?;
        Ok(Response::new(pb::ListInstancesResponse {
            instances: instances.into_iter().map(Into::into).collect(),
        }))
    }

    async fn describe_instance(
        &self,
        request: Request<pb::DescribeInstanceRequest>,
    ) -> Result<Response<pb::DescribeInstanceResponse>, Status> {
        let instance = self.ops.describe_instance(&request.into_inner().id).await?;
        Ok(Response::new(pb::DescribeInstanceResponse {
            instance: Some(instance.into()),
        }))
    }

    #[tracing::instrument(skip_all, fields(instance_id = %request.get_ref().id))]
    async fn deregister_instance(
        &self,
        request: Request<pb::DeregisterInstanceRequest>,
    ) -> Result<Response<pb::DeregisterInstanceResponse>, Status> {
        let instance = self
            .ops
            .deregister_instance(request.into_inner().id)
            .await?;
        Ok(Response::new(pb::DeregisterInstanceResponse {
            instance: Some(instance.into()),
        }))
    }

    #[tracing::instrument(skip_all, fields(instance_id = %request.get_ref().id))]
    async fn drain_instance(
        &self,
        request: Request<pb::DrainInstanceRequest>,
    ) -> Result<Response<pb::DrainInstanceResponse>, Status> {
        let id = request.into_inner().id;
        let instance = self.ops.set_instance_draining(id, true).await?;
        Ok(Response::new(pb::DrainInstanceResponse {
            instance: Some(instance.into()),
        }))
    }

    #[tracing::instrument(skip_all, fields(instance_id = %request.get_ref().id))]
    async fn activate_instance(
        &self,
        request: Request<pb::ActivateInstanceRequest>,
    ) -> Result<Response<pb::ActivateInstanceResponse>, Status> {
        let id = request.into_inner().id;
        let instance = self.ops.set_instance_draining(id, false).await?;
        Ok(Response::new(pb::ActivateInstanceResponse {
            instance: Some(instance.into()),
        }))
    }

    #[tracing::instrument(skip_all, fields(instance_id = %request.get_ref().id))]
    async fn put_instance_attributes(
        &self,
        request: Request<pb::PutInstanceAttributesRequest>,
    ) -> Result<Response<pb::PutInstanceAttributesResponse>, Status> {
        let req = request.into_inner();
        let attributes = operator_attributes(&req.attributes)?;
        let instance = self.ops.put_instance_attributes(req.id, attributes).await?;
        Ok(Response::new(pb::PutInstanceAttributesResponse {
            instance: Some(instance.into()),
        }))
    }

    #[tracing::instrument(skip_all, fields(instance_id = %request.get_ref().id))]
    async fn delete_instance_attributes(
        &self,
        request: Request<pb::DeleteInstanceAttributesRequest>,
    ) -> Result<Response<pb::DeleteInstanceAttributesResponse>, Status> {
        let req = request.into_inner();
        let instance = self
            .ops
            .delete_instance_attributes(req.id, req.names)
            .await?;
        Ok(Response::new(pb::DeleteInstanceAttributesResponse {
            instance: Some(instance.into()),
        }))
    }
}

/// Bounds every field of a registration before anything else runs: the
/// caller is not authenticated yet, and what it sends goes into the log.
fn check_registration_request(req: &pb::RegisterInstanceRequest) -> Result<(), Status> {
    use berth_types::limits::{self, check_len};
    if req.hostname.is_empty() {
        return Err(invalid("hostname", "required"));
    }
    [
        check_len("hostname", &req.hostname, limits::MAX_HOSTNAME_LEN),
        check_len("activationId", &req.activation_id, limits::MAX_ID_LEN),
        check_len(
            "activationSecret",
            &req.activation_secret,
            limits::MAX_SECRET_LEN,
        ),
        check_len("csrPem", &req.csr_pem, limits::MAX_CSR_LEN),
        check_len(
            "previousInstanceId",
            &req.previous_instance_id,
            limits::MAX_ID_LEN,
        ),
        check_len("cluster", &req.cluster, validate::MAX_NAME_LEN),
        limits::check_count("attributes", req.attributes.len(), limits::MAX_ATTRIBUTES),
    ]
    .into_iter()
    .collect::<Result<(), FieldError>>()
    .map_err(|e| ServerError::Invalid(e.into()).into())
}

impl IdentityApi {
    /// Refuses a registration whose activation is unknown, wrong, revoked,
    /// expired or used up before anything is proposed, so a bad token never
    /// reaches the Raft log. The state machine checks again at apply, for
    /// registrations racing each other or a revocation.
    async fn precheck_activation(&self, registration: &Registration) -> Result<(), Status> {
        let local = {
            let applied = self.node.state().read();
            applied.state.check_registration(registration).map(|_| ())
        };
        let refusal = match local {
            Ok(()) => return Ok(()),
            Err(e) if self.node.has_applied_own_term() => e,
            // This server may lag behind (an activation created a moment
            // ago through another server): confirm before refusing.
            Err(_) => {
                let confirmed = self
                    .node
                    .read(|state| state.check_registration(registration).map(|_| ()))
                    .await?;
                match confirmed {
                    Ok(()) => return Ok(()),
                    Err(e) => e,
                }
            }
        };
        tracing::info!(reason = %refusal, "registration refused before proposing");
        Err(ServerError::from(refusal).into())
    }

    fn expiry(&self) -> i64 {
        now_ms().saturating_add(secs(self.agent_cert_lifetime))
    }

    fn sign(&self, csr_pem: &str, instance_id: &str) -> Result<String, Status> {
        self.pki
            .current()
            .ca
            .sign_instance_csr(csr_pem, instance_id, self.agent_cert_lifetime)
            .map_err(|e| invalid("csrPem", e.to_string()))
    }
}

#[tonic::async_trait]
impl AgentService for IdentityApi {
    // Never log the request: it carries the activation secret.
    #[tracing::instrument(skip_all, fields(activation_id = %request.get_ref().activation_id, hostname = %request.get_ref().hostname))]
    async fn register_instance(
        &self,
        request: Request<pb::RegisterInstanceRequest>,
    ) -> Result<Response<pb::RegisterInstanceResponse>, Status> {
        let req = request.into_inner();
        check_registration_request(&req)?;
        // Checked before proposing, so a bad CSR cannot use up a registration.
        self.sign(&req.csr_pem, "probe")?;
        let public_key_sha256 = csr_key(&req.csr_pem)?;
        let registration = Registration {
            activation_id: req.activation_id,
            secret_hash: hash_secret(&req.activation_secret),
            new_instance_id: format!("i-{}", berth_pki::random_hex(8)),
            previous_instance_id: Some(req.previous_instance_id).filter(|s| !s.is_empty()),
            expected_cluster: Some(req.cluster).filter(|s| !s.is_empty()),
            hostname: req.hostname,
            attributes: checked_attributes(&req.attributes)?,
            certificate_expires_at_ms: self.expiry(),
            at_ms: now_ms(),
            public_key_sha256,
        };
        let expires = registration.certificate_expires_at_ms;
        self.precheck_activation(&registration).await?;
        let output = self
            .node
            .write(Command::RegisterInstance(registration))
            .await?;
        let CommandOutput::Instance(instance) = output else {
            return Err(unexpected(output));
        };
        let certificate_pem = self.sign(&req.csr_pem, &instance.id)?;
        tracing::info!(instance_id = %instance.id, cluster = %instance.cluster, "instance registered");
        Ok(Response::new(pb::RegisterInstanceResponse {
            instance_id: instance.id,
            cluster: instance.cluster,
            certificate_pem,
            ca_pem: self.pki.current().root_pem.clone(),
            certificate_expires_at_ms: expires,
            server_time_ms: now_ms(),
        }))
    }

    async fn renew_certificate(
        &self,
        request: Request<pb::RenewCertificateRequest>,
    ) -> Result<Response<pb::RenewCertificateResponse>, Status> {
        let Some(Caller::Instance(instance_id)) = request.extensions().get::<Caller>().cloned()
        else {
            return Err(Status::unauthenticated(
                "renewal needs the instance's client certificate",
            ));
        };
        let csr_pem = request.into_inner().csr_pem;
        self.sign(&csr_pem, &instance_id)?;
        let public_key_sha256 = csr_key(&csr_pem)?;
        let expires_at_ms = self.expiry();
        self.node
            .write(Command::RecordInstanceCertificate {
                instance_id: instance_id.clone(),
                expires_at_ms,
                public_key_sha256,
            })
            .await?;
        let certificate_pem = self.sign(&csr_pem, &instance_id)?;
        tracing::info!(%instance_id, expires_at_ms, "instance certificate renewed");
        Ok(Response::new(pb::RenewCertificateResponse {
            certificate_pem,
            certificate_expires_at_ms: expires_at_ms,
            server_time_ms: now_ms(),
        }))
    }

    async fn ping(
        &self,
        request: Request<pb::AgentPingRequest>,
    ) -> Result<Response<pb::AgentPingResponse>, Status> {
        let Some(Caller::Instance(instance_id)) = request.extensions().get::<Caller>().cloned()
        else {
            return Err(Status::unauthenticated(
                "ping needs the instance's client certificate",
            ));
        };
        Ok(Response::new(pb::AgentPingResponse {
            instance_id,
            server_time_ms: now_ms(),
            // What this server trusts: how agents follow a CA rotation
            // (berth_pki::trust).
            ca_pem: self.pki.current().root_pem.clone(),
        }))
    }
}
