//! Trees read by the window, for walks without the local cache (`check` always; prune,
//! restore and `ls` with `--no-cache`). With one ranged GET per tree, `check` on a
//! 97-directory tree with two snapshots sent 116 class B requests (restic: 7), and 6,642 on
//! the Linux tree: as many paid transactions and round trips (32 s against the S3 test
//! server, 0.3 s now; `docs/performance.md`).
//!
//! What holds:
//! - Each pack's tree blobs are cut, from the index alone, into fixed windows of at most
//!   [`READ_WINDOW`] bytes (a larger blob alone). A tree is read from the one window holding
//!   it, and a window is fetched with one ranged GET, at most once while it is kept: a walk
//!   whose windows fit in [`KEPT_BYTES`] fetches each window it needs once.
//! - Memory: the fetched windows kept are at most [`KEPT_BYTES`] (32 MiB), least recently
//!   used dropped first; beyond that only the window each thread is reading or fetching.
//! - A window is only bytes as the store gave them: every tree taken from it is opened by
//!   [`Repository::open_blob`] (authenticated, decompressed, checked against its id), each
//!   time it is read.
//! - A window that cannot be fetched whole (its pack missing or shorter than the index says,
//!   a failed read) is not kept: its trees are read one ranged GET each, as without windows,
//!   so a damaged pack fails exactly the trees that its own bytes fail, and nothing else.
//! - With the local cache, trees are read as [`Repository::read_blob`] reads them (the
//!   cache holds tree packs whole); nothing here is used.

use crate::error::{Error, Result};
use crate::format::layout;
use crate::format::pack::BlobKind;
use crate::format::tree::Tree;
use crate::ids::{AnyBlobId, BlobId, TreeId};
use crate::repo::index::{BlobLocation, Index};
use crate::repo::pack_reader::READ_WINDOW;
use crate::repo::Repository;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// The most bytes of fetched windows kept at once.
pub const KEPT_BYTES: u64 = 32 << 20;

/// A window's bytes once fetched; `None`: it could not be fetched whole.
type Slot = OnceLock<Option<Vec<u8>>>;

/// (pack position, window start)
type WindowKey = (u32, u64);

/// Fetched windows, with when each was last used.
#[derive(Default)]
struct Kept {
    slots: HashMap<WindowKey, (u64, Arc<Slot>)>,
    tick: u64,
    /// Bytes of the fetched windows in `slots`.
    bytes: u64,
}

impl Kept {
    /// The slot of window `key`, made if new, marked as just used.
    fn slot(&mut self, key: WindowKey) -> Arc<Slot> {
        self.tick += 1;
        let tick = self.tick;
        let e = self.slots.entry(key).or_insert_with(|| (tick, Arc::default()));
        e.0 = tick;
        e.1.clone()
    }

    /// `len` more bytes (window `key`, being fetched): drop the least recently used fetched
    /// windows until the kept bytes are within [`KEPT_BYTES`] again, or only `key` is left.
    fn add(&mut self, key: WindowKey, len: u64) {
        self.bytes += len;
        while self.bytes > KEPT_BYTES {
            let oldest = (self.slots.iter())
                .filter(|(k, (_, s))| **k != key && s.get().is_some())
                .min_by_key(|(_, (tick, _))| *tick)
                .map(|(k, _)| *k);
            let Some(k) = oldest else { break };
            let (_, s) = self.slots.remove(&k).expect("found");
            self.bytes -= s.get().and_then(Option::as_ref).map_or(0, |v| v.len() as u64);
        }
    }
}

/// Reads the trees of one walk (see the module documentation).
pub struct TreeReader<'a> {
    repo: &'a Repository,
    index: &'a Index,
    /// `None` with the local cache.
    windows: Option<Windows>,
}

struct Windows {
    /// Per pack position, its windows (start, end), sorted; made at the first read.
    cuts: OnceLock<HashMap<u32, Vec<(u64, u64)>>>,
    kept: Mutex<Kept>,
}

/// Cut every pack's tree blobs (from the index) into windows of at most [`READ_WINDOW`]
/// bytes, each holding whole blobs (a larger blob alone).
fn cut(index: &Index) -> HashMap<u32, Vec<(u64, u64)>> {
    let mut trees: Vec<(u32, u64, u64)> = (index.locations())
        .filter(|l| l.kind == BlobKind::Tree)
        .map(|l| (l.pack, l.offset as u64, l.offset as u64 + l.length as u64))
        .collect();
    trees.sort_unstable();
    let mut cuts: HashMap<u32, Vec<(u64, u64)>> = HashMap::new();
    for (pack, start, end) in trees {
        let windows = cuts.entry(pack).or_default();
        match windows.last_mut() {
            Some(w) if end.max(w.1) - w.0 <= READ_WINDOW => w.1 = w.1.max(end),
            _ => windows.push((start, end)),
        }
    }
    cuts
}

