//! Berth's public-key infrastructure: the cluster CA, the identities
//! certificates carry, and the formats of the secrets people handle (API
//! tokens and activation tokens). Built on rcgen and x509-parser; no
//! hand-made cryptography.
//!
//! Identity lives in a URI subject alternative name,
//! `berth://CLUSTER_ID/server/NODE_ID` or `berth://CLUSTER_ID/instance/ID`,
//! so a server derives who is calling from the certificate alone.

pub mod datakey;
pub mod files;
pub mod tokens;
pub mod trust;

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use sha2::{Digest, Sha256};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("not a valid PEM certificate: {0}")]
    BadCertificate(String),
    #[error("not a valid certificate signing request: {0}")]
    BadCsr(String),
    #[error("the certificate carries no Berth identity (URI SAN berth://CLUSTER/ROLE/ID)")]
    NoIdentity,
    #[error("{path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Who a certificate belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Server(u64),
    Instance(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    pub cluster_id: String,
    pub role: Role,
}

impl PeerIdentity {
    pub fn uri(&self) -> String {
        match &self.role {
            Role::Server(id) => format!("berth://{}/server/{id}", self.cluster_id),
            Role::Instance(id) => format!("berth://{}/instance/{id}", self.cluster_id),
        }
    }

    pub fn parse_uri(uri: &str) -> Option<Self> {
        let rest = uri.strip_prefix("berth://")?;
        let mut parts = rest.splitn(3, '/');
        let cluster_id = parts.next()?.to_string();
        let kind = parts.next()?;
        let id = parts.next()?;
        if cluster_id.is_empty() || id.is_empty() {
            return None;
        }
        let role = match kind {
            "server" => Role::Server(id.parse().ok()?),
            "instance" => Role::Instance(id.to_string()),
            _ => return None,
        };
        Some(Self { cluster_id, role })
    }

    /// Reads the identity from a DER certificate (already verified by TLS).
    pub fn from_der(der: &[u8]) -> Result<Self, PkiError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| PkiError::BadCertificate(e.to_string()))?;
        let san = cert
            .subject_alternative_name()
            .map_err(|e| PkiError::BadCertificate(e.to_string()))?
            .ok_or(PkiError::NoIdentity)?;
        san.value
            .general_names
            .iter()
            .find_map(|name| match name {
                x509_parser::extensions::GeneralName::URI(uri) => Self::parse_uri(uri),
                _ => None,
            })
            .ok_or(PkiError::NoIdentity)
    }
}

/// SHA-256 of the CA certificate's DER, hex: what a join token pins.
pub fn ca_digest(ca_pem: &str) -> Result<String, PkiError> {
    let der = first_der(ca_pem)?;
    Ok(hex::encode(Sha256::digest(&der)))
}

pub fn der_digest(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// The DER of the first certificate in a PEM bundle.
pub fn first_der(pem: &str) -> Result<Vec<u8>, PkiError> {
    let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| PkiError::BadCertificate(e.to_string()))?;
    Ok(parsed.contents)
}

/// Not-after of a PEM certificate, in ms since the epoch.
pub fn not_after_ms(cert_pem: &str) -> Result<i64, PkiError> {
    let der = first_der(cert_pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| PkiError::BadCertificate(e.to_string()))?;
    Ok(cert.validity().not_after.timestamp() * 1000)
}

fn validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = SystemTime::now();
    // A little slack for clocks that are slightly behind.
    params.not_before = (now - Duration::from_secs(60)).into();
    params.not_after = (now + lifetime).into();
}

/// A root CA's certificate: unconstrained, ten years, the cluster id in a
/// URI SAN.
fn root_params(cluster_id: &str, common_name: &str) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "Berth");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.subject_alt_names = vec![SanType::URI(format!("berth://{cluster_id}/ca").try_into()?)];
    validity(&mut params, Duration::from_secs(10 * 365 * 24 * 3600));
    Ok(params)
}

fn cluster_id_of(params: &CertificateParams) -> Result<String, PkiError> {
    params
        .subject_alt_names
        .iter()
        .find_map(|san| match san {
            SanType::URI(uri) => uri
                .as_str()
                .strip_prefix("berth://")
                .and_then(|rest| rest.strip_suffix("/ca"))
                .map(str::to_string),
            _ => None,
        })
        .ok_or_else(|| PkiError::Invalid("the CA certificate carries no cluster id".into()))
}

/// The PEM blocks of a bundle of certificates, each with its markers, in
/// order.
pub fn split_pem(pem: &str) -> Vec<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut blocks = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            break;
        };
        let end = start + len + END.len();
        blocks.push(format!("{}\n", &rest[start..end]));
        rest = &rest[end..];
    }
    blocks
}

