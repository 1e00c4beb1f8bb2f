//! Reading a source tree that its users change while a backup reads it, through directory
//! descriptors: a directory is opened once (`O_DIRECTORY | O_NOFOLLOW`), checked to be the
//! directory its `lstat` showed (device and inode), listed through that descriptor, and its
//! entries are reached through it. Swapping a directory (or any of its ancestors) for a
//! symlink after it was opened cannot redirect what the backup reads below it.
//!
//! An entry is looked up by its plain path (fast: the kernel's path walk is cheapest there),
//! and the result is taken only if it is the inode this directory's own listing named (device
//! and inode): a directory above it swapped for a symlink would give another inode. Otherwise
//! it is looked up again as `/proc/self/fd/N/NAME`, which the kernel resolves through the open
//! directory itself; the calls made on an entry (`lstat`, `readlink`, `llistxattr`, an
//! `O_NOFOLLOW` open) never follow its last component, and what they find is checked against
//! that `lstat` again by their callers. Where `/proc` is not mounted, the plain path is all
//! there is (the directory itself is still checked when it is opened).

use rustix::fs::{Mode, OFlags, CWD};
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Open a directory without moving its access time when listed (`O_NOATIME`, which needs the
/// owner or root; without it otherwise).
fn open_noatime(p: &Path, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    match rustix::fs::openat(CWD, p, flags | OFlags::NOATIME, Mode::empty()) {
        Err(rustix::io::Errno::PERM) => rustix::fs::openat(CWD, p, flags, Mode::empty()),
        r => r,
    }
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::NONBLOCK)
    .union(OFlags::CLOEXEC);

fn proc_fd() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| Path::new("/proc/self/fd").is_dir())
}

/// One listed entry of a [`SourceDir`].
pub struct Entry {
    pub name: Vec<u8>,
    pub ino: u64,
}

/// A directory of the source, open and checked.
pub struct SourceDir {
    fd: OwnedFd,
    /// Its device: entries on it that are not mount points share it.
    dev: u64,
    /// Where it is in the source (for messages and the change filter).
    read: PathBuf,
}

impl SourceDir {
    /// Open `read` itself (a backup source: a symlink named as the source is followed, as
    /// the user asked for it).
    pub fn open_root(read: &Path) -> io::Result<SourceDir> {
        let fd = open_noatime(read, DIR_FLAGS - OFlags::NOFOLLOW)?;
        let dev = rustix::fs::fstat(&fd)?.st_dev;
        Ok(SourceDir {
            fd,
            dev,
            read: read.to_path_buf(),
        })
    }

    /// Open the directory that `access` names (an entry path from [`SourceDir::entry`], or
    /// a plain path), if it still is the directory `seen` (its `lstat`) described.
    pub fn open_checked(access: &Path, read: &Path, seen: &std::fs::Metadata) -> io::Result<SourceDir> {
        let fd = open_noatime(access, DIR_FLAGS).map_err(|e| match e {
            rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => changed("it is no longer a directory"),
            e => e.into(),
        })?;
        let st = rustix::fs::fstat(&fd)?;
        if (st.st_dev, st.st_ino) != (seen.dev(), seen.ino()) {
            return Err(changed("it is now another directory"));
        }
        Ok(SourceDir {
            fd,
            dev: st.st_dev,
            read: read.to_path_buf(),
        })
    }

    /// Where this directory is in the source.
    pub fn read_path(&self) -> &Path {
        &self.read
    }

    /// The entry `name`, listed with inode `ino`: the path to reach it by and its `lstat`
    /// (see the module comment).
    pub fn stat_entry(&self, name: &[u8], ino: u64) -> io::Result<(PathBuf, std::fs::Metadata)> {
        let plain = self.read.join(OsStr::from_bytes(name));
        if let Ok(md) = std::fs::symlink_metadata(&plain) {
            if (md.dev(), md.ino()) == (self.dev, ino) {
                return Ok((plain, md));
            }
        }
        let anchored = self.entry(name);
        let md = std::fs::symlink_metadata(&anchored)?;
        Ok((anchored, md))
    }

    /// The path through which the entry `name` is reached relative to this descriptor.
    pub fn entry(&self, name: &[u8]) -> PathBuf {
        if !proc_fd() {
            return self.read.join(OsStr::from_bytes(name));
        }
        let mut p = format!("/proc/self/fd/{}/", self.fd.as_raw_fd()).into_bytes();
        p.extend_from_slice(name);
        PathBuf::from(std::ffi::OsString::from_vec(p))
    }

    /// The entries (without `.` and `..`), in name order; entries that cannot be read are
    /// returned as errors beside the rest.
    pub fn list(&self) -> io::Result<(Vec<Entry>, Vec<io::Error>)> {
        let mut dir = rustix::fs::Dir::read_from(self.fd.as_fd())?;
        let (mut out, mut errors) = (Vec::new(), Vec::new());
        while let Some(e) = dir.read() {
            match e {
                Ok(e) => {
                    let name = e.file_name().to_bytes();
                    if name != b"." && name != b".." {
                        out.push(Entry {
                            name: name.to_vec(),
                            ino: e.ino(),
                        });
                    }
                }
                Err(e) => {
                    errors.push(e.into());
                    break;
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok((out, errors))
    }

    /// The directory's own descriptor (for `openat` of an entry such as `CACHEDIR.TAG`).
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn changed(what: &str) -> io::Error {
    io::Error::other(format!("changed while read ({what}); skipped"))
}

/// Raise this process's soft limit of open descriptors to its hard limit: a walk holds one
/// descriptor per directory it is inside, and a deep tree needs more than the usual 1024.
pub fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current < lim.maximum {
        lim.current = lim.maximum;
        let _ = setrlimit(Resource::Nofile, lim);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_stay_inside_the_opened_directory_after_it_is_swapped_for_a_symlink() {
        let t = tempfile::tempdir().unwrap();
        let (d, moved, secret) = (t.path().join("d"), t.path().join("moved"), t.path().join("secret"));
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("f"), b"mine").unwrap();
        std::fs::create_dir(&secret).unwrap();
        std::fs::write(secret.join("f"), b"root only").unwrap();
        let seen = std::fs::symlink_metadata(&d).unwrap();
        let dir = SourceDir::open_checked(&d, &d, &seen).unwrap();
        std::fs::rename(&d, &moved).unwrap();
        std::os::unix::fs::symlink(&secret, &d).unwrap();
        assert_eq!(std::fs::read(dir.entry(b"f")).unwrap(), b"mine");
        let (names, errors) = dir.list().unwrap();
        assert!(errors.is_empty());
        assert_eq!(names.iter().map(|e| e.name.as_slice()).collect::<Vec<_>>(), [b"f"]);
        // Opening the swapped path again is refused: it is a symlink now.
        let e = SourceDir::open_checked(&d, &d, &seen).err().unwrap().to_string();
        assert!(e.contains("no longer a directory"), "{e}");
        let e = SourceDir::open_checked(&secret, &d, &seen).err().unwrap().to_string();
        assert!(e.contains("another directory"), "{e}");
    }
}
