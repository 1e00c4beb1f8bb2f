//! `pbak forget`: remove snapshots by keep rules or by id, and with `--prune` their data.

use crate::cli::args::{Cli, KeepArgs, PruneArgs};
use crate::cli::open_repo;
use anyhow::Result;
use clap::Args;
use pbak::ops::forget::{self, ForgetGroup, ForgetOptions, GroupBy};
use pbak::repo::filter::SnapshotFilter;
use serde_json::json;

#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// Snapshots to remove (id prefixes), in addition to those the keep rules drop
    pub snapshots: Vec<String>,
    #[command(flatten)]
    pub keep: KeepArgs,
    /// Only consider snapshots of this host
    #[arg(long)]
    pub host: Option<String>,
    /// Only consider snapshots with this tag (repeatable: all must match)
    #[arg(long)]
    pub tag: Vec<String>,
    /// Apply the keep rules separately per group of these fields
    #[arg(long, default_value = "host,paths")]
    pub group_by: String,
    /// Run prune afterwards
    #[arg(long)]
    pub prune: bool,
    #[command(flatten)]
    pub prune_opts: PruneArgs,
}

pub fn run(cli: &Cli, f: &ForgetArgs) -> Result<i32> {
    let rules = f.keep.rules()?;
    if rules.is_empty() && f.snapshots.is_empty() {
        anyhow::bail!("nothing to forget: give snapshot ids or --keep-* rules (no rule would remove every snapshot)");
    }
    let group_by = GroupBy::parse(&f.group_by)?;
    let repo = open_repo(cli)?;
    let opts = ForgetOptions {
        snapshots: f.snapshots.clone(),
        rules,
        filter: SnapshotFilter {
            hosts: f.host.iter().cloned().collect(),
            tags: f.tag.clone(),
            ..Default::default()
        },
        group_by,
        dry_run: f.prune_opts.dry_run,
        prune: f.prune.then(|| super::prune::options(&f.prune_opts)),
    };
    let dry_run = opts.dry_run;
    let plan = &mut |groups: &[ForgetGroup]| print_plan(cli, groups, dry_run);
    let rep = forget::run(&repo, &opts, plan, &super::prune::log(cli))?;
    if !cli.json {
        let verb = if dry_run { "would remove" } else { "removed" };
        for name in &rep.damaged {
            println!("{verb} damaged snapshot object {name}");
        }
    }
    if let Some(p) = &rep.pruned {
        super::prune::print(cli, p);
    }
    Ok(0)
}

fn print_plan(cli: &Cli, groups: &[ForgetGroup], dry_run: bool) {
    if cli.json {
        let v: Vec<_> = groups
            .iter()
            .map(|g| {
                let ids = |keep: bool| -> Vec<String> {
                    g.snapshots
                        .iter()
                        .filter(|s| s.2 == keep)
                        .map(|s| s.0.to_hex())
                        .collect()
                };
                json!({"group": g.key, "keep": ids(true), "remove": ids(false), "dry_run": dry_run})
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
        return;
    }
    let verb = if dry_run { "would remove" } else { "remove" };
    for g in groups {
        println!("snapshots of {}:", g.key);
        for (id, s, keep) in &g.snapshots {
            println!(
                "  {:<12} {} {}",
                if *keep { "keep" } else { verb },
                id.short(),
                s.datetime().format("%Y-%m-%d %H:%M:%S")
            );
        }
    }
}
