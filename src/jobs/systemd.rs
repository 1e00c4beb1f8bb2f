//! systemd units for a profile of the config file (`pbak systemd PROFILE`): the nightly
//! `pbak run`, the weekly check, the monthly cost estimate and, when the profile asks for
//! it, local Btrfs snapshots on a schedule of their own. The text is made by pure functions
//! of the config, its path and the pbak binary's path; [`install`] writes it under a root.
//!
//! Invariants: no secret is ever written into a unit (the password file reaches the service
//! as a systemd credential, `LoadCredential=`, and pbak is told only its path, `%d/password`);
//! every value taken from the config is escaped for systemd (`%` specifiers, `$` variables,
//! quotes) or refused when it cannot be (control characters); the hardening never stops a
//! backup from reading every file or from writing its local snapshots (which live inside
//! the subvolumes, `/etc` and `/usr` included, so no `ProtectSystem=`).

use crate::error::{Error, Result};
use crate::jobs::config::{Config, Profile};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One generated unit file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// The file name, e.g. `pbak-hetzner.timer`.
    pub name: String,
    pub text: String,
}

impl Unit {
    pub fn is_timer(&self) -> bool {
        self.name.ends_with(".timer")
    }
}

/// Where the units find pbak and its config file (both absolute).
#[derive(Debug, Clone)]
pub struct Paths {
    pub pbak: PathBuf,
    pub config: PathBuf,
}

/// The cache directory the services use (systemd's `CacheDirectory=pbak`).
pub const CACHE_DIR: &str = "/var/cache/pbak";

/// Every unit of profile `name`: `pbak-NAME.{service,timer}`, `pbak-NAME-check.*` when the
/// profile has a `[check]` table, `pbak-NAME-cost.*`, and `pbak-NAME-snapshot.*` when
/// `local_snapshots.schedule` is set. Services first, each before its timer.
pub fn units(cfg: &Config, name: &str, paths: &Paths) -> Result<Vec<Unit>> {
    let p = cfg.profile(name)?;
    for (what, path) in [("pbak binary", &paths.pbak), ("config file", &paths.config)] {
        if !path.is_absolute() {
            return Err(Error::Usage(format!(
                "the {what} path {} is not absolute: systemd units need absolute paths",
                path.display()
            )));
        }
    }
    // nice and cpu_quota were checked when the config file was read.
    let s = &p.schedule;
    let base = Base::new(cfg, p, name, paths)?;
    let mut out = Vec::new();

    // With a check table the weekly check timer checks; the nightly run then does not.
    let run = match p.check {
        Some(_) => base.pbak_args(&["run", name, "--no-check"])?,
        None => base.pbak_args(&["run", name])?,
    };
    out.push(base.service("", &format!("pbak nightly run of profile {name}"), &run, true, s.nice)?);
    out.push(base.timer(
        "",
        &format!("pbak nightly run of profile {name}"),
        &s.on_calendar,
        Some(&s.randomized_delay),
    )?);

    if let Some(c) = &p.check {
        let mut args = vec!["--profile", name, "check"];
        if let Some(sub) = &c.read_data_subset {
            args.extend(["--read-data-subset", sub]);
        }
        let check = base.pbak_args(&args)?;
        out.push(base.service(
            "-check",
            &format!("pbak check of the repository (profile {name})"),
            &check,
            true,
            19,
        )?);
        out.push(base.timer(
            "-check",
            &format!("pbak weekly check (profile {name})"),
            &s.check_on_calendar,
            Some(&s.randomized_delay),
        )?);
    }

    let (warn, critical) = (cfg.alerts.cost_warn.to_string(), cfg.alerts.cost_critical.to_string());
    let cost = base.pbak_args(&["--profile", name, "cost", "--warn", &warn, "--critical", &critical])?;
    out.push(base.service(
        "-cost",
        &format!("pbak cost estimate of the repository (profile {name})"),
        &cost,
        true,
        19,
    )?);
    out.push(base.timer(
        "-cost",
        &format!("pbak monthly cost estimate (profile {name})"),
        &s.cost_on_calendar,
        Some(&s.randomized_delay),
    )?);

    if let Some(cal) = &p.local_snapshots.schedule {
        if !p.snapshot {
            return Err(usage(
                name,
                "local_snapshots.schedule",
                cal,
                "local snapshots need snapshot = true (the sources must be Btrfs subvolumes)",
            ));
        }
        let mut args = vec![
            "--profile".to_string(),
            name.to_string(),
            "btrfs".into(),
            "snapshot".into(),
        ];
        for src in &p.sources {
            args.push(utf8(src, name, "sources")?.to_string());
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let snap = base.pbak_args(&refs)?;
        out.push(base.service(
            "-snapshot",
            &format!("pbak local Btrfs snapshots (profile {name})"),
            &snap,
            false,
            s.nice,
        )?);
        out.push(base.timer(
            "-snapshot",
            &format!("pbak local Btrfs snapshots (profile {name})"),
            cal,
            None,
        )?);
    }
    Ok(out)
}

/// What every unit of a profile shares.
struct Base<'a> {
    name: &'a str,
    paths: &'a Paths,
    profile: &'a Profile,
    /// `LoadCredential=` / `Environment=` lines for the secrets' files.
    credentials: String,
}

