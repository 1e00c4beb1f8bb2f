//! Btrfs subvolumes, snapshots and change detection, straight through the kernel's ioctls.
//!
//! Invariants:
//! - The kernel is reached only through `ioctl(2)`/`statfs(2)` via `libc`; nothing shells out to `btrfs`.
//!   `unsafe` exists only in this module, only around those calls and zero-initialisation of
//!   plain-old-data argument structs; each block carries a `// SAFETY:` comment.
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

use std::collections::{BTreeSet, HashMap};
use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::mem::size_of;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[cfg(any(
    target_arch = "powerpc",
    target_arch = "powerpc64",
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "sparc64"
))]
compile_error!("btrfs ioctl numbers here use the asm-generic _IOC encoding");

/// `statfs.f_type` of Btrfs.
pub const BTRFS_SUPER_MAGIC: u64 = 0x9123_683E;
/// Inode number of every subvolume's root directory (BTRFS_FIRST_FREE_OBJECTID).
pub const SUBVOL_ROOT_INO: u64 = 256;
/// Readonly bit of SUBVOL_GETFLAGS/SETFLAGS and vol_args_v2 (BTRFS_SUBVOL_RDONLY).
pub const SUBVOL_RDONLY: u64 = 1 << 1;
/// Readonly bit of the root item flags reported by GET_SUBVOL_INFO (BTRFS_ROOT_SUBVOL_RDONLY).
pub const ROOT_SUBVOL_RDONLY: u64 = 1 << 0;
const LAST_FREE_OBJECTID: u64 = -256i64 as u64;
const FS_TREE_OBJECTID: u64 = 5;
const ROOT_TREE_OBJECTID: u64 = 1;
const INODE_ITEM_KEY: u32 = 1;
const XATTR_ITEM_KEY: u32 = 24;
const DIR_ITEM_KEY: u32 = 84;
const DIR_INDEX_KEY: u32 = 96;
const EXTENT_DATA_KEY: u32 = 108;
const ROOT_BACKREF_KEY: u32 = 144;
const SEARCH_BUF: usize = 64 * 1024; // >= the largest nodesize, so any single item fits

const fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | (0x94 << 8) | nr
}
const IOC_SYNC: u64 = ioc(0, 8, 0);
const IOC_SNAP_DESTROY: u64 = ioc(1, 15, size_of::<VolArgs>());
const IOC_TREE_SEARCH_V2: u64 = ioc(3, 17, size_of::<SearchKey>() + 8);
const IOC_INO_LOOKUP: u64 = ioc(3, 18, size_of::<InoLookupArgs>());
const IOC_SNAP_CREATE_V2: u64 = ioc(1, 23, size_of::<VolArgsV2>());
const IOC_SUBVOL_GETFLAGS: u64 = ioc(2, 25, 8);
const IOC_SUBVOL_SETFLAGS: u64 = ioc(1, 26, 8);
const IOC_INO_PATHS: u64 = ioc(3, 35, size_of::<InoPathArgs>());
const IOC_GET_SUBVOL_INFO: u64 = ioc(2, 60, size_of::<GetSubvolInfoArgs>());
/// FS_IOC_GETFLAGS, `_IOR('f', 1, long)`; the kernel copies an `int` of flags.
const FS_IOC_GETFLAGS: u64 = (2 << 30) | (8 << 16) | (0x66 << 8) | 1;
/// The `chattr +C` inode flag: no copy-on-write for data (inherited by new files in a directory).
pub const FS_NOCOW_FL: u32 = 0x0080_0000;

