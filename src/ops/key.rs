//! `key`: the passwords (key files) that open the repository.
//!
//! Invariants: the key this process opened the repository with is never removed by
//! [`remove`] (the user would lock themselves out mid-session), nor the last key
//! ([`Repository::remove_key`]); a password change adds the new key before removing the old
//! one, so a failure in between leaves both working.

use crate::error::{Error, Result};
use crate::format::keyfile::KdfParams;
use crate::ids::KeyId;
use crate::repo::Repository;

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

/// Replace the key in use by one for `new_password` (default key derivation parameters);
/// returns the new key's id. The repository stays open with the old key's master key.
pub fn change_password(repo: &Repository, new_password: &[u8]) -> Result<KeyId> {
    let id = repo.add_key(new_password, KdfParams::default())?;
    repo.remove_key(&repo.key_id())?;
    Ok(id)
}
