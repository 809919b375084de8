//! The secrets people copy around, and how they are checked.
//!
//! - API token: `berth_<id>_<secret>`; the server stores SHA-256(secret).
//! - Activation (join) token: `BERTH1-<id>-<secret>-<ca sha256>`; it pins the
//!   CA so the agent can detect a man in the middle before sending anything.

use sha2::{Digest, Sha256};

use crate::{random_hex, PkiError};

/// Hex SHA-256 of a secret: the only form in which secrets are stored.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compares without revealing where two hashes first differ.
pub fn hashes_equal(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTokenSecret {
    pub id: String,
    pub secret: String,
}

impl ApiTokenSecret {
    pub fn generate() -> Self {
        Self {
            id: random_hex(6),
            secret: random_hex(24),
        }
    }

    pub fn encode(&self) -> String {
        format!("berth_{}_{}", self.id, self.secret)
    }

    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.trim().strip_prefix("berth_")?;
        let (id, secret) = rest.split_once('_')?;
        let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
        (hex(id) && hex(secret)).then(|| Self {
            id: id.to_string(),
            secret: secret.to_string(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub activation_id: String,
    pub secret: String,
    pub ca_digest: String,
}

impl JoinToken {
    pub fn generate(ca_digest: &str) -> Self {
        Self {
            activation_id: random_hex(6),
            secret: random_hex(24),
            ca_digest: ca_digest.to_string(),
        }
    }

    pub fn encode(&self) -> String {
        format!(
            "BERTH1-{}-{}-{}",
            self.activation_id, self.secret, self.ca_digest
        )
    }

    pub fn parse(text: &str) -> Result<Self, PkiError> {
        let bad = || {
            PkiError::Invalid(
                "the join token is malformed; it looks like BERTH1-<id>-<secret>-<ca digest>, as printed by `berth activation create`".into(),
            )
        };
        let rest = text.trim().strip_prefix("BERTH1-").ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split('-').collect();
        let [id, secret, digest] = parts.as_slice() else {
            return Err(bad());
        };
        let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !(hex(id) && hex(secret) && digest.len() == 64 && hex(digest)) {
            return Err(bad());
        }
        Ok(Self {
            activation_id: id.to_string(),
            secret: secret.to_string(),
            ca_digest: digest.to_ascii_lowercase(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_tokens_round_trip_and_reject_garbage() {
        let token = ApiTokenSecret::generate();
        assert_eq!(ApiTokenSecret::parse(&token.encode()), Some(token.clone()));
        assert_eq!(ApiTokenSecret::parse("garbage"), None);
        assert_eq!(ApiTokenSecret::parse("berth_zz_yy"), None);
        assert!(hashes_equal(
            &hash_secret(&token.secret),
            &hash_secret(&token.secret)
        ));
        assert!(!hashes_equal(&hash_secret("a"), &hash_secret("b")));
    }

    #[test]
    fn join_tokens_round_trip_and_reject_garbage() {
        let digest = "ab".repeat(32);
        let token = JoinToken::generate(&digest);
        assert_eq!(JoinToken::parse(&token.encode()).unwrap(), token);
        for bad in [
            "",
            "BERTH1-",
            "BERTH1-a-b",
            "BERTH2-a-b-c",
            &format!("BERTH1-xx-yy-{digest}"),
        ] {
            assert!(JoinToken::parse(bad).is_err(), "{bad}");
        }
    }
}
