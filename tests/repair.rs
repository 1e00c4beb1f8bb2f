//! `repair index` and `repair snapshots` on the damaged repositories that
//! `scripts/damage-fixtures.sh` builds (here from a `make_tree` source): `check` names the
//! damage, the repairs recover what is left, the repaired snapshots restore it (compared with
//! the source by find, rsync and diff; damaged files byte by byte with what their surviving
//! chunks hold), and dry runs write nothing.
mod common;

use common::pbak::*;
use pbak::format::tree::NodeKind;
use pbak::ids::PackId;
use pbak::repo::walk::Order;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// One fixture built by the script: the source it backed up and the damaged repository.
struct Fixture {
    dir: tempfile::TempDir,
    src: PathBuf,
    /// `OUTDIR/NAME`, holding `DAMAGE` (and `EXCLUDED` for the tree fixtures).
    at: PathBuf,
    p: Pbak,
}

impl Fixture {
    /// Fixture `name`; the pack fixtures damage the pack holding `damage_file`'s first chunk.
    fn new(name: &str, seed: u64, damage_file: Option<&str>) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir(&src).unwrap();
        make_tree(&src, seed);
        let out = dir.path().join("fixtures");
        let p = Pbak::new(out.join(name).join("repo"));
        let bin = std::env::var_os("PBAK_TEST_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_pbak").into());
        let o = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/damage-fixtures.sh"))
            .arg(&out)
            .arg(name)
            .env("SRC", &src)
            .env("DAMAGE_FILE", damage_file.map(|f| src.join(f)).unwrap_or_default())
            .env("PBAK", bin)
            .env("PBAK_PASSWORD", &p.password)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "damage-fixtures.sh {name}: {err}");
        Fixture {
            at: out.join(name),
            src,
            p,
            dir,
        }
    }

    /// The object the script damaged (the last word of `DAMAGE`).
    fn victim(&self) -> String {
        let d = fs::read_to_string(self.at.join("DAMAGE")).unwrap();
        d.split_whitespace().last().unwrap().to_string()
    }

    fn victim_pack(&self) -> PackId {
        PackId::from_hex(self.victim().rsplit('/').next().unwrap()).unwrap()
    }

    /// Run with `--json` and require exit 0.
    fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.p.ok(&[&["--json"], args].concat());
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }

    /// Require the exit code of a failure (2 for `check`, which exits 1 on warnings only,
    /// else 1); all output.
    fn fails(&self, args: &[&str]) -> String {
        let o = self.p.run(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let want = if args.contains(&"check") { 2 } else { 1 };
        assert_eq!(o.status.code(), Some(want), "pbak {args:?} should fail: {text}");
        text
    }

    /// Restore `snapshot` into a new directory: where the source's copy is.
    fn restore(&self, snapshot: &str) -> PathBuf {
        let target = self.dir.path().join(format!("restored-{snapshot}"));
        self.p
            .ok(&["restore", snapshot, "--verify", "--target", target.to_str().unwrap()]);
        target.join(self.src.strip_prefix("/").unwrap())
    }

    /// Every file of the repository and its hash.
    fn repo_files(&self) -> String {
        sh(&format!(
            "cd '{}' && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum",
            self.p.repo.display()
        ))
    }

    /// Dry runs of `repair index` and (with `snapshots`) of `repair snapshots --forget` leave
    /// every file of the repository as it is.
    fn dry_runs_change_nothing(&self, snapshots: bool) {
        let before = self.repo_files();
        assert!(self.json(&["repair", "index", "--dry-run"])["dry_run"] == true);
        if snapshots {
            let rep = self.json(&["repair", "snapshots", "--dry-run", "--forget"]);
            assert!(
                rep["repaired"].as_array().unwrap().iter().all(|r| r["new"].is_null()),
                "{rep}"
            );
        }
        assert_eq!(self.repo_files(), before, "a dry run changed the repository");
    }

    /// Paths relative to the source root.
    fn rel(&self, abs: &Path) -> PathBuf {
        abs.strip_prefix(&self.src).unwrap().to_path_buf()
    }
}