/// A certificate authority of the cluster: the root (made by `pki init`,
/// its key kept offline) or a server's signing CA (an intermediate the root
/// issues to each server, which signs agents' certificates).
pub struct CertificateAuthority {
    pub cluster_id: String,
    pub cert_pem: String,
    key: KeyPair,
    issuer: rcgen::Certificate,
    /// Appended to every certificate this CA signs, so a peer holding only
    /// the root can build the path: the signing CA's own certificate, or
    /// nothing for the root.
    chain_pem: String,
}

/// A certificate and its private key, PEM.
pub struct IssuedCertificate {
    pub cert_pem: String,
    pub key_pem: String,
}

impl CertificateAuthority {
    /// A new CA for a new cluster, valid for ten years.
    pub fn generate(cluster_id: &str) -> Result<Self, PkiError> {
        let params = root_params(cluster_id, &format!("Berth cluster CA {cluster_id}"))?;
        Self::self_signed(cluster_id, params)
    }

    fn self_signed(cluster_id: &str, params: CertificateParams) -> Result<Self, PkiError> {
        let key = KeyPair::generate()?;
        let issuer = params.self_signed(&key)?;
        Ok(Self {
            cluster_id: cluster_id.to_string(),
            cert_pem: issuer.pem(),
            key,
            issuer,
            chain_pem: String::new(),
        })
    }

    /// The next root of this cluster, for a CA rotation: a new key, a name
    /// of its own (so a verifier can tell the roots apart by issuer name),
    /// and a cross-signed certificate for the same name and key issued by
    /// this root, which lets peers that trust only this root verify
    /// certificates the new one issues. Returns the new root and the
    /// cross-signed certificate (PEM).
    pub fn successor(&self) -> Result<(Self, String), PkiError> {
        let name = format!("Berth cluster CA {} {}", self.cluster_id, random_hex(4));
        let mut params = root_params(&self.cluster_id, &name)?;
        // Roots are ordered by not-before, at one-second resolution
        // (`trust::supersedes`): a successor made within the same second as
        // this root would tie with it, and agents would never take the new
        // bundle. So it starts at least a second after this one.
        if let Some(own) = trust::roots(&self.cert_pem)
            .ok()
            .and_then(|r| r.into_iter().next())
        {
            let after = u64::try_from(own.not_before_s.saturating_add(1)).unwrap_or(0);
            let floor: time::OffsetDateTime =
                (SystemTime::UNIX_EPOCH + Duration::from_secs(after)).into();
            if params.not_before < floor {
                params.not_before = floor;
            }
        }
        let next = Self::self_signed(&self.cluster_id, params.clone())?;
        let cross = params.signed_by(&next.key, &self.issuer, &self.key)?;
        Ok((next, cross.pem()))
    }

