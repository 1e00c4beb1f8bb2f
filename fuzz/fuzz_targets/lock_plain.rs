//! Lock records behind the seal: the input is sealed under the fuzz key and opened as a lock.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pbak::format::crypto::{Kind, MasterKey};
use pbak::format::lock::LockInfo;

fuzz_target!(|data: &[u8]| {
    let key = MasterKey::from_secret(&[7; 32]);
    let Ok(lock) = LockInfo::open(&key, &key.seal_as(Kind::PruneMarker, data)) else { return };
    let _ = lock.describe();
    assert_eq!(LockInfo::open(&key, &lock.seal(&key)).expect("a lock re-opens"), lock);
});
