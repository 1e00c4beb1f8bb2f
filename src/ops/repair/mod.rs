//! `repair`: make a damaged repository whole again from what is left in it.
//!
//! - [`index`] (`repair index`): new index files from the headers of every stored pack, the
//!   only thing it reads; the old index files are deleted only after the new ones are stored
//!   and durable, so every state in between lists only packs that exist.
//! - [`snapshots`] (`repair snapshots`): new snapshots in which files whose data is gone and
//!   trees that are gone are marked by name (the rules are in the README's Decisions), so the
//!   rest restores; the originals stay unless `--forget`.
//!
//! Both hold the prune marker (taken in one place, [`lock`]; a repair and a prune must not
//! rewrite the index at once), read the repository itself and never the local cache, and with
//! `dry_run` write nothing. Backups may run meanwhile: like prune, `repair index` deletes only
//! the index files it read, and lists every stored pack live (marks are dropped: the next
//! prune marks again what is unneeded, with a fresh grace period).

pub mod index;
mod marks;
mod rebuild;
pub mod snapshots;

use crate::error::Result;
use crate::repo::marker::PruneMarker;
use crate::repo::Repository;

/// Appended to the name of a file some of whose data is gone.
pub const DAMAGED_SUFFIX: &str = ".pbak-damaged";
/// Appended to the name of a directory whose tree is gone (it becomes an empty directory).
pub const MISSING_TREE_SUFFIX: &str = ".pbak-missing-tree";
/// Tag of every snapshot `repair snapshots` writes; a `repaired-from:<short id>` tag names
/// the original.
pub const REPAIRED_TAG: &str = "repaired";

/// What both repairs run under: the prune marker, after checking that the key may delete
/// (a dry run writes nothing and takes none).
fn lock(repo: &Repository, command: &'static str, dry_run: bool) -> Result<Option<PruneMarker>> {
    repo.require_writable_format()?;
    if dry_run {
        return Ok(None);
    }
    repo.require_delete_right(command)?;
    Ok(Some(repo.take_prune_marker()?))
}
