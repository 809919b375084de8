//! Size limits on what callers send, in one place. Everything a request
//! carries can end up in a Raft entry that every server stores and replays,
//! so each string and list has a bound, and a refusal names the field and
//! the bound. The gRPC servers also cap whole messages (see the server's
//! `limits` module), so a request cannot grow past these by adding fields.

use crate::FieldError;

/// Ids of instances, tasks, activations and tokens (Berth's are far shorter).
pub const MAX_ID_LEN: usize = 128;
/// A hostname (RFC 1123 allows 253).
pub const MAX_HOSTNAME_LEN: usize = 255;
/// Descriptions of API tokens and activations.
pub const MAX_DESCRIPTION_LEN: usize = 1024;
/// Stop reasons, and reasons in agents' reports (those are cut to this
/// length rather than refused: they quote runtime errors of any length).
pub const MAX_REASON_LEN: usize = 1024;
/// An activation secret or other credential as sent.
pub const MAX_SECRET_LEN: usize = 256;
/// A certificate signing request in PEM (an ECDSA or RSA-4096 one is under 4 KiB).
pub const MAX_CSR_LEN: usize = 16 * 1024;
/// Attributes in one list (activation, registration, hello, put).
pub const MAX_ATTRIBUTES: usize = 64;
/// One `CONTAINER.env.KEY=VALUE` override.
pub const MAX_OVERRIDE_LEN: usize = 8 * 1024;
/// An agent's version string.
pub const MAX_AGENT_VERSION_LEN: usize = 128;
/// Task reports in one hello or status message.
pub const MAX_REPORTS_PER_MESSAGE: usize = 1024;
/// Containers in one task report (a task has at most 10).
pub const MAX_CONTAINERS_PER_REPORT: usize = crate::validate::MAX_CONTAINERS;

/// `value` is at most `max` bytes long.
pub fn check_len(field: &str, value: &str, max: usize) -> Result<(), FieldError> {
    if value.len() > max {
        return Err(FieldError::new(
            field,
            format!("{} bytes is too long; the limit is {max}", value.len()),
        ));
    }
    Ok(())
}

/// A list has at most `max` entries.
pub fn check_count(field: &str, count: usize, max: usize) -> Result<(), FieldError> {
    if count > max {
        return Err(FieldError::new(
            field,
            format!("{count} entries is too many; the limit is {max}"),
        ));
    }
    Ok(())
}

/// `text` cut to at most `max` bytes, on a character boundary.
pub fn truncated(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Host ports an agent may report bound in its hello (every TCP and UDP
/// port would be 131,070; a host with more than this many listeners is
/// not one Berth schedules onto sensibly).
pub const MAX_HOST_PORTS: usize = 8192;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_field_and_the_limit() {
        assert!(check_len("hostname", &"h".repeat(MAX_HOSTNAME_LEN), MAX_HOSTNAME_LEN).is_ok());
        let e = check_len(
            "hostname",
            &"h".repeat(MAX_HOSTNAME_LEN + 1),
            MAX_HOSTNAME_LEN,
        )
        .unwrap_err();
        assert_eq!(e.field, "hostname");
        assert!(
            e.message.contains("256 bytes") && e.message.contains("255"),
            "{e}"
        );
        assert!(check_count("attributes", MAX_ATTRIBUTES, MAX_ATTRIBUTES).is_ok());
        let e = check_count("attributes", MAX_ATTRIBUTES + 1, MAX_ATTRIBUTES).unwrap_err();
        assert_eq!(e.field, "attributes");
        assert!(
            e.message.contains("65 entries") && e.message.contains("64"),
            "{e}"
        );
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncated("abc".into(), 5), "abc");
        assert_eq!(truncated("abcdef".into(), 3), "abc");
        // 'é' is two bytes: cutting inside it keeps the character out.
        assert_eq!(truncated("aé".into(), 2), "a");
    }
}
