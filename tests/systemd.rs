//! Installing pbak on a host: `pbak systemd PROFILE` for every example config, checked by
//! `systemd-analyze verify` (Debian's `systemd`); `--install --root` writing the units and
//! the enable links as `systemctl enable` does; shell completions and man pages from the
//! clap definitions; and the NixOS module and package parsing (`nix-instantiate --parse`,
//! Debian's `nix-bin`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const HOSTS: [&str; 5] = ["zephyrus", "yoga", "hetzner", "contabo", "ovh"];
const BIN: &str = env!("CARGO_BIN_EXE_pbak");

fn root_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn example(host: &str) -> PathBuf {
    root_dir().join("examples").join(format!("{host}.toml"))
}

fn pbak(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("PBAK_CONFIG")
        .env_remove("PBAK_PROFILE")
        .env_remove("PBAK_PASSWORD_FILE")
        .env_remove("PBAK_ENV_FILE")
        .output()
        .expect("run pbak")
}

fn ok(args: &[&str]) -> String {
    let o = pbak(args);
    assert!(
        o.status.success(),
        "pbak {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// Whether `tool` is installed; without it a test is skipped, except under CI (which
/// installs it: scripts/test-all.sh).
fn have(tool: &str, package: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} is missing: apt-get install -y {package} (scripts/test-all.sh does)"
        );
        eprintln!("SKIP: {tool} is not installed (Debian package {package})");
    }
    found
}

/// The units of `host`'s example, written by `--output DIR`: file name -> text.
fn generate(host: &str, dir: &Path) -> BTreeMap<String, String> {
    let out = ok(&[
        "--config",
        example(host).to_str().unwrap(),
        "systemd",
        host,
        "--output",
        dir.to_str().unwrap(),
    ]);
    let units: BTreeMap<String, String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    // One line per file, naming it.
    assert_eq!(out.lines().count(), units.len(), "{out}");
    for name in units.keys() {
        assert!(out.contains(&format!("wrote {}\n", dir.join(name).display())), "{out}");
    }
    units
}

fn line<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

#[test]
fn units_of_every_example_pass_systemd_analyze_verify() {
    let verify = have("systemd-analyze", "systemd");
    for host in HOSTS {
        let dir = tempfile::tempdir().unwrap();
        let units = generate(host, dir.path());
        let mut want = vec![format!("pbak-{host}"), format!("pbak-{host}-cost")];
        if host == "hetzner" {
            want.push(format!("pbak-{host}-check"));
        }
        if matches!(host, "zephyrus" | "yoga") {
            want.push(format!("pbak-{host}-snapshot"));
        }
        let mut want: Vec<String> = want
            .iter()
            .flat_map(|u| [format!("{u}.service"), format!("{u}.timer")])
            .collect();
        want.sort();
        assert_eq!(units.keys().cloned().collect::<Vec<_>>(), want, "{host}");

        let config = example(host).canonicalize().unwrap();
        let service = &units[&format!("pbak-{host}.service")];
        assert_eq!(
            line(service, "ExecStart"),
            // The check has a timer of its own where the profile has a check table.
            [format!(
                "{BIN} --config {} run {host}{}",
                config.display(),
                if host == "hetzner" { " --no-check" } else { "" }
            )],
            "{service}"
        );
        assert_eq!(line(service, "Type"), ["oneshot"]);
        assert_eq!(line(service, "After"), ["network-online.target"]);
        assert_eq!(line(service, "Wants"), ["network-online.target"]);
        assert_eq!(line(service, "IOSchedulingClass"), ["idle"]);
        let servers = !matches!(host, "zephyrus" | "yoga");
        assert_eq!(line(service, "Nice"), [if servers { "15" } else { "10" }], "{host}");
        assert_eq!(
            line(service, "CPUQuota"),
            if matches!(host, "hetzner" | "contabo") {
                vec!["50%"]
            } else {
                vec![]
            }
        );
        // The password file only as a credential; pbak is told its path in %d.
        if servers {
            assert!(
                line(service, "LoadCredential").contains(&"password:/etc/pbak/password"),
                "{service}"
            );
            assert!(
                line(service, "Environment").contains(&"PBAK_PASSWORD_FILE=%d/password"),
                "{service}"
            );
        } else {
            assert!(!service.contains("password"), "{service}");
            assert!(
                !service.contains("op read"),
                "the password command stays in the config: {service}"
            );
        }
        assert!(
            line(service, "LoadCredential").contains(&"env:/etc/pbak/b2.env"),
            "{service}"
        );
        assert!(line(service, "ProtectSystem").is_empty() && line(service, "ProtectHome").is_empty());

        for (name, text) in units.iter().filter(|(n, _)| n.ends_with(".timer")) {
            assert_eq!(line(text, "Persistent"), ["true"], "{name}");
            assert_eq!(line(text, "WantedBy"), ["timers.target"], "{name}");
        }
        let timer = &units[&format!("pbak-{host}.timer")];
        assert_eq!(line(timer, "OnCalendar"), ["*-*-* 02:00:00"]);
        assert_eq!(line(timer, "RandomizedDelaySec"), ["30min"]);
        if host == "hetzner" {
            let c = &units["pbak-hetzner-check.service"];
            assert!(
                line(c, "ExecStart")[0].ends_with(" --profile hetzner check --read-data-subset 25G"),
                "{c}"
            );
            assert_eq!(
                line(&units["pbak-hetzner-check.timer"], "OnCalendar"),
                ["Sun *-*-* 04:00:00"]
            );
        }
        let cost = &units[&format!("pbak-{host}-cost.service")];
        assert!(
            line(cost, "ExecStart")[0].ends_with(&format!(" --profile {host} cost --warn 8 --critical 10")),
            "{cost}"
        );
        assert_eq!(
            line(&units[&format!("pbak-{host}-cost.timer")], "OnCalendar"),
            ["*-*-01 06:00:00"]
        );
        if host == "zephyrus" {
            let s = &units["pbak-zephyrus-snapshot.service"];
            assert!(
                line(s, "ExecStart")[0].ends_with(" --profile zephyrus btrfs snapshot / /home /home/alice/dev"),
                "{s}"
            );
            assert!(line(s, "After").is_empty(), "a local snapshot needs no network");
            assert_eq!(line(&units["pbak-zephyrus-snapshot.timer"], "OnCalendar"), ["hourly"]);
        }

        if verify {
            let files: Vec<PathBuf> = units.keys().map(|n| dir.path().join(n)).collect();
            let o = Command::new("systemd-analyze")
                .arg("verify")
                .args(&files)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            // verify exits 0 on a setting it ignores, but names the file: none may be ours.
            let ours: Vec<&str> = err.lines().filter(|l| l.contains("pbak")).collect();
            assert!(
                o.status.success() && ours.is_empty(),
                "{host}: systemd-analyze verify:\n{err}"
            );
        }
    }
}

