//! Command-line interface. Each handler parses, calls the library, prints; anything longer
//! belongs in `pbak::repo`. Errors end as one line on stderr and exit code 1; a backup that
//! could not read some files exits 3.

mod args;
mod output;
mod password;

use anyhow::{Context, Result};
use args::{Cli, Command, KeyCommand};
use clap::Parser;
use pbak::backends::{Backend, BackendOptions, Location};
use pbak::format::keyfile::KdfParams;
use pbak::jobs::{local_snapshots, snapshot_backup};
use pbak::ops::backup::{self as archiver, BackupOptions, Progress, Source};
use pbak::ops::forget::retention::{parse_duration, KeepRules};
use pbak::ops::restore::{self as restorer, RestoreOptions};
use pbak::ops::{check, forget, prune};
use pbak::repo::Repository;

pub const EXIT_PARTIAL: i32 = 3;

pub fn main() -> i32 {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            // Our library errors already say what and what to do: print them alone.
            match e.downcast_ref::<pbak::Error>() {
                Some(pe) => eprintln!("pbak: {pe}"),
                None => eprintln!("pbak: {e:#}"),
            }
            1
        }
    }
}

fn location(cli: &Cli) -> Result<Location> {
    let r = cli
        .repo
        .as_deref()
        .context("no repository given: use -r/--repo or set PBAK_REPOSITORY")?;
    Ok(Location::parse(r)?)
}

/// The backend this run opened, for `--ops`.
static OPENED: std::sync::OnceLock<Backend> = std::sync::OnceLock::new();

fn open_backend(cli: &Cli, create: bool) -> Result<Backend> {
    let kib = |v: Option<u64>| v.map(|k| k.saturating_mul(1024));
    let opts = BackendOptions {
        connections: cli.connections as usize,
        limit_upload: kib(cli.limit_upload),
        limit_download: kib(cli.limit_download),
        timeout: std::time::Duration::from_secs(cli.timeout),
    };
    let b = Backend::open_with(&location(cli)?, create, &opts)?;
    let _ = OPENED.set(b.clone());
    Ok(b)
}

fn open_repo(cli: &Cli) -> Result<Repository> {
    open_repo_cached(cli, !cli.no_cache)
}

fn open_repo_cached(cli: &Cli, cache: bool) -> Result<Repository> {
    let backend = open_backend(cli, false)?;
    let pw = password::get(cli, "repository password")?;
    let repo = Repository::open(backend, &pw)?;
    Ok(repo.with_cache(cache.then(pbak::repo::cache::default_root).flatten()))
}

fn kdf(mem_mib: Option<u32>, iterations: Option<u32>) -> KdfParams {
    let d = KdfParams::default();
    KdfParams {
        m_cost_kib: mem_mib.map(|m| m * 1024).unwrap_or(d.m_cost_kib),
        t_cost: iterations.unwrap_or(d.t_cost),
        p_cost: d.p_cost,
    }
}

fn run(cli: &Cli) -> Result<i32> {
    if let Some(f) = &cli.env_file {
        password::load_env_file(f)?;
    }
    let code = command(cli);
    if cli.ops {
        if let Some(b) = OPENED.get() {
            eprintln!("{}", serde_json::json!({ "backend": b.counts() }));
        }
    }
    code
}

