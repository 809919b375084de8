//! Schedule expressions in EventBridge Scheduler's syntax, for scheduled
//! tasks: `rate(5 minutes)` and `cron(0 3 * * ? *)` (six fields: minutes,
//! hours, day of month, month, day of week, year), evaluated in UTC.
//!
//! Pure: the next run is a function of the expression and a time, so the
//! controller that fires schedules can be tested with any clock.

use crate::error::FieldError;

/// The field every parse error names.
const FIELD: &str = "scheduleExpression";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleExpression {
    /// Every `every_ms`, counted from the schedule's start.
    Rate {
        every_ms: i64,
    },
    Cron(Cron),
}

/// A parsed `cron(...)`: the values each field allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: Vec<bool>,
    hours: Vec<bool>,
    /// Days of the month, 1-31 (index 0 unused).
    days_of_month: Vec<bool>,
    /// `L`: the month's last day.
    // Each Vec<bool> is indexed by the value itself (years by the year).
    last_day_of_month: bool,
    months: Vec<bool>,
    /// 1 = Sunday ... 7 = Saturday, as EventBridge numbers them.
    days_of_week: Vec<bool>,
    /// Day of month is `?`: the day of week decides.
    by_day_of_week: bool,
    years: Vec<bool>,
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
/// EventBridge's year range.
const YEARS: (u32, u32) = (1970, 2199);

const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 86_400_000;

impl ScheduleExpression {
    /// Reads `rate(VALUE UNIT)` or `cron(M H DOM MON DOW Y)`; an error names
    /// the part that is wrong and what it should be.
    pub fn parse(text: &str) -> Result<Self, FieldError> {
        let text = text.trim();
        if let Some(inner) = text.strip_prefix("rate(").and_then(|t| t.strip_suffix(')')) {
            return parse_rate(inner);
        }
        if let Some(inner) = text.strip_prefix("cron(").and_then(|t| t.strip_suffix(')')) {
            return Cron::parse(inner).map(ScheduleExpression::Cron);
        }
        Err(FieldError::new(
            FIELD,
            format!("{text:?} is neither rate(VALUE UNIT) nor cron(MINUTES HOURS DAY-OF-MONTH MONTH DAY-OF-WEEK YEAR), e.g. rate(5 minutes) or cron(0 3 * * ? *)"),
        ))
    }

    /// The first run strictly after `after_ms`. A rate counts whole periods
    /// from `start_ms`; a cron runs at whole minutes, UTC. `None` when
    /// nothing is left (a cron whose years are over).
    pub fn next_after(&self, after_ms: i64, start_ms: i64) -> Option<i64> {
        match self {
            ScheduleExpression::Rate { every_ms } => {
                if after_ms < start_ms {
                    return Some(start_ms);
                }
                let periods = (after_ms - start_ms) / every_ms + 1;
                Some(start_ms + periods * every_ms)
            }
            ScheduleExpression::Cron(cron) => cron.next_after(after_ms),
        }
    }
}

impl ScheduleExpression {
    /// As `next_after`, with a cron's fields read as wall-clock time in
    /// `tz`. A wall-clock time that a daylight-saving change skips runs
    /// once, just after the gap; one that happens twice runs at the first.
    pub fn next_after_in(
        &self,
        tz: &jiff::tz::TimeZone,
        after_ms: i64,
        start_ms: i64,
    ) -> Option<i64> {
        let ScheduleExpression::Cron(cron) = self else {
            return self.next_after(after_ms, start_ms);
        };
        // The cron works on civil time written as if it were UTC; each
        // candidate is then placed in the zone.
        let mut local_after = after_ms.checked_add(offset_ms(tz, after_ms)?)?;
        // Each round moves at least a minute on; a zone's offsets differ by
        // at most a day, so few rounds are ever needed.
        for _ in 0..2_000 {
            let candidate = cron.next_after(local_after)?;
            let utc = local_to_utc(tz, candidate)?;
            if utc > after_ms {
                return Some(utc);
            }
            local_after = candidate;
        }
        None
    }
}

fn offset_ms(tz: &jiff::tz::TimeZone, utc_ms: i64) -> Option<i64> {
    let at = jiff::Timestamp::from_millisecond(utc_ms).ok()?;
    Some(i64::from(tz.to_offset(at).seconds()) * 1000)
}

/// A civil time (written as UTC milliseconds) as the instant it is in `tz`.
fn local_to_utc(tz: &jiff::tz::TimeZone, local_ms: i64) -> Option<i64> {
    let civil = jiff::Timestamp::from_millisecond(local_ms)
        .ok()?
        .to_zoned(jiff::tz::TimeZone::UTC)
        .datetime();
    let zoned = tz.to_ambiguous_zoned(civil).compatible().ok()?;
    Some(zoned.timestamp().as_millisecond())
}

