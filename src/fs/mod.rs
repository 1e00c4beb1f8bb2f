//! The local filesystem side of backup and restore: reading a file's metadata into a tree
//! node, reading a source tree through directory descriptors, and applying a node's metadata
//! to a restored file through them.

pub mod at;
pub mod node;
pub mod source;
