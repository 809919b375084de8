//! Image references (`[registry[:port]/]path[:tag][@digest]`), parsed by
//! hand to the grammar of the distribution project's reference package.
//!
//! Why not `oci_client::Reference`'s own parser: it compiles one regular
//! expression with a Unicode `\w` repeated 128 times for the tag, and keeps
//! it for the life of the process. That was a 4.2 MiB allocation in the
//! agent, a sixth of its resident memory (docs/benchmarks.md). Tags here are
//! ASCII, as Docker's are.

use oci_client::Reference;

const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_LEGACY: &str = "index.docker.io";
const DEFAULT_TAG: &str = "latest";
const MAX_REPOSITORY_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// Why a reference was refused; each names the part and what it must be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("the reference is empty")]
    Empty,
    #[error(
        "registry {0:?} is not a host name with an optional :port (letters, digits, dots and \
         inner hyphens)"
    )]
    Registry(String),
    #[error(
        "repository path component {0:?} must be lowercase letters and digits, separated by \
         '.', '_', '__' or hyphens"
    )]
    Path(String),
    #[error("the repository name is longer than {MAX_REPOSITORY_LEN} characters")]
    TooLong,
    #[error(
        "tag {0:?} must be 1 to {MAX_TAG_LEN} letters, digits, '_', '.' or '-', not starting \
         with '.' or '-'"
    )]
    Tag(String),
    #[error(
        "digest {0:?} must be ALGORITHM:HEX (sha256 with 64, sha384 with 96 or sha512 with 128 \
         hex digits)"
    )]
    Digest(String),
}

/// Parses and normalizes a reference as Docker does: no registry means
/// docker.io, a one-part Docker Hub name gets `library/`, and no tag or
/// digest means `latest`.
pub fn parse(text: &str) -> Result<Reference, ReferenceError> {
    if text.is_empty() {
        return Err(ReferenceError::Empty);
    }
    let (rest, digest) = match text.split_once('@') {
        Some((rest, digest)) => (rest, Some(check_digest(digest)?)),
        None => (text, None),
    };
    // A colon after the last slash starts the tag; one before it is a port.
    let (name, tag) = match rest.rfind(':') {
        Some(colon) if rest.rfind('/').is_none_or(|slash| colon > slash) => {
            (&rest[..colon], Some(check_tag(&rest[colon + 1..])?))
        }
        _ => (rest, None),
    };
    let (registry, path) = match name.split_once('/') {
        Some((first, path)) if first.contains(['.', ':']) || first == "localhost" => {
            check_registry(first)?;
            (first, path)
        }
        _ => (DOCKER_HUB, name),
    };
    for component in path.split('/') {
        check_path_component(component)?;
    }
    let registry = if registry == DOCKER_HUB_LEGACY {
        DOCKER_HUB
    } else {
        registry
    };
    let repository = if registry == DOCKER_HUB && !path.contains('/') {
        format!("library/{path}")
    } else {
        path.to_string()
    };
    if repository.len() > MAX_REPOSITORY_LEN {
        return Err(ReferenceError::TooLong);
    }
    let registry = registry.to_string();
    Ok(match (tag, digest) {
        (Some(tag), Some(digest)) => {
            Reference::with_tag_and_digest(registry, repository, tag.into(), digest.into())
        }
        (None, Some(digest)) => Reference::with_digest(registry, repository, digest.into()),
        (tag, None) => {
            Reference::with_tag(registry, repository, tag.unwrap_or(DEFAULT_TAG).to_string())
        }
    })
}

fn check_registry(registry: &str) -> Result<(), ReferenceError> {
    let bad = || ReferenceError::Registry(registry.to_string());
    let (host, port) = match registry.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (registry, None),
    };
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
    }
    let label_ok = |label: &str| {
        let bytes = label.as_bytes();
        !bytes.is_empty()
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
            && bytes[0] != b'-'
            && bytes[bytes.len() - 1] != b'-'
    };
    if host.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(bad())
    }
}

/// `[a-z0-9]+` runs joined by `.`, `_`, `__` or any number of `-`.
fn check_path_component(component: &str) -> Result<(), ReferenceError> {
    let bad = || ReferenceError::Path(component.to_string());
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = component.as_bytes();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return Err(bad());
    };
    if !alnum(first) || !alnum(last) {
        return Err(bad());
    }
    // What lies between the alphanumeric runs: each must be a separator.
    let separators_ok = component
        .split(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        .filter(|separator| !separator.is_empty())
        .all(|separator| {
            matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-')
        });
    if !separators_ok {
        return Err(bad());
    }
    Ok(())
}

fn check_tag(tag: &str) -> Result<&str, ReferenceError> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= MAX_TAG_LEN
        && word(bytes[0])
        && bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-');
    if ok {
        Ok(tag)
    } else {
        Err(ReferenceError::Tag(tag.to_string()))
    }
}

