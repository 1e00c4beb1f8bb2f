//! The walk over the sources: directories in parallel on the I/O pool, entries compared
//! with the parent snapshot's tree (or taken from it unread through the change filter),
//! trees stored bottom-up.

use super::change_filter::ChangeFilter;
use super::compress::Compressors;
use super::{BackupOptions, Progress, Source};
use crate::error::{Error, Result};
use crate::format::tree::{Node, NodeKind, Tree};
use crate::fs::node::node_from_metadata;
use crate::fs::source::SourceDir;
use crate::ids::{BlobId, TreeId};
use crate::repo::index::Index;
use crate::repo::pack_writer::BlobSink;
use crate::repo::Repository;
use rayon::prelude::*;
use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

#[derive(Default)]
pub(super) struct Stats {
    pub(super) files_new: AtomicU64,
    pub(super) files_changed: AtomicU64,
    pub(super) files_unmodified: AtomicU64,
    pub(super) dirs: AtomicU64,
    pub(super) total_files: AtomicU64,
    pub(super) total_bytes: AtomicU64,
    pub(super) bytes_read: AtomicU64,
    pub(super) blobs_added: AtomicU64,
    pub(super) bytes_added: AtomicU64,
    /// Parent-tree files, bytes and dirs that a change-filtered walk replaced or dropped;
    /// totals are then the parent's minus these plus what the walk counted.
    pub(super) removed_files: AtomicU64,
    pub(super) removed_bytes: AtomicU64,
    pub(super) removed_dirs: AtomicU64,
}

pub(super) enum Trie {
    Leaf(PathBuf),
    Inner(BTreeMap<Vec<u8>, Trie>),
}

pub(super) struct Ctx<'a> {
    pub(super) repo: &'a Repository,
    pub(super) compressors: Compressors,
    pub(super) index: &'a Index,
    pub(super) opts: &'a BackupOptions,
    pub(super) excludes: Vec<glob::Pattern>,
    pub(super) known: Mutex<HashSet<BlobId>>,
    pub(super) sink: &'a BlobSink<'a>,
    pub(super) stats: Stats,
    pub(super) warnings: Mutex<Vec<String>>,
    pub(super) progress: &'a Progress,
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

