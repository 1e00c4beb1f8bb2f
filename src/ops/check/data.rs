//! `check --read-data` and `--read-data-subset`: which packs are read, and reading one.
//!
//! Subsets are deterministic, decided by pack ids alone (ids are uniform hashes), so runs on
//! any host agree and a rotation covers every pack:
//! - `N/M`: the packs whose id's first 8 bytes, as a big-endian u64, are `N - 1` modulo `M`;
//!   the runs `1/M` … `M/M` read every pack exactly once.
//! - `P%`: the packs whose id's first 8 bytes, as a fraction of 2^64, are below `P / 100`
//!   (the same packs every time; a larger `P` reads a superset).
//! - a size (`500MiB`, `2G`): packs in id order from a start that moves with the ISO week
//!   (week `w` starts at the fraction `(w - 1) / 53` of the id space, wrapping around),
//!   until at least that many bytes are read; weekly runs of at least 1/53 of the
//!   repository read every pack in a year.

use crate::error::{Error, Result};
use crate::format::layout;
use crate::format::pack::decode_sealed_header;
use crate::ids::PackId;
use crate::repo::index::Index;
use crate::repo::pack_reader::Cover;
use crate::repo::Repository;
use std::fmt;
use std::str::FromStr;

/// Which packs `--read-data-subset` reads (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Subset {
    /// Part `n` of `m` (1 ≤ n ≤ m).
    Part { n: u64, m: u64 },
    /// Millionths of a percent: `10%` is 10,000,000.
    Percent(u64),
    /// Bytes, read from the week's start in id order.
    Size(u64),
}

/// The first 8 bytes of a pack id: its place in every subset's order.
fn prefix(id: &PackId) -> u64 {
    u64::from_be_bytes(id.0[..8].try_into().expect("8 bytes"))
}

impl Subset {
    /// Whether pack `id` is in a `Part` or `Percent` subset (a `Size` takes all, see [`select`]).
    fn holds(&self, id: &PackId) -> bool {
        match *self {
            Subset::Part { n, m } => prefix(id) % m == n - 1,
            // prefix / 2^64 < p / 10^8, exactly.
            Subset::Percent(p) => (prefix(id) as u128) * 100_000_000 < (p as u128) << 64,
            Subset::Size(_) => true,
        }
    }
}

impl FromStr for Subset {
    type Err = Error;

    fn from_str(s: &str) -> Result<Subset> {
        let bad = |why: &str| Error::Usage(format!("invalid --read-data-subset {s:?}: {why}"));
        let t = s.trim();
        if let Some((n, m)) = t.split_once('/') {
            let (n, m) = match (n.trim().parse::<u64>(), m.trim().parse::<u64>()) {
                (Ok(n), Ok(m)) => (n, m),
                _ => return Err(bad("N/M takes two whole numbers, like 1/4")),
            };
            if m == 0 || n == 0 || n > m {
                return Err(bad("N/M needs 1 ≤ N ≤ M"));
            }
            return Ok(Subset::Part { n, m });
        }
        if let Some(p) = t.strip_suffix('%') {
            return match p.trim().parse::<f64>() {
                Ok(p) if p.is_finite() && p > 0.0 && p <= 100.0 => Ok(Subset::Percent((p * 1e6).round() as u64)),
                _ => Err(bad("P% needs a number above 0 and at most 100, like 10%")),
            };
        }
        let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let unit = match unit.trim().to_ascii_lowercase().as_str() {
            "b" => 1u64,
            "k" | "kib" => 1 << 10,
            "m" | "mib" => 1 << 20,
            "g" | "gib" => 1 << 30,
            "t" | "tib" => 1 << 40,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            _ => return Err(bad("give N/M, P% or a size with a unit (500MiB, 2G, 1.5TB)")),
        };
        match num.parse::<f64>() {
            Ok(v) if v.is_finite() && v > 0.0 => Ok(Subset::Size((v * unit as f64).ceil() as u64)),
            _ => Err(bad("a size needs a number above 0, like 500MiB")),
        }
    }
}

impl fmt::Display for Subset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subset::Part { n, m } => write!(f, "{n}/{m}"),
            Subset::Percent(p) => write!(f, "{}%", *p as f64 / 1e6),
            Subset::Size(b) => write!(f, "{b} bytes"),
        }
    }
}

/// The ISO week number (1–53) of today, in UTC: where a size subset starts.
pub(super) fn this_week() -> u32 {
    use chrono::Datelike;
    chrono::Utc::now().iso_week().week()
}

