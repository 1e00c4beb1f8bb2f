//! `pbak run PROFILE` end to end: a hetzner-like profile on a Btrfs loop filesystem with a
//! local repository (backups of every subvolume, retention, check, prune, status, the metrics
//! file, hooks and their environment), and the failure paths the docs promise: a failing pre
//! hook, an unreachable repository (retries, then exit 1), a second concurrent run (exit 75
//! at once, naming the first), and healthcheck pings to a local HTTP server.
mod common;

use common::pbak::*;
use common::{btrfs_or_skip, subvol_create};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Setup {
    /// A config file for `body` (profiles and extra tables) over a local repository that
    /// `init` creates; the password comes from a 0600 file.
    fn new(repo: &Path, body: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("password");
        fs::write(&pw, "correct horse\n").unwrap();
        fs::set_permissions(&pw, fs::Permissions::from_mode(0o600)).unwrap();
        let state = dir.path().join("state");
        let text = format!(
            "state_dir = \"{}\"\n[repository]\nurl = \"{}\"\npassword_file = \"{}\"\n{body}",
            state.display(),
            repo.display(),
            pw.display()
        );
        let config = dir.path().join("pbak.toml");
        fs::write(&config, text).unwrap();
        Setup { dir, config }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_pbak"));
        c.arg("--config").arg(&self.config).args(args);
        for v in [
            "PBAK_PASSWORD",
            "PBAK_PASSWORD_FILE",
            "PBAK_PASSWORD_COMMAND",
            "PBAK_REPOSITORY",
        ] {
            c.env_remove(v);
        }
        c.env("PBAK_CACHE_DIR", std::env::temp_dir().join("pbak-tests-cache"));
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Start `run PROFILE` in the background; returns once it holds the profile's lock.
    fn start_holding_lock(&self, profile: &str) -> std::process::Child {
        let first = self
            .cmd(&["run", profile])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let lock = self.path(&format!("state/{profile}.lock"));
        let t = Instant::now();
        // The lock file names its holder (an earlier run's name may still be in it).
        let pid = first.id().to_string();
        while fs::read_to_string(&lock).map_or(true, |l| !l.split_whitespace().any(|w| w == pid)) {
            assert!(t.elapsed() < Duration::from_secs(20), "the first run took the lock");
            std::thread::sleep(Duration::from_millis(20));
        }
        first
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.status.success(), "{args:?}: {}{}", text(&o.stdout), text(&o.stderr));
        text(&o.stdout)
    }
}

/// An env file (0600) with S3 credentials that no server accepts.
fn fake_credentials(p: &Path) -> PathBuf {
    fs::write(p, "AWS_ACCESS_KEY_ID=x\nAWS_SECRET_ACCESS_KEY=y\n").unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(0o600)).unwrap();
    p.to_path_buf()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const RETENTION: &str = "[retention]\ntimezone = \"UTC\"\n[[retention.policy]]\nname = \"vps\"\nkeep = { daily = 30, weekly = 12, monthly = 12 }\n";

