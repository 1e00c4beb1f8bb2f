//! Keep rules shared by `forget` and local Btrfs snapshot retention, with restic's meaning:
//! `last` keeps the newest N; `hourly`/`daily`/`weekly`/`monthly`/`yearly` keep the newest
//! item of each of the N most recent periods that have one; `within` keeps everything newer
//! than a point in time; `within-daily` etc. keep the newest of every period newer than it;
//! `tags` keeps what carries a tag. No rule at all keeps everything.
//!
//! Two changes from restic, which its users ask for: periods are those of one declared
//! [`Zone`] (so DST and the snapshot host's zone move no boundary), and the `within` rules
//! count back from a given `now` (restic counts from the newest snapshot, so a host that
//! stopped backing up never ages out). [`decide`] is pure: the clock and the zone are inputs.

use super::zone::{Period, Zone};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Deserializer, Serialize};

/// A set of keep rules; in a policy file the `keep` table of a policy, with these names in
/// kebab case (`within-daily = "30d"`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct KeepRules {
    pub last: u32,
    pub hourly: u32,
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
    pub yearly: u32,
    #[serde(deserialize_with = "de_duration")]
    pub within: Option<Duration>,
    #[serde(deserialize_with = "de_duration")]
    pub within_hourly: Option<Duration>,
    #[serde(deserialize_with = "de_duration")]
    pub within_daily: Option<Duration>,
    #[serde(deserialize_with = "de_duration")]
    pub within_weekly: Option<Duration>,
    #[serde(deserialize_with = "de_duration")]
    pub within_monthly: Option<Duration>,
    #[serde(deserialize_with = "de_duration")]
    pub within_yearly: Option<Duration>,
    /// Keep what carries one of these; `a,b` means both `a` and `b` (restic's `--keep-tag`).
    pub tags: Vec<String>,
}

impl KeepRules {
    pub fn is_empty(&self) -> bool {
        *self == KeepRules::default()
    }

    fn count(&self, p: Period) -> u32 {
        match p {
            Period::Hourly => self.hourly,
            Period::Daily => self.daily,
            Period::Weekly => self.weekly,
            Period::Monthly => self.monthly,
            Period::Yearly => self.yearly,
        }
    }

    fn within_period(&self, p: Period) -> Option<Duration> {
        match p {
            Period::Hourly => self.within_hourly,
            Period::Daily => self.within_daily,
            Period::Weekly => self.within_weekly,
            Period::Monthly => self.within_monthly,
            Period::Yearly => self.within_yearly,
        }
    }
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map(Some).map_err(serde::de::Error::custom)
}

/// The longest `--keep-within`: 100,000 years, far beyond any snapshot, and small enough that
/// subtracting it from a snapshot time cannot overflow.
pub const MAX_DAYS: i64 = 100_000 * 365;

/// Parse `1y2m3w4d5h` (years, months = 30 days, weeks, days, hours) into a duration; one
/// longer than [`MAX_DAYS`] is an error, not an overflow.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let mut total = Duration::zero();
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
            .and_then(Duration::try_hours)
            .and_then(|d| total.checked_add(&d))
            .filter(|t| t.num_days() <= MAX_DAYS)
            .ok_or_else(too_long)?;
    }
    if !num.is_empty() || s.is_empty() {
        return Err(format!("bad duration {s:?}: expected e.g. 2d12h"));
    }
    Ok(total)
}

/// Why a snapshot is kept: the rule, and the bucket (or tag, or rank) it was kept for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reason {
    pub rule: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
}

impl Reason {
    pub fn new(rule: &'static str, bucket: Option<String>) -> Reason {
        Reason { rule, bucket }
    }
}

/// `daily 2026-03-29`, or the rule alone.
impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match &self.bucket {
            Some(b) => write!(f, "{} {b}", self.rule),
            None => f.write_str(self.rule),
        }
    }
}

/// `daily 2026-03-29, weekly 2026-W13`: the reasons for one snapshot, for people.
pub fn describe(reasons: &[Reason]) -> String {
    reasons.iter().map(Reason::to_string).collect::<Vec<_>>().join(", ")
}

