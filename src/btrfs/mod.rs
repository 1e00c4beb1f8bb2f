//! Btrfs: snapshot lifecycle and change detection through the kernel's ioctls.

#[derive(Debug, thiserror::Error)]
pub enum BtrfsError {
    #[error("{0}")]
    Other(String),
}
