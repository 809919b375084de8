//! Online backups: a consistent copy of the whole state from any server,
//! checked against the size and SHA-256 the server announced before it is
//! handed over.

use berth_proto::pb;
use berth_proto::pb::backup_service_client::BackupServiceClient;
use sha2::{Digest, Sha256};

use crate::error::{classify, Failure};
use crate::{BerthClient, ClientError, Kind};

/// A backup as received: the bytes of a snapshot file for `berthd restore`.
#[derive(Clone, PartialEq)]
pub struct Backup {
    pub bytes: Vec<u8>,
    /// Hex SHA-256 of `bytes`, as the server computed it and this client
    /// checked it.
    pub sha256: String,
    /// The last log entry the state includes.
    pub applied_index: u64,
    pub applied_term: u64,
    /// The server that made it.
    pub answered_by: u64,
    /// The data format of the state (a restoring berthd must read it).
    pub data_format: u32,
}

// By hand: the bytes hold the whole state and are no use in a log line.
impl std::fmt::Debug for Backup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backup")
            .field("bytes", &self.bytes.len())
            .field("sha256", &self.sha256)
            .field("applied_index", &self.applied_index)
            .field("applied_term", &self.applied_term)
            .field("answered_by", &self.answered_by)
            .field("data_format", &self.data_format)
            .finish()
    }
}

impl BerthClient {
    /// Takes a backup (admin token). It holds every write acknowledged
    /// before the call. A stream that breaks off is an error, never a
    /// shorter backup.
    pub async fn backup(&self) -> Result<Backup, ClientError> {
        let (mut stream, index) = self
            .call_indexed(Kind::Read, |conn| async move {
                BackupServiceClient::new(conn)
                    .backup(pb::BackupRequest {})
                    .await
            })
            .await?;
        let endpoint = self
            .inner
            .targets
            .get(index)
            .map(|t| t.name.clone())
            .unwrap_or_default();
        let broken = |status: tonic::Status| match classify(status) {
            Failure::Server(status) => ClientError::from_status(&status),
            Failure::NotSent(reason) | Failure::Lost(reason) => ClientError::StreamBroken {
                endpoint: endpoint.clone(),
                reason,
            },
        };
        let Some(first) = stream.message().await.map_err(&broken)? else {
            return Err(ClientError::InvalidResponse(
                "the backup stream ended before it said what it holds".into(),
            ));
        };
        let expected = usize::try_from(first.total_bytes).map_err(|_| {
            ClientError::InvalidResponse(format!(
                "a backup of {} bytes does not fit in memory here",
                first.total_bytes
            ))
        })?;
        let mut bytes = Vec::with_capacity(expected);
        bytes.extend_from_slice(&first.data);
        while let Some(chunk) = stream.message().await.map_err(&broken)? {
            bytes.extend_from_slice(&chunk.data);
            if bytes.len() > expected {
                break;
            }
        }
        if bytes.len() != expected {
            return Err(ClientError::InvalidResponse(format!(
                "the backup from {endpoint} has {} bytes where {expected} were announced; take it again",
                bytes.len()
            )));
        }
        let sha256 = hex::encode(Sha256::digest(&bytes));
        if sha256 != first.sha256 {
            return Err(ClientError::InvalidResponse(format!(
                "the backup from {endpoint} does not match the SHA-256 the server announced ({sha256} != {}); take it again",
                first.sha256
            )));
        }
        Ok(Backup {
            bytes,
            sha256,
            applied_index: first.applied_index,
            applied_term: first.applied_term,
            answered_by: first.answered_by,
            data_format: first.data_format,
        })
    }
}
