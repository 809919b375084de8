//! State machine rules for tokens, activations and instances.

use std::collections::BTreeMap;

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
fn registration_consumes_one_use_and_merges_attributes() {
    let mut state = State::new();
    activation(&mut state, "act1", 2, 100);
    let instance = register(&mut state, registration("act1", "hash-act1", "i-1", 10)).unwrap();
    assert_eq!(instance.cluster, "default");
    assert_eq!(instance.attributes["zone"], "a");
    assert_eq!(instance.attributes["rack"], "7");
    assert_eq!(state.activation("act1").unwrap().registrations, 1);
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
    });
    assert!(matches!(renew, Err(StateError::FailedPrecondition(_))));
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
fn instance_states_read_back_from_their_names_in_any_case() {
    for s in InstanceState::ALL {
        assert_eq!(InstanceState::parse(s.as_str()), Some(s));
        assert_eq!(InstanceState::parse(&s.as_str().to_lowercase()), Some(s));
        assert_eq!(s.to_string(), s.as_str());
    }
    assert_eq!(InstanceState::parse("GONE"), None);
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
