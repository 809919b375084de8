//! The shapes of ECS's PutAccountSetting, PutAccountSettingDefault,
//! DeleteAccountSetting and ListAccountSettings, the names and values ECS
//! allows, and the listing over what Berth stores (by principal, `""`
//! being the account's default; see `berth_types::State::account_settings`).
//! Berth stores and answers these settings; none of them changes what
//! Berth does.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{EcsError, ErrorType};

const ENABLED_DISABLED: &[&str] = &["enabled", "disabled"];

/// Every setting name ECS defines, the values it allows, and the value in
/// force when nobody set one (answered with type `aws_managed`).
const SETTINGS: &[(&str, &[&str], &str)] = &[
    ("serviceLongArnFormat", ENABLED_DISABLED, "enabled"),
    ("taskLongArnFormat", ENABLED_DISABLED, "enabled"),
    (
        "containerInstanceLongArnFormat",
        ENABLED_DISABLED,
        "enabled",
    ),
    ("awsvpcTrunking", ENABLED_DISABLED, "disabled"),
    (
        "containerInsights",
        &["enabled", "disabled", "enhanced"],
        "disabled",
    ),
    ("dualStackIPv6", ENABLED_DISABLED, "disabled"),
    ("fargateFIPSMode", ENABLED_DISABLED, "disabled"),
    ("tagResourceAuthorization", ENABLED_DISABLED, "enabled"),
    ("fargateTaskRetirementWaitPeriod", &["0", "7", "14"], "7"),
    ("guardDutyActivate", ENABLED_DISABLED, "disabled"),
    (
        "defaultLogDriverMode",
        &["blocking", "non-blocking"],
        "non-blocking",
    ),
];

fn invalid(message: impl Into<String>) -> EcsError {
    EcsError::new(ErrorType::InvalidParameter, message)
}

fn setting(
    name: &str,
) -> Result<&'static (&'static str, &'static [&'static str], &'static str), EcsError> {
    SETTINGS.iter().find(|(n, _, _)| *n == name).ok_or_else(|| {
        let names: Vec<&str> = SETTINGS.iter().map(|(n, _, _)| *n).collect();
        invalid(format!(
            "name {name:?} is not an account setting; use one of {}",
            names.join(", ")
        ))
    })
}

/// Checks a setting name alone (DeleteAccountSetting, a list filter).
pub fn check_name(name: &str) -> Result<(), EcsError> {
    setting(name).map(|_| ())
}

/// Checks a name and the value given for it.
pub fn check_setting(name: &str, value: &str) -> Result<(), EcsError> {
    let (_, values, _) = setting(name)?;
    if values.contains(&value) {
        Ok(())
    } else {
        Err(invalid(format!(
            "value {value:?} is not allowed for {name}; use {}",
            values.join(" or ")
        )))
    }
}

/// `arn:PARTITION:iam::ACCOUNT:root`, the principal ECS shows for the
/// account's defaults.
pub fn account_root(account: &str) -> String {
    format!("arn:aws:iam::{account}:root")
}

