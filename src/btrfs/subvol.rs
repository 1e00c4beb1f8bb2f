//! Subvolume operations: test, snapshot, delete, inspect, list, flags, sync.
//!
//! Invariants:
//! - Every operation on one subvolume (snapshot source, delete, info, read-only flag) opens its
//!   root directory (inode 256) through `open_subvol_root` and fails with `NotSubvolumeRoot`
//!   otherwise; nothing silently acts on the subvolume that merely contains a path.
//! - Names given to the kernel are single path components of 1-255 bytes (checked before any
//!   ioctl), so they always fit the fixed name fields with a terminating NUL.
//! - A snapshot lands on its source's filesystem or not at all (`CrossFilesystem`); an existing
//!   destination is never replaced.

use super::search::{bad_item, cstr_bytes, ino_lookup, le16, le64, tree_search};
use super::sys::{
    self, ioctl, zeroed, GetSubvolInfoArgs, IoctlTimespec, SearchKey, VolArgs, VolArgsV2, BTRFS_SUPER_MAGIC,
    FS_IOC_GETFLAGS, FS_NOCOW_FL, FS_TREE_OBJECTID, IOC_GET_SUBVOL_INFO, IOC_SNAP_CREATE_V2, IOC_SNAP_DESTROY,
    IOC_SUBVOL_GETFLAGS, IOC_SUBVOL_SETFLAGS, LAST_FREE_OBJECTID, ROOT_BACKREF_KEY, ROOT_SUBVOL_RDONLY,
    ROOT_TREE_OBJECTID, SUBVOL_RDONLY, SUBVOL_ROOT_INO,
};
use super::{err, open_btrfs, open_subvol_root, BtrfsError, Result};
use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn check_name(name: &OsStr) -> Result<()> {
    let b = name.as_bytes();
    if b.is_empty() || b.len() > 255 || b == b"." || b == b".." || b.contains(&b'/') || b.contains(&0) {
        return Err(BtrfsError::InvalidName { name: name.into() });
    }
    Ok(())
}

/// True if `path` lies on a Btrfs filesystem (statfs f_type == BTRFS_SUPER_MAGIC).
pub fn is_btrfs(path: &Path) -> Result<bool> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| err("statfs", path, io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    let magic = sys::path_fs_magic(&c).map_err(|e| err("statfs", path, e))?;
    Ok(magic == BTRFS_SUPER_MAGIC)
}

