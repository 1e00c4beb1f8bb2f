//! `dump`: a file of a snapshot to a writer, or a directory as a tar stream that GNU tar
//! extracts to the tree `restore` would write: names relative to the snapshot root (GNU long
//! names where they do not fit), PAX records for nanosecond mtimes and xattrs
//! (`SCHILY.xattr.*`, ACLs among them as `system.posix_acl_*`), hard links as links to the first
//! path, sparse files in the PAX sparse format 1.0 (only their data regions are in the stream;
//! GNU tar makes the holes again). `dump` of one file gives its bytes, holes as zeros.

use crate::error::{Error, Result};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind};
use crate::ids::AnyBlobId;
use crate::ops::restore::contents::chunk_offsets;
use crate::repo::index::Index;
use crate::repo::Repository;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What was written, and what a tar stream cannot hold.
#[derive(Debug, Default)]
pub struct DumpSummary {
    pub entries: u64,
    pub bytes: u64,
    /// Sockets and xattrs with non-UTF-8 names, left out (one line each).
    pub skipped: Vec<String>,
}

/// The contents of a file node as a reader: exactly `size` bytes, chunks fetched one at a
/// time as they are read, holes as zeros.
struct Contents<'a> {
    repo: &'a Repository,
    index: &'a Index,
    chunks: std::vec::IntoIter<(crate::ids::DataId, u64)>,
    next: Option<(crate::ids::DataId, u64)>,
    size: u64,
    at: u64,
    buf: Vec<u8>,
    pos: usize,
}

impl<'a> Contents<'a> {
    fn new(repo: &'a Repository, index: &'a Index, n: &Node) -> Result<Contents<'a>> {
        let mut chunks = chunk_offsets(index, n)?.into_iter();
        let next = chunks.next();
        Ok(Contents {
            repo,
            index,
            chunks,
            next,
            size: n.size,
            at: 0,
            buf: Vec::new(),
            pos: 0,
        })
    }
}

impl std::io::Read for Contents<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if self.pos < self.buf.len() {
                let n = out.len().min(self.buf.len() - self.pos);
                out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
                self.pos += n;
                self.at += n as u64;
                return Ok(n);
            }
            if self.at >= self.size || out.is_empty() {
                return Ok(0);
            }
            // Zeros up to the next chunk (or the end), else the next chunk itself.
            let until = self.next.map_or(self.size, |(_, off)| off.min(self.size));
            if self.at < until {
                let n = out.len().min((until - self.at) as usize);
                out[..n].fill(0);
                self.at += n as u64;
                return Ok(n);
            }
            let Some((id, _)) = self.next.take() else { return Ok(0) };
            self.next = self.chunks.next();
            let mut data = self
                .repo
                .read_blob(self.index, &id.blob())
                .map_err(std::io::Error::other)?;
            data.truncate(self.size.saturating_sub(self.at) as usize);
            (self.buf, self.pos) = (data, 0);
        }
    }
}

impl Contents<'_> {
    /// Move to `pos` without producing the bytes before it (zeros or chunk data).
    fn skip_to(&mut self, pos: u64) -> std::io::Result<()> {
        let mut scratch = [0u8; 64 << 10];
        while self.at < pos {
            let drained = self.pos >= self.buf.len();
            if drained && self.next.is_none_or(|(_, off)| off >= pos) {
                self.at = pos; // a hole up to `pos`: nothing to fetch
                return Ok(());
            }
            let n = ((pos - self.at) as usize).min(scratch.len());
            if std::io::Read::read(self, &mut scratch[..n])? == 0 {
                return Ok(());
            }
        }
        Ok(())
    }
}

/// The data regions of a sparse file, one after the other (the body of a PAX sparse 1.0
/// entry after its map).
struct Regions<'a> {
    inner: Contents<'a>,
    regions: Vec<(u64, u64)>,
    i: usize,
}

impl std::io::Read for Regions<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while let Some(&(off, len)) = self.regions.get(self.i) {
            let end = (off + len).min(self.inner.size);
            if self.inner.at >= end {
                self.i += 1;
                continue;
            }
            if self.inner.at < off {
                self.inner.skip_to(off)?;
                continue;
            }
            let n = out.len().min((end - self.inner.at) as usize);
            return self.inner.read(&mut out[..n]);
        }
        Ok(0)
    }
}

