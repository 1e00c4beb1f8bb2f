//! The storage seam: opaque bytes in and out of named objects, knowing nothing of keys.
//!
//! Contract every backend keeps (and the repository relies on):
//! - `put` is atomic: a reader sees the whole object or none of it (local: write to a
//!   temporary file, then rename; S3/B2: a single PUT).
//! - Objects are content-addressed and never rewritten with other bytes; writing an
//!   existing name again with the same bytes is harmless.
//! - Read-after-write: an object is readable as soon as `put` returned.
//!
//! Where each concern lives, once:
//! - `meter.rs`: the connection gate, the count per B2 transaction class, bytes up and down,
//!   and the bandwidth throttles (`limits.rs` holds the gate and throttle themselves). Every
//!   method that writes, reads, stats, deletes or lists runs that operation through
//!   `Meter::run` exactly once (the OpenDAL ones by way of `Backend::metered`).
//! - `local.rs`: the local repository's paths that skip OpenDAL (every write: puts and pack
//!   spools through `<repo>/.tmp/` renamed into place, files 0600 and directories 0700;
//!   ranged `pread`; `syncfs` barrier). A method
//!   dispatches on `Backend::local` once; everything else goes through the OpenDAL operator.
//! - `location.rs`: parsing locations and building the operator, with retry and timeouts as
//!   OpenDAL layers; `http.rs`: Retry-After, honoured in the HTTP client hook; `spool.rs`: a
//!   pack being written (on disk, local or remote), and a remote one's upload from its file.
//!
//! None of them are `if`s in callers.

mod http;
mod limits;
mod local;
mod location;
mod meter;
mod spool;

pub use location::Location;
pub use meter::OpCounts;
pub use spool::Spool;

