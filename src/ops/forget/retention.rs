//! Keep rules shared by `forget` and local Btrfs snapshot retention, with restic's meaning:
//! `last` keeps the newest N; `hourly`/`daily`/`weekly`/`monthly`/`yearly` keep the newest
//! item of each of the N most recent periods that have one; `within` keeps everything newer
//! than the newest item minus the duration. No rule at all keeps everything.

use chrono::{DateTime, Datelike, Utc};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeepRules {
    pub last: u32,
    pub hourly: u32,
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
    pub yearly: u32,
    pub within: Option<chrono::Duration>,
}

impl KeepRules {
    pub fn is_empty(&self) -> bool {
        *self == KeepRules::default()
    }
}

/// The longest `--keep-within`: 100,000 years, far beyond any snapshot, and small enough that
/// subtracting it from a snapshot time cannot overflow.
pub const MAX_DAYS: i64 = 100_000 * 365;

/// Parse `1y2m3w4d5h` (years, months = 30 days, weeks, days, hours) into a duration; one
/// longer than [`MAX_DAYS`] is an error, not an overflow.
pub fn parse_duration(s: &str) -> Result<chrono::Duration, String> {
    let mut total = chrono::Duration::zero();
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let too_long = || format!("duration {s:?} is too long (at most {MAX_DAYS} days)");
        let n: i64 = match num.parse() {
            Ok(n) => n,
            Err(_) if !num.is_empty() => return Err(too_long()),
            Err(_) => return Err(format!("bad duration {s:?}: expected e.g. 2d12h")),
        };
        num.clear();
        let hours_per_unit = match c {
            'y' => 365 * 24,
            'm' => 30 * 24,
            'w' => 7 * 24,
            'd' => 24,
            'h' => 1,
            _ => return Err(format!("bad duration unit {c:?} in {s:?}: use y, m, w, d, h")),
        };
        total = n
            .checked_mul(hours_per_unit)
            .and_then(chrono::Duration::try_hours)
            .and_then(|d| total.checked_add(&d))
            .filter(|t| t.num_days() <= MAX_DAYS)
            .ok_or_else(too_long)?;
    }
    if !num.is_empty() || s.is_empty() {
        return Err(format!("bad duration {s:?}: expected e.g. 2d12h"));
    }
    Ok(total)
}

/// For each item (any order), whether the rules keep it.
pub fn keep(times: &[DateTime<Utc>], rules: &KeepRules) -> Vec<bool> {
    if rules.is_empty() {
        return vec![true; times.len()];
    }
    let mut order: Vec<usize> = (0..times.len()).collect();
    order.sort_by(|a, b| times[*b].cmp(&times[*a]));
    let mut kept = vec![false; times.len()];
    for &i in order.iter().take(rules.last as usize) {
        kept[i] = true;
    }
    type Bucket = fn(&DateTime<Utc>) -> i64;
    let buckets: [(u32, Bucket); 5] = [
        (rules.hourly, |t| t.timestamp().div_euclid(3600)),
        (rules.daily, |t| t.num_days_from_ce() as i64),
        (rules.weekly, |t| {
            let w = t.iso_week();
            w.year() as i64 * 100 + w.week() as i64
        }),
        (rules.monthly, |t| t.year() as i64 * 100 + t.month() as i64),
        (rules.yearly, |t| t.year() as i64),
    ];
    for (count, bucket) in buckets {
        let mut last: Option<i64> = None;
        let mut left = count;
        for &i in &order {
            if left == 0 {
                break;
            }
            let b = bucket(&times[i]);
            if last != Some(b) {
                kept[i] = true;
                last = Some(b);
                left -= 1;
            }
        }
    }
    if let (Some(d), Some(&newest)) = (rules.within, order.first()) {
        let limit = times[newest].checked_sub_signed(d);
        for &i in &order {
            if limit.is_none_or(|l| times[i] >= l) {
                kept[i] = true;
            }
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M")
            .unwrap()
            .and_utc()
    }

    /// A snapshot every 6 hours for 60 days, from a fixed clock.
    fn series() -> Vec<DateTime<Utc>> {
        let start = t("2026-01-01 00:00");
        (0..240).map(|i| start + chrono::Duration::hours(6 * i)).collect()
    }

    fn kept_times(times: &[DateTime<Utc>], r: &KeepRules) -> Vec<String> {
        let k = keep(times, r);
        let mut v: Vec<_> = times
            .iter()
            .zip(k)
            .filter(|(_, k)| *k)
            .map(|(t, _)| t.format("%m-%d %H").to_string())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn table() {
        let s = series(); // last is 03-01 18:00 (2026-01-01 + 59 days 18 h)
        let cases: Vec<(KeepRules, Vec<&str>)> = vec![
            (
                KeepRules {
                    last: 2,
                    ..Default::default()
                },
                vec!["03-01 12", "03-01 18"],
            ),
            (
                KeepRules {
                    daily: 3,
                    ..Default::default()
                },
                vec!["02-27 18", "02-28 18", "03-01 18"],
            ),
            (
                KeepRules {
                    hourly: 2,
                    ..Default::default()
                },
                vec!["03-01 12", "03-01 18"],
            ),
            (
                KeepRules {
                    monthly: 3,
                    ..Default::default()
                },
                vec!["01-31 18", "02-28 18", "03-01 18"],
            ),
            (
                KeepRules {
                    yearly: 5,
                    ..Default::default()
                },
                vec!["03-01 18"],
            ),
            // ISO weeks: 2026-03-01 is a Sunday, so the newest week holds 02-23..03-01.
            (
                KeepRules {
                    weekly: 2,
                    ..Default::default()
                },
                vec!["02-22 18", "03-01 18"],
            ),
            (
                KeepRules {
                    within: Some(parse_duration("1d").unwrap()),
                    ..Default::default()
                },
                vec!["02-28 18", "03-01 00", "03-01 06", "03-01 12", "03-01 18"],
            ),
            (
                KeepRules {
                    last: 1,
                    daily: 2,
                    ..Default::default()
                },
                vec!["02-28 18", "03-01 18"],
            ),
        ];
        for (rules, want) in cases {
            assert_eq!(kept_times(&s, &rules), want, "{rules:?}");
        }
        assert!(keep(&s, &KeepRules::default()).iter().all(|k| *k));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1w2d").unwrap(), chrono::Duration::days(9));
        assert_eq!(parse_duration("36h").unwrap(), chrono::Duration::hours(36));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("3x").is_err());
        for long in [
            "99999999999999d",
            "99999999999999999999999h",
            "100001y",
            "9223372036854775807h",
        ] {
            assert!(parse_duration(long).unwrap_err().contains("too long"), "{long}");
        }
        assert_eq!(parse_duration("100000y").unwrap().num_days(), MAX_DAYS);
    }
}
