//! File contents: where each chunk of a file goes, filling files pack by pack through the
//! repository's pack reader, and re-reading them for `--verify`.

use crate::error::{Error, Result};
use crate::format::pack::BlobEntry;
use crate::format::tree::Node;
use crate::fs::at::{self, DirTree, Ino};
use crate::ids::{AnyBlobId, DataId, PackId};
use crate::repo::index::Index;
use crate::repo::pack_reader::Cover;
use crate::repo::Repository;
use rayon::prelude::*;
use std::collections::HashMap;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Where restored data goes: files by number, and per pack the blobs to write.
#[derive(Default)]
pub(super) struct ContentPlan {
    /// Each file's path below the target and the inode created for it.
    pub(super) files: Vec<(Box<Path>, Ino)>,
    /// pack → (blob, file number, offset in the file)
    pub(super) by_pack: HashMap<PackId, Vec<(DataId, u32, u64)>>,
}

/// Where each chunk of a file goes: dense files back to back, sparse files into their extents.
pub(super) fn chunk_offsets(index: &Index, n: &Node) -> Result<Vec<(DataId, u64)>> {
    let len_of = |id: &DataId| {
        index
            .get(id)
            .map(|l| l.raw_length as u64)
            .ok_or_else(|| Error::corrupt(format!("blob {id}"), "not in any index; run `pbak check`"))
    };
    let mut out = Vec::with_capacity(n.content.len());
    match &n.extents {
        None => {
            let mut off = 0;
            for id in &n.content {
                out.push((*id, off));
                off += len_of(id)?;
            }
        }
        Some(ext) => {
            let mut chunks = n.content.iter();
            for &(start, len) in ext {
                let mut off = start;
                while off < start + len {
                    let Some(id) = chunks.next() else { break };
                    out.push((*id, off));
                    off += len_of(id)?;
                }
            }
        }
    }
    Ok(out)
}

/// Fill file contents pack by pack: each needed range of a pack is read once, in windows of
/// at most [`crate::repo::pack_reader::READ_WINDOW`] (a single larger blob alone), and each blob is opened once and
/// written to every place it goes. Each write goes through a descriptor opened relative to
/// the file's directory descriptor, and only into the inode the first pass created.
pub(super) fn write_contents(
    repo: &Repository,
    index: &Index,
    target: &Path,
    dirs: &DirTree,
    plan: ContentPlan,
    bytes_done: &AtomicU64,
) -> Result<()> {
    let files = plan.files;
    let packs: Vec<_> = plan.by_pack.into_iter().collect();
    packs.into_par_iter().try_for_each(|(pack, mut targets)| {
        let loc_of = |id: &DataId| index.get(id).expect("planned blobs are indexed");
        targets.sort_by_key(|(id, _, _)| (loc_of(id).offset, *id));
        // Each blob once, with the range of `targets` it is written to.
        let mut blobs: Vec<BlobEntry> = Vec::new();
        let mut ranges: Vec<std::ops::Range<usize>> = Vec::new();
        for (k, (id, _, _)) in targets.iter().enumerate() {
            match blobs.last() {
                Some(b) if b.id == id.blob() => ranges.last_mut().expect("paired").end = k + 1,
                _ => {
                    let l = loc_of(id);
                    blobs.push(BlobEntry {
                        id: id.blob(),
                        kind: l.kind,
                        offset: l.offset,
                        length: l.length,
                        raw_length: l.raw_length,
                        compressed: l.compressed,
                    });
                    ranges.push(k..k + 1);
                }
            }
        }
        repo.read_pack_blobs(&pack, &blobs, Cover::Blobs, &mut |_| {}, &mut |i, data| {
            for &(_, file, off) in &targets[ranges[i].clone()] {
                let (rel, key) = &files[file as usize];
                let fpath = target.join(rel);
                let io = |e| Error::io(&fpath, e);
                let (dir, name) = dirs.parent(rel).map_err(io)?;
                let f = at::open_created(dir.as_fd(), name, *key, true).map_err(io)?;
                f.write_all_at(data, off).map_err(io)?;
                bytes_done.fetch_add(data.len() as u64, Relaxed);
            }
            Ok(())
        })
    })
}

/// Re-read a restored file and check its size and every chunk's id.
pub(super) fn verify_file(repo: &Repository, index: &Index, path: &Path, f: &std::fs::File, node: &Node) -> Result<()> {
    let fail = |reason: String| Error::VerifyFailed {
        path: path.to_path_buf(),
        reason,
    };
    let md = f.metadata().map_err(|e| Error::io(path, e))?;
    if !md.is_file() {
        return Err(fail("not a regular file".into()));
    }
    if md.len() != node.size {
        return Err(fail(format!("size {} instead of {}", md.len(), node.size)));
    }
    for (id, off) in chunk_offsets(index, node)? {
        let len = index.get(&id).expect("indexed").raw_length as usize;
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, off).map_err(|e| Error::io(path, e))?;
        if repo.key().blob_id(&buf) != id.blob() {
            return Err(fail(format!("content at offset {off} differs from the snapshot")));
        }
    }
    Ok(())
}
