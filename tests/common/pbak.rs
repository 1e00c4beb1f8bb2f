//! Driving the `pbak` binary and comparing trees with independent tools.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A repository plus the environment to drive the binary against it.
pub struct Pbak {
    pub repo: PathBuf,
    pub password: String,
}

impl Pbak {
    pub fn new(repo: PathBuf) -> Pbak {
        Pbak {
            repo,
            password: "correct horse".into(),
        }
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        // PBAK_TEST_BIN runs a test against another build (an older one, to show that the
        // test catches what a fix closed).
        let bin = std::env::var_os("PBAK_TEST_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_pbak").into());
        let mut c = Command::new(bin);
        c.arg("-r").arg(&self.repo).args(args);
        c.env_remove("PBAK_PASSWORD_FILE")
            .env_remove("PBAK_PASSWORD_COMMAND")
            .env("PBAK_PASSWORD", &self.password)
            // Keep the tests' metadata caches out of the user's ~/.cache.
            .env("PBAK_CACHE_DIR", std::env::temp_dir().join("pbak-tests-cache"));
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run pbak")
    }

    /// Run and require exit 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "pbak {args:?} failed ({}):\n{}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    pub fn init(&self) {
        self.ok(&["init", "--kdf-memory-mib", "1", "--kdf-iterations", "1"]);
    }

    /// `init` with packs of `mib` MiB (more, smaller packs).
    pub fn init_pack_mib(&self, mib: u32) {
        let mib = mib.to_string();
        self.ok(&[
            "init",
            "--kdf-memory-mib",
            "1",
            "--kdf-iterations",
            "1",
            "--pack-size-mib",
            &mib,
        ]);
    }

    pub fn backup_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["backup", "--json"];
        a.extend_from_slice(args);
        serde_json::from_str(self.ok(&a).trim()).unwrap()
    }
    /// Back up `path` (no other flags); the new snapshot's full id.
    pub fn backup_id(&self, path: &Path) -> String {
        let v = self.backup_json(&[path.to_str().unwrap()]);
        v["snapshot_id"].as_str().unwrap().to_string()
    }
}

pub fn sh(cmd: &str) -> String {
    let o = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        o.status.success(),
        "`{cmd}` failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn is_root() -> bool {
    super::effective_uid() == Some(0)
}

