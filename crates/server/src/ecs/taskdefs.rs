//! RegisterTaskDefinition, DescribeTaskDefinition, DeregisterTaskDefinition,
//! ListTaskDefinitions, ListTaskDefinitionFamilies.

use berth_ecs::arn::{self, Scope};
use berth_ecs::error::include_tags;
use berth_ecs::error::{EcsError, ErrorType};
use berth_ecs::taskdefs::{
    self as shapes, DeleteTaskDefinitionsRequest, DeregisterTaskDefinitionRequest,
    DescribeTaskDefinitionRequest, ListTaskDefinitionFamiliesRequest, ListTaskDefinitionsRequest,
};
use serde_json::json;

use super::{answer, from_server, EcsApi, EcsResult};

impl EcsApi {
    pub(super) async fn register_task_definition(&self, scope: &Scope, body: &[u8]) -> EcsResult {
        let parsed = shapes::register_request(body)?;
        if !parsed.ignored_fields.is_empty() {
            // What `berth taskdef register` warns about: registered without
            // them, as there. ECS's answer has no place for a warning.
            tracing::info!(
                family = %parsed.spec.family,
                ignored = %parsed.ignored_fields.join(", "),
                "RegisterTaskDefinition: fields Berth does not use were ignored"
            );
        }
        let td = self
            .ops
            .register_task_definition(parsed.spec)
            .await
            .map_err(from_server)?;
        answer(json!({
            "taskDefinition": shapes::task_definition(scope, &td),
            "tags": shapes::tags(&td),
        }))
    }

    pub(super) async fn describe_task_definition(
        &self,
        scope: &Scope,
        request: DescribeTaskDefinitionRequest,
    ) -> EcsResult {
        let with_tags = include_tags(&request.include)?;
        let reference = arn::task_definition(&request.task_definition)?;
        let td = self
            .ops
            .describe_task_definition(&reference)
            .await
            .map_err(from_server)?;
        // ECS leaves `tags` out unless they were asked for.
        let tags = with_tags.then(|| shapes::tags(&td));
        answer(json!({
            "taskDefinition": shapes::task_definition(scope, &td),
            "tags": tags,
        }))
    }

    /// Each revision on its own, as ECS does: one that cannot be deleted
    /// (ACTIVE, still running, deployed, missing) is a failure of its own.
    pub(super) async fn delete_task_definitions(
        &self,
        scope: &Scope,
        request: DeleteTaskDefinitionsRequest,
    ) -> EcsResult {
        if request.task_definitions.is_empty() || request.task_definitions.len() > 10 {
            return Err(EcsError::new(
                ErrorType::InvalidParameter,
                "taskDefinitions: name between 1 and 10 revisions (FAMILY:REVISION or ARN)",
            ));
        }
        let mut deleted = Vec::new();
        let mut failures = Vec::new();
        for input in &request.task_definitions {
            let reference = arn::task_definition(input)?;
            match self.ops.delete_task_definition(&reference).await {
                Ok(td) => deleted.push(shapes::task_definition(scope, &td)),
                Err(e) => {
                    let e = from_server(e);
                    if e.kind == ErrorType::Server {
                        return Err(e);
                    }
                    failures.push(json!({
                        "arn": format!("arn:aws:ecs:{}:{}:task-definition/{reference}", scope.region, scope.account),
                        "reason": e.kind.name(),
                        "detail": e.message,
                    }));
                }
            }
        }
        answer(json!({ "taskDefinitions": deleted, "failures": failures }))
    }

    pub(super) async fn deregister_task_definition(
        &self,
        scope: &Scope,
        request: DeregisterTaskDefinitionRequest,
    ) -> EcsResult {
        let reference = arn::task_definition(&request.task_definition)?;
        let td = self
            .ops
            .deregister_task_definition(&reference)
            .await
            .map_err(from_server)?;
        answer(json!({ "taskDefinition": shapes::task_definition(scope, &td) }))
    }

    pub(super) async fn list_task_definitions(
        &self,
        scope: &Scope,
        request: ListTaskDefinitionsRequest,
    ) -> EcsResult {
        // familyPrefix names one whole family (see berth_ecs::taskdefs), so
        // only its revisions need reading.
        let family = request.family_prefix.as_deref().filter(|f| !f.is_empty());
        let all = self
            .ops
            .list_task_definitions(family, None)
            .await
            .map_err(from_server)?;
        let (arns, next_token) = shapes::list_task_definitions(scope, all, &request)?;
        answer(json!({ "taskDefinitionArns": arns, "nextToken": next_token }))
    }

    pub(super) async fn list_task_definition_families(
        &self,
        request: ListTaskDefinitionFamiliesRequest,
    ) -> EcsResult {
        let families = self
            .ops
            .list_task_definition_families()
            .await
            .map_err(from_server)?;
        let (families, next_token) = shapes::list_families(families, &request)?;
        answer(json!({ "families": families, "nextToken": next_token }))
    }
}
