//! `check` in levels (issue 12): the structure level's warnings (a leftover unindexed pack, a
//! marked pack a snapshot needs) and errors (a deleted pack) with exit codes 0/1/2, each
//! naming its object and exactly the snapshots it affects; `--read-data-subset` N/M, P% and
//! a size; a flipped bit inside a blob (`scripts/damage-fixtures.sh blob-bit-flipped`) found
//! by reading the data; and `restore --dry-run [--verify]`, which writes nothing.
mod common;

use common::pbak::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `check --json ARGS` (never through the cache): exit code and report.
fn check(p: &Pbak, args: &[&str]) -> (i32, Value) {
    let o = p.run(&[&["--no-cache", "--json", "check"], args].concat());
    let rep = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "check {args:?}: not JSON ({e}): {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    });
    (o.status.code().unwrap(), rep)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// Paths of the files below `dir` of the repository, relative to the repository.
fn files(p: &Pbak, dir: &str) -> BTreeSet<String> {
    let out = sh(&format!("cd '{}' && find {dir} -type f", p.repo.display()));
    out.lines().map(str::to_string).collect()
}

/// A directory of `n` files of `size` pseudo-random bytes each, from `seed`.
fn source(root: &Path, name: &str, seed: u64, n: u64, size: usize) -> PathBuf {
    let dir = root.join(name);
    fs::create_dir_all(&dir).unwrap();
    for i in 0..n {
        fs::write(dir.join(format!("f{i}")), prng(seed * 1000 + i, size)).unwrap();
    }
    dir
}

/// A repository with 1 MiB packs and one backup of four files; its short id.
fn repo_with_one_backup(dir: &Path) -> (Pbak, String) {
    let p = Pbak::new(dir.join("repo"));
    p.init_pack_mib(1);
    let first = backup(&p, &source(dir, "one", 1, 4, 300_000));
    (p, first)
}

/// The largest of `files` (repository paths).
fn largest<'a>(p: &Pbak, files: impl IntoIterator<Item = &'a String>) -> &'a String {
    let size = |f: &&String| fs::metadata(p.repo.join(f)).unwrap().len();
    files.into_iter().max_by_key(size).unwrap()
}

fn backup(p: &Pbak, dir: &Path) -> String {
    let id = p.backup_json(&["-q", dir.to_str().unwrap()])["snapshot_id"].clone();
    id.as_str().unwrap()[..8].to_string()
}

#[test]
fn a_clean_repository_passes_and_a_leftover_pack_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = repo_with_one_backup(dir.path());
    let (code, rep) = check(&p, &[]);
    assert_eq!(code, 0, "{rep}");
    assert!(
        strings(&rep["errors"]).is_empty() && strings(&rep["warnings"]).is_empty(),
        "{rep}"
    );
    assert_eq!(rep["marked_packs"]["count"], 0);

    // A backup whose index files and snapshot are lost leaves its packs in no index.
    let (index, snaps, packs) = (files(&p, "index"), files(&p, "snapshots"), files(&p, "data"));
    backup(&p, &source(dir.path(), "two", 2, 3, 500_000));
    for f in files(&p, "index")
        .difference(&index)
        .chain(files(&p, "snapshots").difference(&snaps))
    {
        fs::remove_file(p.repo.join(f)).unwrap();
    }
    let left: BTreeSet<String> = files(&p, "data").difference(&packs).cloned().collect();
    assert!(!left.is_empty());
    let (code, rep) = check(&p, &["--read-data"]);
    assert_eq!(code, 1, "warnings only: {rep}");
    assert!(strings(&rep["errors"]).is_empty(), "{rep}");
    let warnings = strings(&rep["warnings"]);
    assert_eq!(warnings.len(), left.len(), "{rep}");
    for pack in &left {
        assert!(
            warnings
                .iter()
                .any(|w| w.contains(pack.as_str()) && w.contains("in no index")),
            "{pack} not named: {rep}"
        );
    }
    assert_eq!(rep["unreferenced_packs"], left.len());
    let text = p.run(&["--no-cache", "check"]);
    let err = String::from_utf8_lossy(&text.stderr);
    assert_eq!(text.status.code(), Some(1));
    assert!(err.contains("warning: pack data/") && !err.contains("error:"), "{err}");
    // The next prune marks them by name: reported, not read (no index lists their blobs).
    p.ok(&["prune"]);
    let (code, rep) = check(&p, &["--read-data"]);
    assert_eq!(code, 0, "{rep}");
    assert_eq!(rep["marked_packs"]["count"], left.len(), "{rep}");
    assert_eq!(rep["packs_read"], packs.len(), "{rep}");
}

