//! `pbak prune`: delete data no snapshot refers to (also run by `forget --prune`).

use crate::cli::args::{Cli, PruneArgs};
use crate::cli::open_repo;
use crate::cli::output::human_bytes;
use anyhow::Result;
use pbak::ops::prune::{self, PruneOptions, PruneReport};
use serde_json::json;

pub fn run(cli: &Cli, p: &PruneArgs) -> Result<i32> {
    let repo = open_repo(cli)?;
    let rep = prune::run(&repo, &options(p), &log(cli))?;
    print(cli, &rep);
    Ok(0)
}

pub fn options(p: &PruneArgs) -> PruneOptions {
    PruneOptions {
        max_unused_percent: p.max_unused,
        dry_run: p.dry_run,
        delete_after: p.delete_after,
    }
}

/// Prune's progress lines go to stderr, unless quiet or JSON.
pub fn log(cli: &Cli) -> impl Fn(&str) + Sync {
    let quiet = cli.quiet || cli.json;
    move |msg| {
        if !quiet {
            eprintln!("{msg}");
        }
    }
}

pub fn print(cli: &Cli, r: &PruneReport) {
    if !r.dry_run {
        crate::cli::record::note(|n| {
            n.bytes_freed += r.bytes_freed;
            n.stored_bytes = Some(r.stored_bytes_after);
        });
    }
    if cli.json {
        println!("{}", json!(r));
        return;
    }
    let would = if r.dry_run { "would be " } else { "" };
    println!(
        "{} snapshots; in use: {} blobs, {}; unused: {} blobs, {}",
        r.snapshots,
        r.blobs_used,
        human_bytes(r.bytes_used),
        r.blobs_unused,
        human_bytes(r.bytes_unused)
    );
    println!(
        "packs: {} kept, {} {would}deleted, {} {would}repacked ({} copied), {} unindexed {would}deleted",
        r.packs_kept,
        r.packs_deleted,
        r.packs_repacked,
        human_bytes(r.bytes_repacked),
        r.unreferenced_packs_deleted
    );
    if r.packs_marked + r.unreferenced_packs_marked + r.packs_marked_kept + r.packs_brought_back > 0 {
        let when = chrono::DateTime::from_timestamp(r.delete_after, 0)
            .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_default();
        println!(
            "marked for deletion: {} packs {would}marked ({} unindexed, {}; a prune after {when} deletes them if still unneeded), {} marked earlier still waiting, {} brought back",
            r.packs_marked + r.unreferenced_packs_marked,
            r.unreferenced_packs_marked,
            human_bytes(r.bytes_marked),
            r.packs_marked_kept,
            r.packs_brought_back
        );
    }
    println!(
        "{} {would}freed; {} unused left in kept packs",
        human_bytes(r.bytes_freed),
        human_bytes(r.bytes_unused_after)
    );
    if r.temp_packs_removed > 0 {
        println!(
            "removed {} partly written packs left by interrupted runs",
            r.temp_packs_removed
        );
    }
}
