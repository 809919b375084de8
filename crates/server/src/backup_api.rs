//! BackupService: a consistent copy of the replicated state from a running
//! server, for `berthd restore`. Admin only (the path is classified as a
//! write in `auth`): a backup holds every record of the state, token and
//! activation hashes included. Served locally and audited in the serving
//! server's audit log, like other calls that change nothing replicated.

use std::pin::Pin;

use berth_proto::pb;
use berth_proto::pb::backup_service_server::BackupService;
use sha2::{Digest, Sha256};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::error::ServerError;
use crate::node::BerthNode;

/// Chunk size: well under every message size limit on the way.
const CHUNK_BYTES: usize = 1024 * 1024;

type BackupStream = Pin<Box<dyn Stream<Item = Result<pb::BackupChunk, Status>> + Send>>;

#[derive(Clone)]
pub struct BackupApi {
    pub node: BerthNode,
}

#[tonic::async_trait]
impl BackupService for BackupApi {
    type BackupStream = BackupStream;

    async fn backup(
        &self,
        _request: Request<pb::BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        // Any server will do: past the barrier its state holds every write
        // acknowledged anywhere before the call.
        self.node.read_barrier().await?;
        let started = std::time::Instant::now();
        let reader = self.node.state().clone();
        let backup = tokio::task::spawn_blocking(move || reader.backup())
            .await
            .map_err(ServerError::internal)?;
        let bytes = backup.bytes;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let (applied_index, applied_term) = backup
            .last_applied
            .map_or((0, 0), |id| (id.index, id.leader_id.term));
        tracing::info!(
            applied_index,
            bytes = bytes.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "backup taken"
        );
        let first = pb::BackupChunk {
            data: Vec::new(),
            total_bytes: bytes.len() as u64,
            sha256,
            applied_index,
            applied_term,
            answered_by: self.node.id(),
            data_format: berth_store::DATA_FORMAT,
        };
        // Copied into messages one chunk at a time, as the stream is read.
        let data = (0..bytes.len().div_ceil(CHUNK_BYTES)).map(move |i| {
            let chunk = bytes.chunks(CHUNK_BYTES).nth(i).unwrap_or_default();
            Ok(pb::BackupChunk {
                data: chunk.to_vec(),
                ..Default::default()
            })
        });
        let stream = tokio_stream::iter(std::iter::once(Ok(first)).chain(data));
        Ok(Response::new(Box::pin(stream)))
    }
}
