//! The kernel ABI of Btrfs: ioctl numbers, the `repr(C)` argument structs of uapi
//! `linux/btrfs.h`, on-disk key constants of `linux/btrfs_tree.h`, and the only `unsafe` code of
//! `btrfs`, behind safe functions.
//!
//! Invariants:
//! - Every `#[repr(C)]` struct mirrors the uapi header byte for byte; sizes and ioctl numbers are
//!   pinned at compile time against the values the C headers give (asm-generic `_IOC` encoding:
//!   x86_64, aarch64, riscv64; other encodings refuse to compile).
//! - `unsafe` appears only around `ioctl(2)`/`statfs(2)`/`fstatfs(2)` and the zero-initialisation
//!   of [`Pod`] structs; each block carries a `// SAFETY:` comment. Everything exported from here
//!   is a safe function: those that hand the kernel a user pointer build it themselves from a
//!   buffer they borrow for the call, and [`ioctl`] passes only pointer-free structs (callers leave
//!   vol_args_v2's qgroup fields and flag zero).
//! - Nothing here checks the filesystem type; callers issue these only on descriptors that
//!   [`fs_magic`] says are Btrfs (see `open_btrfs` in the parent module).
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::mem::size_of;
use std::os::fd::AsRawFd;

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
pub(super) const LAST_FREE_OBJECTID: u64 = -256i64 as u64;
pub(super) const FS_TREE_OBJECTID: u64 = 5;
pub(super) const ROOT_TREE_OBJECTID: u64 = 1;
pub(super) const INODE_ITEM_KEY: u32 = 1;
pub(super) const XATTR_ITEM_KEY: u32 = 24;
pub(super) const DIR_ITEM_KEY: u32 = 84;
pub(super) const DIR_INDEX_KEY: u32 = 96;
pub(super) const EXTENT_DATA_KEY: u32 = 108;
pub(super) const ROOT_BACKREF_KEY: u32 = 144;
pub(super) const SEARCH_BUF: usize = 64 * 1024; // >= the largest nodesize, so any single item fits

const fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | (0x94 << 8) | nr
}
const IOC_SYNC: u64 = ioc(0, 8, 0);
pub(super) const IOC_SNAP_DESTROY: u64 = ioc(1, 15, size_of::<VolArgs>());
const IOC_TREE_SEARCH_V2: u64 = ioc(3, 17, size_of::<SearchKey>() + 8);
pub(super) const IOC_INO_LOOKUP: u64 = ioc(3, 18, size_of::<InoLookupArgs>());
pub(super) const IOC_SNAP_CREATE_V2: u64 = ioc(1, 23, size_of::<VolArgsV2>());
pub(super) const IOC_SUBVOL_GETFLAGS: u64 = ioc(2, 25, 8);
pub(super) const IOC_SUBVOL_SETFLAGS: u64 = ioc(1, 26, 8);
const IOC_INO_PATHS: u64 = ioc(3, 35, size_of::<InoPathArgs>());
pub(super) const IOC_GET_SUBVOL_INFO: u64 = ioc(2, 60, size_of::<GetSubvolInfoArgs>());
/// FS_IOC_GETFLAGS, `_IOR('f', 1, long)`; the kernel copies an `int` of flags.
pub(super) const FS_IOC_GETFLAGS: u64 = (2 << 30) | (8 << 16) | (0x66 << 8) | 1;
/// The `chattr +C` inode flag: no copy-on-write for data (inherited by new files in a directory).
pub const FS_NOCOW_FL: u32 = 0x0080_0000;

