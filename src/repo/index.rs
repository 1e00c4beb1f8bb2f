//! The chunk index in memory: which pack holds each blob. Every index file (the codec is
//! [`crate::format::index`]) merges into one compact, sorted table.
//!
//! Memory: 40 bytes per blob. An entry keeps the first 192 bits of the 256-bit keyed blob id
//! (ids are keyed BLAKE3 outputs, so without the key nobody can aim for a collision, and a
//! chance one among 10^9 blobs has probability ~2^-133) plus full-width u32 fields for pack,
//! offset, stored length and raw length; the blob kind and compression flag ride in the raw
//! length's top bits. The full id is still checked on every read: a blob's content must hash
//! to the id the tree names. A 65,536-bucket table on the top 16 bits narrows each lookup to
//! a short binary search.

pub use crate::format::index::{IndexFile, IndexPack, MarkedPack, MAX_RAW};
use crate::format::pack::BlobKind;
use crate::ids::{AnyBlobId, BlobId, PackId};
use rayon::slice::ParallelSliceMut;
use std::collections::HashMap;

/// Blobs per index file when the whole index is rewritten (prune, `repair index`).
pub const INDEX_FILE_BLOBS: usize = 50_000;

/// `packs` and then `marked`, in order, as index files of about [`INDEX_FILE_BLOBS`] blobs
/// each (a mark without blobs counts as one).
pub fn index_files(packs: Vec<IndexPack>, marked: Vec<MarkedPack>) -> Vec<IndexFile> {
    let mut split = IndexSplitter::default();
    let mut files: Vec<IndexFile> = packs.into_iter().filter_map(|p| split.push_pack(p)).collect();
    files.extend(marked.into_iter().filter_map(|m| split.push_marked(m)));
    files.extend(split.finish());
    files
}

/// Cuts a stream of live and marked packs into index files of about [`INDEX_FILE_BLOBS`]
/// blobs each (a mark without blobs counts as one): each push returns a file once it is full,
/// so a writer holds one file's lists at a time.
#[derive(Default)]
pub struct IndexSplitter {
    current: IndexFile,
    blobs: usize,
}

impl IndexSplitter {
    pub fn push_pack(&mut self, p: IndexPack) -> Option<IndexFile> {
        self.blobs += p.blobs.len();
        self.current.packs.push(p);
        self.full()
    }
    pub fn push_marked(&mut self, m: MarkedPack) -> Option<IndexFile> {
        self.blobs += m.blobs.len().max(1);
        self.current.marked.push(m);
        self.full()
    }
    fn full(&mut self) -> Option<IndexFile> {
        (self.blobs >= INDEX_FILE_BLOBS).then(|| {
            self.blobs = 0;
            std::mem::take(&mut self.current)
        })
    }
    /// The last, partly filled file (none if nothing was pushed since the last full one).
    pub fn finish(self) -> Option<IndexFile> {
        (!(self.current.packs.is_empty() && self.current.marked.is_empty())).then_some(self.current)
    }
}

/// Where a blob lives. `pack` indexes [`Index::packs`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLocation {
    pub pack: u32,
    pub offset: u32,
    pub length: u32,
    pub raw_length: u32,
    pub kind: BlobKind,
    pub compressed: bool,
}

const KEY_LEN: usize = 24;
const COMPRESSED: u32 = 1 << 31;
const TREE: u32 = 1 << 30;
const _: () = assert!(MAX_RAW == TREE - 1, "the flags sit above every raw length");
const BUCKET_BITS: u32 = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(C)]
pub(super) struct Entry {
    key: [u8; KEY_LEN],
    pack: u32,
    offset: u32,
    length: u32,
    /// Raw length, with [`COMPRESSED`] and [`TREE`] flags in the top bits.
    raw: u32,
}

const _: () = assert!(std::mem::size_of::<Entry>() == 40);

fn key_of(id: &BlobId) -> [u8; KEY_LEN] {
    id.0[..KEY_LEN].try_into().expect("prefix")
}

/// `a.cmp(b)`, with the first 8 bytes compared as one big-endian integer (the same order):
/// keys are hashes, so that almost always decides, inline, where a slice comparison calls
/// `memcmp` (2% of `check --read-data`).
fn key_cmp(a: &[u8; KEY_LEN], b: &[u8; KEY_LEN]) -> std::cmp::Ordering {
    let head = |k: &[u8; KEY_LEN]| u64::from_be_bytes(k[..8].try_into().expect("8 bytes"));
    head(a).cmp(&head(b)).then_with(|| a.cmp(b))
}

