//! Object names: the one place that knows where each kind of object lives in the repository
//! (`docs/FORMAT.md` §1). Every name is lowercase hex of the object's id.

use crate::ids::{IndexId, KeyId, PackId, SnapshotId};

/// The config object.
pub const CONFIG: &str = "config";
/// Directories (listing prefixes) of each object kind.
pub const KEYS: &str = "keys";
pub const DATA: &str = "data";
pub const INDEX: &str = "index";
pub const SNAPSHOTS: &str = "snapshots";
pub const LOCKS: &str = "locks";
/// Records of what each run did (format 2, FORMAT.md §8.4): read by `cost` and `status`.
pub const RUNS: &str = "runs";
/// The prune marker (format 2): the one object only prune writes.
pub const PRUNE_MARKER: &str = "prune";
/// A name never written: forget and prune delete it to learn whether their key may delete.
pub const DELETE_PROBE: &str = "delete-probe";

/// `data/<first two hex digits>/<id>`.
pub fn pack(id: &PackId) -> String {
    let h = id.to_hex();
    format!("{DATA}/{}/{h}", &h[..2])
}

pub fn index(id: &IndexId) -> String {
    format!("{INDEX}/{id}")
}

pub fn snapshot(id: &SnapshotId) -> String {
    format!("{SNAPSHOTS}/{id}")
}

pub fn key(id: &KeyId) -> String {
    format!("{KEYS}/{id}")
}

/// A lock object; its name is the hex BLAKE3 of its sealed bytes.
pub fn lock(hex: &str) -> String {
    format!("{LOCKS}/{hex}")
}

/// An object of directory `dir` by the name a listing returned (the part after `dir/`).
pub fn in_dir(dir: &str, name: &str) -> String {
    format!("{dir}/{name}")
}

/// The id part of a listed pack name (`ab/abcd…` or `abcd…`).
pub fn pack_name_id(listed: &str) -> &str {
    listed.rsplit('/').next().unwrap_or(listed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let p = PackId([0xab; 32]);
        assert_eq!(pack(&p), format!("data/ab/{}", p.to_hex()));
        assert_eq!(pack_name_id(&pack(&p)), p.to_hex());
        assert_eq!(index(&IndexId([1; 32])), format!("index/{}", "01".repeat(32)));
    }
}
