//! `pbak run PROFILE`: a profile of the config file, unattended (see `pbak::jobs::run`).
//! Each event is one line on standard error (journald keeps them); `--json` prints the
//! report on standard output at the end.

use crate::cli::args::Cli;
use crate::cli::config;
use anyhow::Result;
use clap::Args;
use pbak::error::EXIT_TRANSIENT;
use pbak::jobs::run::{self, RunLock, Runner};

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The profile to run (default: --profile / PBAK_PROFILE)
    pub profile: Option<String>,
    /// Print the steps and hooks it would run, and run nothing
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Leave the check out even when it is due (the weekly check timer of `pbak systemd` runs it)
    #[arg(long)]
    pub no_check: bool,
}

pub fn run(cli: &Cli, a: &RunArgs) -> Result<i32> {
    let loaded = config::required("pbak run")?;
    let Some(name) = a.profile.as_deref().or(cli.profile.as_deref()) else {
        anyhow::bail!("which profile? give one: `pbak run PROFILE`");
    };
    let cfg = &loaded.config;
    cfg.profile(name)?;
    let log = &mut |line: &str| eprintln!("pbak run {name}: {line}");
    for w in cfg.doctor_warnings(name)? {
        log(&format!("warning: {}: {}", w.source.display(), w.message));
    }
    let dir = run::state_dir(cfg);
    let _lock = match a.dry_run {
        true => None,
        false => match RunLock::acquire(&dir, name) {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("pbak: {e}");
                return Ok(EXIT_TRANSIENT);
            }
        },
    };
    let runner = Runner {
        exe: run::current_exe()?,
        config_path: std::path::absolute(&loaded.path)?,
        profile: name.to_string(),
        config: cfg,
        no_check: a.no_check,
    };
    let report = runner.run(&dir, a.dry_run, log)?;
    if cli.json {
        println!("{}", serde_json::to_string(&report).expect("json"));
    }
    Ok(report.exit_code)
}
