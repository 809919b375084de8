//! Turning failures into the lines `berth` prints on stderr.

use berth_client::{code_name, ClientError, Code};
use berth_types::ValidationErrors;

/// A task definition file that could not be used; reported one problem per
/// line, since fixing a file means seeing every problem at once.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {errors}")]
pub struct InvalidFile {
    pub file: String,
    pub errors: ValidationErrors,
}

impl InvalidFile {
    pub fn lines(&self) -> Vec<String> {
        self.errors
            .0
            .iter()
            .map(|e| {
                // File-level problems (syntax, an empty file) have the
                // pseudo-field "file"; repeating it after the name adds
                // nothing.
                if e.field == "file" || e.field.is_empty() {
                    format!("{}: {}", self.file, e.message)
                } else {
                    format!("{}: {}: {}", self.file, e.field, e.message)
                }
            })
            .collect()
    }
}

/// A `task run` or `task start` that failed in a way that may have
/// started the tasks anyway (the servers were unreachable or the reply was
/// lost). Sending the same client token again is safe: the tasks are
/// started at most once.
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct LaunchFailed {
    pub client_token: String,
    #[source]
    pub source: ClientError,
}

impl LaunchFailed {
    /// Wraps `err` when retrying it could matter; leaves definite failures
    /// (a bad request, a refused token) as they are.
    pub fn wrap(err: ClientError, client_token: &str) -> anyhow::Error {
        if err.is_transient() {
            LaunchFailed {
                client_token: client_token.to_string(),
                source: err,
            }
            .into()
        } else {
            err.into()
        }
    }
}

/// The `error: ` lines for a failure: exactly one, except for an invalid
/// file, which gets one per problem.
pub fn error_lines(err: &anyhow::Error) -> Vec<String> {
    let lines = if let Some(invalid) = err.downcast_ref::<InvalidFile>() {
        invalid.lines()
    } else if let Some(launch) = err.downcast_ref::<LaunchFailed>() {
        vec![format!(
            "{}; the tasks may or may not have started: to retry without starting them twice, \
             add --client-token {}",
            describe_client_error(&launch.source),
            launch.client_token
        )]
    } else if let Some(prefix) = err.downcast_ref::<crate::ids::PrefixError>() {
        prefix.lines()
    } else if let Some(client) = err.downcast_ref::<ClientError>() {
        vec![describe_client_error(client)]
    } else {
        vec![format!("{err:#}")]
    };
    lines
        .into_iter()
        .map(|line| format!("error: {}", one_line(&line)))
        .collect()
}

const ENDPOINT_HINT: &str = "set --endpoint or BERTH_ENDPOINT";
const TOKEN_HINT: &str = "pass --token or set BERTH_TOKEN";

pub fn describe_client_error(err: &ClientError) -> String {
    match err {
        // A failed handshake means the wrong CA (or a server without TLS),
        // not a server that is down.
        ClientError::Unavailable { .. } if err.is_tls_failure() => format!(
            "{err}; is --ca-cert (BERTH_CA_CERT) the CA of this cluster, and does the server \
             speak TLS?"
        ),
        ClientError::Unavailable { .. } => {
            format!("{err}; is berthd running? {ENDPOINT_HINT}")
        }
        ClientError::NoEndpoints | ClientError::InvalidEndpoint { .. } => {
            format!("{err}; {ENDPOINT_HINT}")
        }
        ClientError::OutcomeUnknown { .. } => {
            format!("{err}; check before retrying")
        }
        ClientError::StreamBroken { .. } => {
            format!("{err}; the output above may be incomplete")
        }
        // berthd's advice for any client (the authorization metadata, then
        // the CLI's flags); the CLI's own is enough here.
        ClientError::Unauthenticated(message) if message.starts_with("no API token") => {
            format!("unauthenticated: no API token; {TOKEN_HINT}")
        }
        // Older servers gave the CLI's advice themselves; once is enough.
        ClientError::Unauthenticated(message) if message.contains("--token") => err.to_string(),
        ClientError::Unauthenticated(_) | ClientError::InvalidToken(_) => {
            format!("{err}; {TOKEN_HINT}")
        }
        ClientError::Api { code, message } => describe_api_error(*code, message),
        ClientError::InvalidResponse(_) => {
            format!("{err}; is berth the same version as berthd?")
        }
        ClientError::PermissionDenied(_)
        | ClientError::InvalidConfig(_)
        | ClientError::InvalidRequest(_)
        | ClientError::CaMismatch { .. }
        | ClientError::FetchCa { .. }
        | ClientError::InvalidJoinToken(_)
        | ClientError::NeedsToken(_)
        | ClientError::IdentityStore { .. }
        | ClientError::Pki(_) => err.to_string(),
    }
}

