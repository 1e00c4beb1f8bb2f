//! `check`: the repository's structure is sound (every snapshot's trees load, every blob a
//! tree refers to is indexed, every indexed pack exists) and, with `read_data`, every pack's
//! bytes hash to its name and every blob in it authenticates and matches its id.

use super::index::Index;
use super::pack::{decode_header, pack_path};
use super::tree::NodeKind;
use super::Repository;
use crate::error::{Error, Result};
use crate::ids::{BlobId, PackId};
use rayon::prelude::*;
use std::collections::HashSet;
use std::sync::Mutex;

#[derive(Debug, Default, serde::Serialize)]
pub struct CheckReport {
    pub snapshots: usize,
    pub trees: usize,
    pub packs: usize,
    pub blobs: usize,
    pub packs_read: usize,
    pub errors: Vec<String>,
    /// Stored packs no index refers to (left by an interrupted backup; prune removes them).
    pub unreferenced_packs: usize,
}

pub fn check(repo: &Repository, index: &Index, read_data: bool) -> Result<CheckReport> {
    let mut rep = CheckReport {
        packs: index.packs().len(),
        blobs: index.blob_count(),
        ..Default::default()
    };
    let stored = repo.stored_packs()?;
    for p in index.packs() {
        if !stored.contains(&p.to_hex()) {
            rep.errors
                .push(format!("pack {p} is indexed but missing from the repository"));
        }
    }
    let indexed: HashSet<String> = index.packs().iter().map(|p| p.to_hex()).collect();
    rep.unreferenced_packs = stored.iter().filter(|s| !indexed.contains(*s)).count();

    let snaps = match repo.snapshots() {
        Ok(s) => s,
        Err(e) => {
            rep.errors.push(e.to_string());
            Vec::new()
        }
    };
    rep.snapshots = snaps.len();
    let seen = Mutex::new(HashSet::<BlobId>::new());
    let errors = Mutex::new(Vec::<String>::new());
    let mut level: Vec<BlobId> = snaps.iter().map(|(_, s)| s.tree).collect();
    while !level.is_empty() {
        level.retain(|id| seen.lock().expect("lock").insert(*id));
        rep.trees += level.len();
        level = level
            .par_iter()
            .flat_map_iter(|id| match repo.load_tree(index, id) {
                Ok(t) => {
                    let mut next = Vec::new();
                    for n in t.nodes {
                        if n.kind == NodeKind::File {
                            for c in &n.content {
                                if !index.contains(c) {
                                    errors
                                        .lock()
                                        .expect("lock")
                                        .push(format!("tree {}: data blob {c} is not indexed", id.short()));
                                }
                            }
                        }
                        next.extend(n.subtree);
                    }
                    next
                }
                Err(e) => {
                    errors.lock().expect("lock").push(e.to_string());
                    Vec::new()
                }
            })
            .collect();
    }
    rep.errors.extend(errors.into_inner().expect("lock"));

    if read_data {
        let errs: Vec<String> = index
            .packs()
            .par_iter()
            .filter_map(|p| read_pack(repo, index, p).err().map(|e| e.to_string()))
            .collect();
        rep.packs_read = index.packs().len();
        rep.errors.extend(errs);
    }
    Ok(rep)
}

fn read_pack(repo: &Repository, index: &Index, id: &PackId) -> Result<()> {
    let path = pack_path(id);
    let bytes = repo.backend().get(&path)?;
    if blake3::hash(&bytes).as_bytes() != &id.0 {
        return Err(Error::corrupt(&path, "content does not match its name (hash mismatch)"));
    }
    let header = decode_header(repo.key(), &bytes).map_err(|e| Error::corrupt(&path, e))?;
    for e in header {
        let sealed = &bytes[e.offset as usize..(e.offset + e.length) as usize];
        repo.open_blob(&path, &e.id, e.compressed, e.raw_length, sealed)?;
        if index.get(&e.id).is_none() {
            return Err(Error::corrupt(&path, format!("blob {} is not indexed", e.id.short())));
        }
    }
    Ok(())
}