#[repr(C)]
pub(super) struct VolArgs {
    pub(super) fd: i64,
    pub(super) name: [u8; 4088],
}
#[repr(C)]
pub(super) struct VolArgsV2 {
    pub(super) fd: i64,
    pub(super) transid: u64,
    pub(super) flags: u64,
    pub(super) unused: [u64; 4], // union { size; qgroup_inherit*; }: left zero, no QGROUP_INHERIT flag
    pub(super) name: [u8; 4040], // union { name; devid; subvolid; }
}
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct SearchKey {
    pub(super) tree_id: u64,
    pub(super) min_objectid: u64,
    pub(super) max_objectid: u64,
    pub(super) min_offset: u64,
    pub(super) max_offset: u64,
    pub(super) min_transid: u64,
    pub(super) max_transid: u64,
    pub(super) min_type: u32,
    pub(super) max_type: u32,
    pub(super) nr_items: u32,
    pub(super) unused: u32,
    pub(super) unused_tail: [u64; 4],
}
#[repr(C)]
pub(super) struct SearchArgsV2 {
    pub(super) key: SearchKey,
    /// Set by [`tree_search_v2`] on every call; the kernel writes at most this many bytes of `buf`.
    buf_size: u64,
    pub(super) buf: [u8; SEARCH_BUF], // flexible array in C; the kernel writes at most buf_size bytes
}
#[repr(C)]
pub(super) struct InoLookupArgs {
    pub(super) treeid: u64,
    pub(super) objectid: u64,
    pub(super) name: [u8; 4080],
}
#[repr(C)]
pub(super) struct IoctlTimespec {
    pub(super) sec: u64,
    pub(super) nsec: u32,
}
#[repr(C)]
pub(super) struct GetSubvolInfoArgs {
    pub(super) treeid: u64,
    pub(super) name: [u8; 256],
    pub(super) parent_id: u64,
    pub(super) dirid: u64,
    pub(super) generation: u64,
    pub(super) flags: u64,
    pub(super) uuid: [u8; 16],
    pub(super) parent_uuid: [u8; 16],
    pub(super) received_uuid: [u8; 16],
    pub(super) ctransid: u64,
    pub(super) otransid: u64,
    pub(super) stransid: u64,
    pub(super) rtransid: u64,
    pub(super) ctime: IoctlTimespec,
    pub(super) otime: IoctlTimespec,
    pub(super) stime: IoctlTimespec,
    pub(super) rtime: IoctlTimespec,
    pub(super) reserved: [u64; 8],
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
pub(super) unsafe trait Pod: Sized {}
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

pub(super) fn zeroed<T: Pod>() -> T {
    // SAFETY: `Pod` guarantees all-zero bytes are a valid `T`.
    unsafe { std::mem::zeroed() }
}

pub(super) fn boxed_zeroed<T: Pod>() -> Box<T> {
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
pub(super) fn ioctl<T: Pod>(f: &File, req: u64, arg: &mut T) -> io::Result<()> {
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

/// BTRFS_IOC_TREE_SEARCH_V2 with `a.key` as given, into the whole of `a.buf`. On success the
/// kernel has set `a.key.nr_items` to the number of items it wrote to `a.buf`.
pub(super) fn tree_search_v2(f: &File, a: &mut SearchArgsV2) -> io::Result<()> {
    a.buf_size = SEARCH_BUF as u64;
    // SAFETY: `a` is a live, exclusive allocation of the 112-byte args header followed by
    // `buf_size` bytes of buffer, which bounds every kernel write.
    unsafe { raw_ioctl(f, IOC_TREE_SEARCH_V2, (a as *mut SearchArgsV2).cast()) }
}

/// BTRFS_IOC_INO_PATHS of inode `inum` into `buf`, which receives a `btrfs_data_container`
/// (the kernel writes at most `buf`'s size in bytes).
pub(super) fn ino_paths_into(f: &File, inum: u64, buf: &mut [u64]) -> io::Result<()> {
    let mut a = InoPathArgs {
        inum,
        size: size_of_val(buf) as u64,
        reserved: [0; 4],
        fspath: buf.as_mut_ptr() as u64,
    };
    // SAFETY: `a` is the exact 56-byte argument; the kernel writes at most `a.size` bytes
    // to `fspath`, which points to the live, exclusively borrowed `a.size`-byte `buf`.
    unsafe { raw_ioctl(f, IOC_INO_PATHS, (&mut a as *mut InoPathArgs).cast()) }
}

/// BTRFS_IOC_SYNC: commits the current transaction of the filesystem holding `f`.
pub(super) fn sync(f: &File) -> io::Result<()> {
    // SAFETY: BTRFS_IOC_SYNC is an _IO ioctl: the kernel ignores the argument.
    unsafe { raw_ioctl(f, IOC_SYNC, std::ptr::null_mut()) }
}

/// `fstatfs(2)` filesystem magic (`f_type`, low 32 bits) of the filesystem holding `f`.
pub(super) fn fs_magic(f: &File) -> io::Result<u64> {
    let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: valid fd; `st` is a writable statfs-sized buffer the kernel fills on success.
    let rc = unsafe { libc::fstatfs(f.as_raw_fd(), st.as_mut_ptr()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstatfs succeeded, so `st` is initialised (it was also zeroed).
    Ok(unsafe { st.assume_init() }.f_type as u64 & 0xffff_ffff)
}

/// `statfs(2)` filesystem magic (`f_type`, low 32 bits) of the filesystem holding `path`.
pub(super) fn path_fs_magic(path: &CStr) -> io::Result<u64> {
    let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: `path` is NUL-terminated and outlives the call; `st` is a writable statfs buffer.
    if unsafe { libc::statfs(path.as_ptr(), st.as_mut_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statfs succeeded and filled `st` (which was zeroed besides).
    Ok(unsafe { st.assume_init() }.f_type as u64 & 0xffff_ffff)
}
