//! Btrfs subvolumes, snapshots and change detection, straight through the kernel's ioctls.
//!
//! Invariants:
//! - The kernel is reached only through `ioctl(2)`/`statfs(2)` via `libc`; nothing shells out to `btrfs`.
//!   `unsafe` exists only in `sys` (the kernel ABI), only around those calls and zero-initialisation
//!   of plain-old-data argument structs; each block carries a `// SAFETY:` comment. The other
//!   files of this module call only the safe functions `sys` exposes.
//! - Every `#[repr(C)]` argument struct mirrors uapi `linux/btrfs.h` byte for byte; sizes and the
//!   resulting ioctl numbers are pinned at compile time against the values the C headers give
//!   (asm-generic `_IOC` encoding: x86_64, aarch64, riscv64; other encodings refuse to compile).
//! - A btrfs ioctl is only issued on a descriptor whose `fstatfs` says Btrfs (`0x9123683E`), so it
//!   never reaches another filesystem's handler that happens to share the number.
//! - Operations on a subvolume demand its root directory (inode 256); nothing silently falls back
//!   to the subvolume that merely contains the path.
//! - On-disk items returned by tree search are little-endian packed structs: they are decoded from
//!   bounds-checked byte slices, never cast.
//!
//! Privileges: `subvolume_info`, `is_readonly`, `is_btrfs`, `is_subvolume_root`, `sync_filesystem`
//! work unprivileged. `list_subvolumes`, `changed_inodes_since` and `inode_paths` need
//! CAP_SYS_ADMIN (tree search). Snapshots need write access to the destination (and ownership of
//! the source without CAP_SYS_ADMIN); deletion needs root or the `user_subvol_rm_allowed` option.
//!
//! Layout: `sys` (ioctl numbers, argument structs, the only `unsafe`), `search` (tree search and
//! item decoding), `subvol` (subvolume operations), `detect` (change detection), [`doctor`]
//! (mount option checks). This file holds the error type and the open helpers through which every
//! operation reaches a descriptor, so the Btrfs and subvolume-root checks happen in one place.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub mod doctor;

mod detect;
mod search;
mod subvol;
mod sys;

pub use detect::{changed_inodes_at_most, changed_inodes_since, inode_paths, inodes_paths, ChangedSet};
pub use subvol::{
    create_snapshot, delete_subvolume, is_btrfs, is_nocow, is_readonly, is_subvolume_root, list_subvolumes,
    set_readonly, subvolume_info, sync_filesystem, uuid_string, SubvolEntry, SubvolInfo,
};
pub use sys::{BTRFS_SUPER_MAGIC, FS_NOCOW_FL, ROOT_SUBVOL_RDONLY, SUBVOL_RDONLY, SUBVOL_ROOT_INO};

use search::ino_lookup;
use sys::fs_magic;

/// Errors from this module; each message names the failing operation, the path and what to do.
#[derive(Debug, thiserror::Error)]
pub enum BtrfsError {
    #[error(
        "{path} is not on a Btrfs filesystem (filesystem magic {fs_type:#x}, Btrfs is 0x9123683e); \
         snapshots and change detection need Btrfs: point pbak at a Btrfs subvolume or use a non-snapshot backup mode"
    )]
    NotBtrfs { path: PathBuf, fs_type: u64 },
    #[error(
        "{path} is not a Btrfs subvolume root (inode {ino}; a subvolume root is inode 256){}; \
         pass the subvolume's top directory, or make this directory a subvolume (`btrfs subvolume create`, then move the data in)",
        containing_hint(.containing_id, .containing_path)
    )]
    NotSubvolumeRoot {
        path: PathBuf,
        ino: u64,
        containing_id: Option<u64>,
        containing_path: Option<PathBuf>,
    },
    #[error(
        "not permitted to {op} {path} ({source}); run pbak as root (CAP_SYS_ADMIN); deleting subvolumes \
         as a regular user also works if you own them and the filesystem is mounted with `user_subvol_rm_allowed`"
    )]
    NotPermitted {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "cannot snapshot {source_path} into {dest_dir}: the destination is on a different filesystem; \
         a Btrfs snapshot must live on its source's filesystem, so choose a snapshot directory on it"
    )]
    CrossFilesystem { source_path: PathBuf, dest_dir: PathBuf },
    #[error("unknown storage preset {name:?}; known presets: {known}")]
    UnknownPreset { name: String, known: String },
    #[error("{path} already exists; choose another snapshot name or delete the existing one first")]
    AlreadyExists { path: PathBuf },
    #[error("invalid subvolume name {name:?}: use a single path component of 1-255 bytes, not '.' or '..'")]
    InvalidName { name: OsString },
    #[error("failed to {op} {path}: {source}{hint}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
        hint: &'static str,
    },
}

