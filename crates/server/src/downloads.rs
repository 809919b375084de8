//! `GET /downloads/berth-agent`, `/downloads/berth-logd` (the agent's log
//! driver, which must sit beside it), each with a `.sha256`, and
//! `/downloads/install-agent.sh` on the API port, over the same TLS as the
//! API, so that a host can install the agent from the control plane itself
//! (the install script checks the server's CA against the digest in the
//! join token before downloading, and each binary against its SHA-256).
//!
//! It sits in tonic's router as a service named `downloads`, so every path
//! under `/downloads/` reaches it; nothing here needs a token (calls are
//! rate-limited per address like every unauthenticated call).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tonic::body::BoxBody;
use tonic::server::NamedService;

/// The installer, shipped inside berthd so it always matches the server.
pub const INSTALL_SCRIPT: &str = include_str!("../../../deploy/install/install-agent.sh");
/// The binary is sent in pieces of this size, never read whole.
const CHUNK: usize = 64 * 1024;

/// What identifies one version of the binary on disk.
type FileStamp = (u64, Option<SystemTime>);

/// The binaries handed out, by download name: the agent, and the log
/// driver it starts per container, which is found beside the agent.
const AGENT: &str = "berth-agent";
const LOG_DRIVER: &str = "berth-logd";

#[derive(Clone)]
pub struct Downloads {
    /// The agent binary to hand out; `None` answers 404 with a hint.
    /// berth-logd is served from the same directory.
    pub agent_binary: Option<PathBuf>,
    /// Each binary's SHA-256, computed once per version of the file.
    digests: Arc<Mutex<HashMap<PathBuf, (FileStamp, String)>>>,
}

impl Downloads {
    pub fn new(agent_binary: Option<PathBuf>) -> Self {
        Self {
            agent_binary,
            digests: Arc::default(),
        }
    }

    /// The file behind a download name, if this server hands it out.
    fn binary(&self, name: &str) -> Option<PathBuf> {
        let agent = self.agent_binary.as_ref()?;
        match name {
            AGENT => Some(agent.clone()),
            LOG_DRIVER => Some(agent.with_file_name(LOG_DRIVER)),
            _ => None,
        }
    }
}

impl NamedService for Downloads {
    const NAME: &'static str = "downloads";
}

fn response(status: u16, content_type: &str, body: Bytes) -> http::Response<BoxBody> {
    let body = Full::new(body)
        .map_err(|never: Infallible| match never {})
        .boxed_unsync();
    http::Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(body)
        .unwrap_or_else(|_| http::Response::new(tonic::body::empty_body()))
}

const TEXT: &str = "text/plain; charset=utf-8";

fn not_readable(path: &Path, e: &std::io::Error) -> http::Response<BoxBody> {
    tracing::warn!(path = %path.display(), error = %e, "binary to hand out not readable");
    response(
        404,
        TEXT,
        Bytes::from(format!(
            "this server cannot read {} ({e}); start berthd with --agent-binary PATH, \
             with berth-logd in the same directory\n",
            path.display()
        )),
    )
}

/// The binary as a stream of chunks, with its length announced.
async fn stream_file(path: &Path) -> std::io::Result<http::Response<BoxBody>> {
    let file = tokio::fs::File::open(path).await?;
    let len = file.metadata().await?.len();
    let chunks = futures::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0; CHUNK];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Frame::data(Bytes::from(buf))), Some(file)))
            }
            // The client sees the body end short of content-length.
            Err(e) => Some((
                Err(tonic::Status::internal(format!("reading the binary: {e}"))),
                None,
            )),
        }
    });
    Ok(http::Response::builder()
        .status(200)
        .header("content-type", "application/octet-stream")
        .header("content-length", len)
        .body(StreamBody::new(chunks).boxed_unsync())
        .unwrap_or_else(|_| http::Response::new(tonic::body::empty_body())))
}

fn stamp(path: &Path) -> std::io::Result<FileStamp> {
    let meta = std::fs::metadata(path)?;
    Ok((meta.len(), meta.modified().ok()))
}

/// SHA-256 of the file, read in chunks (on a blocking thread).
fn sha256_of(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0; CHUNK];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

impl Downloads {
    /// `sha256sum` output for a binary, recomputed when the file changes.
    async fn checksum(&self, path: PathBuf, name: &'static str) -> std::io::Result<String> {
        let digests = self.digests.clone();
        tokio::task::spawn_blocking(move || {
            let before = stamp(&path)?;
            let cached = digests
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&path)
                .cloned();
            let hex = match cached {
                Some((at, hex)) if at == before => hex,
                _ => {
                    let hex = sha256_of(&path)?;
                    digests
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(path, (before, hex.clone()));
                    hex
                }
            };
            Ok(format!("{hex}  {name}\n"))
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

impl<B: Send + 'static> tower::Service<http::Request<B>> for Downloads {
    type Response = http::Response<BoxBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_string();
        let this = self.clone();
        let is_get = request.method() == http::Method::GET;
        Box::pin(async move {
            let no_binary = || {
                response(
                    404,
                    TEXT,
                    Bytes::from_static(
                        b"this server has no agent binary to hand out; start berthd with --agent-binary PATH\n",
                    ),
                )
            };
            let name = path.strip_prefix("/downloads/").unwrap_or_default();
            let (name, sum) = match name.strip_suffix(".sha256") {
                Some(binary) => (binary, true),
                None => (name, false),
            };
            let known = [AGENT, LOG_DRIVER].into_iter().find(|b| *b == name);
            Ok(match (is_get, name, known) {
                (false, _, _) => response(405, TEXT, Bytes::from_static(b"only GET\n")),
                (true, "install-agent.sh", _) if !sum => response(
                    200,
                    "text/x-shellscript",
                    Bytes::from_static(INSTALL_SCRIPT.as_bytes()),
                ),
                (true, _, Some(name)) => match this.binary(name) {
                    Some(file) if sum => match this.checksum(file.clone(), name).await {
                        Ok(line) => response(200, TEXT, Bytes::from(line)),
                        Err(e) => not_readable(&file, &e),
                    },
                    Some(file) => match stream_file(&file).await {
                        Ok(response) => response,
                        Err(e) => not_readable(&file, &e),
                    },
                    None => no_binary(),
                },
                _ => response(
                    404,
                    TEXT,
                    Bytes::from_static(
                        b"try /downloads/berth-agent, /downloads/berth-logd (each with .sha256) or /downloads/install-agent.sh\n",
                    ),
                ),
            })
        })
    }
}
