//! The server's PKI material and the TLS configurations built from it.
//!
//! Bootstrap of a static cluster (see the README): `berthd pki init` makes
//! the cluster's root CA and the bootstrap admin token once; `berthd pki
//! issue` makes each server's certificate and its signing CA (an
//! intermediate, so whichever server is asked can sign agents' certificates
//! while the root key stays where `pki init` put it), and copies the root
//! certificate and the admin token next to them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use berth_pki::files::{
    self, ADMIN_TOKEN, CA_CERT, CA_CROSS_CERT, CA_KEY, CA_PREVIOUS_KEY, SERVER_CERT, SERVER_KEY,
    SIGNING_CERT, SIGNING_KEY,
};
use berth_pki::tokens::ApiTokenSecret;
use berth_pki::{CertificateAuthority, PeerIdentity, Role};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tonic::transport::ClientTlsConfig;

use berth_pki::datakey::{DataKey, DATA_KEY};

use crate::ServerError;

/// A year: long enough not to surprise anyone, short enough that a copied
/// key does not outlive the next rotation (issue a new one, restart the
/// server; docs/security.md).
const SERVER_CERT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

pub struct Pki {
    /// What this server signs agents' certificates with: its signing CA.
    pub ca: CertificateAuthority,
    /// The cluster's root certificate: the trust anchor for every peer,
    /// and what join tokens pin.
    pub root_pem: String,
    server_cert_pem: String,
    server_key_pem: String,
    pub admin_token: Option<ApiTokenSecret>,
    /// The cluster data key secrets are sealed with; `None` in a PKI dir
    /// made before secrets existed: secret calls are then refused saying
    /// how to add it (`berthd pki issue` again).
    pub data_key: Option<Arc<DataKey>>,
}

fn pki_error(dir: &Path, e: impl std::fmt::Display) -> ServerError {
    ServerError::FailedPrecondition(format!(
        "PKI in {} is not usable: {e}; create it with `berthd pki init` and `berthd pki issue` (see the README)",
        dir.display()
    ))
}

impl Pki {
    /// Loads and checks the PKI of server `node_id`.
    pub fn load(dir: &Path, node_id: u64) -> Result<Self, ServerError> {
        let read = |name| files::read(dir, name).map_err(|e| pki_error(dir, e));
        files::check_private(dir, SERVER_KEY).map_err(|e| pki_error(dir, e))?;
        let root_pem = read(CA_CERT)?;
        let ca = if dir.join(SIGNING_KEY).exists() {
            files::check_private(dir, SIGNING_KEY).map_err(|e| pki_error(dir, e))?;
            let signing =
                CertificateAuthority::load_signing(&read(SIGNING_CERT)?, &read(SIGNING_KEY)?)
                    .map_err(|e| pki_error(dir, e))?;
            let root =
                CertificateAuthority::root_cluster_id(&root_pem).map_err(|e| pki_error(dir, e))?;
            if signing.cluster_id != root {
                return Err(pki_error(
                    dir,
                    format!(
                        "{SIGNING_CERT} belongs to cluster {}, but {CA_CERT} is cluster {root}",
                        signing.cluster_id
                    ),
                ));
            }
            signing
        } else {
            files::check_private(dir, CA_KEY).map_err(|e| pki_error(dir, e))?;
            tracing::warn!(
                pki_dir = %dir.display(),
                "this server holds the root CA key; run `berthd pki issue` for it again so it gets a signing CA and the root key can stay offline"
            );
            CertificateAuthority::load(&root_pem, &read(CA_KEY)?).map_err(|e| pki_error(dir, e))?
        };
        let server_cert_pem = read(SERVER_CERT)?;
        let leaf = berth_pki::first_der(&server_cert_pem).map_err(|e| pki_error(dir, e))?;
        let identity = PeerIdentity::from_der(&leaf).map_err(|e| pki_error(dir, e))?;
        if identity.cluster_id != ca.cluster_id {
            return Err(pki_error(
                dir,
                format!(
                    "{SERVER_CERT} belongs to cluster {}, but {CA_CERT} is cluster {}",
                    identity.cluster_id, ca.cluster_id
                ),
            ));
        }
        if identity.role != Role::Server(node_id) {
            return Err(pki_error(
                dir,
                format!("{SERVER_CERT} is {}, not server {node_id}", identity.uri()),
            ));
        }
        let admin_token = match files::read(dir, ADMIN_TOKEN) {
            Ok(text) => {
                files::check_private(dir, ADMIN_TOKEN).map_err(|e| pki_error(dir, e))?;
                Some(ApiTokenSecret::parse(&text).ok_or_else(|| {
                    pki_error(
                        dir,
                        format!("{ADMIN_TOKEN} does not hold a Berth API token"),
                    )
                })?)
            }
            Err(_) => None,
        };
        let data_key = if dir.join(DATA_KEY).exists() {
            files::check_private(dir, DATA_KEY).map_err(|e| pki_error(dir, e))?;
            Some(Arc::new(
                DataKey::parse(&read(DATA_KEY)?).map_err(|e| pki_error(dir, e))?,
            ))
        } else {
            tracing::warn!(
                pki_dir = %dir.display(),
                "no {DATA_KEY} in the PKI dir: secrets cannot be stored or read on this server; run `berthd pki issue` for it again (docs/operations.md)"
            );
            None
        };
        Ok(Self {
            ca,
            root_pem,
            server_cert_pem,
            server_key_pem: read(SERVER_KEY)?,
            admin_token,
            data_key,
        })
    }

