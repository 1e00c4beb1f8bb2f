//! The pack header parser behind the seal. There is no public plaintext decoder, so the
//! input is turned into a pack that authenticates: the first two bytes (LE) give the size
//! of the blob area, the rest is the header plaintext, sealed here under the fuzz key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pbak::format::crypto::{Kind, MasterKey};
use pbak::format::pack::decode_header;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let area = u16::from_le_bytes([data[0], data[1]]) as usize;
    let key = MasterKey::from_secret(&[7; 32]);
    let header = key.seal_as(Kind::PackHeader, &data[2..]);
    let mut pack = vec![0u8; area];
    pack.extend_from_slice(&header);
    pack.extend_from_slice(&(header.len() as u32).to_le_bytes());
    if let Ok(entries) = decode_header(&key, &pack) {
        for e in entries {
            assert!(
                e.offset as usize + e.length as usize <= area,
                "{e:?} outside a {area}-byte blob area"
            );
        }
    }
});
