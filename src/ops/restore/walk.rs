//! The passes of a restore over the snapshot's trees (through the repository's tree
//! walker): create each selected entry and plan its contents, link later names of hard
//! links, apply metadata, and re-read for `--verify`.

use super::contents::{chunk_offsets, verify_file, ContentPlan};
use super::{RestoreSummary, Selection};
use crate::error::{Error, Result};
use crate::format::tree::{Node, NodeKind};
use crate::fs::node::{apply_metadata, make_special};
use crate::ids::TreeId;
use crate::repo::index::Index;
use crate::repo::walk::Order;
use crate::repo::Repository;
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// State shared by the walks over the snapshot's trees.
pub(super) struct Walk<'a> {
    repo: &'a Repository,
    index: &'a Index,
    sel: Selection,
    pub(super) target: PathBuf,
    /// Directories created (relative to the target); with includes, only those on the way.
    created: Mutex<HashSet<PathBuf>>,
    /// (device, inode) of multiply-linked files → the name created first.
    first_link: Mutex<HashMap<(u64, u64), PathBuf>>,
    /// Later names of multiply-linked files, linked once every first name exists.
    links: Mutex<Vec<(PathBuf, PathBuf)>>,
    plan: Mutex<ContentPlan>,
    sum: Mutex<RestoreSummary>,
    /// What the walks cover: the tree at the restored path, or the single non-directory
    /// node found there; `base` is that path inside the snapshot.
    tree: TreeId,
    single: Option<Node>,
    base: PathBuf,
}

/// One entry seen by a walk: its path relative to the target and inside the snapshot.
pub(super) struct Entry<'n> {
    rel: PathBuf,
    snap: PathBuf,
    node: &'n Node,
}

impl<'a> Walk<'a> {
    pub(super) fn new(
        repo: &'a Repository,
        index: &'a Index,
        sel: Selection,
        target: PathBuf,
        tree: TreeId,
        single: Option<Node>,
        base: PathBuf,
    ) -> Walk<'a> {
        Walk {
            repo,
            index,
            sel,
            target,
            created: Mutex::new(HashSet::new()),
            first_link: Mutex::default(),
            links: Mutex::default(),
            plan: Mutex::default(),
            sum: Mutex::default(),
            tree,
            single,
            base,
        }
    }
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
    pub(super) fn create(&self, e: &Entry) -> Result<()> {
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

    /// Visit every entry of the selection, in one of the two shapes a restore can have.
    pub(super) fn for_each(&self, f: &(dyn Fn(&Entry) -> Result<()> + Sync)) -> Result<()> {
        match &self.single {
            Some(node) if !node.is_dir() => f(&Entry {
                rel: PathBuf::from(OsStr::from_bytes(&node.name)),
                snap: self.base.clone(),
                node,
            }),
            _ => self.walk(&self.tree, &self.base, f),
        }
    }

    /// Link every later name of a multiply-linked file to its first name.
    pub(super) fn link_later_names(&self) -> Result<()> {
        for (first, later) in self.links.lock().expect("lock").iter() {
            let path = self.target.join(later);
            remove_existing(&path);
            std::fs::hard_link(self.target.join(first), &path).map_err(|e| Error::io(&path, e))?;
            self.sum.lock().expect("lock").hardlinks += 1;
        }
        Ok(())
    }

    pub(super) fn take_plan(&self) -> ContentPlan {
        std::mem::take(&mut *self.plan.lock().expect("lock"))
    }

    pub(super) fn take_summary(&self) -> RestoreSummary {
        std::mem::take(&mut *self.sum.lock().expect("lock"))
    }

    /// Metadata: files now, directories afterwards, deepest first, so their times stick.
    /// Returns whether ownership was skipped (not root).
    pub(super) fn apply_metadata(&self) -> Result<bool> {
        let is_root = rustix::process::geteuid().is_root();
        let skipped = AtomicBool::new(false);
        let dirs: Mutex<Vec<(PathBuf, Node)>> = Mutex::default();
        let apply = |rel: &Path, node: &Node| -> Result<()> {
            let path = self.target.join(rel);
            let r = apply_metadata(&path, node, is_root).map_err(|e| Error::io(&path, e))?;
            if r.owner_skipped {
                skipped.store(true, Relaxed);
            }
            Ok(())
        };
        self.for_each(&|e| {
            if !self.restored(e) {
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
        Ok(skipped.load(Relaxed))
    }

    /// Re-read every restored file; returns how many were checked.
    pub(super) fn verify(&self) -> Result<u64> {
        let n = AtomicU64::new(0);
        self.for_each(&|e| {
            if e.node.kind == NodeKind::File && self.restored(e) {
                verify_file(self.repo, self.index, &self.target.join(&e.rel), e.node)?;
                n.fetch_add(1, Relaxed);
            }
            Ok(())
        })?;
        Ok(n.into_inner())
    }
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
