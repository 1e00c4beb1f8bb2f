//! The one tree walker. Every operation that reads a snapshot's trees goes through one of its
//! two shapes; what happens at each tree or entry stays with the caller:
//!
//! - [`Repository::walk_levels`]: every distinct tree reachable from some roots, level by
//!   level, each level loaded in parallel. The caller's `first` decides whether a tree is
//!   walked (its seen set: `check`'s hash set, prune's mark bits); `visit` sees each walked
//!   tree, or its load error, which the caller may keep (check) or return (prune).
//! - [`Repository::walk_paths`]: depth first by path below one tree, for restore and `ls`.
//!
//! Neither keeps a tree after its visit: memory holds one level (by ids) or one path of
//! trees, never a whole snapshot.

use super::index::Index;
use super::Repository;
use crate::error::Result;
use crate::format::tree::{Node, Tree};
use crate::ids::TreeId;
use rayon::prelude::*;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The order of a [`Repository::walk_paths`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Name order: every entry of a directory, then each subdirectory in turn (`ls`).
    Sequential,
    /// The entries of a directory in parallel; each entry is visited before its subtree.
    Parallel,
}

impl Repository {
    /// Walk every tree reachable from `roots` (which the caller has already admitted) once
    /// per `first`: a subtree found in tree `parent` is walked when `first(parent, subtree)`
    /// is `Ok(true)`; an `Err` stops the walk.
    pub fn walk_levels(
        &self,
        index: &Index,
        roots: Vec<TreeId>,
        first: &(dyn Fn(&TreeId, &TreeId) -> Result<bool> + Sync),
        visit: &(dyn Fn(&TreeId, Result<&Tree>) -> Result<()> + Sync),
    ) -> Result<()> {
        let mut level = roots;
        while !level.is_empty() {
            let next: Vec<Vec<TreeId>> = level
                .par_iter()
                .map(|id| {
                    let tree = match self.load_tree(index, id) {
                        Ok(t) => t,
                        Err(e) => {
                            visit(id, Err(e))?;
                            return Ok(Vec::new());
                        }
                    };
                    visit(id, Ok(&tree))?;
                    let mut subtrees = Vec::new();
                    for st in tree.nodes.iter().filter_map(|n| n.subtree.as_ref()) {
                        if first(id, st)? {
                            subtrees.push(*st);
                        }
                    }
                    Ok(subtrees)
                })
                .collect::<Result<_>>()?;
            level = next.concat();
        }
        Ok(())
    }

    /// Visit every entry below `tree`, whose path is `dir`, with its path (`dir/name/…`).
    /// `visit` returns whether to descend into the entry (only directories have a subtree).
    pub fn walk_paths(
        &self,
        index: &Index,
        tree: &TreeId,
        dir: &Path,
        order: Order,
        visit: &(dyn Fn(&Path, &Node) -> Result<bool> + Sync),
    ) -> Result<()> {
        let t = self.load_tree(index, tree)?;
        let step = |n: &Node| -> Result<Option<(std::path::PathBuf, TreeId)>> {
            let path = dir.join(OsStr::from_bytes(&n.name));
            let descend = visit(&path, n)?;
            Ok(match n.subtree {
                Some(st) if descend && n.is_dir() => Some((path, st)),
                _ => None,
            })
        };
        match order {
            Order::Sequential => {
                let subdirs = t.nodes.iter().map(step).collect::<Result<Vec<_>>>()?;
                for (path, st) in subdirs.into_iter().flatten() {
                    self.walk_paths(index, &st, &path, order, visit)?;
                }
                Ok(())
            }
            Order::Parallel => t.nodes.par_iter().try_for_each(|n| match step(n)? {
                Some((path, st)) => self.walk_paths(index, &st, &path, order, visit),
                None => Ok(()),
            }),
        }
    }
}
