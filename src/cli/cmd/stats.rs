//! `pbak stats`: sizes from the index and the trees (no data pack is read).

use crate::cli::args::Cli;
use crate::cli::cmd::prune::log;
use crate::cli::open_repo;
use crate::cli::output::human_bytes;
use anyhow::Result;
use clap::Args;
use pbak::ops::stats::{self, GroupStats, Stats};
use pbak::repo::filter::SnapshotFilter;

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Snapshots to show (id prefixes or `latest`; default: all). What only a snapshot
    /// references is reckoned against every snapshot in the repository
    pub snapshots: Vec<String>,
    /// Only show snapshots of this host
    #[arg(long)]
    pub host: Option<String>,
    /// Only show snapshots containing this path
    #[arg(long)]
    pub path: Option<String>,
}

pub fn run(cli: &Cli, a: &StatsArgs) -> Result<i32> {
    let repo = open_repo(cli)?;
    let mut shown = Vec::new();
    for spec in &a.snapshots {
        shown.push(repo.find_snapshot(spec)?.0);
    }
    if a.host.is_some() || a.path.is_some() {
        let filter = SnapshotFilter::of(a.host.as_deref(), a.path.as_deref(), &[]);
        let matching = repo.snapshots_matching(&filter)?;
        match shown.is_empty() {
            true => shown = matching.into_iter().map(|(id, _)| id).collect(),
            false => shown.retain(|id| matching.iter().any(|(m, _)| m == id)),
        }
        if shown.is_empty() {
            anyhow::bail!("no snapshot matches the given host, path and ids (see `pbak snapshots`)");
        }
    }
    let st = stats::stats(&repo, &shown, &log(cli))?;
    print(cli, &st);
    Ok(0)
}

fn print(cli: &Cli, st: &Stats) {
    if cli.json {
        println!("{}", serde_json::to_string(st).expect("json"));
        return;
    }
    println!(
        "{} snapshots, {} files, restore size {}",
        st.snapshots,
        st.files,
        human_bytes(st.restore_size)
    );
    println!(
        "in use: {} blobs, {} raw, {} stored (compression {:.2}x, deduplication {:.2}x)",
        st.blobs,
        human_bytes(st.raw_size),
        human_bytes(st.stored_size),
        st.compression_ratio,
        st.dedup_ratio
    );
    println!(
        "repository: {} in indexed packs, {} unused (what prune would free now)",
        human_bytes(st.repository_size),
        human_bytes(st.unused_bytes)
    );
    println!(
        "\n{:<10} {:<20} {:<14} {:>12} {:>12}  Paths",
        "ID", "Time", "Host", "Restore", "Only here"
    );
    for s in &st.per_snapshot {
        println!(
            "{:<10} {:<20} {:<14} {:>12} {:>12}  {}",
            &s.id[..8],
            &s.time[..19].replace('T', " "),
            s.host,
            human_bytes(s.restore_size),
            human_bytes(s.exclusive_bytes),
            s.paths.join(" ")
        );
    }
    let table = |title: &str, groups: &[GroupStats]| {
        println!(
            "\n{:<30} {:>9} {:>12} {:>12}",
            title, "Snapshots", "Restore", "Only here"
        );
        for g in groups {
            println!(
                "{:<30} {:>9} {:>12} {:>12}",
                g.name,
                g.snapshots,
                human_bytes(g.restore_size),
                human_bytes(g.exclusive_bytes)
            );
        }
    };
    table("Host", &st.per_host);
    table("Paths", &st.per_path);
}
