//! AWS Signature Version 4, as the ECS API uses it: the caller signs each
//! request with an access key's secret (HMAC-SHA256 over a canonical form of
//! the request, with a key derived from the secret, the date, the region and
//! the service), and the server, which knows the secret, computes the same
//! signature and compares. Verifying needs the secret itself, not a hash of
//! it, which is why Berth keeps AWS-format credentials sealed rather than
//! hashed.
//!
//! Pure: the caller hands in the request's parts and the time, and maps
//! [`SigV4Error`] onto the HTTP answer ([`SigV4Error::aws_type`],
//! [`SigV4Error::http_status`]). [`sign`] makes signatures too, for tests and
//! clients.

use ring::{digest, hmac};

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// How far a request's `X-Amz-Date` may be from the server's clock, either
/// way: AWS's five minutes.
pub const MAX_SKEW_SECS: i64 = 300;
const TERMINATOR: &str = "aws4_request";

/// What a verifier needs of an HTTP request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The path as sent (`/` for ECS).
    pub path: &'a str,
    /// The query string as sent, without `?`; empty when there is none.
    pub query: &'a str,
    /// Every header as received; names are compared without case, and a
    /// name given more than once has its values joined with commas.
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

/// The `Credential=` part: who signed, and for which day, region and
/// service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub access_key_id: String,
    /// `YYYYMMDD`.
    pub date: String,
    pub region: String,
    pub service: String,
}

/// A parsed `Authorization` header whose scope and time were checked;
/// whether the signature is right needs the secret ([`Authorization::verify`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub credential: Credential,
    pub signed_headers: Vec<String>,
    signature: Vec<u8>,
    amz_date: String,
}

/// Why a request's signature is not accepted, in AWS's terms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigV4Error {
    /// No `Authorization` header at all.
    #[error("Missing Authentication Token")]
    MissingAuthentication,
    /// A header that is there but malformed or missing a part.
    #[error("{0}")]
    Incomplete(String),
    /// Well formed, but the signature, its scope or its time is wrong.
    #[error("{0}")]
    Invalid(String),
    /// An access key the server does not know, or a session token (which
    /// Berth never issues).
    #[error("The security token included in the request is invalid.")]
    UnrecognizedClient,
}

impl SigV4Error {
    /// The `__type` of the JSON error body.
    pub fn aws_type(&self) -> &'static str {
        match self {
            Self::MissingAuthentication => "MissingAuthenticationTokenException",
            Self::Incomplete(_) => "IncompleteSignatureException",
            Self::Invalid(_) => "InvalidSignatureException",
            Self::UnrecognizedClient => "UnrecognizedClientException",
        }
    }

    pub fn http_status(&self) -> u16 {
        match self {
            Self::MissingAuthentication | Self::Invalid(_) => 403,
            Self::Incomplete(_) | Self::UnrecognizedClient => 400,
        }
    }
}

fn header_values<'a>(request: &Request<'a>, name: &str) -> Vec<&'a str> {
    request
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

fn single_header<'a>(request: &Request<'a>, name: &str) -> Option<&'a str> {
    header_values(request, name).into_iter().next()
}

/// Seconds since the epoch of an ISO 8601 basic time (`20261205T170000Z`).
fn parse_amz_date(text: &str) -> Option<i64> {
    let civil = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", text).ok()?;
    let zoned = civil.to_zoned(jiff::tz::TimeZone::UTC).ok()?;
    Some(zoned.timestamp().as_second())
}

fn incomplete(message: impl Into<String>) -> SigV4Error {
    SigV4Error::Incomplete(message.into())
}

