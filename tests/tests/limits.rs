//! End-to-end: the limits that keep unauthenticated and misbehaving callers
//! from filling the Raft log or exhausting a server (docs/security.md,
//! "Limits"), and how soon an agent that went away is noticed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use anyhow::Result;
use berth_e2e::*;
use berth_proto::pb;
use berth_proto::pb::activation_service_client::ActivationServiceClient;
use berth_proto::pb::agent_message::Body as AgentBody;
use berth_proto::pb::agent_service_client::AgentServiceClient;
use berth_proto::pb::agent_session_service_client::AgentSessionServiceClient;
use berth_proto::pb::instance_service_client::InstanceServiceClient;
use futures::channel::mpsc;
use tonic::Code;

async fn create_activation(addr: &str) -> Result<berth_pki::tokens::JoinToken> {
    activation_for(addr, 1).await
}

async fn activation_for(addr: &str, max: u32) -> Result<berth_pki::tokens::JoinToken> {
    let reply = ActivationServiceClient::new(channel(addr).await?)
        .create_activation(pb::CreateActivationRequest {
            max_registrations: max,
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
    // Under the 1 MiB message limit, far over the field limits.
    let big = "x".repeat(64 * 1024);
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

/// The server's side of a hand-driven session, on either transport.
enum Replies {
    Grpc(Box<tonic::Streaming<pb::ServerMessage>>),
    Wire(berth_wire::Inbound),
}

impl Replies {
    async fn message(&mut self) -> Result<Option<pb::ServerMessage>, tonic::Status> {
        match self {
            Replies::Grpc(replies) => replies.message().await,
            Replies::Wire(replies) => replies.message().await,
        }
    }
}

/// A hand-driven agent session: what a compromised agent could send.
struct RawSession {
    instance_id: String,
    send: mpsc::UnboundedSender<pb::AgentMessage>,
    replies: Replies,
}

impl RawSession {
    /// A session on the gRPC transport.
    async fn open(addr: &str, token: &berth_pki::tokens::JoinToken, host: &str) -> Result<Self> {
        Self::open_on(addr, token, host, false).await
    }

    /// `on_wire`: on the session transport (`berth_wire`) instead.
    async fn open_on(
        addr: &str,
        token: &berth_pki::tokens::JoinToken,
        host: &str,
        on_wire: bool,
    ) -> Result<Self> {
        let (key_pem, csr_pem) = berth_pki::generate_csr("agent").unwrap();
        let joined = AgentServiceClient::new(tls_channel(addr, None).await?)
            .register_instance(pb::RegisterInstanceRequest {
                hostname: host.into(),
                ..registration(&token.activation_id, &token.secret, &csr_pem)
            })
            .await?
            .into_inner();
        let identity = (joined.certificate_pem.as_str(), key_pem.as_str());
        let (send, rx) = mpsc::unbounded();
        send.unbounded_send(pb::AgentMessage {
            body: Some(AgentBody::Hello(pb::AgentHello {
                instance_id: joined.instance_id.clone(),
                agent_version: "raw-test".into(),
                cpu_total: 1024,
                memory_total_mib: 1024,
                ..Default::default()
            })),
        })?;
        let mut replies = if on_wire {
            Replies::Wire(wire_session_sending(addr, Some(identity), rx).await?)
        } else {
            let channel = tls_channel(addr, Some(identity)).await?;
            Replies::Grpc(Box::new(
                AgentSessionServiceClient::new(channel)
                    .session(rx)
                    .await?
                    .into_inner(),
            ))
        };
        // Settings, then the complete assignment set: the session is up.
        for _ in 0..2 {
            replies.message().await?.expect("a server message");
        }
        Ok(Self {
            instance_id: joined.instance_id,
            send,
            replies,
        })
    }

    fn status(&self, reports: Vec<pb::TaskReport>) -> bool {
        self.send
            .unbounded_send(pb::AgentMessage {
                body: Some(AgentBody::Status(pb::StatusBatch {
                    reports,
                    acked_sequence: 0,
                })),
            })
            .is_ok()
    }

    /// The status the server ended the session with.
    async fn ended(&mut self) -> tonic::Status {
        let wait = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match self.replies.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => return tonic::Status::ok("ended without an error"),
                    Err(status) => return status,
                }
            }
        });
        wait.await.expect("the server ends the session")
    }

    async fn is_connected(&self, addr: &str) -> Result<bool> {
        agent_connected(addr, &self.instance_id).await
    }
}