#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; 4088],
}
#[repr(C)]
struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4], // union { size; qgroup_inherit*; }: left zero, no QGROUP_INHERIT flag
    name: [u8; 4040], // union { name; devid; subvolid; }
}
#[repr(C)]
#[derive(Clone, Copy)]
struct SearchKey {
    tree_id: u64,
    min_objectid: u64,
    max_objectid: u64,
    min_offset: u64,
    max_offset: u64,
    min_transid: u64,
    max_transid: u64,
    min_type: u32,
    max_type: u32,
    nr_items: u32,
    unused: u32,
    unused_tail: [u64; 4],
}
#[repr(C)]
struct SearchArgsV2 {
    key: SearchKey,
    buf_size: u64,
    buf: [u8; SEARCH_BUF], // flexible array in C; the kernel writes at most buf_size bytes
}
#[repr(C)]
struct InoLookupArgs {
    treeid: u64,
    objectid: u64,
    name: [u8; 4080],
}
#[repr(C)]
struct IoctlTimespec {
    sec: u64,
    nsec: u32,
}
#[repr(C)]
struct GetSubvolInfoArgs {
    treeid: u64,
    name: [u8; 256],
    parent_id: u64,
    dirid: u64,
    generation: u64,
    flags: u64,
    uuid: [u8; 16],
    parent_uuid: [u8; 16],
    received_uuid: [u8; 16],
    ctransid: u64,
    otransid: u64,
    stransid: u64,
    rtransid: u64,
    ctime: IoctlTimespec,
    otime: IoctlTimespec,
    stime: IoctlTimespec,
    rtime: IoctlTimespec,
    reserved: [u64; 8],
}
#[repr(C)]
struct InoPathArgs {
    inum: u64,
    size: u64,
    reserved: [u64; 4],
    fspath: u64, // user pointer to struct btrfs_data_container
}

const _: () = {
    assert!(size_of::<VolArgs>() == 4096);
    assert!(size_of::<VolArgsV2>() == 4096);
    assert!(size_of::<SearchKey>() == 104);
    assert!(size_of::<InoLookupArgs>() == 4096);
    assert!(size_of::<GetSubvolInfoArgs>() == 504);
    assert!(size_of::<InoPathArgs>() == 56);
    // Values printed by a C program including <linux/btrfs.h> on x86_64.
    assert!(IOC_SYNC == 0x9408);
    assert!(IOC_SNAP_DESTROY == 0x5000_940f);
    assert!(IOC_TREE_SEARCH_V2 == 0xc070_9411);
    assert!(IOC_INO_LOOKUP == 0xd000_9412);
    assert!(IOC_SNAP_CREATE_V2 == 0x5000_9417);
    assert!(IOC_SUBVOL_GETFLAGS == 0x8008_9419);
    assert!(IOC_SUBVOL_SETFLAGS == 0x4008_941a);
    assert!(IOC_INO_PATHS == 0xc038_9423);
    assert!(IOC_GET_SUBVOL_INFO == 0x81f8_943c);
    assert!(FS_IOC_GETFLAGS == 0x8008_6601);
};

/// Plain-old-data ioctl arguments.
/// # Safety
/// Implementors consist only of integers and arrays of them, so all-zero is a valid value.
unsafe trait Pod: Sized {}
// SAFETY: all of these are integer-only `repr(C)` aggregates.
unsafe impl Pod for u64 {}
// SAFETY: as above.
unsafe impl Pod for VolArgs {}
// SAFETY: as above.
unsafe impl Pod for VolArgsV2 {}
// SAFETY: as above.
unsafe impl Pod for SearchArgsV2 {}
// SAFETY: as above.
unsafe impl Pod for SearchKey {}
// SAFETY: as above.
unsafe impl Pod for InoLookupArgs {}
// SAFETY: as above.
unsafe impl Pod for GetSubvolInfoArgs {}

fn zeroed<T: Pod>() -> T {
    // SAFETY: `Pod` guarantees all-zero bytes are a valid `T`.
    unsafe { std::mem::zeroed() }
}

fn boxed_zeroed<T: Pod>() -> Box<T> {
    // SAFETY: `Pod` guarantees all-zero bytes are a valid `T`; new_zeroed zero-fills the allocation.
    unsafe { Box::<T>::new_zeroed().assume_init() }
}

