//! `GET /downloads/berth-agent` and `GET /downloads/install-agent.sh` on the
//! API port, over the same TLS as the API, so that a host can install the
//! agent from the control plane itself (the install script checks the
//! server's CA against the digest in the join token before downloading).
//!
//! It sits in tonic's router as a service named `downloads`, so every path
//! under `/downloads/` reaches it; nothing here needs a token.

use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tonic::body::BoxBody;
use tonic::server::NamedService;

/// The installer, shipped inside berthd so it always matches the server.
pub const INSTALL_SCRIPT: &str = include_str!("../../../deploy/install/install-agent.sh");

#[derive(Clone)]
pub struct Downloads {
    /// The agent binary to hand out; `None` answers 404 with a hint.
    pub agent_binary: Option<PathBuf>,
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

impl<B: Send + 'static> tower::Service<http::Request<B>> for Downloads {
    type Response = http::Response<BoxBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_string();
        let agent_binary = self.agent_binary.clone();
        Box::pin(async move {
            let text = "text/plain; charset=utf-8";
            Ok(match (request.method() == http::Method::GET, path.as_str()) {
                (true, "/downloads/install-agent.sh") => response(
                    200,
                    "text/x-shellscript",
                    Bytes::from_static(INSTALL_SCRIPT.as_bytes()),
                ),
                (true, "/downloads/berth-agent") => match agent_binary {
                    Some(path) => match tokio::fs::read(&path).await {
                        Ok(data) => response(200, "application/octet-stream", Bytes::from(data)),
                        Err(e) => {
                            tracing::warn!(path = %path.display(), error = %e, "agent binary not readable");
                            response(
                                404,
                                text,
                                Bytes::from(format!(
                                    "this server cannot read its agent binary ({e}); start berthd with --agent-binary PATH\n"
                                )),
                            )
                        }
                    },
                    None => response(
                        404,
                        text,
                        Bytes::from_static(
                            b"this server has no agent binary to hand out; start berthd with --agent-binary PATH\n",
                        ),
                    ),
                },
                (false, _) => response(405, text, Bytes::from_static(b"only GET\n")),
                _ => response(
                    404,
                    text,
                    Bytes::from_static(b"try /downloads/berth-agent or /downloads/install-agent.sh\n"),
                ),
            })
        })
    }
}
