//! File contents: where each chunk of a file goes, filling files pack by pack through the
//! repository's pack reader (a damaged blob costs only the files that need it), and
//! re-reading them for `--verify`.

use crate::error::{Error, Result};
use crate::format::pack::BlobEntry;
use crate::format::tree::Node;
use crate::fs::at::{self, DirTree, FileMeta, Ino};
use crate::ids::{AnyBlobId, DataId, PackId};
use crate::repo::index::Index;
use crate::repo::pack_reader::{read_windows, Cover, OpenGate};
use crate::repo::Repository;
use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

/// Where restored data goes: files by number, and per pack the blobs to write.
#[derive(Default)]
pub(super) struct ContentPlan {
    /// Each file's path below the target and the inode created for it.
    pub(super) files: Vec<(Box<Path>, Ino)>,
    /// Each file's metadata and number of chunk writes: when the last one is done the file
    /// gets its owner, xattrs, mode and, last, its times at once (through the descriptor that
    /// wrote, see [`Finish`]), so that after an interrupted restore only finished files have
    /// the snapshot's size and mtime (`--overwrite if-changed` then checks their content).
    pub(super) done: Vec<(FileMeta, u32)>,
    /// pack → (blob, file number, offset in the file)
    pub(super) by_pack: HashMap<PackId, Vec<(DataId, u32, u64)>>,
}

/// What a restore does with a file whose last chunk is written (its path below the target,
/// its inode and the descriptor that wrote it): give it its metadata. A file's metadata used
/// to wait for the metadata pass, which opened every file twice more (by `O_PATH` to check
/// its inode, then to apply): 4 opens per restored file against `tar -x`'s one.
pub(super) type Finish<'a> = dyn Fn(&Path, Ino, BorrowedFd, &FileMeta) + Sync + 'a;

