//! The text a user or a listing hands pbak: object ids from listings and arguments, snapshot
//! specs (`ID:PATH`), and durations (`--keep-within`). None may panic, and what parses must
//! print back to what it parsed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pbak::ids::{PackId, SnapshotId};
use pbak::ops::forget::retention::{parse_duration, MAX_DAYS};
use pbak::repo::filter::parse_snapshot_path;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Some(id) = PackId::from_hex(s) {
        assert_eq!(id.to_hex(), s.to_ascii_lowercase());
    }
    if let Some(id) = SnapshotId::from_hex(s) {
        assert!(id.to_hex().starts_with(&id.short()));
    }
    let (snap, path) = parse_snapshot_path(s);
    assert!(snap.len() + path.len() <= s.len());
    if let Ok(d) = parse_duration(s) {
        assert!(d.num_days() <= MAX_DAYS);
    }
});
