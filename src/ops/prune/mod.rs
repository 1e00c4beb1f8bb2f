//! `prune`: delete the data no snapshot needs (`forget` removes the snapshots first):
//!
//! 1. read every index file and mark, by walking every snapshot's trees, each blob in use;
//! 2. packs with no used blob are deleted; packs with some unused bytes are repacked (their
//!    used blobs copied, verified, into new packs) while the unused bytes left in the
//!    repository exceed `--max-unused` percent of the used ones;
//! 3. write order keeps every state consistent: new packs → new index files (covering every
//!    kept and new pack) → durability barrier → delete the old index files → barrier →
//!    delete the dropped packs. After a crash at any point every index file present lists
//!    only packs that exist; packs left without an index are deleted by the next prune.
//!
//! Prune runs under the exclusive lock, so no backup adds packs meanwhile. If any snapshot
//! refers to a blob that is in no index, prune stops before deleting anything.

use crate::error::{Error, Result};
use crate::format::layout;
use crate::format::pack::{decode_header, BlobKind, SealedBlob};
use crate::format::snapshot::Snapshot;
use crate::ids::{AnyBlobId, PackId, SnapshotId, TreeId};
use crate::repo::index::{Index, IndexBuilder, IndexFile, IndexPack};
use crate::repo::pack_writer::PackBuilder;
use crate::repo::Repository;
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// Unused bytes tolerated in kept packs, in percent of the used bytes.
    pub max_unused_percent: f64,
    pub dry_run: bool,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            max_unused_percent: 5.0,
            dry_run: false,
        }
    }
}

#[derive(Debug, Default, serde::Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub snapshots: usize,
    pub blobs_used: u64,
    pub blobs_unused: u64,
    /// Stored bytes of used and unused blobs before pruning.
    pub bytes_used: u64,
    pub bytes_unused: u64,
    pub packs_kept: usize,
    pub packs_deleted: usize,
    pub packs_repacked: usize,
    pub packs_written: usize,
    pub unreferenced_packs_deleted: usize,
    pub bytes_repacked: u64,
    /// Stored blob bytes removed (deleted and repacked packs, minus what repacking wrote).
    pub bytes_freed: u64,
    /// Unused bytes left in kept packs.
    pub bytes_unused_after: u64,
    pub index_files_removed: usize,
    pub index_files_written: usize,
    /// Partly written packs a killed backup or prune left in a local repository's `.tmp/`.
    pub temp_packs_removed: usize,
}

#[derive(Clone, Copy, Default)]
struct PackUse {
    total: u64,
    used: u64,
    /// `total` was taken from the first index file listing the pack.
    counted: bool,
}

/// Blobs per written index file.
const INDEX_FILE_BLOBS: usize = 50_000;

struct Marks(Vec<AtomicU64>);

