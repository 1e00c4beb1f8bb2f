//! The example config files in `examples/`, one per host of the fleet (DESIGN.md): each
//! passes `pbak config check` through the binary and says what the fleet needs (its
//! subvolumes, the retention per kind of host, only hetzner prunes); an invalid file fails
//! with one line naming the file, the line and the key.

use pbak::jobs::config;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A policy's name, hosts, paths and daily/weekly/monthly counts.
type Rule = (String, Vec<String>, Vec<String>, [u32; 3]);

const HOSTS: [&str; 5] = ["zephyrus", "yoga", "hetzner", "contabo", "ovh"];

fn example(host: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(format!("{host}.toml"))
}

fn pbak(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pbak"))
        .args(args)
        .env_remove("PBAK_CONFIG")
        .env_remove("PBAK_PROFILE")
        .env_remove("PBAK_REPOSITORY")
        .env_remove("PBAK_PASSWORD_FILE")
        .env_remove("PBAK_ENV_FILE")
        .output()
        .expect("run pbak")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn every_example_passes_config_check_and_lists_its_one_profile() {
    for host in HOSTS {
        let f = example(host);
        let f = f.to_str().unwrap();
        let o = pbak(&["--config", f, "config", "check"]);
        let (out, err) = (text(&o.stdout), text(&o.stderr));
        assert!(o.status.success(), "{host}: {out}{err}");
        assert!(out.starts_with(&format!("config file {f}: valid\n")), "{out}");
        let profiles: Vec<&str> = out.lines().filter(|l| l.starts_with("profile ")).collect();
        assert_eq!(profiles.len(), 1, "{out}");
        assert!(
            profiles[0].starts_with(&format!("profile {host}: host {host}, ")),
            "{out}"
        );

        let o = pbak(&["--config", f, "--json", "config", "check"]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["valid"], true);
        assert_eq!(v["profiles"][0]["name"], host);
        assert_eq!(v["warnings"].as_array().unwrap().len(), 0, "{v}");
    }
}

#[test]
fn the_examples_say_what_the_fleet_needs() {
    let subvolumes = |h: &str| -> &[&str] {
        match h {
            "zephyrus" => &["/", "/home", "/home/alice/dev"],
            "yoga" => &["/", "/home"],
            "hetzner" | "contabo" => &["/", "/home", "/etc", "/var/lib/postgresql", "/var/lib/redis"],
            _ => &["/", "/home", "/etc"],
        }
    };
    let mut retention = None;
    for host in HOSTS {
        let cfg = config::load(&example(host)).unwrap();
        let p = cfg.profile(host).unwrap();
        let sources: Vec<&str> = p.sources.iter().map(|s| s.to_str().unwrap()).collect();
        assert_eq!(sources, subvolumes(host), "{host}");
        assert_eq!(p.host.as_deref(), Some(host));
        assert!(p.snapshot && p.forget, "{host}: snapshot-backup and forget");
        // Only hetzner prunes (its key may delete) and checks; it checks a subset weekly.
        assert_eq!(p.prune.is_some(), host == "hetzner", "{host}");
        assert_eq!(p.check.is_some(), host == "hetzner", "{host}");
        if let Some(c) = &p.check {
            assert_eq!(c.every, "7d");
            assert!(c.read_data_subset.is_some());
        }
        // The nightly timer: 02:00 plus up to 30 minutes (the defaults).
        assert_eq!(p.schedule.on_calendar, "*-*-* 02:00:00");
        assert_eq!(p.schedule.randomized_delay, "30min");
        // Laptops take the password from 1Password, servers from a root-only file; B2 keys
        // always from an env file.
        let laptop = matches!(host, "zephyrus" | "yoga");
        let r = &cfg.repository;
        assert!(r.password.is_none() && r.env_file.is_some());
        assert_eq!(r.password_file.is_some(), !laptop, "{host}");
        assert!(!laptop || r.password_command.as_deref().unwrap().starts_with("op read "));
        // Database servers refuse copy-on-write database subvolumes.
        assert_eq!(p.strict, sources.contains(&"/var/lib/postgresql"), "{host}");
        assert_eq!(cfg.alerts.cost_warn, 8.0);
        assert_eq!(cfg.alerts.cost_critical, 10.0);
        assert_eq!(cfg.alerts.max_age, "36h");

        // The fleet's retention, the same in every file.
        let ret = cfg.retention.as_ref().unwrap();
        let rules: Vec<Rule> = ret
            .policies
            .iter()
            .map(|p| {
                let k = &p.keep;
                (
                    p.name.clone(),
                    p.selects.hosts.clone(),
                    p.selects.paths.clone(),
                    [k.daily, k.weekly, k.monthly],
                )
            })
            .collect();
        let keep_of = |h: &str, path: &str| {
            rules
                .iter()
                .find(|(_, hosts, paths, _)| {
                    hosts.iter().any(|x| x == h) && (paths.is_empty() || paths.iter().any(|x| x == path))
                })
                .map(|r| r.3)
        };
        for h in HOSTS {
            let want = if matches!(h, "zephyrus" | "yoga") {
                [7, 4, 12]
            } else {
                [30, 12, 12]
            };
            assert_eq!(keep_of(h, "/home"), Some(want), "{h}");
        }
        let db = rules.iter().find(|r| r.0 == "databases").unwrap();
        assert_eq!(db.1, ["hetzner", "contabo"]);
        assert_eq!(db.2, ["/var/lib/postgresql", "/var/lib/redis"]);
        match &retention {
            None => retention = Some(rules),
            Some(first) => assert_eq!(first, &rules, "{host}: another retention than zephyrus'"),
        }
    }
}

#[test]
fn an_invalid_file_is_one_line_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(example("hetzner")).unwrap();
    let cases = [
        // An unknown key in the profile, and a bad value.
        (
            "[profile.hetzner]\n",
            "[profile.hetzner]\nsourcez = [\"/\"]\n",
            "sourcez",
        ),
        ("every = \"20h\"", "every = \"twenty hours\"", "prune.every"),
        (
            "read_data_subset = \"25G\"",
            "read_data_subset = \"9/7\"",
            "read_data_subset",
        ),
    ];
    for (from, to, key) in cases {
        assert!(good.contains(from), "{from}");
        let bad = good.replacen(from, to, 1);
        let line = bad
            .lines()
            .position(|l| l.contains(to.lines().last().unwrap()))
            .unwrap()
            + 1;
        let f = dir.path().join("bad.toml");
        std::fs::write(&f, &bad).unwrap();
        let o = pbak(&["--config", f.to_str().unwrap(), "config", "check"]);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(o.stdout.is_empty());
        assert_eq!(err.lines().count(), 1, "{err}");
        let want = format!("config file {} line {line}, key `", f.display());
        assert!(
            err.starts_with(&format!("pbak: {want}")) && err.contains(key),
            "{key}: {err}"
        );
    }
    // No config at all: what to do.
    let o = pbak(&["config", "check"]);
    if !Path::new(config::DEFAULT_PATH).exists() {
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1));
        assert!(err.contains("needs a config file") && err.contains("--config"), "{err}");
    }
}