    pub fn cluster_id(&self) -> &str {
        &self.ca.cluster_id
    }

    /// TLS for everything this server serves, for its own accept loop
    /// (`limits::tls_incoming`). Client certificates are optional at the
    /// TLS layer (operators use bearer tokens); the auth layer decides per
    /// call what a caller must present.
    pub fn acceptor(&self) -> Result<TlsAcceptor, ServerError> {
        let bad = |e: String| ServerError::FailedPrecondition(format!("TLS setup: {e}"));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = CertificateDer::pem_slice_iter(self.server_cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("{SERVER_CERT}: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(self.server_key_pem.as_bytes())
            .map_err(|e| bad(format!("{SERVER_KEY}: {e}")))?;
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(self.root_pem.as_bytes()) {
            let ca = ca.map_err(|e| bad(format!("{CA_CERT}: {e}")))?;
            roots.add(ca).map_err(|e| bad(format!("{CA_CERT}: {e}")))?;
        }
        let clients = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| bad(e.to_string()))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(e.to_string()))?
            .with_client_cert_verifier(clients)
            .with_single_cert(chain, key)
            .map_err(|e| bad(e.to_string()))?;
        // The agents' session transport (first, so that an agent offering
        // it and gRPC gets it), gRPC, and HTTP/1.1 for plain HTTPS
        // downloads (curl in the installer).
        config.alpn_protocols = vec![
            berth_wire::SESSION_ALPN.to_vec(),
            b"h2".to_vec(),
            b"http/1.1".to_vec(),
        ];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// TLS for calls to other servers: verify them against the cluster CA
    /// and present this server's certificate.
    pub fn peer_tls(&self) -> ClientTlsConfig {
        berth_proto::tls::client_tls(
            &self.root_pem,
            Some((&self.server_cert_pem, &self.server_key_pem)),
        )
    }
}

/// The PKI a running server uses, read again from its directory on
/// SIGHUP (`berthd` sends every reload here): certificates reissued into the
/// dir, a CA rotation's trust bundle and a new data key take effect without
/// a restart. A dir that does not load keeps the PKI in use.
pub struct SharedPki {
    dir: PathBuf,
    node_id: u64,
    current: RwLock<Arc<Pki>>,
    acceptor: tokio::sync::watch::Sender<TlsAcceptor>,
}

impl SharedPki {
    pub fn load(dir: &Path, node_id: u64) -> Result<Self, ServerError> {
        let pki = Pki::load(dir, node_id)?;
        let acceptor = pki.acceptor()?;
        Ok(Self {
            dir: dir.to_path_buf(),
            node_id,
            current: RwLock::new(Arc::new(pki)),
            acceptor: tokio::sync::watch::channel(acceptor).0,
        })
    }

    pub fn current(&self) -> Arc<Pki> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The TLS acceptor to use for the next connection, as it changes.
    pub fn acceptors(&self) -> tokio::sync::watch::Receiver<TlsAcceptor> {
        self.acceptor.subscribe()
    }

