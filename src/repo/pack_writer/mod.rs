//! The pack writer, used by backup and by prune's repack: sealed blobs come in through a
//! bounded queue ([`BlobSink`]), a packer fills packs, and `connections` uploaders store them
//! while the producer goes on.
//!
//! - Two packs per blob kind are open at once and every blob goes to one of them at random,
//!   so the provider cannot tell which stored chunks belong to one file (restic 0.18's
//!   mitigation of chunk-size fingerprinting); two small leftovers at the end become one.
//! - A [`PackBuilder`] streams each blob into its [`Spool`] as it arrives (hashing as it
//!   goes): a temporary file on a local repository, so no pack is held in memory there;
//!   in-memory parts for remote ones, stored with one PUT.
//! - Memory is bounded by the queues: at most [`BLOB_QUEUE`] sealed blobs wait for the
//!   packer, and a finished pack is handed straight to an idle uploader.
//! - With [`WriterOptions::index_every`], an index file is written every that many stored
//!   packs (or sooner, once they hold [`INDEX_FILE_BLOBS`] blobs) and for the rest at the end, each after a durability barrier (packs before the
//!   index that names them), so an interrupted backup's packs are known to the next run.
//!   Also when the producer or an upload fails, the packs already stored are indexed.

use super::index::{IndexFile, IndexPack, INDEX_FILE_BLOBS};
use super::Repository;
use crate::error::{Error, Result};
use crate::format::layout;
use crate::format::pack::{random_below, BlobKind, SealedBlob};
use crate::ids::IndexId;
mod builder;

pub use builder::{FinishedPack, PackBuilder};
use crossbeam_channel::{bounded, Receiver, Sender};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Mutex;

/// Sealed blobs that may wait for the packer.
pub const BLOB_QUEUE: usize = 8;

#[derive(Clone, Copy, Debug)]
pub struct WriterOptions {
    /// Concurrent pack uploads (at most two to a local disk, which gains nothing from more).
    pub connections: usize,
    /// Build packs but store nothing.
    pub dry_run: bool,
    /// Write an index file every this many stored packs and one at the end; `None`: the
    /// caller indexes the returned packs itself (prune writes whole new index files).
    pub index_every: Option<usize>,
}

/// What [`Repository::write_packs`] stored besides the producer's value.
#[derive(Debug, Default)]
pub struct Written {
    /// Stored packs that no index file written here lists (all of them without
    /// `index_every`).
    pub packs: Vec<IndexPack>,
    /// The index files written (with `index_every`).
    pub index_files: Vec<IndexId>,
}

/// Where a producer sends the blobs to store while [`Repository::write_packs`] runs.
pub struct BlobSink<'a> {
    tx: Sender<SealedBlob>,
    abort: &'a AtomicBool,
}

impl BlobSink<'_> {
    pub fn send(&self, blob: SealedBlob) -> Result<()> {
        self.tx
            .send(blob)
            .map_err(|_| Error::Usage("backup aborted: the pack writer stopped".into()))
    }

    /// Whether an upload failed: the producer should stop.
    pub fn aborted(&self) -> bool {
        self.abort.load(Relaxed)
    }
}

