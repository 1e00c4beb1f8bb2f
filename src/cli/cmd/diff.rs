//! `pbak diff SNAP1[:PATH] SNAP2[:PATH]`: added, removed, modified, metadata-only and type
//! changes between two snapshots (or the same directory in both), with the totals.

use crate::cli::args::Cli;
use crate::cli::open_repo;
use crate::cli::output::human_bytes;
use anyhow::{bail, Result};
use clap::Args;
use pbak::ids::TreeId;
use pbak::ops::diff;
use pbak::repo::filter::parse_snapshot_path;
use pbak::repo::index::Index;
use pbak::repo::Repository;
use std::os::unix::ffi::OsStrExt;

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The older snapshot (`latest`, an id prefix), optionally with `:PATH`
    pub before: String,
    /// The newer snapshot, optionally with `:PATH` (a path given on one side only applies to both)
    pub after: String,
}

fn tree(repo: &Repository, index: &Index, spec: &str, path: &str) -> Result<TreeId> {
    let (_, snap) = repo.find_snapshot(spec)?;
    let (t, node) = repo.resolve_path(index, &snap.tree, path)?;
    match node {
        Some(n) if !n.is_dir() => bail!("{path} in snapshot {spec} is not a directory; diff compares directories"),
        _ => Ok(t),
    }
}

pub fn run(cli: &Cli, a: &DiffArgs) -> Result<i32> {
    let repo = open_repo(cli)?;
    let index = repo.load_index()?;
    let ((sa, pa), (sb, pb)) = (parse_snapshot_path(&a.before), parse_snapshot_path(&a.after));
    let (pa, pb) = match (pa.is_empty(), pb.is_empty()) {
        (true, false) => (pb, pb),
        (false, true) => (pa, pa),
        _ => (pa, pb),
    };
    let report = diff::diff(
        &repo,
        &index,
        &tree(&repo, &index, sa, pa)?,
        &tree(&repo, &index, sb, pb)?,
    )?;
    if cli.json {
        println!("{}", serde_json::to_string(&report).expect("json"));
        return Ok(0);
    }
    for c in &report.changes {
        // Names are escaped as `ls -b` does: a name must not send control bytes to a terminal.
        let name = pbak::ops::ls::escape_bytes(c.path_bytes.as_os_str().as_bytes());
        println!("{}    {name}", c.kind.letter());
    }
    let t = &report.totals;
    println!(
        "\n{} added, {} removed, {} modified, {} metadata only, {} changed type; +{} -{}",
        t.added,
        t.removed,
        t.modified,
        t.metadata,
        t.type_changed,
        human_bytes(t.bytes_added),
        human_bytes(t.bytes_removed)
    );
    Ok(0)
}
