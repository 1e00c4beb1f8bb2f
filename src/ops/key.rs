//! `key`: the passwords (key files) that open the repository.
//!
//! Invariants: the key this process opened the repository with is never removed by
//! [`remove`] (the user would lock themselves out mid-session), nor the last key
//! ([`Repository::remove_key`]); a password change adds the new key before removing the old
//! one, so a failure in between leaves both working, and keeps the old key's Argon2
//! parameters. No key is ever made for an empty password. A key file that does not decode is
//! reported as malformed, by name, never as a wrong password.

use crate::backends::Backend;
use crate::error::{Error, Result};
use crate::format::keyfile::{KdfParams, KeyFile};
use crate::format::layout;
use crate::ids::KeyId;
use crate::repo::Repository;

/// Open the repository with `password`. When no key opens, key files that do not decode are
/// named: if every key file is malformed the error is "malformed key file keys/<id>: …",
/// otherwise a warning names each and the error stays "wrong password". (Only this failure
/// path reads the keys a second time.)
pub fn open(backend: Backend, password: &[u8]) -> Result<Repository> {
    let diag = backend.clone();
    match Repository::open(backend, password) {
        Err(Error::WrongPassword { repo }) => Err(diagnose(&diag).unwrap_or(Error::WrongPassword { repo })),
        r => r,
    }
}

/// The error for a repository none of whose keys decode, after warning about every
/// malformed key; `None` when some key decodes (or none is listed).
fn diagnose(backend: &Backend) -> Option<Error> {
    let names = backend.list(layout::KEYS).ok()?;
    let mut malformed = Vec::new();
    let mut good = 0;
    for n in names.iter().filter(|n| KeyId::from_hex(n).is_some()) {
        let path = layout::in_dir(layout::KEYS, n);
        let Ok(bytes) = backend.get(&path) else { continue };
        match KeyFile::decode(&bytes) {
            Ok(_) => good += 1,
            Err(e) => malformed.push(format!("malformed key file {path}: {e}")),
        }
    }
    if good > 0 || malformed.len() > 1 {
        for m in &malformed {
            eprintln!("pbak: warning: {m}; it was skipped");
        }
    }
    match (good, malformed.len()) {
        (0, 1) => Some(Error::Usage(format!(
            "{}; restore it from a copy, or open the repository with another key",
            malformed[0]
        ))),
        (0, n) if n > 1 => Some(Error::Usage(format!(
            "no key file of {n} decodes (see the warnings above)"
        ))),
        _ => None,
    }
}

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
