//! Packs: sealed blobs back to back, then the sealed header listing them, then the sealed
//! header's length as u32 LE. The pack id is the unkeyed BLAKE3 of all its bytes, so the
//! storage's integrity can be checked without the key. Blob order inside a pack is shuffled
//! so the provider cannot line chunk sizes up with file order.

use super::crypto::{random, MasterKey};
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

/// A pack ready to store: its bytes are `parts` back to back (the sealed blobs in pack order,
/// then the header and its length), kept apart so finishing a pack copies nothing.
pub struct FinishedPack {
    pub id: PackId,
    pub parts: Vec<Vec<u8>>,
    pub blobs: Vec<BlobEntry>,
}

impl FinishedPack {
    pub fn len(&self) -> usize {
        self.parts.iter().map(Vec::len).sum()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The whole pack as one buffer (tests and small callers).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.parts.concat()
    }
}

/// Collects blobs of one kind until the pack is big enough.
#[derive(Default)]
pub struct PackBuilder {
    blobs: Vec<SealedBlob>,
    size: usize,
}

impl PackBuilder {
    pub fn add(&mut self, b: SealedBlob) {
        self.size += b.sealed.len();
        self.blobs.push(b);
    }
    pub fn size(&self) -> usize {
        self.size
    }
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    pub fn finish(&mut self, key: &MasterKey) -> FinishedPack {
        let mut blobs = std::mem::take(&mut self.blobs);
        self.size = 0;
        shuffle(&mut blobs);
        let mut entries = Vec::with_capacity(blobs.len());
        let mut parts = Vec::with_capacity(blobs.len() + 2);
        let mut hasher = blake3::Hasher::new();
        let mut offset = 0usize;
        for b in blobs {
            entries.push(BlobEntry {
                id: b.id,
                kind: b.kind,
                offset: offset as u32,
                length: b.sealed.len() as u32,
                raw_length: b.raw_length,
                compressed: b.compressed,
            });
            offset += b.sealed.len();
            hasher.update(&b.sealed);
            parts.push(b.sealed);
        }
        let header = key.seal(&postcard::to_stdvec(&entries).expect("header serializes"));
        let len = (header.len() as u32).to_le_bytes().to_vec();
        hasher.update(&header);
        hasher.update(&len);
        parts.push(header);
        parts.push(len);
        FinishedPack {
            id: PackId(*hasher.finalize().as_bytes()),
            parts,
            blobs: entries,
        }
    }
}

fn shuffle<T>(v: &mut [T]) {
    for i in (1..v.len()).rev() {
        let mut r = [0u8; 8];
        random(&mut r);
        let j = (u64::from_le_bytes(r) % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

/// Largest byte range of a pack that restore and `check --read-data` read at once; blobs
/// further apart are read separately (a single larger blob alone).
pub const READ_WINDOW: u64 = 4 << 20;

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
            let plain = vec![i; 100];
            b.add(SealedBlob {
                id: key.blob_id(&plain),
                kind: BlobKind::Data,
                sealed: key.seal(&plain),
                raw_length: 100,
                compressed: false,
            });
        }
        let p = b.finish(&key);
        let bytes = p.to_bytes();
        assert_eq!(p.id, PackId(*blake3::hash(&bytes).as_bytes()));
        let h = decode_header(&key, &bytes).unwrap();
        assert_eq!(h, p.blobs);
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
