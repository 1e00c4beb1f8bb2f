//! Where passwords come from. Never argv; files must be private to their owner.

use super::args::Cli;
use anyhow::{bail, Context, Result};
use std::io::{BufRead, IsTerminal};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use zeroize::Zeroizing;

pub type Password = Zeroizing<Vec<u8>>;

fn strip_newline(mut v: Vec<u8>) -> Password {
    while v.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        v.pop();
    }
    Zeroizing::new(v)
}

/// Read a secret-holding file, refusing one that group or others can read.
fn read_private(path: &Path, what: &str) -> Result<Vec<u8>> {
    let md = std::fs::metadata(path).with_context(|| format!("cannot read {what} {}", path.display()))?;
    if md.permissions().mode() & 0o077 != 0 {
        bail!(
            "{what} {} is readable by group or others (mode {:o}); run `chmod 600 {}`",
            path.display(),
            md.permissions().mode() & 0o777,
            path.display()
        );
    }
    std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))
}

pub fn from_file(path: &Path) -> Result<Password> {
    Ok(strip_newline(read_private(path, "password file")?))
}

/// Load `KEY=VALUE` lines (blank lines and `#` comments ignored, optional `export ` and quotes)
/// into the environment. Values are never printed.
pub fn load_env_file(path: &Path) -> Result<()> {
    let text = String::from_utf8(read_private(path, "env file")?).context("env file is not UTF-8")?;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            bail!("{}:{}: expected KEY=VALUE", path.display(), n + 1);
        };
        let v = v.trim().trim_matches('"').trim_matches('\'');
        std::env::set_var(k.trim(), v);
    }
    Ok(())
}

fn from_command(cmd: &str) -> Result<Password> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot run PBAK_PASSWORD_COMMAND")?;
    if !out.status.success() {
        bail!("PBAK_PASSWORD_COMMAND failed with {}", out.status);
    }
    Ok(strip_newline(out.stdout))
}

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
    Ok(strip_newline(line.into_bytes()))
}

/// The repository password.
pub fn get(cli: &Cli, what: &str) -> Result<Password> {
    if let Some(f) = &cli.password_file {
        return from_file(f);
    }
    if let Ok(cmd) = std::env::var("PBAK_PASSWORD_COMMAND") {
        return from_command(&cmd);
    }
    if let Ok(p) = std::env::var("PBAK_PASSWORD") {
        return Ok(Zeroizing::new(p.into_bytes()));
    }
    prompt(what)
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
    if let Some(f) = std::env::var_os("PBAK_NEW_PASSWORD_FILE") {
        return from_file(Path::new(&f));
    }
    let pw = prompt("new password")?;
    if *prompt("it again")? != *pw {
        bail!("the passwords do not match");
    }
    Ok(pw)
}
