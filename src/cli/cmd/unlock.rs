//! `pbak unlock`: remove a stale prune marker (any with `--remove-all`), and lock objects a
//! format-1 pbak left.

use crate::cli::args::Cli;
use crate::cli::open_repo;
use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
pub struct UnlockArgs {
    /// Remove the prune marker even if its prune looks alive
    #[arg(long)]
    pub remove_all: bool,
}

pub fn run(cli: &Cli, a: &UnlockArgs) -> Result<i32> {
    let repo = open_repo(cli)?;
    let n = repo.unlock(a.remove_all)?;
    if cli.json {
        println!("{}", serde_json::json!({ "locks_removed": n }));
    } else {
        println!("removed {n} lock object(s)");
    }
    Ok(0)
}

/// `pbak migrate`: format 1 → 2.
pub fn migrate(cli: &Cli) -> Result<i32> {
    let mut repo = open_repo(cli)?;
    let changed = repo.migrate()?;
    let version = repo.config().version;
    if cli.json {
        println!("{}", serde_json::json!({ "migrated": changed, "version": version }));
    } else if changed {
        println!("repository upgraded to format {version}; pbak before 0.2 can no longer open it");
    } else {
        println!("repository is already at format {version}");
    }
    Ok(0)
}
