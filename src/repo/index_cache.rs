//! The merged index, kept in the local cache (`<cache>/<repo id>/index.merged`): the loaded
//! table of every index file it names, so that the next load reads only the index files
//! written since (another host's backups) and not every file again.
//!
//! What must hold:
//! - It is trusted only for the files it names, and only while every one of them is still
//!   listed: an index file gone (prune rewrote the index) means blobs may have left, and the
//!   index is loaded again from the files.
//! - It is sealed like every object the cache keeps ([`Kind::IndexCache`]), in segments of at
//!   most [`SEGMENT_ENTRIES`] entries, so neither writing nor reading holds a second copy of
//!   the table: memory stays at the table's own 40 bytes per blob. Each segment carries the
//!   file's random id and its number; a segment from another file, a missing or reordered
//!   one, or trailing bytes make the whole file unusable.
//! - A failure to read or write it is never an error: the index files are read instead.

use super::index::{Entry, Index, IndexBuilder, Mark};
use crate::format::crypto::{Kind, MasterKey};
use crate::ids::{IndexId, PackId};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};

pub const NAME: &str = "index.merged";
const VERSION: u32 = 1;
/// Entries per sealed segment (640 KiB of plaintext).
pub const SEGMENT_ENTRIES: usize = 16 * 1024;
/// Largest sealed segment a reader accepts (the header, with its pack list, may be larger
/// than an entry segment).
const MAX_SEGMENT: u32 = 256 << 20;

#[derive(Serialize, Deserialize)]
struct Header {
    version: u32,
    file: [u8; 16],
    /// Entry segments that follow.
    segments: u32,
    /// Entries in all segments.
    entries: u64,
    /// The index files it was built from.
    files: Vec<IndexId>,
    packs: Vec<PackId>,
    live: Vec<bool>,
    marks: Vec<(u32, i64, i64, String)>,
}

/// A merged index read from the cache, header only: [`Saved::read`] reads the entries.
pub struct Saved {
    header: Header,
    reader: BufReader<File>,
}

/// The next sealed segment, still sealed.
fn next_sealed(r: &mut impl Read) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).ok()?;
    let len = u32::from_le_bytes(len);
    if len > MAX_SEGMENT {
        return None;
    }
    let mut sealed = vec![0u8; len as usize];
    r.read_exact(&mut sealed).ok()?;
    Some(sealed)
}

fn read_segment(r: &mut impl Read, key: &MasterKey) -> Option<Vec<u8>> {
    key.open_as(Kind::IndexCache, &next_sealed(r)?).ok()
}

fn write_segment(w: &mut impl Write, key: &MasterKey, plain: &[u8]) -> std::io::Result<()> {
    let sealed = key.seal_as(Kind::IndexCache, plain);
    w.write_all(&(sealed.len() as u32).to_le_bytes())?;
    w.write_all(&sealed)
}

impl Saved {
    /// Open the merged index in `file` and read its header.
    pub fn open(file: File, key: &MasterKey) -> Option<Saved> {
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let plain = read_segment(&mut reader, key)?;
        let header: Header = postcard::from_bytes(&plain).ok()?;
        let consistent = header.version == VERSION
            && header.live.len() == header.packs.len()
            && header.entries.div_ceil(SEGMENT_ENTRIES as u64) == header.segments as u64
            && header.marks.iter().all(|m| (m.0 as usize) < header.packs.len());
        consistent.then_some(Saved { header, reader })
    }

    /// The index files it covers.
    pub fn files(&self) -> &[IndexId] {
        &self.header.files
    }

    /// Entries it holds (blobs, counting each copy).
    pub fn entries(&self) -> usize {
        self.header.entries as usize
    }

    /// Read every entry into `builder` (empty, with room reserved by the caller). `None`
    /// if any segment is damaged: the builder is then to be thrown away.
    pub fn read(mut self, key: &MasterKey, builder: &mut IndexBuilder) -> Option<()> {
        let h = self.header;
        let names = h.files.iter().map(|f| f.to_hex()).collect();
        let marks = h.marks.into_iter().map(|(p, marked_at, delete_after, host)| {
            let m = Mark {
                marked_at,
                delete_after,
                host,
            };
            (p, m)
        });
        builder.start_from(names, h.packs, h.live, marks.collect());
        // Segments are opened in parallel, a few per core at a time (memory stays a few
        // segments above the table).
        let batch = 4 * rayon::current_num_threads().max(1);
        let mut left = h.entries as usize;
        let mut seq = 0u32;
        while seq < h.segments {
            let n = batch.min((h.segments - seq) as usize);
            let sealed: Vec<Vec<u8>> = (0..n).map(|_| next_sealed(&mut self.reader)).collect::<Option<_>>()?;
            let plains: Vec<Vec<u8>> = sealed
                .par_iter()
                .map(|s| key.open_as(Kind::IndexCache, s).ok())
                .collect::<Option<_>>()?;
            for plain in plains {
                let (head, body) = plain.split_at_checked(20)?;
                let n = left.min(SEGMENT_ENTRIES);
                let whole = head[..16] == h.file && head[16..] == seq.to_le_bytes() && body.len() == n * Entry::BYTES;
                if !whole {
                    return None;
                }
                builder.push_entries(body.chunks_exact(Entry::BYTES).map(Entry::read_from))?;
                left -= n;
                seq += 1;
            }
        }
        let mut rest = [0u8; 1];
        matches!(self.reader.read(&mut rest), Ok(0)).then_some(())
    }
}

