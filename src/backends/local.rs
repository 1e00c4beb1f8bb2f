//! A repository on a local filesystem: every path that skips OpenDAL, in one place. Both fast
//! paths were measured: packs are spooled to a temporary file in `<root>/.tmp/` and renamed
//! into place (no pack in memory; same atomicity as `put`), and ranged reads are a plain
//! `pread` (OpenDAL's fs reader cost a runtime hop, a stat and a copy per read: 70% of a
//! structure-only `check`). The durability barrier is a `syncfs(2)`.
//!
//! Every object of a local repository is written here, never through OpenDAL's fs writer, so
//! that what pbak creates is private whatever the umask (as restic does): directories 0700,
//! files 0600. The key files are what an offline password attack needs; the rest leaks sizes
//! and counts. Existing files and directories are never chmod-ed: a repository created
//! before (0755/0644) keeps its modes and keeps working; only what is new is private.
//!
//! A `put` writes `<root>/.tmp/<name>.<random>`, fsyncs it and renames it into place (atomic,
//! as OpenDAL's fs writer was); a write that fails (ENOSPC) removes its temporary file.
//!
//! Nothing here counts or throttles: callers run these through the meter (`meter.rs`) like
//! any other operation.

use super::{BResult, BackendError, Spool};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Below the root: pack spools (`pack-…`, see `spool.rs`) and the temporary files of `put`
/// (`<name>.<random>`, the names OpenDAL's atomic writes used before).
pub(super) const TMP_DIR: &str = ".tmp";

/// Mode of every directory pbak creates in a local repository (before the umask).
pub(super) const DIR_MODE: u32 = 0o700;
/// Mode of every file pbak creates in a local repository (before the umask).
pub(super) const FILE_MODE: u32 = 0o600;

