//! `restore --overwrite always|if-changed|never`, `--delete` and `--dry-run` against a target
//! that already holds a restore (issue 15), checked with independent tools (`diff -r`, `find`,
//! `stat`, rsync through `assert_same_tree`), and a restore killed with SIGKILL that
//! `--overwrite if-changed` completes, skipping what was already finished.
mod common;

use common::pbak::*;
use serde_json::Value;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// A repository holding one backup of a tree; [`Fixture::root`] is where a restore of it
/// into a target puts the source (`TARGET/SRC`, so that the source's root directory is
/// restored with its metadata too).
struct Fixture {
    dir: tempfile::TempDir,
    p: Pbak,
    src: PathBuf,
}

impl Fixture {
    fn new(make: impl Fn(&Path)) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir(&src).unwrap();
        make(&src);
        let p = Pbak::new(dir.path().join("repo"));
        p.init_pack_mib(1);
        p.ok(&["backup", "-q", src.to_str().unwrap()]);
        Fixture { dir, p, src }
    }

    fn spec(&self) -> String {
        "latest".into()
    }

    fn root(&self, t: &Path) -> PathBuf {
        t.join(self.src.strip_prefix("/").unwrap())
    }

    fn target(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `restore latest:SRC --target T ARGS --json -v`: exit code, summary, stderr.
    fn restore(&self, t: &Path, args: &[&str]) -> (i32, Value, String) {
        let spec = self.spec();
        let mut a = vec!["--json", "restore", &spec, "--target", t.to_str().unwrap(), "-v"];
        a.extend_from_slice(args);
        let o = self.p.run(&a);
        let summary = serde_json::from_slice::<Value>(&o.stdout).map_or(Value::Null, |v| v["summary"].clone());
        (
            o.status.code().unwrap_or(-1),
            summary,
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    fn restore_ok(&self, t: &Path, args: &[&str]) -> Value {
        let (code, sum, err) = self.restore(t, args);
        assert_eq!(code, 0, "restore {args:?}: {err}");
        sum
    }
}

/// Twelve files in three directories, one of them 3 MiB (several chunks and packs).
fn small_tree(src: &Path) {
    for d in ["a", "a/b", "c"] {
        fs::create_dir_all(src.join(d)).unwrap();
        for i in 0..4 {
            fs::write(
                src.join(format!("{d}/f{i}")),
                prng(i + d.len() as u64 * 10, 2000 + i as usize * 333),
            )
            .unwrap();
        }
    }
    fs::write(src.join("a/big"), prng(99, 3 << 20)).unwrap();
    std::os::unix::fs::symlink("f0", src.join("c/link")).unwrap();
    sh(&format!(
        "find '{}' -exec touch -h -d '2022-05-06 07:08:09.123456789' {{}} +",
        src.display()
    ));
}

/// `changes` of a summary with `verb`, as paths below `root`, sorted.
fn changed(sum: &Value, verb: &str, root: &Path) -> Vec<String> {
    let mut v: Vec<String> = sum["changes"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c.as_str()).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| c.strip_prefix(&format!("{verb} ")))
        .map(|p| Path::new(p).strip_prefix(root).unwrap().display().to_string())
        .collect();
    v.sort();
    v
}

fn n(sum: &Value, k: &str) -> u64 {
    sum[k].as_u64().unwrap_or_else(|| panic!("no {k} in {sum}"))
}

fn inode(p: &Path) -> u64 {
    fs::symlink_metadata(p).unwrap().ino()
}

/// Every entry's path, type, size, mode, mtime (ns) and inode, from find(1): what a dry
/// run must leave exactly as it was.
fn state(t: &Path) -> String {
    sh(&format!(
        "cd '{}' && find . -printf '%p %y %s %m %T@ %i\\n' | sort",
        t.display()
    ))
}

#[test]
fn a_non_empty_target_is_refused_without_overwrite() {
    let f = Fixture::new(small_tree);
    let t = f.target("t");
    fs::create_dir(&t).unwrap();
    fs::write(t.join("mine"), b"precious").unwrap();
    let (code, _, err) = f.restore(&t, &[]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("not empty") && err.contains("--overwrite"), "{err}");
    assert_eq!(sh(&format!("ls -A '{}'", t.display())), "mine\n", "nothing written");
    // A dry run says the same; an empty or missing target needs no flag.
    assert_eq!(f.restore(&t, &["--dry-run"]).0, 1);
    let empty = f.target("empty");
    fs::create_dir(&empty).unwrap();
    f.restore_ok(&empty, &[]);
    f.restore_ok(&f.target("new"), &[]);
    assert_same_tree(&f.src, &f.root(&empty));
}

/// Restore into `t`, then: `a/f1` rewritten with other bytes of the same size and mtime
/// (only the content check can see it), `a/f2`'s mtime touched, `c/f3` deleted.
fn restore_and_edit(f: &Fixture, t: &Path) -> (Vec<u8>, Value) {
    let first = f.restore_ok(t, &[]);
    assert_eq!((n(&first, "written"), n(&first, "skipped")), (13, 0), "{first}");
    let other = prng(12345, fs::metadata(f.root(t).join("a/f1")).unwrap().len() as usize);
    fs::write(f.root(t).join("a/f1"), &other).unwrap();
    sh(&format!(
        "touch -d '2022-05-06 07:08:09.123456789' '{0}/a/f1' && touch '{0}/a/f2' && rm '{0}/c/f3'",
        f.root(t).display()
    ));
    (other, first)
}

#[test]
fn if_changed_rewrites_exactly_the_changed_files() {
    let f = Fixture::new(small_tree);
    let t = f.target("t");
    let (other, _) = restore_and_edit(&f, &t);
    let kept: Vec<(PathBuf, u64)> = ["a/big", "a/f0", "a/b/f0", "c/f0"]
        .iter()
        .map(|p| (f.root(&t).join(p), inode(&f.root(&t).join(p))))
        .collect();
    // The quick check (size and mtime) cannot see an edit that kept both...
    let sum = f.restore_ok(&t, &["--overwrite", "if-changed"]);
    assert_eq!(changed(&sum, "write", &f.root(&t)), ["a/f2", "c/f3", "c/link"], "{sum}");
    assert_eq!((n(&sum, "written"), n(&sum, "skipped"), n(&sum, "files")), (2, 11, 13));
    // Rewritten files get their metadata when their last chunk is written; the metadata
    // pass must not take them for entries replaced meanwhile.
    assert_eq!(sum["warnings"].as_array().map(|w| w.len()), Some(0), "{sum}");
    assert_eq!(fs::read(f.root(&t).join("a/f1")).unwrap(), other);
    // ...which --verify finds by reading every kept file's chunks.
    let sum = f.restore_ok(&t, &["--overwrite", "if-changed", "--verify"]);
    assert_eq!(changed(&sum, "write", &f.root(&t)), ["a/f1", "c/link"], "{sum}");
    assert_eq!(
        (n(&sum, "written"), n(&sum, "skipped"), n(&sum, "verified_files")),
        (1, 12, 13)
    );
    for (p, ino) in kept {
        assert_eq!(inode(&p), ino, "{} was rewritten", p.display());
    }
    assert_same_tree(&f.src, &f.root(&t));
    // Run again: nothing left to write.
    let again = f.restore_ok(&t, &["--overwrite", "if-changed"]);
    assert_eq!((n(&again, "written"), n(&again, "skipped")), (0, 13), "{again}");
}

#[test]
fn never_keeps_what_is_there_and_always_replaces_it() {
    let f = Fixture::new(small_tree);
    let t = f.target("t");
    let (other, _) = restore_and_edit(&f, &t);
    let touched = sh(&format!("stat -c %Y '{}/a/f2'", f.root(&t).display()));
    let sum = f.restore_ok(&t, &["--overwrite", "never"]);
    assert_eq!(changed(&sum, "write", &f.root(&t)), ["c/f3"], "{sum}");
    assert_eq!((n(&sum, "written"), n(&sum, "skipped")), (1, 13), "{sum}");
    assert_eq!(
        fs::read(f.root(&t).join("a/f1")).unwrap(),
        other,
        "never kept the edited file"
    );
    assert_eq!(
        sh(&format!("stat -c %Y '{}/a/f2'", f.root(&t).display())),
        touched,
        "and its times"
    );

    let sum = f.restore_ok(&t, &["--overwrite", "always"]);
    assert_eq!((n(&sum, "written"), n(&sum, "skipped")), (13, 0), "{sum}");
    assert_eq!(changed(&sum, "write", &f.root(&t)).len(), 14, "every entry: {sum}");
    assert_same_tree(&f.src, &f.root(&t));
}

#[test]
fn delete_removes_extras_keeps_excluded_and_never_follows_a_symlink() {
    let f = Fixture::new(small_tree);
    let t = f.target("t");
    f.restore_ok(&t, &[]);
    let outside = f.target("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("precious"), b"must survive").unwrap();
    sh(&format!(
        "cd '{}' && echo x > extra && mkdir -p xdir/deeper && echo y > xdir/deeper/y && echo l > a/keep.log \
         && mkdir logs && echo z > logs/z.log && ln -s '{}' a/b/evil && ln -s '{}' c/evil2",
        f.root(&t).display(),
        outside.display(),
        outside.join("precious").display()
    ));
    // `c` swapped for a symlink to the outside directory: the restore replaces the symlink
    // with a directory and deletes the moved-away original.
    sh(&format!(
        "mv '{0}/c' '{0}/c.orig' && ln -s '{1}' '{0}/c'",
        f.root(&t).display(),
        outside.display()
    ));
    let sum = f.restore_ok(&t, &["--overwrite", "if-changed", "--delete", "--exclude", "*.log"]);
    assert_eq!(
        changed(&sum, "delete", &f.root(&t)),
        ["a/b/evil", "c.orig", "extra", "xdir"],
        "{sum}"
    );
    // extra; xdir, xdir/deeper, xdir/deeper/y; a/b/evil; c.orig with its 6 entries.
    assert_eq!(n(&sum, "deleted"), 12, "{sum}");
    assert_eq!(sh(&format!("ls -A '{}'", outside.display())), "precious\n");
    assert_eq!(fs::read(outside.join("precious")).unwrap(), b"must survive");
    assert_eq!(
        fs::read(f.root(&t).join("a/keep.log")).unwrap(),
        b"l\n",
        "excluded: kept"
    );
    assert_eq!(
        fs::read(f.root(&t).join("logs/z.log")).unwrap(),
        b"z\n",
        "a directory holding only excluded files stays"
    );
    assert!(
        fs::symlink_metadata(f.root(&t).join("c")).unwrap().is_dir(),
        "the symlink at c was replaced"
    );
    // Contents are compared at the end (reading them now would move atimes).
    let listing = |r: &Path| {
        sh(&format!(
            "cd '{}' && find . ! -name '*.log' ! -name logs -printf '%p %y %s %m %T@ %l\\n' | sort",
            r.display()
        ))
    };
    assert_eq!(listing(&f.src), listing(&f.root(&t)));
    fs::remove_file(f.root(&t).join("a/keep.log")).unwrap();
    fs::remove_dir_all(f.root(&t).join("logs")).unwrap();
    let sum = f.restore_ok(&t, &["--overwrite", "if-changed", "--delete"]);
    assert_eq!((n(&sum, "written"), n(&sum, "deleted")), (0, 0), "{sum}");
    assert_same_tree(&f.src, &f.root(&t));
}

#[test]
fn dry_run_writes_and_deletes_nothing_and_counts_what_a_restore_would() {
    let f = Fixture::new(small_tree);
    let t = f.target("t");
    restore_and_edit(&f, &t);
    sh(&format!(
        "cd '{}' && echo x > extra && mkdir xdir && echo y > xdir/y",
        f.root(&t).display()
    ));
    let before = state(&t);
    let args = ["--overwrite", "if-changed", "--delete", "--verify"];
    let plan = f.restore_ok(&t, &[&args[..], &["--dry-run"]].concat());
    assert_eq!(state(&t), before, "a dry run changed the target");
    assert_eq!(plan["dry_run"], true);
    assert_eq!(
        (n(&plan, "written"), n(&plan, "skipped"), n(&plan, "deleted")),
        (3, 10, 3),
        "{plan}"
    );
    let real = f.restore_ok(&t, &args);
    for k in ["written", "skipped", "deleted", "files", "bytes"] {
        assert_eq!(real[k], plan[k], "{k}: the dry run predicts the restore");
    }
    for verb in ["write", "skip", "delete"] {
        assert_eq!(
            changed(&real, verb, &f.root(&t)),
            changed(&plan, verb, &f.root(&t)),
            "{verb}"
        );
    }
    assert_same_tree(&f.src, &f.root(&t));
    // The text output says it too.
    let text = f.p.ok(&[
        "restore",
        &f.spec(),
        "--target",
        t.to_str().unwrap(),
        "--overwrite",
        "if-changed",
        "--dry-run",
    ]);
    assert!(text.contains("would write 0 files, would skip 13"), "{text}");
}

/// 2,000 files of 4–60 KiB in 20 directories and four of 4 MiB (about 80 MiB, so that the
/// content pass, where files complete, is most of a restore), dated 2022.
fn many_files(src: &Path) {
    for d in 0..20u64 {
        let dir = src.join(format!("d{d:02}"));
        fs::create_dir(&dir).unwrap();
        for i in 0..100u64 {
            fs::write(
                dir.join(format!("f{i:03}")),
                prng(d * 1000 + i, 4096 + (i as usize * 5807) % (56 << 10)),
            )
            .unwrap();
        }
    }
    for i in 0..4 {
        fs::write(src.join(format!("large{i}")), prng(777 + i, 4 << 20)).unwrap();
    }
    sh(&format!(
        "find '{}' -exec touch -d '2022-01-02 03:04:05' {{}} +",
        src.display()
    ));
}

#[test]
fn a_restore_killed_with_sigkill_is_completed_by_if_changed() {
    let f = Fixture::new(many_files);
    let spec = f.spec();
    let run = |t: &Path| {
        let mut c = f.p.cmd(&["-q", "restore", &spec, "--target", t.to_str().unwrap()]);
        c.env("PBAK_THREADS", "2").stdout(Stdio::null()).stderr(Stdio::piped());
        c
    };
    // The second run, with the metadata cache warm, is the one the kills fall within.
    let full = (0..2)
        .map(|i| {
            let t = f.target(&format!("full{i}"));
            let start = Instant::now();
            let o = run(&t).output().unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            start.elapsed()
        })
        .min()
        .unwrap();
    let (mut killed, mut skipped_total) = (0, 0);
    // Seeded kills until one left a partial restore that the rerun resumed (at least 3 runs).
    let mut resumed = 0;
    // A loaded machine narrows the window in which files are written: up to 40 tries.
    for seed in 1..=40u64 {
        if seed > 3 && resumed > 0 {
            break;
        }
        let t = f.target(&format!("t{seed}"));
        // Between a fifth and nine tenths of a full run.
        let delay = full.mul_f64(0.2 + 0.7 * (Rng::seeded(seed).below(1000) as f64 / 1000.0));
        let start = Instant::now();
        let mut child = run(&t).spawn().unwrap();
        let finished = loop {
            if child.try_wait().unwrap().is_some() {
                break true;
            }
            if start.elapsed() >= delay {
                break false;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        child.kill().unwrap();
        child.wait().unwrap();
        killed += usize::from(!finished);
        let (code, sum, err) = f.restore(&t, &["--overwrite", "if-changed"]);
        assert_eq!(code, 0, "seed {seed} (killed after {delay:?}): {err}");
        assert_eq!(n(&sum, "written") + n(&sum, "skipped"), 2004, "seed {seed}: {sum}");
        skipped_total += n(&sum, "skipped");
        resumed += usize::from(!finished && n(&sum, "skipped") > 0 && n(&sum, "written") > 0);
        eprintln!(
            "seed {seed}: killed after {delay:?} of {full:?} (finished: {finished}); the rerun wrote {} files, skipped {}",
            sum["written"], sum["skipped"]
        );
        let d = sh(&format!(
            "diff -r '{}' '{}' && echo SAME",
            f.src.display(),
            f.root(&t).display()
        ));
        assert_eq!(d.trim(), "SAME", "seed {seed}");
        assert_eq!(
            sh(&format!(
                "cd '{}' && find . -printf '%p %s %m %T@\\n' | sort",
                f.src.display()
            )),
            sh(&format!(
                "cd '{}' && find . -printf '%p %s %m %T@\\n' | sort",
                f.root(&t).display()
            )),
            "seed {seed}: sizes, modes, mtimes"
        );
    }
    assert!(killed > 0, "no run was killed before it finished: the delays are wrong");
    assert!(skipped_total > 0, "no rerun skipped anything: it does not resume");
    assert!(
        resumed > 0,
        "no killed restore was resumed (files both skipped and written)"
    );
}
