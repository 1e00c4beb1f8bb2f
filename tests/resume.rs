//! kill -9 in the middle of a backup: the repository stays consistent and the next run does not
//! store again the packs the killed run had already indexed.
mod common;

use common::pbak::*;
use std::fs;
use std::time::{Duration, Instant};

#[test]
fn killed_backup_resumes_without_reuploading_indexed_packs() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    for i in 0..24 {
        fs::write(src.join(format!("f{i:02}")), prng(1000 + i, 4 << 20)).unwrap();
    }
    let p = Pbak::new(dir.path().join("repo"));
    p.init_pack_mib(4);
    let mut child = p
        .cmd(&["backup", src.to_str().unwrap()])
        .env("PBAK_THREADS", "1")
        .spawn()
        .unwrap();
    // Wait until the first index file (written every 8 packs) exists, then kill -9.
    let t = Instant::now();
    let index_dir = p.repo.join("index");
    while fs::read_dir(&index_dir).map(|d| d.count()).unwrap_or(0) == 0 {
        assert!(t.elapsed() < Duration::from_secs(120), "no index written");
        assert!(
            child.try_wait().unwrap().is_none(),
            "backup finished before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        p.ok(&["snapshots", "--json"]).trim() == "[]",
        "no snapshot from the killed run"
    );
    // Packs stored after the last index file are in no index: warnings (exit 1), no error.
    let c = p.run(&["--json", "check"]);
    let rep: serde_json::Value = serde_json::from_slice(&c.stdout).unwrap();
    assert!(matches!(c.status.code(), Some(0 | 1)), "{rep}");
    assert!(rep["errors"].as_array().unwrap().is_empty(), "{rep}");
    let warnings = rep["warnings"].as_array().unwrap();
    assert_eq!(
        warnings.len() as u64,
        rep["unreferenced_packs"].as_u64().unwrap(),
        "{rep}"
    );
    let spools = || {
        fs::read_dir(p.repo.join(".tmp"))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("pack-"))
                    .count()
            })
            .unwrap_or(0)
    };
    // The killed run was filling packs on disk (usually two); check ignores them and the next
    // prune removes them. One more is planted so the count is never zero.
    fs::write(p.repo.join(".tmp/pack-planted"), b"partial").unwrap();
    let left = spools();
    eprintln!("partly written packs after kill -9: {}", left - 1);
    let rep: serde_json::Value =
        serde_json::from_str(p.ok(&["--json", "prune", "--delete-after", "0s"]).trim()).unwrap();
    assert_eq!(rep["temp_packs_removed"].as_u64(), Some(left as u64), "{rep}");
    assert_eq!(spools(), 0);
    let r = p.backup_json(&[src.to_str().unwrap()]);
    let added = r["bytes_added"].as_u64().unwrap();
    assert!(
        added < (384u64 << 20) - 7 * (16 << 20),
        "resumed run stored {added} bytes again"
    );
    let target = dir.path().join("out");
    p.ok(&["restore", "latest", "--target", target.to_str().unwrap(), "--verify"]);
    p.ok(&["check", "--read-data"]);
}
