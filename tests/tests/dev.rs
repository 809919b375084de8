//! End-to-end: `berthd dev` is the one-command experience. It starts a
//! control plane and a local agent (on a private containerd under its data
//! dir when no system containerd answers), and the shipped example task
//! definition runs a container.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, ensure, Result};
use berth_e2e::agents::*;
use berth_e2e::*;

const T: Duration = Duration::from_secs(90);

struct Dev {
    child: std::process::Child,
    data: std::path::PathBuf,
}

impl Drop for Dev {
    fn drop(&mut self) {
        // The dev agent and private containerd are in the same process
        // group as berthd only when started from a terminal; stop them here.
        let socket = self.data.join("containerd/containerd.sock");
        if socket.exists() {
            cleanup_namespace(&socket, "berth");
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let pattern = self.data.display().to_string();
        let _ = Command::new("pkill").args(["-f", &pattern]).status();
        std::thread::sleep(Duration::from_millis(500));
        let _ = Command::new("pkill").args(["-9", "-f", &pattern]).status();
    }
}

fn workspace_root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn berthd_dev_runs_the_example_task_on_a_local_agent() -> Result<()> {
    // The same environment gate as the other containerd tests: this needs
    // root and containerd, which the test command sets up.
    if ContainerdEnv::from_env().is_none() {
        return Ok(());
    }
    let work = tempfile::tempdir()?;
    let data = work.path().join("data");
    std::fs::create_dir_all(data.join("images"))?;
    let testapp = berth_agent::ocibuild::static_testapp_binary(&workspace_root())?;
    let image = berth_agent::ocibuild::single_binary_image("berth-testapp", &testapp, &[])?;
    image.write_oci_layout("localhost/berth/hello:1", &data.join("images/hello.tar"))?;

    let addr = format!("127.0.0.1:{}", free_port());
    let child = Command::new(binary("berthd"))
        .args(["dev", "--data-dir"])
        .arg(&data)
        .args(["--listen", &addr])
        .stdout(std::fs::File::create(work.path().join("dev.out"))?)
        .stderr(std::fs::File::create(work.path().join("dev.err"))?)
        .spawn()?;
    let _dev = Dev {
        child,
        data: data.clone(),
    };
    let printed = eventually(T, || async {
        let out = std::fs::read_to_string(work.path().join("dev.out"))?;
        ensure!(out.contains("berth task run"), "not ready yet: {out}");
        Ok(out)
    })
    .await?;
    let token = printed
        .lines()
        .find_map(|l| l.trim().strip_prefix("admin token: "))
        .ok_or_else(|| anyhow!("no admin token printed:\n{printed}"))?
        .to_string();
    assert!(printed.contains("local agent:"), "{printed}");

    // Everything through the CLI, as the README shows it.
    let berth = |args: &[&str]| -> Result<String> {
        let out = Command::new(binary("berth"))
            .args(["--endpoint", &addr, "--token", &token, "--ca-cert"])
            .arg(data.join("pki/ca.crt"))
            .args(args)
            .output()?;
        ensure!(
            out.status.success(),
            "berth {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    eventually(T, || async {
        let list = berth(&["instance", "list", "-o", "json"])?;
        ensure!(
            list.contains("\"ACTIVE\""),
            "no ACTIVE instance yet: {list}"
        );
        Ok(())
    })
    .await
    .map_err(|e| {
        let log = std::fs::read_to_string(data.join("agent.log")).unwrap_or_default();
        e.context(format!("agent log:\n{log}"))
    })?;
    let example = workspace_root().join("deploy/examples/hello.json");
    berth(&["taskdef", "register", "-f", example.to_str().unwrap()])?;
    let run = berth(&["task", "run", "--taskdef", "hello", "-o", "json"])?;
    let tasks: serde_json::Value = serde_json::from_str(&run)?;
    let id = tasks[0]["id"].as_str().unwrap().to_string();
    eventually(T, || async {
        let task: serde_json::Value =
            serde_json::from_str(&berth(&["task", "describe", &id, "-o", "json"])?)?;
        ensure!(task["lastStatus"] == "RUNNING", "not running yet: {task}");
        Ok(())
    })
    .await?;
    let logs = eventually(T, || async {
        let logs = berth(&["task", "logs", &id])?;
        ensure!(logs.contains("tick"), "no output yet: {logs:?}");
        Ok(logs)
    })
    .await?;
    assert!(logs.contains("args=[\"ticker\", \"1000\"]"), "{logs}");
    berth(&["task", "stop", &id])?;
    let stopped = eventually(T, || async {
        let task: serde_json::Value =
            serde_json::from_str(&berth(&["task", "describe", &id, "-o", "json"])?)?;
        ensure!(task["lastStatus"] == "STOPPED", "not stopped yet: {task}");
        Ok(task)
    })
    .await?;
    assert_eq!(stopped["stopCode"], "UserInitiated");
    Ok(())
}