impl<'a> Base<'a> {
    fn new(cfg: &'a Config, profile: &'a Profile, name: &'a str, paths: &'a Paths) -> Result<Self> {
        let mut credentials = String::new();
        let r = &cfg.repository;
        // The files are read by systemd as root and handed over in the service's private
        // credentials directory (%d); pbak reads them there, so neither the password nor
        // the B2 keys are ever in the unit or in an environment variable systemd sets.
        for (id, file, var, key) in [
            (
                "password",
                &r.password_file,
                "PBAK_PASSWORD_FILE",
                "repository.password_file",
            ),
            ("env", &r.env_file, "PBAK_ENV_FILE", "repository.env_file"),
        ] {
            let Some(file) = file else { continue };
            if !file.is_absolute() {
                return Err(usage(
                    name,
                    key,
                    &file.display().to_string(),
                    "systemd credentials need an absolute path",
                ));
            }
            let f = utf8(file, name, key)?;
            writeln!(credentials, "LoadCredential={id}:{}", specifiers(f)).unwrap();
            writeln!(credentials, "Environment={var}=%d/{id}").unwrap();
        }
        Ok(Base {
            name,
            paths,
            profile,
            credentials,
        })
    }

    /// `ExecStart=` of `pbak --config CONFIG ARGS…`.
    fn pbak_args(&self, args: &[&str]) -> Result<String> {
        let pbak = utf8(&self.paths.pbak, self.name, "pbak binary")?;
        let config = utf8(&self.paths.config, self.name, "config file")?;
        let mut words = vec![exec_word(pbak)?, "--config".into(), exec_word(config)?];
        for a in args {
            words.push(exec_word(a)?);
        }
        Ok(words.join(" "))
    }

    fn service(&self, suffix: &str, description: &str, exec: &str, network: bool, nice: i32) -> Result<Unit> {
        let mut t = String::new();
        writeln!(t, "# Generated by `pbak systemd {}` (docs/systemd.md).", self.name).unwrap();
        t.push_str("[Unit]\n");
        writeln!(t, "Description={description}").unwrap();
        if network {
            t.push_str("After=network-online.target\nWants=network-online.target\n");
        }
        t.push_str("\n[Service]\nType=oneshot\n");
        writeln!(t, "ExecStart={exec}").unwrap();
        writeln!(t, "Nice={nice}").unwrap();
        t.push_str("IOSchedulingClass=idle\n");
        if let Some(q) = &self.profile.schedule.cpu_quota {
            writeln!(t, "CPUQuota={q}").unwrap();
        }
        t.push_str(&self.credentials);
        writeln!(t, "Environment=PBAK_CACHE_DIR={CACHE_DIR}").unwrap();
        t.push_str(concat!(
            "StateDirectory=pbak\n",
            "StateDirectoryMode=0700\n",
            "CacheDirectory=pbak\n",
            "CacheDirectoryMode=0700\n",
            "# Modest hardening: the backup must still read every file and write its local\n",
            "# snapshots inside each subvolume (also /etc and /usr), so no ProtectSystem=/ProtectHome=.\n",
            "PrivateTmp=yes\n",
            "NoNewPrivileges=yes\n",
            "ProtectKernelModules=yes\n",
            "RestrictRealtime=yes\n",
            "LockPersonality=yes\n",
        ));
        Ok(Unit {
            name: format!("pbak-{}{suffix}.service", self.name),
            text: t,
        })
    }

