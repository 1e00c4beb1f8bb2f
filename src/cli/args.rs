//! The global flags, the list of commands, and the flags several commands share; each
//! command's own flags are in `cmd/<command>.rs`. Names follow restic where the concept is
//! the same.

use super::cmd;
use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use pbak::format::keyfile::{self, KdfParams};
use pbak::ops::forget::retention::{parse_duration, KeepRules};
use pbak::repo::filter::SnapshotFilter;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "pbak",
    version,
    about = "Encrypted, deduplicating backups of Btrfs hosts to local disks, S3 and Backblaze B2"
)]
#[command(
    after_help = "Passwords come from --password-file, PBAK_PASSWORD_FILE, PBAK_PASSWORD_COMMAND or \
PBAK_PASSWORD (in that order), else a prompt on the terminal; never from a flag. \
PBAK_PASSWORD_COMMAND runs with `sh -c` in a clean environment (PATH, HOME, USER, LANG, LC_*, \
TERM, XDG_RUNTIME_DIR, DBUS_SESSION_BUS_ADDRESS, SSH_AUTH_SOCK, GNUPGHOME, OP_* and a few more \
are kept; no PBAK_*, AWS_* or B2_* variable reaches it) and is stopped after 60 s.\n\
Exit codes: 0 ok, 1 error, 75 an error that may pass if tried again (network, server, timeout, a concurrent prune), 3 snapshot written but some files could not be read (restore: restored, but some metadata could not be applied); check: 0 ok, 1 warnings, 2 errors."
)]
pub struct Cli {
    /// Config file: the repository, its secrets, retention, alerts and profiles; flags and
    /// PBAK_* variables override it (default: /etc/pbak/pbak.toml when it exists; docs/config.md)
    #[arg(long, env = "PBAK_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Use this profile of the config file: its connections and limits, and for `run` and
    /// `systemd` everything it says
    #[arg(long, env = "PBAK_PROFILE", global = true, value_name = "NAME")]
    pub profile: Option<String>,
    /// Repository: a path, local:/path, s3:https://ENDPOINT/BUCKET[/PREFIX] or b2:BUCKET[/PREFIX]
    #[arg(short = 'r', long, env = "PBAK_REPOSITORY", global = true)]
    pub repo: Option<String>,
    /// File holding the repository password (must not be readable by group or others)
    #[arg(long, env = "PBAK_PASSWORD_FILE", global = true)]
    pub password_file: Option<PathBuf>,
    /// Read credentials (AWS_*, B2_*) from a KEY=VALUE file (must not be readable by group or others)
    #[arg(long, env = "PBAK_ENV_FILE", global = true)]
    pub env_file: Option<PathBuf>,
    /// Print machine-readable JSON instead of text
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress bar
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Remote operations in flight at once (uploads, downloads, listings); also the number of
    /// concurrent pack uploads (at most 2 to a local disk)
    #[arg(long, env = "PBAK_CONNECTIONS", global = true, default_value_t = pbak::backends::DEFAULT_CONNECTIONS as u32,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub connections: u32,
    /// Limit uploads to this many KiB/s (averaged over whole packs)
    #[arg(long, env = "PBAK_LIMIT_UPLOAD", global = true, value_name = "KiB/s",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub limit_upload: Option<u64>,
    /// Limit downloads to this many KiB/s
    #[arg(long, env = "PBAK_LIMIT_DOWNLOAD", global = true, value_name = "KiB/s",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub limit_download: Option<u64>,
    /// Abandon and retry a remote request after this many seconds (a whole pack upload must fit)
    #[arg(long, env = "PBAK_TIMEOUT", global = true, value_name = "SECS", default_value_t = pbak::backends::DEFAULT_TIMEOUT_SECS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
    /// Do not use or create the local cache of index, snapshot and tree data
    #[arg(long, global = true)]
    pub no_cache: bool,
    /// Print this run's backend operations (B2 classes A/B/C, bytes) as JSON on stderr
    #[arg(long, global = true)]
    pub ops: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a new repository
    Init(cmd::init::InitArgs),
    /// Back up files and directories into a new snapshot
    Backup(cmd::backup::BackupArgs),
    /// Take a read-only Btrfs snapshot of each subvolume, back it up, then expire old local snapshots
    SnapshotBackup(cmd::snapshot_backup::SnapshotBackupArgs),
    /// Manage pbak's local Btrfs snapshots
    #[command(subcommand)]
    Btrfs(cmd::btrfs::BtrfsCommand),
    /// Run a profile of the config file: hooks, a backup per source, forget (and prune and check when due), status; for timers
    Run(cmd::run::RunArgs),
    /// List snapshots
    Snapshots(cmd::snapshots::SnapshotsArgs),
    /// Sizes from the index and trees: restore, deduplicated and stored size, what only each snapshot, host and path holds, what prune would free
    Stats(cmd::stats::StatsArgs),
    /// The monthly cost estimate on B2 (storage, transactions, egress) and its projection; exit 1 at --warn, 2 at --critical
    Cost(cmd::cost::CostArgs),
    /// Are all hosts backed up (--max-age), was the repository checked, what it costs: exit 0 ok, 1 warning, 2 critical
    Status(cmd::status::StatusArgs),
    /// What changed between two snapshots (or SNAP:PATH directories): + added, - removed, M modified, U metadata only, T type changed
    Diff(cmd::diff::DiffArgs),
    /// Where names occur in the snapshots (globs), or which files use a blob or pack (--blob, --pack); exit 1 if none
    Find(cmd::find::FindArgs),
    /// A file to stdout, or a directory as a tar stream (`pbak dump latest home/alice | tar -x`)
    Dump(cmd::dump::DumpArgs),
    /// Mount the repository read-only (FUSE): snapshots/, hosts/, tags/, ids/ and latest links; Ctrl-C unmounts
    Mount(cmd::mount::MountArgs),
    /// List the contents of a snapshot (`latest` or an id prefix)
    Ls(cmd::ls::LsArgs),
    /// Restore a snapshot, or SNAPSHOT:SUBPATH, into a directory
    Restore(cmd::restore::RestoreArgs),
    /// Check the repository's structure, and with --read-data every stored byte
    Check(cmd::check::CheckArgs),
    /// Remove snapshots by keep rules or a policy file (per host and paths) or by id; --prune also frees their data
    Forget(cmd::forget::ForgetArgs),
    /// Mark data no snapshot refers to (repacking partly used packs) and delete what an earlier prune marked, after --delete-after
    Prune(PruneArgs),
    /// Repair a damaged repository: `index` from the packs' headers, `snapshots` marking what is gone
    #[command(subcommand)]
    Repair(cmd::repair::RepairCommand),
    /// Remove a stale prune marker (of a prune gone from this machine, or not refreshed for 30 minutes)
    Unlock(cmd::unlock::UnlockArgs),
    /// Upgrade a format-1 repository to format 2 (lock-free backups, two-phase prune)
    Migrate,
    /// Manage the passwords (keys) that open the repository
    #[command(subcommand)]
    Key(cmd::key::KeyCommand),
    /// Print a decrypted object for debugging: `config`, `snapshot ID`, `index ID`, `key ID`, `tree SNAPSHOT[:DIR]`
    Cat(cmd::cat::CatArgs),
    /// Write systemd units (nightly run, weekly check, monthly cost, local snapshots) for a profile; --install enables them
    Systemd(cmd::systemd::SystemdArgs),
    /// The config file: `check` validates it and lists its profiles
    #[command(subcommand)]
    Config(cmd::config::ConfigCommand),
    /// Shell completions (bash, zsh, fish, elvish, powershell) on stdout
    Completions(cmd::completions::CompletionsArgs),
    /// Write man pages (pbak.1 and one per subcommand) into a directory
    Man(cmd::completions::ManArgs),
}

