//! Between the filesystem and tree nodes: read a path's metadata (mode, owners, times,
//! xattrs incl. POSIX ACLs, device numbers, sparse extents) into a [`Node`], and apply a
//! node's metadata to a restored path. Nothing here follows a symlink.
//!
//! A source file is read only through [`open_source_file`]: opened without following a
//! symlink and without blocking (a FIFO swapped in cannot hang the reader), and accepted only
//! when the descriptor is a regular file with the device and inode its `lstat` showed.

use crate::format::tree::{Node, NodeKind, Time};
use rustix::fs::{AtFlags, Timespec, Timestamps, CWD};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::OnceLock;

fn time(sec: i64, nsec: i64) -> Time {
    Time { sec, nsec: nsec as u32 }
}

pub fn kind_of(ft: std::fs::FileType) -> NodeKind {
    if ft.is_dir() {
        NodeKind::Dir
    } else if ft.is_symlink() {
        NodeKind::Symlink
    } else if ft.is_fifo() {
        NodeKind::Fifo
    } else if ft.is_char_device() {
        NodeKind::CharDev
    } else if ft.is_block_device() {
        NodeKind::BlockDev
    } else if ft.is_socket() {
        NodeKind::Socket
    } else {
        NodeKind::File
    }
}

/// uid/gid → name, read once from /etc/passwd and /etc/group.
fn names() -> &'static (HashMap<u32, String>, HashMap<u32, String>) {
    static NAMES: OnceLock<(HashMap<u32, String>, HashMap<u32, String>)> = OnceLock::new();
    NAMES.get_or_init(|| {
        let parse = |file: &str| {
            std::fs::read_to_string(file)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| {
                    let mut f = l.split(':');
                    let name = f.next()?;
                    let id = f.nth(1)?.parse().ok()?;
                    Some((id, name.to_string()))
                })
                .collect()
        };
        (parse("/etc/passwd"), parse("/etc/group"))
    })
}

/// Extended attributes (including `system.posix_acl_*`) of `path`, not following symlinks.
/// Attributes that vanish or cannot be read are skipped.
pub fn read_xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let size = match rustix::fs::llistxattr_query(path) {
        Ok(s) => s,
        Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    if size == 0 {
        return Ok(Vec::new());
    }
    let mut list = vec![0u8; size + 256];
    let n = rustix::fs::llistxattr(path, &mut list[..])?;
    let mut out = Vec::new();
    for name in list[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name_os = OsStr::from_bytes(name);
        let Ok(vsize) = rustix::fs::lgetxattr_query(path, name_os) else {
            continue;
        };
        let mut val = vec![0u8; vsize];
        match rustix::fs::lgetxattr(path, name_os, &mut val[..]) {
            Ok(len) => {
                val.truncate(len);
                out.push((name.to_vec(), val));
            }
            Err(_) => continue,
        }
    }
    out.sort();
    Ok(out)
}

/// A node with everything but content/subtree/extents filled in from `md` (the `lstat` of
/// `path`). The symlink target and xattrs are read by path, after the `lstat`: when there are
/// any, `path` is checked again to be the inode `md` described (same device, inode and ctime),
/// so that a swap in between cannot give one node another inode's target or xattrs; if it is
/// not, the entry is refused as changed while read.
pub fn node_from_metadata(name: &[u8], path: &Path, md: &std::fs::Metadata) -> io::Result<Node> {
    let kind = kind_of(md.file_type());
    let (users, groups) = names();
    let link_target = if kind == NodeKind::Symlink {
        std::fs::read_link(path)?.into_os_string().into_encoded_bytes()
    } else {
        Vec::new()
    };
    let xattrs = read_xattrs(path)?;
    if kind == NodeKind::Symlink || !xattrs.is_empty() {
        let now = std::fs::symlink_metadata(path)?;
        let id = |m: &std::fs::Metadata| (m.dev(), m.ino(), m.ctime(), m.ctime_nsec());
        if id(&now) != id(md) {
            return Err(changed("it was replaced or its attributes changed"));
        }
    }
    Ok(Node {
        name: name.to_vec(),
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        user: users.get(&md.uid()).cloned().unwrap_or_default(),
        group: groups.get(&md.gid()).cloned().unwrap_or_default(),
        mtime: time(md.mtime(), md.mtime_nsec()),
        atime: time(md.atime(), md.atime_nsec()),
        ctime: time(md.ctime(), md.ctime_nsec()),
        inode: md.ino(),
        device: md.dev(),
        nlink: md.nlink(),
        rdev: md.rdev(),
        size: if kind == NodeKind::File || kind == NodeKind::Symlink {
            md.size()
        } else {
            0
        },
        link_target,
        xattrs,
        content: Vec::new(),
        subtree: None,
        extents: None,
    })
}

