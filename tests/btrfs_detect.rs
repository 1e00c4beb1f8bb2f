//! Change detection from Btrfs generations in `snapshot-backup`: on randomized edit sequences
//! its snapshots must equal full metadata scans of the same state (same root tree id, so every
//! stored field of every entry), and restore identical to the local snapshot.
mod common;

use common::pbak::*;
use common::{btrfs_or_skip, run, subvol_create};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Fixed seeds: every run checks the same sequences; a failure names its seed and round.
const SEEDS: [u64; 4] = [1, 2, 3, 4];
const ROUNDS: usize = 8;
const EDITS_PER_ROUND: usize = 10;

/// Regular files and directories (the root included) under `root`, sorted.
fn inventory(root: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (mut files, mut dirs) = (Vec::new(), vec![root.to_path_buf()]);
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                dirs.push(e.path());
                stack.push(e.path());
            } else if t.is_file() {
                files.push(e.path());
            }
        }
    }
    files.sort();
    dirs.sort();
    (files, dirs)
}

fn q(p: &Path) -> String {
    format!("'{}'", p.display())
}

/// One random edit of the kinds the issue lists; returns what it did.
fn edit(rng: &mut Rng, root: &Path, n: usize) -> String {
    let (files, dirs) = inventory(root);
    let new_name = |rng: &mut Rng, d: &Path| d.join(format!("n{n}-{}", rng.below(1000)));
    let dir = rng.pick(&dirs).unwrap().clone();
    let sub_dirs: Vec<_> = dirs.iter().filter(|d| *d != root).cloned().collect();
    let Some(file) = rng.pick(&files).cloned() else {
        let p = new_name(rng, &dir);
        fs::write(&p, prng(rng.next(), 5000)).unwrap();
        return format!("create {}", p.display());
    };
    match rng.below(15) {
        0 => {
            let p = new_name(rng, &dir);
            let len = if rng.below(8) == 0 { 3 << 20 } else { rng.below(200_000) };
            fs::write(&p, prng(rng.next(), len)).unwrap();
            format!("create {}", p.display())
        }
        1 => {
            let len = fs::metadata(&file).unwrap().len();
            let off = rng.below(len as usize + 1) as u64;
            let f = fs::OpenOptions::new().write(true).open(&file).unwrap();
            std::os::unix::fs::FileExt::write_all_at(&f, &prng(rng.next(), 100), off.min(len.saturating_sub(100)))
                .unwrap();
            format!("modify in place {}", file.display())
        }
        2 => {
            use std::io::Write;
            let mut f = fs::OpenOptions::new().append(true).open(&file).unwrap();
            f.write_all(&prng(rng.next(), rng.below(70_000) + 1)).unwrap();
            format!("append {}", file.display())
        }
        3 => {
            let len = fs::metadata(&file).unwrap().len();
            let to = if rng.below(3) == 0 { len + (1 << 20) } else { len / 2 };
            fs::OpenOptions::new()
                .write(true)
                .open(&file)
                .unwrap()
                .set_len(to)
                .unwrap();
            format!("truncate {} to {to}", file.display())
        }
        4 => {
            let p = new_name(rng, &dir);
            fs::rename(&file, &p).unwrap();
            format!("rename {} -> {}", file.display(), p.display())
        }
        5 => {
            fs::remove_file(&file).unwrap();
            format!("delete {}", file.display())
        }
        6 => {
            let p = if rng.below(3) == 0 { dir } else { file };
            let mode = [0o600, 0o644, 0o755, 0o4755, 0o700][rng.below(5)];
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            format!("chmod {mode:o} {}", p.display())
        }
        7 => {
            let p = if rng.below(3) == 0 { dir } else { file };
            match rng.below(3) {
                0 => sh(&format!("setfattr -x user.k {} 2>/dev/null || true", q(&p))),
                _ => sh(&format!("setfattr -n user.k -v v{} {}", rng.below(100), q(&p))),
            };
            format!("xattr {}", p.display())
        }
        8 => {
            let p = new_name(rng, &dir);
            fs::hard_link(&file, &p).unwrap();
            format!("hardlink {} -> {}", file.display(), p.display())
        }
        9 => {
            let p = new_name(rng, &dir);
            sh(&format!("cp --reflink=always {} {}", q(&file), q(&p)));
            format!("reflink copy {} -> {}", file.display(), p.display())
        }
        10 => {
            let p = new_name(rng, &dir);
            fs::create_dir(&p).unwrap();
            fs::write(p.join("inside"), prng(rng.next(), 3000)).unwrap();
            format!("mkdir {}", p.display())
        }
        11 => match rng.pick(&sub_dirs) {
            Some(d) => {
                fs::remove_dir_all(d).unwrap();
                format!("rm -r {}", d.display())
            }
            None => "nothing".into(),
        },
        12 => match rng.pick(&sub_dirs) {
            Some(d) if !dir.starts_with(d) => {
                let p = new_name(rng, &dir);
                fs::rename(d, &p).unwrap();
                format!("rename dir {} -> {}", d.display(), p.display())
            }
            _ => "nothing".into(),
        },
        13 => {
            // Same size and mtime, other content: only ctime (and the data extent) tell.
            let md = fs::metadata(&file).unwrap();
            if md.len() > 0 {
                let f = fs::OpenOptions::new().write(true).open(&file).unwrap();
                std::os::unix::fs::FileExt::write_all_at(&f, &[!0u8; 1], 0).unwrap();
                f.set_modified(md.modified().unwrap()).unwrap();
            }
            format!("rewrite keeping mtime {}", file.display())
        }
        _ => {
            let p = new_name(rng, &dir);
            std::os::unix::fs::symlink(&file, &p).unwrap();
            format!("symlink {}", p.display())
        }
    }
}