    /// Reads the dir again; on success the new PKI serves every handshake
    /// and call from now on (connections already open keep theirs).
    pub fn reload(&self) -> Result<Arc<Pki>, ServerError> {
        let next = Pki::load(&self.dir, self.node_id)?;
        let cluster = self.current().cluster_id().to_string();
        if next.cluster_id() != cluster {
            return Err(pki_error(
                &self.dir,
                format!(
                    "it now belongs to cluster {}, but this server runs in cluster {cluster}",
                    next.cluster_id()
                ),
            ));
        }
        let acceptor = next.acceptor()?;
        let next = Arc::new(next);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = next.clone();
        self.acceptor.send_replace(acceptor);
        Ok(next)
    }
}

/// `berthd pki init`: a new CA and bootstrap admin token in `dir`.
pub fn init(dir: &Path, cluster_id: Option<&str>) -> Result<String, ServerError> {
    if dir.join(CA_CERT).exists() {
        return Err(ServerError::FailedPrecondition(format!(
            "{} already holds a CA; refusing to replace it (that would split the cluster)",
            dir.display()
        )));
    }
    let cluster_id = match cluster_id {
        Some(id) if !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') => {
            id.to_string()
        }
        Some(id) => {
            return Err(ServerError::FailedPrecondition(format!(
                "--cluster-id {id:?} may only hold letters, digits and '-'"
            )))
        }
        None => berth_pki::random_hex(8),
    };
    let ca = CertificateAuthority::generate(&cluster_id).map_err(ServerError::internal)?;
    let write = |name, contents: &str, secret| {
        files::write(dir, name, contents, secret).map_err(|e| pki_error(dir, e))
    };
    write(CA_CERT, &ca.cert_pem, false)?;
    write(CA_KEY, &ca.key_pem(), true)?;
    write(
        ADMIN_TOKEN,
        &format!("{}\n", ApiTokenSecret::generate().encode()),
        true,
    )?;
    write(DATA_KEY, &DataKey::generate().encode(), true)?;
    Ok(cluster_id)
}

/// Makes the data key in a CA dir that has none (made before secrets).
pub fn ensure_data_key(ca_dir: &Path) -> Result<(), ServerError> {
    if !ca_dir.join(DATA_KEY).exists() {
        files::write(ca_dir, DATA_KEY, &DataKey::generate().encode(), true)
            .map_err(|e| pki_error(ca_dir, e))?;
    }
    Ok(())
}

/// `berthd pki issue`: a server certificate and a signing CA for `node_id`
/// in `out`, with the root certificate and the admin token copied beside
/// them (never the root key).
pub fn issue(
    pki_dir: &Path,
    node_id: u64,
    hosts: &[String],
    out: &Path,
) -> Result<(), ServerError> {
    if hosts.is_empty() {
        return Err(ServerError::FailedPrecondition(
            "name at least one --host (IP or DNS name) clients use to reach this server".into(),
        ));
    }
    let read = |name| files::read(pki_dir, name).map_err(|e| pki_error(pki_dir, e));
    let ca = CertificateAuthority::load(&read(CA_CERT)?, &read(CA_KEY)?)
        .map_err(|e| pki_error(pki_dir, e))?;
    // A CA dir from before secrets gets its data key here, once: every
    // server issued from it from now on gets the same key.
    ensure_data_key(pki_dir)?;
    let data_key = read(DATA_KEY)?;
    DataKey::parse(&data_key).map_err(|e| pki_error(pki_dir, e))?;
    let issued = ca
        .issue_server(node_id, hosts, SERVER_CERT_LIFETIME)
        .map_err(ServerError::internal)?;
    let write = |name, contents: &str, secret| {
        files::write(out, name, contents, secret).map_err(|e| pki_error(out, e))
    };
    let signing = ca
        .issue_signing_ca(node_id, SERVER_CERT_LIFETIME)
        .map_err(ServerError::internal)?;
    // During a CA rotation what the new root issues carries the
    // cross-signed new root too, so peers that still trust only the old
    // root can build a path to it. The server chain keeps the new root
    // itself last: a joining agent pins the last certificate it is shown.
    let (server_chain, signing_chain) = match files::read(pki_dir, CA_CROSS_CERT) {
        Ok(cross) => {
            let leaf = berth_pki::split_pem(&issued.cert_pem)
                .into_iter()
                .next()
                .unwrap_or_default();
            (
                format!("{leaf}{cross}{}", ca.cert_pem),
                format!("{}{cross}", signing.cert_pem),
            )
        }
        Err(_) => (issued.cert_pem.clone(), signing.cert_pem.clone()),
    };
    write(SERVER_CERT, &server_chain, false)?;
    write(SERVER_KEY, &issued.key_pem, true)?;
    write(SIGNING_CERT, &signing_chain, false)?;
    write(SIGNING_KEY, &signing.key_pem, true)?;
    if out != pki_dir {
        // The whole bundle: both roots during a rotation.
        write(CA_CERT, &read(CA_CERT)?, false)?;
        // An earlier issue into this dir copied the root key; it must not
        // stay beside a signing CA.
        let stale_root_key = out.join(CA_KEY);
        if stale_root_key.exists() {
            std::fs::remove_file(&stale_root_key).map_err(|e| pki_error(out, e))?;
        }
        if let Ok(token) = read(ADMIN_TOKEN) {
            write(ADMIN_TOKEN, &token, true)?;
        }
        write(DATA_KEY, &data_key, true)?;
    }
    Ok(())
}

