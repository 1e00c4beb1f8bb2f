//! What prune would do, decided from the index files and the snapshots' trees alone: which
//! blobs are used, how full every pack is, which packs to delete and which to repack.

use super::{PruneOptions, PruneReport};
use crate::error::{Error, Result};
use crate::format::layout;
use crate::format::snapshot::Snapshot;
use crate::ids::{AnyBlobId, PackId, SnapshotId, TreeId};
use crate::repo::index::{Index, IndexBuilder, IndexFile};
use crate::repo::Repository;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Stored bytes of one pack's blobs, and of those in use.
#[derive(Clone, Copy, Debug, Default)]
pub struct PackUse {
    pub total: u64,
    pub used: u64,
    /// `total` was taken from the first index file listing the pack.
    counted: bool,
}

/// Everything prune decided; [`super::execute::execute`] carries it out.
pub struct Plan {
    /// The index files read, by name and content.
    pub index_names: Vec<String>,
    pub files: Vec<IndexFile>,
    pub index: Index,
    /// Per pack of [`Index::packs`], in its order.
    pub usage: Vec<PackUse>,
    pub marks: Marks,
    pub delete: Vec<PackId>,
    pub repack: Vec<PackId>,
    /// Stored packs that no index file lists (hex names).
    pub unreferenced: Vec<String>,
    pub report: PruneReport,
}

/// One bit per blob of the index: in use.
pub struct Marks(Vec<AtomicU64>);

impl Marks {
    fn new(n: usize) -> Marks {
        Marks((0..n.div_ceil(64)).map(|_| AtomicU64::new(0)).collect())
    }
    /// Set bit `i`; true if it was not set before.
    fn set(&self, i: usize) -> bool {
        let bit = 1u64 << (i % 64);
        self.0[i / 64].fetch_or(bit, Relaxed) & bit == 0
    }
    pub fn get(&self, i: usize) -> bool {
        self.0[i / 64].load(Relaxed) & (1u64 << (i % 64)) != 0
    }
}

/// Mark every blob reachable from the snapshots' trees.
fn mark_used(repo: &Repository, index: &Index, snaps: &[(SnapshotId, Snapshot)]) -> Result<Marks> {
    let marks = Marks::new(index.blob_count());
    let missing = |what: String, id: &dyn AnyBlobId| {
        let id = id.blob();
        Error::corrupt(
            what,
            format!("refers to blob {id}, which is in no index; prune deleted nothing (run `pbak check`)"),
        )
    };
    let mut roots = Vec::new();
    for (sid, s) in snaps {
        let pos = index
            .position(&s.tree)
            .ok_or_else(|| missing(format!("snapshot {}", sid.short()), &s.tree))?;
        if marks.set(pos) {
            roots.push(s.tree);
        }
    }
    let first = |parent: &TreeId, st: &TreeId| {
        let pos = index
            .position(st)
            .ok_or_else(|| missing(format!("tree {}", parent.short()), st))?;
        Ok(marks.set(pos))
    };
    repo.walk_levels(index, roots, &first, &|tid, tree| {
        for c in tree?.nodes.iter().flat_map(|n| &n.content) {
            let pos = index
                .position(c)
                .ok_or_else(|| missing(format!("tree {}", tid.short()), c))?;
            marks.set(pos);
        }
        Ok(())
    })?;
    Ok(marks)
}

