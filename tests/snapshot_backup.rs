//! `pbak snapshot-backup` on real Btrfs filesystems (loop devices).
mod common;

use common::pbak::*;
use common::{btrfs_or_skip, subvol_create};
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

fn subvol(mnt: &Path, name: &str) -> std::path::PathBuf {
    let p = mnt.join(name);
    subvol_create(&p);
    p
}

#[test]
fn restores_the_snapshot_while_a_writer_changes_the_live_subvolume() {
    let Some(fs_) = btrfs_or_skip("snapshot_backup_consistency") else {
        return;
    };
    let mnt = fs_.path();
    let home = subvol(mnt, "home");
    make_tree(&home.join("alice"), 11);
    fs::write(home.join("log"), b"start\n").unwrap();
    let snaps = mnt.join("snaps");
    let p = Pbak::new(mnt.join("repo"));
    p.init();

    let stop = AtomicBool::new(false);
    let out = std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                use std::io::Write;
                let mut f = fs::OpenOptions::new().append(true).open(home.join("log")).unwrap();
                writeln!(f, "line {i}").unwrap();
                fs::write(home.join("alice/small.txt"), format!("changed {i}")).unwrap();
                i += 1;
            }
        });
        let o = p.ok(&[
            "snapshot-backup",
            "--snapshot-dir",
            snaps.to_str().unwrap(),
            home.to_str().unwrap(),
        ]);
        stop.store(true, Ordering::Relaxed);
        o
    });
    assert!(out.contains("snapshot"), "{out}");
    let local: Vec<_> = fs::read_dir(&snaps).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(local.len(), 1);
    let json: Vec<serde_json::Value> = serde_json::from_str(&p.ok(&["snapshots", "--json"])).unwrap();
    assert_eq!(
        json[0]["paths"][0],
        home.to_str().unwrap(),
        "the original path is recorded"
    );
    assert!(json[0]["btrfs"]["generation"].as_u64().unwrap() > 0);

    let target = mnt.join("restore");
    p.ok(&["restore", "latest", "--target", target.to_str().unwrap(), "--verify"]);
    // Equal to the read-only snapshot (the point in time), not to the live, changing subvolume.
    assert_same_tree(&local[0], &target.join(home.strip_prefix("/").unwrap()));
}

#[test]
fn unchanged_second_run_reuses_everything_and_retention_keeps_the_newest() {
    let Some(fs_) = btrfs_or_skip("snapshot_backup_retention") else {
        return;
    };
    let mnt = fs_.path();
    let data = subvol(mnt, "data");
    fs::create_dir(data.join("d")).unwrap();
    fs::write(data.join("d/f"), prng(3, 3 << 20)).unwrap();
    let p = Pbak::new(mnt.join("repo"));
    p.init();
    let mut added = Vec::new();
    for _ in 0..3 {
        let o = p.ok(&["snapshot-backup", "--json", "--keep-last", "2", data.to_str().unwrap()]);
        let v: serde_json::Value = serde_json::from_str(o.lines().last().unwrap()).unwrap();
        added.push((v["bytes_added"].as_u64().unwrap(), v["bytes_read"].as_u64().unwrap()));
        std::thread::sleep(std::time::Duration::from_millis(1100)); // snapshot names have 1 s resolution
    }
    assert!(added[0].0 > 3 << 20);
    // Unchanged: nothing read again; at most a tree blob for an ancestor outside the
    // subvolume (such as /tmp, which other tests change concurrently).
    for (bytes_added, bytes_read) in &added[1..] {
        assert_eq!(*bytes_read, 0, "{added:?}");
        assert!(
            *bytes_added < 2048,
            "an unchanged subvolume adds (almost) nothing: {added:?}"
        );
    }
    let local = p.ok(&["btrfs", "list", data.to_str().unwrap()]);
    assert_eq!(local.lines().count(), 2, "{local}");
    // The newest local snapshot is the one the newest repository snapshot was read from.
    let snaps: Vec<serde_json::Value> = serde_json::from_str(&p.ok(&["snapshots", "--json"])).unwrap();
    let newest = snaps.last().unwrap()["btrfs"]["snapshot_path"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(local.lines().last().unwrap().ends_with(&newest), "{local} / {newest}");
    // Even keep-last 0-ish rules by hand never delete it.
    let o = p.ok(&[
        "btrfs",
        "prune",
        "--keep-within",
        "1h",
        "--keep-last",
        "1",
        data.to_str().unwrap(),
        "--dry-run",
    ]);
    assert!(!o.contains(&newest));
    assert!(p
        .ok(&["btrfs", "prune", "--keep-last", "1", data.to_str().unwrap()])
        .contains("deleted"));
    assert_eq!(p.ok(&["btrfs", "list", data.to_str().unwrap()]).lines().count(), 1);
}

#[test]
fn errors_name_the_problem_and_other_subvolumes_still_run() {
    let Some(fs_) = btrfs_or_skip("snapshot_backup_errors") else {
        return;
    };
    let mnt = fs_.path();
    let good = subvol(mnt, "good");
    fs::write(good.join("f"), b"x").unwrap();
    let plain = good.join("plain-dir");
    fs::create_dir(&plain).unwrap();
    let p = Pbak::new(mnt.join("repo"));
    p.init();
    let o = p.run(&["snapshot-backup", plain.to_str().unwrap(), good.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("plain-dir") && err.to_lowercase().contains("subvolume"),
        "{err}"
    );
    assert_eq!(
        p.ok(&["snapshots", "--json"]).matches("\"id\"").count(),
        1,
        "the good subvolume was backed up"
    );

    let tmp = tempfile::tempdir().unwrap();
    let o = p.run(&["snapshot-backup", tmp.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Btrfs"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
