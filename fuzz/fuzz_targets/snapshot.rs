//! Snapshot objects, after decryption.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pbak::format::snapshot::Snapshot;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = Snapshot::decode(data) else { return };
    let _ = s.datetime();
    assert_eq!(Snapshot::decode(&s.encode()).expect("a decoded snapshot re-encodes"), s);
});
