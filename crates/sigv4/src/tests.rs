use super::*;

const AKID: &str = "BKIATESTKEYID0000001";
const SECRET: &str = "berth-test-secret/with+chars=";
const BODY: &[u8] = br#"{"maxResults":10}"#;
const TARGET: &str = "AmazonEC2ContainerServiceV20141113.ListClusters";
const AMZ_DATE: &str = "20261205T170828Z";

fn now() -> i64 {
    parse_amz_date(AMZ_DATE).unwrap()
}

fn headers(authorization: Option<&str>) -> Vec<(String, String)> {
    let mut headers = vec![
        (
            "Content-Type".to_string(),
            "application/x-amz-json-1.1".to_string(),
        ),
        ("X-Amz-Target".into(), TARGET.into()),
        ("X-Amz-Date".into(), AMZ_DATE.into()),
        ("Host".into(), "127.0.0.1:7443".into()),
    ];
    if let Some(value) = authorization {
        headers.push(("Authorization".into(), value.into()));
    }
    headers
}

fn request<'a>(headers: &'a [(String, String)], body: &'a [u8]) -> Request<'a> {
    Request {
        method: "POST",
        path: "/",
        query: "",
        headers,
        body,
    }
}

/// Made by botocore 1.43 (`SigV4Auth(credentials, "ecs", "eu-west-1")`)
/// for this request: an independent implementation agrees with this one.
const BOTOCORE: &str = "AWS4-HMAC-SHA256 Credential=BKIATESTKEYID0000001/20261205/eu-west-1/ecs/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=6695ca68d9cbb4602a78212e74ed01dc6fdc67cc1dfcc096b265beaf90721915";

#[test]
fn a_signature_made_by_botocore_verifies_and_ours_is_identical() {
    let headers = headers(Some(BOTOCORE));
    let req = request(&headers, BODY);
    let auth = Authorization::parse(&req, "ecs", now()).unwrap();
    assert_eq!(
        auth.credential,
        Credential {
            access_key_id: AKID.into(),
            date: "20261205".into(),
            region: "eu-west-1".into(),
            service: "ecs".into(),
        }
    );
    auth.verify(&req, SECRET).unwrap();

    let unsigned = self::headers(None);
    let ours = sign(
        &request(&unsigned, BODY),
        AKID,
        SECRET,
        "eu-west-1",
        "ecs",
        AMZ_DATE,
    )
    .unwrap();
    assert_eq!(ours, BOTOCORE);
}

