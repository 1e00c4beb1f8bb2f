//! `pbak systemd PROFILE`: the profile's units on stdout, in `--output DIR`, or installed
//! under `--root` (default `/`) with their timers enabled.

use crate::cli::args::Cli;
use crate::cli::config;
use anyhow::{Context, Result};
use clap::Args;
use pbak::jobs::systemd::{self, Installed, Paths};
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct SystemdArgs {
    /// The profile of the config file (`[profile.NAME]`)
    pub profile: String,
    /// Write the unit files into DIR instead of printing them
    #[arg(long, value_name = "DIR", conflicts_with = "install")]
    pub output: Option<PathBuf>,
    /// Write them into ROOT/etc/systemd/system/ and enable the timers
    #[arg(long)]
    pub install: bool,
    /// The root for --install: on `/` the timers are enabled and started with systemctl;
    /// elsewhere (an image, a chroot) the timers.target.wants/ links are made directly
    #[arg(long, value_name = "DIR", default_value = "/", requires = "install")]
    pub root: PathBuf,
    /// The pbak binary the units run (default: this one)
    #[arg(long, value_name = "PATH")]
    pub pbak: Option<PathBuf>,
}

pub fn run(_cli: &Cli, a: &SystemdArgs) -> Result<i32> {
    let loaded = config::required("pbak systemd")?;
    let absolute = |p: &Path| std::fs::canonicalize(p).with_context(|| format!("cannot resolve {}", p.display()));
    let pbak = match &a.pbak {
        Some(p) if p.is_absolute() => p.clone(),
        Some(p) => absolute(p)?,
        None => std::env::current_exe().context("cannot find the pbak binary: give --pbak PATH")?,
    };
    let paths = Paths {
        pbak,
        config: absolute(&loaded.path)?,
    };
    let units = systemd::units(&loaded.config, &a.profile, &paths)?;
    if let Some(dir) = &a.output {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for u in &units {
            let f = dir.join(&u.name);
            std::fs::write(&f, &u.text).with_context(|| format!("cannot write {}", f.display()))?;
            println!("wrote {}", f.display());
        }
        return Ok(0);
    }
    if !a.install {
        for (i, u) in units.iter().enumerate() {
            print!("{}# {}\n{}", if i > 0 { "\n" } else { "" }, u.name, u.text);
        }
        return Ok(0);
    }
    let on_host = a.root == Path::new("/");
    for step in systemd::install(&units, &a.root, !on_host)? {
        match step {
            Installed::Wrote(p) => println!("wrote {}", p.display()),
            Installed::Linked { link, target } => {
                println!("enabled {} -> {}", link.display(), target.display())
            }
        }
    }
    if on_host {
        let timers: Vec<&str> = units.iter().filter(|u| u.is_timer()).map(|u| u.name.as_str()).collect();
        systemctl(&["daemon-reload"])?;
        let mut enable = vec!["enable", "--now"];
        enable.extend(&timers);
        systemctl(&enable)?;
        for t in timers {
            println!("enabled and started {t}");
        }
    }
    Ok(0)
}

fn systemctl(args: &[&str]) -> Result<()> {
    let st = std::process::Command::new("systemctl")
        .args(args)
        .status()
        .context("cannot run systemctl: is this a systemd host? (--root DIR installs without it)")?;
    anyhow::ensure!(
        st.success(),
        "`systemctl {}` failed ({st}): the unit files are written; fix the cause and run it again",
        args.join(" ")
    );
    Ok(())
}
