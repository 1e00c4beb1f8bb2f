//! Restore as root into a directory a local user owns, while that user (uid 1000, a child
//! process: this test binary run again as `attacker`) keeps swapping restored directories for
//! symlinks to a root-only directory and files for symlinks to a root-only secret. Whatever
//! restore's exit status, nothing outside the target may change (issue 11, defect 1).
mod common;

use common::pbak::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const USER: u32 = 1000;
const RUNS: u64 = 40;

/// Every name below `p` with its kind, mode, owner, size, mtime and contents (not following
/// symlinks), as a comparable string.
fn fingerprint(p: &Path) -> String {
    let mut out = String::new();
    let mut stack = vec![p.to_path_buf()];
    while let Some(x) = stack.pop() {
        let md = fs::symlink_metadata(&x).unwrap();
        out += &format!(
            "{} {:o} {}:{} {} {}.{}",
            x.display(),
            md.mode(),
            md.uid(),
            md.gid(),
            md.len(),
            md.mtime(),
            md.mtime_nsec()
        );
        if md.is_file() {
            out += &format!(" {:?}", fs::read(&x).unwrap());
        } else if md.is_dir() {
            let mut names: Vec<_> = fs::read_dir(&x).unwrap().map(|e| e.unwrap().path()).collect();
            names.sort();
            stack.extend(names);
        }
        out.push('\n');
    }
    out
}

/// Directories and files, nested three deep, owned by the user (so that restored
/// directories become the user's once their metadata is applied).
fn make_source(src: &Path) {
    for a in 0..4 {
        for b in 0..3 {
            let d = src.join(format!("d{a}/e{b}/f"));
            fs::create_dir_all(&d).unwrap();
            for i in 0..6 {
                fs::write(d.join(format!("file{i}")), prng(a * 100 + b * 10 + i, 3000)).unwrap();
                fs::write(src.join(format!("d{a}/top{b}{i}")), format!("{a}{b}{i}")).unwrap();
            }
            std::os::unix::fs::symlink("file0", d.join("link")).unwrap();
        }
        fs::write(src.join(format!("plain{a}")), b"plain").unwrap();
    }
    sh(&format!(
        "mkfifo '{}/fifo' && chown -R {USER}:{USER} '{}'",
        src.display(),
        src.display()
    ));
}

/// Run as the user: until `stop` exists, swap what is in `target` for symlinks to `rootdir`
/// (directories) and `secret` (everything else). The seed picks when: at once and without
/// pause (the create pass), after a delay (contents), or once restore starts handing entries
/// to the user (the metadata pass), and then only a few swaps, so the restore gets on.
fn attack(target: &Path, rootdir: &Path, secret: &Path, stop: &Path, seed: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let stopped = || stop.exists() || Instant::now() > deadline;
    match seed % 3 {
        0 => {}
        1 => std::thread::sleep(Duration::from_millis(seed * 7 % 80)),
        _ => {
            let users = || {
                fs::read_dir(target)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .any(|e| e.metadata().is_ok_and(|m| m.uid() == USER))
            };
            while !users() && !stopped() {}
        }
    }
    let max = if seed.is_multiple_of(3) { u64::MAX } else { 1 + seed % 4 };
    let mut rnd = prng(seed, 1 << 16).into_iter().cycle();
    let mut n = 0u64;
    while !stopped() && n < max {
        let mut stack = vec![target.to_path_buf()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = fs::read_dir(&d) else { continue };
            for e in rd.flatten() {
                let p = e.path();
                let Ok(md) = fs::symlink_metadata(&p) else { continue };
                let r = rnd.next().unwrap();
                if md.file_type().is_symlink() || n >= max {
                    continue;
                } else if md.is_dir() && r.is_multiple_of(2) {
                    stack.push(p);
                } else if !r.is_multiple_of(3) {
                    n += 1;
                    swap(&p, md.is_dir(), rootdir, secret, r);
                }
            }
        }
    }
}