/// The sparse map of PAX format 1.0: the region count, then each offset and length, one
/// decimal number per line, padded with NULs to a 512-byte block.
fn sparse_map(regions: &[(u64, u64)]) -> Vec<u8> {
    let mut m = format!("{}\n", regions.len());
    for (off, len) in regions {
        m.push_str(&format!("{off}\n{len}\n"));
    }
    let mut m = m.into_bytes();
    m.resize(m.len().div_ceil(512) * 512, 0);
    m
}

/// The file at `subpath` of `snap`, to `out`; an error if it is not a regular file.
pub fn dump_file(repo: &Repository, index: &Index, snap: &Snapshot, subpath: &str, out: &mut dyn Write) -> Result<u64> {
    let (_, node) = repo.resolve_path(index, &snap.tree, subpath)?;
    match node {
        Some(n) if n.kind == NodeKind::File => {
            let mut r = Contents::new(repo, index, &n)?;
            std::io::copy(&mut r, out).map_err(|e| Error::Usage(format!("writing the dump: {e}")))
        }
        _ => Err(Error::Usage(format!("{subpath} is not a file in this snapshot"))),
    }
}

fn header(n: &Node, mut h: tar::Header) -> tar::Header {
    h.set_mode(n.mode & 0o7777);
    h.set_uid(n.uid as u64);
    h.set_gid(n.gid as u64);
    let _ = h.set_username(&n.user);
    let _ = h.set_groupname(&n.group);
    h.set_mtime(n.mtime.sec.max(0) as u64);
    h.set_size(0);
    h
}

