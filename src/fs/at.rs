//! Restoring through directory file descriptors, so that nothing a local user does inside the
//! target while a restore runs (swapping a directory or a file for a symlink, a hard link or
//! another directory) can make the restore write, chmod or chown anything outside it.
//!
//! Invariants:
//! - The target is opened once (`O_DIRECTORY | O_NOFOLLOW`); every directory below it is
//!   opened relative to that descriptor with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//!   RESOLVE_NO_MAGICLINKS)`, or, on kernels without openat2, one `openat(O_NOFOLLOW |
//!   O_DIRECTORY)` per component. No path lookup here ever follows a symlink.
//! - Entries are created relative to their directory's descriptor: files with `O_CREAT |
//!   O_EXCL | O_NOFOLLOW` (an existing non-directory is unlinked first), directories with
//!   mode 0700 (so nobody else can enter them until their final metadata), special files with
//!   `mknodat` mode 0600.
//! - Metadata goes through a descriptor of the entry itself (`fchown`, `fchmod`, `fsetxattr`,
//!   `futimens`); symlinks and special files, which cannot be opened for that, through an
//!   `O_PATH | O_NOFOLLOW` descriptor (`fchownat(AT_EMPTY_PATH)`, and `/proc/self/fd/N` for
//!   mode and xattrs) and `utimensat(AT_SYMLINK_NOFOLLOW)`.
//! - Callers check the (device, inode) of what they open against what they created
//!   ([`Ino`]) before writing to it or changing its metadata.

use crate::format::tree::{Node, NodeKind, Time};
use crate::fs::node::ApplyWarnings;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps, XattrFlags, CWD};
use rustix::io::Errno;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// (device, inode) of an entry a restore created.
pub type Ino = (u64, u64);

/// Directory descriptors kept open at most; past this the cache starts over (descriptors in
/// use stay open through their `Arc`).
const CACHE_MAX: usize = 1024;

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// The restore target, opened once, and a bounded cache of the directories below it.
pub struct DirTree {
    root: OwnedFd,
    /// Whether openat2 with RESOLVE_BENEATH works here (cleared on ENOSYS).
    openat2: AtomicBool,
    cache: Mutex<HashMap<PathBuf, Arc<OwnedFd>>>,
}

impl DirTree {
    /// Open `target` (which must be a directory, not a symlink to one).
    pub fn open(target: &Path) -> io::Result<DirTree> {
        Ok(DirTree {
            root: rustix::fs::openat(CWD, target, DIR_FLAGS, Mode::empty())?,
            openat2: AtomicBool::new(true),
            cache: Mutex::default(),
        })
    }

    /// The directory `rel` below the target (`""` is the target itself), never through a
    /// symlink.
    pub fn dir(&self, rel: &Path) -> io::Result<Arc<OwnedFd>> {
        if let Some(fd) = self.cache.lock().expect("lock").get(rel) {
            return Ok(fd.clone());
        }
        let fd = Arc::new(self.open_dir(rel)?);
        let mut cache = self.cache.lock().expect("lock");
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(rel.to_path_buf(), fd.clone());
        Ok(fd)
    }

    fn open_dir(&self, rel: &Path) -> io::Result<OwnedFd> {
        if rel.as_os_str().is_empty() {
            return self.root.try_clone();
        }
        if self.openat2.load(Relaxed) {
            let how = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
            for _ in 0..16 {
                match rustix::fs::openat2(&self.root, rel, DIR_FLAGS, Mode::empty(), how) {
                    // A rename elsewhere raced the lookup: the kernel asks to try again.
                    Err(Errno::AGAIN) => continue,
                    Err(Errno::NOSYS) => break,
                    r => return Ok(r?),
                }
            }
            self.openat2.store(false, Relaxed);
        }
        let mut fd = self.root.try_clone()?;
        for c in rel.components() {
            // Only plain names: `..` or `/` would leave the target (RESOLVE_BENEATH's job above).
            let std::path::Component::Normal(c) = c else {
                return Err(Errno::XDEV.into());
            };
            fd = rustix::fs::openat(&fd, c, DIR_FLAGS, Mode::empty())?;
        }
        Ok(fd)
    }

