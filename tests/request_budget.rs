//! The transaction budget (issue 13): every command run against the S3 test server through a
//! counting proxy, on a fixed tree of 97 directories with two snapshots, each run cold (an
//! empty cache directory, or `--no-cache`). The requests the proxy saw, by B2 class, must stay
//! within [`BUDGET`] (the same table is in `docs/performance.md`), so a change that adds
//! requests fails; and pbak's own counts (`--ops`) must equal the proxy's, class by class, so
//! the operations pbak records are the operations the store bills.
mod common;

use common::faulty_proxy::{Counts, Faults, FaultyProxy, Kind};
use common::pbak::*;
use std::fs;
use std::path::Path;
use std::time::Instant;

/// Per step: the most requests of B2 class A (PUT, DELETE, POST), B (GET, ranged GET, HEAD)
/// and C (listings) it may send. Measured on the tree of [`make_fixed_tree`]; lower a figure
/// when a change saves requests, never raise one without saying why in the commit.
const BUDGET: &[(&str, [u64; 3])] = &[
    ("init", [2, 1, 1]),
    // Backup, restore, check, forget and prune each store one run record (`runs/`, one
    // class A PUT, free on B2) for cost and status; prune lists `runs/` to fold old ones.
    ("backup (first)", [5, 2, 4]),
    ("backup (unchanged)", [4, 5, 4]),
    ("snapshots", [0, 4, 2]),
    ("ls", [0, 8, 3]),
    ("ls --no-cache", [0, 8, 3]),
    ("restore", [1, 9, 3]),
    ("restore --no-cache", [1, 11, 3]),
    ("check", [1, 8, 4]),
    ("check --read-data", [1, 14, 4]),
    ("forget + prune", [7, 14, 7]),
];

/// (endpoint, bucket) of the test server. Without one the test fails, saying why, unless
/// PBAK_ALLOW_SKIP_S3=1 outside CI (as `tests/s3.rs`).
fn server(test: &str) -> Option<(String, String)> {
    match (
        std::env::var("PBAK_TEST_S3_ENDPOINT"),
        std::env::var("PBAK_TEST_S3_BUCKET"),
    ) {
        (Ok(e), Ok(b)) => Some((e, b)),
        _ if std::env::var("PBAK_ALLOW_SKIP_S3").as_deref() == Ok("1") && std::env::var_os("CI").is_none() => {
            let msg = format!("!!! SKIPPING {test}: no S3 test server\n");
            let _ = std::io::Write::write_all(&mut std::io::stderr(), msg.as_bytes());
            None
        }
        _ => panic!(
            "!!! {test}: PBAK_TEST_S3_ENDPOINT/PBAK_TEST_S3_BUCKET unset: start one with \
             `eval \"$(scripts/s3-server.sh start)\"` in the same shell as `cargo test` \
             (skipping is never allowed with CI set)"
        ),
    }
}

/// 97 directories (the root, 6 below it, 15 below each of those), 192 small files, some
/// identical, and one 3 MiB file; fixed contents and times, so every run stores the same.
fn make_fixed_tree(root: &Path) {
    fs::create_dir_all(root).unwrap();
    fs::write(root.join("big.bin"), prng(1, 3 << 20)).unwrap();
    for d in 0..6u64 {
        let dir = root.join(format!("d{d}"));
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("notes.txt"), prng(10 + d, 8 << 10)).unwrap();
        for s in 0..15u64 {
            let sub = dir.join(format!("s{s:02}"));
            fs::create_dir(&sub).unwrap();
            fs::write(sub.join("a"), prng(100 + d * 15 + s, 1000 + 100 * s as usize)).unwrap();
            // The same bytes in every directory of a column: deduplicated.
            fs::write(sub.join("same"), prng(1000 + s, 2000)).unwrap();
        }
    }
    sh(&format!(
        "find '{}' -exec touch -h -d '2024-05-06 07:08:09' {{}} +",
        root.display()
    ));
}

/// Requests by class (A, B, C), as B2 bills them and `src/backends/meter.rs` counts them.
fn classes(c: &Counts) -> [u64; 3] {
    let n = |k: Kind| c.get(&k).copied().unwrap_or(0);
    [
        n(Kind::Put) + n(Kind::Delete) + n(Kind::Other),
        n(Kind::Get) + n(Kind::RangedGet) + n(Kind::Head),
        n(Kind::List),
    ]
}

