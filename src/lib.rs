//! pbak: a content-addressed, deduplicating, encrypted backup store for Btrfs hosts.
//!
//! Layers, each using only the ones below it (`tests/layers.rs` enforces the order):
//!
//! - `cli` (in the binary) parses, calls one library function, prints;
//! - [`jobs`]: host-side runs: snapshot-backup over subvolumes, local snapshot retention;
//! - [`ops`]: one user-visible operation each: backup, restore, forget, prune, check, …;
//! - [`repo`]: the open repository: keys, sealed get/put, cache, compact index, locks, the
//!   tree walker, the pack writer and reader;
//! - [`format`]: the bytes on disk, pure codecs with no I/O, and object names;
//! - [`backends`]: opaque bytes to a local directory, S3 or B2; it knows nothing of keys, so
//!   no plaintext leaves `repo` unsealed;
//! - [`btrfs`] (ioctls, used by `jobs`), [`fs`] (local file metadata, used by `ops`);
//! - leaves any layer may use: [`chunker`], [`host`], [`secrets`] (password and credential
//!   files and commands), [`ids`], [`error`].
//!
//! `unsafe` is confined to the Btrfs ABI (`btrfs::sys`), the memory maps in `chunker` and the
//! spool, and the allocator's one setting in `host`.
#![deny(unsafe_code)]

pub mod backends;
pub mod btrfs;
pub mod chunker;
pub mod error;
pub mod format;
pub mod fs;
pub mod host;
pub mod ids;
pub mod jobs;
pub mod ops;
pub mod repo;
pub mod secrets;

pub use error::{Error, Result};
