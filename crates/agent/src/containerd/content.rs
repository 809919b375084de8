//! Content store and lease helpers: streaming writes with digest checks on
//! both ends, reads, and leases that keep GC off what a pull is building.

use std::collections::HashMap;

use berth_types::time::rfc3339_nanos;
use containerd_client::services::v1::{
    AbortRequest, CreateRequest as LeaseCreateRequest, DeleteRequest as LeaseDeleteRequest, Info,
    InfoRequest, ReadContentRequest, UpdateRequest, WriteAction, WriteContentRequest,
};
use futures::{Stream, StreamExt};
use sha2::{Digest as _, Sha256};
use tonic::metadata::AsciiMetadataValue;
use tonic::{Code, Request};

use super::Inner;
use crate::error::{Result, RuntimeError};

type Bytes = Vec<u8>;

/// Batch small network chunks into messages of about this size.
const WRITE_CHUNK: usize = 1 << 20;

pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A lease in our namespace; requests made with it attach what they create
/// to it, so GC leaves partial pulls alone until `release`.
pub struct Lease {
    pub id: String,
    header: AsciiMetadataValue,
}

impl Inner {
    pub(crate) fn leased<T>(&self, lease: Option<&Lease>, msg: T) -> Request<T> {
        let mut req = self.request(msg);
        if let Some(l) = lease {
            req.metadata_mut()
                .insert("containerd-lease", l.header.clone());
        }
        req
    }

    pub(crate) async fn create_lease(&self, purpose: &str) -> Result<Lease> {
        let id = format!("berth-{purpose}-{:016x}", rand::random::<u64>());
        // Should the agent die mid-pull, the lease still ends, and GC reclaims
        // what the pull left.
        let expire = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
        let mut labels = HashMap::new();
        labels.insert("containerd.io/gc.expire".to_string(), rfc3339_nanos(expire));
        self.client
            .leases()
            .create(self.request(LeaseCreateRequest {
                id: id.clone(),
                labels,
            }))
            .await
            .map_err(|s| RuntimeError::containerd("create lease", s))?;
        let header = id.parse().map_err(|_| RuntimeError::InvalidConfig {
            container: String::new(),
            reason: format!("lease id {id} is not a header value"),
        })?;
        Ok(Lease { id, header })
    }

    pub(crate) async fn release_lease(&self, lease: Lease) {
        if let Err(s) = self
            .client
            .leases()
            .delete(self.request(LeaseDeleteRequest {
                id: lease.id.clone(),
                sync: false,
            }))
            .await
        {
            tracing::warn!(lease = %lease.id, error = %s.message(), "delete lease");
        }
    }

    pub(crate) async fn content_info(&self, digest: &str) -> Result<Option<Info>> {
        match self
            .client
            .content()
            .info(self.request(InfoRequest {
                digest: digest.to_string(),
            }))
            .await
        {
            Ok(r) => Ok(r.into_inner().info),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(RuntimeError::containerd("content info", s)),
        }
    }

    pub(crate) async fn read_content(&self, digest: &str) -> Result<Vec<u8>> {
        let mut stream = self
            .client
            .content()
            .read(self.request(ReadContentRequest {
                digest: digest.to_string(),
                offset: 0,
                size: 0,
            }))
            .await
            .map_err(|s| RuntimeError::containerd("read content", s))?
            .into_inner();
        let mut out = Vec::new();
        while let Some(msg) = stream.next().await {
            out.extend_from_slice(
                &msg.map_err(|s| RuntimeError::containerd("read content", s))?
                    .data,
            );
        }
        let actual = sha256_digest(&out);
        if actual != digest {
            return Err(RuntimeError::DigestMismatch {
                what: "content read back from containerd".into(),
                expected: digest.into(),
                actual,
            });
        }
        Ok(out)
    }

