//! `pbak check`: the repository's structure, and with `--read-data` every stored byte; exit 1
//! when anything is wrong.

use crate::cli::args::Cli;
use crate::cli::open_repo_cached;
use anyhow::Result;
use clap::Args;
use pbak::ops::check::{self, CheckReport};
use serde_json::json;

#[derive(Args, Debug)]
pub struct CheckArgs {
    #[arg(long)]
    pub read_data: bool,
}

pub fn run(cli: &Cli, a: &CheckArgs) -> Result<i32> {
    // `check::run` reads the repository, never the cache: do not even create one.
    let repo = open_repo_cached(cli, false)?;
    let rep = check::run(&repo, a.read_data)?;
    print(cli, &rep);
    Ok(if rep.errors.is_empty() { 0 } else { 1 })
}

fn print(cli: &Cli, r: &CheckReport) {
    if cli.json {
        println!("{}", json!(r));
        return;
    }
    println!(
        "{} snapshots, {} trees, {} packs, {} blobs",
        r.snapshots, r.trees, r.packs, r.blobs
    );
    if r.packs_read > 0 {
        println!("read and verified {} packs", r.packs_read);
    }
    if r.unreferenced_packs > 0 {
        println!(
            "{} packs are not indexed (left by an interrupted backup; harmless)",
            r.unreferenced_packs
        );
    }
    for e in &r.errors {
        eprintln!("error: {e}");
    }
    if r.errors.is_empty() {
        println!("no errors found");
    } else {
        eprintln!("{} errors found", r.errors.len());
    }
}
