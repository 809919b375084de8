//! The agent side of joining a cluster, in the manner of SwarmKit and
//! kubeadm: the join token pins the cluster CA by digest, so an agent that
//! has never seen the cluster can tell a genuine server from a man in the
//! middle before it sends its secret.
//!
//! 1. [`fetch_ca`]: one TLS handshake that trusts whatever the server
//!    presents, only to read the CA at the end of its chain;
//! 2. [`verify_ca`]: that CA's digest must equal the token's;
//! 3. [`register`]: a CSR (the key never leaves the host) sent over TLS
//!    verified with that CA; the answer is a client certificate;
//! 4. from then on the certificate authenticates the agent ([`ping`]) and
//!    is replaced well before it expires ([`renew`]).
//!
//! [`run_agent_identity_loop`] does all of it for an agent process, keeping
//! the identity in a directory ([`AgentIdentity::save`]).

use std::collections::BTreeMap;
use std::fs;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_pki::files;
use berth_pki::tokens::JoinToken;
use berth_pki::{PeerIdentity, Role};
use berth_types::time::rfc3339;
use berth_types::{AgentPing, RegisterInstanceInput};
use rand::{Rng, SeedableRng};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::backoff::Backoff;
use crate::endpoint::{parse_endpoint, Scheme};
use crate::error::describe_io;
use crate::time::now_ms;
use crate::{BerthClient, ClientConfig, ClientError};

/// The private key, mode 0600.
pub const KEY_FILE: &str = "agent.key";
/// The instance's client certificate.
pub const CERT_FILE: &str = "agent.crt";
/// The cluster CA, as pinned by the join token.
pub const CA_FILE: &str = "ca.crt";
/// Instance id, cluster and certificate times; written last, so its
/// presence means a registration was completely saved.
pub const IDENTITY_FILE: &str = "identity.json";

// A new key and certificate are first written under these names and then
// renamed into place; see `AgentIdentity::save`.
const NEXT_KEY_FILE: &str = "agent.key.next";
const NEXT_CERT_FILE: &str = "agent.crt.next";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

// ------------------------------------------------------------ pinning

/// Fetches the cluster CA from `endpoint` (`host:port` or
/// `https://host:port`): the last certificate of the chain the server
/// presents, as PEM. Nothing about it is trusted yet: the caller must check
/// it with [`verify_ca`] before using it.
pub async fn fetch_ca(endpoint: &str) -> Result<String, ClientError> {
    let parsed = parse_endpoint(endpoint)?;
    if parsed.scheme == Scheme::Http {
        return Err(ClientError::InvalidEndpoint {
            endpoint: endpoint.to_string(),
            reason: "joining needs TLS; use HOST:PORT or https://HOST:PORT".into(),
        });
    }
    let fail = |reason: String| ClientError::FetchCa {
        endpoint: parsed.name.clone(),
        reason,
    };
    let server_name = ServerName::try_from(parsed.host.clone())
        .map_err(|_| fail(format!("{:?} is not a valid server name", parsed.host)))?;
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&parsed.name))
        .await
        .map_err(|_| fail("timed out connecting".into()))?
        .map_err(|e| fail(describe_io(&e)))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(any_chain_config()?));
    let mut tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(server_name, tcp))
        .await
        .map_err(|_| fail("timed out in the TLS handshake".into()))?
        .map_err(|e| fail(describe_io(&e)))?;
    let chain = tls.get_ref().1.peer_certificates().unwrap_or_default();
    let ca = match chain {
        [] => return Err(fail("the server presented no certificate".into())),
        // Berth servers append the CA to their own certificate; a lone
        // certificate would only fail the digest check with a message
        // suggesting an attack.
        [_only] => {
            return Err(fail(
                "the server presented its certificate without the CA after it; is it a Berth \
                 server?"
                    .into(),
            ))
        }
        [.., last] => der_to_pem(last),
    };
    // Polite close; the handshake was all that was wanted.
    let _ = tls.shutdown().await;
    Ok(ca)
}

/// Checks a fetched CA against the digest the join token pins. `endpoint`
/// is where it came from, for the message.
pub fn verify_ca(endpoint: &str, token: &JoinToken, ca_pem: &str) -> Result<(), ClientError> {
    let actual = berth_pki::ca_digest(ca_pem).map_err(|e| ClientError::FetchCa {
        endpoint: endpoint.to_string(),
        reason: format!("the CA it presented cannot be read: {e}"),
    })?;
    if actual.eq_ignore_ascii_case(&token.ca_digest) {
        Ok(())
    } else {
        Err(ClientError::CaMismatch {
            endpoint: endpoint.to_string(),
            actual,
            pinned: token.ca_digest.clone(),
        })
    }
}

