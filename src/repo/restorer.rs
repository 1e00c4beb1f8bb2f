//! Restore: plan every entry from the snapshot's trees, create the structure under the
//! target, fill file contents pack by pack (each needed pack range is read once), then apply
//! metadata, directories last and deepest first so their times stick.
//!
//! Safety: entry names were validated when their tree was decoded (no `/`, `.`, `..`), all
//! directories on the way are created by us, and files are opened with O_NOFOLLOW, so
//! nothing in a repository can make a restore write outside the target.

use super::fsnode::{apply_metadata, make_special};
use super::index::Index;
use super::pack::pack_path;
use super::snapshot::Snapshot;
use super::tree::{Node, NodeKind};
use super::Repository;
use crate::error::{Error, Result};
use crate::ids::{BlobId, PackId};
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    pub target: PathBuf,
    /// Path inside the snapshot to restore (empty: everything).
    pub subpath: String,
    pub includes: Vec<String>,
    pub excludes: Vec<String>,
    pub verify: bool,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RestoreSummary {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub specials: u64,
    pub hardlinks: u64,
    pub bytes: u64,
    pub verified_files: u64,
    pub warnings: Vec<String>,
}

struct Item {
    /// Relative to the target.
    rel: PathBuf,
    /// Absolute path inside the snapshot, for include/exclude matching.
    snap_path: PathBuf,
    node: Node,
    /// For the second and later names of a hardlinked file: the first name's index.
    link_to: Option<usize>,
}

fn patterns(p: &[String]) -> Result<Vec<glob::Pattern>> {
    p.iter()
        .map(|s| glob::Pattern::new(s).map_err(|e| Error::Usage(format!("bad pattern {s:?}: {e}"))))
        .collect()
}

fn matches_any(pats: &[glob::Pattern], path: &Path) -> bool {
    pats.iter().any(|p| {
        if p.as_str().contains('/') {
            path.ancestors().any(|a| p.matches_path(a))
        } else {
            path.iter().any(|c| p.matches(&c.to_string_lossy()))
        }
    })
}

/// Restore `snap` (or `opts.subpath` of it) into `opts.target`.
pub fn restore(
    repo: &Repository,
    index: &Index,
    snap: &Snapshot,
    opts: &RestoreOptions,
    bytes_done: &AtomicU64,
) -> Result<RestoreSummary> {
    let includes = patterns(&opts.includes)?;
    let excludes = patterns(&opts.excludes)?;
    let (tree_id, single) = repo.resolve_path(index, &snap.tree, &opts.subpath)?;
    let base = PathBuf::from("/").join(opts.subpath.trim_matches('/'));
    let mut items = Vec::new();
    match single {
        Some(node) if !node.is_dir() => items.push(Item {
            rel: PathBuf::from(OsStr::from_bytes(&node.name)),
            snap_path: base,
            node,
            link_to: None,
        }),
        _ => plan(repo, index, &tree_id, Path::new(""), &base, &mut items)?,
    }
    items = filter(items, &includes, &excludes);
    link_hardlinks(&mut items);

    std::fs::create_dir_all(&opts.target).map_err(|e| Error::io(&opts.target, e))?;
    let target = opts.target.canonicalize().map_err(|e| Error::io(&opts.target, e))?;
    let mut sum = RestoreSummary::default();
    create_entries(&target, &items, &mut sum)?;
    write_contents(repo, index, &target, &items, bytes_done)?;
    let is_root = rustix::process::geteuid().is_root();
    let warn = apply_all_metadata(&target, &items, is_root)?;
    if warn {
        sum.warnings.push("file ownership not restored: it needs root".into());
    }
    sum.bytes = bytes_done.load(Relaxed);
    if opts.verify {
        sum.verified_files = verify(repo, index, &target, &items)?;
    }
    Ok(sum)
}

