//! State machine rules for tokens, activations and instances.

use std::collections::BTreeMap;

use crate::resources::Resources;
use crate::{
    Command, CommandOutput, InstanceState, InstanceStatus, Registration, Role, State, StateError,
};

fn activation(state: &mut State, id: &str, max: u32, expires_at_ms: i64) {
    state
        .apply(Command::CreateActivation {
            id: id.into(),
            cluster: "default".into(),
            description: String::new(),
            secret_hash: format!("hash-{id}"),
            expires_at_ms,
            max_registrations: max,
            attributes: BTreeMap::from([("zone".to_string(), "a".to_string())]),
            at_ms: 0,
        })
        .unwrap();
}

fn registration(activation: &str, secret_hash: &str, new_id: &str, at_ms: i64) -> Registration {
    Registration {
        activation_id: activation.into(),
        secret_hash: secret_hash.into(),
        new_instance_id: new_id.into(),
        previous_instance_id: None,
        expected_cluster: None,
        hostname: "host-1".into(),
        attributes: BTreeMap::from([("rack".to_string(), "7".to_string())]),
        certificate_expires_at_ms: at_ms + 1000,
        at_ms,
        public_key_sha256: "key-1".into(),
    }
}

fn register(state: &mut State, r: Registration) -> Result<crate::Instance, StateError> {
    match state.apply(Command::RegisterInstance(r))? {
        CommandOutput::Instance(i) => Ok(i),
        other => panic!("unexpected {other:?}"),
    }
}

