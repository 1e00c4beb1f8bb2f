//! `pbak restore`: a snapshot, or `SNAPSHOT:SUBPATH`, into a directory.

use crate::cli::args::Cli;
use crate::cli::{open_repo, output};
use anyhow::Result;
use clap::Args;
use pbak::ids::SnapshotId;
use pbak::ops::restore::{self as restorer, RestoreOptions, RestoreSummary};
use pbak::repo::filter::parse_snapshot_path;
use serde_json::json;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// `latest`, an id prefix, optionally followed by :/path/inside
    pub snapshot: String,
    /// Directory to restore into (created if missing)
    #[arg(short, long)]
    pub target: PathBuf,
    /// Only restore paths matching this glob (repeatable)
    #[arg(long)]
    pub include: Vec<String>,
    /// Do not restore paths matching this glob (repeatable)
    #[arg(long)]
    pub exclude: Vec<String>,
    /// Re-read the restored files and check them against the snapshot
    #[arg(long)]
    pub verify: bool,
}

pub fn run(cli: &Cli, a: &RestoreArgs) -> Result<i32> {
    let (spec, sub) = parse_snapshot_path(&a.snapshot);
    let repo = open_repo(cli)?;
    let job = restorer::prepare(&repo, spec)?;
    let opts = RestoreOptions {
        target: a.target.clone(),
        subpath: sub.to_string(),
        includes: a.include.clone(),
        excludes: a.exclude.clone(),
        verify: a.verify,
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
    println!(
        "restored snapshot {}: {} files ({} hardlinks), {} dirs, {} symlinks, {} special, {}",
        id.short(),
        s.files,
        s.hardlinks,
        s.dirs,
        s.symlinks,
        s.specials,
        output::human_bytes(s.bytes)
    );
    if s.verified_files > 0 {
        println!("verified {} files against the snapshot: all match", s.verified_files);
    }
}
