//! `snapshots`: the repository's snapshots a filter selects, oldest first.

use crate::error::Result;
use crate::format::snapshot::Snapshot;
use crate::ids::SnapshotId;
use crate::repo::filter::SnapshotFilter;
use crate::repo::Repository;

pub fn list(repo: &Repository, filter: &SnapshotFilter) -> Result<Vec<(SnapshotId, Snapshot)>> {
    repo.snapshots_matching(filter)
}
