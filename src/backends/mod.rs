//! The storage seam: opaque bytes in and out of named objects, knowing nothing of keys.
//!
//! Contract every backend keeps (and the repository relies on):
//! - `put` is atomic: a reader sees the whole object or none of it (local: write to a
//!   temporary file, then rename; S3/B2: a single PUT).
//! - Objects are content-addressed and never rewritten with other bytes; writing an
//!   existing name again with the same bytes is harmless.
//! - Read-after-write: an object is readable as soon as `put` returned.
//!
//! On a local repository two paths skip OpenDAL, both measured: packs are spooled to a
//! temporary file and renamed into place (`spool.rs`; same atomicity as `put`), and ranged
//! reads are a plain `pread` (OpenDAL's fs reader cost a runtime hop, a stat and a copy per
//! read: 70% of a structure-only `check`).
//!
//! Retry and timeouts are OpenDAL layers (`location.rs`), Retry-After is honoured in the HTTP
//! client hook (`http.rs`); the connection bound and bandwidth limits are applied here around
//! every operation (`limits.rs`): none of them are `if`s in callers.

mod http;
mod limits;
mod location;
mod spool;

pub use location::Location;
pub use spool::Spool;

use limits::{Gate, Throttle};
use opendal::{ErrorKind, Operator};
use std::future::IntoFuture;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Runtime;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("object {path} not found in repository {repo}")]
    NotFound { repo: String, path: String },
    #[error("{op} {path} in {repo} failed{hint}: {source}")]
    Op {
        op: &'static str,
        repo: String,
        path: String,
        hint: &'static str,
        #[source]
        source: Box<opendal::Error>,
    },
    #[error("no repository at {0}: create one with `pbak init`, or check -r/--repo")]
    Missing(String),
    #[error("cannot flush {0} to disk: {1}")]
    Sync(String, #[source] std::io::Error),
    #[error("invalid repository location {0:?}: {1}")]
    BadLocation(String, String),
    #[error("{op} {path} failed: {source} (check free space and permissions of the repository)")]
    Local {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl BackendError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, BackendError::NotFound { .. })
    }
}

type BResult<T> = std::result::Result<T, BackendError>;

/// A repository's storage: one OpenDAL operator plus the runtime that drives it.
/// All methods block; they may be called from many threads at once.
#[derive(Clone)]
pub struct Backend {
    op: Operator,
    rt: Arc<Runtime>,
    name: String,
    counts: Arc<Counters>,
    local_root: Option<String>,
    /// Remote only: at most `connections` operations in flight.
    gate: Option<Arc<Gate>>,
    up: Option<Arc<Throttle>>,
    down: Option<Arc<Throttle>>,
}

/// How a backend treats the network. Limits apply to every kind of location.
#[derive(Clone, Debug)]
pub struct BackendOptions {
    /// Operations in flight at once against a remote store (uploads, downloads, listings).
    pub connections: usize,
    /// Upload limit in bytes per second.
    pub limit_upload: Option<u64>,
    /// Download limit in bytes per second.
    pub limit_download: Option<u64>,
    /// A remote request (a whole pack upload included) taking longer is abandoned and retried.
    pub timeout: Duration,
}

/// Backblaze recommends several parallel connections per host; more only adds memory here.
pub const DEFAULT_CONNECTIONS: usize = 5;
pub const DEFAULT_TIMEOUT_SECS: u64 = 120;

impl Default for BackendOptions {
    fn default() -> Self {
        BackendOptions {
            connections: DEFAULT_CONNECTIONS,
            limit_upload: None,
            limit_download: None,
            timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS),
        }
    }
}

/// Operations by Backblaze B2 transaction class, and bytes moved (what B2 bills).
/// Class A: uploads and deletes; B: downloads and HEADs; C: listings (one per 1,000 names).
/// Counted per logical operation at this seam; retries inside OpenDAL are not counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct OpCounts {
    pub class_a: u64,
    pub class_b: u64,
    pub class_c: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

#[derive(Default)]
struct Counters {
    a: AtomicU64,
    b: AtomicU64,
    c: AtomicU64,
    up: AtomicU64,
    down: AtomicU64,
}

fn hint_for(op: &str, kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::PermissionDenied if op == "write" || op == "delete" => {
            " (permission denied: the access key (AWS_ACCESS_KEY_ID or B2_ACCOUNT_ID) may be read-only; \
             use a key allowed to write and delete)"
        }
        ErrorKind::PermissionDenied => " (permission denied: check credentials and file permissions)",
        ErrorKind::RateLimited => " (rate limited: retry later or lower --connections)",
        ErrorKind::ConfigInvalid => " (check the repository URL and credentials)",
        _ => "",
    }
}