#[test]
fn anything_changed_after_signing_fails_the_check() {
    let headers = headers(Some(BOTOCORE));
    let invalid = |result: Result<(), SigV4Error>| matches!(result, Err(SigV4Error::Invalid(m)) if m.contains("does not match"));
    let auth = Authorization::parse(&request(&headers, BODY), "ecs", now()).unwrap();
    assert!(invalid(
        auth.verify(&request(&headers, BODY), "wrong secret")
    ));
    assert!(invalid(
        auth.verify(&request(&headers, br#"{"maxResults":11}"#), SECRET)
    ));
    let mut other_target = headers.clone();
    other_target[1].1 = "AmazonEC2ContainerServiceV20141113.DeleteCluster".into();
    assert!(invalid(auth.verify(&request(&other_target, BODY), SECRET)));
    // A header that was not signed may change (proxies add some).
    let mut extra = headers.clone();
    extra.push(("User-Agent".into(), "something else".into()));
    auth.verify(&request(&extra, BODY), SECRET).unwrap();
    // Another region in the scope changes the key.
    let other_region = BOTOCORE.replace("eu-west-1", "us-east-1");
    let moved = self::headers(Some(&other_region));
    let auth = Authorization::parse(&request(&moved, BODY), "ecs", now()).unwrap();
    assert_eq!(auth.credential.region, "us-east-1");
    assert!(invalid(auth.verify(&request(&moved, BODY), SECRET)));
}

#[test]
fn the_time_must_be_within_five_minutes_and_match_the_scope() {
    let headers = headers(Some(BOTOCORE));
    let req = request(&headers, BODY);
    Authorization::parse(&req, "ecs", now() + MAX_SKEW_SECS).unwrap();
    Authorization::parse(&req, "ecs", now() - MAX_SKEW_SECS).unwrap();
    let late = Authorization::parse(&req, "ecs", now() + MAX_SKEW_SECS + 1).unwrap_err();
    assert_eq!(late.aws_type(), "InvalidSignatureException");
    assert!(
        late.to_string().starts_with(
            "Signature expired: 20261205T170828Z is now earlier than 20261205T170829Z"
        ),
        "{late}"
    );
    let early = Authorization::parse(&req, "ecs", now() - MAX_SKEW_SECS - 1).unwrap_err();
    assert!(early.to_string().contains("not yet current"), "{early}");

    let other_day = BOTOCORE.replace("/20261205/", "/20261204/");
    let headers = self::headers(Some(&other_day));
    let err = Authorization::parse(&request(&headers, BODY), "ecs", now()).unwrap_err();
    assert!(
        err.to_string().contains("Date in Credential scope"),
        "{err}"
    );
    let err = Authorization::parse(&request(&headers, BODY), "sqs", now()).unwrap_err();
    assert!(matches!(err, SigV4Error::Invalid(_)), "{err}");
}

#[test]
fn malformed_or_missing_parts_are_named() {
    let no_auth = headers(None);
    let err = Authorization::parse(&request(&no_auth, BODY), "ecs", now()).unwrap_err();
    assert_eq!(err, SigV4Error::MissingAuthentication);
    assert_eq!(
        (err.aws_type(), err.http_status()),
        ("MissingAuthenticationTokenException", 403)
    );

    let cases = [
        ("AWS4-HMAC-SHA1 Credential=x", "must use AWS4-HMAC-SHA256"),
        (
            "AWS4-HMAC-SHA256 SignedHeaders=host;x-amz-date, Signature=00",
            "requires 'Credential'",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=A/20261205/eu-west-1/ecs/aws4_request, Signature=00",
            "requires 'SignedHeaders'",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=A/20261205/eu-west-1/ecs, SignedHeaders=host;x-amz-date, Signature=00",
            "Credential should be",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=A/20261205/eu-west-1/ecs/aws5_request, SignedHeaders=host;x-amz-date, Signature=00",
            "valid terminator",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=A/20261205/eu-west-1/ecs/aws4_request, SignedHeaders=host;x-amz-date, Signature=zz",
            "64 hexadecimal",
        ),
        (
            &BOTOCORE.replace("content-type;host;", "content-type;"),
            "'Host' must be a 'SignedHeader'",
        ),
        (
            &BOTOCORE.replace(";x-amz-date;", ";"),
            "'X-Amz-Date' must be a 'SignedHeader'",
        ),
    ];
    for (header, expected) in cases {
        let headers = headers(Some(header));
        let err = Authorization::parse(&request(&headers, BODY), "ecs", now()).unwrap_err();
        assert_eq!(err.aws_type(), "IncompleteSignatureException", "{header}");
        assert_eq!(err.http_status(), 400);
        assert!(err.to_string().contains(expected), "{header}: {err}");
    }

    // No X-Amz-Date header at all.
    let mut headers = headers(Some(BOTOCORE));
    headers.retain(|(n, _)| n != "X-Amz-Date");
    let err = Authorization::parse(&request(&headers, BODY), "ecs", now()).unwrap_err();
    assert!(err.to_string().contains("'X-Amz-Date' header"), "{err}");

    // Session tokens come from AWS STS, never from Berth.
    let mut headers = self::headers(Some(BOTOCORE));
    headers.push(("X-Amz-Security-Token".into(), "FwoGZX...".into()));
    let err = Authorization::parse(&request(&headers, BODY), "ecs", now()).unwrap_err();
    assert_eq!(err.aws_type(), "UnrecognizedClientException");

    // A signed header the request does not carry.
    let with_extra = BOTOCORE.replace("x-amz-target", "x-amz-target;x-other");
    let headers = self::headers(Some(&with_extra));
    let auth = Authorization::parse(&request(&headers, BODY), "ecs", now()).unwrap();
    let err = auth.verify(&request(&headers, BODY), SECRET).unwrap_err();
    assert!(err.to_string().contains("x-other"), "{err}");
}

#[test]
fn canonical_forms_follow_the_rules() {
    assert_eq!(uri_encode("a b/c~d*", false), "a%20b%2Fc~d%2A");
    assert_eq!(uri_encode("/a b/", true), "/a%20b/");
    assert_eq!(percent_decode("a%20b%2f%zz%"), "a b/%zz%");
    assert_eq!(canonical_query("b=2&a=1&a=0&c"), "a=0&a=1&b=2&c=");
    assert_eq!(canonical_query("x=a%20b"), "x=a%20b");
    assert_eq!(canonical_query(""), "");
    // Repeated headers join with commas; inner runs of spaces collapse.
    let headers = vec![
        ("host".to_string(), "h".to_string()),
        ("X-Multi".into(), " a   b ".into()),
        ("x-multi".into(), "c".into()),
    ];
    let req = Request {
        method: "POST",
        path: "",
        query: "",
        headers: &headers,
        body: b"",
    };
    let canonical = canonical_request(&req, &["host".into(), "x-multi".into()]).unwrap();
    assert!(
        canonical.starts_with("POST\n/\n\nhost:h\nx-multi:a b,c\n\nhost;x-multi\n"),
        "{canonical}"
    );
    assert!(canonical.ends_with(&sha256_hex(b"")));
}
