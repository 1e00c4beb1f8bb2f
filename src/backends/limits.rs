//! Bounds on a backend's use of the network: a connection gate and bandwidth throttles.
//! Both block the calling thread (backend methods are blocking), never a runtime worker.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// At most `max` holders at once (a counting semaphore).
pub struct Gate {
    max: usize,
    used: Mutex<usize>,
    freed: Condvar,
}

pub struct Slot<'a>(&'a Gate);

impl Gate {
    pub fn new(max: usize) -> Gate {
        Gate {
            max: max.max(1),
            used: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    pub fn enter(&self) -> Slot<'_> {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        while *used >= self.max {
            used = self.freed.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        *used += 1;
        Slot(self)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *self.0.used.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        self.0.freed.notify_one();
    }
}

/// Average rate limit over whole transfers: each transfer of `n` bytes reserves `n / rate`
/// seconds on a shared timeline, and its caller waits until its reservation ends. So any
/// run of transfers takes at least (bytes / rate), whatever the size of a single one
/// (a pack is one PUT; a token bucket would need a burst as large as a pack).
pub struct Throttle {
    bytes_per_sec: f64,
    next: Mutex<Option<Instant>>,
}

impl Throttle {
    pub fn new(bytes_per_sec: u64) -> Throttle {
        Throttle {
            bytes_per_sec: bytes_per_sec.max(1) as f64,
            next: Mutex::new(None),
        }
    }

    pub fn take(&self, n: u64) {
        let until = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let start = next.map_or(now, |t| t.max(now));
            let end = start + Duration::from_secs_f64(n as f64 / self.bytes_per_sec);
            *next = Some(end);
            end
        };
        let now = Instant::now();
        if until > now {
            std::thread::sleep(until - now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn throttle_takes_at_least_bytes_over_rate() {
        let t = Arc::new(Throttle::new(1000));
        let start = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..4 {
                let t = t.clone();
                s.spawn(move || t.take(100));
            }
        });
        assert!(start.elapsed() >= Duration::from_millis(400), "{:?}", start.elapsed());
    }

    #[test]
    fn gate_bounds_concurrency() {
        let g = Gate::new(2);
        let (now, peak) = (AtomicUsize::new(0), AtomicUsize::new(0));
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    let _slot = g.enter();
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(n, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                    now.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    }
}