impl Repository {
    /// Run `produce` while the blobs it sends are packed and stored. Returns its value and
    /// what was stored ([`Written`]). The first error, of an upload or of `produce`, is the
    /// one returned.
    pub fn write_packs<T: Send>(
        &self,
        opts: &WriterOptions,
        produce: impl FnOnce(&BlobSink) -> Result<T> + Send,
    ) -> Result<(T, Written)> {
        let connections = match self.backend().is_local() {
            true => opts.connections.clamp(1, 2),
            false => opts.connections.max(1),
        };
        let (tx, rx) = bounded::<SealedBlob>(BLOB_QUEUE);
        let (up_tx, up_rx) = bounded::<FinishedPack>(0);
        let abort = AtomicBool::new(false);
        let upload = Uploader {
            repo: self,
            opts: *opts,
            done: Mutex::new(Vec::new()),
            index_files: Mutex::new(Vec::new()),
            error: Mutex::new(None),
            abort: &abort,
        };
        let produced = std::thread::scope(|s| {
            let upload = &upload;
            s.spawn(move || {
                if let Err(e) = pack_blobs(rx, self, &up_tx, opts.dry_run) {
                    upload.fail(e);
                }
            });
            for _ in 0..connections {
                let up_rx = up_rx.clone();
                s.spawn(move || upload.run(up_rx));
            }
            drop(up_rx);
            let sink = BlobSink { tx, abort: &abort };
            // Dropping the sink lets the packer flush and the uploaders finish.
            produce(&sink)
        });
        let failure = upload.error.lock().expect("lock").take();
        match failure.map(Err).unwrap_or(produced) {
            Ok(v) => {
                upload.flush_index(true)?;
                if opts.index_every.is_none() && !opts.dry_run {
                    self.backend().barrier()?;
                }
                let written = Written {
                    packs: upload.done.into_inner().expect("lock"),
                    index_files: upload.index_files.into_inner().expect("lock"),
                };
                Ok((v, written))
            }
            Err(e) => {
                // Index what was stored, so the next run does not upload it again.
                let _ = upload.flush_index(true);
                Err(e)
            }
        }
    }
}

/// Fill packs from the blob queue and hand each full one to an uploader (see the module
/// comment for how blobs are spread over open packs).
fn pack_blobs(rx: Receiver<SealedBlob>, repo: &Repository, up: &Sender<FinishedPack>, dry_run: bool) -> Result<()> {
    let pack_size = repo.config().pack_size as usize;
    let body = || match dry_run {
        true => Ok(crate::backends::Spool::memory()),
        false => repo.backend().spool_in(repo.cache().map(|c| c.dir())),
    };
    let send = |b: PackBuilder| -> Result<bool> { Ok(up.send(b.finish(repo.key())?).is_ok()) };
    // [data, tree] × two open packs.
    let mut open: [[Option<PackBuilder>; 2]; 2] = Default::default();
    for blob in rx {
        let slot = &mut open[(blob.kind == BlobKind::Tree) as usize][random_below(2)];
        let builder = match slot {
            Some(b) => b,
            None => slot.insert(PackBuilder::new(body()?)),
        };
        builder.add(blob)?;
        if builder.size() >= pack_size && !send(slot.take().expect("filled"))? {
            return Ok(());
        }
    }
    for [a, b] in open {
        // Two small packs left: one pack, so a small backup's chunks are not split over two
        // packs whose sizes would give the chunk sizes away.
        let last: Vec<PackBuilder> = match (a, b) {
            (Some(a), Some(b)) if a.size() + b.size() < pack_size => {
                let (mut big, small) = if a.size() >= b.size() { (a, b) } else { (b, a) };
                for blob in small.into_blobs()? {
                    big.add(blob)?;
                }
                vec![big]
            }
            (a, b) => a.into_iter().chain(b).collect(),
        };
        for b in last {
            if !send(b)? {
                return Ok(());
            }
        }
    }
    Ok(())
}

struct Uploader<'a> {
    repo: &'a Repository,
    opts: WriterOptions,
    done: Mutex<Vec<IndexPack>>,
    index_files: Mutex<Vec<IndexId>>,
    error: Mutex<Option<Error>>,
    abort: &'a AtomicBool,
}

/// A local pack spool (or index file's temporary) that vanished before its rename was removed
/// by a prune on another host that took it for a leftover (one older than its grace period):
/// say so.
fn spool_gone(e: crate::backends::BackendError) -> Error {
    match e {
        crate::backends::BackendError::Local {
            op: "rename into",
            source,
            ..
        } if source.kind() == std::io::ErrorKind::NotFound => Error::PrunedMeanwhile {
            host: "another host".into(),
            detail: "it removed this backup's unfinished files from the repository's .tmp/".into(),
        },
        e => e.into(),
    }
}

