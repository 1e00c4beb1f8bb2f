//! `pbak stats` (issue 13): sizes from the index and trees only, and exclusive bytes that
//! agree with what a real `forget` + `prune --delete-after 0s --max-unused 0` frees.
mod common;

use common::pbak::*;
use std::fs;
use std::path::Path;

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

/// Sum of the file sizes below `dir`, by find(1), not by pbak.
fn file_bytes(dir: &Path) -> u64 {
    sh(&format!("find '{}' -type f -printf '%s\\n'", dir.display()))
        .lines()
        .map(|l| l.parse::<u64>().unwrap())
        .sum()
}

fn snapshot_of<'a>(st: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    st["per_snapshot"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no {id} in {st}"))
}

#[test]
fn exclusive_bytes_are_what_forget_and_prune_free() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for (d, seed) in [(&a, 1u64), (&b, 2)] {
        fs::create_dir_all(d.join("sub")).unwrap();
        for i in 0..4u64 {
            fs::write(
                d.join(format!("f{i}")),
                prng(seed * 100 + i, 200_000 + 50_000 * i as usize),
            )
            .unwrap();
        }
        // The same content in both trees: referenced by both, freed by neither alone.
        fs::write(d.join("sub/shared"), prng(99, 300_000)).unwrap();
    }
    let p = Pbak::new(dir.path().join("repo"));
    p.init_pack_mib(1);
    let id = |args: &[&str]| p.backup_json(args)["snapshot_id"].as_str().unwrap().to_string();
    let s1 = id(&["--host", "h1", a.to_str().unwrap()]);
    let s2 = id(&["--host", "h2", b.to_str().unwrap()]);
    // The same tree again: s1 and s3 share everything.
    let s3 = id(&["--host", "h1", a.to_str().unwrap()]);

    let out = p.cmd(&["--json", "--ops", "--no-cache", "stats"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let st = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(st["snapshots"], 3);
    assert_eq!(st["unused_bytes"], 0, "{st}");
    let (ra, rb) = (file_bytes(&a), file_bytes(&b));
    assert_eq!(snapshot_of(&st, &s1)["restore_size"], ra);
    assert_eq!(snapshot_of(&st, &s2)["restore_size"], rb);
    assert_eq!(st["restore_size"], 2 * ra + rb);
    // s3 holds the same files; only trees whose metadata changed in between (the
    // directories above `a`, whose times moved) are s1's alone.
    let only_s1 = snapshot_of(&st, &s1)["exclusive_bytes"].as_u64().unwrap();
    assert!(only_s1 < 4096, "{only_s1}");
    assert!(snapshot_of(&st, &s3)["exclusive_bytes"].as_u64().unwrap() < 4096);
    let only_b = snapshot_of(&st, &s2)["exclusive_bytes"].as_u64().unwrap();
    // b's four files (random, so stored about as large as they are) and its trees, not the
    // shared file.
    assert!(only_b > rb - 300_000 && only_b < rb, "{only_b} vs {rb}");
    let hosts = st["per_host"].as_array().unwrap();
    let h = |n: &str| hosts.iter().find(|g| g["name"] == n).unwrap().clone();
    assert_eq!(h("h2")["exclusive_bytes"], only_b);
    assert!(h("h1")["exclusive_bytes"].as_u64().unwrap() > ra - 300_000);
    assert_eq!(h("h1")["snapshots"], 2);
    assert!(st["dedup_ratio"].as_f64().unwrap() > 1.5, "{st}");
    // No data pack was read: what was downloaded is far less than the data.
    let ops = String::from_utf8_lossy(&out.stderr);
    let ops = json(ops.lines().rev().find(|l| l.contains("backend")).unwrap());
    let down = ops["backend"]["bytes_down"].as_u64().unwrap();
    assert!(down < 200_000, "stats downloaded {down} bytes");

    // Forgetting s2 and s1 and pruning at once frees exactly their exclusive bytes.
    p.ok(&["forget", &s2, &s1]);
    let after_forget = json(&p.ok(&["--json", "stats"]));
    assert_eq!(after_forget["unused_bytes"], only_b + only_s1, "{after_forget}");
    let pr = json(&p.ok(&["--json", "prune", "--delete-after", "0s", "--max-unused", "0"]));
    assert_eq!(pr["bytes_freed"], only_b + only_s1, "{pr}");
    let after = json(&p.ok(&["--json", "stats"]));
    assert_eq!(after["unused_bytes"], 0, "{after}");
    assert_eq!(
        after["repository_size"].as_u64().unwrap(),
        st["repository_size"].as_u64().unwrap() - only_b - only_s1
    );

    // Filters choose what is shown, not what exclusivity is reckoned against.
    let one = json(&p.ok(&["--json", "stats", &s3[..8]]));
    assert_eq!(one["per_snapshot"].as_array().unwrap().len(), 1);
    assert_eq!(one["snapshots"], 1, "s3 alone is left");
    assert!(one["per_snapshot"][0]["exclusive_bytes"].as_u64().unwrap() > ra - 300_000);
    let text = p.ok(&["stats", "--host", "h1"]);
    assert!(text.contains("restore size") && text.contains(&s3[..8]), "{text}");
    let none = p.run(&["stats", "--host", "nobody"]);
    assert_eq!(none.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&none.stderr).contains("no snapshot matches"));
}