fn plan(repo: &Repository, index: &Index, tree: &BlobId, rel: &Path, snap: &Path, out: &mut Vec<Item>) -> Result<()> {
    let t = repo.load_tree(index, tree)?;
    let subtrees: Vec<(PathBuf, PathBuf, BlobId)> = t
        .nodes
        .iter()
        .filter_map(|n| {
            n.subtree.map(|s| {
                (
                    rel.join(OsStr::from_bytes(&n.name)),
                    snap.join(OsStr::from_bytes(&n.name)),
                    s,
                )
            })
        })
        .collect();
    for n in t.nodes {
        let name = OsStr::from_bytes(&n.name);
        out.push(Item {
            rel: rel.join(name),
            snap_path: snap.join(name),
            node: n,
            link_to: None,
        });
    }
    // Load sibling subtrees in parallel, keep a deterministic parents-first order.
    let children = subtrees
        .par_iter()
        .map(|(r, s, id)| {
            let mut v = Vec::new();
            plan(repo, index, id, r, s, &mut v)?;
            Ok(v)
        })
        .collect::<Result<Vec<_>>>()?;
    out.extend(children.into_iter().flatten());
    Ok(())
}

fn filter(items: Vec<Item>, includes: &[glob::Pattern], excludes: &[glob::Pattern]) -> Vec<Item> {
    let keep: Vec<bool> = items
        .iter()
        .map(|i| !matches_any(excludes, &i.snap_path) && (includes.is_empty() || matches_any(includes, &i.snap_path)))
        .collect();
    if includes.is_empty() && excludes.is_empty() {
        return items;
    }
    // Keep the directories leading to anything kept.
    let mut needed: HashSet<PathBuf> = HashSet::new();
    for (i, k) in items.iter().zip(&keep) {
        if *k {
            for a in i.rel.ancestors().skip(1) {
                needed.insert(a.to_path_buf());
            }
        }
    }
    items
        .into_iter()
        .zip(keep)
        .filter(|(i, k)| *k || (i.node.is_dir() && needed.contains(&i.rel)))
        .map(|(i, _)| i)
        .collect()
}

fn link_hardlinks(items: &mut [Item]) {
    let mut first: HashMap<(u64, u64), usize> = HashMap::new();
    for (idx, item) in items.iter_mut().enumerate() {
        let n = &item.node;
        if n.kind == NodeKind::File && n.nlink > 1 {
            match first.get(&(n.device, n.inode)) {
                Some(&f) => item.link_to = Some(f),
                None => {
                    first.insert((n.device, n.inode), idx);
                }
            }
        }
    }
}

fn ensure_dir(path: &Path) -> Result<()> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let md = std::fs::symlink_metadata(path).map_err(|e| Error::io(path, e))?;
            if md.is_dir() {
                Ok(())
            } else {
                Err(Error::UnsafePath(format!(
                    "{} exists and is not a directory",
                    path.display()
                )))
            }
        }
        Err(e) => Err(Error::io(path, e)),
    }
}

