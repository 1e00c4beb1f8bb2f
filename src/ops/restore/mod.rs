//! Restore: plan every entry from the snapshot's trees, create the structure under the
//! target, fill file contents pack by pack (each needed pack range is read once), then apply
//! metadata, directories last and deepest first so their times stick.
//!
//! Safety: entry names were validated when their tree was decoded (no `/`, `.`, `..`), all
//! directories on the way are created by us, and files are opened with O_NOFOLLOW, so
//! nothing in a repository can make a restore write outside the target.

use crate::error::{Error, Result};
use crate::format::pack::BlobEntry;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind};
use crate::fs::node::{apply_metadata, make_special};
use crate::ids::{AnyBlobId, DataId, PackId, TreeId};
use crate::repo::index::Index;
use crate::repo::pack_reader::Cover;
use crate::repo::walk::Order;
use crate::repo::Repository;
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    pub target: PathBuf,
    /// Path inside the snapshot to restore (empty: everything).
    pub subpath: String,
    pub includes: Vec<String>,
    pub excludes: Vec<String>,
    pub verify: bool,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RestoreSummary {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub specials: u64,
    pub hardlinks: u64,
    pub bytes: u64,
    pub verified_files: u64,
    pub warnings: Vec<String>,
}

/// Whether an entry at `snap_path` (inside the snapshot) is restored. Excluding a directory
/// excludes everything below it; with includes, directories are created only on the way to
/// something included.
struct Selection {
    includes: Vec<glob::Pattern>,
    excludes: Vec<glob::Pattern>,
}

impl Selection {
    fn excluded(&self, snap_path: &Path) -> bool {
        matches_any(&self.excludes, snap_path)
    }
    fn included(&self, snap_path: &Path) -> bool {
        self.includes.is_empty() || matches_any(&self.includes, snap_path)
    }
}

fn patterns(p: &[String]) -> Result<Vec<glob::Pattern>> {
    p.iter()
        .map(|s| glob::Pattern::new(s).map_err(|e| Error::Usage(format!("bad pattern {s:?}: {e}"))))
        .collect()
}

fn matches_any(pats: &[glob::Pattern], path: &Path) -> bool {
    pats.iter().any(|p| {
        if p.as_str().contains('/') {
            path.ancestors().any(|a| p.matches_path(a))
        } else {
            path.iter().any(|c| p.matches(&c.to_string_lossy()))
        }
    })
}

/// Where restored data goes: files by number, and per pack the blobs to write.
#[derive(Default)]
struct ContentPlan {
    files: Vec<Box<Path>>,
    /// pack → (blob, file number, offset in the file)
    by_pack: HashMap<PackId, Vec<(DataId, u32, u64)>>,
}

/// State shared by the walks over the snapshot's trees.
struct Walk<'a> {
    repo: &'a Repository,
    index: &'a Index,
    sel: Selection,
    target: PathBuf,
    /// Directories created (relative to the target); with includes, only those on the way.
    created: Mutex<HashSet<PathBuf>>,
    /// (device, inode) of multiply-linked files → the name created first.
    first_link: Mutex<HashMap<(u64, u64), PathBuf>>,
    /// Later names of multiply-linked files, linked once every first name exists.
    links: Mutex<Vec<(PathBuf, PathBuf)>>,
    plan: Mutex<ContentPlan>,
    sum: Mutex<RestoreSummary>,
}

/// One entry seen by a walk: its path relative to the target and inside the snapshot.
struct Entry<'n> {
    rel: PathBuf,
    snap: PathBuf,
    node: &'n Node,
}

