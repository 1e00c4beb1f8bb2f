//! Lock records (`locks/<id>`, format version 1): a sealed JSON record of who holds a lock,
//! since when, and whether it is exclusive. Taking and refreshing locks is `repo::lock`.

use super::crypto::MasterKey;
use super::FormatError;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockInfo {
    pub time: i64,
    pub host: String,
    pub user: String,
    pub pid: u32,
    pub exclusive: bool,
    /// What the holder is doing (`backup`, `prune`, ...).
    pub command: String,
}

impl LockInfo {
    pub fn seal(&self, key: &MasterKey) -> Vec<u8> {
        key.seal(&serde_json::to_vec(self).expect("lock serializes"))
    }

    pub fn open(key: &MasterKey, sealed: &[u8]) -> Result<LockInfo, FormatError> {
        Ok(serde_json::from_slice(&key.open(sealed)?)?)
    }

    pub fn describe(&self) -> String {
        let when = chrono::DateTime::from_timestamp(self.time, 0)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_default();
        format!(
            "{} lock by `{}` of {}@{} pid {} (refreshed {when})",
            if self.exclusive { "an exclusive" } else { "a shared" },
            self.command,
            self.user,
            self.host,
            self.pid
        )
    }
}
