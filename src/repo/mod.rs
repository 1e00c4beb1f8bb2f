//! The repository: cryptography, packs, index, trees, snapshots and the operations on them.
//!
//! Write order is pack → index → snapshot: nothing refers to an object not yet stored.
//! Every object read from the backend is authenticated (and, for blobs, its keyed hash
//! checked) before it is used. A damaged snapshot object or a stray name is skipped with a
//! warning (one bad object must not stop every command); a damaged index file is not.

mod blob;
pub mod buffers;
pub mod cache;
pub mod filter;
pub mod index;
mod index_cache;
mod keys;
pub mod marker;
mod open;
pub mod pack_reader;
pub mod pack_writer;
pub mod runs;
pub mod walk;

use crate::backends::Backend;
use crate::chunker::Chunker;
use crate::error::{Error, Result};
use crate::format::config::Config;
use crate::format::crypto::{Kind, MasterKey};
use crate::format::layout;
use crate::format::snapshot::Snapshot;
use crate::format::tree::Tree;
use crate::ids::{AnyBlobId, IndexId, KeyId, PackId, SnapshotId, TreeId};
use cache::Cache;
use index::{Index, IndexBuilder, IndexFile, IndexPack, MarkedPack};
use rayon::prelude::*;

/// An opened repository: the backend, the master key, the config and, if enabled, the local
/// cache of index files, snapshots and tree packs.
pub struct Repository {
    backend: Backend,
    key: MasterKey,
    config: Config,
    /// BLAKE3 of the sealed config object (what new key files pin).
    config_hash: [u8; 32],
    key_id: KeyId,
    cache: Option<Cache>,
}

impl Repository {
    /// Use the local cache under `root` (see [`cache`]); `None`, or a cache that cannot be
    /// created, means every read goes to the backend.
    pub fn with_cache(mut self, root: Option<std::path::PathBuf>) -> Repository {
        self.cache = root.and_then(|r| Cache::open(&r, &self.config.id));
        self
    }

    /// The same repository with no cache: every read goes to the backend (`check` checks
    /// what the repository holds, never the cache's copies).
    pub fn uncached(&self) -> Repository {
        Repository {
            backend: self.backend.clone(),
            key: self.key.clone(),
            config: self.config.clone(),
            config_hash: self.config_hash,
            key_id: self.key_id,
            cache: None,
        }
    }

