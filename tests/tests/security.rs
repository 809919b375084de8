//! End-to-end: authentication and authorization on a real 3-server TLS
//! cluster. Every refusal is checked on the exact gRPC code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use anyhow::Result;
use berth_e2e::*;
use berth_proto::pb;
use berth_proto::pb::activation_service_client::ActivationServiceClient;
use berth_proto::pb::agent_service_client::AgentServiceClient;
use berth_proto::pb::agent_session_service_client::AgentSessionServiceClient;
use berth_proto::pb::auth_service_client::AuthServiceClient;
use berth_proto::pb::instance_service_client::InstanceServiceClient;
use berth_proto::pb::raft_service_client::RaftServiceClient;
use berth_proto::pb::service_service_client::ServiceServiceClient;
use berth_proto::pb::task_definition_service_client::TaskDefinitionServiceClient;
use berth_proto::pb::task_service_client::TaskServiceClient;
use berth_types::{InstanceState, InstanceView};
use tonic::Code;

async fn list_as(
    addr: &str,
    token: Option<&str>,
) -> Result<pb::ListTaskDefinitionsResponse, tonic::Status> {
    let channel = channel_as(addr, token)
        .await
        .map_err(|e| tonic::Status::unknown(e.to_string()))?;
    TaskDefinitionServiceClient::new(channel)
        .list_task_definitions(pb::ListTaskDefinitionsRequest::default())
        .await
        .map(|r| r.into_inner())
}

async fn register_as(addr: &str, token: Option<&str>) -> Result<pb::TaskDefinition, tonic::Status> {
    let channel = channel_as(addr, token)
        .await
        .map_err(|e| tonic::Status::unknown(e.to_string()))?;
    TaskDefinitionServiceClient::new(channel)
        .register_task_definition(pb::RegisterTaskDefinitionRequest {
            spec: Some(spec("web", "x")),
        })
        .await
        .map(|r| r.into_inner().task_definition.unwrap())
}

