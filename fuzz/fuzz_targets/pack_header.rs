//! A whole pack as read from the backend. Random bytes stop at the length field or at
//! authentication; see `pack_header_plain` for the parser behind the seal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pbak::format::crypto::MasterKey;
use pbak::format::pack::decode_header;

fuzz_target!(|data: &[u8]| {
    let key = MasterKey::from_secret(&[7; 32]);
    if let Ok(entries) = decode_header(&key, data) {
        for e in entries {
            assert!(e.offset as usize + e.length as usize <= data.len());
        }
    }
});
