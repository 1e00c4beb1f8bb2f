//! `cost`: the monthly estimate for the repository on B2, from what is stored (one listing
//! with sizes per object directory) and the run records of every host (`repo::runs`): storage
//! beyond the free allowance, class B and C transactions beyond the free ones per day, and
//! download egress beyond the free allowance; plus a projection at the recent net growth.
//!
//! Prices are [`Prices`], never constants in the logic; the defaults are B2's published
//! prices (README, "Size, cost and status", says where they come from and how to override
//! them).

use crate::error::Result;
use crate::format::layout;
use crate::format::run::RunRecord;
use crate::repo::Repository;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Clone, Debug, Serialize)]
pub struct Prices {
    /// Dollars per TB (10^12 bytes) stored for a month.
    pub per_tb_month: f64,
    /// Stored GB (10^9 bytes) that cost nothing.
    pub free_gb: f64,
    pub class_b_per_10k: f64,
    pub class_c_per_1k: f64,
    /// Free transactions per class and day.
    pub free_per_day: u64,
    /// Dollars per GB downloaded beyond the free egress.
    pub egress_per_gb: f64,
    /// Free egress per month, as a multiple of the average stored bytes.
    pub free_egress_ratio: f64,
}

impl Default for Prices {
    fn default() -> Self {
        Prices {
            per_tb_month: 6.0,
            free_gb: 10.0,
            class_b_per_10k: 0.004,
            class_c_per_1k: 0.004,
            free_per_day: 2_500,
            egress_per_gb: 0.01,
            free_egress_ratio: 3.0,
        }
    }
}

/// Dollar thresholds: at or above `warn` the estimate is a warning, at or above `critical`
/// critical.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Thresholds {
    pub warn: f64,
    pub critical: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            warn: 8.0,
            critical: 10.0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warning,
    Critical,
}

impl Level {
    /// Nagios convention: 0 ok, 1 warning, 2 critical.
    pub fn exit_code(self) -> i32 {
        self as i32
    }
    pub fn word(self) -> &'static str {
        match self {
            Level::Ok => "OK",
            Level::Warning => "WARNING",
            Level::Critical => "CRITICAL",
        }
    }
}

