//! The local cache of a repository's metadata: index files, snapshots and tree packs, kept in
//! `<root>/<repo id>/` under the same names as in the repository. Root: `PBAK_CACHE_DIR`,
//! else `$XDG_CACHE_HOME/pbak`, else `~/.cache/pbak`; directories are created mode 0700.
//!
//! What must hold:
//! - Every cached object is content-addressed, so an entry is trusted only if the BLAKE3 of its
//!   bytes equals its name; a wrong entry is deleted and fetched again, silently.
//! - The cache is an optimisation only: a failure to read or write it is never an error, the
//!   repository is read instead.
//! - Entries whose objects left the repository (deleted by prune) are removed when a listing
//!   (index, snapshots) or the loaded index (packs) shows them gone.
//! - Cached bytes are stored sealed, exactly as in the repository: nothing here is plaintext.

use crate::ids::{PackId, RepoId};
use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The cache root from the environment, if one can be named.
pub fn default_root() -> Option<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    env("PBAK_CACHE_DIR")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("pbak")))
        .or_else(|| env("HOME").map(|h| h.join(".cache/pbak")))
}

const CACHEDIR_TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n\
# This directory is pbak's cache of repository metadata; backups may skip it.\n";

pub struct Cache {
    dir: PathBuf,
    /// Tree packs whose cached file matched its name in this process: later reads of their
    /// blobs read ranges without hashing the whole file again (each blob is still
    /// authenticated when opened).
    verified: Mutex<HashSet<PackId>>,
    /// Serialises whole-pack downloads, so concurrent tree reads fetch a pack once.
    fetching: Mutex<()>,
}

fn private_dir(p: &Path) -> std::io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(p)?;
    fs::set_permissions(p, fs::Permissions::from_mode(0o700))
}