fn code<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> (Code, String) {
    let status = result.expect_err("call should be refused");
    (status.code(), status.message().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_tokens_gate_every_call() -> Result<()> {
    let cluster = TestCluster::start(3, &[]).await?;
    let addrs: Vec<String> = (1..=3).map(|id| cluster.addr(id)).collect();
    let admin = test_pki().admin_token.clone();

    for addr in &addrs {
        let (c, m) = code(list_as(addr, None).await);
        assert_eq!(c, Code::Unauthenticated, "{m}");
        // Advice any gRPC client can follow, then the CLI's.
        assert!(m.contains("`authorization: Bearer TOKEN` metadata"), "{m}");
        assert!(m.contains("--token"), "{m}");
        assert_eq!(
            code(list_as(addr, Some("garbage")).await).0,
            Code::Unauthenticated
        );
        let forged = format!("{}0", admin);
        assert_eq!(
            code(list_as(addr, Some(&forged)).await).0,
            Code::Unauthenticated
        );
        list_as(addr, Some(&admin)).await?;
    }

    let mut auth = AuthServiceClient::new(channel(&addrs[0]).await?);
    let created = auth
        .create_api_token(pb::CreateApiTokenRequest {
            role: "readonly".into(),
            description: "dashboards".into(),
            expires_in_secs: 0,
            ..Default::default()
        })
        .await?
        .into_inner();
    let readonly = created.secret.clone();
    for addr in &addrs {
        list_as(addr, Some(&readonly)).await?;
        let (c, m) = code(register_as(addr, Some(&readonly)).await);
        assert_eq!(c, Code::PermissionDenied, "{m}");
        assert!(m.contains("readonly"), "{m}");
    }
    // Services too: a readonly token reads them and cannot change them.
    let mut ro_services = ServiceServiceClient::new(channel_as(&addrs[2], Some(&readonly)).await?);
    ro_services
        .list_services(pb::ListServicesRequest::default())
        .await?;
    let create = ro_services
        .create_service(pb::CreateServiceRequest {
            service_name: "web".into(),
            task_definition: "web".into(),
            ..Default::default()
        })
        .await;
    let (c, m) = code(create);
    assert_eq!(c, Code::PermissionDenied, "{m}");
    let anonymous = ServiceServiceClient::new(channel_as(&addrs[2], None).await?)
        .list_services(pb::ListServicesRequest::default())
        .await;
    assert_eq!(code(anonymous).0, Code::Unauthenticated);
    // Container logs need a logs (or admin) token: readonly is refused
    // before the task is even looked up, a logs token gets as far as the
    // lookup, and cannot change anything either.
    let logs_of = |addr: String, token: String| async move {
        let channel = channel_as(&addr, Some(&token))
            .await
            .map_err(|e| tonic::Status::unknown(e.to_string()))?;
        TaskServiceClient::new(channel)
            .get_task_logs(pb::TaskLogsRequest {
                id: "no-such-task".into(),
                ..Default::default()
            })
            .await
            .map(|_| ())
    };
    let (c, m) = code(logs_of(addrs[0].clone(), readonly.clone()).await);
    assert_eq!(c, Code::PermissionDenied, "{m}");
    assert!(m.contains("logs or admin token"), "{m}");
    let logs_token = auth
        .create_api_token(pb::CreateApiTokenRequest {
            role: "logs".into(),
            description: "support".into(),
            expires_in_secs: 0,
            ..Default::default()
        })
        .await?
        .into_inner()
        .secret;
    for addr in &addrs {
        let (c, m) = code(logs_of(addr.clone(), logs_token.clone()).await);
        assert_eq!(c, Code::NotFound, "{addr}: {m}");
        list_as(addr, Some(&logs_token)).await?;
        let (c, m) = code(register_as(addr, Some(&logs_token)).await);
        assert_eq!(c, Code::PermissionDenied, "{m}");
    }
    let (c, m) = code(logs_of(addrs[1].clone(), admin.clone()).await);
    assert_eq!(c, Code::NotFound, "{m}");
    // A readonly token cannot mint itself an admin token either.
    let mut ro_auth = AuthServiceClient::new(channel_as(&addrs[1], Some(&readonly)).await?);
    let escalate = ro_auth
        .create_api_token(pb::CreateApiTokenRequest {
            role: "admin".into(),
            description: String::new(),
            expires_in_secs: 0,
            ..Default::default()
        })
        .await;
    assert_eq!(code(escalate).0, Code::PermissionDenied);

    let bad_role = auth
        .create_api_token(pb::CreateApiTokenRequest {
            role: "root".into(),
            description: String::new(),
            expires_in_secs: 0,
            ..Default::default()
        })
        .await;
    assert_eq!(code(bad_role).0, Code::InvalidArgument);

    // Revocation takes effect on every server at once, followers included.
    let id = created.token.unwrap().id;
    auth.revoke_api_token(pb::RevokeApiTokenRequest { id: id.clone() })
        .await?;
    for addr in &addrs {
        let (c, m) = code(list_as(addr, Some(&readonly)).await);
        assert_eq!(c, Code::Unauthenticated, "{addr}: {m}");
        assert!(m.contains("revoked"), "{m}");
    }
    let listed = auth
        .list_api_tokens(pb::ListApiTokensRequest {})
        .await?
        .into_inner();
    let entry = listed.tokens.iter().find(|t| t.id == id).unwrap();
    assert!(entry.revoked);
    assert_eq!(
        listed.tokens.len(),
        3,
        "bootstrap admin token plus the readonly and logs ones"
    );
    Ok(())
}

/// A certificate on the revocation list is refused by every server, for
/// Raft and for the API, although it is a member's and still valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_certificates_are_refused_by_every_server() -> Result<()> {
    let cluster = TestCluster::start(3, &[]).await?;
    let pki = cluster.dir.path().join("node3").join("pki");
    let cert = std::fs::read_to_string(pki.join("server.crt"))?;
    let key = std::fs::read_to_string(pki.join("server.key"))?;
    let as_node3 = |addr: String| {
        let (cert, key) = (cert.clone(), key.clone());
        async move {
            let channel = tls_channel(&addr, Some((&cert, &key)))
                .await
                .map_err(|e| tonic::Status::unknown(e.to_string()))?;
            TaskDefinitionServiceClient::new(channel)
                .list_task_definitions(pb::ListTaskDefinitionsRequest::default())
                .await
                .map(|_| ())
        }
    };
    as_node3(cluster.addr(1)).await?;

    let mut auth = AuthServiceClient::new(channel(&cluster.addr(2)).await?);
    let bad = auth
        .revoke_certificate(pb::RevokeCertificateRequest {
            fingerprint: "not-hex".into(),
            description: String::new(),
        })
        .await;
    let (c, m) = code(bad);
    assert_eq!(c, Code::InvalidArgument, "{m}");
    assert!(m.contains("fingerprint"), "{m}");

    let fingerprint = berth_pki::der_digest(&berth_pki::first_der(&cert)?);
    auth.revoke_certificate(pb::RevokeCertificateRequest {
        fingerprint: fingerprint.clone(),
        description: "server 3's host was stolen".into(),
    })
    .await?;
    for id in [1, 2] {
        let addr = cluster.addr(id);
        let (c, m) = code(as_node3(addr.clone()).await);
        assert_eq!(c, Code::PermissionDenied, "{addr}: {m}");
        assert!(m.contains("revoked"), "{m}");
        let removed = tls_channel(&addr, Some((&cert, &key))).await?;
        let vote = RaftServiceClient::new(removed)
            .vote(pb::RaftPayload { data: vec![0] })
            .await;
        let (c, m) = code(vote);
        assert_eq!(c, Code::PermissionDenied, "{m}");
        let refused = wire_refused(&addr, (&cert, &key), "").await?;
        assert_eq!(
            refused.code(),
            Code::PermissionDenied,
            "{addr}: {refused:?}"
        );
        assert!(refused.message().contains("revoked"), "{refused:?}");
    }
    let listed = auth
        .list_revoked_certificates(pb::ListRevokedCertificatesRequest {})
        .await?
        .into_inner()
        .certificates;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].fingerprint, fingerprint);
    // Servers 1 and 2 still form a majority and take writes.
    register_as(&cluster.addr(1), Some(&test_pki().admin_token)).await?;
    Ok(())
}

