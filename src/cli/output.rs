//! Human and JSON output, and progress bars (only on a terminal, never with --json/--quiet).

use super::args::Cli;
use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use pbak::format::keyfile::KeyFile;
use pbak::format::snapshot::{ChangeDetection, Snapshot};
use pbak::format::tree::{Node, NodeKind};
use pbak::ids::{KeyId, SnapshotId};
use pbak::ops::backup::{BackupResult, Progress};
use pbak::ops::check::CheckReport;
use pbak::ops::restore::RestoreSummary;
use pbak::repo::index::{Index, IndexFile};
use pbak::repo::Repository;
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

pub fn init(cli: &Cli, repo: &Repository) {
    if cli.json {
        println!(
            "{}",
            json!({"id": repo.config().id.to_hex(), "repository": repo.backend().name()})
        );
    } else {
        println!(
            "created pbak repository {} at {}",
            repo.config().id.short(),
            repo.backend().name()
        );
        println!("keep the password safe: without it the data cannot be read");
    }
}

pub fn backup_done(cli: &Cli, r: &BackupResult, ops: pbak::backends::OpCounts) {
    backup_done_with(cli, r, ops, None)
}

/// [`backup_done`] with one more key in the JSON object.
pub fn backup_done_with(
    cli: &Cli,
    r: &BackupResult,
    ops: pbak::backends::OpCounts,
    extra: Option<(&str, serde_json::Value)>,
) {
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    let s = &r.snapshot.summary;
    if cli.json {
        let mut v = json!({
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
        });
        if let Some((k, x)) = extra {
            v[k] = x;
        }
        println!("{v}");
        return;
    }
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
        Some(id) if r.snapshot.partial => {
            println!(
                "snapshot {} saved, but {} files could not be read (see warnings)",
                id.short(),
                r.warnings.len()
            )
        }
        Some(id) => println!("snapshot {} saved", id.short()),
        None => println!("dry run: nothing was stored"),
    }
}

