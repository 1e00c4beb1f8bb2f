//! The host pbak runs on: its name and user as recorded in keys, locks and snapshots, and the
//! thread pool sized for I/O-bound walks, with stacks deep enough for any path the kernel
//! accepts. A leaf: any layer may use it.

/// Run `f` on a thread pool sized for I/O-bound walks: reading many small cold files waits on
/// the disk, so with only one thread per core the CPU idles. Four threads per core (at least 8)
/// keep enough reads in flight while CPU stages still use every core. `PBAK_THREADS` overrides.
///
/// The backup walk recurses once per directory level on these threads; [`IO_STACK`] holds the
/// deepest tree a path can name (`PATH_MAX` allows about 2,000 levels; 550 overflowed the
/// default 2 MiB). The stack is only reserved address space: pages are committed as touched.
pub fn with_io_pool<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let n = std::env::var("PBAK_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or((cores * 4).max(8));
    match rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("pbak-walk-{i}"))
        .stack_size(IO_STACK)
        .build()
    {
        Ok(pool) => pool.install(f),
        Err(_) => f(),
    }
}

/// Give blocks of 1 MiB and more their own mappings, returned to the kernel when freed.
/// glibc's default starts there too but raises the limit to the largest block freed, so
/// after the first large buffer every later one comes from per-thread arenas, which then
/// hold freed fragments: a first backup peaked at twice the memory it needed (108-118 MiB
/// against 51 MiB on a 1.43 GB tree), a restore at 80 against 49. The large buffers that
/// come and go once per blob are reused instead (`repo::buffers`), so fixing the limit
/// costs few new mappings. Call once, before other threads start.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn tune_allocator() {
    // SAFETY: mallopt only sets a malloc parameter; no memory is touched.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// Other C libraries keep their defaults.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune_allocator() {}

/// Stack of each I/O pool thread.
pub const IO_STACK: usize = 64 << 20;

/// Host and user names recorded in keys and snapshots.
pub fn host_user() -> (String, String) {
    let host = rustix::system::uname().nodename().to_string_lossy().into_owned();
    let user = std::env::var("USER").unwrap_or_else(|_| rustix::process::getuid().as_raw().to_string());
    (host, user)
}