impl Walk<'_> {
    /// Visit every selected entry below `tree` (parents before children; siblings' subtrees
    /// in parallel); `snap` is the path of `tree` inside the snapshot.
    fn walk(&self, tree: &TreeId, snap: &Path, f: &(dyn Fn(&Entry) -> Result<()> + Sync)) -> Result<()> {
        self.repo
            .walk_paths(self.index, tree, snap, Order::Parallel, &|path, node| {
                if self.sel.excluded(path) {
                    return Ok(false);
                }
                let rel = path.strip_prefix(snap).expect("below the walk's root");
                f(&Entry {
                    rel: rel.to_path_buf(),
                    snap: path.to_path_buf(),
                    node,
                })?;
                Ok(true)
            })
    }

    /// Create `rel` (a directory) and every missing directory above it, once each.
    fn ensure_dirs(&self, rel: &Path) -> Result<()> {
        let mut missing: Vec<&Path> = Vec::new();
        {
            let created = self.created.lock().expect("lock");
            for a in rel.ancestors().filter(|a| !a.as_os_str().is_empty()) {
                if created.contains(a) {
                    break;
                }
                missing.push(a);
            }
        }
        for a in missing.into_iter().rev() {
            if self.created.lock().expect("lock").insert(a.to_path_buf()) {
                ensure_dir(&self.target.join(a))?;
                self.sum.lock().expect("lock").dirs += 1;
            }
        }
        Ok(())
    }

    /// First pass: create each selected entry and plan its contents.
    fn create(&self, e: &Entry) -> Result<()> {
        let n = e.node;
        if n.is_dir() {
            // Without includes every directory is restored; with them, only on the way to a match.
            if self.sel.includes.is_empty() || self.sel.included(&e.snap) {
                self.ensure_dirs(&e.rel)?;
            }
            return Ok(());
        }
        if !self.sel.included(&e.snap) {
            return Ok(());
        }
        if let Some(parent) = e.rel.parent() {
            self.ensure_dirs(parent)?;
        }
        let path = self.target.join(&e.rel);
        let io = |err| Error::io(&path, err);
        match n.kind {
            NodeKind::File => {
                if n.nlink > 1 {
                    let mut first = self.first_link.lock().expect("lock");
                    match first.get(&(n.device, n.inode)) {
                        Some(f) => {
                            self.links.lock().expect("lock").push((f.clone(), e.rel.clone()));
                            return Ok(());
                        }
                        None => {
                            first.insert((n.device, n.inode), e.rel.clone());
                        }
                    }
                }
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                    .mode(0o600)
                    .open(&path)
                    .map_err(io)?;
                f.set_len(n.size).map_err(io)?;
                let offsets = chunk_offsets(self.index, n)?;
                let mut plan = self.plan.lock().expect("lock");
                let file = plan.files.len() as u32;
                plan.files.push(e.rel.clone().into_boxed_path());
                for (id, off) in offsets {
                    let loc = self.index.get(&id).expect("checked by chunk_offsets");
                    plan.by_pack
                        .entry(self.index.pack_id(&loc))
                        .or_default()
                        .push((id, file, off));
                }
                self.sum.lock().expect("lock").files += 1;
            }
            NodeKind::Symlink => {
                remove_existing(&path);
                std::os::unix::fs::symlink(OsStr::from_bytes(&n.link_target), &path).map_err(io)?;
                self.sum.lock().expect("lock").symlinks += 1;
            }
            NodeKind::Socket => self
                .sum
                .lock()
                .expect("lock")
                .warnings
                .push(format!("{}: sockets are not restored", e.rel.display())),
            _ => {
                remove_existing(&path);
                make_special(&path, n).map_err(io)?;
                self.sum.lock().expect("lock").specials += 1;
            }
        }
        Ok(())
    }

    /// Whether the first pass restored this entry.
    fn restored(&self, e: &Entry) -> bool {
        if e.node.is_dir() {
            self.created.lock().expect("lock").contains(&e.rel)
        } else {
            e.node.kind != NodeKind::Socket && self.sel.included(&e.snap)
        }
    }
}

