//! What can go wrong in a call, and how a failed call is classified for
//! failover.

use std::error::Error as StdError;
use std::io;

use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no endpoints configured; give at least one HOST:PORT")]
    NoEndpoints,

    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint { endpoint: String, reason: String },

    /// The TLS settings or the token cannot be used (a CA that is not a
    /// certificate, `https://` without a CA, a key that does not parse).
    #[error("invalid client configuration: {0}")]
    InvalidConfig(String),

    /// The API token cannot be sent. The message never contains the token.
    #[error("invalid API token: {0}")]
    InvalidToken(String),

    /// An argument the server would refuse anyway, caught before sending.
    #[error("invalid request: {0}")]
    InvalidRequest(String),

    /// No endpoint answered. `tried` lists them in the order they were
    /// tried; `last` is why the last one failed.
    #[error("cannot reach any server ({})", describe_tried(tried, last))]
    Unavailable { tried: Vec<String>, last: String },

    /// A write reached a server but the connection failed before the reply
    /// came back: the server may have applied it, so it was not retried
    /// elsewhere.
    #[error(
        "lost the connection to {endpoint} after sending the request, so it may or may not \
         have been applied: {reason}"
    )]
    OutcomeUnknown { endpoint: String, reason: String },

    /// A stream (task logs) that was open broke off: the connection failed
    /// or timed out after some of it had arrived.
    #[error("lost the connection to {endpoint} while streaming: {reason}")]
    StreamBroken { endpoint: String, reason: String },

    /// The server does not know who is calling: no token, an unknown,
    /// expired or revoked one, or no client certificate where one is needed.
    #[error("unauthenticated{}", colon(.0))]
    Unauthenticated(String),

    /// The caller is known but may not do this (a readonly token writing,
    /// a deregistered instance).
    #[error("permission denied{}", colon(.0))]
    PermissionDenied(String),

    /// The server answered with an error.
    #[error("{message} ({})", code_name(*code))]
    Api { code: Code, message: String },

    /// The server answered with something this client cannot make sense of
    /// (a missing field, an unknown enum value).
    #[error("invalid response from the server: {0}")]
    InvalidResponse(String),

    // ------------------------------------------------- joining (agents)
    /// The CA a server presented is not the one the join token pins.
    #[error(
        "the cluster CA at {endpoint} does not match the join token (digest {actual}, token \
         pins {pinned}): possible man-in-the-middle; registration aborted"
    )]
    CaMismatch {
        endpoint: String,
        actual: String,
        pinned: String,
    },

    /// The TLS handshake that fetches the CA failed.
    #[error("cannot fetch the cluster CA from {endpoint}: {reason}")]
    FetchCa { endpoint: String, reason: String },

    #[error("invalid join token: {0}")]
    InvalidJoinToken(String),

    /// The agent has no usable identity and no join token to get one.
    #[error("{0}")]
    NeedsToken(String),

    /// The agent's identity files cannot be read or written.
    #[error("agent identity in {dir}: {reason}")]
    IdentityStore { dir: String, reason: String },

    /// A key, CSR or certificate could not be made or read.
    #[error("certificate handling failed: {0}")]
    Pki(String),
}

impl ClientError {
    /// The error for a status a server answered with.
    pub(crate) fn from_status(status: &Status) -> Self {
        let message = status.message().to_string();
        match status.code() {
            Code::Unauthenticated => ClientError::Unauthenticated(message),
            Code::PermissionDenied => ClientError::PermissionDenied(message),
            code => ClientError::Api { code, message },
        }
    }

    /// The gRPC code of an error the server returned.
    pub fn api_code(&self) -> Option<Code> {
        match self {
            ClientError::Api { code, .. } => Some(*code),
            ClientError::Unauthenticated(_) => Some(Code::Unauthenticated),
            ClientError::PermissionDenied(_) => Some(Code::PermissionDenied),
            _ => None,
        }
    }

    /// Whether the same call may succeed later without anyone changing
    /// anything: the servers were unreachable or busy. Everything else (a
    /// refused token, a bad request, a CA mismatch) needs a person.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Unavailable { .. }
            | ClientError::OutcomeUnknown { .. }
            | ClientError::StreamBroken { .. }
            | ClientError::FetchCa { .. } => true,
            ClientError::Api { code, .. } => matches!(
                code,
                Code::Unavailable
                    | Code::DeadlineExceeded
                    | Code::ResourceExhausted
                    | Code::Aborted
                    | Code::Internal
                    | Code::Unknown
                    | Code::Cancelled
            ),
            _ => false,
        }
    }

    /// Whether no server could be reached because TLS failed, which
    /// usually means the wrong CA (or a server without TLS) rather than a
    /// server that is down.
    pub fn is_tls_failure(&self) -> bool {
        match self {
            ClientError::Unavailable { last, .. } | ClientError::FetchCa { reason: last, .. } => {
                last.starts_with(TLS_FAILED)
            }
            _ => false,
        }
    }
}

