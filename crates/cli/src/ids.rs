//! Ids as people handle them: short in tables, and any unique prefix
//! accepted where a command takes one.

use std::future::Future;

use berth_client::time::now_ms;
use berth_client::{BerthClient, ClientError};
use berth_types::TaskFilter;

use crate::output::{age, screaming};

/// The fewest characters a prefix may have (not counting a fixed part such
/// as `i-`): fewer would match most of a busy cluster.
pub const MIN_PREFIX: usize = 4;

/// The kinds of generated id the CLI shows, with the shape the servers
/// give them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 32 hex digits.
    Task,
    /// `i-` and 16 hex digits.
    Instance,
    /// `ecs-svc/` and 19 digits, as ECS prints them.
    Deployment,
    /// 12 hex digits.
    ApiToken,
    /// 12 hex digits.
    Activation,
}

impl Kind {
    /// What every id of the kind starts with.
    fn fixed(self) -> &'static str {
        match self {
            Kind::Task | Kind::ApiToken | Kind::Activation => "",
            Kind::Instance => "i-",
            Kind::Deployment => "ecs-svc/",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Kind::Task => "task",
            Kind::Instance => "instance",
            Kind::Deployment => "deployment",
            Kind::ApiToken => "API token",
            Kind::Activation => "activation",
        }
    }

    /// The command that lists the ids.
    fn list_command(self) -> &'static str {
        match self {
            Kind::Task => "berth task list",
            Kind::Instance => "berth instance list",
            Kind::Deployment => "berth service deployments NAME",
            Kind::ApiToken => "berth auth token list",
            Kind::Activation => "berth activation list",
        }
    }

    /// How many characters follow the fixed part, and which.
    fn body(self) -> (usize, fn(char) -> bool) {
        match self {
            Kind::Task => (32, is_lower_hex),
            Kind::Instance => (16, is_lower_hex),
            Kind::Deployment => (19, |c| c.is_ascii_digit()),
            Kind::ApiToken | Kind::Activation => (12, is_lower_hex),
        }
    }

    /// How much of the body a short id keeps: as much as `docker ps` for
    /// tasks, which are many; less for instances and a service's
    /// deployments, of which there are few, so collisions stay unlikely.
    fn short_body(self) -> usize {
        match self {
            Kind::Task => 12,
            Kind::Instance | Kind::Deployment => 8,
            // Short already.
            Kind::ApiToken | Kind::Activation => 12,
        }
    }

    /// Whether `id` has the exact shape the servers generate.
    pub fn is_full(self, id: &str) -> bool {
        let (len, allowed) = self.body();
        id.strip_prefix(self.fixed())
            .is_some_and(|body| body.len() == len && body.chars().all(allowed))
    }
}

fn is_lower_hex(c: char) -> bool {
    c.is_ascii_digit() || ('a'..='f').contains(&c)
}

/// `id` cut to its short form. Ids of any other shape (made by hand, or by
/// an older server) are left whole: cutting them could make two look alike.
pub fn short(kind: Kind, id: &str) -> String {
    if !kind.is_full(id) {
        return id.to_string();
    }
    id.chars()
        .take(kind.fixed().len() + kind.short_body())
        .collect()
}

// -------------------------------------------------------------- prefixes

/// An id a prefix may stand for, with a few words to tell it from others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    pub about: String,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    #[error(
        "{} id {typed} is too short to look up: give at least {MIN_PREFIX} characters of it \
         ({} shows the ids)",
        kind.noun(),
        kind.list_command()
    )]
    TooShort { kind: Kind, typed: String },
    #[error(
        "no {} id starts with {typed} ({} shows the ids)",
        kind.noun(),
        kind.list_command()
    )]
    NotFound { kind: Kind, typed: String },
    #[error(
        "{typed} is the start of {} {} ids; give more of the id",
        matches.len(),
        kind.noun()
    )]
    Ambiguous {
        kind: Kind,
        typed: String,
        matches: Vec<Candidate>,
    },
}

impl PrefixError {
    /// What stderr shows: the message, and for an ambiguous prefix one line
    /// per id it could be.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = vec![self.to_string()];
        if let PrefixError::Ambiguous { matches, .. } = self {
            let width = matches.iter().map(|m| m.id.len()).max().unwrap_or(0);
            lines[0].push(':');
            lines.extend(
                matches
                    .iter()
                    .map(|m| format!("{:<width$}  {}", m.id, m.about)),
            );
        }
        lines
    }
}

