//! Where secrets come from when nobody is at a terminal: password files, a password command,
//! and `KEY=VALUE` env files holding backend credentials. Profiles and systemd units read
//! them through here; only prompting on a terminal is left to the command line.
//!
//! Invariants: a file holding a secret is refused when its group or others may read it; a
//! password is never taken from argv and lives in zeroized memory; values read from an env
//! file are never printed.

use crate::error::{Error, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use zeroize::Zeroizing;

pub type Password = Zeroizing<Vec<u8>>;

/// The password, without the trailing newline(s) a file or command output usually has.
pub fn strip_newline(mut v: Vec<u8>) -> Password {
    while v.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        v.pop();
    }
    Zeroizing::new(v)
}

/// Read a secret-holding file (`what` names it in errors), refusing one that group or
/// others can read.
pub fn read_private(path: &Path, what: &str) -> Result<Vec<u8>> {
    let cannot_read = |e: std::io::Error| Error::Usage(format!("cannot read {what} {}: {e}", path.display()));
    let md = std::fs::metadata(path).map_err(cannot_read)?;
    if md.permissions().mode() & 0o077 != 0 {
        return Err(Error::Usage(format!(
            "{what} {} is readable by group or others (mode {:o}); run `chmod 600 {}`",
            path.display(),
            md.permissions().mode() & 0o777,
            path.display()
        )));
    }
    std::fs::read(path).map_err(cannot_read)
}

pub fn password_from_file(path: &Path) -> Result<Password> {
    Ok(strip_newline(read_private(path, "password file")?))
}

/// Run `cmd` with `sh -c` and take its standard output as the password (its standard error
/// goes to ours).
pub fn password_from_command(cmd: &str) -> Result<Password> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| Error::Usage(format!("cannot run PBAK_PASSWORD_COMMAND: {e}")))?;
    if !out.status.success() {
        return Err(Error::Usage(format!(
            "PBAK_PASSWORD_COMMAND failed with {}",
            out.status
        )));
    }
    Ok(strip_newline(out.stdout))
}

/// The repository password from `file` (`--password-file` or `PBAK_PASSWORD_FILE`), else
/// `PBAK_PASSWORD_COMMAND`, else `PBAK_PASSWORD`, in that order; `None` when none is set
/// (a terminal may then prompt).
pub fn repository_password(file: Option<&Path>) -> Result<Option<Password>> {
    if let Some(f) = file {
        return password_from_file(f).map(Some);
    }
    if let Ok(cmd) = std::env::var("PBAK_PASSWORD_COMMAND") {
        return password_from_command(&cmd).map(Some);
    }
    if let Ok(p) = std::env::var("PBAK_PASSWORD") {
        return Ok(Some(Zeroizing::new(p.into_bytes())));
    }
    Ok(None)
}

/// The new password for adding a key or changing one, from `PBAK_NEW_PASSWORD_FILE`;
/// `None` when it is not set.
pub fn new_key_password() -> Result<Option<Password>> {
    match std::env::var_os("PBAK_NEW_PASSWORD_FILE") {
        Some(f) => password_from_file(Path::new(&f)).map(Some),
        None => Ok(None),
    }
}

/// The `KEY=VALUE` lines of an env file, in order: blank lines and `#` comments are ignored,
/// an `export ` prefix and quotes around the value are dropped.
pub fn read_env_file(path: &Path) -> Result<Vec<(String, String)>> {
    let text = String::from_utf8(read_private(path, "env file")?)
        .map_err(|e| Error::Usage(format!("env file is not UTF-8: {e}")))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            return Err(Error::Usage(format!(
                "{}:{}: expected KEY=VALUE",
                path.display(),
                n + 1
            )));
        };
        let v = v.trim().trim_matches('"').trim_matches('\'');
        out.push((k.trim().to_string(), v.to_string()));
    }
    Ok(out)
}

/// Set the variables of an env file ([`read_env_file`]) in this process's environment.
/// Nothing is set when the file has an error.
pub fn load_env_file(path: &Path) -> Result<()> {
    for (k, v) in read_env_file(path)? {
        std::env::set_var(k, v);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn private(dir: &Path, name: &str, text: &[u8], mode: u32) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn password_file_strips_newlines_and_must_be_private() {
        let d = tempfile::tempdir().unwrap();
        let p = private(d.path(), "pw", b"secret\r\n\n", 0o600);
        assert_eq!(&**password_from_file(&p).unwrap(), b"secret");
        let open = private(d.path(), "open", b"x", 0o640);
        let e = password_from_file(&open).unwrap_err().to_string();
        assert!(
            e.contains("readable by group or others (mode 640)") && e.contains("chmod 600"),
            "{e}"
        );
        let e = password_from_file(&d.path().join("none")).unwrap_err().to_string();
        assert!(e.starts_with("cannot read password file "), "{e}");
    }

    #[test]
    fn password_command_output_and_failure() {
        assert_eq!(&**password_from_command("echo hunter2").unwrap(), b"hunter2");
        let e = password_from_command("exit 3").unwrap_err().to_string();
        assert_eq!(e, "PBAK_PASSWORD_COMMAND failed with exit status: 3");
    }

    #[test]
    fn env_file_lines() {
        let d = tempfile::tempdir().unwrap();
        let p = private(d.path(), "env", b"# c\n\nexport A=\"1\"\n B = '2' \nC=x=y\n", 0o600);
        let kv = read_env_file(&p).unwrap();
        let want = [("A", "1"), ("B", "2"), ("C", "x=y")].map(|(k, v)| (k.to_string(), v.to_string()));
        assert_eq!(kv, want);
        let bad = private(d.path(), "bad", b"A=1\nnope\n", 0o600);
        let e = read_env_file(&bad).unwrap_err().to_string();
        assert!(e.ends_with("bad:2: expected KEY=VALUE"), "{e}");
        let latin = private(d.path(), "latin", b"A=\xe9\n", 0o600);
        let e = read_env_file(&latin).unwrap_err().to_string();
        assert!(e.starts_with("env file is not UTF-8: "), "{e}");
    }
}
