//! The one metering layer: every operation a [`super::Backend`] performs runs through
//! [`Meter::run`] once, with an [`Op`] saying what it is. Nothing else in the backend counts,
//! gates or throttles.
//!
//! What it guarantees:
//! - Every operation passes the connection gate exactly once, holding its slot only while
//!   the operation itself runs (a remote backend's gate; a local one has none). Throttle
//!   waits happen outside the slot, so a throttled transfer never holds a connection.
//! - Counts are per B2 transaction class, as `DESIGN.md` ("What B2 charges for") bills them:
//!   class A for uploads and deletes, B for downloads and HEADs, C for listings, one per
//!   1,000 names. One count per logical operation: retries inside OpenDAL are not counted.
//! - Bytes up are counted and throttled before a PUT is sent (its size is known); bytes down
//!   once the data is here (the length is known only then). Limits apply to every kind of
//!   location, local included.

use super::limits::{Gate, Throttle};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

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

/// What one operation is, for billing. Each variant's doc says what is counted when.
#[derive(Clone, Copy, Debug)]
pub(super) enum Op {
    /// A PUT of this many bytes: class A and the bytes are counted, and the upload
    /// throttled, before it is sent; a failed PUT stays counted.
    Put(u64),
    /// A complete local spool of this many bytes renamed into place, standing for the PUT a
    /// remote store would get: counted and throttled as one once it is in place (a rename that
    /// failed stored nothing).
    Rename(u64),
    /// Class A, counted before.
    Delete,
    /// A download (whole or ranged): class B counted before, the bytes once they are here.
    Read,
    /// A HEAD (size, existence): class B, counted before.
    Stat,
    /// A listing: class C, one per 1,000 names returned, counted once it is complete (a
    /// listing that failed is not counted).
    List,
}

/// How much of an operation's result the meter counts after it: bytes read, names listed;
/// nothing for results whose counts were known before the operation ran.
pub(super) trait Measured {
    fn measure(&self) -> u64 {
        0
    }
}

impl Measured for opendal::Buffer {
    fn measure(&self) -> u64 {
        self.len() as u64
    }
}

/// Names listed (or bytes, for a `Vec<u8>`).
impl<T> Measured for Vec<T> {
    fn measure(&self) -> u64 {
        self.len() as u64
    }
}

/// Bytes read by a local `pread`.
impl Measured for usize {
    fn measure(&self) -> u64 {
        *self as u64
    }
}

impl Measured for opendal::Metadata {}
/// A size from a local stat.
impl Measured for u64 {}
impl Measured for bool {}
impl Measured for () {}

/// Counters, gate and throttles of one backend (shared by its clones).
pub(super) struct Meter {
    a: AtomicU64,
    b: AtomicU64,
    c: AtomicU64,
    up: AtomicU64,
    down: AtomicU64,
    /// Remote only: at most `connections` operations in flight.
    gate: Option<Gate>,
    up_limit: Option<Throttle>,
    down_limit: Option<Throttle>,
}

impl Meter {
    /// `connections`: the gate's bound, `None` for no gate (a local repository).
    pub fn new(connections: Option<usize>, limit_up: Option<u64>, limit_down: Option<u64>) -> Meter {
        Meter {
            a: AtomicU64::new(0),
            b: AtomicU64::new(0),
            c: AtomicU64::new(0),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            gate: connections.map(Gate::new),
            up_limit: limit_up.map(Throttle::new),
            down_limit: limit_down.map(Throttle::new),
        }
    }

    /// Run `f`, the whole of one operation `op`: counted and throttled as `op` says, and
    /// inside one slot of the gate.
    pub fn run<T: Measured, E>(&self, op: Op, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        self.before(op);
        let r = {
            let _slot = self.gate.as_ref().map(Gate::enter);
            f()
        };
        if let Ok(v) = &r {
            self.after(op, v.measure());
        }
        r
    }

    fn before(&self, op: Op) {
        match op {
            Op::Put(n) => self.uploaded(n),
            Op::Delete => {
                self.a.fetch_add(1, Relaxed);
            }
            Op::Read | Op::Stat => {
                self.b.fetch_add(1, Relaxed);
            }
            Op::Rename(_) | Op::List => {}
        }
    }

    fn after(&self, op: Op, measured: u64) {
        match op {
            Op::Rename(n) => self.uploaded(n),
            // Downloads are limited after the fact: the length is known only once the data is here.
            Op::Read => {
                self.down.fetch_add(measured, Relaxed);
                if let Some(t) = &self.down_limit {
                    t.take(measured);
                }
            }
            Op::List => {
                self.c.fetch_add(1 + measured / 1000, Relaxed);
            }
            Op::Put(_) | Op::Delete | Op::Stat => {}
        }
    }

    fn uploaded(&self, n: u64) {
        self.a.fetch_add(1, Relaxed);
        self.up.fetch_add(n, Relaxed);
        if let Some(t) = &self.up_limit {
            t.take(n);
        }
    }

    pub fn counts(&self) -> OpCounts {
        OpCounts {
            class_a: self.a.load(Relaxed),
            class_b: self.b.load(Relaxed),
            class_c: self.c.load(Relaxed),
            bytes_up: self.up.load(Relaxed),
            bytes_down: self.down.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(m: &Meter) -> [u64; 5] {
        let c = m.counts();
        [c.class_a, c.class_b, c.class_c, c.bytes_up, c.bytes_down]
    }

    #[test]
    fn failures_count_what_was_sent_and_nothing_after() {
        let m = Meter::new(Some(1), None, None);
        let fail = || Err::<(), ()>(());
        assert!(m.run(Op::Put(10), fail).is_err());
        assert!(m.run(Op::Delete, fail).is_err());
        assert!(m.run(Op::Rename(5), fail).is_err());
        assert!(m.run(Op::Stat, fail).is_err());
        assert!(m.run(Op::Read, || Err::<usize, ()>(())).is_err());
        assert!(m.run(Op::List, || Err::<Vec<()>, ()>(())).is_err());
        assert_eq!(counts(&m), [2, 2, 0, 10, 0]);
    }

    #[test]
    fn results_are_measured_after_success() {
        let m = Meter::new(None, None, None);
        m.run(Op::Rename(5), || Ok::<(), ()>(())).unwrap();
        m.run(Op::Read, || Ok::<usize, ()>(7)).unwrap();
        m.run(Op::List, || Ok::<_, ()>(vec![(); 2500])).unwrap();
        assert_eq!(counts(&m), [1, 1, 3, 5, 7]);
    }

    #[test]
    fn one_slot_per_operation_released_before_the_next() {
        // A gate of one: a second `run` from inside the first would never enter; sequential
        // runs (and a failed one) must each give their slot back.
        let m = Meter::new(Some(1), None, None);
        for _ in 0..3 {
            let _ = m.run(Op::Stat, || Err::<(), ()>(()));
            m.run(Op::Stat, || Ok::<(), ()>(())).unwrap();
        }
        assert_eq!(counts(&m)[1], 6);
    }
}
