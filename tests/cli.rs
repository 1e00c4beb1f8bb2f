//! End-to-end tests of the `pbak` binary on real filesystems (a Btrfs loop device where the
//! test is about metadata fidelity), checked with independent tools: `find -printf`, `diff -r`,
//! `rsync --itemize-changes`, `getfattr`.
mod common;

use common::pbak::*;
use proptest::prelude::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn with_fs(test: &str, f: impl FnOnce(&Path)) {
    let Some(fs) = common::btrfs_or_skip(test) else { return };
    f(fs.path());
}

fn round_trip(base: &Path, seed: u64) {
    let src = base.join(format!("src-{seed}"));
    make_tree(&src, seed);
    let p = Pbak::new(base.join(format!("repo-{seed}")));
    p.init();
    let s = p.backup_json(&[src.to_str().unwrap()]);
    assert_eq!(s["partial"], false);
    let target = base.join(format!("restore-{seed}"));
    let out = p.ok(&["restore", "latest", "--target", target.to_str().unwrap(), "--verify"]);
    assert!(out.contains("all match"), "{out}");
    assert_same_tree(&src, &target.join(src.strip_prefix("/").unwrap()));
    // Sparse file restored with its holes: allocated size near its data, not its length.
    let sparse = target.join(src.strip_prefix("/").unwrap()).join("sparse");
    let blocks: u64 = sh(&format!("stat -c %b '{}'", sparse.display()))
        .trim()
        .parse()
        .unwrap();
    assert!(blocks * 512 < 4 << 20, "sparse file restored dense: {blocks} blocks");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3, failure_persistence: None, ..ProptestConfig::default() })]
    /// Any generated tree restores byte- and metadata-identical.
    #[test]
    fn round_trip_generated_trees(seed in 1u64..u64::MAX / 2) {
        with_fs("round_trip_generated_trees", |base| round_trip(base, seed));
    }
}

#[test]
fn second_backup_and_small_insert_add_almost_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    let data = prng(7, 40 << 20);
    fs::write(src.join("large"), &data).unwrap();
    fs::write(src.join("other"), prng(8, 3 << 20)).unwrap();
    let p = Pbak::new(dir.path().join("repo"));
    p.init();
    let first = p.backup_json(&[src.to_str().unwrap()]);
    assert!(first["bytes_added"].as_u64().unwrap() > 40 << 20);
    let second = p.backup_json(&[src.to_str().unwrap()]);
    assert_eq!(second["files_unmodified"], 2);
    assert_eq!(second["bytes_read"], 0);
    assert!(second["bytes_added"].as_u64().unwrap() < 4096, "{second}");
    // One byte inserted in the middle of 40 MiB: only the chunks around it are new.
    let mut edited = data.clone();
    edited.insert(20 << 20, b'!');
    fs::write(src.join("large"), &edited).unwrap();
    let third = p.backup_json(&[src.to_str().unwrap()]);
    assert_eq!(third["files_changed"], 1);
    let added = third["bytes_added"].as_u64().unwrap();
    assert!(added < 10 << 20, "1-byte insert added {added} bytes");
    let o = p.run(&["backup", "--parent", "ffffffff", src.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("no snapshot matches"));
}