impl Cache {
    /// Open (creating) the cache of repository `id` under `root`; `None` if it cannot be made.
    pub fn open(root: &Path, id: &RepoId) -> Option<Cache> {
        let dir = root.join(id.to_hex());
        private_dir(root).ok()?;
        private_dir(&dir).ok()?;
        let tag = root.join("CACHEDIR.TAG");
        if !tag.exists() {
            let _ = fs::write(tag, CACHEDIR_TAG);
        }
        Some(Cache {
            dir,
            verified: Mutex::default(),
            fetching: Mutex::default(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cached copy of object `name`, if it is there and its bytes hash to `id`.
    pub fn get(&self, name: &str, id: &[u8; 32]) -> Option<Vec<u8>> {
        let path = self.dir.join(name);
        let bytes = fs::read(&path).ok()?;
        if blake3::hash(&bytes).as_bytes() == id {
            Some(bytes)
        } else {
            let _ = fs::remove_file(path);
            None
        }
    }

    /// Store a copy of object `name` (atomically: a reader never sees half a file).
    pub fn put(&self, name: &str, bytes: &[u8]) {
        self.write_with(name, |f| f.write_all(bytes));
    }

    /// Write file `name` with `write` into a temporary file, renamed into place only if it
    /// succeeded (a reader never sees half a file).
    pub fn write_with(&self, name: &str, write: impl FnOnce(&mut fs::File) -> std::io::Result<()>) {
        let path = self.dir.join(name);
        let Some(parent) = path.parent() else { return };
        if private_dir(parent).is_err() {
            return;
        }
        let mut r = [0u8; 8];
        crate::format::crypto::random(&mut r);
        let tmp = parent.join(format!(".tmp-{}", hex::encode(r)));
        let ok = fs::File::create(&tmp).and_then(|mut f| write(&mut f)).is_ok();
        if !ok || fs::rename(&tmp, &path).is_err() {
            let _ = fs::remove_file(&tmp);
        }
    }

    /// Open cache file `name` for reading, if it is there.
    pub fn open_file(&self, name: &str) -> Option<fs::File> {
        fs::File::open(self.dir.join(name)).ok()
    }

    /// Forget object `name` (its copy turned out unusable).
    pub fn remove(&self, name: &str) {
        let _ = fs::remove_file(self.dir.join(name));
    }

    /// Delete every file below `dir` whose file name `keep` rejects.
    pub fn retain(&self, dir: &str, keep: impl Fn(&str) -> bool) {
        let mut stack = vec![self.dir.join(dir)];
        while let Some(d) = stack.pop() {
            let Ok(rd) = fs::read_dir(&d) else { continue };
            for e in rd.flatten() {
                let p = e.path();
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(p);
                } else if !keep(&e.file_name().to_string_lossy()) {
                    let _ = fs::remove_file(p);
                }
            }
        }
    }

    /// `len` bytes at `offset` of pack `id` (object `name`), from the cached copy of the whole
    /// pack, downloading it with `fetch` if it is missing or wrong. `Ok(None)`: no usable copy.
    pub fn pack_range<E>(
        &self,
        name: &str,
        id: &PackId,
        offset: u64,
        len: u64,
        fetch: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> Result<Option<Vec<u8>>, E> {
        let path = self.dir.join(name);
        if self.is_verified(id) {
            if let Some(v) = read_at(&path, offset, len) {
                return Ok(Some(v));
            }
            self.forget_pack(name, id);
        }
        let _one_at_a_time = self.fetching.lock().unwrap_or_else(|e| e.into_inner());
        if !self.is_verified(id) {
            let bytes = match self.get(name, &id.0) {
                Some(b) => b,
                None => {
                    let b = fetch()?;
                    if blake3::hash(&b).as_bytes() != &id.0 {
                        return Ok(None);
                    }
                    self.put(name, &b);
                    b
                }
            };
            self.verified.lock().unwrap_or_else(|e| e.into_inner()).insert(*id);
            let (o, l) = (offset as usize, len as usize);
            return Ok(bytes.get(o..o + l).map(<[u8]>::to_vec));
        }
        Ok(read_at(&path, offset, len))
    }

    fn is_verified(&self, id: &PackId) -> bool {
        self.verified.lock().unwrap_or_else(|e| e.into_inner()).contains(id)
    }

    /// Drop a pack whose cached copy failed: the next read downloads it again.
    pub fn forget_pack(&self, name: &str, id: &PackId) {
        self.verified.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
        self.remove(name);
    }
}

fn read_at(path: &Path, offset: u64, len: u64) -> Option<Vec<u8>> {
    let f = fs::File::open(path).ok()?;
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, offset).ok()?;
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_checked_by_hash_and_private() {
        let root = tempfile::tempdir().unwrap();
        let c = Cache::open(root.path(), &RepoId([7; 32])).unwrap();
        let mode = fs::metadata(c.dir()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let data = b"sealed bytes".to_vec();
        let id = *blake3::hash(&data).as_bytes();
        let name = format!("index/{}", hex::encode(id));
        c.put(&name, &data);
        assert_eq!(c.get(&name, &id), Some(data));
        fs::write(c.dir().join(&name), b"tampered").unwrap();
        assert_eq!(c.get(&name, &id), None);
        assert!(!c.dir().join(&name).exists(), "a wrong entry is removed");
    }

    #[test]
    fn pack_ranges_fetch_once_and_refetch_when_wrong() {
        let root = tempfile::tempdir().unwrap();
        let c = Cache::open(root.path(), &RepoId([8; 32])).unwrap();
        let pack: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let id = PackId(*blake3::hash(&pack).as_bytes());
        let name = "data/00/p";
        let fetches = std::cell::Cell::new(0);
        let fetch = || -> Result<Vec<u8>, ()> {
            fetches.set(fetches.get() + 1);
            Ok(pack.clone())
        };
        assert_eq!(c.pack_range(name, &id, 10, 5, fetch).unwrap().unwrap(), &pack[10..15]);
        assert_eq!(c.pack_range(name, &id, 20, 5, fetch).unwrap().unwrap(), &pack[20..25]);
        assert_eq!(fetches.get(), 1);
        // A new process finds a damaged copy: it is replaced.
        let c2 = Cache::open(root.path(), &RepoId([8; 32])).unwrap();
        fs::write(c2.dir().join(name), b"short").unwrap();
        assert_eq!(c2.pack_range(name, &id, 30, 5, fetch).unwrap().unwrap(), &pack[30..35]);
        assert_eq!(fetches.get(), 2);
        assert_eq!(fs::read(c2.dir().join(name)).unwrap(), pack);
        c2.retain("data", |n| n != "p");
        assert!(!c2.dir().join(name).exists());
    }
}