/// The CA from the first endpoint that answers, checked against the token.
/// A mismatch stops everything: trying the next server would only hide an
/// attack on the first.
async fn pinned_ca(endpoints: &[String], token: &JoinToken) -> Result<String, ClientError> {
    if endpoints.is_empty() {
        return Err(ClientError::NoEndpoints);
    }
    let mut tried = Vec::new();
    let mut last = String::new();
    for endpoint in endpoints {
        match fetch_ca(endpoint).await {
            Ok(ca_pem) => {
                verify_ca(endpoint, token, &ca_pem)?;
                return Ok(ca_pem);
            }
            Err(ClientError::FetchCa { endpoint, reason }) => {
                tried.push(endpoint);
                last = reason;
            }
            Err(other) => return Err(other),
        }
    }
    Err(ClientError::Unavailable { tried, last })
}

/// A rustls configuration that accepts any certificate chain. Only for the
/// one handshake of `fetch_ca`, whose result is checked by digest; the
/// handshake signatures are still verified, so the server at least holds
/// the key of the certificate it shows.
fn any_chain_config() -> Result<rustls::ClientConfig, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = AnyChain {
        algorithms: provider.signature_verification_algorithms,
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::InvalidConfig(format!("TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    // What a gRPC server expects to negotiate.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

#[derive(Debug)]
struct AnyChain {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyChain {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// DER as a PEM certificate.
fn der_to_pem(der: &[u8]) -> String {
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in base64(der).chunks(64) {
        pem.extend(line.iter().map(|&b| char::from(b)));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// Standard base64 with padding (RFC 4648), for `der_to_pem`; nothing else
/// in the client needs base64.
fn base64(data: &[u8]) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let group = byte(0) << 16 | byte(1) << 8 | byte(2);
        let sextet = |i: u32| ALPHABET[(group >> (18 - 6 * i) & 63) as usize];
        out.push(sextet(0));
        out.push(sextet(1));
        out.push(if chunk.len() > 1 { sextet(2) } else { b'=' });
        out.push(if chunk.len() > 2 { sextet(3) } else { b'=' });
    }
    out
}

// ----------------------------------------------------------- identity

/// What an agent is to the control plane: its instance id and the client
/// certificate that proves it.
#[derive(Clone, PartialEq, Eq)]
pub struct AgentIdentity {
    pub instance_id: String,
    /// The Berth cluster (ECS sense) the instance belongs to.
    pub cluster: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
    /// When this agent received the certificate (its clock), ms since the
    /// epoch: where the renewal schedule counts from.
    pub issued_at_ms: i64,
    /// The certificate's not-after, ms since the epoch, on the servers'
    /// clock (what they check it against).
    pub expires_at_ms: i64,
    /// The same moment on this agent's clock: received + the lifetime the
    /// server stated (not-after minus its clock when it signed). Renewal
    /// and expiry are scheduled with this, so an agent whose clock is off
    /// by hours still renews at 50-80% of the real lifetime.
    pub local_expires_at_ms: i64,
}

// By hand, so the private key never reaches a log through `{:?}`.
impl std::fmt::Debug for AgentIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentIdentity")
            .field("instance_id", &self.instance_id)
            .field("cluster", &self.cluster)
            .field("issued_at_ms", &self.issued_at_ms)
            .field("expires_at_ms", &self.expires_at_ms)
            .field("local_expires_at_ms", &self.local_expires_at_ms)
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IdentityRecord {
    instance_id: String,
    cluster: String,
    issued_at_ms: i64,
    expires_at_ms: i64,
    /// Absent in files of agents before clock-skew handling: then the two
    /// clocks are taken to agree.
    #[serde(default)]
    local_expires_at_ms: Option<i64>,
}

impl AgentIdentity {
    /// A client that authenticates with this identity's certificate.
    pub fn client(&self, endpoints: &[String]) -> Result<BerthClient, ClientError> {
        BerthClient::new(
            ClientConfig::new(endpoints.iter().cloned())
                .with_ca(self.ca_pem.clone())
                .with_identity(self.cert_pem.clone(), self.key_pem.clone()),
        )
    }

    /// Writes the identity into `dir` so that a crash at any point leaves
    /// either the old identity or the new one, never a key with somebody
    /// else's certificate: each file is written atomically, the new key and
    /// certificate go in under temporary names first, and `load` finishes
    /// a save that was interrupted while renaming them into place.
    pub fn save(&self, dir: &Path) -> Result<(), ClientError> {
        let store = |e: berth_pki::PkiError| store_error(dir, e.to_string());
        files::write(dir, CA_FILE, &self.ca_pem, false).map_err(store)?;
        files::write(dir, NEXT_KEY_FILE, &self.key_pem, true).map_err(store)?;
        files::write(dir, NEXT_CERT_FILE, &self.cert_pem, false).map_err(store)?;
        promote_next(dir)?;
        let record = IdentityRecord {
            instance_id: self.instance_id.clone(),
            cluster: self.cluster.clone(),
            issued_at_ms: self.issued_at_ms,
            expires_at_ms: self.expires_at_ms,
            local_expires_at_ms: Some(self.local_expires_at_ms),
        };
        let json = serde_json::to_string_pretty(&record)
            .map_err(|e| store_error(dir, format!("encoding {IDENTITY_FILE}: {e}")))?;
        files::write(dir, IDENTITY_FILE, &(json + "\n"), false).map_err(store)?;
        // The renames are durable only once the directory itself is.
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| store_error(dir, format!("syncing the directory: {e}")))
    }

    /// The identity saved in `dir`; `None` if nothing was ever completely
    /// saved there. Refuses a key file other users can read.
    pub fn load(dir: &Path) -> Result<Option<Self>, ClientError> {
        finish_interrupted_save(dir)?;
        let record_text = match fs::read_to_string(dir.join(IDENTITY_FILE)) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(store_error(dir, format!("reading {IDENTITY_FILE}: {e}"))),
        };
        let record: IdentityRecord = serde_json::from_str(&record_text)
            .map_err(|e| store_error(dir, format!("{IDENTITY_FILE} is not valid: {e}")))?;
        let store = |e: berth_pki::PkiError| store_error(dir, e.to_string());
        files::check_private(dir, KEY_FILE).map_err(store)?;
        let key_pem = files::read(dir, KEY_FILE).map_err(store)?;
        let cert_pem = files::read(dir, CERT_FILE).map_err(store)?;
        let ca_pem = files::read(dir, CA_FILE).map_err(store)?;
        // The certificate is the authority on who and until when: a save
        // interrupted before identity.json was rewritten leaves the record
        // one renewal behind.
        let (instance_id, expires_at_ms) = certificate_facts(&cert_pem)
            .map_err(|reason| store_error(dir, format!("{CERT_FILE}: {reason}")))?;
        // The offset between the clocks as last measured, applied to the
        // certificate's not-after (the record may be one renewal behind).
        let offset_ms = record
            .local_expires_at_ms
            .map_or(0, |local| local.saturating_sub(record.expires_at_ms));
        let local_expires_at_ms = expires_at_ms.saturating_add(offset_ms);
        Ok(Some(Self {
            instance_id,
            cluster: record.cluster,
            cert_pem,
            key_pem,
            ca_pem,
            issued_at_ms: record.issued_at_ms.min(local_expires_at_ms),
            expires_at_ms,
            local_expires_at_ms,
        }))
    }
}

fn store_error(dir: &Path, reason: String) -> ClientError {
    ClientError::IdentityStore {
        dir: dir.display().to_string(),
        reason,
    }
}

/// Renames the new key (if not yet done) and then the new certificate into
/// place. The key goes first, and both were completely written before.
fn promote_next(dir: &Path) -> Result<(), ClientError> {
    let rename = |from: &str, to: &str| {
        fs::rename(dir.join(from), dir.join(to))
            .map_err(|e| store_error(dir, format!("renaming {from} to {to}: {e}")))
    };
    if dir.join(NEXT_KEY_FILE).exists() {
        rename(NEXT_KEY_FILE, KEY_FILE)?;
    }
    rename(NEXT_CERT_FILE, CERT_FILE)
}

/// Completes or discards a save that stopped half-way: a new certificate
/// means its key was written before it, so the pair is rolled forward; a
/// new key alone never got its certificate and is dropped.
fn finish_interrupted_save(dir: &Path) -> Result<(), ClientError> {
    if dir.join(NEXT_CERT_FILE).exists() {
        promote_next(dir)
    } else if dir.join(NEXT_KEY_FILE).exists() {
        fs::remove_file(dir.join(NEXT_KEY_FILE))
            .map_err(|e| store_error(dir, format!("removing {NEXT_KEY_FILE}: {e}")))
    } else {
        Ok(())
    }
}

/// The instance id and expiry a certificate carries.
fn certificate_facts(cert_pem: &str) -> Result<(String, i64), String> {
    let der = berth_pki::first_der(cert_pem).map_err(|e| e.to_string())?;
    let identity = PeerIdentity::from_der(&der).map_err(|e| e.to_string())?;
    let Role::Instance(instance_id) = identity.role else {
        return Err("it is not an instance certificate".into());
    };
    let expires_at_ms = berth_pki::not_after_ms(cert_pem).map_err(|e| e.to_string())?;
    Ok((instance_id, expires_at_ms))
}

/// A certificate the server sent, checked to be for `instance_id`;
/// returns its expiry.
fn check_issued(cert_pem: &str, instance_id: &str) -> Result<i64, ClientError> {
    let (named, expires_at_ms) = certificate_facts(cert_pem)
        .map_err(|e| ClientError::InvalidResponse(format!("the certificate issued: {e}")))?;
    if named != instance_id {
        return Err(ClientError::InvalidResponse(format!(
            "the certificate issued is for instance {named}, not {instance_id}"
        )));
    }
    Ok(expires_at_ms)
}

fn pki_error(e: berth_pki::PkiError) -> ClientError {
    ClientError::Pki(e.to_string())
}

// ------------------------------------------------------- the calls

/// Registers this host with an activation: pins the CA from the first
/// reachable endpoint, makes a CSR, and asks for a certificate.
/// `previous` is the identity of an agent whose certificate expired: its id
/// is asked for again, and its key signs the CSR, since the control plane
/// gives an id back only to the host holding the key of that id's last
/// certificate. Without it a new key is made. `cluster` is the cluster the
/// agent expects to join.
pub async fn register(
    endpoints: &[String],
    token: &JoinToken,
    hostname: &str,
    attributes: &BTreeMap<String, String>,
    previous: Option<&AgentIdentity>,
    cluster: Option<String>,
) -> Result<AgentIdentity, ClientError> {
    let ca_pem = pinned_ca(endpoints, token).await?;
    let common_name = if hostname.is_empty() {
        "berth-agent"
    } else {
        hostname
    };
    let (key_pem, csr_pem) = match previous {
        Some(previous) => (
            previous.key_pem.clone(),
            berth_pki::csr_for_key(&previous.key_pem, common_name).map_err(pki_error)?,
        ),
        None => berth_pki::generate_csr(common_name).map_err(pki_error)?,
    };
    let previous_instance_id = previous.map(|p| p.instance_id.clone());
    // TLS verified with the pinned CA, no client certificate: the
    // activation secret is the credential here.
    let client =
        BerthClient::new(ClientConfig::new(endpoints.iter().cloned()).with_ca(ca_pem.clone()))?;
    let response = client
        .register_instance(&RegisterInstanceInput {
            activation_id: token.activation_id.clone(),
            activation_secret: token.secret.clone(),
            csr_pem,
            hostname: hostname.to_string(),
            attributes: attributes.clone(),
            previous_instance_id,
            cluster,
        })
        .await?;
    let expires_at_ms = check_issued(&response.certificate_pem, &response.instance_id)?;
    let received_ms = now_ms();
    warn_on_skew(clock_skew_ms(
        received_ms,
        received_ms,
        response.server_time_ms,
    ));
    Ok(AgentIdentity {
        instance_id: response.instance_id,
        cluster: response.cluster,
        cert_pem: response.certificate_pem,
        key_pem,
        // The pinned CA, not the one in the response: that one arrived over
        // a connection verified with the pinned one anyway.
        ca_pem,
        issued_at_ms: received_ms,
        expires_at_ms,
        local_expires_at_ms: server_to_local(expires_at_ms, response.server_time_ms, received_ms),
    })
}

/// A new certificate for a new key, authenticated with the current one.
/// The caller saves the result.
pub async fn renew(
    endpoints: &[String],
    identity: &AgentIdentity,
) -> Result<AgentIdentity, ClientError> {
    renew_with(&identity.client(endpoints)?, identity).await
}

async fn renew_with(
    client: &BerthClient,
    identity: &AgentIdentity,
) -> Result<AgentIdentity, ClientError> {
    let (key_pem, csr_pem) =
        berth_pki::generate_csr(&format!("berth-instance-{}", identity.instance_id))
            .map_err(pki_error)?;
    let response = client.renew_certificate(&csr_pem).await?;
    let expires_at_ms = check_issued(&response.certificate_pem, &identity.instance_id)?;
    let received_ms = now_ms();
    warn_on_skew(clock_skew_ms(
        received_ms,
        received_ms,
        response.server_time_ms,
    ));
    Ok(AgentIdentity {
        cert_pem: response.certificate_pem,
        key_pem,
        issued_at_ms: received_ms,
        expires_at_ms,
        local_expires_at_ms: server_to_local(expires_at_ms, response.server_time_ms, received_ms),
        ..identity.clone()
    })
}

/// The heartbeat, authenticated with the identity's certificate.
pub async fn ping(
    endpoints: &[String],
    identity: &AgentIdentity,
) -> Result<AgentPing, ClientError> {
    identity.client(endpoints)?.agent_ping().await
}

/// Where a time on the servers' clock (`server_ms`) falls on this agent's
/// clock, given that the server read `server_now_ms` when this agent read
/// `local_now_ms`. A server that does not say its time (0) is taken to
/// agree with this clock.
pub fn server_to_local(server_ms: i64, server_now_ms: i64, local_now_ms: i64) -> i64 {
    if server_now_ms <= 0 {
        return server_ms;
    }
    local_now_ms.saturating_add(server_ms.saturating_sub(server_now_ms))
}

/// How far this agent's clock is ahead of the server's (negative: behind),
/// from a call sent at `sent_ms` and answered at `received_ms` (this
/// clock) with the server's time `server_ms`, taken at the midpoint. `None`
/// when the server did not say.
pub fn clock_skew_ms(sent_ms: i64, received_ms: i64, server_ms: i64) -> Option<i64> {
    (server_ms > 0).then(|| sent_ms + (received_ms - sent_ms) / 2 - server_ms)
}

/// Beyond this the clocks are said to disagree. Certificates are scheduled
/// on the server's stated lifetime either way, but a skewed clock makes
/// logs hard to correlate and hints at a host without NTP.
pub const MAX_CLOCK_SKEW_MS: i64 = 60_000;

/// The warning for a measured skew, if it is worth one.
pub fn skew_warning(skew_ms: Option<i64>) -> Option<String> {
    let skew = skew_ms?;
    if skew.abs() <= MAX_CLOCK_SKEW_MS {
        return None;
    }
    let way = if skew > 0 { "ahead of" } else { "behind" };
    Some(format!(
        "this host's clock is {}s {way} the control plane's; certificate renewal follows the \
         servers' clock, but run NTP (chrony, systemd-timesyncd) on this host",
        (skew.abs() + 500) / 1000
    ))
}

fn warn_on_skew(skew_ms: Option<i64>) {
    if let Some(message) = skew_warning(skew_ms) {
        tracing::warn!(skew_ms = skew_ms.unwrap_or(0), "{message}");
    }
}

/// When to renew a certificate, counted from `issued_at_ms`: a random
/// point between 50% and 80% of its lifetime. Early enough that a few
/// failed attempts still leave time; random so that agents registered
/// together do not all come back at once.
pub fn renewal_delay(issued_at_ms: i64, expires_at_ms: i64, rng: &mut impl Rng) -> Duration {
    let lifetime_ms = u64::try_from(expires_at_ms.saturating_sub(issued_at_ms)).unwrap_or(0);
    let fraction: f64 = rng.gen_range(0.5..=0.8);
    // f64 is exact to 2^53 ms (285,000 years), far beyond any lifetime.
    Duration::from_millis((lifetime_ms as f64 * fraction) as u64)
}

// ---------------------------------------------------------- the loop

/// What [`run_agent_identity_loop`] needs.
#[derive(Clone)]
pub struct AgentLoopConfig {
    pub endpoints: Vec<String>,
    /// Where the identity is kept.
    pub dir: PathBuf,
    /// The join token; needed only to register (first start, or after the
    /// certificate expired).
    pub token: Option<String>,
    /// The file `token` was read from, if any: removed once a registration
    /// is saved (or a saved identity is found), so that the join token does
    /// not stay on the host after it has served.
    pub token_file: Option<PathBuf>,
    pub hostname: String,
    pub attributes: BTreeMap<String, String>,
    /// The cluster to join; `None` takes the activation's.
    pub cluster: Option<String>,
    pub ping_every: Duration,
    /// Told every identity the loop starts using: after loading,
    /// registering or renewing.
    pub updates: Option<watch::Sender<Option<AgentIdentity>>>,
}

// By hand, so the join token never reaches a log through `{:?}`.
impl std::fmt::Debug for AgentLoopConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentLoopConfig")
            .field("endpoints", &self.endpoints)
            .field("dir", &self.dir)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("hostname", &self.hostname)
            .field("attributes", &self.attributes)
            .field("cluster", &self.cluster)
            .field("ping_every", &self.ping_every)
            .finish_non_exhaustive()
    }
}

/// Keeps the agent's identity alive until `shutdown` completes: loads it
/// from `dir` or registers, then pings every `ping_every` and renews the
/// certificate at a random point between 50% and 80% of its lifetime,
/// saving each new one. Servers that cannot be reached are retried with
/// backoff; an error only a person can fix (no token, a refused token or
/// certificate, a CA mismatch, a directory that cannot be written) ends
/// the loop with that error. Never logs the token or any key.
pub async fn run_agent_identity_loop(
    config: AgentLoopConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ClientError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let token = config
        .token
        .as_deref()
        .map(|text| {
            JoinToken::parse(text).map_err(|e| ClientError::InvalidJoinToken(e.to_string()))
        })
        .transpose()?;
    // StdRng rather than thread_rng: the loop's future must stay Send.
    let mut rng = rand::rngs::StdRng::from_entropy();

    let mut identity = tokio::select! {
        biased;
        () = &mut shutdown => return Ok(()),
        identity = establish(&config, token.as_ref(), &mut rng) => identity?,
    };
    let mut client = identity.client(&config.endpoints)?;
    let mut renew_at_ms = renewal_point(&identity, &mut rng);
    let mut next_ping_ms = now_ms();
    let mut renew_backoff = retry_backoff();
    let mut ping_backoff = retry_backoff();
    let mut next_skew_warning_ms = i64::MIN;

    loop {
        if now_ms() >= identity.local_expires_at_ms {
            // Renewal failed until the end (servers down that long, or the
            // machine asleep): only a fresh registration helps now.
            let token = token
                .as_ref()
                .ok_or_else(|| expired_error(identity.expires_at_ms))?;
            tracing::warn!(
                instance_id = %identity.instance_id,
                expired_at = %rfc3339(identity.expires_at_ms),
                "certificate expired before it could be renewed; registering again"
            );
            let previous = identity.clone();
            identity = tokio::select! {
                biased;
                () = &mut shutdown => return Ok(()),
                identity = register_until_done(&config, token, Some(&previous), &mut rng) => identity?,
            };
            client = identity.client(&config.endpoints)?;
            renew_at_ms = renewal_point(&identity, &mut rng);
            continue;
        }

        let wake_ms = next_ping_ms
            .min(renew_at_ms)
            .min(identity.local_expires_at_ms);
        let nap = Duration::from_millis(u64::try_from(wake_ms - now_ms()).unwrap_or(0));
        tokio::select! {
            biased;
            () = &mut shutdown => return Ok(()),
            () = tokio::time::sleep(nap) => {}
        }

        let now = now_ms();
        if now >= renew_at_ms && now < identity.local_expires_at_ms {
            let renewed = tokio::select! {
                biased;
                () = &mut shutdown => return Ok(()),
                renewed = renew_with(&client, &identity) => renewed,
            };
            match renewed {
                Ok(renewed) => {
                    // The old files stay consistent if this fails, and the
                    // new certificate still works in memory; the next
                    // renewal tries to save again.
                    if let Err(e) = renewed.save(&config.dir) {
                        tracing::error!(error = %e, "cannot save the renewed certificate");
                    }
                    identity = renewed;
                    client = identity.client(&config.endpoints)?;
                    renew_at_ms = renewal_point(&identity, &mut rng);
                    renew_backoff.reset();
                    tracing::info!(
                        instance_id = %identity.instance_id,
                        expires_at = %rfc3339(identity.expires_at_ms),
                        "certificate renewed"
                    );
                    publish(&config, &identity);
                }
                Err(e) if e.is_transient() => {
                    let wait = renew_backoff.next(&mut rng);
                    tracing::warn!(
                        instance_id = %identity.instance_id,
                        error = %e,
                        retry_in_ms = wait.as_millis() as u64,
                        "certificate renewal failed"
                    );
                    renew_at_ms = now.saturating_add(duration_ms(wait));
                }
                Err(e) => return Err(e),
            }
        }

        if now >= next_ping_ms {
            let pinged = tokio::select! {
                biased;
                () = &mut shutdown => return Ok(()),
                pinged = client.agent_ping() => pinged,
            };
            match pinged {
                Ok(pong) => {
                    match follow_ca_rotation(&mut identity, &pong.ca_pem) {
                        CaStep::Unchanged => {}
                        CaStep::Adopted => {
                            if let Err(e) = identity.save(&config.dir) {
                                tracing::error!(error = %e, "cannot save the new trust bundle");
                            }
                            client = identity.client(&config.endpoints)?;
                            publish(&config, &identity);
                            renew_at_ms = now;
                        }
                        CaStep::RenewUnderNewestRoot => renew_at_ms = now,
                    }
                    let skew = clock_skew_ms(now, now_ms(), pong.server_time_ms);
                    // Once an hour at most, not at every heartbeat.
                    if skew_warning(skew).is_some() && now >= next_skew_warning_ms {
                        warn_on_skew(skew);
                        next_skew_warning_ms = now.saturating_add(3_600_000);
                    }
                    tracing::debug!(instance_id = %identity.instance_id, "heartbeat ok");
                    ping_backoff.reset();
                    next_ping_ms = now.saturating_add(duration_ms(config.ping_every));
                }
                Err(e) if e.is_transient() => {
                    let wait = ping_backoff.next(&mut rng).min(config.ping_every);
                    tracing::warn!(
                        instance_id = %identity.instance_id,
                        error = %e,
                        "heartbeat failed"
                    );
                    next_ping_ms = now.saturating_add(duration_ms(wait));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// The identity to start with: the saved one, or a new registration when
/// there is none or it has expired.
async fn establish(
    config: &AgentLoopConfig,
    token: Option<&JoinToken>,
    rng: &mut impl Rng,
) -> Result<AgentIdentity, ClientError> {
    match AgentIdentity::load(&config.dir)? {
        Some(identity) if identity.local_expires_at_ms > now_ms() => {
            tracing::info!(
                instance_id = %identity.instance_id,
                cluster = %identity.cluster,
                expires_at = %rfc3339(identity.expires_at_ms),
                "loaded the saved identity"
            );
            if token.is_some() {
                tracing::info!("already registered; the join token is not needed and was not used");
            }
            forget_token(config);
            publish(config, &identity);
            Ok(identity)
        }
        Some(expired) => {
            let token = token.ok_or_else(|| expired_error(expired.expires_at_ms))?;
            tracing::info!(
                instance_id = %expired.instance_id,
                expired_at = %rfc3339(expired.expires_at_ms),
                "the saved certificate has expired; registering again under the same id"
            );
            register_until_done(config, token, Some(&expired), rng).await
        }
        None => {
            let token = token.ok_or_else(|| {
                ClientError::NeedsToken(
                    "not registered yet: pass --token JOIN_TOKEN (from `berth activation create`)"
                        .into(),
                )
            })?;
            register_until_done(config, token, None, rng).await
        }
    }
}

/// Registers, retrying while the servers cannot be reached, and saves.
async fn register_until_done(
    config: &AgentLoopConfig,
    token: &JoinToken,
    previous: Option<&AgentIdentity>,
    rng: &mut impl Rng,
) -> Result<AgentIdentity, ClientError> {
    // Found out before the registration is used up, not after.
    check_writable(&config.dir)?;
    let mut backoff = retry_backoff();
    loop {
        let attempt = register(
            &config.endpoints,
            token,
            &config.hostname,
            &config.attributes,
            previous,
            config.cluster.clone(),
        )
        .await;
        match attempt {
            Ok(identity) => {
                identity.save(&config.dir)?;
                tracing::info!(
                    instance_id = %identity.instance_id,
                    cluster = %identity.cluster,
                    expires_at = %rfc3339(identity.expires_at_ms),
                    "registered"
                );
                forget_token(config);
                publish(config, &identity);
                return Ok(identity);
            }
            Err(e) if e.is_transient() => {
                let wait = backoff.next(rng);
                tracing::warn!(
                    error = %e,
                    retry_in_ms = wait.as_millis() as u64,
                    "registration failed"
                );
                tokio::time::sleep(wait).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Once registered, the join token has served: the token file is removed,
/// and a token given any other way (flag, environment, config file) is
/// left for the operator to remove, with a warning saying so.
fn forget_token(config: &AgentLoopConfig) {
    match &config.token_file {
        Some(file) => match fs::remove_file(file) {
            Ok(()) => tracing::info!(file = %file.display(), "removed the join token file"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(
                file = %file.display(),
                error = %e,
                "cannot remove the join token file; remove it by hand, it is no longer needed"
            ),
        },
        None if config.token.is_some() => tracing::warn!(
            "registered: the join token is no longer needed; remove it from the agent's command \
             line, environment (BERTH_JOIN_TOKEN) or config file (or pass it with --token-file, \
             which the agent removes itself)"
        ),
        None => {}
    }
}

fn check_writable(dir: &Path) -> Result<(), ClientError> {
    const PROBE: &str = ".write-probe";
    files::write(dir, PROBE, "", false)
        .map_err(|e| store_error(dir, format!("cannot write there: {e}")))?;
    fs::remove_file(dir.join(PROBE))
        .map_err(|e| store_error(dir, format!("cannot remove {PROBE}: {e}")))
}

fn expired_error(expired_at_ms: i64) -> ClientError {
    ClientError::NeedsToken(format!(
        "certificate expired at {}; re-register with a fresh activation: --token JOIN_TOKEN \
         (from `berth activation create`)",
        rfc3339(expired_at_ms)
    ))
}

/// What a ping's trust bundle asks of the agent.
#[derive(Debug, PartialEq, Eq)]
enum CaStep {
    Unchanged,
    /// The agent now trusts the server's bundle (a CA rotation started or
    /// finished); it renews at once so its certificate comes from the
    /// newest root before the old one is dropped.
    Adopted,
    /// The bundle is the agent's own, but its certificate still comes from
    /// an older root (the renewal after adopting was answered by a server
    /// not yet reloaded): renew again, now that this server is.
    RenewUnderNewestRoot,
}

/// Follows a CA rotation from a ping's `ca_pem` (see `berth_pki::trust`):
/// only forward, never back to a bundle the agent moved past, so servers
/// reloaded at different times cannot make it flip between bundles.
fn follow_ca_rotation(identity: &mut AgentIdentity, offered: &str) -> CaStep {
    if offered.is_empty() {
        return CaStep::Unchanged;
    }
    if berth_pki::trust::supersedes(offered, &identity.ca_pem) {
        tracing::info!(
            instance_id = %identity.instance_id,
            "the control plane trusts a new set of root certificates (CA rotation); taking it and renewing"
        );
        identity.ca_pem = offered.to_string();
        return CaStep::Adopted;
    }
    use berth_pki::trust;
    let (Ok(offered), Ok(own)) = (trust::roots(offered), trust::roots(&identity.ca_pem)) else {
        return CaStep::Unchanged;
    };
    // Only while two roots are trusted (a rotation under way): with one,
    // a certificate from another root could not have been used to ask.
    let current = trust::chain_root(&identity.cert_pem, &own) == trust::newest(&own);
    if own.len() > 1 && offered == own && !current {
        return CaStep::RenewUnderNewestRoot;
    }
    CaStep::Unchanged
}

fn publish(config: &AgentLoopConfig, identity: &AgentIdentity) {
    if let Some(updates) = &config.updates {
        updates.send_replace(Some(identity.clone()));
    }
}

fn renewal_point(identity: &AgentIdentity, rng: &mut impl Rng) -> i64 {
    let delay = renewal_delay(identity.issued_at_ms, identity.local_expires_at_ms, rng);
    identity.issued_at_ms.saturating_add(duration_ms(delay))
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// How registration, renewal and heartbeats retry unreachable servers:
/// from 1 s to a minute, ±20% so agents cut off together do not come back
/// in lockstep.
fn retry_backoff() -> Backoff {
    Backoff::new(Duration::from_secs(1), Duration::from_secs(60), 0.8..=1.2)
}

#[cfg(test)]
mod tests;
