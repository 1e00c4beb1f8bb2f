//! `pbak find PATTERN...`: where names occur in the snapshots; `--blob`/`--pack`: which files
//! use a (damaged) object.

use crate::cli::args::Cli;
use crate::cli::open_repo;
use crate::cli::output::human_bytes;
use anyhow::{bail, Result};
use clap::Args;
use pbak::ops::find::{self, Query};
use pbak::repo::filter::SnapshotFilter;
use std::os::unix::ffi::OsStrExt;

#[derive(Args, Debug)]
pub struct FindArgs {
    /// Globs matched against each entry's own name (`*.conf`, `id_rsa*`); several: any
    pub patterns: Vec<String>,
    /// Match names regardless of case
    #[arg(short = 'i', long)]
    pub ignore_case: bool,
    /// Only in these snapshots (id prefixes or `latest`; repeatable)
    #[arg(long = "snapshot", value_name = "ID")]
    pub snapshots: Vec<String>,
    /// Only snapshots of this host
    #[arg(long)]
    pub host: Option<String>,
    /// Only snapshots containing this path
    #[arg(long)]
    pub path: Option<String>,
    /// Only the N newest of the chosen snapshots
    #[arg(long, value_name = "N")]
    pub newest: Option<usize>,
    /// Files and directories that use the blob with this id (prefix), as `check` names it
    #[arg(long, value_name = "ID", conflicts_with = "pack")]
    pub blob: Option<String>,
    /// Files with data in the pack with this id (prefix), as `check` names it
    #[arg(long, value_name = "ID")]
    pub pack: Option<String>,
}

pub fn run(cli: &Cli, a: &FindArgs) -> Result<i32> {
    let repo = open_repo(cli)?;
    let index = repo.load_index()?;
    let query = match (&a.blob, &a.pack) {
        (Some(b), _) => Query::Blob(b.to_ascii_lowercase()),
        (_, Some(p)) => Query::pack(&index, p)?,
        _ if a.patterns.is_empty() => bail!("give a name pattern, --blob ID or --pack ID (see `pbak find --help`)"),
        _ => Query::names(&a.patterns, a.ignore_case)?,
    };
    let filter = SnapshotFilter::of(a.host.as_deref(), a.path.as_deref(), &[]);
    let mut snaps = repo.snapshots_matching(&filter)?;
    if !a.snapshots.is_empty() {
        let mut wanted = Vec::new();
        for spec in &a.snapshots {
            wanted.push(repo.find_snapshot(spec)?.0);
        }
        snaps.retain(|(id, _)| wanted.contains(id));
    }
    if let Some(n) = a.newest {
        let skip = snaps.len().saturating_sub(n);
        snaps.drain(..skip);
    }
    let hits = find::find(&repo, &index, &snaps, &query)?;
    if cli.json {
        println!("{}", serde_json::to_string(&hits).expect("json"));
    } else {
        for h in &hits {
            let name = pbak::ops::ls::escape_bytes(h.path_bytes.as_os_str().as_bytes());
            println!(
                "{} {} {:>10} {} {name}",
                &h.snapshot[..8],
                &h.snapshot_time[..10],
                human_bytes(h.size),
                &h.mtime[..19].replace('T', " "),
            );
        }
        println!("{} found in {} snapshots", hits.len(), snaps.len());
    }
    // Like grep: 1 when nothing was found.
    Ok(if hits.is_empty() { 1 } else { 0 })
}
