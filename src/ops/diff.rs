//! `diff`: what changed between two snapshots (or two subtrees of them), from their trees
//! alone. Subtrees with the same id are equal and skipped without being loaded, so the cost is
//! that of the directories that changed.

use crate::error::Result;
use crate::format::tree::{Node, NodeKind, Tree};
use crate::ids::TreeId;
use crate::repo::index::Index;
use crate::repo::Repository;
use serde::Serialize;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Added,
    Removed,
    /// Same type, other content.
    Modified,
    /// Same content, other mode, owner, times or xattrs.
    Metadata,
    /// A file became a directory, a symlink, …
    TypeChanged,
}

impl ChangeKind {
    /// The column letter of the text output (restic's, plus `T`).
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Added => '+',
            ChangeKind::Removed => '-',
            ChangeKind::Modified => 'M',
            ChangeKind::Metadata => 'U',
            ChangeKind::TypeChanged => 'T',
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Change {
    pub kind: ChangeKind,
    /// Relative to the compared directories; non-UTF-8 bytes lossily (see `path_bytes`).
    pub path: String,
    #[serde(skip)]
    pub path_bytes: PathBuf,
    /// File sizes on each side (0 for what is not a file or not there).
    pub size_before: u64,
    pub size_after: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct DiffTotals {
    pub added: u64,
    pub removed: u64,
    pub modified: u64,
    pub metadata: u64,
    pub type_changed: u64,
    pub bytes_added: u64,
    pub bytes_removed: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct DiffReport {
    pub changes: Vec<Change>,
    pub totals: DiffTotals,
    /// Directories loaded on both sides (equal subtrees are not).
    pub trees_loaded: u64,
}

fn file_size(n: &Node) -> u64 {
    if n.kind == NodeKind::File {
        n.size
    } else {
        0
    }
}

/// Whether two nodes of one type hold the same content (files, links, devices).
fn same_content(a: &Node, b: &Node) -> bool {
    a.content == b.content
        && a.size == b.size
        && a.link_target == b.link_target
        && a.rdev == b.rdev
        && a.extents == b.extents
}

fn same_metadata(a: &Node, b: &Node) -> bool {
    a.mode == b.mode
        && a.uid == b.uid
        && a.gid == b.gid
        && a.user == b.user
        && a.group == b.group
        && a.mtime == b.mtime
        && a.xattrs == b.xattrs
}

struct Differ<'a> {
    repo: &'a Repository,
    index: &'a Index,
    report: DiffReport,
}

impl Differ<'_> {
    fn push(&mut self, kind: ChangeKind, path: &Path, before: Option<&Node>, after: Option<&Node>) {
        let (sb, sa) = (before.map_or(0, file_size), after.map_or(0, file_size));
        let t = &mut self.report.totals;
        match kind {
            ChangeKind::Added => t.added += 1,
            ChangeKind::Removed => t.removed += 1,
            ChangeKind::Modified => t.modified += 1,
            ChangeKind::Metadata => t.metadata += 1,
            ChangeKind::TypeChanged => t.type_changed += 1,
        }
        t.bytes_added += sa.saturating_sub(sb);
        t.bytes_removed += sb.saturating_sub(sa);
        self.report.changes.push(Change {
            kind,
            path: path.to_string_lossy().into_owned(),
            path_bytes: path.to_path_buf(),
            size_before: sb,
            size_after: sa,
        });
    }

    /// Everything below a directory that is only on one side.
    fn one_side(&mut self, dir: &Path, tree: &TreeId, kind: ChangeKind) -> Result<()> {
        let t = self.repo.load_tree(self.index, tree)?;
        self.report.trees_loaded += 1;
        for n in &t.nodes {
            let path = dir.join(std::ffi::OsStr::from_bytes(&n.name));
            match kind {
                ChangeKind::Added => self.push(kind, &path, None, Some(n)),
                _ => self.push(kind, &path, Some(n), None),
            }
            if let Some(st) = n.subtree.filter(|_| n.is_dir()) {
                self.one_side(&path, &st, kind)?;
            }
        }
        Ok(())
    }

    fn trees(&mut self, dir: &Path, a: &TreeId, b: &TreeId) -> Result<()> {
        if a == b {
            return Ok(());
        }
        let (ta, tb) = (self.repo.load_tree(self.index, a)?, self.repo.load_tree(self.index, b)?);
        self.report.trees_loaded += 2;
        self.nodes(dir, &ta, &tb)
    }

    /// Both trees' nodes are sorted by name: merge them.
    fn nodes(&mut self, dir: &Path, ta: &Tree, tb: &Tree) -> Result<()> {
        let (mut i, mut j) = (0, 0);
        while i < ta.nodes.len() || j < tb.nodes.len() {
            let (na, nb) = (ta.nodes.get(i), tb.nodes.get(j));
            let order = match (na, nb) {
                (Some(x), Some(y)) => x.name.cmp(&y.name),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            match order {
                std::cmp::Ordering::Less => {
                    let n = na.expect("left");
                    let path = dir.join(std::ffi::OsStr::from_bytes(&n.name));
                    self.push(ChangeKind::Removed, &path, Some(n), None);
                    if let Some(st) = n.subtree.filter(|_| n.is_dir()) {
                        self.one_side(&path, &st, ChangeKind::Removed)?;
                    }
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    let n = nb.expect("right");
                    let path = dir.join(std::ffi::OsStr::from_bytes(&n.name));
                    self.push(ChangeKind::Added, &path, None, Some(n));
                    if let Some(st) = n.subtree.filter(|_| n.is_dir()) {
                        self.one_side(&path, &st, ChangeKind::Added)?;
                    }
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    let (x, y) = (na.expect("left"), nb.expect("right"));
                    let path = dir.join(std::ffi::OsStr::from_bytes(&x.name));
                    self.pair(&path, x, y)?;
                    i += 1;
                    j += 1;
                }
            }
        }
        Ok(())
    }

    fn pair(&mut self, path: &Path, x: &Node, y: &Node) -> Result<()> {
        if x.kind != y.kind {
            self.push(ChangeKind::TypeChanged, path, Some(x), Some(y));
            if let Some(st) = x.subtree.filter(|_| x.is_dir()) {
                self.one_side(path, &st, ChangeKind::Removed)?;
            }
            if let Some(st) = y.subtree.filter(|_| y.is_dir()) {
                self.one_side(path, &st, ChangeKind::Added)?;
            }
            return Ok(());
        }
        if x.is_dir() {
            if !same_metadata(x, y) {
                self.push(ChangeKind::Metadata, path, Some(x), Some(y));
            }
            return match (x.subtree, y.subtree) {
                (Some(a), Some(b)) => self.trees(path, &a, &b),
                _ => Ok(()),
            };
        }
        if !same_content(x, y) {
            self.push(ChangeKind::Modified, path, Some(x), Some(y));
        } else if !same_metadata(x, y) {
            self.push(ChangeKind::Metadata, path, Some(x), Some(y));
        }
        Ok(())
    }
}

/// The changes from tree `a` to tree `b`, paths relative to them, in name order.
pub fn diff(repo: &Repository, index: &Index, a: &TreeId, b: &TreeId) -> Result<DiffReport> {
    let mut d = Differ {
        repo,
        index,
        report: DiffReport::default(),
    };
    d.trees(Path::new(""), a, b)?;
    Ok(d.report)
}
