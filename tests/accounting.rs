//! Run records, `cost` and `status` (issue 13): the operations pbak records equal what the S3
//! test server received (counted on the wire by the proxy); the estimate matches hand-computed
//! figures; status levels and exit codes; the Prometheus file parses with the
//! `prometheus_client` package's own parser; prune folds week-old records without losing a
//! count.
mod common;

use common::faulty_proxy::{Counts, Faults, FaultyProxy, Kind};
use common::pbak::*;
use std::fs;
use std::process::Command;

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("{e}: {s}"))
}

fn write_tree(dir: &std::path::Path, seed: u64) {
    fs::create_dir_all(dir.join("sub")).unwrap();
    for i in 0..5u64 {
        fs::write(dir.join(format!("f{i}")), prng(seed + i, 150_000)).unwrap();
    }
    fs::write(dir.join("sub/g"), prng(seed + 50, 10_000)).unwrap();
}

fn classes(c: &Counts) -> [u64; 3] {
    let n = |k: Kind| c.get(&k).copied().unwrap_or(0);
    [
        n(Kind::Put) + n(Kind::Delete) + n(Kind::Other),
        n(Kind::Get) + n(Kind::RangedGet) + n(Kind::Head),
        n(Kind::List),
    ]
}

fn history_sums(cost: &serde_json::Value) -> [u64; 3] {
    let days = cost["history"].as_array().unwrap();
    ["class_a", "class_b", "class_c"].map(|k| days.iter().map(|d| d[k].as_u64().unwrap()).sum())
}

#[test]
fn recorded_operations_equal_what_the_s3_server_received() {
    let (Ok(endpoint), Ok(bucket)) = (
        std::env::var("PBAK_TEST_S3_ENDPOINT"),
        std::env::var("PBAK_TEST_S3_BUCKET"),
    ) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the S3 tests: no S3 test server"
        );
        eprintln!("!!! SKIPPING: no S3 test server (eval \"$(scripts/s3-server.sh start)\")");
        return;
    };
    let proxy = FaultyProxy::start_with(endpoint.trim_start_matches("http://"), Faults::default());
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    write_tree(&src, 1);
    let name = format!(
        "acct-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let p = Pbak::new(format!("s3:http://{}/{bucket}/{name}", proxy.addr).into());
    p.ok(&["init", "--kdf-memory-mib", "1", "--kdf-iterations", "1"]);
    proxy.take_counts();
    let target = dir.path().join("out");
    let t = target.to_str().unwrap();
    let s = src.to_str().unwrap();
    for args in [
        vec!["backup", "-q", s],
        vec!["backup", "-q", s],
        vec!["check", "--read-data"],
        vec!["restore", "latest", "--target", t],
        vec!["forget", "--keep-last", "1"],
        vec!["prune", "--delete-after", "0s"],
    ] {
        p.ok(&args);
    }
    let wire = classes(&proxy.take_counts());
    let cost = json(&p.ok(&["--json", "cost"]));
    assert_eq!(history_sums(&cost), wire, "recorded vs received (A, B, C): {cost}");
    assert!(wire[1] > 10 && wire[2] > 10, "{wire:?}");
    // Backups and the prune record the stored size after them (blob bytes of the packs: at
    // most what the listing counts, which adds headers, index files and snapshots).
    let hist = cost["stored_history"].as_array().unwrap();
    assert_eq!(hist.len(), 3, "{cost}");
    let last = hist[2][1].as_u64().unwrap();
    assert!(
        last > 700_000 && last <= cost["stored_bytes"].as_u64().unwrap(),
        "{cost}"
    );
    // Hand-computed, with no free transactions: one day of history.
    let price = json(&p.ok(&[
        "--json",
        "cost",
        "--free-per-day",
        "0",
        "--price-class-b-per-10k",
        "100",
        "--price-class-c-per-1k",
        "10",
        "--warn",
        "1e9",
        "--critical",
        "1e9",
    ]));
    assert_eq!(price["days"], 1);
    let sums = history_sums(&price);
    let want_b = sums[1] as f64 * 30.44 / 10_000.0 * 100.0;
    let want_c = sums[2] as f64 * 30.44 / 1_000.0 * 10.0;
    assert!(
        (price["class_b_usd"].as_f64().unwrap() - want_b).abs() < 1e-6,
        "{price}"
    );
    assert!(
        (price["class_c_usd"].as_f64().unwrap() - want_c).abs() < 1e-6,
        "{price}"
    );
}

/// The Python that has `prometheus_client` (scripts/test-all.sh installs it into the S3
/// server's venv), or why there is none.
fn prom_python() -> Result<String, String> {
    let py = std::env::var("PBAK_TEST_PROM_PYTHON").unwrap_or_else(|_| "/opt/pbak-moto/bin/python".into());
    let ok = Command::new(&py)
        .args(["-c", "import prometheus_client.parser"])
        .status()
        .is_ok_and(|s| s.success());
    match ok {
        true => Ok(py),
        false => Err(format!(
            "{py} cannot import prometheus_client (scripts/test-all.sh installs it)"
        )),
    }
}

