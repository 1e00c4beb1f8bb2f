//! Loading a shared repository's index: five hosts back up into one repository, and one host
//! whose cache is warm loads the index after the others added a million blobs. Prints, per
//! case, the wall time and the peak memory the load added, per million blobs in the index.
//!
//!   cargo bench --bench index_load [-- MILLIONS]   # MILLIONS of old and of new blobs (1)
//!
//! Cases: `cold` reads every index file from the repository, with no cache (what the first
//! load on a host costs, and every load with `--no-cache`); `files` reads every file from the
//! cache but has no merged index (after a prune rewrote the index); `new` has the merged
//! index of the old blobs and reads only the others' new files (the shared-repository case,
//! which saves the merged index again); `same` finds nothing new; `few` finds one new file
//! (one more backup), too little to save the merged index again for. The repository is a local directory: what is measured is the
//! decoding, not a network. Index files hold 5,000 blobs in 8 packs, as a backup of small
//! files writes them.

mod common;
use common::Rng;
use pbak::backends::{Backend, Location};
use pbak::format::config::Config;
use pbak::format::keyfile::KdfParams;
use pbak::format::pack::{BlobEntry, BlobKind};
use pbak::ids::{BlobId, PackId};
use pbak::repo::index::{IndexFile, IndexPack};
use pbak::repo::Repository;
use std::time::Instant;

const HOSTS: usize = 5;
const FILE_BLOBS: usize = 5_000;
const FILE_PACKS: usize = 8;

/// `blobs` new blobs in index files of [`FILE_BLOBS`], as `hosts` hosts' backups wrote them.
fn write_files(repo: &Repository, rng: &mut Rng, blobs: usize) {
    for _ in 0..blobs.div_ceil(FILE_BLOBS) {
        let per_pack = FILE_BLOBS / FILE_PACKS;
        let packs = (0..FILE_PACKS)
            .map(|_| {
                let mut offset = 0u32;
                let blobs = (0..per_pack)
                    .map(|_| {
                        let length = 1000 + (rng.next() % 60_000) as u32;
                        let e = BlobEntry {
                            id: BlobId(rng.id()),
                            kind: BlobKind::Data,
                            offset,
                            length,
                            raw_length: length * 2,
                            compressed: true,
                        };
                        offset += length;
                        e
                    })
                    .collect();
                IndexPack {
                    id: PackId(rng.id()),
                    blobs,
                }
            })
            .collect();
        let f = IndexFile {
            packs,
            marked: Vec::new(),
        };
        repo.save_index(&f).expect("save index file");
    }
}

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("status field")
}

/// Wall seconds and peak bytes added by one load.
fn measure(repo: &Repository) -> (f64, u64, usize) {
    // Writing 5 resets the peak (VmHWM) to the current resident size.
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak RSS");
    let before = status_kib("VmRSS:");
    let t = Instant::now();
    let index = repo.load_index().expect("load index");
    let secs = t.elapsed().as_secs_f64();
    let peak = status_kib("VmHWM:").saturating_sub(before) * 1024;
    let blobs = index.blob_count();
    drop(index);
    (secs, peak, blobs)
}

fn report(case: &str, (secs, peak, blobs): (f64, u64, usize)) {
    let m = blobs as f64 / 1e6;
    println!(
        "{case:<6} {blobs:>9} blobs  {:>7.1} ms  {:>6.1} ms/M  peak +{:>6.1} MB  {:>5.1} B/blob",
        secs * 1e3,
        secs * 1e3 / m,
        peak as f64 / 1e6,
        peak as f64 / blobs as f64
    );
}

fn main() {
    let millions: f64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(1.0);
    let blobs = (millions * 1e6) as usize;
    let dir = tempfile::tempdir_in(std::env::var_os("PBAK_BENCH_DIR").unwrap_or("/var/tmp".into())).expect("temp dir");
    let loc = Location::parse(dir.path().join("repo").to_str().expect("utf-8")).expect("location");
    let kdf = KdfParams {
        m_cost_kib: 64,
        t_cost: 1,
        p_cost: 1,
    };
    let repo = Repository::init(Backend::open(&loc, true).expect("backend"), b"pw", kdf, Config::new()).expect("init");
    let cache = dir.path().join("cache");
    let cached = repo.uncached().with_cache(Some(cache.clone()));
    let mut rng = Rng(1);
    println!(
        "index load, {HOSTS} hosts, {FILE_BLOBS} blobs per index file, {} cores",
        rayon::current_num_threads()
    );
    // The old blobs, loaded once by this host (its merged index covers them).
    for _ in 0..HOSTS {
        write_files(&repo, &mut rng, blobs / HOSTS);
    }
    cached.load_index().expect("first load");
    // The other four hosts add the new blobs.
    for _ in 1..HOSTS {
        write_files(&repo, &mut rng, blobs / (HOSTS - 1));
    }
    report("new", measure(&cached));
    report("same", measure(&cached));
    // One more backup's index file: read from the repository, the merged index not rewritten.
    write_files(&repo, &mut rng, FILE_BLOBS);
    report("few", measure(&cached));
    report("cold", measure(&repo));
    let merged = std::fs::read_dir(&cache)
        .expect("cache")
        .flatten()
        .map(|d| d.path().join("index.merged"))
        .find(|p| p.exists())
        .expect("a merged index in the cache");
    std::fs::remove_file(merged).expect("remove merged index");
    report("files", measure(&cached));
}
