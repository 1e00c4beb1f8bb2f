//! `key`: the passwords (key files) that open the repository.
//!
//! Invariants: the key this process opened the repository with is never removed by
//! [`remove`] (the user would lock themselves out mid-session), nor the last key
//! ([`Repository::remove_key`]); a password change adds the new key before removing the old
//! one, so a failure in between leaves both working, and keeps the old key's Argon2
//! parameters. No key is ever made for an empty password. (`Repository::open` names key
//! files that do not decode, never taking them for a wrong password.)

use crate::error::{Error, Result};
use crate::format::keyfile::{KdfParams, KeyFile};
use crate::format::layout;
use crate::ids::KeyId;
use crate::repo::Repository;

fn refuse_empty(password: &[u8]) -> Result<()> {
    if password.is_empty() {
        return Err(Error::Usage("empty password refused".into()));
    }
    Ok(())
}

/// Add a key for `password` (not empty) with `kdf`; returns its id.
pub fn add(repo: &Repository, password: &[u8], kdf: KdfParams) -> Result<KeyId> {
    refuse_empty(password)?;
    repo.add_key(password, kdf)
}

/// Remove the key matching the id prefix `prefix`; returns its id.
pub fn remove(repo: &Repository, prefix: &str) -> Result<KeyId> {
    let id = repo.find_key(prefix)?;
    if id == repo.key_id() {
        return Err(Error::Usage(format!(
            "refusing to remove the key you are using ({}); open with another key first",
            id.short()
        )));
    }
    repo.remove_key(&id)?;
    Ok(id)
}

/// The Argon2 parameters of the key this repository was opened with.
pub fn current_params(repo: &Repository) -> Result<KdfParams> {
    let path = layout::key(&repo.key_id());
    let bytes = repo.backend().get(&path)?;
    let kf = KeyFile::decode(&bytes).map_err(|e| Error::corrupt(&path, e))?;
    Ok(kf.params)
}

/// Replace the key in use by one for `new_password` (not empty) with the same key derivation
/// parameters; returns the new key's id. The repository stays open with the old key's master
/// key.
pub fn change_password(repo: &Repository, new_password: &[u8]) -> Result<KeyId> {
    refuse_empty(new_password)?;
    let params = current_params(repo)?;
    let id = repo.add_key(new_password, params)?;
    repo.remove_key(&repo.key_id())?;
    Ok(id)
}