/// The packs of `packs` (id, size) in `subset`, in id order; all of them without one. A
/// size subset starts at the first id at or after the fraction `(week - 1) / 53` of the id
/// space and takes packs in id order, wrapping around, until their sizes reach it.
pub(super) fn select(mut packs: Vec<(PackId, u64)>, subset: Option<&Subset>, week: u32) -> Vec<(PackId, u64)> {
    packs.sort_unstable();
    let Some(subset) = subset else { return packs };
    let Subset::Size(want) = *subset else {
        packs.retain(|(id, _)| subset.holds(id));
        return packs;
    };
    let start = ((week.clamp(1, 53) as u128 - 1) << 64) / 53;
    let first = packs.partition_point(|(id, _)| (prefix(id) as u128) < start);
    let (mut out, mut bytes) = (Vec::new(), 0u64);
    for k in 0..packs.len() {
        if bytes >= want {
            break;
        }
        let p = packs[(first + k) % packs.len()];
        bytes += p.1;
        out.push(p);
    }
    out.sort_unstable();
    out
}

/// Read a whole pack of `size` bytes in windows: its bytes must hash to its name, and every
/// blob must open, match its id and be indexed. Memory stays at one window, whatever the
/// pack size.
pub(super) fn read_pack(repo: &Repository, index: &Index, id: &PackId, size: u64) -> Result<()> {
    let path = layout::pack(id);
    let corrupt = |reason: String| Error::corrupt(&path, reason);
    // The pack is read whole anyway: a large first tail read usually holds the whole header.
    let tail = repo.read_pack_tail(&path, size, 256 << 10)?;
    let area = tail.area;
    let mut entries =
        decode_sealed_header(repo.key(), tail.header(), area as usize).map_err(|e| corrupt(e.to_string()))?;
    entries.sort_by_key(|e| e.offset);
    let mut hasher = blake3::Hasher::new();
    repo.read_pack_blobs_par(
        id,
        &entries,
        Cover::Area(area),
        // The pack hash covers the stored bytes: hashed before blobs are decrypted in place.
        &mut |bytes| {
            hasher.update(bytes);
        },
        &|i, _| match index.get(&entries[i].id) {
            Some(_) => Ok(()),
            None => Err(corrupt(format!("blob {} is not indexed", entries[i].id.short()))),
        },
    )?;
    hasher.update(tail.after_area());
    if hasher.finalize().as_bytes() != &id.0 {
        return Err(corrupt("content does not match its name (hash mismatch)".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packs(n: usize) -> Vec<(PackId, u64)> {
        (0..n)
            .map(|i| (PackId(*blake3::hash(&i.to_le_bytes()).as_bytes()), 100))
            .collect()
    }

    #[test]
    fn parts_cover_every_pack_exactly_once() {
        let all = packs(1000);
        let mut seen: Vec<PackId> = (1..=7)
            .flat_map(|n| select(all.clone(), Some(&Subset::Part { n, m: 7 }), 1))
            .map(|(id, _)| id)
            .collect();
        seen.sort();
        let mut want: Vec<PackId> = all.iter().map(|p| p.0).collect();
        want.sort();
        assert_eq!(seen, want);
    }

    #[test]
    fn percent_and_size_are_deterministic_and_sized() {
        let all = packs(10_000);
        let ten = select(all.clone(), Some(&"10%".parse().unwrap()), 1);
        assert!((850..1150).contains(&ten.len()), "{}", ten.len());
        assert_eq!(ten, select(all.clone(), Some(&"10%".parse().unwrap()), 30));
        let twenty = select(all.clone(), Some(&"20%".parse().unwrap()), 1);
        assert!(
            ten.iter().all(|p| twenty.contains(p)),
            "a larger share reads a superset"
        );
        assert_eq!(select(all.clone(), Some(&"100%".parse().unwrap()), 1).len(), all.len());
        let size = |week| select(all.clone(), Some(&Subset::Size(1050)), week);
        assert_eq!(size(1).len(), 11, "at least the size, in whole packs");
        assert_ne!(size(1), size(2), "another week, other packs");
        assert_eq!(select(all.clone(), Some(&Subset::Size(1 << 40)), 9).len(), all.len());
    }

    #[test]
    fn specs_parse_or_fail_with_one_line() {
        let ok = |s: &str| s.parse::<Subset>().unwrap();
        assert_eq!(ok("2/5"), Subset::Part { n: 2, m: 5 });
        assert_eq!(ok("2.5%"), Subset::Percent(2_500_000));
        assert_eq!(ok("500MiB"), Subset::Size(500 << 20));
        assert_eq!(ok("2G"), Subset::Size(2 << 30));
        assert_eq!(ok("1.5gb"), Subset::Size(1_500_000_000));
        for bad in [
            "0/3",
            "4/3",
            "1/0",
            "a/b",
            "0%",
            "101%",
            "x%",
            "10",
            "5 parsecs",
            "",
            "-1G",
            "1/3/4",
        ] {
            let e = bad.parse::<Subset>().unwrap_err().to_string();
            assert!(
                e.starts_with("invalid --read-data-subset") && !e.contains('\n'),
                "{bad}: {e}"
            );
        }
    }
}
