//! `check`, in levels. The structure level (always): every snapshot object authenticates
//! and decodes, its trees load, every blob they refer to is indexed, every indexed pack is
//! stored with the size its index entries give it, no pack is listed live in two index
//! files, and stored packs in no index and packs marked for deletion are reported. The data
//! level (`read_data`, or a [`Subset`] of the packs): each pack read is hashed against its
//! name and every blob in it opened and checked against its id.
//!
//! Every problem names its object and the snapshots it affects (found as `affected.rs`
//! says). Errors are damage: something a snapshot or the index promises is not there or not
//! intact. Warnings are harmless leftovers or states the next prune resolves. The check
//! reads the repository itself, never the cache; it takes no lock and writes nothing.
//!
//! Files: `structure.rs` (the index, the packs, the tree walk), `data.rs` (subsets and the
//! reading of a pack), `affected.rs` (problems to snapshots).

mod affected;
mod data;
mod structure;

pub use data::Subset;

use crate::error::Result;
use crate::format::layout;
use crate::format::snapshot::Snapshot;
use crate::ids::{DataId, PackId, SnapshotId, TreeId};
use crate::repo::index::{Index, Mark};
use crate::repo::Repository;
use rayon::prelude::*;
use std::collections::HashMap;

#[derive(Clone, Copy, Debug, Default)]
pub struct CheckOptions {
    /// Read every pack (or, with `subset`, those it names).
    pub read_data: bool,
    pub subset: Option<Subset>,
}

/// Packs marked for deletion by a prune and still stored.
#[derive(Debug, Default, serde::Serialize)]
pub struct MarkedPacks {
    pub count: usize,
    pub bytes: u64,
    /// The earliest `delete_after` of them (UTC seconds): no prune deletes one before.
    pub first_delete_after: Option<i64>,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct CheckReport {
    pub snapshots: usize,
    pub trees: usize,
    /// Packs the index lists, live or marked.
    pub packs: usize,
    pub blobs: usize,
    /// The `--read-data-subset` given, if any.
    pub subset: Option<String>,
    pub packs_read: usize,
    pub bytes_read: u64,
    /// The ids of the packs read, in id order.
    pub read_packs: Vec<String>,
    pub marked_packs: MarkedPacks,
    /// Stored packs no index refers to (left by an interrupted backup; prune removes them).
    pub unreferenced_packs: usize,
    pub warnings: Vec<String>,
    pub errors: Vec<String>,
}

impl CheckReport {
    /// 0: nothing found; 1: warnings only; 2: errors.
    pub fn exit_code(&self) -> i32 {
        match (self.errors.is_empty(), self.warnings.is_empty()) {
            (false, _) => 2,
            (true, false) => 1,
            (true, true) => 0,
        }
    }
}

/// What is wrong with one object.
#[derive(Clone, Debug)]
enum Problem {
    PackMissing(PackId),
    PackSize {
        pack: PackId,
        size: u64,
        expected: u64,
    },
    PackDamaged(PackId, String),
    /// Stored and marked: only worth saying when a snapshot needs it.
    Marked(PackId, Mark),
    MarkedMissing(PackId, Mark),
    BlobUnindexed(DataId),
    TreeUnindexed(TreeId),
    TreeDamaged(TreeId, String),
}

/// "snapshots 1a2b3c4d, 5e6f7a8b" (at most 20 named), or "no snapshot uses it".
fn snapshots_named(snaps: &[String]) -> String {
    const SHOWN: usize = 20;
    let more = match snaps.len() {
        0 => return "no snapshot uses it".into(),
        n if n > SHOWN => format!(" and {} more", n - SHOWN),
        _ => String::new(),
    };
    let s = if snaps.len() == 1 { "" } else { "s" };
    let shown = &snaps[..snaps.len().min(SHOWN)];
    format!("snapshot{s} {}{more}", shown.join(", "))
}

fn utc(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0).map_or(secs.to_string(), |t| t.format("%Y-%m-%d %H:%M UTC").to_string())
}

