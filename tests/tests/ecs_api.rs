//! Conformance of the ECS-compatible API (`berthd --ecs-listen`), written
//! from the ECS API reference and AWS's SigV4 rules: response shapes,
//! error types and HTTP codes, pagination, names and ARNs, `failures[]`,
//! roles, and the signature's edge cases, against three real servers over
//! HTTPS, any of which answers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use berth_e2e::ecs::{aws_key_of, create_aws_key, create_token, AwsKey, EcsClient};
use berth_e2e::*;
use berth_proto::pb;
use berth_proto::pb::event_service_client::EventServiceClient;
use serde_json::json;

const ARN_PREFIX: &str = "arn:aws:ecs:eu-west-1:000000000000:";

async fn cluster_with_ecs() -> Result<(TestCluster, Vec<SocketAddr>)> {
    let port = free_port();
    let listen = format!("127.0.0.{{id}}:{port}");
    let cluster = TestCluster::start(3, &["--ecs-listen", &listen]).await?;
    let addrs = (1..=3)
        .map(|id| format!("127.0.0.{id}:{port}").parse().unwrap())
        .collect();
    Ok((cluster, addrs))
}

fn endpoints(cluster: &TestCluster) -> String {
    (1..=3)
        .map(|id| cluster.addr(id))
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::test(flavor = "multi_thread")]
async fn ecs_api_answers_as_the_reference_says() -> Result<()> {
    let (cluster, addrs) = cluster_with_ecs().await?;
    let admin_key = create_aws_key(&endpoints(&cluster), "admin")?;
    let readonly_key = create_aws_key(&endpoints(&cluster), "readonly")?;
    let admin = EcsClient::new(addrs[0], admin_key.clone())?;

    // CreateCluster answers ECS's Cluster, with an ARN in the signed region.
    let created = admin
        .call("CreateCluster", json!({"clusterName": "ecs-a"}))
        .await?;
    assert_eq!(created.status, 200, "{:?}", created.body);
    assert_eq!(
        created.body["cluster"]["clusterArn"],
        format!("{ARN_PREFIX}cluster/ecs-a")
    );
    assert_eq!(created.body["cluster"]["status"], "ACTIVE");
    assert_eq!(created.body["cluster"]["runningTasksCount"], 0);
    // Creating it again answers the same cluster, as ECS does.
    let again = admin
        .call("CreateCluster", json!({"clusterName": "ecs-a"}))
        .await?;
    assert_eq!(again.status, 200, "{:?}", again.body);
    for name in ["ecs-b", "ecs-c"] {
        let r = admin
            .call("CreateCluster", json!({"clusterName": name}))
            .await?;
        assert_eq!(r.status, 200, "{:?}", r.body);
    }

    // Names and ARNs both; a missing one is a failure, not an error. A
    // follower answers (the write above was made through server 1).
    let follower = EcsClient::new(addrs[2], admin_key.clone())?;
    let described = eventually(Duration::from_secs(10), || {
        let follower = follower.clone();
        async move {
            let r = follower
                .call(
                    "DescribeClusters",
                    json!({
                        "clusters": ["ecs-a", format!("{ARN_PREFIX}cluster/ecs-b"), "nope"],
                        "include": ["STATISTICS"]
                    }),
                )
                .await?;
            anyhow::ensure!(r.status == 200, "{:?}", r.body);
            Ok(r)
        }
    })
    .await?;
    let names: Vec<&str> = described.body["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["clusterName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ecs-a", "ecs-b"]);
    assert_eq!(
        described.body["failures"],
        json!([{"arn": format!("{ARN_PREFIX}cluster/nope"), "reason": "MISSING"}])
    );
    assert_eq!(
        described.body["clusters"][0]["statistics"][0]["name"],
        "runningEC2TasksCount"
    );

    // Pagination: pages of 2 in name order, each token resuming after the
    // last, until no nextToken.
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..5 {
        let mut body = json!({"maxResults": 2});
        if let Some(t) = &token {
            body["nextToken"] = json!(t);
        }
        let page = admin.call("ListClusters", body).await?;
        assert_eq!(page.status, 200, "{:?}", page.body);
        let arns = page.body["clusterArns"].as_array().unwrap();
        assert!(arns.len() <= 2);
        seen.extend(arns.iter().map(|a| a.as_str().unwrap().to_string()));
        token = page.body["nextToken"].as_str().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    let expected: Vec<String> = ["default", "ecs-a", "ecs-b", "ecs-c"]
        .iter()
        .map(|n| format!("{ARN_PREFIX}cluster/{n}"))
        .collect();
    assert_eq!(seen, expected);
    let bad = admin
        .call("ListClusters", json!({"maxResults": 101}))
        .await?;
    assert_eq!(
        (bad.status, bad.error_type()),
        (400, "InvalidParameterException")
    );
    let bad = admin
        .call("ListClusters", json!({"nextToken": "zz"}))
        .await?;
    assert_eq!(bad.error_type(), "InvalidParameterException");

    // Error types and codes.
    let missing = admin
        .call("DeleteCluster", json!({"cluster": "nope"}))
        .await?;
    assert_eq!(
        (missing.status, missing.error_type()),
        (400, "ClusterNotFoundException"),
        "{:?}",
        missing.body
    );
    let wrong_arn = admin
        .call(
            "DeleteCluster",
            json!({"cluster": format!("{ARN_PREFIX}service/ecs-a/web")}),
        )
        .await?;
    assert_eq!(wrong_arn.error_type(), "InvalidParameterException");
    let deleted = admin
        .call(
            "DeleteCluster",
            json!({"cluster": format!("{ARN_PREFIX}cluster/ecs-c")}),
        )
        .await?;
    assert_eq!(deleted.status, 200, "{:?}", deleted.body);
    assert_eq!(deleted.body["cluster"]["status"], "INACTIVE");
    let unsupported = admin
        .call(
            "CreateCluster",
            json!({"clusterName": "x", "capacityProviders": ["FARGATE"]}),
        )
        .await?;
    assert_eq!(
        (unsupported.status, unsupported.error_type()),
        (400, "UnsupportedFeatureException")
    );
    assert!(
        unsupported.message().contains("install-agent.sh"),
        "says what to use instead: {}",
        unsupported.message()
    );
    let unsupported_op = admin
        .call("CreateCapacityProvider", json!({"name": "x"}))
        .await?;
    assert_eq!(unsupported_op.error_type(), "UnsupportedFeatureException");
    let unknown = admin.call("MakeCoffee", json!({})).await?;
    assert_eq!(
        (unknown.status, unknown.error_type()),
        (400, "UnknownOperationException")
    );
    let mut garbled = admin.signed("ListClusters", &json!({}))?;
    garbled.body = b"{not json".to_vec();
    // Re-signed so that only the body's shape is wrong.
    let resigned = resign(&admin, garbled.body.clone())?;
    let r = admin.send(resigned).await?;
    assert_eq!(
        (r.status, r.error_type()),
        (400, "SerializationException"),
        "{:?}",
        r.body
    );

    // HTTP/2 (ALPN h2) too: the host is signed as `:authority` carries it.
    let h2 = EcsClient::http2(addrs[0], admin_key.clone())?;
    let over_h2 = h2.call("ListClusters", json!({})).await?;
    assert_eq!(over_h2.status, 200, "{:?}", over_h2.body);
    assert!(over_h2.body["clusterArns"].as_array().unwrap().len() >= 3);

    // Roles: a readonly key reads and may not write.
    let readonly = admin.with_key(readonly_key.clone());
    let listed = readonly.call("ListClusters", json!({})).await?;
    assert_eq!(listed.status, 200, "{:?}", listed.body);
    let denied = readonly
        .call("CreateCluster", json!({"clusterName": "ro"}))
        .await?;
    assert_eq!(
        (denied.status, denied.error_type()),
        (400, "AccessDeniedException")
    );

    // SigV4's edge cases.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let body = json!({});
    let wrong_secret =
        admin.signed_at("ListClusters", &body, now, "not-the-secret", "eu-west-1")?;
    let r = admin.send(wrong_secret).await?;
    assert_eq!(
        (r.status, r.error_type()),
        (403, "InvalidSignatureException"),
        "{:?}",
        r.body
    );
    // Signed for one region, claimed for another.
    let mut wrong_scope =
        admin.signed_at("ListClusters", &body, now, &admin_key.secret, "eu-west-1")?;
    for (name, value) in wrong_scope.headers.iter_mut() {
        if name == "authorization" {
            *value = value.replace("/eu-west-1/", "/us-east-1/");
        }
    }
    let r = admin.send(wrong_scope).await?;
    assert_eq!(
        (r.status, r.error_type()),
        (403, "InvalidSignatureException")
    );
    let expired = admin.signed_at(
        "ListClusters",
        &body,
        now - 900,
        &admin_key.secret,
        "eu-west-1",
    )?;
    let r = admin.send(expired).await?;
    assert_eq!(
        (r.status, r.error_type()),
        (403, "InvalidSignatureException")
    );
    assert!(r.message().contains("expired"), "{}", r.message());
    let mut tampered = admin.signed("CreateCluster", &json!({"clusterName": "ok"}))?;
    tampered.body = serde_json::to_vec(&json!({"clusterName": "evil"}))?;
    let r = admin.send(tampered).await?;
    assert_eq!(
        (r.status, r.error_type()),
        (403, "InvalidSignatureException")
    );
    let mut unsigned = admin.signed("ListClusters", &body)?;
    unsigned.headers.retain(|(n, _)| n != "authorization");
    let r = admin.send(unsigned).await?;
    assert_eq!(
        (r.status, r.error_type()),
        (403, "MissingAuthenticationTokenException")
    );
    let mut no_date = admin.signed("ListClusters", &body)?;
    no_date.headers.retain(|(n, _)| n != "x-amz-date");
    let r = admin.send(no_date).await?;
    assert_eq!(r.status / 100, 4, "{:?}", r.body);
    let stranger = admin.with_key(AwsKey {
        id: "BKIA0000000000000000".into(),
        secret: "x".into(),
    });
    let r = stranger.call("ListClusters", json!({})).await?;
    assert_eq!(
        (r.status, r.error_type()),
        (400, "UnrecognizedClientException")
    );
    // A bearer token is not an access key, even signing with its secret.
    let bearer = create_token(
        &endpoints(&cluster),
        &["--role", "admin", "--description", "bearer"],
    )?;
    let bearer_key = admin.with_key(AwsKey {
        id: bearer["apiToken"]["id"].as_str().unwrap().into(),
        secret: bearer["token"].as_str().unwrap().into(),
    });
    let r = bearer_key.call("ListClusters", json!({})).await?;
    assert_eq!(
        (r.status, r.error_type()),
        (400, "UnrecognizedClientException"),
        "{:?}",
        r.body
    );
    // And an AWS key is no bearer token on the gRPC API.
    let out = berth_cli(
        &endpoints(&cluster),
        &format!("berth_{}_{}", admin_key.id, admin_key.secret),
        &["cluster", "list"],
    );
    assert!(!out.status.success(), "an AWS key worked as a bearer token");
    // Revoking the key through Berth's own API refuses it at once.
    let out = berth_cli(
        &endpoints(&cluster),
        &test_pki().admin_token,
        &["auth", "token", "revoke", &readonly_key.id],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = readonly.call("ListClusters", json!({})).await?;
    assert_eq!(r.status, 400, "a revoked key is refused: {:?}", r.body);
    assert!(r.message().contains("revoked"), "{}", r.message());
    no_state_changed_by_refusals(&admin).await?;

    // An expired key: refused as AWS refuses one.
    let short = admin.with_key(aws_key_of(&create_token(
        &endpoints(&cluster),
        &[
            "--role",
            "admin",
            "--format",
            "aws",
            "--description",
            "short",
            "--expires",
            "1s",
        ],
    )?)?);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = short.call("ListClusters", json!({})).await?;
    assert_eq!(
        (r.status, r.error_type()),
        (400, "ExpiredTokenException"),
        "{:?}",
        r.body
    );

    // Audited like gRPC calls: applied changes in the replicated log with
    // the key as the actor, refusals in the serving server's file, with the
    // key id they claimed and never a secret.
    let audit = EventServiceClient::new(channel(&cluster.addr(1)).await?)
        .list_audit_records(pb::ListAuditRecordsRequest::default())
        .await?
        .into_inner()
        .records;
    let applied = audit.iter().find(|r| {
        r.outcome == "applied"
            && r.resource == "cluster/ecs-a"
            && r.actor.as_ref().is_some_and(|a| {
                a.principal == format!("token:{}", admin_key.id) && a.operation == "CreateCluster"
            })
    });
    assert!(
        applied.is_some(),
        "CreateCluster through ECS is audited: {audit:?}"
    );
    let denied = audit.iter().find(|r| {
        r.outcome == "refused"
            && r.code == "AccessDeniedException"
            && r.actor
                .as_ref()
                .is_some_and(|a| a.principal == format!("token:{}", readonly_key.id))
    });
    assert!(
        denied.is_some(),
        "the readonly key's refused write is audited: {audit:?}"
    );
    let forged = audit.iter().find(|r| {
        r.outcome == "refused"
            && r.code == "InvalidSignatureException"
            && r.claimed == format!("token:{}", admin_key.id)
    });
    assert!(
        forged.is_some(),
        "a bad signature is audited with the key it claimed: {audit:?}"
    );
    let text = format!("{audit:?}");
    assert!(!text.contains(&admin_key.secret) && !text.contains(&readonly_key.secret));
    Ok(())
}

/// None of the refused writes above made a cluster.
async fn no_state_changed_by_refusals(admin: &EcsClient) -> Result<()> {
    let listed = admin.call("ListClusters", json!({})).await?;
    let arns: Vec<&str> = listed.body["clusterArns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for refused in ["x", "ro", "evil", "ok"] {
        assert!(
            !arns.contains(&format!("{ARN_PREFIX}cluster/{refused}").as_str()),
            "{refused} was created: {arns:?}"
        );
    }
    Ok(())
}

/// A ListClusters with `body` as it is, signed over those bytes.
fn resign(client: &EcsClient, body: Vec<u8>) -> Result<berth_e2e::ecs::EcsRequest> {
    let mut request = client.signed("ListClusters", &json!({}))?;
    request.headers.retain(|(n, _)| n != "authorization");
    let amz_date = request
        .headers
        .iter()
        .find(|(n, _)| n == "x-amz-date")
        .map(|(_, v)| v.clone())
        .unwrap();
    let authorization = berth_sigv4::sign(
        &berth_sigv4::Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &request.headers,
            body: &body,
        },
        &client.key.id,
        &client.key.secret,
        &client.region,
        "ecs",
        &amz_date,
    )?;
    request
        .headers
        .push(("authorization".into(), authorization));
    request.body = body;
    Ok(request)
}

#[test]
fn ecs_plain_http_is_refused_off_loopback() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = std::process::Command::new(binary("berthd"))
        .args(["serve", "--node-id", "1", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--ecs-listen", &format!("0.0.0.0:{}", free_port())])
        .arg("--ecs-plain-http")
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started: {stderr}");
    assert!(
        stderr.contains("only allowed on a loopback address"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "refused before anything was written"
    );
    Ok(())
}

/// `berthd dev --ecs-insecure-accept-any-signature`: any well-formed
/// signature from loopback is an admin's, and the flag is refused unless
/// the endpoint is on loopback; plain HTTP works on loopback.
#[tokio::test(flavor = "multi_thread")]
async fn dev_may_accept_any_signature_on_loopback_only() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let refused = std::process::Command::new(binary("berthd"))
        .args(["dev", "--no-agent", "--data-dir"])
        .arg(dir.path().join("refused"))
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--ecs-insecure-accept-any-signature")
        .output()?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "started: {stderr}");
    assert!(
        stderr.contains("needs --ecs-listen on a loopback address"),
        "{stderr}"
    );

    let ecs_port = free_port();
    let log = dir.path().join("dev.log");
    let args: Vec<String> = [
        "dev",
        "--no-agent",
        "--data-dir",
        &dir.path().join("dev").display().to_string(),
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
        "--ecs-listen",
        &format!("127.0.0.1:{ecs_port}"),
        "--ecs-plain-http",
        "--ecs-insecure-accept-any-signature",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut dev = spawn_logged("berthd", &args, &log)?;
    let anyone = EcsClient::plain(
        ([127, 0, 0, 1], ecs_port).into(),
        AwsKey {
            id: "ANYTHING".into(),
            secret: "whatever".into(),
        },
    );
    let created = eventually(Duration::from_secs(30), || {
        let anyone = anyone.clone();
        async move {
            let r = anyone
                .call("CreateCluster", json!({"clusterName": "tryout"}))
                .await?;
            anyhow::ensure!(r.status == 200, "{r:?}");
            Ok(r)
        }
    })
    .await?;
    assert_eq!(created.body["cluster"]["clusterName"], "tryout");
    let printed = std::fs::read_to_string(&log)?;
    assert!(
        printed.contains("ANY signature"),
        "the warning is printed: {printed}"
    );
    let mut unsigned = anyone.signed("ListClusters", &json!({}))?;
    unsigned.headers.retain(|(n, _)| n != "authorization");
    let r = anyone.send(unsigned).await?;
    assert_eq!(r.error_type(), "MissingAuthenticationTokenException");
    let _ = dev.kill();
    let _ = dev.wait();
    Ok(())
}

/// Tags on the resources ECS tags (here a cluster and a task definition;
/// tasks, services and instances go through the same TagTarget, tested in
/// berth-types), `include: ["TAGS"]`, UpdateCluster's refusals, and account
/// settings stored and answered by principal and as the default.
#[tokio::test(flavor = "multi_thread")]
async fn ecs_tags_and_account_settings() -> Result<()> {
    let (cluster, addrs) = cluster_with_ecs().await?;
    let key = create_aws_key(&endpoints(&cluster), "admin")?;
    let admin = EcsClient::new(addrs[0], key.clone())?;
    let ok = |r: &berth_e2e::ecs::EcsReply| assert_eq!(r.status, 200, "{:?}", r.body);

    let created = admin
        .call(
            "CreateCluster",
            json!({"clusterName": "tagged", "tags": [{"key": "team", "value": "a"}]}),
        )
        .await?;
    ok(&created);
    assert_eq!(
        created.body["cluster"]["tags"],
        json!([{"key": "team", "value": "a"}])
    );
    let cluster_arn = format!("{ARN_PREFIX}cluster/tagged");
    let r = admin
        .call(
            "TagResource",
            json!({"resourceArn": cluster_arn, "tags": [{"key": "env", "value": "prod"}, {"key": "team", "value": "b"}]}),
        )
        .await?;
    ok(&r);
    assert_eq!(r.body, json!({}));
    let r = admin
        .call(
            "UntagResource",
            json!({"resourceArn": cluster_arn, "tagKeys": ["env"]}),
        )
        .await?;
    ok(&r);
    let listed = admin
        .call("ListTagsForResource", json!({"resourceArn": cluster_arn}))
        .await?;
    ok(&listed);
    assert_eq!(listed.body["tags"], json!([{"key": "team", "value": "b"}]));
    let plain = admin
        .call("DescribeClusters", json!({"clusters": ["tagged"]}))
        .await?;
    assert_eq!(
        plain.body["clusters"][0]["tags"],
        json!([]),
        "tags only when asked for"
    );
    let with_tags = admin
        .call(
            "DescribeClusters",
            json!({"clusters": ["tagged"], "include": ["TAGS"]}),
        )
        .await?;
    assert_eq!(
        with_tags.body["clusters"][0]["tags"],
        json!([{"key": "team", "value": "b"}])
    );
    let reserved = admin
        .call(
            "TagResource",
            json!({"resourceArn": cluster_arn, "tags": [{"key": "aws:x", "value": "1"}]}),
        )
        .await?;
    assert_eq!(
        reserved.error_type(),
        "InvalidParameterException",
        "{:?}",
        reserved.body
    );
    let missing = admin
        .call(
            "TagResource",
            json!({"resourceArn": format!("{ARN_PREFIX}cluster/nope"), "tags": [{"key": "k", "value": "v"}]}),
        )
        .await?;
    assert_eq!(missing.status, 400, "{:?}", missing.body);

    let registered = admin
        .call(
            "RegisterTaskDefinition",
            json!({
                "family": "tagged-td",
                "containerDefinitions": [{"name": "app", "image": "registry.local/app:1", "memory": 32}]
            }),
        )
        .await?;
    ok(&registered);
    let td_arn = registered.body["taskDefinition"]["taskDefinitionArn"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(td_arn, format!("{ARN_PREFIX}task-definition/tagged-td:1"));
    ok(&admin
        .call(
            "TagResource",
            json!({"resourceArn": td_arn, "tags": [{"key": "owner", "value": "ci"}]}),
        )
        .await?);
    let described = admin
        .call(
            "DescribeTaskDefinition",
            json!({"taskDefinition": "tagged-td:1", "include": ["TAGS"]}),
        )
        .await?;
    assert_eq!(
        described.body["tags"],
        json!([{"key": "owner", "value": "ci"}])
    );

    // DeleteTaskDefinitions: an ACTIVE revision is a failure; once
    // deregistered it is deleted and describes no more.
    let refused = admin
        .call(
            "DeleteTaskDefinitions",
            json!({"taskDefinitions": [td_arn]}),
        )
        .await?;
    ok(&refused);
    assert_eq!(
        refused.body["failures"][0]["arn"], td_arn,
        "{:?}",
        refused.body
    );
    ok(&admin
        .call(
            "DeregisterTaskDefinition",
            json!({"taskDefinition": "tagged-td:1"}),
        )
        .await?);
    let deleted = admin
        .call(
            "DeleteTaskDefinitions",
            json!({"taskDefinitions": ["tagged-td:1"]}),
        )
        .await?;
    ok(&deleted);
    assert_eq!(
        deleted.body["taskDefinitions"][0]["status"],
        "DELETE_IN_PROGRESS"
    );
    let gone = admin
        .call(
            "DescribeTaskDefinition",
            json!({"taskDefinition": "tagged-td:1"}),
        )
        .await?;
    assert_eq!(gone.status, 400, "{:?}", gone.body);

    // UpdateCluster(Settings): what Berth has no setting for is refused.
    let insights = admin
        .call(
            "UpdateClusterSettings",
            json!({"cluster": "tagged", "settings": [{"name": "containerInsights", "value": "enabled"}]}),
        )
        .await?;
    assert_eq!(insights.error_type(), "UnsupportedFeatureException");
    let same = admin
        .call(
            "UpdateCluster",
            json!({"cluster": cluster_arn, "settings": [{"name": "containerInsights", "value": "disabled"}]}),
        )
        .await?;
    ok(&same);
    assert_eq!(same.body["cluster"]["clusterName"], "tagged");

    // Account settings: the caller's own, the default, effective values.
    let own = admin
        .call(
            "PutAccountSetting",
            json!({"name": "containerInsights", "value": "enhanced"}),
        )
        .await?;
    ok(&own);
    assert_eq!(
        own.body["setting"]["principalArn"],
        format!("arn:aws:iam::000000000000:user/{}", key.id)
    );
    ok(&admin
        .call(
            "PutAccountSettingDefault",
            json!({"name": "awsvpcTrunking", "value": "enabled"}),
        )
        .await?);
    let bad = admin
        .call(
            "PutAccountSetting",
            json!({"name": "containerInsights", "value": "on"}),
        )
        .await?;
    assert_eq!(bad.error_type(), "InvalidParameterException");
    let effective = EcsClient::new(addrs[1], key.clone())?;
    let listed = eventually(Duration::from_secs(10), || {
        let effective = effective.clone();
        async move {
            let r = effective
                .call("ListAccountSettings", json!({"effectiveSettings": true}))
                .await?;
            anyhow::ensure!(r.status == 200, "{:?}", r.body);
            let find = |name: &str| {
                r.body["settings"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|s| s["name"] == name)
                    .map(|s| s["value"].clone())
            };
            anyhow::ensure!(
                find("containerInsights") == Some(json!("enhanced"))
                    && find("awsvpcTrunking") == Some(json!("enabled")),
                "not yet: {:?}",
                r.body
            );
            Ok(r)
        }
    })
    .await?;
    assert!(listed.body["settings"].as_array().unwrap().len() >= 2);
    let deleted = admin
        .call("DeleteAccountSetting", json!({"name": "containerInsights"}))
        .await?;
    ok(&deleted);
    assert_eq!(deleted.body["setting"]["value"], "enhanced");
    Ok(())
}