use local::LocalRoot;
use meter::{Measured, Meter, Op};
use opendal::{ErrorKind, Operator};
use std::future::{Future, IntoFuture};
use std::path::Path;
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
    /// The server or the network failed in a way that may pass: anything but a refusal,
    /// a missing object or a bad request (OpenDAL's own retries have already run).
    pub fn is_transient(&self) -> bool {
        use opendal::ErrorKind as K;
        match self {
            BackendError::Op { source, .. } => {
                source.is_temporary() || matches!(source.kind(), K::Unexpected | K::RateLimited)
            }
            _ => false,
        }
    }
    /// The storage refused the operation (a key without that right, file permissions).
    pub fn is_permission_denied(&self) -> bool {
        match self {
            BackendError::Op { source, .. } => source.kind() == opendal::ErrorKind::PermissionDenied,
            BackendError::Local { source, .. } => source.kind() == std::io::ErrorKind::PermissionDenied,
            _ => false,
        }
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
    /// Counts, gate and throttles, shared by clones.
    meter: Arc<Meter>,
    /// A local repository's own paths; `None` for a remote store.
    local: Option<LocalRoot>,
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
        let local = loc.local_path().map(|p| LocalRoot::open(p, create)).transpose()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pbak-io")
            .enable_all()
            .build()
            .map_err(|e| BackendError::BadLocation(loc.to_string(), e.to_string()))?;
        let op = loc.operator(opts.timeout)?;
        let gate = local.is_none().then_some(opts.connections);
        Ok(Backend {
            op,
            rt: Arc::new(rt),
            name: loc.to_string(),
            meter: Arc::new(Meter::new(gate, opts.limit_upload, opts.limit_download)),
            local,
        })
    }

    /// Operations and bytes since this backend was opened.
    pub fn counts(&self) -> OpCounts {
        self.meter.counts()
    }

    /// A repository on a local filesystem (writes are disk-bound, not latency-bound).
    pub fn is_local(&self) -> bool {
        self.local.is_some()
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

    /// Run one OpenDAL operation to completion through the meter; `verb` and `path` name it in
    /// an error.
    fn metered<T: Measured>(
        &self,
        op: Op,
        verb: &'static str,
        path: &str,
        f: impl Future<Output = opendal::Result<T>>,
    ) -> BResult<T> {
        self.meter
            .run(op, || self.rt.block_on(f))
            .map_err(|e| self.err(verb, path, e))
    }

    /// Store `data` under `path` atomically.
    pub fn put(&self, path: &str, data: Vec<u8>) -> BResult<()> {
        let len = data.len() as u64;
        if let Some(l) = &self.local {
            return self.meter.run(Op::Put(len), || l.put(path, &[&data]));
        }
        self.metered(Op::Put(len), "write", path, self.op.write(path, data))
            .map(|_| ())
    }

    /// On a local repository, store `data` under `path` only if the name is free
    /// (`Some(true)`), atomically; `Some(false)` if it is taken. `None` where the backend
    /// cannot do it (remote stores, filesystems without hard links): use `put`.
    pub fn put_new(&self, path: &str, data: &[u8]) -> Option<bool> {
        let l = self.local.as_ref()?;
        self.meter
            .run(Op::Put(data.len() as u64), || l.put_new(path, data))
            .ok()
    }

    /// Store the concatenation of `parts` under `path` atomically, without joining them first.
    pub fn put_parts(&self, path: &str, parts: Vec<Vec<u8>>) -> BResult<()> {
        let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
        if let Some(l) = &self.local {
            let slices: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            return self.meter.run(Op::Put(len), || l.put(path, &slices));
        }
        let buf: opendal::Buffer = parts.into_iter().map(bytes::Bytes::from).collect();
        self.metered(Op::Put(len), "write", path, self.op.write(path, buf))
            .map(|_| ())
    }

    /// A new pack body, never in memory: a temporary file under `<repo>/.tmp` on a local
    /// repository; for a remote one, a file without a name in `dir` (the repository's cache
    /// directory: on disk where `/tmp` may be a tmpfs), else in `std::env::temp_dir()`.
    pub fn spool_in(&self, dir: Option<&Path>) -> BResult<Spool> {
        match &self.local {
            Some(l) => l.spool(),
            None => Spool::unnamed(dir.map_or_else(std::env::temp_dir, Path::to_path_buf).as_path()),
        }
    }

    /// [`Backend::spool_in`] the temporary directory.
    pub fn spool(&self) -> BResult<Spool> {
        self.spool_in(None)
    }

    /// Remove temporary files at least `min_age` old that a killed process left in
    /// `<repo>/.tmp` (local only; a remote spool's file has no name, so the kernel frees it).
    /// Returns how many.
    pub fn remove_stale_spools(&self, min_age: std::time::Duration) -> BResult<usize> {
        match &self.local {
            Some(l) => l.remove_stale_spools(min_age),
            None => Ok(0),
        }
    }

    /// Store a complete spool under `path` atomically: a rename on a local repository (the
    /// next [`Backend::barrier`] makes it durable), one PUT otherwise, sent from the spool's
    /// file.
    pub fn put_spool(&self, path: &str, mut spool: Spool) -> BResult<()> {
        let len = spool.len();
        match &mut spool.body {
            spool::Body::Memory(parts) => self.put_parts(path, std::mem::take(parts)),
            spool::Body::File { out, path: tmp } => {
                let l = self.local.as_ref().expect("file spools are local");
                self.meter.run(Op::Rename(len), || l.rename_spool(path, out, tmp))
            }
            spool::Body::Unnamed { .. } => {
                let up = spool.upload()?;
                let put = releasing(self.op.write(path, up.body()), &up);
                self.metered(Op::Put(len), "write", path, put).map(|_| ())
            }
        }
    }

    pub fn get(&self, path: &str) -> BResult<Vec<u8>> {
        self.metered(Op::Read, "read", path, self.op.read(path))
            .map(|b| b.to_vec())
    }

    /// Read `len` bytes at `offset`.
    pub fn get_range(&self, path: &str, offset: u64, len: u64) -> BResult<Vec<u8>> {
        let mut buf = Vec::new();
        self.get_range_into(path, offset, len, &mut buf)?;
        Ok(buf)
    }

    /// Read `len` bytes at `offset` into `buf` (replacing its contents), so a caller reading
    /// many ranges reuses one buffer. A local repository reads the file directly: no
    /// intermediate buffer, no hop through the async runtime.
    pub fn get_range_into(&self, path: &str, offset: u64, len: u64, buf: &mut Vec<u8>) -> BResult<()> {
        // Ranged reads are most of a restore's and a check's reads (every tree, every window):
        // through OpenDAL each cost a hop to the async runtime, a stat and a buffer copy.
        if let Some(l) = &self.local {
            return self
                .meter
                .run(Op::Read, || l.read_range_into(path, offset, len, buf))
                .map(|_| ());
        }
        // Streamed into the caller's buffer, which is reused from window to window: a whole
        // response per window, then a fresh vector of it, left twice the in-flight bytes
        // alive and glibc's heap fragmented (S3 restore peak RSS +80-100 MiB over local).
        buf.clear();
        let op = &self.op;
        let read = async { op.reader(path).await?.read_into(buf, offset..offset + len).await };
        self.metered(Op::Read, "read", path, read)?;
        Ok(())
    }

    /// A hint that the byte ranges `(start, end)` of `path` will be read soon: a local
    /// repository starts reading them into the page cache while the caller works on what it
    /// has (a cold `check --read-data` waited on each window's read). Nothing is read or
    /// counted for a remote repository, and nothing can fail.
    pub fn will_need(&self, path: &str, ranges: &[(u64, u64)]) {
        if let Some(l) = &self.local {
            l.will_need(path, ranges);
        }
    }

    pub fn size(&self, path: &str) -> BResult<u64> {
        self.metered(Op::Stat, "stat", path, self.op.stat(path))
            .map(|m| m.content_length())
    }

    pub fn exists(&self, path: &str) -> BResult<bool> {
        self.metered(Op::Stat, "stat", path, self.op.exists(path))
    }

    pub fn delete(&self, path: &str) -> BResult<()> {
        self.metered(Op::Delete, "delete", path, self.op.delete(path))
    }

    /// Durability barrier: everything `put` so far survives a power loss once this returns.
    /// Local: syncfs(2) on the repository's filesystem (renames included); remote stores
    /// acknowledge a PUT only once it is durable, so there it is a no-op.
    pub fn barrier(&self) -> BResult<()> {
        match &self.local {
            Some(l) => l.barrier(),
            None => Ok(()),
        }
    }

    /// Names of all objects below `dir` (recursive), relative to `dir`, without directories.
    /// A missing directory lists as empty.
    pub fn list(&self, dir: &str) -> BResult<Vec<String>> {
        Ok(self.list_entries(dir)?.into_iter().map(|(n, _)| n).collect())
    }

    /// [`Backend::list`] with each object's size, at no extra request on S3 and B2 (their
    /// listings carry it). OpenDAL's fs listing carries none, so a local repository stats
    /// each file (one `statx` each; an object deleted since the listing is left out).
    pub fn list_sized(&self, dir: &str) -> BResult<Vec<(String, u64)>> {
        let entries = self.list_entries(dir)?;
        let Some(l) = &self.local else {
            return Ok(entries.into_iter().map(|(n, m)| (n, m.content_length())).collect());
        };
        let mut out = Vec::with_capacity(entries.len());
        for (name, _) in entries {
            let path = format!("{}/{name}", dir.trim_end_matches('/'));
            match self.meter.run(Op::Stat, || l.size(&path)) {
                Ok(size) => out.push((name, size)),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    fn list_entries(&self, dir: &str) -> BResult<Vec<(String, opendal::Metadata)>> {
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        let listing = self.op.list_with(&prefix).recursive(true).into_future();
        let entries = match self.metered(Op::List, "list", &prefix, listing) {
            Ok(v) => v,
            Err(e) if e.is_not_found() => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        Ok(entries
            .into_iter()
            .filter(|e| !e.path().ends_with('/'))
            .map(|e| {
                let (path, meta) = e.into_parts();
                (path.strip_prefix(&prefix).unwrap_or(&path).to_string(), meta)
            })
            .collect())
    }
}

/// How often an upload drops the pages of its map it has read: what stays resident is what
/// the connection sends in this long (a few MiB at most, against a whole pack).
const RELEASE_EVERY: Duration = Duration::from_millis(10);

/// Run `put`, releasing `up`'s resident pages every [`RELEASE_EVERY`] until it completes
/// (retries included).
async fn releasing<T>(put: impl Future<Output = T>, up: &spool::Upload) -> T {
    let mut tick = tokio::time::interval(RELEASE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut put = std::pin::pin!(put);
    std::future::poll_fn(|cx| {
        while tick.poll_tick(cx).is_ready() {
            up.release();
        }
        put.as_mut().poll(cx)
    })
    .await
}

#[cfg(test)]
mod tests;
