//! Backup: walk sources in parallel, reuse unchanged files' chunk lists from the parent
//! snapshot, chunk/hash/compress/seal changed files on all cores, pack and upload while
//! the walk goes on, then write the index and finally the snapshot.
//!
//! Memory is bounded by the queues: at most `BLOB_QUEUE` sealed blobs wait for the packer,
//! a finished pack is handed straight to one of `connections` uploaders, and large files are
//! read in segments. On a local repository packs are written to temporary files as they fill
//! (see `backends::Spool`), so no pack is held in memory; remote packs are (at most
//! `connections` plus the four being filled).
//! Index files are written every `INDEX_EVERY` packs, so an interrupted backup's stored
//! packs are known to the next run and not uploaded again.

pub mod change_filter;

use crate::error::{Error, Result};
use crate::format::layout;
use crate::format::pack::{random_below, BlobKind, SealedBlob};
use crate::format::snapshot::{BtrfsOrigin, ChangeDetection, Snapshot, Summary};
use crate::format::tree::{Node, NodeKind, Time, Tree};
use crate::fs::node::{data_extents, node_from_metadata, open_noatime};
use crate::ids::{BlobId, DataId, SnapshotId, TreeId};
use crate::repo::index::{Index, IndexFile, IndexPack};
use crate::repo::pack_writer::{FinishedPack, PackBuilder};
use crate::repo::Repository;
use change_filter::ChangeFilter;
use crossbeam_channel::{bounded, Receiver, Sender};
use rayon::prelude::*;
use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

const BLOB_QUEUE: usize = 8;
const INDEX_EVERY: usize = 8;

/// One thing to back up: where it is recorded in the snapshot, and where it is read from
/// (the same path, or the matching path inside a read-only Btrfs snapshot).
#[derive(Clone, Debug)]
pub struct Source {
    pub recorded: PathBuf,
    pub read: PathBuf,
}

#[derive(Clone, Debug, Default)]
pub struct BackupOptions {
    pub sources: Vec<Source>,
    pub tags: Vec<String>,
    pub host: String,
    pub excludes: Vec<String>,
    pub one_file_system: bool,
    pub exclude_caches: bool,
    pub dry_run: bool,
    /// Explicit parent; `None` picks the latest snapshot of the same host and paths.
    pub parent: Option<SnapshotId>,
    /// Sources cannot change while read (read-only snapshot): large files are memory-mapped.
    pub readonly_source: bool,
    pub btrfs: Option<BtrfsOrigin>,
    /// Concurrent pack uploads.
    pub connections: usize,
    /// Record this st_dev for every entry (a snapshot's own device number changes each time).
    pub device_override: Option<u64>,
    /// Filesystem change detection: take unchanged entries from the parent without a stat.
    /// Requires `parent` to be the snapshot the filter was computed against.
    pub change_filter: Option<Arc<ChangeFilter>>,
}

/// Live counters for a progress display; the backup only ever adds to them.
#[derive(Default)]
pub struct Progress {
    pub files_done: AtomicU64,
    pub bytes_done: AtomicU64,
    pub total_files: AtomicU64,
    pub total_bytes: AtomicU64,
    pub scan_finished: AtomicBool,
    pub want_totals: AtomicBool,
}

pub struct BackupResult {
    /// `None` on a dry run.
    pub id: Option<SnapshotId>,
    pub snapshot: Snapshot,
    pub parent: Option<SnapshotId>,
    pub warnings: Vec<String>,
}

#[derive(Default)]
struct Stats {
    files_new: AtomicU64,
    files_changed: AtomicU64,
    files_unmodified: AtomicU64,
    dirs: AtomicU64,
    total_files: AtomicU64,
    total_bytes: AtomicU64,
    bytes_read: AtomicU64,
    blobs_added: AtomicU64,
    bytes_added: AtomicU64,
    /// Parent-tree files, bytes and dirs that a change-filtered walk replaced or dropped;
    /// totals are then the parent's minus these plus what the walk counted.
    removed_files: AtomicU64,
    removed_bytes: AtomicU64,
    removed_dirs: AtomicU64,
}

enum Trie {
    Leaf(PathBuf),
    Inner(BTreeMap<Vec<u8>, Trie>),
}