fn parse_rate(inner: &str) -> Result<ScheduleExpression, FieldError> {
    let bad = |why: String| FieldError::new(FIELD, format!("rate({inner}): {why}"));
    let mut parts = inner.split_whitespace();
    let (Some(value), Some(unit), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad(
            "expected a value and a unit, e.g. rate(5 minutes)".into()
        ));
    };
    let value: i64 = value
        .parse()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| bad(format!("{value:?} is not a positive whole number")))?;
    let unit_ms = match unit {
        "minute" | "minutes" => MINUTE_MS,
        "hour" | "hours" => 60 * MINUTE_MS,
        "day" | "days" => DAY_MS,
        other => {
            return Err(bad(format!(
                "{other:?} is not a unit; use minutes, hours or days"
            )))
        }
    };
    let every_ms = value
        .checked_mul(unit_ms)
        .filter(|ms| *ms <= 3650 * DAY_MS)
        .ok_or_else(|| bad("longer than ten years".into()))?;
    Ok(ScheduleExpression::Rate { every_ms })
}

impl Cron {
    fn parse(inner: &str) -> Result<Self, FieldError> {
        let fields: Vec<&str> = inner.split_whitespace().collect();
        let [minutes, hours, dom, months, dow, years] = fields[..] else {
            return Err(FieldError::new(
                FIELD,
                format!(
                    "cron({inner}) has {} fields; it needs six: minutes hours day-of-month month day-of-week year, e.g. cron(0 3 * * ? *)",
                    fields.len()
                ),
            ));
        };
        let by_day_of_week = dom == "?";
        if by_day_of_week == (dow == "?") {
            return Err(FieldError::new(
                FIELD,
                format!("cron({inner}): exactly one of day-of-month and day-of-week must be ?, e.g. cron(0 3 * * ? *) or cron(0 3 ? * MON *)"),
            ));
        }
        let last_day_of_month = dom == "L";
        let all = |n: usize| vec![true; n];
        Ok(Cron {
            minutes: values("minutes", minutes, 0, 59, &[])?,
            hours: values("hours", hours, 0, 23, &[])?,
            days_of_month: if by_day_of_week || last_day_of_month {
                all(32)
            } else {
                values("day-of-month", dom, 1, 31, &[])?
            },
            last_day_of_month,
            months: values("month", months, 1, 12, &MONTHS)?,
            days_of_week: if by_day_of_week {
                values("day-of-week", dow, 1, 7, &WEEKDAYS)?
            } else {
                all(8)
            },
            by_day_of_week,
            years: values("year", years, YEARS.0, YEARS.1, &[])?,
        })
    }

    fn next_after(&self, after_ms: i64) -> Option<i64> {
        // The next whole minute after `after_ms`.
        let first = (after_ms.div_euclid(MINUTE_MS) + 1) * MINUTE_MS;
        let mut day = first.div_euclid(DAY_MS);
        let mut from_minute = first.rem_euclid(DAY_MS) / MINUTE_MS;
        loop {
            let (year, month, dom) = crate::time::civil_from_days(day);
            if year > i64::from(YEARS.1) {
                return None;
            }
            if self.matches_day(day, year, month, dom) {
                for minute_of_day in from_minute..1440 {
                    let (h, m) = (minute_of_day / 60, minute_of_day % 60);
                    if self.hours[h as usize] && self.minutes[m as usize] {
                        return Some(day * DAY_MS + minute_of_day * MINUTE_MS);
                    }
                }
            }
            day += 1;
            from_minute = 0;
        }
    }

