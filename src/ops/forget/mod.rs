//! `forget`: which snapshots the keep rules remove (per policy, and per group of host, paths
//! or tags), and deleting them, with every decision in an audit log.
//!
//! Each snapshot is decided by the first policy that selects it (rules given as flags are one
//! policy, `command-line`, that selects everything); a snapshot no policy selects is kept.
//! Within a policy, groups are formed by `--group-by`, and the newest snapshot of each group
//! is kept unless `allow_remove_all`. Snapshots named by id are removed whatever the rules say.
//!
//! A damaged snapshot object (one that does not authenticate or decode) is removed by its
//! full id, by name: its time and paths are unknown, so no keep rule ever selects it.
//!
//! Invariants: [`run`] takes the exclusive lock itself, and a prune asked for with it runs
//! under that same lock (no backup can start in between); the deletions are made durable
//! (a backend barrier) before prune reads the remaining snapshots or the operation returns.

pub mod audit;
pub mod policy;
pub mod retention;
pub mod zone;

use crate::error::{Error, Result};
use crate::format::layout;
use crate::format::snapshot::Snapshot;
use crate::ids::SnapshotId;
use crate::ops::prune::{self, PruneOptions, PruneReport};
use crate::repo::filter::SnapshotFilter;
use crate::repo::{find_in, Repository, SnapshotScan};
use chrono::{DateTime, Utc};
use policy::Policy;
use retention::{decide, Clock, Item, KeepRules, Reason};
use std::path::PathBuf;
use zone::Zone;

/// Which snapshot fields form a retention group.
#[derive(Clone, Copy, Debug, Default)]
pub struct GroupBy {
    pub host: bool,
    pub paths: bool,
    pub tags: bool,
}

impl GroupBy {
    /// `host,paths` (restic's default), any subset of `host`, `paths`, `tags`, or empty.
    pub fn parse(s: &str) -> Result<GroupBy> {
        let mut g = GroupBy::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "host" => g.host = true,
                "paths" => g.paths = true,
                "tags" => g.tags = true,
                _ => {
                    return Err(Error::Usage(format!(
                        "unknown --group-by field {part:?}: use host, paths and/or tags"
                    )))
                }
            }
        }
        Ok(g)
    }

    fn key(&self, s: &Snapshot) -> String {
        let mut k = Vec::new();
        if self.host {
            k.push(format!("host {}", s.host));
        }
        if self.paths {
            k.push(format!("paths {}", s.paths.join(",")));
        }
        if self.tags {
            let mut t = s.tags.clone();
            t.sort();
            k.push(format!("tags {}", t.join(",")));
        }
        k.join("; ")
    }
}

/// One snapshot and what was decided for it.
#[derive(Debug)]
pub struct Verdict {
    pub id: SnapshotId,
    pub snapshot: Snapshot,
    pub keep: bool,
    /// Why: the rules that keep it, or `snapshot-id` when it was named to be removed.
    pub reasons: Vec<Reason>,
}

/// One retention group of one policy and the verdict for each of its snapshots (oldest first).
#[derive(Debug)]
pub struct ForgetGroup {
    pub key: String,
    /// `None`: no policy selects these snapshots, and they are kept.
    pub policy: Option<String>,
    pub snapshots: Vec<Verdict>,
}

/// How the rules are applied: by which policies, in which zone, counting back from when.
#[derive(Clone, Debug)]
pub struct Retention {
    /// In order: the first that selects a snapshot decides it.
    pub policies: Vec<Policy>,
    pub zone: Zone,
    pub now: DateTime<Utc>,
    pub group_by: GroupBy,
    /// Let the rules remove the newest snapshot of a group too.
    pub allow_remove_all: bool,
}

/// No policy (every snapshot is kept), this machine's zone, now, no grouping.
impl Default for Retention {
    fn default() -> Retention {
        Retention {
            policies: Vec::new(),
            zone: Zone::local(),
            now: Utc::now(),
            group_by: GroupBy::default(),
            allow_remove_all: false,
        }
    }
}

impl Retention {
    /// Rules given as flags: one policy for every snapshot.
    pub fn command_line(rules: KeepRules) -> Vec<Policy> {
        vec![Policy {
            name: "command-line".into(),
            selects: Default::default(),
            keep: rules,
        }]
    }
}

/// Group the snapshots by policy and `group_by`, and decide each group.
pub fn plan_forget(snaps: Vec<(SnapshotId, Snapshot)>, r: &Retention) -> Vec<ForgetGroup> {
    let mut groups: Vec<ForgetGroup> = Vec::new();
    for (id, snapshot) in snaps {
        let key = r.group_by.key(&snapshot);
        let policy = policy::select(&r.policies, &snapshot).map(|p| p.name.clone());
        let v = Verdict {
            id,
            snapshot,
            keep: true,
            reasons: Vec::new(),
        };
        match groups.iter_mut().find(|g| g.key == key && g.policy == policy) {
            Some(g) => g.snapshots.push(v),
            None => groups.push(ForgetGroup {
                key,
                policy,
                snapshots: vec![v],
            }),
        }
    }
    let clock = Clock {
        zone: &r.zone,
        now: r.now,
        keep_newest: !r.allow_remove_all,
    };
    for g in &mut groups {
        let Some(p) = r.policies.iter().find(|p| Some(&p.name) == g.policy.as_ref()) else {
            for v in &mut g.snapshots {
                v.reasons = vec![Reason::new("no-policy", None)];
            }
            continue;
        };
        let items: Vec<_> = g
            .snapshots
            .iter()
            .map(|v| Item {
                time: v.snapshot.datetime(),
                tags: &v.snapshot.tags,
            })
            .collect();
        let why = decide(&items, &p.keep, clock);
        for (v, reasons) in g.snapshots.iter_mut().zip(why) {
            v.keep = !reasons.is_empty();
            v.reasons = reasons;
        }
    }
    groups
}

