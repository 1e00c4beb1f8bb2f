//! Throughput of the hot paths of a backup: chunking, keyed hashing, compression, sealing,
//! the three together in parallel, and lookups in the in-memory index.
//!
//! Run with `cargo bench --bench throughput` (or `-- --quick` for a fast pass). Measurement
//! times are kept short on purpose: the numbers are for spotting regressions, not papers.

mod common;
use common::Rng;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pbak::chunker::{Chunker, ChunkerParams};
use pbak::format::crypto::MasterKey;
use pbak::format::pack::{BlobEntry, BlobKind};
use pbak::ids::{BlobId, PackId};
use pbak::repo::index::{IndexBuilder, IndexPack};
use rayon::prelude::*;
use std::time::Duration;

const MIB: usize = 1 << 20;
const BIG: usize = 64 * MIB;
const INDEX_ENTRIES: u64 = 10_000_000;
const LOOKUPS: u64 = 100_000;

/// Incompressible bytes.
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Text-like bytes: words from a small vocabulary with numbers and punctuation mixed in,
/// compressing roughly like source code or logs (about 3-4x with zstd level 3).
fn text_bytes(len: usize, seed: u64) -> Vec<u8> {
    const VOCABULARY: &str = "\
        the backup snapshot chunk index pack error of and to in file btrfs subvolume data tree key \
        repository config blob seal open read write size offset length return let fn struct impl \
        for while if else match Some None Ok Err self mut u32 u64 Vec String usize";
    let words: Vec<&str> = VOCABULARY.split_whitespace().collect();
    let mut rng = Rng(seed);
    let mut out = Vec::with_capacity(len + 64);
    while out.len() < len {
        let r = rng.next();
        out.extend_from_slice(words[(r % words.len() as u64) as usize].as_bytes());
        match (r >> 32) % 16 {
            0 => out.extend_from_slice(format!(" {} ", (r >> 40) % 100_000).as_bytes()),
            1 => out.extend_from_slice(b";\n"),
            2 => out.extend_from_slice(b", "),
            3 => out.extend_from_slice(b"(\n    "),
            _ => out.push(b' '),
        }
    }
    out.truncate(len);
    out
}

fn chunking(c: &mut Criterion) {
    let data = random_bytes(BIG, 1);
    let chunker = Chunker::new(ChunkerParams::default(), 0x5eed_1234_abcd_0042);
    let mut g = c.benchmark_group("chunking");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("fastcdc_64MiB", |b| {
        b.iter(|| black_box(chunker.cut_all(black_box(&data))))
    });
    g.finish();
}

fn hashing(c: &mut Criterion) {
    let key = MasterKey::generate();
    let chunk = random_bytes(MIB, 2);
    let mut g = c.benchmark_group("hashing");
    g.throughput(Throughput::Bytes(chunk.len() as u64));
    g.bench_function("blob_id_1MiB", |b| b.iter(|| black_box(key.blob_id(black_box(&chunk)))));
    g.finish();
}

fn compression(c: &mut Criterion) {
    let chunk = text_bytes(MIB, 3);
    let ratio = chunk.len() as f64 / zstd::bulk::compress(&chunk, 3).unwrap().len() as f64;
    eprintln!("compression: text-like sample compresses {ratio:.2}x at zstd level 3");
    let mut g = c.benchmark_group("compression");
    g.throughput(Throughput::Bytes(chunk.len() as u64));
    g.bench_function("zstd3_text_1MiB", |b| {
        b.iter(|| black_box(zstd::bulk::compress(black_box(&chunk), 3).unwrap()))
    });
    g.finish();
}

fn sealing(c: &mut Criterion) {
    let key = MasterKey::generate();
    let chunk = random_bytes(MIB, 4);
    let mut g = c.benchmark_group("sealing");
    g.throughput(Throughput::Bytes(chunk.len() as u64));
    g.bench_function("seal_1MiB", |b| b.iter(|| black_box(key.seal(black_box(&chunk)))));
    g.finish();
}

/// What the archiver does to each chunk, over 64 MiB in 1 MiB chunks on all cores.
fn pipeline(c: &mut Criterion) {
    let key = MasterKey::generate();
    let data = text_bytes(BIG, 5);
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function(
        BenchmarkId::new("hash_zstd3_seal_64MiB", rayon::current_num_threads()),
        |b| {
            b.iter(|| {
                let stored: usize = data
                    .par_chunks(MIB)
                    .map(|chunk| {
                        let id = key.blob_id(chunk);
                        let compressed = zstd::bulk::compress(chunk, 3).unwrap();
                        let sealed = key.seal(&compressed);
                        black_box(id);
                        sealed.len()
                    })
                    .sum();
                black_box(stored)
            })
        },
    );
    g.finish();
}

/// A distinct, well-spread 32-byte id for every `n`.
fn synthetic_id(n: u64) -> [u8; 32] {
    let mut rng = Rng(n.wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut id = [0u8; 32];
    for part in id.chunks_exact_mut(8) {
        part.copy_from_slice(&rng.next().to_le_bytes());
    }
    id[..8].copy_from_slice(&n.to_le_bytes());
    id
}

/// Resident set size in bytes, from /proc/self/statm.
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

fn index(c: &mut Criterion) {
    const BLOBS_PER_PACK: u64 = 1000;
    let before = rss_bytes();
    let mut idx = IndexBuilder::default();
    let mut n = 0u64;
    while n < INDEX_ENTRIES {
        let blobs = (n..(n + BLOBS_PER_PACK).min(INDEX_ENTRIES))
            .map(|i| BlobEntry {
                id: BlobId(synthetic_id(i)),
                kind: BlobKind::Data,
                offset: (i % BLOBS_PER_PACK) as u32 * MIB as u32,
                length: MIB as u32,
                raw_length: MIB as u32,
                compressed: true,
            })
            .collect();
        idx.add_pack(&IndexPack {
            id: PackId(synthetic_id(u64::MAX - n)),
            blobs,
        });
        n += BLOBS_PER_PACK;
    }
    let idx = idx.finish();
    assert_eq!(idx.blob_count() as u64, INDEX_ENTRIES);
    match (before, rss_bytes()) {
        (Some(b), Some(a)) => eprintln!(
            "index: {} bytes/entry by RSS, {} by heap accounting ({} entries, RSS +{:.1} MiB)",
            a.saturating_sub(b) / INDEX_ENTRIES,
            idx.heap_bytes() as u64 / INDEX_ENTRIES,
            INDEX_ENTRIES,
            a.saturating_sub(b) as f64 / MIB as f64
        ),
        _ => eprintln!("index: RSS unavailable (no /proc/self/statm)"),
    }

    // Spread the probes over the whole id range; absent ids come from a disjoint range.
    let stride = INDEX_ENTRIES / LOOKUPS;
    let present: Vec<BlobId> = (0..LOOKUPS).map(|i| BlobId(synthetic_id(i * stride))).collect();
    let absent: Vec<BlobId> = (0..LOOKUPS)
        .map(|i| BlobId(synthetic_id(INDEX_ENTRIES + i * stride)))
        .collect();

    let mut g = c.benchmark_group("index_10M");
    g.throughput(Throughput::Elements(LOOKUPS));
    for (name, ids, expect) in [("contains_present", &present, LOOKUPS), ("contains_absent", &absent, 0)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let hits = ids.iter().filter(|id| idx.contains(black_box(*id))).count() as u64;
                assert_eq!(hits, expect);
                hits
            })
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
}

criterion_group! {
    name = benches;
    config = config();
    targets = chunking, hashing, compression, sealing, pipeline, index
}
criterion_main!(benches);
