//! Key files are the only object read before any key is known: plaintext JSON from the
//! backend. `decode` must reject anything malformed; `open` must fail cleanly on the rest.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pbak::format::keyfile::KeyFile;

fuzz_target!(|data: &[u8]| {
    let Ok(kf) = KeyFile::decode(data) else { return };
    // decode bounds Argon2id at 4 GiB x 64 passes, a legitimate (if slow) key but far past
    // libFuzzer's memory and time limits: only derive keys for cheap parameters.
    let p = kf.params;
    if p.m_cost_kib <= 1024 && p.t_cost <= 2 && p.p_cost <= 4 {
        let _ = kf.open(b"pw");
    }
});
