//! The kernel's side of the mount: `fuser`'s [`Filesystem`] answered from the [`View`], and
//! mounting and unmounting (the pure-Rust mount path: `mount(2)` on `/dev/fuse` as root,
//! else the `fusermount3` helper of the `fuse3` package).
//!
//! Everything is read-only: any open for writing is `EROFS`, and the mount itself is `ro`.
//! The kernel checks permissions from the stored modes and owners (`default_permissions`),
//! so `--allow-other` shows other users no more than the files' modes grant them.
//! Attributes and entries inside snapshots never change, so the kernel may keep them for an
//! hour; those of the namespace for a second, so a refresh shows soon.

use super::{InodeKind, MountOptions, View, ROOT};
use crate::error::{Error, Result};
use crate::format::tree::{NodeKind, Time};
use crate::repo::Repository;
use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, MountOption, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEntry, ReplyOpen, ReplyXattr, Request, SessionACL,
};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SNAPSHOT_TTL: Duration = Duration::from_secs(3600);
const NAMESPACE_TTL: Duration = Duration::from_secs(1);

struct Fs(Arc<View>);

type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

fn system_time(t: Time) -> SystemTime {
    if t.sec >= 0 {
        UNIX_EPOCH + Duration::new(t.sec as u64, t.nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(t.sec.unsigned_abs()) + Duration::from_nanos(t.nsec as u64)
    }
}

fn file_type(k: NodeKind) -> FileType {
    match k {
        NodeKind::File => FileType::RegularFile,
        NodeKind::Dir => FileType::Directory,
        NodeKind::Symlink => FileType::Symlink,
        NodeKind::Fifo => FileType::NamedPipe,
        NodeKind::CharDev => FileType::CharDevice,
        NodeKind::BlockDev => FileType::BlockDevice,
        NodeKind::Socket => FileType::Socket,
    }
}

impl Fs {
    /// The attributes of `ino` and how long the kernel may keep them.
    fn attr(&self, ino: u64) -> std::result::Result<(FileAttr, Duration), Errno> {
        let v = &self.0;
        let inode = v.get(ino).ok_or(Errno::ENOENT)?;
        let synthetic = |kind, perm, time: Time, size| FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: 0,
            atime: system_time(time),
            mtime: system_time(time),
            ctime: system_time(time),
            crtime: system_time(time),
            kind,
            perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: v.uid,
            gid: v.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        };
        Ok(match &inode.kind {
            InodeKind::Namespace(_) => (
                synthetic(FileType::Directory, 0o555, v.namespace_time(), 0),
                NAMESPACE_TTL,
            ),
            InodeKind::Link(t) => (
                synthetic(FileType::Symlink, 0o777, v.namespace_time(), t.len() as u64),
                NAMESPACE_TTL,
            ),
            InodeKind::Root { time, .. } => (synthetic(FileType::Directory, 0o555, *time, 0), SNAPSHOT_TTL),
            InodeKind::Entry { node: n, .. } => {
                let allocated = match &n.extents {
                    Some(ext) => ext.iter().map(|e| e.1).sum::<u64>().min(n.size),
                    None if n.kind == NodeKind::File => n.size,
                    None => 0,
                };
                let attr = FileAttr {
                    ino: INodeNo(ino),
                    size: match n.kind {
                        NodeKind::File => n.size,
                        NodeKind::Symlink => n.link_target.len() as u64,
                        _ => n.size,
                    },
                    blocks: allocated.div_ceil(512),
                    atime: system_time(n.atime),
                    mtime: system_time(n.mtime),
                    ctime: system_time(n.ctime),
                    crtime: system_time(n.mtime),
                    kind: file_type(n.kind),
                    perm: (n.mode & 0o7777) as u16,
                    nlink: n.nlink.clamp(1, u32::MAX as u64) as u32,
                    uid: n.uid,
                    gid: n.gid,
                    rdev: n.rdev as u32,
                    blksize: 4096,
                    flags: 0,
                };
                (attr, SNAPSHOT_TTL)
            }
        })
    }

    fn xattrs(&self, ino: u64) -> std::result::Result<Xattrs, Errno> {
        let inode = self.0.get(ino).ok_or(Errno::ENOENT)?;
        Ok(match &inode.kind {
            InodeKind::Entry { node, .. } => node.xattrs.clone(),
            _ => Vec::new(),
        })
    }
}

