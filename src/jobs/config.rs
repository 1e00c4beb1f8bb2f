//! The configuration file (`/etc/pbak/pbak.toml`, `--config`, `PBAK_CONFIG`): the repository
//! and where its secrets come from, the retention policies, the alert thresholds, and named
//! profiles that `pbak run` executes and `pbak systemd` turns into timers. The schema is in
//! `docs/config.md`; this module parses and validates it and does nothing else.
//!
//! Invariants: unknown keys and invalid values are refused with the file, line, key and what
//! is allowed; a secret never appears in an error; a password written in the file itself is
//! refused unless only the owner can read the file; profile names are safe as systemd unit
//! and lock file names.

use crate::btrfs::doctor;
use crate::error::{Error, Result};
use crate::ops::forget::policy::{self, Policy, PolicyFile};
use crate::ops::forget::retention::KeepRules;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Where the file is read from when neither `--config` nor `PBAK_CONFIG` names one.
pub const DEFAULT_PATH: &str = "/etc/pbak/pbak.toml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub repository: RepositoryConfig,
    /// The fleet's retention: the schema of a `forget --policy-file` under `[retention]`.
    #[serde(default)]
    pub retention: Option<Retention>,
    #[serde(default)]
    pub alerts: Alerts,
    /// Where `pbak run` keeps its lock files and the times of its last check and prune
    /// (default `/var/lib/pbak`; systemd's `STATE_DIRECTORY` when set).
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    #[serde(default, rename = "profile")]
    pub profiles: BTreeMap<String, Profile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryConfig {
    /// As `-r/--repo`: a path, `s3:https://HOST/BUCKET[/PREFIX]` or `b2:BUCKET[/PREFIX]`.
    pub url: String,
    pub password_file: Option<PathBuf>,
    /// A command whose output is the password (`op read op://…`), as `PBAK_PASSWORD_COMMAND`.
    pub password_command: Option<String>,
    /// The password itself: only in a file no one but its owner can read.
    pub password: Option<String>,
    /// `KEY=VALUE` credentials (AWS_*, B2_*), as `--env-file`.
    pub env_file: Option<PathBuf>,
    pub connections: Option<u32>,
    /// KiB/s.
    pub limit_upload: Option<u64>,
    pub limit_download: Option<u64>,
    /// Seconds.
    pub timeout: Option<u64>,
}

/// `[retention]`: a zone and `[[retention.policy]]` tables, as in a policy file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    pub timezone: Option<String>,
    #[serde(default, rename = "policy")]
    pub policies: Vec<Policy>,
}

/// What `pbak status` and `pbak cost` alert on, for every profile.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Alerts {
    /// Dollars a month: a warning (exit 1) at or over this estimate.
    pub cost_warn: f64,
    /// Dollars a month: critical (exit 2).
    pub cost_critical: f64,
    /// A host whose newest backup is older than this is critical (e.g. `36h`).
    pub max_age: String,
    /// A repository not checked for this long is a warning.
    pub check_max_age: String,
    /// Prometheus textfile written after each run (node_exporter's textfile collector).
    pub metrics_file: Option<PathBuf>,
}

impl Default for Alerts {
    fn default() -> Self {
        Alerts {
            cost_warn: 8.0,
            cost_critical: 10.0,
            max_age: "36h".into(),
            check_max_age: "8d".into(),
            metrics_file: None,
        }
    }
}

