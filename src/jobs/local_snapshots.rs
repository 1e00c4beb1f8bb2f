//! pbak's local read-only snapshots of a subvolume: where they live, how they are named
//! (`<label>.<UTC time>`), and their retention by keep rules.
//!
//! Invariant: retention never deletes the protected snapshot, the one the newest repository
//! snapshot of the subvolume was read from (the next snapshot-backup's change-detection
//! base), whatever the rules say.

use crate::btrfs;
use crate::error::{Error, Result};
use crate::ops::forget::retention::{keep, KeepRules};
use crate::repo::Repository;
use chrono::{DateTime, NaiveDateTime, Utc};
use std::path::{Path, PathBuf};

pub const DEFAULT_SNAPSHOT_DIR: &str = ".pbak-snapshots";
pub(crate) const TIME_FORMAT: &str = "%Y-%m-%dT%H%M%SZ";

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
    let mut out: Vec<(LocalSnapshot, u32)> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let stamp = name.strip_prefix(&prefix)?;
            // A second snapshot within the same second gets `-N` after the time.
            let (stamp, n) = match stamp.split_once("Z-") {
                Some((t, n)) => (format!("{t}Z"), n.parse::<u32>().ok()?),
                None => (stamp.to_string(), 0),
            };
            let time = NaiveDateTime::parse_from_str(&stamp, TIME_FORMAT).ok()?.and_utc();
            Some((LocalSnapshot { path: e.path(), time }, n))
        })
        .collect();
    out.sort_by_key(|(s, n)| (s.time, *n));
    Ok(out.into_iter().map(|(s, _)| s).collect())
}

/// Take a read-only snapshot of `subvol` in `dir`, named `<label>.<UTC time>` (with `-1`,
/// `-2`, … when one of that second exists already).
pub fn take(subvol: &Path, dir: &Path) -> Result<PathBuf> {
    let stamp = format!("{}.{}", subvolume_label(subvol), Utc::now().format(TIME_FORMAT));
    let mut n = 0;
    loop {
        let name = match n {
            0 => stamp.clone(),
            n => format!("{stamp}-{n}"),
        };
        match btrfs::create_snapshot(subvol, dir, std::ffi::OsStr::new(&name), true) {
            Err(btrfs::BtrfsError::AlreadyExists { .. }) if n < 99 => n += 1,
            r => return Ok(r?),
        }
    }
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

/// The local snapshot the newest repository snapshot of `subvol` was read from, if any.
pub fn protected_snapshot(repo: &Repository, subvol: &Path) -> Result<Option<PathBuf>> {
    let uuid = btrfs::subvolume_info(subvol)?.uuid;
    Ok(repo.snapshots()?.into_iter().rev().find_map(|(_, s)| {
        s.btrfs
            .filter(|b| b.subvol_uuid == uuid)
            .map(|b| PathBuf::from(b.snapshot_path))
    }))
}

/// Apply `rules` to the snapshots of `subvol` in `dir`, never deleting `protected`. Each
/// snapshot is passed to `each` right after it is deleted (with `dry_run`, instead of being
/// deleted); returns their paths, oldest first.
pub fn apply_retention(
    subvol: &Path,
    dir: &Path,
    rules: &KeepRules,
    protected: Option<&Path>,
    dry_run: bool,
    each: &mut dyn FnMut(&Path),
) -> Result<Vec<PathBuf>> {
    let mut gone = Vec::new();
    for s in plan_prune(&list_local(subvol, dir)?, rules, protected) {
        if !dry_run {
            btrfs::delete_subvolume(&s.path)?;
        }
        each(&s.path);
        gone.push(s.path);
    }
    Ok(gone)
}

/// `btrfs prune`: retention of `subvol`'s local snapshots (in `configured` or the default
/// directory), protecting the one `repo`'s newest snapshot of it was read from.
pub fn prune(
    repo: &Repository,
    subvol: &Path,
    configured: Option<&Path>,
    rules: &KeepRules,
    dry_run: bool,
    each: &mut dyn FnMut(&Path),
) -> Result<Vec<PathBuf>> {
    let protected = protected_snapshot(repo, subvol)?;
    let dir = snapshot_dir(subvol, configured);
    apply_retention(subvol, &dir, rules, protected.as_deref(), dry_run, each)
}