async fn agent_connected(addr: &str, instance_id: &str) -> Result<bool> {
    let instance = InstanceServiceClient::new(channel(addr).await?)
        .describe_instance(pb::DescribeInstanceRequest {
            id: instance_id.to_string(),
        })
        .await?
        .into_inner()
        .instance
        .expect("an instance");
    Ok(instance.agent_connected)
}

fn report(task_id: &str) -> pb::TaskReport {
    pb::TaskReport {
        task_id: task_id.into(),
        last_status: "RUNNING".into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_that_flood_or_send_oversized_reports_are_cut_off_and_others_are_not() -> Result<()>
{
    let cluster = TestCluster::start(1, &[]).await?;
    let addr = cluster.addr(1);
    let token = activation_for(&addr, 6).await?;
    let honest = RawSession::open(&addr, &token, "honest").await?;
    let honest_on_wire = RawSession::open_on(&addr, &token, "honest-wire", true).await?;

    // A message over 1 MiB ends the session from its length prefix, on
    // either transport.
    let mut oversized = RawSession::open(&addr, &token, "oversized").await?;
    let mut oversized_on_wire = RawSession::open_on(&addr, &token, "oversized-wire", true).await?;
    let mut big = report("t-1");
    big.reason = "x".repeat(2 * 1024 * 1024);
    for session in [&mut oversized, &mut oversized_on_wire] {
        session.status(vec![big.clone()]);
        let status = session.ended().await;
        assert!(status.message().contains("session cut off"), "{status:?}");
        assert!(status.message().contains("too large"), "{status:?}");
    }

    // A report over a field limit (a 4 KiB task id).
    let mut bad_field = RawSession::open(&addr, &token, "bad-field").await?;
    bad_field.status(vec![report(&"t".repeat(4096))]);
    let status = bad_field.ended().await;
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("status.reports[0].taskId"),
        "{status:?}"
    );

    // The same reports again and again, far past any honest agent's rate.
    let mut repeater = RawSession::open(&addr, &token, "repeater").await?;
    let same: Vec<pb::TaskReport> = (0..1000).map(|i| report(&format!("t-{i}"))).collect();
    for _ in 0..20 {
        if !repeater.status(same.clone()) {
            break;
        }
    }
    let status = repeater.ended().await;
    assert!(
        status.message().contains("task reports at once"),
        "{status:?}"
    );

    let log = cluster.logs();
    for id in [
        &oversized.instance_id,
        &oversized_on_wire.instance_id,
        &bad_field.instance_id,
        &repeater.instance_id,
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains("agent session cut off") && l.contains(id.as_str())),
            "no cut-off line for {id} in:\n{log}"
        );
    }

    // The honest agents' sessions are still up and still served.
    for honest in [&honest, &honest_on_wire] {
        assert!(honest.status(vec![report("t-unknown")]));
        honest.send.unbounded_send(pb::AgentMessage {
            body: Some(AgentBody::Heartbeat(pb::Heartbeat { sent_at_ms: 1 })),
        })?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for honest in [&honest, &honest_on_wire] {
        assert!(honest.is_connected(&addr).await?);
        assert!(
            !log.lines()
                .any(|l| l.contains("cut off") && l.contains(honest.instance_id.as_str())),
            "the honest agent {} was cut off",
            honest.instance_id
        );
    }
    Ok(())
}

