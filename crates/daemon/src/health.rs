//! A plain-HTTP health endpoint: `GET /healthz` answers 200 while the
//! process serves; `GET /readyz` answers 200 when the daemon says it is
//! ready (a leader is known; the agent's session is up); `GET /metrics`
//! answers the daemon's metrics in the Prometheus/OpenMetrics text format
//! once it has set a renderer. Kept apart from the TLS API port so that
//! probes and scrapers need no certificate or token.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Renders the metrics text for one scrape.
pub type MetricsRenderer = Arc<dyn Fn() -> String + Send + Sync>;

/// The content type of what a renderer returns (prometheus-client writes
/// OpenMetrics text, which Prometheus reads).
const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What `/readyz` reports, set by the daemon as things change, and how
/// `/metrics` is rendered.
#[derive(Clone, Default)]
pub struct HealthState {
    ready: Arc<AtomicBool>,
    /// Paths served besides the probes, with their content type.
    routes: Arc<RwLock<BTreeMap<&'static str, (&'static str, MetricsRenderer)>>>,
}

impl std::fmt::Debug for HealthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthState")
            .field("ready", &self.is_ready())
            .field("routes", &self.route_paths())
            .finish()
    }
}

impl HealthState {
    /// Serves `/metrics` with `render`.
    pub fn set_metrics(&self, render: MetricsRenderer) {
        self.set_route("/metrics", METRICS_CONTENT_TYPE, render);
    }

    /// Serves `path` (e.g. service discovery for Prometheus) with `render`.
    pub fn set_route(
        &self,
        path: &'static str,
        content_type: &'static str,
        render: MetricsRenderer,
    ) {
        self.routes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(path, (content_type, render));
    }

    fn route(&self, path: &str) -> Option<(&'static str, MetricsRenderer)> {
        self.routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(path)
            .cloned()
    }

    fn route_paths(&self) -> Vec<&'static str> {
        self.routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect()
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

/// Binds `addr` and serves the endpoint until the process exits.
pub async fn serve_health(addr: SocketAddr, state: HealthState) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(5), answer(stream, state)).await;
            });
        }
    });
    Ok(bound)
}

async fn answer(mut stream: TcpStream, state: HealthState) -> std::io::Result<()> {
    // The request line may come in pieces (a client writing "GET " and the
    // path separately): read until it is whole, or the buffer is full.
    let mut buf = [0u8; 1024];
    let mut n = 0;
    while n < buf.len() && !buf[..n].windows(2).any(|w| w == b"\r\n") {
        let got = stream.read(&mut buf[n..]).await?;
        if got == 0 {
            break;
        }
        n += got;
    }
    let request = String::from_utf8_lossy(&buf[..n]);
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let text = "text/plain";
    let (code, body, content_type) = match path {
        "/healthz" => (200, "ok\n".to_string(), text),
        "/readyz" if state.is_ready() => (200, "ready\n".to_string(), text),
        "/readyz" => (503, "not ready\n".to_string(), text),
        other => match state.route(other) {
            Some((content_type, render)) => (200, render(), content_type),
            None => (
                404,
                format!(
                    "not found; try /healthz, /readyz{}\n",
                    state
                        .route_paths()
                        .iter()
                        .map(|p| format!(" or {p}"))
                        .collect::<String>()
                ),
                text,
            ),
        },
    };
    let reason = match code {
        200 => "OK",
        503 => "Service Unavailable",
        _ => "Not Found",
    };
    let response = format!(
        "HTTP/1.1 {code} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// GETs `url` (`http://HOST:PORT/PATH`); Ok when it answers 200. For
/// container health checks in images that have no curl.
pub async fn probe(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url:?}: only http://HOST:PORT/PATH URLs are supported"))?;
    let (host, path) = match rest.split_once('/') {
        Some((h, p)) => (h, format!("/{p}")),
        None => (rest, "/".to_string()),
    };
    let attempt = async {
        let mut stream = TcpStream::connect(host)
            .await
            .map_err(|e| format!("cannot connect to {host}: {e}"))?;
        let request = format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.lines().next().unwrap_or_default().to_string();
        if status.split_whitespace().nth(1) == Some("200") {
            Ok(())
        } else {
            Err(format!("{url}: {status}"))
        }
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .map_err(|_| format!("{url}: no answer within 5s"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_line_sent_in_pieces_is_read_whole() {
        let state = HealthState::default();
        let addr = serve_health("127.0.0.1:0".parse().unwrap(), state)
            .await
            .unwrap();
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"GET ").await.unwrap();
        stream.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        stream
            .write_all(b"/healthz HTTP/1.0\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }

    #[tokio::test]
    async fn metrics_are_served_once_a_renderer_is_set() {
        let state = HealthState::default();
        let addr = serve_health("127.0.0.1:0".parse().unwrap(), state.clone())
            .await
            .unwrap();
        let url = format!("http://{addr}/metrics");
        assert!(probe(&url).await.unwrap_err().contains("404"));
        state.set_metrics(Arc::new(|| "berth_up 1\n# EOF\n".to_string()));
        probe(&url).await.unwrap();
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.contains("openmetrics-text"), "{response}");
        assert!(response.ends_with("berth_up 1\n# EOF\n"), "{response}");
    }

    #[tokio::test]
    async fn readiness_follows_the_state_and_liveness_is_always_ok() {
        let state = HealthState::default();
        let addr = serve_health("127.0.0.1:0".parse().unwrap(), state.clone())
            .await
            .unwrap();
        probe(&format!("http://{addr}/healthz")).await.unwrap();
        let e = probe(&format!("http://{addr}/readyz")).await.unwrap_err();
        assert!(e.contains("503"), "{e}");
        state.set_ready(true);
        probe(&format!("http://{addr}/readyz")).await.unwrap();
        assert!(probe(&format!("http://{addr}/nope")).await.is_err());
        assert!(probe("https://x/y")
            .await
            .unwrap_err()
            .contains("only http"));
    }
}