#[test]
fn systemd_analyze_verify_would_catch_a_bad_unit() {
    if !have("systemd-analyze", "systemd") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let units = generate("hetzner", dir.path());
    // What the test above relies on: a broken value is reported, naming the file.
    let bad = units["pbak-hetzner.service"].replace("Nice=15", "Nice=99");
    let f = dir.path().join("pbak-hetzner.service");
    std::fs::write(&f, bad).unwrap();
    let o = Command::new("systemd-analyze").arg("verify").arg(&f).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.lines()
            .any(|l| l.contains("pbak-hetzner.service") && l.contains("Nice")),
        "{err}"
    );
}

#[test]
fn stdout_separates_the_files_and_no_secret_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("pbak.toml");
    let secret = "correct-horse-battery-staple";
    std::fs::write(
        &cfg,
        format!(
            "[repository]\nurl = \"/srv/repo\"\npassword = \"{secret}\"\n\
             [profile.home]\nsources = [\"/home\"]\nforget = false\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = ok(&["--config", cfg.to_str().unwrap(), "systemd", "home"]);
    let heads: Vec<&str> = out.lines().filter(|l| l.starts_with("# pbak-")).collect();
    assert_eq!(
        heads,
        [
            "# pbak-home.service",
            "# pbak-home.timer",
            "# pbak-home-cost.service",
            "# pbak-home-cost.timer"
        ]
    );
    assert!(!out.contains(secret) && !out.contains("LoadCredential"), "{out}");

    let o = pbak(&["--config", cfg.to_str().unwrap(), "systemd", "away"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no profile \"away\"") && err.contains("home"), "{err}");
}

#[test]
fn install_under_a_root_writes_the_units_and_enables_the_timers() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let out = ok(&[
        "--config",
        example("zephyrus").to_str().unwrap(),
        "systemd",
        "zephyrus",
        "--install",
        "--root",
        r.to_str().unwrap(),
    ]);
    let sys = r.join("etc/systemd/system");
    let units = ["pbak-zephyrus", "pbak-zephyrus-cost", "pbak-zephyrus-snapshot"];
    assert_eq!(out.lines().count(), units.len() * 3, "two files and a link each: {out}");
    for u in units {
        for kind in ["service", "timer"] {
            let f = sys.join(format!("{u}.{kind}"));
            assert!(out.contains(&format!("wrote {}\n", f.display())), "{out}");
            let mode = std::fs::metadata(&f).unwrap().permissions();
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(mode.mode() & 0o777, 0o644);
        }
        let link = sys.join(format!("timers.target.wants/{u}.timer"));
        let target = PathBuf::from(format!("/etc/systemd/system/{u}.timer"));
        assert_eq!(std::fs::read_link(&link).unwrap(), target);
        assert!(
            out.contains(&format!("enabled {} -> {}\n", link.display(), target.display())),
            "{out}"
        );
    }
    assert!(!sys.join("timers.target.wants/pbak-zephyrus.service").exists());

    // The same links as `systemctl --root enable` makes (it works offline).
    if have("systemctl", "systemd") {
        let other = tempfile::tempdir().unwrap();
        let osys = other.path().join("etc/systemd/system");
        std::fs::create_dir_all(&osys).unwrap();
        for e in std::fs::read_dir(&sys).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                std::fs::copy(&p, osys.join(p.file_name().unwrap())).unwrap();
            }
        }
        let timers: Vec<String> = units.iter().map(|u| format!("{u}.timer")).collect();
        let o = Command::new("systemctl")
            .arg(format!("--root={}", other.path().display()))
            .arg("enable")
            .args(&timers)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let links = |d: &Path| -> Vec<(String, PathBuf)> {
            let mut v: Vec<_> = std::fs::read_dir(d.join("timers.target.wants"))
                .unwrap()
                .map(|e| {
                    let p = e.unwrap().path();
                    (
                        p.file_name().unwrap().to_str().unwrap().to_string(),
                        std::fs::read_link(&p).unwrap(),
                    )
                })
                .collect();
            v.sort();
            v
        };
        assert_eq!(links(&sys), links(&osys));
    }
}