/// The fixture's repository through the library, without a cache.
fn open(p: &Pbak) -> pbak::repo::Repository {
    let loc = pbak::backends::Location::parse(p.repo.to_str().unwrap()).unwrap();
    let backend = pbak::backends::Backend::open(&loc, false).unwrap();
    pbak::repo::Repository::open(backend, p.password.as_bytes()).unwrap()
}

/// Where each chunk of a file lies: (file offset, length, pack).
struct Chunks {
    sparse: bool,
    chunks: Vec<(u64, u64, PackId)>,
}

/// Every file of the (only) snapshot, by absolute path, from the intact index, through the
/// library: the oracle of which files a pack's loss damages.
fn chunk_map(p: &Pbak) -> BTreeMap<PathBuf, Chunks> {
    let repo = open(p);
    let index = repo.load_index().unwrap();
    let snaps = repo.snapshots().unwrap();
    assert_eq!(snaps.len(), 1);
    let files = Mutex::new(BTreeMap::new());
    let visit = |path: &Path, node: &pbak::format::tree::Node| {
        if node.kind == NodeKind::File {
            let mut lens = node.content.iter().map(|c| {
                let l = index.get(c).unwrap();
                (l.raw_length as u64, index.pack_id(&l))
            });
            let mut chunks = Vec::new();
            for (off, len) in node.extents.clone().unwrap_or(vec![(0, node.size)]) {
                let mut pos = off;
                while pos < off + len {
                    let (l, pack) = lens.next().unwrap();
                    chunks.push((pos, l, pack));
                    pos += l;
                }
            }
            let sparse = node.extents.is_some();
            files
                .lock()
                .unwrap()
                .insert(path.to_path_buf(), Chunks { sparse, chunks });
        }
        Ok(true)
    };
    let root = &snaps[0].1.tree;
    repo.walk_paths(&index, root, Path::new("/"), Order::Sequential, &visit)
        .unwrap();
    files.into_inner().unwrap()
}

/// What a damaged file restores as: its chunks outside pack `gone`, cut together, or (a
/// sparse file repaired while the index still gave the lengths) in place, with zeros for
/// the gone ones.
fn expected(src: &[u8], c: &Chunks, gone: &PackId, holes: bool) -> Vec<u8> {
    let range = |off: u64, len: u64| off as usize..(off + len) as usize;
    if holes {
        let mut b = src.to_vec();
        for &(off, len, _) in c.chunks.iter().filter(|ch| ch.2 == *gone) {
            b[range(off, len)].fill(0);
        }
        return b;
    }
    let kept = c.chunks.iter().filter(|ch| ch.2 != *gone);
    kept.flat_map(|&(off, len, _)| src[range(off, len)].to_vec()).collect()
}

/// The directories of the (only) snapshot whose tree lies in a pack no longer stored, the
/// first on each path (by absolute path), found through the library from the index.
fn missing_subtrees(p: &Pbak) -> Vec<PathBuf> {
    let repo = open(p);
    let index = repo.load_index().unwrap();
    let stored = repo.stored_packs().unwrap();
    let snaps = repo.snapshots().unwrap();
    assert_eq!(snaps.len(), 1);
    let (mut todo, mut missing) = (vec![(PathBuf::from("/"), snaps[0].1.tree)], Vec::new());
    while let Some((dir, tree)) = todo.pop() {
        for n in repo.load_tree(&index, &tree).unwrap().nodes {
            let (Some(st), path) = (n.subtree, dir.join(std::ffi::OsStr::from_bytes(&n.name))) else {
                continue;
            };
            match stored.contains(&index.pack_id(&index.get(&st).unwrap()).to_hex()) {
                true => todo.push((path, st)),
                false => missing.push(path),
            }
        }
    }
    missing
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// `src` and `dst` agree on everything (find listing, rsync with checksums, ACLs and xattrs,
/// diff -r) except the paths `skip` (relative; on either side; with all below them).
/// Directory sizes are left out (on some filesystems they grow with the names inside), and
/// so are link counts of files (a link in a skipped directory is gone; rsync -H compares the
/// hard links of what is compared).
fn assert_same_except(src: &Path, dst: &Path, skip: &[PathBuf]) {
    let skipped = |rel: &str| {
        skip.iter()
            .map(|s| s.to_string_lossy())
            .any(|s| rel == s || rel.starts_with(&format!("{s}/")))
    };
    let lines = |root: &Path| -> Vec<String> {
        let l = listing(root);
        l.lines()
            .filter(|l| !skipped(l.split('|').next().unwrap().trim_start_matches("./")))
            .map(|l| {
                let mut f: Vec<&str> = l.split('|').collect();
                if f.len() > 7 && f[1] == "d" {
                    f[4] = "";
                } else if f.len() > 7 {
                    f[7] = "";
                }
                f.join("|")
            })
            .collect()
    };
    assert_eq!(lines(src), lines(dst), "find listings differ");
    let mut rsync = Command::new("rsync");
    rsync.args([
        "-n",
        "-a",
        "-c",
        "-H",
        "-A",
        "-X",
        "--numeric-ids",
        "--open-noatime",
        "-i",
        "--delete",
    ]);
    let mut diff = Command::new("diff");
    diff.args(DIFF_ARGS);
    for s in skip {
        let anchored = [b"--exclude=/", s.as_os_str().as_bytes()].concat();
        rsync.arg(OsString::from_vec(anchored));
        diff.arg("-x").arg(s.file_name().unwrap());
    }
    let o = rsync.arg(src.join("")).arg(dst.join("")).output().unwrap();
    let rs = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && rs.trim().is_empty(),
        "rsync sees differences:\n{rs}"
    );
    let d = diff.arg(src).arg(dst).output().unwrap();
    assert!(d.status.success(), "diff -r: {}", String::from_utf8_lossy(&d.stdout));
}

