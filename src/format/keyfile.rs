//! Key files (`keys/<id>`): a plaintext JSON envelope with Argon2id parameters and salt,
//! and the master secret sealed with the password-derived key. Decoding bounds every
//! parameter so a hostile key file cannot make us allocate gigabytes.

use super::crypto::{open_with, random, seal_with, MasterKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Argon2id cost parameters.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KdfParams {
    pub m_cost_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
}

impl Default for KdfParams {
    /// 32 MiB, 4 passes: about 0.15 s on a small VPS core. The memory equals restic's scrypt
    /// setting and exceeds OWASP's Argon2id minimum (19 MiB, 2 passes); it is also the peak
    /// memory of commands that touch little else, so it is not larger. `--kdf-memory-mib`
    /// raises it per key.
    fn default() -> Self {
        KdfParams {
            m_cost_kib: 32 * 1024,
            t_cost: 4,
            p_cost: 1,
        }
    }
}

impl KdfParams {
    fn check(&self) -> Result<(), String> {
        if !(8..=4 * 1024 * 1024).contains(&self.m_cost_kib)
            || !(1..=64).contains(&self.t_cost)
            || !(1..=16).contains(&self.p_cost)
        {
            return Err(format!("Argon2id parameters out of range: {self:?}"));
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
}

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("malformed key file: {0}")]
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
    pub fn create(
        master: &MasterKey,
        password: &[u8],
        params: KdfParams,
        host: &str,
        user: &str,
    ) -> Result<KeyFile, KeyFileError> {
        let mut salt = [0u8; 16];
        random(&mut salt);
        let k = derive(password, &salt, &params)?;
        Ok(KeyFile {
            version: 1,
            created: chrono::Utc::now().to_rfc3339(),
            host: host.into(),
            user: user.into(),
            kdf: "argon2id".into(),
            params,
            salt: hex::encode(salt),
            data: hex::encode(seal_with(&k, master.secret())),
        })
    }

    pub fn decode(bytes: &[u8]) -> Result<KeyFile, KeyFileError> {
        let kf: KeyFile = serde_json::from_slice(bytes).map_err(|e| KeyFileError::Malformed(e.to_string()))?;
        if kf.version != 1 || kf.kdf != "argon2id" {
            return Err(KeyFileError::Malformed(format!(
                "unknown key version {} / kdf {}",
                kf.version, kf.kdf
            )));
        }
        kf.params.check().map_err(KeyFileError::Malformed)?;
        if kf.salt.len() != 32 || kf.data.len() > 512 {
            return Err(KeyFileError::Malformed("bad salt or data length".into()));
        }
        Ok(kf)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("key file serializes")
    }

    pub fn open(&self, password: &[u8]) -> Result<MasterKey, KeyFileError> {
        let bad = |e: hex::FromHexError| KeyFileError::Malformed(e.to_string());
        let salt = hex::decode(&self.salt).map_err(bad)?;
        let sealed = hex::decode(&self.data).map_err(bad)?;
        let k = derive(password, &salt, &self.params)?;
        let secret = Zeroizing::new(open_with(&k, &sealed).map_err(|_| KeyFileError::WrongPassword)?);
        let arr: [u8; 32] = secret
            .as_slice()
            .try_into()
            .map_err(|_| KeyFileError::Malformed("secret is not 32 bytes".into()))?;
        Ok(MasterKey::from_secret(arr))
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
    fn right_and_wrong_password() {
        let m = MasterKey::generate();
        let kf = KeyFile::create(&m, b"pw", FAST, "h", "u").unwrap();
        let back = KeyFile::decode(&kf.encode()).unwrap();
        assert_eq!(back.open(b"pw").unwrap().secret(), m.secret());
        assert!(matches!(back.open(b"nope"), Err(KeyFileError::WrongPassword)));
    }

    #[test]
    fn hostile_params_rejected() {
        let m = MasterKey::generate();
        let mut kf = KeyFile::create(&m, b"pw", FAST, "h", "u").unwrap();
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
