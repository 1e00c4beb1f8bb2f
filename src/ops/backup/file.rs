//! One file's contents: reuse the parent's chunk list when its metadata is unchanged, else
//! read it (whole, memory-mapped from a read-only snapshot, or streamed in segments) and
//! store each new chunk.

use super::walk::Ctx;
use crate::error::{Error, Result};
use crate::format::crypto::OVERHEAD;
use crate::format::pack::{BlobKind, SealedBlob};
use crate::format::tree::{Node, NodeKind, Time, Tree};
use crate::fs::node::{data_extents, open_source_file};
use crate::ids::{BlobId, DataId, TreeId};
use crate::repo::buffers;
use rayon::prelude::*;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;

fn unchanged(prev: &Node, md: &std::fs::Metadata) -> bool {
    prev.kind == NodeKind::File
        && prev.size == md.size()
        && prev.mtime
            == Time {
                sec: md.mtime(),
                nsec: md.mtime_nsec() as u32,
            }
        && prev.ctime
            == Time {
                sec: md.ctime(),
                nsec: md.ctime_nsec() as u32,
            }
        && prev.inode == md.ino()
}

impl Ctx<'_> {
    /// Store a blob unless the repository or this backup already has it.
    pub(super) fn save_blob(&self, kind: BlobKind, data: &[u8]) -> Result<BlobId> {
        let id = self.repo.key().blob_id(data);
        if self.index.is_live(&id) || !self.known.lock().expect("lock").insert(id) {
            return Ok(id);
        }
        let key = self.repo.key();
        let seal = |plain: &[u8]| key.seal_into(plain, buffers::take(plain.len() + OVERHEAD));
        let (sealed, compressed) = match self.compressors.compress_sealed(data, seal) {
            Some(sealed) => (sealed, true),
            None => (seal(data), false),
        };
        self.stats.blobs_added.fetch_add(1, Relaxed);
        self.stats.bytes_added.fetch_add(sealed.len() as u64, Relaxed);
        self.sink.send(SealedBlob {
            id,
            kind,
            sealed,
            raw_length: data.len() as u32,
            compressed,
        })?;
        Ok(id)
    }

    pub(super) fn save_chunks(&self, chunks: &[&[u8]]) -> Result<Vec<DataId>> {
        let ids = chunks
            .par_iter()
            .map(|c| self.save_blob(BlobKind::Data, c).map(DataId::of))
            .collect::<Result<Vec<_>>>()?;
        let n: u64 = chunks.iter().map(|c| c.len() as u64).sum();
        self.stats.bytes_read.fetch_add(n, Relaxed);
        self.progress.bytes_done.fetch_add(n, Relaxed);
        Ok(ids)
    }

    pub(super) fn save_tree(&self, nodes: Vec<Node>) -> Result<TreeId> {
        self.save_blob(BlobKind::Tree, &Tree::new(nodes).encode())
            .map(TreeId::of)
    }

    /// `access` is how the file is opened (through its directory's descriptor), `read`
    /// where it is in the source (for messages).
    pub(super) fn archive_file(
        &self,
        access: &Path,
        read: &Path,
        md: &std::fs::Metadata,
        node: &mut Node,
        pnode: Option<&Node>,
    ) -> Result<()> {
        if let Some(p) = pnode.filter(|p| unchanged(p, md)) {
            if p.content.iter().all(|id| self.index.is_live(id)) {
                node.content = p.content.clone();
                node.extents = p.extents.clone();
                self.stats.files_unmodified.fetch_add(1, Relaxed);
                self.progress.bytes_done.fetch_add(md.size(), Relaxed);
                return Ok(());
            }
        }
        if pnode.is_some_and(|p| p.kind == NodeKind::File) {
            self.stats.files_changed.fetch_add(1, Relaxed);
        } else {
            self.stats.files_new.fetch_add(1, Relaxed);
        }
        let io = |e| Error::io(read, e);
        let chunker = self.repo.chunker();
        // What the walk's lstat saw, opened without following or blocking; read at most the
        // size the descriptor has now, so a file that grows is not followed.
        let (file, md) = open_source_file(access, md).map_err(io)?;
        let size = md.size();
        let mut file = file.take(size);
        if let Some(ext) = data_extents(file.get_ref(), &md).map_err(io)? {
            for &(off, len) in &ext {
                file.get_mut().seek(SeekFrom::Start(off)).map_err(io)?;
                file.set_limit(len);
                self.stream_chunks(&chunker, &mut file, &mut node.content, read)?;
            }
            node.extents = Some(ext);
            node.size = size;
        } else if size as usize <= chunker.segment_size() {
            let mut buf = buffers::take(size as usize);
            file.read_to_end(&mut buf).map_err(io)?;
            node.size = buf.len() as u64;
            let mut off = 0;
            let chunks: Vec<&[u8]> = chunker
                .cut_all(&buf)
                .into_iter()
                .map(|l| {
                    off += l;
                    &buf[off - l..off]
                })
                .collect();
            node.content = self.save_chunks(&chunks)?;
            buffers::give(buf);
        } else if self.opts.readonly_source {
            let map = crate::chunker::map_readonly(file.get_ref()).map_err(io)?;
            let mut off = 0;
            let lens = chunker.cut_all(&map);
            for group in lens.chunks(16) {
                let chunks: Vec<&[u8]> = group
                    .iter()
                    .map(|l| {
                        off += l;
                        &map[off - l..off]
                    })
                    .collect();
                node.content.extend(self.save_chunks(&chunks)?);
            }
            node.size = map.len() as u64;
        } else {
            node.size = self.stream_chunks(&chunker, &mut file, &mut node.content, read)?;
        }
        if file.get_ref().metadata().is_ok_and(|now| now.size() > size) {
            self.warn(format!(
                "{}: grew while read; stored its first {size} bytes",
                read.display()
            ));
        }
        Ok(())
    }

    fn stream_chunks(
        &self,
        chunker: &crate::chunker::Chunker,
        r: impl Read,
        out: &mut Vec<DataId>,
        path: &Path,
    ) -> Result<u64> {
        let mut err = None;
        let mut buf = buffers::take(chunker.segment_size());
        let n = chunker
            .stream(r, &mut buf, |chunks| match self.save_chunks(chunks) {
                Ok(ids) => {
                    out.extend(ids);
                    Ok(())
                }
                Err(e) => {
                    err = Some(e);
                    Err(std::io::Error::other("aborted"))
                }
            })
            .map_err(|e| err.take().unwrap_or_else(|| Error::io(path, e)));
        buffers::give(buf);
        if let Some(e) = err {
            return Err(e);
        }
        n
    }
}
