//! Retention with a fixed clock, table-driven: zones and DST, leap days, ISO weeks and year
//! boundaries, `within` rules counted from now, policies and the newest-of-group guard.

use super::policy::{self, Policy};
use super::retention::{decide, describe, Clock, Item, KeepRules};
use super::zone::Zone;
use super::{plan_forget, GroupBy, Retention};
use crate::format::snapshot::Snapshot;
use crate::format::tree::Time;
use crate::ids::SnapshotId;
use chrono::{DateTime, Utc};

pub(super) fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

/// A snapshot of `host` and `paths` at `sec` (Unix time).
pub(super) fn snap(host: &str, paths: &[&str], tags: &[&str], sec: i64) -> Snapshot {
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
    Snapshot {
        time: Time { sec, nsec: 0 },
        host: host.into(),
        user: "root".into(),
        paths: strings(paths),
        tags: strings(tags),
        tree: Default::default(),
        parent: None,
        btrfs: None,
        summary: Default::default(),
        partial: false,
        program_version: String::new(),
    }
}

fn rules(f: impl FnOnce(&mut KeepRules)) -> KeepRules {
    let mut r = KeepRules::default();
    f(&mut r);
    r
}

fn dur(s: &str) -> Option<chrono::Duration> {
    Some(super::retention::parse_duration(s).unwrap())
}

/// One case: snapshots at `times` (RFC 3339), decided in `zone` at `now`; `want` lists the
/// kept ones with their reasons (`rule bucket` joined by `, `); every other one is removed.
struct Case {
    name: &'static str,
    zone: &'static str,
    now: &'static str,
    rules: KeepRules,
    keep_newest: bool,
    times: &'static [&'static str],
    want: &'static [(&'static str, &'static str)],
}

fn run(c: &Case) {
    let zone = Zone::named(c.zone).unwrap();
    let tags = ["pinned".to_string()];
    let items: Vec<_> = c
        .times
        .iter()
        .map(|t| Item {
            time: at(strip(t)),
            tags: if t.ends_with("+pinned") { &tags } else { &[] },
        })
        .collect();
    let clock = Clock {
        zone: &zone,
        now: at(c.now),
        keep_newest: c.keep_newest,
    };
    let got: Vec<(&str, String)> = c
        .times
        .iter()
        .zip(decide(&items, &c.rules, clock))
        .filter(|(_, why)| !why.is_empty())
        .map(|(t, why)| (*t, describe(&why)))
        .collect();
    let want: Vec<(&str, String)> = c.want.iter().map(|(t, w)| (*t, w.to_string())).collect();
    assert_eq!(got, want, "case {}", c.name);
}

