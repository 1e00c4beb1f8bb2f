//! `ls`: the entries of a snapshot, or of one directory (or file) inside it, with their full
//! paths inside the snapshot.
//!
//! Order: a directory's entries in tree (name) order, then each subdirectory's the same way,
//! depth first; a subpath that names a file yields that one entry.

use crate::error::Result;
use crate::format::snapshot::Snapshot;
use crate::format::tree::Node;
use crate::repo::index::Index;
use crate::repo::walk::Order;
use crate::repo::Repository;

/// Call `visit` with each entry below `subpath` (relative to the snapshot root; empty for all)
/// and its path (`/`-separated, starting with `/`).
pub fn walk(
    repo: &Repository,
    index: &Index,
    snap: &Snapshot,
    subpath: &str,
    visit: &(dyn Fn(&str, &Node) + Sync),
) -> Result<()> {
    let (tree, single) = repo.resolve_path(index, &snap.tree, subpath)?;
    let base = format!("/{}", subpath.trim_matches('/'));
    if let Some(n) = single.filter(|n| !n.is_dir()) {
        visit(&base, &n);
        return Ok(());
    }
    let dir = std::path::Path::new(&base);
    repo.walk_paths(index, &tree, dir, Order::Sequential, &|path, n| {
        visit(&path.to_string_lossy(), n);
        Ok(true)
    })
}
