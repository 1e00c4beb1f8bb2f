//! `pbak mount` (issue 15), mounted for real: the binary runs in the background, the mounted
//! snapshots are compared with their sources by find(1), stat(1), getfattr(1), diff(1),
//! cmp(1) and dd(1), and SIGTERM must unmount and exit 0. Needs /dev/fuse and root (or
//! fusermount3); without them each test says why and returns, except in CI.
mod common;

use common::pbak::*;
use pbak::backends::{Backend, Location};
use pbak::repo::Repository;
use std::fs;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether this machine can mount FUSE filesystems; if not, why (printed by the caller).
fn fuse_or_skip(test: &str) -> bool {
    let why = if !Path::new("/dev/fuse").exists() {
        Some("/dev/fuse is missing (modprobe fuse)")
    } else if !is_root() && Command::new("fusermount3").arg("-V").output().is_err() {
        Some("not root and no fusermount3 (apt-get install fuse3)")
    } else {
        None
    };
    match why {
        None => true,
        Some(why) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{test}: CI must be able to mount: {why}"
            );
            let msg = format!("!!! SKIPPING {test}: cannot mount FUSE here: {why}\n");
            let _ = std::io::Write::write_all(&mut std::io::stderr(), msg.as_bytes());
            false
        }
    }
}

fn is_mountpoint(p: &Path) -> bool {
    Command::new("mountpoint").arg("-q").arg(p).status().unwrap().success()
}

/// A running `pbak mount`; [`Mount::stop`] unmounts it with SIGTERM. Dropped without a stop
/// (a failed test), it kills the process and detaches the mount.
struct Mount {
    child: Option<Child>,
    mnt: PathBuf,
    log: PathBuf,
}

