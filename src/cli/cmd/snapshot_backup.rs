//! `pbak snapshot-backup`: each subvolume through a read-only Btrfs snapshot; one failing
//! subvolume is reported (exit 1) and the others still run.

use crate::cli::args::{BackupCommon, Cli, KeepArgs};
use crate::cli::{open_repo, output, EXIT_PARTIAL};
use anyhow::Result;
use clap::Args;
use pbak::jobs::snapshot_backup::{self, SnapshotBackupJob, SubvolumeOutcome};
use pbak::repo::Repository;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct SnapshotBackupArgs {
    /// Btrfs subvolumes to back up (each gets its own read-only snapshot)
    #[arg(required = true)]
    pub subvolumes: Vec<PathBuf>,
    /// Where local snapshots go (default: .pbak-snapshots at the subvolume's top; relative paths are taken from there)
    #[arg(long)]
    pub snapshot_dir: Option<PathBuf>,
    #[command(flatten)]
    pub common: BackupCommon,
    #[command(flatten)]
    pub keep: KeepArgs,
    /// Compare every file's metadata with the parent instead of asking Btrfs what changed
    #[arg(long)]
    pub full_scan: bool,
}

pub fn run(cli: &Cli, a: &SnapshotBackupArgs) -> Result<i32> {
    let repo = open_repo(cli)?;
    let job = SnapshotBackupJob {
        subvolumes: a.subvolumes.clone(),
        snapshot_dir: a.snapshot_dir.clone(),
        backup: super::backup::options(cli, &a.common)?,
        keep: a.keep.rules()?,
        full_scan: a.full_scan,
    };
    let outcomes = snapshot_backup::run_all(
        &repo,
        &job,
        &|progress, work| output::with_backup_bar(cli, progress, work),
        &mut |o| print(cli, &repo, o),
    )?;
    let partial = |o: &SubvolumeOutcome| o.result.as_ref().is_ok_and(|r| r.backup.snapshot.partial);
    Ok(if outcomes.iter().any(|o| o.result.is_err()) {
        1
    } else if outcomes.iter().any(partial) {
        EXIT_PARTIAL
    } else {
        0
    })
}

fn print(cli: &Cli, repo: &Repository, o: &SubvolumeOutcome) {
    let r = match &o.result {
        Ok(r) => r,
        Err(e) => return eprintln!("pbak: {}: {e}", o.subvolume.display()),
    };
    if !cli.json {
        println!(
            "{}: read from snapshot {}",
            o.subvolume.display(),
            r.local_snapshot.display()
        );
        for p in &r.pruned {
            println!("deleted local snapshot {}", p.display());
        }
        if let Some(why) = &r.fallback {
            println!("change detection: full metadata scan, because {why}");
        }
    }
    let extra = r
        .fallback
        .as_ref()
        .map(|w| ("change_detection_fallback", w.as_str().into()));
    output::backup_done_with(cli, &r.backup, repo.backend().counts(), extra);
}
