//! Backup: walk sources in parallel, reuse unchanged files' chunk lists from the parent
//! snapshot, chunk/hash/compress/seal changed files on all cores, pack and upload while
//! the walk goes on (`repo::pack_writer`), then write the index and finally the snapshot.
//!
//! Memory is bounded by the pack writer's queues and by reading large files in segments.
//! Index files are written every [`INDEX_EVERY`] packs, so an interrupted backup's stored
//! packs are known to the next run and not uploaded again.
//!
//! Files: `walk.rs` (directories and entries), `file.rs` (file contents and blobs),
//! `compress.rs` (zstd contexts), `change_filter.rs` (Btrfs change detection's hook).

pub mod change_filter;
mod commit;
mod compress;
mod file;
mod walk;

use crate::error::{Error, Result};
use crate::format::snapshot::{BtrfsOrigin, ChangeDetection, Snapshot, Summary};
use crate::format::tree::{Time, Tree};
use crate::fs::source::SourceDir;
use crate::ids::{SnapshotId, TreeId};
use crate::repo::filter::SnapshotFilter;
use crate::repo::index::Index;
use crate::repo::pack_writer::WriterOptions;
use crate::repo::Repository;
use change_filter::ChangeFilter;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;
pub(crate) use walk::clean_abs;
use walk::{Ctx, Stats, Trie};

/// Stored packs between index files.
pub const INDEX_EVERY: usize = 8;

/// One thing to back up: where it is recorded in the snapshot, and where it is read from
/// (the same path, or the matching path inside a read-only Btrfs snapshot).
#[derive(Clone, Debug)]
pub struct Source {
    pub recorded: PathBuf,
    pub read: PathBuf,
}

#[derive(Clone, Debug, Default)]
pub struct BackupOptions {
    pub sources: Vec<Source>,
    pub tags: Vec<String>,
    pub host: String,
    pub excludes: Vec<String>,
    pub one_file_system: bool,
    pub exclude_caches: bool,
    pub dry_run: bool,
    /// Explicit parent; `None` picks the latest snapshot of the same host and paths.
    pub parent: Option<SnapshotId>,
    /// Sources cannot change while read (read-only snapshot): large files are memory-mapped.
    pub readonly_source: bool,
    pub btrfs: Option<BtrfsOrigin>,
    /// Concurrent pack uploads.
    pub connections: usize,
    /// Record this st_dev for every entry (a snapshot's own device number changes each time).
    pub device_override: Option<u64>,
    /// Filesystem change detection: take unchanged entries from the parent without a stat.
    /// Requires `parent` to be the snapshot the filter was computed against.
    pub change_filter: Option<Arc<ChangeFilter>>,
}

/// Live counters for a progress display; the backup only ever adds to them.
#[derive(Default)]
pub struct Progress {
    pub files_done: AtomicU64,
    pub bytes_done: AtomicU64,
    pub total_files: AtomicU64,
    pub total_bytes: AtomicU64,
    pub scan_finished: AtomicBool,
    pub want_totals: AtomicBool,
}

pub struct BackupResult {
    /// `None` on a dry run.
    pub id: Option<SnapshotId>,
    pub snapshot: Snapshot,
    pub parent: Option<SnapshotId>,
    pub warnings: Vec<String>,
    /// Stored blob bytes of the repository's packs after this backup, as its index saw them
    /// (for the run record).
    pub stored_bytes: u64,
    /// The index files this backup wrote (what `--read-back` reads).
    pub index_files: Vec<crate::ids::IndexId>,
}

/// The latest snapshot of `host` with exactly these paths: the default parent.
pub fn find_parent(repo: &Repository, host: &str, paths: &[String]) -> Result<Option<(SnapshotId, Snapshot)>> {
    let same = SnapshotFilter {
        hosts: vec![host.to_string()],
        paths: paths.to_vec(),
        exact_paths: true,
        tags: Vec::new(),
    };
    Ok(repo.snapshots_matching(&same)?.pop())
}

/// What a backup starts from: the recorded paths, the parent snapshot and its root tree.
struct Start {
    paths: Vec<String>,
    parent: Option<(SnapshotId, Snapshot)>,
    parent_tree: Option<Tree>,
    excludes: Vec<glob::Pattern>,
    trie: Trie,
}

fn start(repo: &Repository, index: &Index, opts: &BackupOptions) -> Result<Start> {
    for s in &opts.sources {
        std::fs::symlink_metadata(&s.read).map_err(|e| Error::io(&s.read, e))?;
    }
    let paths: Vec<String> = opts
        .sources
        .iter()
        .map(|s| walk::clean_abs(&s.recorded).map(|p| p.to_string_lossy().into_owned()))
        .collect::<Result<_>>()?;
    let parent = match opts.parent {
        Some(id) => Some((id, repo.load_snapshot(&id)?)),
        None => find_parent(repo, &opts.host, &paths)?,
    };
    let parent_tree = match &parent {
        Some((_, s)) => Some(repo.load_tree(index, &s.tree)?),
        None => None,
    };
    let excludes = opts
        .excludes
        .iter()
        .map(|p| glob::Pattern::new(p).map_err(|e| Error::Usage(format!("bad --exclude pattern {p:?}: {e}"))))
        .collect::<Result<Vec<_>>>()?;
    let trie = walk::build_trie(&opts.sources)?;
    Ok(Start {
        paths,
        parent,
        parent_tree,
        excludes,
        trie,
    })
}

