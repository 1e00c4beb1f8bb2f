//! Index files (`index/<id>`): sealed postcard lists of packs and the blobs in each. An
//! index file is written only after every pack it lists is stored.
//!
//! Format 2 adds the packs prune marked for deletion ([`MarkedPack`]): prune deletes a pack
//! only in a later run, after the grace period its mark states, and only if no snapshot needs
//! it by then (docs/FORMAT.md, "Two-phase prune"). A pack listed live in any index file is
//! live, whatever another file's mark says.

use super::crypto::{Kind, MasterKey};
use super::pack::BlobEntry;
use super::FormatError;
use crate::ids::PackId;
use serde::{Deserialize, Serialize};

/// Largest raw blob length an index may state (1 GiB; chunks are at most a few MiB). The
/// in-memory index keeps its two flag bits above this.
pub const MAX_RAW: u32 = (1 << 30) - 1;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct IndexPack {
    pub id: PackId,
    pub blobs: Vec<BlobEntry>,
}

/// A pack that a prune found unneeded (or repacked), kept until `delete_after`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MarkedPack {
    pub id: PackId,
    /// When it was marked and the earliest time a later prune may delete it (UTC seconds,
    /// the marking prune's clock).
    pub marked_at: i64,
    pub delete_after: i64,
    /// The host whose prune marked it (named when a backup finds its data gone).
    pub host: String,
    /// Its blobs, as the index listed them (empty for a pack no index listed), so that a
    /// snapshot that turns out to need it is still served and the pack brought back unread.
    pub blobs: Vec<BlobEntry>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct IndexFile {
    pub packs: Vec<IndexPack>,
    /// Format 2: packs marked for deletion.
    pub marked: Vec<MarkedPack>,
}

/// A format-1 index file: packs only.
#[derive(Deserialize)]
struct IndexFileV1 {
    packs: Vec<IndexPack>,
}

impl IndexFile {
    pub fn encode(&self, key: &MasterKey) -> Vec<u8> {
        key.seal_as(Kind::Index, &postcard::to_stdvec(self).expect("index serializes"))
    }
    pub fn decode(key: &MasterKey, sealed: &[u8]) -> Result<IndexFile, FormatError> {
        let plain = key.open_as(Kind::Index, sealed)?;
        // A format-1 file ends after its packs; a format-2 file always has the marked list.
        let f: IndexFile = match postcard::from_bytes(&plain) {
            Ok(f) => f,
            Err(e) => match postcard::take_from_bytes::<IndexFileV1>(&plain) {
                Ok((v1, [])) => IndexFile {
                    packs: v1.packs,
                    marked: Vec::new(),
                },
                _ => return Err(e.into()),
            },
        };
        let all = f
            .packs
            .iter()
            .map(|p| &p.blobs)
            .chain(f.marked.iter().map(|m| &m.blobs));
        for blobs in all {
            if let Some(b) = blobs.iter().find(|b| b.raw_length > MAX_RAW) {
                return Err(FormatError::Invalid(format!(
                    "blob {} claims {} raw bytes (limit {MAX_RAW})",
                    b.id.short(),
                    b.raw_length
                )));
            }
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn format_1_files_decode_without_marks() {
        let mut key = MasterKey::from_secret(&[3; 32]);
        // Format-1 objects carry no kind: only a key for a format-1 repository opens them.
        key.accept_unbound(true);
        let packs = vec![IndexPack {
            id: PackId([9; 32]),
            blobs: Vec::new(),
        }];
        let v1 = key.seal(&postcard::to_stdvec(&packs).unwrap());
        let f = IndexFile::decode(&key, &v1).unwrap();
        assert_eq!((f.packs, f.marked), (packs.clone(), Vec::new()));
        let marked = vec![MarkedPack {
            id: PackId([8; 32]),
            marked_at: 1,
            delete_after: 2,
            host: "h".into(),
            blobs: Vec::new(),
        }];
        let v2 = IndexFile { packs, marked };
        assert_eq!(IndexFile::decode(&key, &v2.encode(&key)).unwrap(), v2);
    }

    proptest! {
        #[test]
        fn random_bytes_are_errors(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let key = MasterKey::from_secret(&[3; 32]);
            prop_assert!(IndexFile::decode(&key, &data).is_err());
        }
    }
}
