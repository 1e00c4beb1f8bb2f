//! Run records in the repository (`runs/`, docs/FORMAT.md §8.4): every host appends one small
//! object per run; prune folds the ones older than a week into one object per compaction,
//! summed per UTC day, host and command, so the history stays small (a few hundred bytes per
//! host and command a day) and `cost` and `status` read a handful of objects.

use super::Repository;
use crate::backends::Backend;
use crate::error::{Error, Result};
use crate::format::crypto::{Kind, MasterKey};
use crate::format::layout;
use crate::format::run::{RunFile, RunRecord};
use std::collections::{BTreeMap, HashSet};

/// Records older than this are folded by prune.
pub const COMPACT_AFTER_SECS: i64 = 7 * 86_400;
/// Folded records older than this are dropped (cost projects from two years at most).
pub const KEEP_SECS: i64 = 800 * 86_400;

/// What a process needs to store its run record after the command ran (success or not).
#[derive(Clone)]
pub struct RunWriter {
    backend: Backend,
    key: MasterKey,
}

impl RunWriter {
    /// Store `rec` as a new `runs/` object.
    pub fn save(&self, rec: &RunRecord) -> Result<()> {
        let file = RunFile {
            records: vec![rec.clone()],
            replaces: Vec::new(),
        };
        save_file(&self.backend, &self.key, &file).map(|_| ())
    }
}

/// `runs/<time>-<hex BLAKE3 of the sealed bytes>`: the time (Unix seconds of its newest
/// record, ten digits) lets prune pick the files to fold from the listing alone.
fn save_file(backend: &Backend, key: &MasterKey, f: &RunFile) -> Result<String> {
    let sealed = key.seal_as(Kind::Run, &f.encode());
    let time = f.records.iter().map(|r| r.time).max().unwrap_or(0).max(0);
    let name = format!("{time:010}-{}", hex::encode(blake3::hash(&sealed).as_bytes()));
    backend.put(&layout::in_dir(layout::RUNS, &name), sealed)?;
    Ok(name)
}

/// The `runs/` objects read: by name, what each holds.
pub struct RunFiles {
    pub files: Vec<(String, RunFile)>,
}

impl RunFiles {
    /// Every record, oldest first, without those a later compaction replaced.
    pub fn records(&self) -> Vec<RunRecord> {
        let replaced: HashSet<&str> = self
            .files
            .iter()
            .flat_map(|(_, f)| f.replaces.iter().map(String::as_str))
            .collect();
        let mut out: Vec<RunRecord> = self
            .files
            .iter()
            .filter(|(n, _)| !replaced.contains(n.as_str()))
            .flat_map(|(_, f)| f.records.iter().cloned())
            .collect();
        out.sort_by_key(|r| r.time);
        out
    }
}

impl Repository {
    pub fn run_writer(&self) -> RunWriter {
        RunWriter {
            backend: self.backend.clone(),
            key: self.key.clone(),
        }
    }

    /// Read every run file (through the cache: they never change). One that does not
    /// authenticate or decode is skipped with a warning: records are bookkeeping, not data.
    pub fn run_files(&self) -> Result<RunFiles> {
        self.read_run_files(self.backend.list(layout::RUNS)?)
    }

    fn read_run_files(&self, names: Vec<String>) -> Result<RunFiles> {
        let mut files = Vec::new();
        for name in names {
            let path = layout::in_dir(layout::RUNS, &name);
            let Some((_, id)) = parse_name(&name) else {
                eprintln!("pbak: warning: skipping {path}: its name is not <time>-<id>");
                continue;
            };
            let read = self
                .get_verified(Kind::Run, &path, &id)
                .and_then(|plain| RunFile::decode(&plain).map_err(|e| Error::corrupt(&path, e)));
            match read {
                Ok(f) => files.push((name, f)),
                Err(e) if matches!(e, Error::Backend(_)) => return Err(e),
                Err(e) => eprintln!("pbak: warning: skipping a run record: {e}"),
            }
        }
        Ok(RunFiles { files })
    }

    /// Fold the run files whose records all ended before `now - COMPACT_AFTER_SECS` into one
    /// (summed per UTC day, host and command; older than [`KEEP_SECS`] dropped), then delete
    /// them. The new file names those it replaces, so a crash before the deletes double
    /// counts nothing. Returns how many files were folded.
    pub fn compact_runs(&self, now: i64) -> Result<usize> {
        // Chosen by the time in their names: only the files to fold are read.
        let cutoff = now - COMPACT_AFTER_SECS;
        let mut names = self.backend.list(layout::RUNS)?;
        names.retain(|n| parse_name(n).is_some_and(|(t, _)| t < cutoff));
        if names.len() < 2 {
            return Ok(0);
        }
        let all = self.read_run_files(names)?;
        let old: Vec<&(String, RunFile)> = all.files.iter().collect();
        if old.len() < 2 {
            return Ok(0);
        }
        let mut days: BTreeMap<(i64, String, String), RunRecord> = BTreeMap::new();
        let replaced: HashSet<&str> = all
            .files
            .iter()
            .flat_map(|(_, f)| f.replaces.iter().map(String::as_str))
            .collect();
        for (name, f) in &old {
            if replaced.contains(name.as_str()) {
                continue;
            }
            for r in f.records.iter().filter(|r| r.time >= now - KEEP_SECS) {
                let key = (r.time.div_euclid(86_400), r.host.clone(), r.command.clone());
                let sum = days.entry(key).or_insert_with(|| RunRecord {
                    host: r.host.clone(),
                    command: r.command.clone(),
                    ..Default::default()
                });
                fold(sum, r);
            }
        }
        let file = RunFile {
            records: days.into_values().collect(),
            replaces: old.iter().map(|(n, _)| n.clone()).collect(),
        };
        save_file(&self.backend, &self.key, &file)?;
        self.backend.barrier()?;
        for (name, _) in &old {
            match self.backend.delete(&layout::in_dir(layout::RUNS, name)) {
                Err(e) if !e.is_not_found() => return Err(e.into()),
                _ => {}
            }
        }
        Ok(old.len())
    }
}

/// The time and id in a run file's name.
fn parse_name(name: &str) -> Option<(i64, [u8; 32])> {
    let (time, id) = name.split_once('-')?;
    let id = hex::decode(id).ok().and_then(|v| <[u8; 32]>::try_from(v).ok())?;
    Some((time.parse().ok()?, id))
}

/// Add run `r` into the day's sum: counts and bytes add up, the rest is the latest run's.
fn fold(sum: &mut RunRecord, r: &RunRecord) {
    sum.count += r.count.max(1);
    sum.failures += r.failures;
    sum.duration_ms += r.duration_ms;
    sum.bytes_added += r.bytes_added;
    sum.bytes_freed += r.bytes_freed;
    sum.ops.add(&r.ops);
    if r.time >= sum.time {
        sum.time = r.time;
        sum.exit_code = r.exit_code;
        sum.error = r.error.clone();
        sum.stored_bytes = r.stored_bytes.or(sum.stored_bytes);
        sum.check_errors = r.check_errors;
        sum.check_warnings = r.check_warnings;
        sum.paths = r.paths.clone();
    }
}
