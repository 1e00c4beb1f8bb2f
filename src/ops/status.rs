//! `status`: is every host backed up, was the repository checked, what does it cost — one
//! level (ok, warning, critical; exit 0, 1, 2 as Nagios plugins) from the snapshots, the run
//! records and the cost estimate. It reads listings and (cached) small objects only.
//!
//! - Per host and paths, the newest complete snapshot older than `max_age` is critical; a
//!   partial newest snapshot, or a backup run of that host that failed after it, a warning.
//! - The last `check` (any host): errors, or a check that could not run, are critical; none
//!   recorded, or one older than `check_max_age`, a warning.
//! - The cost estimate against its thresholds.

use super::cost::{self, CostReport, Level, Prices, Thresholds};
use crate::error::Result;
use crate::format::run::RunRecord;
use crate::repo::Repository;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Clone, Debug)]
pub struct StatusOptions {
    pub max_age_secs: i64,
    pub check_max_age_secs: i64,
    pub prices: Prices,
    pub thresholds: Thresholds,
}

impl Default for StatusOptions {
    fn default() -> Self {
        StatusOptions {
            max_age_secs: 36 * 3600,
            check_max_age_secs: 8 * 86_400,
            prices: Prices::default(),
            thresholds: Thresholds::default(),
        }
    }
}