#[test]
fn errors_are_one_line_and_leave_the_repository_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"data").unwrap();
    let p = Pbak::new(dir.path().join("repo"));

    let o = p.run(&["snapshots"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no repository") && err.lines().count() == 1, "{err}");
    assert!(!p.repo.exists(), "opening a missing repository must not create it");

    p.init();
    let before = sh(&format!(
        "cd '{}' && find . -type f | sort && cat config | md5sum",
        p.repo.display()
    ));
    let o = p.run(&["init"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));

    let wrong = Pbak {
        repo: p.repo.clone(),
        password: "wrong".into(),
    };
    let o = wrong.run(&["backup", src.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("wrong password") && err.lines().count() == 1, "{err}");
    assert_eq!(
        before,
        sh(&format!(
            "cd '{}' && find . -type f | sort && cat config | md5sum",
            p.repo.display()
        ))
    );

    let notrepo = Pbak::new(src.clone());
    let err = String::from_utf8_lossy(&notrepo.run(&["snapshots"]).stderr).to_string();
    assert!(err.contains("not a pbak repository"), "{err}");

    let err = String::from_utf8_lossy(&p.run(&["ls", "deadbeef"]).stderr).to_string();
    assert!(err.contains("no snapshot matches"), "{err}");
    for _ in 0..17 {
        p.ok(&["backup", "--tag", "t", src.to_str().unwrap()]);
    }
    // 17 snapshots share at least one leading hex digit.
    let ids = p.ok(&["snapshots", "--json"]);
    let ids: Vec<String> = serde_json::from_str::<Vec<serde_json::Value>>(&ids)
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    let digit = (0..16)
        .map(|d| format!("{d:x}"))
        .find(|d| ids.iter().filter(|i| i.starts_with(d.as_str())).count() > 1)
        .unwrap();
    let o = p.run(&["ls", &digit]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("ambiguous"));

    // Password files readable by others are refused.
    let pwf = dir.path().join("pw");
    fs::write(&pwf, "correct horse\n").unwrap();
    sh(&format!("chmod 644 '{}'", pwf.display()));
    let mut c = p.cmd(&["snapshots"]);
    c.env_remove("PBAK_PASSWORD").arg("--password-file").arg(&pwf);
    let o = c.output().unwrap();
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("chmod 600"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    sh(&format!("chmod 600 '{}'", pwf.display()));
    let mut c = p.cmd(&["snapshots"]);
    c.env_remove("PBAK_PASSWORD").arg("--password-file").arg(&pwf);
    assert!(c.output().unwrap().status.success());
}

#[test]
fn corruption_is_detected_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), prng(1, 2 << 20)).unwrap();
    let p = Pbak::new(dir.path().join("repo"));
    p.init();
    p.ok(&["backup", src.to_str().unwrap()]);
    p.ok(&["check", "--read-data"]);
    // Flip one byte in the largest pack (the data pack).
    let pack = sh(&format!(
        "find '{}/data' -type f -printf '%s %p\\n' | sort -n | tail -1 | cut -d' ' -f2",
        p.repo.display()
    ));
    let pack = PathBuf::from(pack.trim());
    let mut bytes = fs::read(&pack).unwrap();
    bytes[1000] ^= 0x40;
    fs::write(&pack, &bytes).unwrap();
    let o = p.run(&["check", "--read-data"]);
    assert_eq!(o.status.code(), Some(2), "check exits 2 on errors");
    let name = pack.file_name().unwrap().to_str().unwrap();
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(name),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let target = dir.path().join("out");
    let o = p.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("corrupt"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // No wrong bytes were left as if restored: the file is not equal to the source.
    let restored = target.join(src.strip_prefix("/").unwrap()).join("f");
    assert!(fs::read(&restored)
        .map(|b| b != fs::read(src.join("f")).unwrap())
        .unwrap_or(true));

    // A truncated snapshot object is named too.
    let snap = sh(&format!("ls '{}/snapshots'", p.repo.display()));
    let snap_path = p.repo.join("snapshots").join(snap.trim());
    let b = fs::read(&snap_path).unwrap();
    fs::write(&snap_path, &b[..b.len() - 5]).unwrap();
    // (--no-cache: the cache filled by the backup would serve its good copy.)
    let err = String::from_utf8_lossy(&p.run(&["--no-cache", "snapshots"]).stderr).to_string();
    assert!(err.contains("corrupt") && err.contains(snap.trim()), "{err}");
    // And a damaged index.
    fs::write(&snap_path, &b).unwrap();
    let idx = sh(&format!("ls '{}/index' | head -1", p.repo.display()));
    let idx_path = p.repo.join("index").join(idx.trim());
    let mut b = fs::read(&idx_path).unwrap();
    b[40] ^= 1;
    fs::write(&idx_path, &b).unwrap();
    let err = String::from_utf8_lossy(&p.run(&["--no-cache", "ls", "latest"]).stderr).to_string();
    assert!(err.contains("corrupt") && err.contains("index/"), "{err}");
}

#[test]
fn cat_index_takes_an_index_id_and_checks_the_content_hash() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"data").unwrap();
    let p = Pbak::new(dir.path().join("repo"));
    p.init();
    p.ok(&["backup", src.to_str().unwrap()]);
    // Not an id: a clear one-line usage error, and nothing named after the argument is read.
    for bad in ["nothex", "../config", "abcd"] {
        let o = p.run(&["cat", "index", bad]);
        assert_eq!(o.status.code(), Some(1));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!("{bad:?} is not an index id")) && err.lines().count() == 1,
            "{err}"
        );
    }
    let idx = sh(&format!("ls '{}/index' | head -1", p.repo.display()));
    let idx = idx.trim();
    let packs: Vec<serde_json::Value> = serde_json::from_str(&p.ok(&["cat", "index", idx])).unwrap();
    assert!(!packs.is_empty(), "{packs:?}");
    for pack in &packs {
        let id = pack["pack"].as_str().unwrap();
        assert!(p.repo.join("data").join(&id[..2]).join(id).exists(), "{pack}");
        assert!(!pack["blobs"].as_array().unwrap().is_empty(), "{pack}");
    }
    // Read through the content-hash check: bytes that do not match the name are named corrupt.
    let path = p.repo.join("index").join(idx);
    let mut b = fs::read(&path).unwrap();
    b.extend_from_slice(b"garbage");
    fs::write(&path, &b).unwrap();
    let o = p.run(&["--no-cache", "cat", "index", idx]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("corrupt") && err.contains(&format!("index/{idx}")) && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
fn unreadable_file_gives_partial_snapshot_and_exit_3() {
    if !is_root() {
        panic!("!!! this test needs root to run pbak as `nobody` against a file only root can read");
    }
    let dir = tempfile::tempdir().unwrap();
    sh(&format!("chmod 755 '{}'", dir.path().display()));
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("ok"), b"fine").unwrap();
    fs::write(src.join("secret"), b"no").unwrap();
    sh(&format!("chmod 600 '{0}/secret' && chmod 777 '{0}'", src.display()));
    let repo = dir.path().join("repo");
    fs::create_dir(&repo).unwrap();
    sh(&format!("chmod 777 '{}'", repo.display()));
    let p = Pbak::new(repo.clone());
    let as_nobody = |args: &[&str]| {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            env!("CARGO_BIN_EXE_pbak"),
            "-r",
        ])
        .arg(&repo)
        .args(args);
        c.env("PBAK_PASSWORD", &p.password);
        c.output().unwrap()
    };
    assert!(as_nobody(&["init", "--kdf-memory-mib", "1", "--kdf-iterations", "1"])
        .status
        .success());
    let o = as_nobody(&["backup", src.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("secret"));
    let list = p.ok(&["ls", "latest"]);
    assert!(list.contains("/ok") && !list.contains("/secret"), "{list}");
    assert!(p.ok(&["snapshots"]).contains("(partial)"));
}

