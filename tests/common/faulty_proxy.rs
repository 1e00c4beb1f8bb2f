//! A TCP proxy on loopback that injects faults between pbak and a server: per connection,
//! with probability `p` it answers `503 Service Unavailable`, with probability `p` it cuts the
//! connection after a random number of bytes, otherwise it forwards faithfully.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub struct FaultyProxy {
    pub addr: String,
    pub faults: Arc<AtomicU64>,
}

fn rand(state: &AtomicU64) -> u64 {
    let mut x = state.fetch_add(0x9E3779B97F4A7C15, Ordering::Relaxed);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51afd7ed558ccd);
    x ^ (x >> 29)
}

impl FaultyProxy {
    /// Proxy to `upstream` (host:port); runs until the process ends.
    pub fn start(upstream: &str, p: f64) -> FaultyProxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let faults = Arc::new(AtomicU64::new(0));
        let seed = Arc::new(AtomicU64::new(12345));
        let (up, f2) = (upstream.to_string(), faults.clone());
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                let r = (rand(&seed) % 10_000) as f64 / 10_000.0;
                let cut_after = if r < 2.0 * p && r >= p {
                    Some(rand(&seed) % 200_000)
                } else {
                    None
                };
                if r < p {
                    f2.fetch_add(1, Ordering::Relaxed);
                    let mut c = c;
                    let _ = c.write_all(
                        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    let _ = c.shutdown(Shutdown::Both);
                    continue;
                }
                if cut_after.is_some() {
                    f2.fetch_add(1, Ordering::Relaxed);
                }
                let Ok(s) = TcpStream::connect(&up) else { continue };
                let (c2, s2) = (c.try_clone().unwrap(), s.try_clone().unwrap());
                std::thread::spawn(move || pipe(c, s, cut_after));
                std::thread::spawn(move || pipe(s2, c2, None));
            }
        });
        FaultyProxy { addr, faults }
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream, cut_after: Option<u64>) {
    let mut buf = [0u8; 16384];
    let mut sent = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if cut_after.is_some_and(|c| sent + n as u64 > c) {
            break;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n as u64;
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
