//! One file per command: its own flags, the one library call, and its text or JSON output.
//! A handler that grows past a screen is library work waiting to be moved into `pbak`.

pub mod backup;
pub mod btrfs;
pub mod cat;
pub mod check;
pub mod completions;
pub mod config;
pub mod cost;
pub mod diff;
pub mod dump;
pub mod find;
pub mod forget;
pub mod init;
pub mod key;
pub mod ls;
pub mod mount;
pub mod prune;
pub mod repair;
pub mod restore;
pub mod run;
pub mod snapshot_backup;
pub mod snapshots;
pub mod stats;
pub mod status;
pub mod systemd;
pub mod unlock;