#[test]
fn a_deleted_pack_is_an_error_naming_exactly_the_snapshots_that_need_it() {
    let dir = tempfile::tempdir().unwrap();
    let (p, first) = repo_with_one_backup(dir.path());
    let before = files(&p, "data");
    let two = source(dir.path(), "two", 2, 3, 500_000);
    let (second, third) = (backup(&p, &two), backup(&p, &two));
    // The largest new pack holds the second backup's data, which the first does not use.
    let new: Vec<String> = files(&p, "data").difference(&before).cloned().collect();
    let victim = largest(&p, &new);
    fs::remove_file(p.repo.join(victim)).unwrap();

    let (code, rep) = check(&p, &[]);
    assert_eq!(code, 2, "{rep}");
    let errors = strings(&rep["errors"]);
    assert_eq!(errors.len(), 1, "{rep}");
    let e = &errors[0];
    assert!(e.contains(victim.as_str()) && e.contains("missing"), "{e}");
    assert!(e.contains(&second) && e.contains(&third) && !e.contains(&first), "{e}");
    // A pack cut short is found by its size alone, naming its snapshot.
    let cut = largest(&p, &before);
    let len = fs::metadata(p.repo.join(cut)).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(p.repo.join(cut))
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    let (code, rep) = check(&p, &[]);
    assert_eq!(code, 2, "{rep}");
    let e = strings(&rep["errors"])
        .into_iter()
        .find(|e| e.contains(cut.as_str()))
        .unwrap();
    assert!(
        e.contains(&format!("has {} bytes where its index entries give {len}", len - 1)),
        "{e}"
    );
    assert!(e.contains(&first) && !e.contains(&second), "{e}");
}