impl Marks {
    fn new(n: usize) -> Marks {
        Marks((0..n.div_ceil(64)).map(|_| AtomicU64::new(0)).collect())
    }
    /// Set bit `i`; true if it was not set before.
    fn set(&self, i: usize) -> bool {
        let bit = 1u64 << (i % 64);
        self.0[i / 64].fetch_or(bit, Relaxed) & bit == 0
    }
    fn get(&self, i: usize) -> bool {
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

pub fn prune(repo: &Repository, opts: &PruneOptions, log: &(dyn Fn(&str) + Sync)) -> Result<PruneReport> {
    let mut rep = PruneReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    log("loading index files");
    let index_names = repo.backend().list("index")?;
    let files: Vec<IndexFile> = index_names
        .par_iter()
        .map(|n| repo.read_index_file(n))
        .collect::<Result<_>>()?;
    let mut builder = IndexBuilder::default();
    let mut listed: HashSet<PackId> = HashSet::new();
    for f in &files {
        for p in &f.packs {
            if listed.insert(p.id) {
                builder.add_pack(p);
            }
        }
    }
    let index = builder.finish();
    let mut usage = vec![PackUse::default(); index.packs().len()];
    for f in &files {
        for p in &f.packs {
            let u = &mut usage[index.pack_position(&p.id).expect("added") as usize];
            if !u.counted {
                u.total = p.blobs.iter().map(|b| b.length as u64).sum();
                u.counted = true;
            }
        }
    }

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
    let mut repack: Vec<PackId> = Vec::new();
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
    // Repack the emptiest packs first until the unused bytes left are within the limit.
    let allowed = (rep.bytes_used as f64 * opts.max_unused_percent / 100.0) as u64;
    let mut left: u64 = candidates.iter().map(|(_, u)| u.total - u.used).sum();
    candidates.sort_by(|a, b| {
        let ra = (a.1.total - a.1.used) as f64 / a.1.total as f64;
        let rb = (b.1.total - b.1.used) as f64 / b.1.total as f64;
        rb.total_cmp(&ra)
    });
    for (pid, u) in &candidates {
        if left <= allowed {
            break;
        }
        left -= u.total - u.used;
        repack.push(*pid);
        rep.bytes_repacked += u.used;
    }
    rep.bytes_unused_after = left;
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
    if opts.dry_run {
        return Ok(rep);
    }
    rep.temp_packs_removed = repo.backend().remove_stale_spools()?;
    if delete.is_empty() && repack.is_empty() && unreferenced.is_empty() {
        log("nothing to prune");
        return Ok(rep);
    }

    let new_packs = if repack.is_empty() {
        Vec::new()
    } else {
        log(&format!("repacking {} packs", repack.len()));
        repack_packs(repo, &index, &marks, &repack)?
    };
    rep.packs_written = new_packs.len();

    log("writing the new index");
    let dropped: HashSet<PackId> = delete.iter().chain(&repack).copied().collect();
    let mut seen: HashSet<PackId> = HashSet::new();
    let mut keep_packs: Vec<IndexPack> = Vec::new();
    for f in files {
        for p in f.packs {
            if !dropped.contains(&p.id) && seen.insert(p.id) {
                keep_packs.push(p);
            }
        }
    }
    keep_packs.extend(new_packs);
    let mut out = IndexFile::default();
    let mut blobs = 0;
    for p in keep_packs {
        blobs += p.blobs.len();
        out.packs.push(p);
        if blobs >= INDEX_FILE_BLOBS {
            repo.save_index(&std::mem::take(&mut out))?;
            rep.index_files_written += 1;
            blobs = 0;
        }
    }
    if !out.packs.is_empty() {
        repo.save_index(&out)?;
        rep.index_files_written += 1;
    }
    repo.backend().barrier()?;

    log("removing old index files");
    index_names
        .par_iter()
        .try_for_each(|n| ignore_gone(repo.backend().delete(&format!("index/{n}"))))?;
    rep.index_files_removed = index_names.len();
    repo.backend().barrier()?;

    log(&format!("deleting {} packs", dropped.len() + unreferenced.len()));
    let paths: Vec<String> = dropped
        .iter()
        .map(layout::pack)
        .chain(
            unreferenced
                .iter()
                .filter_map(|h| PackId::from_hex(h))
                .map(|p| layout::pack(&p)),
        )
        .collect();
    paths
        .par_iter()
        .try_for_each(|p| ignore_gone(repo.backend().delete(p)))?;
    repo.backend().barrier()?;
    Ok(rep)
}

fn ignore_gone(r: std::result::Result<(), crate::backends::BackendError>) -> Result<()> {
    match r {
        Err(e) if !e.is_not_found() => Err(e.into()),
        _ => Ok(()),
    }
}

/// Copy the used blobs of `packs` into new packs (verifying each), store them, and return
/// their index entries.
fn repack_packs(repo: &Repository, index: &Index, marks: &Marks, packs: &[PackId]) -> Result<Vec<IndexPack>> {
    let pack_size = repo.config().pack_size as usize;
    let mut builders: HashMap<BlobKind, PackBuilder> = HashMap::new();
    let mut written = Vec::new();
    let flush = |b: PackBuilder, written: &mut Vec<IndexPack>| -> Result<()> {
        let fin = b.finish(repo.key())?;
        repo.backend().put_spool(&layout::pack(&fin.id), fin.body)?;
        written.push(IndexPack {
            id: fin.id,
            blobs: fin.blobs,
        });
        Ok(())
    };
    // A few packs at a time: read and verify in parallel, pack in order.
    for group in packs.chunks(4) {
        let blobs: Vec<Vec<SealedBlob>> = group
            .par_iter()
            .map(|pid| {
                let path = layout::pack(pid);
                let bytes = repo.backend().get(&path)?;
                if blake3::hash(&bytes).as_bytes() != &pid.0 {
                    return Err(Error::corrupt(&path, "content does not match its name; prune stopped"));
                }
                let entries = decode_header(repo.key(), &bytes).map_err(|e| Error::corrupt(&path, e))?;
                let this = index.pack_position(pid).expect("indexed");
                let mut keep = Vec::new();
                for e in entries {
                    let Some(pos) = index.position(&e.id) else { continue };
                    let loc = index.location_at(pos);
                    if !marks.get(pos) || loc.pack != this || loc.offset != e.offset {
                        continue;
                    }
                    let sealed = bytes[e.offset as usize..(e.offset + e.length) as usize].to_vec();
                    repo.open_blob(&path, &e.id, e.compressed, e.raw_length, &sealed)?;
                    keep.push(SealedBlob {
                        id: e.id,
                        kind: e.kind,
                        sealed,
                        raw_length: e.raw_length,
                        compressed: e.compressed,
                    });
                }
                Ok(keep)
            })
            .collect::<Result<_>>()?;
        for b in blobs.into_iter().flatten() {
            let kind = b.kind;
            let builder = match builders.entry(kind) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => v.insert(PackBuilder::new(repo.backend().spool()?)),
            };
            builder.add(b)?;
            if builder.size() >= pack_size {
                flush(builders.remove(&kind).expect("just filled"), &mut written)?;
            }
        }
    }
    for (_, b) in builders.drain() {
        if !b.is_empty() {
            flush(b, &mut written)?;
        }
    }
    repo.backend().barrier()?;
    Ok(written)
}
