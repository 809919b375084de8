//! End-to-end: 3 berthd servers, 2 real berth-agents, real containerd.
//! Tasks are placed, run, logged, stopped; constraints, strategies and
//! draining are honoured; agents and the leader are killed while tasks run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{ensure, Result};
use berth_e2e::agents::*;
use berth_e2e::*;
use berth_proto::pb;
use berth_types::{ContainerStatus, DesiredStatus, InstanceState, StopCode, Task, TaskStatus};

const T: Duration = Duration::from_secs(60);

/// The shared agent cluster (cluster `e2e`), with task definitions for the
/// test image.
async fn setup(lost_after_secs: u64) -> Result<Option<AgentCluster>> {
    let Some(s) = AgentCluster::start("e2e", lost_after_secs, 4).await? else {
        return Ok(None);
    };
    for (family, command) in [
        ("ticker", vec!["ticker", "200"]),
        ("exiter", vec!["exit", "3"]),
    ] {
        taskdefs(&s.addr(1))
            .await?
            .register_task_definition(pb::RegisterTaskDefinitionRequest {
                spec: Some(testapp_taskdef(family, &s.image, &command, 32)),
            })
            .await?;
    }
    Ok(Some(s))
}

fn run_request(family: &str, count: u32) -> pb::RunTaskRequest {
    pb::RunTaskRequest {
        cluster: "e2e".into(),
        task_definition: family.into(),
        count,
        ..Default::default()
    }
}

