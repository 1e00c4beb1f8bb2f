//! Blobs: reading one (from the cache's tree packs or a ranged read) and opening it, the one
//! place where a blob is authenticated, decompressed and checked against its id. Walks read
//! their trees through `windows.rs` instead: by the window of a tree pack, not by the blob,
//! when there is no cache.

pub(super) mod windows;

use super::index::Index;
use super::Repository;
use crate::error::{Error, Result};
use crate::format::{layout, pack};
use crate::ids::BlobId;

impl Repository {
    /// Fetch, authenticate, decompress and hash-check one blob.
    pub fn read_blob(&self, index: &Index, id: &BlobId) -> Result<Vec<u8>> {
        let loc = index
            .get(id)
            .ok_or_else(|| Error::corrupt(format!("blob {id}"), "not in any index"))?;
        let pack = index.pack_id(&loc);
        let path = layout::pack(&pack);
        let (offset, len) = (loc.offset as u64, loc.length as u64);
        if let (Some(c), pack::BlobKind::Tree) = (&self.cache, loc.kind) {
            // Tree packs are cached whole: one download serves every tree in them.
            if let Some(sealed) = c.pack_range(&path, &pack, offset, len, || self.backend.get(&path))? {
                match self.open_blob(&path, id, loc.compressed, loc.raw_length, &sealed) {
                    Ok(data) => return Ok(data),
                    Err(_) => c.forget_pack(&path, &pack),
                }
            }
        }
        let sealed = self.backend.get_range(&path, offset, len)?;
        self.open_blob(&path, id, loc.compressed, loc.raw_length, &sealed)
    }

    /// One blob ready for the pack writer: compressed at the configured level when that makes
    /// it strictly shorter (`docs/FORMAT.md` §5), then sealed. For the few blobs an operation
    /// other than backup writes (repaired trees); backup keeps its own reused zstd contexts.
    pub fn seal_blob(&self, kind: pack::BlobKind, plain: &[u8]) -> pack::SealedBlob {
        let packed = zstd::bulk::compress(plain, self.config.compression)
            .ok()
            .filter(|c| c.len() < plain.len());
        pack::SealedBlob {
            id: self.key.blob_id(plain),
            kind,
            sealed: self.key.seal(packed.as_deref().unwrap_or(plain)),
            raw_length: plain.len() as u32,
            compressed: packed.is_some(),
        }
    }

    /// Authenticate, decompress and hash-check one sealed blob; `sealed` is left as it is.
    pub fn open_blob(&self, pack: &str, id: &BlobId, compressed: bool, raw_len: u32, sealed: &[u8]) -> Result<Vec<u8>> {
        let mut copy = sealed.to_vec();
        self.open_blob_in_place(pack, id, compressed, raw_len, &mut copy, |plain| Ok(plain.to_vec()))
    }

    /// The one place a blob is opened: `sealed` (a scratch copy, such as a pack window) is
    /// decrypted where it lies, a compressed blob is decompressed into a per-thread buffer, so
    /// nothing is allocated per blob, and the verified plaintext is lent to `use_plain`.
    pub fn open_blob_in_place<T>(
        &self,
        pack: &str,
        id: &BlobId,
        compressed: bool,
        raw_len: u32,
        sealed: &mut [u8],
        use_plain: impl FnOnce(&[u8]) -> Result<T>,
    ) -> Result<T> {
        let what = || format!("blob {} in {pack}", id.short());
        let plain = self
            .key
            .open_in_place(sealed)
            .map_err(|e| Error::corrupt(what(), e.to_string()))?;
        let verified = |data: &[u8]| data.len() == raw_len as usize && self.key.blob_id(data) == *id;
        if !compressed {
            if !verified(plain) {
                return Err(Error::corrupt(what(), "content does not match its id"));
            }
            return use_plain(plain);
        }
        SCRATCH.with_borrow_mut(|buf| {
            buf.clear();
            buf.reserve_exact(raw_len as usize);
            with_decompressor(|d| d.decompress_to_buffer(plain, buf))
                .map_err(|e| Error::corrupt(what(), e.to_string()))?;
            if !verified(buf) {
                return Err(Error::corrupt(what(), "content does not match its id"));
            }
            use_plain(buf)
        })
    }
}

thread_local! {
    /// One zstd decompression context per thread: creating one per blob cost a fifth of
    /// `check --read-data`'s CPU time (ZSTD_createDCtx zeroes ~100 KiB each time).
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
    /// Per-thread plaintext buffer for [`Repository::open_blob_in_place`]; at most one
    /// chunk (the chunker's maximum) per thread.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Put `buf` in as this thread's plaintext buffer and return the one it had: how an
/// [`OpenGate`](super::pack_reader::OpenGate) lends its buffers to the threads it lets in.
pub(super) fn swap_scratch(buf: Vec<u8>) -> Vec<u8> {
    SCRATCH.replace(buf)
}

fn with_decompressor<T>(
    f: impl FnOnce(&mut zstd::bulk::Decompressor<'static>) -> std::io::Result<T>,
) -> std::io::Result<T> {
    DECOMPRESSOR.with_borrow_mut(|slot| {
        let d = match slot {
            Some(d) => d,
            None => slot.insert(zstd::bulk::Decompressor::new()?),
        };
        f(d)
    })
}
