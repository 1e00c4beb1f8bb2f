//! `snapshot-backup`: take a read-only Btrfs snapshot of a subvolume, back up its contents
//! recorded under the subvolume's own path, then apply local snapshot retention.
//!
//! Change detection: when the parent repository snapshot was made by snapshot-backup from a
//! local snapshot of the same subvolume that still exists unchanged (read-only, same creation
//! generation), with the same walk options, the filesystem tells which inodes changed between
//! that snapshot and the new one (tree search over newer items) and the archiver looks only
//! at their paths and their ancestors; otherwise it compares the metadata of every entry,
//! and the result says why.
//!
//! Invariants: the snapshot that the newest repository snapshot of a subvolume was made from
//! is never deleted by retention (it is the next run's change-detection base); a snapshot
//! made for a backup that failed is deleted again, so failures do not pile up snapshots.

use super::local_snapshots::{apply_retention, snapshot_dir};
use crate::btrfs;
use crate::error::{Error, Result};
use crate::format::snapshot::BtrfsOrigin;
use crate::ops::backup::change_filter::ChangeFilter;
use crate::ops::backup::{self as archiver, BackupOptions, BackupResult, Progress, Source};
use crate::ops::forget::retention::KeepRules;
use crate::repo::index::Index;
use crate::repo::Repository;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct SnapshotBackupOptions {
    pub subvolume: PathBuf,
    pub snapshot_dir: Option<PathBuf>,
    /// Template for everything but sources and Btrfs origin.
    pub backup: BackupOptions,
    pub keep: KeepRules,
    /// Compare every entry's metadata even when filesystem change detection could be used.
    pub full_scan: bool,
}

pub struct SnapshotBackupResult {
    pub backup: BackupResult,
    /// Why filesystem change detection was not used (not set with `full_scan`).
    pub fallback: Option<String>,
    pub local_snapshot: PathBuf,
    pub pruned: Vec<PathBuf>,
}

/// snapshot-backup over several subvolumes ([`run_all`]); the fields are those of
/// [`SnapshotBackupOptions`], shared by every subvolume.
pub struct SnapshotBackupJob {
    pub subvolumes: Vec<PathBuf>,
    pub snapshot_dir: Option<PathBuf>,
    pub backup: BackupOptions,
    pub keep: KeepRules,
    pub full_scan: bool,
}

/// How one subvolume of a [`run_all`] ended.
pub struct SubvolumeOutcome {
    pub subvolume: PathBuf,
    pub result: Result<SnapshotBackupResult>,
}

/// One subvolume's backup, as [`run_all`] hands it to its caller to run.
pub type Work<'a> = dyn FnMut() -> Result<SnapshotBackupResult> + 'a;

