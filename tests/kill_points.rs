//! Kill -9 at random points (issue 12): seeded runs, each of which starts one of `backup`,
//! `forget`, `forget --prune`, `prune` (zero or short grace period), `repair index` or
//! `repair snapshots` alone and kills it with SIGKILL after a random delay within the time
//! the same command took when it last ran to the end. After every run `check` finds no error
//! (exit 0 or 1: warnings about leftovers), every snapshot a backup reported written that
//! still exists restores identical to what it backed up, and the next `prune --delete-after
//! 0s` removes every leftover: `check --read-data` is clean (exit 0) afterwards.
//!
//! `PBAK_KILL_RUNS` sets the number of runs (CI: 12; `scripts/kill-points.sh` runs 100) and
//! `PBAK_KILL_SEED` the first seed.
mod common;

use common::pbak::*;
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const OPS: [&str; 7] = [
    "backup",
    "backup",
    "forget",
    "forget --prune",
    "prune",
    "repair index",
    "repair snapshots",
];

fn args(op: &str, rng: &mut Rng, src: &Path) -> Vec<String> {
    let grace = ["0s", "1s"][rng.below(2)].to_string();
    let v: Vec<&str> = match op {
        "backup" => vec!["--json", "backup", "-q", src.to_str().unwrap()],
        "forget" => vec!["-q", "forget", "--keep-last", "3"],
        "forget --prune" => vec!["-q", "forget", "--keep-last", "3", "--prune", "--delete-after", &grace],
        "prune" => vec!["-q", "prune", "--max-unused", "0", "--delete-after", &grace],
        "repair index" => vec!["-q", "repair", "index"],
        "repair snapshots" => vec!["-q", "repair", "snapshots"],
        _ => unreachable!(),
    };
    v.into_iter().map(String::from).collect()
}

/// Rewrite two files and add one (a few hundred KiB each, so that a backup writes several
/// 1 MiB packs and a prune has something to repack).
fn mutate(dir: &Path, rng: &mut Rng, run: u64) {
    fs::create_dir_all(dir).unwrap();
    let mut names: Vec<PathBuf> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    for _ in 0..2.min(names.len()) {
        let f = &names[rng.below(names.len())];
        fs::write(f, prng(rng.next(), 100_000 + rng.below(400_000))).unwrap();
    }
    fs::write(
        dir.join(format!("new-{run}")),
        prng(rng.next(), 300_000 + rng.below(900_000)),
    )
    .unwrap();
}

fn check_no_errors(p: &Pbak, seed: u64, what: &str) -> i32 {
    let c = p.run(&["--json", "check"]);
    let rep: serde_json::Value = serde_json::from_slice(&c.stdout).unwrap_or_default();
    let code = c.status.code().unwrap_or(-1);
    assert!(
        matches!(code, 0 | 1) && rep["errors"].as_array().is_some_and(|e| e.is_empty()),
        "seed {seed} ({what}): check exited {code}: {}{}",
        String::from_utf8_lossy(&c.stdout),
        String::from_utf8_lossy(&c.stderr)
    );
    code
}

#[test]
fn kill_9_at_random_points_leaves_a_repository_the_next_prune_cleans() {
    let env = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let (runs, first) = (env("PBAK_KILL_RUNS", 12), env("PBAK_KILL_SEED", 1));
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let p = Pbak::new(root.join("repo"));
    p.init_pack_mib(1);
    let src = root.join("src");
    let mut written: HashMap<String, PathBuf> = HashMap::new();
    // How long each command took when it last ran to the end (the kill falls within it).
    let mut took: HashMap<&str, u64> = OPS.iter().map(|o| (*o, 400)).collect();
    let mut killed_at: HashMap<&str, usize> = HashMap::new();
    for seed in first..first + runs {
        let mut rng = Rng::seeded(seed);
        // Two backups to start from, so that forget and prune have work every time.
        for _ in 0..2 {
            mutate(&src, &mut rng, seed);
            let copy = root.join(format!("expect/{seed}-{}", written.len()));
            sh(&format!(
                "mkdir -p '{0}' && cp -a '{1}/.' '{0}'",
                copy.display(),
                src.display()
            ));
            let out: serde_json::Value =
                serde_json::from_str(&p.ok(&["--json", "backup", "-q", src.to_str().unwrap()])).unwrap();
            written.insert(out["snapshot_id"].as_str().unwrap().to_string(), copy);
        }
        let op = *rng.pick(&OPS).unwrap();
        let copy = root.join(format!("expect/{seed}-killed"));
        if op == "backup" {
            mutate(&src, &mut rng, seed + 1_000_000);
            sh(&format!(
                "mkdir -p '{0}' && cp -a '{1}/.' '{0}'",
                copy.display(),
                src.display()
            ));
        }
        let a = args(op, &mut rng, &src);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let delay = rng.below(took[op] as usize + 1) as u64;
        let mut c = p.cmd(&a);
        c.env("PBAK_THREADS", "2").stdout(Stdio::piped()).stderr(Stdio::piped());
        let start = Instant::now();
        let mut child = c.spawn().unwrap();
        // Poll, so that a command that ends before the delay gives its real duration.
        let finished = loop {
            if child.try_wait().unwrap().is_some() {
                took.insert(op, start.elapsed().as_millis() as u64);
                break true;
            }
            if start.elapsed() >= Duration::from_millis(delay) {
                break false;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let _ = child.kill();
        let o = child.wait_with_output().unwrap();
        if finished {
            assert_eq!(
                o.status.code(),
                Some(0),
                "seed {seed}: {op}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            if op == "backup" {
                let out: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
                written.insert(out["snapshot_id"].as_str().unwrap().to_string(), copy);
            }
        } else {
            *killed_at.entry(op).or_default() += 1;
        }
        let what = format!("{op} killed after {delay} ms");
        check_no_errors(&p, seed, &what);
        written_snapshots_restore(&p, root, seed, &written);
        // The next prune removes every leftover.
        p.ok(&["-q", "prune", "--delete-after", "0s"]);
        let c = p.run(&["--json", "check", "--read-data"]);
        assert_eq!(
            c.status.code(),
            Some(0),
            "seed {seed} ({what}): after the next prune: {}{}",
            String::from_utf8_lossy(&c.stdout),
            String::from_utf8_lossy(&c.stderr)
        );
        assert!(!p.repo.join("prune").exists(), "seed {seed}: a prune marker was left");
        written_snapshots_restore(&p, root, seed, &written);
    }
    let killed: usize = killed_at.values().sum();
    eprintln!("{runs} runs from seed {first}: killed {killed} ({killed_at:?}), the rest finished first");
    assert!(killed > 0, "no run was killed before it finished: the delays are wrong");
}
