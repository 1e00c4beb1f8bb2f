//! zstd compression for backup: a few shared contexts, each with a reused output buffer.

use std::sync::{Condvar, Mutex};

/// zstd contexts shared by all walk threads, at most one per core and size class:
/// compression is CPU-bound, and each level-3 context holds a few MiB of window and tables,
/// so one per walk thread (4 per core) cost memory without adding speed. Each context comes
/// with an output buffer that is reused, so a blob costs no allocation of its own (the sealed
/// copy's buffer comes from `repo::buffers`).
///
/// Inputs are split into size classes ([`CLASS_STARTS`]), each with its own contexts: zstd
/// sizes a context's tables to its input and frees a workspace that stayed three times too
/// large for 128 calls, so small inputs (trees, small files, the last chunk of a file) made
/// the contexts of larger ones allocate and fault in their tables again (a fifth of a first
/// backup's page faults on a tree of large files, half on the kernel tree).
pub(super) struct Compressors {
    level: i32,
    max: usize,
    classes: [Class; CLASS_STARTS.len()],
}

/// Where each class's inputs start. At level 3, inputs from 64 KiB to 256 KiB get tables of
/// about 1 MiB (a mapping of their own, see `host::tune_allocator`), larger ones zstd's
/// largest parameter set; below 64 KiB the workspace is small enough to come and go cheaply.
const CLASS_STARTS: [usize; 3] = [0, 64 << 10, 256 << 10];

/// Idle contexts, and how many exist.
#[derive(Default)]
struct Class {
    state: Mutex<(Vec<Compressor>, usize)>,
    freed: Condvar,
}

/// A zstd context and the output buffer it reuses.
type Compressor = (zstd::bulk::Compressor<'static>, Vec<u8>);

impl Compressors {
    pub(super) fn new(level: i32) -> Compressors {
        Compressors {
            level,
            max: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            classes: Default::default(),
        }
    }

    /// `seal(compressed data)` if zstd makes it strictly shorter, else `None`.
    pub(super) fn compress_sealed(&self, data: &[u8], seal: impl FnOnce(&[u8]) -> Vec<u8>) -> Option<Vec<u8>> {
        let class = &self.classes[CLASS_STARTS.partition_point(|&start| start <= data.len()) - 1];
        let (mut c, mut buf) = {
            let mut st = class.state.lock().expect("lock");
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
                            class.state.lock().expect("lock").1 -= 1;
                            return None;
                        }
                    }
                }
                st = class.freed.wait(st).expect("lock");
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
        class.state.lock().expect("lock").0.push((c, buf));
        class.freed.notify_one();
        out
    }
}
