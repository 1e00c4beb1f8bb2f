//! `prune`: delete the data no snapshot needs (`forget` removes the snapshots first):
//!
//! 1. read every index file and mark, by walking every snapshot's trees, each blob in use;
//! 2. packs with no used blob are deleted; packs with some unused bytes are repacked (their
//!    used blobs copied, verified, into new packs) while the unused bytes left in the
//!    repository exceed `--max-unused` percent of the used ones;
//! 3. write order keeps every state consistent: new packs → new index files (covering every
//!    kept and new pack) → durability barrier → delete the old index files → barrier →
//!    delete the dropped packs. After a crash at any point every index file present lists
//!    only packs that exist; packs left without an index are deleted by the next prune.
//!
//! Prune runs under the exclusive lock, so no backup adds packs meanwhile. If any snapshot
//! refers to a blob that is in no index, prune stops before deleting anything.

//!
//! The work is split along that seam: [`plan::plan`] decides (and is all a dry run does;
//! stats and cost reuse its usage figures), [`execute::execute`] writes and deletes.

mod execute;
pub mod plan;

use crate::error::Result;
use crate::repo::Repository;

#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// Unused bytes tolerated in kept packs, in percent of the used bytes.
    pub max_unused_percent: f64,
    pub dry_run: bool,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            max_unused_percent: 5.0,
            dry_run: false,
        }
    }
}

#[derive(Debug, Default, serde::Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub snapshots: usize,
    pub blobs_used: u64,
    pub blobs_unused: u64,
    /// Stored bytes of used and unused blobs before pruning.
    pub bytes_used: u64,
    pub bytes_unused: u64,
    pub packs_kept: usize,
    pub packs_deleted: usize,
    pub packs_repacked: usize,
    pub packs_written: usize,
    pub unreferenced_packs_deleted: usize,
    pub bytes_repacked: u64,
    /// Stored blob bytes removed (deleted and repacked packs, minus what repacking wrote).
    pub bytes_freed: u64,
    /// Unused bytes left in kept packs.
    pub bytes_unused_after: u64,
    pub index_files_removed: usize,
    pub index_files_written: usize,
    /// Partly written packs a killed backup or prune left in a local repository's `.tmp/`.
    pub temp_packs_removed: usize,
}

/// `pbak prune`: [`prune`] under the exclusive lock.
pub fn run(repo: &Repository, opts: &PruneOptions, log: &(dyn Fn(&str) + Sync)) -> Result<PruneReport> {
    let _lock = repo.lock(true, "prune")?;
    prune(repo, opts, log)
}

/// Prune `repo`: plan, then (unless a dry run) execute. The caller holds the exclusive lock
/// (`forget --prune` holds forget's).
pub fn prune(repo: &Repository, opts: &PruneOptions, log: &(dyn Fn(&str) + Sync)) -> Result<PruneReport> {
    let plan = plan::plan(repo, opts, log)?;
    if opts.dry_run {
        return Ok(plan.report);
    }
    execute::execute(repo, plan, log)
}
