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
    /// Print machine-readable JSON instead of text
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress bar
    #[arg(short, long, global = true)]
    pub quiet: bool,
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
    },
    /// Back up files and directories into a new snapshot
    Backup(BackupArgs),
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
    /// Manage the passwords (keys) that open the repository
    #[command(subcommand)]
    Key(KeyCommand),
    /// Print a decrypted object for debugging: `config`, `snapshot ID`, `index ID`, `key ID`
    Cat { kind: String, id: Option<String> },
}

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Files and directories to back up
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
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
    /// Snapshot whose unchanged files are reused (default: the latest of this host and paths)
    #[arg(long)]
    pub parent: Option<String>,
    /// Concurrent pack uploads
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
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
