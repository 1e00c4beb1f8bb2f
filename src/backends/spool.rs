//! A pack being written: an object whose name (the hash of its bytes) is known only once it is
//! complete. No pack is ever held in memory, whatever the pack size:
//! - On a local repository its bytes go straight to a temporary file in `<repo>/.tmp` that
//!   [`super::Backend::put_spool`] renames into place.
//! - For a remote store they go to an unnamed temporary file (`O_TMPFILE`, else a file
//!   unlinked as soon as it is open) in the repository's cache directory, else in
//!   `std::env::temp_dir()`. `put_spool` maps it read-only and sends it as one PUT; the
//!   pages already sent are dropped from the map as the upload goes ([`Upload::release`]), so
//!   an upload keeps only a few MiB resident, and a retried PUT reads the file again from its
//!   start.
//! - In memory only where nothing is stored (dry runs) and in tests.
//!
//! Contract: a spool is invisible to readers until `put_spool` returns; one dropped without
//! being stored removes its temporary file (a crash can still leave one in `.tmp/`, which is
//! not part of the format; a remote spool's file has no name, so the kernel frees it).

use super::BackendError;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Buffered bytes per file spool before a write(2): blobs average a few KiB on source trees.
const FILE_BUFFER: usize = 256 << 10;

/// An upload's body is handed to the HTTP client in parts this large: the client copies at
/// most about one part ahead of the socket, whatever the pack size.
const UPLOAD_PART: usize = 1 << 20;

pub struct Spool {
    pub(super) body: Body,
    len: u64,
}

pub(super) enum Body {
    Memory(Vec<Vec<u8>>),
    /// A local spool. `path` is `None` once the file has been renamed into the repository.
    File {
        out: BufWriter<File>,
        path: Option<PathBuf>,
    },
    /// A remote spool: a file without a name in `dir`.
    Unnamed {
        out: BufWriter<File>,
        dir: PathBuf,
    },
}

impl Spool {
    /// A spool in memory (dry runs, tests).
    pub fn memory() -> Spool {
        Spool {
            body: Body::Memory(Vec::new()),
            len: 0,
        }
    }

    pub(super) fn file(path: PathBuf) -> std::io::Result<Spool> {
        let f = super::local::create_file(&path)?;
        Ok(Spool {
            body: Body::File {
                out: BufWriter::with_capacity(FILE_BUFFER, f),
                path: Some(path),
            },
            len: 0,
        })
    }

    /// A remote spool: a new file without a name in `dir`.
    pub(super) fn unnamed(dir: &Path) -> Result<Spool, BackendError> {
        let f = unnamed_file(dir).map_err(|e| failed("create a temporary file in", &Some(dir.into()), e))?;
        Ok(Spool {
            body: Body::Unnamed {
                out: BufWriter::with_capacity(FILE_BUFFER, f),
                dir: dir.to_path_buf(),
            },
            len: 0,
        })
    }

    /// Append `part`; a file spool writes it out and hands it back for reuse (a memory
    /// spool keeps it).
    pub fn push(&mut self, part: Vec<u8>) -> Result<Option<Vec<u8>>, BackendError> {
        self.len += part.len() as u64;
        match &mut self.body {
            Body::Memory(parts) => {
                parts.push(part);
                return Ok(None);
            }
            Body::File { out, path } => out.write_all(&part).map_err(|e| failed("write", path, e))?,
            Body::Unnamed { out, dir } => out
                .write_all(&part)
                .map_err(|e| failed("write a temporary file in", &Some(dir.clone()), e))?,
        }
        Ok(Some(part))
    }

    /// Bytes pushed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Everything pushed, as one buffer (merging two small packs, tests).
    pub fn into_bytes(mut self) -> Result<Vec<u8>, BackendError> {
        let (out, path) = match &mut self.body {
            Body::Memory(parts) => return Ok(std::mem::take(parts).concat()),
            Body::File { out, path } => (out, path.clone()),
            Body::Unnamed { out, dir } => (out, Some(dir.clone())),
        };
        let mut v = Vec::with_capacity(self.len as usize);
        out.flush()
            .and_then(|()| out.get_mut().seek(SeekFrom::Start(0)))
            .and_then(|_| out.get_mut().read_to_end(&mut v))
            .map_err(|e| failed("read back", &path, e))?;
        Ok(v)
    }

    /// A complete remote spool, mapped for its upload.
    pub(super) fn upload(&mut self) -> Result<Upload, BackendError> {
        let Body::Unnamed { out, dir } = &mut self.body else {
            unreachable!("only remote spools are uploaded from a file")
        };
        let dir = Some(dir.clone());
        out.flush().map_err(|e| failed("write a temporary file in", &dir, e))?;
        if self.len == 0 {
            return Ok(Upload(None));
        }
        map(out.get_ref())
            .map(|m| Upload(Some(Arc::new(m))))
            .map_err(|e| failed("map a temporary file in", &dir, e))
    }
}