/// One UTC day's transactions and traffic, summed over hosts.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Day {
    pub date: String,
    pub class_a: u64,
    pub class_b: u64,
    pub class_c: u64,
    pub bytes_down: u64,
    pub bytes_added: u64,
    pub bytes_freed: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Projection {
    pub months: u32,
    pub stored_bytes: u64,
    pub monthly_usd: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct CostReport {
    pub prices: Prices,
    pub thresholds: Thresholds,
    /// Bytes of every object in the repository (what B2 bills).
    pub stored_bytes: u64,
    /// Days of run records the transaction figures average over (at most 30).
    pub days: u32,
    pub storage_usd: f64,
    /// Average per day over `days`, all hosts.
    pub class_b_per_day: f64,
    pub class_c_per_day: f64,
    pub class_b_usd: f64,
    pub class_c_usd: f64,
    pub download_bytes_per_month: u64,
    pub egress_usd: f64,
    /// The monthly estimate: storage + transactions + egress.
    pub monthly_usd: f64,
    /// Bytes added per month at the recent rate: from the stored sizes runs recorded when
    /// they span a day or more, else from bytes added minus freed.
    pub growth_bytes_per_month: i64,
    /// The stored sizes runs recorded (time, bytes), oldest first, within `days`.
    pub stored_history: Vec<(i64, u64)>,
    pub projections: Vec<Projection>,
    pub level: Level,
    pub history: Vec<Day>,
}

const DAY: i64 = 86_400;
const MONTH_DAYS: f64 = 30.44;

/// Per UTC day, from every host's records, oldest first.
pub fn days(records: &[RunRecord]) -> Vec<Day> {
    let mut by_day: BTreeMap<i64, Day> = BTreeMap::new();
    for r in records {
        let d = by_day.entry(r.time.div_euclid(DAY)).or_default();
        d.class_a += r.ops.class_a;
        d.class_b += r.ops.class_b;
        d.class_c += r.ops.class_c;
        d.bytes_down += r.ops.bytes_down;
        d.bytes_added += r.bytes_added;
        d.bytes_freed += r.bytes_freed;
    }
    by_day
        .into_iter()
        .map(|(day, mut d)| {
            d.date = chrono::DateTime::from_timestamp(day * DAY, 0)
                .map(|t| t.format("%Y-%m-%d").to_string())
                .unwrap_or_default();
            d
        })
        .collect()
}

/// The estimate from `stored_bytes` and the records, at `now` (pure: tests give both).
pub fn estimate(stored_bytes: u64, records: &[RunRecord], now: i64, prices: &Prices, th: &Thresholds) -> CostReport {
    let today = now.div_euclid(DAY);
    let first = records.iter().map(|r| r.time.div_euclid(DAY)).min().unwrap_or(today);
    // The last 30 days, or since the first record: days with no record had no transactions.
    let window = (today - first + 1).clamp(1, 30);
    let recent: Vec<RunRecord> = records
        .iter()
        .filter(|r| r.time.div_euclid(DAY) > today - window)
        .cloned()
        .collect();
    let history = days(&recent);
    let billable = |count: fn(&Day) -> u64| -> f64 {
        history
            .iter()
            .map(|d| count(d).saturating_sub(prices.free_per_day))
            .sum::<u64>() as f64
            / window as f64
    };
    let per_day = |count: fn(&Day) -> u64| history.iter().map(count).sum::<u64>() as f64 / window as f64;
    let class_b_usd = billable(|d| d.class_b) * MONTH_DAYS / 10_000.0 * prices.class_b_per_10k;
    let class_c_usd = billable(|d| d.class_c) * MONTH_DAYS / 1_000.0 * prices.class_c_per_1k;
    let storage = |bytes: u64| ((bytes as f64 / 1e9 - prices.free_gb).max(0.0)) / 1000.0 * prices.per_tb_month;
    let down_per_month = (per_day(|d| d.bytes_down) * MONTH_DAYS) as u64;
    let egress = |stored: u64| {
        let free = stored as f64 * prices.free_egress_ratio;
        ((down_per_month as f64 - free).max(0.0)) / 1e9 * prices.egress_per_gb
    };
    let mut stored_history: Vec<(i64, u64)> = recent.iter().filter_map(|r| Some((r.time, r.stored_bytes?))).collect();
    stored_history.sort();
    let growth = match (stored_history.first(), stored_history.last()) {
        (Some(a), Some(b)) if b.0 - a.0 >= DAY => {
            ((b.1 as f64 - a.1 as f64) / ((b.0 - a.0) as f64 / DAY as f64) * MONTH_DAYS) as i64
        }
        _ => {
            let net: i64 = history
                .iter()
                .map(|d| d.bytes_added as i64 - d.bytes_freed as i64)
                .sum();
            (net as f64 / window as f64 * MONTH_DAYS) as i64
        }
    };
    let transactions = class_b_usd + class_c_usd;
    let monthly = storage(stored_bytes) + transactions + egress(stored_bytes);
    let projections = [12u32, 24]
        .iter()
        .map(|&m| {
            let stored = (stored_bytes as i64 + growth * m as i64).max(0) as u64;
            Projection {
                months: m,
                stored_bytes: stored,
                monthly_usd: storage(stored) + transactions + egress(stored),
            }
        })
        .collect();
    let level = match monthly {
        x if x >= th.critical => Level::Critical,
        x if x >= th.warn => Level::Warning,
        _ => Level::Ok,
    };
    CostReport {
        prices: prices.clone(),
        thresholds: *th,
        stored_bytes,
        days: window as u32,
        storage_usd: storage(stored_bytes),
        class_b_per_day: per_day(|d| d.class_b),
        class_c_per_day: per_day(|d| d.class_c),
        class_b_usd,
        class_c_usd,
        download_bytes_per_month: down_per_month,
        egress_usd: egress(stored_bytes),
        monthly_usd: monthly,
        growth_bytes_per_month: growth,
        stored_history,
        projections,
        level,
        history,
    }
}

/// Bytes of every object in the repository: one listing with sizes per directory.
pub fn stored_bytes(repo: &Repository) -> Result<u64> {
    let mut total = 0;
    for dir in [
        layout::DATA,
        layout::INDEX,
        layout::SNAPSHOTS,
        layout::KEYS,
        layout::RUNS,
    ] {
        total += repo.backend().list_sized(dir)?.iter().map(|(_, s)| s).sum::<u64>();
    }
    Ok(total)
}

/// `pbak cost`: the estimate for `repo` now.
pub fn cost(repo: &Repository, prices: &Prices, th: &Thresholds) -> Result<CostReport> {
    let stored = stored_bytes(repo)?;
    let records = repo.run_files()?.records();
    Ok(estimate(stored, &records, chrono::Utc::now().timestamp(), prices, th))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::run::Ops;

    fn rec(time: i64, b: u64, c: u64, down: u64, added: u64) -> RunRecord {
        RunRecord {
            time,
            host: "h".into(),
            command: "backup".into(),
            ops: Ops {
                class_b: b,
                class_c: c,
                bytes_down: down,
                ..Default::default()
            },
            bytes_added: added,
            count: 1,
            ..Default::default()
        }
    }

    #[test]
    fn hand_computed_estimate() {
        let now = 20_000 * DAY + 3600;
        // Ten days of history: day 1 has 12,500 class B (10,000 billable) and 3,500 class C
        // (1,000 billable); the other days stay within the free 2,500.
        let mut records: Vec<RunRecord> = (0..10).map(|i| rec(now - i * DAY, 100, 10, 0, 1_000_000_000)).collect();
        records.push(rec(now - 9 * DAY + 60, 12_400, 3_490, 0, 0));
        let p = Prices::default();
        let r = estimate(1_010_000_000_000, &records, now, &p, &Thresholds::default());
        assert_eq!(r.days, 10);
        // 1,010 GB stored, 10 free: 1 TB at $6.
        assert!((r.storage_usd - 6.0).abs() < 1e-9, "{}", r.storage_usd);
        // 10,000 billable class B over 10 days = 1,000 a day, 30.44 days: 30,440 = $0.012176.
        assert!((r.class_b_usd - 0.012176).abs() < 1e-9, "{}", r.class_b_usd);
        // 1,000 billable class C over 10 days: 3,044 a month = $0.012176.
        assert!((r.class_c_usd - 0.012176).abs() < 1e-9, "{}", r.class_c_usd);
        assert_eq!(r.egress_usd, 0.0);
        assert!((r.monthly_usd - 6.024352).abs() < 1e-9);
        assert_eq!(r.level, Level::Ok);
        // 1 GB a day net: 30.44 GB a month; in 12 months 365.28 GB more.
        assert_eq!(r.growth_bytes_per_month, 30_440_000_000);
        assert_eq!(r.projections[0].stored_bytes, 1_010_000_000_000 + 12 * 30_440_000_000);
        let th = Thresholds {
            warn: 6.0,
            critical: 6.1,
        };
        assert_eq!(
            estimate(1_010_000_000_000, &records, now, &p, &th).level,
            Level::Warning
        );
        let th = Thresholds {
            warn: 1.0,
            critical: 2.0,
        };
        assert_eq!(
            estimate(1_010_000_000_000, &records, now, &p, &th).level,
            Level::Critical
        );
    }

    #[test]
    fn growth_follows_the_recorded_stored_sizes() {
        let now = 20_000 * DAY;
        let mut a = rec(now - 10 * DAY, 0, 0, 0, 5_000_000_000);
        a.stored_bytes = Some(1_000_000_000_000);
        let mut b = rec(now, 0, 0, 0, 5_000_000_000);
        b.stored_bytes = Some(1_010_000_000_000);
        let r = estimate(
            1_010_000_000_000,
            &[a, b],
            now,
            &Prices::default(),
            &Thresholds::default(),
        );
        // 10 GB in 10 days: 1 GB a day, 30.44 GB a month (not the 10 GB added over 11 days).
        assert_eq!(r.growth_bytes_per_month, 30_440_000_000);
        assert_eq!(r.stored_history.len(), 2);
    }

    #[test]
    fn free_allowances_and_egress() {
        let now = 20_000 * DAY;
        // 5 GB stored: free. 100 GB downloaded in one day of history: 3 x 5 GB free.
        let records = vec![rec(now, 10, 10, 100_000_000_000, 0)];
        let r = estimate(5_000_000_000, &records, now, &Prices::default(), &Thresholds::default());
        assert_eq!(r.days, 1);
        assert_eq!(r.storage_usd, 0.0);
        assert_eq!(r.class_b_usd + r.class_c_usd, 0.0);
        let per_month = 100e9 * 30.44;
        let want = (per_month - 15e9) / 1e9 * 0.01;
        assert!((r.egress_usd - want).abs() < 1e-6, "{} vs {want}", r.egress_usd);
        // No records at all: storage only.
        let r = estimate(20_000_000_000, &[], now, &Prices::default(), &Thresholds::default());
        assert!((r.monthly_usd - 0.06).abs() < 1e-9);
    }
}
