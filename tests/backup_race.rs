//! Source files swapped while a backup reads them (issue 11, defect 2): a FIFO must not hang
//! the backup, a symlink to a secret or to `/dev/zero` must not be read. A second thread swaps
//! files for FIFOs and symlinks (atomic renames) while backups run under a timeout; every
//! snapshot is then restored and no regular file in it may hold anything but what the source
//! files held. The same with directories swapped for symlinks to a root-only directory: what
//! the backup lists and reads below a directory must come from that directory.
mod common;

use common::pbak::*;
use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

const FILES: usize = 100;

/// Run `c` and fail the test when it takes longer than `limit` (a hang must not block CI).
fn run_with_timeout(mut c: Command, limit: Duration) -> Output {
    let mut child = c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            child.kill().unwrap();
            let o = child.wait_with_output().unwrap();
            panic!(
                "pbak still running after {limit:?} (hung on a swapped-in file?):\n{}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Swap `src/f<i>` for a FIFO, a symlink to `secret` or a symlink to `/dev/zero` and back,
/// round after round, until `stop`.
fn swapper(src: &Path, stage: &Path, secret: &Path, stop: &AtomicBool, swaps: &AtomicUsize) {
    for i in 0..FILES {
        let odd = stage.join(format!("odd{i}"));
        match i % 3 {
            0 => rustix::fs::mknodat(rustix::fs::CWD, &odd, rustix::fs::FileType::Fifo, 0o644.into(), 0).unwrap(),
            1 => std::os::unix::fs::symlink(secret, &odd).unwrap(),
            _ => std::os::unix::fs::symlink("/dev/zero", &odd).unwrap(),
        }
    }
    while !stop.load(Relaxed) {
        for i in 0..FILES {
            let (f, reg, odd) = (
                src.join(format!("f{i}")),
                stage.join(format!("reg{i}")),
                stage.join(format!("odd{i}")),
            );
            fs::rename(&f, &reg).unwrap();
            fs::rename(&odd, &f).unwrap();
            std::thread::yield_now();
            fs::rename(&f, &odd).unwrap();
            fs::rename(&reg, &f).unwrap();
            swaps.fetch_add(1, Relaxed);
        }
    }
}

/// Every regular file below `root` (not following symlinks) holds `plain <n>` repeated.
fn assert_only_source_content(root: &Path) {
    for e in fs::read_dir(root).unwrap() {
        let e = e.unwrap();
        let md = fs::symlink_metadata(e.path()).unwrap();
        if md.is_dir() {
            assert_only_source_content(&e.path());
        } else if md.is_file() {
            let data = fs::read(e.path()).unwrap();
            let text = String::from_utf8_lossy(&data);
            assert!(
                !text.contains("SECRET"),
                "{} holds the symlink target's secret",
                e.path().display()
            );
            assert!(
                data.len() < 1 << 20 && text.starts_with("plain "),
                "{} holds what a swapped-in file gave ({} bytes)",
                e.path().display(),
                data.len()
            );
        }
    }
}

#[test]
fn files_swapped_for_fifos_and_symlinks_are_skipped_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let (src, stage) = (dir.path().join("src"), dir.path().join("stage"));
    fs::create_dir(&src).unwrap();
    fs::create_dir(&stage).unwrap();
    let secret = dir.path().join("secret");
    fs::write(&secret, b"SECRET of root").unwrap();
    sh(&format!("chmod 600 '{}'", secret.display()));
    for i in 0..FILES {
        fs::write(src.join(format!("f{i}")), format!("plain {i} ").repeat(200)).unwrap();
    }
    let p = Pbak::new(dir.path().join("repo"));
    p.init();
    let (stop, swaps) = (AtomicBool::new(false), AtomicUsize::new(0));
    let mut skipped = 0;
    std::thread::scope(|s| {
        s.spawn(|| swapper(&src, &stage, &secret, &stop, &swaps));
        // The window between lstat and open is short: go on until it was hit (or 30 runs).
        for n in 0..30 {
            if n >= 4 && skipped > 0 {
                break;
            }
            let err = backup_as_new_host(&p, &src, n);
            skipped += err.matches("changed while read").count();
        }
        stop.store(true, Relaxed);
    });
    eprintln!(
        "{} swaps, {skipped} files skipped as changed while read",
        swaps.load(Relaxed)
    );
    restore_each_and_check(&p, dir.path());
}

/// Back up `src` as host `h<n>` (a new host each time: no parent, so every file is opened
/// and read again); it must finish, with 0 or 3. Returns its stderr.
fn backup_as_new_host(p: &Pbak, src: &Path, n: usize) -> String {
    let host = format!("h{n}");
    let mut c = p.cmd(&["backup", "--host", &host, src.to_str().unwrap()]);
    c.env("PBAK_THREADS", "4");
    let o = run_with_timeout(c, Duration::from_secs(60));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(matches!(o.status.code(), Some(0 | 3)), "{}: {err}", o.status);
    err
}

/// Restore every snapshot under `dir` and check that it holds only what the source held;
/// returns how many there were.
fn restore_each_and_check(p: &Pbak, dir: &Path) -> usize {
    let ids = p.ok(&["snapshots", "--json"]);
    let snaps: serde_json::Value = serde_json::from_str(&ids).unwrap();
    for (n, s) in snaps.as_array().unwrap().iter().enumerate() {
        let target = dir.join(format!("restore-{n}"));
        let id = s["id"].as_str().unwrap();
        let o = p.run(&["restore", id, "--target", target.to_str().unwrap()]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_only_source_content(&target);
    }
    snaps.as_array().unwrap().len()
}

/// Swap `src/d<i>` for a symlink to `secret_dir` and back, round after round, until `stop`.
fn dir_swapper(src: &Path, stage: &Path, secret_dir: &Path, stop: &AtomicBool, swaps: &AtomicUsize) {
    while !stop.load(Relaxed) {
        for i in 0..DIRS {
            let (d, moved) = (src.join(format!("d{i}")), stage.join(format!("d{i}")));
            fs::rename(&d, &moved).unwrap();
            std::os::unix::fs::symlink(secret_dir, &d).unwrap();
            std::thread::yield_now();
            fs::remove_file(&d).unwrap();
            fs::rename(&moved, &d).unwrap();
            swaps.fetch_add(1, Relaxed);
        }
    }
}

const DIRS: usize = 20;

#[test]
fn directories_swapped_for_symlinks_do_not_redirect_the_walk() {
    let dir = tempfile::tempdir().unwrap();
    let (src, stage, secret_dir) = (
        dir.path().join("src"),
        dir.path().join("stage"),
        dir.path().join("secret"),
    );
    for d in [&src, &stage, &secret_dir] {
        fs::create_dir(d).unwrap();
    }
    for k in 0..20 {
        fs::write(secret_dir.join(format!("f{k}")), b"SECRET of root").unwrap();
    }
    sh(&format!("chmod -R go-rwx '{}'", secret_dir.display()));
    for i in 0..DIRS {
        let d = src.join(format!("d{i}"));
        fs::create_dir(&d).unwrap();
        for k in 0..20 {
            fs::write(d.join(format!("f{k}")), format!("plain {i} {k} ").repeat(50)).unwrap();
        }
    }
    let p = Pbak::new(dir.path().join("repo"));
    p.init();
    let (stop, swaps) = (AtomicBool::new(false), AtomicUsize::new(0));
    std::thread::scope(|s| {
        s.spawn(|| dir_swapper(&src, &stage, &secret_dir, &stop, &swaps));
        for n in 0..12 {
            backup_as_new_host(&p, &src, n);
        }
        stop.store(true, Relaxed);
    });
    eprintln!("{} directory swaps", swaps.load(Relaxed));
    assert_eq!(restore_each_and_check(&p, dir.path()), 12);
}
