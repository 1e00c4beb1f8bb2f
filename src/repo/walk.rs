//! The one tree walker. Every operation that reads a snapshot's trees goes through one of its
//! two shapes; what happens at each tree or entry stays with the caller:
//!
//! - [`Repository::walk_levels`]: every distinct tree reachable from some roots, level by
//!   level, each level loaded in parallel. The caller's `first` decides whether a tree is
//!   walked (its seen set: `check`'s hash set, prune's mark bits); `visit` sees each walked
//!   tree, or its load error, which the caller may keep (check) or return (prune).
//! - [`Repository::walk_paths`]: depth first by path below one tree, for restore and `ls`.
//! - [`fold_tree`]: depth first and bottom up, each directory's entries folded into one
//!   result after its subdirectories' (`repair snapshots` rebuilds trees this way); the
//!   caller loads the subtrees it descends into.
//!
//! None keeps a tree after its visit: memory holds one level (by ids), the pending
//! directories (by path and id) or the trees on the path from the root, never a whole
//! snapshot's trees. None recurses on the stack, so a snapshot of any depth walks (issue 11:
//! 550 levels overflowed a thread's stack).
//!
//! The two walks read their trees through one [`TreeReader`] each: without the local cache,
//! by the window of a tree pack (one ranged GET for all the trees in it, the fetched windows
//! kept within 32 MiB), not one GET per tree; a level is read in the order the trees are
//! stored, so the trees of one window are read together.

use super::blob::windows::TreeReader;
use super::index::Index;
use super::Repository;
use crate::error::{Error, Result};
use crate::format::tree::{self, Node, Tree};
use crate::ids::TreeId;
use rayon::prelude::*;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The order of a [`Repository::walk_paths`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Name order: every entry of a directory, then each subdirectory in turn (`ls`).
    Sequential,
    /// The entries of a directory in parallel; each entry is visited before its subtree.
    Parallel,
}

/// What a [`TreeFold`] makes of one entry.
pub enum Visit<T> {
    /// The entry's result, without descending.
    Done(T),
    /// Descend into this (loaded) tree: its entries are folded, then
    /// [`TreeFold::finish`] gives the entry's result.
    Descend(Tree),
}

/// The caller's side of a [`fold_tree`]. `dir` is the path of names from the root to the
/// directory concerned.
pub trait TreeFold {
    type Out;
    /// One entry of directory `dir`.
    fn entry(&mut self, dir: &[Vec<u8>], node: &Node) -> Result<Visit<Self::Out>>;
    /// All entries of directory `dir` are folded (`outs`, in the tree's order): the result of
    /// its node `node`, which is `None` for the root.
    fn finish(&mut self, dir: &[Vec<u8>], node: Option<Node>, outs: Vec<Self::Out>) -> Result<Self::Out>;
}