fn errno(e: i32) -> Errno {
    Errno::from_i32(e)
}

/// Answer an xattr request of `size` bytes (0: only the length) with `data`.
fn reply_sized(reply: ReplyXattr, size: u32, data: &[u8]) {
    if size == 0 {
        reply.size(data.len() as u32);
    } else if data.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(data);
    }
}

/// Adds (inode, offset, name, attributes, TTL) to a listing reply; true when it is full.
type AddEntry<'a> = dyn FnMut(u64, u64, &[u8], &FileAttr, Duration) -> bool + 'a;

impl Fs {
    /// The entries of directory `ino` from position `offset` (`.` and `..` first), each with
    /// its attributes, until `add` says the reply is full.
    fn list(&self, ino: u64, offset: u64, add: &mut AddEntry) -> std::result::Result<(), Errno> {
        let entries = self.0.entries(ino).map_err(errno)?;
        let parent = self.0.get(ino).map_or(ROOT, |i| i.parent);
        let dots = [(ino, &b"."[..]), (parent, &b".."[..])];
        let all = dots.into_iter().chain(entries.iter().map(|(n, i)| (*i, n.as_slice())));
        for (k, (child, name)) in all.enumerate().skip(offset as usize) {
            let (attr, ttl) = self.attr(child)?;
            if add(child, (k + 1) as u64, name, &attr, ttl) {
                break;
            }
        }
        Ok(())
    }
}