/// Restore `snap` (or `opts.subpath` of it) into `opts.target`.
///
/// Memory holds no copy of the snapshot's trees: three walks over them (create and plan,
/// metadata, and with `verify` a re-read) keep only the content plan, a few bytes per file
/// and per chunk, and the directories for their metadata at the end.
pub fn restore(
    repo: &Repository,
    index: &Index,
    snap: &Snapshot,
    opts: &RestoreOptions,
    bytes_done: &AtomicU64,
) -> Result<RestoreSummary> {
    let sel = Selection {
        includes: patterns(&opts.includes)?,
        excludes: patterns(&opts.excludes)?,
    };
    let (tree_id, single) = repo.resolve_path(index, &snap.tree, &opts.subpath)?;
    let base = PathBuf::from("/").join(opts.subpath.trim_matches('/'));
    std::fs::create_dir_all(&opts.target).map_err(|e| Error::io(&opts.target, e))?;
    let target = opts.target.canonicalize().map_err(|e| Error::io(&opts.target, e))?;
    let w = Walk {
        repo,
        index,
        sel,
        target,
        created: Mutex::new(HashSet::new()),
        first_link: Mutex::default(),
        links: Mutex::default(),
        plan: Mutex::default(),
        sum: Mutex::default(),
    };
    // Visits every entry of the selection in one of the two shapes a restore can have.
    let for_each = |f: &(dyn Fn(&Entry) -> Result<()> + Sync)| -> Result<()> {
        match &single {
            Some(node) if !node.is_dir() => f(&Entry {
                rel: PathBuf::from(OsStr::from_bytes(&node.name)),
                snap: base.clone(),
                node,
            }),
            _ => w.walk(&tree_id, &base, f),
        }
    };

    for_each(&|e| w.create(e))?;
    for (first, later) in w.links.lock().expect("lock").iter() {
        let path = w.target.join(later);
        remove_existing(&path);
        std::fs::hard_link(w.target.join(first), &path).map_err(|e| Error::io(&path, e))?;
        w.sum.lock().expect("lock").hardlinks += 1;
    }
    let plan = std::mem::take(&mut *w.plan.lock().expect("lock"));
    write_contents(repo, index, &w.target, plan, bytes_done)?;

    // Metadata: files now, directories afterwards, deepest first, so their times stick.
    let is_root = rustix::process::geteuid().is_root();
    let skipped = AtomicBool::new(false);
    let dirs: Mutex<Vec<(PathBuf, Node)>> = Mutex::default();
    let apply = |rel: &Path, node: &Node| -> Result<()> {
        let path = w.target.join(rel);
        let r = apply_metadata(&path, node, is_root).map_err(|e| Error::io(&path, e))?;
        if r.owner_skipped {
            skipped.store(true, Relaxed);
        }
        Ok(())
    };
    for_each(&|e| {
        if !w.restored(e) {
            return Ok(());
        }
        if e.node.is_dir() {
            let mut node = e.node.clone();
            node.content = Vec::new();
            dirs.lock().expect("lock").push((e.rel.clone(), node));
            return Ok(());
        }
        apply(&e.rel, e.node)
    })?;
    let mut dirs = dirs.into_inner().expect("lock");
    dirs.sort_by_key(|(rel, _)| std::cmp::Reverse(rel.components().count()));
    for (rel, node) in &dirs {
        apply(rel, node)?;
    }

    let mut sum = std::mem::take(&mut *w.sum.lock().expect("lock"));
    if skipped.load(Relaxed) {
        sum.warnings.push("file ownership not restored: it needs root".into());
    }
    sum.bytes = bytes_done.load(Relaxed);
    if opts.verify {
        let n = AtomicU64::new(0);
        for_each(&|e| {
            if e.node.kind == NodeKind::File && w.restored(e) {
                verify_file(repo, index, &w.target.join(&e.rel), e.node)?;
                n.fetch_add(1, Relaxed);
            }
            Ok(())
        })?;
        sum.verified_files = n.into_inner();
    }
    Ok(sum)
}

fn ensure_dir(path: &Path) -> Result<()> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let md = std::fs::symlink_metadata(path).map_err(|e| Error::io(path, e))?;
            if md.is_dir() {
                Ok(())
            } else {
                Err(Error::UnsafePath(format!(
                    "{} exists and is not a directory",
                    path.display()
                )))
            }
        }
        Err(e) => Err(Error::io(path, e)),
    }
}

fn remove_existing(path: &Path) {
    if let Ok(md) = std::fs::symlink_metadata(path) {
        if !md.is_dir() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Where each chunk of a file goes: dense files back to back, sparse files into their extents.
fn chunk_offsets(index: &Index, n: &Node) -> Result<Vec<(DataId, u64)>> {
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
/// written to every place it goes.
fn write_contents(
    repo: &Repository,
    index: &Index,
    target: &Path,
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
                let fpath = target.join(&files[file as usize]);
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                    .open(&fpath)
                    .map_err(|e| Error::io(&fpath, e))?;
                f.write_all_at(data, off).map_err(|e| Error::io(&fpath, e))?;
                bytes_done.fetch_add(data.len() as u64, Relaxed);
            }
            Ok(())
        })
    })
}

/// Re-read a restored file and check its size and every chunk's id.
fn verify_file(repo: &Repository, index: &Index, path: &Path, node: &Node) -> Result<()> {
    let fail = |reason: String| Error::VerifyFailed {
        path: path.to_path_buf(),
        reason,
    };
    let f = crate::fs::node::open_noatime(path).map_err(|e| Error::io(path, e))?;
    let md = f.metadata().map_err(|e| Error::io(path, e))?;
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
