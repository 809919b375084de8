//! Secrets: sealed values for task definitions to reference.

use berth_proto::pb;
use berth_proto::pb::secret_service_client::SecretServiceClient;

use crate::{BerthClient, ClientError, Conn, Kind};

fn secret_service(conn: Conn) -> SecretServiceClient<Conn> {
    SecretServiceClient::new(conn)
}

fn name(name: &str) -> pb::SecretName {
    pb::SecretName {
        name: name.to_string(),
    }
}

impl BerthClient {
    /// Not retried after a lost reply: a second try would find it created.
    pub async fn create_secret(
        &self,
        request: pb::SecretRequest,
    ) -> Result<pb::SecretMetadata, ClientError> {
        self.call(Kind::Write, |conn| {
            let request = request.clone();
            async move { secret_service(conn).create_secret(request).await }
        })
        .await
    }

    /// Setting the same value twice is harmless (the version counts both).
    pub async fn update_secret(
        &self,
        request: pb::SecretRequest,
    ) -> Result<pb::SecretMetadata, ClientError> {
        self.call(Kind::Idempotent, |conn| {
            let request = request.clone();
            async move { secret_service(conn).update_secret(request).await }
        })
        .await
    }

    pub async fn list_secrets(&self) -> Result<Vec<pb::SecretMetadata>, ClientError> {
        let reply = self
            .call(Kind::Read, |conn| async move {
                secret_service(conn)
                    .list_secrets(pb::ListSecretsRequest {})
                    .await
            })
            .await?;
        Ok(reply.secrets)
    }

    pub async fn describe_secret(&self, secret: &str) -> Result<pb::SecretMetadata, ClientError> {
        let request = name(secret);
        self.call(Kind::Read, |conn| {
            let request = request.clone();
            async move { secret_service(conn).describe_secret(request).await }
        })
        .await
    }

    /// Needs an admin token.
    pub async fn reveal_secret(
        &self,
        secret: &str,
    ) -> Result<pb::RevealSecretResponse, ClientError> {
        let request = name(secret);
        self.call(Kind::Read, |conn| {
            let request = request.clone();
            async move { secret_service(conn).reveal_secret(request).await }
        })
        .await
    }

    /// Needs an admin token. Safe to repeat: a second run finds the
    /// secrets already sealed with the primary key.
    pub async fn rekey_secrets(&self) -> Result<pb::RekeySecretsResponse, ClientError> {
        self.call(Kind::Idempotent, |conn| async move {
            secret_service(conn)
                .rekey_secrets(pb::RekeySecretsRequest {})
                .await
        })
        .await
    }

    pub async fn delete_secret(&self, secret: &str) -> Result<pb::SecretMetadata, ClientError> {
        let request = name(secret);
        self.call(Kind::Write, |conn| {
            let request = request.clone();
            async move { secret_service(conn).delete_secret(request).await }
        })
        .await
    }
}