fn remove_existing(path: &Path) {
    if let Ok(md) = std::fs::symlink_metadata(path) {
        if !md.is_dir() {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn create_entries(target: &Path, items: &[Item], sum: &mut RestoreSummary) -> Result<()> {
    for it in items {
        let path = target.join(&it.rel);
        let n = &it.node;
        let io = |e| Error::io(&path, e);
        match (n.kind, it.link_to) {
            (NodeKind::Dir, _) => {
                ensure_dir(&path)?;
                sum.dirs += 1;
            }
            (NodeKind::File, Some(first)) => {
                remove_existing(&path);
                std::fs::hard_link(target.join(&items[first].rel), &path).map_err(io)?;
                sum.hardlinks += 1;
            }
            (NodeKind::File, None) => {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                    .mode(0o600)
                    .open(&path)
                    .map_err(io)?;
                f.set_len(n.size).map_err(io)?;
                sum.files += 1;
            }
            (NodeKind::Symlink, _) => {
                remove_existing(&path);
                std::os::unix::fs::symlink(OsStr::from_bytes(&n.link_target), &path).map_err(io)?;
                sum.symlinks += 1;
            }
            (NodeKind::Socket, _) => sum
                .warnings
                .push(format!("{}: sockets are not restored", it.rel.display())),
            _ => {
                remove_existing(&path);
                make_special(&path, n).map_err(io)?;
                sum.specials += 1;
            }
        }
    }
    Ok(())
}

/// Where each chunk of a file goes: dense files back to back, sparse files into their extents.
fn chunk_offsets(index: &Index, n: &Node) -> Result<Vec<(BlobId, u64)>> {
    let len_of = |id: &BlobId| {
        index
            .get(id)
            .map(|l| l.raw_length as u64)
            .ok_or_else(|| Error::corrupt(format!("blob {id}"), "not in any index; run `pbak check`"))
    };
    let mut out = Vec::with_capacity(n.content.len());
    match &n.extents {
        None => {
            let mut off = 0;
            for id in &n.content {
                out.push((*id, off));
                off += len_of(id)?;
            }
        }
        Some(ext) => {
            let mut chunks = n.content.iter();
            for &(start, len) in ext {
                let mut off = start;
                while off < start + len {
                    let Some(id) = chunks.next() else { break };
                    out.push((*id, off));
                    off += len_of(id)?;
                }
            }
        }
    }
    Ok(out)
}

fn write_contents(
    repo: &Repository,
    index: &Index,
    target: &Path,
    items: &[Item],
    bytes_done: &AtomicU64,
) -> Result<()> {
    // blob → (item, offset) targets, grouped by pack.
    let mut by_pack: HashMap<PackId, HashMap<BlobId, Vec<(usize, u64)>>> = HashMap::new();
    for (i, it) in items.iter().enumerate() {
        if it.node.kind != NodeKind::File || it.link_to.is_some() {
            continue;
        }
        for (id, off) in chunk_offsets(index, &it.node)? {
            let loc = index.get(&id).expect("checked by chunk_offsets");
            by_pack
                .entry(index.pack_id(&loc))
                .or_default()
                .entry(id)
                .or_default()
                .push((i, off));
        }
    }
    let packs: Vec<_> = by_pack.into_iter().collect();
    packs.par_iter().try_for_each(|(pack, blobs)| {
        let path = pack_path(pack);
        let locs: Vec<_> = blobs.keys().map(|id| (id, index.get(id).expect("indexed"))).collect();
        let start = locs.iter().map(|(_, l)| l.offset as u64).min().unwrap_or(0);
        let end = locs
            .iter()
            .map(|(_, l)| l.offset as u64 + l.length as u64)
            .max()
            .unwrap_or(0);
        let span = repo.backend().get_range(&path, start, end - start)?;
        for (id, l) in locs {
            let s = (l.offset as u64 - start) as usize;
            let data = repo.open_blob(&path, id, l.compressed, l.raw_length, &span[s..s + l.length as usize])?;
            for &(item, off) in &blobs[id] {
                let fpath = target.join(&items[item].rel);
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                    .open(&fpath)
                    .map_err(|e| Error::io(&fpath, e))?;
                f.write_all_at(&data, off).map_err(|e| Error::io(&fpath, e))?;
                bytes_done.fetch_add(data.len() as u64, Relaxed);
            }
        }
        Ok(())
    })
}

fn apply_all_metadata(target: &Path, items: &[Item], is_root: bool) -> Result<bool> {
    let apply = |it: &Item| -> Result<bool> {
        if it.node.kind == NodeKind::Socket {
            return Ok(false);
        }
        let path = target.join(&it.rel);
        apply_metadata(&path, &it.node, is_root)
            .map(|w| w.owner_skipped)
            .map_err(|e| Error::io(&path, e))
    };
    let mut skipped = items
        .par_iter()
        .filter(|i| !i.node.is_dir())
        .map(apply)
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .any(|b| b);
    for it in items.iter().rev().filter(|i| i.node.is_dir()) {
        skipped |= apply(it)?;
    }
    Ok(skipped)
}

/// Re-read every restored file and check its chunks' ids and its size; returns files checked.
fn verify(repo: &Repository, index: &Index, target: &Path, items: &[Item]) -> Result<u64> {
    let files: Vec<&Item> = items.iter().filter(|i| i.node.kind == NodeKind::File).collect();
    files.par_iter().try_for_each(|it| {
        let path = target.join(&it.rel);
        let fail = |reason: String| Error::VerifyFailed {
            path: path.clone(),
            reason,
        };
        let f = super::fsnode::open_noatime(&path).map_err(|e| Error::io(&path, e))?;
        let md = f.metadata().map_err(|e| Error::io(&path, e))?;
        if md.len() != it.node.size {
            return Err(fail(format!("size {} instead of {}", md.len(), it.node.size)));
        }
        for (id, off) in chunk_offsets(index, &it.node)? {
            let len = index.get(&id).expect("indexed").raw_length as usize;
            let mut buf = vec![0u8; len];
            f.read_exact_at(&mut buf, off).map_err(|e| Error::io(&path, e))?;
            if repo.key().blob_id(&buf) != id {
                return Err(fail(format!("content at offset {off} differs from the snapshot")));
            }
        }
        Ok(())
    })?;
    Ok(files.len() as u64)
}
