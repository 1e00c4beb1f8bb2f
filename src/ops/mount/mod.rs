//! `mount`: the repository as a read-only filesystem (FUSE), laid out as [`layout`] says.
//!
//! [`View`] is the inode table behind it; [`fs`] answers the kernel from it. What must hold:
//!
//! - Inode numbers are never reused or moved while mounted: the table only grows. A refresh
//!   (at most once per `refresh` interval, when a namespace directory is listed or looked
//!   into) gives each namespace directory its new entries, reusing the inode of every name
//!   that still means the same directory, snapshot or link target.
//! - Trees are loaded when a directory is first looked into (its entries get inodes then),
//!   never a whole snapshot up front; hard links of one snapshot (same device and inode,
//!   link count above one) share one inode, so `stat` and `find -samefile` see them as such.
//! - A read fetches and decrypts only the blobs it overlaps, through the bounded
//!   [`cache::BlobCache`]; holes and the gaps between a sparse file's extents read as zeros.
//!   A read that continues where the last one on the file ended queues the next blobs for
//!   the prefetch threads.
//! - New snapshots may use blobs the loaded index does not know: the index is loaded again
//!   before they appear.

pub mod cache;
pub mod fs;
pub mod layout;

use crate::error::{Error, Result};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind, Time};
use crate::ids::{AnyBlobId, DataId, SnapshotId, TreeId};
use crate::ops::restore::contents::chunk_offsets;
use crate::repo::index::Index;
use crate::repo::Repository;
use cache::BlobCache;
use layout::Item;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

pub use fs::{mount, Mounted};

/// How to mount.
#[derive(Clone, Debug)]
pub struct MountOptions {
    /// Let other users than the one mounting see the files (`allow_other`; the kernel still
    /// checks each file's mode and owner).
    pub allow_other: bool,
    /// List the repository's snapshots again at most this often.
    pub refresh: Duration,
    /// Bytes of decrypted blobs to keep.
    pub cache_bytes: usize,
    /// Blobs to fetch ahead of a sequential read.
    pub prefetch: usize,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            allow_other: false,
            refresh: Duration::from_secs(60),
            cache_bytes: 64 << 20,
            prefetch: 2,
        }
    }
}

/// A directory's entries: name → inode, sorted by name.
type Entries = Vec<(Vec<u8>, u64)>;

/// One inode of the mount.
pub struct Inode {
    pub parent: u64,
    pub kind: InodeKind,
}

pub enum InodeKind {
    /// A directory of the namespace (the root, `snapshots/`, `hosts/<host>/`, …), whose
    /// entries a refresh replaces.
    Namespace(RwLock<Entries>),
    /// A namespace symlink (`latest`).
    Link(Vec<u8>),
    /// A snapshot's root directory.
    Root {
        tree: TreeId,
        time: Time,
        entries: OnceLock<Entries>,
    },
    /// An entry of a snapshot's tree; `root` is the inode of its snapshot's root.
    Entry {
        node: Box<Node>,
        root: u64,
        entries: OnceLock<Entries>,
        file: FileState,
    },
}

/// What reads of one file remember.
#[derive(Default)]
pub struct FileState {
    /// Each chunk with its offset and length in the file, in file order.
    chunks: OnceLock<Vec<(DataId, u64, u64)>>,
    /// Where the last read ended: a read starting there is sequential.
    next: AtomicU64,
}

/// The persistent side of the namespace: which inode each name had, so a refresh keeps it.
#[derive(Default)]
struct Names {
    dirs: HashMap<String, u64>,
    roots: HashMap<(u64, SnapshotId), u64>,
    links: HashMap<(u64, String), u64>,
    known: HashSet<SnapshotId>,
    last: Option<Instant>,
    newest: Time,
}

pub struct View {
    repo: Repository,
    index: RwLock<Arc<Index>>,
    inodes: RwLock<Vec<Arc<Inode>>>,
    /// (snapshot root, device, inode) → the mount's inode of a hard-linked file.
    hard_links: Mutex<HashMap<(u64, u64, u64), u64>>,
    names: Mutex<Names>,
    pub cache: BlobCache,
    opts: MountOptions,
    /// Owner of the namespace directories: who mounted.
    pub uid: u32,
    pub gid: u32,
    prefetch: crossbeam_channel::Sender<DataId>,
    prefetch_rx: crossbeam_channel::Receiver<DataId>,
}

pub const ROOT: u64 = 1;

/// How far from the end of the last read a read may start and still count as sequential.
const SEQUENTIAL_SLACK: u64 = 2 << 20;

/// Errors the kernel sees: the errno, after one line on stderr for anything but "no such
/// entry" (the mount runs in the foreground; its stderr is the user's terminal or journal).
fn eio(what: &str, e: Error) -> i32 {
    eprintln!("pbak: mount: {what}: {}", e.detail());
    libc::EIO
}

