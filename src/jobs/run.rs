//! `pbak run PROFILE`: a profile's unattended night, as a plan of steps each run as a pbak
//! child process (`pbak --config C --profile P --json --quiet STEP…`): pre hooks, a backup per
//! source, forget by the config's retention (with prune when this host prunes and it is due),
//! check when due, success or failure hooks, post hooks, then `status` (which carries the
//! cost estimate) with the profile's thresholds and the metrics file.
//!
//! Children keep each step's memory, progress and run record (docs/FORMAT.md §8.4) their own;
//! the exit code of a child says whether to retry: 75 ([`EXIT_TRANSIENT`]) is an error that
//! may pass (network, server, timeout, a concurrent prune) and is retried with exponential
//! backoff; anything else is final. A failing source does not skip the other sources.
//!
//! Invariants: two runs of one profile never overlap (an `flock` on a lock file that names
//! the holder); hooks never see the repository password or cloud credentials; each event is
//! one log line.

use super::config::{seconds, Config, Profile};
use crate::error::{Error, Result, EXIT_TRANSIENT};
use crate::ops::forget::retention::KeepRules;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a step is, for the log, the state file and the hooks' environment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepKind {
    Backup,
    Forget,
    Prune,
    Check,
    Status,
}

#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub kind: StepKind,
    /// What it works on (a source path), for the log.
    pub label: String,
    /// The arguments after the global ones.
    pub args: Vec<String>,
    /// Whether a 75 exit is retried (status is not: it runs again tomorrow).
    pub retry: bool,
}

/// The times of the last successful prune and check of a profile, kept in the state dir.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub last_prune: Option<i64>,
    pub last_check: Option<i64>,
    pub last_run: Option<LastRun>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LastRun {
    pub time: i64,
    pub exit_code: i32,
    pub status: String,
    pub snapshots: Vec<String>,
    pub bytes_added: u64,
    pub duration_secs: f64,
}

/// Where lock and state files go: the config's `state_dir`, else systemd's `STATE_DIRECTORY`,
/// else `/var/lib/pbak`.
pub fn state_dir(cfg: &Config) -> PathBuf {
    cfg.state_dir
        .clone()
        .or_else(|| std::env::var_os("STATE_DIRECTORY").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/lib/pbak"))
}

fn state_path(dir: &Path, profile: &str) -> PathBuf {
    dir.join(format!("{profile}.state.json"))
}

impl State {
    pub fn load(dir: &Path, profile: &str) -> State {
        std::fs::read(state_path(dir, profile))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn save(&self, dir: &Path, profile: &str) -> Result<()> {
        let path = state_path(dir, profile);
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self).expect("json")).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
    }
}

/// A held lock of one profile; dropping it releases it.
pub struct RunLock {
    _file: std::fs::File,
}

impl RunLock {
    /// Take the profile's lock in `dir`, or fail at once naming the run that holds it.
    pub fn acquire(dir: &Path, profile: &str) -> Result<RunLock> {
        use rustix::fs::{flock, FlockOperation};
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = dir.join(format!("{profile}.lock"));
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        if flock(&f, FlockOperation::NonBlockingLockExclusive).is_err() {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            let holder = holder.trim();
            return Err(Error::Usage(format!(
                "profile {profile} is already running ({}; lock {}): this run does nothing",
                if holder.is_empty() { "holder unknown" } else { holder },
                path.display()
            )));
        }
        let me = format!(
            "pid {} since {}",
            std::process::id(),
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
        );
        f.set_len(0)
            .and_then(|_| f.write_all(me.as_bytes()))
            .map_err(|e| Error::io(&path, e))?;
        Ok(RunLock { _file: f })
    }
}

/// The `--keep-*` flags of local snapshot retention.
fn keep_flags(k: &KeepRules) -> Vec<String> {
    let mut v = Vec::new();
    for (flag, n) in [
        ("--keep-last", k.last),
        ("--keep-hourly", k.hourly),
        ("--keep-daily", k.daily),
        ("--keep-weekly", k.weekly),
        ("--keep-monthly", k.monthly),
        ("--keep-yearly", k.yearly),
    ] {
        if n > 0 {
            v.extend([flag.to_string(), n.to_string()]);
        }
    }
    if let Some(w) = k.within {
        v.extend(["--keep-within".to_string(), format!("{}h", w.num_hours().max(1))]);
    }
    v
}

