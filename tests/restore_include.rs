//! `restore --include` creates directories only on the way to a match, from many threads at
//! once; a directory must be marked created only once it exists, or a sibling's file lands in
//! a directory not made yet (issue 11, defect 8: it failed 1 run in 70).
mod common;

use common::pbak::*;
use std::fs;
use std::path::Path;

const RUNS: usize = 40;

#[test]
fn include_restores_create_every_directory_first() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    // Wide and deep: many files in parallel subtrees need the same few missing directories.
    for a in 0..6 {
        for b in 0..6 {
            let d = src.join(format!("a{a}/b{b}/c"));
            fs::create_dir_all(&d).unwrap();
            for i in 0..4 {
                fs::write(d.join(format!("f{i}.keep")), format!("{a}{b}{i}")).unwrap();
                fs::write(d.join(format!("f{i}.skip")), b"no").unwrap();
            }
            fs::write(src.join(format!("a{a}/b{b}/g.keep")), b"g").unwrap();
        }
    }
    let p = Pbak::new(dir.path().join("repo"));
    p.init();
    p.ok(&["backup", src.to_str().unwrap()]);
    let spec = format!("latest:{}", src.display());
    for run in 0..RUNS {
        let target = dir.path().join(format!("t{run}"));
        p.ok(&[
            "restore",
            &spec,
            "--target",
            target.to_str().unwrap(),
            "--include",
            "*.keep",
        ]);
        let listing = sh(&format!("cd '{}' && find . -type f | sort", target.display()));
        assert_eq!(listing.lines().count(), 6 * 6 * 5, "run {run}:\n{listing}");
        assert!(!listing.contains(".skip"), "run {run}: {listing}");
        for l in listing.lines() {
            let rel = Path::new(l);
            assert_eq!(fs::read(target.join(rel)).unwrap(), fs::read(src.join(rel)).unwrap());
        }
    }
}
