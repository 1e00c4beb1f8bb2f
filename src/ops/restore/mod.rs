//! Restore: plan every entry from the snapshot's trees, create the structure under the
//! target, fill file contents pack by pack (each needed pack range is read once), then apply
//! metadata, directories last and deepest first so their times stick.
//!
//! Safety: entry names were validated when their tree was decoded (no `/`, `.`, `..`), so
//! nothing in a repository can make a restore write outside the target. Nothing a local user
//! does inside the target during a restore can either: the target is opened once and every
//! entry below it is created, written and given its metadata through directory descriptors
//! that never follow a symlink (`crate::fs::at`); directories stay 0700 until their final
//! metadata; contents and metadata go only to inodes the restore made itself.
//!
//! Files: `walk.rs` (the passes over the trees: create, link), `contents.rs` (file contents
//! from packs), `meta.rs` (metadata, and `--verify`).

mod contents;
mod meta;
mod walk;

use crate::error::{Error, Result};
use crate::format::snapshot::Snapshot;
use crate::ids::SnapshotId;
use crate::repo::index::Index;
use crate::repo::Repository;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    pub target: PathBuf,
    /// Path inside the snapshot to restore (empty: everything).
    pub subpath: String,
    pub includes: Vec<String>,
    pub excludes: Vec<String>,
    pub verify: bool,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RestoreSummary {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub specials: u64,
    pub hardlinks: u64,
    pub bytes: u64,
    pub verified_files: u64,
    /// Files whose data could not be read (a damaged pack or blob), left as `NAME.pbak-partial`.
    pub failed_files: u64,
    /// Entries whose metadata could not all be applied (each named in the warnings; the
    /// rest of the restore went on). The CLI exits 3 then.
    pub metadata_failed: u64,
    pub warnings: Vec<String>,
}

/// Whether an entry at `snap_path` (inside the snapshot) is restored. Excluding a directory
/// excludes everything below it; with includes, directories are created only on the way to
/// something included.
pub(super) struct Selection {
    pub(super) includes: Vec<glob::Pattern>,
    pub(super) excludes: Vec<glob::Pattern>,
}

impl Selection {
    pub(super) fn excluded(&self, snap_path: &Path) -> bool {
        matches_any(&self.excludes, snap_path)
    }
    pub(super) fn included(&self, snap_path: &Path) -> bool {
        self.includes.is_empty() || matches_any(&self.includes, snap_path)
    }
}

fn patterns(p: &[String]) -> Result<Vec<glob::Pattern>> {
    p.iter()
        .map(|s| glob::Pattern::new(s).map_err(|e| Error::Usage(format!("bad pattern {s:?}: {e}"))))
        .collect()
}

fn matches_any(pats: &[glob::Pattern], path: &Path) -> bool {
    pats.iter().any(|p| {
        if p.as_str().contains('/') {
            path.ancestors().any(|a| p.matches_path(a))
        } else {
            path.iter().any(|c| p.matches(&c.to_string_lossy()))
        }
    })
}

/// A restore ready to run: the index loaded, the snapshot found (restores take no lock and
/// write nothing to the repository).
pub struct Prepared<'a> {
    repo: &'a Repository,
    index: Index,
    pub id: SnapshotId,
    pub snapshot: Snapshot,
}

/// Load the index and find the snapshot `spec` names (`latest` or an id prefix);
/// [`Prepared::run`] then restores it.
pub fn prepare<'a>(repo: &'a Repository, spec: &str) -> Result<Prepared<'a>> {
    let index = repo.load_index()?;
    let (id, snapshot) = repo.find_snapshot(spec)?;
    Ok(Prepared {
        repo,
        index,
        id,
        snapshot,
    })
}

impl Prepared<'_> {
    /// Restore; when some files' data was damaged, everything else is restored and the
    /// result is an error that names them (the summary's warnings list them all).
    pub fn run(&self, opts: &RestoreOptions, bytes_done: &AtomicU64) -> Result<RestoreSummary> {
        let sum = restore(self.repo, &self.index, &self.snapshot, opts, bytes_done)?;
        if sum.failed_files == 0 {
            return Ok(sum);
        }
        let listed: Vec<&str> = sum
            .warnings
            .iter()
            .filter(|w| w.contains(": data damaged, left as "))
            .take(10)
            .map(String::as_str)
            .collect();
        Err(Error::corrupt(
            format!("the data of {} of {} restored files", sum.failed_files, sum.files),
            format!(
                "they are left as NAME.pbak-partial, everything else was restored with its metadata:\n  {}{}\n ",
                listed.join("\n  "),
                if sum.failed_files > 10 { "\n  …" } else { "" }
            ),
        ))
    }
}

/// Restore `snap` (or `opts.subpath` of it) into `opts.target`.
///
/// Memory holds no copy of the snapshot's trees: three walks over them (create and plan,
/// metadata, and with `verify` a re-read) keep only the content plan, a few bytes per file
/// and per chunk, and the directories for their metadata at the end.
pub fn restore(
    repo: &Repository,
    index: &Index,
    snap: &Snapshot,
    opts: &RestoreOptions,
    bytes_done: &AtomicU64,
) -> Result<RestoreSummary> {
    let sel = Selection {
        includes: patterns(&opts.includes)?,
        excludes: patterns(&opts.excludes)?,
    };
    let (tree_id, single) = repo.resolve_path(index, &snap.tree, &opts.subpath)?;
    let base = PathBuf::from("/").join(opts.subpath.trim_matches('/'));
    std::fs::create_dir_all(&opts.target).map_err(|e| Error::io(&opts.target, e))?;
    let target = opts.target.canonicalize().map_err(|e| Error::io(&opts.target, e))?;
    let w = walk::Walk::new(repo, index, sel, target, tree_id, single, base)?;
    w.for_each(&|e| w.create(e))?;
    w.link_later_names()?;
    let damaged = contents::write_contents(repo, index, &w.target, &w.dirs, w.take_plan(), bytes_done)?;
    let failed = w.set_aside(&damaged)?;
    let owner_skipped = w.apply_metadata()?;
    let mut sum = w.take_summary();
    sum.failed_files = failed;
    if owner_skipped {
        sum.warnings.push("file ownership not restored: it needs root".into());
    }
    sum.bytes = bytes_done.load(Relaxed);
    if opts.verify {
        sum.verified_files = w.verify()?;
    }
    Ok(sum)
}
