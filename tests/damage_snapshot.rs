//! One damaged snapshot object and stray names in `snapshots/` and `index/` (issue 11,
//! defect 4): every command but `check` carries on with a warning naming them, `check` reports
//! the damaged object (exit 1), `forget <id>` removes it by name, and `check` is clean after.
//! Commands run with `--no-cache`, so the damaged bytes are what they read.
mod common;

use common::pbak::*;
use std::fs;
use std::process::Output;

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn a_damaged_snapshot_and_stray_names_stay_local() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    let p = Pbak::new(dir.path().join("repo"));
    p.init();
    for i in 0..3 {
        fs::write(src.join(format!("f{i}")), format!("version {i}").repeat(100)).unwrap();
        p.ok(&["--no-cache", "backup", src.to_str().unwrap()]);
    }
    let snaps: serde_json::Value = serde_json::from_str(&p.ok(&["--no-cache", "snapshots", "--json"])).unwrap();
    let ids: Vec<String> = snaps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    let (first, bad) = (&ids[0], &ids[1]);
    fs::write(p.repo.join("snapshots").join(bad), b"garbage, not a sealed snapshot").unwrap();
    fs::write(p.repo.join("snapshots/README"), b"not a snapshot").unwrap();
    fs::write(p.repo.join("index/README"), b"not an index file").unwrap();

    let o = p.run(&["--no-cache", "snapshots"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("2 snapshots"), "{out}");
    assert!(
        out.contains(&format!(
            "pbak: warning: skipping corrupt snapshot object snapshots/{bad}"
        )),
        "{out}"
    );
    assert!(out.contains("pbak: warning: skipping snapshots/README"), "{out}");

    let target = dir.path().join("restored");
    p.ok(&["--no-cache", "restore", first, "--target", target.to_str().unwrap()]);
    let restored = target.join(src.strip_prefix("/").unwrap());
    assert_eq!(
        fs::read(restored.join("f0")).unwrap(),
        fs::read(src.join("f0")).unwrap()
    );
    let o = p.run(&["--no-cache", "backup", src.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("index/README"), "{}", text(&o));

    let o = p.run(&["--no-cache", "check"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("snapshot object snapshots/{bad} is damaged")),
        "{}",
        text(&o)
    );

    p.ok(&["--no-cache", "forget", "--keep-last", "1"]);
    p.ok(&["--no-cache", "prune", "--delete-after", "0s"]);
    assert!(
        p.repo.join("snapshots").join(bad).exists(),
        "no keep rule selects a damaged snapshot"
    );
    assert!(
        p.repo.join("index/README").exists(),
        "prune deletes old index files, not stray names beside them"
    );
    // Neither a prefix nor `latest` names a damaged snapshot: only its full id.
    assert!(!p.run(&["--no-cache", "forget", &bad[..8]]).status.success());
    let out = p.ok(&["--no-cache", "forget", bad]);
    assert!(
        out.contains(&format!("removed damaged snapshot object snapshots/{bad}")),
        "{out}"
    );
    assert!(!p.repo.join("snapshots").join(bad).exists());

    let o = p.run(&["--no-cache", "check", "--read-data"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("no errors found"), "{}", text(&o));
    let target = dir.path().join("latest");
    p.ok(&["--no-cache", "restore", "latest", "--target", target.to_str().unwrap()]);
    let restored = target.join(src.strip_prefix("/").unwrap());
    assert_eq!(
        fs::read(restored.join("f2")).unwrap(),
        fs::read(src.join("f2")).unwrap()
    );
}

/// Prune deletes what no index file lists as used: with an index file it cannot read, it
/// stops before deleting anything, and says which file.
#[test]
fn prune_stops_on_a_damaged_index_file_before_deleting() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    let p = Pbak::new(dir.path().join("repo"));
    p.init();
    for i in 0..2 {
        fs::write(src.join("f"), format!("version {i}").repeat(1000)).unwrap();
        p.ok(&["--no-cache", "backup", src.to_str().unwrap()]);
    }
    p.ok(&["--no-cache", "forget", "--keep-last", "1"]);
    let files = |d: &str| sh(&format!("cd '{}' && find {d} -type f | sort", p.repo.display()));
    let index = files("index");
    let victim = index.lines().next().unwrap().to_string();
    fs::write(p.repo.join(&victim), b"garbage").unwrap();
    let (data, snapshots) = (files("data"), files("snapshots"));
    let o = p.run(&["--no-cache", "prune", "--delete-after", "0s"]);
    assert!(!o.status.success(), "{}", text(&o));
    let name = victim.rsplit('/').next().unwrap();
    assert!(text(&o).contains(name), "{}", text(&o));
    assert_eq!(
        (files("data"), files("index"), files("snapshots")),
        (data, index, snapshots)
    );
}
