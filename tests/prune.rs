//! `forget`, `prune` and locks, end to end: space is freed, what is kept restores identically,
//! a prune killed at any moment leaves a consistent repository, and locks keep prune away
//! from running backups.
mod common;

use common::pbak::*;
use std::fs;
use std::path::Path;
use std::time::Duration;

fn du(p: &Path) -> u64 {
    sh(&format!("du -sb '{}' | cut -f1", p.display()))
        .trim()
        .parse()
        .unwrap()
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn restored(root: &Path, src: &Path) -> std::path::PathBuf {
    root.join(src.strip_prefix("/").unwrap())
}

#[test]
fn forget_and_prune_free_space_and_keep_the_rest_intact() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    for i in 0..10 {
        fs::write(src.join(format!("shared{i}")), prng(i, 300_000)).unwrap();
        fs::write(src.join(format!("old{i}")), prng(100 + i, 300_000)).unwrap();
    }
    let p = Pbak::new(dir.path().join("repo"));
    p.init_pack_mib(1);
    let first = p.backup_json(&[src.to_str().unwrap()])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 0..10 {
        fs::remove_file(src.join(format!("old{i}"))).unwrap();
    }
    fs::write(src.join("new"), prng(999, 500_000)).unwrap();
    p.backup_json(&[src.to_str().unwrap()]);
    let before = du(&p.repo);

    let dry = json(&p.ok(&["--json", "forget", &first, "--dry-run"]));
    assert_eq!(dry[0]["remove"].as_array().unwrap().len(), 1, "{dry}");
    assert_eq!(json(&p.ok(&["snapshots", "--json"])).as_array().unwrap().len(), 2);

    p.ok(&["forget", &first]);
    let dry = json(&p.ok(&[
        "--json",
        "prune",
        "--delete-after",
        "0s",
        "--dry-run",
        "--max-unused",
        "0",
    ]));
    assert_eq!(du(&p.repo), du(&p.repo), "dry run changed nothing");
    let rep = json(&p.ok(&["--json", "prune", "--delete-after", "0s", "--max-unused", "0"]));
    assert_eq!(
        rep["packs_deleted"], dry["packs_deleted"],
        "dry run predicted the prune"
    );
    assert!(
        rep["packs_repacked"].as_u64().unwrap() > 0,
        "the old files' blobs share packs with kept ones: {rep}"
    );
    assert_eq!(rep["bytes_unused_after"], 0, "{rep}");
    let after = du(&p.repo);
    // Ten 300 kB random files left the repository.
    assert!(
        after + 2_700_000 < before,
        "repository shrank only from {before} to {after}"
    );

    let snaps = json(&p.ok(&["snapshots", "--json"]));
    assert_eq!(snaps.as_array().unwrap().len(), 1);
    p.ok(&["check", "--read-data"]);
    let out = dir.path().join("out");
    p.ok(&["restore", "latest", "--target", out.to_str().unwrap()]);
    assert_same_tree(&src, &restored(&out, &src));

    let again = json(&p.ok(&["--json", "prune", "--delete-after", "0s", "--max-unused", "0"]));
    assert_eq!(again["packs_deleted"], 0, "{again}");
    assert_eq!(again["packs_repacked"], 0, "{again}");
    assert_eq!(again["blobs_unused"], 0, "{again}");
}

#[test]
fn forget_applies_keep_rules_per_host_and_paths() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    let p = Pbak::new(dir.path().join("repo"));
    p.init();
    for round in 0..3 {
        fs::write(src.join("f"), prng(round, 1000)).unwrap();
        for host in ["alpha", "beta"] {
            p.ok(&["backup", "-q", "--host", host, src.to_str().unwrap()]);
        }
    }
    let plan = json(&p.ok(&["--json", "forget", "--keep-last", "2", "--dry-run"]));
    assert_eq!(plan.as_array().unwrap().len(), 2, "one group per host: {plan}");
    assert_eq!(json(&p.ok(&["snapshots", "--json"])).as_array().unwrap().len(), 6);
    p.ok(&["forget", "--keep-last", "2", "--prune", "--delete-after", "0s"]);
    let snaps = json(&p.ok(&["snapshots", "--json"]));
    for host in ["alpha", "beta"] {
        let n = snaps.as_array().unwrap().iter().filter(|s| s["host"] == host).count();
        assert_eq!(n, 2, "host {host}: {snaps}");
    }
    let e = p.run(&["forget"]);
    assert!(!e.status.success());
    let msg = String::from_utf8_lossy(&e.stderr);
    assert!(msg.contains("nothing to forget") && msg.lines().count() == 1, "{msg}");
    p.ok(&["check", "--read-data"]);
}