/// Whose setting a request names, as Berth stores it: the `principalArn`
/// given, else the caller's; `""` (the account default) for the account's
/// root user, whose settings ECS treats as the defaults.
pub fn setting_principal(
    principal_arn: Option<&str>,
    caller: &str,
    account: &str,
) -> Result<String, EcsError> {
    let principal = principal_arn.filter(|p| !p.is_empty()).unwrap_or(caller);
    // A principal ARN names an IAM user or role (or the root user).
    let iam = principal
        .split(':')
        .collect::<Vec<_>>()
        .get(..3)
        .is_some_and(|parts| parts[0] == "arn" && parts[2] == "iam");
    if !iam {
        return Err(invalid(format!(
            "principalArn {principal:?} is not an IAM ARN; use arn:aws:iam::ACCOUNT:user/NAME, role/NAME or root"
        )));
    }
    if principal.split(':').nth(4) != Some(account) {
        return Err(invalid(format!(
            "principalArn {principal:?} is not of account {account}; name a principal of this account (arn:aws:iam::{account}:...)"
        )));
    }
    let is_root = principal.rsplit_once(':').is_some_and(|(_, r)| r == "root");
    Ok(if is_root || principal == account_root(account) {
        String::new()
    } else {
        principal.to_string()
    })
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PutAccountSettingRequest {
    pub name: String,
    pub value: String,
    pub principal_arn: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PutAccountSettingDefaultRequest {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteAccountSettingRequest {
    pub name: String,
    pub principal_arn: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListAccountSettingsRequest {
    pub name: Option<String>,
    pub value: Option<String>,
    pub principal_arn: Option<String>,
    #[serde(default)]
    pub effective_settings: bool,
    pub next_token: Option<String>,
    pub max_results: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Setting {
    pub name: String,
    pub value: String,
    pub principal_arn: String,
    /// `user` (someone set it) or `aws_managed` (nobody did).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// What Put*, PutAccountSettingDefault and DeleteAccountSetting answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SettingResponse {
    pub setting: Setting,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListAccountSettingsResponse {
    pub settings: Vec<Setting>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// A stored setting as ECS shows it; `principal` as stored (`""`: the
/// account's root user).
pub fn shown(principal: &str, name: &str, value: &str, account: &str) -> Setting {
    Setting {
        name: name.to_string(),
        value: value.to_string(),
        principal_arn: if principal.is_empty() {
            account_root(account)
        } else {
            principal.to_string()
        },
        kind: Some("user".to_string()),
    }
}

/// ListAccountSettings over what is stored. Without `effectiveSettings`,
/// the settings the principal (given, else the caller) set itself; with
/// it, every setting's value in force for the principal: its own, else the
/// account default, else ECS's (`aws_managed`).
pub fn list_account_settings(
    request: &ListAccountSettingsRequest,
    caller: &str,
    account: &str,
    stored: &BTreeMap<String, BTreeMap<String, String>>,
) -> Result<ListAccountSettingsResponse, EcsError> {
    if let Some(name) = &request.name {
        check_name(name)?;
    }
    if let Some(value) = &request.value {
        let name = request
            .name
            .as_deref()
            .ok_or_else(|| invalid("value is given without name; filter by a name too"))?;
        check_setting(name, value)?;
    }
    let principal = setting_principal(request.principal_arn.as_deref(), caller, account)?;
    let own = stored.get(&principal);
    let defaults = stored.get("");
    let wanted = |name: &str| request.name.as_deref().is_none_or(|n| n == name);
    let settings: Vec<Setting> = if request.effective_settings {
        SETTINGS
            .iter()
            .filter(|(name, _, _)| wanted(name))
            .map(|(name, _, ecs_default)| {
                match (
                    own.and_then(|s| s.get(*name)),
                    defaults.and_then(|s| s.get(*name)),
                ) {
                    (Some(value), _) => shown(&principal, name, value, account),
                    (None, Some(value)) => shown("", name, value, account),
                    (None, None) => Setting {
                        kind: Some("aws_managed".to_string()),
                        ..shown("", name, ecs_default, account)
                    },
                }
            })
            .collect()
    } else {
        own.into_iter()
            .flatten()
            .filter(|(name, _)| wanted(name))
            .map(|(name, value)| shown(&principal, name, value, account))
            .collect()
    };
    let mut settings: Vec<Setting> = settings
        .into_iter()
        .filter(|s| request.value.as_deref().is_none_or(|v| v == s.value))
        .collect();
    settings.sort_by(|a, b| a.name.cmp(&b.name));
    let (settings, next_token) = crate::page::page(
        settings,
        |s| s.name.as_str(),
        request.next_token.as_deref(),
        request.max_results,
    )?;
    Ok(ListAccountSettingsResponse {
        settings,
        next_token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNT: &str = "123456789012";
    const ALICE: &str = "arn:aws:iam::123456789012:user/alice";

    #[test]
    fn names_and_values_are_those_ecs_allows() {
        for (name, value) in [
            ("serviceLongArnFormat", "enabled"),
            ("awsvpcTrunking", "disabled"),
            ("containerInsights", "enhanced"),
            ("fargateTaskRetirementWaitPeriod", "14"),
            ("defaultLogDriverMode", "non-blocking"),
            ("guardDutyActivate", "enabled"),
        ] {
            check_setting(name, value).unwrap();
        }
        let err = check_setting("containerInsights", "on").unwrap_err();
        assert_eq!(err.kind, ErrorType::InvalidParameter);
        assert!(
            err.message.contains("containerInsights")
                && err.message.contains("enabled or disabled or enhanced"),
            "{err}"
        );
        let err = check_setting("fargateTaskRetirementWaitPeriod", "3").unwrap_err();
        assert!(err.message.contains("0 or 7 or 14"), "{err}");
        let err = check_name("longArns").unwrap_err();
        assert!(err.message.contains("serviceLongArnFormat"), "{err}");
    }

    #[test]
    fn the_root_user_stands_for_the_account_default() {
        assert_eq!(setting_principal(None, ALICE, ACCOUNT).unwrap(), ALICE);
        assert_eq!(
            setting_principal(Some("arn:aws:iam::123456789012:root"), ALICE, ACCOUNT).unwrap(),
            ""
        );
        assert!(setting_principal(Some("alice"), ALICE, ACCOUNT).is_err());
        let other =
            setting_principal(Some("arn:aws:iam::999999999999:root"), ALICE, ACCOUNT).unwrap_err();
        assert!(other.message.contains("not of account"), "{other}");
        let req: PutAccountSettingRequest = serde_json::from_str(
            r#"{"name":"containerInsights","value":"enabled","principalArn":"arn:aws:iam::123456789012:role/ops"}"#,
        )
        .unwrap();
        assert_eq!(
            req.principal_arn.as_deref(),
            Some("arn:aws:iam::123456789012:role/ops")
        );
        let req: PutAccountSettingDefaultRequest =
            serde_json::from_str(r#"{"name":"awsvpcTrunking","value":"enabled"}"#).unwrap();
        assert_eq!(req.value, "enabled");
        let req: DeleteAccountSettingRequest =
            serde_json::from_str(r#"{"name":"awsvpcTrunking"}"#).unwrap();
        assert!(req.principal_arn.is_none());
    }

    fn stored() -> BTreeMap<String, BTreeMap<String, String>> {
        BTreeMap::from([
            (
                String::new(),
                BTreeMap::from([
                    ("containerInsights".to_string(), "enabled".to_string()),
                    ("awsvpcTrunking".to_string(), "enabled".to_string()),
                ]),
            ),
            (
                ALICE.to_string(),
                BTreeMap::from([("containerInsights".to_string(), "disabled".to_string())]),
            ),
        ])
    }

    #[test]
    fn listing_shows_own_or_effective_settings() {
        let list = |json: &str| {
            let req: ListAccountSettingsRequest = serde_json::from_str(json).unwrap();
            list_account_settings(&req, ALICE, ACCOUNT, &stored()).unwrap()
        };
        let own = list("{}");
        assert_eq!(
            own.settings,
            [Setting {
                name: "containerInsights".into(),
                value: "disabled".into(),
                principal_arn: ALICE.into(),
                kind: Some("user".into()),
            }]
        );
        let effective = list(r#"{"effectiveSettings":true}"#);
        assert_eq!(effective.settings.len(), SETTINGS.len());
        let find = |name: &str| {
            effective
                .settings
                .iter()
                .find(|s| s.name == name)
                .cloned()
                .unwrap()
        };
        // Her own value, then the account default, then ECS's.
        assert_eq!(find("containerInsights").value, "disabled");
        let trunking = find("awsvpcTrunking");
        assert_eq!(
            (trunking.value.as_str(), trunking.principal_arn.as_str()),
            ("enabled", "arn:aws:iam::123456789012:root")
        );
        assert_eq!(find("dualStackIPv6").kind.as_deref(), Some("aws_managed"));
        let filtered =
            list(r#"{"effectiveSettings":true,"name":"awsvpcTrunking","value":"disabled"}"#);
        assert!(filtered.settings.is_empty());
        let paged = list(r#"{"effectiveSettings":true,"maxResults":2}"#);
        assert_eq!(paged.settings.len(), 2);
        assert!(paged.next_token.is_some());
        let json = serde_json::to_string(&own).unwrap();
        assert!(
            json.contains(r#""principalArn""#) && json.contains(r#""type":"user""#),
            "{json}"
        );
        let req: ListAccountSettingsRequest =
            serde_json::from_str(r#"{"value":"enabled"}"#).unwrap();
        let err = list_account_settings(&req, ALICE, ACCOUNT, &stored()).unwrap_err();
        assert!(err.message.contains("without name"), "{err}");
    }
}