fn snap_json(id: &SnapshotId, s: &Snapshot) -> serde_json::Value {
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

pub fn snapshots(cli: &Cli, snaps: &[(SnapshotId, Snapshot)]) {
    if cli.json {
        let v: Vec<_> = snaps.iter().map(|(i, s)| snap_json(i, s)).collect();
        println!("{}", serde_json::Value::Array(v));
        return;
    }
    println!("{:<10} {:<20} {:<14} {:<16} Paths", "ID", "Time", "Host", "Tags");
    for (id, s) in snaps {
        let flag = if s.partial { " (partial)" } else { "" };
        println!(
            "{:<10} {:<20} {:<14} {:<16} {}{}",
            id.short(),
            s.datetime().format("%Y-%m-%d %H:%M:%S"),
            s.host,
            s.tags.join(","),
            s.paths.join(" "),
            flag
        );
    }
    println!("{} snapshots", snaps.len());
}

fn kind_char(k: NodeKind) -> char {
    match k {
        NodeKind::File => '-',
        NodeKind::Dir => 'd',
        NodeKind::Symlink => 'l',
        NodeKind::Fifo => 'p',
        NodeKind::CharDev => 'c',
        NodeKind::BlockDev => 'b',
        NodeKind::Socket => 's',
    }
}

fn ls_line(cli: &Cli, path: &str, n: &Node, long: bool) {
    if cli.json {
        println!(
            "{}",
            json!({"path": path, "type": format!("{:?}", n.kind).to_lowercase(), "mode": n.mode, "uid": n.uid, "gid": n.gid,
                   "size": n.size, "mtime": chrono::DateTime::from_timestamp(n.mtime.sec, n.mtime.nsec).map(|d| d.to_rfc3339())})
        );
    } else if long {
        let t = chrono::DateTime::from_timestamp(n.mtime.sec, n.mtime.nsec).unwrap_or_default();
        println!(
            "{}{:04o} {:>6} {:>6} {:>12} {} {}",
            kind_char(n.kind),
            n.mode,
            n.uid,
            n.gid,
            n.size,
            t.format("%Y-%m-%d %H:%M:%S"),
            path
        );
    } else {
        println!("{path}");
    }
}

pub fn ls(
    cli: &Cli,
    repo: &Repository,
    index: &Index,
    id: &SnapshotId,
    snap: &Snapshot,
    sub: &str,
    long: bool,
) -> Result<()> {
    if !cli.json {
        println!(
            "snapshot {} of {} at {}:",
            id.short(),
            snap.paths.join(" "),
            snap.datetime().format("%Y-%m-%d %H:%M:%S")
        );
    }
    let (tree, single) = repo.resolve_path(index, &snap.tree, sub)?;
    let base = format!("/{}", sub.trim_matches('/'));
    if let Some(n) = single.filter(|n| !n.is_dir()) {
        ls_line(cli, &base, &n, long);
        return Ok(());
    }
    let mut stack = vec![(base.trim_end_matches('/').to_string(), tree)];
    while let Some((prefix, id)) = stack.pop() {
        let t = repo.load_tree(index, &id)?;
        for n in t.nodes.iter() {
            let p = format!("{prefix}/{}", String::from_utf8_lossy(&n.name));
            ls_line(cli, &p, n, long);
        }
        for n in t.nodes.iter().rev() {
            if let Some(st) = n.subtree {
                stack.push((format!("{prefix}/{}", String::from_utf8_lossy(&n.name)), st));
            }
        }
    }
    Ok(())
}

pub fn restored(cli: &Cli, id: &SnapshotId, s: &RestoreSummary) {
    for w in &s.warnings {
        eprintln!("warning: {w}");
    }
    if cli.json {
        println!("{}", json!({"snapshot_id": id.to_hex(), "summary": s}));
        return;
    }
    println!(
        "restored snapshot {}: {} files ({} hardlinks), {} dirs, {} symlinks, {} special, {}",
        id.short(),
        s.files,
        s.hardlinks,
        s.dirs,
        s.symlinks,
        s.specials,
        human_bytes(s.bytes)
    );
    if s.verified_files > 0 {
        println!("verified {} files against the snapshot: all match", s.verified_files);
    }
}

pub fn check(cli: &Cli, r: &CheckReport) {
    if cli.json {
        println!("{}", json!(r));
        return;
    }
    println!(
        "{} snapshots, {} trees, {} packs, {} blobs",
        r.snapshots, r.trees, r.packs, r.blobs
    );
    if r.packs_read > 0 {
        println!("read and verified {} packs", r.packs_read);
    }
    if r.unreferenced_packs > 0 {
        println!(
            "{} packs are not indexed (left by an interrupted backup; harmless)",
            r.unreferenced_packs
        );
    }
    for e in &r.errors {
        eprintln!("error: {e}");
    }
    if r.errors.is_empty() {
        println!("no errors found");
    } else {
        eprintln!("{} errors found", r.errors.len());
    }
}

pub fn forget_plan(cli: &Cli, groups: &[pbak::ops::forget::ForgetGroup], dry_run: bool) {
    if cli.json {
        let v: Vec<_> = groups
            .iter()
            .map(|g| {
                let ids = |keep: bool| -> Vec<String> {
                    g.snapshots
                        .iter()
                        .filter(|s| s.2 == keep)
                        .map(|s| s.0.to_hex())
                        .collect()
                };
                json!({"group": g.key, "keep": ids(true), "remove": ids(false), "dry_run": dry_run})
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
        return;
    }
    let verb = if dry_run { "would remove" } else { "remove" };
    for g in groups {
        println!("snapshots of {}:", g.key);
        for (id, s, keep) in &g.snapshots {
            println!(
                "  {:<12} {} {}",
                if *keep { "keep" } else { verb },
                id.short(),
                s.datetime().format("%Y-%m-%d %H:%M:%S")
            );
        }
    }
}

pub fn pruned(cli: &Cli, r: &pbak::ops::prune::PruneReport) {
    if cli.json {
        println!("{}", json!(r));
        return;
    }
    let would = if r.dry_run { "would be " } else { "" };
    println!(
        "{} snapshots; in use: {} blobs, {}; unused: {} blobs, {}",
        r.snapshots,
        r.blobs_used,
        human_bytes(r.bytes_used),
        r.blobs_unused,
        human_bytes(r.bytes_unused)
    );
    println!(
        "packs: {} kept, {} {would}deleted, {} {would}repacked ({} copied), {} unindexed {would}deleted",
        r.packs_kept,
        r.packs_deleted,
        r.packs_repacked,
        human_bytes(r.bytes_repacked),
        r.unreferenced_packs_deleted
    );
    println!(
        "{} {would}freed; {} unused left in kept packs",
        human_bytes(r.bytes_freed),
        human_bytes(r.bytes_unused_after)
    );
    if r.temp_packs_removed > 0 {
        println!(
            "removed {} partly written packs left by interrupted runs",
            r.temp_packs_removed
        );
    }
}

pub fn keys(cli: &Cli, repo: &Repository, keys: &[(KeyId, KeyFile)]) {
    if cli.json {
        let v: Vec<_> = keys
            .iter()
            .map(|(id, k)| json!({"id": id.to_hex(), "current": *id == repo.key_id(), "host": k.host, "user": k.user, "created": k.created}))
            .collect();
        println!("{}", serde_json::Value::Array(v));
        return;
    }
    for (id, k) in keys {
        let cur = if *id == repo.key_id() { "*" } else { " " };
        println!("{cur}{} {} {}@{}", id.short(), k.created, k.user, k.host);
    }
}

pub fn cat(repo: &Repository, kind: &str, id: Option<&str>) -> Result<()> {
    match (kind, id) {
        ("config", _) => println!("{}", serde_json::to_string_pretty(repo.config())?),
        ("snapshot", Some(id)) => {
            let (sid, s) = repo.find_snapshot(id)?;
            println!("{}", serde_json::to_string_pretty(&snap_json(&sid, &s))?);
        }
        ("index", Some(id)) => {
            let sealed = repo.backend().get(&format!("index/{id}"))?;
            let f =
                IndexFile::decode(repo.key(), &sealed).map_err(|e| anyhow::anyhow!("index {id} is corrupt: {e}"))?;
            let v: Vec<_> = f
                .packs
                .iter()
                .map(|p| json!({"pack": p.id.to_hex(), "blobs": p.blobs.iter().map(|b| json!({"id": b.id.to_hex(), "type": format!("{:?}", b.kind), "offset": b.offset, "length": b.length, "raw_length": b.raw_length})).collect::<Vec<_>>()}))
                .collect();
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        ("key", Some(id)) => {
            let k = repo.find_key(id)?;
            println!(
                "{}",
                String::from_utf8_lossy(&repo.backend().get(&format!("keys/{k}"))?)
            );
        }
        ("tree", Some(spec)) => {
            let (snap, sub) = spec.split_once(':').unwrap_or((spec, ""));
            let index = repo.load_index()?;
            let (_, s) = repo.find_snapshot(snap)?;
            let (id, _) = repo.resolve_path(&index, &s.tree, sub)?;
            let tree = repo.load_tree(&index, &id)?;
            println!("{}", json!({"id": id.to_hex(), "tree": tree}));
        }
        _ => bail!("usage: pbak cat config | snapshot ID | index ID | key ID | tree SNAPSHOT[:DIR]"),
    }
    Ok(())
}

pub fn doctor(cli: &Cli, reports: &[pbak::btrfs::doctor::Report]) {
    if cli.json {
        println!("{}", json!(reports));
        return;
    }
    if reports.is_empty() {
        println!("no Btrfs mounts found");
    }
    for r in reports {
        let disk = match r.ssd {
            Some(true) => "SSD",
            Some(false) => "rotational disk",
            None => "unknown disk type",
        };
        println!(
            "{} ({} preset; subvolume {} of {} mounted at {}, {disk})",
            r.path.display(),
            r.preset,
            r.subvolume,
            r.device,
            r.mount_point.display()
        );
        for f in &r.findings {
            match f.ok {
                true => println!("  ok    {}", f.check),
                false => println!("  WARN  {}: {}", f.check, f.message),
            }
        }
    }
}
