//! The local filesystem side of backup and restore: reading a file's metadata into a tree
//! node, and applying a node's metadata to a restored file.

pub mod at;
pub mod node;
