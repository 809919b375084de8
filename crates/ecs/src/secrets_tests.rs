//! Secrets and repository credentials in task definition files (moved here
//! from berth-types' secrets module with the file reader they exercise): how
//! they are read, referenced, printed back and encoded.

use crate::taskdef::{load_task_definition, FileFormat};

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
        berth_types::secrets::referenced(&loaded.spec.container_definitions),
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
    let again: berth_types::TaskDefinitionSpec = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(again, spec);
    let mut old = json;
    old["containerDefinitions"][0]["repositoryCredentials"] = "registry-creds".into();
    let again: berth_types::TaskDefinitionSpec = serde_json::from_value(old.clone()).unwrap();
    assert_eq!(again, spec);
    old["containerDefinitions"][0]["repositoryCredentials"] = serde_json::Value::Null;
    let again: berth_types::TaskDefinitionSpec = serde_json::from_value(old).unwrap();
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
    let back: berth_types::ContainerDefinition = bincode::deserialize(&bytes).unwrap();
    assert_eq!(&back, c);
    let mut none = c.clone();
    none.repository_credentials = None;
    let back: berth_types::ContainerDefinition =
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