    /// A signing CA for server `node_id`: an intermediate that may sign
    /// end-entity certificates only (path length 0), so servers can sign
    /// agents' certificates without holding the root key.
    pub fn issue_signing_ca(
        &self,
        node_id: u64,
        lifetime: Duration,
    ) -> Result<IssuedCertificate, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            format!("Berth signing CA {} server {node_id}", self.cluster_id),
        );
        dn.push(DnType::OrganizationName, "Berth");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.subject_alt_names = vec![SanType::URI(
            format!("berth://{}/ca", self.cluster_id).try_into()?,
        )];
        validity(&mut params, lifetime);
        let cert = params.signed_by(&key, &self.issuer, &self.key)?;
        Ok(IssuedCertificate {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Loads a server's signing CA (see `issue_signing_ca`); what it signs
    /// carries the whole file as its chain: the signing CA's certificate
    /// and, during a CA rotation, the cross-signed new root after it.
    pub fn load_signing(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let mut ca = Self::load(cert_pem, key_pem)?;
        ca.chain_pem = cert_pem.to_string();
        Ok(ca)
    }

    /// Loads a CA from its PEM certificate and key. Only the first
    /// certificate of `cert_pem` is the CA's own (a bundle's others are
    /// other roots, or the chain); it must be the key's.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem)?;
        let cert_pem = split_pem(cert_pem)
            .into_iter()
            .next()
            .ok_or_else(|| PkiError::BadCertificate("no certificate in the PEM text".into()))?;
        let der = first_der(&cert_pem)?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| PkiError::BadCertificate(e.to_string()))?;
        if cert.public_key().raw != key.public_key_der().as_slice() {
            return Err(PkiError::Invalid(
                "the CA key is not the key of the CA certificate (a half-done CA rotation?)".into(),
            ));
        }
        let params = CertificateParams::from_ca_cert_pem(&cert_pem)?;
        let cluster_id = cluster_id_of(&params)?;
        // rcgen signs with an issuer object; rebuilding it from the same
        // name and key yields signatures that verify against the stored CA.
        let issuer = params.self_signed(&key)?;
        Ok(Self {
            cluster_id,
            cert_pem,
            key,
            issuer,
            chain_pem: String::new(),
        })
    }

    /// The cluster id a root certificate names, without its key.
    pub fn root_cluster_id(cert_pem: &str) -> Result<String, PkiError> {
        let params = CertificateParams::from_ca_cert_pem(cert_pem)?;
        cluster_id_of(&params)
    }

    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A server certificate, usable both to serve TLS and as the client
    /// certificate of server-to-server calls.
    pub fn issue_server(
        &self,
        node_id: u64,
        hosts: &[String],
        lifetime: Duration,
    ) -> Result<IssuedCertificate, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("berth-server-{node_id}"));
        params.distinguished_name = dn;
        let identity = PeerIdentity {
            cluster_id: self.cluster_id.clone(),
            role: Role::Server(node_id),
        };
        let mut sans = vec![SanType::URI(identity.uri().try_into()?)];
        for host in hosts {
            match host.parse::<IpAddr>() {
                Ok(ip) => sans.push(SanType::IpAddress(ip)),
                Err(_) => sans.push(SanType::DnsName(host.clone().try_into()?)),
            }
        }
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut params, lifetime);
        let cert = params.signed_by(&key, &self.issuer, &self.key)?;
        Ok(IssuedCertificate {
            // The chain includes the CA so a joining agent can pin it from
            // the handshake alone.
            cert_pem: format!("{}{}", cert.pem(), self.cert_pem),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs an agent's CSR. Only the CSR's public key is used: the identity
    /// and lifetime are the server's decision, never the requester's.
    pub fn sign_instance_csr(
        &self,
        csr_pem: &str,
        instance_id: &str,
        lifetime: Duration,
    ) -> Result<String, PkiError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::BadCsr(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("berth-instance-{instance_id}"));
        params.distinguished_name = dn;
        let identity = PeerIdentity {
            cluster_id: self.cluster_id.clone(),
            role: Role::Instance(instance_id.to_string()),
        };
        params.subject_alt_names = vec![SanType::URI(identity.uri().try_into()?)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut params, lifetime);
        let cert = params.signed_by(&csr.public_key, &self.issuer, &self.key)?;
        Ok(format!("{}{}", cert.pem(), self.chain_pem))
    }
}

/// A fresh key pair and a CSR for it; the key stays with the caller.
pub fn generate_csr(common_name: &str) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate()?;
    let csr_pem = request(&key, common_name)?;
    Ok((key.serialize_pem(), csr_pem))
}

/// A CSR for a key the caller already has (PEM): how an agent proves, when
/// it registers again, that it is the host that held the instance's id.
pub fn csr_for_key(key_pem: &str, common_name: &str) -> Result<String, PkiError> {
    let key = KeyPair::from_pem(key_pem)
        .map_err(|e| PkiError::Invalid(format!("the private key cannot be read: {e}")))?;
    request(&key, common_name)
}

fn request(key: &KeyPair, common_name: &str) -> Result<String, PkiError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    let csr = params.serialize_request(key)?;
    csr.pem()
        .map_err(|e| PkiError::Invalid(format!("encoding the CSR: {e}")))
}

/// SHA-256 (hex) of the SubjectPublicKeyInfo a CSR carries, once its
/// signature has been checked (so whoever sent it holds the private key).
/// Instance records keep this to recognise the key of their last
/// certificate.
pub fn csr_key_digest(csr_pem: &str) -> Result<String, PkiError> {
    let bad = |e: String| PkiError::BadCsr(e);
    // Parsing with rcgen verifies the CSR's self-signature.
    CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| bad(e.to_string()))?;
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(csr_pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let (_, csr) =
        X509CertificationRequest::from_der(&pem.contents).map_err(|e| bad(e.to_string()))?;
    Ok(der_digest(csr.certification_request_info.subject_pki.raw))
}

/// SHA-256 (hex) of a private key's SubjectPublicKeyInfo; equal to
/// [`csr_key_digest`] of any CSR made with that key.
pub fn key_digest(key_pem: &str) -> Result<String, PkiError> {
    let key = KeyPair::from_pem(key_pem)
        .map_err(|e| PkiError::Invalid(format!("the private key cannot be read: {e}")))?;
    Ok(der_digest(&key.public_key_der()))
}

