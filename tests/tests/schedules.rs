//! End-to-end: a scheduled task on a real cluster with a real agent. A
//! `rate(1 minute)` schedule fires on the minute, its task runs through
//! containerd and exits non-zero, and that shows up as an event; the run
//! is audited with the schedule as its actor. The leader is killed just
//! before the next slot: the new leader fires it, and each slot runs once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use anyhow::{bail, Result};
use berth_e2e::agents::*;
use berth_e2e::*;
use berth_proto::pb;
use berth_proto::pb::event_service_client::EventServiceClient;
use berth_proto::pb::schedule_service_client::ScheduleServiceClient;
use berth_types::{InstanceState, TaskStatus};

const CLUSTER: &str = "sched";

async fn events(addr: &str, resource: &str) -> Result<Vec<pb::JournalEvent>> {
    let mut stream = EventServiceClient::new(channel(addr).await?)
        .watch_events(pb::WatchEventsRequest {
            resource: resource.to_string(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut all = Vec::new();
    while let Some(page) = stream.message().await? {
        all.extend(page.events);
    }
    Ok(all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_fires_on_time_and_its_failed_run_is_an_event() -> Result<()> {
    let Some(mut s) = AgentCluster::start(CLUSTER, 300, 2).await? else {
        return Ok(());
    };
    let (a1, a2, a3) = (s.addr(1), s.addr(2), s.addr(3));
    let mut agent = s.agent("sched-1", &[]);
    agent.start()?;
    wait_instance_status(&a1, &agent, InstanceState::Active, Duration::from_secs(60)).await?;
    taskdefs(&a1)
        .await?
        .register_task_definition(pb::RegisterTaskDefinitionRequest {
            spec: Some(testapp_taskdef("nightly-job", &s.image, &["exit", "3"], 32)),
        })
        .await?;

    let mut schedules = ScheduleServiceClient::new(channel(&a2).await?);
    // Bad input is refused naming the field, and creates nothing.
    let refused = schedules
        .create_schedule(pb::ScheduleRequest {
            spec: Some(pb::ScheduleSpec {
                cluster: CLUSTER.into(),
                name: "job".into(),
                expression: "cron(0 3 * * *)".into(),
                task_definition: "nightly-job".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("scheduleExpression"),
        "{}",
        refused.message()
    );

    let created = schedules
        .create_schedule(pb::ScheduleRequest {
            spec: Some(pb::ScheduleSpec {
                cluster: CLUSTER.into(),
                name: "job".into(),
                expression: "rate(1 minute)".into(),
                task_definition: "nightly-job".into(),
                count: 1,
                ..Default::default()
            }),
        })
        .await?
        .into_inner()
        .schedule
        .unwrap();
    let first_slot = created
        .next_slot_ms
        .expect("an enabled schedule has a next run");
    assert_eq!(first_slot, created.created_at_ms + 60_000);

    // The slot fires (on any server's view), and its task runs and fails.
    let name = pb::ScheduleName {
        cluster: CLUSTER.into(),
        name: "job".into(),
    };
    let run = eventually(Duration::from_secs(100), || {
        let name = name.clone();
        let a3 = a3.clone();
        async move {
            let schedule = ScheduleServiceClient::new(channel(&a3).await?)
                .describe_schedule(name)
                .await?
                .into_inner()
                .schedule
                .unwrap();
            match schedule.runs.last() {
                Some(run) => Ok(run.clone()),
                None => bail!("no run yet"),
            }
        }
    })
    .await?;
    assert_eq!(run.slot_ms, first_slot, "the first run is the first slot");
    assert_eq!(run.outcome, "STARTED", "{run:?}");
    assert!(
        run.fired_at_ms >= first_slot && run.fired_at_ms < first_slot + 10_000,
        "fired {} ms after its slot",
        run.fired_at_ms - first_slot
    );
    let task_id = run.task_ids[0].clone();
    let task =
        wait_task_status(&a1, &task_id, TaskStatus::Stopped, Duration::from_secs(60)).await?;
    assert_eq!(task.started_by, "schedule/job");

    let resource = format!("schedule/{CLUSTER}/job");
    let history = eventually(Duration::from_secs(30), || {
        let (a2, resource) = (a2.clone(), resource.clone());
        async move {
            let history = events(&a2, &resource).await?;
            if !history
                .iter()
                .any(|e| e.summary.contains("exited with code 3"))
            {
                bail!("no failure event yet: {history:?}");
            }
            Ok(history)
        }
    })
    .await?;
    let fired = history
        .iter()
        .find(|e| e.summary.contains("STARTED"))
        .expect("a run event");
    let actor = fired.actor.clone().unwrap();
    assert_eq!(
        (actor.principal.as_str(), actor.operation.as_str()),
        ("schedule:sched/job", "RunTask")
    );
    let failure = history
        .iter()
        .find(|e| e.summary.contains("exited with code 3"))
        .unwrap();
    assert!(failure.summary.contains(&task_id), "{}", failure.summary);

    // The run is audited with the schedule as its actor.
    let audit = EventServiceClient::new(channel(&a3).await?)
        .list_audit_records(pb::ListAuditRecordsRequest {
            actor: "schedule:sched/job".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .records;
    assert!(
        audit.iter().any(|r| r.command == "fire_schedule"
            && r.outcome == "applied"
            && r.resource == resource),
        "{audit:?}"
    );

    // A leader failover just before the next slot: the new leader fires
    // it, once, and nobody fires the one already run again.
    let second_slot = first_slot + 60_000;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let wait_ms = second_slot - 3_000 - now_ms;
    if wait_ms > 0 {
        tokio::time::sleep(Duration::from_millis(wait_ms as u64)).await;
    }
    let leader = s.cluster.wait_for_leader(Duration::from_secs(10)).await?;
    s.cluster.server(leader).kill9();
    let survivors: Vec<String> = (1..=3)
        .filter(|id| *id != leader)
        .map(|id| s.addr(id))
        .collect();
    let new_leader = s.cluster.wait_for_leader(Duration::from_secs(20)).await?;
    assert_ne!(new_leader, leader);
    for addr in &survivors {
        let runs = eventually(Duration::from_secs(30), || {
            let (name, addr) = (name.clone(), addr.clone());
            async move {
                let schedule = ScheduleServiceClient::new(channel(&addr).await?)
                    .describe_schedule(name)
                    .await?
                    .into_inner()
                    .schedule
                    .unwrap();
                if schedule.runs.len() < 2 {
                    bail!("slot {second_slot} not fired yet: {:?}", schedule.runs);
                }
                Ok(schedule.runs)
            }
        })
        .await?;
        // Newest first.
        let mut slots: Vec<i64> = runs.iter().map(|r| r.slot_ms).collect();
        slots.sort_unstable();
        assert_eq!(
            slots,
            vec![first_slot, second_slot],
            "each slot once: {runs:?}"
        );
        assert_ne!(runs[0].task_ids, runs[1].task_ids);
    }
    // Still once a few controller passes later.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let runs = ScheduleServiceClient::new(channel(&survivors[0]).await?)
        .describe_schedule(name.clone())
        .await?
        .into_inner()
        .schedule
        .unwrap()
        .runs;
    assert_eq!(runs.len(), 2, "{runs:?}");
    s.cluster.server(leader).start()?;
    let mut schedules = ScheduleServiceClient::new(channel(&survivors[0]).await?);

    // Paused: no next run (that nothing fires while paused is the
    // controller's unit tests' business: it takes a minute to show here).
    let paused = schedules.pause_schedule(name.clone()).await?.into_inner();
    let paused = paused.schedule.unwrap();
    assert_eq!(paused.state, "PAUSED");
    assert_eq!(paused.next_slot_ms, None);
    schedules.delete_schedule(name.clone()).await?;
    let gone = schedules.describe_schedule(name).await.unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound);
    Ok(())
}
