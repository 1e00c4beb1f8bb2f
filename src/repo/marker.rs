//! The prune marker: one object, `prune`, that only prune writes (backups, restores and
//! checks never read or write it), so that two prunes do not run at once. It is a courtesy,
//! not what keeps data safe: that is the two-phase protocol (docs/FORMAT.md). A marker is
//! refreshed every 5 minutes while its prune runs; one not refreshed for 30 minutes, or one
//! whose process is gone from this same machine (same boot id and PID namespace), is stale
//! and taken over (or removed by `pbak unlock`).
//!
//! Taking it: read it, write ours if there is none (or a stale one), wait a moment and read
//! it again: of two prunes that race, the one whose write landed last goes on.

use super::Repository;
use crate::backends::Backend;
use crate::error::{Error, Result};
pub use crate::format::lock::LockInfo;
use crate::format::{crypto::MasterKey, layout};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

const REFRESH: Duration = Duration::from_secs(5 * 60);
const STALE_AFTER_SECS: i64 = 30 * 60;

/// This machine's boot id and this process's PID namespace.
fn boot() -> String {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let ns = std::fs::read_link("/proc/self/ns/pid").unwrap_or_default();
    format!("{}/{}", id.trim(), ns.display())
}

impl LockInfo {
    /// Not refreshed for 30 minutes, or its process is gone from this machine.
    pub fn is_stale(&self, now: i64) -> bool {
        if now - self.time > STALE_AFTER_SECS {
            return true;
        }
        let here = self.host == crate::host::host_user().0 && !self.boot.is_empty() && self.boot == boot();
        here && !std::path::Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

struct Shared {
    info: Mutex<LockInfo>,
    stop: Mutex<bool>,
    wake: Condvar,
    /// A refresh failed or found another prune's marker: delete nothing more.
    lost: AtomicBool,
}

/// The held prune marker; dropping it removes the object.
pub struct PruneMarker {
    backend: Backend,
    key: MasterKey,
    shared: Arc<Shared>,
    refresher: Option<std::thread::JoinHandle<()>>,
}

impl PruneMarker {
    /// Fail unless the marker is still ours (refreshed, and not taken over).
    pub fn check(&self) -> Result<()> {
        let ours = self.shared.info.lock().expect("lock").clone();
        let theirs = read(&self.backend, &self.key)?;
        if self.shared.lost.load(Relaxed) || theirs.as_ref().is_some_and(|t| !same(t, &ours)) {
            let who = theirs.map(|t| t.describe()).unwrap_or_else(|| "nobody".into());
            return Err(Error::Usage(format!(
                "prune lost its marker (`{}` is now held by {who}); it stopped before deleting packs: run it again",
                layout::PRUNE_MARKER
            )));
        }
        Ok(())
    }
}

fn same(a: &LockInfo, b: &LockInfo) -> bool {
    (a.pid, &a.host, &a.boot) == (b.pid, &b.host, &b.boot)
}

impl Drop for PruneMarker {
    fn drop(&mut self) {
        *self.shared.stop.lock().expect("lock") = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
        let ours = self.shared.info.lock().expect("lock").clone();
        if read(&self.backend, &self.key)
            .ok()
            .flatten()
            .is_some_and(|t| same(&t, &ours))
        {
            let _ = self.backend.delete(layout::PRUNE_MARKER);
        }
    }
}

/// The marker's record; `None` when there is none, or it cannot be read (an unreadable one is
/// treated as stale: it cannot be a pbak prune's).
fn read(backend: &Backend, key: &MasterKey) -> Result<Option<LockInfo>> {
    match backend.get(layout::PRUNE_MARKER) {
        Ok(b) => Ok(LockInfo::open(key, &b).ok()),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl Repository {
    /// The current prune marker, if any.
    pub fn prune_marker(&self) -> Result<Option<LockInfo>> {
        read(self.backend(), self.key())
    }

    /// Take the prune marker, or fail naming the prune that holds it.
    pub fn take_prune_marker(&self) -> Result<PruneMarker> {
        let refuse = |o: LockInfo| Error::Locked {
            object: layout::PRUNE_MARKER.to_string(),
            holder: o.describe(),
        };
        if let Some(o) = self.prune_marker()?.filter(|o| !o.is_stale(now())) {
            return Err(refuse(o));
        }
        let (host, user) = crate::host::host_user();
        let info = LockInfo {
            time: now(),
            host,
            user,
            pid: std::process::id(),
            exclusive: true,
            command: "prune".into(),
            boot: boot(),
        };
        let sealed = info.seal(self.key());
        // On a local disk with no marker present the marker is created exclusively: no two
        // prunes can both succeed, and no wait is needed.
        let created = self.backend().put_new(layout::PRUNE_MARKER, &sealed);
        if created != Some(true) {
            if created == Some(false) {
                // Another prune wrote one since we looked, or a stale one is there.
                if let Some(o) = self.prune_marker()?.filter(|o| !o.is_stale(now())) {
                    return Err(refuse(o));
                }
            }
            self.backend().put(layout::PRUNE_MARKER, sealed)?;
            // Of two prunes that wrote at once, the later write wins; the other backs off.
            // The wait outlasts the time between another prune's first read and its write: a
            // round trip to remote storage, microseconds on a local disk.
            let settle = if self.backend().is_local() { 20 } else { 200 };
            std::thread::sleep(Duration::from_millis(settle));
            if let Some(o) = self.prune_marker()?.filter(|o| !same(o, &info)) {
                return Err(refuse(o));
            }
        }
        let shared = Arc::new(Shared {
            info: Mutex::new(info),
            stop: Mutex::new(false),
            wake: Condvar::new(),
            lost: AtomicBool::new(false),
        });
        let (backend, key, sh) = (self.backend().clone(), self.key().clone(), shared.clone());
        let refresher = std::thread::spawn(move || refresh(&backend, &key, &sh));
        Ok(PruneMarker {
            backend: self.backend().clone(),
            key: self.key().clone(),
            shared,
            refresher: Some(refresher),
        })
    }

    /// Fail at once, naming the missing right, when the repository's key may not delete:
    /// deleting an object that does not exist costs one request and changes nothing.
    pub fn require_delete_right(&self, command: &'static str) -> Result<()> {
        match self.backend().delete(layout::DELETE_PROBE) {
            Err(e) if e.is_permission_denied() => Err(Error::NoDeleteRight(command, e.to_string())),
            Err(e) if !e.is_not_found() => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Remove a stale prune marker (any with `all`) and the lock objects format 1 left;
    /// returns how many objects were removed.
    pub fn unlock(&self, all: bool) -> Result<usize> {
        let mut n = 0;
        let stale = self.prune_marker()?.is_none_or(|m| all || m.is_stale(now()));
        let mut names: Vec<String> = Vec::new();
        if stale && self.backend().exists(layout::PRUNE_MARKER)? {
            names.push(layout::PRUNE_MARKER.to_string());
        }
        names.extend(self.backend().list(layout::LOCKS)?.iter().map(|l| layout::lock(l)));
        for name in names {
            match self.backend().delete(&name) {
                Ok(()) => n += 1,
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(n)
    }
}

/// Rewrite the marker every [`REFRESH`] until stopped; a failed write, or another prune's
/// marker in its place, sets `lost`.
fn refresh(backend: &Backend, key: &MasterKey, shared: &Shared) {
    loop {
        let stop = shared.stop.lock().expect("lock");
        let (stop, _) = shared
            .wake
            .wait_timeout_while(stop, REFRESH, |stop| !*stop)
            .expect("lock");
        if *stop {
            return;
        }
        drop(stop);
        let mut info = shared.info.lock().expect("lock");
        let still_ours = read(backend, key).ok().flatten().is_some_and(|t| same(&t, &info));
        info.time = now();
        if !still_ours || backend.put(layout::PRUNE_MARKER, info.seal(key)).is_err() {
            shared.lost.store(true, Relaxed);
        }
    }
}