/// A random lowercase hex string of `bytes` random bytes.
pub fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_round_trip_through_certificates() {
        let ca = CertificateAuthority::generate("c0ffee").unwrap();
        let server = ca
            .issue_server(
                2,
                &["127.0.0.1".into(), "berthd-2".into()],
                Duration::from_secs(60),
            )
            .unwrap();
        let der = first_der(&server.cert_pem).unwrap();
        let id = PeerIdentity::from_der(&der).unwrap();
        assert_eq!(
            id,
            PeerIdentity {
                cluster_id: "c0ffee".into(),
                role: Role::Server(2)
            }
        );

        let (key_pem, csr_pem) = generate_csr("agent").unwrap();
        assert!(key_pem.contains("PRIVATE KEY"));
        let cert = ca
            .sign_instance_csr(&csr_pem, "i-42", Duration::from_secs(3600))
            .unwrap();
        let id = PeerIdentity::from_der(&first_der(&cert).unwrap()).unwrap();
        assert_eq!(id.role, Role::Instance("i-42".into()));
        let expires = not_after_ms(&cert).unwrap();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        assert!(
            (expires - now - 3_600_000).abs() < 5_000,
            "lifetime is the server's choice"
        );
    }

    #[test]
    fn reloaded_ca_keeps_its_cluster_and_digest() {
        let ca = CertificateAuthority::generate("abc").unwrap();
        let again = CertificateAuthority::load(&ca.cert_pem, &ca.key_pem()).unwrap();
        assert_eq!(again.cluster_id, "abc");
        assert_eq!(
            ca_digest(&again.cert_pem).unwrap(),
            ca_digest(&ca.cert_pem).unwrap()
        );
        assert_eq!(ca_digest(&ca.cert_pem).unwrap().len(), 64);
    }

    #[test]
    fn a_key_is_recognised_in_every_csr_made_with_it() {
        let (key_pem, csr_pem) = generate_csr("agent").unwrap();
        let digest = csr_key_digest(&csr_pem).unwrap();
        assert_eq!(digest.len(), 64);
        assert_eq!(key_digest(&key_pem).unwrap(), digest);
        let again = csr_for_key(&key_pem, "another name").unwrap();
        assert_ne!(again, csr_pem);
        assert_eq!(csr_key_digest(&again).unwrap(), digest);
        let (_, other) = generate_csr("agent").unwrap();
        assert_ne!(csr_key_digest(&other).unwrap(), digest);
        assert!(matches!(csr_key_digest("nope"), Err(PkiError::BadCsr(_))));
        assert!(matches!(
            csr_for_key("not a key", "x"),
            Err(PkiError::Invalid(_))
        ));
    }

    #[test]
    fn a_csr_with_a_forged_signature_names_no_key() {
        // A CSR whose public key was swapped for someone else's: it no
        // longer verifies, so nobody can claim a key they do not hold.
        let (_, mine) = generate_csr("agent").unwrap();
        let (victim_key, _) = generate_csr("victim").unwrap();
        let victim = KeyPair::from_pem(&victim_key).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(mine.as_bytes()).unwrap();
        let mut der = pem.contents.clone();
        let (_, csr) = X509CertificationRequest::from_der(&pem.contents).unwrap();
        let spki = csr.certification_request_info.subject_pki.raw.to_vec();
        let victim_spki = victim.public_key_der();
        assert_eq!(spki.len(), victim_spki.len(), "same key type, same size");
        let at = der
            .windows(spki.len())
            .position(|w| w == spki.as_slice())
            .unwrap();
        der[at..at + spki.len()].copy_from_slice(&victim_spki);
        assert!(
            X509CertificationRequest::from_der(&der).is_ok(),
            "well formed; only the signature is wrong"
        );
        let forged_pem = format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            b64(&der)
        );
        assert!(matches!(
            csr_key_digest(&forged_pem),
            Err(PkiError::BadCsr(_))
        ));
    }

    fn b64(data: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
            let g = b(0) << 16 | b(1) << 8 | b(2);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(char::from(A[(g >> (18 - 6 * i) & 63) as usize]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[test]
    fn garbage_is_refused_clearly() {
        let ca = CertificateAuthority::generate("abc").unwrap();
        assert!(matches!(
            ca.sign_instance_csr("not a csr", "i-1", Duration::from_secs(1)),
            Err(PkiError::BadCsr(_))
        ));
        assert!(ca_digest("nope").is_err());
        assert_eq!(PeerIdentity::parse_uri("berth://x/server/notanumber"), None);
        assert_eq!(PeerIdentity::parse_uri("https://x/server/1"), None);
    }
}
