//! `pbak completions SHELL` and `pbak man DIR`: shell completions and man pages, from the
//! clap definitions themselves, so they never drift from the flags.

use crate::cli::args::Cli;
use anyhow::{Context, Result};
use clap::{Args, CommandFactory};
use std::io::Write;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// The directory to write pbak.1 and a page per subcommand (pbak-backup.1, …) into
    pub dir: PathBuf,
}

pub fn completions(a: &CompletionsArgs) -> Result<i32> {
    // Into memory first: the generator panics on a write error (a closed pipe).
    let mut buf = Vec::new();
    clap_complete::generate(a.shell, &mut Cli::command(), "pbak", &mut buf);
    let mut out = std::io::stdout().lock();
    match out.write_all(&buf).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("cannot write the completions"),
        _ => Ok(0),
    }
}

pub fn man(a: &ManArgs) -> Result<i32> {
    std::fs::create_dir_all(&a.dir).with_context(|| format!("cannot create {}", a.dir.display()))?;
    clap_mangen::generate_to(Cli::command(), &a.dir)
        .with_context(|| format!("cannot write the man pages into {}", a.dir.display()))?;
    let mut pages: Vec<_> = std::fs::read_dir(&a.dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "1"))
        .collect();
    pages.sort();
    for p in pages {
        println!("wrote {}", p.display());
    }
    Ok(0)
}
