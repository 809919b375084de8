//! End-to-end: the journal on a real 3-server cluster. Every server tells
//! the same history (events and audit records), each call is audited
//! exactly once with the actor the server derived, a reader resumes
//! exactly after its cursor, a follower hears new events, and a restarted
//! server (state from its snapshot and log) tells the same history.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use anyhow::Result;
use berth_e2e::*;
use berth_pki::tokens::ApiTokenSecret;
use berth_proto::pb;
use berth_proto::pb::auth_service_client::AuthServiceClient;
use berth_proto::pb::cluster_service_client::ClusterServiceClient;
use berth_proto::pb::event_service_client::EventServiceClient;
use berth_proto::pb::task_definition_service_client::TaskDefinitionServiceClient;
use tonic::Code;

async fn events_of(addr: &str, request: pb::WatchEventsRequest) -> Result<Vec<pb::JournalEvent>> {
    let mut stream = EventServiceClient::new(channel(addr).await?)
        .watch_events(request)
        .await?
        .into_inner();
    let mut all = Vec::new();
    while let Some(page) = stream.message().await? {
        all.extend(page.events);
    }
    Ok(all)
}

async fn audit_of(addr: &str, since_ms: i64) -> Result<pb::ListAuditRecordsResponse> {
    Ok(EventServiceClient::new(channel(addr).await?)
        .list_audit_records(pb::ListAuditRecordsRequest {
            since_ms,
            ..Default::default()
        })
        .await?
        .into_inner())
}

/// `principal operation outcome code resource`, one line per record, for
/// comparing what was audited with what was done.
fn line(r: &pb::AuditRecord) -> String {
    let actor = r.actor.clone().unwrap_or_default();
    let who = if r.claimed.is_empty() {
        actor.principal
    } else {
        format!("{} claiming {}", actor.principal, r.claimed)
    };
    format!(
        "{who} {} {} {} {}",
        actor.operation, r.outcome, r.code, r.resource
    )
    .trim_end()
    .to_string()
}