/// Deterministic pseudo-random bytes.
pub fn prng(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Every file kind and metadata item pbak promises to keep, driven by `seed`.
pub fn make_tree(root: &Path, seed: u64) {
    let r = |k: u64| prng(seed ^ k, 8).iter().fold(0u64, |a, b| a * 256 + *b as u64);
    fs::create_dir_all(root.join("dir/empty_dir")).unwrap();
    fs::create_dir_all(root.join("dir/sub")).unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    fs::write(root.join("small.txt"), format!("hello {seed}\n")).unwrap();
    let big = (r(1) % (9 << 20)) as usize + 1;
    fs::write(root.join("dir/big.bin"), prng(seed, big)).unwrap();
    let mut text = Vec::new();
    for i in 0..(r(2) % 20000) {
        text.extend_from_slice(format!("line {i} of a compressible file {}\n", i % 7).as_bytes());
    }
    fs::write(root.join("dir/sub/text"), &text).unwrap();
    // Sparse: a hole, data, a hole at the end.
    let f = fs::File::create(root.join("sparse")).unwrap();
    f.set_len(64 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &prng(seed + 1, 300_000), 20 << 20).unwrap();
    drop(f);
    // Names that are not UTF-8, and a long path.
    fs::write(root.join(OsStr::from_bytes(b"latin1-\xe9t\xe9")), b"x").unwrap();
    let mut long = root.join("long");
    for i in 0..12 {
        long.push(format!("{i:02}-{}", "d".repeat(200)));
    }
    fs::create_dir_all(&long).unwrap();
    fs::write(long.join("deep-file"), b"deep").unwrap();
    // Links and specials.
    std::os::unix::fs::symlink("small.txt", root.join("rel-link")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("abs-link")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", root.join("dangling")).unwrap();
    fs::hard_link(root.join("small.txt"), root.join("dir/sub/hardlink")).unwrap();
    sh(&format!("mkfifo '{}'", root.join("fifo").display()));
    // Modes including setuid and sticky.
    sh(&format!("chmod 4755 '{}'", root.join("small.txt").display()));
    sh(&format!("chmod 1777 '{}'", root.join("dir/empty_dir").display()));
    sh(&format!("chmod 0600 '{}'", root.join("empty").display()));
    // xattrs and an ACL.
    sh(&format!(
        "setfattr -n user.note -v 'seed {seed}' '{}'",
        root.join("dir/big.bin").display()
    ));
    sh(&format!(
        "setfattr -n user.bin -v 0x00ff10 '{}'",
        root.join("dir").display()
    ));
    sh(&format!(
        "setfacl -m u:1234:rw '{}'",
        root.join("dir/sub/text").display()
    ));
    if is_root() {
        sh(&format!("mknod '{}' c 1 3", root.join("null-dev").display()));
        sh(&format!("mknod '{}' b 7 200", root.join("blk-dev").display()));
        sh(&format!(
            "setfattr -n trusted.secret -v t '{}'",
            root.join("small.txt").display()
        ));
        sh(&format!("chown 1234:5678 '{}'", root.join("dir/sub/text").display()));
        sh(&format!("chown -h 42:43 '{}'", root.join("rel-link").display()));
        sh(&format!("chmod 4755 '{}'", root.join("small.txt").display())); // chown cleared nothing here, keep explicit
    }
    // Nanosecond times, last so nothing above disturbs them.
    sh(&format!(
        "find '{}' -exec touch -h -d '2021-03-04 05:06:07.{:09}' {{}} + && touch -h -a -d '2020-01-02 03:04:05.123456789' '{}'",
        root.display(),
        r(3) % 1_000_000_000,
        root.join("dir/big.bin").display()
    ));
    // The comparison helper must see what was set (it once saw nothing, and every tree
    // compared equal on xattrs).
    let x = xattr_dump(root);
    assert!(x.contains("user.note") && x.contains("system.posix_acl_access"), "{x}");
}

/// Path, type, mode, owner, size, mtime and atime (ns), link target and link count of every
/// entry, from find(1). Directory and symlink atimes are left out: listing a directory or
/// reading a link (which backup and the comparison itself must do) updates them.
pub fn listing(root: &Path) -> String {
    let out = sh(&format!(
        "cd '{}' && find . -printf '%p|%y|%m|%U:%G|%s|%T@|%l|%n|%D\\n' | sort",
        root.display()
    ));
    let files = sh(&format!(
        "cd '{}' && find . ! -type d ! -type l -printf '%p|%A@\\n' | sort",
        root.display()
    ));
    // Device id (%D) differs between filesystems; keep it only to check hardlink sets.
    let out: String = out
        .lines()
        .map(|l| l.rsplit_once('|').unwrap().0.to_string() + "\n")
        .collect();
    out + &files
}

pub fn xattr_dump(root: &Path) -> String {
    sh(&format!(
        "cd '{}' && getfattr -R -h -d -m - . | sort || true",
        root.display()
    ))
}

/// `diff -r` of two trees, leaving the special files to find and rsync.
pub const DIFF_ARGS: [&str; 8] = [
    "-r",
    "--no-dereference",
    "-x",
    "fifo",
    "-x",
    "null-dev",
    "-x",
    "blk-dev",
];

pub fn assert_same_tree(src: &Path, dst: &Path) {
    // Metadata first: reading file contents (diff, rsync) would update atimes.
    let (a, b) = (listing(src), listing(dst));
    let diff: Vec<String> = a
        .lines()
        .zip(b.lines())
        .filter(|(x, y)| x != y)
        .take(5)
        .map(|(x, y)| format!("source:   {x}\nrestored: {y}"))
        .collect();
    assert!(
        diff.is_empty() && a.lines().count() == b.lines().count(),
        "find listings differ:\n{}",
        diff.join("\n")
    );
    assert_eq!(xattr_dump(src), xattr_dump(dst), "xattrs/ACLs differ");
    let rs = sh(&format!(
        "rsync -n -a -c -H -A -X --numeric-ids --open-noatime -i --delete '{}/' '{}/'",
        src.display(),
        dst.display()
    ));
    assert!(rs.trim().is_empty(), "rsync sees differences:\n{rs}");
    let d = Command::new("diff").args(DIFF_ARGS).arg(src).arg(dst).output().unwrap();
    assert!(d.status.success(), "diff -r: {}", String::from_utf8_lossy(&d.stdout));
}

/// A small seeded generator (xorshift) for randomised tests that name their seed.
pub struct Rng(pub u64);

impl Rng {
    /// A generator for `seed` (any value, zero included).
    pub fn seeded(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> Option<&'a T> {
        (!v.is_empty()).then(|| &v[self.below(v.len())])
    }
}

/// Every snapshot in the repository that `written` has a copy for (by snapshot id) restores
/// identical to that copy (`diff -r`); `scratch` is a directory to restore into.
pub fn written_snapshots_restore(
    p: &Pbak,
    scratch: &Path,
    seed: u64,
    written: &std::collections::HashMap<String, PathBuf>,
) {
    let snaps: serde_json::Value = serde_json::from_str(&p.ok(&["snapshots", "--json"])).unwrap();
    for s in snaps.as_array().unwrap() {
        let id = s["id"].as_str().unwrap();
        let Some(copy) = written.get(id) else { continue };
        let out = scratch.join("out");
        let _ = fs::remove_dir_all(&out);
        p.ok(&["restore", id, "--target", out.to_str().unwrap()]);
        let src = PathBuf::from(s["paths"][0].as_str().unwrap());
        let d = sh(&format!(
            "diff -r '{}' '{}' && echo SAME",
            copy.display(),
            out.join(src.strip_prefix("/").unwrap()).display()
        ));
        assert_eq!(
            d.trim(),
            "SAME",
            "seed {seed}: snapshot {id} does not restore what it backed up"
        );
    }
}