    fn timer(&self, suffix: &str, description: &str, calendar: &str, delay: Option<&str>) -> Result<Unit> {
        let key = match suffix {
            "" => "schedule.on_calendar",
            "-check" => "schedule.check_on_calendar",
            "-cost" => "schedule.cost_on_calendar",
            _ => "local_snapshots.schedule",
        };
        let calendar = value(calendar, self.name, key)?;
        let mut t = String::new();
        writeln!(t, "# Generated by `pbak systemd {}` (docs/systemd.md).", self.name).unwrap();
        t.push_str("[Unit]\n");
        writeln!(t, "Description={description}").unwrap();
        t.push_str("\n[Timer]\n");
        writeln!(t, "OnCalendar={calendar}").unwrap();
        if let Some(d) = delay {
            writeln!(
                t,
                "RandomizedDelaySec={}",
                value(d, self.name, "schedule.randomized_delay")?
            )
            .unwrap();
        }
        // A run missed while the machine was off or asleep (a laptop at 02:00) starts at boot.
        t.push_str("Persistent=true\n\n[Install]\nWantedBy=timers.target\n");
        Ok(Unit {
            name: format!("pbak-{}{suffix}.timer", self.name),
            text: t,
        })
    }
}

fn usage(profile: &str, key: &str, value: &str, what: &str) -> Error {
    Error::Usage(format!("profile {profile}, key `{key}` ({value:?}): {what}"))
}

fn utf8<'p>(p: &'p Path, profile: &str, key: &str) -> Result<&'p str> {
    p.to_str()
        .ok_or_else(|| usage(profile, key, &p.display().to_string(), "a unit file needs a UTF-8 path"))
}

/// A value written as it is (a calendar, a time span): no control characters, no `%`.
fn value<'v>(v: &'v str, profile: &str, key: &str) -> Result<&'v str> {
    if v.trim().is_empty() || v.chars().any(|c| c.is_control() || c == '%') {
        return Err(usage(
            profile,
            key,
            v,
            "not a value systemd accepts (empty, a control character or %)",
        ));
    }
    Ok(v.trim())
}

/// `%` would start a systemd specifier.
fn specifiers(s: &str) -> String {
    s.replace('%', "%%")
}

/// One word of an `ExecStart=` command line: as it is when plain, else double-quoted with
/// `\` and `"` escaped; `%` and `$` doubled so systemd expands neither.
pub fn exec_word(s: &str) -> Result<String> {
    if s.chars().any(char::is_control) {
        return Err(Error::Usage(format!(
            "{s:?} holds a control character: it cannot be written into a unit file"
        )));
    }
    let plain = !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c));
    let s = s.replace('%', "%%").replace('$', "$$");
    if plain {
        return Ok(s);
    }
    Ok(format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")))
}

/// What [`install`] did, one line per file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    Wrote(PathBuf),
    Linked { link: PathBuf, target: PathBuf },
}