fn swap(p: &Path, is_dir: bool, rootdir: &Path, secret: &Path, r: u8) {
    let aside = p.with_extension(format!("aside{r}"));
    if fs::rename(p, &aside).is_ok() {
        let _ = std::os::unix::fs::symlink(if is_dir { rootdir } else { secret }, p);
        // Sometimes put the original back, so later passes meet it again.
        if r.is_multiple_of(5) {
            let _ = fs::remove_file(p);
            let _ = fs::rename(&aside, p);
        }
    }
    // Refused by fs.protected_hardlinks; if it were allowed, restore must still not write to it.
    let _ = fs::hard_link(secret, p.with_extension("hl"));
}

/// The attacker's entry point: a no-op unless this binary was started as the attacker.
#[test]
fn attacker() {
    let Ok(args) = std::env::var("PBAK_RACE_ATTACK") else {
        return;
    };
    let a: Vec<&str> = args.split('\n').collect();
    let p = |i: usize| PathBuf::from(a[i]);
    attack(&p(0), &p(1), &p(2), &p(3), a[4].parse().unwrap());
}

fn spawn_attacker(target: &Path, rootdir: &Path, secret: &Path, stop: &Path, seed: u64) -> std::process::Child {
    let args = [target, rootdir, secret, stop]
        .map(|p| p.to_str().unwrap().to_string())
        .join("\n");
    let id = USER.to_string();
    Command::new("setpriv")
        .args(["--reuid", &id, "--regid", &id, "--clear-groups"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "attacker", "--nocapture", "--test-threads", "1"])
        .env("PBAK_RACE_ATTACK", format!("{args}\n{seed}"))
        .spawn()
        .unwrap()
}

#[test]
fn restore_into_a_users_directory_cannot_be_redirected() {
    if !is_root() {
        eprintln!("!!! SKIPPING: needs root (to restore as root next to a uid {USER} attacker)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    fs::set_permissions(base, fs::Permissions::from_mode(0o755)).unwrap();
    let src = base.join("src");
    make_source(&src);
    // Outside the target: a root-only directory and a root-only secret.
    let rootdir = base.join("rootdir");
    fs::create_dir(&rootdir).unwrap();
    fs::write(rootdir.join("inside"), b"root only").unwrap();
    fs::set_permissions(&rootdir, fs::Permissions::from_mode(0o700)).unwrap();
    let secret = base.join("secret");
    fs::write(&secret, b"the secret").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    let before = (fingerprint(&rootdir), fingerprint(&secret));

    let p = Pbak::new(base.join("repo"));
    p.init();
    p.ok(&["backup", src.to_str().unwrap()]);
    let spec = format!("latest:{}", src.display());
    let started = Instant::now();
    let (mut failed, mut swapped) = (0, 0);
    for seed in 1..=RUNS {
        let target = base.join(format!("target-{seed}"));
        fs::create_dir(&target).unwrap();
        sh(&format!("chown {USER}:{USER} '{}'", target.display()));
        let stop = base.join(format!("stop-{seed}"));
        let mut child = spawn_attacker(&target, &rootdir, &secret, &stop, seed);
        let o = p.run(&["restore", &spec, "--target", target.to_str().unwrap()]);
        fs::write(&stop, b"").unwrap();
        child.wait().unwrap();
        failed += usize::from(!o.status.success());
        if std::env::var("PBAK_RACE_VERBOSE").is_ok() {
            eprintln!(
                "seed {seed}: {} {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("")
            );
        }
        swapped += sh(&format!(
            "find '{}' -type l -lname '{}*' | wc -l",
            target.display(),
            base.display()
        ))
        .trim()
        .parse::<usize>()
        .unwrap();
        assert_eq!(
            (fingerprint(&rootdir), fingerprint(&secret)),
            before,
            "seed {seed}: something outside the target changed; restore said: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    eprintln!(
        "{RUNS} raced restores in {:?}: {failed} exited non-zero, {swapped} entries swapped for symlinks",
        started.elapsed()
    );
    assert!(
        swapped > 0,
        "the attacker never got to swap anything: the test proves nothing"
    );
}

#[test]
fn plain_restore_through_descriptors_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src, 7);
    let p = Pbak::new(dir.path().join("repo"));
    p.init();
    p.ok(&["backup", src.to_str().unwrap()]);
    let target = dir.path().join("target");
    let out = p.ok(&["restore", "latest", "--target", target.to_str().unwrap(), "--verify"]);
    assert!(out.contains("all match"), "{out}");
    assert_same_tree(&src, &target.join(src.strip_prefix("/").unwrap()));
}