pub type Result<T, E = BtrfsError> = std::result::Result<T, E>;

fn containing_hint(id: &Option<u64>, path: &Option<PathBuf>) -> String {
    match (id, path) {
        (Some(id), Some(p)) => format!("; it lies inside subvolume {id}, whose root is {}", p.display()),
        (Some(id), None) => format!("; it lies inside subvolume {id}"),
        (None, Some(p)) => format!("; it lies inside the subvolume rooted at {}", p.display()),
        (None, None) => String::new(),
    }
}

fn err(op: &'static str, path: &Path, e: io::Error) -> BtrfsError {
    let path = path.to_path_buf();
    match e.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => BtrfsError::NotPermitted { op, path, source: e },
        Some(libc::EEXIST) => BtrfsError::AlreadyExists { path },
        errno => {
            let hint = match errno {
                Some(libc::ENOENT) => "; check that the path exists",
                Some(libc::ENOTEMPTY) => "; it contains nested subvolumes, delete those first",
                Some(libc::EROFS) => "; the filesystem or subvolume is read-only",
                Some(libc::ENOSPC) => "; the filesystem is full, free space or delete old snapshots",
                _ => "",
            };
            BtrfsError::Io {
                op,
                path,
                source: e,
                hint,
            }
        }
    }
}

fn open(path: &Path, dir_only: bool) -> Result<File> {
    let flags = libc::O_NONBLOCK | libc::O_NOCTTY | if dir_only { libc::O_DIRECTORY } else { 0 };
    OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|e| err("open", path, e))
}

/// Opens `path` and checks that it is on Btrfs.
fn open_btrfs(path: &Path, dir_only: bool) -> Result<File> {
    let f = open(path, dir_only)?;
    match fs_magic(&f).map_err(|e| err("statfs", path, e))? {
        BTRFS_SUPER_MAGIC => Ok(f),
        fs_type => Err(BtrfsError::NotBtrfs {
            path: path.into(),
            fs_type,
        }),
    }
}

/// Opens `path`, checking it is on Btrfs and is a subvolume root (checked on the opened fd).
fn open_subvol_root(path: &Path) -> Result<File> {
    let f = open_btrfs(path, false)?;
    let md = f.metadata().map_err(|e| err("stat", path, e))?;
    if md.is_dir() && md.ino() == SUBVOL_ROOT_INO {
        return Ok(f);
    }
    let containing_id = ino_lookup(&f, 0, SUBVOL_ROOT_INO).ok().map(|(id, _)| id);
    let containing_path = fs::canonicalize(path).ok().and_then(|p| {
        p.ancestors().skip(1).find_map(|a| {
            let m = fs::metadata(a).ok()?;
            (m.dev() == md.dev() && m.ino() == SUBVOL_ROOT_INO).then(|| a.to_path_buf())
        })
    });
    Err(BtrfsError::NotSubvolumeRoot {
        path: path.into(),
        ino: md.ino(),
        containing_id,
        containing_path,
    })
}
