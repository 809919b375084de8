//! SecretService (operators) and AgentSecretsService (agents). This
//! server seals a value with the cluster data key before proposing it, so
//! the Raft log and snapshots only ever hold ciphertext; values are opened
//! only for RevealSecret (an admin call, see `auth::classify`) and for the
//! agent running a task that references them. RekeySecrets (admin too)
//! re-seals values under the primary key of this server's data key ring
//! (`berth_pki::datakey`) during a rotation.

use std::sync::Arc;

use berth_pki::datakey::{DataKey, DATA_KEY};
use berth_proto::pb;
use berth_types::secrets::{check_secret_name, Secret, SecretMetadata, MAX_SECRET_VALUE_LEN};
use berth_types::{Command, CommandOutput, FieldError};
use tonic::{Request, Response, Status};

use crate::error::ServerError;
use crate::node::BerthNode;

#[derive(Clone)]
pub struct SecretsApi {
    pub node: BerthNode,
    /// Its data key: `None` when this server's PKI dir predates secrets
    /// (see `tls::Pki`).
    pub pki: Arc<crate::tls::SharedPki>,
}

fn metadata(m: SecretMetadata) -> pb::SecretMetadata {
    pb::SecretMetadata {
        name: m.name,
        description: m.description,
        version: m.version,
        created_at_ms: m.created_at_ms,
        updated_at_ms: m.updated_at_ms,
    }
}

fn metadata_of(output: CommandOutput) -> Result<pb::SecretMetadata, ServerError> {
    match output {
        CommandOutput::Secret(m) => Ok(metadata(m)),
        other => Err(ServerError::internal(format!(
            "unexpected command output {other:?}"
        ))),
    }
}

impl SecretsApi {
    fn key(&self) -> Result<Arc<DataKey>, ServerError> {
        self.pki.current().data_key.clone().ok_or_else(|| {
            ServerError::FailedPrecondition(format!(
                "this server has no {DATA_KEY} in its PKI dir, so it can neither seal nor open secrets; run `berthd pki issue` for it again and restart it (docs/operations.md)"
            ))
        })
    }

    /// Opens a stored secret; a failure says which secret without the
    /// bytes.
    pub(crate) fn open(&self, secret: &Secret) -> Result<Vec<u8>, ServerError> {
        self.key()?
            .open(&secret.name, &secret.nonce, &secret.ciphertext)
            .map_err(|e| {
                tracing::error!(secret = %secret.name, error = %e, "cannot open a secret");
                ServerError::FailedPrecondition(format!("secret {:?}: {e}", secret.name))
            })
    }

    async fn put(
        &self,
        request: pb::SecretRequest,
        create: bool,
    ) -> Result<pb::SecretMetadata, ServerError> {
        check_secret_name("name", &request.name)?;
        if request.value.is_empty() {
            return Err(FieldError::new("value", "required (an empty secret is a mistake)").into());
        }
        if request.value.len() > MAX_SECRET_VALUE_LEN {
            return Err(FieldError::new("value", "larger than 64 KiB").into());
        }
        if request.description.len() > berth_types::limits::MAX_DESCRIPTION_LEN {
            return Err(FieldError::new("description", "too long").into());
        }
        let description = if create || request.set_description {
            request.description
        } else {
            // Kept: read it; a concurrent update racing this one keeps
            // whichever description the last writer saw, which is harmless.
            let name = request.name.clone();
            self.node
                .read(move |state| state.secret(&name).map(|s| s.description.clone()))
                .await?
                .unwrap_or_default()
        };
        let sealed = self
            .key()?
            .seal(&request.name, &request.value)
            .map_err(ServerError::internal)?;
        let output = self
            .node
            .write(Command::PutSecret {
                secret: Secret {
                    name: request.name,
                    description,
                    nonce: sealed.nonce.to_vec(),
                    ciphertext: sealed.ciphertext,
                    version: 0,
                    created_at_ms: 0,
                    updated_at_ms: 0,
                },
                create,
                at_ms: crate::api::now_ms(),
            })
            .await?;
        metadata_of(output)
    }

