//! Retention policies: named keep rules, each for the snapshots its `match` selects. The
//! schema of `forget --policy-file` (see `docs/retention.md`); a config file can embed the same
//! [`Policy`] table, so everything here is plain serde with unknown keys refused.
//!
//! Invariants: the first policy whose match selects a snapshot decides it; a snapshot no
//! policy selects is kept; policy names are unique and non-empty.

use super::retention::KeepRules;
use super::zone::Zone;
use crate::error::{Error, Result};
use crate::format::snapshot::Snapshot;
use serde::{Deserialize, Deserializer};
use std::path::Path;

/// A whole policy file: an optional zone, then `[[policy]]` tables in order.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// The zone buckets are computed in; `--timezone` overrides it.
    #[serde(default, deserialize_with = "de_zone")]
    pub timezone: Option<Zone>,
    #[serde(rename = "policy", default)]
    pub policies: Vec<Policy>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub name: String,
    /// Which snapshots it is for; an absent table selects every snapshot.
    #[serde(rename = "match", default)]
    pub selects: Match,
    /// An empty table keeps everything the policy selects.
    pub keep: KeepRules,
}

/// Each field given must hold (an empty field holds for every snapshot).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// The snapshot's host is one of these.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Every path of the snapshot is one of these or below one (whole path components:
    /// `/var/lib/redis` selects `/var/lib/redis/6379`, not `/var/lib/redis-old`).
    #[serde(default)]
    pub paths: Vec<String>,
    /// The snapshot carries all of these tags.
    #[serde(default)]
    pub tags: Vec<String>,
}

impl Match {
    pub fn selects(&self, s: &Snapshot) -> bool {
        let host = self.hosts.is_empty() || self.hosts.contains(&s.host);
        let under = |p: &String| self.paths.iter().any(|pre| Path::new(p).starts_with(pre));
        let paths = self.paths.is_empty() || (!s.paths.is_empty() && s.paths.iter().all(under));
        let tags = self.tags.iter().all(|t| s.tags.contains(t));
        host && paths && tags
    }
}

/// The policy that decides `s`: the first that selects it.
pub fn select<'a>(policies: &'a [Policy], s: &Snapshot) -> Option<&'a Policy> {
    policies.iter().find(|p| p.selects.selects(s))
}

fn de_zone<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Zone>, D::Error> {
    let s = String::deserialize(d)?;
    Zone::named(&s).map(Some).map_err(serde::de::Error::custom)
}

/// Read and check a policy file.
pub fn load(path: &Path) -> Result<PolicyFile> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Usage(format!("cannot read policy file {}: {e}", path.display())))?;
    parse(&text, &path.display().to_string())
}

/// Parse a policy file's text; `origin` names it in errors, which are one line:
/// `ORIGIN line N, key `K`: what is wrong`.
pub fn parse(text: &str, origin: &str) -> Result<PolicyFile> {
    let file: PolicyFile = toml::from_str(text).map_err(|e| {
        let at = e.span().map_or(String::new(), |s| locate(text, s.start));
        let msg = e.message().trim_end().replace('\n', "; ");
        Error::Usage(format!(
            "policy file {origin}{at}: {msg} (the schema is in docs/retention.md)"
        ))
    })?;
    if file.policies.is_empty() {
        return Err(Error::Usage(format!(
            "policy file {origin} has no [[policy]] table: add one (the schema is in docs/retention.md)"
        )));
    }
    check_names(&file.policies).map_err(|why| Error::Usage(format!("policy file {origin}: {why}")))?;
    Ok(file)
}

/// Policy names are non-empty and unique (a policy file's and a config file's `[retention]`).
pub fn check_names(policies: &[Policy]) -> std::result::Result<(), String> {
    for (i, p) in policies.iter().enumerate() {
        if p.name.trim().is_empty() {
            return Err(format!("policy number {} has an empty name: name it", i + 1));
        }
        if policies[..i].iter().any(|q| q.name == p.name) {
            return Err(format!("two policies are named {:?}: rename one", p.name));
        }
    }
    Ok(())
}

/// ` line N, key `K`` for a byte offset: the key is the one assigned on that line, or the
/// table its header opens.
pub fn locate(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line_no = before.matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
    let key = match line.split_once('=') {
        _ if line.starts_with('[') => Some(line.trim_matches(|c| c == '[' || c == ']')),
        Some((k, _)) => Some(k.trim()),
        None => None,
    };
    match key {
        Some(k) if !k.is_empty() => format!(" line {line_no}, key `{k}`"),
        _ => format!(" line {line_no}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::forget::tests::snap;

    #[test]
    fn matching() {
        let m = Match {
            hosts: vec!["hetzner".into(), "contabo".into()],
            paths: vec!["/var/lib/redis".into()],
            tags: vec!["nightly".into()],
        };
        assert!(m.selects(&snap("hetzner", &["/var/lib/redis"], &["nightly", "x"], 0)));
        assert!(m.selects(&snap("contabo", &["/var/lib/redis/6379"], &["nightly"], 0)));
        assert!(!m.selects(&snap("ovh", &["/var/lib/redis"], &["nightly"], 0)));
        assert!(!m.selects(&snap("hetzner", &["/var/lib/redis-old"], &["nightly"], 0)));
        assert!(!m.selects(&snap("hetzner", &["/var/lib/redis", "/etc"], &["nightly"], 0)));
        assert!(!m.selects(&snap("hetzner", &["/var/lib/redis"], &[], 0)));
        assert!(Match::default().selects(&snap("any", &["/"], &[], 0)));
    }

    #[test]
    fn errors_name_the_file_line_and_key() {
        let cases = [
            (
                "[[policy]]\nname = \"a\"\nkeep = { daily = 7 }\nhost = [\"x\"]\n",
                "line 4, key `host`",
            ),
            (
                "[[policy]]\nname = \"a\"\n[policy.keep]\ndaily = \"7\"\n",
                "line 4, key `daily`",
            ),
            (
                "[[policy]]\nname = \"a\"\n[policy.keep]\nwithin = \"2x\"\n",
                "line 4, key `within`",
            ),
            (
                "timezone = \"Mars/Olympus\"\n[[policy]]\nname = \"a\"\nkeep = {}\n",
                "line 1, key `timezone`",
            ),
            ("[[policy]]\nname = \"a\"\n", "missing field `keep`"),
            ("timezone = \"UTC\"\n", "no [[policy]]"),
            (
                "[[policy]]\nname = \"a\"\nkeep = {}\n[[policy]]\nname = \"a\"\nkeep = {}\n",
                "two policies",
            ),
        ];
        for (text, want) in cases {
            let e = parse(text, "p.toml").unwrap_err().to_string();
            assert!(e.starts_with("policy file p.toml") && e.contains(want), "{want}: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
    }
}
