//! `snapshot-backup`: take a read-only Btrfs snapshot of a subvolume, back up its contents
//! recorded under the subvolume's own path, then apply local snapshot retention.
//!
//! Invariants: the snapshot that the newest repository snapshot of a subvolume was made from
//! is never deleted by retention (it is the next run's change-detection base); a snapshot
//! made for a backup that failed is deleted again, so failures do not pile up snapshots.

use crate::btrfs;
use crate::error::{Error, Result};
use crate::repo::archiver::{self, BackupOptions, BackupResult, Progress, Source};
use crate::repo::index::Index;
use crate::repo::retention::{keep, KeepRules};
use crate::repo::snapshot::BtrfsOrigin;
use crate::repo::Repository;
use chrono::{DateTime, NaiveDateTime, Utc};
use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub const DEFAULT_SNAPSHOT_DIR: &str = ".pbak-snapshots";
const TIME_FORMAT: &str = "%Y-%m-%dT%H%M%SZ";

/// A local read-only snapshot made by pbak.
#[derive(Clone, Debug)]
pub struct LocalSnapshot {
    pub path: PathBuf,
    pub time: DateTime<Utc>,
}

/// `home` for `/home`, `root` for `/`.
pub fn subvolume_label(subvol: &Path) -> String {
    subvol
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "root".into())
}

pub fn snapshot_dir(subvol: &Path, configured: Option<&Path>) -> PathBuf {
    match configured {
        Some(d) if d.is_absolute() => d.to_path_buf(),
        Some(d) => subvol.join(d),
        None => subvol.join(DEFAULT_SNAPSHOT_DIR),
    }
}

/// pbak's snapshots of `subvol` in `dir`, oldest first.
pub fn list_local(subvol: &Path, dir: &Path) -> Result<Vec<LocalSnapshot>> {
    let prefix = format!("{}.", subvolume_label(subvol));
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut out: Vec<LocalSnapshot> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let stamp = name.strip_prefix(&prefix)?;
            let time = NaiveDateTime::parse_from_str(stamp, TIME_FORMAT).ok()?.and_utc();
            Some(LocalSnapshot { path: e.path(), time })
        })
        .collect();
    out.sort_by_key(|s| s.time);
    Ok(out)
}

/// Which local snapshots the rules would delete; `protected` is never among them.
pub fn plan_prune(local: &[LocalSnapshot], rules: &KeepRules, protected: Option<&Path>) -> Vec<LocalSnapshot> {
    let times: Vec<_> = local.iter().map(|s| s.time).collect();
    keep(&times, rules)
        .into_iter()
        .zip(local)
        .filter(|(k, s)| !k && Some(s.path.as_path()) != protected)
        .map(|(_, s)| s.clone())
        .collect()
}

pub struct SnapshotBackupOptions {
    pub subvolume: PathBuf,
    pub snapshot_dir: Option<PathBuf>,
    /// Template for everything but sources and Btrfs origin.
    pub backup: BackupOptions,
    pub keep: KeepRules,
}

pub struct SnapshotBackupResult {
    pub backup: BackupResult,
    pub local_snapshot: PathBuf,
    pub pruned: Vec<PathBuf>,
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
    let name = format!("{}.{}", subvolume_label(&subvol), Utc::now().format(TIME_FORMAT));
    let snap = btrfs::create_snapshot(&subvol, &dir, OsStr::new(&name), true)?;
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
    });
    let backup = match archiver::backup(repo, index, &b, progress) {
        Ok(r) => r,
        Err(e) => {
            let _ = btrfs::delete_subvolume(&snap);
            return Err(e);
        }
    };
    let mut pruned = Vec::new();
    if !opts.keep.is_empty() && !b.dry_run {
        let local = list_local(&subvol, &dir)?;
        for s in plan_prune(&local, &opts.keep, Some(&snap)) {
            btrfs::delete_subvolume(&s.path)?;
            pruned.push(s.path);
        }
    }
    if b.dry_run {
        btrfs::delete_subvolume(&snap)?;
    }
    Ok(SnapshotBackupResult {
        backup,
        local_snapshot: snap,
        pruned,
    })
}

/// The local snapshot the newest repository snapshot of `subvol` was read from, if any.
pub fn protected_snapshot(repo: &Repository, subvol: &Path) -> Result<Option<PathBuf>> {
    let uuid = btrfs::subvolume_info(subvol)?.uuid;
    Ok(repo.snapshots()?.into_iter().rev().find_map(|(_, s)| {
        s.btrfs
            .filter(|b| b.subvol_uuid == uuid)
            .map(|b| PathBuf::from(b.snapshot_path))
    }))
}