/// Write `units` into `ROOT/etc/systemd/system/` (mode 0644: they hold no secret) and, when
/// `link` is set, enable the timers as `systemctl enable` does: a symlink in
/// `timers.target.wants/` to `/etc/systemd/system/NAME` (absolute inside the root).
pub fn install(units: &[Unit], root: &Path, link: bool) -> Result<Vec<Installed>> {
    use std::os::unix::fs::PermissionsExt;
    let dir = root.join("etc/systemd/system");
    let io = |what: &str, p: &Path, e: std::io::Error| {
        Error::Usage(format!(
            "cannot {what} {}: {e} (run as root, or choose another --root)",
            p.display()
        ))
    };
    std::fs::create_dir_all(&dir).map_err(|e| io("create", &dir, e))?;
    let mut done = Vec::new();
    for u in units {
        let path = dir.join(&u.name);
        let tmp = dir.join(format!(".{}.pbak-tmp", u.name));
        std::fs::write(&tmp, &u.text).map_err(|e| io("write", &tmp, e))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).map_err(|e| io("chmod", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io("write", &path, e))?;
        done.push(Installed::Wrote(path));
    }
    if link {
        let wants = dir.join("timers.target.wants");
        std::fs::create_dir_all(&wants).map_err(|e| io("create", &wants, e))?;
        for u in units.iter().filter(|u| u.is_timer()) {
            let l = wants.join(&u.name);
            let target = Path::new("/etc/systemd/system").join(&u.name);
            match std::fs::read_link(&l) {
                Ok(t) if t == target => {}
                _ => {
                    let _ = std::fs::remove_file(&l);
                    std::os::unix::fs::symlink(&target, &l).map_err(|e| io("link", &l, e))?;
                }
            }
            done.push(Installed::Linked { link: l, target });
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::config::parse;

    const CFG: &str = r#"
[repository]
url = "/srv/repo"
password_file = "/etc/pbak/pass%word"
env_file = "/etc/pbak/b2.env"

[profile.home]
sources = ["/home", "/srv/my data"]
forget = false
check = { read_data_subset = "5%" }
schedule = { cpu_quota = "50%", nice = 5 }
local_snapshots = { schedule = "hourly" }
"#;

    fn paths() -> Paths {
        Paths {
            pbak: "/usr/bin/pbak".into(),
            config: "/etc/pbak/pbak.toml".into(),
        }
    }

    fn text<'u>(units: &'u [Unit], name: &str) -> &'u str {
        &units
            .iter()
            .find(|u| u.name == name)
            .unwrap_or_else(|| panic!("no {name}"))
            .text
    }

    #[test]
    fn every_unit_of_a_profile() {
        let cfg = parse(CFG, "t.toml").unwrap();
        let u = units(&cfg, "home", &paths()).unwrap();
        let names: Vec<&str> = u.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "pbak-home.service",
                "pbak-home.timer",
                "pbak-home-check.service",
                "pbak-home-check.timer",
                "pbak-home-cost.service",
                "pbak-home-cost.timer",
                "pbak-home-snapshot.service",
                "pbak-home-snapshot.timer",
            ]
        );
        let s = text(&u, "pbak-home.service");
        assert!(
            s.contains("\nExecStart=/usr/bin/pbak --config /etc/pbak/pbak.toml run home --no-check\n"),
            "{s}"
        );
        assert!(s.contains("\nLoadCredential=password:/etc/pbak/pass%%word\n"), "{s}");
        assert!(s.contains("\nEnvironment=PBAK_PASSWORD_FILE=%d/password\n"), "{s}");
        assert!(s.contains("\nEnvironment=PBAK_ENV_FILE=%d/env\n"), "{s}");
        assert!(s.contains("\nCPUQuota=50%\n") && s.contains("\nNice=5\n"), "{s}");
        assert!(!s.contains("\nProtectSystem=") && !s.contains("\nProtectHome="), "{s}");
        let t = text(&u, "pbak-home.timer");
        assert!(
            t.contains("\nOnCalendar=*-*-* 02:00:00\n") && t.contains("\nRandomizedDelaySec=30min\n"),
            "{t}"
        );
        assert!(
            t.contains("\nPersistent=true\n") && t.contains("\nWantedBy=timers.target\n"),
            "{t}"
        );
        let c = text(&u, "pbak-home-check.service");
        assert!(c.contains("--profile home check --read-data-subset 5%%\n"), "{c}");
        let c = text(&u, "pbak-home-cost.service");
        assert!(c.contains("cost --warn 8 --critical 10\n"), "{c}");
        let sn = text(&u, "pbak-home-snapshot.service");
        assert!(
            sn.contains("btrfs snapshot /home \"/srv/my data\"\n") && !sn.contains("network-online"),
            "{sn}"
        );
        assert!(text(&u, "pbak-home-snapshot.timer").contains("\nOnCalendar=hourly\n"));
    }

    #[test]
    fn defaults_and_refusals() {
        let min = "[repository]\nurl = \"/r\"\npassword_command = \"op read x\"\n[profile.p]\nsources = [\"/\"]\nforget = false\n";
        let cfg = parse(min, "t.toml").unwrap();
        let u = units(&cfg, "p", &paths()).unwrap();
        assert_eq!(u.len(), 4, "no check table, no local schedule: run and cost only");
        let s = text(&u, "pbak-p.service");
        assert!(
            !s.contains("LoadCredential") && !s.contains("CPUQuota") && s.contains("\nNice=10\n"),
            "{s}"
        );
        assert!(
            !s.contains("op read"),
            "the password command stays in the config file: {s}"
        );

        let bad = min.replace("forget = false", "forget = false\nschedule = { nice = 40 }");
        let e = parse(&bad, "t.toml").unwrap_err().to_string();
        assert!(e.contains("schedule.nice") && e.contains("-20 to 19"), "{e}");
        let bad = min.replace("forget = false", "forget = false\nschedule = { cpu_quota = \"half\" }");
        let e = parse(&bad, "t.toml").unwrap_err().to_string();
        assert!(e.contains("cpu_quota") && e.contains("50%"), "{e}");
        let bad = min.replace(
            "forget = false",
            "forget = false\nschedule = { on_calendar = \"daily\\n[Service]\" }",
        );
        let e = units(&parse(&bad, "t.toml").unwrap(), "p", &paths())
            .unwrap_err()
            .to_string();
        assert!(e.contains("on_calendar"), "{e}");
        let bad = min.replace(
            "forget = false",
            "forget = false\nsnapshot = false\nlocal_snapshots = { schedule = \"hourly\" }",
        );
        let e = units(&parse(&bad, "t.toml").unwrap(), "p", &paths())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("local_snapshots.schedule") && e.contains("snapshot = true"),
            "{e}"
        );
        let rel = Paths {
            config: "pbak.toml".into(),
            ..paths()
        };
        assert!(units(&cfg, "p", &rel).unwrap_err().to_string().contains("not absolute"));
        assert!(units(&cfg, "q", &paths())
            .unwrap_err()
            .to_string()
            .contains("no profile"));
    }

    #[test]
    fn exec_words_are_escaped() {
        assert_eq!(exec_word("/usr/bin/pbak").unwrap(), "/usr/bin/pbak");
        assert_eq!(exec_word("a b").unwrap(), "\"a b\"");
        assert_eq!(exec_word("50%").unwrap(), "50%%");
        assert_eq!(exec_word("$HOME").unwrap(), "\"$$HOME\"");
        assert_eq!(exec_word("say \"hi\"\\").unwrap(), "\"say \\\"hi\\\"\\\\\"");
        assert_eq!(exec_word("").unwrap(), "\"\"");
        assert!(exec_word("a\nb").is_err());
    }

    #[test]
    fn install_writes_and_links() {
        let cfg = parse(CFG, "t.toml").unwrap();
        let u = units(&cfg, "home", &paths()).unwrap();
        let root = tempfile::tempdir().unwrap();
        let done = install(&u, root.path(), true).unwrap();
        assert_eq!(done.len(), 8 + 4);
        let l = root
            .path()
            .join("etc/systemd/system/timers.target.wants/pbak-home.timer");
        assert_eq!(
            std::fs::read_link(&l).unwrap(),
            Path::new("/etc/systemd/system/pbak-home.timer")
        );
        // Again: the same files and links, no error.
        assert_eq!(install(&u, root.path(), true).unwrap(), done);
    }
}