/// Fold the tree `root` bottom up (see [`TreeFold`]), with a stack of its own: one frame per
/// directory on the current path, so any depth folds.
pub fn fold_tree<F: TreeFold>(root: Tree, f: &mut F) -> Result<F::Out> {
    struct Frame<T> {
        node: Option<Node>,
        nodes: std::vec::IntoIter<Node>,
        outs: Vec<T>,
    }
    let frame = |node, tree: Tree| Frame {
        node,
        nodes: tree.nodes.into_iter(),
        outs: Vec::new(),
    };
    let mut stack = vec![frame(None, root)];
    let mut dir: Vec<Vec<u8>> = Vec::new();
    loop {
        let top = stack.last_mut().expect("the root frame is popped last");
        if let Some(node) = top.nodes.next() {
            match f.entry(&dir, &node)? {
                Visit::Done(out) => top.outs.push(out),
                Visit::Descend(tree) => {
                    dir.push(node.name.clone());
                    stack.push(frame(Some(node), tree));
                }
            }
            continue;
        }
        let done = stack.pop().expect("non-empty");
        let out = f.finish(&dir, done.node, done.outs)?;
        match stack.last_mut() {
            None => return Ok(out),
            Some(parent) => {
                dir.pop();
                parent.outs.push(out);
            }
        }
    }
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
        let trees = self.tree_reader(index);
        let mut level = roots;
        while !level.is_empty() {
            trees.sort_by_place(&mut level);
            let next: Vec<Vec<TreeId>> = level
                .par_iter()
                .map(|id| {
                    let tree = match trees.load(id) {
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
    /// Neither order recurses on the stack, so any depth works: `Sequential` keeps its own
    /// stack of directories, `Parallel` spawns each subtree as a job of one rayon scope.
    pub fn walk_paths(
        &self,
        index: &Index,
        tree: &TreeId,
        dir: &Path,
        order: Order,
        visit: &(dyn Fn(&Path, &Node) -> Result<bool> + Sync),
    ) -> Result<()> {
        let dir = dir.to_path_buf();
        let trees = self.tree_reader(index);
        match order {
            Order::Sequential => {
                let mut todo = vec![(dir, *tree)];
                while let Some((dir, tree)) = todo.pop() {
                    let mut subdirs = walk_one(&trees, &tree, &dir, visit)?;
                    subdirs.reverse();
                    todo.extend(subdirs);
                }
                Ok(())
            }
            Order::Parallel => {
                let failed = std::sync::Mutex::new(None);
                rayon::scope(|s| spawn_walk(s, &trees, (dir, *tree), visit, &failed));
                failed.into_inner().expect("lock").map_or(Ok(()), Err)
            }
        }
    }

    /// Follow `subpath` (slash-separated, relative to the snapshot root) to its node's tree.
    pub fn resolve_path(&self, index: &Index, root: &TreeId, subpath: &str) -> Result<(TreeId, Option<tree::Node>)> {
        let mut current = *root;
        let mut last = None;
        for comp in subpath.split('/').filter(|c| !c.is_empty() && *c != ".") {
            let t = self.load_tree(index, &current)?;
            let node = t
                .find(comp.as_bytes())
                .cloned()
                .ok_or_else(|| Error::PathNotInSnapshot {
                    snapshot: root.short(),
                    path: subpath.to_string(),
                })?;
            match node.subtree {
                Some(st) => current = st,
                None => {
                    return Ok((current, Some(node)));
                }
            }
            last = Some(node);
        }
        Ok((current, last))
    }
}

/// Visit the entries of one tree in name order; the subdirectories to descend into.
fn walk_one(
    trees: &TreeReader,
    tree: &TreeId,
    dir: &Path,
    visit: &(dyn Fn(&Path, &Node) -> Result<bool> + Sync),
) -> Result<Vec<(PathBuf, TreeId)>> {
    let t = trees.load(tree)?;
    let mut subdirs = Vec::new();
    for n in &t.nodes {
        let path = dir.join(OsStr::from_bytes(&n.name));
        let descend = visit(&path, n)?;
        if let Some(st) = n.subtree.filter(|_| descend && n.is_dir()) {
            subdirs.push((path, st));
        }
    }
    Ok(subdirs)
}

/// One job of a parallel walk: visit a tree's entries, spawn a job per subdirectory.
/// Jobs return before their children run, so the stack does not grow with the depth.
/// The first error is kept and stops further jobs.
fn spawn_walk<'s>(
    s: &rayon::Scope<'s>,
    trees: &'s TreeReader<'s>,
    (dir, tree): (PathBuf, TreeId),
    visit: &'s (dyn Fn(&Path, &Node) -> Result<bool> + Sync),
    failed: &'s Mutex<Option<crate::error::Error>>,
) {
    if failed.lock().expect("lock").is_some() {
        return;
    }
    match walk_one(trees, &tree, &dir, visit) {
        Ok(subdirs) => {
            for sub in subdirs {
                s.spawn(move |s| spawn_walk(s, trees, sub, visit, failed));
            }
        }
        Err(e) => {
            failed.lock().expect("lock").get_or_insert(e);
        }
    }
}