/// A client that is not a server of this cluster cannot send Raft RPCs,
/// whatever else it holds; agent-only calls need an instance certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_and_agent_calls_need_the_right_certificate() -> Result<()> {
    let cluster = TestCluster::start(3, &[]).await?;
    let addr = cluster.addr(1);

    // TLS with the admin token but no certificate.
    let mut raft = RaftServiceClient::new(channel(&addr).await?);
    let vote = raft
        .vote(pb::RaftPayload {
            data: vec![1, 2, 3],
        })
        .await;
    assert_eq!(code(vote).0, Code::PermissionDenied);

    // A certificate from another CA does not get past the TLS handshake.
    let other = berth_pki::CertificateAuthority::generate("e2e").unwrap();
    let impostor = other
        .issue_server(2, &["127.0.0.1".into()], Duration::from_secs(600))
        .unwrap();
    match tls_channel(&addr, Some((&impostor.cert_pem, &impostor.key_pem))).await {
        Err(_) => {}
        Ok(channel) => {
            let result = RaftServiceClient::new(channel)
                .vote(pb::RaftPayload { data: vec![] })
                .await;
            assert!(
                result.is_err(),
                "a certificate from another CA was accepted"
            );
        }
    }

    // An agent without a certificate is refused agent-only calls, and its
    // session on either transport.
    let mut agent = AgentServiceClient::new(tls_channel(&addr, None).await?);
    let (c, m) = code(agent.ping(pb::AgentPingRequest {}).await);
    assert_eq!(c, Code::Unauthenticated, "{m}");
    let mut anonymous = wire_session(&addr, None, vec![hello_as("")]).await?;
    let refused = wire_refusal(&mut anonymous).await;
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(refused.message().contains("certificate"), "{refused:?}");

    // A genuine instance certificate reaches agent calls but not Raft.
    let joined = join(&addr, 1).await?;
    let identity = (joined.certificate_pem.as_str(), joined.key_pem.as_str());
    let mut as_agent = AgentServiceClient::new(tls_channel(&addr, Some(identity)).await?);
    let pong = as_agent.ping(pb::AgentPingRequest {}).await?.into_inner();
    assert_eq!(pong.instance_id, joined.instance_id);
    // ... and its session on the session transport: a follower redirects
    // it, the leader sends the settings.
    let mut target = addr.clone();
    let mut first = None;
    for _ in 0..3 {
        let hello = vec![hello_as(&joined.instance_id)];
        let mut session = wire_session(&target, Some(identity), hello).await?;
        first = tokio::time::timeout(Duration::from_secs(10), session.message())
            .await??
            .and_then(|m| m.body);
        match &first {
            Some(pb::server_message::Body::Redirect(r)) if !r.leader_address.is_empty() => {
                target = r.leader_address.clone();
            }
            _ => break,
        }
    }
    assert!(
        matches!(first, Some(pb::server_message::Body::Settings(_))),
        "the leader's first session message is its settings: {first:?}"
    );
    let mut raft = RaftServiceClient::new(tls_channel(&addr, Some(identity)).await?);
    assert_eq!(
        code(raft.vote(pb::RaftPayload { data: vec![] }).await).0,
        Code::PermissionDenied
    );
    Ok(())
}

