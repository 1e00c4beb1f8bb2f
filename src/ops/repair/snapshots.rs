//! `repair snapshots`: for each selected snapshot, its trees are rebuilt bottom up with
//! whatever is gone marked by name (the rules, and how restic differs, are in the README's
//! Decisions):
//!
//! - a file some of whose chunks are gone (in no index, or in a pack no longer stored) loses
//!   them and is renamed `NAME.pbak-damaged`: a dense file's size shrinks by them, a sparse
//!   one's missing chunks become holes when their lengths are known;
//! - a directory whose tree is gone or does not load becomes an empty directory
//!   `NAME.pbak-missing-tree` with the directory's metadata;
//! - a snapshot whose root tree is gone holds nothing to restore: none is written for it.
//!
//! Changed trees are stored through the pack writer (packs, then their index, then a
//! barrier); a new snapshot with the original's fields, the new root and the tags
//! `repaired` and `repaired-from:<short id>` follows; only then, with `forget`, are the
//! originals deleted. Unchanged snapshots are left alone. A shared subtree is rebuilt once.

use super::rebuild::{Damage, Outcome, Rebuild};
use super::REPAIRED_TAG;
use crate::error::{Error, Result};
use crate::format::snapshot::Snapshot;
use crate::ids::{SnapshotId, TreeId};
use crate::ops::backup::INDEX_EVERY;
use crate::ops::forget::delete_snapshot;
use crate::repo::index::Index;
use crate::repo::pack_writer::WriterOptions;
use crate::repo::{find_in, Repository};
use std::collections::HashSet;

