//! Choosing snapshots: by host, paths and tags ([`SnapshotFilter`]), and the
//! `SNAPSHOT[:SUBPATH]` form commands take ([`parse_snapshot_path`]).
//!
//! An empty field matches every snapshot, so `SnapshotFilter::default()` selects all of them;
//! the fields combine with "and".

use super::Repository;
use crate::error::Result;
use crate::format::snapshot::Snapshot;
use crate::ids::SnapshotId;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotFilter {
    /// The snapshot's host is one of these.
    pub hosts: Vec<String>,
    /// Each of these is one of the snapshot's paths (with `exact_paths`: the snapshot's paths
    /// are exactly these, in any order, as a backup's parent must be).
    pub paths: Vec<String>,
    pub exact_paths: bool,
    /// Each of these is one of the snapshot's tags.
    pub tags: Vec<String>,
}

impl SnapshotFilter {
    /// The filter of the commands' `--host`, `--path` and `--tag` flags (at most one host and
    /// one path; every tag must match).
    pub fn of(host: Option<&str>, path: Option<&str>, tags: &[String]) -> SnapshotFilter {
        SnapshotFilter {
            hosts: host.into_iter().map(String::from).collect(),
            paths: path.into_iter().map(String::from).collect(),
            exact_paths: false,
            tags: tags.to_vec(),
        }
    }

    pub fn matches(&self, s: &Snapshot) -> bool {
        let host = self.hosts.is_empty() || self.hosts.contains(&s.host);
        let paths = if self.exact_paths {
            let (mut want, mut have) = (self.paths.clone(), s.paths.clone());
            want.sort();
            have.sort();
            want == have
        } else {
            self.paths.iter().all(|p| s.paths.contains(p))
        };
        host && paths && self.tags.iter().all(|t| s.tags.contains(t))
    }

    /// The snapshots that match, keeping their order.
    pub fn apply(&self, snaps: Vec<(SnapshotId, Snapshot)>) -> Vec<(SnapshotId, Snapshot)> {
        snaps.into_iter().filter(|(_, s)| self.matches(s)).collect()
    }
}

impl Repository {
    /// The snapshots `filter` selects, oldest first.
    pub fn snapshots_matching(&self, filter: &SnapshotFilter) -> Result<Vec<(SnapshotId, Snapshot)>> {
        Ok(filter.apply(self.snapshots()?))
    }
}

/// `latest:/home/a` → (`latest`, `/home/a`); without a colon the subpath is empty (the
/// whole snapshot). Only the first colon separates: paths may hold more.
pub fn parse_snapshot_path(spec: &str) -> (&str, &str) {
    spec.split_once(':').unwrap_or((spec, ""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(host: &str, paths: &[&str], tags: &[&str]) -> Snapshot {
        Snapshot {
            host: host.into(),
            paths: paths.iter().map(|p| p.to_string()).collect(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            time: Default::default(),
            user: String::new(),
            tree: Default::default(),
            parent: None,
            btrfs: None,
            summary: Default::default(),
            partial: false,
            program_version: String::new(),
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn fields_combine_with_and() {
        let s = snap("h", &["/a", "/b"], &["x", "y"]);
        assert!(SnapshotFilter::default().matches(&s));
        let f = |hosts: &[&str], paths: &[&str], tags: &[&str]| SnapshotFilter {
            hosts: strings(hosts),
            paths: strings(paths),
            tags: strings(tags),
            exact_paths: false,
        };
        assert!(f(&["other", "h"], &["/b"], &["y", "x"]).matches(&s));
        assert!(!f(&["other"], &[], &[]).matches(&s));
        assert!(!f(&[], &["/c"], &[]).matches(&s));
        assert!(!f(&[], &[], &["x", "z"]).matches(&s));
        assert!(!f(&["h"], &["/a"], &["z"]).matches(&s));
    }

    #[test]
    fn exact_paths_compare_as_sets() {
        let s = snap("h", &["/b", "/a"], &[]);
        let exact = |paths: &[&str]| SnapshotFilter {
            paths: strings(paths),
            exact_paths: true,
            ..Default::default()
        };
        assert!(exact(&["/a", "/b"]).matches(&s));
        assert!(!exact(&["/a"]).matches(&s));
        assert!(!exact(&[]).matches(&s));
    }

    #[test]
    fn snapshot_path_split_at_the_first_colon() {
        assert_eq!(parse_snapshot_path("latest"), ("latest", ""));
        assert_eq!(parse_snapshot_path("ab12:/home/a:b"), ("ab12", "/home/a:b"));
        assert_eq!(parse_snapshot_path(":x"), ("", "x"));
    }
}