fn describe_api_error(code: Code, message: &str) -> String {
    let message = message.trim();
    let labelled = |label: &str, text: &str| {
        if text.is_empty() {
            label.to_string()
        } else {
            format!("{label}: {text}")
        }
    };
    match code {
        // The server says `task definition "web:9" not found`; leading with
        // the verdict reads better and keeps the noun phrase intact.
        Code::NotFound => labelled(
            "not found",
            message.strip_suffix(" not found").unwrap_or(message),
        ),
        Code::AlreadyExists => labelled(
            "already exists",
            message.strip_suffix(" already exists").unwrap_or(message),
        ),
        Code::InvalidArgument => labelled(
            "invalid request",
            message.strip_prefix("invalid input: ").unwrap_or(message),
        ),
        Code::FailedPrecondition => labelled("cannot do that now", message),
        Code::Unavailable => format!(
            "{}; try again shortly",
            labelled("control plane unavailable", message)
        ),
        Code::DeadlineExceeded => labelled("timed out", message),
        Code::PermissionDenied => labelled("permission denied", message),
        Code::Unauthenticated => labelled("not authenticated", message),
        Code::Unimplemented => labelled(
            "the server does not support this request (is berthd older than berth?)",
            message,
        ),
        other => labelled(&format!("server error ({})", code_name(other)), message),
    }
}

