//! The passes of a restore over the snapshot's trees (through the repository's tree
//! walker): create each selected entry and plan its contents, link later names of hard
//! links, apply metadata, and re-read for `--verify`.

use super::contents::{chunk_offsets, differs, ContentPlan};
use super::{Overwrite, RestoreSummary, Selection};
use crate::error::{Error, Result};
use crate::format::tree::{Node, NodeKind};
use crate::fs::at::{self, ino, DirTree, Ino};
use crate::ids::TreeId;
use crate::repo::index::Index;
use crate::repo::walk::Order;
use crate::repo::Repository;
use rustix::fs::FileType;
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What a restore does with what is already in the target.
#[derive(Clone, Copy, Debug)]
pub(super) struct How {
    pub(super) mode: Overwrite,
    pub(super) delete: bool,
    pub(super) list: bool,
    /// A dry run: the target (if it exists) is only inspected.
    pub(super) dry: bool,
    /// `--verify`: `if-changed` also reads a file whose size and mtime match, and keeps it
    /// only if every chunk matches.
    pub(super) verify: bool,
}

/// What the first pass does with one non-directory entry.
enum Decision {
    /// Create it (replacing what is there).
    Write,
    /// Leave what is there; `Some`: an unchanged file of ours to give its metadata.
    Skip(Option<Ino>),
}

