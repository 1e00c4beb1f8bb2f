//! The commit check (docs/FORMAT.md, "Two-phase prune"): right before a backup writes its
//! snapshot it lists `index/` once. When nothing it loaded is gone and nothing new carries a
//! mark, no prune has run since it started, and the snapshot is written. Otherwise it
//! verifies, against the index as it is now and the packs actually stored, that every blob
//! the snapshot refers to is in a pack that exists and is not about to be deleted. A needed
//! pack that a prune marked (but may not delete yet) is listed live again; anything gone, or
//! marked and due, fails the backup with [`Error::PrunedMeanwhile`] and no snapshot is
//! written. No snapshot ever refers to data that is gone.

use crate::error::{Error, Result};
use crate::format::layout;
use crate::ids::{IndexId, TreeId};
use crate::repo::index::{Index, IndexBuilder, IndexFile, IndexPack, MarkedPack};
use crate::repo::Repository;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// A marked pack is relied on only while its deletion is at least this far off (or half its
/// grace period, if that is shorter): the slack for the clocks of the backup and the prune
/// hosts and for writing the snapshot.
const MARGIN_SECS: i64 = 3600;

/// Whether the index changed since `loaded` in a way only a prune changes it.
pub(super) fn prune_ran(repo: &Repository, loaded: &Index, own: &[IndexId]) -> Result<bool> {
    let is_id = |n: &String| IndexId::from_hex(n).is_some();
    let listed: HashSet<String> = repo.backend().list(layout::INDEX)?.into_iter().filter(is_id).collect();
    let mut known: HashSet<String> = loaded.files().iter().filter(|n| is_id(n)).cloned().collect();
    known.extend(own.iter().map(|i| i.to_hex()));
    if known.iter().any(|n| !listed.contains(n)) {
        return Ok(true);
    }
    // Files other backups wrote meanwhile list live packs only; a mark means a prune.
    let added: Vec<String> = listed.into_iter().filter(|n| !known.contains(n)).collect();
    let mut marks = false;
    repo.for_each_index_file(&added, |_, f| {
        marks |= !f.marked.is_empty();
        Ok(())
    })?;
    Ok(marks)
}

/// Verify that everything below `root` is stored and safe, bringing back marked packs it
/// needs (see the module comment).
pub(super) fn verify(repo: &Repository, root: &TreeId) -> Result<()> {
    let names = repo.backend().list(layout::INDEX)?;
    let mut builder = IndexBuilder::default();
    let mut marked: HashMap<crate::ids::PackId, MarkedPack> = HashMap::new();
    repo.for_each_index_file(&names, |name, f| {
        builder.add_file(name, &f);
        for m in f.marked {
            marked.insert(m.id, m);
        }
        Ok(())
    })?;
    let index = builder.finish();
    let newest_marker = || {
        let m = marked.values().max_by_key(|m| m.marked_at);
        m.map(|m| m.host.clone()).unwrap_or_else(|| "another host".into())
    };
    let gone = |detail: String| Error::PrunedMeanwhile {
        host: newest_marker(),
        detail,
    };
    let needed = needed_packs(repo, &index, root).map_err(|e| gone(e.to_string()))?;
    let stored = repo.stored_packs()?;
    let now = chrono::Utc::now().timestamp();
    let mut back = Vec::new();
    for pos in needed {
        let pid = index.packs()[pos as usize];
        if !stored.contains(&pid.to_hex()) {
            return Err(gone(format!("pack {} is gone", pid.short())));
        }
        if let Some(m) = index.mark(pos) {
            let margin = MARGIN_SECS.min((m.delete_after - m.marked_at) / 2);
            if now >= m.delete_after - margin {
                return Err(gone(format!("pack {} is due for deletion", pid.short())));
            }
            let blobs = marked.get(&pid).map(|m| m.blobs.clone()).unwrap_or_default();
            back.push(IndexPack { id: pid, blobs });
        }
    }
    if !back.is_empty() {
        repo.save_index(&IndexFile {
            packs: back,
            ..Default::default()
        })?;
        repo.backend().barrier()?;
    }
    Ok(())
}

/// The positions of the packs holding every blob below `root`; an error names the first blob
/// that no index lists.
fn needed_packs(repo: &Repository, index: &Index, root: &TreeId) -> Result<HashSet<u32>> {
    let needed = Mutex::new(HashSet::new());
    let seen = Mutex::new(HashSet::new());
    let locate = |id: &dyn crate::ids::AnyBlobId| -> Result<()> {
        let blob = id.blob();
        let loc = index
            .get(&blob)
            .ok_or_else(|| Error::Usage(format!("blob {} is in no index", blob.short())))?;
        needed.lock().expect("lock").insert(loc.pack);
        Ok(())
    };
    locate(root)?;
    let first = |_: &TreeId, st: &TreeId| {
        locate(st)?;
        Ok(seen.lock().expect("lock").insert(*st))
    };
    repo.walk_levels(index, vec![*root], &first, &|_, tree| {
        for c in tree?.nodes.iter().flat_map(|n| &n.content) {
            locate(c)?;
        }
        Ok(())
    })?;
    Ok(needed.into_inner().expect("lock"))
}
