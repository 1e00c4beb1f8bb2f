//! The host pbak runs on: its name and user as recorded in keys, locks and snapshots, and the
//! thread pool sized for I/O-bound walks. A leaf: any layer may use it.

/// Run `f` on a thread pool sized for I/O-bound walks: reading many small cold files waits on
/// the disk, so with only one thread per core the CPU idles. Four threads per core (at least 8)
/// keep enough reads in flight while CPU stages still use every core. `PBAK_THREADS` overrides.
pub fn with_io_pool<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let n = std::env::var("PBAK_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or((cores * 4).max(8));
    match rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("pbak-walk-{i}"))
        .build()
    {
        Ok(pool) => pool.install(f),
        Err(_) => f(),
    }
}

/// Host and user names recorded in keys and snapshots.
pub fn host_user() -> (String, String) {
    let host = rustix::system::uname().nodename().to_string_lossy().into_owned();
    let user = std::env::var("USER").unwrap_or_else(|_| rustix::process::getuid().as_raw().to_string());
    (host, user)
}