/// State shared by the walks over the snapshot's trees.
pub(super) struct Walk<'a> {
    pub(super) repo: &'a Repository,
    pub(super) index: &'a Index,
    sel: Selection,
    how: How,
    /// The target's path (for messages) and its descriptors (for everything else); no
    /// descriptors in a dry run without a target, and only inspected in a dry run.
    pub(super) target: PathBuf,
    dirs: Option<DirTree>,
    /// Existing entries left as they were and not ours (`--overwrite never`): no metadata,
    /// no verify, no warning for them.
    skipped: Mutex<HashSet<PathBuf>>,
    /// Files kept by `if-changed` after their content was checked (`--verify` reads them
    /// only once).
    pub(super) checked: Mutex<HashSet<Ino>>,
    is_root: bool,
    /// Every inode this restore made: contents and metadata go only to these.
    pub(super) inodes: Mutex<HashSet<Ino>>,
    /// Files that got their metadata when their last chunk was written; kept only when the
    /// target may have had files (`--overwrite` other than `always`), for the metadata pass
    /// to tell them from files replaced meanwhile. Into a new or empty target the metadata
    /// pass knows them without a look: see [`Walk::done_by_contents`].
    pub(super) finished: Mutex<HashSet<Ino>>,
    /// Ownership could not be restored (not root).
    pub(super) owner_skipped: std::sync::atomic::AtomicBool,
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
        (sel, how): (Selection, How),
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
            how,
            target,
            dirs,
            skipped: Mutex::default(),
            checked: Mutex::default(),
            is_root: rustix::process::geteuid().is_root(),
            inodes: Mutex::default(),
            finished: Mutex::default(),
            owner_skipped: Default::default(),
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
        self.live().expect("a dry run creates nothing")
    }

    /// The target's directories to write to: none in a dry run.
    fn live(&self) -> Option<&DirTree> {
        self.dirs.as_ref().filter(|_| !self.how.dry)
    }

    /// With `--verbose`: one line of the list of changes.
    fn note(&self, what: &str, rel: &Path) {
        if self.how.list {
            let line = format!("{what} {}", self.target.join(rel).display());
            self.sum.lock().expect("lock").changes.push(line);
        }
    }

    /// Whether `--delete` keeps the entry at `snap_path`: the selection would not restore it.
    fn kept(&self, snap_path: &Path) -> bool {
        self.sel.excluded(snap_path) || !self.sel.included(snap_path)
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
            if let Some(dirs) = self.live() {
                self.make_dir(dirs, a)?;
            }
            if self.created.lock().expect("lock").insert(a.to_path_buf()) {
                self.sum.lock().expect("lock").dirs += 1;
            }
        }
        Ok(())
    }

    /// Make the directory `a` (its parent exists) and own it; an existing directory is
    /// owned too (it gets the snapshot's metadata), except with `--overwrite never`. A
    /// non-directory in the way is unlinked (never followed) unless that mode says keep it.
    fn make_dir(&self, dirs: &DirTree, a: &Path) -> Result<()> {
        let path = self.target.join(a);
        let not_dir = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotADirectory;
        let made = match dirs.mkdir(a) {
            Err(e) if not_dir(&e) && self.how.mode != Overwrite::Never => {
                let (dir, name) = dirs.parent(a).map_err(|e| Error::io(&path, e))?;
                at::remove_non_dir(dir.as_fd(), name);
                self.note("replace", a);
                dirs.mkdir(a)
            }
            r => r,
        };
        let made = match made {
            Ok(m) => m,
            Err(e) if not_dir(&e) => {
                return Err(Error::UnsafePath(format!(
                    "{} exists and is not a directory",
                    path.display()
                )))
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        if !made && self.how.mode == Overwrite::Never {
            self.skipped.lock().expect("lock").insert(a.to_path_buf());
            return Ok(());
        }
        let fd = dirs.dir(a).map_err(|e| Error::io(&path, e))?;
        self.own(ino(fd.as_fd()).map_err(|e| Error::io(&path, e))?);
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
        let decision = self.decide(e)?;
        let mut sum = self.sum.lock().expect("lock");
        match n.kind {
            NodeKind::File => sum.files += 1,
            NodeKind::Symlink => sum.symlinks += 1,
            _ => sum.specials += 1,
        }
        drop(sum);
        if let Decision::Skip(own) = decision {
            match own {
                Some(key) => self.own(key),
                None => drop(self.skipped.lock().expect("lock").insert(e.rel.clone())),
            }
            self.sum.lock().expect("lock").skipped += 1;
            self.note("skip", &e.rel);
            return Ok(());
        }
        let key = match self.live() {
            Some(dirs) => self.make(dirs, e)?,
            None => Ino::default(),
        };
        if n.kind == NodeKind::File {
            self.plan_file(e, key)?;
            self.sum.lock().expect("lock").written += 1;
        }
        self.note("write", &e.rel);
        Ok(())
    }

    /// What to do with the non-directory entry `e` given what the target has there: nothing
    /// (write it), anything with `--overwrite never` (skip), a directory (removed first with
    /// `--delete`, else an error), with `if-changed` a regular file of one link whose size
    /// and mtime match the snapshot (skip, and give it the snapshot's metadata); with
    /// `--verify` only if every chunk matches too.
    ///
    /// Size and mtime are enough after an interrupted restore: a file gets its mtime only
    /// once its last chunk is written. They are what rsync's and restic's quick checks
    /// compare; reading every kept file would cost a resumed restore as much reading as a
    /// full one writes (`benches/restore-resume.sh`).
    /// Hard-linked files are always rewritten: their other names may lead outside the target.
    /// As root, so is a file not yet owned by the snapshot's owner and group: whoever owns it
    /// now may hold it open for writing, which a fresh file would not allow.
    fn decide(&self, e: &Entry) -> Result<Decision> {
        let Some(dirs) = &self.dirs else {
            return Ok(Decision::Write);
        };
        let path = self.target.join(&e.rel);
        let io = |err| Error::io(&path, err);
        let (dir, name) = match dirs.parent(&e.rel) {
            Ok(d) => d,
            // A dry run made no directories: the parent's absence means the entry's too.
            Err(_) if self.how.dry => return Ok(Decision::Write),
            Err(err) => return Err(io(err)),
        };
        let Some(st) = at::stat_at(dir.as_fd(), name).map_err(io)? else {
            return Ok(Decision::Write);
        };
        if self.how.mode == Overwrite::Never {
            return Ok(Decision::Skip(None));
        }
        let ft = FileType::from_raw_mode(st.st_mode);
        if ft == FileType::Directory {
            if !self.how.delete {
                return Err(Error::Usage(format!(
                    "{} is a directory where the snapshot has a {}: pass --delete to replace it, or move it away",
                    path.display(),
                    kind_name(e.node.kind)
                )));
            }
            let keep = |p: &Path| self.kept(p);
            let (n, gone) = at::remove_tree(dir.as_fd(), name, &e.snap, &keep, self.how.dry).map_err(io)?;
            dirs.forget(&e.rel);
            self.sum.lock().expect("lock").deleted += n;
            self.note("delete", &e.rel);
            if !gone {
                return Err(Error::Usage(format!(
                    "{} is a directory where the snapshot has a {}, and it holds entries the selection excludes (kept): move them away",
                    path.display(),
                    kind_name(e.node.kind)
                )));
            }
            return Ok(Decision::Write);
        }
        let n = e.node;
        let same_stat = self.how.mode == Overwrite::IfChanged
            && n.kind == NodeKind::File
            && ft == FileType::RegularFile
            && st.st_nlink == 1
            && (!self.is_root || (st.st_uid, st.st_gid) == (n.uid, n.gid))
            && st.st_size as u64 == n.size
            && (st.st_mtime, st.st_mtime_nsec as u32) == (n.mtime.sec, n.mtime.nsec);
        if !same_stat {
            return Ok(Decision::Write);
        }
        let key = (st.st_dev, st.st_ino);
        if !self.how.verify {
            return Ok(Decision::Skip(Some(key)));
        }
        // Read through a descriptor of that very inode (a swap in between fails the check).
        let Ok(f) = at::open_created(dir.as_fd(), name, key, false) else {
            return Ok(Decision::Write);
        };
        match differs(self.repo, self.index, &f, n) {
            Ok(None) => {
                self.checked.lock().expect("lock").insert(key);
                Ok(Decision::Skip(Some(key)))
            }
            // Different, or unreadable: written anew.
            Ok(Some(_)) | Err(_) => Ok(Decision::Write),
        }
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
                if n.content.is_empty() {
                    // Complete already (empty, or all hole): its times say so at once.
                    at::set_times(f.as_fd(), n.atime, n.mtime).map_err(io)?;
                }
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
        plan.done.push((at::FileMeta::of(e.node), offsets.len() as u32));
        for (id, off) in offsets {
            let loc = self.index.get(&id).expect("checked by chunk_offsets");
            plan.by_pack
                .entry(self.index.pack_id(&loc))
                .or_default()
                .push((id, file, off));
        }
        Ok(())
    }

    /// Whether the first pass restored this entry (or, `--overwrite if-changed`, found it
    /// restored already).
    pub(super) fn restored(&self, e: &Entry) -> bool {
        if self.skipped.lock().expect("lock").contains(&e.rel) {
            return false;
        }
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
            if self.how.mode == Overwrite::Never && at::stat_at(to.as_fd(), to_name).map_err(io)?.is_some() {
                self.sum.lock().expect("lock").skipped += 1;
                self.note("skip", later);
                continue;
            }
            at::remove_non_dir(to.as_fd(), to_name);
            rustix::fs::linkat(&from, from_name, &to, to_name, rustix::fs::AtFlags::empty())
                .map_err(|e| io(e.into()))?;
            self.sum.lock().expect("lock").hardlinks += 1;
        }
        Ok(())
    }

    /// What the restore does with what the target has.
    pub(super) fn how_mode(&self) -> Overwrite {
        self.how.mode
    }

    pub(super) fn is_root(&self) -> bool {
        self.is_root
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

impl Walk<'_> {
    /// `--delete`: remove from each restored directory that exists in the target the entries
    /// the snapshot does not have there, unless the selection would not restore them
    /// ([`Walk::kept`]), through directory descriptors that never follow a symlink
    /// ([`at::remove_tree`]). In a dry run, only count them.
    pub(super) fn delete_extras(&self) -> Result<()> {
        let Some(dirs) = &self.dirs else { return Ok(()) };
        if matches!(&self.single, Some(n) if !n.is_dir()) {
            return Ok(());
        }
        self.prune_dir(dirs, Path::new(""), &self.base, &self.tree)?;
        self.walk(&self.tree, &self.base, &|e| match e.node.subtree {
            Some(tree) => self.prune_dir(dirs, &e.rel, &e.snap, &tree),
            None => Ok(()),
        })
    }

    /// Remove the extras of the target's directory `rel` (`snap` in the snapshot, `tree`).
    fn prune_dir(&self, dirs: &DirTree, rel: &Path, snap: &Path, tree: &TreeId) -> Result<()> {
        let path = self.target.join(rel);
        let io = |err| Error::io(&path, err);
        let fd = match dirs.dir(rel) {
            Ok(fd) => fd,
            // Not there, or not a directory (the first pass replaces it or says why not).
            Err(err)
                if matches!(
                    rustix::io::Errno::from_io_error(&err),
                    Some(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP)
                ) =>
            {
                return Ok(())
            }
            Err(err) => return Err(io(err)),
        };
        let t = self.repo.load_tree(self.index, tree)?;
        let have: HashSet<&[u8]> = t.nodes.iter().map(|n| n.name.as_slice()).collect();
        let keep = |p: &Path| self.kept(p);
        for name in at::names(fd.as_fd()).map_err(io)? {
            if have.contains(name.as_bytes()) {
                continue;
            }
            let (n, _) = at::remove_tree(fd.as_fd(), &name, &snap.join(&name), &keep, self.how.dry)
                .map_err(|err| Error::io(path.join(&name), err))?;
            if n > 0 {
                self.sum.lock().expect("lock").deleted += n;
                self.note("delete", &rel.join(&name));
            }
        }
        Ok(())
    }
}

fn kind_name(k: NodeKind) -> &'static str {
    match k {
        NodeKind::File => "file",
        NodeKind::Dir => "directory",
        NodeKind::Symlink => "symlink",
        _ => "special file",
    }
}
