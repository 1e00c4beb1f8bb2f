//! The config file on the command line: every setting a flag or `PBAK_*` variable did not
//! give is taken from it (flags and the environment win, as restic users expect).

use super::args::Cli;
use anyhow::Result;
use clap::parser::ValueSource;
use clap::ArgMatches;
use pbak::jobs::config::{self, Config};
use std::path::PathBuf;
use std::sync::OnceLock;

pub struct Loaded {
    pub path: PathBuf,
    pub config: Config,
}

static LOADED: OnceLock<Loaded> = OnceLock::new();

/// The config file this run read, if any.
pub fn loaded() -> Option<&'static Loaded> {
    LOADED.get()
}

/// The loaded config, or an error saying how to give one.
pub fn required(what: &str) -> Result<&'static Loaded> {
    loaded().ok_or_else(|| {
        anyhow::anyhow!(
            "{what} needs a config file: give --config FILE or PBAK_CONFIG, or create {}",
            config::DEFAULT_PATH
        )
    })
}

/// Read the config file (when one is given or the default exists) and fill in `cli`.
pub fn apply(cli: &mut Cli, m: &ArgMatches) -> Result<()> {
    let Some(path) = config::locate(cli.config.as_deref()) else {
        if let Some(p) = &cli.profile {
            anyhow::bail!(
                "--profile {p} needs a config file: give --config FILE or PBAK_CONFIG, or create {}",
                config::DEFAULT_PATH
            );
        }
        return Ok(());
    };
    let cfg = config::load(&path)?;
    let profile = cli.profile.as_deref().map(|p| cfg.profile(p)).transpose()?;
    let r = &cfg.repository;
    let given = |id: &str| {
        matches!(
            m.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    };
    if cli.repo.is_none() {
        cli.repo = Some(r.url.clone());
    }
    let env_secret = std::env::var_os("PBAK_PASSWORD_COMMAND").is_some() || std::env::var_os("PBAK_PASSWORD").is_some();
    if cli.password_file.is_none() && !env_secret {
        if let Some(f) = &r.password_file {
            cli.password_file = Some(f.clone());
        } else if let Some(c) = &r.password_command {
            std::env::set_var("PBAK_PASSWORD_COMMAND", c);
        } else if let Some(p) = &r.password {
            super::password::from_config(p);
        }
    }
    if cli.env_file.is_none() {
        cli.env_file = r.env_file.clone();
    }
    if !given("connections") {
        if let Some(c) = profile.and_then(|p| p.connections).or(r.connections) {
            cli.connections = c;
        }
    }
    if !given("timeout") {
        if let Some(t) = r.timeout {
            cli.timeout = t;
        }
    }
    if cli.limit_upload.is_none() {
        cli.limit_upload = profile.and_then(|p| p.limit_upload).or(r.limit_upload);
    }
    if cli.limit_download.is_none() {
        cli.limit_download = profile.and_then(|p| p.limit_download).or(r.limit_download);
    }
    let _ = LOADED.set(Loaded { path, config: cfg });
    Ok(())
}