impl Backend {
    /// Open the storage at `loc` (no repository checks: that is `repo`'s job).
    /// `create`: a missing local directory is created (for `init`); otherwise it is an error.
    pub fn open(loc: &Location, create: bool) -> BResult<Backend> {
        Backend::open_with(loc, create, &BackendOptions::default())
    }

    pub fn open_with(loc: &Location, create: bool, opts: &BackendOptions) -> BResult<Backend> {
        if let Some(p) = loc.local_path() {
            if !create && !std::path::Path::new(p).is_dir() {
                return Err(BackendError::Missing(p.to_string()));
            }
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pbak-io")
            .enable_all()
            .build()
            .map_err(|e| BackendError::BadLocation(loc.to_string(), e.to_string()))?;
        let op = loc.operator(opts.timeout)?;
        let remote = loc.local_path().is_none();
        Ok(Backend {
            op,
            rt: Arc::new(rt),
            name: loc.to_string(),
            counts: Arc::default(),
            local_root: loc.local_path().map(String::from),
            gate: remote.then(|| Arc::new(Gate::new(opts.connections))),
            up: opts.limit_upload.map(|b| Arc::new(Throttle::new(b))),
            down: opts.limit_download.map(|b| Arc::new(Throttle::new(b))),
        })
    }

    /// Operations and bytes since this backend was opened.
    pub fn counts(&self) -> OpCounts {
        let c = &self.counts;
        OpCounts {
            class_a: c.a.load(Relaxed),
            class_b: c.b.load(Relaxed),
            class_c: c.c.load(Relaxed),
            bytes_up: c.up.load(Relaxed),
            bytes_down: c.down.load(Relaxed),
        }
    }

    /// A repository on a local filesystem (writes are disk-bound, not latency-bound).
    pub fn is_local(&self) -> bool {
        self.local_root.is_some()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn err(&self, op: &'static str, path: &str, e: opendal::Error) -> BackendError {
        if e.kind() == ErrorKind::NotFound {
            return BackendError::NotFound {
                repo: self.name.clone(),
                path: path.to_string(),
            };
        }
        BackendError::Op {
            op,
            repo: self.name.clone(),
            path: path.to_string(),
            hint: hint_for(op, e.kind()),
            source: Box::new(e),
        }
    }

    /// Store `data` under `path` atomically.
    pub fn put(&self, path: &str, data: Vec<u8>) -> BResult<()> {
        self.counts.a.fetch_add(1, Relaxed);
        self.counts.up.fetch_add(data.len() as u64, Relaxed);
        if let Some(t) = &self.up {
            t.take(data.len() as u64);
        }
        self.block_on(self.op.write(path, data))
            .map(|_| ())
            .map_err(|e| self.err("write", path, e))
    }

    /// Store the concatenation of `parts` under `path` atomically, without joining them first.
    pub fn put_parts(&self, path: &str, parts: Vec<Vec<u8>>) -> BResult<()> {
        let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
        self.counts.a.fetch_add(1, Relaxed);
        self.counts.up.fetch_add(len, Relaxed);
        if let Some(t) = &self.up {
            t.take(len);
        }
        let buf: opendal::Buffer = parts.into_iter().map(bytes::Bytes::from).collect();
        self.block_on(self.op.write(path, buf))
            .map(|_| ())
            .map_err(|e| self.err("write", path, e))
    }

    /// A new pack body: a temporary file under `<repo>/.tmp` on a local repository (no pack
    /// in memory), parts in memory for a remote one.
    pub fn spool(&self) -> BResult<Spool> {
        let Some(root) = self.local_root.as_deref() else {
            return Ok(Spool::memory());
        };
        let dir = std::path::Path::new(root).join(".tmp");
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

    /// Remove pack spools a killed process left in `<repo>/.tmp` (local only; remote spools
    /// live in memory). Only call this while no other process can write: under prune's
    /// exclusive lock. Returns how many were removed.
    pub fn remove_stale_spools(&self) -> BResult<usize> {
        let Some(root) = self.local_root.as_deref() else {
            return Ok(0);
        };
        let dir = std::path::Path::new(root).join(".tmp");
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

    /// Store a complete spool under `path` atomically: a rename on a local repository (the
    /// next [`Backend::barrier`] makes it durable), one PUT otherwise.
    pub fn put_spool(&self, path: &str, mut spool: Spool) -> BResult<()> {
        let len = spool.len();
        let (out, tmp) = match &mut spool.body {
            spool::Body::Memory(parts) => return self.put_parts(path, std::mem::take(parts)),
            spool::Body::File { out, path: tmp } => (out, tmp),
        };
        let root = self.local_root.as_deref().expect("file spools are local");
        let dest = std::path::Path::new(root).join(path);
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
        self.counts.a.fetch_add(1, Relaxed);
        self.counts.up.fetch_add(len, Relaxed);
        if let Some(t) = &self.up {
            t.take(len);
        }
        Ok(())
    }

    pub fn get(&self, path: &str) -> BResult<Vec<u8>> {
        self.counts.b.fetch_add(1, Relaxed);
        self.block_on(self.op.read(path))
            .map(|b| self.downloaded(b.to_vec()))
            .map_err(|e| self.err("read", path, e))
    }

    /// Read `len` bytes at `offset`.
    pub fn get_range(&self, path: &str, offset: u64, len: u64) -> BResult<Vec<u8>> {
        if self.local_root.is_some() {
            let mut buf = Vec::new();
            self.get_range_into(path, offset, len, &mut buf)?;
            return Ok(buf);
        }
        self.counts.b.fetch_add(1, Relaxed);
        self.block_on(self.op.read_with(path).range(offset..offset + len).into_future())
            .map(|b| self.downloaded(b.to_vec()))
            .map_err(|e| self.err("read", path, e))
    }

    /// Read `len` bytes at `offset` into `buf` (replacing its contents), so a caller reading
    /// many ranges reuses one buffer. A local repository reads the file directly: no
    /// intermediate buffer, no hop through the async runtime.
    pub fn get_range_into(&self, path: &str, offset: u64, len: u64, buf: &mut Vec<u8>) -> BResult<()> {
        let Some(root) = self.local_root.as_deref() else {
            *buf = self.get_range(path, offset, len)?;
            return Ok(());
        };
        // Ranged reads are most of a restore's and a check's reads (every tree, every window):
        // through OpenDAL each cost a hop to the async runtime, a stat and a buffer copy.
        self.counts.b.fetch_add(1, Relaxed);
        let full = std::path::Path::new(root).join(path);
        let fail = |source: std::io::Error| match source.kind() {
            std::io::ErrorKind::NotFound => BackendError::NotFound {
                repo: self.name.clone(),
                path: path.to_string(),
            },
            _ => BackendError::Local {
                op: "read",
                path: full.display().to_string(),
                source,
            },
        };
        let f = std::fs::File::open(&full).map_err(fail)?;
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
        // A short file gives a short buffer, as a ranged GET past the end would.
        buf.truncate(done);
        self.counts.down.fetch_add(done as u64, Relaxed);
        if let Some(t) = &self.down {
            t.take(done as u64);
        }
        Ok(())
    }

    /// Downloads are limited after the fact: the length is known only once the data is here.
    fn downloaded(&self, v: Vec<u8>) -> Vec<u8> {
        self.counts.down.fetch_add(v.len() as u64, Relaxed);
        if let Some(t) = &self.down {
            t.take(v.len() as u64);
        }
        v
    }

    /// Run one operation, holding a connection slot (remote only) while it is in flight.
    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        let _slot = self.gate.as_ref().map(|g| g.enter());
        self.rt.block_on(f)
    }

    pub fn size(&self, path: &str) -> BResult<u64> {
        self.counts.b.fetch_add(1, Relaxed);
        self.block_on(self.op.stat(path))
            .map(|m| m.content_length())
            .map_err(|e| self.err("stat", path, e))
    }

    pub fn exists(&self, path: &str) -> BResult<bool> {
        self.counts.b.fetch_add(1, Relaxed);
        self.block_on(self.op.exists(path))
            .map_err(|e| self.err("stat", path, e))
    }

    pub fn delete(&self, path: &str) -> BResult<()> {
        self.counts.a.fetch_add(1, Relaxed);
        self.block_on(self.op.delete(path))
            .map_err(|e| self.err("delete", path, e))
    }

    /// Durability barrier: everything `put` so far survives a power loss once this returns.
    /// Local: syncfs(2) on the repository's filesystem (renames included); remote stores
    /// acknowledge a PUT only once it is durable, so there it is a no-op.
    pub fn barrier(&self) -> BResult<()> {
        if let Some(root) = self.local_root.as_deref() {
            let f = std::fs::File::open(root).map_err(|e| BackendError::Sync(root.to_string(), e))?;
            rustix::fs::syncfs(&f).map_err(|e| BackendError::Sync(root.to_string(), e.into()))?;
        }
        Ok(())
    }

    /// Names of all objects below `dir` (recursive), relative to `dir`, without directories.
    /// A missing directory lists as empty.
    pub fn list(&self, dir: &str) -> BResult<Vec<String>> {
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        let entries = match self.block_on(self.op.list_with(&prefix).recursive(true).into_future()) {
            Ok(v) => v,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.err("list", &prefix, e)),
        };
        self.counts.c.fetch_add(1 + entries.len() as u64 / 1000, Relaxed);
        Ok(entries
            .into_iter()
            .filter(|e| !e.path().ends_with('/'))
            .map(|e| e.path().strip_prefix(&prefix).unwrap_or(e.path()).to_string())
            .collect())
    }
}
