//! The repository config object: identity and the parameters every writer must share.

use super::FormatError;
use crate::chunker::ChunkerParams;
use crate::ids::RepoId;
use serde::{Deserialize, Serialize};

/// The format this pbak writes. Format 1 (no marks in index files, lock objects for every
/// command) is still read; `pbak migrate` upgrades it.
pub const FORMAT_VERSION: u32 = 2;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Config {
    pub version: u32,
    pub id: RepoId,
    pub chunker: ChunkerParams,
    /// Packs are closed once they reach this many bytes.
    pub pack_size: u32,
    /// zstd level for data and tree blobs.
    pub compression: i32,
    /// Format 2 upgraded from format 1 by `pbak migrate`: objects sealed without a kind
    /// (docs/FORMAT.md §3) are still accepted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub legacy_objects: bool,
}

impl Config {
    pub fn new() -> Config {
        let mut id = [0u8; 32];
        super::crypto::random(&mut id);
        Config {
            version: FORMAT_VERSION,
            id: RepoId(id),
            chunker: ChunkerParams::default(),
            pack_size: 16 << 20,
            compression: 3,
            legacy_objects: false,
        }
    }

    /// Parse the decrypted config and check every field is usable.
    pub fn decode(plain: &[u8]) -> Result<Config, FormatError> {
        let c: Config = serde_json::from_slice(plain)?;
        if !c.chunker.is_valid() {
            return Err(FormatError::Invalid(format!(
                "invalid chunker parameters {:?}",
                c.chunker
            )));
        }
        if !(1 << 20..=1 << 30).contains(&c.pack_size) || !(-7..=22).contains(&c.compression) {
            return Err(FormatError::Invalid(
                "pack size or compression level out of range".into(),
            ));
        }
        Ok(c)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("config serializes")
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::new()
    }
}
