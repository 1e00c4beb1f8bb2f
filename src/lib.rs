//! pbak: a content-addressed, deduplicating, encrypted backup store for Btrfs hosts.
//!
//! Layers point one way: `cli` → `repo` / `btrfs` → `chunker` / `backends`.
//! `backends` moves opaque bytes and knows nothing of keys; `repo` owns all cryptography,
//! so no plaintext leaves it unsealed. `unsafe` is confined to `btrfs` (ioctls) and the
//! memory map in `chunker`.
#![deny(unsafe_code)]

pub mod backends;
pub mod btrfs;
pub mod chunker;
pub mod error;
pub mod ids;
pub mod repo;
pub mod workflows;

pub use error::{Error, Result};