/// True if `path` is the root directory of a subvolume (inode 256). `NotBtrfs` off Btrfs.
pub fn is_subvolume_root(path: &Path) -> Result<bool> {
    match open_subvol_root(path) {
        Ok(_) => Ok(true),
        Err(BtrfsError::NotSubvolumeRoot { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Snapshots `source_subvol` to `dest_dir/name` (BTRFS_IOC_SNAP_CREATE_V2) and returns that path.
/// The snapshot is committed to disk when this returns.
pub fn create_snapshot(source_subvol: &Path, dest_dir: &Path, name: &OsStr, readonly: bool) -> Result<PathBuf> {
    check_name(name)?;
    let src = open_subvol_root(source_subvol)?;
    let cross = || BtrfsError::CrossFilesystem {
        source_path: source_subvol.into(),
        dest_dir: dest_dir.into(),
    };
    let dst = match open_btrfs(dest_dir, true) {
        Err(BtrfsError::NotBtrfs { .. }) => return Err(cross()),
        r => r?,
    };
    let dest = dest_dir.join(name);
    if dest.symlink_metadata().is_ok() {
        return Err(BtrfsError::AlreadyExists { path: dest });
    }
    let mut a: VolArgsV2 = zeroed();
    a.fd = i64::from(src.as_raw_fd());
    a.flags = if readonly { SUBVOL_RDONLY } else { 0 };
    a.name[..name.len()].copy_from_slice(name.as_bytes());
    ioctl(&dst, IOC_SNAP_CREATE_V2, &mut a).map_err(|e| match e.raw_os_error() {
        Some(libc::EXDEV) => cross(),
        _ => err("create snapshot", &dest, e),
    })?;
    Ok(dest)
}

/// Deletes the subvolume or snapshot rooted at `path` (BTRFS_IOC_SNAP_DESTROY on its parent).
/// A final symlink is not followed. Space is reclaimed asynchronously by the kernel.
pub fn delete_subvolume(path: &Path) -> Result<()> {
    let path = match path.file_name() {
        Some(_) => path.to_path_buf(),
        None => fs::canonicalize(path).map_err(|e| err("resolve", path, e))?,
    };
    let name = path.file_name().ok_or_else(|| BtrfsError::InvalidName {
        name: path.clone().into(),
    })?;
    check_name(name)?;
    let md = fs::symlink_metadata(&path).map_err(|e| err("stat", &path, e))?;
    if md.file_type().is_symlink() {
        return Err(BtrfsError::NotSubvolumeRoot {
            path,
            ino: md.ino(),
            containing_id: None,
            containing_path: None,
        });
    }
    drop(open_subvol_root(&path)?);
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = open_btrfs(parent, true)?;
    let mut a: VolArgs = zeroed();
    a.name[..name.len()].copy_from_slice(name.as_bytes());
    ioctl(&dir, IOC_SNAP_DESTROY, &mut a).map_err(|e| err("delete subvolume", &path, e))
}

/// What GET_SUBVOL_INFO reports. All-zero UUIDs mean "none".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubvolInfo {
    /// Subvolume (tree) id; 5 is the top-level subvolume.
    pub id: u64,
    pub name: OsString,
    /// Id of the subvolume containing this one (0 for the top level).
    pub parent_id: u64,
    /// Inode number, inside `parent_id`, of the directory holding this subvolume.
    pub dirid: u64,
    /// Last transaction that changed this subvolume's tree.
    pub generation: u64,
    pub ctransid: u64,
    pub otransid: u64,
    /// Root item flags; bit [`ROOT_SUBVOL_RDONLY`] (1 << 0) is read-only.
    pub flags: u64,
    pub readonly: bool,
    pub uuid: [u8; 16],
    /// UUID of the snapshot's source subvolume.
    pub parent_uuid: [u8; 16],
    pub received_uuid: [u8; 16],
    pub ctime: SystemTime,
    pub otime: SystemTime,
}

/// Information about the subvolume rooted at `path` (unprivileged, kernel >= 4.18).
pub fn subvolume_info(path: &Path) -> Result<SubvolInfo> {
    let f = open_subvol_root(path)?;
    let mut a: GetSubvolInfoArgs = zeroed();
    ioctl(&f, IOC_GET_SUBVOL_INFO, &mut a).map_err(|e| err("get subvolume info of", path, e))?;
    let time = |t: &IoctlTimespec| UNIX_EPOCH + Duration::new(t.sec, t.nsec);
    Ok(SubvolInfo {
        id: a.treeid,
        name: OsString::from_vec(cstr_bytes(&a.name).to_vec()),
        parent_id: a.parent_id,
        dirid: a.dirid,
        generation: a.generation,
        ctransid: a.ctransid,
        otransid: a.otransid,
        flags: a.flags,
        readonly: a.flags & ROOT_SUBVOL_RDONLY != 0,
        uuid: a.uuid,
        parent_uuid: a.parent_uuid,
        received_uuid: a.received_uuid,
        ctime: time(&a.ctime),
        otime: time(&a.otime),
    })
}

/// Formats a UUID as 8-4-4-4-12 lowercase hex.
pub fn uuid_string(u: &[u8; 16]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// Whether the subvolume rooted at `path` is read-only (BTRFS_IOC_SUBVOL_GETFLAGS).
pub fn is_readonly(path: &Path) -> Result<bool> {
    let f = open_subvol_root(path)?;
    let mut flags = 0u64;
    ioctl(&f, IOC_SUBVOL_GETFLAGS, &mut flags).map_err(|e| err("get flags of", path, e))?;
    Ok(flags & SUBVOL_RDONLY != 0)
}

/// Makes the subvolume rooted at `path` read-only or writable (BTRFS_IOC_SUBVOL_SETFLAGS).
/// Making a received snapshot writable makes the kernel drop its received UUID.
pub fn set_readonly(path: &Path, readonly: bool) -> Result<()> {
    let f = open_subvol_root(path)?;
    let mut flags = if readonly { SUBVOL_RDONLY } else { 0 };
    ioctl(&f, IOC_SUBVOL_SETFLAGS, &mut flags).map_err(|e| err("set flags of", path, e))
}

/// Whether `path` (file or directory on Btrfs) has the No_COW attribute (`chattr +C`).
pub fn is_nocow(path: &Path) -> Result<bool> {
    let f = open_btrfs(path, false)?;
    // The kernel writes a 4-byte int at the start of this 8-byte buffer.
    let mut flags = 0u64;
    ioctl(&f, FS_IOC_GETFLAGS, &mut flags).map_err(|e| err("get inode flags of", path, e))?;
    let int = flags.to_ne_bytes()[..4].try_into().expect("4 bytes");
    Ok(u32::from_ne_bytes(int) & FS_NOCOW_FL != 0)
}

/// Commits the current transaction of the filesystem holding `path` (BTRFS_IOC_SYNC).
pub fn sync_filesystem(path: &Path) -> Result<()> {
    let f = open_btrfs(path, false)?;
    sys::sync(&f).map_err(|e| err("sync", path, e))
}

/// A subvolume found by [`list_subvolumes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubvolEntry {
    pub id: u64,
    pub parent_id: u64,
    /// Path relative to the top-level subvolume (id 5), not to the mount point.
    pub path: PathBuf,
}

/// Lists every subvolume of the filesystem holding `fs_path`, except the top level (id 5),
/// sorted by id. Reads ROOT_BACKREF items of the root tree; needs CAP_SYS_ADMIN.
pub fn list_subvolumes(fs_path: &Path) -> Result<Vec<SubvolEntry>> {
    let f = open_btrfs(fs_path, false)?;
    let fail = |e| err("list subvolumes of", fs_path, e);
    let key = SearchKey {
        tree_id: ROOT_TREE_OBJECTID,
        min_objectid: SUBVOL_ROOT_INO,
        max_objectid: LAST_FREE_OBJECTID,
        min_type: ROOT_BACKREF_KEY,
        max_type: ROOT_BACKREF_KEY,
        max_offset: u64::MAX,
        max_transid: u64::MAX,
        ..zeroed()
    };
    let mut refs = Vec::new(); // (id, parent id, dirid in parent, name)
    tree_search(&f, key, |it| {
        if it.kind == ROOT_BACKREF_KEY {
            let len = le16(it.data, 16)?;
            let name = it.data.get(18..18 + len).ok_or_else(bad_item)?;
            refs.push((
                it.objectid,
                it.offset,
                le64(it.data, 0)?,
                OsStr::from_bytes(name).to_owned(),
            ));
        }
        Ok(())
    })
    .map_err(fail)?;
    let mut paths = HashMap::from([(FS_TREE_OBJECTID, PathBuf::new())]);
    let mut out = Vec::new();
    while !refs.is_empty() {
        let before = refs.len();
        for (id, parent, dirid, name) in std::mem::take(&mut refs) {
            match paths.get(&parent) {
                Some(pp) => {
                    let path = pp.join(ino_lookup(&f, parent, dirid).map_err(fail)?.1).join(&name);
                    paths.insert(id, path.clone());
                    out.push(SubvolEntry {
                        id,
                        parent_id: parent,
                        path,
                    });
                }
                None => refs.push((id, parent, dirid, name)),
            }
        }
        if refs.len() == before {
            // Parents unreachable from the top level (e.g. being deleted): report the bare name.
            out.extend(refs.drain(..).map(|(id, parent_id, _, name)| SubvolEntry {
                id,
                parent_id,
                path: name.into(),
            }));
        }
    }
    out.sort_by_key(|e| e.id);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_is_8_4_4_4_12_lowercase_hex() {
        let u: [u8; 16] = std::array::from_fn(|i| (i as u8) * 17);
        assert_eq!(uuid_string(&u), "00112233-4455-6677-8899-aabbccddeeff");
    }

    #[test]
    fn names_are_single_components_of_1_to_255_bytes() {
        for ok in ["a", "snap.2024-01-01", &"x".repeat(255)] {
            assert!(check_name(OsStr::new(ok)).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a\0b", &"x".repeat(256)] {
            assert!(
                matches!(check_name(OsStr::new(bad)), Err(BtrfsError::InvalidName { .. })),
                "{bad:?}"
            );
        }
    }
}