impl Authorization {
    /// Reads the `Authorization` and `X-Amz-Date` headers and checks what
    /// can be checked without the secret: the form, that `host` and
    /// `x-amz-date` are signed, that the scope is for `service` on the
    /// request's day, and that the time is within [`MAX_SKEW_SECS`] of
    /// `now_s`.
    pub fn parse(request: &Request<'_>, service: &str, now_s: i64) -> Result<Self, SigV4Error> {
        let header =
            single_header(request, "authorization").ok_or(SigV4Error::MissingAuthentication)?;
        if single_header(request, "x-amz-security-token").is_some() {
            // Temporary credentials come from AWS STS; Berth has none.
            return Err(SigV4Error::UnrecognizedClient);
        }
        let rest = header
            .strip_prefix(ALGORITHM)
            .filter(|rest| rest.starts_with(' '))
            .ok_or_else(|| {
                incomplete(format!(
                    "Authorization header must use {ALGORITHM} (AWS Signature Version 4)"
                ))
            })?;
        let (mut credential, mut signed, mut signature) = (None, None, None);
        for part in rest.split(',') {
            let Some((key, value)) = part.trim().split_once('=') else {
                return Err(incomplete(format!(
                    "Authorization header has a malformed part {:?}; expected Credential=..., SignedHeaders=..., Signature=...",
                    part.trim()
                )));
            };
            match key {
                "Credential" => credential = Some(value),
                "SignedHeaders" => signed = Some(value),
                "Signature" => signature = Some(value),
                _ => {}
            }
        }
        let missing = |name: &str| {
            incomplete(format!(
                "Authorization header requires '{name}' parameter. Authorization={header}"
            ))
        };
        let credential = credential.ok_or_else(|| missing("Credential"))?;
        let signed = signed.ok_or_else(|| missing("SignedHeaders"))?;
        let signature = signature.ok_or_else(|| missing("Signature"))?;

        let parts: Vec<&str> = credential.split('/').collect();
        let [access_key_id, date, region, scoped_service, terminator] = parts[..] else {
            return Err(incomplete(format!(
                "Credential should be ACCESS_KEY_ID/YYYYMMDD/REGION/SERVICE/{TERMINATOR}, not {credential:?}"
            )));
        };
        if terminator != TERMINATOR {
            return Err(incomplete(format!(
                "Credential should be scoped with a valid terminator: '{TERMINATOR}', not '{terminator}'"
            )));
        }
        if access_key_id.is_empty() || region.is_empty() {
            return Err(incomplete(format!(
                "Credential {credential:?} names no access key or no region"
            )));
        }
        let signature = hex::decode(signature)
            .ok()
            .filter(|bytes| bytes.len() == 32)
            .ok_or_else(|| incomplete("Signature must be 64 hexadecimal digits"))?;
        let signed_headers: Vec<String> = signed.split(';').map(str::to_string).collect();
        if signed_headers
            .iter()
            .any(|h| h.is_empty() || *h != h.to_ascii_lowercase())
        {
            return Err(incomplete(format!(
                "SignedHeaders {signed:?} must be lowercase names separated by ';'"
            )));
        }
        if !signed_headers.iter().any(|h| h == "host") {
            return Err(incomplete(
                "'Host' must be a 'SignedHeader' in the AWS Authorization.",
            ));
        }
        let amz_date = single_header(request, "x-amz-date").ok_or_else(|| {
            incomplete("Authorization header requires existence of a 'X-Amz-Date' header.")
        })?;
        if !signed_headers.iter().any(|h| h == "x-amz-date") {
            return Err(incomplete(
                "'X-Amz-Date' must be a 'SignedHeader' in the AWS Authorization.",
            ));
        }
        let at = parse_amz_date(amz_date).ok_or_else(|| {
            incomplete(format!(
                "X-Amz-Date {amz_date:?} is not an ISO 8601 basic time like 20261205T170000Z"
            ))
        })?;
        if !amz_date.starts_with(date) || date.len() != 8 {
            return Err(SigV4Error::Invalid(format!(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{date}' != '{}', from '{amz_date}'.",
                amz_date.get(..8).unwrap_or(amz_date)
            )));
        }
        if scoped_service != service {
            return Err(SigV4Error::Invalid(format!(
                "Credential should be scoped to correct service: '{service}'."
            )));
        }
        if at < now_s - MAX_SKEW_SECS {
            return Err(SigV4Error::Invalid(format!(
                "Signature expired: {amz_date} is now earlier than {} ({} - 5 min.)",
                basic_time(now_s - MAX_SKEW_SECS),
                basic_time(now_s)
            )));
        }
        if at > now_s + MAX_SKEW_SECS {
            return Err(SigV4Error::Invalid(format!(
                "Signature not yet current: {amz_date} is still later than {} ({} + 5 min.)",
                basic_time(now_s + MAX_SKEW_SECS),
                basic_time(now_s)
            )));
        }
        Ok(Self {
            credential: Credential {
                access_key_id: access_key_id.to_string(),
                date: date.to_string(),
                region: region.to_string(),
                service: scoped_service.to_string(),
            },
            signed_headers,
            signature,
            amz_date: amz_date.to_string(),
        })
    }

