//! `stats`: sizes from the index and the trees alone (no data pack is read): what the
//! snapshots hold, what the repository stores, and per snapshot, host and path the stored
//! bytes that only it references (what forgetting it and a prune would free).
//!
//! The repository-wide figures reuse prune's plan (`ops::prune::plan`), so "unused" is what a
//! prune would free now. Exclusive bytes come from one walk of every tree (each tree is loaded
//! once) and, per grouping, an owner per blob: the one group that references it, or "shared".
//! A tree is descended at most twice per grouping (when a group claims it, and when a second
//! group makes it shared), so the cost does not grow with the number of snapshots that share
//! unchanged subtrees.

use crate::error::{Error, Result};
use crate::format::snapshot::Snapshot;
use crate::format::tree::NodeKind;
use crate::ids::{SnapshotId, TreeId};
use crate::ops::prune::{plan, PruneOptions};
use crate::repo::index::Index;
use crate::repo::Repository;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// One snapshot's figures.
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotStats {
    pub id: String,
    pub time: String,
    pub host: String,
    pub paths: Vec<String>,
    /// Sum of the sizes of its files (what a restore writes).
    pub restore_size: u64,
    pub files: u64,
    /// Stored bytes that no other snapshot references.
    pub exclusive_bytes: u64,
}

/// A group of snapshots (one host, or one set of paths).
#[derive(Clone, Debug, Serialize)]
pub struct GroupStats {
    pub name: String,
    pub snapshots: usize,
    pub restore_size: u64,
    /// Stored bytes that no snapshot outside the group references.
    pub exclusive_bytes: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    pub snapshots: usize,
    /// Sum of the restore sizes of all snapshots.
    pub restore_size: u64,
    pub files: u64,
    /// Distinct blobs the snapshots reference, and their plain and stored sizes.
    pub blobs: u64,
    pub raw_size: u64,
    pub stored_size: u64,
    /// Stored bytes of every indexed pack's blobs (live and marked packs).
    pub repository_size: u64,
    /// What a prune would free now (blobs no snapshot references).
    pub unused_bytes: u64,
    /// `raw_size / stored_size`.
    pub compression_ratio: f64,
    /// `restore_size / raw_size`.
    pub dedup_ratio: f64,
    pub per_snapshot: Vec<SnapshotStats>,
    pub per_host: Vec<GroupStats>,
    pub per_path: Vec<GroupStats>,
}

/// What one tree holds: its own files' sizes, and the index positions of its content blobs
/// and subtrees.
struct TreeInfo {
    pos: u32,
    bytes: u64,
    files: u64,
    blobs: Vec<u32>,
    subtrees: Vec<TreeId>,
}

const NONE: u32 = u32::MAX;
const SHARED: u32 = u32::MAX - 1;

/// Owners of blobs for one grouping of the roots.
struct Owners<'a> {
    trees: &'a HashMap<TreeId, TreeInfo>,
    owner: Vec<u32>,
}

impl Owners<'_> {
    fn claim_blob(&mut self, pos: u32, g: u32) -> bool {
        let o = &mut self.owner[pos as usize];
        match *o {
            NONE => {
                *o = g;
                true
            }
            x if x == g || x == SHARED => false,
            _ => {
                *o = SHARED;
                false
            }
        }
    }
    /// Group `g` references `root` and everything below it.
    fn claim(&mut self, root: TreeId, g: u32) {
        let mut todo = vec![root];
        while let Some(t) = todo.pop() {
            let info = &self.trees[&t];
            match self.owner[info.pos as usize] {
                NONE => {
                    self.owner[info.pos as usize] = g;
                    for &b in &info.blobs {
                        self.claim_blob(b, g);
                    }
                    todo.extend(info.subtrees.iter().copied());
                }
                x if x == g || x == SHARED => {}
                _ => self.share(t),
            }
        }
    }
    /// A second group references `root`: it and everything below it are shared.
    fn share(&mut self, root: TreeId) {
        let mut todo = vec![root];
        while let Some(t) = todo.pop() {
            let info = &self.trees[&t];
            if std::mem::replace(&mut self.owner[info.pos as usize], SHARED) == SHARED {
                continue;
            }
            for &b in &info.blobs {
                self.owner[b as usize] = SHARED;
            }
            todo.extend(info.subtrees.iter().copied());
        }
    }
    /// Stored bytes owned by each of `groups` groups alone.
    fn exclusive(&self, index: &Index, groups: usize) -> Vec<u64> {
        let mut out = vec![0u64; groups];
        for (pos, o) in self.owner.iter().enumerate() {
            if (*o as usize) < groups {
                out[*o as usize] += index.location_at(pos).length as u64;
            }
        }
        out
    }
}

/// Restore size and file count of every tree, bottom up (memoized; no recursion).
fn tree_sizes(trees: &HashMap<TreeId, TreeInfo>) -> HashMap<TreeId, (u64, u64)> {
    let mut sizes: HashMap<TreeId, (u64, u64)> = HashMap::with_capacity(trees.len());
    for root in trees.keys() {
        let mut stack = vec![(*root, false)];
        while let Some((t, expanded)) = stack.pop() {
            if sizes.contains_key(&t) {
                continue;
            }
            let info = &trees[&t];
            if !expanded {
                stack.push((t, true));
                stack.extend(
                    info.subtrees
                        .iter()
                        .filter(|s| !sizes.contains_key(*s))
                        .map(|s| (*s, false)),
                );
                continue;
            }
            let (mut bytes, mut files) = (info.bytes, info.files);
            for s in &info.subtrees {
                let (b, f) = sizes[s];
                bytes += b;
                files += f;
            }
            sizes.insert(t, (bytes, files));
        }
    }
    sizes
}

