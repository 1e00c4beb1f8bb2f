//! `repair index`: the index rebuilt from the packs themselves. Every pack in `data/` has its
//! header read (a stat and a ranged read of its tail, never its blobs), in parallel; every
//! pack whose header authenticates and decodes is listed in new index files, which replace
//! all old ones, readable or not. A pack whose header does not is named in the report and
//! left out of the index, and left in place (the next prune deletes it as unindexed unless it
//! is moved aside). Old index files are not read, so a truncated or missing one costs nothing.
//!
//! Write order: new index files → barrier → old index files deleted → barrier. A crash in
//! between leaves old and new side by side; each lists only packs that exist.

use crate::error::{Error, Result};
use crate::format::layout;
use crate::format::pack::BlobEntry;
use crate::ids::{IndexId, PackId};
use crate::repo::index::{index_files, IndexPack, MAX_RAW};
use crate::repo::Repository;
use rayon::prelude::*;
use std::collections::HashSet;

#[derive(Clone, Debug, Default)]
pub struct IndexOptions {
    /// Read the headers and report, but write and delete nothing.
    pub dry_run: bool,
}

/// A pack left out of the new index.
#[derive(Debug, serde::Serialize)]
pub struct UnreadablePack {
    /// Its object name (`data/ab/abcd…`).
    pub pack: String,
    pub reason: String,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct IndexReport {
    pub dry_run: bool,
    /// Packs whose header was read and listed.
    pub packs_read: usize,
    pub packs_unreadable: Vec<UnreadablePack>,
    /// Blobs listed in the new index files.
    pub blobs: usize,
    /// Index files written (in a dry run: that would be).
    pub index_files_written: usize,
    /// Old index files deleted (in a dry run: that would be).
    pub index_files_removed: usize,
    /// Names in `data/` that are not pack ids, left alone.
    pub stray: Vec<String>,
}

/// `pbak repair index`: [`rebuild`] under the prune marker, reading the repository only.
pub fn run(repo: &Repository, opts: &IndexOptions, log: &(dyn Fn(&str) + Sync)) -> Result<IndexReport> {
    let repo = repo.uncached();
    let _marker = super::lock(&repo, "repair index", opts.dry_run)?;
    rebuild(&repo, opts, log)
}

/// Rebuild the index of `repo` (the caller holds the prune marker).
pub fn rebuild(repo: &Repository, opts: &IndexOptions, log: &(dyn Fn(&str) + Sync)) -> Result<IndexReport> {
    let mut rep = IndexReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    // Only names that are index ids are replaced: a stray name is not pbak's to delete.
    let mut old = repo.backend().list(layout::INDEX)?;
    old.retain(|n| IndexId::from_hex(n).is_some());
    let mut packs = Vec::new();
    for name in repo.backend().list(layout::DATA)? {
        match PackId::from_hex(layout::pack_name_id(&name)) {
            Some(id) => packs.push(id),
            None => rep.stray.push(layout::in_dir(layout::DATA, &name)),
        }
    }
    packs.sort();
    packs.dedup();
    log(&format!("reading the headers of {} packs", packs.len()));
    let headers: Vec<(PackId, Result<Vec<BlobEntry>, String>)> = crate::host::with_io_pool(|| {
        packs
            .par_iter()
            .map(|id| Ok((*id, header(repo, id)?)))
            .collect::<Result<_>>()
    })?;
    let mut listed = Vec::new();
    for (id, h) in headers {
        match h {
            Ok(blobs) => {
                rep.blobs += blobs.len();
                listed.push(IndexPack { id, blobs });
            }
            Err(reason) => rep.packs_unreadable.push(UnreadablePack {
                pack: layout::pack(&id),
                reason,
            }),
        }
    }
    rep.packs_read = listed.len();
    if opts.dry_run {
        rep.index_files_written = index_files(listed, Vec::new()).len();
        rep.index_files_removed = old.len();
        return Ok(rep);
    }
    log("writing the new index");
    let written: HashSet<String> = repo
        .save_index_packs(listed, Vec::new())?
        .iter()
        .map(|i| i.to_hex())
        .collect();
    rep.index_files_written = written.len();
    repo.backend().barrier()?;
    log("removing the old index files");
    old.retain(|n| !written.contains(n));
    repo.delete_index_files(&old)?;
    rep.index_files_removed = old.len();
    repo.backend().barrier()?;
    Ok(rep)
}

/// The header of pack `id`, or why it cannot be listed: it does not authenticate or decode,
/// states an impossible blob, or vanished. Other backend errors (a network failure) stop the
/// repair: a pack must never be left out of the index because a read failed.
fn header(repo: &Repository, id: &PackId) -> Result<Result<Vec<BlobEntry>, String>> {
    match repo.read_pack_header(id) {
        Ok(blobs) => Ok(match blobs.iter().find(|b| b.raw_length > MAX_RAW) {
            // An index file stating it could not be read back (`IndexFile::decode`).
            Some(b) => Err(format!("blob {} claims {} raw bytes", b.id.short(), b.raw_length)),
            None => Ok(blobs),
        }),
        Err(Error::Corrupt { reason, .. }) => Ok(Err(reason)),
        Err(Error::Backend(e)) if e.is_not_found() => Ok(Err("removed while the repair ran".into())),
        Err(e) => Err(e),
    }
}
