//! The chunk index: which pack holds each blob. Index files (`index/<id>`) are sealed
//! postcard lists of packs and their blobs; in memory all of them merge into one map.
//! An index file is written only after every pack it lists is stored.

use super::crypto::MasterKey;
use super::pack::{BlobEntry, BlobKind};
use crate::ids::{BlobId, PackId};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct IndexPack {
    pub id: PackId,
    pub blobs: Vec<BlobEntry>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct IndexFile {
    pub packs: Vec<IndexPack>,
}

impl IndexFile {
    pub fn encode(&self, key: &MasterKey) -> Vec<u8> {
        key.seal(&postcard::to_stdvec(self).expect("index serializes"))
    }
    pub fn decode(key: &MasterKey, sealed: &[u8]) -> Result<IndexFile, String> {
        let plain = key.open(sealed).map_err(|e| e.to_string())?;
        postcard::from_bytes(&plain).map_err(|e| e.to_string())
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

/// All index files merged.
#[derive(Default)]
pub struct Index {
    packs: Vec<PackId>,
    pack_pos: HashMap<PackId, u32>,
    blobs: HashMap<BlobId, BlobLocation>,
}

impl Index {
    pub fn add_pack(&mut self, p: &IndexPack) {
        let next = self.packs.len() as u32;
        let pack = *self.pack_pos.entry(p.id).or_insert(next);
        if pack == next {
            self.packs.push(p.id);
        }
        for b in &p.blobs {
            self.blobs.entry(b.id).or_insert(BlobLocation {
                pack,
                offset: b.offset,
                length: b.length,
                raw_length: b.raw_length,
                kind: b.kind,
                compressed: b.compressed,
            });
        }
    }
    pub fn get(&self, id: &BlobId) -> Option<&BlobLocation> {
        self.blobs.get(id)
    }
    pub fn contains(&self, id: &BlobId) -> bool {
        self.blobs.contains_key(id)
    }
    pub fn pack_id(&self, loc: &BlobLocation) -> PackId {
        self.packs[loc.pack as usize]
    }
    pub fn packs(&self) -> &[PackId] {
        &self.packs
    }
    pub fn blob_count(&self) -> usize {
        self.blobs.len()
    }
    pub fn blob_ids(&self) -> impl Iterator<Item = &BlobId> {
        self.blobs.keys()
    }
    pub fn blobs(&self) -> impl Iterator<Item = (&BlobId, &BlobLocation)> {
        self.blobs.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        };
        let back = IndexFile::decode(&key, &f.encode(&key)).unwrap();
        assert_eq!(back, f);
        let mut idx = Index::default();
        idx.add_pack(&back.packs[0]);
        idx.add_pack(&back.packs[0]);
        assert_eq!(idx.packs().len(), 1);
        let loc = idx.get(&BlobId([1; 32])).unwrap();
        assert_eq!(idx.pack_id(loc), PackId([2; 32]));
    }

    proptest! {
        #[test]
        fn random_bytes_are_errors(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let key = MasterKey::from_secret([3; 32]);
            prop_assert!(IndexFile::decode(&key, &data).is_err());
        }
    }
}