/// Data regions of a file that has fewer blocks than its size suggests, or `None` when the
/// file is dense. Uses SEEK_DATA/SEEK_HOLE.
pub fn data_extents(file: &std::fs::File, md: &std::fs::Metadata) -> io::Result<Option<Vec<(u64, u64)>>> {
    let size = md.size();
    if size == 0 || md.blocks() * 512 >= size {
        return Ok(None);
    }
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let data = match rustix::fs::seek(file, rustix::fs::SeekFrom::Data(pos)) {
            Ok(d) => d,
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let hole = rustix::fs::seek(file, rustix::fs::SeekFrom::Hole(data))?.min(size);
        if hole > data {
            out.push((data, hole - data));
        }
        pos = hole;
    }
    rustix::fs::seek(file, rustix::fs::SeekFrom::Start(0))?;
    Ok(Some(out))
}

/// Which metadata a restore could not apply (not an error: ownership needs root).
#[derive(Default, Debug)]
pub struct ApplyWarnings {
    pub owner_skipped: bool,
    /// Extended attributes that could not be set (the rest of the metadata was applied).
    pub failed: Vec<String>,
}

fn ts(t: Time) -> Timespec {
    Timespec {
        tv_sec: t.sec,
        tv_nsec: t.nsec as _,
    }
}

/// Apply owner, mode, xattrs and times of `node` to `path` (in that order: chown clears
/// setuid bits, and every change touches ctime/mtime of the path itself).
pub fn apply_metadata(path: &Path, node: &Node, is_root: bool) -> io::Result<ApplyWarnings> {
    let mut w = ApplyWarnings::default();
    let uid = rustix::fs::Uid::from_raw(node.uid);
    let gid = rustix::fs::Gid::from_raw(node.gid);
    match rustix::fs::chownat(CWD, path, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW) {
        Ok(()) => {}
        Err(rustix::io::Errno::PERM) if !is_root => w.owner_skipped = true,
        Err(e) => return Err(e.into()),
    }
    if node.kind != NodeKind::Symlink {
        rustix::fs::chmodat(CWD, path, rustix::fs::Mode::from_raw_mode(node.mode), AtFlags::empty())?;
    }
    for (name, value) in &node.xattrs {
        let name_os = OsStr::from_bytes(name);
        match rustix::fs::lsetxattr(path, name_os, value, rustix::fs::XattrFlags::empty()) {
            Ok(()) => {}
            // security.*/trusted.* need root; a filesystem may lack xattr support.
            Err(rustix::io::Errno::PERM | rustix::io::Errno::NOTSUP) if !is_root => {}
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("xattr {}: {e}", String::from_utf8_lossy(name)),
                ))
            }
        }
    }
    let times = Timestamps {
        last_access: ts(node.atime),
        last_modification: ts(node.mtime),
    };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(w)
}

/// Create a special file (FIFO, device node) at `path`.
pub fn make_special(path: &Path, node: &Node) -> io::Result<()> {
    use rustix::fs::FileType;
    let ft = match node.kind {
        NodeKind::Fifo => FileType::Fifo,
        NodeKind::CharDev => FileType::CharacterDevice,
        NodeKind::BlockDev => FileType::BlockDevice,
        _ => return Err(io::Error::other("not a special file")),
    };
    rustix::fs::mknodat(
        CWD,
        path,
        ft,
        rustix::fs::Mode::from_raw_mode(node.mode & 0o777),
        node.rdev,
    )?;
    Ok(())
}