/// # Safety
/// `arg` must be valid for every read and write the kernel performs for `req` on a Btrfs file.
unsafe fn raw_ioctl(f: &File, req: u64, arg: *mut libc::c_void) -> io::Result<()> {
    // SAFETY: the fd stays open while `f` is borrowed; `arg` validity is the caller's contract.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), req as libc::Ioctl, arg) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Ioctl whose whole argument is `*arg` (size encoded in `req`, checked) and holds no user pointer.
fn ioctl<T: Pod>(f: &File, req: u64, arg: &mut T) -> io::Result<()> {
    assert_eq!(
        (req >> 16) & 0x3fff,
        size_of::<T>() as u64,
        "ioctl argument size mismatch"
    );
    // SAFETY: the kernel copies exactly size_of::<T>() bytes in/out of `arg` (asserted above),
    // which is an exclusive, live reference; none of the Pod structs passed here carries a
    // user pointer the kernel would follow (vol_args_v2's qgroup pointer stays zero and unused).
    unsafe { raw_ioctl(f, req, (arg as *mut T).cast()) }
}

fn fs_magic(f: &File) -> io::Result<u64> {
    let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: valid fd; `st` is a writable statfs-sized buffer the kernel fills on success.
    let rc = unsafe { libc::fstatfs(f.as_raw_fd(), st.as_mut_ptr()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstatfs succeeded, so `st` is initialised (it was also zeroed).
    Ok(unsafe { st.assume_init() }.f_type as u64 & 0xffff_ffff)
}

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

pub mod doctor;

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

/// BTRFS_IOC_INO_LOOKUP: (tree id, path of `objectid` inside tree `treeid`, with trailing '/').
/// `treeid == 0` means the fd's subvolume; `(0, 256)` is allowed unprivileged.
fn ino_lookup(f: &File, treeid: u64, objectid: u64) -> io::Result<(u64, PathBuf)> {
    let mut a: InoLookupArgs = zeroed();
    a.treeid = treeid;
    a.objectid = objectid;
    ioctl(f, IOC_INO_LOOKUP, &mut a)?;
    Ok((
        a.treeid,
        PathBuf::from(OsString::from_vec(cstr_bytes(&a.name).to_vec())),
    ))
}

fn cstr_bytes(b: &[u8]) -> &[u8] {
    &b[..b.iter().position(|&c| c == 0).unwrap_or(b.len())]
}

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
    let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: `c` is NUL-terminated and outlives the call; `st` is a writable statfs buffer.
    if unsafe { libc::statfs(c.as_ptr(), st.as_mut_ptr()) } < 0 {
        return Err(err("statfs", path, io::Error::last_os_error()));
    }
    // SAFETY: statfs succeeded and filled `st` (which was zeroed besides).
    Ok(unsafe { st.assume_init() }.f_type as u64 & 0xffff_ffff == BTRFS_SUPER_MAGIC)
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
    // SAFETY: BTRFS_IOC_SYNC is an _IO ioctl: the kernel ignores the argument.
    unsafe { raw_ioctl(&f, IOC_SYNC, std::ptr::null_mut()) }.map_err(|e| err("sync", path, e))
}

/// One search result: header fields plus the item bytes.
struct Item<'a> {
    objectid: u64,
    kind: u32,
    offset: u64,
    data: &'a [u8],
}

fn bad_item() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "truncated btrfs item in tree search result")
}
fn le64(b: &[u8], at: usize) -> io::Result<u64> {
    Ok(u64::from_le_bytes(
        b.get(at..at + 8).ok_or_else(bad_item)?.try_into().unwrap(),
    ))
}
fn le32(b: &[u8], at: usize) -> io::Result<u32> {
    Ok(u32::from_le_bytes(
        b.get(at..at + 4).ok_or_else(bad_item)?.try_into().unwrap(),
    ))
}
fn le16(b: &[u8], at: usize) -> io::Result<usize> {
    Ok(u16::from_le_bytes(b.get(at..at + 2).ok_or_else(bad_item)?.try_into().unwrap()).into())
}

