//! Two-phase prune (issue 12): unneeded packs are marked and deleted by a later prune after
//! the grace period; a marked pack a snapshot needs again is brought back; and a backup that
//! was suspended while a prune ran either writes a snapshot that restores identical to its
//! source, or fails with one line and writes none. Never a snapshot of data that is gone.
mod common;

use common::pbak::*;
use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s.trim()).unwrap()
}

fn packs(repo: &Path) -> usize {
    sh(&format!("find '{}/data' -type f | wc -l", repo.display()))
        .trim()
        .parse()
        .unwrap()
}

fn same(a: &Path, b: &Path) {
    let d = sh(&format!("diff -r '{}' '{}' && echo SAME", a.display(), b.display()));
    assert_eq!(d.trim(), "SAME", "{} differs from {}", b.display(), a.display());
}

/// Restore `spec` into a fresh directory and compare it with `src`.
fn restores_identical(p: &Pbak, spec: &str, src: &Path, scratch: &Path) {
    let out = scratch.join(format!("restore-{}", spec.replace(['/', ':'], "_")));
    let _ = fs::remove_dir_all(&out);
    p.ok(&["restore", spec, "--target", out.to_str().unwrap(), "--verify"]);
    same(src, &out.join(src.strip_prefix("/").unwrap()));
}

fn write_files(dir: &Path, seed: u64, n: u64, len: usize) {
    fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        fs::write(dir.join(format!("f{i:03}")), prng(seed + i, len)).unwrap();
    }
}

#[test]
fn unneeded_packs_are_marked_then_deleted_by_a_prune_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    write_files(&a, 100, 4, 300_000);
    write_files(&b, 200, 4, 300_000);
    let p = Pbak::new(dir.path().join("repo"));
    p.init_pack_mib(1);
    p.ok(&["backup", "-q", a.to_str().unwrap()]);
    p.ok(&["backup", "-q", b.to_str().unwrap()]);
    let before = packs(&p.repo);
    let b_id = json(&p.ok(&["snapshots", "--json", "--path", b.to_str().unwrap()]))[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    p.ok(&["forget", &b_id]);

    let first = json(&p.ok(&["--json", "prune", "--delete-after", "3s"]));
    assert!(first["packs_marked"].as_u64().unwrap() > 0, "{first}");
    assert_eq!(first["packs_deleted"], 0, "{first}");
    assert_eq!(packs(&p.repo), before, "marking deletes nothing");
    assert_eq!(p.run(&["check", "--read-data"]).status.code(), Some(0));
    // Before the grace period ends the marks are carried over, nothing is deleted.
    let early = json(&p.ok(&["--json", "prune", "--delete-after", "3s"]));
    assert_eq!(early["packs_marked_kept"], first["packs_marked"], "{early}");
    assert_eq!(early["packs_deleted"], 0, "{early}");
    // A zero grace period deletes the marked packs at once; the live ones are kept (the
    // count once underflowed when marked packs were deleted).
    let now = json(&p.ok(&["--json", "prune", "--dry-run", "--delete-after", "0s"]));
    assert_eq!(now["packs_deleted"], first["packs_marked"], "{now}");
    std::thread::sleep(Duration::from_secs(4));
    let late = json(&p.ok(&["--json", "prune", "--delete-after", "3s"]));
    assert_eq!(late["packs_deleted"], first["packs_marked"], "{late}");
    assert_eq!(
        packs(&p.repo),
        before - first["packs_marked"].as_u64().unwrap() as usize
    );
    assert_eq!(late["packs_kept"], packs(&p.repo) as u64, "{late}");
    assert_eq!(now["packs_kept"], late["packs_kept"], "{now}");
    assert_eq!(p.run(&["check", "--read-data"]).status.code(), Some(0));
    restores_identical(&p, "latest", &a, dir.path());
}

