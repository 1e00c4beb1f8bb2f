//! The procedures of `docs/runbooks.md`, run as the page writes them: each block tagged
//! `<!-- runbook-test: NAME -->` is read from the page, its paths and host names replaced by
//! the test's (on a Btrfs loop filesystem), and every line run by bash with `pbak` on PATH.
//! The results are then compared with independent tools (`diff -r`, `cmp`, the tree listing
//! of `assert_same_tree`).
mod common;

use common::pbak::*;
use common::{btrfs_or_skip, subvol_create};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const PAGE: &str = include_str!("../docs/runbooks.md");

/// The command lines of the block tagged `name`.
fn block(name: &str) -> Vec<String> {
    let tag = format!("<!-- runbook-test: {name} -->");
    let at = PAGE
        .find(&tag)
        .unwrap_or_else(|| panic!("docs/runbooks.md has no block {tag}"));
    let body = PAGE[at..].split("```sh\n").nth(1).expect("a sh block after the tag");
    let body = body.split("```").next().unwrap();
    body.lines()
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect()
}

/// Runs lines of the page with the test's paths: `subst` pairs (page text, test text) are
/// replaced where they start a word (after a space, quote, colon or `=`), longest first.
struct Page {
    subst: Vec<(String, String)>,
    env: Vec<(String, String)>,
}

impl Page {
    fn new(repo: &Path, password: &Path, subst: &[(&str, String)]) -> Page {
        let bin = Path::new(env!("CARGO_BIN_EXE_pbak")).parent().unwrap().to_path_buf();
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
        let mut subst: Vec<(String, String)> = subst.iter().map(|(a, b)| (a.to_string(), b.clone())).collect();
        subst.sort_by_key(|(a, _)| std::cmp::Reverse(a.len()));
        Page {
            subst,
            env: vec![
                ("PATH".into(), path),
                ("PBAK_REPOSITORY".into(), repo.display().to_string()),
                ("PBAK_PASSWORD_FILE".into(), password.display().to_string()),
                (
                    "PBAK_CACHE_DIR".into(),
                    std::env::temp_dir().join("pbak-tests-cache").display().to_string(),
                ),
            ],
        }
    }

    fn rewrite(&self, line: &str) -> String {
        let (mut out, mut i) = (String::new(), 0);
        let b = line.as_bytes();
        'next: while i < b.len() {
            let starts_word = i == 0 || matches!(b[i - 1], b' ' | b'"' | b':' | b'=');
            if starts_word {
                for (from, to) in &self.subst {
                    if line[i..].starts_with(from.as_str()) {
                        out.push_str(to);
                        i += from.len();
                        continue 'next;
                    }
                }
            }
            let c = line[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
        out
    }

    /// Run one line of the page (rewritten) with `vars` set; returns its stdout, and panics
    /// with its output when it fails.
    fn run(&self, line: &str, vars: &[(&str, &str)]) -> String {
        let cmd = self.rewrite(line);
        let mut c = Command::new("bash");
        c.args(["-euo", "pipefail", "-c", &cmd]);
        for v in ["PBAK_PASSWORD", "PBAK_PASSWORD_COMMAND", "PBAK_CONFIG"] {
            c.env_remove(v);
        }
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c.envs(vars.iter().copied());
        let o = c.output().unwrap();
        let (out, err) = (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr),
        );
        assert!(
            o.status.success(),
            "page line {line:?}\nran as {cmd:?}: {}\n{out}{err}",
            o.status
        );
        out
    }

    fn run_all(&self, name: &str, vars: &[(&str, &str)]) -> Vec<String> {
        block(name).iter().map(|l| self.run(l, vars)).collect()
    }
}

struct Fleet {
    _fs: common::BtrfsLoop,
    mnt: PathBuf,
    pbak: Pbak,
    password: PathBuf,
    _dir: tempfile::TempDir,
}

