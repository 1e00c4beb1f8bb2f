//! `forget`: which snapshots the keep rules remove (per group of host, paths or tags), and
//! deleting them.
//!
//! A damaged snapshot object (one that does not authenticate or decode) is removed by its
//! full id, by name: its time and paths are unknown, so no keep rule ever selects it.
//!
//! Invariants: [`run`] takes the exclusive lock itself, and a prune asked for with it runs
//! under that same lock (no backup can start in between); the deletions are made durable
//! (a backend barrier) before prune reads the remaining snapshots or the operation returns.

pub mod retention;

use crate::error::{Error, Result};
use crate::format::layout;
use crate::format::snapshot::Snapshot;
use crate::ids::SnapshotId;
use crate::ops::prune::{self, PruneOptions, PruneReport};
use crate::repo::filter::SnapshotFilter;
use crate::repo::{find_in, Repository, SnapshotScan};
use retention::{keep, KeepRules};

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

/// One retention group and the verdict for each of its snapshots (oldest first).
#[derive(Debug)]
pub struct ForgetGroup {
    pub key: String,
    pub snapshots: Vec<(SnapshotId, Snapshot, bool)>,
}

/// Apply `rules` per group. Empty rules keep everything.
pub fn plan_forget(snaps: Vec<(SnapshotId, Snapshot)>, rules: &KeepRules, by: GroupBy) -> Vec<ForgetGroup> {
    let mut groups: Vec<ForgetGroup> = Vec::new();
    for (id, s) in snaps {
        let key = by.key(&s);
        match groups.iter_mut().find(|g| g.key == key) {
            Some(g) => g.snapshots.push((id, s, true)),
            None => groups.push(ForgetGroup {
                key,
                snapshots: vec![(id, s, true)],
            }),
        }
    }
    for g in &mut groups {
        let times: Vec<_> = g.snapshots.iter().map(|(_, s, _)| s.datetime()).collect();
        for (verdict, k) in g.snapshots.iter_mut().zip(keep(&times, rules)) {
            verdict.2 = k;
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
    pub rules: KeepRules,
    /// Only these snapshots are considered, by the rules and by `snapshots` alike.
    pub filter: SnapshotFilter,
    pub group_by: GroupBy,
    pub dry_run: bool,
    /// Prune afterwards, under the same lock (its `dry_run` is its own).
    pub prune: Option<PruneOptions>,
}

#[derive(Debug)]
pub struct ForgetReport {
    /// The plan: every considered snapshot, with `false` for those removed (or, in a dry
    /// run, that would be).
    pub groups: Vec<ForgetGroup>,
    /// Damaged snapshot objects removed by name (`snapshots/…`; in a dry run, that would be).
    pub damaged: Vec<String>,
    pub dry_run: bool,
    pub pruned: Option<PruneReport>,
}

/// Resolve the explicit ids, plan, delete unless a dry run, make the deletions durable, then
/// prune if asked (under prune's marker; forget itself needs no lock: deleting a snapshot
/// object only ever makes a concurrent prune keep more). `on_plan` sees the plan before anything is deleted;
/// `log` gets prune's progress lines.
pub fn run(
    repo: &Repository,
    opts: &ForgetOptions,
    on_plan: &mut dyn FnMut(&[ForgetGroup]),
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
    let mut groups = plan_forget(opts.filter.apply(scan.good), &opts.rules, opts.group_by);
    // Empty rules keep everything, so ids given alone remove just those; with rules, both apply.
    for g in &mut groups {
        for (id, _, keep) in &mut g.snapshots {
            if explicit.contains(id) {
                *keep = false;
            }
        }
    }
    on_plan(&groups);
    if !opts.dry_run {
        for (id, _, _) in groups.iter().flat_map(|g| &g.snapshots).filter(|s| !s.2) {
            delete_snapshot(repo, id)?;
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
