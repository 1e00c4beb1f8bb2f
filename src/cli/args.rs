//! Argument definitions. Names follow restic where the concept is the same.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "pbak",
    version,
    about = "Encrypted, deduplicating backups of Btrfs hosts to local disks, S3 and Backblaze B2"
)]
#[command(
    after_help = "Passwords come from --password-file, PBAK_PASSWORD_FILE, PBAK_PASSWORD_COMMAND or \
PBAK_PASSWORD (in that order), else a prompt on the terminal; never from a flag.\n\
Exit codes: 0 ok, 1 error, 3 snapshot written but some files could not be read."
)]
pub struct Cli {
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
    Init {
        /// Argon2id memory in MiB for the password key (default 64)
        #[arg(long)]
        kdf_memory_mib: Option<u32>,
        /// Argon2id passes (default 3)
        #[arg(long)]
        kdf_iterations: Option<u32>,
        /// Target pack size in MiB (default 16; larger means fewer B2 transactions)
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
        pack_size_mib: Option<u32>,
    },
    /// Back up files and directories into a new snapshot
    Backup(BackupArgs),
    /// Take a read-only Btrfs snapshot of each subvolume, back it up, then expire old local snapshots
    SnapshotBackup(SnapshotBackupArgs),
    /// Manage pbak's local Btrfs snapshots
    #[command(subcommand)]
    Btrfs(BtrfsCommand),
    /// List snapshots
    Snapshots {
        /// Only snapshots of this host
        #[arg(long)]
        host: Option<String>,
        /// Only snapshots containing this path
        #[arg(long)]
        path: Option<String>,
        /// Only snapshots with this tag (repeatable: all must match)
        #[arg(long)]
        tag: Vec<String>,
    },
    /// List the contents of a snapshot (`latest` or an id prefix)
    Ls {
        snapshot: String,
        /// Directory inside the snapshot to list (recursively)
        path: Option<String>,
        /// Show mode, owner, size and modification time
        #[arg(short, long)]
        long: bool,
    },
    /// Restore a snapshot, or SNAPSHOT:SUBPATH, into a directory
    Restore {
        /// `latest`, an id prefix, optionally followed by :/path/inside
        snapshot: String,
        /// Directory to restore into (created if missing)
        #[arg(short, long)]
        target: PathBuf,
        /// Only restore paths matching this glob (repeatable)
        #[arg(long)]
        include: Vec<String>,
        /// Do not restore paths matching this glob (repeatable)
        #[arg(long)]
        exclude: Vec<String>,
        /// Re-read the restored files and check them against the snapshot
        #[arg(long)]
        verify: bool,
    },
    /// Check the repository's structure, and with --read-data every stored byte
    Check {
        #[arg(long)]
        read_data: bool,
    },
    /// Remove snapshots by keep rules (per host and paths) or by id; --prune also frees their data
    Forget(ForgetArgs),
    /// Delete data no snapshot refers to, repacking partly used packs
    Prune(PruneArgs),
    /// Remove stale locks (of processes gone from this host, or not refreshed for 30 minutes)
    Unlock {
        /// Remove every lock, also those of running processes
        #[arg(long)]
        remove_all: bool,
    },
    /// Manage the passwords (keys) that open the repository
    #[command(subcommand)]
    Key(KeyCommand),
    /// Print a decrypted object for debugging: `config`, `snapshot ID`, `index ID`, `key ID`, `tree SNAPSHOT[:DIR]`
    Cat { kind: String, id: Option<String> },
}

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Files and directories to back up
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Snapshot whose unchanged files are reused (default: the latest of this host and paths)
    #[arg(long)]
    pub parent: Option<String>,
    #[command(flatten)]
    pub common: BackupCommon,
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
    /// Keep everything within this duration of the newest (e.g. 2d12h; units y m w d h)
    #[arg(long)]
    pub keep_within: Option<String>,
}

#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// Snapshots to remove (id prefixes), in addition to those the keep rules drop
    pub snapshots: Vec<String>,
    #[command(flatten)]
    pub keep: KeepArgs,
    /// Only consider snapshots of this host
    #[arg(long)]
    pub host: Option<String>,
    /// Only consider snapshots with this tag (repeatable: all must match)
    #[arg(long)]
    pub tag: Vec<String>,
    /// Apply the keep rules separately per group of these fields
    #[arg(long, default_value = "host,paths")]
    pub group_by: String,
    /// Run prune afterwards
    #[arg(long)]
    pub prune: bool,
    #[command(flatten)]
    pub prune_opts: PruneArgs,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Unused space to tolerate in kept packs, in percent of the used space; more repacks less
    #[arg(long, default_value_t = 5.0)]
    pub max_unused: f64,
    /// Only show what would be removed
    #[arg(short = 'n', long)]
    pub dry_run: bool,
}

#[derive(Args, Debug)]
pub struct SnapshotBackupArgs {
    /// Btrfs subvolumes to back up (each gets its own read-only snapshot)
    #[arg(required = true)]
    pub subvolumes: Vec<PathBuf>,
    /// Where local snapshots go (default: .pbak-snapshots at the subvolume's top; relative paths are taken from there)
    #[arg(long)]
    pub snapshot_dir: Option<PathBuf>,
    #[command(flatten)]
    pub common: BackupCommon,
    #[command(flatten)]
    pub keep: KeepArgs,
    /// Compare every file's metadata with the parent instead of asking Btrfs what changed
    #[arg(long)]
    pub full_scan: bool,
}

#[derive(Subcommand, Debug)]
pub enum BtrfsCommand {
    /// List pbak's local snapshots of a subvolume
    List {
        subvolume: PathBuf,
        #[arg(long)]
        snapshot_dir: Option<PathBuf>,
    },
    /// Delete local snapshots by keep rules (never the last one backed up)
    Prune {
        subvolume: PathBuf,
        #[arg(long)]
        snapshot_dir: Option<PathBuf>,
        #[command(flatten)]
        keep: KeepArgs,
        /// Only show what would be deleted
        #[arg(short = 'n', long)]
        dry_run: bool,
    },
    /// Check Btrfs mounts (or the mounts holding PATHs) against the storage presets; exit 1 on warnings
    Doctor {
        paths: Vec<PathBuf>,
        /// Judge the PATHs by this preset instead of by their path: database, containers, cache, general
        #[arg(long)]
        preset: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// List keys
    List,
    /// Add a key (new password from PBAK_NEW_PASSWORD_FILE or a prompt)
    Add {
        #[arg(long)]
        kdf_memory_mib: Option<u32>,
        #[arg(long)]
        kdf_iterations: Option<u32>,
    },
    /// Remove a key by id prefix (not the one in use, not the last)
    Remove { id: String },
    /// Change the password: add a key with the new password, remove the current one
    Passwd,
}
