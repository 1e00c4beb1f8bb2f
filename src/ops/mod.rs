//! One module per user-visible operation. Each takes an open [`crate::repo::Repository`],
//! does its work through the repository's shared machinery (walker, pack writer and reader,
//! index), and returns a report the CLI prints.

pub mod backup;
pub mod cat;
pub mod check;
pub mod cost;
pub mod diff;
pub mod dump;
pub mod find;
pub mod forget;
pub mod key;
pub mod ls;
pub mod mount;
pub mod prune;
pub mod repair;
pub mod restore;
pub mod snapshots;
pub mod stats;
pub mod status;
