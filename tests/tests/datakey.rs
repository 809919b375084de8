//! End-to-end: rotating the cluster data key on a real 3-server cluster
//! with the real tools, as docs/operations.md ("The data key (secrets)")
//! tells an operator to: `berthd pki data-key add`, a rolling reload (SIGHUP),
//! `promote`, a rolling restart, `berth secret rekey`, `retire`, a rolling
//! restart. After every single restart each running server reveals every
//! secret (no window where one cannot open a value), and at the end a
//! server holding only the old key opens none of them: rekey re-sealed
//! them all.
//!
//! Its own test binary on purpose: it rewrites the data.key of the test
//! CA, which every cluster of one test process shares.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Result};
use berth_e2e::*;
use berth_proto::pb;
use berth_proto::pb::auth_service_client::AuthServiceClient;
use berth_proto::pb::secret_service_client::SecretServiceClient;
use tonic::Code;

const LONG: Duration = Duration::from_secs(30);

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "command failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `berthd pki data-key STEP --dir CA`, its output.
fn data_key(step: &str) -> String {
    ok(Command::new(binary("berthd"))
        .args(["pki", "data-key", step, "--dir"])
        .arg(&test_pki().dir)
        .output()
        .expect("run berthd pki data-key"))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Every running server reveals every secret with its value and version.
async fn all_reveal(cluster: &mut TestCluster, secrets: &[(String, String, u64)]) -> Result<()> {
    let running: Vec<(u64, String)> = cluster
        .servers
        .values_mut()
        .filter_map(|s| s.is_running().then(|| (s.id, s.addr.clone())))
        .collect();
    for (id, addr) in running {
        for (name, value, version) in secrets {
            let revealed = eventually(LONG, || async {
                Ok(SecretServiceClient::new(channel(&addr).await?)
                    .reveal_secret(pb::SecretName { name: name.clone() })
                    .await?
                    .into_inner())
            })
            .await
            .map_err(|e| e.context(format!("server {id} reveals {name}")))?;
            assert_eq!(revealed.value, value.as_bytes(), "server {id}, {name}");
            assert_eq!(
                revealed.secret.unwrap().version,
                *version,
                "server {id}, {name}"
            );
        }
    }
    Ok(())
}

/// Gives server `id` the CA dir's data.key by copying it (0600) and
/// restarts it.
async fn restart_with_ca_key(cluster: &mut TestCluster, id: u64) -> Result<()> {
    cluster.server(id).terminate()?;
    let to = cluster.server(id).data_dir.join("pki").join("data.key");
    std::fs::copy(test_pki().dir.join("data.key"), &to)?;
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600))?;
    cluster.server(id).start()?;
    cluster.wait_for_leader(LONG).await?;
    // Back: it answers and knows the leader (berth server list shows it).
    let addr = cluster.addr(id);
    eventually(LONG, || async {
        match status(&addr).await?.leader_id {
            Some(_) => Ok(()),
            None => bail!("server {id} knows no leader yet"),
        }
    })
    .await?;
    Ok(())
}

/// Gives server `id` the CA dir's data.key by copying it (0600) and sends
/// it SIGHUP instead of restarting it; waits until its log says it
/// reloaded.
async fn reload_with_ca_key(cluster: &mut TestCluster, id: u64) -> Result<()> {
    let reloads = |cluster: &TestCluster| {
        cluster.servers[&id]
            .log()
            .matches("PKI reloaded on SIGHUP")
            .count()
    };
    let before = reloads(cluster);
    let to = cluster.server(id).data_dir.join("pki").join("data.key");
    std::fs::copy(test_pki().dir.join("data.key"), &to)?;
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600))?;
    let pid = cluster.server(id).pid().expect("running");
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill -HUP {pid}");
    eventually(LONG, || {
        let done = reloads(cluster) > before;
        async move {
            if done {
                Ok(())
            } else {
                bail!("server {id} has not reloaded yet")
            }
        }
    })
    .await?;
    Ok(())
}

/// The rolling restart every rotation step ends with; after each server
/// is back, every running server reveals every secret.
async fn rolling_restart(
    cluster: &mut TestCluster,
    secrets: &[(String, String, u64)],
) -> Result<()> {
    for id in 1..=3 {
        restart_with_ca_key(cluster, id).await?;
        all_reveal(cluster, secrets).await?;
    }
    Ok(())
}

