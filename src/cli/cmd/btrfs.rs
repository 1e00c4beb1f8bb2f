//! `pbak btrfs list|prune|doctor`: pbak's local snapshots, and the mounts' storage settings.

use crate::cli::args::{Cli, KeepArgs};
use crate::cli::open_repo;
use anyhow::Result;
use clap::Subcommand;
use pbak::btrfs::doctor::{self, Report};
use pbak::jobs::local_snapshots;
use serde_json::json;
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum BtrfsCommand {
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
