//! `pbak ls`: the contents of a snapshot, or of a directory inside it (recursively).

use crate::cli::args::Cli;
use crate::cli::open_repo;
use anyhow::Result;
use clap::Args;
use pbak::format::tree::{Node, NodeKind};
use pbak::ops::ls;
use serde_json::json;
use std::io::IsTerminal;

#[derive(Args, Debug)]
pub struct LsArgs {
    pub snapshot: String,
    /// Directory inside the snapshot to list (recursively)
    pub path: Option<String>,
    /// Show mode, owner, size and modification time. On a terminal, control characters in
    /// names are escaped as `ls -b` does (ESC as \033); piped text and --json are exact
    #[arg(short, long)]
    pub long: bool,
}

pub fn run(cli: &Cli, a: &LsArgs) -> Result<i32> {
    let repo = open_repo(cli)?;
    let index = repo.load_index()?;
    let (id, snap) = repo.find_snapshot(&a.snapshot)?;
    if !cli.json {
        println!(
            "snapshot {} of {} at {}:",
            id.short(),
            snap.paths.join(" "),
            snap.datetime().format("%Y-%m-%d %H:%M:%S")
        );
    }
    let sub = a.path.as_deref().unwrap_or("");
    // On a terminal names are escaped as `ls -b` does (a name must not send escape sequences
    // to it); piped text and JSON keep them exact.
    let tty = std::io::stdout().is_terminal();
    ls::walk(&repo, &index, &snap, sub, &|path, n| {
        let shown = if tty { ls::escape_name(path) } else { path.into() };
        line(cli, path, &shown, n, a.long)
    })?;
    Ok(0)
}

fn kind_char(k: NodeKind) -> char {
    match k {
        NodeKind::File => '-',
        NodeKind::Dir => 'd',
        NodeKind::Symlink => 'l',
        NodeKind::Fifo => 'p',
        NodeKind::CharDev => 'c',
        NodeKind::BlockDev => 'b',
        NodeKind::Socket => 's',
    }
}

/// One entry: `path` exact in JSON, `shown` in text.
fn line(cli: &Cli, path: &str, shown: &str, n: &Node, long: bool) {
    if cli.json {
        println!(
            "{}",
            json!({"path": path, "type": format!("{:?}", n.kind).to_lowercase(), "mode": n.mode, "uid": n.uid, "gid": n.gid,
                   "size": n.size, "mtime": chrono::DateTime::from_timestamp(n.mtime.sec, n.mtime.nsec).map(|d| d.to_rfc3339())})
        );
    } else if long {
        let t = chrono::DateTime::from_timestamp(n.mtime.sec, n.mtime.nsec).unwrap_or_default();
        println!(
            "{}{:04o} {:>6} {:>6} {:>12} {} {}",
            kind_char(n.kind),
            n.mode,
            n.uid,
            n.gid,
            n.size,
            t.format("%Y-%m-%d %H:%M:%S"),
            shown
        );
    } else {
        println!("{shown}");
    }
}