fn register(family: &str) -> pb::RegisterTaskDefinitionRequest {
    pb::RegisterTaskDefinitionRequest {
        spec: Some(spec(family, "journal")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_server_tells_the_same_history_and_audits_each_call_once() -> Result<()> {
    // Small snapshots, so the restarted server rebuilds from one.
    let mut cluster =
        TestCluster::start(3, &["--snapshot-threshold", "10", "--keep-logs", "0"]).await?;
    cluster.wait_for_leader(Duration::from_secs(15)).await?;
    let addrs: Vec<String> = (1..=3).map(|id| cluster.addr(id)).collect();
    let admin = test_pki().admin_token.clone();
    let admin_id = ApiTokenSecret::parse(&admin).unwrap().id;
    let started_ms = berth_client::time::now_ms() - 1_000;

    // Admin calls, each on another server.
    let created = AuthServiceClient::new(channel(&addrs[0]).await?)
        .create_api_token(pb::CreateApiTokenRequest {
            role: "readonly".into(),
            description: "auditors".into(),
            expires_in_secs: 0,
            ..Default::default()
        })
        .await?
        .into_inner();
    let readonly = created.secret.clone();
    let readonly_id = created.token.unwrap().id;
    ClusterServiceClient::new(channel(&addrs[1]).await?)
        .create_cluster(pb::CreateClusterRequest {
            name: "audited".into(),
            ..Default::default()
        })
        .await?;
    TaskDefinitionServiceClient::new(channel(&addrs[2]).await?)
        .register_task_definition(register("ledger"))
        .await?;

    // A readonly read is not a change and is not audited; a readonly write
    // is refused and is.
    TaskDefinitionServiceClient::new(channel_as(&addrs[0], Some(&readonly)).await?)
        .list_task_definitions(pb::ListTaskDefinitionsRequest::default())
        .await?;
    let refused = TaskDefinitionServiceClient::new(channel_as(&addrs[0], Some(&readonly)).await?)
        .register_task_definition(register("ledger"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    // A token that does not verify: refused, audited with the id it
    // claimed and never its secret.
    let forged = ApiTokenSecret {
        id: "f00d".into(),
        secret: "deadbeefdeadbeef".into(),
    }
    .encode();
    let unauthenticated =
        TaskDefinitionServiceClient::new(channel_as(&addrs[1], Some(&forged)).await?)
            .register_task_definition(register("ledger"))
            .await
            .unwrap_err();
    assert_eq!(unauthenticated.code(), Code::Unauthenticated);
    // An admin call with bad input: refused before it became a command.
    let invalid = TaskDefinitionServiceClient::new(channel(&addrs[2]).await?)
        .register_task_definition(register(""))
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
    AuthServiceClient::new(channel(&addrs[1]).await?)
        .revoke_api_token(pb::RevokeApiTokenRequest {
            id: readonly_id.clone(),
        })
        .await?;

    // The audit log: the same on every server, each call exactly once.
    let admin_who = format!("token:{admin_id}");
    let expected = vec![
        format!("{admin_who} CreateApiToken applied  token/{readonly_id}"),
        format!("{admin_who} CreateCluster applied  cluster/audited"),
        format!("{admin_who} RegisterTaskDefinition applied  task-definition/ledger:1"),
        format!("token:{readonly_id} RegisterTaskDefinition refused PermissionDenied"),
        "anonymous claiming token:f00d RegisterTaskDefinition refused Unauthenticated".to_string(),
        format!("{admin_who} RegisterTaskDefinition refused InvalidArgument"),
        format!("{admin_who} RevokeApiToken applied  token/{readonly_id}"),
    ];
    let mut answers = Vec::new();
    for addr in &addrs {
        let reply = audit_of(addr, started_ms).await?;
        assert!(reply.unreachable.is_empty(), "{:?}", reply.unreachable);
        // The bootstrap token's creation and the servers' own work are
        // older or not calls; only this test's calls are compared.
        let lines: Vec<String> = reply.records.iter().map(line).collect();
        assert_eq!(lines, expected, "audit log as server {addr} tells it");
        let json = format!("{:?}", reply.records);
        assert!(!json.contains(&readonly), "a token secret leaked: {json}");
        assert!(!json.contains("deadbeef"), "a forged secret leaked: {json}");
        answers.push(reply.records);
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "servers disagree");
    // Refused calls carry where they came from and which server saw them.
    let denied = &answers[0][3];
    assert_eq!(denied.server_id, 1);
    assert!(denied
        .actor
        .as_ref()
        .unwrap()
        .peer
        .starts_with("127.0.0.1:"));
    assert_eq!(answers[0][0].server_id, 0, "applied calls are replicated");

    // Events: the same on every server, with who caused them.
    let all = pb::WatchEventsRequest::default();
    let history = events_of(&addrs[0], all.clone()).await?;
    for addr in &addrs[1..] {
        assert_eq!(events_of(addr, all.clone()).await?, history);
    }
    let find = |resource: &str| {
        history
            .iter()
            .find(|e| e.resource == resource)
            .unwrap_or_else(|| panic!("no event about {resource}: {history:?}"))
    };
    let cluster_created = find("cluster/audited");
    assert_eq!(cluster_created.r#type, "cluster");
    let actor = cluster_created.actor.clone().unwrap();
    assert_eq!(
        (actor.principal.as_str(), actor.operation.as_str()),
        (admin_who.as_str(), "CreateCluster")
    );
    assert_eq!(find("task-definition/ledger:1").r#type, "task-definition");
    let kinds: Vec<&str> = history.iter().map(|e| e.r#type.as_str()).collect();
    assert!(kinds.contains(&"membership"), "{kinds:?}");
    let token_events: Vec<&str> = history
        .iter()
        .filter(|e| e.resource == format!("token/{readonly_id}"))
        .map(|e| e.summary.as_str())
        .collect();
    assert_eq!(token_events, ["created (readonly)", "revoked"]);

    // Resuming after a cursor gives exactly what followed it.
    let middle = history.len() / 2;
    let resumed = events_of(
        &addrs[2],
        pb::WatchEventsRequest {
            from: history[middle].cursor.clone(),
            ..Default::default()
        },
    )
    .await?;
    assert_eq!(resumed, history[middle + 1..]);
    let only_clusters = events_of(
        &addrs[1],
        pb::WatchEventsRequest {
            types: vec!["cluster".into()],
            ..Default::default()
        },
    )
    .await?;
    assert_eq!(
        only_clusters,
        history
            .iter()
            .filter(|e| e.r#type == "cluster")
            .cloned()
            .collect::<Vec<_>>()
    );

    // A follower hears a change made on another server.
    let mut follow = EventServiceClient::new(channel(&addrs[2]).await?)
        .watch_events(pb::WatchEventsRequest {
            from: history.last().unwrap().cursor.clone(),
            follow: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    ClusterServiceClient::new(channel(&addrs[0]).await?)
        .create_cluster(pb::CreateClusterRequest {
            name: "followed".into(),
            ..Default::default()
        })
        .await?;
    let heard = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let page = follow.message().await?.expect("the stream stays open");
            if let Some(e) = page
                .events
                .iter()
                .find(|e| e.resource == "cluster/followed")
            {
                return Ok::<_, anyhow::Error>(e.clone());
            }
        }
    })
    .await??;
    assert_eq!(heard.summary, "created");

    // A restarted server tells the same history from its snapshot and log.
    let now = events_of(&addrs[0], all.clone()).await?;
    cluster.server(3).terminate()?;
    cluster.server(3).start()?;
    let again = eventually(Duration::from_secs(20), || {
        let addr = addrs[2].clone();
        let all = all.clone();
        async move { events_of(&addr, all).await }
    })
    .await?;
    assert_eq!(again[..now.len()], now[..]);
    Ok(())
}
