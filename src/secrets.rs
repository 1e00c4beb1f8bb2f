//! Where secrets come from when nobody is at a terminal: password files, a password command,
//! and `KEY=VALUE` env files holding backend credentials. Profiles and systemd units read
//! them through here; only prompting on a terminal is left to the command line.
//!
//! Invariants: a file holding a secret is refused when its group or others may read it; a
//! password is never taken from argv and lives in zeroized memory; values read from an env
//! file are never printed. A password command gets a clean environment (not the repository
//! password nor cloud credentials) and at most a minute.

use crate::error::{Error, Result};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
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

/// How long `PBAK_PASSWORD_COMMAND` may run before it is killed and the command fails.
pub const PASSWORD_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Variables the password command keeps (everything else, the repository password and cloud
/// credentials included, is removed): what password managers such as `pass`, `gpg`, `op`,
/// `secret-tool` or `systemd-creds` need to find the user's session.
const COMMAND_ENV: [&str; 20] = [
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "TERM",
    "TZ",
    "TMPDIR",
    "XDG_RUNTIME_DIR",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "DBUS_SESSION_BUS_ADDRESS",
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "SSH_AUTH_SOCK",
    "GNUPGHOME",
    "GPG_TTY",
    "PASSWORD_STORE_DIR",
];
/// Prefixes of kept variables: the locale, and 1Password's CLI session and service tokens.
const COMMAND_ENV_PREFIXES: [&str; 2] = ["LC_", "OP_"];

fn kept_for_command(name: &str) -> bool {
    COMMAND_ENV.contains(&name) || COMMAND_ENV_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Run `cmd` with `sh -c` and take its standard output as the password (its standard error
/// goes to ours, its standard input is empty). It runs with a clean environment (see
/// [`COMMAND_ENV`]: no `PBAK_PASSWORD*`, no `AWS_*` or `B2_*` secrets) and is killed after
/// [`PASSWORD_COMMAND_TIMEOUT`].
pub fn password_from_command(cmd: &str) -> Result<Password> {
    run_password_command(cmd, PASSWORD_COMMAND_TIMEOUT)
}

/// SIGKILL every descendant of `pid` (found through `/proc/*/stat`), deepest first.
fn kill_descendants(pid: u32) {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let p: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // `pid (comm) state ppid ...`: comm may hold spaces and parentheses.
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
            Some((p, ppid))
        })
        .collect();
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    for p in found.into_iter().skip(1).rev() {
        if let Some(pid) = rustix::process::Pid::from_raw(p as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}

fn run_password_command(cmd: &str, timeout: Duration) -> Result<Password> {
    let mut c = Command::new("sh");
    c.arg("-c").arg(cmd).env_clear();
    c.envs(std::env::vars_os().filter(|(k, _)| k.to_str().is_some_and(kept_for_command)));
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| Error::Usage(format!("cannot run PBAK_PASSWORD_COMMAND: {e}")))?;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    // Read on a thread: a command that never closes its output must not block the timeout.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = Zeroizing::new(Vec::new());
        let _ = tx.send(stdout.read_to_end(&mut out).map(|_| out));
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if start.elapsed() >= timeout => {
                // The command's own children too (it runs in our process group, so that a
                // password prompt keeps the terminal): a `sleep` it started must not outlive it.
                kill_descendants(child.id());
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Usage(format!(
                    "PBAK_PASSWORD_COMMAND did not finish within {} s; it was stopped",
                    timeout.as_secs_f64()
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(Error::Usage(format!("cannot wait for PBAK_PASSWORD_COMMAND: {e}"))),
        }
    };
    if !status.success() {
        return Err(Error::Usage(format!("PBAK_PASSWORD_COMMAND failed with {status}")));
    }
    // The command has exited; a child it left behind may still hold the pipe open.
    let rest = timeout.saturating_sub(start.elapsed());
    let out = rx.recv_timeout(rest).map_err(|_| {
        Error::Usage("PBAK_PASSWORD_COMMAND exited but a process it started keeps its output open".into())
    })?;
    let mut out = out.map_err(|e| Error::Usage(format!("cannot read PBAK_PASSWORD_COMMAND's output: {e}")))?;
    Ok(strip_newline(std::mem::take(&mut *out)))
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
    fn password_command_is_stopped_after_its_timeout() {
        let t = Instant::now();
        let e = run_password_command("sleep 10; echo late", Duration::from_millis(300))
            .unwrap_err()
            .to_string();
        assert!(e.contains("did not finish within 0.3 s"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(3));
        let e = run_password_command("(sleep 10 &) ; echo pw", Duration::from_millis(300))
            .unwrap_err()
            .to_string();
        assert!(e.contains("keeps its output open"), "{e}");
    }

    #[test]
    fn a_stopped_password_command_leaves_no_child_behind() {
        let _ = run_password_command("sleep 987.25; echo late", Duration::from_millis(300));
        std::thread::sleep(Duration::from_millis(100));
        let alive = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .any(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c.windows(6).any(|w| w == b"987.25")));
        assert!(!alive, "the command's sleep survived it");
    }

    #[test]
    fn password_command_environment_is_kept_to_the_session() {
        for k in ["PATH", "HOME", "LC_ALL", "OP_SESSION_x", "XDG_RUNTIME_DIR", "TERM"] {
            assert!(kept_for_command(k), "{k}");
        }
        for k in [
            "PBAK_PASSWORD",
            "PBAK_PASSWORD_FILE",
            "AWS_SECRET_ACCESS_KEY",
            "B2_ACCOUNT_KEY",
            "LD_PRELOAD",
        ] {
            assert!(!kept_for_command(k), "{k}");
        }
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
