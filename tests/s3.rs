//! The same integration steps against a real S3 server on loopback (moto, started by
//! `scripts/s3-server.sh`), plus injected network faults and permanent errors.
mod common;

use common::faulty_proxy::{Faults, FaultyProxy};
use common::pbak::*;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// (endpoint, bucket) of the test server, or a loud failure (skip only with PBAK_ALLOW_SKIP_S3=1).
fn server(test: &str) -> Option<(String, String)> {
    match (std::env::var("PBAK_TEST_S3_ENDPOINT"), std::env::var("PBAK_TEST_S3_BUCKET")) {
        (Ok(e), Ok(b)) => Some((e, b)),
        _ if std::env::var("PBAK_ALLOW_SKIP_S3").as_deref() == Ok("1") => {
            let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("!!! SKIPPING {test}: no S3 test server\n").as_bytes());
            None
        }
        _ => panic!("!!! {test}: PBAK_TEST_S3_ENDPOINT/PBAK_TEST_S3_BUCKET unset: start one with `eval \"$(scripts/s3-server.sh start)\"`"),
    }
}

fn unique(name: &str) -> String {
    format!(
        "{name}-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos() ^ rand_suffix()
    )
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn full_cycle(p: &Pbak, dir: &std::path::Path) {
    let src = dir.join("src");
    make_tree(&src, 5);
    p.init();
    let first = p.backup_json(&[src.to_str().unwrap()]);
    assert!(first["bytes_added"].as_u64().unwrap() > 0);
    fs::write(src.join("dir/new-file"), prng(9, 2 << 20)).unwrap();
    let second = p.backup_json(&[src.to_str().unwrap()]);
    assert_eq!(second["files_new"], 1, "{second}");
    // One data pack, one tree pack, an index and the snapshot: all uploads (B2 class A).
    assert!(second["backend"]["class_a"].as_u64().unwrap() >= 4, "{second}");
    assert!(second["backend"]["bytes_up"].as_u64().unwrap() > 2 << 20, "{second}");
    let target = dir.join("restore");
    p.ok(&["restore", "latest", "--target", target.to_str().unwrap(), "--verify"]);
    assert_same_tree(&src, &target.join(src.strip_prefix("/").unwrap()));
    p.ok(&["check", "--read-data"]);
}

#[test]
fn s3_init_backup_incremental_restore_check() {
    let Some((endpoint, bucket)) = server("s3_round_trip") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let p = Pbak::new(format!("s3:{endpoint}/{bucket}/{}", unique("cycle")).into());
    full_cycle(&p, dir.path());
}

/// Back up `files` files of `mib` MiB through a proxy failing 10% of requests (4% answered
/// 503/429, 4% cut mid-transfer, 2% never answered, abandoned after 3 s), restore them
/// identically (compared by `diff -r`) and pass `check --read-data`.
fn faulty_round_trip(test: &str, files: u64, mib: usize) {
    let Some((endpoint, bucket)) = server(test) else {
        return;
    };
    let upstream = endpoint.trim_start_matches("http://").to_string();
    let proxy = FaultyProxy::start_with(
        &upstream,
        Faults {
            error: 0.04,
            cut: 0.04,
            stall: 0.02,
            ..Default::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    for i in 0..files {
        fs::write(src.join(format!("f{i}")), prng(100 + i, mib << 20)).unwrap();
    }
    let p = Pbak::new(format!("s3:http://{}/{bucket}/{}", proxy.addr, unique("faults")).into());
    p.init();
    let t = Instant::now();
    p.ok(&["--timeout", "3", "backup", "-q", src.to_str().unwrap()]);
    let backup = t.elapsed();
    let target = dir.path().join("restore");
    let restore = &["restore", "latest", "--target", target.to_str().unwrap(), "--verify"];
    p.ok(&[&["--timeout", "3"], &restore[..]].concat());
    let d = Command::new("diff")
        .arg("-r")
        .arg(&src)
        .arg(target.join(src.strip_prefix("/").unwrap()))
        .status()
        .unwrap();
    assert!(d.success());
    p.ok(&["--timeout", "3", "check", "--read-data"]);
    let (faults, stalls) = (
        proxy.faults.load(Ordering::Relaxed),
        proxy.stalls.load(Ordering::Relaxed),
    );
    let requests = proxy.log.lock().unwrap().len();
    eprintln!(
        "{test}: {} MiB, backup {backup:?}, all steps {:?}; {faults} of {requests} requests faulted ({stalls} stalls)",
        files as usize * mib,
        t.elapsed()
    );
    assert!(faults > 0, "no fault was injected");
    // (A short run may roll no stall; a long one must have met some.)
    assert!(requests < 200 || stalls > 0, "no stall in {requests} requests");
}

#[test]
fn s3_with_ten_percent_faults_completes_and_restores() {
    faulty_round_trip("s3_faults", 4, 24);
}

/// The issue's 1 GiB run (about 45 s against moto on the 2-core machine).
#[test]
fn s3_one_gib_with_ten_percent_faults() {
    faulty_round_trip("s3_one_gib_faults", 64, 16);
}

/// Run with `--ops`; returns stdout and the backend counts.
fn run_ops(mut c: Command) -> (String, serde_json::Value) {
    let o = c.arg("--ops").output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let last = err.trim().lines().last().expect("--ops line");
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    (String::from_utf8_lossy(&o.stdout).into_owned(), v["backend"].clone())
}

fn with_cache(mut c: Command, cache: &Path) -> Command {
    c.env("PBAK_CACHE_DIR", cache);
    c
}

#[test]
fn cache_cuts_remote_reads_of_snapshots_ls_and_incremental_backups() {
    let Some((endpoint, bucket)) = server("s3_cache") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src, 31);
    let p = Pbak::new(format!("s3:{endpoint}/{bucket}/{}", unique("cache")).into());
    p.init();
    for i in 0..3 {
        fs::write(src.join(format!("n{i}")), prng(i, 1000)).unwrap();
        p.ok(&["--no-cache", "backup", "-q", src.to_str().unwrap()]);
    }
    let b = |v: &serde_json::Value| v["class_b"].as_u64().unwrap();
    // A fresh cache: the first run reads every object, the second only config and key.
    let cache = dir.path().join("cache");
    for args in [vec!["snapshots"], vec!["ls", "latest"]] {
        let (out1, cold) = run_ops(with_cache(p.cmd(&args), &cache));
        let (out2, warm) = run_ops(with_cache(p.cmd(&args), &cache));
        assert_eq!(out1, out2);
        eprintln!("{args:?}: class B cold {}, warm {}", b(&cold), b(&warm));
        assert_eq!(b(&warm), 2, "{args:?}: warm {warm}, cold {cold}");
        assert!(b(&cold) >= 2 + 3, "{args:?}: cold {cold}");
    }
    // Incremental backups: with the cache only the new tree pack of the previous backup is
    // downloaded; without it every index file, snapshot and parent tree.
    let backup = |cache: Option<&Path>, i: u64| {
        fs::write(src.join(format!("m{i}")), prng(i, 1000)).unwrap();
        let c = match cache {
            Some(d) => with_cache(p.cmd(&["backup", "-q", src.to_str().unwrap()]), d),
            None => p.cmd(&["--no-cache", "backup", "-q", src.to_str().unwrap()]),
        };
        run_ops(c).1
    };
    backup(Some(&cache), 0);
    let cached = backup(Some(&cache), 1);
    let uncached = backup(None, 2);
    eprintln!(
        "incremental backup: class B cached {}, uncached {}",
        b(&cached),
        b(&uncached)
    );
    assert!(b(&cached) <= 3, "cached incremental backup: {cached}");
    assert!(b(&uncached) > b(&cached) + 10, "uncached {uncached} vs cached {cached}");
}

#[test]
fn bandwidth_limits_and_the_connection_bound_hold() {
    let Some((endpoint, bucket)) = server("s3_limits") else {
        return;
    };
    let upstream = endpoint.trim_start_matches("http://").to_string();
    let proxy = FaultyProxy::start_with(&upstream, Faults::default());
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    for i in 0..16 {
        fs::write(src.join(format!("f{i}")), prng(200 + i, 1 << 20)).unwrap();
    }
    // A first backup of 16 one-MiB packs; returns (seconds, bytes up, most requests at once).
    let backup = |args: &[&str]| {
        let p = Pbak::new(format!("s3:http://{}/{bucket}/{}", proxy.addr, unique("limits")).into());
        p.init_pack_mib(1);
        let mut a = vec!["--no-cache"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["backup", "-q", src.to_str().unwrap()]);
        proxy.peak.store(0, Ordering::SeqCst);
        let t = Instant::now();
        let (_, ops) = run_ops(p.cmd(&a));
        let secs = t.elapsed().as_secs_f64();
        (
            p,
            secs,
            ops["bytes_up"].as_u64().unwrap() as f64,
            proxy.peak.load(Ordering::SeqCst),
        )
    };
    // 16 MiB at 4 MiB/s: at least 4 s (a lower bound only, which cannot flake); and the
    // proxy never sees more than --connections requests at once...
    let (p, secs, up, peak) = backup(&["--connections", "2", "--limit-upload", "4096"]);
    assert!(up > 16e6, "{up}");
    assert!(secs >= 0.95 * up / (4096.0 * 1024.0), "{up} bytes in {secs:.2} s");
    assert!((1..=2).contains(&peak), "peak {peak} with --connections 2");
    // ...while with more connections it does (so the measure above can fail).
    let (_, _, _, peak) = backup(&["--connections", "8"]);
    assert!(peak > 2, "peak {peak} with --connections 8");
    // Downloads: 16 MiB at 8 MiB/s take at least 2 s.
    let target = dir.path().join("r");
    let t = Instant::now();
    p.ok(&[
        "--no-cache",
        "--limit-download",
        "8192",
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
    ]);
    let secs = t.elapsed().as_secs_f64();
    assert!(secs >= 0.95 * 2.0, "{secs:.2} s");
    assert_same_tree(&src, &target.join(src.strip_prefix("/").unwrap()));
}

#[test]
fn retry_after_is_honoured_and_stalled_requests_time_out() {
    let Some((endpoint, bucket)) = server("s3_retry_after") else {
        return;
    };
    let upstream = endpoint.trim_start_matches("http://").to_string();
    let url = |proxy: &FaultyProxy, name: &str| format!("s3:http://{}/{bucket}/{name}", proxy.addr);
    let name = unique("retry");
    let direct = Pbak::new(format!("s3:{endpoint}/{bucket}/{name}").into());
    direct.init();
    // The first two requests get 503 and 429 with Retry-After: 2. OpenDAL's own backoff
    // would retry after 0.1-0.2 s; the server asked for 2 s each time.
    let proxy = FaultyProxy::start_with(
        &upstream,
        Faults {
            error: 1.0,
            first: 2,
            retry_after: Some(2),
            ..Default::default()
        },
    );
    let p = Pbak::new(url(&proxy, &name).into());
    let t = Instant::now();
    p.ok(&["--no-cache", "snapshots"]);
    assert!(t.elapsed() >= Duration::from_secs(4), "{:?}", t.elapsed());
    let log = proxy.log.lock().unwrap().clone();
    assert!(log[0].1 && log[1].1 && !log[2].1, "{log:?}");
    for w in log.windows(2).take(2) {
        let gap = w[1].0 - w[0].0;
        assert!(gap >= Duration::from_millis(1950), "retried after {gap:?}");
    }
    // The first two requests are swallowed: with --timeout 2 each is abandoned and retried.
    let proxy = FaultyProxy::start_with(
        &upstream,
        Faults {
            stall: 1.0,
            first: 2,
            ..Default::default()
        },
    );
    let p = Pbak::new(url(&proxy, &name).into());
    let t = Instant::now();
    p.ok(&["--no-cache", "--timeout", "2", "snapshots"]);
    let took = t.elapsed();
    assert_eq!(proxy.stalls.load(Ordering::Relaxed), 2);
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(30),
        "{took:?}"
    );
}

#[test]
fn read_only_key_fails_fast_naming_the_permission() {
    let Some((endpoint, bucket)) = server("s3_read_only") else {
        return;
    };
    let (Ok(ro_id), Ok(ro_secret)) = (
        std::env::var("PBAK_TEST_S3_RO_ACCESS_KEY_ID"),
        std::env::var("PBAK_TEST_S3_RO_SECRET_ACCESS_KEY"),
    ) else {
        panic!("!!! s3_read_only: PBAK_TEST_S3_RO_* unset: restart the server with `scripts/s3-server.sh stop; eval \"$(scripts/s3-server.sh start)\"` (auth on)");
    };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src, 41);
    let p = Pbak::new(format!("s3:{endpoint}/{bucket}/{}", unique("ro")).into());
    p.init();
    p.ok(&["backup", "-q", src.to_str().unwrap()]);
    // The read-only key reads (a real IAM policy enforced by the server)...
    let ro = |args: &[&str]| {
        let mut c = p.cmd(args);
        c.env("AWS_ACCESS_KEY_ID", &ro_id)
            .env("AWS_SECRET_ACCESS_KEY", &ro_secret);
        let t = Instant::now();
        (c.output().unwrap(), t.elapsed())
    };
    // Readers take no lock and write nothing: they work with a read-only key.
    let out = dir.path().join("out");
    for args in [
        &["snapshots"][..],
        &["ls", "latest"],
        &["check"],
        &["restore", "latest", "--target", out.to_str().unwrap(), "--verify"],
    ] {
        let (o, _) = ro(args);
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
    assert_same_tree(&src, &out.join(src.strip_prefix("/").unwrap()));
    // ...but cannot write: one line naming the permission and the key, at once.
    fs::write(src.join("new"), b"new").unwrap();
    let (o, took) = ro(&["backup", "-q", src.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("permission denied") && err.contains("read-only") && err.contains("AWS_ACCESS_KEY_ID"),
        "{err}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(!err.contains(&ro_secret), "the secret was printed");
}

#[test]
fn permanent_errors_fail_fast_with_one_line() {
    let Some((endpoint, bucket)) = server("s3_errors") else {
        return;
    };
    // The exit code: 1 for what trying again cannot fix, 75 for an unreachable server.
    type Case<'a> = (String, Vec<(&'a str, &'a str)>, &'a str, i32);
    let cases: Vec<Case> = vec![
        (
            format!("s3:{endpoint}/{bucket}/{}", unique("creds")),
            vec![("AWS_SECRET_ACCESS_KEY", "wrong-secret-Zq8v")],
            "permission denied",
            1,
        ),
        (
            format!("s3:{endpoint}/no-such-bucket-pbak/x"),
            vec![],
            "no-such-bucket-pbak",
            1,
        ),
        ("s3:http://127.0.0.1:1/bucket/x".to_string(), vec![], "127.0.0.1:1", 75),
    ];
    for (url, env, want, code) in cases {
        let p = Pbak::new(url.clone().into());
        let mut c = p.cmd(&["init", "--kdf-memory-mib", "1", "--kdf-iterations", "1"]);
        for (k, v) in env {
            c.env(k, v);
        }
        let t = Instant::now();
        let o = c.output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert_eq!(o.status.code(), Some(code), "{url}: {err}");
        assert!(err.to_lowercase().contains(want), "{url}: expected {want:?} in {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(!err.contains("wrong-secret-Zq8v"), "the secret was printed: {err}");
        assert!(t.elapsed() < Duration::from_secs(10), "{url} took {:?}", t.elapsed());
    }
}

#[test]
fn credentials_from_a_private_env_file() {
    let Some((endpoint, bucket)) = server("s3_env_file") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let env = dir.path().join("b2.env");
    let key = std::env::var("AWS_ACCESS_KEY_ID").unwrap();
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap();
    fs::write(
        &env,
        format!("# test\nexport AWS_ACCESS_KEY_ID={key}\nAWS_SECRET_ACCESS_KEY=\"{secret}\"\n"),
    )
    .unwrap();
    let p = Pbak::new(format!("s3:{endpoint}/{bucket}/{}", unique("envfile")).into());
    let run = |mode: u32| {
        fs::set_permissions(&env, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
        let mut c = p.cmd(&[
            "--env-file",
            env.to_str().unwrap(),
            "init",
            "--kdf-memory-mib",
            "1",
            "--kdf-iterations",
            "1",
        ]);
        c.env_remove("AWS_ACCESS_KEY_ID").env_remove("AWS_SECRET_ACCESS_KEY");
        c.output().unwrap()
    };
    let o = run(0o644);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("chmod 600"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = run(0o600);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!all.contains(&secret), "the secret was printed");
}

#[test]
fn a_backup_hosts_key_without_the_delete_right_does_all_but_forget_and_prune() {
    let Some((endpoint, bucket)) = server("s3_no_delete") else {
        return;
    };
    let (Ok(id), Ok(secret)) = (
        std::env::var("PBAK_TEST_S3_ND_ACCESS_KEY_ID"),
        std::env::var("PBAK_TEST_S3_ND_SECRET_ACCESS_KEY"),
    ) else {
        panic!("!!! s3_no_delete: PBAK_TEST_S3_ND_* unset: restart the server with `scripts/s3-server.sh stop; eval \"$(scripts/s3-server.sh start)\"` (auth on)");
    };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src, 43);
    let p = Pbak::new(format!("s3:{endpoint}/{bucket}/{}", unique("nodelete")).into());
    p.init();
    let host = |args: &[&str]| {
        let mut c = p.cmd(args);
        c.env("AWS_ACCESS_KEY_ID", &id).env("AWS_SECRET_ACCESS_KEY", &secret);
        let t = Instant::now();
        (c.output().unwrap(), t.elapsed())
    };
    let out = dir.path().join("out");
    let steps: [&[&str]; 6] = [
        &["backup", "-q", src.to_str().unwrap()],
        &["backup", "-q", src.to_str().unwrap()],
        &["snapshots"],
        &["ls", "latest"],
        &["check", "--read-data"],
        &["restore", "latest", "--target", out.to_str().unwrap(), "--verify"],
    ];
    for args in steps {
        let (o, _) = host(args);
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
    assert_same_tree(&src, &out.join(src.strip_prefix("/").unwrap()));
    // forget and prune fail at once with one line naming the missing right; nothing changed.
    for args in [&["forget", "--keep-last", "1"][..], &["prune"]] {
        let (o, took) = host(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            err.contains("needs a key that may delete") && err.contains("deleteFiles"),
            "{err}"
        );
        assert!(took < Duration::from_secs(10), "{took:?}");
    }
    let snaps: serde_json::Value = serde_json::from_str(&p.ok(&["snapshots", "--json"])).unwrap();
    assert_eq!(snaps.as_array().unwrap().len(), 2);
    // The prune host's key may.
    p.ok(&["forget", "--keep-last", "1", "--prune"]);
}
