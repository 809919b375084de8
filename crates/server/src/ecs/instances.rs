//! DescribeContainerInstances, ListContainerInstances,
//! DeregisterContainerInstance, UpdateContainerInstancesState, PutAttributes,
//! DeleteAttributes, ListAttributes.

use std::collections::BTreeSet;

use berth_ecs::arn::{self, Resource, Scope};
use berth_ecs::clusters::Failure;
use berth_ecs::error::{include_tags, EcsError, ErrorType};
use berth_ecs::instances::{
    self as shapes, attributes_by_instance, draining, instance_in, list_attributes, status_filter,
    status_matches, AttributesRequest, DeregisterContainerInstanceRequest,
    DescribeContainerInstancesRequest, ListAttributesRequest, ListContainerInstancesRequest,
    RegisterContainerInstanceRequest, UpdateContainerInstancesStateRequest, MAX_DESCRIBED,
};
use berth_ecs::page;
use berth_types::InstanceView;
use serde_json::json;

use super::{answer, from_server, EcsApi, EcsResult};
use crate::error::ServerError;

fn invalid(message: String) -> EcsError {
    EcsError::new(ErrorType::InvalidParameter, message)
}

/// An instance as `failures[]` names it: its ARN, whether the caller gave
/// an id or an ARN.
fn instance_arn(scope: &Scope, cluster: &str, input: &str) -> Result<String, EcsError> {
    Ok(match arn::container_instance(input)? {
        (Some(_), _) => input.to_string(),
        (None, id) => scope.arn(Resource::ContainerInstance {
            cluster: Some(cluster.to_string()),
            id,
        }),
    })
}

impl EcsApi {
    /// Berth's registration: a single-use activation for the cluster, with
    /// the attributes asked for, answered as the instance to be (see
    /// `berth_ecs::instances::registering_instance`).
    pub(super) async fn register_container_instance(
        &self,
        scope: &Scope,
        request: RegisterContainerInstanceRequest,
    ) -> EcsResult {
        // Checked as every operator's attributes are, by create_activation.
        let attributes = shapes::registration_attributes(&request)?;
        let cluster = arn::cluster_name(request.cluster.as_deref())?;
        // The cluster must exist, as ECS requires.
        self.ops
            .describe_cluster(&cluster)
            .await
            .map_err(from_server)?;
        let pki = self.pki.as_ref().ok_or_else(|| {
            EcsError::new(
                ErrorType::Server,
                "this server cannot make join tokens (no PKI)",
            )
        })?;
        let digest = berth_pki::ca_digest(&pki.current().root_pem).map_err(|e| {
            EcsError::new(
                ErrorType::Server,
                format!("the cluster CA is unusable: {e}"),
            )
        })?;
        let (activation, token) = self
            .ops
            .create_activation(
                crate::ops::activations::NewActivation {
                    cluster,
                    description: "RegisterContainerInstance (ECS API)".into(),
                    max_registrations: 1,
                    lifetime: None,
                    attributes,
                },
                &digest,
            )
            .await
            .map_err(from_server)?;
        answer(json!({
            "containerInstance": shapes::registering_instance(scope, &activation, &token)
        }))
    }

    /// The cluster's instances; ClusterNotFoundException if there is no
    /// such cluster.
    async fn instances_of(&self, cluster: &str) -> Result<Vec<InstanceView>, EcsError> {
        self.ops
            .describe_cluster(cluster)
            .await
            .map_err(from_server)?;
        self.ops
            .list_instances(Some(cluster))
            .await
            .map_err(from_server)
    }

    /// One instance of `cluster` by id or ARN; an instance of another
    /// cluster is refused as not found, so a call never acts outside the
    /// cluster it names.
    async fn instance_of(&self, cluster: &str, input: &str) -> Result<InstanceView, EcsError> {
        let missing = || {
            invalid(format!(
                "container instance {input:?} not found in cluster {cluster:?}"
            ))
        };
        let id = instance_in(cluster, input)?.ok_or_else(missing)?;
        match self.ops.describe_instance(&id).await {
            Ok(i) if i.cluster == cluster => Ok(i),
            Ok(_) | Err(ServerError::NotFound(_)) => Err(missing()),
            Err(e) => Err(from_server(e)),
        }
    }

