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

#[cfg(test)]
mod file_tests {
    use crate::taskdef_file::{load_task_definition, FileFormat};

    const FILE: &str = r#"{"family": "app", "containerDefinitions": [{
        "name": "web", "image": "registry.example/app:1", "memory": 64,
        "environment": [{"name": "MODE", "value": "prod"}],
        "secrets": [{"name": "DB_PASSWORD", "valueFrom": "db-password"}],
        "repositoryCredentials": {"credentialsParameter": "registry-creds"}
    }]}"#;

    #[test]
    fn ecs_secrets_and_repository_credentials_are_read_and_referenced() {
        let loaded = load_task_definition(FILE, FileFormat::Json).unwrap();
        let c = &loaded.spec.container_definitions[0];
        assert_eq!(c.secrets[0].name, "DB_PASSWORD");
        assert_eq!(c.secrets[0].value_from, "db-password");
        assert_eq!(c.repository_credentials.as_deref(), Some("registry-creds"));
        assert_eq!(
            super::referenced(&loaded.spec.container_definitions),
            vec!["db-password".to_string(), "registry-creds".to_string()]
        );
    }

    /// What `-o json` / `-o yaml` print for a spec (its serde shape) is a
    /// task definition file that loads back as the same spec, with
    /// `repositoryCredentials` in ECS's object form and nothing ignored.
    #[test]
    fn the_serde_shape_of_a_spec_is_a_file_that_loads_back_identical() {
        let spec = load_task_definition(FILE, FileFormat::Json).unwrap().spec;
        let json = serde_json::to_value(&spec).unwrap();
        let c = &json["containerDefinitions"][0];
        assert_eq!(
            c["repositoryCredentials"],
            serde_json::json!({"credentialsParameter": "registry-creds"})
        );
        assert_eq!(
            c["secrets"],
            serde_json::json!([{"name": "DB_PASSWORD", "valueFrom": "db-password"}])
        );
        let back = load_task_definition(&json.to_string(), FileFormat::Json).unwrap();
        assert_eq!(back.spec, spec);
        assert!(
            !back
                .ignored_fields
                .iter()
                .any(|f| f.contains("repositoryCredentials")),
            "{:?}",
            back.ignored_fields
        );
        let yaml = serde_yaml::to_string(&spec).unwrap();
        assert!(
            yaml.contains("repositoryCredentials:\n    credentialsParameter: registry-creds"),
            "{yaml}"
        );
        let back = load_task_definition(&yaml, FileFormat::Yaml).unwrap();
        assert_eq!(back.spec, spec);
        // The serde types read their own output, and the bare name older
        // releases printed; none stays none.
        let again: crate::TaskDefinitionSpec = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(again, spec);
        let mut old = json;
        old["containerDefinitions"][0]["repositoryCredentials"] = "registry-creds".into();
        let again: crate::TaskDefinitionSpec = serde_json::from_value(old.clone()).unwrap();
        assert_eq!(again, spec);
        old["containerDefinitions"][0]["repositoryCredentials"] = serde_json::Value::Null;
        let again: crate::TaskDefinitionSpec = serde_json::from_value(old).unwrap();
        assert_eq!(again.container_definitions[0].repository_credentials, None);
    }

    /// bincode (the Raft log) encodes the object form exactly as the bare
    /// name it encoded before (also pinned by tests/golden_bytes.rs).
    #[test]
    fn the_object_form_keeps_the_bincode_bytes() {
        let spec = load_task_definition(FILE, FileFormat::Json).unwrap().spec;
        let c = &spec.container_definitions[0];
        let bytes = bincode::serialize(c).unwrap();
        let tail = bincode::serialize(&(&c.secrets, &c.repository_credentials)).unwrap();
        assert!(bytes.ends_with(&tail));
        let back: crate::ContainerDefinition = bincode::deserialize(&bytes).unwrap();
        assert_eq!(&back, c);
        let mut none = c.clone();
        none.repository_credentials = None;
        let back: crate::ContainerDefinition =
            bincode::deserialize(&bincode::serialize(&none).unwrap()).unwrap();
        assert_eq!(back, none);
    }

    #[test]
    fn bad_references_name_the_field() {
        for (from, to, field) in [
            ("db-password", "not a name", "secrets[0].valueFrom"),
            ("DB_PASSWORD", "MODE", "secrets[0].name"),
            ("registry-creds", "", "credentialsParameter"),
        ] {
            let text = FILE.replacen(from, to, 1);
            let err = format!("{:?}", load_task_definition(&text, FileFormat::Json).err());
            assert!(err.contains(field), "{to}: {err}");
        }
    }
}
