//! Packs: sealed blobs back to back, then the sealed header listing them, then the sealed
//! header's length as u32 LE. The pack id is the unkeyed BLAKE3 of all its bytes, so the
//! storage's integrity can be checked without the key.
//!
//! A builder streams each blob into its [`Spool`] as it arrives (hashing as it goes), so a
//! local repository never holds a pack in memory. Which pack a blob lands in is not the
//! writer's order: the archiver fills two packs per blob kind and picks one at random for
//! each blob (as restic 0.18 does), so the provider cannot line chunk sizes up with a file.

use super::crypto::{random, MasterKey};
use crate::backends::{BackendError, Spool};
use crate::ids::{BlobId, PackId};
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

/// A pack ready to store: `body` holds its bytes (blobs, header, header length).
pub struct FinishedPack {
    pub id: PackId,
    pub body: Spool,
    pub blobs: Vec<BlobEntry>,
}

/// Collects blobs of one kind until the pack is big enough.
pub struct PackBuilder {
    body: Spool,
    hasher: blake3::Hasher,
    entries: Vec<BlobEntry>,
}

impl Default for PackBuilder {
    /// A builder whose pack is kept in memory.
    fn default() -> Self {
        PackBuilder::new(Spool::memory())
    }
}

impl PackBuilder {
    pub fn new(body: Spool) -> PackBuilder {
        PackBuilder {
            body,
            hasher: blake3::Hasher::new(),
            entries: Vec::new(),
        }
    }

    /// Append `b` at the end of the pack.
    pub fn add(&mut self, b: SealedBlob) -> Result<(), BackendError> {
        self.entries.push(BlobEntry {
            id: b.id,
            kind: b.kind,
            offset: self.body.len() as u32,
            length: b.sealed.len() as u32,
            raw_length: b.raw_length,
            compressed: b.compressed,
        });
        self.hasher.update(&b.sealed);
        self.body.push(b.sealed)
    }

    /// Sealed blob bytes so far.
    pub fn size(&self) -> usize {
        self.body.len() as usize
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The blobs added so far, read back (to merge a small pack into another).
    pub fn into_blobs(self) -> Result<Vec<SealedBlob>, BackendError> {
        let bytes = self.body.into_bytes()?;
        Ok(self
            .entries
            .iter()
            .map(|e| SealedBlob {
                id: e.id,
                kind: e.kind,
                sealed: bytes[e.offset as usize..(e.offset + e.length) as usize].to_vec(),
                raw_length: e.raw_length,
                compressed: e.compressed,
            })
            .collect())
    }

    /// Append the header and its length; the pack is complete.
    pub fn finish(mut self, key: &MasterKey) -> Result<FinishedPack, BackendError> {
        let header = key.seal(&postcard::to_stdvec(&self.entries).expect("header serializes"));
        let len = (header.len() as u32).to_le_bytes().to_vec();
        self.hasher.update(&header);
        self.hasher.update(&len);
        self.body.push(header)?;
        self.body.push(len)?;
        Ok(FinishedPack {
            id: PackId(*self.hasher.finalize().as_bytes()),
            body: self.body,
            blobs: self.entries,
        })
    }
}

/// A uniformly random index below `n` (n ≥ 1), from the OS random source.
pub fn random_below(n: usize) -> usize {
    let mut r = [0u8; 8];
    random(&mut r);
    (u64::from_le_bytes(r) % n as u64) as usize
}

/// Largest byte range of a pack that restore and `check --read-data` read at once; blobs
/// further apart are read separately (a single larger blob alone).
pub const READ_WINDOW: u64 = 4 << 20;

thread_local! {
    static WINDOW: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Lend this thread's pack read window (see `Backend::get_range_into`), reused for every
/// window of every pack: windows allocated afresh each time left the allocator holding
/// several times their size (check's peak RSS fell from 64–71 MB to 42 MB).
pub fn with_window<T>(f: impl FnOnce(&mut Vec<u8>) -> T) -> T {
    WINDOW.with_borrow_mut(f)
}

/// Object name of a pack.
pub fn pack_path(id: &PackId) -> String {
    let h = id.to_hex();
    format!("data/{}/{}", &h[..2], h)
}

/// Decode and check the header of a complete pack.
pub fn decode_header(key: &MasterKey, pack: &[u8]) -> Result<Vec<BlobEntry>, String> {
    if pack.len() < 4 {
        return Err("shorter than its length field".into());
    }
    let (body, len) = pack.split_at(pack.len() - 4);
    let hlen = header_len(len)?;
    if hlen > body.len() {
        return Err(format!("header length {hlen} exceeds pack size"));
    }
    decode_sealed_header(key, &body[body.len() - hlen..], body.len() - hlen)
}

/// The sealed header's length from a pack's last 4 bytes.
pub fn header_len(last4: &[u8]) -> Result<usize, String> {
    let b: [u8; 4] = last4
        .try_into()
        .map_err(|_| "length field is not 4 bytes".to_string())?;
    Ok(u32::from_le_bytes(b) as usize)
}

/// Decode a sealed header and check that its blobs lie within the first `blobs_area` bytes.
pub fn decode_sealed_header(key: &MasterKey, header: &[u8], blobs_area: usize) -> Result<Vec<BlobEntry>, String> {
    let plain = key.open(header).map_err(|e| format!("header: {e}"))?;
    let entries: Vec<BlobEntry> = postcard::from_bytes(&plain).map_err(|e| format!("header: {e}"))?;
    for e in &entries {
        if e.offset as usize + e.length as usize > blobs_area {
            return Err(format!("blob {} lies outside the pack", e.id.short()));
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn build_and_decode() {
        let key = MasterKey::generate();
        let mut b = PackBuilder::default();
        for i in 0..10u8 {
            let plain = vec![i; 100 + i as usize];
            b.add(SealedBlob {
                id: key.blob_id(&plain),
                kind: BlobKind::Data,
                sealed: key.seal(&plain),
                raw_length: plain.len() as u32,
                compressed: false,
            })
            .unwrap();
        }
        let p = b.finish(&key).unwrap();
        let blobs = p.blobs.clone();
        let bytes = p.body.into_bytes().unwrap();
        assert_eq!(
            blobs.iter().map(|e| e.raw_length).collect::<Vec<_>>(),
            (100..110).collect::<Vec<_>>()
        );
        assert_eq!(p.id, PackId(*blake3::hash(&bytes).as_bytes()));
        let h = decode_header(&key, &bytes).unwrap();
        assert_eq!(h, blobs);
        for e in h {
            let s = &bytes[e.offset as usize..(e.offset + e.length) as usize];
            assert_eq!(key.blob_id(&key.open(s).unwrap()), e.id);
        }
        let mut bad = bytes.clone();
        let n = bad.len();
        bad[n - 10] ^= 1;
        assert!(decode_header(&key, &bad).is_err());
        assert!(decode_header(&key, &bytes[..n - 1]).is_err());
    }

    proptest! {
        #[test]
        fn random_bytes_are_errors(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let key = MasterKey::from_secret([3; 32]);
            prop_assert!(decode_header(&key, &data).is_err());
        }
    }
}