    pub(super) async fn describe_container_instances(
        &self,
        scope: &Scope,
        request: DescribeContainerInstancesRequest,
    ) -> EcsResult {
        let with_tags = include_tags(&request.include)?;
        if request.container_instances.is_empty()
            || request.container_instances.len() > MAX_DESCRIBED
        {
            return Err(invalid(format!(
                "containerInstances: name between 1 and {MAX_DESCRIBED} instances"
            )));
        }
        let cluster = arn::cluster_name(request.cluster.as_deref())?;
        let all = self.instances_of(&cluster).await?;
        let mut found = Vec::new();
        let mut failures = Vec::new();
        for input in &request.container_instances {
            let instance =
                instance_in(&cluster, input)?.and_then(|id| all.iter().find(|i| i.id == id));
            match instance {
                Some(i) => {
                    let mut shaped = shapes::container_instance(scope, i);
                    if !with_tags {
                        // ECS answers tags only when asked for.
                        shaped.tags.clear();
                    }
                    found.push(shaped)
                }
                None => failures.push(Failure::missing(instance_arn(scope, &cluster, input)?)),
            }
        }
        answer(json!({ "containerInstances": found, "failures": failures }))
    }

    pub(super) async fn list_container_instances(
        &self,
        scope: &Scope,
        request: ListContainerInstancesRequest,
    ) -> EcsResult {
        let cluster = arn::cluster_name(request.cluster.as_deref())?;
        let wanted = status_filter(request.status.as_deref())?;
        let all = self.instances_of(&cluster).await?;
        // The filter is the cluster query language memberOf placement
        // constraints use, evaluated by the scheduler's own evaluator over
        // the scheduler's view of the instances, so a filter lists exactly
        // the instances the same memberOf expression would place on.
        let passing: Option<BTreeSet<String>> = match request.filter.as_deref() {
            None | Some("") => None,
            Some(text) => {
                let expr = berth_scheduler::Expr::parse(text)
                    .map_err(|e| invalid(format!("filter: {e}")))?;
                let view = self
                    .ops
                    .node()
                    .read(|state| berth_controllers::scheduling::cluster_view(state, &cluster))
                    .await
                    .map_err(from_server)?
                    .map_err(|e| EcsError::new(ErrorType::Server, format!("filter: {e}")))?;
                Some(
                    view.instances()
                        .iter()
                        .filter(|i| expr.matches(i))
                        .map(|i| i.id.clone())
                        .collect(),
                )
            }
        };
        let ids: Vec<String> = all
            .iter()
            .filter(|i| status_matches(wanted.as_deref(), i))
            .filter(|i| passing.as_ref().is_none_or(|p| p.contains(&i.id)))
            .map(|i| i.id.clone())
            .collect();
        let (arns, next_token) = page::page_of_keys(
            ids,
            request.next_token.as_deref(),
            request.max_results,
            |id| {
                scope.arn(Resource::ContainerInstance {
                    cluster: Some(cluster.clone()),
                    id,
                })
            },
        )?;
        answer(json!({ "containerInstanceArns": arns, "nextToken": next_token }))
    }

    pub(super) async fn deregister_container_instance(
        &self,
        scope: &Scope,
        request: DeregisterContainerInstanceRequest,
    ) -> EcsResult {
        let cluster = arn::cluster_name(request.cluster.as_deref())?;
        let instance = self
            .instance_of(&cluster, &request.container_instance)
            .await?;
        // Deregistering stops the instance's tasks; ECS does that only when
        // forced, so without force an instance with tasks is refused.
        if !request.force.unwrap_or(false) && instance.running_tasks > 0 {
            return Err(invalid(format!(
                "container instance {} has {} tasks; drain it first (UpdateContainerInstancesState DRAINING) or deregister with force",
                instance.id, instance.running_tasks
            )));
        }
        let after = self
            .ops
            .deregister_instance(instance.id)
            .await
            .map_err(from_server)?;
        answer(json!({ "containerInstance": shapes::container_instance(scope, &after) }))
    }

