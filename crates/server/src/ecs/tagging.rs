//! TagResource, UntagResource, ListTagsForResource; PutAccountSetting,
//! PutAccountSettingDefault, DeleteAccountSetting, ListAccountSettings.

use berth_ecs::account_settings::{
    self as settings, DeleteAccountSettingRequest, ListAccountSettingsRequest,
    PutAccountSettingDefaultRequest, PutAccountSettingRequest, SettingResponse,
};
use berth_ecs::arn::Scope;
use berth_ecs::error::{EcsError, ErrorType};
use berth_ecs::tags::{
    named_cluster, tag_keys, tag_map, tag_target, EmptyResponse, ListTagsForResourceRequest,
    ListTagsForResourceResponse, TagResourceRequest, UntagResourceRequest,
};
use berth_types::TagTarget;

use super::{answer, from_server, EcsApi, EcsResult};

impl EcsApi {
    /// The resource an ARN names, refusing a task or instance ARN whose
    /// cluster is not the one the resource is in (ids are unique, so
    /// without this check any cluster's ARN would reach it).
    async fn tag_resource_target(&self, resource_arn: &str) -> Result<TagTarget, EcsError> {
        let target = tag_target(resource_arn)?;
        let Some(named) = named_cluster(resource_arn)? else {
            return Ok(target);
        };
        let probe = target.clone();
        let actual = self
            .ops
            .node()
            .read(move |state| match &probe {
                TagTarget::Task { id } => state.task(id).map(|t| t.cluster.clone()),
                TagTarget::Instance { id } => state.instance(id).map(|i| i.cluster.clone()),
                _ => None,
            })
            .await
            .map_err(from_server)?;
        match actual {
            Some(cluster) if cluster != named => Err(EcsError::new(
                ErrorType::InvalidParameter,
                format!(
                    "resourceArn {resource_arn:?} names cluster {named:?}, but the resource is in cluster {cluster:?}"
                ),
            )),
            _ => Ok(target),
        }
    }

    pub(super) async fn tag_resource(&self, request: TagResourceRequest) -> EcsResult {
        let target = self.tag_resource_target(&request.resource_arn).await?;
        let tags = tag_map(&request.tags)?;
        self.ops
            .tag_resource(target, tags)
            .await
            .map_err(from_server)?;
        answer(EmptyResponse {})
    }

    pub(super) async fn untag_resource(&self, request: UntagResourceRequest) -> EcsResult {
        let target = self.tag_resource_target(&request.resource_arn).await?;
        let keys = tag_keys(&request.tag_keys)?;
        self.ops
            .untag_resource(target, keys)
            .await
            .map_err(from_server)?;
        answer(EmptyResponse {})
    }

    pub(super) async fn list_tags_for_resource(
        &self,
        request: ListTagsForResourceRequest,
    ) -> EcsResult {
        let target = self.tag_resource_target(&request.resource_arn).await?;
        let tags = self.ops.list_tags(&target).await.map_err(from_server)?;
        answer(ListTagsForResourceResponse::new(tags))
    }

    /// The caller's own setting, or with `principalArn` another
    /// principal's (the account root's is the default).
    pub(super) async fn put_account_setting(
        &self,
        scope: &Scope,
        caller: &str,
        request: PutAccountSettingRequest,
    ) -> EcsResult {
        settings::check_setting(&request.name, &request.value)?;
        let principal =
            settings::setting_principal(request.principal_arn.as_deref(), caller, &scope.account)?;
        self.ops
            .put_account_setting(
                principal.clone(),
                request.name.clone(),
                request.value.clone(),
            )
            .await
            .map_err(from_server)?;
        answer(SettingResponse {
            setting: settings::shown(&principal, &request.name, &request.value, &scope.account),
        })
    }

    pub(super) async fn put_account_setting_default(
        &self,
        scope: &Scope,
        request: PutAccountSettingDefaultRequest,
    ) -> EcsResult {
        settings::check_setting(&request.name, &request.value)?;
        self.ops
            .put_account_setting(String::new(), request.name.clone(), request.value.clone())
            .await
            .map_err(from_server)?;
        answer(SettingResponse {
            setting: settings::shown("", &request.name, &request.value, &scope.account),
        })
    }

    /// Answers the setting as it was before the delete, as ECS does.
    pub(super) async fn delete_account_setting(
        &self,
        scope: &Scope,
        caller: &str,
        request: DeleteAccountSettingRequest,
    ) -> EcsResult {
        settings::check_name(&request.name)?;
        let principal =
            settings::setting_principal(request.principal_arn.as_deref(), caller, &scope.account)?;
        let before = self
            .ops
            .list_account_settings()
            .await
            .map_err(from_server)?
            .get(&principal)
            .and_then(|s| s.get(&request.name))
            .cloned()
            .unwrap_or_default();
        self.ops
            .delete_account_setting(principal.clone(), request.name.clone())
            .await
            .map_err(from_server)?;
        answer(SettingResponse {
            setting: settings::shown(&principal, &request.name, &before, &scope.account),
        })
    }

    pub(super) async fn list_account_settings(
        &self,
        scope: &Scope,
        caller: &str,
        request: ListAccountSettingsRequest,
    ) -> EcsResult {
        let stored = self
            .ops
            .list_account_settings()
            .await
            .map_err(from_server)?;
        answer(settings::list_account_settings(
            &request,
            caller,
            &scope.account,
            &stored,
        )?)
    }
}
