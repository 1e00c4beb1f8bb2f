//! The index parser behind the seal. There is no public plaintext decoder, so the input is
//! sealed here under the fuzz key and handed to `IndexFile::decode`; whatever decodes is
//! merged into an in-memory `Index` and must survive an encode/decode round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pbak::format::crypto::{Kind, MasterKey};
use pbak::format::index::IndexFile;
use pbak::repo::index::IndexBuilder;

fuzz_target!(|data: &[u8]| {
    let key = MasterKey::from_secret(&[7; 32]);
    let Ok(file) = IndexFile::decode(&key, &key.seal_as(Kind::Index, data)) else {
        return;
    };
    let again = IndexFile::decode(&key, &file.encode(&key)).expect("a decoded index re-encodes");
    assert_eq!(again, file);
    let mut builder = IndexBuilder::default();
    builder.add_file("fuzz", &file);
    let index = builder.finish();
    for p in &file.packs {
        for b in &p.blobs {
            let loc = index.get(&b.id).expect("every listed blob is indexed");
            assert!(index.packs().contains(&index.pack_id(&loc)));
        }
    }
});