/// The snapshots `specs` name, among one listing: ids of readable ones, and object names of
/// damaged ones. A damaged snapshot cannot be decoded, so it is matched by its full id (or
/// `snapshots/<id>`) only, never by a prefix or `latest`.
fn resolve(scan: &SnapshotScan, specs: &[String]) -> Result<(Vec<SnapshotId>, Vec<String>)> {
    let (mut ids, mut damaged) = (Vec::new(), Vec::new());
    for spec in specs {
        match find_in(&scan.good, spec) {
            Ok((id, _)) => ids.push(*id),
            Err(e @ Error::SnapshotNotFound(_)) => {
                let hex = spec.strip_prefix("snapshots/").unwrap_or(spec).to_ascii_lowercase();
                let name = layout::in_dir(layout::SNAPSHOTS, &hex);
                match scan.damaged.iter().any(|(n, _)| *n == name) {
                    true => damaged.push(name),
                    false => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok((ids, damaged))
}

pub fn delete_snapshot(repo: &Repository, id: &SnapshotId) -> Result<()> {
    repo.backend().delete(&layout::snapshot(id))?;
    Ok(())
}

#[derive(Clone, Debug, Default)]
pub struct ForgetOptions {
    /// Snapshots to remove (`latest` or id prefixes), besides those the rules remove.
    pub snapshots: Vec<String>,
    pub retention: Retention,
    /// Only these snapshots are considered, by the rules and by `snapshots` alike.
    pub filter: SnapshotFilter,
    pub dry_run: bool,
    /// Append every decision here (not in a dry run).
    pub audit_log: Option<PathBuf>,
    /// Prune afterwards, under the same lock (its `dry_run` is its own).
    pub prune: Option<PruneOptions>,
}

#[derive(Debug)]
pub struct ForgetReport {
    /// The plan: every considered snapshot, with `keep == false` for those removed (or, in a
    /// dry run, that would be).
    pub groups: Vec<ForgetGroup>,
    /// Damaged snapshot objects removed by name (`snapshots/…`; in a dry run, that would be).
    pub damaged: Vec<String>,
    pub dry_run: bool,
    pub pruned: Option<PruneReport>,
}

impl ForgetOptions {
    /// The context of this run's decisions.
    pub fn audit_run(&self) -> audit::Run<'_> {
        audit::Run {
            now: self.retention.now,
            zone: &self.retention.zone,
            dry_run: self.dry_run,
        }
    }
}

/// Every decision of a plan: the groups', then the damaged objects'.
pub fn decisions<'a>(run: &'a audit::Run, groups: &'a [ForgetGroup], damaged: &[String]) -> Vec<audit::Decision<'a>> {
    let mut all: Vec<_> = groups.iter().flat_map(|g| run.group(g)).collect();
    all.extend(damaged.iter().map(|n| run.damaged(n)));
    all
}

/// Resolve the explicit ids, plan, log and delete unless a dry run, make the deletions
/// durable, then prune if asked (under prune's marker; forget itself needs no lock: deleting
/// a snapshot object only ever makes a concurrent prune keep more). `on_plan` sees the plan
/// (and the damaged objects to remove) before anything is logged or deleted; `log` gets
/// prune's progress lines.
pub fn run(
    repo: &Repository,
    opts: &ForgetOptions,
    on_plan: &mut dyn FnMut(&[ForgetGroup], &[String]),
    log: &(dyn Fn(&str) + Sync),
) -> Result<ForgetReport> {
    repo.require_writable_format()?;
    if !opts.dry_run {
        repo.require_delete_right("forget")?;
    }
    // One listing serves the explicit ids and the rules (and warns about damage once).
    let scan = repo.scan_snapshots()?;
    scan.warn();
    let (explicit, damaged) = resolve(&scan, &opts.snapshots)?;
    let mut groups = plan_forget(opts.filter.apply(scan.good), &opts.retention);
    // Snapshots named by id go whatever the rules say.
    for v in groups.iter_mut().flat_map(|g| &mut g.snapshots) {
        if explicit.contains(&v.id) {
            v.keep = false;
            v.reasons = vec![Reason::new("snapshot-id", None)];
        }
    }
    on_plan(&groups, &damaged);
    if !opts.dry_run {
        if let Some(path) = &opts.audit_log {
            audit::append(path, &decisions(&opts.audit_run(), &groups, &damaged))?;
        }
        for v in groups.iter().flat_map(|g| &g.snapshots).filter(|v| !v.keep) {
            delete_snapshot(repo, &v.id)?;
        }
        for name in &damaged {
            repo.backend().delete(name)?;
        }
        repo.backend().barrier()?;
    }
    let pruned = match &opts.prune {
        Some(p) => Some(prune::run(repo, p, log)?),
        None => None,
    };
    Ok(ForgetReport {
        groups,
        damaged,
        dry_run: opts.dry_run,
        pruned,
    })
}

#[cfg(test)]
mod tests;
