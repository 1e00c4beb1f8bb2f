//! The structure level: the index files as listed (what size each pack's entries give it,
//! which packs more than one file lists live), the packs as stored (present, of that size,
//! indexed, marked), and every snapshot's trees (each blob they refer to indexed, each tree
//! readable), with every problem noted against the trees that lead to it.

use super::affected::Graph;
use super::{CheckReport, Problem};
use crate::error::Result;
use crate::format::layout;
use crate::format::pack::{encode_header, BlobEntry};
use crate::format::snapshot::Snapshot;
use crate::ids::{AnyBlobId, BlobId, PackId, SnapshotId, TreeId};
use crate::repo::index::{Index, IndexBuilder};
use crate::repo::Repository;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

/// The index, and what only the index files themselves tell.
pub(super) struct Loaded {
    pub(super) index: Index,
    /// Per pack: the size its listed entries give it (`None` for a pack marked by name), and
    /// the first index file listing it live.
    packs: HashMap<PackId, (Option<u64>, Option<u32>)>,
    /// Packs listed live more than once, with every file listing them (positions in `files`).
    twice: BTreeMap<PackId, Vec<u32>>,
    files: Vec<String>,
}

impl Loaded {
    /// Whether an index file lists the blobs of pack `id` (not so for one marked by name).
    pub(super) fn lists_blobs_of(&self, id: &PackId) -> bool {
        self.packs.get(id).is_some_and(|p| p.0.is_some())
    }
}

/// The size of a pack holding `blobs` (its header's entries, which the index repeats):
/// the blob area, the sealed header as the format encodes it, and the 4-byte length field.
fn pack_size(repo: &Repository, blobs: &[BlobEntry]) -> u64 {
    let area = blobs
        .iter()
        .map(|b| b.offset as u64 + b.length as u64)
        .max()
        .unwrap_or(0);
    area + encode_header(repo.key(), blobs).0.len() as u64 + 4
}

/// Read every index file (from the repository, as [`Repository::load_index`] does) and note
/// per pack its expected size and the files listing it live.
pub(super) fn load_index(repo: &Repository) -> Result<Loaded> {
    let names = repo.backend().list(layout::INDEX)?;
    let mut builder = IndexBuilder::default();
    let mut packs: HashMap<PackId, (Option<u64>, Option<u32>)> = HashMap::new();
    let (mut twice, mut files) = (BTreeMap::<PackId, Vec<u32>>::new(), Vec::new());
    repo.for_each_index_file(&names, |name, f| {
        let file = files.len() as u32;
        files.push(layout::in_dir(layout::INDEX, name));
        for p in &f.packs {
            let slot = packs.entry(p.id).or_default();
            slot.0.get_or_insert_with(|| pack_size(repo, &p.blobs));
            match slot.1 {
                Some(first) => twice.entry(p.id).or_insert_with(|| vec![first]).push(file),
                None => slot.1 = Some(file),
            }
        }
        for m in f.marked.iter().filter(|m| !m.blobs.is_empty()) {
            let slot = packs.entry(m.id).or_default();
            slot.0.get_or_insert_with(|| pack_size(repo, &m.blobs));
        }
        builder.add_file(name, &f);
        Ok(())
    })?;
    Ok(Loaded {
        index: builder.finish(),
        packs,
        twice,
        files,
    })
}

/// Every stored pack and its size, from one listing of `data/` (names that are not pack ids
/// are not pbak's and are left alone).
pub(super) fn stored_packs(repo: &Repository) -> Result<HashMap<PackId, u64>> {
    Ok(repo
        .backend()
        .list_sized(layout::DATA)?
        .into_iter()
        .filter_map(|(name, size)| Some((PackId::from_hex(layout::pack_name_id(&name))?, size)))
        .collect())
}

/// Problems found so far and the trees that lead to them.
#[derive(Clone, Default)]
pub(super) struct Found {
    pub(super) problems: Vec<Problem>,
    /// Pack position in the index → its problem.
    by_pack: HashMap<u32, u32>,
    by_blob: HashMap<BlobId, u32>,
    /// (problem, tree number)
    pub(super) hits: Vec<(u32, u32)>,
}

impl Found {
    /// Note a problem of the pack at `pos`; a later one (found by reading it) replaces one
    /// noted before (it was only marked).
    pub(super) fn pack(&mut self, pos: u32, p: Problem) {
        match self.by_pack.get(&pos) {
            Some(&k) => self.problems[k as usize] = p,
            None => {
                self.by_pack.insert(pos, self.problems.len() as u32);
                self.problems.push(p);
            }
        }
    }

    pub(super) fn has_pack(&self, pos: u32) -> Option<&Problem> {
        self.by_pack.get(&pos).map(|k| &self.problems[*k as usize])
    }

    fn blob(&mut self, id: BlobId, p: impl FnOnce() -> Problem) -> u32 {
        let next = self.problems.len() as u32;
        let k = *self.by_blob.entry(id).or_insert(next);
        if k == next {
            self.problems.push(p());
        }
        k
    }
}

