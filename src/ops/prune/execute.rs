//! Carrying out a prune [`Plan`], in the write order that keeps every state consistent (see
//! the module comment of `ops::prune`): new packs, new index files, barrier, old index
//! files deleted, barrier, dropped packs deleted, barrier.

use super::plan::{Marks, Plan};
use super::PruneReport;
use crate::error::{Error, Result};
use crate::format::layout;
use crate::format::pack::{decode_header, SealedBlob};
use crate::ids::PackId;
use crate::repo::index::{Index, IndexFile, IndexPack};
use crate::repo::pack_writer::WriterOptions;
use crate::repo::Repository;
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};

pub fn execute(repo: &Repository, plan: Plan, log: &(dyn Fn(&str) + Sync)) -> Result<PruneReport> {
    let mut rep = plan.report;
    rep.temp_packs_removed = repo.backend().remove_stale_spools()?;
    if plan.delete.is_empty() && plan.repack.is_empty() && plan.unreferenced.is_empty() {
        log("nothing to prune");
        return Ok(rep);
    }
    let new_packs = if plan.repack.is_empty() {
        Vec::new()
    } else {
        log(&format!("repacking {} packs", plan.repack.len()));
        repack_packs(repo, &plan.index, &plan.marks, &plan.repack)?
    };
    rep.packs_written = new_packs.len();

    log("writing the new index");
    let dropped: HashSet<PackId> = plan.delete.iter().chain(&plan.repack).copied().collect();
    rep.index_files_written = write_index(repo, plan.files, &dropped, new_packs)?;
    repo.backend().barrier()?;

    log("removing old index files");
    repo.delete_index_files(&plan.index_names)?;
    rep.index_files_removed = plan.index_names.len();
    repo.backend().barrier()?;

    log(&format!("deleting {} packs", dropped.len() + plan.unreferenced.len()));
    let unreferenced = plan.unreferenced.iter().filter_map(|h| PackId::from_hex(h));
    let paths: Vec<String> = dropped
        .iter()
        .copied()
        .chain(unreferenced)
        .map(|p| layout::pack(&p))
        .collect();
    paths
        .par_iter()
        .try_for_each(|p| ignore_gone(repo.backend().delete(p)))?;
    repo.backend().barrier()?;
    Ok(rep)
}

/// New index files listing every kept pack once and the new ones; returns how many.
fn write_index(
    repo: &Repository,
    files: Vec<IndexFile>,
    dropped: &HashSet<PackId>,
    new: Vec<IndexPack>,
) -> Result<usize> {
    let mut seen: HashSet<PackId> = HashSet::new();
    let mut keep_packs: Vec<IndexPack> = Vec::new();
    for f in files {
        for p in f.packs {
            if !dropped.contains(&p.id) && seen.insert(p.id) {
                keep_packs.push(p);
            }
        }
    }
    keep_packs.extend(new);
    Ok(repo.save_index_packs(keep_packs)?.len())
}

fn ignore_gone(r: std::result::Result<(), crate::backends::BackendError>) -> Result<()> {
    match r {
        Err(e) if !e.is_not_found() => Err(e.into()),
        _ => Ok(()),
    }
}

/// Copy the used blobs of `packs` into new packs (verifying each) through the pack writer,
/// store them, and return their index entries (prune writes the index files itself).
/// Every used blob the index places in a repacked pack must be found in it and written to a
/// new pack; otherwise prune stops here, before any index file or pack is deleted.
fn repack_packs(repo: &Repository, index: &Index, marks: &Marks, packs: &[PackId]) -> Result<Vec<IndexPack>> {
    let writer = WriterOptions {
        connections: 1,
        dry_run: false,
        index_every: None,
    };
    let used = used_counts(index, marks, packs);
    let ((), written) = repo.write_packs(&writer, |sink| {
        // A few packs at a time: read and verify in parallel, pack in order.
        for group in packs.chunks(4) {
            let blobs: Vec<Vec<SealedBlob>> = group
                .par_iter()
                .map(|pid| used_blobs(repo, index, marks, pid, &used))
                .collect::<Result<_>>()?;
            for b in blobs.into_iter().flatten() {
                sink.send(b)?;
            }
        }
        Ok(())
    })?;
    let copied: HashSet<_> = written.iter().flat_map(|p| p.blobs.iter().map(|b| b.id)).collect();
    let expected: usize = used.values().sum();
    if copied.len() < expected {
        return Err(Error::corrupt(
            "prune's repack",
            format!(
                "{} of the {expected} used blobs of the repacked packs were written; prune stopped before deleting anything",
                copied.len()
            ),
        ));
    }
    Ok(written)
}

/// For each pack of `packs` (by index position), how many used blobs the index places in it.
fn used_counts(index: &Index, marks: &Marks, packs: &[PackId]) -> HashMap<u32, usize> {
    let mut used: HashMap<u32, usize> = packs
        .iter()
        .filter_map(|p| index.pack_position(p))
        .map(|p| (p, 0))
        .collect();
    for (pos, loc) in index.locations().enumerate() {
        if marks.get(pos) {
            if let Some(n) = used.get_mut(&loc.pack) {
                *n += 1;
            }
        }
    }
    used
}

/// The used blobs of pack `pid`, each opened and hash-checked, as stored; an error unless
/// every one of the `used` count the index gives for it is there.
fn used_blobs(
    repo: &Repository,
    index: &Index,
    marks: &Marks,
    pid: &PackId,
    used: &HashMap<u32, usize>,
) -> Result<Vec<SealedBlob>> {
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
        let range = e.offset as usize..(e.offset as usize).saturating_add(e.length as usize);
        let sealed = bytes
            .get(range)
            .ok_or_else(|| Error::corrupt(&path, "a header entry points past the end; prune stopped"))?
            .to_vec();
        repo.open_blob(&path, &e.id, e.compressed, e.raw_length, &sealed)?;
        keep.push(SealedBlob {
            id: e.id,
            kind: e.kind,
            sealed,
            raw_length: e.raw_length,
            compressed: e.compressed,
        });
    }
    let want = used.get(&this).copied().unwrap_or(0);
    if keep.len() != want {
        return Err(Error::corrupt(
            &path,
            format!(
                "the index places {want} used blobs in it but its header yields {}; prune stopped before deleting anything",
                keep.len()
            ),
        ));
    }
    Ok(keep)
}
