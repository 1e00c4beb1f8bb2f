//! Key files driven through the binary: Argon2 parameters bounded before any derivation,
//! malformed key files named as such (never "wrong password"), no empty passwords for new
//! keys, `key passwd` keeping the key's parameters, and `--help` stating the real defaults.
mod common;

use common::pbak::*;
use pbak::format::keyfile::KdfParams;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn keys(repo: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(repo.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

/// A private file holding `pw`, for PBAK_NEW_PASSWORD_FILE.
fn pw_file(dir: &Path, pw: &str) -> PathBuf {
    let f = dir.join(format!("pw-{}", pw.len()));
    fs::write(&f, pw).unwrap();
    sh(&format!("chmod 600 '{}'", f.display()));
    f
}

#[test]
fn help_states_the_defaults_and_bounds_are_checked_by_clap() {
    let dir = tempfile::tempdir().unwrap();
    let p = Pbak::new(dir.path().join("repo"));
    let d = KdfParams::default();
    for args in [&["init", "--help"][..], &["key", "add", "--help"]] {
        let help = p.ok(args);
        assert!(
            help.contains(&format!("(default {}, at most", d.m_cost_kib / 1024)),
            "{help}"
        );
        assert!(help.contains(&format!("passes (default {},", d.t_cost)), "{help}");
    }
    let o = p.run(&["init", "--kdf-memory-mib", "4194304"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("4194304 is not in 1..=2048"), "{}", stderr(&o));
    let o = p.run(&["init", "--kdf-iterations", "64"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!p.repo.exists(), "nothing created on a refused flag");
}

#[test]
fn malformed_key_files_are_named_not_wrong_password() {
    let dir = tempfile::tempdir().unwrap();
    let p = Pbak::new(dir.path().join("repo"));
    p.init();
    let key = keys(&p.repo).remove(0);
    let name = format!("keys/{}", key.file_name().unwrap().to_str().unwrap());
    let good = fs::read(&key).unwrap();
    let mut hostile = json(&key);
    hostile["m_cost_kib"] = (4u64 << 20).into();
    hostile["t_cost"] = 64.into();
    let hostile = serde_json::to_vec(&hostile).unwrap();
    for bad in [&b""[..], &good[..good.len() / 2], b"{\"version\": 1}", &hostile] {
        fs::write(&key, bad).unwrap();
        let t = Instant::now();
        let o = p.run(&["snapshots"]);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1));
        assert!(e.contains(&format!("malformed key file {name}:")), "{e}");
        assert!(!e.contains("wrong password"), "{e}");
        assert!(t.elapsed().as_secs() < 5, "no derivation with hostile parameters");
    }
    fs::write(&key, &good).unwrap();
    p.ok(&["snapshots"]);
}

#[test]
fn a_malformed_key_does_not_stop_another_from_opening() {
    let dir = tempfile::tempdir().unwrap();
    let p = Pbak::new(dir.path().join("repo"));
    p.init();
    let mut c = p.cmd(&["key", "add", "--kdf-memory-mib", "1", "--kdf-iterations", "1"]);
    c.env("PBAK_NEW_PASSWORD_FILE", pw_file(dir.path(), "second"));
    assert!(c.output().unwrap().status.success());
    let second = Pbak {
        repo: p.repo.clone(),
        password: "second".into(),
    };
    // Truncate the key of the first password: the second still opens, the first is told its
    // key is malformed (with two keys, as a warning beside "wrong password").
    let all = keys(&p.repo);
    let victim = all
        .iter()
        .find(|k| {
            let bytes = fs::read(k).unwrap();
            fs::write(k, &bytes[..10]).unwrap();
            let opens = second.run(&["snapshots"]).status.success();
            if !opens {
                fs::write(k, &bytes).unwrap();
            }
            opens
        })
        .expect("truncating one of the two keys leaves the other working");
    let o = p.run(&["snapshots"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    let name = victim.file_name().unwrap().to_str().unwrap();
    assert!(e.contains(&format!("warning: malformed key file keys/{name}")), "{e}");
}

#[test]
fn empty_new_passwords_refused_and_passwd_keeps_the_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let p = Pbak::new(dir.path().join("repo"));
    p.init();
    let empty = pw_file(dir.path(), "");
    for args in [&["key", "add"][..], &["key", "passwd"]] {
        let o = p.cmd(args).env("PBAK_NEW_PASSWORD_FILE", &empty).output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(stderr(&o).contains("empty password refused"), "{}", stderr(&o));
    }
    assert_eq!(keys(&p.repo).len(), 1);

    let o = p
        .cmd(&["key", "passwd"])
        .env("PBAK_NEW_PASSWORD_FILE", pw_file(dir.path(), "changed"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let k = keys(&p.repo);
    assert_eq!(k.len(), 1);
    let kf = json(&k[0]);
    assert_eq!(
        (kf["m_cost_kib"].as_u64(), kf["t_cost"].as_u64()),
        (Some(1024), Some(1))
    );
    Pbak {
        repo: p.repo.clone(),
        password: "changed".into(),
    }
    .ok(&["snapshots"]);
}

/// The attack (issue 12): a data blob whose plaintext an attacker chose (a file they
/// got backed up) copied over `config`, or planted as a snapshot, is refused; a key file pins
/// the config it was made for.
#[test]
fn a_sealed_object_cannot_stand_in_for_another_kind() {
    let dir = tempfile::tempdir().unwrap();
    let p = Pbak::new(dir.path().join("repo"));
    p.init();
    let loc = pbak::backends::Location::parse(p.repo.to_str().unwrap()).unwrap();
    let backend = pbak::backends::Backend::open(&loc, false).unwrap();
    let repo = pbak::repo::Repository::open(backend, p.password.as_bytes()).unwrap();
    let original = fs::read(p.repo.join("config")).unwrap();
    // What a backed-up file's blob is: the plaintext sealed as a blob.
    let mut evil = pbak::format::config::Config::new();
    evil.pack_size = 1 << 30;
    let as_blob = repo.key().seal(&evil.encode());
    fs::write(p.repo.join("config"), &as_blob).unwrap();
    let o = p.run(&["snapshots"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("config is corrupt") && stderr(&o).contains("replaced"),
        "{}",
        stderr(&o)
    );
    // Even a config properly sealed as one, but not the one the key file pins, is refused.
    let other = repo.key().seal_as(pbak::format::crypto::Kind::Config, &evil.encode());
    fs::write(p.repo.join("config"), &other).unwrap();
    let o = p.run(&["snapshots"]);
    assert!(stderr(&o).contains("not the config"), "{}", stderr(&o));
    fs::write(p.repo.join("config"), &original).unwrap();
    // A blob planted as a snapshot is a damaged snapshot, skipped and named, never listed.
    fs::create_dir_all(p.repo.join("snapshots")).unwrap();
    let planted = repo.key().seal(b"{}");
    let name = blake3::hash(&planted).to_hex().to_string();
    fs::write(p.repo.join("snapshots").join(&name), &planted).unwrap();
    let o = p.run(&["snapshots", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains(&name[..8]), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "[]");
}
