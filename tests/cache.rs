//! The local metadata cache on local repositories: verified and repaired silently, pruned
//! when objects leave the repository, private, and absent with --no-cache. (The drop in
//! remote reads is shown against the S3 server in tests/s3.rs.)
mod common;

use common::pbak::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// pbak with its cache root at `$XDG_CACHE_HOME/pbak`, `cache` being XDG_CACHE_HOME.
fn cached_cmd(p: &Pbak, cache: &Path, args: &[&str]) -> Command {
    let mut c = p.cmd(args);
    c.env("XDG_CACHE_HOME", cache).env_remove("PBAK_CACHE_DIR");
    c
}

/// Run with the cache under `cache` and `--ops`; returns (stdout, class B operations).
fn run_cached(p: &Pbak, cache: &Path, args: &[&str]) -> (String, u64) {
    let mut a = vec!["--ops"];
    a.extend_from_slice(args);
    let o = cached_cmd(p, cache, &a).output().unwrap();
    check_ok(&o, args);
    let b = class_b(&o);
    (String::from_utf8_lossy(&o.stdout).into_owned(), b)
}

fn check_ok(o: &Output, args: &[&str]) {
    assert!(
        o.status.success(),
        "pbak {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn class_b(o: &Output) -> u64 {
    let err = String::from_utf8_lossy(&o.stderr);
    let last = err.trim().lines().last().expect("--ops line on stderr");
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    v["backend"]["class_b"].as_u64().unwrap()
}

fn files_below(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![d.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// The repository's cache directory (the only directory under `<cache>/pbak`).
fn repo_cache(cache: &Path) -> PathBuf {
    let mut dirs: Vec<_> = fs::read_dir(cache.join("pbak"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.pop().unwrap()
}

fn setup(dir: &Path) -> (Pbak, PathBuf) {
    let src = dir.join("src");
    make_tree(&src, 21);
    let p = Pbak::new(dir.join("repo"));
    p.init();
    p.ok(&["--no-cache", "backup", "-q", src.to_str().unwrap()]);
    (p, src)
}

#[test]
fn damaged_cache_entries_are_replaced_without_a_word() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = setup(dir.path());
    let cache = dir.path().join("cache");
    let (want, cold) = run_cached(&p, &cache, &["ls", "latest"]);
    let files = files_below(&repo_cache(&cache));
    let kinds = ["index", "snapshots", "data"];
    for k in kinds {
        assert!(
            files.iter().any(|f| f.to_string_lossy().contains(&format!("/{k}/"))),
            "no {k} cached: {files:?}"
        );
    }
    // Damage every entry: flip a byte in some, truncate others.
    for (i, f) in files.iter().enumerate() {
        let mut b = fs::read(f).unwrap();
        if i % 2 == 0 {
            b[0] ^= 0xff;
        } else {
            b.truncate(b.len() / 2);
        }
        fs::write(f, b).unwrap();
    }
    let o = cached_cmd(&p, &cache, &["--ops", "ls", "latest"]).output().unwrap();
    check_ok(&o, &["ls"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), want);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim().lines().count(), 1, "only the --ops line, got: {err}");
    assert!(class_b(&o) > 2, "damaged entries must be fetched again");
    // Repaired: every entry hashes to its name again, and a third run reads nothing more.
    for f in files_below(&repo_cache(&cache)) {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        if name == "index.merged" {
            continue; // the loaded index, not a copy of an object: sealed, checked when read
        }
        assert_eq!(
            blake3::hash(&fs::read(&f).unwrap()).to_hex().as_str(),
            name,
            "{}",
            f.display()
        );
    }
    let (again, warm) = run_cached(&p, &cache, &["ls", "latest"]);
    assert_eq!(again, want);
    assert_eq!(warm, 2, "config and key only (cold run: {cold})");
}

#[test]
fn no_cache_makes_no_directory_and_the_cache_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let (p, src) = setup(dir.path());
    let cache = dir.path().join("cache");
    for args in [
        vec!["snapshots"],
        vec!["ls", "latest"],
        vec!["backup", "-q", src.to_str().unwrap()],
    ] {
        let mut a = vec!["--no-cache"];
        a.extend(args);
        let o = cached_cmd(&p, &cache, &a).output().unwrap();
        check_ok(&o, &a);
    }
    assert!(!cache.exists(), "--no-cache created {}", cache.display());
    run_cached(&p, &cache, &["snapshots"]);
    for d in [cache.join("pbak"), repo_cache(&cache)] {
        let mode = fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", d.display());
    }
    assert!(cache.join("pbak/CACHEDIR.TAG").exists());
    // PBAK_CACHE_DIR takes precedence.
    let other = dir.path().join("other");
    let o = p.cmd(&["snapshots"]).env("PBAK_CACHE_DIR", &other).output().unwrap();
    check_ok(&o, &["snapshots"]);
    assert!(other.join("CACHEDIR.TAG").exists());
}

#[test]
fn entries_of_objects_gone_from_the_repository_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (p, src) = setup(dir.path());
    fs::write(src.join("new"), b"second snapshot").unwrap();
    p.ok(&["--no-cache", "backup", "-q", src.to_str().unwrap()]);
    let cache = dir.path().join("cache");
    run_cached(&p, &cache, &["ls", "latest"]);
    let rc = repo_cache(&cache);
    let snaps = |d: &Path| {
        let mut v: Vec<_> = fs::read_dir(d.join("snapshots"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        v.sort();
        v
    };
    assert_eq!(snaps(&rc).len(), 2);
    // Another host's prune deleted a snapshot: the next listing drops its cached copy.
    let gone = snaps(&p.repo)[0].clone();
    fs::remove_file(p.repo.join("snapshots").join(&gone)).unwrap();
    run_cached(&p, &cache, &["snapshots"]);
    assert_eq!(snaps(&rc), snaps(&p.repo));
    // Index files gone (and so their packs): their cached copies and tree packs go too.
    assert!(!files_below(&rc.join("data")).is_empty());
    for f in files_below(&p.repo.join("index")) {
        fs::remove_file(f).unwrap();
    }
    let _ = cached_cmd(&p, &cache, &["ls", "latest"]).output().unwrap();
    assert!(files_below(&rc.join("index")).is_empty());
    assert!(files_below(&rc.join("data")).is_empty());
}
