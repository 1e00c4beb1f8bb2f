//! `prune`: delete the data no snapshot needs (`forget` removes the snapshots first), in two
//! phases, so that backups on other hosts need no locks (docs/FORMAT.md, "Two-phase prune"):
//!
//! 1. read every index file (live and marked packs) and mark, by walking every snapshot's
//!    trees, each blob in use;
//! 2. decide per pack: a live pack with no used blob, a repacked pack (its used blobs copied,
//!    verified, into new packs while the unused bytes exceed `--max-unused`) and a stored
//!    pack that no index lists are **marked** with the time and `delete_after` = now + grace;
//!    a marked pack is **deleted** once its `delete_after` has passed if it is still unneeded,
//!    and **brought back** (listed live again) if a snapshot written since needs it. With a
//!    zero grace period (`--delete-after 0s`) unneeded packs are deleted in the same run;
//! 3. write order keeps every state consistent: new packs → new index files (every live pack
//!    and every mark, once) → durability barrier → delete the old index files → barrier →
//!    delete the packs whose time came. After a crash at any point every index file present
//!    lists only packs that exist, or marks of packs that may be gone.
//!
//! Backups never deduplicate against a marked pack, and check before writing their snapshot
//! that nothing they refer to was deleted meanwhile (`ops::backup::commit`). Two prunes at
//! once are kept apart by the prune marker object ([`crate::repo::marker`]). If any snapshot
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
    /// The grace period between marking a pack and deleting it (zero: delete at once).
    pub delete_after: chrono::Duration,
}

/// The default grace period: a backup that started before a prune has this long to write
/// its snapshot (docs/FORMAT.md states the one timing assumption).
pub const DEFAULT_DELETE_AFTER_HOURS: i64 = 24;

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            max_unused_percent: 5.0,
            dry_run: false,
            delete_after: chrono::Duration::hours(DEFAULT_DELETE_AFTER_HOURS),
        }
    }
}

/// Parse a grace period: `0s`, `90m`, `36h`, `7d`, `1w2d`, ... (seconds, minutes, hours,
/// days, weeks; at most 10 years).
pub fn parse_grace(s: &str) -> std::result::Result<chrono::Duration, String> {
    let bad = || format!("bad duration {s:?}: expected e.g. 24h, 90m, 7d or 0s");
    let (mut total, mut num) = (0i64, String::new());
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(bad()),
        };
        let n: i64 = num.parse().map_err(|_| bad())?;
        total = n.checked_mul(unit).and_then(|v| total.checked_add(v)).ok_or_else(bad)?;
        num.clear();
    }
    if !num.is_empty() || s.is_empty() || total > 10 * 365 * 86_400 {
        return Err(bad());
    }
    Ok(chrono::Duration::seconds(total))
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
    /// Live packs after this run (brought-back ones included, new ones not).
    pub packs_kept: usize,
    /// Packs deleted in this run.
    pub packs_deleted: usize,
    /// Live packs no snapshot needs, marked in this run (deleted by a prune after the grace
    /// period).
    pub packs_marked: usize,
    /// Marked packs whose grace period has not passed yet.
    pub packs_marked_kept: usize,
    /// Marked packs that a snapshot needs again, listed live again.
    pub packs_brought_back: usize,
    pub packs_repacked: usize,
    pub packs_written: usize,
    pub unreferenced_packs_deleted: usize,
    /// Stored packs that no index lists, marked in this run.
    pub unreferenced_packs_marked: usize,
    pub bytes_repacked: u64,
    /// Stored blob bytes removed in this run (deleted packs; with a zero grace period also
    /// the repacked ones, minus what repacking wrote).
    pub bytes_freed: u64,
    /// Stored blob bytes marked in this run: freed by a later prune.
    pub bytes_marked: u64,
    /// The `delete_after` of the marks written in this run (UTC seconds).
    pub delete_after: i64,
    /// Unused bytes left in kept packs.
    pub bytes_unused_after: u64,
    pub index_files_removed: usize,
    pub index_files_written: usize,
    /// Partly written packs a killed backup or prune left in a local repository's `.tmp/`.
    pub temp_packs_removed: usize,
    /// Run records older than a week folded into one object.
    pub run_files_compacted: usize,
    /// Stored blob bytes of the indexed packs after this run (0 on a dry run).
    pub stored_bytes_after: u64,
}

/// `pbak prune`: plan, then (unless a dry run) execute, under the prune marker (a dry run
/// takes none: it writes nothing).
pub fn run(repo: &Repository, opts: &PruneOptions, log: &(dyn Fn(&str) + Sync)) -> Result<PruneReport> {
    repo.require_writable_format()?;
    let marker = match opts.dry_run {
        true => None,
        false => {
            repo.require_delete_right("prune")?;
            Some(repo.take_prune_marker()?)
        }
    };
    let plan = plan::plan(repo, opts, log)?;
    let now = plan.now;
    let stored: u64 = plan.usage.iter().map(|u| u.total).sum();
    match marker {
        None => Ok(plan.report),
        Some(m) => {
            let mut rep = execute::execute(repo, plan, &m, log)?;
            rep.stored_bytes_after = stored.saturating_sub(rep.bytes_freed);
            // Run records older than a week are folded into one object (`repo::runs`).
            rep.run_files_compacted = repo.compact_runs(now)?;
            Ok(rep)
        }
    }
}
