//! The last passes of a restore: metadata (files first, then directories deepest first, so
//! their times stick) and the `--verify` re-read.
//!
//! A regular file the content pass writes gets its metadata there, through the descriptor
//! that wrote its last chunk ([`Walk::finish_file`]); into a new or empty target the
//! metadata pass then skips such files without opening them, and otherwise it knows them
//! by inode. The pass gives metadata to the rest: empty files, multiply-linked files,
//! symlinks, special files, files `if-changed` kept, and directories.
//!
//! Metadata goes only to inodes the first pass made ([`Walk::inodes`]), each once: an entry
//! that is no longer the one created (a user swapped it for a symlink, a hard link or another
//! file) is left alone with a warning, and a later name of a hard link is skipped because its
//! inode was already done. Files whose data was damaged are set aside first
//! ([`Walk::set_aside`]) and get no metadata.

use super::contents::{verify_file, Damaged};
use super::walk::{Entry, Walk};
use super::Overwrite;
use crate::error::{Error, Result};
use crate::format::tree::{Node, NodeKind};
use crate::fs::at::{self, ino, FileMeta};
use crate::fs::node::ApplyWarnings;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

impl Walk<'_> {
    /// Move each damaged file (and later names of its hard links) to `NAME.pbak-partial`,
    /// out of the metadata and verify passes, with a warning; returns how many.
    pub(super) fn set_aside(&self, damaged: &[Damaged]) -> Result<u64> {
        let mut names: Vec<(PathBuf, String)> = Vec::new();
        for (rel, key, why) in damaged {
            self.inodes.lock().expect("lock").remove(key);
            names.push((rel.to_path_buf(), why.clone()));
        }
        for (first, later) in self.links.lock().expect("lock").iter() {
            if damaged.iter().any(|(rel, _, _)| **rel == **first) {
                names.push((later.clone(), format!("a hard link to {}", first.display())));
            }
        }
        for (rel, why) in &names {
            let path = self.target.join(rel);
            let io = |e| Error::io(&path, e);
            let (dir, name) = self.dirs().parent(rel).map_err(io)?;
            let mut partial = name.to_os_string();
            partial.push(".pbak-partial");
            rustix::fs::renameat(&dir, name, &dir, &partial).map_err(|e| io(e.into()))?;
            self.warn(format!(
                "{}: data damaged, left as {}: {why}",
                path.display(),
                partial.to_string_lossy()
            ));
            self.failed.lock().expect("lock").insert(rel.clone());
        }
        Ok(names.len() as u64)
    }

    /// Take `key` out of the inodes still waiting for metadata; false when it is not ours or
    /// already done.
    fn claim(&self, key: at::Ino) -> bool {
        self.inodes.lock().expect("lock").remove(&key)
    }

    /// Give file `rel` (inode `key`, whose last chunk `fd` just wrote) its metadata, once:
    /// the content pass's [`Finish`](super::contents::Finish). Failures are warnings, as in
    /// the metadata pass.
    pub(super) fn finish_file(&self, rel: &Path, key: at::Ino, fd: BorrowedFd, meta: &FileMeta) {
        if !self.claim(key) {
            return;
        }
        if self.how_mode() != Overwrite::Always {
            self.finished.lock().expect("lock").insert(key);
        }
        let path = self.target.join(rel);
        match at::apply_meta_fd(fd, meta, self.is_root()) {
            Ok(w) => self.note_applied(&path, w),
            Err(e) => self.metadata_failed(format!("{}: metadata not applied: {e}", path.display())),
        }
    }

    /// Whether the content pass gave `e` its metadata already ([`Walk::finish_file`]), known
    /// without a look at the target: into a new or empty target (`--overwrite always`) every
    /// restored regular file of one name with contents was created and written, and its last
    /// chunk's write applied it (a damaged one is set aside: not restored).
    fn done_by_contents(&self, e: &Entry) -> bool {
        let n = e.node;
        self.how_mode() == Overwrite::Always && n.kind == NodeKind::File && n.nlink <= 1 && !n.content.is_empty()
    }

    fn note_applied(&self, path: &Path, w: ApplyWarnings) {
        if w.owner_skipped {
            self.owner_skipped.store(true, Relaxed);
        }
        if !w.failed.is_empty() {
            self.metadata_failed(format!("{}: {}", path.display(), w.failed.join("; ")));
        }
    }

    /// Apply `node`'s metadata to the entry `rel`; Ok(None) when it is not ours to change.
    fn apply_one(&self, rel: &Path, node: &Node, is_root: bool) -> std::io::Result<Option<ApplyWarnings>> {
        if node.is_dir() {
            let fd = self.dirs().dir(rel)?;
            if !self.claim(ino(fd.as_fd())?) {
                return Ok(None);
            }
            return Ok(Some(at::apply_fd(fd.as_fd(), node, is_root)?));
        }
        let (dir, name) = self.dirs().parent(rel)?;
        let pfd = at::open_path(dir.as_fd(), name)?;
        let key = ino(pfd.as_fd())?;
        if !self.claim(key) {
            // Done when its last chunk was written: nothing to say.
            let done = self.finished.lock().expect("lock").contains(&key);
            return Ok(done.then(ApplyWarnings::default));
        }
        let w = if node.kind == NodeKind::File {
            let f = at::open_created(dir.as_fd(), name, key, false)?;
            at::apply_fd(f.as_fd(), node, is_root)?
        } else {
            at::apply_path_fd(pfd.as_fd(), dir.as_fd(), name, node, is_root)?
        };
        Ok(Some(w))
    }

    /// Metadata: files now, directories afterwards, deepest first, so their times stick.
    /// Returns whether ownership was skipped (not root).
    pub(super) fn apply_metadata(&self) -> Result<bool> {
        let is_root = self.is_root();
        let dirs: Mutex<Vec<(PathBuf, Node)>> = Mutex::default();
        let apply = |rel: &Path, node: &Node| -> Result<()> {
            let path = self.target.join(rel);
            // One entry's failure is a warning: the other entries still get their metadata.
            match self.apply_one(rel, node, is_root) {
                Ok(Some(w)) => self.note_applied(&path, w),
                // A later name of a hard link, whose inode is done: nothing to say.
                Ok(None) if node.kind == NodeKind::File && node.nlink > 1 => {}
                Ok(None) => self.warn(format!("{}: replaced during the restore; left alone", path.display())),
                Err(e) => self.metadata_failed(format!("{}: metadata not applied: {e}", path.display())),
            }
            Ok(())
        };
        self.for_each(&|e: &Entry| {
            if !self.restored(e) || self.done_by_contents(e) {
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
        Ok(self.owner_skipped.load(Relaxed))
    }

    /// Re-read every restored file; returns how many were checked.
    pub(super) fn verify(&self) -> Result<u64> {
        let n = AtomicU64::new(0);
        self.for_each(&|e: &Entry| {
            if e.node.kind == NodeKind::File && self.restored(e) {
                let path = self.target.join(&e.rel);
                let io = |err| Error::io(&path, err);
                let (dir, name) = self.dirs().parent(&e.rel).map_err(io)?;
                let pfd = at::open_path(dir.as_fd(), name).map_err(io)?;
                let key = ino(pfd.as_fd()).map_err(io)?;
                // Kept by `if-changed` after the same check: read once.
                if !self.checked.lock().expect("lock").contains(&key) {
                    let f = at::open_created(dir.as_fd(), name, key, false).map_err(io)?;
                    verify_file(self.repo, self.index, &path, &f, e.node)?;
                }
                n.fetch_add(1, Relaxed);
            }
            Ok(())
        })?;
        Ok(n.into_inner())
    }
}
