//! Creating and opening a repository: the key files are tried in turn, and the config is
//! opened with the master key the first one that opens yields.

use super::{keys, Repository};
use crate::backends::{Backend, BackendError};
use crate::error::{Error, Result};
use crate::format::config::{self, Config};
use crate::format::crypto::{Kind, MasterKey};
use crate::format::keyfile::{KdfParams, KeyFile, KeyFileError};
use crate::format::layout;
use crate::host::host_user;
use crate::ids::KeyId;

impl Repository {
    /// Create a repository at `backend`, refusing if anything already lives there.
    pub fn init(backend: Backend, password: &[u8], kdf: KdfParams, config: Config) -> Result<Repository> {
        if backend.exists(layout::CONFIG)? || !backend.list(layout::KEYS)?.is_empty() {
            return Err(Error::RepositoryExists(backend.name().to_string()));
        }
        let key = MasterKey::generate();
        let (host, user) = host_user();
        // The key file pins the sealed config it opens; the key file is written first (a
        // store with keys but no config is "not a repository").
        let config_sealed = key.seal_as(Kind::Config, &config.encode());
        let config_hash = *blake3::hash(&config_sealed).as_bytes();
        let kf = KeyFile::create(&key, password, kdf, &host, &user, &config_hash)
            .map_err(|e| Error::Usage(e.to_string()))?;
        let bytes = kf.encode();
        let key_id = KeyId(*blake3::hash(&bytes).as_bytes());
        backend.put(&layout::key(&key_id), bytes)?;
        backend.put(layout::CONFIG, config_sealed)?;
        Ok(Repository {
            backend,
            key,
            config,
            config_hash,
            key_id,
            cache: None,
        })
    }

    /// Open with a password, trying every key file.
    pub fn open(backend: Backend, password: &[u8]) -> Result<Repository> {
        let config_sealed = match backend.get(layout::CONFIG) {
            Ok(b) => b,
            Err(BackendError::NotFound { .. }) => {
                let name = backend.name().to_string();
                let has_anything = backend.list(layout::KEYS).map(|v| !v.is_empty()).unwrap_or(false);
                return Err(if has_anything || local_dir_exists(&name) {
                    Error::NotARepository(name)
                } else {
                    Error::NoRepository(name)
                });
            }
            Err(e) => return Err(e.into()),
        };
        // Key files that do not decode are named, never taken for a wrong password: as
        // warnings beside a key that opens (or beside other bad keys), and as the error when
        // the only key file is malformed.
        let mut malformed = Vec::new();
        let mut decoded = 0;
        let warn_malformed = |malformed: &[String]| {
            for m in malformed {
                eprintln!("pbak: warning: {m}; it was skipped");
            }
        };
        for key_id in keys::listed_keys(&backend)? {
            let name = layout::key(&key_id);
            let bytes = backend.get(&name)?;
            let mut skip = |reason: String| malformed.push(format!("malformed key file {name}: {reason}"));
            let kf = match KeyFile::decode(&bytes) {
                Ok(kf) => kf,
                Err(e) => {
                    skip(e.to_string());
                    continue;
                }
            };
            decoded += 1;
            let mut key = match kf.open(password) {
                Ok(key) => key,
                Err(KeyFileError::WrongPassword) => continue,
                Err(KeyFileError::Malformed(reason)) => {
                    skip(reason);
                    continue;
                }
            };
            warn_malformed(&malformed);
            let config_hash = *blake3::hash(&config_sealed).as_bytes();
            let pin = kf.pin().map_err(|e| Error::corrupt(&name, e))?;
            if pin.is_some_and(|p| p != config_hash) {
                return Err(Error::corrupt(
                    layout::CONFIG,
                    format!("it is not the config {name} was made for (the object was replaced)"),
                ));
            }
            let config = open_config(&key, &config_sealed, pin.is_some())?;
            key.accept_unbound(config.version == 1 || config.legacy_objects);
            return Ok(Repository {
                backend,
                key,
                config,
                config_hash,
                key_id,
                cache: None,
            });
        }
        match (decoded, malformed.len()) {
            (0, 1) => Err(Error::Usage(format!(
                "{}; restore it from a copy, or open the repository with another key",
                malformed[0]
            ))),
            (0, n) if n > 1 => {
                warn_malformed(&malformed);
                Err(Error::Usage(format!(
                    "no key file of {n} decodes (see the warnings above)"
                )))
            }
            _ => {
                warn_malformed(&malformed);
                Err(Error::WrongPassword {
                    repo: backend.name().to_string(),
                })
            }
        }
    }
}

impl Repository {
    /// Fail with the way out when this is a format-1 repository: writing commands (backup,
    /// forget, prune) need format 2, whose backups take no locks and whose prune is
    /// two-phase; reading commands work on both.
    pub fn require_writable_format(&self) -> Result<()> {
        match self.config.version {
            v if v >= config::FORMAT_VERSION => Ok(()),
            _ => Err(Error::NeedsMigration("writing to it".into())),
        }
    }

    /// `pbak migrate`: upgrade a format-1 repository to format 2 (the config's version; the
    /// existing index files and snapshots are read as they are) and remove the lock objects
    /// format 1 left. Returns whether anything changed.
    pub fn migrate(&mut self) -> Result<bool> {
        if self.config.version >= config::FORMAT_VERSION {
            return Ok(false);
        }
        let mut config = self.config.clone();
        config.version = config::FORMAT_VERSION;
        config.legacy_objects = true;
        let sealed = self.key.seal_as(Kind::Config, &config.encode());
        self.backend.put(layout::CONFIG, sealed.clone())?;
        self.backend.barrier()?;
        self.config = config;
        self.config_hash = *blake3::hash(&sealed).as_bytes();
        for l in self.backend.list(layout::LOCKS)? {
            let _ = self.backend.delete(&layout::lock(&l));
        }
        Ok(true)
    }
}

/// The config, opened with the master key: its version is checked before the strict decode,
/// since a newer format may change fields. A config sealed without its kind (format 1) is
/// accepted only through a key that pins no config, and only as version 1: through such a
/// key a replaced config can at most make the repository refuse writes.
fn open_config(key: &MasterKey, sealed: &[u8], pinned: bool) -> Result<Config> {
    let bad = || Error::corrupt("config", "does not authenticate with the master key");
    let (plain, bound) = match key.open_as(Kind::Config, sealed) {
        Ok(p) => (p, true),
        Err(_) if !pinned => (key.open(sealed).map_err(|_| bad())?, false),
        Err(_) => return Err(bad()),
    };
    let version = serde_json::from_slice::<serde_json::Value>(&plain)
        .ok()
        .and_then(|v| v.get("version")?.as_u64())
        .ok_or_else(|| Error::corrupt("config", "no format version"))?;
    if !(1..=config::FORMAT_VERSION as u64).contains(&version) {
        return Err(Error::UnsupportedVersion(version as u32));
    }
    if !bound && version != 1 {
        return Err(Error::corrupt(
            "config",
            "a format-2 config must be sealed as one (the object was replaced)",
        ));
    }
    Config::decode(&plain).map_err(|e| Error::corrupt("config", e))
}

fn local_dir_exists(name: &str) -> bool {
    std::path::Path::new(name).is_dir()
}
