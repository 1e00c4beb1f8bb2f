//! `pbak backup`: files and directories into a new snapshot; exit 3 when some could not be read.

use crate::cli::args::{BackupCommon, Cli};
use crate::cli::{open_repo, output, EXIT_PARTIAL};
use anyhow::{Context, Result};
use clap::Args;
use pbak::ops::backup::{self as archiver, BackupOptions, BackupResult, Progress, Source};
use pbak::ops::check::ReadBack;
use pbak::repo::Repository;
use serde_json::json;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Files and directories to back up
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Snapshot whose unchanged files are reused (default: the latest of this host and paths)
    #[arg(long)]
    pub parent: Option<String>,
    #[command(flatten)]
    pub common: BackupCommon,
}

pub fn run(cli: &Cli, b: &BackupArgs) -> Result<i32> {
    let repo = open_repo(cli)?;
    let mut opts = options(cli, &b.common)?;
    opts.sources = b
        .paths
        .iter()
        .map(|p| Source {
            recorded: p.clone(),
            read: p.clone(),
        })
        .collect();
    let progress = Progress::default();
    let parent = b.parent.as_deref();
    let res = output::with_backup_bar(cli, &progress, || archiver::run(&repo, &opts, parent, &progress))?;
    let read = read_back(cli, &repo, &b.common, &res);
    let extra: Vec<_> = read
        .iter()
        .flat_map(|r| r.as_ref().ok())
        .map(|r| ("read_back", json!(r)))
        .collect();
    output::backup_done(cli, &res, repo.backend().counts(), &extra);
    if let Some(Err(e)) = read {
        return Err(e.into());
    }
    Ok(if res.snapshot.partial { EXIT_PARTIAL } else { 0 })
}

/// With `--read-back`, download and verify the packs the backup wrote; `None` without it.
pub fn read_back(cli: &Cli, repo: &Repository, c: &BackupCommon, res: &BackupResult) -> Option<pbak::Result<ReadBack>> {
    if !c.read_back || res.id.is_none() {
        return None;
    }
    let r = pbak::ops::check::read_back(repo, &res.index_files);
    if let (Ok(r), false) = (&r, cli.json) {
        println!(
            "read back {} packs ({}): all verified",
            r.packs,
            output::human_bytes(r.bytes)
        );
    }
    Some(r)
}

/// The options `backup` and `snapshot-backup` share, with the patterns of the exclude files.
pub fn options(cli: &Cli, c: &BackupCommon) -> Result<BackupOptions> {
    let mut excludes = c.exclude.clone();
    excludes.extend(read_exclude_files(&c.exclude_file)?);
    Ok(BackupOptions {
        tags: c.tag.clone(),
        host: c.host.clone().unwrap_or_else(|| pbak::host::host_user().0),
        excludes,
        one_file_system: c.one_file_system,
        exclude_caches: c.exclude_caches,
        dry_run: c.dry_run,
        connections: cli.connections as usize,
        ..Default::default()
    })
}

fn read_exclude_files(files: &[PathBuf]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).with_context(|| format!("cannot read exclude file {}", f.display()))?;
        out.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from),
        );
    }
    Ok(out)
}