fn bucket_of(key: &[u8; KEY_LEN]) -> usize {
    u16::from_be_bytes([key[0], key[1]]) as usize
}

impl Entry {
    /// Bytes of [`Entry::write_to`]'s encoding.
    pub(super) const BYTES: usize = KEY_LEN + 16;

    /// Append the entry as key and four little-endian u32 (the merged index's encoding).
    pub(super) fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.key);
        for v in [self.pack, self.offset, self.length, self.raw] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }

    /// The entry [`Entry::write_to`] wrote into `b` ([`Entry::BYTES`] long).
    pub(super) fn read_from(b: &[u8]) -> Entry {
        let u = |i: usize| u32::from_le_bytes(b[KEY_LEN + 4 * i..KEY_LEN + 4 * i + 4].try_into().expect("4 bytes"));
        Entry {
            key: b[..KEY_LEN].try_into().expect("key bytes"),
            pack: u(0),
            offset: u(1),
            length: u(2),
            raw: u(3),
        }
    }

    pub(super) fn location(&self) -> BlobLocation {
        BlobLocation {
            pack: self.pack,
            offset: self.offset,
            length: self.length,
            raw_length: self.raw & MAX_RAW,
            kind: if self.raw & TREE != 0 {
                BlobKind::Tree
            } else {
                BlobKind::Data
            },
            compressed: self.raw & COMPRESSED != 0,
        }
    }
}

/// What a prune's mark says about a pack that no index file lists as live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    pub marked_at: i64,
    pub delete_after: i64,
    pub host: String,
}

/// Collects index files; [`IndexBuilder::finish`] sorts them into an [`Index`].
#[derive(Default)]
pub struct IndexBuilder {
    packs: Vec<PackId>,
    pack_pos: HashMap<PackId, u32>,
    /// Per pack: listed live by some index file.
    live: Vec<bool>,
    marks: HashMap<u32, Mark>,
    entries: Vec<Entry>,
    /// `entries[..sorted]` came from a merged index, sorted by key.
    sorted: usize,
    files: Vec<String>,
}

impl IndexBuilder {
    /// Room for exactly `blobs` more entries, so the table never grows by doubling.
    pub fn reserve_exact(&mut self, blobs: usize) {
        self.entries.reserve_exact(blobs);
    }

    /// Begin from a merged index's packs, marks and files (an empty builder); its entries
    /// follow through [`IndexBuilder::push_entries`].
    pub(super) fn start_from(
        &mut self,
        files: Vec<String>,
        packs: Vec<PackId>,
        live: Vec<bool>,
        marks: HashMap<u32, Mark>,
    ) {
        self.pack_pos = packs.iter().enumerate().map(|(i, p)| (*p, i as u32)).collect();
        self.packs = packs;
        self.live = live;
        self.marks = marks;
        self.files = files;
    }

    /// Add entries of a merged index; `None` if one names a pack it does not have.
    pub(super) fn push_entries(&mut self, entries: impl Iterator<Item = Entry>) -> Option<()> {
        let packs = self.packs.len();
        for e in entries {
            if e.pack as usize >= packs {
                return None;
            }
            if self.entries.last().is_some_and(|l| l.key > e.key) {
                return None;
            }
            self.entries.push(e);
        }
        self.sorted = self.entries.len();
        Some(())
    }

    /// Add every pack of an index file (live and marked), named `name` as listed.
    pub fn add_file(&mut self, name: &str, f: &IndexFile) {
        f.packs.iter().for_each(|p| self.add_pack(p));
        f.marked.iter().for_each(|m| self.add_marked(m));
        self.files.push(name.to_string());
    }

    fn pack(&mut self, id: PackId) -> u32 {
        let next = self.packs.len() as u32;
        let pack = *self.pack_pos.entry(id).or_insert(next);
        if pack == next {
            self.packs.push(id);
            self.live.push(false);
        }
        pack
    }

    /// A live pack.
    pub fn add_pack(&mut self, p: &IndexPack) {
        let pack = self.pack(p.id);
        self.live[pack as usize] = true;
        self.add_entries(pack, &p.blobs);
    }