fn backup_args(p: &Profile, source: &Path) -> Vec<String> {
    let mut a = vec![if p.snapshot { "snapshot-backup" } else { "backup" }.to_string()];
    a.push(source.display().to_string());
    if let Some(h) = &p.host {
        a.extend(["--host".into(), h.clone()]);
    }
    for t in &p.tags {
        a.extend(["--tag".into(), t.clone()]);
    }
    for e in &p.exclude {
        a.extend(["--exclude".into(), e.clone()]);
    }
    for f in &p.exclude_file {
        a.extend(["--exclude-file".into(), f.display().to_string()]);
    }
    if p.exclude_caches {
        a.push("--exclude-caches".into());
    }
    if p.one_file_system {
        a.push("--one-file-system".into());
    }
    if p.read_back {
        a.push("--read-back".into());
    }
    if p.snapshot {
        if let Some(d) = &p.snapshot_dir {
            a.extend(["--snapshot-dir".into(), d.display().to_string()]);
        }
        a.extend(keep_flags(&p.local_snapshots.keep));
    }
    a
}

/// Whether something last done at `last` is due again after `every` (a config duration).
fn due(last: Option<i64>, every: &str, now: i64) -> bool {
    let every = seconds(every).unwrap_or(0);
    last.is_none_or(|t| now - t >= every)
}

/// The steps of a run of profile `name` at `now`, given its state.
pub fn plan(cfg: &Config, name: &str, state: &State, now: i64) -> Result<Vec<Step>> {
    let p = cfg.profile(name)?;
    let host = p.host.clone().unwrap_or_else(|| crate::host::host_user().0);
    let mut steps: Vec<Step> = p
        .sources
        .iter()
        .map(|s| Step {
            kind: StepKind::Backup,
            label: s.display().to_string(),
            args: backup_args(p, s),
            retry: true,
        })
        .collect();
    let prune_due = p.prune.as_ref().filter(|pr| due(state.last_prune, &pr.every, now));
    let prune_flags = |pr: &super::config::PruneConfig| {
        vec![
            "--delete-after".to_string(),
            pr.delete_after.clone(),
            "--max-unused".to_string(),
            pr.max_unused.to_string(),
        ]
    };
    if p.forget {
        let mut args = vec!["forget".to_string(), "--host".into(), host.clone()];
        if let Some(pr) = prune_due {
            args.push("--prune".into());
            args.extend(prune_flags(pr));
        }
        let kind = if prune_due.is_some() {
            StepKind::Prune
        } else {
            StepKind::Forget
        };
        steps.push(Step {
            kind,
            label: format!("host {host}"),
            args,
            retry: true,
        });
    } else if let Some(pr) = prune_due {
        let mut args = vec!["prune".to_string()];
        args.extend(prune_flags(pr));
        steps.push(Step {
            kind: StepKind::Prune,
            label: "repository".into(),
            args,
            retry: true,
        });
    }
    if let Some(c) = p.check.as_ref().filter(|c| due(state.last_check, &c.every, now)) {
        let mut args = vec!["check".to_string()];
        if let Some(s) = &c.read_data_subset {
            args.extend(["--read-data-subset".into(), s.clone()]);
        }
        steps.push(Step {
            kind: StepKind::Check,
            label: c.read_data_subset.clone().unwrap_or_else(|| "structure".into()),
            args,
            retry: true,
        });
    }
    let a = &cfg.alerts;
    let mut args = vec![
        "status".to_string(),
        "--max-age".into(),
        a.max_age.clone(),
        "--check-max-age".into(),
        a.check_max_age.clone(),
        "--warn".into(),
        a.cost_warn.to_string(),
        "--critical".into(),
        a.cost_critical.to_string(),
    ];
    if let Some(m) = &a.metrics_file {
        args.extend(["--prometheus".into(), m.display().to_string()]);
    }
    steps.push(Step {
        kind: StepKind::Status,
        label: "fleet".into(),
        args,
        retry: false,
    });
    Ok(steps)
}

/// How a run reports its events (one line each).
pub type Log<'a> = dyn FnMut(&str) + 'a;

/// What one step did.
#[derive(Debug, Clone, Serialize)]
pub struct StepOutcome {
    pub kind: StepKind,
    pub label: String,
    pub exit_code: i32,
    pub attempts: u32,
    pub duration_secs: f64,
    pub snapshots: Vec<String>,
    pub bytes_added: u64,
    /// Packs a backup's `--read-back` downloaded and verified.
    pub packs_read_back: Option<u64>,
    /// The last error line of the step's output, when it failed.
    pub error: Option<String>,
}