    pub fn cache(&self) -> Option<&Cache> {
        self.cache.as_ref()
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }
    pub fn key(&self) -> &MasterKey {
        &self.key
    }
    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }
    pub fn chunker(&self) -> Chunker {
        Chunker::new(self.config.chunker, self.key.chunker_seed())
    }

    /// The sealed bytes of an object whose name is the BLAKE3 of its bytes, hash-checked:
    /// from the cache when it holds a good copy, else from the backend (then cached).
    fn get_content_addressed(&self, path: &str, id: &[u8; 32]) -> Result<Vec<u8>> {
        if let Some(b) = self.cache.as_ref().and_then(|c| c.get(path, id)) {
            return Ok(b);
        }
        let sealed = self.backend.get(path)?;
        if blake3::hash(&sealed).as_bytes() != id {
            return Err(Error::corrupt(path, "content does not match its name (hash mismatch)"));
        }
        if let Some(c) = &self.cache {
            c.put(path, &sealed);
        }
        Ok(sealed)
    }

    /// Store a content-addressed object (and keep a copy in the cache).
    fn put_content_addressed(&self, path: &str, sealed: Vec<u8>) -> Result<()> {
        if let Some(c) = &self.cache {
            c.put(path, &sealed);
        }
        Ok(self.backend.put(path, sealed)?)
    }

    /// Read and authenticate a sealed object of `kind` whose name is the BLAKE3 of its bytes.
    fn get_verified(&self, kind: Kind, path: &str, id: &[u8; 32]) -> Result<Vec<u8>> {
        let sealed = self.get_content_addressed(path, id)?;
        self.key
            .open_as(kind, &sealed)
            .map_err(|e| Error::corrupt(path, e.to_string()))
    }

    /// Store a sealed object of `kind` under `dir/<BLAKE3 of its bytes>`.
    fn put_sealed(&self, kind: Kind, dir: &str, plain: &[u8]) -> Result<[u8; 32]> {
        let sealed = self.key.seal_as(kind, plain);
        let id = *blake3::hash(&sealed).as_bytes();
        self.put_content_addressed(&format!("{dir}/{}", hex::encode(id)), sealed)?;
        Ok(id)
    }

    // ---- index ----

    /// Read every index file into the compact in-memory table. Files are decoded in parallel
    /// in small batches (two per core), so the decoded form of only a few is alive next to
    /// the table (with 32 at once, a million-blob repository's 22 files were all decoded
    /// together; two per core lowered an unchanged backup's heap peak from 68 to 64 MB).
    ///
    /// With a cache, the table of the last load is kept there ([`index_cache`]) and only the
    /// index files written since are read (another host's backups).
    pub fn load_index(&self) -> Result<Index> {
        // An index file listed but gone when read was replaced by a concurrent prune, which
        // stores the files that replace it before it deletes any: list again.
        let mut attempt = 0;
        let (names, index) = loop {
            let names = self.backend.list(layout::INDEX)?;
            match self.build_index(&names) {
                Err(Error::Backend(b)) if b.is_not_found() && attempt < 3 => attempt += 1,
                Err(e) => return Err(e),
                Ok(index) => break (names, index),
            }
        };
        if let Some(c) = &self.cache {
            let listed: std::collections::HashSet<&str> = names.iter().map(String::as_str).collect();
            c.retain(layout::INDEX, |n| listed.contains(n));
            let packs: std::collections::HashSet<PackId> = index.packs().iter().copied().collect();
            c.retain(layout::DATA, |n| {
                PackId::from_hex(n).is_some_and(|p| packs.contains(&p))
            });
        }
        Ok(index)
    }

    /// The index of the files `names`: the cached merged index where it covers only listed
    /// files, plus the files it does not cover; the merged index is saved again if it grew
    /// by a twentieth.
    fn build_index(&self, names: &[String]) -> Result<Index> {
        let saved = self.cache.as_ref().and_then(|c| {
            let s = index_cache::Saved::open(c.open_file(index_cache::NAME)?, &self.key)?;
            let listed: std::collections::HashSet<&str> = names.iter().map(String::as_str).collect();
            s.files()
                .iter()
                .all(|f| listed.contains(f.to_hex().as_str()))
                .then_some(s)
        });
        let covered: std::collections::HashSet<String> = saved
            .iter()
            .flat_map(|s| s.files().iter().map(|f| f.to_hex()))
            .collect();
        let new: Vec<String> = names.iter().filter(|n| !covered.contains(*n)).cloned().collect();
        let mut builder = IndexBuilder::default();
        // No count of the new files first: the table grows by doubling, but a large
        // vector's growth moves pages (mremap) and touches only what is filled, so resident
        // memory stays at 40 bytes per blob (benches/index_load.rs: a count pass cost a
        // second decoding and saved nothing).
        builder.reserve_exact(saved.as_ref().map_or(0, |s| s.entries()));
        let mut from_saved = 0;
        let new = match saved.map(|s| (s.entries(), s.read(&self.key, &mut builder))) {
            Some((n, Some(()))) => {
                from_saved = n;
                new
            }
            Some((_, None)) => {
                builder = IndexBuilder::default();
                names.to_vec()
            }
            None => new,
        };
        self.for_each_index_file(&new, |name, f| {
            builder.add_file(name, &f);
            Ok(())
        })?;
        let index = builder.finish();
        // Saved again once the files it does not cover hold a twentieth of the blobs: a
        // backup's own few index files are cheaper to read again next time than the whole
        // table is to write.
        let total = index.entry_count();
        if let Some(c) = &self.cache {
            if total > 0 && (total - from_saved.min(total)) * 20 >= total {
                c.write_with(index_cache::NAME, |f| index_cache::write(f, &self.key, &index));
            } else if total == 0 {
                c.remove(index_cache::NAME);
            }
        }
        Ok(index)
    }

    /// Read, verify and decode the index files `names` (as listed), a few at a time (two per
    /// core), handing each to `use_file` in listing order. A name that is not an index id is
    /// skipped with a warning (pbak never wrote it); an index file that cannot be read or
    /// does not authenticate is an error, for every caller: prune deletes what no index file
    /// lists as used, so it must never run on a partial index.
    pub fn for_each_index_file(
        &self,
        names: &[String],
        mut use_file: impl FnMut(&str, IndexFile) -> Result<()>,
    ) -> Result<()> {
        let batch_len = 2 * std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let names: Vec<&String> = names
            .iter()
            .filter(|n| {
                let stray = IndexId::from_hex(n).is_none();
                if stray {
                    let name = layout::in_dir(layout::INDEX, n);
                    eprintln!("pbak: warning: skipping {name}: its name is not an index id");
                }
                !stray
            })
            .collect();
        for batch in names.chunks(batch_len) {
            let files: Vec<Result<IndexFile>> = batch.par_iter().map(|n| self.read_index_file(n)).collect();
            for (name, f) in batch.iter().zip(files) {
                use_file(name, f?)?;
            }
        }
        Ok(())
    }

    /// Hex names of all packs in storage.
    pub fn stored_packs(&self) -> Result<std::collections::HashSet<String>> {
        Ok(self
            .backend
            .list(layout::DATA)?
            .into_iter()
            .map(|n| layout::pack_name_id(&n).to_string())
            .collect())
    }

    /// Read, verify and decode `index/<name>`.
    pub fn read_index_file(&self, name: &str) -> Result<IndexFile> {
        let path = layout::in_dir(layout::INDEX, name);
        let id = IndexId::from_hex(name).ok_or_else(|| Error::corrupt(&path, "name is not an id"))?;
        let sealed = self.get_content_addressed(&path, &id.0)?;
        IndexFile::decode(&self.key, &sealed).map_err(|e| Error::corrupt(&path, e))
    }

    pub fn save_index(&self, file: &IndexFile) -> Result<IndexId> {
        let sealed = file.encode(&self.key);
        let id = IndexId(*blake3::hash(&sealed).as_bytes());
        self.put_content_addressed(&layout::index(&id), sealed)?;
        Ok(id)
    }

    /// Store `packs` and `marked` as new index files (see [`index::index_files`]); the ids written. The
    /// caller deletes the old files, after a barrier, only once this returned.
    pub fn save_index_packs(&self, packs: Vec<IndexPack>, marked: Vec<MarkedPack>) -> Result<Vec<IndexId>> {
        index::index_files(packs, marked)
            .iter()
            .map(|f| self.save_index(f))
            .collect()
    }

    /// Delete the index files `names` (as listed), in parallel; one already gone is no error.
    pub fn delete_index_files(&self, names: &[String]) -> Result<()> {
        names
            .par_iter()
            .try_for_each(|n| match self.backend.delete(&layout::in_dir(layout::INDEX, n)) {
                Err(e) if !e.is_not_found() => Err(e.into()),
                _ => Ok(()),
            })
    }

    // ---- trees ----

    pub fn load_tree(&self, index: &Index, id: &TreeId) -> Result<Tree> {
        let bytes = self.read_blob(index, &id.blob())?;
        Tree::decode(&bytes).map_err(|e| Error::corrupt(format!("tree {id}"), e))
    }

    // ---- snapshots ----

    pub fn save_snapshot(&self, snap: &Snapshot) -> Result<SnapshotId> {
        Ok(SnapshotId(self.put_sealed(
            Kind::Snapshot,
            layout::SNAPSHOTS,
            &snap.encode(),
        )?))
    }

    pub fn load_snapshot(&self, id: &SnapshotId) -> Result<Snapshot> {
        let path = layout::snapshot(id);
        let plain = self.get_verified(Kind::Snapshot, &path, &id.0)?;
        Snapshot::decode(&plain).map_err(|e| Error::corrupt(path, e))
    }

    /// All snapshots, oldest first. Damaged snapshot objects and stray names in `snapshots/`
    /// are skipped, each with a warning on stderr naming it (see [`Repository::scan_snapshots`]).
    pub fn snapshots(&self) -> Result<Vec<(SnapshotId, Snapshot)>> {
        let scan = self.scan_snapshots()?;
        scan.warn();
        Ok(scan.good)
    }

    /// Every listed snapshot object, read and sorted into good ones (oldest first), damaged
    /// ones (the object does not authenticate or decode, also when read a second time) and
    /// stray names. Any other error (the backend failing) is returned: a snapshot is only
    /// ever left out because its own bytes are bad, never because a read failed.
    pub fn scan_snapshots(&self) -> Result<SnapshotScan> {
        enum Read {
            Good(SnapshotId, Box<Snapshot>),
            Damaged(String),
            Stray,
            /// Listed, then removed by a `forget` elsewhere: gone, not damaged (found by
            /// tests/interleave.rs, seed 12, in CI).
            Gone,
        }
        let names = self.backend.list(layout::SNAPSHOTS)?;
        if let Some(c) = &self.cache {
            let listed: std::collections::HashSet<&str> = names.iter().map(String::as_str).collect();
            c.retain(layout::SNAPSHOTS, |n| listed.contains(n));
        }
        let mut scan = SnapshotScan::default();
        let read = names
            .par_iter()
            .map(|n| {
                let Some(id) = SnapshotId::from_hex(n) else {
                    return Ok((n, Read::Stray));
                };
                match self.load_snapshot(&id).or_else(|_| self.load_snapshot(&id)) {
                    Ok(s) => Ok((n, Read::Good(id, Box::new(s)))),
                    Err(Error::Corrupt { reason, .. }) => Ok((n, Read::Damaged(reason))),
                    Err(Error::Backend(b)) if b.is_not_found() => Ok((n, Read::Gone)),
                    Err(e) => Err(e),
                }
            })
            .collect::<Result<Vec<_>>>()?;
        for (n, r) in read {
            let name = layout::in_dir(layout::SNAPSHOTS, n);
            match r {
                Read::Stray => scan.stray.push(name),
                Read::Good(id, s) => scan.good.push((id, *s)),
                Read::Damaged(reason) => scan.damaged.push((name, reason)),
                Read::Gone => {}
            }
        }
        scan.good.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok(scan)
    }

    /// Resolve `latest` or a unique hex prefix.
    pub fn find_snapshot(&self, spec: &str) -> Result<(SnapshotId, Snapshot)> {
        find_in(&self.snapshots()?, spec).cloned()
    }

    /// Resolve `latest` among the snapshots `latest` selects, or a unique hex prefix among
    /// all of them (an id names one snapshot whatever the filter).
    pub fn find_snapshot_of(&self, spec: &str, latest: &filter::SnapshotFilter) -> Result<(SnapshotId, Snapshot)> {
        match spec {
            "latest" => find_in(&latest.apply(self.snapshots()?), spec).cloned(),
            _ => self.find_snapshot(spec),
        }
    }
}

