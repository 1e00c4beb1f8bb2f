//! The passes of a restore over the snapshot's trees (through the repository's tree
//! walker): create each selected entry and plan its contents, link later names of hard
//! links, apply metadata, and re-read for `--verify`.

use super::contents::{chunk_offsets, ContentPlan};
use super::{RestoreSummary, Selection};
use crate::error::{Error, Result};
use crate::format::tree::{Node, NodeKind};
use crate::fs::at::{self, ino, DirTree, Ino};
use crate::ids::TreeId;
use crate::repo::index::Index;
use crate::repo::walk::Order;
use crate::repo::Repository;
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// State shared by the walks over the snapshot's trees.
pub(super) struct Walk<'a> {
    pub(super) repo: &'a Repository,
    pub(super) index: &'a Index,
    sel: Selection,
    /// The target's path (for messages) and its descriptors (for everything else); no
    /// descriptors in a dry run, which creates nothing.
    pub(super) target: PathBuf,
    dirs: Option<DirTree>,
    /// Every inode this restore made: contents and metadata go only to these.
    pub(super) inodes: Mutex<HashSet<Ino>>,
    /// Directories created (relative to the target); with includes, only those on the way.
    created: Mutex<HashSet<PathBuf>>,
    /// (device, inode) of multiply-linked files → the name created first.
    first_link: Mutex<HashMap<(u64, u64), PathBuf>>,
    /// Later names of multiply-linked files, linked once every first name exists.
    pub(super) links: Mutex<Vec<(PathBuf, PathBuf)>>,
    /// Files whose data was damaged, set aside under a `.pbak-partial` name.
    pub(super) failed: Mutex<HashSet<PathBuf>>,
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
    pub(super) rel: PathBuf,
    snap: PathBuf,
    pub(super) node: &'n Node,
}

impl<'a> Walk<'a> {
    /// `target` `None`: a dry run, which plans and counts but creates nothing.
    pub(super) fn new(
        repo: &'a Repository,
        index: &'a Index,
        sel: Selection,
        target: Option<PathBuf>,
        tree: TreeId,
        single: Option<Node>,
        base: PathBuf,
    ) -> Result<Walk<'a>> {
        let dirs = match &target {
            None => None,
            Some(t) => Some(DirTree::open(t).map_err(|e| Error::io(t, e))?),
        };
        let target = target.unwrap_or_default();
        Ok(Walk {
            repo,
            index,
            sel,
            target,
            dirs,
            inodes: Mutex::default(),
            created: Mutex::new(HashSet::new()),
            first_link: Mutex::default(),
            links: Mutex::default(),
            failed: Mutex::default(),
            plan: Mutex::default(),
            sum: Mutex::default(),
            tree,
            single,
            base,
        })
    }
}