    /// The directory holding `rel` and `rel`'s last component.
    pub fn parent<'p>(&self, rel: &'p Path) -> io::Result<(Arc<OwnedFd>, &'p OsStr)> {
        let name = rel
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no name"))?;
        Ok((self.dir(rel.parent().unwrap_or(Path::new("")))?, name))
    }

    /// Make the directory `rel` (its parent exists) with mode 0700, or accept an existing
    /// directory there; whether it was made. Err(NotADirectory) when something else is in
    /// the way.
    pub fn mkdir(&self, rel: &Path) -> io::Result<bool> {
        let (dir, name) = self.parent(rel)?;
        let made = match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o700)) {
            Ok(()) => true,
            Err(Errno::EXIST) => false,
            Err(e) => return Err(e.into()),
        };
        // Opening it proves it is a directory reached without a symlink.
        match self.dir(rel) {
            Err(e) if matches!(Errno::from_io_error(&e), Some(Errno::NOTDIR | Errno::LOOP)) => Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                "exists and is not a directory",
            )),
            r => r.map(|_| made),
        }
    }

    /// Forget the cached descriptor of `rel` (after the directory there was removed).
    pub fn forget(&self, rel: &Path) {
        self.cache.lock().expect("lock").remove(rel);
    }
}

/// What is at `name` in `dir`, not following a symlink; `None` when nothing is.
pub fn stat_at(dir: BorrowedFd, name: &OsStr) -> io::Result<Option<rustix::fs::Stat>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The names in the open directory `dir`, without `.` and `..`.
pub fn names(dir: BorrowedFd) -> io::Result<Vec<OsString>> {
    let mut out = Vec::new();
    for e in rustix::fs::Dir::read_from(dir)? {
        let e = e?;
        let name = e.file_name().to_bytes();
        if name != b"." && name != b".." {
            out.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    Ok(out)
}

/// Remove the entry `name` of `dir`, whose path is `rel`, and when it is a directory
/// everything below it, except what `keep(path)` protects (a directory that still holds a
/// kept entry stays), nor a directory on another device (mount points and nested Btrfs
/// subvolumes stay, with what is in them). Never follows a symlink: a directory is opened relative to its
/// parent's descriptor with `O_DIRECTORY | O_NOFOLLOW` and emptied through that descriptor;
/// anything else (a symlink included) is unlinked by name. With `dry`, nothing is removed
/// and the count is what would be. Returns (entries removed, whether `name` itself went).
/// An entry that changes meanwhile (swapped for a directory, refilled) is left in place.
pub fn remove_tree(
    dir: BorrowedFd,
    name: &OsStr,
    rel: &Path,
    keep: &dyn Fn(&Path) -> bool,
    dry: bool,
) -> io::Result<(u64, bool)> {
    if keep(rel) {
        return Ok((0, false));
    }
    let gone = |r: rustix::io::Result<()>| match r {
        Ok(()) | Err(Errno::NOENT) => Ok(true),
        Err(Errno::NOTDIR | Errno::ISDIR | Errno::NOTEMPTY | Errno::EXIST) => Ok(false),
        Err(e) => Err(io::Error::from(e)),
    };
    match rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty()) {
        // Another filesystem or Btrfs subvolume (a mount point, a nested subvolume such as
        // the local snapshots) is never entered: it is not part of this tree.
        Ok(sub) if rustix::fs::fstat(&sub)?.st_dev != rustix::fs::fstat(dir)?.st_dev => Ok((0, false)),
        Ok(sub) => {
            let (mut n, mut all) = (0, true);
            for child in names(sub.as_fd())? {
                let (k, went) = remove_tree(sub.as_fd(), &child, &rel.join(&child), keep, dry)?;
                n += k;
                all &= went;
            }
            if !all {
                return Ok((n, false));
            }
            let went = dry || gone(rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR))?;
            Ok((n + u64::from(went), went))
        }
        Err(Errno::NOTDIR | Errno::LOOP) => {
            let went = dry || gone(rustix::fs::unlinkat(dir, name, AtFlags::empty()))?;
            Ok((u64::from(went), went))
        }
        Err(Errno::NOENT) => Ok((0, true)),
        Err(e) => Err(e.into()),
    }
}

/// (device, inode) of an open descriptor.
pub fn ino(fd: BorrowedFd) -> io::Result<Ino> {
    let st = rustix::fs::fstat(fd)?;
    Ok((st.st_dev, st.st_ino))
}

/// Remove a non-directory entry `name` of `dir`, if there is one (as a restore overwrites).
pub fn remove_non_dir(dir: BorrowedFd, name: &OsStr) {
    let _ = rustix::fs::unlinkat(dir, name, AtFlags::empty());
}