/// A time written `…Z+pinned` is of a snapshot tagged `pinned`.
fn strip(s: &'static str) -> &'static str {
    s.strip_suffix("+pinned").unwrap_or(s)
}

const BERLIN_SPRING: &[&str] = &[
    "2026-03-28T22:50:00Z", // 23:50 CET on the 28th
    "2026-03-28T23:10:00Z", // 00:10 CET on the 29th
    "2026-03-29T01:10:00Z", // 03:10 CEST, after clocks went forward
    "2026-03-29T21:50:00Z", // 23:50 CEST on the 29th
    "2026-03-29T22:10:00Z", // 00:10 CEST on the 30th
];

const NEW_YORK_SPRING: &[&str] = &[
    "2026-03-08T04:30:00Z", // 23:30 EST on the 7th
    "2026-03-08T05:30:00Z", // 00:30 EST on the 8th
    "2026-03-09T03:30:00Z", // 23:30 EDT on the 8th
    "2026-03-09T04:30:00Z", // 00:30 EDT on the 9th
];

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "Berlin, clocks forward: days end at local midnight before and after",
            zone: "Europe/Berlin",
            now: "2026-03-30T12:00:00Z",
            rules: rules(|r| r.daily = 3),
            keep_newest: true,
            times: BERLIN_SPRING,
            want: &[
                ("2026-03-28T22:50:00Z", "daily 2026-03-28"),
                ("2026-03-29T21:50:00Z", "daily 2026-03-29"),
                ("2026-03-29T22:10:00Z", "daily 2026-03-30"),
            ],
        },
        Case {
            name: "the same instants in UTC: other days, fewer buckets",
            zone: "UTC",
            now: "2026-03-30T12:00:00Z",
            rules: rules(|r| r.daily = 3),
            keep_newest: true,
            times: BERLIN_SPRING,
            want: &[
                ("2026-03-28T23:10:00Z", "daily 2026-03-28"),
                ("2026-03-29T22:10:00Z", "daily 2026-03-29"),
            ],
        },
        Case {
            name: "Berlin, clocks back: 02:30 twice is two hours, one day",
            zone: "Europe/Berlin",
            now: "2026-10-25T12:00:00Z",
            rules: rules(|r| {
                r.hourly = 3;
                r.daily = 1
            }),
            keep_newest: true,
            times: &["2026-10-25T00:30:00Z", "2026-10-25T01:30:00Z", "2026-10-25T01:45:00Z"],
            want: &[
                ("2026-10-25T00:30:00Z", "hourly 2026-10-25T02+02"),
                ("2026-10-25T01:45:00Z", "hourly 2026-10-25T02+01, daily 2026-10-25"),
            ],
        },
        Case {
            name: "New York, clocks forward: local days",
            zone: "America/New_York",
            now: "2026-03-10T12:00:00Z",
            rules: rules(|r| r.daily = 3),
            keep_newest: true,
            times: NEW_YORK_SPRING,
            want: &[
                ("2026-03-08T04:30:00Z", "daily 2026-03-07"),
                ("2026-03-09T03:30:00Z", "daily 2026-03-08"),
                ("2026-03-09T04:30:00Z", "daily 2026-03-09"),
            ],
        },
        Case {
            name: "the same instants in UTC",
            zone: "UTC",
            now: "2026-03-10T12:00:00Z",
            rules: rules(|r| r.daily = 3),
            keep_newest: true,
            times: NEW_YORK_SPRING,
            want: &[
                ("2026-03-08T05:30:00Z", "daily 2026-03-08"),
                ("2026-03-09T04:30:00Z", "daily 2026-03-09"),
            ],
        },
        Case {
            name: "New York, clocks back: 01:30 EDT and 01:30 EST",
            zone: "America/New_York",
            now: "2026-11-02T12:00:00Z",
            rules: rules(|r| r.hourly = 5),
            keep_newest: true,
            times: &["2026-11-01T04:30:00Z", "2026-11-01T05:30:00Z", "2026-11-01T06:30:00Z"],
            want: &[
                ("2026-11-01T04:30:00Z", "hourly 2026-11-01T00-04"),
                ("2026-11-01T05:30:00Z", "hourly 2026-11-01T01-04"),
                ("2026-11-01T06:30:00Z", "hourly 2026-11-01T01-05"),
            ],
        },
        Case {
            name: "leap day: its own day, and 365 days back from 2025-03-01 is 2024-03-01",
            zone: "UTC",
            now: "2025-03-01T12:00:00Z",
            rules: rules(|r| {
                r.monthly = 3;
                r.within = dur("1y")
            }),
            keep_newest: true,
            times: &[
                "2024-02-28T12:00:00Z",
                "2024-02-29T12:00:00Z",
                "2024-03-01T12:00:00Z",
                "2025-02-28T12:00:00Z",
                "2025-03-01T12:00:00Z",
            ],
            want: &[
                ("2024-03-01T12:00:00Z", "monthly 2024-03, within"),
                ("2025-02-28T12:00:00Z", "monthly 2025-02, within"),
                ("2025-03-01T12:00:00Z", "monthly 2025-03, within"),
            ],
        },
        Case {
            name: "leap day, daily",
            zone: "UTC",
            now: "2024-03-01T12:00:00Z",
            rules: rules(|r| r.daily = 2),
            keep_newest: true,
            times: &["2024-02-28T12:00:00Z", "2024-02-29T12:00:00Z", "2024-03-01T12:00:00Z"],
            want: &[
                ("2024-02-29T12:00:00Z", "daily 2024-02-29"),
                ("2024-03-01T12:00:00Z", "daily 2024-03-01"),
            ],
        },
        Case {
            name: "year boundary: ISO week 53 of 2026 runs into 2027",
            zone: "UTC",
            now: "2027-01-05T12:00:00Z",
            rules: rules(|r| {
                r.weekly = 3;
                r.yearly = 2
            }),
            keep_newest: true,
            times: &[
                "2026-12-27T12:00:00Z",
                "2026-12-28T12:00:00Z",
                "2026-12-31T12:00:00Z",
                "2027-01-03T12:00:00Z",
                "2027-01-04T12:00:00Z",
            ],
            want: &[
                ("2026-12-27T12:00:00Z", "weekly 2026-W52"),
                ("2026-12-31T12:00:00Z", "yearly 2026"),
                ("2027-01-03T12:00:00Z", "weekly 2026-W53"),
                ("2027-01-04T12:00:00Z", "weekly 2027-W01, yearly 2027"),
            ],
        },
        Case {
            name: "year boundary: 2024-12-30 is in week 1 of 2025",
            zone: "UTC",
            now: "2025-01-06T12:00:00Z",
            rules: rules(|r| r.weekly = 2),
            keep_newest: true,
            times: &["2024-12-29T12:00:00Z", "2024-12-30T12:00:00Z", "2025-01-05T12:00:00Z"],
            want: &[
                ("2024-12-29T12:00:00Z", "weekly 2024-W52"),
                ("2025-01-05T12:00:00Z", "weekly 2025-W01"),
            ],
        },
        Case {
            name: "New Year in Berlin, an hour before it in UTC: two years",
            zone: "Europe/Berlin",
            now: "2027-01-02T12:00:00Z",
            rules: rules(|r| r.yearly = 2),
            keep_newest: true,
            times: &["2026-12-31T22:00:00Z", "2026-12-31T23:30:00Z"],
            want: &[
                ("2026-12-31T22:00:00Z", "yearly 2026"),
                ("2026-12-31T23:30:00Z", "yearly 2027"),
            ],
        },
        Case {
            name: "the same instants in UTC: one year",
            zone: "UTC",
            now: "2027-01-02T12:00:00Z",
            rules: rules(|r| r.yearly = 2),
            keep_newest: true,
            times: &["2026-12-31T22:00:00Z", "2026-12-31T23:30:00Z"],
            want: &[("2026-12-31T23:30:00Z", "yearly 2026")],
        },
        Case {
            name: "within-daily counts back from now",
            zone: "UTC",
            now: "2026-03-29T12:00:00Z",
            rules: rules(|r| r.within_daily = dur("3d")),
            keep_newest: true,
            times: &[
                "2026-03-25T00:00:00Z",
                "2026-03-25T12:00:00Z",
                "2026-03-26T00:00:00Z",
                "2026-03-26T12:00:00Z",
                "2026-03-27T00:00:00Z",
                "2026-03-27T12:00:00Z",
                "2026-03-28T00:00:00Z",
                "2026-03-29T00:00:00Z",
            ],
            want: &[
                ("2026-03-26T12:00:00Z", "within-daily 2026-03-26"),
                ("2026-03-27T12:00:00Z", "within-daily 2026-03-27"),
                ("2026-03-28T00:00:00Z", "within-daily 2026-03-28"),
                ("2026-03-29T00:00:00Z", "within-daily 2026-03-29"),
            ],
        },
        Case {
            name: "a host that stopped a year ago: everything ages out but its newest",
            zone: "UTC",
            now: "2026-03-29T12:00:00Z",
            rules: rules(|r| {
                r.within = dur("48h");
                r.within_daily = dur("30d")
            }),
            keep_newest: true,
            times: &["2025-03-26T02:10:00Z", "2025-03-27T02:20:00Z", "2025-03-28T02:05:00Z"],
            want: &[("2025-03-28T02:05:00Z", "newest")],
        },
        Case {
            name: "the same, with --unsafe-allow-remove-all",
            zone: "UTC",
            now: "2026-03-29T12:00:00Z",
            rules: rules(|r| r.within = dur("48h")),
            keep_newest: false,
            times: &["2025-03-26T02:10:00Z", "2025-03-27T02:20:00Z", "2025-03-28T02:05:00Z"],
            want: &[],
        },
        Case {
            name: "last and keep-tag; the newest is kept by a rule, so not as newest",
            zone: "UTC",
            now: "2026-03-29T12:00:00Z",
            rules: rules(|r| {
                r.last = 1;
                r.tags = vec!["pinned".into()]
            }),
            keep_newest: true,
            times: &[
                "2026-01-01T00:00:00Z+pinned",
                "2026-02-01T00:00:00Z",
                "2026-03-01T00:00:00Z",
            ],
            want: &[
                ("2026-01-01T00:00:00Z+pinned", "tag pinned"),
                ("2026-03-01T00:00:00Z", "last 1"),
            ],
        },
    ]
}