/// Where each chunk of a file goes: dense files back to back, sparse files into their extents.
pub fn chunk_offsets(index: &Index, n: &Node) -> Result<Vec<(DataId, u64)>> {
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

/// A file whose data could not be read: its path below the target, its inode, and why.
pub(super) type Damaged = (Box<Path>, Ino, String);

/// Fill file contents pack by pack, into the files below `to` (the target's path and
/// directories), or with `None` only read and verify them (a dry run): each needed range of
/// a pack is read once, in windows of at most [`crate::repo::pack_reader::READ_WINDOW`] (a
/// single larger blob alone), and each blob is opened (authenticated and checked against its
/// id) once and written to every place it goes. Each write goes through a descriptor opened
/// relative to the file's directory descriptor, and only into the inode the first pass
/// created.
///
/// Damage stays local: when a pack cannot be read or a blob in it does not open, the blobs
/// not yet written are read again one by one, and the files that need a blob that still fails
/// are returned (their other chunks are written). Errors writing the target stay fatal.
///
/// Packs are read in index order (roughly the order backups wrote them) by a fixed set of
/// workers, each taking the next pack when done with one: the rayon pool alone has one
/// thread per core, which left a remote store with two requests in flight on two cores.
/// From a remote repository `connections` workers (at least one per core) keep that many
/// reads in flight (the backend's gate bounds them too), and at most one per core opens and
/// writes what arrived ([`OpenGate`]); a local one uses one worker per core. Memory stays
/// bounded: a worker holds one read window (at most `READ_WINDOW`, or one larger blob) at a
/// time, and each core one plaintext buffer of up to a chunk.
pub(super) fn write_contents(
    repo: &Repository,
    index: &Index,
    to: Option<(&Path, &DirTree, &Finish)>,
    plan: ContentPlan,
    connections: usize,
    bytes_done: &AtomicU64,
) -> Result<Vec<Damaged>> {
    let files = plan.files;
    let (meta, left): (Vec<FileMeta>, Vec<AtomicU32>) =
        plan.done.into_iter().map(|(m, n)| (m, AtomicU32::new(n))).unzip();
    let mut packs: Vec<_> = plan.by_pack.into_iter().collect();
    packs.sort_by_key(|(p, _)| (index.pack_position(p), *p));
    let cores = rayon::current_num_threads().max(1);
    let workers = match repo.backend().is_local() {
        true => cores,
        false => connections.max(cores),
    }
    .min(packs.len().max(1));
    // More workers than cores (a remote store): the cores open what the ranges in flight
    // brought, one plaintext buffer each.
    let gate = (workers > cores).then(|| OpenGate::new(cores));
    let packs_ids: Vec<PackId> = packs.iter().map(|(p, _)| *p).collect();
    // Where each pack will be read: a worker starting one hints the next `workers` packs, so
    // that the kernel reads them while the workers open and write theirs.
    let ahead: Vec<Vec<(u64, u64)>> = packs
        .iter()
        .map(|(_, targets)| {
            let mut at: Vec<(u64, u64)> = targets
                .iter()
                .map(|(id, _, _)| {
                    let l = index.get(id).expect("planned blobs are indexed");
                    (l.offset as u64, l.length as u64)
                })
                .collect();
            at.sort_unstable();
            at.dedup();
            read_windows(&at)
        })
        .collect();
    let damaged: Mutex<HashMap<u32, String>> = Mutex::default();
    let write_at = |file: u32, data: &[u8], off: u64| -> Result<()> {
        let Some((target, dirs, finish)) = to else {
            return Ok(());
        };
        let (rel, key) = &files[file as usize];
        let fpath = target.join(rel);
        let io = |e| Error::io(&fpath, e);
        let (dir, name) = dirs.parent(rel).map_err(io)?;
        let f = at::open_created(dir.as_fd(), name, *key, true).map_err(io)?;
        f.write_all_at(data, off).map_err(io)?;
        if left[file as usize].fetch_sub(1, Relaxed) == 1 {
            finish(rel, *key, f.as_fd(), &meta[file as usize]);
        }
        Ok(())
    };
    let one_pack = |k: usize, (pack, mut targets): (PackId, Vec<(DataId, u32, u64)>)| -> Result<()> {
        for (p, w) in packs_ids[k + 1..].iter().zip(&ahead[k + 1..]).take(workers) {
            repo.will_read_pack_ranges(p, w);
        }
        let loc_of = |id: &DataId| index.get(id).expect("planned blobs are indexed");
        targets.sort_by_key(|(id, _, _)| (loc_of(id).offset, *id));
        let (blobs, ranges) = blobs_of(index, &targets);
        let write = |i: usize, data: &[u8]| -> Result<()> {
            for &(_, file, off) in &targets[ranges[i].clone()] {
                write_at(file, data, off)?;
                bytes_done.fetch_add(data.len() as u64, Relaxed);
            }
            Ok(())
        };
        // Blobs `done` are written; a write error is kept apart from a read error.
        let read = |range: std::ops::Range<usize>, done: &mut [bool]| -> Result<Result<()>> {
            let mut write_err = None;
            let r = repo.read_pack_blobs(
                &pack,
                &blobs[range.clone()],
                Cover::Blobs,
                gate.as_ref(),
                &mut |_| {},
                &mut |i, data| {
                    let k = range.start + i;
                    write(k, data).inspect_err(|e| write_err = Some(e.to_string()))?;
                    done[k] = true;
                    Ok(())
                },
            );
            match (r, write_err) {
                (Err(e), Some(_)) => Err(e),
                (r, _) => Ok(r),
            }
        };
        let mut done = vec![false; blobs.len()];
        if read(0..blobs.len(), &mut done)?.is_ok() {
            return Ok(());
        }
        for k in 0..blobs.len() {
            if done[k] {
                continue;
            }
            let Err(e) = read(k..k + 1, &mut done)? else { continue };
            if copy_elsewhere(repo, index, &blobs[k], &mut |data| write(k, data))? {
                continue;
            }
            let mut d = damaged.lock().expect("lock");
            for &(_, file, _) in &targets[ranges[k].clone()] {
                d.entry(file).or_insert_with(|| e.detail());
            }
        }
        Ok(())
    };
    in_order(packs, workers, &one_pack)?;
    let mut out: Vec<Damaged> = damaged
        .into_inner()
        .expect("lock")
        .into_iter()
        .map(|(file, why)| {
            let (rel, key) = &files[file as usize];
            (rel.clone(), *key, why)
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Run `f` on each item and its place, in order, on `workers` threads that each take the next
/// item when done with one; the first error stops the others from taking more and is returned.
fn in_order<T: Send>(items: Vec<T>, workers: usize, f: &(dyn Fn(usize, T) -> Result<()> + Sync)) -> Result<()> {
    let len = items.len();
    let items: Vec<Mutex<Option<T>>> = items.into_iter().map(|t| Mutex::new(Some(t))).collect();
    let next = AtomicUsize::new(0);
    let failed: Mutex<Option<Error>> = Mutex::default();
    std::thread::scope(|s| {
        for _ in 0..workers.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Relaxed);
                if i >= len {
                    break;
                }
                let item = items[i].lock().expect("lock").take().expect("taken once");
                if let Err(e) = f(i, item) {
                    failed.lock().expect("lock").get_or_insert(e);
                    next.store(len, Relaxed);
                    break;
                }
            });
        }
    });
    failed.into_inner().expect("lock").map_or(Ok(()), Err)
}

