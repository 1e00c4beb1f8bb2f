//! The mount's namespace above the snapshots, computed from the snapshot list alone (a pure
//! function, so a refresh is a new [`Layout`] that the inode table reconciles):
//!
//! ```text
//! snapshots/<time>/…      every snapshot, and `latest` → the newest
//! hosts/<host>/<time>/…   per host, and `hosts/<host>/latest`
//! tags/<tag>/<time>/…     per tag
//! ids/<short id>/…        by the first 8 hex digits of the snapshot id
//! ```
//!
//! `<time>` is the snapshot's time in UTC to the second, restic's layout in RFC 3339
//! (`2006-01-02T15:04:05Z`): UTC, not the local zone, so the names are the same on every
//! host that mounts a shared repository. Two snapshots that share a name (the same second,
//! or the same short id) are told apart by a suffix in listing order, oldest first: the
//! second is `<time>-1`, the third `<time>-2`. Host and tag names are made single path
//! components (`/` and NUL become `_`; an empty name, `.` or `..` becomes `_`).

use crate::format::snapshot::Snapshot;
use crate::ids::SnapshotId;
use std::collections::{BTreeMap, HashMap};

/// One entry of a namespace directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// Another namespace directory, by its path (`hosts/zephyrus`).
    Dir(String),
    /// The root of the snapshot at this position of the listing.
    Snap(usize),
    /// A symlink (`latest`) with this target.
    Link(String),
}

/// Namespace directories by path (`""` is the mount's root), each with its entries by name.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Layout {
    pub dirs: BTreeMap<String, BTreeMap<String, Item>>,
}

/// A snapshot's directory name before any suffix: its time in UTC, to the second.
pub fn time_name(s: &Snapshot) -> String {
    s.datetime().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `name` as one safe path component.
pub fn component(name: &str) -> String {
    let n: String = name
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect();
    if n.is_empty() || n == "." || n == ".." {
        "_".into()
    } else {
        n
    }
}

/// Names unique within one directory: the first use of a base name as it is, then `-1`, `-2`…
#[derive(Default)]
struct Unique(HashMap<String, usize>);

impl Unique {
    fn name(&mut self, base: String) -> String {
        let n = self.0.entry(base.clone()).or_insert(0);
        *n += 1;
        if *n == 1 {
            base
        } else {
            format!("{base}-{}", *n - 1)
        }
    }
}

/// The namespace for `snaps`, oldest first (as [`crate::repo::Repository::snapshots`] lists them).
pub fn layout(snaps: &[(SnapshotId, Snapshot)]) -> Layout {
    let mut l = Layout::default();
    let mut names: HashMap<String, Unique> = HashMap::new();
    let mut add = |l: &mut Layout, dir: &str, base: String, item: Item| -> String {
        let name = names.entry(dir.to_string()).or_default().name(base);
        l.dirs.entry(dir.to_string()).or_default().insert(name.clone(), item);
        name
    };
    for top in ["snapshots", "hosts", "tags", "ids"] {
        add(&mut l, "", top.into(), Item::Dir(top.into()));
        l.dirs.entry(top.into()).or_default();
    }
    let mut latest: BTreeMap<String, String> = BTreeMap::new();
    for (i, (id, s)) in snaps.iter().enumerate() {
        let time = time_name(s);
        let name = add(&mut l, "snapshots", time.clone(), Item::Snap(i));
        latest.insert("snapshots".into(), name);
        let host = format!("hosts/{}", component(&s.host));
        if !l.dirs.contains_key(&host) {
            add(&mut l, "hosts", component(&s.host), Item::Dir(host.clone()));
        }
        let name = add(&mut l, &host, time.clone(), Item::Snap(i));
        latest.insert(host, name);
        for t in &s.tags {
            let tag = format!("tags/{}", component(t));
            if !l.dirs.contains_key(&tag) {
                add(&mut l, "tags", component(t), Item::Dir(tag.clone()));
            }
            add(&mut l, &tag, time.clone(), Item::Snap(i));
        }
        add(&mut l, "ids", id.short(), Item::Snap(i));
    }
    for (dir, target) in latest {
        // A snapshot named `latest` (impossible for a time) would be shadowed; none can be.
        l.dirs
            .entry(dir)
            .or_default()
            .insert("latest".into(), Item::Link(target));
    }
    l
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::tree::Time;

    fn snap(sec: i64, host: &str, tags: &[&str]) -> Snapshot {
        Snapshot {
            time: Time { sec, nsec: 5 },
            host: host.into(),
            user: String::new(),
            paths: vec!["/x".into()],
            tags: tags.iter().map(|t| t.to_string()).collect(),
            tree: Default::default(),
            parent: None,
            btrfs: None,
            summary: Default::default(),
            partial: false,
            program_version: String::new(),
        }
    }

    fn names(l: &Layout, dir: &str) -> Vec<String> {
        l.dirs[dir].keys().cloned().collect()
    }

    #[test]
    fn hosts_tags_ids_latest_and_suffixes() {
        let snaps = vec![
            (SnapshotId([1; 32]), snap(1_700_000_000, "a", &["t"])),
            (SnapshotId([2; 32]), snap(1_700_000_000, "b", &[])),
            (SnapshotId([3; 32]), snap(1_700_000_100, "a/x", &["t", ".."])),
        ];
        let l = layout(&snaps);
        assert_eq!(names(&l, ""), ["hosts", "ids", "snapshots", "tags"]);
        assert_eq!(
            names(&l, "snapshots"),
            [
                "2023-11-14T22:13:20Z",
                "2023-11-14T22:13:20Z-1",
                "2023-11-14T22:15:00Z",
                "latest"
            ]
        );
        assert_eq!(l.dirs["snapshots"]["2023-11-14T22:13:20Z-1"], Item::Snap(1));
        assert_eq!(l.dirs["snapshots"]["latest"], Item::Link("2023-11-14T22:15:00Z".into()));
        assert_eq!(names(&l, "hosts"), ["a", "a_x", "b"]);
        assert_eq!(names(&l, "hosts/a"), ["2023-11-14T22:13:20Z", "latest"]);
        assert_eq!(names(&l, "hosts/b"), ["2023-11-14T22:13:20Z", "latest"]);
        assert_eq!(names(&l, "tags"), ["_", "t"]);
        assert_eq!(names(&l, "tags/t"), ["2023-11-14T22:13:20Z", "2023-11-14T22:15:00Z"]);
        assert_eq!(names(&l, "ids"), ["01010101", "02020202", "03030303"]);
        assert_eq!(l.dirs["ids"]["03030303"], Item::Snap(2));
    }

    #[test]
    fn an_empty_repository_has_the_four_directories() {
        let l = layout(&[]);
        assert_eq!(names(&l, ""), ["hosts", "ids", "snapshots", "tags"]);
        assert!(l.dirs["snapshots"].is_empty());
    }
}
