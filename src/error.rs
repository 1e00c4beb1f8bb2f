//! The one public error of the library. Every variant names the object or path involved
//! and, where there is one, what the user can do next.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The exit code of an error that may pass when tried again (sysexits' `EX_TEMPFAIL`).
pub const EXIT_TRANSIENT: i32 = 75;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Backend(#[from] crate::backends::BackendError),

    #[error(transparent)]
    Btrfs(#[from] crate::btrfs::BtrfsError),

    #[error("no repository at {0}: create one with `pbak init`, or check -r/--repo")]
    NoRepository(String),

    #[error("a repository already exists at {0}; refusing to overwrite it")]
    RepositoryExists(String),

    #[error("{0} is not a pbak repository (no `config` object); check -r/--repo")]
    NotARepository(String),

    #[error("wrong password: no key in {repo} opens with it; check the password file or PBAK_PASSWORD_* variables")]
    WrongPassword { repo: String },

    #[error("{object} is corrupt: {reason}; run `pbak check --read-data` and restore from another snapshot if needed")]
    Corrupt { object: String, reason: String },

    #[error("unsupported repository format version {0}; upgrade pbak")]
    UnsupportedVersion(u32),

    #[error("no snapshot matches {0:?}; list them with `pbak snapshots`")]
    SnapshotNotFound(String),

    #[error("snapshot prefix {0:?} is ambiguous ({1} snapshots match); give more digits")]
    SnapshotAmbiguous(String, usize),

    #[error("path {path} not found in snapshot {snapshot}")]
    PathNotInSnapshot { snapshot: String, path: String },

    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    #[error("{0}")]
    Usage(String),

    #[error("cannot remove key {0}: it is the only key left, the repository would become unreadable")]
    LastKey(String),

    #[error("restore would write outside the target: {0}; the repository may be tampered with")]
    UnsafePath(String),

    #[error("another prune is running: {holder} ({object}); wait for it to finish, or if that process is gone run `pbak unlock`")]
    Locked { object: String, holder: String },

    #[error("a prune on {host} removed data this backup relied on ({detail}); no snapshot was written: run the backup again")]
    PrunedMeanwhile { host: String, detail: String },

    #[error(
        "repository format 1: {0} needs format 2; run `pbak migrate` once (pbak before 0.2 cannot open it afterwards)"
    )]
    NeedsMigration(String),

    #[error("{0} needs a key that may delete, and this one may not ({1}); run it on the host that holds the delete right (B2: deleteFiles; S3: s3:DeleteObject)")]
    NoDeleteRight(&'static str, String),

    #[error("verification failed for {path}: {reason}")]
    VerifyFailed { path: PathBuf, reason: String },
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    pub fn corrupt(object: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Error::Corrupt {
            object: object.into(),
            reason: reason.to_string(),
        }
    }
    /// Whether trying again later may succeed: the network, the server (5xx, rate limits,
    /// timeouts), a concurrent prune. Never a wrong password, a corrupt object, a usage
    /// error or a local file problem. `pbak run` retries on this, and the command line
    /// exits with [`EXIT_TRANSIENT`] for it.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Backend(b) => b.is_transient(),
            Error::Locked { .. } | Error::PrunedMeanwhile { .. } => true,
            _ => false,
        }
    }
    /// What went wrong, without the advice the message adds for a whole command: for a
    /// report that names many objects (restore's damaged files, check's problems).
    pub fn detail(&self) -> String {
        match self {
            Error::Corrupt { object, reason } => format!("{object}: {reason}"),
            e => e.to_string(),
        }
    }
}