#[test]
fn a_hetzner_profile_backs_up_every_subvolume_applies_retention_checks_and_reports() {
    let Some(fs_) = btrfs_or_skip("run_hetzner_profile") else {
        return;
    };
    let mnt = fs_.path();
    let names = ["root", "home", "etc", "postgresql", "redis"];
    let mut sources = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let p = mnt.join(n);
        subvol_create(&p);
        make_tree(&p.join("data"), 40 + i as u64);
        sources.push(format!("\"{}\"", p.display()));
    }
    let repo = mnt.join("repo");
    let body = format!(
        "[alerts]\nmetrics_file = \"METRICS\"\n{RETENTION}\
         [profile.hetzner]\nhost = \"hetzner\"\nsources = [{}]\nread_back = true\n\
         [profile.hetzner.local_snapshots]\nkeep = {{ last = 2 }}\n\
         [profile.hetzner.prune]\nevery = \"7d\"\ndelete_after = \"0s\"\n\
         [profile.hetzner.check]\nevery = \"7d\"\nread_data_subset = \"100%\"\n\
         [profile.hetzner.hooks]\npre = [\"echo pre-ran > PRE\"]\nsuccess = [\"env | grep ^PBAK_ | sort > ENV\"]\n",
        sources.join(", ")
    );
    let s = Setup::new(&repo, &body);
    let (metrics, pre, env) = (s.path("metrics.prom"), s.path("pre"), s.path("env"));
    let cfg = fs::read_to_string(&s.config)
        .unwrap()
        .replace("METRICS", metrics.to_str().unwrap())
        .replace("> PRE", &format!("> {}", pre.display()))
        .replace("> ENV", &format!("> {}", env.display()));
    fs::write(&s.config, cfg).unwrap();
    s.ok(&["init", "--kdf-memory-mib", "1", "--kdf-iterations", "1"]);

    let o = s.run(&["run", "hetzner"]);
    let log = text(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{log}");
    for n in names {
        let line = log
            .lines()
            .find(|l| l.contains(&format!("backup {}: done", mnt.join(n).display())))
            .unwrap_or_else(|| panic!("no backup line for {n}: {log}"));
        assert!(line.contains("snapshot ") && line.contains("bytes added"), "{line}");
        let read_back = line
            .split(", ")
            .find_map(|p| p.trim_end_matches(')').strip_suffix(" packs read back and verified"));
        assert!(read_back.is_some_and(|n| n.parse::<u32>().unwrap() >= 1), "{line}");
    }
    assert!(log.contains("forget+prune host hetzner: done"), "{log}");
    assert!(log.contains("check 100%: done"), "{log}");
    assert!(log.contains("status fleet: done"), "{log}");
    assert!(log.contains("run hetzner: success (exit 0"), "{log}");
    assert_eq!(fs::read_to_string(&pre).unwrap(), "pre-ran\n");
    let env = fs::read_to_string(&env).unwrap();
    assert!(
        env.contains("PBAK_STATUS=success") && env.contains("PBAK_EXIT_CODE=0"),
        "{env}"
    );
    assert!(
        env.contains("PBAK_HOOK=success") && env.contains("PBAK_PROFILE=hetzner"),
        "{env}"
    );
    let ids = env.lines().find_map(|l| l.strip_prefix("PBAK_SNAPSHOT_IDS=")).unwrap();
    assert_eq!(ids.split(' ').count(), 5, "{env}");
    assert!(!env.contains("PBAK_PASSWORD"), "hooks never see the password: {env}");

    let snaps = || -> Vec<serde_json::Value> { serde_json::from_str(&s.ok(&["snapshots", "--json"])).unwrap() };
    let first = snaps();
    assert_eq!(first.len(), 5);
    assert!(
        first
            .iter()
            .all(|j| j["hostname"] == "hetzner" || j["host"] == "hetzner"),
        "{first:?}"
    );
    for (id, j) in ids.split(' ').zip(&first) {
        assert!(first.iter().any(|x| x["id"] == id), "{id} listed: {j}");
    }
    let state: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(s.path("state/hetzner.state.json")).unwrap()).unwrap();
    assert!(state["last_prune"].is_i64() && state["last_check"].is_i64(), "{state}");
    assert_eq!(state["last_run"]["snapshots"].as_array().unwrap().len(), 5);
    let prom = fs::read_to_string(&metrics).unwrap();
    assert!(prom.contains("pbak_"), "{prom}");

    // A second run the same day: new snapshots, and retention (one per day) drops the first
    // five; prune and check are not due again.
    for n in names {
        fs::write(mnt.join(n).join("data/new-file"), n).unwrap();
    }
    let o = s.run(&["run", "hetzner"]);
    let log = text(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{log}");
    assert!(
        log.contains("forget host hetzner: done") && !log.contains("forget+prune"),
        "{log}"
    );
    assert!(!log.contains("check 100%"), "check is not due: {log}");
    let second = snaps();
    assert_eq!(second.len(), 5, "daily retention keeps one per path: {second:?}");
    assert!(second.iter().all(|j| !first.iter().any(|f| f["id"] == j["id"])));
    // Status reads the same figures: five backups of hetzner, all recent.
    let st: serde_json::Value = serde_json::from_str(&text(&s.run(&["status", "--json"]).stdout)).unwrap();
    let backups = st["backups"].as_array().unwrap();
    assert_eq!(backups.len(), 5, "{st}");
    assert!(backups.iter().all(|b| b["host"] == "hetzner"), "{st}");
    // The restored data of the newest snapshot of /home matches the live subvolume.
    let target = mnt.join("restore");
    let home = mnt.join("home");
    let id = second.iter().find(|j| j["paths"][0] == home.to_str().unwrap()).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    s.ok(&["restore", &id, "--target", target.to_str().unwrap()]);
    let restored = target.join(home.strip_prefix("/").unwrap());
    assert_same_tree(&home.join("data"), &restored.join("data"));
}