struct Ctx<'a> {
    repo: &'a Repository,
    compressors: Compressors,
    index: &'a Index,
    opts: &'a BackupOptions,
    excludes: Vec<glob::Pattern>,
    known: Mutex<HashSet<BlobId>>,
    tx: Sender<SealedBlob>,
    stats: Stats,
    warnings: Mutex<Vec<String>>,
    abort: &'a AtomicBool,
    progress: &'a Progress,
}

/// zstd contexts shared by all walk threads, at most one per core: compression is CPU-bound,
/// and each level-3 context holds a few MiB of window and tables, so one per walk thread
/// (4 per core) cost memory without adding speed. Each context comes with an output buffer
/// that is reused, so a blob costs one allocation: its exactly sized sealed copy.
struct Compressors {
    level: i32,
    max: usize,
    /// Idle contexts, and how many exist.
    state: Mutex<(Vec<Compressor>, usize)>,
    freed: std::sync::Condvar,
}

/// A zstd context and the output buffer it reuses.
type Compressor = (zstd::bulk::Compressor<'static>, Vec<u8>);

impl Compressors {
    fn new(level: i32) -> Compressors {
        Compressors {
            level,
            max: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            state: Mutex::new((Vec::new(), 0)),
            freed: std::sync::Condvar::new(),
        }
    }

    /// `seal(compressed data)` if zstd makes it strictly shorter, else `None`.
    fn compress_sealed(&self, data: &[u8], seal: impl FnOnce(&[u8]) -> Vec<u8>) -> Option<Vec<u8>> {
        let (mut c, mut buf) = {
            let mut st = self.state.lock().expect("lock");
            loop {
                if let Some(c) = st.0.pop() {
                    break c;
                }
                if st.1 < self.max {
                    st.1 += 1;
                    drop(st);
                    match zstd::bulk::Compressor::new(self.level) {
                        Ok(c) => break (c, Vec::new()),
                        Err(_) => {
                            self.state.lock().expect("lock").1 -= 1;
                            return None;
                        }
                    }
                }
                st = self.freed.wait(st).expect("lock");
            }
        };
        buf.clear();
        buf.reserve_exact(zstd::zstd_safe::compress_bound(data.len()));
        let out = match c.compress_to_buffer(data, &mut buf) {
            Ok(n) if n < data.len() => Some(seal(&buf)),
            _ => None,
        };
        // Keep the buffer for the next blob unless one huge blob inflated it.
        if buf.capacity() > 8 << 20 {
            buf = Vec::new();
        }
        self.state.lock().expect("lock").0.push((c, buf));
        self.freed.notify_one();
        out
    }
}

/// The latest snapshot of `host` with exactly these paths: the default parent.
pub fn find_parent(repo: &Repository, host: &str, paths: &[String]) -> Result<Option<(SnapshotId, Snapshot)>> {
    let mut want = paths.to_vec();
    want.sort();
    Ok(repo.snapshots()?.into_iter().rev().find(|(_, s)| {
        let mut p = s.paths.clone();
        p.sort();
        s.host == host && p == want
    }))
}

pub(crate) fn clean_abs(p: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(p).map_err(|e| Error::io(p, e))?;
    let mut out = PathBuf::from("/");
    for c in abs.components() {
        match c {
            std::path::Component::Normal(n) => out.push(n),
            std::path::Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    Ok(out)
}

fn build_trie(sources: &[Source]) -> Result<Trie> {
    let mut root = Trie::Inner(BTreeMap::new());
    for s in sources {
        let rec = clean_abs(&s.recorded)?;
        let comps: Vec<Vec<u8>> = rec
            .components()
            .skip(1)
            .map(|c| c.as_os_str().as_bytes().to_vec())
            .collect();
        let mut cur = &mut root;
        for (i, c) in comps.iter().enumerate() {
            let Trie::Inner(map) = cur else { break };
            if i + 1 == comps.len() {
                map.insert(c.clone(), Trie::Leaf(s.read.clone()));
                break;
            }
            cur = map.entry(c.clone()).or_insert_with(|| Trie::Inner(BTreeMap::new()));
        }
        if comps.is_empty() {
            root = Trie::Leaf(s.read.clone());
        }
    }
    Ok(root)
}

/// Run a backup of `opts.sources` into `repo`.
pub fn backup(repo: &Repository, index: &Index, opts: &BackupOptions, progress: &Progress) -> Result<BackupResult> {
    let start = Instant::now();
    for s in &opts.sources {
        std::fs::symlink_metadata(&s.read).map_err(|e| Error::io(&s.read, e))?;
    }
    let paths: Vec<String> = opts
        .sources
        .iter()
        .map(|s| clean_abs(&s.recorded).map(|p| p.to_string_lossy().into_owned()))
        .collect::<Result<_>>()?;
    let parent = match opts.parent {
        Some(id) => Some((id, repo.load_snapshot(&id)?)),
        None => find_parent(repo, &opts.host, &paths)?,
    };
    let parent_tree = match &parent {
        Some((_, s)) => Some(repo.load_tree(index, &s.tree)?),
        None => None,
    };
    let excludes = opts
        .excludes
        .iter()
        .map(|p| glob::Pattern::new(p).map_err(|e| Error::Usage(format!("bad --exclude pattern {p:?}: {e}"))))
        .collect::<Result<Vec<_>>>()?;
    let (tx, rx) = bounded::<SealedBlob>(BLOB_QUEUE);
    // A local disk gains nothing from more than two writers, and each holds a pack in memory.
    let connections = if repo.backend().is_local() {
        opts.connections.clamp(1, 2)
    } else {
        opts.connections.max(1)
    };
    let (up_tx, up_rx) = bounded::<FinishedPack>(0);
    let abort = AtomicBool::new(false);
    let walk_done = AtomicBool::new(false);
    let upload = Uploader {
        repo,
        dry_run: opts.dry_run,
        done: Mutex::new(Vec::new()),
        error: Mutex::new(None),
        abort: &abort,
    };
    let trie = build_trie(&opts.sources)?;

    let (walk_result, stats, warnings) = std::thread::scope(|s| {
        let upload_ref = &upload;
        s.spawn(move || run_packer(rx, repo, up_tx, upload_ref));
        for _ in 0..connections {
            let up_rx = up_rx.clone();
            let upload = &upload;
            s.spawn(move || upload.run(up_rx));
        }
        drop(up_rx);
        if progress.want_totals.load(Relaxed) && opts.change_filter.is_none() {
            let roots = opts.sources.iter().map(|s| s.read.clone()).collect();
            let walk_done = &walk_done;
            s.spawn(move || scan_totals(roots, progress, walk_done));
        }
        let ctx = Ctx {
            repo,
            compressors: Compressors::new(repo.config().compression),
            index,
            opts,
            excludes,
            known: Mutex::new(HashSet::new()),
            tx,
            stats: Stats::default(),
            warnings: Mutex::new(Vec::new()),
            abort: &abort,
            progress,
        };
        let r = crate::host::with_io_pool(|| match &trie {
            Trie::Leaf(read) => ctx.archive_dir(read, Path::new("/"), parent_tree.as_ref(), dev_of(read)),
            Trie::Inner(map) => ctx.archive_trie(map, Path::new("/"), parent_tree.as_ref()),
        });
        walk_done.store(true, Relaxed);
        // Dropping the blob queue's sender lets the packer flush and the uploaders finish.
        let Ctx {
            stats, warnings, tx, ..
        } = ctx;
        drop(tx);
        (r, stats, warnings)
    });
    let failure = upload
        .error
        .lock()
        .expect("lock")
        .take()
        .map(Err)
        .unwrap_or(walk_result);
    let root = match failure {
        Ok(root) => root,
        Err(e) => {
            // Index what was stored, so the next run does not upload it again.
            let _ = upload.flush_index(true);
            return Err(e);
        }
    };
    upload.flush_index(true)?;

    let warnings = warnings.into_inner().expect("lock");
    let (host, user) = (opts.host.clone(), crate::host::host_user().1);
    let now = chrono::Utc::now();
    let g = |a: &AtomicU64| a.load(Relaxed);
    let filtered = opts.change_filter.is_some() && parent.is_some();
    let (total_files, total_bytes, dirs) = match &parent {
        Some((_, p)) if filtered => {
            let t = |prev: u64, walked: &AtomicU64, removed: &AtomicU64| (prev + g(walked)).saturating_sub(g(removed));
            let ps = &p.summary;
            (
                t(ps.total_files, &stats.total_files, &stats.removed_files),
                t(ps.total_bytes, &stats.total_bytes, &stats.removed_bytes),
                t(ps.dirs, &stats.dirs, &stats.removed_dirs),
            )
        }
        _ => (g(&stats.total_files), g(&stats.total_bytes), g(&stats.dirs)),
    };
    let files_unmodified = match filtered {
        true => total_files.saturating_sub(g(&stats.files_new) + g(&stats.files_changed)),
        false => g(&stats.files_unmodified),
    };
    let snapshot = Snapshot {
        time: Time {
            sec: now.timestamp(),
            nsec: now.timestamp_subsec_nanos(),
        },
        host,
        user,
        paths,
        tags: opts.tags.clone(),
        tree: root,
        parent: parent.as_ref().map(|p| p.0),
        btrfs: opts.btrfs.clone(),
        summary: Summary {
            files_new: g(&stats.files_new),
            files_changed: g(&stats.files_changed),
            files_unmodified,
            dirs,
            total_files,
            total_bytes,
            bytes_read: g(&stats.bytes_read),
            blobs_added: g(&stats.blobs_added),
            bytes_added: g(&stats.bytes_added),
            duration_ms: start.elapsed().as_millis() as u64,
            errors: warnings.len() as u64,
            change_detection: match filtered {
                true => ChangeDetection::BtrfsGeneration,
                false => ChangeDetection::MetadataScan,
            },
        },
        partial: !warnings.is_empty(),
        program_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let id = if opts.dry_run {
        None
    } else {
        Some(repo.save_snapshot(&snapshot)?)
    };
    Ok(BackupResult {
        id,
        snapshot,
        parent: parent.map(|p| p.0),
        warnings,
    })
}

fn dev_of(p: &Path) -> u64 {
    std::fs::symlink_metadata(p).map(|m| m.dev()).unwrap_or(0)
}

/// Count files and bytes for the progress bar's ETA; stops early when the walk is done.
fn scan_totals(mut stack: Vec<PathBuf>, progress: &Progress, walk_done: &AtomicBool) {
    while let Some(p) = stack.pop() {
        if walk_done.load(Relaxed) {
            return;
        }
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if md.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        } else if md.is_file() {
            progress.total_files.fetch_add(1, Relaxed);
            progress.total_bytes.fetch_add(md.len(), Relaxed);
        }
    }
    progress.scan_finished.store(true, Relaxed);
}

/// Fill packs from the blob queue and hand each full one to an uploader. Two packs per blob
/// kind are open at once and every blob goes to one of them at random, so the provider cannot
/// tell which stored chunks belong to one file (restic 0.18's mitigation of chunk-size
/// fingerprinting). Errors stop the backup through `upload`.
fn run_packer(rx: Receiver<SealedBlob>, repo: &Repository, up: Sender<FinishedPack>, upload: &Uploader) {
    if let Err(e) = pack_blobs(rx, repo, &up, upload.dry_run) {
        upload.fail(e);
    }
}

fn pack_blobs(rx: Receiver<SealedBlob>, repo: &Repository, up: &Sender<FinishedPack>, dry_run: bool) -> Result<()> {
    let pack_size = repo.config().pack_size as usize;
    let body = || match dry_run {
        true => Ok(crate::backends::Spool::memory()),
        false => repo.backend().spool(),
    };
    let send = |b: PackBuilder| -> Result<bool> { Ok(up.send(b.finish(repo.key())?).is_ok()) };
    // [data, tree] × two open packs.
    let mut open: [[Option<PackBuilder>; 2]; 2] = Default::default();
    for blob in rx {
        let slot = &mut open[(blob.kind == BlobKind::Tree) as usize][random_below(2)];
        let builder = match slot {
            Some(b) => b,
            None => slot.insert(PackBuilder::new(body()?)),
        };
        builder.add(blob)?;
        if builder.size() >= pack_size && !send(slot.take().expect("filled"))? {
            return Ok(());
        }
    }
    for [a, b] in open {
        // Two small packs left: one pack, so a small backup's chunks are not split over two
        // packs whose sizes would give the chunk sizes away.
        let last: Vec<PackBuilder> = match (a, b) {
            (Some(a), Some(b)) if a.size() + b.size() < pack_size => {
                let (mut big, small) = if a.size() >= b.size() { (a, b) } else { (b, a) };
                for blob in small.into_blobs()? {
                    big.add(blob)?;
                }
                vec![big]
            }
            (a, b) => a.into_iter().chain(b).collect(),
        };
        for b in last {
            if !send(b)? {
                return Ok(());
            }
        }
    }
    Ok(())
}

struct Uploader<'a> {
    repo: &'a Repository,
    dry_run: bool,
    done: Mutex<Vec<IndexPack>>,
    error: Mutex<Option<Error>>,
    abort: &'a AtomicBool,
}

impl Uploader<'_> {
    fn run(&self, rx: Receiver<FinishedPack>) {
        for p in rx {
            if self.abort.load(Relaxed) {
                continue; // keep draining so nobody blocks on a full queue
            }
            let r = if self.dry_run {
                Ok(())
            } else {
                self.repo.backend().put_spool(&layout::pack(&p.id), p.body)
            };
            let r = r.map_err(Error::from).and_then(|()| {
                self.done.lock().expect("lock").push(IndexPack {
                    id: p.id,
                    blobs: p.blobs,
                });
                self.flush_index(false)
            });
            if let Err(e) = r {
                self.fail(e);
            }
        }
    }

    /// Stop the backup with `e` (the first error is the one reported).
    fn fail(&self, e: Error) {
        self.abort.store(true, Relaxed);
        self.error.lock().expect("lock").get_or_insert(e);
    }

    /// Write an index file for stored packs: always at the end, every `INDEX_EVERY` packs before.
    fn flush_index(&self, all: bool) -> Result<()> {
        let packs = {
            let mut d = self.done.lock().expect("lock");
            if d.is_empty() || (!all && d.len() < INDEX_EVERY) {
                return Ok(());
            }
            std::mem::take(&mut *d)
        };
        if !self.dry_run {
            // Packs must be durable before an index names them.
            self.repo.backend().barrier()?;
            self.repo.save_index(&IndexFile { packs })?;
        }
        Ok(())
    }
}

fn is_cache_dir(dir: &Path) -> bool {
    const SIG: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";
    let mut buf = [0u8; 43];
    std::fs::File::open(dir.join("CACHEDIR.TAG"))
        .and_then(|mut f| f.read_exact(&mut buf))
        .map(|()| buf == SIG)
        .unwrap_or(false)
}

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
    fn warn(&self, msg: String) {
        self.warnings.lock().expect("lock").push(msg);
    }

    fn fix_device(&self, mut n: Node) -> Node {
        if let Some(d) = self.opts.device_override {
            n.device = d;
        }
        n
    }

    fn excluded(&self, rec: &Path, name: &[u8]) -> bool {
        let name = String::from_utf8_lossy(name);
        self.excludes.iter().any(|p| {
            if p.as_str().contains('/') {
                p.matches_path(rec)
            } else {
                p.matches(&name)
            }
        })
    }

    /// Store a blob unless the repository or this backup already has it.
    fn save_blob(&self, kind: BlobKind, data: &[u8]) -> Result<BlobId> {
        let id = self.repo.key().blob_id(data);
        if self.index.contains(&id) || !self.known.lock().expect("lock").insert(id) {
            return Ok(id);
        }
        let key = self.repo.key();
        let (sealed, compressed) = match self.compressors.compress_sealed(data, |c| key.seal(c)) {
            Some(sealed) => (sealed, true),
            None => (key.seal(data), false),
        };
        self.stats.blobs_added.fetch_add(1, Relaxed);
        self.stats.bytes_added.fetch_add(sealed.len() as u64, Relaxed);
        self.tx
            .send(SealedBlob {
                id,
                kind,
                sealed,
                raw_length: data.len() as u32,
                compressed,
            })
            .map_err(|_| Error::Usage("backup aborted: the pack writer stopped".into()))?;
        Ok(id)
    }

    fn save_chunks(&self, chunks: &[&[u8]]) -> Result<Vec<DataId>> {
        let ids = chunks
            .par_iter()
            .map(|c| self.save_blob(BlobKind::Data, c).map(DataId::of))
            .collect::<Result<Vec<_>>>()?;
        let n: u64 = chunks.iter().map(|c| c.len() as u64).sum();
        self.stats.bytes_read.fetch_add(n, Relaxed);
        self.progress.bytes_done.fetch_add(n, Relaxed);
        Ok(ids)
    }

    fn save_tree(&self, nodes: Vec<Node>) -> Result<TreeId> {
        self.save_blob(BlobKind::Tree, &Tree::new(nodes).encode())
            .map(TreeId::of)
    }

    fn check_abort(&self) -> Result<()> {
        if self.abort.load(Relaxed) {
            return Err(Error::Usage("backup aborted after an upload failure".into()));
        }
        Ok(())
    }

    fn archive_trie(&self, map: &BTreeMap<Vec<u8>, Trie>, rec_dir: &Path, parent: Option<&Tree>) -> Result<TreeId> {
        let entries: Vec<_> = map.iter().collect();
        let nodes = entries
            .par_iter()
            .map(|(name, t)| {
                let rec = rec_dir.join(std::ffi::OsStr::from_bytes(name));
                let pnode = parent.and_then(|p| p.find(name));
                match t {
                    Trie::Leaf(read) => self.archive_entry(read, &rec, name, pnode, dev_of(read)),
                    Trie::Inner(sub) => {
                        let md = std::fs::symlink_metadata(&rec).map_err(|e| Error::io(&rec, e))?;
                        let mut node =
                            self.fix_device(node_from_metadata(name, &rec, &md).map_err(|e| Error::io(&rec, e))?);
                        let ptree = self.parent_subtree(pnode);
                        node.subtree = Some(self.archive_trie(sub, &rec, ptree.as_ref())?);
                        Ok(Some(node))
                    }
                }
            })
            .collect::<Result<Vec<_>>>()?;
        self.save_tree(nodes.into_iter().flatten().collect())
    }

    fn parent_subtree(&self, pnode: Option<&Node>) -> Option<Tree> {
        let id = pnode.filter(|n| n.is_dir())?.subtree?;
        match self.repo.load_tree(self.index, &id) {
            Ok(t) => Some(t),
            Err(e) => {
                self.warn(format!(
                    "parent tree {} unreadable, reading files again: {e}",
                    id.short()
                ));
                None
            }
        }
    }

    /// The change filter, when it covers `read`.
    fn filter(&self, read: &Path) -> Option<&ChangeFilter> {
        self.opts.change_filter.as_deref().filter(|f| f.applies_to(read))
    }

    /// Count a parent node as replaced (change-filtered walks only); with `deep`, also
    /// everything below it (its subtree was not walked as a parent tree).
    fn count_removed(&self, p: &Node, deep: bool) {
        match p.kind {
            NodeKind::File => {
                self.stats.removed_files.fetch_add(1, Relaxed);
                self.stats.removed_bytes.fetch_add(p.size, Relaxed);
            }
            NodeKind::Dir => {
                self.stats.removed_dirs.fetch_add(1, Relaxed);
                if let Some(t) = deep.then(|| self.parent_subtree(Some(p))).flatten() {
                    t.nodes.iter().for_each(|n| self.count_removed(n, true));
                }
            }
            _ => {}
        }
    }

    fn archive_dir(&self, read: &Path, rec: &Path, parent: Option<&Tree>, root_dev: u64) -> Result<TreeId> {
        let mut entries: Vec<(Vec<u8>, PathBuf, u64)> = match std::fs::read_dir(read) {
            Ok(rd) => rd
                .filter_map(|e| match e {
                    Ok(e) => Some((e.file_name().as_bytes().to_vec(), e.path(), e.ino())),
                    Err(err) => {
                        self.warn(format!("{}: {err}", read.display()));
                        None
                    }
                })
                .collect(),
            Err(e) => {
                self.warn(format!("{}: cannot list directory: {e}", read.display()));
                Vec::new()
            }
        };
        entries.sort();
        let filter = self.filter(read);
        let nodes = entries
            .par_iter()
            .map(|(name, path, ino)| {
                let pnode = parent.and_then(|p| p.find(name));
                if let Some(p) = filter.and_then(|f| f.reusable(path, *ino, pnode, self.index)) {
                    return Ok(Some(p.clone()));
                }
                let rec = rec.join(std::ffi::OsStr::from_bytes(name));
                self.archive_entry(path, &rec, name, pnode, root_dev)
            })
            .collect::<Result<Vec<_>>>()?;
        if let (Some(_), Some(p)) = (filter, parent) {
            // Names gone since the parent: deleted or renamed away.
            p.nodes
                .iter()
                .filter(|n| entries.binary_search_by(|e| e.0.cmp(&n.name)).is_err())
                .for_each(|n| self.count_removed(n, true));
        }
        self.save_tree(nodes.into_iter().flatten().collect())
    }

    /// Archive one path; `Ok(None)` when it is excluded or could not be read (a warning).
    fn archive_entry(
        &self,
        read: &Path,
        rec: &Path,
        name: &[u8],
        pnode: Option<&Node>,
        root_dev: u64,
    ) -> Result<Option<Node>> {
        let mut descended = false;
        let r = self.archive_entry_inner(read, rec, name, pnode, root_dev, &mut descended);
        if let Some(p) = pnode.filter(|_| self.filter(read).is_some()) {
            self.count_removed(p, !descended);
        }
        r
    }

    /// `descended` is set when a directory's parent subtree was walked as its parent tree.
    fn archive_entry_inner(
        &self,
        read: &Path,
        rec: &Path,
        name: &[u8],
        pnode: Option<&Node>,
        root_dev: u64,
        descended: &mut bool,
    ) -> Result<Option<Node>> {
        self.check_abort()?;
        if self.excluded(rec, name) {
            return Ok(None);
        }
        let md = match std::fs::symlink_metadata(read) {
            Ok(m) => m,
            Err(e) => {
                self.warn(format!("{}: {e}", rec.display()));
                return Ok(None);
            }
        };
        let mut node = match node_from_metadata(name, read, &md) {
            Ok(n) => self.fix_device(n),
            Err(e) => {
                self.warn(format!("{}: {e}", rec.display()));
                return Ok(None);
            }
        };
        match node.kind {
            NodeKind::File => {
                self.stats.total_files.fetch_add(1, Relaxed);
                self.stats.total_bytes.fetch_add(md.size(), Relaxed);
                if let Err(e) = self.archive_file(read, &md, &mut node, pnode) {
                    if matches!(e, Error::Io { .. }) {
                        self.warn(format!("{}: {e}", rec.display()));
                        return Ok(None);
                    }
                    return Err(e);
                }
                self.progress.files_done.fetch_add(1, Relaxed);
            }
            NodeKind::Dir => {
                if self.opts.exclude_caches && is_cache_dir(read) {
                    return Ok(None);
                }
                self.stats.dirs.fetch_add(1, Relaxed);
                if self.opts.one_file_system && md.dev() != root_dev {
                    node.subtree = Some(self.save_tree(Vec::new())?);
                } else {
                    let ptree = self.parent_subtree(pnode);
                    *descended = ptree.is_some();
                    node.subtree = Some(self.archive_dir(read, rec, ptree.as_ref(), root_dev)?);
                }
            }
            _ => {}
        }
        Ok(Some(node))
    }

    fn archive_file(&self, read: &Path, md: &std::fs::Metadata, node: &mut Node, pnode: Option<&Node>) -> Result<()> {
        if let Some(p) = pnode.filter(|p| unchanged(p, md)) {
            if p.content.iter().all(|id| self.index.contains(id)) {
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
        let mut file = open_noatime(read).map_err(io)?;
        if let Some(ext) = data_extents(&file, md).map_err(io)? {
            for &(off, len) in &ext {
                file.seek(SeekFrom::Start(off)).map_err(io)?;
                self.stream_chunks(&chunker, (&mut file).take(len), &mut node.content, read)?;
            }
            node.extents = Some(ext);
            return Ok(());
        }
        let size = md.size() as usize;
        if size <= chunker.segment_size() {
            let mut buf = Vec::with_capacity(size);
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
        } else if self.opts.readonly_source {
            let map = crate::chunker::map_readonly(&file).map_err(io)?;
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
        let n = chunker
            .stream(r, |chunks| match self.save_chunks(chunks) {
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
        if let Some(e) = err {
            return Err(e);
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::{Backend, Location};
    use crate::format::config::Config;
    use crate::format::keyfile::KdfParams;

    fn local_repo(dir: &Path, pack_size: u32) -> Repository {
        let loc = Location::parse(dir.to_str().unwrap()).unwrap();
        let kdf = KdfParams {
            m_cost_kib: 64,
            t_cost: 1,
            p_cost: 1,
        };
        let config = Config {
            pack_size,
            ..Config::new()
        };
        Repository::init(Backend::open(&loc, true).unwrap(), b"pw", kdf, config).unwrap()
    }

    /// Run the packer over `blobs` (in this order) and return the finished packs.
    fn pack(repo: &Repository, blobs: Vec<SealedBlob>) -> Vec<FinishedPack> {
        let (tx, rx) = bounded(4);
        let (up_tx, up_rx) = bounded(0);
        std::thread::scope(|s| {
            // The packer owns the only sender, so the collector ends when the packer does.
            let packer = s.spawn(move || pack_blobs(rx, repo, &up_tx, false));
            let collector = s.spawn(move || up_rx.iter().collect::<Vec<_>>());
            for b in blobs {
                tx.send(b).unwrap();
            }
            drop(tx);
            packer.join().unwrap().unwrap();
            collector.join().unwrap()
        })
    }

    fn blob(repo: &Repository, i: u32, kind: BlobKind, len: usize) -> SealedBlob {
        let mut plain = i.to_le_bytes().to_vec();
        plain.extend((4..len).map(|j| (i as usize * 31 + j * 7) as u8));
        SealedBlob {
            id: repo.key().blob_id(&plain),
            kind,
            sealed: repo.key().seal(&plain),
            raw_length: len as u32,
            compressed: false,
        }
    }

    #[test]
    fn blobs_are_spread_at_random_over_two_open_packs() {
        let dir = tempfile::tempdir().unwrap();
        let repo = local_repo(dir.path(), 1 << 20);
        let data: Vec<SealedBlob> = (0..400).map(|i| blob(&repo, i, BlobKind::Data, 20_000)).collect();
        let order: Vec<BlobId> = data.iter().map(|b| b.id).collect();
        let mut blobs = data;
        blobs.push(blob(&repo, 1000, BlobKind::Tree, 500));
        let packs = pack(&repo, blobs);

        let mut pack_of = std::collections::HashMap::new();
        for (n, p) in packs.iter().enumerate() {
            let kinds: HashSet<BlobKind> = p.blobs.iter().map(|e| e.kind).collect();
            assert_eq!(kinds.len(), 1, "a pack holds one kind of blob");
            for e in &p.blobs {
                assert!(pack_of.insert(e.id, n).is_none(), "blob packed twice");
            }
        }
        assert_eq!(pack_of.len(), 401, "every blob is packed once");
        // Filled one pack after another, 400 blobs would change pack about 8 times; assigned at
        // random between two open packs, about 200 times (fewer than 60 has odds below 1e-40).
        let switches = order.windows(2).filter(|w| pack_of[&w[0]] != pack_of[&w[1]]).count();
        assert!(switches > 60, "only {switches} pack changes along the blob order");

        for p in packs {
            let (id, blobs) = (p.id, p.blobs);
            let bytes = p.body.into_bytes().unwrap();
            assert_eq!(blake3::hash(&bytes).as_bytes(), &id.0);
            assert_eq!(crate::format::pack::decode_header(repo.key(), &bytes).unwrap(), blobs);
        }
    }

    #[test]
    fn two_small_open_packs_are_stored_as_one() {
        let dir = tempfile::tempdir().unwrap();
        let repo = local_repo(dir.path(), 16 << 20);
        let blobs = (0..6).map(|i| blob(&repo, i, BlobKind::Data, 100_000)).collect();
        let packs = pack(&repo, blobs);
        assert_eq!(packs.len(), 1);
        assert_eq!(packs[0].blobs.len(), 6);
        let bytes = packs.into_iter().next().unwrap().body.into_bytes().unwrap();
        assert_eq!(crate::format::pack::decode_header(repo.key(), &bytes).unwrap().len(), 6);
    }
}