impl StepOutcome {
    /// Whether the step did its work (check's 1 is warnings; a backup's 3 skipped files;
    /// status's 1 and 2 are alerts, reported but not failures of the run).
    pub fn ok(&self) -> bool {
        match self.kind {
            StepKind::Status => matches!(self.exit_code, 0..=2),
            StepKind::Check => matches!(self.exit_code, 0 | 1),
            _ => matches!(self.exit_code, 0 | 3),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct RunReport {
    pub profile: String,
    /// `success`, `partial` (some files could not be read) or `failure`.
    pub status: String,
    pub exit_code: i32,
    pub steps: Vec<StepOutcome>,
    pub hook_failures: Vec<String>,
    /// The status step's level: ok, warning, critical (unknown if it did not run).
    pub alert_level: String,
    pub duration_secs: f64,
}

/// How to start the children.
pub struct Runner<'a> {
    pub exe: PathBuf,
    pub config_path: PathBuf,
    pub profile: String,
    pub config: &'a Config,
    /// Leave the check step out (a check timer of its own runs it).
    pub no_check: bool,
}

/// Environment variables that never reach a hook.
fn secret_var(k: &str) -> bool {
    k.starts_with("PBAK_PASSWORD") || k.starts_with("AWS_") || k.starts_with("B2_")
}

/// The log lines kept for a failure ping.
const TAIL_LINES: usize = 100;

impl Runner<'_> {
    fn profile(&self) -> &Profile {
        self.config.profiles.get(&self.profile).expect("validated profile")
    }

    /// Run `args` as a child; its standard error goes to the log line by line, its standard
    /// output (JSON) is returned.
    fn child(&self, args: &[String], log: &mut Log) -> (i32, Vec<String>, Option<String>) {
        let mut c = Command::new(&self.exe);
        c.arg("--config")
            .arg(&self.config_path)
            .arg("--profile")
            .arg(&self.profile)
            .arg("--json")
            .arg("--quiet")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = match c.spawn() {
            Ok(ch) => ch,
            Err(e) => {
                let line = format!("cannot start {}: {e}", self.exe.display());
                log(&line);
                return (1, Vec::new(), Some(line));
            }
        };
        let out = child.stdout.take().expect("piped");
        let reader = std::thread::spawn(move || BufReader::new(out).lines().map_while(|l| l.ok()).collect::<Vec<_>>());
        let mut last_err = None;
        for line in BufReader::new(child.stderr.take().expect("piped"))
            .lines()
            .map_while(|l| l.ok())
        {
            if !line.trim().is_empty() {
                log(&line);
                last_err = Some(line);
            }
        }
        let stdout = reader.join().unwrap_or_default();
        let code = child.wait().ok().and_then(|s| s.code()).unwrap_or(1);
        (code, stdout, last_err)
    }

    fn step(&self, s: &Step, log: &mut Log) -> StepOutcome {
        let start = Instant::now();
        let r = &self.profile().retry;
        let delay = Duration::from_secs(seconds(&r.delay).unwrap_or(10).max(0) as u64);
        let mut attempts = 0;
        loop {
            attempts += 1;
            log(&format!(
                "{} {}: starting (attempt {attempts})",
                kind_word(&s.kind),
                s.label
            ));
            let (code, stdout, err) = self.child(&s.args, log);
            if code == EXIT_TRANSIENT && s.retry && attempts <= r.attempts {
                let wait = delay * 2u32.pow(attempts - 1);
                log(&format!(
                    "{} {}: failed with an error that may pass; retry {attempts} of {} in {} s",
                    kind_word(&s.kind),
                    s.label,
                    r.attempts,
                    wait.as_secs()
                ));
                std::thread::sleep(wait);
                continue;
            }
            let mut o = StepOutcome {
                kind: s.kind.clone(),
                label: s.label.clone(),
                exit_code: code,
                attempts,
                duration_secs: start.elapsed().as_secs_f64(),
                snapshots: Vec::new(),
                bytes_added: 0,
                packs_read_back: None,
                error: None,
            };
            for v in stdout
                .iter()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            {
                if let Some(id) = v.get("snapshot_id").and_then(|i| i.as_str()) {
                    o.snapshots.push(id.to_string());
                }
                o.bytes_added += v.get("bytes_added").and_then(|b| b.as_u64()).unwrap_or(0);
                if let Some(n) = v.get("read_back").and_then(|r| r.get("packs")).and_then(|n| n.as_u64()) {
                    *o.packs_read_back.get_or_insert(0) += n;
                }
            }
            if !o.ok() {
                o.error = err.or_else(|| Some(format!("exit code {code}")));
            }
            log(&format!(
                "{} {}: {} (exit {code}, {:.1} s{}{}{})",
                kind_word(&s.kind),
                s.label,
                if o.ok() { "done" } else { "FAILED" },
                o.duration_secs,
                match o.snapshots.as_slice() {
                    [] => String::new(),
                    ids => format!(
                        ", snapshot {}",
                        ids.iter().map(|i| &i[..8.min(i.len())]).collect::<Vec<_>>().join(" ")
                    ),
                },
                if s.kind == StepKind::Backup {
                    format!(", {} bytes added", o.bytes_added)
                } else {
                    String::new()
                },
                o.packs_read_back
                    .map_or(String::new(), |n| format!(", {n} packs read back and verified")),
            ));
            return o;
        }
    }

    /// Run each hook of a list; the failures, one line each.
    fn hooks(&self, which: &str, cmds: &[String], env: &[(String, String)], log: &mut Log) -> Vec<String> {
        let timeout = self
            .profile()
            .hooks
            .timeout
            .as_deref()
            .and_then(|t| seconds(t).ok())
            .unwrap_or(900);
        let mut failed = Vec::new();
        for cmd in cmds {
            log(&format!("hook {which}: {cmd}"));
            let mut c = Command::new("sh");
            c.arg("-c").arg(cmd).stdin(Stdio::null());
            for (k, _) in std::env::vars_os() {
                if k.to_str().is_some_and(secret_var) {
                    c.env_remove(&k);
                }
            }
            c.envs(env.iter().map(|(k, v)| (k, v)));
            c.env("PBAK_HOOK", which);
            match run_with_timeout(c, Duration::from_secs(timeout as u64), log) {
                Ok(()) => {}
                Err(why) => {
                    let line = format!("hook {which} failed: {cmd}: {why}");
                    log(&line);
                    failed.push(line);
                }
            }
        }
        failed
    }

    /// The whole run. `dry` only logs the plan.
    pub fn run(&self, state_dir: &Path, dry: bool, log: &mut Log) -> Result<RunReport> {
        let started = Instant::now();
        let now = chrono::Utc::now().timestamp();
        let mut state = State::load(state_dir, &self.profile);
        let mut steps = plan(self.config, &self.profile, &state, now)?;
        steps.retain(|s| !(self.no_check && s.kind == StepKind::Check));
        let p = self.profile();
        if dry {
            for c in &p.hooks.pre {
                log(&format!("would run hook pre: {c}"));
            }
            for s in &steps {
                log(&format!(
                    "would run: {} --config {} --profile {} {}",
                    self.exe.display(),
                    self.config_path.display(),
                    self.profile,
                    s.args.join(" ")
                ));
            }
            for c in p.hooks.success.iter().chain(&p.hooks.failure).chain(&p.hooks.post) {
                log(&format!("would run hook (success, failure or post): {c}"));
            }
            return Ok(RunReport {
                profile: self.profile.clone(),
                status: "dry-run".into(),
                exit_code: 0,
                steps: Vec::new(),
                hook_failures: Vec::new(),
                alert_level: "unknown".into(),
                duration_secs: 0.0,
            });
        }
        let tail = std::cell::RefCell::new(VecDeque::new());
        let mut logged = |line: &str| {
            let mut t = tail.borrow_mut();
            if t.len() == TAIL_LINES {
                t.pop_front();
            }
            t.push_back(line.to_string());
            log(line);
        };
        let ping = |suffix: &str, body: String| {
            if let Some(url) = &p.healthcheck {
                if let Err(e) = ping(url, suffix, body) {
                    log_line_to_stderr(&format!("healthcheck ping {url}{suffix} failed: {e}"));
                }
            }
        };
        ping("/start", String::new());
        let base_env = vec![("PBAK_PROFILE".to_string(), self.profile.clone())];
        let mut hook_failures = self.hooks("pre", &p.hooks.pre, &base_env, &mut logged);
        let mut outcomes: Vec<StepOutcome> = Vec::new();
        if hook_failures.is_empty() {
            for s in &steps {
                let o = self.step(s, &mut logged);
                if o.ok() {
                    match s.kind {
                        StepKind::Prune => state.last_prune = Some(now),
                        StepKind::Check => state.last_check = Some(now),
                        _ => {}
                    }
                }
                outcomes.push(o);
            }
        } else {
            logged("pre hook failed: the backups were skipped");
        }
        let failed = !hook_failures.is_empty() || outcomes.iter().any(|o| !o.ok());
        let partial = outcomes.iter().any(|o| o.kind == StepKind::Backup && o.exit_code == 3);
        let (status, code) = match (failed, partial) {
            (true, _) => ("failure", 1),
            (false, true) => ("partial", 3),
            (false, false) => ("success", 0),
        };
        let alert_level = outcomes
            .iter()
            .find(|o| o.kind == StepKind::Status)
            .map(|o| match o.exit_code {
                0 => "ok",
                1 => "warning",
                2 => "critical",
                _ => "unknown",
            })
            .unwrap_or("unknown");
        let snapshots: Vec<String> = outcomes.iter().flat_map(|o| o.snapshots.clone()).collect();
        let bytes_added: u64 = outcomes.iter().map(|o| o.bytes_added).sum();
        let error = hook_failures
            .first()
            .cloned()
            .or_else(|| outcomes.iter().find_map(|o| o.error.clone()))
            .unwrap_or_default();
        let env = [
            base_env.clone(),
            vec![
                ("PBAK_STATUS".into(), status.into()),
                ("PBAK_EXIT_CODE".into(), code.to_string()),
                ("PBAK_SNAPSHOT_IDS".into(), snapshots.join(" ")),
                ("PBAK_BYTES_ADDED".into(), bytes_added.to_string()),
                (
                    "PBAK_DURATION".into(),
                    format!("{:.0}", started.elapsed().as_secs_f64()),
                ),
                ("PBAK_ALERT_LEVEL".into(), alert_level.into()),
                ("PBAK_ERROR".into(), error),
            ],
        ]
        .concat();
        let after = if failed { &p.hooks.failure } else { &p.hooks.success };
        hook_failures.extend(self.hooks(if failed { "failure" } else { "success" }, after, &env, &mut logged));
        hook_failures.extend(self.hooks("post", &p.hooks.post, &env, &mut logged));
        // A failing success or post hook makes the run a failure too.
        let (status, code) = if !failed && !hook_failures.is_empty() {
            ("failure", 1)
        } else {
            (status, code)
        };
        let duration_secs = started.elapsed().as_secs_f64();
        logged(&format!(
            "run {}: {status} (exit {code}, {:.1} s, {} snapshot(s), {bytes_added} bytes added, alerts {alert_level})",
            self.profile,
            duration_secs,
            snapshots.len()
        ));
        state.last_run = Some(LastRun {
            time: now,
            exit_code: code,
            status: status.into(),
            snapshots,
            bytes_added,
            duration_secs,
        });
        if let Err(e) = state.save(state_dir, &self.profile) {
            logged(&format!("warning: cannot save the run's state: {e}"));
        }
        let body: Vec<String> = tail.borrow().iter().cloned().collect();
        ping(if code == 1 { "/fail" } else { "" }, body.join("\n"));
        Ok(RunReport {
            profile: self.profile.clone(),
            status: status.into(),
            exit_code: code,
            steps: outcomes,
            hook_failures,
            alert_level: alert_level.into(),
            duration_secs,
        })
    }
}

fn kind_word(k: &StepKind) -> &'static str {
    match k {
        StepKind::Backup => "backup",
        StepKind::Forget => "forget",
        StepKind::Prune => "forget+prune",
        StepKind::Check => "check",
        StepKind::Status => "status",
    }
}

