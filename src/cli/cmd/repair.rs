//! `pbak repair index|snapshots`: rebuild the index from the packs' headers; write new
//! snapshots in which what is gone is marked, so the rest restores.

use crate::cli::args::Cli;
use crate::cli::open_repo_cached;
use anyhow::Result;
use clap::{Args, Subcommand};
use pbak::ops::repair::index::{self, IndexOptions, IndexReport};
use pbak::ops::repair::snapshots::{self, RepairedSnapshot, SnapshotsOptions, SnapshotsReport};
use serde_json::json;

#[derive(Subcommand, Debug)]
pub enum RepairCommand {
    /// Rebuild the index from the headers of every pack (replaces every index file)
    Index(DryRun),
    /// Write new snapshots (tagged `repaired`) in which files whose data is gone are
    /// NAME.pbak-damaged and lost directories empty NAME.pbak-missing-tree
    Snapshots(SnapshotsArgs),
}

#[derive(Args, Debug)]
pub struct DryRun {
    /// Only show what would be written and removed
    #[arg(short = 'n', long)]
    pub dry_run: bool,
}

#[derive(Args, Debug)]
pub struct SnapshotsArgs {
    /// Snapshots to repair (`latest` or id prefixes; default: all)
    pub snapshots: Vec<String>,
    /// Remove each original once its repaired snapshot is stored
    #[arg(long)]
    pub forget: bool,
    #[command(flatten)]
    pub dry: DryRun,
}

pub fn run(cli: &Cli, c: &RepairCommand) -> Result<i32> {
    // Both repairs read the repository itself, never the cache: do not even create one.
    let repo = open_repo_cached(cli, false)?;
    let log = super::prune::log(cli);
    match c {
        RepairCommand::Index(a) => print_index(cli, &index::run(&repo, &IndexOptions { dry_run: a.dry_run }, &log)?),
        RepairCommand::Snapshots(a) => {
            let opts = SnapshotsOptions {
                snapshots: a.snapshots.clone(),
                forget: a.forget,
                dry_run: a.dry.dry_run,
            };
            print_snapshots(cli, &snapshots::run(&repo, &opts, &log)?)
        }
    }
    Ok(0)
}

fn print_index(cli: &Cli, r: &IndexReport) {
    if cli.json {
        return println!("{}", json!(r));
    }
    for p in &r.packs_unreadable {
        eprintln!("pbak: warning: left out of the index: {}: {}", p.pack, p.reason);
    }
    let would = if r.dry_run { "would be " } else { "" };
    println!("read the headers of {} packs: {} blobs", r.packs_read, r.blobs);
    println!(
        "{} index files {would}written, {} old ones {would}removed; {} packs unreadable",
        r.index_files_written,
        r.index_files_removed,
        r.packs_unreadable.len()
    );
}

fn print_snapshots(cli: &Cli, r: &SnapshotsReport) {
    if cli.json {
        return println!("{}", json!(r));
    }
    if r.indexed_packs_missing > 0 {
        eprintln!(
            "pbak: warning: the index lists {} packs that are gone; `pbak repair index` first \
             would find copies of their blobs in other packs",
            r.indexed_packs_missing
        );
    }
    r.repaired.iter().for_each(print_repaired);
    for u in &r.unrepairable {
        let fate = match u.forgotten {
            true => "removed",
            false => "left alone (`--forget` removes it)",
        };
        println!(
            "snapshot {}: {}, nothing to restore; {fate}",
            &u.snapshot[..8],
            u.reason
        );
    }
    let would = if r.dry_run { "would be " } else { "" };
    println!(
        "{} snapshots checked: {} {would}repaired, {} unchanged, {} unrepairable",
        r.snapshots_checked,
        r.repaired.len(),
        r.unchanged,
        r.unrepairable.len()
    );
}

fn print_repaired(s: &RepairedSnapshot) {
    match &s.new {
        Some(new) => println!("snapshot {} repaired as {}", &s.original[..8], &new[..8]),
        None => println!("snapshot {} would be repaired", &s.original[..8]),
    }
    for p in &s.damaged_files {
        println!("  file {p}: data gone, marked .pbak-damaged");
    }
    for p in &s.missing_trees {
        println!("  dir {p}: tree gone, empty .pbak-missing-tree");
    }
    if s.forgotten {
        println!("  removed the original {}", &s.original[..8]);
    }
}
