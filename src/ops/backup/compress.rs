//! zstd compression for backup: a few shared contexts, each with a reused output buffer.

use std::sync::Mutex;

/// zstd contexts shared by all walk threads, at most one per core: compression is CPU-bound,
/// and each level-3 context holds a few MiB of window and tables, so one per walk thread
/// (4 per core) cost memory without adding speed. Each context comes with an output buffer
/// that is reused, so a blob costs one allocation: its exactly sized sealed copy.
pub(super) struct Compressors {
    level: i32,
    max: usize,
    /// Idle contexts, and how many exist.
    state: Mutex<(Vec<Compressor>, usize)>,
    freed: std::sync::Condvar,
}

/// A zstd context and the output buffer it reuses.
type Compressor = (zstd::bulk::Compressor<'static>, Vec<u8>);

impl Compressors {
    pub(super) fn new(level: i32) -> Compressors {
        Compressors {
            level,
            max: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            state: Mutex::new((Vec::new(), 0)),
            freed: std::sync::Condvar::new(),
        }
    }

    /// `seal(compressed data)` if zstd makes it strictly shorter, else `None`.
    pub(super) fn compress_sealed(&self, data: &[u8], seal: impl FnOnce(&[u8]) -> Vec<u8>) -> Option<Vec<u8>> {
        let (mut c, mut buf) = {
            let mut st = self.state.lock().expect("lock");
            loop {
                if let Some(c) = st.0.pop() {
                    break c;
                }
                if st.1 < self.max {
                    st.1 += 1;
                    drop(st);
                    match zstd::bulk::Compressor::new(self.level) {
                        Ok(c) => break (c, Vec::new()),
                        Err(_) => {
                            self.state.lock().expect("lock").1 -= 1;
                            return None;
                        }
                    }
                }
                st = self.freed.wait(st).expect("lock");
            }
        };
        buf.clear();
        buf.reserve_exact(zstd::zstd_safe::compress_bound(data.len()));
        let out = match c.compress_to_buffer(data, &mut buf) {
            Ok(n) if n < data.len() => Some(seal(&buf)),
            _ => None,
        };
        // Keep the buffer for the next blob unless one huge blob inflated it.
        if buf.capacity() > 8 << 20 {
            buf = Vec::new();
        }
        self.state.lock().expect("lock").0.push((c, buf));
        self.freed.notify_one();
        out
    }
}
