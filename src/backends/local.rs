//! A repository on a local filesystem: every path that skips OpenDAL, in one place. Both fast
//! paths were measured: packs are spooled to a temporary file in `<root>/.tmp/` and renamed
//! into place (no pack in memory; same atomicity as `put`), and ranged reads are a plain
//! `pread` (OpenDAL's fs reader cost a runtime hop, a stat and a copy per read: 70% of a
//! structure-only `check`). The durability barrier is a `syncfs(2)`.
//!
//! Nothing here counts or throttles: callers run these through the meter (`meter.rs`) like
//! any other operation.

use super::{BResult, BackendError, Spool};
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

/// Below the root: pack spools (`pack-…`, see `spool.rs`) and OpenDAL's atomic writes.
pub(super) const TMP_DIR: &str = ".tmp";

/// The root directory of a local repository.
#[derive(Clone)]
pub(super) struct LocalRoot {
    /// Also the repository's name: a local `Location` displays as its path.
    root: String,
}

impl LocalRoot {
    /// `create`: a missing directory is not an error (for `init`); otherwise it is
    /// [`BackendError::Missing`].
    pub fn open(root: &str, create: bool) -> BResult<LocalRoot> {
        if !create && !Path::new(root).is_dir() {
            return Err(BackendError::Missing(root.to_string()));
        }
        Ok(LocalRoot { root: root.to_string() })
    }

    fn tmp(&self) -> PathBuf {
        Path::new(&self.root).join(TMP_DIR)
    }

    /// A new pack spool: a fresh file `<root>/.tmp/pack-<random>`.
    pub fn spool(&self) -> BResult<Spool> {
        let dir = self.tmp();
        let mut r = [0u8; 8];
        getrandom::getrandom(&mut r).expect("the OS random source is unavailable");
        let path = dir.join(format!("pack-{}", hex::encode(r)));
        let local = |source| BackendError::Local {
            op: "create",
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(local)?;
        Spool::file(path.clone()).map_err(local)
    }

    /// Remove every `pack-…` file in `<root>/.tmp/`; how many were removed.
    pub fn remove_stale_spools(&self) -> BResult<usize> {
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
        for e in entries {
            let e = e.map_err(fail)?;
            if e.file_name().as_encoded_bytes().starts_with(b"pack-") {
                std::fs::remove_file(e.path()).map_err(fail)?;
                n += 1;
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
        std::io::Write::flush(out).map_err(|e| local("write", e))?;
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir).map_err(|e| local("create directory for", e))?;
        }
        let from = tmp.as_ref().expect("an unstored spool has its file");
        std::fs::rename(from, &dest).map_err(|e| local("rename into", e))?;
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
        buf.clear();
        // Exact: growing by doubling left reused windows at twice the window size.
        buf.reserve_exact(len as usize);
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

    /// syncfs(2) on the repository's filesystem: every write and rename so far is durable.
    pub fn barrier(&self) -> BResult<()> {
        let root = &self.root;
        let f = File::open(root).map_err(|e| BackendError::Sync(root.to_string(), e))?;
        rustix::fs::syncfs(&f).map_err(|e| BackendError::Sync(root.to_string(), e.into()))?;
        Ok(())
    }
}