fn command(cli: &Cli) -> Result<i32> {
    match &cli.command {
        Command::Init {
            kdf_memory_mib,
            kdf_iterations,
            pack_size_mib,
        } => {
            let backend = open_backend(cli, true)?;
            let pw = password::get_new(cli)?;
            let mut config = pbak::format::config::Config::new();
            if let Some(m) = pack_size_mib {
                config.pack_size = m << 20;
            }
            let repo = Repository::init(backend, &pw, kdf(*kdf_memory_mib, *kdf_iterations), config)?;
            output::init(cli, &repo);
            Ok(0)
        }
        Command::Backup(b) => backup(cli, b),
        Command::SnapshotBackup(a) => snapshot_backup(cli, a),
        Command::Btrfs(c) => btrfs_cmd(cli, c),
        Command::Snapshots { host, path, tag } => {
            let repo = open_repo(cli)?;
            let snaps: Vec<_> = repo
                .snapshots()?
                .into_iter()
                .filter(|(_, s)| host.as_ref().is_none_or(|h| &s.host == h))
                .filter(|(_, s)| path.as_ref().is_none_or(|p| s.paths.iter().any(|sp| sp == p)))
                .filter(|(_, s)| tag.iter().all(|t| s.tags.contains(t)))
                .collect();
            output::snapshots(cli, &snaps);
            Ok(0)
        }
        Command::Ls { snapshot, path, long } => {
            let repo = open_repo(cli)?;
            let index = repo.load_index()?;
            let (id, snap) = repo.find_snapshot(snapshot)?;
            output::ls(cli, &repo, &index, &id, &snap, path.as_deref().unwrap_or(""), *long)?;
            Ok(0)
        }
        Command::Restore {
            snapshot,
            target,
            include,
            exclude,
            verify,
        } => {
            let (spec, sub) = snapshot.split_once(':').unwrap_or((snapshot.as_str(), ""));
            let repo = open_repo(cli)?;
            let _lock = repo.lock(false, "restore")?;
            let index = repo.load_index()?;
            let (id, snap) = repo.find_snapshot(spec)?;
            let opts = RestoreOptions {
                target: target.clone(),
                subpath: sub.to_string(),
                includes: include.clone(),
                excludes: exclude.clone(),
                verify: *verify,
            };
            let total = snap.summary.total_bytes;
            let done = std::sync::atomic::AtomicU64::new(0);
            let sum = output::with_bytes_bar(cli, total, &done, || {
                restorer::restore(&repo, &index, &snap, &opts, &done)
            })?;
            output::restored(cli, &id, &sum);
            Ok(0)
        }
        Command::Check { read_data } => {
            // Check what the repository holds, never the cache's copies.
            let repo = open_repo_cached(cli, false)?;
            let _lock = repo.lock(false, "check")?;
            let index = repo.load_index()?;
            let rep = check::check(&repo, &index, *read_data)?;
            output::check(cli, &rep);
            Ok(if rep.errors.is_empty() { 0 } else { 1 })
        }
        Command::Forget(f) => forget(cli, f),
        Command::Prune(p) => {
            let repo = open_repo(cli)?;
            let _lock = repo.lock(true, "prune")?;
            prune(cli, &repo, p)
        }
        Command::Unlock { remove_all } => {
            let repo = open_repo(cli)?;
            let n = repo.unlock(*remove_all)?;
            if cli.json {
                println!("{}", serde_json::json!({ "locks_removed": n }));
            } else {
                println!("removed {n} lock(s)");
            }
            Ok(0)
        }
        Command::Key(k) => key(cli, k),
        Command::Cat { kind, id } => {
            let repo = open_repo(cli)?;
            output::cat(&repo, kind, id.as_deref())?;
            Ok(0)
        }
    }
}

fn read_exclude_files(files: &[std::path::PathBuf]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).with_context(|| format!("cannot read exclude file {}", f.display()))?;
        out.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from),
        );
    }
    Ok(out)
}

fn backup_options(cli: &Cli, c: &args::BackupCommon) -> Result<BackupOptions> {
    let mut excludes = c.exclude.clone();
    excludes.extend(read_exclude_files(&c.exclude_file)?);
    Ok(BackupOptions {
        tags: c.tag.clone(),
        host: c.host.clone().unwrap_or_else(|| pbak::host::host_user().0),
        excludes,
        one_file_system: c.one_file_system,
        exclude_caches: c.exclude_caches,
        dry_run: c.dry_run,
        connections: cli.connections as usize,
        ..Default::default()
    })
}