impl Filesystem for Fs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Directory listings carry each entry's attributes, so `find`, `ls -l` and `du` need
        // no lookup per entry (a kernel without READDIRPLUS gets plain listings).
        let _ = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self
            .0
            .lookup(parent.0, name.as_bytes())
            .map_err(errno)
            .and_then(|ino| self.attr(ino))
        {
            Ok((attr, ttl)) => reply.entry(&ttl, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino.0) {
            Ok((attr, ttl)) => reply.attr(&ttl, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.0.get(ino.0).as_deref().map(|i| &i.kind) {
            Some(InodeKind::Link(t)) => reply.data(t),
            Some(InodeKind::Entry { node, .. }) if node.kind == NodeKind::Symlink => reply.data(&node.link_target),
            Some(_) => reply.error(Errno::EINVAL),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        match self.0.get(ino.0) {
            // Contents never change: the kernel may keep what it read in its page cache.
            Some(_) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.0.read(ino.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        match self.list(ino.0, offset, &mut |child, off, name, attr, _| {
            reply.add(INodeNo(child), off, attr.kind, OsStr::from_bytes(name))
        }) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readdirplus(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        match self.list(ino.0, offset, &mut |child, off, name, attr, ttl| {
            reply.add(INodeNo(child), off, OsStr::from_bytes(name), &ttl, attr, Generation(0))
        }) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.xattrs(ino.0) {
            Ok(x) => match x.iter().find(|(k, _)| k.as_slice() == name.as_bytes()) {
                Some((_, v)) => reply_sized(reply, size, v),
                None => reply.error(Errno::NO_XATTR),
            },
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.xattrs(ino.0) {
            Ok(x) => {
                let mut list = Vec::new();
                for (k, _) in &x {
                    list.extend_from_slice(k);
                    list.push(0);
                }
                reply_sized(reply, size, &list);
            }
            Err(e) => reply.error(e),
        }
    }
}

/// A mounted repository; [`Mounted::unmount`] (or dropping it) unmounts.
pub struct Mounted {
    session: fuser::BackgroundSession,
    mountpoint: PathBuf,
}

impl Mounted {
    /// Whether the filesystem was unmounted from outside (`umount`, `fusermount3 -u`).
    pub fn is_finished(&self) -> bool {
        self.session.guard.is_finished()
    }

    /// Unmount and wait for the session to end. A mountpoint still in use (a shell inside
    /// it) is detached lazily instead: it disappears from the namespace now, and the kernel
    /// ends the last uses when this process exits.
    pub fn unmount(self) -> Result<()> {
        let mp = self.mountpoint.clone();
        if self.is_finished() {
            return Ok(());
        }
        match self.session.umount_and_join() {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                eprintln!(
                    "pbak: {} is busy (a process has a file or directory open there): detaching it lazily",
                    mp.display()
                );
                nix::mount::umount2(&mp, nix::mount::MntFlags::MNT_DETACH)
                    .map_err(|e| Error::io(&mp, std::io::Error::from_raw_os_error(e as i32)))
            }
            Err(e) => Err(Error::Usage(format!(
                "cannot unmount {}: {e}; unmount it with `fusermount3 -u {}` (or `umount` as root)",
                mp.display(),
                mp.display()
            ))),
        }
    }
}

/// Why `mountpoint` cannot take a mount, as one line with what to do.
fn check_mountpoint(mountpoint: &Path) -> Result<()> {
    let shown = mountpoint.display();
    let md = match std::fs::metadata(mountpoint) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Usage(format!(
                "mountpoint {shown} does not exist: create the directory first (`mkdir -p {shown}`)"
            )))
        }
        Err(e) => return Err(Error::Usage(format!("mountpoint {shown}: {e}"))),
    };
    if !md.is_dir() {
        return Err(Error::Usage(format!(
            "mountpoint {shown} is not a directory: give an empty directory"
        )));
    }
    let canonical = mountpoint.canonicalize().map_err(|e| Error::io(mountpoint, e))?;
    let parent = canonical.parent().unwrap_or(Path::new("/"));
    let pmd = std::fs::metadata(parent).map_err(|e| Error::io(parent, e))?;
    use std::os::unix::fs::MetadataExt;
    if pmd.dev() != md.dev() || pmd.ino() == md.ino() {
        return Err(Error::Usage(format!(
            "mountpoint {shown} is busy: something is already mounted there; unmount it (`fusermount3 -u {shown}` or `umount {shown}`) or use another directory"
        )));
    }
    if !Path::new("/dev/fuse").exists() {
        return Err(Error::Usage(
            "/dev/fuse is missing: load the FUSE module (`modprobe fuse`), or in a container pass the device in (`--device /dev/fuse`)".into(),
        ));
    }
    Ok(())
}

/// Mount `repo` read-only at `mountpoint` and serve it from background threads until the
/// returned [`Mounted`] is unmounted.
pub fn mount(repo: Repository, mountpoint: &Path, opts: &MountOptions) -> Result<Mounted> {
    check_mountpoint(mountpoint)?;
    let view = View::new(repo, opts.clone())?;
    view.start_prefetch(2);
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::FSName("pbak".into()),
        MountOption::Subtype("pbak".into()),
        MountOption::DefaultPermissions,
        MountOption::NoAtime,
    ];
    if opts.allow_other {
        config.acl = SessionACL::All;
    }
    config.n_threads = Some(4);
    let shown = mountpoint.display();
    let session = fuser::spawn_mount(Fs(view), mountpoint, &config).map_err(|e| {
        Error::Usage(match e.kind() {
            std::io::ErrorKind::NotFound => format!(
                "cannot mount at {shown}: {e}; install the `fuse3` package (fusermount3), or run as root"
            ),
            std::io::ErrorKind::PermissionDenied => format!(
                "cannot mount at {shown}: permission denied; run as root, or install `fuse3` and check that you own {shown} (with --allow-other: `user_allow_other` in /etc/fuse.conf)"
            ),
            _ => format!("cannot mount at {shown}: {e}"),
        })
    })?;
    Ok(Mounted {
        session,
        mountpoint: mountpoint.to_path_buf(),
    })
}
