//! One pack being filled: a builder streams each blob into its [`Spool`] as it arrives
//! (hashing as it goes) and appends the sealed header at the end.

use crate::backends::{BackendError, Spool};
use crate::format::crypto::MasterKey;
use crate::format::pack::{encode_header, BlobEntry, SealedBlob};
use crate::ids::PackId;

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
        if let Some(spare) = self.body.push(b.sealed)? {
            crate::repo::buffers::give(spare);
        }
        Ok(())
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
        let (header, len) = encode_header(key, &self.entries);
        self.hasher.update(&header);
        self.hasher.update(&len);
        self.body.push(header)?;
        self.body.push(len.to_vec())?;
        Ok(FinishedPack {
            id: PackId(*self.hasher.finalize().as_bytes()),
            body: self.body,
            blobs: self.entries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pack::{decode_header, BlobKind};

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
}