impl View {
    /// The view of `repo`, its namespace listed once.
    pub fn new(repo: Repository, opts: MountOptions) -> Result<Arc<View>> {
        let index = repo.load_index()?;
        let (tx, rx) = crossbeam_channel::bounded(64);
        let v = Arc::new(View {
            repo,
            index: RwLock::new(Arc::new(index)),
            inodes: RwLock::new(Vec::new()),
            hard_links: Mutex::default(),
            names: Mutex::default(),
            cache: BlobCache::new(opts.cache_bytes),
            opts,
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
            prefetch: tx,
            prefetch_rx: rx,
        });
        let root = v.add(Inode {
            parent: ROOT,
            kind: InodeKind::Namespace(RwLock::default()),
        });
        debug_assert_eq!(root, ROOT);
        v.names.lock().expect("lock").dirs.insert(String::new(), ROOT);
        v.refresh(true)?;
        Ok(v)
    }

    /// Start the threads that fetch queued blobs ahead of sequential reads; they end when
    /// the view is dropped.
    pub fn start_prefetch(self: &Arc<View>, threads: usize) {
        for _ in 0..threads {
            let weak = Arc::downgrade(self);
            let rx = self.prefetch_rx.clone();
            std::thread::spawn(move || {
                while let Ok(id) = rx.recv() {
                    let Some(v) = weak.upgrade() else { return };
                    let _ = v.blob(&id);
                }
            });
        }
    }

    fn add(&self, inode: Inode) -> u64 {
        let mut t = self.inodes.write().expect("lock");
        t.push(Arc::new(inode));
        t.len() as u64
    }

    pub fn get(&self, ino: u64) -> Option<Arc<Inode>> {
        let t = self.inodes.read().expect("lock");
        t.get((ino as usize).checked_sub(1)?).cloned()
    }

    fn index(&self) -> Arc<Index> {
        self.index.read().expect("lock").clone()
    }

    /// The time namespace entries show: the newest snapshot's.
    pub fn namespace_time(&self) -> Time {
        self.names.lock().expect("lock").newest
    }

    /// List the snapshots again if the last listing is older than the refresh interval (or
    /// `force`), and give the namespace directories their new entries.
    pub fn refresh(&self, force: bool) -> Result<()> {
        let mut names = self.names.lock().expect("lock");
        if !force && names.last.is_some_and(|t| t.elapsed() < self.opts.refresh) {
            return Ok(());
        }
        names.last = Some(Instant::now());
        let snaps = self.repo.snapshots()?;
        let ids: HashSet<SnapshotId> = snaps.iter().map(|(id, _)| *id).collect();
        if !ids.is_subset(&names.known) {
            // New snapshots may refer to blobs of packs indexed since the index was loaded.
            let index = self.repo.load_index()?;
            *self.index.write().expect("lock") = Arc::new(index);
        }
        names.known = ids;
        names.newest = snaps.last().map(|(_, s)| s.time).unwrap_or_default();
        let l = layout::layout(&snaps);
        // Parents before children: BTreeMap order puts `hosts` before `hosts/a`.
        let mut new_entries: Vec<(u64, Entries)> = Vec::new();
        let mut seen_dirs = HashSet::new();
        for (path, items) in &l.dirs {
            let dir = self.namespace_dir(&mut names, path);
            seen_dirs.insert(dir);
            let mut entries = Entries::new();
            for (name, item) in items {
                let ino = match item {
                    Item::Dir(p) => self.namespace_dir(&mut names, p),
                    Item::Snap(i) => self.root_of(&mut names, dir, &snaps[*i]),
                    Item::Link(target) => self.link(&mut names, dir, target),
                };
                entries.push((name.as_bytes().to_vec(), ino));
            }
            new_entries.push((dir, entries));
        }
        // A host or tag whose snapshots are all gone: still reachable from an open
        // directory, now empty.
        for (_, &ino) in names.dirs.iter().filter(|(_, ino)| !seen_dirs.contains(*ino)) {
            new_entries.push((ino, Entries::new()));
        }
        for (ino, entries) in new_entries {
            if let Some(InodeKind::Namespace(e)) = self.get(ino).as_deref().map(|i| &i.kind) {
                *e.write().expect("lock") = entries;
            }
        }
        Ok(())
    }

    fn namespace_dir(&self, names: &mut Names, path: &str) -> u64 {
        if let Some(&ino) = names.dirs.get(path) {
            return ino;
        }
        let parent_path = path.rsplit_once('/').map_or("", |(p, _)| p);
        let parent = names.dirs.get(parent_path).copied().unwrap_or(ROOT);
        let ino = self.add(Inode {
            parent,
            kind: InodeKind::Namespace(RwLock::default()),
        });
        names.dirs.insert(path.to_string(), ino);
        ino
    }

    fn root_of(&self, names: &mut Names, dir: u64, (id, s): &(SnapshotId, Snapshot)) -> u64 {
        *names.roots.entry((dir, *id)).or_insert_with(|| {
            self.add(Inode {
                parent: dir,
                kind: InodeKind::Root {
                    tree: s.tree,
                    time: s.time,
                    entries: OnceLock::new(),
                },
            })
        })
    }

    fn link(&self, names: &mut Names, dir: u64, target: &str) -> u64 {
        *names.links.entry((dir, target.to_string())).or_insert_with(|| {
            self.add(Inode {
                parent: dir,
                kind: InodeKind::Link(target.as_bytes().to_vec()),
            })
        })
    }