/// One `[profile.NAME]`: what a host backs up, how, and when.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Host name recorded in snapshots (default: this machine's).
    pub host: Option<String>,
    /// Btrfs subvolumes (`snapshot = true`, the default) or plain paths.
    pub sources: Vec<PathBuf>,
    /// Back up through read-only Btrfs snapshots (`snapshot-backup`); `false` backs up the
    /// paths as they are (`backup`).
    #[serde(default = "yes")]
    pub snapshot: bool,
    pub snapshot_dir: Option<PathBuf>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub exclude_file: Vec<PathBuf>,
    #[serde(default)]
    pub exclude_caches: bool,
    #[serde(default)]
    pub one_file_system: bool,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Download and verify the packs each backup wrote, right after it.
    #[serde(default)]
    pub read_back: bool,
    /// Local Btrfs snapshots: their retention after each backup, and an optional schedule
    /// of their own (`pbak btrfs snapshot`).
    #[serde(default)]
    pub local_snapshots: LocalSnapshots,
    /// Forget by the `[retention]` policies after the backups (only this host's snapshots).
    #[serde(default = "yes")]
    pub forget: bool,
    /// Whether this host prunes (it needs the key with the delete right).
    #[serde(default)]
    pub prune: Option<PruneConfig>,
    #[serde(default)]
    pub check: Option<CheckConfig>,
    #[serde(default)]
    pub schedule: Schedule,
    #[serde(default)]
    pub hooks: Hooks,
    #[serde(default)]
    pub retry: RetryConfig,
    pub connections: Option<u32>,
    pub limit_upload: Option<u64>,
    pub limit_download: Option<u64>,
    /// A healthchecks.io-style URL: `URL/start`, `URL` on success, `URL/fail` with the log tail.
    pub healthcheck: Option<String>,
    /// A database or container source that is not nodatacow is an error, not a warning.
    #[serde(default)]
    pub strict: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalSnapshots {
    /// systemd `OnCalendar=` of `pbak btrfs snapshot` (e.g. `hourly`); none by default.
    pub schedule: Option<String>,
    /// Which local snapshots to keep (the one the last backup used is always kept).
    #[serde(default)]
    pub keep: KeepRules,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneConfig {
    /// A prune runs when the last one on this host is at least this old (e.g. `7d`).
    #[serde(default = "week")]
    pub every: String,
    #[serde(default = "day")]
    pub delete_after: String,
    #[serde(default = "five")]
    pub max_unused: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    #[serde(default = "week")]
    pub every: String,
    /// `--read-data-subset`: `N/M`, `P%` or a size; none checks the structure only.
    pub read_data_subset: Option<String>,
}

fn week() -> String {
    "7d".into()
}
fn day() -> String {
    "24h".into()
}
fn five() -> f64 {
    5.0
}

/// The timers of `pbak systemd` (systemd's own syntax, checked by `systemd-analyze`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Schedule {
    /// `OnCalendar=` of the nightly run.
    pub on_calendar: String,
    pub randomized_delay: String,
    /// `CPUQuota=`, e.g. `50%`.
    pub cpu_quota: Option<String>,
    pub nice: i32,
    /// `OnCalendar=` of the weekly `check` timer and the monthly `cost` timer.
    pub check_on_calendar: String,
    pub cost_on_calendar: String,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            on_calendar: "*-*-* 02:00:00".into(),
            randomized_delay: "30min".into(),
            cpu_quota: None,
            nice: 10,
            check_on_calendar: "Sun *-*-* 04:00:00".into(),
            cost_on_calendar: "*-*-01 06:00:00".into(),
        }
    }
}

/// Shell commands (`sh -c`), in order. `pre` failing skips the backups and fails the run.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    #[serde(default)]
    pub pre: Vec<String>,
    #[serde(default)]
    pub success: Vec<String>,
    #[serde(default)]
    pub failure: Vec<String>,
    /// After `success` or `failure`, whatever the result.
    #[serde(default)]
    pub post: Vec<String>,
    /// Each hook is stopped after this long (default `15m`).
    pub timeout: Option<String>,
}

/// Retries of a step that failed with an error that can pass (network, server, timeout).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    pub attempts: u32,
    /// The first wait; each next one doubles (10s, 20s, 40s).
    pub delay: String,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            attempts: 3,
            delay: "10s".into(),
        }
    }
}

/// A problem validation found that does not stop the run (unless the profile is strict).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Warning {
    pub profile: String,
    pub source: PathBuf,
    pub message: String,
}

/// A duration of the file (`90s`, `15m`, `24h`, `7d`, `2w`), in seconds.
pub fn seconds(s: &str) -> std::result::Result<i64, String> {
    crate::ops::prune::parse_grace(s).map(|d| d.num_seconds())
}

/// The file to read: `explicit` (`--config`, `PBAK_CONFIG`), else [`DEFAULT_PATH`] when it
/// exists.
pub fn locate(explicit: Option<&Path>) -> Option<PathBuf> {
    match explicit {
        Some(p) => Some(p.to_path_buf()),
        None => Some(PathBuf::from(DEFAULT_PATH)).filter(|p| p.exists()),
    }
}