fn set(v: &serde_json::Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn lossy(paths: &[PathBuf]) -> BTreeSet<String> {
    paths.iter().map(|p| p.to_string_lossy().into_owned()).collect()
}

#[test]
fn a_deleted_index_file_is_rebuilt_from_the_packs() {
    let f = Fixture::new("index-deleted", 21, None);
    f.fails(&["check"]);
    f.dry_runs_change_nothing(true);
    let rep = f.json(&["repair", "index"]);
    assert_eq!(rep["packs_unreadable"].as_array().unwrap().len(), 0, "{rep}");
    assert!(rep["index_files_written"].as_u64().unwrap() >= 1, "{rep}");
    let check = f.json(&["check", "--read-data"]);
    assert_eq!(check["unreferenced_packs"], 0, "every pack is indexed again: {check}");
    assert_same_tree(&f.src, &f.restore("latest"));
}

#[test]
fn a_truncated_index_file_is_replaced() {
    let f = Fixture::new("index-truncated", 22, None);
    let victim = f.victim();
    let out = f.fails(&["check"]);
    assert!(out.contains(&victim), "check names {victim}: {out}");
    let out = f.fails(&["repair", "snapshots"]);
    assert!(out.contains("pbak repair index") && out.contains(&victim), "{out}");
    f.dry_runs_change_nothing(false);
    let rep = f.json(&["repair", "index"]);
    assert_eq!(rep["packs_unreadable"].as_array().unwrap().len(), 0, "{rep}");
    assert!(!f.p.repo.join(&victim).exists(), "the truncated file is gone");
    f.json(&["check", "--read-data"]);
    let rep = f.json(&["repair", "snapshots"]);
    assert_eq!(
        (rep["unchanged"].as_u64(), rep["repaired"].as_array().unwrap().len()),
        (Some(1), 0)
    );
    assert_same_tree(&f.src, &f.restore("latest"));
}

/// The snapshot's files restore identical to the source, except `damaged` (absolute paths),
/// which restore as `NAME.pbak-damaged` with what their chunks outside `gone` hold.
fn assert_damaged_restore(
    f: &Fixture,
    map: &BTreeMap<PathBuf, Chunks>,
    damaged: &[PathBuf],
    gone: &PackId,
    lens_known: bool,
) {
    let dst = f.restore("latest");
    let mut skip = Vec::new();
    for abs in damaged {
        let rel = f.rel(abs);
        let marked = dst.join(with_suffix(&rel, ".pbak-damaged"));
        assert!(
            !dst.join(&rel).exists(),
            "{} restored under its own name",
            rel.display()
        );
        let holes = lens_known && map[abs].sparse;
        let want = expected(&fs::read(abs).unwrap(), &map[abs], gone, holes);
        assert!(
            fs::read(&marked).unwrap() == want,
            "{} holds other bytes",
            marked.display()
        );
        skip.extend([with_suffix(&rel, ".pbak-damaged"), rel]);
    }
    assert_same_except(&f.src, &dst, &skip);
}

#[test]
fn a_deleted_pack_costs_only_the_files_that_used_it() {
    let f = Fixture::new("pack-deleted", 23, Some("sparse"));
    let gone = f.victim_pack();
    let map = chunk_map(&f.p);
    let damaged: Vec<PathBuf> = map
        .iter()
        .filter(|(_, c)| c.chunks.iter().any(|ch| ch.2 == gone))
        .map(|(p, _)| p.clone())
        .collect();
    // The sparse file lost a chunk whose length the index still gives: a hole in its place.
    assert!(
        damaged.contains(&f.src.join("sparse")) && damaged.len() < map.len(),
        "{damaged:?}"
    );
    let out = f.fails(&["check"]);
    assert!(out.contains(&gone.to_hex()), "check names the pack: {out}");
    f.dry_runs_change_nothing(true);

    // Without `repair index` first: a blob in a pack no longer stored counts as gone.
    let original = f.json(&["snapshots"])[0]["id"].as_str().unwrap().to_string();
    let rep = f.json(&["repair", "snapshots", "--forget"]);
    let r = &rep["repaired"][0];
    assert_eq!(set(&r["damaged_files"]), lossy(&damaged), "{rep}");
    assert_eq!(
        (r["forgotten"].as_bool(), r["missing_trees"].as_array().unwrap().len()),
        (Some(true), 0)
    );
    let snaps = f.json(&["snapshots"]);
    assert_eq!(snaps.as_array().unwrap().len(), 1, "the original is forgotten: {snaps}");
    let tags = set(&snaps[0]["tags"]);
    assert!(tags.contains("repaired") && tags.contains(&format!("repaired-from:{}", &original[..8])));
    let rep = f.json(&["repair", "index"]);
    assert_eq!(rep["packs_unreadable"].as_array().unwrap().len(), 0, "{rep}");
    f.json(&["check", "--read-data"]);
    assert_damaged_restore(&f, &map, &damaged, &gone, true);
    let again = f.json(&["repair", "snapshots"]);
    assert_eq!(again["unchanged"], 1, "a repaired snapshot needs no repair: {again}");
}

#[test]
fn a_pack_with_a_flipped_header_bit_is_left_out_and_named() {
    let f = Fixture::new("pack-bit-flipped", 24, Some("dir/big.bin"));
    let gone = f.victim_pack();
    let map = chunk_map(&f.p);
    let out = f.fails(&["check", "--read-data"]);
    assert!(out.contains(&f.victim()), "check names the pack: {out}");
    f.dry_runs_change_nothing(true);
    let rep = f.json(&["repair", "index"]);
    let bad = rep["packs_unreadable"].as_array().unwrap();
    assert_eq!(bad.len(), 1, "{rep}");
    assert_eq!(bad[0]["pack"], f.victim().as_str());
    assert!(
        bad[0]["reason"].as_str().unwrap().contains("authentication failed"),
        "{rep}"
    );
    assert!(f.p.repo.join(f.victim()).exists(), "an unreadable pack is not deleted");

    // The index no longer gives the lost chunks' lengths: they are cut out of every file.
    let damaged: Vec<PathBuf> = map
        .iter()
        .filter(|(_, c)| c.chunks.iter().any(|ch| ch.2 == gone))
        .map(|(p, _)| p.clone())
        .collect();
    assert!(damaged.contains(&f.src.join("dir/big.bin")), "{damaged:?}");
    let rep = f.json(&["repair", "snapshots", "--forget"]);
    assert_eq!(set(&rep["repaired"][0]["damaged_files"]), lossy(&damaged), "{rep}");
    // The unreadable pack stays, in no index: a warning (exit 1), no error.
    let o = f.p.run(&["--json", "check", "--read-data"]);
    let check: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (o.status.code(), &check["unreferenced_packs"]),
        (Some(1), &1.into()),
        "{check}"
    );
    assert!(check["errors"].as_array().unwrap().is_empty(), "{check}");
    assert!(check["warnings"][0].as_str().unwrap().contains(&f.victim()), "{check}");
    assert_damaged_restore(&f, &map, &damaged, &gone, false);
}