/// Write `index` as the merged index to `out` (a temporary file the cache renames).
pub fn write(out: &mut File, key: &MasterKey, index: &Index) -> std::io::Result<()> {
    let mut file = [0u8; 16];
    crate::format::crypto::random(&mut file);
    let count = index.entry_count();
    let entries = index.all_entries();
    let marks = index
        .marks()
        .map(|(p, m)| (p, m.marked_at, m.delete_after, m.host.clone()))
        .collect();
    let header = Header {
        version: VERSION,
        file,
        segments: count.div_ceil(SEGMENT_ENTRIES) as u32,
        entries: count as u64,
        files: index.files().iter().filter_map(|n| IndexId::from_hex(n)).collect(),
        packs: index.packs().to_vec(),
        live: index.live().to_vec(),
        marks,
    };
    let mut w = BufWriter::with_capacity(1 << 20, out);
    write_segment(&mut w, key, &postcard::to_stdvec(&header).expect("header serializes"))?;
    // Segments are sealed in parallel, a few per core at a time.
    let batch = 4 * rayon::current_num_threads().max(1);
    let mut it = entries.peekable();
    let mut seq = 0u32;
    while it.peek().is_some() {
        let mut plains = Vec::with_capacity(batch);
        while plains.len() < batch && it.peek().is_some() {
            let mut plain = Vec::with_capacity(20 + SEGMENT_ENTRIES * Entry::BYTES);
            plain.extend_from_slice(&file);
            plain.extend_from_slice(&seq.to_le_bytes());
            for e in it.by_ref().take(SEGMENT_ENTRIES) {
                e.write_to(&mut plain);
            }
            plains.push(plain);
            seq += 1;
        }
        let sealed: Vec<Vec<u8>> = plains.par_iter().map(|p| key.seal_as(Kind::IndexCache, p)).collect();
        for s in sealed {
            w.write_all(&(s.len() as u32).to_le_bytes())?;
            w.write_all(&s)?;
        }
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use crate::backends::{Backend, Location};
    use crate::format::config::Config;
    use crate::format::keyfile::KdfParams;
    use crate::format::pack::{BlobEntry, BlobKind};
    use crate::ids::{BlobId, PackId};
    use crate::repo::index::{Index, IndexFile, IndexPack, MarkedPack};
    use crate::repo::Repository;

    fn repo(dir: &std::path::Path) -> Repository {
        let loc = Location::parse(dir.join("repo").to_str().unwrap()).unwrap();
        let kdf = KdfParams {
            m_cost_kib: 64,
            t_cost: 1,
            p_cost: 1,
        };
        Repository::init(Backend::open(&loc, true).unwrap(), b"pw", kdf, Config::new()).unwrap()
    }

    fn file(seed: u8, blobs: u32) -> IndexFile {
        let entry = |i: u32| BlobEntry {
            id: BlobId(*blake3::hash(&[seed, i as u8, (i >> 8) as u8]).as_bytes()),
            kind: if i.is_multiple_of(3) {
                BlobKind::Tree
            } else {
                BlobKind::Data
            },
            offset: i * 100,
            length: 100,
            raw_length: i,
            compressed: i.is_multiple_of(2),
        };
        IndexFile {
            packs: vec![IndexPack {
                id: PackId([seed; 32]),
                blobs: (0..blobs).map(entry).collect(),
            }],
            marked: vec![MarkedPack {
                id: PackId([seed ^ 0x80; 32]),
                marked_at: 1,
                delete_after: 2,
                host: format!("h{seed}"),
                // A blob of the live pack too: the live copy wins, the other is kept aside.
                blobs: vec![entry(0)],
            }],
        }
    }

    /// Everything a reader can ask of an index, as comparable values.
    fn answers(i: &Index) -> Vec<String> {
        let mut out: Vec<String> = i
            .all_entries()
            .map(|e| {
                let mut key = Vec::new();
                e.write_to(&mut key);
                let l = e.location();
                let pack = i.pack_id(&l);
                let l = (l.offset, l.length, l.raw_length, l.kind, l.compressed);
                format!("{:?} {pack:?} {l:?}", &key[..24])
            })
            .collect();
        // Which copy is served (the others are where a reader falls back to).
        out.extend(
            i.locations()
                .map(|l| format!("served {:?} {}", i.pack_id(&l), l.offset)),
        );
        out.extend(
            i.marks()
                .map(|(p, m)| format!("mark {:?} {m:?}", i.packs()[p as usize])),
        );
        out.push(format!("others {}", i.entry_count() - i.blob_count()));
        out.sort();
        out
    }

    fn merged(dir: &std::path::Path, repo: &Repository) -> std::path::PathBuf {
        dir.join("cache").join(repo.config().id.to_hex()).join(super::NAME)
    }

    #[test]
    fn the_merged_index_answers_as_the_files_do_and_only_new_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let writer = repo(dir.path());
        let cached = writer.uncached().with_cache(Some(dir.path().join("cache")));
        let a = writer.save_index(&file(1, 40_000)).unwrap();
        cached.load_index().unwrap();
        assert!(
            merged(dir.path(), &writer).exists(),
            "the first load saves the merged index"
        );
        let b = writer.save_index(&file(2, 300)).unwrap();
        // The merged index now covers `a`: damaging `a` in the repository and the cache does
        // not matter, since only `b` is read.
        let a_path = |root: &std::path::Path| root.join("index").join(a.to_hex());
        let a_bytes = std::fs::read(a_path(&dir.path().join("repo"))).unwrap();
        std::fs::write(a_path(&dir.path().join("repo")), b"gone").unwrap();
        std::fs::write(
            a_path(&dir.path().join("cache").join(writer.config().id.to_hex())),
            b"x",
        )
        .unwrap();
        let warm = cached.load_index().unwrap();
        assert_eq!(warm.files().len(), 2);
        assert!(warm.files().contains(&b.to_hex()));
        // Rebuild the truth from the files alone (put `a` back first).
        std::fs::write(a_path(&dir.path().join("repo")), a_bytes).unwrap();
        let truth = writer.load_index().unwrap();
        assert_eq!(answers(&warm), answers(&truth));
        assert!(
            warm.other_locations(&BlobId(*blake3::hash(&[1, 0, 0]).as_bytes()))
                .len()
                == 1
        );
        // 300 new blobs of 40,300 did not rewrite it; 5,000 more do: then `b` is covered too.
        let before = std::fs::read(merged(dir.path(), &writer)).unwrap();
        cached.load_index().unwrap();
        assert_eq!(std::fs::read(merged(dir.path(), &writer)).unwrap(), before);
        writer.save_index(&file(3, 5_000)).unwrap();
        cached.load_index().unwrap();
        assert_ne!(std::fs::read(merged(dir.path(), &writer)).unwrap(), before);
        let b_path = dir.path().join("repo/index").join(b.to_hex());
        let b_bytes = std::fs::read(&b_path).unwrap();
        std::fs::write(&b_path, b"gone").unwrap();
        std::fs::remove_file(
            dir.path()
                .join("cache")
                .join(writer.config().id.to_hex())
                .join("index")
                .join(b.to_hex()),
        )
        .unwrap();
        assert_eq!(cached.load_index().unwrap().files().len(), 3);
        std::fs::write(&b_path, b_bytes).unwrap();
    }

    #[test]
    fn a_file_gone_or_a_damaged_merged_index_means_reading_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let writer = repo(dir.path());
        let cached = writer.uncached().with_cache(Some(dir.path().join("cache")));
        let a = writer.save_index(&file(1, 20_000)).unwrap();
        writer.save_index(&file(2, 500)).unwrap();
        cached.load_index().unwrap();
        // A prune replaced `a`: its blobs must not be served from the merged index.
        std::fs::remove_file(dir.path().join("repo/index").join(a.to_hex())).unwrap();
        let after = cached.load_index().unwrap();
        assert_eq!(answers(&after), answers(&writer.load_index().unwrap()));
        assert_eq!(after.blob_count(), 500);
        // Damage each part of the merged file in turn: the load still answers right.
        let path = merged(dir.path(), &writer);
        let good = std::fs::read(&path).unwrap();
        for at in [2, 100, good.len() / 2, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 1;
            std::fs::write(&path, &bad).unwrap();
            assert_eq!(
                answers(&cached.load_index().unwrap()),
                answers(&after),
                "byte {at} flipped"
            );
        }
        let mut longer = good.clone();
        longer.push(0);
        std::fs::write(&path, &longer).unwrap();
        assert_eq!(answers(&cached.load_index().unwrap()), answers(&after));
        std::fs::write(&path, &good[..good.len() - 30]).unwrap();
        assert_eq!(answers(&cached.load_index().unwrap()), answers(&after));
    }
}
