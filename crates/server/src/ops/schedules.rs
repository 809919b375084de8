//! Scheduled tasks: create, change, pause, resume and delete schedules.
//! Firing them is the `Schedules` controller's job.

use berth_types::scheduled::{Schedule, ScheduleSpec};
use berth_types::{Command, CommandOutput};

use super::{check_len, cluster_or_default, invalid, unexpected, Ops};
use crate::error::ServerError;

fn schedule_of(output: CommandOutput) -> Result<Schedule, ServerError> {
    match output {
        CommandOutput::Schedule(schedule) => Ok(*schedule),
        other => Err(unexpected(other)),
    }
}

impl Ops {
    /// Checks what the state machine would refuse anyway, and what it
    /// cannot check (placement expressions), before a Raft round.
    fn check_schedule(spec: &ScheduleSpec) -> Result<(), ServerError> {
        check_len("name", &spec.name, berth_types::limits::MAX_ID_LEN)?;
        check_len(
            "taskDefinition",
            &spec.task_definition,
            berth_types::limits::MAX_ID_LEN,
        )?;
        spec.validate()?;
        berth_scheduler::parse_strategies(&spec.placement_strategies)
            .map_err(|e| invalid("placementStrategy", e.to_string()))?;
        berth_scheduler::parse_constraints(&spec.placement_constraints)
            .map_err(|e| invalid("placementConstraints", e.to_string()))?;
        Ok(())
    }

    pub async fn put_schedule(
        &self,
        spec: ScheduleSpec,
        create: bool,
    ) -> Result<Schedule, ServerError> {
        Self::check_schedule(&spec)?;
        let output = self
            .node()
            .write(Command::PutSchedule {
                spec,
                create,
                at_ms: crate::api::now_ms(),
            })
            .await?;
        schedule_of(output)
    }

    pub async fn list_schedules(&self, cluster: &str) -> Result<Vec<Schedule>, ServerError> {
        self.node()
            .read(|state| {
                state
                    .schedules()
                    .filter(|s| cluster.is_empty() || s.spec.cluster == cluster)
                    .cloned()
                    .collect()
            })
            .await
    }

    pub async fn describe_schedule(
        &self,
        cluster: &str,
        name: &str,
    ) -> Result<Schedule, ServerError> {
        let cluster = cluster_or_default(cluster);
        self.node()
            .read(|state| state.schedule(&cluster, name).cloned())
            .await?
            .ok_or_else(|| ServerError::NotFound(format!("schedule {cluster}/{name} not found")))
    }

    pub async fn set_schedule_paused(
        &self,
        cluster: &str,
        name: &str,
        paused: bool,
    ) -> Result<Schedule, ServerError> {
        let cluster = cluster_or_default(cluster);
        let output = self
            .node()
            .write(Command::SetSchedulePaused {
                cluster: cluster.clone(),
                name: name.to_string(),
                paused,
                at_ms: crate::api::now_ms(),
            })
            .await?;
        match output {
            // Already in that state: answer with the schedule as it is.
            CommandOutput::Unchanged => self.describe_schedule(&cluster, name).await,
            other => schedule_of(other),
        }
    }

    pub async fn delete_schedule(
        &self,
        cluster: &str,
        name: &str,
    ) -> Result<Schedule, ServerError> {
        let output = self
            .node()
            .write(Command::DeleteSchedule {
                cluster: cluster_or_default(cluster),
                name: name.to_string(),
                at_ms: crate::api::now_ms(),
            })
            .await?;
        schedule_of(output)
    }
}