    /// The entries of directory `ino` (loading its tree on first use); `ENOTDIR` for others.
    pub fn entries(&self, ino: u64) -> std::result::Result<Entries, i32> {
        let inode = self.get(ino).ok_or(libc::ENOENT)?;
        let (tree, root, cell) = match &inode.kind {
            InodeKind::Namespace(e) => {
                if let Err(e) = self.refresh(false) {
                    eprintln!("pbak: mount: listing the snapshots again: {}", e.detail());
                }
                return Ok(e.read().expect("lock").clone());
            }
            InodeKind::Root { tree, entries, .. } => (*tree, ino, entries),
            InodeKind::Entry {
                node, root, entries, ..
            } => match node.subtree {
                Some(t) if node.is_dir() => (t, *root, entries),
                _ => return Err(libc::ENOTDIR),
            },
            InodeKind::Link(_) => return Err(libc::ENOTDIR),
        };
        if let Some(e) = cell.get() {
            return Ok(e.clone());
        }
        let t = self
            .repo
            .load_tree(&self.index(), &tree)
            .map_err(|e| eio(&format!("tree {}", tree.short()), e))?;
        let mut entries = Entries::with_capacity(t.nodes.len());
        for node in t.nodes {
            let name = node.name.clone();
            let ino = self.entry_inode(ino, root, node);
            entries.push((name, ino));
        }
        // Two threads may load the same tree at once: the first to finish wins, and the
        // other's inodes are simply never named.
        Ok(cell.get_or_init(|| entries).clone())
    }

    fn entry_inode(&self, parent: u64, root: u64, node: Node) -> u64 {
        let hard = node.kind == NodeKind::File && node.nlink > 1;
        let key = (root, node.device, node.inode);
        let mut links = hard.then(|| self.hard_links.lock().expect("lock"));
        if let Some(&ino) = links.as_ref().and_then(|l| l.get(&key)) {
            return ino;
        }
        let ino = self.add(Inode {
            parent,
            kind: InodeKind::Entry {
                node: Box::new(node),
                root,
                entries: OnceLock::new(),
                file: FileState::default(),
            },
        });
        if let Some(l) = links.as_mut() {
            l.insert(key, ino);
        }
        ino
    }

    /// The entry `name` of directory `parent`.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> std::result::Result<u64, i32> {
        let entries = self.entries(parent)?;
        entries
            .binary_search_by(|(n, _)| n.as_slice().cmp(name))
            .map(|i| entries[i].1)
            .map_err(|_| libc::ENOENT)
    }

    fn blob(&self, id: &DataId) -> Result<Arc<Vec<u8>>> {
        self.cache.get(id, || self.repo.read_blob(&self.index(), &id.blob()))
    }

    /// Up to `size` bytes of file `ino` from `offset` (fewer only at the end of the file).
    pub fn read(&self, ino: u64, offset: u64, size: u32) -> std::result::Result<Vec<u8>, i32> {
        let inode = self.get(ino).ok_or(libc::ENOENT)?;
        let InodeKind::Entry { node, file, .. } = &inode.kind else {
            return Err(libc::EISDIR);
        };
        if node.kind != NodeKind::File {
            return Err(libc::EINVAL);
        }
        let end = node.size.min(offset.saturating_add(size as u64));
        if offset >= end {
            return Ok(Vec::new());
        }
        let chunks = match file.chunks.get() {
            Some(c) => c,
            None => {
                let index = self.index();
                let list = chunk_offsets(&index, node).map_err(|e| eio("a file's chunk list", e))?;
                let with_len = list
                    .into_iter()
                    .map(|(id, off)| (id, off, index.get(&id).map_or(0, |l| l.raw_length as u64)))
                    .collect();
                file.chunks.get_or_init(|| with_len)
            }
        };
        let mut out = vec![0u8; (end - offset) as usize];
        let mut i = chunks.partition_point(|&(_, off, len)| off + len <= offset);
        while let Some(&(id, off, len)) = chunks.get(i).filter(|c| c.1 < end) {
            let data = self
                .blob(&id)
                .map_err(|e| eio(&format!("{:?}", String::from_utf8_lossy(&node.name)), e))?;
            let (from, to) = (offset.max(off), end.min(off + len));
            let src = &data[((from - off) as usize).min(data.len())..((to - off) as usize).min(data.len())];
            let at = (from - offset) as usize;
            out[at..at + src.len()].copy_from_slice(src);
            i += 1;
        }
        // Sequential (near where the last read ended: the kernel's read-ahead requests of
        // several FUSE threads arrive slightly out of order): fetch the blobs after this
        // read before they are asked for.
        let last = file.next.swap(end, Relaxed);
        if offset > 0 && offset.abs_diff(last) <= SEQUENTIAL_SLACK {
            let from = chunks.partition_point(|&(_, off, _)| off < end);
            for &(id, _, _) in chunks.iter().skip(from).take(self.opts.prefetch) {
                if !self.cache.has(&id) {
                    let _ = self.prefetch.try_send(id);
                }
            }
        }
        Ok(out)
    }
}
