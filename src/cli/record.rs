//! This process's run record (docs/FORMAT.md §8.4): the commands that change or verify the
//! repository — backup, snapshot-backup, forget, prune, check, restore — store what they did
//! in `runs/` after the command ran, whether it succeeded or not, so that `cost` and
//! `status` on any host see the fleet. Dry runs record nothing. A record that cannot be
//! stored (a read-only key or mount) is one warning line; it never changes the exit code.

use crate::cli::args::{Cli, Command};
use pbak::format::run::{Ops, RunRecord};
use pbak::repo::runs::RunWriter;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

static WRITER: OnceLock<RunWriter> = OnceLock::new();
static NOTES: Mutex<Option<RunRecord>> = Mutex::new(None);

/// The repository this run opened (the first one).
pub fn opened(w: RunWriter) {
    let _ = WRITER.set(w);
}

/// Add what the command learned to this run's record.
pub fn note(f: impl FnOnce(&mut RunRecord)) {
    let mut n = NOTES.lock().expect("lock");
    f(n.get_or_insert_with(RunRecord::default));
}

/// The name recorded for this command, or `None` if it records nothing.
fn recorded(cmd: &Command) -> Option<&'static str> {
    match cmd {
        Command::Backup(a) if !a.common.dry_run => Some("backup"),
        Command::SnapshotBackup(a) if !a.common.dry_run => Some("snapshot-backup"),
        Command::Forget(a) if !a.prune_opts.dry_run => Some("forget"),
        Command::Prune(a) if !a.dry_run => Some("prune"),
        Command::Check(_) => Some("check"),
        Command::Restore(a) if !a.dry_run => Some("restore"),
        _ => None,
    }
}

/// Store the record of the command that just ended with `code` (or `error`). Its operation
/// counts include the record's own upload, so they equal what the server received.
pub fn finish(cli: &Cli, start: Instant, code: i32, error: Option<String>, ops: Option<Ops>) {
    let (Some(command), Some(w)) = (recorded(&cli.command), WRITER.get()) else {
        return;
    };
    let mut rec = NOTES.lock().expect("lock").take().unwrap_or_default();
    rec.time = chrono::Utc::now().timestamp();
    rec.host = pbak::host::host_user().0;
    rec.command = command.to_string();
    rec.exit_code = code;
    rec.error = error;
    rec.duration_ms = start.elapsed().as_millis() as u64;
    rec.count = 1;
    // Exit 1 of check means warnings, and 3 a backup that skipped unreadable files: both
    // ran; a failure is an error exit.
    rec.failures = match (command, code) {
        (_, 0) | ("check", 1) | (_, 3) => 0,
        _ => 1,
    };
    if let Some(mut ops) = ops {
        ops.class_a += 1;
        rec.ops = ops;
    }
    if let Err(e) = w.save(&rec) {
        if !cli.quiet {
            eprintln!("pbak: warning: this run could not be recorded in the repository ({e})");
        }
    }
}
