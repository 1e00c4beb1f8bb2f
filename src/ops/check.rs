//! `check`: the repository's structure is sound (every snapshot's trees load, every blob a
//! tree refers to is indexed, every indexed pack exists) and, with `read_data`, every pack's
//! bytes hash to its name and every blob in it authenticates and matches its id.

use crate::error::{Error, Result};
use crate::format::layout;
use crate::format::pack::{decode_sealed_header, header_len};
use crate::format::tree::NodeKind;
use crate::ids::{PackId, TreeId};
use crate::repo::index::Index;
use crate::repo::pack_reader::{with_window, READ_WINDOW};
use crate::repo::Repository;
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
    let seen = Mutex::new(HashSet::<TreeId>::new());
    let errors = Mutex::new(Vec::<String>::new());
    let mut level: Vec<TreeId> = snaps.iter().map(|(_, s)| s.tree).collect();
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

/// Read a whole pack in windows: its bytes must hash to its name, and every blob must open,
/// match its id and be indexed. Memory stays at one window, whatever the pack size.
fn read_pack(repo: &Repository, index: &Index, id: &PackId) -> Result<()> {
    let path = layout::pack(id);
    let corrupt = |reason: String| Error::corrupt(&path, reason);
    let size = repo.backend().size(&path)?;
    if size < 4 {
        return Err(corrupt("shorter than its length field".into()));
    }
    // The tail usually holds the whole header; fetch more if it does not.
    let mut tail_start = size.saturating_sub(256 << 10);
    let mut tail = repo.backend().get_range(&path, tail_start, size - tail_start)?;
    let hlen = header_len(&tail[tail.len() - 4..]).map_err(|e| corrupt(e.to_string()))? as u64;
    if hlen + 4 > size {
        return Err(corrupt(format!("header length {hlen} exceeds pack size")));
    }
    let area = size - 4 - hlen;
    if area < tail_start {
        tail_start = area;
        tail = repo.backend().get_range(&path, tail_start, size - tail_start)?;
    }
    let header = &tail[(area - tail_start) as usize..tail.len() - 4];
    let mut entries = decode_sealed_header(repo.key(), header, area as usize).map_err(|e| corrupt(e.to_string()))?;
    entries.sort_by_key(|e| e.offset);
    let mut hasher = blake3::Hasher::new();
    let (mut pos, mut i) = (0u64, 0);
    while pos < area {
        // One window: whole blobs up to READ_WINDOW (at least one), or the rest of the area.
        let mut end = pos;
        let mut j = i;
        while j < entries.len() {
            let e_end = entries[j].offset as u64 + entries[j].length as u64;
            if j > i && e_end - pos > READ_WINDOW {
                break;
            }
            end = end.max(e_end);
            j += 1;
        }
        if j == entries.len() {
            end = area;
        }
        with_window(|buf| -> Result<()> {
            repo.backend().get_range_into(&path, pos, end - pos, buf)?;
            if buf.len() as u64 != end - pos {
                return Err(corrupt("shorter than its header says".into()));
            }
            // The pack hash covers the stored bytes: hash before blobs are decrypted in place.
            hasher.update(buf);
            for e in &entries[i..j] {
                let s = (e.offset as u64 - pos) as usize;
                let sealed = &mut buf[s..s + e.length as usize];
                repo.open_blob_in_place(&path, &e.id, e.compressed, e.raw_length, sealed, |_| Ok(()))?;
                if index.get(&e.id).is_none() {
                    return Err(corrupt(format!("blob {} is not indexed", e.id.short())));
                }
            }
            Ok(())
        })?;
        pos = end;
        i = j;
    }
    hasher.update(&tail[(area - tail_start) as usize..]);
    if hasher.finalize().as_bytes() != &id.0 {
        return Err(corrupt("content does not match its name (hash mismatch)".into()));
    }
    Ok(())
}
