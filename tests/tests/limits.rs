//! End-to-end: the limits that keep unauthenticated and misbehaving callers
//! from filling the Raft log or exhausting a server (docs/security.md,
//! "Limits").

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use anyhow::Result;
use berth_e2e::*;
use berth_proto::pb;
use berth_proto::pb::activation_service_client::ActivationServiceClient;
use berth_proto::pb::agent_service_client::AgentServiceClient;
use tonic::Code;

async fn create_activation(addr: &str) -> Result<berth_pki::tokens::JoinToken> {
    let reply = ActivationServiceClient::new(channel(addr).await?)
        .create_activation(pb::CreateActivationRequest {
            max_registrations: 1,
            description: "limits e2e".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(berth_pki::tokens::JoinToken::parse(&reply.token)?)
}

fn registration(activation_id: &str, secret: &str, csr_pem: &str) -> pb::RegisterInstanceRequest {
    pb::RegisterInstanceRequest {
        activation_id: activation_id.into(),
        activation_secret: secret.into(),
        csr_pem: csr_pem.into(),
        hostname: "flood".into(),
        ..Default::default()
    }
}

/// The answering server's own last log index.
async fn last_log_index(addr: &str) -> Result<u64> {
    let status = status(addr).await?;
    Ok(status
        .members
        .iter()
        .find(|m| m.node_id == status.answered_by)
        .expect("the answering server is a member")
        .last_log_index)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bad_registrations_leaves_the_log_unchanged() -> Result<()> {
    // No rate limit here: every call reaches the registration handler.
    let cluster = TestCluster::start(1, &["--anonymous-rate", "0"]).await?;
    let addr = cluster.addr(1);
    let token = create_activation(&addr).await?;
    let (_, csr_pem) = berth_pki::generate_csr("agent").unwrap();
    // Let the writes of start-up (bootstrap token, activation) settle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = last_log_index(&addr).await?;

    let mut agents = AgentServiceClient::new(tls_channel(&addr, None).await?);
    let big = "x".repeat(1024 * 1024);
    let flood: Vec<(pb::RegisterInstanceRequest, Code, &str)> = vec![
        (
            registration(&token.activation_id, "wrong-secret", &csr_pem),
            Code::FailedPrecondition,
            "wrong secret",
        ),
        (
            registration("no-such-activation", &token.secret, &csr_pem),
            Code::FailedPrecondition,
            "unknown activation id",
        ),
        (
            pb::RegisterInstanceRequest {
                hostname: big.clone(),
                ..registration(&token.activation_id, "wrong", &csr_pem)
            },
            Code::InvalidArgument,
            "hostname",
        ),
        (
            pb::RegisterInstanceRequest {
                attributes: (0..1000)
                    .map(|i| pb::Attribute {
                        name: format!("a{i}"),
                        value: "v".into(),
                    })
                    .collect(),
                ..registration(&token.activation_id, "wrong", &csr_pem)
            },
            Code::InvalidArgument,
            "attributes",
        ),
        (
            registration(&big[..4096], &token.secret, &csr_pem),
            Code::InvalidArgument,
            "activationId",
        ),
    ];
    for round in 0..40 {
        for (request, code, needle) in &flood {
            let status = agents
                .register_instance(request.clone())
                .await
                .expect_err("a bad registration is refused");
            assert_eq!(status.code(), *code, "round {round}: {}", status.message());
            assert!(
                status.message().contains(needle),
                "round {round}: {needle:?} not in {:?}",
                status.message()
            );
        }
    }
    let after = last_log_index(&addr).await?;
    assert_eq!(
        before,
        after,
        "200 refused registrations appended {} entries",
        after - before
    );

    // The activation still works: nothing was used up by the flood.
    let (_, csr_pem) = berth_pki::generate_csr("agent").unwrap();
    let joined = agents
        .register_instance(registration(&token.activation_id, &token.secret, &csr_pem))
        .await?
        .into_inner();
    assert!(joined.instance_id.starts_with("i-"), "{joined:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_calls_are_rate_limited_per_address() -> Result<()> {
    let cluster =
        TestCluster::start(1, &["--anonymous-rate", "0.5", "--anonymous-burst", "3"]).await?;
    let addr = cluster.addr(1);
    let (_, csr_pem) = berth_pki::generate_csr("agent").unwrap();
    let mut agents = AgentServiceClient::new(tls_channel(&addr, None).await?);
    let bad = registration("no-such-activation", "secret", &csr_pem);
    for i in 0..3 {
        let status = agents.register_instance(bad.clone()).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::FailedPrecondition,
            "call {i}: {status:?}"
        );
    }
    let status = agents.register_instance(bad.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .contains("too many unauthenticated calls from 127.0.0.1"),
        "{}",
        status.message()
    );
    // Authenticated callers are not counted against it.
    for _ in 0..5 {
        status_of(&addr).await?;
    }
    // The bucket refills: one token every two seconds.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let status = agents.register_instance(bad).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    Ok(())
}

async fn status_of(addr: &str) -> Result<()> {
    status(addr).await.map(|_| ())
}