#[test]
fn killed_prune_leaves_a_consistent_repository() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    for i in 0..48 {
        fs::write(src.join(format!("f{i:02}")), prng(7000 + i, 1 << 20)).unwrap();
    }
    let p = Pbak::new(dir.path().join("repo"));
    p.init_pack_mib(1);
    p.ok(&["backup", "-q", src.to_str().unwrap()]);
    // The second snapshot keeps every other file: half of each pack becomes garbage.
    for i in (0..48).step_by(2) {
        fs::remove_file(src.join(format!("f{i:02}"))).unwrap();
    }
    p.ok(&["backup", "-q", src.to_str().unwrap()]);
    p.ok(&["forget", "--keep-last", "1"]);

    let out = dir.path().join("out");
    p.ok(&["restore", "latest", "--target", out.to_str().unwrap()]);
    // Full metadata comparison once: reading the sources (diff) moves their atimes.
    assert_same_tree(&src, &restored(&out, &src));
    for delay_ms in [0u64, 40, 120, 250, 400, 700] {
        let mut child = p
            .cmd(&["prune", "--delete-after", "0s", "-q", "--max-unused", "0"])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let finished = child.try_wait().unwrap().is_some();
        child.kill().ok();
        child.wait().unwrap();
        // The killed run's marker belongs to a dead process of this machine: stale, not blocking.
        // Its leftovers (packs in no index, packs listed twice) are warnings, never errors.
        let c = p.run(&["--json", "check"]);
        assert!(
            matches!(c.status.code(), Some(0 | 1)),
            "check after prune killed at {delay_ms} ms: {}{}",
            String::from_utf8_lossy(&c.stdout),
            String::from_utf8_lossy(&c.stderr)
        );
        let _ = fs::remove_dir_all(&out);
        p.ok(&["restore", "latest", "--target", out.to_str().unwrap(), "--verify"]);
        let d = sh(&format!(
            "diff -r '{}' '{}' && echo SAME",
            src.display(),
            restored(&out, &src).display()
        ));
        assert_eq!(d.trim(), "SAME", "after prune killed at {delay_ms} ms");
        if finished {
            break;
        }
    }
    p.ok(&["prune", "--delete-after", "0s", "--max-unused", "0"]);
    let c = json(&p.ok(&["--json", "check", "--read-data"]));
    assert_eq!(c["unreferenced_packs"], 0, "{c}");
    assert_eq!(
        json(&p.ok(&["--json", "prune", "--delete-after", "0s"]))["blobs_unused"],
        0
    );
    assert!(!p.repo.join("prune").exists(), "no prune marker left behind");
}

#[test]
fn the_prune_marker_keeps_prunes_apart_and_nothing_else_takes_a_lock() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"data").unwrap();
    let p = Pbak::new(dir.path().join("repo"));
    p.init();
    let loc = pbak::backends::Location::parse(p.repo.to_str().unwrap()).unwrap();
    let open = || {
        let backend = pbak::backends::Backend::open(&loc, false).unwrap();
        pbak::repo::Repository::open(backend, p.password.as_bytes()).unwrap()
    };
    let repo = open();

    // A running prune (this test process holds its marker) refuses a second prune, with one
    // line naming the holder and the way out; backups, restores and checks go on.
    let marker = repo.take_prune_marker().unwrap();
    p.ok(&["backup", "-q", src.to_str().unwrap()]);
    p.ok(&["check"]);
    let out = dir.path().join("out");
    p.ok(&["restore", "latest", "--target", out.to_str().unwrap()]);
    for args in [&["prune"][..], &["forget", "--keep-last", "1", "--prune"][..]] {
        let r = p.run(args);
        // 75: may pass when tried again (`pbak run` retries it).
        assert_eq!(r.status.code(), Some(75), "{args:?}");
        let msg = String::from_utf8_lossy(&r.stderr);
        assert!(
            msg.contains("another prune is running") && msg.contains("pbak unlock") && msg.lines().count() == 1,
            "{msg}"
        );
    }
    // `unlock` without --remove-all leaves a live prune's marker alone.
    p.ok(&["unlock"]);
    assert!(p.run(&["prune"]).status.code() == Some(75));
    drop(marker);
    assert!(!p.repo.join("prune").exists(), "marker removed on drop");
    p.ok(&["prune", "--delete-after", "0s"]);

    // --remove-all clears even a live marker.
    let _held = open().take_prune_marker().unwrap();
    p.ok(&["unlock", "--remove-all"]);
    p.ok(&["prune"]);
    // Nothing but prune ever wrote a lock object.
    let locks = p.repo.join("locks");
    assert!(!locks.exists() || fs::read_dir(&locks).unwrap().count() == 0);
}
