//! The one time zone a retention run computes its buckets in, and the buckets themselves.
//!
//! Invariants: a bucket depends only on the instant and the declared zone, never on the zone
//! of the host that made the snapshot or of the host running `forget`; days, ISO weeks, months
//! and years are the zone's civil ones (a day boundary is local midnight in summer and in
//! winter alike); an hour bucket is one real hour (the civil hour with its UTC offset), so the
//! hour repeated when clocks go back is two buckets and the hour skipped in spring is none.

use chrono::{DateTime, Utc};
use jiff::civil;
use jiff::tz::{Offset, TimeZone};
use jiff::Timestamp;
use serde::Serialize;

/// A named time zone from the system's tz database (`/usr/share/zoneinfo`).
#[derive(Clone, Debug)]
pub struct Zone {
    tz: TimeZone,
    name: String,
}

impl Default for Zone {
    fn default() -> Zone {
        Zone::utc()
    }
}

impl Zone {
    pub fn utc() -> Zone {
        Zone {
            tz: TimeZone::UTC,
            name: "UTC".into(),
        }
    }

    /// An IANA zone name such as `Europe/Berlin` or `UTC`.
    pub fn named(name: &str) -> Result<Zone, String> {
        match TimeZone::get(name) {
            Ok(tz) => Ok(Zone { tz, name: name.into() }),
            Err(e) => Err(format!(
                "unknown time zone {name:?} ({e}): give an IANA name such as Europe/Berlin or UTC \
                 (read from /usr/share/zoneinfo: install the tzdata package if it is missing)"
            )),
        }
    }

    /// This machine's zone (`TZ`, else `/etc/localtime`), UTC if neither names one.
    pub fn local() -> Zone {
        let tz = TimeZone::try_system().unwrap_or(TimeZone::UTC);
        let name = tz
            .iana_name()
            .unwrap_or("local zone without a name (pass --timezone)")
            .to_string();
        Zone { tz, name }
    }

    /// The name stored with every decision.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The instant as a wall-clock time with its offset in this zone.
    pub fn civil(&self, t: DateTime<Utc>) -> (civil::DateTime, Offset) {
        let ts = Timestamp::new(t.timestamp(), t.timestamp_subsec_nanos() as i32).unwrap_or(if t.timestamp() < 0 {
            Timestamp::MIN
        } else {
            Timestamp::MAX
        });
        (self.tz.to_datetime(ts), self.tz.to_offset(ts))
    }

    /// `2026-03-29 03:00:00 +02:00`: how the zone saw the instant.
    pub fn format(&self, t: DateTime<Utc>) -> String {
        let (dt, off) = self.civil(t);
        format!("{} {off}", dt.strftime("%Y-%m-%d %H:%M:%S"))
    }
}

/// The calendar periods of restic's bucket rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Period {
    pub const ALL: [Period; 5] = [
        Period::Hourly,
        Period::Daily,
        Period::Weekly,
        Period::Monthly,
        Period::Yearly,
    ];

    /// The rule's name in decisions (`daily`), and that of its `--keep-within-*` form.
    pub fn rule(self, within: bool) -> &'static str {
        match (self, within) {
            (Period::Hourly, false) => "hourly",
            (Period::Daily, false) => "daily",
            (Period::Weekly, false) => "weekly",
            (Period::Monthly, false) => "monthly",
            (Period::Yearly, false) => "yearly",
            (Period::Hourly, true) => "within-hourly",
            (Period::Daily, true) => "within-daily",
            (Period::Weekly, true) => "within-weekly",
            (Period::Monthly, true) => "within-monthly",
            (Period::Yearly, true) => "within-yearly",
        }
    }

    /// The bucket of a wall-clock time: `2026-10-25T02+01`, `2026-10-25`, `2026-W43` (ISO
    /// week-numbering year and week), `2026-10`, `2026`.
    pub fn bucket(self, (dt, off): (civil::DateTime, Offset)) -> String {
        match self {
            Period::Hourly => format!("{}{off}", dt.strftime("%Y-%m-%dT%H")),
            Period::Daily => dt.strftime("%Y-%m-%d").to_string(),
            Period::Weekly => {
                let w = dt.date().iso_week_date();
                format!("{:04}-W{:02}", w.year(), w.week())
            }
            Period::Monthly => dt.strftime("%Y-%m").to_string(),
            Period::Yearly => format!("{:04}", dt.year()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn buckets_in_a_zone() {
        let berlin = Zone::named("Europe/Berlin").unwrap();
        let cases = [
            // Clocks go back in Berlin at 03:00 CEST: 02:30 happens twice, two real hours.
            ("2026-10-25T00:30:00Z", Period::Hourly, "2026-10-25T02+02"),
            ("2026-10-25T01:30:00Z", Period::Hourly, "2026-10-25T02+01"),
            // Local midnight is the day boundary in winter and in summer.
            ("2026-01-10T23:00:00Z", Period::Daily, "2026-01-11"),
            ("2026-07-10T22:00:00Z", Period::Daily, "2026-07-11"),
            ("2026-07-10T21:59:59Z", Period::Daily, "2026-07-10"),
            // 2026-12-31 is in ISO week 53 of 2026; 2027-01-04 starts week 1 of 2027.
            ("2026-12-31T12:00:00Z", Period::Weekly, "2026-W53"),
            ("2027-01-03T12:00:00Z", Period::Weekly, "2026-W53"),
            ("2027-01-04T12:00:00Z", Period::Weekly, "2027-W01"),
            // 2024-12-30 belongs to week 1 of 2025.
            ("2024-12-30T12:00:00Z", Period::Weekly, "2025-W01"),
            ("2026-12-31T23:30:00Z", Period::Monthly, "2027-01"),
            ("2026-12-31T23:30:00Z", Period::Yearly, "2027"),
        ];
        for (t, p, want) in cases {
            assert_eq!(p.bucket(berlin.civil(at(t))), want, "{t} {p:?}");
        }
        assert_eq!(berlin.format(at("2026-03-29T01:00:00Z")), "2026-03-29 03:00:00 +02");
    }

    #[test]
    fn zone_names() {
        assert_eq!(Zone::named("America/New_York").unwrap().name(), "America/New_York");
        let e = Zone::named("Europe/Berln").unwrap_err();
        assert!(e.contains("Europe/Berln") && e.contains("IANA"), "{e}");
        assert_eq!(Zone::default().name(), "UTC");
    }
}
