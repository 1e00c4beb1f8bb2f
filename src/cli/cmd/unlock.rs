//! `pbak unlock`: remove stale locks (all with `--remove-all`).

use crate::cli::args::Cli;
use crate::cli::open_repo;
use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
pub struct UnlockArgs {
    /// Remove every lock, also those of running processes
    #[arg(long)]
    pub remove_all: bool,
}

pub fn run(cli: &Cli, a: &UnlockArgs) -> Result<i32> {
    let repo = open_repo(cli)?;
    let n = repo.unlock(a.remove_all)?;
    if cli.json {
        println!("{}", serde_json::json!({ "locks_removed": n }));
    } else {
        println!("removed {n} lock(s)");
    }
    Ok(0)
}