/// BTRFS_IOC_TREE_SEARCH_V2 over the linear key range [min, max] of `key`, calling `visit`
/// for every item. V2 with a 64 KiB buffer, because v1 silently ends a search (nr_items = 0,
/// no error) at an item larger than its 3992-byte buffer, such as a big xattr.
fn tree_search(f: &File, mut key: SearchKey, mut visit: impl FnMut(&Item) -> io::Result<()>) -> io::Result<()> {
    let mut a: Box<SearchArgsV2> = boxed_zeroed();
    loop {
        key.nr_items = u32::MAX;
        a.key = key;
        a.buf_size = SEARCH_BUF as u64;
        // SAFETY: `a` is a live, exclusive allocation of the 112-byte args header followed by
        // `buf_size` bytes of buffer, which bounds every kernel write.
        unsafe { raw_ioctl(f, IOC_TREE_SEARCH_V2, (&mut *a as *mut SearchArgsV2).cast())? };
        let (n, buf) = (a.key.nr_items, &a.buf[..]);
        if n == 0 {
            return Ok(());
        }
        let (mut at, mut last) = (0usize, (0, 0, 0));
        for _ in 0..n {
            let h = buf.get(at..at + 32).ok_or_else(bad_item)?;
            let ne64 = |i: usize| u64::from_ne_bytes(h[i..i + 8].try_into().unwrap());
            let ne32 = |i: usize| u32::from_ne_bytes(h[i..i + 4].try_into().unwrap());
            let len = ne32(28) as usize;
            let data = buf.get(at + 32..at + 32 + len).ok_or_else(bad_item)?;
            let item = Item {
                objectid: ne64(8),
                offset: ne64(16),
                kind: ne32(24),
                data,
            };
            visit(&item)?;
            last = (item.objectid, item.kind, item.offset);
            at += 32 + len;
        }
        // Continue just after the last returned key.
        (key.min_objectid, key.min_type, key.min_offset) = match last {
            (o, t, k) if k < u64::MAX => (o, t, k + 1),
            (o, t, _) if t < 255 => (o, t + 1, 0),
            (o, _, _) if o < u64::MAX => (o + 1, 0, 0),
            _ => return Ok(()),
        };
        if (key.min_objectid, key.min_type, key.min_offset) > (key.max_objectid, key.max_type, key.max_offset) {
            return Ok(());
        }
    }
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
///   updates) are invisible: scan a read-only snapshot, or [`sync_filesystem`] first.
/// - Generations are per filesystem: a generation from another filesystem (e.g. a received
///   copy) is meaningless here.
/// - Over-reports (never under-reports) on inode updates without content change: atime updates
///   (use `noatime`/`relatime`), touching with the same values, defragmentation, and all items of
///   transaction `min_generation` itself.
pub fn changed_inodes_since(subvol_path: &Path, min_generation: u64) -> Result<ChangedSet> {
    let f = open_subvol_root(subvol_path)?;
    let key = SearchKey {
        tree_id: 0,
        min_objectid: SUBVOL_ROOT_INO,
        max_objectid: LAST_FREE_OBJECTID,
        max_type: 255,
        max_offset: u64::MAX,
        min_transid: min_generation,
        max_transid: u64::MAX,
        ..zeroed()
    };
    let mut cs = ChangedSet::default();
    tree_search(&f, key, |it| {
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
        Ok(())
    })
    .map_err(|e| err("search changed inodes in", subvol_path, e))?;
    Ok(cs)
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
        let mut a = InoPathArgs {
            inum: ino,
            size: size as u64,
            reserved: [0; 4],
            fspath: buf.as_mut_ptr() as u64,
        };
        // SAFETY: `a` is the exact 56-byte argument; the kernel writes at most `a.size` bytes
        // to `fspath`, which points to the live, exclusively borrowed `size`-byte `buf`.
        unsafe { raw_ioctl(f, IOC_INO_PATHS, (&mut a as *mut InoPathArgs).cast())? };
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