/// The part of `text` after the kind's fixed part, if it has it.
fn body(kind: Kind, text: &str) -> String {
    let text = text.to_ascii_lowercase();
    match text.strip_prefix(kind.fixed()) {
        Some(rest) => rest.to_string(),
        None => text,
    }
}

/// Refuses a prefix too short to be worth a lookup.
pub fn check_length(kind: Kind, typed: &str) -> Result<(), PrefixError> {
    if body(kind, typed).chars().count() < MIN_PREFIX {
        return Err(PrefixError::TooShort {
            kind,
            typed: typed.to_string(),
        });
    }
    Ok(())
}

/// The one candidate `typed` names: its exact id, or else the only id it
/// is a prefix of. Case does not matter, and the fixed part (`i-`) may be
/// left out.
pub fn pick(kind: Kind, typed: &str, candidates: Vec<Candidate>) -> Result<String, PrefixError> {
    if let Some(exact) = candidates.iter().find(|c| c.id == typed) {
        return Ok(exact.id.clone());
    }
    check_length(kind, typed)?;
    let wanted = body(kind, typed);
    let mut matches: Vec<Candidate> = candidates
        .into_iter()
        .filter(|c| body(kind, &c.id).starts_with(&wanted))
        .collect();
    matches.sort_by(|a, b| a.id.cmp(&b.id));
    matches.dedup_by(|a, b| a.id == b.id);
    match matches.len() {
        0 => Err(PrefixError::NotFound {
            kind,
            typed: typed.to_string(),
        }),
        1 => Ok(matches.remove(0).id),
        _ => Err(PrefixError::Ambiguous {
            kind,
            typed: typed.to_string(),
            matches,
        }),
    }
}

/// The whole id for `typed`: itself when it has the shape of a whole id
/// (no call made), else the one listed id it is a prefix of.
async fn resolve<T, F, Fut>(
    kind: Kind,
    typed: &str,
    list: F,
    candidate: impl Fn(&T) -> Candidate,
) -> anyhow::Result<String>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Vec<T>, ClientError>>,
{
    if kind.is_full(typed) {
        return Ok(typed.to_string());
    }
    check_length(kind, typed)?;
    let listed = list().await?;
    Ok(pick(kind, typed, listed.iter().map(candidate).collect())?)
}

/// A task id from a whole id or a prefix. Only tasks the cluster still
/// keeps (running, or stopped within the task retention) can be found by
/// prefix.
pub async fn task(client: &BerthClient, typed: &str) -> anyhow::Result<String> {
    let now = now_ms();
    let every_cluster = TaskFilter::default();
    resolve(
        Kind::Task,
        typed,
        || client.list_tasks(&every_cluster),
        |t| Candidate {
            id: t.id.clone(),
            about: format!(
                "{} {} in cluster {}, created {} ago",
                t.task_definition(),
                t.last_status.as_str(),
                t.cluster,
                age(t.created_at_ms, now)
            ),
        },
    )
    .await
}

pub async fn instance(client: &BerthClient, typed: &str) -> anyhow::Result<String> {
    resolve(
        Kind::Instance,
        typed,
        || client.list_instances(None),
        |i| Candidate {
            id: i.id.clone(),
            about: format!(
                "{} {} in cluster {}",
                i.hostname,
                i.status.as_str(),
                i.cluster
            ),
        },
    )
    .await
}

pub async fn api_token(client: &BerthClient, typed: &str) -> anyhow::Result<String> {
    let now = now_ms();
    resolve(
        Kind::ApiToken,
        typed,
        || client.list_api_tokens(),
        |t| Candidate {
            id: t.id.clone(),
            about: format!(
                "{} {:?}, {}",
                t.role.as_str(),
                t.description,
                screaming(&t.status(now))
            ),
        },
    )
    .await
}

