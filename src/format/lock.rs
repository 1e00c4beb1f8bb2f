//! Lock records: a sealed JSON record of who holds a lock and since when. Format 1 kept them
//! under `locks/<id>` for every command; format 2 has one, the prune marker (`prune`), which
//! only prune writes and reads (`repo::marker`).

use super::crypto::{Kind, MasterKey};
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
    /// The holder's boot id and PID namespace: its pid is checked for liveness only where
    /// both match (a container or a cloned VM with the same host name is another machine).
    #[serde(default)]
    pub boot: String,
}

impl LockInfo {
    pub fn seal(&self, key: &MasterKey) -> Vec<u8> {
        key.seal_as(Kind::PruneMarker, &serde_json::to_vec(self).expect("lock serializes"))
    }

    pub fn open(key: &MasterKey, sealed: &[u8]) -> Result<LockInfo, FormatError> {
        Ok(serde_json::from_slice(&key.open_as(Kind::PruneMarker, sealed)?)?)
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