fn plain_profile(extra: &str) -> String {
    format!("{RETENTION}[profile.p]\nhost = \"h\"\nsnapshot = false\nsources = [\"SRC\"]\n{extra}")
}

fn plain_setup(repo: &Path, extra: &str) -> (Setup, PathBuf) {
    let s = Setup::new(repo, &plain_profile(extra));
    let src = s.path("src");
    make_tree(&src, 3);
    let cfg = fs::read_to_string(&s.config)
        .unwrap()
        .replace("SRC", src.to_str().unwrap());
    fs::write(&s.config, cfg).unwrap();
    (s, src)
}

#[test]
fn a_failing_pre_hook_skips_the_backups_and_runs_the_failure_hooks() {
    let repo = tempfile::tempdir().unwrap();
    let marker = repo.path().join("failure-env");
    let (s, _) = plain_setup(
        &repo.path().join("r"),
        &format!(
            "[profile.p.hooks]\npre = [\"echo checking; exit 7\"]\nfailure = [\"env | grep ^PBAK_ > {}\"]\n",
            marker.display()
        ),
    );
    s.ok(&["init", "--kdf-memory-mib", "1", "--kdf-iterations", "1"]);
    let o = s.run(&["run", "p"]);
    let log = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(
        log.contains("hook pre failed: echo checking; exit 7: exit code 7"),
        "{log}"
    );
    assert!(log.contains("| checking"), "the hook's output is logged: {log}");
    assert!(log.contains("the backups were skipped"), "{log}");
    assert!(log.contains("run p: failure (exit 1"), "{log}");
    assert!(!log.contains("backup "), "{log}");
    let env = fs::read_to_string(&marker).unwrap();
    assert!(
        env.contains("PBAK_STATUS=failure") && env.contains("PBAK_EXIT_CODE=1"),
        "{env}"
    );
    assert!(env.contains("PBAK_ERROR=hook pre failed"), "{env}");
    let snaps: Vec<serde_json::Value> = serde_json::from_str(&s.ok(&["snapshots", "--json"])).unwrap();
    assert!(snaps.is_empty());
    for l in log.lines() {
        assert!(l.starts_with("pbak run p: "), "one prefixed line per event: {l:?}");
    }
}

#[test]
fn an_unreachable_repository_is_retried_with_backoff_then_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = plain_setup(
        Path::new("s3:http://127.0.0.1:1/bucket"),
        "[profile.p.retry]\nattempts = 2\ndelay = \"1s\"\n",
    );
    let env = fake_credentials(&dir.path().join("creds.env"));
    let start = Instant::now();
    let o = s
        .cmd(&["--env-file", env.to_str().unwrap(), "run", "p"])
        .output()
        .unwrap();
    let log = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(
        log.contains("retry 1 of 2 in 1 s") && log.contains("retry 2 of 2 in 2 s"),
        "{log}"
    );
    assert!(log.contains("(attempt 3)") && !log.contains("(attempt 4)"), "{log}");
    assert!(log.contains("backup ") && log.contains(": FAILED (exit 75"), "{log}");
    assert!(log.contains("run p: failure (exit 1"), "{log}");
    assert!(start.elapsed() >= Duration::from_secs(3), "waited 1 s and 2 s");

    // A wrong password is never retried.
    let good = tempfile::tempdir().unwrap();
    let (s, _) = plain_setup(&good.path().join("r"), "");
    s.ok(&["init", "--kdf-memory-mib", "1", "--kdf-iterations", "1"]);
    fs::write(s.path("password"), "wrong\n").unwrap();
    let o = s.run(&["run", "p"]);
    let log = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(log.contains("wrong password") && !log.contains("retry"), "{log}");
}

