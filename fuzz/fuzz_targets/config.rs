//! The repository config, after decryption: JSON checked field by field.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pbak::format::config::Config;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Config::decode(data) {
        assert!(c.chunker.is_valid());
        let again = Config::decode(&c.encode()).expect("an accepted config re-encodes to an accepted config");
        assert_eq!(again, c);
    }
});
