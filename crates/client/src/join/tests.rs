use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use berth_pki::CertificateAuthority;
use berth_proto::pb;
use berth_proto::pb::agent_service_server::{AgentService, AgentServiceServer};
use rand::rngs::StdRng;
use tonic::{Request, Response, Status};

use super::*;
use crate::test_support::{self, CapturedLogs, TestPki};

// ------------------------------------------------------------ pure parts

#[test]
fn base64_matches_rfc_4648() {
    let cases = [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ];
    for (plain, encoded) in cases {
        assert_eq!(base64(plain.as_bytes()), encoded.as_bytes(), "{plain:?}");
    }
    assert_eq!(base64(&[0xfb, 0xff, 0xfe]), b"+//+");
}

#[test]
fn der_to_pem_reads_back_as_the_same_certificate() {
    let ca = CertificateAuthority::generate("pem").unwrap();
    let der = berth_pki::first_der(&ca.cert_pem).unwrap();
    let pem = der_to_pem(&der);
    assert_eq!(berth_pki::first_der(&pem).unwrap(), der);
    assert!(pem.lines().all(|line| line.len() <= 64), "{pem}");
    assert_eq!(
        berth_pki::ca_digest(&pem).unwrap(),
        berth_pki::ca_digest(&ca.cert_pem).unwrap()
    );
}

fn token_for(ca_pem: &str) -> JoinToken {
    JoinToken::generate(&berth_pki::ca_digest(ca_pem).unwrap())
}

#[test]
fn verify_ca_accepts_the_pinned_ca_and_names_a_mismatch() {
    let ca = CertificateAuthority::generate("a").unwrap();
    let other = CertificateAuthority::generate("b").unwrap();
    let token = token_for(&ca.cert_pem);
    verify_ca("10.0.0.1:7400", &token, &ca.cert_pem).unwrap();

    let err = verify_ca("10.0.0.1:7400", &token, &other.cert_pem).unwrap_err();
    let actual = berth_pki::ca_digest(&other.cert_pem).unwrap();
    assert_eq!(
        err.to_string(),
        format!(
            "the cluster CA at 10.0.0.1:7400 does not match the join token (digest {actual}, \
             token pins {}): possible man-in-the-middle; registration aborted",
            token.ca_digest
        )
    );
    assert!(!err.is_transient(), "a mismatch must not be retried");
    assert!(
        !err.to_string().contains(&token.secret),
        "the secret is never in a message"
    );
}

#[test]
fn renewal_delay_falls_between_half_and_four_fifths_of_the_lifetime() {
    let mut rng = StdRng::seed_from_u64(7);
    let issued = 1_700_000_000_000;
    let lifetime_ms = 24 * 3600 * 1000;
    let (mut lowest, mut highest) = (u128::MAX, 0);
    for _ in 0..2000 {
        let delay = renewal_delay(issued, issued + lifetime_ms, &mut rng).as_millis();
        assert!(delay >= lifetime_ms as u128 / 2, "{delay}");
        assert!(delay <= lifetime_ms as u128 * 4 / 5, "{delay}");
        lowest = lowest.min(delay);
        highest = highest.max(delay);
    }
    // Spread over the window, not stuck at one point.
    assert!(lowest < lifetime_ms as u128 * 52 / 100, "{lowest}");
    assert!(highest > lifetime_ms as u128 * 78 / 100, "{highest}");

    // A certificate that expires when or before it was issued: renew now.
    assert_eq!(renewal_delay(issued, issued, &mut rng), Duration::ZERO);
    assert_eq!(renewal_delay(issued, issued - 5, &mut rng), Duration::ZERO);
}

// ------------------------------------------------------ saving identities