#[test]
fn keep_rules_with_a_fixed_clock() {
    for c in cases() {
        run(&c);
    }
}

/// The fleet's policy file (docs/retention.md includes this very file).
const FLEET: &str = include_str!("../../../tests/data/fleet-policy.toml");

fn fleet() -> Vec<Policy> {
    policy::parse(FLEET, "fleet-policy.toml").unwrap().policies
}

#[test]
fn the_fleet_example_selects_per_host_and_path() {
    let doc = include_str!("../../../docs/retention.md");
    assert!(
        doc.contains(FLEET),
        "docs/retention.md quotes tests/data/fleet-policy.toml exactly"
    );
    let p = fleet();
    let name = |host: &str, path: &str| policy::select(&p, &snap(host, &[path], &[], 0)).map(|p| p.name.clone());
    assert_eq!(name("hetzner", "/var/lib/postgresql").as_deref(), Some("databases"));
    assert_eq!(name("contabo", "/var/lib/redis").as_deref(), Some("databases"));
    assert_eq!(name("ovh", "/var/lib/redis").as_deref(), Some("databases"));
    assert_eq!(name("hetzner", "/home").as_deref(), Some("servers"));
    assert_eq!(name("zephyrus", "/home/ann/dev").as_deref(), Some("laptops"));
    assert_eq!(name("yoga", "/").as_deref(), Some("laptops"));
    assert_eq!(name("unknown-host", "/"), None);
    let keep = |n: &str| p.iter().find(|q| q.name == n).unwrap().keep.clone();
    assert_eq!(
        (keep("laptops").daily, keep("laptops").weekly, keep("laptops").monthly),
        (7, 4, 12)
    );
    assert_eq!(
        (keep("servers").daily, keep("servers").weekly, keep("servers").monthly),
        (30, 12, 12)
    );
    let db = keep("databases");
    assert_eq!((db.daily, db.weekly, db.monthly), (30, 12, 12));
    assert_eq!(db.within, dur("48h"));
}

