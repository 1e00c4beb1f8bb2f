//! `repair`: make a damaged repository whole again from what is left in it.
//!
//! - [`index`] (`repair index`): new index files from the headers of every stored pack, the
//!   only thing it reads; the old index files are deleted only after the new ones are stored
//!   and durable, so every state in between lists only packs that exist.
//! - [`snapshots`] (`repair snapshots`): new snapshots in which files whose data is gone and
//!   trees that are gone are marked by name (the rules are in the README's Decisions), so the
//!   rest restores; the originals stay unless `--forget`.
//!
//! Both hold the exclusive lock prune takes (taken in one place, [`lock`]), read the
//! repository itself and never the local cache, and with `dry_run` write nothing.

pub mod index;
mod marks;
mod rebuild;
pub mod snapshots;

use crate::error::Result;
use crate::repo::lock::RepoLock;
use crate::repo::Repository;

/// Appended to the name of a file some of whose data is gone.
pub const DAMAGED_SUFFIX: &str = ".pbak-damaged";
/// Appended to the name of a directory whose tree is gone (it becomes an empty directory).
pub const MISSING_TREE_SUFFIX: &str = ".pbak-missing-tree";
/// Tag of every snapshot `repair snapshots` writes; a `repaired-from:<short id>` tag names
/// the original.
pub const REPAIRED_TAG: &str = "repaired";

/// The lock both repairs run under: prune's exclusive one (no backup adds packs or snapshots
/// meanwhile, no prune deletes them).
fn lock(repo: &Repository, command: &str) -> Result<RepoLock> {
    repo.lock(true, command)
}