/// An identity as a registration would produce it, with a certificate
/// valid for `lifetime`.
fn identity(ca: &CertificateAuthority, instance_id: &str, lifetime: Duration) -> AgentIdentity {
    let (key_pem, csr_pem) = berth_pki::generate_csr("test-host").unwrap();
    let cert_pem = ca
        .sign_instance_csr(&csr_pem, instance_id, lifetime)
        .unwrap();
    let expires_at_ms = berth_pki::not_after_ms(&cert_pem).unwrap();
    AgentIdentity {
        instance_id: instance_id.into(),
        cluster: "default".into(),
        expires_at_ms,
        local_expires_at_ms: expires_at_ms,
        cert_pem,
        key_pem,
        ca_pem: ca.cert_pem.clone(),
        issued_at_ms: now_ms(),
    }
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn identities_round_trip_through_the_directory_with_a_private_key() {
    let ca = CertificateAuthority::generate("save").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent");
    assert!(
        AgentIdentity::load(&path).unwrap().is_none(),
        "nothing saved yet"
    );

    let saved = identity(&ca, "i-1", Duration::from_secs(3600));
    saved.save(&path).unwrap();
    assert_eq!(mode(&path.join(KEY_FILE)), 0o600);
    assert_eq!(mode(&path.join(CERT_FILE)), 0o644);
    assert_eq!(mode(&path.join(CA_FILE)), 0o644);
    let mut names: Vec<String> = fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, [CERT_FILE, KEY_FILE, CA_FILE, IDENTITY_FILE]);

    let record: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(path.join(IDENTITY_FILE)).unwrap()).unwrap();
    assert_eq!(record["instanceId"], "i-1");
    assert_eq!(record["cluster"], "default");
    assert_eq!(record["expiresAtMs"], saved.expires_at_ms);
    assert!(
        !fs::read_to_string(path.join(IDENTITY_FILE))
            .unwrap()
            .contains("PRIVATE"),
        "the key is only in agent.key"
    );

    assert_eq!(AgentIdentity::load(&path).unwrap(), Some(saved.clone()));

    // Saving a renewal over it replaces everything.
    let renewed = identity(&ca, "i-1", Duration::from_secs(7200));
    renewed.save(&path).unwrap();
    assert_eq!(AgentIdentity::load(&path).unwrap(), Some(renewed));
    assert_eq!(mode(&path.join(KEY_FILE)), 0o600);
}

#[test]
fn an_interrupted_save_is_finished_or_discarded_on_load() {
    let ca = CertificateAuthority::generate("crash").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let old = identity(&ca, "i-1", Duration::from_secs(3600));
    old.save(dir.path()).unwrap();
    let new = identity(&ca, "i-1", Duration::from_secs(7200));

    // Stopped after writing only the new key: the old pair stays.
    files::write(dir.path(), NEXT_KEY_FILE, &new.key_pem, true).unwrap();
    let loaded = AgentIdentity::load(dir.path()).unwrap().unwrap();
    assert_eq!(loaded.key_pem, old.key_pem);
    assert_eq!(loaded.cert_pem, old.cert_pem);
    assert!(!dir.path().join(NEXT_KEY_FILE).exists());

    // Stopped after the key was renamed but before the certificate was:
    // the new pair is completed, and the expiry comes from the certificate
    // even though identity.json still has the old one.
    files::write(dir.path(), NEXT_CERT_FILE, &new.cert_pem, false).unwrap();
    files::write(dir.path(), KEY_FILE, &new.key_pem, true).unwrap();
    let loaded = AgentIdentity::load(dir.path()).unwrap().unwrap();
    assert_eq!(loaded.key_pem, new.key_pem);
    assert_eq!(loaded.cert_pem, new.cert_pem);
    assert_eq!(loaded.expires_at_ms, new.expires_at_ms);
    assert!(!dir.path().join(NEXT_CERT_FILE).exists());
}

#[test]
fn a_key_others_can_read_is_refused() {
    let ca = CertificateAuthority::generate("perm").unwrap();
    let dir = tempfile::tempdir().unwrap();
    identity(&ca, "i-1", Duration::from_secs(3600))
        .save(dir.path())
        .unwrap();
    fs::set_permissions(dir.path().join(KEY_FILE), fs::Permissions::from_mode(0o644)).unwrap();
    let err = AgentIdentity::load(dir.path()).unwrap_err();
    assert!(err.to_string().contains("chmod 600"), "{err}");
}

#[test]
fn debug_output_hides_keys_and_tokens() {
    let ca = CertificateAuthority::generate("dbg").unwrap();
    let id = identity(&ca, "i-1", Duration::from_secs(60));
    let text = format!("{id:?}");
    assert!(text.contains("i-1"));
    assert!(!text.contains("PRIVATE KEY"), "{text}");

    let token = token_for(&ca.cert_pem);
    let config = loop_config(vec![], Path::new("/nonexistent"), Some(token.encode()));
    let text = format!("{config:?}");
    assert!(!text.contains(&token.secret), "{text}");
}

// ------------------------------------------------------- fetching the CA