#[test]
fn a_marked_pack_that_a_snapshot_needs_again_is_brought_back() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    write_files(&a, 300, 3, 200_000);
    let p = Pbak::new(dir.path().join("repo"));
    p.init_pack_mib(1);
    p.ok(&["backup", "-q", a.to_str().unwrap()]);
    let id = json(&p.ok(&["snapshots", "--json"]))[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Keep the snapshot object as a backup that began before the prune would write it.
    let object = p.repo.join("snapshots").join(&id);
    let saved = fs::read(&object).unwrap();
    p.ok(&["forget", &id]);
    let marked = json(&p.ok(&["--json", "prune"]));
    assert!(marked["packs_marked"].as_u64().unwrap() > 0, "{marked}");
    fs::write(&object, saved).unwrap();
    // Readers serve it from the marked packs meanwhile.
    restores_identical(&p, &id, &a, dir.path());
    let back = json(&p.ok(&["--json", "prune"]));
    assert_eq!(back["packs_brought_back"], marked["packs_marked"], "{back}");
    assert_eq!(back["packs_deleted"], 0);
    // Live again: a prune with no grace period keeps them.
    let again = json(&p.ok(&["--json", "prune", "--delete-after", "0s"]));
    assert_eq!(again["packs_deleted"], 0, "{again}");
    assert_eq!(p.run(&["check", "--read-data"]).status.code(), Some(0));
    restores_identical(&p, &id, &a, dir.path());
}