/// A new file without a name in `dir`, mode 0600, open for reading and writing: `O_TMPFILE`
/// where the filesystem has it, else a file unlinked as soon as it is open.
fn unnamed_file(dir: &Path) -> std::io::Result<File> {
    let tmpfile = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(super::local::FILE_MODE)
        .custom_flags(libc::O_TMPFILE)
        .open(dir);
    match tmpfile {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)) => {
            let path = dir.join(format!(".pbak-spool-{}", super::local::random_hex()));
            let f = super::local::create_file(&path)?;
            std::fs::remove_file(&path)?;
            Ok(f)
        }
        r => r,
    }
}

#[allow(unsafe_code)]
fn map(file: &File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: the file has no name and only this spool holds it open, and the spool writes
    // nothing more once it is mapped: the bytes cannot change or be truncated while the map
    // lives. The map is never written.
    unsafe { memmap2::Mmap::map(file) }
}

/// A remote spool's bytes, mapped read-only, for one PUT (and its retries).
pub(super) struct Upload(Option<Arc<memmap2::Mmap>>);

/// One owner of the map per upload body; the map is unmapped when the last part is dropped.
struct Shared(Arc<memmap2::Mmap>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Upload {
    /// The PUT's body: the mapped bytes in [`UPLOAD_PART`]-sized parts, no copy. Every retry
    /// sends it again from its first part.
    pub fn body(&self) -> opendal::Buffer {
        let Some(map) = &self.0 else {
            return opendal::Buffer::new();
        };
        let all = bytes::Bytes::from_owner(Shared(map.clone()));
        let parts: Vec<bytes::Bytes> = (0..all.len())
            .step_by(UPLOAD_PART)
            .map(|at| all.slice(at..all.len().min(at + UPLOAD_PART)))
            .collect();
        parts.into_iter().collect()
    }

    /// Drop the map's resident pages (those the upload has read). Nothing is lost: the map
    /// is of an unchanging file, so a page read again (the part being sent, a retry) is
    /// faulted back in from the page cache or the disk.
    #[allow(unsafe_code)]
    pub fn release(&self) {
        if let Some(map) = &self.0 {
            // SAFETY: MADV_DONTNEED on a shared, read-only file mapping only unmaps pages;
            // later reads see the file's bytes, which do not change (see `map`).
            let _ = unsafe { map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
        }
    }
}

fn failed(op: &'static str, path: &Option<PathBuf>, source: std::io::Error) -> BackendError {
    BackendError::Local {
        op,
        path: path.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        source,
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if let Body::File { path: Some(p), .. } = &self.body {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Backend, Location};

    #[test]
    fn local_spool_is_renamed_into_place_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let b = Backend::open(&Location::parse(dir.path().to_str().unwrap()).unwrap(), true).unwrap();
        let tmp = dir.path().join(".tmp");
        let mut s = b.spool().unwrap();
        s.push(b"hello ".to_vec()).unwrap();
        s.push(vec![7u8; 300_000]).unwrap();
        assert_eq!(s.len(), 300_006);
        assert_eq!(
            std::fs::read_dir(&tmp).unwrap().count(),
            1,
            "the pack is spooled to a file"
        );
        b.put_spool("data/ab/abcd", s).unwrap();
        let stored = b.get("data/ab/abcd").unwrap();
        assert_eq!(&stored[..6], b"hello ");
        assert_eq!(stored.len(), 300_006);
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
        assert_eq!(b.counts().class_a, 1);

        let mut dropped = b.spool().unwrap();
        dropped.push(vec![1; 10]).unwrap();
        assert_eq!(dropped.into_bytes().unwrap(), vec![1; 10]);
        assert_eq!(
            std::fs::read_dir(&tmp).unwrap().count(),
            0,
            "an unstored spool leaves nothing"
        );
    }
}

#[cfg(test)]
mod remote_tests {
    use super::Spool;

    fn pattern(n: u32) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn remote_spool_has_no_name_and_is_uploaded_from_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let data = pattern(2_500_000);
        let mut s = Spool::unnamed(dir.path()).unwrap();
        s.push(data[..10].to_vec()).unwrap();
        s.push(data[10..].to_vec()).unwrap();
        assert_eq!(s.len(), data.len() as u64);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "the file has no name"
        );
        let up = s.upload().unwrap();
        drop(s);
        let body = up.body();
        assert_eq!(body.clone().count(), 3, "parts of at most 1 MiB");
        assert_eq!(body.to_vec(), data);
        up.release();
        assert_eq!(body.to_vec(), data, "released pages are read again from the file");
        assert_eq!(up.body().to_vec(), data, "a retry sends it all again");
    }

    #[test]
    fn remote_spool_reads_back_and_an_empty_one_uploads_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::unnamed(dir.path()).unwrap();
        s.push(vec![3; 1000]).unwrap();
        assert_eq!(s.into_bytes().unwrap(), vec![3; 1000]);
        let mut empty = Spool::unnamed(dir.path()).unwrap();
        assert!(empty.upload().unwrap().body().is_empty());
        assert!(Spool::unnamed(&dir.path().join("missing")).is_err());
    }
}