#[test]
fn completions_for_each_shell_name_the_subcommands() {
    for shell in ["bash", "zsh", "fish"] {
        let out = ok(&["completions", shell]);
        for sub in ["snapshot-backup", "systemd", "restore", "read-data-subset"] {
            assert!(out.contains(sub), "{shell} lacks {sub}");
        }
    }
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), ok(&["completions", "bash"])).unwrap();
    let o = Command::new("bash").arg("-n").arg(f.path()).output().unwrap();
    assert!(o.status.success(), "bash -n: {}", String::from_utf8_lossy(&o.stderr));
    // A pipe closed early (the output is over 64 KiB) is not a crash.
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "'{BIN}' completions zsh | head -c 10 >/dev/null; echo ${{PIPESTATUS[0]}}"
        ))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        String::from_utf8_lossy(&o.stdout).trim() == "0" && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn man_writes_a_page_per_command_that_groff_reads() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(&["man", dir.path().to_str().unwrap()]);
    for page in [
        "pbak.1",
        "pbak-snapshot-backup.1",
        "pbak-systemd.1",
        "pbak-btrfs-doctor.1",
        "pbak-key-add.1",
    ] {
        let f = dir.path().join(page);
        assert!(out.contains(&format!("wrote {}\n", f.display())), "{out}");
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(text.lines().any(|l| l.starts_with(".TH ")), "{page}");
    }
    let systemd = std::fs::read_to_string(dir.path().join("pbak-systemd.1")).unwrap();
    assert!(systemd.contains("install"), "{systemd}");
    if have("groff", "groff-base") {
        let o = Command::new("groff")
            .args(["-man", "-Tascii", "-P-bcou", "-ww"])
            .arg(dir.path().join("pbak-systemd.1"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success() && o.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(text.contains("--output") && text.contains("NAME"), "{text}");
    }
}

#[test]
fn the_nix_module_and_package_parse() {
    if !have("nix-instantiate", "nix-bin") {
        return;
    }
    // Parsing needs no store, but nix may want to create its state and log directories.
    let state = tempfile::tempdir().unwrap();
    for f in ["nix/module.nix", "nix/package.nix"] {
        let o = Command::new("nix-instantiate")
            .arg("--parse")
            .arg(root_dir().join(f))
            .env("NIX_STATE_DIR", state.path().join("state"))
            .env("NIX_LOG_DIR", state.path().join("log"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{f}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(!o.stdout.is_empty());
    }
    // And what the module promises: the options and the credentials.
    let module = std::fs::read_to_string(root_dir().join("nix/module.nix")).unwrap();
    for s in [
        "options.services.pbak",
        "pkgs.formats.toml",
        "LoadCredential",
        "PBAK_PASSWORD_FILE=%d/password",
        "\"timers.target\"",
        "Persistent = true",
    ] {
        assert!(module.contains(s), "module.nix lacks {s}");
    }
    let package = std::fs::read_to_string(root_dir().join("nix/package.nix")).unwrap();
    for s in [
        "buildRustPackage",
        "cargoLock.lockFile = ../Cargo.lock",
        "installShellCompletion",
        "installManPage",
    ] {
        assert!(package.contains(s), "package.nix lacks {s}");
    }
}