    /// `berth secret rekey`: seals again, under this server's primary
    /// key, every secret another key of its ring opens, and proposes them
    /// as compare-and-sets on their versions (a secret updated meanwhile
    /// is skipped, not overwritten).
    async fn rekey(&self) -> Result<pb::RekeySecretsResponse, ServerError> {
        use berth_types::secrets::ResealedSecret;
        /// The sealed bytes one ResealSecrets carries at most (a rekey of
        /// many secrets proposes several, each well under
        /// `node::MAX_BATCH_BYTES`).
        const RESEAL_BATCH_BYTES: usize = 1024 * 1024;
        let key = self.key()?;
        let secrets: Vec<Secret> = self
            .node
            .read(|state| state.secrets().cloned().collect())
            .await?;
        let mut reply = pb::RekeySecretsResponse {
            primary_key_id: key.primary_id(),
            ..Default::default()
        };
        let mut batches: Vec<Vec<ResealedSecret>> = vec![Vec::new()];
        let mut batch_bytes = 0;
        for secret in secrets {
            let opened = match key.open_which(&secret.name, &secret.nonce, &secret.ciphertext) {
                Ok(opened) => opened,
                Err(e) => {
                    tracing::error!(secret = %secret.name, error = %e, "rekey: cannot open a secret");
                    reply.unreadable.push(secret.name);
                    continue;
                }
            };
            if opened.by_primary {
                reply.current += 1;
                continue;
            }
            let sealed = key
                .seal(&secret.name, &opened.value)
                .map_err(ServerError::internal)?;
            if batch_bytes + sealed.ciphertext.len() > RESEAL_BATCH_BYTES {
                batches.push(Vec::new());
                batch_bytes = 0;
            }
            batch_bytes += sealed.ciphertext.len();
            if let Some(batch) = batches.last_mut() {
                batch.push(ResealedSecret {
                    name: secret.name,
                    version: secret.version,
                    nonce: sealed.nonce.to_vec(),
                    ciphertext: sealed.ciphertext,
                });
            }
        }
        for batch in batches.into_iter().filter(|b| !b.is_empty()) {
            match self
                .node
                .write(Command::ResealSecrets { secrets: batch })
                .await?
            {
                CommandOutput::Resealed { resealed, skipped } => {
                    reply.resealed += u32::try_from(resealed.len()).unwrap_or(u32::MAX);
                    reply.skipped.extend(skipped);
                }
                other => {
                    return Err(ServerError::internal(format!(
                        "unexpected command output {other:?}"
                    )))
                }
            }
        }
        self.rekey_aws_keys(&key, &mut reply).await?;
        tracing::info!(
            primary_key = %reply.primary_key_id,
            resealed = reply.resealed,
            current = reply.current,
            skipped = reply.skipped.len(),
            unreadable = reply.unreadable.len(),
            "secrets re-sealed under the primary data key"
        );
        Ok(reply)
    }

    /// The AWS access keys' secrets, sealed like secrets' values, are
    /// re-sealed in the same rekey (counted with the secrets, named
    /// `token/ID` in the reply's lists).
    async fn rekey_aws_keys(
        &self,
        key: &DataKey,
        reply: &mut pb::RekeySecretsResponse,
    ) -> Result<(), ServerError> {
        let tokens: Vec<berth_types::ApiToken> = self
            .node
            .read(|state| {
                state
                    .api_tokens()
                    .filter(|t| t.is_aws() && t.revoked_at_ms.is_none())
                    .cloned()
                    .collect()
            })
            .await?;
        let mut keys = Vec::new();
        for token in tokens {
            let Some(sealed) = &token.aws_secret else {
                continue;
            };
            let name = berth_types::aws_key_seal_name(&token.id);
            let opened = match key.open_which(&name, &sealed.nonce, &sealed.ciphertext) {
                Ok(opened) => opened,
                Err(e) => {
                    tracing::error!(token_id = %token.id, error = %e, "rekey: cannot open an AWS access key");
                    reply.unreadable.push(format!("token/{}", token.id));
                    continue;
                }
            };
            if opened.by_primary {
                reply.current += 1;
                continue;
            }
            let resealed = key
                .seal(&name, &opened.value)
                .map_err(ServerError::internal)?;
            keys.push(berth_types::ResealedKey {
                id: token.id,
                sealed: berth_types::SealedKey {
                    nonce: resealed.nonce.to_vec(),
                    ciphertext: resealed.ciphertext,
                },
            });
        }
        if keys.is_empty() {
            return Ok(());
        }
        match self
            .node
            .write(Command::ResealAwsAccessKeys { keys })
            .await?
        {
            CommandOutput::Resealed { resealed, skipped } => {
                reply.resealed += u32::try_from(resealed.len()).unwrap_or(u32::MAX);
                reply
                    .skipped
                    .extend(skipped.into_iter().map(|id| format!("token/{id}")));
                Ok(())
            }
            other => Err(ServerError::internal(format!(
                "unexpected command output {other:?}"
            ))),
        }
    }

    async fn stored(&self, name: &str) -> Result<Secret, ServerError> {
        let key = name.to_string();
        self.node
            .read(move |state| state.secret(&key).cloned())
            .await?
            .ok_or_else(|| ServerError::NotFound(format!("secret {name:?} not found")))
    }
}