/// A session's first message, naming `instance_id` (empty: none).
fn hello_as(instance_id: &str) -> pb::AgentMessage {
    pb::AgentMessage {
        body: Some(pb::agent_message::Body::Hello(pb::AgentHello {
            instance_id: instance_id.to_string(),
            ..Default::default()
        })),
    }
}

/// How the server ends a session on the session transport opened with
/// `identity` and a hello naming `instance_id`.
async fn wire_refused(
    addr: &str,
    identity: (&str, &str),
    instance_id: &str,
) -> Result<tonic::Status> {
    let mut session = wire_session(addr, Some(identity), vec![hello_as(instance_id)]).await?;
    Ok(wire_refusal(&mut session).await)
}

#[derive(Debug)]
struct Joined {
    instance_id: String,
    certificate_pem: String,
    key_pem: String,
}

async fn create_activation(
    addr: &str,
    max: u32,
    expires_in_secs: u64,
) -> Result<berth_pki::tokens::JoinToken> {
    let mut activations = ActivationServiceClient::new(channel(addr).await?);
    let reply = activations
        .create_activation(pb::CreateActivationRequest {
            cluster: String::new(),
            expires_in_secs,
            max_registrations: max,
            attributes: vec![pb::Attribute {
                name: "zone".into(),
                value: "lab".into(),
            }],
            description: "e2e".into(),
        })
        .await?
        .into_inner();
    Ok(berth_pki::tokens::JoinToken::parse(&reply.token)?)
}

async fn register_with(
    addr: &str,
    token: &berth_pki::tokens::JoinToken,
    secret: &str,
) -> Result<Joined, tonic::Status> {
    let (key_pem, _) = berth_pki::generate_csr("agent").unwrap();
    register_key(addr, token, secret, &key_pem, "").await
}

/// Registers with a given key, asking for `previous_instance_id` (empty:
/// a new instance).
async fn register_key(
    addr: &str,
    token: &berth_pki::tokens::JoinToken,
    secret: &str,
    key_pem: &str,
    previous_instance_id: &str,
) -> Result<Joined, tonic::Status> {
    let key_pem = key_pem.to_string();
    let csr_pem = berth_pki::csr_for_key(&key_pem, "agent").unwrap();
    let channel = tls_channel(addr, None)
        .await
        .map_err(|e| tonic::Status::unknown(e.to_string()))?;
    let reply = AgentServiceClient::new(channel)
        .register_instance(pb::RegisterInstanceRequest {
            activation_id: token.activation_id.clone(),
            activation_secret: secret.to_string(),
            csr_pem,
            hostname: "host-a".into(),
            attributes: vec![],
            previous_instance_id: previous_instance_id.to_string(),
            cluster: String::new(),
        })
        .await?
        .into_inner();
    Ok(Joined {
        instance_id: reply.instance_id,
        certificate_pem: reply.certificate_pem,
        key_pem,
    })
}

