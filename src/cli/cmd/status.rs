//! `pbak status`: backups' ages, the last check and the cost, as one level (exit 0/1/2, the
//! Nagios convention); `--prometheus FILE` writes node_exporter textfile metrics.

use crate::cli::args::Cli;
use crate::cli::cmd::cost::{headline, PriceArgs};
use crate::cli::open_repo;
use anyhow::{Context, Result};
use clap::Args;
use pbak::ops::prune::parse_grace;
use pbak::ops::status::{self, StatusOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// A newest complete snapshot older than this is critical (e.g. 36h, 2d)
    #[arg(long, default_value = "36h", value_parser = parse_grace)]
    pub max_age: chrono::Duration,
    /// A last check older than this is a warning
    #[arg(long, default_value = "8d", value_parser = parse_grace)]
    pub check_max_age: chrono::Duration,
    /// Write Prometheus text-format metrics to this file (atomically: temp file, rename)
    #[arg(long, value_name = "FILE")]
    pub prometheus: Option<PathBuf>,
    #[command(flatten)]
    pub prices: PriceArgs,
}

pub fn run(cli: &Cli, a: &StatusArgs) -> Result<i32> {
    let repo = open_repo(cli)?;
    let o = StatusOptions {
        max_age_secs: a.max_age.num_seconds(),
        check_max_age_secs: a.check_max_age.num_seconds(),
        prices: a.prices.prices(),
        thresholds: a.prices.thresholds(),
    };
    let r = status::status(&repo, &o)?;
    if let Some(path) = &a.prometheus {
        write_atomically(path, status::prometheus(&r).as_bytes())?;
    }
    if cli.json {
        println!("{}", serde_json::to_string(&r).expect("json"));
        return Ok(r.level.exit_code());
    }
    let first = r
        .problems
        .first()
        .cloned()
        .unwrap_or_else(|| "all backups recent, check clean".into());
    println!("{}: {first}", r.level.word());
    for p in r.problems.iter().skip(1) {
        println!("  {p}");
    }
    for b in &r.backups {
        println!("{:<9} {}", b.level.word(), b.reason);
    }
    println!("{:<9} {}", r.check.level.word(), r.check.reason);
    println!("{}", headline(&r.cost));
    Ok(r.level.exit_code())
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().context("--prometheus needs a file name")?;
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().with_context(|| format!("writing metrics to {}", path.display()))
}
