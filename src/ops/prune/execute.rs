//! Carrying out a prune [`Plan`], in the write order that keeps every state consistent (see
//! the module comment of `ops::prune`): new packs, new index files (live packs and marks),
//! barrier, old index files deleted, barrier, the packs whose time came deleted, barrier.

use super::plan::{Marks, Plan};
use super::PruneReport;
use crate::error::{Error, Result};
use crate::format::layout;
use crate::format::pack::{decode_header, SealedBlob};
use crate::ids::{IndexId, PackId};
use crate::repo::index::{Index, IndexFile, IndexPack, IndexSplitter, MarkedPack};
use crate::repo::marker::PruneMarker;
use crate::repo::pack_writer::WriterOptions;
use crate::repo::Repository;
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};

pub fn execute(
    repo: &Repository,
    mut plan: Plan,
    marker: &PruneMarker,
    log: &(dyn Fn(&str) + Sync),
) -> Result<PruneReport> {
    let mut rep = std::mem::take(&mut plan.report);
    let at_once = plan.delete_after <= plan.now;
    // Temporary files of interrupted runs, once older than the grace period (all of them with
    // a zero grace period: no one else writes).
    let grace = (plan.delete_after - plan.now).max(0) as u64;
    rep.temp_packs_removed = repo
        .backend()
        .remove_stale_spools(std::time::Duration::from_secs(grace))?;
    let nothing = [&plan.delete, &plan.mark, &plan.repack, &plan.bring_back]
        .iter()
        .all(|v| v.is_empty());
    if nothing && plan.unreferenced.is_empty() && !plan.listed_twice {
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
    let unreferenced: Vec<PackId> = plan.unreferenced.iter().filter_map(|h| PackId::from_hex(h)).collect();
    let mut delete: Vec<PackId> = plan.delete.clone();
    let mut to_mark: Vec<PackId> = plan.mark.iter().chain(&plan.repack).copied().collect();
    match at_once {
        true => delete.extend(to_mark.drain(..).chain(unreferenced.iter().copied())),
        false => to_mark.extend(&unreferenced),
    }
    let written = write_new_index(repo, &plan, &to_mark, &delete, new_packs)?;
    rep.index_files_written = written.len();
    repo.backend().barrier()?;

    log("removing old index files");
    repo.delete_index_files(&plan.index_names)?;
    rep.index_files_removed = plan.index_names.len();
    repo.backend().barrier()?;

    if !delete.is_empty() {
        // A prune that lost its marker (another prune took over) deletes nothing.
        marker.check()?;
        spare_newly_listed(repo, &plan.index_names, &written, &mut delete)?;
        log(&format!("deleting {} packs", delete.len()));
        let paths: Vec<String> = delete.iter().map(layout::pack).collect();
        paths
            .par_iter()
            .try_for_each(|p| ignore_gone(repo.backend().delete(p)))?;
        repo.backend().barrier()?;
    }
    Ok(rep)
}

/// Write the new index files: every live pack once (kept, brought back, written by the
/// repack) and every mark once (carried over with the index's winning mark, or new with this
/// run's time). The plan's index files are read again one batch at a time and each pack is
/// passed on as it comes, so prune holds one new file's lists at a time, never the whole
/// index's (a million-blob index's decoded lists are about 85 MB).
fn write_new_index(
    repo: &Repository,
    plan: &Plan,
    to_mark: &[PackId],
    delete: &[PackId],
    new_packs: Vec<IndexPack>,
) -> Result<Vec<IndexId>> {
    let to_mark: HashSet<PackId> = to_mark.iter().copied().collect();
    let gone: HashSet<PackId> = delete.iter().copied().collect();
    let back: HashSet<PackId> = plan.bring_back.iter().copied().collect();
    let host = crate::host::host_user().0;
    let mark = |id: PackId, blobs: Vec<_>| MarkedPack {
        id,
        marked_at: plan.now,
        delete_after: plan.delete_after,
        host: host.clone(),
        blobs,
    };
    let (mut split, mut written, mut seen) = (IndexSplitter::default(), Vec::new(), HashSet::new());
    let mut save = |f: Option<IndexFile>| -> Result<()> {
        if let Some(f) = f {
            written.push(repo.save_index(&f)?);
        }
        Ok(())
    };
    repo.for_each_index_file(&plan.index_names, |_, f| {
        for p in f.packs {
            if gone.contains(&p.id) || !seen.insert(p.id) {
                continue;
            }
            save(match to_mark.contains(&p.id) {
                true => split.push_marked(mark(p.id, p.blobs)),
                false => split.push_pack(p),
            })?;
        }
        for m in f.marked {
            // A pack some file lists as live is that listing's; of several marks of one pack
            // the index holds the one that allows deletion last.
            let pos = plan.index.pack_position(&m.id).expect("indexed");
            let Some(winner) = plan.index.mark(pos) else { continue };
            if gone.contains(&m.id) || !seen.insert(m.id) {
                continue;
            }
            save(match back.contains(&m.id) {
                true => split.push_pack(IndexPack {
                    id: m.id,
                    blobs: m.blobs,
                }),
                false => split.push_marked(MarkedPack {
                    marked_at: winner.marked_at,
                    delete_after: winner.delete_after,
                    host: winner.host.clone(),
                    ..m
                }),
            })?;
        }
        Ok(())
    })?;
    for id in to_mark.iter().filter(|id| !seen.contains(*id)) {
        // Stored packs no index listed: marked by name only.
        save(split.push_marked(mark(*id, Vec::new())))?;
    }
    for p in new_packs {
        save(split.push_pack(p))?;
    }
    save(split.finish())?;
    Ok(written)
}

/// Right before deleting: a backup that was suspended since before this prune's plan may have
/// indexed one of the packs to delete (as live) meanwhile. Such a pack is spared (the next
/// prune decides again), and the backup's own commit check does the rest.
fn spare_newly_listed(repo: &Repository, read: &[String], written: &[IndexId], delete: &mut Vec<PackId>) -> Result<()> {
    let known: HashSet<String> = read.iter().cloned().chain(written.iter().map(|i| i.to_hex())).collect();
    let mut added = repo.backend().list(layout::INDEX)?;
    added.retain(|n| !known.contains(n));
    let mut live: HashSet<PackId> = HashSet::new();
    repo.for_each_index_file(&added, |_, f| {
        live.extend(f.packs.iter().map(|p| p.id));
        Ok(())
    })?;
    delete.retain(|p| !live.contains(p));
    Ok(())
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
        // One pack per core (at most four) at a time: read and verify in parallel, pack in
        // order. Each pack in flight holds its bytes and its used blobs' copies.
        let at_once = rayon::current_num_threads().clamp(1, 4);
        for group in packs.chunks(at_once) {
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
    let written = written.packs;
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