    /// Whether the signature is the one `secret` makes for this request;
    /// compared in constant time.
    pub fn verify(&self, request: &Request<'_>, secret: &str) -> Result<(), SigV4Error> {
        let canonical = canonical_request(request, &self.signed_headers)?;
        let to_sign = string_to_sign(&self.amz_date, &self.credential, &canonical);
        let key = signing_key(secret, &self.credential);
        hmac::verify(&key, to_sign.as_bytes(), &self.signature).map_err(|_| {
            SigV4Error::Invalid(
                "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.".into(),
            )
        })
    }
}

/// `YYYYMMDDTHHMMSSZ` for seconds since the epoch.
pub fn basic_time(epoch_s: i64) -> String {
    jiff::Timestamp::from_second(epoch_s)
        .map(|t| t.strftime("%Y%m%dT%H%M%SZ").to_string())
        .unwrap_or_default()
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, data))
}

/// AWS's URI encoding: unreserved characters stay, everything else is
/// `%XX` in upper case; `/` stays when `keep_slash`.
fn uri_encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(byte))
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex_digit = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%' && i + 3 <= bytes.len() {
            if let (Some(high), Some(low)) = (hex_digit(bytes[i + 1]), hex_digit(bytes[i + 2])) {
                // Both are below 16.
                out.push((high * 16 + low) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&percent_decode(k), false),
                uri_encode(&percent_decode(v), false),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn canonical_request(request: &Request<'_>, signed: &[String]) -> Result<String, SigV4Error> {
    let path = if request.path.is_empty() {
        "/".to_string()
    } else {
        uri_encode(&percent_decode(request.path), true)
    };
    let mut headers = String::new();
    for name in signed {
        let values = header_values(request, name);
        if values.is_empty() {
            return Err(incomplete(format!(
                "SignedHeaders names '{name}', which the request does not carry"
            )));
        }
        let value = values
            .iter()
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join(",");
        headers.push_str(&format!("{name}:{value}\n"));
    }
    Ok(format!(
        "{}\n{path}\n{}\n{headers}\n{}\n{}",
        request.method,
        canonical_query(request.query),
        signed.join(";"),
        sha256_hex(request.body)
    ))
}

fn scope(credential: &Credential) -> String {
    format!(
        "{}/{}/{}/{TERMINATOR}",
        credential.date, credential.region, credential.service
    )
}

fn string_to_sign(amz_date: &str, credential: &Credential, canonical: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{}\n{}",
        scope(credential),
        sha256_hex(canonical.as_bytes())
    )
}

fn signing_key(secret: &str, credential: &Credential) -> hmac::Key {
    let step = |key: &[u8], data: &str| {
        hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes())
            .as_ref()
            .to_vec()
    };
    let date = step(format!("AWS4{secret}").as_bytes(), &credential.date);
    let region = step(&date, &credential.region);
    let service = step(&region, &credential.service);
    let signing = step(&service, TERMINATOR);
    hmac::Key::new(hmac::HMAC_SHA256, &signing)
}

/// The `Authorization` header value for `request`, signing every header it
/// carries (which must include `host` and `x-amz-date`, the latter equal to
/// `amz_date`).
pub fn sign(
    request: &Request<'_>,
    access_key_id: &str,
    secret: &str,
    region: &str,
    service: &str,
    amz_date: &str,
) -> Result<String, SigV4Error> {
    let credential = Credential {
        access_key_id: access_key_id.to_string(),
        date: amz_date.get(..8).unwrap_or(amz_date).to_string(),
        region: region.to_string(),
        service: service.to_string(),
    };
    let mut signed: Vec<String> = request
        .headers
        .iter()
        .map(|(name, _)| name.to_ascii_lowercase())
        .collect();
    signed.sort();
    signed.dedup();
    let canonical = canonical_request(request, &signed)?;
    let to_sign = string_to_sign(amz_date, &credential, &canonical);
    let signature = hmac::sign(&signing_key(secret, &credential), to_sign.as_bytes());
    Ok(format!(
        "{ALGORITHM} Credential={access_key_id}/{}, SignedHeaders={}, Signature={}",
        scope(&credential),
        signed.join(";"),
        hex::encode(signature.as_ref())
    ))
}

#[cfg(test)]
mod tests;
