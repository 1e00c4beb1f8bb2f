//! `ls`: the entries of a snapshot, or of one directory (or file) inside it, with their full
//! paths inside the snapshot.
//!
//! Order: a directory's entries in tree (name) order, then each subdirectory's the same way,
//! depth first; a subpath that names a file yields that one entry.

use crate::error::Result;
use crate::format::snapshot::Snapshot;
use crate::format::tree::Node;
use crate::repo::index::Index;
use crate::repo::Repository;

/// Call `visit` with each entry below `subpath` (relative to the snapshot root; empty for all)
/// and its path (`/`-separated, starting with `/`).
pub fn walk(
    repo: &Repository,
    index: &Index,
    snap: &Snapshot,
    subpath: &str,
    visit: &mut dyn FnMut(&str, &Node),
) -> Result<()> {
    let (tree, single) = repo.resolve_path(index, &snap.tree, subpath)?;
    let base = format!("/{}", subpath.trim_matches('/'));
    if let Some(n) = single.filter(|n| !n.is_dir()) {
        visit(&base, &n);
        return Ok(());
    }
    let mut stack = vec![(base.trim_end_matches('/').to_string(), tree)];
    while let Some((prefix, id)) = stack.pop() {
        let t = repo.load_tree(index, &id)?;
        for n in t.nodes.iter() {
            visit(&format!("{prefix}/{}", String::from_utf8_lossy(&n.name)), n);
        }
        for n in t.nodes.iter().rev() {
            if let Some(st) = n.subtree {
                stack.push((format!("{prefix}/{}", String::from_utf8_lossy(&n.name)), st));
            }
        }
    }
    Ok(())
}