/// A bare TLS server (no gRPC) presenting `chain_pem`; it accepts
/// handshakes until the test ends.
async fn raw_tls_server(chain_pem: &str, key_pem: &str) -> String {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::PrivateKeyDer;

    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let _ = tokio::io::copy(&mut tokio::io::empty(), &mut tls).await;
                    let mut sink = Vec::new();
                    let _ = tokio::io::AsyncReadExt::read_to_end(&mut tls, &mut sink).await;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn fetch_ca_returns_the_last_certificate_of_the_servers_chain() {
    let pki = test_support::pki("fetch");
    let addr = raw_tls_server(&pki.server.cert_pem, &pki.server.key_pem).await;

    let ca_pem = fetch_ca(&addr).await.unwrap();
    let der = berth_pki::first_der(&ca_pem).unwrap();
    assert_eq!(
        berth_pki::der_digest(&der),
        berth_pki::ca_digest(&pki.ca.cert_pem).unwrap()
    );
    verify_ca(&addr, &token_for(&pki.ca.cert_pem), &ca_pem).unwrap();

    // The same through https:// and a host name.
    let port = addr.rsplit(':').next().unwrap();
    let again = fetch_ca(&format!("https://localhost:{port}"))
        .await
        .unwrap();
    assert_eq!(again, ca_pem);
}

#[tokio::test]
async fn fetch_ca_refuses_a_chain_without_a_ca_and_plain_http() {
    let pki = test_support::pki("lone");
    // Only the leaf: the first PEM block of the chain.
    let end = "-----END CERTIFICATE-----\n";
    let leaf = &pki.server.cert_pem[..pki.server.cert_pem.find(end).unwrap() + end.len()];
    let addr = raw_tls_server(leaf, &pki.server.key_pem).await;
    let err = fetch_ca(&addr).await.unwrap_err();
    assert!(err.to_string().contains("without the CA"), "{err}");

    let err = fetch_ca(&format!("http://{addr}")).await.unwrap_err();
    assert!(
        matches!(err, ClientError::InvalidEndpoint { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn fetch_ca_from_a_closed_port_is_transient() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let err = fetch_ca(&addr).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("cannot fetch the cluster CA from {addr}: connection refused")
    );
}

// ------------------------------------------- registering with a fake server

/// AgentService as the control plane would run it, minus Raft.
#[derive(Clone)]
struct FakeAgents {
    ca: Arc<CertificateAuthority>,
    activation: JoinToken,
    lifetime: Duration,
    registrations: Arc<AtomicUsize>,
    renewals: Arc<AtomicUsize>,
    pings: Arc<AtomicUsize>,
    last_registration: Arc<Mutex<Option<pb::RegisterInstanceRequest>>>,
    /// How far the fake server's clock is ahead of the test's: an agent
    /// whose clock is that far behind. Its certificates end `lifetime`
    /// after its stated time.
    clock_ahead_ms: i64,
}

impl FakeAgents {
    fn new(pki: &TestPki, lifetime: Duration) -> Self {
        Self {
            ca: pki.ca.clone(),
            activation: token_for(&pki.ca.cert_pem),
            lifetime,
            registrations: Arc::default(),
            renewals: Arc::default(),
            pings: Arc::default(),
            last_registration: Arc::default(),
            clock_ahead_ms: 0,
        }
    }

    /// What to sign for so that the not-after is `lifetime` past the fake's
    /// stated clock (the CA signs on the real one).
    fn signed_lifetime(&self) -> Duration {
        self.lifetime + Duration::from_millis(u64::try_from(self.clock_ahead_ms).unwrap_or(0))
    }

    /// The instance the client certificate names, as the server's mutual
    /// TLS check would find it.
    fn caller<T>(request: &Request<T>) -> Result<String, Status> {
        let certs = request
            .peer_certs()
            .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
        let first = certs
            .first()
            .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
        match PeerIdentity::from_der(first).map(|id| id.role) {
            Ok(Role::Instance(id)) => Ok(id),
            _ => Err(Status::permission_denied("not an instance certificate")),
        }
    }
}

#[tonic::async_trait]
impl AgentService for FakeAgents {
    async fn register_instance(
        &self,
        request: Request<pb::RegisterInstanceRequest>,
    ) -> Result<Response<pb::RegisterInstanceResponse>, Status> {
        let req = request.into_inner();
        if req.activation_id != self.activation.activation_id
            || req.activation_secret != self.activation.secret
        {
            return Err(Status::unauthenticated(
                "unknown activation or wrong secret",
            ));
        }
        let n = self.registrations.fetch_add(1, Ordering::SeqCst) + 1;
        let id = if req.previous_instance_id.is_empty() {
            format!("i-{n}")
        } else {
            req.previous_instance_id.clone()
        };
        let certificate_pem = self
            .ca
            .sign_instance_csr(&req.csr_pem, &id, self.signed_lifetime())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        *self.last_registration.lock().unwrap() = Some(req.clone());
        Ok(Response::new(pb::RegisterInstanceResponse {
            instance_id: id,
            cluster: if req.cluster.is_empty() {
                "default".into()
            } else {
                req.cluster
            },
            certificate_expires_at_ms: berth_pki::not_after_ms(&certificate_pem).unwrap(),
            certificate_pem,
            ca_pem: self.ca.cert_pem.clone(),
            server_time_ms: now_ms() + self.clock_ahead_ms,
        }))
    }

    async fn renew_certificate(
        &self,
        request: Request<pb::RenewCertificateRequest>,
    ) -> Result<Response<pb::RenewCertificateResponse>, Status> {
        let id = Self::caller(&request)?;
        self.renewals.fetch_add(1, Ordering::SeqCst);
        let certificate_pem = self
            .ca
            .sign_instance_csr(&request.into_inner().csr_pem, &id, self.signed_lifetime())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(pb::RenewCertificateResponse {
            certificate_expires_at_ms: berth_pki::not_after_ms(&certificate_pem).unwrap(),
            certificate_pem,
            server_time_ms: now_ms() + self.clock_ahead_ms,
        }))
    }

    async fn ping(
        &self,
        request: Request<pb::AgentPingRequest>,
    ) -> Result<Response<pb::AgentPingResponse>, Status> {
        let instance_id = Self::caller(&request)?;
        self.pings.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(pb::AgentPingResponse {
            instance_id,
            server_time_ms: now_ms() + self.clock_ahead_ms,
            ca_pem: String::new(),
        }))
    }
}

async fn serve_agents(pki: &TestPki, fake: FakeAgents) -> String {
    let router = test_support::tls_server(pki).add_service(AgentServiceServer::new(fake));
    test_support::spawn(router).await
}

fn attributes() -> BTreeMap<String, String> {
    BTreeMap::from([("zone".to_string(), "a".to_string())])
}

#[tokio::test]
async fn register_ping_and_renew_against_a_tls_server() {
    let pki = test_support::pki("flow");
    let fake = FakeAgents::new(&pki, Duration::from_secs(3600));
    let addr = serve_agents(&pki, fake.clone()).await;
    let endpoints = vec![addr.clone()];

    let identity = register(
        &endpoints,
        &fake.activation,
        "host-1",
        &attributes(),
        None,
        Some("prod".into()),
    )
    .await
    .unwrap();
    assert_eq!(identity.instance_id, "i-1");
    assert_eq!(identity.cluster, "prod");
    assert_eq!(
        berth_pki::ca_digest(&identity.ca_pem).unwrap(),
        fake.activation.ca_digest
    );
    assert!(identity.expires_at_ms > now_ms() + 3_500_000);
    let sent = fake.last_registration.lock().unwrap().clone().unwrap();
    assert_eq!(sent.hostname, "host-1");
    assert_eq!(sent.attributes[0].name, "zone");
    assert!(sent.csr_pem.contains("CERTIFICATE REQUEST"));
    assert!(!sent.csr_pem.contains("PRIVATE"), "the key stays here");

    let pong = ping(&endpoints, &identity).await.unwrap();
    assert_eq!(pong.instance_id, "i-1");

    let renewed = renew(&endpoints, &identity).await.unwrap();
    assert_eq!(renewed.instance_id, "i-1");
    assert_ne!(renewed.key_pem, identity.key_pem, "a new key each time");
    assert_ne!(renewed.cert_pem, identity.cert_pem);
    assert_eq!(fake.renewals.load(Ordering::SeqCst), 1);
    // The new certificate works.
    assert_eq!(ping(&endpoints, &renewed).await.unwrap().instance_id, "i-1");

    // Without a client certificate the server does not know the caller.
    let anonymous =
        BerthClient::new(ClientConfig::new(endpoints.clone()).with_ca(identity.ca_pem.clone()))
            .unwrap();
    let err = anonymous.agent_ping().await.unwrap_err();
    assert!(matches!(err, ClientError::Unauthenticated(_)), "{err:?}");
}

#[tokio::test]
async fn register_aborts_on_a_server_from_another_ca() {
    let genuine = test_support::pki("genuine");
    let impostor = test_support::pki("impostor");
    let fake = FakeAgents::new(&impostor, Duration::from_secs(3600));
    let addr = serve_agents(&impostor, fake.clone()).await;
    let token = token_for(&genuine.ca.cert_pem);

    let err = register(
        std::slice::from_ref(&addr),
        &token,
        "h",
        &BTreeMap::new(),
        None,
        None,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ClientError::CaMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains(&addr), "{err}");
    assert!(
        err.to_string().contains("possible man-in-the-middle"),
        "{err}"
    );
    assert!(
        fake.last_registration.lock().unwrap().is_none(),
        "nothing, least of all the secret, was sent"
    );
}

#[tokio::test]
async fn register_skips_unreachable_endpoints() {
    let pki = test_support::pki("skip");
    let fake = FakeAgents::new(&pki, Duration::from_secs(3600));
    let live = serve_agents(&pki, fake.clone()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = listener.local_addr().unwrap().to_string();
    drop(listener);

    let identity = register(
        &[closed.clone(), live],
        &fake.activation,
        "h",
        &BTreeMap::new(),
        None,
        None,
    )
    .await
    .unwrap();
    assert_eq!(identity.cluster, "default");

    let err = register(
        std::slice::from_ref(&closed),
        &fake.activation,
        "h",
        &BTreeMap::new(),
        None,
        None,
    )
    .await
    .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(err.to_string().contains(&closed), "{err}");
}

// ------------------------------------------------------------- the loop

fn loop_config(endpoints: Vec<String>, dir: &Path, token: Option<String>) -> AgentLoopConfig {
    AgentLoopConfig {
        endpoints,
        dir: dir.to_path_buf(),
        token,
        token_file: None,
        hostname: "host-1".into(),
        attributes: attributes(),
        cluster: None,
        ping_every: Duration::from_millis(200),
        updates: None,
    }
}

#[tokio::test]
async fn the_loop_needs_a_token_to_register() {
    let dir = tempfile::tempdir().unwrap();
    let config = loop_config(vec!["127.0.0.1:9".into()], dir.path(), None);
    let err = run_agent_identity_loop(config, std::future::pending())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("not registered yet: pass --token"),
        "{err}"
    );

    let config = loop_config(vec![], dir.path(), Some("BERTH1-nope".into()));
    let err = run_agent_identity_loop(config, std::future::pending())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::InvalidJoinToken(_)), "{err:?}");
}