/// Create `dir` and its missing parents with [`DIR_MODE`]; existing ones are left as they are.
pub(super) fn create_dirs(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// A new file, which must not exist, with [`FILE_MODE`], open for reading and writing.
pub(super) fn create_file(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .read(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
}

pub(super) fn random_hex() -> String {
    let mut r = [0u8; 8];
    getrandom::getrandom(&mut r).expect("the OS random source is unavailable");
    hex::encode(r)
}

/// The root directory of a local repository.
#[derive(Clone)]
pub(super) struct LocalRoot {
    /// Also the repository's name: a local `Location` displays as its path.
    root: String,
}

impl LocalRoot {
    /// `create`: a missing directory is not an error (for `init`); otherwise it is
    /// [`BackendError::Missing`].
    /// A root that `create` makes is 0700 (its missing parents get the umask's usual modes);
    /// an existing one is left as it is. `.tmp/` is created here when missing (OpenDAL's
    /// operator wants it), 0700 too.
    pub fn open(root: &str, create: bool) -> BResult<LocalRoot> {
        let dir = Path::new(root);
        if !dir.is_dir() {
            if !create {
                return Err(BackendError::Missing(root.to_string()));
            }
            let made = match dir.parent() {
                Some(parent) => std::fs::create_dir_all(parent),
                None => Ok(()),
            };
            made.and_then(|()| create_dirs(dir))
                .map_err(|source| BackendError::Local {
                    op: "create",
                    path: root.to_string(),
                    source,
                })?;
        }
        let l = LocalRoot { root: root.to_string() };
        let tmp = l.tmp();
        if !tmp.is_dir() {
            create_dirs(&tmp).map_err(|source| BackendError::Local {
                op: "create",
                path: tmp.display().to_string(),
                source,
            })?;
        }
        Ok(l)
    }

    fn tmp(&self) -> PathBuf {
        Path::new(&self.root).join(TMP_DIR)
    }

    /// A new pack spool: a fresh file `<root>/.tmp/pack-<random>`.
    pub fn spool(&self) -> BResult<Spool> {
        let dir = self.tmp();
        let path = dir.join(format!("pack-{}", random_hex()));
        let local = |source| BackendError::Local {
            op: "create",
            path: path.display().to_string(),
            source,
        };
        create_dirs(&dir).map_err(local)?;
        Spool::file(path.clone()).map_err(local)
    }

    /// Store the concatenation of `parts` under `path` atomically: a new 0600 file in
    /// `.tmp/`, fsynced, renamed into place (parent directories created 0700). On any error
    /// the temporary file is removed.
    pub fn put(&self, path: &str, parts: &[&[u8]]) -> BResult<()> {
        let dest = Path::new(&self.root).join(path);
        let base = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = self.tmp();
        let tmp = dir.join(format!("{base}.{}", random_hex()));
        let local = |op, source| BackendError::Local {
            op,
            path: dest.display().to_string(),
            source,
        };
        create_dirs(&dir).map_err(|e| local("create directory for", e))?;
        let mut f = create_file(&tmp).map_err(|e| local("write", e))?;
        let written = parts
            .iter()
            .try_for_each(|p| f.write_all(p))
            .and_then(|()| f.sync_all())
            .map_err(|e| local("write", e))
            .and_then(|()| self.rename_into_place(&tmp, &dest));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    /// Store `data` under `path` only if nothing is there: a fsynced temporary file, hard
    /// linked into place (the link fails if the name exists, atomically), then removed.
    /// `Ok(false)` if the name was taken; an error also where the filesystem cannot link.
    pub fn put_new(&self, path: &str, data: &[u8]) -> BResult<bool> {
        let dest = Path::new(&self.root).join(path);
        let dir = self.tmp();
        let tmp = dir.join(format!("new.{}", random_hex()));
        let local = |op, source| BackendError::Local {
            op,
            path: dest.display().to_string(),
            source,
        };
        create_dirs(&dir).map_err(|e| local("create directory for", e))?;
        let written = create_file(&tmp)
            .and_then(|mut f| f.write_all(data).and_then(|()| f.sync_all()))
            .map_err(|e| local("write", e))
            .and_then(|()| match std::fs::hard_link(&tmp, &dest) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(local("link into", e)),
            });
        let _ = std::fs::remove_file(&tmp);
        written
    }

    /// Rename `from` to `dest`, creating `dest`'s missing parents 0700.
    fn rename_into_place(&self, from: &Path, dest: &Path) -> BResult<()> {
        let local = |op, source| BackendError::Local {
            op,
            path: dest.display().to_string(),
            source,
        };
        if let Some(dir) = dest.parent() {
            create_dirs(dir).map_err(|e| local("create directory for", e))?;
        }
        std::fs::rename(from, dest).map_err(|e| local("rename into", e))
    }

    /// Remove every file in `<root>/.tmp/` (pack spools and `put` temporaries that a killed
    /// or failed process left) at least `min_age` old; how many were removed. A younger one
    /// may belong to a backup still running on another host.
    pub fn remove_stale_spools(&self, min_age: std::time::Duration) -> BResult<usize> {
        let dir = self.tmp();
        let fail = |source| BackendError::Local {
            op: "clean up",
            path: dir.display().to_string(),
            source,
        };
        let entries = match std::fs::read_dir(&dir) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(fail(e)),
        };
        let mut n = 0;
        let now = SystemTime::now();
        // Another process's spool or temporary may be renamed into place or removed between
        // the listing and the look at it: one that is gone is not an error.
        let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
        for e in entries {
            let e = e.map_err(fail)?;
            let meta = match e.metadata() {
                Ok(m) => m,
                Err(err) if gone(&err) => continue,
                Err(err) => return Err(fail(err)),
            };
            if !meta.is_file() {
                continue;
            }
            let old = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|age| age >= min_age);
            if old {
                match std::fs::remove_file(e.path()) {
                    Ok(()) => n += 1,
                    Err(err) if gone(&err) => {}
                    Err(err) => return Err(fail(err)),
                }
            }
        }
        Ok(n)
    }

    /// Flush a file spool and rename it to `path`; `tmp` becomes `None` once it is there (the
    /// next [`LocalRoot::barrier`] makes it durable).
    pub fn rename_spool(&self, path: &str, out: &mut BufWriter<File>, tmp: &mut Option<PathBuf>) -> BResult<()> {
        let dest = Path::new(&self.root).join(path);
        let local = |op, source| BackendError::Local {
            op,
            path: dest.display().to_string(),
            source,
        };
        out.flush().map_err(|e| local("write", e))?;
        let from = tmp.as_ref().expect("an unstored spool has its file");
        self.rename_into_place(from, &dest)?;
        *tmp = None;
        Ok(())
    }

    /// Read `len` bytes at `offset` of `path` into `buf` (replacing its contents) with
    /// `pread`; returns how many were read. A short file gives a short buffer, as a ranged GET
    /// past the end would.
    pub fn read_range_into(&self, path: &str, offset: u64, len: u64, buf: &mut Vec<u8>) -> BResult<usize> {
        let full = Path::new(&self.root).join(path);
        let fail = |source: std::io::Error| match source.kind() {
            std::io::ErrorKind::NotFound => BackendError::NotFound {
                repo: self.root.clone(),
                path: path.to_string(),
            },
            _ => BackendError::Local {
                op: "read",
                path: full.display().to_string(),
                source,
            },
        };
        let f = File::open(&full).map_err(fail)?;
        // Exact: growing by doubling left reused windows at twice the window size. The old
        // contents are kept to be read over (and cut at what was read): clearing first
        // zeroed every window again (1% of `check --read-data`).
        buf.reserve_exact((len as usize).saturating_sub(buf.len()));
        buf.resize(len as usize, 0);
        let mut done = 0;
        while done < buf.len() {
            match std::os::unix::fs::FileExt::read_at(&f, &mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(fail(e)),
            }
        }
        buf.truncate(done);
        Ok(done)
    }

    /// Ask the kernel to start reading the byte ranges `(start, end)` of `path` into the page
    /// cache (`posix_fadvise(WILLNEED)`: the reads are queued, not waited for), so that a
    /// reader busy with the bytes before them finds these cached. Best effort: a missing file
    /// or a refused hint is left to the read that follows.
    pub fn will_need(&self, path: &str, ranges: &[(u64, u64)]) {
        let Ok(f) = File::open(Path::new(&self.root).join(path)) else {
            return;
        };
        for &(start, end) in ranges {
            if let Some(len) = std::num::NonZeroU64::new(end.saturating_sub(start)) {
                let _ = rustix::fs::fadvise(&f, start, Some(len), rustix::fs::Advice::WillNeed);
            }
        }
    }

    /// The size of the file `path`.
    pub fn size(&self, path: &str) -> BResult<u64> {
        let full = Path::new(&self.root).join(path);
        match std::fs::symlink_metadata(&full) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(BackendError::NotFound {
                repo: self.root.clone(),
                path: path.to_string(),
            }),
            Err(source) => Err(BackendError::Local {
                op: "stat",
                path: full.display().to_string(),
                source,
            }),
        }
    }

    /// syncfs(2) on the repository's filesystem: every write and rename so far is durable.
    pub fn barrier(&self) -> BResult<()> {
        let root = &self.root;
        let f = File::open(root).map_err(|e| BackendError::Sync(root.to_string(), e))?;
        rustix::fs::syncfs(&f).map_err(|e| BackendError::Sync(root.to_string(), e.into()))?;
        Ok(())
    }
}