impl Uploader<'_> {
    fn run(&self, rx: Receiver<FinishedPack>) {
        for p in rx {
            if self.abort.load(Relaxed) {
                continue; // keep draining so nobody blocks on a full queue
            }
            let r = match self.opts.dry_run {
                true => Ok(()),
                false => self.repo.backend().put_spool(&layout::pack(&p.id), p.body),
            };
            let r = r.map_err(spool_gone).and_then(|()| {
                self.done.lock().expect("lock").push(IndexPack {
                    id: p.id,
                    blobs: p.blobs,
                });
                self.flush_index(false)
            });
            if let Err(e) = r {
                self.fail(e);
            }
        }
    }

    /// Stop the run with `e` (the first error is the one reported).
    fn fail(&self, e: Error) {
        self.abort.store(true, Relaxed);
        self.error.lock().expect("lock").get_or_insert(e);
    }

    /// Write an index file for stored packs: always at the end, every `index_every` before.
    fn flush_index(&self, all: bool) -> Result<()> {
        let Some(every) = self.opts.index_every else {
            return Ok(());
        };
        let packs = {
            let mut d = self.done.lock().expect("lock");
            // Every `every` packs, or sooner once the packs hold an index file's worth of
            // blobs (small files make packs of tens of thousands of blobs; one index file per
            // 8 such packs made million-blob files that every reader decoded whole).
            let blobs: usize = d.iter().map(|p| p.blobs.len()).sum();
            if d.is_empty() || (!all && d.len() < every && blobs < INDEX_FILE_BLOBS) {
                return Ok(());
            }
            std::mem::take(&mut *d)
        };
        if !self.opts.dry_run {
            // Packs must be durable before an index names them.
            self.repo.backend().barrier()?;
            let id = self
                .repo
                .save_index(&IndexFile {
                    packs,
                    ..Default::default()
                })
                .map_err(|e| match e {
                    Error::Backend(b) => spool_gone(b),
                    e => e,
                })?;
            self.index_files.lock().expect("lock").push(id);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::{Backend, Location};
    use crate::format::config::Config;
    use crate::format::keyfile::KdfParams;
    use crate::format::pack::decode_header;
    use crate::ids::BlobId;
    use std::collections::HashSet;
    use std::path::Path;

    fn local_repo(dir: &Path, pack_size: u32) -> Repository {
        let loc = Location::parse(dir.to_str().unwrap()).unwrap();
        let kdf = KdfParams {
            m_cost_kib: 64,
            t_cost: 1,
            p_cost: 1,
        };
        let config = Config {
            pack_size,
            ..Config::new()
        };
        Repository::init(Backend::open(&loc, true).unwrap(), b"pw", kdf, config).unwrap()
    }

    /// Run the packer over `blobs` (in this order) and return the finished packs.
    fn pack(repo: &Repository, blobs: Vec<SealedBlob>) -> Vec<FinishedPack> {
        let (tx, rx) = bounded(4);
        let (up_tx, up_rx) = bounded(0);
        std::thread::scope(|s| {
            // The packer owns the only sender, so the collector ends when the packer does.
            let packer = s.spawn(move || pack_blobs(rx, repo, &up_tx, false));
            let collector = s.spawn(move || up_rx.iter().collect::<Vec<_>>());
            for b in blobs {
                tx.send(b).unwrap();
            }
            drop(tx);
            packer.join().unwrap().unwrap();
            collector.join().unwrap()
        })
    }

    fn blob(repo: &Repository, i: u32, kind: BlobKind, len: usize) -> SealedBlob {
        let mut plain = i.to_le_bytes().to_vec();
        plain.extend((4..len).map(|j| (i as usize * 31 + j * 7) as u8));
        SealedBlob {
            id: repo.key().blob_id(&plain),
            kind,
            sealed: repo.key().seal(&plain),
            raw_length: len as u32,
            compressed: false,
        }
    }

    #[test]
    fn packs_of_many_small_blobs_get_index_files_of_bounded_size() {
        let dir = tempfile::tempdir().unwrap();
        let repo = local_repo(dir.path(), 1 << 20);
        let n = 2 * INDEX_FILE_BLOBS + 20_000;
        let opts = WriterOptions {
            connections: 2,
            dry_run: false,
            index_every: Some(8),
        };
        let ((), written) = repo
            .write_packs(&opts, |sink| {
                (0..n as u32).try_for_each(|i| sink.send(blob(&repo, i, BlobKind::Data, 40)))
            })
            .unwrap();
        let files: Vec<IndexFile> = written
            .index_files
            .iter()
            .map(|id| repo.read_index_file(&id.to_hex()).unwrap())
            .collect();
        let packs: Vec<&IndexPack> = files.iter().flat_map(|f| &f.packs).collect();
        // About 15,000 blobs a pack: fewer than 8 packs, which once made one file of all.
        assert!(packs.len() < 16, "{} packs", packs.len());
        let largest = packs.iter().map(|p| p.blobs.len()).max().unwrap();
        let mut total = 0;
        for f in &files {
            let blobs: usize = f.packs.iter().map(|p| p.blobs.len()).sum();
            assert!(blobs < INDEX_FILE_BLOBS + largest, "an index file of {blobs} blobs");
            total += blobs;
        }
        assert_eq!(total, n, "every blob is indexed once");
        assert!(
            written.index_files.len() >= 3,
            "{} index files",
            written.index_files.len()
        );
    }

    #[test]
    fn blobs_are_spread_at_random_over_two_open_packs() {
        let dir = tempfile::tempdir().unwrap();
        let repo = local_repo(dir.path(), 1 << 20);
        let data: Vec<SealedBlob> = (0..400).map(|i| blob(&repo, i, BlobKind::Data, 20_000)).collect();
        let order: Vec<BlobId> = data.iter().map(|b| b.id).collect();
        let mut blobs = data;
        blobs.push(blob(&repo, 1000, BlobKind::Tree, 500));
        let packs = pack(&repo, blobs);

        let mut pack_of = std::collections::HashMap::new();
        for (n, p) in packs.iter().enumerate() {
            let kinds: HashSet<BlobKind> = p.blobs.iter().map(|e| e.kind).collect();
            assert_eq!(kinds.len(), 1, "a pack holds one kind of blob");
            for e in &p.blobs {
                assert!(pack_of.insert(e.id, n).is_none(), "blob packed twice");
            }
        }
        assert_eq!(pack_of.len(), 401, "every blob is packed once");
        // Filled one pack after another, 400 blobs would change pack about 8 times; assigned at
        // random between two open packs, about 200 times (fewer than 60 has odds below 1e-40).
        let switches = order.windows(2).filter(|w| pack_of[&w[0]] != pack_of[&w[1]]).count();
        assert!(switches > 60, "only {switches} pack changes along the blob order");

        for p in packs {
            let (id, blobs) = (p.id, p.blobs);
            let bytes = p.body.into_bytes().unwrap();
            assert_eq!(blake3::hash(&bytes).as_bytes(), &id.0);
            assert_eq!(decode_header(repo.key(), &bytes).unwrap(), blobs);
        }
    }

    #[test]
    fn two_small_open_packs_are_stored_as_one() {
        let dir = tempfile::tempdir().unwrap();
        let repo = local_repo(dir.path(), 16 << 20);
        let blobs = (0..6).map(|i| blob(&repo, i, BlobKind::Data, 100_000)).collect();
        let packs = pack(&repo, blobs);
        assert_eq!(packs.len(), 1);
        assert_eq!(packs[0].blobs.len(), 6);
        let bytes = packs.into_iter().next().unwrap().body.into_bytes().unwrap();
        assert_eq!(decode_header(repo.key(), &bytes).unwrap().len(), 6);
    }
}