fn one_line(text: &str) -> String {
    text.split(['\n', '\r'])
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_types::FieldError;

    fn api(code: Code, message: &str) -> anyhow::Error {
        ClientError::Api {
            code,
            message: message.into(),
        }
        .into()
    }

    #[test]
    fn an_ambiguous_id_prefix_lists_what_it_could_be() {
        let err: anyhow::Error = crate::ids::PrefixError::Ambiguous {
            kind: crate::ids::Kind::Task,
            typed: "3f2a".into(),
            matches: vec![
                crate::ids::Candidate {
                    id: "3f2a01".into(),
                    about: "web:3 RUNNING".into(),
                },
                crate::ids::Candidate {
                    id: "3f2a02".into(),
                    about: "web:3 STOPPED".into(),
                },
            ],
        }
        .into();
        assert_eq!(
            error_lines(&err),
            [
                "error: 3f2a is the start of 2 task ids; give more of the id:",
                "error: 3f2a01  web:3 RUNNING",
                "error: 3f2a02  web:3 STOPPED"
            ]
        );
    }

    #[test]
    fn unreachable_servers_get_a_hint() {
        let err: anyhow::Error = ClientError::Unavailable {
            tried: vec!["127.0.0.1:7400".into()],
            last: "connection refused".into(),
        }
        .into();
        assert_eq!(
            error_lines(&err),
            [
                "error: cannot reach any server (tried 127.0.0.1:7400: connection refused); \
              is berthd running? set --endpoint or BERTH_ENDPOINT"
            ]
        );
    }

    #[test]
    fn api_errors_lead_with_what_went_wrong() {
        assert_eq!(
            error_lines(&api(Code::NotFound, "task definition \"web:9\" not found")),
            ["error: not found: task definition \"web:9\""]
        );
        assert_eq!(
            error_lines(&api(Code::NotFound, "no such thing")),
            ["error: not found: no such thing"]
        );
        assert_eq!(
            error_lines(&api(Code::AlreadyExists, "cluster \"prod\" already exists")),
            ["error: already exists: cluster \"prod\""]
        );
        assert_eq!(
            error_lines(&api(
                Code::InvalidArgument,
                "invalid input: family: required"
            )),
            ["error: invalid request: family: required"]
        );
        assert_eq!(
            error_lines(&api(Code::Unavailable, "no leader")),
            ["error: control plane unavailable: no leader; try again shortly"]
        );
        assert_eq!(
            error_lines(&api(Code::Internal, "")),
            ["error: server error (internal error)"]
        );
    }

    #[test]
    fn every_error_is_one_line() {
        let lines = error_lines(&api(Code::FailedPrecondition, "first\nsecond\r\n"));
        assert_eq!(lines, ["error: cannot do that now: first second"]);
        let other = anyhow::anyhow!("disk\nfull").context("cannot read web.json");
        assert_eq!(
            error_lines(&other),
            ["error: cannot read web.json: disk full"]
        );
    }

    #[test]
    fn invalid_files_get_one_line_per_problem() {
        let err: anyhow::Error = InvalidFile {
            file: "web.json".into(),
            errors: ValidationErrors(vec![
                FieldError::new("file", "is empty"),
                FieldError::new("containerDefinitions[0].image", "required"),
            ]),
        }
        .into();
        assert_eq!(
            error_lines(&err),
            [
                "error: web.json: is empty",
                "error: web.json: containerDefinitions[0].image: required",
            ]
        );
    }

    #[test]
    fn refused_tokens_say_how_to_pass_one() {
        let err: anyhow::Error = ClientError::Unauthenticated("missing bearer token".into()).into();
        assert_eq!(
            error_lines(&err),
            ["error: unauthenticated: missing bearer token; pass --token or set BERTH_TOKEN"]
        );
        let err: anyhow::Error =
            ClientError::Unauthenticated("no API token: pass --token or set BERTH_TOKEN".into())
                .into();
        assert_eq!(
            error_lines(&err),
            ["error: unauthenticated: no API token; pass --token or set BERTH_TOKEN"]
        );
        // berthd's advice names the metadata for any client; the CLI says
        // it its own way.
        let err: anyhow::Error = ClientError::Unauthenticated(
            "no API token: send one as `authorization: Bearer TOKEN` metadata (the berth CLI: \
             --token or BERTH_TOKEN)"
                .into(),
        )
        .into();
        assert_eq!(
            error_lines(&err),
            ["error: unauthenticated: no API token; pass --token or set BERTH_TOKEN"]
        );
        let err: anyhow::Error =
            ClientError::PermissionDenied("the token is readonly".into()).into();
        assert_eq!(
            error_lines(&err),
            ["error: permission denied: the token is readonly"]
        );
        let err: anyhow::Error = ClientError::InvalidToken("it is empty".into()).into();
        assert_eq!(
            error_lines(&err),
            ["error: invalid API token: it is empty; pass --token or set BERTH_TOKEN"]
        );
    }

    #[test]
    fn a_failed_handshake_points_at_the_ca() {
        let err: anyhow::Error = ClientError::Unavailable {
            tried: vec!["127.0.0.1:7400".into()],
            last: "TLS handshake failed: invalid peer certificate: UnknownIssuer".into(),
        }
        .into();
        let line = &error_lines(&err)[0];
        assert!(line.contains("UnknownIssuer"), "{line}");
        assert!(line.contains("--ca-cert"), "{line}");
        assert!(!line.contains("is berthd running"), "{line}");
    }

    #[test]
    fn a_launch_that_may_have_happened_names_its_client_token() {
        let lost = ClientError::Unavailable {
            tried: vec!["a:1".into(), "b:1".into()],
            last: "request timed out".into(),
        };
        let lines = error_lines(&LaunchFailed::wrap(lost, "0f1e2d"));
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].starts_with("error: cannot reach any server"),
            "{lines:?}"
        );
        assert!(lines[0].ends_with("add --client-token 0f1e2d"), "{lines:?}");

        // A definite refusal started nothing: no token advice.
        let refused = ClientError::Api {
            code: Code::InvalidArgument,
            message: "invalid input: task definition \"nope\" not found".into(),
        };
        let lines = error_lines(&LaunchFailed::wrap(refused, "0f1e2d"));
        assert_eq!(
            lines,
            ["error: invalid request: task definition \"nope\" not found"]
        );
    }

    #[test]
    fn a_broken_stream_says_the_output_may_be_cut_short() {
        let err: anyhow::Error = ClientError::StreamBroken {
            endpoint: "a:1".into(),
            reason: "connection reset".into(),
        }
        .into();
        assert_eq!(
            error_lines(&err),
            [
                "error: lost the connection to a:1 while streaming: connection reset; the output \
              above may be incomplete"
            ]
        );
    }

    #[test]
    fn a_missing_ca_is_reported_as_is() {
        let err = anyhow::anyhow!(crate::config::NO_CA);
        assert_eq!(
            error_lines(&err),
            ["error: no cluster CA configured: pass --ca-cert (the ca.crt printed by berthd dev) \
              or set BERTH_CA_CERT"]
        );
    }
}