    fn matches_day(&self, day: i64, year: i64, month: i64, dom: i64) -> bool {
        let year_ok = usize::try_from(year)
            .ok()
            .and_then(|y| self.years.get(y))
            .copied()
            .unwrap_or(false);
        if !year_ok || !self.months[month as usize] {
            return false;
        }
        if self.by_day_of_week {
            // 1970-01-01 was a Thursday (5 in EventBridge's numbering).
            let weekday = (day + 4).rem_euclid(7) + 1;
            return self.days_of_week[weekday as usize];
        }
        if self.last_day_of_month {
            return dom == days_in_month(year, month);
        }
        self.days_of_month[dom as usize]
    }
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The values one cron field allows, as flags indexed by value (`lo..=hi`;
/// lower indexes unused). `names` are accepted for 1, 2, ... when given.
fn values(
    field: &str,
    text: &str,
    lo: u32,
    hi: u32,
    names: &[&str],
) -> Result<Vec<bool>, FieldError> {
    let bad = |why: String| FieldError::new(FIELD, format!("cron {field} {text:?}: {why}"));
    let mut allowed = vec![false; (hi + 1) as usize];
    let number = |s: &str| -> Result<u32, FieldError> {
        let upper = s.to_ascii_uppercase();
        if let Some(i) = names.iter().position(|n| *n == upper) {
            return Ok(i as u32 + 1);
        }
        match s.parse::<u32>() {
            Ok(n) if (lo..=hi).contains(&n) => Ok(n),
            _ => Err(bad(format!(
                "{s:?} is not from {lo} to {hi}{}",
                if names.is_empty() {
                    String::new()
                } else {
                    format!(" or one of {}", names.join(","))
                }
            ))),
        }
    };
    for part in text.split(',') {
        if part.contains(['L', 'W', '#'])
            && !names.iter().any(|n| part.to_ascii_uppercase().contains(n))
        {
            return Err(bad(format!(
                "{part:?}: L, W and # are not supported by Berth (only L alone in day-of-month); list the values instead"
            )));
        }
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u32 =
                    step.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                        bad(format!("step {step:?} is not a positive whole number"))
                    })?;
                (range, step)
            }
            None => (part, 1),
        };
        let (from, to) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (number(a)?, number(b)?)
        } else {
            let n = number(range)?;
            // `5/15` means from 5 to the end, every 15.
            (n, if part.contains('/') { hi } else { n })
        };
        if from > to {
            return Err(bad(format!("range {range:?} runs backwards")));
        }
        let mut v = from;
        while v <= to {
            allowed[v as usize] = true;
            v += step;
        }
    }
    Ok(allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Milliseconds of a UTC date and time.
    fn at(y: i64, mo: i64, d: i64, h: i64, mi: i64) -> i64 {
        crate::time::days_from_civil(y, mo, d) * DAY_MS + h * 3_600_000 + mi * MINUTE_MS
    }

    fn cron(text: &str) -> ScheduleExpression {
        ScheduleExpression::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn rates_count_whole_periods_from_the_start() {
        let five = cron("rate(5 minutes)");
        assert_eq!(five, ScheduleExpression::Rate { every_ms: 300_000 });
        assert_eq!(five.next_after(1_000, 1_000), Some(301_000));
        assert_eq!(five.next_after(300_999, 1_000), Some(301_000));
        assert_eq!(five.next_after(301_000, 1_000), Some(601_000));
        assert_eq!(five.next_after(0, 1_000), Some(1_000));
        assert_eq!(
            cron("rate(1 day)"),
            ScheduleExpression::Rate { every_ms: DAY_MS }
        );
    }

    #[test]
    fn cron_finds_the_next_matching_minute_in_utc() {
        let nightly = cron("cron(0 3 * * ? *)");
        let now = at(2026, 12, 5, 10, 4);
        assert_eq!(nightly.next_after(now, 0), Some(at(2026, 12, 6, 3, 0)));
        // Exactly on a run: the next one.
        assert_eq!(
            nightly.next_after(at(2026, 12, 6, 3, 0), 0),
            Some(at(2026, 12, 7, 3, 0))
        );
        // Every 15 minutes on weekdays (2026-12-05 is a Saturday).
        let weekdays = cron("cron(0/15 * ? * MON-FRI *)");
        assert_eq!(weekdays.next_after(now, 0), Some(at(2026, 12, 7, 0, 0)));
        assert_eq!(
            weekdays.next_after(at(2026, 12, 7, 0, 0), 0),
            Some(at(2026, 12, 7, 0, 15))
        );
        // The last day of February in a leap year, then in the next year.
        let month_end = cron("cron(30 23 L FEB ? *)");
        assert_eq!(
            month_end.next_after(at(2027, 3, 1, 0, 0), 0),
            Some(at(2028, 2, 29, 23, 30))
        );
        // Lists and names; a year range that ends.
        let twice = cron("cron(0 9,17 1 jan,jul ? 2027-2028)");
        assert_eq!(twice.next_after(now, 0), Some(at(2027, 1, 1, 9, 0)));
        assert_eq!(
            twice.next_after(at(2027, 1, 1, 9, 0), 0),
            Some(at(2027, 1, 1, 17, 0))
        );
        assert_eq!(twice.next_after(at(2028, 7, 1, 17, 0), 0), None);
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        for (text, says) in [
            ("every 5 minutes", "neither rate"),
            ("rate(0 minutes)", "positive whole number"),
            ("rate(5 weeks)", "minutes, hours or days"),
            ("rate(5)", "a value and a unit"),
            ("cron(0 3 * * *)", "has 5 fields"),
            (
                "cron(0 3 * * * *)",
                "exactly one of day-of-month and day-of-week",
            ),
            (
                "cron(0 3 ? * ? *)",
                "exactly one of day-of-month and day-of-week",
            ),
            ("cron(60 3 * * ? *)", "minutes \"60\""),
            ("cron(0 3 * FOO ? *)", "one of JAN"),
            ("cron(0 3 15W * ? *)", "not supported"),
            ("cron(0 3 ? * 6#3 *)", "not supported"),
            ("cron(0 5-3 * * ? *)", "backwards"),
            ("cron(*/0 3 * * ? *)", "step"),
        ] {
            let error = ScheduleExpression::parse(text).unwrap_err();
            assert_eq!(error.field, FIELD);
            assert!(error.message.contains(says), "{text}: {}", error.message);
        }
    }
}
