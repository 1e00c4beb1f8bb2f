//! The narrow hook through which filesystem change detection (Btrfs generations) tells the
//! archiver which entries it may take from the parent snapshot without looking at them.
//!
//! What must hold for reuse to be exact (the caller, `workflows::snapshot_backup`, checks it):
//! - the parent snapshot's tree was made from the state `root` had at the base point, with the
//!   same walk options (excludes, `--exclude-caches`, `--one-file-system`, recorded device);
//! - `inodes` holds every inode whose inode item, data extents, xattrs or directory entries
//!   changed since the base point (a superset is fine);
//! - `dirty` holds every strict ancestor directory (as a read path) of every current path of
//!   those inodes.
//!
//! Then an entry whose inode is not in `inodes`, whose parent node has the same name and the
//! same inode number, and which is not in `dirty`, equals its parent node, subtree included.
//! Every visited directory is listed again, which is how deletions, renames and new names
//! (hard links) are seen: a changed entry list always changes the directory's own inode.

use crate::format::tree::Node;
use crate::repo::index::Index;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

#[derive(Debug, Default)]
pub struct ChangeFilter {
    /// The read path of the source this applies to; paths outside it are walked normally.
    pub root: PathBuf,
    inodes: HashSet<u64>,
    dirty: HashSet<PathBuf>,
}

impl ChangeFilter {
    /// `paths`: every current path (under `root`) of every inode in `inodes`.
    pub fn new(root: PathBuf, inodes: impl IntoIterator<Item = u64>, paths: impl IntoIterator<Item = PathBuf>) -> Self {
        let mut dirty = HashSet::new();
        for p in paths {
            for a in p.ancestors().skip(1) {
                // An ancestor already present has all of its own ancestors present too.
                if !a.starts_with(&root) || !dirty.insert(a.to_path_buf()) {
                    break;
                }
            }
        }
        ChangeFilter {
            root,
            inodes: inodes.into_iter().collect(),
            dirty,
        }
    }

    pub fn applies_to(&self, read: &Path) -> bool {
        read.starts_with(&self.root)
    }

    /// The parent node to take as it is for the entry at `read` with inode `ino`, if allowed.
    /// Blobs it refers to directly must still be in the index (the parent snapshot's blobs
    /// are, unless the repository was damaged; then the entry is read again).
    pub fn reusable<'a>(&self, read: &Path, ino: u64, pnode: Option<&'a Node>, index: &Index) -> Option<&'a Node> {
        let p = pnode?;
        let fresh = p.inode == ino && !self.inodes.contains(&ino) && !(p.is_dir() && self.dirty.contains(read));
        let stored = p.content.iter().all(|id| index.is_live(id)) && p.subtree.is_none_or(|t| index.is_live(&t));
        (fresh && stored).then_some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestors_up_to_the_root_are_dirty() {
        let f = ChangeFilter::new("/s".into(), [7], ["/s/a/b/c".into(), "/s/a/x".into(), "/s/top".into()]);
        let mut d: Vec<_> = f.dirty.iter().map(|p| p.to_str().unwrap()).collect();
        d.sort();
        assert_eq!(d, ["/s", "/s/a", "/s/a/b"]);
        assert!(f.applies_to(Path::new("/s/q")) && !f.applies_to(Path::new("/t")));
    }
}
