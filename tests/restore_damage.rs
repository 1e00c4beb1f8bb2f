//! A damaged data pack costs a restore only the files that need it (issue 11, defect 5):
//! those are left as `NAME.pbak-partial` and named, every other file is restored exactly with
//! its metadata, and the exit status says that some failed.
mod common;

use common::pbak::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

fn same_metadata(a: &Path, b: &Path) -> bool {
    let (x, y) = (fs::symlink_metadata(a).unwrap(), fs::symlink_metadata(b).unwrap());
    (x.mode(), x.uid(), x.gid(), x.mtime(), x.mtime_nsec(), x.len())
        == (y.mode(), y.uid(), y.gid(), y.mtime(), y.mtime_nsec(), y.len())
}

#[test]
fn damaged_pack_leaves_only_its_files_partial() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    for d in 0..4 {
        fs::create_dir_all(src.join(format!("d{d}"))).unwrap();
        for i in 0..10 {
            let f = src.join(format!("d{d}/f{i}"));
            fs::write(&f, prng(d * 100 + i + 1, 100_000)).unwrap();
            fs::set_permissions(&f, fs::Permissions::from_mode(0o640 + (i as u32 % 2) * 0o004)).unwrap();
            sh(&format!("touch -d '2020-01-0{} 12:00:0{}' '{}'", d + 1, i, f.display()));
        }
        sh(&format!(
            "touch -d '2019-05-05' '{}'",
            src.join(format!("d{d}")).display()
        ));
    }
    let p = Pbak::new(dir.path().join("repo"));
    p.init_pack_mib(1);
    p.ok(&["backup", src.to_str().unwrap()]);
    // The largest pack holds file data (trees are small); flip bytes in its middle.
    let packs = sh(&format!(
        "find '{}/data' -type f -printf '%s %p\\n' | sort -n",
        p.repo.display()
    ));
    let (size, pack) = packs.lines().last().unwrap().split_once(' ').unwrap();
    let size: u64 = size.parse().unwrap();
    assert!(packs.lines().count() >= 3, "want several packs:\n{packs}");
    let mut bytes = fs::read(pack).unwrap();
    for b in &mut bytes[(size / 2) as usize..(size / 2) as usize + 64] {
        *b ^= 0x55;
    }
    fs::set_permissions(pack, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(pack, &bytes).unwrap();

    let target = dir.path().join("target");
    let spec = format!("latest:{}", src.display());
    let o = p.run(&["restore", &spec, "--target", target.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    eprintln!("{err}");
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("pbak-partial"), "{err}");
    let (mut good, mut partial) = (0, 0);
    for d in 0..4 {
        for i in 0..10 {
            let rel = format!("d{d}/f{i}");
            let (s, t) = (src.join(&rel), target.join(&rel));
            if t.exists() {
                let cmp = Command::new("cmp").arg(&s).arg(&t).status().unwrap();
                assert!(cmp.success(), "{rel} differs");
                assert!(same_metadata(&s, &t), "{rel}: metadata differs");
                good += 1;
            } else {
                assert!(target.join(format!("{rel}.pbak-partial")).exists(), "{rel} missing");
                assert!(
                    err.contains(&format!("{rel}: data damaged")) || err.contains('…'),
                    "{rel} not named:\n{err}"
                );
                partial += 1;
            }
        }
        let rel = format!("d{d}");
        assert!(
            same_metadata(&src.join(&rel), &target.join(&rel)),
            "{rel}: metadata differs"
        );
    }
    assert!(partial > 0 && good > 0, "{good} good, {partial} partial:\n{err}");
    assert!(
        err.contains(&format!("the data of {partial} of 40 restored files")),
        "{err}"
    );
}

/// Flip one byte of `path` at `at`.
fn flip(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x20], at).unwrap();
}

/// Defect 5's second half: a blob whose first copy is damaged is read from another pack that
/// holds a copy of it. The copies come from a backup that ran with no index (as two hosts
/// storing the same file at once would) and `repair index` listing both packs.
#[test]
fn a_damaged_blob_is_read_from_its_copy_in_another_pack() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big"), prng(77, 3 << 20)).unwrap();
    fs::write(src.join("small"), b"small").unwrap();
    let p = Pbak::new(dir.path().join("repo"));
    p.init_pack_mib(1);
    p.ok(&["--no-cache", "backup", "-q", "--host", "a", src.to_str().unwrap()]);
    let before: Vec<String> = sh(&format!("find '{}/data' -type f -size +300k", p.repo.display()))
        .lines()
        .map(String::from)
        .collect();
    sh(&format!("rm '{}'/index/*", p.repo.display()));
    p.ok(&["--no-cache", "backup", "-q", "--host", "b", src.to_str().unwrap()]);
    p.ok(&["--no-cache", "repair", "index"]);
    let data: Vec<String> = sh(&format!("find '{}/data' -type f -size +300k", p.repo.display()))
        .lines()
        .map(String::from)
        .collect();
    assert!(data.len() > before.len() && !before.is_empty(), "{before:?} {data:?}");
    // Damage each data pack in turn: every blob still has one sound copy, and one of the
    // damaged packs is the first location of some blob, so the fallback is what restores it.
    for (n, pack) in data.iter().enumerate() {
        flip(Path::new(pack), 100);
        let out = dir.path().join(format!("out{n}"));
        let o = p.run(&["--no-cache", "restore", "latest", "--target", out.to_str().unwrap()]);
        flip(Path::new(pack), 100);
        assert!(o.status.success(), "{pack}: {}", String::from_utf8_lossy(&o.stderr));
        let d = sh(&format!(
            "diff -r '{}' '{}' && echo SAME",
            src.display(),
            out.join(src.strip_prefix("/").unwrap()).display()
        ));
        assert_eq!(d.trim(), "SAME", "{pack}");
    }
}