/// A Btrfs loop filesystem with a repository on it and a password file.
fn fleet(test: &str) -> Option<Fleet> {
    let fs_ = btrfs_or_skip(test)?;
    let mnt = fs_.path().to_path_buf();
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("password");
    fs::write(&password, "correct horse\n").unwrap();
    fs::set_permissions(&password, fs::Permissions::from_mode(0o600)).unwrap();
    let pbak = Pbak::new(mnt.join("repo"));
    pbak.init();
    Some(Fleet {
        _fs: fs_,
        mnt,
        pbak,
        password,
        _dir: dir,
    })
}

impl Fleet {
    fn page(&self, extra: &[(&str, String)]) -> Page {
        let mut subst = vec![
            ("/home", self.mnt.join("home").display().to_string()),
            ("/etc", self.mnt.join("etc").display().to_string()),
            ("/mnt/new", self.mnt.join("new").display().to_string()),
            ("/tmp/", format!("{}/", self.mnt.join("tmp").display())),
            ("/var/tmp/", format!("{}/", self.mnt.join("tmp").display())),
        ];
        subst.extend(extra.iter().cloned());
        fs::create_dir_all(self.mnt.join("tmp")).unwrap();
        Page::new(&self.pbak.repo, &self.password, &subst)
    }

    fn home(&self) -> PathBuf {
        self.mnt.join("home")
    }

    fn snapshots(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.pbak.ok(&["snapshots", "--json"])).unwrap()
    }
}

/// `make_tree` without its device nodes, fifos and sockets, which `diff -r` cannot compare
/// (`assert_same_tree` covers them in the other tests).
fn make_home(root: &Path, seed: u64) {
    make_tree(root, seed);
    sh(&format!(
        "find '{}' \\( -type b -o -type c -o -type p -o -type s \\) -delete",
        root.display()
    ));
}

/// A copy of `src` on the same filesystem (directory sizes and link counts are Btrfs's), to
/// compare with after the damage.
fn keep_copy(src: &Path, dst: &Path) {
    sh(&format!("cp -a '{}' '{}'", src.display(), dst.display()));
}

fn diff_r(a: &Path, b: &Path) {
    let o = Command::new("diff")
        .args(["-r", "--no-dereference"])
        .arg(a)
        .arg(b)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "diff -r {} {}:\n{}",
        a.display(),
        b.display(),
        String::from_utf8_lossy(&o.stdout)
    );
}

/// Damage a tree: remove one file, change another, add an extra one.
fn damage(data: &Path) {
    sh(&format!(
        "cd '{}' && f=$(find . -type f -size +0 | LC_ALL=C sort | head -1) && rm -f \"$f\" && \
         g=$(find . -type f -size +0 | LC_ALL=C sort | tail -1) && echo ransom > \"$g\" && echo extra > extra-file",
        data.display()
    ));
}