fn snapshot_json(p: &Pbak, id: &str) -> serde_json::Value {
    let all: Vec<serde_json::Value> = serde_json::from_str(&p.ok(&["snapshots", "--json"])).unwrap();
    all.into_iter().find(|s| s["id"] == id).expect("snapshot listed")
}

fn snapshot_backup(p: &Pbak, sv: &Path, host: &str, dir: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "snapshot-backup",
        "--json",
        "--host",
        host,
        "--snapshot-dir",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args.push(sv.to_str().unwrap());
    serde_json::from_str(p.ok(&args).trim()).unwrap()
}

fn equivalence(seed: u64, mnt: &Path) {
    let sv = mnt.join("sv");
    subvol_create(&sv);
    make_tree(&sv.join("base"), seed);
    for d in ["a/b/c", "x/y", "z"] {
        fs::create_dir_all(sv.join(d)).unwrap();
        fs::write(sv.join(d).join("f"), prng(seed ^ d.len() as u64, 10_000)).unwrap();
    }
    let p = Pbak::new(mnt.join("repo"));
    p.init();
    let mut rng = Rng::seeded(seed);
    let mut log = Vec::new();
    for round in 0..ROUNDS {
        if round > 0 {
            for i in 0..EDITS_PER_ROUND {
                log.push(edit(&mut rng, &sv, round * 100 + i));
            }
        }
        let ctx = || format!("seed {seed} round {round}; edits so far:\n{}", log.join("\n"));
        // One repository, two chains told apart by host: tree ids are comparable.
        let gen_dir = mnt.join(format!("snaps-gen/{round}"));
        let g = snapshot_backup(&p, &sv, "gen", &gen_dir, &[]);
        let f = snapshot_backup(
            &p,
            &sv,
            "full",
            &mnt.join(format!("snaps-full/{round}")),
            &["--full-scan"],
        );
        let want = if round == 0 {
            "metadata-scan"
        } else {
            "btrfs-generation"
        };
        assert_eq!(g["change_detection"], want, "{g}\n{}", ctx());
        assert_eq!(f["change_detection"], "metadata-scan", "{}", ctx());
        let (gs, fs_) = (
            snapshot_json(&p, g["snapshot_id"].as_str().unwrap()),
            snapshot_json(&p, f["snapshot_id"].as_str().unwrap()),
        );
        // The subvolume's tree (ancestors such as /tmp change under other tests).
        let tree = |v: &serde_json::Value| {
            let spec = format!("{}:{}", v["snapshot_id"].as_str().unwrap(), sv.display());
            let t: serde_json::Value = serde_json::from_str(&p.ok(&["cat", "tree", &spec])).unwrap();
            t["id"].as_str().unwrap().to_string()
        };
        assert_eq!(tree(&g), tree(&f), "subvolume trees differ\n{}", ctx());
        for k in ["total_files", "total_bytes", "dirs"] {
            assert_eq!(gs["summary"][k], fs_["summary"][k], "summary {k}\n{}", ctx());
        }
        let target = mnt.join(format!("restore-{round}"));
        p.ok(&[
            "restore",
            g["snapshot_id"].as_str().unwrap(),
            "--target",
            target.to_str().unwrap(),
        ]);
        let local = fs::read_dir(&gen_dir).unwrap().next().unwrap().unwrap().path();
        assert_same_tree(&local, &target.join(sv.strip_prefix("/").unwrap()));
        fs::remove_dir_all(&target).unwrap();
    }
}

