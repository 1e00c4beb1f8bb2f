//! An HTTP/1.1 proxy on loopback that injects faults between pbak and a server, per request:
//! it reads each request's head, adds `Connection: close` (so every request gets its own
//! connection and its own dice roll), then either forwards it faithfully or injects a fault:
//! - `error`: answer 503 Slow Down or 429 Too Many Requests (alternately), with
//!   `Retry-After: retry_after` if set;
//! - `cut`: forward, then cut the connection after a random number of request or response
//!   bytes;
//! - `stall`: swallow the request and never answer (the client must time out).
//!
//! `first` limits faults to the first N requests (0: no limit). `peak` is the most forwarded
//! requests waiting for their response at once (from the request's head to the response's
//! first byte: inside the client's own request, so it never overstates the client's
//! concurrency).
//!
//! `counts` is every request received, by [`Kind`] (read from its head, so from the wire, not
//! from pbak's own meter): the request budget test compares them with a table.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Clone, Default)]
pub struct Faults {
    pub error: f64,
    pub cut: f64,
    pub stall: f64,
    pub retry_after: Option<u32>,
    pub first: u64,
}

/// What an S3 request is, from its head.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A GET of a whole object.
    Get,
    /// A GET with a `Range` header.
    RangedGet,
    Head,
    Put,
    Delete,
    /// A GET of a bucket listing (`list-type=` or `prefix=` in the query).
    List,
    /// A POST (multipart uploads, multi-object deletes) or any other method.
    Other,
}

impl Kind {
    /// The kind of the request whose head is `head` (request line and headers).
    pub fn of(head: &[u8]) -> Kind {
        let text = String::from_utf8_lossy(head);
        let mut lines = text.split("\r\n");
        let mut line = lines.next().unwrap_or("").split(' ');
        let (method, target) = (line.next().unwrap_or(""), line.next().unwrap_or(""));
        let query = target.split_once('?').map_or("", |q| q.1);
        let listing = query
            .split('&')
            .any(|p| p.starts_with("list-type=") || p.starts_with("prefix="));
        let ranged = lines.any(|l| l.to_ascii_lowercase().starts_with("range:"));
        match method {
            "GET" if listing => Kind::List,
            "GET" if ranged => Kind::RangedGet,
            "GET" => Kind::Get,
            "HEAD" => Kind::Head,
            "PUT" => Kind::Put,
            "DELETE" => Kind::Delete,
            _ => Kind::Other,
        }
    }
}

/// Requests received, by kind.
pub type Counts = BTreeMap<Kind, u64>;

pub struct FaultyProxy {
    pub addr: String,
    pub faults: Arc<AtomicU64>,
    pub stalls: Arc<AtomicU64>,
    pub peak: Arc<AtomicU64>,
    /// When each request arrived and whether it was answered with an error.
    pub log: Arc<Mutex<Vec<(Instant, bool)>>>,
    /// Every request received (faulted ones too), by kind.
    pub counts: Arc<Mutex<Counts>>,
}

fn rand(state: &AtomicU64) -> u64 {
    let mut x = state.fetch_add(0x9E3779B97F4A7C15, Ordering::Relaxed);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51afd7ed558ccd);
    x ^ (x >> 29)
}

enum Fate {
    Forward,
    Error(u16),
    Cut(u64),
    Stall,
}

/// The request head (through the blank line) and whatever body bytes came with it.
fn read_head(c: &mut TcpStream) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Some((buf, rest));
        }
        if buf.len() > 1 << 20 {
            return None;
        }
        let n = c.read(&mut chunk).ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn with_connection_close(head: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(&head[..head.len() - 4]);
    let mut out: String = text
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect::<Vec<_>>()
        .join("\r\n");
    out.push_str("\r\nConnection: close\r\n\r\n");
    out.into_bytes()
}

impl FaultyProxy {
    /// Proxy to `upstream` (host:port) answering 503 with probability `p` and cutting with
    /// probability `p`; runs until the process ends.
    pub fn start(upstream: &str, p: f64) -> FaultyProxy {
        FaultyProxy::start_with(
            upstream,
            Faults {
                error: p,
                cut: p,
                ..Default::default()
            },
        )
    }