/// Create the regular file `name` in `dir`, mode 0600, replacing a non-directory there.
pub fn create_file(dir: BorrowedFd, name: &OsStr) -> io::Result<std::fs::File> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    // Someone may create the name again between unlink and open: try a few times.
    for _ in 0..4 {
        match rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(0o600)) {
            Ok(fd) => return Ok(fd.into()),
            Err(Errno::EXIST) => remove_non_dir(dir, name),
            Err(e) => return Err(e.into()),
        }
    }
    Err(Errno::EXIST.into())
}

/// Open the file `name` of `dir` (never a symlink), for writing or for reading without
/// touching its atime where permitted, if it is the inode `want`.
pub fn open_created(dir: BorrowedFd, name: &OsStr, want: Ino, write: bool) -> io::Result<std::fs::File> {
    let mode = if write {
        OFlags::WRONLY
    } else {
        OFlags::RDONLY | OFlags::NOATIME
    };
    let flags = mode | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(dir, name, flags, Mode::empty()) {
        // O_NOATIME needs the owner or root.
        Err(Errno::PERM) if !write => rustix::fs::openat(dir, name, flags - OFlags::NOATIME, Mode::empty())?,
        r => r?,
    };
    if ino(fd.as_fd())? != want {
        return Err(replaced());
    }
    Ok(fd.into())
}

/// The error for an entry that is no longer the one the restore created.
pub fn replaced() -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        "replaced during the restore; left alone",
    )
}

/// An `O_PATH` descriptor of the entry `name` itself (a symlink is not followed).
pub fn open_path(dir: BorrowedFd, name: &OsStr) -> io::Result<OwnedFd> {
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(rustix::fs::openat(dir, name, flags, Mode::empty())?)
}

/// Create the special file (FIFO, device node) `name` in `dir`, mode 0600 for now.
pub fn make_special_at(dir: BorrowedFd, name: &OsStr, node: &Node) -> io::Result<()> {
    let ft = match node.kind {
        NodeKind::Fifo => FileType::Fifo,
        NodeKind::CharDev => FileType::CharacterDevice,
        NodeKind::BlockDev => FileType::BlockDevice,
        _ => return Err(io::Error::other("not a special file")),
    };
    remove_non_dir(dir, name);
    rustix::fs::mknodat(dir, name, ft, Mode::from_raw_mode(0o600), node.rdev)?;
    Ok(())
}

/// Create the symlink `name` → `node.link_target` in `dir`, replacing a non-directory there.
pub fn symlink_at(dir: BorrowedFd, name: &OsStr, node: &Node) -> io::Result<()> {
    remove_non_dir(dir, name);
    rustix::fs::symlinkat(OsStr::from_bytes(&node.link_target), dir, name)?;
    Ok(())
}

fn ts(t: Time) -> Timespec {
    Timespec {
        tv_sec: t.sec,
        tv_nsec: t.nsec as _,
    }
}

fn times(node: &Node) -> Timestamps {
    Timestamps {
        last_access: ts(node.atime),
        last_modification: ts(node.mtime),
    }
}

