//! RFC 3339 timestamps in UTC, without a date crate: the API carries times
//! as milliseconds since the Unix epoch, and people (tables, logs) and
//! containerd (lease expiry labels, image configs) want them as text.
//!
//! Formatting only; reading the clock is left to the callers, so nothing
//! here can make the state machine depend on when it runs.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch as RFC 3339 UTC, to the second:
/// `2023-11-14T22:13:20Z`. Times before 1970 are formatted too.
pub fn rfc3339(ms: i64) -> String {
    let (date, clock) = split_seconds(ms.div_euclid(1000));
    format!("{date}T{clock}Z")
}

/// A system time as RFC 3339 UTC with nanoseconds, the precision containerd
/// and OCI image configs use: `2023-11-14T22:13:20.000000005Z`. A time
/// before 1970 reads as the epoch.
pub fn rfc3339_nanos(t: SystemTime) -> String {
    let since_epoch = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX);
    let (date, clock) = split_seconds(secs);
    format!("{date}T{clock}.{:09}Z", since_epoch.subsec_nanos())
}

/// Seconds since the epoch as `YYYY-MM-DD` and `hh:mm:ss`.
fn split_seconds(secs: i64) -> (String, String) {
    let days = secs.div_euclid(86_400);
    let in_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    (
        format!("{year:04}-{month:02}-{day:02}"),
        format!(
            "{:02}:{:02}:{:02}",
            in_day / 3600,
            in_day % 3600 / 60,
            in_day % 60
        ),
    )
}

/// Proleptic Gregorian date of a day count from 1970-01-01, after Howard
/// Hinnant's `civil_from_days`: shifting the year to start in March puts
/// the leap day last, so month lengths follow a fixed pattern.
pub(crate) fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days from 1970-01-01 of a proleptic Gregorian date: the inverse of
/// [`civil_from_days`]. Only tests need it so far (they name dates).
#[cfg(test)]
pub(crate) fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let shifted_month = (month + 9) % 12;
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_matches_known_instants_at_both_precisions() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_709_210_096_789), "2024-02-29T12:34:56Z");
        assert_eq!(rfc3339(4_107_542_400_000), "2100-03-01T00:00:00Z");
        assert_eq!(rfc3339(253_402_300_799_000), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(rfc3339(-1000), "1969-12-31T23:59:59Z");

        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 5);
        assert_eq!(rfc3339_nanos(t), "2023-11-14T22:13:20.000000005Z");
        assert_eq!(rfc3339_nanos(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        for days in [-800_000, -1, 0, 59, 10_957, 20_792, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        let before_1970 = UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(rfc3339_nanos(before_1970), "1970-01-01T00:00:00.000000000Z");
    }
}
