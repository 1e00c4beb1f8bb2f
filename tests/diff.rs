//! `pbak diff` (issue 15) against a hand-built expectation on a scripted edit sequence.
mod common;

use common::pbak::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;

#[test]
fn diff_reports_a_scripted_edit_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    for d in ["keep", "gone", "meta", "same/deep"] {
        fs::create_dir_all(src.join(d)).unwrap();
    }
    fs::write(src.join("keep/edit.txt"), "one\n").unwrap();
    fs::write(src.join("keep/untouched"), prng(1, 50_000)).unwrap();
    fs::write(src.join("gone/a"), "a").unwrap();
    fs::write(src.join("gone/b"), "b").unwrap();
    fs::write(src.join("meta/chmod"), "x").unwrap();
    fs::write(src.join("same/deep/f"), prng(2, 10_000)).unwrap();
    fs::write(src.join("becomes-dir"), "file").unwrap();
    sh(&format!(
        "find '{}' -exec touch -h -d '2024-01-02 03:04:05' {{}} +",
        src.display()
    ));
    let p = Pbak::new(dir.path().join("repo"));
    p.init();
    let s1 = p.backup_id(&src);

    // The edit sequence.
    fs::write(src.join("keep/edit.txt"), "one\ntwo\n").unwrap();
    fs::remove_dir_all(src.join("gone")).unwrap();
    fs::set_permissions(src.join("meta/chmod"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::create_dir(src.join("new")).unwrap();
    fs::write(src.join("new/n1"), "12345").unwrap();
    fs::remove_file(src.join("becomes-dir")).unwrap();
    fs::create_dir(src.join("becomes-dir")).unwrap();
    fs::write(src.join("becomes-dir/inner"), "in").unwrap();
    // Directory times as before, so only what was edited differs.
    for d in ["", "keep", "meta", "new", "becomes-dir"] {
        sh(&format!(
            "touch -h -d '2024-01-02 03:04:05' '{}'",
            src.join(d).display()
        ));
    }
    let s2 = p.backup_id(&src);

    let sub = src.to_str().unwrap().trim_start_matches('/').to_string();
    let out = p.ok(&["diff", &s1[..8], &format!("{}:{sub}", &s2[..8])]);
    let lines: Vec<&str> = out.lines().take_while(|l| !l.is_empty()).collect();
    let want = [
        "T    becomes-dir",
        "+    becomes-dir/inner",
        "-    gone",
        "-    gone/a",
        "-    gone/b",
        "M    keep/edit.txt",
        "U    meta/chmod",
        "+    new",
        "+    new/n1",
    ];
    assert_eq!(lines, want, "{out}");
    assert!(
        out.contains("3 added, 3 removed, 1 modified, 1 metadata only, 1 changed type"),
        "{out}"
    );

    let j: serde_json::Value = serde_json::from_str(&p.ok(&["--json", "diff", &s1, &format!("{s2}:{sub}")])).unwrap();
    assert_eq!(j["totals"]["added"], 3);
    // keep/edit.txt grew by 4 bytes, new/n1 and becomes-dir/inner are 5 and 2; gone/a, gone/b
    // and the old becomes-dir file (4 bytes) went.
    assert_eq!(j["totals"]["bytes_added"], 4 + 5 + 2);
    assert_eq!(j["totals"]["bytes_removed"], 1 + 1 + 4);
    // At least the root, keep and meta on both sides (6), and gone, new and the new
    // becomes-dir on one side (3); `same` may be loaded too (the first backup's reads moved
    // its atime, which trees record), but reports nothing.
    assert!(j["trees_loaded"].as_u64().unwrap() >= 9, "{j}");
    // Equal trees are never loaded: a snapshot against itself loads none.
    let itself: serde_json::Value = serde_json::from_str(&p.ok(&["--json", "diff", &s2, &s2])).unwrap();
    assert_eq!(itself["trees_loaded"], 0, "{itself}");

    // No changes against itself; a file path is refused with one line.
    let none = p.ok(&["diff", &s2, &s2]);
    assert!(none.contains("0 added, 0 removed, 0 modified"), "{none}");
    let bad = p.run(&["diff", &s1, &format!("{s2}:{sub}/keep/edit.txt")]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a directory"));
}
