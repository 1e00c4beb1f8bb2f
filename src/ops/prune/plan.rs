//! What prune would do, decided from the index files and the snapshots' trees alone: which
//! blobs are used, how full every pack is, which packs to mark, repack, bring back and
//! delete (see the two-phase rules in the module comment of `ops::prune`).

use super::{PruneOptions, PruneReport};
use crate::error::{Error, Result};
use crate::format::layout;
use crate::format::snapshot::Snapshot;
use crate::ids::{AnyBlobId, PackId, SnapshotId, TreeId};
use crate::repo::index::{Index, IndexBuilder};
use crate::repo::Repository;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Stored bytes of one pack's blobs (as the first index file listing it says), and of
/// those in use.
#[derive(Clone, Copy, Debug, Default)]
pub struct PackUse {
    pub total: u64,
    pub used: u64,
}

/// Everything prune decided; [`super::execute::execute`] carries it out.
pub struct Plan {
    /// The index files read, by name, in listing order. Their lists are not kept: the
    /// compact index is all the plan needs, and execute reads the files again, one at a
    /// time, to write the new ones (prune's memory is the compact index's, not the lists').
    pub index_names: Vec<String>,
    pub index: Index,
    /// Per pack of [`Index::packs`], in its order.
    pub usage: Vec<PackUse>,
    pub marks: Marks,
    /// Packs deleted in this run: marked packs whose time came and that are still unneeded,
    /// and with a zero grace period every unneeded pack at once.
    pub delete: Vec<PackId>,
    /// Live packs that no snapshot needs: marked now, deleted by a later prune.
    pub mark: Vec<PackId>,
    pub repack: Vec<PackId>,
    /// Marked packs that a snapshot needs again: listed live again.
    pub bring_back: Vec<PackId>,
    /// Stored packs that no index file lists (hex names): marked (or, with a zero grace
    /// period, deleted).
    pub unreferenced: Vec<String>,
    /// Some pack is listed live by two index files (an interrupted prune or `repair index`):
    /// the index is rewritten even when nothing else is to be done.
    pub listed_twice: bool,
    /// This run's time and the `delete_after` of the marks it writes.
    pub now: i64,
    pub delete_after: i64,
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

/// Read every index file, mark what the snapshots use, and choose what to do with each pack.
pub fn plan(repo: &Repository, opts: &PruneOptions, log: &(dyn Fn(&str) + Sync)) -> Result<Plan> {
    plan_tries(repo, opts, log, 3)
}

/// [`plan`], again (at most `tries` times in all) when a snapshot refers to blobs in no index
/// file read and index files were added meanwhile: a backup on another host wrote its index
/// files after this prune listed them, and its snapshot before it listed the snapshots.
fn plan_tries(repo: &Repository, opts: &PruneOptions, log: &(dyn Fn(&str) + Sync), tries: u32) -> Result<Plan> {
    let mut rep = PruneReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    log("loading index files");
    // Only names that are index ids: a stray name (a `README`) is warned about by the
    // loader and must not be deleted with the old index files.
    let mut index_names = repo.backend().list(layout::INDEX)?;
    index_names.retain(|n| crate::ids::IndexId::from_hex(n).is_some());
    let (index, mut usage, listed_twice) = load(repo, &index_names)?;

    log("finding data in use");
    let snaps = repo.snapshots()?;
    rep.snapshots = snaps.len();
    let marks = match mark_used(repo, &index, &snaps) {
        Ok(m) => m,
        Err(e) => {
            let mut now = repo.backend().list(layout::INDEX)?;
            now.retain(|n| crate::ids::IndexId::from_hex(n).is_some() && !index_names.contains(n));
            if tries <= 1 || now.is_empty() {
                return Err(e);
            }
            log("a backup finished meanwhile: reading the index again");
            return plan_tries(repo, opts, log, tries - 1);
        }
    };
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
    let now = chrono::Utc::now().timestamp();
    let at_once = opts.delete_after.is_zero();
    let mut p = Plan {
        delete: Vec::new(),
        mark: Vec::new(),
        repack: Vec::new(),
        bring_back: Vec::new(),
        unreferenced: Vec::new(),
        now,
        delete_after: now.saturating_add(opts.delete_after.num_seconds()),
        index_names,
        listed_twice,
        index,
        usage,
        marks,
        report: rep,
    };
    let mut candidates: Vec<(PackId, PackUse)> = Vec::new();
    for (pos, (pid, u)) in p.index.packs().iter().zip(&p.usage).enumerate() {
        let missing = || {
            Error::corrupt(
                layout::pack(pid),
                "holds data in use but is missing; prune deleted nothing (run `pbak check`)",
            )
        };
        let exists = stored.contains(&pid.to_hex());
        match p.index.mark(pos as u32) {
            Some(_) if u.used > 0 && !exists => return Err(missing()),
            Some(_) if u.used > 0 => p.bring_back.push(*pid),
            Some(m) if at_once || now >= m.delete_after => p.delete.push(*pid),
            Some(_) => p.report.packs_marked_kept += 1,
            None if u.used == 0 && at_once => p.delete.push(*pid),
            None if u.used == 0 => p.mark.push(*pid),
            None if !exists => return Err(missing()),
            None if u.used < u.total => candidates.push((*pid, *u)),
            None => {}
        }
    }
    p.unreferenced = {
        let indexed: HashSet<String> = p.index.packs().iter().map(|p| p.to_hex()).collect();
        stored.iter().filter(|s| !indexed.contains(*s)).cloned().collect()
    };
    p.repack = choose_repack(candidates, opts, &mut p.report);
    count(&mut p, at_once);
    Ok(p)
}

/// Fill in the plan's pack counts and freed bytes.
fn count(p: &mut Plan, at_once: bool) {
    let rep = &mut p.report;
    rep.delete_after = p.delete_after;
    rep.packs_deleted = p.delete.len();
    rep.packs_marked = p.mark.len();
    rep.packs_brought_back = p.bring_back.len();
    rep.packs_repacked = p.repack.len();
    // Live packs that stay live, and marked ones listed live again. `delete` also holds
    // marked packs whose time came, which were not live.
    let live = p.index.packs().len() - p.index.marks().count();
    let live_deleted = p
        .delete
        .iter()
        .filter(|id| p.index.pack_position(id).is_some_and(|pos| p.index.mark(pos).is_none()))
        .count();
    rep.packs_kept = live - p.mark.len() - p.repack.len() - live_deleted + p.bring_back.len();
    match at_once {
        true => rep.unreferenced_packs_deleted = p.unreferenced.len(),
        false => rep.unreferenced_packs_marked = p.unreferenced.len(),
    }
    let pos_of = |id: &PackId| p.index.pack_position(id).expect("indexed") as usize;
    let repacked_total: u64 = p.repack.iter().map(|id| p.usage[pos_of(id)].total).sum();
    let deleted: u64 = p.delete.iter().map(|id| p.usage[pos_of(id)].total).sum();
    // Repacked packs are deleted now only with a zero grace period; otherwise later.
    rep.bytes_freed = deleted
        + if at_once {
            repacked_total - rep.bytes_repacked
        } else {
            0
        };
    let marked: u64 = p.mark.iter().map(|id| p.usage[pos_of(id)].total).sum();
    rep.bytes_marked = if at_once {
        0
    } else {
        marked + repacked_total - rep.bytes_repacked
    };
}

/// One table of every pack listed (a pack listed live anywhere is live; see
/// [`IndexBuilder::finish`]) and each pack's total stored bytes, from the first index file
/// listing it; the files are decoded a few at a time and dropped.
fn load(repo: &Repository, names: &[String]) -> Result<(Index, Vec<PackUse>, bool)> {
    let mut builder = IndexBuilder::default();
    let mut totals: HashMap<PackId, u64> = HashMap::new();
    let (mut live_seen, mut listed_twice) = (HashSet::new(), false);
    repo.for_each_index_file(names, |name, f| {
        for p in &f.packs {
            listed_twice |= !live_seen.insert(p.id);
        }
        let live = f.packs.iter().map(|p| (p.id, &p.blobs));
        for (id, blobs) in live.chain(f.marked.iter().map(|m| (m.id, &m.blobs))) {
            totals
                .entry(id)
                .or_insert_with(|| blobs.iter().map(|b| b.length as u64).sum());
        }
        builder.add_file(name, &f);
        Ok(())
    })?;
    let index = builder.finish();
    let usage = index
        .packs()
        .iter()
        .map(|id| PackUse {
            total: totals.get(id).copied().unwrap_or(0),
            used: 0,
        })
        .collect();
    Ok((index, usage, listed_twice))
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
