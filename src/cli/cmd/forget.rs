//! `pbak forget`: remove snapshots by keep rules, policies or id, and with `--prune` their data.

use crate::cli::args::{Cli, KeepArgs, PruneArgs};
use crate::cli::open_repo;
use anyhow::Result;
use clap::Args;
use pbak::ops::forget::audit::Run;
use pbak::ops::forget::retention::{describe, parse_duration};
use pbak::ops::forget::zone::Zone;
use pbak::ops::forget::{self, policy, ForgetGroup, ForgetOptions, GroupBy, Retention};
use pbak::repo::filter::SnapshotFilter;
use serde_json::json;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// Snapshots to remove (id prefixes), in addition to those the keep rules drop
    pub snapshots: Vec<String>,
    #[command(flatten)]
    pub keep: KeepArgs,
    #[command(flatten)]
    pub rules: Box<ForgetRuleArgs>,
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

/// The rules only `forget` has (local Btrfs retention shares [`KeepArgs`]).
#[derive(Args, Debug)]
pub struct ForgetRuleArgs {
    /// Keep the newest of each hour within this duration back from now (e.g. 2d12h)
    #[arg(long, value_name = "DURATION")]
    pub keep_within_hourly: Option<String>,
    /// Keep the newest of each day within this duration back from now
    #[arg(long, value_name = "DURATION")]
    pub keep_within_daily: Option<String>,
    /// Keep the newest of each ISO week within this duration back from now
    #[arg(long, value_name = "DURATION")]
    pub keep_within_weekly: Option<String>,
    /// Keep the newest of each month within this duration back from now
    #[arg(long, value_name = "DURATION")]
    pub keep_within_monthly: Option<String>,
    /// Keep the newest of each year within this duration back from now
    #[arg(long, value_name = "DURATION")]
    pub keep_within_yearly: Option<String>,
    /// Keep snapshots with this tag (repeatable: any of them; `a,b` needs both)
    #[arg(long, value_name = "TAG")]
    pub keep_tag: Vec<String>,
    /// Named policies from a TOML file instead of --keep-* flags: the first policy whose match
    /// selects a snapshot decides it, one that none selects is kept (docs/retention.md)
    #[arg(long, value_name = "FILE")]
    pub policy_file: Option<PathBuf>,
    /// Time zone of the hour, day, week, month and year buckets, an IANA name such as
    /// Europe/Berlin (default: the policy file's, else this machine's)
    #[arg(long, value_name = "ZONE")]
    pub timezone: Option<String>,
    /// Append every decision to FILE as a JSON line before deleting (not with --dry-run)
    #[arg(long, value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
    /// Let the rules remove the newest snapshot of a group too (it is kept otherwise)
    #[arg(long)]
    pub unsafe_allow_remove_all: bool,
}

/// The policies, zone and clock this run applies.
fn retention(f: &ForgetArgs) -> Result<Retention> {
    let r = &f.rules;
    let duration = |d: &Option<String>| d.as_deref().map(parse_duration).transpose().map_err(anyhow::Error::msg);
    let mut rules = f.keep.rules()?;
    rules.within_hourly = duration(&r.keep_within_hourly)?;
    rules.within_daily = duration(&r.keep_within_daily)?;
    rules.within_weekly = duration(&r.keep_within_weekly)?;
    rules.within_monthly = duration(&r.keep_within_monthly)?;
    rules.within_yearly = duration(&r.keep_within_yearly)?;
    rules.tags = r.keep_tag.clone();
    let (policies, file_zone) = match &r.policy_file {
        Some(path) if !rules.is_empty() => anyhow::bail!(
            "give --policy-file or --keep-* rules, not both: put the rules in a policy of {}",
            path.display()
        ),
        Some(path) => {
            let file = policy::load(path)?;
            (file.policies, file.timezone)
        }
        // Without rules, the config file's [retention] policies apply.
        None if rules.is_empty() && f.snapshots.is_empty() => {
            match crate::cli::config::loaded().and_then(|l| l.config.policy_file()) {
                Some(file) => {
                    let file = file?;
                    (file.policies, file.timezone)
                }
                None => anyhow::bail!(
                    "nothing to forget: give snapshot ids, --keep-* rules, --policy-file, or a config file with [retention] (no rule would remove every snapshot)"
                ),
            }
        }
        None => (Retention::command_line(rules), None),
    };
    let zone = match &r.timezone {
        Some(name) => Zone::named(name).map_err(anyhow::Error::msg)?,
        None => file_zone.unwrap_or_else(Zone::local),
    };
    Ok(Retention {
        policies,
        zone,
        now: chrono::Utc::now(),
        group_by: GroupBy::parse(&f.group_by)?,
        allow_remove_all: r.unsafe_allow_remove_all,
    })
}

