//! Passwords on the command line: from [`pbak::secrets`] (files, a command, the environment;
//! never argv), else a prompt on the terminal.

use super::args::Cli;
use anyhow::{bail, Context, Result};
use pbak::secrets::{self, Password};
use std::io::{BufRead, IsTerminal};

fn prompt(what: &str) -> Result<Password> {
    if !std::io::stdin().is_terminal() {
        bail!("no password given: set PBAK_PASSWORD_FILE, PBAK_PASSWORD_COMMAND or --password-file");
    }
    eprint!("enter {what}: ");
    let stdin = std::io::stdin();
    let fd = rustix::stdio::stdin();
    let old = rustix::termios::tcgetattr(fd).ok();
    if let Some(old) = &old {
        let mut t = old.clone();
        t.local_modes.remove(rustix::termios::LocalModes::ECHO);
        let _ = rustix::termios::tcsetattr(fd, rustix::termios::OptionalActions::Now, &t);
    }
    let mut line = String::new();
    let r = stdin.lock().read_line(&mut line);
    if let Some(old) = &old {
        let _ = rustix::termios::tcsetattr(fd, rustix::termios::OptionalActions::Now, old);
    }
    eprintln!();
    r.context("cannot read password")?;
    Ok(secrets::strip_newline(line.into_bytes()))
}

/// A password written in the config file itself (only accepted from a private file).
static FROM_CONFIG: std::sync::OnceLock<Password> = std::sync::OnceLock::new();

pub fn from_config(p: &str) {
    let _ = FROM_CONFIG.set(Password::new(p.as_bytes().to_vec()));
}

/// The repository password.
pub fn get(cli: &Cli, what: &str) -> Result<Password> {
    match secrets::repository_password(cli.password_file.as_deref())? {
        Some(pw) => Ok(pw),
        None => match FROM_CONFIG.get() {
            Some(pw) => Ok(pw.clone()),
            None => prompt(what),
        },
    }
}

/// A password for a new repository (asked twice on a terminal).
pub fn get_new(cli: &Cli) -> Result<Password> {
    let uses_prompt = cli.password_file.is_none()
        && std::env::var_os("PBAK_PASSWORD_COMMAND").is_none()
        && std::env::var_os("PBAK_PASSWORD").is_none();
    let pw = get(cli, "new repository password")?;
    if uses_prompt && *prompt("it again")? != *pw {
        bail!("the passwords do not match");
    }
    if pw.is_empty() {
        bail!("empty password refused");
    }
    Ok(pw)
}

/// The new password for `key add` / `key passwd`: PBAK_NEW_PASSWORD_FILE or a prompt.
pub fn get_new_key(_cli: &Cli) -> Result<Password> {
    if let Some(pw) = secrets::new_key_password()? {
        return Ok(pw);
    }
    let pw = prompt("new password")?;
    if *prompt("it again")? != *pw {
        bail!("the passwords do not match");
    }
    Ok(pw)
}