/// `pbak backup`: [`backup`] with the index loaded first (backups take no lock; the commit
/// check before the snapshot is written keeps them safe from a concurrent prune).
/// `parent`, when given, is a snapshot spec (`latest` or an id prefix).
pub fn run(repo: &Repository, opts: &BackupOptions, parent: Option<&str>, progress: &Progress) -> Result<BackupResult> {
    repo.require_writable_format()?;
    let index = repo.load_index()?;
    let mut opts = opts.clone();
    if let Some(spec) = parent {
        opts.parent = Some(repo.find_snapshot(spec)?.0);
    }
    backup(repo, &index, &opts, progress)
}

/// Run a backup of `opts.sources` into `repo` (the caller holds a lock).
pub fn backup(repo: &Repository, index: &Index, opts: &BackupOptions, progress: &Progress) -> Result<BackupResult> {
    let started = Instant::now();
    let st = start(repo, index, opts)?;
    let writer = WriterOptions {
        connections: opts.connections,
        dry_run: opts.dry_run,
        index_every: Some(INDEX_EVERY),
    };
    let ((root, stats, warnings), written) = repo.write_packs(&writer, |sink| {
        let walk_done = AtomicBool::new(false);
        std::thread::scope(|s| {
            if progress.want_totals.load(Relaxed) && opts.change_filter.is_none() {
                let roots = opts.sources.iter().map(|s| s.read.clone()).collect();
                let walk_done = &walk_done;
                s.spawn(move || walk::scan_totals(roots, progress, walk_done));
            }
            let ctx = Ctx {
                repo,
                compressors: compress::Compressors::new(repo.config().compression),
                index,
                opts,
                excludes: st.excludes.clone(),
                known: Mutex::new(HashSet::new()),
                sink,
                stats: Stats::default(),
                warnings: Mutex::new(Vec::new()),
                progress,
            };
            // One descriptor per directory the walk is inside: a deep tree needs many.
            crate::fs::source::raise_fd_limit();
            let root = crate::host::with_io_pool(|| match &st.trie {
                Trie::Leaf(read) => {
                    let dir = SourceDir::open_root(read).map_err(|e| Error::io(read, e))?;
                    ctx.archive_dir(&dir, Path::new("/"), st.parent_tree.as_ref(), walk::dev_of(read))
                }
                Trie::Inner(map) => ctx.archive_trie(map, Path::new("/"), st.parent_tree.as_ref()),
            });
            walk_done.store(true, Relaxed);
            Ok((root?, ctx.stats, ctx.warnings.into_inner().expect("lock")))
        })
    })?;
    let snapshot = new_snapshot(opts, &st, root, &stats, &warnings, started);
    let id = match opts.dry_run {
        true => None,
        false => {
            if commit::prune_ran(repo, index, &written.index_files)? {
                commit::verify(repo, &root)?;
            }
            Some(repo.save_snapshot(&snapshot)?)
        }
    };
    Ok(BackupResult {
        id,
        stored_bytes: index.stored_bytes() + snapshot.summary.bytes_added,
        snapshot,
        parent: st.parent.map(|p| p.0),
        warnings,
        index_files: written.index_files,
    })
}

/// The snapshot record of a finished walk. With the change filter the walk counted only what
/// it visited: totals are the parent's, minus what the walk replaced, plus what it counted.
fn new_snapshot(
    opts: &BackupOptions,
    st: &Start,
    root: TreeId,
    stats: &Stats,
    warnings: &[String],
    started: Instant,
) -> Snapshot {
    let now = chrono::Utc::now();
    let g = |a: &AtomicU64| a.load(Relaxed);
    let filtered = opts.change_filter.is_some() && st.parent.is_some();
    let (total_files, total_bytes, dirs) = match &st.parent {
        Some((_, p)) if filtered => {
            let t = |prev: u64, walked: &AtomicU64, removed: &AtomicU64| (prev + g(walked)).saturating_sub(g(removed));
            let ps = &p.summary;
            (
                t(ps.total_files, &stats.total_files, &stats.removed_files),
                t(ps.total_bytes, &stats.total_bytes, &stats.removed_bytes),
                t(ps.dirs, &stats.dirs, &stats.removed_dirs),
            )
        }
        _ => (g(&stats.total_files), g(&stats.total_bytes), g(&stats.dirs)),
    };
    let files_unmodified = match filtered {
        true => total_files.saturating_sub(g(&stats.files_new) + g(&stats.files_changed)),
        false => g(&stats.files_unmodified),
    };
    Snapshot {
        time: Time {
            sec: now.timestamp(),
            nsec: now.timestamp_subsec_nanos(),
        },
        host: opts.host.clone(),
        user: crate::host::host_user().1,
        paths: st.paths.clone(),
        tags: opts.tags.clone(),
        tree: root,
        parent: st.parent.as_ref().map(|p| p.0),
        btrfs: opts.btrfs.clone(),
        summary: Summary {
            files_new: g(&stats.files_new),
            files_changed: g(&stats.files_changed),
            files_unmodified,
            dirs,
            total_files,
            total_bytes,
            bytes_read: g(&stats.bytes_read),
            blobs_added: g(&stats.blobs_added),
            bytes_added: g(&stats.bytes_added),
            duration_ms: started.elapsed().as_millis() as u64,
            errors: warnings.len() as u64,
            change_detection: match filtered {
                true => ChangeDetection::BtrfsGeneration,
                false => ChangeDetection::MetadataScan,
            },
        },
        partial: !warnings.is_empty(),
        program_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}