fn keep_rules(k: &args::KeepArgs) -> Result<KeepRules> {
    Ok(KeepRules {
        last: k.keep_last,
        hourly: k.keep_hourly,
        daily: k.keep_daily,
        weekly: k.keep_weekly,
        monthly: k.keep_monthly,
        yearly: k.keep_yearly,
        within: k
            .keep_within
            .as_deref()
            .map(parse_duration)
            .transpose()
            .map_err(anyhow::Error::msg)?,
    })
}

fn backup(cli: &Cli, b: &args::BackupArgs) -> Result<i32> {
    let repo = open_repo(cli)?;
    let _lock = repo.lock(false, "backup")?;
    let index = repo.load_index()?;
    let mut opts = backup_options(cli, &b.common)?;
    opts.sources = b
        .paths
        .iter()
        .map(|p| Source {
            recorded: p.clone(),
            read: p.clone(),
        })
        .collect();
    opts.parent = match &b.parent {
        Some(p) => Some(repo.find_snapshot(p)?.0),
        None => None,
    };
    let progress = Progress::default();
    let res = output::with_backup_bar(cli, &progress, || archiver::backup(&repo, &index, &opts, &progress))?;
    output::backup_done(cli, &res, repo.backend().counts());
    Ok(if res.snapshot.partial { EXIT_PARTIAL } else { 0 })
}

/// Each subvolume on its own: a failure is reported and the others still run.
fn snapshot_backup(cli: &Cli, a: &args::SnapshotBackupArgs) -> Result<i32> {
    let repo = open_repo(cli)?;
    let _lock = repo.lock(false, "snapshot-backup")?;
    let template = backup_options(cli, &a.common)?;
    let keep = keep_rules(&a.keep)?;
    let mut code = 0;
    for sv in &a.subvolumes {
        // Reload: the previous subvolume's packs are now indexed.
        let index = repo.load_index()?;
        let opts = snapshot_backup::SnapshotBackupOptions {
            subvolume: sv.clone(),
            snapshot_dir: a.snapshot_dir.clone(),
            backup: template.clone(),
            keep: keep.clone(),
            full_scan: a.full_scan,
        };
        let progress = Progress::default();
        match output::with_backup_bar(cli, &progress, || snapshot_backup::run(&repo, &index, &opts, &progress)) {
            Ok(r) => {
                if !cli.json {
                    println!("{}: read from snapshot {}", sv.display(), r.local_snapshot.display());
                    for p in &r.pruned {
                        println!("deleted local snapshot {}", p.display());
                    }
                    if let Some(why) = &r.fallback {
                        println!("change detection: full metadata scan, because {why}");
                    }
                }
                let extra = r
                    .fallback
                    .as_ref()
                    .map(|w| ("change_detection_fallback", w.as_str().into()));
                output::backup_done_with(cli, &r.backup, repo.backend().counts(), extra);
                if r.backup.snapshot.partial && code == 0 {
                    code = EXIT_PARTIAL;
                }
            }
            Err(e) => {
                eprintln!("pbak: {}: {e}", sv.display());
                code = 1;
            }
        }
    }
    Ok(code)
}

fn btrfs_cmd(cli: &Cli, c: &args::BtrfsCommand) -> Result<i32> {
    match c {
        args::BtrfsCommand::List {
            subvolume,
            snapshot_dir,
        } => {
            let dir = local_snapshots::snapshot_dir(subvolume, snapshot_dir.as_deref());
            for s in local_snapshots::list_local(subvolume, &dir)? {
                println!("{}  {}", s.time.format("%Y-%m-%d %H:%M:%S"), s.path.display());
            }
            Ok(0)
        }
        args::BtrfsCommand::Prune {
            subvolume,
            snapshot_dir,
            keep,
            dry_run,
        } => {
            let rules = keep_rules(keep)?;
            if rules.is_empty() {
                anyhow::bail!("no --keep-* rule given: refusing to delete every local snapshot");
            }
            let repo = open_repo(cli)?;
            let protected = local_snapshots::protected_snapshot(&repo, subvolume)?;
            let dir = local_snapshots::snapshot_dir(subvolume, snapshot_dir.as_deref());
            let local = local_snapshots::list_local(subvolume, &dir)?;
            for s in local_snapshots::plan_prune(&local, &rules, protected.as_deref()) {
                if *dry_run {
                    println!("would delete {}", s.path.display());
                } else {
                    pbak::btrfs::delete_subvolume(&s.path)?;
                    println!("deleted {}", s.path.display());
                }
            }
            Ok(0)
        }
        args::BtrfsCommand::Doctor { paths, preset } => {
            let reports = pbak::btrfs::doctor::doctor(paths, preset.as_deref())?;
            output::doctor(cli, &reports);
            Ok(if reports.iter().all(|r| r.ok()) { 0 } else { 1 })
        }
    }
}