/// Figures for the snapshots `shown` (all when empty: every snapshot); exclusivity is always
/// reckoned against every snapshot in the repository.
pub fn stats(repo: &Repository, shown: &[SnapshotId], log: &(dyn Fn(&str) + Sync)) -> Result<Stats> {
    let opts = PruneOptions {
        dry_run: true,
        ..Default::default()
    };
    let plan = plan::plan(repo, &opts, log)?;
    let index = &plan.index;
    let snaps = repo.snapshots()?;

    log("reading the trees");
    let trees: Mutex<HashMap<TreeId, TreeInfo>> = Mutex::new(HashMap::new());
    let seen: Mutex<std::collections::HashSet<TreeId>> = Mutex::new(snaps.iter().map(|(_, s)| s.tree).collect());
    let roots: Vec<TreeId> = seen.lock().expect("lock").iter().copied().collect();
    let missing = |what: &TreeId| Error::corrupt(format!("tree {}", what.short()), "is in no index (run `pbak check`)");
    repo.walk_levels(
        index,
        roots,
        &|_, st| Ok(seen.lock().expect("lock").insert(*st)),
        &|tid, tree| {
            let tree = tree?;
            let pos = index.position(tid).ok_or_else(|| missing(tid))? as u32;
            let mut info = TreeInfo {
                pos,
                bytes: 0,
                files: 0,
                blobs: Vec::new(),
                subtrees: Vec::new(),
            };
            for n in &tree.nodes {
                if n.kind == NodeKind::File {
                    info.bytes += n.size;
                    info.files += 1;
                }
                for c in &n.content {
                    let p = index.position(c).ok_or_else(|| {
                        Error::corrupt(
                            format!("tree {}", tid.short()),
                            format!("refers to blob {c}, which is in no index"),
                        )
                    })?;
                    info.blobs.push(p as u32);
                }
                info.subtrees.extend(n.subtree);
            }
            trees.lock().expect("lock").insert(*tid, info);
            Ok(())
        },
    )?;
    let trees = trees.into_inner().expect("lock");
    let sizes = tree_sizes(&trees);

    log("reckoning exclusive bytes");
    let exclusive_by = |key: &dyn Fn(&SnapshotId, &Snapshot) -> String| -> (Vec<String>, Vec<u64>) {
        let mut names: BTreeMap<String, u32> = BTreeMap::new();
        let groups: Vec<u32> = snaps
            .iter()
            .map(|(id, s)| {
                let n = names.len() as u32;
                *names.entry(key(id, s)).or_insert(n)
            })
            .collect();
        let mut owners = Owners {
            trees: &trees,
            owner: vec![NONE; index.blob_count()],
        };
        for ((_, s), g) in snaps.iter().zip(&groups) {
            owners.claim(s.tree, *g);
        }
        let bytes = owners.exclusive(index, names.len());
        let mut by_group = vec![String::new(); names.len()];
        for (name, g) in names {
            by_group[g as usize] = name;
        }
        (by_group, bytes)
    };
    let by_name = |key: &dyn Fn(&SnapshotId, &Snapshot) -> String| -> HashMap<String, u64> {
        let (names, bytes) = exclusive_by(key);
        names.into_iter().zip(bytes).collect()
    };
    let per_snap = by_name(&|id, _| id.to_hex());
    let mut st = Stats {
        snapshots: snaps.len(),
        repository_size: plan.usage.iter().map(|u| u.total).sum(),
        unused_bytes: plan.report.bytes_unused,
        stored_size: plan.report.bytes_used,
        blobs: plan.report.blobs_used as u64,
        ..Default::default()
    };
    for (pos, loc) in index.locations().enumerate() {
        if plan.marks.get(pos) {
            st.raw_size += loc.raw_length as u64;
        }
    }
    for (id, s) in &snaps {
        let (bytes, files) = sizes[&s.tree];
        st.restore_size += bytes;
        st.files += files;
        if shown.is_empty() || shown.contains(id) {
            st.per_snapshot.push(SnapshotStats {
                id: id.to_hex(),
                time: s.datetime().to_rfc3339(),
                host: s.host.clone(),
                paths: s.paths.clone(),
                restore_size: bytes,
                files,
                exclusive_bytes: per_snap[&id.to_hex()],
            });
        }
    }
    let groups = |key: &dyn Fn(&Snapshot) -> String| -> Vec<GroupStats> {
        let mut out: BTreeMap<String, GroupStats> = BTreeMap::new();
        for (name, exclusive_bytes) in by_name(&|_, s| key(s)) {
            let g = GroupStats {
                name: name.clone(),
                snapshots: 0,
                restore_size: 0,
                exclusive_bytes,
            };
            out.insert(name, g);
        }
        for (_, s) in &snaps {
            let g = out.get_mut(&key(s)).expect("grouped");
            g.snapshots += 1;
            g.restore_size += sizes[&s.tree].0;
        }
        out.into_values().collect()
    };
    st.per_host = groups(&|s| s.host.clone());
    st.per_path = groups(&|s| s.paths.join(","));
    st.compression_ratio = ratio(st.raw_size, st.stored_size);
    st.dedup_ratio = ratio(st.restore_size, st.raw_size);
    Ok(st)
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}
