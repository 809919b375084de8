//! End-to-end: secrets on a real 3-server cluster. Sealed by the server
//! that receives them and opened by any other (the data key `pki issue`
//! copies), never in the clear in any server's data dir (Raft log,
//! snapshots), events, audit records or list/describe output; revealed
//! only to admin tokens.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use anyhow::Result;
use berth_e2e::*;
use berth_proto::pb;
use berth_proto::pb::auth_service_client::AuthServiceClient;
use berth_proto::pb::event_service_client::EventServiceClient;
use berth_proto::pb::secret_service_client::SecretServiceClient;
use tonic::Code;

const VALUE: &str = "s3cr3t-Value-4f9a1c";
const NEW_VALUE: &str = "n3w-s3cr3t-77b2e0";

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "berth failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every file under `dir` whose bytes hold `needle`.
fn files_holding(dir: &std::path::Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(path.display().to_string());
                }
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_sealed_revealed_only_to_admins_and_never_leak() -> Result<()> {
    // Small snapshots, so the secrets also land in snapshot files.
    let mut cluster =
        TestCluster::start(3, &["--snapshot-threshold", "5", "--keep-logs", "0"]).await?;
    cluster.wait_for_leader(Duration::from_secs(15)).await?;
    let addrs: Vec<String> = (1..=3).map(|id| cluster.addr(id)).collect();
    let endpoints = addrs.join(",");
    let admin = test_pki().admin_token.clone();
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("value");
    std::fs::write(&file, VALUE)?;

    // Create through the CLI from a file; metadata only in the reply.
    let created = ok(berth_cli(
        &endpoints,
        &admin,
        &[
            "secret",
            "create",
            "db-password",
            "--from-file",
            file.to_str().unwrap(),
            "--description",
            "the app's database",
        ],
    ));
    assert!(created.contains("db-password"), "{created}");
    assert!(!created.contains(VALUE), "{created}");
    let listed = ok(berth_cli(
        &endpoints,
        &admin,
        &["secret", "list", "-o", "json"],
    ));
    assert!(
        listed.contains("db-password") && !listed.contains(VALUE),
        "{listed}"
    );
    let again = berth_cli(
        &endpoints,
        &admin,
        &["secret", "create", "db-password", "--from-literal", "x"],
    );
    assert!(!again.status.success(), "a second create is refused");

    // Every server opens what another sealed (one data key).
    for addr in &addrs {
        let revealed = SecretServiceClient::new(channel(addr).await?)
            .reveal_secret(pb::SecretName {
                name: "db-password".into(),
            })
            .await?
            .into_inner();
        assert_eq!(revealed.value, VALUE.as_bytes());
        assert_eq!(revealed.secret.unwrap().version, 1);
    }
    let revealed = ok(berth_cli(
        &endpoints,
        &admin,
        &["secret", "describe", "db-password", "--reveal"],
    ));
    assert_eq!(revealed, VALUE);

    // A readonly token describes but never reveals.
    let readonly = AuthServiceClient::new(channel(&addrs[0]).await?)
        .create_api_token(pb::CreateApiTokenRequest {
            role: "readonly".into(),
            description: "auditors".into(),
            expires_in_secs: 0,
            ..Default::default()
        })
        .await?
        .into_inner()
        .secret;
    let described = ok(berth_cli(
        &endpoints,
        &readonly,
        &["secret", "describe", "db-password"],
    ));
    assert!(described.contains("the app's database") && !described.contains(VALUE));
    let refused = SecretServiceClient::new(channel_as(&addrs[1], Some(&readonly)).await?)
        .reveal_secret(pb::SecretName {
            name: "db-password".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let refused = berth_cli(
        &endpoints,
        &readonly,
        &["secret", "describe", "db-password", "--reveal"],
    );
    assert!(!refused.status.success());
    assert!(!String::from_utf8_lossy(&refused.stdout).contains(VALUE));
    let refused = SecretServiceClient::new(channel_as(&addrs[2], Some(&readonly)).await?)
        .update_secret(pb::SecretRequest {
            name: "db-password".into(),
            value: b"x".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);

    // Update: a new version, the description kept.
    let updated = ok(berth_cli(
        &endpoints,
        &admin,
        &[
            "secret",
            "update",
            "db-password",
            "--from-literal",
            NEW_VALUE,
            "-o",
            "json",
        ],
    ));
    let updated: serde_json::Value = serde_json::from_str(&updated)?;
    assert_eq!(updated["version"], 2);
    assert_eq!(updated["description"], "the app's database");
    let revealed = ok(berth_cli(
        &endpoints,
        &admin,
        &["secret", "describe", "db-password", "--reveal"],
    ));
    assert_eq!(revealed, NEW_VALUE);
    let bad = berth_cli(
        &endpoints,
        &admin,
        &["secret", "create", "bad name", "--from-literal", "x"],
    );
    assert!(!bad.status.success());

    // Audit records name secret/NAME; neither they nor any event, on any
    // server, holds a value.
    for addr in &addrs {
        let journal = EventServiceClient::new(channel(addr).await?)
            .list_audit_records(pb::ListAuditRecordsRequest::default())
            .await?
            .into_inner();
        let text = format!("{journal:?}");
        assert!(!text.contains(VALUE) && !text.contains(NEW_VALUE), "{text}");
        let resources: Vec<&str> = journal
            .records
            .iter()
            .filter(|r| r.resource.contains("secret"))
            .map(|r| r.resource.as_str())
            .collect();
        assert!(!resources.is_empty(), "secret calls are audited");
        assert!(
            resources.iter().all(|r| *r == "secret/db-password"),
            "{resources:?}"
        );
        let mut stream = EventServiceClient::new(channel(addr).await?)
            .watch_events(pb::WatchEventsRequest::default())
            .await?
            .into_inner();
        while let Some(page) = stream.message().await? {
            let text = format!("{page:?}");
            assert!(!text.contains(VALUE) && !text.contains(NEW_VALUE), "{text}");
        }
    }
    let events = ok(berth_cli(&endpoints, &admin, &["events", "-o", "json"]));
    assert!(!events.contains(VALUE) && !events.contains(NEW_VALUE));

    // Delete; then it is gone everywhere.
    ok(berth_cli(
        &endpoints,
        &admin,
        &["secret", "delete", "db-password"],
    ));
    let gone = SecretServiceClient::new(channel(&addrs[2]).await?)
        .describe_secret(pb::SecretName {
            name: "db-password".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);

    // No server wrote a value in the clear: not in its Raft log, its
    // snapshots, its state or its logs.
    for id in 1..=3u64 {
        cluster.server(id).terminate()?;
    }
    // The scan works: the description (metadata, stored in clear) is found.
    assert!(!files_holding(cluster.dir.path(), b"the app's database").is_empty());
    for needle in [VALUE, NEW_VALUE] {
        let found = files_holding(cluster.dir.path(), needle.as_bytes());
        assert!(found.is_empty(), "{needle} in the clear in {found:?}");
    }
    Ok(())
}

/// A task's `secrets` reach its environment through its agent, and nowhere
/// else: not the task definition, the task's description, events or audit.
/// A task whose secret does not exist fails to start saying which.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_gets_its_secrets_as_environment_and_a_missing_one_fails_it() -> Result<()> {
    use berth_e2e::agents::*;
    use berth_proto::pb::task_definition_service_client::TaskDefinitionServiceClient;
    use berth_types::{StopCode, TaskStatus};
    const T: Duration = Duration::from_secs(60);

    let Some(s) = AgentCluster::start("sec", 300, 2).await? else {
        return Ok(());
    };
    let a1 = s.addr(1);
    SecretServiceClient::new(channel(&a1).await?)
        .create_secret(pb::SecretRequest {
            name: "db-password".into(),
            value: VALUE.as_bytes().to_vec(),
            ..Default::default()
        })
        .await?;
    let with_secret = |family: &str, secret: &str| {
        let mut spec = testapp_taskdef(family, &s.image, &["env"], 32);
        spec.container_definitions[0].secrets = vec![pb::SecretRef {
            name: "DB_PASSWORD".into(),
            value_from: secret.into(),
        }];
        spec
    };
    let mut taskdefs = TaskDefinitionServiceClient::new(channel(&a1).await?);
    for spec in [
        with_secret("envsecret", "db-password"),
        with_secret("nosecret", "no-such-secret"),
    ] {
        taskdefs
            .register_task_definition(pb::RegisterTaskDefinitionRequest { spec: Some(spec) })
            .await?;
    }
    let mut agent = s.agent("sec-1", &[]);
    agent.start()?;
    wait_instance_status(&a1, &agent, berth_types::InstanceState::Active, T).await?;

    let run = |family: &str| pb::RunTaskRequest {
        cluster: "sec".into(),
        task_definition: family.into(),
        count: 1,
        ..Default::default()
    };
    let task = tasks_client(&a1).await?.run_task(run("envsecret")).await?;
    let id = task.into_inner().tasks[0].id.clone();
    let logs = eventually(T, || async {
        let text = task_logs(&s.addr(2), &id).await?;
        anyhow::ensure!(text.contains("DB_PASSWORD="), "not yet: {text:?}");
        Ok(text)
    })
    .await?;
    assert!(
        logs.contains(&format!("DB_PASSWORD={VALUE}")),
        "the container's environment holds the value: {logs}"
    );

    // The definition and the task's description hold the name only.
    let described = TaskDefinitionServiceClient::new(channel(&a1).await?)
        .describe_task_definition(pb::DescribeTaskDefinitionRequest {
            task_definition: "envsecret:1".into(),
        })
        .await?
        .into_inner();
    let text = format!("{described:?}");
    assert!(
        text.contains("db-password") && !text.contains(VALUE),
        "{text}"
    );
    let task = tasks_client(&a1)
        .await?
        .describe_task(pb::DescribeTaskRequest { id: id.clone() })
        .await?
        .into_inner();
    assert!(!format!("{task:?}").contains(VALUE));

    // A missing secret: the task stops, saying which secret.
    let task = tasks_client(&a1).await?.run_task(run("nosecret")).await?;
    let missing = task.into_inner().tasks[0].id.clone();
    let stopped = wait_task_status(&a1, &missing, TaskStatus::Stopped, T).await?;
    assert_eq!(
        stopped.stop_code,
        Some(StopCode::TaskFailedToStart),
        "{stopped:?}"
    );
    assert!(
        stopped.stopped_reason.contains("no-such-secret"),
        "{}",
        stopped.stopped_reason
    );

    // The instance's own certificate gets nothing for a stopped task (the
    // env task has exited) or a task it does not run; a token, nothing.
    wait_task_status(&a1, &id, TaskStatus::Stopped, T).await?;
    let identity = agent.dir.join("identity");
    let cert = std::fs::read_to_string(identity.join("agent.crt"))?;
    let key = std::fs::read_to_string(identity.join("agent.key"))?;
    let mut as_agent = pb::agent_secrets_service_client::AgentSecretsServiceClient::new(
        tls_channel(&a1, Some((&cert, &key))).await?,
    );
    for task_id in [id.clone(), "no-such-task".to_string()] {
        let refused = as_agent
            .get_task_secrets(pb::TaskSecretsRequest { task_id })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
        assert!(!format!("{refused:?}").contains(VALUE));
    }
    let refused =
        pb::agent_secrets_service_client::AgentSecretsServiceClient::new(channel(&a1).await?)
            .get_task_secrets(pb::TaskSecretsRequest {
                task_id: id.clone(),
            })
            .await
            .unwrap_err();
    assert_ne!(refused.code(), Code::Ok);

    // Nothing in the journal or the servers' and agent's logs has the value.
    for addr in [s.addr(1), s.addr(3)] {
        let audit = EventServiceClient::new(channel(&addr).await?)
            .list_audit_records(pb::ListAuditRecordsRequest::default())
            .await?
            .into_inner();
        assert!(!format!("{audit:?}").contains(VALUE));
        let mut stream = EventServiceClient::new(channel(&addr).await?)
            .watch_events(pb::WatchEventsRequest::default())
            .await?
            .into_inner();
        while let Some(page) = stream.message().await? {
            assert!(!format!("{page:?}").contains(VALUE));
        }
    }
    assert!(!s.cluster.logs().contains(VALUE));
    assert!(!agent.log().contains(VALUE));
    Ok(())
}

/// `repositoryCredentials` pulls from a registry that demands basic auth
/// (the test registry with htpasswd); without them the pull is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repository_credentials_pull_from_a_private_registry() -> Result<()> {
    use berth_e2e::agents::*;
    use berth_proto::pb::task_definition_service_client::TaskDefinitionServiceClient;
    use berth_types::{StopCode, TaskStatus};
    const T: Duration = Duration::from_secs(90);

    let vars = [
        "BERTH_TEST_AUTH_REGISTRY",
        "BERTH_TEST_AUTH_USER",
        "BERTH_TEST_AUTH_PASSWORD",
    ];
    let vals: Vec<String> = vars.iter().filter_map(|v| std::env::var(v).ok()).collect();
    if vals.len() != vars.len() {
        // Like the containerd environment: skipped outside CI only.
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but {vars:?} are not set: run `eval \"$(scripts/test-env.sh)\"` first"
        );
        eprintln!("NOTICE: skipping: {vars:?} not set (scripts/test-env.sh)");
        return Ok(());
    }
    let Some(s) = AgentCluster::start("priv", 300, 2).await? else {
        return Ok(());
    };
    let (registry, user, password) = (&vals[0], &vals[1], &vals[2]);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let binary = berth_agent::ocibuild::static_testapp_binary(&root)?;
    let image = format!("{registry}/berth-e2e/private-testapp:v1");
    berth_agent::ocibuild::testapp_image(&binary)?
        .push_insecure_as(&image, Some((user, password)))
        .await?;

    let a1 = s.addr(1);
    SecretServiceClient::new(channel(&a1).await?)
        .create_secret(pb::SecretRequest {
            name: "registry-creds".into(),
            value: serde_json::json!({"username": user, "password": password})
                .to_string()
                .into_bytes(),
            ..Default::default()
        })
        .await?;
    let mut taskdefs = TaskDefinitionServiceClient::new(channel(&a1).await?);
    for (family, credentials) in [("anon", None), ("private", Some("registry-creds"))] {
        let mut spec = testapp_taskdef(family, &image, &["env"], 32);
        spec.container_definitions[0].repository_credentials =
            credentials.unwrap_or_default().to_string();
        taskdefs
            .register_task_definition(pb::RegisterTaskDefinitionRequest { spec: Some(spec) })
            .await?;
    }
    let mut agent = s.agent("priv-1", &[]);
    agent.start()?;
    wait_instance_status(&a1, &agent, berth_types::InstanceState::Active, T).await?;
    let run = |family: &str| pb::RunTaskRequest {
        cluster: "priv".into(),
        task_definition: family.into(),
        count: 1,
        ..Default::default()
    };

    // Without credentials first (the image is not on the host yet).
    let task = tasks_client(&a1).await?.run_task(run("anon")).await?;
    let anon = task.into_inner().tasks[0].id.clone();
    let stopped = wait_task_status(&a1, &anon, TaskStatus::Stopped, T).await?;
    assert_eq!(
        stopped.stop_code,
        Some(StopCode::TaskFailedToStart),
        "{stopped:?}"
    );
    assert!(
        stopped.stopped_reason.contains("CannotPullContainerError"),
        "{}",
        stopped.stopped_reason
    );

    let task = tasks_client(&a1).await?.run_task(run("private")).await?;
    let id = task.into_inner().tasks[0].id.clone();
    let logs = eventually(T, || async {
        let text = task_logs(&a1, &id).await?;
        anyhow::ensure!(text.contains("PATH="), "not yet: {text:?}");
        Ok(text)
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}; agent log:\n{}", agent.log()))?;
    assert!(!logs.contains(password.as_str()));
    assert!(!agent.log().contains(password.as_str()));
    assert!(!s.cluster.logs().contains(password.as_str()));
    Ok(())
}

/// `GetTaskSecrets` answers only the agent of the instance a task runs on,
/// and only while that task exists: another registered agent (its own
/// client certificate) asking for the same running task is refused, and
/// once the task is stopped the right agent is refused too. A refusal never
/// carries the value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_secrets_go_only_to_the_instance_running_the_task_while_it_runs() -> Result<()> {
    use berth_e2e::agents::*;
    use berth_proto::pb::agent_secrets_service_client::AgentSecretsServiceClient;
    use berth_proto::pb::task_definition_service_client::TaskDefinitionServiceClient;
    use berth_types::TaskStatus;
    const T: Duration = Duration::from_secs(60);

    let Some(s) = AgentCluster::start("secown", 300, 2).await? else {
        return Ok(());
    };
    let a1 = s.addr(1);
    SecretServiceClient::new(channel(&a1).await?)
        .create_secret(pb::SecretRequest {
            name: "db-password".into(),
            value: VALUE.as_bytes().to_vec(),
            ..Default::default()
        })
        .await?;
    let mut spec = testapp_taskdef("sleeper", &s.image, &["sleep"], 32);
    spec.container_definitions[0].secrets = vec![pb::SecretRef {
        name: "DB_PASSWORD".into(),
        value_from: "db-password".into(),
    }];
    TaskDefinitionServiceClient::new(channel(&a1).await?)
        .register_task_definition(pb::RegisterTaskDefinitionRequest { spec: Some(spec) })
        .await?;
    let mut runs = s.agent("secown-a", &[]);
    let mut other = s.agent("secown-b", &[]);
    runs.start()?;
    other.start()?;
    let instance = wait_instance_status(&a1, &runs, berth_types::InstanceState::Active, T)
        .await?
        .id;
    wait_instance_status(&a1, &other, berth_types::InstanceState::Active, T).await?;

    let started = tasks_client(&a1)
        .await?
        .start_task(pb::StartTaskRequest {
            cluster: "secown".into(),
            task_definition: "sleeper".into(),
            instance_ids: vec![instance.clone()],
            ..Default::default()
        })
        .await?
        .into_inner();
    let id = started.tasks[0].id.clone();
    wait_task_status(&a1, &id, TaskStatus::Running, T)
        .await
        .map_err(|e| anyhow::anyhow!("{e}; agent log:\n{}", runs.log()))?;

    // Each agent's own identity: the certificate it was issued.
    let as_agent = |agent: &AgentProc| {
        let identity = agent.dir.join("identity");
        let cert = std::fs::read_to_string(identity.join("agent.crt"));
        let key = std::fs::read_to_string(identity.join("agent.key"));
        let addr = a1.clone();
        async move {
            let (cert, key) = (cert?, key?);
            Ok::<_, anyhow::Error>(AgentSecretsServiceClient::new(
                tls_channel(&addr, Some((&cert, &key))).await?,
            ))
        }
    };
    let ask = |task_id: &str| pb::TaskSecretsRequest {
        task_id: task_id.to_string(),
    };

    // The instance running it gets the value (so the refusals below are
    // about who asks, not a broken channel).
    let granted = as_agent(&runs)
        .await?
        .get_task_secrets(ask(&id))
        .await?
        .into_inner();
    assert_eq!(granted.secrets.len(), 1, "{:?}", granted.secrets.len());
    assert_eq!(granted.secrets[0].name, "db-password");
    assert_eq!(granted.secrets[0].value, VALUE.as_bytes());

    // Another registered instance, asking for the same running task.
    let refused = as_agent(&other)
        .await?
        .get_task_secrets(ask(&id))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    // (The status's Debug output has its message, details and metadata.)
    assert!(!format!("{refused:?}").contains(VALUE), "{refused:?}");

    // Stopped: refused to its own instance as soon as it is being stopped,
    // and still once it is STOPPED.
    tasks_client(&a1)
        .await?
        .stop_task(pb::StopTaskRequest {
            id: id.clone(),
            reason: "secrets e2e".into(),
        })
        .await?;
    let refused = as_agent(&runs)
        .await?
        .get_task_secrets(ask(&id))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(!format!("{refused:?}").contains(VALUE), "{refused:?}");
    wait_task_status(&a1, &id, TaskStatus::Stopped, T).await?;
    for agent in [&runs, &other] {
        let refused = as_agent(agent)
            .await?
            .get_task_secrets(ask(&id))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
        assert!(!format!("{refused:?}").contains(VALUE), "{refused:?}");
    }
    assert!(!s.cluster.logs().contains(VALUE));
    assert!(!runs.log().contains(VALUE));
    assert!(!other.log().contains(VALUE));
    Ok(())
}
