//! Repository locks, with restic's rules. A lock is an object `locks/<id>` holding a sealed
//! JSON record (who, when, shared or exclusive). Commands that add data (backup) or read packs
//! (restore, check) take a shared lock; commands that delete (forget, prune) take an exclusive
//! one. A lock is refreshed every 5 minutes while its holder runs; one not refreshed for 30
//! minutes, or one whose process is gone from this same host, is stale and ignored (and
//! removed by `pbak unlock`).
//!
//! Taking a lock: write ours, then list the others. Two processes that race both see each
//! other, and the one that conflicts backs off, so at worst both back off; never both proceed.

use super::Repository;
use crate::backends::Backend;
use crate::error::{Error, Result};
pub use crate::format::lock::LockInfo;
use crate::format::{crypto::MasterKey, layout};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

const REFRESH: Duration = Duration::from_secs(5 * 60);
const STALE_AFTER_SECS: i64 = 30 * 60;

impl LockInfo {
    /// Not refreshed for 30 minutes, or its process is gone from this host.
    pub fn is_stale(&self, now: i64) -> bool {
        if now - self.time > STALE_AFTER_SECS {
            return true;
        }
        self.host == crate::host::host_user().0 && !std::path::Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn write_lock(backend: &Backend, key: &MasterKey, info: &LockInfo) -> Result<String> {
    let sealed = info.seal(key);
    let path = layout::lock(&blake3::hash(&sealed).to_hex());
    backend.put(&path, sealed)?;
    Ok(path)
}

struct Shared {
    path: Mutex<String>,
    stop: Mutex<bool>,
    wake: Condvar,
}

/// A held lock; dropping it removes the lock object.
pub struct RepoLock {
    backend: Backend,
    shared: Arc<Shared>,
    refresher: Option<std::thread::JoinHandle<()>>,
}

impl Drop for RepoLock {
    fn drop(&mut self) {
        *self.shared.stop.lock().expect("lock") = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
        let path = self.shared.path.lock().expect("lock").clone();
        let _ = self.backend.delete(&path);
    }
}

impl Repository {
    /// All lock objects with their records; unreadable ones are reported as `None`.
    pub fn list_locks(&self) -> Result<Vec<(String, Option<LockInfo>)>> {
        self.locks_except("")
    }

    /// Lock objects other than `own` (not even downloaded: one class B read fewer).
    fn locks_except(&self, own: &str) -> Result<Vec<(String, Option<LockInfo>)>> {
        let mut out = Vec::new();
        for n in self.backend().list(layout::LOCKS)? {
            let path = layout::lock(&n);
            if path == own {
                continue;
            }
            let info = match self.backend().get(&path) {
                Ok(b) => LockInfo::open(self.key(), &b).ok(),
                // Removed between list and get: its holder finished.
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            out.push((path, info));
        }
        Ok(out)
    }

    /// Take a lock for `command`, or fail naming the holder of a conflicting one.
    pub fn lock(&self, exclusive: bool, command: &str) -> Result<RepoLock> {
        let (host, user) = crate::host::host_user();
        let mut info = LockInfo {
            time: now(),
            host,
            user,
            pid: std::process::id(),
            exclusive,
            command: command.to_string(),
        };
        let path = write_lock(self.backend(), self.key(), &info)?;
        let shared = Arc::new(Shared {
            path: Mutex::new(path.clone()),
            stop: Mutex::new(false),
            wake: Condvar::new(),
        });
        let mut lock = RepoLock {
            backend: self.backend().clone(),
            shared: shared.clone(),
            refresher: None,
        };
        let t = now();
        for (other, oi) in self.locks_except(&path)? {
            let conflict = match &oi {
                Some(o) => !o.is_stale(t) && (exclusive || o.exclusive),
                // A lock we cannot read may be an exclusive one: only an exclusive taker minds.
                None => exclusive,
            };
            if conflict {
                let who = oi.map(|o| o.describe()).unwrap_or_else(|| "an unreadable lock".into());
                drop(lock);
                return Err(Error::Locked {
                    object: other,
                    holder: who,
                });
            }
        }
        let (backend, key) = (self.backend().clone(), self.key().clone());
        lock.refresher = Some(std::thread::spawn(move || loop {
            // Checks the flag before sleeping: a release right after taking the lock must not
            // wait out a whole refresh period.
            let stop = shared.stop.lock().expect("lock");
            let (stop, _) = shared
                .wake
                .wait_timeout_while(stop, REFRESH, |stop| !*stop)
                .expect("lock");
            if *stop {
                return;
            }
            drop(stop);
            info.time = now();
            if let Ok(new) = write_lock(&backend, &key, &info) {
                let old = std::mem::replace(&mut *shared.path.lock().expect("lock"), new);
                let _ = backend.delete(&old);
            }
        }));
        Ok(lock)
    }

    /// Remove stale locks (all locks with `all`); returns how many were removed.
    pub fn unlock(&self, all: bool) -> Result<usize> {
        let t = now();
        let mut n = 0;
        for (path, info) in self.list_locks()? {
            if all || info.as_ref().is_none_or(|i| i.is_stale(t)) {
                match self.backend().delete(&path) {
                    Ok(()) => n += 1,
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(n)
    }
}
