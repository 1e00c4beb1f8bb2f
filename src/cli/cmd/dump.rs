//! `pbak dump SNAPSHOT[:PATH]` or `pbak dump SNAPSHOT PATH`: a file's contents to stdout, or a
//! directory (the whole snapshot without a path) as a tar stream: `pbak dump latest home/alice
//! | tar -x -C /restore`.

use crate::cli::args::{Cli, LatestArgs};
use crate::cli::open_repo;
use anyhow::{bail, Result};
use clap::Args;
use pbak::ops::dump;
use pbak::repo::filter::parse_snapshot_path;
use std::io::IsTerminal;

#[derive(Args, Debug)]
pub struct DumpArgs {
    /// The snapshot (`latest`, an id prefix), optionally with `:PATH`
    pub snapshot: String,
    /// The file or directory in it (relative to the snapshot root, as `ls` shows it)
    pub path: Option<String>,
    #[command(flatten)]
    pub latest: LatestArgs,
}

pub fn run(cli: &Cli, a: &DumpArgs) -> Result<i32> {
    let repo = open_repo(cli)?;
    let index = repo.load_index()?;
    let (spec, sub) = parse_snapshot_path(&a.snapshot);
    let sub = a.path.as_deref().unwrap_or(sub).trim_start_matches('/').to_string();
    let (_, snap) = repo.find_snapshot_of(spec, &a.latest.filter())?;
    let (_, node) = repo.resolve_path(&index, &snap.tree, &sub)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout());
    if node.as_ref().is_some_and(|n| !n.is_dir()) {
        dump::dump_file(&repo, &index, &snap, &sub, &mut out)?;
        std::io::Write::flush(&mut out)?;
        return Ok(0);
    }
    if std::io::stdout().is_terminal() {
        bail!(
            "{} is a directory: its dump is a tar stream; pipe it to `tar -x` or redirect it to a file",
            if sub.is_empty() { "the snapshot" } else { &sub }
        );
    }
    let sum = dump::dump_tar(&repo, &index, &snap, &sub, &mut out)?;
    for s in &sum.skipped {
        eprintln!("pbak: warning: left out of the tar stream: {s}");
    }
    if !cli.quiet {
        eprintln!("dumped {} entries, {} bytes of file data", sum.entries, sum.bytes);
    }
    Ok(if sum.skipped.is_empty() {
        0
    } else {
        crate::cli::EXIT_PARTIAL
    })
}
