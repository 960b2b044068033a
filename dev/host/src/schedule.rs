//! Timer schedules: 6-field NCRONTAB (seconds first, day-of-week 0-6 from Sunday) with
//! `%SETTING%` resolution, and `hh:mm:ss` TimeSpan intervals.

use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};

/// A resolved timer schedule.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// An NCRONTAB expression (as written after `%SETTING%` resolution).
    Cron {
        /// The expression.
        expression: String,
        /// The parsed schedule (UTC).
        parsed: Box<cron::Schedule>,
    },
    /// A fixed interval (`hh:mm:ss`).
    Interval(Duration),
}

impl Schedule {
    /// Resolves `%SETTING%` through `resolve`, then parses the result.
    ///
    /// # Errors
    /// When the setting is missing, or the value is neither a 6-field NCRONTAB expression nor
    /// a TimeSpan.
    pub fn resolve(raw: &str, resolve: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let raw = raw.trim();
        let text = if raw.len() > 2 && raw.starts_with('%') && raw.ends_with('%') {
            let key = &raw[1..raw.len() - 1];
            resolve(key).with_context(|| format!("app setting {key} is not set"))?
        } else {
            raw.to_string()
        };
        Self::parse(&text)
    }

    /// Parses an NCRONTAB expression or a TimeSpan.
    ///
    /// # Errors
    /// As [`Schedule::resolve`].
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let text = text.trim();
        if text.contains(':') && !text.contains(' ') {
            let interval = crate::config::parse_timespan(text)?;
            if interval.is_zero() {
                bail!("a TimeSpan schedule must be longer than zero");
            }
            return Ok(Self::Interval(interval));
        }
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields.len() != 6 {
            bail!(
                "{text:?} has {} fields; NCRONTAB needs 6 ({{second}} {{minute}} {{hour}} {{day}} {{month}} {{day-of-week}})",
                fields.len()
            );
        }
        let dow = translate_day_of_week(fields[5])?;
        let expression = format!(
            "{} {} {} {} {} {dow}",
            fields[0], fields[1], fields[2], fields[3], fields[4]
        );
        let parsed = cron::Schedule::from_str(&expression)
            .map_err(|e| anyhow::anyhow!("{text:?} is not a valid NCRONTAB expression: {e}"))?;
        Ok(Self::Cron {
            expression: text.to_string(),
            parsed: Box::new(parsed),
        })
    }

    /// The next occurrence strictly after `after` (for intervals: `after` + interval).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Self::Cron { parsed, .. } => parsed.after(&after).next(),
            Self::Interval(d) => chrono::Duration::from_std(*d).ok().map(|d| after + d),
        }
    }

    /// `TimerInfo.Schedule.AdjustForDST`: true for CRON, false for intervals.
    pub fn adjust_for_dst(&self) -> bool {
        matches!(self, Self::Cron { .. })
    }
}

/// NCRONTAB numbers days 0-6 from Sunday (7 also Sunday); the `cron` crate numbers 1-7.
/// Numbers become names (`1-5` → `MON-FRI`); step values after `/` stay numbers.
fn translate_day_of_week(field: &str) -> anyhow::Result<String> {
    const NAMES: [&str; 8] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"];
    let mut out = String::new();
    let mut chars = field.chars().peekable();
    let mut after_slash = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            let mut number = c.to_string();
            while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                number.push(*d);
                chars.next();
            }
            if after_slash {
                out.push_str(&number);
            } else {
                let n: usize = number.parse().context("day-of-week number")?;
                let name = NAMES
                    .get(n)
                    .with_context(|| format!("day-of-week {n} is out of range 0-6"))?;
                out.push_str(name);
            }
            after_slash = false;
        } else {
            after_slash = c == '/';
            out.push(c);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    #[test]
    fn a_six_field_expression_fires_on_its_seconds_field() {
        let s = Schedule::parse("0 */5 * * * *").unwrap();
        assert_eq!(
            s.next_after(at(2024, 11, 5, 9, 12, 30)),
            Some(at(2024, 11, 5, 9, 15, 0))
        );
        assert!(s.adjust_for_dst());
    }

    #[test]
    fn day_of_week_zero_is_sunday_as_in_ncrontab() {
        // 2024-11-05 is a Tuesday; the next Sunday is 2024-11-10.
        let s = Schedule::parse("0 30 9 * * 0").unwrap();
        assert_eq!(
            s.next_after(at(2024, 11, 5, 0, 0, 0)),
            Some(at(2024, 11, 10, 9, 30, 0))
        );
        let weekdays = Schedule::parse("0 0 8 * * 1-5").unwrap();
        // Saturday 2024-11-09 → Monday 2024-11-11.
        assert_eq!(
            weekdays.next_after(at(2024, 11, 9, 0, 0, 0)),
            Some(at(2024, 11, 11, 8, 0, 0))
        );
        assert_eq!(translate_day_of_week("*/2").unwrap(), "*/2");
        assert_eq!(translate_day_of_week("0,6").unwrap(), "SUN,SAT");
        assert!(translate_day_of_week("8").is_err());
    }

    #[test]
    fn five_field_unix_cron_is_refused() {
        let err = Schedule::parse("*/5 * * * *").unwrap_err().to_string();
        assert!(err.contains("6"), "{err}");
    }

    #[test]
    fn garbage_is_refused() {
        assert!(Schedule::parse("every five minutes please").is_err());
        assert!(Schedule::parse("0 99 * * * *").is_err());
    }

    #[test]
    fn settings_are_resolved_and_a_missing_one_is_named() {
        let resolve = |k: &str| (k == "SYNC").then(|| "0 0 * * * *".to_string());
        assert!(matches!(
            Schedule::resolve("%SYNC%", &resolve).unwrap(),
            Schedule::Cron { .. }
        ));
        let err = Schedule::resolve("%OTHER%", &resolve)
            .unwrap_err()
            .to_string();
        assert!(err.contains("OTHER"), "{err}");
    }

    #[test]
    fn timespan_schedules_are_intervals() {
        let s = Schedule::parse("00:00:10").unwrap();
        assert!(!s.adjust_for_dst());
        assert_eq!(
            s.next_after(at(2024, 1, 1, 0, 0, 0)),
            Some(at(2024, 1, 1, 0, 0, 10))
        );
        assert!(Schedule::parse("00:00:00").is_err());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parsing_arbitrary_schedules_never_panics(text in ".{0,60}") {
            let _ = Schedule::parse(&text);
        }

        #[test]
        fn every_cron_occurrence_is_in_the_future(minute in 0u32..60, second in 0u32..60) {
            let s = Schedule::parse(&format!("{second} {minute} * * * *")).unwrap();
            let now = Utc::now();
            let next = s.next_after(now).unwrap();
            prop_assert!(next > now);
            prop_assert!(next - now <= chrono::Duration::hours(1));
        }
    }
}