/// The tree fixtures' second snapshot shares every subtree with the first but those on the
/// way to the file it excluded: with the first one's tree pack gone, those are gone.
#[test]
fn missing_trees_become_empty_marked_directories() {
    let f = Fixture::new("tree-missing", 25, None);
    let excluded = PathBuf::from(fs::read_to_string(f.at.join("EXCLUDED")).unwrap().trim_end());
    let missing = missing_subtrees(&f.p);
    assert!(!missing.is_empty());
    f.fails(&["check"]);
    f.dry_runs_change_nothing(true);

    let rep = f.json(&["repair", "snapshots"]);
    let r = &rep["repaired"][0];
    assert_eq!(set(&r["missing_trees"]), lossy(&missing), "{rep}");
    assert_eq!(r["damaged_files"].as_array().unwrap().len(), 0, "{rep}");
    assert_eq!(
        f.json(&["snapshots"]).as_array().unwrap().len(),
        2,
        "originals stay without --forget"
    );
    f.p.ok(&["forget", r["original"].as_str().unwrap()]);
    f.json(&["repair", "index"]);
    f.json(&["check", "--read-data"]);

    let dst = f.restore("latest");
    let mut skip = vec![f.rel(&excluded)];
    for m in &missing {
        let marked = with_suffix(&f.rel(m), ".pbak-missing-tree");
        assert_eq!(
            fs::read_dir(dst.join(&marked)).unwrap().count(),
            0,
            "{} is empty",
            marked.display()
        );
        let mode = |p: &Path| sh(&format!("stat -c %a '{}'", p.display()));
        assert_eq!(mode(&dst.join(&marked)), mode(m), "the directory keeps its metadata");
        skip.extend([marked, f.rel(m)]);
    }
    assert_same_except(&f.src, &dst, &skip);
}

