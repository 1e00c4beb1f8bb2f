//! Carrying out a prune [`Plan`], in the write order that keeps every state consistent (see
//! the module comment of `ops::prune`): new packs, new index files (live packs and marks),
//! barrier, old index files deleted, barrier, the packs whose time came deleted, barrier.

use super::plan::{Marks, Plan};
use super::PruneReport;
use crate::error::{Error, Result};
use crate::format::layout;
use crate::format::pack::{decode_header, SealedBlob};
use crate::ids::{IndexId, PackId};
use crate::repo::index::{Index, IndexPack, MarkedPack};
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
    if nothing && plan.unreferenced.is_empty() {
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
    let (live, marked) = new_listing(&mut plan, &to_mark, &delete, new_packs);
    let written = repo.save_index_packs(live, marked)?;
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

/// What the new index files list: every live pack once (kept, brought back, written by the
/// repack) and every mark once (carried over, or new with this run's time). The plan's index
/// files are moved into it, not copied: prune holds one copy of the index's lists at a time.
fn new_listing(
    plan: &mut Plan,
    to_mark: &[PackId],
    delete: &[PackId],
    new_packs: Vec<IndexPack>,
) -> (Vec<IndexPack>, Vec<MarkedPack>) {
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
    let files = std::mem::take(&mut plan.files);
    let (mut live, mut marked, mut seen) = (Vec::new(), Vec::new(), HashSet::new());
    let mut old_marks = Vec::new();
    for f in files {
        for p in f.packs {
            if gone.contains(&p.id) || !seen.insert(p.id) {
                continue;
            }
            match to_mark.contains(&p.id) {
                true => marked.push(mark(p.id, p.blobs)),
                false => live.push(p),
            }
        }
        old_marks.extend(f.marked);
    }
    // Marks of packs no file lists as live: brought back, carried over, or dropped with the
    // pack. Of several marks of one pack the latest `delete_after` is kept (as the index does).
    let mut latest: HashMap<PackId, MarkedPack> = HashMap::new();
    for m in old_marks {
        if seen.contains(&m.id) || gone.contains(&m.id) {
            continue;
        }
        match latest.get(&m.id) {
            Some(slot) if slot.delete_after >= m.delete_after => {}
            _ => {
                latest.insert(m.id, m);
            }
        }
    }
    for (id, m) in latest {
        match back.contains(&id) {
            true => live.push(IndexPack { id, blobs: m.blobs }),
            false => marked.push(m),
        }
    }
    let listed: HashSet<PackId> = live.iter().map(|p| p.id).chain(marked.iter().map(|m| m.id)).collect();
    for id in to_mark.iter().filter(|id| !listed.contains(id)) {
        // Stored packs no index listed: marked by name only.
        marked.push(mark(*id, Vec::new()));
    }
    live.extend(new_packs);
    (live, marked)
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
