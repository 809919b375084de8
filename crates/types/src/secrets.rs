//! Secrets: values the cluster keeps sealed (AES-256-GCM under the data
//! key, see `berth_pki::datakey`) for task definitions to reference by
//! name. The state machine only ever holds the ciphertext: the server that
//! receives a value seals it before proposing, so neither the Raft log nor
//! a snapshot holds a value in the clear.

use serde::{Deserialize, Serialize};

use crate::error::FieldError;

/// The largest value accepted, as AWS Secrets Manager's 64 KiB.
pub const MAX_SECRET_VALUE_LEN: usize = 64 * 1024;

/// A secret as stored: metadata and the sealed value.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    pub name: String,
    pub description: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
    /// 1 at create, +1 on every update.
    pub version: u64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

// The ciphertext is not the value, but debug output has no use for it.
impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("name", &self.name)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl Secret {
    /// What list and describe show: everything but the sealed value.
    pub fn metadata(&self) -> SecretMetadata {
        SecretMetadata {
            name: self.name.clone(),
            description: self.description.clone(),
            version: self.version,
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
        }
    }
}

/// A secret's value sealed again under another data key, for the stored
/// `version` only (see `Command::ResealSecrets`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResealedSecret {
    pub name: String,
    /// The version that was opened; a secret at another version is left
    /// alone.
    pub version: u64,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for ResealedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResealedSecret")
            .field("name", &self.name)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretMetadata {
    pub name: String,
    pub description: String,
    pub version: u64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// Secret names as task definitions' `valueFrom` names them: letters,
/// digits and `-_./`, as AWS Secrets Manager allows (no `+=@`, which
/// would need quoting in the CLI).
pub fn check_secret_name(field: &str, name: &str) -> Result<(), FieldError> {
    if name.is_empty() || name.len() > crate::limits::MAX_ID_LEN {
        return Err(FieldError::new(
            field,
            format!(
                "a secret name has 1 to {} characters",
                crate::limits::MAX_ID_LEN
            ),
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
    {
        return Err(FieldError::new(
            field,
            "a secret name holds only letters, digits and - _ . /",
        ));
    }
    Ok(())
}

/// One entry of a container's `secrets`: the environment variable `name`
/// gets the value of the secret `value_from`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    pub name: String,
    pub value_from: String,
}

/// `ContainerDefinition::repository_credentials` in ECS's shape,
/// `{"credentialsParameter": "NAME"}` (or null), so that what `-o json`
/// and `-o yaml` print is what a task definition file takes. A struct of
/// one string is encoded by bincode exactly as the string, so the Raft log
/// and snapshots keep their bytes. Human-readable input may also hold the
/// bare name, which older releases printed.
pub(crate) mod repository_credentials_shape {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Shown<'a> {
        credentials_parameter: &'a str,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Read {
        credentials_parameter: String,
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ReadLenient {
        Object(Read),
        Name(String),
    }

    pub fn serialize<S: Serializer>(value: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
        value
            .as_deref()
            .map(|name| Shown {
                credentials_parameter: name,
            })
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        if d.is_human_readable() {
            Ok(
                Option::<ReadLenient>::deserialize(d)?.map(|read| match read {
                    ReadLenient::Object(o) => o.credentials_parameter,
                    ReadLenient::Name(name) => name,
                }),
            )
        } else {
            Ok(Option::<Read>::deserialize(d)?.map(|o| o.credentials_parameter))
        }
    }
}

/// Every secret a task definition references, each once, in order.
pub fn referenced(containers: &[crate::ContainerDefinition]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for c in containers {
        let refs = c.secrets.iter().map(|s| &s.value_from);
        for name in refs.chain(c.repository_credentials.iter()) {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_secret_name("name", "db-password").is_ok());
        assert!(check_secret_name("name", "prod/db.pass_1").is_ok());
        assert!(check_secret_name("name", "").is_err());
        assert!(check_secret_name("name", "a b").is_err());
        assert!(check_secret_name("name", &"x".repeat(129)).is_err());
    }

    #[test]
    fn debug_shows_no_sealed_bytes() {
        let s = Secret {
            name: "n".into(),
            description: String::new(),
            nonce: vec![1; 12],
            ciphertext: vec![42; 20],
            version: 1,
            created_at_ms: 0,
            updated_at_ms: 0,
        };
        assert!(!format!("{s:?}").contains("42"));
    }
}