#[test]
fn marked_packs_are_reported_and_a_snapshot_that_needs_one_warns() {
    let dir = tempfile::tempdir().unwrap();
    let (p, first) = repo_with_one_backup(dir.path());
    backup(&p, &source(dir.path(), "two", 2, 2, 300_000));
    let snap = files(&p, "snapshots")
        .into_iter()
        .find(|f| f.contains(&format!("/{first}")))
        .unwrap();
    let saved = fs::read(p.repo.join(&snap)).unwrap();
    p.ok(&["forget", &first]);
    p.ok(&["prune"]);
    let (code, rep) = check(&p, &["--read-data"]);
    assert_eq!(code, 0, "marked packs are no problem: {rep}");
    let m = &rep["marked_packs"];
    assert!(
        m["count"].as_u64().unwrap() >= 1 && m["bytes"].as_u64().unwrap() > 1_000_000,
        "{rep}"
    );
    let due = m["first_delete_after"].as_i64().unwrap() - chrono_now();
    assert!(
        (23 * 3600..=25 * 3600).contains(&due),
        "the default grace is 24 h: {due}"
    );
    assert!(
        rep["packs_read"].as_u64() == rep["packs"].as_u64(),
        "marked packs are read too: {rep}"
    );

    // The forgotten snapshot back (say, from a copy): it needs the marked packs.
    fs::write(p.repo.join(&snap), saved).unwrap();
    let (code, rep) = check(&p, &[]);
    assert_eq!(code, 1, "{rep}");
    let warnings = strings(&rep["warnings"]);
    assert!(!warnings.is_empty() && strings(&rep["errors"]).is_empty(), "{rep}");
    for w in &warnings {
        assert!(
            w.contains("marked for deletion") && w.contains("the next prune brings it back"),
            "{w}"
        );
        assert!(w.contains(&format!("in use, by snapshot {first}:")), "{w}");
    }
    p.ok(&["prune"]);
    let (code, rep) = check(&p, &[]);
    assert_eq!(
        (code, rep["marked_packs"]["count"].as_u64()),
        (0, Some(0)),
        "brought back: {rep}"
    );
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The first 8 bytes of a pack id (hex) as a big-endian u64.
fn prefix(hex: &str) -> u64 {
    u64::from_str_radix(&hex[..16], 16).unwrap()
}

#[test]
fn read_data_subsets_are_deterministic_and_cover_every_pack() {
    let dir = tempfile::tempdir().unwrap();
    let p = Pbak::new(dir.path().join("repo"));
    p.init_pack_mib(1);
    // Chunk cuts depend on the repository's random chunker key: 75 MiB made 60, 68 and 71
    // packs in three repositories (60 MiB once made only 47).
    backup(&p, &source(dir.path(), "big", 3, 75, 1 << 20));
    let all: BTreeSet<String> = files(&p, "data")
        .iter()
        .map(|f| f.rsplit('/').next().unwrap().to_string())
        .collect();
    assert!(all.len() >= 50, "{} packs", all.len());
    let read = |spec: &str| -> (BTreeSet<String>, Value) {
        let (code, rep) = check(&p, &["--read-data-subset", spec]);
        assert_eq!(code, 0, "{spec}: {rep}");
        assert!(rep["subset"].is_string(), "{rep}");
        let ids: BTreeSet<String> = strings(&rep["read_packs"]).into_iter().collect();
        assert_eq!(rep["packs_read"], ids.len(), "{rep}");
        (ids, rep)
    };
    let mut union = BTreeSet::new();
    for n in 1..=3u64 {
        let (ids, _) = read(&format!("{n}/3"));
        assert!(ids.iter().all(|id| prefix(id) % 3 == n - 1), "part {n}: {ids:?}");
        assert!(union.is_disjoint(&ids), "part {n} overlaps an earlier part");
        union.extend(ids);
    }
    assert_eq!(union, all, "three parts read every pack once");

    let (ten, _) = read("10%");
    assert_eq!(ten, read("10%").0, "the same packs every time");
    let want: BTreeSet<String> = all.iter().filter(|id| prefix(id) < u64::MAX / 10).cloned().collect();
    assert_eq!(ten, want);
    assert!(
        ten.len() < all.len() / 3,
        "about a tenth: {} of {}",
        ten.len(),
        all.len()
    );

    let (some, rep) = read("5MiB");
    let bytes = rep["bytes_read"].as_u64().unwrap();
    assert!(bytes >= 5 << 20 && some.len() < all.len(), "{rep}");
    let (_, rep) = check(&p, &["--read-data"]);
    assert_eq!(rep["packs_read"], all.len());

    for bad in ["0/3", "4/3", "1/0", "3", "x%", "0%", "150%", "12 parsecs", ""] {
        let o = p.run(&["check", "--read-data-subset", bad]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {err}");
        assert!(
            err.contains("invalid --read-data-subset") && err.lines().count() == 1,
            "{bad:?}: {err}"
        );
    }
}

/// Counts of a restore summary that a dry run must predict.
fn counts(summary: &Value) -> Vec<u64> {
    ["files", "dirs", "symlinks", "specials", "hardlinks", "bytes"]
        .iter()
        .map(|k| summary[k].as_u64().unwrap())
        .collect()
}

/// `restore ARGS --json` with `--ops`: exit code, summary, bytes downloaded.
fn restore(p: &Pbak, args: &[&str]) -> (i32, Value, u64, String) {
    let o = p.run(&[&["--no-cache", "--json", "--ops", "restore"], args].concat());
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let summary = serde_json::from_slice::<Value>(&o.stdout).map_or(Value::Null, |v| v["summary"].clone());
    let ops: Value = err.lines().rev().find_map(|l| serde_json::from_str(l).ok()).unwrap();
    let down = ops["backend"]["bytes_down"].as_u64().unwrap();
    (o.status.code().unwrap(), summary, down, err)
}

#[test]
fn restore_dry_run_counts_and_verify_reads_everything_writing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    make_tree(&src, 5);
    fs::write(src.join("random"), prng(9, 4 << 20)).unwrap();
    let p = Pbak::new(dir.path().join("repo"));
    p.init();
    backup(&p, &src);
    let target = dir.path().join("target");
    let t = target.to_str().unwrap();

    let (code, plan, down, err) = restore(&p, &["latest", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(plan["dry_run"], true);
    assert!(down < 1 << 20, "a plain dry run reads trees only: {down} bytes");
    let (code, verified, down, err) = restore(&p, &["latest", "--dry-run", "--verify", "--target", t]);
    assert_eq!(code, 0, "{err}");
    assert!(!target.exists(), "a dry run creates nothing");
    assert_eq!(counts(&verified), counts(&plan));
    assert_eq!(verified["verified_files"], plan["files"]);
    assert!(down > 4 << 20, "every blob was read: {down} bytes");
    let (code, real, _, err) = restore(&p, &["latest", "--target", t]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(counts(&real), counts(&plan), "the dry run predicts the restore");
    let text = p.ok(&["restore", "latest", "--dry-run", "--verify"]);
    assert!(text.contains("all intact; nothing written"), "{text}");
}

/// `scripts/damage-fixtures.sh blob-bit-flipped` with one bit flipped in the middle of
/// `dir/big.bin`'s first chunk.
fn flipped_fixture(root: &Path) -> (Pbak, PathBuf, String) {
    let src = root.join("src");
    fs::create_dir_all(src.join("dir")).unwrap();
    fs::write(src.join("dir/big.bin"), prng(1, 3 << 20)).unwrap();
    for i in 0..5 {
        fs::write(src.join(format!("small{i}")), format!("small file {i}\n")).unwrap();
    }
    let out = root.join("fixtures");
    let p = Pbak::new(out.join("blob-bit-flipped/repo"));
    let o = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/damage-fixtures.sh"))
        .args([out.to_str().unwrap(), "blob-bit-flipped"])
        .env("SRC", &src)
        .env("DAMAGE_FILE", src.join("dir/big.bin"))
        .env("PBAK", env!("CARGO_BIN_EXE_pbak"))
        .env("PBAK_PASSWORD", &p.password)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let damage = fs::read_to_string(out.join("blob-bit-flipped/DAMAGE")).unwrap();
    let victim = damage.split_whitespace().last().unwrap().to_string();
    (p, src, victim)
}

#[test]
fn a_flipped_bit_in_a_blob_is_found_by_reading_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let (p, src, victim) = flipped_fixture(dir.path());
    let snaps: Value = serde_json::from_str(&p.ok(&["snapshots", "--json"])).unwrap();
    let snap = snaps[0]["id"].as_str().unwrap()[..8].to_string();
    let (code, rep) = check(&p, &[]);
    assert_eq!(code, 0, "the structure is intact: {rep}");
    let (code, rep) = check(&p, &["--read-data"]);
    assert_eq!(code, 2, "{rep}");
    let errors = strings(&rep["errors"]);
    assert_eq!(errors.len(), 1, "{rep}");
    assert!(
        errors[0].contains(&format!("pack {victim} is damaged")),
        "{}",
        errors[0]
    );
    assert!(errors[0].contains(&format!("snapshot {snap}")), "{}", errors[0]);

    let target = dir.path().join("target");
    let (code, _, _, err) = restore(
        &p,
        &["latest", "--dry-run", "--verify", "--target", target.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{err}");
    let big = src.join("dir/big.bin");
    assert!(err.contains(&format!("{}: data damaged", big.display())), "{err}");
    assert!(
        err.contains("the data of 1 of 6 files") && err.contains("nothing was written"),
        "{err}"
    );
    assert!(!target.exists(), "a dry run creates nothing");
}
