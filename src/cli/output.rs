//! Output more than one command uses: progress bars (only on a terminal, never with
//! --json/--quiet), byte sizes, a backup's summary, a snapshot as JSON. Each command's own
//! output is in its `cmd/` file.

use super::args::Cli;
use indicatif::{ProgressBar, ProgressStyle};
use pbak::backends::OpCounts;
use pbak::format::snapshot::{ChangeDetection, Snapshot};
use pbak::ids::SnapshotId;
use pbak::ops::backup::{BackupResult, Progress};
use serde_json::json;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

fn bars_wanted(cli: &Cli) -> bool {
    !cli.json && !cli.quiet && std::io::stderr().is_terminal()
}

pub fn human_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", units[u])
    }
}

/// Run `f` with a live bar fed by `tick` until it returns.
fn with_bar<T>(cli: &Cli, style: &str, tick: impl Fn(&ProgressBar) + Sync, f: impl FnOnce() -> T) -> T {
    if !bars_wanted(cli) {
        return f();
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(style)
            .expect("valid template")
            .progress_chars("=> "),
    );
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Relaxed) {
                tick(&bar);
                std::thread::sleep(Duration::from_millis(100));
            }
            bar.finish_and_clear();
        });
        let r = f();
        stop.store(true, Relaxed);
        r
    })
}

pub fn with_backup_bar<T>(cli: &Cli, p: &Progress, f: impl FnOnce() -> T) -> T {
    p.want_totals.store(bars_wanted(cli), Relaxed);
    with_bar(
        cli,
        "[{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
        |bar| {
            bar.set_length(p.total_bytes.load(Relaxed).max(p.bytes_done.load(Relaxed)));
            bar.set_position(p.bytes_done.load(Relaxed));
            bar.set_message(format!(
                "{}/{} files",
                p.files_done.load(Relaxed),
                p.total_files.load(Relaxed)
            ));
        },
        f,
    )
}

pub fn with_bytes_bar<T>(cli: &Cli, total: u64, done: &AtomicU64, f: impl FnOnce() -> T) -> T {
    with_bar(
        cli,
        "[{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        |bar| {
            bar.set_length(total.max(done.load(Relaxed)));
            bar.set_position(done.load(Relaxed));
        },
        f,
    )
}

/// A backup's result: text, or one JSON object with `extra`'s keys added.
pub fn backup_done(cli: &Cli, r: &BackupResult, ops: OpCounts, extra: &[(&str, serde_json::Value)]) {
    crate::cli::record::note(|n| {
        n.snapshots.extend(r.id.map(|i| i.to_hex()));
        n.paths.extend(r.snapshot.paths.iter().cloned());
        n.bytes_added += r.snapshot.summary.bytes_added;
        n.stored_bytes = Some(r.stored_bytes);
    });
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    if cli.json {
        let mut v = backup_json(r, ops);
        for (k, x) in extra {
            v[*k] = x.clone();
        }
        println!("{v}");
    } else {
        backup_text(r, ops);
    }
}

fn backup_json(r: &BackupResult, ops: OpCounts) -> serde_json::Value {
    let s = &r.snapshot.summary;
    json!({
        "snapshot_id": r.id.map(|i| i.to_hex()),
        "parent": r.parent.map(|i| i.to_hex()),
        "dry_run": r.id.is_none(),
        "partial": r.snapshot.partial,
        "files_new": s.files_new,
        "files_changed": s.files_changed,
        "files_unmodified": s.files_unmodified,
        "dirs": s.dirs,
        "total_files": s.total_files,
        "total_bytes": s.total_bytes,
        "bytes_read": s.bytes_read,
        "blobs_added": s.blobs_added,
        "bytes_added": s.bytes_added,
        "duration_seconds": s.duration_ms as f64 / 1000.0,
        "errors": r.warnings,
        "backend": ops,
        "change_detection": s.change_detection,
    })
}

fn backup_text(r: &BackupResult, ops: OpCounts) {
    let s = &r.snapshot.summary;
    println!(
        "files: {} new, {} changed, {} unmodified; {} dirs ({})",
        s.files_new,
        s.files_changed,
        s.files_unmodified,
        s.dirs,
        match s.change_detection {
            ChangeDetection::MetadataScan => "metadata scan",
            ChangeDetection::BtrfsGeneration => "changes from Btrfs generations",
        }
    );
    println!(
        "read {} of {}, added {} in {} blobs, {:.2} s",
        human_bytes(s.bytes_read),
        human_bytes(s.total_bytes),
        human_bytes(s.bytes_added),
        s.blobs_added,
        s.duration_ms as f64 / 1000.0
    );
    println!(
        "backend: {} uploads/deletes (B2 class A), {} downloads/heads (B), {} lists (C); {} up, {} down",
        ops.class_a,
        ops.class_b,
        ops.class_c,
        human_bytes(ops.bytes_up),
        human_bytes(ops.bytes_down)
    );
    match r.id {
        Some(id) if r.snapshot.partial => println!(
            "snapshot {} saved, but {} files could not be read (see warnings)",
            id.short(),
            r.warnings.len()
        ),
        Some(id) => println!("snapshot {} saved", id.short()),
        None => println!("dry run: nothing was stored"),
    }
}

/// A snapshot as `snapshots --json` and `cat snapshot` show it.
pub fn snap_json(id: &SnapshotId, s: &Snapshot) -> serde_json::Value {
    json!({
        "id": id.to_hex(),
        "short_id": id.short(),
        "time": s.datetime().to_rfc3339(),
        "host": s.host,
        "user": s.user,
        "paths": s.paths,
        "tags": s.tags,
        "tree": s.tree.to_hex(),
        "parent": s.parent.map(|p| p.to_hex()),
        "partial": s.partial,
        "btrfs": s.btrfs.as_ref().map(|b| json!({"subvol_uuid": hex::encode(b.subvol_uuid), "generation": b.generation, "snapshot_path": b.snapshot_path, "options_digest": hex::encode(b.options_digest)})),
        "summary": s.summary,
    })
}