impl Problem {
    /// The line to report, naming `snaps` (short ids of the snapshots it affects), and
    /// whether it is an error; `None` when there is nothing to report.
    fn message(&self, snaps: &[String]) -> Option<(bool, String)> {
        let who = snapshots_named(snaps);
        let used = !snaps.is_empty();
        let pack = |id: &PackId| layout::pack(id);
        let (error, line) = match self {
            Problem::PackMissing(p) if !used => (
                true,
                format!(
                    "pack {} is indexed but missing: {who}, but backups would rely on it; \
                     `pbak repair index` drops it from the index",
                    pack(p)
                ),
            ),
            Problem::PackMissing(p) => (true, format!("pack {} is indexed but missing: {who}", pack(p))),
            Problem::PackSize {
                pack: p,
                size,
                expected,
            } => (
                true,
                format!(
                    "pack {} has {size} bytes where its index entries give {expected}: {who}",
                    pack(p)
                ),
            ),
            Problem::PackDamaged(p, why) => (true, format!("pack {} is damaged ({why}): {who}", pack(p))),
            Problem::Marked(_, _) if !used => return None,
            Problem::Marked(p, m) => (
                false,
                format!(
                    "pack {} is marked for deletion after {} (by a prune on {}) but in use, by \
                     {who}: the next prune brings it back",
                    pack(p),
                    utc(m.delete_after),
                    m.host
                ),
            ),
            Problem::MarkedMissing(p, _) if !used => (
                false,
                format!(
                    "pack {} is marked for deletion and already gone: harmless, {who}",
                    pack(p)
                ),
            ),
            Problem::MarkedMissing(p, m) => (
                true,
                format!("pack {} (marked by a prune on {}) is missing: {who}", pack(p), m.host),
            ),
            Problem::BlobUnindexed(b) => (true, format!("data blob {b} is in no index: {who}")),
            Problem::TreeUnindexed(t) => (true, format!("tree {t} is in no index: {who}")),
            Problem::TreeDamaged(t, why) => (true, format!("tree {t} cannot be read ({why}): {who}")),
        };
        Some((error, line))
    }
}

/// `pbak check`: with the index and every object read from the repository itself, never
/// from the local cache; it takes no lock and writes nothing.
pub fn run(repo: &Repository, opts: &CheckOptions) -> Result<CheckReport> {
    check(&repo.uncached(), opts)
}

fn check(repo: &Repository, opts: &CheckOptions) -> Result<CheckReport> {
    let loaded = structure::load_index(repo)?;
    let index = &loaded.index;
    let mut rep = CheckReport {
        packs: index.packs().len(),
        blobs: index.blob_count(),
        subset: opts.subset.map(|s| s.to_string()),
        ..Default::default()
    };
    let stored = structure::stored_packs(repo)?;
    let mut found = structure::check_packs(&loaded, &stored, &mut rep);
    let snaps = snapshots(repo, &mut rep);
    rep.snapshots = snaps.len();
    let walked = if opts.read_data || opts.subset.is_some() {
        // The trees are walked while the packs are read (the walk waits on tree packs, the
        // read is CPU-bound). A walk notes which trees lead to damage it knows of, so when
        // the read finds a damaged pack the walk is done again, knowing it.
        let chosen = chosen_packs(&loaded, &stored, opts.subset.as_ref(), &found);
        let (walked, damaged) = rayon::join(
            || structure::walk_trees(repo, index, &snaps, found.clone()),
            || read_packs(repo, index, &chosen),
        );
        let again = !damaged.is_empty();
        note_damaged(index, damaged, &mut found);
        rep.packs_read = chosen.len();
        rep.bytes_read = chosen.iter().map(|p| p.1).sum();
        rep.read_packs = chosen.iter().map(|p| p.0.to_hex()).collect();
        match again {
            true => structure::walk_trees(repo, index, &snaps, found)?,
            false => walked?,
        }
    } else {
        structure::walk_trees(repo, index, &snaps, found)?
    };
    rep.trees = walked.trees;
    let problems = walked.found.problems.len();
    let affected = walked.graph.affected(&walked.roots, walked.found.hits, problems);
    let (mut errors, mut warnings) = (Vec::new(), Vec::new());
    for (p, who) in walked.found.problems.iter().zip(affected) {
        let names: Vec<String> = who.iter().map(|s| snaps[*s].0.short()).collect();
        match p.message(&names) {
            Some((true, line)) => errors.push(line),
            Some((false, line)) => warnings.push(line),
            None => {}
        }
    }
    errors.sort();
    warnings.sort();
    rep.errors.extend(errors);
    rep.warnings.extend(warnings);
    Ok(rep)
}

