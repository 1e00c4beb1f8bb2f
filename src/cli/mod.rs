//! Command-line interface: parse, open the repository, hand each command to its handler in
//! `cmd/` (which calls one library function and prints). Errors end as one line on stderr
//! and exit code 1 (2 for `check`, whose 1 means warnings); a backup that could not read
//! some files exits 3.

mod args;
mod cmd;
mod config;
mod output;
mod password;
mod record;

use anyhow::{Context, Result};
use args::{Cli, Command};
use clap::{CommandFactory, FromArgMatches};
use pbak::backends::{Backend, BackendOptions, Location};
use pbak::format::keyfile::KdfParams;
use pbak::repo::Repository;

pub const EXIT_PARTIAL: i32 = 3;

pub fn main() -> i32 {
    pbak::host::tune_allocator();
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Err(e) = config::apply(&mut cli, &matches) {
        print_error(&e);
        return 1;
    }
    match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            print_error(&e);
            exit_code(&e)
        }
    }
}

/// 75 for an error that may pass when tried again (network, server, a concurrent prune),
/// else 1.
fn exit_code(e: &anyhow::Error) -> i32 {
    match e.downcast_ref::<pbak::Error>() {
        Some(pe) if pe.is_transient() => pbak::error::EXIT_TRANSIENT,
        _ => 1,
    }
}

/// The one line an error ends a command with.
fn print_error(e: &anyhow::Error) {
    // Our library errors already say what and what to do: print them alone.
    match e.downcast_ref::<pbak::Error>() {
        Some(pe) => eprintln!("pbak: {pe}"),
        None => eprintln!("pbak: {e:#}"),
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
    record::opened(repo.run_writer());
    Ok(repo.with_cache(cache.then(pbak::repo::cache::default_root).flatten()))
}

/// Key derivation parameters from `--kdf-memory-mib` / `--kdf-iterations` (clap bounds both
/// to what a key file may hold, see `args::KdfArgs`), else the defaults.
fn kdf(mem_mib: Option<u32>, iterations: Option<u32>) -> KdfParams {
    let d = KdfParams::default();
    KdfParams {
        m_cost_kib: mem_mib.map(|m| m.saturating_mul(1024)).unwrap_or(d.m_cost_kib),
        t_cost: iterations.unwrap_or(d.t_cost),
        p_cost: d.p_cost,
    }
}

fn run(cli: &Cli) -> Result<i32> {
    // Commands that only read the config file or print need no credentials.
    let offline = matches!(
        cli.command,
        Command::Systemd(_) | Command::Config(_) | Command::Completions(_) | Command::Man(_)
    );
    if let Some(f) = cli.env_file.as_ref().filter(|_| !offline) {
        pbak::secrets::load_env_file(f)?;
    }
    let start = std::time::Instant::now();
    let code = command(cli);
    let counts = || OPENED.get().map(|b| b.counts());
    let ops = counts().map(|c| pbak::format::run::Ops {
        class_a: c.class_a,
        class_b: c.class_b,
        class_c: c.class_c,
        bytes_up: c.bytes_up,
        bytes_down: c.bytes_down,
    });
    match &code {
        Ok(c) => record::finish(cli, start, *c, None, ops),
        Err(e) => {
            let line = match e.downcast_ref::<pbak::Error>() {
                Some(pe) => pe.to_string(),
                None => format!("{e:#}"),
            };
            record::finish(cli, start, exit_code(e), Some(line), ops);
        }
    }
    if cli.ops {
        if let Some(b) = OPENED.get() {
            eprintln!("{}", serde_json::json!({ "backend": b.counts() }));
        }
    }
    code
}

fn command(cli: &Cli) -> Result<i32> {
    match &cli.command {
        Command::Init(a) => cmd::init::run(cli, a),
        Command::Backup(a) => cmd::backup::run(cli, a),
        Command::SnapshotBackup(a) => cmd::snapshot_backup::run(cli, a),
        Command::Btrfs(c) => cmd::btrfs::run(cli, c),
        Command::Run(a) => cmd::run::run(cli, a),
        Command::Snapshots(a) => cmd::snapshots::run(cli, a),
        Command::Stats(a) => cmd::stats::run(cli, a),
        Command::Cost(a) => cmd::cost::run(cli, a),
        Command::Diff(a) => cmd::diff::run(cli, a),
        Command::Dump(a) => cmd::dump::run(cli, a),
        Command::Mount(a) => cmd::mount::run(cli, a),
        Command::Find(a) => cmd::find::run(cli, a),
        Command::Status(a) => cmd::status::run(cli, a),
        Command::Ls(a) => cmd::ls::run(cli, a),
        Command::Restore(a) => cmd::restore::run(cli, a),
        Command::Check(a) => cmd::check::run(cli, a),
        Command::Forget(a) => cmd::forget::run(cli, a),
        Command::Prune(a) => cmd::prune::run(cli, a),
        Command::Repair(c) => cmd::repair::run(cli, c),
        Command::Unlock(a) => cmd::unlock::run(cli, a),
        Command::Migrate => cmd::unlock::migrate(cli),
        Command::Key(c) => cmd::key::run(cli, c),
        Command::Cat(a) => cmd::cat::run(cli, a),
        Command::Systemd(a) => cmd::systemd::run(cli, a),
        Command::Config(c) => cmd::config::run(cli, c),
        Command::Completions(a) => cmd::completions::completions(a),
        Command::Man(a) => cmd::completions::man(a),
    }
}
