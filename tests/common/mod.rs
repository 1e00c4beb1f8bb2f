//! Throwaway Btrfs filesystems on loop devices for tests (needs root and btrfs-progs).
#![allow(dead_code)]

pub mod faulty_proxy;
pub mod pbak;

use std::path::{Path, PathBuf};
use std::process::Command;

/// A freshly made 1 GiB (sparse) Btrfs image attached to a loop device and mounted at `mnt`.
/// Drop unmounts it, detaches the loop device and removes `dir`, also when a test panics.
pub struct BtrfsLoop {
    pub mnt: PathBuf,
    loopdev: String,
    pub dir: tempfile::TempDir, // dropped last, after the unmount in Drop::drop
}

/// Runs a command; Err carries its stderr.
pub fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{cmd} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

impl BtrfsLoop {
    /// Err(reason) when the environment cannot provide one (not root, no mkfs.btrfs, no loop device).
    pub fn new() -> Result<Self, String> {
        if effective_uid() != Some(0) {
            return Err("not running as root: loop devices and mount need CAP_SYS_ADMIN".into());
        }
        run("mkfs.btrfs", &["--version"])
            .map_err(|e| format!("{e} (install with `apt-get update && apt-get install -y btrfs-progs`)"))?;
        let dir = tempfile::Builder::new()
            .prefix("pbak-btrfs-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let img = dir.path().join("img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).map_err(|e| e.to_string())?;
        std::fs::File::create(&img)
            .and_then(|f| f.set_len(1 << 30))
            .map_err(|e| e.to_string())?;
        let img_s = img.to_str().ok_or("non-UTF-8 temp path")?;
        run("mkfs.btrfs", &["-q", img_s])?;
        let loopdev = run("losetup", &["--find", "--show", img_s]).map_err(|e| format!("no loop device: {e}"))?;
        if let Err(e) = run("mount", &[&loopdev, mnt.to_str().unwrap()]) {
            let _ = run("losetup", &["-d", &loopdev]);
            return Err(e);
        }
        Ok(BtrfsLoop { mnt, loopdev, dir })
    }

    pub fn path(&self) -> &Path {
        &self.mnt
    }
}

impl Drop for BtrfsLoop {
    fn drop(&mut self) {
        let mnt = self.mnt.to_str().unwrap();
        if let Err(e) = run("umount", &[mnt]) {
            eprintln!("BtrfsLoop: {e}; retrying lazily");
            let _ = run("umount", &["-l", mnt]);
        }
        if let Err(e) = run("losetup", &["-d", &self.loopdev]) {
            eprintln!("BtrfsLoop: {e}");
        }
    }
}

/// A BtrfsLoop, or, when none can be made: panic with the reason, unless
/// PBAK_ALLOW_SKIP_BTRFS=1, in which case print the reason and return None (test skipped).
pub fn btrfs_or_skip(test: &str) -> Option<BtrfsLoop> {
    match BtrfsLoop::new() {
        Ok(l) => Some(l),
        Err(why) if std::env::var("PBAK_ALLOW_SKIP_BTRFS").as_deref() == Ok("1") => {
            // Written to the real stderr (not eprintln!), so libtest's capture cannot hide it.
            let msg = format!("!!! SKIPPING {test}: cannot set up a Btrfs loop filesystem: {why}\n");
            let _ = std::io::Write::write_all(&mut std::io::stderr(), msg.as_bytes());
            None
        }
        Err(why) => panic!(
            "!!! {test}: cannot set up a Btrfs loop filesystem: {why}\n\
             !!! Run the tests as root with btrfs-progs installed, or set PBAK_ALLOW_SKIP_BTRFS=1 to skip."
        ),
    }
}

/// Create a Btrfs subvolume at `p` (tests only: the product never shells out to `btrfs`).
pub fn subvol_create(p: &Path) {
    run("btrfs", &["subvolume", "create", p.to_str().unwrap()]).unwrap();
}
