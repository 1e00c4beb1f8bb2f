//! `ls`: the entries of a snapshot, or of one directory (or file) inside it, with their full
//! paths inside the snapshot.
//!
//! Order: a directory's entries in tree (name) order, then each subdirectory's the same way,
//! depth first; a subpath that names a file yields that one entry. Names are exact here; the
//! text output escapes them for a terminal with [`escape_name`].

use crate::error::Result;
use crate::format::snapshot::Snapshot;
use crate::format::tree::Node;
use crate::repo::index::Index;
use crate::repo::walk::Order;
use crate::repo::Repository;
use std::borrow::Cow;
use std::path::{Path, PathBuf};

/// Call `visit` with each entry below `subpath` (relative to the snapshot root; empty for all)
/// and its exact path (`/`-separated, starting with `/`; any bytes but NUL and `/` in a name).
pub fn walk(
    repo: &Repository,
    index: &Index,
    snap: &Snapshot,
    subpath: &str,
    visit: &(dyn Fn(&Path, &Node) + Sync),
) -> Result<()> {
    let (tree, single) = repo.resolve_path(index, &snap.tree, subpath)?;
    let base = PathBuf::from(format!("/{}", subpath.trim_matches('/')));
    if let Some(n) = single.filter(|n| !n.is_dir()) {
        visit(&base, &n);
        return Ok(());
    }
    repo.walk_paths(index, &tree, &base, Order::Sequential, &|path, n| {
        visit(path, n);
        Ok(true)
    })
}

/// [`escape_name`] for a name that may not be UTF-8: each byte of an invalid sequence is
/// shown as a three-digit octal escape, as `ls -b` does, so two names that differ only in such
/// bytes never look the same.
pub fn escape_bytes(name: &[u8]) -> Cow<'_, str> {
    if let Ok(s) = std::str::from_utf8(name) {
        return escape_name(s);
    }
    let mut out = String::with_capacity(name.len() + 8);
    for chunk in name.utf8_chunks() {
        out.push_str(&escape_name(chunk.valid()));
        for b in chunk.invalid() {
            out.push_str(&format!("\\{b:03o}"));
        }
    }
    Cow::Owned(out)
}

/// `name` as `ls -b` shows it on a terminal: a backslash as `\\`, `\a \b \t \n \v \f \r` as
/// such, every other control byte (C0, DEL, and the UTF-8 bytes of C1 controls such as
/// U+009B, a one-character CSI) as a three-digit octal escape, so ESC is `\033`; everything
/// else unchanged. A name printed this way cannot move the cursor, retitle the window or
/// hide what follows it.
pub fn escape_name(name: &str) -> Cow<'_, str> {
    let plain = |c: char| c != '\\' && !c.is_control();
    if name.chars().all(plain) {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\x0b' => out.push_str("\\v"),
            '\x0c' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\{b:03o}"));
                }
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::{escape_bytes, escape_name};

    #[test]
    fn bytes_that_are_not_utf8_are_escaped_one_by_one() {
        assert_eq!(escape_bytes(b"lat\xe8"), "lat\\350");
        assert_ne!(escape_bytes(b"lat\xe8"), escape_bytes(b"lat\xe9"));
        assert_eq!(escape_bytes(b"ok\x1b\xff"), "ok\\033\\377");
        assert_eq!(escape_bytes("plain ✓".as_bytes()), "plain ✓");
    }

    #[test]
    fn names_are_escaped_as_ls_b_does() {
        assert_eq!(escape_name("plain name ✓"), "plain name ✓");
        assert_eq!(escape_name("a\x1b]0;pwned\x07b"), "a\\033]0;pwned\\ab");
        assert_eq!(escape_name("x\ny\tz\\"), "x\\ny\\tz\\\\");
        assert_eq!(escape_name("\u{9b}31m\x7f"), "\\302\\23331m\\177");
    }
}
