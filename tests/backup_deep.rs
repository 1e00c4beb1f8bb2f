//! Trees deeper than a walk thread's default stack (issue 11, defect 3: 550 levels aborted the
//! backup): backup, check, ls and restore of 600 and 1,800 nested directories (1,800 single
//! letter levels is near what `PATH_MAX` lets a path name) succeed and restore them exactly.
mod common;

use common::pbak::*;
use std::fs;
use std::path::{Path, PathBuf};

/// `levels` nested directories `d` below `src`, a file at the bottom and one every 100 levels.
fn deep_tree(src: &Path, levels: usize) -> PathBuf {
    let mut p = src.to_path_buf();
    for i in 0..levels {
        p.push("d");
        if i % 100 == 0 {
            fs::create_dir_all(&p).unwrap();
            fs::write(p.join("f"), format!("level {i}")).unwrap();
        }
    }
    fs::create_dir_all(&p).unwrap();
    fs::write(p.join("bottom"), b"the deepest file").unwrap();
    p
}

/// Type, size, mode and path of every entry, sorted (`find` handles any depth).
fn find_listing(root: &Path) -> String {
    let mut l: Vec<String> = sh(&format!("cd '{}' && find . -printf '%y %s %m %p\\n'", root.display()))
        .lines()
        .filter(|l| !l.starts_with("d "))
        .map(String::from)
        .collect();
    l.sort();
    l.join("\n")
}

fn round_trip(levels: usize) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("s");
    let bottom = deep_tree(&src, levels);
    let p = Pbak::new(dir.path().join("r"));
    p.init();
    let s = p.backup_json(&[src.to_str().unwrap()]);
    assert_eq!(s["partial"], false, "{s}");
    p.ok(&["check"]);
    let ls = p.ok(&["ls", "latest"]);
    assert!(
        ls.lines().any(|l| l.ends_with("/d/bottom")),
        "ls misses the deepest file"
    );
    assert!(ls.lines().count() >= levels, "{} lines", ls.lines().count());
    let target = dir.path().join("t");
    p.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let restored = target.join(src.strip_prefix("/").unwrap());
    assert_eq!(find_listing(&src), find_listing(&restored));
    let rel = bottom.strip_prefix(&src).unwrap();
    assert_eq!(
        fs::read(restored.join(rel).join("bottom")).unwrap(),
        b"the deepest file"
    );
    // A second backup walks the parent snapshot's trees as deep.
    let s = p.backup_json(&[src.to_str().unwrap()]);
    assert_eq!(s["partial"], false, "{s}");
}

#[test]
fn six_hundred_levels_back_up_check_list_and_restore() {
    round_trip(600);
}

#[test]
fn eighteen_hundred_levels_back_up_check_list_and_restore() {
    round_trip(1800);
}
