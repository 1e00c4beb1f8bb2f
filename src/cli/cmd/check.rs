//! `pbak check`: the repository's structure, and with `--read-data` (or a subset of the
//! packs) their bytes; exit 0 when nothing is found, 1 with warnings only, 2 with errors or
//! when the check cannot run.

use crate::cli::args::Cli;
use crate::cli::{open_repo_cached, output, print_error};
use anyhow::Result;
use clap::Args;
use pbak::ops::check::{self, CheckOptions, CheckReport, Subset};
use serde_json::json;

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Read every pack and verify every blob in it
    #[arg(long)]
    pub read_data: bool,
    /// Read only some packs: N/M (part N of M; M runs cover every pack once), P% or a size
    /// (500MiB, 2G: in id order from a start that moves every ISO week)
    #[arg(long, value_name = "N/M|P%|SIZE")]
    pub read_data_subset: Option<String>,
}

pub fn run(cli: &Cli, a: &CheckArgs) -> Result<i32> {
    // A check that could not run verified nothing: that is an error, exit 2.
    check(cli, a).or_else(|e| {
        print_error(&e);
        Ok(2)
    })
}

fn check(cli: &Cli, a: &CheckArgs) -> Result<i32> {
    let subset = a.read_data_subset.as_deref().map(str::parse::<Subset>).transpose()?;
    // `check::run` reads the repository, never the cache: do not even create one.
    let repo = open_repo_cached(cli, false)?;
    let rep = check::run(
        &repo,
        &CheckOptions {
            read_data: a.read_data,
            subset,
        },
    )?;
    print(cli, &rep);
    Ok(rep.exit_code())
}

fn print(cli: &Cli, r: &CheckReport) {
    crate::cli::record::note(|n| {
        n.check_errors = Some(r.errors.len() as u64);
        n.check_warnings = Some(r.warnings.len() as u64);
    });
    if cli.json {
        println!("{}", json!(r));
        return;
    }
    println!(
        "{} snapshots, {} trees, {} packs, {} blobs",
        r.snapshots, r.trees, r.packs, r.blobs
    );
    let m = &r.marked_packs;
    if let Some(t) = m
        .first_delete_after
        .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
    {
        let when = t.format("%Y-%m-%d %H:%M UTC");
        println!(
            "{} packs ({}) marked for deletion, the first after {when}",
            m.count,
            output::human_bytes(m.bytes)
        );
    }
    if r.packs_read > 0 || r.subset.is_some() {
        let of = r.subset.as_ref().map(|s| format!(" (subset {s})")).unwrap_or_default();
        println!(
            "read and verified {} packs, {}{of}",
            r.packs_read,
            output::human_bytes(r.bytes_read)
        );
    }
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    for e in &r.errors {
        eprintln!("error: {e}");
    }
    match (r.errors.len(), r.warnings.len()) {
        (0, 0) => println!("no errors found"),
        (0, w) => println!("no errors found, {w} warnings"),
        (e, w) => eprintln!("{e} errors and {w} warnings found"),
    }
}