/// pbak's own counts from the `--ops` line (the last line of stderr).
fn own_counts(stderr: &str) -> [u64; 3] {
    let last = stderr.trim().lines().last().expect("an --ops line");
    let v: serde_json::Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {last:?}"));
    let b = &v["backend"];
    ["class_a", "class_b", "class_c"].map(|k| b[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}")))
}

struct Step {
    name: &'static str,
    wire: Counts,
    own: [u64; 3],
    secs: f64,
}

#[test]
fn every_command_stays_within_its_request_budget_and_counts_what_the_wire_sees() {
    let Some((endpoint, bucket)) = server("request_budget") else {
        return;
    };
    let proxy = FaultyProxy::start_with(endpoint.trim_start_matches("http://"), Faults::default());
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_fixed_tree(&src);
    let name = format!("budget-{}-{}", std::process::id(), rand_suffix());
    let p = Pbak::new(format!("s3:http://{}/{bucket}/{name}", proxy.addr).into());
    let src_s = src.to_str().unwrap();
    let out = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let (r1, r2) = (out("restore-1"), out("restore-2"));
    let steps: Vec<(&'static str, Vec<Vec<&str>>)> = vec![
        (
            "init",
            vec![vec!["init", "--kdf-memory-mib", "1", "--kdf-iterations", "1"]],
        ),
        ("backup (first)", vec![vec!["backup", "-q", src_s]]),
        ("backup (unchanged)", vec![vec!["backup", "-q", src_s]]),
        ("snapshots", vec![vec!["snapshots"]]),
        ("ls", vec![vec!["ls", "latest"]]),
        ("ls --no-cache", vec![vec!["--no-cache", "ls", "latest"]]),
        ("restore", vec![vec!["restore", "latest", "--target", &r1]]),
        (
            "restore --no-cache",
            vec![vec!["--no-cache", "restore", "latest", "--target", &r2]],
        ),
        ("check", vec![vec!["check"]]),
        ("check --read-data", vec![vec!["check", "--read-data"]]),
        (
            "forget + prune",
            vec![
                vec!["forget", "--keep-last", "1"],
                vec!["prune", "--delete-after", "0s"],
            ],
        ),
    ];
    let mut done = Vec::new();
    for (k, (name, cmds)) in steps.into_iter().enumerate() {
        proxy.take_counts();
        let t = Instant::now();
        let mut own = [0u64; 3];
        for (j, args) in cmds.iter().enumerate() {
            // Cold: a cache directory of its own, empty.
            let cache = dir.path().join(format!("cache-{k}-{j}"));
            let mut c = p.cmd(args);
            c.env("PBAK_CACHE_DIR", &cache).arg("--ops");
            let o = c.output().unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(o.status.success(), "{args:?}: {err}");
            let n = own_counts(&err);
            (0..3).for_each(|i| own[i] += n[i]);
        }
        let secs = t.elapsed().as_secs_f64();
        done.push(Step {
            name,
            wire: proxy.take_counts(),
            own,
            secs,
        });
    }
    let snapshot_restores = sh(&format!(
        "diff -r '{src_s}' '{r1}{src_s}' && diff -r '{src_s}' '{r2}{src_s}' && echo SAME"
    ));
    assert_eq!(snapshot_restores.trim(), "SAME");
    let report = table(&done);
    eprintln!("{report}");
    let mut over = Vec::new();
    for (s, (name, budget)) in done.iter().zip(BUDGET) {
        assert_eq!(s.name, *name, "BUDGET lists the steps in order");
        let wire = classes(&s.wire);
        assert_eq!(
            s.own, wire,
            "{name}: pbak counted A/B/C {:?}, the server received {wire:?} ({:?})",
            s.own, s.wire
        );
        if (0..3).any(|i| wire[i] > budget[i]) {
            over.push(format!("{name}: A/B/C {wire:?} over the budget {budget:?}"));
        } else if wire != *budget {
            eprintln!("{name}: A/B/C {wire:?} is under the budget {budget:?}: lower it");
        }
    }
    assert_eq!(done.len(), BUDGET.len());
    assert!(
        over.is_empty(),
        "over the request budget:\n{}\n{report}",
        over.join("\n")
    );
}

/// The measured steps as the Markdown table of `docs/performance.md`.
fn table(steps: &[Step]) -> String {
    let mut t = String::from(
        "| command | A | B | C | GET | ranged GET | HEAD | PUT | DELETE | LIST | other | seconds |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for s in steps {
        let [a, b, c] = classes(&s.wire);
        let n = |k: Kind| s.wire.get(&k).copied().unwrap_or(0);
        t += &format!(
            "| {} | {a} | {b} | {c} | {} | {} | {} | {} | {} | {} | {} | {:.2} |\n",
            s.name,
            n(Kind::Get),
            n(Kind::RangedGet),
            n(Kind::Head),
            n(Kind::Put),
            n(Kind::Delete),
            n(Kind::List),
            n(Kind::Other),
            s.secs
        );
    }
    t
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}