pub async fn activation(client: &BerthClient, typed: &str) -> anyhow::Result<String> {
    let now = now_ms();
    resolve(
        Kind::Activation,
        typed,
        || client.list_activations(),
        |a| Candidate {
            id: a.id.clone(),
            about: format!(
                "cluster {} {:?}, {}",
                a.cluster,
                a.description,
                screaming(&a.status(now))
            ),
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    const TASK: &str = "3f2a0c9e1b7d4e2f8a6b5c4d3e2f1a0b";
    const INSTANCE: &str = "i-0123456789abcdef";
    const DEPLOYMENT: &str = "ecs-svc/0123456789012345678";

    #[test]
    fn full_ids_have_the_generated_shape() {
        assert!(Kind::Task.is_full(TASK));
        assert!(!Kind::Task.is_full(&TASK[..31]));
        assert!(!Kind::Task.is_full(&TASK.to_uppercase()));
        assert!(!Kind::Task.is_full("t-1"));
        assert!(Kind::Instance.is_full(INSTANCE));
        assert!(!Kind::Instance.is_full(&INSTANCE[2..]));
        assert!(!Kind::Instance.is_full("i-1"));
        assert!(Kind::Deployment.is_full(DEPLOYMENT));
        assert!(!Kind::Deployment.is_full("ecs-svc/1"));
    }

    fn candidates(ids: &[&str]) -> Vec<Candidate> {
        ids.iter()
            .map(|id| Candidate {
                id: id.to_string(),
                about: format!("about {id}"),
            })
            .collect()
    }

    #[test]
    fn a_unique_prefix_names_its_id() {
        let tasks = candidates(&[TASK, "3f2b0000000000000000000000000000", "77aa"]);
        assert_eq!(
            pick(Kind::Task, "3f2a", tasks.clone()),
            Ok(TASK.to_string())
        );
        assert_eq!(pick(Kind::Task, "3F2A0C", tasks.clone()), Ok(TASK.into()));
        assert_eq!(pick(Kind::Task, TASK, tasks.clone()), Ok(TASK.into()));
        // An exact id wins even where it is short or the start of another.
        assert_eq!(pick(Kind::Task, "77aa", tasks), Ok("77aa".into()));

        let instances = candidates(&[INSTANCE, "i-0123ffffffffffff"]);
        assert_eq!(
            pick(Kind::Instance, "i-01234", instances.clone()),
            Ok(INSTANCE.into())
        );
        assert_eq!(
            pick(Kind::Instance, "012345", instances),
            Ok(INSTANCE.into()),
            "the i- may be left out"
        );
    }

    #[test]
    fn a_short_ambiguous_or_unknown_prefix_is_refused_saying_what_to_do() {
        let tasks = candidates(&[TASK, "3f2a1111111111111111111111111111"]);
        assert_eq!(
            pick(Kind::Task, "3f2", tasks.clone()),
            Err(PrefixError::TooShort {
                kind: Kind::Task,
                typed: "3f2".into()
            })
        );
        assert_eq!(
            check_length(Kind::Instance, "i-012")
                .unwrap_err()
                .to_string(),
            "instance id i-012 is too short to look up: give at least 4 characters of it \
             (berth instance list shows the ids)",
            "the i- does not count"
        );
        assert!(check_length(Kind::Instance, "i-0123").is_ok());

        let err = pick(Kind::Task, "3f2a", tasks.clone()).unwrap_err();
        assert_eq!(
            err.lines(),
            [
                "3f2a is the start of 2 task ids; give more of the id:".to_string(),
                format!("{TASK}  about {TASK}"),
                "3f2a1111111111111111111111111111  about 3f2a1111111111111111111111111111"
                    .to_string(),
            ]
        );
        assert_eq!(pick(Kind::Task, "3f2a0", tasks.clone()), Ok(TASK.into()));

        let err = pick(Kind::Task, "beef", tasks).unwrap_err();
        assert_eq!(
            err.lines(),
            ["no task id starts with beef (berth task list shows the ids)"]
        );
        let err = pick(Kind::ApiToken, "0a1b", Vec::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no API token id starts with 0a1b (berth auth token list shows the ids)"
        );
    }

    #[test]
    fn whole_ids_need_no_lookup() {
        assert!(Kind::ApiToken.is_full("0a1b2c3d4e5f"));
        assert!(!Kind::ApiToken.is_full("0a1b2c"));
        assert!(Kind::Activation.is_full("0a1b2c3d4e5f"));
        assert_eq!(short(Kind::ApiToken, "0a1b2c3d4e5f"), "0a1b2c3d4e5f");
    }

    #[test]
    fn short_ids_keep_the_fixed_part_and_the_start_of_the_rest() {
        assert_eq!(short(Kind::Task, TASK), "3f2a0c9e1b7d");
        assert_eq!(short(Kind::Instance, INSTANCE), "i-01234567");
        assert_eq!(short(Kind::Deployment, DEPLOYMENT), "ecs-svc/01234567");
        for odd in [
            "t-1",
            "i-1",
            "ecs-svc/1",
            "",
            "3F2A0C9E1B7D4E2F8A6B5C4D3E2F1A0B",
        ] {
            assert_eq!(short(Kind::Task, odd), odd);
            assert_eq!(short(Kind::Instance, odd), odd);
        }
    }
}