fn rekey(endpoint: &str) -> serde_json::Value {
    let out = ok(berth_cli(
        endpoint,
        &test_pki().admin_token,
        &["secret", "rekey", "-o", "json"],
    ));
    serde_json::from_str(&out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_key_rotation_add_promote_rekey_retire() -> Result<()> {
    let ecs_port = free_port();
    let ecs_listen = format!("127.0.0.{{id}}:{ecs_port}");
    let mut cluster = TestCluster::start(3, &["--ecs-listen", &ecs_listen]).await?;
    let addrs: Vec<String> = (1..=3).map(|id| cluster.addr(id)).collect();
    let endpoints = addrs.join(",");
    // An AWS access key's secret is sealed like a secret's value.
    let aws_key = berth_e2e::ecs::create_aws_key(&endpoints, "readonly")?;
    let ecs = berth_e2e::ecs::EcsClient::new(([127, 0, 0, 1], ecs_port).into(), aws_key)?;
    let admin = test_pki().admin_token.clone();
    let ca_key = test_pki().dir.join("data.key");
    let old_key = std::fs::read_to_string(&ca_key)?;
    assert_eq!(old_key.lines().count(), 1, "pki init writes a ring of one");
    let old_id = data_key("show")
        .trim()
        .strip_prefix("primary ")
        .unwrap()
        .to_string();

    // Secrets sealed with the original key, through different servers.
    let mut secrets: Vec<(String, String, u64)> = Vec::new();
    for (n, addr) in addrs.iter().enumerate() {
        let (name, value) = (format!("app/secret-{n}"), format!("value-{n}-9c1e"));
        ok(berth_cli(
            addr,
            &admin,
            &["secret", "create", &name, "--from-literal", &value],
        ));
        secrets.push((name, value, 1));
    }
    // One updated: version 2, so rekey must keep a version that is not 1.
    ok(berth_cli(
        &endpoints,
        &admin,
        &[
            "secret",
            "update",
            "app/secret-0",
            "--from-literal",
            "value-0-v2",
        ],
    ));
    secrets[0] = ("app/secret-0".into(), "value-0-v2".into(), 2);
    all_reveal(&mut cluster, &secrets).await?;
    // Before any promotion there is nothing to re-seal.
    let first = rekey(&endpoints);
    assert_eq!(
        (first["resealed"].as_u64(), first["current"].as_u64()),
        (Some(0), Some(4)),
        "3 secrets and the AWS key: {first}"
    );

    // 1. add: a second key that only opens; the file stays 0600.
    let added = data_key("add");
    assert!(
        added.contains(&format!("primary {old_id}, opening also with ")),
        "{added}"
    );
    assert!(
        added.contains("restart the servers one at a time"),
        "{added}"
    );
    assert_eq!(mode(&ca_key), 0o600);
    let ring = std::fs::read_to_string(&ca_key)?;
    assert_eq!(ring.lines().count(), 2);
    assert!(ring.starts_with(&old_key), "the primary stays first");
    // Distributed with a reload (SIGHUP) rather than a restart: servers
    // read the ring again without stopping.
    for id in 1..=3 {
        reload_with_ca_key(&mut cluster, id).await?;
        all_reveal(&mut cluster, &secrets).await?;
    }
    // Still sealing with the old key: a new secret opens on a server with
    // the old key only (checked at the end, with the others).
    let rekeyed = rekey(&endpoints);
    assert_eq!(rekeyed["resealed"].as_u64(), Some(0), "{rekeyed}");

    // 2. promote: the new key seals. Mid-rollout, server 1 seals with the
    // new key while servers 2 and 3 still have it as open-only: they open
    // what it seals.
    let promoted = data_key("promote");
    assert!(
        promoted.contains(&format!("opening also with {old_id}")),
        "{promoted}"
    );
    let new_id = promoted
        .split("primary ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap()
        .to_string();
    assert_ne!(new_id, old_id);
    restart_with_ca_key(&mut cluster, 1).await?;
    ok(berth_cli(
        &addrs[0],
        &admin,
        &[
            "secret",
            "create",
            "app/sealed-new",
            "--from-literal",
            "new-key-value",
        ],
    ));
    secrets.push(("app/sealed-new".into(), "new-key-value".into(), 1));
    all_reveal(&mut cluster, &secrets).await?;
    for id in 2..=3 {
        restart_with_ca_key(&mut cluster, id).await?;
        all_reveal(&mut cluster, &secrets).await?;
    }

    // 3. rekey: admins only; the 4 secrets sealed with the old key are
    // re-sealed, the one sealed with the new key is current, versions kept.
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
    let refused = SecretServiceClient::new(channel_as(&addrs[1], Some(&readonly)).await?)
        .rekey_secrets(pb::RekeySecretsRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let rekeyed = rekey(&addrs[1]);
    assert_eq!(
        rekeyed["primaryKeyId"].as_str(),
        Some(new_id.as_str()),
        "{rekeyed}"
    );
    assert_eq!(
        rekeyed["resealed"].as_u64(),
        Some(4),
        "3 secrets and the AWS key: {rekeyed}"
    );
    assert_eq!(rekeyed["current"].as_u64(), Some(1), "{rekeyed}");
    assert_eq!(rekeyed["skipped"], serde_json::json!([]), "{rekeyed}");
    assert_eq!(rekeyed["unreadable"], serde_json::json!([]), "{rekeyed}");
    all_reveal(&mut cluster, &secrets).await?;
    let again = ok(berth_cli(&endpoints, &admin, &["secret", "rekey"]));
    assert!(again.contains("re-sealed 0 secret(s)"), "{again}");
    assert!(again.contains("5 already current"), "{again}");
    assert!(again.contains("can be retired"), "{again}");
    // Re-sealing is not an update: no 'secret' event beyond create/update.
    let events: serde_json::Value = serde_json::from_str(&ok(berth_cli(
        &endpoints,
        &admin,
        &["events", "-o", "json"],
    )))?;
    let secret_events: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "secret")
        .map(|e| e["actor"]["operation"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        secret_events,
        [
            "CreateSecret",
            "CreateSecret",
            "CreateSecret",
            "UpdateSecret",
            "CreateSecret"
        ],
        "{events}"
    );
    let audit = ok(berth_cli(
        &endpoints,
        &admin,
        &["audit", "list", "-o", "json"],
    ));
    assert!(
        audit.contains("reseal_secrets"),
        "rekey is audited: {audit}"
    );

    // 4. retire: only the new key stays.
    let retired = data_key("retire");
    assert!(retired.contains("retired 1 data key(s)"), "{retired}");
    assert_eq!(mode(&ca_key), 0o600);
    assert_eq!(std::fs::read_to_string(&ca_key)?.lines().count(), 1);
    assert!(data_key("retire").contains("nothing to retire"));
    rolling_restart(&mut cluster, &secrets).await?;
    // The AWS key still signs: its secret was re-sealed too.
    let listed = eventually(LONG, || {
        let ecs = ecs.clone();
        async move {
            let r = ecs.call("ListClusters", serde_json::json!({})).await?;
            ensure!(r.status == 200, "{r:?}");
            Ok(r)
        }
    })
    .await?;
    assert!(listed.body["clusterArns"].is_array(), "{:?}", listed.body);

    // A server given only the old key opens none of them: they were
    // re-sealed, not merely readable by a ring that still held it.
    cluster.server(3).terminate()?;
    let node3_key = cluster.server(3).data_dir.join("pki").join("data.key");
    std::fs::write(&node3_key, &old_key)?;
    std::fs::set_permissions(&node3_key, std::fs::Permissions::from_mode(0o600))?;
    cluster.server(3).start()?;
    cluster.wait_for_leader(LONG).await?;
    for (name, _, _) in &secrets {
        let refused = eventually(LONG, || async {
            match SecretServiceClient::new(channel(&addrs[2]).await?)
                .reveal_secret(pb::SecretName { name: name.clone() })
                .await
            {
                Err(status) if status.code() == Code::FailedPrecondition => Ok(status),
                other => bail!("{other:?}"),
            }
        })
        .await?;
        assert!(refused.message().contains("does not open"), "{refused:?}");
    }
    // The others, with the new key, still do.
    cluster.server(3).terminate()?;
    all_reveal(&mut cluster, &secrets).await?;
    Ok(())
}