/// `berthd pki rotate-ca start`: a new root in the CA dir, cross-signed
/// by the current one. Afterwards `ca.crt` trusts both (the new one first,
/// which now issues), `ca.key` is the new root's key, `ca-cross.crt` the
/// cross-signed certificate and `ca-previous.key` the old key. Returns the
/// new root's digest.
pub fn rotate_ca_start(dir: &Path) -> Result<String, ServerError> {
    let read = |name| files::read(dir, name).map_err(|e| pki_error(dir, e));
    if dir.join(CA_CROSS_CERT).exists() {
        return Err(ServerError::FailedPrecondition(format!(
            "a CA rotation is already under way in {} ({CA_CROSS_CERT} is there); finish it with `berthd pki rotate-ca finish` first",
            dir.display()
        )));
    }
    files::check_private(dir, CA_KEY).map_err(|e| pki_error(dir, e))?;
    let bundle = read(CA_CERT)?;
    let old_key = read(CA_KEY)?;
    let old = CertificateAuthority::load(&bundle, &old_key).map_err(|e| pki_error(dir, e))?;
    let (next, cross) = old.successor().map_err(ServerError::internal)?;
    let write = |name, contents: &str, secret| {
        files::write(dir, name, contents, secret).map_err(|e| pki_error(dir, e))
    };
    // In this order, so an interrupted run is either not started (no
    // cross certificate: run it again) or complete: the old key is kept
    // before the new one replaces it, and the bundle that names the new
    // root comes last (a key that does not match ca.crt's first
    // certificate is refused by every load until it does).
    write(CA_PREVIOUS_KEY, &old_key, true)?;
    write(CA_KEY, &next.key_pem(), true)?;
    write(
        CA_CERT,
        &format!("{}{}", next.cert_pem, old.cert_pem),
        false,
    )?;
    write(CA_CROSS_CERT, &cross, false)?;
    berth_pki::ca_digest(&next.cert_pem).map_err(ServerError::internal)
}

