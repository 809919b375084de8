//! The gRPC API as a client outside the Rust workspace sees it: Python
//! stubs generated from `proto/` (tests/python/grpc_client_test.py) against
//! a real berthd, and server reflection, which needs no token, is not
//! rate-limited with anonymous registrations, and is never audited.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use berth_e2e::*;
use berth_proto::pb;
use berth_proto::pb::agent_service_client::AgentServiceClient;
use berth_proto::pb::event_service_client::EventServiceClient;
use tonic::Code;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

/// A Python that can import grpcio and protobuf: `BERTH_TEST_PYTHON`, else
/// Debian's (where scripts/install-deps.sh puts python3-grpcio), else the
/// first `python3` on PATH. `None` outside CI skips the test; under
/// CI=true a missing one fails it.
fn python() -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = match std::env::var_os("BERTH_TEST_PYTHON") {
        Some(p) => vec![p.into()],
        None => vec!["/usr/bin/python3".into(), "python3".into()],
    };
    let found = candidates.into_iter().find(|python| {
        std::process::Command::new(python)
            .args(["-c", "import grpc, google.protobuf"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but no python3 with grpcio and protobuf: run scripts/install-deps.sh"
        );
        eprintln!(
            "NOTICE: skipping: no python3 with grpcio and protobuf (scripts/install-deps.sh)"
        );
    }
    found
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// The names reflection lists, asked without a token.
async fn reflected_services(addr: &str) -> Result<Vec<String>> {
    let mut client = ServerReflectionClient::new(tls_channel(addr, None).await?);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = client
        .server_reflection_info(futures::stream::iter([request]))
        .await?
        .into_inner();
    let Some(reply) = replies.message().await? else {
        bail!("reflection closed the stream without answering");
    };
    match reply.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            Ok(list.service.into_iter().map(|s| s.name).collect())
        }
        other => bail!("reflection answered {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_generated_from_proto_drives_the_api() -> Result<()> {
    let Some(python) = python() else {
        return Ok(());
    };
    // A burst of one unauthenticated call, refilled every 100 s: enough to
    // show that reflection is not counted with them.
    let cluster =
        TestCluster::start(1, &["--anonymous-rate", "0.01", "--anonymous-burst", "1"]).await?;
    let addr = cluster.addr(1);
    let started_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;

    // Use up the anonymous budget with bogus registrations.
    let mut agents = AgentServiceClient::new(tls_channel(&addr, None).await?);
    let mut exhausted = false;
    for _ in 0..3 {
        let refused = agents
            .register_instance(pb::RegisterInstanceRequest {
                activation_id: "no-such-activation".into(),
                activation_secret: "wrong".into(),
                ..Default::default()
            })
            .await
            .expect_err("a bogus registration is refused");
        exhausted |= refused.code() == Code::ResourceExhausted;
    }
    assert!(exhausted, "the anonymous rate limit is in force");

    // Reflection still answers, again and again, without a token.
    for _ in 0..5 {
        let services = reflected_services(&addr).await?;
        for wanted in [
            "berth.v1.ClusterService",
            "berth.v1.TaskDefinitionService",
            "berth.v1.ServiceService",
            "berth.v1.EventService",
        ] {
            assert!(
                services.iter().any(|s| s == wanted),
                "reflection lists {wanted}: {services:?}"
            );
        }
    }

    let script = repo_root().join("tests/python/grpc_client_test.py");
    let child = tokio::process::Command::new(&python)
        .arg(&script)
        .arg("--address")
        .arg(&addr)
        .arg("--ca-cert")
        .arg(test_pki().dir.join("ca.crt"))
        .arg("--proto-dir")
        .arg(repo_root().join("proto"))
        .env("BERTH_TOKEN", &test_pki().admin_token)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), child)
        .await
        .context("the Python client did not finish in 180 s")?
        .with_context(|| format!("run {}", python.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the Python client failed ({}):\n{stdout}\n{stderr}\n--- server log:\n{}",
        out.status,
        cluster.logs()
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");

    // Reflection is neither refused nor audited; the calls above were.
    let audit = EventServiceClient::new(channel(&addr).await?)
        .list_audit_records(pb::ListAuditRecordsRequest {
            since_ms: started_ms,
            ..Default::default()
        })
        .await?
        .into_inner();
    let operations: Vec<String> = audit
        .records
        .iter()
        .map(|r| {
            let actor = r.actor.clone().unwrap_or_default();
            format!("{} {} {}", actor.operation, r.outcome, r.code)
        })
        .collect();
    assert!(
        !operations.iter().any(|o| o.contains("Reflection")),
        "reflection calls are not audited: {operations:#?}"
    );
    for wanted in [
        "RegisterInstance refused ResourceExhausted",
        "RegisterTaskDefinition applied",
        "CreateCluster applied",
        "DeleteCluster refused PermissionDenied",
    ] {
        assert!(
            operations.iter().any(|o| o.trim_end() == wanted),
            "audited: {wanted}: {operations:#?}"
        );
    }
    Ok(())
}

/// docs/api.md's Rust example (`crates/client/examples/grpc_hello.rs`,
/// built by `cargo test` like every example), run against a real server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_example_of_the_api_docs_runs() -> Result<()> {
    let cluster = TestCluster::start(1, &[]).await?;
    let example = try_binary("examples/grpc_hello")?;
    let out = std::process::Command::new(&example)
        .env("BERTH_ENDPOINT", cluster.addr(1))
        .env("BERTH_CA", test_pki().dir.join("ca.crt"))
        .env("BERTH_TOKEN", &test_pki().admin_token)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("registered hello-rust:1"), "{stdout}");
    assert!(stdout.contains("families: hello-rust"), "{stdout}");
    assert!(
        stdout.contains("refused: InvalidArgument: ") && stdout.contains("containerDefinitions"),
        "{stdout}"
    );
    let stored = list_family(&cluster.addr(1), "hello-rust").await?;
    assert_eq!(stored.len(), 1);
    Ok(())
}