/// Options shared by `backup` and `snapshot-backup`.
#[derive(Args, Debug)]
pub struct BackupCommon {
    /// Tag the snapshot (repeatable)
    #[arg(long)]
    pub tag: Vec<String>,
    /// Host name to record (default: this machine's)
    #[arg(long)]
    pub host: Option<String>,
    /// Exclude paths matching GLOB; a pattern without `/` matches names at any depth
    #[arg(short = 'e', long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Read exclude patterns from a file, one per line
    #[arg(long)]
    pub exclude_file: Vec<PathBuf>,
    /// Do not cross filesystem boundaries
    #[arg(short = 'x', long)]
    pub one_file_system: bool,
    /// Skip directories containing a CACHEDIR.TAG
    #[arg(long)]
    pub exclude_caches: bool,
    /// Do everything but store anything
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// After the snapshot is written, download the packs this backup stored and verify them
    #[arg(long)]
    pub read_back: bool,
}

/// Argon2id cost of a new key (`init`, `key add`); the help states the defaults from
/// `KdfParams::default` and the bounds from `format::keyfile`, so neither can drift.
#[derive(Args, Debug, Default)]
pub struct KdfArgs {
    #[arg(long, value_name = "MIB", help = kdf_memory_help(),
          value_parser = clap::value_parser!(u32).range(1..=i64::from(keyfile::MAX_MEMORY_KIB / 1024)))]
    pub kdf_memory_mib: Option<u32>,
    #[arg(long, value_name = "N", help = kdf_passes_help(),
          value_parser = clap::value_parser!(u32).range(i64::from(*keyfile::PASSES.start())..=i64::from(keyfile::MAX_PASSES)))]
    pub kdf_iterations: Option<u32>,
}