fn log_line_to_stderr(line: &str) {
    eprintln!("pbak: warning: {line}");
}

/// Run a hook, its output to the log; killed after `timeout`.
fn run_with_timeout(mut c: Command, timeout: Duration, log: &mut Log) -> std::result::Result<(), String> {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().map_err(|e| format!("cannot start sh: {e}"))?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let pipes: Vec<Box<dyn std::io::Read + Send>> = vec![
        Box::new(child.stdout.take().expect("piped")),
        Box::new(child.stderr.take().expect("piped")),
    ];
    let readers: Vec<_> = pipes
        .into_iter()
        .map(|p| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for l in BufReader::new(p).lines().map_while(|l| l.ok()) {
                    let _ = tx.send(l);
                }
            })
        })
        .collect();
    drop(tx);
    let start = Instant::now();
    let status = loop {
        while let Ok(l) = rx.try_recv() {
            log(&format!("  | {l}"));
        }
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if start.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("stopped after {} s", timeout.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(e.to_string()),
        }
    };
    for r in readers {
        let _ = r.join();
    }
    while let Ok(l) = rx.try_recv() {
        log(&format!("  | {l}"));
    }
    match status.code() {
        Some(0) => Ok(()),
        Some(c) => Err(format!("exit code {c}")),
        None => Err("killed by a signal".into()),
    }
}

