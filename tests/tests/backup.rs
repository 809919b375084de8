//! End-to-end online backup and restore with real berthd processes and the
//! real CLI: `berth server backup` from a follower of a running three-server
//! cluster, then `berthd restore` into a new one-server cluster, and what
//! that means for what changed after the backup (docs/operations.md,
//! "Back up and restore").

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::Result;
use berth_client::join::{self, AgentIdentity};
use berth_client::{BerthClient, ClientConfig, ClientError};
use berth_e2e::*;
use berth_types::{Role, ServerRole};

const LONG: Duration = Duration::from_secs(30);

fn client(endpoints: &[String], token: &str) -> BerthClient {
    BerthClient::new(
        ClientConfig::new(endpoints.to_vec())
            .with_ca(test_pki().ca_pem.clone())
            .with_token(token.to_string()),
    )
    .expect("client")
}

fn berthd(args: &[&str]) -> Output {
    Command::new(binary("berthd"))
        .args(args)
        .env_remove("BERTH_CONFIG")
        .output()
        .expect("run berthd")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Registers an instance the way an agent does: activation, CSR, identity.
async fn join(admin: &BerthClient, endpoints: &[String]) -> Result<AgentIdentity> {
    let (_, token) = admin
        .create_activation(None, None, Some(1), &BTreeMap::new(), "backup e2e")
        .await?;
    let token = berth_pki::tokens::JoinToken::parse(&token)?;
    Ok(join::register(endpoints, &token, "host", &BTreeMap::new(), None, None).await?)
}

async fn markers(addr: &str, family: &str) -> Result<BTreeMap<u32, String>> {
    Ok(list_family(addr, family)
        .await?
        .iter()
        .map(|td| (td.revision, marker_of(td)))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_of_a_running_cluster_restores_into_a_new_one_server_cluster() -> Result<()> {
    let mut cluster = TestCluster::start(3, &[]).await?;
    let endpoints: Vec<String> = (1..=3).map(|id| cluster.addr(id)).collect();
    let admin = client(&endpoints, &test_pki().admin_token);

    // Before the backup: five revisions, an API token, an instance.
    let mut before = BTreeMap::new();
    for i in 0..5 {
        let td = register(&endpoints[i % 3], "bk", &format!("before-{i}")).await?;
        before.insert(td.revision, marker_of(&td));
    }
    let (kept, kept_secret) = admin.create_api_token(Role::Admin, "kept", None).await?;
    let kept_instance = join(&admin, &endpoints).await?;
    let (_, readonly) = admin
        .create_api_token(Role::Readonly, "dashboards", None)
        .await?;

    // Taken from a follower, which is as fresh as the leader for it.
    let leader = cluster.wait_for_leader(LONG).await?;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let file = cluster.dir.path().join("state.backup");
    let file_arg = file.display().to_string();
    let denied = berth_cli(
        &cluster.addr(follower),
        &readonly,
        &["server", "backup", "--out", &file_arg],
    );
    assert!(!denied.status.success(), "{}", text(&denied));
    assert!(
        text(&denied).contains("needs an admin token"),
        "{}",
        text(&denied)
    );
    assert!(
        !file.exists(),
        "nothing is written when the backup is refused"
    );
    let out = berth_cli(
        &cluster.addr(follower),
        &test_pki().admin_token,
        &["server", "backup", "--out", &file_arg, "-o", "json"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let saved: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let bytes = std::fs::read(&file)?;
    assert_eq!(saved["bytes"], bytes.len());
    assert_eq!(saved["server"], follower);
    assert_eq!(saved["dataFormat"], 7);
    assert!(saved["appliedIndex"].as_u64().unwrap() > 5, "{saved}");
    assert_eq!(
        saved["sha256"].as_str().unwrap(),
        berth_pki::der_digest(&bytes),
        "the file is what the server sent"
    );
    let mode = std::fs::metadata(&file)?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "a backup holds secrets' hashes");
    // The serving server audited both calls, the refusal and the backup.
    let audit = std::fs::read_to_string(cluster.server(follower).data_dir.join("audit.jsonl"))?;
    let backups: Vec<serde_json::Value> = audit
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|r| r["actor"]["operation"] == "Backup")
        .collect();
    let outcomes: Vec<&str> = backups
        .iter()
        .filter_map(|r| r["outcome"].as_str())
        .collect();
    assert_eq!(outcomes, ["refused", "accepted"], "{audit}");

    // After the backup: more revisions, the token revoked, the instance
    // deregistered, a new token and a new instance.
    for i in 0..2 {
        register(&endpoints[0], "bk", &format!("after-{i}")).await?;
    }
    admin.revoke_api_token(&kept.id).await?;
    let refused = client(&endpoints, &kept_secret).list_clusters().await;
    assert!(
        matches!(refused, Err(ClientError::Unauthenticated(_))),
        "{refused:?}"
    );
    admin
        .deregister_instance(&kept_instance.instance_id)
        .await?;
    let refused = join::ping(&endpoints, &kept_instance).await;
    assert!(
        matches!(refused, Err(ClientError::PermissionDenied(_))),
        "{refused:?}"
    );
    let (_, later_secret) = admin.create_api_token(Role::Admin, "later", None).await?;
    let later_instance = join(&admin, &endpoints).await?;

    // The old cluster is gone; a new server is restored from the backup.
    for id in 1..=3 {
        cluster.server(id).terminate()?;
    }
    let addr = cluster.prepare_joiner(4);
    let data_dir = cluster.server(4).data_dir.display().to_string();
    let out = berthd(&[
        "restore",
        "--from",
        &file_arg,
        "--data-dir",
        &data_dir,
        "--node-id",
        "4",
        "--advertise",
        &addr,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    eprintln!("berthd restore said:\n{}", text(&out));
    let again = berthd(&[
        "restore",
        "--from",
        &file_arg,
        "--data-dir",
        &data_dir,
        "--node-id",
        "4",
    ]);
    assert!(!again.status.success());
    assert!(
        text(&again).contains("already belongs to a server"),
        "{}",
        text(&again)
    );

    cluster.server(4).start()?;
    assert_eq!(cluster.wait_for_leader(LONG).await?, 4);
    let status = eventually(LONG, || status(&addr)).await?;
    assert_eq!(status.members.len(), 1, "{status:?}");
    assert_eq!(status.members[0].node_id, 4);
    assert_eq!(status.members[0].role, ServerRole::Leader);
    let restored = [addr.clone()];

    // Exactly what was there when the backup was taken.
    assert_eq!(markers(&addr, "bk").await?, before);
    // A token revoked after the backup works again; one created after it
    // is unknown.
    client(&restored, &kept_secret).list_clusters().await?;
    let unknown = client(&restored, &later_secret).list_clusters().await;
    assert!(
        matches!(unknown, Err(ClientError::Unauthenticated(_))),
        "{unknown:?}"
    );
    // An instance deregistered after the backup is registered again; one
    // registered after it is refused: its certificate names an instance
    // the restored state never had.
    join::ping(&restored, &kept_instance).await?;
    match join::ping(&restored, &later_instance).await {
        Err(ClientError::PermissionDenied(message)) => {
            assert!(message.contains("is not registered"), "{message}")
        }
        other => panic!("an instance registered after the backup: {other:?}"),
    }
    // Revisions go on from the backup's.
    let td = register(&addr, "bk", "restored").await?;
    assert_eq!(td.revision as usize, before.len() + 1);
    Ok(())
}

/// After `berthd restore` of a backup older than what an agent runs, the
/// agent stops the task the restored state does not know (started after
/// the backup) and removes its container after its cleanup wait, and keeps
/// the one it knows running: the complete assignment set of the restored
/// state wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restore_agents_stop_the_tasks_the_backup_does_not_know() -> Result<()> {
    use berth_e2e::agents::*;
    use berth_proto::pb;
    use berth_types::TaskStatus;
    const T: Duration = Duration::from_secs(60);

    let Some(mut s) = AgentCluster::start("restore", 300, 1).await? else {
        return Ok(());
    };
    let a1 = s.addr(1);
    taskdefs(&a1)
        .await?
        .register_task_definition(pb::RegisterTaskDefinitionRequest {
            spec: Some(testapp_taskdef("sleeper", &s.image, &["sleep"], 32)),
        })
        .await?;
    // A short cleanup wait: a stopped task's containers are kept that long
    // (ECS's task cleanup wait, 10 minutes by default) before removal.
    let mut agent = s
        .agent("restore-1", &[])
        .with_args(&["--task-cleanup-wait", "2s"]);
    agent.start()?;
    let instance = wait_instance_status(&a1, &agent, berth_types::InstanceState::Active, T)
        .await?
        .id;
    let start = |addr: String| {
        let instance = instance.clone();
        async move {
            let reply = tasks_client(&addr)
                .await?
                .start_task(pb::StartTaskRequest {
                    cluster: "restore".into(),
                    task_definition: "sleeper".into(),
                    instance_ids: vec![instance],
                    ..Default::default()
                })
                .await?
                .into_inner();
            Ok::<_, anyhow::Error>(reply.tasks[0].id.clone())
        }
    };
    let container_of = |task: &str, containers: &std::collections::BTreeSet<String>| {
        containers.iter().find(|c| c.starts_with(task)).cloned()
    };

    // A task the backup knows, running when it is taken.
    let kept = start(a1.clone()).await?;
    wait_task_status(&a1, &kept, TaskStatus::Running, T)
        .await
        .map_err(|e| anyhow::anyhow!("{e}; agent log:\n{}", agent.log()))?;
    let file = s.cluster.dir.path().join("restore.backup");
    let file_arg = file.display().to_string();
    let out = berth_cli(
        &a1,
        &test_pki().admin_token,
        &["server", "backup", "--out", &file_arg],
    );
    assert!(out.status.success(), "{}", text(&out));

    // A task started after it.
    let later = start(a1.clone()).await?;
    wait_task_status(&a1, &later, TaskStatus::Running, T).await?;
    let running = s.env.running_containers(&agent.namespace)?;
    let kept_container = container_of(&kept, &running).expect("the kept task runs");
    let later_container = container_of(&later, &running).expect("the later task runs");

    // The cluster is restored from the backup into server 1's data dir
    // (its address, which the agent knows, and its certificate kept).
    for id in 1..=3 {
        s.cluster.server(id).terminate()?;
    }
    let data_dir = s.cluster.server(1).data_dir.clone();
    for entry in std::fs::read_dir(&data_dir)? {
        let path = entry?.path();
        if path.file_name() == Some(std::ffi::OsStr::new("pki")) {
            continue;
        }
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    let out = berthd(&[
        "restore",
        "--from",
        &file_arg,
        "--data-dir",
        &data_dir.display().to_string(),
        "--node-id",
        "1",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    // The agent kept its containers while no server answered.
    let running = s.env.running_containers(&agent.namespace)?;
    assert!(running.contains(&later_container), "{running:?}");
    s.cluster.server(1).start()?;
    assert_eq!(s.cluster.wait_for_leader(LONG).await?, 1);

    // The agent reconnects to the restored server, is told the complete
    // set of its tasks, and stops the one not in it, then removes its
    // container after the cleanup wait.
    eventually(T, || async {
        let running = s.env.running_containers(&agent.namespace)?;
        anyhow::ensure!(
            !running.contains(&later_container),
            "{later_container} still runs: {running:?}"
        );
        Ok(())
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}; agent log:\n{}", agent.log()))?;
    eventually(T, || async {
        let containers = s.env.containers(&agent.namespace)?;
        anyhow::ensure!(
            !containers.contains(&later_container),
            "{later_container} is still there: {containers:?}"
        );
        Ok(())
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}; agent log:\n{}", agent.log()))?;
    let running = s.env.running_containers(&agent.namespace)?;
    assert!(
        running.contains(&kept_container),
        "the task the backup knows keeps running: {running:?}"
    );
    assert!(agent.is_running());
    let unknown = tasks_client(&a1)
        .await?
        .describe_task(pb::DescribeTaskRequest { id: later.clone() })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");
    let task = wait_task_status(&a1, &kept, TaskStatus::Running, T).await?;
    assert_eq!(task.instance_id.as_deref(), Some(instance.as_str()));
    // And it stays so: the same container, not a replacement.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let running = s.env.running_containers(&agent.namespace)?;
    assert!(running.contains(&kept_container), "{running:?}");
    assert_eq!(
        s.env.containers(&agent.namespace)?.len(),
        1,
        "only the kept task's container is left"
    );
    Ok(())
}