#[test]
fn a_second_concurrent_run_exits_at_once_naming_the_first() {
    let repo = tempfile::tempdir().unwrap();
    let (s, _) = plain_setup(&repo.path().join("r"), "[profile.p.hooks]\npre = [\"sleep 3\"]\n");
    s.ok(&["init", "--kdf-memory-mib", "1", "--kdf-iterations", "1"]);
    let mut first = s.start_holding_lock("p");
    let t = Instant::now();
    let o = s.run(&["run", "p"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(75), "{err}");
    assert!(t.elapsed() < Duration::from_secs(2), "at once");
    assert!(
        err.contains(&format!("already running (pid {} since ", first.id())),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(first.wait().unwrap().success());
    // Once the first is done, a run proceeds.
    assert_eq!(s.run(&["run", "p"]).status.code(), Some(0));
}

/// `(request line, body)` of each request a server saw.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// A tiny HTTP server recording each request.
fn http_server() -> (String, Seen) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/ping/abc", l.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let got = seen.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let mut r = BufReader::new(c.try_clone().unwrap());
            let mut first = String::new();
            r.read_line(&mut first).unwrap();
            let mut len = 0;
            loop {
                let mut h = String::new();
                r.read_line(&mut h).unwrap();
                if h.trim().is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            got.lock().unwrap().push((first.trim().to_string(), text(&body)));
            let _ = c.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nOK");
        }
    });
    (url, seen)
}

#[test]
fn healthcheck_pings_start_success_and_failure_with_the_log_tail() {
    let (url, seen) = http_server();
    let repo = tempfile::tempdir().unwrap();
    let (s, src) = plain_setup(&repo.path().join("r"), &format!("healthcheck = \"{url}\"\n"));
    s.ok(&["init", "--kdf-memory-mib", "1", "--kdf-iterations", "1"]);
    assert_eq!(s.run(&["run", "p"]).status.code(), Some(0));
    let reqs = seen.lock().unwrap().clone();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[0].0, "POST /ping/abc/start HTTP/1.1");
    assert_eq!(reqs[1].0, "POST /ping/abc HTTP/1.1");
    assert!(reqs[1].1.contains("run p: success"), "{}", reqs[1].1);

    // An unreadable source: the backup fails, the failure ping carries the log tail.
    fs::remove_dir_all(&src).unwrap();
    assert_eq!(s.run(&["run", "p"]).status.code(), Some(1));
    let reqs = seen.lock().unwrap().clone();
    assert_eq!(reqs.len(), 4, "{reqs:?}");
    assert_eq!(reqs[3].0, "POST /ping/abc/fail HTTP/1.1");
    assert!(
        reqs[3].1.contains("FAILED") && reqs[3].1.contains(src.to_str().unwrap()),
        "{}",
        reqs[3].1
    );
}