/// Back up each subvolume on its own, in order, under one shared lock: a subvolume that fails
/// is reported in its outcome and the others still run. `during` runs each subvolume's work
/// (and may show its `progress` meanwhile); `done` sees each outcome as soon as it is known.
/// Only failing to take the lock or to load the index stops the whole run.
pub fn run_all(
    repo: &Repository,
    job: &SnapshotBackupJob,
    during: &dyn Fn(&Progress, &mut Work) -> Result<SnapshotBackupResult>,
    done: &mut dyn FnMut(&SubvolumeOutcome),
) -> Result<Vec<SubvolumeOutcome>> {
    repo.require_writable_format()?;
    let mut outcomes = Vec::new();
    for sv in &job.subvolumes {
        // Reload: the previous subvolume's packs are now indexed.
        let index = repo.load_index()?;
        let opts = SnapshotBackupOptions {
            subvolume: sv.clone(),
            snapshot_dir: job.snapshot_dir.clone(),
            backup: job.backup.clone(),
            keep: job.keep.clone(),
            full_scan: job.full_scan,
        };
        let progress = Progress::default();
        let result = during(&progress, &mut || run(repo, &index, &opts, &progress));
        let outcome = SubvolumeOutcome {
            subvolume: sv.clone(),
            result,
        };
        done(&outcome);
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// Snapshot, back up, retain. The subvolume must be a Btrfs subvolume root.
pub fn run(
    repo: &Repository,
    index: &Index,
    opts: &SnapshotBackupOptions,
    progress: &Progress,
) -> Result<SnapshotBackupResult> {
    let subvol = std::path::absolute(&opts.subvolume).map_err(|e| Error::io(&opts.subvolume, e))?;
    if !btrfs::is_subvolume_root(&subvol)? {
        // Let the btrfs layer name the containing subvolume.
        btrfs::subvolume_info(&subvol)?;
        return Err(Error::Usage(format!(
            "{} is not a Btrfs subvolume root",
            subvol.display()
        )));
    }
    let info = btrfs::subvolume_info(&subvol)?;
    let dir = snapshot_dir(&subvol, opts.snapshot_dir.as_deref());
    if !dir.exists() {
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(|e| Error::io(&dir, e))?;
    }
    let snap = super::local_snapshots::take(&subvol, &dir)?;
    let snap_info = btrfs::subvolume_info(&snap)?;

    let mut b = opts.backup.clone();
    b.sources = vec![Source {
        recorded: subvol.clone(),
        read: snap.clone(),
    }];
    b.readonly_source = true;
    // Every snapshot has its own st_dev; record the subvolume's so unchanged trees stay identical.
    b.device_override = Some(std::fs::metadata(&subvol).map_err(|e| Error::io(&subvol, e))?.dev());
    if dir.starts_with(&subvol) {
        b.excludes.push(dir.to_string_lossy().into_owned());
    }
    b.btrfs = Some(BtrfsOrigin {
        subvol_uuid: info.uuid,
        generation: snap_info.otransid,
        snapshot_path: snap.to_string_lossy().into_owned(),
        options_digest: options_digest(&b),
    });
    let mut fallback = None;
    if !opts.full_scan {
        match change_filter(repo, &b, &subvol, &snap) {
            Ok((parent, filter)) => {
                b.parent = Some(parent);
                b.change_filter = Some(Arc::new(filter));
            }
            Err(why) => fallback = Some(why),
        }
    }
    let backup = match archiver::backup(repo, index, &b, progress) {
        Ok(r) => r,
        Err(e) => {
            let _ = btrfs::delete_subvolume(&snap);
            return Err(e);
        }
    };
    let mut pruned = Vec::new();
    if !opts.keep.is_empty() && !b.dry_run {
        pruned = apply_retention(&subvol, &dir, &opts.keep, Some(&snap), false, &mut |_| {})?;
    }
    if b.dry_run {
        btrfs::delete_subvolume(&snap)?;
    }
    Ok(SnapshotBackupResult {
        backup,
        fallback,
        local_snapshot: snap,
        pruned,
    })
}

/// Digest of the options that shape a snapshot's tree besides the files themselves.
fn options_digest(b: &BackupOptions) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    let mut ex: Vec<&String> = b.excludes.iter().collect();
    ex.sort();
    for e in ex {
        h.update(&(e.len() as u64).to_le_bytes()).update(e.as_bytes());
    }
    h.update(&[u8::from(b.exclude_caches), u8::from(b.one_file_system)]);
    h.update(&b.device_override.unwrap_or(0).to_le_bytes());
    *h.finalize().as_bytes()
}

/// Change detection resolves every changed inode's names (one ioctl each) and lists their
/// directories again; past this share of the parent's files and directories (in 1/1000) the
/// metadata scan is faster, and the search for changes stops as soon as it is passed.
/// `benches/btrfs-detect.sh` on the kernel tree (86,630 files): before the cut-over 10,000
/// changed files took 0.98x of the scan's time and 86,000 new ones 1.55x; with it 0.99x (the
/// scan) and the scan's time plus the stopped search.
const MAX_CHANGED_PER_MILLE: u64 = 80;
/// Below this many changed inodes detection is used whatever the share (it costs milliseconds).
const MIN_CUTOVER: u64 = 2000;

/// The parent repository snapshot and the change filter from its local snapshot to `snap`,
/// or one line saying why change detection cannot be used this time.
fn change_filter(
    repo: &Repository,
    b: &BackupOptions,
    subvol: &Path,
    snap: &Path,
) -> std::result::Result<(crate::ids::SnapshotId, ChangeFilter), String> {
    let path = archiver::clean_abs(subvol)
        .map_err(|e| e.to_string())?
        .to_string_lossy()
        .into_owned();
    let (id, parent) = archiver::find_parent(repo, &b.host, &[path])
        .map_err(|e| format!("cannot look for a parent snapshot: {e}"))?
        .ok_or("no earlier snapshot of this subvolume in the repository")?;
    let short = id.short();
    let origin = parent
        .btrfs
        .as_ref()
        .ok_or_else(|| format!("parent snapshot {short} was not made by snapshot-backup"))?;
    let mine = b.btrfs.as_ref().expect("origin set before change detection");
    if parent.partial {
        return Err(format!(
            "parent snapshot {short} is partial (some files could not be read)"
        ));
    }
    if origin.subvol_uuid != mine.subvol_uuid {
        return Err(format!(
            "parent snapshot {short} is of another subvolume (uuid {})",
            btrfs::uuid_string(&origin.subvol_uuid)
        ));
    }
    if origin.options_digest != mine.options_digest {
        return Err(format!(
            "exclude options or the subvolume's device number differ from parent snapshot {short}'s"
        ));
    }
    let base = Path::new(&origin.snapshot_path);
    let gone = |e: btrfs::BtrfsError| format!("the local snapshot of parent {short} is gone ({e})");
    let info = btrfs::subvolume_info(base).map_err(gone)?;
    if !info.readonly || info.parent_uuid != mine.subvol_uuid || info.otransid != origin.generation {
        return Err(format!(
            "{} is no longer the read-only snapshot parent {short} was made from",
            base.display()
        ));
    }
    let search = |e: btrfs::BtrfsError| format!("cannot ask Btrfs what changed: {e}");
    let entries = parent.summary.total_files + parent.summary.dirs;
    let limit = MIN_CUTOVER.max(MAX_CHANGED_PER_MILLE * entries / 1000);
    let changed = btrfs::changed_inodes_at_most(snap, origin.generation + 1, limit as usize)
        .map_err(search)?
        .ok_or_else(|| {
            format!(
                "more than {limit} inodes changed since parent snapshot {short}, over {}% of its {entries} files \
                 and directories (the scan is faster then)",
                MAX_CHANGED_PER_MILLE / 10
            )
        })?;
    let paths = btrfs::inodes_paths(snap, changed.inodes.iter().copied()).map_err(search)?;
    Ok((id, ChangeFilter::new(snap.to_path_buf(), changed.inodes, paths)))
}
