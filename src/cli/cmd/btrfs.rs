//! `pbak btrfs snapshot|list|prune|doctor`: pbak's local snapshots, and the mounts' storage
//! settings.

use crate::cli::args::{Cli, KeepArgs};
use crate::cli::{config, open_repo};
use anyhow::Result;
use clap::Subcommand;
use pbak::btrfs::doctor::{self, Report};
use pbak::jobs::local_snapshots;
use serde_json::json;
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum BtrfsCommand {
    /// Take read-only local snapshots of SUBVOLUMEs now (as snapper and btrbk do), then apply
    /// the local retention; with --profile, its sources and `local_snapshots.keep` are the defaults
    ///
    /// The next snapshot-backup still compares against the local snapshot the last backup read
    /// (its contents are in the repository); retention never deletes that one.
    Snapshot {
        subvolumes: Vec<PathBuf>,
        #[arg(long)]
        snapshot_dir: Option<PathBuf>,
        #[command(flatten)]
        keep: KeepArgs,
    },
    /// List pbak's local snapshots of a subvolume
    List {
        subvolume: PathBuf,
        #[arg(long)]
        snapshot_dir: Option<PathBuf>,
    },
    /// Delete local snapshots by keep rules (never the last one backed up)
    Prune {
        subvolume: PathBuf,
        #[arg(long)]
        snapshot_dir: Option<PathBuf>,
        #[command(flatten)]
        keep: KeepArgs,
        /// Only show what would be deleted
        #[arg(short = 'n', long)]
        dry_run: bool,
    },
    /// Check Btrfs mounts (or the mounts holding PATHs) against the storage presets; exit 1 on warnings
    Doctor {
        paths: Vec<PathBuf>,
        /// Judge the PATHs by this preset instead of by their path: database, containers, cache, general
        #[arg(long)]
        preset: Option<String>,
    },
}

pub fn run(cli: &Cli, c: &BtrfsCommand) -> Result<i32> {
    match c {
        BtrfsCommand::Snapshot {
            subvolumes,
            snapshot_dir,
            keep,
        } => snapshot(cli, subvolumes, snapshot_dir.as_deref(), keep),
        BtrfsCommand::List {
            subvolume,
            snapshot_dir,
        } => list(subvolume, snapshot_dir.as_deref()),
        BtrfsCommand::Prune {
            subvolume,
            snapshot_dir,
            keep,
            dry_run,
        } => prune(cli, subvolume, snapshot_dir.as_deref(), keep, *dry_run),
        BtrfsCommand::Doctor { paths, preset } => {
            let reports = doctor::doctor(paths, preset.as_deref())?;
            print_doctor(cli, &reports);
            Ok(if reports.iter().all(|r| r.ok()) { 0 } else { 1 })
        }
    }
}

/// `btrfs snapshot`: one failing subvolume does not stop the others; exit 1 when one failed.
fn snapshot(cli: &Cli, subvolumes: &[PathBuf], snapshot_dir: Option<&Path>, keep: &KeepArgs) -> Result<i32> {
    let profile = match (&cli.profile, config::loaded()) {
        (Some(name), Some(l)) => Some(l.config.profile(name)?),
        _ => None,
    };
    let subvolumes = match (subvolumes.is_empty(), profile) {
        (false, _) => subvolumes.to_vec(),
        (true, Some(p)) if p.snapshot => p.sources.clone(),
        _ => anyhow::bail!("name the subvolumes to snapshot, or give --profile of a profile with snapshot = true"),
    };
    let dir_flag = snapshot_dir
        .map(Path::to_path_buf)
        .or_else(|| profile.and_then(|p| p.snapshot_dir.clone()));
    let mut rules = keep.rules()?;
    if rules.is_empty() {
        if let Some(p) = profile {
            rules = p.local_snapshots.keep.clone();
        }
    }
    // The repository says which local snapshot each subvolume's last backup read (it must
    // stay); without it retention is skipped, never guessed.
    let repo = match rules.is_empty() {
        true => None,
        false => Some(open_repo(cli).map_err(|e| format!("{e:#}"))),
    };
    let mut failed = 0;
    for subvol in &subvolumes {
        let dir = local_snapshots::snapshot_dir(subvol, dir_flag.as_deref());
        let taken = match local_snapshots::take(subvol, &dir) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: cannot snapshot {}: {e:#}", subvol.display());
                failed += 1;
                continue;
            }
        };
        let mut deleted = Vec::new();
        let mut skipped = None;
        match &repo {
            None => {}
            Some(Err(e)) => skipped = Some(format!("local retention skipped: cannot read the repository ({e})")),
            Some(Ok(repo)) => {
                let r = local_snapshots::prune(repo, subvol, dir_flag.as_deref(), &rules, false, &mut |p| {
                    deleted.push(p.to_path_buf())
                });
                if let Err(e) = r {
                    skipped = Some(format!("local retention failed: {e:#}"));
                }
            }
        }
        if cli.json {
            println!(
                "{}",
                json!({"subvolume": subvol, "snapshot": taken, "deleted": deleted, "retention_error": skipped})
            );
        } else if !cli.quiet {
            println!("snapshot {}", taken.display());
            for d in &deleted {
                println!("deleted {}", d.display());
            }
        }
        if let Some(s) = skipped {
            eprintln!("warning: {}: {s}", subvol.display());
        }
    }
    Ok(if failed > 0 { 1 } else { 0 })
}

fn list(subvolume: &Path, snapshot_dir: Option<&Path>) -> Result<i32> {
    let dir = local_snapshots::snapshot_dir(subvolume, snapshot_dir);
    for s in local_snapshots::list_local(subvolume, &dir)? {
        println!("{}  {}", s.time.format("%Y-%m-%d %H:%M:%S"), s.path.display());
    }
    Ok(0)
}

fn prune(cli: &Cli, subvolume: &Path, snapshot_dir: Option<&Path>, keep: &KeepArgs, dry_run: bool) -> Result<i32> {
    let rules = keep.rules()?;
    if rules.is_empty() {
        anyhow::bail!("no --keep-* rule given: refusing to delete every local snapshot");
    }
    let repo = open_repo(cli)?;
    let verb = if dry_run { "would delete" } else { "deleted" };
    local_snapshots::prune(&repo, subvolume, snapshot_dir, &rules, dry_run, &mut |p| {
        println!("{verb} {}", p.display())
    })?;
    Ok(0)
}

fn print_doctor(cli: &Cli, reports: &[Report]) {
    if cli.json {
        println!("{}", json!(reports));
        return;
    }
    if reports.is_empty() {
        println!("no Btrfs mounts found");
    }
    for r in reports {
        let disk = match r.ssd {
            Some(true) => "SSD",
            Some(false) => "rotational disk",
            None => "unknown disk type",
        };
        println!(
            "{} ({} preset; subvolume {} of {} mounted at {}, {disk})",
            r.path.display(),
            r.preset,
            r.subvolume,
            r.device,
            r.mount_point.display()
        );
        for f in &r.findings {
            match f.ok {
                true => println!("  ok    {}", f.check),
                false => println!("  WARN  {}: {}", f.check, f.message),
            }
        }
    }
}
