//! The same integration steps against a real S3 server on loopback (moto, started by
//! `scripts/s3-server.sh`), plus injected network faults and permanent errors.
mod common;

use common::faulty_proxy::FaultyProxy;
use common::pbak::*;
use std::fs;
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

#[test]
fn s3_with_ten_percent_faults_completes_and_restores() {
    let Some((endpoint, bucket)) = server("s3_faults") else {
        return;
    };
    let upstream = endpoint.trim_start_matches("http://").to_string();
    let proxy = FaultyProxy::start(&upstream, 0.10);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    for i in 0..4 {
        fs::write(src.join(format!("f{i}")), prng(100 + i, 24 << 20)).unwrap();
    }
    let p = Pbak::new(format!("s3:http://{}/{bucket}/{}", proxy.addr, unique("faults")).into());
    p.init();
    p.ok(&["backup", src.to_str().unwrap()]);
    let target = dir.path().join("restore");
    p.ok(&["restore", "latest", "--target", target.to_str().unwrap(), "--verify"]);
    let d = std::process::Command::new("diff")
        .arg("-r")
        .arg(&src)
        .arg(target.join(src.strip_prefix("/").unwrap()))
        .status()
        .unwrap();
    assert!(d.success());
    p.ok(&["check", "--read-data"]);
    assert!(
        proxy.faults.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "no fault was injected"
    );
}

#[test]
fn permanent_errors_fail_fast_with_one_line() {
    let Some((endpoint, bucket)) = server("s3_errors") else {
        return;
    };
    type Case<'a> = (String, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            format!("s3:{endpoint}/{bucket}/{}", unique("creds")),
            vec![("AWS_SECRET_ACCESS_KEY", "wrong")],
            "permission denied",
        ),
        (
            format!("s3:{endpoint}/no-such-bucket-pbak/x"),
            vec![],
            "no-such-bucket-pbak",
        ),
        ("s3:http://127.0.0.1:1/bucket/x".to_string(), vec![], "127.0.0.1:1"),
    ];
    for (url, env, want) in cases {
        let p = Pbak::new(url.clone().into());
        let mut c = p.cmd(&["init", "--kdf-memory-mib", "1", "--kdf-iterations", "1"]);
        for (k, v) in env {
            c.env(k, v);
        }
        let t = Instant::now();
        let o = c.output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert_eq!(o.status.code(), Some(1), "{url}: {err}");
        assert!(err.to_lowercase().contains(want), "{url}: expected {want:?} in {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
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