#[test]
fn restore_one_file_from_last_tuesday() {
    let Some(f) = fleet("runbook_restore_file") else { return };
    let home = f.home();
    subvol_create(&home);
    fs::create_dir_all(home.join("alice")).unwrap();
    // Monday, Tuesday and Wednesday nights: three versions of the file.
    for (day, offset) in [("monday", "-2d"), ("tuesday", "-1d"), ("wednesday", "+0d")] {
        fs::write(home.join("alice/report.odt"), format!("the {day} version\n")).unwrap();
        let c = f.pbak.cmd(&["backup", "--host", "zephyrus", home.to_str().unwrap()]);
        let mut ft = Command::new("faketime");
        ft.args(["-f", offset]).arg(c.get_program()).args(c.get_args());
        for (k, v) in c.get_envs() {
            match v {
                Some(v) => ft.env(k, v),
                None => ft.env_remove(k),
            };
        }
        let o = ft.output().expect("faketime (Debian's faketime package)");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let snaps = f.snapshots();
    assert_eq!(snaps.len(), 3);
    let page = f.page(&[("zephyrus", "zephyrus".into())]);
    let out = page.run_all("find-versions", &[]);
    for s in &snaps {
        let short = s["short_id"].as_str().unwrap();
        assert!(out[0].contains(short), "snapshots lists {short}: {}", out[0]);
        assert!(out[1].contains(short), "find lists the version in {short}: {}", out[1]);
    }
    assert_eq!(out[1].matches("report.odt").count(), 3, "{}", out[1]);
    // Tuesday's is the middle one by time.
    let tuesday = snaps[1]["id"].as_str().unwrap();
    page.run_all("restore-file", &[("ID", tuesday)]);
    let tmp = f.mnt.join("tmp");
    assert_eq!(
        fs::read_to_string(tmp.join("restored/report.odt")).unwrap(),
        "the tuesday version\n"
    );
    assert_eq!(
        fs::read_to_string(tmp.join("report-tuesday.odt")).unwrap(),
        "the tuesday version\n"
    );
    let o = Command::new("cmp")
        .arg(tmp.join("restored/report.odt"))
        .arg(tmp.join("report-tuesday.odt"))
        .status()
        .unwrap();
    assert!(o.success());
}

#[test]
fn roll_back_a_subvolume_from_a_local_snapshot() {
    let Some(f) = fleet("runbook_rollback_local") else {
        return;
    };
    let home = f.home();
    subvol_create(&home);
    make_home(&home.join("data"), 71);
    let page = f.page(&[]);
    // A backup first (its local snapshot is protected), then an hourly snapshot by hand.
    f.pbak
        .ok(&["snapshot-backup", "--host", "zephyrus", home.to_str().unwrap()]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    fs::write(home.join("data/after-backup"), "written after the nightly backup\n").unwrap();
    let taken = page.run_all("local-snapshot", &[]);
    let line = taken[0]
        .lines()
        .find(|l| l.starts_with("snapshot "))
        .expect("snapshot line");
    let local = PathBuf::from(line.trim_start_matches("snapshot "));
    assert!(
        taken[1].contains(local.to_str().unwrap()),
        "btrfs list shows it: {}",
        taken[1]
    );
    assert_eq!(
        taken[1].lines().count(),
        2,
        "the backup's and the hourly one: {}",
        taken[1]
    );
    let expect = f.mnt.join("expect");
    keep_copy(&home.join("data"), &expect);
    // The damage comes later than the snapshot (rsync compares directory times in seconds).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    damage(&home.join("data"));

    let out = page.run_all("rollback-local", &[("LOCAL", local.to_str().unwrap())]);
    assert!(out[0].contains(local.to_str().unwrap()), "{}", out[0]);
    // rsync gives the files it writes a new access time; all else must match.
    let meta = |p: &Path| {
        sh(&format!(
            "cd '{}' && find . -printf '%p|%y|%m|%U:%G|%s|%T@|%l|%n\\n' | sort",
            p.display()
        ))
    };
    let (a, b) = (meta(&expect), meta(&home.join("data")));
    let differ: Vec<_> = a.lines().zip(b.lines()).filter(|(x, y)| x != y).take(3).collect();
    assert!(
        differ.is_empty() && a.lines().count() == b.lines().count(),
        "{differ:?}"
    );
    assert_eq!(xattr_dump(&expect), xattr_dump(&home.join("data")));
    diff_r(&expect, &home.join("data"));
    // The local snapshots are untouched, and the subvolume is the same one.
    let listed = f.pbak.ok(&["btrfs", "list", home.to_str().unwrap()]);
    assert_eq!(listed, taken[1]);
    // The rolled-back subvolume is writable and backs up again.
    fs::write(home.join("data/new"), "new").unwrap();
    f.pbak
        .ok(&["snapshot-backup", "--host", "zephyrus", home.to_str().unwrap()]);
}

#[test]
fn roll_back_a_subvolume_from_the_repository() {
    let Some(f) = fleet("runbook_rollback_repo") else {
        return;
    };
    let home = f.home();
    subvol_create(&home);
    make_home(&home.join("data"), 72);
    // Another host's newer snapshot: `latest` alone would pick it.
    let other = f.mnt.join("other");
    make_tree(&other, 5);
    f.pbak
        .ok(&["snapshot-backup", "--host", "zephyrus", home.to_str().unwrap()]);
    f.pbak.ok(&["backup", "--host", "yoga", other.to_str().unwrap()]);
    let expect = f.mnt.join("expect");
    keep_copy(&home.join("data"), &expect);
    damage(&home.join("data"));
    let locals = fs::read_dir(home.join(".pbak-snapshots")).unwrap().count();
    assert_eq!(locals, 1);

    let page = f.page(&[("zephyrus", "zephyrus".into())]);
    let out = page.run_all("rollback-repo", &[]);
    assert!(
        out[0].contains("would delete 1 entries"),
        "the dry run counts the extra file: {}",
        out[0]
    );
    assert_same_tree(&expect, &home.join("data"));
    diff_r(&expect, &home.join("data"));
    assert!(!home.join("data/extra-file").exists());
    // --delete left the local snapshot (another subvolume) alone.
    assert_eq!(fs::read_dir(home.join(".pbak-snapshots")).unwrap().count(), 1);
    f.pbak
        .ok(&["snapshot-backup", "--host", "zephyrus", home.to_str().unwrap()]);
}

#[test]
fn recover_a_lost_host_with_only_the_password_and_the_repository() {
    let Some(f) = fleet("runbook_recover_host") else { return };
    let (home, etc) = (f.home(), f.mnt.join("etc"));
    for (p, seed) in [(&home, 81), (&etc, 82)] {
        subvol_create(p);
        make_home(&p.join("data"), seed);
        f.pbak
            .ok(&["snapshot-backup", "--host", "hetzner", p.to_str().unwrap()]);
    }
    let other = f.mnt.join("laptop");
    make_tree(&other, 6);
    f.pbak.ok(&["backup", "--host", "yoga", other.to_str().unwrap()]);
    // A new machine: no cache, no config file; only the repository and the password.
    let cache = tempfile::tempdir().unwrap();
    let mut page = f.page(&[("hetzner", "hetzner".into())]);
    page.env.retain(|(k, _)| k != "PBAK_CACHE_DIR");
    page.env
        .push(("PBAK_CACHE_DIR".into(), cache.path().display().to_string()));
    let out = page.run_all("recover-host", &[]);
    assert_eq!(out[0].matches("hetzner").count(), 2, "{}", out[0]);
    assert!(!out[0].contains("yoga"), "{}", out[0]);
    let new = f.mnt.join("new");
    assert_same_tree(&home.join("data"), &new.join("home/data"));
    assert_same_tree(&etc.join("data"), &new.join("etc/data"));
    diff_r(&home.join("data"), &new.join("home/data"));
}

#[test]
fn the_monthly_restore_test_matches_the_local_snapshot() {
    let Some(f) = fleet("runbook_restore_test") else { return };
    let home = f.home();
    subvol_create(&home);
    make_home(&home.join("data"), 91);
    f.pbak
        .ok(&["snapshot-backup", "--host", "zephyrus", home.to_str().unwrap()]);
    let page = f.page(&[("zephyrus", "zephyrus".into())]);
    let lines = block("restore-test");
    let listed: Vec<serde_json::Value> = serde_json::from_str(&page.run(&lines[0], &[])).unwrap();
    let local = listed.last().unwrap()["btrfs"]["snapshot_path"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(Path::new(&local).starts_with(home.join(".pbak-snapshots")), "{local}");
    let report: serde_json::Value = serde_json::from_str(page.run(&lines[1], &[]).lines().last().unwrap()).unwrap();
    let files = Command::new("find")
        .args([&local, "-type", "f"])
        .output()
        .unwrap()
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .count() as u64;
    assert_eq!(report["summary"]["verified_files"].as_u64(), Some(files), "{report}");
    assert_eq!(report["summary"]["failed_files"].as_u64(), Some(0), "{report}");
    let target = f.mnt.join("tmp/restore-test");
    assert_same_tree(&Path::new(&local).join("data"), &target.join("data"));
    page.run(&lines[2], &[("LOCAL", &local)]);
    page.run(&lines[3], &[]);
    assert!(!target.exists());
    // The comparison could fail: a changed byte in the restored copy makes diff exit 1.
    page.run(&lines[1], &[]);
    damage(&target.join("data"));
    let o = Command::new("bash")
        .args(["-c", &page.rewrite(&lines[2])])
        .env("LOCAL", &local)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
}
