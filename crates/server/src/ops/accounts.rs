//! Account settings (ECS's PutAccountSetting, PutAccountSettingDefault,
//! DeleteAccountSetting, ListAccountSettings). Which names and values are
//! allowed is ECS's rule and is checked by its front end (`berth_ecs`);
//! here they are stored and returned.

use std::collections::BTreeMap;

use berth_types::{Command, CommandOutput};

use super::{unexpected, Ops};
use crate::error::ServerError;

impl Ops {
    /// Sets `name` for `principal` (a principal ARN as given), or with
    /// `principal` empty the account's default.
    pub async fn put_account_setting(
        &self,
        principal: String,
        name: String,
        value: String,
    ) -> Result<(), ServerError> {
        match self
            .node
            .write(Command::PutAccountSetting {
                principal,
                name,
                value,
            })
            .await?
        {
            CommandOutput::AccountSetting { .. } | CommandOutput::Unchanged => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Removes `name` for `principal` (empty: the default); removing what
    /// is not set succeeds.
    pub async fn delete_account_setting(
        &self,
        principal: String,
        name: String,
    ) -> Result<(), ServerError> {
        match self
            .node
            .write(Command::DeleteAccountSetting { principal, name })
            .await?
        {
            CommandOutput::AccountSetting { .. } | CommandOutput::Unchanged => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Every setting, by principal (`""`: the account's defaults), then
    /// name.
    pub async fn list_account_settings(
        &self,
    ) -> Result<BTreeMap<String, BTreeMap<String, String>>, ServerError> {
        self.node
            .read(|state| state.account_settings().clone())
            .await
    }
}
