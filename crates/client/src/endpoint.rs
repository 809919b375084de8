//! Turning the endpoint strings people type into URIs tonic can dial.

use tonic::transport::Uri;

use crate::ClientError;

const FORMS: &str = "use HOST:PORT, https://HOST:PORT or http://HOST:PORT, e.g. 127.0.0.1:7400";

/// The scheme an endpoint was written with. A bare `HOST:PORT` leaves the
/// choice to the client: TLS when it has a cluster CA, plain otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    Bare,
    Http,
    Https,
}

/// A validated endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParsedEndpoint {
    /// `host:port`, used in messages and to open sockets.
    pub name: String,
    /// The host without IPv6 brackets: what a certificate names.
    pub host: String,
    pub scheme: Scheme,
}

impl ParsedEndpoint {
    /// The URI to dial, with TLS or without.
    pub fn uri(&self, tls: bool) -> Result<Uri, ClientError> {
        let scheme = if tls { "https" } else { "http" };
        format!("{scheme}://{}", self.name)
            .parse()
            .map_err(|e| ClientError::InvalidEndpoint {
                endpoint: self.name.clone(),
                reason: format!("not a valid address ({e}); {FORMS}"),
            })
    }
}

/// Accepts `host:port`, `http://host:port` or `https://host:port`.
/// Everything is checked up front so a typo is reported when the client is
/// built, naming the endpoint, rather than as a connection failure on the
/// first call.
pub(crate) fn parse_endpoint(text: &str) -> Result<ParsedEndpoint, ClientError> {
    let invalid = |reason: String| ClientError::InvalidEndpoint {
        endpoint: text.to_string(),
        reason,
    };
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(invalid(format!("empty; {FORMS}")));
    }
    let (scheme, rest) = match trimmed.split_once("://") {
        None => (Scheme::Bare, trimmed),
        Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
            "http" => (Scheme::Http, rest),
            "https" => (Scheme::Https, rest),
            _ => return Err(invalid(format!("unsupported scheme {scheme:?}; {FORMS}"))),
        },
    };
    // Parsed with some scheme only to check the rest; the scheme actually
    // dialed is decided when the client knows whether it has a CA.
    let uri: Uri = format!("http://{rest}")
        .parse()
        .map_err(|e| invalid(format!("not a valid address ({e}); {FORMS}")))?;
    let authority = uri
        .authority()
        .ok_or_else(|| invalid(format!("missing host; {FORMS}")))?;
    if authority.as_str().contains('@') {
        return Err(invalid(format!("user information is not allowed; {FORMS}")));
    }
    if authority.host().is_empty() {
        return Err(invalid(format!("missing host; {FORMS}")));
    }
    // `Authority::port_u16` cannot tell a missing port from a malformed
    // one, and the two deserve different advice.
    let text = authority.as_str();
    let port_text = text
        .rfind(':')
        .map(|i| &text[i + 1..])
        .filter(|rest| !rest.contains(']'));
    match port_text {
        None | Some("") => {
            return Err(invalid(format!(
                "missing port; use {host}:PORT, e.g. {host}:7400",
                host = authority.host()
            )))
        }
        Some(port) => match port.parse::<u16>() {
            Ok(0) => return Err(invalid(format!("port 0 cannot be dialed; {FORMS}"))),
            Ok(_) => {}
            Err(_) => {
                return Err(invalid(format!(
                    "port {port:?} is not a number from 1 to 65535"
                )))
            }
        },
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(invalid(format!("a path is not allowed; {FORMS}")));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    Ok(ParsedEndpoint {
        name: authority.as_str().to_string(),
        host,
        scheme,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(text: &str) -> String {
        match parse_endpoint(text) {
            Err(ClientError::InvalidEndpoint { endpoint, reason }) => {
                assert_eq!(endpoint, text, "the error names the endpoint as typed");
                reason
            }
            other => panic!("{text:?}: expected InvalidEndpoint, got {other:?}"),
        }
    }

    #[test]
    fn accepts_host_port_with_or_without_scheme() {
        let plain = parse_endpoint("127.0.0.1:7400").unwrap();
        assert_eq!(plain.name, "127.0.0.1:7400");
        assert_eq!(plain.host, "127.0.0.1");
        assert_eq!(plain.scheme, Scheme::Bare);
        assert_eq!(
            plain.uri(false).unwrap().to_string(),
            "http://127.0.0.1:7400/"
        );
        assert_eq!(
            plain.uri(true).unwrap().to_string(),
            "https://127.0.0.1:7400/"
        );

        let schemed = parse_endpoint(" HTTP://berth-1.internal:7400/ ").unwrap();
        assert_eq!(schemed.name, "berth-1.internal:7400");
        assert_eq!(schemed.scheme, Scheme::Http);

        let tls = parse_endpoint("https://berth-1.internal:7400").unwrap();
        assert_eq!(tls.scheme, Scheme::Https);
        assert_eq!(tls.host, "berth-1.internal");

        let v6 = parse_endpoint("[::1]:7400").unwrap();
        assert_eq!(v6.name, "[::1]:7400");
        assert_eq!(
            v6.host, "::1",
            "certificates name the address without brackets"
        );
    }

    #[test]
    fn rejects_bad_endpoints_with_a_reason() {
        assert!(reason("").contains("empty"));
        assert!(reason("   ").contains("empty"));
        assert!(reason("localhost").contains("missing port"));
        assert!(reason("localhost").contains("localhost:7400"));
        assert!(reason("http://localhost").contains("missing port"));
        assert!(reason("https://localhost").contains("missing port"));
        assert!(reason("localhost:http").contains("not a number"));
        assert!(reason("localhost:99999").contains("not a number from 1 to 65535"));
        assert!(reason("localhost:").contains("missing port"));
        assert!(reason("[::1]").contains("missing port"));
        assert!(reason("localhost:0").contains("port 0"));
        assert!(reason(":7400").contains("missing host"));
        assert!(reason("ftp://localhost:7400").contains("\"ftp\""));
        assert!(reason("localhost:7400/api").contains("path"));
        assert!(reason("localhost:7400?x=1").contains("path"));
        assert!(reason("user@localhost:7400").contains("user information"));
        assert!(reason("two words:7400").contains("not a valid address"));
    }

    #[test]
    fn invalid_endpoint_message_names_the_endpoint() {
        let err = parse_endpoint("localhost").unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("invalid endpoint \"localhost\": "),
            "{text}"
        );
    }
}
