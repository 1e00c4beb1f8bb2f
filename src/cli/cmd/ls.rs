//! `pbak ls`: the contents of a snapshot, or of a directory inside it (recursively).

use crate::cli::args::{Cli, LatestArgs};
use crate::cli::open_repo;
use anyhow::Result;
use clap::Args;
use pbak::format::tree::{Node, NodeKind};
use pbak::ops::ls;
use serde_json::json;
use std::borrow::Cow;
use std::io::{IsTerminal, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

#[derive(Args, Debug)]
pub struct LsArgs {
    pub snapshot: String,
    /// Directory inside the snapshot to list (recursively)
    pub path: Option<String>,
    /// Show mode, owner, size and modification time. On a terminal, control characters in
    /// names are escaped as `ls -b` does (ESC as \033); piped text and --json are exact
    #[arg(short, long)]
    pub long: bool,
    #[command(flatten)]
    pub latest: LatestArgs,
}

pub fn run(cli: &Cli, a: &LsArgs) -> Result<i32> {
    let repo = open_repo(cli)?;
    let index = repo.load_index()?;
    let (id, snap) = repo.find_snapshot_of(&a.snapshot, &a.latest.filter())?;
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
    // to it); piped text is the exact bytes; JSON is exact for UTF-8 paths and escaped
    // (with `"escaped": true`) for the others.
    let tty = std::io::stdout().is_terminal();
    ls::walk(&repo, &index, &snap, sub, &|path, n| line(cli, path, tty, n, a.long))?;
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

/// One entry (see `run` for how names are shown).
fn line(cli: &Cli, path: &Path, tty: bool, n: &Node, long: bool) {
    let bytes = path.as_os_str().as_bytes();
    if cli.json {
        let utf8 = std::str::from_utf8(bytes).ok();
        let shown = utf8.map(Cow::Borrowed).unwrap_or_else(|| ls::escape_bytes(bytes));
        let mut v = json!({"path": shown, "type": format!("{:?}", n.kind).to_lowercase(), "mode": n.mode, "uid": n.uid, "gid": n.gid,
                   "size": n.size, "mtime": chrono::DateTime::from_timestamp(n.mtime.sec, n.mtime.nsec).map(|d| d.to_rfc3339())});
        if utf8.is_none() {
            v["escaped"] = true.into();
        }
        println!("{v}");
        return;
    }
    let mut out = Vec::new();
    if long {
        let t = chrono::DateTime::from_timestamp(n.mtime.sec, n.mtime.nsec).unwrap_or_default();
        let (k, m, size, when) = (kind_char(n.kind), n.mode, n.size, t.format("%Y-%m-%d %H:%M:%S"));
        out.extend(format!("{k}{m:04o} {:>6} {:>6} {size:>12} {when} ", n.uid, n.gid).into_bytes());
    }
    match tty {
        true => out.extend(ls::escape_bytes(bytes).as_bytes()),
        false => out.extend(bytes),
    }
    out.push(b'\n');
    let _ = std::io::stdout().lock().write_all(&out);
}