impl Repository {
    /// A reader of the trees of one walk over `index`.
    pub fn tree_reader<'a>(&'a self, index: &'a Index) -> TreeReader<'a> {
        let windows = self.cache.is_none().then(|| Windows {
            cuts: OnceLock::new(),
            kept: Mutex::default(),
        });
        TreeReader {
            repo: self,
            index,
            windows,
        }
    }
}

impl TreeReader<'_> {
    /// Load, check and decode tree `id`.
    pub fn load(&self, id: &TreeId) -> Result<Tree> {
        let bytes = self.read(&id.blob())?;
        Tree::decode(&bytes).map_err(|e| Error::corrupt(format!("tree {id}"), e))
    }

    /// Sort `ids` by where they are stored (pack, offset; unindexed last), so that trees of
    /// one window are read together.
    pub fn sort_by_place(&self, ids: &mut [TreeId]) {
        ids.sort_by_cached_key(|id| self.index.get(id).map_or((u32::MAX, 0), |l| (l.pack, l.offset)));
    }

    fn read(&self, id: &BlobId) -> Result<Vec<u8>> {
        let (Some(w), Some(loc)) = (&self.windows, self.index.get(id)) else {
            return self.repo.read_blob(self.index, id);
        };
        match self.in_window(w, id, &loc) {
            Some(r) => r,
            None => self.repo.read_blob(self.index, id),
        }
    }

    /// The tree at `loc` opened from its window; `None` when its window could not be fetched
    /// whole (or the index has no window for it).
    fn in_window(&self, w: &Windows, id: &BlobId, loc: &BlobLocation) -> Option<Result<Vec<u8>>> {
        let (offset, len) = (loc.offset as u64, loc.length as u64);
        let windows = w.cuts.get_or_init(|| cut(self.index)).get(&loc.pack)?;
        let &(start, end) = windows.get(windows.partition_point(|w| w.0 <= offset).checked_sub(1)?)?;
        if offset + len > end {
            return None;
        }
        let key = (loc.pack, start);
        let slot = w.kept.lock().expect("lock").slot(key);
        let path = layout::pack(&self.index.pack_id(loc));
        let bytes = slot.get_or_init(|| {
            let got = (self.repo.backend().get_range(&path, start, end - start).ok())
                .filter(|b| b.len() as u64 == end - start)?;
            w.kept.lock().expect("lock").add(key, got.len() as u64);
            Some(got)
        });
        let at = (offset - start) as usize;
        let sealed = &bytes.as_ref()?[at..at + len as usize];
        Some(self.repo.open_blob(&path, id, loc.compressed, loc.raw_length, sealed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::{Backend, Location};
    use crate::format::config::Config;
    use crate::format::index::IndexPack;
    use crate::format::keyfile::KdfParams;
    use crate::format::pack::{encode_header, BlobEntry};
    use crate::ids::PackId;
    use crate::repo::index::IndexBuilder;

    /// A local repository holding one pack of `n` tree blobs of 2,000 bytes each (their
    /// plaintexts returned), and its index.
    fn one_tree_pack(dir: &std::path::Path, n: u32) -> (Repository, Index, PackId, Vec<(BlobId, Vec<u8>)>) {
        let loc = Location::parse(dir.to_str().unwrap()).unwrap();
        let kdf = KdfParams {
            m_cost_kib: 64,
            t_cost: 1,
            p_cost: 1,
        };
        let repo = Repository::init(Backend::open(&loc, true).unwrap(), b"pw", kdf, Config::new()).unwrap();
        let (mut bytes, mut entries, mut plains) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..n {
            let plain: Vec<u8> = (0..2000u32).map(|j| (i * 7 + j * 13 + j / 5) as u8).collect();
            let b = repo.seal_blob(BlobKind::Tree, &plain);
            entries.push(BlobEntry {
                id: b.id,
                kind: BlobKind::Tree,
                offset: bytes.len() as u32,
                length: b.sealed.len() as u32,
                raw_length: b.raw_length,
                compressed: b.compressed,
            });
            bytes.extend_from_slice(&b.sealed);
            plains.push((b.id, plain));
        }
        let (header, len) = encode_header(repo.key(), &entries);
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(&len);
        let id = PackId(*blake3::hash(&bytes).as_bytes());
        repo.backend().put(&layout::pack(&id), bytes).unwrap();
        let mut b = IndexBuilder::default();
        b.add_pack(&IndexPack { id, blobs: entries });
        (repo, b.finish(), id, plains)
    }

    /// Read every blob through a fresh reader: which failed, and the reads it took.
    fn read_all(repo: &Repository, index: &Index, plains: &[(BlobId, Vec<u8>)]) -> (Vec<usize>, u64) {
        let before = repo.backend().counts().class_b;
        let reader = repo.tree_reader(index);
        let mut failed = Vec::new();
        for (i, (id, plain)) in plains.iter().enumerate() {
            match reader.read(id) {
                Ok(got) => assert_eq!(&got, plain, "blob {i}"),
                Err(_) => failed.push(i),
            }
        }
        (failed, repo.backend().counts().class_b - before)
    }

    #[test]
    fn one_read_per_window_and_damage_fails_only_its_own_trees() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, index, pack, plains) = one_tree_pack(dir.path(), 50);
        assert!(repo.cache().is_none());
        assert_eq!(read_all(&repo, &index, &plains), (vec![], 1), "one window, one read");
        let file = dir.path().join(layout::pack(&pack));
        let mut bytes = std::fs::read(&file).unwrap();
        let at = |i: usize| index.get(&plains[i].0).unwrap().offset as usize;
        // A flipped byte: that tree alone fails to open; the window is still read once.
        bytes[at(20) + 100] ^= 1;
        std::fs::write(&file, &bytes).unwrap();
        assert_eq!(read_all(&repo, &index, &plains), (vec![20], 1));
        // Cut inside the last blob: the window cannot be read whole, so each tree is read
        // alone (one read each, as without windows) and only the cut one fails.
        bytes[at(20) + 100] ^= 1;
        bytes.truncate(at(49) + 10);
        std::fs::write(&file, &bytes).unwrap();
        assert_eq!(read_all(&repo, &index, &plains), (vec![49], 1 + 50));
        // A missing pack fails every tree in it, and nothing else goes wrong.
        std::fs::remove_file(&file).unwrap();
        assert_eq!(read_all(&repo, &index, &plains).0, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn windows_hold_whole_tree_blobs_up_to_the_read_window() {
        let mib = 1u32 << 20;
        let entry = |i: u8, kind, offset, length| BlobEntry {
            id: BlobId([i; 32]),
            kind,
            offset,
            length,
            raw_length: length,
            compressed: false,
        };
        let (t, d) = (BlobKind::Tree, BlobKind::Data);
        let mut b = IndexBuilder::default();
        b.add_pack(&IndexPack {
            id: PackId([1; 32]),
            blobs: vec![
                entry(1, t, 0, mib),
                entry(2, t, mib, 2 * mib),
                entry(3, t, 3 * mib, 2 * mib),
                entry(4, t, 5 * mib, 5 * mib),
                entry(5, t, 10 * mib, 100),
            ],
        });
        b.add_pack(&IndexPack {
            id: PackId([2; 32]),
            blobs: vec![entry(6, d, 0, 100)],
        });
        let index = b.finish();
        let cuts = cut(&index);
        let m = mib as u64;
        let tree_pack = index.pack_position(&PackId([1; 32])).unwrap();
        assert_eq!(cuts.len(), 1, "data packs have no windows");
        assert_eq!(
            cuts[&tree_pack],
            vec![(0, 3 * m), (3 * m, 5 * m), (5 * m, 10 * m), (10 * m, 10 * m + 100)],
            "whole blobs, at most 4 MiB a window, a larger blob alone"
        );
    }

    #[test]
    fn kept_windows_stay_within_the_bound_oldest_dropped_first() {
        let mut k = Kept::default();
        let fill = |k: &mut Kept, key: WindowKey, len: u64| {
            let s = k.slot(key);
            k.add(key, len);
            s.set(Some(vec![0; len as usize])).unwrap();
        };
        let mib = 1 << 20;
        for i in 0..4 {
            fill(&mut k, (0, i), 8 * mib);
        }
        assert_eq!(k.bytes, KEPT_BYTES);
        k.slot((0, 0)); // used again: now the most recent
        fill(&mut k, (1, 0), mib);
        assert_eq!(k.bytes, KEPT_BYTES - 7 * mib);
        assert!(k.slots.contains_key(&(0, 0)) && !k.slots.contains_key(&(0, 1)));
        // A window larger than the bound is kept alone, until the next one.
        fill(&mut k, (2, 0), 40 * mib);
        assert_eq!((k.slots.len(), k.bytes), (1, 40 * mib));
        fill(&mut k, (3, 0), mib);
        assert_eq!((k.slots.len(), k.bytes), (1, mib));
    }
}