/// A session that ended and was not reopened marks its instance
/// DISCONNECTED within seconds, not after three silent heartbeat periods
/// (30 s here); a session that is open but has nothing to say stays
/// connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_session_is_disconnected_long_before_three_heartbeat_periods() -> Result<()> {
    let cluster =
        TestCluster::start(1, &["--agent-heartbeat", "10s", "--agent-grace", "1s"]).await?;
    let addr = cluster.addr(1);
    let token = activation_for(&addr, 2).await?;
    let staying = RawSession::open(&addr, &token, "staying").await?;
    let leaving = RawSession::open(&addr, &token, "leaving").await?;
    assert!(leaving.is_connected(&addr).await?);

    let RawSession {
        instance_id,
        send,
        replies,
    } = leaving;
    drop(send);
    drop(replies);
    eventually(Duration::from_secs(12), || async {
        anyhow::ensure!(
            !agent_connected(&addr, &instance_id).await?,
            "{instance_id} still connected"
        );
        Ok(())
    })
    .await?;
    assert!(staying.is_connected(&addr).await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_tls_handshake_is_dropped_after_the_timeout() -> Result<()> {
    use tokio::io::AsyncReadExt;
    let cluster = TestCluster::start(1, &["--tls-handshake-timeout", "1s"]).await?;
    let addr = cluster.addr(1);
    let started = std::time::Instant::now();
    let mut stalled = tokio::net::TcpStream::connect(&addr).await?;
    // Say nothing; the server must hang up by itself.
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(10), stalled.read(&mut buf))
        .await
        .expect("the server closes a stalled handshake");
    let waited = started.elapsed();
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
    // Others are served meanwhile and afterwards.
    status(&addr).await?;
    assert!(cluster
        .logs()
        .contains("TLS handshake not finished in time"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_and_headers_are_refused() -> Result<()> {
    let cluster = TestCluster::start(1, &[]).await?;
    let addr = cluster.addr(1);

    // A 2 MiB request: refused from its length prefix, before it is read.
    let mut spec = spec("big", "x");
    spec.container_definitions[0]
        .environment
        .push(pb::KeyValuePair {
            name: "PAD".into(),
            value: "x".repeat(2 * 1024 * 1024),
        });
    let status = taskdefs(&addr)
        .await?
        .register_task_definition(pb::RegisterTaskDefinitionRequest { spec: Some(spec) })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("too large"), "{status:?}");
    // The same from an unauthenticated caller.
    let status = AgentServiceClient::new(tls_channel(&addr, None).await?)
        .register_instance(pb::RegisterInstanceRequest {
            hostname: "h".repeat(2 * 1024 * 1024),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");

    // Headers over 16 KiB in all are refused; small ones pass.
    let mut client = taskdefs(&addr).await?;
    let with_pad = |bytes: usize| {
        let mut request = tonic::Request::new(pb::ListTaskDefinitionsRequest::default());
        request
            .metadata_mut()
            .insert("x-pad", "p".repeat(bytes).parse().unwrap());
        request
    };
    client.list_task_definitions(with_pad(1024)).await?;
    let refused = client.list_task_definitions(with_pad(20 * 1024)).await;
    assert!(refused.is_err(), "a 20 KiB header was accepted");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_binary_streams_and_matches_its_published_sha256() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let binary = dir.path().join("berth-agent");
    // 5 MiB that no two chunks share, so a reordered or cut stream shows.
    let data: Vec<u8> = (0..5 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&binary, &data)?;
    // The log driver is served from beside the agent binary.
    let driver = dir.path().join("berth-logd");
    std::fs::write(&driver, b"log driver")?;
    let arg = binary.display().to_string();
    let cluster = TestCluster::start(1, &["--agent-binary", &arg]).await?;
    let addr = cluster.addr(1);
    let ca = test_pki().dir.join("ca.crt");
    let curl = |path: &str, out: &std::path::Path| {
        let done = std::process::Command::new("curl")
            .args(["-sS", "--fail", "--cacert"])
            .arg(&ca)
            .arg("-o")
            .arg(out)
            .arg(format!("https://{addr}{path}"))
            .output()
            .expect("run curl");
        assert!(
            done.status.success(),
            "curl {path}: {}",
            String::from_utf8_lossy(&done.stderr)
        );
    };
    let got = dir.path().join("got");
    curl("/downloads/berth-agent", &got);
    assert!(
        std::fs::read(&got)? == data,
        "the download differs from the file"
    );
    let sum = dir.path().join("sum");
    curl("/downloads/berth-agent.sha256", &sum);
    // The installer's check: sha256sum's own format, verified by sha256sum.
    let line = std::fs::read_to_string(&sum)?;
    assert!(line.ends_with("  berth-agent\n"), "{line:?}");
    let check = std::process::Command::new("sha256sum").arg(&got).output()?;
    let local = String::from_utf8(check.stdout)?;
    assert_eq!(
        local.split(' ').next(),
        line.split(' ').next(),
        "{local} vs {line}"
    );

    // A changed binary gets a new checksum (not a stale cached one).
    std::fs::write(&binary, b"changed")?;
    curl("/downloads/berth-agent.sha256", &sum);
    let changed = std::fs::read_to_string(&sum)?;
    assert_ne!(changed, line);
    assert!(changed.starts_with("d67e2e94"), "{changed}");

    let got_driver = dir.path().join("got-driver");
    curl("/downloads/berth-logd", &got_driver);
    assert_eq!(std::fs::read(&got_driver)?, b"log driver");
    curl("/downloads/berth-logd.sha256", &sum);
    let driver_line = std::fs::read_to_string(&sum)?;
    assert!(driver_line.ends_with("  berth-logd\n"), "{driver_line:?}");
    let check = std::process::Command::new("sha256sum")
        .arg(&got_driver)
        .output()?;
    let local = String::from_utf8(check.stdout)?;
    assert_eq!(local.split(' ').next(), driver_line.split(' ').next());
    Ok(())
}

/// One refusal: the code, and the field named in the message.
fn refused<T: std::fmt::Debug>(result: Result<T, tonic::Status>, field: &str) {
    let status = result.expect_err("over its limit");
    assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
    assert!(
        status.message().contains(field) && status.message().contains("limit"),
        "{field}: {}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bounded_field_is_refused_naming_its_limit() -> Result<()> {
    use berth_proto::pb::auth_service_client::AuthServiceClient;
    use berth_proto::pb::instance_service_client::InstanceServiceClient;
    use berth_proto::pb::task_service_client::TaskServiceClient;

    let cluster = TestCluster::start(1, &["--anonymous-rate", "0"]).await?;
    let addr = cluster.addr(1);
    let long = |n: usize| "x".repeat(n);
    let before = last_log_index(&addr).await?;

    let mut agents = AgentServiceClient::new(tls_channel(&addr, None).await?);
    let (_, csr_pem) = berth_pki::generate_csr("agent").unwrap();
    let base = registration("a-1", "secret", &csr_pem);
    for (request, field) in [
        (
            pb::RegisterInstanceRequest {
                activation_secret: long(257),
                ..base.clone()
            },
            "activationSecret",
        ),
        (
            pb::RegisterInstanceRequest {
                csr_pem: long(16 * 1024 + 1),
                ..base.clone()
            },
            "csrPem",
        ),
        (
            pb::RegisterInstanceRequest {
                previous_instance_id: long(129),
                ..base.clone()
            },
            "previousInstanceId",
        ),
        (
            pb::RegisterInstanceRequest {
                hostname: long(256),
                ..base.clone()
            },
            "hostname",
        ),
    ] {
        refused(agents.register_instance(request).await, field);
    }

    let mut activations = ActivationServiceClient::new(channel(&addr).await?);
    refused(
        activations
            .create_activation(pb::CreateActivationRequest {
                description: long(1025),
                ..Default::default()
            })
            .await,
        "description",
    );
    refused(
        activations
            .revoke_activation(pb::RevokeActivationRequest { id: long(129) })
            .await,
        "id",
    );
    refused(
        AuthServiceClient::new(channel(&addr).await?)
            .create_api_token(pb::CreateApiTokenRequest {
                role: "readonly".into(),
                description: long(1025),
                expires_in_secs: 0,
                ..Default::default()
            })
            .await,
        "description",
    );
    let mut instances = InstanceServiceClient::new(channel(&addr).await?);
    refused(
        instances
            .put_instance_attributes(pb::PutInstanceAttributesRequest {
                id: "i-1".into(),
                attributes: (0..65)
                    .map(|i| pb::Attribute {
                        name: format!("a{i}"),
                        value: "v".into(),
                    })
                    .collect(),
            })
            .await,
        "attributes",
    );
    refused(
        instances
            .delete_instance_attributes(pb::DeleteInstanceAttributesRequest {
                id: "i-1".into(),
                names: vec![long(129)],
            })
            .await,
        "names[0]",
    );
    let mut tasks = TaskServiceClient::new(channel(&addr).await?);
    refused(
        tasks
            .stop_task(pb::StopTaskRequest {
                id: "t-1".into(),
                reason: long(1025),
            })
            .await,
        "reason",
    );
    refused(
        tasks
            .run_task(pb::RunTaskRequest {
                task_definition: "web".into(),
                overrides: vec![format!("app.env.K={}", long(8 * 1024))],
                ..Default::default()
            })
            .await,
        "overrides[0]",
    );
    assert_eq!(
        last_log_index(&addr).await?,
        before,
        "a refused request reached the log"
    );
    Ok(())
}