#[test]
fn restore_never_writes_through_symlinks_outside_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"payload").unwrap();
    let p = Pbak::new(dir.path().join("repo"));
    p.init();
    p.ok(&["backup", src.to_str().unwrap()]);
    // The target already holds a symlink where the restore needs a directory.
    let outside = dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let target = dir.path().join("target");
    fs::create_dir(&target).unwrap();
    let first = src.strip_prefix("/").unwrap().components().next().unwrap();
    std::os::unix::fs::symlink(&outside, target.join(first)).unwrap();
    // `never` keeps the symlink (a non-empty target needs --overwrite; tests/restore_overwrite.rs
    // covers `always`, which replaces it).
    let t = target.to_str().unwrap();
    let o = p.run(&["restore", "latest", "--target", t, "--overwrite", "never"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a directory"));
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "something was written outside the target"
    );
}

#[test]
fn subpath_include_exclude_and_key_management() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("a/b")).unwrap();
    fs::write(src.join("a/b/keep.txt"), b"k").unwrap();
    fs::write(src.join("a/b/drop.log"), b"d").unwrap();
    fs::write(src.join("top"), b"t").unwrap();
    let p = Pbak::new(dir.path().join("repo"));
    p.init();
    p.ok(&["backup", "--exclude", "*.tmp", src.to_str().unwrap()]);
    let srcs = src.to_str().unwrap();
    let t1 = dir.path().join("t1");
    p.ok(&[
        "restore",
        &format!("latest:{srcs}/a"),
        "--target",
        t1.to_str().unwrap(),
        "--exclude",
        "*.log",
    ]);
    assert!(t1.join("b/keep.txt").exists() && !t1.join("b/drop.log").exists() && !t1.join("top").exists());
    let t2 = dir.path().join("t2");
    p.ok(&[
        "restore",
        "latest",
        "--target",
        t2.to_str().unwrap(),
        "--include",
        "*.log",
    ]);
    let rel = src.strip_prefix("/").unwrap();
    assert!(t2.join(rel).join("a/b/drop.log").exists() && !t2.join(rel).join("top").exists());

    // key add / list / passwd / remove
    let newpw = dir.path().join("newpw");
    fs::write(&newpw, "second").unwrap();
    sh(&format!("chmod 600 '{}'", newpw.display()));
    let mut c = p.cmd(&["key", "add", "--kdf-memory-mib", "1", "--kdf-iterations", "1"]);
    c.env("PBAK_NEW_PASSWORD_FILE", &newpw);
    assert!(c.output().unwrap().status.success());
    let second = Pbak {
        repo: p.repo.clone(),
        password: "second".into(),
    };
    second.ok(&["snapshots"]);
    let keys: Vec<serde_json::Value> = serde_json::from_str(&p.ok(&["key", "list", "--json"])).unwrap();
    assert_eq!(keys.len(), 2);
    let mine = keys.iter().find(|k| k["current"] == true).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let o = p.run(&["key", "remove", &mine[..8]]);
    assert_eq!(o.status.code(), Some(1), "removing the key in use must be refused");
    second.ok(&["key", "remove", &mine[..8]]);
    assert_eq!(p.run(&["snapshots"]).status.code(), Some(1));
    second.ok(&["snapshots"]);
}

