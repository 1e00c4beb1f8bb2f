//! The layer order of `ARCHITECTURE.md` (and `src/lib.rs`'s module comment), checked on the
//! source: every `crate::<module>` a file names must be a layer below its own, and `unsafe`
//! may appear only in the Btrfs ABI file and around the memory map.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What each top-level module of the library may use (besides itself).
fn allowed() -> BTreeMap<&'static str, &'static [&'static str]> {
    const LEAVES: [&str; 5] = ["ids", "error", "chunker", "host", "secrets"];
    let mut m: BTreeMap<&'static str, Vec<&'static str>> = BTreeMap::new();
    m.insert("ids", vec![]);
    // The public error names the two lower error types it wraps.
    m.insert("error", vec!["backends", "btrfs"]);
    m.insert("chunker", vec!["ids", "error"]);
    m.insert("host", vec!["ids", "error"]);
    m.insert("secrets", vec!["ids", "error"]);
    m.insert("backends", vec![]);
    m.insert("btrfs", vec![]);
    m.insert("format", vec!["ids", "chunker"]);
    m.insert("fs", vec!["format", "ids", "error"]);
    m.insert("repo", [&["format", "backends"][..], &LEAVES].concat());
    m.insert("ops", [&["repo", "format", "backends", "fs"][..], &LEAVES].concat());
    m.insert(
        "jobs",
        [&["ops", "repo", "format", "backends", "fs", "btrfs"][..], &LEAVES].concat(),
    );
    m.into_iter().map(|(k, v)| (k, &*Vec::leak(v))).collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a line: without `//` comments and string literals (roughly: enough for
/// the names and keywords this test looks for).
fn code(line: &str) -> String {
    let mut out = String::new();
    let mut in_str = false;
    let mut prev = ' ';
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if in_str {
            if c == '"' && prev != '\\' {
                in_str = false;
            }
        } else if c == '"' {
            in_str = true;
        } else if c == '/' && chars.peek() == Some(&'/') {
            break;
        } else {
            out.push(c);
        }
        prev = if prev == '\\' && c == '\\' { ' ' } else { c };
    }
    out
}

/// Top-level modules named by `crate::x` paths and `use crate::{x, y::z}` groups.
fn crate_refs(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                out.push(name);
            }
        } else {
            out.push(rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect());
        }
    }
    out.retain(|n| !n.is_empty() && n != "self");
    out
}

fn top_module(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    first.trim_end_matches(".rs").to_string()
}

#[test]
fn imports_follow_the_layer_order() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let allowed = allowed();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut bad = Vec::new();
    for f in &files {
        let layer = top_module(&src, f);
        if ["lib", "main", "cli"].contains(&layer.as_str()) {
            continue; // the crate root and the binary may use every layer
        }
        let ok = allowed
            .get(layer.as_str())
            .unwrap_or_else(|| panic!("{}: module {layer} has no place in the layer table", f.display()));
        for (n, line) in std::fs::read_to_string(f).unwrap().lines().enumerate() {
            for r in crate_refs(&code(line)) {
                if r != layer && !ok.contains(&r.as_str()) {
                    bad.push(format!("{}:{}: {layer} uses crate::{r}", f.display(), n + 1));
                }
            }
        }
    }
    assert!(bad.is_empty(), "imports against the layer order:\n{}", bad.join("\n"));
}

#[test]
fn unsafe_only_in_the_btrfs_abi_and_the_mmap() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    // The mmaps: the chunker's of source files, the spool's of a remote pack being uploaded.
    let allowed = [
        src.join("btrfs/sys.rs"),
        src.join("chunker/mod.rs"),
        src.join("backends/spool.rs"),
        // glibc's mmap threshold (mallopt), set once at start.
        src.join("host.rs"),
    ];
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut bad = Vec::new();
    for f in files.iter().filter(|f| !allowed.contains(f)) {
        for (n, line) in std::fs::read_to_string(f).unwrap().lines().enumerate() {
            let c = code(line);
            let words = c.split(|ch: char| !(ch.is_alphanumeric() || ch == '_'));
            if words.clone().any(|w| w == "unsafe") || c.contains("allow(unsafe_code)") {
                bad.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "unsafe outside btrfs/sys.rs and the mmap:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_checks_themselves_see_what_they_look_for() {
    assert_eq!(crate_refs("use crate::{ids::A, repo::Repository};"), ["ids", "repo"]);
    assert_eq!(
        crate_refs("let x = crate::ops::backup::run(); // crate::jobs"),
        ["ops", "jobs"]
    );
    assert_eq!(
        code("let x = crate::ops::run(); // crate::jobs"),
        "let x = crate::ops::run(); "
    );
    assert!(!code(r#"Err("unsafe entry name")"#).contains("unsafe"));
}
