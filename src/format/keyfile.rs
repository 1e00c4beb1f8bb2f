//! Key files (`keys/<id>`): a plaintext JSON envelope with Argon2id parameters and salt,
//! and the master secret sealed with the password-derived key. Decoding bounds every
//! parameter (before any derivation) so a planted key file costs at most
//! [`MAX_MEMORY_KIB`] and [`MAX_PASSES`] passes, not 4 GiB and minutes; a file that does not
//! decode is [`KeyFileError::Malformed`], never a wrong password.

use super::crypto::{open_ad, random, seal_ad, MasterKey, OVERHEAD};
use serde::{Deserialize, Serialize};
use std::ops::RangeInclusive;
use zeroize::Zeroizing;

/// Argon2id memory, KiB, a key file may ask for. The minimum is Argon2's own (8 KiB per lane,
/// checked with the lanes); the maximum, 2 GiB, is eight times OWASP's strongest
/// recommendation (and twice Bitwarden's ceiling) while keeping a hostile key file from
/// costing more than a small host has.
pub const MEMORY_KIB: RangeInclusive<u32> = 8..=2 * 1024 * 1024;
pub const MAX_MEMORY_KIB: u32 = *MEMORY_KIB.end();
/// Argon2id passes: at most 10 (Bitwarden's and KeePassXC's usual ceiling; OWASP's settings
/// use 1 to 5). At 2 GiB that is still tens of seconds per key, which is the bound.
pub const PASSES: RangeInclusive<u32> = 1..=10;
pub const MAX_PASSES: u32 = *PASSES.end();
/// Argon2id lanes.
pub const LANES: RangeInclusive<u32> = 1..=16;
/// Bytes of a sealed master secret (hex twice that in `data`).
const SEALED_SECRET: usize = 32 + OVERHEAD;

/// Argon2id cost parameters.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KdfParams {
    pub m_cost_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
}

impl Default for KdfParams {
    /// 32 MiB, 4 passes, 4 lanes: about 0.07 s on one core of this workplace's machine, 0.05 s
    /// on two. The memory equals restic's scrypt setting and exceeds OWASP's Argon2id
    /// minimum (19 MiB, 2 passes); it is also the peak memory of commands that touch little
    /// else, so it is not larger. `--kdf-memory-mib` raises it per key. The lanes are RFC
    /// 9106's choice: an attacker pays the same memory and passes, a host with cores derives
    /// the key on up to four of them (keys made before with one lane keep it).
    fn default() -> Self {
        KdfParams {
            m_cost_kib: 32 * 1024,
            t_cost: 4,
            p_cost: 4,
        }
    }
}

