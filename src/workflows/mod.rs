//! Operations that combine the Btrfs layer with the repository layer.

pub mod snapshot_backup;
