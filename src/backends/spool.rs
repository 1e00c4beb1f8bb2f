//! A pack being written: an object whose name (the hash of its bytes) is known only once it is
//! complete. On a local repository its bytes go straight to a temporary file in `<repo>/.tmp`
//! that [`super::Backend::put_spool`] renames into place, so no pack is ever held in memory
//! whatever the pack size; remote stores keep the parts in memory for one PUT.
//!
//! Contract: a spool is invisible to readers until `put_spool` returns; one dropped without
//! being stored removes its temporary file (a crash can still leave one in `.tmp/`, which is
//! not part of the format).

use super::BackendError;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

/// Buffered bytes per local spool before a write(2): blobs average a few KiB on source trees.
const FILE_BUFFER: usize = 256 << 10;

pub struct Spool {
    pub(super) body: Body,
    len: u64,
}

pub(super) enum Body {
    Memory(Vec<Vec<u8>>),
    /// `path` is `None` once the file has been renamed into the repository.
    File {
        out: BufWriter<File>,
        path: Option<PathBuf>,
    },
}

impl Spool {
    /// A spool in memory (remote stores, dry runs, tests).
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

    /// Append `part`; a local spool writes it out and frees it.
    pub fn push(&mut self, part: Vec<u8>) -> Result<(), BackendError> {
        self.len += part.len() as u64;
        match &mut self.body {
            Body::Memory(parts) => parts.push(part),
            Body::File { out, path } => out.write_all(&part).map_err(|e| failed("write", path, e))?,
        }
        Ok(())
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
        match &mut self.body {
            Body::Memory(parts) => Ok(std::mem::take(parts).concat()),
            Body::File { out, path } => {
                let mut v = Vec::with_capacity(self.len as usize);
                out.flush()
                    .and_then(|()| out.get_mut().seek(SeekFrom::Start(0)))
                    .and_then(|_| out.get_mut().read_to_end(&mut v))
                    .map_err(|e| failed("read back", path, e))?;
                Ok(v)
            }
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
