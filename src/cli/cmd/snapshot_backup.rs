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
    let mut read_back_failed = false;
    let outcomes = snapshot_backup::run_all(
        &repo,
        &job,
        &|progress, work| output::with_backup_bar(cli, progress, work),
        &mut |o| print(cli, &repo, &a.common, o, &mut read_back_failed),
    )?;
    let partial = |o: &SubvolumeOutcome| o.result.as_ref().is_ok_and(|r| r.backup.snapshot.partial);
    let failed: Vec<&pbak::Error> = outcomes.iter().filter_map(|o| o.result.as_ref().err()).collect();
    Ok(if read_back_failed {
        1
    } else if !failed.is_empty() {
        // Only when every failure may pass does trying again make sense.
        match failed.iter().all(|e| e.is_transient()) {
            true => pbak::error::EXIT_TRANSIENT,
            false => 1,
        }
    } else if outcomes.iter().any(partial) {
        EXIT_PARTIAL
    } else {
        0
    })
}

fn print(cli: &Cli, repo: &Repository, common: &BackupCommon, o: &SubvolumeOutcome, failed: &mut bool) {
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
    let mut extra: Vec<(&str, serde_json::Value)> = Vec::new();
    if let Some(w) = &r.fallback {
        extra.push(("change_detection_fallback", w.as_str().into()));
    }
    let read = super::backup::read_back(cli, repo, common, &r.backup);
    match read {
        Some(Ok(rb)) => extra.push(("read_back", serde_json::json!(rb))),
        Some(Err(e)) => {
            extra.push(("read_back_error", e.to_string().into()));
            eprintln!("pbak: {}: read-back failed: {e}", o.subvolume.display());
            *failed = true;
        }
        None => {}
    }
    output::backup_done(cli, &r.backup, repo.backend().counts(), &extra);
}
