//! Index files (`index/<id>`): sealed postcard lists of packs and the blobs in each. An
//! index file is written only after every pack it lists is stored.

use super::crypto::MasterKey;
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

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct IndexFile {
    pub packs: Vec<IndexPack>,
}

impl IndexFile {
    pub fn encode(&self, key: &MasterKey) -> Vec<u8> {
        key.seal(&postcard::to_stdvec(self).expect("index serializes"))
    }
    pub fn decode(key: &MasterKey, sealed: &[u8]) -> Result<IndexFile, FormatError> {
        let plain = key.open(sealed)?;
        let f: IndexFile = postcard::from_bytes(&plain)?;
        for p in &f.packs {
            if let Some(b) = p.blobs.iter().find(|b| b.raw_length > MAX_RAW) {
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

    proptest! {
        #[test]
        fn random_bytes_are_errors(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let key = MasterKey::from_secret(&[3; 32]);
            prop_assert!(IndexFile::decode(&key, &data).is_err());
        }
    }
}