fn refusal(result: Result<crate::Instance, StateError>) -> String {
    match result {
        Err(StateError::FailedPrecondition(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn registration_consumes_one_use_and_keeps_agent_attributes_apart() {
    let mut state = State::new();
    activation(&mut state, "act1", 2, 100);
    let instance = register(&mut state, registration("act1", "hash-act1", "i-1", 10)).unwrap();
    assert_eq!(instance.cluster, "default");
    assert_eq!(instance.attributes, attrs(&[("zone", "a")]));
    assert_eq!(instance.agent_attributes, attrs(&[("rack", "7")]));
    assert_eq!(
        instance.all_attributes(),
        attrs(&[("zone", "a"), ("agent.rack", "7")])
    );
    assert_eq!(state.activation("act1").unwrap().registrations, 1);
}

fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn hello(state: &mut State, id: &str, pairs: &[(&str, &str)]) -> crate::Instance {
    hello_reporting(state, id, pairs, Resources::new(1024, 1024))
}

fn hello_reporting(
    state: &mut State,
    id: &str,
    pairs: &[(&str, &str)],
    resources: Resources,
) -> crate::Instance {
    match state
        .apply(Command::InstanceConnected {
            host_ports: Vec::new(),
            instance_id: id.into(),
            agent_version: "v".into(),
            resources,
            attributes: attrs(pairs),
            at_ms: 20,
        })
        .unwrap()
    {
        CommandOutput::Instance(i) => i,
        other => panic!("unexpected {other:?}"),
    }
}

fn placed_against(state: &State, id: &str) -> Resources {
    state
        .instance(id)
        .unwrap()
        .placeable_capacity()
        .registered()
}

#[test]
fn the_operators_capacity_caps_bound_what_the_agent_claims() {
    let mut state = State::new();
    activation(&mut state, "act1", 5, 100);
    register(&mut state, registration("act1", "hash-act1", "i-1", 10)).unwrap();
    // Uncapped, the agent's claim is what placements count on.
    let claimed = Resources::new(1_000_000, 4_000_000);
    let i = hello_reporting(&mut state, "i-1", &[], claimed);
    assert_eq!(i.placeable_capacity().registered(), claimed);
    assert_eq!(i.all_attributes()["agent.capacity.cpu"], "1000000");

    // A cap wins over the claim at once, and over every later claim.
    state
        .apply(Command::PutInstanceAttributes {
            instance_id: "i-1".into(),
            attributes: attrs(&[
                (crate::access::CPU_CAP_ATTRIBUTE, "2048"),
                (crate::access::MEMORY_CAP_ATTRIBUTE, "4096"),
            ]),
        })
        .unwrap();
    assert_eq!(placed_against(&state, "i-1"), Resources::new(2048, 4096));
    hello_reporting(&mut state, "i-1", &[], Resources::new(9_999_999, 9_999_999));
    assert_eq!(placed_against(&state, "i-1"), Resources::new(2048, 4096));
    // A host reporting less than the cap gets what it reported.
    let i = hello_reporting(&mut state, "i-1", &[], Resources::new(1024, 8192));
    assert_eq!(
        i.placeable_capacity().registered(),
        Resources::new(1024, 4096)
    );
    assert_eq!(i.all_attributes()["agent.capacity.memory"], "8192");
    let view = crate::InstanceView::new(&i, 0);
    assert_eq!(
        (view.cpu_registered, view.memory_registered_mib),
        (1024, 4096)
    );

    // Removing a cap puts the claim back.
    state
        .apply(Command::DeleteInstanceAttributes {
            instance_id: "i-1".into(),
            names: vec![crate::access::MEMORY_CAP_ATTRIBUTE.into()],
        })
        .unwrap();
    assert_eq!(placed_against(&state, "i-1"), Resources::new(1024, 8192));
}

#[test]
fn an_activations_capacity_caps_hold_for_the_hosts_it_registers() {
    let mut state = State::new();
    state
        .apply(Command::CreateActivation {
            id: "act1".into(),
            cluster: "default".into(),
            description: String::new(),
            secret_hash: "hash-act1".into(),
            expires_at_ms: 100,
            max_registrations: 1,
            attributes: attrs(&[(crate::access::CPU_CAP_ATTRIBUTE, "512")]),
            at_ms: 0,
        })
        .unwrap();
    register(&mut state, registration("act1", "hash-act1", "i-1", 10)).unwrap();
    hello_reporting(&mut state, "i-1", &[], Resources::new(64 * 1024, 2048));
    assert_eq!(placed_against(&state, "i-1"), Resources::new(512, 2048));
}

#[test]
fn capacity_caps_must_be_positive_whole_numbers() {
    use crate::validate::check_operator_attribute;
    for bad in ["", "0", "-1", "2.5", "lots"] {
        let err = check_operator_attribute(3, crate::access::CPU_CAP_ATTRIBUTE, bad).unwrap_err();
        assert_eq!(err.field, "attributes[3].value", "{bad:?}");
        assert!(err.message.contains("whole number"), "{err:?}");
    }
    check_operator_attribute(0, crate::access::MEMORY_CAP_ATTRIBUTE, "4096").unwrap();
    check_operator_attribute(0, "berth.capacity.gpu", "anything").unwrap();
    let err = check_operator_attribute(1, "agent.capacity.cpu", "1").unwrap_err();
    assert_eq!(err.field, "attributes[1].name");
}

#[test]
fn operator_attributes_win_over_what_the_agent_reports() {
    let mut state = State::new();
    activation(&mut state, "act1", 5, 100);
    // The agent claims the activation's zone and more, at registration and
    // in its hello: none of it touches the operator's attributes.
    let mut r = registration("act1", "hash-act1", "i-1", 10);
    r.attributes = attrs(&[("zone", "b"), ("gpu", "yes")]);
    let registered = register(&mut state, r).unwrap();
    assert_eq!(registered.attributes, attrs(&[("zone", "a")]));
    state
        .apply(Command::PutInstanceAttributes {
            instance_id: "i-1".into(),
            attributes: attrs(&[("role", "db")]),
        })
        .unwrap();
    let after_hello = hello(
        &mut state,
        "i-1",
        &[("zone", "c"), ("role", "web"), ("os", "linux")],
    );
    assert_eq!(
        after_hello.attributes,
        attrs(&[("zone", "a"), ("role", "db")]),
        "attribute put and the activation's attributes survive the agent's session"
    );
    assert_eq!(
        after_hello.all_attributes(),
        attrs(&[
            ("zone", "a"),
            ("role", "db"),
            ("agent.zone", "c"),
            ("agent.role", "web"),
            ("agent.os", "linux"),
            ("agent.capacity.cpu", "1024"),
            ("agent.capacity.memory", "1024"),
        ])
    );
    // Each hello replaces the agent's previous report (gpu is gone).
    assert!(!after_hello.all_attributes().contains_key("agent.gpu"));

    // A re-registration that keeps the id keeps the operator's attributes
    // as they are now, whatever the (new) activation or the agent says.
    state
        .apply(Command::DeleteInstanceAttributes {
            instance_id: "i-1".into(),
            names: vec!["zone".into()],
        })
        .unwrap();
    let mut again = registration("act1", "hash-act1", "i-2", 30);
    again.previous_instance_id = Some("i-1".into());
    again.attributes = attrs(&[("zone", "z")]);
    let kept = register(&mut state, again).unwrap();
    assert_eq!(kept.id, "i-1");
    assert_eq!(kept.attributes, attrs(&[("role", "db")]));
    assert_eq!(kept.agent_attributes, attrs(&[("zone", "z")]));
    let view = crate::InstanceView::new(&kept, 0);
    assert_eq!(
        view.attributes.get("zone"),
        None,
        "no operator zone: nothing matches zone"
    );
    assert_eq!(view.attributes["agent.zone"], "z");
}

#[test]
fn refused_registrations_never_consume_a_use() {
    let mut state = State::new();
    activation(&mut state, "act1", 1, 100);
    let wrong = refusal(register(
        &mut state,
        registration("act1", "nope", "i-1", 10),
    ));
    assert!(wrong.contains("wrong secret"), "{wrong}");
    let unknown = refusal(register(
        &mut state,
        registration("zzz", "hash-act1", "i-1", 10),
    ));
    assert!(unknown.contains("unknown activation"), "{unknown}");
    let expired = refusal(register(
        &mut state,
        registration("act1", "hash-act1", "i-1", 100),
    ));
    assert!(expired.contains("expired"), "{expired}");
    let mut other = registration("act1", "hash-act1", "i-1", 10);
    other.expected_cluster = Some("prod".into());
    let other = refusal(register(&mut state, other));
    assert!(other.contains("not \"prod\""), "{other}");
    assert_eq!(state.activation("act1").unwrap().registrations, 0);

    register(&mut state, registration("act1", "hash-act1", "i-1", 10)).unwrap();
    let exhausted = refusal(register(
        &mut state,
        registration("act1", "hash-act1", "i-2", 11),
    ));
    assert!(
        exhausted.contains("all 1 of its registrations"),
        "{exhausted}"
    );
    assert_eq!(state.activation("act1").unwrap().registrations, 1);
    assert!(state.instance("i-2").is_none());
}

#[test]
fn revoked_activation_is_refused() {
    let mut state = State::new();
    activation(&mut state, "act1", 5, 100);
    state
        .apply(Command::RevokeActivation {
            id: "act1".into(),
            at_ms: 1,
        })
        .unwrap();
    let why = refusal(register(
        &mut state,
        registration("act1", "hash-act1", "i-1", 10),
    ));
    assert!(why.contains("revoked"), "{why}");
}

#[test]
fn re_registration_keeps_a_known_active_instance_id_only() {
    let mut state = State::new();
    activation(&mut state, "act1", 5, 100);
    register(&mut state, registration("act1", "hash-act1", "i-1", 10)).unwrap();
    let mut again = registration("act1", "hash-act1", "i-2", 20);
    again.previous_instance_id = Some("i-1".into());
    let kept = register(&mut state, again).unwrap();
    assert_eq!(kept.id, "i-1");
    assert_eq!(kept.registered_at_ms, 10);
    assert_eq!(kept.certificate_expires_at_ms, 1020);

    state
        .apply(Command::DeregisterInstance {
            instance_id: "i-1".into(),
            at_ms: 30,
        })
        .unwrap();
    assert_eq!(
        state.instance("i-1").unwrap().status,
        InstanceStatus::Inactive
    );
    let mut after = registration("act1", "hash-act1", "i-3", 40);
    after.previous_instance_id = Some("i-1".into());
    assert_eq!(register(&mut state, after).unwrap().id, "i-3");
    // A deregistered instance cannot renew.
    let renew = state.apply(Command::RecordInstanceCertificate {
        instance_id: "i-1".into(),
        expires_at_ms: 99,
        public_key_sha256: "key-1".into(),
    });
    assert!(matches!(renew, Err(StateError::FailedPrecondition(_))));
}

#[test]
fn another_host_with_a_valid_token_cannot_take_over_a_live_instance() {
    let mut state = State::new();
    activation(&mut state, "act1", 5, 100);
    register(&mut state, registration("act1", "hash-act1", "i-1", 10)).unwrap();
    let mut container = crate::ContainerDefinition::new("app", "registry.local/app:1");
    container.memory = Some(64);
    state
        .apply(Command::RegisterTaskDefinition {
            spec: crate::TaskDefinitionSpec {
                family: "app".into(),
                container_definitions: vec![container],
                cpu: None,
                memory: None,
                network_mode: Default::default(),
                volumes: vec![],
                tags: vec![],
            },
            at_ms: 11,
        })
        .unwrap();
    state
        .apply(Command::InstanceConnected {
            host_ports: Vec::new(),
            instance_id: "i-1".into(),
            agent_version: "v".into(),
            resources: crate::resources::Resources::new(1024, 1024),
            attributes: BTreeMap::new(),
            at_ms: 12,
        })
        .unwrap();
    state
        .apply(Command::RunTasks(crate::RunTasks {
            cluster: "default".into(),
            task_definition: "app".into(),
            task_ids: vec!["t-1".into()],
            instance_ids: vec!["i-1".into()],
            group: None,
            started_by: "test".into(),
            placement_strategies: vec![],
            placement_constraints: vec![],
            overrides: vec![],
            client_token: None,
            at_ms: 13,
        }))
        .unwrap();
    assert_eq!(state.active_tasks_on("i-1").count(), 1);
    let before = state.instance("i-1").unwrap().clone();

    // A second host, same cluster, a perfectly valid token, but its own key.
    let mut intruder = registration("act1", "hash-act1", "i-2", 20);
    intruder.previous_instance_id = Some("i-1".into());
    intruder.public_key_sha256 = "key-of-the-intruder".into();
    intruder.hostname = "intruder".into();
    let why = refusal(register(&mut state, intruder));
    assert!(
        why.contains("instance i-1 is registered with another key"),
        "{why}"
    );
    assert_eq!(
        state.instance("i-1"),
        Some(&before),
        "nothing of i-1 changed"
    );
    assert!(state.instance("i-2").is_none());
    assert_eq!(
        state.active_tasks_on("i-1").count(),
        1,
        "its task stays assigned to i-1"
    );
    assert_eq!(
        state.activation("act1").unwrap().registrations,
        1,
        "a refused takeover uses no registration"
    );

    // The legitimate host renews with a new key: from then on only that
    // key keeps the id, and the key of the earlier certificate no longer does.
    state
        .apply(Command::RecordInstanceCertificate {
            instance_id: "i-1".into(),
            expires_at_ms: 2000,
            public_key_sha256: "key-2".into(),
        })
        .unwrap();
    assert_eq!(state.instance("i-1").unwrap().public_key_sha256, "key-2");
    let mut stale = registration("act1", "hash-act1", "i-3", 30);
    stale.previous_instance_id = Some("i-1".into());
    refusal(register(&mut state, stale));
    let mut current = registration("act1", "hash-act1", "i-4", 40);
    current.previous_instance_id = Some("i-1".into());
    current.public_key_sha256 = "key-2".into();
    assert_eq!(register(&mut state, current).unwrap().id, "i-1");

    // A record without a key (none was ever recorded) is kept by nobody.
    let mut keyless = registration("act1", "hash-act1", "i-9", 50);
    keyless.public_key_sha256 = String::new();
    register(&mut state, keyless).unwrap();
    let mut blank = registration("act1", "hash-act1", "i-10", 51);
    blank.previous_instance_id = Some("i-9".into());
    blank.public_key_sha256 = String::new();
    refusal(register(&mut state, blank));
}

#[test]
fn cluster_with_instances_cannot_be_deleted() {
    let mut state = State::new();
    state
        .apply(Command::CreateCluster {
            name: "edge".into(),
            settings: Default::default(),
            at_ms: 0,
        })
        .unwrap();
    state
        .apply(Command::CreateActivation {
            id: "a".into(),
            cluster: "edge".into(),
            description: String::new(),
            secret_hash: "h".into(),
            expires_at_ms: 100,
            max_registrations: 1,
            attributes: BTreeMap::new(),
            at_ms: 0,
        })
        .unwrap();
    register(&mut state, registration("a", "h", "i-1", 1)).unwrap();
    let err = state
        .apply(Command::DeleteCluster {
            name: "edge".into(),
        })
        .unwrap_err();
    assert!(err.to_string().contains("registered instances"), "{err}");
    state
        .apply(Command::DeregisterInstance {
            instance_id: "i-1".into(),
            at_ms: 2,
        })
        .unwrap();
    state
        .apply(Command::DeleteCluster {
            name: "edge".into(),
        })
        .unwrap();
}

#[test]
fn tokens_revoke_and_bootstrap_token_never_returns() {
    let mut state = State::new();
    state
        .apply(Command::BootstrapAdminToken {
            id: "boot".into(),
            secret_hash: "h".into(),
            at_ms: 1,
        })
        .unwrap();
    state
        .apply(Command::RevokeApiToken {
            id: "boot".into(),
            at_ms: 2,
        })
        .unwrap();
    let again = state
        .apply(Command::BootstrapAdminToken {
            id: "boot".into(),
            secret_hash: "h".into(),
            at_ms: 3,
        })
        .unwrap();
    assert_eq!(again, CommandOutput::Unchanged);
    let token = state.api_token("boot").unwrap();
    assert!(!token.is_usable(4));
    assert_eq!(token.role, Role::Admin);

    state
        .apply(Command::CreateApiToken {
            id: "ro".into(),
            role: Role::Readonly,
            description: "ci".into(),
            secret_hash: "h2".into(),
            expires_at_ms: Some(10),
            at_ms: 5,
        })
        .unwrap();
    let ro = state.api_token("ro").unwrap();
    assert!(ro.is_usable(9));
    assert!(!ro.is_usable(10), "expired tokens grant nothing");
}

#[test]
fn aws_access_keys_are_tokens_with_a_sealed_secret_and_no_bearer_hash() {
    use crate::{ResealedKey, SealedKey, TokenFormat};
    let mut state = State::new();
    let sealed = |byte: u8| SealedKey {
        nonce: vec![byte; 12],
        ciphertext: vec![byte; 56],
    };
    let create = |id: &str| Command::CreateAwsAccessKey {
        id: id.into(),
        role: Role::Readonly,
        description: "boto3".into(),
        sealed: sealed(1),
        expires_at_ms: None,
        at_ms: 5,
    };
    state.apply(create("BKIA0001")).unwrap();
    let key = state.api_token("BKIA0001").unwrap();
    assert!(key.is_aws());
    assert!(key.secret_hash.is_empty(), "never a bearer token");
    assert_eq!(crate::ApiTokenView::from(key).format, TokenFormat::Aws);
    assert!(matches!(
        state.apply(create("BKIA0001")),
        Err(StateError::AlreadyExists { .. })
    ));
    state.apply(create("BKIA0002")).unwrap();
    state
        .apply(Command::RevokeApiToken {
            id: "BKIA0002".into(),
            at_ms: 6,
        })
        .unwrap();
    let resealed = state
        .apply(Command::ResealAwsAccessKeys {
            keys: ["BKIA0001", "BKIA0002", "gone"]
                .into_iter()
                .map(|id| ResealedKey {
                    id: id.into(),
                    sealed: sealed(2),
                })
                .collect(),
        })
        .unwrap();
    assert_eq!(
        resealed,
        CommandOutput::Resealed {
            resealed: vec!["BKIA0001".into()],
            skipped: vec!["BKIA0002".into(), "gone".into()],
        },
        "a revoked or missing key is skipped"
    );
    assert_eq!(
        state.api_token("BKIA0001").unwrap().aws_secret,
        Some(sealed(2))
    );
    assert_eq!(
        state.api_token("BKIA0002").unwrap().aws_secret,
        Some(sealed(1))
    );
    assert!(
        !format!("{:?}", state.api_token("BKIA0001").unwrap()).contains("[2, 2"),
        "debug output shows no sealed bytes"
    );
}

#[test]
fn instance_states_read_back_from_their_names_in_any_case() {
    for s in InstanceState::ALL {
        assert_eq!(InstanceState::parse(s.as_str()), Some(s));
        assert_eq!(InstanceState::parse(&s.as_str().to_lowercase()), Some(s));
        assert_eq!(s.to_string(), s.as_str());
    }
    assert_eq!(InstanceState::parse("GONE"), None);
}

#[test]
fn operators_cannot_set_or_delete_agent_reported_names() {
    let err = crate::validate::check_operator_attribute_name("attributes[0].name", "agent.zone")
        .unwrap_err();
    assert_eq!(err.field, "attributes[0].name");
    assert!(err.message.contains("what the agent reports"), "{err}");
    crate::validate::check_operator_attribute_name("attributes[0].name", "agentzone").unwrap();
    crate::validate::check_operator_attribute_name("attributes[0].name", "zone").unwrap();
}

#[test]
fn roles_grant_what_they_name_and_only_admin_writes() {
    use Role::*;
    for (role, readonly, logs, admin) in [
        (Admin, true, true, true),
        (Logs, true, true, false),
        (Readonly, true, false, false),
    ] {
        assert_eq!(role.grants(Readonly), readonly, "{role:?}");
        assert_eq!(role.grants(Logs), logs, "{role:?}");
        assert_eq!(role.grants(Admin), admin, "{role:?}");
        assert_eq!(Role::parse(role.as_str()), Some(role));
    }
    assert_eq!(Role::parse("root"), None);
}

#[test]
fn certificates_are_revoked_once_by_their_fingerprint() {
    let mut state = State::new();
    let fingerprint = "0f".repeat(32);
    let revoke = |fingerprint: &str, at_ms| Command::RevokeCertificate {
        fingerprint: fingerprint.to_string(),
        description: format!("at {at_ms}"),
        at_ms,
    };
    assert!(!state.is_certificate_revoked(&fingerprint));
    state.apply(revoke(&fingerprint, 1)).unwrap();
    assert!(state.is_certificate_revoked(&fingerprint));
    // Again: the first entry stays.
    let again = state.apply(revoke(&fingerprint, 2)).unwrap();
    assert!(matches!(again, CommandOutput::RevokedCertificate(c) if c.revoked_at_ms == 1));
    assert_eq!(state.revoked_certificates().count(), 1);
    for bad in [
        "",
        "0F".repeat(32).as_str(),
        "0f".repeat(31).as_str(),
        "zz".repeat(32).as_str(),
    ] {
        let err = state.apply(revoke(bad, 3)).unwrap_err();
        assert!(err.to_string().contains("fingerprint"), "{bad}: {err}");
    }
    assert_eq!(state.revoked_certificates().count(), 1);
}