#[tokio::test]
async fn an_expired_certificate_without_a_token_says_how_to_recover() {
    let ca = CertificateAuthority::generate("old").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut expired = identity(&ca, "i-9", Duration::ZERO);
    // Not-after is truncated to the second; make sure it is in the past.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    expired.issued_at_ms -= 10_000;
    expired.save(dir.path()).unwrap();

    let config = loop_config(vec!["127.0.0.1:9".into()], dir.path(), None);
    let err = run_agent_identity_loop(config, std::future::pending())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "certificate expired at {}; re-register with a fresh activation: --token",
            rfc3339(expired.expires_at_ms)
        )),
        "{text}"
    );
}

/// Waits for the `n`th identity the loop publishes.
async fn nth_update(
    updates: &mut watch::Receiver<Option<AgentIdentity>>,
    n: usize,
) -> AgentIdentity {
    let mut seen = 0;
    loop {
        tokio::time::timeout(Duration::from_secs(20), updates.changed())
            .await
            .expect("the loop published nothing in time")
            .unwrap();
        seen += 1;
        if seen == n {
            return updates.borrow().clone().unwrap();
        }
    }
}

#[tokio::test]
async fn the_loop_registers_pings_renews_and_never_logs_the_token() {
    let logs = CapturedLogs::default();
    let _guard = logs.install();

    let pki = test_support::pki("loop");
    // Short enough to see a renewal (at 1.5 to 2.4 s) within the test.
    let fake = FakeAgents::new(&pki, Duration::from_secs(3));
    let addr = serve_agents(&pki, fake.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let token = fake.activation.encode();
    let (tx, mut rx) = watch::channel(None);
    let mut config = loop_config(vec![addr], dir.path(), Some(token.clone()));
    config.updates = Some(tx);

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = run_agent_identity_loop(config.clone(), async {
        let _ = stopped.await;
    });
    let observer = async {
        let registered = nth_update(&mut rx, 1).await;
        let renewed = nth_update(&mut rx, 1).await;
        let _ = stop.send(());
        (registered, renewed)
    };
    let (result, (registered, renewed)) = tokio::join!(agent, observer);
    result.unwrap();

    assert_eq!(registered.instance_id, "i-1");
    assert_eq!(renewed.instance_id, "i-1");
    assert!(renewed.expires_at_ms >= registered.expires_at_ms);
    assert_ne!(renewed.key_pem, registered.key_pem);
    assert_eq!(fake.registrations.load(Ordering::SeqCst), 1);
    assert!(fake.renewals.load(Ordering::SeqCst) >= 1);
    assert!(fake.pings.load(Ordering::SeqCst) >= 1);
    // What was saved is the renewed identity.
    let saved = AgentIdentity::load(dir.path()).unwrap().unwrap();
    assert_eq!(saved.cert_pem, renewed.cert_pem);

    // A restart uses the saved identity without registering again.
    let (tx, mut rx) = watch::channel(None);
    config.updates = Some(tx);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = run_agent_identity_loop(config, async {
        let _ = stopped.await;
    });
    let observer = async {
        let loaded = nth_update(&mut rx, 1).await;
        let _ = stop.send(());
        loaded
    };
    let (result, loaded) = tokio::join!(agent, observer);
    result.unwrap();
    assert_eq!(loaded.instance_id, "i-1");
    assert_eq!(fake.registrations.load(Ordering::SeqCst), 1);

    let text = logs.text();
    assert!(text.contains("registered"), "{text}");
    assert!(text.contains("certificate renewed"), "{text}");
    assert!(!text.contains(&token), "the token was logged:\n{text}");
    assert!(
        !text.contains(&fake.activation.secret),
        "the secret was logged:\n{text}"
    );
    assert!(!text.contains("PRIVATE KEY"), "a key was logged:\n{text}");
}

#[tokio::test]
async fn an_expired_certificate_is_replaced_under_the_same_id() {
    let pki = test_support::pki("expired");
    let fake = FakeAgents::new(&pki, Duration::from_secs(3600));
    let addr = serve_agents(&pki, fake.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut expired = identity(&pki.ca, "i-42", Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    expired.issued_at_ms -= 10_000;
    expired.save(dir.path()).unwrap();

    let (tx, mut rx) = watch::channel(None);
    let mut config = loop_config(vec![addr], dir.path(), Some(fake.activation.encode()));
    config.updates = Some(tx);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = run_agent_identity_loop(config, async {
        let _ = stopped.await;
    });
    let observer = async {
        let fresh = nth_update(&mut rx, 1).await;
        let _ = stop.send(());
        fresh
    };
    let (result, fresh) = tokio::join!(agent, observer);
    result.unwrap();

    assert_eq!(fresh.instance_id, "i-42");
    assert!(fresh.expires_at_ms > now_ms());
    let sent = fake.last_registration.lock().unwrap().clone().unwrap();
    assert_eq!(sent.previous_instance_id, "i-42");
    // The id is asked for with the key of its last certificate (the proof
    // the control plane wants), and that key stays the agent's.
    assert_eq!(
        berth_pki::csr_key_digest(&sent.csr_pem).unwrap(),
        berth_pki::key_digest(&expired.key_pem).unwrap()
    );
    assert_eq!(fresh.key_pem, expired.key_pem);
    let saved = AgentIdentity::load(dir.path()).unwrap().unwrap();
    assert_eq!(saved.key_pem, expired.key_pem);
    assert_eq!(saved.cert_pem, fresh.cert_pem);
}

#[tokio::test]
async fn the_token_file_is_removed_once_registered() {
    let pki = test_support::pki("tokenfile");
    let fake = FakeAgents::new(&pki, Duration::from_secs(3600));
    let addr = serve_agents(&pki, fake.clone()).await;
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("identity");
    fs::create_dir(&dir).unwrap();
    let token_file = work.path().join("join-token");
    fs::write(&token_file, fake.activation.encode()).unwrap();

    let (tx, mut rx) = watch::channel(None);
    let mut config = loop_config(vec![addr], &dir, Some(fake.activation.encode()));
    config.token_file = Some(token_file.clone());
    config.updates = Some(tx);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = run_agent_identity_loop(config.clone(), async {
        let _ = stopped.await;
    });
    let observer = async {
        let registered = nth_update(&mut rx, 1).await;
        let _ = stop.send(());
        registered
    };
    let (result, registered) = tokio::join!(agent, observer);
    result.unwrap();
    assert_eq!(registered.instance_id, "i-1");
    assert!(!token_file.exists(), "the join token stayed on the host");

    // A token file put back (an installer re-run, say) is removed again as
    // soon as the saved identity is found, and nothing registers.
    fs::write(&token_file, fake.activation.encode()).unwrap();
    let (tx, mut rx) = watch::channel(None);
    config.updates = Some(tx);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = run_agent_identity_loop(config, async {
        let _ = stopped.await;
    });
    let observer = async {
        let loaded = nth_update(&mut rx, 1).await;
        let _ = stop.send(());
        loaded
    };
    let (result, loaded) = tokio::join!(agent, observer);
    result.unwrap();
    assert_eq!(loaded.instance_id, "i-1");
    assert!(!token_file.exists());
    assert_eq!(fake.registrations.load(Ordering::SeqCst), 1);
}

const HOUR_MS: i64 = 3_600_000;

#[test]
fn renewal_follows_the_servers_lifetime_whatever_the_agents_clock() {
    // The server signs at server time T for one hour. The agent receives
    // the certificate when its own clock reads T + offset.
    let server_now = 1_800_000_000_000;
    let not_after = server_now + HOUR_MS;
    let mut rng = StdRng::seed_from_u64(7);
    for offset in [-5 * HOUR_MS, -HOUR_MS, 0, 3 * HOUR_MS, 30 * HOUR_MS] {
        let local_now = server_now + offset;
        let local_expiry = server_to_local(not_after, server_now, local_now);
        assert_eq!(local_expiry, local_now + HOUR_MS, "offset {offset}");
        for _ in 0..100 {
            let delay = renewal_delay(local_now, local_expiry, &mut rng).as_millis() as i64;
            assert!(
                (HOUR_MS / 2..=HOUR_MS * 4 / 5).contains(&delay),
                "offset {offset}: renewal after {delay} ms of a one-hour certificate"
            );
        }
        // What the agent did before: its own clock against the server's
        // not-after. Ahead, it renews at once forever; behind, after the
        // certificate has already expired.
        let naive = renewal_delay(local_now, not_after, &mut rng).as_millis() as i64;
        if offset >= HOUR_MS {
            assert_eq!(naive, 0, "offset {offset}");
        } else if offset <= -HOUR_MS {
            assert!(naive > HOUR_MS, "offset {offset}: {naive}");
        }
    }
    // A server that does not state its time: the clocks are taken to agree.
    assert_eq!(server_to_local(not_after, 0, 5), not_after);
}

#[test]
fn clock_skew_is_measured_at_the_midpoint_and_warned_about_beyond_a_minute() {
    let t = 1_800_000_000_000;
    assert_eq!(clock_skew_ms(t, t + 200, t + 100), Some(0));
    assert_eq!(
        clock_skew_ms(t, t + 200, t + 100 - 3 * HOUR_MS),
        Some(3 * HOUR_MS)
    );
    assert_eq!(clock_skew_ms(t, t + 200, 0), None);
    assert_eq!(skew_warning(Some(MAX_CLOCK_SKEW_MS)), None);
    assert_eq!(skew_warning(None), None);
    let ahead = skew_warning(Some(3 * HOUR_MS)).unwrap();
    assert!(
        ahead.starts_with("this host's clock is 10800s ahead of"),
        "{ahead}"
    );
    assert!(ahead.contains("NTP"), "{ahead}");
    let behind = skew_warning(Some(-2 * HOUR_MS)).unwrap();
    assert!(
        behind.starts_with("this host's clock is 7200s behind"),
        "{behind}"
    );
}

#[tokio::test]
async fn an_agent_hours_behind_the_servers_renews_on_their_lifetime_and_says_so() {
    let logs = CapturedLogs::default();
    let _guard = logs.install();
    let pki = test_support::pki("skew");
    // The servers' clock is 3 h ahead of this agent's: the agent's clock is
    // 3 h behind. The certificate (signed on the real clock) lasts an hour.
    let mut fake = FakeAgents::new(&pki, Duration::from_secs(3600));
    fake.clock_ahead_ms = 3 * HOUR_MS;
    let addr = serve_agents(&pki, fake.clone()).await;
    let endpoints = vec![addr];
    let identity = register(&endpoints, &fake.activation, "h", &attributes(), None, None)
        .await
        .unwrap();
    // On the servers' clock the certificate ends 4 h from this agent's now;
    // on this agent's clock, an hour from now, as the server meant.
    let server_left = identity.expires_at_ms - now_ms();
    assert!(
        (4 * HOUR_MS - 60_000..=4 * HOUR_MS).contains(&server_left),
        "{server_left}"
    );
    let local_left = identity.local_expires_at_ms - now_ms();
    assert!(
        (HOUR_MS - 60_000..=HOUR_MS).contains(&local_left),
        "{local_left}"
    );
    // So renewal comes at 50-80% of the hour, before the servers' clock
    // reaches the not-after; the agent's own clock would have put it after.
    let mut rng = StdRng::seed_from_u64(1);
    for _ in 0..50 {
        let renew_in = renewal_point(&identity, &mut rng) - identity.issued_at_ms;
        assert!(
            (HOUR_MS / 2 - 60_000..=HOUR_MS * 4 / 5).contains(&renew_in),
            "{renew_in}"
        );
    }
    // A renewal keeps measuring from the server's time.
    let renewed = renew(&endpoints, &identity).await.unwrap();
    let local_left = renewed.local_expires_at_ms - now_ms();
    assert!(
        (HOUR_MS - 60_000..=HOUR_MS).contains(&local_left),
        "{local_left}"
    );
    // The saved identity keeps the offset.
    let dir = tempfile::tempdir().unwrap();
    renewed.save(dir.path()).unwrap();
    let loaded = AgentIdentity::load(dir.path()).unwrap().unwrap();
    assert_eq!(loaded.local_expires_at_ms, renewed.local_expires_at_ms);
    let text = logs.text();
    assert!(text.contains("10800s behind the control plane"), "{text}");
}

#[test]
fn the_loop_can_be_spawned() {
    // An agent runs the loop with tokio::spawn, which needs Send.
    fn assert_send<T: Send>(_: &T) {}
    let config = loop_config(vec![], Path::new("/nonexistent"), None);
    let future = run_agent_identity_loop(config, std::future::pending());
    assert_send(&future);
}

// ------------------------------------------------------ CA rotation

/// What an agent does with the trust bundle each ping brings: take it only
/// when it moves forward, then renew until its certificate comes from the
/// newest root, and never loop or go back.
#[test]
fn an_agent_follows_a_ca_rotation_forward_only_and_renews_under_the_newest_root() {
    let old = CertificateAuthority::generate("rot").unwrap();
    // Bundles are ordered by their roots' not-before, which has whole seconds.
    std::thread::sleep(Duration::from_millis(1100));
    let (new, _cross) = old.successor().unwrap();
    let both = format!("{}{}", new.cert_pem, old.cert_pem);
    let mut id = identity(&old, "i-1", Duration::from_secs(600));

    assert_eq!(
        follow_ca_rotation(&mut id, ""),
        CaStep::Unchanged,
        "older servers say nothing"
    );
    assert_eq!(
        follow_ca_rotation(&mut id, &old.cert_pem),
        CaStep::Unchanged
    );
    assert_eq!(follow_ca_rotation(&mut id, &both), CaStep::Adopted);
    assert_eq!(id.ca_pem, both);
    // Still the old root's certificate: a reloaded server makes it renew...
    assert_eq!(
        follow_ca_rotation(&mut id, &both),
        CaStep::RenewUnderNewestRoot
    );
    // ...one not reloaded yet changes nothing, and is not taken back.
    assert_eq!(
        follow_ca_rotation(&mut id, &old.cert_pem),
        CaStep::Unchanged
    );
    assert_eq!(id.ca_pem, both);
    // Renewed under the new root: nothing more to do.
    id.cert_pem = identity(&new, "i-1", Duration::from_secs(600)).cert_pem;
    assert_eq!(follow_ca_rotation(&mut id, &both), CaStep::Unchanged);

    // Finished: only the new root, and never both again.
    assert_eq!(follow_ca_rotation(&mut id, &new.cert_pem), CaStep::Adopted);
    assert_eq!(id.ca_pem, new.cert_pem);
    assert_eq!(
        follow_ca_rotation(&mut id, &both),
        CaStep::Unchanged,
        "never back"
    );
    assert_eq!(
        follow_ca_rotation(&mut id, &old.cert_pem),
        CaStep::Unchanged
    );
    assert_eq!(id.ca_pem, new.cert_pem);
    // With one root trusted there is no rotation to finish: a certificate
    // the root did not issue does not start a renewal at every ping.
    let stranger = CertificateAuthority::generate("rot").unwrap();
    id.cert_pem = identity(&stranger, "i-1", Duration::from_secs(600)).cert_pem;
    assert_eq!(
        follow_ca_rotation(&mut id, &new.cert_pem),
        CaStep::Unchanged
    );
    assert_eq!(
        follow_ca_rotation(&mut id, "not a bundle"),
        CaStep::Unchanged
    );
}
