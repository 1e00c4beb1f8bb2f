//! `forget`: which snapshots the keep rules remove (per group of host, paths or tags), and
//! deleting them.

pub mod retention;

use crate::error::{Error, Result};
use crate::format::layout;
use crate::format::snapshot::Snapshot;
use crate::ids::SnapshotId;
use crate::repo::Repository;
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

pub fn delete_snapshot(repo: &Repository, id: &SnapshotId) -> Result<()> {
    repo.backend().delete(&layout::snapshot(id))?;
    Ok(())
}