#[derive(Clone, Debug, Default)]
pub struct SnapshotsOptions {
    /// Snapshots to repair (`latest` or id prefixes); none: every snapshot.
    pub snapshots: Vec<String>,
    /// Delete each original once its replacement is stored (and those with no root tree).
    pub forget: bool,
    /// Report what would change; write and delete nothing.
    pub dry_run: bool,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct SnapshotsReport {
    pub dry_run: bool,
    pub snapshots_checked: usize,
    pub unchanged: usize,
    pub repaired: Vec<RepairedSnapshot>,
    /// Snapshots whose root tree is gone: nothing of them restores, no new one is written.
    pub unrepairable: Vec<UnrepairableSnapshot>,
    /// New tree blobs stored (in a dry run: that would be).
    pub trees_written: usize,
    /// Packs the index lists that are no longer stored. Their blobs count as gone even where
    /// another pack holds a copy (the index keeps one location per blob): `repair index`
    /// first finds those copies.
    pub indexed_packs_missing: usize,
}

#[derive(Debug, serde::Serialize)]
pub struct RepairedSnapshot {
    /// Snapshot ids, in hex.
    pub original: String,
    /// `None` in a dry run.
    pub new: Option<String>,
    /// Paths (in the snapshot, before renaming) of files that lost data.
    pub damaged_files: Vec<String>,
    /// Paths of directories whose tree is gone.
    pub missing_trees: Vec<String>,
    /// The original was deleted (`forget`).
    pub forgotten: bool,
}

#[derive(Debug, serde::Serialize)]
pub struct UnrepairableSnapshot {
    pub snapshot: String,
    pub reason: String,
    pub forgotten: bool,
}

/// `pbak repair snapshots`: [`repair`] under the prune marker, reading the repository only.
pub fn run(repo: &Repository, opts: &SnapshotsOptions, log: &(dyn Fn(&str) + Sync)) -> Result<SnapshotsReport> {
    let repo = repo.uncached();
    let _marker = super::lock(&repo, "repair snapshots", opts.dry_run)?;
    let index = repo.load_index().map_err(|e| match e {
        Error::Corrupt { object, reason } if object.starts_with("index/") => Error::Usage(format!(
            "{object} is damaged ({reason}); `pbak repair index` rebuilds the index from the packs: run it first"
        )),
        e => e,
    })?;
    repair(&repo, &index, opts, log)
}

/// Repair the selected snapshots of `repo` (the caller holds the exclusive lock).
pub fn repair(
    repo: &Repository,
    index: &Index,
    opts: &SnapshotsOptions,
    log: &(dyn Fn(&str) + Sync),
) -> Result<SnapshotsReport> {
    let scan = repo.scan_snapshots()?;
    scan.warn();
    let mut selected: Vec<&(SnapshotId, Snapshot)> = match opts.snapshots.is_empty() {
        true => scan.good.iter().collect(),
        false => opts
            .snapshots
            .iter()
            .map(|s| find_in(&scan.good, s))
            .collect::<Result<_>>()?,
    };
    let mut seen = HashSet::new();
    selected.retain(|s| seen.insert(s.0));
    let stored = repo.stored_packs()?;
    let present: Vec<bool> = index.packs().iter().map(|p| stored.contains(&p.to_hex())).collect();
    let writer = WriterOptions {
        connections: 1,
        dry_run: opts.dry_run,
        index_every: Some(INDEX_EVERY),
    };
    let ((outcomes, trees_written), _) = repo.write_packs(&writer, |sink| {
        let mut r = Rebuild::new(repo, index, &present, sink);
        let mut out = Vec::new();
        for (id, s) in &selected {
            log(&format!("checking snapshot {}", id.short()));
            out.push(r.snapshot(s)?);
        }
        Ok((out, r.trees_written))
    })?;
    let mut rep = SnapshotsReport {
        dry_run: opts.dry_run,
        snapshots_checked: selected.len(),
        trees_written,
        indexed_packs_missing: present.iter().filter(|p| !**p).count(),
        ..Default::default()
    };
    if !opts.dry_run {
        // The trees' index files are stored: make them durable before a snapshot names them.
        repo.backend().barrier()?;
    }
    for ((id, s), outcome) in selected.iter().zip(outcomes) {
        match outcome {
            Outcome::Unchanged => rep.unchanged += 1,
            Outcome::RootMissing => rep.unrepairable.push(UnrepairableSnapshot {
                snapshot: id.to_hex(),
                reason: format!("its root tree {} is gone", s.tree.short()),
                forgotten: opts.forget && !opts.dry_run,
            }),
            Outcome::Changed { tree, damage } => {
                let new = match opts.dry_run {
                    true => None,
                    false => Some(repo.save_snapshot(&repaired(s, id, tree))?.to_hex()),
                };
                rep.repaired.push(report_entry(id.to_hex(), new, damage, opts));
            }
        }
    }
    if opts.forget && !opts.dry_run {
        repo.backend().barrier()?;
        let originals = rep.repaired.iter().map(|r| &r.original);
        for hex in originals.chain(rep.unrepairable.iter().map(|u| &u.snapshot)) {
            delete_snapshot(repo, &SnapshotId::from_hex(hex).expect("written from an id"))?;
        }
        repo.backend().barrier()?;
    }
    Ok(rep)
}

/// The replacement of snapshot `s` (`id`): its fields, the new root, the repair tags.
fn repaired(s: &Snapshot, id: &SnapshotId, tree: TreeId) -> Snapshot {
    let mut new = s.clone();
    new.tree = tree;
    if !new.tags.iter().any(|t| t == REPAIRED_TAG) {
        new.tags.push(REPAIRED_TAG.into());
    }
    new.tags.push(format!("repaired-from:{}", id.short()));
    new
}

fn report_entry(
    original: String,
    new: Option<String>,
    damage: Vec<Damage>,
    opts: &SnapshotsOptions,
) -> RepairedSnapshot {
    let (mut damaged_files, mut missing_trees) = (Vec::new(), Vec::new());
    for d in damage {
        let path = format!("/{}", String::from_utf8_lossy(&d.path));
        match d.tree {
            true => missing_trees.push(path),
            false => damaged_files.push(path),
        }
    }
    RepairedSnapshot {
        original,
        new,
        damaged_files,
        missing_trees,
        forgotten: opts.forget && !opts.dry_run,
    }
}
