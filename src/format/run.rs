//! Run records (`runs/<time>-<id>`, docs/FORMAT.md §8.4): what a backup, prune, check, restore or
//! forget did, written by every host so that `cost` and `status` see the whole fleet. A run
//! file is JSON, sealed as [`crate::format::crypto::Kind::Run`]; unknown fields are ignored,
//! so later versions may add some.

use serde::{Deserialize, Serialize};

/// Backend operations by B2 transaction class, and bytes moved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Ops {
    pub class_a: u64,
    pub class_b: u64,
    pub class_c: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

impl Ops {
    pub fn add(&mut self, o: &Ops) {
        self.class_a += o.class_a;
        self.class_b += o.class_b;
        self.class_c += o.class_c;
        self.bytes_up += o.bytes_up;
        self.bytes_down += o.bytes_down;
    }
}

/// One run (or, after compaction, `count` runs of one host and command on one UTC day,
/// summed; `time` is then the last one's).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunRecord {
    /// Unix seconds, UTC, when the run ended.
    pub time: i64,
    pub host: String,
    /// `backup`, `snapshot-backup`, `prune`, `forget`, `check`, `restore`.
    pub command: String,
    pub exit_code: i32,
    /// The error's first line, if the run failed.
    pub error: Option<String>,
    pub duration_ms: u64,
    /// The snapshots a backup wrote.
    pub snapshots: Vec<String>,
    pub paths: Vec<String>,
    pub bytes_added: u64,
    pub bytes_freed: u64,
    /// Stored bytes of the repository's packs after the run, where the run knew it.
    pub stored_bytes: Option<u64>,
    pub ops: Ops,
    /// For `check`: problems found (errors make it fail).
    pub check_errors: Option<u64>,
    pub check_warnings: Option<u64>,
    /// How many runs this record sums (1 for a single run).
    pub count: u64,
    pub failures: u64,
}

/// The plaintext of one `runs/` object: records, and the run files a compaction folded into
/// this one (readers skip those if they still exist; prune deletes them).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RunFile {
    pub records: Vec<RunRecord>,
    pub replaces: Vec<String>,
}

impl RunFile {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("serializable")
    }
    pub fn decode(b: &[u8]) -> Result<RunFile, String> {
        serde_json::from_slice(b).map_err(|e| format!("bad run record: {e}"))
    }
}