/// Read, parse and validate the file.
pub fn load(path: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Usage(format!("cannot read config file {}: {e}", path.display())))?;
    let origin = path.display().to_string();
    let cfg = parse(&text, &origin)?;
    if cfg.repository.password.is_some() {
        let mode = std::fs::metadata(path)
            .map_err(|e| Error::Usage(format!("cannot read config file {origin}: {e}")))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(Error::Usage(format!(
                "config file {origin} holds the repository password but is readable by group or others \
                 (mode {:o}): run `chmod 600 {origin}`, or use password_file or password_command instead",
                mode & 0o777
            )));
        }
    }
    Ok(cfg)
}

/// Parse and validate a file's text; `origin` names it in errors.
pub fn parse(text: &str, origin: &str) -> Result<Config> {
    let cfg: Config = toml::from_str(text).map_err(|e| {
        let span = e.span().map(|s| s.start);
        let at = span.map_or(String::new(), |s| policy::locate(text, s));
        let msg = if span.is_some_and(|s| secret_at(text, s)) {
            "invalid value (not shown: it is a secret)".to_string()
        } else {
            e.message().trim_end().replace('\n', "; ")
        };
        Error::Usage(format!(
            "config file {origin}{at}: {msg} (the schema is in docs/config.md)"
        ))
    })?;
    cfg.validate(text, origin)?;
    Ok(cfg)
}

