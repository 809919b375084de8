//! Turns applied commands into journal records.
//!
//! Task, instance and service events are found by comparing each record a
//! command touched (the `StateEvent`s it raised) with what the journal last
//! said about it, kept in `JournalViews`. The views are derived: a pure
//! function of the records at every command boundary, rebuilt from a
//! snapshot, so every server says the same thing at the same cursor.
//! Events that only the command itself can tell (a token revoked, a task
//! definition registered) come from the command.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{IdMap, State};
use crate::command::{Command, CommandOutput};
use crate::error::StateError;
use crate::event::StateEvent;
use crate::journal::{Actor, Change, EventDetail};
use crate::service::{DeploymentStatus, RolloutState, Service, ServiceStatus};
use crate::task::{DesiredStatus, Task, TaskStatus};
use crate::{Instance, InstanceStatus, TagTarget, TaskDefinitionStatus};

#[derive(Debug, Clone, PartialEq, Eq)]
struct TaskView {
    desired: DesiredStatus,
    last: TaskStatus,
    /// Tags too, so a TagResource on the task is journaled.
    tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct InstanceView {
    status: InstanceStatus,
    connected: bool,
    draining: bool,
    tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct DeploymentView {
    status: DeploymentStatus,
    rollout: RolloutState,
    traffic: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ServiceView {
    status: ServiceStatus,
    desired_count: u32,
    task_definition: String,
    next_event_id: u64,
    tags: BTreeMap<String, String>,
    deployments: HashMap<String, DeploymentView>,
}

/// What the journal last said about each live record.
#[derive(Debug, Clone, Default)]
pub(crate) struct JournalViews {
    tasks: IdMap<TaskView>,
    instances: IdMap<InstanceView>,
    services: HashMap<(String, String), ServiceView>,
}

fn task_view(task: &Task) -> TaskView {
    TaskView {
        desired: task.desired_status,
        last: task.last_status,
        tags: task.tags.clone(),
    }
}

fn instance_view(instance: &Instance) -> InstanceView {
    InstanceView {
        status: instance.status,
        connected: instance.agent_connected,
        draining: instance.draining,
        tags: instance.tags.clone(),
    }
}

fn service_view(service: &Service) -> ServiceView {
    ServiceView {
        status: service.status,
        desired_count: service.desired_count,
        task_definition: service.task_definition.clone(),
        next_event_id: service.next_event_id,
        tags: service.tags.clone(),
        deployments: service
            .deployments
            .iter()
            .chain(&service.finished_deployments)
            .map(|d| {
                (
                    d.id.clone(),
                    DeploymentView {
                        status: d.status,
                        rollout: d.rollout_state,
                        traffic: d.traffic_percent,
                    },
                )
            })
            .collect(),
    }
}

impl JournalViews {
    pub(crate) fn rebuild(state: &State) -> Self {
        Self {
            tasks: state
                .tasks
                .iter()
                .map(|(id, t)| (id.clone(), task_view(t)))
                .collect(),
            instances: state
                .instances
                .iter()
                .map(|(id, i)| (id.clone(), instance_view(i)))
                .collect(),
            services: state
                .services
                .iter()
                .map(|(key, s)| (key.clone(), service_view(s)))
                .collect(),
        }
    }
}

/// The event a command states by itself, taken before it is applied.
fn command_event(command: &Command) -> Option<(String, EventDetail)> {
    let cluster_change = |name: &String, change| {
        Some((
            name.clone(),
            EventDetail::ClusterChange {
                name: name.clone(),
                change,
            },
        ))
    };
    match command {
        Command::CreateCluster { name, .. } | Command::CreateTaggedCluster { name, .. } => {
            cluster_change(name, Change::Created)
        }
        Command::UpdateClusterSettings { name, .. } => cluster_change(name, Change::Updated),
        Command::DeleteCluster { name } => cluster_change(name, Change::Deleted),
        // Tasks, instances and services are journaled by comparing their
        // records (whose views include tags); clusters have no view.
        Command::TagResource {
            target: TagTarget::Cluster { name },
            ..
        }
        | Command::UntagResource {
            target: TagTarget::Cluster { name },
            ..
        } => cluster_change(name, Change::Updated),
        Command::DeregisterTaskDefinition {
            family, revision, ..
        } => Some((
            String::new(),
            EventDetail::TaskDefinitionStateChange {
                family: family.clone(),
                revision: *revision,
                status: TaskDefinitionStatus::Inactive,
            },
        )),
        Command::DeleteTaskDefinition {
            family, revision, ..
        } => Some((
            String::new(),
            EventDetail::TaskDefinitionStateChange {
                family: family.clone(),
                revision: *revision,
                status: TaskDefinitionStatus::Deleted,
            },
        )),
        Command::BootstrapAdminToken { id, .. } => Some((
            String::new(),
            EventDetail::TokenChange {
                token_id: id.clone(),
                role: Some(crate::Role::Admin),
                change: Change::Created,
            },
        )),
        Command::CreateApiToken { id, role, .. } | Command::CreateAwsAccessKey { id, role, .. } => {
            Some((
                String::new(),
                EventDetail::TokenChange {
                    token_id: id.clone(),
                    role: Some(*role),
                    change: Change::Created,
                },
            ))
        }
        Command::RevokeApiToken { id, .. } => Some((
            String::new(),
            EventDetail::TokenChange {
                token_id: id.clone(),
                role: None,
                change: Change::Revoked,
            },
        )),
        Command::CreateActivation { id, cluster, .. } => Some((
            cluster.clone(),
            EventDetail::ActivationChange {
                activation_id: id.clone(),
                change: Change::Created,
            },
        )),
        Command::RevokeActivation { id, .. } => Some((
            String::new(),
            EventDetail::ActivationChange {
                activation_id: id.clone(),
                change: Change::Revoked,
            },
        )),
        Command::PutSchedule { spec, create, .. } => Some((
            spec.cluster.clone(),
            EventDetail::ScheduleChange {
                name: spec.name.clone(),
                change: if *create {
                    Change::Created
                } else {
                    Change::Updated
                },
            },
        )),
        Command::DeleteSchedule { cluster, name, .. } => Some((
            cluster.clone(),
            EventDetail::ScheduleChange {
                name: name.clone(),
                change: Change::Deleted,
            },
        )),
        Command::SetSchedulePaused {
            cluster,
            name,
            paused,
            ..
        } => Some((
            cluster.clone(),
            EventDetail::ScheduleChange {
                name: name.clone(),
                change: if *paused {
                    Change::Paused
                } else {
                    Change::Resumed
                },
            },
        )),
        Command::RevokeCertificate {
            fingerprint,
            description,
            ..
        } => Some((
            String::new(),
            EventDetail::CertificateRevoked {
                fingerprint: fingerprint.clone(),
                description: description.clone(),
            },
        )),
        _ => None,
    }
}

impl State {
    /// Starts applying log entry `index`, proposed at `at_ms` (the
    /// proposer's clock, so every server stamps its records alike).
    pub fn begin_entry(&mut self, index: u64, at_ms: i64) {
        self.journal.begin_entry(index);
        self.journal.set_clock(at_ms);
    }

    /// Starts applying an entry that carries no clock (a membership
    /// change): its records take the time of the entry before.
    pub fn begin_untimed_entry(&mut self, index: u64) {
        self.journal.begin_entry(index);
    }

    /// Applies one command on behalf of `actor`, journaling what changed
    /// and, for a call, the call itself (applied or refused). A refused
    /// command changes nothing but the audit record.
    pub fn apply_by(
        &mut self,
        command: Command,
        actor: &Actor,
    ) -> Result<CommandOutput, StateError> {
        // What an agent reports is the instance's doing, whichever server
        // relayed it.
        let reporter = match &command {
            Command::ReportTaskStatus { instance_id, .. }
            | Command::InstanceConnected { instance_id, .. }
                if !actor.is_call() =>
            {
                Some(Actor {
                    principal: crate::journal::Principal::Instance {
                        id: instance_id.clone(),
                    },
                    operation: String::new(),
                    peer: String::new(),
                })
            }
            // A slot firing is the schedule's call (audited as such).
            Command::FireSchedule(fire) if !actor.is_call() => Some(Actor {
                principal: crate::journal::Principal::Schedule {
                    cluster: fire.cluster.clone(),
                    name: fire.name.clone(),
                },
                operation: "RunTask".to_string(),
                peer: String::new(),
            }),
            _ => None,
        };
        let actor = reporter.as_ref().unwrap_or(actor);
        let mark = self.events.len();
        let kind = command.kind();
        let audited = actor.is_call().then(|| command.resource());
        let stated = command_event(&command);
        let purges = matches!(command, Command::PurgeStoppedTasks { .. });
        let tagged_definition = match &command {
            Command::TagResource {
                target: TagTarget::TaskDefinition { family, revision },
                ..
            }
            | Command::UntagResource {
                target: TagTarget::TaskDefinition { family, revision },
                ..
            } => Some((family.clone(), *revision)),
            _ => None,
        };
        let result = self.apply(command);
        if let Some(resource) = audited {
            let resource = match &result {
                Ok(output) => refine_resource(resource, output),
                Err(_) => resource,
            };
            let error = result.as_ref().err().map(ToString::to_string);
            self.journal.record_audit(actor, kind, resource, error);
        }
        let Ok(output) = &result else {
            return result;
        };
        let unchanged = matches!(output, CommandOutput::Unchanged);
        if let Some((cluster, detail)) = stated.filter(|_| !unchanged) {
            self.journal.record_event(actor, &cluster, detail);
        }
        if let (CommandOutput::Schedule(schedule), "fire_schedule") = (output, kind) {
            if let Some(run) = schedule.runs.first() {
                self.journal.record_event(
                    actor,
                    &schedule.spec.cluster,
                    EventDetail::ScheduleRun {
                        name: schedule.spec.name.clone(),
                        slot_ms: run.slot_ms,
                        outcome: run.outcome,
                        reason: run.reason.clone(),
                        task_ids: run.task_ids.clone(),
                    },
                );
            }
        }
        if let Some(detail) = secret_event(kind, output) {
            self.journal.record_event(actor, "", detail);
        }
        if let CommandOutput::TaskDefinition(td) = output {
            self.journal.record_event(
                actor,
                "",
                EventDetail::TaskDefinitionStateChange {
                    family: td.family.clone(),
                    revision: td.revision,
                    status: td.status,
                },
            );
        }
        // A revision whose tags changed is told with its status, as a
        // registration or deregistration is.
        if let (CommandOutput::Tags(_), Some((family, revision))) = (output, tagged_definition) {
            if let Some(td) = self.task_definition(&family, revision) {
                let status = td.status;
                self.journal.record_event(
                    actor,
                    "",
                    EventDetail::TaskDefinitionStateChange {
                        family,
                        revision,
                        status,
                    },
                );
            }
        }
        self.journal_changes(mark, actor);
        if purges {
            self.forget_purged_views();
        }
        result
    }

    /// Journals the Raft membership that entry `index` put in force.
    pub fn record_membership(&mut self, actor: &Actor, voters: Vec<u64>, learners: Vec<u64>) {
        self.journal.record_event(
            actor,
            "",
            EventDetail::MembershipChange { voters, learners },
        );
    }

    /// Events for every task, instance and service the command touched
    /// whose journaled view moved.
    fn journal_changes(&mut self, mark: usize, actor: &Actor) {
        // Moved out while journaling (which raises no state events) and put
        // back after: a bulk command touches thousands of tasks, and copying
        // and hashing each event cost more than journaling it.
        let mut touched = self.events.split_off(mark.min(self.events.len()));
        let mut seen = HashSet::new();
        for event in &touched {
            match event {
                // Not deduplicated: a task journaled again finds its view
                // unchanged and says nothing, which is cheaper than hashing
                // every task's event to find the rare repeat.
                StateEvent::Task { task_id, .. } => self.journal_task(task_id, actor),
                StateEvent::Instance { instance_id } => {
                    if seen.insert(event) {
                        self.journal_instance(instance_id, actor);
                    }
                }
                StateEvent::Service { cluster, name } => {
                    if seen.insert(event) {
                        self.journal_service(cluster, name, actor);
                    }
                }
            }
        }
        self.events.append(&mut touched);
    }

    fn journal_task(&mut self, task_id: &str, actor: &Actor) {
        let Some(task) = self.tasks.get(task_id) else {
            self.journal_views.tasks.remove(task_id);
            return;
        };
        let now = task_view(task);
        if self.journal_views.tasks.get(task_id) == Some(&now) {
            return;
        }
        let detail = EventDetail::TaskStateChange {
            task_id: task.id.clone(),
            task_definition: task.task_definition(),
            group: task.group.clone(),
            instance_id: task.instance_id.clone(),
            desired_status: task.desired_status,
            last_status: task.last_status,
            stop_code: task.stop_code,
            stopped_reason: task.stopped_reason.clone(),
        };
        let cluster = task.cluster.clone();
        let scheduled_failure = scheduled_failure(task);
        match self.journal_views.tasks.get_mut(task_id) {
            Some(view) => *view = now,
            None => {
                self.journal_views.tasks.insert(task_id.to_string(), now);
            }
        }
        self.journal.record_event(actor, &cluster, detail);
        if let Some(detail) = scheduled_failure {
            self.journal.record_event(actor, &cluster, detail);
        }
    }

    fn journal_instance(&mut self, instance_id: &str, actor: &Actor) {
        let Some(instance) = self.instances.get(instance_id) else {
            self.journal_views.instances.remove(instance_id);
            return;
        };
        let now = instance_view(instance);
        if self.journal_views.instances.get(instance_id) == Some(&now) {
            return;
        }
        let detail = EventDetail::InstanceStateChange {
            instance_id: instance.id.clone(),
            status: instance.status,
            agent_connected: instance.agent_connected,
            draining: instance.draining,
        };
        let cluster = instance.cluster.clone();
        self.journal_views
            .instances
            .insert(instance_id.to_string(), now);
        self.journal.record_event(actor, &cluster, detail);
    }

    fn journal_service(&mut self, cluster: &str, name: &str, actor: &Actor) {
        let key = (cluster.to_string(), name.to_string());
        let Some(service) = self.services.get(&key) else {
            self.journal_views.services.remove(&key);
            return;
        };
        let now = service_view(service);
        let before = self.journal_views.services.get(&key);
        if before == Some(&now) {
            return;
        }
        let mut details = Vec::new();
        // A tag change is a change of the service's own record, so it is
        // told with its headline.
        let headline_moved = before.is_none_or(|b| {
            (b.status, b.desired_count, &b.task_definition, &b.tags)
                != (
                    now.status,
                    now.desired_count,
                    &now.task_definition,
                    &now.tags,
                )
        });
        if headline_moved {
            details.push(EventDetail::ServiceStateChange {
                service: name.to_string(),
                status: service.status,
                desired_count: service.desired_count,
                task_definition: service.task_definition.clone(),
            });
        }
        // Oldest first, as they happened.
        for deployment in service
            .deployments
            .iter()
            .chain(&service.finished_deployments)
            .rev()
        {
            let moved = before
                .and_then(|b| b.deployments.get(&deployment.id))
                .is_none_or(|d| {
                    (d.status, d.rollout, d.traffic)
                        != (
                            deployment.status,
                            deployment.rollout_state,
                            deployment.traffic_percent,
                        )
                });
            if moved {
                details.push(EventDetail::DeploymentStateChange {
                    service: name.to_string(),
                    deployment_id: deployment.id.clone(),
                    task_definition: deployment.task_definition.clone(),
                    status: deployment.status,
                    rollout_state: deployment.rollout_state,
                    reason: deployment.rollout_state_reason.clone(),
                    traffic_percent: deployment.traffic_percent,
                });
            }
        }
        let said_up_to = before.map_or(0, |b| b.next_event_id);
        for said in service.events.iter().rev().filter(|e| e.id >= said_up_to) {
            details.push(EventDetail::ServiceAction {
                service: name.to_string(),
                message: said.message.clone(),
            });
        }
        self.journal_views.services.insert(key, now);
        for detail in details {
            self.journal.record_event(actor, cluster, detail);
        }
    }

    /// Purged records raise no events; their views go with them.
    fn forget_purged_views(&mut self) {
        let views = &mut self.journal_views;
        views.tasks.retain(|id, _| self.tasks.contains_key(id));
        views
            .instances
            .retain(|id, _| self.instances.contains_key(id));
        views
            .services
            .retain(|key, _| self.services.contains_key(key));
    }
}

/// A secret's change, from what its command returned: the name and
/// version, never the (sealed) value.
fn secret_event(kind: &str, output: &CommandOutput) -> Option<EventDetail> {
    let CommandOutput::Secret(secret) = output else {
        return None;
    };
    let change = match kind {
        "create_secret" => Change::Created,
        "update_secret" => Change::Updated,
        "delete_secret" => Change::Deleted,
        _ => return None,
    };
    Some(EventDetail::SecretChange {
        name: secret.name.clone(),
        version: secret.version,
        change,
    })
}

/// A scheduled run's task that just stopped having failed: it never
/// started, or a container exited non-zero.
fn scheduled_failure(task: &Task) -> Option<EventDetail> {
    let name = task
        .started_by
        .strip_prefix(crate::scheduled::STARTED_BY_PREFIX)?;
    if task.last_status != TaskStatus::Stopped {
        return None;
    }
    let exit = task
        .containers
        .iter()
        .find(|c| c.exit_code.is_some_and(|code| code != 0));
    let reason = match (task.stop_code, exit) {
        (Some(crate::StopCode::TaskFailedToStart), _) => {
            format!("failed to start: {}", task.stopped_reason)
        }
        (_, Some(container)) => format!(
            "container {} exited with code {}",
            container.name,
            container.exit_code.unwrap_or_default()
        ),
        _ => return None,
    };
    Some(EventDetail::ScheduledTaskFailed {
        name: name.to_string(),
        task_id: task.id.clone(),
        reason,
    })
}

/// The resource of an applied call, now that the output names what the
/// command could not (the revision registered, the tasks started).
fn refine_resource(resource: String, output: &CommandOutput) -> String {
    match output {
        CommandOutput::TaskDefinition(td) => {
            format!("task-definition/{}:{}", td.family, td.revision)
        }
        CommandOutput::Tasks(tasks) if !tasks.is_empty() => tasks
            .iter()
            .map(|t| format!("task/{}", t.id))
            .collect::<Vec<_>>()
            .join(" "),
        CommandOutput::Instance(instance) => format!("instance/{}", instance.id),
        _ => resource,
    }
}
