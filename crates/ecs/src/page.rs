//! ECS's pagination and time formats: `maxResults` and an opaque
//! `nextToken` on List* calls, and timestamps as epoch seconds with a
//! fraction (what the AWS JSON protocol sends for `timestamp` members).

use crate::error::{EcsError, ErrorType};

/// ECS's default and largest page of a List* call.
pub const MAX_RESULTS: usize = 100;

/// Epoch seconds with milliseconds as the fraction.
pub fn epoch_seconds(ms: i64) -> f64 {
    // Exact for every millisecond count until the year 285,000.
    ms as f64 / 1000.0
}

/// A token is the hex of the last key of the page before: sorting is by
/// key, so the next page starts strictly after it, and a key deleted in
/// between does not make the listing repeat or skip anything else.
pub fn encode_token(last_key: &str) -> String {
    hex::encode(last_key.as_bytes())
}

fn decode_token(token: &str) -> Result<String, EcsError> {
    hex::decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| {
            EcsError::new(
                ErrorType::InvalidParameter,
                "nextToken is not a token this API returned; start again without it",
            )
        })
}

/// One page of `items` (sorted by `key`, ascending), after the key that
/// `next_token` names, at most `max_results` long (`None` or 0: the
/// default), and the token of the page after it, if there is one.
pub fn page<T>(
    items: Vec<T>,
    key: impl Fn(&T) -> &str,
    next_token: Option<&str>,
    max_results: Option<i64>,
) -> Result<(Vec<T>, Option<String>), EcsError> {
    page_in(items, key, next_token, max_results, false)
}

/// [`page`] over `items` sorted by `key` descending when `descending`
/// (ListTaskDefinitions' `sort: DESC`): the next page starts strictly
/// before the token's key instead of after it.
pub fn page_in<T>(
    items: Vec<T>,
    key: impl Fn(&T) -> &str,
    next_token: Option<&str>,
    max_results: Option<i64>,
    descending: bool,
) -> Result<(Vec<T>, Option<String>), EcsError> {
    let limit = match max_results {
        None | Some(0) => MAX_RESULTS,
        Some(n) if (1..=MAX_RESULTS as i64).contains(&n) => n as usize,
        Some(n) => {
            return Err(EcsError::new(
                ErrorType::InvalidParameter,
                format!("maxResults must be between 1 and {MAX_RESULTS}, not {n}"),
            ))
        }
    };
    let after = next_token
        .filter(|t| !t.is_empty())
        .map(decode_token)
        .transpose()?;
    let mut rest: Vec<T> = match &after {
        Some(after) => items
            .into_iter()
            .filter(|item| {
                if descending {
                    key(item) < after.as_str()
                } else {
                    key(item) > after.as_str()
                }
            })
            .collect(),
        None => items,
    };
    let more = rest.len() > limit;
    rest.truncate(limit);
    let token = if more {
        rest.last().map(|item| encode_token(key(item)))
    } else {
        None
    };
    Ok((rest, token))
}

/// One page of `keys` (names or ids, in any order), sorted, each turned
/// into what the answer lists (an ARN): the List* calls that answer ARNs.
pub fn page_of_keys(
    mut keys: Vec<String>,
    next_token: Option<&str>,
    max_results: Option<i64>,
    listed: impl Fn(String) -> String,
) -> Result<(Vec<String>, Option<String>), EcsError> {
    keys.sort();
    let (keys, next) = page(keys, String::as_str, next_token, max_results)?;
    Ok((keys.into_iter().map(listed).collect(), next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_cover_everything_once_even_when_items_change_between_calls() {
        let names: Vec<String> = (0..7).map(|i| format!("c{i}")).collect();
        let (first, token) = page(names.clone(), |s| s, None, Some(3)).unwrap();
        assert_eq!(first, ["c0", "c1", "c2"]);
        let token = token.unwrap();
        // c1 deleted and c9 created between the calls.
        let changed: Vec<String> = names
            .iter()
            .filter(|n| *n != "c1")
            .cloned()
            .chain(["c9".to_string()])
            .collect();
        let (second, token) = page(changed.clone(), |s| s, Some(&token), Some(3)).unwrap();
        assert_eq!(second, ["c3", "c4", "c5"]);
        let (third, token) = page(changed, |s| s, token.as_deref(), Some(3)).unwrap();
        assert_eq!(third, ["c6", "c9"]);
        assert_eq!(token, None, "the last page has no token");
    }

    #[test]
    fn limits_and_tokens_are_checked() {
        let names = vec!["a".to_string()];
        assert_eq!(page(names.clone(), |s| s, None, None).unwrap().0.len(), 1);
        assert_eq!(
            page(names.clone(), |s| s, Some(""), Some(0))
                .unwrap()
                .0
                .len(),
            1
        );
        for bad in [-1, 101] {
            let e = page(names.clone(), |s| s, None, Some(bad)).unwrap_err();
            assert_eq!(e.kind, ErrorType::InvalidParameter);
            assert!(e.message.contains("maxResults"), "{e}");
        }
        let e = page(names, |s| s, Some("not-hex"), None).unwrap_err();
        assert!(e.message.contains("nextToken"), "{e}");
        assert_eq!(epoch_seconds(1_733_400_000_123), 1_733_400_000.123);
    }

    #[test]
    fn descending_pages_continue_below_the_last_key() {
        let names: Vec<String> = ["e", "d", "c", "b", "a"].map(String::from).to_vec();
        let (first, token) = page_in(names.clone(), |s| s, None, Some(2), true).unwrap();
        assert_eq!(first, ["e", "d"]);
        let (second, token) =
            page_in(names.clone(), |s| s, token.as_deref(), Some(2), true).unwrap();
        assert_eq!(second, ["c", "b"]);
        let (third, token) = page_in(names, |s| s, token.as_deref(), Some(2), true).unwrap();
        assert_eq!((third, token), (vec!["a".to_string()], None));
    }
}