/// `berthd pki rotate-ca finish`: the old root leaves the bundle, and the
/// cross-signed certificate and the old key are deleted.
pub fn rotate_ca_finish(dir: &Path) -> Result<String, ServerError> {
    let read = |name| files::read(dir, name).map_err(|e| pki_error(dir, e));
    if !dir.join(CA_CROSS_CERT).exists() {
        return Err(ServerError::FailedPrecondition(format!(
            "no CA rotation is under way in {} (no {CA_CROSS_CERT}); start one with `berthd pki rotate-ca start`",
            dir.display()
        )));
    }
    let current = CertificateAuthority::load(&read(CA_CERT)?, &read(CA_KEY)?)
        .map_err(|e| pki_error(dir, e))?;
    files::write(dir, CA_CERT, &current.cert_pem, false).map_err(|e| pki_error(dir, e))?;
    for name in [CA_CROSS_CERT, CA_PREVIOUS_KEY] {
        match std::fs::remove_file(dir.join(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(pki_error(dir, e)),
        }
    }
    berth_pki::ca_digest(&current.cert_pem).map_err(ServerError::internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_issue_and_load_check_identity() {
        let tmp = tempfile::tempdir().unwrap();
        let ca_dir = tmp.path().join("ca");
        let cluster = init(&ca_dir, Some("test-1")).unwrap();
        assert_eq!(cluster, "test-1");
        assert!(
            init(&ca_dir, None).is_err(),
            "an existing CA is never replaced"
        );
        let node2 = tmp.path().join("node2");
        issue(&ca_dir, 2, &["127.0.0.1".into()], &node2).unwrap();
        let pki = Pki::load(&node2, 2).unwrap();
        assert_eq!(pki.cluster_id(), "test-1");
        assert!(pki.admin_token.is_some());
        let wrong = Pki::load(&node2, 3).err().unwrap().to_string();
        assert!(wrong.contains("not server 3"), "{wrong}");
        assert!(issue(&ca_dir, 4, &[], &tmp.path().join("x")).is_err());

        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            node2.join(SERVER_KEY),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let loose = Pki::load(&node2, 2).err().unwrap().to_string();
        assert!(loose.contains("chmod 600"), "{loose}");
    }

    /// Every server issued from one CA dir gets the same data key, 0600; a
    /// CA dir made before secrets gets one at the next issue.
    #[test]
    fn data_key_is_made_at_init_and_copied_by_issue() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let ca_dir = tmp.path().join("ca");
        init(&ca_dir, Some("test-3")).unwrap();
        let mode = std::fs::metadata(ca_dir.join(DATA_KEY))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (n1, n2) = (tmp.path().join("n1"), tmp.path().join("n2"));
        issue(&ca_dir, 1, &["127.0.0.1".into()], &n1).unwrap();
        issue(&ca_dir, 2, &["127.0.0.1".into()], &n2).unwrap();
        let k1 = Pki::load(&n1, 1).unwrap().data_key.unwrap();
        let k2 = Pki::load(&n2, 2).unwrap().data_key.unwrap();
        let sealed = k1.seal("s", b"v").unwrap();
        assert_eq!(
            k2.open("s", &sealed.nonce, &sealed.ciphertext).unwrap(),
            b"v"
        );

        // An older PKI: no data key anywhere. The server still starts (no
        // secrets); issuing again creates the key once in the CA dir.
        std::fs::remove_file(ca_dir.join(DATA_KEY)).unwrap();
        std::fs::remove_file(n1.join(DATA_KEY)).unwrap();
        assert!(Pki::load(&n1, 1).unwrap().data_key.is_none());
        issue(&ca_dir, 1, &["127.0.0.1".into()], &n1).unwrap();
        assert!(ca_dir.join(DATA_KEY).exists());
        assert!(Pki::load(&n1, 1).unwrap().data_key.is_some());
    }

    fn der_chain(pem: &str) -> Vec<tokio_rustls::rustls::pki_types::CertificateDer<'static>> {
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        tokio_rustls::rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// Every certificate of a PEM bundle as trust anchors.
    fn root_store(pem: &str) -> Arc<tokio_rustls::rustls::RootCertStore> {
        let mut roots = tokio_rustls::rustls::RootCertStore::empty();
        for cert in der_chain(pem) {
            roots.add(cert).unwrap();
        }
        Arc::new(roots)
    }

    /// What a server checks agents' certificates with, trusting `anchor`.
    fn client_verifier(
        anchor: &str,
    ) -> Arc<dyn tokio_rustls::rustls::server::danger::ClientCertVerifier> {
        tokio_rustls::rustls::server::WebPkiClientVerifier::builder(root_store(anchor))
            .build()
            .unwrap()
    }

    /// The root key stays where `pki init` put it: a server gets a signing
    /// CA instead, and what it signs verifies against the root alone.
    #[test]
    fn servers_sign_with_their_own_signing_ca_and_never_get_the_root_key() {
        use tokio_rustls::rustls;
        let tmp = tempfile::tempdir().unwrap();
        let ca_dir = tmp.path().join("ca");
        init(&ca_dir, Some("test-2")).unwrap();
        let node1 = tmp.path().join("node1");
        // A dir issued by an earlier build held the root key: issuing again
        // removes it.
        std::fs::create_dir_all(&node1).unwrap();
        std::fs::copy(ca_dir.join(CA_KEY), node1.join(CA_KEY)).unwrap();
        issue(&ca_dir, 1, &["127.0.0.1".into()], &node1).unwrap();
        assert!(
            !node1.join(CA_KEY).exists(),
            "the root key was left on a server"
        );
        assert!(node1.join(SIGNING_KEY).exists());
        let pki = Pki::load(&node1, 1).unwrap();
        let root = std::fs::read_to_string(ca_dir.join(CA_CERT)).unwrap();
        assert_eq!(pki.root_pem, root);
        assert_ne!(pki.ca.cert_pem, root, "signs with the root");

        let (_, csr) = berth_pki::generate_csr("agent").unwrap();
        let signed = pki
            .ca
            .sign_instance_csr(&csr, "i-1", Duration::from_secs(600))
            .unwrap();
        let chain = der_chain(&signed);
        assert_eq!(chain.len(), 2, "leaf and signing CA");
        let _ = rustls::crypto::ring::default_provider().install_default();
        let verifier_for = client_verifier;
        let now = tokio_rustls::rustls::pki_types::UnixTime::now();
        verifier_for(&root)
            .verify_client_cert(&chain[0], &chain[1..], now)
            .expect("an agent certificate chains to the root");
        // Without the signing CA in the chain there is no path: the chain is
        // what makes it verify, not a root that signed the leaf directly.
        assert!(verifier_for(&root)
            .verify_client_cert(&chain[0], &[], now)
            .is_err());
        // Another cluster's root does not accept it.
        let other = tmp.path().join("other");
        init(&other, Some("test-3")).unwrap();
        let other_root = std::fs::read_to_string(other.join(CA_CERT)).unwrap();
        assert!(verifier_for(&other_root)
            .verify_client_cert(&chain[0], &chain[1..], now)
            .is_err());
    }

    /// A CA rotation: what the new root issues verifies for peers that
    /// still trust only the old root (through the cross-signed certificate)
    /// and for those that trust only the new one; once finished, nothing
    /// chains to the old root any more. Checked with rustls's own
    /// verifiers, as the servers and agents use them.
    #[test]
    fn a_rotated_root_is_trusted_across_the_change_and_alone_afterwards() {
        use tokio_rustls::rustls;
        use tokio_rustls::rustls::client::danger::ServerCertVerifier;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tmp = tempfile::tempdir().unwrap();
        let ca_dir = tmp.path().join("ca");
        init(&ca_dir, Some("test-rot")).unwrap();
        let old_root = std::fs::read_to_string(ca_dir.join(CA_CERT)).unwrap();
        let (node1, node2) = (tmp.path().join("node1"), tmp.path().join("node2"));
        issue(&ca_dir, 1, &["127.0.0.1".into()], &node1).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        rotate_ca_start(&ca_dir).unwrap();
        assert!(
            matches!(rotate_ca_start(&ca_dir), Err(ServerError::FailedPrecondition(m)) if m.contains("already under way")),
            "one rotation at a time"
        );
        let bundle = std::fs::read_to_string(ca_dir.join(CA_CERT)).unwrap();
        let new_root = berth_pki::split_pem(&bundle).remove(0);
        assert_eq!(bundle, format!("{new_root}{old_root}"));
        issue(&ca_dir, 2, &["127.0.0.1".into()], &node2).unwrap();

        let server_verifier = |anchor: &str| {
            rustls::client::WebPkiServerVerifier::builder(root_store(anchor))
                .build()
                .unwrap()
        };
        let now = tokio_rustls::rustls::pki_types::UnixTime::now();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let serves = |anchor: &str, dir: &Path| {
            let chain = der_chain(&std::fs::read_to_string(dir.join(SERVER_CERT)).unwrap());
            server_verifier(anchor)
                .verify_server_cert(&chain[0], &chain[1..], &name, &[], now)
                .is_ok()
        };
        let agent_of = |dir: &Path, n: u64| {
            let pki = Pki::load(dir, n).unwrap();
            let (_, csr) = berth_pki::generate_csr("agent").unwrap();
            let signed = pki
                .ca
                .sign_instance_csr(&csr, "i-1", Duration::from_secs(600))
                .unwrap();
            der_chain(&signed)
        };
        let accepts = |anchor: &str, chain: &[rustls::pki_types::CertificateDer<'static>]| {
            client_verifier(anchor)
                .verify_client_cert(&chain[0], &chain[1..], now)
                .is_ok()
        };

        // During the rotation.
        assert!(
            serves(&old_root, &node2),
            "old-root peers reach a reissued server"
        );
        assert!(serves(&new_root, &node2));
        assert!(serves(&bundle, &node2));
        assert!(serves(&bundle, &node1), "reissued peers reach the others");
        assert!(!serves(&new_root, &node1));
        let new_agent = agent_of(&node2, 2);
        let old_agent = agent_of(&node1, 1);
        assert!(accepts(&old_root, &new_agent), "via the cross-signed root");
        assert!(accepts(&new_root, &new_agent));
        assert!(accepts(&bundle, &old_agent));
        assert!(!accepts(&new_root, &old_agent));
        // A joining agent pins the last certificate it is shown: the new
        // root, which join tokens made now name.
        let shown = der_chain(&std::fs::read_to_string(node2.join(SERVER_CERT)).unwrap());
        assert_eq!(
            berth_pki::der_digest(shown.last().unwrap()),
            berth_pki::ca_digest(&new_root).unwrap()
        );
        assert_eq!(
            std::fs::read_to_string(node2.join(CA_CERT)).unwrap(),
            bundle
        );

        // Finished: the old root leaves every bundle and every chain.
        rotate_ca_finish(&ca_dir).unwrap();
        assert!(rotate_ca_finish(&ca_dir).is_err(), "nothing left to finish");
        assert_eq!(
            std::fs::read_to_string(ca_dir.join(CA_CERT)).unwrap(),
            new_root
        );
        issue(&ca_dir, 2, &["127.0.0.1".into()], &node2).unwrap();
        assert!(serves(&new_root, &node2));
        assert!(
            !serves(&old_root, &node2),
            "no path to the old root remains"
        );
        assert!(!accepts(&old_root, &agent_of(&node2, 2)));
        assert!(accepts(&new_root, &agent_of(&node2, 2)));
        assert_eq!(Pki::load(&node2, 2).unwrap().root_pem, new_root);
    }

    /// SIGHUP's reload: a reissued dir replaces the PKI in use, a broken one
    /// changes nothing.
    #[test]
    fn a_reload_takes_a_reissued_dir_and_refuses_a_broken_one() {
        let tmp = tempfile::tempdir().unwrap();
        let ca_dir = tmp.path().join("ca");
        init(&ca_dir, Some("test-reload")).unwrap();
        let node1 = tmp.path().join("node1");
        issue(&ca_dir, 1, &["127.0.0.1".into()], &node1).unwrap();
        let shared = SharedPki::load(&node1, 1).unwrap();
        let before = shared.current().root_pem.clone();
        let acceptors = shared.acceptors();
        rotate_ca_start(&ca_dir).unwrap();
        issue(&ca_dir, 1, &["127.0.0.1".into()], &node1).unwrap();
        let reloaded = shared.reload().unwrap();
        assert_ne!(reloaded.root_pem, before);
        assert_eq!(
            berth_pki::trust::roots(&shared.current().root_pem)
                .unwrap()
                .len(),
            2
        );
        assert!(
            acceptors.has_changed().unwrap(),
            "the listener gets a new acceptor"
        );

        std::fs::write(node1.join(SERVER_CERT), "garbage").unwrap();
        assert!(shared.reload().is_err());
        assert_eq!(shared.current().root_pem, reloaded.root_pem, "kept");
        let other = tmp.path().join("other");
        init(&other, Some("another-cluster")).unwrap();
        issue(&other, 1, &["127.0.0.1".into()], &node1).unwrap();
        assert!(
            matches!(shared.reload(), Err(e) if e.to_string().contains("another-cluster")),
            "a dir of another cluster is refused"
        );
        assert_eq!(shared.current().root_pem, reloaded.root_pem);
    }
}
