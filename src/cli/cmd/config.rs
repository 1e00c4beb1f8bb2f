//! `pbak config check`: load and validate the config file, list its profiles and the
//! storage warnings of their sources (`btrfs doctor`'s presets); exit 0 when valid and
//! clean, 1 when invalid or with warnings.

use crate::cli::args::Cli;
use crate::cli::config;
use anyhow::Result;
use clap::Subcommand;
use pbak::jobs::config::{Config, Profile};
use serde_json::json;

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate the config file (--config, PBAK_CONFIG or /etc/pbak/pbak.toml), list its
    /// profiles and warn about database sources that are not nodatacow; exit 1 on warnings
    Check,
}

pub fn run(cli: &Cli, c: &ConfigCommand) -> Result<i32> {
    let ConfigCommand::Check = c;
    // An invalid file never gets here: loading it already failed with file, line and key.
    let loaded = config::required("pbak config check")?;
    let cfg = &loaded.config;
    let names: Vec<&String> = match &cli.profile {
        Some(p) => {
            cfg.profile(p)?;
            cfg.profiles.keys().filter(|k| *k == p).collect()
        }
        None => cfg.profiles.keys().collect(),
    };
    let mut warnings = Vec::new();
    for n in &names {
        warnings.extend(cfg.doctor_warnings(n)?);
    }
    if cli.json {
        let profiles: Vec<_> = names.iter().map(|n| profile_json(n, &cfg.profiles[*n])).collect();
        println!(
            "{}",
            json!({
                "config": loaded.path,
                "valid": true,
                "repository": cfg.repository.url,
                "profiles": profiles,
                "warnings": warnings,
            })
        );
    } else {
        println!("config file {}: valid", loaded.path.display());
        println!("repository {} ({})", cfg.repository.url, password_source(cfg));
        for n in &names {
            println!("{}", profile_line(n, &cfg.profiles[*n]));
        }
        for w in &warnings {
            println!("warning: profile {}: {}: {}", w.profile, w.source.display(), w.message);
        }
    }
    Ok(if warnings.is_empty() { 0 } else { 1 })
}

/// Where the password comes from, never the password.
fn password_source(cfg: &Config) -> String {
    let r = &cfg.repository;
    match (&r.password_file, &r.password_command, &r.password) {
        (Some(f), _, _) => format!("password from file {}", f.display()),
        (_, Some(_), _) => "password from password_command".into(),
        (_, _, Some(_)) => "password in the config file".into(),
        _ => "password from the environment or a prompt".into(),
    }
}

fn profile_line(name: &str, p: &Profile) -> String {
    let sources: Vec<String> = p.sources.iter().map(|s| s.display().to_string()).collect();
    let mut parts = vec![
        format!("host {}", p.host.as_deref().unwrap_or("(this machine)")),
        format!("sources {}", sources.join(" ")),
        if p.snapshot { "snapshot-backup" } else { "backup" }.to_string(),
        format!("nightly {}", p.schedule.on_calendar),
    ];
    if p.forget {
        parts.push("forget".into());
    }
    if let Some(pr) = &p.prune {
        parts.push(format!("prune every {}", pr.every));
    }
    if let Some(c) = &p.check {
        let subset = c
            .read_data_subset
            .as_deref()
            .map_or(String::new(), |s| format!(" reading {s}"));
        parts.push(format!("check every {}{subset}", c.every));
    }
    if let Some(s) = &p.local_snapshots.schedule {
        parts.push(format!("local snapshots {s}"));
    }
    format!("profile {name}: {}", parts.join(", "))
}

fn profile_json(name: &str, p: &Profile) -> serde_json::Value {
    json!({
        "name": name,
        "host": p.host,
        "sources": p.sources,
        "snapshot": p.snapshot,
        "forget": p.forget,
        "prune": p.prune.is_some(),
        "check": p.check.as_ref().map(|c| json!({"every": c.every, "read_data_subset": c.read_data_subset})),
        "on_calendar": p.schedule.on_calendar,
        "local_snapshots_schedule": p.local_snapshots.schedule,
    })
}