#[tonic::async_trait]
impl pb::secret_service_server::SecretService for SecretsApi {
    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn create_secret(
        &self,
        request: Request<pb::SecretRequest>,
    ) -> Result<Response<pb::SecretMetadata>, Status> {
        Ok(Response::new(self.put(request.into_inner(), true).await?))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn update_secret(
        &self,
        request: Request<pb::SecretRequest>,
    ) -> Result<Response<pb::SecretMetadata>, Status> {
        Ok(Response::new(self.put(request.into_inner(), false).await?))
    }

    async fn list_secrets(
        &self,
        _request: Request<pb::ListSecretsRequest>,
    ) -> Result<Response<pb::ListSecretsResponse>, Status> {
        let secrets = self
            .node
            .read(|state| state.secrets().map(|s| metadata(s.metadata())).collect())
            .await?;
        Ok(Response::new(pb::ListSecretsResponse { secrets }))
    }

    async fn describe_secret(
        &self,
        request: Request<pb::SecretName>,
    ) -> Result<Response<pb::SecretMetadata>, Status> {
        let secret = self.stored(&request.into_inner().name).await?;
        Ok(Response::new(metadata(secret.metadata())))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn reveal_secret(
        &self,
        request: Request<pb::SecretName>,
    ) -> Result<Response<pb::RevealSecretResponse>, Status> {
        let secret = self.stored(&request.into_inner().name).await?;
        let value = self.open(&secret)?;
        Ok(Response::new(pb::RevealSecretResponse {
            secret: Some(metadata(secret.metadata())),
            value,
        }))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn delete_secret(
        &self,
        request: Request<pb::SecretName>,
    ) -> Result<Response<pb::SecretMetadata>, Status> {
        let name = request.into_inner().name;
        let output = self
            .node
            .write(Command::DeleteSecret {
                name,
                at_ms: crate::api::now_ms(),
            })
            .await?;
        Ok(Response::new(metadata_of(output)?))
    }

    #[tracing::instrument(skip_all)]
    async fn rekey_secrets(
        &self,
        _request: Request<pb::RekeySecretsRequest>,
    ) -> Result<Response<pb::RekeySecretsResponse>, Status> {
        Ok(Response::new(self.rekey().await?))
    }
}

/// Why an agent may not have a task's secrets, or which one is missing.
enum TaskSecrets {
    Found(Vec<Secret>),
    NotYours,
    Missing(String),
}

#[tonic::async_trait]
impl pb::agent_secrets_service_server::AgentSecretsService for SecretsApi {
    /// The caller is the instance of its certificate (the auth layer put
    /// it there); it gets the values only for a task placed on it that is
    /// neither STOPPED nor being stopped.
    #[tracing::instrument(skip_all, fields(task = %request.get_ref().task_id))]
    async fn get_task_secrets(
        &self,
        request: Request<pb::TaskSecretsRequest>,
    ) -> Result<Response<pb::TaskSecretsResponse>, Status> {
        let Some(crate::auth::Caller::Instance(instance_id)) =
            request.extensions().get::<crate::auth::Caller>().cloned()
        else {
            return Err(Status::permission_denied(
                "task secrets go only to the instance running the task (its client certificate)",
            ));
        };
        let task_id = request.into_inner().task_id;
        let id = task_id.clone();
        let found = self
            .node
            .read(move |state| {
                let Some(task) = state.task(&id).filter(|t| {
                    t.instance_id.as_deref() == Some(instance_id.as_str())
                        && t.last_status != berth_types::TaskStatus::Stopped
                        && t.desired_status != berth_types::DesiredStatus::Stopped
                }) else {
                    return TaskSecrets::NotYours;
                };
                let Some(td) = state.task_definition(&task.family, task.revision) else {
                    return TaskSecrets::NotYours;
                };
                let mut secrets = Vec::new();
                for name in berth_types::secrets::referenced(&td.spec.container_definitions) {
                    match state.secret(&name) {
                        Some(secret) => secrets.push(secret.clone()),
                        None => return TaskSecrets::Missing(name),
                    }
                }
                TaskSecrets::Found(secrets)
            })
            .await?;
        let secrets = match found {
            TaskSecrets::Found(secrets) => secrets,
            // One answer for unknown, stopped and someone else's tasks: an
            // instance learns nothing about tasks that are not its own.
            TaskSecrets::NotYours => {
                tracing::warn!(task = %task_id, "secrets refused: no running task of this instance");
                return Err(Status::permission_denied(format!(
                    "task {task_id} is not a running task of this instance"
                )));
            }
            TaskSecrets::Missing(name) => {
                return Err(Status::not_found(format!("secret {name:?} does not exist")))
            }
        };
        let mut values = Vec::with_capacity(secrets.len());
        for secret in &secrets {
            values.push(pb::TaskSecretValue {
                name: secret.name.clone(),
                value: self.open(secret)?,
            });
        }
        Ok(Response::new(pb::TaskSecretsResponse { secrets: values }))
    }
}
