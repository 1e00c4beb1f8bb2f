//! An unchanged backup adds nothing: reads that only move access times (a listing, `find`,
//! a user opening files, the previous backup itself) make no new tree, so the second
//! snapshot has the first one's root tree and the repository grows by the snapshot alone.
mod common;

use common::pbak::*;
use std::fs;

fn repo_bytes(p: &std::path::Path) -> u64 {
    sh(&format!(
        "find '{}' -type f -printf '%s\\n' | awk '{{s+=$1}} END {{print s+0}}'",
        p.display()
    ))
    .trim()
    .parse()
    .unwrap()
}

#[test]
fn access_times_alone_make_no_new_tree() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src, 17);
    let p = Pbak::new(dir.path().join("repo"));
    p.init();
    // Access times older than the modification times, so that reading moves them (relatime).
    sh(&format!(
        "find '{}' ! -type l -exec touch -a -d @981173106 {{}} +",
        src.display()
    ));
    // Of the files: listing the directories (find itself does) moves theirs.
    let atimes = || sh(&format!("find '{}' -type f -printf '%p %A@\\n' | sort", src.display()));
    p.ok(&["backup", "--host", "h", src.to_str().unwrap()]);
    let before = repo_bytes(&p.repo);
    let after_first = atimes();
    assert!(
        after_first.lines().all(|l| l.contains(" 981173106.")),
        "the backup itself moved no atime:\n{after_first}"
    );
    // Users read every file and list every directory.
    sh(&format!(
        "find '{0}' -type f -exec cat {{}} + > /dev/null && ls -laR '{0}' > /dev/null",
        src.display()
    ));
    let moved = atimes().lines().filter(|l| !l.contains(" 981173106.")).count();
    assert!(
        moved > 3,
        "reading moved the access times (a relatime or strictatime mount): {moved}"
    );
    p.ok(&["backup", "--host", "h", src.to_str().unwrap()]);
    let snaps: Vec<serde_json::Value> = serde_json::from_str(&p.ok(&["snapshots", "--json"])).unwrap();
    assert_eq!(snaps.len(), 2);
    // The tree of `src` (its ancestors' nodes, /tmp's among them, change with what else the
    // machine does there).
    let tree = |snap: &serde_json::Value| -> serde_json::Value {
        let spec = format!("{}:{}", snap["id"].as_str().unwrap(), src.display());
        serde_json::from_str::<serde_json::Value>(&p.ok(&["cat", "tree", &spec])).unwrap()["id"].clone()
    };
    assert_eq!(tree(&snaps[0]), tree(&snaps[1]), "the same tree for the source");
    let added = repo_bytes(&p.repo) - before;
    assert!(added < 4096, "an unchanged backup added {added} bytes");

    // Any other change still makes a new tree: a mode change of one directory.
    sh(&format!(
        "chmod 0700 '{}'",
        src.join(
            fs::read_dir(&src)
                .unwrap()
                .flatten()
                .find(|e| e.path().is_dir())
                .unwrap()
                .file_name()
        )
        .display()
    ));
    p.ok(&["backup", "--host", "h", src.to_str().unwrap()]);
    let snaps: Vec<serde_json::Value> = serde_json::from_str(&p.ok(&["snapshots", "--json"])).unwrap();
    assert_ne!(tree(&snaps[1]), tree(&snaps[2]));
}
