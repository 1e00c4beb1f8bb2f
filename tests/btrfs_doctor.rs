//! `pbak btrfs doctor` on loop-device Btrfs mounts with good and bad options.
mod common;

use common::{btrfs_or_skip, run};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// Runs doctor; returns (exit code, stdout).
fn doctor(args: &[&str]) -> (i32, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_pbak"))
        .args(["btrfs", "doctor"])
        .args(args)
        .output()
        .unwrap();
    assert!(o.stderr.is_empty(), "{}", String::from_utf8_lossy(&o.stderr));
    (o.status.code().unwrap(), String::from_utf8(o.stdout).unwrap())
}

/// The one report for `path`, as JSON, with its exit code.
fn report(path: &Path, preset: Option<&str>) -> (i32, Value) {
    let mut a = vec!["--json", path.to_str().unwrap()];
    if let Some(p) = preset {
        a.extend(["--preset", p]);
    }
    let (code, out) = doctor(&a);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    (code, v[0].clone())
}

fn failed(r: &Value) -> Vec<String> {
    r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["ok"] == false)
        .map(|f| f["check"].as_str().unwrap().to_string())
        .collect()
}

fn remount(mnt: &Path, opts: &str) {
    run("mount", &["-o", &format!("remount,{opts}"), mnt.to_str().unwrap()]).unwrap();
}

#[test]
fn doctor_checks_mount_options_and_nocow_against_the_presets() {
    let Some(fs_) = btrfs_or_skip("btrfs_doctor") else {
        return;
    };
    let mnt = fs_.path();

    // Default mount options: relatime, no compression.
    let (code, r) = report(mnt, None);
    assert_eq!(code, 1, "{r}");
    assert_eq!(r["preset"], "general");
    let bad = failed(&r);
    assert!(
        bad.contains(&"noatime".into()) && bad.contains(&"compress=zstd:3".into()),
        "{r}"
    );
    let ssd = r["ssd"] == true;
    if ssd {
        let checks: Vec<_> = r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["check"].clone())
            .collect();
        assert!(checks.contains(&"discard=async".into()), "SSD options checked: {r}");
    }
    let (_, text) = doctor(&[mnt.to_str().unwrap()]);
    assert!(text.contains("WARN  noatime: mount option noatime missing"), "{text}");

    // The general preset's options: all hold.
    remount(mnt, "noatime,compress=zstd:3,space_cache=v2,ssd,discard=async");
    let (code, r) = report(mnt, None);
    assert_eq!((code, failed(&r)), (0, vec![]), "{r}");
    // Listing every Btrfs mount includes this one.
    let (_, all) = doctor(&["--json"]);
    let all: Value = serde_json::from_str(&all).unwrap();
    assert!(all
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["mount_point"] == mnt.to_str().unwrap()));

    // A cache wants zstd:1.
    let cache = mnt.join("cache");
    std::fs::create_dir(&cache).unwrap();
    let (code, r) = report(&cache, Some("cache"));
    assert_eq!((code, failed(&r)), (1, vec!["compress=zstd:1".to_string()]), "{r}");

    // A database directory must be No_COW, and the warning says why.
    let db = mnt.join("postgresql");
    std::fs::create_dir(&db).unwrap();
    let (code, r) = report(&db, Some("database"));
    assert_eq!((code, failed(&r)), (1, vec!["nodatacow".to_string()]), "{r}");
    let (_, text) = doctor(&["--preset", "database", db.to_str().unwrap()]);
    assert!(text.contains("copy-on-write hurts database files"), "{text}");
    run("chattr", &["+C", db.to_str().unwrap()]).unwrap();
    assert_eq!(report(&db, Some("database")).0, 0);
    // ... or the whole filesystem mounted nodatacow.
    let db2 = mnt.join("redis");
    std::fs::create_dir(&db2).unwrap();
    assert_eq!(report(&db2, Some("database")).0, 1);
    remount(mnt, "nodatacow");
    assert_eq!(report(&db2, Some("database")).0, 0);

    // Errors: unknown preset, a path not on Btrfs.
    let o = Command::new(env!("CARGO_BIN_EXE_pbak"))
        .args(["btrfs", "doctor", "--preset", "nope", mnt.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("known presets: database"), "{err}");
    let o = Command::new(env!("CARGO_BIN_EXE_pbak"))
        .args(["btrfs", "doctor", "/proc"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("not on a Btrfs filesystem"));
}
