//! Backup: walk sources in parallel, reuse unchanged files' chunk lists from the parent
//! snapshot, chunk/hash/compress/seal changed files on all cores, pack and upload while
//! the walk goes on, then write the index and finally the snapshot.
//!
//! Memory is bounded by the queues: at most `BLOB_QUEUE` sealed blobs wait for the packer,
//! a finished pack is handed straight to one of `connections` uploaders (so at most that many
//! packs plus the two being filled are in memory), and large files are read in segments.
//! Index files are written every `INDEX_EVERY` packs, so an interrupted backup's stored
//! packs are known to the next run and not uploaded again.

use super::change_filter::ChangeFilter;
use super::fsnode::{data_extents, node_from_metadata, open_noatime};
use super::index::{Index, IndexFile, IndexPack};
use super::pack::{pack_path, BlobKind, FinishedPack, PackBuilder, SealedBlob};
use super::snapshot::{BtrfsOrigin, ChangeDetection, Snapshot, Summary};
use super::tree::{Node, NodeKind, Time, Tree};
use super::Repository;
use crate::error::{Error, Result};
use crate::ids::{BlobId, SnapshotId};
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
/// (4 per core) cost memory without adding speed.
struct Compressors {
    level: i32,
    max: usize,
    state: Mutex<(Vec<zstd::bulk::Compressor<'static>>, usize)>,
    freed: std::sync::Condvar,
}

impl Compressors {
    fn new(level: i32) -> Compressors {
        Compressors {
            level,
            max: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            state: Mutex::new((Vec::new(), 0)),
            freed: std::sync::Condvar::new(),
        }
    }

    /// Compressed `data`, or `None` if zstd fails.
    fn compress(&self, data: &[u8]) -> Option<Vec<u8>> {
        let mut c = {
            let mut st = self.state.lock().expect("lock");
            loop {
                if let Some(c) = st.0.pop() {
                    break c;
                }
                if st.1 < self.max {
                    st.1 += 1;
                    drop(st);
                    match zstd::bulk::Compressor::new(self.level) {
                        Ok(c) => break c,
                        Err(_) => {
                            self.state.lock().expect("lock").1 -= 1;
                            return None;
                        }
                    }
                }
                st = self.freed.wait(st).expect("lock");
            }
        };
        let out = c.compress(data).ok();
        self.state.lock().expect("lock").0.push(c);
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
        let key = repo.key();
        let pack_size = repo.config().pack_size as usize;
        s.spawn(move || run_packer(rx, key, pack_size, up_tx));
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
        let r = super::with_io_pool(|| match &trie {
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
    let (host, user) = (opts.host.clone(), super::host_user().1);
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

fn run_packer(rx: Receiver<SealedBlob>, key: &super::crypto::MasterKey, pack_size: usize, up: Sender<FinishedPack>) {
    let mut data = PackBuilder::default();
    let mut tree = PackBuilder::default();
    for b in rx {
        let builder = if b.kind == BlobKind::Tree { &mut tree } else { &mut data };
        builder.add(b);
        if builder.size() >= pack_size && up.send(builder.finish(key)).is_err() {
            return;
        }
    }
    for b in [&mut data, &mut tree] {
        if !b.is_empty() && up.send(b.finish(key)).is_err() {
            return;
        }
    }
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
                self.repo.backend().put_parts(&pack_path(&p.id), p.parts)
            };
            let r = r.map_err(Error::from).and_then(|()| {
                self.done.lock().expect("lock").push(IndexPack {
                    id: p.id,
                    blobs: p.blobs,
                });
                self.flush_index(false)
            });
            if let Err(e) = r {
                self.abort.store(true, Relaxed);
                self.error.lock().expect("lock").get_or_insert(e);
            }
        }
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
        let (payload, compressed) = match self.compressors.compress(data) {
            Some(c) if c.len() < data.len() => (c, true),
            _ => (data.to_vec(), false),
        };
        let sealed = self.repo.key().seal(&payload);
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

    fn save_chunks(&self, chunks: &[&[u8]]) -> Result<Vec<BlobId>> {
        let ids = chunks
            .par_iter()
            .map(|c| self.save_blob(BlobKind::Data, c))
            .collect::<Result<Vec<_>>>()?;
        let n: u64 = chunks.iter().map(|c| c.len() as u64).sum();
        self.stats.bytes_read.fetch_add(n, Relaxed);
        self.progress.bytes_done.fetch_add(n, Relaxed);
        Ok(ids)
    }

    fn save_tree(&self, nodes: Vec<Node>) -> Result<BlobId> {
        self.save_blob(BlobKind::Tree, &Tree::new(nodes).encode())
    }

    fn check_abort(&self) -> Result<()> {
        if self.abort.load(Relaxed) {
            return Err(Error::Usage("backup aborted after an upload failure".into()));
        }
        Ok(())
    }

    fn archive_trie(&self, map: &BTreeMap<Vec<u8>, Trie>, rec_dir: &Path, parent: Option<&Tree>) -> Result<BlobId> {
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

    fn archive_dir(&self, read: &Path, rec: &Path, parent: Option<&Tree>, root_dev: u64) -> Result<BlobId> {
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
        out: &mut Vec<BlobId>,
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