/// What [`read_back`] read.
#[derive(Debug, Default, serde::Serialize)]
pub struct ReadBack {
    pub packs: usize,
    pub bytes: u64,
}

/// Read back what a backup just wrote: every pack its index files list is downloaded from
/// the repository (never the cache), hashed against its name, and every blob in it opened
/// and checked against its id, as `check --read-data` does. The first damaged pack is the
/// error (the snapshot exists; restore and check will report the same pack).
pub fn read_back(repo: &Repository, index_files: &[crate::ids::IndexId]) -> Result<ReadBack> {
    let repo = repo.uncached();
    let mut builder = crate::repo::index::IndexBuilder::default();
    let names: Vec<String> = index_files.iter().map(|i| i.to_hex()).collect();
    repo.for_each_index_file(&names, |name, f| {
        builder.add_file(name, &f);
        Ok(())
    })?;
    let index = builder.finish();
    let sized: Vec<(PackId, u64)> = index
        .packs()
        .par_iter()
        .map(|id| Ok((*id, repo.backend().size(&layout::pack(id))?)))
        .collect::<Result<_>>()?;
    sized
        .par_iter()
        .try_for_each(|(id, size)| data::read_pack(&repo, &index, id, *size))?;
    Ok(ReadBack {
        packs: sized.len(),
        bytes: sized.iter().map(|p| p.1).sum(),
    })
}

/// The snapshots that decode, oldest first; damaged objects and a failed listing are errors.
fn snapshots(repo: &Repository, rep: &mut CheckReport) -> Vec<(SnapshotId, Snapshot)> {
    match repo.scan_snapshots() {
        Ok(scan) => {
            for name in &scan.stray {
                eprintln!("pbak: warning: {name} is not a snapshot id (not written by pbak)");
            }
            for (name, reason) in &scan.damaged {
                let id = name.rsplit('/').next().unwrap_or(name);
                rep.errors.push(format!(
                    "snapshot object {name} is damaged: {reason}; `pbak forget {id}` removes it"
                ));
            }
            scan.good
        }
        Err(e) => {
            rep.errors.push(e.to_string());
            Vec::new()
        }
    }
}

/// The stored indexed packs in `subset` (all without one) that are read, except those
/// already known to be missing or of the wrong size and those marked by name (no index lists
/// their blobs: leftovers a prune deletes).
fn chosen_packs(
    loaded: &structure::Loaded,
    stored: &HashMap<PackId, u64>,
    subset: Option<&Subset>,
    found: &structure::Found,
) -> Vec<(PackId, u64)> {
    let readable = |pos: usize| match found.has_pack(pos as u32) {
        None | Some(Problem::Marked(..)) => true,
        Some(_) => false,
    };
    let packs: Vec<(PackId, u64)> = (loaded.index.packs().iter().enumerate())
        .filter(|(pos, id)| readable(*pos) && loaded.lists_blobs_of(id))
        .filter_map(|(_, id)| Some((*id, *stored.get(id)?)))
        .collect();
    data::select(packs, subset, data::this_week())
}

/// Read `chosen`, in parallel; the damaged packs and why.
fn read_packs(repo: &Repository, index: &Index, chosen: &[(PackId, u64)]) -> Vec<(PackId, String)> {
    chosen
        .par_iter()
        .enumerate()
        .filter_map(|(k, (id, size))| {
            // The kernel reads the next pack (usually this thread's next: rayon splits the
            // list into runs) while the thread opens this one, whose reader hints its own.
            if let Some((next, next_size)) = chosen.get(k + 1) {
                repo.will_read_pack_ranges(next, &[(0, *next_size)]);
            }
            let e = data::read_pack(repo, index, id, *size).err()?;
            Some((*id, e.detail()))
        })
        .collect()
}

/// Damage found by reading becomes a problem of its pack.
fn note_damaged(index: &Index, damaged: Vec<(PackId, String)>, found: &mut structure::Found) {
    for (id, why) in damaged {
        let pos = index.pack_position(&id).expect("an indexed pack");
        // The pack is named once, by the message: not again inside the reason.
        let path = layout::pack(&id);
        let why = why.replace(&format!(" in {path}"), "");
        let why = why.strip_prefix(&format!("{path}: ")).unwrap_or(&why).to_string();
        found.pack(pos, Problem::PackDamaged(id, why));
    }
}