/// What the rules look at in one snapshot.
#[derive(Clone, Copy, Debug)]
pub struct Item<'a> {
    pub time: DateTime<Utc>,
    pub tags: &'a [String],
}

/// Where [`decide`] stands: the zone of its buckets, the instant `within` rules count back
/// from, and whether the newest item is kept whatever the rules say.
#[derive(Clone, Copy, Debug)]
pub struct Clock<'a> {
    pub zone: &'a Zone,
    pub now: DateTime<Utc>,
    pub keep_newest: bool,
}

/// For each item (any order), the reasons the rules keep it; none means remove. Empty rules
/// keep everything (`no-rules`); with `keep_newest`, the newest item that no rule keeps is
/// kept as `newest`.
pub fn decide(items: &[Item], rules: &KeepRules, clock: Clock) -> Vec<Vec<Reason>> {
    if rules.is_empty() {
        return vec![vec![Reason::new("no-rules", None)]; items.len()];
    }
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|a, b| items[*b].time.cmp(&items[*a].time));
    let civil: Vec<_> = items.iter().map(|i| clock.zone.civil(i.time)).collect();
    let mut why = vec![Vec::new(); items.len()];
    for (rank, &i) in order.iter().enumerate().take(rules.last as usize) {
        why[i].push(Reason::new("last", Some((rank + 1).to_string())));
    }
    let since = |d: Duration| clock.now.checked_sub_signed(d);
    let newer = |i: usize, limit: Option<DateTime<Utc>>| limit.is_none_or(|l| items[i].time >= l);
    for p in Period::ALL {
        let periods = Periods {
            order: &order,
            civil: &civil,
            period: p,
        };
        periods.keep(rules.count(p), false, &|_| true, &mut why);
        if let Some(d) = rules.within_period(p) {
            let limit = since(d);
            periods.keep(u32::MAX, true, &|i| newer(i, limit), &mut why);
        }
    }
    if let Some(d) = rules.within {
        let limit = since(d);
        for &i in order.iter().take_while(|&&i| newer(i, limit)) {
            why[i].push(Reason::new("within", None));
        }
    }
    for (i, item) in items.iter().enumerate() {
        for spec in &rules.tags {
            if spec.split(',').all(|t| item.tags.iter().any(|have| have == t.trim())) {
                why[i].push(Reason::new("tag", Some(spec.clone())));
            }
        }
    }
    if let (true, Some(&newest)) = (clock.keep_newest, order.first()) {
        if why[newest].is_empty() {
            why[newest].push(Reason::new("newest", None));
        }
    }
    why
}

/// Items newest first, with their wall-clock times, seen through one period.
struct Periods<'a> {
    order: &'a [usize],
    civil: &'a [(jiff::civil::DateTime, jiff::tz::Offset)],
    period: Period,
}

impl Periods<'_> {
    /// restic's bucket rule: newest first among the items `eligible` admits (a newest-first
    /// prefix), keep the first item of each new bucket until `count` buckets are kept.
    fn keep(&self, count: u32, within: bool, eligible: &dyn Fn(usize) -> bool, why: &mut [Vec<Reason>]) {
        let mut last = None;
        let mut left = count;
        for &i in self.order.iter().take_while(|&&i| eligible(i)) {
            if left == 0 {
                break;
            }
            let b = self.period.bucket(self.civil[i]);
            if last.as_ref() != Some(&b) {
                why[i].push(Reason::new(self.period.rule(within), Some(b.clone())));
                last = Some(b);
                left -= 1;
            }
        }
    }
}

/// For each item (any order), whether the rules keep it, in UTC and with `within` counted
/// from the newest item, as restic does (local Btrfs snapshots, whose newest the caller
/// protects itself).
pub fn keep(times: &[DateTime<Utc>], rules: &KeepRules) -> Vec<bool> {
    let items: Vec<_> = times.iter().map(|&time| Item { time, tags: &[] }).collect();
    let clock = Clock {
        zone: &Zone::utc(),
        now: times.iter().max().copied().unwrap_or_default(),
        keep_newest: false,
    };
    decide(&items, rules, clock)
        .into_iter()
        .map(|r| !r.is_empty())
        .collect()
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