/// Whether the byte at `offset` is on a line assigning a secret.
fn secret_at(text: &str, offset: usize) -> bool {
    let start = text[..offset.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next().unwrap_or("");
    line.split('=').next().is_some_and(|k| k.trim() == "password")
}

/// The ` line N` where `key` (a dotted path: its last part) is assigned, preferring a line
/// that also holds `value`, else a table header that contains `key`: for values serde
/// accepted but validation refuses.
fn line_of(text: &str, key: &str, value: Option<&str>) -> String {
    let last = key.rsplit('.').next().unwrap_or(key);
    let assigns = |l: &str| {
        let l = l.trim_start();
        l.strip_prefix(last).is_some_and(|r| r.trim_start().starts_with('='))
    };
    let lines: Vec<&str> = text.lines().collect();
    let found = value
        .and_then(|v| lines.iter().position(|l| assigns(l) && l.contains(v)))
        .or_else(|| lines.iter().position(|l| assigns(l)))
        .or_else(|| {
            lines
                .iter()
                .position(|l| l.trim_start().starts_with('[') && l.contains(key))
        });
    found.map_or(String::new(), |n| format!(" line {}", n + 1))
}

impl Config {
    fn validate(&self, text: &str, origin: &str) -> Result<()> {
        let bad = |value: Option<&str>, key: &str, what: String| {
            Error::Usage(format!(
                "config file {origin}{}, key `{key}`: {what} (the schema is in docs/config.md)",
                line_of(text, key, value)
            ))
        };
        let r = &self.repository;
        crate::backends::Location::parse(&r.url).map_err(|e| bad(None, "url", e.to_string()))?;
        let secrets = [
            r.password_file.is_some(),
            r.password_command.is_some(),
            r.password.is_some(),
        ];
        if secrets.iter().filter(|s| **s).count() > 1 {
            return Err(bad(
                None,
                "repository",
                "give only one of password_file, password_command and password".into(),
            ));
        }
        for (key, v) in [("connections", r.connections)] {
            if let Some(c) = v.filter(|c| !(1..=64).contains(c)) {
                return Err(bad(None, key, format!("{c} is out of range: allowed is 1 to 64")));
            }
        }
        let dur = |v: &str, key: &str| seconds(v).map_err(|e| bad(Some(v), key, e));
        dur(&self.alerts.max_age, "max_age")?;
        dur(&self.alerts.check_max_age, "check_max_age")?;
        let a = &self.alerts;
        if !(a.cost_warn >= 0.0 && a.cost_critical >= a.cost_warn) {
            return Err(bad(
                None,
                "cost_critical",
                format!(
                    "{} is below cost_warn {}: critical must be at least the warning",
                    a.cost_critical, a.cost_warn
                ),
            ));
        }
        if let Some(ret) = &self.retention {
            if ret.policies.is_empty() {
                return Err(bad(
                    None,
                    "retention",
                    "no [[retention.policy]] table: add one (docs/retention.md)".into(),
                ));
            }
            // The names and zone are checked as a policy file's are.
            policy::check_names(&ret.policies).map_err(|why| bad(None, "retention.policy", why))?;
            if let Some(z) = &ret.timezone {
                crate::ops::forget::zone::Zone::named(z).map_err(|e| bad(None, "timezone", e.to_string()))?;
            }
        }
        for (name, p) in &self.profiles {
            let valid = !name.is_empty()
                && name.len() <= 64
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !valid {
                return Err(bad(
                    None,
                    &format!("profile.{name}"),
                    format!("profile name {name:?}: allowed are 1 to 64 letters, digits, - and _"),
                ));
            }
            let key = |k: &str| format!("profile.{name}.{k}");
            if p.sources.is_empty() {
                return Err(bad(None, &key("sources"), "no sources: name at least one".into()));
            }
            for s in &p.sources {
                if !s.is_absolute() {
                    return Err(bad(
                        Some(&s.display().to_string()),
                        &key("sources"),
                        format!("{} is not an absolute path", s.display()),
                    ));
                }
            }
            if let Some(c) = p.connections.filter(|c| !(1..=64).contains(c)) {
                return Err(bad(
                    None,
                    &key("connections"),
                    format!("{c} is out of range: allowed is 1 to 64"),
                ));
            }
            if let Some(pr) = &p.prune {
                dur(&pr.every, &key("prune.every"))?;
                dur(&pr.delete_after, &key("prune.delete_after"))?;
                if !(0.0..=100.0).contains(&pr.max_unused) {
                    return Err(bad(
                        None,
                        &key("prune.max_unused"),
                        "allowed is 0 to 100 (percent)".into(),
                    ));
                }
            }
            if let Some(c) = &p.check {
                dur(&c.every, &key("check.every"))?;
                if let Some(s) = &c.read_data_subset {
                    s.parse::<crate::ops::check::Subset>()
                        .map_err(|e| bad(Some(s), &key("check.read_data_subset"), e.to_string()))?;
                }
            }
            dur(&p.retry.delay, &key("retry.delay"))?;
            if p.retry.attempts > 10 {
                return Err(bad(None, &key("retry.attempts"), "allowed is 0 to 10".into()));
            }
            if let Some(t) = &p.hooks.timeout {
                dur(t, &key("hooks.timeout"))?;
            }
            let sc = &p.schedule;
            if !(-20..=19).contains(&sc.nice) {
                return Err(bad(
                    None,
                    &key("schedule.nice"),
                    format!("{} is out of range: allowed is -20 to 19", sc.nice),
                ));
            }
            if let Some(q) = &sc.cpu_quota {
                let ok = q
                    .strip_suffix('%')
                    .and_then(|n| n.parse::<u32>().ok())
                    .is_some_and(|n| n > 0);
                if !ok {
                    return Err(bad(
                        Some(q),
                        &key("schedule.cpu_quota"),
                        format!("{q:?} is not a percentage such as \"50%\" (200% is two cores)"),
                    ));
                }
            }
            if let Some(u) = &p.healthcheck {
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    return Err(bad(
                        Some(u),
                        &key("healthcheck"),
                        "expected an http:// or https:// URL".into(),
                    ));
                }
            }
            if p.forget && self.retention.is_none() {
                return Err(bad(
                    None,
                    &key("forget"),
                    "forget is on but the file has no [retention] policies: add them, or set forget = false".into(),
                ));
            }
        }
        Ok(())
    }

    /// The profile named `name`, or an error listing the ones there are.
    pub fn profile(&self, name: &str) -> Result<&Profile> {
        self.profiles.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.profiles.keys().map(String::as_str).collect();
            Error::Usage(format!(
                "no profile {name:?} in the config file; it has: {}",
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            ))
        })
    }

    /// The `[retention]` table as a policy file, for `forget`.
    pub fn policy_file(&self) -> Option<Result<PolicyFile>> {
        let r = self.retention.as_ref()?;
        let timezone = match r.timezone.as_deref().map(crate::ops::forget::zone::Zone::named) {
            Some(Ok(z)) => Some(z),
            Some(Err(e)) => return Some(Err(Error::Usage(e.to_string()))),
            None => None,
        };
        Some(Ok(PolicyFile {
            timezone,
            policies: r.policies.clone(),
        }))
    }

    /// Warnings about a profile's sources by the doctor's presets (a database or container
    /// subvolume that is copy-on-write); an error instead when the profile is strict.
    /// Sources that do not exist or are not on Btrfs are left to the backup to report.
    pub fn doctor_warnings(&self, name: &str) -> Result<Vec<Warning>> {
        let p = self.profile(name)?;
        let mut out = Vec::new();
        for s in &p.sources {
            if !doctor::preset_for(s).nodatacow || !s.exists() {
                continue;
            }
            let Ok(reports) = doctor::doctor(std::slice::from_ref(s), None) else {
                continue;
            };
            for f in reports.iter().flat_map(|r| &r.findings) {
                if f.check == "nodatacow" && !f.ok {
                    out.push(Warning {
                        profile: name.into(),
                        source: s.clone(),
                        message: f.message.clone(),
                    });
                }
            }
        }
        if p.strict {
            if let Some(w) = out.first() {
                return Err(Error::Usage(format!(
                    "profile {name} (strict): {} is not nodatacow: {}",
                    w.source.display(),
                    w.message
                )));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = "[repository]\nurl = \"/srv/repo\"\npassword_file = \"/etc/pbak/pw\"\n";

    #[test]
    fn minimal_and_defaults() {
        let c = parse(MIN, "t.toml").unwrap();
        assert_eq!(c.repository.url, "/srv/repo");
        assert_eq!(c.alerts.cost_warn, 8.0);
        assert!(c.profiles.is_empty());
        let e = c.profile("home").unwrap_err().to_string();
        assert!(e.contains("no profile \"home\"") && e.contains("none"), "{e}");
    }

    #[test]
    fn errors_name_file_line_key_and_what_is_allowed() {
        let prof = "[retention]\n[[retention.policy]]\nname = \"all\"\nkeep = { daily = 7 }\n[profile.home]\nsources = [\"/home\"]\n";
        let cases = [
            (format!("{MIN}colour = 1\n"), "line 4, key `colour`", "unknown field"),
            (format!("{MIN}{prof}sourcez = []\n"), "line 10, key `sourcez`", "expected one of"),
            (format!("{MIN}{prof}[profile.home.retry]\ndelay = \"ten\"\n"), "line 11", "e.g. 24h"),
            (format!("{MIN}[alerts]\ncost_warn = 9.0\ncost_critical = 5.0\n"), "cost_critical", "at least"),
            (format!("{MIN}connections = 99\n"), "line 4, key `connections`", "1 to 64"),
            (format!("{MIN}[profile.\"a b\"]\nsources = [\"/\"]\nforget = false\n"), "profile", "letters, digits"),
            (format!("{MIN}[profile.x]\nsources = [\"home\"]\nforget = false\n"), "sources", "absolute"),
            (format!("{MIN}[profile.x]\nsources = [\"/\"]\n"), "forget", "no [retention]"),
            (format!("{MIN}[profile.x]\nsources = [\"/\"]\nforget = false\n[profile.x.check]\nread_data_subset = \"7/3\"\n"), "read_data_subset", ""),
            (MIN.replace("/srv/repo", "s3:"), "key `url`", ""),
            (format!("{MIN}[profile.x]\nsources = [\"/\"]\nforget = false\n[profile.x.schedule]\nnice = 25\n"), "line 8, key `profile.x.schedule.nice`", "-20 to 19"),
            (format!("{MIN}[profile.x]\nsources = [\"/\"]\nforget = false\n[profile.x.schedule]\ncpu_quota = \"half\"\n"), "line 8, key `profile.x.schedule.cpu_quota`", "percentage"),
        ];
        for (text, at, what) in cases {
            let e = parse(&text, "t.toml").unwrap_err().to_string();
            assert!(
                e.starts_with("config file t.toml") && e.contains(at) && e.contains(what),
                "{at}: {e}"
            );
            assert_eq!(e.lines().count(), 1, "{e}");
        }
    }

    #[test]
    fn a_secret_never_appears_in_an_error() {
        let text = "[repository]\nurl = \"/r\"\npassword = 123456789\n";
        let e = parse(text, "t.toml").unwrap_err().to_string();
        assert!(
            !e.contains("123456789") && e.contains("secret") && e.contains("line 3"),
            "{e}"
        );
        let two = "[repository]\nurl = \"/r\"\npassword = \"hunter2\"\npassword_file = \"/p\"\n";
        let e = parse(two, "t.toml").unwrap_err().to_string();
        assert!(!e.contains("hunter2") && e.contains("only one"), "{e}");
    }

    #[test]
    fn an_inline_password_needs_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pbak.toml");
        std::fs::write(&f, "[repository]\nurl = \"/r\"\npassword = \"hunter2\"\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load(&f).unwrap_err().to_string();
        assert!(e.contains("chmod 600") && !e.contains("hunter2"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(load(&f).unwrap().repository.password.as_deref(), Some("hunter2"));
    }
}
