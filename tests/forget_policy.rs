//! `forget --policy-file` end to end with a fixed clock (`faketime`): snapshots of several
//! hosts made at chosen times, decided by the first matching policy in a declared zone, every
//! decision printed with `--json` and appended to `--audit-log`; a dry run writes nothing.
mod common;

use common::pbak::*;
use serde_json::Value;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

/// The decision time of every forget below: a Tuesday in winter (Berlin is UTC+1).
const NOW: &str = "2026-03-10 12:00:00";

fn json(s: &str) -> Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// `p.cmd(args)` with the clock starting at `time` (UTC).
fn at(p: &Pbak, time: &str, args: &[&str]) -> Output {
    let inner = p.cmd(args);
    let mut c = Command::new("faketime");
    c.env("TZ", "UTC").arg("-f").arg(format!("@{time}"));
    c.arg(inner.get_program()).args(inner.get_args());
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.output().expect("run faketime")
}

fn ok_at(p: &Pbak, time: &str, args: &[&str]) -> String {
    let o = at(p, time, args);
    assert!(
        o.status.success(),
        "pbak {args:?} at {time}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn policy_file(dir: &Path, db: &Path) -> std::path::PathBuf {
    let text = format!(
        r#"
[[policy]]
name = "databases"
match = {{ hosts = ["server"], paths = ["{db}"] }}
keep = {{ daily = 2, within = "48h" }}

[[policy]]
name = "servers"
match = {{ hosts = ["server"] }}
keep = {{ last = 1 }}

[[policy]]
name = "gone"
match = {{ hosts = ["dead"] }}
keep = {{ within = "30d" }}
"#,
        db = db.display()
    );
    let path = dir.join("policy.toml");
    fs::write(&path, text).unwrap();
    path
}

/// The decisions of a `forget --json` plan, by snapshot time (UTC, RFC 3339).
fn decisions(plan: &Value) -> Vec<Value> {
    let mut all: Vec<Value> = plan
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["decisions"].as_array().unwrap().clone())
        .collect();
    all.sort_by_key(|d| d["snapshot_time"].as_str().unwrap().to_string());
    all
}

fn find<'a>(ds: &'a [Value], time: &str) -> &'a Value {
    ds.iter()
        .find(|d| d["snapshot_time"] == time)
        .unwrap_or_else(|| panic!("no decision for {time}"))
}

fn reasons(d: &Value) -> Vec<String> {
    d["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| match r["bucket"].as_str() {
            Some(b) => format!("{} {b}", r["rule"].as_str().unwrap()),
            None => r["rule"].as_str().unwrap().to_string(),
        })
        .collect()
}