/// Resolve `latest` or a unique hex prefix among `all` (oldest first), for callers that
/// resolve several specs against one listing.
pub fn find_in<'a>(all: &'a [(SnapshotId, Snapshot)], spec: &str) -> Result<&'a (SnapshotId, Snapshot)> {
    if spec == "latest" {
        return all.last().ok_or_else(|| Error::SnapshotNotFound(spec.into()));
    }
    let spec_l = spec.to_ascii_lowercase();
    let mut m = all
        .iter()
        .filter(|(id, _)| !spec_l.is_empty() && id.to_hex().starts_with(&spec_l));
    match (m.next(), m.count()) {
        (None, _) => Err(Error::SnapshotNotFound(spec.into())),
        (Some(one), 0) => Ok(one),
        (Some(_), more) => Err(Error::SnapshotAmbiguous(spec.into(), more + 1)),
    }
}

/// What [`Repository::scan_snapshots`] found; names are object paths (`snapshots/…`).
#[derive(Debug, Default)]
pub struct SnapshotScan {
    /// Oldest first.
    pub good: Vec<(SnapshotId, Snapshot)>,
    /// Objects named by a snapshot id whose bytes do not authenticate or decode, and why.
    pub damaged: Vec<(String, String)>,
    /// Names that are not a snapshot id (a `README`): not written by pbak.
    pub stray: Vec<String>,
}

impl SnapshotScan {
    /// One warning line on stderr for each stray name and damaged object.
    pub fn warn(&self) {
        for name in &self.stray {
            eprintln!("pbak: warning: skipping {name}: its name is not a snapshot id");
        }
        for (name, reason) in &self.damaged {
            let id = name.rsplit('/').next().unwrap_or(name);
            eprintln!(
                "pbak: warning: skipping corrupt snapshot object {name}: {reason}; \
                 `pbak check` reports it, `pbak forget {id}` removes it"
            );
        }
    }
}
