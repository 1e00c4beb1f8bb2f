//! `pbak key list|add|remove|passwd`: the passwords (keys) that open the repository.

use crate::cli::args::{Cli, KdfArgs};
use crate::cli::{kdf, open_repo, password};
use anyhow::Result;
use clap::Subcommand;
use pbak::ops::key;
use pbak::repo::Repository;
use serde_json::json;

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// List keys
    List,
    /// Add a key (new password from PBAK_NEW_PASSWORD_FILE or a prompt)
    Add {
        #[command(flatten)]
        kdf: KdfArgs,
    },
    /// Remove a key by id prefix (not the one in use, not the last)
    Remove { id: String },
    /// Change the password: add a key with the new password (same Argon2id parameters as the
    /// current key), remove the current one
    Passwd,
}

pub fn run(cli: &Cli, k: &KeyCommand) -> Result<i32> {
    let repo = open_repo(cli)?;
    match k {
        KeyCommand::List => list(cli, &repo)?,
        KeyCommand::Add { kdf: k } => {
            let pw = password::get_new_key(cli)?;
            let id = key::add(&repo, &pw, kdf(k.kdf_memory_mib, k.kdf_iterations))?;
            println!("added key {}", id.short());
        }
        KeyCommand::Remove { id } => println!("removed key {}", key::remove(&repo, id)?.short()),
        KeyCommand::Passwd => {
            let pw = password::get_new_key(cli)?;
            let id = key::change_password(&repo, &pw)?;
            println!(
                "password changed: key {} replaces {}",
                id.short(),
                repo.key_id().short()
            );
        }
    }
    Ok(0)
}

fn list(cli: &Cli, repo: &Repository) -> Result<()> {
    let keys = repo.list_keys()?;
    if cli.json {
        let v: Vec<_> = keys
            .iter()
            .map(|(id, k)| json!({"id": id.to_hex(), "current": *id == repo.key_id(), "host": k.host, "user": k.user, "created": k.created}))
            .collect();
        println!("{}", serde_json::Value::Array(v));
        return Ok(());
    }
    for (id, k) in &keys {
        let cur = if *id == repo.key_id() { "*" } else { " " };
        println!("{cur}{} {} {}@{}", id.short(), k.created, k.user, k.host);
    }
    Ok(())
}
