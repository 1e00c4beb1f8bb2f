//! Smaller hardening, through the binary: the password command's clean environment, an
//! overlong `--keep-within`, and `ls` escaping names on a terminal only.
mod common;

use common::pbak::*;
use std::fs;
use std::process::Command;

#[test]
fn password_command_gets_a_clean_environment() {
    let dir = tempfile::tempdir().unwrap();
    let p = Pbak::new(dir.path().join("repo"));
    p.init();
    let seen = dir.path().join("env");
    let cmd = format!("env > '{}'; echo 'correct horse'", seen.display());
    let o = p
        .cmd(&["snapshots"])
        .env("PBAK_PASSWORD_COMMAND", &cmd)
        .env("PBAK_PASSWORD", "not this one")
        .env("AWS_SECRET_ACCESS_KEY", "aws-secret")
        .env("B2_ACCOUNT_KEY", "b2-secret")
        .env("XDG_RUNTIME_DIR", "/run/user/test")
        .env("LC_ALL", "C.UTF-8")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let env = fs::read_to_string(&seen).unwrap();
    for gone in ["PBAK_", "AWS_", "B2_", "not this one", "secret"] {
        assert!(!env.contains(gone), "{gone} reached the command:\n{env}");
    }
    for kept in ["PATH=", "XDG_RUNTIME_DIR=/run/user/test", "LC_ALL=C.UTF-8"] {
        assert!(env.contains(kept), "{kept} missing:\n{env}");
    }
}

#[test]
fn an_overlong_keep_within_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let p = Pbak::new(dir.path().join("repo"));
    p.init();
    for within in ["99999999999999d", "999999999999999999999999h"] {
        let o = p.run(&["forget", "--keep-within", within]);
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(!e.contains("panicked"), "{e}");
        assert!(e.contains("too long"), "{e}");
        assert_ne!(o.status.code(), Some(101), "{e}");
        assert!(!o.status.success());
    }
    p.ok(&["forget", "--keep-within", "100000y"]);
}

#[test]
fn ls_escapes_control_characters_on_a_terminal_only() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    let evil = "a\x1b]0;owned\x07b\x1b[2Jc\\d";
    fs::write(src.join(evil), b"x").unwrap();
    let p = Pbak::new(dir.path().join("repo"));
    p.init();
    p.ok(&["backup", src.to_str().unwrap()]);

    let piped = p.ok(&["ls", "latest"]);
    assert!(piped.contains(evil), "piped text stays exact: {piped:?}");
    let json = p.ok(&["--json", "ls", "latest"]);
    let paths: Vec<String> = json
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["path"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(paths.iter().any(|x| x.ends_with(&format!("/{evil}"))), "{paths:?}");

    // Under a pseudo-terminal (`script`), as `ls -b` shows it.
    let pbak = env!("CARGO_BIN_EXE_pbak");
    let line = format!("'{pbak}' -r '{}' ls latest", p.repo.display());
    let o = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("PBAK_PASSWORD", &p.password)
        .env_remove("PBAK_PASSWORD_FILE")
        .env_remove("PBAK_PASSWORD_COMMAND")
        .env("PBAK_CACHE_DIR", std::env::temp_dir().join("pbak-tests-cache"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("a\\033]0;owned\\ab\\033[2Jc\\\\d"), "{out:?}");
    assert!(!out.as_bytes().contains(&0x1b), "raw ESC on the terminal: {out:?}");
}
