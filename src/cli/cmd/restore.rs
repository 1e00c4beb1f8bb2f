//! `pbak restore`: a snapshot, or `SNAPSHOT:SUBPATH`, into a directory; `--dry-run` writes
//! nothing (`--dry-run --verify` reads and verifies everything a restore would).
//! `--overwrite` says what happens to what the target already has (without it a non-empty
//! target is refused), `--delete` removes what the snapshot lacks.

use crate::cli::args::{Cli, LatestArgs};
use crate::cli::{open_repo, output};
use anyhow::Result;
use clap::{Args, ValueEnum};
use pbak::ids::SnapshotId;
use pbak::ops::restore::{self as restorer, Overwrite, RestoreOptions, RestoreSummary};
use pbak::repo::filter::parse_snapshot_path;
use serde_json::json;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// `latest`, an id prefix, optionally followed by :/path/inside
    pub snapshot: String,
    /// Directory to restore into (created if missing); not needed with --dry-run
    #[arg(short, long, required_unless_present = "dry_run")]
    pub target: Option<PathBuf>,
    /// Only restore paths matching this glob (repeatable)
    #[arg(long)]
    pub include: Vec<String>,
    /// Do not restore paths matching this glob (repeatable)
    #[arg(long)]
    pub exclude: Vec<String>,
    /// Re-read the restored files and check them against the snapshot (with --overwrite
    /// if-changed, also before keeping a file); with --dry-run, read and verify every blob a
    /// restore would write
    #[arg(long)]
    pub verify: bool,
    /// Write nothing: count what a restore would write, skip and delete (with --verify, read it all)
    #[arg(long)]
    pub dry_run: bool,
    /// What to do with entries already in the target; without it, a non-empty target is
    /// refused. if-changed keeps files whose size and mtime match (resumes a killed restore)
    #[arg(long, value_enum, value_name = "WHEN")]
    pub overwrite: Option<OverwriteArg>,
    /// Remove files and directories of the restored tree that the snapshot does not have
    /// (never what --include/--exclude leave out)
    #[arg(long)]
    pub delete: bool,
    /// List every path written, skipped and deleted
    #[arg(short, long)]
    pub verbose: bool,
    #[command(flatten)]
    pub latest: LatestArgs,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OverwriteArg {
    Always,
    IfChanged,
    Never,
}

pub fn run(cli: &Cli, a: &RestoreArgs) -> Result<i32> {
    let (spec, sub) = parse_snapshot_path(&a.snapshot);
    let repo = open_repo(cli)?;
    let job = restorer::prepare(&repo, spec, &a.latest.filter())?;
    let opts = RestoreOptions {
        target: a.target.clone().unwrap_or_default(),
        subpath: sub.to_string(),
        includes: a.include.clone(),
        excludes: a.exclude.clone(),
        verify: a.verify,
        dry_run: a.dry_run,
        overwrite: a.overwrite.map(|o| match o {
            OverwriteArg::Always => Overwrite::Always,
            OverwriteArg::IfChanged => Overwrite::IfChanged,
            OverwriteArg::Never => Overwrite::Never,
        }),
        delete: a.delete,
        list: a.verbose,
        connections: cli.connections as usize,
    };
    let total = job.snapshot.summary.total_bytes;
    let done = std::sync::atomic::AtomicU64::new(0);
    let sum = output::with_bytes_bar(cli, total, &done, || job.run(&opts, &done))?;
    print(cli, &job.id, &sum);
    // 3: everything restored, but some metadata could not be applied (see the warnings).
    Ok(if sum.metadata_failed > 0 { 3 } else { 0 })
}

fn print(cli: &Cli, id: &SnapshotId, s: &RestoreSummary) {
    for w in &s.warnings {
        eprintln!("warning: {w}");
    }
    if cli.json {
        println!("{}", json!({"snapshot_id": id.to_hex(), "summary": s}));
        return;
    }
    let mut changes: Vec<&String> = s.changes.iter().collect();
    changes.sort_by(|a, b| a.split_once(' ').map(|x| x.1).cmp(&b.split_once(' ').map(|x| x.1)));
    for c in changes {
        println!("{c}");
    }
    println!(
        "{} snapshot {}: {} files ({} hardlinks), {} dirs, {} symlinks, {} special, {}",
        if s.dry_run {
            "dry run, would restore"
        } else {
            "restored"
        },
        id.short(),
        s.files,
        s.hardlinks,
        s.dirs,
        s.symlinks,
        s.specials,
        output::human_bytes(s.bytes)
    );
    if s.skipped > 0 || s.deleted > 0 || s.written != s.files {
        println!(
            "{} {} files, {} {} existing entries, {} {} entries",
            if s.dry_run { "would write" } else { "wrote" },
            s.written,
            if s.dry_run { "would skip" } else { "skipped" },
            s.skipped,
            if s.dry_run { "would delete" } else { "deleted" },
            s.deleted
        );
    }
    match (s.dry_run, s.verified_files) {
        (true, 0) => println!("nothing written"),
        (true, n) => println!("read and verified the data of {n} files: all intact; nothing written"),
        (false, 0) => {}
        (false, n) => println!("verified {n} files against the snapshot: all match"),
    }
}
