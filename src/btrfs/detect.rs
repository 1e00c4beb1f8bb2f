//! Change detection from Btrfs generations: which inodes of a subvolume changed since a
//! transaction, and the paths of inodes.
//!
//! Invariants:
//! - [`changed_inodes_since`] over-reports, never under-reports, the inodes changed since the
//!   given generation (the limits are listed on it); deletions show only as changed directories.
//! - A path list is complete or an error: an inode with more names than the kernel's largest
//!   reply holds is reported as an error, never as a short list.

use super::search::{bad_item, cstr_bytes, le16, le32, le64, tree_search};
use super::sys::{
    self, SearchKey, DIR_INDEX_KEY, DIR_ITEM_KEY, EXTENT_DATA_KEY, INODE_ITEM_KEY, LAST_FREE_OBJECTID, SUBVOL_ROOT_INO,
    XATTR_ITEM_KEY,
};
use super::{err, open_subvol_root, Result};
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Inodes changed in a subvolume since a generation; see [`changed_inodes_since`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangedSet {
    /// Every inode (of this subvolume) with a detected change of any kind.
    pub inodes: BTreeSet<u64>,
    /// Directories whose entries may have changed (entry added, removed, renamed), including new
    /// directories and directories whose own inode item changed. A subset of `inodes`.
    pub dirs: BTreeSet<u64>,
}

impl ChangedSet {
    pub fn contains(&self, ino: u64) -> bool {
        self.inodes.contains(&ino)
    }
}

/// Inodes of the subvolume rooted at `subvol_path` that changed in transactions
/// `>= min_generation` (inclusive, like `btrfs subvolume find-new`). For changes made after a
/// snapshot `s` was taken, pass `subvolume_info(s).otransid + 1` (its creation transaction, which
/// never moves; `generation` does if the snapshot is modified later). Passing less over-reports.
/// Needs CAP_SYS_ADMIN (BTRFS_IOC_TREE_SEARCH_V2 with tree_id 0 = the fd's subvolume).
///
/// The search skips whole tree blocks older than `min_generation`, then filters each item on
/// its *own* transaction field (block generations alone would flag every neighbour in a leaf):
/// - INODE_ITEM `transid` (rewritten on every inode update: data writes via mtime/size, chmod,
///   chown, utimes, link count, xattr ctime, truncate, NOCOW in-place overwrites) → `inodes`;
///   directories also → `dirs` (adding or removing an entry updates the directory's inode).
/// - EXTENT_DATA `generation` (new or rewritten data extents) → `inodes`.
/// - XATTR_ITEM entry `transid` → `inodes`.
/// - DIR_ITEM/DIR_INDEX entry `transid` (entries created by create/link/rename) → the directory
///   into `dirs` and `inodes`, and the entry's target inode into `inodes` (new name).
///   INODE_REF/EXTREF carry no transid and are not used; the matching DIR_INDEX covers them.
///
/// Misses / limits:
/// - Deleted inodes are not reported (their items are gone); their former parent directories
///   are. Deletions and old names of renames must be found by re-listing `dirs` against the
///   previous backup's index.
/// - Only this subvolume's tree: nested subvolumes are separate trees (their creation/removal
///   shows as an entry change of the containing directory; their target is not reported).
/// - On a live subvolume, changes still in the running transaction (delayed inode and dir-index
///   updates) are invisible: scan a read-only snapshot, or [`sync_filesystem`](super::sync_filesystem) first.
/// - Generations are per filesystem: a generation from another filesystem (e.g. a received
///   copy) is meaningless here.
/// - Over-reports (never under-reports) on inode updates without content change: atime updates
///   (use `noatime`/`relatime`), touching with the same values, defragmentation, and all items of
///   transaction `min_generation` itself.
pub fn changed_inodes_since(subvol_path: &Path, min_generation: u64) -> Result<ChangedSet> {
    Ok(changed_inodes_at_most(subvol_path, min_generation, usize::MAX)?.expect("no limit"))
}

/// [`changed_inodes_since`], or `None` as soon as more than `max` inodes changed: the search
/// stops there (on a tree that changed almost entirely it would cost as much as a scan).
pub fn changed_inodes_at_most(subvol_path: &Path, min_generation: u64, max: usize) -> Result<Option<ChangedSet>> {
    let f = open_subvol_root(subvol_path)?;
    let key = SearchKey {
        tree_id: 0,
        min_objectid: SUBVOL_ROOT_INO,
        max_objectid: LAST_FREE_OBJECTID,
        max_type: 255,
        max_offset: u64::MAX,
        min_transid: min_generation,
        max_transid: u64::MAX,
        ..sys::zeroed()
    };
    let mut cs = ChangedSet::default();
    let mut over = false;
    let r = tree_search(&f, key, |it| {
        let d = it.data;
        match it.kind {
            INODE_ITEM_KEY if le64(d, 8)? >= min_generation => {
                cs.inodes.insert(it.objectid);
                if le32(d, 52)? & libc::S_IFMT == libc::S_IFDIR {
                    cs.dirs.insert(it.objectid);
                }
            }
            EXTENT_DATA_KEY if le64(d, 0)? >= min_generation => {
                cs.inodes.insert(it.objectid);
            }
            XATTR_ITEM_KEY | DIR_ITEM_KEY | DIR_INDEX_KEY => {
                // One item may hold several btrfs_dir_item entries (name hash collisions):
                // location key (17 bytes), transid @17, data_len @25, name_len @27, type @29.
                let mut at = 0;
                while at < d.len() {
                    if le64(d, at + 17)? >= min_generation {
                        cs.inodes.insert(it.objectid);
                        if it.kind != XATTR_ITEM_KEY {
                            cs.dirs.insert(it.objectid);
                            if *d.get(at + 8).ok_or_else(bad_item)? as u32 == INODE_ITEM_KEY {
                                cs.inodes.insert(le64(d, at)?);
                            }
                        }
                    }
                    at += 30 + le16(d, at + 27)? + le16(d, at + 25)?;
                }
            }
            _ => {}
        }
        if cs.inodes.len() > max {
            over = true;
            return Err(io::Error::other("more changed inodes than asked for"));
        }
        Ok(())
    });
    match r {
        _ if over => Ok(None),
        Err(e) => Err(err("search changed inodes in", subvol_path, e)),
        Ok(()) => Ok(Some(cs)),
    }
}

/// All paths of inode `ino` in the subvolume rooted at `subvol_path`, joined onto `subvol_path`
/// (BTRFS_IOC_INO_PATHS, needs CAP_SYS_ADMIN). An inode with more names than fit the kernel's
/// 64 KiB reply is an error rather than a silently short list.
pub fn inode_paths(subvol_path: &Path, ino: u64) -> Result<Vec<PathBuf>> {
    let f = open_subvol_root(subvol_path)?;
    ino_paths(&f, subvol_path, ino).map_err(|e| err("resolve inode paths in", subvol_path, e))
}

/// [`inode_paths`] of many inodes on one descriptor, all paths together. Inodes without a
/// name (the subvolume root, files deleted while still open) contribute nothing.
pub fn inodes_paths(subvol_path: &Path, inos: impl IntoIterator<Item = u64>) -> Result<Vec<PathBuf>> {
    let f = open_subvol_root(subvol_path)?;
    let mut out = Vec::new();
    for ino in inos.into_iter().filter(|&i| i != SUBVOL_ROOT_INO) {
        match ino_paths(&f, subvol_path, ino) {
            Ok(p) => out.extend(p),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(err("resolve inode paths in", subvol_path, e)),
        }
    }
    Ok(out)
}

fn ino_paths(f: &File, subvol_path: &Path, ino: u64) -> io::Result<Vec<PathBuf>> {
    for size in [4096usize, 65536] {
        let mut buf = vec![0u64; size / 8];
        sys::ino_paths_into(f, ino, &mut buf)?;
        // btrfs_data_container: bytes_left, bytes_missing, elem_cnt, elem_missed (u32 each),
        // then val[elem_cnt] = offsets from &val[0].
        let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let word = |i: usize| u32::from_ne_bytes(bytes[i * 4..i * 4 + 4].try_into().unwrap()) as usize;
        if word(3) > 0 {
            continue;
        }
        let vals = &bytes[16..];
        return (0..word(2).min(vals.len() / 8))
            .map(|i| {
                let off = u64::from_ne_bytes(vals[i * 8..i * 8 + 8].try_into().unwrap()) as usize;
                let s = vals.get(off..).map(cstr_bytes).ok_or_else(bad_item)?;
                Ok(subvol_path.join(OsStr::from_bytes(s)))
            })
            .collect();
    }
    Err(io::Error::other(format!(
        "inode {ino} has more names than one 64 KiB reply holds"
    )))
}
