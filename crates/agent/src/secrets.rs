//! The values of a task's secrets, fetched from the control plane with the
//! instance certificate just before a container is created, and kept only
//! in memory: they go into the container's environment (and the image
//! pull's credentials), never into the agent's store or its logs.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use berth_client::join::AgentIdentity;
use berth_proto::pb;
use berth_proto::pb::agent_secrets_service_client::AgentSecretsServiceClient;
use tokio::sync::watch;

/// Secret name to value.
pub type SecretValues = HashMap<String, Vec<u8>>;

pub type Fetch<'a> = Pin<Box<dyn Future<Output = Result<SecretValues, String>> + Send + 'a>>;

/// Where a task's secret values come from. The error is the task's stopped
/// reason, in ECS's words.
pub trait SecretSource: Send + Sync + std::fmt::Debug {
    fn task_secrets<'a>(&'a self, task_id: &'a str) -> Fetch<'a>;
}

/// ECS's prefix for a task that could not get its secrets or registry
/// credentials.
pub const FETCH_ERROR: &str =
    "ResourceInitializationError: unable to pull secrets or registry auth";

/// The control plane, through any of its servers (each answers the
/// question from its linearizable state).
#[derive(Debug)]
pub struct ControlSecrets {
    pub endpoints: Vec<String>,
    pub identity: watch::Receiver<Option<AgentIdentity>>,
}

const CALL_TIMEOUT: Duration = Duration::from_secs(10);

impl SecretSource for ControlSecrets {
    fn task_secrets<'a>(&'a self, task_id: &'a str) -> Fetch<'a> {
        Box::pin(async move {
            let identity = self
                .identity
                .borrow()
                .clone()
                .ok_or_else(|| format!("{FETCH_ERROR}: the agent has no identity yet"))?;
            let mut last = String::from("no control-plane endpoint is configured");
            for address in &self.endpoints {
                let endpoint = match crate::session::endpoint(address, &identity) {
                    Ok(endpoint) => endpoint.timeout(CALL_TIMEOUT),
                    Err(e) => {
                        last = e.to_string();
                        continue;
                    }
                };
                let channel = match endpoint.connect().await {
                    Ok(channel) => channel,
                    Err(e) => {
                        last = format!("{address}: {}", berth_types::error_chain(&e));
                        continue;
                    }
                };
                let reply = AgentSecretsServiceClient::new(channel)
                    .get_task_secrets(pb::TaskSecretsRequest {
                        task_id: task_id.to_string(),
                    })
                    .await;
                match reply {
                    Ok(reply) => {
                        return Ok(reply
                            .into_inner()
                            .secrets
                            .into_iter()
                            .map(|s| (s.name, s.value))
                            .collect())
                    }
                    // A definite answer: every server would say the same.
                    Err(status)
                        if matches!(
                            status.code(),
                            tonic::Code::NotFound
                                | tonic::Code::PermissionDenied
                                | tonic::Code::FailedPrecondition
                        ) =>
                    {
                        return Err(format!("{FETCH_ERROR}: {}", status.message()));
                    }
                    Err(status) => last = format!("{address}: {}", status.message()),
                }
            }
            tracing::warn!(task = %task_id, error = %last, "cannot fetch the task's secrets");
            Err(format!("{FETCH_ERROR}: {last}"))
        })
    }
}

/// Adds the container's `secrets` to its environment from `values`.
pub fn inject(
    def: &mut berth_types::ContainerDefinition,
    values: &SecretValues,
) -> Result<(), String> {
    for secret in &def.secrets {
        let value = values.get(&secret.value_from).ok_or_else(|| {
            format!(
                "{FETCH_ERROR}: secret {:?} does not exist",
                secret.value_from
            )
        })?;
        let value = String::from_utf8(value.clone()).map_err(|_| {
            format!(
                "{FETCH_ERROR}: secret {:?} is not UTF-8 text and cannot be an environment variable",
                secret.value_from
            )
        })?;
        def.environment.push(berth_types::KeyValuePair {
            name: secret.name.clone(),
            value,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inject_adds_variables_and_names_a_missing_secret() {
        let mut def = berth_types::ContainerDefinition::new("app", "img");
        def.secrets = vec![berth_types::secrets::SecretRef {
            name: "DB_PASSWORD".into(),
            value_from: "db-password".into(),
        }];
        let mut values = SecretValues::new();
        let missing = inject(&mut def.clone(), &values).unwrap_err();
        assert!(missing.contains("\"db-password\""), "{missing}");
        values.insert("db-password".into(), b"hunter2".to_vec());
        inject(&mut def, &values).unwrap();
        assert_eq!(def.environment[0].name, "DB_PASSWORD");
        assert_eq!(def.environment[0].value, "hunter2");
    }
}