impl Mount {
    fn start(p: &Pbak, mnt: &Path, extra: &[&str]) -> Mount {
        fs::create_dir_all(mnt).unwrap();
        let log = mnt.with_extension("log");
        let mut args = vec!["mount", mnt.to_str().unwrap()];
        args.extend_from_slice(extra);
        let child = p
            .cmd(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut m = Mount {
            child: Some(child),
            mnt: mnt.to_path_buf(),
            log,
        };
        let start = Instant::now();
        while !mnt.join("snapshots").is_dir() {
            if let Some(st) = m.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("pbak mount exited early ({st}): {}", m.stderr());
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "not mounted after 60 s: {}",
                m.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        m
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// SIGTERM; the process must exit 0 and leave no mount behind.
    fn stop(mut self) {
        let mut child = self.child.take().unwrap();
        sh(&format!("kill -TERM {}", child.id()));
        let status = wait_exit(&mut child, "SIGTERM");
        assert!(status.success(), "pbak mount exited with {status}: {}", self.stderr());
        assert!(!is_mountpoint(&self.mnt), "{} is still mounted", self.mnt.display());
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
    }
}

/// What the mount must show of each entry, by find(1): type, mode, owner, mtime, ctime, link
/// target and count, the size of everything but directories (whose sizes are not stored),
/// and the atime of files and devices (reading a directory or link updates its own).
fn view(root: &Path) -> String {
    sh(&format!(
        "cd '{}' && find . -printf '%p|%y|%m|%U:%G|%T@|%C@|%l|%n\\n' | sort && \
         find . ! -type d -printf '%p|%s\\n' | sort && \
         find . ! -type d ! -type l -printf '%p|%A@\\n' | sort && \
         find . \\( -type c -o -type b \\) -exec stat -c '%n %F %t:%T' {{}} + | sort",
        root.display()
    ))
}

fn backed_up(p: &Pbak, dir: &Path, seed: u64) -> (PathBuf, String) {
    let src = dir.join("src");
    make_tree(&src, seed);
    p.init();
    p.backup_id(&src);
    let rel = src.to_str().unwrap().trim_start_matches('/').to_string();
    (src, rel)
}

#[test]
fn the_latest_snapshot_reads_back_as_its_source() {
    if !fuse_or_skip("the_latest_snapshot_reads_back_as_its_source") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = Pbak::new(dir.path().join("repo"));
    let (src, rel) = backed_up(&p, dir.path(), 21);
    let m = Mount::start(&p, &dir.path().join("mnt"), &[]);
    let got = m.path(&format!("snapshots/latest/{rel}"));

    // Metadata first: find, stat, getfattr (user, trusted and ACL attributes).
    assert_eq!(view(&src), view(&got), "find listings differ");
    // (Not common's `xattr_dump`: its `--absolute-names=no` is refused by getfattr, so it
    // compares two empty strings.)
    let xattrs = |r: &Path| {
        let out = sh(&format!("cd '{}' && getfattr -R -h -d -m - -e hex .", r.display()));
        let mut files: Vec<&str> = out.split("\n\n").collect();
        files.sort();
        files.join("\n\n")
    };
    let want = xattrs(&src);
    assert!(
        want.contains("trusted.secret") || !is_root(),
        "the source has no trusted xattr: {want}"
    );
    assert!(
        want.contains("system.posix_acl_access") && want.contains("user.bin"),
        "{want}"
    );
    assert_eq!(want, xattrs(&got), "getfattr -R -d -m - differs");
    let user_attrs = |r: &Path| sh(&format!("cd '{}' && getfattr -d dir/big.bin", r.display()));
    assert!(user_attrs(&got).contains("user.note=\"seed 21\""));
    // Hard links are one inode; symlinks, fifo and devices are what they were.
    let stat = |r: &Path, f: &str| sh(&format!("cd '{}' && stat -c '%F|%h|%N|%s' {f}", r.display()));
    let inode = |f: &str| sh(&format!("stat -c %i '{}'", got.join(f).display()));
    assert_eq!(inode("small.txt"), inode("dir/sub/hardlink"));
    assert_ne!(inode("small.txt"), inode("empty"));
    for f in [
        "small.txt",
        "dir/sub/hardlink",
        "rel-link",
        "abs-link",
        "dangling",
        "fifo",
    ] {
        assert_eq!(stat(&src, f), stat(&got, f), "{f}");
    }
    // A sparse file: its size, fewer blocks than its size needs, and zeros in its holes.
    let blocks: u64 = sh(&format!("stat -c %b '{}'", got.join("sparse").display()))
        .trim()
        .parse()
        .unwrap();
    assert!(blocks < (64 << 20) / 512 / 10, "sparse file shows {blocks} blocks");
    sh(&format!(
        "cmp '{}' '{}'",
        src.join("sparse").display(),
        got.join("sparse").display()
    ));

    // Contents, by diff -r (specials excluded: diff cannot compare them).
    let d = Command::new("diff")
        .args(DIFF_ARGS)
        .arg(&src)
        .arg(&got)
        .output()
        .unwrap();
    assert!(d.status.success(), "diff -r: {}", String::from_utf8_lossy(&d.stdout));

    // Read-only, whatever the modes say.
    assert!(fs::write(got.join("new"), b"x").is_err());
    assert!(fs::OpenOptions::new().write(true).open(got.join("small.txt")).is_err());
    m.stop();
}

#[test]
fn a_large_file_reads_right_at_random_offsets() {
    if !fuse_or_skip("a_large_file_reads_right_at_random_offsets") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    let data = prng(7, 64 << 20);
    fs::write(src.join("big"), &data).unwrap();
    let p = Pbak::new(dir.path().join("repo"));
    p.init();
    p.backup_id(&src);
    // A small blob cache, so that reads evict and fetch again.
    let m = Mount::start(&p, &dir.path().join("mnt"), &["--cache-mib", "8"]);
    let rel = src.to_str().unwrap().trim_start_matches('/');
    let got = m.path(&format!("snapshots/latest/{rel}/big"));
    assert_eq!(fs::metadata(&got).unwrap().len(), data.len() as u64);

    let mut rng = Rng::seeded(99);
    // dd(1) at random places, against dd of the source.
    for _ in 0..16 {
        let off = rng.below(data.len());
        let len = 1 + rng.below(3 << 20);
        let dd = |f: &Path| {
            let o = Command::new("dd")
                .arg(format!("if={}", f.display()))
                .args(["iflag=skip_bytes,count_bytes", "bs=1M", "status=none"])
                .arg(format!("skip={off}"))
                .arg(format!("count={len}"))
                .output()
                .unwrap();
            assert!(o.status.success());
            o.stdout
        };
        let want = dd(&src.join("big"));
        assert_eq!(want.len(), len.min(data.len() - off));
        assert!(dd(&got) == want, "dd at {off}+{len} differs");
    }
    // pread(2) from two threads at once, many small reads across chunk boundaries.
    let f = fs::File::open(&got).unwrap();
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let (f, data) = (&f, &data);
            s.spawn(move || {
                let mut rng = Rng::seeded(t + 1);
                for _ in 0..200 {
                    let off = rng.below(data.len() + 100);
                    let mut buf = vec![0u8; 1 + rng.below(300_000)];
                    let n = f.read_at(&mut buf, off as u64).unwrap();
                    let want = &data[off.min(data.len())..(off + buf.len()).min(data.len())];
                    assert!(&buf[..n] == want, "pread at {off} of {} bytes differs", buf.len());
                }
            });
        }
    });
    // The whole file, by cmp (sequential: the prefetch path).
    sh(&format!("cmp '{}' '{}'", src.join("big").display(), got.display()));
    let mut whole = Vec::new();
    fs::File::open(&got).unwrap().read_to_end(&mut whole).unwrap();
    assert!(whole == data);
    m.stop();
}