fn chown_result(r: rustix::io::Result<()>, is_root: bool, w: &mut ApplyWarnings) -> io::Result<()> {
    match r {
        Ok(()) => Ok(()),
        Err(Errno::PERM) if !is_root => {
            w.owner_skipped = true;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// An xattr that cannot be set is a warning, never the end of the entry's metadata: its mode
/// and times still follow. Without root, security.*/trusted.* are silently skipped (they need
/// root), as are all xattrs on a filesystem without xattr support.
fn xattr_result(r: rustix::io::Result<()>, name: &[u8], is_root: bool, w: &mut ApplyWarnings) {
    match r {
        Err(Errno::PERM | Errno::NOTSUP) if !is_root => {}
        Err(e) => w
            .failed
            .push(format!("xattr {} not set: {e}", String::from_utf8_lossy(name))),
        Ok(()) => {}
    }
}

fn ids(node: &Node) -> (Option<rustix::fs::Uid>, Option<rustix::fs::Gid>) {
    (
        Some(rustix::fs::Uid::from_raw(node.uid)),
        Some(rustix::fs::Gid::from_raw(node.gid)),
    )
}

/// Set the access and modification times of the open file `fd`.
pub fn set_times(fd: BorrowedFd, atime: Time, mtime: Time) -> io::Result<()> {
    let t = Timestamps {
        last_access: ts(atime),
        last_modification: ts(mtime),
    };
    Ok(rustix::fs::futimens(fd, &t)?)
}

/// Apply owner, xattrs, mode and times of `node` through `fd`, an open file or directory
/// (in that order: chown clears setuid bits; xattrs before the mode, because a user's own
/// read-only file refuses `user.*` xattrs, and an ACL written then is reconciled by the chmod;
/// times last, since each change touches ctime).
pub fn apply_fd(fd: BorrowedFd, node: &Node, is_root: bool) -> io::Result<ApplyWarnings> {
    let (uid, gid) = ids(node);
    apply_parts(fd, (uid, gid, node.mode), &node.xattrs, &times(node), is_root)
}

/// What [`apply_fd`] applies to a regular file, kept for each file a restore writes (the
/// node itself, with its name and chunk list, is not kept): applied through the descriptor
/// that wrote the file's last chunk.
#[derive(Clone, Debug)]
pub struct FileMeta {
    uid: u32,
    gid: u32,
    mode: u32,
    atime: Time,
    mtime: Time,
    /// `None` without xattrs: most files, and then no allocation.
    xattrs: Option<Box<[Xattr]>>,
}

/// An xattr's name and value, as a node keeps them.
type Xattr = (Vec<u8>, Vec<u8>);

impl FileMeta {
    pub fn of(node: &Node) -> FileMeta {
        FileMeta {
            uid: node.uid,
            gid: node.gid,
            mode: node.mode,
            atime: node.atime,
            mtime: node.mtime,
            xattrs: (!node.xattrs.is_empty()).then(|| node.xattrs.clone().into_boxed_slice()),
        }
    }
}

/// [`apply_fd`] of a [`FileMeta`].
pub fn apply_meta_fd(fd: BorrowedFd, m: &FileMeta, is_root: bool) -> io::Result<ApplyWarnings> {
    let ids = (
        Some(rustix::fs::Uid::from_raw(m.uid)),
        Some(rustix::fs::Gid::from_raw(m.gid)),
        m.mode,
    );
    let t = Timestamps {
        last_access: ts(m.atime),
        last_modification: ts(m.mtime),
    };
    apply_parts(fd, ids, m.xattrs.as_deref().unwrap_or_default(), &t, is_root)
}

type Ids = (Option<rustix::fs::Uid>, Option<rustix::fs::Gid>, u32);

fn apply_parts(
    fd: BorrowedFd,
    (uid, gid, mode): Ids,
    xattrs: &[Xattr],
    t: &Timestamps,
    is_root: bool,
) -> io::Result<ApplyWarnings> {
    let mut w = ApplyWarnings::default();
    chown_result(rustix::fs::fchown(fd, uid, gid), is_root, &mut w)?;
    for (name, value) in xattrs {
        let r = rustix::fs::fsetxattr(fd, OsStr::from_bytes(name), value, XattrFlags::empty());
        xattr_result(r, name, is_root, &mut w);
    }
    rustix::fs::fchmod(fd, Mode::from_raw_mode(mode))?;
    rustix::fs::futimens(fd, t)?;
    Ok(w)
}

/// Apply `node`'s metadata to a symlink or special file: `fd` is its `O_PATH` descriptor,
/// `dir`/`name` where it is (for the times, which no descriptor of a symlink can set).
pub fn apply_path_fd(
    fd: BorrowedFd,
    dir: BorrowedFd,
    name: &OsStr,
    node: &Node,
    is_root: bool,
) -> io::Result<ApplyWarnings> {
    let mut w = ApplyWarnings::default();
    let (uid, gid) = ids(node);
    chown_result(
        rustix::fs::chownat(fd, "", uid, gid, AtFlags::EMPTY_PATH),
        is_root,
        &mut w,
    )?;
    // /proc/self/fd/N names exactly the inode `fd` holds; without /proc, mode and xattrs of
    // special files stay as created (0600) and those of symlinks are skipped.
    let proc = PathBuf::from(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd)));
    let have_proc = Path::new("/proc/self/fd").is_dir();
    if have_proc {
        for (name, value) in &node.xattrs {
            let r = rustix::fs::setxattr(&proc, OsStr::from_bytes(name), value, XattrFlags::empty());
            xattr_result(r, name, is_root, &mut w);
        }
    }
    if node.kind != NodeKind::Symlink && have_proc {
        rustix::fs::chmodat(CWD, &proc, Mode::from_raw_mode(node.mode), AtFlags::empty())?;
    }
    if ino(fd)? == ino_at(dir, name)? {
        rustix::fs::utimensat(dir, name, &times(node), AtFlags::SYMLINK_NOFOLLOW)?;
    }
    Ok(w)
}

fn ino_at(dir: BorrowedFd, name: &OsStr) -> io::Result<Ino> {
    let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    Ok((st.st_dev, st.st_ino))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn both(f: impl Fn(&DirTree, &Path)) {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(t.path().join("outside"), b"keep").unwrap();
        symlink(root.join("a"), root.join("s")).unwrap();
        symlink(t.path(), root.join("up")).unwrap();
        for openat2 in [true, false] {
            let d = DirTree::open(&root).unwrap();
            d.openat2.store(openat2, Relaxed);
            f(&d, t.path());
        }
    }

    #[test]
    fn directories_are_never_reached_through_a_symlink() {
        both(|d, _| {
            assert!(d.dir(Path::new("a/b")).is_ok());
            for bad in ["s", "s/b", "up", "up/root", "a/../..", "/tmp"] {
                assert!(d.dir(Path::new(bad)).is_err(), "{bad} opened");
            }
            let e = d.mkdir(Path::new("s")).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::NotADirectory);
            assert!(d.mkdir(Path::new("up/new")).is_err());
            d.mkdir(Path::new("a/c")).unwrap();
            assert!(!d.mkdir(Path::new("a/c")).unwrap(), "made again");
        });
    }

    #[test]
    fn remove_tree_unlinks_symlinks_and_keeps_what_it_is_told() {
        both(|d, base| {
            let root = d.dir(Path::new("")).unwrap();
            fs::create_dir_all(base.join("root/x/y")).unwrap();
            fs::write(base.join("root/x/y/f"), b"f").unwrap();
            fs::write(base.join("root/x/keep"), b"k").unwrap();
            symlink(base, base.join("root/x/up")).unwrap();
            let keep = |p: &Path| p.ends_with("keep");
            let dry = remove_tree(root.as_fd(), OsStr::new("x"), Path::new("x"), &keep, true).unwrap();
            assert_eq!(dry, (3, false), "y/f, y and up; x keeps `keep`");
            assert!(base.join("root/x/y/f").exists(), "a dry run removes nothing");
            let real = remove_tree(root.as_fd(), OsStr::new("x"), Path::new("x"), &keep, false).unwrap();
            assert_eq!(real, dry);
            assert_eq!(fs::read(base.join("outside")).unwrap(), b"keep");
            assert!(base.join("root/a/b").is_dir(), "the symlink `up` was not followed");
            assert!(base.join("root/x/keep").exists() && !base.join("root/x/y").exists());
            let none = |_: &Path| false;
            assert_eq!(
                remove_tree(root.as_fd(), OsStr::new("x"), Path::new("x"), &none, false).unwrap(),
                (2, true)
            );
            // A symlink to a directory is unlinked, never entered.
            assert_eq!(
                remove_tree(root.as_fd(), OsStr::new("s"), Path::new("s"), &none, false).unwrap(),
                (1, true)
            );
            assert!(base.join("root/a/b").is_dir());
            symlink(base.join("root/a"), base.join("root/s")).unwrap();
        });
    }

    #[test]
    fn files_replace_a_symlink_instead_of_writing_through_it() {
        both(|d, base| {
            let outside = base.join("outside");
            let root = d.dir(Path::new("")).unwrap();
            symlink(&outside, base.join("root/f")).unwrap();
            let f = create_file(root.as_fd(), OsStr::new("f")).unwrap();
            std::io::Write::write_all(&mut &f, b"new").unwrap();
            assert_eq!(std::fs::read(&outside).unwrap(), b"keep");
            assert!(!std::fs::symlink_metadata(base.join("root/f")).unwrap().is_symlink());
            // Writes and metadata only go to the inode that was created.
            let key = ino(f.as_fd()).unwrap();
            std::fs::remove_file(base.join("root/f")).unwrap();
            symlink(&outside, base.join("root/f")).unwrap();
            assert!(open_created(root.as_fd(), OsStr::new("f"), key, true).is_err());
            std::fs::remove_file(base.join("root/f")).unwrap();
            std::fs::hard_link(&outside, base.join("root/f")).unwrap();
            let e = open_created(root.as_fd(), OsStr::new("f"), key, true).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
            std::fs::remove_file(base.join("root/f")).unwrap();
        });
    }
}
