//! The `berth` CLI against a real 3-server cluster, including endpoint
//! failover and machine-readable output.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use anyhow::Result;
use berth_e2e::*;

struct Cli {
    endpoints: String,
}

impl Cli {
    fn run(&self, args: &[&str]) -> std::process::Output {
        berth_cli(&self.endpoints, &test_pki().admin_token, args)
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "berth {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&all)).expect("valid JSON")
    }
}

fn example(name: &str) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    root.join("deploy/examples")
        .join(name)
        .display()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_manages_task_definitions_and_fails_over_between_endpoints() -> Result<()> {
    let mut cluster = TestCluster::start(3, &[]).await?;
    // The first endpoint is a closed port: every command must move on.
    let dead = format!("127.0.0.1:{}", free_port());
    let cli = Cli {
        endpoints: format!("{dead},{},{}", cluster.addr(1), cluster.addr(2)),
    };

    let registered = cli.json(&["taskdef", "register", "-f", &example("web.json")]);
    assert_eq!(registered["family"], "web");
    assert_eq!(registered["revision"], 1);
    let yaml = cli.json(&["taskdef", "register", "-f", &example("web.yaml")]);
    assert_eq!(yaml["revision"], 2);
    assert_eq!(
        yaml["spec"], registered["spec"],
        "JSON and YAML files describe the same task"
    );

    let listed = cli.json(&["taskdef", "list", "--family", "web"]);
    assert_eq!(listed.as_array().unwrap().len(), 2);

    cli.ok(&["taskdef", "deregister", "web:2"]);
    let latest = cli.json(&["taskdef", "describe", "web"]);
    assert_eq!(
        latest["revision"], 1,
        "bare family is the latest ACTIVE revision"
    );
    let inactive = cli.json(&["taskdef", "list", "--status", "INACTIVE"]);
    assert_eq!(inactive[0]["revision"], 2);

    cli.ok(&["cluster", "create", "prod"]);
    let clusters = cli.json(&["cluster", "list"]);
    let names: Vec<&str> = clusters
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["default", "prod"]);
    cli.ok(&["cluster", "delete", "prod"]);

    let status = cli.json(&["cluster", "status"]);
    let members = status["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    let table = cli.ok(&["server", "list"]);
    assert_eq!(table.matches("leader").count(), 1, "{table}");

    // Errors: one line on stderr, non-zero exit.
    let missing = cli.run(&["taskdef", "describe", "web:9"]);
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains("web:9"),
        "{stderr}"
    );

    // With the leader killed the CLI still works through the survivors.
    let leader = cluster
        .wait_for_leader(std::time::Duration::from_secs(20))
        .await?;
    cluster.server(leader).kill9();
    let survivors: Vec<String> = (1..=3)
        .filter(|id| *id != leader)
        .map(|id| cluster.addr(id))
        .collect();
    let cli = Cli {
        endpoints: format!("{dead},{}", survivors.join(",")),
    };
    let after = eventually(std::time::Duration::from_secs(20), || async {
        let out = cli.run(&[
            "taskdef",
            "register",
            "-f",
            &example("web.json"),
            "-o",
            "json",
        ]);
        anyhow::ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(serde_json::from_slice::<serde_json::Value>(&out.stdout)?)
    })
    .await?;
    assert_eq!(after["revision"], 3);

    let nobody = Cli { endpoints: dead };
    let out = nobody.run(&["cluster", "list"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot reach any server"), "{stderr}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_declares_load_balancers_and_blue_green_and_refuses_bad_ones() -> Result<()> {
    let cluster = TestCluster::start(3, &[]).await?;
    let cli = Cli {
        endpoints: cluster.addr(1),
    };
    cli.ok(&["taskdef", "register", "-f", &example("web-bridge.json")]);
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("web-service.yaml");
    std::fs::write(
        &file,
        "serviceName: web\ntaskDefinition: web\ndesiredCount: 2\n\
         loadBalancers:\n  - {name: public, containerName: web, containerPort: 8080, deregistrationDelaySeconds: 5}\n\
         deploymentController:\n  type: BLUE_GREEN\n  trafficShift: {type: CANARY, percent: 10, intervalSeconds: 60}\n  bakeTimeSeconds: 30\n",
    )?;
    let created = cli.json(&["service", "create", "-f", file.to_str().unwrap()]);
    let service = &created["service"];
    assert_eq!(service["loadBalancers"][0]["name"], "public");
    assert_eq!(service["loadBalancers"][0]["deregistrationDelaySecs"], 5);
    assert_eq!(
        service["deploymentConfiguration"]["controller"]["blueGreen"]["traffic"]["canary"]
            ["percent"],
        10
    );
    let shown = cli.ok(&["service", "describe", "web"]);
    assert!(
        shown.contains("blue/green, traffic canary 10%, the rest after 60s, bake time 30s"),
        "{shown}"
    );
    assert!(
        shown.contains("public -> web:8080 (deregistration delay 5s)"),
        "{shown}"
    );
    assert!(shown.contains("TRAFFIC"), "{shown}");

    // Nothing completed yet, so there is nothing to roll back to.
    let out = cli.run(&["service", "rollback", "web"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("no earlier COMPLETED task definition"),
        "{stderr}"
    );

    // Bad declarations are refused naming the field, and nothing is made.
    for (args, field) in [
        (
            vec!["--load-balancer", "public:nope:8080"],
            "loadBalancers[0].containerName",
        ),
        (
            vec!["--load-balancer", "public:web:9999"],
            "loadBalancers[0].containerPort",
        ),
        (
            vec![
                "--load-balancer",
                "public:web:8080",
                "--deployment-controller",
                "blue-green",
                "--traffic-shift",
                "linear:0:1m",
            ],
            "deploymentController.trafficShift.percent",
        ),
        (
            vec!["--deployment-controller", "blue-green"],
            "deploymentController",
        ),
    ] {
        let mut all = vec!["service", "create", "--name", "bad", "--taskdef", "web"];
        all.extend(args);
        let out = cli.run(&all);
        assert!(!out.status.success(), "{all:?} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(field), "{all:?}: {stderr}");
    }
    let listed = cli.json(&["service", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_takes_id_prefixes_shows_short_ids_and_waits() -> Result<()> {
    let cluster = TestCluster::start(3, &[]).await?;
    let cli = Cli {
        endpoints: cluster.addr(1),
    };
    cli.ok(&["taskdef", "register", "-f", &example("web.json")]);
    cli.ok(&["cluster", "create", "prod"]);
    // No instances: the tasks stay PROVISIONING.
    let tasks = cli.json(&["task", "run", "--taskdef", "web", "--count", "2"]);
    let id = |n: usize| tasks[n]["id"].as_str().unwrap().to_string();
    let (a, b) = (id(0), id(1));
    assert_eq!(a.len(), 32, "{a}");
    cli.ok(&["task", "run", "--taskdef", "web", "--cluster", "prod"]);

    // Tables show short ids (and no colour into a pipe); wide and JSON
    // whole ones.
    let table = cli.ok(&["task", "list"]);
    assert!(table.contains(&a[..12]) && !table.contains(&a), "{table}");
    assert!(table.lines().next().unwrap().ends_with("AGE"), "{table}");
    assert!(!table.contains('\x1b'), "{table:?}");
    let wide = cli.ok(&["task", "list", "-o", "wide"]);
    assert!(wide.contains(&a) && wide.contains("prod"), "{wide}");
    let everywhere = cli.ok(&["task", "list", "--all-clusters"]);
    assert!(
        everywhere.starts_with("ID            CLUSTER  "),
        "{everywhere}"
    );
    assert_eq!(everywhere.lines().count(), 4, "{everywhere}");

    // A unique prefix names the task; too short or unknown ones are refused
    // saying what to do.
    let described = cli.json(&["task", "describe", &a[..8]]);
    assert_eq!(described["id"], a.as_str());
    let upper = cli.json(&["task", "describe", &a[..8].to_uppercase()]);
    assert_eq!(upper["id"], a.as_str());
    for (prefix, says) in [
        (&a[..3], "at least 4 characters"),
        (
            "zzzz",
            "no task id starts with zzzz (berth task list shows the ids)",
        ),
    ] {
        let out = cli.run(&["task", "describe", prefix]);
        assert!(!out.status.success(), "{prefix}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{prefix}: {stderr}");
    }

    // berth wait: a PROVISIONING task does not run in time; a stopped one
    // satisfies tasks-stopped and fails tasks-running at once.
    let out = cli.run(&["wait", "tasks-running", &a[..8], "--timeout", "2s"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("timed out after 2s") && stderr.contains("PROVISIONING"),
        "{stderr}"
    );
    cli.ok(&["task", "stop", &b[..8]]);
    let waited = cli.ok(&["wait", "tasks-stopped", &b[..8], "--timeout", "30s"]);
    assert_eq!(waited, "", "nothing on stdout: the exit status says it");
    let started = std::time::Instant::now();
    let out = cli.run(&["wait", "tasks-running", &a, &b, "--timeout", "5m"]);
    assert!(!out.status.success());
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{} is STOPPED", &b[..12])),
        "{stderr}"
    );

    cli.ok(&[
        "service",
        "create",
        "--name",
        "idle",
        "--taskdef",
        "web",
        "--desired-count",
        "0",
    ]);
    cli.ok(&["wait", "services-stable", "idle", "--timeout", "30s"]);
    let out = cli.run(&[
        "wait",
        "services-stable",
        "idle",
        "gone",
        "--timeout",
        "30s",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no such service: gone"), "{stderr}");
    Ok(())
}

/// `berth taskdef describe -o json` shows `secrets` and
/// `repositoryCredentials` in ECS's shape (`{"credentialsParameter":
/// NAME}`), and its `spec` is a file `berth taskdef register` takes back
/// as the same task definition, nothing ignored; `-o yaml` shows the same
/// object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taskdef_json_with_secrets_and_repository_credentials_registers_back_identical(
) -> Result<()> {
    let cluster = TestCluster::start(1, &[]).await?;
    let cli = Cli {
        endpoints: cluster.addr(1),
    };
    for name in ["db-password", "registry-creds"] {
        cli.ok(&["secret", "create", name, "--from-literal", "x"]);
    }
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("app.json");
    std::fs::write(
        &file,
        r#"{"family": "app", "containerDefinitions": [{
            "name": "web", "image": "registry.example/app:1", "memory": 64,
            "secrets": [{"name": "DB_PASSWORD", "valueFrom": "db-password"}],
            "repositoryCredentials": {"credentialsParameter": "registry-creds"}
        }]}"#,
    )?;
    let first = cli.json(&["taskdef", "register", "-f", &file.display().to_string()]);
    assert_eq!(first["revision"], 1);
    let described = cli.json(&["taskdef", "describe", "app:1"]);
    let container = &described["spec"]["containerDefinitions"][0];
    assert_eq!(
        container["repositoryCredentials"],
        serde_json::json!({"credentialsParameter": "registry-creds"}),
        "{described}"
    );
    assert_eq!(
        container["secrets"],
        serde_json::json!([{"name": "DB_PASSWORD", "valueFrom": "db-password"}])
    );

    // The described spec, registered again: the same definition, and no
    // warning about a field it ignored.
    let again = dir.path().join("again.json");
    std::fs::write(&again, serde_json::to_string_pretty(&described["spec"])?)?;
    let out = cli.run(&[
        "taskdef",
        "register",
        "-f",
        &again.display().to_string(),
        "-o",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("ignor"), "{stderr}");
    let second: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(second["revision"], 2);
    assert_eq!(second["spec"], described["spec"]);

    // YAML shows the same object (crates/types/src/secrets.rs reads YAML
    // output back as a file).
    let yaml = cli.ok(&["taskdef", "describe", "app:2", "-o", "yaml"]);
    assert!(
        yaml.contains("repositoryCredentials:\n")
            && yaml.contains("credentialsParameter: registry-creds"),
        "{yaml}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_set_through_the_leader_are_answered_by_a_follower() -> Result<()> {
    use serde_json::json;
    let mut cluster = TestCluster::start(3, &[]).await?;
    let leader = cluster
        .wait_for_leader(std::time::Duration::from_secs(20))
        .await?;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let cli = Cli {
        endpoints: cluster.addr(leader),
    };
    let on_follower = Cli {
        endpoints: cluster.addr(follower),
    };

    let created = cli.json(&[
        "cluster",
        "create",
        "prod",
        "--tag",
        "env=prod",
        "--tag",
        "team=core",
    ]);
    assert_eq!(created["tags"], json!({"env": "prod", "team": "core"}));
    cli.ok(&["taskdef", "register", "-f", &example("web.json")]);
    let set = cli.json(&["tag", "set", "taskdef/web:1", "tier=front", "owner=a"]);
    assert_eq!(set, json!({"owner": "a", "tier": "front"}));
    // A key already there takes the new value; removals answer what is left.
    assert_eq!(
        cli.json(&["tag", "set", "cluster/prod", "env=staging"]),
        json!({"env": "staging", "team": "core"})
    );
    assert_eq!(
        cli.json(&["tag", "remove", "cluster/prod", "team"]),
        json!({"env": "staging"})
    );
    cli.ok(&["tag", "remove", "taskdef/web:1", "owner", "absent"]);

    // Reads on a follower are linearizable: it answers what was written.
    assert_eq!(
        on_follower.json(&["tag", "list", "cluster/prod"]),
        json!({"env": "staging"})
    );
    assert_eq!(
        on_follower.json(&["tag", "list", "taskdef/web:1"]),
        json!({"tier": "front"})
    );
    assert_eq!(
        on_follower.json(&["cluster", "describe", "prod"])["tags"],
        json!({"env": "staging"})
    );
    let table = on_follower.ok(&["tag", "list", "cluster/prod"]);
    assert_eq!(table, "KEY  VALUE\nenv  staging\n");
    let described = on_follower.ok(&["cluster", "describe", "prod"]);
    assert!(described.contains("env=staging"), "{described}");

    // Refusals name what is wrong.
    for (args, says) in [
        (
            vec!["tag", "set", "cluster/prod", "aws:stack=x"],
            "reserved",
        ),
        (vec!["tag", "list", "cluster/nope"], "nope"),
        (vec!["tag", "list", "bucket/x"], "cluster/NAME"),
        (
            vec!["cluster", "create", "dev", "--tag", "AWS:x=y"],
            "reserved",
        ),
    ] {
        let out = cli.run(&args);
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    let clusters = on_follower.json(&["cluster", "list"]);
    assert_eq!(
        clusters.as_array().unwrap().len(),
        2,
        "the refused create made nothing: {clusters}"
    );
    Ok(())
}