    /// A pack marked for deletion; its blobs are served only where no live pack has them.
    /// Of several marks of one pack, the one that allows deletion last counts.
    pub fn add_marked(&mut self, m: &MarkedPack) {
        let pack = self.pack(m.id);
        let mark = Mark {
            marked_at: m.marked_at,
            delete_after: m.delete_after,
            host: m.host.clone(),
        };
        let slot = self.marks.entry(pack).or_insert_with(|| mark.clone());
        if mark.delete_after > slot.delete_after {
            *slot = mark;
        }
        self.add_entries(pack, &m.blobs);
    }

    fn add_entries(&mut self, pack: u32, blobs: &[crate::format::pack::BlobEntry]) {
        self.entries.extend(blobs.iter().map(|b| Entry {
            key: key_of(&b.id),
            pack,
            offset: b.offset,
            length: b.length,
            raw: b.raw_length.min(MAX_RAW)
                | if b.compressed { COMPRESSED } else { 0 }
                | if b.kind == BlobKind::Tree { TREE } else { 0 },
        }));
    }

    /// Sort, and keep one location per blob: in a live pack where there is one, else the
    /// earliest-added pack. Marks of packs that some file lists as live are dropped.
    pub fn finish(self) -> Index {
        let mut entries = self.entries;
        let live = self.live;
        let rank = |e: &Entry| (!live[e.pack as usize], e.pack);
        let order = |a: &Entry, b: &Entry| a.key.cmp(&b.key).then(rank(a).cmp(&rank(b)));
        let (sorted, added) = (self.sorted, entries.len() - self.sorted);
        if sorted > 0 && added * 8 <= sorted {
            // A merged index and a few new files: sort the new entries alone and merge them
            // in from the back (a buffer of the new ones only, at most a ninth of the table).
            let mut tail = entries.split_off(sorted);
            tail.par_sort_unstable_by(order);
            merge_by_key(&mut entries, tail);
            // Ties of one key may be out of rank (a marked pack listed live since): few.
            let mut i = 1;
            while i < entries.len() {
                if entries[i].key != entries[i - 1].key {
                    i += 1;
                    continue;
                }
                let start = i - 1;
                while i < entries.len() && entries[i].key == entries[start].key {
                    i += 1;
                }
                entries[start..i].sort_unstable_by(order);
            }
        } else {
            entries.par_sort_unstable_by(order);
        }
        // Copies of a blob in other packs (two hosts stored it at once, or a repack's crash
        // window): kept aside, so a reader can fall back to one when the first is damaged.
        let mut others: Vec<Entry> = Vec::new();
        entries.dedup_by(|later, first| {
            let dup = later.key == first.key;
            if dup && later.pack != first.pack {
                others.push(*later);
            }
            dup
        });
        entries.shrink_to_fit();
        others.shrink_to_fit();
        let mut buckets = vec![0u32; (1 << BUCKET_BITS) + 1];
        for e in &entries {
            buckets[bucket_of(&e.key) + 1] += 1;
        }
        for i in 1..buckets.len() {
            buckets[i] += buckets[i - 1];
        }
        let mut marks = self.marks;
        marks.retain(|p, _| !live[*p as usize]);
        Index {
            packs: self.packs,
            pack_pos: self.pack_pos,
            live,
            marks,
            entries,
            others,
            buckets,
            files: self.files,
        }
    }
}

/// Merge `tail` into `entries` (each sorted by key), from the back, in place.
fn merge_by_key(entries: &mut Vec<Entry>, tail: Vec<Entry>) {
    let n = entries.len();
    let filler = Entry {
        key: [0; KEY_LEN],
        pack: 0,
        offset: 0,
        length: 0,
        raw: 0,
    };
    entries.resize(n + tail.len(), filler);
    let (mut i, mut j, mut out) = (n, tail.len(), n + tail.len());
    while j > 0 {
        out -= 1;
        if i > 0 && entries[i - 1].key > tail[j - 1].key {
            entries[out] = entries[i - 1];
            i -= 1;
        } else {
            entries[out] = tail[j - 1];
            j -= 1;
        }
    }
}

/// All index files merged: one sorted table.
pub struct Index {
    packs: Vec<PackId>,
    pack_pos: HashMap<PackId, u32>,
    live: Vec<bool>,
    /// Packs that no index file lists as live, with their marks.
    marks: HashMap<u32, Mark>,
    entries: Vec<Entry>,
    /// Further copies of blobs in `entries`, in other packs, sorted by key (usually none).
    others: Vec<Entry>,
    /// `entries[buckets[b]..buckets[b + 1]]` hold the keys whose top 16 bits are `b`.
    buckets: Vec<u32>,
    /// The index files it was built from (as listed).
    files: Vec<String>,
}