    pub fn start_with(upstream: &str, f: Faults) -> FaultyProxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let faults = Arc::new(AtomicU64::new(0));
        let stalls = Arc::new(AtomicU64::new(0));
        let log = Arc::new(Mutex::new(Vec::new()));
        let seed = Arc::new(AtomicU64::new(12345));
        let seen = Arc::new(AtomicU64::new(0));
        let peak = Arc::new(AtomicU64::new(0));
        let waiting = Arc::new(AtomicU64::new(0));
        let counts = Arc::new(Mutex::new(Counts::new()));
        let up = upstream.to_string();
        let (faults2, stalls2, log2, peak2) = (faults.clone(), stalls.clone(), log.clone(), peak.clone());
        let counts2 = counts.clone();
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                let (up, f, seed, seen) = (up.clone(), f.clone(), seed.clone(), seen.clone());
                let (waiting, peak) = (waiting.clone(), peak2.clone());
                let (faults, stalls, log) = (faults2.clone(), stalls2.clone(), log2.clone());
                let counts = counts2.clone();
                std::thread::spawn(move || {
                    let mut c = c;
                    let Some((head, rest)) = read_head(&mut c) else { return };
                    *counts.lock().unwrap().entry(Kind::of(&head)).or_default() += 1;
                    let n = seen.fetch_add(1, Ordering::Relaxed);
                    let r = (rand(&seed) % 1_000_000) as f64 / 1_000_000.0;
                    let may = f.first == 0 || n < f.first;
                    let fate = if !may {
                        Fate::Forward
                    } else if r < f.error {
                        Fate::Error(if n % 2 == 0 { 503 } else { 429 })
                    } else if r < f.error + f.cut {
                        Fate::Cut(rand(&seed) % 200_000)
                    } else if r < f.error + f.cut + f.stall {
                        Fate::Stall
                    } else {
                        Fate::Forward
                    };
                    log.lock()
                        .unwrap()
                        .push((Instant::now(), matches!(fate, Fate::Error(_))));
                    if !matches!(fate, Fate::Forward) {
                        faults.fetch_add(1, Ordering::Relaxed);
                    }
                    match fate {
                        Fate::Error(code) => answer_error(c, code, f.retry_after),
                        Fate::Stall => {
                            stalls.fetch_add(1, Ordering::Relaxed);
                            // Swallow everything, answer nothing, until the client gives up.
                            let mut sink = [0u8; 65536];
                            while matches!(c.read(&mut sink), Ok(n) if n > 0) {}
                        }
                        Fate::Forward => forward(c, &up, &head, &rest, None, (waiting, peak)),
                        Fate::Cut(after) => forward(c, &up, &head, &rest, Some(after), (waiting, peak)),
                    }
                });
            }
        });
        FaultyProxy {
            addr,
            faults,
            stalls,
            peak,
            log,
            counts,
        }
    }

    /// The requests received since the last call, by kind (and start counting afresh).
    pub fn take_counts(&self) -> Counts {
        std::mem::take(&mut *self.counts.lock().unwrap())
    }
}

fn answer_error(mut c: TcpStream, code: u16, retry_after: Option<u32>) {
    let reason = if code == 429 {
        "Too Many Requests"
    } else {
        "Service Unavailable"
    };
    let ra = retry_after.map(|s| format!("Retry-After: {s}\r\n")).unwrap_or_default();
    let _ = c.write_all(
        format!("HTTP/1.1 {code} {reason}\r\n{ra}Content-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let _ = c.shutdown(Shutdown::Both);
}

/// (requests now waiting for their response, the most ever)
type Waiting = (Arc<AtomicU64>, Arc<AtomicU64>);

fn forward(c: TcpStream, upstream: &str, head: &[u8], rest: &[u8], cut_after: Option<u64>, w: Waiting) {
    let now = w.0.fetch_add(1, Ordering::SeqCst) + 1;
    w.1.fetch_max(now, Ordering::SeqCst);
    let Ok(mut s) = TcpStream::connect(upstream) else {
        w.0.fetch_sub(1, Ordering::SeqCst);
        return;
    };
    if s.write_all(&with_connection_close(head)).is_err() || s.write_all(rest).is_err() {
        w.0.fetch_sub(1, Ordering::SeqCst);
        return;
    }
    let (c2, s2) = (c.try_clone().unwrap(), s.try_clone().unwrap());
    // Responses to small requests are cut early too, so reads see cuts as well as uploads.
    let t = std::thread::spawn(move || pipe(s2, c2, cut_after.map(|a| a / 64), Some(w.0)));
    pipe(c, s, cut_after, None);
    let _ = t.join();
}

/// Copy `from` to `to`; `waiting` is decremented when the first bytes (or the end) arrive.
fn pipe(mut from: TcpStream, mut to: TcpStream, cut_after: Option<u64>, mut waiting: Option<Arc<AtomicU64>>) {
    let mut buf = [0u8; 65536];
    let mut sent = 0u64;
    loop {
        let r = from.read(&mut buf);
        if let Some(w) = waiting.take() {
            w.fetch_sub(1, Ordering::SeqCst);
        }
        let n = match r {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if cut_after.is_some_and(|c| sent + n as u64 > c) {
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
            return;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n as u64;
    }
    // Half-close: the other direction may still carry the response.
    let _ = to.shutdown(Shutdown::Write);
}