    pub(super) async fn update_container_instances_state(
        &self,
        scope: &Scope,
        request: UpdateContainerInstancesStateRequest,
    ) -> EcsResult {
        let drain = draining(&request.status)?;
        if request.container_instances.is_empty()
            || request.container_instances.len() > MAX_DESCRIBED
        {
            return Err(invalid(format!(
                "containerInstances: name between 1 and {MAX_DESCRIBED} instances"
            )));
        }
        let cluster = arn::cluster_name(request.cluster.as_deref())?;
        self.ops
            .describe_cluster(&cluster)
            .await
            .map_err(from_server)?;
        let mut updated = Vec::new();
        let mut failures = Vec::new();
        // Each instance on its own, as ECS does: one that cannot change is a
        // failure of its own, not the end of the call (only an outage is).
        for input in &request.container_instances {
            let instance = match self.instance_of(&cluster, input).await {
                Ok(i) => i,
                Err(e) if e.kind == ErrorType::InvalidParameter => {
                    failures.push(Failure::missing(instance_arn(scope, &cluster, input)?));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let arn = instance_arn(scope, &cluster, &instance.id)?;
            match self.ops.set_instance_draining(instance.id, drain).await {
                Ok(after) => updated.push(shapes::container_instance(scope, &after)),
                Err(e) => {
                    let e = from_server(e);
                    if e.kind == ErrorType::Server {
                        return Err(e);
                    }
                    failures.push(Failure {
                        arn,
                        reason: e.message,
                    });
                }
            }
        }
        answer(json!({ "containerInstances": updated, "failures": failures }))
    }

    /// Checks every target of a Put/DeleteAttributes call, and what would
    /// be put or deleted on it, before changing any, so a bad target leaves
    /// nothing half done.
    async fn attribute_targets(
        &self,
        request: &AttributesRequest,
        deleting: bool,
    ) -> Result<Vec<(String, std::collections::BTreeMap<String, String>)>, EcsError> {
        let cluster = arn::cluster_name(request.cluster.as_deref())?;
        self.ops
            .describe_cluster(&cluster)
            .await
            .map_err(from_server)?;
        let grouped = attributes_by_instance(&cluster, &request.attributes)?;
        for (id, attributes) in &grouped {
            let instance = self.instance_of(&cluster, id).await?;
            if instance.status == berth_types::InstanceState::Inactive {
                return Err(invalid(format!(
                    "container instance {id} is deregistered (INACTIVE); its attributes no longer change"
                )));
            }
            if deleting {
                crate::ops::instances::check_attribute_names(
                    &attributes.keys().cloned().collect::<Vec<_>>(),
                )
            } else {
                crate::ops::check_operator_attributes(attributes)
            }
            .map_err(from_server)?;
        }
        Ok(grouped.into_iter().collect())
    }

    pub(super) async fn put_attributes(&self, request: AttributesRequest) -> EcsResult {
        for (id, attributes) in self.attribute_targets(&request, false).await? {
            self.ops
                .put_instance_attributes(id, attributes)
                .await
                .map_err(from_server)?;
        }
        answer(json!({ "attributes": request.attributes }))
    }

    pub(super) async fn delete_attributes(&self, request: AttributesRequest) -> EcsResult {
        for (id, attributes) in self.attribute_targets(&request, true).await? {
            self.ops
                .delete_instance_attributes(id, attributes.into_keys().collect())
                .await
                .map_err(from_server)?;
        }
        answer(json!({ "attributes": request.attributes }))
    }

    pub(super) async fn list_attributes(
        &self,
        scope: &Scope,
        request: ListAttributesRequest,
    ) -> EcsResult {
        let cluster = arn::cluster_name(request.cluster.as_deref())?;
        let instances = self.instances_of(&cluster).await?;
        let (attributes, next_token) = list_attributes(scope, &instances, &request)?;
        answer(json!({ "attributes": attributes, "nextToken": next_token }))
    }
}