#[test]
fn status_levels_cost_thresholds_and_prometheus_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    write_tree(&src, 7);
    let p = Pbak::new(dir.path().join("repo"));
    p.init();
    let empty = p.run(&["status"]);
    assert_eq!(empty.status.code(), Some(2), "no snapshots is critical");
    p.ok(&["backup", "-q", "--host", "yoga", src.to_str().unwrap()]);
    // No check yet: a warning, and the first line says so.
    let warn = p.run(&["status"]);
    assert_eq!(warn.status.code(), Some(1));
    let out = String::from_utf8_lossy(&warn.stdout);
    assert!(out.starts_with("WARNING: no check recorded"), "{out}");
    p.ok(&["check"]);
    let prom = dir.path().join("metrics/pbak.prom");
    fs::create_dir_all(prom.parent().unwrap()).unwrap();
    let ok = p.run(&["status", "--prometheus", prom.to_str().unwrap()]);
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stdout));
    assert!(String::from_utf8_lossy(&ok.stdout).starts_with("OK: "));
    // Older than --max-age: critical, naming the host.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let old = p.run(&["--json", "status", "--max-age", "1s"]);
    assert_eq!(old.status.code(), Some(2));
    let r = json(&String::from_utf8_lossy(&old.stdout));
    assert_eq!(r["level"], "critical");
    assert!(r["problems"][0].as_str().unwrap().contains("yoga"), "{r}");
    // Cost thresholds: exit 1 at --warn, 2 at --critical; the first line says which.
    let c = p.run(&["cost", "--warn", "0", "--critical", "1000"]);
    assert_eq!(c.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&c.stdout).starts_with("WARNING: estimated $"));
    let c = p.run(&["cost", "--warn", "0", "--critical", "0"]);
    assert_eq!(c.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&c.stdout).starts_with("CRITICAL: "));
    assert_eq!(p.run(&["cost"]).status.code(), Some(0));
    let csv = dir.path().join("cost.csv");
    p.ok(&["cost", "--csv", csv.to_str().unwrap()]);
    let csv = fs::read_to_string(&csv).unwrap();
    assert!(
        csv.starts_with("date,class_a,class_b,class_c") && csv.lines().count() >= 3,
        "{csv}"
    );

    // The metrics file, parsed by prometheus_client's parser, not by pbak's code.
    let py = match prom_python() {
        Ok(py) => py,
        Err(why) if std::env::var_os("CI").is_none() => {
            eprintln!("!!! SKIPPING the Prometheus parse: {why}");
            return;
        }
        Err(why) => panic!("{why}"),
    };
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
fams = {f.name: f for f in text_string_to_metric_families(open(sys.argv[1]).read())}
for name, f in sorted(fams.items()):
    assert f.documentation and f.type == "gauge", name
    for s in f.samples:
        print(s.name, ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())), s.value)
"#;
    let o = Command::new(&py)
        .args(["-c", script, prom.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let parsed = String::from_utf8_lossy(&o.stdout);
    let value = |name: &str| -> f64 {
        let line = parsed
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {parsed}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let src_s = src.to_str().unwrap();
    assert!(parsed.contains(&format!("host=yoga,paths={src_s}")), "{parsed}");
    assert_eq!(value("pbak_status"), 0.0);
    assert_eq!(value("pbak_check_success"), 1.0);
    assert_eq!(value("pbak_backup_files"), 6.0);
    let ts = value("pbak_backup_last_success_timestamp_seconds");
    let now = chrono::Utc::now().timestamp() as f64;
    assert!(ts <= now && ts > now - 60.0, "{ts}");
    assert!(value("pbak_repository_stored_bytes") > 750_000.0);
    // Written atomically: no temporary file left beside it.
    assert_eq!(fs::read_dir(prom.parent().unwrap()).unwrap().count(), 1);
}

#[test]
fn prune_folds_week_old_run_records_and_keeps_every_count() {
    if Command::new("faketime").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "CI must have faketime");
        eprintln!("!!! SKIPPING: faketime is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    write_tree(&src, 9);
    let p = Pbak::new(dir.path().join("repo"));
    p.init();
    for _ in 0..3 {
        p.ok(&["backup", "-q", src.to_str().unwrap()]);
    }
    p.ok(&["check"]);
    let runs = || fs::read_dir(p.repo.join("runs")).unwrap().count();
    assert_eq!(runs(), 4);
    let before = json(&p.ok(&["--json", "cost"]));
    // Eight days later a prune folds the four into one.
    let c = p.cmd(&["--json", "prune"]);
    let prog = c.get_program().to_os_string();
    let args: Vec<_> = c.get_args().map(|a| a.to_os_string()).collect();
    let mut f = Command::new("faketime");
    f.args(["-f", "+8d"]).arg(&prog).args(&args);
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => f.env(k, v),
            None => f.env_remove(k),
        };
    }
    let o = f.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rep = json(&String::from_utf8_lossy(&o.stdout));
    assert_eq!(rep["run_files_compacted"], 4, "{rep}");
    // The folded file and the prune's own record.
    assert_eq!(runs(), 2);
    let after = json(&p.ok(&["--json", "cost"]));
    let sums = |c: &serde_json::Value| history_sums(c);
    let (b, a) = (sums(&before), sums(&after));
    // Every count of the four runs is still there, plus the prune's own (recorded 8 days on).
    assert!(a[0] >= b[0] && a[1] >= b[1] && a[2] >= b[2], "{b:?} -> {a:?}");
    let folded: Vec<&serde_json::Value> = after["history"].as_array().unwrap().iter().collect();
    assert_eq!(
        ["class_a", "class_b", "class_c"].map(|k| folded[0][k].as_u64().unwrap()),
        b,
        "the folded day keeps the four runs' counts: {after}"
    );
}
