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
//! A dry run is the same first pass creating nothing, and with `--verify` the same content
//! pass writing nothing: every blob a restore needs is read and verified, no target needed.
//!
//! Files: `walk.rs` (the passes over the trees: create, link), `contents.rs` (file contents
//! from packs), `meta.rs` (metadata, and `--verify`).

pub mod contents;
mod meta;
mod walk;

use crate::error::{Error, Result};
use crate::format::snapshot::Snapshot;
use crate::ids::SnapshotId;
use crate::repo::filter::SnapshotFilter;
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
    /// Re-read the restored files; in a dry run, read and verify every blob a restore needs.
    pub verify: bool,
    /// Plan and count only: nothing is written (the target need not exist; when it does,
    /// it is inspected as a restore would, to count what would be written, skipped, deleted).
    pub dry_run: bool,
    /// What to do with entries already in the target; `None` refuses a non-empty target.
    pub overwrite: Option<Overwrite>,
    /// Remove entries of the restored directories that the snapshot does not have (only
    /// those the selection would restore if the snapshot had them).
    pub delete: bool,
    /// List every entry written, skipped and deleted in [`RestoreSummary::changes`].
    pub list: bool,
    /// Packs read at once from a remote repository (at least the cores in use).
    pub connections: usize,
}

/// How a restore treats an entry that already exists in the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overwrite {
    /// Replace every file, symlink and special file.
    Always,
    /// Keep a regular file whose size and mtime already match (with `verify`, and every
    /// chunk's keyed hash); replace anything else.
    IfChanged,
    /// Keep every existing entry as it is (directories are entered, not changed).
    Never,
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
    /// Nothing was written: `files` … `bytes` are what a restore would write.
    pub dry_run: bool,
    /// Files whose data was written (new or replaced); `files` counts them and `skipped`.
    pub written: u64,
    /// Existing entries left as they were (`--overwrite if-changed`: files that matched;
    /// `never`: anything already there).
    pub skipped: u64,
    /// Entries removed by `--delete` (a directory and each entry below it count one each).
    pub deleted: u64,
    /// With [`RestoreOptions::list`]: `write PATH`, `skip PATH`, `delete PATH`, in no order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
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

/// Load the index and find the snapshot `spec` names (`latest` among those `latest`
/// selects, or an id prefix); [`Prepared::run`] then restores it.
pub fn prepare<'a>(repo: &'a Repository, spec: &str, latest: &SnapshotFilter) -> Result<Prepared<'a>> {
    let index = repo.load_index()?;
    let (id, snapshot) = repo.find_snapshot_of(spec, latest)?;
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
            .filter(|w| w.contains(": data damaged"))
            .take(10)
            .map(String::as_str)
            .collect();
        let (files, outcome) = match opts.dry_run {
            true => (
                "files",
                "a restore would leave them as NAME.pbak-partial; nothing was written",
            ),
            false => (
                "restored files",
                "they are left as NAME.pbak-partial, everything else was restored with its metadata",
            ),
        };
        Err(Error::corrupt(
            format!("the data of {} of {} {files}", sum.failed_files, sum.files),
            format!(
                "{outcome}:\n  {}{}\n ",
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
    let exists = !opts.target.as_os_str().is_empty() && opts.target.exists();
    let mode = match opts.overwrite {
        Some(m) => m,
        None if exists && !is_empty_dir(&opts.target)? => return Err(not_empty(&opts.target)),
        // An empty or new target: nothing to overwrite.
        None => Overwrite::Always,
    };
    let how = walk::How {
        mode,
        delete: opts.delete,
        list: opts.list,
        dry: opts.dry_run,
        verify: opts.verify,
    };
    if opts.dry_run {
        let target = match exists {
            true => Some(opts.target.canonicalize().map_err(|e| Error::io(&opts.target, e))?),
            false => None,
        };
        let w = walk::Walk::new(repo, index, (sel, how), target, tree_id, single, base)?;
        if opts.delete && exists {
            w.delete_extras()?;
        }
        return dry_run(&w, opts.verify, opts.connections, bytes_done);
    }
    std::fs::create_dir_all(&opts.target).map_err(|e| Error::io(&opts.target, e))?;
    let target = opts.target.canonicalize().map_err(|e| Error::io(&opts.target, e))?;
    let w = walk::Walk::new(repo, index, (sel, how), Some(target), tree_id, single, base)?;
    // Extras go first: removing them changes their directories' times, set at the end.
    if opts.delete {
        w.delete_extras()?;
    }
    w.for_each(&|e| w.create(e))?;
    w.link_later_names()?;
    let finish = |rel: &Path, key, fd: std::os::fd::BorrowedFd<'_>, meta: &_| w.finish_file(rel, key, fd, meta);
    let damaged = contents::write_contents(
        repo,
        index,
        Some((&w.target, w.dirs(), &finish)),
        w.take_plan(),
        opts.connections,
        bytes_done,
    )?;
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

/// A dry run: the restore's first pass, creating nothing, then (with `verify`) its content
/// pass reading and verifying every blob it would write, pack by pack in the same order,
/// writing nothing. The format stores no whole-file hash: a file is verified when each of
/// its chunks authenticates and matches the id its (authenticated) tree names.
fn dry_run(w: &walk::Walk, verify: bool, connections: usize, bytes_done: &AtomicU64) -> Result<RestoreSummary> {
    w.for_each(&|e| w.create(e))?;
    let plan = w.take_plan();
    let mut sum = w.take_summary();
    let links = std::mem::take(&mut *w.links.lock().expect("lock"));
    sum.dry_run = true;
    sum.hardlinks = links.len() as u64;
    let len = |id: &crate::ids::DataId| w.index.get(id).map_or(0, |l| l.raw_length as u64);
    sum.bytes = plan.by_pack.values().flatten().map(|(id, _, _)| len(id)).sum();
    if !verify {
        return Ok(sum);
    }
    let damaged = contents::write_contents(w.repo, w.index, None, plan, connections, bytes_done)?;
    for (rel, _, why) in &damaged {
        sum.warnings
            .push(format!("{}: data damaged: {why}", w.snap_path(rel).display()));
    }
    for (first, later) in links.iter().filter(|(f, _)| damaged.iter().any(|d| *d.0 == **f)) {
        let (later, first) = (w.snap_path(later), w.snap_path(first));
        sum.warnings.push(format!(
            "{}: data damaged: a hard link to {}",
            later.display(),
            first.display()
        ));
    }
    sum.failed_files = damaged.len() as u64;
    sum.verified_files = sum.files - sum.failed_files;
    Ok(sum)
}

/// Whether the directory `p` has no entries (a file there is not empty).
fn is_empty_dir(p: &Path) -> Result<bool> {
    match std::fs::read_dir(p) {
        Ok(mut rd) => Ok(rd.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Ok(false),
        Err(e) => Err(Error::io(p, e)),
    }
}

fn not_empty(target: &Path) -> Error {
    Error::Usage(format!(
        "restore target {} is not empty: pass --overwrite always, if-changed or never to say what happens to what is there (add --delete to remove what the snapshot lacks), or restore into an empty directory",
        target.display()
    ))
}