impl Default for Index {
    fn default() -> Self {
        IndexBuilder::default().finish()
    }
}

impl Index {
    /// Position of `id` in the table (`0..len()`), usable as a bit index for marking.
    pub fn position(&self, id: &impl AnyBlobId) -> Option<usize> {
        let key = key_of(&id.blob());
        let b = bucket_of(&key);
        let (lo, hi) = (self.buckets[b] as usize, self.buckets[b + 1] as usize);
        self.entries[lo..hi]
            .binary_search_by(|e| key_cmp(&e.key, &key))
            .ok()
            .map(|i| lo + i)
    }
    /// The location at a [`Index::position`].
    pub fn location_at(&self, pos: usize) -> BlobLocation {
        self.entries[pos].location()
    }
    /// Every entry, `others` too, by key (what the merged index keeps).
    pub(super) fn all_entries(&self) -> impl Iterator<Item = &Entry> + '_ {
        let mut others = self.others.iter().peekable();
        self.entries.iter().flat_map(move |e| {
            let mut before = Vec::new();
            while let Some(o) = others.next_if(|o| o.key <= e.key) {
                before.push(o);
            }
            before.into_iter().chain(std::iter::once(e))
        })
    }
    /// Entries and other copies.
    pub(super) fn entry_count(&self) -> usize {
        self.entries.len() + self.others.len()
    }
    /// Per pack (by position): listed live by some index file.
    pub(super) fn live(&self) -> &[bool] {
        &self.live
    }
    /// Every location, in position order.
    pub fn locations(&self) -> impl Iterator<Item = BlobLocation> + '_ {
        self.entries.iter().map(Entry::location)
    }
    pub fn get(&self, id: &impl AnyBlobId) -> Option<BlobLocation> {
        self.position(id).map(|i| self.entries[i].location())
    }
    /// Whether any index file lists the blob, in a live or a marked pack (readers).
    pub fn contains(&self, id: &impl AnyBlobId) -> bool {
        self.position(id).is_some()
    }
    /// Whether the blob is in a live pack: what a backup may deduplicate against. A blob
    /// only in a marked pack is stored again (the commit check relies on this).
    pub fn is_live(&self, id: &impl AnyBlobId) -> bool {
        self.position(id)
            .is_some_and(|i| self.live[self.entries[i].pack as usize])
    }
    /// The mark of the pack at `pack` (a position in [`Index::packs`]), if it is marked.
    pub fn mark(&self, pack: u32) -> Option<&Mark> {
        self.marks.get(&pack)
    }
    /// Marked packs, by position.
    pub fn marks(&self) -> impl Iterator<Item = (u32, &Mark)> {
        self.marks.iter().map(|(p, m)| (*p, m))
    }
    /// The names of the index files this index was built from.
    pub fn files(&self) -> &[String] {
        &self.files
    }
    /// Other copies of a blob (in other packs) than the one [`Index::get`] gives: where a
    /// reader turns when that one is damaged.
    pub fn other_locations(&self, id: &impl AnyBlobId) -> Vec<BlobLocation> {
        let key = key_of(&id.blob());
        let start = self.others.partition_point(|e| e.key < key);
        self.others[start..]
            .iter()
            .take_while(|e| e.key == key)
            .map(Entry::location)
            .collect()
    }
    pub fn pack_id(&self, loc: &BlobLocation) -> PackId {
        self.packs[loc.pack as usize]
    }
    /// Position of a pack in [`Index::packs`].
    pub fn pack_position(&self, id: &PackId) -> Option<u32> {
        self.pack_pos.get(id).copied()
    }
    pub fn packs(&self) -> &[PackId] {
        &self.packs
    }
    /// Stored bytes of every blob listed (each copy once), live and marked packs.
    pub fn stored_bytes(&self) -> u64 {
        self.entries.iter().chain(&self.others).map(|e| e.length as u64).sum()
    }
    pub fn blob_count(&self) -> usize {
        self.entries.len()
    }
    /// Bytes of heap this index holds (entries, bucket table, pack list).
    pub fn heap_bytes(&self) -> usize {
        (self.entries.capacity() + self.others.capacity()) * std::mem::size_of::<Entry>()
            + self.buckets.capacity() * 4
            + self.packs.capacity() * 32
            + self.pack_pos.capacity() * (32 + 4 + 8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::crypto::MasterKey;
    use crate::format::pack::BlobEntry;
    use proptest::prelude::*;

    #[test]
    fn round_trip_and_merge() {
        let key = MasterKey::generate();
        let e = BlobEntry {
            id: BlobId([1; 32]),
            kind: BlobKind::Tree,
            offset: 0,
            length: 50,
            raw_length: 10,
            compressed: true,
        };
        let f = IndexFile {
            packs: vec![IndexPack {
                id: PackId([2; 32]),
                blobs: vec![e],
            }],
            ..Default::default()
        };
        let back = IndexFile::decode(&key, &f.encode(&key)).unwrap();
        assert_eq!(back, f);
        let mut b = IndexBuilder::default();
        b.add_pack(&back.packs[0]);
        b.add_pack(&back.packs[0]);
        let idx = b.finish();
        assert_eq!(idx.packs().len(), 1);
        assert_eq!(idx.blob_count(), 1);
        let loc = idx.get(&BlobId([1; 32])).unwrap();
        assert_eq!(idx.pack_id(&loc), PackId([2; 32]));
        assert_eq!(
            (loc.kind, loc.compressed, loc.raw_length, loc.length),
            (BlobKind::Tree, true, 10, 50)
        );
    }

    #[test]
    fn a_live_copy_wins_over_a_marked_one_and_a_live_listing_clears_the_mark() {
        let (a, b) = (BlobId([1; 32]), BlobId([2; 32]));
        let marked = |id: u8, blobs: Vec<BlobEntry>| MarkedPack {
            id: PackId([id; 32]),
            marked_at: 10,
            delete_after: 20,
            host: "h".into(),
            blobs,
        };
        let mut bld = IndexBuilder::default();
        // The marked pack comes first: its copy of `a` must still lose to the live one.
        bld.add_marked(&marked(7, vec![entry(a, 1), entry(b, 2)]));
        bld.add_pack(&IndexPack {
            id: PackId([8; 32]),
            blobs: vec![entry(a, 4)],
        });
        bld.add_marked(&marked(9, vec![]));
        bld.add_pack(&IndexPack {
            id: PackId([9; 32]),
            blobs: vec![],
        });
        let idx = bld.finish();
        assert_eq!(idx.pack_id(&idx.get(&a).unwrap()), PackId([8; 32]));
        assert!(idx.is_live(&a) && !idx.is_live(&b) && idx.contains(&b));
        let marked: Vec<PackId> = idx.marks().map(|(p, _)| idx.packs()[p as usize]).collect();
        assert_eq!(marked, [PackId([7; 32])], "pack 9 is listed live too");
    }

    fn entry(id: BlobId, n: u32) -> BlobEntry {
        BlobEntry {
            id,
            kind: if n.is_multiple_of(3) {
                BlobKind::Tree
            } else {
                BlobKind::Data
            },
            offset: n,
            length: n + 40,
            raw_length: n * 7 % MAX_RAW,
            compressed: n.is_multiple_of(2),
        }
    }

    proptest! {
        /// The compact table answers exactly like a plain map with first-pack-wins merging.
        #[test]
        fn agrees_with_a_hash_map(ids in proptest::collection::vec(any::<[u8; 32]>(), 1..200),
                                  packs in 1usize..6, probes in proptest::collection::vec(any::<[u8; 32]>(), 0..50)) {
            let mut b = IndexBuilder::default();
            let mut model: HashMap<BlobId, (PackId, BlobEntry)> = HashMap::new();
            for p in 0..packs {
                let pid = PackId([p as u8 + 1; 32]);
                // Every pack repeats some ids of the previous ones, so duplicates are merged.
                let blobs: Vec<BlobEntry> = ids.iter().enumerate().filter(|(i, _)| (i + p) % packs != 0)
                    .map(|(i, id)| entry(BlobId(*id), (i * 31 + p) as u32)).collect();
                for e in &blobs { model.entry(e.id).or_insert((pid, *e)); }
                b.add_pack(&IndexPack { id: pid, blobs });
            }
            let idx = b.finish();
            prop_assert_eq!(idx.blob_count(), model.len());
            for (id, (pid, e)) in &model {
                let loc = idx.get(id).expect("present");
                prop_assert_eq!(idx.pack_id(&loc), *pid);
                prop_assert_eq!((loc.offset, loc.length, loc.raw_length, loc.kind, loc.compressed),
                                (e.offset, e.length, e.raw_length, e.kind, e.compressed));
            }
            for p in probes {
                let id = BlobId(p);
                prop_assert_eq!(idx.contains(&id), model.contains_key(&id));
            }
        }
    }
}
