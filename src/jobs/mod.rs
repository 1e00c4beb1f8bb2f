//! Host-side runs that combine the Btrfs layer with repository operations.

pub mod config;
pub mod local_snapshots;
pub mod run;
pub mod snapshot_backup;
pub mod systemd;