/// How a failed TLS handshake is introduced in messages.
pub(crate) const TLS_FAILED: &str = "TLS handshake failed";

fn colon(message: &str) -> String {
    if message.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", message.trim())
    }
}

fn describe_tried(tried: &[String], last: &str) -> String {
    match tried {
        [] => last.to_string(),
        [only] => format!("tried {only}: {last}"),
        [.., final_one] => format!(
            "tried {}; last error from {final_one}: {last}",
            tried.join(", ")
        ),
    }
}

/// A short lowercase name for a gRPC code, for messages.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown error",
        Code::InvalidArgument => "invalid argument",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::PermissionDenied => "permission denied",
        Code::ResourceExhausted => "resource exhausted",
        Code::FailedPrecondition => "failed precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out of range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal error",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// Where a call failed, which decides whether it may be sent elsewhere.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The connection could not be made, so the request never left this
    /// process: safe to send anywhere, even a write.
    NotSent(String),
    /// The transport failed after the request may have been sent (reset,
    /// timeout, broken stream).
    Lost(String),
    /// The server answered with this status.
    Server(Status),
}

pub(crate) fn classify(status: Status) -> Failure {
    if chain(&status).any(|e| e.downcast_ref::<tonic::ConnectError>().is_some()) {
        return Failure::NotSent(describe_transport(&status));
    }
    // Statuses decoded from a server's reply carry no source; tonic attaches
    // the underlying error only to statuses it makes up from local failures.
    if status.source().is_some() {
        return Failure::Lost(describe_transport(&status));
    }
    Failure::Server(status)
}

fn chain<'a>(status: &'a Status) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(status.source(), |&e| e.source())
}

/// The innermost I/O error says what actually happened ("connection
/// refused"); the outer layers only say which layer noticed.
fn describe_transport(status: &Status) -> String {
    if let Some(io) = chain(status)
        .filter_map(|e| e.downcast_ref::<io::Error>())
        .last()
    {
        return describe_io(io);
    }
    if chain(status).any(|e| e.downcast_ref::<tonic::TimeoutExpired>().is_some()) {
        return "request timed out".to_string();
    }
    match chain(status).last() {
        Some(inner) => inner.to_string(),
        None => status.message().to_string(),
    }
}

/// An I/O error in words; rustls reports handshake failures (an untrusted
/// certificate, a peer that does not speak TLS) as I/O errors wrapping its
/// own error, which deserve saying so.
pub(crate) fn describe_io(io: &io::Error) -> String {
    if let Some(tls) = io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        return format!("{TLS_FAILED}: {tls}");
    }
    match io.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
        io::ErrorKind::TimedOut => "timed out connecting".to_string(),
        io::ErrorKind::ConnectionReset => "connection reset".to_string(),
        io::ErrorKind::ConnectionAborted => "connection aborted".to_string(),
        io::ErrorKind::BrokenPipe => "connection closed".to_string(),
        _ => io.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_statuses_are_not_transport_failures() {
        match classify(Status::unavailable("no leader")) {
            Failure::Server(s) => assert_eq!(s.code(), Code::Unavailable),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_connect_error_in_the_chain_means_not_sent() {
        let io = io::Error::from(io::ErrorKind::ConnectionRefused);
        let err: Box<dyn StdError + Send + Sync> = Box::new(tonic::ConnectError(Box::new(io)));
        match classify(Status::from_error(err)) {
            Failure::NotSent(why) => assert_eq!(why, "connection refused"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_local_failure_without_connect_error_is_lost() {
        let err: Box<dyn StdError + Send + Sync> = Box::new(tonic::TimeoutExpired(()));
        match classify(Status::from_error(err)) {
            Failure::Lost(why) => assert_eq!(why, "request timed out"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unavailable_lists_what_was_tried() {
        let one = ClientError::Unavailable {
            tried: vec!["127.0.0.1:7400".into()],
            last: "connection refused".into(),
        };
        assert_eq!(
            one.to_string(),
            "cannot reach any server (tried 127.0.0.1:7400: connection refused)"
        );
        let two = ClientError::Unavailable {
            tried: vec!["a:1".into(), "b:2".into()],
            last: "connection refused".into(),
        };
        assert_eq!(
            two.to_string(),
            "cannot reach any server (tried a:1, b:2; last error from b:2: connection refused)"
        );
    }
}