pub(super) fn build_trie(sources: &[Source]) -> Result<Trie> {
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

pub(super) fn dev_of(p: &Path) -> u64 {
    std::fs::symlink_metadata(p).map(|m| m.dev()).unwrap_or(0)
}

/// Count files and bytes for the progress bar's ETA; stops early when the walk is done.
pub(super) fn scan_totals(mut stack: Vec<PathBuf>, progress: &Progress, walk_done: &AtomicBool) {
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

fn is_cache_dir(dir: &SourceDir) -> bool {
    const SIG: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";
    use rustix::fs::{Mode, OFlags};
    let mut buf = [0u8; 43];
    // Never follow or block: the tag may be a symlink or a FIFO.
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    rustix::fs::openat(dir.fd(), "CACHEDIR.TAG", flags, Mode::empty())
        .map(std::fs::File::from)
        .map_err(std::io::Error::from)
        .and_then(|mut f| match f.metadata()?.is_file() {
            true => f.read_exact(&mut buf),
            false => Err(std::io::Error::other("not a regular file")),
        })
        .map(|()| buf == SIG)
        .unwrap_or(false)
}

impl Ctx<'_> {
    pub(super) fn warn(&self, msg: String) {
        self.warnings.lock().expect("lock").push(msg);
    }

    pub(super) fn fix_device(&self, mut n: Node) -> Node {
        if let Some(d) = self.opts.device_override {
            n.device = d;
        }
        n
    }

    pub(super) fn excluded(&self, rec: &Path, name: &[u8]) -> bool {
        let name = String::from_utf8_lossy(name);
        self.excludes.iter().any(|p| {
            if p.as_str().contains('/') {
                p.matches_path(rec)
            } else {
                p.matches(&name)
            }
        })
    }

    pub(super) fn check_abort(&self) -> Result<()> {
        if self.sink.aborted() {
            return Err(Error::Usage("backup aborted after an upload failure".into()));
        }
        Ok(())
    }

    pub(super) fn archive_trie(
        &self,
        map: &BTreeMap<Vec<u8>, Trie>,
        rec_dir: &Path,
        parent: Option<&Tree>,
    ) -> Result<TreeId> {
        let entries: Vec<_> = map.iter().collect();
        let nodes = entries
            .par_iter()
            .map(|(name, t)| {
                let rec = rec_dir.join(std::ffi::OsStr::from_bytes(name));
                let pnode = parent.and_then(|p| p.find(name));
                match t {
                    Trie::Leaf(read) => self.archive_entry(None, read, &rec, name, pnode, dev_of(read)),
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

    pub(super) fn parent_subtree(&self, pnode: Option<&Node>) -> Option<Tree> {
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
    pub(super) fn filter(&self, read: &Path) -> Option<&ChangeFilter> {
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

    /// Archive the open directory `dir` (recorded as `rec`) into a tree.
    pub(super) fn archive_dir(
        &self,
        dir: &SourceDir,
        rec: &Path,
        parent: Option<&Tree>,
        root_dev: u64,
    ) -> Result<TreeId> {
        let read = dir.read_path();
        let entries = match dir.list() {
            Ok((entries, errors)) => {
                errors
                    .iter()
                    .for_each(|e| self.warn(format!("{}: {e}", read.display())));
                entries
            }
            Err(e) => {
                self.warn(format!("{}: cannot list directory: {e}", read.display()));
                Vec::new()
            }
        };
        let filter = self.filter(read);
        let nodes = entries
            .par_iter()
            .map(|e| {
                let name = e.name.as_slice();
                let path = read.join(std::ffi::OsStr::from_bytes(name));
                let pnode = parent.and_then(|p| p.find(name));
                if let Some(p) = filter.and_then(|f| f.reusable(&path, e.ino, pnode, self.index)) {
                    return Ok(Some(p.clone()));
                }
                let rec = rec.join(std::ffi::OsStr::from_bytes(name));
                self.archive_entry(Some((dir, e.ino)), &path, &rec, name, pnode, root_dev)
            })
            .collect::<Result<Vec<_>>>()?;
        if let (Some(_), Some(p)) = (filter, parent) {
            // Names gone since the parent: deleted or renamed away.
            p.nodes
                .iter()
                .filter(|n| entries.binary_search_by(|e| e.name.cmp(&n.name)).is_err())
                .for_each(|n| self.count_removed(n, true));
        }
        self.save_tree(nodes.into_iter().flatten().collect())
    }

    /// Archive one entry: `read` is where it is in the source, reached through `dir` (or
    /// by that path for a source root); `Ok(None)` when it is excluded or could not be read
    /// (a warning).
    fn archive_entry(
        &self,
        dir: Option<(&SourceDir, u64)>,
        read: &Path,
        rec: &Path,
        name: &[u8],
        pnode: Option<&Node>,
        root_dev: u64,
    ) -> Result<Option<Node>> {
        let mut descended = false;
        let r = self.archive_entry_inner(dir, read, rec, name, pnode, root_dev, &mut descended);
        if let Some(p) = pnode.filter(|_| self.filter(read).is_some()) {
            self.count_removed(p, !descended);
        }
        r
    }

    /// `descended` is set when a directory's parent subtree was walked as its parent tree.
    #[allow(clippy::too_many_arguments)]
    fn archive_entry_inner(
        &self,
        dir: Option<(&SourceDir, u64)>,
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
        let looked = match dir {
            Some((d, ino)) => d.stat_entry(name, ino),
            None => std::fs::symlink_metadata(read).map(|m| (read.to_path_buf(), m)),
        };
        let (access, md) = match looked {
            Ok(m) => m,
            Err(e) => {
                self.warn(format!("{}: {e}", rec.display()));
                return Ok(None);
            }
        };
        let mut node = match node_from_metadata(name, &access, &md) {
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
                if let Err(e) = self.archive_file(&access, read, &md, &mut node, pnode) {
                    if matches!(e, Error::Io { .. }) {
                        self.warn(format!("{}: {e}", rec.display()));
                        return Ok(None);
                    }
                    return Err(e);
                }
                self.progress.files_done.fetch_add(1, Relaxed);
            }
            NodeKind::Dir => {
                let sub = match SourceDir::open_checked(&access, read, &md) {
                    Ok(d) => d,
                    Err(e) => {
                        self.warn(format!("{}: {e}", rec.display()));
                        return Ok(None);
                    }
                };
                if self.opts.exclude_caches && is_cache_dir(&sub) {
                    return Ok(None);
                }
                self.stats.dirs.fetch_add(1, Relaxed);
                if self.opts.one_file_system && md.dev() != root_dev {
                    node.subtree = Some(self.save_tree(Vec::new())?);
                } else {
                    let ptree = self.parent_subtree(pnode);
                    *descended = ptree.is_some();
                    node.subtree = Some(self.archive_dir(&sub, rec, ptree.as_ref(), root_dev)?);
                }
            }
            _ => {}
        }
        keep_parent_atime(&mut node, pnode);
        Ok(Some(node))
    }
}

/// An entry that differs from its parent node only in its access time keeps the parent's
/// node: a read (a listing, `find`, a user opening a file) must not make a new tree, and every
/// tree above it, on each backup.
fn keep_parent_atime(node: &mut Node, pnode: Option<&Node>) {
    if let Some(p) = pnode.filter(|p| p.atime != node.atime) {
        let mine = std::mem::replace(&mut node.atime, p.atime);
        if node != p {
            node.atime = mine;
        }
    }
}
