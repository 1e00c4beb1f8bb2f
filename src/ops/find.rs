//! `find`: where a name occurs in the snapshots (globs on the entry's own name), or which
//! files use a blob or a pack (what `check` reported damaged). Reads trees only.

use crate::error::{Error, Result};
use crate::format::snapshot::Snapshot;
use crate::format::tree::Node;
use crate::ids::{AnyBlobId, SnapshotId};
use crate::repo::index::Index;
use crate::repo::walk::Order;
use crate::repo::Repository;
use serde::Serialize;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub enum Query {
    /// Entries whose own name matches one of the globs.
    Names {
        patterns: Vec<glob::Pattern>,
        ignore_case: bool,
    },
    /// Entries whose content (or, for a directory, whose tree) is a blob with an id starting
    /// with this hex prefix.
    Blob(String),
    /// Files with a chunk stored in the pack of this index position.
    Pack(u32),
}

impl Query {
    pub fn names(patterns: &[String], ignore_case: bool) -> Result<Query> {
        let patterns = patterns
            .iter()
            .map(|s| glob::Pattern::new(s).map_err(|e| Error::Usage(format!("bad pattern {s:?}: {e}"))))
            .collect::<Result<_>>()?;
        Ok(Query::Names { patterns, ignore_case })
    }

    /// The pack whose id starts with `prefix` (exactly one must).
    pub fn pack(index: &Index, prefix: &str) -> Result<Query> {
        let p = prefix.to_ascii_lowercase();
        let found: Vec<u32> = (0..index.packs().len() as u32)
            .filter(|i| index.packs()[*i as usize].to_hex().starts_with(&p))
            .collect();
        match found[..] {
            [one] => Ok(Query::Pack(one)),
            [] => Err(Error::Usage(format!("no indexed pack starts with {prefix}"))),
            _ => Err(Error::Usage(format!(
                "{prefix} names more than one pack: give more digits"
            ))),
        }
    }

    fn matches(&self, index: &Index, n: &Node) -> bool {
        match self {
            Query::Names { patterns, ignore_case } => {
                let name = String::from_utf8_lossy(&n.name);
                let opts = glob::MatchOptions {
                    case_sensitive: !ignore_case,
                    ..Default::default()
                };
                patterns.iter().any(|p| p.matches_with(&name, opts))
            }
            Query::Blob(prefix) => {
                n.content.iter().any(|c| c.blob().to_hex().starts_with(prefix.as_str()))
                    || n.subtree
                        .is_some_and(|t| t.blob().to_hex().starts_with(prefix.as_str()))
            }
            Query::Pack(pack) => n.content.iter().any(|c| index.get(c).is_some_and(|l| l.pack == *pack)),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Hit {
    pub snapshot: String,
    pub snapshot_time: String,
    pub host: String,
    /// Absolute, as backed up; non-UTF-8 bytes lossily (see `path_bytes`).
    pub path: String,
    #[serde(skip)]
    pub path_bytes: PathBuf,
    pub kind: String,
    pub size: u64,
    pub mtime: String,
}

/// Every entry of `snaps` that `q` matches, per snapshot in path order.
pub fn find(repo: &Repository, index: &Index, snaps: &[(SnapshotId, Snapshot)], q: &Query) -> Result<Vec<Hit>> {
    let mut all = Vec::new();
    for (id, s) in snaps {
        let hits: Mutex<Vec<Hit>> = Mutex::new(Vec::new());
        repo.walk_paths(index, &s.tree, Path::new("/"), Order::Parallel, &|path, n| {
            if q.matches(index, n) {
                let mtime = chrono::DateTime::from_timestamp(n.mtime.sec, n.mtime.nsec).unwrap_or_default();
                hits.lock().expect("lock").push(Hit {
                    snapshot: id.to_hex(),
                    snapshot_time: s.datetime().to_rfc3339(),
                    host: s.host.clone(),
                    path: path.to_string_lossy().into_owned(),
                    path_bytes: path.to_path_buf(),
                    kind: format!("{:?}", n.kind).to_lowercase(),
                    size: n.size,
                    mtime: mtime.to_rfc3339(),
                });
            }
            Ok(true)
        })?;
        let mut hits = hits.into_inner().expect("lock");
        hits.sort_by(|a, b| {
            a.path_bytes
                .as_os_str()
                .as_bytes()
                .cmp(b.path_bytes.as_os_str().as_bytes())
        });
        all.extend(hits);
    }
    Ok(all)
}