pub fn run(cli: &Cli, f: &ForgetArgs) -> Result<i32> {
    let retention = retention(f)?;
    let repo = open_repo(cli)?;
    let opts = ForgetOptions {
        snapshots: f.snapshots.clone(),
        retention,
        filter: SnapshotFilter {
            hosts: f.host.iter().cloned().collect(),
            tags: f.tag.clone(),
            ..Default::default()
        },
        dry_run: f.prune_opts.dry_run,
        audit_log: f.rules.audit_log.clone(),
        prune: f.prune.then(|| super::prune::options(&f.prune_opts)),
    };
    let audit = opts.audit_run();
    let plan = &mut |groups: &[ForgetGroup], damaged: &[String]| print_plan(cli, &audit, groups, damaged);
    let rep = forget::run(&repo, &opts, plan, &super::prune::log(cli))?;
    if !cli.json {
        let verb = if rep.dry_run { "would remove" } else { "removed" };
        for name in &rep.damaged {
            println!("{verb} damaged snapshot object {name}");
        }
    }
    if let Some(p) = &rep.pruned {
        super::prune::print(cli, p);
    }
    Ok(0)
}

fn print_plan(cli: &Cli, run: &Run, groups: &[ForgetGroup], damaged: &[String]) {
    let unmatched: Vec<_> = groups.iter().filter(|g| g.policy.is_none()).collect();
    if !unmatched.is_empty() {
        let n: usize = unmatched.iter().map(|g| g.snapshots.len()).sum();
        let keys: Vec<_> = unmatched.iter().map(|g| g.key.as_str()).collect();
        eprintln!(
            "warning: {n} snapshots match no policy and are kept ({}): add a policy for them",
            keys.join("; ")
        );
    }
    if cli.json {
        let mut v: Vec<_> = groups
            .iter()
            .map(|g| {
                let ids = |keep: bool| -> Vec<String> {
                    g.snapshots
                        .iter()
                        .filter(|s| s.keep == keep)
                        .map(|s| s.id.to_hex())
                        .collect()
                };
                json!({"group": g.key, "policy": g.policy, "keep": ids(true), "remove": ids(false),
                       "dry_run": run.dry_run, "decisions": run.group(g)})
            })
            .collect();
        if !damaged.is_empty() {
            let decisions: Vec<_> = damaged.iter().map(|n| run.damaged(n)).collect();
            v.push(
                json!({"group": "damaged snapshot objects", "policy": null, "keep": [], "remove": damaged,
                          "dry_run": run.dry_run, "decisions": decisions}),
            );
        }
        println!("{}", serde_json::Value::Array(v));
        return;
    }
    let verb = if run.dry_run { "would remove" } else { "remove" };
    println!("buckets in time zone {}", run.zone.name());
    for g in groups {
        match &g.policy {
            Some(p) => println!("snapshots of {} (policy {p}):", g.key),
            None => println!("snapshots of {} (no policy matches: kept):", g.key),
        }
        for v in &g.snapshots {
            let line = format!(
                "  {:<12} {} {}  {}",
                if v.keep { "keep" } else { verb },
                v.id.short(),
                run.zone.format(v.snapshot.datetime()),
                describe(&v.reasons)
            );
            println!("{}", line.trim_end());
        }
    }
}