/// Read every index file, mark what the snapshots use, and choose what to delete and repack.
pub fn plan(repo: &Repository, opts: &PruneOptions, log: &(dyn Fn(&str) + Sync)) -> Result<Plan> {
    let mut rep = PruneReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    log("loading index files");
    // Only names that are index ids: a stray name (a `README`) is warned about by the
    // loader and must not be deleted with the old index files.
    let mut index_names = repo.backend().list(layout::INDEX)?;
    index_names.retain(|n| crate::ids::IndexId::from_hex(n).is_some());
    let mut files = Vec::new();
    repo.for_each_index_file(&index_names, |f| {
        files.push(f);
        Ok(())
    })?;
    let (index, mut usage) = merge(&files);

    log("finding data in use");
    let snaps = repo.snapshots()?;
    rep.snapshots = snaps.len();
    let marks = mark_used(repo, &index, &snaps)?;
    for (pos, loc) in index.locations().enumerate() {
        if marks.get(pos) {
            usage[loc.pack as usize].used += loc.length as u64;
            rep.blobs_used += 1;
        } else {
            rep.blobs_unused += 1;
        }
    }
    rep.bytes_used = usage.iter().map(|u| u.used).sum();
    rep.bytes_unused = usage.iter().map(|u| u.total - u.used.min(u.total)).sum();

    let stored = repo.stored_packs()?;
    let mut delete: Vec<PackId> = Vec::new();
    let mut candidates: Vec<(PackId, PackUse)> = Vec::new();
    for (pid, u) in index.packs().iter().zip(&usage) {
        let exists = stored.contains(&pid.to_hex());
        if u.used == 0 {
            delete.push(*pid);
        } else if !exists {
            return Err(Error::corrupt(
                layout::pack(pid),
                "holds data in use but is missing; prune deleted nothing (run `pbak check`)",
            ));
        } else if u.used < u.total {
            candidates.push((*pid, *u));
        }
    }
    let unreferenced: Vec<String> = {
        let indexed: HashSet<String> = index.packs().iter().map(|p| p.to_hex()).collect();
        stored.iter().filter(|s| !indexed.contains(*s)).cloned().collect()
    };
    let repack = choose_repack(candidates, opts, &mut rep);
    rep.packs_deleted = delete.len();
    rep.packs_repacked = repack.len();
    rep.packs_kept = index.packs().len() - delete.len() - repack.len();
    rep.unreferenced_packs_deleted = unreferenced.len();
    let pos_of = |p: &PackId| index.pack_position(p).expect("indexed") as usize;
    rep.bytes_freed = delete
        .iter()
        .chain(&repack)
        .map(|p| usage[pos_of(p)].total)
        .sum::<u64>()
        - rep.bytes_repacked;
    Ok(Plan {
        index_names,
        files,
        index,
        usage,
        marks,
        delete,
        repack,
        unreferenced,
        report: rep,
    })
}

/// One table of every pack listed (the first index file naming a pack wins) and each
/// pack's total stored bytes.
fn merge(files: &[IndexFile]) -> (Index, Vec<PackUse>) {
    let mut builder = IndexBuilder::default();
    let mut listed: HashSet<PackId> = HashSet::new();
    for f in files {
        for p in &f.packs {
            if listed.insert(p.id) {
                builder.add_pack(p);
            }
        }
    }
    let index = builder.finish();
    let mut usage = vec![PackUse::default(); index.packs().len()];
    for f in files {
        for p in &f.packs {
            let u = &mut usage[index.pack_position(&p.id).expect("added") as usize];
            if !u.counted {
                u.total = p.blobs.iter().map(|b| b.length as u64).sum();
                u.counted = true;
            }
        }
    }
    (index, usage)
}

/// Repack the emptiest packs first until the unused bytes left are within the limit.
fn choose_repack(mut candidates: Vec<(PackId, PackUse)>, opts: &PruneOptions, rep: &mut PruneReport) -> Vec<PackId> {
    let allowed = (rep.bytes_used as f64 * opts.max_unused_percent / 100.0) as u64;
    let mut left: u64 = candidates.iter().map(|(_, u)| u.total - u.used).sum();
    candidates.sort_by(|a, b| {
        let ra = (a.1.total - a.1.used) as f64 / a.1.total as f64;
        let rb = (b.1.total - b.1.used) as f64 / b.1.total as f64;
        rb.total_cmp(&ra)
    });
    let mut repack = Vec::new();
    for (pid, u) in &candidates {
        if left <= allowed {
            break;
        }
        left -= u.total - u.used;
        repack.push(*pid);
        rep.bytes_repacked += u.used;
    }
    rep.bytes_unused_after = left;
    repack
}