fn forget(cli: &Cli, f: &args::ForgetArgs) -> Result<i32> {
    let rules = keep_rules(&f.keep)?;
    if rules.is_empty() && f.snapshots.is_empty() {
        anyhow::bail!("nothing to forget: give snapshot ids or --keep-* rules (no rule would remove every snapshot)");
    }
    let by = forget::GroupBy::parse(&f.group_by)?;
    let repo = open_repo(cli)?;
    let _lock = repo.lock(true, "forget")?;
    let mut explicit = Vec::new();
    for spec in &f.snapshots {
        explicit.push(repo.find_snapshot(spec)?.0);
    }
    let snaps: Vec<_> = repo
        .snapshots()?
        .into_iter()
        .filter(|(_, s)| f.host.as_ref().is_none_or(|h| &s.host == h))
        .filter(|(_, s)| f.tag.iter().all(|t| s.tags.contains(t)))
        .collect();
    let mut groups = forget::plan_forget(snaps, &rules, by);
    // Empty rules keep everything, so ids given alone remove just those; with rules, both apply.
    for g in &mut groups {
        for (id, _, keep) in &mut g.snapshots {
            if explicit.contains(id) {
                *keep = false;
            }
        }
    }
    output::forget_plan(cli, &groups, f.prune_opts.dry_run);
    if !f.prune_opts.dry_run {
        for g in &groups {
            for (id, _, keep) in &g.snapshots {
                if !keep {
                    forget::delete_snapshot(&repo, id)?;
                }
            }
        }
        repo.backend().barrier()?;
    }
    if f.prune {
        return prune(cli, &repo, &f.prune_opts);
    }
    Ok(0)
}

fn prune(cli: &Cli, repo: &Repository, p: &args::PruneArgs) -> Result<i32> {
    let opts = prune::PruneOptions {
        max_unused_percent: p.max_unused,
        dry_run: p.dry_run,
    };
    let quiet = cli.quiet || cli.json;
    let rep = prune::prune(repo, &opts, &|msg| {
        if !quiet {
            eprintln!("{msg}");
        }
    })?;
    output::pruned(cli, &rep);
    Ok(0)
}

fn key(cli: &Cli, k: &KeyCommand) -> Result<i32> {
    let repo = open_repo(cli)?;
    match k {
        KeyCommand::List => output::keys(cli, &repo, &repo.list_keys()?),
        KeyCommand::Add {
            kdf_memory_mib,
            kdf_iterations,
        } => {
            let pw = password::get_new_key(cli)?;
            let id = repo.add_key(&pw, kdf(*kdf_memory_mib, *kdf_iterations))?;
            println!("added key {}", id.short());
        }
        KeyCommand::Remove { id } => {
            let id = repo.find_key(id)?;
            if id == repo.key_id() {
                anyhow::bail!(
                    "refusing to remove the key you are using ({}); open with another key first",
                    id.short()
                );
            }
            repo.remove_key(&id)?;
            println!("removed key {}", id.short());
        }
        KeyCommand::Passwd => {
            let pw = password::get_new_key(cli)?;
            let id = repo.add_key(&pw, KdfParams::default())?;
            repo.remove_key(&repo.key_id())?;
            println!(
                "password changed: key {} replaces {}",
                id.short(),
                repo.key_id().short()
            );
        }
    }
    Ok(0)
}
