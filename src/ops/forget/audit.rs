//! The audit log of `forget`: one JSON object per decision, one per line, appended.
//!
//! Invariants: the lines of a run are appended with one write and made durable before the
//! first snapshot is deleted, so no deletion goes unlogged (a run that dies after logging may
//! log a removal that did not happen; the next run logs that snapshot again). A dry run
//! writes nothing. The file is created readable by its owner only: it names hosts and paths.

use super::retention::Reason;
use super::ForgetGroup;
use crate::error::{Error, Result};
use serde::Serialize;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// One decision, as logged and as `forget --json` prints it.
#[derive(Debug, Serialize)]
pub struct Decision<'a> {
    /// When the decision was made (the `now` the `within` rules counted back from), RFC 3339 UTC.
    pub time: String,
    /// The full snapshot id, or for a damaged snapshot object its name (`snapshots/…`).
    pub snapshot: String,
    /// The snapshot's time, RFC 3339 UTC, and as the zone saw it (absent for damaged objects).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_local_time: Option<String>,
    pub host: &'a str,
    pub paths: &'a [String],
    pub tags: &'a [String],
    /// The retention group (per `--group-by`).
    pub group: &'a str,
    /// The policy that decided; `null` when none selects the snapshot (it is kept).
    pub policy: Option<&'a str>,
    /// `keep` or `remove`.
    pub action: &'static str,
    /// Every rule that keeps it, with its bucket; for a removal named on the command line
    /// `snapshot-id`, for a damaged object `damaged`; empty when no rule keeps it.
    pub reasons: Vec<Reason>,
    /// The zone the buckets are computed in.
    pub timezone: &'a str,
    pub dry_run: bool,
}

/// The context every decision of a run shares.
#[derive(Clone, Copy, Debug)]
pub struct Run<'a> {
    pub now: chrono::DateTime<chrono::Utc>,
    pub zone: &'a super::zone::Zone,
    pub dry_run: bool,
}

impl Run<'_> {
    fn stamp(t: chrono::DateTime<chrono::Utc>) -> String {
        t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    /// The decisions of one group, oldest snapshot first.
    pub fn group<'a>(&'a self, g: &'a ForgetGroup) -> Vec<Decision<'a>> {
        g.snapshots
            .iter()
            .map(|v| Decision {
                time: Self::stamp(self.now),
                snapshot: v.id.to_hex(),
                snapshot_time: Some(Self::stamp(v.snapshot.datetime())),
                snapshot_local_time: Some(self.zone.format(v.snapshot.datetime())),
                host: &v.snapshot.host,
                paths: &v.snapshot.paths,
                tags: &v.snapshot.tags,
                group: &g.key,
                policy: g.policy.as_deref(),
                action: if v.keep { "keep" } else { "remove" },
                reasons: v.reasons.clone(),
                timezone: self.zone.name(),
                dry_run: self.dry_run,
            })
            .collect()
    }

    /// The removal of a damaged snapshot object, known by its name only.
    pub fn damaged<'a>(&'a self, name: &str) -> Decision<'a> {
        Decision {
            time: Self::stamp(self.now),
            snapshot: name.to_string(),
            snapshot_time: None,
            snapshot_local_time: None,
            host: "",
            paths: &[],
            tags: &[],
            group: "",
            policy: None,
            action: "remove",
            reasons: vec![Reason::new("damaged", None)],
            timezone: self.zone.name(),
            dry_run: self.dry_run,
        }
    }
}

/// Append `decisions` to `path` as JSON lines, durably.
pub fn append(path: &Path, decisions: &[Decision]) -> Result<()> {
    let io = |e: std::io::Error| {
        Error::Usage(format!(
            "cannot append to the audit log {}: {e}; fix its path or permissions (nothing was deleted)",
            path.display()
        ))
    };
    let mut text = String::new();
    for d in decisions {
        text.push_str(&serde_json::to_string(d).expect("a decision serializes"));
        text.push('\n');
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_data().map_err(io)
}