#[test]
fn a_snapshot_whose_root_tree_is_gone_is_forgotten_and_the_rest_restores() {
    let f = Fixture::new("snapshot-tree-missing", 26, None);
    let snaps = f.json(&["snapshots"]);
    let (first, second) = (snaps[0]["id"].as_str().unwrap(), snaps[1]["id"].as_str().unwrap());
    let out = f.fails(&["check"]);
    assert!(
        out.contains(&f.victim().rsplit('/').next().unwrap().to_string()),
        "{out}"
    );
    f.dry_runs_change_nothing(true);
    let rep = f.json(&["repair", "snapshots", "--forget"]);
    assert_eq!(rep["unchanged"], 1, "{rep}");
    let bad = &rep["unrepairable"];
    assert_eq!(
        (bad[0]["snapshot"].as_str(), bad[0]["forgotten"].as_bool()),
        (Some(second), Some(true))
    );
    let left = f.json(&["snapshots"]);
    assert_eq!(left.as_array().unwrap().len(), 1);
    assert_eq!(left[0]["id"], first);
    f.json(&["repair", "index"]);
    f.json(&["check", "--read-data"]);
    assert_same_tree(&f.src, &f.restore(&first[..8]));
}

/// `--dry-run` on every kind of damage, through the text output too: nothing is written,
/// deleted or locked, and the report is what the real run then does.
#[test]
fn dry_runs_write_nothing_and_predict_the_repair() {
    let f = Fixture::new("pack-deleted", 27, None);
    let before = f.repo_files();
    let text = f.p.ok(&["repair", "snapshots", "--dry-run", "--forget"]);
    assert!(
        text.contains("would be repaired") && text.contains(".pbak-damaged"),
        "{text}"
    );
    let text = f.p.ok(&["repair", "index", "--dry-run"]);
    assert!(text.contains("would be written"), "{text}");
    let dry = f.json(&["repair", "snapshots", "--dry-run"]);
    assert_eq!(f.repo_files(), before, "a dry run changed the repository");
    assert!(!f.p.repo.join("prune").exists(), "a dry run took the prune marker");
    let real = f.json(&["repair", "snapshots"]);
    assert_eq!(
        real["repaired"][0]["damaged_files"],
        dry["repaired"][0]["damaged_files"]
    );
    assert_ne!(f.repo_files(), before);
}
