//! A client of berthd's ECS-compatible API for the tests: HTTPS verified
//! against the test CA, requests signed with SigV4 by `berth-sigv4`, and
//! the parts of a request exposed so tests can tamper with them after
//! signing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

pub const TARGET_PREFIX: &str = "AmazonEC2ContainerServiceV20141113.";

/// An AWS-format key, as `berth auth token create --format aws -o json`
/// prints it.
#[derive(Debug, Clone)]
pub struct AwsKey {
    pub id: String,
    pub secret: String,
}

/// `berth auth token create ARGS -o json` as the bootstrap admin: what
/// it printed.
pub fn create_token(endpoints: &str, args: &[&str]) -> Result<Value> {
    let mut all = vec!["auth", "token", "create"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let out = crate::berth_cli(endpoints, &crate::test_pki().admin_token, &all);
    anyhow::ensure!(
        out.status.success(),
        "token create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Creates an AWS-format key with `role` through the CLI.
pub fn create_aws_key(endpoints: &str, role: &str) -> Result<AwsKey> {
    let created = create_token(
        endpoints,
        &[
            "--role",
            role,
            "--format",
            "aws",
            "--description",
            "ecs test",
        ],
    )?;
    aws_key_of(&created)
}

/// The key in what `auth token create --format aws -o json` printed.
pub fn aws_key_of(created: &Value) -> Result<AwsKey> {
    Ok(AwsKey {
        id: created["awsAccessKeyId"]
            .as_str()
            .context("awsAccessKeyId")?
            .to_string(),
        secret: created["awsSecretAccessKey"]
            .as_str()
            .context("awsSecretAccessKey")?
            .to_string(),
    })
}

/// A request, before and after signing.
#[derive(Debug, Clone)]
pub struct EcsRequest {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// An answer: the HTTP status and the JSON body.
#[derive(Debug, Clone)]
pub struct EcsReply {
    pub status: u16,
    pub body: Value,
}

impl EcsReply {
    /// The `__type` of an error answer.
    pub fn error_type(&self) -> &str {
        self.body["__type"].as_str().unwrap_or_default()
    }

    pub fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or_default()
    }
}

#[derive(Clone)]
pub struct EcsClient {
    pub addr: SocketAddr,
    pub key: AwsKey,
    pub region: String,
    /// `None`: plain HTTP (`--ecs-plain-http`).
    tls: Option<TlsConnector>,
    /// HTTP/2 (over TLS, negotiated with ALPN) instead of HTTP/1.1.
    http2: bool,
}

impl EcsClient {
    /// A client of the endpoint at `addr` (whose certificate is for
    /// 127.0.0.1, as the test servers' are), signing with `key`.
    pub fn new(addr: SocketAddr, key: AwsKey) -> Result<Self> {
        let ca_pem = std::fs::read_to_string(crate::test_pki().dir.join("ca.crt"))?;
        let mut roots = RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
            let cert: CertificateDer<'static> = cert?;
            roots.add(cert)?;
        }
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            addr,
            key,
            region: "eu-west-1".into(),
            tls: Some(TlsConnector::from(Arc::new(config))),
            http2: false,
        })
    }

    /// The same endpoint over HTTP/2 (ALPN `h2`).
    pub fn http2(addr: SocketAddr, key: AwsKey) -> Result<Self> {
        let mut client = Self::new(addr, key)?;
        let ca_pem = std::fs::read_to_string(crate::test_pki().dir.join("ca.crt"))?;
        let mut roots = RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
            roots.add(cert?)?;
        }
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        client.tls = Some(TlsConnector::from(Arc::new(config)));
        client.http2 = true;
        Ok(client)
    }

    /// A client of an endpoint served as plain HTTP.
    pub fn plain(addr: SocketAddr, key: AwsKey) -> Self {
        Self {
            addr,
            key,
            region: "eu-west-1".into(),
            tls: None,
            http2: false,
        }
    }

    pub fn with_key(&self, key: AwsKey) -> Self {
        Self {
            key,
            ..self.clone()
        }
    }

    /// A request for `operation` with `body`, signed now.
    pub fn signed(&self, operation: &str, body: &Value) -> Result<EcsRequest> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs() as i64;
        self.signed_at(operation, body, now, &self.key.secret, &self.region)
    }

    /// A request signed at `epoch_s` with `secret` for `region`.
    pub fn signed_at(
        &self,
        operation: &str,
        body: &Value,
        epoch_s: i64,
        secret: &str,
        region: &str,
    ) -> Result<EcsRequest> {
        let body = serde_json::to_vec(body)?;
        let amz_date = berth_sigv4::basic_time(epoch_s);
        let mut headers = vec![
            ("host".to_string(), self.addr.to_string()),
            ("x-amz-date".to_string(), amz_date.clone()),
            (
                "x-amz-target".to_string(),
                format!("{TARGET_PREFIX}{operation}"),
            ),
            (
                "content-type".to_string(),
                "application/x-amz-json-1.1".to_string(),
            ),
        ];
        let authorization = berth_sigv4::sign(
            &berth_sigv4::Request {
                method: "POST",
                path: "/",
                query: "",
                headers: &headers,
                body: &body,
            },
            &self.key.id,
            secret,
            region,
            "ecs",
            &amz_date,
        )?;
        headers.push(("authorization".to_string(), authorization));
        Ok(EcsRequest { headers, body })
    }

    /// Signs and sends.
    pub async fn call(&self, operation: &str, body: Value) -> Result<EcsReply> {
        let request = self.signed(operation, &body)?;
        self.send(request).await
    }

    /// Sends a request as it is.
    pub async fn send(&self, request: EcsRequest) -> Result<EcsReply> {
        let tcp = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect(self.addr),
        )
        .await
        .context("connect timed out")??;
        let mut sender = match &self.tls {
            Some(tls) if self.http2 => {
                let stream = tls
                    .connect(ServerName::try_from("127.0.0.1")?.to_owned(), tcp)
                    .await?;
                return self.send_http2(stream, request).await;
            }
            Some(tls) => {
                let stream = tls
                    .connect(ServerName::try_from("127.0.0.1")?.to_owned(), tcp)
                    .await?;
                let (sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                tokio::spawn(connection);
                sender
            }
            None => {
                let (sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
                tokio::spawn(connection);
                sender
            }
        };
        let response = tokio::time::timeout(
            Duration::from_secs(30),
            sender.send_request(http_request(&request, None)?),
        )
        .await
        .context("the ECS call timed out")??;
        reply(response).await
    }

    /// HTTP/2 has no `host` header: the host travels as `:authority`,
    /// which the request's URI carries (and the signature covers).
    async fn send_http2<S>(&self, stream: S, request: EcsRequest) -> Result<EcsReply>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            TokioIo::new(stream),
        )
        .await?;
        tokio::spawn(connection);
        let response = tokio::time::timeout(
            Duration::from_secs(30),
            sender.send_request(http_request(&request, Some(&self.addr.to_string()))?),
        )
        .await
        .context("the ECS call timed out")??;
        reply(response).await
    }
}

/// The HTTP request for `request`; with `authority`, an absolute URI and
/// no `host` header (HTTP/2).
fn http_request(
    request: &EcsRequest,
    authority: Option<&str>,
) -> Result<http::Request<Full<Bytes>>> {
    let uri = match authority {
        Some(a) => format!("https://{a}/"),
        None => "/".to_string(),
    };
    let mut builder = http::Request::post(uri);
    for (name, value) in &request.headers {
        if authority.is_some() && name == "host" {
            continue;
        }
        builder = builder.header(name.as_str(), value.as_str());
    }
    Ok(builder.body(Full::new(Bytes::from(request.body.clone())))?)
}

async fn reply(response: http::Response<hyper::body::Incoming>) -> Result<EcsReply> {
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await?.to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "the answer is not JSON: {}",
                String::from_utf8_lossy(&bytes)
            )
        })?
    };
    Ok(EcsReply { status, body })
}
