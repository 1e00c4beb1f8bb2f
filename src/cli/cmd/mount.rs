//! `pbak mount MOUNTPOINT`: the repository as a read-only filesystem until SIGINT (Ctrl-C),
//! SIGTERM or SIGHUP, which unmount it and exit 0; an unmount from outside (`umount`,
//! `fusermount3 -u`) ends it too.
//!
//! The three signals are blocked before anything else runs, so every thread started later
//! (the backend's runtime, rayon, the FUSE workers) inherits the mask and only the waiting
//! thread ever takes them: no handler, no `unsafe`. The cost: a password prompt on the
//! terminal cannot be interrupted with Ctrl-C (end it with an empty line instead).

use crate::cli::args::Cli;
use crate::cli::open_repo;
use anyhow::Result;
use clap::Args;
use nix::sys::signal::{SigSet, Signal};
use pbak::ops::mount::{self, MountOptions};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct MountArgs {
    /// An existing empty directory to mount on
    pub mountpoint: PathBuf,
    /// Let other users see the files (the kernel still checks each file's stored mode and owner);
    /// as a non-root user this needs `user_allow_other` in /etc/fuse.conf
    #[arg(long)]
    pub allow_other: bool,
    /// List the repository's snapshots again at most every SECS seconds (when a directory of the
    /// namespace is listed)
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub refresh: u64,
    /// MiB of decrypted file data to keep in memory
    #[arg(long, value_name = "MIB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub cache_mib: u64,
}

pub fn run(cli: &Cli, a: &MountArgs) -> Result<i32> {
    let mut signals = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        signals.add(s);
    }
    signals.thread_block()?;
    let repo = open_repo(cli)?;
    let opts = MountOptions {
        allow_other: a.allow_other,
        refresh: Duration::from_secs(a.refresh),
        cache_bytes: (a.cache_mib << 20) as usize,
        ..MountOptions::default()
    };
    let mounted = mount::mount(repo, &a.mountpoint, &opts)?;
    if !cli.quiet {
        eprintln!(
            "mounted the repository at {}; Ctrl-C (or SIGTERM) unmounts",
            a.mountpoint.display()
        );
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(signals.wait());
    });
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) if !mounted.is_finished() => continue,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => return Ok(0),
            _ => break,
        }
    }
    mounted.unmount()?;
    Ok(0)
}