fn check_digest(digest: &str) -> Result<&str, ReferenceError> {
    let (hex, len) = match digest.split_once(':') {
        Some(("sha256", hex)) => (hex, 64),
        Some(("sha384", hex)) => (hex, 96),
        Some(("sha512", hex)) => (hex, 128),
        _ => return Err(ReferenceError::Digest(digest.to_string())),
    };
    if hex.len() == len && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(digest)
    } else {
        Err(ReferenceError::Digest(digest.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn parts(text: &str) -> (String, String, Option<String>, Option<String>) {
        let r = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        (
            r.registry().to_string(),
            r.repository().to_string(),
            r.tag().map(str::to_string),
            r.digest().map(str::to_string),
        )
    }

    fn expect(
        registry: &str,
        repository: &str,
        tag: Option<&str>,
        digest: Option<&str>,
    ) -> (String, String, Option<String>, Option<String>) {
        (
            registry.into(),
            repository.into(),
            tag.map(Into::into),
            digest.map(Into::into),
        )
    }

    #[test]
    fn normalizes_as_docker_does() {
        assert_eq!(
            parts("busybox"),
            expect("docker.io", "library/busybox", Some("latest"), None)
        );
        assert_eq!(
            parts("nginx:1.27-alpine"),
            expect("docker.io", "library/nginx", Some("1.27-alpine"), None)
        );
        assert_eq!(
            parts("grafana/grafana"),
            expect("docker.io", "grafana/grafana", Some("latest"), None)
        );
        assert_eq!(
            parts("index.docker.io/redis:7"),
            expect("docker.io", "library/redis", Some("7"), None)
        );
        assert_eq!(
            parts("localhost/berth/hello:1"),
            expect("localhost", "berth/hello", Some("1"), None)
        );
        assert_eq!(
            parts("127.0.0.1:5000/a/b/c:v_1.0"),
            expect("127.0.0.1:5000", "a/b/c", Some("v_1.0"), None)
        );
        assert_eq!(
            parts("registry.example.com:5000/team/app-x__y.z"),
            expect(
                "registry.example.com:5000",
                "team/app-x__y.z",
                Some("latest"),
                None
            )
        );
        assert_eq!(
            parts(&format!("ghcr.io/o/app@{SHA}")),
            expect("ghcr.io", "o/app", None, Some(SHA))
        );
        assert_eq!(
            parts(&format!("ghcr.io/o/app:2@{SHA}")),
            expect("ghcr.io", "o/app", Some("2"), Some(SHA))
        );
        assert_eq!(
            parts("foo.bar"),
            expect("docker.io", "library/foo.bar", Some("latest"), None)
        );
        assert_eq!(
            parts("a---b/c"),
            expect("docker.io", "a---b/c", Some("latest"), None)
        );
        // A colon before the last slash is a port, not a tag.
        assert_eq!(
            parts("localhost:5000/app"),
            expect("localhost:5000", "app", Some("latest"), None)
        );
        assert_eq!(
            parse("localhost:5000/app:3").expect("tag").whole(),
            "localhost:5000/app:3"
        );
    }

    /// Where both accept a reference, they read it the same way as the
    /// regular-expression parser this one replaced.
    #[test]
    fn agrees_with_the_regex_parser() {
        for text in [
            "busybox",
            "nginx:1.27-alpine",
            "grafana/grafana:10",
            "index.docker.io/redis",
            "localhost/berth/hello:1",
            "localhost:5000/app",
            "127.0.0.1:5000/a/b/c:v_1.0",
            "registry.example.com:5000/team/app-x__y.z",
            "ghcr.io/o/app:2@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "foo.bar",
        ] {
            let theirs: Reference = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(parse(text), Ok(theirs), "{text}");
        }
    }

    #[test]
    fn bad_references_name_the_part() {
        for (text, part) in [
            ("", "empty"),
            ("Busybox", "\"Busybox\""),
            ("docker.io/Team/app", "\"Team\""),
            ("app_", "\"app_\""),
            ("a..b", "\"a..b\""),
            ("a___b", "\"a___b\""),
            ("a//b", "\"\""),
            ("app:", "tag \"\""),
            ("app:-x", "tag \"-x\""),
            ("app:v1é", "tag \"v1é\""),
            ("reg-.io/app", "registry \"reg-.io\""),
            ("localhost:50a0/app", "registry \"localhost:50a0\""),
            ("app@sha256:abc", "digest \"sha256:abc\""),
            ("app@md5:0123456789abcdef0123456789abcdef", "digest"),
        ] {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.contains(part), "{text:?}: {err}");
        }
        let long = format!("{}:1", "a".repeat(MAX_REPOSITORY_LEN));
        assert_eq!(parse(&long).expect_err("long"), ReferenceError::TooLong);
        let tag = "t".repeat(MAX_TAG_LEN + 1);
        assert!(matches!(
            parse(&format!("app:{tag}")),
            Err(ReferenceError::Tag(_))
        ));
    }
}