fn kdf_memory_help() -> String {
    format!(
        "Argon2id memory in MiB for the password key (default {}, at most {})",
        KdfParams::default().m_cost_kib / 1024,
        keyfile::MAX_MEMORY_KIB / 1024
    )
}

fn kdf_passes_help() -> String {
    format!(
        "Argon2id passes (default {}, at most {})",
        KdfParams::default().t_cost,
        keyfile::MAX_PASSES
    )
}

/// Which snapshots `latest` chooses from (restic's `restore latest --host H --path P`): in a
/// shared repository the newest snapshot overall is usually another host's.
#[derive(Args, Debug, Default)]
pub struct LatestArgs {
    /// `latest` means the newest snapshot of this host
    #[arg(long = "host", id = "latest_host", value_name = "HOST")]
    pub host: Option<String>,
    /// `latest` means the newest snapshot with this path among its paths
    #[arg(long = "path", id = "latest_path", value_name = "PATH")]
    pub path: Option<String>,
    /// `latest` means the newest snapshot with this tag (repeatable: all must match)
    #[arg(long = "tag", id = "latest_tag", value_name = "TAG")]
    pub tag: Vec<String>,
}

impl LatestArgs {
    pub fn filter(&self) -> SnapshotFilter {
        SnapshotFilter::of(self.host.as_deref(), self.path.as_deref(), &self.tag)
    }
}

/// Retention rules, as restic's `forget`.
#[derive(Args, Debug, Default)]
pub struct KeepArgs {
    /// Keep the newest N
    #[arg(long, default_value_t = 0)]
    pub keep_last: u32,
    /// Keep the newest of each of the last N hours
    #[arg(long, default_value_t = 0)]
    pub keep_hourly: u32,
    /// Keep the newest of each of the last N days
    #[arg(long, default_value_t = 0)]
    pub keep_daily: u32,
    /// Keep the newest of each of the last N weeks
    #[arg(long, default_value_t = 0)]
    pub keep_weekly: u32,
    /// Keep the newest of each of the last N months
    #[arg(long, default_value_t = 0)]
    pub keep_monthly: u32,
    /// Keep the newest of each of the last N years
    #[arg(long, default_value_t = 0)]
    pub keep_yearly: u32,
    /// Keep everything newer than this duration (e.g. 2d12h; units y m w d h): `forget` counts
    /// back from now, local snapshot retention from the newest snapshot
    #[arg(long)]
    pub keep_within: Option<String>,
}

impl KeepArgs {
    pub fn rules(&self) -> Result<KeepRules> {
        Ok(KeepRules {
            last: self.keep_last,
            hourly: self.keep_hourly,
            daily: self.keep_daily,
            weekly: self.keep_weekly,
            monthly: self.keep_monthly,
            yearly: self.keep_yearly,
            within: self
                .keep_within
                .as_deref()
                .map(parse_duration)
                .transpose()
                .map_err(anyhow::Error::msg)?,
            ..KeepRules::default()
        })
    }
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Unused space to tolerate in kept packs, in percent of the used space; more repacks less
    #[arg(long, default_value_t = 5.0)]
    pub max_unused: f64,
    /// Only show what would be removed
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Grace period between marking unneeded data and deleting it: data is deleted by a later
    /// prune, once this has passed and it is still unneeded, so a backup running on another
    /// host meanwhile stays safe. `0s` deletes at once: only for a repository no one else
    /// writes to while prune runs
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = pbak::ops::prune::parse_grace)]
    pub delete_after: chrono::Duration,
}