/// Read `blob` from another pack that holds a copy of it (its first location was damaged) and
/// hand it to `write`; whether one copy was sound. A write error is returned as such.
fn copy_elsewhere(
    repo: &Repository,
    index: &Index,
    blob: &BlobEntry,
    write: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<bool> {
    for loc in index.other_locations(&blob.id) {
        let other = BlobEntry {
            offset: loc.offset,
            length: loc.length,
            ..*blob
        };
        let mut write_err = None;
        let r = repo.read_pack_blobs(
            &index.pack_id(&loc),
            &[other],
            Cover::Blobs,
            None,
            &mut |_| {},
            &mut |_, data| write(data).inspect_err(|e| write_err = Some(e.to_string())),
        );
        match (r, write_err) {
            (Ok(()), _) => return Ok(true),
            (Err(e), Some(_)) => return Err(e),
            (Err(_), None) => {}
        }
    }
    Ok(false)
}

/// Each blob of a pack's sorted targets once, with the range of `targets` it is written to.
fn blobs_of(index: &Index, targets: &[(DataId, u32, u64)]) -> (Vec<BlobEntry>, Vec<std::ops::Range<usize>>) {
    let mut blobs: Vec<BlobEntry> = Vec::new();
    let mut ranges: Vec<std::ops::Range<usize>> = Vec::new();
    for (k, (id, _, _)) in targets.iter().enumerate() {
        match blobs.last() {
            Some(b) if b.id == id.blob() => ranges.last_mut().expect("paired").end = k + 1,
            _ => {
                let l = index.get(id).expect("planned blobs are indexed");
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
    (blobs, ranges)
}

/// Re-read a restored file and check its size and every chunk's id.
pub(super) fn verify_file(repo: &Repository, index: &Index, path: &Path, f: &std::fs::File, node: &Node) -> Result<()> {
    match differs(repo, index, f, node).map_err(|e| Error::io(path, e))? {
        None => Ok(()),
        Some(reason) => Err(Error::VerifyFailed {
            path: path.to_path_buf(),
            reason,
        }),
    }
}

/// How the open file `f` differs from `node` (size, or a chunk whose keyed hash is not the
/// snapshot's blob id), or `None` when it holds the snapshot's data. A sparse file's holes
/// are not read (its chunks cover only its data extents): `--overwrite if-changed` also
/// requires the size and mtime to match, which writing into a hole changes.
pub(super) fn differs(
    repo: &Repository,
    index: &Index,
    f: &std::fs::File,
    node: &Node,
) -> std::io::Result<Option<String>> {
    let md = f.metadata()?;
    if !md.is_file() {
        return Ok(Some("not a regular file".into()));
    }
    if md.len() != node.size {
        return Ok(Some(format!("size {} instead of {}", md.len(), node.size)));
    }
    let offsets = chunk_offsets(index, node).map_err(std::io::Error::other)?;
    let mut buf = Vec::new();
    for (id, off) in offsets {
        let len = index.get(&id).expect("indexed").raw_length as usize;
        buf.resize(len, 0);
        f.read_exact_at(&mut buf, off)?;
        if repo.key().blob_id(&buf) != id.blob() {
            return Ok(Some(format!("content at offset {off} differs from the snapshot")));
        }
    }
    Ok(None)
}
