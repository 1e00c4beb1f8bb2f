//! `check`: the repository's structure is sound (every snapshot object authenticates and
//! decodes — a damaged one is an error naming it, a stray name only a warning — its trees load, every blob a
//! tree refers to is indexed, every indexed pack exists) and, with `read_data`, every pack's
//! bytes hash to its name and every blob in it authenticates and matches its id.

use crate::error::{Error, Result};
use crate::format::layout;
use crate::format::pack::decode_sealed_header;
use crate::format::tree::NodeKind;
use crate::ids::{PackId, TreeId};
use crate::repo::index::Index;
use crate::repo::pack_reader::Cover;
use crate::repo::Repository;
use rayon::prelude::*;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
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

/// `pbak check`: with the index and every object read from the repository itself, never
/// from the local cache; it takes no lock and writes nothing.
pub fn run(repo: &Repository, read_data: bool) -> Result<CheckReport> {
    let repo = repo.uncached();
    let index = repo.load_index()?;
    check(&repo, &index, read_data)
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

    let snaps = match repo.scan_snapshots() {
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
    };
    rep.snapshots = snaps.len();
    let seen = Mutex::new(HashSet::<TreeId>::new());
    let errors = Mutex::new(Vec::<String>::new());
    let trees = AtomicUsize::new(0);
    let error = |e: String| errors.lock().expect("lock").push(e);
    let roots = snaps
        .iter()
        .map(|(_, s)| s.tree)
        .filter(|id| seen.lock().expect("lock").insert(*id))
        .collect();
    let first = |_: &TreeId, id: &TreeId| Ok(seen.lock().expect("lock").insert(*id));
    repo.walk_levels(index, roots, &first, &|id, tree| {
        trees.fetch_add(1, Relaxed);
        match tree {
            Ok(t) => {
                for n in t.nodes.iter().filter(|n| n.kind == NodeKind::File) {
                    for c in n.content.iter().filter(|c| !index.contains(*c)) {
                        error(format!("tree {}: data blob {c} is not indexed", id.short()));
                    }
                }
            }
            Err(e) => error(e.to_string()),
        }
        Ok(())
    })?;
    rep.trees = trees.into_inner();
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

/// Read a whole pack in windows: its bytes must hash to its name, and every blob must open,
/// match its id and be indexed. Memory stays at one window, whatever the pack size.
fn read_pack(repo: &Repository, index: &Index, id: &PackId) -> Result<()> {
    let path = layout::pack(id);
    let corrupt = |reason: String| Error::corrupt(&path, reason);
    let size = repo.backend().size(&path)?;
    // The pack is read whole anyway: a large first tail read usually holds the whole header.
    let tail = repo.read_pack_tail(&path, size, 256 << 10)?;
    let area = tail.area;
    let mut entries =
        decode_sealed_header(repo.key(), tail.header(), area as usize).map_err(|e| corrupt(e.to_string()))?;
    entries.sort_by_key(|e| e.offset);
    let mut hasher = blake3::Hasher::new();
    repo.read_pack_blobs(
        id,
        &entries,
        Cover::Area(area),
        // The pack hash covers the stored bytes: hashed before blobs are decrypted in place.
        &mut |bytes| {
            hasher.update(bytes);
        },
        &mut |i, _| match index.get(&entries[i].id) {
            Some(_) => Ok(()),
            None => Err(corrupt(format!("blob {} is not indexed", entries[i].id.short()))),
        },
    )?;
    hasher.update(tail.after_area());
    if hasher.finalize().as_bytes() != &id.0 {
        return Err(corrupt("content does not match its name (hash mismatch)".into()));
    }
    Ok(())
}