/// A healthchecks.io-style ping: `POST URL{suffix}` with `body`, 10 s at most.
fn ping(url: &str, suffix: &str, body: String) -> std::result::Result<(), String> {
    let url = format!("{}{suffix}", url.trim_end_matches('/'));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        let r = client.post(&url).body(body).send().await.map_err(|e| e.to_string())?;
        match r.status().is_success() {
            true => Ok(()),
            false => Err(format!("HTTP {}", r.status())),
        }
    })
}

/// The pbak binary to run steps with: this one.
pub fn current_exe() -> Result<PathBuf> {
    std::env::current_exe().map_err(|e| Error::Usage(format!("cannot find the pbak binary to run steps with: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> Config {
        let text = format!(
            "[repository]\nurl = \"/r\"\npassword_file = \"/pw\"\n[retention]\n[[retention.policy]]\nname = \"all\"\nkeep = {{ daily = 7 }}\n[profile.h]\nhost = \"h\"\nsources = [\"/\", \"/home\"]\n{extra}"
        );
        super::super::config::parse(&text, "t.toml").unwrap()
    }

    #[test]
    fn plan_backs_up_each_source_then_forgets_and_reports() {
        let c = cfg("read_back = true\n[profile.h.local_snapshots]\nkeep = { daily = 3 }\n");
        let steps = plan(&c, "h", &State::default(), 0).unwrap();
        let kinds: Vec<&StepKind> = steps.iter().map(|s| &s.kind).collect();
        assert_eq!(
            kinds,
            [
                &StepKind::Backup,
                &StepKind::Backup,
                &StepKind::Forget,
                &StepKind::Status
            ]
        );
        assert_eq!(steps[1].args[..2], ["snapshot-backup", "/home"]);
        assert!(steps[1].args.contains(&"--read-back".to_string()));
        assert!(steps[1].args.windows(2).any(|w| w == ["--keep-daily", "3"]));
        assert_eq!(steps[2].args, ["forget", "--host", "h"]);
        assert!(!steps[3].retry);
    }

    #[test]
    fn prune_and_check_only_when_due() {
        let c =
            cfg("[profile.h.prune]\nevery = \"7d\"\n[profile.h.check]\nevery = \"1d\"\nread_data_subset = \"5%\"\n");
        let fresh = plan(&c, "h", &State::default(), 100).unwrap();
        assert_eq!(fresh[2].kind, StepKind::Prune);
        assert!(fresh[2]
            .args
            .starts_with(&["forget".into(), "--host".into(), "h".into(), "--prune".into()]));
        assert_eq!(fresh[3].args, ["check", "--read-data-subset", "5%"]);
        let day = 86_400;
        let st = State {
            last_prune: Some(0),
            last_check: Some(0),
            last_run: None,
        };
        let next = plan(&c, "h", &st, 2 * day).unwrap();
        assert_eq!(next[2].kind, StepKind::Forget, "prune not due after 2 days");
        assert_eq!(next[3].kind, StepKind::Check, "check due after 1 day");
        let week = plan(&c, "h", &st, 7 * day).unwrap();
        assert_eq!(week[2].kind, StepKind::Prune);
    }

    #[test]
    fn a_second_lock_names_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path(), "p").unwrap();
        let e = RunLock::acquire(dir.path(), "p").err().unwrap().to_string();
        assert!(
            e.contains(&format!("pid {}", std::process::id())) && e.contains("since"),
            "{e}"
        );
        drop(first);
        RunLock::acquire(dir.path(), "p").unwrap();
    }
}