    /// Set GC reference labels on content that may already have existed.
    pub(crate) async fn label_content(
        &self,
        digest: &str,
        labels: HashMap<String, String>,
    ) -> Result<()> {
        if labels.is_empty() {
            return Ok(());
        }
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        self.client
            .content()
            .update(self.request(UpdateRequest {
                info: Some(Info {
                    digest: digest.to_string(),
                    labels,
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask { paths }),
            }))
            .await
            .map_err(|s| RuntimeError::containerd("label content", s))?;
        Ok(())
    }

    /// Write a blob whose bytes are in memory.
    pub(crate) async fn write_blob(
        &self,
        lease: Option<&Lease>,
        digest: &str,
        data: Vec<u8>,
        labels: HashMap<String, String>,
    ) -> Result<()> {
        let size = data.len() as i64;
        let stream = futures::stream::once(async move { Ok::<_, RuntimeError>(data) });
        self.write_stream(lease, digest, size, stream, labels).await
    }

    /// Stream a blob into the content store. We hash as we go and containerd
    /// checks the digest again at commit, so a corrupt or substituted blob
    /// never lands.
    pub(crate) async fn write_stream<S>(
        &self,
        lease: Option<&Lease>,
        digest: &str,
        size: i64,
        source: S,
        labels: HashMap<String, String>,
    ) -> Result<()>
    where
        S: Stream<Item = Result<Bytes>> + Send + 'static,
    {
        if self.content_info(digest).await?.is_some() {
            return Ok(());
        }
        let reference = format!("berth-{digest}");
        let (tx, rx) = tokio::sync::mpsc::channel::<WriteContentRequest>(4);
        let base = WriteContentRequest {
            r#ref: reference.clone(),
            ..Default::default()
        };
        let send = |m: WriteContentRequest| {
            let tx = tx.clone();
            async move { tx.send(m).await.is_ok() }
        };
        send(WriteContentRequest {
            action: WriteAction::Stat as i32,
            ..base.clone()
        })
        .await;
        let mut responses = self
            .client
            .content()
            .write(self.leased(lease, tokio_stream::wrappers::ReceiverStream::new(rx)))
            .await
            .map_err(|s| write_error(digest, s))?
            .into_inner();
        let first = responses
            .next()
            .await
            .transpose()
            .map_err(|s| write_error(digest, s))?;
        // A previous attempt may have left a partial ingest: start over.
        if first.is_some_and(|r| r.offset > 0) {
            drop(responses);
            let _ = self
                .client
                .content()
                .abort(self.request(AbortRequest {
                    r#ref: reference.clone(),
                }))
                .await;
            return Box::pin(self.write_stream(lease, digest, size, source, labels)).await;
        }

        let drain = tokio::spawn(async move {
            while let Some(r) = responses.next().await {
                r?;
            }
            Ok::<_, tonic::Status>(())
        });
        let mut hasher = Sha256::new();
        let mut offset: i64 = 0;
        let mut buf: Vec<u8> = Vec::with_capacity(WRITE_CHUNK);
        let mut source = Box::pin(source);
        let mut failure: Option<RuntimeError> = None;
        loop {
            let next = source.next().await;
            let flush = match &next {
                Some(Ok(chunk)) => {
                    hasher.update(chunk);
                    buf.extend_from_slice(chunk);
                    buf.len() >= WRITE_CHUNK
                }
                Some(Err(_)) => false,
                None => !buf.is_empty(),
            };
            if flush {
                let data = std::mem::take(&mut buf);
                let len = data.len() as i64;
                if !send(WriteContentRequest {
                    action: WriteAction::Write as i32,
                    offset,
                    data,
                    ..base.clone()
                })
                .await
                {
                    break;
                }
                offset += len;
            }
            match next {
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    failure = Some(e);
                    break;
                }
                None => break,
            }
        }
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if failure.is_none() && actual != digest {
            failure = Some(RuntimeError::DigestMismatch {
                what: format!("blob {digest}"),
                expected: digest.to_string(),
                actual,
            });
        }
        if failure.is_none() && size >= 0 && offset != size {
            failure = Some(RuntimeError::DigestMismatch {
                what: format!("size of blob {digest}"),
                expected: size.to_string(),
                actual: offset.to_string(),
            });
        }
        if failure.is_none() {
            send(WriteContentRequest {
                action: WriteAction::Commit as i32,
                total: offset,
                offset,
                expected: digest.to_string(),
                labels,
                ..base.clone()
            })
            .await;
        }
        drop(tx);
        let drained = drain.await;
        if let Some(e) = failure {
            let _ = self
                .client
                .content()
                .abort(self.request(AbortRequest { r#ref: reference }))
                .await;
            return Err(e);
        }
        match drained {
            Ok(Ok(())) => Ok(()),
            Ok(Err(s)) if s.code() == Code::AlreadyExists => Ok(()),
            Ok(Err(s)) => Err(write_error(digest, s)),
            Err(e) => Err(RuntimeError::io(
                "content write task",
                std::io::Error::other(e.to_string()),
            )),
        }
    }
}

fn write_error(digest: &str, s: tonic::Status) -> RuntimeError {
    if s.code() == Code::FailedPrecondition && s.message().contains("digest") {
        RuntimeError::DigestMismatch {
            what: format!("blob {digest} (containerd's check)"),
            expected: digest.to_string(),
            actual: s.message().to_string(),
        }
    } else {
        RuntimeError::containerd("write content", s)
    }
}