/// The directory at `subpath` (the whole snapshot when empty) as a tar stream to `out`.
pub fn dump_tar(
    repo: &Repository,
    index: &Index,
    snap: &Snapshot,
    subpath: &str,
    out: &mut (dyn Write + Send),
) -> Result<DumpSummary> {
    let (tree, node) = repo.resolve_path(index, &snap.tree, subpath)?;
    if node.as_ref().is_some_and(|n| !n.is_dir()) {
        return Err(Error::Usage(format!(
            "{subpath} is not a directory: dump a file without --tar"
        )));
    }
    let base = PathBuf::from(subpath.trim_matches('/'));
    let state = Mutex::new((tar::Builder::new(out), DumpSummary::default(), HashMap::new()));
    let io = |e: std::io::Error| Error::Usage(format!("writing the dump: {e}"));
    let entry = |path: &Path, n: &Node| -> Result<()> {
        let mut guard = state.lock().expect("lock");
        let (ar, sum, links) = &mut *guard;
        let mut pax: Vec<(String, Vec<u8>)> = vec![(
            "mtime".into(),
            format!("{}.{:09}", n.mtime.sec, n.mtime.nsec).into_bytes(),
        )];
        for (k, v) in &n.xattrs {
            match std::str::from_utf8(k) {
                Ok(k) => pax.push((format!("SCHILY.xattr.{k}"), v.clone())),
                Err(_) => sum
                    .skipped
                    .push(format!("{}: an xattr whose name is not UTF-8", path.display())),
            }
        }
        let mut h = header(n, tar::Header::new_gnu());
        let kind = match n.kind {
            NodeKind::Dir => tar::EntryType::Directory,
            NodeKind::Symlink => tar::EntryType::Symlink,
            NodeKind::Fifo => tar::EntryType::Fifo,
            NodeKind::CharDev => tar::EntryType::Char,
            NodeKind::BlockDev => tar::EntryType::Block,
            NodeKind::File => tar::EntryType::Regular,
            NodeKind::Socket => {
                sum.skipped
                    .push(format!("{}: a socket (tar cannot hold one)", path.display()));
                return Ok(());
            }
        };
        h.set_entry_type(kind);
        if matches!(n.kind, NodeKind::CharDev | NodeKind::BlockDev) {
            let _ = h.set_device_major(libc::major(n.rdev as libc::dev_t));
            let _ = h.set_device_minor(libc::minor(n.rdev as libc::dev_t));
        }
        let hard = n.kind == NodeKind::File && n.nlink > 1;
        let first = hard.then(|| links.get(&(n.device, n.inode)).cloned()).flatten();
        // GNU tar's sparse 1.0: the real name and size in PAX records, the map and the data
        // regions as the entry's data, under a name that other tars show as such.
        let regions = match (&first, n.kind, &n.extents) {
            (None, NodeKind::File, Some(r)) if r.iter().map(|r| r.1).sum::<u64>() < n.size => {
                let mut r = r.clone();
                // A trailing hole is a last, empty region at the end, as GNU tar writes it.
                if r.last().is_none_or(|&(off, len)| off + len < n.size) {
                    r.push((n.size, 0));
                }
                Some(r)
            }
            _ => None,
        };
        if regions.is_some() {
            pax.push(("GNU.sparse.major".into(), b"1".to_vec()));
            pax.push(("GNU.sparse.minor".into(), b"0".to_vec()));
            pax.push(("GNU.sparse.name".into(), path.as_os_str().as_bytes().to_vec()));
            pax.push(("GNU.sparse.realsize".into(), n.size.to_string().into_bytes()));
        }
        let pax_ref = pax.iter().map(|(k, v)| (k.as_str(), v.as_slice()));
        ar.append_pax_extensions(pax_ref).map_err(io)?;
        sum.entries += 1;
        if let Some(first) = first {
            h.set_entry_type(tar::EntryType::Link);
            return ar.append_link(&mut h, path, &first).map_err(io);
        }
        if hard {
            links.insert((n.device, n.inode), path.to_path_buf());
        }
        match n.kind {
            NodeKind::Symlink => {
                let target = Path::new(std::ffi::OsStr::from_bytes(&n.link_target));
                ar.append_link(&mut h, path, target).map_err(io)
            }
            NodeKind::File => match regions {
                Some(regions) => {
                    let map = sparse_map(&regions);
                    let stored: u64 = regions.iter().map(|r| r.1.min(n.size)).sum();
                    // GNU tar reads PAX sparse maps only after a POSIX (ustar) header; its
                    // name is a placeholder (GNU.sparse.name holds the real one), kept short.
                    let mut h = header(n, tar::Header::new_ustar());
                    h.set_entry_type(tar::EntryType::Regular);
                    let base = path.file_name().unwrap_or_default().as_bytes();
                    let shown =
                        Path::new("GNUSparseFile.0").join(std::ffi::OsStr::from_bytes(&base[..base.len().min(80)]));
                    h.set_size(map.len() as u64 + stored);
                    sum.bytes += stored;
                    let body = Regions {
                        inner: Contents::new(repo, index, n)?,
                        regions,
                        i: 0,
                    };
                    ar.append_data(&mut h, shown, std::io::Cursor::new(map).chain(body))
                        .map_err(io)
                }
                None => {
                    h.set_size(n.size);
                    sum.bytes += n.size;
                    ar.append_data(&mut h, path, Contents::new(repo, index, n)?).map_err(io)
                }
            },
            _ => ar.append_data(&mut h, path, std::io::empty()).map_err(io),
        }
    };
    if let Some(n) = node.filter(|_| !base.as_os_str().is_empty()) {
        entry(&base, &n)?;
    }
    // Depth first, each directory's contents right after it: the order tar writes and GNU tar
    // expects (it applies a directory's times once it sees an entry outside it).
    let mut stack = vec![(base.clone(), repo.load_tree(index, &tree)?.nodes.into_iter())];
    while let Some((dir, nodes)) = stack.last_mut() {
        let Some(n) = nodes.next() else {
            stack.pop();
            continue;
        };
        let path = dir.join(std::ffi::OsStr::from_bytes(&n.name));
        entry(&path, &n)?;
        if let Some(st) = n.subtree.filter(|_| n.is_dir()) {
            let sub = repo.load_tree(index, &st)?.nodes.into_iter();
            stack.push((path, sub));
        }
    }
    let (ar, sum, _) = state.into_inner().expect("lock");
    ar.into_inner().map_err(io)?.flush().map_err(io)?;
    Ok(sum)
}