#[test]
fn dry_run_prints_the_plan_and_runs_nothing() {
    let repo = tempfile::tempdir().unwrap();
    let (s, src) = plain_setup(
        &repo.path().join("r"),
        "[profile.p.hooks]\npre = [\"touch /nonexistent/x\"]\n",
    );
    let o = s.run(&["run", "p", "--dry-run"]);
    let log = text(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{log}");
    assert!(log.contains("would run hook pre: touch /nonexistent/x"), "{log}");
    assert!(log.contains(&format!("backup {}", src.display())), "{log}");
    assert!(log.contains("forget --host h") && log.contains(" status "), "{log}");
    assert!(!s.path("state/p.state.json").exists());
    let o = s.run(&["run", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(e.contains("no profile \"nope\"") && e.contains(": p"), "{e}");
}

/// The issue's "done when": `examples/hetzner.toml` itself, with its paths pointed at a Btrfs
/// loop filesystem (the sources, the databases' retention match, the password, the metrics
/// file), its healthcheck at a local server and its pre hook (psql CHECKPOINT) replaced.
#[test]
fn the_hetzner_example_runs_as_shipped_on_a_loop_filesystem() {
    let Some(fs_) = btrfs_or_skip("run_hetzner_example") else {
        return;
    };
    let mnt = fs_.path().to_path_buf();
    let (url, seen) = http_server();
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("password");
    fs::write(&pw, "correct horse\n").unwrap();
    fs::set_permissions(&pw, fs::Permissions::from_mode(0o600)).unwrap();
    let sources = ["/", "/home", "/etc", "/var/lib/postgresql", "/var/lib/redis"];
    let local = |s: &str| match s {
        "/" => mnt.join("root"),
        s => mnt.join(s.trim_start_matches('/')),
    };
    for (i, s) in sources.iter().enumerate() {
        let p = local(s);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        subvol_create(&p);
        if s.starts_with("/var/lib/") {
            // strict = true: the database subvolumes must be nodatacow.
            sh(&format!("chattr +C '{}'", p.display()));
        }
        make_tree(&p.join("data"), 60 + i as u64);
    }
    let repo = mnt.join("repo");
    let (metrics, marker) = (dir.path().join("pbak.prom"), dir.path().join("checkpoint"));
    let shipped = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hetzner.toml")).unwrap();
    let mut text_ = format!("state_dir = \"{}\"\n{shipped}", dir.path().join("state").display());
    let swaps: Vec<(String, String)> = vec![
        (
            "\"s3:https://s3.eu-central-003.backblazeb2.com/fleet-backups/pbak\"".into(),
            format!("\"{}\"", repo.display()),
        ),
        ("\"/etc/pbak/password\"".into(), format!("\"{}\"", pw.display())),
        ("env_file = \"/etc/pbak/b2.env\"".into(), String::new()),
        (
            "\"/var/lib/prometheus/node-exporter/pbak.prom\"".into(),
            format!("\"{}\"", metrics.display()),
        ),
        (
            "\"https://hc-ping.com/00000000-0000-0000-0000-000000000001\"".into(),
            format!("\"{url}\""),
        ),
        (
            "\"runuser -u postgres -- psql -qc CHECKPOINT\"".into(),
            format!("\"echo checkpoint > {}\"", marker.display()),
        ),
    ];
    for (from, to) in swaps.iter().cloned().chain(
        sources
            .iter()
            .map(|s| (format!("\"{s}\""), format!("\"{}\"", local(s).display()))),
    ) {
        assert!(text_.contains(&from), "examples/hetzner.toml no longer has {from}");
        text_ = text_.replace(&from, &to);
    }
    let config = dir.path().join("pbak.toml");
    fs::write(&config, &text_).unwrap();
    let s = Setup {
        dir,
        config: config.clone(),
    };
    s.ok(&["init", "--kdf-memory-mib", "1", "--kdf-iterations", "1"]);
    s.ok(&["config", "check"]);

    let o = s.run(&["run", "hetzner"]);
    let log = text(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{log}");
    assert_eq!(fs::read_to_string(&marker).unwrap(), "checkpoint\n", "the pre hook ran");
    for src in sources {
        assert!(
            log.contains(&format!("backup {}: done", local(src).display())),
            "{src}: {log}"
        );
    }
    assert!(log.contains("forget+prune host hetzner: done"), "hetzner prunes: {log}");
    assert!(log.contains("check 25G: done"), "{log}");
    assert!(log.contains("run hetzner: success (exit 0"), "{log}");
    let pings: Vec<String> = seen.lock().unwrap().iter().map(|r| r.0.clone()).collect();
    assert_eq!(pings.len(), 2, "{pings:?}");
    assert!(pings[1].starts_with("POST /ping/abc HTTP"), "{pings:?}");

    // The snapshots: five of hetzner, tagged nightly; the databases' policy keeps them.
    let snaps: Vec<serde_json::Value> = serde_json::from_str(&s.ok(&["snapshots", "--json"])).unwrap();
    assert_eq!(snaps.len(), 5);
    assert!(snaps
        .iter()
        .all(|j| j["host"] == "hetzner" && j["tags"][0] == "nightly"));
    // status: every backup ok and recent, the check recorded; the metrics file written.
    let st: serde_json::Value = serde_json::from_str(&text(&s.run(&["status", "--json"]).stdout)).unwrap();
    let backups = st["backups"].as_array().unwrap();
    assert_eq!(backups.len(), 5, "{st}");
    assert!(
        backups
            .iter()
            .all(|b| b["level"] == "ok" && b["files"].as_u64() > Some(0)),
        "{st}"
    );
    assert_eq!(st["check"]["level"], "ok", "{st}");
    assert_eq!(st["check"]["errors"], 0, "{st}");
    let prom = fs::read_to_string(&metrics).unwrap();
    assert!(prom.contains("pbak_"), "{prom}");
    // cost: the stored bytes are the repository's objects, as `du` counts them.
    let cost: serde_json::Value = serde_json::from_str(&s.ok(&["--json", "cost"])).unwrap();
    let du: u64 = sh(&format!(
        "find '{}' -type f -printf '%s\\n' | awk '{{s+=$1}} END {{print s}}'",
        repo.display()
    ))
    .trim()
    .parse()
    .unwrap();
    let stored = cost["stored_bytes"].as_u64().unwrap();
    assert!(
        stored <= du && stored + 64 * 1024 >= du,
        "cost says {stored}, du {du}: {cost}"
    );
    assert!(cost["monthly_usd"].as_f64().unwrap() < 0.01, "{cost}");
    assert_eq!(st["cost"]["level"], "ok", "{st}");
    // Three local snapshots are kept of each subvolume (daily = 3); one exists so far.
    for src in sources {
        let l = s.ok(&["btrfs", "list", local(src).to_str().unwrap()]);
        assert_eq!(l.lines().count(), 1, "{src}: {l}");
    }

    // The failure paths, with the same file: a failing pre hook...
    let edit = |from: &str, to: &str| {
        let t = fs::read_to_string(&config).unwrap();
        assert!(t.contains(from), "{from}");
        fs::write(&config, t.replace(from, to)).unwrap();
    };
    edit(&format!("\"echo checkpoint > {}\"", marker.display()), "\"exit 3\"");
    let o = s.run(&["run", "hetzner"]);
    let log = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(
        log.contains("hook pre failed: exit 3: exit code 3") && log.contains("the backups were skipped"),
        "{log}"
    );
    assert!(
        log.contains("hook failure: logger -t pbak"),
        "the failure hook ran: {log}"
    );
    edit("\"exit 3\"", "\"sleep 3\"");
    // ... a second concurrent run ...
    let mut first = s.start_holding_lock("hetzner");
    let o = s.run(&["run", "hetzner"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(75), "{err}");
    assert!(
        err.contains(&format!("already running (pid {} since ", first.id())),
        "{err}"
    );
    assert!(first.wait().unwrap().success());
    // ... and an unreachable repository: retried (1 s, 2 s), then exit 1.
    edit(&format!("\"{}\"", repo.display()), "\"s3:http://127.0.0.1:1/bucket\"");
    edit("delay = \"30s\"", "delay = \"1s\"");
    let envf = fake_credentials(&s.path("creds.env"));
    let o = s
        .cmd(&["--env-file", envf.to_str().unwrap(), "run", "hetzner"])
        .output()
        .unwrap();
    let log = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(
        log.contains("retry 1 of 3 in 1 s") && log.contains("retry 2 of 3 in 2 s"),
        "{log}"
    );
    assert!(
        log.contains(": FAILED (exit 75") && log.contains("run hetzner: failure (exit 1"),
        "{log}"
    );
    let pings: Vec<String> = seen.lock().unwrap().iter().map(|r| r.0.clone()).collect();
    assert!(pings.last().unwrap().starts_with("POST /ping/abc/fail"), "{pings:?}");
}
