//! Registry access through `oci-client` (distribution API v2: manifests and
//! indexes in Docker and OCI media types, bearer-token and basic auth, blob
//! digest verification). It rides on reqwest/hyper 1/rustls, the same HTTP
//! stack tonic already brings, so it adds no second hyper major.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use berth_types::error_chain;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::error::RuntimeError;

#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    /// Registries (`host[:port]`) reached over plain HTTP. Loopback
    /// registries always are.
    pub insecure: Vec<String>,
    /// Basic credentials per registry host.
    pub credentials: HashMap<String, (String, String)>,
}

impl RegistryConfig {
    pub fn auth_for(&self, registry: &str) -> RegistryAuth {
        match self.credentials.get(registry) {
            Some((user, pass)) => RegistryAuth::Basic(user.clone(), pass.clone()),
            None => RegistryAuth::Anonymous,
        }
    }

    pub fn is_insecure(&self, registry: &str) -> bool {
        is_loopback(registry) || self.insecure.iter().any(|r| r == registry)
    }
}

tokio::task_local! {
    /// The registry credentials of the container being pulled and created
    /// in this task (its task definition's `repositoryCredentials`), set
    /// around the runtime calls rather than threaded through them: they
    /// are held in memory for that one pull and never reach the store.
    pub static PULL_CREDENTIALS: Option<(String, String)>;
}

/// The current pull's task-definition credentials, if any.
pub fn task_credentials() -> Option<(String, String)> {
    PULL_CREDENTIALS.try_with(Clone::clone).ok().flatten()
}

/// A `repositoryCredentials` secret: `{"username": ..., "password": ...}`
/// as ECS keeps it in Secrets Manager, or `USER:PASSWORD`.
pub fn parse_credentials(value: &[u8]) -> Result<(String, String), String> {
    #[derive(serde::Deserialize)]
    struct Json {
        username: String,
        password: String,
    }
    if let Ok(j) = serde_json::from_slice::<Json>(value) {
        return Ok((j.username, j.password));
    }
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.trim_end_matches('\n').split_once(':'))
        .filter(|(user, _)| !user.is_empty())
        .map(|(user, pass)| (user.to_string(), pass.to_string()))
        .ok_or_else(|| {
            "holds neither {\"username\", \"password\"} JSON nor USER:PASSWORD".to_string()
        })
}

pub fn is_loopback(registry: &str) -> bool {
    let host = match registry.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => registry,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host == "::1"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// One oci-client per registry host: the protocol (HTTP or HTTPS) is fixed
/// per client, and each keeps its own token cache.
#[derive(Default)]
pub struct Registries {
    config: RegistryConfig,
    clients: Mutex<HashMap<String, Arc<Client>>>,
}

impl Registries {
    pub fn new(config: RegistryConfig) -> Self {
        // reqwest is built without a bundled crypto provider; ring is the
        // one in the tree. Installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Registries {
            config,
            clients: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    pub fn client(&self, registry: &str) -> Arc<Client> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients
            .entry(registry.to_string())
            .or_insert_with(|| self.new_client(registry))
            .clone()
    }

    /// A client of its own, for a pull with a task definition's
    /// credentials: an oci-client keeps the first credentials it was given
    /// per registry, so a shared one would pull with another task's (or
    /// none).
    pub fn unshared_client(&self, registry: &str) -> Arc<Client> {
        self.new_client(registry)
    }

    fn new_client(&self, registry: &str) -> Arc<Client> {
        let protocol = if self.config.is_insecure(registry) {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        };
        Arc::new(Client::new(ClientConfig {
            protocol,
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            ..Default::default()
        }))
    }
}

pub fn parse_reference(reference: &str) -> Result<Reference, RuntimeError> {
    crate::reference::parse(reference).map_err(|e| RuntimeError::InvalidReference {
        reference: reference.to_string(),
        reason: e.to_string(),
    })
}

/// Turn oci-client's error into one a person can act on.
pub fn map_error(reference: &Reference, err: OciDistributionError) -> RuntimeError {
    let registry = reference.resolve_registry().to_string();
    let refname = reference.whole();
    let not_found = |reason: String| RuntimeError::ImageNotFound {
        reference: refname.clone(),
        reason,
    };
    match err {
        OciDistributionError::ImageManifestNotFoundError(m) => not_found(m),
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            let text = envelope
                .errors
                .iter()
                .map(|e| format!("{:?}: {}", e.code, e.message))
                .collect::<Vec<_>>()
                .join("; ");
            if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                not_found(text)
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                RuntimeError::RegistryAuth {
                    registry,
                    reference: refname,
                    reason: text,
                }
            } else {
                RuntimeError::Registry {
                    reference: refname,
                    reason: text,
                }
            }
        }
        OciDistributionError::ServerError {
            code: 404, message, ..
        } => not_found(message),
        OciDistributionError::AuthenticationFailure(m)
        | OciDistributionError::UnauthorizedError { url: m } => RuntimeError::RegistryAuth {
            registry,
            reference: refname,
            reason: m,
        },
        OciDistributionError::DigestError(oci_client::errors::DigestError::VerificationError {
            expected,
            actual,
        }) => RuntimeError::DigestMismatch {
            what: format!("blob of {refname}"),
            expected,
            actual,
        },
        OciDistributionError::RequestError(e) if e.is_connect() || e.is_timeout() => {
            RuntimeError::RegistryUnreachable {
                registry,
                reference: refname,
                reason: error_chain(&e),
            }
        }
        other => RuntimeError::Registry {
            reference: refname,
            reason: error_chain(&other),
        },
    }
}

#[cfg(test)]
mod credential_tests {
    #[test]
    fn credentials_are_json_or_user_colon_password() {
        let pair = ("u".to_string(), "p:w".to_string());
        assert_eq!(
            super::parse_credentials(br#"{"username":"u","password":"p:w"}"#),
            Ok(pair.clone())
        );
        assert_eq!(super::parse_credentials(b"u:p:w\n"), Ok(pair));
        assert!(super::parse_credentials(b"nocolon").is_err());
        assert!(super::parse_credentials(b":p").is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_plain_http() {
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("registry.example.com"));
        let cfg = RegistryConfig {
            insecure: vec!["10.1.2.3:5000".into()],
            ..Default::default()
        };
        assert!(cfg.is_insecure("10.1.2.3:5000"));
        assert!(!cfg.is_insecure("docker.io"));
    }
}
