//! `pbak dump` (issue 15): a directory's tar stream, extracted by GNU tar, is the source tree
//! again (names, types, modes, owners, sizes, nanosecond mtimes, link targets, hard links,
//! xattrs, contents, holes as zeros); a file's dump is its bytes.
mod common;

use common::pbak::*;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

/// What tar must bring back, by find(1) and getfattr(1): everything but atimes and device ids.
fn tree_listing(root: &Path) -> String {
    sh(&format!(
        "cd '{}' && find . -printf '%p|%y|%m|%U:%G|%s|%T@|%l|%n\\n' | sort && getfattr -R -h -d -m '^user\\.' . 2>/dev/null",
        root.display()
    ))
}

#[test]
fn a_dumped_directory_extracts_with_gnu_tar_to_the_same_tree() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src, 11);
    let p = Pbak::new(dir.path().join("repo"));
    p.init();
    let id = p.backup_id(&src);
    let rel = src.to_str().unwrap().trim_start_matches('/').to_string();

    let out = dir.path().join("out");
    fs::create_dir(&out).unwrap();
    let mut dump = p.cmd(&["-q", "dump", &id[..8], &rel]);
    dump.stdout(Stdio::piped());
    let mut child = dump.spawn().unwrap();
    let tar = Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf", "-", "-C"])
        .arg(&out)
        .stdin(child.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(tar.status.success(), "tar: {}", String::from_utf8_lossy(&tar.stderr));
    assert!(child.wait().unwrap().success(), "dump failed");
    let got = out.join(&rel);
    let (a, b) = (tree_listing(&src), tree_listing(&got));
    assert_eq!(a, b, "find/getfattr listings differ");
    // ACLs come back (GNU tar restores the system.posix_acl_* xattrs), and the sparse file
    // comes back sparse: only its data regions were in the stream.
    let acls = |root: &Path| sh(&format!("cd '{}' && getfacl -R -p -n . 2>/dev/null", root.display()));
    assert!(acls(&src).contains("user:1234:rw-"), "{}", acls(&src));
    assert_eq!(acls(&src), acls(&got), "ACLs differ");
    let blocks = |p: &Path| {
        sh(&format!("stat -c %b '{}'", p.display()))
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    let size = fs::metadata(src.join("sparse")).unwrap().len();
    assert!(blocks(&src.join("sparse")) * 512 < size / 4, "the source is sparse");
    assert!(
        blocks(&got.join("sparse")) * 512 < size / 4,
        "extracted sparse: {} blocks of {size} bytes",
        blocks(&got.join("sparse"))
    );
    let d = Command::new("diff")
        .args(DIFF_ARGS)
        .arg(&src)
        .arg(&got)
        .output()
        .unwrap();
    assert!(d.status.success(), "diff -r: {}", String::from_utf8_lossy(&d.stdout));

    // One file: its bytes, holes included.
    let f = p
        .cmd(&["dump", &format!("{}:{rel}/sparse", &id[..8])])
        .output()
        .unwrap();
    assert!(f.status.success());
    assert_eq!(f.stdout, fs::read(src.join("sparse")).unwrap());
    // A missing path is one line.
    let missing = p.run(&["dump", &id[..8], &format!("{rel}/nope")]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&missing.stderr).lines().count(), 1);
}