#[test]
fn plan_by_policy_keeps_unmatched_and_the_newest_of_each_group() {
    let day = 86_400;
    let start = at("2026-01-01T02:00:00Z").timestamp();
    let mut snaps = Vec::new();
    // 90 nightly snapshots of a laptop's /home and a server's database, and 3 of an unknown
    // host; the database stopped 40 days ago.
    for i in 0..90 {
        let t = start + i * day;
        snaps.push(snap("yoga", &["/home"], &[], t));
        if i < 50 {
            snaps.push(snap("hetzner", &["/var/lib/postgresql"], &[], t));
        }
        if i < 3 {
            snaps.push(snap("stranger", &["/"], &[], t));
        }
    }
    let ids: Vec<_> = snaps
        .into_iter()
        .enumerate()
        .map(|(i, s)| (SnapshotId([i as u8; 32]), s))
        .collect();
    let r = Retention {
        policies: fleet(),
        zone: Zone::named("Europe/Berlin").unwrap(),
        now: at("2026-03-31T12:00:00Z"),
        group_by: GroupBy::parse("host,paths").unwrap(),
        allow_remove_all: false,
    };
    let groups = plan_forget(ids, &r);
    let find = |host: &str| groups.iter().find(|g| g.key.contains(host)).unwrap();
    let kept = |host: &str| find(host).snapshots.iter().filter(|v| v.keep).count();
    // Laptop, Jan 1 to Tue Mar 31: 7 daily (Mar 25-31); 4 weekly of which the ISO weeks from
    // Mar 30 and Mar 23 are already kept, Mar 22 and Mar 15 are new; 12 monthly of which
    // March is kept, Feb 28 and Jan 31 are new.
    assert_eq!(find("yoga").policy.as_deref(), Some("laptops"));
    assert_eq!(kept("yoga"), 7 + 2 + 2);
    // Database, Jan 1 to Feb 19, stopped 40 days ago: 30 daily (Jan 21 - Feb 19), weekly adds
    // the ISO weeks 1-3 (Jan 4, 11, 18), monthly adds nothing, nothing is within 48h.
    assert_eq!(find("hetzner").policy.as_deref(), Some("databases"));
    assert_eq!(kept("hetzner"), 30 + 3);
    let stranger = find("stranger");
    assert_eq!(stranger.policy, None);
    assert!(stranger
        .snapshots
        .iter()
        .all(|v| v.keep && v.reasons[0].rule == "no-policy"));
}