#[test]
fn policies_decide_per_host_and_path_in_one_zone_with_an_audit_log() {
    if sh("command -v faketime || true").trim().is_empty() {
        eprintln!("SKIP: faketime is not installed (Debian package faketime; .ci/run installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (db, home) = (dir.path().join("db"), dir.path().join("home"));
    for (i, d) in [&db, &home].into_iter().enumerate() {
        fs::create_dir(d).unwrap();
        fs::write(d.join("f"), prng(i as u64, 1000)).unwrap();
    }
    let p = Pbak::new(dir.path().join("repo"));
    p.init();
    let backup = |time: &str, host: &str, src: &Path| {
        ok_at(&p, time, &["backup", "-q", "--host", host, src.to_str().unwrap()]);
    };
    // The database at 23:30 UTC, 00:30 the next day in Berlin, for five nights.
    for day in 5..=9 {
        backup(&format!("2026-03-0{day} 23:30:00"), "server", &db);
    }
    for day in 7..=9 {
        backup(&format!("2026-03-0{day} 02:00:00"), "server", &home);
    }
    // A host that stopped backing up a year ago, and one no policy is for.
    for day in 1..=3 {
        backup(&format!("2025-03-0{day} 02:00:00"), "dead", &home);
    }
    backup("2026-03-09 03:00:00", "stranger", &home);
    let policy = policy_file(dir.path(), &db);
    let log = dir.path().join("audit.jsonl");
    let policy_arg = policy.to_str().unwrap();
    let log_arg = log.to_str().unwrap();
    let forget = [
        "--json",
        "forget",
        "--policy-file",
        policy_arg,
        "--timezone",
        "Europe/Berlin",
        "--audit-log",
        log_arg,
    ];

    // A dry run: the decisions, and nothing changed.
    let mut dry = forget.to_vec();
    dry.push("--dry-run");
    let o = at(&p, NOW, &dry);
    let warning = String::from_utf8_lossy(&o.stderr);
    assert!(
        warning.contains("1 snapshots match no policy and are kept (host stranger;"),
        "{warning}"
    );
    let plan = json(&String::from_utf8_lossy(&o.stdout));
    assert!(!log.exists(), "a dry run writes no audit log");
    assert_eq!(json(&p.ok(&["snapshots", "--json"])).as_array().unwrap().len(), 12);
    let ds = decisions(&plan);
    assert_eq!(ds.len(), 12, "{plan}");
    for d in &ds {
        assert_eq!(d["timezone"], "Europe/Berlin", "{d}");
        assert_eq!(d["time"], "2026-03-10T12:00:00Z", "{d}");
        assert_eq!(d["dry_run"], true, "{d}");
    }
    // Database: daily buckets are Berlin days; within 48 h counts back from now.
    let newest_db = find(&ds, "2026-03-09T23:30:00Z");
    assert_eq!(newest_db["policy"], "databases");
    assert_eq!(newest_db["snapshot_local_time"], "2026-03-10 00:30:00 +01");
    assert_eq!(reasons(newest_db), ["daily 2026-03-10", "within"]);
    assert_eq!(
        reasons(find(&ds, "2026-03-08T23:30:00Z")),
        ["daily 2026-03-09", "within"]
    );
    for day in 5..=7 {
        let d = find(&ds, &format!("2026-03-0{day}T23:30:00Z"));
        assert_eq!(
            (d["action"].as_str(), d["reasons"].as_array().unwrap().len()),
            (Some("remove"), 0),
            "{d}"
        );
    }
    // The server's other path falls through to the second policy.
    assert_eq!(find(&ds, "2026-03-09T02:00:00Z")["policy"], "servers");
    assert_eq!(reasons(find(&ds, "2026-03-09T02:00:00Z")), ["last 1"]);
    assert_eq!(find(&ds, "2026-03-08T02:00:00Z")["action"], "remove");
    // The dead host: nothing is within 30 days of now, yet its newest stays.
    assert_eq!(reasons(find(&ds, "2025-03-03T02:00:00Z")), ["newest"]);
    assert_eq!(find(&ds, "2025-03-02T02:00:00Z")["action"], "remove");
    // No policy is for the stranger: kept, and said so.
    let stranger = find(&ds, "2026-03-09T03:00:00Z");
    assert_eq!(
        (stranger["policy"].clone(), reasons(stranger)),
        (Value::Null, vec!["no-policy".to_string()])
    );

    // Without the guard the dead host's newest goes too.
    let mut unsafe_dry = dry.clone();
    unsafe_dry.push("--unsafe-allow-remove-all");
    let ds_unsafe = decisions(&json(&ok_at(&p, NOW, &unsafe_dry)));
    assert_eq!(find(&ds_unsafe, "2025-03-03T02:00:00Z")["action"], "remove");

    // An audit log that cannot be written stops the run before anything is deleted.
    let missing = dir.path().join("no/such/dir/audit.jsonl");
    let mut unloggable = forget.to_vec();
    *unloggable.last_mut().unwrap() = missing.to_str().unwrap();
    let o = at(&p, NOW, &unloggable);
    let err = String::from_utf8_lossy(&o.stderr);
    // The warning about the stranger, then the error in one line.
    let last = err.trim().lines().last().unwrap_or("");
    assert!(
        !o.status.success() && last.starts_with("pbak: cannot append to the audit log"),
        "{err}"
    );
    assert_eq!(json(&p.ok(&["snapshots", "--json"])).as_array().unwrap().len(), 12);

    // The real run: the log gets every decision before anything is deleted.
    let plan = json(&ok_at(&p, NOW, &forget));
    let removed: Vec<_> = decisions(&plan)
        .into_iter()
        .filter(|d| d["action"] == "remove")
        .map(|d| d["snapshot"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(removed.len(), 3 + 2 + 2);
    let snaps = json(&p.ok(&["snapshots", "--json"]));
    let left: Vec<_> = snaps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left.len(), 5, "{snaps}");
    assert!(removed.iter().all(|id| !left.contains(id)));
    assert_eq!(fs::metadata(&log).unwrap().permissions().mode() & 0o777, 0o600);
    let lines: Vec<Value> = fs::read_to_string(&log).unwrap().lines().map(json).collect();
    assert_eq!(lines.len(), 12);
    for l in &lines {
        for key in [
            "time",
            "snapshot",
            "snapshot_time",
            "host",
            "paths",
            "tags",
            "policy",
            "action",
            "reasons",
            "timezone",
        ] {
            assert!(l.get(key).is_some(), "{key} missing: {l}");
        }
        assert_eq!(l["dry_run"], false);
    }
    let logged_removed = lines.iter().filter(|l| l["action"] == "remove").count();
    assert_eq!(logged_removed, removed.len());
    // Appended, not replaced: the second run logs the five that are left.
    ok_at(&p, NOW, &forget);
    assert_eq!(fs::read_to_string(&log).unwrap().lines().count(), 12 + 5);
    p.ok(&["check"]);
}

#[test]
fn policy_and_zone_errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = Pbak::new(dir.path().join("repo"));
    p.init();
    let bad = dir.path().join("bad.toml");
    fs::write(
        &bad,
        "[[policy]]\nname = \"x\"\nkeep = { daily = 7 }\nmatch = { host = [\"a\"] }\n",
    )
    .unwrap();
    let good = dir.path().join("good.toml");
    fs::write(&good, "[[policy]]\nname = \"x\"\nkeep = { daily = 7 }\n").unwrap();
    let (bad, good) = (bad.to_str().unwrap(), good.to_str().unwrap());
    let cases: [(&[&str], &[&str]); 4] = [
        (&["forget", "--policy-file", bad], &[bad, "line 4", "`host`"]),
        (&["forget", "--policy-file", good, "--keep-daily", "3"], &["not both"]),
        (
            &["forget", "--keep-daily", "3", "--timezone", "Europe/Berln"],
            &["Europe/Berln", "IANA"],
        ),
        (
            &["forget", "--policy-file", "/nonexistent/p.toml"],
            &["/nonexistent/p.toml"],
        ),
    ];
    for (args, want) in cases {
        let o = p.run(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        for w in want {
            assert!(err.contains(w), "{args:?}: {w} not in {err}");
        }
    }
}