/// Every indexed pack present with the size its entries give, every stored pack indexed,
/// no pack listed live twice; marked packs counted. Problems that depend on which snapshots
/// use a pack are noted in the result; the rest go to `rep` at once.
pub(super) fn check_packs(loaded: &Loaded, stored: &HashMap<PackId, u64>, rep: &mut CheckReport) -> Found {
    let index = &loaded.index;
    let mut found = Found::default();
    for (pos, id) in index.packs().iter().enumerate() {
        let pos = pos as u32;
        let mark = index.mark(pos).cloned();
        let expected = loaded.packs.get(id).and_then(|p| p.0);
        match (stored.get(id), mark) {
            (None, None) => found.pack(pos, Problem::PackMissing(*id)),
            (None, Some(m)) => found.pack(pos, Problem::MarkedMissing(*id, m)),
            (Some(&size), _) if expected.is_some_and(|e| e != size) => {
                let expected = expected.expect("checked");
                found.pack(
                    pos,
                    Problem::PackSize {
                        pack: *id,
                        size,
                        expected,
                    },
                )
            }
            (Some(&size), Some(m)) => {
                let mp = &mut rep.marked_packs;
                mp.count += 1;
                mp.bytes += size;
                mp.first_delete_after = Some(mp.first_delete_after.map_or(m.delete_after, |t| t.min(m.delete_after)));
                found.pack(pos, Problem::Marked(*id, m));
            }
            (Some(_), None) => {}
        }
    }
    let mut unindexed: Vec<(&PackId, &u64)> = stored
        .iter()
        .filter(|(id, _)| index.pack_position(id).is_none())
        .collect();
    unindexed.sort();
    rep.unreferenced_packs = unindexed.len();
    for (id, size) in unindexed {
        rep.warnings.push(format!(
            "pack {} ({size} bytes) is in no index file: left by an interrupted backup or \
             repair; the next prune marks it for deletion, `pbak repair index` indexes it",
            layout::pack(id)
        ));
    }
    for (id, files) in &loaded.twice {
        let names: Vec<&str> = files.iter().map(|f| loaded.files[*f as usize].as_str()).collect();
        rep.warnings.push(format!(
            "pack {} is listed live in {} index files ({}): left by an interrupted prune; \
             harmless, readers use one listing and the next prune writes one",
            layout::pack(id),
            names.len(),
            names.join(", ")
        ));
    }
    found
}

/// What the walk over every snapshot's trees found.
pub(super) struct Walked {
    pub(super) trees: usize,
    pub(super) graph: Graph,
    /// Each snapshot's root tree number.
    pub(super) roots: Vec<u32>,
    pub(super) found: Found,
}

/// A problem a tree refers to: one noted already, or a blob's own.
enum Hit {
    Known(u32),
    New(BlobId, Problem),
}

/// Walk every distinct tree of `snaps` once, numbering trees and noting parent edges (see
/// [`Graph`]), and note against each tree the problems it refers to: a blob in no index, a
/// blob in a pack with a problem, a tree that does not load. A tree with none takes no lock
/// beyond the walk's own.
pub(super) fn walk_trees(
    repo: &Repository,
    index: &Index,
    snaps: &[(SnapshotId, Snapshot)],
    found: Found,
) -> Result<Walked> {
    let graph = Mutex::new(Graph::default());
    let mut walk_roots = Vec::new();
    let roots: Vec<u32> = {
        let mut g = graph.lock().expect("lock");
        let mut number = |s: &Snapshot| {
            let (n, new) = g.number(&s.tree);
            if new {
                walk_roots.push(s.tree);
            }
            n
        };
        snaps.iter().map(|(_, s)| number(s)).collect()
    };
    // Per pack with a problem: the problem, and whether it explains a tree there that does
    // not load (a marked pack's trees should load: one that does not is damage of its own).
    let by_pack: HashMap<u32, (u32, bool)> = (found.by_pack.iter())
        .map(|(&pos, &k)| (pos, (k, !matches!(found.problems[k as usize], Problem::Marked(..)))))
        .collect();
    // `None`: the blob is in no index; `Some(None)`: its pack is fine.
    let pack_problem = |b: &BlobId| index.get(b).map(|l| by_pack.get(&l.pack).copied());
    let found = Mutex::new(found);
    let trees = AtomicUsize::new(0);
    let first = |parent: &TreeId, child: &TreeId| Ok(graph.lock().expect("lock").edge(parent, child));
    repo.walk_levels(index, walk_roots, &first, &|id, tree| {
        trees.fetch_add(1, Relaxed);
        let mut hits = Vec::new();
        match pack_problem(&id.blob()) {
            None => hits.push(Hit::New(id.blob(), Problem::TreeUnindexed(*id))),
            Some(own) => {
                hits.extend(own.map(|(k, _)| Hit::Known(k)));
                if let (Err(e), false) = (&tree, own.is_some_and(|(_, explains)| explains)) {
                    hits.push(Hit::New(id.blob(), Problem::TreeDamaged(*id, e.detail())));
                }
            }
        }
        for c in tree.iter().flat_map(|t| &t.nodes).flat_map(|n| &n.content) {
            match pack_problem(&c.blob()) {
                None => hits.push(Hit::New(c.blob(), Problem::BlobUnindexed(*c))),
                Some(Some((k, _))) => hits.push(Hit::Known(k)),
                Some(None) => {}
            }
        }
        if !hits.is_empty() {
            let me = graph.lock().expect("lock").get(id);
            let mut f = found.lock().expect("lock");
            for h in hits {
                let k = match h {
                    Hit::Known(k) => k,
                    Hit::New(b, p) => f.blob(b, || p),
                };
                f.hits.push((k, me));
            }
        }
        Ok(())
    })?;
    Ok(Walked {
        trees: trees.into_inner(),
        graph: graph.into_inner().expect("lock"),
        roots,
        found: found.into_inner().expect("lock"),
    })
}