async fn run(addr: &str, request: pb::RunTaskRequest) -> Result<Vec<pb::Task>> {
    Ok(tasks_client(addr)
        .await?
        .run_task(request)
        .await?
        .into_inner()
        .tasks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_are_placed_run_logged_and_stopped() -> Result<()> {
    let Some(s) = setup(300).await? else {
        return Ok(());
    };
    let (a1, a2) = (s.addr(1), s.addr(2));
    let mut zone_a = s.agent("zone-a", &["zone=a"]);
    zone_a.start()?;
    let inst_a = wait_instance_status(&a1, &zone_a, InstanceState::Active, T).await?;
    assert!(inst_a.agent_connected);
    assert!(zone_a.health("/healthz") && zone_a.health("/readyz"));
    assert!(inst_a.cpu_registered >= 1024, "{inst_a:?}");
    assert!(inst_a.agent_version.is_some());

    // Only zone b will do, and there is no zone b yet: the task waits, with
    // a reason a person can act on, and is not refused.
    let mut constrained = run_request("ticker", 1);
    constrained.placement_constraints = vec!["memberOf(attribute:agent.zone == b)".into()];
    let waiting = run(&a2, constrained).await?;
    let waiting_id = waiting[0].id.clone();
    let provisioning = eventually(T, || async {
        let t = describe_task(&a1, &waiting_id).await?;
        ensure!(!t.placement_reason.is_empty(), "no reason yet: {t:?}");
        Ok(t)
    })
    .await?;
    assert_eq!(provisioning.last_status, TaskStatus::Provisioning);
    assert!(
        provisioning.placement_reason.contains("constraint")
            || provisioning.placement_reason.contains("zone"),
        "{}",
        provisioning.placement_reason
    );

    // Zone b joins: the waiting task lands there.
    let mut zone_b = s.agent("zone-b", &["zone=b"]);
    zone_b.start()?;
    let inst_b = wait_instance_status(&a1, &zone_b, InstanceState::Active, T).await?;
    let placed = wait_task_status(&a1, &waiting_id, TaskStatus::Running, T).await?;
    assert_eq!(placed.instance_id, Some(inst_b.id.clone()));
    assert_eq!(placed.containers[0].status, ContainerStatus::Running);

    // distinctInstance: two tasks, one on each instance.
    let mut spread = run_request("ticker", 2);
    spread.placement_constraints = vec!["distinctInstance".into()];
    spread.group = "spread".into();
    let pair = run(&a1, spread).await?;
    let mut on = BTreeSet::new();
    for t in &pair {
        on.insert(
            wait_task_status(&a2, &t.id, TaskStatus::Running, T)
                .await?
                .instance_id,
        );
    }
    assert_eq!(on.len(), 2, "distinctInstance put both tasks on {on:?}");

    // Logs come from the agent through the control plane, via any server.
    let logs = eventually(T, || async {
        let text = task_logs(&s.addr(3), &waiting_id).await?;
        ensure!(text.contains("tick"), "no ticks yet: {text:?}");
        Ok(text)
    })
    .await?;
    assert!(logs.contains("testapp: args="), "{logs}");

    // An essential container that exits stops its task, with its exit code.
    let exiting = run(&a1, run_request("exiter", 1)).await?;
    let stopped = wait_task_status(&a1, &exiting[0].id, TaskStatus::Stopped, T).await?;
    assert_eq!(
        stopped.stop_code,
        Some(StopCode::EssentialContainerExited),
        "{stopped:?}"
    );
    assert_eq!(stopped.containers[0].exit_code, Some(3), "{stopped:?}");
    assert_eq!(stopped.desired_status, DesiredStatus::Stopped);
    // Its output stays readable after it stopped (the agent keeps a stopped
    // task's containers for its cleanup wait).
    let last_words = task_logs(&a2, &exiting[0].id).await?;
    assert!(
        last_words.contains("args=[\"exit\", \"3\"]"),
        "{last_words}"
    );

    // A stop by hand: the container is stopped on the host.
    let stop: Task = from_wire(
        tasks_client(&a2)
            .await?
            .stop_task(pb::StopTaskRequest {
                id: waiting_id.clone(),
                reason: "e2e says stop".into(),
            })
            .await?
            .into_inner()
            .task
            .unwrap(),
    )?;
    assert_eq!(stop.desired_status, DesiredStatus::Stopped);
    let stopped = wait_task_status(&a1, &waiting_id, TaskStatus::Stopped, T).await?;
    assert_eq!(stopped.stop_code, Some(StopCode::UserInitiated));
    assert_eq!(stopped.stopped_reason, "e2e says stop");
    let running_b = s.env.running_containers(&zone_b.namespace)?;
    assert!(
        !running_b.iter().any(|c| c.contains(&waiting_id)),
        "the stopped task's container still runs: {running_b:?}"
    );

    // Drain zone a: new tasks go only to zone b.
    instances_client(&a1)
        .await?
        .drain_instance(pb::DrainInstanceRequest {
            id: inst_a.id.clone(),
        })
        .await?;
    assert_eq!(
        instance(&a2, &inst_a.id).await?.status,
        InstanceState::Draining
    );
    let mut binpacked = run_request("ticker", 2);
    binpacked.placement_strategies = vec!["binpack:memory".into()];
    binpacked.group = "after-drain".into();
    for t in run(&a1, binpacked).await? {
        let t = wait_task_status(&a1, &t.id, TaskStatus::Running, T).await?;
        assert_eq!(
            t.instance_id,
            Some(inst_b.id.clone()),
            "placed on a DRAINING instance"
        );
    }
    // The task already on zone a keeps running.
    let on_a: Vec<Task> = list(&a1, &inst_a.id).await?;
    assert!(
        on_a.iter().any(|t| t.last_status == TaskStatus::Running),
        "draining stopped tasks: {on_a:?}"
    );
    let b = instance(&a1, &inst_b.id).await?;
    let not_stopped = list(&a1, &inst_b.id)
        .await?
        .iter()
        .filter(|t| t.last_status != TaskStatus::Stopped)
        .count();
    assert_eq!(b.running_tasks as usize, not_stopped);
    assert!(b.memory_remaining_mib < b.memory_registered_mib);
    Ok(())
}

async fn list(addr: &str, instance_id: &str) -> Result<Vec<Task>> {
    tasks_client(addr)
        .await?
        .list_tasks(pb::ListTasksRequest {
            instance_id: instance_id.into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .tasks
        .into_iter()
        .map(from_wire)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_and_leaders_fail_without_losing_tasks() -> Result<()> {
    let Some(mut s) = setup(8).await? else {
        return Ok(());
    };
    let a1 = s.addr(1);
    let mut one = s.agent("one", &[]);
    let mut two = s.agent("two", &[]);
    one.start()?;
    two.start()?;
    let inst_one = wait_instance_status(&a1, &one, InstanceState::Active, T).await?;
    let inst_two = wait_instance_status(&a1, &two, InstanceState::Active, T).await?;
    let mut both = run_request("ticker", 4);
    both.placement_strategies = vec!["spread:instanceId".into()];
    let started = run(&a1, both).await?;
    let mut running = Vec::new();
    for t in &started {
        running.push(wait_task_status(&a1, &t.id, TaskStatus::Running, T).await?);
    }
    let on_two: Vec<&Task> = running
        .iter()
        .filter(|t| t.instance_id.as_ref() == Some(&inst_two.id))
        .collect();
    assert_eq!(on_two.len(), 2, "spread:instanceId: {running:?}");
    let containers_two = s.env.running_containers(&two.namespace)?;
    assert_eq!(containers_two.len(), 2, "{containers_two:?}");

    // kill -9 of an agent and a restart: containers keep running, nothing is
    // restarted, and the instance reconnects.
    two.kill9();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.env.running_containers(&two.namespace)?, containers_two);
    two.start()?;
    eventually(T, || async {
        let i = instance(&a1, &inst_two.id).await?;
        ensure!(
            i.agent_connected && i.connected_since_ms > inst_two.connected_since_ms,
            "not reconnected yet: {i:?}"
        );
        Ok(())
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(s.env.running_containers(&two.namespace)?, containers_two);
    for t in &running {
        let now = describe_task(&a1, &t.id).await?;
        assert_eq!(now.last_status, TaskStatus::Running, "{now:?}");
        assert_eq!(
            now.started_at_ms, t.started_at_ms,
            "task restarted: {now:?}"
        );
    }

    // A container that dies while its agent is down: the restarted agent
    // finds the exit and reports the task STOPPED with its exit code.
    two.kill9();
    let victim = on_two[0].id.clone();
    let container = containers_two
        .iter()
        .find(|c| c.contains(&victim))
        .cloned()
        .expect("the task's container is named after it");
    let killed = std::process::Command::new("ctr")
        .arg("--address")
        .arg(&s.env.socket)
        .args([
            "-n",
            &two.namespace,
            "tasks",
            "kill",
            "-s",
            "SIGKILL",
            &container,
        ])
        .status()?;
    assert!(killed.success());
    tokio::time::sleep(Duration::from_millis(500)).await;
    two.start()?;
    let dead = wait_task_status(&a1, &victim, TaskStatus::Stopped, T).await?;
    assert_eq!(
        dead.stop_code,
        Some(StopCode::EssentialContainerExited),
        "{dead:?}"
    );
    assert_eq!(dead.containers[0].exit_code, Some(137), "{dead:?}");
    let running: Vec<Task> = running.into_iter().filter(|t| t.id != victim).collect();
    let containers_two = s.env.running_containers(&two.namespace)?;
    assert_eq!(containers_two.len(), 1, "{containers_two:?}");

    // kill -9 of the leader while tasks run: a new leader takes the agents'
    // sessions; no task is lost, duplicated or restarted.
    let leader = s.cluster.wait_for_leader(T).await?;
    s.cluster.server(leader).kill9();
    let other = if leader == 1 { 2 } else { 1 };
    let survivor = s.addr(other);
    s.cluster.wait_for_leader(T).await?;
    // Past the new leader's grace period, both instances are still ACTIVE.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for id in [&inst_one.id, &inst_two.id] {
        let i = instance(&survivor, id).await?;
        assert_eq!(
            i.status,
            InstanceState::Active,
            "after the leader change: {i:?}"
        );
    }
    let all: Vec<Task> = tasks_client(&survivor)
        .await?
        .list_tasks(pb::ListTasksRequest::default())
        .await?
        .into_inner()
        .tasks
        .into_iter()
        .map(from_wire)
        .collect::<Result<_>>()?;
    assert_eq!(all.len(), 4, "tasks duplicated or lost: {all:?}");
    assert_eq!(
        all.iter()
            .filter(|t| t.last_status == TaskStatus::Running)
            .count(),
        3,
        "{all:?}"
    );
    for t in &running {
        let now = describe_task(&survivor, &t.id).await?;
        assert_eq!(now.last_status, TaskStatus::Running, "{now:?}");
        assert_eq!(now.started_at_ms, t.started_at_ms);
    }
    assert_eq!(s.env.running_containers(&two.namespace)?, containers_two);

    // An agent cut off: DISCONNECTED first (tasks kept), then after
    // lost_after (8 s here) its tasks are STOPPED with InstanceLost.
    one.kill9();
    wait_instance_status(&survivor, &one, InstanceState::Disconnected, T).await?;
    let on_one: Vec<&Task> = running
        .iter()
        .filter(|t| t.instance_id.as_ref() == Some(&inst_one.id))
        .collect();
    for t in &on_one {
        assert_eq!(
            describe_task(&survivor, &t.id).await?.last_status,
            TaskStatus::Running
        );
    }
    for t in &on_one {
        let lost = wait_task_status(&survivor, &t.id, TaskStatus::Stopped, T).await?;
        assert_eq!(lost.stop_code, Some(StopCode::InstanceLost), "{lost:?}");
    }
    // Its containers still run on the host until the agent comes back and
    // is told they are no longer wanted.
    assert_eq!(s.env.running_containers(&one.namespace)?.len(), 2);
    one.start()?;
    wait_instance_status(&survivor, &one, InstanceState::Active, T).await?;
    eventually(T, || async {
        let left = s.env.running_containers(&one.namespace)?;
        ensure!(left.is_empty(), "lost tasks still running: {left:?}");
        Ok(())
    })
    .await?;
    // The tasks of the other instance were never touched.
    assert_eq!(s.env.running_containers(&two.namespace)?, containers_two);
    Ok(())
}

/// ECS's restartPolicy end to end: a container that exits after running
/// past restartAttemptPeriod (ECS's minimum, 60 s: this test waits for it)
/// is restarted in place by its agent; the same task stays RUNNING, and
/// the restart count reaches the control plane and `berth task describe`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_policy_restarts_in_place_and_the_count_is_described() -> Result<()> {
    let Some(s) = setup(300).await? else {
        return Ok(());
    };
    let a1 = s.addr(1);
    let image = s.env.testapp_image().await?;
    let port = free_port();
    let mut spec = testapp_taskdef("crasher", &image, &["serve", &port.to_string()], 32);
    spec.container_definitions[0].restart_policy = Some(pb::RestartPolicy {
        enabled: true,
        ignored_exit_codes: vec![0],
        restart_attempt_period: Some(60),
    });
    taskdefs(&a1)
        .await?
        .register_task_definition(pb::RegisterTaskDefinitionRequest { spec: Some(spec) })
        .await?;
    let mut agent = s.agent("restarter", &[]);
    agent.start()?;
    wait_instance_status(&a1, &agent, InstanceState::Active, T).await?;
    let task = run(&a1, run_request("crasher", 1)).await?.remove(0);
    let running = wait_task_status(&a1, &task.id, TaskStatus::Running, T).await?;
    eventually(T, || async {
        let answer = http_get(port, "/health")?;
        ensure!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        Ok(())
    })
    .await?;

    tokio::time::sleep(Duration::from_secs(62)).await;
    let answer = http_get(port, "/exit/3")?;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let restarted = eventually(T, || async {
        let t = describe_task(&a1, &task.id).await?;
        let c = &t.containers[0];
        ensure!(
            c.restart_count == 1 && c.status == ContainerStatus::Running,
            "not restarted yet: {t:?}"
        );
        Ok(t)
    })
    .await
    .map_err(|e| e.context(format!("agent log:\n{}", agent.log())))?;
    assert_eq!(restarted.last_status, TaskStatus::Running);
    assert_eq!(restarted.started_at_ms, running.started_at_ms, "same task");
    assert_eq!(
        restarted.containers[0].reason,
        "restarted after exit code 3"
    );
    eventually(T, || async {
        let answer = http_get(port, "/health")?;
        ensure!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        Ok(())
    })
    .await?;

    let pki = test_pki();
    let describe = |json: bool| {
        let mut cmd = std::process::Command::new(binary("berth"));
        cmd.arg("--endpoint")
            .arg(&a1)
            .arg("--ca-cert")
            .arg(pki.dir.join("ca.crt"))
            .args(["task", "describe", &task.id])
            .env_remove("BERTH_ENDPOINT")
            .env_remove("BERTH_CA_CERT")
            .env_remove("BERTH_CONFIG")
            .env("BERTH_TOKEN", &pki.admin_token);
        if json {
            cmd.args(["-o", "json"]);
        }
        let out = cmd.output().expect("run berth");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = describe(false);
    assert!(text.contains("RUNNING (restarts: 1)"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&describe(true))?;
    assert_eq!(json["containers"][0]["restartCount"], 1, "{json}");
    assert_eq!(json["lastStatus"], "RUNNING");
    Ok(())
}