#[test]
fn exclude_options_and_dry_run() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("cache")).unwrap();
    fs::create_dir_all(src.join("keep")).unwrap();
    fs::write(
        src.join("cache/CACHEDIR.TAG"),
        b"Signature: 8a477f597d28d172789f06886806bc55\n",
    )
    .unwrap();
    fs::write(src.join("cache/blob"), b"cached").unwrap();
    fs::write(src.join("keep/a.txt"), b"a").unwrap();
    fs::write(src.join("keep/b.o"), b"b").unwrap();
    fs::write(src.join("keep/c.swp"), b"c").unwrap();
    let ex = dir.path().join("excludes");
    fs::write(&ex, "# editor files\n*.swp\n").unwrap();
    let p = Pbak::new(dir.path().join("repo"));
    p.init();
    let s = src.to_str().unwrap();
    let dry = p.backup_json(&["--dry-run", s]);
    assert_eq!(dry["dry_run"], true);
    assert!(
        p.ok(&["snapshots", "--json"]).trim() == "[]",
        "a dry run stores no snapshot"
    );
    assert_eq!(fs::read_dir(p.repo.join("index")).map(|d| d.count()).unwrap_or(0), 0);
    p.ok(&[
        "backup",
        "--exclude-caches",
        "--exclude",
        "*.o",
        "--exclude-file",
        ex.to_str().unwrap(),
        s,
    ]);
    let list = p.ok(&["ls", "latest"]);
    assert!(list.contains("keep/a.txt"), "{list}");
    for gone in ["cache", "b.o", "c.swp"] {
        assert!(!list.contains(gone), "{gone} should be excluded:\n{list}");
    }
    // --one-file-system keeps a mount point as an empty directory (needs root for a tmpfs).
    if is_root() {
        let mp = src.join("mnt");
        fs::create_dir(&mp).unwrap();
        sh(&format!(
            "mount -t tmpfs none '{}' && echo x > '{}/inside'",
            mp.display(),
            mp.display()
        ));
        let o = p.run(&["backup", "-x", s]);
        sh(&format!("umount '{}'", mp.display()));
        assert!(o.status.success());
        let list = p.ok(&["ls", "latest"]);
        assert!(list.contains("/mnt") && !list.contains("inside"), "{list}");
    }
}