#[test]
fn generation_detection_equals_a_full_scan_on_random_edits() {
    for seed in SEEDS {
        let Some(fs_) = btrfs_or_skip("generation_detection_equals_a_full_scan") else {
            return;
        };
        let mnt = fs_.path().to_path_buf();
        if let Err(e) = std::panic::catch_unwind(|| equivalence(seed, &mnt)) {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("equivalence failed for seed {seed}: {msg}");
        }
    }
}

#[test]
fn falls_back_with_one_line_when_the_base_is_unusable() {
    let Some(fs_) = btrfs_or_skip("change_detection_fallback") else {
        return;
    };
    let mnt = fs_.path();
    let sv = mnt.join("data");
    subvol_create(&sv);
    fs::create_dir(sv.join("d")).unwrap();
    fs::write(sv.join("d/f"), b"one").unwrap();
    let p = Pbak::new(mnt.join("repo"));
    p.init();
    let backup = |round: usize, extra: &[&str]| {
        let dir = mnt.join(format!("snaps/{round}"));
        let mut a = vec!["snapshot-backup", "--snapshot-dir", dir.to_str().unwrap()];
        a.extend_from_slice(extra);
        a.push(sv.to_str().unwrap());
        p.ok(&a)
    };
    let line = |out: &str| {
        let l: Vec<_> = out.lines().filter(|l| l.starts_with("change detection:")).collect();
        assert!(l.len() <= 1, "{out}");
        l.first().map(|s| s.to_string())
    };
    let first = backup(0, &[]);
    assert!(line(&first).unwrap().contains("no earlier snapshot"), "{first}");
    let second = backup(1, &[]);
    assert_eq!(line(&second), None, "{second}");
    assert!(second.contains("changes from Btrfs generations"), "{second}");

    // The base local snapshot deleted: say so, scan, and still store the change.
    fs::write(sv.join("d/f"), b"two").unwrap();
    let base = fs::read_dir(mnt.join("snaps/1"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    run("btrfs", &["subvolume", "delete", base.to_str().unwrap()]).unwrap();
    let third = backup(2, &[]);
    let l = line(&third).expect("a fallback line");
    assert!(l.contains("is gone") && l.contains("full metadata scan"), "{l}");
    assert!(
        third.contains("(metadata scan)") && third.contains("1 changed"),
        "{third}"
    );

    // Other exclude options: the parent's tree is not what this walk would make.
    let o = backup(3, &["--exclude", "*.tmp", "--json"]);
    let v: serde_json::Value = serde_json::from_str(o.trim()).unwrap();
    assert_eq!(v["change_detection"], "metadata-scan");
    assert!(
        v["change_detection_fallback"]
            .as_str()
            .unwrap()
            .contains("exclude options"),
        "{v}"
    );

    // --full-scan: a scan on request, without a fallback line.
    let o = backup(4, &["--exclude", "*.tmp", "--full-scan"]);
    assert_eq!(line(&o), None, "{o}");
    assert!(o.contains("(metadata scan)"), "{o}");

    // Most of the tree new since the parent: resolving every name would cost more than the
    // scan, which is used (and says why).
    let many = sv.join("many");
    fs::create_dir(&many).unwrap();
    for i in 0..2100 {
        fs::write(many.join(format!("f{i}")), i.to_string()).unwrap();
    }
    let o = backup(5, &["--exclude", "*.tmp"]);
    let l = line(&o).expect("a cut-over line");
    assert!(
        l.contains("inodes changed since parent snapshot") && l.contains("the scan is faster"),
        "{l}"
    );
    assert!(o.contains("(metadata scan)") && o.contains("2100 new"), "{o}");
    let target = mnt.join("restore");
    p.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(
        fs::read(target.join(sv.strip_prefix("/").unwrap()).join("d/f")).unwrap(),
        b"two"
    );
}