async fn join(addr: &str, max: u32) -> Result<Joined> {
    let token = create_activation(addr, max, 0).await?;
    Ok(register_with(addr, &token, &token.secret).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activations_admit_exactly_what_they_allow() -> Result<()> {
    let cluster = TestCluster::start(3, &[]).await?;
    let addrs: Vec<String> = (1..=3).map(|id| cluster.addr(id)).collect();

    // Concurrent registrations through all servers: exactly `max` succeed.
    let token = create_activation(&addrs[0], 3, 0).await?;
    let mut attempts = Vec::new();
    for i in 0..9 {
        let addr = addrs[i % 3].clone();
        let token = token.clone();
        attempts.push(tokio::spawn(async move {
            register_with(&addr, &token, &token.secret).await
        }));
    }
    let mut ok = 0;
    for attempt in attempts {
        match attempt.await? {
            Ok(_) => ok += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                assert!(
                    status.message().contains("all 3 of its registrations"),
                    "{status:?}"
                );
            }
        }
    }
    assert_eq!(ok, 3, "exactly max-registrations succeed");
    let mut activations = ActivationServiceClient::new(channel(&addrs[1]).await?);
    let described = activations
        .describe_activation(pb::DescribeActivationRequest {
            id: token.activation_id.clone(),
        })
        .await?
        .into_inner()
        .activation
        .unwrap();
    assert_eq!(described.registrations, 3);

    // Wrong secret, revoked, expired: refused with the reason, nothing used.
    let fresh = create_activation(&addrs[0], 5, 0).await?;
    let (c, m) = code(register_with(&addrs[1], &fresh, "0000").await);
    assert_eq!(c, Code::FailedPrecondition);
    assert!(m.contains("wrong secret"), "{m}");
    activations
        .revoke_activation(pb::RevokeActivationRequest {
            id: fresh.activation_id.clone(),
        })
        .await?;
    let (_, m) = code(register_with(&addrs[2], &fresh, &fresh.secret).await);
    assert!(m.contains("revoked"), "{m}");
    let short = create_activation(&addrs[0], 5, 1).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, m) = code(register_with(&addrs[0], &short, &short.secret).await);
    assert!(m.contains("expired"), "{m}");
    for id in [&fresh.activation_id, &short.activation_id] {
        let a = activations
            .describe_activation(pb::DescribeActivationRequest { id: id.clone() })
            .await?
            .into_inner()
            .activation
            .unwrap();
        assert_eq!(
            a.registrations, 0,
            "a refused registration used up activation {id}"
        );
    }

    // A deregistered instance's certificate is refused on every server.
    let joined = join(&addrs[0], 1).await?;
    let identity = (joined.certificate_pem.as_str(), joined.key_pem.as_str());
    let mut instances = InstanceServiceClient::new(channel(&addrs[0]).await?);
    let described: InstanceView = from_wire(
        instances
            .describe_instance(pb::DescribeInstanceRequest {
                id: joined.instance_id.clone(),
            })
            .await?
            .into_inner()
            .instance
            .unwrap(),
    )?;
    // Registered, but no agent session yet: not a place for tasks.
    assert_eq!(described.status, InstanceState::Disconnected);
    assert!(!described.agent_connected);
    assert_eq!(
        described.attributes.get("zone").map(String::as_str),
        Some("lab")
    );
    instances
        .deregister_instance(pb::DeregisterInstanceRequest {
            id: joined.instance_id.clone(),
        })
        .await?;
    for addr in &addrs {
        let mut agent = AgentServiceClient::new(tls_channel(addr, Some(identity)).await?);
        let (c, m) = code(agent.ping(pb::AgentPingRequest {}).await);
        assert_eq!(c, Code::PermissionDenied, "{addr}: {m}");
        assert!(m.contains("deregistered"), "{m}");
        let refused = wire_refused(addr, identity, &joined.instance_id).await?;
        assert_eq!(
            refused.code(),
            Code::PermissionDenied,
            "{addr}: {refused:?}"
        );
        assert!(refused.message().contains("deregistered"), "{refused:?}");
    }

    // No secret handed out in this run appears in any server's log.
    let logs: String = cluster.servers.values().map(|s| s.log()).collect();
    assert!(logs.contains("instance registered"), "logs were captured");
    for secret in [
        &token.secret,
        &fresh.secret,
        &short.secret,
        &test_pki().admin_token,
    ] {
        assert!(
            !logs.contains(secret.as_str()),
            "a secret leaked into the logs"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_join_token_does_not_take_over_a_live_instance() -> Result<()> {
    let cluster = TestCluster::start(1, &[]).await?;
    let addr = cluster.addr(1);

    // Host A joins; its certificate works.
    let token_a = create_activation(&addr, 1, 0).await?;
    let (key_a, _) = berth_pki::generate_csr("a").unwrap();
    let a = register_key(&addr, &token_a, &token_a.secret, &key_a, "").await?;
    let mut agent_a =
        AgentServiceClient::new(tls_channel(&addr, Some((&a.certificate_pem, &a.key_pem))).await?);
    agent_a.ping(pb::AgentPingRequest {}).await?;

    // Host B holds a perfectly valid token of the same cluster and names
    // A's id, with its own key: refused, nothing signed, nothing used up.
    let token_b = create_activation(&addr, 1, 0).await?;
    let (key_b, _) = berth_pki::generate_csr("b").unwrap();
    let (c, m) = code(register_key(&addr, &token_b, &token_b.secret, &key_b, &a.instance_id).await);
    assert_eq!(c, Code::FailedPrecondition, "{m}");
    assert!(
        m.contains(&format!(
            "instance {} is registered with another key",
            a.instance_id
        )),
        "{m}"
    );
    let mut activations = ActivationServiceClient::new(channel(&addr).await?);
    let b_activation = activations
        .describe_activation(pb::DescribeActivationRequest {
            id: token_b.activation_id.clone(),
        })
        .await?
        .into_inner()
        .activation
        .unwrap();
    assert_eq!(
        b_activation.registrations, 0,
        "a refused takeover uses nothing"
    );

    // B can still join as itself, under a new id, and its certificate
    // cannot open A's session: the hello is checked against the certificate.
    let b = register_key(&addr, &token_b, &token_b.secret, &key_b, "").await?;
    assert_ne!(b.instance_id, a.instance_id);
    let mut agent_b =
        AgentServiceClient::new(tls_channel(&addr, Some((&b.certificate_pem, &b.key_pem))).await?);
    let pong = agent_b.ping(pb::AgentPingRequest {}).await?.into_inner();
    assert_eq!(pong.instance_id, b.instance_id, "B is only ever B");
    let hello = pb::AgentMessage {
        body: Some(pb::agent_message::Body::Hello(pb::AgentHello {
            instance_id: a.instance_id.clone(),
            ..Default::default()
        })),
    };
    let mut sessions = AgentSessionServiceClient::new(
        tls_channel(&addr, Some((&b.certificate_pem, &b.key_pem))).await?,
    );
    let session = sessions.session(futures::stream::iter(vec![hello])).await;
    let refused = match session {
        Err(status) => status,
        Ok(reply) => {
            let mut stream = reply.into_inner();
            match stream.message().await {
                Err(status) => status,
                Ok(other) => panic!("B opened A's session: {other:?}"),
            }
        }
    };
    assert!(
        refused
            .message()
            .contains(&format!("hello names instance {}", a.instance_id)),
        "{refused:?}"
    );
    let mut on_wire = wire_session(
        &addr,
        Some((&b.certificate_pem, &b.key_pem)),
        vec![hello_as(&a.instance_id)],
    )
    .await?;
    let refused = wire_refusal(&mut on_wire).await;
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused
            .message()
            .contains(&format!("hello names instance {}", a.instance_id)),
        "{refused:?}"
    );

    // A, with the key of its last certificate, keeps its id (the agent
    // re-registers this way after its certificate expired), and so does it
    // after renewing with a new key, with that new key only.
    let again = register_key(&addr, &token_b, &token_b.secret, &key_a, &a.instance_id).await;
    let (c, m) = code(again);
    assert_eq!(c, Code::FailedPrecondition, "token B is used up: {m}");
    let token_c = create_activation(&addr, 3, 0).await?;
    let kept = register_key(&addr, &token_c, &token_c.secret, &key_a, &a.instance_id).await?;
    assert_eq!(kept.instance_id, a.instance_id);
    let (key_a2, csr_a2) = berth_pki::generate_csr("a").unwrap();
    let mut agent_a = AgentServiceClient::new(
        tls_channel(&addr, Some((&kept.certificate_pem, &kept.key_pem))).await?,
    );
    agent_a
        .renew_certificate(pb::RenewCertificateRequest { csr_pem: csr_a2 })
        .await?;
    let (c, m) = code(register_key(&addr, &token_c, &token_c.secret, &key_a, &a.instance_id).await);
    assert_eq!(
        c,
        Code::FailedPrecondition,
        "the key before the renewal: {m}"
    );
    let kept = register_key(&addr, &token_c, &token_c.secret, &key_a2, &a.instance_id).await?;
    assert_eq!(kept.instance_id, a.instance_id);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_session_cannot_change_the_operators_attributes() -> Result<()> {
    let cluster = TestCluster::start(1, &[]).await?;
    let addr = cluster.addr(1);
    // The activation says zone=lab; the operator then adds role=db.
    let joined = join(&addr, 1).await?;
    let mut instances = InstanceServiceClient::new(channel(&addr).await?);
    instances
        .put_instance_attributes(pb::PutInstanceAttributesRequest {
            id: joined.instance_id.clone(),
            attributes: vec![
                pb::Attribute {
                    name: "role".into(),
                    value: "db".into(),
                },
                // Caps on what the agent may claim for its host.
                pb::Attribute {
                    name: berth_types::access::CPU_CAP_ATTRIBUTE.into(),
                    value: "512".into(),
                },
                pb::Attribute {
                    name: berth_types::access::MEMORY_CAP_ATTRIBUTE.into(),
                    value: "256".into(),
                },
            ],
        })
        .await?;
    let (c, m) = code(
        instances
            .put_instance_attributes(pb::PutInstanceAttributesRequest {
                id: joined.instance_id.clone(),
                attributes: vec![pb::Attribute {
                    name: berth_types::access::CPU_CAP_ATTRIBUTE.into(),
                    value: "plenty".into(),
                }],
            })
            .await,
    );
    assert_eq!(c, Code::InvalidArgument, "{m}");
    assert!(
        m.contains("attributes[0].value") && m.contains("whole number"),
        "{m}"
    );
    // Operators cannot write into the agent's space.
    let (c, m) = code(
        instances
            .put_instance_attributes(pb::PutInstanceAttributesRequest {
                id: joined.instance_id.clone(),
                attributes: vec![pb::Attribute {
                    name: "agent.os".into(),
                    value: "x".into(),
                }],
            })
            .await,
    );
    assert_eq!(c, Code::InvalidArgument, "{m}");
    assert!(m.contains("what the agent reports"), "{m}");
    let (c, m) = code(
        instances
            .delete_instance_attributes(pb::DeleteInstanceAttributesRequest {
                id: joined.instance_id.clone(),
                names: vec!["agent.os".into()],
            })
            .await,
    );
    assert_eq!(c, Code::InvalidArgument, "{m}");
    assert!(m.contains("names[0]"), "{m}");
    let (c, m) = code(
        ActivationServiceClient::new(channel(&addr).await?)
            .create_activation(pb::CreateActivationRequest {
                attributes: vec![pb::Attribute {
                    name: "agent.arch".into(),
                    value: "arm64".into(),
                }],
                ..Default::default()
            })
            .await,
    );
    assert_eq!(c, Code::InvalidArgument, "{m}");
    assert!(m.contains("attributes[0].name"), "{m}");

    // The agent's session says otherwise about zone and role.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::AgentMessage {
        body: Some(pb::agent_message::Body::Hello(pb::AgentHello {
            instance_id: joined.instance_id.clone(),
            agent_version: "evil".into(),
            cpu_total: 1024 * 1024,
            memory_total_mib: 1024 * 1024,
            attributes: vec![
                pb::Attribute {
                    name: "zone".into(),
                    value: "prod".into(),
                },
                pb::Attribute {
                    name: "role".into(),
                    value: "web".into(),
                },
            ],
            ..Default::default()
        })),
    })
    .await?;
    let mut sessions = AgentSessionServiceClient::new(
        tls_channel(&addr, Some((&joined.certificate_pem, &joined.key_pem))).await?,
    );
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let mut replies = sessions.session(stream).await?.into_inner();
    replies.message().await?.expect("settings after the hello");
    let described: InstanceView = from_wire(
        instances
            .describe_instance(pb::DescribeInstanceRequest {
                id: joined.instance_id.clone(),
            })
            .await?
            .into_inner()
            .instance
            .unwrap(),
    )?;
    assert!(described.agent_connected);
    let get = |name: &str| described.attributes.get(name).map(String::as_str);
    assert_eq!(get("zone"), Some("lab"), "{:?}", described.attributes);
    assert_eq!(get("role"), Some("db"), "{:?}", described.attributes);
    assert_eq!(
        get("agent.zone"),
        Some("prod"),
        "{:?}",
        described.attributes
    );
    assert_eq!(get("agent.role"), Some("web"), "{:?}", described.attributes);
    // It claims a huge host; placements count on the operator's caps.
    assert_eq!(get("agent.capacity.cpu"), Some("1048576"));
    assert_eq!(
        (described.cpu_registered, described.memory_registered_mib),
        (512, 256)
    );
    drop(tx);
    Ok(())
}