fn ls(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn hosts_tags_ids_latest_and_a_new_snapshot_after_refresh() {
    if !fuse_or_skip("hosts_tags_ids_latest_and_a_new_snapshot_after_refresh") {
        return;
    }
    if Command::new("faketime").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "CI must have faketime");
        eprintln!("!!! SKIPPING: faketime is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    let p = Pbak::new(dir.path().join("repo"));
    p.init();
    // Two snapshots in the same second (2024-05-06T07:08:09Z), of two hosts, one tagged.
    let at = |host: &str, extra: &[&str], content: &str| {
        fs::write(src.join("f"), content).unwrap();
        let inner = p.cmd(&[]);
        let mut c = Command::new("faketime");
        // Wall clock at a tenth of its speed (the process has 10 s to record its time within
        // that second, even under load); the monotonic clock stays real.
        c.env("TZ", "UTC").env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        c.args(["-f", "@2024-05-06 07:08:09 x0.1"]);
        c.arg(inner.get_program()).args(inner.get_args());
        for (k, v) in inner.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c.args(["-q", "backup", "--host", host]).args(extra).arg(&src);
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    at("alpha", &["--tag", "daily"], "one");
    at("beta", &[], "two");
    let m = Mount::start(&p, &dir.path().join("mnt"), &["--refresh", "1"]);
    let t = "2024-05-06T07:08:09Z";
    assert_eq!(ls(&m.mnt), ["hosts", "ids", "snapshots", "tags"]);
    assert_eq!(
        ls(&m.path("snapshots")),
        [t.to_string(), format!("{t}-1"), "latest".into()]
    );
    assert_eq!(ls(&m.path("hosts")), ["alpha", "beta"]);
    assert_eq!(ls(&m.path("hosts/alpha")), [t, "latest"]);
    assert_eq!(ls(&m.path("hosts/beta")), [t, "latest"]);
    assert_eq!(ls(&m.path("tags")), ["daily"]);
    assert_eq!(ls(&m.path("tags/daily")), [t]);
    let rel = src.to_str().unwrap().trim_start_matches('/');
    let read = |dir: &str| fs::read_to_string(m.path(&format!("{dir}/{rel}/f"))).unwrap();
    assert_eq!(read(&format!("hosts/alpha/{t}")), "one");
    assert_eq!(read(&format!("hosts/beta/{t}")), "two");
    assert_eq!(read(&format!("tags/daily/{t}")), "one");
    // The shared second: one name each, in the listing order (time, then id).
    let both = [read(&format!("snapshots/{t}")), read(&format!("snapshots/{t}-1"))];
    assert!(both.contains(&"one".to_string()) && both.contains(&"two".to_string()));
    assert_eq!(
        fs::read_link(m.path("snapshots/latest")).unwrap(),
        PathBuf::from(format!("{t}-1"))
    );
    assert_eq!(fs::read_link(m.path("hosts/beta/latest")).unwrap(), PathBuf::from(t));
    // ids/: the first 8 hex digits of each id, as `pbak snapshots` lists them.
    let snaps: serde_json::Value = serde_json::from_str(&p.ok(&["snapshots", "--json"])).unwrap();
    let mut short: Vec<String> = snaps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap()[..8].to_string())
        .collect();
    short.sort();
    assert_eq!(ls(&m.path("ids")), short);
    for (s, h) in snaps.as_array().unwrap().iter().map(|s| (&s["id"], &s["host"])) {
        let want = if h == "alpha" { "one" } else { "two" };
        assert_eq!(read(&format!("ids/{}", &s.as_str().unwrap()[..8])), want);
    }

    // A snapshot made while mounted shows after the refresh interval, with its new data.
    fs::write(src.join("f"), "three, with data the mount's index has not seen").unwrap();
    p.ok(&["-q", "backup", "--host", "alpha", src.to_str().unwrap()]);
    std::thread::sleep(Duration::from_millis(1300));
    let names = ls(&m.path("snapshots"));
    assert_eq!(names.len(), 4, "{names:?}");
    let newest = fs::read_link(m.path("snapshots/latest")).unwrap();
    assert_eq!(newest, PathBuf::from(&names[2]));
    assert_eq!(
        fs::read_link(m.path("hosts/alpha/latest")).unwrap(),
        newest,
        "hosts/alpha/latest"
    );
    assert_eq!(
        read("snapshots/latest"),
        "three, with data the mount's index has not seen"
    );
    assert_eq!(ls(&m.path("hosts/alpha")).len(), 3);

    // A second mount on the same place is refused in one line.
    let busy = p.run(&["mount", m.mnt.to_str().unwrap()]);
    assert_eq!(busy.status.code(), Some(1));
    let err = String::from_utf8_lossy(&busy.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("busy"), "{err}");
    m.stop();
}

#[test]
fn an_unmount_from_outside_ends_pbak_mount_with_exit_0() {
    if !fuse_or_skip("an_unmount_from_outside_ends_pbak_mount_with_exit_0") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = Pbak::new(dir.path().join("repo"));
    p.init();
    let mut m = Mount::start(&p, &dir.path().join("mnt"), &[]);
    let tool = if is_root() { "umount" } else { "fusermount3 -u" };
    sh(&format!("{tool} '{}'", m.mnt.display()));
    let mut child = m.child.take().unwrap();
    let status = wait_exit(&mut child, "umount");
    assert!(status.success(), "exit {status}: {}", m.stderr());
    assert!(!is_mountpoint(&m.mnt));
}

#[test]
fn a_missing_mountpoint_is_one_line_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let p = Pbak::new(dir.path().join("repo"));
    p.init();
    let missing = dir.path().join("no/such/dir");
    let o = p.run(&["mount", missing.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("does not exist") && err.contains("mkdir"), "{err}");
}

#[test]
fn three_hundred_snapshots_list_at_once() {
    if !fuse_or_skip("three_hundred_snapshots_list_at_once") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), "tiny").unwrap();
    let p = Pbak::new(dir.path().join("repo"));
    p.init();
    let id = p.backup_id(&src);
    // 299 more snapshot objects, an hour apart, written through the library (a backup
    // each would take minutes).
    let loc = Location::parse(p.repo.to_str().unwrap()).unwrap();
    let repo = Repository::open(Backend::open(&loc, false).unwrap(), p.password.as_bytes()).unwrap();
    let (_, first) = repo.find_snapshot(&id).unwrap();
    for i in 1..300i64 {
        let mut s = first.clone();
        s.time.sec -= i * 3600;
        repo.save_snapshot(&s).unwrap();
    }
    // No local cache: every snapshot object is read from the repository at mount time.
    let start = Instant::now();
    let m = Mount::start(&p, &dir.path().join("mnt"), &["--no-cache"]);
    let mounted = start.elapsed();
    let start = Instant::now();
    let names = ls(&m.path("snapshots"));
    let listed = start.elapsed();
    eprintln!("300 snapshots: mounted (snapshot list read) in {mounted:?}, first `ls snapshots/` in {listed:?}");
    assert_eq!(names.len(), 301);
    assert!(listed < Duration::from_secs(10), "listing took {listed:?}");
    let rel = src.to_str().unwrap().trim_start_matches('/');
    let oldest = &names[0];
    assert_eq!(
        fs::read_to_string(m.path(&format!("snapshots/{oldest}/{rel}/f"))).unwrap(),
        "tiny"
    );
    m.stop();
}

/// The exit status of `child`, which must end within 30 s of `after`.
fn wait_exit(child: &mut std::process::Child, after: &str) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "still running 30 s after {after}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
