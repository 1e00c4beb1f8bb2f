//! `pbak init`: create a repository.

use crate::cli::args::{Cli, KdfArgs};
use crate::cli::{kdf, open_backend, password};
use anyhow::Result;
use clap::Args;
use pbak::format::config::Config;
use pbak::repo::Repository;
use serde_json::json;

#[derive(Args, Debug)]
pub struct InitArgs {
    #[command(flatten)]
    pub kdf: KdfArgs,
    /// Target pack size in MiB (default 16; larger means fewer B2 transactions)
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub pack_size_mib: Option<u32>,
}

pub fn run(cli: &Cli, a: &InitArgs) -> Result<i32> {
    let backend = open_backend(cli, true)?;
    let pw = password::get_new(cli)?;
    let mut config = Config::new();
    if let Some(m) = a.pack_size_mib {
        config.pack_size = m << 20;
    }
    let repo = Repository::init(backend, &pw, kdf(a.kdf.kdf_memory_mib, a.kdf.kdf_iterations), config)?;
    if cli.json {
        println!(
            "{}",
            json!({"id": repo.config().id.to_hex(), "repository": repo.backend().name()})
        );
    } else {
        println!(
            "created pbak repository {} at {}",
            repo.config().id.short(),
            repo.backend().name()
        );
        println!("keep the password safe: without it the data cannot be read");
    }
    Ok(0)
}
