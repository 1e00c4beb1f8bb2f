//! Packs: sealed blobs back to back, then the sealed header listing them, then the sealed
//! header's length as u32 LE. The pack id is the unkeyed BLAKE3 of all its bytes, so the
//! storage's integrity can be checked without the key.
//!
//! This module is the codec only (header entries, the header and its length field); the
//! pack writer and reader are in `repo::pack_writer` and `repo::pack_reader`.

use super::crypto::{random, Kind, MasterKey};
use super::FormatError;
use crate::ids::BlobId;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BlobKind {
    Data,
    Tree,
}

/// One blob's place in its pack (header entry, and index entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobEntry {
    pub id: BlobId,
    pub kind: BlobKind,
    pub offset: u32,
    /// Stored (sealed) length.
    pub length: u32,
    /// Plaintext length after decompression.
    pub raw_length: u32,
    pub compressed: bool,
}

/// A sealed blob waiting to be packed.
pub struct SealedBlob {
    pub id: BlobId,
    pub kind: BlobKind,
    pub sealed: Vec<u8>,
    pub raw_length: u32,
    pub compressed: bool,
}

/// A uniformly random index below `n` (n ≥ 1), from the OS random source.
pub fn random_below(n: usize) -> usize {
    let mut r = [0u8; 8];
    random(&mut r);
    (u64::from_le_bytes(r) % n as u64) as usize
}

/// The pack's tail: the sealed header listing `entries`, then its length as u32 LE.
pub fn encode_header(key: &MasterKey, entries: &[BlobEntry]) -> (Vec<u8>, [u8; 4]) {
    let header = key.seal_as(
        Kind::PackHeader,
        &postcard::to_stdvec(entries).expect("header serializes"),
    );
    let len = (header.len() as u32).to_le_bytes();
    (header, len)
}

/// Decode and check the header of a complete pack.
pub fn decode_header(key: &MasterKey, pack: &[u8]) -> Result<Vec<BlobEntry>, FormatError> {
    if pack.len() < 4 {
        return Err(FormatError::Invalid("shorter than its length field".into()));
    }
    let (body, len) = pack.split_at(pack.len() - 4);
    let hlen = header_len(len)?;
    if hlen > body.len() {
        return Err(FormatError::Invalid(format!("header length {hlen} exceeds pack size")));
    }
    decode_sealed_header(key, &body[body.len() - hlen..], body.len() - hlen)
}

/// The sealed header's length from a pack's last 4 bytes.
pub fn header_len(last4: &[u8]) -> Result<usize, FormatError> {
    let b: [u8; 4] = last4
        .try_into()
        .map_err(|_| FormatError::Invalid("length field is not 4 bytes".into()))?;
    Ok(u32::from_le_bytes(b) as usize)
}

/// Decode a sealed header and check that its blobs lie within the first `blobs_area` bytes.
pub fn decode_sealed_header(key: &MasterKey, header: &[u8], blobs_area: usize) -> Result<Vec<BlobEntry>, FormatError> {
    let plain = key
        .open_as(Kind::PackHeader, header)
        .map_err(|e| FormatError::Auth(format!("header: {e}")))?;
    let entries: Vec<BlobEntry> =
        postcard::from_bytes(&plain).map_err(|e| FormatError::Decode(format!("header: {e}")))?;
    for e in &entries {
        if e.offset as usize + e.length as usize > blobs_area {
            return Err(FormatError::Invalid(format!(
                "blob {} lies outside the pack",
                e.id.short()
            )));
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn random_bytes_are_errors(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let key = MasterKey::from_secret(&[3; 32]);
            prop_assert!(decode_header(&key, &data).is_err());
        }
    }
}