impl KdfParams {
    /// Within [`MEMORY_KIB`] (and at least 8 KiB per lane), [`PASSES`] and [`LANES`].
    pub fn check(&self) -> Result<(), String> {
        if !MEMORY_KIB.contains(&self.m_cost_kib)
            || !PASSES.contains(&self.t_cost)
            || !LANES.contains(&self.p_cost)
            || self.m_cost_kib / 8 < self.p_cost
        {
            return Err(format!(
                "Argon2id parameters out of range (memory {} KiB, {} passes, {} lanes; accepted: \
                 memory {}..={} KiB and 8 KiB per lane, passes {}..={}, lanes {}..={})",
                self.m_cost_kib,
                self.t_cost,
                self.p_cost,
                MEMORY_KIB.start(),
                MEMORY_KIB.end(),
                PASSES.start(),
                PASSES.end(),
                LANES.start(),
                LANES.end()
            ));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyFile {
    pub version: u32,
    pub created: String,
    pub host: String,
    pub user: String,
    pub kdf: String,
    #[serde(flatten)]
    pub params: KdfParams,
    /// Hex, 16 bytes.
    pub salt: String,
    /// Hex of the sealed 32-byte master secret.
    pub data: String,
    /// Version 2: hex of the BLAKE3 of the sealed `config` object this key opens. It is
    /// authenticated with the secret (associated data), so a replaced config is detected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
}

/// The associated data that pins a sealed secret to a config (none for version 1).
fn pin_ad(config: Option<&[u8; 32]>) -> Vec<u8> {
    match config {
        Some(h) => [&b"pbak key for config "[..], &h[..]].concat(),
        None => Vec::new(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The bytes are not a key file pbak can use (empty, truncated, bad JSON, unknown
    /// version, parameters out of range, bad hex); the message does not name the file (the
    /// caller knows it).
    #[error("{0}")]
    Malformed(String),
    #[error("password does not open this key")]
    WrongPassword,
}

fn derive(password: &[u8], salt: &[u8], p: &KdfParams) -> Result<Zeroizing<[u8; 32]>, KeyFileError> {
    p.check().map_err(KeyFileError::Malformed)?;
    let params = argon2::Params::new(p.m_cost_kib, p.t_cost, p.p_cost, Some(32))
        .map_err(|e| KeyFileError::Malformed(e.to_string()))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    a.hash_password_into(password, salt, out.as_mut())
        .map_err(|e| KeyFileError::Malformed(e.to_string()))?;
    Ok(out)
}

impl KeyFile {
    /// A key file for `master`, pinned to the sealed config whose BLAKE3 is `config`.
    pub fn create(
        master: &MasterKey,
        password: &[u8],
        params: KdfParams,
        host: &str,
        user: &str,
        config: &[u8; 32],
    ) -> Result<KeyFile, KeyFileError> {
        let mut salt = [0u8; 16];
        random(&mut salt);
        let k = derive(password, &salt, &params)?;
        Ok(KeyFile {
            version: 2,
            created: chrono::Utc::now().to_rfc3339(),
            host: host.into(),
            user: user.into(),
            kdf: "argon2id".into(),
            params,
            salt: hex::encode(salt),
            data: hex::encode(seal_ad(&k, master.secret(), &pin_ad(Some(config)))),
            config: Some(hex::encode(config)),
        })
    }

    pub fn decode(bytes: &[u8]) -> Result<KeyFile, KeyFileError> {
        let kf: KeyFile = serde_json::from_slice(bytes).map_err(|e| KeyFileError::Malformed(e.to_string()))?;
        let pinned = kf.config.is_some();
        if !matches!((kf.version, pinned), (1, false) | (2, true)) || kf.kdf != "argon2id" {
            return Err(KeyFileError::Malformed(format!(
                "unknown key version {} / kdf {}",
                kf.version, kf.kdf
            )));
        }
        kf.params.check().map_err(KeyFileError::Malformed)?;
        let (salt, sealed) = kf.raw()?;
        kf.pin()?;
        if salt.len() != 16 || sealed.len() != SEALED_SECRET {
            return Err(KeyFileError::Malformed(format!(
                "salt of {} bytes and sealed secret of {} (expected 16 and {SEALED_SECRET})",
                salt.len(),
                sealed.len()
            )));
        }
        Ok(kf)
    }

    /// The salt and the sealed secret, from hex.
    fn raw(&self) -> Result<(Vec<u8>, Vec<u8>), KeyFileError> {
        let bad = |what, e: hex::FromHexError| KeyFileError::Malformed(format!("{what} is not hex: {e}"));
        let salt = hex::decode(&self.salt).map_err(|e| bad("salt", e))?;
        let sealed = hex::decode(&self.data).map_err(|e| bad("data", e))?;
        Ok((salt, sealed))
    }

    /// The config hash this key is pinned to (version 2), from hex.
    pub fn pin(&self) -> Result<Option<[u8; 32]>, KeyFileError> {
        let Some(h) = &self.config else { return Ok(None) };
        let bytes = hex::decode(h).map_err(|e| KeyFileError::Malformed(format!("config is not hex: {e}")))?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| KeyFileError::Malformed("config pin is not 32 bytes".into()))?;
        Ok(Some(arr))
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("key file serializes")
    }

    /// The master key, if `password` opens this key. The parameters are checked again
    /// before the derivation (a `KeyFile` may not come from [`KeyFile::decode`]).
    pub fn open(&self, password: &[u8]) -> Result<MasterKey, KeyFileError> {
        self.params.check().map_err(KeyFileError::Malformed)?;
        let (salt, sealed) = self.raw()?;
        let k = derive(password, &salt, &self.params)?;
        let ad = pin_ad(self.pin()?.as_ref());
        let secret = Zeroizing::new(open_ad(&k, &sealed, &ad).map_err(|_| KeyFileError::WrongPassword)?);
        if secret.len() != 32 {
            return Err(KeyFileError::Malformed("secret is not 32 bytes".into()));
        }
        // The one copy made here is wiped on drop; `from_secret` copies only into the key.
        let mut arr = Zeroizing::new([0u8; 32]);
        arr.copy_from_slice(&secret);
        Ok(MasterKey::from_secret(&arr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FAST: KdfParams = KdfParams {
        m_cost_kib: 64,
        t_cost: 1,
        p_cost: 1,
    };

    #[test]
    fn parameter_bounds() {
        let ok = |m, t, p| {
            KdfParams {
                m_cost_kib: m,
                t_cost: t,
                p_cost: p,
            }
            .check()
            .is_ok()
        };
        assert!(ok(8, 1, 1) && ok(2 << 20, 10, 16) && ok(32 << 10, 4, 1));
        assert!(!ok(7, 1, 1) && !ok((2 << 20) + 1, 1, 1) && !ok(4 << 20, 1, 1));
        assert!(!ok(1024, 0, 1) && !ok(1024, 11, 1) && !ok(1024, 64, 1));
        assert!(!ok(1024, 1, 0) && !ok(1024, 1, 17) && !ok(64, 1, 9));
        assert!(KdfParams::default().check().is_ok());
    }

    #[test]
    fn truncated_or_empty_files_are_malformed() {
        let m = MasterKey::generate();
        let bytes = KeyFile::create(&m, b"pw", FAST, "h", "u", &[5; 32]).unwrap().encode();
        for n in [0, 1, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                matches!(KeyFile::decode(&bytes[..n]), Err(KeyFileError::Malformed(_))),
                "{n}"
            );
        }
        let mut kf = KeyFile::decode(&bytes).unwrap();
        kf.data.truncate(kf.data.len() - 2);
        assert!(matches!(KeyFile::decode(&kf.encode()), Err(KeyFileError::Malformed(_))));
        kf.data = "zz".repeat(SEALED_SECRET);
        assert!(matches!(KeyFile::decode(&kf.encode()), Err(KeyFileError::Malformed(_))));
    }

    #[test]
    fn right_and_wrong_password() {
        let m = MasterKey::generate();
        let kf = KeyFile::create(&m, b"pw", FAST, "h", "u", &[5; 32]).unwrap();
        let back = KeyFile::decode(&kf.encode()).unwrap();
        assert_eq!(back.open(b"pw").unwrap().secret(), m.secret());
        assert!(matches!(back.open(b"nope"), Err(KeyFileError::WrongPassword)));
    }

    /// A key file written by pbak before the Argon2 crate's 0.6 (one lane, 8 MiB, 4 passes):
    /// the derivation of a new build must open it, or every existing repository is locked out.
    #[test]
    fn key_files_of_earlier_builds_open() {
        let old = br#"{"version":2,"created":"2026-12-04T04:10:14.172042516+00:00","host":"vm","user":"0",
            "kdf":"argon2id","m_cost_kib":8192,"t_cost":4,"p_cost":1,"salt":"5c283f4d655a86e6609ac29a5e4b9198",
            "data":"f000cca6d26dce1b75d261f23e2523c913be67dc0e7cafa1d807b73235c0591e882040b3473419e17e50c3025a034be9db6e8aaf259cda3f1652575a0cad1ac2e88eaccec1983882",
            "config":"56a84a444e6a0dbbbecfe2bdcdd77004a1024fbe8a8ca27badbb53d86ce9b90c"}"#;
        let kf = KeyFile::decode(old).unwrap();
        assert!(kf.open(b"correct horse").is_ok());
        assert!(matches!(kf.open(b"correct horsf"), Err(KeyFileError::WrongPassword)));
    }

    /// Lanes are part of the derivation: the same password, salt, memory and passes give
    /// another key with four lanes than with one, and the same one every time.
    #[test]
    fn lanes_change_the_derived_key() {
        let lanes = |p_cost| derive(b"pw", &[7; 16], &KdfParams { p_cost, ..FAST }).unwrap();
        assert_ne!(*lanes(1), *lanes(4));
        assert_eq!(*lanes(4), *lanes(4));
        assert_eq!(KdfParams::default().p_cost, 4);
    }

    #[test]
    fn hostile_params_rejected() {
        let m = MasterKey::generate();
        let mut kf = KeyFile::create(&m, b"pw", FAST, "h", "u", &[5; 32]).unwrap();
        kf.params.m_cost_kib = u32::MAX;
        assert!(KeyFile::decode(&kf.encode()).is_err());
    }

    proptest! {
        #[test]
        fn random_bytes_are_errors(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = KeyFile::decode(&data);
        }
    }
}
