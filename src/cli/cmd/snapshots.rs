//! `pbak snapshots`: list snapshots, filtered by host, path and tags.

use crate::cli::args::Cli;
use crate::cli::{open_repo, output};
use anyhow::Result;
use clap::Args;
use pbak::format::snapshot::Snapshot;
use pbak::ids::SnapshotId;
use pbak::ops::snapshots;
use pbak::repo::filter::SnapshotFilter;

#[derive(Args, Debug)]
pub struct SnapshotsArgs {
    /// Only snapshots of this host
    #[arg(long)]
    pub host: Option<String>,
    /// Only snapshots containing this path
    #[arg(long)]
    pub path: Option<String>,
    /// Only snapshots with this tag (repeatable: all must match)
    #[arg(long)]
    pub tag: Vec<String>,
}

pub fn run(cli: &Cli, a: &SnapshotsArgs) -> Result<i32> {
    let repo = open_repo(cli)?;
    let filter = SnapshotFilter::of(a.host.as_deref(), a.path.as_deref(), &a.tag);
    print(cli, &snapshots::list(&repo, &filter)?);
    Ok(0)
}

fn print(cli: &Cli, snaps: &[(SnapshotId, Snapshot)]) {
    if cli.json {
        let v: Vec<_> = snaps.iter().map(|(i, s)| output::snap_json(i, s)).collect();
        println!("{}", serde_json::Value::Array(v));
        return;
    }
    println!("{:<10} {:<20} {:<14} {:<16} Paths", "ID", "Time", "Host", "Tags");
    for (id, s) in snaps {
        let flag = if s.partial { " (partial)" } else { "" };
        println!(
            "{:<10} {:<20} {:<14} {:<16} {}{}",
            id.short(),
            s.datetime().format("%Y-%m-%d %H:%M:%S"),
            s.host,
            s.tags.join(","),
            s.paths.join(" "),
            flag
        );
    }
    println!("{} snapshots", snaps.len());
}
