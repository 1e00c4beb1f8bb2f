//! Key files: listing, adding and removing the keys that open the master key.

use super::Repository;
use crate::backends::Backend;
use crate::error::{Error, Result};
use crate::format::keyfile::{KdfParams, KeyFile};
use crate::format::layout;
use crate::host::host_user;
use crate::ids::KeyId;

/// The ids of the listed key objects. A name that is not a key id is skipped with a warning
/// (it cannot be a key pbak wrote, and must not turn into some other key's id).
pub(super) fn listed_keys(backend: &Backend) -> Result<Vec<KeyId>> {
    Ok(backend
        .list(layout::KEYS)?
        .into_iter()
        .filter_map(|n| {
            let id = KeyId::from_hex(&n);
            if id.is_none() {
                eprintln!(
                    "pbak: warning: skipping {}: its name is not a key id",
                    layout::in_dir(layout::KEYS, &n)
                );
            }
            id
        })
        .collect())
}

impl Repository {
    pub fn list_keys(&self) -> Result<Vec<(KeyId, KeyFile)>> {
        let mut out = Vec::new();
        for id in listed_keys(&self.backend)? {
            let path = layout::key(&id);
            let bytes = self.backend.get(&path)?;
            match KeyFile::decode(&bytes) {
                Ok(kf) => out.push((id, kf)),
                // One bad key file must not hide the others.
                Err(e) => eprintln!("pbak: warning: skipping {path}: {e}"),
            }
        }
        Ok(out)
    }

    pub fn add_key(&self, password: &[u8], kdf: KdfParams) -> Result<KeyId> {
        let (host, user) = host_user();
        let kf = KeyFile::create(&self.key, password, kdf, &host, &user, &self.config_hash)
            .map_err(|e| Error::Usage(e.to_string()))?;
        let bytes = kf.encode();
        let id = KeyId(*blake3::hash(&bytes).as_bytes());
        self.backend.put(&layout::key(&id), bytes)?;
        Ok(id)
    }

    pub fn remove_key(&self, id: &KeyId) -> Result<()> {
        let keys = self.list_keys()?;
        if !keys.iter().any(|(k, _)| k == id) {
            return Err(Error::Usage(format!("no key {id}; list them with `pbak key list`")));
        }
        if keys.len() == 1 {
            return Err(Error::LastKey(id.short()));
        }
        self.backend.delete(&layout::key(id))?;
        Ok(())
    }

    /// Resolve a key id prefix.
    pub fn find_key(&self, prefix: &str) -> Result<KeyId> {
        let keys = self.list_keys()?;
        let m: Vec<_> = keys
            .iter()
            .filter(|(k, _)| k.to_hex().starts_with(&prefix.to_ascii_lowercase()))
            .collect();
        match m.as_slice() {
            [(k, _)] => Ok(*k),
            [] => Err(Error::Usage(format!(
                "no key matches {prefix:?}; list them with `pbak key list`"
            ))),
            _ => Err(Error::Usage(format!("key prefix {prefix:?} is ambiguous"))),
        }
    }
}
