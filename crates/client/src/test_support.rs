//! Shared by the tests: a throwaway cluster CA, and TLS servers on
//! 127.0.0.1 that present its certificates the way berthd does.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_pki::{CertificateAuthority, IssuedCertificate};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::server::Router;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

pub(crate) struct TestPki {
    pub ca: Arc<CertificateAuthority>,
    /// Server certificate for 127.0.0.1 and localhost, CA appended.
    pub server: IssuedCertificate,
}

pub(crate) fn pki(cluster_id: &str) -> TestPki {
    let ca = CertificateAuthority::generate(cluster_id).unwrap();
    let server = ca
        .issue_server(
            1,
            &["127.0.0.1".into(), "localhost".into()],
            Duration::from_secs(3600),
        )
        .unwrap();
    TestPki {
        ca: Arc::new(ca),
        server,
    }
}

/// A server builder doing TLS with `pki`'s server certificate, asking for
/// (but not requiring) client certificates from the CA, as berthd does.
pub(crate) fn tls_server(pki: &TestPki) -> Server {
    Server::builder()
        .tls_config(
            ServerTlsConfig::new()
                .identity(Identity::from_pem(
                    &pki.server.cert_pem,
                    &pki.server.key_pem,
                ))
                .client_ca_root(Certificate::from_pem(&pki.ca.cert_pem))
                .client_auth_optional(true),
        )
        .unwrap()
}

/// Serves `router` on an ephemeral port; returns `127.0.0.1:PORT`.
pub(crate) async fn spawn(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
    addr.to_string()
}

/// Everything logged while the guard lives, on this thread (tokio tests run
/// on one), at debug level and above.
#[derive(Clone, Default)]
pub(crate) struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        let writer = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