impl Walk<'_> {
    /// The target's directories (not in a dry run, which creates nothing).
    pub(super) fn dirs(&self) -> &DirTree {
        self.dirs.as_ref().expect("a dry run creates nothing")
    }

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

    /// Create `rel` (a directory) and every missing directory above it. A directory is marked
    /// created only once it exists, so a concurrent caller that finds it marked can use it.
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
            if let Some(dirs) = &self.dirs {
                self.make_dir(dirs, a)?;
            }
            if self.created.lock().expect("lock").insert(a.to_path_buf()) {
                self.sum.lock().expect("lock").dirs += 1;
            }
        }
        Ok(())
    }

    /// Make the directory `a` (its parent exists) and own it.
    fn make_dir(&self, dirs: &DirTree, a: &Path) -> Result<()> {
        match dirs.mkdir(a) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
                return Err(Error::UnsafePath(format!(
                    "{} exists and is not a directory",
                    self.target.join(a).display()
                )))
            }
            Err(e) => return Err(Error::io(self.target.join(a), e)),
        }
        let fd = dirs.dir(a).map_err(|e| Error::io(self.target.join(a), e))?;
        self.own(ino(fd.as_fd()).map_err(|e| Error::io(self.target.join(a), e))?);
        Ok(())
    }

    /// Record an inode this restore made (only those get contents and metadata later).
    fn own(&self, key: Ino) {
        self.inodes.lock().expect("lock").insert(key);
    }

    /// First pass: create each selected entry and plan its contents (in a dry run, only
    /// plan and count).
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
        if n.kind == NodeKind::Socket {
            self.warn(format!("{}: sockets are not restored", e.rel.display()));
            return Ok(());
        }
        if n.kind == NodeKind::File && n.nlink > 1 && self.later_name(e) {
            return Ok(());
        }
        let key = match &self.dirs {
            Some(dirs) => self.make(dirs, e)?,
            None => Ino::default(),
        };
        match n.kind {
            NodeKind::File => {
                self.plan_file(e, key)?;
                self.sum.lock().expect("lock").files += 1;
            }
            NodeKind::Symlink => self.sum.lock().expect("lock").symlinks += 1,
            _ => self.sum.lock().expect("lock").specials += 1,
        }
        Ok(())
    }

    /// Whether `e` is a later name of a multiply-linked file whose first name was seen (it
    /// is linked once every first name exists); else `e` becomes the first name.
    fn later_name(&self, e: &Entry) -> bool {
        let n = e.node;
        let mut first = self.first_link.lock().expect("lock");
        match first.get(&(n.device, n.inode)) {
            Some(f) => {
                self.links.lock().expect("lock").push((f.clone(), e.rel.clone()));
                true
            }
            None => {
                first.insert((n.device, n.inode), e.rel.clone());
                false
            }
        }
    }

    /// Create the file, symlink or special file `e` and own it.
    fn make(&self, dirs: &DirTree, e: &Entry) -> Result<Ino> {
        let (n, path) = (e.node, self.target.join(&e.rel));
        let io = |err| Error::io(&path, err);
        let (dir, name) = dirs.parent(&e.rel).map_err(io)?;
        let dir = dir.as_fd();
        let key = match n.kind {
            NodeKind::File => {
                let f = at::create_file(dir, name).map_err(io)?;
                f.set_len(n.size).map_err(io)?;
                ino(f.as_fd()).map_err(io)?
            }
            NodeKind::Symlink => {
                at::symlink_at(dir, name, n).map_err(io)?;
                ino(at::open_path(dir, name).map_err(io)?.as_fd()).map_err(io)?
            }
            _ => {
                at::make_special_at(dir, name, n).map_err(io)?;
                ino(at::open_path(dir, name).map_err(io)?.as_fd()).map_err(io)?
            }
        };
        self.own(key);
        Ok(key)
    }

    /// Add the chunks of file `e`, created as inode `key`, to the content plan.
    fn plan_file(&self, e: &Entry, key: Ino) -> Result<()> {
        let offsets = chunk_offsets(self.index, e.node)?;
        let mut plan = self.plan.lock().expect("lock");
        let file = plan.files.len() as u32;
        plan.files.push((e.rel.clone().into_boxed_path(), key));
        for (id, off) in offsets {
            let loc = self.index.get(&id).expect("checked by chunk_offsets");
            plan.by_pack
                .entry(self.index.pack_id(&loc))
                .or_default()
                .push((id, file, off));
        }
        Ok(())
    }

    /// Whether the first pass restored this entry.
    pub(super) fn restored(&self, e: &Entry) -> bool {
        if e.node.is_dir() {
            self.created.lock().expect("lock").contains(&e.rel)
        } else {
            e.node.kind != NodeKind::Socket
                && self.sel.included(&e.snap)
                && !self.failed.lock().expect("lock").contains(&e.rel)
        }
    }

    /// The path inside the snapshot of `rel` (relative to the target).
    pub(super) fn snap_path(&self, rel: &Path) -> PathBuf {
        match &self.single {
            Some(node) if !node.is_dir() => self.base.clone(),
            _ => self.base.join(rel),
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

    /// Link every later name of a multiply-linked file to its first name (`linkat` between
    /// directory descriptors, never following a symlink at the first name).
    pub(super) fn link_later_names(&self) -> Result<()> {
        for (first, later) in self.links.lock().expect("lock").iter() {
            let path = self.target.join(later);
            let io = |e| Error::io(&path, e);
            let (from, from_name) = self.dirs().parent(first).map_err(io)?;
            let (to, to_name) = self.dirs().parent(later).map_err(io)?;
            at::remove_non_dir(to.as_fd(), to_name);
            rustix::fs::linkat(&from, from_name, &to, to_name, rustix::fs::AtFlags::empty())
                .map_err(|e| io(e.into()))?;
            self.sum.lock().expect("lock").hardlinks += 1;
        }
        Ok(())
    }

    pub(super) fn warn(&self, w: String) {
        self.sum.lock().expect("lock").warnings.push(w);
    }

    /// An entry whose metadata could not all be applied (a warning, counted).
    pub(super) fn metadata_failed(&self, w: String) {
        let mut sum = self.sum.lock().expect("lock");
        sum.metadata_failed += 1;
        sum.warnings.push(w);
    }

    pub(super) fn take_plan(&self) -> ContentPlan {
        std::mem::take(&mut *self.plan.lock().expect("lock"))
    }

    pub(super) fn take_summary(&self) -> RestoreSummary {
        std::mem::take(&mut *self.sum.lock().expect("lock"))
    }
}
