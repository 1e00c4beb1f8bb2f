//! A sealed index file as read from the backend. Random bytes stop at authentication;
//! see `index_plain` for the parser behind the seal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pbak::format::crypto::MasterKey;
use pbak::format::index::IndexFile;

fuzz_target!(|data: &[u8]| {
    let key = MasterKey::from_secret(&[7; 32]);
    let _ = IndexFile::decode(&key, data);
});
