//! The ECS-compatible API with the real AWS clients: Debian's aws CLI
//! (tests/python/ecs_aws_cli_test.sh) and boto3
//! (tests/python/ecs_boto3_test.py) against three berthd servers and a
//! real agent on containerd, over HTTPS with the cluster CA, signing with a
//! key from `berth auth token create --format aws`. Each script prints its
//! checks; this test fails when one fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Result};
use berth_e2e::agents::*;
use berth_e2e::ecs::{create_aws_key, EcsClient};
use berth_e2e::*;
use berth_types::InstanceState;
use serde_json::json;

const CLUSTER: &str = "ecs-clients";

/// The aws CLI and a Python with boto3 (Debian's, which
/// scripts/install-deps.sh installs). `None` outside CI skips the test;
/// under CI=true a missing one fails it.
fn clients() -> Option<(PathBuf, PathBuf)> {
    let aws = PathBuf::from("/usr/bin/aws");
    let python = PathBuf::from("/usr/bin/python3");
    let has_boto3 = Command::new(&python)
        .args(["-c", "import boto3"])
        .output()
        .is_ok_and(|o| o.status.success());
    if aws.exists() && has_boto3 {
        return Some((aws, python));
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true but no /usr/bin/aws or boto3 for /usr/bin/python3: run scripts/install-deps.sh"
    );
    eprintln!("NOTICE: skipping: no aws CLI or boto3 (scripts/install-deps.sh)");
    None
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(name)
}

fn run(label: &str, command: &mut Command) -> Result<String> {
    let out = command.output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("--- {label}\n{stdout}{stderr}");
    if !out.status.success() {
        bail!("{label} failed ({}):\n{stdout}\n{stderr}", out.status);
    }
    Ok(stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_cli_and_boto3_drive_a_cluster_with_a_real_agent() -> Result<()> {
    let Some((aws, python)) = clients() else {
        return Ok(());
    };
    let port = free_port();
    let listen = format!("127.0.0.{{id}}:{port}");
    let Some(s) = AgentCluster::start_with(CLUSTER, 300, 2, &["--ecs-listen", &listen]).await?
    else {
        return Ok(());
    };
    let mut agent = s.agent("ecs-client-1", &[]);
    agent.start()?;
    wait_instance_status(
        &s.addr(1),
        &agent,
        InstanceState::Active,
        Duration::from_secs(60),
    )
    .await?;
    let key = create_aws_key(&s.servers, "admin")?;
    let ca = test_pki().dir.join("ca.crt");
    let env = |command: &mut Command| {
        command
            .env("AWS_ACCESS_KEY_ID", &key.id)
            .env("AWS_SECRET_ACCESS_KEY", &key.secret)
            .env("AWS_DEFAULT_REGION", "eu-central-1")
            .env("AWS_CA_BUNDLE", &ca)
            .env(
                "PATH",
                format!("{}:/usr/bin:/bin", aws.parent().unwrap().display()),
            )
            .env_remove("AWS_PROFILE")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
    };
    // The servers' certificates name 127.0.0.1, so the clients use server
    // 1 (tests/tests/ecs_api.rs shows the others answer too).
    let cli_out = run(
        "aws CLI",
        Command::new("bash")
            .arg(script("ecs_aws_cli_test.sh"))
            .arg(format!("https://127.0.0.1:{port}"))
            .arg(CLUSTER)
            .arg(&s.image)
            .tap(env),
    )?;
    assert!(cli_out.contains("aws CLI: all checks passed"), "{cli_out}");
    let boto_out = run(
        "boto3",
        Command::new(&python)
            .arg(script("ecs_boto3_test.py"))
            .arg(format!("https://127.0.0.1:{port}"))
            .arg(CLUSTER)
            .arg(&s.image)
            .tap(env),
    )?;
    assert!(boto_out.contains("boto3: all checks passed"), "{boto_out}");

    drop(agent);
    Ok(())
}

/// RegisterContainerInstance with Berth's activation semantics: it answers
/// the instance to be, REGISTERING, with a single-use join token; a host's
/// agent registering with it becomes the instance, with the attributes
/// asked for. Needs containerd (for the agent), not the AWS clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_container_instance_gives_a_join_token_an_agent_registers_with() -> Result<()> {
    let port = free_port();
    let listen = format!("127.0.0.{{id}}:{port}");
    let Some(s) = AgentCluster::start_with(CLUSTER, 300, 2, &["--ecs-listen", &listen]).await?
    else {
        return Ok(());
    };
    let key = create_aws_key(&s.servers, "admin")?;
    let ecs = EcsClient::new(([127, 0, 0, 1], port).into(), key.clone())?;
    let registering = ecs
        .call(
            "RegisterContainerInstance",
            json!({"cluster": CLUSTER, "attributes": [{"name": "rack", "value": "r9"}]}),
        )
        .await?;
    assert_eq!(registering.status, 200, "{:?}", registering.body);
    let instance = &registering.body["containerInstance"];
    assert_eq!(instance["status"], "REGISTERING");
    let token = instance["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "berth.join-token")
        .and_then(|a| a["value"].as_str())
        .expect("the join token")
        .to_string();
    let mut second = AgentProc::new(
        "ecs-client-2",
        s.work.path(),
        &s.env,
        &s.servers,
        &token,
        &[],
    );
    second.start()?;
    let id = wait_instance_status(
        &s.addr(1),
        &second,
        InstanceState::Active,
        Duration::from_secs(60),
    )
    .await?
    .id;
    let described = ecs
        .call(
            "DescribeContainerInstances",
            json!({"cluster": CLUSTER, "containerInstances": [id]}),
        )
        .await?;
    let attributes = &described.body["containerInstances"][0]["attributes"];
    assert!(
        attributes
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "rack" && a["value"] == "r9"),
        "the registered instance has the attribute asked for: {attributes}"
    );
    let again = ecs
        .call(
            "RegisterContainerInstance",
            json!({"cluster": CLUSTER, "attributes": [{"name": "berth.join-token", "value": "x"}]}),
        )
        .await?;
    assert_eq!(
        again.error_type(),
        "InvalidParameterException",
        "{:?}",
        again.body
    );
    let spoofed = ecs
        .call(
            "PutAttributes",
            json!({"cluster": CLUSTER, "attributes": [{"name": "agent.os", "value": "x", "targetId": id}]}),
        )
        .await?;
    assert_eq!(
        spoofed.error_type(),
        "InvalidParameterException",
        "what agents report is not an operator's to set: {:?}",
        spoofed.body
    );
    drop(second);
    Ok(())
}

/// `Command` builders chain; this applies a shared setup in the chain.
trait Tap {
    fn tap(&mut self, f: impl Fn(&mut Self)) -> &mut Self;
}

impl Tap for Command {
    fn tap(&mut self, f: impl Fn(&mut Self)) -> &mut Self {
        f(self);
        self
    }
}
