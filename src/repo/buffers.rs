//! Large byte buffers reused from blob to blob: a backup seals every chunk into a new buffer
//! of about its size and reads every file of up to a segment into one, and the pack writer
//! frees the sealed copy once it is written out. With one fresh allocation per blob, glibc
//! either grows its per-thread arenas into fragments (its default: twice the memory a backup
//! needs, see `docs/performance.md`) or, with mappings for large blocks
//! ([`crate::host::tune_allocator`]), maps and faults in every byte once more. Buffers handed
//! back here are reused instead; the pool is bounded ([`POOL_BYTES`]).

use std::sync::Mutex;

/// Buffers smaller than this are left to the allocator.
const MIN_POOLED: usize = 256 << 10;

/// At most this much capacity waits in the pool; more is freed.
pub const POOL_BYTES: usize = 16 << 20;

static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// An empty buffer with room for at least `len` bytes: the smallest pooled one that fits,
/// or a new one of exactly `len`.
pub fn take(len: usize) -> Vec<u8> {
    if len >= MIN_POOLED {
        let mut pool = POOL.lock().expect("lock");
        let best = (0..pool.len())
            .filter(|&i| pool[i].capacity() >= len)
            .min_by_key(|&i| pool[i].capacity());
        if let Some(i) = best {
            return pool.swap_remove(i);
        }
    }
    Vec::with_capacity(len)
}

/// Hand `buf` back for reuse (its contents are dropped). When the pool is full, smaller
/// buffers make room for a larger one; otherwise `buf` is freed.
pub fn give(mut buf: Vec<u8>) {
    let cap = buf.capacity();
    if !(MIN_POOLED..=POOL_BYTES).contains(&cap) {
        return;
    }
    buf.clear();
    let mut pool = POOL.lock().expect("lock");
    let mut held: usize = pool.iter().map(Vec::capacity).sum();
    while held + cap > POOL_BYTES {
        let Some(i) = (0..pool.len()).min_by_key(|&i| pool[i].capacity()) else {
            break;
        };
        if pool[i].capacity() >= cap {
            return;
        }
        held -= pool.swap_remove(i).capacity();
    }
    pool.push(buf);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_the_smallest_that_fits_and_stays_bounded() {
        // One test owns the process-wide pool (tests run in parallel threads).
        give(Vec::with_capacity(1 << 20));
        give(Vec::with_capacity(3 << 20));
        let b = take(2 << 20);
        assert!(b.capacity() >= 3 << 20 && b.is_empty());
        let a = take(600 << 10);
        assert_eq!(a.capacity(), 1 << 20, "the smallest buffer that fits");
        assert_eq!(take(4 << 20).capacity(), 4 << 20, "nothing fits: a new one");
        assert_eq!(take(1000).capacity(), 1000, "small requests bypass the pool");
        for _ in 0..40 {
            give(Vec::with_capacity(2 << 20));
        }
        let held: usize = POOL.lock().unwrap().iter().map(Vec::capacity).sum();
        assert!(held <= POOL_BYTES, "{held}");
        give(Vec::with_capacity(8 << 20));
        let pool = POOL.lock().unwrap();
        assert!(
            pool.iter().any(|b| b.capacity() == 8 << 20),
            "a larger one displaces smaller ones"
        );
        assert!(pool.iter().map(Vec::capacity).sum::<usize>() <= POOL_BYTES);
        drop(pool);
        drop((a, b));
    }
}
