//! Tree blobs, after decryption and decompression. Whatever `decode` accepts must be safe
//! to restore (checked by `decode` itself), canonical, and survive a round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pbak::format::tree::{is_safe_name, Tree};

fuzz_target!(|data: &[u8]| {
    let Ok(t) = Tree::decode(data) else { return };
    for n in &t.nodes {
        assert!(is_safe_name(&n.name));
        assert!(t.find(&n.name).is_some());
    }
    assert_eq!(
        Tree::new(t.nodes.clone()),
        t,
        "accepted trees are already sorted and unique"
    );
    assert_eq!(Tree::decode(&t.encode()).expect("a decoded tree re-encodes"), t);
});
