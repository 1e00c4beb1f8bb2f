//! Snapshot objects: what was backed up, when, from where, and the root tree.

use super::tree::Time;
use super::FormatError;
use crate::ids::{SnapshotId, TreeId};
use serde::{Deserialize, Serialize};

/// Where a snapshot-backup's data came from on Btrfs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BtrfsOrigin {
    pub subvol_uuid: [u8; 16],
    pub generation: u64,
    /// Path of the local read-only snapshot the backup read.
    pub snapshot_path: String,
    /// BLAKE3 of the walk options that shape the tree (excludes, exclude-caches,
    /// one-file-system, recorded device): change detection reuses a parent's tree only when
    /// they are the same.
    pub options_digest: [u8; 32],
}

/// How a backup decided which files to read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeDetection {
    /// Every entry was stat-ed and compared with the parent (size, mtime, ctime, inode).
    #[default]
    MetadataScan,
    /// Only entries Btrfs reported as changed since the parent's snapshot were looked at.
    BtrfsGeneration,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unmodified: u64,
    pub dirs: u64,
    pub total_files: u64,
    pub total_bytes: u64,
    pub bytes_read: u64,
    pub blobs_added: u64,
    /// Stored (compressed, sealed) bytes of new blobs.
    pub bytes_added: u64,
    pub duration_ms: u64,
    pub errors: u64,
    pub change_detection: ChangeDetection,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub time: Time,
    pub host: String,
    pub user: String,
    pub paths: Vec<String>,
    pub tags: Vec<String>,
    pub tree: TreeId,
    pub parent: Option<SnapshotId>,
    pub btrfs: Option<BtrfsOrigin>,
    pub summary: Summary,
    /// Some files could not be read; the snapshot holds the rest.
    pub partial: bool,
    pub program_version: String,
}

impl Snapshot {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("snapshot serializes")
    }
    pub fn decode(bytes: &[u8]) -> Result<Snapshot, FormatError> {
        Ok(postcard::from_bytes(bytes)?)
    }
    pub fn datetime(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp(self.time.sec, self.time.nsec).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Snapshot::decode(&data);
        }
    }
}