/// Open the file at `p` that `lstat` described as `seen`, for reading a backup source:
/// `O_NOFOLLOW | O_NONBLOCK | O_NOATIME` (without `O_NOATIME` where it is not permitted), then
/// `fstat` the descriptor. Anything but the regular file `seen` described (same device and
/// inode) is refused with an error saying it changed while read: a symlink, FIFO, device or
/// other file swapped in between the `lstat` and the open is never read. Returns the
/// descriptor's own metadata: read at most its size.
pub fn open_source_file(p: &Path, seen: &std::fs::Metadata) -> io::Result<(std::fs::File, std::fs::Metadata)> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match rustix::fs::open(p, flags | OFlags::NOATIME, Mode::empty()) {
        Err(rustix::io::Errno::PERM) => rustix::fs::open(p, flags, Mode::empty()),
        r => r,
    };
    let fd = fd.map_err(|e| match e {
        // O_NOFOLLOW on a symlink.
        rustix::io::Errno::LOOP => changed("it is now a symlink"),
        e => e.into(),
    })?;
    let file = std::fs::File::from(fd);
    let md = file.metadata()?;
    if !md.file_type().is_file() {
        let what = format!("it is now a {:?}", kind_of(md.file_type())).to_lowercase();
        return Err(changed(&what));
    }
    if (md.dev(), md.ino()) != (seen.dev(), seen.ino()) {
        return Err(changed("it is now another file"));
    }
    Ok((file, md))
}

fn changed(what: &str) -> io::Error {
    io::Error::other(format!("changed while read ({what}); skipped"))
}

/// Open for reading without updating atime where permitted (owner or root), so a backup or
/// a verification pass leaves the times it reads untouched.
pub fn open_noatime(p: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let r = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOATIME.bits() as i32)
        .open(p);
    match r {
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::PERM.raw_os_error()) => std::fs::File::open(p),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `lstat` saw a regular file; by the open something else is at the path.
    fn refused(dir: &Path, swap: impl FnOnce(&Path)) -> String {
        let p = dir.join("f");
        std::fs::write(&p, b"data").unwrap();
        let seen = std::fs::symlink_metadata(&p).unwrap();
        std::fs::remove_file(&p).unwrap();
        swap(&p);
        let e = open_source_file(&p, &seen).unwrap_err().to_string();
        assert!(e.contains("changed while read"), "{e}");
        match std::fs::symlink_metadata(&p).unwrap().is_dir() {
            true => std::fs::remove_dir(&p).unwrap(),
            false => std::fs::remove_file(&p).unwrap(),
        }
        e
    }

    #[test]
    fn a_swapped_in_fifo_symlink_or_file_is_refused_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let fifo = |p: &Path| rustix::fs::mknodat(CWD, p, rustix::fs::FileType::Fifo, 0o644.into(), 0).unwrap();
        assert!(refused(d.path(), fifo).contains("fifo"));
        let zero = |p: &Path| std::os::unix::fs::symlink("/dev/zero", p).unwrap();
        assert!(refused(d.path(), zero).contains("symlink"));
        std::fs::write(d.path().join("other"), b"secret").unwrap();
        let link = |p: &Path| std::os::unix::fs::symlink(d.path().join("other"), p).unwrap();
        refused(d.path(), link);
        let moved = |p: &Path| std::fs::rename(d.path().join("other"), p).unwrap();
        assert!(refused(d.path(), moved).contains("another file"));
        let dir = |p: &Path| std::fs::create_dir(p).unwrap();
        assert!(refused(d.path(), dir).contains("dir"));
    }

    #[test]
    fn the_file_lstat_saw_opens_with_its_own_metadata() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, b"data").unwrap();
        let seen = std::fs::symlink_metadata(&p).unwrap();
        std::fs::write(&p, b"data grown").unwrap();
        let (_, md) = open_source_file(&p, &seen).unwrap();
        assert_eq!(md.len(), 10);
    }
}