/// Bytes process `pid` has written through system calls (files and sockets alike).
fn written_by(pid: u32) -> u64 {
    let io = fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    io.lines()
        .find_map(|l| l.strip_prefix("wchar: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// What became of a backup that was stopped (SIGSTOP) after its first packs were stored,
/// while `forget` + `prune --delete-after GRACE` ran (under `faketime CLOCK` when given), and
/// then continued. `repo`: an S3 location, else a local repository (whose pack spools a
/// zero-grace prune removes, which the backup notices first; over S3 only its commit check
/// stands between it and a snapshot of deleted data).
fn suspended_backup(grace: &str, clock: Option<&str>, repo: Option<String>) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let (base, big) = (dir.path().join("base"), dir.path().join("big"));
    write_files(&base, 1000, 3, 100_000);
    write_files(&big, 2000, 24, 1 << 20);
    let local = repo.is_none();
    let p = Pbak::new(repo.map(Into::into).unwrap_or_else(|| dir.path().join("repo")));
    p.init_pack_mib(1);
    p.ok(&["backup", "-q", "--host", "server", base.to_str().unwrap()]);
    let base_id = json(&p.ok(&["snapshots", "--json"]))[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    p.ok(&["backup", "-q", "--host", "laptop", big.to_str().unwrap()]);
    // The laptop's next backup deduplicates against that snapshot's packs and adds new ones.
    write_files(&big.join("new"), 3000, 40, 1 << 20);
    let before = if local { packs(&p.repo) } else { 0 };
    let mut c = p.cmd(&["backup", "-q", "--host", "laptop", big.to_str().unwrap()]);
    c.env("PBAK_THREADS", "1").stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    let started = Instant::now();
    // Three packs stored (local), or four MiB sent (S3).
    let stored = || match local {
        true => packs(&p.repo) >= before + 3,
        false => written_by(child.id()) > 4 << 20,
    };
    while !stored() {
        assert!(started.elapsed() < Duration::from_secs(60), "no packs stored");
        std::thread::sleep(Duration::from_millis(5));
    }
    let pid = child.id().to_string();
    sh(&format!("kill -STOP {pid}"));
    // Another host forgets every laptop snapshot and prunes.
    let laptop = json(&p.ok(&["snapshots", "--json", "--host", "laptop"]));
    for s in laptop.as_array().unwrap() {
        p.ok(&["forget", s["id"].as_str().unwrap()]);
    }
    let mut prune = vec!["--json", "prune", "--delete-after", grace];
    let mut cmd = match clock {
        Some(offset) => {
            let mut f = std::process::Command::new("faketime");
            f.arg("-f").arg(offset).arg(env!("CARGO_BIN_EXE_pbak"));
            f.arg("-r").arg(&p.repo).env("PBAK_PASSWORD", &p.password);
            f.env_remove("PBAK_PASSWORD_FILE").env_remove("PBAK_PASSWORD_COMMAND");
            f.env("PBAK_CACHE_DIR", dir.path().join("prune-cache"));
            f.args(prune.drain(..));
            f
        }
        None => p.cmd(&prune),
    };
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "prune: {}", String::from_utf8_lossy(&o.stderr));
    sh(&format!("kill -CONT {pid}"));
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).trim().to_string();
    // Every earlier snapshot still restores identical.
    restores_identical(&p, &base_id, &base, dir.path());
    let ok = o.status.success();
    eprintln!(
        "grace {grace}, prune clock {clock:?}: backup exit {:?}: {err}",
        o.status.code()
    );
    if ok {
        let snap = json(&p.ok(&["snapshots", "--json", "--host", "laptop"]));
        let id = snap[0]["id"].as_str().unwrap().to_string();
        restores_identical(&p, &id, &big, dir.path());
        assert_eq!(p.run(&["check", "--read-data"]).status.code(), Some(0));
    } else {
        assert!(
            err.contains("removed data this backup relied on") && err.lines().count() == 1,
            "grace {grace}: {err}"
        );
        assert_eq!(p.ok(&["snapshots", "--json", "--host", "laptop"]).trim(), "[]");
        // No snapshot needs what is gone. (After a zero-grace prune the failed backup's
        // last index file may list packs the prune deleted: errors, but of no snapshot.)
        let c = json(&String::from_utf8_lossy(&p.run(&["--json", "check"]).stdout));
        let errors = c["errors"].as_array().unwrap();
        assert!(
            errors
                .iter()
                .all(|e| e.as_str().unwrap().contains("no snapshot uses it")),
            "{c}"
        );
    }
    (ok, err)
}

#[test]
fn a_suspended_backup_never_writes_a_snapshot_of_deleted_data() {
    // With the default grace period the backup completes (what it needs is marked, not gone);
    // with none, what it relied on is gone and it fails with the one line.
    let (ok, err) = suspended_backup("24h", None, None);
    assert!(ok, "24h grace: {err}");
    let (ok, err) = suspended_backup("0s", None, None);
    assert!(
        !ok,
        "0s grace: the forgotten snapshot's packs were deleted under it: {err}"
    );
}

#[test]
fn a_suspended_backup_to_s3_never_writes_a_snapshot_of_deleted_data() {
    let (Ok(endpoint), Ok(bucket)) = (
        std::env::var("PBAK_TEST_S3_ENDPOINT"),
        std::env::var("PBAK_TEST_S3_BUCKET"),
    ) else {
        assert!(
            std::env::var("PBAK_ALLOW_SKIP_S3").as_deref() == Ok("1"),
            "PBAK_TEST_S3_ENDPOINT/BUCKET unset: start the server with `eval \"$(scripts/s3-server.sh start)\"`"
        );
        eprintln!("SKIP: no S3 test server");
        return;
    };
    let at = |name: &str| {
        Some(format!(
            "s3:{endpoint}/{bucket}/suspended-{name}-{}",
            std::process::id()
        ))
    };
    let (ok, err) = suspended_backup("24h", None, at("grace"));
    assert!(ok, "24h grace: {err}");
    let (ok, err) = suspended_backup("0s", None, at("nograce"));
    assert!(!ok, "0s grace: {err}");
    assert!(
        err.contains("is gone") || err.contains("is in no index"),
        "the commit check caught it: {err}"
    );
}

#[test]
fn a_suspended_backup_is_safe_with_the_clocks_an_hour_apart() {
    if sh("command -v faketime || true").trim().is_empty() {
        eprintln!("SKIP: faketime is not installed (Debian package faketime; .ci/run installs it)");
        return;
    }
    let (ok, err) = suspended_backup("24h", Some("+1h"), None);
    assert!(ok, "prune an hour ahead, 24h grace: {err}");
    let (ok, err) = suspended_backup("0s", Some("-1h"), None);
    assert!(!ok, "prune an hour behind, 0s grace: {err}");
}
