//! A local repository's files: private modes whatever the umask (directories 0700, files
//! 0600), old world-readable repositories still work, and a write that fails (disk full)
//! leaves no temporary file behind.
mod common;

use common::pbak::*;
use std::fs;
use std::path::Path;
use std::process::{Command, Output};

/// `pbak` run under `umask 022` (the usual default that made repositories world-readable).
fn under_umask(p: &Pbak, args: &[&str]) -> Output {
    let mut c = Command::new("sh");
    c.arg("-c").arg("umask 022 && exec \"$0\" \"$@\"");
    c.arg(env!("CARGO_BIN_EXE_pbak")).arg("-r").arg(&p.repo).args(args);
    c.env_remove("PBAK_PASSWORD_FILE")
        .env_remove("PBAK_PASSWORD_COMMAND")
        .env("PBAK_PASSWORD", &p.password)
        .env("PBAK_CACHE_DIR", std::env::temp_dir().join("pbak-tests-cache"));
    c.output().unwrap()
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

fn source(dir: &Path) -> String {
    let src = dir.join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("a"), prng(1, 300_000)).unwrap();
    fs::write(src.join("sub/b"), b"bee").unwrap();
    src.to_str().unwrap().to_string()
}

#[test]
fn new_repository_is_private_under_umask_022() {
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path());
    let p = Pbak::new(dir.path().join("repo"));
    ok(under_umask(
        &p,
        &["init", "--kdf-memory-mib", "1", "--kdf-iterations", "1"],
    ));
    ok(under_umask(&p, &["backup", &src]));
    ok(under_umask(&p, &["forget", "--keep-last", "1"]));
    ok(under_umask(&p, &["prune", "--delete-after", "0s"]));
    let repo = p.repo.to_str().unwrap();
    let open = sh(&format!("find '{repo}' -perm /077"));
    assert_eq!(open, "", "group/other bits on: {open}");
    // Every kind of object is there (so the check above covers them).
    for d in ["keys", "data", "index", "snapshots", ".tmp"] {
        assert!(p.repo.join(d).is_dir(), "{d}");
    }
    assert_eq!(
        sh(&format!("stat -c %a '{repo}' '{repo}/config' '{repo}/keys'")),
        "700\n600\n700\n"
    );
    let files = sh(&format!(
        "find '{repo}' -type f ! -perm 600 ; find '{repo}' -type d ! -perm 700"
    ));
    assert_eq!(files, "");
}

#[test]
fn old_world_readable_repository_keeps_working_and_its_modes() {
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path());
    let p = Pbak::new(dir.path().join("repo"));
    p.init();
    p.ok(&["backup", &src]);
    let repo = p.repo.to_str().unwrap();
    sh(&format!("chmod -R go+rX '{repo}'"));
    ok(under_umask(&p, &["backup", &src]));
    let target = dir.path().join("t");
    p.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let back = target.join(src.trim_start_matches('/'));
    assert_eq!(fs::read(back.join("a")).unwrap(), prng(1, 300_000));
    assert_eq!(
        sh(&format!("stat -c %a '{repo}' '{repo}/config' '{repo}/keys'")),
        "755\n644\n755\n"
    );
    p.ok(&["check"]);
}

#[test]
fn disk_full_leaves_no_temporary_files_and_prune_removes_old_ones() {
    if !is_root() {
        eprintln!("skipping: mounting a tmpfs needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    fs::create_dir(&mnt).unwrap();
    let m = mnt.to_str().unwrap();
    sh(&format!("mount -t tmpfs -o size=1m tmpfs '{m}'"));
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("big"), prng(2, 3 << 20)).unwrap();
    let p = Pbak::new(mnt.join("repo"));
    p.init();
    let o = p.run(&["backup", src.to_str().unwrap()]);
    let leftover = sh(&format!("ls -A '{m}/repo/.tmp'"));
    let _ = sh(&format!("umount '{m}'"));
    assert!(!o.status.success(), "a 3 MiB backup into 1 MiB succeeded");
    assert_eq!(leftover, "", "temporary files left after ENOSPC");

    // A put's temporary file that an older pbak (or a kill) left: prune removes it once it is
    // older than the grace period, and leaves a younger one (a backup on another host may be
    // writing it); with a zero grace period (no one else writes) it removes every one.
    let p = Pbak::new(dir.path().join("repo"));
    p.init();
    let tmp = p.repo.join(".tmp");
    fs::write(tmp.join("0123abcd.deadbeef"), b"x").unwrap();
    fs::write(tmp.join("fresh.cafe"), b"x").unwrap();
    sh(&format!(
        "touch -d '2 hours ago' '{}'",
        tmp.join("0123abcd.deadbeef").display()
    ));
    p.ok(&["prune"]);
    assert!(tmp.join("0123abcd.deadbeef").exists(), "younger than the default 24h");
    p.ok(&["prune", "--delete-after", "1h"]);
    assert!(!tmp.join("0123abcd.deadbeef").exists());
    assert!(tmp.join("fresh.cafe").exists());
    p.ok(&["prune", "--delete-after", "0s"]);
    assert!(!tmp.join("fresh.cafe").exists());
}