/// The newest backup of one host and set of paths.
#[derive(Clone, Debug, Serialize)]
pub struct BackupStatus {
    pub host: String,
    pub paths: Vec<String>,
    pub level: Level,
    pub reason: String,
    /// The newest complete snapshot, its time (Unix seconds) and age.
    pub snapshot: Option<String>,
    pub time: Option<i64>,
    pub age_secs: Option<i64>,
    pub duration_ms: u64,
    pub bytes_added: u64,
    pub files: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct CheckStatus {
    pub level: Level,
    pub reason: String,
    pub time: Option<i64>,
    pub host: Option<String>,
    pub errors: Option<u64>,
    pub warnings: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct StatusReport {
    pub level: Level,
    pub now: i64,
    pub backups: Vec<BackupStatus>,
    pub check: CheckStatus,
    pub cost: CostReport,
    /// One line per problem, worst first.
    pub problems: Vec<String>,
}

/// Snapshots as (host, paths, time, partial, id, duration, bytes added, files).
pub struct SnapInfo {
    pub id: String,
    pub host: String,
    pub paths: Vec<String>,
    pub time: i64,
    pub partial: bool,
    pub duration_ms: u64,
    pub bytes_added: u64,
    pub files: u64,
}

/// The status from its inputs (pure: tests give them).
pub fn evaluate(
    snaps: &[SnapInfo],
    records: &[RunRecord],
    cost: CostReport,
    now: i64,
    o: &StatusOptions,
) -> StatusReport {
    let age = |t: i64| fmt_age(now - t);
    let mut groups: BTreeMap<(String, Vec<String>), Vec<&SnapInfo>> = BTreeMap::new();
    for s in snaps {
        groups.entry((s.host.clone(), s.paths.clone())).or_default().push(s);
    }
    let mut backups = Vec::new();
    for ((host, paths), mut list) in groups {
        list.sort_by_key(|s| s.time);
        let newest = *list.last().expect("non-empty");
        let complete = list.iter().rev().find(|s| !s.partial).copied();
        let failed_after = records
            .iter()
            .filter(|r| r.host == host && r.failures > 0 && r.time > newest.time && r.command.ends_with("backup"));
        let failed = failed_after.max_by_key(|r| r.time);
        let where_ = format!("{host} {}", paths.join(" "));
        let (level, reason) = match (complete, failed) {
            (None, _) => (Level::Critical, format!("{where_}: no complete snapshot")),
            (Some(c), _) if now - c.time > o.max_age_secs => (
                Level::Critical,
                format!(
                    "{where_}: newest complete snapshot is {} old (more than {})",
                    age(c.time),
                    fmt_age(o.max_age_secs)
                ),
            ),
            (Some(_), Some(r)) => (
                Level::Warning,
                format!(
                    "{where_}: the last backup run failed {} ago: {}",
                    age(r.time),
                    r.error.as_deref().unwrap_or("unknown error")
                ),
            ),
            (Some(_), None) if newest.partial => (
                Level::Warning,
                format!("{where_}: the newest snapshot is partial (files could not be read)"),
            ),
            (Some(c), None) => (Level::Ok, format!("{where_}: newest snapshot {} old", age(c.time))),
        };
        backups.push(BackupStatus {
            host,
            paths,
            level,
            reason,
            snapshot: complete.map(|c| c.id.clone()),
            time: complete.map(|c| c.time),
            age_secs: complete.map(|c| now - c.time),
            duration_ms: complete.map_or(0, |c| c.duration_ms),
            bytes_added: complete.map_or(0, |c| c.bytes_added),
            files: complete.map_or(0, |c| c.files),
        });
    }
    let last_check = records.iter().filter(|r| r.command == "check").max_by_key(|r| r.time);
    let check = match last_check {
        None => CheckStatus {
            level: Level::Warning,
            reason: "no check recorded: run `pbak check` regularly".into(),
            time: None,
            host: None,
            errors: None,
            warnings: None,
        },
        Some(r) => {
            let (level, reason) = match (r.check_errors, r.exit_code) {
                (Some(e), _) if e > 0 => (
                    Level::Critical,
                    format!("the last check ({} ago, {}) found {e} errors", age(r.time), r.host),
                ),
                (None, _) | (_, 2) => (
                    Level::Critical,
                    format!(
                        "the last check ({} ago, {}) could not run: {}",
                        age(r.time),
                        r.host,
                        r.error.as_deref().unwrap_or("see its output")
                    ),
                ),
                _ if now - r.time > o.check_max_age_secs => (
                    Level::Warning,
                    format!(
                        "the last check was {} ago (more than {})",
                        age(r.time),
                        fmt_age(o.check_max_age_secs)
                    ),
                ),
                _ => (
                    Level::Ok,
                    format!("the last check ({} ago, {}) found no errors", age(r.time), r.host),
                ),
            };
            CheckStatus {
                level,
                reason,
                time: Some(r.time),
                host: Some(r.host.clone()),
                errors: r.check_errors,
                warnings: r.check_warnings,
            }
        }
    };
    let cost_line = format!(
        "estimated ${:.2} a month (warning at ${:.2}, critical at ${:.2})",
        cost.monthly_usd, cost.thresholds.warn, cost.thresholds.critical
    );
    let mut all: Vec<(Level, String)> = backups.iter().map(|b| (b.level, b.reason.clone())).collect();
    all.push((check.level, check.reason.clone()));
    all.push((cost.level, cost_line));
    if snaps.is_empty() {
        all.push((Level::Critical, "no snapshots in the repository".into()));
    }
    all.sort_by_key(|p| std::cmp::Reverse(p.0));
    let level = all.first().map_or(Level::Ok, |p| p.0);
    let problems = all.into_iter().filter(|p| p.0 > Level::Ok).map(|p| p.1).collect();
    StatusReport {
        level,
        now,
        backups,
        check,
        cost,
        problems,
    }
}

/// `pbak status` of `repo` now.
pub fn status(repo: &Repository, o: &StatusOptions) -> Result<StatusReport> {
    let snaps: Vec<SnapInfo> = repo
        .snapshots()?
        .into_iter()
        .map(|(id, s)| SnapInfo {
            id: id.to_hex(),
            time: s.time.sec,
            partial: s.partial,
            duration_ms: s.summary.duration_ms,
            bytes_added: s.summary.bytes_added,
            files: s.summary.total_files,
            host: s.host,
            paths: s.paths,
        })
        .collect();
    let records = repo.run_files()?.records();
    let stored = cost::stored_bytes(repo)?;
    let now = chrono::Utc::now().timestamp();
    let c = cost::estimate(stored, &records, now, &o.prices, &o.thresholds);
    Ok(evaluate(&snaps, &records, c, now, o))
}

/// `90s`, `5m`, `3h12m`, `2d4h`.
pub fn fmt_age(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Prometheus text-format metrics (node_exporter's textfile collector) for `r`.
pub fn prometheus(r: &StatusReport) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, help: &str, kind: &str, rows: Vec<(String, f64)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, v) in rows {
            out.push_str(&format!("{name}{labels} {v}\n"));
        }
    };
    let label = |b: &BackupStatus| format!("{{host=\"{}\",paths=\"{}\"}}", esc(&b.host), esc(&b.paths.join(",")));
    let per = |f: &dyn Fn(&BackupStatus) -> Option<f64>| -> Vec<(String, f64)> {
        r.backups.iter().filter_map(|b| f(b).map(|v| (label(b), v))).collect()
    };
    metric(
        "pbak_backup_last_success_timestamp_seconds",
        "Time of the newest complete snapshot.",
        "gauge",
        per(&|b| b.time.map(|t| t as f64)),
    );
    metric(
        "pbak_backup_age_seconds",
        "Age of the newest complete snapshot.",
        "gauge",
        per(&|b| b.age_secs.map(|t| t as f64)),
    );
    metric(
        "pbak_backup_duration_seconds",
        "Duration of the backup that wrote the newest complete snapshot.",
        "gauge",
        per(&|b| b.time.map(|_| b.duration_ms as f64 / 1000.0)),
    );
    metric(
        "pbak_backup_added_bytes",
        "Bytes the newest complete snapshot's backup added to the repository.",
        "gauge",
        per(&|b| b.time.map(|_| b.bytes_added as f64)),
    );
    metric(
        "pbak_backup_files",
        "Files in the newest complete snapshot.",
        "gauge",
        per(&|b| b.time.map(|_| b.files as f64)),
    );
    metric(
        "pbak_backup_status",
        "Backup status per host and paths: 0 ok, 1 warning, 2 critical.",
        "gauge",
        per(&|b| Some(b.level.exit_code() as f64)),
    );
    let one = |v: f64| vec![(String::new(), v)];
    metric(
        "pbak_repository_stored_bytes",
        "Bytes of all objects in the repository.",
        "gauge",
        one(r.cost.stored_bytes as f64),
    );
    metric(
        "pbak_cost_monthly_dollars",
        "Estimated monthly cost of the repository.",
        "gauge",
        one(r.cost.monthly_usd),
    );
    metric(
        "pbak_check_success",
        "1 if the last check found no errors.",
        "gauge",
        one(if r.check.errors == Some(0) { 1.0 } else { 0.0 }),
    );
    if let Some(t) = r.check.time {
        metric(
            "pbak_check_last_timestamp_seconds",
            "Time of the last recorded check.",
            "gauge",
            one(t as f64),
        );
    }
    metric(
        "pbak_status",
        "Overall status: 0 ok, 1 warning, 2 critical.",
        "gauge",
        one(r.level.exit_code() as f64),
    );
    out
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(host: &str, time: i64, partial: bool) -> SnapInfo {
        SnapInfo {
            id: format!("{host}{time}"),
            host: host.into(),
            paths: vec!["/home".into()],
            time,
            partial,
            duration_ms: 1500,
            bytes_added: 10,
            files: 3,
        }
    }

    fn check(time: i64, errors: u64) -> RunRecord {
        RunRecord {
            time,
            host: "ovh".into(),
            command: "check".into(),
            check_errors: Some(errors),
            check_warnings: Some(0),
            count: 1,
            ..Default::default()
        }
    }

    fn eval(snaps: &[SnapInfo], records: &[RunRecord], now: i64) -> StatusReport {
        let o = StatusOptions::default();
        let c = cost::estimate(1000, records, now, &o.prices, &o.thresholds);
        evaluate(snaps, records, c, now, &o)
    }

    #[test]
    fn levels() {
        let now = 1_800_000_000;
        let h = 3600;
        let ok = eval(&[snap("yoga", now - 2 * h, false)], &[check(now - 86_400, 0)], now);
        assert_eq!(ok.level, Level::Ok, "{:?}", ok.problems);
        // Older than 36 hours: critical, and named.
        let old = eval(&[snap("yoga", now - 37 * h, false)], &[check(now - h, 0)], now);
        assert_eq!(old.level, Level::Critical);
        assert!(
            old.problems[0].contains("yoga") && old.problems[0].contains("37h0m"),
            "{:?}",
            old.problems
        );
        // A partial newest: warning (the complete one before it is recent).
        let part = eval(
            &[snap("zeph", now - 3 * h, false), snap("zeph", now - h, true)],
            &[check(now - h, 0)],
            now,
        );
        assert_eq!(part.level, Level::Warning, "{:?}", part.problems);
        // A failed backup run after the newest snapshot: warning with its error.
        let failed = RunRecord {
            time: now - 60,
            host: "yoga".into(),
            command: "backup".into(),
            exit_code: 1,
            failures: 1,
            error: Some("network down".into()),
            ..Default::default()
        };
        let f = eval(&[snap("yoga", now - h, false)], &[check(now - h, 0), failed], now);
        assert_eq!(f.level, Level::Warning);
        assert!(f.problems[0].contains("network down"), "{:?}", f.problems);
        // Check: errors critical, none or old a warning.
        assert_eq!(
            eval(&[snap("y", now, false)], &[check(now, 2)], now).level,
            Level::Critical
        );
        assert_eq!(eval(&[snap("y", now, false)], &[], now).level, Level::Warning);
        assert_eq!(
            eval(&[snap("y", now, false)], &[check(now - 9 * 86_400, 0)], now).level,
            Level::Warning
        );
        // No snapshots at all.
        assert_eq!(eval(&[], &[check(now, 0)], now).level, Level::Critical);
    }
}
